#!/usr/bin/env bash
# make demo: a guided tour without a cluster. Starts the in-memory API stand-in and the real operator,
# applies a sample with kubectl, stands in for the kubelet so the workloads report ready, waits for
# Ready like a user would, then sends a CloudEvent through a real publisher into a real NATS server.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${EDGEWIRE_TOOLS:-$HOME/.cache/edgewire/bin}"
export PATH="$TOOLS:/usr/sbin:$PATH"
TARGET="${CARGO_TARGET_DIR:-$PWD/target}"
OPERATOR="$TARGET/debug/edgewire-operator"
AGENT="$TARGET/debug/edgewire-agent"
[ -x "$OPERATOR" ] && [ -x "$AGENT" ] || { echo "build first: make build"; exit 1; }
command -v kubectl >/dev/null || { echo "kubectl missing: make deps"; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

say "Starting the in-memory Kubernetes API stand-in"
export KUBECONFIG="$work/kubeconfig" KUBECACHEDIR="$work/kube-cache"
python3 e2e/standin/standin.py --port 0 --kubeconfig "$KUBECONFIG" > "$work/standin.out" 2> "$work/standin.log" &
pids+=($!)
for _ in $(seq 100); do grep -q READY "$work/standin.out" 2>/dev/null && break; sleep 0.1; done
grep READY "$work/standin.out"

say "kubectl apply -f crds/"
kubectl apply -f crds/
kubectl wait --for=condition=Established crd --all --timeout=30s

say "Starting edgewire-operator (logs: $work/operator.log)"
op_port=$(free_port)
"$OPERATOR" --log-format text run --http-addr "127.0.0.1:$op_port" --lease-namespace default --identity demo \
  > "$work/operator.log" 2>&1 &
pids+=($!)

say "kubectl apply -f config/samples/eventbroker-nats-deployed.yaml"
kubectl create namespace factory >/dev/null
kubectl apply -f config/samples/eventbroker-nats-deployed.yaml
for _ in $(seq 100); do kubectl -n factory get deploy nats-deployed-publisher >/dev/null 2>&1 && break; sleep 0.2; done
kubectl -n factory get statefulsets,deployments,services,secrets

say "No kubelet here: standing in for it by marking the workloads ready"
kubectl -n factory patch statefulset nats-deployed-nats --subresource=status --type=merge \
  -p '{"status":{"replicas":3,"readyReplicas":3,"availableReplicas":3,"observedGeneration":1}}' >/dev/null
kubectl -n factory patch deployment nats-deployed-publisher --subresource=status --type=merge \
  -p '{"status":{"replicas":2,"readyReplicas":2,"availableReplicas":2,"updatedReplicas":2,"observedGeneration":1,"conditions":[{"type":"Available","status":"True","reason":"demo","message":"stood in"}]}}' >/dev/null

say "kubectl wait --for=condition=Ready eventbroker/nats-deployed"
kubectl -n factory wait --for=condition=Ready eventbroker/nats-deployed --timeout=60s
kubectl get edgewire -A

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

say "Done. Everything ran on loopback and is cleaned up now."
