#!/usr/bin/env bash
# servers.sh - run this project's own private PostgreSQL 15, Redis 7 and
# nats-server (JetStream) for development and tests, on 127.0.0.1 only, with
# all data, logs and pid files under $ES_RUN_DIR (default: <repo>/.run).
#
# Usage: scripts/servers.sh start|stop|status|restart [pg|redis|nats]
#        scripts/servers.sh env [COMPONENT]
#   start    start the servers not already running, wait until they answer
#   stop     stop them (fine if they were not running)
#   status   one line per server; exit 0 if all running, 3 otherwise
#   env      print `export` lines: eval "$(... env)".  Without COMPONENT,
#            the administrator's identity (scripts, tests, migrations);
#            with one of command, relay, projector, query, saga, esctl,
#            that program's own credentials; with consumer, the NATS
#            identity of outside consumers (docs/OPERATIONS.md,
#            "Consuming the events from another service")
#   restart  stop then start
#   conf nats-auth|redis-acl|pg-roles  print that part of the servers'
#            configuration (users, rights, passwords) for scripts/cluster.sh
# An optional server name limits the action to that one server.
#
# Credentials: every server requires a password.  The first start (or env)
# writes one random password per component into $ES_RUN_DIR/credentials
# (mode 0600, never printed except by `env`); each start applies them:
# PostgreSQL roles (scram-sha-256 over TCP; the script itself uses a
# 0700 Unix socket with peer authentication), NATS users with subject
# permissions (nats/nats.conf, 0600), Redis ACL users (SHA-256 of the
# password only).  To rotate: delete the file (or a line of it), restart
# the servers and the daemons (docs/OPERATIONS.md).  The NATS subject
# permissions follow ES_RELAY_STREAM, ES_RELAY_SUBJECT_PREFIX,
# ES_RELAY_WAKE_SUBJECT and ES_COMMAND_SUBJECT_PREFIX as set at start.
#
# Settings (environment): ES_RUN_DIR, ES_PG_PORT (15432), ES_REDIS_PORT
# (16379), ES_NATS_PORT (14222), ES_NATS_HTTP_PORT (18222, monitoring),
# ES_WAIT_SECS (30, how long to wait for each server to answer),
# ES_CONSUMER_DURABLES ("example": the durable consumers the outside
# consumers' NATS user may pull from, space-separated; `esctl consumer add`
# makes them).
#
# PostgreSQL refuses to run as root, so as root it runs as the `postgres`
# account. If that account cannot reach the run folder (e.g. the repo is under
# a 0700 home), its data goes to /tmp/es-pg-<hash of the run folder> instead,
# and $ES_RUN_DIR/pg is a symlink to it.
set -euo pipefail
shopt -s inherit_errexit

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_DIR=$(dirname -- "$SCRIPT_DIR")

