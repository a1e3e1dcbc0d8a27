//! The bridge spool: a crash-safe, append-only segment log on disk.
//!
//! Every edge→cloud message is appended here, and the edge side is acknowledged only once the record is
//! on stable storage ([`Appender::durable`]). Records leave the spool once the cloud acknowledged them
//! ([`Replayer::ack`]); replay is strictly in append order, so it is oldest first and in order per rule.
//!
//! # Layout
//! - `seg-<first seq, 20 digits>-<base position, 20 digits>.log`: segments of records, each framed as
//!   `len: u32 LE | crc32(body): u32 LE | body`, body = `seq u64 | stamp u64 | rule u16 | topic len u16 |
//!   topic | payload`; the stamp is the unix ms (low 48 bits) and the edge packet id (high 16 bits, 0:
//!   none — what records written before it existed hold there, so they read unchanged). A new segment starts every `segment_bytes` and at every start.
//! - `cursor`: `acked seq u64 | acked position u64 | crc32 u32`, replaced atomically (write, fsync,
//!   rename) at most every [`CURSOR_EVERY`]. Persisting it lazily only means a crash re-sends what the
//!   cloud acknowledged since the last write (at-least-once; duplicates, never loss).
//!
//! # Group commit
//! The [`Appender`], owned by the task that reads the edge, owns the active segment. It queues what the
//! edge delivered meanwhile ([`Appender::push`]), writes it with one `write` ([`Appender::flush`]) and
//! publishes the `written` sequence at once: the replayer may forward them (forwarding before the fsync
//! is safe because the edge is only acknowledged after it). A syncer thread runs `fdatasync` on the
//! active segment whenever something was written since its last one and then publishes `durable`.
//! Writing never waits for a sync, so the fsync (0.1–2 ms on the machines measured) is not on the
//! forwarding path; whatever was written during one sync is covered by the next, so the fsync rate is
//! bounded by the disk, not by the message rate. The syncer thread also keeps house: the cursor file and
//! deleting acknowledged segments, between syncs and at least every [`CURSOR_EVERY`].
//!
//! # Recovery and damage
//! On open every segment is scanned. What follows the last good record of the last segment is a torn
//! tail when the frame there is cut short (the last write before a crash): it is truncated, silently. A
//! frame that is all there but fails its CRC, or any bad frame in another segment, is damage: the scan
//! and the replayer skip to the next frame that checks out and carries a sequence number the bytes in
//! between can account for ([`segment::SegReader::resync`]), so the good records after it are still
//! delivered. Every record skipped that way, or missing between segments, is counted once
//! ([`Stats::corrupt`], `edgewire_bridge_spool_corrupt_records_total`), logged with its segment and offset
//! and shown on `/healthz`; the cursor moves past it once everything before it is acknowledged. Segments
//! without a good record and segments entirely at or below the cursor are deleted (an empty last segment
//! too: the writer starts a new one under the same name). A damaged or short `cursor` means "send again
//! from the oldest segment": duplicates, never loss.
//!
//! # A full disk
//! A write that fails (no space) is undone to the last whole batch and retried with backoff; meanwhile
//! nothing more is taken, the appender waits, and the edge is not acknowledged ([`Stats::write_error`],
//! `edgewire_bridge_spool_write_blocked`, `/readyz`). Acknowledged segments are still deleted (the cursor
//! is overwritten in place when there is no room for a new file), so a cloud that takes the backlog also
//! frees the disk. An fsync that fails stops the bridge: the kernel may have dropped what it was asked
//! to keep, and only a restart's recovery knows what the disk holds.
//!
//! # Limits
//! `max_bytes` bounds the unacknowledged bytes (framing included). Memory is bounded in bytes too: the
//! appender writes at once when a megabyte is queued, and [`Replayer::next_batch_within`] stops at a
//! byte budget. A record may carry at most [`MAX_RECORD`] bytes of topic and payload (what
//! the reader accepts); the bridge refuses a larger message before the spool. `RejectNew`: [`Appender::reserve`]
//! waits until the cloud acknowledged enough, so the edge is not read and not acknowledged
//! (back-pressure). `DropOldest`: the appender discards whole oldest segments, advancing the cursor, and
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
//! `open.rs` ([`open()`]: recovery, then the active segment and the syncer thread), `cursor.rs` (the ack
//! cursor file), `writer.rs` ([`Appender`]: group writes, segment roll, DropOldest; housekeeping),
//! `syncer.rs` (the `fdatasync` and housekeeping thread), `replay.rs` ([`Replayer`]), `segment.rs` (record
//! framing, segment files), `recent.rs` (the edge identities of the newest records, read before `open`
//! for the bridge's redelivery window).

