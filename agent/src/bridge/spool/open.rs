//! Opening the spool: recovery of what is on disk — the cursor, every segment scanned and a torn tail
//! truncated, segments at or below the cursor deleted — then the active segment and the syncer thread.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use super::syncer::Syncer;
use super::writer::{ActiveSegment, Kept};
use super::{AckState, Appender, Replayer, SegMeta, Shared, SpoolOptions, Stats, cursor, segment};

/// What recovery found on disk.
struct Recovered {
    /// The segments holding unacknowledged records, oldest first.
    segments: VecDeque<SegMeta>,
    /// Every record up to this (sequence number, byte position) is acknowledged or dropped.
    cursor: (u64, u64),
    /// The last record written (sequence number, byte position after it).
    written: (u64, u64),
}

/// Reads the cursor and scans every segment in `dir`. A torn tail of the last segment (the last batch
/// before a crash) is truncated; a damaged stretch anywhere else is left for the replayer, which skips
/// and counts it; a damaged end of the last segment is counted by reserving a sequence number for it
/// (the replayer finds it missing). Segments without a good record and segments entirely at or below the
/// cursor are deleted.
fn recover(dir: &Path) -> io::Result<Recovered> {
    let cursor = cursor::read(dir)?;
    let (cursor_seq, cursor_pos) = cursor.unwrap_or((0, 0));
    let mut metas = Vec::new();
    for entry in fs::read_dir(dir)? {
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
    let count = metas.len();
    let mut segments = VecDeque::new();
    // The number of a damaged last record of the last segment: nothing after it reuses it.
    let mut reserved = 0;
    for (i, mut m) in metas.into_iter().enumerate() {
        let last_segment = i + 1 == count;
        let scan = match segment::scan(&m.path, m.first_seq) {
            Ok(scan) => scan,
            // Gone since the listing (another process's housekeeping): nothing of it to recover.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for (offset, first_seq, last_seq) in &scan.holes {
            tracing::warn!(segment = %m.path.display(), offset, first_seq, last_seq, "spool: damaged records inside a segment; the records after them are kept");
        }
        match (scan.tail, last_segment) {
            (segment::Tail::Clean, _) => {}
            (segment::Tail::Torn, true) => {
                tracing::info!(segment = %m.path.display(), valid_len = scan.valid_len, file_len = scan.file_len, "spool: truncating a torn tail (the last write before a crash)");
            }
            (tail, _) => {
                tracing::warn!(segment = %m.path.display(), offset = scan.valid_len, file_len = scan.file_len, ?tail, last_good_seq = scan.last_seq, "spool: damaged end of a segment");
                if last_segment && scan.last_seq >= cursor_seq {
                    reserved = scan.last_seq + 1;
                }
            }
        }
        if last_segment && scan.valid_len < scan.file_len {
            let f = OpenOptions::new().write(true).open(&m.path)?;
            f.set_len(scan.valid_len)?;
            f.sync_all()?;
        }
        m.last_seq = scan.last_seq;
        m.len = scan.valid_len;
        if m.last_seq < m.first_seq || (cursor.is_some() && m.last_seq <= cursor_seq) {
            // Nothing to replay in it. An empty segment goes too: the writer starts a new one, under
            // the same name when nothing was written since.
            match fs::remove_file(&m.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            continue;
        }
        segments.push_back(m);
    }
    // No cursor to trust (none yet, or damaged): everything still on disk is sent again.
    let (cursor_seq, cursor_pos) = match (cursor, segments.front()) {
        (None, Some(f)) => (f.first_seq - 1, f.base_pos),
        _ => (cursor_seq, cursor_pos),
    };
    let (last_seq, end_pos) = segments
        .back()
        .map(|m| (m.last_seq, m.base_pos + m.len))
        .unwrap_or((0, 0));
    // The cursor may be ahead of what reached the disk (forwarded before the fsync, then a crash).
    Ok(Recovered {
        segments,
        cursor: (cursor_seq, cursor_pos),
        written: (
            last_seq.max(cursor_seq).max(reserved),
            end_pos.max(cursor_pos),
        ),
    })
}

/// The spool's identity (`id` in the directory), made at its first use.
fn spool_id(dir: &Path) -> io::Result<String> {
    let path = dir.join("id");
    if let Ok(id) = fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(id.to_string());
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let id = format!(
        "{:08x}{:08x}",
        crc32fast::hash(&nanos.to_le_bytes()),
        crc32fast::hash(
            &[
                &nanos.to_be_bytes()[..],
                &std::process::id().to_le_bytes()[..]
            ]
            .concat()
        )
    );
    let tmp = dir.join("id.tmp");
    fs::write(&tmp, &id)?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, &path)?;
    Ok(id)
}

/// Opens (and recovers) the spool in `opts.dir`, starts a new active segment and the syncer thread.
pub fn open(opts: SpoolOptions) -> io::Result<(Appender, Replayer, Arc<Stats>)> {
    fs::create_dir_all(&opts.dir)?;
    let Recovered {
        segments,
        cursor: (cursor_seq, cursor_pos),
        written: (written_seq, written_pos),
    } = recover(&opts.dir)?;
    // A cursor file from the start: on a full disk it is overwritten in place, with no new block needed.
    if cursor::read(&opts.dir)? != Some((cursor_seq, cursor_pos)) {
        cursor::write(&opts.dir, cursor_seq, cursor_pos)?;
    }
    let id = spool_id(&opts.dir)?;
    let stats = Arc::new(Stats::default());
    stats.written_seq.store(written_seq, Ordering::SeqCst);
    stats.written_pos.store(written_pos, Ordering::SeqCst);
    stats.acked_seq.store(cursor_seq, Ordering::SeqCst);
    stats.acked_pos.store(cursor_pos, Ordering::SeqCst);
    let shared = Arc::new(Shared {
        dir: opts.dir.clone(),
        stats: stats.clone(),
        segments: Mutex::new(segments),
        acked: Mutex::new(AckState {
            seq: cursor_seq,
            pos: cursor_pos,
            handed: cursor_seq,
        }),
        freed: Notify::new(),
        active_first: AtomicU64::new(written_seq + 1),
        kept: Mutex::new(Kept {
            cursor: (cursor_seq, cursor_pos),
            at: std::time::Instant::now(),
        }),
        tail: Mutex::default(),
        id,
        max_bytes: opts.max_bytes,
        overflow: opts.overflow,
    });
    let file = ActiveSegment::new(
        shared.clone(),
        written_seq + 1,
        written_pos,
        opts.segment_size(),
    )?;
    let (durable_tx, durable_rx) = watch::channel(written_seq);
    let (written_tx, written_rx) = watch::channel(written_seq);
    let written_tx = Arc::new(written_tx);
    let syncer = Arc::new(Syncer::new(written_seq));
    {
        let syncer = syncer.clone();
        let shared = shared.clone();
        let written_tx = written_tx.clone();
        std::thread::Builder::new()
            .name("spool-sync".into())
            .spawn(move || syncer.run(&shared, &durable_tx, written_tx))?;
    }
    Ok((
        Appender::new(file, durable_rx, written_tx, syncer, shared.clone()),
        Replayer::new(shared, written_rx, cursor_seq + 1),
        stats,
    ))
}
