#!/usr/bin/env bash
# Installs the Debian packages payd needs to build, test and benchmark, when
# any is missing. Runs apt-get update first (a fresh machine's package lists
# are stale or empty) and uses sudo when not root.
#
#   scripts/deps.sh          build and test dependencies, which include what
#                            the cluster tests run: PostgreSQL 15, Redis, nginx
#   scripts/deps.sh cluster  the same (for deploy/local-cluster/up)
#   scripts/deps.sh bench    also the benchmark's (wrk, jq)
#   scripts/deps.sh obs      also Prometheus (its promtool checks and tests the
#                            alerting rules in deploy/prometheus/) and Alertmanager
#   scripts/deps.sh browser  also the dashboard's browser test's (chromium)
#   scripts/deps.sh plot     also gnuplot (gnuplot-nox), which draws bench/plot.sh's charts
#
# Node.js and npm (the dashboard's uPlot comes from npm) count as present when
# `node` and `npm` are on PATH, whichever package brought them.
set -euo pipefail

pkgs=(build-essential pkg-config libmicrohttpd-dev libjansson-dev libsqlite3-dev
      libinih-dev libssl-dev libcmocka-dev libpq-dev libcurl4-openssl-dev python3 sqlite3 curl
      postgresql-15 python3-psycopg2 libhiredis-dev redis-server nginx-light iproute2
      libnats-dev nats-server jq)
if [ "${1:-}" = bench ]; then
    pkgs+=(nginx-light wrk jq)
fi
if [ "${1:-}" = asan ]; then
    pkgs+=(clang libclang-rt-14-dev)
fi
if [ "${1:-}" = browser ]; then
    pkgs+=(chromium)
fi
if [ "${1:-}" = plot ]; then
    pkgs+=(gnuplot-nox)
fi
if [ "${1:-}" = obs ]; then
    # Package prometheus provides /usr/bin/promtool; a promtool already on PATH will do.
    command -v promtool >/dev/null 2>&1 || pkgs+=(prometheus)
    pkgs+=(prometheus-alertmanager)
fi
command -v node >/dev/null || pkgs+=(nodejs)
command -v npm >/dev/null || pkgs+=(npm)

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
