//! What GitOps tools make of Edgewire's resources, asked of the tools' own code on live objects of the real
//! control plane: kstatus (`sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute`, what Flux's health checks
//! run) and the Argo CD health checks of `argocd/resource_customizations/edgewire.dev/<Kind>/health.lua`
//! run in gopher-lua (the interpreter Argo CD embeds), both through `edgewire-kstatus` (hack/kstatus, a Go
//! module built by `hack/kstatus/build.sh`, a no-op when built).
//!
//! Per kind: `InProgress`/`Progressing` right after apply (`status.observedGeneration` is the CRD's default
//! -1 until the operator writes), `Current`/`Healthy` once Ready, `Failed`/`Degraded` on an invalid spec and
//! on a missing Secret (`Stalled=True`), `InProgress`/`Progressing` again right after a spec change (the
//! patch's own response: generation ahead of observedGeneration) and while the operator rolls the change out
//! (`Reconciling=True`), and `Terminating` while a finalizer holds a deletion (the SNS EventBroker with
//! `deletionPolicy: Delete`, AWS played by moto).
//!
//! Every object a check saw is written to the test's directory; with `EDGEWIRE_E2E_ARGOCD_CAPTURE=DIR`
//! (e.g. `argocd/resource_customizations/edgewire.dev`) also as `DIR/<Kind>/testdata/<state>.yaml` with the
//! verdicts asserted here as `DIR/<Kind>/health_test.yaml`: the committed testdata are such a capture, and
//! [`argocd_health_checks_pass_their_tests_on_captured_objects`] runs them.

use crate::support::manifests::{eventbroker_with_spec, nats_deployed, token_secret};
use crate::support::pod::HostPod;
use crate::support::{
    Cluster, Operator, TIMEOUT, agent_bin, condition, status_summary, workspace_root,
};
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// `edgewire-kstatus`, built by `hack/kstatus/build.sh` (once per test process).
fn kstatus_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = workspace_root().join("hack/kstatus/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed (it needs go: make deps)",
            script.display()
        );
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        PathBuf::from(dir).join("edgewire-kstatus")
    })
}

/// The directory of the Argo CD health checks.
fn checks_dir() -> PathBuf {
    workspace_root().join("argocd/resource_customizations")
}

