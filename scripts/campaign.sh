# shellcheck shell=bash disable=SC2154
# (SC2154: campaign, build, root, seed, secs, rate, conns, settle and drain
# are set by the script that sources this file.)
# campaign.sh - the private system of the two single-node campaigns,
# sourced by scripts/chaos.sh (`make chaos`: kill -9 of every daemon and
# server) and scripts/abuse.sh (`make abuse`: hostile clients).  Both run
# a private system (its own PostgreSQL, Redis and NATS under
# .run/<campaign>, a fresh database es_<campaign>, its own stream and
# subjects) under the steady command load of tests/chaos_load.c, then
# bring it back to rest and check the invariants; the load and the
# invariants are scripts/campaign_checks.sh's, shared with the cluster
# campaign (scripts/chaos_cluster.sh).
#
# Before sourcing, the caller sets: campaign (its name: chaos or abuse),
# build (the build folder), root (the repository), seed, secs, rate, conns,
# settle and drain.  Sourcing starts the lock, the logs and the cleanup
# trap; then the caller runs campaign_start, its own disturbance,
# campaign_recover, campaign_stop_load, campaign_settle,
# campaign_check_acks, campaign_verify and campaign_verdicts.
#
# The two campaigns use the same ports (CHAOS_PG_PORT, CHAOS_REDIS_PORT,
# CHAOS_NATS_PORT, CHAOS_NATS_HTTP_PORT: 15532, 16479, 14322, 18322;
# CHAOS_PORT_BASE 18680, five daemon ports from there) and so run one at a
# time (one lock for the tree, .run/.campaign.lock).

for bin in es-command es-relay es-projector es-query es-saga esctl chaos_load; do
    [[ -x $build/$bin ]] || { echo "$campaign: $build/$bin is missing; run make all" >&2; exit 2; }
done

# ---- the private system ----------------------------------------------------

export ES_RUN_DIR=$root/.run/$campaign
export ES_PG_PORT=${CHAOS_PG_PORT:-15532}
export ES_REDIS_PORT=${CHAOS_REDIS_PORT:-16479}
export ES_NATS_PORT=${CHAOS_NATS_PORT:-14322}
export ES_NATS_HTTP_PORT=${CHAOS_NATS_HTTP_PORT:-18322}
port_base=${CHAOS_PORT_BASE:-18680}
eval "$(scripts/servers.sh env)"
export ES_PG_CONNINFO="host=$ES_PG_HOST port=$ES_PG_PORT user=$ES_PG_USER dbname=es_$campaign"
# Each daemon and esctl run with their own credentials, as under `make up`;
# the campaign's own checks (psql, the load) use the administrator's.
declare -A ident=()
for who in command relay projector query saga esctl; do
    ident[$who]="$(scripts/servers.sh env "$who")
export ES_PG_CONNINFO=\"\${ES_PG_CONNINFO/dbname=es/dbname=es_$campaign}\""
done
# run_as NAME CMD...: becomes CMD with NAME's credentials.  Call it in a
# subshell: ( run_as ... ), or with & (then $! is CMD's own PID).
run_as() { eval "${ident[$1]}"; shift; exec "$@"; }
export ES_REDIS_DB=0
export ES_RELAY_STREAM=${campaign^^} ES_RELAY_SUBJECT_PREFIX=$campaign.events
export ES_RELAY_WAKE_SUBJECT=$campaign.wake ES_COMMAND_SUBJECT_PREFIX=$campaign.cmd
export ES_COMMAND_PORT=$port_base ES_QUERY_PORT=$((port_base + 1))
export ES_RELAY_PORT=$((port_base + 2)) ES_PROJECTOR_PORT=$((port_base + 3))
export ES_SAGA_PORT=$((port_base + 4))
export ES_GATEWAY_NOTIFICATION_TRANSPORT=null ES_GATEWAY_EMAIL_TRANSPORT=null
export ES_MIGRATIONS_DIR=$root/migrations
# Nothing injected: the only faults are the campaign's.
unset ES_SAGA_INJECT_FAILURE ES_SAGA_INJECT_TIMEOUT ES_PROJECTIONS ES_COMMAND_CONTEXTS

pgbin=/usr/lib/postgresql/15/bin
logs=$ES_RUN_DIR/logs
# One campaign at a time (they share the ports).  Long-lived children do
# not inherit the lock's descriptor (8>&- on each), so it ends with us.
mkdir -p "$ES_RUN_DIR/pids"
exec 8>"$root/.run/.campaign.lock"
if command -v flock >/dev/null && ! flock -n 8; then
    echo "$campaign: another campaign (make chaos or make abuse) is running in this tree" >&2
    exit 2
fi
rm -rf "$logs"
mkdir -p "$logs"
# The load, the helpers (say, now_ms, alive, ...) and the invariants.
# shellcheck source=scripts/campaign_checks.sh
. "$root/scripts/campaign_checks.sh"

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

# start_daemon NAME: runs it in the background (appending to its log) and
# waits up to 15 s for /healthz.  While a server is down some daemons do
# not listen before they reach it: then it waits 2 s only and goes on (the
# daemon stays; readiness is checked once the disturbance is over).
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

# ---- cleanup --------------------------------------------------------------------

# helpers: PIDs of the caller's own background programs, stopped (TERM)
# at the end with the load.
helpers=()
cleanup() {
    local rc=$? h
    trap - EXIT INT TERM HUP
    for h in "${helpers[@]}"; do
        alive "$h" && kill -TERM "$h" 2>/dev/null || true
        wait "$h" 2>/dev/null || true
    done
    if [[ -n $load_pid ]] && alive "$load_pid"; then
        kill -TERM "$load_pid" 2>/dev/null || true
        sleep 0.2
        kill -TERM "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    stop_daemons
    scripts/servers.sh stop >>"$logs/servers.log" 2>&1 8>&- || echo "$campaign: stopping the servers failed; see $logs/servers.log" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "$campaign: interrupted" >&2; exit 130' INT TERM HUP

# ---- set up ---------------------------------------------------------------------

# campaign_start: servers and daemons up on a fresh database, an admin
# token for the load in ES_TOKEN, and the load started (load_pid).
campaign_start() {
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
        -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS es_$campaign WITH (FORCE)" \
        -c "CREATE DATABASE es_$campaign" >/dev/null
    "$build/esctl" migrate >>"$logs/migrate.log" 2>&1 || { say "esctl migrate failed"; cat "$logs/migrate.log"; exit 1; }
    # Access control stays on: the load sends an admin token made for this run.
    ES_TOKEN=$("$build/esctl" token create "$campaign-$(date +%s%N)" --scope admin 2>>"$logs/migrate.log") ||
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
    campaign_start_load "$ES_COMMAND_PORT"
    remember load "$load_pid"
}

# ---- back to normal -------------------------------------------------------------------

# campaign_recover WHAT: every server running, every daemon ready (up_ok),
# after WHAT (for the messages).
campaign_recover() {
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
        ((ready)) || { up_ok=0; say "$d is not ready 60 s after the $1"; }
    done
    ((up_ok)) && say "every server and daemon is running and ready"
    return 0
}

