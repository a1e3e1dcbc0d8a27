//! EventBroker end to end: the real `edgewire-operator run` binary against the control plane, driven with
//! kubectl the way users drive it. The workloads become ready through the real Deployment and StatefulSet
//! controllers, the scheduler, the volume provisioner and kwok; no test writes a workload's status.

use crate::support::manifests::{
    eventbroker_with_spec, mqtt_external, nats_deployed, nats_external, redis_deployed,
    token_secret,
};
use crate::support::{
    Cluster, Operator, TIMEOUT, at, condition, condition_status, credentials_hash, generations,
    keys, status_summary, str_at,
};

const EB: &str = "events";
const SECRET: &str = "nats-auth";

/// `Kind/name` of every child of a NATS-deployed EventBroker `events`.
fn nats_deployed_children() -> Vec<String> {
    let mut v: Vec<String> = [
        "Deployment/events-publisher",
        "Secret/events-nats-config",
        "Service/events-nats",
        "Service/events-nats-headless",
        "Service/events-publisher",
        "ServiceAccount/events-publisher",
        "StatefulSet/events-nats",
    ]
    .map(String::from)
    .to_vec();
    v.sort();
    v
}

/// Applies the token Secret and a NATS-deployed EventBroker, and waits until the operator has reconciled it
/// (status observed at its generation).
fn apply_nats_deployed(cluster: &Cluster, op: &Operator, ns: &str) -> serde_json::Value {
    cluster.apply_yaml(&token_secret(ns, SECRET, "first-token"));
    cluster.apply_yaml(&nats_deployed(ns, EB, SECRET, 1));
    wait_observed(cluster, op, ns, EB)
}

/// Waits until `status.observedGeneration == metadata.generation`; returns the EventBroker.
fn wait_observed(cluster: &Cluster, op: &Operator, ns: &str, name: &str) -> serde_json::Value {
    op.wait(
        &format!("EventBroker {name} observed at its generation"),
        || {
            let eb = cluster
                .get(ns, "eventbroker", name)
                .ok_or("EventBroker absent")?;
            let (generation, observed) = generations(&eb);
            if generation > 0 && observed == generation {
                Ok(eb)
            } else {
                Err(status_summary(&eb))
            }
        },
    )
}

/// Waits until the children of `name` are exactly `want` (`Kind/name`, sorted).
fn wait_children(
    cluster: &Cluster,
    op: &Operator,
    ns: &str,
    name: &str,
    want: &[String],
) -> Vec<crate::support::ChildRef> {
    op.wait(
        &format!("children of {name} to be exactly {want:?}"),
        || {
            let children = cluster.children(ns, name);
            if keys(&children) == want {
                Ok(children)
            } else {
                Err(format!("{:?}", keys(&children)))
            }
        },
    )
}

