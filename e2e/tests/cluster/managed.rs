//! Managed clouds end to end: the real operator binary, kubectl and the control plane, with AWS played by a
//! real `moto_server` on loopback. An EventBroker with the `aws_sns` adapter,
//! `provision: true` and `deletionPolicy: Delete` gets its four topics (TopicsReady, status.topics); deleting
//! it deletes them.

use crate::support::{Cluster, Operator, condition_status, status_summary};
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use serde_json::Value;

/// Topic ARNs moto has, through its query API (no AWS SDK among this crate's dependencies).
fn moto_topics(url: &str) -> Vec<String> {
    // moto routes a request by the credential scope of its Authorization header (it checks no signature).
    let auth = "Authorization: AWS4-HMAC-SHA256 Credential=AKIAE2E/20261122/us-east-1/sns/aws4_request, SignedHeaders=host, Signature=0";
    let out = std::process::Command::new("curl")
        .args(["-sS", "-X", "POST", "-H", auth])
        .args(["-d", "Action=ListTopics&Version=2010-03-31"])
        .arg(url)
        .output()
        .expect("curl runs");
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(body.contains("ListTopicsResponse"), "moto answered: {body}");
    body.split("<TopicArn>")
        .skip(1)
        .filter_map(|s| s.split("</TopicArn>").next())
        .map(str::to_string)
        .collect()
}

#[test]
fn sns_topics_are_provisioned_and_deleted_with_the_eventbroker() {
    let moto = BrokerProcess::start_default(Kind::Moto).expect("moto_server starts");
    let url = moto.url();
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-managed");
    let op = Operator::start(&cluster, &ns, "op-managed");
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
    let eb: Value = op.wait("TopicsReady=True", || {
        let eb = cluster.get(&ns, "eventbroker", "events").ok_or("absent")?;
        if condition_status(&eb, "TopicsReady") == "True" {
            Ok(eb)
        } else {
            Err(status_summary(&eb))
        }
    });
    let ids: Vec<&str> = eb["status"]["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = [
        "edge-nodes-events",
        "edge-commands-events",
        "edge-self-updates-events",
        "edge-ssh-events",
    ]
    .iter()
    .map(|n| format!("arn:aws:sns:us-east-1:123456789012:{n}"))
    .collect();
    assert_eq!(ids, expected);
    let mut have = moto_topics(&url);
    have.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(have, want, "moto has exactly the four topics");
    assert_eq!(
        eb["metadata"]["finalizers"][0], "edgewire.dev/cleanup",
        "Delete policy: finalizer"
    );

    cluster.kubectl_ok(&["-n", &ns, "delete", "eventbroker", "events", "--wait=false"]);
    op.wait("the EventBroker to be gone", || {
        match cluster.get(&ns, "eventbroker", "events") {
            None => Ok(()),
            Some(eb) => Err(format!("still there: {}", status_summary(&eb))),
        }
    });
    assert!(moto_topics(&url).is_empty(), "Delete removed the topics");
}
