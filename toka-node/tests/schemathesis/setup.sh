#!/usr/bin/env bash
# Installs the peer of toka-node/tests/openapi.rs, pinned: a Python venv with schemathesis
# and everything it pulls in (requirements.txt), in $TOKA_SCHEMATHESIS_VENV (.ci/run keeps it
# in its cache) or beside this script (.venv, where the test looks by default).
# Idempotent: kept while requirements.txt and the Python have not changed since it was installed.
# Needs python3 (with venv) and the package registry.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# CPython 3.11.7 (this machine's python3) can fail inside ast.parse with "SystemError: AST
# constructor recursion depth mismatch" (CPython gh-106905), which hypothesis runs while
# schemathesis generates cases; 3.13 has the fix. So: $TOKA_SCHEMATHESIS_PYTHON, else the
# first Python >= 3.13 of python3.13, pyenv's builds, python3; else python3 anyway.
recent='import sys; sys.exit(sys.version_info < (3, 13))'
python=""
for candidate in "${TOKA_SCHEMATHESIS_PYTHON:-}" python3.13 \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[3-9]*/bin/python3 python3; do
    if [[ -n "$candidate" ]] && "$candidate" -c "$recent" 2>/dev/null; then
        python="$candidate"
        break
    fi
done
if [[ -z "$python" ]]; then
    python=python3
    echo "OpenAPI fuzz test: no Python >= 3.13; $(python3 --version) may hit CPython gh-106905" >&2
fi
venv="${TOKA_SCHEMATHESIS_VENV:-$here/.venv}"
if [[ -x "$venv/bin/schemathesis" && -f "$venv/.requirements" ]] \
    && cmp -s "$venv/.requirements" "$here/requirements.txt" \
    && [[ "$("$venv/bin/python" --version)" == "$("$python" --version)" ]]; then
    echo "OpenAPI fuzz test: schemathesis up to date"
else
    "$python" -m venv --clear "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
        -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/.requirements"
    echo "OpenAPI fuzz test: $("$venv/bin/python" --version)"
    echo "OpenAPI fuzz test: $("$venv/bin/schemathesis" --version)"
fi
