#!/usr/bin/env bash
# tests/tls.sh [BUILD]: the whole system over TLS.  Makes a private CA
# with openssl (a server certificate for 127.0.0.1 and localhost, a
# client certificate for NATS), starts a PostgreSQL that accepts TLS
# connections only and a nats-server that requires TLS and a client
# certificate, both on ports of their own, and runs es-command,
# es-relay, es-projector, es-saga and es-query against them with
# ES_TLS_CERT/ES_TLS_KEY (HTTPS only), PostgreSQL sslmode=verify-full and
# ES_NATS_CA/ES_NATS_CERT/ES_NATS_KEY.  Redis is the one of
# scripts/servers.sh (in a database of its own; Redis has no TLS here).
#
# Checks: HTTPS with the CA works and without it does not, plain HTTP
# gets no answer, a user registered over HTTPS reaches PostgreSQL (over
# TLS) and comes back from es-query (relay and projector over NATS TLS),
# the registration saga runs its steps through NATS, every PostgreSQL and
# NATS client connection is encrypted, a certificate that does not fit
# its key stops a daemon at start, and every daemon stops cleanly.
#
# Prints a Check-style summary line, which scripts/test.sh counts.  Run
# it from scripts/test.sh (which exports ES_REDIS_HOST/PORT and
# ES_TEST_BUILD); ports come from ES_TLS_TEST_PORT_BASE (13440) upwards,
# skipping ports in use.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${1:-${ES_TEST_BUILD:-build/plain}}
pgbin=/usr/lib/postgresql/15/bin
redis_db=${ES_TLS_TEST_REDIS_DB:-2}

checks=0 failures=0
pass() { checks=$((checks + 1)); echo "tls.sh: ok: $*"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); echo "tls.sh:$1:F: $2"; }
check() {     # check NAME COMMAND...: passes when the command succeeds
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name" "failed: $*"; fi
}
summary() {
    local pct=0
    ((checks == 0)) || pct=$(((checks - failures) * 100 / checks))
    echo "$pct%: Checks: $checks, Failures: $failures, Errors: 0"
}
die() {
    echo "tls.sh:setup:E: $*"
    checks=$((checks + 1)) failures=$((failures + 1))
    exit 1
}

tmp=$(mktemp -d /tmp/es-tls-XXXXXX)
chmod 755 "$tmp"
declare -A pids=()
nats_pid=""
pg_started=""