/// (status, message) `edgewire-kstatus <args>` prints for `obj`.
fn verdict(args: &[&str], obj: &Value) -> (String, String) {
    let mut child = Command::new(kstatus_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("edgewire-kstatus starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(obj.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "edgewire-kstatus {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "edgewire-kstatus printed no JSON line ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (
        line["status"].as_str().unwrap_or("").to_string(),
        line["message"].as_str().unwrap_or("").to_string(),
    )
}

/// What kstatus says of `obj`.
fn kstatus(obj: &Value) -> (String, String) {
    verdict(&["status"], obj)
}

/// What the Argo CD health check of `obj`'s kind says of it.
fn argocd(obj: &Value) -> (String, String) {
    let dir = checks_dir();
    verdict(&["argocd-health", "--dir", dir.to_str().unwrap()], obj)
}

/// `reason: message` of the condition `type_` of `obj` (what the health check shows for it).
fn said(obj: &Value, type_: &str) -> String {
    let c = condition(obj, type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {}", status_summary(obj)));
    format!(
        "{}: {}",
        c["reason"].as_str().unwrap_or(""),
        c["message"].as_str().unwrap_or("")
    )
}

/// The verdicts a test saw for one kind, written out as Argo CD testdata when asked.
struct Seen<'a> {
    cluster: &'a Cluster,
    kind: &'static str,
    /// (state, object, Argo CD status, Argo CD message)
    cases: Vec<(String, Value, String, String)>,
}

impl<'a> Seen<'a> {
    fn new(cluster: &'a Cluster, kind: &'static str) -> Self {
        Seen {
            cluster,
            kind,
            cases: Vec::new(),
        }
    }

    /// Asserts that kstatus says `want_kstatus` and the Argo CD check `want_argocd` of `obj` (in `state`),
    /// records it, and returns (kstatus message, Argo CD message).
    fn check(
        &mut self,
        state: &str,
        obj: &Value,
        want_kstatus: &str,
        want_argocd: &str,
    ) -> (String, String) {
        assert_eq!(
            obj["kind"], self.kind,
            "{state}: not a {}: {obj}",
            self.kind
        );
        let file = self
            .cluster
            .dir()
            .join(format!("{}-{state}.json", self.kind));
        std::fs::write(&file, serde_json::to_vec_pretty(obj).unwrap()).unwrap();
        let (ks, kmsg) = kstatus(obj);
        let (argo, amsg) = argocd(obj);
        println!(
            "{} {state}: kstatus {ks} ({kmsg}); Argo CD {argo} ({amsg})",
            self.kind
        );
        assert_eq!(
            (ks.as_str(), argo.as_str()),
            (want_kstatus, want_argocd),
            "{} {state}: (kstatus, Argo CD) with messages ({kmsg:?}, {amsg:?}) for {}",
            self.kind,
            status_summary(obj)
        );
        self.cases
            .push((state.to_string(), obj.clone(), argo, amsg.clone()));
        (kmsg, amsg)
    }

    /// With `EDGEWIRE_E2E_ARGOCD_CAPTURE=DIR`: `DIR/<Kind>/testdata/<state>.yaml` (the object without
    /// managedFields) and `DIR/<Kind>/health_test.yaml`.
    fn capture(self) {
        let Some(dir) = std::env::var_os("EDGEWIRE_E2E_ARGOCD_CAPTURE").filter(|d| !d.is_empty())
        else {
            return;
        };
        let dir = PathBuf::from(dir).join(self.kind);
        std::fs::create_dir_all(dir.join("testdata")).unwrap();
        let mut tests = String::from("tests:\n");
        for (state, mut obj, status, message) in self.cases {
            if let Some(meta) = obj["metadata"].as_object_mut() {
                meta.remove("managedFields");
                if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
                    a.remove("kubectl.kubernetes.io/last-applied-configuration");
                    if a.is_empty() {
                        meta.remove("annotations");
                    }
                }
            }
            // JSON is YAML; Argo CD's test harness reads either.
            let path = format!("testdata/{state}.yaml");
            std::fs::write(
                dir.join(&path),
                serde_json::to_string_pretty(&obj).unwrap() + "\n",
            )
            .unwrap();
            tests.push_str(&format!(
                "- healthStatus:\n    status: {status}\n    message: {}\n  inputPath: {path}\n",
                serde_json::to_string(&message).unwrap()
            ));
        }
        std::fs::write(dir.join("health_test.yaml"), tests).unwrap();
    }
}

/// `kubectl <args> -o json -f -` with `yaml`: the object of the API server's answer (a create, an apply).
fn apply_json(cluster: &Cluster, yaml: &str) -> Value {
    let out = cluster.kubectl_stdin(&["apply", "-o", "json"], yaml);
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kubectl apply -o json prints the object")
}

/// `kubectl patch <resource> --type=json -p <patch> -o json`: the object of the API server's answer.
fn patch_json(cluster: &Cluster, ns: &str, resource: &str, patch: &str) -> Value {
    let out = cluster.kubectl_ok(&[
        "-n",
        ns,
        "patch",
        resource,
        "--type=json",
        "-p",
        patch,
        "-o",
        "json",
    ]);
    serde_json::from_str(&out).expect("kubectl patch -o json prints the object")
}

/// Watches `plural/name` in `ns` from `resource_version` (every version the API server stores after it,
/// none missed) until `pred` holds for one; returns that version.
fn watch_until(
    cluster: &Cluster,
    ns: &str,
    plural: &str,
    name: &str,
    resource_version: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!(
        "/apis/edgewire.dev/v1alpha1/namespaces/{ns}/{plural}?watch=true&resourceVersion={resource_version}\
         &fieldSelector=metadata.name%3D{name}&timeoutSeconds={}",
        TIMEOUT.as_secs()
    );
    let mut child = cluster
        .control_plane()
        .kubectl_command(&["get", "--raw", &path])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl get --raw starts");
    let mut seen = Vec::new();
    let mut found = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(line) = line else { break };
        let Ok(event) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let obj = &event["object"];
        if pred(obj) {
            found = Some(obj.clone());
            break;
        }
        seen.push(format!("{} {}", event["type"], status_summary(obj)));
    }
    let _ = child.kill();
    let _ = child.wait();
    found.unwrap_or_else(|| {
        panic!(
            "{plural}/{name}: no version {what} within {TIMEOUT:?}; the watch saw:\n{}",
            seen.join("\n")
        )
    })
}

