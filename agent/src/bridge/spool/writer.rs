//! The writing end: [`Appender`] (queues records, RejectNew back-pressure, `durable`) and the writer thread
//! that owns the active segment — one `write` per batch, segment roll, DropOldest, cursor and deletion of
//! acknowledged segments.
//!
//! The writer is a thread of its own, not a task: its file operations block (a `write`, a segment roll's
//! fsync, the cursor's write-fsync-rename, unlinking), and `tokio::task::block_in_place` around each of
//! them hands the runtime's worker to another thread and back — two thread hand-offs per round, which at
//! a few thousand messages a second (one message per round) cost more than the write itself
//! (docs/bridge-profile.md). The appender hands records over through a plain channel; the writer wakes
//! only when it was idle.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Instant;

use edgewire_api::v1alpha1::Overflow;
use tokio::sync::watch;

use super::syncer::Syncer;
use super::{CURSOR_EVERY, FRAME_HEADER, Incoming, Record, SegMeta, Shared, cursor, segment};

/// The writing end, owned by the one task that reads the edge.
pub struct Appender {
    tx: Sender<(u64, Incoming)>,
    next_seq: u64,
    queued_pos: u64,
    durable: watch::Receiver<u64>,
    shared: Arc<Shared>,
}

impl Appender {
    pub(super) fn new(
        tx: Sender<(u64, Incoming)>,
        next_seq: u64,
        queued_pos: u64,
        durable: watch::Receiver<u64>,
        shared: Arc<Shared>,
    ) -> Self {
        Appender {
            tx,
            next_seq,
            queued_pos,
            durable,
            shared,
        }
    }

    /// With `RejectNew`: waits until a record of `len` payload+topic bytes fits under `max_bytes`. With
    /// `DropOldest` it returns at once (the writer makes room).
    pub async fn reserve(&self, len: usize) {
        if self.shared.overflow != Overflow::RejectNew {
            return;
        }
        let need = (len + FRAME_HEADER + segment::BODY_FIXED) as u64;
        loop {
            let freed = self.shared.freed.notified();
            let acked = self.shared.acked().1;
            if self.queued_pos.saturating_sub(acked) + need <= self.shared.max_bytes
                || self.queued_pos == acked
            {
                return;
            }
            freed.await;
        }
    }

    /// Queues a record; returns its sequence number. It is on disk once [`Appender::durable`] reaches it.
    /// Waits while more than [`QUEUE_BYTES`] are queued and not yet written (the writer is behind or the
    /// disk is full): what waits in memory is bounded in bytes (the channel itself is unbounded).
    pub async fn append(&mut self, msg: Incoming) -> io::Result<u64> {
        let seq = self.next_seq;
        let len = segment::frame_len(&msg) as u64;
        loop {
            let wrote = self.shared.wrote.notified();
            let written = self.shared.stats.written_pos.load(Ordering::SeqCst);
            if self.queued_pos.saturating_sub(written) <= QUEUE_BYTES {
                break;
            }
            wrote.await;
        }
        self.tx
            .send((seq, msg))
            .map_err(|_| io::Error::other("the spool writer stopped"))?;
        self.next_seq += 1;
        self.queued_pos += len;
        Ok(seq)
    }

    /// A receiver of the highest sequence number on stable storage.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }
}

/// Bytes queued for the writer at most (beyond one message).
pub const QUEUE_BYTES: u64 = 2 * 1024 * 1024;

/// The write buffer is written out at this size (one `write` per batch up to it).
const BUF_BYTES: usize = 1024 * 1024;

/// The writer's retry curve while the disk refuses writes (full): back within 2 s of space returning.
const WRITE_RETRY: crate::retry::Policy = crate::retry::Policy::new(
    std::time::Duration::from_millis(100),
    std::time::Duration::from_secs(2),
);

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(super) struct Writer {
    shared: Arc<Shared>,
    /// Shared with the syncer (an `Arc`, not a `dup` of the descriptor per round).
    active: Arc<File>,
    active_first: u64,
    active_len: u64,
    pos: u64,
    segment_bytes: u64,
    buf: Vec<u8>,
    last_cursor: (u64, u64),
    last_cursor_at: Instant,
    /// The last sequence number written (to the page cache) and published as `written`.
    last_written: u64,
    published: u64,
    /// Spool position and timestamp at the start of the last `write_batch` (for the records it hands to
    /// the tail).
    batch_pos: u64,
    batch_ts: u64,
}

