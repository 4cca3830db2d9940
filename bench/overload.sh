#!/usr/bin/env bash
# bench/overload.sh - what the in-flight limit does under overload: offered
# load three times what payd can take, with the adaptive limit, with a fixed
# limit, and with no limit, against the same payd unloaded.
#
# Steps:
#   1. build (as bench/flow.sh), and the nginx static ceiling with the same
#      client, so the figures read as ratios of this machine.
#   2. capacity: create-and-pay closed loop at concurrency $CAPACITY_CONCURRENCY
#      for $CAPACITY_DURATION s on a fresh payd whose limit never sheds at
#      that concurrency (mode fixed below): C = paid orders per second end to
#      end.
#   3. unloaded: open loop at C / 4 for $DURATION s (adaptive limit on): the
#      p99 latency of accepted requests when nothing queues.
#   4. overload: on a fresh payd for each mode, $WARMUP s at C / 4 (as a shop
#      has traffic before its flash sale starts; the adaptive limit learns
#      the latency without queueing), then open loop at $FACTOR x C for
#      $DURATION s, with $LADDER_CONNECTIONS connections at most:
#        adaptive  [limits] adaptive = on, max_inflight = 1000 (the default)
#        fixed     adaptive = off, max_inflight = 1000 (the limit never moves)
#        none      adaptive = off, max_inflight = 1000000 (no limit in practice)
#      Latency is from each session's scheduled start (paybench --rate), so
#      requests that queue anywhere, in payd or in the client, count.
#   3-4 run $REPEAT times, interleaved (this machine's speed drifts).
#      Beside every run a probe measures the machine itself: a second
#      paybench GETs a static reply from a one-worker nginx, open loop at
#      $PROBE_RATE/s. Its p99 at 3x C against its p99 unloaded is how much
#      any request's tail grows on this machine under that load (CPU shared
#      with the client, the kernel's queues, the hypervisor's steal), with
#      payd doing nothing for it.
#   5. a table on stdout and appended to bench/RESULTS.md, with the verdict
#      on the medians: does the p99 of accepted payment requests stay within
#      2x unloaded, and how many paid orders per second got through? The rows
#      also go to bench/data/overload.csv (bench/record.sh; bench/plot.sh).
#
# Environment (defaults in brackets): CAPACITY_CONCURRENCY [128]
#   CAPACITY_DURATION [10]  DURATION [15]  WARMUP [5]  REPEAT [3]  FACTOR [3]  LADDER_CONNECTIONS [1024]
#   MODES ["adaptive fixed none"]  TOLERANCE [unset: payd's default]  SPLIT_CPUS [0]
#   PROBE_RATE [200; 0: no probe]
#   KEEP_TMP [0]  RESULTS [bench/RESULTS.md]  BENCH_DATA [bench/data; empty: no CSV]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMMAND_LINE=""
for v in CAPACITY_CONCURRENCY CAPACITY_DURATION DURATION WARMUP REPEAT FACTOR TOLERANCE LADDER_CONNECTIONS MODES SPLIT_CPUS PROBE_RATE; do
    if [[ -n "${!v:-}" ]]; then COMMAND_LINE+="$(printf '%s=%q ' "$v" "${!v}")"; fi
done
COMMAND_LINE+="bench/overload.sh"

CAPACITY_CONCURRENCY="${CAPACITY_CONCURRENCY:-128}"
CAPACITY_DURATION="${CAPACITY_DURATION:-10}"
DURATION="${DURATION:-15}"
WARMUP="${WARMUP:-5}"
REPEAT="${REPEAT:-3}"
FACTOR="${FACTOR:-3}"
MODES="${MODES:-adaptive fixed none}"
SPLIT_CPUS="${SPLIT_CPUS:-0}"
PROBE_RATE="${PROBE_RATE:-200}"
RESULTS="${RESULTS-$ROOT/bench/RESULTS.md}"

BENCH_NAME=overload
TMP="$(mktemp -d /tmp/payd-overload.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for tool in nginx wrk jq curl ss gcc make; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

# The client runs at a higher priority than payd: under overload it shares
# two cores with a payd that is busy turning requests away, and a client
# that is late to send or to read measures its own scheduling, not payd.
# (Its lag is reported: paybench's schedule line.)
if [[ "$(id -u)" == 0 ]]; then PAYBENCH_PREFIX=(nice -n -10); fi
# SPLIT_CPUS=1: payd on CPU 0 and paybench on CPU 1, in every run
# (capacity included), so that the client generating three times the load
# never takes the server's CPU: what is measured is payd's own overload.
if [[ "$SPLIT_CPUS" == 1 ]]; then
    (($(nproc) >= 2)) || die "SPLIT_CPUS=1 needs two CPUs"
    PAYD_PREFIX=(taskset -c 0)
    PAYBENCH_PREFIX+=(taskset -c 1)
fi

