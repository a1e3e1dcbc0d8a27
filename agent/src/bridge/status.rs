//! `--report-status`: server-side apply of `status.runtime` on the BridgeLink's `/status` subresource
//! under the field manager `edgewire-bridge`. The operator owns `status.conditions` and derives
//! EdgeConnected, CloudConnected and Spooling from this.
//!
//! A report goes out at start, within [`CHECK`] of a change the conditions or an operator would act on
//! ([`significant`]: a side connecting or dropping, the spool starting or ceasing to hold messages,
//! drops, damaged records, a blocked write), at least every [`HEARTBEAT`] otherwise (the counters with
//! it), and at shutdown. A bridge under steady traffic does not write every few seconds: at 1,000
//! BridgeLinks that would be hundreds of writes a second to the API server for figures nobody waits on.
//! The operator believes a report for 60 s, three heartbeats. A failed patch is tried again after 5 s,
//! doubling up to the heartbeat, so a thousand agents do not hammer an API server that is down.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgewire_api::v1alpha1::{BridgeLink, BridgeRuntime};
use kube::api::{Api, Patch, PatchParams};
use tokio::time::Instant;

use super::Runtime;

/// Field manager of the runtime patch.
pub const FIELD_MANAGER: &str = edgewire_api::BRIDGE_FIELD_MANAGER;
/// How often the agent looks for a change worth reporting.
pub const CHECK: Duration = Duration::from_secs(1);
/// Longest interval between two reports.
pub const HEARTBEAT: Duration = Duration::from_secs(20);
/// First wait after a failed patch (then doubling, up to [`HEARTBEAT`]).
const RETRY: Duration = Duration::from_secs(5);

fn rfc3339_ms(ms: u64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The runtime figures now.
pub fn runtime(rt: &Runtime) -> BridgeRuntime {
    let last = rt.counters.last_forward_ms.load(Ordering::SeqCst);
    let write_error = rt.spool.write_error();
    BridgeRuntime {
        spool_messages: rt.spool.messages(),
        spool_bytes: rt.spool.bytes(),
        oldest_spooled_age_seconds: rt.oldest_age_seconds(),
        forwarded: rt.spool.forwarded.load(Ordering::SeqCst),
        dropped: rt.spool.dropped.load(Ordering::SeqCst),
        corrupt_records: rt.spool.corrupt.load(Ordering::SeqCst),
        last_corrupt: rt.spool.last_corrupt(),
        spool_write_blocked: write_error.is_some(),
        spool_write_error: write_error,
        edge_connected: rt.edge.is_connected(),
        cloud_connected: rt.cloud.is_connected(),
        last_forward_time: (last > 0).then(|| rfc3339_ms(last)).flatten(),
        updated: rfc3339_ms(super::spool::now_ms()),
    }
}

/// The server-side apply body: only `status.runtime`, so the operator's conditions stay its own.
pub fn patch_body(name: &str, namespace: &str, runtime: &BridgeRuntime) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "edgewire.dev/v1alpha1",
        "kind": "BridgeLink",
        "metadata": {"name": name, "namespace": namespace},
        "status": {"runtime": runtime},
    })
}

/// The part of a report that is reported as soon as it changes: everything but the counters that move
/// with traffic (spooled messages and bytes, beyond whether there are any; the oldest's age; forwarded;
/// the last forward's time; the report's own time).
pub fn significant(rt: &BridgeRuntime) -> BridgeRuntime {
    BridgeRuntime {
        spool_messages: rt.spool_messages.min(1),
        spool_bytes: 0,
        oldest_spooled_age_seconds: None,
        forwarded: 0,
        last_forward_time: None,
        updated: None,
        ..rt.clone()
    }
}

/// The last report the API server took: its [`significant`] part, and when.
#[derive(Clone, Debug)]
pub struct Reported {
    pub significant: BridgeRuntime,
    pub at: Instant,
}

