//! What every reconcile shares at its ends: the two ways it can fail — an object the operator will not
//! reconcile as it is ([`Invalid`], with the reason a user sees in the condition, the Event and the metric) and
//! a transient failure ([`Error`], retried with backoff) — the cleanup finalizer, and the end of a reconcile
//! ([`not_reconciled`], [`finish`]): status written once, Events only on transitions.

use crate::context::Context;
use edgewire_api::condition::{self, Progress, reasons, types};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::{self, Debug};
use std::time::Duration;
use tracing::warn;

/// Why a reconcile failed (transient: the error policy requeues with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading referenced Secrets: {0}")]
    Refs(#[source] kube::Error),
    #[error("applying children: {0}")]
    Apply(#[source] kube::Error),
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("updating the finalizer: {0}")]
    Finalizer(#[source] kube::Error),
    #[error("cleaning up before deletion: {0}")]
    Cleanup(#[source] crate::cloud::CloudError),
}

impl Error {
    /// Condition reason, Event reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Refs(_) => "SecretReadFailed",
            Error::Apply(_) => "ApplyFailed",
            Error::Status(_) => "StatusWriteFailed",
            Error::Finalizer(_) => "FinalizerUpdateFailed",
            Error::Cleanup(_) => reasons::CLEANUP_FAILED,
        }
    }
}

/// What is missing for a credential to be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Missing {
    /// A key of the Secret is absent, or its value cannot be used (empty, not UTF-8, malformed).
    Key,
    /// The whole Secret.
    Secret,
    /// The broker a `brokerRef` names (whose credentials the bridge would use).
    Broker,
}

/// One credential the spec references that cannot be used. Never holds a value.
#[derive(Clone, Debug, PartialEq)]
pub struct CredentialProblem {
    /// The MQTT user whose password it is, if any.
    pub user: Option<String>,
    pub missing: Missing,
    /// Names the user, the Secret, the key and the spec field.
    pub message: String,
}

impl CredentialProblem {
    pub fn new(missing: Missing, message: impl Into<String>) -> Self {
        Self {
            user: None,
            missing,
            message: message.into(),
        }
    }
}

/// Why an object is not reconciled as it is: no children are applied, `Ready=False` says why.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Invalid {
    /// The spec is wrong: reason `InvalidSpec`, the message names the field.
    #[error("{field}: {message}")]
    Spec { field: String, message: String },
    /// Referenced credentials that cannot be used: `CredentialsReady=False`.
    #[error("{}", Problems(.0))]
    Credentials(Vec<CredentialProblem>),
    /// The object lacks the metadata a child needs (namespace, uid): not read from the API.
    #[error("the object has no namespace or uid")]
    Metadata,
}

struct Problems<'a>(&'a [CredentialProblem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(&p.message)?;
        }
        Ok(())
    }
}

impl Invalid {
    /// An `InvalidSpec` naming `field`.
    pub fn spec(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid::Spec {
            field: field.into(),
            message: message.into(),
        }
    }

    /// One credential problem.
    pub fn credential(missing: Missing, message: impl Into<String>) -> Self {
        Invalid::Credentials(vec![CredentialProblem::new(missing, message)])
    }

    /// Condition reason, Event reason and metric label: the gravest missing thing for credentials
    /// (`BrokerMissing`, then `SecretMissing`, then `SecretKeyMissing`), else `InvalidSpec`.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Spec { .. } | Invalid::Metadata => reasons::INVALID_SPEC,
            Invalid::Credentials(problems) => match problems.iter().map(|p| p.missing).max() {
                Some(Missing::Broker) => reasons::BROKER_MISSING,
                Some(Missing::Secret) => reasons::SECRET_MISSING,
                Some(Missing::Key) | None => reasons::SECRET_KEY_MISSING,
            },
        }
    }

    /// Whether what is missing may appear without a change of the object (a Secret, a broker): then the object
    /// is looked at again after a while, else only on its next change.
    pub fn may_resolve_itself(&self) -> bool {
        matches!(self, Invalid::Credentials(_))
    }

    /// The conditions of an object that is not reconciled: `CredentialsReady` (for credential problems),
    /// `Ready` and `Stalled=True` (it cannot proceed until the spec or what it references changes; kstatus:
    /// `Failed`), all with [`Invalid::reason`], and `Reconciling=False`. The other conditions stay as they
    /// were: they describe children that still exist.
    pub fn conditions(&self, generation: Option<i64>) -> Vec<Condition> {
        let (reason, msg) = (self.reason(), self.to_string());
        let mut out = Vec::new();
        if matches!(self, Invalid::Credentials(_)) {
            out.push(condition::new(
                types::CREDENTIALS_READY,
                false,
                reason,
                msg.clone(),
                generation,
            ));
        }
        out.extend(condition::summary(
            Progress::Stalled(reason),
            reason,
            msg,
            generation,
        ));
        out
    }
}

