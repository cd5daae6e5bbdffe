#!/usr/bin/env bash
# The last lines of `make up`: the console's address and a token to sign
# in with, printed so that one copy and paste opens the console (issue
# 19).  The token is not the admin token of scripts/admin_token.sh, which
# is never printed: it is a new admin token of its own that expires after
# ES_CONSOLE_TOKEN_TTL seconds (12 h by default), named console-<time> so
# that `esctl token revoke` can end it sooner.
#
#   scripts/console_token.sh [BUILD_DIR]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${1:-build/plain}
eval "$(scripts/servers.sh env)"
ttl=${ES_CONSOLE_TOKEN_TTL:-43200}
name="console-$(date +%Y%m%d-%H%M%S)"
scheme=http
[[ -z ${ES_TLS_CERT:-} ]] || scheme=https
url="$scheme://127.0.0.1:${ES_QUERY_PORT:-8081}/console/"

if ! secret=$("$build/esctl" token create "$name" --scope admin --ttl "$ttl" 2>"$ES_RUN_DIR/console_token.err"); then
    echo "console: $url (no token: esctl token create failed: $(tail -n 1 "$ES_RUN_DIR/console_token.err"))" >&2
    exit 1
fi
rm -f "$ES_RUN_DIR/console_token.err"
life="$((ttl / 3600)) h"
((ttl >= 3600)) || life="$((ttl / 60)) min"
cat <<TXT

console: $url
  sign in with: $secret
  (admin token "$name", expires in $life; end it sooner with: esctl token revoke $name)
TXT
