#!/usr/bin/env bash
# Where a drain's CPU goes: PostgreSQL, the relay, Redis. For weighing one
# technique against another on a shared machine, where wall-clock rates move
# by tens of per cent from run to run but CPU seconds per event move much
# less. Against the servers of scripts/servers.sh (DATABASE_URL, REDIS_ADDR,
# SERVERS_DIR):
#
#   eval "$(SERVERS_PG_DURABLE=1 scripts/servers.sh start)"
#   bench/drain_cpu.sh [N] [VAR=value ...]
#
# Fills database bench_drain_cpu with N events (default 100000; 200-byte JSON
# payloads on 1,000 keys, as bench_drain does), then runs build/bin/outbox-relay
# with its defaults plus the given environment (e.g. OUTBOX_WORKERS=1
# OUTBOX_ACK_ON_CLAIM=false) until the Redis stream holds N entries, and
# prints one line: seconds (from exec to the last entry, startup included),
# CPU seconds of the whole PostgreSQL cluster (postmaster, its live and
# finished children), of the relay process and of redis-server. With
# DRAIN_CPU_CEILING=1 it first prints the same for the SQL drain ceiling:
# 2 pgbench clients looping DELETE ... SKIP LOCKED LIMIT 1000 RETURNING *.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
: "${DATABASE_URL:?start servers first: eval \"\$(scripts/servers.sh start)\"}"
: "${REDIS_ADDR:?start servers first}" "${SERVERS_DIR:?start servers first}"
N=100000
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then N=$1; shift; fi
DB=bench_drain_cpu
url=$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$DATABASE_URL" "$DB")
psql -qX "$DATABASE_URL" -c "SET client_min_messages = warning" -c "CREATE DATABASE $DB" >/dev/null 2>&1 || true
DATABASE_URL=$url "$BUILD/bin/outboxctl" migrate >/dev/null
R=(redis-cli -h "${REDIS_ADDR%:*}" -p "${REDIS_ADDR##*:}")
tck=$(getconf CLK_TCK)
pm=$(head -1 "$SERVERS_DIR/pg/data/postmaster.pid")
pg_cpu() { # the cluster's CPU seconds so far
  # cat, not awk over the files: a process that ends between the glob and
  # the read would stop awk (and this script) with "can't open file"
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v pm="$pm" -v tck="$tck" '{ split($0, a, ") "); split(a[2], f, " ");
      pid = $1;
      if (pid == pm) t += f[12] + f[13] + f[14] + f[15]; else if (f[2] == pm) t += f[12] + f[13] }
      END { printf "%.2f", t / tck }'
}
proc_cpu() { awk -v tck="$tck" '{ split($0, a, ") "); split(a[2], f, " "); printf "%.2f", (f[12] + f[13]) / tck }' "/proc/$1/stat"; }
redis_pid=$(pgrep -f "redis-server $REDIS_ADDR" | head -1)
fill() {
  psql -qX "$url" <<SQL
TRUNCATE outbox;
INSERT INTO outbox (topic, type, key, payload)
 SELECT 'bench_drain', 'OrderCreated', 'k' || (i % 1000), (p || repeat('x', 200 - length(p) - 2) || '"}')::json
   FROM (SELECT i, format('{"seq":%s,"order_id":"ord-%s","amount_cents":%s,"currency":"EUR","note":"',
                          i, lpad(i::text, 8, '0'), (i::bigint * 7919) % 100000) AS p
           FROM generate_series(0, $N - 1) AS i) s ORDER BY i;
VACUUM ANALYZE outbox;
CHECKPOINT;
SQL
  "${R[@]}" DEL bench_drain >/dev/null
}
now() { date +%s.%N; }

if [ "${DRAIN_CPU_CEILING:-0}" = 1 ]; then
  fill
  echo 'DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED) RETURNING *;' >"$SERVERS_DIR/drain_cpu_ceiling.sql"
  p0=$(pg_cpu); t0=$(now)
  pgbench -n -c 2 -j 2 -t $((N / 2000 + 2)) -f "$SERVERS_DIR/drain_cpu_ceiling.sql" "$url" >/dev/null 2>&1
  t1=$(now); p1=$(pg_cpu)
  left=$(psql -qAtX "$url" -c 'SELECT count(*) FROM outbox')
  printf 'ceiling  events=%s left=%s seconds=%.3f pg_cpu=%.2f\n' "$N" "$left" "$(echo "$t1 - $t0" | bc)" "$(echo "$p1 - $p0" | bc)"
fi

fill
p0=$(pg_cpu); r0=$(proc_cpu "$redis_pid"); t0=$(now)
env DATABASE_URL="$url" OUTBOX_SINK="redis://$REDIS_ADDR" OUTBOX_METRICS_ADDR=off OUTBOX_LOG_LEVEL=warn "$@" \
  "$BUILD/bin/outbox-relay" >"$SERVERS_DIR/drain_cpu_relay.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT # never leave a relay behind on an error
while [ "$("${R[@]}" XLEN bench_drain)" -lt "$N" ]; do
  kill -0 $pid 2>/dev/null || { echo "drain_cpu: outbox-relay exited:" >&2; cat "$SERVERS_DIR/drain_cpu_relay.log" >&2; exit 1; }
  sleep 0.005
done
t1=$(now); relay=$(proc_cpu $pid)
kill $pid; wait $pid 2>/dev/null || true
p1=$(pg_cpu); r1=$(proc_cpu "$redis_pid")
printf 'relay    events=%s seconds=%.3f pg_cpu=%.2f relay_cpu=%s redis_cpu=%.2f %s\n' "$N" "$(echo "$t1 - $t0" | bc)" \
  "$(echo "$p1 - $p0" | bc)" "$relay" "$(echo "$r1 - $r0" | bc)" "$*"
