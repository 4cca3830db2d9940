#!/usr/bin/env bash
# bench/machine.sh - how long this machine keeps a ready thread waiting, with
# no payd at all: the floor under any tail latency measured here.
#
# A probe (paybench --scenario static, open loop at $PROBE_RATE/s, at a high
# priority when run as root) GETs a static reply from a one-worker nginx
# while the machine does one of:
#   idle      nothing else;
#   cpu       one `yes` per CPU at the lowest priority (nice 19): every CPU
#             busy, but the probe always wins it;
#   sync      a loop of 8 KiB synchronous writes (dd oflag=dsync, rewriting
#             the same 800 KiB), as a database's commits do;
#   net       a second paybench driving the same nginx as fast as it can
#             (closed loop, 64 connections): CPU spent in the network path;
#   cpu+sync  and net+sync: both at once.
# For each: the probe's p99 latency, how late it started its requests
# (schedule lag p99: the time a ready, high-priority thread waited for a
# CPU), and the machine's busy / iowait / steal share. Steal is time the
# hypervisor gave the virtual CPUs to someone else.
#
# bench/overload.sh runs the same probe beside its overload runs; this
# script says which part of the machine's load makes the probe wait.
# Appends the table to bench/RESULTS.md and its rows to
# bench/data/machine.csv.
#
# Environment: DURATION [10]  PROBE_RATE [200]  PHASES ["idle cpu sync net cpu+sync net+sync"]
#              KEEP_TMP [0]  RESULTS [bench/RESULTS.md; empty: do not append]
#              BENCH_DATA [bench/data; empty: no CSV]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMMAND_LINE=""
for v in DURATION PROBE_RATE PHASES; do
    if [[ -n "${!v:-}" ]]; then COMMAND_LINE+="$(printf '%s=%q ' "$v" "${!v}")"; fi
done
COMMAND_LINE+="bench/machine.sh"

DURATION="${DURATION:-10}"
PROBE_RATE="${PROBE_RATE:-200}"
PHASES="${PHASES:-idle cpu sync net cpu+sync net+sync}"
RESULTS="${RESULTS-$ROOT/bench/RESULTS.md}"

BENCH_NAME=machine
TMP="$(mktemp -d /tmp/payd-machine.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for tool in nginx jq dd yes; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
PROBE_PREFIX=()
if [[ "$(id -u)" == 0 ]]; then PROBE_PREFIX=(nice -n -10); fi

# The loads of a phase, started in the background; their pids in LOAD_PIDS.
LOAD_PIDS=()
start_cpu() {
    local i
    for ((i = 0; i < $(nproc); i++)); do
        nice -n 19 yes >/dev/null &
        LOAD_PIDS+=($!)
    done
}
start_sync() {
    (
        trap 'exit 0' TERM
        while :; do
            dd if=/dev/zero of="$TMP/sync.dat" bs=8k count=100 oflag=dsync conv=notrunc \
                status=none
        done
    ) &
    LOAD_PIDS+=($!)
}
start_net() {
    "$PAYBENCH" --url "http://127.0.0.1:$NGINX_PORT/" --scenario static --concurrency 64 \
        --duration $((DURATION + 2)) --json "$TMP/net-$1.json" >"$TMP/net-$1.txt" 2>&1 &
    LOAD_PIDS+=($!)
}
stop_loads() {
    local pid
    for pid in "${LOAD_PIDS[@]}"; do stop_pid "$pid"; done
    LOAD_PIDS=()
}
trap 'stop_loads; cleanup' EXIT

build
start_nginx 1 nginx

ROWS=""
for phase in $PHASES; do
    case "$phase" in
    idle) ;;
    cpu) start_cpu ;;
    sync) start_sync ;;
    net) start_net "$phase" ;;
    cpu+sync) start_cpu; start_sync ;;
    net+sync) start_net "$phase"; start_sync ;;
    *) die "unknown phase $phase" ;;
    esac
    sleep 1
    log "$phase: probe ${PROBE_RATE}/s for ${DURATION}s"
    "${PROBE_PREFIX[@]}" "$PAYBENCH" --url "http://127.0.0.1:$NGINX_PORT/" --scenario static \
        --rate "$PROBE_RATE" --connections 64 --duration "$DURATION" \
        --json "$TMP/$phase.json" >"$TMP/$phase.txt" 2>&1 || true
    stop_loads
    [[ -s "$TMP/$phase.json" ]] || { cat "$TMP/$phase.txt" >&2; die "the probe wrote no results in $phase"; }
    ROWS+="$(jq -r --arg phase "$phase" '
        "| \($phase) | \(.requests.static_get.latency_ok.p50_us / 1000) / \(.requests.static_get.latency_ok.p99_us / 1000) / \(.requests.static_get.latency_ok.p99_9_us / 1000) | \(.schedule.lag_p99_us / 1000) | \(.machine_busy_pct * 10 | floor / 10) / \(.machine_iowait_pct * 10 | floor / 10) / \(.machine_steal_pct * 10 | floor / 10) |"' \
        "$TMP/$phase.json")"$'\n'
done

REPORT="$(cat <<EOF
| machine doing | probe p50 / p99 / p99.9 ms | probe start lag p99 ms | machine busy / iowait / steal % |
|---|---|---|---|
$ROWS
EOF
)"
echo "$REPORT"
if [[ -n "$RESULTS" ]]; then
    RUN_UTC="$(date -u '+%Y-%m-%d %H:%M UTC')"
    TREE="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
    {
        echo
        echo "## Machine wait floor: $RUN_UTC, $(nproc) cores, $TREE"
        echo
        echo "Command: \`$COMMAND_LINE\` (probe static GET of a one-worker nginx, open loop ${PROBE_RATE}/s, ${DURATION} s a phase)"
        echo
        echo "$REPORT"
    } >>"$RESULTS"
    log "appended to $RESULTS"
    record_csv machine.csv "$MACHINE_CSV_HEADER" "$(printf '%s' "$ROWS" | machine_rows_csv \
        "$(csv_row "$RUN_UTC" "$TREE" "$COMMAND_LINE" "$(nproc)" "$PROBE_RATE" "$DURATION")")"
fi