impl Writer {
    /// A writer appending from `first_seq` at byte position `pos` to a new segment; `cursor` is the
    /// persisted ack cursor.
    pub(super) fn new(
        shared: Arc<Shared>,
        first_seq: u64,
        pos: u64,
        segment_bytes: u64,
        cursor: (u64, u64),
    ) -> io::Result<Self> {
        let active = Arc::new(Self::new_segment(&shared, first_seq, pos)?);
        Ok(Writer {
            shared,
            active,
            active_first: first_seq,
            active_len: 0,
            pos,
            segment_bytes,
            buf: Vec::with_capacity(BUF_BYTES),
            last_cursor: cursor,
            last_cursor_at: Instant::now(),
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
        Ok(f)
    }

    /// The writer thread's loop: until the appender is gone (or an fsync failed).
    pub(super) fn run(
        mut self,
        rx: Receiver<(u64, Incoming)>,
        written: watch::Sender<u64>,
        syncer: Arc<Syncer>,
    ) {
        let mut batch: Vec<(u64, Incoming)> = Vec::with_capacity(4096);
        let mut retry = WRITE_RETRY.backoff();
        let mut housekeeping_failed = false;
        loop {
            if syncer.failed.load(Ordering::SeqCst) {
                // The syncer logged the error: after a failed fsync the kernel may have dropped the
                // data, so nothing written since the last good one can be trusted. Appending fails from
                // now on, the bridge exits, and the edge redelivers everything it was not acknowledged.
                return;
            }
            // While a batch waits for the disk, nothing more is taken: the queue fills, the appender
            // waits, and the edge is not acknowledged (back-pressure).
            if batch.is_empty() {
                match rx.recv_timeout(CURSOR_EVERY) {
                    Ok(m) => batch.push(m),
                    Err(RecvTimeoutError::Disconnected) => {
                        // Appender gone: final cursor and stop (the syncer finishes its last sync).
                        if let Err(e) = self.housekeeping(true) {
                            tracing::warn!(error = %e, "spool: cannot write the final cursor");
                        }
                        syncer.stop();
                        return;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                }
                while batch.len() < 65536 {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
            }
            let result = if batch.is_empty() {
                Ok(())
            } else {
                self.write_batch(&batch)
            };
            // What got written goes to the tail before it is published, so that the replayer woken
            // by `written` finds it there.
            let done = batch.partition_point(|(seq, _)| *seq <= self.last_written);
            self.keep_in_tail(batch.drain(..done));
            // What got written is published even when the rest failed.
            if self.last_written > self.published {
                self.published = self.last_written;
                let _ = written.send(self.last_written);
                self.shared.wrote.notify_waiters();
                // Everything before the active segment was synced when it was closed (`roll`).
                syncer.request(self.active.clone(), self.last_written);
            }
            match self.housekeeping(false) {
                // Deleting acknowledged segments is what frees the disk: try again next round.
                Err(e) if !housekeeping_failed => {
                    housekeeping_failed = true;
                    tracing::warn!(error = %e, "spool: cursor or segment deletion failed; retrying");
                }
                Err(_) => {}
                Ok(()) => housekeeping_failed = false,
            }
            match result {
                Ok(()) => {
                    batch.clear();
                    if self.shared.stats.set_write_error(None) {
                        tracing::info!("spool: writing again");
                    }
                    retry.reset();
                }
                Err(e) => {
                    // A full disk (or another refused write): undo the partial write, keep what was not
                    // written, and try again; the edge waits meanwhile.
                    batch.retain(|(seq, _)| *seq > self.last_written);
                    self.undo_partial_write();
                    // Acknowledged records in the active segment can only go once it is closed: close
                    // it, so housekeeping can free its space (a segment as large as the free disk).
                    let acked = self.shared.acked().0;
                    if self.active_len > 0
                        && acked >= self.last_written
                        && let Some((next, _)) = batch.first()
                    {
                        let next = *next;
                        if let Err(e) = self.roll(next) {
                            tracing::debug!(error = %e, "spool: cannot close the full segment yet");
                        }
                    }
                    let why = format!("spool write failed: {e}");
                    if self.shared.stats.set_write_error(Some(why.clone())) {
                        tracing::error!(error = %e, waiting = batch.len(), "spool write failed; the edge is not acknowledged until it succeeds");
                    }
                    std::thread::sleep(retry.next_delay());
                }
            }
        }
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
        self.active_first = first_seq;
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
            if front.first_seq == self.active_first {
                if self.active_len == 0 {
                    return Ok(());
                }
                // Only the active segment left: close it so it can be dropped.
                let next = front.last_seq + 1;
                self.roll(next)?;
                continue;
            }
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
            self.last_cursor = acked;
            self.last_cursor_at = Instant::now();
            self.shared.segments().pop_front();
            fs::remove_file(&front.path)?;
        }
    }

    /// Persists the cursor (at most every CURSOR_EVERY) and deletes fully acknowledged segments.
    fn housekeeping(&mut self, force: bool) -> io::Result<()> {
        let acked = self.shared.acked();
        if acked != self.last_cursor && (force || self.last_cursor_at.elapsed() >= CURSOR_EVERY) {
            cursor::write(&self.shared.dir, acked.0, acked.1)?;
            self.last_cursor = acked;
            self.last_cursor_at = Instant::now();
        }
        // Only segments below the persisted cursor go: a crash must never find records missing that the
        // cursor on disk does not cover.
        loop {
            let front = {
                let segs = self.shared.segments();
                match segs.front() {
                    Some(f)
                        if f.first_seq != self.active_first && f.last_seq <= self.last_cursor.0 =>
                    {
                        f.clone()
                    }
                    _ => break,
                }
            };
            self.shared.segments().pop_front();
            match fs::remove_file(&front.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}
