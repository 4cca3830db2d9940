#!/usr/bin/env bash
# bench/flow.sh - the end-to-end load benchmark: how many orders per second
# payd takes from creation to a succeeded payment on this machine, next to
# the ceiling a plain nginx reaches here with the same client.
#
# Steps:
#   1. build: `make` when build/payd is missing or older than src/ or the
#      Makefile; build/paybench from tools/paybench/ (through the Makefile's
#      rule when it has one, else gcc directly).
#   2. nginx: a temporary configuration in a temporary directory (loopback,
#      a free port, `return 200 "ok"`, access_log off, worker_processes
#      $NGINX_WORKERS, default auto = one per core); paybench `static`
#      closed loop, then wrk for comparison. paybench has its own HTTP/1.1
#      client (tools/paybench/httpc.c), about as cheap per request as wrk
#      (bench/RESULTS.md, "Client cost"); a gap between the two means the
#      client, not nginx, was the limit.
#   3. payd: for each concurrency in $SWEEP a fresh payd on a fresh data
#      directory and a free port, create-and-pay for $SWEEP_DURATION s; then
#      $REPEAT measured runs at the best concurrency, $DURATION s each, each
#      on a fresh payd. During the first measured run payd's threads are
#      sampled from /proc for 5 s. PROFILE=1 adds one more run under
#      `perf record` (not counted in the numbers).
#   4. open loop: a ladder of offered rates (--rate), each on a fresh payd for
#      $LADDER_DURATION s, from half the closed-loop result up by 15 % a
#      step, until a rate is not sustained: the client could not keep the
#      schedule, a request failed, payments were not all final, the succeeded
#      rate during the load fell under 95 % of the offered one, or the last
#      success came more than 1 s after the load. The highest sustained rate
#      is what payd keeps up with indefinitely; the closed-loop figure can be
#      higher when acceptance outruns the payment pipeline for the length of
#      a run (the backlog drains after the load, in the "tail").
#   5. a table on stdout, and the same appended to bench/RESULTS.md with the
#      date, the machine and the exact command; the numbers also to
#      bench/data/flow.csv and flow_runs.csv (bench/record.sh), which
#      bench/plot.sh draws.
#
# Everything it starts (nginx, payd, paybench, perf) it stops by pid; its
# temporary directory goes on exit (KEEP_TMP=1 keeps it, with the logs and
# the JSON of every run).
#
# Environment (defaults in brackets):
#   DURATION [20]  REPEAT [3]  SWEEP ["16 32 64 128 256"]  SWEEP_DURATION [5]
#   CONCURRENCY [unset; set it to skip the sweep]  NGINX_WORKERS [auto]
#   NGINX_DURATION [10]  NGINX_CONCURRENCY [64]  PROFILE [0]  KEEP_TMP [0]
#   LADDER [1; 0 skips it]  LADDER_DURATION [15]  LADDER_CONNECTIONS [1024]
#   RESULTS [bench/RESULTS.md; empty: do not append, nor record CSV]
#   BENCH_DATA [bench/data; empty: do not record CSV]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The exact command, with the settings that came from the environment.
COMMAND_LINE=""
for v in DURATION REPEAT SWEEP SWEEP_DURATION CONCURRENCY NGINX_WORKERS NGINX_DURATION \
    NGINX_CONCURRENCY PROFILE LADDER LADDER_DURATION LADDER_CONNECTIONS; do
    if [[ -n "${!v:-}" ]]; then COMMAND_LINE+="$(printf '%s=%q ' "$v" "${!v}")"; fi
done
COMMAND_LINE+="bench/flow.sh${*:+ $*}"

DURATION="${DURATION:-20}"
REPEAT="${REPEAT:-3}"
SWEEP="${SWEEP:-16 32 64 128 256}"
SWEEP_DURATION="${SWEEP_DURATION:-5}"
CONCURRENCY="${CONCURRENCY:-}"
PROFILE="${PROFILE:-0}"
LADDER="${LADDER:-1}"
LADDER_DURATION="${LADDER_DURATION:-15}"
LADDER_STEPS_MAX=10
RESULTS="${RESULTS-$ROOT/bench/RESULTS.md}"

BENCH_NAME=flow
TMP="$(mktemp -d /tmp/payd-bench.XXXXXX)"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

for tool in nginx wrk jq curl ss gcc make; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done
[[ "$PROFILE" != 1 ]] || command -v perf >/dev/null || die "PROFILE=1 needs perf"

# ---- 2b. the storage ceiling -------------------------------------------------

