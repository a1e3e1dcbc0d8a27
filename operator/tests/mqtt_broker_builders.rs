//! The MqttBroker builders: a snapshot of every child (config files shown decoded, generated Secrets by
//! their keys only), and assertions on the facts a snapshot review could miss.

#[path = "fixtures/mqtt/mod.rs"]
mod fixtures;

use edgewire_api::CONFIG_HASH_ANNOTATION;
use edgewire_api::LogLevel;
use edgewire_operator::controller::mqtt_broker::build::Children;
use edgewire_operator::controller::mqtt_broker::build::workload::{
    POD_SECRETS_HASH_ANNOTATION, config_hash,
};
use edgewire_operator::controller::mqtt_broker::{SIDECAR_USER, render};
use edgewire_operator::mosquitto::{log_types, password_line as mosquitto_password_line};
use fixtures::*;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, PodSpec, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use std::collections::BTreeMap;

/// What a reviewer reads: the config files line by line, then the objects (Secrets without their data).
#[derive(Serialize)]
struct View<'a> {
    config_files: BTreeMap<String, Vec<String>>,
    config: SecretView<'a>,
    user_secrets: Vec<SecretView<'a>>,
    sidecar_secret: SecretView<'a>,
    headless: &'a Service,
    service: &'a Service,
    statefulset: &'a StatefulSet,
}

#[derive(Serialize)]
struct SecretView<'a> {
    metadata: &'a ObjectMeta,
    #[serde(rename = "type")]
    type_: &'a Option<String>,
    data_keys: Vec<&'a String>,
}

fn secret_view(s: &Secret) -> SecretView<'_> {
    SecretView {
        metadata: &s.metadata,
        type_: &s.type_,
        data_keys: s.data.iter().flatten().map(|(k, _)| k).collect(),
    }
}

fn view(c: &Children) -> View<'_> {
    View {
        config_files: files(&c.config)
            .into_iter()
            .map(|(k, text)| (k, text.lines().map(str::to_string).collect()))
            .collect(),
        config: secret_view(&c.config),
        user_secrets: c.user_secrets.iter().map(secret_view).collect(),
        sidecar_secret: secret_view(&c.sidecar_secret),
        headless: &c.headless,
        service: &c.service,
        statefulset: &c.statefulset,
    }
}

fn cases() -> Vec<(&'static str, Fixture)> {
    vec![
        ("plain_single_user", plain()),
        ("tls_websockets_generated", tls_websockets_generated()),
    ]
}

#[test]
fn snapshots() {
    for (name, f) in cases() {
        let (_, children) = f.build();
        insta::assert_yaml_snapshot!(name, view(&children));
    }
}

fn pod_spec(sts: &StatefulSet) -> &PodSpec {
    sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

fn container<'a>(sts: &'a StatefulSet, name: &str) -> &'a Container {
    pod_spec(sts)
        .containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn pod_annotations(sts: &StatefulSet) -> BTreeMap<String, String> {
    sts.spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap()
}

#[test]
fn every_log_level_maps_to_its_log_types() {
    let expected: [(LogLevel, &[&str]); 5] = [
        (LogLevel::Error, &["error"]),
        (LogLevel::Warning, &["error", "warning"]),
        (LogLevel::Notice, &["error", "warning", "notice"]),
        (
            LogLevel::Information,
            &["error", "warning", "notice", "information"],
        ),
        (LogLevel::Debug, &["all"]),
    ];
    let mut hashes = Vec::new();
    for (level, types) in expected {
        assert_eq!(log_types(level), types, "{level:?}");
        let mut f = plain();
        f.builtin().log_level = level;
        let (_, c) = f.build();
        let conf = file(&c.config, "mosquitto.conf");
        let rendered: Vec<&str> = conf
            .lines()
            .filter_map(|l| l.strip_prefix("log_type "))
            .collect();
        assert_eq!(rendered, types, "{level:?}:\n{conf}");
        hashes.push(pod_annotations(&c.statefulset)[CONFIG_HASH_ANNOTATION].clone());
    }
    hashes.dedup();
    assert_eq!(hashes.len(), 5, "a log level change rolls the pod");
    // The default is error.
    assert_eq!(plain().validated().builtin.log_level, LogLevel::Error);
}

