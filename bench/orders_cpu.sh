#!/usr/bin/env bash
# Where the CPU of the order system goes, per process: orders-service as
# shipped (API, relay, consumers in one process) under outbox-load at 32
# connections (closed loop) for 25 s, on its own durable PostgreSQL and Redis
# (scripts/servers.sh). Over 15 s of the load it reads every process's CPU
# and every PostgreSQL session's (grouped by application_name: the API's
# pool, inventory, email, the relay) from /proc, and prints seconds, shares
# and microseconds per order, then the load's rate and p99.
#
# Usage: bench/orders_cpu.sh [NAME=VALUE ...]
#   NAME=VALUE   environment for orders-service (e.g. OUTBOX_CONSUMER_THREADS=1)
# Environment: BUILD (build), ORDERS_CPU_SQL (SQL run after the migrations,
# before the load), ORDERS_CPU_SECS (25), PERF=1 (perf record -a -g instead
# of the CPU table, into ORDERS_CPU_OUT/perf.data).
# Run alternately with two builds or settings: one run moves by a few per cent.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECS=${ORDERS_CPU_SECS:-25}
OUT=${ORDERS_CPU_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
eval "$(SERVERS_PG_DURABLE=1 scripts/servers.sh start)"
svc=
cleanup() {
  [ -z "$svc" ] || { kill "$svc" 2>/dev/null; wait "$svc" 2>/dev/null || true; }
  scripts/servers.sh stop "$SERVERS_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
PORT=$((20000 + RANDOM % 20000))
sql() { psql -X -qAt "$DATABASE_URL" "$@"; }
ready() { until curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz"; do sleep 0.1; done; }
# The migrations, by a first start.
OUTBOX_METRICS_ADDR=off PORT=$PORT "$BUILD/bin/orders-service" --no-relay --no-consumers \
  >"$OUT/migrate.log" 2>&1 & svc=$!
ready
kill -TERM "$svc"; wait "$svc" || true; svc=
[ -z "${ORDERS_CPU_SQL:-}" ] || sql -c "$ORDERS_CPU_SQL" >/dev/null
env "$@" OUTBOX_METRICS_ADDR=off PORT=$PORT OUTBOX_LOG_FORMAT=json "$BUILD/bin/orders-service" \
  >"$OUT/service.out" 2>"$OUT/service.err" & svc=$!
ready
"$BUILD/bin/outbox-load" --url "http://127.0.0.1:$PORT" -c 32 -d 2 >/dev/null 2>&1 # warm-up
"$BUILD/bin/outbox-load" --url "http://127.0.0.1:$PORT" -c 32 -d "$SECS" --json "$OUT/load.json" \
  >/dev/null 2>&1 & load=$!
sleep 5
c0=$(sql -c "SELECT count(*) FROM orders")
if [ "${PERF:-0}" = 1 ]; then
  perf record -F 999 -a -g -o "$OUT/perf.data" -- sleep 12 >/dev/null 2>&1
  echo "perf data: $OUT/perf.data"
else
  python3 bench/proc_cpu.py 15 "$DATABASE_URL" >"$OUT/cpu.txt" &
  cpu=$!
  sleep 15
  c1=$(sql -c "SELECT count(*) FROM orders")
  wait "$cpu"
  # The table again, with microseconds per order over the same window.
  python3 - "$OUT/cpu.txt" $((c1 - c0)) <<'PY'
import re, sys
n = int(sys.argv[2])
for line in open(sys.argv[1]):
    m = re.match(r"(.*?)\s+([\d.]+) s\s", line)
    if m and n > 0 and not line.startswith("total"):
        print("%s  %6.1f us/order" % (line.rstrip(), float(m.group(2)) * 1e6 / n))
    else:
        print(line.rstrip() + ("  (%d orders)" % n if line.startswith("total") else ""))
PY
fi
wait "$load"
python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("rate %.0f orders/s, p99 %.1f ms" % (j["rate"], j["latency_ms"]["p99"]))' "$OUT/load.json"
