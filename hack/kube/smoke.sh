#!/usr/bin/env bash
# Smoke test of the control plane built by hack/kube/build.sh: starts etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok on 127.0.0.1 (free ports, certificates made
# with openssl), then checks with kubectl that
#   - two kwok Nodes become Ready,
#   - a Deployment's pod is scheduled on a kwok node, becomes Ready with a pod IP, the Deployment
#     is Available; deleting the Deployment removes its ReplicaSet and pod (GC + kwok pod-delete),
#   - a StatefulSet's volumeClaimTemplate PVC binds to a pre-created hostPath PV
#     (StorageClass kubernetes.io/no-provisioner, Immediate) and its pod becomes Ready,
#   - PodSecurity admission rejects a privileged pod in a namespace labelled enforce=restricted,
#   - a ServiceAccount token from `kubectl create token` (TokenRequest) authenticates against the
#     API, RBAC denies it until a RoleBinding allows it,
#   - the root CA ConfigMap is published into new namespaces (KCM --root-ca-file).
# It prints how long each component took to become ready. Everything stops on exit (trap).
#
# This script is also the reference for the flags: a test harness should copy them from here.
#
# Env: KUBE_BIN (default: output of build.sh, building if needed), KUBECTL (default
# ~/.cache/edgewire/bin/kubectl, installed by hack/deps.sh), SMOKE_KEEP=1 keeps the work dir,
# SMOKE_HOLD=1 keeps the cluster running after the checks (writes <work dir>/READY, stop: Ctrl-C).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

KUBE_BIN="${KUBE_BIN:-$("$here/build.sh")}"
STAGES="$(dirname "$KUBE_BIN")/kwok-stages"
KUBECTL="${KUBECTL:-$HOME/.cache/edgewire/bin/kubectl}"
[ -x "$KUBECTL" ] || { echo "smoke: no kubectl at $KUBECTL (run: bash hack/deps.sh)" >&2; exit 1; }
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
  [ -x "$KUBE_BIN/$b" ] || { echo "smoke: missing $KUBE_BIN/$b (run hack/kube/build.sh)" >&2; exit 1; }
done

