#!/usr/bin/env bash
# The benchmark suite: every benchmark in bench/ against its own throwaway
# servers (PostgreSQL durable as in production: fsync, synchronous_commit and
# full_page_writes on), then bench/report.py rewrites the Markdown page and
# its plots (gnuplot SVG) from the data of this run.
#
#   scripts/bench.sh           full mode (make bench): rewrites
#                              docs/BENCHMARKS.md and docs/bench/*.svg;
#                              10 to 20 minutes on 2 cores, by load
#   scripts/bench.sh --quick   quick mode (make bench-quick): backlogs of at
#                              most 10,000 events, few points, about 1 minute;
#                              writes $BUILD/bench-quick/BENCHMARKS.md (not
#                              docs/) unless BENCH_OUT says otherwise
#
# Environment (defaults depend on the mode; see below):
#   BENCH_OUT        Markdown page to write; its plots go to BENCH_SVG_DIR
#                    (default: bench/ next to it)
#   BENCH_DATA       raw data, logs and gnuplot scripts
#                    ($BUILD/bench-data/<mode>)
#   BENCH_ONLY       space-separated subset of: drain_sizes drain_grid
#                    drain_ack wakeup latency notify_cost nats footprint orders
#                    (others: "not run")
#   BENCH_SIZES BENCH_SIZE_ROUNDS                     bench_drain sizes
#   BENCH_GRID_N BENCH_GRID_WORKERS BENCH_GRID_BATCHES BENCH_GRID_ROUNDS
#   BENCH_ACK_N BENCH_ACK_ROUNDS                      bench_drain ack
#   BENCH_WAKE_EVENTS                                 bench_wakeup
#   BENCH_NOTIFY_CLIENTS BENCH_NOTIFY_SECS BENCH_NOTIFY_ROUNDS  notify_cost.sh
#   BENCH_NATS_N                                      bench_nats
#   BENCH_LAT_RATE BENCH_LAT_SECS BENCH_LAT_CAP_SECS BENCH_LAT_CAP_ROUNDS   bench_latency
#   BENCH_FOOT_N                                      bench/footprint.sh
# The hand-written "earlier measurements" block of docs/BENCHMARKS.md
# (between the bench:earlier markers) is carried over unchanged.
set -uo pipefail
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
  : "${BENCH_OUT:=$BUILD/bench-quick/BENCHMARKS.md}"
  : "${BENCH_SIZES:=2000,5000,10000}" "${BENCH_SIZE_ROUNDS:=1}"
  : "${BENCH_GRID_N:=10000}" "${BENCH_GRID_WORKERS:=1,2,4,8}" "${BENCH_GRID_BATCHES:=50,100,1000}"
  : "${BENCH_GRID_ROUNDS:=1}"
  : "${BENCH_ACK_N:=10000}" "${BENCH_ACK_ROUNDS:=1}"
  : "${BENCH_WAKE_EVENTS:=10}"
  : "${BENCH_NOTIFY_CLIENTS:=4}" "${BENCH_NOTIFY_SECS:=3}" "${BENCH_NOTIFY_ROUNDS:=1}"
  : "${BENCH_NATS_N:=2000}"
  : "${BENCH_LAT_RATE:=500}" "${BENCH_LAT_SECS:=4}" "${BENCH_LAT_CAP_SECS:=2}" "${BENCH_LAT_CAP_ROUNDS:=1}"
  : "${BENCH_FOOT_N:=10000}"
else
  : "${BENCH_OUT:=docs/BENCHMARKS.md}"
  : "${BENCH_SIZES:=10000,30000,100000,300000,1000000}" "${BENCH_SIZE_ROUNDS:=1}"
  : "${BENCH_GRID_N:=100000}" "${BENCH_GRID_WORKERS:=1,2,3,4,5,6,7,8}"
  : "${BENCH_GRID_BATCHES:=50,100,250,500,1000,2000}" "${BENCH_GRID_ROUNDS:=1}"
  : "${BENCH_ACK_N:=100000}" "${BENCH_ACK_ROUNDS:=1}"
  : "${BENCH_WAKE_EVENTS:=50}"
  : "${BENCH_NOTIFY_CLIENTS:=8}" "${BENCH_NOTIFY_SECS:=20}" "${BENCH_NOTIFY_ROUNDS:=2}"
  : "${BENCH_NATS_N:=20000}"
  : "${BENCH_LAT_RATE:=1000}" "${BENCH_LAT_SECS:=10}" "${BENCH_LAT_CAP_SECS:=5}" "${BENCH_LAT_CAP_ROUNDS:=3}"
  : "${BENCH_FOOT_N:=100000}"
fi
: "${BENCH_SVG_DIR:=$(dirname "$BENCH_OUT")/bench}"
: "${BENCH_DATA:=$BUILD/bench-data/$MODE}"
: "${BENCH_ONLY:=drain_sizes drain_grid drain_ack wakeup latency notify_cost nats footprint orders}"
export SERVERS_PG_DURABLE=1 # every server this suite starts, notify_cost.sh's too

# gnuplot draws the curves (Debian's gnuplot-nox: no X11), installed as
# scripts/deps.sh installs the build's packages.
if ! command -v gnuplot >/dev/null 2>&1; then
  echo "bench: installing gnuplot-nox"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    $SUDO apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null ||
    { echo "bench: cannot install gnuplot-nox" >&2; exit 1; }
