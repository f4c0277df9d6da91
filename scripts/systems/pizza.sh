#!/usr/bin/env bash
# make run SYSTEM=pizza: the pizza pipeline (seed 004, docs/PIZZA.md) on
# throwaway PostgreSQL and Redis: pizza-api on PORT (default 8080),
# pizza-job and pizza-consumer, then a short pizza-client burst so the
# payment, delivery and consumer lines show at once. Ctrl-C stops all.
#
#   RUN_SECONDS=N          stop after N seconds (smoke tests)
#   RUN_PIZZA_ORDERS=N     orders in the opening burst (default 5, 0 for none)
#   PIZZA_PAYMENT_DELAY, PIZZA_PAYMENT_FAIL_RATE, PIZZA_DELIVERY_DELAY,
#   PIZZA_DELIVERY_FAIL_RATE   the job's simulated steps (see pizza-job --help)
#
# Called by scripts/run.sh with ROOT and BUILD exported.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${BUILD:-build}
cd "$ROOT"
for b in pizza-api pizza-job pizza-consumer pizza-client; do
  if [ ! -x "$BUILD/bin/$b" ]; then
    echo "make run SYSTEM=pizza: $BUILD/bin/$b is not built (run: make build)" >&2
    exit 1
  fi
done
eval "$(scripts/servers.sh start)"
pids=()
cleanup() {
  # SIGTERM each program we started, by pid; then the servers.
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  "$ROOT/scripts/servers.sh" stop "$SERVERS_DIR"
}
trap cleanup EXIT
trap 'exit 0' INT TERM
export OUTBOX_LOG_FORMAT=${OUTBOX_LOG_FORMAT:-text}
export PORT=${PORT:-8080}
echo "PostgreSQL: $DATABASE_URL"
echo "Redis:      $REDIS_ADDR"
echo "Starting pizza-api on port $PORT, pizza-job and pizza-consumer (Ctrl-C to stop)"
"$BUILD/bin/pizza-api" &
pids+=($!)
url="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -sf -o /dev/null "$url/readyz" && break; sleep 0.2; done
"$BUILD/bin/pizza-consumer" &
pids+=($!)
"$BUILD/bin/pizza-job" &
pids+=($!)
if [ "${RUN_PIZZA_ORDERS:-5}" -gt 0 ]; then
  (
    sleep 1
    echo "--- make run: sending ${RUN_PIZZA_ORDERS:-5} pizza orders (pizza-client); try the docs/PIZZA.md tour next ---"
    "$BUILD/bin/pizza-client" --url "$url" -n "${RUN_PIZZA_ORDERS:-5}" -r 5 | tail -n 7
  ) &
  pids+=($!)
fi
if [ -n "${RUN_SECONDS:-}" ]; then
  sleep "$RUN_SECONDS"
else
  wait "${pids[0]}"
fi
