#!/usr/bin/env bash
# make run: the main job on its embedded default. Starts throwaway
# PostgreSQL and Redis, then the orders service (API + relay + consumers)
# on PORT (default 8080). Without the orders service built it runs the relay
# with a small demo producer so events are seen flowing. Ctrl-C stops all.
# RUN_SECONDS=N stops it after N seconds (for smoke tests).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
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
if [ -n "${RUN_SECONDS:-}" ]; then
  sleep "$RUN_SECONDS"
else
  wait "$child"
fi
