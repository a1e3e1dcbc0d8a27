//! BridgeLink controller scenarios: `reconcile` against a mocked API service, asserting the requests it
//! makes, the objects it applies and the status it writes.

mod support;

use edgewire_api::*;
use edgewire_operator::controller::bridge_link::reconcile;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::ObjectMeta;
use serde_json::{Value, json};
use std::sync::Arc;
use support::ctx;
use support::mock_api::{MockApi, Recorded, object_path};

const NS: &str = "factory";
const CORE: &str = "/api/v1/namespaces/factory";
const APPS: &str = "/apis/apps/v1/namespaces/factory";
const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/factory";
const BL: &str = "/apis/edgewire.dev/v1alpha1/namespaces/factory/bridgelinks";
const CLOUD_PASSWORD: &str = "cloud-s3cr3t-first";
const EDGE_TOKEN: &str = "edge-t0ken-value";

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A BridgeLink as the API server would hold it (uid, generation), from the spec in YAML.
fn bridge_link(name: &str, spec: &str) -> BridgeLink {
    let spec: BridgeLinkSpec = serde_norway::from_str(spec).unwrap();
    let mut bl = BridgeLink::new(name, spec);
    bl.metadata.namespace = Some(NS.into());
    bl.metadata.uid = Some(format!("uid-{name}"));
    bl.metadata.generation = Some(1);
    bl
}

const SITE_A: &str = r#"
siteId: site-a
edge:
  endpoint:
    protocol: nats
    url: nats://edge:4222
    auth: {token: {name: edge-token, key: token}}
cloud:
  endpoint:
    protocol: nats
    url: tls://cloud.example.com:4222
    jetStream: {enabled: true}
    auth: {userPassword: {secretName: cloud-user}}
    tls: {enabled: true, minVersion: "1.3", caSecretRef: {name: cloud-ca, key: ca.crt}}
rules:
  - {direction: EdgeToCloud, from: "local.telemetry.#", to: "edge.site-a.telemetry.#"}
  - {direction: CloudToEdge, from: "cloud.commands.site-a", to: "local.commands"}
spool: {size: 2Gi, maxBytes: 1Gi, storageClassName: fast}
"#;

fn site_a_secrets(mock: &MockApi, cloud_password: &str) {
    mock.insert(&secret("edge-token", &[("token", EDGE_TOKEN)]));
    mock.insert(&secret(
        "cloud-user",
        &[("username", "site-a"), ("password", cloud_password)],
    ));
    mock.insert(&secret(
        "cloud-ca",
        &[("ca.crt", "-----BEGIN CERTIFICATE-----")],
    ));
}

/// Reconciles `bl` as stored in the mock (status included, as the controller would see it).
async fn run(mock: &MockApi, client: &kube::Client, bl: &BridgeLink) -> Vec<Recorded> {
    let path = object_path(&serde_json::to_value(bl).unwrap());
    let stored: BridgeLink = serde_json::from_value(mock.object(&path).unwrap()).unwrap();
    mock.clear_requests();
    reconcile(Arc::new(stored), ctx(client.clone()))
        .await
        .expect("reconcile succeeds");
    mock.requests()
}

/// Writes, without the Events API.
fn writes(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.method != "GET" && !r.path.contains("/events"))
        .map(|r| r.line())
        .collect()
}

fn applied<'a>(reqs: &'a [Recorded], path_suffix: &str) -> &'a Value {
    reqs.iter()
        .find(|r| r.method == "PATCH" && r.path.ends_with(path_suffix))
        .and_then(|r| r.body.as_ref())
        .unwrap_or_else(|| panic!("no apply of {path_suffix} in {:#?}", writes(reqs)))
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

