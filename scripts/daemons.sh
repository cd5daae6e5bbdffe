#!/usr/bin/env bash
# Runs the project's daemons in the background, next to the private
# servers of scripts/servers.sh: start waits until each answers /healthz
# (a daemon that dies shows the end of its log), stop ends them by PID,
# status says which run.  PID and log files live in $ES_RUN_DIR/daemons.
# Each daemon runs with its own credentials (scripts/servers.sh env NAME),
# never with the administrator's.
#
#   scripts/daemons.sh start|stop|status [BUILD_DIR]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
action=${1:-status}
build=${2:-build/plain}
eval "$(scripts/servers.sh env)"
dir="$ES_RUN_DIR/daemons"
mkdir -p "$dir"

# name  binary  port variable  default port
daemons=(
    "command es-command ES_COMMAND_PORT 8080"
    "relay es-relay ES_RELAY_PORT 8082"
    "projector es-projector ES_PROJECTOR_PORT 8083"
    "query es-query ES_QUERY_PORT 8081"
    "saga es-saga ES_SAGA_PORT 8084"
)

alive() { [ -f "$dir/$1.pid" ] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

# With ES_TLS_CERT set every daemon speaks HTTPS only; ES_TLS_CA (the CA
# that signed it) lets curl check it, as any client would.
scheme=http
curl_tls=()
if [ -n "${ES_TLS_CERT:-}" ]; then
    scheme=https
    [ -z "${ES_TLS_CA:-}" ] || curl_tls=(--cacert "$ES_TLS_CA")
fi
answers() { curl -sf "${curl_tls[@]}" "$scheme://127.0.0.1:$1/healthz" >/dev/null 2>&1; }

start_one() {
    local name=$1 bin=$2 var=$3 port=${!3:-$4}
    if alive "$name"; then
        echo "daemons: $name: already running (pid $(cat "$dir/$name.pid"), port $port)"
        return 0
    fi
    export "$var=$port"
    # its own identity, in a subshell so the next daemon does not inherit it
    (
        # the console es-query serves acts as esctl does, with esctl's
        # database role (query/README.md, "The operator console")
        if [ "$name" = query ] && [ -z "${ES_CONSOLE_PG_CONNINFO:-}" ]; then
            ES_CONSOLE_PG_CONNINFO=$(eval "$(scripts/servers.sh env esctl)" && echo "$ES_PG_CONNINFO")
            export ES_CONSOLE_PG_CONNINFO
        fi
        eval "$(scripts/servers.sh env "$name")"
        exec nohup "$build/$bin" >>"$dir/$name.log" 2>&1 </dev/null
    ) &
    echo $! >"$dir/$name.pid"
    for _ in $(seq 1 100); do
        if answers "$port"; then
            echo "daemons: $name: ready (pid $(cat "$dir/$name.pid"), $scheme://127.0.0.1:$port)"
            return 0
        fi
        if ! alive "$name"; then
            break
        fi
        sleep 0.1
    done
    echo "daemons: $name did not start; the end of $dir/$name.log:" >&2
    tail -n 20 "$dir/$name.log" >&2
    return 1
}

stop_one() {
    local name=$1 pid
    if ! alive "$name"; then
        rm -f "$dir/$name.pid"
        return 0
    fi
    pid=$(cat "$dir/$name.pid")
    echo "daemons: $name: stopping (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$dir/$name.pid"
}

rc=0
for d in "${daemons[@]}"; do
    read -r name bin var port <<<"$d"
    case "$action" in
        start) start_one "$name" "$bin" "$var" "$port" || rc=1 ;;
        stop) stop_one "$name" ;;
        status)
            if alive "$name"; then
                echo "$name: running (pid $(cat "$dir/$name.pid"))"
            else
                echo "$name: stopped"
                rc=3
            fi
            ;;
        *) echo "usage: scripts/daemons.sh start|stop|status [BUILD_DIR]" >&2; exit 2 ;;
    esac
done
exit $rc
