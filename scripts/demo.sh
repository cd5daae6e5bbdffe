#!/usr/bin/env bash
# The short demo `make up` ends with: a few commands against the running
# command service, then the same facts read back from the query service
# with read-your-writes, and where to look next.  Safe to run again:
# every run uses new ids.
set -euo pipefail

port=${ES_COMMAND_PORT:-8080}
qport=${ES_QUERY_PORT:-8081}
base="http://127.0.0.1:$port"
qbase="http://127.0.0.1:$qport"
run=$(date +%s)
# Every request but /healthz and /readyz needs a token: make up's admin
# token (scripts/admin_token.sh), or ES_TOKEN.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
token=${ES_TOKEN:-$(cat "${ES_RUN_DIR:-$root/.run}/admin.token")}
auth="Authorization: Bearer $token"

# post PATH BODY: prints the answer; sets `answer`.
post() {
    local path=$1 body=$2
    answer=$(curl -s -X POST "$base$path" -H 'Content-Type: application/json' -H "$auth" -d "$body")
    printf '  POST %-40s -> %s\n' "$path" "$answer"
}
# get PATH: a query that waits for the position of the last command.
get() {
    local pos
    pos=$(sed -n 's/.*"position":"\([0-9-]*\)".*/\1/p' <<<"$answer")
    printf '  GET  %s?consistent_with=%s\n       -> ' "$1" "$pos"
    curl -s -H "$auth" "$qbase$1?consistent_with=$pos"
    echo
}
field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$answer"; }
# saga ID: waits (up to 10 s) until the saga has ended, then prints it.
saga() {
    local body state
    for _ in $(seq 1 50); do
        body=$(curl -s -H "$auth" "$qbase/v1/sagas/$1")
        state=$(sed -n 's/^{"saga_id":"[^"]*","type":"[^"]*","state":"\([a-z]*\)".*/\1/p' <<<"$body")
        case $state in completed|compensated|failed) break ;; esac
        sleep 0.2
    done
    printf '  GET  /v1/sagas/%s\n       -> %s\n' "$1" "$body"
}

echo "demo: commands against $base, reads from $qbase"
post /v1/users "{\"email\":\"ann.$run@example.com\",\"name\":\"Ann\"}"
ann=$(field user_id)
get "/v1/users/$ann"
post /v1/users "{\"email\":\"mallory.$run@fraud.test\",\"name\":\"Mallory\"}"
mallory=$(field user_id)
post "/v1/customers/c-$run/deposits" '{"amount":10000}'
get "/v1/customers/c-$run/account"
post "/v1/inventory/sku-$run/restock" '{"quantity":20}'
get "/v1/inventory/sku-$run"
post /v1/orders "{\"customer_id\":\"c-$run\",\"items\":[{\"sku\":\"sku-$run\",\"quantity\":2,\"unit_price\":1999}]}"
order=$(field order_id)
get "/v1/orders/$order"
post /v1/orders "{\"customer_id\":\"poor-$run\",\"items\":[{\"sku\":\"sku-$run\",\"quantity\":1,\"unit_price\":500}]}"
poor=$(field order_id)
post /v1/orders "{\"customer_id\":\"c-$run\",\"items\":[{\"sku\":\"sku-$run\",\"quantity\":1,\"unit_price\":100}],\"ship_to\":{\"country\":\"XX\"}}"
far=$(field order_id)
echo "demo: the sagas run (order: charge, reserve, ship, confirm; registration:"
echo "      profile, fraud check, verification, notifications; failures compensate):"
echo "      a confirmed order, one without money, one to a country shipping refuses;"
echo "      a verified user and one the fraud check rejects"
saga "order-$order"
saga "order-$poor"
saga "order-$far"
saga "registration-$ann"
saga "registration-$mallory"
printf '  GET  /v1/orders/%s\n       -> ' "$order"
curl -s -H "$auth" "$qbase/v1/orders/$order"
echo
get "/v1/customers/c-$run/orders"
cat <<TXT

up: everything answers.
  token         the admin token is in ${ES_RUN_DIR:-.run}/admin.token (esctl token --help)
  command API   $base  (shared/API.md; try:
                curl -s -H "Authorization: Bearer \$(cat .run/admin.token)" '$base/v1/feed?limit=5')
  query API     $qbase  (try the same with $qbase/v1/dashboard)
  console       $qbase/console/  (make up prints a token to sign in with below)
  health        /healthz /readyz /metrics on each: command $port, query $qport,
                relay ${ES_RELAY_PORT:-8082}, projector ${ES_PROJECTOR_PORT:-8083}, saga ${ES_SAGA_PORT:-8084}
  operator CLI  build/plain/esctl --help (man -l docs/esctl.1), for instance:
                esctl saga list --state compensated
                esctl saga show order-$poor
                esctl projection status; esctl projection lag
                esctl feed follow
                esctl verify
  servers       scripts/servers.sh status | env
  logs          .run/daemons/*.log
  stop          make down
TXT
