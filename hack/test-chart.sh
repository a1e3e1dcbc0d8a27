#!/usr/bin/env bash
# Chart tier (DESIGN §4): helm lint, helm template for default and all-options values, the rendered
# objects validated against the Kubernetes 1.33 schemas with kubernetes-validate, and assertions on
# what the chart renders (CRD gating, RBAC rules, security context, operator arguments). Also checks
# config/samples/: every sample parses, its Secrets pass kubernetes-validate, and its EventBroker
# validates against the generated CRD schema.
#
# Needs helm (from `make deps`, in ${EDGEWIRE_TOOLS:-$HOME/.cache/edgewire/bin}), python3 with
# pyyaml, jsonschema and kubernetes-validate (pip, also `make deps`). No cluster.
#
# Prints one line per check and ends with `chart: N passed, M failed`; exits non-zero when a check
# fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${EDGEWIRE_TOOLS:-$HOME/.cache/edgewire/bin}"
HELM="$TOOLS/helm"
CHART="$ROOT/charts/edgewire"
SAMPLES="$ROOT/config/samples"
ALL_OPTIONS="$CHART/ci/all-options-values.yaml"
K8S_VERSION=1.33.0
RELEASE=edgewire
NAMESPACE=edgewire-system

if [ ! -x "$HELM" ]; then
  echo "chart: helm not found in $TOOLS: run make deps" >&2
  exit 1
fi
if ! python3 -c 'import yaml, jsonschema, kubernetes_validate' 2>/dev/null; then
  echo "chart: python3 modules yaml, jsonschema, kubernetes_validate missing: run make deps" >&2
  exit 1
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0

# check NAME CMD...: runs CMD with errexit in a subshell, output to a log shown only on failure.
check() {
  local name="$1"
  shift
  local log="$WORK/check.log"
  set +e
  (set -euo pipefail; "$@") >"$log" 2>&1
  local rc=$?
  set -e
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    sed 's/^/     | /' "$log"
  fi
}

# Python helpers shared by the assertions: `python3 -c "$PY" SUBCOMMAND ARGS...`.
read -r -d '' PY <<'PYEOF' || true
import json, re, subprocess, sys
import yaml

def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]

def of_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]

def one(docs, kind):
    found = of_kind(docs, kind)
    ensure(len(found) == 1, f"expected exactly one {kind}, found {len(found)}")
    return found[0]

def operator_container(docs):
    dep = one(docs, "Deployment")
    containers = dep["spec"]["template"]["spec"]["containers"]
    ensure([c["name"] for c in containers] == ["operator"], containers)
    return dep, containers[0]

def fail(msg):
    print(msg)
    sys.exit(1)

# An explicit check, not `assert`: Python drops asserts under PYTHONOPTIMIZE (-O), and a check that
# vanishes passes everything.
def ensure(cond, msg):
    if not cond:
        fail(msg)

EXPECTED_CLUSTER_RULES = [
    (["edgewire.dev"], ["eventbrokers", "mqttbrokers", "bridgelinks"], ["get", "list", "watch", "patch", "update"]),
    (["edgewire.dev"], ["eventbrokers/status", "mqttbrokers/status", "bridgelinks/status"], ["get", "patch", "update"]),
    (["edgewire.dev"], ["eventbrokers/finalizers", "mqttbrokers/finalizers", "bridgelinks/finalizers"], ["update", "patch"]),
    ([""], ["secrets", "services", "serviceaccounts", "configmaps"], ["get", "list", "watch", "create", "patch", "delete"]),
    ([""], ["persistentvolumeclaims"], ["get", "list", "watch", "delete"]),
    ([""], ["pods"], ["get", "list", "watch"]),
    (["apps"], ["deployments", "statefulsets"], ["get", "list", "watch", "create", "patch", "delete"]),
    (["rbac.authorization.k8s.io"], ["roles", "rolebindings"], ["get", "list", "watch", "create", "patch", "delete"]),
    (["events.k8s.io"], ["events"], ["create", "patch"]),
    (["apiextensions.k8s.io"], ["customresourcedefinitions"], ["get", "list", "watch"]),
]
EXPECTED_LEASE_RULES = [
    (["coordination.k8s.io"], ["leases"], ["get", "list", "watch", "create", "update", "patch"]),
]

def triples(rules):
    out = set()
    for r in rules:
        extra = set(r) - {"apiGroups", "resources", "verbs"}
        ensure(not extra, f"unexpected rule keys {extra} in {r}")
        for g in r["apiGroups"]:
            for res in r["resources"]:
                for v in r["verbs"]:
                    out.add((g, res, v))
    return out

def expected_triples(spec):
    return triples([{"apiGroups": g, "resources": r, "verbs": v} for g, r, v in spec])

def cmd_no_crds(path):
    crds = of_kind(load(path), "CustomResourceDefinition")
    if crds:
        fail(f"{path}: crds.install=false still renders {[c['metadata']['name'] for c in crds]}")

def cmd_crds(path):
    crds = of_kind(load(path), "CustomResourceDefinition")
    names = sorted(c["metadata"]["name"] for c in crds)
    want = ["bridgelinks.edgewire.dev", "eventbrokers.edgewire.dev", "mqttbrokers.edgewire.dev"]
    if names != want:
        fail(f"CRDs rendered {names}, want {want}")
    for c in crds:
        ann = (c["metadata"].get("annotations") or {})
        if ann.get("helm.sh/resource-policy") != "keep":
            fail(f"{c['metadata']['name']}: annotation helm.sh/resource-policy is {ann.get('helm.sh/resource-policy')!r}, want 'keep'")
        if "edgewire" not in c["spec"]["names"].get("categories", []):
            fail(f"{c['metadata']['name']}: not in category edgewire")

