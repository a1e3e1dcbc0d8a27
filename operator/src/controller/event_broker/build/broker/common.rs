//! What every broker's objects share: names, metadata, the config Secret, the two Services, the
//! StatefulSet skeleton (PVC template, security context, probes, resources), and small renderers.

use super::super::super::validate::{BrokerAuth, BrokerPlan, ValidatedEventBroker};
use super::super::pod_annotations;
use crate::hash::secret_data_digest;
use crate::secret::ExposeSecret;
use base64::Engine;
use edgewire_api::BrokerKind;
use edgewire_api::CONFIG_HASH_ANNOTATION;
use edgewire_api::quantity::quantity_bytes;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, PodAffinityTerm, PodAntiAffinity, PodSpec, PodTemplateSpec,
    ResourceRequirements, Secret, Service, ServiceSpec, Volume, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

pub use crate::hash::derive;
pub use crate::pod::*;

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
                Some((username.as_str(), password.expose_secret()))
            }
            BrokerAuth::Token(token) => Some((default_user, token.expose_secret())),
            BrokerAuth::Nkey { .. } => None,
        }
    }

    /// An env var read from a key of the config Secret.
    pub fn secret_env(&self, name: &str, key: &str) -> EnvVar {
        secret_env(name, &self.config, key, None)
    }

    /// The config Secret as a volume; `items` projects only some keys (`(key, path)`), all when empty.
    pub fn config_volume(&self, name: &str, items: &[(&str, &str)]) -> Volume {
        secret_volume(name, &self.config, items)
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
        annotations.insert(CONFIG_HASH_ANNOTATION.into(), secret_data_digest(config));
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
                persistent_volume_claim_retention_policy: Some(pvc_retention(
                    self.v.spec.deletion_policy,
                )),
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
                volume_claim_templates: Some(vec![volume_claim(
                    DATA_VOLUME,
                    self.v.owner.labels(&self.app, "broker"),
                    self.plan.storage.storage_class_name.clone(),
                    &self.plan.storage.size,
                )]),
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
                h.update(password.expose_secret().as_bytes());
            }
            BrokerAuth::Token(t) => h.update(t.expose_secret().as_bytes()),
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

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
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
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