/// Waits for `kubectl wait --for=condition=<cond>` and returns the object.
fn wait_condition(cluster: &Cluster, op: &Operator, ns: &str, resource: &str, cond: &str) -> Value {
    cluster.wait(ns, resource, &format!("condition={cond}"), TIMEOUT, || {
        op.log_tail()
    });
    let (kind, name) = resource.split_once('/').unwrap();
    cluster.get_json(ns, kind, name)
}

fn generation_message(kind: &str, generation: i64, observed: i64) -> (String, String) {
    (
        format!("{kind} generation is {generation}, but latest observed generation is {observed}"),
        format!("Waiting for the operator to observe generation {generation}"),
    )
}

/// The states a resource goes through after `kubectl apply`: new, Ready, Stalled (missing Secret, invalid
/// spec), a spec change and its rollout.
#[test]
fn eventbroker_kstatus_and_argocd_health_follow_its_lifecycle() {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-kstatus-eb");
    let op = Operator::start(&cluster, &ns, "op-kstatus-eb");
    let mut seen = Seen::new(&cluster, "EventBroker");
    cluster.apply_yaml(&token_secret(&ns, "nats-auth", "first-token"));

    let new = apply_json(&cluster, &nats_deployed(&ns, "events", "nats-auth", 1));
    let msgs = seen.check("progressing-new", &new, "InProgress", "Progressing");
    assert_eq!(msgs, generation_message("EventBroker", 1, -1));

    let ready = wait_condition(&cluster, &op, &ns, "eventbroker/events", "Ready");
    let (kmsg, amsg) = seen.check("healthy", &ready, "Current", "Healthy");
    assert_eq!(kmsg, "Resource is Ready");
    assert_eq!(
        amsg,
        condition(&ready, "Ready").unwrap()["message"]
            .as_str()
            .unwrap()
    );

    // A spec change: the patch's answer already has the new generation, not yet observed.
    let changed = patch_json(
        &cluster,
        &ns,
        "eventbroker/events",
        r#"[{"op":"replace","path":"/spec/publisher/replicas","value":2}]"#,
    );
    let msgs = seen.check(
        "progressing-generation",
        &changed,
        "InProgress",
        "Progressing",
    );
    assert_eq!(msgs, generation_message("EventBroker", 2, 1));
    // Then the operator observes it and says it rolls the publisher out (its apply of the Deployment
    // answers with a generation the Deployment controller has not seen): Reconciling=True at generation 2.
    let rolling = watch_until(
        &cluster,
        &ns,
        "eventbrokers",
        "events",
        changed["metadata"]["resourceVersion"].as_str().unwrap(),
        "with Reconciling=True at generation 2",
        |o| {
            o["status"]["observedGeneration"] == 2
                && condition(o, "Reconciling").is_some_and(|c| c["status"] == "True")
        },
    );
    let (kmsg, amsg) = seen.check(
        "progressing-reconciling",
        &rolling,
        "InProgress",
        "Progressing",
    );
    let reconciling = condition(&rolling, "Reconciling").unwrap();
    assert_eq!(kmsg, reconciling["message"].as_str().unwrap());
    assert_eq!(amsg, said(&rolling, "Reconciling"));
    assert!(amsg.contains("publisher replicas"), "{amsg}");
    assert_eq!(reconciling["observedGeneration"], 2);
    let ready = wait_condition(&cluster, &op, &ns, "eventbroker/events", "Ready");
    assert_eq!(kstatus(&ready).0, "Current");

    // A missing Secret: Stalled, Failed, Degraded.
    apply_json(&cluster, &nats_deployed(&ns, "no-secret", "absent", 1));
    let stalled = wait_condition(&cluster, &op, &ns, "eventbroker/no-secret", "Stalled");
    let (kmsg, amsg) = seen.check("degraded-secret-missing", &stalled, "Failed", "Degraded");
    assert_eq!(amsg, said(&stalled, "Stalled"));
    assert!(
        amsg.starts_with("SecretMissing: ") && amsg.contains("absent"),
        "{amsg}"
    );
    assert_eq!(kmsg, condition(&stalled, "Stalled").unwrap()["message"]);
    assert_eq!(condition(&stalled, "Ready").unwrap()["status"], "False");
    assert_eq!(
        condition(&stalled, "Reconciling").unwrap()["status"],
        "False"
    );

    // An invalid spec (one the schema cannot refuse): Stalled InvalidSpec.
    apply_json(
        &cluster,
        &eventbroker_with_spec(
            &ns,
            "invalid",
            "  adapter: nats\n  nats:\n    auth:\n      token: {name: nats-auth, key: token}\n",
        ),
    );
    let invalid = wait_condition(&cluster, &op, &ns, "eventbroker/invalid", "Stalled");
    let (_, amsg) = seen.check("degraded-invalid-spec", &invalid, "Failed", "Degraded");
    assert!(
        amsg.starts_with("InvalidSpec: ") && amsg.contains("spec.nats.urls"),
        "{amsg}"
    );
    seen.capture();
}

