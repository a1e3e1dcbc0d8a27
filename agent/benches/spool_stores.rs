//! The bridge spool against redb and fjall: the same durable workload on each store, one table.
//!
//! `cargo bench -p edgewire-agent --bench spool_stores [-- --quick] [-- --store spool|redb|fjall]
//! [-- --batch N]` (optionally `SPOOL_BENCH_DIR=<dir on the target disk>`; the default is the system temp
//! dir, which must not be a tmpfs for the figures to mean anything: the bench prints the file system).
//!
//! Workload (issue 6): 200,000 records (`--quick`: 20,000) of a 256 B incompressible payload, a ~31 B
//! topic, a sequence number and a timestamp, appended in durable commits of 1, 64 or 1,024 records (at
//! batch size 1 only a 40th of the records, or the run takes minutes), then read back in order and deleted
//! in durable batches of 1,024. Every store is durable for every commit:
//! - spool: our segment log through its public API; a batch is appended, then `durable()` is awaited.
//!   The writer takes whatever is queued when it wakes, so a batch may take more than one fsync round
//!   (column `commits`). Acks are persisted the spool's way: the cursor file at most every 100 ms; the
//!   replay timing ends when the cursor on disk covers the last record. `spool free` is the real bridge
//!   pattern: append everything, await `durable()` once, batches are whatever arrived during an fsync.
//! - redb: one write transaction per batch, `Durability::Immediate`, key = seq as u64 big-endian.
//! - fjall: one keyspace keyed by seq (u64 big-endian), one `WriteBatch` per batch with
//!   `PersistMode::SyncData` (journal written and fdatasync'd before `commit` returns).
//!
//! redb and fjall store the spool's record body without the sequence number (the key):
//! `unix ms u64 | rule u16 | topic len u16 | topic | payload`. Replay decodes the topic and copies the
//! payload out, as the spool's replayer does, and checks every payload against what was appended.
//!
//! `commits` counts durable commits (spool: its fsync rounds, from `Stats::commits`; redb, fjall: the
//! transactions / batches). How many fsync calls one commit makes inside redb or fjall is not visible
//! from here: count them with `strace -f -c -e trace=fsync,fdatasync <bench binary> --quick --store redb`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use edgewire_agent::bridge::spool::{self, Incoming, SpoolOptions};
use edgewire_api::v1alpha1::Overflow;

/// Records read back and deleted per durable delete commit.
const REPLAY_BATCH: usize = 1024;
const PAYLOAD: usize = 256;
const TOPICS: usize = 16;
/// Distinct payloads (records i and i + POOL share one; never in the same 4 KiB block).
const POOL: usize = 1024;

const REDB_TABLE: redb::TableDefinition<[u8; 8], &[u8]> = redb::TableDefinition::new("spool");

struct Workload {
    payloads: Vec<Bytes>,
    topics: Vec<String>,
}

impl Workload {
    fn new() -> Self {
        // xorshift64*: incompressible payloads, so fjall's LZ4 blocks get no free ride.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        let payloads = (0..POOL)
            .map(|_| {
                let b: Vec<u8> = (0..PAYLOAD / 8)
                    .flat_map(|_| next().to_le_bytes())
                    .collect();
                Bytes::from(b)
            })
            .collect();
        let topics = (0..TOPICS)
            .map(|i| format!("edge.site-a.telemetry.sensor-{i:02}"))
            .collect();
        Workload { payloads, topics }
    }
    /// Payload and topic of the record with sequence number `seq` (1-based).
    fn payload(&self, seq: u64) -> &Bytes {
        &self.payloads[(seq as usize - 1) % POOL]
    }
    fn topic(&self, seq: u64) -> &str {
        &self.topics[(seq as usize - 1) % TOPICS]
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The value stored by redb and fjall.
fn encode(buf: &mut Vec<u8>, ts: u64, rule: u16, topic: &str, payload: &[u8]) {
    buf.clear();
    buf.extend_from_slice(&ts.to_le_bytes());
    buf.extend_from_slice(&rule.to_le_bytes());
    buf.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    buf.extend_from_slice(topic.as_bytes());
    buf.extend_from_slice(payload);
}

/// What replay hands the forwarder: (seq, topic, payload).
fn decode(seq: u64, v: &[u8]) -> Result<(u64, String, Bytes)> {
    ensure!(v.len() >= 12, "record {seq}: short value");
    let tlen = u16::from_le_bytes([v[10], v[11]]) as usize;
    ensure!(v.len() >= 12 + tlen, "record {seq}: short topic");
    let topic = std::str::from_utf8(&v[12..12 + tlen])?.to_owned();
    Ok((seq, topic, Bytes::copy_from_slice(&v[12 + tlen..])))
}

/// Replay must return every record once, in order, unchanged.
fn check(w: &Workload, expect: u64, seq: u64, topic: &str, payload: &[u8]) -> Result<()> {
    ensure!(
        seq == expect,
        "replay out of order: expected {expect}, got {seq}"
    );
    ensure!(
        topic == w.topic(seq) && payload == &w.payload(seq)[..],
        "record {seq} came back changed"
    );
    Ok(())
}

/// Bytes allocated on disk under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let mut sum = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                sum += if m.is_dir() {
                    disk_bytes(&e.path())
                } else {
                    m.blocks() * 512
                };
            }
        }
    }
    sum
}

