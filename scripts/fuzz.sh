#!/usr/bin/env bash
# The libFuzzer targets of fuzz/ (fuzz/README.md), in their own clang tree.
#
#   scripts/fuzz.sh build               configure and build $FUZZ_BUILD (build-fuzz)
#   scripts/fuzz.sh run [NAME...]       each target (default: every one) for FUZZ_SECONDS
#                                       (600) over fuzz/corpus/NAME; new inputs go to
#                                       build-fuzz/corpus/NAME, findings to
#                                       build-fuzz/artifacts/NAME-*; prints a table
#   scripts/fuzz.sh smoke NAME [SECS]   builds if needed, runs NAME for SECS (30) from its
#                                       seed corpus in a scratch directory (the CTest
#                                       fuzz_smoke_NAME tests)
#   scripts/fuzz.sh merge [NAME...]     minimises fuzz/corpus/NAME together with what runs
#                                       found (-merge=1; edges only when that leaves over
#                                       300 files): the corpus to commit (files named
#                                       regress-*, inputs of fixed findings, are kept)
#   scripts/fuzz.sh list                the target names
#
# Exits 77 (CTest: skipped) when clang with libFuzzer is not installed
# (scripts/deps.sh installs clang and libclang-rt-14-dev). Runs niced
# (FUZZ_NICE, 15) with FUZZ_JOBS (2) build jobs: the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
FUZZ_BUILD=${FUZZ_BUILD:-$ROOT/build-fuzz}
FUZZ_SECONDS=${FUZZ_SECONDS:-600}
JOBS=${FUZZ_JOBS:-2}
NICE=(nice -n "${FUZZ_NICE:-15}")

targets() {
    for f in fuzz/fuzz_*.c; do
        n=${f#fuzz/fuzz_}
        n=${n%.c}
        [ "$n" = common ] || echo "$n"
    done
}

# clang that links libFuzzer, or exit 77.
need_libfuzzer() {
    local t
    t=$(mktemp -d)
    printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return 0; }\n' >"$t/t.c"
    if ! command -v clang >/dev/null 2>&1 || ! clang -fsanitize=fuzzer "$t/t.c" -o "$t/t" >/dev/null 2>&1; then
        rm -rf "$t"
        echo "SKIP: clang with libFuzzer is not installed (scripts/deps.sh: clang libclang-rt-14-dev)"
        exit 77
    fi
    rm -rf "$t"
}

build() {
    need_libfuzzer
    mkdir -p "$FUZZ_BUILD"
    # One build at a time: the CTest smoke tests and make fuzz share the tree.
    exec 9>"$FUZZ_BUILD/.lock"
    flock 9
    cmake -S . -B "$FUZZ_BUILD" -DCMAKE_C_COMPILER=clang -DOUTBOX_FUZZ=ON -DBUILD_TESTING=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    if ! "${NICE[@]}" cmake --build "$FUZZ_BUILD" -j"$JOBS" --target fuzz_all >"$FUZZ_BUILD/build.log" 2>&1; then
        grep -E -B2 -A8 'error' "$FUZZ_BUILD/build.log" | head -80
        echo "fuzz: build failed (full log: $FUZZ_BUILD/build.log)"
        exit 1
    fi
    flock -u 9
}

# fuzz NAME SECONDS WORKDIR: one libFuzzer run, output in WORKDIR/NAME.log.
fuzz() {
    local name=$1 secs=$2 work=$3 bin=$FUZZ_BUILD/fuzz/fuzz_$1 dict=() opts=()
    [ -x "$bin" ] || { echo "fuzz: no $bin (scripts/fuzz.sh build)"; return 1; }
    [ -d "fuzz/corpus/$name" ] || { echo "fuzz: no seed corpus fuzz/corpus/$name"; return 1; }
    [ -f "fuzz/dict/$name.dict" ] && dict=(-dict="fuzz/dict/$name.dict")
    # fuzz/NAME.options: the target's own libFuzzer flags, one a line (# comments)
    [ -f "fuzz/$name.options" ] && mapfile -t opts < <(grep -v -e '^#' -e '^$' "fuzz/$name.options")
    mkdir -p "$work/corpus/$name" "$work/artifacts"
    # -close_fd_mask=2: the library's log lines (bad input is logged) are
    # dropped; libFuzzer, the sanitizers and FUZZ_CHECK report on the real stderr.
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
        "${NICE[@]}" "$bin" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2048 \
        -close_fd_mask=2 -print_final_stats=1 "${dict[@]}" "${opts[@]}" \
        -artifact_prefix="$work/artifacts/$name-" "$work/corpus/$name" "fuzz/corpus/$name" \
        </dev/null >"$work/$name.log" 2>&1
}

