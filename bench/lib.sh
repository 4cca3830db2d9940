#!/usr/bin/env bash
# bench/lib.sh - what the benchmarks share, sourced by bench/flow.sh and
# bench/overload.sh: stopping what they started by pid, free ports, readiness,
# building, the nginx ceiling, starting payd and paybench, and the table row
# of a paybench run. A script sets BENCH_NAME, ROOT and TMP, then sources this.
#
# Settings read here: NGINX_WORKERS NGINX_DURATION NGINX_CONCURRENCY
# LADDER_CONNECTIONS KEEP_TMP BENCH_DATA, and PAYD_ENV (an array of NAME=VALUE
# given to every payd started).

# record_csv and the CSV files under bench/data/ that bench/plot.sh draws.
# shellcheck source=bench/record.sh
source "$ROOT/bench/record.sh"

PAYD="$ROOT/build/payd"
PAYBENCH="$ROOT/build/paybench"
HEALTH_WAIT_S=15
STOP_WAIT_S=15
THREAD_SAMPLE_S=5
NGINX_WORKERS="${NGINX_WORKERS:-auto}"
NGINX_DURATION="${NGINX_DURATION:-10}"
NGINX_CONCURRENCY="${NGINX_CONCURRENCY:-64}"
LADDER_CONNECTIONS="${LADDER_CONNECTIONS:-1024}"
KEEP_TMP="${KEEP_TMP:-0}"
PAYD_ENV=()
PAYBENCH_PREFIX=()  # e.g. (nice -n -10): how paybench is started
PAYD_PREFIX=()      # e.g. (taskset -c 0): how payd is started

log() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; }
die() { log "error: $*"; exit 1; }

NGINX_PID=""
NGINX_PORT=""
PAYD_PID=""
PAYBENCH_PID=""
PERF_PID=""
STOP_STATUS=""

# Stops process $1 (a child of this shell) with SIGTERM, then SIGKILL after
# STOP_WAIT_S; leaves its exit status in STOP_STATUS. Only pids this script
# started come here.
stop_pid() {
    local pid="$1" i
    STOP_STATUS=0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < STOP_WAIT_S * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not stop within ${STOP_WAIT_S}s of SIGTERM; SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || STOP_STATUS=$?
}

