//! The syncer thread: `fdatasync` of the active segment beside the writing task, publishing `durable`;
//! between syncs and at least every [`CURSOR_EVERY`], the spool's housekeeping (the cursor file, deleting
//! acknowledged segments).

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::writer::housekeeping;
use super::{CURSOR_EVERY, Shared};

/// A pause in writing this long ends a group commit's wait for more records.
const QUIET: Duration = Duration::from_micros(50);

/// The longest a group commit waits for more records; it waits no longer than the last fsync took either.
const MAX_GATHER: Duration = Duration::from_millis(1);

/// What the syncer thread is asked to make durable.
struct SyncState {
    /// The active segment as of the last write (the writer's handle).
    file: Option<Arc<File>>,
    /// Last sequence number written to `file` (and everything before it).
    written: u64,
    /// Last sequence number made durable.
    synced: u64,
    stop: bool,
}

/// Runs `fdatasync` beside the writing task, so that writing (and forwarding) never waits for the disk.
pub(super) struct Syncer {
    state: Mutex<SyncState>,
    wake: Condvar,
    /// A sync failed: the writer stops.
    pub(super) failed: AtomicBool,
}

impl Syncer {
    /// A syncer with everything up to `written` durable.
    pub(super) fn new(written: u64) -> Self {
        Syncer {
            state: Mutex::new(SyncState {
                file: None,
                written,
                synced: written,
                stop: false,
            }),
            wake: Condvar::new(),
            failed: AtomicBool::new(false),
        }
    }

    /// Group commit: while records keep being written (a gap under [`QUIET`]), waits for them to join
    /// this fsync, for at most `cap`. An MQTT edge broker keeps only a few messages in flight to the
    /// bridge (Mosquitto: 20) and sends the next ones as the PUBACKs of the last commit reach it, one by
    /// one: an fsync started on the first of them would cover that one alone and leave the rest for the
    /// next, halving what the window carries per fsync (docs/bridge-profile.md).
    fn gather<'a>(
        &'a self,
        mut s: MutexGuard<'a, SyncState>,
        cap: Duration,
    ) -> MutexGuard<'a, SyncState> {
        let until = Instant::now() + cap;
        while !s.stop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            let seen = s.written;
            s = self
                .wake
                .wait_timeout(s, QUIET.min(until - now))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if s.written == seen {
                break;
            }
        }
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn request(&self, file: Arc<File>, written: u64) {
        let mut s = self.lock();
        s.file = Some(file);
        s.written = written;
        drop(s);
        self.wake.notify_one();
    }

    pub(super) fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_one();
    }

    /// Until [`Syncer::stop`]: syncs what was written, publishes `durable`, and keeps house. `written`
    /// is held until the final cursor is on disk, so that a replayer sees the spool stopped only then.
    pub(super) fn run(
        &self,
        shared: &Shared,
        durable: &watch::Sender<u64>,
        written: Arc<watch::Sender<u64>>,
    ) {
        // How long the last fsync took: the most a commit waits for more records to join it.
        let mut last_sync = Duration::ZERO;
        let mut housekeeping_failed = false;
        loop {
            let work = {
                let mut s = self.lock();
                let until = Instant::now() + CURSOR_EVERY;
                while s.written <= s.synced && !s.stop {
                    let now = Instant::now();
                    if now >= until {
                        break;
                    }
                    s = self
                        .wake
                        .wait_timeout(s, until - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                if s.written > s.synced {
                    s = self.gather(s, last_sync.min(MAX_GATHER));
                    s.file.take().map(|f| (f, s.written))
                } else if s.stop {
                    drop(s);
                    // Everything written is durable: the final cursor, and stop.
                    if let Err(e) = housekeeping(shared, true) {
                        tracing::warn!(error = %e, "spool: cannot write the final cursor");
                    }
                    drop(written);
                    return;
                } else {
                    None
                }
            };
            if let Some((file, upto)) = work {
                let started = Instant::now();
                if let Err(e) = file.sync_data() {
                    tracing::error!(error = %e, "spool fsync failed");
                    eprintln!("edgewire-agent: spool fsync failed: {e}");
                    self.failed.store(true, Ordering::SeqCst);
                    return;
                }
                last_sync = started.elapsed();
                shared.stats.commits.fetch_add(1, Ordering::Relaxed);
                {
                    let mut s = self.lock();
                    s.synced = s.synced.max(upto);
                }
                let _ = durable.send(upto);
            }
            match housekeeping(shared, false) {
                // Deleting acknowledged segments is what frees the disk: try again next round.
                Err(e) if !housekeeping_failed => {
                    housekeeping_failed = true;
                    tracing::warn!(error = %e, "spool: cursor or segment deletion failed; retrying");
                }
                Err(_) => {}
                Ok(()) => housekeeping_failed = false,
            }
        }
    }
}
