//! The syncer thread: `fdatasync` of the active segment beside the writer, publishing `durable`.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use tokio::sync::watch;

use super::Stats;

/// What the syncer thread is asked to make durable.
struct SyncState {
    /// The active segment as of the last write (a duplicate of the writer's handle).
    file: Option<File>,
    /// Last sequence number written to `file` (and everything before it).
    written: u64,
    /// Last sequence number made durable.
    synced: u64,
    stop: bool,
}

/// Runs `fdatasync` beside the writer, so that writing (and forwarding) never waits for the disk.
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

    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn request(&self, file: File, written: u64) {
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

    pub(super) fn run(&self, durable: &watch::Sender<u64>, stats: &Stats) {
        loop {
            let (file, upto) = {
                let mut s = self.lock();
                while s.written <= s.synced && !s.stop {
                    s = self.wake.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                if s.written <= s.synced {
                    return;
                }
                match s.file.take() {
                    Some(f) => (f, s.written),
                    None => return,
                }
            };
            if let Err(e) = file.sync_data() {
                tracing::error!(error = %e, "spool fsync failed");
                eprintln!("edgewire-agent: spool fsync failed: {e}");
                self.failed.store(true, Ordering::SeqCst);
                return;
            }
            stats.commits.fetch_add(1, Ordering::Relaxed);
            {
                let mut s = self.lock();
                s.synced = s.synced.max(upto);
            }
            let _ = durable.send(upto);
        }
    }
}