fn event_note(reqs: &[Recorded], reason: &str) -> String {
    reqs.iter()
        .filter(|r| r.method == "POST" && r.path.contains("/events"))
        .map(|r| r.body.clone().unwrap())
        .find(|b| b["reason"] == reason)
        .unwrap_or_else(|| panic!("no {reason} event"))["note"]
        .as_str()
        .unwrap()
        .to_string()
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

fn status_of(reqs: &[Recorded], name: &str) -> Value {
    applied(reqs, &format!("bridgelinks/{name}/status"))["status"].clone()
}

fn config_yaml(reqs: &[Recorded], name: &str) -> String {
    let cfg = applied(reqs, &format!("secrets/{name}-bridge-config"));
    let b64 = cfg["data"]["bridge.yaml"].as_str().unwrap();
    use base64::Engine;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

fn pod_annotation(reqs: &[Recorded], name: &str, key: &str) -> String {
    applied(reqs, &format!("statefulsets/{name}-bridge"))["spec"]["template"]["metadata"]
        ["annotations"][key]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn first_reconcile_applies_config_rbac_service_and_statefulset_then_status() {
    let (client, mock) = MockApi::start();
    site_a_secrets(&mock, CLOUD_PASSWORD);
    let bl = bridge_link("site-a", SITE_A);
    mock.insert(&bl);
    let reqs = run(&mock, &client, &bl).await;

    assert_eq!(
        writes(&reqs),
        vec![
            format!("PATCH {CORE}/secrets/site-a-bridge-config"),
            format!("PATCH {CORE}/serviceaccounts/site-a-bridge"),
            format!("PATCH {RBAC}/roles/site-a-bridge"),
            format!("PATCH {RBAC}/rolebindings/site-a-bridge"),
            format!("PATCH {CORE}/services/site-a-bridge"),
            format!("PATCH {APPS}/statefulsets/site-a-bridge"),
            format!("PATCH {BL}/site-a/status"),
        ]
    );
    for r in reqs.iter().filter(|r| r.method == "PATCH") {
        assert!(
            r.query.contains("fieldManager=edgewire-operator") && r.query.contains("force=true"),
            "{}: {}",
            r.line(),
            r.query
        );
    }

    // The agent's config: the BridgeLink, Secret references only.
    let cfg = config_yaml(&reqs, "site-a");
    let doc: BridgeLink = serde_norway::from_str(&cfg).unwrap();
    assert_eq!(doc.metadata.name.as_deref(), Some("site-a"));
    assert_eq!(doc.metadata.namespace.as_deref(), Some(NS));
    assert_eq!(doc.spec.rules, bl.spec.rules);
    assert_eq!(doc.spec.cloud, bl.spec.cloud);
    for value in [CLOUD_PASSWORD, EDGE_TOKEN] {
        for r in &reqs {
            let body = serde_json::to_string(&r.body).unwrap();
            assert!(!body.contains(value), "{} leaks a Secret value", r.line());
        }
        assert!(!cfg.contains(value));
    }

    // The StatefulSet: one replica, the agent image, the contract's command line, the spool PVC.
    let sts = applied(&reqs, "statefulsets/site-a-bridge");
    assert_eq!(sts["spec"]["replicas"], 1);
    assert_eq!(sts["metadata"]["ownerReferences"][0]["kind"], "BridgeLink");
    let pod = &sts["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/edgewire/edgewire-agent:test");
    assert_eq!(
        c["args"],
        json!([
            "bridge",
            "--config",
            "/etc/edgewire/bridge/bridge.yaml",
            "--secrets-dir",
            "/etc/edgewire/secrets",
            "--spool-dir",
            "/var/lib/edgewire/spool",
            "--http-addr",
            "0.0.0.0:9464",
            "--report-status"
        ])
    );
    assert_eq!(
        c["ports"][0],
        json!({"name": "metrics", "containerPort": 9464, "protocol": "TCP"})
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(pod["serviceAccountName"], "site-a-bridge");
    let mounts: Vec<(String, String)> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["mountPath"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for dir in [
        "/etc/edgewire/bridge",
        "/var/lib/edgewire/spool",
        "/etc/edgewire/secrets/cloud-ca",
        "/etc/edgewire/secrets/cloud-user",
        "/etc/edgewire/secrets/edge-token",
    ] {
        assert!(
            mounts.iter().any(|(_, p)| p == dir),
            "{dir} not mounted: {mounts:?}"
        );
    }
    let vct = &sts["spec"]["volumeClaimTemplates"][0];
    assert_eq!(vct["metadata"]["name"], "spool");
    assert_eq!(vct["spec"]["resources"]["requests"]["storage"], "2Gi");
    assert_eq!(vct["spec"]["storageClassName"], "fast");
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"],
        "Retain"
    );

    // The agent may patch this BridgeLink's status and nothing else.
    let role = applied(&reqs, "roles/site-a-bridge");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["edgewire.dev"], "resources": ["bridgelinks/status"],
                "resourceNames": ["site-a"], "verbs": ["get", "patch"]}])
    );
    let rb = applied(&reqs, "rolebindings/site-a-bridge");
    assert_eq!(rb["subjects"][0]["name"], "site-a-bridge");
    assert_eq!(rb["roleRef"]["name"], "site-a-bridge");

    // No runtime report yet: connection and spool conditions are Unknown, Ready is False.
    let status = status_of(&reqs, "site-a");
    assert!(
        status.get("runtime").is_none(),
        "the operator must not write runtime"
    );
    assert_eq!(condition(&status, "CredentialsReady")["status"], "True");
    for t in ["EdgeConnected", "CloudConnected", "Spooling"] {
        assert_eq!(condition(&status, t)["status"], "Unknown", "{t}");
    }
    assert_eq!(condition(&status, "Ready")["status"], "False");
    // kstatus: the bridge rolls out (no report yet), nothing is stalled.
    assert_eq!(condition(&status, "Reconciling")["status"], "True");
    assert_eq!(condition(&status, "Reconciling")["reason"], "Progressing");
    assert_eq!(condition(&status, "Stalled")["status"], "False");
    assert_eq!(
        status["credentialsRevision"].as_str().unwrap(),
        pod_annotation(&reqs, "site-a", CREDENTIALS_HASH_ANNOTATION)
    );
}

