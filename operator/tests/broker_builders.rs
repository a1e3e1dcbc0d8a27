//! The self-hosted broker builders: a snapshot of every broker's objects (config files shown decoded), and
//! assertions on the facts a snapshot review could miss.

#[path = "fixtures/brokers/mod.rs"]
mod fixtures;

use base64::Engine;
use edgewire_api::CONFIG_HASH_ANNOTATION;
use edgewire_api::{BrokerKind, CREDENTIALS_HASH_ANNOTATION, SaslMechanism};
use edgewire_operator::controller::event_broker::BrokerAuth;
use edgewire_operator::controller::event_broker::build::broker::{
    BrokerChildren, broker_name, client_endpoint, has_ui, kafka, nats,
};
use edgewire_operator::mosquitto::password_line as mosquitto_password_line;
use edgewire_operator::secret::SecretString;
use fixtures::{Case, PASSWORD, TOKEN, USERNAME, file, files, user_password};
use k8s_openapi::api::core::v1::{Container, PodSpec, Service};
use serde::Serialize;
use sha2::{Digest, Sha256, Sha512};
use std::collections::BTreeMap;

const ALL: [BrokerKind; 7] = [
    BrokerKind::Nats,
    BrokerKind::Rabbitmq,
    BrokerKind::Redis,
    BrokerKind::Kafka,
    BrokerKind::Redpanda,
    BrokerKind::Mosquitto,
    BrokerKind::Emqx,
];
const CLUSTERED: [BrokerKind; 5] = [
    BrokerKind::Nats,
    BrokerKind::Rabbitmq,
    BrokerKind::Kafka,
    BrokerKind::Redpanda,
    BrokerKind::Emqx,
];

/// Every case that is snapshotted and checked.
fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = ALL.iter().map(|k| Case::new(*k)).collect();
    cases.extend(CLUSTERED.iter().map(|k| Case::new(*k).replicas(3)));
    cases.extend(CLUSTERED.iter().map(|k| Case::new(*k).replicas(3).ui()));
    cases.push(Case::new(BrokerKind::Nats).auth(BrokerAuth::Token(SecretString::from(TOKEN))));
    cases.push(
        Case::new(BrokerKind::Nats)
            .auth(BrokerAuth::Nkey {
                public_key: fixtures::NKEY_PUBLIC.into(),
            })
            .ui(),
    );
    cases.push(
        Case::new(BrokerKind::Kafka)
            .replicas(3)
            .sasl(SaslMechanism::ScramSha512)
            .ui(),
    );
    cases.push(Case::new(BrokerKind::Redpanda).sasl(SaslMechanism::ScramSha512));
    cases.push(Case::new(BrokerKind::Redis).storage_class("fast-ssd"));
    cases
}

/// What a reviewer reads: the config files line by line, then the objects (the Secret without its base64
/// data, which `config_files` shows decoded).
#[derive(Serialize)]
struct View<'a> {
    config_files: BTreeMap<String, Vec<String>>,
    config: SecretView<'a>,
    headless: &'a Service,
    client: &'a Service,
    statefulset: &'a k8s_openapi::api::apps::v1::StatefulSet,
    ui_deployment: Option<&'a k8s_openapi::api::apps::v1::Deployment>,
    ui_service: Option<&'a Service>,
}

#[derive(Serialize)]
struct SecretView<'a> {
    metadata: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    #[serde(rename = "type")]
    type_: &'a Option<String>,
    data_keys: Vec<&'a String>,
}

fn view(c: &BrokerChildren) -> View<'_> {
    View {
        config_files: files(&c.config)
            .into_iter()
            .map(|(k, text)| (k, text.lines().map(str::to_string).collect()))
            .collect(),
        config: SecretView {
            metadata: &c.config.metadata,
            type_: &c.config.type_,
            data_keys: c.config.data.iter().flatten().map(|(k, _)| k).collect(),
        },
        headless: &c.headless,
        client: &c.client,
        statefulset: &c.statefulset,
        ui_deployment: c.ui.as_ref().and_then(|u| u.deployment.as_ref()),
        ui_service: c.ui.as_ref().map(|u| &u.service),
    }
}

#[test]
fn snapshots() {
    for case in cases() {
        let (_, children) = case.build();
        insta::assert_yaml_snapshot!(case.name(), view(&children));
    }
}