#[test]
fn the_config_has_the_settings_the_broker_relies_on() {
    let (_, c) = tls_websockets_generated().build();
    let conf = file(&c.config, "mosquitto.conf");
    let lines: Vec<&str> = conf.lines().collect();
    for expected in [
        "per_listener_settings false",
        "allow_anonymous false",
        "password_file /mosquitto/config/passwd",
        "acl_file /mosquitto/config/acl",
        "persistence true",
        "persistence_location /mosquitto/data/",
        "log_dest stdout",
        "sys_interval 10",
        "listener 1883",
        "listener 8883",
        "cafile /mosquitto/certs/ca.crt",
        "certfile /mosquitto/certs/tls.crt",
        "keyfile /mosquitto/certs/tls.key",
        "require_certificate false",
        "use_identity_as_username false",
        "listener 8080",
        "protocol websockets",
    ] {
        assert!(lines.contains(&expected), "missing {expected:?}:\n{conf}");
    }
    // per_listener_settings must come before the security settings it governs.
    let pos = |l: &str| lines.iter().position(|x| *x == l).unwrap();
    assert!(pos("per_listener_settings false") < pos("allow_anonymous false"));
    // Security settings come before the first listener (global, not per listener).
    assert!(pos("acl_file /mosquitto/config/acl") < pos("listener 1883"));

    // Without ca.crt there is no cafile; requiring client certificates needs it (validation says so).
    let no_ca = plain().tls("t", DUMMY_PEM, DUMMY_PEM, None);
    let conf = file(&no_ca.build().1.config, "mosquitto.conf");
    assert!(!conf.contains("cafile"), "{conf}");
    let err = edgewire_operator::controller::mqtt_broker::validate::validate(
        &no_ca.clone().require_client_cert().mqb,
        &no_ca.refs,
        &settings(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("Secret t key ca.crt is missing"), "{err}");
    let mtls = plain()
        .tls("t", DUMMY_PEM, DUMMY_PEM, Some(DUMMY_PEM))
        .require_client_cert();
    assert!(file(&mtls.build().1.config, "mosquitto.conf").contains("require_certificate true\n"));

    // With the plain listener off, the sidecar gets a loopback-only one and is pointed at it.
    let mut tls_only = plain().tls("t", DUMMY_PEM, DUMMY_PEM, None);
    tls_only.builtin().listeners.mqtt = None;
    let (v, c) = tls_only.build();
    let conf = file(&c.config, "mosquitto.conf");
    assert!(conf.contains("listener 1883 127.0.0.1\n"), "{conf}");
    assert!(!conf.contains("listener 1883\n"), "{conf}");
    let args = container(&c.statefulset, "mqtt-sidecar")
        .args
        .clone()
        .unwrap();
    assert_eq!(args.last().unwrap(), "127.0.0.1:1883");
    assert_eq!(
        v.endpoint, "workers.factory.svc:8883",
        "workers are pointed at TLS"
    );
    let probe = container(&c.statefulset, "mosquitto")
        .readiness_probe
        .clone()
        .unwrap();
    assert_eq!(
        probe.tcp_socket.unwrap().port,
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("mqtts".into()),
        "probes use a listener reachable on the pod IP"
    );
}

#[test]
fn passwd_has_one_sorted_line_per_user_and_the_sidecar() {
    let (_, c) = three_users().build();
    let passwd = file(&c.config, "passwd");
    let expected: String = [
        (SIDECAR_USER, SIDECAR_PASSWORD),
        ("ops", OPS_PASSWORD),
        ("pool-a", POOL_A_PASSWORD),
        ("pool-b", POOL_B_PASSWORD),
    ]
    .iter()
    .map(|(u, p)| format!("{}\n", mosquitto_password_line(u, p)))
    .collect();
    assert_eq!(passwd, expected);
    for line in passwd.lines() {
        let (_, hash) = line.split_once(':').unwrap();
        assert!(hash.starts_with("$7$101$"), "{line}");
    }
}

#[test]
fn acl_grants_the_seed_layout_and_the_sidecar_sys_only() {
    let (_, c) = three_users().build();
    let acl = file(&c.config, "acl");
    let body: Vec<&str> = acl.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        body,
        [
            "",
            "user edgewire-sidecar",
            "topic read $SYS/#",
            "",
            "user ops",
            "topic write edgewire/readonly/#",
            "topic read edgewire/writeonly/#",
            "",
            "user pool-a",
            "topic write edgewire/writeonly/pool-a/#",
            "topic read edgewire/readonly/pool-a/#",
            "",
            "user pool-b",
            "topic write edgewire/writeonly/pool-b/#",
            "topic read edgewire/readonly/pool-b/#",
        ],
        "{acl}"
    );
    let mut f = three_users();
    f.mqb.spec.topic_namespace = "spacelift".into();
    let acl = file(&f.build().1.config, "acl");
    assert!(
        acl.contains("topic write spacelift/writeonly/pool-a/#\n"),
        "{{ns}} is substituted:\n{acl}"
    );
    assert!(!acl.contains("{ns}"));
}