# The same machine's ceiling for what payd's store does, measured with the
# sqlite3 command-line shell and no payd code: rows inserted per second into
# a WAL database with synchronous=FULL, 60 rows a transaction (payd's batch
# size under load), each row keyed by random hex (like idempotency keys)
# into a table without rowid. It moves with the machine's state (disk
# flushes, memory bandwidth taken by neighbours), so payd's figure reads as a
# ratio to it.
run_sqlite_ceiling() {
    local db="$TMP/ceiling.db" sql="$TMP/ceiling.sql"
    log "sqlite ceiling: 1000 transactions of 60 inserts, WAL, synchronous=FULL"
    {
        echo "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
        echo "CREATE TABLE t(k TEXT PRIMARY KEY, a INTEGER, b TEXT) WITHOUT ROWID;"
        for ((t = 0; t < 1000; t++)); do
            echo "BEGIN; INSERT INTO t SELECT lower(hex(randomblob(16))), value, 'x'"
            echo "  FROM generate_series(1, 60); COMMIT;"
        done
    } >"$sql"
    local t0 t1
    t0="$(date +%s.%N)"
    sqlite3 "$db" <"$sql" >/dev/null
    t1="$(date +%s.%N)"
    SQLITE_ROWS_PER_S="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", 60000 / (b - a) }')"
    SQLITE_COMMITS_PER_S="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", 1000 / (b - a) }')"
    log "sqlite ceiling: $SQLITE_ROWS_PER_S rows/s ($SQLITE_COMMITS_PER_S commits/s)"
    rm -f "$db" "$db-wal" "$db-shm" "$sql"
}


SWEEP_ROWS=""
BEST_CONCURRENCY=""

sweep() {
    local best_rate=-1 c rate
    for c in $SWEEP; do
        start_payd "$TMP/sweep-$c"
        log "sweep: concurrency $c, ${SWEEP_DURATION}s (payd pid $PAYD_PID)"
        start_pay "$c" "$SWEEP_DURATION" "sweep-$c"
        wait_pay
        stop_payd
        if [[ ! -s "$TMP/sweep-$c.json" ]]; then
            cat "$TMP/sweep-$c.txt" >&2
            die "paybench wrote no results for concurrency $c"
        fi
        rate="$(jq -r '.payments.paid_orders_per_s | floor' "$TMP/sweep-$c.json")"
        SWEEP_ROWS+="$(run_row "$TMP/sweep-$c.json" "c=$c")"$'\n'
        log "sweep: concurrency $c -> $rate paid orders/s"
        if ((rate > best_rate)); then
            best_rate="$rate"
            BEST_CONCURRENCY="$c"
        fi
    done
}

MEASURED_ROWS=""
RATES=()

# Measured run number $1 at BEST_CONCURRENCY; the first also samples threads.
measured_run() {
    local i="$1" name="run-$1"
    start_payd "$TMP/$name"
    curl --noproxy '*' -s "http://127.0.0.1:$PAYD_PORT/metrics" >"$TMP/$name-metrics-0.txt"
    log "measured run $i/$REPEAT: concurrency $BEST_CONCURRENCY, ${DURATION}s (payd pid $PAYD_PID)"
    start_pay "$BEST_CONCURRENCY" "$DURATION" "$name"
    if ((i == 1)); then
        sleep $((DURATION > THREAD_SAMPLE_S + 4 ? (DURATION - THREAD_SAMPLE_S) / 2 : 1))
        sample_threads "$PAYD_PID"
    fi
    wait_pay
    curl --noproxy '*' -s "http://127.0.0.1:$PAYD_PORT/metrics" >"$TMP/$name-metrics-1.txt"
    stop_payd
    cat "$TMP/$name.txt" >&2
    [[ -s "$TMP/$name.json" ]] || die "paybench wrote no results for $name"
    MEASURED_ROWS+="$(run_row "$TMP/$name.json" "$i")"$'\n'
    RATES+=("$(jq -r '.payments.paid_orders_per_s | floor' "$TMP/$name.json") $name")
}

LADDER_ROWS=""
SUSTAINED_RATE=""
SUSTAINED_NAME=""

# Whether the open-loop run in JSON $1 at rate $2 was sustained (see step 4).
sustained() {
    jq -e --argjson rate "$2" '.ok and .payments.all_final
        and .payments.steady_succeeded_per_s >= 0.95 * $rate
        and (.payments.end_to_end_us - .load_window_us) <= 1000000' "$1" >/dev/null
}

