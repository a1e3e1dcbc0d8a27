//! The edge identities of the newest records on disk, for the bridge's redelivery window
//! (`bridge::redelivery`). Read before [`super::open`]: recovery deletes the segments the cloud
//! acknowledged, and the edge may still redeliver their newest records (their PUBACK was cut off).

use std::fs::{self, File};
use std::path::Path;

use super::segment::{self, SegReader, Step};

/// A spooled record's edge identity: its sequence number, the MQTT packet id it arrived under and a
/// CRC-32 of its (mapped) topic and payload ([`edge_hash`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeRecord {
    pub seq: u64,
    pub edge_id: u16,
    pub hash: u32,
}

/// What tells two edge messages with the same packet id apart: CRC-32 of the topic's length, the topic
/// and the payload.
pub fn edge_hash(topic: &str, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&(topic.len() as u32).to_le_bytes());
    h.update(topic.as_bytes());
    h.update(payload);
    h.finalize()
}

/// Bytes of segments read at most: the window is for messages whose PUBACK a crash cut off, not for a
/// backlog of large ones.
const READ_AT_MOST: u64 = 256 * 1024 * 1024;

/// The edge identities of the newest `max` records in `dir` that carry one (and of fewer when their
/// segments hold more than [`READ_AT_MOST`] bytes), oldest first. A segment that cannot be read, or the
/// rest of one after a damaged frame, contributes nothing more: a redelivery of such a record is
/// spooled again (a duplicate), never dropped.
pub fn recent_edge_records(dir: &Path, max: usize) -> Vec<EdgeRecord> {
    let mut segments: Vec<(u64, std::path::PathBuf)> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let (first, _) = segment::parse_name(e.file_name().to_str()?)?;
                Some((first, e.path()))
            })
            .collect(),
        Err(_) => return Vec::new(),
    };
    segments.sort();
    let mut newest_first: Vec<Vec<EdgeRecord>> = Vec::new();
    let (mut found, mut read) = (0usize, 0u64);
    for (_, path) in segments.iter().rev() {
        if found >= max || read >= READ_AT_MOST {
            break;
        }
        let Ok(f) = File::open(path) else { continue };
        read += f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut r = SegReader::new(f, 0);
        let mut records = Vec::new();
        while let Ok(Step::Record(rec)) = r.next() {
            if rec.edge_id != 0 {
                records.push(EdgeRecord {
                    seq: rec.seq,
                    edge_id: rec.edge_id,
                    hash: edge_hash(&rec.topic, &rec.payload),
                });
            }
        }
        found += records.len();
        newest_first.push(records);
    }
    let mut out: Vec<EdgeRecord> = newest_first.into_iter().rev().flatten().collect();
    out.drain(..out.len().saturating_sub(max));
    out
}