as_pg() {
    if [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else (cd / && "$@"); fi
}

cleanup() {
    local rc=$?
    for name in "${!pids[@]}"; do
        kill "${pids[$name]}" 2>/dev/null || true
    done
    for name in "${!pids[@]}"; do
        wait "${pids[$name]}" 2>/dev/null || true
    done
    if [[ -n $nats_pid ]]; then
        kill "$nats_pid" 2>/dev/null || true
        wait "$nats_pid" 2>/dev/null || true
    fi
    if [[ -n $pg_started ]]; then
        as_pg "$pgbin/pg_ctl" -D "$tmp/pg" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if ((failures > 0)); then
        for f in "$tmp"/*.log; do
            [[ -s $f ]] || continue
            echo "---- last lines of $(basename "$f") ----"
            tail -n 15 "$f"
        done
    fi
    rm -rf "$tmp"
    summary
    ((rc == 0 && failures == 0)) || exit 1
}
trap cleanup EXIT

# ---- ports ------------------------------------------------------------
next_port=${ES_TLS_TEST_PORT_BASE:-13440}
pick_port() {        # pick_port VAR: the next port nothing listens on, into VAR
    while (exec 3<>"/dev/tcp/127.0.0.1/$next_port") 2>/dev/null; do
        next_port=$((next_port + 1))
    done
    printf -v "$1" '%s' "$next_port"
    next_port=$((next_port + 1))
}
for v in pg_port nats_port nats_mon_port command_port query_port relay_port projector_port \
    saga_port spare_port spare_port2; do
    pick_port "$v"
done

# ---- the private CA and its certificates --------------------------------
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=es tls test CA" \
    -keyout "$tmp/ca.key" -out "$tmp/ca.crt" 2>/dev/null || die "openssl could not make the CA"
issue() {            # issue NAME SUBJECT-CN EXTENSIONS
    printf '%s\n' "$3" >"$tmp/$1.ext"
    openssl req -new "${ec[@]}" -subj "/CN=$2" -keyout "$tmp/$1.key" -out "$tmp/$1.csr" 2>/dev/null &&
        openssl x509 -req -in "$tmp/$1.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
            -CAcreateserial -days 2 -extfile "$tmp/$1.ext" -out "$tmp/$1.crt" 2>/dev/null ||
        die "openssl could not issue $1"
}
issue server localhost $'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth'
issue client es-daemons $'extendedKeyUsage=clientAuth'
chmod 644 "$tmp"/*.crt "$tmp"/*.key     # the daemons' own files; PostgreSQL gets copies

# ---- PostgreSQL: TLS connections only ----------------------------------
mkdir -p "$tmp/pg" "$tmp/pgtls"
cp "$tmp/server.crt" "$tmp/server.key" "$tmp/pgtls/"
chmod 700 "$tmp/pg" "$tmp/pgtls"
chmod 600 "$tmp/pgtls/server.key"
if [[ $(id -u) -eq 0 ]]; then chown -R postgres: "$tmp/pg" "$tmp/pgtls"; fi
as_pg "$pgbin/initdb" -D "$tmp/pg" -U postgres --auth=trust -E UTF8 >"$tmp/initdb.log" 2>&1 ||
    die "initdb failed"
as_pg tee -a "$tmp/pg/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = ''
fsync = off
ssl = on
ssl_cert_file = '$tmp/pgtls/server.crt'
ssl_key_file = '$tmp/pgtls/server.key'
EOF
as_pg tee "$tmp/pg/pg_hba.conf" >/dev/null <<EOF
hostssl all all 127.0.0.1/32 trust
hostnossl all all 0.0.0.0/0 reject
EOF
touch "$tmp/pg.log" && chmod 666 "$tmp/pg.log"
as_pg "$pgbin/pg_ctl" -D "$tmp/pg" -l "$tmp/pg.log" -w -t 60 start >/dev/null 2>&1 ||
    die "PostgreSQL with ssl = on did not start"
pg_started=1
conninfo="host=127.0.0.1 port=$pg_port user=postgres dbname=es sslmode=verify-full sslrootcert=$tmp/ca.crt"
"$pgbin/psql" "${conninfo/dbname=es/dbname=postgres}" -qAt -c "CREATE DATABASE es" >/dev/null ||
    die "could not create the database over TLS"

# ---- NATS: TLS and a client certificate required --------------------------
cat >"$tmp/nats.conf" <<EOF
listen: "127.0.0.1:$nats_port"
http: "127.0.0.1:$nats_mon_port"
jetstream { store_dir: "$tmp/js" }
tls {
  cert_file: "$tmp/server.crt"
  key_file: "$tmp/server.key"
  ca_file: "$tmp/ca.crt"
  verify: true
  timeout: 5
}
EOF
nats-server -c "$tmp/nats.conf" -l "$tmp/nats.log" </dev/null >/dev/null 2>&1 &
nats_pid=$!
for _ in $(seq 1 100); do
    grep -q 'Server is ready' "$tmp/nats.log" 2>/dev/null && break
    kill -0 "$nats_pid" 2>/dev/null || die "nats-server with TLS did not start"
    sleep 0.1
done
grep -q 'Server is ready' "$tmp/nats.log" || die "nats-server with TLS is not ready"

# ---- the daemons ----------------------------------------------------------
export ES_PG_CONNINFO=$conninfo
export ES_NATS_URL=nats://127.0.0.1:$nats_port
export ES_NATS_CA=$tmp/ca.crt ES_NATS_CERT=$tmp/client.crt ES_NATS_KEY=$tmp/client.key
export ES_TLS_CERT=$tmp/server.crt ES_TLS_KEY=$tmp/server.key
export ES_REDIS_DB=$redis_db
export ES_COMMAND_PORT=$command_port ES_QUERY_PORT=$query_port ES_RELAY_PORT=$relay_port
export ES_PROJECTOR_PORT=$projector_port ES_SAGA_PORT=$saga_port
export ES_GATEWAY_NOTIFICATION_TRANSPORT=null ES_GATEWAY_EMAIL_TRANSPORT=null
"$build/esctl" migrate >"$tmp/migrate.log" 2>&1 || die "esctl migrate over TLS failed"
# (as the identity the environment names; redis-cli exits 0 on an error
# answer, so the answer itself is checked)
[[ $(REDISCLI_AUTH=${ES_REDIS_PASSWORD:-} redis-cli -h "${ES_REDIS_HOST:-127.0.0.1}" \
     -p "${ES_REDIS_PORT:-16379}" ${ES_REDIS_USER:+--user "$ES_REDIS_USER"} -n "$redis_db" \
     flushdb 2>&1) == OK ]] || die "could not empty Redis database $redis_db"

# a token for the requests (access control is on, as everywhere)
token=$("$build/esctl" --json token create "tls-$$" --scope admin --ttl 3600 2>"$tmp/token.log" |
        jq -r '.token // empty')
[[ -n $token ]] || die "esctl token create failed: $(cat "$tmp/token.log")"

https() { curl -s -m 10 --cacert "$tmp/ca.crt" -H "Authorization: Bearer $token" "$@"; }

start() {            # start NAME PORT: runs es-NAME, waits for /healthz over HTTPS
    "$build/es-$1" >"$tmp/$1.log" 2>&1 </dev/null &
    pids[$1]=$!
    for _ in $(seq 1 150); do
        https -f -o /dev/null "https://127.0.0.1:$2/healthz" && return 0
        kill -0 "${pids[$1]}" 2>/dev/null || break
        sleep 0.1
    done
    die "es-$1 did not answer /healthz over HTTPS"
}
start command "$command_port"
start relay "$relay_port"
start projector "$projector_port"
start query "$query_port"
start saga "$saga_port"

ready() {            # ready PORT: /readyz answers 200 within 20 s
    for _ in $(seq 1 200); do
        [[ $(https -o /dev/null -w '%{http_code}' "https://127.0.0.1:$1/readyz") == 200 ]] && return 0
        sleep 0.1
    done
    return 1
}
check "es-command ready (PostgreSQL and NATS over TLS)" ready "$command_port"
check "es-relay ready" ready "$relay_port"
check "es-projector ready" ready "$projector_port"
check "es-saga ready" ready "$saga_port"
check "es-query ready" ready "$query_port"

# ---- HTTPS only ------------------------------------------------------------
no_ca() { curl -s -m 5 -o /dev/null "https://127.0.0.1:$command_port/healthz"; }
plain() { curl -s -m 5 -o /dev/null "http://127.0.0.1:$1/healthz"; }
if no_ca; then fail "https-needs-the-ca" "the certificate was trusted without the CA"; else
    pass "HTTPS without the CA is refused by the client"; fi
for p in "$command_port" "$query_port" "$relay_port"; do
    if plain "$p"; then fail "plain-http" "plain HTTP answered on port $p"; else
        pass "plain HTTP gets no answer on port $p"; fi
done

# ---- a command through everything -------------------------------------------
email="tls-$RANDOM$RANDOM@example.com"
body=$(https -X POST -H 'Content-Type: application/json' \
    -d "{\"email\":\"$email\",\"name\":\"TLS\"}" "https://127.0.0.1:$command_port/v1/users")
user_id=$(jq -r '.user_id // empty' <<<"$body")
position=$(jq -r '.position // empty' <<<"$body")
if [[ -n $user_id && -n $position ]]; then pass "user registered over HTTPS"; else
    fail "register" "POST /v1/users answered $body"; fi

read_user() {
    local got
    got=$(https "https://127.0.0.1:$query_port/v1/users/$user_id?consistent_with=$position&wait_ms=10000")
    [[ $(jq -r '.email // empty' <<<"$got") == "$email" ]]
}
check "the user comes back from es-query (relay, NATS, projector)" read_user

saga_ran() {         # the registration saga's commands (profile, fraud check) succeeded
    local got
    for _ in $(seq 1 100); do
        got=$(https "https://127.0.0.1:$query_port/v1/sagas/registration-$user_id")
        jq -e '[.steps[]? | select((.name == "profile" or .name == "fraud_check") and
            .status == "succeeded")] | length == 2' <<<"$got" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "tls.sh: the saga: $got"
    return 1
}
check "the registration saga sends commands over NATS" saga_ran

# ---- every link encrypted ----------------------------------------------------
pg_all_ssl() {
    local got
    got=$("$pgbin/psql" "$conninfo" -qAt -c "SELECT count(*), bool_and(s.ssl)
        FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
        WHERE a.datname = 'es' AND a.pid <> pg_backend_pid()")
    [[ $got =~ ^([0-9]+)\|t$ ]] && ((BASH_REMATCH[1] >= 3))
}
check "every daemon connection to PostgreSQL uses TLS" pg_all_ssl
pg_plain_refused() {
    ! "$pgbin/psql" "host=127.0.0.1 port=$pg_port user=postgres dbname=es sslmode=disable" \
        -qAt -c "SELECT 1" >/dev/null 2>&1
}
check "PostgreSQL refuses a connection without TLS" pg_plain_refused
nats_all_tls() {
    local got name
    got=$(curl -s -m 5 "http://127.0.0.1:$nats_mon_port/connz?limit=100")
    for name in es-command es-relay es-projector es-saga; do
        jq -e --arg n "$name" '[.connections[] | select(.name == $n)] | length > 0 and
            all(.tls_version != null and .tls_version != "")' <<<"$got" >/dev/null ||
            { echo "tls.sh: no TLS connection named $name in /connz"; return 1; }
    done
}
check "every daemon connection to NATS uses TLS" nats_all_tls

# ---- a certificate that does not fit its key --------------------------------
bad_pair() {
    local out
    out=$(ES_TLS_KEY=$tmp/client.key ES_COMMAND_PORT=$spare_port timeout 60 \
        "$build/es-command" 2>&1) && { echo "tls.sh: es-command ran: $out"; return 1; }
    grep -q 'could not use the TLS certificate' <<<"$out" ||
        { echo "tls.sh: es-command said: $out"; return 1; }
}
check "es-command refuses a key that is not its certificate's" bad_pair
no_nats_ca() {
    local out
    out=$(ES_NATS_CA=$tmp/missing.crt ES_RELAY_PORT=$spare_port2 timeout 60 \
        "$build/es-relay" 2>&1) && { echo "tls.sh: es-relay ran: $out"; return 1; }
    grep -q 'could not load the NATS CA' <<<"$out" ||
        { echo "tls.sh: es-relay said: $out"; return 1; }
}
check "es-relay refuses a NATS CA it cannot load" no_nats_ca

# ---- clean stops ----------------------------------------------------------------
for name in saga query projector relay command; do
    kill "${pids[$name]}"
    if wait "${pids[$name]}"; then pass "es-$name stopped cleanly"; else
        fail "stop-$name" "es-$name exited with status $?"; fi
    unset "pids[$name]"
done
