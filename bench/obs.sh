#!/usr/bin/env bash
# bench/obs.sh - what observing a request costs (bench/obs_micro.c): counting
# it, its log line (JSON, text, and built with jansson for comparison), a
# whole /metrics scrape; beside the ceiling of the write(2) alone. Appends
# the table to bench/RESULTS.md.
#
# Environment: SECONDS_PER_ROW [2]  RESULTS [bench/RESULTS.md; empty: do not append]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_ROW="${SECONDS_PER_ROW:-2}"
RESULTS="${RESULTS-$ROOT/bench/RESULTS.md}"

make -C "$ROOT" --no-print-directory build/obs_micro >/dev/null
REPORT="$("$ROOT/build/obs_micro" "$SECONDS_PER_ROW")"
echo "$REPORT"
if [[ -n "$RESULTS" ]]; then
    {
        echo
        echo "## Observability cost: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
        echo
        echo "Command: \`SECONDS_PER_ROW=$SECONDS_PER_ROW bench/obs.sh\`"
        echo
        echo "$REPORT"
    } >>"$RESULTS"
    echo "obs: appended to $RESULTS" >&2
fi
