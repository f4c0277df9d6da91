#!/usr/bin/env bash
# make test-chaos: the chaos suite (CTest label chaos) at full size. Each
# system (orders, ledger, cars, pizza) runs on a PostgreSQL and a Redis of
# its own under 100,000 accepted writes and 50 SIGKILLs, with PostgreSQL and
# Redis outages and a slowed, partitioned and cut broker network; then every
# request, event and effect is checked (tests/chaos/chaos_lib.h).
#
#   OUTBOX_CHAOS_EVENTS (100000), OUTBOX_CHAOS_KILLS (50)   the size
#   OUTBOX_CHAOS_OUTAGES, OUTBOX_CHAOS_CLIENTS, OUTBOX_CHAOS_SEED   see chaos_lib.h
#   OUTBOX_CHAOS_REPORT (BUILD/chaos-report.jsonl)   one JSON line per test
#   OUTBOX_CHAOS_AMQP (1)   also chaos_ledger_amqp, the ledger on a RabbitMQ node
#   CTEST_ARGS (-j1)   one system at a time: each loads the machine alone
#
# Extra arguments go to ctest (e.g. -R chaos_orders). The short versions
# (3,000 writes, 8 kills) run in make test.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export OUTBOX_CHAOS_EVENTS=${OUTBOX_CHAOS_EVENTS:-100000}
export OUTBOX_CHAOS_KILLS=${OUTBOX_CHAOS_KILLS:-50}
export OUTBOX_CHAOS_AMQP=${OUTBOX_CHAOS_AMQP:-1}
export OUTBOX_CHAOS_REPORT=${OUTBOX_CHAOS_REPORT:-$PWD/$BUILD/chaos-report.jsonl}
mkdir -p "$BUILD"
echo "chaos: $OUTBOX_CHAOS_EVENTS writes and $OUTBOX_CHAOS_KILLS kills per system;" \
  "report: $OUTBOX_CHAOS_REPORT"
BUILD=$BUILD CTEST_ARGS=${CTEST_ARGS:--j1} exec scripts/test.sh -L chaos "$@"