/// CRDs applied with kubectl register; a NATS EventBroker with `deployBroker` yields its StatefulSet,
/// Services and publisher Deployment, each owned by the EventBroker; once the workloads are ready,
/// `kubectl wait --for=condition=Ready` succeeds and `kubectl get eb` shows Ready, Adapter and Endpoint.
#[test]
fn crds_register_and_a_deployed_nats_eventbroker_becomes_ready() {
    let cluster = Cluster::start();

    // The CRDs registered: kubectl lists them, discovery serves the group, the category resolves.
    let crds = cluster.kubectl_ok(&["get", "crd", "-o", "name"]);
    let resources =
        cluster.kubectl_ok(&["api-resources", "--api-group=edgewire.dev", "-o", "name"]);
    for plural in ["eventbrokers", "mqttbrokers", "bridgelinks"] {
        let crd = format!("{plural}.edgewire.dev");
        assert!(
            crds.lines().any(|l| l.ends_with(&format!("/{crd}"))),
            "CRD {crd} not listed by kubectl get crd:\n{crds}"
        );
        assert!(
            resources.lines().any(|l| l == crd),
            "{crd} not served (kubectl api-resources --api-group=edgewire.dev):\n{resources}"
        );
    }
    let ns = cluster.create_namespace("e2e-ready");
    let out = cluster.kubectl(&["get", "edgewire", "-n", &ns]);
    assert!(
        out.status.success(),
        "kubectl get edgewire (the category) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let op = Operator::start(&cluster, &ns, "op-a");
    cluster.apply_yaml(&token_secret(&ns, SECRET, "first-token"));
    cluster.apply_yaml(&nats_deployed(&ns, EB, SECRET, 1));
    let eb = cluster.get_json(&ns, "eventbroker", EB);
    let uid = str_at(&eb, "/metadata/uid").to_string();
    assert!(!uid.is_empty(), "the EventBroker has no uid: {eb}");

    // Every child exists and is controlled by the EventBroker.
    let children = wait_children(&cluster, &op, &ns, EB, &nats_deployed_children());
    for child in &children {
        let resource = match child.kind.as_str() {
            "StatefulSet" => "statefulset.apps",
            "Deployment" => "deployment.apps",
            other => other,
        };
        let obj = cluster.get_json(&ns, resource, &child.name);
        let refs = at(&obj, "/metadata/ownerReferences")
            .as_array()
            .cloned()
            .unwrap_or_default();
        let owner = refs.iter().find(|r| r["uid"] == uid.as_str());
        let owner = owner.unwrap_or_else(|| {
            panic!(
                "{} has no ownerReference to EventBroker uid {uid}: {refs:?}",
                child.key()
            )
        });
        assert_eq!(owner["kind"], "EventBroker", "{}: {owner}", child.key());
        assert_eq!(
            owner["apiVersion"],
            "edgewire.dev/v1alpha1",
            "{}: {owner}",
            child.key()
        );
        assert_eq!(owner["name"], EB, "{}: {owner}", child.key());
        assert_eq!(
            owner["controller"],
            true,
            "{}: ownerReference is not the controller: {owner}",
            child.key()
        );
    }

    cluster.wait(
        &ns,
        &format!("eventbroker/{EB}"),
        "condition=Ready",
        TIMEOUT,
        || op.log_tail(),
    );
    // Ready because the workloads are: the broker's claim bound, its pod and the publisher's on kwok nodes.
    let sts = cluster.get_json(&ns, "statefulset.apps", &format!("{EB}-nats"));
    assert_eq!(
        at(&sts, "/status/readyReplicas"),
        1,
        "{}",
        at(&sts, "/status")
    );
    let claim = str_at(&sts, "/spec/volumeClaimTemplates/0/metadata/name");
    let pvc = cluster.get_json(&ns, "pvc", &format!("{claim}-{EB}-nats-0"));
    assert_eq!(str_at(&pvc, "/status/phase"), "Bound", "{pvc}");
    let publisher = cluster.get_json(&ns, "deployment.apps", &format!("{EB}-publisher"));
    assert_eq!(
        at(&publisher, "/status/availableReplicas"),
        1,
        "{}",
        at(&publisher, "/status")
    );
    for pod in cluster.list(&ns, "pods", &format!("app.kubernetes.io/instance={EB}")) {
        assert_eq!(str_at(&pod, "/status/phase"), "Running", "{pod}");
        assert!(
            edgewire_e2e::kube::NODES.contains(&str_at(&pod, "/spec/nodeName")),
            "{pod}"
        );
    }

    // What users read: the printer columns.
    let table = cluster.kubectl_ok(&["get", "eb", "-n", &ns]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "ADAPTER", "ENDPOINT", "AGE"],
        "kubectl get eb columns:\n{table}"
    );
    let row: Vec<&str> = lines
        .find(|l| l.starts_with(EB))
        .unwrap_or_else(|| panic!("no row {EB}:\n{table}"))
        .split_whitespace()
        .collect();
    let endpoint = format!("http://{EB}-publisher.{ns}.svc:8080");
    assert_eq!(
        &row[..4],
        [EB, "True", "nats", endpoint.as_str()],
        "kubectl get eb:\n{table}"
    );

    let eb = cluster.get_json(&ns, "eventbroker", EB);
    for t in ["BrokerReady", "PublisherReady", "CredentialsReady"] {
        assert_eq!(
            condition_status(&eb, t),
            "True",
            "{t}: {}",
            status_summary(&eb)
        );
    }
    assert_eq!(str_at(&eb, "/status/endpoint"), endpoint);
    assert_eq!(
        str_at(&eb, "/status/brokerEndpoint"),
        format!("nats://{EB}-nats.{ns}.svc:4222")
    );
    let publisher = cluster.get_json(&ns, "deployment.apps", &format!("{EB}-publisher"));
    let revision = str_at(&eb, "/status/credentialsRevision");
    assert!(!revision.is_empty(), "no status.credentialsRevision: {eb}");
    assert_eq!(
        credentials_hash(&publisher),
        revision,
        "publisher pod-template hash vs status.credentialsRevision"
    );

    // The category lists it too.
    let all = cluster.kubectl_ok(&["get", "edgewire", "-n", &ns, "-o", "name"]);
    assert!(
        all.lines()
            .any(|l| l == format!("eventbroker.edgewire.dev/{EB}")),
        "kubectl get edgewire:\n{all}"
    );
}

