#!/usr/bin/env bash
# deps.sh - install the Debian packages this project needs to build and test
# (compilers, client libraries, Check, and the PostgreSQL 15 / Redis / NATS
# servers that scripts/servers.sh runs privately).
#
# Fast no-op when everything is already installed: no apt-get call at all.
# Otherwise runs `apt-get update` once and installs only what is missing
# (needs root). Installing does not start anything we rely on: the project
# runs its own servers with scripts/servers.sh, never the system services
# (which Debian's policy-rc.d, or the lack of an init system, keeps stopped).
set -euo pipefail

PACKAGES=(
    build-essential pkg-config
    libpq-dev libhiredis-dev libnats-dev libjansson-dev
    check libsubunit-dev libmicrohttpd-dev libgnutls28-dev libssl-dev
    postgresql-15 postgresql-client-15 postgresql-contrib
    redis-server redis-tools
    nats-server
    clang libclang-rt-14-dev
    curl wrk
    iproute2        # ss: which process holds a port a server cannot take
    openssl jq      # tests/tls.sh: its private CA, and reading the answers
    prometheus      # for promtool only (tests/test_metrics.c); its service is not used
    # the highly available topology (make cluster-up); their services are not used
    patroni python3-psycopg2 etcd-server etcd-client haproxy redis-sentinel
    chromium        # the console's browser tests, driven by puppeteer-core from npm
)

missing=()
# Node.js and npm run the browser tests' driver only. A machine may already
# carry a Node.js build whose package bundles npm and conflicts with Debian's
# npm package, so each is asked for only when its command is absent.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ $status != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    echo "deps: all ${#PACKAGES[@]} packages already installed"
    exit 0
fi

echo "deps: missing packages: ${missing[*]}"
if [[ $(id -u) -ne 0 ]]; then
    echo "deps: error: installing packages needs root; run as root (e.g. sudo $0)" >&2
    exit 1
fi

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "deps: installed: ${missing[*]}"
