#!/usr/bin/env bash
# tests/console.sh [BUILD]: the operator console in a real browser.  Runs
# the five daemons on ports of their own against a fresh database of
# their own (es_console_<pid>), a Redis database of their own and a JetStream
# stream of their own, with order sagas made to fail
# (ES_SAGA_INJECT_FAILURE: the shipment and the refund are refused, so
# each order saga ends failed with a dead letter), puts the demo's data
# in (scripts/demo.sh), then drives Debian's Chromium headless through
# every view with tests/console/console.test.js (puppeteer-core, installed
# from tests/console/package-lock.json into build/console/node_modules;
# nothing is downloaded while the test runs).  Screenshots go to
# build/console/shots.
#
# Prints a Check-style summary line, which scripts/test.sh counts.  Run
# it from scripts/test.sh (`make test-console`); ports come from
# ES_CONSOLE_TEST_PORT_BASE (default ES_TLS_TEST_PORT_BASE + 10, 13450).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${1:-${ES_TEST_BUILD:-build/plain}}
redis_db=${ES_CONSOLE_TEST_REDIS_DB:-3}
base=${ES_CONSOLE_TEST_PORT_BASE:-$((${ES_TLS_TEST_PORT_BASE:-13440} + 10))}
chromium=${CHROMIUM:-/usr/bin/chromium}
out=build/console

checks=0 failures=0
summary() {
    local pct=0
    ((checks == 0)) || pct=$(((checks - failures) * 100 / checks))
    echo "$pct%: Checks: $checks, Failures: $failures, Errors: 0"
}
die() {
    echo "console.sh:setup:E: $*"
    checks=$((checks + 1)) failures=$((failures + 1))
    exit 1
}

