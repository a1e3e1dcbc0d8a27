//! The reading end: [`Replayer`] hands out records strictly in append order, waits for the writer, and
//! moves the cursor as the cloud acknowledges; a failed round rewinds to the last acknowledged record.
//!
//! Damage never stops it: a frame that does not check out is skipped to the next good record of its
//! segment ([`segment::SegReader::resync`]), and records that are nowhere to be found (a damaged end of
//! a segment, a missing segment) are skipped to the next record that exists. Each such record is counted
//! once in [`Stats::corrupt`](super::Stats::corrupt) and logged with its segment and offset, and the cursor
//! moves past it once everything before it is acknowledged.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use super::segment::{SegReader, Step};
use super::{Record, SegMeta, Shared};

/// The reading end, owned by the forwarder.
pub struct Replayer {
    shared: Arc<Shared>,
    written: watch::Receiver<u64>,
    /// Next sequence number to hand out.
    next_seq: u64,
    /// The open segment: its reader, first sequence number and path.
    reader: Option<(SegReader, u64, PathBuf)>,
    /// Lost records skipped, waiting for everything before them to be acknowledged: (first, last
    /// sequence number, spool position after them).
    gaps: VecDeque<(u64, u64, u64)>,
    /// Lost records up to this sequence number have been counted (a rewind reads past them again).
    counted: u64,
    /// File offset of the bad frame the open segment's reader was last moved past.
    damage_at: Option<u64>,
    /// After records taken from the writer's tail: the next sequence number and the spool position it
    /// starts at, where a segment reader opens (instead of reading the segment from its start).
    resume: Option<(u64, u64)>,
}

impl Replayer {
    pub(super) fn new(shared: Arc<Shared>, written: watch::Receiver<u64>, next_seq: u64) -> Self {
        Replayer {
            shared,
            written,
            next_seq,
            reader: None,
            gaps: VecDeque::new(),
            counted: 0,
            damage_at: None,
            resume: None,
        }
    }

    /// Waits for records after the last one handed out and returns up to `max` of them, oldest first.
    /// Empty when the records it waited for turned out dropped (DropOldest) or lost.
    pub async fn next_batch(&mut self, max: usize) -> io::Result<Vec<Record>> {
        self.next_batch_within(max, usize::MAX).await
    }

    /// Like [`Replayer::next_batch`], also stopping once the payloads reach `max_bytes` (at least one
    /// record is returned): what the caller holds in flight is bounded in bytes, not only in count.
    pub async fn next_batch_within(
        &mut self,
        max: usize,
        max_bytes: usize,
    ) -> io::Result<Vec<Record>> {
        loop {
            let written = *self.written.borrow_and_update();
            if written >= self.next_seq {
                let upto = written.min(self.next_seq + max as u64 - 1);
                let out = match self.take_from_tail(upto, max_bytes) {
                    Some(out) => out,
                    None => tokio::task::block_in_place(|| self.read_until(upto, max_bytes))?,
                };
                if let Some(first) = out.first() {
                    let _ = self.shared.stats.oldest_ms.compare_exchange(
                        0,
                        first.ts_ms,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    );
                }
                // Empty when everything up to `upto` was dropped meanwhile (DropOldest) or lost.
                return Ok(out);
            }
            if self.written.changed().await.is_err() {
                return Err(io::Error::other("the spool writer stopped"));
            }
        }
    }

    /// The records from `next_seq` on, if the writer's tail still holds it (no segment read, nothing that
    /// blocks); `None` sends the caller to the segments.
    fn take_from_tail(&mut self, upto: u64, max_bytes: usize) -> Option<Vec<Record>> {
        let mut tail = self.shared.tail();
        if !tail.starts_at(self.next_seq) {
            return None;
        }
        if let Err(next) = self.shared.claim(self.next_seq, upto) {
            // DropOldest passed it meanwhile (counted by `claim`): go on from the cursor.
            self.next_seq = next;
            self.reader = None;
            self.damage_at = None;
            return None;
        }
        let out = tail.take(upto, max_bytes);
        drop(tail);
        let last = out.last()?;
        self.next_seq = last.seq + 1;
        self.resume = Some((self.next_seq, last.end_pos));
        // Its position is behind now; a later segment read opens at `resume`.
        self.reader = None;
        self.damage_at = None;
        Some(out)
    }

