//! The writing end: [`Appender`], which writes the records itself, on the task that reads the edge —
//! one `write` per batch, segment roll, DropOldest — and hands them to the syncer thread for the
//! `fdatasync` that makes them `durable`; and [`housekeeping`] (cursor, deletion of acknowledged
//! segments), which the syncer thread runs.
//!
//! There is no writer thread. A `write` of a batch to the page cache takes microseconds, less than
//! waking another thread to do it: with a writer thread every batch crossed two threads before it could be
//! forwarded (the task reading the edge → the writer → the forwarder), and on this kind of VM the
//! sleeping and waking was a quarter of the bridge's CPU (docs/bridge-profile.md). What can block for long
//! stays off the task: the `fdatasync` before every edge acknowledgement, the cursor's
//! write-fsync-rename and the unlinking of acknowledged segments run on the syncer thread. A segment roll's
//! fsync (once per segment) and DropOldest's discarding (only when the spool is full) run inline.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use edgewire_api::v1alpha1::Overflow;
use tokio::sync::watch;

use super::syncer::Syncer;
use super::{CURSOR_EVERY, FRAME_HEADER, Incoming, Record, SegMeta, Shared, cursor, segment};

/// The writing end, owned by the one task that reads the edge. [`Appender::push`] queues a record and
/// [`Appender::flush`] writes what is queued with one `write`; [`Appender::append`] does both.
pub struct Appender {
    file: ActiveSegment,
    /// Queued by `push`, not yet written: (sequence number, record).
    queued: Vec<(u64, Incoming)>,
    /// Topic and payload bytes in `queued`.
    queued_bytes: usize,
    next_seq: u64,
    /// Spool position after the last record queued.
    queued_pos: u64,
    durable: watch::Receiver<u64>,
    /// Shared with the syncer thread: replayers learn that the spool stopped once both are gone (the
    /// syncer's final cursor written).
    written: Arc<watch::Sender<u64>>,
    syncer: Arc<Syncer>,
    shared: Arc<Shared>,
}

/// Queued topic and payload bytes that make `push` write at once.
const BUF_BYTES: usize = 1024 * 1024;

/// The retry curve while the disk refuses writes (full): back within 2 s of space returning.
const WRITE_RETRY: crate::retry::Policy = crate::retry::Policy::new(
    std::time::Duration::from_millis(100),
    std::time::Duration::from_secs(2),
);

impl Appender {
    pub(super) fn new(
        file: ActiveSegment,
        durable: watch::Receiver<u64>,
        written: Arc<watch::Sender<u64>>,
        syncer: Arc<Syncer>,
        shared: Arc<Shared>,
    ) -> Self {
        Appender {
            next_seq: file.last_written + 1,
            queued_pos: file.pos,
            file,
            queued: Vec::with_capacity(256),
            queued_bytes: 0,
            durable,
            written,
            syncer,
            shared,
        }
    }

    /// With `RejectNew`: waits until a record of `len` payload+topic bytes fits under `max_bytes`,
    /// writing what is queued first when it must wait (the cloud cannot acknowledge what is not written).
    /// With `DropOldest` it returns at once (writing makes room).
    pub async fn reserve(&mut self, len: usize) -> io::Result<()> {
        if self.shared.overflow != Overflow::RejectNew {
            return Ok(());
        }
        let need = (len + FRAME_HEADER + segment::BODY_FIXED) as u64;
        let shared = self.shared.clone();
        loop {
            let freed = shared.freed.notified();
            let acked = shared.acked().1;
            if self.queued_pos.saturating_sub(acked) + need <= shared.max_bytes
                || self.queued_pos == acked
            {
                return Ok(());
            }
            if !self.queued.is_empty() {
                self.flush().await?;
                continue;
            }
            freed.await;
        }
    }

