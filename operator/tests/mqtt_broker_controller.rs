//! MqttBroker controller scenarios: `reconcile` against a mocked API service, asserting the requests it
//! makes and the status it writes.

mod support;

use base64::Engine;
use edgewire_api::testing::NAMESPACE;
use edgewire_api::*;
use edgewire_operator::controller::mqtt_broker::reconcile;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use serde_json::{Value, json};
use std::sync::Arc;
use support::ctx;
use support::mock_api::{MockApi, Recorded, object_path};

const CORE: &str = "/api/v1/namespaces/factory";
const APPS: &str = "/apis/apps/v1/namespaces/factory";
const MQB: &str = "/apis/edgewire.dev/v1alpha1/namespaces/factory/mqttbrokers";
const POOL_A_PASSWORD: &str = "pool-a-s3cr3t-first";

fn secret(name: &str, key: &str, value: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some([(key.to_string(), ByteString(value.as_bytes().to_vec()))].into()),
        ..Default::default()
    }
}

/// `workers`: pool-a with its password in `pool-a-creds`, pool-b with a generated one.
fn workers() -> MqttBroker {
    MqttBroker::test("workers")
        .user("pool-a", Some("pool-a-creds"))
        .user("pool-b", None)
}

/// Reconciles `mqb` as stored in the mock (status included, as the controller would see it).
async fn run(mock: &MockApi, client: &kube::Client, mqb: &MqttBroker) -> Vec<Recorded> {
    let path = object_path(&serde_json::to_value(mqb).unwrap());
    let stored: MqttBroker = serde_json::from_value(mock.object(&path).unwrap()).unwrap();
    mock.clear_requests();
    reconcile(Arc::new(stored), ctx(client.clone()))
        .await
        .expect("reconcile succeeds");
    mock.requests()
}

fn lines(reqs: &[Recorded], method: &str) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.method == method)
        .map(|r| r.line())
        .collect()
}

/// Writes, without the Events API (Events are asserted separately).
fn writes(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.method != "GET" && !r.path.contains("/events.k8s.io/"))
        .map(|r| r.line())
        .collect()
}

fn applied<'a>(reqs: &'a [Recorded], path_suffix: &str) -> &'a Value {
    reqs.iter()
        .find(|r| r.method == "PATCH" && r.path.ends_with(path_suffix))
        .and_then(|r| r.body.as_ref())
        .unwrap_or_else(|| {
            panic!(
                "no apply of {path_suffix} in {:#?}",
                reqs.iter().map(|r| r.line()).collect::<Vec<_>>()
            )
        })
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

