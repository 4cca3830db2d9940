#!/usr/bin/env bash
# bench/cluster.sh - paid orders per second on the local cluster
# (deploy/local-cluster/up: PostgreSQL, Redis, NATS JetStream, two api and
# two worker instances, nginx), beside pgbench's TPC-B-like transactions per
# second on the same PostgreSQL server in the same run: the ceiling of the
# database that every payment goes through, so that the figure reads as a
# ratio of what this machine's PostgreSQL can do.
#
# Steps:
#   1. build; start the local cluster under a temporary directory.
#   2. pgbench -i (scale $PGBENCH_SCALE) in its own database on the cluster's
#      PostgreSQL, then pgbench -M prepared -c $PGBENCH_CLIENTS for
#      $DURATION s: tps.
#   3. paybench create-and-pay through nginx, closed loop, $CONCURRENCY
#      sessions for $DURATION s: paid orders/s end to end (each session
#      creates an order, pays it and waits until a worker has charged the
#      sandbox and committed the outcome).
#   4. pgbench again (the machine's speed drifts): the ceiling is the mean.
#      Around steps 3 and 4 the CPU time used is read from /proc: the whole
#      machine's (per paid order; per pgbench transaction) and each part of
#      the cluster's (its processes and their live children), so that the
#      ratio can be read as where the CPU goes.
#   5. a table on stdout, appended to bench/RESULTS.md with the command; the
#      numbers also to bench/data/cluster.csv (bench/record.sh; bench/plot.sh).
#
# Environment (defaults in brackets): DURATION [20]  CONCURRENCY [128]
#   PGBENCH_CLIENTS [16]  PGBENCH_SCALE [10]  WORKER_THREADS [32]  QUEUE [nats]
#   KEEP_TMP [0]  RESULTS [bench/RESULTS.md; empty: do not append]
#   BENCH_DATA [bench/data; empty: no CSV]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMMAND_LINE=""
for v in DURATION CONCURRENCY PGBENCH_CLIENTS PGBENCH_SCALE WORKER_THREADS QUEUE; do
    if [[ -n "${!v:-}" ]]; then COMMAND_LINE+="$(printf '%s=%q ' "$v" "${!v}")"; fi
done
COMMAND_LINE+="bench/cluster.sh"
DURATION="${DURATION:-20}"
CONCURRENCY="${CONCURRENCY:-128}"
PGBENCH_CLIENTS="${PGBENCH_CLIENTS:-16}"
PGBENCH_SCALE="${PGBENCH_SCALE:-10}"
export WORKER_THREADS="${WORKER_THREADS:-32}"
export QUEUE="${QUEUE:-nats}"
# Capacity, not overload behaviour: the in-flight limit stays fixed.
export PAYD_EXTRA_ENV="${PAYD_EXTRA_ENV:-PAYD_LIMITS_ADAPTIVE=off}"
KEEP_TMP="${KEEP_TMP:-0}"
RESULTS="${RESULTS-$ROOT/bench/RESULTS.md}"
PG_BIN=/usr/lib/postgresql/15/bin
# shellcheck source=bench/record.sh
source "$ROOT/bench/record.sh"