/// A spec edit bumps `metadata.generation`; the operator follows with `status.observedGeneration`, the
/// conditions' observedGeneration, and the child.
#[test]
fn a_spec_edit_bumps_generation_and_observed_generation_follows() {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-gen");
    let op = Operator::start(&cluster, &ns, "op-a");
    let eb = apply_nats_deployed(&cluster, &op, &ns);
    assert_eq!(generations(&eb), (1, 1), "{}", status_summary(&eb));

    // The way users edit: apply the changed manifest.
    cluster.apply_yaml(&nats_deployed(&ns, EB, SECRET, 2));
    let eb = cluster.get_json(&ns, "eventbroker", EB);
    assert_eq!(
        generations(&eb).0,
        2,
        "publisher.replicas 1 -> 2 did not bump metadata.generation: {eb}"
    );
    let publisher = format!("{EB}-publisher");
    op.wait("publisher Deployment scaled to 2", || {
        let d = cluster.get_json(&ns, "deployment.apps", &publisher);
        if at(&d, "/spec/replicas") == 2 {
            Ok(())
        } else {
            Err(format!("spec.replicas {}", at(&d, "/spec/replicas")))
        }
    });
    let eb = wait_observed(&cluster, &op, &ns, EB);
    assert_eq!(generations(&eb), (2, 2), "{}", status_summary(&eb));

    // With both publisher replicas available, Ready comes true at generation 2.
    let eb = op.wait("Ready=True at generation 2", || {
        let eb = cluster.get_json(&ns, "eventbroker", EB);
        let ready = condition(&eb, "Ready").cloned().unwrap_or_default();
        if ready["status"] == "True" && ready["observedGeneration"] == 2 {
            Ok(eb)
        } else {
            Err(status_summary(&eb))
        }
    });

    // A status write is not a spec change: the generation stays.
    assert_eq!(generations(&eb), (2, 2), "{}", status_summary(&eb));
}

