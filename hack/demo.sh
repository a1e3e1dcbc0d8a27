#!/usr/bin/env bash
# make demo: a guided tour on a real Kubernetes control plane without a container runtime (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and kwok, built by `make deps`), with the chart
# installed by helm and the real operator under the chart's ServiceAccount: an EventBroker publishing into a
# NATS server, a BridgeLink's agent between an edge Mosquitto and that NATS, a cloud outage with
# `kubectl get bl -w` showing SPOOLED rise and fall, and a tally (sent, spooled, delivered, lost) read back
# from the stream. The tour itself is e2e/examples/demo.rs; it exits non-zero if anything was lost and
# leaves nothing running.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${EDGEWIRE_TOOLS:-$HOME/.cache/edgewire/bin}"
export PATH="$TOOLS:/usr/sbin:/sbin:$PATH" EDGEWIRE_TOOLS="$TOOLS"
command -v kubectl >/dev/null && command -v helm >/dev/null || { echo "kubectl/helm missing: make deps"; exit 1; }
# The same build as `make build` (nothing recompiles); the example finds the operator and agent binaries of
# that build.
cargo build --workspace --all-targets -q
target="${CARGO_TARGET_DIR:-target}"
# The tour finds the chart and samples from its crate directory at run time (as under cargo), so a build
# cache made from another checkout still reads this one.
exec env -u KUBECONFIG CARGO_MANIFEST_DIR="$PWD/e2e" "$target/debug/examples/demo"
