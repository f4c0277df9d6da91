#!/usr/bin/env bash
# The soak (issue F9 item 4): the whole order system for MINUTES at half its
# measured maximum rate, sampling every process's memory and every table's
# size, then checking that nothing failed, every effect happened exactly once
# and the infrastructure stayed flat.
#
#   make soak                      # MINUTES=30, RATE = half the measured maximum
#   MINUTES=3 make soak            # a quick validation
#   RATE=200 MINUTES=60 bench/soak.sh
#
# What it does (all on throwaway servers, PostgreSQL durable as in production):
#   1. scripts/servers.sh start with SERVERS_PG_DURABLE=1; build/bin/orders-service
#      as `make run` starts it (API, relay with its 5 workers, the inventory and
#      email consumers in one process; OUTBOX_LOG_FORMAT=text), on free ports.
#   2. The maximum: outbox-load -c CLIENTS -d MAX_SECS (a new Idempotency-Key per
#      request, as bench/bench_orders.sh measures the write path), after a short
#      warm-up; then waits until the consumers have caught up.
#   3. The soak: outbox-load -c CLIENTS --rate RATE for MINUTES (paced: a request
#      starts every 1/RATE s; the report gives offered vs achieved and how far
#      starts fell behind schedule), then waits until everything is drained.
#   4. Every INTERVAL s (bench/soak_sample.py): VmRSS/RssAnon/Pss of every process
#      (orders-service, redis-server, the postmaster, PostgreSQL backends grouped
#      by application, auxiliary processes, the load generator), every user
#      table's pg_total_relation_size and live/dead tuples, database and WAL
#      size, the outbox's rows, Redis stream length and INFO memory, consumer
#      group lag, consumer lag in orders, non-2xx answers so far.
#   5. Checks and report (bench/soak_report.py): no non-2xx, no dead letters,
#      every order confirmed with its stock deducted once and one email, the
#      flatness of the last third against the middle third; TSV data, gnuplot
#      SVG plots and soak.md.
#
# Retentions: idempotency keys, inbox records and acknowledged stream entries
# are kept 24 h, 7 days and 1 h by default, so in a soak shorter than that they
# only grow. The soak shortens all three to RETENTION (default: a sixth of the
# soak, 5 minutes at 30) so that their purges run several times and the tables
# and Redis must level off.
#
# Environment:
#   MINUTES=30     soak length
#   RATE           orders/s of the soak (default: RATE_FRACTION of the measured maximum)
#   RATE_FRACTION=0.5
#   MAX_SECS=45    length of the maximum-rate measurement
#   CLIENTS=32     connections of outbox-load (both phases)
#   INTERVAL=10    seconds between samples
#   RETENTION      idempotency, inbox and stream retention in seconds (default MINUTES*10)
#   DRAIN_SECS=300 longest wait for the consumers after each load
#   TOL_PCT=10 TOL_MB=2   flatness tolerance: the last third's maximum may exceed
#                  the middle third's by max(TOL_PCT %, TOL_MB MiB)
#   SOAK_DOC=docs/reliability   where soak.md, the SVGs and soak-data/ go
#   SERVERS_PG_DURABLE=1  (default here; 0 for the test suite's fast settings)
# Exit status: 0 when every check passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
MINUTES=${MINUTES:-30}
RATE=${RATE:-}
RATE_FRACTION=${RATE_FRACTION:-0.5}
MAX_SECS=${MAX_SECS:-45}
CLIENTS=${CLIENTS:-32}
INTERVAL=${INTERVAL:-10}
RETENTION=${RETENTION:-$((MINUTES * 10))}
DRAIN_SECS=${DRAIN_SECS:-300}
TOL_PCT=${TOL_PCT:-10}
TOL_MB=${TOL_MB:-2}
SOAK_DOC=${SOAK_DOC:-docs/reliability}
export SERVERS_PG_DURABLE=${SERVERS_PG_DURABLE:-1}
[ "$RETENTION" -ge 10 ] || RETENTION=10
STOCK_BASE=1000000000 # stock per sku at the start (the seed's million could run out)

for b in orders-service outbox-load; do
  [ -x "$BUILD/bin/$b" ] || { echo "soak: $BUILD/bin/$b missing (make build)" >&2; exit 1; }
