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

pub(crate) mod crc;
mod segment;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use edgewire_api::v1alpha1::Overflow;
use tokio::sync::{Notify, mpsc, watch};

pub use segment::{FRAME_HEADER, Record, now_ms};

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

/// The writing end, owned by the one task that reads the edge.
pub struct Appender {
    tx: mpsc::Sender<(u64, Incoming)>,
    next_seq: u64,
    queued_pos: u64,
    durable: watch::Receiver<u64>,
    shared: Arc<Shared>,
}

/// The reading end, owned by the forwarder.
pub struct Replayer {
    shared: Arc<Shared>,
    written: watch::Receiver<u64>,
    /// Next sequence number to hand out.
    next_seq: u64,
    reader: Option<segment::SegReader>,
}

/// Opens (and recovers) the spool in `opts.dir` and starts its writer task.
pub fn open(opts: SpoolOptions) -> io::Result<(Appender, Replayer, Arc<Stats>)> {
    fs::create_dir_all(&opts.dir)?;
    let (cursor_seq, cursor_pos) = read_cursor(&opts.dir)?;
    let mut metas = Vec::new();
    for entry in fs::read_dir(&opts.dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((first, base)) = segment::parse_name(name) {
            metas.push(SegMeta {
                first_seq: first,
                base_pos: base,
                path: entry.path(),
                last_seq: first - 1,
                len: 0,
            });
        }
    }
    metas.sort_by_key(|m| m.first_seq);
    let mut segments = VecDeque::new();
    for mut m in metas {
        let (last, valid_len, file_len) = segment::scan(&m.path, m.first_seq)?;
        if valid_len < file_len {
            tracing::warn!(segment = %m.path.display(), valid_len, file_len, "spool: truncating a torn tail");
            let f = OpenOptions::new().write(true).open(&m.path)?;
            f.set_len(valid_len)?;
            f.sync_all()?;
        }
        m.last_seq = last;
        m.len = valid_len;
        if m.last_seq <= cursor_seq {
            fs::remove_file(&m.path)?;
            continue;
        }
        segments.push_back(m);
    }
    // Segments dropped (DropOldest) before the cursor caught up with them.
    let (cursor_seq, cursor_pos) = match segments.front() {
        Some(f) if f.first_seq > cursor_seq + 1 => (f.first_seq - 1, f.base_pos),
        _ => (cursor_seq, cursor_pos),
    };
    let (last_seq, end_pos) = segments
        .back()
        .map(|m| (m.last_seq, m.base_pos + m.len))
        .unwrap_or((0, 0));
    // The cursor may be ahead of what reached the disk (forwarded before the fsync, then a crash).
    let written_seq = last_seq.max(cursor_seq);
    let written_pos = end_pos.max(cursor_pos);
    let stats = Arc::new(Stats::default());
    stats.written_seq.store(written_seq, Ordering::SeqCst);
    stats.written_pos.store(written_pos, Ordering::SeqCst);
    stats.acked_seq.store(cursor_seq, Ordering::SeqCst);
    stats.acked_pos.store(cursor_pos, Ordering::SeqCst);
    let shared = Arc::new(Shared {
        dir: opts.dir.clone(),
        stats: stats.clone(),
        segments: Mutex::new(segments),
        acked: Mutex::new((cursor_seq, cursor_pos)),
        freed: Notify::new(),
        max_bytes: opts.max_bytes,
        overflow: opts.overflow,
    });
    let active = Writer::new_segment(&shared, written_seq + 1, written_pos)?;
    let (tx, rx) = mpsc::channel(16 * 1024);
    let (durable_tx, durable_rx) = watch::channel(written_seq);
    let (written_tx, written_rx) = watch::channel(written_seq);
    let writer = Writer {
        shared: shared.clone(),
        active,
        active_first: written_seq + 1,
        active_len: 0,
        pos: written_pos,
        segment_bytes: opts.segment_size(),
        buf: Vec::with_capacity(1 << 20),
        last_cursor: (cursor_seq, cursor_pos),
        last_cursor_at: Instant::now(),
    };
    let syncer = Arc::new(Syncer {
        state: Mutex::new(SyncState {
            file: None,
            written: written_seq,
            synced: written_seq,
            stop: false,
        }),
        wake: Condvar::new(),
        failed: AtomicBool::new(false),
    });
    {
        let syncer = syncer.clone();
        let stats = stats.clone();
        std::thread::Builder::new()
            .name("spool-sync".into())
            .spawn(move || syncer.run(&durable_tx, &stats))?;
    }
    tokio::spawn(writer.run(rx, written_tx, syncer));
    Ok((
        Appender {
            tx,
            next_seq: written_seq + 1,
            queued_pos: written_pos,
            durable: durable_rx,
            shared: shared.clone(),
        },
        Replayer {
            shared,
            written: written_rx,
            next_seq: cursor_seq + 1,
            reader: None,
        },
        stats,
    ))
}