ES_RUN_DIR=${ES_RUN_DIR:-$REPO_DIR/.run}
[[ $ES_RUN_DIR == /* ]] || ES_RUN_DIR=$PWD/$ES_RUN_DIR
ES_RUN_DIR=${ES_RUN_DIR%/}
ES_PG_PORT=${ES_PG_PORT:-15432}
ES_REDIS_PORT=${ES_REDIS_PORT:-16379}
ES_NATS_PORT=${ES_NATS_PORT:-14222}
ES_NATS_HTTP_PORT=${ES_NATS_HTTP_PORT:-18222}
WAIT_SECS=${ES_WAIT_SECS:-30}

HOST=127.0.0.1
PG_BIN=/usr/lib/postgresql/15/bin
PG_OS_USER=postgres   # OS account that runs the server (when we are root)
PG_USER=postgres      # database superuser
PG_DB=es

REDIS_DIR=$ES_RUN_DIR/redis
REDIS_CONF=$REDIS_DIR/redis.conf
REDIS_PID=$REDIS_DIR/redis.pid
REDIS_LOG=$REDIS_DIR/redis.log
REDIS_OUT=$REDIS_DIR/redis.out

NATS_DIR=$ES_RUN_DIR/nats
NATS_PID=$NATS_DIR/nats.pid
NATS_LOG=$NATS_DIR/nats.log
NATS_OUT=$NATS_DIR/nats.out
NATS_CONF=$NATS_DIR/nats.conf

ALL_SERVERS=(pg redis nats)

CRED_FILE=$ES_RUN_DIR/credentials
ADMIN_USER=es_admin   # NATS and Redis name of the administrator
# The identities: the administrator and one per program.
CRED_USERS=(es_admin es_command es_relay es_projector es_query es_saga esctl)
# Outside consumers of the events stream: a NATS user only (their own
# store is theirs: no role here), pulling from the durable consumers
# named in ES_CONSUMER_DURABLES (made by the operator), replies on an
# inbox prefix of its own.
CONSUMER_USER=es_consumer
CONSUMER_INBOX=_INBOX_es_consumer
CONSUMER_DURABLES=${ES_CONSUMER_DURABLES:-example}

# Names the NATS permissions are written for (the programs' defaults).
STREAM=${ES_RELAY_STREAM:-EVENTS}
EVENTS_PREFIX=${ES_RELAY_SUBJECT_PREFIX:-es.events}
WAKE_SUBJECT=${ES_RELAY_WAKE_SUBJECT:-es.wake}
CMD_PREFIX=${ES_COMMAND_SUBJECT_PREFIX:-cmd}

log() { echo "servers: $*"; }
err() { echo "servers: $*" >&2; }
die() { err "error: $*"; exit 1; }

usage() {
    echo "usage: $0 start|stop|status|env|restart [pg|redis|nats]" >&2
    exit 2
}

for port_var in ES_PG_PORT ES_REDIS_PORT ES_NATS_PORT ES_NATS_HTTP_PORT WAIT_SECS; do
    [[ ${!port_var} =~ ^[0-9]+$ ]] || die "$port_var must be a number, got '${!port_var}'"
done
# A durable name is one subject token: no dot, no wildcard, no space.
for durable in $CONSUMER_DURABLES; do
    [[ $durable =~ ^[A-Za-z0-9_-]+$ ]] ||
        die "ES_CONSUMER_DURABLES: '$durable' is not a durable name (letters, digits, _ and - only)"
done

is_root() { [[ $(id -u) -eq 0 ]]; }

# Run a command as the account that owns the PostgreSQL data (from / so that
# an unreachable current directory does not bother it).
as_pg() {
    if is_root; then
        (cd / && runuser -u "$PG_OS_USER" -- "$@" 9>&-)
    else
        (cd / && "$@" 9>&-)
    fi
}

# Print the last lines of the given log files (those that exist) to stderr.
show_logs() {
    local f
    for f in "$@"; do
        if [[ -s $f ]]; then
            err "---- last 20 lines of $f ----"
            tail -n 20 -- "$f" >&2 || true
        fi
    done
}

# port_holders PORT...: says which process listens on each port, if any:
# a server that cannot start because its port is taken names who has it.
port_holders() {
    local port who
    command -v ss >/dev/null || return 0
    for port in "$@"; do
        who=$(ss -Htlnp "sport = :$port" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n 1)
        [[ -n $who ]] && err "port $port is taken: $who"
    done
    return 0
}

# pid_exists PID: the process exists and is not a zombie (an init that is
# slow to reap leaves those around), whatever it runs.
pid_exists() {
    local pid=$1 stat
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0  # no /proc: trust kill -0
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# pid_alive PID NAME: pid_exists, and its command name is NAME.
pid_alive() {
    local pid=$1 name=$2 comm
    pid_exists "$pid" || return 1
    [[ -e /proc/$pid ]] || return 0   # no /proc: trust kill -0
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$name"* ]]
}

# First line of a pid file, or nothing.
read_pid() {
    local f=$1 pid=""
    if [[ -f $f ]]; then read -r pid <"$f" 2>/dev/null || true; fi
    echo "$pid"
}

# Size of a file in bytes (0 if missing): where new log lines will start.
file_size() { stat -c %s -- "$1" 2>/dev/null || echo 0; }

# Log lines written after byte offset $2 of file $1.
log_since() { tail -c +"$(($2 + 1))" -- "$1" 2>/dev/null || true; }

# Kill PID (SIGTERM), wait up to 10 s, then SIGKILL.
kill_wait() {
    local pid=$1 name=$2 i
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" "$name" || return 0
        sleep 0.1
    done
    err "$name (pid $pid) did not stop within 10 s; sending SIGKILL"
    kill -9 "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pid_alive "$pid" "$name" || return 0
        sleep 0.1
    done
    err "$name (pid $pid) is still alive after SIGKILL"
    return 1
}

# --------------------------------------------------------------- credentials

# A new random password: 32 hex digits (128 bits), safe in a URL, a
# conninfo string and every configuration file here without quoting.
new_password() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }

# Makes sure $CRED_FILE holds a password for every identity.  A missing
# file is written whole and linked into place (two racing callers agree
# on the first); a missing line is added.
cred_ensure() {
    local tmp u missing=()
    mkdir -p -- "$ES_RUN_DIR"
    if [[ ! -f $CRED_FILE ]]; then
        tmp=$(umask 077 && mktemp -- "$CRED_FILE.XXXXXX")
        {
            echo "# Written by scripts/servers.sh: the password of each identity of the"
            echo "# private servers.  Keep it 0600; see docs/OPERATIONS.md to rotate."
            for u in "${CRED_USERS[@]}" "$CONSUMER_USER"; do echo "$u=$(new_password)"; done
        } >"$tmp"
        ln -- "$tmp" "$CRED_FILE" 2>/dev/null || true
        rm -f -- "$tmp"
    fi
    chmod 600 -- "$CRED_FILE"
    for u in "${CRED_USERS[@]}" "$CONSUMER_USER"; do
        grep -q "^$u=[0-9a-f]\{32\}\$" -- "$CRED_FILE" || missing+=("$u")
    done
    for u in "${missing[@]}"; do
        sed -i "/^$u=/d" -- "$CRED_FILE"
        echo "$u=$(new_password)" >>"$CRED_FILE"
    done
}

# The password of identity $1.
cred() { sed -n "s/^$1=//p" -- "$CRED_FILE" | tail -n 1; }

# ---------------------------------------------------------------- PostgreSQL

PG_LINK=$ES_RUN_DIR/pg
PG_FALLBACK=/tmp/es-pg-$(printf '%s' "$ES_RUN_DIR" | sha1sum | cut -c1-12)

# Where the PostgreSQL files are, without creating anything: the real path of
# $ES_RUN_DIR/pg (which may be a symlink to the /tmp fallback).
pg_dir() {
    if [[ -L $PG_LINK ]]; then
        readlink -f -- "$PG_LINK" || echo "$PG_FALLBACK"
    else
        echo "$PG_LINK"
    fi
}

pg_pid() { read_pid "$(pg_dir)/data/postmaster.pid"; }
pg_running() { pid_alive "$(pg_pid)" postgres; }
pg_ready() {
    "$PG_BIN/pg_isready" -q -h "$HOST" -p "$ES_PG_PORT" -U "$PG_USER" -d postgres -t 1
}

# Can the server account create files in directory $1 (and reach it)?
pg_can_use() { as_pg test -d "$1" -a -w "$1" -a -x "$1" 2>/dev/null; }

# Make sure the PostgreSQL folder exists and the server account can use it,
# falling back to /tmp when it cannot reach the run folder. Prints its path.
pg_prepare_dir() {
    local dir
    if [[ -L $PG_LINK ]]; then
        dir=$(pg_dir)
        if [[ ! -d $dir ]]; then   # /tmp was cleaned: data is gone, start anew
            err "note: PostgreSQL folder $dir is gone; creating it again (empty)"
            pg_make_fallback "$dir" || exit 1
        fi
    elif [[ -d $PG_LINK ]]; then
        dir=$PG_LINK
        if ! pg_can_use "$dir"; then
            if [[ -e $dir/data/PG_VERSION ]]; then
                die "the '$PG_OS_USER' account cannot use $dir, which holds data; fix its permissions or set ES_RUN_DIR"
            fi
            rm -rf -- "$PG_LINK"
            dir=$(pg_setup_new_dir) || exit 1
        fi
    else
        dir=$(pg_setup_new_dir) || exit 1
    fi
    echo "$dir"
}

# A brand new PostgreSQL folder: $ES_RUN_DIR/pg if usable, else the fallback.
pg_setup_new_dir() {
    mkdir -p -- "$PG_LINK"
    if is_root; then
        chown "$PG_OS_USER:" "$PG_LINK" 2>/dev/null || true
    fi
    chmod 700 "$PG_LINK"
    if pg_can_use "$PG_LINK"; then
        echo "$PG_LINK"
        return
    fi
    rmdir -- "$PG_LINK"
    err "note: the '$PG_OS_USER' account cannot reach $ES_RUN_DIR;" \
        "keeping PostgreSQL data in $PG_FALLBACK (symlinked from $PG_LINK)"
    pg_make_fallback "$PG_FALLBACK" || exit 1
    ln -s -- "$PG_FALLBACK" "$PG_LINK"
    echo "$PG_FALLBACK"
}

# Create the fallback folder under /tmp, refusing one that someone else owns.
pg_make_fallback() {
    local dir=$1 owner
    mkdir -p -- "$dir"
    owner=$(stat -c %U -- "$dir")
    if [[ $owner != "$(id -un)" && $owner != "$PG_OS_USER" ]]; then
        die "$dir exists and belongs to '$owner'; remove it or set ES_RUN_DIR"
    fi
    if is_root; then chown "$PG_OS_USER:" "$dir"; fi
    chmod 700 "$dir"
    pg_can_use "$dir" || die "the '$PG_OS_USER' account cannot use $dir"
}

pg_locale() {
    if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then echo C.UTF-8; else echo C; fi
}

pg_start() {
    local dir data logf i out
    [[ -x $PG_BIN/pg_ctl ]] || die "PostgreSQL 15 is not installed ($PG_BIN); run scripts/deps.sh"
    if is_root; then
        id -u "$PG_OS_USER" >/dev/null 2>&1 || die "no '$PG_OS_USER' account; run scripts/deps.sh"
    fi
    dir=$(pg_prepare_dir) || return 1
    data=$dir/data
    logf=$dir/log/postgresql.log
    as_pg mkdir -p -- "$dir/log" || return 1

    if pg_running; then
        log "pg: already running (pid $(pg_pid))"
    else
        if [[ ! -f $data/PG_VERSION ]]; then
            log "pg: initdb in $data"
            # pg_hba.conf is rewritten below before the first start.
            if ! as_pg "$PG_BIN/initdb" -D "$data" -U "$PG_USER" --auth-local=peer --auth-host=reject \
                -E UTF8 --locale="$(pg_locale)" >"$dir/log/initdb.log" 2>&1; then
                err "pg: initdb failed"
                show_logs "$dir/log/initdb.log"
                return 1
            fi
            echo "include_if_exists = 'es_server.conf'" |
                as_pg tee -a "$data/postgresql.conf" >/dev/null || return 1
        fi
        # Our settings, rewritten at every start so that ES_PG_PORT applies.
        as_pg tee "$data/es_server.conf" >/dev/null <<EOF || return 1
# Written by scripts/servers.sh at every start; edits here are lost.
listen_addresses = '$HOST'
port = $ES_PG_PORT
unix_socket_directories = '$dir/sock'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
max_connections = 300
shared_buffers = 512MB
logging_collector = off
EOF
        # TCP with a password only; the socket, reachable by the server's
        # own account alone, lets this script in as the superuser (peer).
        as_pg mkdir -p -m 700 -- "$dir/sock" || return 1
        as_pg tee "$data/pg_hba.conf" >/dev/null <<EOF || return 1
# Written by scripts/servers.sh at every start; edits here are lost.
local all $PG_USER peer map=es_local
host  all all $HOST/32 scram-sha-256
EOF
        as_pg tee "$data/pg_ident.conf" >/dev/null <<EOF || return 1
# Written by scripts/servers.sh at every start; edits here are lost.
es_local $(pg_os_account) $PG_USER
EOF
        # A postmaster.pid left by a crash names a dead process: drop it.
        if [[ -f $data/postmaster.pid ]]; then
            rm -f -- "$data/postmaster.pid"
        fi
        log "pg: starting on $HOST:$ES_PG_PORT"
        if ! out=$(as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$logf" -w -t "$WAIT_SECS" start 2>&1); then
            err "pg: failed to start: ${out//$'\n'/ }"
            show_logs "$logf"
            # pg_ctl may give up while the server is still coming up.
            if pg_running; then
                as_pg "$PG_BIN/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
            fi
            return 1
        fi
    fi

    for ((i = 0; i < WAIT_SECS * 5; i++)); do
        pg_ready && break
        pg_running || break
        sleep 0.2
    done
    if ! pg_ready; then
        err "pg: not accepting connections on $HOST:$ES_PG_PORT after $WAIT_SECS s"
        port_holders "$ES_PG_PORT"
        show_logs "$logf"
        return 1
    fi
    if [[ ! -S $dir/sock/.s.PGSQL.$ES_PG_PORT ]] && ! as_pg test -S "$dir/sock/.s.PGSQL.$ES_PG_PORT"; then
        err "pg: no socket in $dir/sock: a server started by an older servers.sh; run: $0 restart pg"
        return 1
    fi
    local psql=(as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/sock" -p "$ES_PG_PORT" -U "$PG_USER" -d postgres -tA)
    pg_roles "${psql[@]}" || { show_logs "$logf"; return 1; }
    if [[ $("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") != 1 ]]; then
        log "pg: creating database $PG_DB"
        "${psql[@]}" -c "CREATE DATABASE $PG_DB" || { show_logs "$logf"; return 1; }
    fi
    if [[ $("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") != 1 ]]; then
        err "pg: database $PG_DB still missing"
        return 1
    fi
    log "pg: ready (pid $(pg_pid), $HOST:$ES_PG_PORT, database $PG_DB)"
}

# The OS account psql runs as here (see as_pg): peer authentication maps
# it to the superuser.
pg_os_account() { if is_root; then echo "$PG_OS_USER"; else id -un; fi; }

# pg_roles PSQL...: one login role per program, no rights of its own (the
# grants are in migrations/006_roles.sql), and every password as in the
# credentials file.  The SQL goes through standard input so no password
# is on a command line, and a failing statement is not logged with its text.
pg_roles() {
    local u
    {
        echo "SET log_min_error_statement = panic;"
        echo "SET log_statement = none;"
        echo "SET password_encryption = 'scram-sha-256';"
        echo "ALTER ROLE $PG_USER PASSWORD '$(cred "$ADMIN_USER")';"
        for u in "${CRED_USERS[@]}"; do
            [[ $u != "$ADMIN_USER" ]] || continue
            echo "SELECT 'CREATE ROLE $u' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$u') \\gexec"
            echo "ALTER ROLE $u LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '$(cred "$u")';"
        done
    } | "$@" >/dev/null
}

pg_stop() {
    local dir data pid
    dir=$(pg_dir)
    data=$dir/data
    pid=$(pg_pid)
    if pid_alive "$pid" postgres; then
        log "pg: stopping (pid $pid)"
        if ! as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null; then
            err "pg: fast shutdown failed; trying immediate"
            as_pg "$PG_BIN/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null || kill_wait "$pid" postgres
        fi
    else
        log "pg: not running"
    fi
    if [[ -f $data/postmaster.pid ]] && ! pg_running; then
        rm -f -- "$data/postmaster.pid"
    fi
}

pg_status() {
    if pg_running; then
        echo "pg: running (pid $(pg_pid), $HOST:$ES_PG_PORT, data $(pg_dir)/data)"
    else
        echo "pg: stopped"
        return 1
    fi
}

# --------------------------------------------------------------------- Redis

redis_pid() { read_pid "$REDIS_PID"; }
redis_running() { pid_alive "$(redis_pid)" redis-server; }
redis_answer() {
    REDISCLI_AUTH=$(cred "$ADMIN_USER") redis-cli -h "$HOST" -p "$ES_REDIS_PORT" \
        --user "$ADMIN_USER" ping 2>/dev/null
}
redis_ping() { [[ $(redis_answer) == PONG ]]; }

redis_pw_hash() { printf '%s' "$(cred "$1")" | sha256sum | cut -d' ' -f1; }

# ACL lines of redis.conf: the default user off, one user per program that
# uses Redis, each password as its SHA-256 (the file holds no secret).
#   es_projector, esctl  the read-model keys rm:* and their notices; no
#                        admin or dangerous commands (esctl dumps with SORT)
#   es_query             reads rm:* (also inside scripts), subscribes to
#                        the notices, nothing else
#   es_saga              XADD to the gateways' streams gateway:*
redis_acl() {
    local u
    # The default user is off with no password, so no connection can be
    # it.  Its rights stay whole: Redis 7.0 replays the append-only file
    # as the default user, and with -@all it refuses every MULTI/EXEC it
    # reads back ("ACLs rules changed ..."), losing those writes.
    echo "user default off resetpass ~* &* +@all"
    echo "user $ADMIN_USER on #$(redis_pw_hash "$ADMIN_USER") ~* &* +@all"
    for u in es_projector esctl; do
        echo "user $u on #$(redis_pw_hash "$u") ~rm:* &rm:* +@all -@admin -@dangerous $([[ $u != esctl ]] || echo +sort)"
    done
    echo "user es_query on #$(redis_pw_hash es_query) %R~rm:* &rm:* -@all +@read -@dangerous +select +ping +eval +evalsha +multi +exec +subscribe +unsubscribe"
    echo "user es_saga on #$(redis_pw_hash es_saga) ~gateway:* resetchannels -@all +xadd +select +ping"
}

# Redis config values in double quotes, as redis.conf allows.
redis_quote() {
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

redis_start() {
    local i pid log_off=0 ok=""
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        die "redis-server/redis-cli not installed; run scripts/deps.sh"
    fi
    mkdir -p -- "$REDIS_DIR"
    if redis_running; then
        log "redis: already running (pid $(redis_pid))"
    else
        rm -f -- "$REDIS_PID"
        cat >"$REDIS_CONF" <<EOF
# Written by scripts/servers.sh at every start; edits here are lost.
bind $HOST
port $ES_REDIS_PORT
protected-mode no
daemonize yes
supervised no
pidfile $(redis_quote "$REDIS_PID")
logfile $(redis_quote "$REDIS_LOG")
dir $(redis_quote "$REDIS_DIR")
appendonly yes
appendfsync everysec
EOF
        redis_acl >>"$REDIS_CONF"
        chmod 600 "$REDIS_CONF"
        log "redis: starting on $HOST:$ES_REDIS_PORT"
        log_off=$(file_size "$REDIS_LOG")
        if ! redis-server "$REDIS_CONF" >"$REDIS_OUT" 2>&1 9>&-; then
            err "redis: failed to start"
            show_logs "$REDIS_OUT" "$REDIS_LOG"
            return 1
        fi
    fi
    # Redis writes its pid file only once it listens, so "our pid file names a
    # live redis and the port says PONG" means it is ours that answers.
    local answer said_loading=""
    for ((i = 0; i < WAIT_SECS * 5; i++)); do
        if redis_running; then
            answer=$(redis_answer)
            if [[ $answer == PONG ]]; then ok=1; break; fi
            # Still reading a large append-only file: it answers LOADING
            # for as long as that takes, which is no failure to start.
            if [[ $answer == LOADING* ]]; then
                [[ -n $said_loading ]] || log "redis: loading its data, waiting"
                said_loading=1
                i=0
            fi
        fi
        pid=$(redis_pid)
        if [[ -z $pid ]]; then   # not listening yet, or failed: its log says
            pid=$(log_since "$REDIS_LOG" "$log_off" |
                sed -n 's/.*pid=\([0-9][0-9]*\), just started.*/\1/p' | tail -n 1)
        fi
        if [[ -n $pid ]] && ! pid_alive "$pid" redis-server; then
            break   # it started, then died
        fi
        sleep 0.2
    done
    if [[ -z $ok ]]; then
        err "redis: no PONG on $HOST:$ES_REDIS_PORT"
        port_holders "$ES_REDIS_PORT"
        show_logs "$REDIS_OUT" "$REDIS_LOG"
        return 1
    fi
    log "redis: ready (pid $(redis_pid), $HOST:$ES_REDIS_PORT)"
}

redis_stop() {
    local pid
    pid=$(redis_pid)
    if pid_alive "$pid" redis-server; then
        log "redis: stopping (pid $pid)"
        kill_wait "$pid" redis-server || return 1
    else
        log "redis: not running"
    fi
    rm -f -- "$REDIS_PID"
}

redis_status() {
    if redis_running; then
        echo "redis: running (pid $(redis_pid), $HOST:$ES_REDIS_PORT)"
    else
        echo "redis: stopped"
        return 1
    fi
}

# ---------------------------------------------------------------------- NATS

nats_pid() { read_pid "$NATS_PID"; }
nats_running() { pid_alive "$(nats_pid)" nats-server; }

# Healthy = the client port speaks NATS and the monitoring endpoint says
# JetStream is fine (curl, or bash's /dev/tcp when curl is missing).
nats_healthy() {
    # shellcheck disable=SC2016 # the inner scripts get host/port as $0 $1
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/$0/$1" && read -r line <&3 && [[ $line == INFO* ]]
    ' "$HOST" "$ES_NATS_PORT" 2>/dev/null || return 1
    if command -v curl >/dev/null; then
        curl -sf -m 2 -o /dev/null "http://$HOST:$ES_NATS_HTTP_PORT/healthz?js-enabled-only=true"
    else
        # shellcheck disable=SC2016
        timeout 3 bash -c '
            exec 4<>"/dev/tcp/$0/$1" || exit 1
            printf "GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: %s\r\n\r\n" "$0" >&4
            read -r line <&4 && [[ $line == "HTTP/1."?" 200"* ]]
        ' "$HOST" "$ES_NATS_HTTP_PORT" 2>/dev/null
    fi
}

# nats_list SUBJECT...: a NATS configuration list of quoted subjects.
nats_list() {
    local out="" x
    for x in "$@"; do out+="${out:+, }\"$x\""; done
    echo "[$out]"
}

# nats_user USER PUBLISH SUBSCRIBE: one user entry; PUBLISH and SUBSCRIBE
# are the allowed subjects, space-separated (nothing else is allowed).
nats_user() {
    # shellcheck disable=SC2086 # the lists are split on purpose
    printf '    {user: "%s", password: "%s", permissions: {publish: {allow: %s}, subscribe: {allow: %s}}}\n' \
        "$1" "$(cred "$1")" "$(nats_list $2)" "$(nats_list $3)"
}

# The NATS configuration: authentication, and per program the subjects it
# may publish and subscribe to.  JetStream's API is requested on
# $JS.API.<verb>.<stream>...; its answers come to the requester's _INBOX.
#   es_relay      publishes the events and manages the stream; hears wakes
#   es_command    serves the commands, answers to _INBOX, wakes the relay
#   readers       (es_projector, es_saga, esctl) read the stream and make
#                 ordered consumers of their own (create, look up, delete;
#                 flow-control answers on $JS.FC)
#   es_query      reads the stream's state and one message (the lag)
#   es_saga       also sends commands (requests on cmd.>)
#   es_consumer   outside services: per durable name of
#                 ES_CONSUMER_DURABLES, look it up, pull from it
#                 (MSG.NEXT), ack its messages, hear its max-deliveries
#                 advisories; read the stream's state and one message (a
#                 dead letter's event); answers on its own inbox prefix
#                 only, so it cannot hear the daemons' replies on _INBOX.>.
#                 It cannot make consumers: one allowed to could make a
#                 push consumer that has the server deliver the stream onto
#                 any subject, cmd.> included; the operator makes its
#                 durables (`esctl consumer add`, always pull: esctl may
#                 make the durables of that list).  Nothing
#                 else: no publish into the events, no commands, no stream
#                 or consumer management
# The same rights are given for a second set of names, the one
# tests/test_privilege.c runs the daemons with (stream ES_TEST, subjects
# es_test.*), so that it never touches the stream of `make up`.
nats_conf() {
    local js='$JS.API' ns s ev wake cmd read_stream consume u d
    local -A pub=() sub=()
    for ns in "$STREAM $EVENTS_PREFIX $WAKE_SUBJECT $CMD_PREFIX" \
              "ES_TEST es_test.events es_test.wake es_test.cmd"; do
        read -r s ev wake cmd <<<"$ns"
        read_stream="$js.STREAM.INFO.$s $js.STREAM.MSG.GET.$s $js.DIRECT.GET.$s $js.DIRECT.GET.$s.>"
        consume="$js.CONSUMER.CREATE.$s $js.CONSUMER.CREATE.$s.> $js.CONSUMER.INFO.$s.> $js.CONSUMER.DELETE.$s.> \$JS.FC.$s.>"
        # (DELETE: a stream that lost messages is made anew and republished)
        pub[es_relay]+=" $ev.> $read_stream $js.STREAM.CREATE.$s $js.STREAM.UPDATE.$s $js.STREAM.DELETE.$s"
        sub[es_relay]+=" $wake"
        pub[es_command]+=" $wake"
        sub[es_command]+=" $cmd.>"
        pub[es_projector]+=" $read_stream $consume"
        # the live projector pulls its batches from its own ephemeral pull
        # consumer, whose name the server makes up (events/feed.c)
        pub[es_projector]+=" $js.CONSUMER.MSG.NEXT.$s.*"
        pub[es_query]+=" $read_stream"
        pub[es_saga]+=" $read_stream $consume $cmd.>"
        pub[esctl]+=" $read_stream $consume"
        pub[es_consumer]+=" $js.STREAM.INFO.$s $js.STREAM.MSG.GET.$s"
        for d in $CONSUMER_DURABLES; do
            # `esctl consumer add` makes them (nats.c asks DURABLE.CREATE)
            pub[esctl]+=" $js.CONSUMER.DURABLE.CREATE.$s.$d"
            pub[es_consumer]+=" $js.CONSUMER.INFO.$s.$d $js.CONSUMER.MSG.NEXT.$s.$d \$JS.ACK.$s.$d.>"
            sub[es_consumer]+=" \$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.$s.$d"
        done
    done
    sub[es_consumer]+=" $CONSUMER_INBOX.>"
    pub[es_command]+=" _INBOX.>"
    for u in es_relay es_projector es_query es_saga esctl; do sub[$u]+=" _INBOX.>"; done
    # token revocations: esctl announces them, every daemon drops the token
    pub[esctl]+=" es.auth.revoked"
    for u in es_relay es_command es_projector es_query es_saga; do sub[$u]+=" es.auth.revoked"; done
    echo "# Written by scripts/servers.sh at every start; edits here are lost."
    # The largest event the store takes is 1 MiB as stored (type, data and
    # metadata); its message adds the envelope (ids, stream, times) and the
    # headers, so the payload limit is set well above it, deliberately
    # rather than by NATS's default (exactly 1 MiB).
    echo "max_payload: 2MB"
    echo "authorization {"
    echo "  users = ["
    printf '    {user: "%s", password: "%s"}\n' "$ADMIN_USER" "$(cred "$ADMIN_USER")"
    for u in es_relay es_command es_projector es_query es_saga esctl "$CONSUMER_USER"; do
        nats_user "$u" "${pub[$u]}" "${sub[$u]}"
    done
    echo "  ]"
    echo "}"
}

nats_start() {
    local i pid setsid="" log_off=0 ok=""
    command -v setsid >/dev/null && setsid=setsid
    command -v nats-server >/dev/null || die "nats-server not installed; run scripts/deps.sh"
    mkdir -p -- "$NATS_DIR/js"
    if nats_running; then
        log "nats: already running (pid $(nats_pid))"
    else
        rm -f -- "$NATS_PID"
        (umask 077 && nats_conf >"$NATS_CONF")
        log_off=$(file_size "$NATS_LOG")
        log "nats: starting on $HOST:$ES_NATS_PORT (monitoring $ES_NATS_HTTP_PORT)"
        # setsid: own session, so signals to the caller's group do not reach it.
        $setsid nohup nats-server -c "$NATS_CONF" -a "$HOST" -p "$ES_NATS_PORT" -m "$ES_NATS_HTTP_PORT" \
            -js -sd "$NATS_DIR/js" -P "$NATS_PID" -l "$NATS_LOG" \
            </dev/null >"$NATS_OUT" 2>&1 9>&- &
        echo "$!" >"$NATS_PID"   # nats-server rewrites it with its own pid
    fi
    # Ours is up when it is alive, logged "Server is ready" (so it got its
    # ports, and another server on them is not what answers) and is healthy.
    # The pid is the child just forked: until it has gone through setsid
    # and nohup to exec nats-server (slow on a loaded machine) its name is
    # another, so here only its existence is asked, not its name.
    for ((i = 0; i < WAIT_SECS * 5; i++)); do
        pid=$(nats_pid)
        pid_exists "$pid" || break
        if log_since "$NATS_LOG" "$log_off" | grep -q 'Server is ready' && nats_healthy; then
            ok=1
            break
        fi
        sleep 0.2
    done
    if [[ -z $ok ]]; then
        err "nats: not healthy on $HOST:$ES_NATS_PORT / $ES_NATS_HTTP_PORT"
        port_holders "$ES_NATS_PORT" "$ES_NATS_HTTP_PORT"
        show_logs "$NATS_OUT" "$NATS_LOG"
        if pid_exists "$pid"; then kill_wait "$pid" nats-server || true; fi
        rm -f -- "$NATS_PID"
        return 1
    fi
    log "nats: ready (pid $pid, nats://$HOST:$ES_NATS_PORT, JetStream in $NATS_DIR/js)"
}

nats_stop() {
    local pid
    pid=$(nats_pid)
    if pid_alive "$pid" nats-server; then
        log "nats: stopping (pid $pid)"
        kill_wait "$pid" nats-server || return 1
    else
        log "nats: not running"
    fi
    rm -f -- "$NATS_PID"
}

nats_status() {
    if nats_running; then
        echo "nats: running (pid $(nats_pid), nats://$HOST:$ES_NATS_PORT)"
    else
        echo "nats: stopped"
        return 1
    fi
}

# ---------------------------------------------------------------------- main

# Value for an `export` line: in double quotes when that is safe, else %q.
shell_quote() {
    local safe='^[-A-Za-z0-9 _./:=@,+]*$'
    if [[ $1 =~ $safe ]]; then
        printf '"%s"' "$1"
    else
        printf '%q' "$1"
    fi
}

# print_env [COMPONENT]: the administrator's settings (the superuser's
# password in PGPASSWORD, which libpq, psql and pgbench read), or those of
# one program (its password in its conninfo, no PGPASSWORD).
print_env() {
    local who=${1:-admin} user name value pw
    local -a vars unset=()
    case $who in
        admin) user=$ADMIN_USER ;;
        command | relay | projector | query | saga) user=es_$who ;;
        esctl) user=esctl ;;
        consumer) user=$CONSUMER_USER ;;
        *) die "env: no component '$who' (admin, command, relay, projector, query, saga, esctl, consumer)" ;;
    esac
    cred_ensure
    pw=$(cred "$user")
    if [[ $who == consumer ]]; then
        # A NATS identity only: the service's own store is its own.
        for value in "ES_NATS_URL=nats://$user:$pw@$HOST:$ES_NATS_PORT" \
                     "ES_NATS_INBOX_PREFIX=$CONSUMER_INBOX"; do
            echo "export ${value%%=*}=$(shell_quote "${value#*=}")"
        done
        for name in PGPASSWORD ES_PG_CONNINFO ES_REDIS_USER ES_REDIS_PASSWORD; do echo "unset $name"; done
        return
    fi
    vars=(
        "ES_PG_HOST=$HOST"
        "ES_PG_PORT=$ES_PG_PORT"
        "ES_PG_DB=$PG_DB"
        "ES_REDIS_HOST=$HOST"
        "ES_REDIS_PORT=$ES_REDIS_PORT"
        "ES_NATS_URL=nats://$user:$pw@$HOST:$ES_NATS_PORT"
        "ES_NATS_HTTP_PORT=$ES_NATS_HTTP_PORT"
        "ES_RUN_DIR=$ES_RUN_DIR"
        "ES_CREDENTIALS=$CRED_FILE"
    )
    if [[ $who == admin ]]; then
        vars+=("ES_PG_CONNINFO=host=$HOST port=$ES_PG_PORT user=$PG_USER dbname=$PG_DB"
               "ES_PG_USER=$PG_USER" "PGPASSWORD=$pw")
    else
        vars+=("ES_PG_CONNINFO=host=$HOST port=$ES_PG_PORT user=$user password=$pw dbname=$PG_DB"
               "ES_PG_USER=$user")
        unset+=(PGPASSWORD)
    fi
    case $who in
        admin | projector | query | saga | esctl)
            vars+=("ES_REDIS_USER=$user" "ES_REDIS_PASSWORD=$pw") ;;
        *) unset+=(ES_REDIS_USER ES_REDIS_PASSWORD) ;;
    esac
    for value in "${vars[@]}"; do
        name=${value%%=*}
        echo "export $name=$(shell_quote "${value#*=}")"
    done
    for name in "${unset[@]}"; do echo "unset $name"; done
}