#[test]
fn mqttbroker_kstatus_and_argocd_health_follow_its_lifecycle() {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-kstatus-mqb");
    let op = Operator::start(&cluster, &ns, "op-kstatus-mqb");
    let mut seen = Seen::new(&cluster, "MqttBroker");
    cluster.apply_yaml(&format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: pool-a-creds, namespace: {ns}}}\nstringData: {{password: first-password}}\n"
    ));
    let mqb = |name: &str, secret: &str, user: &str| {
        format!(
            "apiVersion: edgewire.dev/v1alpha1\nkind: MqttBroker\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  type: builtin\n  builtin:\n    users:\n      - {{name: {user}, password: {{name: {secret}, key: password}}}}\n"
        )
    };

    let new = apply_json(&cluster, &mqb("workers", "pool-a-creds", "pool-a"));
    let msgs = seen.check("progressing-new", &new, "InProgress", "Progressing");
    assert_eq!(msgs, generation_message("MqttBroker", 1, -1));

    let ready = wait_condition(&cluster, &op, &ns, "mqttbroker/workers", "Ready");
    let (kmsg, amsg) = seen.check("healthy", &ready, "Current", "Healthy");
    assert_eq!(kmsg, "Resource is Ready");
    assert_eq!(
        amsg,
        condition(&ready, "Ready").unwrap()["message"]
            .as_str()
            .unwrap()
    );

    let changed = patch_json(
        &cluster,
        &ns,
        "mqttbroker/workers",
        r#"[{"op":"add","path":"/spec/builtin/users/-","value":{"name":"pool-b"}}]"#,
    );
    let msgs = seen.check(
        "progressing-generation",
        &changed,
        "InProgress",
        "Progressing",
    );
    assert_eq!(msgs, generation_message("MqttBroker", 2, 1));
    let ready = wait_condition(&cluster, &op, &ns, "mqttbroker/workers", "Ready");
    assert_eq!(kstatus(&ready).0, "Current");
    assert_eq!(ready["status"]["observedGeneration"], 2);

    apply_json(&cluster, &mqb("no-secret", "absent", "pool-a"));
    let stalled = wait_condition(&cluster, &op, &ns, "mqttbroker/no-secret", "Stalled");
    let (kmsg, amsg) = seen.check("degraded-secret-missing", &stalled, "Failed", "Degraded");
    assert_eq!(amsg, said(&stalled, "Stalled"));
    assert!(
        amsg.starts_with("SecretMissing: ") && amsg.contains("absent"),
        "{amsg}"
    );
    assert_eq!(kmsg, condition(&stalled, "Stalled").unwrap()["message"]);

    // A user name the operator reserves for its metrics sidecar: a rule the schema does not know.
    apply_json(
        &cluster,
        &mqb("invalid", "pool-a-creds", "edgewire-sidecar"),
    );
    let invalid = wait_condition(&cluster, &op, &ns, "mqttbroker/invalid", "Stalled");
    let (_, amsg) = seen.check("degraded-invalid-spec", &invalid, "Failed", "Degraded");
    assert!(
        amsg.starts_with("InvalidSpec: ") && amsg.contains("spec.builtin.users[0].name"),
        "{amsg}"
    );
    seen.capture();
}

