#!/usr/bin/env bash
# cluster_test.sh - `make cluster-test`: brings the highly available
# topology up (scripts/cluster.sh, whose demo must pass), then
#   1. appends through HAProxy, kills -9 the PostgreSQL primary (its
#      Patroni and its postmaster: the node dies), and checks that appends
#      resume through HAProxy on the promoted standby and that every
#      acknowledged append survived (synchronous replication);
#   2. brings the dead node back as the campaign does and checks that it
#      is the synchronous standby again within CLUSTER_TEST_REJOIN_SECS
#      (120) seconds;
#   3. pauses the primary (SIGSTOP of its Patroni and every PostgreSQL
#      process of the node) until the standby is promoted, resumes it, and
#      checks that the deposed primary acknowledges no write (a row
#      inserted on it straight away, not through HAProxy, is never
#      committed where the cluster can see it) and rejoins as the standby;
#   4. kills -9 the Redis primary and checks that Sentinel promotes the
#      replica and the projections go on (a read with consistent_with
#      after a new command answers);
# then tears everything down and checks nothing is left.  Prints how long
# each failover took (not a pass/fail criterion but for the 30 s bound
# of PostgreSQL).
#
#   scripts/cluster_test.sh [BUILD_DIR]     (CLUSTER_TEST_KEEP=1: no up/down)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${1:-build/plain}
CL=${CLUSTER_DIR:-$root/.run/cluster}
keep=${CLUSTER_TEST_KEEP:-}
failures=0

say() { echo "cluster-test: $*"; }
fail() { echo "cluster-test: FAIL: $*" >&2; failures=$((failures + 1)); }
now_ms() { date +%s%3N; }

if [[ -z $keep ]]; then
    trap 'scripts/cluster.sh down || true' EXIT
    out=$(scripts/cluster.sh up "$build" 2>&1) || { echo "$out" | tail -n 40; fail "cluster.sh up"; exit 1; }
    echo "$out" | grep -E '^cluster|^token' || true
    # the demo's sagas ended as make up's do
    for want in '"type":"order","state":"completed"' '"type":"order","state":"compensated"' \
                '"type":"registration","state":"completed"' '"type":"registration","state":"compensated"'; do
        grep -qF "$want" <<<"$out" || fail "the demo has no saga with $want"
    done
    say "demo passed"
fi

eval "$(scripts/cluster.sh env)"
token=$(cat "$CL/admin.token")
cmd="http://127.0.0.1:$ES_COMMAND_PORT"
qry="http://127.0.0.1:$ES_QUERY_PORT"
base=${CLUSTER_PORT_BASE:-17400}
rest=($((base + 12)) $((base + 13)))
sku="sku-failover-$(date +%s)"
declare -A seen=()
acked=0
unsure=0   # appends that failed: not acknowledged, yet may have been made
last_pos=""

