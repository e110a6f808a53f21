# codehub — the two commands that matter are `make run` and `make test`.
# Everything else is a faster loop for development.

BUILD      ?= build
ASAN_BUILD ?= build-asan
VENV       := .deps/venv
PYTEST     := $(VENV)/bin/python -m pytest
JOBS       ?= $(shell nproc)

.PHONY: all deps build run test test-unit test-integ test-kube asan fuzz bench bench-quick format check-source clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja:
	@cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

build: $(BUILD)/build.ninja
	@cmake --build $(BUILD) -j $(JOBS)
	@scripts/check-source.sh

run:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	$(BUILD)/codehub serve

# Unit tests (ctest) first, the fuzz smoke, the black-box and browser tests (pytest), then
# all of it again under AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer
# (make asan); the sanitized pytest's summary is the last line.
test:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	@$(MAKE) --no-print-directory test-unit
	@$(MAKE) --no-print-directory fuzz FUZZ_RUNS=$(FUZZ_SMOKE_RUNS)
	@$(MAKE) --no-print-directory test-integ
	@$(MAKE) --no-print-directory asan

test-unit: build
	@ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

# Every black-box test that starts a hub runs once per store backend in STORES (its id ends
# in [sqlite] or [postgres]); `make test-integ STORES=sqlite` for a quicker loop.
STORES ?= sqlite postgres
test-integ: build
	@CODEHUB_BIN=$(abspath $(BUILD))/codehub CODEHUB_TEST_STORES="$(STORES)" \
		$(PYTEST) tests/integ -q -p no:cacheprovider

# Only the Kubernetes tests: the harness, the kubernetes spawner and the Helm chart against a real
# kube-apiserver (tests/kube, built by make deps). Part of test-integ, so of make test.
test-kube: build
	@scripts/build-kubetest.sh
	@CODEHUB_BIN=$(abspath $(BUILD))/codehub $(PYTEST) -q -p no:cacheprovider \
		tests/integ/test_kube_harness.py tests/integ/test_kube_spawner.py \
		tests/integ/test_deploy_helm.py

$(ASAN_BUILD)/build.ninja:
	@cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCODEHUB_SANITIZE=ON >/dev/null

# The whole suite under AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer.
asan:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory $(ASAN_BUILD)/build.ninja
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)
	@ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		CODEHUB_BIN=$(abspath $(ASAN_BUILD))/codehub CODEHUB_SANITIZED=1 \
		CODEHUB_TEST_STORES="$(STORES)" $(PYTEST) tests/integ -q -p no:cacheprovider

FUZZ_BUILD   ?= build-fuzz
FUZZ_SECONDS ?= 60
# make test runs every driver for this many inputs (a tenth for the slower YAML drivers), after
# its saved reproducers, with seed 1 from a fresh corpus: a smoke run, not a hunt, and the
# same inputs on every machine, so a finding in CI is a finding here.
FUZZ_SMOKE_RUNS ?= 300000

# Every libFuzzer driver in fuzz/: its saved reproducers (fuzz/regressions/), then
# FUZZ_SECONDS of fuzzing (or, with FUZZ_RUNS set, that many inputs from seed 1) from its seed
# corpus (copied to an ignored folder so the checked-in seeds stay small) with its dictionary.
fuzz:
	@$(MAKE) --no-print-directory deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DCODEHUB_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target $$(cd fuzz && ls fuzz_*.c | sed 's/\.c$$//')
	@scripts/fuzz.sh $(FUZZ_BUILD) $(if $(FUZZ_RUNS),--runs $(FUZZ_RUNS),$(FUZZ_SECONDS))

# Benchmarks beside their peers (nginx, …), one run on this machine; writes
# docs/benchmarks.md tables and bench/results/*.json. See bench/README.md.
bench:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	@bench/deps.sh
	@$(VENV)/bin/python bench/run.py

bench-quick:
	@$(MAKE) --no-print-directory deps
	@$(MAKE) --no-print-directory build
	@bench/deps.sh
	@$(VENV)/bin/python bench/run.py --quick

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

check-source:
	@scripts/check-source.sh

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
