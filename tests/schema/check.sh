#!/usr/bin/env bash
# make schema-check: buf lint on schema/, and buf breaking (wire and JSON compatibility)
# against the tutorial's original contract and against the schema before its newest change.
# The buf CLI comes from npm, pinned in this folder's package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v npm >/dev/null 2>&1 || {
    echo "make schema-check: npm (Node.js) is needed to install the buf CLI" >&2
    exit 1
}
npm ci --prefix tests/schema --no-audit --no-fund --silent
buf=tests/schema/node_modules/.bin/buf

"$buf" lint schema
echo "buf lint: schema/ keeps its rules"

tutorial=$(mktemp -d)
trap 'rm -rf "$tutorial"' EXIT
cp tests/fixtures/tutorial_user.proto "$tutorial/user.proto"
printf 'version: v2\n' > "$tutorial/buf.yaml"
"$buf" breaking schema --against "$tutorial"
echo "buf breaking: wire and JSON compatible with the tutorial's contract"

# Uncommitted edits are compared with the last commit; otherwise the newest commit that
# changed the schema is compared with its parent.
if ! git diff --quiet HEAD -- schema/user.proto; then
    base=HEAD
else
    base="$(git log -1 --format=%H -- schema/user.proto)~1"
fi
"$buf" breaking schema --against ".git#ref=$base,subdir=schema"
echo "buf breaking: wire and JSON compatible with the schema at $base"
