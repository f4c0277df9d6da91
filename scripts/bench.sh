#!/usr/bin/env bash
# make bench: runs the benchmarks in bench/ against throwaway servers and
# prints Markdown tables (copied into docs/BENCHMARKS.md with the command).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
echo "# bench/notify_cost.sh"
bench/notify_cost.sh
eval "$(scripts/servers.sh start)"
trap '"$ROOT/scripts/servers.sh" stop "$SERVERS_DIR"' EXIT INT TERM
for b in "$BUILD"/bin/bench_*; do
  [ -x "$b" ] || continue
  echo "# $(basename "$b")"
  OUTBOX_LOG_LEVEL=warn "$b"
done
