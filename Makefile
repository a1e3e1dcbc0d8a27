# What a person types. `make help` lists the targets.
SHELL := /bin/bash
TOOLS ?= $(HOME)/.cache/edgewire/bin
export EDGEWIRE_TOOLS := $(TOOLS)
export PATH := $(TOOLS):/usr/sbin:/sbin:$(PATH)
CARGO ?= cargo
# The suite starts its own brokers and API stand-in; test threads per binary stay low on small machines.
TEST_THREADS ?= 2

.PHONY: help deps build test unit e2e crds render run demo bench lint fmt image image-test observability-test clean

help: ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

deps: ## install brokers, build libraries, Python tools, kubectl and helm (Debian/Ubuntu, idempotent)
	@bash hack/deps.sh

build: ## build every binary (debug)
	$(CARGO) build --workspace --bins

lint: ## rustfmt check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: deps lint build ## everything CI runs: lint, unit, controller, broker, chart and end-to-end (stand-in) tests
	env -u KUBECONFIG $(CARGO) test --workspace -- --test-threads=$(TEST_THREADS)
	python3 -m pytest -q e2e/standin
	bash hack/test-chart.sh

observability-test: deps ## the chart's alerts (promtool test rules) and dashboard against the metrics the binaries really serve
	bash hack/observability/test.sh

e2e: deps build ## end-to-end suite: against the cluster in KUBECONFIG when set, else the in-memory stand-in
	bash hack/e2e.sh --test-threads=$(TEST_THREADS)

crds: ## regenerate crds/, the chart's CRD templates and docs/reference/ from the api crate
	$(CARGO) run -q -p edgewire-api --bin crdgen -- --out crds --chart charts/edgewire/templates/crds --docs docs/reference

render: ## print what the operator would apply for a file: make render F=config/samples/eventbroker-nats-deployed.yaml
	@$(CARGO) run -q -p edgewire-operator -- render -f $(or $(F),config/samples/eventbroker-nats-deployed.yaml)

run: ## run the operator against the cluster in KUBECONFIG (text logs)
	$(CARGO) run -p edgewire-operator -- --log-format text run --http-addr 127.0.0.1:8081

demo: deps build ## a guided tour on the stand-in API: apply a sample, watch it become Ready, publish an event
	@bash hack/demo.sh

bench: deps ## performance figures, each a ratio taken in this run (loopback only, bounded)
	$(CARGO) run --release -q -p edgewire-operator --example build-bench
	$(CARGO) bench -q -p edgewire-agent --bench publisher
	$(CARGO) bench -q -p edgewire-agent --bench spool
	$(CARGO) bench -q -p edgewire-agent --bench spool_stores
	$(CARGO) build --release -q -p edgewire-agent --bin edgewire-agent
	$(CARGO) bench -q -p edgewire-e2e --bench bridge

# Images: PROFILE=release (default) or debug (the binaries of `make build`, built the same way so that nothing
# recompiles: features unify per build, so `-p` would give other binaries; what `make test` uses).
PROFILE ?= release
IMAGE_BINARIES = $(if $(filter debug,$(PROFILE)),--workspace --bins,--release -p edgewire-operator -p edgewire-agent --bins)

image: ## OCI image archives + SBOMs of operator and agent in $CARGO_TARGET_DIR/images (no container engine; docs/images.md)
	$(CARGO) build --locked $(IMAGE_BINARIES)
	bash hack/image/build.sh --profile $(PROFILE)

image-test: ## build both images from a clean clone and run them in a chroot (PROFILE=debug: from the debug binaries)
	$(CARGO) build --locked $(IMAGE_BINARIES)
	bash hack/image/test.sh --profile $(PROFILE)

fmt: ## format the code
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
