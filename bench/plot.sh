#!/usr/bin/env bash
# bench/plot.sh - the benchmarks' recorded results as charts: PNG files in
# bench/plots/, drawn with gnuplot (Debian gnuplot-nox; `scripts/deps.sh
# plot` installs it, and this script runs that when gnuplot is missing) from
# the CSV files under bench/data/ that the benchmarks append to (see
# bench/record.sh). It measures nothing: it only draws what was recorded,
# and a chart whose data file is missing or empty is skipped.
#
#   overload.png      bench/overload.sh, latest run (and latest SPLIT_CPUS=1
#                     run): p50 and p99 of accepted payments, unloaded and at
#                     FACTOR x capacity for each limit mode, against 2x unloaded
#   flow_history.png  bench/flow.sh, the last $FLOW_RUNS runs: paid orders/s
#                     (closed-loop median and open-loop sustained) beside the
#                     nginx ceiling of the same run
#   flow_sweep.png    bench/flow.sh, latest run's closed-loop sweep: rates and
#                     accept latency against concurrency
#   flow_ladder.png   bench/flow.sh, latest run's open-loop ladder: completed
#                     against offered rate, and accept latency
#   cluster.png       bench/cluster.sh, the last $CLUSTER_RUNS runs: paid orders/s against
#                     pgbench TPC-B tps, with the 1x floor and the 3x goal
#   guard.png         bench/guard.sh, latest run: ns per check by threads
#   redis_limit.png   bench/redis_limit.sh, latest run: us per take by threads
#   scenarios.png     bench/scenarios.sh, latest run: payd's requests/s in each
#                     paybench scenario against the nginx ceiling of the run
#
# Environment (defaults in brackets): BENCH_DATA [bench/data]
#   PLOTS [bench/plots]  FLOW_RUNS [10]  CLUSTER_RUNS [6]  FLOW_TARGET [5000:
#   the issue's floor in paid orders/s, bench/RESULTS.md]  SIZE [900,500]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${BENCH_DATA:-$ROOT/bench/data}"
PLOTS="${PLOTS:-$ROOT/bench/plots}"
FLOW_RUNS="${FLOW_RUNS:-10}"
CLUSTER_RUNS="${CLUSTER_RUNS:-6}"
FLOW_TARGET="${FLOW_TARGET:-5000}"
SIZE="${SIZE:-900,500}"

log() { printf 'plot: %s\n' "$*" >&2; }

