#!/usr/bin/env bash
# make run SYSTEM=ledger: users-service and transactions-service (docs/LEDGER.md).
# Starts throwaway PostgreSQL and Redis (scripts/servers.sh), creates
# users_db and transaction_db, then both services with the seed-style
# environment (SERVER_PORT, DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME,
# OUTBOX_WORKER_INTERVAL), each with its relay in ack_mode=mark.
#
#   USERS_PORT (8081), TX_PORT (8082)   the two APIs
#   LEDGER_BROKER=redis (default) | amqp   amqp starts a throwaway RabbitMQ node
#   OUTBOX_WORKER_INTERVAL (5s)         the relays' polling interval
#   RUN_SECONDS=N                       stop after N seconds (smoke tests)
#
# Run with ROOT and BUILD set by scripts/run.sh. Ctrl-C stops everything and
# removes the servers.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${BUILD:-build}
cd "$ROOT"
for b in users-service transactions-service; do
  if [ ! -x "$BUILD/bin/$b" ]; then
    echo "make run SYSTEM=ledger: $BUILD/bin/$b is missing (build first: make build)" >&2
    exit 1
  fi
done

eval "$(scripts/servers.sh start)"
pids=()
rmq_dir=""
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$rmq_dir" ] && scripts/rabbitmq.sh stop "$rmq_dir" >/dev/null 2>&1 || true
  scripts/servers.sh stop "$SERVERS_DIR"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# OUTBOX_TEST_PG is "host=H port=P user=U": the seed-style variables.
pg_field() { sed -E "s/.*$1=([^ ]+).*/\\1/" <<<"$OUTBOX_TEST_PG"; }
export DB_HOST DB_PORT DB_USER DB_PASSWORD=""
DB_HOST=$(pg_field host)
DB_PORT=$(pg_field port)
DB_USER=$(pg_field user)
unset DATABASE_URL
for db in users_db transaction_db; do
  psql -q -h "$DB_HOST" -p "$DB_PORT" -U "$DB_USER" -d postgres -c "CREATE DATABASE $db" >/dev/null
done

if [ "${LEDGER_BROKER:-redis}" = amqp ]; then
  eval "$(RABBITMQ_OWNER_PID=$$ scripts/rabbitmq.sh start)"
  rmq_dir=$RABBITMQ_DIR
  export OUTBOX_SINK=$OUTBOX_TEST_AMQP
  export OUTBOX_AMQP_MANDATORY=true # no queue bound yet: the relay retries instead of dropping
else
  export OUTBOX_SINK=redis://$REDIS_ADDR
fi
export OUTBOX_WORKER_INTERVAL=${OUTBOX_WORKER_INTERVAL:-5s}
export OUTBOX_LOG_FORMAT=${OUTBOX_LOG_FORMAT:-text}
USERS_PORT=${USERS_PORT:-8081}
TX_PORT=${TX_PORT:-8082}

echo "PostgreSQL: $DB_HOST:$DB_PORT (users_db, transaction_db)"
echo "Broker:     $OUTBOX_SINK"
# transactions-service first: its consumers create the broker's queues/groups.
SERVER_PORT=$TX_PORT DB_NAME=transaction_db "$BUILD/bin/transactions-service" &
pids+=($!)
SERVER_PORT=$USERS_PORT DB_NAME=users_db "$BUILD/bin/users-service" &
pids+=($!)
for port in "$TX_PORT" "$USERS_PORT"; do
  for _ in $(seq 150); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.2; done
done
echo "--- users-service on :$USERS_PORT, transactions-service on :$TX_PORT;"
echo "--- try the curl tour in README.md (\"Users and money transactions\"). Ctrl-C stops. ---"
echo "--- outbox rows (PENDING -> PROCESSED): psql -h $DB_HOST -p $DB_PORT -U $DB_USER users_db -c 'SELECT type, status FROM outbox' ---"
if [ -n "${RUN_SECONDS:-}" ]; then
  sleep "$RUN_SECONDS"
else
  wait -n "${pids[@]}"
fi