#[tokio::test]
async fn statefulset_and_config_snapshot() {
    let (client, mock) = MockApi::start();
    site_a_secrets(&mock, CLOUD_PASSWORD);
    let bl = bridge_link("site-a", SITE_A);
    mock.insert(&bl);
    let reqs = run(&mock, &client, &bl).await;
    insta::assert_snapshot!("bridge_config", config_yaml(&reqs, "site-a"));
    insta::assert_yaml_snapshot!(
        "bridge_statefulset",
        applied(&reqs, "statefulsets/site-a-bridge")
    );
}

#[tokio::test]
async fn a_changed_secret_rolls_the_pod_with_a_new_hash() {
    let (client, mock) = MockApi::start();
    site_a_secrets(&mock, CLOUD_PASSWORD);
    let bl = bridge_link("site-a", SITE_A);
    mock.insert(&bl);
    let first = run(&mock, &client, &bl).await;
    let h1 = pod_annotation(&first, "site-a", CREDENTIALS_HASH_ANNOTATION);

    // Unchanged: same hash, no status write.
    let again = run(&mock, &client, &bl).await;
    assert_eq!(
        pod_annotation(&again, "site-a", CREDENTIALS_HASH_ANNOTATION),
        h1
    );
    assert!(
        !writes(&again).iter().any(|w| w.ends_with("/status")),
        "{:?}",
        writes(&again)
    );

    site_a_secrets(&mock, "cloud-s3cr3t-rotated");
    let rotated = run(&mock, &client, &bl).await;
    let h2 = pod_annotation(&rotated, "site-a", CREDENTIALS_HASH_ANNOTATION);
    assert_ne!(h1, h2);
    assert_eq!(
        status_of(&rotated, "site-a")["credentialsRevision"],
        h2.as_str()
    );
    assert!(events(&rotated).contains(&"CredentialsRotated".to_string()));
    // The config does not change with a Secret value: only the hash rolls the pod.
    assert_eq!(
        config_yaml(&first, "site-a"),
        config_yaml(&rotated, "site-a")
    );
}