fn events(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.method == "POST" && r.path.contains("/events"))
        .map(|r| {
            r.body.as_ref().unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// A file of the config Secret as applied.
fn config_file(reqs: &[Recorded], key: &str) -> String {
    let data = &applied(reqs, "/secrets/workers-mosquitto")["data"][key];
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn first_reconcile_of_a_builtin_mqtt_broker() {
    let (client, mock) = MockApi::start();
    let mqb = workers();
    mock.insert(&mqb);
    mock.insert(&secret("pool-a-creds", "password", POOL_A_PASSWORD));
    let reqs = run(&mock, &client, &mqb).await;

    // Reads the referenced Secret, then the generated ones (to reuse what an earlier reconcile generated).
    assert_eq!(
        lines(&reqs, "GET")[..3],
        [
            format!("GET {CORE}/secrets/pool-a-creds"),
            format!("GET {CORE}/secrets/workers-user-pool-b"),
            format!("GET {CORE}/secrets/workers-sidecar"),
        ]
    );
    // Applies every child with server-side apply, Secrets before Services before the StatefulSet, then
    // writes the status.
    assert_eq!(
        writes(&reqs),
        [
            format!("PATCH {CORE}/secrets/workers-user-pool-b"),
            format!("PATCH {CORE}/secrets/workers-sidecar"),
            format!("PATCH {CORE}/secrets/workers-mosquitto"),
            format!("PATCH {CORE}/services/workers-headless"),
            format!("PATCH {CORE}/services/workers"),
            format!("PATCH {APPS}/statefulsets/workers"),
            format!("PATCH {MQB}/workers/status"),
        ]
    );
    for r in reqs.iter().filter(|r| r.method == "PATCH") {
        assert!(
            r.query.contains("fieldManager=edgewire-operator"),
            "{}: {}",
            r.line(),
            r.query
        );
        assert!(r.query.contains("force=true"), "{}: {}", r.line(), r.query);
    }
    // Every child is owned by the MqttBroker and labelled for the sweep.
    for r in reqs
        .iter()
        .filter(|r| r.method == "PATCH" && !r.path.ends_with("/status"))
    {
        let meta = &r.body.as_ref().unwrap()["metadata"];
        let owner = &meta["ownerReferences"][0];
        assert_eq!(owner["kind"], "MqttBroker", "{}", r.line());
        assert_eq!(owner["uid"], "uid-workers", "{}", r.line());
        assert_eq!(owner["controller"], true);
        assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "workers");
        assert_eq!(meta["labels"]["edgewire.dev/owner-kind"], "mqttbroker");
    }
    // The sweep lists each child kind by the owner's labels; nothing is deleted on a first reconcile.
    let lists: Vec<&Recorded> = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.query.contains("labelSelector"))
        .collect();
    assert_eq!(lists.len(), 3, "StatefulSets, Services, Secrets");
    for l in lists {
        assert!(
            l.query.contains("edgewire.dev%2Fowner-kind%3Dmqttbroker"),
            "{}",
            l.query
        );
    }
    assert!(reqs.iter().all(|r| r.method != "DELETE"));

    // The config Secret holds a password line per user and the ACL; the password itself appears nowhere.
    let passwd = config_file(&reqs, "passwd");
    let users: Vec<&str> = passwd
        .lines()
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(users, ["edgewire-sidecar", "pool-a", "pool-b"]);
    assert!(
        config_file(&reqs, "acl")
            .contains("user pool-b\ntopic write edgewire/writeonly/pool-b/#\n")
    );
    let everything: String = reqs
        .iter()
        .filter_map(|r| r.body.as_ref().map(|b| b.to_string()))
        .collect();
    assert!(!everything.contains(POOL_A_PASSWORD));
    assert!(
        !everything.contains(&base64::engine::general_purpose::STANDARD.encode(POOL_A_PASSWORD))
    );

    // The pod: Mosquitto and the sidecar share a process namespace; the config hash is there, no
    // credentials hash (credentials reload in place).
    let sts = applied(&reqs, "/statefulsets/workers");
    let template = &sts["spec"]["template"];
    assert_eq!(template["spec"]["shareProcessNamespace"], true);
    let annotations = template["metadata"]["annotations"].as_object().unwrap();
    assert!(
        annotations["edgewire.dev/config-hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(!annotations.contains_key(CREDENTIALS_HASH_ANNOTATION));
    let containers: Vec<&str> = template["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(containers, ["mosquitto", "mqtt-sidecar"]);

    // Status: endpoint, users and where their passwords are, revision, conditions.
    let status = &applied(&reqs, "/mqttbrokers/workers/status")["status"];
    assert_eq!(status["endpoint"], "workers.factory.svc:1883");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(
        status["users"],
        json!([
            {"name": "pool-a", "secretName": "pool-a-creds"},
            {"name": "pool-b", "secretName": "workers-user-pool-b"},
        ])
    );
    assert!(
        status["credentialsRevision"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    for (type_, value, reason) in [
        ("Ready", "False", "NotReady"),
        // kstatus: the StatefulSet rolls out.
        ("Reconciling", "True", "Progressing"),
        ("Stalled", "False", "NotStalled"),
        ("EndpointReady", "False", "Progressing"),
        ("UsersReady", "True", "SecretsResolved"),
        ("CredentialsReady", "True", "SecretsResolved"),
        ("TopicRuleReady", "True", "NotApplicable"),
    ] {
        let c = condition(status, type_);
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some(value), Some(reason)),
            "{c}"
        );
        assert_eq!(c["observedGeneration"], 1);
    }
    assert!(events(&reqs).is_empty(), "not ready yet: no event");
}

#[tokio::test]
async fn ready_once_the_statefulset_is_and_then_quiet() {
    let (client, mock) = MockApi::start();
    let mqb = workers();
    mock.insert(&mqb);
    mock.insert(&secret("pool-a-creds", "password", POOL_A_PASSWORD));
    run(&mock, &client, &mqb).await;
    // Stand in for the StatefulSet controller: the one replica is ready.
    let path = format!("{APPS}/statefulsets/workers");
    let mut sts = mock.object(&path).unwrap();
    sts["status"] =
        json!({"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "observedGeneration": 1});
    mock.0.lock().unwrap().objects.insert(path, sts);

    let reqs = run(&mock, &client, &mqb).await;
    let status = &applied(&reqs, "/mqttbrokers/workers/status")["status"];
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(condition(status, "EndpointReady")["status"], "True");
    assert_eq!(condition(status, "Reconciling")["status"], "False");
    assert_eq!(condition(status, "Stalled")["status"], "False");
    assert_eq!(events(&reqs), ["Ready"]);

    // A third reconcile of the same generation writes no status and records no event.
    let reqs = run(&mock, &client, &mqb).await;
    assert!(
        writes(&reqs).iter().all(|w| !w.ends_with("/status")),
        "{:?}",
        writes(&reqs)
    );
    assert!(events(&reqs).is_empty());
}

#[tokio::test]
async fn generated_passwords_are_created_once_and_never_regenerated() {
    let (client, mock) = MockApi::start();
    let mqb = workers();
    mock.insert(&mqb);
    mock.insert(&secret("pool-a-creds", "password", POOL_A_PASSWORD));
    let first_reqs = run(&mock, &client, &mqb).await;
    let user = format!("{CORE}/secrets/workers-user-pool-b");
    let sidecar = format!("{CORE}/secrets/workers-sidecar");
    let first = (mock.object(&user).unwrap(), mock.object(&sidecar).unwrap());
    let data = &first.0["data"];
    let decode = |v: &Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(decode(&data["username"]), "pool-b");
    assert_eq!(decode(&data["password"]).len(), 32);
    assert_eq!(decode(&first.1["data"]["username"]), "edgewire-sidecar");

    let second_reqs = run(&mock, &client, &mqb).await;
    let second = (mock.object(&user).unwrap(), mock.object(&sidecar).unwrap());
    assert_eq!(
        first.0["data"], second.0["data"],
        "the user's password changed between reconciles"
    );
    assert_eq!(
        first.1["data"], second.1["data"],
        "the sidecar's password changed between reconciles"
    );
    assert_eq!(
        config_file(&first_reqs, "passwd"),
        config_file(&second_reqs, "passwd")
    );
    // Nothing but the same applies: no status write, no delete.
    assert!(
        writes(&second_reqs)
            .iter()
            .all(|w| w.starts_with("PATCH") && !w.ends_with("/status"))
    );

    // Deleted by hand, a generated Secret is generated anew (and the status names it still).
    mock.0.lock().unwrap().objects.remove(&user);
    run(&mock, &client, &mqb).await;
    assert_ne!(mock.object(&user).unwrap()["data"], first.0["data"]);
}

#[tokio::test]
async fn a_changed_user_secret_reloads_mosquitto_without_rolling_the_pod() {
    let (client, mock) = MockApi::start();
    let mqb = workers();
    mock.insert(&mqb);
    mock.insert(&secret("pool-a-creds", "password", POOL_A_PASSWORD));
    let before = run(&mock, &client, &mqb).await;
    mock.insert(&secret("pool-a-creds", "password", "pool-a-s3cr3t-rotated"));
    let after = run(&mock, &client, &mqb).await;

    let rev = |reqs: &[Recorded]| {
        applied(reqs, "/mqttbrokers/workers/status")["status"]["credentialsRevision"].clone()
    };
    assert_ne!(rev(&before), rev(&after), "a new credentials revision");
    assert_ne!(
        config_file(&before, "passwd"),
        config_file(&after, "passwd"),
        "the password file in the config Secret changed"
    );
    assert_eq!(
        config_file(&before, "mosquitto.conf"),
        config_file(&after, "mosquitto.conf")
    );
    assert_eq!(
        applied(&before, "/statefulsets/workers")["spec"]["template"],
        applied(&after, "/statefulsets/workers")["spec"]["template"],
        "the pod template (annotations included) must not change: the sidecar reloads Mosquitto in place"
    );
    assert_eq!(events(&after), ["CredentialsRotated"]);
}

/// Reconciles an invalid `mqb` and returns the Ready condition it got; asserts nothing else was written.
async fn invalid(mqb: MqttBroker) -> Value {
    let (client, mock) = MockApi::start();
    mock.insert(&mqb);
    mock.insert(&secret("pool-a-creds", "password", POOL_A_PASSWORD));
    let reqs = run(&mock, &client, &mqb).await;
    assert_eq!(
        writes(&reqs),
        [format!(
            "PATCH {MQB}/{}/status",
            mqb.metadata.name.as_deref().unwrap()
        )],
        "an invalid MqttBroker gets a status and no children"
    );
    assert_eq!(events(&reqs), ["InvalidSpec"]);
    let status = &applied(&reqs, "/status")["status"];
    assert_eq!(status["observedGeneration"], 1);
    let ready = condition(status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    ready
}

#[tokio::test]
async fn invalid_specs_get_only_an_invalid_spec_status() {
    let duplicate = invalid(workers().user("pool-a", None)).await;
    assert_eq!(
        duplicate["message"],
        "spec.builtin.users[2].name: duplicate user name pool-a (also spec.builtin.users[0])"
    );

    let mut bad_filter = workers();
    bad_filter.spec.builtin.as_mut().unwrap().users[1].subscribe = Some(vec!["a/#/b".into()]);
    let ready = invalid(bad_filter).await;
    assert_eq!(
        ready["message"],
        r##"spec.builtin.users[1].subscribe[0]: "a/#/b" is not a valid MQTT topic filter: # must be the whole last level"##
    );

    let mut iotcore = MqttBroker::test("cloud");
    iotcore.spec.broker_type = MqttBrokerType::Iotcore;
    iotcore.spec.builtin = None;
    iotcore.spec.iotcore = Some(IotCoreSpec {
        region: "us east".into(),
        credentials: None,
        topic_rule: None,
        api_endpoint: None,
    });
    let ready = invalid(iotcore).await;
    assert_eq!(
        ready["message"],
        r#"spec.iotcore.region: "us east" is not an AWS region (like us-east-1)"#
    );
}

#[tokio::test]
async fn a_missing_password_secret_names_the_user_and_creates_nothing() {
    let (client, mock) = MockApi::start();
    let mqb = workers();
    mock.insert(&mqb);
    let reqs = run(&mock, &client, &mqb).await;
    assert_eq!(writes(&reqs), [format!("PATCH {MQB}/workers/status")]);
    let status = &applied(&reqs, "/status")["status"];
    let expected = "user pool-a: Secret pool-a-creds (spec.builtin.users[0].password) not found";
    for type_ in ["CredentialsReady", "UsersReady", "Ready"] {
        let c = condition(status, type_);
        assert_eq!(c["status"], "False", "{type_}");
        assert_eq!(c["reason"], "SecretMissing", "{type_}");
        assert_eq!(c["message"], expected, "{type_}");
    }
    assert_eq!(events(&reqs), ["SecretMissing"]);

    // A key that is not there is named too.
    mock.insert(&secret("pool-a-creds", "pass", POOL_A_PASSWORD));
    let reqs = run(&mock, &client, &mqb).await;
    let c = condition(&applied(&reqs, "/status")["status"], "UsersReady");
    assert_eq!(c["reason"], "SecretKeyMissing");
    assert_eq!(
        c["message"],
        "user pool-a: Secret pool-a-creds key password is missing (spec.builtin.users[0].password)"
    );
}

#[tokio::test]
async fn a_removed_user_loses_its_generated_secret() {
    let (client, mock) = MockApi::start();
    let mqb = workers();
    mock.insert(&mqb);
    mock.insert(&secret("pool-a-creds", "password", POOL_A_PASSWORD));
    run(&mock, &client, &mqb).await;

    let mut fewer = MqttBroker::test("workers").user("pool-a", Some("pool-a-creds"));
    fewer.metadata.generation = Some(2);
    mock.insert(&fewer);
    let reqs = run(&mock, &client, &fewer).await;
    assert_eq!(
        lines(&reqs, "DELETE"),
        [format!("DELETE {CORE}/secrets/workers-user-pool-b")]
    );
    let status = &applied(&reqs, "/status")["status"];
    assert_eq!(
        status["users"],
        json!([{"name": "pool-a", "secretName": "pool-a-creds"}])
    );
    assert!(!config_file(&reqs, "passwd").contains("pool-b:"));
}
