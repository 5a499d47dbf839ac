# One entry point for every task. The README's quick start uses `make demo` and
# `make test`; .ci/run calls `make test` and nothing else.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: setup build demo demo-down test lint fmt bench images crds clean

IMAGE_REPOSITORY ?= localhost/meshwork
IMAGE_TAG ?= dev

setup: ## install what building and testing needs (idempotent)
	@bash scripts/setup.sh

build: setup
	$(CARGO) build --workspace --all-targets

demo: setup ## the local multi-cluster demo (left up until make demo-down)
	@bash scripts/demo.sh

# Where the demo lab keeps its state (scripts/demo.sh reads the same variable).
MESHWORK_DEMO_STATE ?= .lab
export MESHWORK_DEMO_STATE

demo-down: ## remove the demo lab
	@target/debug/mesh-lab --state-dir "$(MESHWORK_DEMO_STATE)" down

lint: setup ## formatting, clippy (warnings are errors) and no import circle inside a crate
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/import-cycles.py

test: lint ## the whole suite: unit, datapath, component tests (needs root)
	@bash scripts/test.sh

bench: setup ## benchmarks: figures side by side with the peer they are measured against
	@bash scripts/bench.sh

images: ## container images of node-agent, mesh-apiserver and meshctl (needs Docker)
	@command -v docker >/dev/null || { echo "images: needs a Docker engine; this machine has none (the lab runs the binaries directly)" >&2; exit 1; }
	for t in node-agent mesh-apiserver meshctl; do \
	  docker build -f helm/images/Dockerfile --target $$t -t $(IMAGE_REPOSITORY)/$$t:$(IMAGE_TAG) . || exit 1; \
	done

crds: ## regenerate the chart's CRDs from the Rust types
	$(CARGO) run -q -p node-agent --example crdgen -- helm/meshwork

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
