#!/usr/bin/env bash
# chaos_cluster.sh - the fault campaign on the highly available topology,
# behind `make chaos-cluster`.  It brings up a fresh cluster of its own
# (scripts/cluster.sh under .run/chaos-cluster/cluster, ports from
# CHAOS_CLUSTER_PORT_BASE), puts the steady command load of
# tests/chaos_load.c on HAProxy's es-command port and, for CHAOS_SECONDS,
# injects one cluster fault per slot, the kinds in rounds of a random order:
#   pg       kill -9 of the PostgreSQL primary (its Patroni and postmaster):
#            Patroni promotes the standby; the dead node is then started
#            again and rejoins as the standby
#   nats     kill -9 of one NATS server (each in turn), started again
#   redis    kill -9 of the Redis primary: Sentinel promotes the replica;
#            the old primary is started again and rejoins as a replica
#   daemon   kill -9 of one of the ten daemon instances, started again
#   haproxy  kill -9 of HAProxy, started again at once
#   delay    CHAOS_DELAY_MS added each way, for CHAOS_DELAY_SECONDS, on the
#            links to one node (pg1 or nats1 in turn) by a delaying TCP
#            proxy (tests/delay_proxy.c) that the campaign puts in front of
#            them from the start (CLUSTER_VIA): tc netem needs the kernel's
#            sch_netem and a network namespace per node, this runs anywhere
# Then it brings everything back, stops the load, lets the system settle
# and checks the invariants of the single-node campaign
# (scripts/campaign_checks.sh: every acknowledged command exactly once,
# stream = feed, read models = rebuild, sagas terminal, money and stock
# conserved).  It prints, per fault kind, the longest window in which
# commands failed (from the load's failed attempts: from the fault to the
# end of the outage that followed it, however many faults came during it;
# see "the windows" below) against its goal
# (5 s for a daemon, a NATS server or the Redis primary, 30 s for the
# PostgreSQL primary): a window over its goal is reported, not failed.
# Any invariant violation exits 1.  Everything it started is stopped at
# the end, also on failure or Ctrl-C; logs stay in .run/chaos-cluster/logs
# (the cluster's own in .run/chaos-cluster/cluster/log) until the next run.
#
#   scripts/chaos_cluster.sh [BUILD_DIR]
#
# CHAOS_SECONDS (300) the chaos period; CHAOS_FAULT_INTERVAL (20) seconds
# per fault (at least one of each kind); CHAOS_RATE (40) commands/s over
# CHAOS_CONNS (6) connections; CHAOS_SEED; CHAOS_SETTLE_SECONDS (180);
# CHAOS_DELAY_MS (250), CHAOS_DELAY_SECONDS (10); CHAOS_REJOIN_SECONDS
# (300) bounds the wait for a killed PostgreSQL node to be the synchronous
# standby again (before the next PostgreSQL fault, which is skipped if it
# is not, and at the end: then it fails "all up"); CHAOS_CLUSTER_PORT_BASE
# (CLUSTER_PORT_BASE + 100: 17500; the cluster takes 62 ports from there,
# the two proxies the last two) so that `make cluster-up` can run beside it.
set -euo pipefail

