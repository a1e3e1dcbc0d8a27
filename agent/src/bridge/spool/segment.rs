//! Record framing and segment files. The checksum is CRC-32/ISO-HDLC (the zlib CRC, `crc32fast`), the one
//! the spool has always written: files from before the switch read unchanged (see the tests).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;

use super::Incoming;

/// `len u32 | crc u32`.
pub const FRAME_HEADER: usize = 8;
/// `seq u64 | ms u64 | rule u16 | topic len u16`.
pub const BODY_FIXED: usize = 20;
/// Largest body accepted when reading (guards against a corrupt length).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A spooled record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// Unix ms when it was spooled.
    pub ts_ms: u64,
    pub rule: u16,
    /// The target (cloud) topic.
    pub topic: String,
    pub payload: Bytes,
    /// Spool byte position after this record.
    pub end_pos: u64,
}

pub fn name(first_seq: u64, base_pos: u64) -> String {
    format!("seg-{first_seq:020}-{base_pos:020}.log")
}

pub fn parse_name(name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    let (a, b) = rest.split_once('-')?;
    let first: u64 = a.parse().ok()?;
    (first >= 1).then_some(())?;
    Some((first, b.parse().ok()?))
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Bytes a message takes in the log.
pub fn frame_len(m: &Incoming) -> usize {
    FRAME_HEADER + BODY_FIXED + m.topic.len().min(u16::MAX as usize) + m.payload.len()
}

pub fn encode(buf: &mut Vec<u8>, seq: u64, ts_ms: u64, m: &Incoming) {
    let topic = &m.topic.as_bytes()[..m.topic.len().min(u16::MAX as usize)];
    let body_len = BODY_FIXED + topic.len() + m.payload.len();
    let start = buf.len();
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&ts_ms.to_le_bytes());
    buf.extend_from_slice(&m.rule.to_le_bytes());
    buf.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(topic);
    buf.extend_from_slice(&m.payload);
    let crc = crc32fast::hash(&buf[start + FRAME_HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Smallest frame: header and fixed body.
pub const MIN_FRAME: u64 = (FRAME_HEADER + BODY_FIXED) as u64;

/// Largest topic + payload a record may carry: the reader takes a longer body for a corrupt length, so
/// the bridge refuses such a message before the spool instead of writing what it could never read back.
pub const MAX_RECORD: usize = MAX_BODY - BODY_FIXED;

/// What the next bytes of a segment hold.
#[derive(Debug)]
pub enum Step {
    Record(Record),
    /// Clean end of the file (at a frame boundary).
    End,
    /// A frame at this file offset that does not check out: short (a torn write), a length out of range,
    /// or a CRC mismatch.
    Bad {
        offset: u64,
    },
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[i..i + 4]);
    u32::from_le_bytes(a)
}

/// Decodes a body whose CRC matched; `None` when its topic length does not fit.
fn decode(body: Vec<u8>, end_pos: u64) -> Option<Record> {
    let seq = u64_at(&body, 0);
    let ts_ms = u64_at(&body, 8);
    let rule = u16::from_le_bytes([body[16], body[17]]);
    let tlen = u16::from_le_bytes([body[18], body[19]]) as usize;
    if BODY_FIXED + tlen > body.len() {
        return None;
    }
    let topic = String::from_utf8_lossy(&body[BODY_FIXED..BODY_FIXED + tlen]).into_owned();
    let payload = Bytes::from(body).slice(BODY_FIXED + tlen..);
    Some(Record {
        seq,
        ts_ms,
        rule,
        topic,
        payload,
        end_pos,
    })
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn read_full_at(f: &File, buf: &mut [u8], mut at: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], at) {
            Ok(0) => break,
            Ok(k) => {
                n += k;
                at += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A reader over one segment that tracks the file offset and the spool position.
pub struct SegReader {
    inner: BufReader<File>,
    base_pos: u64,
    /// File offset of the next frame.
    offset: u64,
}

impl SegReader {
    pub fn new(f: File, base_pos: u64) -> Self {
        Self {
            inner: BufReader::with_capacity(256 * 1024, f),
            base_pos,
            offset: 0,
        }
    }

    /// A reader whose next frame is at file offset `offset` (a frame boundary the caller knows).
    pub fn at(mut f: File, base_pos: u64, offset: u64) -> io::Result<Self> {
        if offset > 0 {
            f.seek(SeekFrom::Start(offset))?;
        }
        let mut r = Self::new(f, base_pos);
        r.offset = offset;
        Ok(r)
    }

    /// File offset of the next frame.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The spool position of file offset `offset`.
    pub fn pos_at(&self, offset: u64) -> u64 {
        self.base_pos + offset
    }

    /// Reads the next frame.
    pub fn next(&mut self) -> io::Result<Step> {
        let at = self.offset;
        let bad = Ok(Step::Bad { offset: at });
        let mut head = [0u8; FRAME_HEADER];
        match read_full(&mut self.inner, &mut head)? {
            0 => return Ok(Step::End),
            n if n < FRAME_HEADER => return bad,
            _ => {}
        }
        let len = u32_at(&head, 0) as usize;
        let crc = u32_at(&head, 4);
        if !(BODY_FIXED..=MAX_BODY).contains(&len) {
            return bad;
        }
        let mut body = vec![0u8; len];
        if read_full(&mut self.inner, &mut body)? < len || crc32fast::hash(&body) != crc {
            return bad;
        }
        let end = at + (FRAME_HEADER + len) as u64;
        match decode(body, self.base_pos + end) {
            Some(rec) => {
                self.offset = end;
                Ok(Step::Record(rec))
            }
            None => bad,
        }
    }

    /// After a bad frame at file offset `bad`: finds the first frame after it, below file offset `limit`,
    /// that checks out (length in range, CRC) and carries a sequence number after `after_seq` that the
    /// bytes in between can account for (each record takes at least [`MIN_FRAME`] bytes), and positions
    /// the reader there. `None` (the reader at `limit`) when there is none. A false match needs a
    /// 32-bit CRC to agree by chance on a frame whose sequence number is also in range.
    pub fn resync(&mut self, bad: u64, after_seq: u64, limit: u64) -> io::Result<Option<u64>> {
        const CHUNK: usize = 1 << 20;
        const PEEK: usize = FRAME_HEADER + 8;
        let f = self.inner.get_ref();
        let mut start = bad + 1;
        let mut buf = vec![0u8; CHUNK + PEEK];
        let mut found = None;
        'scan: while start + MIN_FRAME <= limit {
            let want = (limit - start).min(buf.len() as u64) as usize;
            let n = read_full_at(f, &mut buf[..want], start)?;
            if n < PEEK {
                break;
            }
            for i in 0..=(n - PEEK) {
                let off = start + i as u64;
                let len = u32_at(&buf, i) as usize;
                if !(BODY_FIXED..=MAX_BODY).contains(&len)
                    || off + (FRAME_HEADER + len) as u64 > limit
                {
                    continue;
                }
                let seq = u64_at(&buf, i + FRAME_HEADER);
                let most = after_seq + 1 + (off - bad) / MIN_FRAME;
                if seq <= after_seq || seq > most {
                    continue;
                }
                let mut body = vec![0u8; len];
                if read_full_at(f, &mut body, off + FRAME_HEADER as u64)? == len
                    && crc32fast::hash(&body) == u32_at(&buf, i + 4)
                    && decode(body, 0).is_some()
                {
                    found = Some(off);
                    break 'scan;
                }
            }
            start += (n - PEEK + 1) as u64;
        }
        let to = found.unwrap_or(limit);
        self.inner.seek(SeekFrom::Start(to))?;
        self.offset = to;
        Ok(found)
    }
}

/// What follows the last good record of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// Nothing: the file ends with a whole record.
    Clean,
    /// A frame cut short (the last write before a crash): its declared length runs past the end of the
    /// file, or not even its header is there.
    Torn,
    /// A frame that is all there but does not check out: damage, not a crash.
    Corrupt,
}

/// What a scan of one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Sequence number of the last good record (`first_seq - 1`: none).
    pub last_seq: u64,
    /// File offset after the last good record.
    pub valid_len: u64,
    pub file_len: u64,
    /// Damaged stretches between good records: (file offset, first and last sequence number lost).
    pub holes: Vec<(u64, u64, u64)>,
    pub tail: Tail,
}

/// Scans a segment. Records carry increasing sequence numbers from `first_seq`; a bad frame (or an
/// out-of-order one) is skipped by [`SegReader::resync`], and what lies after the last good record is
/// classified as [`Tail`].
pub fn scan(path: &Path, first_seq: u64) -> io::Result<Scan> {
    let f = File::open(path)?;
    let file_len = f.metadata()?.len();
    let mut r = SegReader::new(f, 0);
    let mut last = first_seq - 1;
    let mut valid = 0u64;
    let mut holes = Vec::new();
    let mut hole_at: Option<u64> = None;
    let tail = loop {
        let bad = match r.next()? {
            Step::Record(rec) if rec.seq > last => {
                if let Some(at) = hole_at.take()
                    && rec.seq > last + 1
                {
                    holes.push((at, last + 1, rec.seq - 1));
                }
                last = rec.seq;
                valid = r.offset();
                continue;
            }
            Step::Record(_) => valid,
            Step::End => break Tail::Clean,
            Step::Bad { offset } => offset,
        };
        if r.resync(bad, last, file_len)?.is_some() {
            hole_at.get_or_insert(bad);
            continue;
        }
        break tail_kind(r.inner.get_ref(), bad, file_len)?;
    };
    Ok(Scan {
        last_seq: last,
        valid_len: valid,
        file_len,
        holes,
        tail,
    })
}

/// Torn or corrupt: whether the bad frame at `bad` is all there (its declared length fits in the file,
/// or the rest of the file is exactly a body whose CRC matches, i.e. only the length was hit).
fn tail_kind(f: &File, bad: u64, file_len: u64) -> io::Result<Tail> {
    let rest = file_len.saturating_sub(bad);
    if rest < FRAME_HEADER as u64 {
        return Ok(Tail::Torn);
    }
    let mut head = [0u8; FRAME_HEADER];
    read_full_at(f, &mut head, bad)?;
    let len = u32_at(&head, 0) as u64;
    if (BODY_FIXED as u64..=MAX_BODY as u64).contains(&len) && FRAME_HEADER as u64 + len <= rest {
        return Ok(Tail::Corrupt);
    }
    let body_len = rest - FRAME_HEADER as u64;
    if (BODY_FIXED as u64..=MAX_BODY as u64).contains(&body_len) {
        let mut body = vec![0u8; body_len as usize];
        read_full_at(f, &mut body, bad + FRAME_HEADER as u64)?;
        if crc32fast::hash(&body) == u32_at(&head, 4) {
            return Ok(Tail::Corrupt);
        }
    }
    Ok(Tail::Torn)
}

#[cfg(test)]
mod tests {
    /// The check value of CRC-32/ISO-HDLC (reflected 0x04C11DB7, as zlib): the checksum the spool's frames
    /// and cursor always carried, and the hash in the bridge's JetStream durable consumer names.
    #[test]
    fn known_value() {
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
    }
}
