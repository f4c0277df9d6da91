#!/bin/sh
# docs/man/*.1 are generated from the configuration table and the command
# table: fail when they are stale (regenerate with scripts/gen-man.sh).
set -eu
bin=$1
src=$2
rc=0
for page in outbox-relay:relay outboxctl:outboxctl; do
    file=${page%%:*}
    arg=${page#*:}
    if ! "$bin" man "$arg" | cmp -s - "$src/docs/man/$file.1"; then
        echo "FAIL: docs/man/$file.1 is stale: run scripts/gen-man.sh" >&2
        "$bin" man "$arg" | diff "$src/docs/man/$file.1" - | head -20 >&2
        rc=1
    fi
done
if command -v groff >/dev/null 2>&1 && [ $rc -eq 0 ]; then
    for f in "$src"/docs/man/*.1; do
        warn=$(groff -man -Tutf8 -ww -z "$f" 2>&1 || true)
        [ -z "$warn" ] || { echo "FAIL: $f: groff: $warn" >&2; rc=1; }
    done
fi
[ $rc -eq 0 ] && echo "PASS man_pages_current: docs/man/*.1 match the tables"
exit $rc
