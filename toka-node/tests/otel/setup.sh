#!/usr/bin/env bash
# Installs the OTLP receiver of toka-node/tests/otel.rs beside this script, pinned: a
# Python venv (.venv) with the official OpenTelemetry protobuf bindings
# (requirements.txt), which receiver.py serves OTLP/HTTP with.
# Idempotent: kept while the pins have not changed. Needs python3 (with venv) and PyPI.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [[ -x "$venv/bin/python" && -f "$venv/.requirements" ]] \
    && cmp -s "$venv/.requirements" "$here/requirements.txt"; then
    echo "OTLP receiver: up to date"
else
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
        -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/.requirements"
fi
"$venv/bin/python" -c "import importlib.metadata as m; print('OTLP receiver: opentelemetry-proto', m.version('opentelemetry-proto'))"
