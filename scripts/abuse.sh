#!/usr/bin/env bash
# abuse.sh - the hostile-client campaign behind `make abuse`.  Runs the
# private system of the fault campaign (scripts/campaign.sh, under
# .run/abuse) with the same steady load of legitimate commands
# (tests/chaos_load.c) and, for ABUSE_SECONDS, a second load of hostile
# clients (tests/abuse_load.c): random and malformed HTTP from the fuzz
# corpora, oversize bodies, poison events, slowloris connections, floods of
# waiting reads, maximal pages, foreign NATS messages and requests with odd
# reply subjects, with the credentials an attacker plausibly holds (a
# client's token with broad scopes; the NATS users of es-saga and
# es-projector, never the relay's).  Nothing is killed: whatever stops,
# slows or corrupts the system, the clients did.  Then it checks:
#   - the invariants of the fault campaign (every acknowledged command
#     exactly once, stream = feed, read models = rebuild, sagas terminal,
#     money and stock conserved) and that nothing crashed;
#   - every legitimate command answered, and no attempt of one refused,
#     timed out or cut (a 503 with Retry-After is an answer); its p99 is
#     printed;
#   - the checks of the hostile load: no internal error (a 5xx but 501,
#     503, 505) on hostile input, every over-limit request refused (413
#     from es-command) and events just under the limit taken, no poison
#     taken into a protected category, /healthz of every daemon answered
#     within ABUSE_HEALTH_MS throughout, slow clients cut by every daemon
#     within ABUSE_SLOW_CUT_SECONDS (12: the 10 s header deadline and the sweeper's 1 s round),
#     waiting reads and maximal pages answered, every foreign publish into
#     the events subjects or the stream's API refused by NATS;
#   - each daemon's peak RSS (VmHWM), printed, at most ABUSE_RSS_MB.
# Any violation exits 1, naming it.  Evidence stays in .run/abuse/logs
# (the hostile requests that got an internal error in .run/abuse/logs/abuse/).
#
#   scripts/abuse.sh [BUILD_DIR]
#
# ABUSE_SECONDS (300) the hostile period; ABUSE_RATE (80) legitimate
# commands/s over ABUSE_CONNS (6) connections; ABUSE_SEED; ABUSE_SETTLE_SECONDS
# (120); ABUSE_RSS_MB (256); ABUSE_HEALTH_MS (2000); the sizes of the
# attacks: ABUSE_SLOW_CONNS (1100, to es-command), ABUSE_SLOW_CONNS_OTHER
# (200, to each other daemon), ABUSE_WAITS (64), ABUSE_PAGES (8),
# ABUSE_BIG_EVENTS (100 events just under the stored limit), ABUSE_FUZZ_RATE
# (100 requests/s).  Ports: those of `make chaos` (CHAOS_PG_PORT ...
# CHAOS_PORT_BASE); the two campaigns run one at a time.
set -euo pipefail

