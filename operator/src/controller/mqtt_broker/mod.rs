//! The MqttBroker controller: `refs` (fetch Secrets) → `validate` (pure) → `build` (pure) → `apply` (SSA)
//! → `status`.
//!
//! The builtin broker is Eclipse Mosquitto in a one-replica StatefulSet (Mosquitto does not cluster), with
//! `mosquitto.conf`, the password file and the ACL file rendered into one Secret. A user's password change
//! rewrites that Secret but not the pod template: the `mqtt-sidecar` in the same pod sees the files change and
//! makes Mosquitto reload them (SIGHUP through the shared process namespace), so nobody is disconnected.
//! AWS IoT Core (`type: iotcore`) has no children: see [`iotcore`].

pub mod apply;
pub mod build;
pub mod iotcore;
pub mod names;
pub mod refs;
pub mod status;
pub mod validate;

pub use names::*;
pub use validate::{ResolvedTls, ResolvedUser, ValidatedMqttBroker};

use super::Controlled;
use crate::context::{Context, Settings};
use crate::reconcile::{Error, Notes, Reconciled, finish, not_reconciled, set_finalizer};
use crate::secret::{GeneratedCredentials, SecretString};
use edgewire_api::{MqttBroker, MqttBrokerStatus, MqttBrokerType};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, instrument};

impl Reconciled for MqttBroker {
    type Status = MqttBrokerStatus;
    const KIND_LABEL: &'static str = KIND_LABEL;
    /// A missing Secret appears through the Secret watch; look again now and then regardless.
    const MISSING_RETRY: Duration = Duration::from_secs(60);
    fn operator_status(&self) -> Option<MqttBrokerStatus> {
        self.status.clone()
    }
}

impl Controlled for MqttBroker {
    fn referenced_secrets(&self) -> Vec<String> {
        refs::referenced_secret_names(self)
    }
    fn reconcile(
        mqb: Arc<Self>,
        ctx: Arc<Context>,
    ) -> impl Future<Output = Result<Action, Error>> + Send + 'static {
        reconcile(mqb, ctx)
    }
}

#[instrument(skip(mqb, ctx), fields(name = %mqb.name_any(), namespace = mqb.namespace().unwrap_or_default()))]
pub async fn reconcile(mqb: Arc<MqttBroker>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(KIND_LABEL);
    if mqb.meta().deletion_timestamp.is_some() {
        if iotcore::needs_finalize(&mqb) {
            return iotcore::finalize(&mqb, &ctx).await;
        }
        // Children carry owner references: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    if mqb.spec.broker_type == MqttBrokerType::Iotcore {
        return iotcore::reconcile(&mqb, &ctx).await;
    }
    // A builtin broker cleans up nothing outside the cluster (one switched from iotcore leaves its rule).
    set_finalizer(&ctx.client, &*mqb, false)
        .await
        .map_err(Error::Finalizer)?;
    let refs = refs::fetch(&ctx, &mqb).await.map_err(Error::Refs)?;
    let valid = match validate::validate(&mqb, &refs, &ctx.settings) {
        Ok(v) => v,
        Err(err) => return not_reconciled(&ctx, &*mqb, &err, status::failed(&mqb, &err)).await,
    };
    let desired = build::build(&valid);
    let applied = apply::apply(&ctx.client, &ctx.applied, &valid.owner, desired)
        .await
        .map_err(Error::Apply)?;
    if !applied.swept.is_empty() {
        info!(deleted = ?applied.swept, "removed children no longer wanted");
    }
    let new_status = status::desired(&mqb, &valid, &applied);
    finish(
        &ctx,
        &*mqb,
        new_status,
        Notes {
            ready: format!("Mosquitto is ready at {}", valid.endpoint),
            rotated: "user Secrets changed; Mosquitto reloads them in place",
        },
    )
    .await?;
    Ok(Action::requeue(RESYNC))
}

/// Placeholder shown by `render` for a password the operator generates at the first reconcile.
pub const GENERATED_PLACEHOLDER: &str = "GENERATED-AT-FIRST-RECONCILE";

/// The objects the operator would apply for `mqb`, as YAML documents in apply order (for
/// `edgewire-operator render`). Referenced and previously generated Secrets are looked up in `secrets` by
/// `(namespace, name)`; a password not generated yet is shown as [`GENERATED_PLACEHOLDER`].
pub fn render(
    mqb: &MqttBroker,
    secrets: &BTreeMap<(String, String), Secret>,
    settings: &Settings,
) -> anyhow::Result<Vec<String>> {
    let mut mqb = mqb.clone();
    crate::children::for_render(&mut mqb);
    let name = mqb.name_any();
    let ns = mqb.namespace().unwrap_or_default();
    let lookup = |n: &str| secrets.get(&(ns.clone(), n.to_string()));
    let refs = refs::from_lookup(&mqb, lookup, |secret_name, username| GeneratedCredentials {
        secret_name: secret_name.into(),
        username: username.into(),
        password: SecretString::from(GENERATED_PLACEHOLDER),
    });
    if mqb.spec.broker_type == MqttBrokerType::Iotcore {
        let valid = validate::validate_iotcore(&mqb, &refs)
            .map_err(|e| anyhow::anyhow!("MqttBroker {ns}/{name}: {e}"))?;
        return Ok(vec![iotcore::render_policy(&valid)]);
    }
    let valid = validate::validate(&mqb, &refs, settings)
        .map_err(|e| anyhow::anyhow!("MqttBroker {ns}/{name}: {e}"))?;
    build::build(&valid).to_yaml()
}
