//! EventBroker `google_pubsub` with `provision: true`: the controller's reconcile over the mocked Kubernetes
//! API against the fake Pub/Sub server of the test tree (`edgewire_e2e::pubsub`), which the official
//! `TopicAdmin` client talks to over the service's REST paths. The fake holds the topics with their labels,
//! records every request in order and injects failures (PERMISSION_DENIED).

#[allow(dead_code)]
mod support;

use edgewire_api::testing::NAMESPACE;
use edgewire_api::*;
use edgewire_e2e::pubsub::{Code, FakePubSub, Method};
use edgewire_operator::controller::event_broker::reconcile;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use support::ctx;
use support::mock_api::{MockApi, Recorded, object_path};

const PROJECT: &str = "my-project-123";
const FINALIZER: &str = "edgewire.dev/cleanup";
const LABEL: &str = "edgewire-dev-owner";
const OWNER: &str = "factory_events";
const NAMES: [&str; 4] = [
    "edge-nodes-events",
    "edge-commands-events",
    "edge-self-updates-events",
    "edge-ssh-events",
];

fn path(prefix: &str, name: &str) -> String {
    format!("projects/{PROJECT}/topics/{prefix}{name}")
}

fn paths(prefix: &str) -> Vec<String> {
    NAMES.iter().map(|n| path(prefix, n)).collect()
}

fn pubsub_broker(
    name: &str,
    endpoint: &str,
    prefix: Option<&str>,
    policy: DeletionPolicy,
) -> EventBroker {
    let mut eb = EventBroker::test(name).adapter(Adapter::GooglePubsub);
    eb.spec.deletion_policy = policy;
    let s = eb.spec.google_pubsub.as_mut().unwrap();
    s.project = PROJECT.into();
    s.provision = true;
    s.endpoint = Some(endpoint.into());
    s.topic_id_prefix = prefix.map(str::to_string);
    s.service_account = Some("edge-publisher@my-project-123.iam.gserviceaccount.com".into());
    eb
}

fn secret(name: &str, key: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// A service-account key file with a fresh RSA key (openssl), as `gcloud iam service-accounts keys create`
/// writes it.
fn service_account_json() -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl (package openssl) generates the test key");
    assert!(out.status.success(), "openssl genpkey failed");
    let pem = String::from_utf8(out.stdout).unwrap();
    serde_json::json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "edgewire-operator@my-project-123.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
    })
    .to_string()
}

fn stored(mock: &MockApi, eb: &EventBroker) -> Option<EventBroker> {
    let path = object_path(&serde_json::to_value(eb).unwrap());
    mock.object(&path)
        .map(|v| serde_json::from_value(v).unwrap())
}

async fn run(mock: &MockApi, client: &kube::Client, eb: &EventBroker) -> Vec<Recorded> {
    let current = stored(mock, eb).expect("stored");
    mock.clear_requests();
    reconcile(Arc::new(current), ctx(client.clone()))
        .await
        .expect("reconcile succeeds");
    mock.requests()
}

fn status(mock: &MockApi, eb: &EventBroker) -> Value {
    serde_json::to_value(stored(mock, eb).unwrap().status.unwrap()).unwrap()
}

fn condition(status: &Value, type_: &str) -> Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or_else(|| panic!("no condition {type_} in {status}"))
}

fn finalizers(eb: &EventBroker) -> Vec<String> {
    eb.metadata.finalizers.clone().unwrap_or_default()
}

fn deployment(mock: &MockApi, name: &str) -> Value {
    mock.object(&format!(
        "/apis/apps/v1/namespaces/factory/deployments/{name}-publisher"
    ))
    .expect("publisher Deployment applied")
}

