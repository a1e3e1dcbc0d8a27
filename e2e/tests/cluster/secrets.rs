//! Issue 14 item 13 beyond logs: a credential planted in a URL or a Secret value never reaches an Event,
//! a status, the operator's `/metrics`, or the bridge agent's `/metrics`, `/healthz`, `/readyz` and
//! `status.runtime` — not even when the planted value is what makes a reconcile or a connection fail.

use crate::support::pod::HostPod;
use crate::support::{
    Cluster, Operator, TIMEOUT, agent_bin, condition_status, http, status_summary,
};
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use serde_json::Value;

/// Every planted value: unique strings that appear nowhere else.
const IN_SNS_URL: &str = "PlantedInSnsUrl7q";
const IN_AWS_SECRET: &str = "PlantedAwsSecret7q";
const IN_GCP_KEY: &str = "PlantedGcpKey7q";
const IN_NATS_URL: &str = "PlantedInNatsUrl7q";
const IN_EDGE_TOKEN: &str = "PlantedEdgeToken7q";
const IN_NKEY_SEED: &str = "PlantedNkeySeed7q";
const PLANTED: [&str; 6] = [
    IN_SNS_URL,
    IN_AWS_SECRET,
    IN_GCP_KEY,
    IN_NATS_URL,
    IN_EDGE_TOKEN,
    IN_NKEY_SEED,
];

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Panics naming `what` when `text` holds a planted value.
fn assert_clean(what: &str, text: &str) {
    for p in PLANTED {
        assert!(!text.contains(p), "{p} leaked into {what}:\n{text}");
    }
}

/// Warning Events about the object `name`.
fn warnings_about(events: &[Value], name: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "Warning" && e["involvedObject"]["name"] == name)
        .map(|e| format!("{}: {}", e["reason"], e["message"]))
        .collect()
}

/// Reconciles that fail on the planted values (a NATS NKEY seed Secret for a broker Edgewire deploys that
/// is not a seed; an SNS endpoint URL with credentials that cannot be reached with an AWS secret key
/// from a Secret; a Google service-account key Secret that is not valid JSON), and
/// a bridge agent whose cloud URL carries a password and cannot connect while its edge token comes from a
/// Secret. Once each failure is reported (a Warning Event and `CredentialsReady=False`, `TopicsReady=False`, the agent's
/// `status.runtime` with the cloud down), every Event, every status, the operator's `/metrics` and log,
/// and the agent's `/metrics`, `/healthz`, `/readyz` and log are searched for every planted value.
#[test]
fn planted_credentials_reach_no_event_status_or_metrics() {
    let edge = BrokerProcess::start_default(Kind::Mosquitto).expect("start mosquitto");
    let cluster = Cluster::start();
    let ns = cluster.create_namespace("e2e-secrets");
    let op = Operator::start(&cluster, &ns, "op-secrets");
    let dead = closed_port();
    cluster.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: aws-creds, namespace: {ns}}}
stringData: {{AWS_ACCESS_KEY_ID: AKIAE2ESECRETS, AWS_SECRET_ACCESS_KEY: {IN_AWS_SECRET}}}
---
apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata: {{name: sns, namespace: {ns}}}
spec:
  adapter: aws_sns
  awsSns:
    region: us-east-1
    provision: true
    endpoint: "http://e2e:{IN_SNS_URL}@127.0.0.1:{dead}"
    credentials: {{secretName: aws-creds}}
---
apiVersion: v1
kind: Secret
metadata: {{name: gcp-key, namespace: {ns}}}
stringData: {{key.json: '{{"type": "service_account", "private_key": "{IN_GCP_KEY}", '}}
---
apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata: {{name: pubsub, namespace: {ns}}}
spec:
  adapter: google_pubsub
  googlePubsub:
    project: e2e
    provision: true
    endpoint: "http://127.0.0.1:{dead}"
    credentials: {{name: gcp-key, key: key.json}}
