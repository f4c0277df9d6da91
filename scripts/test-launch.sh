#!/usr/bin/env bash
# Runs one CTest test under a checker, set up by tests/CMakeLists.txt in the
# instrumented builds (make asan, make tsan, make valgrind):
#
#   scripts/test-launch.sh MODE BUILD NAME -- COMMAND [ARGS...]
#
# MODE is address (AddressSanitizer + UBSan + LeakSanitizer), thread
# (ThreadSanitizer) or valgrind (memcheck). Every process of the test writes
# its reports into BUILD/check-logs/NAME/ (the sanitizers' log_path, valgrind's
# --log-file), whatever spawns it (tu_spawn, system, popen, a script, a
# service's own child), so a report in a process whose exit status the test
# never looks at (stopped by tu_stop, SIGTERMed by a harness) still fails
# the test: after COMMAND ends, any report found makes the test fail (exit
# 1, even if it passed or skipped) and is printed. The directory is removed
# when the test passes clean.
#
# valgrind: COMMAND itself runs under valgrind when it is an executable of
# this build (not for the sh / python tests), and tu_spawn puts the same
# valgrind command (OUTBOX_TEST_WRAPPER) in front of the build's own
# executables it starts (services, outbox-relay, outboxctl, helpers);
# third-party servers (redis-server, nats-server, RabbitMQ, PostgreSQL) run
# as they are.
#
# OUTBOX_TEST_SLOWDOWN (2 under ASan, 5 under TSan, 20 under valgrind)
# stretches the tests' own deadlines (tests/lib/testutil.h tu_ms()).
set -uo pipefail
mode=$1 build=$2 name=$3
shift 3
[ "${1:-}" = "--" ] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$build/check-logs/$name"
rm -rf "$dir"
mkdir -p "$dir"

case "$mode" in
address)
    # halt_on_error: the first report ends the process (exit 86), in every
    # process; log_path: reports go to $dir/asan.<pid> (and ubsan.<pid>).
    export ASAN_OPTIONS="halt_on_error=1:exitcode=86:detect_leaks=1:log_path=$dir/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=86:log_path=$dir/ubsan${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
    export OUTBOX_TEST_SLOWDOWN=${OUTBOX_TEST_SLOWDOWN:-2}
    ;;
thread)
    # halt_on_error=0: a test goes on after a race so that one run shows
    # every race it meets; any report still fails the test (below).
    export TSAN_OPTIONS="halt_on_error=0:exitcode=86:second_deadlock_stack=1:history_size=4:suppressions=$root/tsan.supp:log_path=$dir/tsan${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
    export OUTBOX_TEST_SLOWDOWN=${OUTBOX_TEST_SLOWDOWN:-5}
    # librdkafka's C11 threads started through pthread_create, which
    # ThreadSanitizer sees (tests/lib/tsan_thrd.c says why).
    export LD_PRELOAD="$build/lib/liboutbox_tsan_thrd.so${LD_PRELOAD:+:$LD_PRELOAD}"
    ;;
valgrind)
    vg="valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite,indirect"
    vg="$vg --show-leak-kinds=definite,indirect --error-exitcode=86 --track-origins=no"
    vg="$vg --suppressions=$root/valgrind.supp --gen-suppressions=all --num-callers=30"
    vg="$vg --log-file=$dir/vg.%p"
    export OUTBOX_TEST_WRAPPER="$vg"
    export OUTBOX_TEST_SLOWDOWN=${OUTBOX_TEST_SLOWDOWN:-20}
    # The test program itself, when it is one of ours (an ELF executable).
    if [ -x "$1" ] && head -c 4 "$1" | grep -q ELF; then
        set -- $vg "$@"
    fi
    ;;
*)
    echo "test-launch.sh: unknown mode $mode" >&2
    exit 2
    ;;
esac

# ThreadSanitizer's shadow memory layout needs at most 28 bits of mmap
# randomness; on kernels that use more it stops with "unexpected memory
# mapping" unless address randomization is off for the test's processes.
if [ "$mode" = thread ] && [ "$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28)" -gt 28 ]; then
    set -- setarch "$(uname -m)" -R "$@"
fi

"$@"
rc=$?

# Reports: sanitizer log files exist only when something was reported;
# valgrind writes a file per process, clean ones included.
bad=()
for f in "$dir"/*; do
    [ -e "$f" ] || continue
    case "$f" in
    */vg.*)
        # Errors, leaks, or a crash (SIGKILL and SIGTERM, sent by the tests
        # on purpose, are not crashes).
        if grep -qE 'ERROR SUMMARY: [1-9]|definitely lost: [1-9]|indirectly lost: [1-9]|default action of signal (4|6|7|8|11) ' "$f"; then
            bad+=("$f")
        fi
        ;;
    *) bad+=("$f") ;;
    esac
done
if [ ${#bad[@]} -gt 0 ]; then
    for f in "${bad[@]}"; do
        echo "=== $mode report: $f (test exit $rc)" >&2
        cat "$f" >&2
    done
    echo "FAIL: ${#bad[@]} $mode report(s) in $dir" >&2
    exit 1
fi
[ "$rc" -eq 0 ] && rm -rf "$dir"
exit "$rc"
