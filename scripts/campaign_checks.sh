# shellcheck shell=bash disable=SC2154
# (SC2154: campaign, build, root, logs, seed, secs, rate, conns, settle and
# drain are set by the script that sources this file.)
# campaign_checks.sh - the load and the invariants of the fault campaigns,
# shared by the single-node campaigns (scripts/campaign.sh, sourced by
# scripts/chaos.sh and scripts/abuse.sh) and the cluster campaign
# (scripts/chaos_cluster.sh).  A campaign starts the load of
# tests/chaos_load.c (campaign_start_load), disturbs the system, brings it
# back, then stops the load and checks the same invariants:
#   - every acknowledged command has its effect in the store exactly once
#     (campaign_check_acks, against the acknowledgement file of the load);
#   - feed = JetStream stream, read models = a fresh rebuild, sagas
#     finished, money and stock conserved (campaign_verify: `esctl verify
#     --settled`).
#
# Before sourcing, the caller sets campaign, build, root, logs (a fresh
# folder), seed, rate, conns, settle and drain, and exports the
# administrator's ES_PG_CONNINFO (psql_q), ES_NATS_HTTP_PORT and
# ES_RELAY_STREAM (the stream's last sequence).  It defines:
#   run_as NAME CMD...  CMD with NAME's credentials (for esctl)
#   supervise           restarts what died on its own; called while waiting
# and sets up_ok (all up after the disturbance) and crashes (daemons that
# died of a signal that was not the campaign's) before campaign_verdicts.

pgbin=${pgbin:-/usr/lib/postgresql/15/bin}

t_start=$EPOCHREALTIME

