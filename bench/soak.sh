#!/usr/bin/env bash
# Table size under steady load: pgbench commits RATE order+event
# transactions per second for MINUTES while outbox-relay (5 workers) publishes
# to Redis; every minute it samples the outbox table's total size, live rows,
# dead tuples and the dead-letter/inbox sizes. Prints a Markdown table.
# Usage: RATE=300 MINUTES=30 bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
RATE=${RATE:-300}; MINUTES=${MINUTES:-30}
eval "$(scripts/servers.sh start)"
relay=""
trap '[ -n "$relay" ] && kill "$relay" 2>/dev/null; "$ROOT/scripts/servers.sh" stop "$SERVERS_DIR"' EXIT
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
"$BUILD/bin/outboxctl" migrate >/dev/null
psql -q "$DATABASE_URL" -c "CREATE TABLE bench_orders (id bigserial PRIMARY KEY, amount int)"
tmp=$(mktemp -d)
cat > "$tmp/tx.sql" <<'SQL'
BEGIN;
INSERT INTO bench_orders (amount) VALUES (1000);
INSERT INTO outbox (id, topic, type, key, payload) VALUES (gen_random_uuid(), 'soak', 'OrderCreated', 'k' || (random() * 1000)::int, '{"amount":1000,"items":[{"sku":"SKU-1","quantity":2}]}') RETURNING pg_notify('outbox_wakeup', '');
COMMIT;
SQL
OUTBOX_SINK="redis://$REDIS_ADDR" OUTBOX_REDIS_MAXLEN=100000 OUTBOX_METRICS_ADDR=off OUTBOX_LOG_LEVEL=warn \
  "$BUILD/bin/outbox-relay" 2>"$tmp/relay.log" &
relay=$!
"$PGBIN/pgbench" -n -c 4 -j 2 -R "$RATE" -T $((MINUTES * 60)) -f "$tmp/tx.sql" "$DATABASE_URL" >"$tmp/pgbench.log" 2>&1 &
bench=$!
echo "| minute | outbox total size | live rows | dead tuples | committed so far | dead letters |"
echo "|---|---|---|---|---|---|"
for m in $(seq 0 "$MINUTES"); do
  psql -qAt -F ' | ' "$DATABASE_URL" -c "SELECT $m, pg_size_pretty(pg_total_relation_size('outbox')),
      (SELECT count(*) FROM outbox), (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'outbox'),
      (SELECT count(*) FROM bench_orders), (SELECT count(*) FROM outbox_dead_letter)" | sed 's/^/| /; s/$/ |/'
  [ "$m" -lt "$MINUTES" ] && sleep 60
done
wait "$bench" || true
grep -E '^(tps|number of transactions actually processed)' "$tmp/pgbench.log" || true
rm -rf "$tmp"
