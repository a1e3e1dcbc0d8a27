//! Record framing and segment files. The checksum is CRC-32/ISO-HDLC (the zlib CRC, `crc32fast`), the one
//! the spool has always written: files from before the switch read unchanged (see the tests).

use std::fs::File;
use std::io::{self, BufReader, Read};
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

/// Outcome of reading one frame.
enum Frame {
    Ok(Record, u64),
    /// Clean end of file.
    End,
    /// Short or corrupt frame (a torn tail).
    Torn,
}

fn read_frame(r: &mut impl Read, pos: u64) -> io::Result<Frame> {
    let mut head = [0u8; FRAME_HEADER];
    match read_full(r, &mut head)? {
        0 => return Ok(Frame::End),
        n if n < FRAME_HEADER => return Ok(Frame::Torn),
        _ => {}
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if !(BODY_FIXED..=MAX_BODY).contains(&len) {
        return Ok(Frame::Torn);
    }
    let mut body = vec![0u8; len];
    if read_full(r, &mut body)? < len || crc32fast::hash(&body) != crc {
        return Ok(Frame::Torn);
    }
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&body[i..i + 8]);
        u64::from_le_bytes(b)
    };
    let seq = u64_at(0);
    let ts_ms = u64_at(8);
    let rule = u16::from_le_bytes([body[16], body[17]]);
    let tlen = u16::from_le_bytes([body[18], body[19]]) as usize;
    if BODY_FIXED + tlen > len {
        return Ok(Frame::Torn);
    }
    let topic = String::from_utf8_lossy(&body[BODY_FIXED..BODY_FIXED + tlen]).into_owned();
    let payload = Bytes::from(body).slice(BODY_FIXED + tlen..);
    let end = pos + (FRAME_HEADER + len) as u64;
    Ok(Frame::Ok(
        Record {
            seq,
            ts_ms,
            rule,
            topic,
            payload,
            end_pos: end,
        },
        end,
    ))
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

/// A reader over one segment that tracks the spool position.
pub struct SegReader {
    inner: BufReader<File>,
    pos: u64,
}

impl SegReader {
    pub fn new(f: File, base_pos: u64) -> Self {
        Self {
            inner: BufReader::with_capacity(256 * 1024, f),
            pos: base_pos,
        }
    }
}

/// Reads the next record; `None` at the end of the written data.
pub fn read_record(r: &mut SegReader) -> io::Result<Option<Record>> {
    match read_frame(&mut r.inner, r.pos)? {
        Frame::Ok(rec, end) => {
            r.pos = end;
            Ok(Some(rec))
        }
        Frame::End | Frame::Torn => Ok(None),
    }
}

/// Scans a segment: (last valid seq, valid length, file length). Records must carry consecutive
/// sequence numbers from `first_seq`; anything else ends the valid part.
pub fn scan(path: &Path, first_seq: u64) -> io::Result<(u64, u64, u64)> {
    let f = File::open(path)?;
    let file_len = f.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut valid = 0u64;
    let mut last = first_seq - 1;
    loop {
        match read_frame(&mut r, valid)? {
            Frame::Ok(rec, end) if rec.seq == last + 1 => {
                last = rec.seq;
                valid = end;
            }
            _ => break,
        }
    }
    Ok((last, valid, file_len))
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