#[tokio::test]
async fn looping_rules_are_invalid_spec_with_no_children() {
    let (client, mock) = MockApi::start();
    site_a_secrets(&mock, CLOUD_PASSWORD);
    let spec = SITE_A.replace(
        r#"{direction: CloudToEdge, from: "cloud.commands.site-a", to: "local.commands"}"#,
        r#"{direction: CloudToEdge, from: "cloud.commands.#", to: "local.telemetry.cmd.#"}"#,
    );
    let bl = bridge_link("site-a", &spec);
    mock.insert(&bl);
    let reqs = run(&mock, &client, &bl).await;
    assert_eq!(writes(&reqs), vec![format!("PATCH {BL}/site-a/status")]);
    let ready = condition(&status_of(&reqs, "site-a"), "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert_eq!(
        ready["message"],
        r#"spec.rules[1] (CloudToEdge to "local.telemetry.cmd.#") feeds spec.rules[0] (EdgeToCloud from "local.telemetry.#"): a loop"#
    );
    assert_eq!(events(&reqs), vec!["InvalidSpec"]);
}

/// Every side the API offers is rendered for the agent: AMQP 0-9-1 and Kafka clouds, MQTT 5, a JetStream
/// edge; the config Secret carries the side as written.
#[tokio::test]
async fn every_protocol_the_api_offers_yields_the_bridge() {
    let cases = [
        (
            "    protocol: nats\n    url: tls://cloud.example.com:4222\n    jetStream: {enabled: true}",
            "    protocol: kafka\n    url: kafka-0:9092,kafka-1:9092",
            "protocol: kafka",
        ),
        (
            "    protocol: nats\n    url: tls://cloud.example.com:4222\n    jetStream: {enabled: true}",
            "    protocol: amqp091\n    url: amqps://rabbit.example.com:5671/%2f\n    exchange: telemetry",
            "exchange: telemetry",
        ),
        (
            "    protocol: nats\n    url: tls://cloud.example.com:4222\n    jetStream: {enabled: true}",
            "    protocol: mqtt\n    url: mqtt.example.com:8883\n    mqttVersion: \"5\"",
            "mqttVersion: '5'",
        ),
        (
            "    url: nats://edge:4222",
            "    url: nats://edge:4222\n    jetStream: {enabled: true}",
            "      jetStream:\n        enabled: true\n      protocol: nats\n      url: nats://edge:4222",
        ),
    ];
    for (from, to, rendered) in cases {
        let (client, mock) = MockApi::start();
        site_a_secrets(&mock, CLOUD_PASSWORD);
        let spec = SITE_A.replace(from, to);
        assert_ne!(spec, SITE_A, "{from}");
        let bl = bridge_link("site-a", &spec);
        mock.insert(&bl);
        let reqs = run(&mock, &client, &bl).await;
        assert!(
            writes(&reqs).contains(&format!("PATCH {APPS}/statefulsets/site-a-bridge")),
            "{to}: {:?}",
            writes(&reqs)
        );
        let yaml = config_yaml(&reqs, "site-a");
        assert!(yaml.contains(rendered), "{to}: {yaml}");
    }
}

