#!/bin/sh
# docs/CONFIGURATION.md is generated from the configuration table: fail when
# it is stale (regenerate with: build/bin/outboxctl config-doc > docs/CONFIGURATION.md).
set -eu
bin=$1
src=$2
if ! "$bin" config-doc | cmp -s - "$src/docs/CONFIGURATION.md"; then
    echo "FAIL: docs/CONFIGURATION.md is stale: run build/bin/outboxctl config-doc > docs/CONFIGURATION.md" >&2
    "$bin" config-doc | diff "$src/docs/CONFIGURATION.md" - | head -20 >&2
    exit 1
fi
echo "PASS config_doc_current: docs/CONFIGURATION.md matches the configuration table"