tmp=$(mktemp -d /tmp/es-console-XXXXXX)
declare -A pids=()
cleanup() {
    local rc=$?
    for name in "${!pids[@]}"; do kill "${pids[$name]}" 2>/dev/null || true; done
    for name in "${!pids[@]}"; do wait "${pids[$name]}" 2>/dev/null || true; done
    # the relay's stream of this run
    [[ -z ${ES_RELAY_STREAM:-} ]] || node tests/console/drop_stream.js "$ES_RELAY_STREAM" || true
    [[ -z ${console_db:-} ]] ||
        pg_admin -c "DROP DATABASE IF EXISTS $console_db WITH (FORCE)" >/dev/null 2>&1 || true
    if ((failures > 0)); then
        for f in "$tmp"/*.log; do
            [[ -s $f ]] || continue
            echo "---- last lines of $(basename "$f") ----"
            tail -n 15 "$f"
        done
    fi
    rm -rf "$tmp"
    summary
    exit "$rc"
}
trap cleanup EXIT

[[ -n ${ES_TEST_CONNINFO:-} ]] || die "run it from scripts/test.sh (ES_TEST_CONNINFO is unset)"
[[ -x $chromium ]] || die "no Chromium at $chromium (scripts/deps.sh installs it)"
command -v node >/dev/null || die "no node (scripts/deps.sh installs it)"

# ---- puppeteer-core, from the committed lock file --------------------------
mkdir -p "$out"
if ! cmp -s tests/console/package-lock.json "$out/package-lock.json" ||
   [[ ! -d $out/node_modules/puppeteer-core ]]; then
    cp tests/console/package.json tests/console/package-lock.json "$out/"
    (cd "$out" && npm ci --ignore-scripts --no-audit --no-fund >"$tmp/npm.log" 2>&1) ||
        die "npm ci of tests/console/package-lock.json failed: $(tail -n 5 "$tmp/npm.log")"
fi

# ---- the system ---------------------------------------------------------------
tag=console$$
# A database of its own, as every test program has: the shared test
# database holds what earlier tests wrote (events no projection accepts
# among them), which this run's relay would copy into its stream and its
# projector would stop on.
console_db=es_console_$$
pg_admin() { /usr/lib/postgresql/15/bin/psql "$ES_TEST_ADMIN_CONNINFO" -v ON_ERROR_STOP=1 -qAt "$@"; }
pg_admin -c "DROP DATABASE IF EXISTS $console_db WITH (FORCE)" -c "CREATE DATABASE $console_db" \
    >/dev/null || die "could not create the database $console_db"
ES_TEST_CONNINFO="${ES_TEST_CONNINFO% dbname=*} dbname=$console_db"
export ES_PG_CONNINFO=$ES_TEST_CONNINFO ES_CONSOLE_PG_CONNINFO=$ES_TEST_CONNINFO
"$build/esctl" migrate >/dev/null || die "esctl migrate of $console_db failed"
export ES_REDIS_DB=$redis_db
export ES_RELAY_STREAM=CONSOLE_$$ ES_RELAY_SUBJECT_PREFIX=$tag.events
export ES_RELAY_WAKE_SUBJECT=$tag.wake ES_COMMAND_SUBJECT_PREFIX=$tag.cmd
export ES_COMMAND_PORT=$base ES_QUERY_PORT=$((base + 1)) ES_RELAY_PORT=$((base + 2))
export ES_PROJECTOR_PORT=$((base + 3)) ES_SAGA_PORT=$((base + 4))
export ES_GATEWAY_NOTIFICATION_TRANSPORT=null ES_GATEWAY_EMAIL_TRANSPORT=null
[[ $(REDISCLI_AUTH=${ES_REDIS_PASSWORD:-} redis-cli -h "${ES_REDIS_HOST:-127.0.0.1}" \
     -p "${ES_REDIS_PORT:-16379}" ${ES_REDIS_USER:+--user "$ES_REDIS_USER"} -n "$redis_db" \
     flushdb 2>&1) == OK ]] || die "could not empty Redis database $redis_db"
token=$("$build/esctl" --json token create "console-$$" --scope admin --ttl 3600 \
        2>"$tmp/token.log" | jq -r '.token // empty')
[[ -n $token ]] || die "esctl token create failed: $(cat "$tmp/token.log")"
read_token=$("$build/esctl" --json token create "console-read-$$" --scope read:query \
             --scope read:streams --ttl 3600 2>"$tmp/token.log" | jq -r '.token // empty')
[[ -n $read_token ]] || die "esctl token create (read only) failed: $(cat "$tmp/token.log")"

start() {            # start NAME PORT [VAR=VALUE ...]: runs es-NAME, waits for /healthz
    local name=$1 port=$2
    shift 2
    env "$@" "$build/es-$name" >"$tmp/$name.log" 2>&1 </dev/null &
    pids[$name]=$!
    for _ in $(seq 1 150); do
        curl -sf -m 2 -o /dev/null "http://127.0.0.1:$port/healthz" && return 0
        kill -0 "${pids[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    die "es-$name did not answer /healthz"
}
start command "$ES_COMMAND_PORT"
start relay "$ES_RELAY_PORT"
start projector "$ES_PROJECTOR_PORT"
start query "$ES_QUERY_PORT" ES_REBUILD_GRACE_MS=100
start saga "$ES_SAGA_PORT" ES_SAGA_INJECT_FAILURE=order.shipment,order.payment.undo \
    ES_SAGA_COMPENSATION_REFUSALS=2

# the demo's data: users, deposits, stock, orders (failing here), sagas
ES_TOKEN=$token timeout 120 scripts/demo.sh >"$tmp/demo.log" 2>&1 || die "scripts/demo.sh failed"
grep -q '"state":"failed"' "$tmp/demo.log" || die "no order saga of the demo failed"

# ---- the browser ----------------------------------------------------------------
set +e
CONSOLE_URL=http://127.0.0.1:$ES_QUERY_PORT/console/ CONSOLE_TOKEN=$token CHROMIUM=$chromium \
CONSOLE_READ_TOKEN=$read_token CONSOLE_COMMAND_URL=http://127.0.0.1:$ES_COMMAND_PORT \
CONSOLE_ESCTL=$build/esctl ES_REBUILD_GRACE_MS=100 \
CONSOLE_SHOTS=$out/shots CONSOLE_PROFILE=$tmp/profile NODE_PATH=$root/$out/node_modules \
    timeout 300 node tests/console/console.test.js 2>&1 | tee "$tmp/browser.log"
rc=${PIPESTATUS[0]}
set -e
ok=$(grep -c '^ok ' "$tmp/browser.log" || true)
checks=$((checks + ok))
if ((rc != 0)); then
    checks=$((checks + 1)) failures=$((failures + 1))
    echo "console.sh:browser:F: tests/console/console.test.js failed (exit $rc)"
fi

# a rebuild started from the console, then SIGTERM: es-query stops it at
# its next batch and still exits 0 (under the sanitizers: nothing leaked)
checks=$((checks + 1))
code=$(curl -s -o "$tmp/rebuild.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $token" \
       "http://127.0.0.1:$ES_QUERY_PORT/v1/console/projections/orders/rebuild")
if [[ $code != 202 ]]; then
    failures=$((failures + 1))
    echo "console.sh:rebuild:F: POST .../projections/orders/rebuild answered $code: $(cat "$tmp/rebuild.json")"
else
    echo "console.sh: ok: a console rebuild runs when es-query is told to stop"
fi

# every daemon stops cleanly (under the sanitizers: nothing leaked)
for name in query saga projector relay command; do
    kill -TERM "${pids[$name]}" 2>/dev/null || true
    set +e
    wait "${pids[$name]}"
    drc=$?
    set -e
    unset "pids[$name]"
    checks=$((checks + 1))
    if ((drc != 0)); then
        failures=$((failures + 1))
        echo "console.sh:stop:F: es-$name exited $drc on SIGTERM"
        tail -n 20 "$tmp/$name.log"
    else
        echo "console.sh: ok: es-$name stops cleanly"
    fi
done
exit $((failures > 0))