/// What librdkafka cannot do — token authentication (SASL/OAUTHBEARER), a TLS server name override — is
/// InvalidSpec naming the field, no children: not a bridge pod failing at start.
#[tokio::test]
async fn kafka_token_or_server_name_is_invalid_spec_with_no_children() {
    let cases = [
        (
            "    auth: {token: {name: edge-token, key: token}}",
            "spec.cloud.endpoint.auth.token: Kafka SASL/OAUTHBEARER is not supported",
        ),
        (
            "    auth: {userPassword: {secretName: cloud-user}}\n    tls: {enabled: true, serverName: kafka.example.com}",
            "spec.cloud.endpoint.tls.serverName: librdkafka cannot override",
        ),
    ];
    for (auth, message) in cases {
        let (client, mock) = MockApi::start();
        site_a_secrets(&mock, CLOUD_PASSWORD);
        let spec = SITE_A.replace(
            "    protocol: nats\n    url: tls://cloud.example.com:4222\n    jetStream: {enabled: true}\n    auth: {userPassword: {secretName: cloud-user}}\n    tls: {enabled: true, minVersion: \"1.3\", caSecretRef: {name: cloud-ca, key: ca.crt}}",
            &format!("    protocol: kafka\n    url: kafka-0:9092\n{auth}"),
        );
        assert_ne!(spec, SITE_A);
        let bl = bridge_link("site-a", &spec);
        mock.insert(&bl);
        let reqs = run(&mock, &client, &bl).await;
        assert_eq!(writes(&reqs), vec![format!("PATCH {BL}/site-a/status")]);
        let ready = condition(&status_of(&reqs, "site-a"), "Ready");
        assert_eq!(ready["reason"], "InvalidSpec");
        assert!(
            ready["message"].as_str().unwrap().starts_with(message),
            "{ready}"
        );
    }
}

#[tokio::test]
async fn spool_max_bytes_must_be_below_size() {
    let (client, mock) = MockApi::start();
    site_a_secrets(&mock, CLOUD_PASSWORD);
    let bl = bridge_link("site-a", &SITE_A.replace("maxBytes: 1Gi", "maxBytes: 2Gi"));
    mock.insert(&bl);
    let reqs = run(&mock, &client, &bl).await;
    assert_eq!(writes(&reqs), vec![format!("PATCH {BL}/site-a/status")]);
    let ready = condition(&status_of(&reqs, "site-a"), "Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.spool.maxBytes: 2Gi must be"),
        "{ready}"
    );
}

