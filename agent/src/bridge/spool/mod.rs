//! The bridge spool: a crash-safe, append-only segment log on disk.
//!
//! Every edge→cloud message is appended here, and the edge side is acknowledged only once the record is
//! on stable storage ([`Appender::durable`]). Records leave the spool once the cloud acknowledged them
//! ([`Replayer::ack`]); replay is strictly in append order, so it is oldest first and in order per rule.
//!
//! # Layout
//! - `seg-<first seq, 20 digits>-<base position, 20 digits>.log`: segments of records, each framed as
//!   `len: u32 LE | crc32(body): u32 LE | body`, body = `seq u64 | unix ms u64 | rule u16 | topic len u16 |
//!   topic | payload`. A new segment starts every `segment_bytes` and at every start.
//! - `cursor`: `acked seq u64 | acked position u64 | crc32 u32`, replaced atomically (write, fsync,
//!   rename) at most every [`CURSOR_EVERY`]. Persisting it lazily only means a crash re-sends what the
//!   cloud acknowledged since the last write (at-least-once; duplicates, never loss).
//!
//! # Group commit
//! One writer task owns the active segment. It takes every message queued since its last round, writes
//! them with one `write` and publishes the `written` sequence at once: the replayer may read and forward
//! them (forwarding before the fsync is safe because the edge is only acknowledged after it). A syncer
//! thread runs `fdatasync` on the active segment whenever something was written since its last one and
//! then publishes `durable`. Writing never waits for a sync, so the fsync (1–2 ms here) is not on the
//! forwarding path; whatever was written during one sync is covered by the next, so the fsync rate is
//! bounded by the disk, not by the message rate.
//!
//! # Recovery
//! On open every segment is scanned; the first record whose frame is short or whose CRC does not match
//! (a torn write of the last batch before a crash) ends the log: the segment is truncated there. Segments
//! entirely at or below the cursor are deleted.
//!
//! # Limits
//! `max_bytes` bounds the unacknowledged bytes (framing included). `RejectNew`: [`Appender::reserve`]
//! waits until the cloud acknowledged enough, so the edge is not read and not acknowledged
//! (back-pressure). `DropOldest`: the writer discards whole oldest segments, advancing the cursor, and
//! counts every unacknowledged record it discarded in [`Stats::dropped`].
//!
//! # Why a segment log of our own
//! fdatasync costs about 1.5 ms on the 2-core build machine, so throughput is decided by how many
//! messages share one fsync and what each message costs besides. The segment log does one buffered
//! `write` and one `fdatasync` per batch and no per-message index update; removing acknowledged data is
//! unlinking a file; recovery is one sequential scan. An embedded store (redb, a B-tree; fjall, an LSM tree) adds a
//! transaction commit per group and per-record page or index updates on insert and on delete. Measured
//! in `agent/benches/spool_stores.rs` (`docs/spool-store.md`): every store pays one fdatasync per
//! commit; fjall appends faster at small paced batches, but each acknowledged record costs it a
//! tombstone (disk grows on ack, replay+delete slowest), and redb appends at about half the rate at
//! 1,024 records per commit.
//!
//! # Files
//! `open.rs` ([`open()`]: recovery, then the writer task and the syncer thread), `cursor.rs` (the ack
//! cursor file), `writer.rs` ([`Appender`] and the writer task: group writes, segment roll, DropOldest,
//! housekeeping), `syncer.rs` (the `fdatasync` thread), `replay.rs` ([`Replayer`]), `segment.rs` (record
//! framing, segment files).

mod cursor;
mod open;
mod replay;
mod segment;
mod syncer;
mod writer;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use edgewire_api::v1alpha1::Overflow;
use tokio::sync::Notify;

pub use open::open;
pub use replay::Replayer;
pub use segment::{FRAME_HEADER, Record, now_ms};
pub use writer::Appender;

/// How often (at most) the ack cursor is persisted.
pub const CURSOR_EVERY: Duration = Duration::from_millis(100);

/// Spool settings.
#[derive(Debug, Clone)]
pub struct SpoolOptions {
    pub dir: PathBuf,
    /// Limit of unacknowledged bytes (framing included).
    pub max_bytes: u64,
    pub overflow: Overflow,
    /// Segment size; 0 picks `max_bytes / 8` clamped to 64 KiB..64 MiB.
    pub segment_bytes: u64,
}

impl SpoolOptions {
    fn segment_size(&self) -> u64 {
        if self.segment_bytes > 0 {
            return self.segment_bytes;
        }
        (self.max_bytes / 8).clamp(64 * 1024, 64 * 1024 * 1024)
    }
}

