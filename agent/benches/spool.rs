//! Spool throughput with durability on: append + group-committed fdatasync, then replay + ack.
//!
//! `cargo bench -p edgewire-agent --bench spool` (optionally `SPOOL_BENCH_DIR=<dir on the target disk>`,
//! `SPOOL_BENCH_N`, `SPOOL_BENCH_SIZE`). Prints messages/s for each phase and the number of fsyncs.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use edgewire_agent::bridge::spool::{self, Incoming, SpoolOptions};
use edgewire_api::v1alpha1::Overflow;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let n = env("SPOOL_BENCH_N", 200_000);
    let size = env("SPOOL_BENCH_SIZE", 256) as usize;
    let base = std::env::var("SPOOL_BENCH_DIR")
        .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut a, mut r, stats) = spool::open(SpoolOptions {
            dir: dir.path().to_path_buf(),
            max_bytes: 4 << 30,
            overflow: Overflow::RejectNew,
            segment_bytes: 0,
        })
        .expect("open");
        let payload = Bytes::from(vec![b'x'; size]);
        let t = Instant::now();
        let mut last = 0;
        for i in 0..n {
            last = a
                .push(Incoming {
                    rule: 0,
                    topic: format!("edge.site-a.telemetry.{}", i % 16),
                    payload: payload.clone(),
                    edge_id: 0,
                })
                .await
                .expect("append");
            // Written as the bridge writes what the edge delivered meanwhile (up to 256 at once).
            if i % 256 == 255 {
                a.flush().await.expect("write");
            }
        }
        a.flush().await.expect("write");
        a.durable().wait_for(|d| *d >= last).await.expect("durable");
        let w = t.elapsed();
        let commits = stats.commits.load(Ordering::SeqCst);
        println!(
            "spool write ({size} B, fsync'd): {n} in {w:?} = {:.0} msgs/s, {commits} group commits ({:.0} msgs per fsync)",
            n as f64 / w.as_secs_f64(),
            n as f64 / commits.max(1) as f64
        );
        let t = Instant::now();
        let mut got = 0u64;
        while got < n {
            let b = r.next_batch(4096).await.expect("replay");
            if let Some(l) = b.last() {
                r.ack(l, b.len() as u64, None);
            }
            got += b.len() as u64;
        }
        let rp = t.elapsed();
        println!(
            "spool replay + ack: {n} in {rp:?} = {:.0} msgs/s",
            n as f64 / rp.as_secs_f64()
        );
    });
}
