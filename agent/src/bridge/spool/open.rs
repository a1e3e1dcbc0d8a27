//! Opening the spool: recovery of what is on disk — the cursor, every segment scanned and a torn tail
//! truncated, segments at or below the cursor deleted — then the writer task and the syncer thread.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, watch};

use super::syncer::Syncer;
use super::writer::Writer;
use super::{Appender, Replayer, SegMeta, Shared, SpoolOptions, Stats, cursor, segment};

/// What recovery found on disk.
struct Recovered {
    /// The segments holding unacknowledged records, oldest first.
    segments: VecDeque<SegMeta>,
    /// Every record up to this (sequence number, byte position) is acknowledged or dropped.
    cursor: (u64, u64),
    /// The last record written (sequence number, byte position after it).
    written: (u64, u64),
}

/// Reads the cursor and scans every segment in `dir`: a torn tail (a short frame or a bad CRC, the last
/// batch before a crash) is truncated, segments entirely at or below the cursor are deleted.
fn recover(dir: &Path) -> io::Result<Recovered> {
    let (cursor_seq, cursor_pos) = cursor::read(dir)?;
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
    Ok(Recovered {
        segments,
        cursor: (cursor_seq, cursor_pos),
        written: (last_seq.max(cursor_seq), end_pos.max(cursor_pos)),
    })
}

/// Opens (and recovers) the spool in `opts.dir` and starts its writer task.
pub fn open(opts: SpoolOptions) -> io::Result<(Appender, Replayer, Arc<Stats>)> {
    fs::create_dir_all(&opts.dir)?;
    let Recovered {
        segments,
        cursor: (cursor_seq, cursor_pos),
        written: (written_seq, written_pos),
    } = recover(&opts.dir)?;
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
    let writer = Writer::new(
        shared.clone(),
        written_seq + 1,
        written_pos,
        opts.segment_size(),
        (cursor_seq, cursor_pos),
    )?;
    let (tx, rx) = mpsc::channel(16 * 1024);
    let (durable_tx, durable_rx) = watch::channel(written_seq);
    let (written_tx, written_rx) = watch::channel(written_seq);
    let syncer = Arc::new(Syncer::new(written_seq));
    {
        let syncer = syncer.clone();
        let stats = stats.clone();
        std::thread::Builder::new()
            .name("spool-sync".into())
            .spawn(move || syncer.run(&durable_tx, &stats))?;
    }
    tokio::spawn(writer.run(rx, written_tx, syncer));
    Ok((
        Appender::new(tx, written_seq + 1, written_pos, durable_rx, shared.clone()),
        Replayer::new(shared, written_rx, cursor_seq + 1),
        stats,
    ))
}