/// Changing the data of a referenced Secret changes the pod-template `edgewire.dev/credentials-hash` of the
/// publisher and of the deployed broker (so both roll), and `status.credentialsRevision`; the Deployment
/// controller then rolls the publisher to a new ReplicaSet.
#[test]
fn a_changed_referenced_secret_changes_the_credentials_hash() {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-rotate");
    let op = Operator::start(&cluster, &ns, "op-a");
    let eb = apply_nats_deployed(&cluster, &op, &ns);
    let publisher = format!("{EB}-publisher");
    let broker = format!("{EB}-nats");
    let before = str_at(&eb, "/status/credentialsRevision").to_string();
    assert!(
        !before.is_empty(),
        "no status.credentialsRevision: {}",
        status_summary(&eb)
    );
    let pub_before = credentials_hash(&cluster.get_json(&ns, "deployment.apps", &publisher));
    let sts_before = credentials_hash(&cluster.get_json(&ns, "statefulset.apps", &broker));
    assert_eq!(
        pub_before, before,
        "publisher pod-template hash vs status.credentialsRevision"
    );
    assert_eq!(
        sts_before, before,
        "broker pod-template hash vs status.credentialsRevision"
    );

    // The publisher's ReplicaSets before: one, made by the Deployment controller from this template.
    let replica_sets = |hash: &str| -> Vec<(String, i64)> {
        cluster
            .list(
                &ns,
                "replicasets.apps",
                &format!("app.kubernetes.io/instance={EB}"),
            )
            .iter()
            .filter(|rs| {
                at(rs, "/metadata/ownerReferences/0/name") == publisher.as_str()
                    && credentials_hash(rs) == hash
            })
            .map(|rs| {
                (
                    str_at(rs, "/metadata/name").to_string(),
                    at(rs, "/status/readyReplicas").as_i64().unwrap_or(0),
                )
            })
            .collect()
    };
    let old_rs = op.wait("the publisher's ReplicaSet", || {
        match replica_sets(&pub_before)[..] {
            [(ref name, 1)] => Ok(name.clone()),
            ref other => Err(format!("{other:?}")),
        }
    });

    // Rotate: the token changes (base64 of "rotated-token").
    cluster.kubectl_ok(&[
        "patch",
        "secret",
        SECRET,
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"data":{"token":"cm90YXRlZC10b2tlbg=="}}"#,
    ]);

    let (pub_after, revision) = op.wait(
        "a new credentials hash on the publisher and in status",
        || {
            let d = cluster.get_json(&ns, "deployment.apps", &publisher);
            let eb = cluster.get_json(&ns, "eventbroker", EB);
            let hash = credentials_hash(&d);
            let revision = str_at(&eb, "/status/credentialsRevision").to_string();
            if hash != pub_before && revision == hash {
                Ok((hash, revision))
            } else {
                Err(format!("pod template {hash}, status {revision}"))
            }
        },
    );
    assert_ne!(revision, before);
    let sts_after = credentials_hash(&cluster.get_json(&ns, "statefulset.apps", &broker));
    assert_eq!(
        sts_after, pub_after,
        "the broker (rendered with the token) must roll with the publisher"
    );
    // The real Deployment controller rolls the publisher: a new ReplicaSet from the new template becomes
    // ready (kwok), the old one is scaled to zero.
    let new_rs = op.wait(
        "a new ready ReplicaSet of the publisher",
        || match replica_sets(&pub_after)[..] {
            [(ref name, 1)] if *name != old_rs => Ok(name.clone()),
            ref other => Err(format!("{other:?}")),
        },
    );
    op.wait("the old ReplicaSet scaled to zero", || {
        let rs = cluster.get_json(&ns, "replicasets.apps", &old_rs);
        match at(&rs, "/spec/replicas").as_i64() {
            Some(0) => Ok(()),
            other => Err(format!("spec.replicas {other:?}")),
        }
    });
    eprintln!("rotation rolled the publisher: ReplicaSet {old_rs} -> {new_rs}");

    // The rotation is recorded as an Event on the EventBroker.
    op.wait("a CredentialsRotated Event", || {
        let events = cluster.list(&ns, "events", "");
        let found = events.iter().any(|e| {
            e["reason"] == "CredentialsRotated" && str_at(e, "/involvedObject/name") == EB
        });
        if found {
            Ok(())
        } else {
            Err(format!(
                "{} events, reasons {:?}",
                events.len(),
                events
                    .iter()
                    .map(|e| e["reason"].clone())
                    .collect::<Vec<_>>()
            ))
        }
    });
}

