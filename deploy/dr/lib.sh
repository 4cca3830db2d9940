#!/usr/bin/env bash
# deploy/dr/lib.sh - what the two-site scripts (up, down, fence, rebuild,
# drill) share, on top of deploy/local-cluster/lib.sh.
#
# Every process the topology runs is a "component" with a directory
# DIR/NAME holding `cmd` (its command line, an argument a line), `pid` and
# `site` (a, b, or w for the witness). DIR/components lists them in start
# order. Starting one again runs its cmd; stopping one signals its pid.

DR_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=deploy/local-cluster/lib.sh
source "$DR_HERE/../local-cluster/lib.sh"

log() { printf 'dr: %s\n' "$*" >&2; }

# The command line of component $2 under $1, as an array in CMD.
read_cmd() {
    mapfile -t CMD <"$1/$2/cmd"
}

# Starts component $2 (site $3) under $1 with the command "$4"...; as the
# postgres user when $2 starts with pg_. Records cmd, pid and site.
start_component() {
    local dir="$1" name="$2" site="$3"
    shift 3
    mkdir -p "$dir/$name"
    record_cmd "$dir/$name/cmd" "$@"
    echo "$site" >"$dir/$name/site"
    grep -qx "$name" "$dir/components" 2>/dev/null || echo "$name" >>"$dir/components"
    run_component "$dir" "$name"
}

# Runs component $2's recorded command in the background; writes its pid.
run_component() {
    local dir="$1" name="$2"
    read_cmd "$dir" "$name"
    if [[ "$name" == pg_* ]]; then
        spawn_as_postgres "${CMD[@]}" >>"$dir/$name/stdout.log" 2>&1
    else
        "${CMD[@]}" >>"$dir/$name/stdout.log" 2>>"$dir/$name/stderr.log" &
    fi
    echo "$!" >"$dir/$name/pid"
}

# The pid recorded for component $2 ("" when none).
component_pid() {
    cat "$1/$2/pid" 2>/dev/null || true
}

# Components of site $2 ("a", "b" or "w"), one a line.
site_components() {
    local dir="$1" site="$2" name
    while read -r name; do
        [[ "$(cat "$dir/$name/site")" == "$site" ]] && echo "$name"
    done <"$dir/components"
}

# Sends SIGKILL to component $2 and waits until it is gone.
kill_component() {
    local pid
    pid="$(component_pid "$1" "$2")"
    [[ -n "$pid" ]] || return 0
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        running "$pid" || return 0
        sleep 0.05
    done
}

# The PostgreSQL node (site_a or site_b) that takes writes now; "" if none.
pg_primary() {
    local dir="$1" node port
    for node in site_a site_b; do
        port="$(cat "$dir/pg_$node/port")"
        if [[ "$(psql -X -At -h 127.0.0.1 -p "$port" -U postgres -d postgres \
            -c 'SELECT NOT pg_is_in_recovery()' 2>/dev/null)" == t ]]; then
            echo "$node"
            return 0
        fi
    done
}

# Writes node $2's postgresql.auto.conf as a standby of node $3 and leaves
# standby.signal: started, it follows $3 and never takes writes; promoted,
# its commits wait for $3 until the failover controller says otherwise.
pg_standby_conf() {
    local dir="$1" node="$2" of="$3" data="$1/pg_$2/data"
    as_postgres tee "$data/postgresql.auto.conf" >/dev/null <<EOF
# written by deploy/dr (pg_standby_conf); the controller changes the last line
primary_conninfo = 'host=127.0.0.1 port=$(cat "$dir/pg_$of/port") user=postgres application_name=$node'
recovery_target_timeline = 'latest'
synchronous_standby_names = '$of'
EOF
    as_postgres touch "$data/standby.signal"
}