mod cursor;
mod open;
mod recent;
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
pub use recent::{EdgeRecord, edge_hash, recent_edge_records};
pub use replay::Replayer;
pub use segment::{FRAME_HEADER, MAX_RECORD, Record, now_ms};
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
        edgewire_api::v1alpha1::spool_segment_bytes(self.max_bytes)
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
    /// Records found damaged or missing and skipped since start.
    pub corrupt: AtomicU64,
    /// The last damage found (segment, offset, records), for `/healthz`.
    pub last_corrupt: Mutex<Option<String>>,
    /// Why the spool cannot write right now (a full disk); `None` while it can.
    pub write_error: Mutex<Option<String>>,
}

impl Stats {
    /// Records waiting for the cloud.
    pub fn messages(&self) -> u64 {
        self.written_seq
            .load(Ordering::SeqCst)
            .saturating_sub(self.acked_seq.load(Ordering::SeqCst))
    }
    /// Why the spool cannot write right now, if it cannot.
    pub fn write_error(&self) -> Option<String> {
        self.write_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets or clears the write error; true when that changed whether there is one.
    pub(crate) fn set_write_error(&self, why: Option<String>) -> bool {
        let mut w = self.write_error.lock().unwrap_or_else(|e| e.into_inner());
        let changed = w.is_some() != why.is_some();
        *w = why;
        changed
    }

    /// The last damage found, if any.
    pub fn last_corrupt(&self) -> Option<String> {
        self.last_corrupt
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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
    /// The cursor and what the replayer has in hand, moved together.
    acked: Mutex<AckState>,
    /// Signalled when the cursor advances (acks, drops).
    freed: Notify,
    /// First sequence number of the active segment (housekeeping leaves it alone).
    active_first: AtomicU64,
    /// The cursor on disk; held while writing it or deleting segments.
    kept: Mutex<writer::Kept>,
    /// The last records written, still in memory ([`Tail`]).
    tail: Mutex<Tail>,
    /// The spool's identity ([`Replayer::spool_id`]).
    id: String,
    max_bytes: u64,
    overflow: Overflow,
}

/// The records the writer wrote last, as the replayer would read them back: while the replayer keeps up
/// with the writer it takes them from here, without reading the segment (a `read`, a copy, a CRC and an
/// allocation per record, and a blocking section). Bounded by [`TAIL_BYTES`] of topic and payload: a
/// replayer further behind (a cloud outage, a rewind) reads the segments and comes back here once it
/// reaches the oldest record kept. Contiguous in sequence numbers, like the log.
#[derive(Debug, Default)]
struct Tail {
    recs: VecDeque<Record>,
    bytes: usize,
}

/// Topic and payload bytes kept in [`Tail`] at most.
const TAIL_BYTES: usize = 4 * 1024 * 1024;

impl Tail {
    fn push(&mut self, r: Record) {
        if self.recs.back().is_some_and(|b| b.seq + 1 != r.seq) {
            // Not contiguous (never expected): start again rather than hand out a gap.
            self.clear();
        }
        self.bytes += r.payload.len() + r.topic.len();
        self.recs.push_back(r);
        while self.bytes > TAIL_BYTES
            && let Some(old) = self.recs.pop_front()
        {
            self.bytes -= old.payload.len() + old.topic.len();
        }
    }

    fn clear(&mut self) {
        self.recs.clear();
        self.bytes = 0;
    }

    /// Drops what comes before `seq` (handed out already) and tells whether `seq` is next here.
    fn starts_at(&mut self, seq: u64) -> bool {
        while let Some(f) = self.recs.front()
            && f.seq < seq
        {
            self.bytes -= f.payload.len() + f.topic.len();
            self.recs.pop_front();
        }
        self.recs.front().is_some_and(|f| f.seq == seq)
    }

    /// From the front up to sequence number `upto`, stopping once `max_bytes` are reached (at least one).
    fn take(&mut self, upto: u64, max_bytes: usize) -> Vec<Record> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while let Some(f) = self.recs.front()
            && f.seq <= upto
            && (out.is_empty() || bytes < max_bytes)
        {
            let len = f.payload.len() + f.topic.len();
            bytes += len;
            self.bytes -= len;
            out.extend(self.recs.pop_front());
        }
        out
    }
}

/// The cursor, and the records the replayer claimed: DropOldest counts a record it discards as dropped
/// only when nobody has it in hand; one in hand is counted by whoever learns its fate (the forwarder,
/// when it fails or was never sent; delivered otherwise). So "delivered + dropped" is exact.
#[derive(Debug, Default, Clone, Copy)]
struct AckState {
    /// Every record up to this sequence number is acknowledged, dropped or lost.
    seq: u64,
    /// Byte position after it.
    pos: u64,
    /// The replayer claimed every record up to here (handed out or about to be).
    handed: u64,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, AckState> {
        self.acked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, a: &AckState) {
        self.stats.acked_seq.store(a.seq, Ordering::SeqCst);
        self.stats.acked_pos.store(a.pos, Ordering::SeqCst);
    }

