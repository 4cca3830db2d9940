#!/usr/bin/env bash
# bench/redis_limit.sh - the cost of a shared (Redis) rate-limit check, with
# one and two threads, beside the server's own ceiling: redis-benchmark's
# PING without pipelining (-P 1) with one and two clients, on a
# redis-server of its own (127.0.0.1, a free port, no persistence) that it
# stops at the end. Appends the tables to bench/RESULTS.md, and their rows
# to bench/data/redis_limit.csv (bench/record.sh; bench/plot.sh).
#
# Environment: SECONDS_PER_ROW [2]  PINGS [200000]
#              RESULTS [bench/RESULTS.md; empty: do not append]
#              BENCH_DATA [bench/data; empty: no CSV]
set -euo pipefail

BENCH_NAME=redis_limit
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/payd-redis-bench.XXXXXX")"
SECONDS_PER_ROW="${SECONDS_PER_ROW:-2}"
PINGS="${PINGS:-200000}"
RESULTS="${RESULTS-$ROOT/bench/RESULTS.md}"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

REDIS_PID=""
trap '[[ -n "$REDIS_PID" ]] && stop_pid "$REDIS_PID"; cleanup' EXIT

make -C "$ROOT" --no-print-directory build/redis_limit_micro >/dev/null

port="$(free_port)" || die "no free port"
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$TMP" \
    --logfile "$TMP/redis.log" --daemonize no &
REDIS_PID=$!
for ((i = 0; i < 100; i++)); do
    [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]] && break
    kill -0 "$REDIS_PID" 2>/dev/null || die "redis-server exited (see $TMP/redis.log)"
    sleep 0.1
done

ceiling() {
    local clients="$1"
    redis-benchmark -h 127.0.0.1 -p "$port" -t ping -P 1 -c "$clients" -n "$PINGS" --csv |
        awk -F'"' -v c="$clients" '$2 == "PING_MBULK" {
            printf "| redis-benchmark -t ping -P 1 -c %d | %d | %.0f | %s |\n", c, c, 1e9 / ($4 / c), $4 }'
}

CEILING="$(printf '| ceiling | clients | ns/op | ops/s all |\n|---|---|---|---|\n'; ceiling 1; ceiling 2)"
MICRO="$("$ROOT/build/redis_limit_micro" "$port" "$SECONDS_PER_ROW")"
# The server's own time per script call (all take rows together), to tell
# the script's cost from the round trip's.
SERVER="$(redis-cli -p "$port" info commandstats | tr -d '\r' |
    sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),usec=[0-9]*,usec_per_call=\([0-9.]*\).*/server time per take (INFO commandstats, evalsha): \2 us over \1 calls/p')"
REPORT="$(printf '%s\n\n%s\n\n%s\n' "$CEILING" "$MICRO" "$SERVER")"
echo "$REPORT"
if [[ -n "$RESULTS" ]]; then
    RUN_UTC="$(date -u '+%Y-%m-%d %H:%M UTC')"
    {
        echo
        echo "## Shared rate-limit check (Redis): $RUN_UTC, $(nproc) cores, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
        echo
        echo "Command: \`SECONDS_PER_ROW=$SECONDS_PER_ROW bench/redis_limit.sh\` (redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p'))"
        echo
        echo "$REPORT"
    } >>"$RESULTS"
    log "appended to $RESULTS"
    record_csv redis_limit.csv "$REDIS_LIMIT_CSV_HEADER" "$(printf '%s\n%s\n' "$CEILING" "$MICRO" |
        redis_limit_rows_csv "$(csv_row "$RUN_UTC" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" \
            "$SECONDS_PER_ROW" "$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')")" \
            "$(sed -n 's/.*: \([0-9.]*\) us over.*/\1/p' <<<"$SERVER")")"
fi