def cmd_rbac(path, namespace, sa):
    docs = load(path)
    cr = one(docs, "ClusterRole")
    got = triples(cr["rules"])
    want = expected_triples(EXPECTED_CLUSTER_RULES)
    if got != want:
        fail(f"ClusterRole rules differ\n  missing: {sorted(want - got)}\n  extra:   {sorted(got - want)}")
    # Nothing broader than named resources and verbs.
    for g, r, v in got:
        if "*" in (g, r, v):
            fail(f"ClusterRole has a wildcard: {(g, r, v)}")
    if any(("coordination.k8s.io", "leases", v) in got for v in ("get", "create", "update")):
        fail("leases must not be granted cluster-wide")
    crb = one(docs, "ClusterRoleBinding")
    ensure(crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cr["metadata"]["name"]}, crb["roleRef"])
    ensure(crb["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}], crb["subjects"])
    role = one(docs, "Role")
    ensure(role["metadata"]["namespace"] == namespace, role["metadata"])
    got = triples(role["rules"])
    want = expected_triples(EXPECTED_LEASE_RULES)
    if got != want:
        fail(f"leader-election Role rules differ\n  missing: {sorted(want - got)}\n  extra:   {sorted(got - want)}")
    rb = one(docs, "RoleBinding")
    ensure(rb["metadata"]["namespace"] == namespace, rb["metadata"])
    ensure(rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}, rb["roleRef"])
    ensure(rb["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}], rb["subjects"])
    dep, _ = operator_container(docs)
    ensure(dep["spec"]["template"]["spec"]["serviceAccountName"] == sa, dep["spec"]["template"]["spec"].get("serviceAccountName"))

def cmd_security(path):
    docs = load(path)
    dep, c = operator_container(docs)
    pod = dep["spec"]["template"]["spec"]
    psc = pod.get("securityContext") or {}
    ensure(psc.get("runAsNonRoot") is True, psc)
    ensure(psc.get("seccompProfile") == {"type": "RuntimeDefault"}, psc)
    sc = c.get("securityContext") or {}
    want = {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for k, v in want.items():
        if sc.get(k) != v:
            fail(f"container securityContext.{k} = {sc.get(k)!r}, want {v!r}")
    if sc.get("privileged"):
        fail("container is privileged")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            fail(f"pod sets {field}")

def cmd_args(path, want_json):
    docs = load(path)
    _, c = operator_container(docs)
    want = json.loads(want_json)
    if c.get("args") != want:
        fail(f"operator args\n  got:  {c.get('args')}\n  want: {want}")
    if c.get("command"):
        fail(f"operator container overrides command: {c['command']}")

def cmd_agent_image(path, image, policy):
    docs = load(path)
    _, c = operator_container(docs)
    args = c.get("args") or []
    if f"--agent-image={image}" not in args:
        fail(f"--agent-image={image} not in {args}")
    if f"--agent-image-pull-policy={policy}" not in args:
        fail(f"--agent-image-pull-policy={policy} not in {args}")

def cmd_operator_image(path, image, policy):
    _, c = operator_container(load(path))
    ensure(c["image"] == image, c["image"])
    ensure(c["imagePullPolicy"] == policy, c["imagePullPolicy"])

def cmd_env_probes(path, rust_log):
    dep, c = operator_container(load(path))
    env = {e["name"]: e for e in c.get("env", [])}
    ensure(env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}, env.get("POD_NAME"))
    ensure(env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, env.get("POD_NAMESPACE"))
    ensure(env["RUST_LOG"]["value"] == rust_log, env.get("RUST_LOG"))
    ensure(c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}], c["ports"])
    ensure(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, c["livenessProbe"])
    ensure(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, c["readinessProbe"])
    r = c.get("resources") or {}
    ensure(r.get("requests") and r.get("limits"), f"resources: {r}")

def cmd_service(path):
    docs = load(path)
    dep, _ = operator_container(docs)
    svc = one(docs, "Service")
    ensure(svc["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}], svc["spec"]["ports"])
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    sel = svc["spec"]["selector"]
    ensure(all(pod_labels.get(k) == v for k, v in sel.items()), f"Service selector {sel} does not match pod labels {pod_labels}")
    ensure(dep["spec"]["selector"]["matchLabels"] == sel, (dep["spec"]["selector"], sel))
    for d in docs:
        labels = d["metadata"].get("labels") or {}
        for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"):
            if d["kind"] != "CustomResourceDefinition" and k not in labels:
                fail(f"{d['kind']}/{d['metadata']['name']} lacks label {k}")

def cmd_pdb(path, replicas):
    docs = load(path)
    dep, _ = operator_container(docs)
    ensure(dep["spec"]["replicas"] == int(replicas), dep["spec"]["replicas"])
    pdbs = of_kind(docs, "PodDisruptionBudget")
    if int(replicas) > 1:
        ensure(len(pdbs) == 1, f"want one PodDisruptionBudget with {replicas} replicas, got {len(pdbs)}")
        spec = pdbs[0]["spec"]
        ensure(spec.get("maxUnavailable") == 1 and "minAvailable" not in spec, spec)
        ensure(spec["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"], spec["selector"])
    else:
        ensure(not pdbs, f"want no PodDisruptionBudget with 1 replica, got {len(pdbs)}")

def cmd_no_servicemonitor(path):
    if of_kind(load(path), "ServiceMonitor"):
        fail("ServiceMonitor rendered although metrics.serviceMonitor.enabled is false")

def cmd_servicemonitor(path):
    docs = load(path)
    sm = one(docs, "ServiceMonitor")
    ensure(sm["apiVersion"] == "monitoring.coreos.com/v1", sm["apiVersion"])
    svc = one(docs, "Service")
    labels = svc["metadata"]["labels"]
    sel = sm["spec"]["selector"]["matchLabels"]
    ensure(all(labels.get(k) == v for k, v in sel.items()), f"ServiceMonitor selector {sel} does not match Service labels {labels}")
    ep = sm["spec"]["endpoints"]
    ensure(len(ep) == 1 and ep[0]["port"] == "http" and ep[0]["path"] == "/metrics", ep)
    ensure(sm["metadata"]["labels"].get("release") == "kube-prometheus-stack", sm["metadata"]["labels"])

def cmd_all_options(path):
    docs = load(path)
    dep, c = operator_container(docs)
    pod = dep["spec"]["template"]["spec"]
    ensure(pod["imagePullSecrets"] == [{"name": "registry-creds"}], pod.get("imagePullSecrets"))
    ensure(pod["nodeSelector"] == {"kubernetes.io/os": "linux", "node-role.example.com/control": "true"}, pod.get("nodeSelector"))
    ensure(pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "control", "effect": "NoSchedule"}], pod.get("tolerations"))
    ensure(pod["priorityClassName"] == "system-cluster-critical", pod.get("priorityClassName"))
    ensure("podAntiAffinity" in pod["affinity"], pod.get("affinity"))
    meta = dep["spec"]["template"]["metadata"]
    ensure(meta["annotations"] == {"example.com/team": "platform"}, meta.get("annotations"))
    ensure(meta["labels"]["example.com/cost-center"] == "edge", meta["labels"])
    ensure(c["resources"] == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}, c["resources"])
    sa = one(docs, "ServiceAccount")
    ensure(sa["metadata"]["name"] == "edgewire-operator", sa["metadata"]["name"])
    ensure(sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/edgewire-operator"}, sa["metadata"].get("annotations"))
    ensure(dep["metadata"]["name"] == "edgewire-ctl", dep["metadata"]["name"])
    ensure(dep["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "ew", dep["spec"]["selector"])

def cmd_no_serviceaccount(path, name):
    docs = load(path)
    if of_kind(docs, "ServiceAccount"):
        fail("ServiceAccount rendered although serviceAccount.create is false")
    dep, _ = operator_container(docs)
    ensure(dep["spec"]["template"]["spec"]["serviceAccountName"] == name, dep["spec"]["template"]["spec"])

def cmd_namespaced(path, namespace):
    for d in load(path):
        if d["kind"] in ("CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"):
            ensure("namespace" not in d["metadata"], d["metadata"])
        else:
            ensure(d["metadata"].get("namespace") == namespace, f"{d['kind']}/{d['metadata']['name']} namespace {d['metadata'].get('namespace')!r}")

# kubernetes-validate has no option to skip unknown kinds: for a kind without an upstream schema it
# prints `WARN ... Couldn't find schema for kind K` and still exits 0. So run it with --strict for
# the given Kubernetes version and check its output: every object not of an allowed unknown kind must
# have an INFO "passed" line, and the only WARN lines must be about the allowed unknown kinds.
def cmd_validate(path, version, allowed_unknown):
    allowed = {k for k in allowed_unknown.split(",") if k}
    docs = load(path)
    proc = subprocess.run([sys.executable, "-m", "kubernetes_validate", "-k", version, "--strict", path],
                          capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    print(out)
    if proc.returncode != 0:
        fail(f"kubernetes-validate exited {proc.returncode}")
    bad = [l for l in out.splitlines() if l.startswith(("ERROR", "FATAL"))]
    if bad:
        fail("\n".join(bad))
    for line in out.splitlines():
        if line.startswith("WARN"):
            m = re.search(r"schema for kind (\S+) with api version", line)
            if not m or m.group(1) not in allowed:
                fail(f"unexpected warning: {line}")
    passed_lines = [l for l in out.splitlines() if l.startswith("INFO") and " passed for resource " in l]
    want = len([d for d in docs if d["kind"] not in allowed])
    if len(passed_lines) != want:
        fail(f"{len(passed_lines)} objects passed, want {want}")
    for k in allowed:
        if not of_kind(docs, k):
            fail(f"allowed unknown kind {k} not in {path}: the allowance is stale")

# EventBroker instances have no upstream schema: validate them here against the openAPIV3Schema of
# the generated CRD (rendered by the chart), made strict the way the API server is: unknown fields
# are errors (kubectl's strict field validation), nullable allows null, int-or-string allows both.
# CEL rules (x-kubernetes-validations) are not evaluated here; the api crate's tests evaluate them.
def strictify(s):
    if isinstance(s, list):
        return [strictify(x) for x in s]
    if not isinstance(s, dict):
        return s
    s = {k: strictify(v) for k, v in s.items()}
    if s.get("x-kubernetes-int-or-string"):
        s.pop("type", None)
        s = {"anyOf": [{"type": "integer"}, {"type": "string"}], **{k: v for k, v in s.items() if k == "description"}}
    if s.get("type") == "object" and "properties" in s and "additionalProperties" not in s \
            and not s.get("x-kubernetes-preserve-unknown-fields"):
        s["additionalProperties"] = False
    if s.pop("nullable", False) and "type" in s:
        s["type"] = [s["type"], "null"]
    return {k: v for k, v in s.items() if not k.startswith("x-kubernetes-")}

def crd_schemas(crd_dir):
    import glob
    out = {}
    for f in glob.glob(crd_dir + "/*.yaml"):
        with open(f) as fh:
            text = "\n".join(l for l in fh.read().splitlines() if not l.lstrip().startswith("{{"))
        crd = yaml.safe_load(text)
        for v in crd["spec"]["versions"]:
            root = strictify(v["schema"]["openAPIV3Schema"])
            # The API server supplies apiVersion, kind and metadata at the root of every object.
            root["properties"] = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                  "metadata": {"type": "object"}, **root.get("properties", {})}
            out[(crd["spec"]["group"] + "/" + v["name"], crd["spec"]["names"]["kind"])] = root
    return out

def secret_refs(spec):
    """(secret name, keys it must hold, required type or None, field) referenced by an EventBroker spec."""
    refs = []
    def walk(x, path):
        if isinstance(x, dict):
            for k, v in x.items():
                p = f"{path}.{k}"
                if k in ("token", "jwt", "seed", "url", "caSecretRef", "credentials", "password") and isinstance(v, dict) and "name" in v:
                    refs.append((v["name"], [v["key"]], None, p))
                elif k == "userPassword" and isinstance(v, dict):
                    refs.append((v["secretName"], ["username", "password"], None, p))
                elif k == "clientCertSecretRef":
                    refs.append((v["secretName"], ["tls.crt", "tls.key"], "kubernetes.io/tls", p))
                elif k == "certSecretName" and isinstance(v, str):
                    refs.append((v, ["tls.crt", "tls.key"], "kubernetes.io/tls", p))
                elif k == "sasl":
                    refs.append((v["secretName"], ["username", "password"], None, p))
                elif k == "credentials" and isinstance(v, dict) and "secretName" in v:
                    refs.append((v["secretName"], [], None, p))
                else:
                    walk(v, p)
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}[{i}]")
    walk(spec, "spec")
    return refs

def cmd_sample(path, crd_dir, namespace):
    import jsonschema
    schemas = crd_schemas(crd_dir)
    docs = load(path)
    with open(path) as f:
        if not f.readline().startswith("#"):
            fail(f"{path}: no comment header")
    kinds = [d["kind"] for d in docs]
    custom = [d for d in docs if d["apiVersion"].startswith("edgewire.dev/")]
    if len(custom) != 1:
        fail(f"{path}: want exactly one Edgewire resource, got kinds {kinds}")
    if "Namespace" in kinds:
        fail(f"{path}: holds a Namespace object")
    secrets = {}
    for d in docs:
        if d["metadata"].get("namespace") != namespace:
            fail(f"{path}: {d['kind']}/{d['metadata']['name']} has namespace {d['metadata'].get('namespace')!r}, want {namespace}")
        if d["kind"] == "Secret":
            keys = set(d.get("data") or {}) | set(d.get("stringData") or {})
            secrets[d["metadata"]["name"]] = (keys, d.get("type", "Opaque"))
        key = (d["apiVersion"], d["kind"])
        if d["apiVersion"].startswith("edgewire.dev/"):
            if key not in schemas:
                fail(f"{path}: no CRD for {key}")
            errors = sorted(jsonschema.Draft202012Validator(schemas[key]).iter_errors(d), key=lambda e: list(e.path))
            if errors:
                fail("\n".join(f"{path}: {d['kind']}/{d['metadata']['name']}: {'.'.join(map(str, e.path))}: {e.message}" for e in errors))
    eb = custom[0]
    for name, keys, typ, field in secret_refs(eb["spec"]):
        if name not in secrets:
            fail(f"{path}: {field} references Secret {name}, which the file does not hold")
        have, have_type = secrets[name]
        missing = [k for k in keys if k not in have]
        if missing:
            fail(f"{path}: {field}: Secret {name} lacks keys {missing}")
        if typ and have_type != typ:
            fail(f"{path}: {field}: Secret {name} has type {have_type}, want {typ}")
    used = {r[0] for r in secret_refs(eb["spec"])}
    unused = set(secrets) - used
    if unused:
        fail(f"{path}: Secrets {sorted(unused)} are not referenced by the {eb['kind']}")

def cmd_samples_cover(sample_dir):
    import glob, os
    files = sorted(os.path.basename(f) for f in glob.glob(sample_dir + "/*.yaml"))
    want = [f"eventbroker-{k}-deployed.yaml" for k in ("nats", "rabbitmq", "redis", "mosquitto", "emqx", "redpanda", "kafka")]
    want += [f"eventbroker-{a}-external.yaml" for a in ("nats", "kafka", "amqp091", "redis", "mqtt")]
    missing = sorted(set(want) - set(files))
    if missing:
        fail(f"missing samples: {missing}")
    kinds = {}
    for f in want:
        eb = one(load(os.path.join(sample_dir, f)), "EventBroker")
        if f.endswith("-deployed.yaml"):
            kinds[eb["spec"]["deployBroker"]["kind"]] = f
        else:
            ensure("deployBroker" not in eb["spec"], f)
    ensure(sorted(kinds) == sorted(["nats", "rabbitmq", "redis", "mosquitto", "emqx", "redpanda", "kafka"]), kinds)

def cmd_versions(cargo_toml, chart_yaml, values_yaml, rendered, images_rs, build_sh):
    """One version everywhere: the workspace's, the chart's appVersion, the default image tags."""
    import tomllib
    with open(cargo_toml, "rb") as f:
        version = tomllib.load(f)["workspace"]["package"]["version"]
    with open(chart_yaml) as f:
        app_version = str(yaml.safe_load(f)["appVersion"])
    if app_version != version:
        fail(f"Chart.yaml appVersion {app_version!r} != Cargo.toml [workspace.package] version {version!r}")
    with open(values_yaml) as f:
        images = yaml.safe_load(f)["image"]
    repos = {"operator": "ghcr.io/edgewire/edgewire-operator", "agent": "ghcr.io/edgewire/edgewire-agent"}
    for which, repo in repos.items():
        if images[which]["repository"] != repo:
            fail(f"values image.{which}.repository {images[which]['repository']!r}, want {repo!r} (what make image builds)")
        if images[which]["tag"] not in ("", version):
            fail(f"values image.{which}.tag {images[which]['tag']!r}: want \"\" (the appVersion) or {version!r}")
    _, c = operator_container(load(rendered))
    if c["image"] != f"{repos['operator']}:{version}":
        fail(f"rendered operator image {c['image']!r}, want {repos['operator']}:{version}")
    if f"--agent-image={repos['agent']}:{version}" not in c.get("args", []):
        fail(f"rendered --agent-image is not {repos['agent']}:{version}: {c.get('args')}")
    # The operator's built-in default (Settings::default(), used without --agent-image): the agent repository
    # with the crate version, which is the workspace version.
    with open(images_rs) as f:
        src = f.read()
    m = re.search(r'format!\(\s*"([^"]*):\{\}",\s*env!\("CARGO_PKG_VERSION"\)\s*\)', src)
    if not m or m.group(1) != repos["agent"]:
        fail(f"{images_rs}: Settings::default() is not format!(\"{repos['agent']}:{{}}\", env!(\"CARGO_PKG_VERSION\"))")
    for crate in ("operator", "agent"):
        with open(f"{cargo_toml.rsplit('/', 1)[0]}/{crate}/Cargo.toml", "rb") as f:
            pkg = tomllib.load(f)["package"]
        if pkg.get("version") != {"workspace": True}:
            fail(f"{crate}/Cargo.toml version {pkg.get('version')!r}: want version.workspace = true")
    # make image names the images IMAGE_REPOSITORY_PREFIX/<binary>, ghcr.io/edgewire by default.
    with open(build_sh) as f:
        if 'PREFIX="${IMAGE_REPOSITORY_PREFIX:-ghcr.io/edgewire}"' not in f.read():
            fail(f"{build_sh}: default repository prefix is not ghcr.io/edgewire")
    print(f"version {version} everywhere")

def cmd_namespaced_rbac(path, namespace, sa, namespaces_json):
    """watchNamespaces: the ClusterRole only reads CRDs; each watched namespace has a Role with the
    controllers' rules, bound to the operator's ServiceAccount; nothing else grants Secrets."""
    docs = load(path)
    watched = json.loads(namespaces_json)
    cr = one(docs, "ClusterRole")
    crd_rule = [r for r in EXPECTED_CLUSTER_RULES if r[0] == ["apiextensions.k8s.io"]]
    controller_rules = [r for r in EXPECTED_CLUSTER_RULES if r[0] != ["apiextensions.k8s.io"]]
    got = triples(cr["rules"])
    if got != expected_triples(crd_rule):
        fail(f"ClusterRole with watchNamespaces grants more than reading CRDs: {sorted(got - expected_triples(crd_rule))}")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in of_kind(docs, "Role")}
    bindings = {(b["metadata"]["namespace"], b["metadata"]["name"]): b for b in of_kind(docs, "RoleBinding")}
    controller_roles = {k: r for k, r in roles.items() if not k[1].endswith("-leader-election")}
    if sorted(ns for ns, _ in controller_roles) != sorted(watched):
        fail(f"controller Roles in {sorted(ns for ns, _ in controller_roles)}, want {sorted(watched)}")
    for (ns, name), role in controller_roles.items():
        got = triples(role["rules"])
        want = expected_triples(controller_rules)
        if got != want:
            fail(f"Role {ns}/{name} differs\n  missing: {sorted(want - got)}\n  extra:   {sorted(got - want)}")
        rb = bindings.get((ns, name))
        if not rb:
            fail(f"no RoleBinding {ns}/{name}")
        if rb["roleRef"] != {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}:
            fail(f"RoleBinding {ns}/{name} roleRef {rb['roleRef']}")
        if rb["subjects"] != [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]:
            fail(f"RoleBinding {ns}/{name} subjects {rb['subjects']}")
    _, c = operator_container(docs)
    want_arg = "--watch-namespace=" + ",".join(watched)
    if want_arg not in c["args"]:
        fail(f"{want_arg} not in {c['args']}")

def cmd_network_policy(path, cidrs_json, extra_port):
    docs = load(path)
    np = one(docs, "NetworkPolicy")
    dep, _ = operator_container(docs)
    spec = np["spec"]
    if spec["podSelector"]["matchLabels"] != dep["spec"]["selector"]["matchLabels"]:
        fail(f"podSelector {spec['podSelector']} does not select the operator pods")
    if sorted(spec["policyTypes"]) != ["Egress", "Ingress"]:
        fail(f"policyTypes {spec['policyTypes']}")
    if spec["ingress"] != [{"ports": [{"port": "http", "protocol": "TCP"}]}]:
        fail(f"ingress {spec['ingress']}: want only the http (metrics) port")
    egress = spec["egress"]
    dns = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
    if egress[0] != dns:
        fail(f"first egress rule {egress[0]}, want DNS")
    api = egress[1]
    if [p["port"] for p in api["ports"]] != [443, 6443]:
        fail(f"API server ports {api['ports']}")
    cidrs = json.loads(cidrs_json)
    got = [t["ipBlock"]["cidr"] for t in api.get("to", [])]
    if got != cidrs:
        fail(f"API server CIDRs {got}, want {cidrs}")
    extra = egress[2:]
    if extra_port:
        if len(extra) != 1 or extra[0]["ports"][0]["port"] != int(extra_port):
            fail(f"extraEgress not rendered: {extra}")
    elif extra:
        fail(f"unexpected egress rules {extra}")

ALERTS = ["EdgewireBridgeCloudDisconnected", "EdgewireBridgeEdgeDisconnected", "EdgewireBridgeSpoolFilling",
          "EdgewireBridgeSpoolFull", "EdgewireBridgeSpoolOldMessages", "EdgewireBridgeSpoolDropping",
          "EdgewireBridgeCloudErrors", "EdgewirePublisherBrokerDown", "EdgewirePublisherPublishFailing",
          "EdgewireMqttBrokerDown", "EdgewireOperatorReconcileErrors", "EdgewireOperatorNoLeader"]

def cmd_monitoring(path, chart_dir, disabled, alert_labels_json, object_labels_json):
    docs = load(path)
    pr = one(docs, "PrometheusRule")
    if pr["apiVersion"] != "monitoring.coreos.com/v1":
        fail(f"PrometheusRule apiVersion {pr['apiVersion']}")
    for k, v in json.loads(object_labels_json).items():
        if pr["metadata"]["labels"].get(k) != v:
            fail(f"PrometheusRule label {k}={pr['metadata']['labels'].get(k)!r}, want {v!r}")
    rules = [r for g in pr["spec"]["groups"] for r in g["rules"]]
    names = [r["alert"] for r in rules]
    want = [a for a in ALERTS if a != disabled]
    if names != want:
        fail(f"alerts {names}, want {want}")
    extra = json.loads(alert_labels_json)
    for r in rules:
        if r["annotations"]["runbook_url"] != "https://github.com/edgewire/edgewire/blob/main/docs/runbooks.md#" + r["alert"].lower():
            fail(f"{r['alert']}: runbook_url {r['annotations']['runbook_url']}")
        if r["labels"].get("severity") not in ("warning", "critical"):
            fail(f"{r['alert']}: severity {r['labels'].get('severity')}")
        for k, v in extra.items():
            if r["labels"].get(k) != v:
                fail(f"{r['alert']}: label {k}={r['labels'].get(k)!r}, want {v!r}")
    cms = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    if len(cms) != 1:
        fail(f"want one ConfigMap labelled grafana_dashboard: \"1\", got {len(cms)}")
    with open(f"{chart_dir}/dashboards/edgewire.json") as f:
        if json.loads(cms[0]["data"]["edgewire.json"]) != json.load(f):
            fail("the dashboard ConfigMap does not hold dashboards/edgewire.json")
    pm = one(docs, "PodMonitor")
    sel = pm["spec"]["selector"]["matchExpressions"]
    if {"key": "app.kubernetes.io/managed-by", "operator": "In", "values": ["edgewire-operator"]} not in sel:
        fail(f"PodMonitor does not select the operator's workloads: {sel}")
    if [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] != ["metrics", "http"]:
        fail(f"PodMonitor endpoints {pm['spec']['podMetricsEndpoints']}")

def cmd_no_monitoring(path):
    for kind in ("PrometheusRule", "PodMonitor", "NetworkPolicy"):
        if of_kind(load(path), kind):
            fail(f"{kind} rendered by default")
    if [d for d in of_kind(load(path), "ConfigMap") if d["metadata"].get("labels", {}).get("grafana_dashboard")]:
        fail("dashboard ConfigMap rendered by default")

def cmd_gitops_blocks(md, out_dir):
    """Every ```yaml block of docs/gitops.md parses; writes the Helm values of each HelmRelease and
    Application to out_dir/values-N.yaml (rendered against the chart by the caller)."""
    import os
    text = open(md).read()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    if not blocks:
        fail(f"{md}: no yaml block")
    kinds = []
    n = 0
    for b in blocks:
        for d in yaml.safe_load_all(b):
            if not d:
                continue
            # argocd-cm (the Argo CD health checks) has data, the rest a spec.
            for k in ("apiVersion", "kind", "metadata", "data" if d.get("kind") == "ConfigMap" else "spec"):
                if k not in d:
                    fail(f"{md}: a {d.get('kind')} without {k}")
            kinds.append((d["apiVersion"], d["kind"]))
            values = None
            if d["kind"] == "HelmRelease":
                values = d["spec"]["values"]
                if d["spec"]["chart"]["spec"]["chart"] != "charts/edgewire":
                    fail(f"HelmRelease chart {d['spec']['chart']['spec']['chart']}")
            if d["kind"] == "Application":
                values = d["spec"]["source"]["helm"]["valuesObject"]
                if d["spec"]["source"]["path"] != "charts/edgewire":
                    fail(f"Application path {d['spec']['source']['path']}")
            if values is not None:
                n += 1
                with open(os.path.join(out_dir, f"values-{n}.yaml"), "w") as f:
                    yaml.safe_dump(values, f)
    want = [("helm.toolkit.fluxcd.io/v2", "HelmRelease"), ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
            ("argoproj.io/v1alpha1", "Application"), ("source.toolkit.fluxcd.io/v1", "GitRepository")]
    for w in want:
        if w not in kinds:
            fail(f"{md}: no {w[1]} ({w[0]})")
    print(f"{len(kinds)} objects, {n} values blocks")

globals()["cmd_" + sys.argv[1].replace("-", "_")](*sys.argv[2:])
PYEOF

py() { python3 -c "$PY" "$@"; }

tmpl() { # tmpl OUT ARGS...: helm template into $WORK/OUT
  local out="$1"
  shift
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$K8S_VERSION" "$@" >"$WORK/$out"
}

fails_with() { # fails_with MESSAGE ARGS...: helm template with ARGS must fail, saying MESSAGE
  local msg="$1" out
  shift
  if out="$("$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$K8S_VERSION" "$@" 2>&1)"; then
    echo "helm template $* succeeded, want a failure"
    return 1
  fi
  echo "$out"
  grep -qF -- "$msg" <<<"$out"
}

# expect_failure_naming NEEDLE CMD...: CMD must fail, and its output must name NEEDLE (the defect planted
# for a self-test) without a Python traceback: a check that fails for another reason proves nothing.
expect_failure_naming() {
  local needle="$1" out
  shift
  if out="$("$@" 2>&1)"; then
    echo "$out"
    echo "passed, want a failure naming $needle"
    return 1
  fi
  echo "$out"
  if grep -q '^Traceback' <<<"$out"; then
    echo "failed with a Python exception, not on $needle"
    return 1
  fi
  grep -qF -- "$needle" <<<"$out" || { echo "the failure does not name $needle"; return 1; }
}

validator_catches_typo() {
  sed 's/^      serviceAccountName:/      serviceAcountName:/' "$WORK/default.yaml" >"$WORK/broken.yaml"
  grep -q serviceAcountName "$WORK/broken.yaml"
  expect_failure_naming "'serviceAcountName'" py validate "$WORK/broken.yaml" "$K8S_VERSION" ""
}

sample_validator_catches_typos() {
  local src="$SAMPLES/eventbroker-nats-deployed.yaml"
  sed 's/^    replicas: 3$/    replica: 3/' "$src" >"$WORK/typo1.yaml"
  sed 's/^    kind: nats$/    kind: natz/' "$src" >"$WORK/typo2.yaml"
  sed 's/^  name: nats-deployed-auth$/  name: nats-deployed-other/' "$src" >"$WORK/typo3.yaml"
  local f
  for f in typo1 typo2 typo3; do
    ! cmp -s "$src" "$WORK/$f.yaml" || { echo "$f: sed changed nothing"; return 1; }
  done
  expect_failure_naming "'replica' was unexpected" py sample "$WORK/typo1.yaml" "$CHART/templates/crds" factory
  expect_failure_naming "'natz' is not one of" py sample "$WORK/typo2.yaml" "$CHART/templates/crds" factory
  expect_failure_naming "references Secret nats-deployed-auth, which the file does not hold" \
    py sample "$WORK/typo3.yaml" "$CHART/templates/crds" factory
}

# The checks are explicit `ensure` calls, not `assert`s: they still fail under PYTHONOPTIMIZE.
checks_survive_pythonoptimize() {
  # One replica, yet the PodDisruptionBudget of the default values: the pdb check must say so.
  sed 's/^  replicas: 2$/  replicas: 1/' "$WORK/default.yaml" >"$WORK/pdb-left.yaml"
  ! cmp -s "$WORK/default.yaml" "$WORK/pdb-left.yaml" || { echo "sed changed nothing"; return 1; }
  expect_failure_naming "want no PodDisruptionBudget with 1 replica" \
    env PYTHONOPTIMIZE=2 python3 -c "$PY" pdb "$WORK/pdb-left.yaml" 1
}

# --- lint ---------------------------------------------------------------------------------------
check "helm lint (default values)" "$HELM" lint "$CHART"
check "helm lint --strict (default values)" "$HELM" lint --strict "$CHART"
check "helm lint --strict (all options, crds.install=false)" "$HELM" lint --strict "$CHART" -f "$ALL_OPTIONS"
check "helm lint --strict (all options, crds.install=true)" "$HELM" lint --strict "$CHART" -f "$ALL_OPTIONS" --set crds.install=true

# --- render -------------------------------------------------------------------------------------
check "helm template (default values)" tmpl default.yaml
check "helm template (all options, crds.install=false)" tmpl all.yaml -f "$ALL_OPTIONS"
check "helm template (all options, crds.install=true)" tmpl all-crds.yaml -f "$ALL_OPTIONS" --set crds.install=true
check "helm template (crds.install=false)" tmpl no-crds.yaml --set crds.install=false
check "helm template (replicaCount=1)" tmpl one-replica.yaml --set replicaCount=1
check "helm template (serviceAccount.create=false, name given)" \
  tmpl no-sa.yaml --set serviceAccount.create=false --set serviceAccount.name=existing-sa
check "helm template (watchNamespace, logLevel, leaseDuration, concurrentReconciles)" \
  tmpl watch.yaml --set watchNamespace=factory --set logLevel=debug --set leaderElection.leaseDuration=20 --set concurrentReconciles=2 \
  --set logFormat=text --set image.agent.tag=9.9.9 --set image.agent.pullPolicy=Never
check "helm template rejects serviceAccount.create=false without a name" fails_with "serviceAccount.name is required" \
  --set serviceAccount.create=false
check "values schema rejects an unknown key" fails_with "additional properties 'replicaCuont' not allowed" \
  --set replicaCuont=3
check "values schema rejects a bad logFormat" fails_with "logFormat" --set logFormat=xml

# --- Kubernetes 1.33 schemas (strict: unknown fields are errors) --------------------------------
# ServiceMonitor (monitoring.coreos.com/v1) is not in the upstream schemas; see cmd_validate.
check "kubernetes-validate $K8S_VERSION --strict (default values)" py validate "$WORK/default.yaml" "$K8S_VERSION" ""
check "kubernetes-validate $K8S_VERSION --strict (all options)" py validate "$WORK/all.yaml" "$K8S_VERSION" ServiceMonitor
check "kubernetes-validate $K8S_VERSION --strict (all options + CRDs)" py validate "$WORK/all-crds.yaml" "$K8S_VERSION" ServiceMonitor
check "kubernetes-validate $K8S_VERSION --strict (replicaCount=1)" py validate "$WORK/one-replica.yaml" "$K8S_VERSION" ""
check "kubernetes-validate $K8S_VERSION --strict (no ServiceAccount)" py validate "$WORK/no-sa.yaml" "$K8S_VERSION" ""
# The validator must catch a wrong field, or the checks above prove nothing.
check "kubernetes-validate rejects an unknown field, naming it (self-test)" validator_catches_typo

# --- assertions on what the chart renders -------------------------------------------------------
check "crds.install=false renders no CustomResourceDefinition" py no_crds "$WORK/no-crds.yaml"
check "all options (crds.install=false) renders no CustomResourceDefinition" py no_crds "$WORK/all.yaml"
check "default values render the 3 CRDs with helm.sh/resource-policy: keep" py crds "$WORK/default.yaml"
check "all options with crds.install=true renders the 3 CRDs with keep" py crds "$WORK/all-crds.yaml"
check "ClusterRole grants exactly the controllers' rules; Lease Role is namespaced (default)" \
  py rbac "$WORK/default.yaml" "$NAMESPACE" "$RELEASE"
check "ClusterRole grants exactly the controllers' rules; Lease Role is namespaced (all options)" \
  py rbac "$WORK/all.yaml" "$NAMESPACE" edgewire-operator
check "RBAC binds an existing ServiceAccount when serviceAccount.create=false" \
  py rbac "$WORK/no-sa.yaml" "$NAMESPACE" existing-sa
check "no ServiceAccount rendered when serviceAccount.create=false" py no_serviceaccount "$WORK/no-sa.yaml" existing-sa
check "operator runs non-root, read-only root filesystem, no privilege escalation (default)" py security "$WORK/default.yaml"
check "operator runs non-root, read-only root filesystem, no privilege escalation (all options)" py security "$WORK/all.yaml"
APP_VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$CHART/Chart.yaml")"
check "operator args (default values)" py args "$WORK/default.yaml" "$(printf '%s' '["run",
  "--agent-image=ghcr.io/edgewire/edgewire-agent:'"$APP_VERSION"'", "--agent-image-pull-policy=IfNotPresent",
  "--http-addr=0.0.0.0:8080", "--lease-namespace=$(POD_NAMESPACE)", "--lease-duration-seconds=15", "--concurrent-reconciles=8", "--log-format=json"]')"
