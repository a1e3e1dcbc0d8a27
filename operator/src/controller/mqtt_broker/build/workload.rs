//! The broker pod: Mosquitto and the `mqtt-sidecar` in one StatefulSet pod sharing a process namespace (the
//! sidecar finds Mosquitto by name and sends it SIGHUP when the mounted config Secret changes), and the
//! Services in front of it.

use super::super::names::{APP, MQTT_PORT, config_secret_name, headless_name, sidecar_secret_name};
use super::super::validate::ValidatedMqttBroker;
use super::BROKER_COMPONENT;
use super::config::{CERTS_DIR, CONFIG_DIR, CONFIG_KEY, DATA_DIR};
use crate::hash::sha256;
use crate::pod::{
    Defaults, ImageUser, Timing, container_ports, container_security_context, http_probe, mount,
    pod_security_context, pvc_retention, secret_env, secret_volume, service_ports, tcp_probe,
    volume_claim,
};
use crate::secret::generated_keys;
use edgewire_api::CONFIG_HASH_ANNOTATION;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use sha2::Digest;
use std::collections::BTreeMap;

/// Pod-template annotation with the hash of what the pod reads only when it starts (the TLS Secret, the
/// sidecar's credentials in its environment). User passwords are not in it: they reload in place.
pub const POD_SECRETS_HASH_ANNOTATION: &str = "edgewire.dev/pod-secrets-hash";
/// User and group of the `eclipse-mosquitto` image. The sidecar runs as the same user: only then may it
/// signal Mosquitto (no CAP_KILL under the restricted profile).
pub const MOSQUITTO_UID: i64 = crate::mosquitto::UID;
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
    sha256(|h| h.update(conf.as_bytes()))
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
        readiness_probe: Some(tcp_probe(probe_port, timing(5, 10))),
        liveness_probe: Some(tcp_probe(probe_port, timing(30, 30))),
        resources: Some(v.builtin.resources.clone().unwrap_or_else(|| {
            Defaults {
                cpu_request: "25m",
                memory_request: "32Mi",
                memory_limit: "256Mi",
            }
            .requirements()
        })),
        security_context: Some(container_security_context(true)),
        ..Default::default()
    }
}

fn sidecar_container(v: &ValidatedMqttBroker) -> Container {
    let metrics = v.builtin.metrics.port;
    let secret = sidecar_secret_name(&v.owner.name);
    Container {
        name: SIDECAR_CONTAINER.into(),
        image: Some(v.settings.agent.clone()),
        image_pull_policy: Some(v.settings.agent_pull_policy()),
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
            secret_env(
                SIDECAR_USERNAME_ENV,
                &secret,
                generated_keys::USERNAME,
                None,
            ),
            secret_env(
                SIDECAR_PASSWORD_ENV,
                &secret,
                generated_keys::PASSWORD,
                None,
            ),
        ]),
        ports: Some(container_ports(&[("metrics", metrics)])),
        volume_mounts: Some(vec![mount(CONFIG_VOLUME, CONFIG_DIR, true)]),
        // Liveness only: a sidecar that is not ready must not take the broker out of its Service.
        liveness_probe: Some(http_probe("/healthz", "metrics", timing(10, 30))),
        resources: Some(
            Defaults {
                cpu_request: "10m",
                memory_request: "16Mi",
                memory_limit: "64Mi",
            }
            .requirements(),
        ),
        security_context: Some(container_security_context(true)),
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
    let mut volumes = vec![secret_volume(
        CONFIG_VOLUME,
        &config_secret_name(&o.name),
        &[],
    )];
    if let Some(t) = &v.tls {
        volumes.push(secret_volume(CERTS_VOLUME, &t.secret_name, &[]));
    }
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
            persistent_volume_claim_retention_policy: Some(pvc_retention(v.deletion_policy)),
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
                    security_context: Some(pod_security_context(ImageUser {
                        uid: MOSQUITTO_UID,
                        gid: MOSQUITTO_UID,
                    })),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![mosquitto_container(v), sidecar_container(v)],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![volume_claim(
                DATA_VOLUME,
                o.labels(APP, BROKER_COMPONENT),
                storage.storage_class_name.clone(),
                &storage.size,
            )]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Probe timing with three failures and a 5 s timeout.
fn timing(initial_delay: i32, period: i32) -> Timing {
    Timing {
        initial_delay: Some(initial_delay),
        period,
        timeout: 5,
        failures: 3,
    }
}
