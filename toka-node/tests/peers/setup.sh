#!/usr/bin/env bash
# Installs the peers of toka-node/tests/mcp_server.rs beside this script, pinned:
# - .venv: a Python venv with the official MCP SDK (requirements.txt);
# - node_modules: the MCP Inspector CLI (package.json, package-lock.json; `npm ci`).
# Idempotent: a peer whose pins have not changed since it was installed is kept.
# Needs python3 (with venv), npm, and the package registries.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

venv="$here/.venv"
if [[ -x "$venv/bin/python" && -f "$venv/.requirements" ]] \
    && cmp -s "$venv/.requirements" "$here/requirements.txt"; then
    echo "MCP test peers: Python mcp up to date"
else
    python3 -m venv --clear "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
        -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/.requirements"
    "$venv/bin/python" -c "import importlib.metadata as m; print('MCP test peers: Python mcp', m.version('mcp'))"
fi

modules="$here/node_modules"
if [[ -f "$modules/.package-lock.json" && -f "$modules/.toka-lock" ]] \
    && cmp -s "$modules/.toka-lock" "$here/package-lock.json"; then
    echo "MCP test peers: MCP Inspector up to date"
else
    # The Inspector declares Node >= 22.19 but its CLI works on Node 20 (checked by the
    # test); the engine warning is expected there.
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$here/package-lock.json" "$modules/.toka-lock"
    echo "MCP test peers: MCP Inspector $(node -p "require('$modules/@modelcontextprotocol/inspector/package.json').version")"
fi
