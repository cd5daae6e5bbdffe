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

scripts/servers.sh start >/dev/null
eval "$(scripts/servers.sh env)"
pgbin=/usr/lib/postgresql/15/bin
base="host=$ES_PG_HOST port=$ES_PG_PORT user=$ES_PG_USER"
db=es_bench
export ES_PG_CONNINFO="$base dbname=$db"
work=$(mktemp -d)
cmd_pid=
trap 'if [ -n "$cmd_pid" ]; then kill "$cmd_pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

want() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; }
psql_db() { "$pgbin/psql" "$ES_PG_CONNINFO" -v ON_ERROR_STOP=1 -qAt "$@"; }

fresh_db() {
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
INSERT INTO es_streams SELECT stream_id, max(version) FROM es_events GROUP BY stream_id;
INSERT INTO bench_raw (stream_id, version, event_id, type, data, metadata, recorded_at)
SELECT stream_id, version, event_id, type, data, metadata, recorded_at
  FROM es_events ORDER BY transaction_id, global_position;
VACUUM ANALYZE es_events;
VACUUM ANALYZE bench_raw;
SQL
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
        r=$(raw_insert "$rows" "$clients")
        fresh_db
        out=$("$@")
        v=$(field "$key" "$out")
        if [ -z "$v" ] || [ -z "$r" ]; then
            echo "bench: a round of $* failed: $out" >&2
            exit 1
        fi
        best_raw=$(max "$best_raw" "$r")
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
if want http_append_1 || want http_append_1_noauth; then
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
    REDISCLI_AUTH=$ES_REDIS_PASSWORD redis-cli --user "$ES_REDIS_USER" -h "$ES_REDIS_HOST" \
        -p "$ES_REDIS_PORT" -n "$ES_REDIS_DB" "$@"
}

# redis-benchmark takes a password only as an argument: it runs as a user
# of its own with a password made for this run, limited to its keys, and
# removed at the end.
bench_redis_pw=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
bench_redis_user() {
    printf '>%s' "$bench_redis_pw" |
        rcli -x ACL SETUSER es_bench reset on '~order:*' '~orderhist:*' '~custorders:*' \
            +@all -@admin -@dangerous +select >/dev/null
}
redis_rate() {
    redis-benchmark -h "$ES_REDIS_HOST" -p "$ES_REDIS_PORT" --dbnum "$ES_REDIS_DB" -n 300000 \
        --user es_bench -a "$bench_redis_pw" --no-auth-warning \
        -P 100 -r 1000000 --csv "$@" 2>/dev/null | tail -n 1 | awk -F'","' '{ print $(NF - 6) }'
}