ladder() {
    local rate step name why
    rate="$(jq -r '.payments.paid_orders_per_s / 2 / 100 | floor * 100' "$TMP/$MEDIAN_NAME.json")"
    ((rate >= 100)) || rate=100
    for ((step = 1; step <= LADDER_STEPS_MAX; step++)); do
        name="rate-$rate"
        start_payd "$TMP/$name"
        log "ladder: open loop, ${rate}/s, ${LADDER_DURATION}s (payd pid $PAYD_PID)"
        start_pay "rate=$rate" "$LADDER_DURATION" "$name"
        wait_pay
        stop_payd
        [[ -s "$TMP/$name.json" ]] || die "paybench wrote no results for $name"
        if sustained "$TMP/$name.json" "$rate"; then
            LADDER_ROWS+="$(run_row "$TMP/$name.json" "${rate}/s sustained")"$'\n'
            SUSTAINED_RATE="$rate"
            SUSTAINED_NAME="$name"
            log "ladder: ${rate}/s sustained"
        else
            why="$(jq -r --argjson rate "$rate" '[
                (if .schedule.kept then empty else "sessions started late (every connection busy, or the client starved)" end),
                (if .sessions_failed + .sessions_aborted > 0 then "failed sessions" else empty end),
                (if .payments.all_final then empty else "payments not final" end),
                (if .payments.steady_succeeded_per_s >= 0.95 * $rate then empty
                 else "succeeded/s < 95 % of offered" end),
                (if (.payments.end_to_end_us - .load_window_us) <= 1000000 then empty
                 else "tail > 1 s" end)] | join(", ")' "$TMP/$name.json")"
            LADDER_ROWS+="$(run_row "$TMP/$name.json" "${rate}/s NOT sustained: ${why:-see JSON}")"$'\n'
            log "ladder: ${rate}/s not sustained: $why"
            break
        fi
        rate=$(((rate * 115 / 100 + 99) / 100 * 100))
    done
}

# One more run under perf record; its numbers are not reported.
profile_run() {
    start_payd "$TMP/profile"
    log "profile run: concurrency $BEST_CONCURRENCY, ${DURATION}s, perf record 5 s"
    start_pay "$BEST_CONCURRENCY" "$DURATION" profile
    sleep $((DURATION > 9 ? (DURATION - 5) / 2 : 1))
    perf record -F 999 -g -p "$PAYD_PID" -o "$TMP/perf.data" -- sleep 5 \
        >"$TMP/perf-record.log" 2>&1 &
    PERF_PID=$!
    wait "$PERF_PID" || true
    PERF_PID=""
    wait_pay
    stop_payd
    {
        echo "by thread name:"
        perf report -i "$TMP/perf.data" --no-children --stdio --sort comm -g none \
            2>/dev/null | grep -E '^ +[0-9]' | head -8
        echo "by thread name and symbol (over 0.7 %):"
        perf report -i "$TMP/perf.data" --no-children --stdio --sort comm,dso,sym -g none \
            --percent-limit 0.7 2>/dev/null | grep -E '^ +[0-9]' | head -25
    } >"$TMP/perf.txt" || true
}

# ---- main -------------------------------------------------------------------

build
run_nginx
run_sqlite_ceiling
if [[ -n "$CONCURRENCY" ]]; then
    BEST_CONCURRENCY="$CONCURRENCY"
else
    sweep
fi
for ((i = 1; i <= REPEAT; i++)); do
    measured_run "$i"
done
# The median run (by paid orders/s) gives the headline and the details.
MEDIAN_NAME="$(printf '%s\n' "${RATES[@]}" | sort -n | awk '{ a[NR] = $2 } END { print a[int((NR + 1) / 2)] }')"
if [[ "$LADDER" == 1 ]]; then ladder; fi
if [[ "$PROFILE" == 1 ]]; then profile_run; fi

# ---- 5. report --------------------------------------------------------------

J="$TMP/$MEDIAN_NAME.json"
PAID_RPS="$(jq -r '.payments.paid_orders_per_s | floor' "$J")"
RANGE="$(printf '%s\n' "${RATES[@]}" | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo " … " hi }')"
before="$TMP/$MEDIAN_NAME-metrics-0.txt"
after="$TMP/$MEDIAN_NAME-metrics-1.txt"
commits=$(($(metric_sum payd_store_commits_total <"$after") - $(metric_sum payd_store_commits_total <"$before")))
commit_ops=$(($(metric_sum payd_store_commit_ops_total <"$after") - $(metric_sum payd_store_commit_ops_total <"$before")))
ops_per_commit="n/a"
((commits <= 0)) || ops_per_commit="$(awk -v o="$commit_ops" -v c="$commits" 'BEGIN { printf "%.1f", o / c }')"
ratio="$(awk -v p="$PAID_RPS" -v n="$NGINX_RPS" 'BEGIN { printf "%.3f", (n > 0 ? p / n : 0) }')"
ratio_wrk="$(awk -v p="$PAID_RPS" -v n="$WRK_RPS" 'BEGIN { printf "%.3f", (n > 0 ? p / n : 0) }')"
statuses="$(jq -r '[.requests | to_entries[] | select(.value.requests > 0) |
    "\(.key): " + ([.value.status | to_entries[] | "\(.key)=\(.value)"] | join(" "))] | join("; ")' "$J")"
