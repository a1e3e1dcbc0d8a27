//! What every controller does at the end of a reconcile: write `status` (server-side apply on the status
//! subresource, never merge-patched, skipped when nothing changed) and record Events on transitions; and what
//! the conditions of every kind are made of: the readiness of a workload, the progress after failed cloud
//! calls (`Ready`, `Reconciling` and `Stalled` themselves come from [`edgewire_api::condition::summary`]).

use crate::cloud::CloudError;
use crate::context::Context;
use crate::rollout::Rollout;
use edgewire_api::FIELD_MANAGER;
use edgewire_api::condition::{Progress, reasons};
use k8s_openapi::NamespaceResourceScope;
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

/// The longest Event note the API server accepts (bytes).
pub const NOTE_LIMIT: usize = 1024;

/// Records a Kubernetes Event about `obj` in its namespace; failing to record one never fails the reconcile.
///
/// A namespace being deleted refuses new objects, Events included; the Event then goes to the operator's own
/// namespace ([`Context::home_namespace`]), still regarding `obj`, so that what happened while a namespace
/// was deleted (a cleanup that could not run) outlives it: `kubectl events -n <operator namespace>`.
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
        note: Some(truncate(note, NOTE_LIMIT)),
        action: "Reconcile".into(),
        secondary: None,
    };
    let regarding = obj.object_ref(&());
    let Err(e) = ctx.recorder.publish(&ev, &regarding).await else {
        return;
    };
    let home = ctx.home_namespace.as_deref();
    match home.filter(|h| namespace_terminating(&e) && regarding.namespace.as_deref() != Some(h)) {
        Some(home) => match ctx.recorder.create_in(home, &ev, &regarding).await {
            Ok(()) => {}
            Err(e) => warn!(error = %e, namespace = home, "could not record event"),
        },
        None => warn!(error = %e, "could not record event"),
    }
}

/// Whether the API server refused a create because the namespace is being deleted.
fn namespace_terminating(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_forbidden()
        && s.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating")))
}

/// `s` cut to at most `limit` bytes on a character boundary.
fn truncate(mut s: String, limit: usize) -> String {
    if s.len() > limit {
        let mut end = limit;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// (ready, message) of a broker's (or the bridge's) StatefulSet: its controller saw the current generation and
/// every replica is updated to it and ready (while a rollout replaces pods, `Reconciling` stays True).
pub fn broker_ready(sts: &Rollout) -> (bool, String) {
    let (want, ready, updated) = (sts.replicas, sts.ready, sts.updated);
    let current_gen = sts.observed();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Workload;
    use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetStatus};

    fn rollout(generation: i64, observed: i64, ready: i32, updated: i32) -> Rollout {
        StatefulSet {
            metadata: kube::api::ObjectMeta {
                generation: Some(generation),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(2),
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(observed),
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                replicas: 2,
                ..Default::default()
            }),
        }
        .rollout()
    }

    /// Ready only when the StatefulSet controller saw the current generation and every replica is ready
    /// and updated: the old pods of a rollout being ready is not enough.
    #[test]
    fn broker_ready_waits_for_the_rollout() {
        assert_eq!(
            broker_ready(&rollout(3, 3, 2, 2)),
            (true, "2/2 broker replicas ready".into())
        );
        assert!(
            !broker_ready(&rollout(3, 2, 2, 2)).0,
            "generation not observed"
        );
        assert_eq!(
            broker_ready(&rollout(3, 3, 2, 1)),
            (false, "2/2 broker replicas ready, 1/2 updated".into())
        );
        assert!(!broker_ready(&rollout(3, 3, 1, 2)).0);
    }

    #[test]
    fn a_denied_cloud_call_stalls_other_failures_are_retried() {
        let err = |code: &str| CloudError {
            action: "sns:CreateTopic",
            code: Some(code.into()),
            message: String::new(),
        };
        assert_eq!(
            cloud_failure(&[err("Throttling"), err("AuthorizationError")]),
            Progress::Stalled(reasons::PERMISSION_DENIED)
        );
        assert_eq!(
            cloud_failure(&[err("Throttling")]),
            Progress::Reconciling(reasons::PROVISIONING_FAILED)
        );
    }
}