#[test]
fn a_password_change_rewrites_passwd_but_not_the_pod_template() {
    let (v1, before) = three_users().build();
    let (v2, after) = three_users()
        .password_secret("pool-a-creds", "a-new-password")
        .build();
    assert_ne!(
        file(&before.config, "passwd"),
        file(&after.config, "passwd")
    );
    assert_eq!(
        file(&before.config, "mosquitto.conf"),
        file(&after.config, "mosquitto.conf")
    );
    assert_ne!(v1.credentials_hash, v2.credentials_hash);
    assert_eq!(
        before.statefulset, after.statefulset,
        "the sidecar reloads Mosquitto in place: the StatefulSet (pod template included) must not change"
    );
    // A generated password changes passwd the same way, and still not the pod.
    let (_, regenerated) = three_users().generated("pool-b", "other").build();
    assert_ne!(
        file(&before.config, "passwd"),
        file(&regenerated.config, "passwd")
    );
    assert_eq!(before.statefulset, regenerated.statefulset);
    // The config hash is the hash of mosquitto.conf alone.
    assert_eq!(
        pod_annotations(&before.statefulset)[CONFIG_HASH_ANNOTATION],
        config_hash(&file(&before.config, "mosquitto.conf"))
    );
    assert!(
        !pod_annotations(&before.statefulset)
            .contains_key(edgewire_api::CREDENTIALS_HASH_ANNOTATION),
        "credentials are reloaded, never rolled"
    );
}

#[test]
fn a_listener_change_or_a_new_certificate_rolls_the_pod() {
    let (_, base) = plain().build();
    let (_, ws) = plain().websockets().build();
    assert_ne!(
        pod_annotations(&base.statefulset)[CONFIG_HASH_ANNOTATION],
        pod_annotations(&ws.statefulset)[CONFIG_HASH_ANNOTATION]
    );
    let (_, tls1) = plain().tls("t", "crt-1", "key", None).build();
    let (_, tls2) = plain().tls("t", "crt-2", "key", None).build();
    assert_eq!(
        file(&tls1.config, "mosquitto.conf"),
        file(&tls2.config, "mosquitto.conf")
    );
    assert_ne!(
        pod_annotations(&tls1.statefulset)[POD_SECRETS_HASH_ANNOTATION],
        pod_annotations(&tls2.statefulset)[POD_SECRETS_HASH_ANNOTATION],
        "Mosquitto reads its certificate at start: a new one restarts it"
    );
}

#[test]
fn output_is_deterministic() {
    for (name, f) in cases() {
        assert_eq!(f.build().1, f.build().1, "{name}");
    }
}

#[test]
fn no_password_outside_the_secrets_that_hold_it() {
    for (name, f) in cases() {
        let (_, c) = f.build();
        let Children {
            user_secrets,
            sidecar_secret,
            config,
            headless,
            service,
            statefulset,
        } = c;
        let public = serde_json::to_string(&(&headless, &service, &statefulset)).unwrap();
        let config_text = serde_json::to_string(&files(&config)).unwrap();
        for p in ALL_PASSWORDS {
            assert!(
                !public.contains(p),
                "{name}: a password leaked into a workload or Service"
            );
            assert!(
                !config_text.contains(p),
                "{name}: a password in clear in the config Secret"
            );
        }
        // Generated Secrets hold exactly their user's name and password, for apps to mount.
        for s in user_secrets.iter().chain([&sidecar_secret]) {
            let f = files(s);
            assert_eq!(
                f.keys().collect::<Vec<_>>(),
                ["password", "username"],
                "{name}"
            );
        }
        let pool_b = user_secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("workers-user-pool-b"));
        if let Some(s) = pool_b {
            assert_eq!(file(s, "password"), POOL_B_PASSWORD);
            assert_eq!(file(s, "username"), "pool-b");
        }
        assert_eq!(file(&sidecar_secret, "username"), SIDECAR_USER);
    }
}