check "operator args (all options: --watch-namespace, custom agent image)" py args "$WORK/all.yaml" '["run",
  "--agent-image=registry.example.com/mirror/edgewire-agent:0.1.0-rc.1", "--agent-image-pull-policy=Always",
  "--http-addr=0.0.0.0:8080", "--lease-namespace=$(POD_NAMESPACE)", "--lease-duration-seconds=30", "--concurrent-reconciles=8", "--log-format=json",
  "--watch-namespace=factory"]'
check "operator args (watchNamespace, leaseDuration, concurrentReconciles, logFormat set)" py args "$WORK/watch.yaml" '["run",
  "--agent-image=ghcr.io/edgewire/edgewire-agent:9.9.9", "--agent-image-pull-policy=Never",
  "--http-addr=0.0.0.0:8080", "--lease-namespace=$(POD_NAMESPACE)", "--lease-duration-seconds=20", "--concurrent-reconciles=2", "--log-format=text",
  "--watch-namespace=factory"]'
check "agent image value reaches --agent-image (default: appVersion tag)" \
  py agent_image "$WORK/default.yaml" "ghcr.io/edgewire/edgewire-agent:$APP_VERSION" IfNotPresent
check "agent image value reaches --agent-image (all options)" \
  py agent_image "$WORK/all.yaml" "registry.example.com/mirror/edgewire-agent:0.1.0-rc.1" Always