#[tokio::test]
async fn a_missing_secret_or_key_is_credentials_not_ready_with_no_children() {
    let (client, mock) = MockApi::start();
    mock.insert(&secret("edge-token", &[("token", EDGE_TOKEN)]));
    mock.insert(&secret("cloud-user", &[("username", "site-a")]));
    let bl = bridge_link("site-a", SITE_A);
    mock.insert(&bl);
    let reqs = run(&mock, &client, &bl).await;
    assert_eq!(writes(&reqs), vec![format!("PATCH {BL}/site-a/status")]);
    let status = status_of(&reqs, "site-a");
    let creds = condition(&status, "CredentialsReady");
    assert_eq!(creds["status"], "False");
    let msg = creds["message"].as_str().unwrap();
    assert!(
        msg.contains(
            r#"spec.cloud.endpoint.auth.userPassword: Secret "cloud-user" has no key "password""#
        ),
        "{msg}"
    );
    assert!(
        msg.contains(r#"spec.cloud.endpoint.tls.caSecretRef: Secret "cloud-ca" not found"#),
        "{msg}"
    );
    assert_eq!(condition(&status, "Ready")["status"], "False");
}

const EDGE_FROM_EB: &str = r#"
siteId: site-a
edge:
  brokerRef: {kind: EventBroker, name: local}
cloud:
  endpoint: {protocol: nats, url: "nats://cloud:4222"}
rules:
  - {direction: EdgeToCloud, from: "local.#", to: "edge.site-a.#"}
"#;

fn event_broker(yaml: &str) -> EventBroker {
    let mut eb: EventBroker = serde_norway::from_str(yaml).unwrap();
    eb.metadata.namespace = Some(NS.into());
    eb
}

#[tokio::test]
async fn broker_ref_to_an_event_broker_resolves_its_service_and_credentials() {
    let (client, mock) = MockApi::start();
    let bl = bridge_link("site-a", EDGE_FROM_EB);
    mock.insert(&bl);

    // Absent: CredentialsReady False naming the reference, no children.
    let reqs = run(&mock, &client, &bl).await;
    assert_eq!(writes(&reqs), vec![format!("PATCH {BL}/site-a/status")]);
    let creds = condition(&status_of(&reqs, "site-a"), "CredentialsReady");
    assert_eq!(creds["status"], "False");
    assert_eq!(creds["reason"], "BrokerMissing");
    assert_eq!(
        creds["message"],
        r#"spec.edge.brokerRef: EventBroker "local" not found in namespace "factory""#
    );

    // A deployed Mosquitto with generated credentials: its Service and the generated Secret.
    mock.insert(&event_broker(
        "apiVersion: edgewire.dev/v1alpha1\nkind: EventBroker\nmetadata: {name: local}\nspec: {adapter: mqtt, deployBroker: {kind: mosquitto}}\n",
    ));
    mock.insert(&secret(
        "local-broker-credentials",
        &[("username", "edgewire"), ("password", "generated-pw-123")],
    ));
    let reqs = run(&mock, &client, &bl).await;
    let cfg: BridgeLink = serde_norway::from_str(&config_yaml(&reqs, "site-a")).unwrap();
    let edge = cfg.spec.edge.endpoint.expect("resolved to an endpoint");
    assert!(cfg.spec.edge.broker_ref.is_none());
    assert_eq!(edge.protocol, Protocol::Mqtt);
    assert_eq!(edge.url, "local-mosquitto.factory.svc:1883");
    assert_eq!(
        edge.auth.unwrap().user_password,
        Some(SecretRef::new("local-broker-credentials"))
    );
    assert_eq!(
        condition(&status_of(&reqs, "site-a"), "CredentialsReady")["status"],
        "True"
    );

    // A deployed NATS with a token in the spec: the same token Secret key.
    mock.insert(&event_broker(
        "apiVersion: edgewire.dev/v1alpha1\nkind: EventBroker\nmetadata: {name: local}\nspec: {adapter: nats, nats: {auth: {token: {name: nats-auth, key: token}}}, deployBroker: {kind: nats}}\n",
    ));
    mock.insert(&secret("nats-auth", &[("token", "nats-token-value")]));
    let reqs = run(&mock, &client, &bl).await;
    let cfg: BridgeLink = serde_norway::from_str(&config_yaml(&reqs, "site-a")).unwrap();
    let edge = cfg.spec.edge.endpoint.unwrap();
    assert_eq!(edge.url, "nats://local-nats.factory.svc:4222");
    assert_eq!(
        edge.auth.unwrap().token,
        Some(SecretKeyRef::new("nats-auth", "token"))
    );

    // A deployed Kafka cannot be an edge.
    mock.insert(&event_broker(
        "apiVersion: edgewire.dev/v1alpha1\nkind: EventBroker\nmetadata: {name: local}\nspec: {adapter: kafka, deployBroker: {kind: redpanda}}\n",
    ));
    let reqs = run(&mock, &client, &bl).await;
    assert_eq!(writes(&reqs), vec![format!("PATCH {BL}/site-a/status")]);
    let ready = condition(&status_of(&reqs, "site-a"), "Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("deploys redpanda"),
        "{ready}"
    );
}

#[tokio::test]
async fn broker_ref_to_a_builtin_mqtt_broker_connects_as_the_site_user() {
    let (client, mock) = MockApi::start();
    let bl = bridge_link(
        "site-a",
        &EDGE_FROM_EB.replace(
            "kind: EventBroker, name: local",
            "kind: MqttBroker, name: workers",
        ),
    );
    mock.insert(&bl);
    let mut mqb: MqttBroker = serde_norway::from_str(
        "apiVersion: edgewire.dev/v1alpha1\nkind: MqttBroker\nmetadata: {name: workers}\nspec: {type: builtin, builtin: {users: [{name: pool-a}]}}\n",
    )
    .unwrap();
    mqb.metadata.namespace = Some(NS.into());
    mock.insert(&mqb);

    let reqs = run(&mock, &client, &bl).await;
    let ready = condition(&status_of(&reqs, "site-a"), "Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains(r#"declares no user named "site-a""#),
        "{ready}"
    );

    // With the site's user declared (generated password): its Service and the generated Secret's password.
    mqb.spec.builtin.as_mut().unwrap().users.push(
        serde_norway::from_str(
            "{name: site-a, publish: ['local/commands/#'], subscribe: ['local/#']}",
        )
        .unwrap(),
    );
    mock.insert(&mqb);
    mock.insert(&secret(
        "workers-user-site-a",
        &[("username", "site-a"), ("password", "generated-pw")],
    ));
    let reqs = run(&mock, &client, &bl).await;
    let cfg: BridgeLink = serde_norway::from_str(&config_yaml(&reqs, "site-a")).unwrap();
    let edge = cfg.spec.edge.endpoint.unwrap();
    assert_eq!(edge.url, "workers.factory.svc:1883");
    assert_eq!(
        edge.auth.unwrap().user_password,
        Some(SecretRef::new("workers-user-site-a"))
    );

    // A declared password: its key, as a token (MQTT user name = the site id).
    mqb.spec.builtin.as_mut().unwrap().users[1].password =
        Some(SecretKeyRef::new("site-a-mqtt", "pw"));
    mock.insert(&mqb);
    mock.insert(&secret("site-a-mqtt", &[("pw", "declared-pw")]));
    let reqs = run(&mock, &client, &bl).await;
    let cfg: BridgeLink = serde_norway::from_str(&config_yaml(&reqs, "site-a")).unwrap();
    assert_eq!(
        cfg.spec.edge.endpoint.unwrap().auth.unwrap().token,
        Some(SecretKeyRef::new("site-a-mqtt", "pw"))
    );
}

/// `bl` stored with the runtime report the agent would have written.
fn with_runtime(mock: &MockApi, bl: &BridgeLink, runtime: Value) {
    let path = object_path(&serde_json::to_value(bl).unwrap());
    let mut stored = mock.object(&path).unwrap();
    stored["status"]["runtime"] = runtime;
    let typed: BridgeLink = serde_json::from_value(stored).unwrap();
    mock.insert(&typed);
}

fn statefulset_ready(mock: &MockApi) {
    let path = format!("{APPS}/statefulsets/site-a-bridge");
    let mut sts = mock.object(&path).unwrap();
    sts["metadata"]["generation"] = json!(1);
    sts["status"] =
        json!({"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "observedGeneration": 1});
    let typed: k8s_openapi::api::apps::v1::StatefulSet = serde_json::from_value(sts).unwrap();
    mock.insert(&typed);
}

#[tokio::test]
async fn conditions_follow_the_runtime_report() {
    let (client, mock) = MockApi::start();
    site_a_secrets(&mock, CLOUD_PASSWORD);
    let bl = bridge_link("site-a", SITE_A);
    mock.insert(&bl);
    run(&mock, &client, &bl).await;
    statefulset_ready(&mock);
    let now = Timestamp::now().to_string();

    // Cloud down, 1200 messages spooled.
    with_runtime(
        &mock,
        &bl,
        json!({"spoolMessages": 1200, "spoolBytes": 307200, "forwarded": 10, "dropped": 0,
               "edgeConnected": true, "cloudConnected": false, "updated": now}),
    );
    let reqs = run(&mock, &client, &bl).await;
    let status = status_of(&reqs, "site-a");
    assert!(
        status.get("runtime").is_none(),
        "the operator must not write runtime"
    );
    assert_eq!(condition(&status, "Spooling")["status"], "True");
    assert_eq!(condition(&status, "Spooling")["reason"], "SpoolNotEmpty");
    assert_eq!(condition(&status, "EdgeConnected")["status"], "True");
    assert_eq!(condition(&status, "CloudConnected")["status"], "False");
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert!(
        condition(&status, "Ready")["message"]
            .as_str()
            .unwrap()
            .starts_with("CloudConnected:")
    );
    // Rolled out and reporting, but cut off from the cloud: neither Reconciling nor Stalled, only Ready says
    // what does not work (kstatus InProgress by Ready=False; Argo CD Degraded).
    assert_eq!(condition(&status, "Reconciling")["status"], "False");
    assert_eq!(condition(&status, "Stalled")["status"], "False");

    // Cloud back, spool drained.
    with_runtime(
        &mock,
        &bl,
        json!({"spoolMessages": 0, "spoolBytes": 0, "forwarded": 1210, "dropped": 0,
               "edgeConnected": true, "cloudConnected": true, "updated": now}),
    );
    let reqs = run(&mock, &client, &bl).await;
    let status = status_of(&reqs, "site-a");
    assert_eq!(condition(&status, "Spooling")["status"], "False");
    assert_eq!(condition(&status, "CloudConnected")["status"], "True");
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Reconciling")["status"], "False");
    assert_eq!(condition(&status, "Stalled")["status"], "False");
    assert!(events(&reqs).contains(&"Ready".to_string()));

    // A report older than a minute is not believed.
    let old = (Timestamp::now() - SignedDuration::from_secs(120)).to_string();
    with_runtime(
        &mock,
        &bl,
        json!({"spoolMessages": 0, "spoolBytes": 0, "forwarded": 1210, "dropped": 0,
               "edgeConnected": true, "cloudConnected": true, "updated": old}),
    );
    let reqs = run(&mock, &client, &bl).await;
    let status = status_of(&reqs, "site-a");
    for t in ["EdgeConnected", "CloudConnected", "Spooling"] {
        assert_eq!(condition(&status, t)["status"], "Unknown", "{t}");
    }
    assert_eq!(condition(&status, "Ready")["status"], "False");
}

#[tokio::test]
async fn dropped_messages_are_evented_once_per_increase() {
    let (client, mock) = MockApi::start();
    site_a_secrets(&mock, CLOUD_PASSWORD);
    let bl = bridge_link("site-a", SITE_A);
    mock.insert(&bl);
    run(&mock, &client, &bl).await;
    let report = |dropped: u64| {
        json!({"spoolMessages": 10, "spoolBytes": 100, "forwarded": 0, "dropped": dropped,
               "edgeConnected": true, "cloudConnected": false,
               "updated": Timestamp::now().to_string()})
    };
    with_runtime(&mock, &bl, report(250));
    let reqs = run(&mock, &client, &bl).await;
    assert!(
        event_note(&reqs, "SpoolOverflow").contains("dropped 250 more"),
        "{}",
        event_note(&reqs, "SpoolOverflow")
    );
    assert_eq!(status_of(&reqs, "site-a")["droppedReported"], 250);

    with_runtime(&mock, &bl, report(250));
    let reqs = run(&mock, &client, &bl).await;
    assert!(!events(&reqs).contains(&"SpoolOverflow".to_string()));

    with_runtime(&mock, &bl, report(300));
    let reqs = run(&mock, &client, &bl).await;
    assert!(event_note(&reqs, "SpoolOverflow").contains("dropped 50 more"));
}

#[tokio::test]
async fn deletion_policy_delete_deletes_the_spool_with_the_statefulset() {
    let (client, mock) = MockApi::start();
    site_a_secrets(&mock, CLOUD_PASSWORD);
    let bl = bridge_link("site-a", &format!("{SITE_A}deletionPolicy: Delete\n"));
    mock.insert(&bl);
    let reqs = run(&mock, &client, &bl).await;
    let sts = applied(&reqs, "statefulsets/site-a-bridge");
    assert_eq!(
        sts["spec"]["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Delete", "whenScaled": "Retain"})
    );
    // No finalizer: nothing external to clean up.
    assert!(
        !reqs
            .iter()
            .any(|r| r.path.starts_with(BL) && !r.path.ends_with("/status") && r.method == "PATCH")
    );
}
