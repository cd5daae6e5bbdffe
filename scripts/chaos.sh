#!/usr/bin/env bash
# chaos.sh - the fault campaign behind `make chaos`.  Runs a private system
# (its own PostgreSQL, Redis and NATS under .run/chaos, its own ports, a
# fresh database), puts a steady load of commands on it (tests/chaos_load.c)
# and, for CHAOS_SECONDS, kills with SIGKILL and restarts each daemon and
# each server at random moments.  Then it brings everything back, lets the
# system settle and checks the invariants:
#   - every acknowledged command has its effect in the store exactly once
#     (checked here against the acknowledgement file of the load);
#   - feed = JetStream stream, read models = a fresh rebuild, sagas
#     finished, money and stock conserved (`esctl verify --settled`).
# Any violation exits 1.  Everything it started is stopped at the end, also
# on failure or Ctrl-C; what a run left (logs, acknowledgements, verify's
# answers) stays in .run/chaos/logs until the next run.
#
#   scripts/chaos.sh [BUILD_DIR]
#
# CHAOS_SECONDS (300) the chaos period; CHAOS_KILL_INTERVAL (5) seconds
# between kills; CHAOS_RATE (80) commands/s offered over CHAOS_CONNS (6)
# connections; CHAOS_SEED fixes the schedule and the
# load; CHAOS_SETTLE_SECONDS (120) bounds the wait for quiescence;
# CHAOS_PG_PORT, CHAOS_REDIS_PORT, CHAOS_NATS_PORT, CHAOS_NATS_HTTP_PORT
# (15532, 16479, 14322, 18322) and CHAOS_PORT_BASE (18680, five daemon
# ports from there) keep it away from `make up` and the tests.
set -euo pipefail