# Serialise start/stop/restart on the same run folder.
take_lock() {
    mkdir -p -- "$ES_RUN_DIR"
    exec 9>"$ES_RUN_DIR/.servers.lock"
    if command -v flock >/dev/null; then
        flock -w 120 9 || die "another servers.sh holds $ES_RUN_DIR/.servers.lock"
    fi
}

# run_each ACTION SERVER...: ACTION each server, each in a subshell with
# `set -e` in force (it would be off inside `f || ...`), so that a failure
# stops that server's action only; fails if any failed.
run_each() {
    local action=$1 s rc=0 st
    shift
    for s in "$@"; do
        set +e
        (set -e; "${s}_$action")
        st=$?
        set -e
        ((st == 0)) || rc=1
    done
    return "$rc"
}

cmd=${1:-}
[[ $# -le 2 ]] || usage
servers=("${ALL_SERVERS[@]}")
if [[ $cmd == env ]]; then
    print_env "${2:-admin}"
    exit 0
fi
# conf nats-auth|redis-acl|pg-roles: the same users, rights and passwords
# these servers get, for scripts/cluster.sh to give its own servers.
if [[ $cmd == conf ]]; then
    cred_ensure
    case ${2:-} in
        nats-auth) nats_conf ;;
        redis-acl) redis_acl ;;
        pg-roles) pg_roles sh -c 'cat >&3' 3>&1 ;;  # (pg_roles hides its command's output)
        *) usage ;;
    esac
    exit 0
fi
if [[ $# -eq 2 ]]; then
    case $2 in
        pg | redis | nats) servers=("$2") ;;
        *) usage ;;
    esac
fi

case $cmd in
    start)
        take_lock
        cred_ensure
        run_each start "${servers[@]}" || die "some servers failed to start"
        ;;
    stop)
        take_lock
        run_each stop "${servers[@]}"
        ;;
    restart)
        take_lock
        cred_ensure
        run_each stop "${servers[@]}"
        run_each start "${servers[@]}" || die "some servers failed to start"
        ;;
    status)
        run_each status "${servers[@]}" || exit 3
        ;;
    *)
        usage
        ;;
esac