/// Switching the adapter deletes the old broker's StatefulSet, Services and config Secret: nats (deployed) →
/// redis (deployed) → mqtt (external). The publisher is updated in place and the user's Secret stays.
#[test]
fn switching_the_adapter_deletes_the_old_brokers_children() {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-switch");
    let op = Operator::start(&cluster, &ns, "op-a");
    apply_nats_deployed(&cluster, &op, &ns);
    let children = wait_children(&cluster, &op, &ns, EB, &nats_deployed_children());
    let publisher_uid = children
        .iter()
        .find(|c| c.key() == "Deployment/events-publisher")
        .map(|c| c.uid.clone())
        .unwrap();

    cluster.apply_yaml(&redis_deployed(&ns, EB));
    let mut want: Vec<String> = [
        "Deployment/events-publisher",
        "Secret/events-broker-credentials",
        "Secret/events-redis-config",
        "Service/events-publisher",
        "Service/events-redis",
        "Service/events-redis-headless",
        "ServiceAccount/events-publisher",
        "StatefulSet/events-redis",
    ]
    .map(String::from)
    .to_vec();
    want.sort();
    let children = wait_children(&cluster, &op, &ns, EB, &want);
    let eb = wait_observed(&cluster, &op, &ns, EB);
    assert_eq!(
        str_at(&eb, "/status/brokerEndpoint"),
        format!("redis://{EB}-redis.{ns}.svc:6379"),
        "{eb}"
    );
    let publisher = cluster.get_json(&ns, "deployment.apps", &format!("{EB}-publisher"));
    assert_eq!(
        publisher_env(&publisher, "EVENT_BROKER_ADAPTER"),
        "redis",
        "publisher env after the switch"
    );
    let uid_now = children
        .iter()
        .find(|c| c.key() == "Deployment/events-publisher")
        .map(|c| c.uid.clone())
        .unwrap();
    assert_eq!(
        uid_now, publisher_uid,
        "the publisher Deployment was recreated instead of updated"
    );
    assert!(
        cluster.get(&ns, "secret", SECRET).is_some(),
        "the user's Secret {SECRET} was deleted"
    );

    cluster.apply_yaml(&mqtt_external(&ns, EB));
    let want: Vec<String> = [
        "Deployment/events-publisher",
        "Service/events-publisher",
        "ServiceAccount/events-publisher",
    ]
    .map(String::from)
    .to_vec();
    wait_children(&cluster, &op, &ns, EB, &want);
    let eb = wait_observed(&cluster, &op, &ns, EB);
    assert_eq!(
        str_at(&eb, "/status/brokerEndpoint"),
        "mqtt.example.com:1883",
        "{eb}"
    );
    assert_eq!(
        condition(&eb, "BrokerReady")
            .map(|c| c["reason"].clone())
            .unwrap_or_default(),
        "ExternalBroker",
        "{}",
        status_summary(&eb)
    );
    let publisher = cluster.get_json(&ns, "deployment.apps", &format!("{EB}-publisher"));
    assert_eq!(
        publisher_env(&publisher, "EVENT_BROKER_ADAPTER"),
        "mqtt",
        "publisher env after the switch"
    );
}

/// The value of env var `name` of the first container.
fn publisher_env(d: &serde_json::Value, name: &str) -> String {
    at(d, "/spec/template/spec/containers/0/env")
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == name))
        .and_then(|e| e["value"].as_str())
        .unwrap_or("")
        .to_string()
}

