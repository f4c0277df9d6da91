# The front door. `make run` and `make test` are the contract (README).
BUILD ?= build
.PHONY: all build install run test test-unit test-chaos bench bench-quick deps format format-check clean asan

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

# Whole suite under AddressSanitizer + UndefinedBehaviorSanitizer.
asan:
	@BUILD=build-asan CMAKE_ARGS="-DOUTBOX_SANITIZE=ON" scripts/test.sh

# The benchmark suite against throwaway durable servers; rewrites
# docs/BENCHMARKS.md and docs/bench/*.svg (10 to 20 minutes on 2 cores).
bench: build
	@BUILD=$(BUILD) scripts/bench.sh

# The same suite with small sizes (backlogs <= 10,000, about 1 minute), for
# development; writes $(BUILD)/bench-quick/BENCHMARKS.md, not docs/.
bench-quick: build
	@BUILD=$(BUILD) scripts/bench.sh --quick

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

# The tree as .clang-format wants it (also a unit test of the suite).
format-check:
	@tests/core/format_check.sh .

clean:
	rm -rf $(BUILD) build-asan