mode_env() {
    case "$1" in
    adaptive) PAYD_ENV=(PAYD_LIMITS_ADAPTIVE=on PAYD_LIMITS_MAX_INFLIGHT=1000
        ${TOLERANCE:+PAYD_LIMITS_ADAPTIVE_TOLERANCE=$TOLERANCE}) ;;
    fixed) PAYD_ENV=(PAYD_LIMITS_ADAPTIVE=off PAYD_LIMITS_MAX_INFLIGHT=1000) ;;
    none) PAYD_ENV=(PAYD_LIMITS_ADAPTIVE=off PAYD_LIMITS_MAX_INFLIGHT=1000000) ;;
    *) die "unknown mode $1" ;;
    esac
}

# The machine probe (see the head of this file) beside run $1, into
# $TMP/$1-probe.json. Stopped with the rest if this script ends early.
PROBE_PID=""
trap 'if [[ -n "${PROBE_PID:-}" ]]; then stop_pid "$PROBE_PID"; fi; cleanup' EXIT
start_probe() {
    ((PROBE_RATE > 0)) || return 0
    "${PAYBENCH_PREFIX[@]}" "$PAYBENCH" --url "http://127.0.0.1:$NGINX_PORT/" --scenario static \
        --rate "$PROBE_RATE" --connections 64 --duration "$DURATION" \
        --json "$TMP/$1-probe.json" >"$TMP/$1-probe.txt" 2>&1 &
    PROBE_PID=$!
}
wait_probe() {
    [[ -n "$PROBE_PID" ]] || return 0
    wait "$PROBE_PID" || true
    PROBE_PID=""
}
probe_p99_ms() {
    if [[ -s "$TMP/$1-probe.json" ]]; then
        jq -r '.requests.static_get.latency_ok.p99_us / 1000' "$TMP/$1-probe.json"
    else
        echo "-"
    fi
}

# One open-loop run: $1 name, $2 rate, $3 mode, $4 seconds of warm-up at
# the unloaded rate first (0: none). The in-flight limit's view is read at
# the middle of the load.
open_run() {
    local name="$1" rate="$2" mode="$3" warmup="${4:-0}"
    mode_env "$mode"
    start_payd "$TMP/$name"
    if ((warmup > 0)); then
        log "$name: warm-up, open loop ${UNLOADED_RATE}/s for ${warmup}s"
        start_pay "rate=$UNLOADED_RATE" "$warmup" "$name-warmup"
        wait_pay
    fi
    log "$name: open loop ${rate}/s for ${DURATION}s, mode $mode (payd pid $PAYD_PID)"
    start_pay "rate=$rate" "$DURATION" "$name"
    start_probe "$name"
    sleep $((DURATION / 2))
    curl --noproxy '*' -s "http://127.0.0.1:$PAYD_PORT/admin/guards" >"$TMP/$name-guards.json" || true
    wait_pay
    wait_probe
    stop_payd
    [[ -s "$TMP/$name.json" ]] || { cat "$TMP/$name.txt" >&2; die "paybench wrote no results for $name"; }
}

# A row: mode, offered, paid/s during load, accepted payments p50/p99/p99.9,
# order p99, answers, the limit mid-run, schedule kept.
row() {
    local name="$1" label="$2" offered="$3" limit
    local probe
    probe="$(probe_p99_ms "$name")"
    limit="$(jq -r '"\(.inflight.limit) (\(.inflight.last_mean_ms | . * 10 | floor / 10) ms mean, floor \(.inflight.floor_ms | . * 10 | floor / 10) ms)"' "$TMP/$name-guards.json" 2>/dev/null || echo "?")"
    jq -r --arg lbl "$label" --arg offered "$offered" --arg limit "$limit" --arg probe "$probe" '
        "| \($lbl) | \($offered) | \(.payments.steady_succeeded_per_s | floor) | \(.payments.paid_orders_per_s | floor) | \(.requests.payment_accept.latency_ok.p50_us / 1000) / \(.requests.payment_accept.latency_ok.p99_us / 1000) / \(.requests.payment_accept.latency_ok.p99_9_us / 1000) | \(.requests.order_create.latency_ok.p99_us / 1000) | \([.requests.order_create.status | to_entries[] | select(.value > 0) | "\(.key)=\(.value)"] | join(" ")) | \([.requests.payment_accept.status | to_entries[] | select(.value > 0) | "\(.key)=\(.value)"] | join(" ")) | \($limit) | \(if .schedule.kept then "yes" else "no" end) (lag p99 \(.schedule.lag_p99_us / 1000) ms) | \($probe) |"' \
        "$TMP/$name.json"
}

p99_ms() { jq -r '.requests.payment_accept.latency_ok.p99_us / 1000' "$TMP/$1.json"; }

# ---- main -------------------------------------------------------------------

build
run_nginx
if ((PROBE_RATE > 0)); then
    start_nginx 1 probe-nginx
    log "probe: nginx pid $NGINX_PID, paybench static open loop ${PROBE_RATE}/s beside every run"
