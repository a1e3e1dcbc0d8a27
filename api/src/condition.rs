//! Condition types, reasons and small constructors, in the `metav1.Condition` shape that kstatus (Flux),
//! Argo CD health checks and `kubectl wait --for=condition=Ready` read.
//!
//! Besides `Ready`, every kind carries the two "abnormal-true" conditions of kstatus
//! (sigs.k8s.io/cli-utils `pkg/kstatus`): `Reconciling` (True while the operator works towards the spec) and
//! `Stalled` (True when it cannot proceed without a change). [`summary`] makes all three from one
//! [`Progress`], so they never contradict each other. Both are always present, `False` when they do not apply:
//! kstatus reads an absent one as `False` anyway, but only a present one can be waited for
//! (`kubectl wait --for=condition=Stalled=False`) and carries a `lastTransitionTime` (when the rollout ended),
//! as the API conventions ask of conditions a controller knows about.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types.
pub mod types {
    pub const READY: &str = "Ready";
    pub const BROKER_READY: &str = "BrokerReady";
    pub const PUBLISHER_READY: &str = "PublisherReady";
    pub const TOPICS_READY: &str = "TopicsReady";
    pub const CREDENTIALS_READY: &str = "CredentialsReady";
    pub const ENDPOINT_READY: &str = "EndpointReady";
    pub const USERS_READY: &str = "UsersReady";
    pub const TOPIC_RULE_READY: &str = "TopicRuleReady";
    pub const EDGE_CONNECTED: &str = "EdgeConnected";
    pub const CLOUD_CONNECTED: &str = "CloudConnected";
    pub const SPOOLING: &str = "Spooling";
    /// kstatus: True while the operator works towards the spec.
    pub const RECONCILING: &str = "Reconciling";
    /// kstatus: True when the operator cannot proceed without a change of the spec or what it references.
    pub const STALLED: &str = "Stalled";
}

/// Condition reasons (CamelCase, as Kubernetes requires).
pub mod reasons {
    pub const READY: &str = "Ready";
    pub const NOT_READY: &str = "NotReady";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const RECONCILE_ERROR: &str = "ReconcileError";
    pub const PROGRESSING: &str = "Progressing";
    pub const AVAILABLE: &str = "Available";
    pub const EXTERNAL: &str = "ExternalBroker";
    pub const NOT_APPLICABLE: &str = "NotApplicable";
    pub const SECRETS_RESOLVED: &str = "SecretsResolved";
    pub const SECRET_MISSING: &str = "SecretMissing";
    pub const SECRET_KEY_MISSING: &str = "SecretKeyMissing";
    pub const PROVISIONED: &str = "Provisioned";
    pub const PROVISIONING_FAILED: &str = "ProvisioningFailed";
    pub const CONNECTED: &str = "Connected";
    pub const DISCONNECTED: &str = "Disconnected";
    pub const SPOOL_EMPTY: &str = "SpoolEmpty";
    pub const SPOOL_NOT_EMPTY: &str = "SpoolNotEmpty";
    pub const UNKNOWN: &str = "Unknown";
    /// A `brokerRef` names a broker that does not exist (yet).
    pub const BROKER_MISSING: &str = "BrokerMissing";
    /// Event reasons of transitions (an Event's reason is a condition reason or one of these).
    pub const CREDENTIALS_ROTATED: &str = "CredentialsRotated";
    pub const TOPIC_RULE_APPLIED: &str = "TopicRuleApplied";
    pub const SPOOL_OVERFLOW: &str = "SpoolOverflow";
    pub const CLEANUP_FAILED: &str = "CleanupFailed";
    /// `Stalled`: a cloud API refused an action for lack of permission.
    pub const PERMISSION_DENIED: &str = "PermissionDenied";
    /// `Reconciling=False`.
    pub const NOT_RECONCILING: &str = "NotReconciling";
    /// `Stalled=False`.
    pub const NOT_STALLED: &str = "NotStalled";
    /// The cleanup a finalizer waited for cannot ever run (its credentials are gone): the finalizer went and the
    /// Event names what was left behind.
    pub const CLEANUP_ABANDONED: &str = "CleanupAbandoned";
}

