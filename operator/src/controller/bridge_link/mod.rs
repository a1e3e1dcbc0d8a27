//! The BridgeLink controller: `refs` (resolve `brokerRef`s, fetch Secrets) → `validate` (pure) → `build`
//! (pure) → apply (SSA) → `status`.
//!
//! A BridgeLink becomes a single-replica StatefulSet `<bl>-bridge` running `edgewire-agent bridge` with the
//! spool on the PVC of its volumeClaimTemplate `spool`, the agent's config (the BridgeLink with both sides
//! resolved to endpoints; Secret references only, never values) in the Secret `<bl>-bridge-config`, each
//! referenced Secret mounted at `/etc/edgewire/secrets/<name>/`, and a ServiceAccount, Role and RoleBinding
//! that let the agent patch `status.runtime` of this BridgeLink and nothing else. `deletionPolicy: Delete`
//! deletes the spool PVC with the StatefulSet (`persistentVolumeClaimRetentionPolicy.whenDeleted`); no
//! finalizer is needed.

pub mod build;
pub mod refs;
pub mod status;
pub mod validate;

use super::Error;
use crate::apply::ssa;
use crate::children::Owner;
use crate::context::Context;
use crate::context::Settings;
use edgewire_api::condition::{self as cond, reasons, types};
use edgewire_api::{BridgeLink, BridgeLinkSpec, EventBroker, MqttBroker};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{instrument, warn};
use validate::ValidateError;

/// Owner-kind label value of BridgeLink children.
pub const KIND_LABEL: &str = "bridgelink";
/// `app.kubernetes.io/name` of the bridge's objects.
pub const APP: &str = "edgewire-bridge";
/// `app.kubernetes.io/component`, and the container's name.
pub const COMPONENT: &str = "bridge";
/// Port of `/metrics`, `/healthz`, `/readyz` (named `metrics`).
pub const METRICS_PORT: i32 = 9464;
/// Key of the config file in `<bl>-bridge-config`.
pub const CONFIG_KEY: &str = "bridge.yaml";
/// Where the config Secret is mounted.
pub const CONFIG_DIR: &str = "/etc/edgewire/bridge";
/// Where each referenced Secret is mounted, as `<dir>/<secret name>/`.
pub const SECRETS_DIR: &str = "/etc/edgewire/secrets";
/// Where the spool PVC is mounted.
pub const SPOOL_DIR: &str = "/var/lib/edgewire/spool";
/// The volumeClaimTemplate of the spool.
pub const SPOOL_VOLUME: &str = "spool";
const CONFIG_VOLUME: &str = "config";
/// How often a BridgeLink is looked at again without a change: `status.runtime` turns stale without any
/// event, so this is short.
pub const RESYNC: Duration = Duration::from_secs(30);

/// StatefulSet, headless Service, ServiceAccount, Role and RoleBinding: `<bl>-bridge`.
pub fn bridge_name(bl: &str) -> String {
    format!("{bl}-bridge")
}

/// The agent's config Secret: `<bl>-bridge-config`.
pub fn config_secret_name(bl: &str) -> String {
    format!("{bl}-bridge-config")
}

/// A BridgeLink whose spec passed validation, both sides resolved to endpoints.
#[derive(Clone, Debug)]
pub struct ValidatedBridgeLink {
    pub owner: Owner,
    /// The spec with `edge` and `cloud` as endpoints (what the agent reads).
    pub spec: BridgeLinkSpec,
    /// Every Secret the endpoints reference, sorted: each is mounted into the pod.
    pub secret_names: Vec<String>,
    pub settings: Settings,
    /// Hash of the referenced Secrets' data: pod-template annotation and `status.credentialsRevision`.
    pub credentials_hash: String,
}

/// The reverse index key: Secrets an explicit endpoint references.
pub use refs::referenced_secret_names;

