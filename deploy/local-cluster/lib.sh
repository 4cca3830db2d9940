#!/usr/bin/env bash
# deploy/local-cluster/lib.sh - what up and down share.

PG_BIN=/usr/lib/postgresql/15/bin

log() { printf 'local-cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A free loopback port outside the kernel's ephemeral range, so that no
# client connection can be holding it.
free_port() {
    local port i low=32768 span
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range || true
    span=$((low > 11024 ? low - 10000 : 1000))
    for ((i = 0; i < 200; i++)); do
        port=$((low > 11024 ? 10000 + RANDOM % span : 61000 + RANDOM % 1000))
        if [[ -z "$(ss -Htan "sport = :$port")" ]]; then
            echo "$port"
            return 0
        fi
    done
    die "no free port"
}

# Waits up to 30 s until URL $1 answers 200, while pid $2 lives.
wait_ready() {
    local url="$1" pid="$2" i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if [[ "$(curl --noproxy '*' -s -o /dev/null -w '%{http_code}' --max-time 1 "$url")" == 200 ]]
        then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# PostgreSQL refuses to run as root: as root, its programs run as the
# postgres user (created by the Debian package), exec'd in place so that the
# pid is the server's own.
as_postgres() {
    if [[ "$(id -u)" == 0 ]]; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

# Starts as_postgres "$@" in the background so that $! is the program's own
# pid: the subshell replaces itself with it.
spawn_as_postgres() {
    if [[ "$(id -u)" == 0 ]]; then
        (exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@") &
    else
        (exec "$@") &
    fi
}

# Gives directory $1 to the postgres user (as root), and lets it through
# the directory above (a mktemp -d directory is closed to others).
as_postgres_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        chown postgres:postgres "$1"
        chmod o+x "$(dirname "$1")"
        as_postgres test -w "$1" ||
            die "the postgres user cannot reach $1: a directory above it is closed to others"
    fi
}

# Whether pid $1 runs: a zombie (exited, its parent has not reaped it yet,
# as when a test started it again) does not.
running() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat%% *}" != Z ]]
}

# Stops pid $1 with signal $2 (TERM), then KILL after $3 (30) seconds.
stop_pid() {
    local pid="$1" sig="${2:-TERM}" wait_s="${3:-30}" i
    running "$pid" || return 0
    kill -"$sig" "$pid" 2>/dev/null || return 0
    for ((i = 0; i < wait_s * 10; i++)); do
        running "$pid" || return 0
        sleep 0.1
    done
    log "pid $pid did not stop within ${wait_s}s of SIG$sig; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

# Writes the command line "$2"... to file $1, an argument a line.
record_cmd() {
    local file="$1"
    shift
    printf '%s\n' "$@" >"$file"
}

# Writes nginx.conf in directory $1 for an nginx on 127.0.0.1:$2 in front
# of the payd base URLs "$3"...
write_nginx_conf() {
    local dir="$1" port="$2" url t
    shift 2
    mkdir -p "$dir/logs"
    {
        echo "worker_processes 1;"
        echo "daemon off;"
        echo "pid $dir/nginx.pid;"
        echo "error_log $dir/logs/error.log warn;"
        echo "events { worker_connections 4096; }"
        echo "http {"
        echo "    access_log off;"
        for t in client_body proxy fastcgi uwsgi scgi; do echo "    ${t}_temp_path $dir/$t;"; done
        echo "    upstream payd_api {"
        for url in "$@"; do echo "        server ${url#http://} max_fails=1 fail_timeout=2s;"; done
        echo "        keepalive 64;"
        echo "    }"
        echo "    server {"
        echo "        listen 127.0.0.1:$port;"
        echo "        location / {"
        echo "            proxy_pass http://payd_api;"
        echo "            proxy_http_version 1.1;"
        echo "            proxy_set_header Connection \"\";"
        # nginx (open source) checks its upstreams passively: an instance that
        # refuses connections or answers 503 is left alone for fail_timeout.
        # A request that never reached an instance goes to the next one; one
        # that did is not sent twice (nginx's default for POST).
        echo "            proxy_next_upstream error timeout http_503;"
        echo "            proxy_connect_timeout 1s;"
        echo "        }"
        echo "    }"
        echo "}"
    } >"$dir/nginx.conf"
}
