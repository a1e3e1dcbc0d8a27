//! Snapshots of the publisher's objects (a reviewer sees the exact manifest change in the diff) plus the
//! facts that must hold whatever the snapshot says.

use edgewire_api::*;
use edgewire_operator::context::Settings;
use edgewire_operator::controller::event_broker::build::{self, publisher};
use edgewire_operator::controller::event_broker::refs::Refs;
use edgewire_operator::controller::event_broker::{ValidatedEventBroker, validate};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

fn settings() -> Settings {
    Settings {
        agent: "ghcr.io/edgewire/edgewire-agent:test".into(),
        agent_pull_policy: None,
        ..Settings::default()
    }
}

fn refs(secrets: &[(&str, &[(&str, &str)])]) -> Refs {
    let mut r = Refs::default();
    for (name, kv) in secrets {
        r.secrets.insert(
            name.to_string(),
            Secret {
                data: Some(
                    kv.iter()
                        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                        .collect(),
                ),
                ..Default::default()
            },
        );
    }
    r
}

fn from_yaml(yaml: &str) -> EventBroker {
    let mut eb: EventBroker = serde_norway::from_str(yaml).unwrap();
    eb.metadata.uid = Some("uid-1".into());
    eb.metadata.generation = Some(1);
    eb
}

fn external_mqtt() -> ValidatedEventBroker {
    let eb = from_yaml(
        r#"
apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata: {name: events, namespace: factory}
spec:
  coreName: prod-us
  adapter: mqtt
  mqtt:
    url: mqtt.example.com:8883
    qos: 2
    auth: {userPassword: {secretName: mqtt-creds}}
    tls: {enabled: true, caSecretRef: {name: mqtt-ca, key: ca.pem}, clientCertSecretRef: {secretName: mqtt-client}, minVersion: "1.3"}
  publisher: {replicas: 3}
"#,
    );
    let r = refs(&[
        ("mqtt-creds", &[("username", "u"), ("password", "p4ss")]),
        ("mqtt-ca", &[("ca.pem", "CA")]),
        ("mqtt-client", &[("tls.crt", "CRT"), ("tls.key", "KEY")]),
    ]);
    validate::validate(&eb, &r, &settings()).unwrap()
}

#[test]
fn publisher_deployment_snapshot() {
    let v = external_mqtt();
    insta::assert_yaml_snapshot!(
        "publisher_deployment_mqtt_tls",
        publisher::build_deployment(&v)
    );
    insta::assert_yaml_snapshot!("publisher_service", publisher::build_service(&v));
    insta::assert_yaml_snapshot!(
        "publisher_service_account",
        publisher::build_service_account(&v)
    );
}

#[test]
fn publisher_runs_restricted_with_probes_and_the_hash() {
    let v = external_mqtt();
    let d = publisher::build_deployment(&v);
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    assert!(c.resources.as_ref().unwrap().requests.is_some());
    let ann = d
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap();
    assert_eq!(ann[CREDENTIALS_HASH_ANNOTATION], v.credentials_hash);
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
}

#[test]
fn publisher_env_is_the_seed_interface_with_secret_refs() {
    let v = external_mqtt();
    let env = publisher::build_env(&v);
    let get = |n: &str| {
        env.iter()
            .find(|e| e.name == n)
            .unwrap_or_else(|| panic!("{n} missing"))
    };
    assert_eq!(get("EVENT_BROKER_ENABLED").value.as_deref(), Some("true"));
    assert_eq!(get("EVENT_BROKER_ADAPTER").value.as_deref(), Some("mqtt"));
    assert_eq!(get("CORE_NAME").value.as_deref(), Some("prod-us"));
    assert_eq!(
        get("EVENT_BROKER_MQTT_URL").value.as_deref(),
        Some("mqtt.example.com:8883")
    );
    assert_eq!(get("EVENT_BROKER_MQTT_QOS").value.as_deref(), Some("2"));
    assert_eq!(get("EVENT_BROKER_MQTT_SSL").value.as_deref(), Some("true"));
    assert_eq!(
        get("EVENT_BROKER_MQTT_CACERT_FILE").value.as_deref(),
        Some("/etc/edgewire/tls/ca/ca.crt")
    );
    assert_eq!(
        get("EVENT_BROKER_MQTT_CLIENT_CERT_FILE").value.as_deref(),
        Some("/etc/edgewire/tls/client/tls.crt")
    );
    assert_eq!(
        get("EVENT_BROKER_MQTT_TLS_MIN_VERSION").value.as_deref(),
        Some("1.3")
    );
    let pw = get("EVENT_BROKER_MQTT_PASSWORD");
    assert!(
        pw.value.is_none(),
        "a password must never be an env literal"
    );
    let r = pw
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (r.name.as_str(), r.key.as_str()),
        ("mqtt-creds", "password")
    );
    // Every variable appears once.
    let mut names: Vec<_> = env.iter().map(|e| e.name.clone()).collect();
    names.sort();
    let n = names.len();
    names.dedup();
    assert_eq!(n, names.len(), "duplicate env vars");
}

#[test]
fn nats_token_takes_the_token_variable_only() {
    let eb = from_yaml(
        r#"
apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata: {name: events, namespace: factory}
spec:
  adapter: nats
  nats: {urls: ["nats://a:4222", "nats://b:4222"], auth: {token: {name: t, key: token}}}
"#,
    );
    let v = validate::validate(&eb, &refs(&[("t", &[("token", "x")])]), &settings()).unwrap();
    let env = publisher::build_env(&v);
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    assert!(names.contains(&"EVENT_BROKER_NATS_TOKEN"));
    assert!(!names.contains(&"EVENT_BROKER_NATS_USERNAME"));
    let urls = env
        .iter()
        .find(|e| e.name == "EVENT_BROKER_NATS_URLS")
        .unwrap();
    assert_eq!(urls.value.as_deref(), Some("nats://a:4222,nats://b:4222"));
    assert_eq!(
        env.iter()
            .find(|e| e.name == "EVENT_BROKER_NATS_JETSTREAM")
            .unwrap()
            .value
            .as_deref(),
        Some("false")
    );
}

#[test]
fn external_broker_has_no_broker_children() {
    let v = external_mqtt();
    let c = build::build(&v);
    assert!(c.broker.is_none());
    assert!(c.generated_secret.is_none());
}