/// The fields of a kind's status the end of a reconcile reads.
pub trait StatusFields: Serialize + PartialEq + Clone + Default {
    fn conditions(&self) -> &[Condition];
    fn credentials_revision(&self) -> Option<&str>;
}

impl StatusFields for edgewire_api::EventBrokerStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn credentials_revision(&self) -> Option<&str> {
        self.credentials_revision.as_deref()
    }
}

impl StatusFields for edgewire_api::MqttBrokerStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn credentials_revision(&self) -> Option<&str> {
        self.credentials_revision.as_deref()
    }
}

impl StatusFields for edgewire_api::BridgeLinkStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn credentials_revision(&self) -> Option<&str> {
        self.credentials_revision.as_deref()
    }
}

/// A kind the operator reconciles, as the end of a reconcile sees it.
pub trait Reconciled:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()> + DeserializeOwned + Clone + Debug
{
    type Status: StatusFields;
    /// Owner-kind label value of the children, and the `kind` label of the metrics.
    const KIND_LABEL: &'static str;
    /// How soon an object with missing credentials is looked at again.
    const MISSING_RETRY: Duration;
    /// The status as the operator writes it (without fields another manager owns), to compare with a new one.
    fn operator_status(&self) -> Option<Self::Status>;
}

/// The end of a reconcile that stopped at [`Invalid`]: the metric, `status` (written only when it changed),
/// a Warning Event when the problem is new, and when to look again.
pub async fn not_reconciled<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    err: &Invalid,
    status: K::Status,
) -> Result<Action, Error> {
    let reason = err.reason();
    ctx.metrics.error(K::KIND_LABEL, reason);
    let current = obj.operator_status();
    let ready = current
        .as_ref()
        .and_then(|s| condition::find(s.conditions(), types::READY).cloned());
    let was_ready = ready.as_ref().is_some_and(|c| c.status == "True");
    let same_message = ready.is_some_and(|c| c.message == err.to_string());
    let wrote = crate::status::write(&ctx.client, obj, current.as_ref(), status)
        .await
        .map_err(Error::Status)?;
    if wrote && (was_ready || !same_message) {
        crate::status::publish(ctx, obj, EventType::Warning, reason, err.to_string()).await;
    }
    warn!(error = %err, "not reconciled");
    Ok(if err.may_resolve_itself() {
        Action::requeue(K::MISSING_RETRY)
    } else {
        Action::await_change()
    })
}

/// The Events of a reconciled object's transitions.
pub struct Notes<'a> {
    /// Note of the `Ready` Event (the object became ready).
    pub ready: String,
    /// Note of the `CredentialsRotated` Event (the credentials revision changed).
    pub rotated: &'a str,
}

/// The end of a reconcile that applied the children: `status` (written only when it changed), then the
/// `Ready` and `CredentialsRotated` Events on those transitions.
pub async fn finish<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    status: K::Status,
    notes: Notes<'_>,
) -> Result<(), Error> {
    let old = obj.operator_status().unwrap_or_default();
    let became_ready = condition::is_true(status.conditions(), types::READY)
        && !condition::is_true(old.conditions(), types::READY);
    let rotated = old.credentials_revision().is_some()
        && old.credentials_revision() != status.credentials_revision();
    crate::status::write(&ctx.client, obj, obj.operator_status().as_ref(), status)
        .await
        .map_err(Error::Status)?;
    if became_ready {
        crate::status::publish(ctx, obj, EventType::Normal, reasons::READY, notes.ready).await;
    }
    if rotated {
        crate::status::publish(
            ctx,
            obj,
            EventType::Normal,
            reasons::CREDENTIALS_ROTATED,
            notes.rotated.into(),
        )
        .await;
    }
    Ok(())
}

