#!/usr/bin/env bash
# make run: the main job on its embedded default. Starts throwaway
# PostgreSQL and Redis, then the orders service (API + relay + consumers)
# on PORT (default 8080). Without the orders service built it runs the relay
# with a small demo producer so events are seen flowing. Ctrl-C stops all.
# RUN_SECONDS=N stops it after N seconds (for smoke tests); RUN_DEMO_ORDERS=N
# demo orders are sent at start (default 3, 0 for none).
#
# SYSTEM=NAME (make run SYSTEM=NAME) starts another of the systems instead:
# scripts/systems/NAME.sh, run with ROOT and BUILD set. `make run SYSTEM=list`
# lists them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
export ROOT BUILD
SYSTEM=${SYSTEM:-orders}
if [ "$SYSTEM" = list ]; then
  echo "orders (default)"
  for f in scripts/systems/*.sh; do [ -e "$f" ] && basename "$f" .sh; done
  exit 0
fi
if [ "$SYSTEM" != orders ]; then
  if [ ! -f "scripts/systems/$SYSTEM.sh" ]; then
    echo "make run: unknown SYSTEM '$SYSTEM'; one of:" >&2
    SYSTEM=list "$0" >&2
    exit 2
  fi
  exec bash "scripts/systems/$SYSTEM.sh"
fi
eval "$(scripts/servers.sh start)"
child=""
cleanup() {
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null || true
  "$ROOT/scripts/servers.sh" stop "$SERVERS_DIR"
}
trap cleanup EXIT
trap 'exit 0' INT TERM
echo "PostgreSQL: $DATABASE_URL"
echo "Redis:      $REDIS_ADDR"
export OUTBOX_LOG_FORMAT=${OUTBOX_LOG_FORMAT:-text}
if [ -x "$BUILD/bin/orders-service" ]; then
  echo "Starting orders-service on port ${PORT:-8080} (Ctrl-C to stop)"
  "$BUILD/bin/orders-service" ${RUN_ARGS:-} &
else
  "$BUILD/bin/outbox-demo" ${RUN_ARGS:-} &
fi
child=$!
# A few demo orders once the API answers, so the worker, inventory and email
# lines show at once (RUN_DEMO_ORDERS=0 to skip); then it keeps serving.
if [ -x "$BUILD/bin/orders-service" ] && [ "${RUN_DEMO_ORDERS:-3}" -gt 0 ]; then
  (
    url="http://127.0.0.1:${PORT:-8080}"
    for _ in $(seq 100); do curl -sf -o /dev/null "$url/healthz" && break; sleep 0.2; done
    echo "--- make run: sending ${RUN_DEMO_ORDERS:-3} demo orders (outbox-load); try the README tour next ---"
    "$BUILD/bin/outbox-load" --url "$url" -n "${RUN_DEMO_ORDERS:-3}" -c 1 | tail -n 6
  ) &
fi
if [ -n "${RUN_SECONDS:-}" ]; then
  sleep "$RUN_SECONDS"
else
  wait "$child"
fi