cleanup() {
    local pid
    for pid in "$PERF_PID" "$PAYBENCH_PID" "$NGINX_PID" "$PAYD_PID"; do
        if [[ -n "$pid" ]]; then stop_pid "$pid"; fi
    done
    if [[ "$KEEP_TMP" == 1 ]]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# A TCP port on 127.0.0.1 that no socket uses, in any state, taken below the
# kernel's ephemeral range so that no client connection can hold it.
free_port() {
    local port i low=32768 span
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range || true
    span=$((low > 11024 ? low - 10000 : 1000))
    for ((i = 0; i < 100; i++)); do
        port=$((low > 11024 ? 10000 + RANDOM % span : 61000 + RANDOM % 1000))
        if [[ -z "$(ss -Htan "sport = :$port")" ]]; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# Waits until URL $1 answers 200, while pid $2 lives.
wait_ready() {
    local url="$1" pid="$2" i
    for ((i = 0; i < HEALTH_WAIT_S * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if [[ "$(curl --noproxy '*' -s -o /dev/null -w '%{http_code}' --max-time 1 "$url")" == 200 ]]
        then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# Sum of every sample of metric $1 in the /metrics text on stdin.
metric_sum() {
    awk -v name="$1" '$1 == name || index($1, name "{") == 1 { s += $NF } END { printf "%d\n", s }'
}

# One line per thread of process $1: tid, name, utime+stime in ticks, wchan.
thread_ticks() {
    local task
    for task in /proc/"$1"/task/*; do
        printf '%s %s %s %s\n' "${task##*/}" "$(cat "$task/comm" 2>/dev/null | tr ' ' _)" \
            "$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$task/stat" 2>/dev/null)" \
            "$(cat "$task/wchan" 2>/dev/null || echo '?')"
    done
}

# Per-thread CPU of process $1 over THREAD_SAMPLE_S seconds, busiest first,
# as "% of one core" (the wchan column says where an idle thread waited).
sample_threads() {
    local pid="$1" hz
    hz="$(getconf CLK_TCK)"
    thread_ticks "$pid" >"$TMP/threads-0.txt"
    # The same window for the whole machine: who else used the cores.
    top -b -d "$THREAD_SAMPLE_S" -n 2 -w 200 >"$TMP/top.txt" 2>&1 || sleep "$THREAD_SAMPLE_S"
    thread_ticks "$pid" >"$TMP/threads-1.txt"
    awk -v hz="$hz" -v s="$THREAD_SAMPLE_S" '
        NR == FNR { t0[$1] = $3; next }
        { d = $3 - t0[$1]; pct = 100 * d / hz / s; total += pct
          if (pct >= 1) printf "%6.1f %% %-8s %-12s %s\n", pct, $1, $2, $4
          else idle++ }
        END { printf "%6.1f %% all %d threads (%d under 1 %%)\n", total, FNR, idle }
    ' "$TMP/threads-0.txt" "$TMP/threads-1.txt" | sort -rn >"$TMP/threads.txt"
}

# ---- 1. build ---------------------------------------------------------------

build() {
    [[ -f "$ROOT/Makefile" ]] || die "no Makefile in $ROOT"
    if [[ ! -x "$PAYD" || -n "$(find "$ROOT/src" "$ROOT/Makefile" -newer "$PAYD" -print -quit)" ]]
    then
        log "building payd (make)"
        make -C "$ROOT" >"$TMP/make.log" 2>&1 || { tail -30 "$TMP/make.log" >&2; die "make failed"; }
    fi
    [[ -x "$PAYD" ]] || die "make did not produce $PAYD"
    if [[ ! -x "$PAYBENCH" || -n "$(find "$ROOT/tools/paybench" -newer "$PAYBENCH" -print -quit)" ]]
    then
        if make -C "$ROOT" -n build/paybench >/dev/null 2>&1; then
            log "building paybench (make build/paybench)"
            make -C "$ROOT" build/paybench >"$TMP/make-paybench.log" 2>&1 ||
                { tail -30 "$TMP/make-paybench.log" >&2; die "make build/paybench failed"; }
        else
            log "building paybench (gcc; the Makefile has no rule for it)"
            mkdir -p "$ROOT/build"
            gcc -std=c11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -o "$PAYBENCH" \
                "$ROOT"/tools/paybench/*.c -ljansson -lm
        fi
    fi
}

# ---- 2. nginx ---------------------------------------------------------------

NGINX_RPS=""
NGINX_P99_MS=""
NGINX_CLIENT_CPU=""
WRK_RPS=""

# Starts nginx answering every GET with a static "ok" from $1 workers, its
# files in $TMP/$2; sets NGINX_PID and NGINX_PORT.
start_nginx() {
    local workers="$1" dir="$TMP/$2" port
    port="$(free_port)" || die "no free port"
    mkdir -p "$dir/logs"
    cat >"$dir/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
    nginx -c "$dir/nginx.conf" -p "$dir" >"$dir/logs/stdout.log" 2>&1 &
    NGINX_PID=$!
    wait_ready "http://127.0.0.1:$port/" "$NGINX_PID" ||
        { cat "$dir/logs/error.log" >&2; die "nginx did not start"; }
    NGINX_PORT="$port"
    log "nginx (worker_processes $workers) on port $port, pid $NGINX_PID"
}

run_nginx() {
    local port
    start_nginx "$NGINX_WORKERS" nginx
    port="$NGINX_PORT"

    log "paybench static, concurrency $NGINX_CONCURRENCY, ${NGINX_DURATION}s"
    "$PAYBENCH" --url "http://127.0.0.1:$port/" --scenario static \
        --duration "$NGINX_DURATION" --concurrency "$NGINX_CONCURRENCY" \
        --json "$TMP/nginx.json" >"$TMP/nginx.txt" 2>&1 || true
    cat "$TMP/nginx.txt" >&2
    [[ -s "$TMP/nginx.json" ]] || die "paybench static wrote no results"
    NGINX_RPS="$(jq -r '.requests_per_s_ok | floor' "$TMP/nginx.json")"
    NGINX_P99_MS="$(jq -r '.requests.static_get.latency_ok.p99_us / 1000' "$TMP/nginx.json")"
    NGINX_CLIENT_CPU="$(jq -r '.client_cpu_pct_of_core | floor' "$TMP/nginx.json")"

    log "wrk -t1 -c$NGINX_CONCURRENCY -d${NGINX_DURATION}s (comparison)"
    wrk -t1 -c"$NGINX_CONCURRENCY" -d"${NGINX_DURATION}s" "http://127.0.0.1:$port/" \
        >"$TMP/wrk.txt" 2>&1 || true
    cat "$TMP/wrk.txt" >&2
    WRK_RPS="$(awk '/^Requests\/sec:/ { printf "%d", $2 }' "$TMP/wrk.txt")"

    stop_pid "$NGINX_PID"
    NGINX_PID=""
    log "nginx stopped (exit status $STOP_STATUS)"
}

# ---- 3. payd ----------------------------------------------------------------

PAYD_PORT=""
PAYD_KEY=""
PAYD_BAD_EXIT=""

# Starts a fresh payd on the fresh data directory $1 (its output goes to
# $1.log); sets PAYD_PID, PAYD_PORT and PAYD_KEY.
start_payd() {
    local data="$1"
    PAYD_PORT="$(free_port)" || die "no free port"
    PAYD_KEY="sk_bench_$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    "${PAYD_PREFIX[@]}" env "${PAYD_ENV[@]}" PAYD_DEMO_KEY="$PAYD_KEY" "$PAYD" serve --listen "127.0.0.1:$PAYD_PORT" \
        --data-dir "$data" >"$data.log" 2>&1 &
    PAYD_PID=$!
    if ! wait_ready "http://127.0.0.1:$PAYD_PORT/healthz" "$PAYD_PID"; then
        tail -30 "$data.log" >&2
        die "payd did not become healthy within ${HEALTH_WAIT_S}s"
    fi
}

# Stops payd; SIGTERM is a clean stop, so any exit status but 0 is noted.
stop_payd() {
    stop_pid "$PAYD_PID"
    PAYD_PID=""
    if [[ "$STOP_STATUS" != 0 ]]; then
        log "SUSPICIOUS: payd exited with status $STOP_STATUS after SIGTERM"
        PAYD_BAD_EXIT+=" $STOP_STATUS"
    fi
}

# Starts create-and-pay in the background: $1 concurrency, $2 seconds, $3 the
# run's name (its files in $TMP); sets PAYBENCH_PID.
# $1 may also be "rate=R": open loop at R sessions/s.
start_pay() {
    local load="$1" seconds="$2" name="$3" model
    if [[ "$load" == rate=* ]]; then
        model=(--rate "${load#rate=}" --connections "$LADDER_CONNECTIONS")
    else
        model=(--concurrency "$load")
    fi
    "${PAYBENCH_PREFIX[@]}" "$PAYBENCH" --url "http://127.0.0.1:$PAYD_PORT" --key "$PAYD_KEY" \
        --scenario create-and-pay --duration "$seconds" "${model[@]}" \
        --server-pid "$PAYD_PID" --json "$TMP/$name.json" >"$TMP/$name.txt" 2>&1 &
    PAYBENCH_PID=$!
}

wait_pay() {
    wait "$PAYBENCH_PID" || true
    PAYBENCH_PID=""
}

# One row of the runs table from paybench's JSON $1, labelled $2.
run_row() {
    jq -r --arg run "$2" '"| \($run) | \(.payments.paid_orders_per_s | floor) | \(.payments.accepted_per_s | floor) | \(.payments.steady_succeeded_per_s | floor) | \((.payments.end_to_end_us - .load_window_us) / 1000 | floor) | \(.requests.payment_accept.latency_ok.p50_us / 1000) / \(.requests.payment_accept.latency_ok.p99_us / 1000) | \(.client_cpu_pct_of_core | floor) | \(.server_cpu_pct_of_core | floor) | \(.other_cpu_pct_of_core | floor) | \(.machine_busy_pct | floor) / \(.machine_iowait_pct | floor) / \(.machine_steal_pct | floor) | \(if .ok then "ok" else "PROBLEMS" end) |"' "$1"
}
RUN_HEADER='| run | paid orders/s e2e | accepted/s | succeeded/s in load | tail ms | accept p50 / p99 ms | client CPU % core | payd CPU % core | other CPU % core | machine busy / iowait / steal % | verdict |
|---|---|---|---|---|---|---|---|---|---|---|'