---
apiVersion: v1
kind: Secret
metadata: {{name: nkey, namespace: {ns}}}
stringData: {{seed: SU{IN_NKEY_SEED}}}
---
apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata: {{name: nkey, namespace: {ns}}}
spec:
  adapter: nats
  nats:
    auth: {{nkey: {{seed: {{name: nkey, key: seed}}}}}}
  deployBroker: {{kind: nats, replicas: 1, storage: {{size: 1Gi}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: edge-token, namespace: {ns}}}
stringData: {{token: {IN_EDGE_TOKEN}}}
---
apiVersion: edgewire.dev/v1alpha1
kind: BridgeLink
metadata: {{name: site-a, namespace: {ns}}}
spec:
  siteId: site-a
  edge:
    endpoint:
      protocol: mqtt
      url: "{}"
      auth: {{token: {{name: edge-token, key: token}}}}
  cloud:
    endpoint: {{protocol: nats, url: "nats://site-a:{IN_NATS_URL}@127.0.0.1:{dead}"}}
  rules:
    - {{direction: EdgeToCloud, from: "local.telemetry.#", to: "edge.site-a.telemetry.#"}}
  spool: {{size: 1Gi, maxBytes: 512Mi}}
"#,
        edge.url()
    ));

    // The failures, as reported: the seed refused with a Warning Event, provisioning failed.
    op.wait("nkey: CredentialsReady=False and a Warning Event", || {
        let eb = cluster.get(&ns, "eventbroker", "nkey").ok_or("absent")?;
        let warnings = warnings_about(&cluster.list(&ns, "events", ""), "nkey");
        if condition_status(&eb, "CredentialsReady") == "False" && !warnings.is_empty() {
            Ok(())
        } else {
            Err(format!("{}; warnings {warnings:?}", status_summary(&eb)))
        }
    });
    // The SNS endpoint with credentials in it is refused as a spec error (its message must not quote
    // them); the Google key that is not JSON fails provisioning.
    for (name, condition) in [("sns", "Ready"), ("pubsub", "TopicsReady")] {
        op.wait(&format!("{name}: {condition}=False"), || {
            let eb = cluster.get(&ns, "eventbroker", name).ok_or("absent")?;
            if condition_status(&eb, condition) == "False" {
                Ok(())
            } else {
                Err(status_summary(&eb))
            }
        });
    }
    cluster.wait(
        &ns,
        "statefulset.apps/site-a-bridge",
        "jsonpath={.status.readyReplicas}=1",
        TIMEOUT,
        || op.log_tail(),
    );
    let sts = cluster.get_json(&ns, "statefulset.apps", "site-a-bridge");
    let mut agent = HostPod::start(&cluster, &ns, &sts, "bridge", &agent_bin());
    let runtime = op.wait(
        "the agent's status.runtime with the edge up, the cloud down",
        || {
            let bl = cluster.get(&ns, "bridgelink", "site-a").ok_or("absent")?;
            let rt = bl["status"]["runtime"].clone();
            if rt["edgeConnected"] == true && rt["cloudConnected"] == false {
                Ok(rt)
            } else {
                Err(format!("runtime {rt}\n{}", agent.log_tail()))
            }
        },
    );
    assert!(agent.is_running(), "{}", agent.log_tail());
    let addr = agent
        .http_addr()
        .expect("the agent's HTTP address")
        .to_string();
    let (code, ready) = http(&addr, "GET", "/readyz", &[], "").unwrap();
    assert_eq!(code, 200, "the edge is connected: {ready}");
    let (code, health) = http(&addr, "GET", "/healthz", &[], "").unwrap();
    assert_eq!(code, 200, "{health}");
    let (code, metrics) = http(&addr, "GET", "/metrics", &[], "").unwrap();
    assert_eq!(code, 200, "{metrics}");
    assert!(
        metrics.contains("edgewire_bridge_cloud_connected 0"),
        "{metrics}"
    );

    // Everything a user or a scraper sees.
    let events = cluster.kubectl_ok(&["get", "events", "-n", &ns, "-o", "json"]);
    // The statuses (a spec holds what the user wrote, URLs included).
    let statuses: Vec<Value> = cluster
        .list(&ns, "eventbroker,bridgelink", "")
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses.len(), 4);
    let statuses = serde_json::to_string_pretty(&statuses).unwrap();
    let op_metrics = op.metrics().expect("operator /metrics");
    assert_clean("Events", &events);
    assert_clean("the statuses", &statuses);
    assert_clean("the operator's /metrics", &op_metrics);
    assert_clean("the operator's log", &op.log());
    assert_clean("the agent's status.runtime", &runtime.to_string());
    assert_clean("the agent's /metrics", &metrics);
    assert_clean("the agent's /healthz", &health);
    assert_clean("the agent's /readyz", &ready);
    assert_clean("the agent's log", &agent.log());
    let events: Value = serde_json::from_str(&events).unwrap();
    let events = events["items"].as_array().cloned().unwrap_or_default();
    println!(
        "searched {} Events (nkey: {:?}), 4 resources, {} + {} bytes of /metrics and status.runtime {runtime}: no planted credential",
        events.len(),
        warnings_about(&events, "nkey"),
        op_metrics.len(),
        metrics.len()
    );
}