/// The publisher container's env as applied: name → value or `secret:<name>/<key>`.
fn publisher_env(mock: &MockApi, name: &str) -> Vec<(String, String)> {
    deployment(mock, name)["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let v = match e["value"].as_str() {
                Some(v) => v.to_string(),
                None => format!(
                    "secret:{}/{}",
                    e["valueFrom"]["secretKeyRef"]["name"].as_str().unwrap(),
                    e["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap()
                ),
            };
            (e["name"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn env_of<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The topics the fake holds: name → owner label (empty when unlabelled).
fn topics(fake: &FakePubSub) -> BTreeMap<String, String> {
    fake.topics()
        .into_iter()
        .map(|t| {
            let owner = t.labels.get(LABEL).cloned().unwrap_or_default();
            (t.name, owner)
        })
        .collect()
}

fn status_topics(st: &Value) -> Vec<(String, String, String)> {
    st["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["domain"].as_str().unwrap().into(),
                t["name"].as_str().unwrap().into(),
                t["id"].as_str().unwrap().into(),
            )
        })
        .collect()
}

fn expected_status_topics(prefix: &str) -> Vec<(String, String, String)> {
    ["nodes", "commands", "self_updates", "ssh"]
        .iter()
        .zip(NAMES)
        .map(|(d, n)| (d.to_string(), format!("{prefix}{n}"), path(prefix, n)))
        .collect()
}

#[tokio::test]
async fn provisions_four_labelled_topics_once_and_deletes_only_ours() {
    let fake = FakePubSub::start().await.unwrap();
    let endpoint = fake.endpoint();
    // Someone else's topic with a domain name, unlabelled: used, never deleted. And an unrelated one.
    let foreign = path("", "edge-ssh-events");
    fake.create_topic(&foreign, &[]);
    let billing = format!("projects/{PROJECT}/topics/billing");
    fake.create_topic(&billing, &[]);

    let (client, mock) = MockApi::start();
    let eb = pubsub_broker("events", &endpoint, None, DeletionPolicy::Delete);
    mock.insert(&eb);
    run(&mock, &client, &eb).await;

    // Exactly the four domain topics (three created with our label, the foreign one kept as it was).
    let mut want = BTreeMap::from([
        (billing.clone(), String::new()),
        (foreign.clone(), String::new()),
    ]);
    for n in &NAMES[..3] {
        want.insert(path("", n), OWNER.to_string());
    }
    assert_eq!(topics(&fake), want);
    // Each topic is read; the three missing ones are created, with the label; the existing one is not.
    let calls: Vec<(Method, String, Option<Code>)> = fake
        .requests()
        .into_iter()
        .map(|r| (r.method, r.topic, r.failed))
        .collect();
    let mut expected_calls: Vec<(Method, String, Option<Code>)> = Vec::new();
    for n in &NAMES[..3] {
        expected_calls.push((Method::GetTopic, path("", n), Some(Code::NotFound)));
        expected_calls.push((Method::CreateTopic, path("", n), None));
    }
    expected_calls.push((Method::GetTopic, foreign.clone(), None));
    assert_eq!(calls, expected_calls);
    assert!(
        fake.requests_of(Method::CreateTopic)
            .iter()
            .all(|r| r.labels == BTreeMap::from([(LABEL.to_string(), OWNER.to_string())]))
    );

    let st = status(&mock, &eb);
    assert_eq!(status_topics(&st), expected_status_topics(""));
    let tr = condition(&st, "TopicsReady");
    assert_eq!(tr["status"], "True", "{tr}");
    assert!(
        tr["message"].as_str().unwrap().contains(
            "(no edgewire-dev-owner=factory_events label), used but never deleted: edge-ssh-events"
        ),
        "{tr}"
    );
    assert_eq!(finalizers(&stored(&mock, &eb).unwrap()), [FINALIZER]);

    // The publisher: the seed's env, no credentials file; Workload Identity on its ServiceAccount.
    let env = publisher_env(&mock, "events");
    assert_eq!(env_of(&env, "EVENT_BROKER_ADAPTER"), Some("google_pubsub"));
    assert_eq!(
        env_of(&env, "EVENT_BROKER_GOOGLE_PUBSUB_PROJECT"),
        Some(PROJECT)
    );
    assert_eq!(
        env_of(&env, "EVENT_BROKER_GOOGLE_PUBSUB_ENDPOINT"),
        Some(endpoint.as_str())
    );
    assert_eq!(
        env_of(&env, "EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX"),
        None
    );
    assert_eq!(env_of(&env, "GOOGLE_APPLICATION_CREDENTIALS"), None);
    let sa = mock
        .object("/api/v1/namespaces/factory/serviceaccounts/events-publisher")
        .unwrap();
    assert_eq!(
        sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"],
        "edge-publisher@my-project-123.iam.gserviceaccount.com"
    );

    // A second reconcile creates nothing new and writes no status.
    fake.clear_requests();
    let reqs = run(&mock, &client, &eb).await;
    assert!(
        !reqs.iter().any(|r| r.path.ends_with("/status")),
        "{:?}",
        reqs.iter().map(|r| r.line()).collect::<Vec<_>>()
    );
    assert!(
        fake.requests_of(Method::CreateTopic).is_empty(),
        "a second reconcile must not create a topic: {:?}",
        fake.requests()
    );
    assert_eq!(fake.requests_of(Method::GetTopic).len(), 4);
    assert_eq!(topics(&fake), want);

    // Deleted with Delete: our three topics go; the foreign one and the unrelated one stay.
    fake.clear_requests();
    let api: Api<EventBroker> = Api::namespaced(client.clone(), NAMESPACE);
    api.delete("events", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        stored(&mock, &eb)
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    run(&mock, &client, &eb).await;
    assert_eq!(
        topics(&fake),
        BTreeMap::from([(billing, String::new()), (foreign.clone(), String::new())])
    );
    let deletes: Vec<String> = fake
        .requests_of(Method::DeleteTopic)
        .into_iter()
        .map(|r| r.topic)
        .collect();
    assert_eq!(
        deletes,
        paths("")[..3].to_vec(),
        "never a delete of {foreign}"
    );
    assert!(
        stored(&mock, &eb).is_none(),
        "finalizer removed, object gone"
    );
}

#[tokio::test]
async fn a_prefix_a_credentials_key_and_retain() {
    let fake = FakePubSub::start().await.unwrap();
    let endpoint = fake.endpoint();
    let key_json = service_account_json();
    let (client, mock) = MockApi::start();
    let mut eb = pubsub_broker(
        "events",
        &endpoint,
        Some("edge-prod-"),
        DeletionPolicy::Retain,
    );
    eb.spec.google_pubsub.as_mut().unwrap().credentials =
        Some(SecretKeyRef::new("gcp-key", "key.json"));
    mock.insert(&eb);
    mock.insert(&secret("gcp-key", "key.json", &key_json));
    let reqs = run(&mock, &client, &eb).await;
    for r in &reqs {
        let body = r.body.as_ref().map(Value::to_string).unwrap_or_default();
        assert!(
            !body.contains("PRIVATE KEY"),
            "a credential reached the API: {}",
            r.line()
        );
    }

    // The operator called Pub/Sub as the key's service account (self-signed JWT): four prefixed topics.
    let want: BTreeMap<String, String> = paths("edge-prod-")
        .into_iter()
        .map(|p| (p, OWNER.to_string()))
        .collect();
    assert_eq!(topics(&fake), want);
    let st = status(&mock, &eb);
    assert_eq!(status_topics(&st), expected_status_topics("edge-prod-"));
    assert_eq!(
        condition(&st, "TopicsReady")["message"],
        "4 topics provisioned"
    );
    assert!(
        finalizers(&stored(&mock, &eb).unwrap()).is_empty(),
        "Retain: no finalizer"
    );

    // The publisher mounts the key and names it; the prefix is passed on.
    let env = publisher_env(&mock, "events");
    assert_eq!(
        env_of(&env, "EVENT_BROKER_GOOGLE_PUBSUB_TOPIC_ID_PREFIX"),
        Some("edge-prod-")
    );
    assert_eq!(
        env_of(&env, "GOOGLE_APPLICATION_CREDENTIALS"),
        Some("/etc/edgewire/gcp/credentials.json")
    );
    let pod = &deployment(&mock, "events")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == "gcp-key")
        .expect("a volume of the credentials Secret");
    assert_eq!(
        volume["secret"]["items"],
        serde_json::json!([{"key": "key.json", "path": "credentials.json"}])
    );
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the credentials volume is mounted");
    assert_eq!(mount["mountPath"], "/etc/edgewire/gcp");
    assert_eq!(mount["readOnly"], true);

    let api: Api<EventBroker> = Api::namespaced(client.clone(), NAMESPACE);
    api.delete("events", &DeleteParams::default())
        .await
        .unwrap();
    assert!(stored(&mock, &eb).is_none());
    assert_eq!(topics(&fake), want, "Retain leaves the topics");
    assert!(fake.requests_of(Method::DeleteTopic).is_empty());
}

#[tokio::test]
async fn denied_permissions_surface_in_topics_ready() {
    let fake = FakePubSub::start().await.unwrap();
    fake.fail_always(Method::CreateTopic, Code::PermissionDenied);
    let (client, mock) = MockApi::start();
    let eb = pubsub_broker(
        "denied",
        &fake.endpoint(),
        Some("edge-prod-"),
        DeletionPolicy::Retain,
    );
    mock.insert(&eb);
    let current = stored(&mock, &eb).unwrap();
    let action = reconcile(Arc::new(current), ctx(client.clone()))
        .await
        .expect("a denied call is a status, not a reconcile error");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(
            edgewire_operator::controller::event_broker::topics::RETRY
        )
    );
    assert!(fake.topics().is_empty());
    let st = status(&mock, &eb);
    let tr = condition(&st, "TopicsReady");
    assert_eq!(tr["status"], "False");
    assert_eq!(tr["reason"], "ProvisioningFailed");
    let msg = tr["message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "4 of 4 topics failed: edge-prod-edge-nodes-events: pubsub.topics.create denied (PERMISSION_DENIED)"
        ),
        "{msg}"
    );
    for n in NAMES {
        assert!(msg.contains(&format!("edge-prod-{n}")), "{msg}");
    }
    assert_eq!(condition(&st, "Ready")["status"], "False");
    assert_eq!(condition(&st, "Stalled")["status"], "True");
    assert_eq!(condition(&st, "Stalled")["reason"], "PermissionDenied");
    assert_eq!(condition(&st, "Reconciling")["status"], "False");

    // The permission is granted: the next reconcile provisions them.
    fake.stop_failing(Method::CreateTopic);
    run(&mock, &client, &eb).await;
    assert_eq!(fake.topics().len(), 4);
    assert_eq!(
        condition(&status(&mock, &eb), "TopicsReady")["status"],
        "True"
    );
}

#[tokio::test]
async fn a_credentials_key_that_is_not_a_service_account_key_is_named_not_shown() {
    let fake = FakePubSub::start().await.unwrap();
    let (client, mock) = MockApi::start();
    let mut eb = pubsub_broker("badkey", &fake.endpoint(), None, DeletionPolicy::Retain);
    eb.spec.google_pubsub.as_mut().unwrap().credentials =
        Some(SecretKeyRef::new("gcp-key", "key.json"));
    mock.insert(&eb);
    mock.insert(&secret("gcp-key", "key.json", "not-json-s3cr3t-value"));
    let reqs = run(&mock, &client, &eb).await;
    for r in &reqs {
        let body = r.body.as_ref().map(Value::to_string).unwrap_or_default();
        assert!(!body.contains("s3cr3t"), "{}", r.line());
    }
    assert!(fake.requests().is_empty(), "no call without credentials");
    let tr = condition(&status(&mock, &eb), "TopicsReady");
    assert_eq!(tr["status"], "False");
    assert!(
        tr["message"]
            .as_str()
            .unwrap()
            .contains("the credentials Secret key is not JSON"),
        "{tr}"
    );
}
