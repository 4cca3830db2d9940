#!/usr/bin/env bash
# Checks payd's Prometheus rules and example configuration with promtool, and
# runs the rules' unit tests (deploy/prometheus/payd.rules.test.yml). Exits
# non-zero when any of the three fails. `make test-rules` installs promtool
# first (scripts/deps.sh obs).
set -euo pipefail

cd "$(dirname "$0")/.."
dir=deploy/prometheus

if ! command -v promtool >/dev/null 2>&1; then
    echo "test_rules: promtool not found; run scripts/deps.sh obs" >&2
    exit 1
fi

promtool check rules "$dir/payd.rules.yml"
promtool check config "$dir/prometheus.yml"
promtool test rules "$dir/payd.rules.test.yml"