/// A key over what the controller reacts to: the spec (generation) and the parts of `status.runtime` that
/// change conditions or Events. Its own status writes change none of them, so they do not loop.
pub fn watch_key(bl: &BridgeLink) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bl.metadata.generation.hash(&mut h);
    let rt = bl.status.as_ref().and_then(|s| s.runtime.as_ref());
    rt.map(|r| {
        (
            r.spool_messages > 0,
            r.edge_connected,
            r.cloud_connected,
            r.dropped,
        )
    })
    .hash(&mut h);
    Some(h.finish())
}

#[instrument(skip(bl, ctx), fields(name = %bl.name_any(), namespace = bl.namespace().unwrap_or_default()))]
pub async fn reconcile(bl: Arc<BridgeLink>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(KIND_LABEL);
    if bl.meta().deletion_timestamp.is_some() {
        // Children carry owner references: the garbage collector removes them (and the StatefulSet's
        // retention policy the spool PVC, with deletionPolicy Delete).
        return Ok(Action::await_change());
    }
    if let Err(e) = validate::check_spec(&bl.spec) {
        return not_reconciled(&ctx, &bl, ValidateError::Invalid(e), reasons::INVALID_SPEC).await;
    }
    let brokers = refs::fetch_brokers(&ctx.client, &bl)
        .await
        .map_err(Error::Refs)?;
    let resolved = match refs::resolve(&bl, &brokers) {
        Ok(r) => r,
        Err(refs::ResolveError::Invalid(e)) => {
            return not_reconciled(&ctx, &bl, ValidateError::Invalid(e), reasons::INVALID_SPEC)
                .await;
        }
        Err(e @ refs::ResolveError::Missing { .. }) => {
            let err = ValidateError::Credentials(vec![e.to_string()]);
            return not_reconciled(&ctx, &bl, err, BROKER_MISSING).await;
        }
    };
    let ns = bl.namespace().unwrap_or_default();
    let secrets = refs::fetch_secrets(&ctx.client, &ns, &resolved.secret_uses)
        .await
        .map_err(Error::Refs)?;
    let valid = match validate::validate(&bl, resolved, &secrets, &ctx.settings, false) {
        Ok(v) => v,
        Err(err) => {
            let reason = match &err {
                ValidateError::Credentials(_) => reasons::SECRET_MISSING,
                _ => reasons::INVALID_SPEC,
            };
            return not_reconciled(&ctx, &bl, err, reason).await;
        }
    };
    let children = build::build(&valid);
    let client = &ctx.client;
    ssa(client, &children.config).await.map_err(Error::Apply)?;
    ssa(client, &children.service_account)
        .await
        .map_err(Error::Apply)?;
    ssa(client, &children.role).await.map_err(Error::Apply)?;
    ssa(client, &children.role_binding)
        .await
        .map_err(Error::Apply)?;
    ssa(client, &children.service).await.map_err(Error::Apply)?;
    let sts = ssa(client, &children.statefulset)
        .await
        .map_err(Error::Apply)?;

    let new_status = status::desired(&bl, &valid, &sts, Timestamp::now());
    let old = bl.status.clone().unwrap_or_default();
    let became_ready = cond::is_true(&new_status.conditions, types::READY)
        && !cond::is_true(&old.conditions, types::READY);
    let rotated = old.credentials_revision.is_some()
        && old.credentials_revision != new_status.credentials_revision;
    let dropped = status::newly_dropped(&bl);
    crate::status::write(
        client,
        &*bl,
        status::operator_part(&bl).as_ref(),
        new_status,
    )
    .await
    .map_err(Error::Status)?;
    if dropped > 0 {
        let total = status::dropped_now(&bl).unwrap_or(0);
        crate::status::publish(
            &ctx,
            &*bl,
            EventType::Warning,
            "SpoolOverflow",
            format!(
                "the full spool dropped {dropped} more of its oldest message(s) (overflow: DropOldest); {total} dropped since the bridge started"
            ),
        )
        .await;
    }
    if became_ready {
        crate::status::publish(
            &ctx,
            &*bl,
            EventType::Normal,
            "Ready",
            "the bridge is connected to both brokers".into(),
        )
        .await;
    }
    if rotated {
        crate::status::publish(
            &ctx,
            &*bl,
            EventType::Normal,
            "CredentialsRotated",
            "referenced Secrets changed; the bridge pod restarts with them".into(),
        )
        .await;
    }
    Ok(Action::requeue(RESYNC))
}