fn bridgelink(ns: &str, name: &str, edge: u16, cloud: u16, extra: &str) -> String {
    format!(
        r#"apiVersion: edgewire.dev/v1alpha1
kind: BridgeLink
metadata: {{name: {name}, namespace: {ns}}}
spec:
  siteId: {name}
  edge:
    endpoint: {{protocol: mqtt, url: "127.0.0.1:{edge}"{extra}}}
  cloud:
    endpoint: {{protocol: nats, url: "nats://127.0.0.1:{cloud}"}}
  rules:
    - {{direction: EdgeToCloud, from: "local.telemetry.#", to: "edge.{name}.telemetry.#"}}
  spool: {{size: 1Gi, maxBytes: 512Mi}}
"#
    )
}

/// The BridgeLink is Ready only once its agent (run on the host from the pod's spec) reports both brokers
/// connected; until its first report it is Reconciling; a cloud outage after that is `Ready=False` without
/// Reconciling or Stalled: kstatus `InProgress` (its reading of Ready=False), Argo CD `Degraded`.
#[test]
fn bridgelink_kstatus_and_argocd_health_follow_its_lifecycle() {
    let edge = BrokerProcess::start(
        Kind::Mosquitto,
        "listener {port} 127.0.0.1\nallow_anonymous true\n",
        &[],
    )
    .expect("mosquitto");
    let mut cloud =
        BrokerProcess::start(Kind::Nats, "listen: 127.0.0.1:{port}\n", &[]).expect("nats-server");
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-kstatus-bl");
    let op = Operator::start(&cluster, &ns, "op-kstatus-bl");
    let mut seen = Seen::new(&cluster, "BridgeLink");

    let new = apply_json(
        &cluster,
        &bridgelink(&ns, "site-k", edge.port(), cloud.port(), ""),
    );
    let msgs = seen.check("progressing-new", &new, "InProgress", "Progressing");
    assert_eq!(msgs, generation_message("BridgeLink", 1, -1));

    // Observed, but no agent report yet: Reconciling.
    let waiting = wait_condition(&cluster, &op, &ns, "bridgelink/site-k", "Reconciling");
    let (_, amsg) = seen.check(
        "progressing-reconciling",
        &waiting,
        "InProgress",
        "Progressing",
    );
    assert_eq!(amsg, said(&waiting, "Reconciling"));

    cluster.wait(
        &ns,
        "statefulset.apps/site-k-bridge",
        "jsonpath={.status.readyReplicas}=1",
        TIMEOUT,
        || op.log_tail(),
    );
    let sts = cluster.get_json(&ns, "statefulset.apps", "site-k-bridge");
    let agent = HostPod::start(&cluster, &ns, &sts, "bridge", &agent_bin());
    cluster.wait(&ns, "bridgelink/site-k", "condition=Ready", TIMEOUT, || {
        format!("{}\n{}", agent.log_tail(), op.log_tail())
    });
    let ready = cluster.get_json(&ns, "bridgelink", "site-k");
    let (kmsg, amsg) = seen.check("healthy", &ready, "Current", "Healthy");
    assert_eq!(kmsg, "Resource is Ready");
    assert_eq!(
        amsg,
        condition(&ready, "Ready").unwrap()["message"]
            .as_str()
            .unwrap()
    );

    // The cloud goes away: what runs does not work, nothing to roll out, nothing to change in the spec.
    cloud.stop();
    cluster.wait(
        &ns,
        "bridgelink/site-k",
        "condition=CloudConnected=False",
        TIMEOUT,
        || format!("{}\n{}", agent.log_tail(), op.log_tail()),
    );
    let cut = cluster.get_json(&ns, "bridgelink", "site-k");
    let (_, amsg) = seen.check(
        "degraded-cloud-disconnected",
        &cut,
        "InProgress",
        "Degraded",
    );
    assert_eq!(amsg, said(&cut, "Ready"));
    assert!(amsg.starts_with("NotReady: CloudConnected: "), "{amsg}");
    assert_eq!(condition(&cut, "Reconciling").unwrap()["status"], "False");
    assert_eq!(condition(&cut, "Stalled").unwrap()["status"], "False");

    let changed = patch_json(
        &cluster,
        &ns,
        "bridgelink/site-k",
        r#"[{"op":"replace","path":"/spec/spool/maxBytes","value":"256Mi"}]"#,
    );
    let msgs = seen.check(
        "progressing-generation",
        &changed,
        "InProgress",
        "Progressing",
    );
    assert_eq!(msgs, generation_message("BridgeLink", 2, 1));
    drop(agent);

    apply_json(
        &cluster,
        &bridgelink(
            &ns,
            "no-secret",
            edge.port(),
            cloud.port(),
            ", auth: {token: {name: absent, key: token}}",
        ),
    );
    let stalled = wait_condition(&cluster, &op, &ns, "bridgelink/no-secret", "Stalled");
    let (kmsg, amsg) = seen.check("degraded-secret-missing", &stalled, "Failed", "Degraded");
    assert_eq!(amsg, said(&stalled, "Stalled"));
    assert!(
        amsg.starts_with("SecretMissing: ") && amsg.contains("absent"),
        "{amsg}"
    );
    assert_eq!(kmsg, condition(&stalled, "Stalled").unwrap()["message"]);

    // Rules that loop (cloud to edge into what goes edge to cloud): InvalidSpec.
    let looping = bridgelink(&ns, "looping", edge.port(), cloud.port(), "").replace(
        "  spool:",
        "    - {direction: CloudToEdge, from: \"cloud.commands.#\", to: \"local.telemetry.cmd.#\"}\n  spool:",
    );
    apply_json(&cluster, &looping);
    let invalid = wait_condition(&cluster, &op, &ns, "bridgelink/looping", "Stalled");
    let (_, amsg) = seen.check("degraded-invalid-spec", &invalid, "Failed", "Degraded");
    assert!(amsg.starts_with("InvalidSpec: "), "{amsg}");
    seen.capture();
}