/// The file system holding `dir`: (type, source), from the longest matching mount point.
fn filesystem(dir: &Path) -> (String, String) {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut best = (0, ("?".to_string(), "?".to_string()));
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let mp = Path::new(f[1]);
        let depth = mp.components().count();
        if dir.starts_with(mp) && depth >= best.0 {
            best = (depth, (f[2].to_string(), f[0].to_string()));
        }
    }
    best.1
}

/// Appending 4 KiB to a file and fdatasync'ing it, as a log does: (median, p99).
fn fsync_cost(dir: &Path) -> Result<(Duration, Duration)> {
    let path = dir.join("fsync-probe");
    let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        times.push(t.elapsed());
    }
    drop(f);
    fs::remove_file(&path)?;
    times.sort();
    Ok((times[times.len() / 2], times[times.len() * 99 / 100]))
}

struct Row {
    store: &'static str,
    batch: Option<usize>,
    records: u64,
    append: Duration,
    /// Durable commits (fsync rounds) the appends took.
    commits: u64,
    batches: u64,
    disk_append: u64,
    replay: Duration,
    disk_acked: u64,
}

/// Sequence numbers of one durable append batch after `done` records.
fn batch_range(done: u64, n: u64, batch: Option<usize>) -> std::ops::RangeInclusive<u64> {
    let end = match batch {
        Some(b) => (done + b as u64).min(n),
        None => n,
    };
    done + 1..=end
}

