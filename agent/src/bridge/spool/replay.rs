//! The reading end: [`Replayer`] hands out records strictly in append order, waits for the writer, and
//! moves the cursor as the cloud acknowledges; a failed round rewinds to the last acknowledged record.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use super::{Record, Shared, segment};

/// The reading end, owned by the forwarder.
pub struct Replayer {
    shared: Arc<Shared>,
    written: watch::Receiver<u64>,
    /// Next sequence number to hand out.
    next_seq: u64,
    reader: Option<segment::SegReader>,
}

impl Replayer {
    pub(super) fn new(shared: Arc<Shared>, written: watch::Receiver<u64>, next_seq: u64) -> Self {
        Replayer {
            shared,
            written,
            next_seq,
            reader: None,
        }
    }

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
