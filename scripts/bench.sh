#!/usr/bin/env bash
# `make bench`: measures each figure of shared/API.md beside the raw limit
# of this machine for the same work, measured in the same run, and prints
#   BENCH <name> value=<v> unit=<u> limit=<l|na> ratio=<v/l|na>
# BENCH=name,name limits the figures; BENCH_SECONDS sets the length of
# each timed run (default 10), BENCH_ROUNDS the rounds whose best counts
# on each side (default 3).  Every figure starts on a fresh database.
set -euo pipefail

build=${1:-build/plain}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
secs=${BENCH_SECONDS:-10}
only=${BENCH:-}
rounds=${BENCH_ROUNDS:-3}

# BENCH_EXTERNAL=1 (scripts/bench_cluster.sh): the figures of a system
# already running where the environment points (ES_PG_*, ES_TOKEN, the
# command service on BENCH_HTTP_PORT and the query service on the next
# port): nothing is started, stopped, dropped or flushed there, the raw
# limits are not measured (limit=na), and the saga figures count the
# events written since the run began.
external=${BENCH_EXTERNAL:-}
if [ -z "$external" ]; then
    scripts/servers.sh start >/dev/null
    eval "$(scripts/servers.sh env)"
fi
pgbin=/usr/lib/postgresql/15/bin
base="host=$ES_PG_HOST port=$ES_PG_PORT user=$ES_PG_USER"
db=es_bench
[ -z "$external" ] || db=${ES_PG_DB:-es}
export ES_PG_CONNINFO="$base dbname=$db"
since=-infinity                 # the saga figures count events recorded since
[ -z "$external" ] || since=$(date -u '+%Y-%m-%d %H:%M:%S+00')
work=$(mktemp -d)
cmd_pid=
trap 'if [ -n "$cmd_pid" ]; then kill "$cmd_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
psql_db() { "$pgbin/psql" "$ES_PG_CONNINFO" -v ON_ERROR_STOP=1 -qAt "$@"; }

fresh_db() {
    if [ -n "$external" ]; then
        [ -n "${ES_TOKEN:-}" ] || { echo "bench: BENCH_EXTERNAL needs ES_TOKEN" >&2; exit 1; }
        return 0
    fi
    "$pgbin/psql" "$base dbname=postgres" -v ON_ERROR_STOP=1 -qAt \
        -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null 2>&1
    "$build/esctl" migrate >/dev/null
    # Access control is on in every figure but *_noauth: the load
    # generators send this admin token (ES_TOKEN).
    ES_TOKEN=$("$build/esctl" token create "bench-$(date +%s%N)" --scope admin 2>/dev/null)
    export ES_TOKEN
    # Start each timed run with no checkpoint pending from the last one.
    psql_db -c "CHECKPOINT" >/dev/null
    # The raw limit's table: the same row, a bigserial key and a unique
    # (stream, version) index, nothing else.
    psql_db <<'SQL'
CREATE SEQUENCE bench_seq;
CREATE TABLE bench_raw (
    id bigserial PRIMARY KEY, stream_id text NOT NULL, version bigint NOT NULL,
    event_id uuid NOT NULL, type text NOT NULL, data jsonb NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}', recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, version));
SQL
}

# report NAME VALUE UNIT LIMIT
report() {
    local ratio=na
    if [ "$4" != na ]; then
        ratio=$(awk -v v="$2" -v l="$4" 'BEGIN { printf "%.2f", (l > 0 ? v / l : 0) }')
    fi
    echo "BENCH $1 value=$2 unit=$3 limit=$4 ratio=$ratio"
}

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

# pgbench of ROWS-row INSERTs at CLIENTS (default 8) clients: rows per second.
raw_insert() {
    local rows=$1 clients=${2:-8}
    cat >"$work/insert.sql" <<SQL
INSERT INTO bench_raw (stream_id, version, event_id, type, data)
SELECT 'order-' || (n % 10000), n / 10000, gen_random_uuid(), 'OrderPlaced',
       ('{"type":"OrderPlaced","orderId":"o-' || n || '","customerId":"c-' || (n % 1000)
        || '","items":[{"sku":"sku-' || (n % 500) || '","qty":2,"price":1999}],"total":3998,'
        || '"currency":"EUR","shipTo":{"city":"Berlin","zip":"10115","country":"DE"}}')::jsonb
  FROM (SELECT nextval('bench_seq') AS n FROM generate_series(1, $rows)) v;
SQL
    local tps
    tps=$("$pgbin/pgbench" -n -M prepared -c "$clients" -j 2 -T "$secs" -f "$work/insert.sql" \
            "$ES_PG_CONNINFO" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    awk -v t="$tps" -v r="$rows" 'BEGIN { printf "%.0f", t * r }'
}

# load_log N STREAM_SQL VERSION_SQL DATA_SQL: N OrderPlaced events (n from
# 0) straight into the store, in chunks of separate transactions, then the
# same rows into the raw table in feed order.  The SQL expressions use n.
load_log() {
    local events=$1 stream=$2 version=$3 data=$4 i
    for ((i = 0; i < events; i += 100000)); do
        psql_db <<SQL
INSERT INTO es_events (stream_id, category, version, event_id, type, data)
SELECT $stream, 'order', $version, gen_random_uuid(), 'OrderPlaced', ($data)::jsonb
  FROM generate_series($i, $((i + 99999 < events - 1 ? i + 99999 : events - 1))) n;
SQL
    done
    psql_db <<'SQL'
INSERT INTO es_streams SELECT stream_id, max(version) FROM es_events
 WHERE category = 'order' GROUP BY stream_id;
INSERT INTO bench_raw (stream_id, version, event_id, type, data, metadata, recorded_at)
SELECT stream_id, version, event_id, type, data, metadata, recorded_at
  FROM es_events WHERE category = 'order' ORDER BY transaction_id, global_position;
VACUUM ANALYZE es_events;
VACUUM ANALYZE bench_raw;
SQL
}

# load_orders N: N OrderPlaced events, one order per stream, shaped as the
# command service writes them (what the orders projection reads).
load_orders() {
    load_log "$1" "'order-o' || n" "0" \
        "'{\"order_id\":\"o' || n || '\",\"customer_id\":\"c-' || (n % 1000) || '\",\"items\":[{\"sku\":\"sku-'
        || (n % 500) || '\",\"quantity\":2,\"unit_price\":1999}],\"total\":3998,'
        || '\"ship_to\":{\"city\":\"Berlin\",\"zip\":\"10115\",\"country\":\"DE\"}}'"
}

max() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > a ? b : a) }'; }

