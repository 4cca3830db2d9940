#!/usr/bin/env bash
# Installs the Debian packages payd needs to build, test and benchmark, when
# any is missing. Runs apt-get update first (a fresh machine's package lists
# are stale or empty) and uses sudo when not root.
#
#   scripts/deps.sh          build and test dependencies, which include what
#                            the cluster tests run: PostgreSQL 15, Redis, nginx
#   scripts/deps.sh cluster  the same (for deploy/local-cluster/up)
#   scripts/deps.sh bench    also the benchmark's (wrk, jq)
set -euo pipefail

pkgs=(build-essential pkg-config libmicrohttpd-dev libjansson-dev libsqlite3-dev
      libinih-dev libssl-dev libcmocka-dev libpq-dev python3 sqlite3 curl
      postgresql-15 python3-psycopg2 libhiredis-dev redis-server nginx-light iproute2
      libnats-dev nats-server)
if [ "${1:-}" = bench ]; then
    pkgs+=(nginx-light wrk jq)
fi
if [ "${1:-}" = asan ]; then
    pkgs+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
