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
# answers) stays in .run/chaos/logs until the next run.  The private
# system, the load and the invariants are scripts/campaign.sh's, shared
# with the hostile-client campaign (scripts/abuse.sh); this file is the
# kill schedule.
#
#   scripts/chaos.sh [BUILD_DIR]
#
# CHAOS_SECONDS (300) the chaos period; CHAOS_KILL_INTERVAL (5) seconds
# between kills; CHAOS_RATE (80) commands/s offered over CHAOS_CONNS (6)
# connections; CHAOS_SEED fixes the schedule and the
# load; CHAOS_SETTLE_SECONDS (120) bounds the wait for quiescence;
# CHAOS_PG_PORT, CHAOS_REDIS_PORT, CHAOS_NATS_PORT, CHAOS_NATS_HTTP_PORT
# (15532, 16479, 14322, 18322) and CHAOS_PORT_BASE (18680, five daemon
# ports from there) keep it away from `make up` and the tests (`make
# abuse` uses the same ports; one campaign runs at a time).
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
campaign=chaos
for v in secs rate conns settle seed kill_every; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "chaos: $v must be a whole number, got '${!v}'" >&2; exit 2; }
done
((secs >= 10)) || { echo "chaos: CHAOS_SECONDS must be at least 10" >&2; exit 2; }
((kill_every >= 1 && rate >= 1 && conns >= 1)) || { echo "chaos: CHAOS_KILL_INTERVAL, CHAOS_RATE and CHAOS_CONNS must be at least 1" >&2; exit 2; }
RANDOM=$seed

# shellcheck source=scripts/campaign.sh
. scripts/campaign.sh
say "seed $seed, $secs s of chaos; logs in ${logs#"$root"/}"
campaign_start

# ---- chaos ------------------------------------------------------------------------

# The schedule: rounds of every target in a random order, one kill per
# slot of CHAOS_KILL_INTERVAL s (at least one round), at a random moment
# in the first half of its slot; a quarter of the kills take the next
# target along.
targets=("${daemons[@]}" "${servers[@]}")
nkills=$((secs / kill_every > ${#targets[@]} ? secs / kill_every : ${#targets[@]}))
rounds "$nkills" "${targets[@]}"
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

campaign_recover chaos
campaign_stop_load
campaign_settle
campaign_check_acks
campaign_verify

# ---- summary ------------------------------------------------------------------------------

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
campaign_verdicts chaos
campaign_end
