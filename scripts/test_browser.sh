#!/bin/sh
# test_browser.sh - the dashboard in a real browser: installs what is missing
# (Debian's chromium, Node.js and npm through scripts/deps.sh browser;
# playwright-core through `npm ci` in tests/browser/), then runs
# tests/browser/dashboard.test.mjs against PAYD_BIN (default build/payd).
# Screenshots go to build/artifacts/.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/deps.sh" browser
if [ ! -f "$root/tests/browser/node_modules/playwright-core/package.json" ]; then
    (cd "$root/tests/browser" && npm ci --no-audit --no-fund)
fi
exec node "$root/tests/browser/dashboard.test.mjs"
