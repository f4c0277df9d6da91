#!/usr/bin/env bash
# make bench: runs bench/ programs against throwaway servers. See docs/BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
eval "$(scripts/servers.sh start)"
trap '"$ROOT/scripts/servers.sh" stop "$SERVERS_DIR"' EXIT INT TERM
for b in "$BUILD"/bin/bench_*; do
  [ -x "$b" ] || continue
  echo "== $(basename "$b")"
  "$b"
done