fn read_cursor(dir: &Path) -> io::Result<(u64, u64)> {
    match fs::read(dir.join("cursor")) {
        Ok(b) if b.len() == 20 => {
            let crc = u32::from_le_bytes(b[16..20].try_into().unwrap_or_default());
            if crc::crc32(&b[..16]) != crc {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "spool cursor file is corrupt",
                ));
            }
            let seq = u64::from_le_bytes(b[0..8].try_into().unwrap_or_default());
            let pos = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
            Ok((seq, pos))
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "spool cursor file has the wrong size",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((0, 0)),
        Err(e) => Err(e),
    }
}

fn write_cursor(dir: &Path, seq: u64, pos: u64) -> io::Result<()> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&pos.to_le_bytes());
    b.extend_from_slice(&crc::crc32(&b).to_le_bytes());
    let tmp = dir.join("cursor.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&b)?;
    f.sync_data()?;
    fs::rename(&tmp, dir.join("cursor"))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Appender {
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
    pub async fn append(&mut self, msg: Incoming) -> io::Result<u64> {
        let seq = self.next_seq;
        let len = segment::frame_len(&msg) as u64;
        self.tx
            .send((seq, msg))
            .await
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

/// What the syncer thread is asked to make durable.
struct SyncState {
    /// The active segment as of the last write (a duplicate of the writer's handle).
    file: Option<File>,
    /// Last sequence number written to `file` (and everything before it).
    written: u64,
    /// Last sequence number made durable.
    synced: u64,
    stop: bool,
}

/// Runs `fdatasync` beside the writer, so that writing (and forwarding) never waits for the disk.
struct Syncer {
    state: Mutex<SyncState>,
    wake: Condvar,
    /// A sync failed: the writer stops.
    failed: AtomicBool,
}

impl Syncer {
    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn request(&self, file: File, written: u64) {
        let mut s = self.lock();
        s.file = Some(file);
        s.written = written;
        drop(s);
        self.wake.notify_one();
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_one();
    }

    fn run(&self, durable: &watch::Sender<u64>, stats: &Stats) {
        loop {
            let (file, upto) = {
                let mut s = self.lock();
                while s.written <= s.synced && !s.stop {
                    s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                if s.written <= s.synced {
                    return;
                }
                match s.file.take() {
                    Some(f) => (f, s.written),
                    None => return,
                }
            };
            if let Err(e) = file.sync_data() {
                tracing::error!(error = %e, "spool fsync failed");
                eprintln!("edgewire-agent: spool fsync failed: {e}");
                self.failed.store(true, Ordering::SeqCst);
                return;
            }
            stats.commits.fetch_add(1, Ordering::Relaxed);
            {
                let mut s = self.lock();
                s.synced = s.synced.max(upto);
            }
            let _ = durable.send(upto);
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    active: File,
    active_first: u64,
    active_len: u64,
    pos: u64,
    segment_bytes: u64,
    buf: Vec<u8>,
    last_cursor: (u64, u64),
    last_cursor_at: Instant,
}

impl Writer {
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

    async fn run(
        mut self,
        mut rx: mpsc::Receiver<(u64, Incoming)>,
        written: watch::Sender<u64>,
        syncer: Arc<Syncer>,
    ) {
        let mut batch: Vec<(u64, Incoming)> = Vec::with_capacity(4096);
        loop {
            let got = tokio::time::timeout(CURSOR_EVERY, rx.recv()).await;
            if syncer.failed.load(Ordering::SeqCst) {
                // The syncer logged the error. Appending fails from now on, the bridge exits, and the
                // edge redelivers everything it was not acknowledged.
                return;
            }
            match got {
                Ok(Some(m)) => batch.push(m),
                Ok(None) => {
                    // Appender gone: final cursor and stop (the syncer finishes its last sync).
                    let _ = tokio::task::block_in_place(|| self.housekeeping(true));
                    syncer.stop();
                    return;
                }
                Err(_) => {}
            }
            while batch.len() < 65536 {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let result = tokio::task::block_in_place(|| -> io::Result<()> {
                if !batch.is_empty() {
                    let last = self.write_batch(&batch, &written)?;
                    // Everything before the active segment was synced when it was closed (`roll`).
                    syncer.request(self.active.try_clone()?, last);
                }
                self.housekeeping(false)
            });
            batch.clear();
            if let Err(e) = result {
                // A disk error is not recoverable in place: stop. Appending fails from now on, the
                // bridge exits, and the edge redelivers everything it was not acknowledged.
                tracing::error!(error = %e, "spool write failed");
                eprintln!("edgewire-agent: spool write failed: {e}");
                syncer.stop();
                return;
            }
        }
    }

    fn write_batch(
        &mut self,
        batch: &[(u64, Incoming)],
        written: &watch::Sender<u64>,
    ) -> io::Result<u64> {
        let mut last = 0;
        self.buf.clear();
        let now = segment::now_ms();
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
        }
        self.flush_buf(last)?;
        let _ = written.send(last);
        Ok(last)
    }

    fn flush_buf(&mut self, last: u64) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.active.write_all(&self.buf)?;
        let n = self.buf.len() as u64;
        self.buf.clear();
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
        self.active = Self::new_segment(&self.shared, first_seq, self.pos)?;
        self.active_first = first_seq;
        self.active_len = 0;
        Ok(())
    }

    /// DropOldest: discard whole oldest segments until `incoming` more bytes fit.
    fn make_room(&mut self, incoming: u64) -> io::Result<()> {
        loop {
            let (acked_seq, acked_pos) = self.shared.acked();
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
            let lost = front
                .last_seq
                .saturating_sub(acked_seq.max(front.first_seq - 1));
            if self
                .shared
                .advance(front.last_seq, front.base_pos + front.len)
                && lost > 0
            {
                self.shared.stats.dropped.fetch_add(lost, Ordering::SeqCst);
                tracing::warn!(
                    dropped = lost,
                    first_seq = front.first_seq,
                    last_seq = front.last_seq,
                    "spool full (overflow DropOldest): dropped the oldest messages"
                );
            }
            self.shared.segments().pop_front();
            fs::remove_file(&front.path)?;
        }
    }

    /// Persists the cursor (at most every CURSOR_EVERY) and deletes fully acknowledged segments.
    fn housekeeping(&mut self, force: bool) -> io::Result<()> {
        let acked = self.shared.acked();
        if acked != self.last_cursor && (force || self.last_cursor_at.elapsed() >= CURSOR_EVERY) {
            write_cursor(&self.shared.dir, acked.0, acked.1)?;
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
            fs::remove_file(&front.path)?;
        }
        Ok(())
    }
}

impl Replayer {
    /// Waits for records after the last one handed out and returns up to `max` of them, oldest first.
    pub async fn next_batch(&mut self, max: usize) -> io::Result<Vec<Record>> {
        loop {
            let acked = self.shared.acked().0;
            if acked >= self.next_seq {
                // Dropped (DropOldest) while we were behind.
                self.next_seq = acked + 1;
                self.reader = None;
            }
            let written = *self.written.borrow_and_update();
            if written >= self.next_seq {
                let upto = written.min(self.next_seq + max as u64 - 1);
                let out = tokio::task::block_in_place(|| self.read_until(upto))?;
                if let Some(first) = out.first() {
                    let _ = self.shared.stats.oldest_ms.compare_exchange(
                        0,
                        first.ts_ms,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
                return Ok(out);
            }
            if self.written.changed().await.is_err() {
                return Err(io::Error::other("the spool writer stopped"));
            }
        }
    }

    fn read_until(&mut self, upto: u64) -> io::Result<Vec<Record>> {
        let mut out = Vec::with_capacity((upto + 1 - self.next_seq) as usize);
        while self.next_seq <= upto {
            if self.reader.is_none() {
                self.seek(self.next_seq)?;
            }
            let Some(r) = self.reader.as_mut() else {
                return Err(io::Error::other(format!(
                    "spool record {} not found",
                    self.next_seq
                )));
            };
            match segment::read_record(r)? {
                Some(rec) if rec.seq == self.next_seq => {
                    self.next_seq += 1;
                    out.push(rec);
                }
                Some(rec) if rec.seq < self.next_seq => continue,
                Some(rec) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "spool gap: expected record {}, found {}",
                            self.next_seq, rec.seq
                        ),
                    ));
                }
                None => {
                    // End of this segment: the next record is in the next one.
                    self.reader = None;
                    self.seek(self.next_seq)?;
                    if self.reader.is_none() {
                        return Err(io::Error::other(format!(
                            "spool record {} not found",
                            self.next_seq
                        )));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Opens the segment holding `seq`, positioned at its start (records before `seq` are skipped by
    /// the caller).
    fn seek(&mut self, seq: u64) -> io::Result<()> {
        let seg = {
            let segs = self.shared.segments();
            segs.iter()
                .rev()
                .find(|m| m.first_seq <= seq && m.last_seq >= seq)
                .cloned()
        };
        self.reader = match seg {
            Some(m) => {
                let f = File::open(&m.path)?;
                Some(segment::SegReader::new(f, m.base_pos))
            }
            None => None,
        };
        Ok(())
    }

    /// The cloud acknowledged every record up to `rec` (inclusive).
    pub fn ack(&mut self, rec: &Record, count: u64, next_oldest_ms: Option<u64>) {
        if self.shared.advance(rec.seq, rec.end_pos) {
            self.shared
                .stats
                .forwarded
                .fetch_add(count, Ordering::SeqCst);
        }
        self.shared
            .stats
            .oldest_ms
            .store(next_oldest_ms.unwrap_or(0), Ordering::SeqCst);
    }

    /// Every record up to this sequence number is acknowledged or dropped.
    pub fn acked_seq(&self) -> u64 {
        self.shared.acked().0
    }

    /// Forwarding failed: hand out everything after the last acknowledged record again.
    pub fn rewind(&mut self) {
        self.next_seq = self.shared.acked().0 + 1;
        self.reader = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                read_cursor(d.path()).is_ok_and(|(seq, _)| seq == 400)
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