log() { printf 'cluster-bench: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

TMP="$(mktemp -d /tmp/payd-cluster-bench.XXXXXX)"
chmod 711 "$TMP" # PostgreSQL runs as its own user below it
cleanup() {
    "$ROOT/deploy/local-cluster/down" "$TMP/cluster" >/dev/null 2>&1 || true
    if [[ "$KEEP_TMP" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

make -C "$ROOT" --no-print-directory all >/dev/null
"$ROOT/deploy/local-cluster/up" "$TMP/cluster" 2>"$TMP/up.log" || { cat "$TMP/up.log" >&2; die "the cluster did not start"; }
# shellcheck source=/dev/null
source "$TMP/cluster/cluster.env"

# pgbench connects as the cluster's payd does: TCP on loopback.
PG_PORT="$(sed 's/.*port=\([0-9]*\).*/\1/' <<<"$PG_URL")"
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres pgbench
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -i -q -s "$PGBENCH_SCALE" pgbench \
    >"$TMP/pgbench-init.log" 2>&1 || { cat "$TMP/pgbench-init.log" >&2; die "pgbench -i failed"; }

HZ="$(getconf CLK_TCK)"
# CPU ticks (user + system) the whole machine spent busy so far.
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
# CPU ticks of these processes and of their children alive now.
tree_ticks() {
    local pids="$*" p sum=0
    pids+=" $(pgrep -d' ' -P "${pids// /,}" || true)"
    for p in $pids; do
        [[ -r "/proc/$p/stat" ]] && sum=$((sum + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$sum"
}
PARTS=(postgresql api worker redis nats nginx)
part_pids() {
    case "$1" in
    postgresql) echo "$PG_PID" ;; api) echo "$API_PIDS" ;; worker) echo "$WORKER_PIDS" ;;
    redis) echo "$REDIS_PID" ;; nats) echo "$NATS_PID" ;; nginx) echo "$NGINX_PID" ;;
    esac
}
declare -A PART_TICKS
parts_snapshot() { local p; for p in "${PARTS[@]}"; do PART_TICKS[$p]=$(tree_ticks $(part_pids "$p")); done; }
per_unit_ms() { awk -v t="$1" -v hz="$HZ" -v n="$2" 'BEGIN { printf "%.3f", (n > 0) ? t * 1000 / hz / n : 0 }'; }

pgbench_tps() {
    "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PG_PORT" -U postgres -M prepared -c "$PGBENCH_CLIENTS" \
        -j 2 -T "$DURATION" pgbench >"$TMP/pgbench-$1.log" 2>&1 || { cat "$TMP/pgbench-$1.log" >&2; die "pgbench failed"; }
    awk '/^tps = / { printf "%d", $3 }' "$TMP/pgbench-$1.log"
}

log "pgbench TPC-B, $PGBENCH_CLIENTS clients, ${DURATION}s"
TPS1="$(pgbench_tps 1)"
log "pgbench: $TPS1 tps"

log "paybench create-and-pay via nginx, closed loop c=$CONCURRENCY, ${DURATION}s"
# paybench reads payment outcomes from the /metrics of the URL it loads,
# and the api instances behind nginx do not make outcomes (the workers do):
# the end-to-end figure comes from the database instead, below.
parts_snapshot
declare -A PART_START
for part in "${PARTS[@]}"; do PART_START[$part]=${PART_TICKS[$part]}; done
MACHINE_START="$(machine_ticks)"
"$ROOT/build/paybench" --url "$LB_URL" --key "$DEMO_KEY" --scenario create-and-pay \
    --duration "$DURATION" --concurrency "$CONCURRENCY" --settle-timeout 1 \
    --json "$TMP/pay.json" >"$TMP/pay.txt" 2>&1 || true
cat "$TMP/pay.txt" >&2
[[ -s "$TMP/pay.json" ]] || die "paybench wrote no results"

psql_q() { psql -X -At "$PG_URL" -c "$1"; }
log "waiting for every accepted payment to be final"
for ((i = 0; i < 1200; i++)); do
    [[ "$(psql_q "SELECT count(*) FROM payments WHERE status = 'processing'")" == 0 ]] && break
    sleep 0.1
done
MACHINE_PAY=$(($(machine_ticks) - MACHINE_START))
parts_snapshot
STUCK="$(psql_q "SELECT count(*) FROM payments WHERE status = 'processing'")"
# End to end: paid orders over the time from the first payment accepted to
# the last outcome committed (every payment in this database is this run's).
read -r SUCCEEDED SPAN_MS FAILED < <(psql_q "SELECT count(*) FILTER (WHERE status = 'succeeded'),
    max(updated_ms) - min(created_ms), count(*) FILTER (WHERE status = 'failed') FROM payments" | tr '|' ' ')
PAID=$(awk -v n="$SUCCEEDED" -v ms="$SPAN_MS" 'BEGIN { printf "%d", (ms > 0) ? n * 1000 / ms : 0 }')
DOUBLED="$(psql_q "SELECT count(*) FROM (SELECT order_id FROM payments WHERE status = 'succeeded' GROUP BY order_id HAVING count(*) > 1) d")"

log "pgbench again"
MACHINE_START="$(machine_ticks)"
TPS2="$(pgbench_tps 2)"
MACHINE_PGBENCH=$(($(machine_ticks) - MACHINE_START))
TXNS2="$(awk '/number of transactions actually processed/ { split($NF, a, "/"); print a[1] }' "$TMP/pgbench-2.log")"
CPU_ROWS=""
for part in "${PARTS[@]}"; do
    CPU_ROWS+="| $part processes, per paid order | $(per_unit_ms $((PART_TICKS[$part] - PART_START[$part])) "$SUCCEEDED") |"$'\n'
done
log "pgbench: $TPS2 tps"
TPS=$(((TPS1 + TPS2) / 2))

ROW="$(jq -r '"\(.payments.accepted_per_s | floor) | \(.requests.order_create.latency_ok.p50_us / 1000) / \(.requests.order_create.latency_ok.p99_us / 1000) | \(.requests.payment_accept.latency_ok.p50_us / 1000) / \(.requests.payment_accept.latency_ok.p99_us / 1000) | \([.requests.order_create.status | to_entries[] | select(.value > 0) | "\(.key)=\(.value)"] | join(" "))"' "$TMP/pay.json")"
REPORT="$(cat <<EOF
| measure | value |
|---|---|
| pgbench TPC-B (-M prepared -c $PGBENCH_CLIENTS -j 2, scale $PGBENCH_SCALE), before / after / mean | $TPS1 / $TPS2 / $TPS tps |
| payd cluster, create-and-pay via nginx, closed loop c=$CONCURRENCY, queue $QUEUE: succeeded payments / (last outcome - first acceptance) | $PAID paid orders/s ($SUCCEEDED in $SPAN_MS ms) |
| ratio paid orders/s : pgbench tps | $(awk -v p="$PAID" -v t="$TPS" 'BEGIN { printf "%.2f", p / t }') |
| failed / still processing / orders paid twice | $FAILED / $STUCK / $DOUBLED |

| payments accepted/s | order 201 p50 / p99 ms | payment 202 p50 / p99 ms | order answers |
|---|---|---|---|
| $ROW |

| CPU time (user + system, from /proc) | ms |
|---|---|
| whole machine, per pgbench transaction (second run) | $(per_unit_ms "$MACHINE_PGBENCH" "$TXNS2") |
| whole machine, per paid order (load and drain; paybench included) | $(per_unit_ms "$MACHINE_PAY" "$SUCCEEDED") |
${CPU_ROWS%$'\n'}
EOF
)"
echo "$REPORT"
if [[ -n "$RESULTS" ]]; then
    RUN_UTC="$(date -u '+%Y-%m-%d %H:%M UTC')"
    {
        echo
        echo "## Cluster: $RUN_UTC, $(nproc) cores, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
        echo
        echo "Command: \`$COMMAND_LINE\` (2 api + 2 worker instances with $WORKER_THREADS worker threads each, PostgreSQL, Redis, NATS and nginx on the same machine)"
        echo
        echo "$REPORT"
    } >>"$RESULTS"
    log "appended to $RESULTS"
    # ROW: accepted/s | order p50 / p99 | payment p50 / p99 | order answers
    read -r r_acc r_o50 r_o99 r_p50 r_p99 r_answers <<<"$(tr -d '|/' <<<"$ROW")" || true
    record_csv cluster.csv "$CLUSTER_CSV_HEADER" "$(csv_row "$RUN_UTC" \
        "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')" "$COMMAND_LINE" "$CONCURRENCY" \
        "$QUEUE" "$WORKER_THREADS" "$TPS1" "$TPS2" "$TPS" "$PAID" "$SUCCEEDED" "$SPAN_MS" \
        "$(awk -v p="$PAID" -v t="$TPS" 'BEGIN { printf "%.2f", p / t }')" "$FAILED" "$STUCK" "$DOUBLED" \
        "$r_acc" "$r_o50" "$r_o99" "$r_p50" "$r_p99" "$r_answers")"
fi
