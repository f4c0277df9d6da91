#!/usr/bin/env bash
# The relay's footprint (issue F6, item 6), as a process of its own
# (build/bin/outbox-relay with its defaults, sink Redis Streams), against the
# servers of scripts/servers.sh (DATABASE_URL, REDIS_ADDR):
#
#   startup   from exec until /readyz answers 200 (database session, lanes,
#             broker checked), the median of ROUNDS starts; the ceiling is
#             `psql -c 'SELECT 1'` (a process that connects once and exits)
#   drain     a backlog of N events drained: peak resident memory (VmHWM) and
#             CPU seconds of the relay process while doing it
#   idle      CPU of the relay process and of its PostgreSQL sessions over
#             IDLE_SECS with nothing to do (the watcher is on by default)
#
# Usage: bench/footprint.sh [N] [ROUNDS] [IDLE_SECS]   (defaults 100000 5 10)
# BENCH_TSV, if set, gets one tab-separated line "what value unit" per figure.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${1:-100000}
ROUNDS=${2:-5}
IDLE=${3:-10}
: "${DATABASE_URL:?start servers first: eval \"\$(scripts/servers.sh start)\"}"
: "${REDIS_ADDR:?}"
TSV=${BENCH_TSV:-/dev/null}
[ -s "$TSV" ] || printf 'what\tvalue\tunit\n' >>"$TSV"
out() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$TSV"; printf '%-34s %s %s\n' "$1" "$2" "$3"; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export OUTBOX_SINK="redis://$REDIS_ADDR" OUTBOX_METRICS_ADDR="127.0.0.1:$port" OUTBOX_LOG_LEVEL=warn
psql -qX "$DATABASE_URL" -c "SET client_min_messages = warning" >/dev/null
"$BUILD/bin/outbox-relay" --migrate-only >/dev/null 2>&1 || "$BUILD/bin/outboxctl" migrate >/dev/null

cpu_of() { # utime + stime of a pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); split($0, f, " "); printf "%.3f", (f[12] + f[13]) / hz }' "/proc/$1/stat"
}
ms_now() { date +%s%N | cut -c1-13; }

# ---- startup ----
starts=() floor=()
for _ in $(seq "$ROUNDS"); do
  t0=$(date +%s%N)
  psql -qAtX "$DATABASE_URL" -c 'SELECT 1' >/dev/null
  floor+=($((($(date +%s%N) - t0) / 1000)))
  t0=$(date +%s%N)
  "$BUILD/bin/outbox-relay" >/dev/null 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do
    kill -0 "$pid" 2>/dev/null || { echo "footprint: outbox-relay exited at startup" >&2; exit 1; }
    sleep 0.002
  done
  starts+=($((($(date +%s%N) - t0) / 1000)))
  kill -TERM "$pid"; wait "$pid" || true
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
out startup_ms "$(awk -v u="$(median "${starts[@]}")" 'BEGIN{printf "%.1f", u/1000}')" ms
out startup_floor_psql_ms "$(awk -v u="$(median "${floor[@]}")" 'BEGIN{printf "%.1f", u/1000}')" ms

# ---- drain ----
psql -qX "$DATABASE_URL" -c "INSERT INTO outbox (topic, type, key, payload)
  SELECT 'footprint', 'T', 'k' || (g % 1000), json_build_object('n', g, 'pad', repeat('x', 160))
  FROM generate_series(1, $N) g" -c "VACUUM ANALYZE outbox" >/dev/null
"$BUILD/bin/outbox-relay" >/dev/null 2>&1 &
pid=$!
t0=$(ms_now)
while [ "$(psql -qAtX "$DATABASE_URL" -c 'SELECT count(*) FROM outbox')" -gt 0 ]; do sleep 0.05; done
t1=$(ms_now)
out drain_events "$N" events
out drain_seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", (b-a)/1000}')" s
out drain_peak_rss_mb "$(awk '/^VmHWM:/ {printf "%.1f", $2/1024}' "/proc/$pid/status")" MB
out drain_relay_cpu_s "$(cpu_of "$pid")" s

# ---- idle ----
sleep 2 # the watcher backs off
pgpids=$(psql -qAtX "$DATABASE_URL" -c "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'outbox-relay%'")
c0=$(cpu_of "$pid"); p0=0
for p in $pgpids; do p0=$(awk -v a="$p0" -v b="$(cpu_of "$p")" 'BEGIN{print a+b}'); done
sleep "$IDLE"
c1=$(cpu_of "$pid"); p1=0
for p in $pgpids; do p1=$(awk -v a="$p1" -v b="$(cpu_of "$p")" 'BEGIN{print a+b}'); done
out idle_seconds "$IDLE" s
out idle_relay_cpu_pct "$(awk -v a="$c0" -v b="$c1" -v s="$IDLE" 'BEGIN{printf "%.2f", (b-a)*100/s}')" "% of a core"
out idle_pg_sessions_cpu_pct "$(awk -v a="$p0" -v b="$p1" -v s="$IDLE" 'BEGIN{printf "%.2f", (b-a)*100/s}')" "% of a core"
out idle_rss_mb "$(awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$pid/status")" MB
kill -TERM "$pid"; wait "$pid" || true
