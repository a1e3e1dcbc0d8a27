//! MqttBroker `type: iotcore`: the controller's reconcile over the mocked Kubernetes API, against a real
//! `moto_server` for AWS. What the controller did is read back from moto with the AWS SDK (GetTopicRule).

#[allow(dead_code)]
mod support;

use edgewire_api::testing::NAMESPACE;
use edgewire_api::*;
use edgewire_e2e::brokers::{BrokerProcess, Kind};
use edgewire_operator::controller::mqtt_broker::reconcile;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta};
use serde_json::Value;
use std::sync::Arc;
use support::ctx;
use support::mock_api::{MockApi, Recorded, object_path};

const REGION: &str = "us-east-1";
const ROLE: &str = "arn:aws:iam::123456789012:role/iot-to-sqs";
const FINALIZER: &str = "edgewire.dev/cleanup";

fn aws_secret() -> Secret {
    let data = [
        ("AWS_ACCESS_KEY_ID", "AKIAEDGEWIRETEST"),
        ("AWS_SECRET_ACCESS_KEY", "edgewire-test-secret-key"),
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

fn iotcore(
    name: &str,
    endpoint: &str,
    rule: &str,
    queue: &str,
    policy: DeletionPolicy,
) -> MqttBroker {
    let mut mqb = MqttBroker::test(name);
    mqb.spec.broker_type = MqttBrokerType::Iotcore;
    mqb.spec.builtin = None;
    mqb.spec.deletion_policy = policy;
    mqb.spec.iotcore = Some(IotCoreSpec {
        region: REGION.into(),
        credentials: Some(SecretRef::new("aws-creds")),
        topic_rule: Some(TopicRule {
            name: rule.into(),
            sqs_queue_url: queue.into(),
            role_arn: ROLE.into(),
        }),
        api_endpoint: Some(endpoint.into()),
    });
    mqb
}

async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    edgewire_operator::cloud::aws::sdk_config(&edgewire_operator::cloud::aws::AwsSettings {
        region: REGION.into(),
        endpoint: Some(endpoint.into()),
        credentials: Some(edgewire_operator::cloud::aws::StaticKeys {
            access_key_id: edgewire_operator::secret::SecretString::from("AKIAREADER"),
            secret_access_key: edgewire_operator::secret::SecretString::from("reader"),
            session_token: None,
        }),
    })
    .await
}

async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string()
}

fn stored(mock: &MockApi, mqb: &MqttBroker) -> Option<MqttBroker> {
    let path = object_path(&serde_json::to_value(mqb).unwrap());
    mock.object(&path)
        .map(|v| serde_json::from_value(v).unwrap())
}

async fn run(mock: &MockApi, client: &kube::Client, mqb: &MqttBroker) -> Vec<Recorded> {
    let current = stored(mock, mqb).expect("stored");
    mock.clear_requests();
    reconcile(Arc::new(current), ctx(client.clone()))
        .await
        .expect("reconcile succeeds");
    mock.requests()
}

/// Replaces the spec of the stored object (a user's edit: new generation, status kept).
fn edit(mock: &MockApi, mqb: &MqttBroker, f: impl FnOnce(&mut MqttBroker)) {
    let mut cur = stored(mock, mqb).unwrap();
    f(&mut cur);
    cur.metadata.generation = Some(cur.metadata.generation.unwrap_or(1) + 1);
    mock.insert(&cur);
}

