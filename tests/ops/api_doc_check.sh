#!/bin/sh
# docs/API.md is generated from the /** */ comments of include/outbox/*.h:
# fail when it is stale or a public function has no comment
# (regenerate with scripts/gen-man.sh or scripts/gen-api-doc.py).
set -eu
src=$1
command -v python3 >/dev/null 2>&1 || { echo "SKIP: no python3"; exit 77; }
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
python3 "$src/scripts/gen-api-doc.py" "$src"/include/outbox/*.h > "$tmp" || exit 1
if ! cmp -s "$tmp" "$src/docs/API.md"; then
    echo "FAIL: docs/API.md is stale: run scripts/gen-man.sh" >&2
    diff "$src/docs/API.md" "$tmp" | head -20 >&2
    exit 1
fi
echo "PASS api_doc_current: docs/API.md matches the header comments"
