#!/usr/bin/env bash
# bench_cluster.sh - `make bench-cluster`: the figures of issue 18 item 4
# (http_append_1, http_orders, visibility_p99_ms, saga_orders) on the
# highly available topology (scripts/cluster.sh) beside the same figures on
# the single-node system of scripts/servers.sh, both measured in this run
# by scripts/bench.sh (the cluster's through BENCH_EXTERNAL: its HAProxy
# ports, nothing started or wiped there).  Prints bench.sh's lines for
# each side, then per figure
#   BENCH cluster_<name> value=<cluster> unit=<u> limit=<single> ratio=<cluster/single>
# On one machine the cluster runs every part two or three times on the
# same cores, and each append waits for the synchronous standby: the
# ratio is the cost of replication, not a speed-up.
#
#   scripts/bench_cluster.sh [BUILD_DIR]
# A cluster already up (make cluster-up) is used and left up; otherwise
# one is started and stopped at the end.  BENCH_SECONDS (10) and
# BENCH_ROUNDS (1 here) as for bench.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${1:-build/plain}
figures=http_append_1,http_orders,visibility_p99_ms,saga_orders
export BENCH_ROUNDS=${BENCH_ROUNDS:-1}
CL=${CLUSTER_DIR:-$root/.run/cluster}

say() { echo "bench-cluster: $*"; }

say "single node (scripts/servers.sh), $figures"
# (each side's whole output is printed once it ends: a tee to /dev/stderr
# would truncate a log file that stdout and stderr share)
out=$(BENCH=$figures scripts/bench.sh "$build") || true
echo "$out"
single=$(grep '^BENCH ' <<<"$out" || true)

ha_command=$(eval "$(scripts/cluster.sh env 2>/dev/null)" && echo "$ES_COMMAND_PORT")
started=""
if ! curl -sf -m 2 "http://127.0.0.1:$ha_command/readyz" >/dev/null 2>&1; then
    say "no cluster answers on $ha_command: starting one"
    trap 'scripts/cluster.sh down >/dev/null 2>&1 || true' EXIT
    scripts/cluster.sh up "$build" >"$root/.run/bench-cluster-up.log" 2>&1 ||
        { tail -n 20 "$root/.run/bench-cluster-up.log" >&2; exit 1; }
    started=1
fi
# bench.sh on the cluster, the figures $1
cluster_bench() {
    (eval "$(scripts/cluster.sh env)"
     ES_TOKEN=$(cat "$CL/admin.token") BENCH_EXTERNAL=1 BENCH_HTTP_PORT=$ES_COMMAND_PORT \
         BENCH=$1 scripts/bench.sh "$build") || true
}
# The single node measures the order figures without a saga manager; on
# the cluster both managers run, and every order placed would start a
# saga (16 events and four commands more): they are stopped for those
# figures, after saga_orders, so that each figure is the same work on
# both sides (the orders placed meanwhile start their sagas once the
# managers are back).
say "cluster (scripts/cluster.sh, through HAProxy), saga_orders"
out=$(cluster_bench saga_orders)
say "cluster: the saga managers stopped for the other figures"
scripts/cluster.sh stop saga1 saga2 >/dev/null
say "cluster (scripts/cluster.sh, through HAProxy), http_append_1,http_orders,visibility_p99_ms"
out+=$'\n'$(cluster_bench http_append_1,http_orders,visibility_p99_ms)
scripts/cluster.sh start saga1 saga2 >/dev/null
echo "$out"
cluster=$(grep '^BENCH ' <<<"$out" || true)

value() { sed -n "s/^BENCH $2 value=\([^ ]*\) unit=\([^ ]*\) .*/\\${3}/p" <<<"$1"; }
echo "# bench-cluster: each figure on the cluster (value) beside the single node (limit) of"
echo "# this run; on one 2-core machine the ratio is the cost of replication (every part"
echo "# doubled on the same cores, appends waiting for the synchronous standby), not a speed-up"
status=0
for name in ${figures//,/ }; do
    c=$(value "$cluster" "$name" 1) s=$(value "$single" "$name" 1) unit=$(value "$single" "$name" 2)
    if [[ -z $c || -z $s ]]; then
        say "no figure for $name (cluster '${c}', single '${s}')" >&2
        status=1
        continue
    fi
    ratio=$(awk -v c="$c" -v s="$s" 'BEGIN { printf "%.2f", (s > 0 ? c / s : 0) }')
    echo "BENCH cluster_$name value=$c unit=${unit:-na} limit=$s ratio=$ratio"
done
if [[ -n $started ]]; then
    trap - EXIT
    scripts/cluster.sh down >/dev/null
fi
exit "$status"
