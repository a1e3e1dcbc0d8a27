//! What every controller does at the end of a reconcile: write `status` (server-side apply on the status
//! subresource, never merge-patched, skipped when nothing changed) and record Events on transitions.

use crate::context::Context;
use edgewire_api::FIELD_MANAGER;
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

/// (ready, message) of a broker's (or the bridge's) StatefulSet: every replica ready at its current generation.
pub fn broker_ready(sts: &StatefulSet) -> (bool, String) {
    let want = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = sts.status.as_ref();
    let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let current_gen = status.and_then(|s| s.observed_generation) >= sts.metadata.generation;
    let ok = ready >= want && current_gen;
    (ok, format!("{ready}/{want} broker replicas ready"))
}
