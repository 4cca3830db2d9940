#!/usr/bin/env bash
# bench/record.sh - the benchmarks' results in machine-readable form: each
# benchmark appends its numbers to a CSV file of its own under bench/data/
# (a header line, then one line per measured row, each naming the run's
# date as in its bench/RESULTS.md heading), beside the Markdown it appends to
# bench/RESULTS.md. bench/plot.sh draws the charts from these files.
#
# Sourced by bench/lib.sh, and directly by bench/guard.sh and
# bench/cluster.sh (which do not use lib.sh). Defines functions only.
#
# Setting read here: BENCH_DATA [bench/data; empty: record nothing].

# shellcheck disable=SC2034 # the headers are used by the scripts that source this file
BENCH_DATA="${BENCH_DATA-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/data}"

# The header of each file (bench/plot.sh reads the columns by these names).
FLOW_CSV_HEADER='run_utc,tree,command,nginx_paybench_req_s,nginx_wrk_req_s,sqlite_rows_s,closed_concurrency,closed_duration_s,closed_runs,closed_median_paid_s,closed_min_paid_s,closed_max_paid_s,open_sustained_paid_s,open_accept_p50_ms,open_accept_p99_ms,open_order_p99_ms,verdict'
FLOW_RUNS_CSV_HEADER='run_utc,table,run,concurrency,offered_per_s,sustained,paid_orders_s,accepted_s,succeeded_in_load_s,tail_ms,accept_p50_ms,accept_p99_ms,client_cpu_pct,payd_cpu_pct,other_cpu_pct,machine_busy_pct,machine_iowait_pct,machine_steal_pct,verdict'
OVERLOAD_CSV_HEADER='run_utc,tree,command,split_cpus,factor,nginx_paybench_req_s,capacity_paid_s,unloaded_p99_median_ms,rep,load,mode,offered_per_s,succeeded_in_load_s,paid_orders_e2e_s,payment_p50_ms,payment_p99_ms,payment_p99_9_ms,order_p99_ms,order_answers,payment_answers,inflight_limit,inflight_mean_ms,inflight_floor_ms,schedule_kept,schedule_lag_p99_ms,probe_p99_ms'
MACHINE_CSV_HEADER='run_utc,tree,command,cpus,probe_rate_s,duration_s,phase,probe_p50_ms,probe_p99_ms,probe_p99_9_ms,probe_lag_p99_ms,machine_busy_pct,machine_iowait_pct,machine_steal_pct'
GUARD_CSV_HEADER='run_utc,tree,seconds_per_row,cpus,operation,threads,ns_per_op,m_ops_s_all'
REDIS_LIMIT_CSV_HEADER='run_utc,tree,seconds_per_row,redis_version,source,operation,threads,ns_per_op,ops_s_all,errors,server_us_per_take'
SCENARIOS_CSV_HEADER='run_utc,tree,command,nginx_paybench_req_s,concurrency,duration_s,scenario,sessions_s,paid_orders_s,payd_req_s,ratio_to_nginx,check,verdict'
CLUSTER_CSV_HEADER='run_utc,tree,command,concurrency,queue,worker_threads,pgbench_tps_before,pgbench_tps_after,pgbench_tps_mean,paid_orders_s,succeeded,span_ms,ratio,failed,still_processing,paid_twice,accepted_s,order_p50_ms,order_p99_ms,payment_p50_ms,payment_p99_ms,order_answers'

