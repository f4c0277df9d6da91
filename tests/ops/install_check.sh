#!/bin/sh
# make install PREFIX=...: installs to a temporary prefix, then builds
# examples/enqueue.c outside the tree against it twice: with pkg-config
# (shared, then --static) and with find_package(outbox) (outbox::outbox and
# outbox::outbox_static), and runs each program.
set -eu
build=$1
src=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/outbox-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log"; echo "FAIL: cmake --install"; exit 1; }
for f in lib/liboutbox.so lib/liboutbox.a include/outbox/outbox.h include/outbox/consumer.h \
    lib/pkgconfig/outbox.pc lib/cmake/outbox/outboxConfig.cmake \
    lib/cmake/outbox/outboxConfigVersion.cmake bin/outbox-relay bin/outboxctl \
    share/man/man1/outbox-relay.1 share/man/man1/outboxctl.1; do
    [ -e "$prefix/$f" ] || { echo "FAIL: $f not installed"; exit 1; }
done
# A sanitized build installs a sanitized library: programs built against it
# need the same runtime (OUTBOX_EXAMPLE_CFLAGS, set by tests/ops/CMakeLists.txt).
xflags=${OUTBOX_EXAMPLE_CFLAGS:-}
cc="${CC:-cc} $xflags"
cp "$src/examples/enqueue.c" "$src/examples/CMakeLists.txt" "$tmp/"

# 1. pkg-config, shared and static.
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
[ "$(pkg-config --modversion outbox)" = "$(sed -n 's/^#define OUTBOX_VERSION_STR "\(.*\)"/\1/p' "$src/include/outbox/outbox.h")" ] ||
    { echo "FAIL: pkg-config --modversion outbox"; exit 1; }
(cd "$tmp" && $cc enqueue.c $(pkg-config --cflags --libs outbox) -o enqueue-pc)
out=$(LD_LIBRARY_PATH="$prefix/lib" "$tmp/enqueue-pc")
echo "pkg-config (shared): $out"
LD_LIBRARY_PATH="$prefix/lib" ldd "$tmp/enqueue-pc" | grep -q "$prefix/lib/liboutbox.so" ||
    { echo "FAIL: enqueue-pc does not use the installed liboutbox.so"; ldd "$tmp/enqueue-pc"; exit 1; }
# liboutbox.a with the dependencies' shared libraries (Debian ships no static
# libpq helpers, so pkg-config --static cannot be used for those).
deps=$(pkg-config --print-requires --print-requires-private outbox | tr '\n' ' ')
(cd "$tmp" && $cc enqueue.c $(pkg-config --cflags outbox) -o enqueue-pc-static \
    "$(pkg-config --variable=libdir outbox)/liboutbox.a" $(pkg-config --libs $deps) -lpthread -lm)
out=$("$tmp/enqueue-pc-static")
echo "pkg-config (static): $out"

# 2. find_package(outbox), shared and static.
for kind in OFF ON; do
    cmake -S "$tmp" -B "$tmp/cm-$kind" -DCMAKE_PREFIX_PATH="$prefix" -DOUTBOX_EXAMPLE_STATIC=$kind \
        -DCMAKE_C_FLAGS="$xflags" \
        >"$tmp/cm.log" 2>&1 && cmake --build "$tmp/cm-$kind" >>"$tmp/cm.log" 2>&1 ||
        { cat "$tmp/cm.log"; echo "FAIL: find_package(outbox) build (static=$kind)"; exit 1; }
    out=$("$tmp/cm-$kind/enqueue")
    echo "find_package (static=$kind): $out"
done
# The example really uses the library: enqueue one event when a database is there.
if [ -n "${OUTBOX_TEST_PG:-}" ]; then
    db="outbox_install_check"
    psql "$OUTBOX_TEST_PG" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    url="$OUTBOX_TEST_PG dbname=$db"
    "$tmp/cm-OFF/enqueue" "$url" | grep -q "enqueued event" || { echo "FAIL: enqueue"; exit 1; }
    n=$(psql "$url" -tAc "SELECT count(*) FROM outbox WHERE topic = 'examples'")
    [ "$n" = 1 ] || { echo "FAIL: expected 1 event, got $n"; exit 1; }
    echo "enqueued one event into $db with the installed library"
fi
echo "PASS install_pkgconfig_cmake"