    /// Moves the cursor to `seq` (acknowledged or lost up to there); false when it is there already.
    fn advance(&self, seq: u64, pos: u64) -> bool {
        let mut a = self.state();
        if seq <= a.seq {
            return false;
        }
        a.seq = seq;
        a.pos = pos.max(a.pos);
        a.handed = a.handed.max(seq);
        self.publish(&a);
        drop(a);
        self.freed.notify_waiters();
        true
    }

    /// DropOldest discards everything up to `seq`: returns how many records nobody had in hand (counted
    /// as dropped here).
    fn drop_through(&self, seq: u64, pos: u64, first_seq: u64) -> u64 {
        let mut a = self.state();
        if seq <= a.seq {
            return 0;
        }
        let lost = seq.saturating_sub(a.seq.max(a.handed).max(first_seq - 1));
        a.seq = seq;
        a.pos = pos.max(a.pos);
        self.publish(&a);
        self.stats.dropped.fetch_add(lost, Ordering::SeqCst);
        drop(a);
        self.freed.notify_waiters();
        lost
    }

    /// The replayer is about to read `from..=upto`: claims them, or returns where it must go on from when
    /// the cursor passed `from` meanwhile (counting the claimed records it will now never hand out).
    fn claim(&self, from: u64, upto: u64) -> Result<(), u64> {
        let mut a = self.state();
        if a.seq >= from {
            let unhanded = a.seq.min(a.handed).saturating_sub(from - 1);
            self.stats.dropped.fetch_add(unhanded, Ordering::SeqCst);
            return Err(a.seq + 1);
        }
        a.handed = a.handed.max(upto);
        Ok(())
    }

    /// The forwarder gives back records it had in hand but never got acknowledged: those the cursor
    /// passed meanwhile (DropOldest) are dropped for good and counted; the rest will be handed out again.
    /// Returns the next sequence number to hand out.
    fn give_back(&self, in_hand: impl Iterator<Item = u64>) -> u64 {
        let mut a = self.state();
        let lost = in_hand.filter(|s| *s <= a.seq).count() as u64;
        self.stats.dropped.fetch_add(lost, Ordering::SeqCst);
        a.handed = a.seq;
        a.seq + 1
    }

    fn note_corrupt(&self, what: String) {
        *self
            .stats
            .last_corrupt
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(what);
    }

    fn acked(&self) -> (u64, u64) {
        let a = self.state();
        (a.seq, a.pos)
    }

    fn segments(&self) -> std::sync::MutexGuard<'_, VecDeque<SegMeta>> {
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, writer::Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A message handed to the spool.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub rule: u16,
    pub topic: String,
    pub payload: Bytes,
    /// The MQTT packet id the edge delivered it under; 0: none (kept in the record, [`Record::edge_id`]).
    pub edge_id: u16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::path::Path;
    use std::time::Instant;

    fn read_cursor(dir: &Path) -> std::io::Result<(u64, u64)> {
        cursor::read(dir)?.ok_or_else(|| std::io::Error::other("no cursor"))
    }