# One CSV line of its arguments; a field with a comma or a quote is quoted.
csv_row() {
    local f out="" sep=""
    for f in "$@"; do
        if [[ "$f" == *[,\"]* ]]; then f="\"${f//\"/\"\"}\""; fi
        out+="$sep$f"
        sep=,
    done
    printf '%s\n' "$out"
}

# record_csv FILE HEADER ROWS: appends ROWS (CSV lines) to $BENCH_DATA/FILE,
# writing HEADER first into a new file. A file whose header differs is left
# alone (the rows go to stderr instead), so that columns never shift.
record_csv() {
    local path="$BENCH_DATA/$1" header="$2" rows="$3"
    [[ -n "$BENCH_DATA" && -n "$rows" ]] || return 0
    mkdir -p "$BENCH_DATA" || return 0
    if [[ ! -s "$path" ]]; then
        printf '%s\n' "$header" >"$path" || return 0
    elif [[ "$(head -n 1 "$path")" != "$header" ]]; then
        printf 'record_csv: %s has another header; not appended there:\n%s\n' "$path" "$rows" >&2
        return 0
    fi
    printf '%s\n' "$rows" >>"$path" || return 0
    printf 'record_csv: appended to %s\n' "$path" >&2
}

# The Markdown table rows on stdin as CSV lines: the common awk helpers.
_RECORD_AWK='
function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
function q(s) { if (s ~ /[,"]/) { gsub(/"/, "\"\"", s); return "\"" s "\"" } return s }
function cells(line, c,    n, i, raw) {
    n = split(line, raw, "|")
    for (i = 2; i < n; i++) c[i - 1] = trim(raw[i])
    return n - 2
}'

# flow_runs_csv RUN_UTC TABLE CONCURRENCY: bench/flow.sh's run rows (lib.sh's
# run_row; TABLE measured, ladder or sweep) on stdin, as flow_runs.csv lines.
# CONCURRENCY is the measured runs'; a sweep row names its own (c=N), a
# ladder row its offered rate (N/s) and whether it was sustained.
flow_runs_csv() {
    awk -v run_utc="$1" -v table="$2" -v conc="$3" "$_RECORD_AWK"'
    /^\|/ && !/^\|---/ && !/^\| run \|/ {
        if (cells($0, c) < 11) next
        split(c[6], lat, " / "); split(c[10], mach, " / ")
        cc = (table == "measured") ? conc : ""
        if (table == "sweep" && c[1] ~ /^c=[0-9]+$/) cc = substr(c[1], 3)
        offered = ""; sus = ""
        if (table == "ladder") {
            offered = c[1]; sub(/\/s.*/, "", offered)
            sus = (c[1] ~ /NOT sustained/) ? "no" : (c[1] ~ /sustained/ ? "yes" : "")
        }
        print q(run_utc) "," q(table) "," q(c[1]) "," cc "," offered "," sus "," c[2] "," c[3] "," c[4] "," c[5] "," \
            trim(lat[1]) "," trim(lat[2]) "," c[7] "," c[8] "," c[9] "," trim(mach[1]) "," trim(mach[2]) "," \
            trim(mach[3]) "," q(c[11])
    }'
}

# overload_rows_csv PREFIX: bench/overload.sh's run rows on stdin, as
# overload.csv lines, each after PREFIX (the run's columns up to
# unloaded_p99_median_ms, already CSV).
overload_rows_csv() {
    awk -v prefix="$1" "$_RECORD_AWK"'
    /^\|/ && !/^\|---/ && !/^\| run \|/ {
        cells_n = cells($0, c)
        if (cells_n < 10) next
        rep = c[1]; sub(/:.*/, "", rep)
        load = c[1]; sub(/^[^:]*: */, "", load)
        mode = load; sub(/.*, */, "", mode)
        if (load ~ /^unloaded/) load = "unloaded"; else sub(/ .*/, "", load)
        split(c[5], lat, " / ")
        limit = c[9]; mean = ""; floor_ms = ""
        if (limit ~ /\(/) {
            mean = limit; sub(/^[^(]*\(/, "", mean); sub(/ ms mean.*/, "", mean)
            floor_ms = limit; sub(/.*floor /, "", floor_ms); sub(/ ms\).*/, "", floor_ms)
            sub(/ .*/, "", limit)
        }
        # "yes (lag p99 4.5 ms)"; rows before the lag was shown say "yes"
        kept = c[10]; lag = ""
        if (kept ~ /lag p99/) { lag = kept; sub(/.*lag p99 /, "", lag); sub(/ ms.*/, "", lag) }
        sub(/ .*/, "", kept)
        probe = (cells_n > 10 && c[11] != "-") ? c[11] : ""
        print prefix "," rep "," q(load) "," q(mode) "," c[2] "," c[3] "," c[4] "," trim(lat[1]) "," \
            trim(lat[2]) "," trim(lat[3]) "," c[6] "," q(c[7]) "," q(c[8]) "," limit "," mean "," \
            floor_ms "," kept "," lag "," probe
    }'
}

# machine_rows_csv PREFIX: bench/machine.sh's rows on stdin, as machine.csv
# lines after PREFIX (run_utc .. duration_s).
machine_rows_csv() {
    awk -v prefix="$1" "$_RECORD_AWK"'
    /^\|/ && !/^\|---/ && !/^\| machine doing \|/ {
        if (cells($0, c) < 4) next
        split(c[2], lat, " / "); split(c[4], mach, " / ")
        print prefix "," q(c[1]) "," trim(lat[1]) "," trim(lat[2]) "," trim(lat[3]) "," c[3] "," \
            trim(mach[1]) "," trim(mach[2]) "," trim(mach[3])
    }'
}

# guard_rows_csv PREFIX: guard_micro's table on stdin (operation, threads,
# ns/op, M ops/s all), as guard.csv lines after PREFIX (run_utc .. cpus).
guard_rows_csv() {
    awk -v prefix="$1" "$_RECORD_AWK"'
    /^\|/ { if (cells($0, c) >= 4 && c[2] ~ /^[0-9]+$/)
                print prefix "," q(c[1]) "," c[2] "," c[3] "," c[4] }'
}

# redis_limit_rows_csv PREFIX SERVER_US: bench/redis_limit.sh's two tables on
# stdin (redis-benchmark's ceiling: 4 columns; redis_limit_micro: 5), as
# redis_limit.csv lines after PREFIX (run_utc .. redis_version).
redis_limit_rows_csv() {
    awk -v prefix="$1" -v server_us="$2" "$_RECORD_AWK"'
    /^\|/ { n = cells($0, c)
            if (n < 4 || c[2] !~ /^[0-9]+$/) next
            src = (n == 4) ? "redis-benchmark" : "redis_limit_micro"
            print prefix "," src "," q(c[1]) "," c[2] "," c[3] "," c[4] "," (n >= 5 ? c[5] : "") "," server_us }'
}