fi

rm -rf "$BENCH_DATA"
mkdir -p "$BENCH_DATA" "$(dirname "$BENCH_OUT")" "$BENCH_SVG_DIR"
DATA=$(cd "$BENCH_DATA" && pwd)

# ---- the machine and the server settings, recorded before the first stage ----
meta() { printf '%s\t%s\n' "$1" "$2" >>"$DATA/meta.tsv"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
meta mode "$MODE"
meta started "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta started_epoch "$(date +%s)"
meta cores "$(nproc)"
meta cpu_model "$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
meta mem_kib "$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
meta kernel "$(uname -r)"
meta os "$(. /etc/os-release && echo "$PRETTY_NAME")"
meta load_start "$(load)"
meta commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
meta dirty "$(git status --porcelain --untracked-files=no 2>/dev/null | wc -l)"
meta gnuplot "$(gnuplot --version)"
meta redis "$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
meta nats "$(nats-server --version 2>/dev/null | sed 's/^nats-server: //')"
meta tmp_fs "$(df --output=fstype /tmp | tail -1)"
(
  eval "$(scripts/servers.sh start)" || exit 1
  trap '"$ROOT/scripts/servers.sh" stop "$SERVERS_DIR"' EXIT
  psql -qAt -F $'\t' "$DATABASE_URL" -c "SELECT 'pg_version', current_setting('server_version')" \
    -c "SELECT 'pg_' || name, current_setting(name) FROM pg_settings
         WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_level',
                        'shared_buffers', 'effective_cache_size', 'work_mem', 'max_wal_size',
                        'checkpoint_timeout', 'wal_buffers', 'max_connections', 'autovacuum')
         ORDER BY name" >>"$DATA/meta.tsv"
) || { echo "bench: cannot start the servers" >&2; exit 1; }

# ---- stages ----
# stage NAME SERVERS COMMAND: runs COMMAND (a shell line, shown as is in the
# page) with BENCH_TSV=$DATA/NAME.tsv, against fresh servers when SERVERS=1.
stage() {
  local name=$1 servers=$2 cmd=$3
  case " $BENCH_ONLY " in *" $name "*) ;; *) return 0 ;; esac
  printf '%s\t%s\t%s\n' "$name" "$servers" "$cmd" >>"$DATA/commands.tsv"
  echo
  echo "==== $name: $cmd"
  local t0 rc
  t0=$(date +%s)
  (
    if [ "$servers" = 1 ]; then
      eval "$(scripts/servers.sh start)" || exit 1
      trap '"$ROOT/scripts/servers.sh" stop "$SERVERS_DIR"' EXIT
    fi
    BENCH_TSV="$DATA/$name.tsv" bash -c "$cmd"
  ) > >(tee "$DATA/$name.out") 2> >(tee "$DATA/$name.err" | grep --line-buffered -v '^NOTICE' >&2)
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$DATA/stages.tsv"
  [ "$rc" -eq 0 ] || echo "bench: $name failed (exit $rc), see $DATA/$name.err" >&2
}

B=$BUILD/bin
L="OUTBOX_LOG_LEVEL=warn"
stage drain_sizes 1 "$L $B/bench_drain sizes $BENCH_SIZES $BENCH_SIZE_ROUNDS"
stage drain_grid 1 "$L $B/bench_drain grid $BENCH_GRID_N $BENCH_GRID_WORKERS $BENCH_GRID_BATCHES $BENCH_GRID_ROUNDS"
stage drain_ack 1 "$L $B/bench_drain ack $BENCH_ACK_N $BENCH_ACK_ROUNDS"
stage wakeup 1 "$L $B/bench_wakeup $BENCH_WAKE_EVENTS 100"
stage latency 1 "$L BENCH_LATENCY_CAP_ROUNDS=$BENCH_LAT_CAP_ROUNDS $B/bench_latency $BENCH_LAT_RATE $BENCH_LAT_SECS 32 $BENCH_LAT_CAP_SECS"
stage notify_cost 0 "CLIENTS=$BENCH_NOTIFY_CLIENTS SECS=$BENCH_NOTIFY_SECS ROUNDS=$BENCH_NOTIFY_ROUNDS bench/notify_cost.sh"
stage nats 1 "$L $B/bench_nats $BENCH_NATS_N"
stage footprint 1 "bench/footprint.sh $BENCH_FOOT_N 5 10"
# The order system: write path against pgbench, consumer lag (own servers).
stage orders 0 "BENCH_ORDERS_OUT=${DATA#"$ROOT"/}/orders bench/bench_orders.sh$([ "$MODE" = quick ] && echo " --quick")"
wait # the tee processes

meta finished "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta finished_epoch "$(date +%s)"
meta load_end "$(load)"
meta pg_servers_command 'eval "$(SERVERS_PG_DURABLE=1 scripts/servers.sh start)"'

echo
python3 bench/report.py --data "$DATA" --out "$BENCH_OUT" --svg-dir "$BENCH_SVG_DIR" \
  --earlier-from docs/BENCHMARKS.md || exit 1
echo "bench: wrote $BENCH_OUT and $BENCH_SVG_DIR/*.svg (data in $DATA)"
if grep -q $'\t[1-9][0-9]*\t' "$DATA/stages.tsv" 2>/dev/null; then
  echo "bench: some stages failed (their sections say so)" >&2
  exit 1
fi
