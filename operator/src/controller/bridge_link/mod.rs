//! The BridgeLink controller: `refs` (fetch referenced brokers and Secrets) → `validate` (pure: resolve
//! `brokerRef`s with [`resolve`], check) → `build` (pure) → `apply` (SSA, sweep) → `status`.
//!
//! A BridgeLink becomes a single-replica StatefulSet `<bl>-bridge` running `edgewire-agent bridge` with the
//! spool on the PVC of its volumeClaimTemplate `spool`, the agent's config (the BridgeLink with both sides
//! resolved to endpoints; Secret references only, never values) in the Secret `<bl>-bridge-config`, each
//! referenced Secret mounted at `/etc/edgewire/secrets/<name>/`, and a ServiceAccount, Role and RoleBinding
//! that let the agent patch `status.runtime` of this BridgeLink and nothing else. `deletionPolicy: Delete`
//! deletes the spool PVC with the StatefulSet (`persistentVolumeClaimRetentionPolicy.whenDeleted`); no
//! finalizer is needed.

pub mod apply;
pub mod build;
pub mod names;
pub mod refs;
pub mod resolve;
pub mod status;
pub mod validate;

pub use names::*;
pub use validate::ValidatedBridgeLink;

use super::{Controlled, Owned};
use crate::context::{Context, Settings};
use crate::reconcile::{Error, Invalid, Missing, Notes, Reconciled, finish, not_reconciled};
use edgewire_api::condition::reasons;
use edgewire_api::{BridgeLink, BridgeLinkStatus, EventBroker, MqttBroker};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, instrument};

/// The reverse index key: Secrets an explicit endpoint references.
pub use resolve::referenced_secret_names;

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

impl Reconciled for BridgeLink {
    type Status = BridgeLinkStatus;
    const KIND_LABEL: &'static str = KIND_LABEL;
    /// A missing Secret or broker appears without a change to the BridgeLink (a broker's Secrets are not in
    /// the reverse index): look again soon.
    const MISSING_RETRY: Duration = Duration::from_secs(30);
    fn operator_status(&self) -> Option<BridgeLinkStatus> {
        status::operator_part(self)
    }
}

/// Unlike the other kinds, the root passes more than spec changes: the bridge agent's `status.runtime`
/// reports drive `EdgeConnected`, `CloudConnected`, `Spooling` and the `SpoolOverflow` Event (see
/// [`watch_key`]); the operator's own condition writes do not change the key and do not loop.
impl Controlled for BridgeLink {
    fn watch_key(&self) -> Option<u64> {
        watch_key(self)
    }
    fn referenced_secrets(&self) -> Vec<String> {
        referenced_secret_names(self)
    }
    /// Also the agent's ServiceAccount, Role and RoleBinding.
    fn owns(c: Controller<Self>, owned: &Owned<'_>) -> Controller<Self> {
        let c = owned.metadata::<Self, ServiceAccount>(owned.workloads(c));
        let c = owned.metadata::<Self, Role>(c);
        owned.metadata::<Self, RoleBinding>(c)
    }
    fn reconcile(
        bl: Arc<Self>,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Result<Action, Error>> + Send + 'static {
        reconcile(bl, ctx)
    }
}

#[instrument(skip(bl, ctx), fields(name = %bl.name_any(), namespace = bl.namespace().unwrap_or_default()))]
pub async fn reconcile(bl: Arc<BridgeLink>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(KIND_LABEL);
    if bl.meta().deletion_timestamp.is_some() {
        // Children carry owner references: the garbage collector removes them (and the StatefulSet's
        // retention policy the spool PVC, with deletionPolicy Delete).
        return Ok(Action::await_change());
    }
    let refs = refs::fetch(&ctx, &bl).await.map_err(Error::Refs)?;
    let valid = match validate::validate(&bl, &refs, &ctx.settings, false) {
        Ok(v) => v,
        Err(err) => return not_reconciled(&ctx, &*bl, &err, status::failed(&bl, &err)).await,
    };
    let desired = build::build(&valid);
    let applied = apply::apply(&ctx.client, &ctx.applied, &valid.owner, desired)
        .await
        .map_err(Error::Apply)?;
    if !applied.swept.is_empty() {
        info!(deleted = ?applied.swept, "removed children no longer wanted");
    }
    let new_status = status::desired(&bl, &valid, &applied.statefulset, Timestamp::now());
    let dropped = status::newly_dropped(&bl);
    finish(
        &ctx,
        &*bl,
        new_status,
        Notes {
            ready: "the bridge is connected to both brokers".into(),
            rotated: "referenced Secrets changed; the bridge pod restarts with them",
        },
    )
    .await?;
    if dropped > 0 {
        let total = status::dropped_now(&bl).unwrap_or(0);
        crate::status::publish(
            &ctx,
            &*bl,
            EventType::Warning,
            reasons::SPOOL_OVERFLOW,
            format!(
                "the full spool dropped {dropped} more of its oldest message(s) (overflow: DropOldest); {total} dropped since the bridge started"
            ),
        )
        .await;
    }
    Ok(Action::requeue(RESYNC))
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
    crate::children::for_render(&mut bl);
    let name = bl.name_any();
    let ns = bl.namespace().unwrap_or_default();
    let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("BridgeLink {ns}/{name}: {e}");
    let in_ns = |(k_ns, k_name): &(String, String)| (*k_ns == ns).then(|| k_name.clone());
    let refs = refs::Refs {
        brokers: resolve::Brokers {
            event_brokers: event_brokers
                .iter()
                .filter_map(|(k, v)| Some((in_ns(k)?, v.clone())))
                .collect(),
            mqtt_brokers: mqtt_brokers
                .iter()
                .filter_map(|(k, v)| Some((in_ns(k)?, v.clone())))
                .collect(),
        },
        secrets: secrets
            .iter()
            .filter_map(|(k, v)| Some((in_ns(k)?, v.clone())))
            .collect(),
    };
    let valid = validate::validate(&bl, &refs, settings, true).map_err(|e| match &e {
        Invalid::Credentials(p) if p.iter().any(|p| p.missing == Missing::Broker) => fail(
            &format!("{e} (render reads referenced brokers from the same file: put it there too)"),
        ),
        e => fail(e),
    })?;
    build::build(&valid).to_yaml()
}