build=${1:-build/plain}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[[ $build == /* ]] || build=$root/$build

campaign=chaos-cluster
drain=60
# the settings: variable, environment name, default (whole numbers)
while read -r v name def; do
    printf -v "$v" '%s' "${!name:-$def}"
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "$campaign: $name must be a whole number, got '${!v}'" >&2; exit 2; }
done <<SETTINGS
secs CHAOS_SECONDS 300
rate CHAOS_RATE 40
conns CHAOS_CONNS 6
settle CHAOS_SETTLE_SECONDS 180
interval CHAOS_FAULT_INTERVAL 20
delay_ms CHAOS_DELAY_MS 250
delay_secs CHAOS_DELAY_SECONDS 10
rejoin CHAOS_REJOIN_SECONDS 300
seed CHAOS_SEED $(($(date +%s) % 1000000))
base CHAOS_CLUSTER_PORT_BASE $((${CLUSTER_PORT_BASE:-17400} + 100))
SETTINGS
((secs >= 10)) || { echo "$campaign: CHAOS_SECONDS must be at least 10" >&2; exit 2; }
((interval >= 1 && rate >= 1 && conns >= 1 && delay_secs >= 1)) ||
    { echo "$campaign: CHAOS_FAULT_INTERVAL, CHAOS_RATE, CHAOS_CONNS and CHAOS_DELAY_SECONDS must be at least 1" >&2; exit 2; }
((base > 0 && base + 62 < 65536)) || { echo "$campaign: CHAOS_CLUSTER_PORT_BASE must leave 62 ports" >&2; exit 2; }
for b in es-command es-relay es-projector es-query es-saga esctl chaos_load delay_proxy; do
    [[ -x $build/$b ]] || { echo "$campaign: $build/$b is missing; run make all $build/chaos_load $build/delay_proxy" >&2; exit 2; }
done
RANDOM=$seed

# ---- the cluster ------------------------------------------------------------

top=$root/.run/chaos-cluster
CL=$top/cluster
logs=$top/logs
export CLUSTER_DIR=$CL CLUSTER_PORT_BASE=$base CLUSTER_BUILD=$build ES_WAIT_SECS=60
pg_port=($((base + 10)) $((base + 11)))
rest_port=($((base + 12)) $((base + 13)))
nats_http=($((base + 36)) $((base + 37)) $((base + 38)))
redis_port=($((base + 40)) $((base + 41)))
sentinel_port=$((base + 42))
# the delaying proxies: in front of pg1 (for HAProxy) and nats1 (for the clients)
declare -A proxy_port=([pg1]=$((base + 60)) [nats1]=$((base + 61)))
declare -A proxy_target=([pg1]=${pg_port[0]} [nats1]=$((base + 30)))
export CLUSTER_VIA="pg1:${proxy_port[pg1]} nats1:${proxy_port[nats1]}"
instances=(command1 command2 query1 query2 relay1 relay2 projector1 projector2 saga1 saga2)
declare -A inst_port=()
for i in "${!instances[@]}"; do inst_port[${instances[i]}]=$((base + 50 + i)); done
names=(etcd pg1 pg2 haproxy nats1 nats2 nats3 redis1 redis2 sentinel1 sentinel2 sentinel3 "${instances[@]}")
# Nothing injected and nothing of the caller's own system: the cluster's
# settings only (scripts/cluster.sh env).
unset ES_SAGA_INJECT_FAILURE ES_SAGA_INJECT_TIMEOUT ES_PROJECTIONS ES_COMMAND_CONTEXTS \
    ES_RELAY_STREAM ES_RELAY_SUBJECT_PREFIX ES_RELAY_WAKE_SUBJECT ES_COMMAND_SUBJECT_PREFIX

mkdir -p "$top"
exec 8>"$top/.lock"
if command -v flock >/dev/null && ! flock -n 8; then
    echo "$campaign: another cluster campaign is running in this tree" >&2
    exit 2
fi
rm -rf "$logs"
mkdir -p "$logs"

# shellcheck source=scripts/campaign_checks.sh
. "$root/scripts/campaign_checks.sh"

cluster() { scripts/cluster.sh "$@" >>"$logs/cluster.log" 2>&1 8>&-; }
cred() { sed -n "s/^$1=//p" "$2" 2>/dev/null | tail -n 1; }
# running NAME: its pid file names a live process of the right program.
running() {
    local p c
    read -r p c 2>/dev/null <"$CL/pids/$1.pid" || return 1
    alive "$p" && comm_is "$p" "$c"
}
pid_of() { local p c; read -r p c 2>/dev/null <"$CL/pids/$1.pid" && echo "$p"; }
rest_is() { [[ $(curl -s -o /dev/null -w '%{http_code}' -m 1 "http://127.0.0.1:$1$2") == 200 ]]; }
# until_ok SECONDS CMD...: retries CMD every 0.2 s; took = its milliseconds.
took=0
until_ok() {
    local secs=$1 t0
    shift
    t0=$(now_ms)
    until "$@" 2>/dev/null; do
        (($(now_ms) - t0 < secs * 1000)) || { took=$(($(now_ms) - t0)); return 1; }
        sleep 0.2
    done
    took=$(($(now_ms) - t0))
}
pg_primary() {   # echoes 0 or 1
    local n
    for n in 0 1; do rest_is "${rest_port[$n]}" /primary && { echo "$n"; return 0; }; done
    return 1
}
redis_master() {
    REDISCLI_AUTH=$(cred sentinel "$CL/cluster.credentials") redis-cli --no-auth-warning \
        -p "$sentinel_port" sentinel get-master-addr-by-name es 2>/dev/null | tail -n 1
}

# ---- the delaying proxies -------------------------------------------------------

declare -A proxy_pid=()
start_proxy() {
    "$build/delay_proxy" "${proxy_port[$1]}" "${proxy_target[$1]}" "$delay_ms" \
        >>"$logs/proxy-$1.log" 2>&1 </dev/null 8>&- &
    proxy_pid[$1]=$!
    until_ok 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/${proxy_port[$1]}" ||
        { say "the delaying proxy in front of $1 does not listen on ${proxy_port[$1]}"; return 1; }
}

# ---- supervision ----------------------------------------------------------------

# Between faults nothing is meant to be down: whatever died on its own is
# counted and started again.
declare -A exits=() faults=()
for n in "${names[@]}"; do exits[$n]=0; done
supervise() {
    local n
    for n in "${!proxy_pid[@]}"; do
        alive "${proxy_pid[$n]}" && continue
        wait "${proxy_pid[$n]}" 2>/dev/null || true
        say "the delaying proxy in front of $n died: starting it again"
        start_proxy "$n" || true
    done
    for n in "${names[@]}"; do
        running "$n" && continue
        exits[$n]=$((exits[$n] + 1))
        say "$n died on its own: starting it again"
        tail -n 5 "$CL/log/$n.log" 2>/dev/null | sed 's/^/    /'
        cluster start "$n" || say "could not start $n (see ${logs#"$root"/}/cluster.log)"
    done
}

# ---- the PostgreSQL nodes' accept queues -------------------------------------------

# Every 2 s, per node: the connections waiting for the postmaster's
# accept() and the queue's limit (ss: Recv-Q and Send-Q of a listening
# socket), and the load average, in pg-accept.tsv.  A queue that stays
# full is a reconnect storm: clients giving up before the postmaster
# reaches them (docs/OPERATIONS.md, "Fault campaign on the cluster").
# Nothing here connects to PostgreSQL; the loop ends with the campaign.
sampler_pid=""
start_sampler() {
    local me=$BASHPID
    (
        while kill -0 "$me" 2>/dev/null; do
            for n in 0 1; do
                ss -Hltn "sport = :${pg_port[$n]}" 2>/dev/null |
                    awk -v t="$(now_ms)" -v n="pg$((n + 1))" -v l="$(cut -d' ' -f1 /proc/loadavg)" \
                        'NR == 1 { printf "%s\t%s\t%s\t%s\t%s\n", t, n, $2, $3, l }'
            done
            sleep 2
        done
    ) >>"$logs/pg-accept.tsv" 2>/dev/null </dev/null 8>&- &
    sampler_pid=$!
}
# accept_summary: per node, the longest queue and the seconds it was
# over 90 % of its limit.
accept_summary() {
    [[ -s $logs/pg-accept.tsv ]] || return 0
    awk -F'\t' '
        { if ($3 > top[$2]) top[$2] = $3; lim[$2] = $4
          if ($3 >= 0.9 * $4 && $4 > 0) { if (last[$2] != "") full[$2] += $1 - last[$2]; last[$2] = $1 } else last[$2] = "" }
        END { for (n in top) printf "%s %d of %d, %.0f s near full; ", n, top[n], lim[n], full[n] / 1000 }
    ' "$logs/pg-accept.tsv" 2>/dev/null | sed 's/; $//'
}

# ---- cleanup --------------------------------------------------------------------

cleanup() {
    local rc=$? n
    trap - EXIT INT TERM HUP
    if [[ -n $load_pid ]] && alive "$load_pid"; then
        kill -TERM "$load_pid" 2>/dev/null || true
        sleep 0.2
        kill -TERM "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    if [[ -n $sampler_pid ]]; then
        kill -TERM "$sampler_pid" 2>/dev/null || true
        wait "$sampler_pid" 2>/dev/null || true
    fi
    if [[ -z ${CHAOS_CLUSTER_KEEP:-} ]]; then
        scripts/cluster.sh down >>"$logs/cluster.log" 2>&1 8>&- ||
            { echo "$campaign: scripts/cluster.sh down left processes; see ${logs#"$root"/}/cluster.log" >&2; rc=1; }
    fi
    for n in "${!proxy_pid[@]}"; do
        alive "${proxy_pid[$n]}" && kill -TERM "${proxy_pid[$n]}" 2>/dev/null || true
        wait "${proxy_pid[$n]}" 2>/dev/null || true
    done
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "$campaign: interrupted" >&2; exit 130' INT TERM HUP

# ---- up --------------------------------------------------------------------------

say "seed $seed, $secs s of cluster faults; ports $base-$((base + 61)); logs in ${logs#"$root"/}"
# A fresh cluster: whatever an earlier run left is stopped (by its PID
# files) and its data removed.
if [[ -d $CL ]]; then
    scripts/cluster.sh down >>"$logs/cluster.log" 2>&1 8>&- || { say "could not stop the cluster an earlier run left"; exit 1; }
    rm -rf "$CL"
fi
for n in pg1 nats1; do start_proxy "$n" || exit 1; done
t_up=$(now_ms)
if ! scripts/cluster.sh up "$build" >"$logs/cluster-up.log" 2>&1 8>&-; then
    tail -n 30 "$logs/cluster-up.log"
    say "scripts/cluster.sh up failed"
    exit 1
fi
say "cluster up with its demo in $((($(now_ms) - t_up) / 1000)) s"
eval "$(scripts/cluster.sh env)"
esctl_env=$(scripts/cluster.sh env esctl)
run_as() { eval "$esctl_env"; shift; exec "$@"; }
ES_TOKEN=$(cat "$CL/admin.token")
export ES_TOKEN ES_RELAY_STREAM=EVENTS
# the stream's last sequence, from the first NATS server that answers (a
# clustered stream's details nest its replicas: jq reads them)
stream_seq() {
    local p s
    for p in "${nats_http[@]}"; do
        s=$(curl -sf -m 2 "http://127.0.0.1:$p/jsz?streams=true" 2>/dev/null |
            jq -r --arg s "$ES_RELAY_STREAM" \
                '[.. | objects | select(.name? == $s and (.state? | type) == "object") | .state.last_seq] | max // empty' \
                2>/dev/null || true)
        [[ -n $s ]] && { echo "$s"; return 0; }
    done
    return 0
}
start_sampler
campaign_start_load "$ES_COMMAND_PORT"
say "load on HAProxy's es-command port $ES_COMMAND_PORT"

# ---- the faults --------------------------------------------------------------------

# note KIND TARGET: the moment of a fault, for the windows.
note() { printf '%s\t%s\t%s\n' "$(now_ms)" "$1" "$2" >>"$logs/faults.tsv"; faults[$1]=$((${faults[$1]:-0} + 1)); }
declare -A promoted_ms=()   # pg, redis: the longest time to a new primary
skipped=""                  # faults not injected (no standby in sync)
max_into() { (($2 > ${promoted_ms[$1]:-0})) && promoted_ms[$1]=$2; return 0; }

fault_pg() {
    local old new node pat pm
    until_ok 60 pg_primary >/dev/null || { say "pg: no primary to kill; skipped"; return 0; }
    old=$(pg_primary) || { say "pg: no primary to kill; skipped"; return 0; }
    new=$((1 - old)) node=pg$((old + 1))
    # the standby must be in sync, or nothing could be promoted safely
    if ! rest_is "${rest_port[$new]}" /sync; then
        if until_ok "$rejoin" rest_is "${rest_port[$new]}" /sync; then
            say "pg: waited $took ms for pg$((new + 1)) to be the synchronous standby again"
        else
            # killing the only node in sync would be an outage the
            # topology does not claim to survive, and could lose
            # acknowledged appends (synchronous_mode is not strict)
            say "pg: pg$((new + 1)) is not the synchronous standby after $rejoin s: fault skipped"
            skipped+=" pg"
            return 0
        fi
    fi
    pat=$(pid_of "$node") pm=$(head -n 1 "$CL/$node/data/postmaster.pid" 2>/dev/null || true)
    note pg "$node"
    kill -9 "$pat" 2>/dev/null || true
    alive "$pm" && comm_is "$pm" postgres && kill -9 "$pm" 2>/dev/null || true
    say "pg: killed the primary $node (Patroni $pat, postmaster ${pm:-?})"
    if until_ok 90 rest_is "${rest_port[$new]}" /primary; then
        say "pg: pg$((new + 1)) promoted $took ms after the kill"
        max_into pg "$took"
    else
        say "pg: no promotion within 90 s"
    fi
    # the orphaned backends go before a new postmaster may start; the node
    # then rejoins on its own (pg_rewind, catching up): not waited for
    # here, but before the next PostgreSQL fault and at the end
    sleep 1
    cluster start "$node" && say "pg: $node started again (Patroni $(pid_of "$node")); it rejoins as the standby" ||
        say "pg: could not start $node again"
}

# gone PID: waits (up to 10 s) until process PID has exited.
gone() {
    local i
    for ((i = 0; i < 200; i++)); do
        alive "$1" || return 0
        sleep 0.05
    done
    say "pid $1 still there 10 s after kill -9"
}

# kill_restart KIND NAME LO HI: kill -9, down LO..HI ms, started again.
kill_restart() {
    local p
    p=$(pid_of "$2")
    note "$1" "$2"
    kill -9 "$p" 2>/dev/null || true
    say "$1: killed $2 (pid $p)"
    # kill -9 is not instant: a start while the old process is still
    # exiting would take it for running (or find its ports held)
    gone "$p"
    rand_ms "$3" "$4"
    sleep_ms "$r"
    if cluster start "$2"; then say "$1: $2 back (pid $(pid_of "$2"))"; else say "$1: could not start $2 again"; fi
}

nats_next=0
fault_nats() {
    nats_next=$((nats_next + 1))
    kill_restart nats "nats$(((nats_next - 1) % 3 + 1))" 1000 3000
}

redis_moved() { local m; m=$(redis_master); [[ $m =~ ^[0-9]+$ && $m != "$1" ]]; }
fault_redis() {
    local port name="" n p
    port=$(redis_master)
    for n in 0 1; do [[ $port == "${redis_port[$n]}" ]] && name=redis$((n + 1)); done
    [[ -n $name ]] || { say "redis: Sentinel names no primary of ours ('$port'); skipped"; return 0; }
    p=$(pid_of "$name")
    note redis "$name"
    kill -9 "$p" 2>/dev/null || true
    say "redis: killed the primary $name (pid $p, port $port)"
    if until_ok 60 redis_moved "$port"; then
        say "redis: Sentinel promoted port $(redis_master) $took ms after the kill"
        max_into redis "$took"
    else
        say "redis: no promotion within 60 s"
    fi
    cluster start "$name" && say "redis: $name back as a replica" || say "redis: could not start $name again"
}

fault_daemon() { kill_restart daemon "${instances[RANDOM % ${#instances[@]}]}" 500 2000; }

fault_haproxy() { kill_restart haproxy haproxy 0 0; }

delay_next=0
fault_delay() {
    local node
    node=$( ((delay_next % 2 == 0)) && echo pg1 || echo nats1)
    delay_next=$((delay_next + 1))
    note delay "$node"
    kill -USR1 "${proxy_pid[$node]}" 2>/dev/null || true
    say "delay: ${delay_ms} ms each way on the links to $node$([[ $node == pg1 && $(pg_primary || true) == 0 ]] && echo ' (the primary)') for $delay_secs s"
    sleep "$delay_secs"
    kill -USR2 "${proxy_pid[$node]}" 2>/dev/null || true
    say "delay: off"
}

# The schedule: rounds of the six kinds in a random order, one fault per
# slot of CHAOS_FAULT_INTERVAL s (at least one round), at a random moment
# in the first quarter of its slot; a fault that takes longer than its
# slot (a PostgreSQL failover and rejoin) pushes the next one back.
kinds=(pg nats redis daemon haproxy delay)
nfaults=$((secs / interval > ${#kinds[@]} ? secs / interval : ${#kinds[@]}))
rounds "$nfaults" "${kinds[@]}"
slot=$((secs * 1000 / nfaults))
: >"$logs/faults.tsv"
t0=$(now_ms)
say "chaos: $nfaults faults over $secs s"
for ((n = 0; n < nfaults; n++)); do
    rand_ms 500 $((slot / 4 > 500 ? slot / 4 : 500))
    nap_until $((t0 + n * slot + r))
    "fault_${schedule[n]}"
done
nap_until $((t0 + secs * 1000))
# the last fault's failures are counted up to here
note end end
faults[end]=0
say "chaos over"

# ---- back to normal ------------------------------------------------------------------

cluster_recover() {
    local n
    up_ok=1
    supervise
    for n in "${names[@]}"; do running "$n" || { up_ok=0; say "$n is not running"; }; done
    pg_primary >/dev/null || until_ok 60 pg_primary >/dev/null || { up_ok=0; say "no PostgreSQL primary"; }
    for n in 0 1; do
        rest_is "${rest_port[$n]}" /primary || until_ok "$rejoin" rest_is "${rest_port[$n]}" /sync ||
            { up_ok=0; say "pg$((n + 1)) is not the synchronous standby $rejoin s after the faults"; }
    done
    for n in "${instances[@]}"; do
        until_ok 60 curl -sf -m 1 -o /dev/null "http://127.0.0.1:${inst_port[$n]}/healthz" ||
            { up_ok=0; say "$n does not answer /healthz"; }
    done
    for p in "$ES_COMMAND_PORT" "$ES_QUERY_PORT"; do
        until_ok 60 curl -sf -m 1 -o /dev/null "http://127.0.0.1:$p/readyz" ||
            { up_ok=0; say "HAProxy's port $p is not ready"; }
    done
    ((up_ok)) && say "every process of the cluster is running and ready"
    return 0
}
cluster_recover
# The daemons are not the campaign's children (cluster.sh starts them in
# their own sessions): a crash is told by what it leaves in the log.
crashes=""
for n in "${instances[@]}"; do
    grep -qE 'AddressSanitizer|runtime error:|Segmentation fault|Assertion .* failed|double free|corrupted (size|double-linked)|free\(\): invalid|malloc\(\): ' "$CL/log/$n.log" 2>/dev/null &&
        crashes+=" $n(see its log)"
done
campaign_stop_load
campaign_settle
campaign_check_acks
campaign_verify

# ---- the windows ---------------------------------------------------------------------

# The failed attempts, by start, make outages: runs of failures with no
# gap over 5 s between one's end and the next one's start (a partial
# outage, where some commands still succeed, is one outage).  An outage
# counts for the last fault before its first failed attempt ended (an
# attempt in flight when a fault struck fails because of it: counted by
# its start, a PostgreSQL kill was once charged to the network delay 20 s
# before it), and its window runs from that fault to the end of the
# outage's last failed attempt.  A fault injected
# while an outage was still on (its effect cannot be told from the one
# before) is marked shadowed; the outage keeps counting for the fault
# that began it, however many faults came after, so a PostgreSQL failover
# whose effect outlasts its slot is charged to PostgreSQL, not to the
# next fault (this campaign charged each failure to the last fault before
# it until a run showed commands failing for 100 s after a PostgreSQL
# kill while the summary said 16 s).
windows=$(sort -t$'\t' -k1,1n "$logs/failures.tsv" 2>/dev/null | awk -F'\t' '
    BEGIN { k[0] = "the start of the load" }
    FNR == NR { t[NR] = $1; k[NR] = $2; nf = NR; next }
    function close_outage(   f, i, w) {
        if (n == 0) return
        f = 0
        for (i = 1; i <= nf; i++) if (t[i] <= fe) f = i
        for (i = f + 1; i <= nf; i++) if (t[i] <= oe && k[i] != "end") shadowed[i] = f
        if (f == 0) { before += n; n = 0; return }
        w = oe - t[f]
        if (w > win[f]) win[f] = w
        cnt[f] += n
        n = 0
    }
    {
        if (n > 0 && $1 > oe + 5000) close_outage()
        if (n == 0) { oe = $2; fe = $2 } else { if ($2 > oe) oe = $2; if ($2 < fe) fe = $2 }
        n++
    }
    END {
        close_outage()
        for (i = 1; i <= nf; i++) {
            if (k[i] == "end") continue
            if (win[i] + 0 > best[k[i]] + 0) best[k[i]] = win[i]
            fails[k[i]] += cnt[i]
            seen[k[i]] = 1
            if (i in shadowed) { sh[k[i]]++; by[k[i]] = by[k[i]] (by[k[i]] == "" ? "" : ",") k[shadowed[i]] }
        }
        for (x in seen) printf "%s\t%d\t%d\t%d\t%s\n", x, best[x], fails[x], sh[x], by[x]
        printf "before\t0\t%d\n", before
    }' "$logs/faults.tsv" - || true)
declare -A goal=([pg]=30000 [nats]=5000 [redis]=5000 [daemon]=5000)
declare -A what=([pg]="PostgreSQL primary" [nats]="NATS server" [redis]="Redis primary"
                 [daemon]="daemon instance" [haproxy]="HAProxy" [delay]="network delay")

# ---- summary ------------------------------------------------------------------------------

echo "$campaign: ==== summary: seed $seed, $secs s of faults, $(elapsed) s in all; logs in ${logs#"$root"/}"
exit_figures=""
for n in "${names[@]}"; do ((exits[$n] == 0)) || exit_figures+=" $n ${exits[$n]}"; done
echo "$campaign: died on their own (started again):${exit_figures:- none}"
echo "$campaign: load: $(field sent) commands sent, $(field acked) acknowledged, $(field retried) sent more than once, $(field unacked) unanswered"
echo "$campaign: longest window in which commands failed, per fault kind (from the fault to the end of the last failed attempt of the outage that followed it):"
every=1
for k in "${kinds[@]}"; do
    line=$(awk -F'\t' -v k="$k" '$1 == k' <<<"$windows")
    ms=$(cut -f2 <<<"$line") nfail=$(cut -f3 <<<"$line") shadowed=$(cut -f4 <<<"$line") by=$(cut -f5 <<<"$line")
    ms=${ms:-0} nfail=${nfail:-0}
    ((${faults[$k]:-0} > 0)) || every=0
    extra=""
    ((${shadowed:-0} == 0)) || extra+=", ${shadowed} injected during the outage that followed ${by//,/, }: not measured"
    [[ -n ${promoted_ms[$k]:-} ]] && extra+=", new primary after $(awk -v m="${promoted_ms[$k]}" 'BEGIN { printf "%.1f", m / 1000 }') s at most"
    if [[ -n ${goal[$k]:-} ]]; then
        mark=$( ((ms <= goal[$k])) && echo "within" || echo "OVER")
        # every fault of the kind fell in an outage of another: no figure
        ((${shadowed:-0} == 0 || shadowed < ${faults[$k]:-0})) || mark="not measured against"
        printf '%s:   %-18s %2d faults  %6.1f s  %s the goal of %d s  (%d failed attempts%s)\n' "$campaign" \
            "${what[$k]}" "${faults[$k]:-0}" "$(awk -v m="$ms" 'BEGIN { printf "%.1f", m / 1000 }')" \
            "$mark" $((goal[$k] / 1000)) "$nfail" "$extra"
    else
        printf '%s:   %-18s %2d faults  %6.1f s  (no goal; %d failed attempts)\n' "$campaign" \
            "${what[$k]}" "${faults[$k]:-0}" "$(awk -v m="$ms" 'BEGIN { printf "%.1f", m / 1000 }')" "$nfail"
    fi
done
before=$(awk -F'\t' '$1 == "before" { print $3 }' <<<"$windows")
((${before:-0} == 0)) || echo "$campaign:   (${before} failed attempts in outages that began before the first fault)"
q=$(accept_summary || true)
[[ -z $q ]] || echo "$campaign: PostgreSQL accept queues (longest; time at 90 % of the limit or more, see pg-accept.tsv): $q"
[[ -z $skipped ]] || echo "$campaign: faults skipped:$skipped (the PostgreSQL standby was not in sync; see the timeline)"
verdict "$every" "every fault kind injected" "$(for k in "${kinds[@]}"; do printf '%s %d, ' "$k" "${faults[$k]:-0}"; done | sed 's/, $//')"
campaign_verdicts "faults"
campaign_end
