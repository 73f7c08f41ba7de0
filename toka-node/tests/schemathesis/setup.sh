#!/usr/bin/env bash
# Installs the peer of toka-node/tests/openapi.rs beside this script, pinned: a Python venv
# (.venv) with schemathesis and everything it pulls in (requirements.txt).
# Idempotent: kept while requirements.txt has not changed since it was installed.
# Needs python3 (with venv) and the package registry.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [[ -x "$venv/bin/schemathesis" && -f "$venv/.requirements" ]] \
    && cmp -s "$venv/.requirements" "$here/requirements.txt"; then
    echo "OpenAPI fuzz test: schemathesis up to date"
else
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
        -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/.requirements"
    echo "OpenAPI fuzz test: $("$venv/bin/schemathesis" --version)"
fi