    fn segment_files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("seg-"))
            .collect();
        v.sort();
        v
    }

    /// Flips one byte of `path` at `offset`.
    fn flip(path: &Path, offset: u64) {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, offset).unwrap();
        b[0] ^= 0x5a;
        f.write_all_at(&b, offset).unwrap();
    }

    /// Replays (acknowledging as it goes) until `n` records were handed out or nothing waits.
    async fn drain_all(r: &mut Replayer, stats: &Stats, n: usize) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        while out.len() < n && stats.messages() > 0 {
            let b = tokio::time::timeout(Duration::from_secs(30), r.next_batch(100))
                .await
                .unwrap_or_else(|_| panic!("{} records wait, none handed out", stats.messages()))
                .unwrap();
            if let Some(l) = b.last() {
                r.ack(l, b.len() as u64, None);
            }
            out.extend(b);
        }
        out
    }

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
            edge_id: (i % 65_535 + 1) as u16,
        }
    }

    async fn fill(a: &mut Appender, from: u64, to: u64) -> u64 {
        let mut last = 0;
        for i in from..to {
            a.reserve(32).await.unwrap();
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
            // The syncer writes the final cursor once the appender is gone, then stops.
            drop(a);
            until("the final cursor", || {
                read_cursor(d.path()).is_ok_and(|(seq, _)| seq == 400)
            })
            .await;
        }
        let segs = fs::read_dir(d.path()).unwrap().count();
        let (a, mut r, stats) = open(opts(d.path(), 1 << 30, Overflow::RejectNew, 4096)).unwrap();
        assert_eq!(stats.messages(), 600, "the cursor survived");
        let rest = drain(&mut r, 600).await;
        assert_eq!(rest.first().unwrap().seq, 401);
        assert_eq!(rest.last().unwrap().seq, 1000);
        assert!(rest.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        until("acknowledged segments are deleted", || {
            fs::read_dir(d.path()).unwrap().count() < segs
        })
        .await;
        stop(a, &mut r).await;
    }

    /// What the replayer takes from the writer's tail (memory) is exactly what it reads back from the
    /// segment (sequence number, timestamp, rule, topic, payload, end position); and once it falls further
    /// behind than the tail keeps, it reads the segment on from where the memory records ended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_from_memory_are_the_records_on_disk_and_reading_resumes_after_them() {
        let d = tempfile::tempdir().unwrap();
        let (mut a, mut r, stats) =
            open(opts(d.path(), 1 << 30, Overflow::RejectNew, 64 << 20)).unwrap();
        fill(&mut a, 0, 10).await;
        let from_memory = r.next_batch(100).await.unwrap();
        assert_eq!(from_memory.len(), 10);
        // Handed out already, so no longer in the tail: the rewind reads them from the segment.
        r.rewind();
        let from_disk = r.next_batch(100).await.unwrap();
        assert_eq!(from_memory, from_disk);
        let last = from_disk.last().unwrap();
        r.ack(last, 10, None);

        fill(&mut a, 10, 20).await;
        let next = r.next_batch(100).await.unwrap();
        assert_eq!(next.first().map(|r| r.seq), Some(11));
        // More than the tail holds: record 21 and the next ones are only on disk now.
        let big = |i: u64| Incoming {
            rule: 1,
            topic: format!("edge.big.{i}"),
            payload: Bytes::from(vec![i as u8; 256 * 1024]),
            edge_id: (i % 7) as u16 + 1,
        };
        let n = (TAIL_BYTES / (256 * 1024)) as u64 + 4;
        let mut last = 0;
        for i in 0..n {
            a.reserve(256 * 1024 + 16).await.unwrap();
            last = a.append(big(i)).await.unwrap();
        }
        a.durable().wait_for(|v| *v >= last).await.unwrap();
        let mut got = Vec::new();
        while (got.len() as u64) < n {
            got.extend(r.next_batch(100).await.unwrap());
        }
        for (i, rec) in got.iter().enumerate() {
            assert_eq!(rec.seq, 21 + i as u64);
            let want = big(i as u64);
            assert_eq!(
                (&rec.topic, &rec.payload, rec.edge_id),
                (&want.topic, &want.payload, want.edge_id)
            );
        }
        assert_eq!(stats.corrupt.load(Ordering::SeqCst), 0);
        stop(a, &mut r).await;
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
        let fixture = Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned()),
        )
        .join("src/bridge/spool/testdata/v1");
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
        // Written before records kept an edge packet id: none, and the time as it was written.
        assert!(got.iter().all(|r| r.edge_id == 0), "{got:?}");
        assert!(
            got.iter()
                .all(|r| r.ts_ms > 1_600_000_000_000 && r.ts_ms < now_ms()),
            "{got:?}"
        );
        // New records follow the old ones, with their edge packet id.
        let before = now_ms();
        fill(&mut a, 7, 8).await;
        let next = r.next_batch(10).await.unwrap();
        assert_eq!((next[0].seq, &next[0].payload), (5, &msg(7).payload));
        assert_eq!(next[0].edge_id, msg(7).edge_id);
        assert!(
            (before..=now_ms()).contains(&next[0].ts_ms),
            "the stamp's time survives the edge id: {}",
            next[0].ts_ms
        );
    }

    /// The redelivery window after a restart: the newest records that carry an edge packet id, read
    /// back oldest first with their packet id and hash, before `open` (whose recovery may delete them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_newest_edge_records_are_read_back_with_their_packet_ids() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut a, _r, _s) = open(opts(d.path(), 1 << 30, Overflow::RejectNew, 2048)).unwrap();
            fill(&mut a, 0, 300).await;
            // No edge packet id (not MQTT): not in the window.
            a.append(Incoming {
                edge_id: 0,
                ..msg(300)
            })
            .await
            .unwrap();
            let mut durable = a.durable();
            durable.wait_for(|v| *v >= 301).await.unwrap();
        }
        assert!(segment_files(d.path()).len() > 2, "several segments");
        let want = |seqs: std::ops::RangeInclusive<u64>| -> Vec<EdgeRecord> {
            seqs.map(|seq| {
                let m = msg(seq - 1);
                EdgeRecord {
                    seq,
                    edge_id: m.edge_id,
                    hash: edge_hash(&m.topic, &m.payload),
                }
            })
            .collect()
        };
        assert_eq!(recent_edge_records(d.path(), 100), want(201..=300));
        assert_eq!(recent_edge_records(d.path(), 1000), want(1..=300));
        assert!(recent_edge_records(&d.path().join("none"), 10).is_empty());
        assert_ne!(
            edge_hash("a.b", b"x"),
            edge_hash("a.bx", b""),
            "the topic's length counts"
        );
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
        stop(a, &mut r).await;
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
        stop(a, &mut r).await;
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
        // The appender went with its task: wait for the syncer thread to stop (see `stop`).
        while r.next_batch(1000).await.is_ok() {}
    }

    /// Issue 14 item 1: restarts with nothing written since (an empty last segment) while records wait,
    /// then traffic and acknowledgements across segment rolls. The writer must keep running and every
    /// record must come back. Before: the second restart opened the empty segment again (truncating) and
    /// listed it twice; housekeeping deleted it while it was the active segment and the writer stopped
    /// with "No such file or directory".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restarts_with_an_empty_last_segment_lose_nothing_and_the_writer_keeps_running() {
        let d = tempfile::tempdir().unwrap();
        let o = || opts(d.path(), 1 << 30, Overflow::RejectNew, 2048);
        {
            let (mut a, _r, _s) = open(o()).unwrap();
            fill(&mut a, 0, 100).await;
        }
        for _ in 0..3 {
            // Nothing new: the segment each start made stays empty.
            let (a, _r, s) = open(o()).unwrap();
            assert_eq!(s.messages(), 100);
            drop(a);
        }
        let (mut a, mut r, stats) = open(o()).unwrap();
        fill(&mut a, 100, 400).await;
        let got = drain_all(&mut r, &stats, 400).await;
        assert_eq!(
            got.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=400).collect::<Vec<_>>()
        );
        for (i, rec) in got.iter().enumerate() {
            assert_eq!(rec.payload, msg(i as u64).payload);
        }
        // The writer still takes records after housekeeping deleted the acknowledged segments.
        until("acknowledged segments deleted", || {
            read_cursor(d.path()).is_ok_and(|(seq, _)| seq == 400)
                && segment_files(d.path()).len() <= 2
        })
        .await;
        let last = fill(&mut a, 400, 450).await;
        assert_eq!(last, 450, "the writer is running");
        assert_eq!(drain_all(&mut r, &stats, 50).await.len(), 50);
        assert_eq!(stats.corrupt.load(Ordering::SeqCst), 0);
        stop(a, &mut r).await;
    }

    /// Writes records 0..n in segments of `seg` bytes and closes the spool (final cursor at 0).
    async fn written_spool(dir: &Path, n: u64, seg: u64) {
        let (mut a, _r, _s) = open(opts(dir, 1 << 30, Overflow::RejectNew, seg)).unwrap();
        fill(&mut a, 0, n).await;
    }

    /// Issue 14 item 3: a flipped byte in a segment that is not the last one. Before: recovery took it for
    /// a torn tail and truncated the segment there, and the replayer then failed on the missing records.
    /// Now: the damaged record is counted, the segment's later records and the other segments arrive.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flipped_byte_in_an_earlier_segment_costs_only_the_damaged_record() {
        let d = tempfile::tempdir().unwrap();
        written_spool(d.path(), 300, 4096).await;
        let segs = segment_files(d.path());
        assert!(segs.len() > 3);
        // The third record of the second segment: 3 frames of 8 + 20 + 9 + 16 bytes in.
        let frame = segment::frame_len(&msg(0)) as u64;
        let size_before = fs::metadata(&segs[1]).unwrap().len();
        flip(&segs[1], 2 * frame + 30);
        let (a, mut r, stats) = open(opts(d.path(), 1 << 30, Overflow::RejectNew, 4096)).unwrap();
        assert_eq!(
            fs::metadata(&segs[1]).unwrap().len(),
            size_before,
            "not truncated"
        );
        let got = drain_all(&mut r, &stats, 300).await;
        let (first2, _) =
            segment::parse_name(&segs[1].file_name().unwrap().to_string_lossy()).unwrap();
        let damaged = first2 + 2;
        let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
        let expected: Vec<u64> = (1..=300).filter(|s| *s != damaged).collect();
        assert_eq!(seqs, expected);
        for rec in &got {
            assert_eq!(rec.payload, msg(rec.seq - 1).payload);
        }
        assert_eq!(stats.corrupt.load(Ordering::SeqCst), 1);
        let note = stats.last_corrupt().unwrap();
        assert!(
            note.contains(&segs[1].display().to_string())
                && note.contains(&format!("{damaged}..={damaged}")),
            "{note}"
        );
        assert_eq!(stats.messages(), 0, "the cursor passed the damaged record");
        stop(a, &mut r).await;
    }

    /// Issue 14 item 3, while running: a byte flipped in a segment the replayer has not read yet. Before:
    /// the replayer took the bad frame for the end of the segment, looked the record up again in the same
    /// segment, and looped forever. Now it skips and counts it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damage_found_while_running_is_skipped_and_counted_not_looped_on() {
        let d = tempfile::tempdir().unwrap();
        let (mut a, mut r, stats) =
            open(opts(d.path(), 1 << 30, Overflow::RejectNew, 4096)).unwrap();
        fill(&mut a, 0, 300).await;
        // Records the writer still holds in memory are handed out from there (undamaged); damage on
        // disk meets a replayer that reads the segments — one further behind than the tail holds, or
        // after a rewind.
        r.forget_tail();
        let segs = segment_files(d.path());
        let frame = segment::frame_len(&msg(0)) as u64;
        // The length field of the first record of the third segment.
        flip(&segs[2], 1);
        let (first3, _) =
            segment::parse_name(&segs[2].file_name().unwrap().to_string_lossy()).unwrap();
        let got = drain_all(&mut r, &stats, 299).await;
        let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
        let expected: Vec<u64> = (1..=300).filter(|s| *s != first3).collect();
        assert_eq!(seqs, expected);
        assert_eq!(stats.corrupt.load(Ordering::SeqCst), 1);
        assert!(frame > 0);
        // A rewind reads past it again without counting it twice.
        r.rewind();
        fill(&mut a, 300, 310).await;
        assert_eq!(drain_all(&mut r, &stats, 10).await.len(), 10);
        assert_eq!(stats.corrupt.load(Ordering::SeqCst), 1);
        stop(a, &mut r).await;
    }

    /// Issue 14 item 3: the last record of the last segment damaged (all there, bad CRC) is counted; a
    /// torn tail (cut short by a crash) is repaired without a count; new records never reuse the
    /// damaged record's number.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_last_record_is_counted_a_torn_one_is_not() {
        for torn in [true, false] {
            let d = tempfile::tempdir().unwrap();
            written_spool(d.path(), 50, 1 << 20).await;
            let last = segment_files(d.path()).pop().unwrap();
            let len = fs::metadata(&last).unwrap().len();
            if torn {
                OpenOptions::new()
                    .write(true)
                    .open(&last)
                    .unwrap()
                    .set_len(len - 5)
                    .unwrap();
            } else {
                flip(&last, len - 3);
            }
            let (mut a, mut r, stats) =
                open(opts(d.path(), 1 << 30, Overflow::RejectNew, 1 << 20)).unwrap();
            fill(&mut a, 100, 110).await;
            let got = drain_all(&mut r, &stats, 59).await;
            let seqs: Vec<u64> = got.iter().map(|r| r.seq).collect();
            let new_from = if torn { 50 } else { 51 };
            let expected: Vec<u64> = (1..50).chain(new_from..new_from + 10).collect();
            assert_eq!(seqs, expected, "torn: {torn}");
            assert_eq!(got[49].payload, msg(100).payload);
            assert_eq!(
                stats.corrupt.load(Ordering::SeqCst),
                u64::from(!torn),
                "torn: {torn}"
            );
            assert_eq!(stats.messages(), 0);
            stop(a, &mut r).await;
        }
    }

    /// Issue 14 item 3: a damaged or short cursor means "send everything again", not "refuse to start".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_or_short_cursor_resends_from_the_oldest_segment() {
        for damage in ["flip", "short"] {
            let d = tempfile::tempdir().unwrap();
            {
                let (mut a, mut r, _s) =
                    open(opts(d.path(), 1 << 30, Overflow::RejectNew, 2048)).unwrap();
                fill(&mut a, 0, 200).await;
                // One batch: the cursor ends at 100.
                drain(&mut r, 100).await;
                drop(a);
                until("the final cursor", || {
                    read_cursor(d.path()).is_ok_and(|(s, _)| s == 100)
                })
                .await;
            }
            let c = d.path().join("cursor");
            if damage == "flip" {
                flip(&c, 3);
            } else {
                OpenOptions::new()
                    .write(true)
                    .open(&c)
                    .unwrap()
                    .set_len(7)
                    .unwrap();
            }
            let oldest = segment_files(d.path())[0].clone();
            let (first, _) =
                segment::parse_name(&oldest.file_name().unwrap().to_string_lossy()).unwrap();
            assert!(first <= 100);
            let (a, mut r, stats) =
                open(opts(d.path(), 1 << 30, Overflow::RejectNew, 2048)).unwrap();
            let got = drain_all(&mut r, &stats, 300).await;
            assert_eq!(got.first().unwrap().seq, first, "{damage}");
            assert_eq!(got.last().unwrap().seq, 200, "{damage}");
            assert_eq!(stats.corrupt.load(Ordering::SeqCst), 0);
            stop(a, &mut r).await;
        }
    }

    /// Issue 14 item 3: a record the reader would refuse is refused by the caller before the spool.
    #[test]
    fn the_largest_record_the_writer_may_take_is_one_the_reader_reads() {
        let m = Incoming {
            rule: 0,
            topic: "t".into(),
            payload: Bytes::from(vec![7u8; MAX_RECORD - 1]),
            edge_id: 65_535,
        };
        let mut buf = Vec::new();
        segment::encode(&mut buf, 1, 0, &m);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(segment::name(1, 0));
        fs::write(&p, &buf).unwrap();
        let scan = segment::scan(&p, 1).unwrap();
        assert_eq!((scan.last_seq, scan.tail), (1, segment::Tail::Clean));
        buf.clear();
        let over = Incoming {
            payload: Bytes::from(vec![7u8; MAX_RECORD]),
            ..m
        };
        segment::encode(&mut buf, 1, 0, &over);
        fs::write(&p, &buf).unwrap();
        assert_eq!(
            segment::scan(&p, 1).unwrap().last_seq,
            0,
            "one byte more is refused"
        );
    }

    /// Issue 14 item 7: DropOldest under continuous overflow while the forwarder replays and acknowledges.
    /// Before: the replayer could look a record up in a segment just dropped ("spool record N not found")
    /// and stop. Now it runs through, and what arrived plus what was counted as dropped is everything,
    /// each record once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_oldest_under_overflow_while_forwarding_never_fails_and_counts_exactly() {
        const TOTAL: u64 = 60_000;
        let d = tempfile::tempdir().unwrap();
        let (mut a, mut r, stats) =
            open(opts(d.path(), 32 * 1024, Overflow::DropOldest, 4096)).unwrap();
        let writer = tokio::spawn(async move {
            // Written 1,000 at a time (as the bridge writes what the edge delivered meanwhile): more
            // than the spool holds, so every write overflows it while records are in flight.
            for i in 0..TOTAL {
                a.push(msg(i)).await.unwrap();
                if i % 1000 == 999 {
                    a.flush().await.unwrap();
                }
            }
            a.flush().await.unwrap();
            a
        });
        let mut seen = vec![false; TOTAL as usize + 1];
        let mut delivered = 0u64;
        let mut in_flight: VecDeque<Record> = VecDeque::new();
        let mut handed = 0u64;
        loop {
            let written = stats.written_seq.load(Ordering::SeqCst);
            let more = written < TOTAL || written > handed.max(r.acked_seq());
            if !more && in_flight.is_empty() {
                break;
            }
            if more {
                let b = tokio::time::timeout(Duration::from_secs(30), r.next_batch(64))
                    .await
                    .expect("the replayer stalled")
                    .unwrap();
                // As the forwarder does: what DropOldest passed meanwhile is not sent.
                let acked = r.acked_seq();
                handed = handed.max(b.last().map_or(0, |x| x.seq));
                let (send, passed): (Vec<_>, Vec<_>) = b.into_iter().partition(|x| x.seq > acked);
                r.unsent(passed.len() as u64);
                in_flight.extend(send);
            }
            // Acknowledge half of what is in flight: the rest stays in flight across the drops.
            let n = in_flight.len().div_ceil(2);
            let mut last = None;
            for rec in in_flight.drain(..n) {
                assert!(
                    !seen[rec.seq as usize],
                    "record {} delivered twice",
                    rec.seq
                );
                seen[rec.seq as usize] = true;
                delivered += 1;
                last = Some(rec);
            }
            if let Some(l) = last {
                r.ack(&l, n as u64, None);
            }
        }
        let _a = writer.await.unwrap();
        let dropped = stats.dropped.load(Ordering::SeqCst);
        assert!(dropped > 0, "the spool never overflowed");
        assert_eq!(
            delivered + dropped,
            TOTAL,
            "delivered {delivered}, dropped {dropped}"
        );
        assert_eq!(stats.forwarded.load(Ordering::SeqCst), delivered);
        assert_eq!(stats.corrupt.load(Ordering::SeqCst), 0);
    }

    /// Where each record of a closed spool lies: (file, start offset, end offset) by sequence number.
    fn layout(dir: &Path) -> std::collections::BTreeMap<u64, (std::path::PathBuf, u64, u64)> {
        let mut out = std::collections::BTreeMap::new();
        for p in segment_files(dir) {
            let mut r = segment::SegReader::new(fs::File::open(&p).unwrap(), 0);
            loop {
                let at = r.offset();
                match r.next().unwrap() {
                    segment::Step::Record(rec) => {
                        out.insert(rec.seq, (p.clone(), at, r.offset()));
                    }
                    _ => break,
                }
            }
        }
        out
    }

    /// Drops the appender and waits until the syncer thread has stopped (its final cursor written; the
    /// replayer errs once both are gone and everything was handed out), so that the test's directory can
    /// go: a cursor written while `TempDir` removes the directory would leave it behind in /tmp.
    async fn stop(a: Appender, r: &mut Replayer) {
        drop(a);
        while r.next_batch(1000).await.is_ok() {}
    }

    /// One damage done to a segment file: `(which segment, where (per mille of its length), truncate)`.
    type Damage = (usize, u16, bool);

    /// A spool of `n` records in segments of `seg` bytes, the first `acked` acknowledged by the cloud,
    /// then `damage` done to its segment files; reopened, it must hand out every record that is above
    /// the acknowledged ones and still intact (no byte of its frame changed or cut off), each with its
    /// content, and never fail.
    fn recovery_keeps_every_intact_record(n: u64, seg: u64, acked: u64, damage: &[Damage]) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let d = tempfile::tempdir().unwrap();
            {
                let (mut a, mut r, _s) =
                    open(opts(d.path(), 1 << 30, Overflow::RejectNew, seg)).unwrap();
                fill(&mut a, 0, n).await;
                if acked > 0 {
                    // Everything is written: one batch of exactly `acked`.
                    let b = r.next_batch(acked as usize).await.unwrap();
                    assert_eq!(b.len() as u64, acked);
                    r.ack(b.last().unwrap(), acked, None);
                }
                drop(a);
                // The syncer thread ends after its final cursor and housekeeping: the replayer learns
                // it once it handed out everything.
                while r.next_batch(1000).await.is_ok() {}
            }
            let before = layout(d.path());
            let files = segment_files(d.path());
            let mut damaged = std::collections::BTreeSet::new();
            for &(which, where_, truncate) in damage {
                if files.is_empty() {
                    break;
                }
                let f = &files[which % files.len()];
                let len = fs::metadata(f).unwrap().len();
                if len == 0 {
                    continue;
                }
                let at = (len * u64::from(where_) / 1000).min(len - 1);
                if truncate {
                    OpenOptions::new()
                        .write(true)
                        .open(f)
                        .unwrap()
                        .set_len(at)
                        .unwrap();
                } else {
                    flip(f, at);
                }
                for (seq, (p, start, end)) in &before {
                    let hit = if truncate {
                        *end > at
                    } else {
                        (*start..*end).contains(&at)
                    };
                    if p == f && hit {
                        damaged.insert(*seq);
                    }
                }
            }
            let (a, mut r, stats) = open(opts(d.path(), 1 << 30, Overflow::RejectNew, seg))
                .expect("a damaged spool opens");
            let got = drain_all(&mut r, &stats, n as usize).await;
            stop(a, &mut r).await;
            let mut seen = std::collections::BTreeSet::new();
            for rec in &got {
                assert_eq!(
                    rec.payload,
                    msg(rec.seq - 1).payload,
                    "record {} content",
                    rec.seq
                );
                assert_eq!(rec.topic, msg(rec.seq - 1).topic);
                seen.insert(rec.seq);
            }
            let lost: Vec<u64> = (acked + 1..=n)
                .filter(|s| !damaged.contains(s) && !seen.contains(s))
                .collect();
            assert!(
                lost.is_empty(),
                "intact records lost: {lost:?} (damage {damage:?}, damaged {damaged:?})"
            );
            assert_eq!(stats.messages(), 0, "everything acknowledged or counted");
        });
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Issue 14: spool recovery over random truncation and corruption of random segments loses no
        /// record that was acknowledged to the edge and is intact.
        #[test]
        fn spool_recovery_loses_no_intact_record(
            n in 1u64..400,
            seg in 512u64..8192,
            acked_part in 0u64..100,
            damage in proptest::collection::vec((0usize..64, 0u16..1000, proptest::bool::ANY), 1..5),
        ) {
            recovery_keeps_every_intact_record(n, seg, n * acked_part / 100, &damage);
        }
    }

    #[test]
    fn recovery_keeps_every_intact_record_after_damage_at_segment_edges() {
        // The first byte of a middle segment, the last byte of the last one, a cut right after a frame.
        recovery_keeps_every_intact_record(300, 1024, 0, &[(1, 0, false)]);
        recovery_keeps_every_intact_record(300, 1024, 0, &[(63, 999, false)]);
        recovery_keeps_every_intact_record(300, 1024, 100, &[(2, 500, true), (3, 10, false)]);
    }
}