fn pod_spec(c: &BrokerChildren) -> &PodSpec {
    c.statefulset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn broker_container(c: &BrokerChildren) -> &Container {
    &pod_spec(c).containers[0]
}

fn port_numbers(svc: &Service) -> Vec<i32> {
    svc.spec
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .flatten()
        .map(|p| p.port)
        .collect()
}

#[test]
fn names_replicas_storage_and_ports_agree() {
    for case in cases() {
        let (v, c) = case.build();
        let name = case.name();
        let sts_name = broker_name(&v.owner, case.kind);
        let spec = c.statefulset.spec.as_ref().unwrap();

        assert_eq!(
            c.statefulset.metadata.name.as_deref(),
            Some(sts_name.as_str()),
            "{name}"
        );
        assert_eq!(
            c.client.metadata.name.as_deref(),
            Some(sts_name.as_str()),
            "{name}"
        );
        assert_eq!(
            c.headless.metadata.name,
            Some(format!("{sts_name}-headless")),
            "{name}"
        );
        assert_eq!(
            c.config.metadata.name,
            Some(format!("{sts_name}-config")),
            "{name}"
        );
        assert_eq!(spec.replicas, Some(case.replicas), "{name}");
        assert_eq!(spec.service_name, c.headless.metadata.name, "{name}");

        let pvc = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(pvc.metadata.name.as_deref(), Some("data"), "{name}");
        let pvc_spec = pvc.spec.as_ref().unwrap();
        let size = &pvc_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"];
        assert_eq!(size.0, case.storage_size(), "{name}");
        assert_eq!(pvc_spec.storage_class_name, case.storage_class, "{name}");
        assert!(
            broker_container(&c)
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "data"),
            "{name}: the PVC is mounted"
        );

        // The client endpoint the publisher is pointed at is a port of the client Service and of the container.
        let ep = client_endpoint(&v.owner, case.kind);
        assert_eq!(ep.host, format!("{sts_name}.factory.svc"), "{name}");
        assert!(
            port_numbers(&c.client).contains(&ep.port),
            "{name}: client Service lacks {}",
            ep.port
        );
        assert!(
            port_numbers(&c.headless).contains(&ep.port),
            "{name}: headless Service lacks {}",
            ep.port
        );
        let container_ports: Vec<i32> = broker_container(&c)
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect();
        assert!(
            container_ports.contains(&ep.port),
            "{name}: container lacks {}",
            ep.port
        );
        // Services target ports by name: every name must exist on the container.
        for svc in [&c.client, &c.headless] {
            for p in svc.spec.as_ref().unwrap().ports.iter().flatten() {
                let target = match &p.target_port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => {
                        s.clone()
                    }
                    other => panic!("{name}: target port {other:?} is not named"),
                };
                assert!(
                    broker_container(&c)
                        .ports
                        .iter()
                        .flatten()
                        .any(|cp| cp.name.as_deref() == Some(&target)),
                    "{name}: Service port {target} has no container port"
                );
            }
        }
        let headless = c.headless.spec.as_ref().unwrap();
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"), "{name}");
        assert_eq!(headless.publish_not_ready_addresses, Some(true), "{name}");
    }
}

#[test]
fn pods_roll_on_credentials_and_config_changes() {
    for case in cases() {
        let (v, c) = case.build();
        let annotations = c
            .statefulset
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .clone();
        let annotations = annotations.unwrap_or_default();
        assert_eq!(
            annotations.get(CREDENTIALS_HASH_ANNOTATION),
            Some(&v.credentials_hash),
            "{}",
            case.name()
        );
        assert!(
            annotations[CONFIG_HASH_ANNOTATION].starts_with("sha256:"),
            "{}",
            case.name()
        );
        if let Some(d) = c.ui.as_ref().and_then(|u| u.deployment.as_ref()) {
            let a = d
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
            assert_eq!(
                a.get(CREDENTIALS_HASH_ANNOTATION),
                Some(&v.credentials_hash),
                "{}",
                case.name()
            );
        }
    }
    // Another password: another config Secret, another config hash.
    let (_, a) = Case::new(BrokerKind::Redis).build();
    let (_, b) = Case::new(BrokerKind::Redis)
        .auth(user_password(USERNAME, "another-password"))
        .build();
    let hash = |c: &BrokerChildren| {
        c.statefulset
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };
    assert_ne!(hash(&a), hash(&b));
}

#[test]
fn output_is_deterministic() {
    for case in cases() {
        assert_eq!(case.build().1, case.build().1, "{}", case.name());
    }
}