/// Whether `current` is to be reported at `now`.
pub fn due(last: Option<&Reported>, current: &BridgeRuntime, now: Instant) -> bool {
    match last {
        None => true,
        Some(l) => l.significant != significant(current) || now >= l.at + HEARTBEAT,
    }
}

/// The wait after `failures` patches failed in a row.
fn retry_after(failures: u32) -> Duration {
    RETRY
        .saturating_mul(1 << failures.saturating_sub(1).min(8))
        .min(HEARTBEAT)
}

#[derive(Clone)]
pub struct Reporter {
    api: Api<BridgeLink>,
    name: String,
    namespace: String,
    rt: Arc<Runtime>,
}

impl Reporter {
    pub async fn new(namespace: &str, name: &str, rt: Arc<Runtime>) -> anyhow::Result<Self> {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!("--report-status: no Kubernetes client configuration: {e}")
        })?;
        Ok(Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            namespace: namespace.into(),
            rt,
        })
    }

    async fn patch(&self, runtime: &BridgeRuntime) -> Result<(), kube::Error> {
        let body = patch_body(&self.name, &self.namespace, runtime);
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        self.api
            .patch_status(&self.name, &pp, &Patch::Apply(&body))
            .await
            .map(drop)
    }

    /// Reports now (at shutdown).
    pub async fn report_once(&self) {
        if let Err(e) = self.patch(&runtime(&self.rt)).await {
            tracing::warn!(error = %e, "cannot patch status.runtime");
        }
    }

    pub async fn run(self) {
        let mut tick = tokio::time::interval(CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last: Option<Reported> = None;
        let mut failures = 0;
        let mut not_before = Instant::now();
        loop {
            let now = tick.tick().await;
            let current = runtime(&self.rt);
            if now < not_before || !due(last.as_ref(), &current, now) {
                continue;
            }
            match self.patch(&current).await {
                Ok(()) => {
                    last = Some(Reported {
                        significant: significant(&current),
                        at: now,
                    });
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    not_before = now + retry_after(failures);
                    tracing::warn!(error = %e, retry_in = ?retry_after(failures), "cannot patch status.runtime");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected, idle bridge's report.
    fn idle() -> BridgeRuntime {
        BridgeRuntime {
            edge_connected: true,
            cloud_connected: true,
            forwarded: 10,
            updated: Some("2026-12-07T10:00:00Z".into()),
            ..Default::default()
        }
    }

    #[test]
    fn traffic_alone_is_reported_at_the_heartbeat() {
        let t0 = Instant::now();
        assert!(due(None, &idle(), t0), "the first report goes out at once");
        let last = Reported {
            significant: significant(&idle()),
            at: t0,
        };
        let busier = BridgeRuntime {
            forwarded: 90_000,
            last_forward_time: Some("2026-12-07T10:00:09Z".into()),
            updated: Some("2026-12-07T10:00:10Z".into()),
            ..idle()
        };
        assert!(!due(Some(&last), &busier, t0 + HEARTBEAT - CHECK));
        assert!(due(Some(&last), &busier, t0 + HEARTBEAT));
        assert!(
            due(Some(&last), &idle(), t0 + HEARTBEAT),
            "an idle bridge too"
        );
        // More messages in a spool that already held some: a count, not a change.
        let spooling = BridgeRuntime {
            spool_messages: 5,
            spool_bytes: 500,
            oldest_spooled_age_seconds: Some(3),
            ..idle()
        };
        let last = Reported {
            significant: significant(&spooling),
            at: t0,
        };
        let more = BridgeRuntime {
            spool_messages: 50_000,
            spool_bytes: 5_000_000,
            oldest_spooled_age_seconds: Some(9),
            ..spooling.clone()
        };
        assert!(!due(Some(&last), &more, t0 + CHECK));
    }

    #[test]
    fn what_the_conditions_read_is_reported_at_the_next_check() {
        let t0 = Instant::now();
        let last = Reported {
            significant: significant(&idle()),
            at: t0,
        };
        let soon = t0 + CHECK;
        type Change = fn(&mut BridgeRuntime);
        let changes: [(&str, Change); 8] = [
            ("edge lost", |r| r.edge_connected = false),
            ("cloud lost", |r| r.cloud_connected = false),
            ("spool holds messages", |r| r.spool_messages = 1),
            ("a drop", |r| r.dropped = 1),
            ("a damaged record", |r| r.corrupt_records = 1),
            ("which record", |r| r.last_corrupt = Some("seg-1".into())),
            ("write blocked", |r| r.spool_write_blocked = true),
            ("the write error", |r| {
                r.spool_write_error = Some("ENOSPC".into())
            }),
        ];
        for (what, change) in changes {
            let mut r = idle();
            change(&mut r);
            assert!(due(Some(&last), &r, soon), "{what}");
        }
        // The spool emptied.
        let last = Reported {
            significant: significant(&BridgeRuntime {
                spool_messages: 7,
                ..idle()
            }),
            at: t0,
        };
        assert!(due(Some(&last), &idle(), soon), "spool empty again");
    }

    #[test]
    fn failed_patches_are_tried_again_later_and_later_up_to_the_heartbeat() {
        let waits: Vec<u64> = (1..=6).map(|n| retry_after(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 20, 20, 20]);
        assert_eq!(retry_after(u32::MAX), HEARTBEAT);
    }

    #[test]
    fn patch_body_holds_only_the_runtime() {
        let r = BridgeRuntime {
            spool_messages: 3,
            spool_bytes: 120,
            forwarded: 7,
            cloud_connected: true,
            ..Default::default()
        };
        let b = patch_body("site-a", "factory", &r);
        assert_eq!(b["metadata"]["name"], "site-a");
        assert_eq!(b["status"]["runtime"]["spoolMessages"], 3);
        assert_eq!(b["status"]["runtime"]["cloudConnected"], true);
        assert!(b["status"].get("conditions").is_none());
        assert_eq!(b["status"].as_object().unwrap().len(), 1);
    }

    /// Issue 14 items 3 and 8: what `/healthz` says about damaged records and a full disk is in
    /// `status.runtime` too, and goes once the disk has room again.
    #[test]
    fn the_runtime_shows_corrupt_records_and_a_blocked_write() {
        let rt = Runtime {
            spool: Arc::new(crate::bridge::spool::Stats::default()),
            spool_max_bytes: 1 << 30,
            counters: Arc::default(),
            edge: Arc::default(),
            cloud: Arc::default(),
        };
        let clean = runtime(&rt);
        assert_eq!(
            (clean.corrupt_records, clean.spool_write_blocked),
            (0, false)
        );
        let json = patch_body("site-a", "factory", &clean);
        assert_eq!(json["status"]["runtime"]["corruptRecords"], 0);
        assert_eq!(json["status"]["runtime"]["spoolWriteBlocked"], false);
        assert!(json["status"]["runtime"].get("spoolWriteError").is_none());

        rt.spool.corrupt.store(2, Ordering::SeqCst);
        *rt.spool.last_corrupt.lock().unwrap() =
            Some("records 5..=6 damaged or missing in /spool/seg-1 at offset 40".into());
        rt.spool.set_write_error(Some(
            "spool write failed: No space left on device (os error 28)".into(),
        ));
        let json = patch_body("site-a", "factory", &runtime(&rt));
        let r = &json["status"]["runtime"];
        assert_eq!(r["corruptRecords"], 2);
        assert_eq!(
            r["lastCorrupt"],
            "records 5..=6 damaged or missing in /spool/seg-1 at offset 40"
        );
        assert_eq!(r["spoolWriteBlocked"], true);
        assert_eq!(
            r["spoolWriteError"],
            "spool write failed: No space left on device (os error 28)"
        );

        rt.spool.set_write_error(None);
        let after = runtime(&rt);
        assert!(!after.spool_write_blocked && after.spool_write_error.is_none());
        assert_eq!(after.corrupt_records, 2, "a count since start");
    }
}