/// The finalizer on a resource whose deletion must clean up outside the cluster (an IoT topic rule, SNS or
/// Pub/Sub topics). Present only with `deletionPolicy: Delete`.
pub const FINALIZER: &str = "edgewire.dev/cleanup";

/// Whether `obj` carries [`FINALIZER`].
pub fn has_finalizer<K: Resource>(obj: &K) -> bool {
    obj.meta()
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// Adds (`want`) or removes [`FINALIZER`] with a merge patch of `metadata.finalizers` guarded by the
/// resourceVersion (a concurrent change makes it fail and the reconcile retry). Other finalizers are kept.
/// Returns whether it patched.
pub async fn set_finalizer<K>(
    client: &kube::Client,
    obj: &K,
    want: bool,
) -> Result<bool, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    if has_finalizer(obj) == want {
        return Ok(false);
    }
    let mut next: Vec<String> = obj
        .meta()
        .finalizers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect();
    if want {
        next.push(FINALIZER.into());
    }
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"finalizers": next, "resourceVersion": obj.resource_version()},
    });
    api.patch(
        &obj.name_any(),
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    Ok(true)
}

/// The end of a deletion whose cleanup can never run: the credentials it needs are gone (their Secret or key
/// no longer exists, as when a namespace is deleted and its Secrets go first; in a namespace being deleted
/// nothing can bring them back). Waiting would keep the object, and its namespace, forever; so the operator
/// records what it leaves behind — `left`, e.g. the topic ARNs or the rule, and `why` — in a Warning Event
/// `CleanupAbandoned` (and a log line and the error metric with that reason), and removes the finalizer.
/// Cloud errors with the credentials present are not this: they are retried.
pub async fn abandon_cleanup<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    left: &str,
    why: &str,
) -> Result<Action, Error> {
    warn!(left, why, "cleanup abandoned: its credentials are gone");
    ctx.metrics.error(K::KIND_LABEL, reasons::CLEANUP_ABANDONED);
    crate::status::publish(
        ctx,
        obj,
        EventType::Warning,
        reasons::CLEANUP_ABANDONED,
        format!("left behind: {left}; the cleanup cannot run: {why}"),
    )
    .await;
    set_finalizer(&ctx.client, obj, false)
        .await
        .map_err(Error::Finalizer)?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_reason_per_problem_for_condition_event_and_metric() {
        assert_eq!(Invalid::spec("spec.x", "bad").reason(), "InvalidSpec");
        assert_eq!(Invalid::Metadata.reason(), "InvalidSpec");
        let key = CredentialProblem::new(Missing::Key, "Secret s has no key k");
        let secret = CredentialProblem::new(Missing::Secret, "Secret t not found");
        assert_eq!(
            Invalid::Credentials(vec![key.clone()]).reason(),
            "SecretKeyMissing"
        );
        let both = Invalid::Credentials(vec![key, secret]);
        assert_eq!(both.reason(), "SecretMissing");
        assert_eq!(
            both.to_string(),
            "Secret s has no key k; Secret t not found"
        );
        assert_eq!(
            Invalid::credential(Missing::Broker, "no broker").reason(),
            "BrokerMissing"
        );
        let conds = both.conditions(Some(3));
        assert_eq!(
            conds
                .iter()
                .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
                .collect::<Vec<_>>(),
            [
                ("CredentialsReady", "False", "SecretMissing"),
                ("Ready", "False", "SecretMissing"),
                ("Reconciling", "False", "NotReconciling"),
                ("Stalled", "True", "SecretMissing"),
            ]
        );
        assert!(conds.iter().all(|c| c.observed_generation == Some(3)));
    }
}
