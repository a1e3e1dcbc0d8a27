//! Pieces of pods and Services every workload the operator builds is made of: ports, env vars, volumes and
//! mounts, probes, the restricted security contexts, resource defaults and the PVC template.

use edgewire_api::DeletionPolicy;
use k8s_openapi::api::apps::v1::StatefulSetPersistentVolumeClaimRetentionPolicy;
use k8s_openapi::api::core::v1::{
    Capabilities, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, ServicePort, TCPSocketAction, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// Named TCP ports of a Service, each targeting the container port of the same name.
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

/// Named TCP ports of a container.
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

/// A plain env var.
pub fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// An env var read from key `key` of Secret `secret`; `optional` as the pod spec states it.
pub fn secret_env(name: &str, secret: &str, key: &str, optional: Option<bool>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        }),
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

/// A volume mount; `readOnly` is stated only when true.
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

/// Secret `secret` as volume `name`; `items` projects only some keys (`(key, path)`), all when empty.
pub fn secret_volume(name: &str, secret: &str, items: &[(&str, &str)]) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
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

/// How often and how patiently a probe checks.
#[derive(Clone, Copy)]
pub struct Timing {
    pub initial_delay: Option<i32>,
    pub period: i32,
    pub timeout: i32,
    pub failures: i32,
}

/// Readiness: soon and often.
pub const READY: Timing = Timing {
    initial_delay: Some(5),
    period: 10,
    timeout: 5,
    failures: 3,
};
/// Liveness: only a broker that stopped answering for a while is restarted.
pub const LIVE: Timing = Timing {
    initial_delay: Some(30),
    period: 30,
    timeout: 10,
    failures: 3,
};
/// Startup: long enough for log recovery or a cluster to form (10 minutes), then liveness takes over.
pub const STARTUP: Timing = Timing {
    initial_delay: Some(5),
    period: 10,
    timeout: 5,
    failures: 60,
};

/// A probe with `t`'s timing and no handler yet.
pub fn probe(t: Timing) -> Probe {
    Probe {
        initial_delay_seconds: t.initial_delay,
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

/// A probe of an agent's HTTP endpoint (`/healthz`, `/readyz`) every `period` seconds.
pub fn agent_probe(path: &str, port: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..Default::default()
        }),
        ..probe(Timing {
            initial_delay: None,
            period,
            timeout: 2,
            failures: 3,
        })
    }
}

/// The user an image runs as (so `runAsNonRoot` can be verified and a PVC is group-writable).
#[derive(Clone, Copy)]
pub struct ImageUser {
    pub uid: i64,
    pub gid: i64,
}

/// The user of the distroless `edgewire-agent` image (nonroot).
pub const AGENT_USER: ImageUser = ImageUser {
    uid: 65532,
    gid: 65532,
};

fn runtime_default() -> Option<SeccompProfile> {
    Some(SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..Default::default()
    })
}

/// The restricted Pod Security Standard, pod part, for a pod whose volumes `user` must be able to write.
pub fn pod_security_context(user: ImageUser) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user.uid),
        run_as_group: Some(user.gid),
        fs_group: Some(user.gid),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: runtime_default(),
        ..Default::default()
    }
}

/// The restricted Pod Security Standard, pod part, for a pod that writes no volume.
pub fn restricted_pod(user: ImageUser) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(user.uid),
        run_as_group: Some(user.gid),
        seccomp_profile: runtime_default(),
        ..Default::default()
    }
}

/// The restricted Pod Security Standard, container part (the pod states the seccomp profile).
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

/// The restricted Pod Security Standard, container part, with the seccomp profile stated on the container too
/// (the agent's containers).
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        seccomp_profile: runtime_default(),
        ..container_security_context(true)
    }
}

/// Default resources of a container: requests, and a memory limit (no CPU limit: throttling hurts latency
/// more than it protects neighbours).
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

/// Defaults of an agent container (publisher, bridge): fits a small node, a memory limit against leaks.
pub const AGENT_DEFAULTS: Defaults = Defaults {
    cpu_request: "50m",
    memory_request: "64Mi",
    memory_limit: "256Mi",
};

/// The PVC template `name` of a StatefulSet: one ReadWriteOnce volume of `size`.
pub fn volume_claim(
    name: &str,
    labels: BTreeMap<String, String>,
    storage_class_name: Option<String>,
    size: &str,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What happens to a StatefulSet's PVCs: deleted with it under `Delete`, kept under `Retain`; kept when
/// scaled down either way.
pub fn pvc_retention(policy: DeletionPolicy) -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    let when_deleted = match policy {
        DeletionPolicy::Retain => "Retain",
        DeletionPolicy::Delete => "Delete",
    };
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some(when_deleted.into()),
        when_scaled: Some("Retain".into()),
    }
}
