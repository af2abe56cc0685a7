# typha-py: the README's two commands are `make demo` and `make test`; both set up first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DURATION ?= 0
PYTEST_ARGS ?=

.PHONY: setup system peers venv demo test test-fast lint docs fuzz load soak bench bench-vs-go bench-catchup clean

setup: system venv peers

system:
	bash scripts/setup-system.sh

peers: system
	bash scripts/build-peers.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: setup
	$(BIN)/python -m demo --duration $(DURATION)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Only the pure and in-process tests (no peers, no namespaces): for quick iterations.
test-fast: venv
	$(BIN)/python -m pytest -q tests/protocol tests/cache tests/server tests/client tests/calc tests/sync/convert $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The parameter table of docs/configuration.md and the README's metrics table, from the code.
docs: venv
	$(BIN)/python scripts/gen_docs.py

FUZZ_RUNS ?= 200000
ATHERIS_TARGETS := server-stream client-stream gob-server-stream etcd-value model-value selector
# Each deep-selector run builds and parses a selector up to 1,000 levels deep: ~20 runs/s.
FUZZ_DEEP_RUNS ?= 5000
# Random clusters for real Felix (~15 s each, twice: typha-py vs Calico Typha, felix_client vs Felix).
FUZZ_FELIX_CLUSTERS ?= 20

# hypothesis at 100,000 examples a test, then each atheris (libFuzzer) target for FUZZ_RUNS runs.
fuzz: setup
	$(BIN)/python -m pip install -q -e '.[test,fuzz]'
	TYPHA_FUZZ_EXAMPLES=100000 $(BIN)/python -m pytest -q tests/fuzz $(PYTEST_ARGS)
	for t in $(ATHERIS_TARGETS); do \
		$(BIN)/python -m tests.fuzz.atheris_main $$t -runs=$(FUZZ_RUNS) -print_final_stats=1 || exit 1; \
	done
	$(BIN)/python -m tests.fuzz.atheris_main deep-selector -runs=$(FUZZ_DEEP_RUNS) -print_final_stats=1
	TYPHA_FELIX_CLUSTERS=$(FUZZ_FELIX_CLUSTERS) $(BIN)/python -m pytest -q tests/felix/test_felix_random_clusters.py tests/felix/test_felix_random_kubernetes.py $(PYTEST_ARGS)

load: setup
	$(BIN)/python -m load.matrix

soak: setup
	$(BIN)/python -m load.soak

bench: setup
	$(BIN)/python -m load.bench_core

# typha-py vs Calico's Typha (Go) on the same etcd, data, writer and clients; BENCH_ARGS e.g.
# "--endpoints 150000" (the big shape) or "--py-client gob". Rewrites its section of
# docs/benchmarks.md.
BENCH_ARGS ?=
bench-vs-go: setup
	$(BIN)/python -m load.bench_vs_go $(BENCH_ARGS)

# A normal client's latency with and without a flood of resume-from-seq-1 hellos (issue 12,
# item 3); CATCHUP_ARGS e.g. "--before <commit>" to alternate with an older server.
CATCHUP_ARGS ?=
bench-catchup: venv
	$(BIN)/python -m load.bench_catchup $(CATCHUP_ARGS)

clean:
	rm -rf .demo .load-results .pytest_cache .hypothesis