db_bytes="$(du -sb "$TMP/$MEDIAN_NAME" 2>/dev/null | cut -f1)"

TABLE="$(cat <<EOF
| measure | value |
|---|---|
| nginx static, paybench c=$NGINX_CONCURRENCY (worker_processes $NGINX_WORKERS) | $NGINX_RPS req/s (p99 ${NGINX_P99_MS} ms; client CPU ${NGINX_CLIENT_CPU} % of a core) |
| nginx static, wrk -t1 -c$NGINX_CONCURRENCY | $WRK_RPS req/s |
| sqlite3 shell, WAL + synchronous=FULL, 60 random-key rows a commit | $SQLITE_ROWS_PER_S rows/s ($SQLITE_COMMITS_PER_S commits/s) |
| payd create-and-pay closed loop, concurrency $BEST_CONCURRENCY, ${DURATION} s, median of $REPEAT | **$PAID_RPS paid orders/s end to end** (runs: $RANGE) |
| payd open loop: highest offered rate sustained (step 15 %) | $(if [[ -n "$SUSTAINED_RATE" ]]; then jq -r --arg r "$SUSTAINED_RATE" '"**\($r) paid orders/s** (accept p50 / p99 \(.requests.payment_accept.latency_ok.p50_us / 1000) / \(.requests.payment_accept.latency_ok.p99_us / 1000) ms, order p99 \(.requests.order_create.latency_ok.p99_us / 1000) ms)"' "$TMP/$SUSTAINED_NAME.json"; elif [[ "$LADDER" == 1 ]]; then echo "none of the ladder (see below)"; else echo "not measured (LADDER=0)"; fi) |
| ratio payd paid orders/s : nginx req/s (paybench / wrk) | $ratio / $ratio_wrk (a paid order is 2 HTTP requests plus the worker's charge) |
| payments accepted / succeeded / failed / not final | $(jq -r '.payments | "\(.accepted) / \(.succeeded) / \(.failed) / \(.not_final)"' "$J") |
| sample of payments read back succeeded | $(jq -r '.payments | "\(.sample_succeeded) of \(.sample_size)"' "$J") |
| accepted/s during load; succeeded/s during load | $(jq -r '.payments | "\(.accepted_per_s | floor); \(.steady_succeeded_per_s | floor)"' "$J") |
| last success after the load ended | $(jq -r '((.payments.end_to_end_us - .load_window_us) / 1000 | floor | tostring) + " ms"' "$J") |
| order create latency p50 / p90 / p99 / p99.9 / max | $(jq -r '.requests.order_create.latency_ok | "\(.p50_us/1000) / \(.p90_us/1000) / \(.p99_us/1000) / \(.p99_9_us/1000) / \(.max_us/1000) ms"' "$J") |
| payment accept (202) latency p50 / p90 / p99 / p99.9 / max | $(jq -r '.requests.payment_accept.latency_ok | "\(.p50_us/1000) / \(.p90_us/1000) / \(.p99_us/1000) / \(.p99_9_us/1000) / \(.max_us/1000) ms"' "$J") |
| client (paybench) CPU | $(jq -r '"\(.client_cpu_pct_of_core | floor) % of one core, \(.client_cpu_us_per_session | floor) us per session"' "$J") |
| payd CPU; CPU used by neither (kernel threads, other processes) | $(jq -r '"\(.server_cpu_pct_of_core | floor) %; \(.other_cpu_pct_of_core | floor) % of one core"' "$J") |
| machine CPU busy / iowait / steal | $(jq -r '"\(.machine_busy_pct | floor) / \(.machine_iowait_pct | floor) / \(.machine_steal_pct | floor) % of all"' "$J") $(nproc) cores |
| store: commits, operations per commit; data dir after the run | $commits, $ops_per_commit; $((db_bytes / 1048576)) MiB |
| answers by kind | $statuses |
| verdict (paybench) | $(jq -r 'if .ok then "ok" else "PROBLEMS" end' "$J")$([[ -z "$PAYD_BAD_EXIT" ]] || echo "; payd exit status after SIGTERM:$PAYD_BAD_EXIT") |
EOF
)"

