//! What the bench puts in a message and what the cloud-side observer makes of it.
//!
//! Every payload starts with an ASCII marker, a kind (`D` data, `P` probe), two 20-digit numbers (sequence or
//! probe id, send time in µs since the bench's epoch) and is padded with `x` to the payload size. ASCII, so a
//! bridge that wraps the payload in a JSON envelope still carries it recognisably.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const MARKER: &[u8] = b"EWB1";
/// Marker, kind, two 20-digit numbers.
pub const HEADER: usize = MARKER.len() + 1 + 20 + 20;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the bench's epoch (the same clock for sender and observer: one process).
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn encode(kind: u8, number: u64, size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size.max(HEADER));
    v.extend_from_slice(MARKER);
    v.push(kind);
    v.extend_from_slice(format!("{number:020}{:020}", now_us()).as_bytes());
    v.resize(size.max(HEADER), b'x');
    v
}

/// A data message: sequence number `seq`, stamped now.
pub fn data(seq: u64, size: usize) -> Vec<u8> {
    encode(b'D', seq, size)
}

/// A probe with a fresh id (used to see that the path edge→cloud is open), and that id.
pub fn probe() -> (u64, Vec<u8>) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    (id, encode(b'P', id, HEADER))
}

/// What a received payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    Data { seq: u64, sent_us: u64 },
    Probe { id: u64 },
    Other,
}

pub fn decode(payload: &[u8]) -> Decoded {
    let Some(at) = payload.windows(MARKER.len()).position(|w| w == MARKER) else {
        return Decoded::Other;
    };
    let rest = &payload[at + MARKER.len()..];
    if rest.len() < 41 {
        return Decoded::Other;
    }
    let number = |b: &[u8]| -> Option<u64> { std::str::from_utf8(b).ok()?.parse().ok() };
    let (Some(a), Some(b)) = (number(&rest[1..21]), number(&rest[21..41])) else {
        return Decoded::Other;
    };
    match rest[0] {
        b'D' => Decoded::Data { seq: a, sent_us: b },
        b'P' => Decoded::Probe { id: a },
        _ => Decoded::Other,
    }
}

/// What one observer saw of one run of `expected` data messages (sequence numbers `0..expected`).
#[derive(Debug)]
pub struct Tally {
    expected: usize,
    seen: Vec<bool>,
    pub unique: usize,
    pub duplicates: usize,
    /// First arrivals of a sequence number lower than one that arrived before it.
    pub order_violations: usize,
    /// Data messages with a sequence number outside `0..expected` or payloads the bench did not write.
    pub foreign: usize,
    max_seq: Option<u64>,
    /// Arrival − send of every first arrival, µs.
    pub latencies_us: Vec<u64>,
    pub first_arrival_us: Option<u64>,
    pub last_arrival_us: u64,
    /// Highest probe id seen.
    pub max_probe: u64,
    /// When anything (data or probe) last arrived.
    pub last_activity: Instant,
}

pub type Shared = Arc<Mutex<Tally>>;

impl Tally {
    pub fn shared(expected: usize) -> Shared {
        Arc::new(Mutex::new(Tally {
            expected,
            seen: vec![false; expected],
            unique: 0,
            duplicates: 0,
            order_violations: 0,
            foreign: 0,
            max_seq: None,
            latencies_us: Vec::with_capacity(expected),
            first_arrival_us: None,
            last_arrival_us: 0,
            max_probe: 0,
            last_activity: Instant::now(),
        }))
    }

    pub fn record(&mut self, payload: &[u8]) {
        let now = now_us();
        self.last_activity = Instant::now();
        match decode(payload) {
            Decoded::Data { seq, sent_us } if (seq as usize) < self.expected => {
                let slot = &mut self.seen[seq as usize];
                if *slot {
                    self.duplicates += 1;
                    return;
                }
                *slot = true;
                self.unique += 1;
                if self.max_seq.is_some_and(|m| m > seq) {
                    self.order_violations += 1;
                }
                self.max_seq = Some(self.max_seq.map_or(seq, |m| m.max(seq)));
                self.latencies_us.push(now.saturating_sub(sent_us));
                self.first_arrival_us.get_or_insert(now);
                self.last_arrival_us = now;
            }
            Decoded::Probe { id } => self.max_probe = self.max_probe.max(id),
            _ => self.foreign += 1,
        }
    }

    /// (p50, p99) of the recorded latencies in ms; `None` without arrivals.
    pub fn percentiles_ms(&self) -> Option<(f64, f64)> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let mut l = self.latencies_us.clone();
        l.sort_unstable();
        let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)] as f64 / 1000.0;
        Some((pct(0.50), pct(0.99)))
    }
}

/// Waits until `expected` data messages arrived, or nothing arrived for `stall`; returns whether all arrived.
pub async fn wait_all(tally: &Shared, stall: Duration) -> bool {
    loop {
        {
            let t = tally.lock().expect("tally lock");
            if t.unique >= t.expected {
                return true;
            }
            if t.last_activity.elapsed() >= stall {
                return false;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
