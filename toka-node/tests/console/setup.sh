#!/usr/bin/env bash
# Installs the peer of toka-node/tests/console.rs beside this script, pinned: Playwright's
# driver library (npm `playwright-core`, which downloads no browser; package.json,
# package-lock.json, `npm ci`). The browser is Debian's `chromium` (.ci/run installs it).
# Idempotent: kept while package-lock.json has not changed since it was installed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
modules="$here/node_modules"
if [[ -f "$modules/.toka-lock" ]] && cmp -s "$modules/.toka-lock" "$here/package-lock.json"; then
    echo "console test: playwright-core up to date"
else
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$here/package-lock.json" "$modules/.toka-lock"
    echo "console test: playwright-core $(node -p "require('$modules/playwright-core/package.json').version")"
fi
