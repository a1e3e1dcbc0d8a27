//! What every broker's objects share: names, metadata, the config Secret, the two Services, the
//! StatefulSet skeleton (PVC template, security context, probes, resources), and small renderers.

use super::super::super::{BrokerAuth, BrokerPlan, ValidatedEventBroker};
use super::super::pod_annotations;
use base64::Engine;
use edgewire_api::{BrokerKind, DeletionPolicy};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    ExecAction, HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, TCPSocketAction,
    Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Pod-template annotation with a digest of the rendered config Secret: a config change that is not a
/// credentials change (more replicas, so more cluster routes; a new operator version) rolls the broker too.
pub const CONFIG_HASH_ANNOTATION: &str = "edgewire.dev/config-hash";

/// Name of the volume (and PVC template) holding the broker's data.
pub const DATA_VOLUME: &str = "data";
/// Name of the volume projecting the config Secret.
pub const CONFIG_VOLUME: &str = "config";

/// Names and identity of one deployed broker.
pub struct Ctx<'a> {
    pub v: &'a ValidatedEventBroker,
    pub plan: &'a BrokerPlan,
    /// `app.kubernetes.io/name` of every object: `edgewire-<kind>`.
    pub app: String,
    /// StatefulSet and client Service.
    pub name: String,
    pub headless: String,
    pub config: String,
    pub ui: String,
    pub namespace: String,
}

impl<'a> Ctx<'a> {
    pub fn new(v: &'a ValidatedEventBroker, plan: &'a BrokerPlan) -> Self {
        let name = super::broker_name(&v.owner, plan.kind);
        Ctx {
            v,
            plan,
            app: format!("edgewire-{}", plan.kind.as_str()),
            headless: format!("{name}-headless"),
            config: format!("{name}-config"),
            ui: format!("{name}-ui"),
            namespace: v.owner.namespace.clone(),
            name,
        }
    }

    pub fn kind(&self) -> BrokerKind {
        self.plan.kind
    }

    /// Replicas, never below one.
    pub fn replicas(&self) -> i32 {
        self.plan.replicas.max(1)
    }

    /// Whether this broker runs as a cluster of several nodes.
    pub fn clustered(&self) -> bool {
        self.kind().clusters() && self.replicas() > 1
    }

    /// Metadata of a broker object (component `broker`).
    pub fn meta(&self, name: &str) -> ObjectMeta {
        self.v.owner.meta(name, &self.app, "broker")
    }

    /// Metadata of a UI object (component `ui`).
    pub fn ui_meta(&self) -> ObjectMeta {
        self.v.owner.meta(self.ui.clone(), &self.app, "ui")
    }

    pub fn selector(&self) -> BTreeMap<String, String> {
        self.v.owner.selector(&self.app, "broker")
    }

    pub fn ui_selector(&self) -> BTreeMap<String, String> {
        self.v.owner.selector(&self.app, "ui")
    }

    /// Stable DNS name of pod `i` through the headless Service: `<sts>-<i>.<headless>.<ns>.svc`.
    pub fn pod_host(&self, i: i32) -> String {
        format!("{}-{i}.{}.{}.svc", self.name, self.headless, self.namespace)
    }

    /// Host part of a pod's DNS name with the pod name left to the container (`$(POD_NAME)` expansion).
    pub fn own_host_env(&self) -> String {
        format!("$(POD_NAME).{}.{}.svc", self.headless, self.namespace)
    }

    /// Host of the client Service.
    pub fn client_host(&self) -> String {
        super::client_endpoint(&self.v.owner, self.kind()).host
    }

