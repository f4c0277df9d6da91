#!/usr/bin/env bash
# What the wake-up hint costs on the write path: pgbench runs the same
# producer transaction (one business row + one outbox row) with and without
# pg_notify, CLIENTS clients (8), SECS seconds (20) each, ROUNDS rounds (2),
# runs alternated, against a throwaway server (SERVERS_PG_DURABLE=1 for a
# durable one, as scripts/bench.sh does). Prints a Markdown table; BENCH_TSV,
# if set, gets one tab-separated line per run appended.
# Usage: [CLIENTS=8 SECS=20 ROUNDS=2] bench/notify_cost.sh   (starts and stops its own servers)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
eval "$(scripts/servers.sh start)"
trap '"$ROOT/scripts/servers.sh" stop "$SERVERS_DIR"' EXIT
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DATABASE_URL=$DATABASE_URL "$BUILD/bin/outboxctl" migrate >/dev/null
psql -q "$DATABASE_URL" -c "CREATE TABLE IF NOT EXISTS bench_orders (id bigserial PRIMARY KEY, amount int)"
tmp=$(mktemp -d)
cat > "$tmp/plain.sql" <<'SQL'
BEGIN;
INSERT INTO bench_orders (amount) VALUES (1000);
INSERT INTO outbox (id, topic, type, key, payload) VALUES (gen_random_uuid(), 'orders', 'OrderCreated', 'k' || (random() * 1000)::int, '{"amount":1000}');
COMMIT;
SQL
cat > "$tmp/notify.sql" <<'SQL'
BEGIN;
INSERT INTO bench_orders (amount) VALUES (1000);
INSERT INTO outbox (id, topic, type, key, payload) VALUES (gen_random_uuid(), 'orders', 'OrderCreated', 'k' || (random() * 1000)::int, '{"amount":1000}') RETURNING pg_notify('outbox_wakeup', '');
COMMIT;
SQL
CLIENTS=${CLIENTS:-8}; SECS=${SECS:-20}; ROUNDS=${ROUNDS:-2}
if [ -n "${BENCH_TSV:-}" ] && [ ! -s "$BENCH_TSV" ]; then
  printf 'round\twrite_path\tclients\tseconds\ttps\n' >"$BENCH_TSV"
fi
echo "| write path | clients | tps | vs without |"
echo "|---|---|---|---|"
base=""
for round in $(seq "$ROUNDS"); do
for s in plain notify; do
  psql -q "$DATABASE_URL" -c "TRUNCATE outbox, bench_orders"
  tps=$("$PGBIN/pgbench" -n -c "$CLIENTS" -j 2 -T "$SECS" -f "$tmp/$s.sql" "$DATABASE_URL" 2>/dev/null | awk '/^tps/ {print int($3); exit}')
  [ "$s" = plain ] && base=$tps
  [ -n "${BENCH_TSV:-}" ] && printf '%d\t%s\t%d\t%d\t%d\n' "$round" "$s" "$CLIENTS" "$SECS" "$tps" >>"$BENCH_TSV"
  label="INSERT + COMMIT"; [ "$s" = notify ] && label="INSERT + pg_notify + COMMIT"
  printf '| %s (round %d) | %d | %d | %s |\n' "$label" "$round" "$CLIENTS" "$tps" \
    "$(awk -v a="$tps" -v b="$base" 'BEGIN{printf "%.2fx", a/b}')"
done
done
rm -rf "$tmp"
