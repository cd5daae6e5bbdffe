#!/usr/bin/env bash
# The admin token of the system `make up` runs: kept in
# $ES_RUN_DIR/admin.token (mode 0600, the secret alone) and reused while
# it is live in the store; otherwise (first run, revoked, a fresh
# database) a new one is minted with `esctl token create`.  The secret is
# never printed, only the file's path.
#
#   scripts/admin_token.sh [BUILD_DIR]
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build=${1:-build/plain}
eval "$(scripts/servers.sh env)"
file=$ES_RUN_DIR/admin.token
name_file=$ES_RUN_DIR/admin.token.name

if [ -s "$file" ] && [ -s "$name_file" ] &&
   "$build/esctl" --json token list 2>/dev/null |
       grep -q "\"name\":\"$(cat "$name_file")\"[^}]*\"revoked_at\":null"; then
    echo "token: the admin token \"$(cat "$name_file")\" is in $file"
    exit 0
fi
name="admin-$(date +%Y%m%d-%H%M%S)"
umask 077
"$build/esctl" token create "$name" --scope admin >"$file.new" 2>/dev/null
mv "$file.new" "$file"
echo "$name" >"$name_file"
echo "token: admin token \"$name\" written to $file (mode 0600);" \
     "send it as: curl -H \"Authorization: Bearer \$(cat $file)\" ..."