{
    echo
    echo "$TABLE"
    echo
    echo "Closed-loop measured runs at concurrency $BEST_CONCURRENCY (fresh payd each; tail = last success after the load ended):"
    echo
    echo "$RUN_HEADER"
    printf '%s' "$MEASURED_ROWS"
    if [[ -n "$LADDER_ROWS" ]]; then
        echo
        echo "Open-loop ladder (${LADDER_DURATION} s each, fresh payd each; latency counts from the scheduled start):"
        echo
        echo "$RUN_HEADER"
        printf '%s' "$LADDER_ROWS"
    fi
    if [[ -n "$SWEEP_ROWS" ]]; then
        echo
        echo "Closed-loop sweep (${SWEEP_DURATION} s each, fresh payd each):"
        echo
        echo "$RUN_HEADER"
        printf '%s' "$SWEEP_ROWS"
    fi
    if [[ -s "$TMP/threads.txt" ]]; then
        echo
        echo "payd threads, ${THREAD_SAMPLE_S} s in the middle of run 1 (% of one core, tid, name, wchan):"
        echo
        echo '```'
        cat "$TMP/threads.txt"
        echo '```'
    fi
    if [[ -s "$TMP/top.txt" ]]; then
        echo
        echo "Processes over the same ${THREAD_SAMPLE_S} s (top; anything but payd and paybench is noise):"
        echo
        echo '```'
        awk '/^top -/ { n++ } n == 2' "$TMP/top.txt" | sed -n '1,3p;/PID USER/,$p' |
            awk '/PID USER/ { f = 1; print; next } !f { print; next } f && $9 + 0 >= 1' | head -14
        echo '```'
    fi
    if [[ -s "$TMP/perf.txt" ]]; then
        echo
        echo "perf record -g on payd, 5 s mid-run (extra run, not counted):"
        echo
        echo '```'
        cat "$TMP/perf.txt"
        echo '```'
    fi
} >"$TMP/report.md"
cat "$TMP/report.md"

if [[ -n "$RESULTS" ]]; then
    RUN_UTC="$(date -u '+%Y-%m-%d %H:%M UTC')"
    {
        echo
        echo "## $RUN_UTC"
        echo
        echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -g | awk '/^Mem:/ { print $2 }') GiB, kernel $(uname -r), data on $(df -T "$TMP" | awk 'NR == 2 { print $2 " " $1 }')."
        echo "payd: $("$PAYD" version 2>/dev/null | head -1 || echo unknown), tree $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'without commits')$([[ -z "$(git -C "$ROOT" status --porcelain -- src Makefile 2>/dev/null)" ]] || echo ' with uncommitted changes in src/ or Makefile')."
        echo "Command: \`$COMMAND_LINE\`"
        cat "$TMP/report.md"
    } >>"$RESULTS"
    log "appended to $RESULTS"
    # The same numbers, machine-readable (bench/record.sh; drawn by bench/plot.sh).
    tree="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo 'without commits')$([[ -z "$(git -C "$ROOT" status --porcelain -- src Makefile 2>/dev/null)" ]] || echo ' (uncommitted changes in src/ or Makefile)')"
    open_lat=("" "" "")
    if [[ -n "$SUSTAINED_NAME" ]]; then
        read -r -a open_lat < <(jq -r '.requests | "\(.payment_accept.latency_ok.p50_us / 1000) \(.payment_accept.latency_ok.p99_us / 1000) \(.order_create.latency_ok.p99_us / 1000)"' "$TMP/$SUSTAINED_NAME.json") || true
    fi
    record_csv flow.csv "$FLOW_CSV_HEADER" "$(csv_row "$RUN_UTC" "$tree" "$COMMAND_LINE" "$NGINX_RPS" \
        "$WRK_RPS" "$SQLITE_ROWS_PER_S" "$BEST_CONCURRENCY" "$DURATION" "$REPEAT" "$PAID_RPS" \
        "${RANGE%% *}" "${RANGE##* }" "$SUSTAINED_RATE" "${open_lat[@]}" \
        "$(jq -r 'if .ok then "ok" else "PROBLEMS" end' "$J")$([[ -z "$PAYD_BAD_EXIT" ]] || echo "; payd exit status after SIGTERM:$PAYD_BAD_EXIT")")"
    record_csv flow_runs.csv "$FLOW_RUNS_CSV_HEADER" "$(
        printf '%s' "$MEASURED_ROWS" | flow_runs_csv "$RUN_UTC" measured "$BEST_CONCURRENCY"
        printf '%s' "$LADDER_ROWS" | flow_runs_csv "$RUN_UTC" ladder ""
        printf '%s' "$SWEEP_ROWS" | flow_runs_csv "$RUN_UTC" sweep "")"
fi
