//! What every controller does at the end of a reconcile: write `status` (server-side apply on the status
//! subresource, never merge-patched, skipped when nothing changed) and record Events on transitions; and what
//! the conditions of every kind are made of: the readiness of a StatefulSet, the progress after failed cloud
//! calls (`Ready`, `Reconciling` and `Stalled` themselves come from [`edgewire_api::condition::summary`]).

use crate::cloud::CloudError;
use crate::context::Context;
use edgewire_api::FIELD_MANAGER;
use edgewire_api::condition::{Progress, reasons};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use tracing::warn;

/// Writes `status` of `obj` unless it equals `current`. Returns whether it wrote.
pub async fn write<K, S>(
    client: &Client,
    obj: &K,
    current: Option<&S>,
    status: S,
) -> Result<bool, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
    S: Serialize + PartialEq,
{
    if current == Some(&status) {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(true)
}

/// Records a Kubernetes Event about `obj`; failing to record one never fails the reconcile.
pub async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        warn!(error = %e, "could not record event");
    }
}

/// (ready, message) of a broker's (or the bridge's) StatefulSet: its controller saw the current generation and
/// every replica is updated to it and ready (while a rollout replaces pods, `Reconciling` stays True).
pub fn broker_ready(sts: &StatefulSet) -> (bool, String) {
    let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = sts.status.as_ref();
    let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let updated = status.and_then(|s| s.updated_replicas).unwrap_or(0);
    let current_gen = status.and_then(|s| s.observed_generation) >= sts.metadata.generation;
    let ok = ready >= want && updated >= want && current_gen;
    let msg = if ok || !current_gen || updated >= want {
        format!("{ready}/{want} broker replicas ready")
    } else {
        format!("{ready}/{want} broker replicas ready, {updated}/{want} updated")
    };
    (ok, msg)
}

/// The progress of an object whose cloud calls failed: `Stalled` (`PermissionDenied`) when the cloud refused
/// one for lack of permission — only new credentials or a changed IAM policy help, though the call is still
/// retried — else `Reconciling` (`ProvisioningFailed`: retried, it may well succeed).
pub fn cloud_failure<'a>(errors: impl IntoIterator<Item = &'a CloudError>) -> Progress {
    if errors.into_iter().any(CloudError::denied) {
        Progress::Stalled(reasons::PERMISSION_DENIED)
    } else {
        Progress::Reconciling(reasons::PROVISIONING_FAILED)
    }
}