build=${1:-build/plain}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[[ $build == /* ]] || build=$root/$build

secs=${CHAOS_SECONDS:-300}
rate=${CHAOS_RATE:-80}
conns=${CHAOS_CONNS:-6}
settle=${CHAOS_SETTLE_SECONDS:-120}
kill_every=${CHAOS_KILL_INTERVAL:-5}
seed=${CHAOS_SEED:-$(($(date +%s) % 1000000))}
drain=60
for v in secs rate conns settle seed kill_every; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "chaos: $v must be a whole number, got '${!v}'" >&2; exit 2; }
done
((secs >= 10)) || { echo "chaos: CHAOS_SECONDS must be at least 10" >&2; exit 2; }
((kill_every >= 1 && rate >= 1 && conns >= 1)) || { echo "chaos: CHAOS_KILL_INTERVAL, CHAOS_RATE and CHAOS_CONNS must be at least 1" >&2; exit 2; }
RANDOM=$seed

for bin in es-command es-relay es-projector es-query es-saga esctl chaos_load; do
    [[ -x $build/$bin ]] || { echo "chaos: $build/$bin is missing; run make all" >&2; exit 2; }
done

# ---- the private system ----------------------------------------------------

export ES_RUN_DIR=$root/.run/chaos
export ES_PG_PORT=${CHAOS_PG_PORT:-15532}
export ES_REDIS_PORT=${CHAOS_REDIS_PORT:-16479}
export ES_NATS_PORT=${CHAOS_NATS_PORT:-14322}
export ES_NATS_HTTP_PORT=${CHAOS_NATS_HTTP_PORT:-18322}
port_base=${CHAOS_PORT_BASE:-18680}
eval "$(scripts/servers.sh env)"
export ES_PG_CONNINFO="host=$ES_PG_HOST port=$ES_PG_PORT user=$ES_PG_USER dbname=es_chaos"
# Each daemon and esctl run with their own credentials, as under `make up`;
# the campaign's own checks (psql, the load) use the administrator's.
declare -A ident=()
for who in command relay projector query saga esctl; do
    ident[$who]="$(scripts/servers.sh env "$who")
export ES_PG_CONNINFO=\"\${ES_PG_CONNINFO/dbname=es/dbname=es_chaos}\""
done
# run_as NAME CMD...: becomes CMD with NAME's credentials.  Call it in a
# subshell: ( run_as ... ), or with & (then $! is CMD's own PID).
run_as() { eval "${ident[$1]}"; shift; exec "$@"; }
export ES_REDIS_DB=0
export ES_RELAY_STREAM=CHAOS ES_RELAY_SUBJECT_PREFIX=chaos.events
export ES_RELAY_WAKE_SUBJECT=chaos.wake ES_COMMAND_SUBJECT_PREFIX=chaos.cmd
export ES_COMMAND_PORT=$port_base ES_QUERY_PORT=$((port_base + 1))
export ES_RELAY_PORT=$((port_base + 2)) ES_PROJECTOR_PORT=$((port_base + 3))
export ES_SAGA_PORT=$((port_base + 4))
export ES_GATEWAY_NOTIFICATION_TRANSPORT=null ES_GATEWAY_EMAIL_TRANSPORT=null
export ES_MIGRATIONS_DIR=$root/migrations
# Nothing injected: the only faults are the campaign's.
unset ES_SAGA_INJECT_FAILURE ES_SAGA_INJECT_TIMEOUT ES_PROJECTIONS ES_COMMAND_CONTEXTS

pgbin=/usr/lib/postgresql/15/bin
logs=$ES_RUN_DIR/logs
# One campaign at a time on this run folder.  Long-lived children do not
# inherit the lock's descriptor (8>&- on each), so it ends with us.
mkdir -p "$ES_RUN_DIR/pids"
exec 8>"$ES_RUN_DIR/.chaos.lock"
if command -v flock >/dev/null && ! flock -n 8; then
    echo "chaos: another campaign is running on ${ES_RUN_DIR#"$root"/}" >&2
    exit 2
fi
rm -rf "$logs"
mkdir -p "$logs"
t_start=$EPOCHREALTIME

# say MESSAGE: a timestamped line on stdout and in the timeline.
say() {
    local line
    line=$(printf 'chaos: %7.1fs %s' "$(elapsed)" "$*")
    echo "$line"
    echo "$line" >>"$logs/timeline.log"
}
elapsed() { awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((10#$t / 1000)); }
sleep_ms() { (($1 <= 0)) || sleep "$(awk -v m="$1" 'BEGIN { printf "%.3f", m / 1000 }')"; }
# rand_ms LO HI: sets r to a whole number in [LO, HI], from this shell's
# RANDOM (seeded by CHAOS_SEED; a subshell would reseed it).
rand_ms() { r=$(($1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1))); }
psql_q() { "$pgbin/psql" "$ES_PG_CONNINFO" -X -v ON_ERROR_STOP=1 -qAt "$@"; }

# A process is alive: it exists and is not a zombie.
alive() {
    local stat
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}
# Start time of a process (clock ticks since boot): with the PID, its identity.
start_time() {
    local stat f
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    read -ra f <<<"${stat##*) }"
    echo "${f[19]}"
}
comm_is() { local c; read -r c 2>/dev/null <"/proc/$1/comm" && [[ $c == "$2"* ]]; }

# remember NAME PID: notes the process (PID and start time) in
# $ES_RUN_DIR/pids, so that a later run can stop what an interrupted one
# left behind without ever touching another process.
remember() { echo "$2 $(start_time "$2" || echo 0)" >"$ES_RUN_DIR/pids/$1"; }
forget_leftovers() {
    local f p st
    for f in "$ES_RUN_DIR"/pids/*; do
        [[ -f $f ]] || continue
        read -r p st <"$f" || true
        if alive "$p" && [[ $(start_time "$p") == "$st" ]]; then
            kill -9 "$p" 2>/dev/null || true
            say "stopped $(basename "$f") (pid $p), left running by an earlier campaign"
        fi
        rm -f "$f"
    done
}

# ---- daemons ----------------------------------------------------------------

daemons=(command relay projector query saga)
servers=(pg redis nats)
declare -A bin=([command]=es-command [relay]=es-relay [projector]=es-projector
                [query]=es-query [saga]=es-saga)
declare -A port=([command]=$ES_COMMAND_PORT [query]=$ES_QUERY_PORT [relay]=$ES_RELAY_PORT
                 [projector]=$ES_PROJECTOR_PORT [saga]=$ES_SAGA_PORT)
declare -A pid=() kills=() exits=() down=()
for t in "${daemons[@]}" "${servers[@]}"; do kills[$t]=0; exits[$t]=0; done
crashes=""          # daemons that died of a signal that was not ours
load_pid=""

# start_daemon NAME: runs it in the background (appending to its log) and
# waits up to 15 s for /healthz.  While a server is down some daemons do
# not listen before they reach it: then it waits 2 s only and goes on (the
# daemon stays; readiness is checked once the chaos is over).
start_daemon() {
    local name=$1 deadline wait_ms=15000 s
    for s in "${servers[@]}"; do [[ -z ${down[$s]:-} ]] || wait_ms=2000; done
    echo "---- start $(date -u +%FT%T) ----" >>"$logs/$name.log"
    run_as "$name" "$build/${bin[$name]}" >>"$logs/$name.log" 2>&1 </dev/null 8>&- &
    pid[$name]=$!
    remember "$name" "${pid[$name]}"
    deadline=$(($(now_ms) + wait_ms))
    while (($(now_ms) < deadline)); do
        curl -sf -m 0.5 -o /dev/null "http://127.0.0.1:${port[$name]}/healthz" && return 0
        alive "${pid[$name]}" || break
        sleep 0.1
    done
    if alive "${pid[$name]}" && ((wait_ms < 15000)); then
        say "$name (pid ${pid[$name]}) does not answer /healthz yet (a server is down)"
        return 0
    fi
    say "$name did not answer /healthz after its start (pid ${pid[$name]})"
    return 1
}

# reap NAME: collects the exit status of a daemon that is gone into
# $reaped (in this shell: a subshell cannot wait for our children).
reaped=0
reap() {
    reaped=0
    wait "${pid[$1]}" 2>/dev/null || reaped=$?
}

kill_daemon() {
    local name=$1
    if alive "${pid[$name]:-}"; then
        kill -9 "${pid[$name]}" 2>/dev/null || true
        reap "$name"
        kills[$name]=$((kills[$name] + 1))
        say "killed $name (pid ${pid[$name]})"
    else
        say "$name was not running when its kill came"
    fi
}

stop_daemons() {
    local name i
    for name in "${daemons[@]}"; do
        alive "${pid[$name]:-}" && kill "${pid[$name]}" 2>/dev/null || true
    done
    for name in "${daemons[@]}"; do
        [[ -n ${pid[$name]:-} ]] || continue
        for ((i = 0; i < 100; i++)); do alive "${pid[$name]}" || break; sleep 0.1; done
        if alive "${pid[$name]}"; then kill -9 "${pid[$name]}" 2>/dev/null || true; fi
        wait "${pid[$name]}" 2>/dev/null || true
        pid[$name]=""
    done
}

# ---- servers ----------------------------------------------------------------

pg_data() { echo "$(readlink -f "$ES_RUN_DIR/pg")/data"; }
server_pid() {
    local f
    case $1 in
        pg) f=$(pg_data)/postmaster.pid ;;
        redis) f=$ES_RUN_DIR/redis/redis.pid ;;
        nats) f=$ES_RUN_DIR/nats/nats.pid ;;
    esac
    head -n 1 "$f" 2>/dev/null || true
}
declare -A server_comm=([pg]=postgres [redis]=redis-server [nats]=nats-server)
server_alive() {
    local p
    p=$(server_pid "$1")
    alive "$p" && comm_is "$p" "${server_comm[$1]}"
}

start_server() {
    local try
    for try in 1 2 3; do
        if scripts/servers.sh start "$1" >>"$logs/servers.log" 2>&1 8>&-; then
            return 0
        fi
        say "$1 did not start (try $try); see $logs/servers.log"
        sleep 1
    done
    return 1
}

# kill_pg: SIGKILL to the postmaster.  Its children (backends, checkpointer,
# writers) notice its death and exit on their own; those still there after
# 5 s are killed too, recognised by the PID and start time they had as the
# postmaster's children, so nothing else is ever touched.  Until they are
# gone the shared memory is in use and a new postmaster would refuse it.
kill_pg() {
    local pm f stat fields kids=() left=() k i
    pm=$(server_pid pg)
    if ! alive "$pm" || ! comm_is "$pm" postgres; then
        say "pg was not running when its kill came"
        return 0
    fi
    for f in /proc/[0-9]*/stat; do
        read -r stat 2>/dev/null <"$f" || continue
        read -ra fields <<<"${stat##*) }"
        [[ ${fields[1]} == "$pm" ]] && kids+=("${f//[^0-9]/}:${fields[19]}")
    done
    kill -9 "$pm" 2>/dev/null || true
    kills[pg]=$((kills[pg] + 1))
    for ((i = 0; i < 50; i++)); do
        left=()
        for k in "${kids[@]}"; do
            alive "${k%%:*}" && [[ $(start_time "${k%%:*}") == "${k#*:}" ]] && left+=("${k%%:*}")
        done
        ((${#left[@]} == 0)) && break
        sleep 0.1
    done
    if ((${#left[@]} > 0)); then
        kill -9 "${left[@]}" 2>/dev/null || true
        say "killed pg (postmaster $pm; ${#kids[@]} children, ${#left[@]} of them still there after 5 s, killed)"
    else
        say "killed pg (postmaster $pm; its ${#kids[@]} children exited on their own)"
    fi
    for ((i = 0; i < 50; i++)); do
        left=()
        for k in "${kids[@]}"; do alive "${k%%:*}" && left+=("${k%%:*}"); done
        ((${#left[@]} == 0)) && break
        sleep 0.1
    done
}

kill_server() {
    local name=$1 p i
    if [[ $name == pg ]]; then kill_pg; return; fi
    p=$(server_pid "$name")
    if alive "$p" && comm_is "$p" "${server_comm[$name]}"; then
        kill -9 "$p" 2>/dev/null || true
        kills[$name]=$((kills[$name] + 1))
        for ((i = 0; i < 50; i++)); do alive "$p" || break; sleep 0.1; done
        say "killed $name (pid $p)"
    else
        say "$name was not running when its kill came"
    fi
}

is_server() { [[ $1 == pg || $1 == redis || $1 == nats ]]; }

# ---- supervision ----------------------------------------------------------------

# Restarts what died without being killed by the campaign (and says so);
# a daemon that died of a signal other than ours counts as a crash.
supervise() {
    local name rc
    for name in "${servers[@]}"; do
        [[ -z ${down[$name]:-} ]] || continue
        if ! server_alive "$name"; then
            exits[$name]=$((exits[$name] + 1))
            say "$name is not running and was not killed by the campaign: restarting it"
            start_server "$name" || say "$name: restart failed"
        fi
    done
    for name in "${daemons[@]}"; do
        [[ -z ${down[$name]:-} && -n ${pid[$name]:-} ]] || continue
        if ! alive "${pid[$name]}"; then
            reap "$name"
            rc=$reaped
            exits[$name]=$((exits[$name] + 1))
            if ((rc > 128 && rc != 137)); then
                crashes+=" $name(signal $((rc - 128)))"
            fi
            say "$name (pid ${pid[$name]}) exited on its own with status $rc: restarting it"
            tail -n 5 "$logs/$name.log" | sed 's/^/    /'
            start_daemon "$name" || true
        fi
    done
}

# nap_until MS: sleeps until that moment (now_ms), supervising on the way.
nap_until() {
    local left
    while :; do
        left=$(($1 - $(now_ms)))
        ((left > 0)) || return 0
        supervise
        sleep_ms $((left < 500 ? left : 500))
    done
}

# ---- cleanup --------------------------------------------------------------------

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n $load_pid ]] && alive "$load_pid"; then
        kill -TERM "$load_pid" 2>/dev/null || true
        sleep 0.2
        kill -TERM "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    stop_daemons
    scripts/servers.sh stop >>"$logs/servers.log" 2>&1 8>&- || echo "chaos: stopping the servers failed; see $logs/servers.log" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "chaos: interrupted" >&2; exit 130' INT TERM HUP

# ---- set up ----------------------------------------------------------------------

say "seed $seed, $secs s of chaos, load $rate commands/s over $conns connections; logs in ${logs#"$root"/}"
# Servers left running by an interrupted run go first: a clean start, with
# the Redis data and the JetStream stream of the last run removed (the
# PostgreSQL cluster stays; the database is made anew).
forget_leftovers
scripts/servers.sh stop >>"$logs/servers.log" 2>&1 8>&- || true
rm -rf "$ES_RUN_DIR/redis/appendonlydir" "$ES_RUN_DIR/redis/dump.rdb" "$ES_RUN_DIR/nats/js"
for s in "${servers[@]}"; do
    start_server "$s" || { say "could not start $s"; exit 1; }
done
"$pgbin/psql" "host=$ES_PG_HOST port=$ES_PG_PORT user=$ES_PG_USER dbname=postgres" -X -qAt \
    -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS es_chaos WITH (FORCE)" \
    -c "CREATE DATABASE es_chaos" >/dev/null
"$build/esctl" migrate >>"$logs/migrate.log" 2>&1 || { say "esctl migrate failed"; cat "$logs/migrate.log"; exit 1; }
# Access control stays on: the load sends an admin token made for this run.
ES_TOKEN=$("$build/esctl" token create "chaos-$(date +%s%N)" --scope admin 2>>"$logs/migrate.log") ||
    { say "esctl token create failed"; cat "$logs/migrate.log"; exit 1; }
export ES_TOKEN
for d in "${daemons[@]}"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/${port[$d]}") 2>/dev/null; then
        say "port ${port[$d]} (for $d) is taken by another process; set CHAOS_PORT_BASE"
        exit 2
    fi
done
for d in "${daemons[@]}"; do
    start_daemon "$d" || { tail -n 20 "$logs/$d.log"; exit 1; }
done
say "servers and daemons up (command :$ES_COMMAND_PORT, query :$ES_QUERY_PORT)"

run_id=$(printf '%x' "$seed")-$$
CHAOS_LOAD_SEED=$seed "$build/chaos_load" run "$ES_COMMAND_PORT" "$rate" "$conns" "$drain" \
    "$run_id" "$logs/acks.tsv" >"$logs/load.out" 2>"$logs/load.err" 8>&- &
load_pid=$!
remember load "$load_pid"

# ---- chaos ------------------------------------------------------------------------

# The schedule: rounds of every target in a random order, one kill per
# slot of CHAOS_KILL_INTERVAL s (at least one round), at a random moment
# in the first half of its slot; a quarter of the kills take the next
# target along.
targets=("${daemons[@]}" "${servers[@]}")
nkills=$((secs / kill_every > ${#targets[@]} ? secs / kill_every : ${#targets[@]}))
schedule=()
while ((${#schedule[@]} < nkills)); do
    round=("${targets[@]}")
    for ((i = ${#round[@]} - 1; i > 0; i--)); do
        j=$((RANDOM % (i + 1)))
        tmp=${round[i]} round[i]=${round[j]} round[j]=$tmp
    done
    schedule+=("${round[@]}")
done
slot=$((secs * 1000 / nkills))
t0=$(now_ms)
say "chaos: $nkills kills over $secs s"
for ((n = 0; n < nkills; n++)); do
    rand_ms 300 $((slot / 2))
    nap_until $((t0 + n * slot + r))
    victims=("${schedule[n]}")
    if ((n + 1 < nkills && RANDOM % 4 == 0)) && [[ ${schedule[n + 1]} != "${schedule[n]}" ]]; then
        n=$((n + 1))
        victims+=("${schedule[n]}")
    fi
    for v in "${victims[@]}"; do
        down[$v]=1
        if is_server "$v"; then kill_server "$v"; else kill_daemon "$v"; fi
    done
    # down for a while, up to 3 s
    rand_ms 0 $((slot / 3 < 3000 ? slot / 3 : 3000))
    sleep_ms "$r"
    for v in "${victims[@]}"; do
        if is_server "$v"; then
            start_server "$v" && say "restarted $v (pid $(server_pid "$v"))" || say "could not restart $v"
        else
            start_daemon "$v" && say "restarted $v (pid ${pid[$v]})" || true
        fi
        unset "down[$v]"
    done
done
nap_until $((t0 + secs * 1000))
say "chaos over"

# ---- back to normal -------------------------------------------------------------------

up_ok=1
for s in "${servers[@]}"; do
    server_alive "$s" || start_server "$s" || { up_ok=0; say "$s is not running"; }
done
supervise
deadline=$(($(now_ms) + 60000))
for d in "${daemons[@]}"; do
    ready=0
    while (($(now_ms) < deadline)); do
        if curl -sf -m 1 -o /dev/null "http://127.0.0.1:${port[$d]}/readyz"; then ready=1; break; fi
        supervise
        sleep 0.2
    done
    ((ready)) || { up_ok=0; say "$d is not ready 60 s after the chaos"; }
done
((up_ok)) && say "every server and daemon is running and ready"

say "stopping the load (commands in flight get up to $drain s to be answered)"
kill -USR1 "$load_pid" 2>/dev/null || true
load_rc=0
wait "$load_pid" || load_rc=$?
load_pid=""
sed 's/^/    /' "$logs/load.out"
if [[ -s $logs/load.err ]]; then
    echo "    first unexpected answers (of $(wc -l <"$logs/load.err")):"
    head -n 5 "$logs/load.err" | sed 's/^/    /'
fi
load_line=$(grep '^LOAD ' "$logs/load.out" || true)
field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$load_line"; }

# Quiet: no saga work left, the stream holds every event, and no event was
# written for two polls in a row.
say "waiting for quiescence (up to $settle s)"
stream_seq() {
    curl -sf -m 2 "http://127.0.0.1:$ES_NATS_HTTP_PORT/jsz?streams=true" 2>/dev/null |
        tr -d ' \n' | grep -o '"name":"'"$ES_RELAY_STREAM"'"[^}]*}[^}]*"last_seq":[0-9]*' |
        grep -o '"last_seq":[0-9]*$' | cut -d: -f2 || true
}
quiet=0 prev=-1 deadline=$(($(now_ms) + settle * 1000))
while (($(now_ms) < deadline)); do
    supervise
    work=$(psql_q -c "SELECT count(*) FROM es_saga_work" 2>/dev/null || echo "?")
    events=$(psql_q -c "SELECT count(*) FROM es_events" 2>/dev/null || echo "?")
    seq=$(stream_seq)
    if [[ $work == 0 && $events == "$seq" && $events == "$prev" ]]; then
        quiet=$((quiet + 1))
        ((quiet >= 2)) && break
    else
        quiet=0
    fi
    prev=$events
    sleep 1
done
say "saga work left: $work, events: $events, stream: ${seq:-?}$( ((quiet >= 2)) && echo ' (quiet)' || echo ' (NOT quiet)')"

# ---- invariant 1: acknowledged commands, each exactly once --------------------------

say "checking the acknowledged commands against the store"
acked_sql=$(cat <<'SQL'
CREATE TEMP TABLE acks (kind text, key text, status int, code text, id text, pos text,
                        amount bigint, attempts int, replayed boolean);
\copy acks FROM pstdin
-- the events each command wrote: their metadata names the command
CREATE TEMP TABLE ev AS
SELECT substr(metadata->>'command_id', 6) AS key, stream_id, type, data,
       transaction_id::text || '-' || global_position AS pos
  FROM es_events WHERE metadata->>'command_id' LIKE 'idem:chaos-%';
CREATE INDEX ON ev (key);
CREATE TEMP TABLE judged AS
SELECT a.*, k.main, k.business,
       (SELECT count(*) FROM ev WHERE ev.key = a.key) AS n_all,
       (SELECT count(*) FROM ev WHERE ev.key = a.key AND ev.type = main) AS n_main,
       (SELECT count(*) FROM ev WHERE ev.key = a.key AND ev.type = main AND CASE a.kind
            WHEN 'user' THEN ev.stream_id = 'user-' || a.id AND ev.data->>'user_id' = a.id
                             AND ev.pos = a.pos
            WHEN 'deposit' THEN ev.stream_id = 'account-' || a.id
                             AND (ev.data->>'amount')::bigint = a.amount AND ev.pos = a.pos
            WHEN 'restock' THEN ev.stream_id = 'stock-' || a.id
                             AND (ev.data->>'quantity')::bigint = a.amount AND ev.pos = a.pos
            WHEN 'order' THEN ev.stream_id = 'order-' || a.id
                             AND (ev.data->>'total')::bigint = a.amount AND ev.pos = a.pos
            WHEN 'cancel' THEN ev.stream_id = 'order-' || a.id END) AS n_match,
       (SELECT count(*) FROM es_events e
         WHERE a.kind = 'cancel' AND e.stream_id = 'order-' || a.id
           AND e.type = 'OrderCancelled') AS n_cancelled,
       (SELECT count(*) FROM acks b WHERE b.key = a.key) AS n_answers
  FROM acks a,
       LATERAL (SELECT CASE a.kind WHEN 'user' THEN 'UserRegistered'
                                   WHEN 'deposit' THEN 'FundsDeposited'
                                   WHEN 'restock' THEN 'StockRestocked'
                                   WHEN 'order' THEN 'OrderPlaced'
                                   WHEN 'cancel' THEN 'OrderCancelled' END AS main,
                       (a.kind = 'user' AND a.status = 409 AND a.code = 'email_taken')
                       OR (a.kind = 'cancel' AND a.status = 422
                           AND a.code = 'order_not_cancellable') AS business) k;
ALTER TABLE judged ADD COLUMN problem text;
UPDATE judged SET problem = CASE
    WHEN n_answers > 1 THEN 'answered ' || n_answers || ' times'
    WHEN status = 0 THEN NULL
    WHEN status BETWEEN 200 AND 299 THEN CASE
        WHEN n_main = 0 THEN 'acknowledged (' || status || ') but no ' || main || ' in the store'
        WHEN n_main > 1 THEN main || ' stored ' || n_main || ' times'
        WHEN n_match = 0 THEN main || ' differs from the answer (id, amount or position)'
        WHEN n_all <> CASE kind WHEN 'user' THEN 2 ELSE 1 END
            THEN n_all || ' events written by the command'
        WHEN kind = 'cancel' AND n_cancelled <> 1
            THEN 'order cancelled ' || n_cancelled || ' times' END
    WHEN business THEN CASE
        WHEN n_all > 0 THEN 'refused (' || code || ') but ' || n_all || ' events written'
        WHEN kind = 'cancel' AND n_cancelled > 0 THEN 'refused (' || code || ') but the order was cancelled' END
    ELSE 'unexpected answer ' || status || ' ' || coalesce(code, '') END;
-- figures per kind: acknowledged (2xx), refused by a business rule, other
-- answers, unanswered (and of those, how many took effect), violations,
-- sent more than once, answered as a repeat (a replayed answer, or 200
-- where the first run would have said 201: the answer had been lost)
SELECT 'KIND', kind,
       count(*) FILTER (WHERE status BETWEEN 200 AND 299),
       count(*) FILTER (WHERE business),
       count(*) FILTER (WHERE status >= 300 AND NOT business),
       count(*) FILTER (WHERE status = 0),
       count(*) FILTER (WHERE status = 0 AND n_main > 0),
       count(*) FILTER (WHERE problem IS NOT NULL),
       count(*) FILTER (WHERE attempts > 1),
       count(*) FILTER (WHERE replayed OR (status = 200 AND kind <> 'cancel'))
  FROM judged GROUP BY kind ORDER BY kind;
-- effects in the store of commands the load never answered or never sent
SELECT 'ORPHAN', count(DISTINCT ev.key), coalesce(min(ev.key), '-')
  FROM ev LEFT JOIN acks a ON a.key = ev.key WHERE a.key IS NULL;
SELECT 'PROBLEM', kind, key, problem FROM judged WHERE problem IS NOT NULL
 ORDER BY kind, key LIMIT 20;
SQL
)
check1_ok=1
printf '%s\n' "$acked_sql" >"$logs/acked-check.sql"
if ! psql_q -F $'\t' -f "$logs/acked-check.sql" <"$logs/acks.tsv" >"$logs/acked-check.txt" 2>&1; then
    say "the check of the acknowledged commands failed to run:"
    sed 's/^/    /' "$logs/acked-check.txt"
    check1_ok=0
fi
violations=0 answered=0 orphans=0
while IFS=$'\t' read -r tag a b c d e f g h j; do
    case $tag in
        KIND)
            printf '    %-8s acknowledged %6d  refused %5d  other %3d  unanswered %3d (%d took effect)  sent again %3d  repeats %3d  violations %d\n' \
                "$a" "$b" "$c" "$d" "$e" "$f" "$h" "$j" "$g"
            violations=$((violations + g + d))
            answered=$((answered + b + c + d)) ;;
        ORPHAN)
            orphans=$a
            ((a == 0)) || echo "    $a command(s) took effect without being sent or answered (e.g. $b)" ;;
        PROBLEM)
            echo "    violation: $a $b: $c" ;;
    esac
done <"$logs/acked-check.txt"
((violations == 0 && orphans == 0)) || check1_ok=0

# ---- invariant 2: esctl verify --------------------------------------------------------

say "esctl verify --settled --wait 120"
verify_rc=0
(run_as esctl "$build/esctl" verify --settled --wait 120 --json) >"$logs/verify.json" 2>"$logs/verify.err" || verify_rc=$?
(run_as esctl "$build/esctl" verify --settled) >"$logs/verify.txt" 2>&1 || true
sed 's/^/    /' "$logs/verify.txt"
verify_lines=$("$build/chaos_load" checks <"$logs/verify.json" 2>>"$logs/verify.err" || true)
supervise       # a daemon that died during the checks counts too

# ---- summary ------------------------------------------------------------------------------

fail=0
verdict() {     # verdict OK NAME FIGURES
    if (($1)); then printf 'chaos: PASS  %-28s %s\n' "$2" "$3"; else printf 'chaos: FAIL  %-28s %s\n' "$2" "$3"; fail=1; fi
}
kill_figures="" total_kills=0 every=1
for t in "${targets[@]}"; do
    kill_figures+="$t ${kills[$t]}, "
    total_kills=$((total_kills + kills[$t]))
    ((kills[$t] > 0)) || every=0
done
exit_figures=""
for t in "${targets[@]}"; do ((exits[$t] == 0)) || exit_figures+=" $t ${exits[$t]}"; done

echo "chaos: ==== summary: seed $seed, $secs s of chaos, $(elapsed) s in all; logs in ${logs#"$root"/}"
echo "chaos: kills: ${kill_figures%, } (total $total_kills); died on their own:${exit_figures:- none}"
echo "chaos: load: $(field sent) commands sent, $(field acked) acknowledged, $(field retried) sent more than once, $(field unacked) unanswered"
verdict "$every" "every target killed" "${kill_figures%, }"
verdict "$up_ok" "all up after the chaos" "servers and daemons running and ready"
crash_text=${crashes# }
verdict "$([[ -z $crashes ]] && echo 1 || echo 0)" "no daemon crashed" "${crash_text:-none died of a signal it was not sent}"
verdict "$([[ $load_rc == 0 && $(field unacked) == 0 && $(field unexpected) == 0 ]] && echo 1 || echo 0)" \
    "every command answered" "unanswered $(field unacked), unexpected answers $(field unexpected), load exit $load_rc"
verdict "$check1_ok" "acknowledged exactly once" "$answered answers checked against the store, $violations violations, $orphans effects of unknown commands"
if [[ -n $verify_lines ]]; then
    while IFS=$'\t' read -r name result figures message; do
        verdict "$([[ $result == PASS ]] && echo 1 || echo 0)" "verify: $name" "$figures${message:+ ($message)}"
    done <<<"$verify_lines"
fi
verdict "$([[ $verify_rc == 0 ]] && echo 1 || echo 0)" "esctl verify" "exit $verify_rc$([[ -s $logs/verify.err ]] && echo ": $(head -c 300 "$logs/verify.err" | tr '\n' ' ')")"
if ((fail)); then
    echo "chaos: FAIL (evidence in ${logs#"$root"/})"
    exit 1
fi
echo "chaos: PASS"
