//! The broker pod: Mosquitto and the `mqtt-sidecar` in one StatefulSet pod sharing a process namespace (the
//! sidecar finds Mosquitto by name and sends it SIGHUP when the mounted config Secret changes), and the
//! Services in front of it.

use super::super::{
    APP, MQTT_PORT, ValidatedMqttBroker, config_secret_name, headless_name, sidecar_secret_name,
};
use super::BROKER_COMPONENT;
use super::config::{CERTS_DIR, CONFIG_DIR, CONFIG_KEY, DATA_DIR};
use crate::controller::event_broker::build::broker::CONFIG_HASH_ANNOTATION;
use crate::controller::event_broker::generated_keys;
use edgewire_api::DeletionPolicy;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Pod-template annotation with the hash of what the pod reads only when it starts (the TLS Secret, the
/// sidecar's credentials in its environment). User passwords are not in it: they reload in place.
pub const POD_SECRETS_HASH_ANNOTATION: &str = "edgewire.dev/pod-secrets-hash";
/// User and group of the `eclipse-mosquitto` image. The sidecar runs as the same user: only then may it
/// signal Mosquitto (no CAP_KILL under the restricted profile).
pub const MOSQUITTO_UID: i64 = 1883;
/// Name of the Mosquitto container.
pub const MOSQUITTO_CONTAINER: &str = "mosquitto";
/// Name of the sidecar container.
pub const SIDECAR_CONTAINER: &str = "mqtt-sidecar";
/// Environment variables the sidecar logs in with.
pub const SIDECAR_USERNAME_ENV: &str = "MQTT_SIDECAR_USERNAME";
pub const SIDECAR_PASSWORD_ENV: &str = "MQTT_SIDECAR_PASSWORD";

const CONFIG_VOLUME: &str = "config";
const DATA_VOLUME: &str = "data";
const CERTS_VOLUME: &str = "certs";

/// `(name, port)` of Mosquitto's listeners, as named on the container and the Services.
pub fn listener_ports(v: &ValidatedMqttBroker) -> Vec<(&'static str, i32)> {
    let l = &v.builtin.listeners;
    let mut out = Vec::new();
    if let Some(p) = l.mqtt {
        out.push(("mqtt", p));
    }
    if let Some(t) = &v.tls {
        out.push(("mqtts", t.port));
    }
    if let Some(w) = &l.websockets {
        out.push(("websockets", w.port));
    }
    out
}

/// Where the sidecar reaches Mosquitto: the plain listener, else the loopback one rendered for it.
pub fn sidecar_broker_address(v: &ValidatedMqttBroker) -> String {
    format!(
        "127.0.0.1:{}",
        v.builtin.listeners.mqtt.unwrap_or(MQTT_PORT)
    )
}

/// `sha256:<hex>` of the rendered `mosquitto.conf`.
pub fn config_hash(conf: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(conf.as_bytes())))
}

fn service_ports(ports: &[(&str, i32)]) -> Vec<ServicePort> {
    ports
        .iter()
        .map(|(name, port)| ServicePort {
            name: Some((*name).into()),
            port: *port,
            target_port: Some(IntOrString::String((*name).into())),
            protocol: Some("TCP".into()),
            ..Default::default()
        })
        .collect()
}

fn container_ports(ports: &[(&str, i32)]) -> Vec<ContainerPort> {
    ports
        .iter()
        .map(|(name, port)| ContainerPort {
            name: Some((*name).into()),
            container_port: *port,
            protocol: Some("TCP".into()),
            ..Default::default()
        })
        .collect()
}

/// Every port of the Services: the listeners and the sidecar's metrics.
fn all_ports(v: &ValidatedMqttBroker) -> Vec<(&'static str, i32)> {
    let mut ports = listener_ports(v);
    ports.push(("metrics", v.builtin.metrics.port));
    ports
}

/// Client Service `<mqb>`: what workers (and Prometheus, on `metrics`) connect to.
pub fn build_service(v: &ValidatedMqttBroker) -> Service {
    Service {
        metadata: v.owner.meta(v.owner.name.clone(), APP, BROKER_COMPONENT),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(v.owner.selector(APP, BROKER_COMPONENT)),
            ports: Some(service_ports(&all_ports(v))),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Headless Service `<mqb>-headless`: the StatefulSet's stable pod DNS.
pub fn build_headless_service(v: &ValidatedMqttBroker) -> Service {
    Service {
        metadata: v
            .owner
            .meta(headless_name(&v.owner.name), APP, BROKER_COMPONENT),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(v.owner.selector(APP, BROKER_COMPONENT)),
            ports: Some(service_ports(&all_ports(v))),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn secret_volume(name: &str, secret: &str) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            // Owner and group (fsGroup) may read; nobody may write, others see nothing.
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn probe(initial_delay: i32, period: i32, timeout: i32) -> Probe {
    Probe {
        initial_delay_seconds: Some(initial_delay),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn tcp_probe(port: &str, initial_delay: i32, period: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port.into()),
            ..Default::default()
        }),
        ..probe(initial_delay, period, 5)
    }
}

/// The restricted Pod Security Standard, container part.
fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..Default::default()
    }
}