check "operator image (default: appVersion tag)" \
  py operator_image "$WORK/default.yaml" "ghcr.io/edgewire/edgewire-operator:$APP_VERSION" IfNotPresent
check "operator image (all options)" \
  py operator_image "$WORK/all.yaml" "registry.example.com/mirror/edgewire-operator:0.1.0-rc.1" Always
check "env POD_NAME/POD_NAMESPACE/RUST_LOG, port http 8080, probes (default)" py env_probes "$WORK/default.yaml" info
check "env POD_NAME/POD_NAMESPACE/RUST_LOG, port http 8080, probes (all options)" py env_probes "$WORK/all.yaml" "info,kube=debug"
check "metrics Service on 8080 selects the operator pods; common labels" py service "$WORK/default.yaml"
check "objects are in the release namespace (cluster-scoped ones in none)" py namespaced "$WORK/all-crds.yaml" "$NAMESPACE"
check "PodDisruptionBudget maxUnavailable 1 with replicaCount 2" py pdb "$WORK/default.yaml" 2
check "PodDisruptionBudget with replicaCount 3 (all options)" py pdb "$WORK/all.yaml" 3
check "no PodDisruptionBudget with replicaCount 1" py pdb "$WORK/one-replica.yaml" 1
check "no ServiceMonitor by default" py no_servicemonitor "$WORK/default.yaml"
check "ServiceMonitor (monitoring.coreos.com/v1) selects the metrics Service when enabled" py servicemonitor "$WORK/all.yaml"
check "all-options values reach the Deployment and ServiceAccount" py all_options "$WORK/all.yaml"