/// Where a reconciled object stands; [`summary`] turns it into `Ready`, `Reconciling` and `Stalled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The spec is in effect: `Ready=True`.
    Ready,
    /// The operator works towards the spec (children rolling out, provisioning retried, the bridge agent's first
    /// report awaited): `Reconciling=True` with this reason. kstatus: `InProgress`; Argo CD: `Progressing`.
    Reconciling(&'static str),
    /// The operator cannot proceed until the spec or what it references changes (an invalid spec, a missing
    /// Secret or key or broker, a denied cloud action): `Stalled=True` with this reason. kstatus: `Failed`;
    /// Argo CD: `Degraded`.
    Stalled(&'static str),
    /// The spec is applied and rolled out, but what runs does not work (a bridge cut off from a broker): only
    /// `Ready=False` says why. kstatus: `InProgress` (its reading of `Ready=False`); Argo CD: `Degraded`.
    NotWorking,
}

/// `Ready` (status, `reason`, `message`), `Reconciling` and `Stalled` for `progress`, all stamped with
/// `observed_generation`. A True `Reconciling` or `Stalled` repeats the message of `Ready`; a False one says
/// so in words that do not change between reconciles (no needless status writes).
pub fn summary(
    progress: Progress,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) -> Vec<Condition> {
    let message = message.into();
    let reconciling = match progress {
        Progress::Reconciling(r) => new(
            types::RECONCILING,
            true,
            r,
            message.clone(),
            observed_generation,
        ),
        Progress::Ready => new(
            types::RECONCILING,
            false,
            reasons::NOT_RECONCILING,
            "the spec is in effect",
            observed_generation,
        ),
        Progress::NotWorking => new(
            types::RECONCILING,
            false,
            reasons::NOT_RECONCILING,
            "the spec is applied; Ready says what does not work",
            observed_generation,
        ),
        Progress::Stalled(_) => new(
            types::RECONCILING,
            false,
            reasons::NOT_RECONCILING,
            "waiting for a change: Stalled says which",
            observed_generation,
        ),
    };
    let stalled = match progress {
        Progress::Stalled(r) => new(
            types::STALLED,
            true,
            r,
            message.clone(),
            observed_generation,
        ),
        _ => new(
            types::STALLED,
            false,
            reasons::NOT_STALLED,
            "nothing keeps the operator from proceeding",
            observed_generation,
        ),
    };
    let ready = new(
        types::READY,
        progress == Progress::Ready,
        reason,
        message,
        observed_generation,
    );
    vec![ready, reconciling, stalled]
}

/// `"True"`, `"False"` or `"Unknown"`.
pub fn status_str(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// A new condition stamped with `observed_generation` and the current time.
pub fn new(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status_str(status).to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: Time(Timestamp::now()),
    }
}

/// Merge `desired` into `current`: a condition whose status did not change keeps its
/// `lastTransitionTime`; the result is sorted by type so that writes are stable.
pub fn merge(current: &[Condition], desired: Vec<Condition>) -> Vec<Condition> {
    let mut out: Vec<Condition> = desired
        .into_iter()
        .map(|mut c| {
            if let Some(old) = current.iter().find(|o| o.type_ == c.type_)
                && old.status == c.status
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
            c
        })
        .collect();
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// Like [`merge`], but conditions of `current` whose type `desired` does not mention are kept as they are
/// (a failed reconcile updates `Ready` and says nothing new about the children that still exist).
pub fn update(current: &[Condition], desired: Vec<Condition>) -> Vec<Condition> {
    let mut out: Vec<Condition> = current
        .iter()
        .filter(|c| !desired.iter().any(|n| n.type_ == c.type_))
        .cloned()
        .collect();
    out.extend(merge(current, desired));
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_transition_time_when_status_is_unchanged() {
        let mut old = new(types::READY, true, reasons::READY, "ok", Some(1));
        old.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        let merged = merge(
            &[old.clone()],
            vec![new(types::READY, true, reasons::READY, "ok", Some(2))],
        );
        assert_eq!(merged[0].last_transition_time, old.last_transition_time);
        assert_eq!(merged[0].observed_generation, Some(2));
        let flipped = merge(
            &[old.clone()],
            vec![new(types::READY, false, reasons::NOT_READY, "no", Some(2))],
        );
        assert_ne!(flipped[0].last_transition_time, old.last_transition_time);
    }

    #[test]
    fn update_keeps_conditions_it_does_not_mention() {
        let broker = new(types::BROKER_READY, true, reasons::READY, "ok", Some(1));
        let ready = new(types::READY, true, reasons::READY, "ok", Some(1));
        let out = update(
            &[broker.clone(), ready],
            vec![new(
                types::READY,
                false,
                reasons::INVALID_SPEC,
                "bad",
                Some(2),
            )],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(find(&out, types::BROKER_READY), Some(&broker));
        assert_eq!(
            find(&out, types::READY).unwrap().reason,
            reasons::INVALID_SPEC
        );
    }

    /// The three conditions of each [`Progress`]: exactly one way to read each state, every one stamped.
    #[test]
    fn summary_sets_ready_reconciling_and_stalled_together() {
        let row = |p: Progress| {
            summary(p, "R", "msg", Some(4))
                .into_iter()
                .map(|c| {
                    assert_eq!(c.observed_generation, Some(4), "{c:?}");
                    (c.type_, c.status, c.reason)
                })
                .collect::<Vec<_>>()
        };
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            row(Progress::Ready),
            [
                s("Ready", "True", "R"),
                s("Reconciling", "False", "NotReconciling"),
                s("Stalled", "False", "NotStalled")
            ]
        );
        assert_eq!(
            row(Progress::Reconciling("Progressing")),
            [
                s("Ready", "False", "R"),
                s("Reconciling", "True", "Progressing"),
                s("Stalled", "False", "NotStalled")
            ]
        );
        assert_eq!(
            row(Progress::Stalled("SecretMissing")),
            [
                s("Ready", "False", "R"),
                s("Reconciling", "False", "NotReconciling"),
                s("Stalled", "True", "SecretMissing")
            ]
        );
        assert_eq!(
            row(Progress::NotWorking),
            [
                s("Ready", "False", "R"),
                s("Reconciling", "False", "NotReconciling"),
                s("Stalled", "False", "NotStalled")
            ]
        );
        // A True Reconciling or Stalled says what Ready says.
        let c = summary(
            Progress::Stalled("InvalidSpec"),
            "InvalidSpec",
            "spec.x: bad",
            None,
        );
        assert_eq!(c[2].message, "spec.x: bad");
    }

    #[test]
    fn merge_sorts_by_type() {
        let merged = merge(
            &[],
            vec![
                new(types::READY, true, reasons::READY, "", None),
                new(types::BROKER_READY, true, reasons::READY, "", None),
            ],
        );
        assert_eq!(merged[0].type_, types::BROKER_READY);
        assert!(is_true(&merged, types::READY));
    }
}
