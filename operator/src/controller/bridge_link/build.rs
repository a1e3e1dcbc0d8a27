//! Stage 3 (pure): every child of a BridgeLink. The same input renders byte-identical objects.

use super::names::*;
use super::validate::ValidatedBridgeLink;
use crate::hash::secret_data_digest;
use crate::pod::{
    AGENT_DEFAULTS, AGENT_USER, agent_probe, container_ports, mount, pod_security_context,
    pvc_retention, restricted_container, secret_volume, service_ports, volume_claim,
};
use edgewire_api::{CONFIG_HASH_ANNOTATION, CREDENTIALS_HASH_ANNOTATION, GROUP};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::{
    Container, PodSpec, PodTemplateSpec, Service, ServiceAccount, ServiceSpec, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;

/// Every child, in apply order.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub config: Secret,
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub service: Service,
    pub statefulset: StatefulSet,
}

impl Children {
    /// YAML documents in apply order (for `render`).
    pub fn to_yaml(&self) -> anyhow::Result<Vec<String>> {
        Ok(vec![
            serde_norway::to_string(&self.config)?,
            serde_norway::to_string(&self.service_account)?,
            serde_norway::to_string(&self.role)?,
            serde_norway::to_string(&self.role_binding)?,
            serde_norway::to_string(&self.service)?,
            serde_norway::to_string(&self.statefulset)?,
        ])
    }
}

pub fn build(v: &ValidatedBridgeLink) -> Children {
    let config = build_config(v);
    Children {
        service_account: build_service_account(v),
        role: build_role(v),
        role_binding: build_role_binding(v),
        service: build_service(v),
        statefulset: build_statefulset(v, &config),
        config,
    }
}

fn meta(v: &ValidatedBridgeLink, name: String) -> ObjectMeta {
    v.owner.meta(name, APP, COMPONENT)
}

/// The file the agent reads: the BridgeLink with both sides as endpoints. It holds Secret references only.
pub fn config_yaml(v: &ValidatedBridgeLink) -> String {
    let doc = serde_json::json!({
        "apiVersion": format!("{GROUP}/v1alpha1"),
        "kind": "BridgeLink",
        "metadata": {"name": v.owner.name, "namespace": v.owner.namespace},
        "spec": v.spec,
    });
    serde_norway::to_string(&doc).expect("a JSON value always serializes to YAML")
}

/// `<bl>-bridge-config`, key `bridge.yaml`.
pub fn build_config(v: &ValidatedBridgeLink) -> Secret {
    Secret {
        metadata: meta(v, config_secret_name(&v.owner.name)),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            CONFIG_KEY.to_string(),
            ByteString(config_yaml(v).into_bytes()),
        )])),
        ..Default::default()
    }
}

pub fn build_service_account(v: &ValidatedBridgeLink) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(v, bridge_name(&v.owner.name)),
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

/// `get` and `patch` on this BridgeLink's status only: what `--report-status` needs.
pub fn build_role(v: &ValidatedBridgeLink) -> Role {
    Role {
        metadata: meta(v, bridge_name(&v.owner.name)),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![GROUP.into()]),
            resources: Some(vec!["bridgelinks/status".into()]),
            resource_names: Some(vec![v.owner.name.clone()]),
            verbs: vec!["get".into(), "patch".into()],
            ..Default::default()
        }]),
    }
}

pub fn build_role_binding(v: &ValidatedBridgeLink) -> RoleBinding {
    let name = bridge_name(&v.owner.name);
    RoleBinding {
        metadata: meta(v, name.clone()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: Some(v.owner.namespace.clone()),
            ..Default::default()
        }]),
    }
}

/// Headless Service `<bl>-bridge`: the StatefulSet's service name and the metrics port for scrapers.
pub fn build_service(v: &ValidatedBridgeLink) -> Service {
    Service {
        metadata: meta(v, bridge_name(&v.owner.name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(v.owner.selector(APP, COMPONENT)),
            ports: Some(service_ports(&[("metrics", METRICS_PORT)])),
            publish_not_ready_addresses: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The single-replica StatefulSet running `edgewire-agent bridge` with the spool PVC.
pub fn build_statefulset(v: &ValidatedBridgeLink, config: &Secret) -> StatefulSet {
    let name = bridge_name(&v.owner.name);
    let mut volumes = vec![secret_volume(
        CONFIG_VOLUME,
        &config_secret_name(&v.owner.name),
        &[],
    )];
    let mut mounts = vec![
        mount(CONFIG_VOLUME, CONFIG_DIR, true),
        // `readOnly: false` stated, as the bridge's pods have always had it: dropping it would change the pod
        // template and restart every bridge on an operator upgrade.
        VolumeMount {
            read_only: Some(false),
            ..mount(SPOOL_VOLUME, SPOOL_DIR, false)
        },
    ];
    for (i, s) in v.secret_names.iter().enumerate() {
        let vol = format!("secret-{i}");
        volumes.push(secret_volume(&vol, s, &[]));
        mounts.push(mount(&vol, &format!("{SECRETS_DIR}/{s}"), true));
    }
    let container = Container {
        name: COMPONENT.into(),
        image: Some(v.settings.agent.clone()),
        image_pull_policy: Some(v.settings.agent_pull_policy()),
        args: Some(
            [
                "bridge",
                "--config",
                &format!("{CONFIG_DIR}/{CONFIG_KEY}"),
                "--secrets-dir",
                SECRETS_DIR,
                "--spool-dir",
                SPOOL_DIR,
                "--http-addr",
                &format!("0.0.0.0:{METRICS_PORT}"),
                "--report-status",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        ),
        ports: Some(container_ports(&[("metrics", METRICS_PORT)])),
        liveness_probe: Some(agent_probe("/healthz", "metrics", 10)),
        readiness_probe: Some(agent_probe("/readyz", "metrics", 5)),
        resources: Some(
            v.spec
                .resources
                .clone()
                .unwrap_or_else(|| AGENT_DEFAULTS.requirements()),
        ),
        security_context: Some(restricted_container()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    StatefulSet {
        metadata: meta(v, name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.clone()),
            selector: LabelSelector {
                match_labels: Some(v.owner.selector(APP, COMPONENT)),
                ..Default::default()
            },
            pod_management_policy: Some("OrderedReady".into()),
            persistent_volume_claim_retention_policy: Some(pvc_retention(v.spec.deletion_policy)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(v.owner.labels(APP, COMPONENT)),
                    annotations: Some(BTreeMap::from([
                        (
                            CREDENTIALS_HASH_ANNOTATION.to_string(),
                            v.credentials_hash.clone(),
                        ),
                        (
                            CONFIG_HASH_ANNOTATION.to_string(),
                            secret_data_digest(config),
                        ),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name),
                    // The agent patches status.runtime with this token.
                    automount_service_account_token: Some(true),
                    containers: vec![container],
                    volumes: Some(volumes),
                    // The spool volume must be writable by the agent's user.
                    security_context: Some(pod_security_context(AGENT_USER)),
                    // Time for the agent to flush the spool and write its last status.
                    termination_grace_period_seconds: Some(30),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![volume_claim(
                SPOOL_VOLUME,
                v.owner.labels(APP, COMPONENT),
                v.spec.spool.storage_class_name.clone(),
                &v.spec.spool.size,
            )]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