# restock: one append through HAProxy; true when acknowledged.
restock() {
    local a
    a=$(curl -s -m 5 -X POST "$cmd/v1/inventory/$sku/restock" -H 'Content-Type: application/json' \
        -H "Authorization: Bearer $token" -d '{"quantity":1}' 2>/dev/null) || a="(no answer in 5 s)"
    if [[ $a != *'"position":"'* ]]; then
        unsure=$((unsure + 1))
        # each kind of failure once, with when it was first seen
        a=$(sed 's/"message":"[^"]*"//' <<<"${a:-(closed)}")
        [[ -n ${t0:-} && -z ${seen[$a]:-} ]] && { seen[$a]=1; say "  +$(($(now_ms) - t0)) ms: $a"; }
        return 1
    fi
    last_pos=$(sed -n 's/.*"position":"\([0-9-]*\)".*/\1/p' <<<"$a")
    acked=$((acked + 1))
}
# on_hand: the read model's count, once it has the last acknowledged append.
on_hand() {
    curl -s -m 20 -H "Authorization: Bearer $token" "$qry/v1/inventory/$sku?consistent_with=$last_pos" |
        sed -n 's/.*"on_hand":\([0-9]*\).*/\1/p'
}
# until_ok SECONDS CMD...: retries CMD (in this shell: its counts stay);
# sets took to the milliseconds it took.
took=0
until_ok() {
    local secs=$1 t0
    shift
    t0=$(now_ms)
    while ! "$@" 2>/dev/null; do
        (($(now_ms) - t0 < secs * 1000)) || return 1
        sleep 0.1
    done
    took=$(($(now_ms) - t0))
}
primary_rest() { [[ $(curl -s -o /dev/null -w '%{http_code}' -m 1 "http://127.0.0.1:$1/primary") == 200 ]]; }
# timeline T0 NODE: where the seconds of a PostgreSQL failover go.  In the
# background, prints (ms after T0) when NODE's Patroni first says
# /primary and when each es-command instance's /readyz goes down and
# comes back (one watcher each, so a slow probe delays no other), so a
# long window shows whether Patroni or the clients were slow.  Ends once
# the node is primary and both instances are ready again.
timeline() {
    local t0=$1 node=$2 i
    (until primary_rest "${rest[$node]}"; do sleep 0.1; done
     say "  +$(($(now_ms) - t0)) ms: pg$((node + 1))'s Patroni says it is the primary") &
    for i in 0 1; do
        (local was=200 code
         while :; do
             code=$(curl -s -o /dev/null -w '%{http_code}' -m 3 "http://127.0.0.1:$((base + 50 + i))/readyz")
             if [[ $code != "$was" ]]; then
                 say "  +$(($(now_ms) - t0)) ms: es-command $((i + 1)) /readyz $code"
                 [[ $code == 200 ]] && exit 0
                 was=$code
             fi
             sleep 0.1
         done) &
    done
    wait
}

# ---- 1. PostgreSQL primary killed ------------------------------------------
for _ in 1 2 3 4 5; do restock || fail "append before the fault"; done
old=""
for n in 0 1; do primary_rest "${rest[$n]}" && old=$n; done
[[ -n $old ]] || { fail "no PostgreSQL primary"; exit 1; }
new=$((1 - old))
node=pg$((old + 1))
patroni_pid=$(awk '{ print $1 }' "$CL/pids/$node.pid")
pm_pid=$(head -n 1 "$CL/$node/data/postmaster.pid")
say "killing -9 the PostgreSQL primary $node (Patroni $patroni_pid, postmaster $pm_pid)"
t0=$(now_ms)
kill -9 "$patroni_pid" "$pm_pid"
timeline "$t0" "$new" &
timeline_pid=$!
if until_ok 90 restock; then
    total=$(($(now_ms) - t0))
    # the timeline ends once both instances are ready again: 10 s more at most
    for _ in $(seq 100); do kill -0 "$timeline_pid" 2>/dev/null && sleep 0.1; done
    pkill -P "$timeline_pid" 2>/dev/null || true
    kill "$timeline_pid" 2>/dev/null || true
    wait "$timeline_pid" 2>/dev/null || true
    say "appends resumed through HAProxy ${total} ms after the kill (PostgreSQL failover)"
    ((total <= 30000)) || say "note: longer than the 30 s goal"
else
    pkill -P "$timeline_pid" 2>/dev/null || true
    kill "$timeline_pid" 2>/dev/null || true
    fail "appends did not resume within 90 s of killing $node"
fi
primary_rest "${rest[$new]}" || fail "pg$((new + 1)) is not the primary after the failover"
# (each es-command instance reconnects on its own: a few may still fail)
for _ in 1 2 3 4 5; do until_ok 60 restock || fail "append after the failover"; done
# every acknowledged append is there (synchronous replication); at most
# the failed attempts more (an append made but not answered)
got=$(on_hand)
if [[ $got =~ ^[0-9]+$ ]] && ((got >= acked && got <= acked + unsure)); then
    say "all $acked acknowledged appends survived the failover (on_hand $got, $unsure unanswered attempts)"
else
    fail "read model has on_hand='$got', $acked appends were acknowledged, $unsure unanswered"
fi

