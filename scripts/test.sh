#!/usr/bin/env bash
# make test: install what is missing, build (warnings are errors), start
# throwaway servers, run the whole CTest suite, stop the servers whatever
# happens. Extra arguments go to ctest (e.g. -L unit, -R relay).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
scripts/deps.sh
BUILD=${BUILD:-build}
cmake -S . -B "$BUILD" -DOUTBOX_WERROR=ON ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
eval "$(scripts/servers.sh start)"
trap '"$ROOT/scripts/servers.sh" stop "$SERVERS_DIR"' EXIT INT TERM
echo "test servers: PostgreSQL $OUTBOX_TEST_PG, Redis $OUTBOX_TEST_REDIS"
cd "$BUILD"
ctest --output-on-failure --timeout 900 ${CTEST_ARGS:--j2} "$@"
