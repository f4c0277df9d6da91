#!/bin/sh
# The C sources are formatted by the repository's own .clang-format.
# Usage: format_check.sh SOURCE_DIR. Fix with: make format
set -eu
cd "$1"
if ! command -v clang-format >/dev/null 2>&1; then
    echo "SKIP: clang-format is not installed (scripts/deps.sh installs it)"
    exit 77
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    files=$(git ls-files '*.c' '*.h')
else
    files=$(find include src cmd services tests bench fuzz -name '*.[ch]')
fi
if ! out=$(echo "$files" | xargs clang-format --dry-run --Werror 2>&1); then
    echo "$out" | grep 'error:' | head -20
    echo "FAIL format_check: $(echo "$out" | grep -c 'error:') places differ from .clang-format (run: make format)"
    exit 1
fi
echo "PASS format_check: $(echo "$files" | wc -w) files match .clang-format"
