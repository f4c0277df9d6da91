# The front door. `make run` and `make test` are the contract (README).
BUILD ?= build
.PHONY: all build install run test test-unit test-chaos bench bench-quick soak deps format \
        format-check clean asan tsan valgrind fuzz

all: build

deps:
	@scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DOUTBOX_WERROR=ON >/dev/null
	@cmake --build $(BUILD) -j$$(nproc)

# make run shows the service's output, not the build's: the build log goes to
# $(BUILD)/build.log and is printed only when the build fails.
# make install PREFIX=/opt/outbox: liboutbox.so and .a, include/outbox/*.h,
# lib/pkgconfig/outbox.pc, lib/cmake/outbox/ (find_package(outbox)), the
# executables and their man pages.
PREFIX ?= /usr/local
install: build
	@cmake --install $(BUILD) --prefix "$(PREFIX)"

run: deps
	@cmake -S . -B $(BUILD) -DOUTBOX_WERROR=ON >/dev/null
	@echo "make run: building (log: $(BUILD)/build.log) ..."
	@cmake --build $(BUILD) -j$$(nproc) -- --no-print-directory >$(BUILD)/build.log 2>&1 || \
	  { grep -E -B2 -A8 'error|Error' $(BUILD)/build.log | head -80; \
	    echo "make run: build failed (full log: $(BUILD)/build.log)"; exit 1; }
	@scripts/run.sh

test:
	@BUILD=$(BUILD) scripts/test.sh

test-unit:
	@BUILD=$(BUILD) scripts/test.sh -L unit

# The chaos suite at full size: each system under 100,000 writes and 50
# SIGKILLs with PostgreSQL/Redis outages and broker partitions, one after the
# other (tests/chaos/; the short versions run in make test). Results are
# appended to $(BUILD)/chaos-report.jsonl.
test-chaos:
	@BUILD=$(BUILD) scripts/test-chaos.sh

# Instrumented runs (docs/SANITIZERS.md). Every test runs through
# scripts/test-launch.sh: a report from any process of a test (the test, the
# services, relays and consumers it starts) fails that test. Extra ctest
# arguments: make asan ARGS="-R relay".
#
# make asan: the whole suite under AddressSanitizer + UBSan (+ LeakSanitizer).
asan:
	@BUILD=build-asan CMAKE_ARGS="-DOUTBOX_SANITIZE=ON" scripts/test.sh $(ARGS)

# make tsan: ThreadSanitizer over the suites whose processes run threads of
# ours: the relay engine (workers, watcher, lanes, metrics, admin server) and
# the consumers (suites relay, engine, sinks, consumer, kafka, amqp, nats).
TSAN_SUITES ?= dir:(relay|engine|sinks|consumer|kafka|amqp|nats)
tsan:
	@BUILD=build-tsan CMAKE_ARGS="-DOUTBOX_SANITIZE=thread" scripts/test.sh -L '$(TSAN_SUITES)' $(ARGS)

# make valgrind: the integration tests under valgrind memcheck, the test
# programs and the executables of this build they start (leaks and errors).
VALGRIND_LABEL ?= integration
valgrind:
	@BUILD=build-valgrind CMAKE_ARGS="-DOUTBOX_VALGRIND=ON" scripts/test.sh -L '$(VALGRIND_LABEL)' $(ARGS)

# The libFuzzer targets (fuzz/README.md): builds build-fuzz with clang, then
# runs each target for FUZZ_SECONDS (600) in turn, niced; new inputs go to
# build-fuzz/corpus/, findings to build-fuzz/artifacts/. make test runs a
# 30-second smoke of each (label fuzz).
FUZZ_SECONDS ?= 600
fuzz: deps
	@FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh run

# The benchmark suite against throwaway durable servers; rewrites
# docs/BENCHMARKS.md and docs/bench/*.svg (10 to 20 minutes on 2 cores).
bench: build
	@BUILD=$(BUILD) scripts/bench.sh

# The same suite with small sizes (backlogs <= 10,000, about 1 minute), for
# development; writes $(BUILD)/bench-quick/BENCHMARKS.md, not docs/.
bench-quick: build
	@BUILD=$(BUILD) scripts/bench.sh --quick

# The soak (docs/reliability/soak.md): the order system for MINUTES (30) at
# half its sustainable maximum rate, measured at the start (RATE=N to choose),
# on throwaway durable servers; checks errors, exactly-once effects and that
# memory and infrastructure tables stay flat; rewrites docs/reliability/soak.md,
# soak-*.svg and soak-data/. MINUTES=3 for a quick check (SOAK_DOC=/tmp/x to
# keep docs/ as it is).
soak: build
	@BUILD=$(BUILD) bench/soak.sh

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

# The tree as .clang-format wants it (also a unit test of the suite).
format-check:
	@tests/core/format_check.sh .

clean:
	rm -rf $(BUILD) build-asan build-tsan build-valgrind build-fuzz