# ---- 2. the dead node comes back as the synchronous standby --------------
# Started again as the fault campaign does (scripts/cluster.sh start, from
# this shell, which holds the administrator's settings), it must rejoin
# (pg_rewind, then streaming from the new primary) and be the synchronous
# standby again within $rejoin_secs s: until it is, the cluster runs on
# one node.  Patroni's /replica says only that PostgreSQL runs in
# recovery; /sync that it streams and the primary waits for it.  (A node
# that could not log in to the new primary stayed a replica that never
# streamed, which /replica did not see.)
rejoin_secs=${CLUSTER_TEST_REJOIN_SECS:-120}
sync_rest() { [[ $(curl -s -o /dev/null -w '%{http_code}' -m 1 "http://127.0.0.1:$1/sync") == 200 ]]; }
scripts/cluster.sh start "$node" >"$CL/log/test-start-$node.log" 2>&1 ||
    { tail -n 15 "$CL/log/test-start-$node.log" >&2; fail "cluster.sh start $node after the failover"; }
if until_ok "$rejoin_secs" sync_rest "${rest[$old]}"; then
    say "$node rejoined as the synchronous standby $took ms after it was started again"
else
    fail "$node is not the synchronous standby $rejoin_secs s after it was started again (its log:)"
    grep -E 'FATAL|ERROR|pg_rewind' "$CL/log/$node.log" | tail -n 5 >&2 || true
fi

# ---- 3. a deposed primary cannot write --------------------------------------
# The primary is paused, not killed: its Patroni and every PostgreSQL
# process of the node stop (SIGSTOP) and keep their sessions, as a host
# frozen by a hypervisor or starved of CPU would.  The standby is promoted
# once the leader key runs out; then the old primary resumes with its
# data and its sessions, believing for a moment that it still leads.
# What fences it is synchronous replication: a commit there waits for its
# synchronous standby, which is now the primary and streams from no one,
# until the resumed Patroni sees it lost the key and demotes the node.
# So a write sent straight to it (as a client that bypasses HAProxy, or a
# session opened before the pause) is never acknowledged, and nothing it
# wrote reaches the cluster: the row is absent on the new primary after
# the node rejoined (pg_rewind drops its local commit).
# pg_psql NODE SQL: psql as the administrator on node NODE (0/1) itself.
# (the administrator's settings of `cluster.sh env`: PGPASSWORD, ES_PG_*)
pg_port=($((base + 10)) $((base + 11)))
pg_psql_at() { timeout 20 psql -X -q -tA -h 127.0.0.1 -p "$1" -U "$ES_PG_USER" -d "$ES_PG_DB" -c "$2"; }
pg_psql() { pg_psql_at "${pg_port[$1]}" "$2"; }
ha_psql() { pg_psql_at "$ES_PG_PORT" "$1"; }
node_pids() {                   # Patroni, then the postmaster and its children
    local pm
    awk '{ print $1 }' "$CL/pids/pg$(($1 + 1)).pid"
    pm=$(head -n 1 "$CL/pg$(($1 + 1))/data/postmaster.pid")
    echo "$pm"
    ps -o pid= --ppid "$pm" | tr -d " "
}
deposed=$new                    # the primary since the failover above
standby=$old
ha_psql "CREATE TABLE IF NOT EXISTS es_fence_probe (id text PRIMARY KEY)" >/dev/null ||
    fail "could not create the probe table through HAProxy"
mapfile -t paused < <(node_pids "$deposed")
say "pausing the PostgreSQL primary pg$((deposed + 1)) (SIGSTOP of ${#paused[@]} processes)"
t0=$(now_ms)
kill -STOP "${paused[@]}"
if until_ok 90 primary_rest "${rest[$standby]}"; then
    say "pg$((standby + 1)) promoted $took ms after the pause"
else
    fail "pg$((standby + 1)) was not promoted within 90 s of pausing pg$((deposed + 1))"
