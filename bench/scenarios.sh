#!/usr/bin/env bash
# bench/scenarios.sh - each of paybench's payment scenarios against the
# embedded payd, beside the machine's HTTP ceiling measured in the same run.
#
# Steps:
#   1. build (as bench/flow.sh), and the nginx static ceiling with the same
#      client (paybench --scenario static): requests per second.
#   2. for each scenario in $SCENARIOS, on a fresh payd (and, for
#      many-merchants, $MERCHANTS merchants made with `payd merchant add`):
#      paybench closed loop at $CONCURRENCY sessions for $DURATION s (the
#      in-flight limit fixed, [limits] adaptive = off), then --check (paycheck over every payment the run was answered 202 for).
#      A session is one client's work: create-and-pay an order and its
#      payment; retry the payment sent again $RETRIES times with its key;
#      race $RACERS payments of one order at once; mix one payment of a
#      method drawn from ok=80,declined=15,error=5; refunds a payment, and
#      for 30 % of them one or two partial refunds once it succeeded.
#   3. a table on stdout, appended to bench/RESULTS.md with the command, the
#      rows also to bench/data/scenarios.csv (bench/record.sh; bench/plot.sh
#      draws bench/plots/scenarios.png).
#
# The ratio column is payd's HTTP requests answered per second (every kind)
# over nginx's requests per second: how close payd's whole request path,
# writes and all, comes to a server that only answers "ok".
#
# Environment (defaults in brackets): SCENARIOS ["create-and-pay many-merchants
#   retry race mix refunds"]  CONCURRENCY [64]  DURATION [10]  MERCHANTS [4]
#   RETRIES [2]  RACERS [3]  KEEP_TMP [0]  RESULTS [bench/RESULTS.md]
#   BENCH_DATA [bench/data; empty: no CSV]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMMAND_LINE=""
for v in SCENARIOS CONCURRENCY DURATION MERCHANTS RETRIES RACERS; do
    if [[ -n "${!v:-}" ]]; then COMMAND_LINE+="$(printf '%s=%q ' "$v" "${!v}")"; fi
done
COMMAND_LINE+="bench/scenarios.sh"

SCENARIOS="${SCENARIOS:-create-and-pay many-merchants retry race mix refunds}"
CONCURRENCY="${CONCURRENCY:-64}"
DURATION="${DURATION:-10}"
MERCHANTS="${MERCHANTS:-4}"
RETRIES="${RETRIES:-2}"
RACERS="${RACERS:-3}"
RESULTS="${RESULTS-$ROOT/bench/RESULTS.md}"

BENCH_NAME=scenarios
TMP="$(mktemp -d /tmp/payd-scenarios.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# The in-flight limit fixed at max_inflight (1000): this measures what each
# scenario's requests cost at full load, and the adaptive limit would turn
# new orders away at this concurrency (its latency floor is an idle
# payd's; bench/overload.sh is where it is measured).
PAYD_ENV=(PAYD_LIMITS_ADAPTIVE=off)

for tool in nginx jq curl ss make; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ -x "$ROOT/build/paycheck" ]] || make -C "$ROOT" build/paycheck >/dev/null

# One scenario on a fresh payd: $1 the scenario. Leaves $TMP/$1.json/.txt.
run_scenario() {
    local sc="$1" keys=() extra=()
    start_payd "$TMP/$sc"
    keys=(--key "$PAYD_KEY")
    if [[ "$sc" == many-merchants ]]; then
        for ((m = 2; m <= MERCHANTS; m++)); do
            keys+=(--key "$("$PAYD" merchant add "bench-$m" --data-dir "$TMP/$sc" | tail -n 1)")
        done
    fi
    case "$sc" in
    retry) extra=(--retries "$RETRIES") ;;
    race) extra=(--racers "$RACERS") ;;
    esac
    log "$sc: closed loop c=$CONCURRENCY, ${DURATION}s (payd pid $PAYD_PID)"
    "${PAYBENCH_PREFIX[@]}" "$PAYBENCH" --url "http://127.0.0.1:$PAYD_PORT" "${keys[@]}" \
        --scenario "$sc" --duration "$DURATION" --concurrency "$CONCURRENCY" "${extra[@]}" \
        --server-pid "$PAYD_PID" --json "$TMP/$sc.json" --check --data-dir "$TMP/$sc" \
        >"$TMP/$sc.txt" 2>&1 || true
    stop_payd
    tail -n 3 "$TMP/$sc.txt" >&2
    [[ -s "$TMP/$sc.json" ]] || { cat "$TMP/$sc.txt" >&2; die "paybench wrote no results for $sc"; }
}

