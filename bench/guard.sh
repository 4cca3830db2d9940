#!/usr/bin/env bash
# bench/guard.sh - the cost of a guard check in nanoseconds, with one and two
# threads on the same limiter, beside the machine's ceilings (an atomic add
# on a shared counter, a clock read). Appends the table to bench/RESULTS.md,
# and its rows to bench/data/guard.csv (bench/record.sh; bench/plot.sh).
#
# Environment: SECONDS_PER_ROW [2]  RESULTS [bench/RESULTS.md; empty: do not append]
#              BENCH_DATA [bench/data; empty: no CSV]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_ROW="${SECONDS_PER_ROW:-2}"
RESULTS="${RESULTS-$ROOT/bench/RESULTS.md}"
# shellcheck source=bench/record.sh
source "$ROOT/bench/record.sh"

make -C "$ROOT" --no-print-directory build/guard_micro >/dev/null
REPORT="$("$ROOT/build/guard_micro" "$SECONDS_PER_ROW")"
echo "$REPORT"
if [[ -n "$RESULTS" ]]; then
    RUN_UTC="$(date -u '+%Y-%m-%d %H:%M UTC')"
    {
        echo
        echo "## Guard check cost: $RUN_UTC, $(nproc) cores, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
        echo
        echo "Command: \`SECONDS_PER_ROW=$SECONDS_PER_ROW bench/guard.sh\`"
        echo
        echo "$REPORT"
    } >>"$RESULTS"
    echo "guard: appended to $RESULTS" >&2
    record_csv guard.csv "$GUARD_CSV_HEADER" "$(guard_rows_csv "$(csv_row "$RUN_UTC" \
        "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" "$SECONDS_PER_ROW" "$(nproc)")" <<<"$REPORT")"
fi
