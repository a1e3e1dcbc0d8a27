//! `--report-status`: server-side apply of `status.runtime` on the BridgeLink's `/status` subresource
//! under the field manager `edgewire-bridge`, once at start, every [`EVERY`], and at shutdown. The
//! operator owns `status.conditions` and derives EdgeConnected, CloudConnected and Spooling from this.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use edgewire_api::v1alpha1::{BridgeLink, BridgeRuntime};
use kube::api::{Api, Patch, PatchParams};

use super::Runtime;

/// Field manager of the runtime patch.
pub const FIELD_MANAGER: &str = edgewire_api::BRIDGE_FIELD_MANAGER;
/// Interval between patches.
pub const EVERY: Duration = Duration::from_secs(5);

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

    pub async fn report_once(&self) {
        let body = patch_body(&self.name, &self.namespace, &runtime(&self.rt));
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        if let Err(e) = self
            .api
            .patch_status(&self.name, &pp, &Patch::Apply(&body))
            .await
        {
            tracing::warn!(error = %e, "cannot patch status.runtime");
        }
    }

    pub async fn run(self) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.report_once().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
