#!/usr/bin/env bash
# The short demo `make up` ends with: a few commands against the running
# command service, and where to look next.  Safe to run again: every run
# uses new ids.
set -euo pipefail

port=${ES_COMMAND_PORT:-8080}
base="http://127.0.0.1:$port"
run=$(date +%s)

post() {
    local path=$1 body=$2
    printf '  POST %-40s -> ' "$path"
    curl -s -X POST "$base$path" -H 'Content-Type: application/json' -d "$body"
    echo
}

echo "demo: commands against $base"
post /v1/users "{\"email\":\"ann.$run@example.com\",\"name\":\"Ann\"}"
post /v1/users "{\"email\":\"mallory.$run@fraud.test\",\"name\":\"Mallory\"}"
post "/v1/customers/c-$run/deposits" '{"amount":10000}'
post "/v1/inventory/sku-$run/restock" '{"quantity":20}'
post /v1/orders "{\"customer_id\":\"c-$run\",\"items\":[{\"sku\":\"sku-$run\",\"quantity\":2,\"unit_price\":1999}]}"
post /v1/orders "{\"customer_id\":\"poor-$run\",\"items\":[{\"sku\":\"sku-$run\",\"quantity\":1,\"unit_price\":500}]}"
cat <<TXT

up: everything answers.
  command API   $base  (shared/API.md; try: curl -s '$base/v1/feed?limit=5')
  health        $base/healthz  $base/readyz  $base/metrics
  relay         http://127.0.0.1:${ES_RELAY_PORT:-8082}/metrics  (the store's feed, copied to JetStream stream EVENTS)
  servers       scripts/servers.sh status | env
  logs          .run/daemons/*.log
  stop          make down
(The saga manager, projector and query API are not built yet: orders stay
pending and users pending verification until they are.)
TXT
