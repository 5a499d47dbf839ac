# One entry point for every task. The README's quick start uses `make demo` and
# `make test`; .ci/run calls `make test` and nothing else.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: setup build demo test lint fmt bench clean

setup: ## install what building and testing needs (idempotent)
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --workspace --all-targets

demo: setup ## the most complete thing that runs end to end
	@bash scripts/demo.sh

lint: setup ## formatting and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: lint ## the whole suite: unit, datapath, component tests (needs root)
	@bash scripts/test.sh

bench: setup ## benchmarks: figures side by side with the peer they are measured against
	@bash scripts/bench.sh

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