build=${1:-build/plain}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[[ $build == /* ]] || build=$root/$build

secs=${ABUSE_SECONDS:-300}
rate=${ABUSE_RATE:-80}
conns=${ABUSE_CONNS:-6}
settle=${ABUSE_SETTLE_SECONDS:-120}
seed=${ABUSE_SEED:-$(($(date +%s) % 1000000))}
rss_limit=${ABUSE_RSS_MB:-256}
drain=60
campaign=abuse
for v in secs rate conns settle seed rss_limit; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "abuse: $v must be a whole number, got '${!v}'" >&2; exit 2; }
done
((secs >= 10)) || { echo "abuse: ABUSE_SECONDS must be at least 10" >&2; exit 2; }
((rate >= 1 && conns >= 1)) || { echo "abuse: ABUSE_RATE and ABUSE_CONNS must be at least 1" >&2; exit 2; }
[[ -x $build/abuse_load ]] || { echo "abuse: $build/abuse_load is missing; run make $build/abuse_load" >&2; exit 2; }

# shellcheck source=scripts/campaign.sh
. scripts/campaign.sh
say "seed $seed, $secs s of hostile clients; logs in ${logs#"$root"/}"
campaign_start

# ---- peak memory --------------------------------------------------------------------

# VmHWM is a process's peak RSS; sampled while the campaign runs, so that a
# daemon restarted after a crash keeps the peak of its first life too.
declare -A peak_kb=()
sample_rss() {
    local d kb
    for d in "${daemons[@]}"; do
        alive "${pid[$d]:-}" || continue
        kb=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/${pid[$d]}/status" 2>/dev/null || true)
        [[ -n $kb ]] || continue
        ((kb > ${peak_kb[$d]:-0})) && peak_kb[$d]=$kb
    done
    return 0
}

# ---- the hostile clients ---------------------------------------------------------------

# The attacker's token: what a broad client holds (every command, appends
# to any category a token may write, every read), not admin.
attacker_token=$("$build/esctl" token create "abuse-attacker-$(date +%s%N)" --scope 'append:*' \
    --scope append:user --scope 'command:*' --scope read:streams --scope read:query --scope metrics \
    2>>"$logs/migrate.log") || { say "esctl token create (the attacker's) failed"; exit 1; }
# The daemons reload their token tables every 500 ms: the attack starts once
# both APIs know the token (else its first requests would only get 401).
known=0
for ((i = 0; i < 100; i++)); do
    c=$(curl -s -m 2 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $attacker_token" \
        "http://127.0.0.1:$ES_COMMAND_PORT/v1/feed?limit=1" || true)
    q=$(curl -s -m 2 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $attacker_token" \
        "http://127.0.0.1:$ES_QUERY_PORT/v1/dashboard" || true)
    [[ $c == 200 && $q == 200 ]] && { known=1; break; }
    sleep 0.1
done
((known)) || { say "the attacker's token is not accepted (command $c, query $q)"; exit 1; }
# The NATS users of two daemons that are not the relay.
nats_urls=""
for who in saga projector; do
    nats_urls+="$(eval "${ident[$who]}"; echo "$ES_NATS_URL") "
done
mkdir -p "$logs/abuse"
say "hostile clients: $secs s (slowloris ${ABUSE_SLOW_CONNS:-1100} + 4 x ${ABUSE_SLOW_CONNS_OTHER:-200}, waits ${ABUSE_WAITS:-64}, pages ${ABUSE_PAGES:-8}, fuzz ${ABUSE_FUZZ_RATE:-100}/s, big events ${ABUSE_BIG_EVENTS:-100}, NATS as es_saga and es_projector)"
ABUSE_TOKEN=$attacker_token ABUSE_NATS_URLS=$nats_urls ABUSE_SEED=$seed \
    "$build/abuse_load" run "$secs" "$root/tests/fuzz/corpus" "$logs/abuse" \
    >"$logs/abuse.out" 2>"$logs/abuse.err" 8>&- &
abuse_pid=$!
helpers+=("$abuse_pid")
remember abuse "$abuse_pid"

deadline=$(($(now_ms) + (secs + 60) * 1000))
while alive "$abuse_pid" && (($(now_ms) < deadline)); do
    supervise
    sample_rss
    sleep 0.5
done
if alive "$abuse_pid"; then
    say "the hostile load did not stop 60 s after its time; stopping it"
    kill -TERM "$abuse_pid" 2>/dev/null || true
fi
abuse_rc=0
wait "$abuse_pid" || abuse_rc=$?
helpers=()
sample_rss
say "hostile clients over (exit $abuse_rc)"
grep '^ATTACK' "$logs/abuse.out" | cut -f2- | sed 's/\t/: /; s/^/    /' || true
[[ ! -s $logs/abuse.err ]] || sed 's/^/    stderr: /' "$logs/abuse.err" | head -n 5

campaign_recover "hostile clients"
sample_rss
campaign_stop_load
campaign_settle
campaign_check_acks
campaign_verify
sample_rss

# ---- summary ------------------------------------------------------------------------------

exit_figures=""
for t in "${daemons[@]}" "${servers[@]}"; do ((exits[$t] == 0)) || exit_figures+=" $t ${exits[$t]}"; done
echo "abuse: ==== summary: seed $seed, $secs s of hostile clients, $(elapsed) s in all; logs in ${logs#"$root"/}"
echo "abuse: died on their own:${exit_figures:- none}"
echo "abuse: legitimate load: $(field sent) commands sent, $(field acked) acknowledged, $(field retried) sent more than once, $(field unacked) unanswered"
echo "abuse: legitimate commands answered in p50 $(field p50_ms) ms, p99 $(field p99_ms) ms, max $(field max_ms) ms (first send to final answer)"
rss_line="" rss_ok=1
for d in "${daemons[@]}"; do
    kb=${peak_kb[$d]:-0}
    rss_line+="$d $((kb / 1024)) MB, "
    ((kb <= rss_limit * 1024 && kb > 0)) || rss_ok=0
done
echo "abuse: peak RSS (VmHWM): ${rss_line%, }"

campaign_verdicts "hostile clients"
lost=$(($(field refused) + $(field timeout) + $(field closed)))
verdict "$([[ $lost == 0 ]] && echo 1 || echo 0)" "no legitimate attempt lost" \
    "refused $(field refused), timed out $(field timeout), cut $(field closed); 503 $(field http_503), other 5xx $(field http_5xx); p99 $(field p99_ms) ms"
nchecks=0
while IFS=$'\t' read -r tag name result figures; do
    [[ $tag == CHECK ]] || continue
    nchecks=$((nchecks + 1))
    verdict "$([[ $result == PASS ]] && echo 1 || echo 0)" "$name" "$figures"
done <"$logs/abuse.out"
verdict "$([[ $abuse_rc == 0 && $nchecks -gt 0 ]] && echo 1 || echo 0)" "hostile load ran" \
    "exit $abuse_rc, $nchecks checks reported$([[ -s $logs/abuse.err ]] && echo ": $(head -c 200 "$logs/abuse.err" | tr '\n' ' ')")"
verdict "$rss_ok" "peak RSS at most $rss_limit MB" "${rss_line%, }"
campaign_end
