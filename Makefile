# What a person types. `make help` lists the targets.
SHELL := /bin/bash
TOOLS ?= $(HOME)/.cache/edgewire/bin
export EDGEWIRE_TOOLS := $(TOOLS)
export PATH := $(TOOLS):/usr/sbin:/sbin:$(PATH)
CARGO ?= cargo
# The suite starts its own brokers and Kubernetes control plane; test threads per binary stay low on small
# machines.
TEST_THREADS ?= 2

.PHONY: help deps build test unit e2e crds render run demo bench mutants fuzz lint fmt image image-test observability-test clean

help: ## this list
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## install brokers, build libraries, Python tools, kubectl and helm; build the e2e control plane, edgewire-kstatus and promtool (idempotent)
	@bash hack/deps.sh

# One feature set for every debug build: `--all-targets` unifies the dev-dependencies' features into what the
# binaries are built with, so `cargo test --workspace`, the e2e suite and `image-test PROFILE=debug` reuse these
# artifacts instead of compiling every dependency a second time (`--bins` or `-p` alone would give other ones).
build: ## build every binary, test and bench (debug)
	$(CARGO) build --workspace --all-targets

lint: ## rustfmt check and clippy with warnings denied
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: deps lint build ## everything CI runs: lint, unit, controller, broker, chart, observability, end-to-end and image tests
	env -u KUBECONFIG INSTA_WORKSPACE_ROOT=$(CURDIR) $(CARGO) test --workspace -- --test-threads=$(TEST_THREADS)
	bash hack/test-chart.sh
	bash hack/observability/test.sh
	$(MAKE) image-test PROFILE=debug

observability-test: deps ## the chart's alerts (promtool test rules) and dashboard against the metrics the binaries really serve
	bash hack/observability/test.sh

e2e: deps build ## end-to-end suite on the control plane it starts (etcd, kube-apiserver, KCM, scheduler, kwok), or on the cluster in KUBECONFIG
	bash hack/e2e.sh --test-threads=$(TEST_THREADS)

crds: ## regenerate crds/, the chart's CRD templates and docs/reference/ from the api crate
	$(CARGO) run -q -p edgewire-api --bin crdgen -- --out crds --chart charts/edgewire/templates/crds --docs docs/reference

render: ## print what the operator would apply for a file: make render F=config/samples/eventbroker-nats-deployed.yaml
	@$(CARGO) run -q -p edgewire-operator -- render -f $(or $(F),config/samples/eventbroker-nats-deployed.yaml)

run: ## run the operator against the cluster in KUBECONFIG (text logs)
	$(CARGO) run -p edgewire-operator -- --log-format text run --http-addr 127.0.0.1:8081

demo: deps build ## a guided tour on a real control plane: an EventBroker, a BridgeLink through a cloud outage, a tally of what arrived
	@bash hack/demo.sh

# Release builds share one feature set too: `cargo bench --workspace --no-run` builds every bench (and the
# binaries of the benches' own packages, edgewire-agent) with the dev-dependencies' features unified;
# `--bins --example build-bench` adds edgewire-operator (the scale bench starts it) with the same set, because an
# example needs the dev-dependencies too; `--workspace --bench <name>` then only runs (`-p`, or `--bins` alone,
# would resolve other features and compile every dependency again). NATS setups run on nats-server from the
# module proxy (hack/nats/build.sh, the version users run), not the distribution's package; Mosquitto is
# Debian's (what users install).
BENCH_TARGET_DIR = $(or $(CARGO_TARGET_DIR),target)
BENCH_ENV = EDGEWIRE_TEST_BIN_NATS="$$(bash hack/nats/build.sh)/nats-server"

bench: deps ## performance figures, each a ratio taken in this run (loopback only, bounded; NATS is nats-server 2.15 built by hack/nats)
	$(CARGO) bench -q --workspace --no-run
	$(CARGO) build --release -q --workspace --bins --example build-bench
	$(CARGO) build --locked -q $(DIST_BINARIES)
	$(BENCH_TARGET_DIR)/release/examples/build-bench
	$(BENCH_ENV) $(CARGO) bench -q --workspace --bench publisher
	$(CARGO) bench -q --workspace --bench spool
	$(CARGO) bench -q --workspace --bench spool_stores
	$(BENCH_ENV) $(CARGO) bench -q --workspace --bench bridge
	env -u KUBECONFIG $(CARGO) bench -q --workspace --bench scale -- $(SCALE_ARGS)

mutants: ## mutation score (slow, not in CI): api crate, validate modules, event decoding, spool framing (hack/mutants.sh)
	@bash hack/mutants.sh

fuzz: ## each fuzz target (CloudEvent decoder, patterns, env and YAML parsers) for FUZZ_SECONDS (60) with cargo-fuzz, or on stable without it (hack/fuzz.sh)
	@bash hack/fuzz.sh

# Images: PROFILE=dist (default: what ships, release with whole-program LTO, Cargo.toml's [profile.dist]),
# release, or debug (the binaries of `make build`, built the same way so that nothing recompiles; what
# `make test` uses). The scale bench measures the dist operator, built by the same command as the images'.
PROFILE ?= dist
SHIPPED_BINARIES = -p edgewire-operator -p edgewire-agent --bins
DIST_BINARIES = --profile dist $(SHIPPED_BINARIES)
IMAGE_BINARIES = $(if $(filter debug,$(PROFILE)),--workspace --all-targets,--profile $(PROFILE) $(SHIPPED_BINARIES))

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