fi
until_ok 60 restock || fail "append through HAProxy while the old primary is paused"
probe="deposed-$(date +%s%N)"
kill -CONT "${paused[@]}"
say "pg$((deposed + 1)) resumed $(($(now_ms) - t0)) ms after the pause; writing to it straight away"
# (timeout: a commit waiting for its synchronous standby waits for good)
if out=$(timeout 30 psql -X -q -tA -h 127.0.0.1 -p "${pg_port[$deposed]}" -U "$ES_PG_USER" \
             -d "$ES_PG_DB" -c "INSERT INTO es_fence_probe VALUES ('$probe')" 2>&1); then
    fail "the deposed primary acknowledged a write: $out"
else
    say "the deposed primary acknowledged nothing ($(tr '\n' ' ' <<<"${out:-no answer in 30 s}" | cut -c1-160))"
fi
for _ in 1 2 3; do until_ok 60 restock || fail "append after the old primary resumed"; done
if until_ok "$rejoin_secs" sync_rest "${rest[$deposed]}"; then
    say "pg$((deposed + 1)) rejoined as the synchronous standby $took ms after it resumed"
else
    fail "pg$((deposed + 1)) is not the synchronous standby $rejoin_secs s after it resumed"
fi
[[ $(ha_psql "SELECT count(*) FROM es_fence_probe WHERE id = '$probe'") == 0 ]] ||
    fail "the deposed primary's write reached the cluster"
[[ $(pg_psql "$deposed" "SELECT count(*) FROM es_fence_probe WHERE id = '$probe'" 2>/dev/null) == 0 ]] ||
    fail "the rejoined node still has the deposed primary's write"
ha_psql "DROP TABLE es_fence_probe" >/dev/null || true
got=$(on_hand)
if [[ $got =~ ^[0-9]+$ ]] && ((got >= acked && got <= acked + unsure)); then
    say "all $acked acknowledged appends kept (on_hand $got)"
else
    fail "read model has on_hand='$got' after the pause, $acked appends were acknowledged, $unsure unanswered"
fi

# ---- 4. Redis primary killed -----------------------------------------------
spw=$ES_REDIS_SENTINEL_PASSWORD
sport=${ES_REDIS_SENTINELS%%,*}
sport=${sport##*:}
master() { REDISCLI_AUTH=$spw redis-cli --no-auth-warning -p "$sport" sentinel get-master-addr-by-name es | tail -n 1; }
rport=$(master)
rname=""
for n in 1 2; do [[ $rport == $((base + 39 + n)) ]] && rname=redis$n; done
[[ -n $rname ]] || { fail "sentinel names no primary of ours ($rport)"; rname=redis1; }
say "killing -9 the Redis primary $rname (port $rport)"
t0=$(now_ms)
kill -9 "$(awk '{ print $1 }' "$CL/pids/$rname.pid")"
promoted() { [[ $(master) != "$rport" ]]; }
if until_ok 60 promoted; then
    say "Sentinel promoted the replica (port $(master)) $took ms after the kill"
else
    fail "Sentinel did not promote the replica within 60 s"
fi
restock || until_ok 30 restock || fail "append after the Redis failover"
got=""
read_ok() { got=$(on_hand); [[ $got =~ ^[0-9]+$ ]] && ((got >= acked && got <= acked + unsure)); }
if until_ok 60 read_ok; then
    total=$(($(now_ms) - t0))
    say "the projections resumed on the new Redis primary: a consistent read answered ${total} ms after the kill"
else
    fail "read model has on_hand='$got' after the Redis failover, $acked appends were acknowledged, $unsure unanswered"
fi
if [[ -z $keep ]]; then
    scripts/cluster.sh up "$build" >"$CL/log/test-up-after-redis.log" 2>&1 ||
        { tail -n 15 "$CL/log/test-up-after-redis.log" >&2; fail "cluster.sh up after the Redis failover"; }
fi

# ---- teardown ------------------------------------------------------------------
if [[ -z $keep ]]; then
    trap - EXIT
    scripts/cluster.sh down || fail "cluster.sh down left processes"
    left=$(ps -eo pid=,args= | grep -F -- "$CL/" | grep -v grep || true)
    [[ -z $left ]] || fail "still running after down: $left"
fi
if ((failures > 0)); then
    say "$failures failure(s)"
    exit 1
fi
say "passed"