# --- watchNamespaces, NetworkPolicy, monitoring (issue 13) ----------------------------------------
check "helm template (watchNamespaces factory, site-a with watchNamespace factory; NetworkPolicy)" \
  tmpl namespaced.yaml --set 'watchNamespaces={factory,site-a}' --set watchNamespace=factory \
  --set networkPolicy.enabled=true --set 'networkPolicy.apiServerCIDRs={10.96.0.1/32,192.168.1.10/32}'
check "watchNamespaces: ClusterRole only reads CRDs; a Role per namespace with the controllers' rules" \
  py namespaced_rbac "$WORK/namespaced.yaml" "$NAMESPACE" "$RELEASE" '["factory", "site-a"]'
check "NetworkPolicy: ingress only to the metrics port, egress only DNS and the API server CIDRs" \
  py network_policy "$WORK/namespaced.yaml" '["10.96.0.1/32", "192.168.1.10/32"]' ""
check "helm template (NetworkPolicy with extraEgress, no CIDRs)" tmpl netpol-extra.yaml --set networkPolicy.enabled=true \
  --set 'networkPolicy.extraEgress[0].ports[0].port=8443'
check "NetworkPolicy: API server ports to any address without CIDRs; extraEgress appended" \
  py network_policy "$WORK/netpol-extra.yaml" '[]' 8443