fn status(mock: &MockApi, mqb: &MqttBroker) -> Value {
    serde_json::to_value(stored(mock, mqb).unwrap().status.unwrap()).unwrap()
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

/// The rule as moto has it: (sql, [(queue, role)]), or `None`.
async fn rule(iot: &aws_sdk_iot::Client, name: &str) -> Option<(String, Vec<(String, String)>)> {
    match iot.get_topic_rule().rule_name(name).send().await {
        Ok(out) => {
            let r = out.rule().unwrap();
            let actions = r
                .actions()
                .iter()
                .map(|a| {
                    let s = a.sqs().expect("an SQS action");
                    (s.queue_url().to_string(), s.role_arn().to_string())
                })
                .collect();
            Some((r.sql().unwrap().to_string(), actions))
        }
        Err(e) => {
            let code = aws_sdk_iot::error::ProvideErrorMetadata::code(&e).map(str::to_string);
            assert_eq!(code.as_deref(), Some("ResourceNotFoundException"), "{e:?}");
            None
        }
    }
}

fn finalizers(mqb: &MqttBroker) -> Vec<String> {
    mqb.metadata.finalizers.clone().unwrap_or_default()
}

#[tokio::test]
async fn endpoint_rule_update_and_delete_against_moto() {
    let moto = BrokerProcess::start_default(Kind::Moto).expect("moto_server starts");
    let url = moto.url();
    let conf = sdk(&url).await;
    let iot = aws_sdk_iot::Client::new(&conf);
    let sqs = aws_sdk_sqs::Client::new(&conf);
    let q1 = queue(&sqs, "workers-in").await;
    let q2 = queue(&sqs, "workers-in-v2").await;

    let (client, mock) = MockApi::start();
    let mqb = iotcore(
        "workers",
        &url,
        "workers_to_sqs",
        &q1,
        DeletionPolicy::Delete,
    );
    mock.insert(&mqb);
    mock.insert(&aws_secret());

    let reqs = run(&mock, &client, &mqb).await;
    // No children in the cluster: the only writes are the finalizer, the status and Events.
    let writes: Vec<String> = reqs
        .iter()
        .filter(|r| r.method != "GET" && !r.path.contains("/events"))
        .map(|r| r.line())
        .collect();
    let path = "/apis/edgewire.dev/v1alpha1/namespaces/factory/mqttbrokers/workers";
    assert_eq!(
        writes,
        [format!("PATCH {path}"), format!("PATCH {path}/status")]
    );
    for r in &reqs {
        let body = r.body.as_ref().map(Value::to_string).unwrap_or_default();
        assert!(
            !body.contains("edgewire-test-secret-key") && !body.contains("AKIAEDGEWIRETEST"),
            "a credential reached the API: {} {body}",
            r.line()
        );
    }
    let now = stored(&mock, &mqb).unwrap();
    assert_eq!(finalizers(&now), [FINALIZER], "Delete policy: finalizer");

    // The endpoint is what IoT Core (moto) discovered, with the MQTT-over-TLS port. (moto invents a new
    // host on every DescribeEndpoint; AWS answers one per account.)
    let st = status(&mock, &mqb);
    let endpoint = st["endpoint"].as_str().unwrap();
    let host = endpoint
        .strip_suffix("-ats.iot.us-east-1.amazonaws.com:8883")
        .unwrap_or_else(|| panic!("{endpoint}"));
    assert!(
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{endpoint}"
    );
    assert_eq!(condition(&st, "EndpointReady")["status"], "True");
    assert_eq!(condition(&st, "TopicRuleReady")["status"], "True");
    assert_eq!(condition(&st, "CredentialsReady")["status"], "True");
    assert_eq!(condition(&st, "Ready")["status"], "True", "{st}");
    assert!(
        st["topicRuleArn"]
            .as_str()
            .unwrap()
            .ends_with(":rule/workers_to_sqs"),
        "{st}"
    );
    assert!(
        st["credentialsRevision"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // The rule in IoT Core: the writeonly tree to the queue, with the role.
    assert_eq!(
        rule(&iot, "workers_to_sqs").await,
        Some((
            "SELECT * FROM 'edgewire/writeonly/#'".to_string(),
            vec![(q1.clone(), ROLE.to_string())]
        ))
    );

    // With spec.endpoint (a custom domain) that is what status shows; a second reconcile with nothing
    // changed then writes nothing: no status, no Event (the rule was not replaced).
    edit(&mock, &mqb, |m| {
        m.spec.endpoint = Some("mqtt.example.com:8883".into())
    });
    run(&mock, &client, &mqb).await;
    assert_eq!(status(&mock, &mqb)["endpoint"], "mqtt.example.com:8883");
    let reqs = run(&mock, &client, &mqb).await;
    let writes: Vec<String> = reqs
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| r.line())
        .collect();
    assert!(writes.is_empty(), "{writes:?}");

    // Another queue: the rule is replaced in place.
    edit(&mock, &mqb, |m| {
        m.spec
            .iotcore
            .as_mut()
            .unwrap()
            .topic_rule
            .as_mut()
            .unwrap()
            .sqs_queue_url = q2.clone();
    });
    run(&mock, &client, &mqb).await;
    assert_eq!(
        rule(&iot, "workers_to_sqs").await,
        Some((
            "SELECT * FROM 'edgewire/writeonly/#'".to_string(),
            vec![(q2.clone(), ROLE.to_string())]
        ))
    );
    let st = status(&mock, &mqb);
    assert!(
        condition(&st, "TopicRuleReady")["message"]
            .as_str()
            .unwrap()
            .contains(&q2),
        "{st}"
    );

    // Another topic namespace: the SQL follows.
    edit(&mock, &mqb, |m| m.spec.topic_namespace = "factory7".into());
    run(&mock, &client, &mqb).await;
    assert_eq!(
        rule(&iot, "workers_to_sqs").await.unwrap().0,
        "SELECT * FROM 'factory7/writeonly/#'"
    );

    // Deletion with Delete: the API server only marks it (finalizer); the reconcile deletes the rule and
    // then releases the object.
    let api: Api<MqttBroker> = Api::namespaced(client.clone(), NAMESPACE);
    api.delete("workers", &DeleteParams::default())
        .await
        .unwrap();
    let marked = stored(&mock, &mqb).expect("kept while the finalizer is on");
    assert!(marked.metadata.deletion_timestamp.is_some());
    run(&mock, &client, &mqb).await;
    assert_eq!(
        rule(&iot, "workers_to_sqs").await,
        None,
        "Delete removes the rule"
    );
    assert!(
        stored(&mock, &mqb).is_none(),
        "finalizer removed, object gone"
    );
}

#[tokio::test]
async fn retain_leaves_the_rule_and_adds_no_finalizer() {
    let moto = BrokerProcess::start_default(Kind::Moto).expect("moto_server starts");
    let url = moto.url();
    let conf = sdk(&url).await;
    let iot = aws_sdk_iot::Client::new(&conf);
    let q = queue(&aws_sdk_sqs::Client::new(&conf), "kept").await;

    let (client, mock) = MockApi::start();
    // Starts with Delete (finalizer on), then switches to Retain: the finalizer goes.
    let mqb = iotcore("keeper", &url, "keeper_rule", &q, DeletionPolicy::Delete);
    mock.insert(&mqb);
    mock.insert(&aws_secret());
    run(&mock, &client, &mqb).await;
    assert_eq!(finalizers(&stored(&mock, &mqb).unwrap()), [FINALIZER]);
    edit(&mock, &mqb, |m| {
        m.spec.deletion_policy = DeletionPolicy::Retain
    });
    run(&mock, &client, &mqb).await;
    assert!(finalizers(&stored(&mock, &mqb).unwrap()).is_empty());
    assert!(rule(&iot, "keeper_rule").await.is_some());

    // Deleted with Retain: gone at once (no finalizer), the rule stays in IoT Core.
    let api: Api<MqttBroker> = Api::namespaced(client.clone(), NAMESPACE);
    api.delete("keeper", &DeleteParams::default())
        .await
        .unwrap();
    assert!(stored(&mock, &mqb).is_none());
    assert_eq!(
        rule(&iot, "keeper_rule").await,
        Some((
            "SELECT * FROM 'edgewire/writeonly/#'".to_string(),
            vec![(q, ROLE.to_string())]
        ))
    );
}

#[tokio::test]
async fn an_unreachable_aws_endpoint_is_a_false_condition_naming_the_action() {
    // A port nothing can listen on while the test runs (bound, never listening).
    let closed = edgewire_e2e::brokers::ClosedPort::new().unwrap();
    let url = format!("http://127.0.0.1:{}", closed.port());
    let (client, mock) = MockApi::start();
    let mqb = iotcore(
        "offline",
        &url,
        "offline_rule",
        "https://sqs.us-east-1.amazonaws.com/1/q",
        DeletionPolicy::Retain,
    );
    mock.insert(&mqb);
    mock.insert(&aws_secret());
    let current = stored(&mock, &mqb).unwrap();
    let action = reconcile(Arc::new(current), ctx(client.clone()))
        .await
        .expect("an AWS failure is a status, not a reconcile error");
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(
            edgewire_operator::controller::mqtt_broker::iotcore::RETRY
        )
    );
    let st = status(&mock, &mqb);
    let ep = condition(&st, "EndpointReady");
    assert_eq!(ep["status"], "False");
    assert_eq!(ep["reason"], "ProvisioningFailed");
    assert!(
        ep["message"]
            .as_str()
            .unwrap()
            .starts_with("iot:DescribeEndpoint failed"),
        "{ep}"
    );
    let rule = condition(&st, "TopicRuleReady");
    assert_eq!(rule["status"], "False");
    assert!(
        rule["message"]
            .as_str()
            .unwrap()
            .starts_with("iot:GetTopicRule failed"),
        "{rule}"
    );
    assert_eq!(condition(&st, "Ready")["status"], "False");
    assert!(st.get("endpoint").is_none(), "{st}");
}

#[tokio::test]
async fn a_missing_credentials_secret_is_credentials_ready_false() {
    let (client, mock) = MockApi::start();
    let mqb = iotcore(
        "nokeys",
        "http://127.0.0.1:9",
        "r",
        "https://sqs.us-east-1.amazonaws.com/1/q",
        DeletionPolicy::Delete,
    );
    mock.insert(&mqb);
    let reqs = run(&mock, &client, &mqb).await;
    let st = status(&mock, &mqb);
    let c = condition(&st, "CredentialsReady");
    assert_eq!(c["status"], "False");
    assert_eq!(
        c["message"],
        "Secret aws-creds (spec.iotcore.credentials.secretName) not found"
    );
    assert_eq!(condition(&st, "Ready")["reason"], "SecretMissing");
    assert_eq!(condition(&st, "Stalled")["status"], "True");
    assert_eq!(condition(&st, "Stalled")["reason"], "SecretMissing");
    assert_eq!(condition(&st, "Reconciling")["status"], "False");
    // Not reconciled: no finalizer either.
    assert!(
        !reqs
            .iter()
            .any(|r| r.method == "PATCH" && !r.path.ends_with("/status")),
        "{:?}",
        reqs.iter().map(|r| r.line()).collect::<Vec<_>>()
    );
}

/// The credentials Secret is gone when the MqttBroker is deleted (deleted first, by hand or with its
/// namespace): the rule cannot be deleted and never will be. It stays in IoT Core, a Warning Event
/// `CleanupAbandoned` in the MqttBroker's namespace names it and the Secret, and the finalizer goes instead of
/// the deletion waiting forever.
#[tokio::test]
async fn a_deletion_without_its_credentials_names_the_rule_left_and_ends() {
    let moto = BrokerProcess::start_default(Kind::Moto).expect("moto_server starts");
    let url = moto.url();
    let conf = sdk(&url).await;
    let iot = aws_sdk_iot::Client::new(&conf);
    let sqs = aws_sdk_sqs::Client::new(&conf);
    let q = queue(&sqs, "workers-in").await;
    let (client, mock) = MockApi::start();
    let mqb = iotcore(
        "workers",
        &url,
        "workers_to_sqs",
        &q,
        DeletionPolicy::Delete,
    );
    mock.insert(&mqb);
    mock.insert(&aws_secret());
    run(&mock, &client, &mqb).await;
    assert!(rule(&iot, "workers_to_sqs").await.is_some());
    assert_eq!(finalizers(&stored(&mock, &mqb).unwrap()), [FINALIZER]);

    mock.remove("/api/v1/namespaces/factory/secrets/aws-creds")
        .expect("the Secret was there");
    let api: Api<MqttBroker> = Api::namespaced(client.clone(), NAMESPACE);
    api.delete("workers", &DeleteParams::default())
        .await
        .unwrap();
    let reqs = run(&mock, &client, &mqb).await;
    assert!(
        stored(&mock, &mqb).is_none(),
        "finalizer removed, object gone: {:?}",
        reqs.iter().map(|r| r.line()).collect::<Vec<_>>()
    );
    assert!(
        rule(&iot, "workers_to_sqs").await.is_some(),
        "nothing can be deleted without the credentials"
    );
    let events: Vec<&Value> = reqs
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .map(|r| r.body.as_ref().unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = events[0];
    assert_eq!(ev["metadata"]["namespace"], NAMESPACE);
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["reason"], "CleanupAbandoned");
    assert_eq!(ev["regarding"]["kind"], "MqttBroker");
    assert_eq!(ev["regarding"]["name"], "workers");
    let note = ev["note"].as_str().unwrap();
    assert!(note.contains("IoT topic rule workers_to_sqs"), "{note}");
    assert!(
        note.contains("Secret aws-creds (spec.iotcore.credentials.secretName) not found"),
        "{note}"
    );
}