fi

mode_env fixed
start_payd "$TMP/capacity"
log "capacity: closed loop c=$CAPACITY_CONCURRENCY, ${CAPACITY_DURATION}s"
start_pay "$CAPACITY_CONCURRENCY" "$CAPACITY_DURATION" capacity
wait_pay
stop_payd
CAPACITY="$(jq -r '.payments.paid_orders_per_s | floor' "$TMP/capacity.json")"
((CAPACITY > 0)) || die "no capacity measured"
log "capacity: $CAPACITY paid orders/s"

UNLOADED_RATE=$((CAPACITY / 4))
OVER_RATE=$((CAPACITY * FACTOR))
ROWS=""
declare -A P99S GOODS PROBES
for ((rep = 1; rep <= REPEAT; rep++)); do
    open_run "unloaded-$rep" "$UNLOADED_RATE" adaptive
    ROWS+="$(row "unloaded-$rep" "$rep: unloaded (C/4), adaptive" "$UNLOADED_RATE")"$'\n'
    P99S[unloaded]+="$(p99_ms "unloaded-$rep") "
    PROBES[unloaded]+="$(probe_p99_ms "unloaded-$rep") "
    for mode in $MODES; do
        open_run "over-$mode-$rep" "$OVER_RATE" "$mode" "$WARMUP"
        ROWS+="$(row "over-$mode-$rep" "$rep: ${FACTOR}x C, $mode" "$OVER_RATE")"$'\n'
        P99S[$mode]+="$(p99_ms "over-$mode-$rep") "
        PROBES[$mode]+="$(probe_p99_ms "over-$mode-$rep") "
        GOODS[$mode]+="$(jq -r '.payments.steady_succeeded_per_s | floor' "$TMP/over-$mode-$rep.json") "
    done
done

median() { tr ' ' '\n' | grep -v -e '^$' -e '^-$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
BASE_P99="$(echo "${P99S[unloaded]}" | median)"
BASE_PROBE="$(echo "${PROBES[unloaded]}" | median)"
VERDICTS=""
for mode in $MODES; do
    if [[ -n "$BASE_PROBE" ]]; then
        VERDICTS+="$(awk -v m="$mode" -v p="$(echo "${PROBES[$mode]}" | median)" -v b="$BASE_PROBE" \
            'BEGIN { printf "- machine probe beside %s: median nginx static p99 %.2f ms against %.2f ms unloaded = %.1fx (the growth of any request'"'"'s tail on this machine under that load)\n", m, p, b, p / b }')"$'\n'
    fi
    VERDICTS+="$(awk -v m="$mode" -v p="$(echo "${P99S[$mode]}" | median)" -v b="$BASE_P99" \
        -v g="$(echo "${GOODS[$mode]}" | median)" -v c="$CAPACITY" \
        'BEGIN { printf "- %s: median accepted-payment p99 %.1f ms = %.1fx unloaded (%s); median goodput during the load %d paid orders/s = %.0f %% of C\n", m, p, p / b, (p <= 2 * b ? "within 2x" : "NOT within 2x"), g, 100 * g / c }')"$'\n'
done

REPORT="$(cat <<EOF
| measure | value |
|---|---|
| nginx static, paybench c=$NGINX_CONCURRENCY | $NGINX_RPS req/s (p99 $NGINX_P99_MS ms) |
| capacity C: create-and-pay closed loop c=$CAPACITY_CONCURRENCY, ${CAPACITY_DURATION} s | $CAPACITY paid orders/s |
| unloaded accepted-payment p99 (open loop at C/4), median of $REPEAT | $BASE_P99 ms |

| run | offered sessions/s | succeeded/s during load | paid orders/s e2e | payment 202 p50 / p99 / p99.9 ms | order 201 p99 ms | order answers | payment answers | in-flight limit mid-run | client kept schedule | machine probe p99 ms |
|---|---|---|---|---|---|---|---|---|---|---|
$ROWS
$VERDICTS
EOF
)"

echo "$REPORT"
if [[ -n "$RESULTS" ]]; then
    RUN_UTC="$(date -u '+%Y-%m-%d %H:%M UTC')"
    {
        echo
        echo "## Overload: $RUN_UTC, $(nproc) cores, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
        echo
        echo "Command: \`$COMMAND_LINE\`$([[ "$SPLIT_CPUS" == 1 ]] && echo " (payd on CPU 0, paybench on CPU 1)")"
        echo
        echo "$REPORT"
    } >>"$RESULTS"
    log "appended to $RESULTS"
    record_csv overload.csv "$OVERLOAD_CSV_HEADER" "$(printf '%s' "$ROWS" | overload_rows_csv "$(csv_row \
        "$RUN_UTC" "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" "$COMMAND_LINE" \
        "$SPLIT_CPUS" "$FACTOR" "$NGINX_RPS" "$CAPACITY" "$BASE_P99")")"
fi