# best_of ROWS CLIENTS FIELD CMD...: BENCH_ROUNDS rounds of (pgbench with
# ROWS-row INSERTs at CLIENTS clients, then CMD), each on a fresh database;
# the best of each side counts, which damps the noise of a shared machine
# for both alike.  Sets best_raw, best_value and best_out (CMD's output of
# its best round; FIELD names its figure there).
best_of() {
    local rows=$1 clients=$2 key=$3 r v out
    shift 3
    best_raw=0 best_value=0 best_out=""
    for _ in $(seq 1 "$rounds"); do
        fresh_db
        r=na
        [ -n "$external" ] || r=$(raw_insert "$rows" "$clients")
        fresh_db
        out=$("$@")
        v=$(field "$key" "$out")
        if [ -z "$v" ] || [ -z "$r" ]; then
            echo "bench: a round of $* failed: $out" >&2
            exit 1
        fi
        if [ "$r" = na ]; then best_raw=na; else best_raw=$(max "$best_raw" "$r"); fi
        if [ "$(max "$best_value" "$v")" != "$best_value" ]; then
            best_value=$v
            best_out=$out
        fi
    done
}

append_figure() {
    local name=$1 per=$2
    best_of "$per" 8 events_per_s "$build/bench_store" append 8 "$per" "$secs"
    echo "# $name: library, 8 writers through group commit, $per event(s) per append:" \
         "$best_value events/s, p50 $(field p50_ms "$best_out") ms, p99 $(field p99_ms "$best_out") ms;" \
         "pgbench $per-row INSERTs at 8 clients: $best_raw rows/s (best of $rounds rounds each)"
    report "$name" "$best_value" events/s "$best_raw"
}

want store_append_1 && append_figure store_append_1 1
want store_append_10 && append_figure store_append_10 10

if want store_feed_read; then
    events=${BENCH_FEED_EVENTS:-1000000}
    fresh_db
    load_log "$events" "'order-' || (n % 10000)" "n / 10000" \
        "'{\"type\":\"OrderPlaced\",\"orderId\":\"o-' || n || '\",\"customerId\":\"c-' || (n % 1000)
        || '\",\"items\":[{\"sku\":\"sku-' || (n % 500) || '\",\"qty\":2,\"price\":1999}],\"total\":3998,'
        || '\"currency\":\"EUR\",\"shipTo\":{\"city\":\"Berlin\",\"zip\":\"10115\",\"country\":\"DE\"}}'"
    best_raw=0 best=0
    for _ in $(seq 1 "$rounds"); do
        r=$(field rows_per_s "$("$build/bench_store" raw-read)")
        v=$(field events_per_s "$("$build/bench_store" feed)")
        best_raw=$(max "$best_raw" "$r")
        best=$(max "$best" "$v")
    done
    echo "# store_feed_read: $events events in feed order, pages of 10,000: $best events/s;" \
         "one plain ordered SELECT of the same rows: $best_raw rows/s (best of $rounds each)"
    report store_feed_read "$best" events/s "$best_raw"
fi

# The command service on a port of its own, against the bench database.
http_port=${BENCH_HTTP_PORT:-18480}
start_command() {
    [ -z "$external" ] || return 0
    ES_COMMAND_PORT=$http_port ES_NATS_URL=off ES_AUTH=${bench_auth:-on} \
        "$build/es-command" >"$work/command.log" 2>&1 &
    cmd_pid=$!
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench: es-command did not start:" >&2
    cat "$work/command.log" >&2
    exit 1
}
stop_command() {
    if [ -n "$cmd_pid" ]; then
        kill "$cmd_pid" 2>/dev/null || true
        wait "$cmd_pid" 2>/dev/null || true
        cmd_pid=
    fi
}

# One round of the command service under bench_http MODE.
http_round() {
    start_command
    if [ "${bench_auth:-on}" = off ]; then
        ES_TOKEN= "$build/bench_http" "$1" "$http_port" 32 "$secs"
    else
        "$build/bench_http" "$1" "$http_port" 32 "$secs"
    fi
    stop_command
}

# http_append_1 / http_orders: 32 connections, beside pgbench's one-row
# INSERT transactions at 32 clients.
http_figure() {
    local name=$1 mode=$2
    best_of 1 32 per_s http_round "$mode"
    echo "# $name: $mode over HTTP, 32 connections: $best_value/s, p50 $(field p50_ms "$best_out") ms," \
         "p99 $(field p99_ms "$best_out") ms, errors $(field errors "$best_out");" \
         "pgbench one-row INSERT transactions at 32 clients: $best_raw/s (best of $rounds rounds each)"
    report "$name" "$best_value" requests/s "$best_raw"
    report "${name}_p50_ms" "$(field p50_ms "$best_out")" ms na
    report "${name}_p99_ms" "$(field p99_ms "$best_out")" ms na
}

want http_append_1 && http_figure http_append_1 append
# the same with access control off (ES_AUTH=off, no token sent): what the
# token check and metadata.principal cost
if [ -z "$external" ] && { want http_append_1 || want http_append_1_noauth; }; then
    bench_auth=off
    best_of 1 32 per_s http_round append
    bench_auth=on
    echo "# http_append_1_noauth: append over HTTP with ES_AUTH=off, 32 connections:" \
         "$best_value/s, p50 $(field p50_ms "$best_out") ms, p99 $(field p99_ms "$best_out") ms;" \
         "pgbench one-row INSERT transactions at 32 clients: $best_raw/s"
    report http_append_1_noauth "$best_value" requests/s "$best_raw"
fi
want http_orders && http_figure http_orders orders

# ---- read side --------------------------------------------------------------

# Redis database of the benchmarks (0 is `make up`'s, 1 the tests').
export ES_REDIS_DB=${BENCH_REDIS_DB:-2}
# As the administrator of scripts/servers.sh env (the password in the
# environment, not on the command line).
rcli() {
    [ -z "$external" ] || return 0     # the running system's Redis is left alone
    REDISCLI_AUTH=$ES_REDIS_PASSWORD redis-cli --user "$ES_REDIS_USER" -h "$ES_REDIS_HOST" \
        -p "$ES_REDIS_PORT" -n "$ES_REDIS_DB" "$@"
}

# redis-benchmark takes a password only as an argument: it runs as a user
# of its own with a password made for this run, limited to its keys, and
# removed at the end.
bench_redis_pw=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
bench_redis_user() {
    printf '>%s' "$bench_redis_pw" |
        rcli -x ACL SETUSER es_bench reset on '~order:*' '~orderhist:*' '~custorders:*' '~rm:orders:*' \
            +@all -@admin -@dangerous +select >/dev/null
}
redis_rate() {
    redis-benchmark -h "$ES_REDIS_HOST" -p "$ES_REDIS_PORT" --dbnum "$ES_REDIS_DB" -n 300000 \
        --user es_bench -a "$bench_redis_pw" \
        -P 100 -r 1000000 --csv "$@" 2>/dev/null | tail -n 1 | awk -F'","' '{ print $(NF - 6) }'
}