/// A spec a CEL rule of the CRD refuses never reaches the operator: the API server answers `kubectl apply`
/// with the rule's message and stores nothing. Specs the schema cannot check are rejected by the operator:
/// `Ready=False`, reason `InvalidSpec`, a message naming the field, a Warning Event, and no children. Fixing
/// the spec recovers.
#[test]
fn an_invalid_spec_gives_invalid_spec_and_no_children() {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-invalid");
    let op = Operator::start(&cluster, &ns, "op-a");
    cluster.apply_yaml(&token_secret(&ns, SECRET, "first-token"));

    let refused = cluster.kubectl_stdin(
        &["apply"],
        &eventbroker_with_spec(
            &ns,
            "mismatch",
            "  adapter: nats\n  nats:\n    auth:\n      token: {name: nats-auth, key: token}\n  deployBroker:\n    kind: redis\n    replicas: 1\n",
        ),
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && stderr.contains("deployBroker.kind must belong to the adapter's family"),
        "the API server did not refuse deployBroker.kind redis for adapter nats with its CEL rule: {stderr}"
    );
    assert!(cluster.get(&ns, "eventbroker", "mismatch").is_none());

    let cases = [
        (
            "no-urls",
            "  adapter: nats\n  nats:\n    auth:\n      token: {name: nats-auth, key: token}\n",
            "spec.nats.urls",
        ),
        (
            "no-prefix",
            "  adapter: aws_sns\n  awsSns:\n    region: us-east-1\n",
            "spec.awsSns.topicArnPrefix",
        ),
    ];
    for (name, spec, _) in &cases {
        cluster.apply_yaml(&eventbroker_with_spec(&ns, name, spec));
    }
    for (name, _, field) in &cases {
        let eb = op.wait(&format!("{name}: Ready=False InvalidSpec"), || {
            let eb = cluster.get(&ns, "eventbroker", name).ok_or("absent")?;
            let reason = condition(&eb, "Ready")
                .map(|c| c["reason"].clone())
                .unwrap_or_default();
            if condition_status(&eb, "Ready") == "False" && reason == "InvalidSpec" {
                Ok(eb)
            } else {
                Err(status_summary(&eb))
            }
        });
        let message = condition(&eb, "Ready")
            .and_then(|c| c["message"].as_str())
            .unwrap_or("")
            .to_string();
        assert!(
            message.contains(field),
            "{name}: the Ready message does not name {field}: {message:?}"
        );
        let (generation, observed) = generations(&eb);
        assert_eq!(observed, generation, "{name}: {}", status_summary(&eb));
        let children = cluster.children(&ns, name);
        assert!(
            children.is_empty(),
            "{name}: an invalid EventBroker got children: {:?}",
            keys(&children)
        );
    }
    op.wait("Warning InvalidSpec Events for both", || {
        let events = cluster.list(&ns, "events", "");
        let missing: Vec<&str> = cases
            .iter()
            .map(|c| c.0)
            .filter(|n| {
                !events.iter().any(|e| {
                    e["reason"] == "InvalidSpec"
                        && e["type"] == "Warning"
                        && str_at(e, "/involvedObject/name") == *n
                })
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("no InvalidSpec Event for {missing:?}"))
        }
    });

    // Fixing the spec recovers: children appear, the condition is no longer InvalidSpec.
    cluster.apply_yaml(&nats_external(&ns, "no-urls", SECRET));
    let eb = wait_observed(&cluster, &op, &ns, "no-urls");
    let ready = condition(&eb, "Ready")
        .unwrap_or_else(|| panic!("no Ready condition after the fix: {}", status_summary(&eb)));
    assert_ne!(
        ready["reason"],
        "InvalidSpec",
        "still InvalidSpec after the fix: {}",
        status_summary(&eb)
    );
    let want: Vec<String> = [
        "Deployment/no-urls-publisher",
        "Service/no-urls-publisher",
        "ServiceAccount/no-urls-publisher",
    ]
    .map(String::from)
    .to_vec();
    wait_children(&cluster, &op, &ns, "no-urls", &want);
}

/// Deleting the EventBroker removes its children (garbage collection by owner references) and the operator
/// does not recreate them; the user's Secret stays.
#[test]
fn deleting_the_eventbroker_removes_its_children() {
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-delete");
    let op = Operator::start(&cluster, &ns, "op-a");
    apply_nats_deployed(&cluster, &op, &ns);
    wait_children(&cluster, &op, &ns, EB, &nats_deployed_children());

    cluster.kubectl_ok(&[
        "delete",
        "eventbroker",
        EB,
        "-n",
        &ns,
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(
        cluster.get(&ns, "eventbroker", EB).is_none(),
        "EventBroker still there after kubectl delete --wait"
    );
    wait_children(&cluster, &op, &ns, EB, &[]);
    // Nothing comes back (a reconcile racing the deletion would recreate children).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let children = cluster.children(&ns, EB);
    assert!(
        children.is_empty(),
        "children reappeared after deletion: {:?}\n{}",
        keys(&children),
        op.log_tail()
    );
    assert!(
        cluster.get(&ns, "secret", SECRET).is_some(),
        "the user's Secret {SECRET} was deleted"
    );
}