check "kubernetes-validate $K8S_VERSION --strict (watchNamespaces, NetworkPolicy)" \
  py validate "$WORK/namespaced.yaml" "$K8S_VERSION" ""
check "helm template (PrometheusRule, dashboard, PodMonitor; alert labels; one alert disabled)" \
  tmpl monitoring.yaml --set metrics.prometheusRule.enabled=true --set metrics.dashboard.enabled=true \
  --set metrics.podMonitor.enabled=true --set metrics.prometheusRule.alertLabels.team=platform \
  --set metrics.prometheusRule.labels.release=kube-prometheus-stack \
  --set 'metrics.prometheusRule.disabled={EdgewireBridgeEdgeDisconnected}'
check "PrometheusRule: the alerts with runbook_url and severity, alertLabels, disabled left out; dashboard ConfigMap; PodMonitor" \
  py monitoring "$WORK/monitoring.yaml" "$CHART" EdgewireBridgeEdgeDisconnected '{"team": "platform"}' '{"release": "kube-prometheus-stack"}'
check "kubernetes-validate $K8S_VERSION --strict (monitoring)" \
  py validate "$WORK/monitoring.yaml" "$K8S_VERSION" "PrometheusRule,PodMonitor"
check "no PrometheusRule, PodMonitor, dashboard or NetworkPolicy by default" py no_monitoring "$WORK/default.yaml"
check "values schema names a misspelled nested key (metrics.prometheusRule.enabeld)" \
  fails_with "additional properties 'enabeld' not allowed" --set metrics.prometheusRule.enabeld=true