#[test]
fn no_secret_value_outside_the_config_secret() {
    let encoded = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    for case in cases() {
        let (_, c) = case.build();
        let mut outside = vec![
            serde_json::to_string(&c.headless).unwrap(),
            serde_json::to_string(&c.client).unwrap(),
            serde_json::to_string(&c.statefulset).unwrap(),
        ];
        if let Some(ui) = &c.ui {
            outside.push(serde_json::to_string(&ui.service).unwrap());
            outside.push(serde_json::to_string(&ui.deployment).unwrap());
        }
        // The Secret's metadata (labels, annotations) is outside its data, too.
        outside.push(serde_json::to_string(&c.config.metadata).unwrap());
        for text in &outside {
            for secret in [PASSWORD, TOKEN, encoded.as_str()] {
                assert!(
                    !text.contains(secret),
                    "{}: a credential leaked into {text}",
                    case.name()
                );
            }
        }
        assert!(
            c.config.string_data.is_none(),
            "{}: stringData breaks server-side apply",
            case.name()
        );
        assert_eq!(c.config.type_.as_deref(), Some("Opaque"));
    }
}

#[test]
fn env_from_secrets_only_reference_the_config_secret_and_existing_keys() {
    for case in cases() {
        let (_, c) = case.build();
        let keys: Vec<String> = c.config.data.as_ref().unwrap().keys().cloned().collect();
        let config_name = c.config.metadata.name.clone().unwrap();
        let mut pods = vec![pod_spec(&c).clone()];
        if let Some(d) = c.ui.as_ref().and_then(|u| u.deployment.as_ref()) {
            pods.push(d.spec.as_ref().unwrap().template.spec.clone().unwrap());
        }
        for pod in pods {
            let containers = pod
                .containers
                .iter()
                .chain(pod.init_containers.iter().flatten());
            for env in containers.flat_map(|c| c.env.iter().flatten()) {
                if let Some(r) = env
                    .value_from
                    .as_ref()
                    .and_then(|f| f.secret_key_ref.as_ref())
                {
                    assert_eq!(r.name, config_name, "{}: {}", case.name(), env.name);
                    assert!(
                        keys.contains(&r.key),
                        "{}: {} reads missing key {}",
                        case.name(),
                        env.name,
                        r.key
                    );
                }
            }
            for vol in pod.volumes.iter().flatten() {
                if let Some(s) = &vol.secret {
                    assert_eq!(
                        s.secret_name.as_ref(),
                        Some(&config_name),
                        "{}",
                        case.name()
                    );
                    for item in s.items.iter().flatten() {
                        assert!(
                            keys.contains(&item.key),
                            "{}: volume projects missing key {}",
                            case.name(),
                            item.key
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn pods_are_locked_down() {
    for case in cases() {
        let (_, c) = case.build();
        let mut pods = vec![pod_spec(&c).clone()];
        if let Some(d) = c.ui.as_ref().and_then(|u| u.deployment.as_ref()) {
            pods.push(d.spec.as_ref().unwrap().template.spec.clone().unwrap());
        }
        for pod in pods {
            let sc = pod.security_context.as_ref().unwrap();
            assert_eq!(sc.run_as_non_root, Some(true), "{}", case.name());
            assert!(sc.run_as_user.is_some_and(|u| u > 0), "{}", case.name());
            assert!(
                sc.fs_group.is_some(),
                "{}: the PVC must be writable",
                case.name()
            );
            assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
            assert_eq!(pod.automount_service_account_token, Some(false));
            for container in pod
                .containers
                .iter()
                .chain(pod.init_containers.iter().flatten())
            {
                let csc = container.security_context.as_ref().unwrap();
                assert_eq!(
                    csc.allow_privilege_escalation,
                    Some(false),
                    "{}",
                    case.name()
                );
                assert_eq!(
                    csc.capabilities.as_ref().unwrap().drop,
                    Some(vec!["ALL".to_string()])
                );
                assert!(
                    container
                        .resources
                        .as_ref()
                        .is_some_and(|r| r.requests.is_some()),
                    "{}",
                    case.name()
                );
            }
            let main = &pod.containers[0];
            assert!(
                main.readiness_probe.is_some() && main.liveness_probe.is_some(),
                "{}",
                case.name()
            );
        }
        let spec = c.statefulset.spec.as_ref().unwrap();
        let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
        assert_eq!(
            parallel,
            case.replicas > 1,
            "{}: Parallel exactly for clusters",
            case.name()
        );
        let grace = pod_spec(&c).termination_grace_period_seconds.unwrap();
        assert!((30..=300).contains(&grace), "{}", case.name());
    }
}

#[test]
fn owner_and_labels() {
    for case in cases() {
        let (v, c) = case.build();
        let app = format!("edgewire-{}", case.kind.as_str());
        let selector = v.owner.selector(&app, "broker");
        let spec = c.statefulset.spec.as_ref().unwrap();
        assert_eq!(
            spec.selector.match_labels.as_ref(),
            Some(&selector),
            "{}",
            case.name()
        );
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        assert_eq!(pod_labels, &v.owner.labels(&app, "broker"));
        for svc in [&c.client, &c.headless] {
            assert_eq!(
                svc.spec.as_ref().unwrap().selector.as_ref(),
                Some(&selector)
            );
        }
        let mut metas = vec![
            &c.config.metadata,
            &c.headless.metadata,
            &c.client.metadata,
            &c.statefulset.metadata,
        ];
        if let Some(ui) = &c.ui {
            metas.push(&ui.service.metadata);
            if let Some(d) = &ui.deployment {
                metas.push(&d.metadata);
            }
        }
        for meta in metas {
            assert_eq!(
                meta.owner_references.as_deref(),
                Some(std::slice::from_ref(&v.owner.owner_ref))
            );
            assert_eq!(meta.namespace.as_deref(), Some("factory"));
        }
    }
}

#[test]
fn ui_objects_match_the_broker() {
    for case in cases() {
        let (v, c) = case.build();
        assert_eq!(
            c.ui.is_some(),
            case.ui && has_ui(case.kind),
            "{}",
            case.name()
        );
        let Some(ui) = &c.ui else { continue };
        let sts = broker_name(&v.owner, case.kind);
        assert_eq!(ui.service.metadata.name, Some(format!("{sts}-ui")));
        let ui_port = port_numbers(&ui.service)[0];
        match case.kind {
            // Built into the broker: the UI Service selects the broker pods.
            BrokerKind::Rabbitmq | BrokerKind::Emqx => {
                assert!(ui.deployment.is_none());
                assert_eq!(
                    ui.service.spec.as_ref().unwrap().selector,
                    c.client.spec.as_ref().unwrap().selector
                );
                assert_eq!(
                    ui_port,
                    if case.kind == BrokerKind::Rabbitmq {
                        15672
                    } else {
                        18083
                    }
                );
                let ports: Vec<i32> = broker_container(&c)
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| p.container_port)
                    .collect();
                assert!(ports.contains(&ui_port));
            }
            _ => {
                let d = ui.deployment.as_ref().expect("a UI Deployment");
                let labels = d
                    .spec
                    .as_ref()
                    .unwrap()
                    .template
                    .metadata
                    .as_ref()
                    .unwrap()
                    .labels
                    .clone()
                    .unwrap();
                let selector = ui.service.spec.as_ref().unwrap().selector.clone().unwrap();
                assert!(
                    selector.iter().all(|(k, val)| labels.get(k) == Some(val)),
                    "{}",
                    case.name()
                );
                let expected = match case.kind {
                    BrokerKind::Nats => 31311,
                    _ => 8080,
                };
                assert_eq!(ui_port, expected, "{}", case.name());
            }
        }
    }
    // Redis and Mosquitto have none even when asked.
    for kind in [BrokerKind::Redis, BrokerKind::Mosquitto] {
        assert!(Case::new(kind).ui().build().1.ui.is_none());
    }
}

/// Every kind builds with every auth variant (validate only pairs Token/Nkey with NATS, but the builders
/// must never panic on a plan they do not expect).
#[test]
fn unexpected_auth_variants_do_not_panic() {
    for kind in ALL {
        for auth in [
            BrokerAuth::Token(SecretString::from(TOKEN)),
            BrokerAuth::Nkey {
                public_key: "UABC".into(),
            },
        ] {
            let (_, c) = Case::new(kind)
                .auth(auth.clone())
                .replicas(if kind.clusters() { 3 } else { 1 })
                .ui()
                .build();
            assert!(!files(&c.config).is_empty(), "{kind:?}");
        }
    }
    // A token for Redis is the default user's password.
    let (_, c) = Case::new(BrokerKind::Redis)
        .auth(BrokerAuth::Token(SecretString::from(TOKEN)))
        .build();
    let conf = file(&c.config, "redis.conf");
    assert!(conf.contains(&format!(
        "user default on #{} ~* &* +@all",
        hex::encode(Sha256::digest(TOKEN))
    )));
    assert!(!conf.contains("user default off"));
}

/// Splits a `$7$` line and re-derives the hash with PBKDF2-HMAC-SHA512.
fn verify_mosquitto_line(line: &str, user: &str, password: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (u, rest) = line.split_once(':').unwrap();
    let parts: Vec<&str> = rest.split('$').collect();
    assert_eq!(parts[..3], ["", "7", "101"], "{line}");
    let salt = b64.decode(parts[3]).unwrap();
    let hash = b64.decode(parts[4]).unwrap();
    assert_eq!((salt.len(), hash.len()), (12, 64), "{line}");
    let mut expected = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &salt, 101, &mut expected);
    u == user && hash == expected
}

#[test]
fn mosquitto_password_line_verifies_and_is_stable() {
    let line = mosquitto_password_line(USERNAME, PASSWORD);
    assert!(verify_mosquitto_line(&line, USERNAME, PASSWORD));
    assert!(!verify_mosquitto_line(&line, USERNAME, "wrong"));
    assert_eq!(
        line,
        mosquitto_password_line(USERNAME, PASSWORD),
        "deterministic"
    );
    let other = mosquitto_password_line("other-user", PASSWORD);
    assert_ne!(
        line.split('$').nth(3),
        other.split('$').nth(3),
        "the salt depends on the user"
    );
    // Standard base64 with padding: 64 bytes are 88 characters ending in `==`.
    assert!(line.ends_with("=="), "{line}");

    let (_, c) = Case::new(BrokerKind::Mosquitto).build();
    let passwd = file(&c.config, "passwd");
    assert_eq!(passwd.lines().count(), 1);
    assert!(verify_mosquitto_line(passwd.trim_end(), USERNAME, PASSWORD));
    assert_eq!(
        file(&c.config, "acl"),
        format!("user {USERNAME}\ntopic readwrite #\n")
    );
    let conf = file(&c.config, "mosquitto.conf");
    for line in [
        "allow_anonymous false",
        "listener 1883",
        "password_file /mosquitto/config/passwd",
    ] {
        assert!(
            conf.lines().any(|l| l == line),
            "{line} missing from\n{conf}"
        );
    }
}

#[test]
fn nats_cluster_routes_list_every_replica() {
    for replicas in [3, 5] {
        let case = Case::new(BrokerKind::Nats).replicas(replicas);
        let (v, c) = case.build();
        let conf = file(&c.config, "nats.conf");
        let routes: Vec<String> = conf
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("\"nats://"))
            .map(|l| l.trim_matches('"').to_string())
            .collect();
        let sts = broker_name(&v.owner, BrokerKind::Nats);
        let expected: Vec<String> = (0..replicas)
            .map(|i| format!("nats://{sts}-{i}.{sts}-headless.factory.svc:6222"))
            .collect();
        assert_eq!(routes, expected);
        assert!(conf.contains("cluster {") && conf.contains("port: 6222"));
        assert!(conf.contains("server_name: $POD_NAME"));
    }
    let (_, single) = Case::new(BrokerKind::Nats).build();
    assert!(
        !file(&single.config, "nats.conf").contains("cluster {"),
        "one replica forms no cluster"
    );
}

#[test]
fn nats_quoting_escapes_what_the_lexer_treats_specially() {
    assert_eq!(nats::nats_quote(r#"a"b\c$d"#), r#""a\"b\\c$d""#);
    assert_eq!(nats::nats_quote("x\ny\u{1}"), r#""x\ny\x01""#);
    let (_, c) = Case::new(BrokerKind::Nats)
        .auth(BrokerAuth::Token(SecretString::from(TOKEN)))
        .build();
    assert!(
        file(&c.config, "nats.conf")
            .contains(&format!("authorization {{\n  token: \"{TOKEN}\"\n}}"))
    );
}

#[test]
fn rabbitmq_definitions_hash_verifies_and_cluster_lists_every_node() {
    let b64 = base64::engine::general_purpose::STANDARD;
    let (v, c) = Case::new(BrokerKind::Rabbitmq).replicas(3).build();
    let defs: serde_json::Value =
        serde_json::from_str(&file(&c.config, "definitions.json")).unwrap();
    let user = &defs["users"][0];
    assert_eq!(user["name"], USERNAME);
    assert_eq!(user["hashing_algorithm"], "rabbit_password_hashing_sha256");
    let raw = b64.decode(user["password_hash"].as_str().unwrap()).unwrap();
    let (salt, hash) = raw.split_at(4);
    assert_eq!(
        hash,
        Sha256::new()
            .chain_update(salt)
            .chain_update(PASSWORD)
            .finalize()
            .as_slice()
    );
    assert_eq!(defs["permissions"][0]["vhost"], "/");

    let conf = file(&c.config, "rabbitmq.conf");
    let sts = broker_name(&v.owner, BrokerKind::Rabbitmq);
    for i in 0..3 {
        let line = format!(
            "cluster_formation.classic_config.nodes.{} = rabbit@{sts}-{i}.{sts}-headless.factory.svc",
            i + 1
        );
        assert!(conf.contains(&line), "{line} missing from\n{conf}");
    }
    assert!(!conf.contains(PASSWORD), "rabbitmq.conf holds no plaintext");
    // The node name the pods use is the one the cluster config lists.
    let env = broker_container(&c).env.clone().unwrap();
    let nodename = env
        .iter()
        .find(|e| e.name == "RABBITMQ_NODENAME")
        .unwrap()
        .value
        .clone()
        .unwrap();
    assert_eq!(
        nodename,
        format!("rabbit@$(POD_NAME).{sts}-headless.factory.svc")
    );

    // One cookie for all replicas and reconciles, another for other credentials.
    let cookie = file(&c.config, ".erlang.cookie");
    assert_eq!(
        cookie,
        file(
            &Case::new(BrokerKind::Rabbitmq).build().1.config,
            ".erlang.cookie"
        )
    );
    let other = Case::new(BrokerKind::Rabbitmq)
        .auth(user_password(USERNAME, "other"))
        .build()
        .1;
    assert_ne!(cookie, file(&other.config, ".erlang.cookie"));
    assert!(cookie.len() >= 20 && cookie.chars().all(|ch| ch.is_ascii_uppercase()));
}

#[test]
fn redis_acl_stores_the_password_hash() {
    let (_, c) = Case::new(BrokerKind::Redis).build();
    let conf = file(&c.config, "redis.conf");
    assert!(conf.contains("user default off\n"));
    let line = format!(
        "user {USERNAME} on #{} ~* &* +@all",
        hex::encode(Sha256::digest(PASSWORD))
    );
    assert!(conf.contains(&line), "{conf}");
    assert!(
        conf.contains("appendonly yes") && conf.contains("dir /data") && conf.contains("port 6379")
    );
}

#[test]
fn kafka_quorum_cluster_id_and_scram() {
    let (v, c) = Case::new(BrokerKind::Kafka)
        .replicas(3)
        .sasl(SaslMechanism::ScramSha512)
        .build();
    let props = file(&c.config, "server.properties");
    let sts = broker_name(&v.owner, BrokerKind::Kafka);
    let voters: Vec<String> = (0..3)
        .map(|i| format!("{i}@{sts}-{i}.{sts}-headless.factory.svc:9093"))
        .collect();
    assert!(
        props.contains(&format!("controller.quorum.voters={}\n", voters.join(","))),
        "{props}"
    );
    for line in [
        "offsets.topic.replication.factor=3",
        "min.insync.replicas=2",
        "auto.create.topics.enable=true",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        "log.dirs=/var/lib/kafka/data",
    ] {
        assert!(
            props.lines().any(|l| l == line),
            "{line} missing from\n{props}"
        );
    }
    // The cluster id is Kafka's 16-byte UUID form, the same on every build.
    let script = broker_container(&c).command.clone().unwrap().join(" ");
    let id = kafka::cluster_id_for_uid(&v.owner.owner_ref.uid);
    assert!(script.contains(&format!("--cluster-id '{id}'")), "{script}");
    assert_eq!(
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&id)
            .unwrap()
            .len(),
        16
    );
    assert!(script.contains("--add-scram"));

    // The SCRAM credential re-derives from the password: SaltedPassword = PBKDF2-HMAC-SHA512(pw, salt, 4096).
    let scram = file(&c.config, "scram-credential");
    let b64 = base64::engine::general_purpose::STANDARD;
    let field = |k: &str| {
        scram
            .split([',', '[', ']'])
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap()
            .trim_matches('"')
            .to_string()
    };
    assert!(
        scram.starts_with("SCRAM-SHA-512=[name=edgewire,iterations=4096,"),
        "{scram}"
    );
    let mut expected = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(
        PASSWORD.as_bytes(),
        &b64.decode(field("salt")).unwrap(),
        4096,
        &mut expected,
    );
    assert_eq!(b64.decode(field("saltedpassword")).unwrap(), expected);
    assert!(!scram.contains(PASSWORD));

    // One replica: replication factors of one.
    let props1 = file(
        &Case::new(BrokerKind::Kafka).build().1.config,
        "server.properties",
    );
    assert!(
        props1.contains("offsets.topic.replication.factor=1\n")
            && props1.contains("min.insync.replicas=1\n")
    );
    assert!(props1.contains("sasl.enabled.mechanisms=PLAIN\n"));
}

#[test]
fn java_properties_escaping() {
    assert_eq!(kafka::properties_value(r"a\b"), r"a\\b");
    assert_eq!(kafka::properties_value(" lead"), r"\ lead");
    assert_eq!(kafka::properties_value("é"), r"\u00E9");
    assert_eq!(kafka::properties_value("😀"), r"\uD83D\uDE00");
    assert_eq!(kafka::jaas_quote(r#"p"w\"#), r#""p\"w\\""#);
}

#[test]
fn redpanda_and_emqx_seeds_list_every_replica() {
    let (v, c) = Case::new(BrokerKind::Redpanda).replicas(3).build();
    let sts = broker_name(&v.owner, BrokerKind::Redpanda);
    let args = broker_container(&c).args.clone().unwrap();
    let seeds: Vec<String> = (0..3)
        .map(|i| format!("{sts}-{i}.{sts}-headless.factory.svc:33145"))
        .collect();
    assert!(
        args.contains(&format!("--seeds={}", seeds.join(","))),
        "{args:?}"
    );
    assert_eq!(
        file(&c.config, "bootstrap-user"),
        format!("{USERNAME}:{PASSWORD}:SCRAM-SHA-256")
    );
    assert!(file(&c.config, ".bootstrap.yaml").contains("enable_sasl: true"));

    let (v, c) = Case::new(BrokerKind::Emqx).replicas(3).build();
    let sts = broker_name(&v.owner, BrokerKind::Emqx);
    let conf = file(&c.config, "emqx.conf");
    for i in 0..3 {
        assert!(
            conf.contains(&format!(
                "\"emqx@{sts}-{i}.{sts}-headless.factory.svc.cluster.local\""
            )),
            "{conf}"
        );
    }
    assert!(conf.contains("discovery_strategy = static"));
    assert_eq!(
        file(&c.config, "auth-built-in-db-bootstrap.csv"),
        format!("user_id,password,is_superuser\n{USERNAME},{PASSWORD},true\n")
    );
}

fn all_containers(c: &BrokerChildren) -> Vec<Container> {
    let pod = pod_spec(c);
    let mut containers: Vec<Container> = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
        .cloned()
        .collect();
    if let Some(d) = c.ui.as_ref().and_then(|u| u.deployment.as_ref()) {
        containers.extend(
            d.spec
                .as_ref()
                .unwrap()
                .template
                .spec
                .as_ref()
                .unwrap()
                .containers
                .iter()
                .cloned(),
        );
    }
    containers
}

/// The shell script of a `sh -c`/`sh -ec` container command.
fn script(container: &Container) -> Option<String> {
    let cmd = container.command.as_ref()?;
    (cmd.len() == 3 && cmd[0] == "sh" && cmd[1].starts_with('-') && cmd[1].ends_with('c'))
        .then(|| cmd[2].clone())
}

#[test]
fn container_scripts_are_valid_shell() {
    let mut checked = 0;
    for case in cases() {
        let (_, c) = case.build();
        for container in all_containers(&c) {
            let probes = [
                &container.readiness_probe,
                &container.liveness_probe,
                &container.startup_probe,
            ];
            let probe_scripts = probes.into_iter().flatten().filter_map(|p| {
                let cmd = p.exec.as_ref()?.command.as_ref()?;
                (cmd.first().map(String::as_str) == Some("sh")).then(|| cmd[2].clone())
            });
            for s in script(&container).into_iter().chain(probe_scripts) {
                let status = std::process::Command::new("sh")
                    .arg("-n")
                    .arg("-c")
                    .arg(&s)
                    .status()
                    .unwrap();
                assert!(status.success(), "{}: `sh -n` rejects\n{s}", case.name());
                checked += 1;
            }
        }
    }
    // Kafka start commands, RabbitMQ init containers, Redis readiness probes.
    assert!(checked >= 9, "only {checked} scripts found");
}

/// Replaces each container path with a temp one; each must occur.
fn relocate(script: &str, subs: &[(&str, &std::path::Path)]) -> String {
    let mut out = script.to_string();
    for (from, to) in subs {
        assert!(out.contains(from), "{from} not in\n{out}");
        out = out.replace(from, &to.display().to_string());
    }
    out
}

/// The Kafka start command, run with stub Kafka tools: the per-pod lines are appended and the SCRAM
/// credential reaches `kafka-storage format` as one argument, byte for byte.
#[test]
fn kafka_start_script_appends_identity_and_formats_with_scram() {
    use std::os::unix::fs::PermissionsExt;
    let (v, c) = Case::new(BrokerKind::Kafka)
        .replicas(3)
        .sasl(SaslMechanism::ScramSha256)
        .build();
    let tmp = tempfile::tempdir().unwrap();
    let (etc, run, bin) = (
        tmp.path().join("etc"),
        tmp.path().join("run"),
        tmp.path().join("bin"),
    );
    for d in [&etc, &run, &bin] {
        std::fs::create_dir(d).unwrap();
    }
    for key in ["server.properties", "scram-credential"] {
        std::fs::write(etc.join(key), file(&c.config, key)).unwrap();
    }
    for tool in ["kafka-storage.sh", "kafka-server-start.sh"] {
        let out = tmp.path().join(format!("{tool}.args"));
        std::fs::write(
            bin.join(tool),
            format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\n", out.display()),
        )
        .unwrap();
        std::fs::set_permissions(bin.join(tool), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let s = relocate(
        &script(broker_container(&c)).unwrap(),
        &[
            ("/etc/kafka-edgewire", &etc),
            ("/var/run/kafka", &run),
            ("/opt/kafka/bin", &bin),
        ],
    );
    let status = std::process::Command::new("sh")
        .arg("-ec")
        .arg(&s)
        .env("HOSTNAME", "events-kafka-2")
        .status()
        .unwrap();
    assert!(status.success());

    let conf = std::fs::read_to_string(run.join("server.properties")).unwrap();
    assert!(conf.starts_with(&file(&c.config, "server.properties")));
    assert!(conf.ends_with(
        "node.id=2\nadvertised.listeners=CLIENT://events-kafka-2.events-kafka-headless.factory.svc:9092\n"
    ));
    let args = std::fs::read_to_string(tmp.path().join("kafka-storage.sh.args")).unwrap();
    let conf_path = run.join("server.properties").display().to_string();
    let expected = [
        "format",
        "--ignore-formatted",
        "--cluster-id",
        &kafka::cluster_id_for_uid(&v.owner.owner_ref.uid),
        "--config",
        &conf_path,
        "--add-scram",
        &file(&c.config, "scram-credential"),
    ]
    .join("\n");
    assert_eq!(args, expected + "\n");
    let start = std::fs::read_to_string(tmp.path().join("kafka-server-start.sh.args")).unwrap();
    assert_eq!(start, format!("{conf_path}\n"));
}

/// The RabbitMQ init container installs the cookie owner-only (Erlang refuses anything else), also over
/// a cookie left by the previous start.
#[test]
fn rabbitmq_setup_installs_the_cookie() {
    use std::os::unix::fs::PermissionsExt;
    for (replicas, hostname) in [(1, "events-rabbitmq-0"), (3, "events-rabbitmq-0")] {
        let (_, c) = Case::new(BrokerKind::Rabbitmq).replicas(replicas).build();
        let tmp = tempfile::tempdir().unwrap();
        let (data, cookie_dir) = (tmp.path().join("data"), tmp.path().join("cookie"));
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&cookie_dir).unwrap();
        std::fs::write(
            cookie_dir.join("erlang-cookie"),
            file(&c.config, ".erlang.cookie"),
        )
        .unwrap();
        let setup = &pod_spec(&c).init_containers.as_ref().unwrap()[0];
        let s = relocate(
            &script(setup).unwrap(),
            &[
                ("/var/lib/rabbitmq", &data),
                ("/var/run/edgewire-cookie", &cookie_dir),
            ],
        );
        for _ in 0..2 {
            let status = std::process::Command::new("sh")
                .arg("-ec")
                .arg(&s)
                .env("HOSTNAME", hostname)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let installed = data.join(".erlang.cookie");
        assert_eq!(
            std::fs::read_to_string(&installed).unwrap(),
            file(&c.config, ".erlang.cookie")
        );
        assert_eq!(
            std::fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
            0o400
        );
    }
}