WORK="$(mktemp -d /tmp/kube-smoke.XXXXXX)"
PKI="$WORK/pki"; LOGS="$WORK/logs"
mkdir -p "$PKI" "$LOGS" "$WORK/pv" && mkdir -m 700 "$WORK/etcd"
pids=()
HOLDING=0
cleanup() {
  local rc=$?
  [ "$HOLDING" = 0 ] || rc=0  # stopped by a signal after the checks passed (SMOKE_HOLD=1)
  # Stop in reverse start order (etcd last: a kube-apiserver without etcd takes minutes to stop),
  # SIGTERM, then SIGKILL after 10 s.
  local i pid t0=$EPOCHREALTIME
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  echo "smoke: stopped everything in $(ms_since "$t0") ms" >&2
  if [ "$rc" -ne 0 ]; then
    echo "smoke: FAILED (exit $rc); component log tails:" >&2
    for f in "$LOGS"/*.log; do [ -f "$f" ] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }; done
  fi
  if [ "${SMOKE_KEEP:-0}" = 1 ] || [ "$rc" -ne 0 ]; then echo "smoke: work dir kept: $WORK" >&2
  else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "smoke: $*" >&2; }
ms_since() { # ms since an $EPOCHREALTIME value
  local now=$EPOCHREALTIME; echo $(( (${now/./} - ${1/./}) / 1000 ))
}
# wait_ready <name> <pid> <timeout s> <command...>: polls until the command succeeds.
wait_ready() {
  local name="$1" pid="$2" timeout="$3"; shift 3
  local t0=$EPOCHREALTIME deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { say "$name exited before it was ready"; return 1; }
    [ $SECONDS -lt $deadline ] || { say "$name not ready after ${timeout}s"; return 1; }
    sleep 0.05
  done
}

# Free ports on 127.0.0.1 (bound together, then released).
read -r ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT < <(python3 -c '
import socket
ss=[socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')

# --- certificates -------------------------------------------------------------------------------
t_pki=$EPOCHREALTIME
ossl() { openssl "$@" 2>>"$LOGS/openssl.log" >/dev/null; }
ca() { # <name>: a self-signed CA
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -keyout "$PKI/$1.key" -out "$PKI/$1.crt" -subj "/CN=edgewire-smoke-$1" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
}
# cert <name> <subject> <extensions> [ca]: an EC key and a certificate signed by the CA.
cert() {
  local ca="${4:-ca}"
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PKI/$1.key" -out "$PKI/$1.csr" -subj "$2"
  printf '%b' "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n$3\n" >"$PKI/$1.ext"
  ossl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial -days 365 \
    -extfile "$PKI/$1.ext" -out "$PKI/$1.crt"
}
ca ca           # cluster CA: serving certs, client certs (--client-ca-file), KCM's CSR signer
ca front-proxy-ca  # request-header (aggregation) CA: KCM and scheduler read it from the
                   # extension-apiserver-authentication ConfigMap and log errors every second without it
SERVICE_CIDR=10.0.0.0/16  # virtual ClusterIPs: no kube-proxy, nothing routes or dials them
cert apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
cert kcm "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
cert scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
cert kwok "/O=system:masters/CN=kwok-controller" "extendedKeyUsage=clientAuth"
cert front-proxy-client "/CN=front-proxy-client" "extendedKeyUsage=clientAuth" front-proxy-ca
# ServiceAccount token signing key (RSA: what the API server and KCM expect by default).
ossl genrsa -out "$PKI/sa.key" 2048
ossl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
kubeconfig() { # <user>: a kubeconfig with that user's client certificate
  cat >"$WORK/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: smoke
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $1
  user:
    client-certificate: $PKI/$1.crt
    client-key: $PKI/$1.key
contexts:
- name: smoke
  context: {cluster: smoke, user: $1}
current-context: smoke
EOF
}
for u in admin kcm scheduler kwok; do kubeconfig "$u"; done
say "certificates: $(ms_since "$t_pki") ms"
export KUBECONFIG="$WORK/admin.kubeconfig"
k() { "$KUBECTL" "$@"; }

# --- etcd ---------------------------------------------------------------------------------------
t_all=$EPOCHREALTIME
t=$EPOCHREALTIME
"$KUBE_BIN/etcd" \
  --name=smoke \
  --data-dir="$WORK/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="smoke=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync=true \
  --log-level=warn \
  >"$LOGS/etcd.log" 2>&1 &
pids+=($!)
wait_ready etcd $! 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/readyz"
T_ETCD=$(ms_since "$t"); say "etcd ready: $T_ETCD ms (client port $ETCD_PORT)"

# --- kube-apiserver -----------------------------------------------------------------------------
t=$EPOCHREALTIME
"$KUBE_BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$API_PORT" \
  --endpoint-reconciler-type=none \
  --cert-dir="$WORK/apiserver-certs" \
  --tls-cert-file="$PKI/apiserver.crt" \
  --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --allow-privileged=true \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
  --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --profiling=false \
  >"$LOGS/kube-apiserver.log" 2>&1 &
pids+=($!)
wait_ready kube-apiserver $! 90 curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
  "https://127.0.0.1:$API_PORT/readyz"
T_API=$(ms_since "$t"); say "kube-apiserver ready: $T_API ms (port $API_PORT)"

# --- kube-controller-manager, kube-scheduler, kwok (started together) ---------------------------
t_kcm=$EPOCHREALTIME
"$KUBE_BIN/kube-controller-manager" \
  --kubeconfig="$WORK/kcm.kubeconfig" \
  --authentication-kubeconfig="$WORK/kcm.kubeconfig" \
  --authorization-kubeconfig="$WORK/kcm.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$KCM_PORT" \
  --cert-dir="$WORK/kcm-certs" \
  --leader-elect=false \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" \
  --cluster-signing-key-file="$PKI/ca.key" \
  --profiling=false \
  >"$LOGS/kube-controller-manager.log" 2>&1 &
pids+=($!); PID_KCM=$!
t_sched=$EPOCHREALTIME
"$KUBE_BIN/kube-scheduler" \
  --kubeconfig="$WORK/scheduler.kubeconfig" \
  --authentication-kubeconfig="$WORK/scheduler.kubeconfig" \
  --authorization-kubeconfig="$WORK/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 \
  --secure-port="$SCHED_PORT" \
  --cert-dir="$WORK/scheduler-certs" \
  --leader-elect=false \
  --profiling=false \
  >"$LOGS/kube-scheduler.log" 2>&1 &
pids+=($!); PID_SCHED=$!
t_kwok=$EPOCHREALTIME
# Node and pod Stages (node-initialize, node-heartbeat-with-lease, pod-ready, pod-complete,
# pod-delete); pod IPs come from --cidr and are status only: nothing routes or dials them.
"$KUBE_BIN/kwok" \
  --kubeconfig="$WORK/kwok.kubeconfig" \
  --config="$(ls "$STAGES"/*.yaml | paste -sd, -)" \
  --manage-all-nodes=true \
  --node-lease-duration-seconds=40 \
  --cidr=10.244.0.0/16 \
  --node-ip=127.0.0.1 \
  --server-address="127.0.0.1:$KWOK_PORT" \
  >"$LOGS/kwok.log" 2>&1 &
pids+=($!); PID_KWOK=$!
wait_ready kube-controller-manager $PID_KCM 60 curl -fsSk "https://127.0.0.1:$KCM_PORT/healthz"
T_KCM=$(ms_since "$t_kcm"); say "kube-controller-manager ready: $T_KCM ms (port $KCM_PORT)"
wait_ready kube-scheduler $PID_SCHED 60 curl -fsSk "https://127.0.0.1:$SCHED_PORT/readyz"
T_SCHED=$(ms_since "$t_sched"); say "kube-scheduler ready: $T_SCHED ms (port $SCHED_PORT)"
wait_ready kwok $PID_KWOK 60 curl -fsS "http://127.0.0.1:$KWOK_PORT/healthz"
T_KWOK=$(ms_since "$t_kwok"); say "kwok ready: $T_KWOK ms (port $KWOK_PORT)"
T_ALL=$(ms_since "$t_all"); say "control plane ready: $T_ALL ms from etcd start"

# --- checks -------------------------------------------------------------------------------------
check() { say "ok: $*"; }
t_checks=$EPOCHREALTIME

# Fake nodes: kwok fills in their status (Ready, capacity, addresses) and renews their Leases.
for n in kwok-node-0 kwok-node-1; do
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $n
  labels: {type: kwok, kubernetes.io/hostname: $n, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
  annotations: {node.alpha.kubernetes.io/ttl: "0", kwok.x-k8s.io/node: fake}
EOF
done
k wait --for=condition=Ready node/kwok-node-0 node/kwok-node-1 --timeout=60s >/dev/null
check "kwok nodes Ready"

k create namespace smoke >/dev/null
wait_ready "default ServiceAccount" "$PID_KCM" 60 k -n smoke get serviceaccount default
wait_ready "kube-root-ca.crt ConfigMap" "$PID_KCM" 60 k -n smoke get configmap kube-root-ca.crt
check "namespace smoke has its default ServiceAccount and kube-root-ca.crt"

# Deployment -> ReplicaSet -> Pod -> scheduled on a kwok node -> Running/Ready (kwok pod-ready).
k apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: smoke}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: registry.invalid/smoke/web:1}]
EOF
k -n smoke wait --for=condition=Available deployment/web --timeout=90s >/dev/null
pod=$(k -n smoke get pods -l app=web -o jsonpath='{.items[0].metadata.name}')
k -n smoke wait --for=condition=Ready "pod/$pod" --timeout=30s >/dev/null
node=$(k -n smoke get pod "$pod" -o jsonpath='{.spec.nodeName}')
ip=$(k -n smoke get pod "$pod" -o jsonpath='{.status.podIP}')
phase=$(k -n smoke get pod "$pod" -o jsonpath='{.status.phase}')
[[ "$node" == kwok-node-* && -n "$ip" && "$phase" == Running ]] || { say "pod $pod: node=$node ip=$ip phase=$phase"; exit 1; }
check "deployment web Available; pod $pod Running+Ready on $node with IP $ip"

k -n smoke delete deployment web --wait=true >/dev/null
k -n smoke wait --for=delete "pod/$pod" --timeout=60s >/dev/null 2>&1 || true
left=$(k -n smoke get pods,replicasets -l app=web -o name)
[ -z "$left" ] || { say "left after deleting the deployment: $left"; exit 1; }
check "deleting the deployment removed its ReplicaSet and pod (GC + kwok pod-delete)"

# StatefulSet with a volumeClaimTemplate bound to a pre-created hostPath PV.
k apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: smoke-local}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
reclaimPolicy: Retain
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: smoke-pv-0}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: smoke-local
  hostPath: {path: $WORK/pv/0, type: DirectoryOrCreate}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: smoke}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: smoke}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: db
        image: registry.invalid/smoke/db:1
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: smoke-local
      resources: {requests: {storage: 1Gi}}
EOF
k -n smoke wait --for=jsonpath='{.status.phase}'=Bound pvc/data-db-0 --timeout=90s >/dev/null
pv=$(k -n smoke get pvc data-db-0 -o jsonpath='{.spec.volumeName}')
[ "$pv" = smoke-pv-0 ] || { say "pvc data-db-0 bound to '$pv'"; exit 1; }
k -n smoke wait --for=condition=Ready pod/db-0 --timeout=60s >/dev/null
k -n smoke wait --for=jsonpath='{.status.readyReplicas}'=1 statefulset/db --timeout=60s >/dev/null
check "statefulset db: PVC data-db-0 Bound to $pv, pod db-0 Ready on $(k -n smoke get pod db-0 -o jsonpath='{.spec.nodeName}')"
wait_ready "EndpointSlice of service db" "$PID_KCM" 30 \
  bash -c "[ -n \"\$('$KUBECTL' -n smoke get endpointslices -l kubernetes.io/service-name=db -o jsonpath='{.items[0].endpoints[0].addresses[0]}')\" ]"
check "service db has an EndpointSlice with the pod's IP"

# PodSecurity admission (on by default): a privileged pod is rejected where enforce=restricted.
k create namespace smoke-restricted >/dev/null
k label namespace smoke-restricted pod-security.kubernetes.io/enforce=restricted >/dev/null
if out=$(k -n smoke-restricted apply --dry-run=server -f - 2>&1 <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: bad}
spec:
  containers: [{name: c, image: registry.invalid/smoke/bad:1, securityContext: {privileged: true}}]
EOF
); then say "privileged pod was admitted in a restricted namespace"; exit 1; fi
grep -q 'violates PodSecurity' <<<"$out" || { say "unexpected rejection: $out"; exit 1; }
check "PodSecurity rejects a privileged pod in an enforce=restricted namespace"

# ServiceAccount token (TokenRequest API) authenticates; RBAC decides.
k -n smoke create serviceaccount bot >/dev/null
token=$(k -n smoke create token bot --duration=10m)
api() { curl -sS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $token" -o /dev/null -w '%{http_code}' "$@"; }
who=$(curl -fsS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -X POST "https://127.0.0.1:$API_PORT/apis/authentication.k8s.io/v1/selfsubjectreviews" \
  -d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["status"]["userInfo"]["username"])')
[ "$who" = system:serviceaccount:smoke:bot ] || { say "token authenticated as '$who'"; exit 1; }
code=$(api "https://127.0.0.1:$API_PORT/api/v1/namespaces/smoke/pods")
[ "$code" = 403 ] || { say "listing pods without RBAC gave $code, want 403"; exit 1; }
k -n smoke create rolebinding bot-view --clusterrole=view --serviceaccount=smoke:bot >/dev/null
wait_ready "RBAC allows bot" "$PID_KCM" 30 bash -c "[ \"\$(curl -sS --cacert '$PKI/ca.crt' -H 'Authorization: Bearer $token' -o /dev/null -w '%{http_code}' https://127.0.0.1:$API_PORT/api/v1/namespaces/smoke/pods)\" = 200 ]"
check "token from 'kubectl create token' authenticates as $who; 403 before, 200 after a RoleBinding"

T_CHECKS=$(ms_since "$t_checks")
cat >&2 <<EOF
smoke: PASSED
smoke: startup (ms): etcd $T_ETCD, kube-apiserver $T_API, kube-controller-manager $T_KCM, kube-scheduler $T_SCHED, kwok $T_KWOK; all $T_ALL
smoke: checks took $T_CHECKS ms
EOF
if [ "${SMOKE_HOLD:-0}" = 1 ]; then
  # Keep the cluster up for poking at it; SIGINT/SIGTERM stops it.
  HOLDING=1
  echo "$WORK/admin.kubeconfig" >"$WORK/READY"
  say "holding: export KUBECONFIG=$WORK/admin.kubeconfig (stop with Ctrl-C or kill $$)"
  while kill -0 "$PID_KCM" 2>/dev/null; do sleep 1; done
fi