# The writes the orders projection makes per OrderPlaced (one 12-field
# HSET, one RPUSH, one ZADD) and, with "dashboard", the dashboard's two
# HINCRBYs: redis-benchmark's pipelined rate of each, combined per event.
hset=(HSET 'order:__rand_int__' order_id o-123456 customer_id c-123
      items '[{"sku":"sku-12","quantity":2,"unit_price":1999}]' total 3998 status pending
      payment '{"status":"pending"}' inventory '{"status":"pending"}'
      shipment '{"status":"pending"}' seq 123456 created_at 2026-11-22T00:00:00.000000Z
      updated_at 2026-11-22T00:00:00.000000Z
      ship_to '{"city":"Berlin","zip":"10115","country":"DE"}')
rpush=(RPUSH 'orderhist:__rand_int__'
       '{"type":"OrderPlaced","at":"2026-11-22T00:00:00.000000Z","position":"1234567-123456","total":3998}')
zadd=(ZADD 'custorders:__rand_int__' __rand_int__ o-__rand_int__)
hincr=(HINCRBY 'order:counters' events 1)
orders_redis_rate() {
    local a b c d=0 cpu0 cpu1 cpu2
    cpu0=$(redis_cpu_us)
    a=$(redis_rate "${hset[@]}"); b=$(redis_rate "${rpush[@]}"); c=$(redis_rate "${zadd[@]}")
    cpu1=$(redis_cpu_us)
    [ "${1:-}" = dashboard ] && d=$(redis_rate "${hincr[@]}")
    cpu2=$(redis_cpu_us)
    # Redis' own CPU per event for these writes (each redis_rate sends
    # 300,000 of one command; two HINCRBYs an event), kept in a file as
    # this runs in a command substitution: what the projector's is
    # compared with
    awk -v a="$cpu0" -v b="$cpu1" -v c="$cpu2" \
        'BEGIN { printf "%.1f", (b - a + 2 * (c - b)) / 300000 }' >"$work/redis_raw_cpu_us"
    awk -v a="$a" -v b="$b" -v c="$c" -v d="$d" \
        'BEGIN { printf "%.0f", 1 / (1/a + 1/b + 1/c + (d > 0 ? 2/d : 0)) }'
}
# The CPU time (user + system, microseconds) Redis of scripts/servers.sh
# has used so far: per event, a cost the other programs' load on the
# machine hardly moves, unlike rates.
redis_cpu_us() {
    local pid st
    pid=$(cat "${ES_RUN_DIR:-$root/.run}/redis/redis.pid" 2>/dev/null) || { echo 0; return; }
    st=$(cat "/proc/$pid/stat" 2>/dev/null) || { echo 0; return; }
    st=${st##*) }
    # (after the name: state is field 3, utime 14 and stime 15)
    awk -v t="$(getconf CLK_TCK)" '{ printf "%.0f", ($12 + $13) * 1000000 / t }' <<<"$st"
}

if want rebuild; then
    events=${BENCH_REBUILD_EVENTS:-1000000}
    fresh_db
    # One order per stream, shaped as the command service writes them.
    load_orders "$events"
    # The raw limits: the ordered read of the same rows, and Redis taking
    # pipelined the writes the orders projection makes per OrderPlaced,
    # combined per event (orders_redis_rate).
    best_pg=0 best_redis=0 best=0
    bench_redis_user
    for _ in $(seq 1 "$rounds"); do
        rcli FLUSHDB >/dev/null
        r=$(field rows_per_s "$("$build/bench_store" raw-read)")
        best_pg=$(max "$best_pg" "$r")
        r=$(orders_redis_rate)
        best_redis=$(max "$best_redis" "$r")
        rcli FLUSHDB >/dev/null
        v=$("$build/esctl" --json projection rebuild orders --dry-run 2>/dev/null |
            sed -n 's/.*"rate":\([0-9]*\).*/\1/p')
        if [ -z "$v" ]; then
            echo "bench: esctl projection rebuild orders --dry-run failed" >&2
            exit 1
        fi
        best=$(max "$best" "$v")
    done
    rcli FLUSHDB >/dev/null
    rcli ACL DELUSER es_bench >/dev/null
    limit=$(awk -v a="$best_pg" -v b="$best_redis" 'BEGIN { print (a < b ? a : b) }')
    echo "# rebuild: orders projection from $events events: $best events/s; raw limits:" \
         "ordered SELECT $best_pg rows/s, Redis pipelined writes of the same shape" \
         "$best_redis events/s (best of $rounds rounds each)"
    report rebuild "$best" events/s "$limit"
fi

# ---- relay -------------------------------------------------------------------

# relay: es-relay copying a store of BENCH_RELAY_EVENTS events (1,000,000;
# the standard workload) into an empty JetStream stream, beside its raw
# limit nats_js_async: a plain client publishing the same messages
# (subjects, bodies, headers) asynchronously, at most BENCH_RELAY_RAW_WINDOW
# unacknowledged, every acknowledgement awaited.  Both are timed by the
# stream's clock (first to last message stored); the best of BENCH_ROUNDS
# rounds each.  Also printed: CPU per event of each process (es-relay or
# the raw client, nats-server, PostgreSQL), for relay/README.md's "where
# the time goes".  BENCH_RELAY_WINDOW sets ES_RELAY_WINDOW (default: the
# relay's own).
# CPU seconds (user + system) process $1 used so far; with "children",
# also those of its children that ended (PostgreSQL's backends).
relay_cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" -v kids="${2:-}" '{
        t = $14 + $15; if (kids != "") t += $16 + $17; printf "%.2f", t / hz }' \
        "/proc/$1/stat" 2>/dev/null || echo 0
}
# CPU seconds of the whole PostgreSQL server: the postmaster, the backends
# it has (live), and those that ended.
relay_pg_cpu_s() {
    local pm kids=0 c
    pm=$(head -n 1 "$ES_RUN_DIR/pg/data/postmaster.pid" 2>/dev/null) || { echo 0; return; }
    for c in $(pgrep -P "$pm"); do kids=$(awk -v a="$kids" -v b="$(relay_cpu_s "$c")" 'BEGIN { print a + b }'); done
    awk -v a="$kids" -v b="$(relay_cpu_s "$pm" children)" 'BEGIN { printf "%.2f", a + b }'
}
# CPU seconds of every process of the running system, one "name seconds"
# line each: the daemons start_system started, nats-server, redis-server
# and the whole PostgreSQL server.
cpu_snapshot() {
    local i
    for i in "${!sys_pids[@]}"; do echo "${sys_names[$i]} $(relay_cpu_s "${sys_pids[$i]}")"; done
    echo "nats-server $(relay_cpu_s "$(cat "$ES_RUN_DIR/nats/nats.pid" 2>/dev/null)")"
    echo "redis-server $(relay_cpu_s "$(cat "$ES_RUN_DIR/redis/redis.pid" 2>/dev/null)")"
    echo "postgres $(relay_pg_cpu_s)"
}
# cpu_per BEFORE AFTER N: each process's CPU microseconds per unit of work
# between two snapshots (files), and their sum.
cpu_per() {
    awk -v n="$3" 'NR == FNR { a[$1] = $2; next }
        { d = ($2 - a[$1]) * 1e6 / n; t += d; printf "%s %.0f us, ", $1, d }
        END { printf "all %.0f us", t }' "$1" "$2"
}
relay_us() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }'; }