    /// Empties the writer's tail: what was written so far is read from the segments.
    #[cfg(test)]
    pub(crate) fn forget_tail(&self) {
        self.shared.tail().clear();
    }

    fn segment_meta(&self, first_seq: u64) -> Option<SegMeta> {
        self.shared
            .segments()
            .iter()
            .find(|m| m.first_seq == first_seq)
            .cloned()
    }

    fn read_until(&mut self, upto: u64, max_bytes: usize) -> io::Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while self.next_seq <= upto && (out.is_empty() || bytes < max_bytes) {
            if let Err(next) = self.shared.claim(self.next_seq, upto) {
                // Dropped (DropOldest) while we were behind.
                self.next_seq = next;
                self.reader = None;
                self.damage_at = None;
                continue;
            }
            if self.reader.is_none() {
                self.open_next(upto)?;
                continue;
            }
            let Some((r, first, path)) = self.reader.as_mut() else {
                continue;
            };
            let (first, at) = (*first, r.offset());
            match r.next()? {
                Step::Record(rec) if rec.seq < self.next_seq => {}
                Step::Record(rec) => {
                    let damage_at = self.damage_at.take();
                    if rec.seq > self.next_seq {
                        let (from, path) = (self.next_seq, path.clone());
                        let pos = r.pos_at(at);
                        self.lost(from, rec.seq - 1, pos, &path, damage_at.unwrap_or(at));
                    }
                    self.next_seq = rec.seq + 1;
                    bytes += rec.payload.len() + rec.topic.len();
                    out.push(rec);
                }
                Step::Bad { offset } => {
                    let limit = self
                        .shared
                        .segments()
                        .iter()
                        .find(|m| m.first_seq == first)
                        .map_or(0, |m| m.len);
                    if r.resync(offset, self.next_seq - 1, limit)?.is_none() {
                        self.finish_segment(first, offset);
                    } else {
                        // The next record read is the first good one after the damage; a gap before it
                        // is counted there, located at the bad frame.
                        self.damage_at = Some(offset);
                    }
                }
                Step::End => self.finish_segment(first, at),
            }
        }
        Ok(out)
    }

    /// The open segment ended (or the rest of it cannot be read) at file offset `at`: whatever it should
    /// still hold is lost, and the next record is in a later segment.
    fn finish_segment(&mut self, first: u64, at: u64) {
        let Some((_, _, path)) = self.reader.take() else {
            return;
        };
        if let Some(m) = self.segment_meta(first)
            && m.last_seq >= self.next_seq
        {
            self.lost(self.next_seq, m.last_seq, m.base_pos + m.len, &path, at);
            self.next_seq = m.last_seq + 1;
        }
    }

    /// Opens the segment holding `next_seq`; when no segment holds it, the records up to the next one
    /// that exists are lost.
    fn open_next(&mut self, upto: u64) -> io::Result<()> {
        let seq = self.next_seq;
        let (holding, after) = {
            let segs = self.shared.segments();
            (
                segs.iter()
                    .rev()
                    .find(|m| m.first_seq <= seq && m.last_seq >= seq)
                    .cloned(),
                segs.iter().find(|m| m.first_seq > seq).cloned(),
            )
        };
        match (holding, after) {
            (Some(m), _) => match File::open(&m.path) {
                Ok(f) => {
                    // Right after records taken from the tail, the next one starts where they ended.
                    let offset = match self.resume.take() {
                        Some((s, pos))
                            if s == seq && (m.base_pos..=m.base_pos + m.len).contains(&pos) =>
                        {
                            pos - m.base_pos
                        }
                        _ => 0,
                    };
                    let r = SegReader::at(f, m.base_pos, offset)?;
                    self.reader = Some((r, m.first_seq, m.path));
                }
                // Deleted meanwhile: dropped (DropOldest), which moved the cursor first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if self.shared.acked().0 < seq {
                        self.lost(seq, m.last_seq, m.base_pos + m.len, &m.path, 0);
                        self.next_seq = m.last_seq + 1;
                    }
                }
                Err(e) => return Err(e),
            },
            (None, Some(next)) => {
                self.lost(seq, next.first_seq - 1, next.base_pos, &next.path, 0);
                self.next_seq = next.first_seq;
            }
            (None, None) => {
                // Numbered but in no segment (a damaged last record before a restart).
                let pos = self.shared.stats.written_pos.load(Ordering::SeqCst);
                self.lost(seq, upto, pos, &self.shared.dir.clone(), 0);
                self.next_seq = upto + 1;
            }
        }
        Ok(())
    }

    /// Records `from..=to` are lost: counted once, logged, and passed by the cursor once everything
    /// before them is acknowledged.
    fn lost(&mut self, from: u64, to: u64, pos_after: u64, path: &Path, offset: u64) {
        if to < from {
            return;
        }
        if to > self.counted {
            let new = to - self.counted.max(from - 1);
            self.counted = to;
            self.shared.stats.corrupt.fetch_add(new, Ordering::SeqCst);
            self.shared.note_corrupt(format!(
                "records {from}..={to} damaged or missing in {} at offset {offset}",
                path.display()
            ));
            tracing::error!(
                segment = %path.display(),
                offset,
                first_seq = from,
                last_seq = to,
                count = to - from + 1,
                "spool: damaged or missing records skipped"
            );
        }
        if self.shared.acked().0 + 1 >= from {
            self.shared.advance(to, pos_after);
        } else if self.gaps.back().is_none_or(|g| g.1 < to) {
            self.gaps.push_back((from, to, pos_after));
        }
    }

    /// The cloud acknowledged every record up to `rec` (inclusive): `count` records of the forwarder's.
    pub fn ack(&mut self, rec: &Record, count: u64, next_oldest_ms: Option<u64>) {
        self.ack_through(rec.seq, rec.end_pos, count, next_oldest_ms);
    }

    /// [`Replayer::ack`] by the last record's sequence number and end position (what the forwarder keeps of
    /// a record once it handed its topic and payload to the cloud client).
    pub fn ack_through(&mut self, seq: u64, end_pos: u64, count: u64, next_oldest_ms: Option<u64>) {
        // Counted even when DropOldest passed them meanwhile: they did arrive.
        self.shared
            .stats
            .forwarded
            .fetch_add(count, Ordering::SeqCst);
        self.shared.advance(seq, end_pos);
        // Lost records right after it go with it.
        while let Some(&(from, to, pos)) = self.gaps.front() {
            let acked = self.shared.acked().0;
            if to <= acked {
                self.gaps.pop_front();
            } else if from <= acked + 1 {
                self.shared.advance(to, pos);
                self.gaps.pop_front();
            } else {
                break;
            }
        }
        self.shared
            .stats
            .oldest_ms
            .store(next_oldest_ms.unwrap_or(0), Ordering::SeqCst);
    }

    /// The forwarder did not send `n` records it was handed, because DropOldest had passed them
    /// ([`Replayer::acked_seq`]): they are dropped for good, and counted here.
    pub fn unsent(&mut self, n: u64) {
        self.shared.stats.dropped.fetch_add(n, Ordering::SeqCst);
    }

    /// Every record up to this sequence number is acknowledged or dropped.
    pub fn acked_seq(&self) -> u64 {
        self.shared.acked().0
    }

    /// The spool's identity: random, made when the spool directory was first used. With the sequence
    /// number it names a record for good (JetStream's `Nats-Msg-Id`): a new spool numbers from 1 again.
    pub fn spool_id(&self) -> &str {
        &self.shared.id
    }

    /// Forwarding failed: hand out everything after the last acknowledged record again.
    pub fn rewind(&mut self) {
        self.rewind_with(std::iter::empty());
    }

    /// Forwarding failed with `in_hand` (sequence numbers) sent and not acknowledged: those DropOldest
    /// passed meanwhile are dropped for good (counted); everything after the cursor is handed out again.
    pub fn rewind_with(&mut self, in_hand: impl Iterator<Item = u64>) {
        self.next_seq = self.shared.give_back(in_hand);
        self.reader = None;
        self.damage_at = None;
        self.resume = None;
    }
}