    /// `(username, password)` for brokers that take a user: a token becomes the password of `default_user`,
    /// and an NKEY (a NATS-only mode) has no password, so nobody can log in with it elsewhere.
    pub fn user_password<'b>(&'b self, default_user: &'b str) -> Option<(&'b str, &'b str)> {
        match &self.plan.auth {
            BrokerAuth::UserPassword { username, password } => {
                Some((username.as_str(), password.expose()))
            }
            BrokerAuth::Token(token) => Some((default_user, token.expose())),
            BrokerAuth::Nkey { .. } => None,
        }
    }

    /// An env var read from a key of the config Secret.
    pub fn secret_env(&self, name: &str, key: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: self.config.clone(),
                    key: key.into(),
                    optional: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The config Secret as a volume; `items` projects only some keys (`(key, path)`), all when empty.
    pub fn config_volume(&self, name: &str, items: &[(&str, &str)]) -> Volume {
        Volume {
            name: name.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(self.config.clone()),
                // Owner and group (fsGroup) may read; nobody may write, others see nothing.
                default_mode: Some(0o440),
                items: (!items.is_empty()).then(|| {
                    items
                        .iter()
                        .map(|(key, path)| KeyToPath {
                            key: (*key).into(),
                            path: (*path).into(),
                            mode: None,
                        })
                        .collect()
                }),
                optional: None,
            }),
            ..Default::default()
        }
    }

    /// The config Secret: `files` as `data` (never `stringData`, which server-side apply cannot compare).
    pub fn config_secret(&self, files: BTreeMap<String, Vec<u8>>) -> Secret {
        Secret {
            metadata: self.meta(&self.config),
            type_: Some("Opaque".into()),
            data: Some(files.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            ..Default::default()
        }
    }

    /// Headless Service: stable pod DNS for peers, published before the pods are ready so a cluster can form.
    pub fn headless_service(&self, ports: &[(&str, i32)]) -> Service {
        Service {
            metadata: self.meta(&self.headless),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                publish_not_ready_addresses: Some(true),
                selector: Some(self.selector()),
                ports: Some(service_ports(ports)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Client Service `<eb>-<kind>`.
    pub fn client_service(&self, ports: &[(&str, i32)]) -> Service {
        Service {
            metadata: self.meta(&self.name),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(self.selector()),
                ports: Some(service_ports(ports)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// UI Service `<eb>-<kind>-ui` to `port` of the pods chosen by `selector`.
    pub fn ui_service(
        &self,
        selector: BTreeMap<String, String>,
        port_name: &str,
        port: i32,
    ) -> Service {
        Service {
            metadata: self.ui_meta(),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(selector),
                ports: Some(service_ports(&[(port_name, port)])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Pod-template annotations: the credentials hash (a Secret change rolls the pods) and the config hash.
    pub fn pod_annotations(&self, config: &Secret) -> BTreeMap<String, String> {
        let mut annotations = pod_annotations(self.v);
        annotations.insert(CONFIG_HASH_ANNOTATION.into(), secret_digest(config));
        annotations
    }

    /// The broker StatefulSet around `w`.
    pub fn statefulset(&self, w: Workload, config: &Secret) -> StatefulSet {
        let selector = self.selector();
        let anti_affinity = self.clustered().then(|| Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 100,
                        pod_affinity_term: PodAffinityTerm {
                            label_selector: Some(LabelSelector {
                                match_labels: Some(selector.clone()),
                                ..Default::default()
                            }),
                            topology_key: "kubernetes.io/hostname".into(),
                            ..Default::default()
                        },
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let retention = match self.v.spec.deletion_policy {
            DeletionPolicy::Retain => "Retain",
            DeletionPolicy::Delete => "Delete",
        };
        let mut volumes = vec![self.config_volume(CONFIG_VOLUME, &w.config_items)];
        volumes.extend(w.volumes);
        StatefulSet {
            metadata: self.meta(&self.name),
            spec: Some(StatefulSetSpec {
                replicas: Some(self.replicas()),
                service_name: Some(self.headless.clone()),
                selector: LabelSelector {
                    match_labels: Some(selector),
                    ..Default::default()
                },
                // Clustered brokers must start together: a node waiting for its peers would otherwise block
                // the next ordinal forever after a full restart.
                pod_management_policy: Some(
                    if self.clustered() {
                        "Parallel"
                    } else {
                        "OrderedReady"
                    }
                    .into(),
                ),
                persistent_volume_claim_retention_policy: Some(
                    StatefulSetPersistentVolumeClaimRetentionPolicy {
                        when_deleted: Some(retention.into()),
                        when_scaled: Some("Retain".into()),
                    },
                ),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(self.v.owner.labels(&self.app, "broker")),
                        annotations: Some(self.pod_annotations(config)),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        automount_service_account_token: Some(false),
                        // Service links would inject e.g. KAFKA_PORT/REDIS_PORT, which images read as config.
                        enable_service_links: Some(false),
                        security_context: Some(pod_security_context(w.user)),
                        termination_grace_period_seconds: Some(w.grace_seconds),
                        affinity: anti_affinity,
                        init_containers: (!w.init_containers.is_empty())
                            .then_some(w.init_containers),
                        containers: vec![w.container],
                        volumes: Some(volumes),
                        ..Default::default()
                    }),
                },
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some(DATA_VOLUME.into()),
                        labels: Some(self.v.owner.labels(&self.app, "broker")),
                        ..Default::default()
                    },
                    spec: Some(PersistentVolumeClaimSpec {
                        access_modes: Some(vec!["ReadWriteOnce".into()]),
                        storage_class_name: self.plan.storage.storage_class_name.clone(),
                        resources: Some(VolumeResourceRequirements {
                            requests: Some(BTreeMap::from([(
                                "storage".to_string(),
                                Quantity(self.plan.storage.size.clone()),
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

    /// A one-replica UI Deployment `<eb>-<kind>-ui`.
    pub fn ui_deployment(
        &self,
        container: Container,
        volumes: Vec<Volume>,
        user: ImageUser,
        config: &Secret,
    ) -> Deployment {
        Deployment {
            metadata: self.ui_meta(),
            spec: Some(DeploymentSpec {
                replicas: Some(1),
                selector: LabelSelector {
                    match_labels: Some(self.ui_selector()),
                    ..Default::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(self.v.owner.labels(&self.app, "ui")),
                        annotations: Some(self.pod_annotations(config)),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        automount_service_account_token: Some(false),
                        enable_service_links: Some(false),
                        security_context: Some(pod_security_context(user)),
                        containers: vec![container],
                        volumes: (!volumes.is_empty()).then_some(volumes),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The broker container's resources: the spec's, else `default`.
    pub fn resources(&self, default: Defaults) -> ResourceRequirements {
        self.plan
            .resources
            .clone()
            .unwrap_or_else(|| default.requirements())
    }

    /// Memory the broker container may use, in bytes: its limit, else its request.
    pub fn memory_bytes(&self, default: Defaults) -> u64 {
        let r = self.resources(default);
        let memory = |m: &Option<BTreeMap<String, Quantity>>| {
            m.as_ref()
                .and_then(|m| m.get("memory"))
                .and_then(|q| quantity_bytes(&q.0))
        };
        memory(&r.limits)
            .or_else(|| memory(&r.requests))
            .unwrap_or_else(|| quantity_bytes(default.memory_limit).unwrap_or(1 << 30))
    }

    /// Cluster-internal secret for Erlang distribution (RabbitMQ, EMQX): derived from the credentials so it is
    /// identical on every replica and across reconciles, and unknown to anyone who cannot read them.
    pub fn erlang_cookie(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"edgewire/erlang-cookie\0");
        h.update(self.v.owner.owner_ref.uid.as_bytes());
        h.update(b"\0");
        match &self.plan.auth {
            BrokerAuth::UserPassword { username, password } => {
                h.update(username.as_bytes());
                h.update(b"\0");
                h.update(password.expose().as_bytes());
            }
            BrokerAuth::Token(t) => h.update(t.expose().as_bytes()),
            BrokerAuth::Nkey { public_key } => h.update(public_key.as_bytes()),
        }
        // Upper-case letters only: a cookie is an Erlang atom, and this needs no quoting anywhere.
        h.finalize()
            .iter()
            .take(20)
            .map(|b| char::from(b'A' + b % 26))
            .collect()
    }
}

/// The parts of a broker pod that differ between brokers.
pub struct Workload {
    pub container: Container,
    pub init_containers: Vec<Container>,
    /// Volumes besides the config Secret (`config`) and the PVC (`data`).
    pub volumes: Vec<Volume>,
    /// Keys of the config Secret projected into the `config` volume (`(key, path)`); all when empty.
    pub config_items: Vec<(&'static str, &'static str)>,
    pub user: ImageUser,
    pub grace_seconds: i64,
}

/// The user an image runs as (so `runAsNonRoot` can be verified and the PVC is group-writable).
#[derive(Clone, Copy)]
pub struct ImageUser {
    pub uid: i64,
    pub gid: i64,
}

/// Default resources of a container: requests, and a memory limit (no CPU limit: throttling a broker
/// hurts latency more than it protects neighbours).
#[derive(Clone, Copy)]
pub struct Defaults {
    pub cpu_request: &'static str,
    pub memory_request: &'static str,
    pub memory_limit: &'static str,
}

impl Defaults {
    pub fn requirements(self) -> ResourceRequirements {
        ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(self.cpu_request.into())),
                ("memory".to_string(), Quantity(self.memory_request.into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity(self.memory_limit.into()),
            )])),
            ..Default::default()
        }
    }
}

pub fn pod_security_context(user: ImageUser) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user.uid),
        run_as_group: Some(user.gid),
        fs_group: Some(user.gid),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn container_security_context(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        read_only_root_filesystem: Some(read_only_root),
        run_as_non_root: Some(true),
        ..Default::default()
    }
}

pub fn service_ports(ports: &[(&str, i32)]) -> Vec<ServicePort> {
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

pub fn container_ports(ports: &[(&str, i32)]) -> Vec<ContainerPort> {
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

pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// `POD_NAME` from the downward API (pod DNS names, node names, `server_name`).
pub fn pod_name_env() -> EnvVar {
    EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// One file of a volume mounted at `path` (for directories the image needs to keep, e.g. `/etc/redpanda`).
pub fn mount_file(name: &str, path: &str, key: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        sub_path: Some(key.into()),
        read_only: Some(true),
        ..Default::default()
    }
}

pub fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

/// How often and how patiently a probe checks.
#[derive(Clone, Copy)]
pub struct Timing {
    pub initial_delay: i32,
    pub period: i32,
    pub timeout: i32,
    pub failures: i32,
}

/// Readiness: soon and often.
pub const READY: Timing = Timing {
    initial_delay: 5,
    period: 10,
    timeout: 5,
    failures: 3,
};
/// Liveness: only a broker that stopped answering for a while is restarted.
pub const LIVE: Timing = Timing {
    initial_delay: 30,
    period: 30,
    timeout: 10,
    failures: 3,
};
/// Startup: long enough for log recovery or a cluster to form (10 minutes), then liveness takes over.
pub const STARTUP: Timing = Timing {
    initial_delay: 5,
    period: 10,
    timeout: 5,
    failures: 60,
};

fn probe(t: Timing) -> Probe {
    Probe {
        initial_delay_seconds: Some(t.initial_delay),
        period_seconds: Some(t.period),
        timeout_seconds: Some(t.timeout),
        failure_threshold: Some(t.failures),
        ..Default::default()
    }
}

pub fn tcp_probe(port: &str, t: Timing) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String(port.into()),
            ..Default::default()
        }),
        ..probe(t)
    }
}

pub fn http_probe(path: &str, port: &str, t: Timing) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            scheme: Some("HTTP".into()),
            ..Default::default()
        }),
        ..probe(t)
    }
}

pub fn exec_probe(command: &[&str], t: Timing) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(command.iter().map(|s| (*s).into()).collect()),
        }),
        ..probe(t)
    }
}

/// `sha256:<hex>` over a Secret's data (keys and values, length-prefixed, in key order).
pub fn secret_digest(secret: &Secret) -> String {
    let mut h = Sha256::new();
    for (k, v) in secret.data.iter().flatten() {
        for part in [k.as_bytes(), &v.0] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// SHA-256 of `parts`, each length-prefixed (so `("ab","c")` and `("a","bc")` differ). Used to derive
/// deterministic salts: the rendered Secret must not change between reconciles.
pub fn derive(domain: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Bytes of a Kubernetes quantity (`512Mi`, `1Gi`, `1.5G`, `1e9`, `1073741824`); `None` if unparsable.
pub fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

/// A double-quoted string in JSON syntax (also valid HOCON and YAML).
pub fn json_quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

/// A value for a single-quoted POSIX shell word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        assert_eq!(quantity_bytes("512Mi"), Some(512 << 20));
        assert_eq!(quantity_bytes("2Gi"), Some(2 << 30));
        assert_eq!(quantity_bytes("1G"), Some(1_000_000_000));
        assert_eq!(quantity_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(quantity_bytes("1e3"), Some(1000));
        assert_eq!(quantity_bytes("4096"), Some(4096));
        assert_eq!(quantity_bytes("lots"), None);
        assert_eq!(quantity_bytes("1Qi"), None);
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