if want relay || want nats_js_async; then
    events=${BENCH_RELAY_EVENTS:-1000000}
    raw_window=${BENCH_RELAY_RAW_WINDOW:-1024}
    relay_stream=BENCH_RELAY raw_stream=BENCH_RELAY_RAW
    fresh_db
    load_log "$events" "'order-' || (n % 10000)" "n / 10000" \
        "'{\"type\":\"OrderPlaced\",\"orderId\":\"o-' || n || '\",\"customerId\":\"c-' || (n % 1000)
        || '\",\"items\":[{\"sku\":\"sku-' || (n % 500) || '\",\"qty\":2,\"price\":1999}],\"total\":3998,'
        || '\"currency\":\"EUR\",\"shipTo\":{\"city\":\"Berlin\",\"zip\":\"10115\",\"country\":\"DE\"}}'"
    nats_pid=$(cat "$ES_RUN_DIR/nats/nats.pid")
    relay_pid=
    trap 'if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
    best_raw=0 best=0 raw_cpu="" relay_cpu=""
    for _ in $(seq 1 "$rounds"); do
        n0=$(relay_cpu_s "$nats_pid")
        out=$("$build/bench_relay" raw "$raw_stream" bench.raw "$events" "$raw_window")
        n1=$(relay_cpu_s "$nats_pid")
        r=$(field messages_per_s "$out")
        if [ -z "$r" ]; then
            echo "bench: bench_relay raw failed: $out" >&2
            exit 1
        fi
        if [ "$(max "$best_raw" "$r")" != "$best_raw" ]; then
            best_raw=$r
            raw_cpu="client $(relay_us 0 "$(field cpu_s "$out")" "$events") us, nats-server $(relay_us "$n0" "$n1" "$events") us"
        fi
        "$build/bench_relay" delete "$relay_stream"
        n0=$(relay_cpu_s "$nats_pid") p0=$(relay_pg_cpu_s)
        ES_RELAY_STREAM=$relay_stream ES_RELAY_SUBJECT_PREFIX=bench.relay \
            ES_RELAY_WAKE_SUBJECT=bench.relay.wake ES_RELAY_PORT=$((http_port + 5)) \
            ${BENCH_RELAY_WINDOW:+ES_RELAY_WINDOW=$BENCH_RELAY_WINDOW} \
            "$build/es-relay" >"$work/es-relay.log" 2>&1 &
        relay_pid=$!
        out=$("$build/bench_relay" wait "$relay_stream" "$events") || {
            echo "bench: es-relay did not copy the store:" >&2
            cat "$work/es-relay.log" >&2
            exit 1
        }
        c=$(relay_cpu_s "$relay_pid") n1=$(relay_cpu_s "$nats_pid") p1=$(relay_pg_cpu_s)
        kill "$relay_pid" 2>/dev/null || true
        wait "$relay_pid" 2>/dev/null || true
        relay_pid=
        "$build/bench_relay" delete "$relay_stream"
        v=$(field events_per_s "$out")
        if [ "$(max "$best" "$v")" != "$best" ]; then
            best=$v
            relay_cpu="es-relay $(relay_us 0 "$c" "$events") us, nats-server $(relay_us "$n0" "$n1" "$events") us, postgres $(relay_us "$p0" "$p1" "$events") us"
        fi
    done
    trap 'if [ -n "$cmd_pid" ]; then kill "$cmd_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
    echo "# relay: es-relay copying $events events into an empty stream: $best events/s" \
         "(window ${BENCH_RELAY_WINDOW:-default}); nats_js_async, the same messages from a plain" \
         "client, window $raw_window: $best_raw messages/s (best of $rounds rounds each)"
    echo "# relay CPU per event: $relay_cpu; nats_js_async CPU per message: $raw_cpu"
    report relay "$best" events/s "$best_raw"
    report nats_js_async "$best_raw" messages/s na
fi