# say MESSAGE: a timestamped line on stdout and in the timeline.
say() {
    local line
    line=$(printf '%s: %7.1fs %s' "$campaign" "$(elapsed)" "$*")
    echo "$line"
    echo "$line" >>"$logs/timeline.log"
}
elapsed() { awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((10#$t / 1000)); }
sleep_ms() { (($1 <= 0)) || sleep "$(awk -v m="$1" 'BEGIN { printf "%.3f", m / 1000 }')"; }
# rand_ms LO HI: sets r to a whole number in [LO, HI], from this shell's
# RANDOM (seeded by CHAOS_SEED; a subshell would reseed it).
rand_ms() { r=$(($1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1))); }
psql_q() { "$pgbin/psql" "$ES_PG_CONNINFO" -X -v ON_ERROR_STOP=1 -qAt "$@"; }

# A process is alive: it exists and is not a zombie.
alive() {
    local stat
    [[ $1 =~ ^[0-9]+$ ]] || return 1
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}
# Start time of a process (clock ticks since boot): with the PID, its identity.
start_time() {
    local stat f
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    read -ra f <<<"${stat##*) }"
    echo "${f[19]}"
}
comm_is() { local c; read -r c 2>/dev/null <"/proc/$1/comm" && [[ $c == "$2"* ]]; }

# nap_until MS: sleeps until that moment (now_ms), supervising on the way.
nap_until() {
    local left
    while :; do
        left=$(($1 - $(now_ms)))
        ((left > 0)) || return 0
        supervise
        sleep_ms $((left < 500 ? left : 500))
    done
}

# rounds N ITEM...: sets schedule to at least N items, in rounds of all
# the ITEMs each in a random order (this shell's RANDOM, seeded by the
# campaign's seed).
rounds() {
    local n=$1 i j tmp round
    shift
    schedule=()
    while ((${#schedule[@]} < n)); do
        round=("$@")
        for ((i = ${#round[@]} - 1; i > 0; i--)); do
            j=$((RANDOM % (i + 1)))
            tmp=${round[i]} round[i]=${round[j]} round[j]=$tmp
        done
        schedule+=("${round[@]}")
    done
}

# campaign_start_load PORT: the load against es-command at PORT (load_pid),
# with ES_TOKEN; every failed attempt is also logged in failures.tsv.
load_pid=""
campaign_start_load() {
    say "load: $rate commands/s over $conns connections"
    run_id=$(printf '%x' "$seed")-$$
    CHAOS_LOAD_SEED=$seed CHAOS_LOAD_FAILURES=$logs/failures.tsv \
        "$build/chaos_load" run "$1" "$rate" "$conns" "$drain" \
        "$run_id" "$logs/acks.tsv" >"$logs/load.out" 2>"$logs/load.err" 8>&- &
    load_pid=$!
}

# campaign_stop_load: the load stops offering, answers in flight get up to
# $drain s; its figures are printed and field NAME reads its LOAD line.
campaign_stop_load() {
    say "stopping the load (commands in flight get up to $drain s to be answered)"
    kill -USR1 "$load_pid" 2>/dev/null || true
    load_rc=0
    wait "$load_pid" || load_rc=$?
    load_pid=""
    sed 's/^/    /' "$logs/load.out"
    if [[ -s $logs/load.err ]]; then
        echo "    first unexpected answers (of $(wc -l <"$logs/load.err")):"
        head -n 5 "$logs/load.err" | sed 's/^/    /'
    fi
    load_line=$(grep '^LOAD ' "$logs/load.out" || true)
}
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p" <<<"$load_line"; }

stream_seq() {
    curl -sf -m 2 "http://127.0.0.1:$ES_NATS_HTTP_PORT/jsz?streams=true" 2>/dev/null |
        tr -d ' \n' | grep -o '"name":"'"$ES_RELAY_STREAM"'"[^}]*}[^}]*"last_seq":[0-9]*' |
        grep -o '"last_seq":[0-9]*$' | cut -d: -f2 || true
}

# campaign_settle: waits for quiet: no saga work left, the stream holds
# every event, and no event was written for two polls in a row.
campaign_settle() {
    say "waiting for quiescence (up to $settle s)"
    quiet=0 prev=-1 deadline=$(($(now_ms) + settle * 1000))
    while (($(now_ms) < deadline)); do
        supervise
        work=$(psql_q -c "SELECT count(*) FROM es_saga_work" 2>/dev/null || echo "?")
        events=$(psql_q -c "SELECT count(*) FROM es_events" 2>/dev/null || echo "?")
        seq=$(stream_seq)
        if [[ $work == 0 && $events == "$seq" && $events == "$prev" ]]; then
            quiet=$((quiet + 1))
            ((quiet >= 2)) && break
        else
            quiet=0
        fi
        prev=$events
        sleep 1
    done
    say "saga work left: $work, events: $events, stream: ${seq:-?}$( ((quiet >= 2)) && echo ' (quiet)' || echo ' (NOT quiet)')"
}

# ---- invariant 1: acknowledged commands, each exactly once --------------------------

acked_sql=$(cat <<'SQL'
CREATE TEMP TABLE acks (kind text, key text, status int, code text, id text, pos text,
                        amount bigint, attempts int, replayed boolean);
\copy acks FROM pstdin
-- the events each command wrote: their metadata names the command
CREATE TEMP TABLE ev AS
SELECT substr(metadata->>'command_id', 6) AS key, stream_id, type, data,
       transaction_id::text || '-' || global_position AS pos
  FROM es_events WHERE metadata->>'command_id' LIKE 'idem:chaos-%';
CREATE INDEX ON ev (key);
CREATE TEMP TABLE judged AS
SELECT a.*, k.main, k.business,
       (SELECT count(*) FROM ev WHERE ev.key = a.key) AS n_all,
       (SELECT count(*) FROM ev WHERE ev.key = a.key AND ev.type = main) AS n_main,
       (SELECT count(*) FROM ev WHERE ev.key = a.key AND ev.type = main AND CASE a.kind
            WHEN 'user' THEN ev.stream_id = 'user-' || a.id AND ev.data->>'user_id' = a.id
                             AND ev.pos = a.pos
            WHEN 'deposit' THEN ev.stream_id = 'account-' || a.id
                             AND (ev.data->>'amount')::bigint = a.amount AND ev.pos = a.pos
            WHEN 'restock' THEN ev.stream_id = 'stock-' || a.id
                             AND (ev.data->>'quantity')::bigint = a.amount AND ev.pos = a.pos
            WHEN 'order' THEN ev.stream_id = 'order-' || a.id
                             AND (ev.data->>'total')::bigint = a.amount AND ev.pos = a.pos
            WHEN 'cancel' THEN ev.stream_id = 'order-' || a.id END) AS n_match,
       (SELECT count(*) FROM es_events e
         WHERE a.kind = 'cancel' AND e.stream_id = 'order-' || a.id
           AND e.type = 'OrderCancelled') AS n_cancelled,
       (SELECT count(*) FROM acks b WHERE b.key = a.key) AS n_answers
  FROM acks a,
       LATERAL (SELECT CASE a.kind WHEN 'user' THEN 'UserRegistered'
                                   WHEN 'deposit' THEN 'FundsDeposited'
                                   WHEN 'restock' THEN 'StockRestocked'
                                   WHEN 'order' THEN 'OrderPlaced'
                                   WHEN 'cancel' THEN 'OrderCancelled' END AS main,
                       (a.kind = 'user' AND a.status = 409 AND a.code = 'email_taken')
                       OR (a.kind = 'cancel' AND a.status = 422
                           AND a.code = 'order_not_cancellable') AS business) k;
ALTER TABLE judged ADD COLUMN problem text;
UPDATE judged SET problem = CASE
    WHEN n_answers > 1 THEN 'answered ' || n_answers || ' times'
    WHEN status = 0 THEN NULL
    WHEN status BETWEEN 200 AND 299 THEN CASE
        WHEN n_main = 0 THEN 'acknowledged (' || status || ') but no ' || main || ' in the store'
        WHEN n_main > 1 THEN main || ' stored ' || n_main || ' times'
        WHEN n_match = 0 THEN main || ' differs from the answer (id, amount or position)'
        WHEN n_all <> CASE kind WHEN 'user' THEN 2 ELSE 1 END
            THEN n_all || ' events written by the command'
        WHEN kind = 'cancel' AND n_cancelled <> 1
            THEN 'order cancelled ' || n_cancelled || ' times' END
    WHEN business THEN CASE
        WHEN n_all > 0 THEN 'refused (' || code || ') but ' || n_all || ' events written'
        WHEN kind = 'cancel' AND n_cancelled > 0 THEN 'refused (' || code || ') but the order was cancelled' END
    ELSE 'unexpected answer ' || status || ' ' || coalesce(code, '') END;
-- figures per kind: acknowledged (2xx), refused by a business rule, other
-- answers, unanswered (and of those, how many took effect), violations,
-- sent more than once, answered as a repeat (a replayed answer, or 200
-- where the first run would have said 201: the answer had been lost)
SELECT 'KIND', kind,
       count(*) FILTER (WHERE status BETWEEN 200 AND 299),
       count(*) FILTER (WHERE business),
       count(*) FILTER (WHERE status >= 300 AND NOT business),
       count(*) FILTER (WHERE status = 0),
       count(*) FILTER (WHERE status = 0 AND n_main > 0),
       count(*) FILTER (WHERE problem IS NOT NULL),
       count(*) FILTER (WHERE attempts > 1),
       count(*) FILTER (WHERE replayed OR (status = 200 AND kind <> 'cancel'))
  FROM judged GROUP BY kind ORDER BY kind;
-- effects in the store of commands the load never answered or never sent
SELECT 'ORPHAN', count(DISTINCT ev.key), coalesce(min(ev.key), '-')
  FROM ev LEFT JOIN acks a ON a.key = ev.key WHERE a.key IS NULL;
SELECT 'PROBLEM', kind, key, problem FROM judged WHERE problem IS NOT NULL
 ORDER BY kind, key LIMIT 20;
SQL
)

# campaign_check_acks: invariant 1; sets check1_ok, answered, violations
# and orphans.
campaign_check_acks() {
    say "checking the acknowledged commands against the store"
    check1_ok=1
    printf '%s\n' "$acked_sql" >"$logs/acked-check.sql"
    if ! psql_q -F $'\t' -f "$logs/acked-check.sql" <"$logs/acks.tsv" >"$logs/acked-check.txt" 2>&1; then
        say "the check of the acknowledged commands failed to run:"
        sed 's/^/    /' "$logs/acked-check.txt"
        check1_ok=0
    fi
    violations=0 answered=0 orphans=0
    while IFS=$'\t' read -r tag a b c d e f g h j; do
        case $tag in
            KIND)
                printf '    %-8s acknowledged %6d  refused %5d  other %3d  unanswered %3d (%d took effect)  sent again %3d  repeats %3d  violations %d\n' \
                    "$a" "$b" "$c" "$d" "$e" "$f" "$h" "$j" "$g"
                violations=$((violations + g + d))
                answered=$((answered + b + c + d)) ;;
            ORPHAN)
                orphans=$a
                ((a == 0)) || echo "    $a command(s) took effect without being sent or answered (e.g. $b)" ;;
            PROBLEM)
                echo "    violation: $a $b: $c" ;;
        esac
    done <"$logs/acked-check.txt"
    ((violations == 0 && orphans == 0)) || check1_ok=0
}

# ---- invariant 2: esctl verify --------------------------------------------------------

# campaign_verify: invariant 2; sets verify_rc and verify_lines (one line
# per check: name, PASS or FAIL, figures, message).
campaign_verify() {
    say "esctl verify --settled --wait 120"
    verify_rc=0
    (run_as esctl "$build/esctl" verify --settled --wait 120 --json) >"$logs/verify.json" 2>"$logs/verify.err" || verify_rc=$?
    (run_as esctl "$build/esctl" verify --settled) >"$logs/verify.txt" 2>&1 || true
    sed 's/^/    /' "$logs/verify.txt"
    verify_lines=$("$build/chaos_load" checks <"$logs/verify.json" 2>>"$logs/verify.err" || true)
    supervise       # a daemon that died during the checks counts too
}

# ---- verdicts ------------------------------------------------------------------------------

fail=0
# verdict OK NAME FIGURES: one PASS or FAIL line; a FAIL fails the campaign.
verdict() {
    local word=FAIL
    if (($1)); then word=PASS; else fail=1; fi
    printf '%s: %s  %-28s %s\n' "$campaign" "$word" "$2" "$3"
}

# campaign_verdicts WHAT: the verdicts both campaigns give, after WHAT.
campaign_verdicts() {
    local crash_text=${crashes# } name result figures message
    verdict "$up_ok" "all up after the $1" "servers and daemons running and ready"
    verdict "$([[ -z $crashes ]] && echo 1 || echo 0)" "no daemon crashed" "${crash_text:-none died of a signal it was not sent}"
    verdict "$([[ $load_rc == 0 && $(field unacked) == 0 && $(field unexpected) == 0 ]] && echo 1 || echo 0)" \
        "every command answered" "unanswered $(field unacked), unexpected answers $(field unexpected), load exit $load_rc"
    verdict "$check1_ok" "acknowledged exactly once" "$answered answers checked against the store, $violations violations, $orphans effects of unknown commands"
    if [[ -n $verify_lines ]]; then
        while IFS=$'\t' read -r name result figures message; do
            verdict "$([[ $result == PASS ]] && echo 1 || echo 0)" "verify: $name" "$figures${message:+ ($message)}"
        done <<<"$verify_lines"
    fi
    verdict "$([[ $verify_rc == 0 ]] && echo 1 || echo 0)" "esctl verify" "exit $verify_rc$([[ -s $logs/verify.err ]] && echo ": $(head -c 300 "$logs/verify.err" | tr '\n' ' ')")"
}

# campaign_end: the last line and the exit status.
campaign_end() {
    if ((fail)); then
        echo "$campaign: FAIL (evidence in ${logs#"$root"/})"
        exit 1
    fi
    echo "$campaign: PASS"
}