check "values schema names a misspelled key (networkPolicy.enable)" \
  fails_with "additional properties 'enable' not allowed" --set networkPolicy.enable=true
check "values schema rejects a namespace name that is not a DNS label in watchNamespaces" \
  fails_with "watchNamespaces" --set 'watchNamespaces={Factory_1}'
check "values schema rejects an unknown alert in metrics.prometheusRule.disabled" \
  fails_with "disabled" --set 'metrics.prometheusRule.disabled={EdgewireNoSuchAlert}'
gitops_docs() { # the yaml blocks of docs/gitops.md parse and their Helm values render the chart
  mkdir -p "$WORK/gitops"
  py gitops_blocks "$1" "$WORK/gitops" || return 1
  local f
  for f in "$WORK/gitops"/values-*.yaml; do
    "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$K8S_VERSION" -f "$f" >/dev/null \
      || return 1
  done
}
check "docs/gitops.md: Flux HelmRelease, Kustomization, Argo CD Application parse; their values render the chart" \
  gitops_docs "$ROOT/docs/gitops.md"
gitops_docs_catch_a_typo() {
  sed 's/^    replicaCount: 2$/    replicaCuont: 2/' "$ROOT/docs/gitops.md" >"$WORK/gitops-typo.md"
  ! cmp -s "$ROOT/docs/gitops.md" "$WORK/gitops-typo.md" || { echo "sed changed nothing"; return 1; }
  rm -rf "$WORK/gitops"
  if gitops_docs "$WORK/gitops-typo.md" 2>&1; then
    echo "a HelmRelease with replicaCuont passed"
    return 1
  fi
}
check "docs/gitops.md check fails on a misspelled values key (self-test)" gitops_docs_catch_a_typo