# The whole system on ports of its own, against the bench database and a
# JetStream stream of its own.
bench_stream=BENCH
sys_pids=()
sys_names=()
# Peak resident memory (VmHWM) of each daemon of the system, in MB.
report_rss() {
    local i kb
    for i in "${!sys_pids[@]}"; do
        kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/${sys_pids[$i]}/status" 2>/dev/null)
        [ -n "$kb" ] || continue
        report "rss_${sys_names[$i]//-/_}_mb" "$(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }')" MB na
    done
}
stop_system() {
    for p in "${sys_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${sys_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    sys_pids=()
    sys_names=()
}
# Deletes a JetStream stream with one request in the NATS protocol.
nats_delete_stream() {
    [ -z "$external" ] || return 0
    local host=${ES_NATS_URL#nats://} auth="" user pass
    if [[ $host == *@* ]]; then   # nats://user:password@host:port
        auth=${host%%@*}
        host=${host#*@}
        user=${auth%%:*}
        pass=${auth#*:}
        auth=",\"user\":\"$user\",\"pass\":\"$pass\""
    fi
    exec 7<>"/dev/tcp/${host%:*}/${host##*:}" || return 0
    printf 'CONNECT {"verbose":false%s}\r\nPUB $JS.API.STREAM.DELETE.%s 0\r\n\r\nPING\r\n' "$auth" "$1" >&7
    timeout 2 head -c 1 <&7 >/dev/null 2>&1 || true
    exec 7>&-
}
export ES_RELAY_STREAM=$bench_stream ES_RELAY_SUBJECT_PREFIX=bench.events
export ES_RELAY_WAKE_SUBJECT=bench.wake ES_COMMAND_SUBJECT_PREFIX=bench.cmd
export ES_COMMAND_PORT=$http_port ES_QUERY_PORT=$((http_port + 1))
export ES_RELAY_PORT=$((http_port + 2)) ES_PROJECTOR_PORT=$((http_port + 3))
export ES_SAGA_PORT=$((http_port + 4))
# start_daemon BIN PORT_VAR: runs BIN of the system, waits for its /healthz.
start_daemon() {
    local bin=$1 port=${!2}
    "$build/$bin" >"$work/$bin.log" 2>&1 &
    sys_pids+=($!)
    sys_names+=("$bin")
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "bench: $bin did not start:" >&2
    cat "$work/$bin.log" >&2
    exit 1
}
start_system() {
    local d
    [ -z "$external" ] || return 0
    for d in "es-command ES_COMMAND_PORT" "es-relay ES_RELAY_PORT" \
             "es-projector ES_PROJECTOR_PORT" "es-query ES_QUERY_PORT" ${1:+"es-saga ES_SAGA_PORT"}; do
        # shellcheck disable=SC2086
        start_daemon $d
    done
}
# The number of messages in the bench JetStream stream.
stream_msgs() {
    curl -sf -m 2 "http://127.0.0.1:$ES_NATS_HTTP_PORT/jsz?streams=true" 2>/dev/null |
        tr -d ' \n' | grep -o '"name":"'"$bench_stream"'"[^}]*}[^}]*"messages":[0-9]*' |
        grep -o '"messages":[0-9]*$' | cut -d: -f2 || true
}
# The lowest checkpoint (feed sequence) of the projector's projections.
# One process per call (curl; the rest in bash): it is asked five times a
# second while es-projector and Redis share the machine's cores with it,
# and a pipeline of five programs per poll took a fifth of the CPU.
projector_low() {
    local body low="" re='"checkpoint":([0-9]+)(.*)'
    body=$(curl -sf -m 2 "http://127.0.0.1:$ES_PROJECTOR_PORT/readyz" 2>/dev/null) || true
    while [[ $body =~ $re ]]; do
        if [ -z "$low" ] || [ "${BASH_REMATCH[1]}" -lt "$low" ]; then low=${BASH_REMATCH[1]}; fi
        body=${BASH_REMATCH[2]}
    done
    echo "$low"
}

# query_read: the query API's own job, GET /v1/orders/{id} (and a page of
# GET /v1/customers/{id}/orders) at 32 connections over a read model of
# BENCH_QUERY_ORDERS orders (default 100,000) that the relay and the live
# projector built, beside Redis answering the commands the service sends
# for each request in the same round trips, at 32 connections (bench_redis:
# each round trip the MULTI ... EXEC of es_rm_read, with the version's GET
# and the position's HMGET; HGETALL + LRANGE for an order;
# ZREVRANGEBYSCORE, then the same with an HGETALL per order of the page,
# for a customer).
if want query_read || want query_read_customer; then
    keys=${BENCH_QUERY_ORDERS:-100000}
    fresh_db
    load_log "$keys" "'order-o' || lpad(n::text, 12, '0')" "0" \
        "'{\"order_id\":\"o' || lpad(n::text, 12, '0') || '\",\"customer_id\":\"c-'
        || lpad((n % 1000)::text, 12, '0') || '\",\"items\":[{\"sku\":\"sku-'
        || (n % 500) || '\",\"quantity\":2,\"unit_price\":1999}],\"total\":3998,'
        || '\"ship_to\":{\"city\":\"Berlin\",\"zip\":\"10115\",\"country\":\"DE\"}}'"
    rcli FLUSHDB >/dev/null
    nats_delete_stream "$bench_stream"
    trap 'stop_system; rm -rf "$work"' EXIT
    # the read model as users get it: the relay and the live projector
    # copy the loaded store; the last order in place means all are
    start_system
    # the orders projection's keys, version 1 on a fresh store (events/readmodel.c)
    rm=rm:orders:1:
    last=${rm}order:o$(printf %012d $((keys - 1)))
    for _ in $(seq 1 1200); do
        [ "$(rcli EXISTS "$last")" = 1 ] && break
        sleep 0.25
    done
    if [ "$(rcli EXISTS "$last")" != 1 ]; then
        echo "bench: the orders read model did not reach $keys orders in 300 s" >&2
        exit 1
    fi
    query_port=$((http_port + 1))
    for what in order customer; do
        name=query_read
        [ "$what" = customer ] && name=query_read_customer
        want "$name" || continue
        best=0 best_out="" best_raw=0
        for _ in $(seq 1 "$rounds"); do
            n=$keys
            [ "$what" = customer ] && n=1000
            out=$("$build/bench_http" "read-$what" "$query_port" 32 "$secs" "$n")
            if [ "$(max "$best" "$(field per_s "$out")")" != "$best" ]; then
                best=$(field per_s "$out")
                best_out=$out
            fi
            raw_out=$("$build/bench_redis" "read-$what" 32 "$secs" "$n" "$rm") || {
                echo "bench: bench_redis read-$what failed: $raw_out" >&2
                exit 1
            }
            r=$(field per_s "$raw_out")
            best_raw=$(max "$best_raw" "$r")
        done
        echo "# $name: GET $([ "$what" = order ] && echo /v1/orders/{id} || echo /v1/customers/{id}/orders)" \
             "at 32 connections over $keys orders: $best/s, p50 $(field p50_ms "$best_out") ms," \
             "p99 $(field p99_ms "$best_out") ms, errors $(field errors "$best_out"); Redis answering" \
             "the same commands in the same round trips (bench_redis), 32 connections: $best_raw/s" \
             "(best of $rounds rounds each)"
        report "$name" "$best" requests/s "$best_raw"
        report "${name}_p99_ms" "$(field p99_ms "$best_out")" ms na
    done
    stop_system
    nats_delete_stream "$bench_stream"
    rcli FLUSHDB >/dev/null
fi

# projector_apply: the live projector (not the rebuild path) catching up
# BENCH_PROJECTOR_EVENTS (default 1,000,000) OrderPlaced events from
# JetStream into every projection, from start to the last checkpoint;
# limit: Redis taking, pipelined, the writes those projections make per
# event (the orders projection's HSET, RPUSH and ZADD, the dashboard's two
# HINCRBYs), combined per event.
if want projector_apply; then
    events=${BENCH_PROJECTOR_EVENTS:-1000000}
    fresh_db
    load_orders "$events"
    total=$(psql_db -c "SELECT count(*) FROM es_events")
    nats_delete_stream "$bench_stream"
    trap 'stop_system; rm -rf "$work"' EXIT
    # the stream first, by the relay alone
    start_daemon es-relay ES_RELAY_PORT
    for _ in $(seq 1 3600); do
        [ "$(stream_msgs)" = "$total" ] && break
        sleep 0.5
    done
    stop_system
    if [ "$(stream_msgs)" != "$total" ]; then
        echo "bench: the relay did not copy $total events into $bench_stream" >&2
        exit 1
    fi
    best=0 best_redis=0
    bench_redis_user
    for _ in $(seq 1 "$rounds"); do
        rcli FLUSHDB >/dev/null
        best_redis=$(max "$best_redis" "$(orders_redis_rate dashboard)")
        rcli FLUSHDB >/dev/null
        t0=$(date +%s.%N)
        cpu0=$(redis_cpu_us)
        start_daemon es-projector ES_PROJECTOR_PORT
        for _ in $(seq 1 18000); do
            low=$(projector_low)
            [ -n "$low" ] && [ "$low" -ge "$total" ] && break
            sleep 0.2
        done
        t1=$(date +%s.%N)
        proj_cpu_us=$(awk -v a="$cpu0" -v b="$(redis_cpu_us)" -v n="$events" 'BEGIN { printf "%.1f", (b - a) / n }')
        rss=$(report_rss | sed -n 's/.*value=\([0-9.]*\).*/\1/p')
        stop_system
        if [ -z "$low" ] || [ "$low" -lt "$total" ]; then
            echo "bench: the projector did not reach $total (at ${low:-nothing})" >&2
            exit 1
        fi
        best=$(max "$best" "$(awk -v n="$events" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }')")
    done
    rcli ACL DELUSER es_bench >/dev/null
    rcli FLUSHDB >/dev/null
    nats_delete_stream "$bench_stream"
    echo "# projector_apply: es-projector from start to every projection's checkpoint at the" \
         "end of $events OrderPlaced events in JetStream: $best events/s; raw limit: Redis" \
         "taking the same writes per event, pipelined: $best_redis events/s (best of $rounds" \
         "rounds each); es-projector's peak resident memory ${rss:-?} MB; Redis CPU per event:" \
         "${proj_cpu_us:-?} us for the projector's batches, $(cat "$work/redis_raw_cpu_us") us for the" \
         "same writes sent bare (last round)"
    report projector_apply "$best" events/s "$best_redis"
fi

# `make bench-growth` (BENCH=growth; never part of a plain `make bench`):
# how the costs move as the store grows.  The same figures on a store of
# BENCH_GROWTH_EVENTS (default 10,000,000) events of the standard workload
# and on a small one, as ratios big/small: store_append_1 and
# http_append_1 (small: an empty store), store_feed_read of
# BENCH_FEED_EVENTS (default 1,000,000) events from the start and from the
# tail, and rebuild (the orders projection, dry run: small is a store of
# BENCH_FEED_EVENTS events); then the database's and es_events' sizes per
# million events.  The three stores are three databases that live side by
# side, and each round measures a figure on the big one and at once on
# its small one, in turn: a shared machine's load then weighs on both
# sides alike (measured one store after the other, 20 minutes apart, the
# ratios moved with other work's load, not with the store).  The append
# rounds come after all the reads: their data is not shaped for the
# orders projection, which the rebuilds replay.
growth_use() {      # growth_use DB: later commands work on database DB
    db=$1
    export ES_PG_CONNINFO="$base dbname=$db"
    eval "ES_TOKEN=\$growth_token_$db"
    export ES_TOKEN
}
growth_fresh() {    # growth_fresh DB: a fresh database DB, then growth_use DB
    db=$1
    export ES_PG_CONNINFO="$base dbname=$db"
    fresh_db
    printf -v "growth_token_$db" '%s' "$ES_TOKEN"
}
growth_load() {     # growth_load FROM TO: events n of [FROM, TO)
    local i
    for ((i = $1; i < $2; i += 100000)); do
        psql_db <<SQL
INSERT INTO es_events (stream_id, category, version, event_id, type, data)
SELECT 'order-' || (n % 10000), 'order', n / 10000, gen_random_uuid(), 'OrderPlaced',
       ('{"order_id":"o-' || (n % 10000) || '","customer_id":"c-' || (n % 1000)
        || '","items":[{"sku":"sku-' || (n % 500) || '","quantity":2,"unit_price":1999}],'
        || '"total":3998,"ship_to":{"city":"Berlin","zip":"10115","country":"DE"}}')::jsonb
  FROM generate_series($i, $((i + 99999 < $2 - 1 ? i + 99999 : $2 - 1))) n;
SQL
    done
    psql_db <<'SQL'
INSERT INTO es_streams SELECT stream_id, max(version) FROM es_events
 WHERE category = 'order' GROUP BY stream_id
ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version;
VACUUM ANALYZE es_events;
SQL
}
growth_rebuild() {  # one dry-run rebuild of the orders projection, events/s
    local v
    rcli FLUSHDB >/dev/null
    v=$("$build/esctl" --json projection rebuild orders --dry-run 2>/dev/null |
        sed -n 's/.*"rate":\([0-9]*\).*/\1/p')
    [ -n "$v" ] || { echo "bench: esctl projection rebuild orders --dry-run failed" >&2; exit 1; }
    rcli FLUSHDB >/dev/null
    echo "$v"
}
growth_feed() {     # growth_feed AFTER: reading BENCH_FEED_EVENTS after AFTER, events/s
    field events_per_s "$("$build/bench_store" feed "$1" "$small")"
}
if [[ ",$only," == *",growth,"* ]]; then
    big=${BENCH_GROWTH_EVENTS:-10000000}
    small=${BENCH_FEED_EVENTS:-1000000}
    bench_redis_user
    # an empty store (appends), one of $small events (feed reads, rebuild)
    growth_fresh es_bench_empty
    growth_fresh es_bench_small
    growth_load 0 "$small"
    growth_fresh es_bench
    t0=$(date +%s)
    growth_load 0 "$big"
    echo "# growth: loaded $big events in $(($(date +%s) - t0)) s"
    tail_after=$(psql_db -F - -c "SELECT transaction_id, global_position FROM es_events
                                   ORDER BY transaction_id DESC, global_position DESC
                                   OFFSET $small LIMIT 1")
    read -r db_bytes table_bytes index_bytes n <<<"$(psql_db -F ' ' -c "
        SELECT pg_database_size(current_database()), pg_table_size('es_events'),
               pg_indexes_size('es_events'), count(*) FROM es_events")"
    rebuild_big=0 rebuild_small=0 feed_start=0 feed_tail=0 feed_small=0 cold_start=0 cold_tail=0
    append_big=0 append_small=0 http_big=0 http_small=0
    for _ in $(seq 1 "$rounds"); do
        growth_use es_bench_small
        v=$(growth_rebuild) || exit 1
        rebuild_small=$(max "$rebuild_small" "$v")
        feed_small=$(max "$feed_small" "$(growth_feed 0-0)")
        growth_use es_bench
        v=$(growth_rebuild) || exit 1
        rebuild_big=$(max "$rebuild_big" "$v")
        # The small side's read follows its rebuild, which read the same
        # events: its pages are in PostgreSQL's buffers.  The big rebuild
        # read nine million events after the start's (and the tail's
        # share the buffers with them), so a first read of either range
        # copies its pages in from the kernel's cache.  That first read is
        # the cold figure; the figure compared is a second read, in the
        # small side's state, so the ratio shows what the store's size
        # costs and not what the cache holds.
        cold_start=$(max "$cold_start" "$(growth_feed 0-0)")
        feed_start=$(max "$feed_start" "$(growth_feed 0-0)")
        cold_tail=$(max "$cold_tail" "$(growth_feed "$tail_after")")
        feed_tail=$(max "$feed_tail" "$(growth_feed "$tail_after")")
    done
    for _ in $(seq 1 "$rounds"); do
        for side in es_bench es_bench_empty; do
            growth_use "$side"
            a=$(field events_per_s "$("$build/bench_store" append 8 1 "$secs")")
            h=$(field per_s "$(http_round append)")
            if [ "$side" = es_bench ]; then
                append_big=$(max "$append_big" "$a") http_big=$(max "$http_big" "$h")
            else
                append_small=$(max "$append_small" "$a") http_small=$(max "$http_small" "$h")
            fi
        done
    done
    for side in es_bench_empty es_bench_small; do
        "$pgbin/psql" "$base dbname=postgres" -qAt -c "DROP DATABASE IF EXISTS $side WITH (FORCE)" \
            >/dev/null 2>&1
    done
    growth_use es_bench
    rcli ACL DELUSER es_bench >/dev/null
    mb_per_m() { awk -v b="$1" -v n="$n" 'BEGIN { printf "%.0f", b / 1048576 / (n / 1e6) }'; }
    echo "# growth: $n events: database $(mb_per_m "$db_bytes") MB, es_events $(mb_per_m "$table_bytes") MB" \
         "and its indexes $(mb_per_m "$index_bytes") MB per million events"
    echo "# growth: each figure on $big events (value) beside the same on the small store (limit)," \
         "measured in turn, best of $rounds rounds; appends: empty store; feed read and rebuild:" \
         "$small events"
    echo "# growth: the feed reads on $big events as first read after the big rebuild (pages" \
         "copied in from the kernel's cache): from the start $cold_start events/s, from the tail" \
         "$cold_tail events/s; the figures below are the second read"
    report growth_store_append_1 "$append_big" events/s "$append_small"
    report growth_http_append_1 "$http_big" requests/s "$http_small"
    report growth_store_feed_read_start "$feed_start" events/s "$feed_small"
    report growth_store_feed_read_tail "$feed_tail" events/s "$feed_small"
    report growth_rebuild "$rebuild_big" events/s "$rebuild_small"
fi

if want visibility_p50_ms || want visibility_p99_ms; then
    fresh_db
    rcli FLUSHDB >/dev/null
    nats_delete_stream "$bench_stream"
    trap 'stop_system; rm -rf "$work"' EXIT
    start_system
    "$build/bench_http" visibility "$http_port" "$((http_port + 1))" 1000 2 >/dev/null  # warm-up
    cpu_snapshot >"$work/cpu0"
    out=$("$build/bench_http" visibility "$http_port" "$((http_port + 1))" 1000 "$secs")
    sleep 1                     # the read side's last batches
    cpu_snapshot >"$work/cpu1"
    rss=$(report_rss)
    stop_system
    nats_delete_stream "$bench_stream"
    rcli FLUSHDB >/dev/null
    echo "# visibility: orders placed at 1,000/s, each then read from the query service with" \
         "its position: $(field per_s "$out") commands/s, errors $(field errors "$out")," \
         "acknowledged -> visible p50 $(field p50_ms "$out") ms, p99 $(field p99_ms "$out") ms"
    echo "# visibility: CPU per order placed and read back (all stages, no saga):" \
         "$(cpu_per "$work/cpu0" "$work/cpu1" "$(field requests "$out")")"
    report visibility_p50_ms "$(field p50_ms "$out")" ms na
    report visibility_p99_ms "$(field p99_ms "$out")" ms na
    echo "# peak resident memory of each daemon under that load:"
    echo "$rss"
fi

# A fresh system with the saga manager: customers c-0..999 with money and
# sku-0..499 in stock, so that every order the load generators place can
# be confirmed.
saga_system_up() {
    fresh_db
    rcli FLUSHDB >/dev/null
    nats_delete_stream "$bench_stream"
    trap 'stop_system; rm -rf "$work"' EXIT
    export ES_GATEWAY_NOTIFICATION_TRANSPORT=null ES_GATEWAY_EMAIL_TRANSPORT=null
    start_system with-saga
    { for c in $(seq 0 999); do echo "customers/c-$c/deposits amount"; done
      for k in $(seq 0 499); do echo "inventory/sku-$k/restock quantity"; done; } |
        xargs -P 8 -L 1 sh -c 'curl -sf -o /dev/null -X POST -H "Content-Type: application/json" \
            -H "Authorization: Bearer $ES_TOKEN" \
            "http://127.0.0.1:'"$http_port"'/v1/$0" -d "{\"$1\":1000000000}"'
}
# The order sagas' work rows (sagas not yet ended).
saga_backlog() { psql_db -c "SELECT count(*) FROM es_saga_work WHERE flow = 'order'"; }
# Waits up to SECONDS (default 120) for every order saga to end; true when
# none is left.  Polls twice a second with a check that stops at the first
# row: the poll (a psql session each time) is the bench's own load, and
# its CPU would count in the sagas' CPU figure.
saga_drain() {
    local i
    for i in $(seq 1 $((${1:-120} * 2))); do
        [ "$(psql_db -c "SELECT EXISTS (SELECT 1 FROM es_saga_work WHERE flow = 'order')")" = f ] &&
            return 0
        sleep 0.5
    done
    return 1
}
# From the store: saga_n (orders confirmed), saga_tput (confirmed per
# second, first placed to last confirmed), saga_p50, saga_p99 (placed ->
# confirmed, ms, over the confirmed orders), saga_per (events written per
# saga).
saga_figures() {
    local span events
    read -r saga_n span saga_p50 saga_p99 events <<<"$(psql_db -F ' ' -c "
        WITH p AS (SELECT data->>'order_id' AS id, recorded_at AS t FROM es_events
                   WHERE type = 'OrderPlaced' AND recorded_at >= '$since'),
             c AS (SELECT data->>'order_id' AS id, recorded_at AS t FROM es_events
                   WHERE type = 'OrderConfirmed' AND recorded_at >= '$since')
        SELECT count(*), coalesce(extract(epoch FROM max(c.t) - min(p.t)), 0),
               coalesce(round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.t - p.t)) * 1000)::numeric, 2), 0),
               coalesce(round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM c.t - p.t)) * 1000)::numeric, 2), 0),
               (SELECT count(*) FROM es_events WHERE (category IN ('order', 'saga', 'reservation', 'shipment')
                  OR type IN ('PaymentCharged', 'StockReserved'))
                  AND recorded_at >= '$since')
          FROM p JOIN c USING (id)")"
    saga_tput=$(awk -v n="$saga_n" -v s="$span" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
    saga_per=$(awk -v e="$events" -v n="$saga_n" 'BEGIN { printf "%.1f", (n > 0 ? e / n : 0) }')
}

