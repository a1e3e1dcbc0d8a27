#!/usr/bin/env bash
# make demo: a guided tour on a real Kubernetes control plane without a container runtime. Starts etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and kwok (built by `make deps`, hack/kube/build.sh),
# with the chart installed by helm; runs the real operator under the chart's ServiceAccount; applies a
# sample with kubectl and waits for Ready like a user would (the real controllers and kwok make the
# workloads ready: no pod runs code), then sends a CloudEvent through a real publisher into a real NATS.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${EDGEWIRE_TOOLS:-$HOME/.cache/edgewire/bin}"
export PATH="$TOOLS:/usr/sbin:$PATH" EDGEWIRE_TOOLS="$TOOLS"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
OPERATOR="$TARGET/debug/edgewire-operator"
AGENT="$TARGET/debug/edgewire-agent"
CONTROL_PLANE="$TARGET/debug/control-plane"
[ -x "$OPERATOR" ] && [ -x "$AGENT" ] && [ -x "$CONTROL_PLANE" ] || { echo "build first: make build"; exit 1; }
command -v kubectl >/dev/null || { echo "kubectl missing: make deps"; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  exec {cp_in}>&- 2>/dev/null || true  # the control plane stops when its stdin closes
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

say "Starting a Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok"
mkfifo "$work/cp.in"
env -u KUBECONFIG "$CONTROL_PLANE" < "$work/cp.in" > "$work/cp.out" 2> "$work/cp.log" &
pids+=($!)
exec {cp_in}> "$work/cp.in"
for _ in $(seq 1200); do grep -qx READY "$work/cp.out" 2>/dev/null && break; kill -0 "${pids[0]}" 2>/dev/null || break; sleep 0.1; done
grep -qx READY "$work/cp.out" || { cat "$work/cp.log"; exit 1; }
cat "$work/cp.log"
# shellcheck disable=SC1090
. <(grep = "$work/cp.out" | sed 's/^/export /')
export KUBECACHEDIR="$work/kube-cache"
kubectl get nodes

say "The chart is installed the way users install it (helm install, CRDs from the chart)"
helm --kubeconfig "$KUBECONFIG" list -n "$RELEASE_NAMESPACE"
kubectl get crd -l app.kubernetes.io/managed-by=Helm
kubectl -n "$RELEASE_NAMESPACE" wait --for=condition=Available deployment --all --timeout=60s >/dev/null
kubectl -n "$RELEASE_NAMESPACE" get deployment,pods -o wide
echo "(kwok reports the chart's operator pods Running: no container runtime here, they run no code)"

say "Starting edgewire-operator as the chart's ServiceAccount (logs: $work/operator.log)"
op_port=$(free_port)
KUBECONFIG="$OPERATOR_KUBECONFIG" "$OPERATOR" --log-format text run --http-addr "127.0.0.1:$op_port" \
  --lease-namespace "$RELEASE_NAMESPACE" --identity demo --watch-namespace factory > "$work/operator.log" 2>&1 &
pids+=($!)

say "kubectl apply -f config/samples/eventbroker-nats-deployed.yaml"
kubectl create namespace factory >/dev/null
kubectl label namespace factory pod-security.kubernetes.io/enforce=restricted >/dev/null
kubectl apply -f config/samples/eventbroker-nats-deployed.yaml

say "kubectl wait --for=condition=Ready eventbroker/nats-deployed"
kubectl -n factory wait --for=condition=Ready eventbroker/nats-deployed --timeout=120s
kubectl get edgewire -A
kubectl -n factory get statefulsets,deployments,pods,pvc,services

say "The publisher's configuration, as the operator rendered it"
kubectl -n factory get deployment nats-deployed-publisher -o json | python3 -c '
import json, sys
for e in json.load(sys.stdin)["spec"]["template"]["spec"]["containers"][0]["env"]:
    ref = e.get("valueFrom", {}).get("secretKeyRef")
    print(e["name"] + "=" + (e.get("value", "") if not ref else "<Secret %s, key %s>" % (ref["name"], ref["key"])))'

say "Data path: a real nats-server with JetStream, the real publisher, a CloudEvent over HTTP"
nats_port=$(free_port); http_port=$(free_port)
token=$(kubectl -n factory get secret nats-deployed-auth -o jsonpath='{.data.token}' | base64 -d)
nats-server -js -sd "$work/js" -a 127.0.0.1 -p "$nats_port" --auth "$token" > "$work/nats.log" 2>&1 &
pids+=($!)
env -i PATH="$PATH" EVENT_BROKER_ENABLED=true EVENT_BROKER_ADAPTER=nats CORE_NAME=demo \
  EVENT_BROKER_NATS_URLS="nats://127.0.0.1:$nats_port" EVENT_BROKER_NATS_JETSTREAM=true \
  EVENT_BROKER_NATS_TOKEN="$token" EDGEWIRE_LISTEN="127.0.0.1:$http_port" EDGEWIRE_LOG_FORMAT=text \
  "$AGENT" publisher > "$work/publisher.log" 2>&1 &
pids+=($!)
env -i PATH="$PATH" EVENT_BROKER_ENABLED=true EVENT_BROKER_ADAPTER=nats \
  EVENT_BROKER_NATS_URLS="nats://127.0.0.1:$nats_port" EVENT_BROKER_NATS_TOKEN="$token" \
  "$AGENT" tail > "$work/tail.out" 2> "$work/tail.log" &
pids+=($!)
for _ in $(seq 100); do curl -fs "127.0.0.1:$http_port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
sleep 0.5
echo "POST a binary-mode CloudEvent edge.node.registered:"
curl -sS -i -X POST "http://127.0.0.1:$http_port/" \
  -H 'ce-specversion: 1.0' -H 'ce-id: demo-1' -H 'ce-source: /edge/demo' -H 'ce-type: edge.node.registered' \
  -H 'content-type: application/json' -d '{"node":"n-42"}' | head -1
for _ in $(seq 50); do [ -s "$work/tail.out" ] && break; sleep 0.1; done
echo "edgewire-agent tail saw:"
cat "$work/tail.out"

say "Done. Everything ran on loopback and is cleaned up now (control plane included)."