    /// Queues a record and returns its sequence number; it is written by the next [`Appender::flush`]
    /// (at once when a megabyte is queued), and on disk once [`Appender::durable`] reaches it.
    pub async fn push(&mut self, msg: Incoming) -> io::Result<u64> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queued_pos += segment::frame_len(&msg) as u64;
        self.queued_bytes += msg.topic.len() + msg.payload.len();
        self.queued.push((seq, msg));
        if self.queued_bytes >= BUF_BYTES {
            self.flush().await?;
        }
        Ok(seq)
    }

    /// Queues a record and writes it: [`Appender::push`] and [`Appender::flush`].
    pub async fn append(&mut self, msg: Incoming) -> io::Result<u64> {
        let seq = self.push(msg).await?;
        self.flush().await?;
        Ok(seq)
    }

    /// Writes everything queued (one `write`), hands it to the replayer and to the syncer. While the
    /// disk refuses the write (full) it retries with backoff, and the caller, the edge's reader, waits:
    /// the edge is not read and not acknowledged meanwhile (back-pressure). Fails only once an fsync
    /// failed: after that the kernel may have dropped the data, so nothing written since the last good
    /// one can be trusted; the bridge exits and the edge redelivers everything not acknowledged.
    pub async fn flush(&mut self) -> io::Result<()> {
        let mut retry = WRITE_RETRY.backoff();
        while !self.queued.is_empty() {
            if self.syncer.failed.load(Ordering::SeqCst) {
                return Err(io::Error::other("the spool's fsync failed"));
            }
            let result = self.file.write_batch(&self.queued);
            // What got written goes to the tail before it is published, so that the replayer woken by
            // `written` finds it there; what got written is published even when the rest failed.
            let done = self
                .queued
                .partition_point(|(seq, _)| *seq <= self.file.last_written);
            self.file.keep_in_tail(self.queued.drain(..done));
            self.publish();
            match result {
                Ok(()) => {
                    self.queued.clear();
                    self.queued_bytes = 0;
                    if self.shared.stats.set_write_error(None) {
                        tracing::info!("spool: writing again");
                    }
                }
                Err(e) => {
                    self.queued_bytes = self
                        .queued
                        .iter()
                        .map(|(_, m)| m.topic.len() + m.payload.len())
                        .sum();
                    self.file.undo_partial_write();
                    // Acknowledged records in the active segment can only go once it is closed: close
                    // it, so housekeeping can free its space (a segment as large as the free disk).
                    let acked = self.shared.acked().0;
                    if self.file.active_len > 0
                        && acked >= self.file.last_written
                        && let Some((next, _)) = self.queued.first()
                    {
                        let next = *next;
                        if let Err(e) = self.file.roll(next) {
                            tracing::debug!(error = %e, "spool: cannot close the full segment yet");
                        }
                    }
                    let why = format!("spool write failed: {e}");
                    if self.shared.stats.set_write_error(Some(why)) {
                        tracing::error!(error = %e, waiting = self.queued.len(), "spool write failed; the edge is not acknowledged until it succeeds");
                    }
                    tokio::time::sleep(retry.next_delay()).await;
                }
            }
        }
        Ok(())
    }

    /// Publishes what was written: to the replayer (`written`) and to the syncer.
    fn publish(&mut self) {
        let f = &mut self.file;
        if f.last_written > f.published {
            f.published = f.last_written;
            let _ = self.written.send(f.last_written);
            // Everything before the active segment was synced when it was closed (`roll`).
            self.syncer.request(f.active.clone(), f.last_written);
        }
    }

    /// The sequence number of the last record pushed (of the last one recovered before any was pushed;
    /// 0 for a new spool). Once [`Appender::durable`] reaches it, everything pushed so far is on disk.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// A receiver of the highest sequence number on stable storage.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }
}

