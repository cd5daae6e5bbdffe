#!/usr/bin/env bash
# Runs every test program of one build (build/plain or build/san), and
# tests/tls.sh with that build's daemons, against the project's private
# servers: starts them if needed, gives the tests a
# freshly created and migrated database, and prints one closing line
# "tests: N passed, N failed" summed over all programs.  Test names after
# the build folder (test_privilege ...) run only those programs.
#
# The tests run as the administrator of scripts/servers.sh env (its
# PostgreSQL superuser password in PGPASSWORD, its NATS and Redis users);
# ES_CREDENTIALS names the file of every identity's password, which
# test_privilege uses to connect as each program.
set -euo pipefail

build=${1:-build/plain}
shift || true
only=("$@")
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

scripts/servers.sh start >/dev/null
eval "$(scripts/servers.sh env)"

pgbin=/usr/lib/postgresql/15/bin
base="host=$ES_PG_HOST port=$ES_PG_PORT user=$ES_PG_USER"
db=es_test
"$pgbin/psql" "$base dbname=postgres" -v ON_ERROR_STOP=1 -qAt \
    -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
export ES_TEST_CONNINFO="$base dbname=$db"
# Daemons a test starts without naming a database use the test database
# too (their token table is there: tests/harness.c provisions it).
export ES_PG_CONNINFO=$ES_TEST_CONNINFO
export ES_TEST_ADMIN_CONNINFO="$base dbname=postgres"
export ES_TEST_MIGRATIONS="$root/migrations"
export ES_TEST_BUILD="$build"
# Read models of the tests live in a Redis database of their own, so a
# system started by `make up` (database 0) is not disturbed.
export ES_REDIS_DB=${ES_TEST_REDIS_DB:-1}
ES_PG_CONNINFO=$ES_TEST_CONNINFO "$build/esctl" migrate >/dev/null

# Any sanitizer report fails the test that caused it (leaks included).
export ASAN_OPTIONS=detect_leaks=1:detect_stack_use_after_return=1:exitcode=23:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=exitcode=23

passed=0 failed=0 programs_failed=0 failures="" times=""
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# tests/tls.sh runs the daemons over TLS against servers of its own;
# tests/console.sh runs the operator console in headless Chromium.
for t in "$build"/tests/test_* tests/tls.sh tests/console.sh; do
    [ -x "$t" ] || continue
    if [ ${#only[@]} -gt 0 ] && [[ " ${only[*]} " != *" $(basename "$t") "* ]]; then continue; fi
    echo "== $(basename "$t")"
    set +e
    started=$SECONDS
    "$t" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    # How long each program took: the list at the end shows where the
    # suite's time goes (CI's budget is minutes, not hours).
    times+="$((SECONDS - started)) $(basename "$t")"$'\n'
    line=$(grep -Eo 'Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | tail -n 1 || true)
    if [ -n "$line" ]; then
        read -r checks fails errors <<<"$(echo "$line" | tr -dc '0-9 ' | tr -s ' ')"
        passed=$((passed + checks - fails - errors))
        failed=$((failed + fails + errors))
    fi
    if [ "$rc" -ne 0 ]; then
        programs_failed=$((programs_failed + 1))
        [ -n "$line" ] || failed=$((failed + 1))
        # Name what failed, so the last lines of a CI log are enough.
        what=$(grep -E ':[EF]:' "$log" | head -n 5 || true)
        [ -n "$what" ] || what="exit status $rc, no Check summary (killed by a signal?)"
        failures+=$'\n'"  $(basename "$t"): ${what//$'\n'/$'\n'  }"
    fi
done
echo "slowest programs ($build), seconds:"
printf '%s' "$times" | sort -rn | head -n 8 | sed 's/^/  /'
[ -z "$failures" ] || echo "failed in $build:$failures"
echo "tests ($build): $passed passed, $failed failed"
echo "$passed $failed" >"$build/test-summary"
[ "$programs_failed" -eq 0 ] && [ "$failed" -eq 0 ]
