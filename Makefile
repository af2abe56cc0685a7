# typha-py: the README's two commands are `make demo` and `make test`; both set up first.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DURATION ?= 0
PYTEST_ARGS ?=

.PHONY: setup system peers venv demo test test-fast lint fuzz load soak bench clean

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
	$(BIN)/python -m typha.demo --duration $(DURATION)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Only the pure and in-process tests (no peers, no namespaces): for quick iterations.
test-fast: venv
	$(BIN)/python -m pytest -q tests/protocol tests/cache tests/core tests/calc $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

fuzz: setup
	TYPHA_FUZZ_EXAMPLES=100000 $(BIN)/python -m pytest -q tests/fuzz $(PYTEST_ARGS)

load: setup
	$(BIN)/python -m load.matrix

soak: setup
	$(BIN)/python -m load.soak

bench: setup
	$(BIN)/python -m load.bench_core

clean:
	rm -rf .demo .load-results .pytest_cache .hypothesis