fn requirements(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(memory_limit.into()),
        )])),
        ..Default::default()
    }
}

fn mosquitto_container(v: &ValidatedMqttBroker) -> Container {
    let ports = listener_ports(v);
    // Probes go through the pod IP, so they use a public listener (the loopback one is not reachable).
    let probe_port = ports.first().map(|(n, _)| *n).unwrap_or("mqtt");
    let mut mounts = vec![
        mount(CONFIG_VOLUME, CONFIG_DIR, true),
        mount(DATA_VOLUME, DATA_DIR, false),
    ];
    if v.tls.is_some() {
        mounts.push(mount(CERTS_VOLUME, CERTS_DIR, true));
    }
    Container {
        name: MOSQUITTO_CONTAINER.into(),
        image: Some(v.builtin.image.clone()),
        command: Some(vec![
            "mosquitto".into(),
            "-c".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        ports: Some(container_ports(&ports)),
        volume_mounts: Some(mounts),
        readiness_probe: Some(tcp_probe(probe_port, 5, 10)),
        liveness_probe: Some(tcp_probe(probe_port, 30, 30)),
        resources: Some(
            v.builtin
                .resources
                .clone()
                .unwrap_or_else(|| requirements("25m", "32Mi", "256Mi")),
        ),
        security_context: Some(restricted_container()),
        ..Default::default()
    }
}

fn sidecar_container(v: &ValidatedMqttBroker) -> Container {
    let metrics = v.builtin.metrics.port;
    let secret = sidecar_secret_name(&v.owner.name);
    Container {
        name: SIDECAR_CONTAINER.into(),
        image: Some(v.images.agent.clone()),
        image_pull_policy: Some(
            v.images
                .agent_pull_policy
                .clone()
                .unwrap_or_else(|| "IfNotPresent".into()),
        ),
        args: Some(vec![
            "mqtt-sidecar".into(),
            "--config-dir".into(),
            CONFIG_DIR.into(),
            "--metrics-port".into(),
            metrics.to_string(),
            "--broker".into(),
            sidecar_broker_address(v),
        ]),
        env: Some(vec![
            secret_env(SIDECAR_USERNAME_ENV, &secret, generated_keys::USERNAME),
            secret_env(SIDECAR_PASSWORD_ENV, &secret, generated_keys::PASSWORD),
        ]),
        ports: Some(container_ports(&[("metrics", metrics)])),
        volume_mounts: Some(vec![mount(CONFIG_VOLUME, CONFIG_DIR, true)]),
        // Liveness only: a sidecar that is not ready must not take the broker out of its Service.
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::String("metrics".into()),
                scheme: Some("HTTP".into()),
                ..Default::default()
            }),
            ..probe(10, 30, 5)
        }),
        resources: Some(requirements("10m", "16Mi", "64Mi")),
        security_context: Some(restricted_container()),
        ..Default::default()
    }
}

/// Pod-template annotations: the hash of `mosquitto.conf` (a listener or log change restarts Mosquitto) and
/// of what the pod reads only at start. Never a hash of `passwd` or `acl`.
pub fn pod_annotations(v: &ValidatedMqttBroker, conf: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CONFIG_HASH_ANNOTATION.to_string(), config_hash(conf)),
        (
            POD_SECRETS_HASH_ANNOTATION.to_string(),
            v.pod_secrets_hash.clone(),
        ),
    ])
}

/// The StatefulSet `<mqb>`: one replica (Mosquitto does not cluster), a PVC for persistence.
pub fn build_statefulset(v: &ValidatedMqttBroker, conf: &str) -> StatefulSet {
    let o = &v.owner;
    let mut volumes = vec![secret_volume(CONFIG_VOLUME, &config_secret_name(&o.name))];
    if let Some(t) = &v.tls {
        volumes.push(secret_volume(CERTS_VOLUME, &t.secret_name));
    }
    let retention = match v.deletion_policy {
        DeletionPolicy::Retain => "Retain",
        DeletionPolicy::Delete => "Delete",
    };
    let storage = &v.builtin.persistence;
    StatefulSet {
        metadata: o.meta(o.name.clone(), APP, BROKER_COMPONENT),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(headless_name(&o.name)),
            selector: LabelSelector {
                match_labels: Some(o.selector(APP, BROKER_COMPONENT)),
                ..Default::default()
            },
            pod_management_policy: Some("OrderedReady".into()),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(retention.into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(o.labels(APP, BROKER_COMPONENT)),
                    annotations: Some(pod_annotations(v, conf)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    share_process_namespace: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(MOSQUITTO_UID),
                        run_as_group: Some(MOSQUITTO_UID),
                        fs_group: Some(MOSQUITTO_UID),
                        fs_group_change_policy: Some("OnRootMismatch".into()),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![mosquitto_container(v), sidecar_container(v)],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(DATA_VOLUME.into()),
                    labels: Some(o.labels(APP, BROKER_COMPONENT)),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: storage.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_string(),
                            Quantity(storage.size.clone()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
