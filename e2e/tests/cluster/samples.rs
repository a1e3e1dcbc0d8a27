//! Every file in `config/samples/` on the real control plane, from apply to namespace deletion, with the
//! real operator under the chart's ServiceAccount:
//!
//! 1. **Apply**: each file applies with `kubectl apply --server-side`, and the operator reconciles each
//!    resource: `status.observedGeneration` reaches `metadata.generation`, the spec is not `InvalidSpec` (a
//!    sample must be valid) and its referenced Secrets are found (a sample ships them).
//! 2. **Ready**: every EventBroker and MqttBroker that needs no cloud passes `kubectl wait
//!    --for=condition=Ready` — the real Deployment and StatefulSet controllers, the volume provisioner and
//!    kwok made its workloads ready; no test writes a workload's status. A BridgeLink's workload becomes
//!    ready the same way, and its `Ready` then waits only for the bridge agent's report (the samples point at
//!    example hosts no agent here can reach; the real agent's report is proven in the bridgelink scenarios).
//! 3. **PodSecurity**: the namespace enforces `restricted`, and every workload of the operator has all its
//!    Pods — created by the ReplicaSet and StatefulSet controllers, so admitted — while a pod template that
//!    breaks `restricted` gets none (the check can fail).
//! 4. **RBAC**: the operator's log holds no `forbidden`.
//! 5. **No drift**: re-applying every sample and restarting the operator changes nothing: the
//!    `metadata.generation` and `resourceVersion` of every resource and of every other object in the
//!    namespace (children, their claims, the samples' Secrets) stay the same for 30 s after the restarted
//!    operator reconciled everything again.
//! 6. **Namespace deletion**: deleting the namespace, which holds every kind (and cloud resources with
//!    `deletionPolicy: Delete` whose cleanup cannot reach AWS or GCP from here), finishes: nothing hangs on
//!    a finalizer. The cleanups that cannot run end with a `CleanupAbandoned` Warning Event (the Secrets
//!    with their credentials went with the namespace), recorded in the operator's own namespace because
//!    the terminating one refuses new Events.
//! 7. **The chart's rules are what is used**: the kube-apiserver's audit log of the chart's ServiceAccount
//!    shows no refused request, and lists the grants no request used ([`crate::rbac::audit_report`]).
//!
//! A BridgeLink sample may reference a broker of another sample (`brokerRef`): it is waited on until its
//! credentials resolve, which needs that broker reconciled first.