# One run of the order sagas: orders placed at RATE/s for $secs s on a
# fresh system, every saga left to end; sets saga_placed, saga_errors, the
# figures of saga_figures, saga_phases (where the workers' time went, from
# es-saga's /metrics) and rss.
saga_run() {
    local rate=$1 out metrics
    saga_system_up
    cpu_snapshot >"$work/cpu0"
    out=$("$build/bench_http" place "$http_port" "$rate" "$secs")
    saga_placed=$(field per_s "$out")
    saga_errors=$(field errors "$out")
    saga_drain 120 || true      # every saga ends (completed or compensated) first
    cpu_snapshot >"$work/cpu1"
    metrics=$(curl -sf -H "Authorization: Bearer $ES_TOKEN" \
                   "http://127.0.0.1:$ES_SAGA_PORT/metrics" || true)
    rss=$(report_rss | grep rss_es_saga_mb || true)
    stop_system
    unset ES_NATS_SUBSCRIBERS
    nats_delete_stream "$bench_stream"
    saga_figures
    saga_cpu=$(cpu_per "$work/cpu0" "$work/cpu1" "$saga_n")
    rcli FLUSHDB >/dev/null
    # per phase: calls per saga, ms per call, seconds in all
    saga_phases=$(awk -v n="$saga_n" '
        /^es_saga_phase_calls_total/ { split($1, a, "\""); calls[a[2]] = $2 }
        /^es_saga_phase_seconds_total/ { split($1, a, "\""); secs[a[2]] = $2; order[++k] = a[2] }
        END { for (i = 1; i <= k; i++) { p = order[i]; if (calls[p] == 0) continue;
                  printf "%s %.2f/saga %.2f ms/call %.1f s; ", p, (n > 0 ? calls[p] / n : 0),
                         secs[p] * 1000 / calls[p], secs[p] }
              if (empty != "") printf "claims that found nothing %.2f/saga", (n > 0 ? empty / n : 0) }
        /^es_saga_claims_empty_total/ { empty = $2 }' <<<"$metrics")
}

if want saga_orders || want saga_orders_p99_ms; then
    # throughput: offered faster than the sagas can end, so the backlog
    # drains at the manager's rate; latency: offered at BENCH_SAGA_RATE
    fresh_db
    raw=na
    [ -n "$external" ] || raw=$(raw_insert 1 8)     # one-row INSERT transactions at 8 clients
    if want saga_orders; then
        rate=${BENCH_SAGA_RATE_MAX:-600}
        saga_run "$rate"
        limit=na
        [ "$raw" = na ] ||
            limit=$(awk -v r="$raw" -v p="$saga_per" 'BEGIN { printf "%.0f", (p > 0 ? r / p : 0) }')
        echo "# saga_orders: orders offered at $rate/s for ${secs}s ($saga_placed/s placed," \
             "errors $saga_errors): $saga_n confirmed end to end at $saga_tput/s, placed ->" \
             "confirmed p50 $saga_p50 ms, p99 $saga_p99 ms; $saga_per events written per saga;" \
             "raw limit: pgbench one-row INSERT transactions at 8 clients $raw/s / $saga_per"
        echo "# saga_orders: where the workers' time went: $saga_phases"
        echo "# saga_orders: CPU per order saga, placed to ended (the commands included): $saga_cpu"
        report saga_orders "$saga_tput" sagas/s "$limit"
        [ -z "$rss" ] || echo "$rss"
    fi
    if want saga_orders_p99_ms; then
        rate=${BENCH_SAGA_RATE:-200}
        saga_run "$rate"
        echo "# saga_orders_p99_ms: orders offered at $rate/s for ${secs}s ($saga_placed/s" \
             "placed, errors $saga_errors): $saga_n confirmed at $saga_tput/s, placed ->" \
             "confirmed p50 $saga_p50 ms, p99 $saga_p99 ms"
        echo "# saga_orders_p99_ms: where the workers' time went: $saga_phases"
        report saga_orders_p99_ms "$saga_p99" ms na
        [ -z "$rss" ] || echo "$rss"
    fi
fi

# pipeline_orders: the highest offered order rate the whole pipeline keeps
# up with, the figure a deployment is sized by.  Rates of
# BENCH_PIPELINE_RATES are offered in turn, each for BENCH_PIPELINE_SECONDS
# (default 60) on a fresh system with the saga manager, by the visibility
# load (each order placed, then read back from es-query with its
# position), after a warm-up at the same rate whose orders do not count
# (BENCH_PIPELINE_WARMUP seconds, default 5; 0: none).  A rate passes
# when: es-command took at least 95 % of it with no error;
# acknowledged -> visible p99 < 100 ms; the saga backlog stayed
# bounded (its work rows at the end, averaged over a second, at most 10 %
# + 5 above those after 10 s: a strict "no more" fails on the noise of a
# steady backlog); every saga ended within 60 s of the load's end; and
# placed -> confirmed p99 < 1 s.  The first rate that fails ends the climb
# and names the stage that limits it.
if want pipeline_orders; then
    psecs=${BENCH_PIPELINE_SECONDS:-60}
    rates=${BENCH_PIPELINE_RATES:-50 100 200 300 400 600 800 1000 1500 2000}
    best=0
    limiter="none within the rates offered ($rates)"
    backlog_avg() {
        local i sum=0
        for i in 1 2 3 4 5; do sum=$((sum + $(saga_backlog))); sleep 0.2; done
        echo $((sum / 5))
    }
    since_all=$since
    for rate in $rates; do
        saga_system_up
        # Warm-up: the same load for BENCH_PIPELINE_WARMUP seconds (default
        # 5), left to end, outside the figures: this figure sizes a running
        # deployment, not one still opening its sessions and filling its
        # caches (docs/ARCHITECTURE.md, "A cold start").
        if [ "${BENCH_PIPELINE_WARMUP:-5}" -gt 0 ]; then
            "$build/bench_http" visibility "$http_port" "$((http_port + 1))" "$rate" \
                "${BENCH_PIPELINE_WARMUP:-5}" >/dev/null
            saga_drain 60 || true
        fi
        since=$(psql_db -c "SELECT now()")
        (sleep 10; backlog_avg >"$work/backlog10") &
        sampler=$!
        out=$("$build/bench_http" visibility "$http_port" "$((http_port + 1))" "$rate" "$psecs")
        backlog_end=$(backlog_avg)
        wait "$sampler" || true
        backlog_10=$(cat "$work/backlog10" 2>/dev/null || echo 0)
        drained=yes
        saga_drain 60 || drained=no
        stop_system
        unset ES_NATS_SUBSCRIBERS
        nats_delete_stream "$bench_stream"
        saga_figures
        since=$since_all
        rcli FLUSHDB >/dev/null
        placed=$(field per_s "$out")
        errors=$(field errors "$out")
        vis_p99=$(field p99_ms "$out")
        echo "# pipeline_orders: $rate/s offered for ${psecs}s: $placed/s placed and read back," \
             "errors $errors, visibility p99 $vis_p99 ms; saga work rows $backlog_10 after 10 s," \
             "$backlog_end at the end, all ended: $drained; placed -> confirmed p99 $saga_p99 ms" \
             "($saga_n confirmed)"
        fail=$(awk -v r="$rate" -v p="$placed" -v e="$errors" -v v="$vis_p99" -v b10="$backlog_10" \
                   -v be="$backlog_end" -v d="$drained" -v s="$saga_p99" 'BEGIN {
            if (e > 0 || p < 0.95 * r) printf "es-command (%s/s placed of %s/s offered, %s errors)", p, r, e
            else if (v >= 100) printf "the read side: relay, projector, query (visibility p99 %s ms)", v
            else if (be > b10 * 1.1 + 5) printf "the saga manager (its backlog grew from %s to %s work rows)", b10, be
            else if (d != "yes") printf "the saga manager (sagas still running 60 s after the load)"
            else if (s >= 1000) printf "the saga manager (placed -> confirmed p99 %s ms)", s }')
        if [ -n "$fail" ]; then
            limiter="$fail at $rate/s"
            break
        fi
        best=$rate
    done
    echo "# pipeline_orders: limited by $limiter"
    report pipeline_orders "$best" orders/s na
fi