/// Reason when a `brokerRef` names a broker that does not exist.
pub const BROKER_MISSING: &str = "BrokerMissing";

/// A BridgeLink that is not reconciled: status (and a Warning Event when the problem is new), no children.
async fn not_reconciled(
    ctx: &Context,
    bl: &BridgeLink,
    err: ValidateError,
    reason: &'static str,
) -> Result<Action, Error> {
    ctx.metrics.error(KIND_LABEL, reason);
    let same_message = bl
        .status
        .as_ref()
        .and_then(|s| cond::find(&s.conditions, types::READY))
        .is_some_and(|c| c.message == err.to_string());
    let wrote = crate::status::write(
        &ctx.client,
        bl,
        status::operator_part(bl).as_ref(),
        status::failed(bl, &err, reason),
    )
    .await
    .map_err(Error::Status)?;
    if wrote && !same_message {
        crate::status::publish(ctx, bl, EventType::Warning, reason, err.to_string()).await;
    }
    warn!(error = %err, "not reconciled");
    Ok(match err {
        // A missing Secret or broker appears without a change to the BridgeLink: look again.
        ValidateError::Credentials(_) => Action::requeue(Duration::from_secs(30)),
        _ => Action::await_change(),
    })
}

/// The objects the operator would apply for `bl`, as YAML documents in apply order (for
/// `edgewire-operator render`). Brokers and Secrets are looked up by `(namespace, name)`; a broker's
/// generated credentials Secret may be absent (it exists only once the broker's controller ran).
pub fn render(
    bl: &BridgeLink,
    event_brokers: &BTreeMap<(String, String), EventBroker>,
    mqtt_brokers: &BTreeMap<(String, String), MqttBroker>,
    secrets: &BTreeMap<(String, String), Secret>,
    settings: &Settings,
) -> anyhow::Result<Vec<String>> {
    let mut bl = bl.clone();
    let name = bl.name_any();
    bl.metadata
        .uid
        .get_or_insert_with(|| format!("00000000-0000-0000-0000-{:0>12}", name.len()));
    bl.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    bl.metadata.generation.get_or_insert(1);
    let ns = bl.namespace().unwrap_or_default();
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("BridgeLink {ns}/{name}: {e}");
    validate::check_spec(&bl.spec).map_err(|e| fail(&e))?;
    let in_ns = |(k_ns, k_name): &(String, String)| (*k_ns == ns).then(|| k_name.clone());
    let brokers = refs::Brokers {
        event_brokers: event_brokers
            .iter()
            .filter_map(|(k, v)| Some((in_ns(k)?, v.clone())))
            .collect(),
        mqtt_brokers: mqtt_brokers
            .iter()
            .filter_map(|(k, v)| Some((in_ns(k)?, v.clone())))
            .collect(),
    };
    let resolved = refs::resolve(&bl, &brokers).map_err(|e| match e {
        refs::ResolveError::Missing { .. } => fail(&format!(
            "{e} (render reads referenced brokers from the same file: put it there too)"
        )),
        e => fail(&e),
    })?;
    let secrets: BTreeMap<String, Secret> = secrets
        .iter()
        .filter_map(|(k, v)| Some((in_ns(k)?, v.clone())))
        .collect();
    let valid =
        validate::validate(&bl, resolved, &secrets, settings, true).map_err(|e| fail(&e))?;
    build::build(&valid).to_yaml()
}