# --- samples ------------------------------------------------------------------------------------
check "samples: one per self-hosted family and per external adapter" py samples_cover "$SAMPLES"
check "sample check rejects an unknown field, a bad enum value, a missing Secret, naming each (self-test)" sample_validator_catches_typos
check "checks fail under PYTHONOPTIMIZE=2 too (self-test)" checks_survive_pythonoptimize
for f in "$SAMPLES"/*.yaml; do
  b="$(basename "$f")"
  check "sample $b: namespace factory, CRD schema, referenced Secrets present" \
    py sample "$f" "$CHART/templates/crds" factory
  # Edgewire kinds are custom resources: no upstream schema (validated against the CRD above).
  custom_kind="$(grep -m1 -oE '^kind: (EventBroker|MqttBroker|BridgeLink)' "$f" | cut -d' ' -f2)"
  check "sample $b: kubernetes-validate $K8S_VERSION --strict" py validate "$f" "$K8S_VERSION" "$custom_kind"
done

# --- one version: workspace, chart appVersion, default image tags, make image ---------------------
versions() { # versions CHART_YAML IMAGES_RS: the version agreement, with these two files as given
  py versions "$ROOT/Cargo.toml" "$1" "$CHART/values.yaml" "$WORK/default.yaml" "$2" "$ROOT/hack/image/build.sh"
}
IMAGES_RS="$ROOT/operator/src/context.rs"
version_check_catches_drift() {
  sed 's/^appVersion:.*/appVersion: "9.9.9"/' "$CHART/Chart.yaml" >"$WORK/Chart-drift.yaml"
  sed 's|"ghcr.io/edgewire/edgewire-agent:{}"|"ghcr.io/edgewire/agent:{}"|' "$IMAGES_RS" >"$WORK/images-drift.rs"
  ! cmp -s "$CHART/Chart.yaml" "$WORK/Chart-drift.yaml" || { echo "sed changed nothing in Chart.yaml"; return 1; }
  ! cmp -s "$IMAGES_RS" "$WORK/images-drift.rs" || { echo "sed changed nothing in $IMAGES_RS"; return 1; }
  if versions "$WORK/Chart-drift.yaml" "$IMAGES_RS"; then
    echo "appVersion 9.9.9 passed the version check"
    return 1
  fi
  if versions "$CHART/Chart.yaml" "$WORK/images-drift.rs"; then
    echo "Settings::default() naming another repository passed the version check"
    return 1
  fi
}
check "Cargo.toml workspace version = Chart appVersion = default image tags (values, render, Settings::default, make image)" \
  versions "$CHART/Chart.yaml" "$IMAGES_RS"
check "version check rejects an appVersion or a default agent image that differs (self-test)" version_check_catches_drift

echo "chart: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
