#!/usr/bin/env bash
# make run SYSTEM=cars: the car system (seed 003) on throwaway servers.
# Starts PostgreSQL and Redis (scripts/servers.sh), then build/bin/cars-service
# on PORT (default 8080): the cars API, the relay and the car-search consumer
# that keeps the PostgreSQL full-text index in the database outbox_search
# (created at start). Registers a few demo cars once the API answers
# (RUN_DEMO_CARS=0 to skip). Ctrl-C stops all; RUN_SECONDS=N stops after N
# seconds (smoke tests). Run by scripts/run.sh with ROOT and BUILD set.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${BUILD:-build}
cd "$ROOT"
if [ ! -x "$BUILD/bin/cars-service" ]; then
  echo "make run SYSTEM=cars: $BUILD/bin/cars-service is not built (run: make build)" >&2
  exit 1
fi
eval "$(scripts/servers.sh start)"
child=""
cleanup() {
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null || true
  "$ROOT/scripts/servers.sh" stop "$SERVERS_DIR"
}
trap cleanup EXIT
trap 'exit 0' INT TERM
echo "PostgreSQL: $DATABASE_URL (search index: database outbox_search)"
echo "Redis:      $REDIS_ADDR"
export OUTBOX_LOG_FORMAT=${OUTBOX_LOG_FORMAT:-text}
export OUTBOX_METRICS_ADDR=${OUTBOX_METRICS_ADDR:-off}
echo "Starting cars-service on port ${PORT:-8080} (Ctrl-C to stop)"
"$BUILD/bin/cars-service" ${RUN_ARGS:-} &
child=$!
if [ "${RUN_DEMO_CARS:-3}" -gt 0 ]; then
  (
    url="http://127.0.0.1:${PORT:-8080}"
    for _ in $(seq 100); do curl -sf -o /dev/null "$url/readyz" && break; sleep 0.2; done
    echo "--- make run SYSTEM=cars: registering demo cars; try the README tour next ---"
    n=0
    for car in \
      '{"vin":"1HGCM82633A004352","make":"Honda","model":"Accord","year":2003,"price":450000}' \
      '{"vin":"JTDKN3DU8A0123457","make":"Toyota","model":"Prius","year":2010,"price":890000}' \
      '{"vin":"1M8GDM9AXKP042788","make":"Ford","model":"Transit","year":2019,"price":2150000}'; do
      [ "$n" -ge "${RUN_DEMO_CARS:-3}" ] && break
      curl -s -X POST "$url/cars" -H 'Content-Type: application/json' -d "$car" | head -c 300
      echo
      n=$((n + 1))
    done
  ) &
fi
if [ -n "${RUN_SECONDS:-}" ]; then
  sleep "$RUN_SECONDS"
else
  wait "$child"
fi