/// An SNS EventBroker with `deletionPolicy: Delete` carries the cleanup finalizer: the answer to its DELETE
/// is the object with a deletionTimestamp, which kstatus calls `Terminating` (Argo CD shows any object being
/// deleted as Progressing "Pending deletion" before it runs a health check).
#[test]
fn a_deletion_held_by_the_finalizer_is_terminating() {
    let moto = BrokerProcess::start_default(Kind::Moto).expect("moto_server starts");
    let url = moto.url();
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-kstatus-del");
    let op = Operator::start(&cluster, &ns, "op-kstatus-del");
    cluster.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: aws-creds, namespace: {ns}}}
stringData: {{AWS_ACCESS_KEY_ID: AKIAE2E, AWS_SECRET_ACCESS_KEY: e2e-secret}}
---
apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata: {{name: events, namespace: {ns}}}
spec:
  adapter: aws_sns
  awsSns:
    region: us-east-1
    provision: true
    endpoint: {url}
    credentials: {{secretName: aws-creds}}
  deletionPolicy: Delete
"#
    ));
    let eb = wait_condition(&cluster, &op, &ns, "eventbroker/events", "Ready");
    assert_eq!(eb["metadata"]["finalizers"][0], "edgewire.dev/cleanup");
    assert_eq!(kstatus(&eb).0, "Current", "{}", status_summary(&eb));

    let out = cluster.kubectl_ok(&[
        "delete",
        "--raw",
        &format!("/apis/edgewire.dev/v1alpha1/namespaces/{ns}/eventbrokers/events"),
    ]);
    let deleting: Value = serde_json::from_str(&out).expect("the DELETE answers with the object");
    assert!(
        deleting["metadata"]["deletionTimestamp"].is_string(),
        "the finalizer holds the deletion: {deleting}"
    );
    let (status, message) = kstatus(&deleting);
    println!("EventBroker terminating: kstatus {status} ({message})");
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("Terminating", "Resource scheduled for deletion")
    );
    op.wait("the EventBroker to be gone", || {
        match cluster.get(&ns, "eventbroker", "events") {
            None => Ok(()),
            Some(eb) => Err(status_summary(&eb)),
        }
    });
}

