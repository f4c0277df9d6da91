#!/usr/bin/env bash
# The order system under load (issue F6, items 3 and 4), against its own
# throwaway PostgreSQL and Redis (scripts/servers.sh; SERVERS_PG_DURABLE=1 is
# honoured):
#
#   write path   POST /orders at CLIENTS connections, a new Idempotency-Key per
#                request, for SECS, against the pgbench ceiling of the same
#                transaction (bench/orders_write.sql, -M prepared, same clients,
#                -j 2) measured in the same run. Runs, each on emptied tables:
#                  pgbench            the transaction alone: the ceiling
#                  pgbench_bg         the same, while orders-service --no-api
#                                     (relay + consumers) publishes and consumes it
#                  api_only           orders-service --no-relay --no-consumers
#                  api                orders-service as shipped: API, relay and
#                                     consumers in one process
#   consumer lag POST /orders at a steady LAG_RATE for LAG_SECS (orders-service as
#                shipped), sampling every second: orders committed, orders whose
#                inventory effect is applied and whose email is sent (their
#                inbox records, outbox_inbox), unpublished events; then until the
#                consumers have caught up (at most DRAIN_SECS).
#
# Usage: bench/bench_orders.sh [--quick]
#   full (default): SECS=30 per write-path run, LAG_SECS=300 (about 8 minutes)
#   --quick:        SECS=5, LAG_SECS=30 (about 1.5 minutes)
# Environment (defaults by mode):
#   BENCH_ORDERS_OUT      directory for the CSV/JSON data and orders.md (default:
#                         the directory of BENCH_TSV if set, else a new temporary one)
#   BENCH_TSV             if set, one tab-separated line per measured run is appended
#   BENCH_ORDERS_ONLY     subset of: pgbench pgbench_bg api_only api lag
#   BENCH_ORDERS_CLIENTS  connections, pgbench clients (32)
#   BENCH_ORDERS_SECS     seconds per write-path run
#   BENCH_ORDERS_LAG_SECS seconds of steady load
#   BENCH_ORDERS_LAG_RATE orders/s of the steady load (default: BENCH_ORDERS_LAG_FRACTION
#                         of the api run's rate, or 200 when api was not run)
#   BENCH_ORDERS_LAG_FRACTION  (1: the write path's own rate, the goal being that
#                         the consumers keep up with it)
#   BENCH_ORDERS_DRAIN_SECS    longest wait for the consumers after the load (120)
#   BENCH_ORDERS_PGSS=1   load pg_stat_statements (with planning times) and keep each
#                         run's top statements (perturbs the measurement slightly; off
#                         by default)
# Prints a Markdown section on stdout (bench/orders_report.py OUT prints it
# again from the data); progress on stderr. Files in the output directory:
# write_path.csv (one line per run), api_persec.csv and lag_load_persec.csv
# (outbox-load, per second), lag.csv (the samples), lag_summary.tsv,
# lag_totals.json, <run>.json (outbox-load), meta.json, pgbench_<run>.log,
# pgss_<run>.txt, orders.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=${BUILD:-build}
MODE=full
case "${1:-}" in
  --quick) MODE=quick ;;
  "" | --full) ;;
  *) echo "usage: $0 [--quick|--full]" >&2; exit 2 ;;
esac
if [ "$MODE" = quick ]; then
  SECS=${BENCH_ORDERS_SECS:-5}; LAG_SECS=${BENCH_ORDERS_LAG_SECS:-30}
else
  SECS=${BENCH_ORDERS_SECS:-30}; LAG_SECS=${BENCH_ORDERS_LAG_SECS:-300}
fi
CLIENTS=${BENCH_ORDERS_CLIENTS:-32}
LAG_RATE=${BENCH_ORDERS_LAG_RATE:-}
LAG_FRACTION=${BENCH_ORDERS_LAG_FRACTION:-1}
DRAIN_SECS=${BENCH_ORDERS_DRAIN_SECS:-120}
ONLY=" ${BENCH_ORDERS_ONLY:-pgbench pgbench_bg api_only api lag} "
if [ -n "${BENCH_ORDERS_OUT:-}" ]; then
  OUT=$BENCH_ORDERS_OUT
