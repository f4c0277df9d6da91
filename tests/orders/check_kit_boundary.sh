#!/bin/sh
# The service-kit rule (docs/SERVICE_KIT.md): a file under services/ may
# include the public API (outbox/*.h), the kit (kit/*.h), system and client
# library headers, and its own service's files; no other header under src/.
#
# Usage: check_kit_boundary.sh SOURCE_DIR
# Exit 0 when every service keeps the rule, 1 with one line per offending
# include otherwise. It first checks itself on a throwaway service that
# breaks the rule, so a check that cannot fail fails.
set -eu

src_dir=${1:?usage: check_kit_boundary.sh SOURCE_DIR}

# check SERVICES_DIR SRC_DIR: prints offending includes, exit 1 if any.
check() {
    services=$1
    src=$2
    bad=0
    files=$(find "$services" -type f \( -name '*.c' -o -name '*.h' \) | sort)
    for f in $files; do
        dir=$(dirname "$f")
        # "#  include <x>" or "#include "x"" -> x (one per line, with line number)
        grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]' "$f" |
            sed 's/^\([0-9]*\):[^<"]*[<"]\([^>"]*\)[>"].*/\1 \2/' >"$tmp/incs" || true
        while read -r line inc; do
            case "$inc" in
            kit/*.h | outbox/*.h) continue ;;
            esac
            # The service's own files (found next to the includer).
            if [ -f "$dir/$inc" ]; then
                case "$inc" in
                *..*) ;; # "../" escapes the service: judged below
                *) continue ;;
                esac
            fi
            case "$inc" in
            *src/* | *../*)
                echo "$f:$line: includes \"$inc\": services use outbox/*.h and kit/*.h only"
                bad=1
                continue
                ;;
            esac
            if [ -f "$src/$inc" ]; then
                echo "$f:$line: includes \"$inc\" from src/: services use outbox/*.h and kit/*.h only"
                bad=1
            fi
        done <"$tmp/incs"
    done
    return $bad
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# Self-test: a service that reaches into src/core and src/store must fail.
mkdir -p "$tmp/services/bad"
printf '#include "kit/kit.h"\n#include "bad.h"\n' >"$tmp/services/bad/ok.c"
printf '/* own header */\n' >"$tmp/services/bad/bad.h"
printf '#include <stdio.h>\n#include "core/log.h"\n  #  include <store/pg/pg.h>\n' >"$tmp/services/bad/bad.c"
printf '#include "../../src/http/http.h"\n' >"$tmp/services/bad/rel.c"
if out=$(check "$tmp/services" "$src_dir/src"); then
    echo "self-test: the check passed a service that includes core/log.h" >&2
    exit 1
fi
n=$(printf '%s\n' "$out" | grep -c 'includes' || true)
if [ "$n" -ne 3 ]; then
    echo "self-test: expected 3 offending includes, found $n:" >&2
    printf '%s\n' "$out" >&2
    exit 1
fi

if ! check "$src_dir/services" "$src_dir/src"; then
    echo "FAIL: services must include only the public API (outbox/*.h), the service kit (kit/*.h) and their own headers" >&2
    exit 1
fi
echo "PASS orders_kit_boundary: every file under services/ keeps to outbox/*.h, kit/*.h and its own headers"