use crate::support::{
    Cluster, Operator, TIMEOUT, at, condition, condition_status, generations, status_summary,
    str_at, wait_for, workspace_root,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Kinds `edgewire-operator` reconciles.
const HANDLED: &[&str] = &["EventBroker", "MqttBroker", "BridgeLink"];

/// What "every object in the namespace" means for the drift check: the resources and everything the
/// operator or the controllers under it keep (Pods and ReplicaSets are the controllers' own business).
const DRIFT_RESOURCES: &str = "eventbrokers.edgewire.dev,mqttbrokers.edgewire.dev,bridgelinks.edgewire.dev,\
statefulsets.apps,deployments.apps,services,secrets,serviceaccounts,configmaps,persistentvolumeclaims,\
roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io";

/// How long nothing may change after the re-apply and the restart.
const QUIET: Duration = Duration::from_secs(30);

/// The objects in a manifest file, as kubectl parses it (`kubectl create --dry-run=client -o json`).
fn objects(cluster: &Cluster, file: &str) -> Vec<Value> {
    let out = cluster.kubectl_ok(&["create", "-f", file, "--dry-run=client", "-o", "json"]);
    // One JSON document per object, concatenated (or a List).
    let mut objs = Vec::new();
    for v in serde_json::Deserializer::from_str(&out).into_iter::<Value>() {
        let v = v.unwrap_or_else(|e| panic!("{file}: kubectl output is not JSON: {e}\n{out}"));
        match v["items"].as_array() {
            Some(items) if v["kind"] == "List" => objs.extend(items.iter().cloned()),
            _ => objs.push(v),
        }
    }
    objs
}

/// `kubectl apply --server-side -f <file>` of every file; panics unless each succeeds.
fn apply_all(cluster: &Cluster, files: &[String]) {
    for f in files {
        let out = cluster.kubectl(&["apply", "--server-side", "-f", f]);
        assert!(
            out.status.success(),
            "kubectl apply --server-side -f {f} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// `Kind/name` → (generation, resourceVersion) of every object of [`DRIFT_RESOURCES`] in `ns`, but for the
/// objects (and their children) whose uid is in `skip`.
fn versions(
    cluster: &Cluster,
    ns: &str,
    skip: &BTreeSet<String>,
) -> BTreeMap<String, (i64, String)> {
    cluster
        .list(ns, DRIFT_RESOURCES, "")
        .iter()
        .filter(|o| {
            let own = str_at(o, "/metadata/uid");
            let owners = at(o, "/metadata/ownerReferences")
                .as_array()
                .cloned()
                .unwrap_or_default();
            !skip.contains(own)
                && !owners
                    .iter()
                    .any(|r| skip.contains(r["uid"].as_str().unwrap_or("")))
        })
        .map(|o| {
            (
                format!("{}/{}", str_at(o, "/kind"), str_at(o, "/metadata/name")),
                (
                    at(o, "/metadata/generation").as_i64().unwrap_or(0),
                    str_at(o, "/metadata/resourceVersion").to_string(),
                ),
            )
        })
        .collect()
}

/// What differs between two [`versions`] snapshots, one line per object.
fn diff(
    before: &BTreeMap<String, (i64, String)>,
    now: &BTreeMap<String, (i64, String)>,
) -> Vec<String> {
    let keys: BTreeSet<&String> = before.keys().chain(now.keys()).collect();
    keys.into_iter()
        .filter_map(|k| match (before.get(k), now.get(k)) {
            (Some(a), Some(b)) if a == b => None,
            (a, b) => Some(format!("{k}: (generation, resourceVersion) {a:?} -> {b:?}")),
        })
        .collect()
}

#[test]
fn every_sample_applies_becomes_ready_does_not_drift_and_its_namespace_deletes() {
    let cluster = Cluster::start();
    let cp = cluster.control_plane();
    let dir = workspace_root().join("config/samples");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no samples in {}", dir.display());

    // (file, kind, namespace, name) of every object.
    let mut all: Vec<(String, String, String, String)> = Vec::new();
    // iotcore MqttBrokers and EventBrokers provisioning SNS or Pub/Sub topics, by (namespace, name): they
    // call AWS or GCP, which is not reachable here.
    let mut needs_cloud: BTreeSet<(String, String)> = BTreeSet::new();
    for f in &files {
        let objs = objects(&cluster, f);
        assert!(!objs.is_empty(), "{f}: no objects");
        for o in objs {
            let ns = str_at(&o, "/metadata/namespace");
            let ns = if ns.is_empty() { "default" } else { ns };
            let provisions = ["/spec/awsSns/provision", "/spec/googlePubsub/provision"]
                .iter()
                .any(|p| o.pointer(p).and_then(Value::as_bool).unwrap_or(false));
            if (str_at(&o, "/kind") == "MqttBroker" && str_at(&o, "/spec/type") == "iotcore")
                || (str_at(&o, "/kind") == "EventBroker" && provisions)
            {
                needs_cloud.insert((ns.into(), str_at(&o, "/metadata/name").into()));
            }
            all.push((
                f.clone(),
                str_at(&o, "/kind").into(),
                ns.into(),
                str_at(&o, "/metadata/name").into(),
            ));
        }
    }
    // One namespace, so that the operator watches only the samples: the other scenarios share the control
    // plane, and an operator watching every namespace would reconcile their resources too.
    let namespaces: BTreeSet<&str> = all.iter().map(|o| o.2.as_str()).collect();
    let [ns] = namespaces.iter().copied().collect::<Vec<_>>()[..] else {
        panic!("the samples use the namespaces {namespaces:?}; keep them in one");
    };
    let ns = ns.to_string();
    cluster.ensure_namespace(&ns);
    let mut op = Operator::start(&cluster, &ns, "op-samples");

    // 1. Apply, reconcile.
    let t = Instant::now();
    apply_all(&cluster, &files);
    let mut skipped = Vec::new();
    let mut problems = Vec::new();
    let mut reconciled: Vec<(String, String)> = Vec::new();
    for (file, kind, ns, name) in &all {
        if kind == "Secret" || kind == "ConfigMap" {
            continue;
        }
        assert!(
            HANDLED.contains(&kind.as_str()),
            "{file}: {kind} is not a kind the operator reconciles"
        );
        let resource = kind.to_lowercase();
        let obj = op.wait(
            &format!("{kind} {ns}/{name} from {file} to be reconciled"),
            || {
                let obj = cluster.get(ns, &resource, name).ok_or("absent")?;
                let (generation, observed) = generations(&obj);
                // A BridgeLink's brokerRef resolves once the referenced broker's controller ran.
                let settled = kind != "BridgeLink"
                    || condition_status(&obj, "CredentialsReady") == "True"
                    || condition(&obj, "Ready").is_some_and(|c| c["reason"] == "InvalidSpec");
                if generation > 0 && observed == generation && settled {
                    Ok(obj)
                } else {
                    Err(status_summary(&obj))
                }
            },
        );
        if condition(&obj, "Ready").is_some_and(|c| c["reason"] == "InvalidSpec") {
            problems.push(format!(
                "{file}: {kind} {name} is rejected: {}",
                status_summary(&obj)
            ));
        } else if condition_status(&obj, "CredentialsReady") != "True" {
            // A sample ships the Secrets it references: applied as is, it must find them.
            problems.push(format!(
                "{file}: {kind} {name} lacks credentials: {}",
                status_summary(&obj)
            ));
        } else {
            reconciled.push((kind.clone(), name.clone()));
        }
        eprintln!("{kind} {ns}/{name}: {}", status_summary(&obj));
    }
    // These are reconciled (validated, credentials found) but cannot become Ready without AWS or GCP: the
    // IoT endpoint and topic rule are proven against moto in operator/tests/iotcore.rs and the deletion
    // scenarios, SNS provisioning in operator/tests/sns_provisioning.rs and managed.rs, Pub/Sub provisioning
    // against the fake server in operator/tests/pubsub_provisioning.rs.
    reconciled.retain(|(kind, name)| {
        let cloud = needs_cloud.contains(&(ns.clone(), name.clone()));
        if cloud {
            skipped.push(format!(
                "{kind} {ns}/{name}: Ready needs AWS or GCP (not reachable here)"
            ));
        }
        !cloud
    });
    assert!(
        problems.is_empty(),
        "samples that do not work:\n{}\n{}",
        problems.join("\n"),
        op.log_tail()
    );
    eprintln!(
        "samples: applied and reconciled in {} ms",
        t.elapsed().as_millis()
    );

    // 2. Ready, through the real controllers and kwok.
    let t = Instant::now();
    for (kind, name) in &reconciled {
        let resource = kind.to_lowercase();
        let outcome = if kind == "BridgeLink" {
            // Everything but the agent's report: the StatefulSet is ready, Ready waits for the agent.
            wait_for(
                &format!("{kind} {ns}/{name}: workload ready, waiting for the agent"),
                TIMEOUT,
                || {
                    let bl = cluster.get(&ns, &resource, name).ok_or("absent")?;
                    let ready = condition(&bl, "Ready").ok_or_else(|| status_summary(&bl))?;
                    let message = ready["message"].as_str().unwrap_or("");
                    if ready["status"] == "False"
                        && ready["reason"] == "NotReady"
                        && message.starts_with("EdgeConnected: the bridge agent has not reported")
                    {
                        Ok(())
                    } else {
                        Err(status_summary(&bl))
                    }
                },
            )
            .and_then(|()| {
                let sts = cluster.get_json(&ns, "statefulset.apps", &format!("{name}-bridge"));
                match at(&sts, "/status/readyReplicas").as_i64() {
                    Some(1) => Ok(()),
                    _ => Err(format!(
                        "{kind} {ns}/{name}: bridge StatefulSet {}",
                        at(&sts, "/status")
                    )),
                }
            })
        } else {
            let target = format!("{resource}/{name}");
            let timeout = format!("--timeout={}s", TIMEOUT.as_secs());
            let out = cluster.kubectl(&[
                "wait",
                "--for=condition=Ready",
                &target,
                "-n",
                &ns,
                &timeout,
            ]);
            if out.status.success() {
                Ok(())
            } else {
                let obj = cluster.get(&ns, &resource, name).unwrap_or_default();
                Err(format!(
                    "kubectl wait --for=condition=Ready {target}: {}{}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    status_summary(&obj)
                ))
            }
        };
        if let Err(e) = outcome {
            problems.push(e);
        }
    }
    eprintln!("not Ready here, only reconciled: {skipped:#?}");
    assert!(
        problems.is_empty(),
        "samples that do not become Ready:\n{}\n{}",
        problems.join("\n"),
        op.log_tail()
    );
    eprintln!(
        "samples: {} Ready (kubectl wait; BridgeLinks: workload ready) in {} ms",
        reconciled.len(),
        t.elapsed().as_millis()
    );

    // 3. PodSecurity restricted: every workload has all its pods.
    let namespace = cluster.get_json("", "namespace", &ns);
    assert_eq!(
        str_at(
            &namespace,
            "/metadata/labels/pod-security.kubernetes.io~1enforce"
        ),
        "restricted",
        "{namespace}"
    );
    let mut pods_total = 0;
    for w in cluster.list(&ns, "deployments.apps,statefulsets.apps", "") {
        let name = format!("{}/{}", str_at(&w, "/kind"), str_at(&w, "/metadata/name"));
        let want = at(&w, "/spec/replicas").as_i64().unwrap_or(1);
        let selector: Vec<String> = at(&w, "/spec/selector/matchLabels")
            .as_object()
            .unwrap_or_else(|| panic!("{name}: no matchLabels"))
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        let pods = cluster.list(&ns, "pods", &selector.join(","));
        let running = pods
            .iter()
            .filter(|p| str_at(p, "/status/phase") == "Running")
            .count() as i64;
        assert_eq!(
            running,
            want,
            "{name}: {want} replicas, {running} running pods: {:?}",
            pods.iter()
                .map(|p| str_at(p, "/metadata/name"))
                .collect::<Vec<_>>()
        );
        pods_total += running;
    }
    let refused: Vec<Value> = cluster
        .list(&ns, "events", "")
        .into_iter()
        .filter(|e| e["reason"] == "FailedCreate")
        .collect();
    assert!(
        refused.is_empty(),
        "pods were refused: {:?}",
        refused
            .iter()
            .map(|e| str_at(e, "/message"))
            .collect::<Vec<_>>()
    );
    // The same namespace refuses a pod template that breaks `restricted` (no securityContext at all).
    cluster.apply_yaml(&format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: psa-control, namespace: {ns}}}\n\
         spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: psa-control}}}}\n  template:\n    \
         metadata: {{labels: {{app: psa-control}}}}\n    spec:\n      containers:\n      \
         - {{name: c, image: registry.k8s.io/pause:3.10}}\n"
    ));
    let message = op.wait(
        "the ReplicaSet of psa-control to be refused its pod",
        || {
            cluster
                .list(&ns, "events", "")
                .iter()
                .find(|e| {
                    e["reason"] == "FailedCreate"
                        && str_at(e, "/involvedObject/name").starts_with("psa-control-")
                })
                .map(|e| str_at(e, "/message").to_string())
                .ok_or_else(|| "no FailedCreate yet".to_string())
        },
    );
    assert!(
        message.contains("violates PodSecurity \"restricted"),
        "{message}"
    );
    assert!(cluster.list(&ns, "pods", "app=psa-control").is_empty());
    cluster.kubectl_ok(&["delete", "deployment", "psa-control", "-n", &ns]);
    eprintln!(
        "PodSecurity restricted: all {pods_total} pods of the operator's workloads admitted; a \
         non-compliant template refused ({message})"
    );

    // 4. The operator's RBAC sufficed.
    let log = op.log();
    let forbidden: Vec<&str> = log
        .lines()
        .filter(|l| l.to_lowercase().contains("forbidden"))
        .collect();
    assert!(
        forbidden.is_empty(),
        "the operator was refused requests under the chart's ServiceAccount:\n{}",
        forbidden.join("\n")
    );

    // 5. No drift: re-apply everything, restart the operator, then nothing changes for QUIET.
    let skip: BTreeSet<String> = needs_cloud
        .iter()
        .filter_map(|(ns, name)| {
            ["eventbroker", "mqttbroker"]
                .iter()
                .find_map(|r| cluster.get(ns, r, name))
                .map(|o| str_at(&o, "/metadata/uid").to_string())
        })
        .collect();
    let before = versions(&cluster, &ns, &skip);
    let t = Instant::now();
    apply_all(&cluster, &files);
    let status = op.stop();
    assert!(status.success(), "SIGTERM: {status}\n{}", op.log_tail());
    let stopped_log = op.log();
    op = Operator::start(&cluster, &ns, "op-samples");
    let mut per_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, kind, _, _) in &all {
        if HANDLED.contains(&kind.as_str()) {
            *per_kind.entry(kind.as_str()).or_default() += 1;
        }
    }
    op.wait("the restarted operator to reconcile every resource", || {
        for (kind, n) in &per_kind {
            let series = format!(
                "edgewire_operator_reconciles_total{{kind=\"{}\"}}",
                kind.to_lowercase()
            );
            let done = op.metric(&series)?.unwrap_or(0.0) as u64;
            if done < *n {
                return Err(format!("{series} {done} < {n}"));
            }
        }
        Ok(())
    });
    let changed = diff(&before, &versions(&cluster, &ns, &skip));
    assert!(
        changed.is_empty(),
        "re-applying the samples and restarting the operator changed:\n{}\n{}",
        changed.join("\n"),
        op.log_tail()
    );
    let quiet = Instant::now();
    while quiet.elapsed() < QUIET {
        let changed = diff(&before, &versions(&cluster, &ns, &skip));
        assert!(
            changed.is_empty(),
            "{:.1} s after the restarted operator reconciled everything:\n{}\n{}",
            quiet.elapsed().as_secs_f64(),
            changed.join("\n"),
            op.log_tail()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "no drift: {} objects kept their generation and resourceVersion through a re-apply of every \
         sample, an operator restart and {} s after it ({} ms in all)",
        before.len(),
        QUIET.as_secs(),
        t.elapsed().as_millis()
    );
    for (which, log) in [("stopped", stopped_log), ("restarted", op.log())] {
        assert!(
            !log.to_lowercase().contains("forbidden"),
            "the {which} operator was refused requests:\n{log}"
        );
    }

    // 6. Deleting the namespace that holds every kind finishes.
    let cleanups: Vec<String> = all
        .iter()
        .filter(|(_, kind, _, name)| {
            HANDLED.contains(&kind.as_str())
                && cluster
                    .get(&ns, &kind.to_lowercase(), name)
                    .is_some_and(|o| {
                        at(&o, "/metadata/finalizers")
                            .as_array()
                            .is_some_and(|f| f.iter().any(|f| f == "edgewire.dev/cleanup"))
                            && needs_cloud.contains(&(ns.clone(), name.clone()))
                    })
        })
        .map(|(_, _, _, name)| name.clone())
        .collect();
    let t = Instant::now();
    let out = cluster.kubectl(&["delete", "namespace", &ns, "--wait=true", "--timeout=180s"]);
    assert!(
        out.status.success(),
        "kubectl delete namespace {ns} did not finish: {}\nleft: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(
            &cluster
                .kubectl(&["get", "edgewire,pods,pvc", "-n", &ns, "-o", "wide"])
                .stdout
        ),
        op.log_tail()
    );
    assert!(cluster.get("", "namespace", &ns).is_none());
    let home = cp.release_namespace();
    let abandoned: BTreeSet<String> = cluster
        .list(home, "events", "")
        .iter()
        .filter(|e| {
            e["reason"] == "CleanupAbandoned"
                && e["type"] == "Warning"
                && str_at(e, "/involvedObject/namespace") == ns
        })
        .map(|e| str_at(e, "/involvedObject/name").to_string())
        .collect();
    let want: BTreeSet<String> = cleanups.iter().cloned().collect();
    assert_eq!(
        abandoned,
        want,
        "CleanupAbandoned Warning Events (in {home}) for the cloud resources whose cleanup could not run\n{}",
        op.log_tail()
    );
    eprintln!(
        "namespace {ns} (every kind, {} objects) deleted in {} ms; CleanupAbandoned for {want:?}",
        all.len(),
        t.elapsed().as_millis()
    );

    // 7. What the chart grants against what the operator used.
    crate::rbac::audit_report(&cluster);
}