# One line of the table: name, seconds, executions, corpus files, findings.
summary() {
    local name=$1 work=$2 rc=$3 secs=$4 execs files findings
    execs=$(grep -a 'stat::number_of_executed_units' "$work/$name.log" | awk '{print $2}' | tail -1)
    files=$(find "$work/corpus/$name" "fuzz/corpus/$name" -type f 2>/dev/null | wc -l)
    findings=$(find "$work/artifacts" -name "$name-*" -type f 2>/dev/null | wc -l)
    printf '%-20s %6s %12s %8s %8s %s\n' "$name" "$secs" "${execs:-?}" "$files" "$findings" \
        "$([ "$rc" -eq 0 ] && echo ok || echo "FAILED: see $work/$name.log")"
}

cmd=${1:-run}
shift || true
case "$cmd" in
list)
    targets
    ;;
build)
    build
    ;;
smoke)
    name=${1:?usage: scripts/fuzz.sh smoke NAME [SECONDS]}
    secs=${2:-30}
    need_libfuzzer
    [ -x "$FUZZ_BUILD/fuzz/fuzz_$name" ] || build
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    rc=0
    fuzz "$name" "$secs" "$work" || rc=$?
    grep -a -E 'check failed|ERROR|SUMMARY|runtime error|Test unit written|^#[0-9]+ +DONE' \
        "$work/$name.log" | head -40 || true
    if [ "$rc" -ne 0 ]; then
        echo "FAIL fuzz_smoke_$name: a finding in $secs s (full log above the summary; input:"
        for f in "$work"/artifacts/*; do [ -f "$f" ] && base64 -w0 "$f" && echo; done
        echo ")"
        exit 1
    fi
    echo "PASS fuzz_smoke_$name: $secs s, no finding"
    ;;
run)
    [ $# -gt 0 ] || set -- $(targets)
    build
    work=$FUZZ_BUILD
    printf '%-20s %6s %12s %8s %8s\n' target seconds executions corpus findings
    status=0
    for name in "$@"; do
        t0=$(date +%s)
        rc=0
        fuzz "$name" "$FUZZ_SECONDS" "$work" || rc=$?
        summary "$name" "$work" "$rc" "$(($(date +%s) - t0))"
        [ "$rc" -eq 0 ] || status=1
    done
    exit $status
    ;;
merge)
    [ $# -gt 0 ] || set -- $(targets)
    for name in "$@"; do
        bin=$FUZZ_BUILD/fuzz/fuzz_$name
        tmp=$(mktemp -d)
        "${NICE[@]}" "$bin" -merge=1 -close_fd_mask=2 "$tmp" "fuzz/corpus/$name" \
            "$FUZZ_BUILD/corpus/$name" </dev/null >"$FUZZ_BUILD/$name.merge.log" 2>&1
        if [ "$(ls "$tmp" | wc -l)" -gt 300 ]; then
            # keep the committed corpus small: edges only, not hit counts
            rm -rf "$tmp"
            tmp=$(mktemp -d)
            "${NICE[@]}" "$bin" -merge=1 -use_counters=0 -close_fd_mask=2 "$tmp" \
                "fuzz/corpus/$name" "$FUZZ_BUILD/corpus/$name" </dev/null \
                >"$FUZZ_BUILD/$name.merge.log" 2>&1
        fi
        # regress-*: the inputs of findings fixed, kept whatever they cover
        find "fuzz/corpus/$name" -type f ! -name 'regress-*' -delete
        cp "$tmp"/* "fuzz/corpus/$name/" 2>/dev/null || true
        rm -rf "$tmp"
        echo "$name: $(ls "fuzz/corpus/$name" | wc -l) files, $(du -sh "fuzz/corpus/$name" | cut -f1)"
    done
    ;;
*)
    sed -n '2,20p' "$0"
    exit 2
    ;;
esac
