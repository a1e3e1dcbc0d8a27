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
/// `seq u64 | stamp u64 | rule u16 | topic len u16`.
pub const BODY_FIXED: usize = 20;
/// The stamp holds the unix ms in its low 48 bits (enough until the year 10889) and the record's edge
/// packet id ([`Record::edge_id`]) in its high 16 bits. Records written before the edge id existed have
/// zeros there, which reads as "no edge id": old segments read unchanged.
const MS_BITS: u32 = 48;
const MS_MASK: u64 = (1 << MS_BITS) - 1;
/// Largest body accepted when reading (guards against a corrupt length).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A spooled record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// Unix ms when it was spooled.
    pub ts_ms: u64,
    /// The MQTT packet id the edge delivered it under (0: none, not MQTT QoS ≥ 1, or written before
    /// the spool kept it): what tells an edge redelivery of it after a crash (see `bridge::redelivery`).
    pub edge_id: u16,
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
    let stamp = (ts_ms & MS_MASK) | (u64::from(m.edge_id) << MS_BITS);
    buf.extend_from_slice(&stamp.to_le_bytes());
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
    let stamp = u64_at(&body, 8);
    let rule = u16::from_le_bytes([body[16], body[17]]);
    let tlen = u16::from_le_bytes([body[18], body[19]]) as usize;
    if BODY_FIXED + tlen > body.len() {
        return None;
    }
    let topic = String::from_utf8_lossy(&body[BODY_FIXED..BODY_FIXED + tlen]).into_owned();
    let payload = Bytes::from(body).slice(BODY_FIXED + tlen..);
    Some(Record {
        seq,
        ts_ms: stamp & MS_MASK,
        edge_id: (stamp >> MS_BITS) as u16,
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

    /// The frame layout byte by byte, and the reader's verdict on each way a frame can be wrong.
    mod framing {
        use super::super::*;
        use std::io::Write;

        fn msg(rule: u16, topic: &str, payload: &[u8]) -> Incoming {
            Incoming {
                rule,
                topic: topic.into(),
                payload: Bytes::copy_from_slice(payload),
                edge_id: 0,
            }
        }

        /// A segment file holding `bytes`, read from spool position `base`.
        fn reader(bytes: &[u8], base: u64) -> (tempfile::TempDir, SegReader) {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join("seg");
            File::create(&path).unwrap().write_all(bytes).unwrap();
            let r = SegReader::new(File::open(&path).unwrap(), base);
            (d, r)
        }

        fn bad_at(r: &mut SegReader) -> u64 {
            match r.next().unwrap() {
                Step::Bad { offset } => offset,
                other => panic!("expected a bad frame, got {other:?}"),
            }
        }

        /// A frame cut inside a payload that ends in zeros: the zero-filled read buffer would pass the CRC,
        /// so only the short read tells it is torn.
        #[test]
        fn a_body_cut_inside_trailing_zeros_is_bad_not_a_record() {
            let mut buf = Vec::new();
            let mut payload = b"head".to_vec();
            payload.extend([0u8; 64]);
            encode(&mut buf, 1, 0, &msg(1, "t", &payload));
            buf.truncate(buf.len() - 32);
            let (_d, mut r) = reader(&buf, 0);
            assert_eq!(bad_at(&mut r), 0);
        }

        /// A record whose sequence number goes back (written twice) is not taken as the segment's last:
        /// scan keeps the highest and says the file does not end cleanly.
        #[test]
        fn scan_does_not_go_back_to_a_repeated_record() {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join(name(1, 0));
            let mut buf = Vec::new();
            for seq in [1, 2, 1] {
                encode(&mut buf, seq, 0, &msg(1, "t", b"p"));
            }
            File::create(&path).unwrap().write_all(&buf).unwrap();
            let s = scan(&path, 1).unwrap();
            assert_eq!(s.last_seq, 2);
            assert_eq!(s.valid_len, 2 * frame_len(&msg(1, "t", b"p")) as u64);
            assert_ne!(s.tail, Tail::Clean);
        }

        /// A segment of records `seqs` (each `msg(1, "t", b"p")`), with `damage` applied to its bytes.
        fn scanned(seqs: &[u64], damage: impl FnOnce(&mut Vec<u8>)) -> Scan {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join(name(1, 0));
            let mut buf = Vec::new();
            for &seq in seqs {
                encode(&mut buf, seq, 0, &msg(1, "t", b"p"));
            }
            damage(&mut buf);
            File::create(&path).unwrap().write_all(&buf).unwrap();
            scan(&path, 1).unwrap()
        }

        /// The last record written twice: the repeat is not a good record, so the segment does not end
        /// cleanly after it.
        #[test]
        fn a_repeat_of_the_last_record_is_not_a_good_record() {
            let frame = frame_len(&msg(1, "t", b"p")) as u64;
            let s = scanned(&[1, 2, 2], |_| {});
            assert_eq!((s.last_seq, s.valid_len), (2, 2 * frame));
            assert_ne!(s.tail, Tail::Clean);
        }

        /// A damaged frame between good records: the records it took are a hole (its offset, the first and
        /// last sequence number lost); bytes that took no record (the sequence numbers go on) are none.
        #[test]
        fn the_records_a_damaged_frame_took_are_a_hole_and_garbage_is_none() {
            let frame = frame_len(&msg(1, "t", b"p"));
            let s = scanned(&[1, 2, 3, 4, 5], |b| b[3 * frame - 1] ^= 0xff);
            assert_eq!(s.holes, [(2 * frame as u64, 3, 3)]);
            assert_eq!((s.last_seq, s.tail), (5, Tail::Clean));
            let s = scanned(&[1, 2, 3, 4, 5, 6], |b| {
                b[3 * frame - 1] ^= 0xff;
                b[4 * frame - 1] ^= 0xff;
            });
            assert_eq!(s.holes, [(2 * frame as u64, 3, 4)]);
            let s = scanned(&[1, 2, 3], |b| {
                let tail = b.split_off(2 * frame);
                b.extend([0xab; 24]);
                b.extend(tail);
            });
            assert_eq!(s.holes, []);
            assert_eq!((s.last_seq, s.tail), (3, Tail::Clean));
        }

        /// The last frame with only its length hit (it now runs past the end of the file) is damage, not a
        /// crash: the rest of the file is exactly a body whose CRC matches. Cut short, the same frame is torn.
        #[test]
        fn a_last_frame_whose_length_alone_was_hit_is_corrupt_not_torn() {
            let frame = frame_len(&msg(1, "t", b"p"));
            let hit = scanned(&[1, 2], |b| {
                b[frame..frame + 4].copy_from_slice(&0x00ff_fff0u32.to_le_bytes())
            });
            assert_eq!((hit.last_seq, hit.tail), (1, Tail::Corrupt));
            let cut = scanned(&[1, 2], |b| b.truncate(2 * frame - 1));
            assert_eq!((cut.last_seq, cut.tail), (1, Tail::Torn));
        }

        #[test]
        fn a_record_is_length_crc_and_little_endian_fields() {
            let m = msg(0x0102, "t/x", b"pay");
            let mut buf = vec![0xEE];
            encode(&mut buf, 0x1122_3344_5566_7788, 0x0A0B, &m);
            let f = &buf[1..];
            assert_eq!(f.len(), frame_len(&m));
            assert_eq!(frame_len(&m), 8 + 20 + 3 + 3);
            assert_eq!(&f[..4], &(20u32 + 3 + 3).to_le_bytes());
            assert_eq!(&f[4..8], &crc32fast::hash(&f[8..]).to_le_bytes());
            assert_eq!(&f[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
            assert_eq!(&f[16..24], &0x0A0Bu64.to_le_bytes());
            assert_eq!(&f[24..26], &[0x02, 0x01]);
            assert_eq!(&f[26..28], &[3, 0]);
            assert_eq!(&f[28..31], b"t/x");
            assert_eq!(&f[31..], b"pay");
            assert_eq!(buf[0], 0xEE, "encode appends");
            assert_eq!(u32_at(f, 4), crc32fast::hash(&f[8..]));
            assert_eq!(u64_at(f, 8), 0x1122_3344_5566_7788);
        }

        #[test]
        fn the_edge_packet_id_rides_in_the_stamps_top_16_bits() {
            let mut m = msg(1, "t", b"p");
            m.edge_id = 0xBEEF;
            let ts = 0x0000_1234_5678_9ABC;
            let mut buf = Vec::new();
            encode(&mut buf, 9, ts | (0xFFFF << 48), &m);
            assert_eq!(
                u64_at(&buf, 16),
                ts | (0xBEEF << 48),
                "ms in the low 48 bits, the id above"
            );
            let (_d, mut r) = reader(&buf, 0);
            let Step::Record(rec) = r.next().unwrap() else {
                panic!("a record")
            };
            assert_eq!((rec.seq, rec.ts_ms, rec.edge_id), (9, ts, 0xBEEF));
        }

        #[test]
        fn records_read_back_with_their_positions() {
            let mut buf = Vec::new();
            encode(&mut buf, 7, 1000, &msg(3, "a.b", b"one"));
            let first = buf.len() as u64;
            encode(&mut buf, 8, 1001, &msg(4, "", b""));
            let (_d, mut r) = reader(&buf, 500);
            assert_eq!((r.offset(), r.pos_at(10)), (0, 510));
            let Step::Record(a) = r.next().unwrap() else {
                panic!("first record")
            };
            assert_eq!(
                a,
                Record {
                    seq: 7,
                    ts_ms: 1000,
                    edge_id: 0,
                    rule: 3,
                    topic: "a.b".into(),
                    payload: Bytes::from_static(b"one"),
                    end_pos: 500 + first,
                }
            );
            assert_eq!(r.offset(), first);
            let Step::Record(b) = r.next().unwrap() else {
                panic!("second record")
            };
            assert_eq!((b.seq, b.ts_ms, b.rule), (8, 1001, 4));
            assert_eq!((b.topic.as_str(), b.payload.len()), ("", 0));
            assert_eq!(b.end_pos, 500 + buf.len() as u64);
            assert_eq!(r.offset(), buf.len() as u64);
            assert!(matches!(r.next().unwrap(), Step::End));
        }

        #[test]
        fn a_topic_longer_than_u16_is_cut_in_the_frame_and_its_length() {
            let long = "t".repeat(u16::MAX as usize + 5);
            let m = msg(0, &long, b"p");
            let mut buf = Vec::new();
            encode(&mut buf, 1, 0, &m);
            assert_eq!(buf.len(), frame_len(&m));
            assert_eq!(frame_len(&m), 8 + 20 + u16::MAX as usize + 1);
            let (_d, mut r) = reader(&buf, 0);
            let Step::Record(rec) = r.next().unwrap() else {
                panic!("record")
            };
            assert_eq!(rec.topic.len(), u16::MAX as usize);
            assert_eq!(&rec.payload[..], b"p");
        }

        #[test]
        fn each_damaged_frame_is_bad_at_its_offset() {
            let mut good = Vec::new();
            encode(&mut good, 1, 0, &msg(0, "t", b"payload"));
            let at = good.len() as u64;
            let with = |tail: &[u8]| [good.as_slice(), tail].concat();
            let mut frame = Vec::new();
            encode(&mut frame, 2, 0, &msg(0, "t", b"payload"));
            let check = |bytes: Vec<u8>, why: &str| {
                let (_d, mut r) = reader(&bytes, 0);
                assert!(matches!(r.next().unwrap(), Step::Record(_)), "{why}");
                assert_eq!(bad_at(&mut r), at, "{why}");
                assert_eq!(r.offset(), at, "{why}: the reader stays at the bad frame");
            };
            check(with(&frame[..5]), "a header cut short");
            check(with(&frame[..frame.len() - 1]), "a body cut short");
            let mut flipped = frame.clone();
            *flipped.last_mut().unwrap() ^= 1;
            check(with(&flipped), "a CRC mismatch");
            let mut short_len = frame.clone();
            short_len[..4].copy_from_slice(&(BODY_FIXED as u32 - 1).to_le_bytes());
            check(with(&short_len), "a length below the fixed body");
            let mut huge = frame.clone();
            huge[..4].copy_from_slice(&(MAX_BODY as u32 + 1).to_le_bytes());
            check(with(&huge), "a length above the largest body");
            // A body whose CRC checks out but whose topic length runs past it.
            let mut body = frame[FRAME_HEADER..].to_vec();
            let past = body.len() as u16;
            body[18..20].copy_from_slice(&past.to_le_bytes());
            let mut bad_topic = frame[..4].to_vec();
            bad_topic.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
            bad_topic.extend_from_slice(&body);
            check(with(&bad_topic), "a topic length past the body");
            assert_eq!(decode(body, 0), None);
        }

        #[test]
        fn segment_names_carry_first_seq_and_base_position() {
            assert_eq!(
                name(12, 3456),
                "seg-00000000000000000012-00000000000000003456.log"
            );
            assert_eq!(parse_name(&name(12, 3456)), Some((12, 3456)));
            assert_eq!(parse_name(&name(1, 0)), Some((1, 0)));
            assert_eq!(parse_name(&name(0, 0)), None, "sequence numbers start at 1");
            assert_eq!(
                parse_name(&name(u64::MAX, u64::MAX)),
                Some((u64::MAX, u64::MAX))
            );
            assert!(
                name(9, 0) < name(10, 0),
                "zero-padded: names sort as the numbers do"
            );
            for bad in [
                "seg-1-2.tmp",
                "xseg-1-2.log",
                "seg-12.log",
                "seg-a-2.log",
                "seg-1-b.log",
                "cursor",
            ] {
                assert_eq!(parse_name(bad), None, "{bad}");
            }
            let now = now_ms();
            assert!(now > 1_600_000_000_000, "unix ms, not s: {now}");
        }
    }
}
