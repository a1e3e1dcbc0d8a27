//! Stage 5 (pure): conditions from what was applied and from `status.runtime`, which the bridge agent writes
//! under its own field manager. The operator never writes `runtime`: the status it applies leaves it out.

use super::validate::ValidatedBridgeLink;
use crate::reconcile::Invalid;
use crate::rollout::Rollout;
use crate::status::broker_ready;
use edgewire_api::condition::{self, Progress, reasons, types};
use edgewire_api::{BridgeLink, BridgeLinkStatus, BridgeRuntime};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

/// A runtime report older than this is not believed (the agent writes at least every 20 s while it runs).
pub const RUNTIME_STALE_SECONDS: i64 = 60;

/// What the runtime report says, if it can be believed at `now`.
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeView<'a> {
    /// No report yet.
    Absent,
    /// The last report is older than [`RUNTIME_STALE_SECONDS`] (or has no readable `updated`).
    Stale,
    Fresh(&'a BridgeRuntime),
}

pub fn runtime_view(status: Option<&BridgeLinkStatus>, now: Timestamp) -> RuntimeView<'_> {
    let Some(rt) = status.and_then(|s| s.runtime.as_ref()) else {
        return RuntimeView::Absent;
    };
    let updated = rt
        .updated
        .as_deref()
        .and_then(|u| u.parse::<Timestamp>().ok());
    match updated {
        Some(t) if now.as_second() - t.as_second() <= RUNTIME_STALE_SECONDS => {
            RuntimeView::Fresh(rt)
        }
        _ => RuntimeView::Stale,
    }
}

fn unknown(type_: &str, reason: &str, message: &str, generation: Option<i64>) -> Condition {
    let mut c = condition::new(type_, false, reason, message, generation);
    c.status = "Unknown".into();
    c
}

fn connected(
    type_: &str,
    side: &str,
    view: &RuntimeView<'_>,
    get: fn(&BridgeRuntime) -> bool,
    generation: Option<i64>,
) -> Condition {
    match view {
        RuntimeView::Absent => unknown(
            type_,
            reasons::UNKNOWN,
            "the bridge agent has not reported yet",
            generation,
        ),
        RuntimeView::Stale => unknown(
            type_,
            reasons::UNKNOWN,
            "the bridge agent's last report is older than 60s",
            generation,
        ),
        RuntimeView::Fresh(rt) if get(rt) => condition::new(
            type_,
            true,
            reasons::CONNECTED,
            format!("the bridge is connected to the {side} broker"),
            generation,
        ),
        RuntimeView::Fresh(_) => condition::new(
            type_,
            false,
            reasons::DISCONNECTED,
            format!("the bridge is not connected to the {side} broker"),
            generation,
        ),
    }
}

/// The status of a reconciled BridgeLink at `now` (without `runtime`, which the agent owns).
pub fn desired(
    bl: &BridgeLink,
    v: &ValidatedBridgeLink,
    sts: &Rollout,
    now: Timestamp,
) -> BridgeLinkStatus {
    let generation = bl.metadata.generation;
    let current = bl.status.clone().unwrap_or_default();
    let view = runtime_view(bl.status.as_ref(), now);
    let (workload_ok, workload_msg) = broker_ready(sts);
    let edge = connected(
        types::EDGE_CONNECTED,
        "edge",
        &view,
        |r| r.edge_connected,
        generation,
    );
    let cloud = connected(
        types::CLOUD_CONNECTED,
        "cloud",
        &view,
        |r| r.cloud_connected,
        generation,
    );
    let spooling = match &view {
        RuntimeView::Fresh(rt) if rt.spool_messages > 0 => condition::new(
            types::SPOOLING,
            true,
            reasons::SPOOL_NOT_EMPTY,
            format!(
                "{} message(s), {} byte(s) wait in the spool",
                rt.spool_messages, rt.spool_bytes
            ),
            generation,
        ),
        RuntimeView::Fresh(_) => condition::new(
            types::SPOOLING,
            false,
            reasons::SPOOL_EMPTY,
            "the spool is empty",
            generation,
        ),
        RuntimeView::Absent | RuntimeView::Stale => unknown(
            types::SPOOLING,
            reasons::UNKNOWN,
            "no current report from the bridge agent",
            generation,
        ),
    };
    let is_true = |c: &Condition| c.status == "True";
    // Until the agent's first report the rollout is not over; a bridge that reported and lost a broker (or
    // stopped reporting) runs as specified and does not work.
    let waiting = matches!(view, RuntimeView::Absent);
    let (progress, ready_reason, ready_msg) = if !workload_ok {
        (
            Progress::Reconciling(reasons::PROGRESSING),
            reasons::PROGRESSING,
            workload_msg.replace("broker", "bridge"),
        )
    } else if !is_true(&edge) {
        (
            if waiting {
                Progress::Reconciling(reasons::PROGRESSING)
            } else {
                Progress::NotWorking
            },
            reasons::NOT_READY,
            format!("EdgeConnected: {}", edge.message),
        )
    } else if !is_true(&cloud) {
        (
            Progress::NotWorking,
            reasons::NOT_READY,
            format!("CloudConnected: {}", cloud.message),
        )
    } else {
        (
            Progress::Ready,
            reasons::READY,
            "the bridge is running and connected to both brokers".to_string(),
        )
    };
    let conditions = [
        vec![
            condition::new(
                types::CREDENTIALS_READY,
                true,
                reasons::SECRETS_RESOLVED,
                "every referenced broker, Secret and key exists",
                generation,
            ),
            edge,
            cloud,
            spooling,
        ],
        condition::summary(progress, ready_reason, ready_msg, generation),
    ]
    .concat();
    BridgeLinkStatus {
        observed_generation: generation,
        conditions: condition::merge(&current.conditions, conditions),
        credentials_revision: Some(v.credentials_hash.clone()),
        dropped_reported: dropped_now(bl).or(current.dropped_reported),
        runtime: None,
    }
}

/// `runtime.dropped` as the agent reported it, whatever its age.
pub fn dropped_now(bl: &BridgeLink) -> Option<u64> {
    bl.status
        .as_ref()
        .and_then(|s| s.runtime.as_ref())
        .map(|r| r.dropped)
}

/// Messages dropped since the last `SpoolOverflow` Event (the agent's counter restarts with the agent: a
/// count below the reported one means everything counted now is new).
pub fn newly_dropped(bl: &BridgeLink) -> u64 {
    let now = dropped_now(bl).unwrap_or(0);
    let reported = bl
        .status
        .as_ref()
        .and_then(|s| s.dropped_reported)
        .unwrap_or(0);
    if now >= reported { now - reported } else { now }
}

/// The status of a BridgeLink that cannot be reconciled: `Ready` (and `CredentialsReady` for a credentials
/// problem) say why; the other conditions stay.
pub fn failed(bl: &BridgeLink, err: &Invalid) -> BridgeLinkStatus {
    let generation = bl.metadata.generation;
    let current = bl.status.clone().unwrap_or_default();
    BridgeLinkStatus {
        observed_generation: generation,
        conditions: condition::update(&current.conditions, err.conditions(generation)),
        runtime: None,
        ..current
    }
}

/// The current status as the operator would write it (its own fields only), to compare with a new one.
pub fn operator_part(bl: &BridgeLink) -> Option<BridgeLinkStatus> {
    bl.status.clone().map(|mut s| {
        s.runtime = None;
        s
    })
}
