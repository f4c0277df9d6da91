#!/bin/sh
# Regenerates the files derived from the configuration table and the headers:
# docs/CONFIGURATION.md, docs/man/*.1 and docs/API.md (tests check they are current).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
"$BUILD/bin/outboxctl" config-doc > docs/CONFIGURATION.md
"$BUILD/bin/outboxctl" man relay > docs/man/outbox-relay.1
"$BUILD/bin/outboxctl" man outboxctl > docs/man/outboxctl.1
if [ -f scripts/gen-api-doc.py ]; then
    python3 scripts/gen-api-doc.py include/outbox/*.h > docs/API.md
fi
echo "regenerated docs/CONFIGURATION.md docs/man/*.1 docs/API.md"