#[test]
fn the_pod_runs_mosquitto_and_the_sidecar_locked_down() {
    let (v, c) = tls_websockets_generated().build();
    let sts = &c.statefulset;
    let spec = sts.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1), "Mosquitto does not cluster");
    assert_eq!(spec.service_name.as_deref(), Some("workers-headless"));
    let pod = pod_spec(sts);
    assert_eq!(
        pod.share_process_namespace,
        Some(true),
        "the sidecar signals Mosquitto"
    );
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_user, Some(1883));
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    for c in &pod.containers {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_string()]),
            "{}",
            c.name
        );
        // Both read the same config Secret, read-only, at the same path (the sidecar watches it).
        let m = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == "/mosquitto/config")
            .unwrap_or_else(|| panic!("{} mounts the config", c.name));
        assert_eq!(m.read_only, Some(true));
    }
    let mosquitto = container(sts, "mosquitto");
    assert_eq!(mosquitto.image.as_deref(), Some("eclipse-mosquitto:2"));
    let mounts: Vec<(&str, Option<bool>)> = mosquitto
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.mount_path.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/mosquitto/config", Some(true)),
            ("/mosquitto/data", None),
            ("/mosquitto/certs", Some(true))
        ]
    );
    let volumes: BTreeMap<&str, &str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| {
            (
                v.name.as_str(),
                v.secret.as_ref().unwrap().secret_name.as_deref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        volumes,
        BTreeMap::from([("certs", "workers-tls"), ("config", "workers-mosquitto")])
    );
    let pvc = &spec.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(pvc.metadata.name.as_deref(), Some("data"));

    let sidecar = container(sts, "mqtt-sidecar");
    assert_eq!(sidecar.image.as_deref(), Some(v.settings.agent.as_str()));
    assert_eq!(
        sidecar.args.clone().unwrap(),
        [
            "mqtt-sidecar",
            "--config-dir",
            "/mosquitto/config",
            "--metrics-port",
            "9431",
            "--broker",
            "127.0.0.1:1883"
        ]
    );
    let env: Vec<(String, String, String)> = sidecar
        .env
        .iter()
        .flatten()
        .map(|e| {
            let r = e
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            (e.name.clone(), r.name.clone(), r.key.clone())
        })
        .collect();
    assert_eq!(
        env,
        [
            (
                "MQTT_SIDECAR_USERNAME".into(),
                "workers-sidecar".into(),
                "username".into()
            ),
            (
                "MQTT_SIDECAR_PASSWORD".into(),
                "workers-sidecar".into(),
                "password".into()
            ),
        ]
    );
    let probe = sidecar
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.path.as_deref(), Some("/healthz"));

    // Every listener and the metrics port are on the Services and on a container.
    let svc_ports = |s: &Service| -> Vec<(String, i32)> {
        s.spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap(), p.port))
            .collect()
    };
    let expected: Vec<(String, i32)> = [
        ("mqtt", 1883),
        ("mqtts", 8883),
        ("websockets", 8080),
        ("metrics", 9431),
    ]
    .iter()
    .map(|(n, p)| (n.to_string(), *p))
    .collect();
    assert_eq!(svc_ports(&c.service), expected);
    assert_eq!(svc_ports(&c.headless), expected);
    assert_eq!(
        c.headless.spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("None")
    );
    let container_ports: Vec<(String, i32)> = pod
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(container_ports, expected);
}

#[test]
fn owner_labels_and_names() {
    let (_, c) = tls_websockets_generated().build();
    let metas: Vec<&ObjectMeta> = c
        .user_secrets
        .iter()
        .map(|s| &s.metadata)
        .chain([
            &c.sidecar_secret.metadata,
            &c.config.metadata,
            &c.headless.metadata,
            &c.service.metadata,
            &c.statefulset.metadata,
        ])
        .collect();
    let names: Vec<&str> = metas.iter().map(|m| m.name.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "workers-user-pool-b",
            "workers-sidecar",
            "workers-mosquitto",
            "workers-headless",
            "workers",
            "workers",
        ]
    );
    for m in metas {
        let owner = &m.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "MqttBroker");
        assert_eq!(owner.uid, "uid-workers");
        assert_eq!(owner.controller, Some(true));
        let labels = m.labels.as_ref().unwrap();
        assert_eq!(labels["edgewire.dev/owner-kind"], "mqttbroker");
        assert_eq!(labels["app.kubernetes.io/instance"], "workers");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "edgewire-operator");
        assert_eq!(m.namespace.as_deref(), Some("factory"));
    }
}

#[test]
fn render_prints_every_child_with_placeholders_for_passwords_not_generated_yet() {
    let f = tls_websockets_generated();
    let secrets = f
        .refs
        .secrets
        .values()
        .map(|s| {
            (
                ("factory".to_string(), s.metadata.name.clone().unwrap()),
                s.clone(),
            )
        })
        .collect();
    let docs = render(&f.mqb, &secrets, &settings()).unwrap();
    let kinds: Vec<String> = docs
        .iter()
        .map(|d| {
            let v: serde_norway::Value = serde_norway::from_str(d).unwrap();
            format!(
                "{} {}",
                v["kind"].as_str().unwrap(),
                v["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "Secret workers-user-pool-b",
            "Secret workers-sidecar",
            "Secret workers-mosquitto",
            "Service workers-headless",
            "Service workers",
            "StatefulSet workers",
        ]
    );
    let all = docs.concat();
    assert!(
        all.contains(&base64_of("GENERATED-AT-FIRST-RECONCILE")),
        "generated passwords are shown as placeholders"
    );
    let mut invalid = f.mqb.clone();
    invalid.spec.builtin.as_mut().unwrap().users[0].publish = Some(vec!["a/#/b".into()]);
    let err = render(&invalid, &secrets, &settings())
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.builtin.users[0].publish[0]"), "{err}");
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
