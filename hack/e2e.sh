#!/usr/bin/env bash
# End-to-end suite: the real edgewire-operator (and edgewire-agent) binaries driven with kubectl and helm,
# in one test binary (e2e/tests/cluster) that starts one Kubernetes control plane for the run: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and kwok, built by hack/kube/build.sh (make deps),
# with the chart installed by helm. With $KUBECONFIG set it uses that cluster instead.
#
#   hack/e2e.sh                      # every scenario
#   hack/e2e.sh leader --nocapture   # arguments go to the test binary (filter, --nocapture, ...)
#
# It builds the binaries as `make build` does (`--workspace --all-targets`: features unify per build, so `--bins`
# or `-p` would recompile dependencies) and runs private copies of them, so a concurrent
# build that relinks target/debug/* cannot swap a binary under a running suite. EDGEWIRE_OPERATOR_BIN and
# EDGEWIRE_AGENT_BIN, when set, are used as they are. EDGEWIRE_E2E_KEEP=1 keeps the control plane's logs and
# every test's files (kept anyway when a test fails; the path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo="${CARGO:-cargo}"

bin_dir="$(mktemp -d)"
trap 'rm -rf "$bin_dir"' EXIT
target="${CARGO_TARGET_DIR:-target}"
if [[ -z "${EDGEWIRE_OPERATOR_BIN:-}" || -z "${EDGEWIRE_AGENT_BIN:-}" ]]; then
  "$cargo" build --workspace --all-targets
fi
for pkg in operator agent; do
  var="EDGEWIRE_$(tr a-z A-Z <<<"$pkg")_BIN"
  if [[ -z "${!var:-}" ]]; then
    cp "$target/debug/edgewire-$pkg" "$bin_dir/edgewire-$pkg"
    export "$var=$bin_dir/edgewire-$pkg"
  fi
done
"$cargo" test --workspace --test cluster -- "$@"
