#!/usr/bin/env bash
# cluster.sh - the highly available topology on one machine, loopback only,
# every engine from Debian's packages, every process started here and
# stopped here by PID (docs/OPERATIONS.md, "Running highly available"):
#
#   etcd          one member (Patroni's store; one machine, so one member:
#                 a real deployment runs three on three hosts)
#   PostgreSQL 15 two nodes managed by Patroni, synchronous_mode (an
#                 acknowledged commit is on both nodes while both are up)
#   HAProxy       the primary (Patroni's REST /primary decides), a read
#                 port on the replica (/replica), and es-command / es-query
#   NATS          three servers in one cluster, JetStream; EVENTS made R3
#   Redis         a primary, a replica and three Sentinels (quorum 2)
#   daemons       two of each: es-command, es-query (behind HAProxy),
#                 es-relay (one active by the store's lock, one standing
#                 by), es-projector, es-saga
#
# Usage: scripts/cluster.sh up|down|status|env [COMPONENT]|ports [BUILD_DIR]
#   up      start everything not running, migrate, mint the admin token,
#           run scripts/demo.sh through HAProxy and print where things are
#   down    stop everything by PID; fails if any process is left
#   env     `export` lines pointing a program (default: the administrator,
#           as for esctl) at the cluster: eval "$(scripts/cluster.sh env)"
#   start NAME...  start those processes if they are not running (pg1,
#           nats2, redis1, sentinel3, haproxy, command1, saga2, ...) and
#           wait for them as `up` does; no migration, no demo (the cluster
#           fault campaign, scripts/chaos_cluster.sh, brings back what it
#           killed with it)
#
# CLUSTER_VIA ("pg1:PORT nats1:PORT", empty by default): the others reach
# that node through PORT instead (HAProxy for a PostgreSQL node, the
# clients' server list for a NATS node): where the cluster campaign puts
# its delaying proxy.
#
# Settings: CLUSTER_PORT_BASE (17400; the cluster takes BASE..BASE+59),
# CLUSTER_DIR (<repo>/.run/cluster), ES_WAIT_SECS (60).  Credentials are
# those of scripts/servers.sh, in $CLUSTER_DIR/credentials, plus the
# cluster's own (replication, Patroni REST, Sentinel, NATS routes) in
# $CLUSTER_DIR/cluster.credentials; both 0600.
set -euo pipefail
shopt -s inherit_errexit

# The servers started here must not inherit the caller's settings for
# libpq, Patroni or etcd: a Patroni, and so its PostgreSQL, started from a
# shell that ran `eval "$(scripts/cluster.sh env)"` (as the fault campaign
# does before it brings a killed node back) would carry the administrator's
# PGPASSWORD, and libpq prefers PGPASSWORD to the passfile that Patroni
# names in primary_conninfo: the node's walreceiver then logs in as
# replicator with the administrator's password, is refused, and the node
# never streams again (pg_rewind still works: its user's password is that
# one).  Every password a command here needs, it is given explicitly.
while read -r v; do
    [[ $v == PG* || $v == PATRONI_* || $v == ETCD_* ]] && unset "$v"
done < <(compgen -e)

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_DIR=$(dirname -- "$SCRIPT_DIR")
cd "$REPO_DIR"