/// Figures for metrics and `status.runtime`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Highest sequence number written (0: none yet).
    pub written_seq: AtomicU64,
    /// Byte position after the last written record.
    pub written_pos: AtomicU64,
    /// Every record up to this sequence number is acknowledged by the cloud (or dropped).
    pub acked_seq: AtomicU64,
    /// Byte position after the last acknowledged record.
    pub acked_pos: AtomicU64,
    /// Records discarded by `DropOldest` since start.
    pub dropped: AtomicU64,
    /// Records acknowledged by the cloud since start.
    pub forwarded: AtomicU64,
    /// Unix ms of the oldest unacknowledged record the replayer has seen (0: none / unknown).
    pub oldest_ms: AtomicU64,
    /// Number of fsync rounds (group commits) since start.
    pub commits: AtomicU64,
}

impl Stats {
    /// Records waiting for the cloud.
    pub fn messages(&self) -> u64 {
        self.written_seq
            .load(Ordering::SeqCst)
            .saturating_sub(self.acked_seq.load(Ordering::SeqCst))
    }
    /// Bytes waiting for the cloud.
    pub fn bytes(&self) -> u64 {
        self.written_pos
            .load(Ordering::SeqCst)
            .saturating_sub(self.acked_pos.load(Ordering::SeqCst))
    }
}

#[derive(Debug, Clone)]
struct SegMeta {
    first_seq: u64,
    base_pos: u64,
    path: PathBuf,
    /// Last sequence written to it (first_seq - 1 while empty).
    last_seq: u64,
    /// Length in bytes.
    len: u64,
}

struct Shared {
    dir: PathBuf,
    stats: Arc<Stats>,
    segments: Mutex<VecDeque<SegMeta>>,
    /// (acked seq, acked pos): moved together.
    acked: Mutex<(u64, u64)>,
    /// Signalled when the cursor advances (acks, drops).
    freed: Notify,
    max_bytes: u64,
    overflow: Overflow,
}

impl Shared {
    fn advance(&self, seq: u64, pos: u64) -> bool {
        let mut a = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        if seq <= a.0 {
            return false;
        }
        *a = (seq, pos.max(a.1));
        self.stats.acked_seq.store(a.0, Ordering::SeqCst);
        self.stats.acked_pos.store(a.1, Ordering::SeqCst);
        drop(a);
        self.freed.notify_waiters();
        true
    }