# What each scenario counts of its own, in a few words.
scenario_counts() {
    jq -r '
      if .scenario == "retry" then .retry | "replayed \(.replayed), id mismatches \(.id_mismatch)"
      elif .scenario == "race" then .race | "orders with one payment accepted \(.exactly_one_accepted), with several \(.several_accepted)"
      elif .scenario == "many-merchants" then .merchants | "\(.count) merchants"
      elif .scenario == "mix" then "outcomes as the methods say: \(if .scenario_ok then "yes" else "NO" end)"
      elif .scenario == "refunds" then .refunds | "refunds accepted \(.accepted), over-accepted \(.over_accepted), wrongly refused \(.wrongly_refused)"
      else "" end' "$1" 2>/dev/null || echo "?"
}

# Requests of the load answered per second, every kind but the reads made
# after it (the sample check, /metrics), over the load window.
all_rps() {
    jq -r '(.load_window_us / 1e6) as $s | [.requests | to_entries[] | select(.key != "metrics_get" and .key != "payment_get") | .value.status | to_entries[] | select(.key != "0") | .value] | add / $s | floor' "$1"
}

# ---- main -------------------------------------------------------------------

build
run_nginx

ROWS=""
CSV_ROWS=""
RUN_UTC="$(date -u '+%Y-%m-%d %H:%M UTC')"
TREE="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git -C "$ROOT" status --porcelain -- src tools bench/*.sh 2>/dev/null)" ]]; then TREE+="+dirty"; fi
for sc in $SCENARIOS; do
    run_scenario "$sc"
    j="$TMP/$sc.json"
    rps="$(all_rps "$j")"
    sessions="$(jq -r '.sessions_ok / (.load_window_us / 1e6) | floor' "$j")"
    paid="$(jq -r '.payments.paid_orders_per_s // 0 | floor' "$j")"
    first="$(jq -r '(.requests.order_create.latency_ok // {}) | "\((.p50_us // 0) / 1000) / \((.p99_us // 0) / 1000)"' "$j")"
    check="$(tail -n 1 "$TMP/$sc.txt")"
    [[ "$check" == check:* ]] || check="check: none"
    ratio="$(awk -v a="$rps" -v n="$NGINX_RPS" 'BEGIN { printf "%.3f", (n > 0 ? a / n : 0) }')"
    counts="$(scenario_counts "$j")"
    verdict="$(jq -r 'if .ok then "ok" else "PROBLEMS" end' "$j")"
    ROWS+="| $sc | $sessions | $paid | $rps | $ratio | $first | $counts | ${check%% *} ${check#* } | $verdict |"$'\n'
    CSV_ROWS+="$(csv_row "$RUN_UTC" "$TREE" "$COMMAND_LINE" "$NGINX_RPS" "$CONCURRENCY" "$DURATION" \
        "$sc" "$sessions" "$paid" "$rps" "$ratio" "${check%% *}" "$verdict")"$'\n'
done

REPORT="$(cat <<EOF
| measure | value |
|---|---|
| nginx static reply, paybench static c=$NGINX_CONCURRENCY (the ceiling) | $NGINX_RPS req/s (p99 $NGINX_P99_MS ms) |

| scenario | sessions/s | paid orders/s e2e | payd requests/s (all kinds) | ratio to nginx | order p50 / p99 ms | the scenario's own counts | paycheck | paybench verdict |
|---|---|---|---|---|---|---|---|---|
${ROWS%$'\n'}
EOF
)"
echo "$REPORT"
if [[ -n "$RESULTS" ]]; then
    {
        echo
        echo "## Scenarios: $RUN_UTC, $(nproc) cores, $TREE"
        echo
        echo "Command: \`$COMMAND_LINE\` (closed loop c=$CONCURRENCY, ${DURATION} s each, embedded payd, a fresh one per scenario)"
        echo
        echo "$REPORT"
    } >>"$RESULTS"
    log "appended to $RESULTS"
fi
record_csv scenarios.csv "$SCENARIOS_CSV_HEADER" "${CSV_ROWS%$'\n'}"