if want rebuild; then
    events=${BENCH_REBUILD_EVENTS:-1000000}
    fresh_db
    # One order per stream, shaped as the command service writes them.
    load_log "$events" "'order-o' || n" "0" \
        "'{\"order_id\":\"o' || n || '\",\"customer_id\":\"c-' || (n % 1000) || '\",\"items\":[{\"sku\":\"sku-'
        || (n % 500) || '\",\"quantity\":2,\"unit_price\":1999}],\"total\":3998,'
        || '\"ship_to\":{\"city\":\"Berlin\",\"zip\":\"10115\",\"country\":\"DE\"}}'"
    # The raw limits: the ordered read of the same rows, and Redis taking
    # pipelined the writes the orders projection makes per OrderPlaced
    # (one 12-field HSET, one RPUSH, one ZADD), combined per event.
    hset=(HSET 'order:__rand_int__' order_id o-123456 customer_id c-123
          items '[{"sku":"sku-12","quantity":2,"unit_price":1999}]' total 3998 status pending
          payment '{"status":"pending"}' inventory '{"status":"pending"}'
          shipment '{"status":"pending"}' seq 123456 created_at 2026-11-22T00:00:00.000000Z
          updated_at 2026-11-22T00:00:00.000000Z
          ship_to '{"city":"Berlin","zip":"10115","country":"DE"}')
    rpush=(RPUSH 'orderhist:__rand_int__'
           '{"type":"OrderPlaced","at":"2026-11-22T00:00:00.000000Z","position":"1234567-123456","total":3998}')
    zadd=(ZADD 'custorders:__rand_int__' __rand_int__ o-__rand_int__)
    best_pg=0 best_redis=0 best=0
    bench_redis_user
    for _ in $(seq 1 "$rounds"); do
        rcli FLUSHDB >/dev/null
        r=$(field rows_per_s "$("$build/bench_store" raw-read)")
        best_pg=$(max "$best_pg" "$r")
        a=$(redis_rate "${hset[@]}"); b=$(redis_rate "${rpush[@]}"); c=$(redis_rate "${zadd[@]}")
        r=$(awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN { printf "%.0f", 1 / (1/a + 1/b + 1/c) }')
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
start_system() {
    local name port_var port bin
    export ES_RELAY_STREAM=$bench_stream ES_RELAY_SUBJECT_PREFIX=bench.events
    export ES_RELAY_WAKE_SUBJECT=bench.wake ES_COMMAND_SUBJECT_PREFIX=bench.cmd
    export ES_COMMAND_PORT=$http_port ES_QUERY_PORT=$((http_port + 1))
    export ES_RELAY_PORT=$((http_port + 2)) ES_PROJECTOR_PORT=$((http_port + 3))
    export ES_SAGA_PORT=$((http_port + 4))
    for d in "es-command ES_COMMAND_PORT" "es-relay ES_RELAY_PORT" \
             "es-projector ES_PROJECTOR_PORT" "es-query ES_QUERY_PORT" ${1:+"es-saga ES_SAGA_PORT"}; do
        read -r bin port_var <<<"$d"
        port=${!port_var}
        "$build/$bin" >"$work/$bin.log" 2>&1 &
        sys_pids+=($!)
        sys_names+=("$bin")
        for _ in $(seq 1 100); do
            curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && continue 2
            sleep 0.1
        done
        echo "bench: $bin did not start:" >&2
        cat "$work/$bin.log" >&2
        exit 1
    done
}

if want visibility_p50_ms || want visibility_p99_ms; then
    fresh_db
    rcli FLUSHDB >/dev/null
    nats_delete_stream "$bench_stream"
    trap 'stop_system; rm -rf "$work"' EXIT
    start_system
    "$build/bench_http" visibility "$http_port" "$((http_port + 1))" 1000 2 >/dev/null  # warm-up
    out=$("$build/bench_http" visibility "$http_port" "$((http_port + 1))" 1000 "$secs")
    rss=$(report_rss)
    stop_system
    nats_delete_stream "$bench_stream"
    rcli FLUSHDB >/dev/null
    echo "# visibility: orders placed at 1,000/s, each then read from the query service with" \
         "its position: $(field per_s "$out") commands/s, errors $(field errors "$out")," \
         "acknowledged -> visible p50 $(field p50_ms "$out") ms, p99 $(field p99_ms "$out") ms"
    report visibility_p50_ms "$(field p50_ms "$out")" ms na
    report visibility_p99_ms "$(field p99_ms "$out")" ms na
    echo "# peak resident memory of each daemon under that load:"
    echo "$rss"
fi

# One run of the order sagas: orders placed at RATE/s for $secs s on a
# fresh system, every saga left to end; sets saga_n (confirmed), saga_tput
# (confirmed per second, first placed to last confirmed), saga_p50,
# saga_p99 (placed -> confirmed, ms), saga_per (events written per saga),
# saga_placed, saga_errors, saga_phases (where the workers' time went,
# from es-saga's /metrics) and rss.
saga_run() {
    local rate=$1 out left metrics span events
    fresh_db
    rcli FLUSHDB >/dev/null
    nats_delete_stream "$bench_stream"
    trap 'stop_system; rm -rf "$work"' EXIT
    export ES_GATEWAY_NOTIFICATION_TRANSPORT=null ES_GATEWAY_EMAIL_TRANSPORT=null
    # es-command serves each context's commands on this many subscriptions:
    # with es-saga's 32 workers, 4 (its default) make the commands queue
    export ES_NATS_SUBSCRIBERS=${BENCH_SAGA_SUBSCRIBERS:-16}
    start_system with-saga
    # customers c-0..999 with money, sku-0..499 in stock
    { for c in $(seq 0 999); do echo "customers/c-$c/deposits amount"; done
      for k in $(seq 0 499); do echo "inventory/sku-$k/restock quantity"; done; } |
        xargs -P 8 -L 1 sh -c 'curl -sf -o /dev/null -X POST -H "Content-Type: application/json" \
            -H "Authorization: Bearer $ES_TOKEN" \
            "http://127.0.0.1:'"$http_port"'/v1/$0" -d "{\"$1\":1000000000}"'
    out=$("$build/bench_http" place "$http_port" "$rate" "$secs")
    saga_placed=$(field per_s "$out")
    saga_errors=$(field errors "$out")
    # every saga ends (completed or compensated) before the figures are read
    for _ in $(seq 1 600); do
        left=$(psql_db -c "SELECT count(*) FROM es_saga_work WHERE flow = 'order'")
        [ "$left" = 0 ] && break
        sleep 0.2
    done
    metrics=$(curl -sf -H "Authorization: Bearer $ES_TOKEN" \
                   "http://127.0.0.1:$ES_SAGA_PORT/metrics" || true)
    rss=$(report_rss | grep rss_es_saga_mb || true)
    stop_system
    unset ES_NATS_SUBSCRIBERS
    nats_delete_stream "$bench_stream"
    rcli FLUSHDB >/dev/null
    read -r saga_n span saga_p50 saga_p99 events <<<"$(psql_db -F ' ' -c "
        WITH p AS (SELECT data->>'order_id' AS id, recorded_at AS t FROM es_events
                   WHERE type = 'OrderPlaced'),
             c AS (SELECT data->>'order_id' AS id, recorded_at AS t FROM es_events
                   WHERE type = 'OrderConfirmed')
        SELECT count(*), extract(epoch FROM max(c.t) - min(p.t)),
               round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM c.t - p.t)) * 1000)::numeric, 2),
               round((percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM c.t - p.t)) * 1000)::numeric, 2),
               (SELECT count(*) FROM es_events WHERE category IN ('order', 'saga', 'reservation', 'shipment')
                  OR type IN ('PaymentCharged', 'StockReserved'))
          FROM p JOIN c USING (id)")"
    saga_tput=$(awk -v n="$saga_n" -v s="$span" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
    saga_per=$(awk -v e="$events" -v n="$saga_n" 'BEGIN { printf "%.1f", (n > 0 ? e / n : 0) }')
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
    raw=$(raw_insert 1 8)           # one-row INSERT transactions at 8 clients
    if want saga_orders; then
        rate=${BENCH_SAGA_RATE_MAX:-600}
        saga_run "$rate"
        limit=$(awk -v r="$raw" -v p="$saga_per" 'BEGIN { printf "%.0f", (p > 0 ? r / p : 0) }')
        echo "# saga_orders: orders offered at $rate/s for ${secs}s ($saga_placed/s placed," \
             "errors $saga_errors): $saga_n confirmed end to end at $saga_tput/s, placed ->" \
             "confirmed p50 $saga_p50 ms, p99 $saga_p99 ms; $saga_per events written per saga;" \
             "raw limit: pgbench one-row INSERT transactions at 8 clients $raw/s / $saga_per"
        echo "# saga_orders: where the workers' time went: $saga_phases"
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