done
command -v gnuplot >/dev/null || { echo "soak: gnuplot missing (scripts/deps.sh installs gnuplot-nox)" >&2; exit 1; }
mkdir -p "$SOAK_DOC/soak-data"
SOAK_DOC=$(cd "$SOAK_DOC" && pwd)
DATA=$SOAK_DOC/soak-data
rm -f "$DATA"/*
say() { echo "[soak $(date -u +%H:%M:%S)] $*" >&2; }

TMP=$(mktemp -d /tmp/soak-run.XXXXXX)
svc="" sampler="" load=""
cleanup() {
  for p in $load $sampler; do kill "$p" 2>/dev/null || true; done
  [ -n "$svc" ] && kill -TERM "$svc" 2>/dev/null && wait "$svc" 2>/dev/null
  [ -n "${SERVERS_DIR:-}" ] && "$ROOT/scripts/servers.sh" stop "$SERVERS_DIR"
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

eval "$(scripts/servers.sh start)"
REDIS_PORT=${REDIS_ADDR##*:}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
PORT=$(free_port)
METRICS_PORT=$(free_port)
URL="http://127.0.0.1:$PORT"
sql() { psql -X -qAt -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }
say "servers: $DATABASE_URL, redis $REDIS_ADDR (durable=$SERVERS_PG_DURABLE)"

# orders-service as scripts/run.sh starts it (text logs; the emails on stdout),
# on free ports, with the shortened retentions.
export OUTBOX_LOG_FORMAT=text PORT OUTBOX_METRICS_ADDR=127.0.0.1:$METRICS_PORT
export OUTBOX_IDEMPOTENCY_RETENTION=${RETENTION}s OUTBOX_INBOX_RETENTION=${RETENTION}s \
  OUTBOX_CONSUMER_STREAM_RETENTION=${RETENTION}s
"$BUILD/bin/orders-service" >"$TMP/svc.out" 2>"$TMP/svc.err" &
svc=$!
for _ in $(seq 300); do
  curl -sf -o /dev/null "$URL/readyz" && break
  kill -0 "$svc" 2>/dev/null || { tail -n 20 "$TMP/svc.err" >&2; exit 1; }
  sleep 0.1
done
curl -sf -o /dev/null "$URL/readyz" || { echo "soak: orders-service did not start" >&2; tail -n 20 "$TMP/svc.err" >&2; exit 1; }
say "orders-service pid $svc on $URL (relay metrics on :$METRICS_PORT), retention ${RETENTION}s"
sql -c "UPDATE inventory SET stock = $STOCK_BASE WHERE sku <> 'SKU-RARE'" >/dev/null

COUNTS="SELECT count(*), count(*) FILTER (WHERE status = 'pending'), (SELECT count(*) FROM outbox) FROM orders"
emails() { grep -c 'Email sent successfully' "$TMP/svc.out" || true; }
# drained SECONDS: until every order is confirmed or rejected, the outbox is
# empty and every order has its email; 1 when it did not happen in time.
drained() {
  local end=$((SECONDS + $1)) c
  while [ $SECONDS -lt $end ]; do
    c=$(sql -F ' ' -c "$COUNTS")
    # shellcheck disable=SC2086
    set -- $c
    [ "$2" = 0 ] && [ "$3" = 0 ] && [ "$(emails)" = "$1" ] && return 0
    sleep 1
  done
  return 1
}

# ---- 4. the sampler runs from here to the end (phases in $TMP/phase) ----
echo warmup >"$TMP/phase"
python3 bench/soak_sample.py --out "$DATA" --interval "$INTERVAL" --db "$DATABASE_URL" \
  --redis-port "$REDIS_PORT" --svc-pid "$svc" --svc-out "$TMP/svc.out" --pgdata "$SERVERS_DIR/pg/data" \
  --metrics "$URL/metrics" --phase-file "$TMP/phase" --load-pid-file "$TMP/load.pid" \
  --load-err "$TMP/load.err" 2>"$TMP/sampler.err" &
sampler=$!

# ---- 2. the maximum rate ----
say "warm-up: outbox-load -c $CLIENTS -d 5"
"$BUILD/bin/outbox-load" --url "$URL" -c "$CLIENTS" -d 5 --label warmup --json "$DATA/warmup.json" \
  >"$TMP/warmup.txt" 2>/dev/null || say "warm-up: some requests failed"
drained 120 || say "warm-up not drained in 120 s"
# The API's maximum is what outbox-load reaches; the system's sustainable
# maximum is the rate at which orders are completely processed (stock deducted,
# email sent): the orders of the run over the time from its start until the
# consumers have caught up. Above it the backlog grows without end.
orders0=$(sql -c "SELECT count(*) FROM orders")
say "maximum: outbox-load -c $CLIENTS -d $MAX_SECS"
echo max >"$TMP/phase"
t_max0=$(date +%s.%N)
"$BUILD/bin/outbox-load" --url "$URL" -c "$CLIENTS" -d "$MAX_SECS" --label max \
  --json "$DATA/max.json" --csv "$DATA/max_persec.csv" >"$DATA/max.txt" 2>"$TMP/max.err" ||
  say "maximum: some requests failed"
max_lag=$(sql -F ' ' -c "$COUNTS")
MAX_API=$(python3 -c 'import json,sys; print("%.1f" % json.load(open(sys.argv[1]))["rate"])' "$DATA/max.json")
say "maximum: the API took $MAX_API orders/s (orders, pending, outbox right after: $max_lag)"
echo max-drain >"$TMP/phase"
drained "$DRAIN_SECS" || say "maximum: not drained in $DRAIN_SECS s"
t_max1=$(date +%s.%N)
orders1=$(sql -c "SELECT count(*) FROM orders")
MAX_RATE=$(python3 -c 'import sys; n0, n1, t0, t1 = map(float, sys.argv[1:]); print("%.1f" % ((n1 - n0) / (t1 - t0)))' \
  "$orders0" "$orders1" "$t_max0" "$t_max1")
max_drain=$(python3 -c 'import sys; print("%.0f" % (float(sys.argv[1]) - float(sys.argv[2]) - float(sys.argv[3])))' \
  "$t_max1" "$t_max0" "$MAX_SECS")
say "maximum: drained ${max_drain} s after the load: $((orders1 - orders0)) orders completely processed at $MAX_RATE orders/s"
if [ -z "$RATE" ]; then
  RATE=$(python3 -c 'import sys; print(max(1, int(float(sys.argv[1]) * float(sys.argv[2]))))' "$MAX_RATE" "$RATE_FRACTION")
  RATE_SOURCE="$RATE_FRACTION x measured maximum"
else
  RATE_SOURCE="given"
fi
echo calm >"$TMP/phase"
sleep "$((INTERVAL + 2))" # a calm baseline sample
SOAK_SECS=$((MINUTES * 60))

# ---- 3./4. the soak, sampled ----
say "soak: outbox-load -c $CLIENTS -d $SOAK_SECS --rate $RATE ($RATE_SOURCE)"
echo soak >"$TMP/phase"
soak_start=$(date -u +%Y-%m-%dT%H:%M:%SZ) soak_start_epoch=$(date +%s.%N)
"$BUILD/bin/outbox-load" --url "$URL" -c "$CLIENTS" -d "$SOAK_SECS" --rate "$RATE" --label soak \
  --json "$DATA/soak.json" --csv "$DATA/soak_persec.csv" >"$DATA/soak.txt" 2>"$TMP/load.err" &
load=$!
echo "$load" >"$TMP/load.pid"
soak_rc=0
wait "$load" || soak_rc=$?
load=""
soak_end=$(date -u +%Y-%m-%dT%H:%M:%SZ) soak_end_epoch=$(date +%s.%N)
[ "$soak_rc" = 0 ] || say "soak: outbox-load exited $soak_rc: $(grep -m3 -v progress "$TMP/load.err" | tr '\n' ' ')"
echo drain >"$TMP/phase"
t=$SECONDS
drained "$DRAIN_SECS" || say "soak: not drained in $DRAIN_SECS s"
soak_drain=$((SECONDS - t))
say "soak: drained in ${soak_drain} s"
sleep "$((INTERVAL + 2))" # one sample after the drain
kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
sampler=""
[ -s "$TMP/sampler.err" ] && { say "sampler said:"; tail -n 5 "$TMP/sampler.err" >&2; }

# ---- 5. the end state, then the report ----
curl -s "$URL/metrics" >"$DATA/http_metrics.txt" || true
kill -TERM "$svc" && wait "$svc" || true
svc=""
sql -F $'\t' -c "SELECT 'orders', count(*) FROM orders
  UNION ALL SELECT 'orders_' || status, count(*) FROM orders GROUP BY status
  UNION ALL SELECT 'order_items', count(*) FROM order_items
  UNION ALL SELECT 'confirmed_without_all_reservations', count(*) FROM orders o
    WHERE o.status = 'confirmed' AND (SELECT count(*) FROM order_items i WHERE i.order_id = o.id)
      <> (SELECT count(*) FROM inventory_reservations r WHERE r.order_id = o.id)
  UNION ALL SELECT 'reservations_not_matching_items', count(*) FROM inventory_reservations r
    LEFT JOIN order_items i USING (order_id, sku) WHERE i.quantity IS DISTINCT FROM r.quantity
  UNION ALL SELECT 'outbox', count(*) FROM outbox
  UNION ALL SELECT 'outbox_dead_letter', count(*) FROM outbox_dead_letter
  UNION ALL SELECT 'outbox_consumer_dead_letter', count(*) FROM outbox_consumer_dead_letter" >"$DATA/end_counts.tsv"
sql -F $'\t' -c "SELECT i.sku, $STOCK_BASE - i.stock AS deducted,
    coalesce((SELECT sum(oi.quantity) FROM order_items oi JOIN orders o ON o.id = oi.order_id
              WHERE o.status = 'confirmed' AND oi.sku = i.sku), 0) AS ordered_confirmed,
    coalesce((SELECT sum(r.quantity) FROM inventory_reservations r WHERE r.sku = i.sku), 0) AS reserved
  FROM inventory i WHERE i.sku <> 'SKU-RARE' ORDER BY i.sku" >"$DATA/stock.tsv"
sql -c "SELECT id FROM orders" >"$TMP/order_ids.txt"
grep -c 'SKIPPING duplicate' "$TMP/svc.err" >"$TMP/dups.txt" || true
grep -E ' (ERROR|WARN) ' "$TMP/svc.err" | head -n 200 >"$DATA/service_warnings.log" || true
python3 - "$DATA/meta.json" <<PY
import json, sys
json.dump({"command": "MINUTES=$MINUTES make soak" + ("" if "$RATE_SOURCE" != "given" else " (RATE=$RATE)"),
           "minutes": $MINUTES, "rate": $RATE, "rate_source": "$RATE_SOURCE", "max_rate": $MAX_RATE, "max_api": $MAX_API,
           "max_orders": $((orders1 - orders0)),
           "max_secs": $MAX_SECS, "max_drain_s": $max_drain, "soak_drain_s": $soak_drain, "drain_limit_s": $DRAIN_SECS,
           "clients": $CLIENTS, "interval": $INTERVAL, "retention_s": $RETENTION,
           "durable": "$SERVERS_PG_DURABLE" == "1", "nproc": $(nproc),
           "cpu": """$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')""",
           "mem_total_kb": $(awk '/MemTotal/ {print $2}' /proc/meminfo),
           "kernel": "$(uname -r)", "postgres": "$(sql -c 'SHOW server_version')",
           "redis": "$(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/')",
           "soak_start": "$soak_start", "soak_end": "$soak_end",
           "soak_start_epoch": $soak_start_epoch, "soak_end_epoch": $soak_end_epoch,
           "load_at_end": "$(cut -d' ' -f1-3 /proc/loadavg)", "stock_base": $STOCK_BASE,
           "duplicates_skipped": int("$(cat "$TMP/dups.txt")" or 0),
           "shared_buffers_mb": $(sql -c "SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'"),
           "max_wal_size_mb": $(sql -c "SELECT setting FROM pg_settings WHERE name = 'max_wal_size'"),
           "tol_pct": $TOL_PCT, "tol_mb": $TOL_MB}, open(sys.argv[1], "w"), indent=1)
PY
rc=0
python3 bench/soak_report.py "$DATA" "$SOAK_DOC" "$TMP/svc.out" "$TMP/order_ids.txt" || rc=$?
say "report: $SOAK_DOC/soak.md (data in $DATA)"
exit "$rc"
