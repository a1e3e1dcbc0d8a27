//! EventBroker `aws_sns` with `provision: true`: the controller's reconcile over the mocked Kubernetes API,
//! against a real `moto_server` for SNS (read back with the AWS SDK), and an in-test HTTP responder that
//! answers every call with SNS's AccessDenied (`AuthorizationError`).

#[allow(dead_code)]
mod support;

use edgewire_api::testing::NAMESPACE;
use edgewire_api::*;
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use edgewire_operator::cloud::aws::{AwsSettings, StaticKeys, sdk_config};
use edgewire_operator::controller::event_broker::reconcile;
use edgewire_operator::secret::SecretString;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use support::ctx;
use support::mock_api::{MockApi, Recorded, object_path};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ACCOUNT_ARN: &str = "arn:aws:sns:us-east-1:123456789012:";
const FINALIZER: &str = "edgewire.dev/cleanup";
const NAMES: [&str; 4] = [
    "edge-nodes-events",
    "edge-commands-events",
    "edge-self-updates-events",
    "edge-ssh-events",
];

fn aws_secret() -> Secret {
    let data = [
        ("AWS_ACCESS_KEY_ID", "AKIASNSTEST"),
        ("AWS_SECRET_ACCESS_KEY", "sns-test-secret-key"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some("aws-creds".into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

fn sns_broker(
    name: &str,
    endpoint: &str,
    prefix: Option<&str>,
    policy: DeletionPolicy,
) -> EventBroker {
    let mut eb = EventBroker::test(name).adapter(Adapter::AwsSns);
    eb.spec.deletion_policy = policy;
    let s = eb.spec.aws_sns.as_mut().unwrap();
    s.provision = true;
    s.endpoint = Some(endpoint.into());
    s.credentials = Some(SecretRef::new("aws-creds"));
    s.topic_arn_prefix = prefix.map(str::to_string);
    s.role_arn = Some("arn:aws:iam::123456789012:role/edgewire-publisher".into());
    eb
}

async fn sns(endpoint: &str) -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(
        &sdk_config(&AwsSettings {
            region: "us-east-1".into(),
            endpoint: Some(endpoint.into()),
            credentials: Some(StaticKeys {
                access_key_id: SecretString::from("AKIAREADER"),
                secret_access_key: SecretString::from("reader"),
                session_token: None,
            }),
        })
        .await,
    )
}

/// Every topic ARN moto has.
async fn topic_arns(c: &aws_sdk_sns::Client) -> BTreeSet<String> {
    let out = c.list_topics().send().await.unwrap();
    out.topics()
        .iter()
        .filter_map(|t| t.topic_arn().map(str::to_string))
        .collect()
}

fn arns(prefix: &str) -> BTreeSet<String> {
    NAMES.iter().map(|n| format!("{prefix}{n}")).collect()
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

/// The publisher container's env as applied: name → value or `secret:<name>/<key>`.
fn publisher_env(mock: &MockApi, name: &str) -> Vec<(String, String)> {
    let d = mock
        .object(&format!(
            "/apis/apps/v1/namespaces/factory/deployments/{name}-publisher"
        ))
        .expect("publisher Deployment applied");
    d["spec"]["template"]["spec"]["containers"][0]["env"]
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

#[tokio::test]
async fn provisions_four_topics_once_and_deletes_only_ours() {
    let moto = BrokerProcess::start_default(Kind::Moto).expect("moto_server starts");
    let url = moto.url();
    let aws = sns(&url).await;
    // Someone else's topic with a domain name, untagged: used, never deleted.
    let foreign = aws
        .create_topic()
        .name("edge-ssh-events")
        .send()
        .await
        .unwrap()
        .topic_arn()
        .unwrap()
        .to_string();
    // And an unrelated one.
    aws.create_topic().name("billing").send().await.unwrap();

    let (client, mock) = MockApi::start();
    let eb = sns_broker("events", &url, None, DeletionPolicy::Delete);
    mock.insert(&eb);
    mock.insert(&aws_secret());
    let reqs = run(&mock, &client, &eb).await;
    for r in &reqs {
        let body = r.body.as_ref().map(Value::to_string).unwrap_or_default();
        assert!(
            !body.contains("sns-test-secret-key"),
            "a credential reached the API: {}",
            r.line()
        );
    }

    // Exactly the four domain topics (plus the two that were there).
    let mut expected = arns(ACCOUNT_ARN);
    expected.insert(format!("{ACCOUNT_ARN}billing"));
    assert_eq!(topic_arns(&aws).await, expected);
    let st = status(&mock, &eb);
    let topics: Vec<(String, String, String)> = st["topics"]
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
        .collect();
    let want: Vec<(String, String, String)> = ["nodes", "commands", "self_updates", "ssh"]
        .iter()
        .zip(NAMES)
        .map(|(d, n)| (d.to_string(), n.to_string(), format!("{ACCOUNT_ARN}{n}")))
        .collect();
    assert_eq!(topics, want);
    let tr = condition(&st, "TopicsReady");
    assert_eq!(tr["status"], "True", "{tr}");
    assert!(
        tr["message"]
            .as_str()
            .unwrap()
            .contains("used but never deleted: edge-ssh-events"),
        "{tr}"
    );
    assert_eq!(finalizers(&stored(&mock, &eb).unwrap()), [FINALIZER]);

    // The publisher: the seed's env, the prefix derived from the ARNs, keys through secretKeyRef; IRSA.
    let env = publisher_env(&mock, "events");
    assert_eq!(env_of(&env, "EVENT_BROKER_ADAPTER"), Some("aws_sns"));
    assert_eq!(
        env_of(&env, "EVENT_BROKER_AWS_SNS_REGION"),
        Some("us-east-1")
    );
    assert_eq!(
        env_of(&env, "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX"),
        Some(ACCOUNT_ARN)
    );
    assert_eq!(
        env_of(&env, "EVENT_BROKER_AWS_SNS_ENDPOINT"),
        Some(url.as_str())
    );
    assert_eq!(
        env_of(&env, "AWS_ACCESS_KEY_ID"),
        Some("secret:aws-creds/AWS_ACCESS_KEY_ID")
    );
    assert_eq!(
        env_of(&env, "AWS_SECRET_ACCESS_KEY"),
        Some("secret:aws-creds/AWS_SECRET_ACCESS_KEY")
    );
    let sa = mock
        .object("/api/v1/namespaces/factory/serviceaccounts/events-publisher")
        .unwrap();
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/edgewire-publisher"
    );

    // A second reconcile changes nothing: same topics, no status write.
    let reqs = run(&mock, &client, &eb).await;
    assert!(
        !reqs.iter().any(|r| r.path.ends_with("/status")),
        "{:?}",
        reqs.iter().map(|r| r.line()).collect::<Vec<_>>()
    );
    assert_eq!(topic_arns(&aws).await, expected);

    // Deleted with Delete: our three topics go; the foreign one and the unrelated one stay.
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
        topic_arns(&aws).await,
        BTreeSet::from([foreign, format!("{ACCOUNT_ARN}billing")])
    );
    assert!(
        stored(&mock, &eb).is_none(),
        "finalizer removed, object gone"
    );
}

#[tokio::test]
async fn a_name_prefix_and_retain() {
    let moto = BrokerProcess::start_default(Kind::Moto).expect("moto_server starts");
    let url = moto.url();
    let aws = sns(&url).await;
    let prefix = format!("{ACCOUNT_ARN}prod-");
    let (client, mock) = MockApi::start();
    let eb = sns_broker("events", &url, Some(&prefix), DeletionPolicy::Retain);
    mock.insert(&eb);
    mock.insert(&aws_secret());
    run(&mock, &client, &eb).await;
    assert_eq!(topic_arns(&aws).await, arns(&prefix));
    let st = status(&mock, &eb);
    assert_eq!(st["topics"][0]["name"], "prod-edge-nodes-events");
    assert_eq!(
        condition(&st, "TopicsReady")["message"],
        "4 topics provisioned"
    );
    assert!(
        finalizers(&stored(&mock, &eb).unwrap()).is_empty(),
        "Retain: no finalizer"
    );
    let env = publisher_env(&mock, "events");
    assert_eq!(
        env_of(&env, "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX"),
        Some(prefix.as_str())
    );

    let api: Api<EventBroker> = Api::namespaced(client.clone(), NAMESPACE);
    api.delete("events", &DeleteParams::default())
        .await
        .unwrap();
    assert!(stored(&mock, &eb).is_none());
    assert_eq!(
        topic_arns(&aws).await,
        arns(&prefix),
        "Retain leaves the topics"
    );
}

/// Answers every request as SNS does when the caller lacks permission.
async fn access_denied_responder() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head and the body (Content-Length) before answering.
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                let body = "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error><Type>Sender</Type><Code>AuthorizationError</Code><Message>User: arn:aws:iam::123456789012:user/edgewire is not authorized to perform: SNS:CreateTopic</Message></Error><RequestId>edgewire-test</RequestId></ErrorResponse>";
                let resp = format!(
                    "HTTP/1.1 403 Forbidden\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn denied_permissions_surface_in_topics_ready() {
    let url = access_denied_responder().await;
    let (client, mock) = MockApi::start();
    let prefix = format!("{ACCOUNT_ARN}prod-");
    let eb = sns_broker("denied", &url, Some(&prefix), DeletionPolicy::Retain);
    mock.insert(&eb);
    mock.insert(&aws_secret());
    let current = stored(&mock, &eb).unwrap();
    mock.clear_requests();
    let action = reconcile(Arc::new(current), ctx(client.clone()))
        .await
        .expect("a denied call is a status, not a reconcile error");
    let failure_events = |reqs: &[Recorded]| -> Vec<Value> {
        reqs.iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
            .filter_map(|r| r.body.clone())
            .filter(|ev| ev["reason"] == "ProvisioningFailed")
            .collect()
    };
    // The failure is told once, as a Warning Event naming the topics and the refusal.
    let events = failure_events(&mock.requests());
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["type"], "Warning");
    assert_eq!(events[0]["regarding"]["name"], "denied");
    let note = events[0]["note"].as_str().unwrap();
    assert!(
        note.contains("prod-edge-nodes-events") && note.contains("sns:CreateTopic denied"),
        "{note}"
    );
    // A retry that fails the same way says nothing new.
    let again = run(&mock, &client, &eb).await;
    assert_eq!(failure_events(&again), Vec::<Value>::new());
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(
            edgewire_operator::controller::event_broker::topics::RETRY
        )
    );
    let st = status(&mock, &eb);
    let tr = condition(&st, "TopicsReady");
    assert_eq!(tr["status"], "False");
    assert_eq!(tr["reason"], "ProvisioningFailed");
    let msg = tr["message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "4 of 4 topics failed: prod-edge-nodes-events, prod-edge-commands-events, prod-edge-self-updates-events, prod-edge-ssh-events: sns:CreateTopic denied (AuthorizationError): User: arn:aws:iam::123456789012:user/edgewire is not authorized to perform: SNS:CreateTopic"
        ),
        "{msg}"
    );
    assert_eq!(condition(&st, "Ready")["status"], "False");
    // A denied action waits for a change of the IAM policy: Stalled (kstatus Failed), not Reconciling.
    let stalled = condition(&st, "Stalled");
    assert_eq!(
        (stalled["status"].as_str(), stalled["reason"].as_str()),
        (Some("True"), Some("PermissionDenied")),
        "{stalled}"
    );
    assert_eq!(stalled["message"], condition(&st, "Ready")["message"]);
    assert_eq!(condition(&st, "Reconciling")["status"], "False");
    // The publisher is still applied (the ARN prefix is in the spec): it publishes once the policy is fixed.
    assert!(
        publisher_env(&mock, "denied")
            .iter()
            .any(|(n, _)| n == "EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX")
    );
}