command -v gnuplot >/dev/null 2>&1 || "$ROOT/scripts/deps.sh" plot
command -v gnuplot >/dev/null 2>&1 || { log "error: no gnuplot (scripts/deps.sh plot)"; exit 1; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/payd-plot.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$PLOTS"

# ---- reading the CSV files ---------------------------------------------------

# csv_get FILE "COL ..." [COL=VALUE ...]: the named columns of the rows that
# match every COL=VALUE, tab-separated (an empty field prints as "?", which
# gnuplot reads as missing). Quoted fields may hold commas.
CSV_AWK='
function parse(line, f,    n, i, ch, inq, cur, len) {
    n = 0; cur = ""; inq = 0; len = length(line)
    for (i = 1; i <= len; i++) {
        ch = substr(line, i, 1)
        if (inq) {
            if (ch == "\"") {
                if (substr(line, i + 1, 1) == "\"") { cur = cur "\""; i++ } else inq = 0
            } else cur = cur ch
        } else if (ch == "\"") inq = 1
        else if (ch == ",") { f[++n] = cur; cur = "" }
        else cur = cur ch
    }
    f[++n] = cur
    return n
}'
csv_get() {
    local file="$1" cols="$2"
    shift 2
    [[ -s "$file" ]] || return 0
    awk -v cols="$cols" -v where="$*" "$CSV_AWK"'
    { sub(/\r$/, "") }
    NR == 1 { n = parse($0, h); for (i = 1; i <= n; i++) idx[h[i]] = i
              nc = split(cols, want, " ")
              for (i = 1; i <= nc; i++) if (!(want[i] in idx)) { print "plot: no column " want[i] > "/dev/stderr"; exit 1 }
              nw = split(where, w, " ")
              for (i = 1; i <= nw; i++) { k = w[i]; sub(/=.*/, "", k); v = w[i]; sub(/^[^=]*=/, "", v)
                                         wk[i] = k; wv[i] = v
                                         if (!(k in idx)) { print "plot: no column " k > "/dev/stderr"; exit 1 } }
              next }
    { parse($0, f)
      for (i = 1; i <= nw; i++) if (f[idx[wk[i]]] != wv[i]) next
      out = ""
      for (i = 1; i <= nc; i++) { v = f[idx[want[i]]]; if (v == "") v = "?"; out = out (i > 1 ? "\t" : "") v }
      print out }' "$file"
}

# A run's date as given in its heading: "2026-11-25 09:30 UTC". The values of
# COL=VALUE filters cannot hold spaces, so runs are picked with underscores.
u() { printf '%s' "${1// /_}"; }
csv_get_run() { # FILE "COLS" RUN_UTC [COL=VALUE ...]: csv_get for one run
    local file="$1" cols="$2" run="$3"
    shift 3
    [[ -s "$file" ]] || return 0
    # Replace spaces in run_utc by underscores on the fly.
    awk -F'\n' 'NR == 1 { print; next } { i = index($0, ","); r = substr($0, 1, i - 1); gsub(/ /, "_", r); print r substr($0, i) }' "$file" \
        >"$TMP/run-key.csv"
    csv_get "$TMP/run-key.csv" "$cols" "run_utc=$(u "$run")" "$@"
}
latest_run() { # FILE [COL=VALUE ...]: the latest run_utc among matching rows
    local file="$1"
    shift
    csv_get "$file" run_utc "$@" | sort | tail -n 1
}

# ---- gnuplot ----------------------------------------------------------------

# The common look: white background, a muted grid, 900x500, a caption at the
# bottom. $1 output file, $2 title, $3 caption (at most two lines, "\\n"
# between them; no double quotes).
preamble() {
    cat <<EOF
set encoding utf8
set terminal pngcairo size $SIZE enhanced font "DejaVu Sans,10" background rgb "white"
set output "$1"
set title "$2" font "DejaVu Sans Bold,13" noenhanced
set label 999 "$3" at screen 0.01, screen $(if [[ "$3" == *'\n'* ]]; then echo 0.055; else echo 0.03; fi) left font "DejaVu Sans,9" textcolor rgb "#57606a" noenhanced
set datafile separator "\t"
set datafile missing "?"
set border 3 lc rgb "#57606a"
set tics nomirror textcolor rgb "#1f2328"
set grid ytics lc rgb "#d0d7de" lw 1 dt 1
set key noautotitle
set style fill solid 0.9 border -1
BLUE = "#0969da"; ORANGE = "#bc4c00"; GREEN = "#1a7f37"; RED = "#cf222e"
GREY = "#57606a"; PURPLE = "#8250df"; LIGHTBLUE = "#80b6f0"; LIGHTORANGE = "#f0a070"
EOF
}

render() { # $1 name: the gnuplot script on stdin
    if gnuplot >"$TMP/$1.gp.log" 2>&1; then
        log "wrote $PLOTS/$1.png"
    else
        cat "$TMP/$1.gp.log" >&2
        log "error: gnuplot failed on $1.png"
        return 1
    fi
}

# ---- overload ---------------------------------------------------------------

plot_overload() {
    local file="$DATA/overload.csv" runs=() run r s n=0 caption="" factor="" ymax=0 reps="" base
    [[ -s "$file" ]] || { log "skip overload.png: no $file"; return 0; }
    for s in 0 1; do
        run="$(latest_run "$file" "split_cpus=$s")"
        [[ -z "$run" ]] || runs+=("$s|$run")
    done
    ((${#runs[@]} > 0)) || { log "skip overload.png: no runs"; return 0; }
    for r in "${runs[@]}"; do
        s="${r%%|*}"; run="${r#*|}"; n=$((n + 1))
        csv_get_run "$file" "load mode payment_p50_ms payment_p99_ms unloaded_p99_median_ms factor rep schedule_kept" \
            "$run" "split_cpus=$s" >"$TMP/ov-$n.tsv"
        # Per group (unloaded, then each mode under overload, in recorded
        # order): position, label, the median (the middle value, as
        # bench/overload.sh picks it) of p50 and of p99 over the
        # repetitions, the run's unloaded median p99 as recorded, the value
        # label, and the highest repetition (the value label goes above it).
        awk -F'\t' '
            function med(list,    a, k, i, j, t) {
                k = split(list, a, " ")
                for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
                return a[int((k + 1) / 2)]
            }
            { g = ($1 == "unloaded") ? "unloaded" : $1 " " $2
              if (!(g in seen)) { seen[g] = 1; order[++ng] = g; top[g] = 0 }
              p50[g] = p50[g] " " $3; p99[g] = p99[g] " " $4
              if ($4 + 0 > top[g]) top[g] = $4 + 0
              if ($8 == "no") late[g] = 1
              base = $5 }
            END { for (i = 1; i <= ng; i++) {
                      g = order[i]; m = med(p99[g])
                      if (g == "unloaded") { lbl = "unloaded\\n(C/4, adaptive)"; val = sprintf("%.1f ms", m) }
                      else { split(g, p, " "); lbl = p[2] "\\nat " p[1] " C"; val = sprintf("%.1f ms\\n= %.1fx", m, m / base) }
                      if (late[g]) lbl = lbl "\\n(client late)"
                      printf "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", i - 1, lbl, med(p50[g]), m, base, val, top[g] } }
        ' "$TMP/ov-$n.tsv" >"$TMP/ov-$n-groups.tsv"
        # Each repetition's p99, at its group's position.
        awk -F'\t' 'BEGIN { n = 0 }
                    { g = ($1 == "unloaded") ? "unloaded" : $1 " " $2
                      if (!(g in pos)) pos[g] = n++
                      print pos[g] "\t" $4 }' "$TMP/ov-$n.tsv" >"$TMP/ov-$n-reps.tsv"
        ymax="$(awk -F'\t' -v m="$ymax" '$2 + 0 > m { m = $2 + 0 } END { print m }' "$TMP/ov-$n-reps.tsv")"
        factor="$(cut -f6 "$TMP/ov-$n.tsv" | head -n 1)"
        reps="$(cut -f7 "$TMP/ov-$n.tsv" | sort -u | wc -l)"
        caption+="${caption:+, }$([[ $s == 1 ]] && echo 'SPLIT_CPUS=1 ')run $run"
        if ((${#runs[@]} > 1)); then caption+="$([[ $s == 1 ]] && echo ' (right)' || echo ' (left)')"; fi
    done
    {
        preamble "$PLOTS/overload.png" "" \
            "bench/overload.sh, $caption.\\nBars: median of $reps repetitions; dots: each repetition. Client late: paybench could not keep its schedule."
        cat <<EOF
set multiplot layout 1,${#runs[@]} title "Overload: latency of accepted payments, unloaded vs ${factor}x capacity (C)" font "DejaVu Sans Bold,13" margins 0.08, 0.98, 0.24, 0.86 spacing 0.06
set ylabel "payment accepted (202) latency, ms"
set yrange [0:$(awk -v m="$ymax" 'BEGIN { print m * 1.5 }')]
set xrange [-0.6:$(cat "$TMP"/ov-*-groups.tsv | cut -f1 | sort -n | tail -n 1) + 0.6]
set xtics scale 0 font "DejaVu Sans,9"
set key top left reverse Left samplen 2 font "DejaVu Sans,9"
EOF
        n=0
        for r in "${runs[@]}"; do
            s="${r%%|*}"; n=$((n + 1))
            base="$(cut -f5 "$TMP/ov-$n-groups.tsv" | head -n 1)"
            cat <<EOF
set title "$([[ $s == 1 ]] && echo 'payd on CPU 0, client on CPU 1 (SPLIT_CPUS=1)' || echo 'payd and client share the 2 CPUs')" font "DejaVu Sans,11" noenhanced
plot "$TMP/ov-$n-groups.tsv" using (column(1)-0.19):(column(3)):(0.36):xtic(2) with boxes lc rgb LIGHTBLUE title "p50 (median)", \\
     "" using (column(1)+0.19):(column(4)):(0.36) with boxes lc rgb BLUE title "p99 (median)", \\
     "$TMP/ov-$n-reps.tsv" using (column(1)+0.19):(column(2)) with points pt 7 ps 0.6 lc rgb "#1f2328" title "p99, each repetition", \\
     2*$base with lines lc rgb RED lw 2 dt 2 title "target: p99 ≤ 2x unloaded = $(awk -v b="$base" 'BEGIN { printf "%.1f", 2 * b }') ms", \\
     "$TMP/ov-$n-groups.tsv" using (column(1)+0.19):(column(7)):6 with labels offset 0, 1.5 font "DejaVu Sans,8.5" notitle
unset ylabel
EOF
        done
        echo "unset multiplot"
    } | render overload
}

# ---- flow: history ----------------------------------------------------------

plot_flow_history() {
    local file="$DATA/flow.csv" first last client_x nruns ymax nmax dirty=""
    [[ -s "$file" ]] || { log "skip flow_history.png: no $file"; return 0; }
    # The last FLOW_RUNS runs, oldest first: x, label (date, tree, closed-loop
    # concurrency), closed median, slowest, fastest, open sustained, nginx
    # (paybench), nginx (wrk), run_utc.
    csv_get "$file" "run_utc tree closed_median_paid_s closed_min_paid_s closed_max_paid_s open_sustained_paid_s nginx_paybench_req_s nginx_wrk_req_s closed_concurrency" |
        sort | tail -n "$FLOW_RUNS" |
        awk -F'\t' '{ d = $1; sub(/ UTC$/, "", d); sub(/^[0-9]+-/, "", d); t = $2; sub(/ .*/, "", t)
                      if ($2 ~ /uncommitted/) t = t "+"
                      printf "%d\t%s\\n%s\\nc=%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", NR - 1, d, t, $9, $3, $4, $5, $6, $7, $8, $1 }' \
        >"$TMP/flow-history.tsv"
    first="$(head -n 1 "$TMP/flow-history.tsv" | cut -f9)"
    last="$(tail -n 1 "$TMP/flow-history.tsv" | cut -f9)"
    nruns="$(wc -l <"$TMP/flow-history.tsv")"
    grep -q '+\\n' "$TMP/flow-history.tsv" && dirty=" (+: uncommitted changes)"
    # paybench has had its own HTTP/1.1 client since 2026-11-25 10:00 UTC
    # (libcurl before; bench/RESULTS.md, "Client cost"): a line where that
    # changes, when the runs shown straddle it.
    client_x="$(awk -F'\t' '$9 < "2026-11-25 10:00" { x = $1 + 0.5 } END { if (x != "" && x < NR - 1) print x }' \
        "$TMP/flow-history.tsv")"
    ymax="$(awk -F'\t' -v t="$FLOW_TARGET" 'BEGIN { m = t } { for (i = 3; i <= 6; i++) if ($i != "?" && $i + 0 > m) m = $i + 0 } END { print m * 1.45 }' "$TMP/flow-history.tsv")"
    nmax="$(awk -F'\t' '{ for (i = 7; i <= 8; i++) if ($i != "?" && $i + 0 > m) m = $i + 0 } END { print m * 1.6 }' "$TMP/flow-history.tsv")"
    {
        preamble "$PLOTS/flow_history.png" "" \
            "bench/flow.sh, runs $first … $last; x: date (UTC), tree$dirty, closed-loop concurrency.\\nError bars: slowest and fastest closed-loop run. Below: the same client against nginx return 200, the machine's ceiling that run."
        cat <<EOF
set multiplot title "End-to-end throughput per bench/flow.sh run" font "DejaVu Sans Bold,13"
set lmargin at screen 0.09
set rmargin at screen 0.98
set xrange [-0.6:$nruns - 0.4]
# Top: payd.
set tmargin at screen 0.91
set bmargin at screen 0.42
set ylabel "paid orders/s, end to end"
set yrange [0:$ymax]
set format x ""
set xtics scale 0
set key top left horizontal samplen 2 font "DejaVu Sans,9" width -1
set arrow 1 from -0.6, $FLOW_TARGET to $nruns - 0.4, $FLOW_TARGET nohead lc rgb RED lw 2 dt 2 front
EOF
        if [[ -n "$client_x" ]]; then
            cat <<EOF
set arrow 2 from $client_x, graph 0 to $client_x, graph 0.74 nohead lc rgb GREY dt 3 lw 1.5
set label 2 "libcurl client ◂ ▸ own HTTP/1.1 client" at $client_x, graph 0.78 center textcolor rgb GREY font "DejaVu Sans,8.5" front
EOF
        fi
        cat <<EOF
plot "$TMP/flow-history.tsv" using (column(1)-0.18):(column(3)):(0.34) with boxes lc rgb BLUE title "closed loop, median run", \\
     "" using (column(1)-0.18):(column(4)):(0):(column(5)-column(4)) with vectors heads size screen 0.008,90 lc rgb "#1f2328" lw 1 title "slowest … fastest", \\
     "" using (column(1)+0.18):(column(6)):(0.34) with boxes lc rgb GREEN title "open loop, highest rate sustained", \\
     $FLOW_TARGET with lines lc rgb RED lw 2 dt 2 title "issue floor: $FLOW_TARGET/s", \\
     "" using (column(1)-0.18):(column(3)/2):(sprintf("%d", column(3))) with labels font "DejaVu Sans,8" tc rgb "white" notitle, \\
     "" using (column(1)+0.18):(column(6)/2):(sprintf("%d", column(6))) with labels font "DejaVu Sans,8" tc rgb "white" notitle
unset arrow
unset label 2
# Bottom: nginx.
set title ""
set tmargin at screen 0.37
set bmargin at screen 0.2
set ylabel "nginx, req/s"
set yrange [0:$nmax]
set ytics 50000
set format y "%.0s%c"
set format x "%g"
set xtics scale 0 font "DejaVu Sans,8.5"
set key top left horizontal samplen 1 font "DejaVu Sans,8.5"
plot "$TMP/flow-history.tsv" using (column(1)-0.18):(column(7)):(0.34):xtic(2) with boxes lc rgb "#afb8c1" title "paybench", \\
     "" using (column(1)+0.18):(column(8)):(0.34) with boxes lc rgb GREY title "wrk"
unset multiplot
EOF
    } | render flow_history
}

# ---- flow: the latest sweep and ladder --------------------------------------

plot_flow_sweep() {
    local file="$DATA/flow_runs.csv" run
    [[ -s "$file" ]] || { log "skip flow_sweep.png: no $file"; return 0; }
    run="$(latest_run "$file" table=sweep)"
    [[ -n "$run" ]] || { log "skip flow_sweep.png: no sweep recorded"; return 0; }
    csv_get_run "$file" "concurrency paid_orders_s accepted_s succeeded_in_load_s accept_p50_ms accept_p99_ms" "$run" table=sweep |
        sort -n >"$TMP/sweep.tsv"
    {
        preamble "$PLOTS/flow_sweep.png" "Closed loop: throughput and latency against concurrency" \
            "bench/flow.sh, run $run: closed-loop sweep, one fresh payd per point, $(tr '\n' ' ' <<<"$(cut -f1 "$TMP/sweep.tsv")" | sed 's/ $//; s/ /, /g') sessions in flight."
        cat <<EOF
set lmargin 10
set rmargin 10
set bmargin 5
set logscale x 2
set xrange [*:*]
set offsets graph 0.05, graph 0.05, 0, 0
set xlabel "concurrency (sessions in flight, each its own connection)"
set ylabel "per second"
set y2label "payment accept (202) latency, ms"
set yrange [0:*]
set y2range [0:*]
set y2tics
set xtics ($(awk -F'\t' '{ printf "%s\"%s\" %s", (NR > 1 ? ", " : ""), $1, $1 }' "$TMP/sweep.tsv"))
set key top left samplen 3 font "DejaVu Sans,9" box lc rgb "#d0d7de" opaque
plot "$TMP/sweep.tsv" using 1:2 with linespoints lw 2.5 pt 7 ps 1.2 lc rgb BLUE title "paid orders/s, end to end", \\
     "" using 1:3 with linespoints lw 1.5 pt 5 ps 0.9 lc rgb PURPLE title "payments accepted/s", \\
     "" using 1:4 with linespoints lw 1.5 pt 9 ps 1 lc rgb GREEN title "payments succeeded/s during the load", \\
     "" using 1:6 axes x1y2 with linespoints lw 2 dt 2 pt 6 ps 1.1 lc rgb ORANGE title "accept p99, ms (right axis)", \\
     "" using 1:5 axes x1y2 with linespoints lw 1.5 dt 3 pt 4 ps 0.9 lc rgb ORANGE title "accept p50, ms (right axis)", \\
     "" using 1:2:(sprintf("%d", column(2))) with labels offset 0, 1 font "DejaVu Sans,8" tc rgb BLUE notitle
EOF
    } | render flow_sweep
}

plot_flow_ladder() {
    local file="$DATA/flow_runs.csv" run
    [[ -s "$file" ]] || { log "skip flow_ladder.png: no $file"; return 0; }
    run="$(latest_run "$file" table=ladder)"
    [[ -n "$run" ]] || { log "skip flow_ladder.png: no ladder recorded"; return 0; }
    csv_get_run "$file" "offered_per_s succeeded_in_load_s paid_orders_s accept_p99_ms sustained accept_p50_ms" "$run" table=ladder |
        sort -n >"$TMP/ladder.tsv"
    local xmax
    xmax="$(awk -F'\t' '{ m = $1 } END { print m * 1.08 }' "$TMP/ladder.tsv")"
    {
        preamble "$PLOTS/flow_ladder.png" "Open loop: what payd keeps up with" \
            "bench/flow.sh, run $run: open-loop ladder, one fresh payd per offered rate.\\nNot sustained (bench/flow.sh, step 4): e.g. succeeded/s under 95 % of offered, or the last success over 1 s after the load."
        cat <<EOF
set lmargin 10
set rmargin 10
set bmargin 6
set xlabel "offered rate, sessions/s (order + payment)"
set ylabel "per second"
set y2label "payment accept (202) latency, ms"
set xrange [0:$xmax]
set yrange [0:$xmax]
set y2range [0:*]
set y2tics
set key top left samplen 3 font "DejaVu Sans,9" box lc rgb "#d0d7de" opaque
best = $(awk -F'\t' '$5 == "yes" && $1 + 0 > b { b = $1 + 0 } END { print b + 0 }' "$TMP/ladder.tsv")
plot x with lines lc rgb "#d0d7de" lw 2 title "keeping up (completed = offered)", \\
     "$TMP/ladder.tsv" using 1:2 with linespoints lw 2.5 pt 7 ps 1.2 lc rgb GREEN title "succeeded/s during the load", \\
     "" using 1:3 with linespoints lw 1.5 pt 5 ps 0.9 lc rgb BLUE title "paid orders/s, end to end", \\
     "" using 1:4 axes x1y2 with linespoints lw 2 dt 2 pt 6 ps 1.1 lc rgb ORANGE title "accept p99, ms (right axis)", \\
     "" using 1:(stringcolumn(5) eq "no" ? column(2) : NaN) with points pt 6 ps 3 lw 2 lc rgb RED title "not sustained", \\
     "" using 1:2:(stringcolumn(5) eq "yes" && column(1) == best ? sprintf("highest sustained: %d/s", column(1)) : "") with labels right offset -1, 0.3 font "DejaVu Sans,9" tc rgb GREEN notitle
EOF
    } | render flow_ladder
}

# ---- cluster ----------------------------------------------------------------

plot_cluster() {
    local file="$DATA/cluster.csv" xmax
    [[ -s "$file" ]] || { log "skip cluster.png: no $file"; return 0; }
    # Every run, oldest first: tps mean, paid orders/s, tps low, tps high,
    # number, legend text.
    csv_get "$file" "run_utc tree pgbench_tps_mean pgbench_tps_before pgbench_tps_after paid_orders_s ratio" |
        sort | tail -n "$CLUSTER_RUNS" |
        awk -F'\t' '{ lo = ($4 + 0 < $5 + 0) ? $4 : $5; hi = ($4 + 0 < $5 + 0) ? $5 : $4
                      printf "%s\t%s\t%s\t%s\t%d\t%d: %s (%s): %s paid orders/s, pgbench %s tps, ratio %s\n", $3, $6, lo, hi, NR, NR, $1, $2, $6, $3, $7 }' \
        >"$TMP/cluster.tsv"
    xmax="$(awk -F'\t' '{ if ($4 + 0 > m) m = $4 + 0 } END { print m * 1.25 }' "$TMP/cluster.tsv")"
    {
        preamble "$PLOTS/cluster.png" "Local cluster: paid orders/s against its PostgreSQL's pgbench tps" \
            "bench/cluster.sh, the last $CLUSTER_RUNS runs at most (listed top left). x: pgbench TPC-B tps on the cluster's PostgreSQL in the same run,\\nmean of before and after (bar: before … after). 2 api + 2 worker instances, PostgreSQL, Redis, NATS and nginx on the same machine."
        cat <<EOF
set lmargin 10
set rmargin 4
set bmargin 7
set xlabel "pgbench TPC-B, transactions/s"
set ylabel "payd cluster: paid orders/s, end to end"
set xrange [0:$xmax]
set yrange [0:3.05*$xmax]
set grid xtics
set key at graph 0.98, graph 0.55 right top samplen 3 font "DejaVu Sans,9" box lc rgb "#d0d7de" opaque
EOF
        # The runs' numbers beside their points, and their details in a list.
        awk -F'\t' '{ printf "set label %d \"%d\" at %s, %s offset 0.8, %s font \"DejaVu Sans Bold,9\" tc rgb BLUE front\n", 100 + NR, $5, $1, $2, (NR % 2 ? "0.9" : "-0.9")
                      printf "set label %d \"%s\" at graph 0.02, graph %.3f left font \"DejaVu Sans,9\" tc rgb BLUE front\n", 200 + NR, $6, 0.95 - 0.055 * (NR - 1) }' \
            "$TMP/cluster.tsv"
        cat <<EOF
plot 3*x with lines lw 2 dt 2 lc rgb GREEN title "goal: 3x pgbench tps", \\
     x with lines lw 2 dt 2 lc rgb RED title "floor: 1x pgbench tps", \\
     "$TMP/cluster.tsv" using 1:2:3:4 with xerrorbars pt 7 ps 1.2 lc rgb BLUE title "payd cluster, one point per run"
EOF
    } | render cluster
}

# ---- micro-benchmarks: guard and Redis ---------------------------------------

# Horizontal bars, one pair (1 and 2 threads) per operation, from TSV
# $1 (operation, threads, value) in order of first appearance.
hbars() {
    awk -F'\t' 'BEGIN { n = 0 }
        { if (!($1 in pos)) { pos[$1] = n; name[n] = $1; n++ }
                  v[pos[$1], $2] = $3; th[$2] = 1 }
        END { for (i = 0; i < n; i++) printf "%d\t%s\t%s\t%s\n", n - 1 - i, name[i], ((i, 1) in v) ? v[i, 1] : "?", ((i, 2) in v) ? v[i, 2] : "?" }' "$1"
}

plot_guard() {
    local file="$DATA/guard.csv" run
    [[ -s "$file" ]] || { log "skip guard.png: no $file"; return 0; }
    run="$(latest_run "$file")"
    csv_get_run "$file" "operation threads ns_per_op" "$run" >"$TMP/guard-rows.tsv"
    hbars "$TMP/guard-rows.tsv" >"$TMP/guard.tsv"
    local n
    n="$(wc -l <"$TMP/guard.tsv")"
    {
        preamble "$PLOTS/guard.png" "Guard check: cost per call" \
            "bench/guard.sh (build/guard_micro), run $run; two threads hammer the same limiter. Fewer ns is better."
        cat <<EOF
set lmargin 40
set rmargin 4
set bmargin 5
set logscale x 10
set xrange [1:3000]
set yrange [-0.6:$n - 0.4]
set xlabel "ns per operation, per thread (log scale)"
set ytics scale 0 font "DejaVu Sans,9"
set grid xtics noytics
set key top right samplen 2 font "DejaVu Sans,9" box lc rgb "#d0d7de" opaque
plot "$TMP/guard.tsv" using (NaN):(column(1)):ytic(2) notitle, \\
     "" using (sqrt(column(3))):(column(1)+0.19):(1):(column(3)):(column(1)+0.02):(column(1)+0.36) with boxxyerror lc rgb LIGHTBLUE title "1 thread", \\
     "" using (sqrt(column(4))):(column(1)-0.19):(1):(column(4)):(column(1)-0.36):(column(1)-0.02) with boxxyerror lc rgb BLUE title "2 threads", \\
     "" using (column(3)):(column(1)+0.19):(stringcolumn(3)) with labels left offset 0.5, 0 font "DejaVu Sans,8" notitle, \\
     "" using (column(4)):(column(1)-0.19):(stringcolumn(4)) with labels left offset 0.5, 0 font "DejaVu Sans,8" notitle
EOF
    } | render guard
}

plot_redis_limit() {
    local file="$DATA/redis_limit.csv" run server
    [[ -s "$file" ]] || { log "skip redis_limit.png: no $file"; return 0; }
    run="$(latest_run "$file")"
    # In microseconds; redis-benchmark's rows are labelled as such.
    csv_get_run "$file" "source operation threads ns_per_op server_us_per_take" "$run" |
        awk -F'\t' '{ op = $2; if ($1 == "redis-benchmark") op = "ceiling: PING, redis-benchmark (-P 1)"
                      printf "%s\t%s\t%.1f\n", op, $3, $4 / 1000 }' >"$TMP/redis-rows.tsv"
    server="$(csv_get_run "$file" server_us_per_take "$run" | head -n 1)"
    hbars "$TMP/redis-rows.tsv" >"$TMP/redis.tsv"
    local n xmax
    n="$(wc -l <"$TMP/redis.tsv")"
    xmax="$(awk -F'\t' '{ for (i = 3; i <= 4; i++) if ($i != "?" && $i + 0 > m) m = $i + 0 } END { print m * 1.15 }' "$TMP/redis.tsv")"
    {
        preamble "$PLOTS/redis_limit.png" "Shared (Redis) rate-limit check: time per call" \
            "bench/redis_limit.sh (build/redis_limit_micro), run $run; client and redis-server on the same 2 cores. Fewer µs is better."
        cat <<EOF
set lmargin 40
set rmargin 4
set bmargin 5
set xrange [0:$xmax]
set yrange [-0.6:$n + 0.5]
set xlabel "µs per operation, per client thread"
set ytics scale 0 font "DejaVu Sans,9"
set grid xtics noytics
set key top right samplen 2 font "DejaVu Sans,9" box lc rgb "#d0d7de" opaque
EOF
        # The Redis server's own time per take (its Lua script), as a line.
        if [[ -n "$server" && "$server" != "?" ]]; then
            cat <<EOF
set arrow 1 from $server, graph 0 to $server, graph 1 nohead lc rgb ORANGE lw 2 dt 2 front
EOF
        fi
        cat <<EOF
plot "$TMP/redis.tsv" using (NaN):(column(1)):ytic(2) notitle, \\
     "" using (column(3)/2):(column(1)+0.19):(column(3)/2):(0.17) with boxxyerror lc rgb LIGHTBLUE title "1 thread (or client)", \\
     "" using (column(4)/2):(column(1)-0.19):(column(4)/2):(0.17) with boxxyerror lc rgb BLUE title "2 threads (or clients)", \\
     NaN with lines lc rgb ORANGE lw 2 dt 2 title "$( [[ -n "$server" && "$server" != "?" ]] && echo "Redis server time per take (its script): $server µs")", \\
     "" using (column(3)):(column(1)+0.19):(stringcolumn(3)) with labels left offset 0.5, 0 font "DejaVu Sans,8" notitle, \\
     "" using (column(4)):(column(1)-0.19):(stringcolumn(4)) with labels left offset 0.5, 0 font "DejaVu Sans,8" notitle
EOF
    } | render redis_limit
}

# ---- scenarios ----------------------------------------------------------------

plot_scenarios() {
    local file="$DATA/scenarios.csv" run nginx n xmax
    [[ -s "$file" ]] || { log "skip scenarios.png: no $file"; return 0; }
    run="$(latest_run "$file")"
    # position (top first), label, payd requests/s, paid orders/s, ratio
    csv_get_run "$file" "scenario payd_req_s paid_orders_s ratio_to_nginx check" "$run" |
        awk -F'\t' '{ row[NR] = $0 }
            END { for (i = 1; i <= NR; i++) { split(row[i], c, "\t")
                  printf "%d\t%s%s\t%s\t%s\t%s\n", NR - i, c[1], (c[5] == "check:" ? "" : " (" c[5] ")"), c[2], c[3], c[4] } }' \
        >"$TMP/scenarios.tsv"
    nginx="$(csv_get_run "$file" nginx_paybench_req_s "$run" | head -n 1)"
    n="$(wc -l <"$TMP/scenarios.tsv")"
    xmax="$(awk -v n="$nginx" 'BEGIN { print n * 1.15 }')"
    {
        preamble "$PLOTS/scenarios.png" "paybench scenarios against the embedded payd" \
            "bench/scenarios.sh, run $run; closed loop, a fresh payd per scenario, then paycheck. Bars: payd's requests answered/s\\n(every kind) and paid orders/s end to end; line: nginx's static reply, same client, same run (the machine's HTTP ceiling)."
        cat <<EOF
set lmargin 22
set rmargin 4
set bmargin 6
set xrange [0:$xmax]
set yrange [-0.6:$n - 0.4]
set xlabel "per second"
set ytics scale 0 font "DejaVu Sans,9"
set grid xtics noytics
set key bottom right samplen 2 font "DejaVu Sans,9" box lc rgb "#d0d7de" opaque
set arrow 1 from $nginx, graph 0 to $nginx, graph 1 nohead lc rgb ORANGE lw 2 dt 2 front
plot "$TMP/scenarios.tsv" using (NaN):(column(1)):ytic(2) notitle, \\
     "" using (column(3)/2):(column(1)+0.19):(column(3)/2):(0.17) with boxxyerror lc rgb LIGHTBLUE title "payd requests/s, every kind", \\
     "" using (column(4)/2):(column(1)-0.19):(column(4)/2):(0.17) with boxxyerror lc rgb BLUE title "paid orders/s, end to end", \\
     NaN with lines lc rgb ORANGE lw 2 dt 2 title "nginx static reply: $nginx req/s", \\
     "" using (column(3)):(column(1)+0.19):(sprintf("%d (%.2fx nginx)", column(3), column(5))) with labels left offset 0.5, 0 font "DejaVu Sans,8" notitle, \\
     "" using (column(4)):(column(1)-0.19):(stringcolumn(4)) with labels left offset 0.5, 0 font "DejaVu Sans,8" notitle
EOF
    } | render scenarios
}

status=0
for chart in overload flow_history flow_sweep flow_ladder cluster guard redis_limit scenarios; do
    "plot_$chart" || status=1
done
exit "$status"