fn run_spool(
    rt: &tokio::runtime::Runtime,
    w: &Workload,
    dir: &Path,
    n: u64,
    batch: Option<usize>,
) -> Result<Row> {
    rt.block_on(async {
        // The BridgeLink defaults: maxBytes 4Gi, segments of maxBytes / 8 clamped to 64 MiB.
        let (mut a, mut r, stats) = spool::open(SpoolOptions {
            dir: dir.to_path_buf(),
            max_bytes: 4 << 30,
            overflow: Overflow::RejectNew,
            segment_bytes: 0,
        })?;
        let mut durable = a.durable();
        let c0 = stats.commits.load(Ordering::SeqCst);
        let t = Instant::now();
        let (mut done, mut batches) = (0, 0);
        while done < n {
            let mut last = 0;
            for seq in batch_range(done, n, batch) {
                last = a
                    .push(Incoming {
                        rule: 0,
                        topic: w.topic(seq).to_owned(),
                        payload: w.payload(seq).clone(),
                        edge_id: 0,
                    })
                    .await?;
                ensure!(last == seq, "the spool numbered record {seq} as {last}");
                if batch.is_none() && seq % 256 == 0 {
                    // Streaming: written as the bridge writes what the edge delivered meanwhile.
                    a.flush().await?;
                }
            }
            a.flush().await?;
            durable.wait_for(|d| *d >= last).await?;
            done = last;
            batches += 1;
        }
        let append = t.elapsed();
        let commits = stats.commits.load(Ordering::SeqCst) - c0;
        let disk_append = disk_bytes(dir);

        let t = Instant::now();
        let mut next = 1;
        while next <= n {
            let recs = r.next_batch(REPLAY_BATCH).await?;
            for rec in &recs {
                check(w, next, rec.seq, &rec.topic, &rec.payload)?;
                next += 1;
            }
            if let Some(l) = recs.last() {
                r.ack(l, recs.len() as u64, None);
            }
        }
        // The ack is durable once the cursor file covers it. The writer persists it at most every
        // CURSOR_EVERY; closing the appender makes the syncer persist the final one (and unlink what is acked) now.
        drop(a);
        let cursor = dir.join("cursor");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let on_disk = fs::read(&cursor)
                .ok()
                .and_then(|b| {
                    b.get(..8)
                        .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
                })
                .unwrap_or(0);
            if on_disk >= n {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the spool cursor never reached {n}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let replay = t.elapsed();
        Ok(Row {
            store: if batch.is_some() {
                "spool"
            } else {
                "spool free"
            },
            batch,
            records: n,
            append,
            commits,
            batches,
            disk_append,
            replay,
            disk_acked: disk_bytes(dir),
        })
    })
}

fn run_redb(w: &Workload, dir: &Path, n: u64, batch: usize) -> Result<Row> {
    use redb::{Durability, ReadableDatabase};
    let db = redb::Database::create(dir.join("spool.redb"))?;
    let mut buf = Vec::with_capacity(512);
    let t = Instant::now();
    let (mut done, mut batches) = (0, 0);
    while done < n {
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut table = tx.open_table(REDB_TABLE)?;
            let ts = now_ms();
            for seq in batch_range(done, n, Some(batch)) {
                encode(&mut buf, ts, 0, w.topic(seq), w.payload(seq));
                table.insert(seq.to_be_bytes(), buf.as_slice())?;
                done = seq;
            }
        }
        tx.commit()?;
        batches += 1;
    }
    let append = t.elapsed();
    let disk_append = disk_bytes(dir);

    let t = Instant::now();
    let mut next = 1;
    while next <= n {
        let first = next;
        {
            let rtx = db.begin_read()?;
            let table = rtx.open_table(REDB_TABLE)?;
            for e in table.range(first.to_be_bytes()..)?.take(REPLAY_BATCH) {
                let (k, v) = e?;
                let (seq, topic, payload) = decode(u64::from_be_bytes(k.value()), v.value())?;
                check(w, next, seq, &topic, &payload)?;
                next += 1;
            }
        }
        ensure!(next > first, "redb: record {first} missing");
        let mut tx = db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        {
            let mut table = tx.open_table(REDB_TABLE)?;
            table.retain_in(first.to_be_bytes()..=(next - 1).to_be_bytes(), |_, _| false)?;
        }
        tx.commit()?;
    }
    let replay = t.elapsed();
    drop(db);
    Ok(Row {
        store: "redb",
        batch: Some(batch),
        records: n,
        append,
        commits: batches,
        batches,
        disk_append,
        replay,
        disk_acked: disk_bytes(dir),
    })
}