/// The credentials Secret is gone when the EventBroker is deleted — a namespace deletion, where the Secrets may
/// go first and nothing can be created any more: the cleanup can never run. The topics stay in SNS (nothing
/// pretends otherwise), a Warning Event `CleanupAbandoned` names each of them and the Secret — in the
/// operator's own namespace, since the EventBroker's refuses new objects — and the finalizer goes, so the
/// deletion (and the namespace's) ends.
#[tokio::test]
async fn a_deletion_without_its_credentials_names_the_topics_left_and_ends() {
    let moto = BrokerProcess::start_default(Kind::Moto).expect("moto_server starts");
    let url = moto.url();
    let aws = sns(&url).await;
    let (client, mock) = MockApi::start();
    let eb = sns_broker("events", &url, None, DeletionPolicy::Delete);
    mock.insert(&eb);
    mock.insert(&aws_secret());
    run(&mock, &client, &eb).await;
    let expected = arns(ACCOUNT_ARN);
    assert_eq!(topic_arns(&aws).await, expected);
    assert_eq!(finalizers(&stored(&mock, &eb).unwrap()), [FINALIZER]);

    // The namespace is deleted: its Secret goes first, then the EventBroker is marked.
    mock.terminate_namespace(NAMESPACE);
    mock.remove("/api/v1/namespaces/factory/secrets/aws-creds")
        .expect("the Secret was there");
    let api: Api<EventBroker> = Api::namespaced(client.clone(), NAMESPACE);
    api.delete("events", &DeleteParams::default())
        .await
        .unwrap();
    let reqs = run(&mock, &client, &eb).await;
    assert!(
        stored(&mock, &eb).is_none(),
        "finalizer removed, object gone: {:?}",
        reqs.iter().map(|r| r.line()).collect::<Vec<_>>()
    );
    assert_eq!(
        topic_arns(&aws).await,
        expected,
        "nothing can be deleted without the credentials"
    );
    let events: Vec<&Recorded> = reqs
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .collect();
    assert_eq!(
        events.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        [
            "/apis/events.k8s.io/v1/namespaces/factory/events",
            "/apis/events.k8s.io/v1/namespaces/edgewire-system/events"
        ],
        "refused in the namespace being deleted, then recorded in the operator's"
    );
    let ev = events[1].body.as_ref().unwrap();
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["reason"], "CleanupAbandoned");
    assert_eq!(ev["reportingController"], "edgewire-operator");
    assert_eq!(ev["reportingInstance"], "test");
    assert_eq!(ev["regarding"]["kind"], "EventBroker");
    assert_eq!(ev["regarding"]["namespace"], NAMESPACE);
    assert_eq!(ev["regarding"]["name"], "events");
    let note = ev["note"].as_str().unwrap();
    for arn in &expected {
        assert!(note.contains(arn.as_str()), "{arn} not named: {note}");
    }
    assert!(
        note.contains("Secret aws-creds (spec.awsSns.credentials) not found"),
        "{note}"
    );
    // The finalizer went after the Event.
    let last = reqs.last().unwrap();
    assert_eq!(
        last.line(),
        "PATCH /apis/edgewire.dev/v1alpha1/namespaces/factory/eventbrokers/events"
    );
    assert_eq!(
        last.body.as_ref().unwrap()["metadata"]["finalizers"],
        serde_json::json!([])
    );
}
