//! Deletion of every kind on the real control plane, with AWS played by a real `moto_server` on loopback:
//! a namespace holding a NATS-deployed EventBroker, an SNS EventBroker that provisions its topics, a builtin
//! MqttBroker, an IoT Core MqttBroker with a topic rule and a BridgeLink, each with `deletionPolicy:
//! Delete`. Deleting each resource removes every child — the real garbage collector follows the owner
//! references, down to the StatefulSets' claims, which `Delete` gives to their StatefulSet
//! (`persistentVolumeClaimRetentionPolicy.whenDeleted`) — and the finalizers of the cloud kinds delete the SNS topics and the IoT topic rule in moto
//! before the resource goes. (Deleting a whole namespace with every kind, whose cloud cleanups cannot run,
//! is the end of the samples scenario.)

use crate::support::{Cluster, Operator, at, generations, status_summary, str_at};
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// What a child can be.
const CHILD_KINDS: &str = "statefulsets.apps,deployments.apps,services,secrets,serviceaccounts,configmaps,\
persistentvolumeclaims,roles.rbac.authorization.k8s.io,rolebindings.rbac.authorization.k8s.io";

/// A query of moto (no AWS SDK among this crate's dependencies; moto routes by the credential scope and
/// checks no signature): `curl <args> <url><path>` for `service`, the body.
fn moto(url: &str, service: &str, path: &str, args: &[&str]) -> String {
    let auth = format!(
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIAE2E/20261122/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    let out = std::process::Command::new("curl")
        .args(["-sS", "-H", &auth])
        .args(args)
        .arg(format!("{url}{path}"))
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SNS topic ARNs in moto.
fn sns_topics(url: &str) -> Vec<String> {
    let body = moto(
        url,
        "sns",
        "/",
        &["-X", "POST", "-d", "Action=ListTopics&Version=2010-03-31"],
    );
    assert!(body.contains("ListTopicsResponse"), "moto answered: {body}");
    body.split("<TopicArn>")
        .skip(1)
        .filter_map(|s| s.split("</TopicArn>").next())
        .map(str::to_string)
        .collect()
}

/// IoT topic rule names in moto.
fn iot_rules(url: &str) -> Vec<String> {
    let body = moto(url, "iot", "/rules", &[]);
    let v: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("moto ListTopicRules: {e}: {body}"));
    at(&v, "/rules")
        .as_array()
        .unwrap_or_else(|| panic!("moto ListTopicRules: {body}"))
        .iter()
        .map(|r| str_at(r, "/ruleName").to_string())
        .collect()
}

/// uid → `Kind/name` of every object of [`CHILD_KINDS`] in `ns` that descends from `roots` through owner
/// references (a StatefulSet's claims are the StatefulSet's).
fn descendants(cluster: &Cluster, ns: &str, roots: &BTreeSet<String>) -> BTreeMap<String, String> {
    let objects = cluster.list(ns, CHILD_KINDS, "");
    let mut known: BTreeSet<String> = roots.clone();
    let mut found = BTreeMap::new();
    loop {
        let before = found.len();
        for o in &objects {
            let uid = str_at(o, "/metadata/uid");
            let owned = at(o, "/metadata/ownerReferences")
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| known.contains(r["uid"].as_str().unwrap_or("")));
            if owned && !found.contains_key(uid) {
                found.insert(
                    uid.to_string(),
                    format!("{}/{}", str_at(o, "/kind"), str_at(o, "/metadata/name")),
                );
                known.insert(uid.to_string());
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

/// Those of `uids` still in `ns`.
fn still_there(cluster: &Cluster, ns: &str, uids: &BTreeMap<String, String>) -> Vec<String> {
    cluster
        .list(ns, CHILD_KINDS, "")
        .iter()
        .filter_map(|o| uids.get(str_at(o, "/metadata/uid")).cloned())
        .collect()
}

#[test]
fn deleting_each_kind_removes_every_child_and_runs_the_cloud_cleanups() {
    let moto_server = BrokerProcess::start_default(Kind::Moto).expect("moto_server starts");
    let url = moto_server.url();
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-deletion");
    let op = Operator::start(&cluster, &ns, "op-deletion");
    cluster.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: aws-creds, namespace: {ns}}}
stringData: {{AWS_ACCESS_KEY_ID: AKIAE2E, AWS_SECRET_ACCESS_KEY: e2e-secret}}
---
apiVersion: v1
kind: Secret
metadata: {{name: nats-auth, namespace: {ns}}}
stringData: {{token: e2e-token}}
---
apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata: {{name: events, namespace: {ns}}}
spec:
  adapter: nats
  nats: {{auth: {{token: {{name: nats-auth, key: token}}}}}}
  deployBroker: {{kind: nats, replicas: 1, storage: {{size: 1Gi}}}}
  deletionPolicy: Delete
---
apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata: {{name: topics, namespace: {ns}}}
spec:
  adapter: aws_sns
  awsSns:
    region: us-east-1
    provision: true
    endpoint: {url}
    credentials: {{secretName: aws-creds}}
  deletionPolicy: Delete
---
apiVersion: edgewire.dev/v1alpha1
kind: MqttBroker
metadata: {{name: workers, namespace: {ns}}}
spec:
  type: builtin
  builtin:
    # The bridge connects as the user named after its siteId.
    users: [{{name: pool-a}}, {{name: site-a}}]
    persistence: {{size: 1Gi}}
  deletionPolicy: Delete
---
apiVersion: edgewire.dev/v1alpha1
kind: MqttBroker
metadata: {{name: workers-iot, namespace: {ns}}}
spec:
  type: iotcore
  iotcore:
    region: us-east-1
    apiEndpoint: {url}
    credentials: {{secretName: aws-creds}}
    topicRule:
      name: e2e_workers_to_sqs
      sqsQueueUrl: https://sqs.us-east-1.amazonaws.com/123456789012/e2e-workers
      roleArn: arn:aws:iam::123456789012:role/e2e-iot-to-sqs
  deletionPolicy: Delete
---
apiVersion: edgewire.dev/v1alpha1
kind: BridgeLink
metadata: {{name: site-a, namespace: {ns}}}
spec:
  siteId: site-a
  edge: {{brokerRef: {{kind: MqttBroker, name: workers}}}}
  cloud: {{endpoint: {{protocol: nats, url: "nats://nats.cloud.example.com:4222"}}}}
  rules: [{{direction: EdgeToCloud, from: "a.#", to: "b.#"}}]
  spool: {{size: 1Gi, maxBytes: 512Mi}}
  deletionPolicy: Delete
"#
    ));
    let resources = [
        ("eventbroker", "events"),
        ("eventbroker", "topics"),
        ("mqttbroker", "workers"),
        ("mqttbroker", "workers-iot"),
        ("bridgelink", "site-a"),
    ];
    // Reconciled, the cloud resources made, the workloads ready (their claims bound).
    let mut uids = BTreeSet::new();
    for (resource, name) in resources {
        let obj = op.wait(&format!("{resource} {name} reconciled"), || {
            let o = cluster.get(&ns, resource, name).ok_or("absent")?;
            let (generation, observed) = generations(&o);
            // The cloud kinds clean up behind a finalizer; the others leave it to the garbage collector.
            let cloud = matches!(name, "topics" | "workers-iot");
            let finalized = at(&o, "/metadata/finalizers")
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "edgewire.dev/cleanup"));
            let finalized = finalized == cloud;
            if generation > 0 && observed == generation && finalized {
                Ok(o)
            } else {
                Err(status_summary(&o))
            }
        });
        uids.insert(str_at(&obj, "/metadata/uid").to_string());
    }
    op.wait("the SNS topics and the IoT rule in moto", || {
        let (topics, rules) = (sns_topics(&url), iot_rules(&url));
        if topics.len() == 4 && rules == ["e2e_workers_to_sqs"] {
            Ok(())
        } else {
            Err(format!("topics {topics:?}, rules {rules:?}"))
        }
    });
    // The bridge's StatefulSet comes once the MqttBroker generated the password of its user.
    for sts in ["events-nats", "workers", "site-a-bridge"] {
        op.wait(&format!("StatefulSet {sts} ready"), || {
            let s = cluster.get(&ns, "statefulset.apps", sts).ok_or("absent")?;
            match at(&s, "/status/readyReplicas").as_i64() {
                Some(1) => Ok(()),
                _ => Err(format!("{}", at(&s, "/status"))),
            }
        });
    }
    // Every kind of child, the claims included (owned by their StatefulSet once its controller saw them).
    let kinds = [
        "StatefulSet",
        "Deployment",
        "Service",
        "Secret",
        "ServiceAccount",
        "PersistentVolumeClaim",
        "Role",
        "RoleBinding",
    ];
    let children = op.wait("children of every kind", || {
        let children = descendants(&cluster, &ns, &uids);
        let claims = children
            .values()
            .filter(|c| c.starts_with("PersistentVolumeClaim/"))
            .count();
        let missing: Vec<&str> = kinds
            .iter()
            .copied()
            .filter(|k| !children.values().any(|c| c.starts_with(&format!("{k}/"))))
            .collect();
        if missing.is_empty() && claims == 3 {
            Ok(children)
        } else {
            Err(format!(
                "missing {missing:?}, {claims} claims: {children:?}"
            ))
        }
    });

    let t = Instant::now();
    for (resource, name) in resources {
        cluster.kubectl_ok(&["delete", resource, name, "-n", &ns, "--wait=false"]);
    }
    for (resource, name) in resources {
        op.wait(&format!("{resource} {name} to be gone"), || {
            match cluster.get(&ns, resource, name) {
                None => Ok(()),
                Some(o) => Err(format!(
                    "finalizers {}: {}",
                    at(&o, "/metadata/finalizers"),
                    status_summary(&o)
                )),
            }
        });
    }
    op.wait("every child to be gone", || {
        let left = still_there(&cluster, &ns, &children);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    assert!(
        sns_topics(&url).is_empty(),
        "the SNS topics outlived their EventBroker"
    );
    assert!(
        iot_rules(&url).is_empty(),
        "the IoT rule outlived its MqttBroker"
    );
    assert!(
        cluster.get(&ns, "secret", "aws-creds").is_some()
            && cluster.get(&ns, "secret", "nats-auth").is_some(),
        "the user's Secrets were deleted"
    );
    eprintln!(
        "deleted 5 resources and their {} children ({}), 4 SNS topics and the IoT rule in {} ms",
        children.len(),
        children
            .values()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", "),
        t.elapsed().as_millis()
    );
}