CL=${CLUSTER_DIR:-$REPO_DIR/.run/cluster}
[[ $CL == /* ]] || CL=$REPO_DIR/$CL
BASE=${CLUSTER_PORT_BASE:-17400}
WAIT=${ES_WAIT_SECS:-60}
[[ $BASE =~ ^[0-9]+$ ]] && ((BASE > 0 && BASE < 65476)) ||
    { echo "cluster: CLUSTER_PORT_BASE must be a port number, got '$BASE'" >&2; exit 2; }
HOST=127.0.0.1
PG_BIN=/usr/lib/postgresql/15/bin
PIDS=$CL/pids
MASTER_NAME=es

# ---- ports (BASE + offset) ------------------------------------------------
ETCD_PORT=$((BASE + 0)); ETCD_PEER=$((BASE + 1))
PG_PORT=($((BASE + 10)) $((BASE + 11)))          # PostgreSQL nodes pg1 pg2
REST_PORT=($((BASE + 12)) $((BASE + 13)))        # their Patroni REST APIs
HA_PG=$((BASE + 20))          # HAProxy: the primary
HA_PG_RO=$((BASE + 21))       # HAProxy: the replica (reads)
HA_COMMAND=$((BASE + 22))     # HAProxy: es-command
HA_QUERY=$((BASE + 23))       # HAProxy: es-query
HA_STATS=$((BASE + 24))       # HAProxy: its statistics page
NATS_PORT=($((BASE + 30)) $((BASE + 31)) $((BASE + 32)))
NATS_ROUTE=($((BASE + 33)) $((BASE + 34)) $((BASE + 35)))
NATS_HTTP=($((BASE + 36)) $((BASE + 37)) $((BASE + 38)))
REDIS_PORT=($((BASE + 40)) $((BASE + 41)))       # redis1 starts as primary
SENTINEL_PORT=($((BASE + 42)) $((BASE + 43)) $((BASE + 44)))
# two instances of each daemon: name, binary, port variable, first port
DAEMONS=(
    "command es-command ES_COMMAND_PORT $((BASE + 50))"
    "query es-query ES_QUERY_PORT $((BASE + 52))"
    "relay es-relay ES_RELAY_PORT $((BASE + 54))"
    "projector es-projector ES_PROJECTOR_PORT $((BASE + 56))"
    "saga es-saga ES_SAGA_PORT $((BASE + 58))"
)

log() { echo "cluster: $*"; }
err() { echo "cluster: $*" >&2; }
die() { err "error: $*"; exit 1; }

# via NAME PORT: the port others reach node NAME at (CLUSTER_VIA).
via() {
    local w
    for w in ${CLUSTER_VIA:-}; do
        [[ ${w%%:*} == "$1" ]] && { echo "${w#*:}"; return; }
    done
    echo "$2"
}

# ---- processes --------------------------------------------------------------

read_pid() { local p=""; [[ -f $1 ]] && read -r p <"$1" 2>/dev/null; echo "${p:-}"; }

# alive PID COMM: the process lives, is no zombie, and is named COMM*.
alive() {
    local pid=$1 comm stat
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ -z ${2:-} || $comm == "$2"* ]]
}

# One pid file per process we start: $PIDS/NAME.pid holds "PID COMM".
record() { echo "$2 $3" >"$PIDS/$1.pid"; }
running() {
    local pid comm
    [[ -f $PIDS/$1.pid ]] || return 1
    read -r pid comm <"$PIDS/$1.pid" || return 1
    alive "$pid" "$comm"
}
pid_of() { local pid comm; read -r pid comm <"$PIDS/$1.pid"; echo "$pid"; }

# stop_pid NAME: SIGTERM, wait (up to $2 s, default 15), then SIGKILL.
stop_pid() {
    local name=$1 secs=${2:-15} pid comm i
    [[ -f $PIDS/$name.pid ]] || return 0
    read -r pid comm <"$PIDS/$name.pid" || true
    if alive "$pid" "$comm"; then
        log "$name: stopping (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < secs * 10; i++)); do
            alive "$pid" "$comm" || break
            sleep 0.1
        done
        if alive "$pid" "$comm"; then
            err "$name (pid $pid) did not stop in $secs s; SIGKILL"
            kill -9 "$pid" 2>/dev/null || true
            sleep 0.3
        fi
    fi
    alive "$pid" "$comm" && { err "$name (pid $pid) is still alive"; return 1; }
    rm -f -- "$PIDS/$name.pid"
}

# spawn NAME COMM LOG CMD...: runs CMD in its own session, detached,
# and records its PID (the exec'd program's: setsid does not fork here).
spawn() {
    local name=$1 comm=$2 logf=$3 pid i
    shift 3
    setsid "$@" </dev/null >>"$logf" 2>&1 8>&- 9>&- &
    pid=$!
    record "$name" "$pid" "$comm"
    # until the program is exec'd (setsid, setpriv first bear their own
    # names), `running NAME` says no: a check in that window took a
    # Patroni just started for one that had died, and started another
    for ((i = 0; i < 50; i++)); do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm"* ]] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
}

# wait_for WHAT NAME CMD...: until CMD succeeds; fails early when process
# NAME (if given) died, showing the end of its log.
wait_for() {
    local what=$1 name=$2 i
    shift 2
    for ((i = 0; i < WAIT * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        # (existence only: a process just spawned may not have exec'd its
        # program yet, and then bears another name)
        if [[ -n $name ]] && ! alive "$(pid_of "$name" 2>/dev/null)"; then
            err "$name died while waiting for $what"
            tail -n 25 "$CL/log/$name.log" >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.2
    done
    err "timed out after $WAIT s waiting for $what"
    [[ -z $name ]] || tail -n 25 "$CL/log/$name.log" >&2 2>/dev/null || true
    return 1
}

# ---- credentials ------------------------------------------------------------

cred() { sed -n "s/^$1=//p" -- "$2" | tail -n 1; }
new_password() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }

creds() {
    local u f=$CL/cluster.credentials
    mkdir -p -- "$CL"
    ES_RUN_DIR=$CL scripts/servers.sh env >/dev/null   # writes $CL/credentials
    (umask 077 && touch "$f")
    for u in replicator patroni sentinel nats_route; do
        grep -q "^$u=" "$f" || echo "$u=$(new_password)" >>"$f"
    done
    chmod 600 "$f"
}
admin_pw() { cred es_admin "$CL/credentials"; }
cl_pw() { cred "$1" "$CL/cluster.credentials"; }

# print_env [COMPONENT]: scripts/servers.sh's lines for that identity, with
# the cluster's addresses: PostgreSQL through HAProxy, NATS's server list,
# Redis through the Sentinels.
print_env() {
    local who=${1:-admin} user pw urls="" p s="" n""
    case $who in
        admin) user=es_admin ;;
        esctl) user=esctl ;;
        *) user=es_$who ;;
    esac
    ES_RUN_DIR=$CL ES_PG_PORT=$HA_PG ES_NATS_HTTP_PORT=${NATS_HTTP[0]} \
        scripts/servers.sh env "${1:-}"
    pw=$(cred "$user" "$CL/credentials")
    for n in 0 1 2; do
        p=$(via "nats$((n + 1))" "${NATS_PORT[$n]}")
        urls+="${urls:+,}nats://$user:$pw@$HOST:$p"
    done
    for p in "${SENTINEL_PORT[@]}"; do s+="${s:+,}$HOST:$p"; done
    echo "export ES_NATS_URL=\"$urls\""
    echo "export ES_NATS_REPLICAS=3"
    echo "export ES_REDIS_SENTINELS=\"$s\""
    echo "export ES_REDIS_MASTER_NAME=$MASTER_NAME"
    echo "export ES_REDIS_SENTINEL_PASSWORD=$(cl_pw sentinel)"
    echo "export ES_PG_REPLICA_PORT=$HA_PG_RO"
    echo "export ES_COMMAND_PORT=$HA_COMMAND ES_QUERY_PORT=$HA_QUERY"
    # A daemon gives up a PostgreSQL session that stopped answering after
    # ES_PG_ANSWER_TIMEOUT_MS (35 s by default): a statement sent to the
    # primary as it died would hold its connection that long, longer than
    # the failover itself, so the cluster's daemons wait 12 s.  A connect
    # is given 10 s, not 2 s: after a failover every daemon thread
    # reconnects at once, and on a busy host the new primary reached a
    # queued connection after more than 2 s, when its client had given
    # up and queued another; its accept queue stayed full for minutes
    # with clients no longer there (docs/OPERATIONS.md, "Fault campaign
    # on the cluster").  While no node is primary HAProxy closes a
    # connection itself after its own 2 s (timeout connect/queue).
    # es-query reads the Redis replica while it has what consistent_with asks
    [[ $who == query ]] && echo "export ES_QUERY_READ_REPLICA=1"
    case $who in
        admin | esctl) ;;
        *) echo "export ES_PG_STATEMENT_TIMEOUT_MS=10000 ES_PG_ANSWER_TIMEOUT_MS=12000 ES_PG_TCP_USER_TIMEOUT_MS=10000 ES_PG_CONNECT_TIMEOUT_S=10" ;;
    esac
}

# ---- etcd ---------------------------------------------------------------------

etcd_up() {
    mkdir -p -- "$CL/etcd"
    if ! running etcd; then
        log "etcd: starting on $HOST:$ETCD_PORT (one member)"
        spawn etcd etcd "$CL/log/etcd.log" etcd --name e1 --data-dir "$CL/etcd" \
            --listen-client-urls "http://$HOST:$ETCD_PORT" \
            --advertise-client-urls "http://$HOST:$ETCD_PORT" \
            --listen-peer-urls "http://$HOST:$ETCD_PEER" \
            --initial-advertise-peer-urls "http://$HOST:$ETCD_PEER" \
            --initial-cluster "e1=http://$HOST:$ETCD_PEER" \
            --initial-cluster-token es-cluster --listen-metrics-urls "" --enable-v2
    fi
    wait_for "etcd's health" etcd curl -sf -m 1 "http://$HOST:$ETCD_PORT/health"
    log "etcd: ready (pid $(pid_of etcd))"
}

# ---- PostgreSQL under Patroni -------------------------------------------------

patroni_conf() {   # patroni_conf N (0 or 1)
    local n=$1 dir=$CL/pg$(($1 + 1))
    cat <<EOF
# Written by scripts/cluster.sh at every start; edits here are lost.
scope: es
namespace: /es-cluster/
name: pg$((n + 1))
log:
  level: INFO
restapi:
  listen: $HOST:${REST_PORT[$n]}
  connect_address: $HOST:${REST_PORT[$n]}
  authentication:
    username: patroni
    password: $(cl_pw patroni)
# etcd's v2 protocol, not v3: Patroni 3.0.2 (Debian 12's) renews its
# leader key over v3 with a put that compares nothing, so a primary paused
# past the key's ttl took the key back from the standby just promoted,
# which then demoted itself and rewound away what it had acknowledged
# (make cluster-test, "a deposed primary cannot write").  Over v2 the
# renewal compares the key's value with its own name: a deposed leader's
# fails and it demotes itself.
etcd:
  hosts: $HOST:$ETCD_PORT
bootstrap:
  dcs:
    # the leader key lives ttl seconds: a dead primary is replaced in
    # about ttl + loop_wait (loop_wait + 2 * retry_timeout <= ttl)
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_level: replica
        hot_standby: "on"
        wal_log_hints: "on"
        max_wal_senders: 10
        max_replication_slots: 10
        # every thread of the ten daemons keeps its own session: about
        # 280 once all have reconnected after a failover; at 300 the
        # rejoining node's pg_rewind was refused ("too many clients")
        max_connections: 500
        password_encryption: scram-sha-256
  initdb:
    - encoding: UTF8
    - locale: C.UTF-8
    - data-checksums
postgresql:
  listen: $HOST:${PG_PORT[$n]}
  connect_address: $HOST:${PG_PORT[$n]}
  data_dir: $dir/data
  bin_dir: $PG_BIN
  pgpass: $dir/pgpass
  # A pg_rewind that fails while the new primary answers (it was once
  # refused a connection slot) is not tried again by Patroni 3.0: the
  # node would stay a replica that cannot stream.  Instead its data is
  # removed and it is cloned again (pg_basebackup, a walsender slot).
  remove_data_directory_on_rewind_failure: true
  authentication:
    superuser:
      username: postgres
      password: $(admin_pw)
    replication:
      username: replicator
      password: $(cl_pw replicator)
    rewind:
      username: postgres
      password: $(admin_pw)
  parameters:
    unix_socket_directories: $dir/sock
    unix_socket_permissions: "0700"
    shared_buffers: 128MB
    logging_collector: "off"
  pg_hba:
    - local all postgres peer
    - host replication replicator $HOST/32 scram-sha-256
    - host all all $HOST/32 scram-sha-256
EOF
}

rest() { curl -s -o /dev/null -w '%{http_code}' -m 1 "http://$HOST:$1$2"; }
rest_is() { [[ $(rest "$1" "$2") == 200 ]]; }
any_primary() { rest_is "${REST_PORT[0]}" /primary || rest_is "${REST_PORT[1]}" /primary; }

patroni_up() {
    local n=$1 name=pg$(($1 + 1)) dir=$CL/pg$(($1 + 1))
    mkdir -p -- "$dir/sock"
    chmod 700 "$dir"
    (umask 077 && patroni_conf "$n" >"$dir/patroni.yml")
    local as=()
    if [[ $(id -u) -eq 0 ]]; then
        # PostgreSQL refuses root: Patroni and its server run as postgres
        chown -R postgres:postgres "$dir"
        touch "$CL/log/$name.log"
        chown postgres "$CL/log/$name.log"
        as=(setpriv --reuid=postgres --regid=postgres --init-groups)
    fi
    if ! running "$name"; then
        log "$name: starting Patroni (PostgreSQL on $HOST:${PG_PORT[$n]}, REST ${REST_PORT[$n]})"
        HOME=$( (($(id -u) == 0)) && echo /var/lib/postgresql || echo "$HOME") \
            spawn "$name" patroni "$CL/log/$name.log" "${as[@]}" /usr/bin/patroni "$dir/patroni.yml"
    fi
}

pg_up() {
    local other
    # Both at once: on the first start one bootstraps (initdb) and leads,
    # the other clones it with pg_basebackup; on a later start the node
    # that led last (or is the most advanced) leads again, and the other
    # waits for it, so neither can be waited for alone.
    patroni_up 0
    patroni_up 1
    wait_for "a PostgreSQL primary (Patroni /primary)" pg1 any_primary
    other=1
    rest_is "${REST_PORT[1]}" /primary && other=0
    # A node that rejoins after a failover (pg_rewind, then catching up)
    # may take longer: the cluster serves meanwhile, on one node.
    if wait_for "pg$((other + 1)) as the synchronous standby (Patroni /sync)" "" \
        rest_is "${REST_PORT[$other]}" /sync; then
        log "pg: ready: primary pg$((2 - other)), synchronous standby pg$((other + 1))"
    else
        running "pg$((other + 1))" || die "pg$((other + 1)): Patroni died; see $CL/log/pg$((other + 1)).log"
        err "warning: pg$((other + 1)) is not the synchronous standby yet (still catching up?);" \
            "until it is, an acknowledged append is on the primary only"
    fi
}

# ---- HAProxy ------------------------------------------------------------------

haproxy_conf() {
    local i
    cat <<EOF
# Written by scripts/cluster.sh at every start; edits here are lost.
global
    maxconn 4000
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m
    timeout server 30m
    timeout check 2s
    option clitcpka
    option srvtcpka
# PostgreSQL: the node whose Patroni says /primary; a node that stops
# being it is dropped with its sessions, so clients reconnect to the new one.
# A server marked down is checked every 250 ms (downinter), so a promoted
# standby or a daemon ready again takes traffic within a quarter second
listen pg_primary
    bind $HOST:$HA_PG
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 1s downinter 250ms fall 2 rise 1 on-marked-down shutdown-sessions
    server pg1 $HOST:$(via pg1 "${PG_PORT[0]}") check port ${REST_PORT[0]}
    server pg2 $HOST:$(via pg2 "${PG_PORT[1]}") check port ${REST_PORT[1]}
listen pg_replica
    bind $HOST:$HA_PG_RO
    option httpchk GET /replica
    http-check expect status 200
    default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions
    server pg1 $HOST:$(via pg1 "${PG_PORT[0]}") check port ${REST_PORT[0]}
    server pg2 $HOST:$(via pg2 "${PG_PORT[1]}") check port ${REST_PORT[1]}
EOF
    for svc in command query; do
        local port=$HA_COMMAND first
        [[ $svc == query ]] && port=$HA_QUERY
        first=$(printf '%s\n' "${DAEMONS[@]}" | awk -v s="$svc" '$1 == s { print $4 }')
        cat <<EOF
listen es_$svc
    mode http
    bind $HOST:$port
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    timeout client 10m
    timeout server 10m
    default-server inter 1s downinter 250ms fall 2 rise 1
EOF
        for i in 0 1; do
            echo "    server ${svc}$((i + 1)) $HOST:$((first + i)) check"
        done
    done
    cat <<EOF
listen stats
    mode http
    bind $HOST:$HA_STATS
    stats enable
    stats uri /
EOF
}

haproxy_up() {
    haproxy_conf >"$CL/haproxy.cfg"
    haproxy -c -q -f "$CL/haproxy.cfg" || die "haproxy: invalid $CL/haproxy.cfg"
    if ! running haproxy; then
        log "haproxy: starting (primary $HA_PG, replica $HA_PG_RO, command $HA_COMMAND, query $HA_QUERY)"
        spawn haproxy haproxy "$CL/log/haproxy.log" haproxy -db -f "$CL/haproxy.cfg"
    fi
    wait_for "PostgreSQL through HAProxy" haproxy \
        env PGPASSWORD="$(admin_pw)" "$PG_BIN/pg_isready" -q -h "$HOST" -p "$HA_PG" -U postgres -t 1
    # a new HAProxy takes every server for up until its checks say
    # otherwise: a session it sends to the standby meanwhile is cut when
    # the standby is marked down (the schema's psql was, once)
    wait_for "HAProxy's first checks of the primary" haproxy ha_primary_checked
    log "haproxy: ready (pid $(pid_of haproxy))"
}

# Whether HAProxy's primary port sends only to servers whose last check
# passed (its statistics: status UP, check_status L7OK), and to one at
# least.
ha_primary_checked() {
    local csv
    csv=$(curl -sf -m 1 "http://$HOST:$HA_STATS/;csv") || return 1
    awk -F, '$1 == "pg_primary" && $2 != "FRONTEND" && $2 != "BACKEND" && $18 ~ /^UP/ {
                 up++; if ($37 != "L7OK") unchecked++ }
             END { exit !(up >= 1 && unchecked == 0) }' <<<"$csv"
}

# The roles, the database and the migrations, on the primary through HAProxy.
pg_schema() {
    local psql=(env PGPASSWORD="$(admin_pw)" "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1
                -h "$HOST" -p "$HA_PG" -U postgres -tA)
    ES_RUN_DIR=$CL scripts/servers.sh conf pg-roles | "${psql[@]}" -d postgres >/dev/null
    if [[ $("${psql[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'es'") != 1 ]]; then
        log "pg: creating database es"
        "${psql[@]}" -d postgres -c "CREATE DATABASE es"
    fi
    (eval "$(print_env)" && "$BUILD/esctl" migrate)
}

# ---- NATS ---------------------------------------------------------------------

nats_conf() {   # nats_conf N
    local n=$1 i routes=""
    for i in 0 1 2; do
        ((i == n)) || routes+="${routes:+, }\"nats://route:$(cl_pw nats_route)@$HOST:${NATS_ROUTE[$i]}\""
    done
    ES_RUN_DIR=$CL scripts/servers.sh conf nats-auth
    cat <<EOF
server_name: n$((n + 1))
listen: $HOST:${NATS_PORT[$n]}
http: $HOST:${NATS_HTTP[$n]}
jetstream {
  store_dir: "$CL/nats$((n + 1))"
}
cluster {
  name: es
  listen: $HOST:${NATS_ROUTE[$n]}
  authorization { user: route, password: "$(cl_pw nats_route)" }
  routes: [$routes]
}
EOF
}

js_leader() { curl -sf -m 1 "http://$HOST:${NATS_HTTP[0]}/jsz" | grep -q '"leader": *"n'; }

nats_up() {
    local n
    for n in 0 1 2; do
        mkdir -p -- "$CL/nats$((n + 1))"
        (umask 077 && nats_conf "$n" >"$CL/nats$((n + 1)).conf")
        if ! running "nats$((n + 1))"; then
            log "nats$((n + 1)): starting on $HOST:${NATS_PORT[$n]} (routes ${NATS_ROUTE[$n]}, monitoring ${NATS_HTTP[$n]})"
            spawn "nats$((n + 1))" nats-server "$CL/log/nats$((n + 1)).log" \
                nats-server -c "$CL/nats$((n + 1)).conf"
        fi
    done
    # healthy = routed, JetStream up and a meta leader elected
    for n in 0 1 2; do
        wait_for "nats$((n + 1)) healthy" "nats$((n + 1))" \
            curl -sf -m 1 "http://$HOST:${NATS_HTTP[$n]}/healthz"
    done
    wait_for "a JetStream meta leader" "" js_leader
    log "nats: ready (three servers, cluster es)"
}

# ---- Redis and Sentinel -----------------------------------------------------

# The same users as scripts/servers.sh's Redis, each also allowed ROLE (a
# client checks it reached the primary); the servers authenticate to one
# another (replication, Sentinel) as the administrator.
redis_conf() {   # redis_conf N
    local n=$1 dir=$CL/redis$(($1 + 1))
    cat <<EOF
# Written by scripts/cluster.sh at the first start; Sentinel rewrites it
# (replicaof) when it fails over.
bind $HOST
port ${REDIS_PORT[$n]}
protected-mode no
daemonize no
dir "$dir"
appendonly yes
appendfsync everysec
masteruser es_admin
masterauth $(admin_pw)
EOF
    ((n == 0)) || echo "replicaof $HOST ${REDIS_PORT[0]}"
    ES_RUN_DIR=$CL scripts/servers.sh conf redis-acl |
        sed '/^user default /!s/$/ +role/'
}

sentinel_conf() {   # sentinel_conf N
    local n=$1
    cat <<EOF
# Written by scripts/cluster.sh at the first start; Sentinel rewrites it.
bind $HOST
port ${SENTINEL_PORT[$n]}
protected-mode no
daemonize no
dir "$CL/sentinel$((n + 1))"
requirepass $(cl_pw sentinel)
sentinel sentinel-pass $(cl_pw sentinel)
sentinel monitor $MASTER_NAME $HOST ${REDIS_PORT[0]} 2
sentinel auth-user $MASTER_NAME es_admin
sentinel auth-pass $MASTER_NAME $(admin_pw)
sentinel down-after-milliseconds $MASTER_NAME 2000
sentinel failover-timeout $MASTER_NAME 10000
sentinel parallel-syncs $MASTER_NAME 1
EOF
}

rcli() { REDISCLI_AUTH=$(admin_pw) redis-cli --no-auth-warning --user es_admin -h "$HOST" -p "$1" "${@:2}"; }
scli() { REDISCLI_AUTH=$(cl_pw sentinel) redis-cli --no-auth-warning -h "$HOST" -p "$1" "${@:2}"; }
redis_pong() { [[ $(rcli "$1" ping) == PONG ]]; }
sentinel_settled() {
    local o
    o=$(scli "$1" sentinel master "$MASTER_NAME" | tr '\n' ' ')
    [[ $o == *'num-slaves 1 '* && $o == *'num-other-sentinels 2 '* ]]
}

redis_up() {
    local n name
    for n in 0 1; do
        name=redis$((n + 1))
        mkdir -p -- "$CL/$name"
        [[ -s $CL/$name/redis.conf ]] || (umask 077 && redis_conf "$n" >"$CL/$name/redis.conf")
        if ! running "$name"; then
            log "$name: starting on $HOST:${REDIS_PORT[$n]}"
            spawn "$name" redis-server "$CL/log/$name.log" redis-server "$CL/$name/redis.conf"
        fi
        wait_for "$name's PONG" "$name" redis_pong "${REDIS_PORT[$n]}"
    done
    for n in 0 1 2; do
        name=sentinel$((n + 1))
        mkdir -p -- "$CL/$name"
        [[ -s $CL/$name/sentinel.conf ]] || (umask 077 && sentinel_conf "$n" >"$CL/$name/sentinel.conf")
        if ! running "$name"; then
            log "$name: starting on $HOST:${SENTINEL_PORT[$n]}"
            spawn "$name" redis-sentinel "$CL/log/$name.log" redis-sentinel "$CL/$name/sentinel.conf"
        fi
    done
    # each Sentinel knows the primary, its replica and the two others
    for n in 0 1 2; do
        wait_for "sentinel$((n + 1)) to see a replica and two Sentinels" "sentinel$((n + 1))" \
            sentinel_settled "${SENTINEL_PORT[$n]}"
    done
    log "redis: ready: primary $(scli "${SENTINEL_PORT[0]}" sentinel get-master-addr-by-name "$MASTER_NAME" | paste -sd:), one replica, three Sentinels"
}

# ---- daemons ------------------------------------------------------------------

daemons_up() {
    local d name bin var port i inst envs pid
    for d in "${DAEMONS[@]}"; do
        read -r name bin var port <<<"$d"
        envs=$(print_env "$name")
        for i in 0 1; do
            inst=$name$((i + 1))
            if ! running "$inst"; then
                (
                    eval "$envs"
                    export "$var=$((port + i))"
                    exec setsid "$BUILD/$bin" </dev/null >>"$CL/log/$inst.log" 2>&1 8>&- 9>&-
                ) &
                pid=$!
                record "$inst" "$pid" "$bin"
                # the subshell is the daemon once it has exec'd
                for _ in $(seq 1 50); do
                    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$bin"* ]] && break
                    sleep 0.1
                done
            fi
        done
    done
    for d in "${DAEMONS[@]}"; do
        read -r name bin var port <<<"$d"
        for i in 0 1; do
            wait_for "$name$((i + 1)) /healthz on $((port + i))" "$name$((i + 1))" \
                curl -sf -m 1 "http://$HOST:$((port + i))/healthz"
        done
        log "$name: two instances (pids $(pid_of "${name}1") $(pid_of "${name}2"), ports $port $((port + 1)))"
    done
    wait_for "es-command through HAProxy" "" curl -sf -m 1 "http://$HOST:$HA_COMMAND/readyz"
    wait_for "es-query through HAProxy" "" curl -sf -m 1 "http://$HOST:$HA_QUERY/readyz"
}

# ---- the whole ---------------------------------------------------------------

# Every name we may have a pid file for, in the order of stopping.
ALL_NAMES=()
for d in "${DAEMONS[@]}"; do
    read -r name _ <<<"$d"
    ALL_NAMES+=("${name}1" "${name}2")
done
ALL_NAMES+=(haproxy pg2 pg1 etcd sentinel1 sentinel2 sentinel3 redis2 redis1 nats1 nats2 nats3)
STOP_GROUPS=("${ALL_NAMES[*]:0:10}" "haproxy" "pg1 pg2" "etcd sentinel1 sentinel2 sentinel3"
             "redis1 redis2 nats1 nats2 nats3")

up() {
    mkdir -p -- "$CL/log" "$PIDS"
    for b in es-command es-query es-relay es-projector es-saga esctl; do
        [[ -x $BUILD/$b ]] || die "$BUILD/$b is missing; run make all"
    done
    exec 8>"$CL/.lock"
    flock -w 300 8 || die "another cluster.sh holds $CL/.lock"
    creds
    etcd_up
    pg_up
    haproxy_up
    pg_schema
    nats_up
    redis_up
    ES_RUN_DIR=$CL ES_PG_PORT=$HA_PG scripts/admin_token.sh "$BUILD"
    daemons_up
    ES_RUN_DIR=$CL ES_COMMAND_PORT=$HA_COMMAND ES_QUERY_PORT=$HA_QUERY \
        ES_RELAY_PORT=$((BASE + 54)) ES_PROJECTOR_PORT=$((BASE + 56)) ES_SAGA_PORT=$((BASE + 58)) \
        scripts/demo.sh | sed '/^up: everything answers/,$d'
    where
}

where() {
    local rel=${CL#"$REPO_DIR"/}
    cat <<TXT
cluster-up: everything answers (data and logs in $rel, PIDs in $rel/pids).
  command API   http://$HOST:$HA_COMMAND (HAProxy over es-command on $((BASE + 50)) and $((BASE + 51)))
  query API     http://$HOST:$HA_QUERY (HAProxy over es-query on $((BASE + 52)) and $((BASE + 53)))
  token         $rel/admin.token, e.g.
                curl -s -H "Authorization: Bearer \$(cat $rel/admin.token)" http://$HOST:$HA_QUERY/v1/dashboard
  PostgreSQL    primary $HOST:$HA_PG, replica (reads) $HOST:$HA_PG_RO through HAProxy;
                nodes pg1 $HOST:${PG_PORT[0]}, pg2 $HOST:${PG_PORT[1]}; Patroni REST ${REST_PORT[0]}, ${REST_PORT[1]};
                patronictl -c $rel/pg1/patroni.yml list
  etcd          http://$HOST:$ETCD_PORT (one member)
  NATS          ${NATS_PORT[*]} (monitoring ${NATS_HTTP[*]}), stream EVENTS with 3 replicas
  Redis         ${REDIS_PORT[*]}; Sentinels ${SENTINEL_PORT[*]} (master name $MASTER_NAME)
  daemons       relay $((BASE + 54)),$((BASE + 55)); projector $((BASE + 56)),$((BASE + 57)); saga $((BASE + 58)),$((BASE + 59))
  HAProxy stats http://$HOST:$HA_STATS/
  esctl         eval "\$(CLUSTER_PORT_BASE=$BASE scripts/cluster.sh env)"; $BUILD/esctl projection status
  stop          make cluster-down CLUSTER_PORT_BASE=$BASE
TXT
}

# stop_one NAME: by its PID; a Patroni also by its PostgreSQL's, in case
# it left one (Patroni killed: its postmaster runs on).
stop_one() {
    local name=$1 pm
    if [[ $name == pg? ]]; then
        pm=$(head -n 1 "$CL/$name/data/postmaster.pid" 2>/dev/null || true)
        stop_pid "$name" 40 || return 1
        if alive "$pm" postgres; then
            log "$name: stopping its orphaned PostgreSQL (pid $pm)"
            kill -INT "$pm" 2>/dev/null || true
            for _ in $(seq 1 100); do alive "$pm" postgres || break; sleep 0.1; done
            if alive "$pm" postgres; then kill -9 "$pm" 2>/dev/null || true; fi
        fi
    else
        stop_pid "$name"
    fi
}

down() {
    local name rc=0 pid left group
    mkdir -p -- "$PIDS"
    # the daemons at once, then the servers (each group at once)
    for group in "${STOP_GROUPS[@]}"; do
        local pids=()
        for name in $group; do
            stop_one "$name" &
            pids+=($!)
        done
        for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    done
    # ps: nothing that names the cluster's folder may be left
    sleep 0.3
    left=$(ps -eo pid=,args= | grep -F -- "$CL/" || true)
    for pid in $(awk '{ print $1 }' <<<"$left"); do
        alive "$pid" || continue
        err "still running: $(ps -o pid=,args= -p "$pid")"
        rc=1
    done
    ((rc == 0)) && log "down: every process of the cluster has stopped"
    return "$rc"
}

status() {
    local name rc=0
    for name in "${ALL_NAMES[@]}"; do
        if running "$name"; then
            echo "$name: running (pid $(pid_of "$name"))"
        else
            echo "$name: stopped"; rc=3
        fi
    done
    if running pg1 || running pg2; then
        for n in 0 1; do
            echo "pg$((n + 1)): /primary $(rest "${REST_PORT[$n]}" /primary), /sync $(rest "${REST_PORT[$n]}" /sync)"
        done
    fi
    return "$rc"
}

# start NAME...: each named process, if it is not running, as `up` starts it.
start() {
    local name
    mkdir -p -- "$CL/log" "$PIDS"
    [[ -s $CL/cluster.credentials ]] || die "no cluster in $CL: run up first"
    for name in "$@"; do
        case $name in
            pg1 | pg2) patroni_up $((${name#pg} - 1)) ;;
            haproxy) haproxy_up ;;
            nats1 | nats2 | nats3) nats_up ;;
            redis1 | redis2 | sentinel1 | sentinel2 | sentinel3) redis_up ;;
            etcd) etcd_up ;;
            command[12] | query[12] | relay[12] | projector[12] | saga[12]) daemons_up ;;
            *) die "start: unknown process '$name'" ;;
        esac
    done
}

# stop NAME...: stops daemon instances (SIGTERM; `start` brings them back).
stop() {
    local name
    for name in "$@"; do
        case $name in
            command[12] | query[12] | relay[12] | projector[12] | saga[12]) stop_pid "$name" ;;
            *) die "stop: only a daemon instance is stopped alone, not '$name'" ;;
        esac
    done
}

cmd=${1:-}
case $cmd in
    up) BUILD=${2:-build/plain}; up ;;
    down) down ;;
    status) status ;;
    env) print_env "${2:-}" ;;
    ports) BUILD=${2:-build/plain}; where ;;
    start) BUILD=${CLUSTER_BUILD:-build/plain}; shift; start "$@" ;;
    stop) shift; stop "$@" ;;
    *) echo "usage: $0 up|down|status|env [COMPONENT]|ports [BUILD_DIR]|start NAME...|stop DAEMON..." >&2; exit 2 ;;
esac