elif [ -n "${BENCH_TSV:-}" ]; then
  OUT=$(dirname "$BENCH_TSV")/orders
else
  OUT=$(mktemp -d /tmp/bench-orders.XXXXXX)
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/write_path.csv "$OUT"/api_persec.csv "$OUT"/lag.csv "$OUT"/lag_load_persec.csv \
  "$OUT"/lag_summary.tsv "$OUT"/lag_totals.json "$OUT"/*.json "$OUT"/*.txt "$OUT"/pgbench_*.log \
  "$OUT"/orders.md
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
for b in orders-service outbox-load; do
  [ -x "$BUILD/bin/$b" ] || { echo "bench_orders: $BUILD/bin/$b missing (make build)" >&2; exit 1; }
done
say() { echo "[bench_orders] $*" >&2; }
want() { case "$ONLY" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

TMP=$(mktemp -d /tmp/bench-orders-run.XXXXXX)
svc="" sampler=""
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  [ -n "$svc" ] && kill -TERM "$svc" 2>/dev/null && wait "$svc" 2>/dev/null
  [ -n "${SERVERS_DIR:-}" ] && "$ROOT/scripts/servers.sh" stop "$SERVERS_DIR"
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
PGSS_OPT=""
[ "${BENCH_ORDERS_PGSS:-0}" = 1 ] &&
  PGSS_OPT="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_planning=on"
eval "$(SERVERS_PG_OPTS="${SERVERS_PG_OPTS:-} $PGSS_OPT" scripts/servers.sh start)"
REDIS_PORT=${REDIS_ADDR##*:}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
URL="http://127.0.0.1:$PORT"
sql() { psql -X -qAt -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }

# svc_start ARGS...: orders-service as the bench runs it; waits until it serves
# (or, with --no-api, until its consumers have started).
svc_start() {
  : >"$TMP/svc.out"
  OUTBOX_METRICS_ADDR=off PORT=$PORT OUTBOX_LOG_FORMAT=json "$BUILD/bin/orders-service" "$@" \
    >>"$TMP/svc.out" 2>"$TMP/svc.err" &
  svc=$!
  for _ in $(seq 300); do
    if [[ " $* " == *" --no-api "* ]]; then
      [ "$(grep -c '"consumer_started"' "$TMP/svc.out" "$TMP/svc.err" | awk -F: '{s+=$2} END {print s}')" -ge 2 ] && return 0
    else
      curl -sf -o /dev/null "$URL/readyz" && return 0
    fi
    kill -0 "$svc" 2>/dev/null || break
    sleep 0.1
  done
  echo "bench_orders: orders-service did not start:" >&2
  tail -n 20 "$TMP/svc.err" "$TMP/svc.out" >&2
  exit 1
}
svc_stop() {
  kill -TERM "$svc" && wait "$svc" || true
  svc=""
}

# Empties what the runs write (inventory back to its seed) so every run starts
# from the same tables; the stream and its consumer groups go too. The emptied
# tables are not vacuumed or analyzed: TRUNCATE leaves their size unknown, as
# on a new table, and the sessions plan index lookups. Analyzed empty, they
# were known to be empty, and every session planned (and kept) sequential
# scans of orders for its foreign-key checks and lookups, dearer with every
# order of the run: POST /orders 1,150 against 1,590 orders/s, a production
# table's autoanalyze never leaves that in place for long.
reset_db() {
  sql -c "TRUNCATE orders, order_items, inventory_reservations, outbox, outbox_http_idempotency,
                   outbox_inbox" \
      -c "UPDATE inventory SET stock = 1000000 WHERE sku <> 'SKU-RARE'" \
      -c "VACUUM ANALYZE inventory" -c "CHECKPOINT" >/dev/null
  redis-cli -p "$REDIS_PORT" DEL orders >/dev/null
  [ -n "$PGSS_OPT" ] && sql -c "SELECT pg_stat_statements_reset()" >/dev/null
  return 0
}
pgss_dump() { # pgss_dump RUN: the run's most expensive statements
  [ -n "$PGSS_OPT" ] || return 0
  sql -F ' | ' -c "SELECT calls, round(total_exec_time)::bigint AS total_ms,
        round(mean_exec_time::numeric, 3) AS mean_ms, rows, plans,
        round(total_plan_time)::bigint AS plan_ms, jit_functions AS jit_fns,
        round((jit_generation_time + jit_inlining_time + jit_optimization_time
               + jit_emission_time)::numeric) AS jit_ms,
        left(regexp_replace(query, '\s+', ' ', 'g'), 140)
      FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 25" >"$OUT/pgss_$1.txt"
}
# Consumer progress, one line: committed, inventory done, email done, unpublished.
COUNTS="SELECT (SELECT count(*) FROM orders),
  (SELECT count(*) FROM outbox_inbox WHERE consumer = 'inventory'),
  (SELECT count(*) FROM outbox_inbox WHERE consumer = 'email'), (SELECT count(*) FROM outbox)"
# wait_drained SECONDS: until every order has both effects and the outbox is empty.
wait_drained() {
  local end=$((SECONDS + $1))
  while [ $SECONDS -lt $end ]; do
    sql -F ' ' -c "$COUNTS" | awk '{exit !($1 == $2 && $1 == $3 && $4 == 0)}' && return 0
    sleep 0.5
  done
  return 1
}

# Migrations (library, idempotency keys, the orders schema) by a first start.
svc_start --no-relay --no-consumers
svc_stop
sql -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null 2>&1 || PGSS_OPT=""

echo "run,orders_per_s,ratio,p50_ms,p95_ms,p99_ms,max_ms,ok,failed" >"$OUT/write_path.csv"
PGB_CMD="pgbench -n -M prepared -c $CLIENTS -j 2 -T $SECS -f bench/orders_write.sql"

# pgbench_run RUN: the ceiling transaction for SECS; latencies from its log.
pgbench_run() {
  local run=$1
  say "$run: $PGB_CMD"
  (cd "$TMP" && "$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -T "$SECS" -l \
    --log-prefix="pgb_$run" -f "$ROOT/bench/orders_write.sql" "$DATABASE_URL") \
    >"$OUT/pgbench_$run.log" 2>&1 || { cat "$OUT/pgbench_$run.log" >&2; exit 1; }
  cat "$TMP"/pgb_"$run".* | python3 -c '
import sys
lat = sorted(int(l.split()[2]) / 1000.0 for l in sys.stdin if l.strip())
tps = [l for l in open(sys.argv[2]) if l.startswith("tps")][0].split()[2]
q = lambda p: lat[int((len(lat) - 1) * p)] if lat else 0
print("%s,%.1f,,%.2f,%.2f,%.2f,%.2f,%d,0" % (sys.argv[1], float(tps), q(.5), q(.95), q(.99),
      lat[-1] if lat else 0, len(lat)))' "$run" "$OUT/pgbench_$run.log" >>"$OUT/write_path.csv"
  rm -f "$TMP"/pgb_"$run".*
}
# load_run RUN ARGS...: outbox-load for SECS after a 2 s warm-up (drained
# first when the service runs its relay and consumers).
load_run() {
  local run=$1; shift
  "$BUILD/bin/outbox-load" --url "$URL" -c "$CLIENTS" -d 2 >/dev/null 2>&1 || true
  [ "$run" = api_only ] || wait_drained 60 || say "$run: warm-up not drained in 60 s"
  say "$run: outbox-load -c $CLIENTS -d $SECS $*"
  "$BUILD/bin/outbox-load" --url "$URL" -c "$CLIENTS" -d "$SECS" --label "$run" \
    --json "$OUT/$run.json" "$@" >"$OUT/$run.txt" 2>"$TMP/load.err" ||
    say "$run: some requests failed: $(grep -m1 -v progress "$TMP/load.err" || true)"
  python3 -c '
import json, sys
j = json.load(open(sys.argv[2])); l = j["latency_ms"]
print("%s,%.1f,,%.2f,%.2f,%.2f,%.2f,%d,%d" % (sys.argv[1], j["rate"], l["p50"], l["p95"],
      l["p99"], l["max"], j["ok"], j["failed"]))' "$run" "$OUT/$run.json" >>"$OUT/write_path.csv"
}

if want pgbench; then
  reset_db
  pgbench_run pgbench
  pgss_dump pgbench
fi
if want pgbench_bg; then
  reset_db
  svc_start --no-api
  pgbench_run pgbench_bg
  pgss_dump pgbench_bg
  svc_stop
fi
if want api_only; then
  reset_db
  svc_start --no-relay --no-consumers
  load_run api_only
  pgss_dump api_only
  svc_stop
fi
if want api; then
  reset_db
  svc_start
  load_run api --csv "$OUT/api_persec.csv"
  pgss_dump api
  svc_stop
fi

# ---- consumer lag under a steady load ----
if want lag; then
  if [ -z "$LAG_RATE" ]; then
    LAG_RATE=$(awk -F, -v f="$LAG_FRACTION" '$1 == "api" {printf "%d", $2 * f}' "$OUT/write_path.csv")
    [ -n "$LAG_RATE" ] && [ "$LAG_RATE" -gt 0 ] || LAG_RATE=200
  fi
  reset_db
  svc_start
  "$BUILD/bin/outbox-load" --url "$URL" -c "$CLIENTS" -d 2 --rate "$LAG_RATE" >/dev/null 2>&1 || true
  wait_drained 60 || say "lag: warm-up not drained in 60 s"
  sql -c "TRUNCATE orders, order_items, inventory_reservations, outbox_inbox" >/dev/null
  emails0=$(grep -c 'Email sent successfully' "$TMP/svc.out" || true)
  # One sample a second on one session (psql \watch): epoch, the four counts.
  printf '%s\n' "SELECT extract(epoch FROM clock_timestamp()), * FROM ($COUNTS) s \watch 1" |
    psql -X -qAt -F, "$DATABASE_URL" >"$TMP/lag.raw" 2>"$TMP/sampler.err" &
  sampler=$!
  sleep 1
  say "lag: outbox-load -c $CLIENTS -d $LAG_SECS --rate $LAG_RATE, then up to $DRAIN_SECS s to drain"
  t_start=$(date +%s.%N)
  "$BUILD/bin/outbox-load" --url "$URL" -c "$CLIENTS" -d "$LAG_SECS" --rate "$LAG_RATE" \
    --label lag --json "$OUT/lag.json" --csv "$OUT/lag_load_persec.csv" >"$OUT/lag.txt" \
    2>"$TMP/load.err" || say "lag: some requests failed"
  t_end=$(date +%s.%N)
  wait_drained "$DRAIN_SECS" || say "lag: not drained within $DRAIN_SECS s"
  sleep 2
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  sampler=""
  emails=$(($(grep -c 'Email sent successfully' "$TMP/svc.out" || true) - emails0))
  svc_stop
  python3 - "$TMP/lag.raw" "$OUT/lag.csv" "$t_start" "$t_end" "$emails" "$OUT/lag_totals.json" \
    >"$OUT/lag_summary.tsv" <<'PY'
import json, sys
raw, out, t0, t1, emails = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
rows = []
for line in open(raw):
    p = line.strip().split(",")
    if len(p) == 5:
        rows.append((float(p[0]) - t0, int(p[1]), int(p[2]), int(p[3]), int(p[4])))
with open(out, "w") as f:
    f.write("t_s,phase,committed,inventory_done,email_done,inventory_lag,email_lag,unpublished\n")
    for t, c, i, e, u in rows:
        f.write("%.1f,%s,%d,%d,%d,%d,%d,%d\n" % (t, "load" if t <= t1 - t0 else "drain", c, i, e, c - i, c - e, u))
load = [r for r in rows if 0 <= r[0] <= t1 - t0]
after = [r for r in rows if r[0] > t1 - t0]
def lag(r, k): return r[1] - r[k]
def drain(k):  # seconds after the load until the lag is 0 and stays 0
    last_nonzero = None
    for r in after:
        if lag(r, k) != 0: last_nonzero = r[0]
    zero = [r[0] for r in after if lag(r, k) == 0 and (last_nonzero is None or r[0] > last_nonzero)]
    return (zero[0] - (t1 - t0)) if zero else float("nan")
def slope(k):  # backlog growth over the second half of the load, orders/s
    h = [r for r in load if r[0] >= (t1 - t0) / 2]
    if len(h) < 3: return float("nan")
    n = len(h); mx = sum(r[0] for r in h) / n; my = sum(lag(r, k) for r in h) / n
    sxx = sum((r[0] - mx) ** 2 for r in h)
    return sum((r[0] - mx) * (lag(r, k) - my) for r in h) / sxx if sxx else float("nan")
end = load[-1] if load else (0, 0, 0, 0, 0)
committed = rows[-1][1] if rows else 0
def rate(k):  # effects applied per second over the whole load
    return (load[-1][k] - load[0][k]) / (load[-1][0] - load[0][0]) if len(load) > 1 else float("nan")
def drain_rate(k):  # effects applied per second while draining (the consumer alone)
    d = drain(k)
    if not after or d != d or d < 1: return float("nan")
    return lag(end, k) / d
print("consumer\tmax_lag\tlag_at_end\tdrain_s\tgrowth_per_s\tapplied_per_s\tdrain_per_s")
for name, k in (("inventory", 2), ("email", 3)):
    print("%s\t%d\t%d\t%.1f\t%.1f\t%.0f\t%.0f" % (name, max((lag(r, k) for r in load), default=0),
          lag(end, k), drain(k), slope(k), rate(k), drain_rate(k)))
json.dump({"committed": committed, "email_lines": emails}, open(sys.argv[6], "w"))
PY
fi

# ---- the Markdown section (bench/orders_report.py, from the files in $OUT) ----
awk -F, -v OFS=, 'NR == FNR { if ($1 == "pgbench") c = $2; next }
  FNR == 1 { print; next } { $3 = c ? sprintf("%.3f", $2 / c) : ""; print }' \
  "$OUT/write_path.csv" "$OUT/write_path.csv" >"$TMP/wp.csv" && mv "$TMP/wp.csv" "$OUT/write_path.csv"
python3 - "$OUT/meta.json" <<PY
import json, sys
json.dump({"command": "bench/bench_orders.sh$([ "$MODE" = quick ] && echo " --quick")",
           "cores": $(nproc), "load_end": "$(cut -d' ' -f1-3 /proc/loadavg)",
           "durable": ${SERVERS_PG_DURABLE:-0} == 1, "clients": $CLIENTS, "secs": $SECS,
           "pgbench": "$PGB_CMD", "lag_rate": "$LAG_RATE", "lag_secs": $LAG_SECS,
           "date": "$(date -u +%Y-%m-%dT%H:%MZ)"}, open(sys.argv[1], "w"), indent=1)
PY
python3 bench/orders_report.py "$OUT" | tee "$OUT/orders.md"

if [ -n "${BENCH_TSV:-}" ]; then
  tail -n +2 "$OUT/write_path.csv" | tr ',' '\t' | sed 's/^/write_path\t/' >>"$BENCH_TSV"
  [ -s "$OUT/lag_summary.tsv" ] && tail -n +2 "$OUT/lag_summary.tsv" | sed "s/^/lag\t$LAG_RATE\t/" >>"$BENCH_TSV"
fi
say "data in $OUT"