    fn acked(&self) -> (u64, u64) {
        *self.acked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn segments(&self) -> std::sync::MutexGuard<'_, VecDeque<SegMeta>> {
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A message handed to the spool.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub rule: u16,
    pub topic: String,
    pub payload: Bytes,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::path::Path;
    use std::time::Instant;

    fn opts(dir: &Path, max: u64, overflow: Overflow, seg: u64) -> SpoolOptions {
        SpoolOptions {
            dir: dir.to_path_buf(),
            max_bytes: max,
            overflow,
            segment_bytes: seg,
        }
    }

    fn msg(i: u64) -> Incoming {
        Incoming {
            rule: (i % 3) as u16,
            topic: format!("edge.t.{}", i % 3),
            payload: Bytes::from(format!("payload-{i:08}")),
        }
    }

    async fn fill(a: &mut Appender, from: u64, to: u64) -> u64 {
        let mut last = 0;
        for i in from..to {
            a.reserve(32).await;
            last = a.append(msg(i)).await.unwrap();
        }
        let mut d = a.durable();
        d.wait_for(|v| *v >= last).await.unwrap();
        last
    }

    async fn drain(r: &mut Replayer, n: usize) -> Vec<Record> {
        let mut out = Vec::new();
        while out.len() < n {
            let b = r.next_batch(100).await.unwrap();
            if let Some(l) = b.last() {
                r.ack(l, b.len() as u64, None);
            }
            out.extend(b);
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replays_in_order_across_segments_and_resumes_after_the_cursor() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut a, mut r, stats) =
                open(opts(d.path(), 1 << 30, Overflow::RejectNew, 4096)).unwrap();
            fill(&mut a, 0, 1000).await;
            let got = drain(&mut r, 400).await;
            for (i, rec) in got.iter().enumerate() {
                assert_eq!(rec.seq, i as u64 + 1);
                assert_eq!(rec.payload, msg(i as u64).payload);
                assert_eq!(rec.topic, msg(i as u64).topic);
            }
            assert_eq!(stats.messages(), 600);
            assert!(stats.commits.load(Ordering::SeqCst) >= 1);
            // The writer writes the final cursor once the appender is gone, then stops.
            drop(a);
            until("the final cursor", || {
                cursor::read(d.path()).is_ok_and(|(seq, _)| seq == 400)
            })
            .await;
        }
        let segs = fs::read_dir(d.path()).unwrap().count();
        let (_a, mut r, stats) = open(opts(d.path(), 1 << 30, Overflow::RejectNew, 4096)).unwrap();
        assert_eq!(stats.messages(), 600, "the cursor survived");
        let rest = drain(&mut r, 600).await;
        assert_eq!(rest.first().unwrap().seq, 401);
        assert_eq!(rest.last().unwrap().seq, 1000);
        assert!(rest.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        until("acknowledged segments are deleted", || {
            fs::read_dir(d.path()).unwrap().count() < segs
        })
        .await;
    }

    /// Polls `done` every 10 ms; panics naming `what` after 10 s.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "not within 10 s: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `testdata/v1`: a segment and a cursor written by the spool before `crc32fast` (its own table-driven
    /// CRC-32): four records, the first acknowledged. They must read back unchanged — a checksum that
    /// differed would end the log at the first frame (a torn tail) and refuse the cursor.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spool_written_before_crc32fast_reads_unchanged() {
        let d = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bridge/spool/testdata/v1");
        for f in [
            "cursor",
            "seg-00000000000000000001-00000000000000000000.log",
        ] {
            fs::copy(fixture.join(f), d.path().join(f)).unwrap();
        }
        let (mut a, mut r, stats) = open(opts(d.path(), 1 << 20, Overflow::RejectNew, 0)).unwrap();
        assert_eq!(stats.acked_seq.load(Ordering::SeqCst), 1, "cursor read");
        assert_eq!(stats.messages(), 3, "no frame was taken for a torn tail");
        let got = r.next_batch(10).await.unwrap();
        let seen: Vec<_> = got
            .iter()
            .map(|r| (r.seq, r.rule, r.topic.as_str(), r.payload.as_ref()))
            .collect();
        assert_eq!(
            seen,
            [
                (2, 1, "edge.site-a.alarms", &[0u8, 1, 2, 0xfe, 0xff][..]),
                (3, 0, "edge.site-a.telemetry.t2", &b""[..]),
                (4, 2, "cmd.x", &b"last record"[..]),
            ]
        );
        assert_eq!(got.last().unwrap().end_pos, 209, "the whole file is valid");
        // New records follow the old ones.
        fill(&mut a, 7, 8).await;
        let next = r.next_batch(10).await.unwrap();
        assert_eq!((next[0].seq, &next[0].payload), (5, &msg(7).payload));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_tail_is_truncated_and_new_records_follow() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut a, _r, _s) =
                open(opts(d.path(), 1 << 30, Overflow::RejectNew, 1 << 20)).unwrap();
            fill(&mut a, 0, 50).await;
        }
        // Simulate a crash in the middle of a write: half a frame at the end of the segment.
        let seg = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("seg-"))
            .max()
            .unwrap();
        let mut extra = Vec::new();
        segment::encode(&mut extra, 51, 0, &msg(51));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&extra[..extra.len() / 2]).unwrap();
        drop(f);
        let (mut a, mut r, stats) =
            open(opts(d.path(), 1 << 30, Overflow::RejectNew, 1 << 20)).unwrap();
        assert_eq!(stats.messages(), 50);
        fill(&mut a, 100, 110).await;
        let got = drain(&mut r, 60).await;
        assert_eq!(got.len(), 60);
        assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        assert_eq!(got[50].payload, msg(100).payload);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_oldest_counts_exactly_what_it_discarded() {
        let d = tempfile::tempdir().unwrap();
        let max = 16 * 1024;
        let (mut a, mut r, stats) = open(opts(d.path(), max, Overflow::DropOldest, 2048)).unwrap();
        fill(&mut a, 0, 2000).await;
        assert!(stats.bytes() <= max, "{} > {max}", stats.bytes());
        let dropped = stats.dropped.load(Ordering::SeqCst);
        assert!(dropped > 0);
        let waiting = stats.messages();
        assert_eq!(dropped + waiting, 2000);
        let got = drain(&mut r, waiting as usize).await;
        assert_eq!(got.first().unwrap().seq, dropped + 1, "the oldest went");
        assert_eq!(got.last().unwrap().seq, 2000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reject_new_waits_for_the_cloud() {
        let d = tempfile::tempdir().unwrap();
        let max = 8 * 1024;
        let (mut a, mut r, stats) = open(opts(d.path(), max, Overflow::RejectNew, 2048)).unwrap();
        let writer = tokio::spawn(async move {
            fill(&mut a, 0, 1000).await;
        });
        // Full: less than one record below the limit (1000 records cannot fit), and the appender waits.
        let record = segment::frame_len(&msg(999)) as u64;
        until("the spool fills up", || stats.bytes() + record > max).await;
        assert!(!writer.is_finished(), "the appender must be held back");
        assert!(stats.bytes() <= max, "{} > {max}", stats.bytes());
        let got = drain(&mut r, 1000).await;
        writer.await.unwrap();
        assert_eq!(got.len(), 1000);
        assert_eq!(stats.dropped.load(Ordering::SeqCst), 0);
        assert!(got.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }
}