fn run_fjall(w: &Workload, dir: &Path, n: u64, batch: usize) -> Result<Row> {
    use fjall::{Database, KeyspaceCreateOptions, PersistMode};
    let db = Database::builder(dir.join("fjall")).open()?;
    let ks = db.keyspace("spool", KeyspaceCreateOptions::default)?;
    let mut buf = Vec::with_capacity(512);
    let t = Instant::now();
    let (mut done, mut batches) = (0, 0);
    while done < n {
        let mut b = db.batch().durability(Some(PersistMode::SyncData));
        let ts = now_ms();
        for seq in batch_range(done, n, Some(batch)) {
            encode(&mut buf, ts, 0, w.topic(seq), w.payload(seq));
            b.insert(&ks, seq.to_be_bytes(), buf.as_slice());
            done = seq;
        }
        b.commit()?;
        batches += 1;
    }
    let append = t.elapsed();
    let disk_append = disk_bytes(dir);

    let t = Instant::now();
    let mut next = 1;
    while next <= n {
        let first = next;
        let mut b = db.batch().durability(Some(PersistMode::SyncData));
        for kv in ks.range(first.to_be_bytes()..).take(REPLAY_BATCH) {
            let (k, v) = kv.into_inner()?;
            let key: [u8; 8] = k.as_ref().try_into().context("fjall: key is not 8 bytes")?;
            let (seq, topic, payload) = decode(u64::from_be_bytes(key), &v)?;
            check(w, next, seq, &topic, &payload)?;
            b.remove(&ks, key);
            next += 1;
        }
        ensure!(next > first, "fjall: record {first} missing");
        b.commit()?;
    }
    let replay = t.elapsed();
    let disk_acked = disk_bytes(dir);
    drop(ks);
    drop(db);
    Ok(Row {
        store: "fjall",
        batch: Some(batch),
        records: n,
        append,
        commits: batches,
        batches,
        disk_append,
        replay,
        disk_acked,
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn print_row(r: &Row) {
    let rate = |d: Duration| r.records as f64 / d.as_secs_f64();
    let batch = r.batch.map_or("free".to_string(), |b| b.to_string());
    println!(
        "| {:<10} | {:>5} | {:>7} | {:>10.0} | {:>7} | {:>9.2} | {:>10} | {:>10.0} | {:>10} |",
        r.store,
        batch,
        r.records,
        rate(r.append),
        r.commits,
        r.commits as f64 / r.batches.max(1) as f64,
        mib(r.disk_append),
        rate(r.replay),
        mib(r.disk_acked),
    );
}

fn main() -> Result<()> {
    let mut n: u64 = 200_000;
    let mut stores = vec!["spool", "redb", "fjall"];
    let mut batches = vec![1usize, 64, 1024];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => n = 20_000,
            "--store" => {
                let s = args.next().context("--store needs spool, redb or fjall")?;
                stores.retain(|x| *x == s);
                ensure!(!stores.is_empty(), "unknown store {s}");
            }
            "--batch" => {
                let b: usize = args.next().context("--batch needs a number")?.parse()?;
                ensure!(b > 0, "--batch must be positive");
                batches = vec![b];
            }
            // `cargo bench` passes --bench; anything else is a mistake.
            "--bench" => {}
            other => bail!("unknown argument {other}"),
        }
    }
    let base = std::env::var("SPOOL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let (fstype, source) = filesystem(&base);
    println!(
        "dir {} on {fstype} ({source}){}",
        base.display(),
        if fstype == "tmpfs" || fstype == "ramfs" {
            ": IN MEMORY, fsync costs nothing here; set SPOOL_BENCH_DIR to a disk"
        } else {
            ""
        }
    );
    let probe = tempfile::tempdir_in(&base)?;
    let (median, p99) = fsync_cost(probe.path())?;
    println!("fdatasync after a 4 KiB append: median {median:?}, p99 {p99:?}");
    println!(
        "{n} records of {PAYLOAD} B + ~31 B topic; at batch size 1: {} records; replay + delete in durable batches of {REPLAY_BATCH}",
        n / 40
    );
    let w = Workload::new();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "| store      | batch | records | append/s   | commits | per batch | disk after | replay+del | disk after |"
    );
    println!(
        "|            |       |         |            |         |           | append     | /s         | ack        |"
    );
    println!(
        "|------------|-------|---------|------------|---------|-----------|------------|------------|------------|"
    );
    let mut runs: Vec<(&str, Option<usize>)> = Vec::new();
    for b in &batches {
        for s in &stores {
            runs.push((s, Some(*b)));
        }
    }
    if stores.contains(&"spool") {
        runs.push(("spool", None));
    }
    for (store, batch) in runs {
        let records = if batch == Some(1) { n / 40 } else { n };
        let dir = tempfile::tempdir_in(&base)?;
        let row = match (store, batch) {
            ("spool", b) => run_spool(&rt, &w, dir.path(), records, b),
            ("redb", Some(b)) => run_redb(&w, dir.path(), records, b),
            ("fjall", Some(b)) => run_fjall(&w, dir.path(), records, b),
            _ => unreachable!("runs are built above"),
        }
        .with_context(|| format!("{store} at batch {batch:?}"))?;
        print_row(&row);
    }
    Ok(())
}