/// The committed Argo CD testdata (captures of the tests above) give the verdicts of their health_test.yaml
/// in gopher-lua, every check has cases, and every testdata file is some case's input (`edgewire-kstatus
/// argocd-test`, Argo CD's own test format).
#[test]
fn argocd_health_checks_pass_their_tests_on_captured_objects() {
    let dir = checks_dir();
    let out = Command::new(kstatus_bin())
        .args(["argocd-test", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in ["EventBroker", "MqttBroker", "BridgeLink"] {
        for state in [
            "progressing-new",
            "progressing-generation",
            "healthy",
            "degraded-secret-missing",
            "degraded-invalid-spec",
        ] {
            let case = format!("edgewire.dev/{kind} testdata/{state}.yaml");
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with(&format!("ok   {case}:"))),
                "no passing case {case}:\n{stdout}"
            );
        }
    }
}

/// docs/gitops.md ships the health checks as the `argocd-cm` snippet: each
/// `resource.customizations.health.edgewire.dev_<Kind>` value is that kind's health.lua, byte for byte.
#[test]
fn the_argocd_cm_snippet_in_the_docs_is_the_health_checks() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/gitops.md")).unwrap();
    for kind in ["EventBroker", "MqttBroker", "BridgeLink"] {
        let lua =
            std::fs::read_to_string(checks_dir().join(format!("edgewire.dev/{kind}/health.lua")))
                .unwrap();
        let key = format!("  resource.customizations.health.edgewire.dev_{kind}: |");
        let mut lines = doc.lines().skip_while(|l| *l != key);
        assert!(lines.next().is_some(), "docs/gitops.md has no line {key:?}");
        // The block scalar: the lines indented by four spaces (blank lines inside it included).
        let mut block: Vec<&str> = lines
            .take_while(|l| l.starts_with("    ") || l.is_empty())
            .map(|l| l.strip_prefix("    ").unwrap_or(""))
            .collect();
        while block.last() == Some(&"") {
            block.pop();
        }
        let snippet = block.join("\n") + "\n";
        assert_eq!(
            snippet, lua,
            "docs/gitops.md's {kind} health check differs from argocd/resource_customizations/edgewire.dev/{kind}/health.lua"
        );
    }
}