impl Drop for Appender {
    /// The syncer makes the last records written durable, writes the final cursor and stops. Records
    /// still queued were never written nor acknowledged: the edge sends them again.
    fn drop(&mut self) {
        self.syncer.stop();
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The active segment and where writing stands.
pub(super) struct ActiveSegment {
    shared: Arc<Shared>,
    /// Shared with the syncer (an `Arc`, not a `dup` of the descriptor per round).
    active: Arc<File>,
    active_len: u64,
    pos: u64,
    segment_bytes: u64,
    buf: Vec<u8>,
    /// The last sequence number written (to the page cache) and published as `written`.
    last_written: u64,
    published: u64,
    /// Spool position and timestamp at the start of the last `write_batch` (for the records it hands to
    /// the tail).
    batch_pos: u64,
    batch_ts: u64,
}

impl ActiveSegment {
    /// A new segment for appending from `first_seq` at byte position `pos`.
    pub(super) fn new(
        shared: Arc<Shared>,
        first_seq: u64,
        pos: u64,
        segment_bytes: u64,
    ) -> io::Result<Self> {
        let active = Arc::new(Self::new_segment(&shared, first_seq, pos)?);
        Ok(ActiveSegment {
            shared,
            active,
            active_len: 0,
            pos,
            segment_bytes,
            buf: Vec::with_capacity(BUF_BYTES),
            last_written: first_seq - 1,
            published: first_seq - 1,
            batch_pos: pos,
            batch_ts: 0,
        })
    }

    fn new_segment(shared: &Shared, first_seq: u64, base_pos: u64) -> io::Result<File> {
        let path = shared.dir.join(segment::name(first_seq, base_pos));
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        sync_dir(&shared.dir)?;
        shared.segments().push_back(SegMeta {
            first_seq,
            base_pos,
            path,
            last_seq: first_seq - 1,
            len: 0,
        });
        shared.active_first.store(first_seq, Ordering::SeqCst);
        Ok(f)
    }

    /// After a failed write: the active segment ends at the last whole batch again (the next write goes
    /// there, not after the partial one).
    fn undo_partial_write(&mut self) {
        self.buf.clear();
        let _ = self.active.set_len(self.active_len);
        if let Err(e) = (&*self.active).seek(SeekFrom::Start(self.active_len)) {
            tracing::warn!(error = %e, "spool: cannot reposition the active segment");
        }
    }

    /// Hands records just written (from the start of the last `write_batch`, in order) to the tail, as the
    /// replayer would read them back.
    fn keep_in_tail(&mut self, written: impl Iterator<Item = (u64, Incoming)>) {
        let mut pos = self.batch_pos;
        let mut tail = self.shared.tail();
        for (seq, m) in written {
            pos += segment::frame_len(&m) as u64;
            if m.topic.len() > usize::from(u16::MAX) {
                // Written truncated (never expected: the bridge refuses it first); read it back instead.
                tail.clear();
                continue;
            }
            tail.push(Record {
                seq,
                ts_ms: self.batch_ts,
                edge_id: m.edge_id,
                rule: m.rule,
                topic: m.topic,
                payload: m.payload,
                end_pos: pos,
            });
        }
    }

    fn write_batch(&mut self, batch: &[(u64, Incoming)]) -> io::Result<()> {
        let mut last = 0;
        self.buf.clear();
        let now = segment::now_ms();
        self.batch_pos = self.pos;
        self.batch_ts = now;
        let drop_oldest = self.shared.overflow == Overflow::DropOldest;
        for (seq, m) in batch {
            if drop_oldest {
                let len = segment::frame_len(m) as u64;
                let acked_pos = self.shared.acked().1;
                if (self.pos + self.buf.len() as u64).saturating_sub(acked_pos) + len
                    > self.shared.max_bytes
                {
                    self.flush_buf(last)?;
                    self.make_room(len)?;
                }
            }
            if self.active_len + self.buf.len() as u64 >= self.segment_bytes {
                self.flush_buf(last)?;
                self.roll(*seq)?;
            }
            segment::encode(&mut self.buf, *seq, now, m);
            last = *seq;
            if self.buf.len() >= BUF_BYTES {
                self.flush_buf(last)?;
            }
        }
        self.flush_buf(last)
    }

    fn flush_buf(&mut self, last: u64) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        (&*self.active).write_all(&self.buf)?;
        let n = self.buf.len() as u64;
        self.buf.clear();
        // One huge record must not keep its buffer for good.
        if self.buf.capacity() > 4 * BUF_BYTES {
            self.buf.shrink_to(BUF_BYTES);
        }
        self.last_written = last;
        self.active_len += n;
        self.pos += n;
        if let Some(m) = self.shared.segments().back_mut() {
            m.last_seq = last;
            m.len = self.active_len;
        }
        self.shared
            .stats
            .written_pos
            .store(self.pos, Ordering::SeqCst);
        self.shared.stats.written_seq.store(last, Ordering::SeqCst);
        Ok(())
    }

    fn roll(&mut self, first_seq: u64) -> io::Result<()> {
        self.active.sync_data()?;
        self.active = Arc::new(Self::new_segment(&self.shared, first_seq, self.pos)?);
        self.active_len = 0;
        Ok(())
    }

    /// DropOldest: discard whole oldest segments until `incoming` more bytes fit.
    fn make_room(&mut self, incoming: u64) -> io::Result<()> {
        loop {
            let (_, acked_pos) = self.shared.acked();
            if self.pos.saturating_sub(acked_pos) + incoming <= self.shared.max_bytes {
                return Ok(());
            }
            let front = self.shared.segments().front().cloned();
            let Some(front) = front else { return Ok(()) };
            if front.first_seq == self.shared.active_first.load(Ordering::SeqCst) {
                if self.active_len == 0 {
                    return Ok(());
                }
                // Only the active segment left: close it so it can be dropped.
                let next = front.last_seq + 1;
                self.roll(next)?;
                continue;
            }
            // Housekeeping (the syncer thread) writes the cursor and deletes segments too.
            let mut kept = self.shared.kept();
            let lost = self.shared.drop_through(
                front.last_seq,
                front.base_pos + front.len,
                front.first_seq,
            );
            if lost > 0 {
                tracing::warn!(
                    dropped = lost,
                    first_seq = front.first_seq,
                    last_seq = front.last_seq,
                    "spool full (overflow DropOldest): dropped the oldest messages"
                );
            }
            // The cursor on disk passes the segment before it goes: after a crash, a segment missing
            // below the oldest one left means damage, not a drop.
            let acked = self.shared.acked();
            cursor::write(&self.shared.dir, acked.0, acked.1)?;
            kept.cursor = acked;
            kept.at = Instant::now();
            let gone = {
                let mut segs = self.shared.segments();
                match segs.front() {
                    Some(f) if f.first_seq == front.first_seq => segs.pop_front(),
                    // Housekeeping deleted it meanwhile.
                    _ => None,
                }
            };
            if let Some(gone) = gone {
                match fs::remove_file(&gone.path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
    }
}

/// The cursor as last persisted, and when: kept by whoever writes it (housekeeping on the syncer thread,
/// DropOldest on the edge's task), under one lock that also covers deleting segments.
#[derive(Debug)]
pub(super) struct Kept {
    pub(super) cursor: (u64, u64),
    pub(super) at: Instant,
}

/// Persists the cursor (at most every CURSOR_EVERY, or now with `force`) and deletes fully acknowledged
/// segments. Run by the syncer thread.
pub(super) fn housekeeping(shared: &Shared, force: bool) -> io::Result<()> {
    let mut kept = shared.kept();
    let acked = shared.acked();
    if acked != kept.cursor && (force || kept.at.elapsed() >= CURSOR_EVERY) {
        cursor::write(&shared.dir, acked.0, acked.1)?;
        kept.cursor = acked;
        kept.at = Instant::now();
    }
    // Only segments below the persisted cursor go: a crash must never find records missing that the
    // cursor on disk does not cover. The active segment stays (it is being written).
    loop {
        let front = {
            let mut segs = shared.segments();
            match segs.front() {
                Some(f)
                    if f.first_seq != shared.active_first.load(Ordering::SeqCst)
                        && f.last_seq <= kept.cursor.0 =>
                {
                    segs.pop_front()
                }
                _ => None,
            }
        };
        let Some(front) = front else { break };
        match fs::remove_file(&front.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}
