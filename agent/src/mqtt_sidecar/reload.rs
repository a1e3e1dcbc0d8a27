//! Hot reload: when the mounted config Secret's `passwd` or `acl` changes, send Mosquitto SIGHUP.
//!
//! Mosquitto 2 re-reads its password and ACL files on SIGHUP without dropping anyone whose login still
//! holds (`per_listener_settings false`); a client whose password changed is disconnected and must log in
//! again with the new one. `mosquitto.conf` changes (listeners) need a restart, which the operator does by
//! rolling the pod on its config-hash annotation; the sidecar only logs them.
//!
//! The kubelet updates a Secret volume by writing a new timestamped directory and atomically swapping the
//! `..data` symlink to it (the files are symlinks through `..data`). The sidecar polls: it reads the files
//! through the resolved `..data` (so `passwd` and `acl` come from the same generation), hashes their
//! contents, and signals Mosquitto when the hash differs from the one Mosquitto has loaded. A file missing
//! mid-swap skips the round; a failed signal is retried on the next round.
//!
//! Mosquitto is found by scanning `/proc/*/comm` (the pod shares one process namespace), and is signalled
//! only if it catches SIGHUP (`SigCgt`): SIGHUP's default action would kill a Mosquitto still starting up.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The files of the config Secret.
pub const CONFIG_FILE: &str = "mosquitto.conf";
pub const PASSWD_FILE: &str = "passwd";
pub const ACL_FILE: &str = "acl";
/// The symlink the kubelet swaps to publish a new version of a Secret volume.
const DATA_LINK: &str = "..data";
/// Mosquitto's process name (`/proc/<pid>/comm`).
pub const MOSQUITTO_COMM: &str = "mosquitto";
/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on every Linux architecture we run on).
const USER_HZ: f64 = 100.0;
/// Files written more than this long after Mosquitto started are newer than what it loaded at start-up.
const STARTUP_SLACK: Duration = Duration::from_millis(500);

/// What the sidecar knows of the mounted files at one point in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Hash of the contents of `passwd` and `acl` (what SIGHUP reloads).
    pub credentials: u64,
    /// Hash of `mosquitto.conf`'s contents; `None` if there is none.
    pub config: Option<u64>,
    /// The newest modification time among the files.
    pub modified: SystemTime,
}

/// Reads the files in `dir` (through `..data` when it is a kubelet Secret volume). `Ok(None)` when
/// `passwd` or `acl` is missing: a swap in progress, or not written yet.
pub fn snapshot(dir: &Path) -> io::Result<Option<Snapshot>> {
    let link = dir.join(DATA_LINK);
    let base = match std::fs::symlink_metadata(&link) {
        Ok(_) => match std::fs::canonicalize(&link) {
            Ok(target) => target,
            // Swapped and the old generation removed between the two calls.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => dir.to_path_buf(),
        Err(e) => return Err(e),
    };
    let Some((passwd, passwd_modified)) = read_file(&base.join(PASSWD_FILE))? else {
        return Ok(None);
    };
    let Some((acl, acl_modified)) = read_file(&base.join(ACL_FILE))? else {
        return Ok(None);
    };
    let config = read_file(&base.join(CONFIG_FILE))?;
    let mut modified = passwd_modified.max(acl_modified);
    if let Some((_, m)) = &config {
        modified = modified.max(*m);
    }
    // Slices hash their length first, so the two files cannot run into each other.
    let mut h = DefaultHasher::new();
    passwd.hash(&mut h);
    acl.hash(&mut h);
    Ok(Some(Snapshot {
        credentials: h.finish(),
        config: config.map(|(bytes, _)| {
            let mut h = DefaultHasher::new();
            bytes.hash(&mut h);
            h.finish()
        }),
        modified,
    }))
}

/// Contents and modification time of `path` (symlinks followed); `None` if it does not exist.
fn read_file(path: &Path) -> io::Result<Option<(Vec<u8>, SystemTime)>> {
    let read =
        std::fs::read(path).and_then(|bytes| Ok((bytes, std::fs::metadata(path)?.modified()?)));
    match read {
        Ok(r) => Ok(Some(r)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    }
}

/// The pid of the one `mosquitto` process in `proc_root` other than `own_pid`. With several (not in a pod,
/// where the namespace holds one broker), the one whose command line names `config_dir`.
pub fn find_mosquitto(proc_root: &Path, own_pid: u32, config_dir: &Path) -> Result<u32, String> {
    let entries = std::fs::read_dir(proc_root)
        .map_err(|e| format!("cannot list {}: {e}", proc_root.display()))?;
    let mut found: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own_pid)
        .filter(|pid| {
            std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
                .is_ok_and(|comm| comm.trim_end() == MOSQUITTO_COMM)
        })
        .collect();
    found.sort_unstable();
    match found.as_slice() {
        [] => Err(format!(
            "no {MOSQUITTO_COMM} process in {} (is the pod's process namespace shared?)",
            proc_root.display()
        )),
        [pid] => Ok(*pid),
        several => {
            let named: Vec<u32> = several
                .iter()
                .copied()
                .filter(|pid| {
                    std::fs::read(proc_root.join(pid.to_string()).join("cmdline")).is_ok_and(
                        |cmdline| {
                            // Path components, so `/cfg` does not claim `/cfg2/mosquitto.conf`.
                            String::from_utf8_lossy(&cmdline)
                                .split('\0')
                                .any(|arg| Path::new(arg).starts_with(config_dir))
                        },
                    )
                })
                .collect();
            match named.as_slice() {
                [pid] => Ok(*pid),
                _ => Err(format!(
                    "{} {MOSQUITTO_COMM} processes ({several:?}), none alone started from {}; pass --mosquitto-pid",
                    several.len(),
                    config_dir.display()
                )),
            }
        }
    }
}

/// Whether a `/proc/<pid>/status` says the process catches SIGHUP (`SigCgt` bit 0); `None` if the line is
/// missing or malformed.
pub fn catches_sighup(status: &str) -> Option<bool> {
    let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
    let mask = u64::from_str_radix(mask.trim(), 16).ok()?;
    Some(mask & 1 == 1)
}

/// Seconds from boot to the start of the process whose `/proc/<pid>/stat` this is (field 22).
pub fn started_after_boot(stat: &str) -> Option<f64> {
    // `pid (comm) state ...`: comm may hold spaces and parentheses, so count fields after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    // After `)`: field 3 (state) is the first; starttime is field 22.
    let ticks: u64 = rest.split_whitespace().nth(22 - 3)?.parse().ok()?;
    Some(ticks as f64 / USER_HZ)
}

/// Whether files last modified at `modified` are newer than what process `pid` loaded when it started:
/// written more than [`STARTUP_SLACK`] after it started. `None` if `/proc` does not tell.
pub fn modified_after_start(proc_root: &Path, pid: u32, modified: SystemTime) -> Option<bool> {
    let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    let started = started_after_boot(&stat)?;
    let uptime: f64 = std::fs::read_to_string(proc_root.join("uptime"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let process_age = uptime - started;
    let files_age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default()
        .as_secs_f64();
    Some(files_age + STARTUP_SLACK.as_secs_f64() < process_age)
}

/// Sends SIGHUP to `pid`, if it catches it.
pub fn send_sighup(proc_root: &Path, pid: u32) -> Result<(), String> {
    let status = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status"))
        .map_err(|e| format!("{MOSQUITTO_COMM} (pid {pid}) is gone: {e}"))?;
    match catches_sighup(&status) {
        Some(true) => {}
        Some(false) => {
            return Err(format!(
                "{MOSQUITTO_COMM} (pid {pid}) does not handle SIGHUP (yet: still starting?); not signalled"
            ));
        }
        None => return Err(format!("cannot read the signal mask of pid {pid}")),
    }
    kill_hup(pid)
}

/// `kill(pid, SIGHUP)`. The crate has no safe `kill(2)` binding yet (`unsafe` is forbidden), so this asks
/// the shell's `kill` builtin: `/bin/sh` is in the agent image, a `kill` binary (procps) is not.
fn kill_hup(pid: u32) -> Result<(), String> {
    let raw = i32::try_from(pid).map_err(|_| format!("bad pid {pid}"))?;
    let pid = rustix::process::Pid::from_raw(raw).ok_or_else(|| format!("bad pid {raw}"))?;
    rustix::process::kill_process(pid, rustix::process::Signal::HUP)
        .map_err(|e| format!("kill -HUP {raw}: {e}"))
}

/// Why Mosquitto was (to be) signalled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `passwd` or `acl` changed while the sidecar watched.
    Changed,
    /// When the sidecar started, the files were newer than the running Mosquitto (changed while no sidecar
    /// watched, e.g. during a sidecar restart).
    NewerThanBroker,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Changed => "passwd or acl changed",
            Reason::NewerThanBroker => "passwd or acl are newer than the running Mosquitto",
        }
    }
}

/// The outcome of one [`Watcher::poll`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `passwd` or `acl` is missing (mid-swap or not there yet), for this many rounds in a row.
    Missing(u32),
    /// The files could not be read.
    ReadError(String),
    /// First read: the files are what Mosquitto loaded.
    Baseline,
    /// Nothing to reload.
    Unchanged,
    /// Mosquitto was sent SIGHUP.
    Reloaded { pid: u32, reason: Reason },
    /// Mosquitto should reload but could not be signalled; retried next round.
    Failed { reason: Reason, error: String },
}

/// One poll's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    pub outcome: Outcome,
    /// `mosquitto.conf` differs from the one seen in the previous round (needs a Mosquitto restart).
    pub config_changed: bool,
}

/// Polls the config dir and signals Mosquitto; the state between rounds.
#[derive(Debug)]
pub struct Watcher {
    dir: PathBuf,
    proc_root: PathBuf,
    pid: Option<u32>,
    own_pid: u32,
    /// The credentials hash Mosquitto has loaded, as far as the sidecar knows; `None` until the first
    /// round, or when Mosquitto needs a reload the sidecar could not yet send.
    loaded: Option<u64>,
    /// `mosquitto.conf` as last seen (`None` before the first round).
    config: Option<Option<u64>>,
    missing: u32,
}

impl Watcher {
    /// Watches `dir`; signals `pid`, or the `mosquitto` process found in `proc_root` when `None`.
    pub fn new(dir: PathBuf, pid: Option<u32>, proc_root: PathBuf) -> Self {
        Watcher {
            dir,
            proc_root,
            pid,
            own_pid: std::process::id(),
            loaded: None,
            config: None,
            missing: 0,
        }
    }

    /// Whether a first round has read the files.
    pub fn watching(&self) -> bool {
        self.config.is_some()
    }

    fn mosquitto(&self) -> Result<u32, String> {
        match self.pid {
            Some(pid) => Ok(pid),
            None => find_mosquitto(&self.proc_root, self.own_pid, &self.dir),
        }
    }

    /// One round: read, compare, signal if needed. Blocking (file reads, `/proc`, a `kill`).
    pub fn poll(&mut self) -> Round {
        let snap = match snapshot(&self.dir) {
            Ok(Some(s)) => s,
            Ok(None) => {
                self.missing += 1;
                return Round {
                    outcome: Outcome::Missing(self.missing),
                    config_changed: false,
                };
            }
            Err(e) => {
                return Round {
                    outcome: Outcome::ReadError(e.to_string()),
                    config_changed: false,
                };
            }
        };
        self.missing = 0;
        let Some(previous_config) = self.config.replace(snap.config) else {
            // First round. Mosquitto loaded these files when it started, unless they changed after that
            // (while no sidecar watched): then it needs a reload now.
            let stale = self.mosquitto().ok().is_some_and(|pid| {
                modified_after_start(&self.proc_root, pid, snap.modified).unwrap_or(false)
            });
            if !stale {
                self.loaded = Some(snap.credentials);
                return Round {
                    outcome: Outcome::Baseline,
                    config_changed: false,
                };
            }
            return Round {
                outcome: self.reload(snap.credentials, Reason::NewerThanBroker),
                config_changed: false,
            };
        };
        let config_changed = previous_config != snap.config;
        let outcome = match self.loaded {
            Some(loaded) if loaded == snap.credentials => Outcome::Unchanged,
            // Never signalled since a stale start: still the start-up reason.
            None => self.reload(snap.credentials, Reason::NewerThanBroker),
            Some(_) => self.reload(snap.credentials, Reason::Changed),
        };
        Round {
            outcome,
            config_changed,
        }
    }

    fn reload(&mut self, credentials: u64, reason: Reason) -> Outcome {
        match self
            .mosquitto()
            .and_then(|pid| send_sighup(&self.proc_root, pid).map(|()| pid))
        {
            Ok(pid) => {
                self.loaded = Some(credentials);
                Outcome::Reloaded { pid, reason }
            }
            Err(error) => Outcome::Failed { reason, error },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write_kubelet_generation(dir: &Path, generation: &str, passwd: &str, acl: &str) {
        let gen_dir = dir.join(generation);
        fs::create_dir(&gen_dir).unwrap();
        fs::write(gen_dir.join(PASSWD_FILE), passwd).unwrap();
        fs::write(gen_dir.join(ACL_FILE), acl).unwrap();
        fs::write(gen_dir.join(CONFIG_FILE), "listener 1883\n").unwrap();
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(generation, &tmp).unwrap();
        fs::rename(&tmp, dir.join(DATA_LINK)).unwrap();
        for f in [PASSWD_FILE, ACL_FILE, CONFIG_FILE] {
            let _ = std::os::unix::fs::symlink(format!("{DATA_LINK}/{f}"), dir.join(f));
        }
    }

    #[test]
    fn snapshot_follows_the_kubelet_data_link_and_hashes_contents() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(snapshot(dir.path()).unwrap(), None, "no files yet");
        write_kubelet_generation(dir.path(), "..2026_01_01_00_00_00.1", "a:x\n", "user a\n");
        let first = snapshot(dir.path()).unwrap().unwrap();
        assert!(first.config.is_some());
        write_kubelet_generation(dir.path(), "..2026_01_01_00_00_00.2", "a:x\n", "user a\n");
        assert_eq!(
            snapshot(dir.path()).unwrap().unwrap().credentials,
            first.credentials,
            "same contents, same hash"
        );
        write_kubelet_generation(dir.path(), "..2026_01_01_00_00_00.3", "a:y\n", "user a\n");
        assert_ne!(
            snapshot(dir.path()).unwrap().unwrap().credentials,
            first.credentials
        );
        // Moving a byte from one file to the other is a change.
        write_kubelet_generation(dir.path(), "..2026_01_01_00_00_00.4", "a:y\nu", "ser a\n");
        let moved = snapshot(dir.path()).unwrap().unwrap();
        write_kubelet_generation(dir.path(), "..2026_01_01_00_00_00.5", "a:y\n", "user a\n");
        assert_ne!(
            snapshot(dir.path()).unwrap().unwrap().credentials,
            moved.credentials
        );
        // The old generation removed under the link: a round to skip.
        fs::remove_dir_all(dir.path().join("..2026_01_01_00_00_00.5")).unwrap();
        assert_eq!(snapshot(dir.path()).unwrap(), None);
    }

    fn fake_process(proc_root: &Path, pid: u32, comm: &str, cmdline: &[&str]) {
        let d = proc_root.join(pid.to_string());
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        fs::write(d.join("cmdline"), cmdline.join("\0") + "\0").unwrap();
    }

    #[test]
    fn finds_mosquitto_by_name_not_itself_and_disambiguates_by_config_dir() {
        let proc_root = tempfile::tempdir().unwrap();
        let p = proc_root.path();
        let dir = Path::new("/mosquitto/config");
        fs::create_dir(p.join("self")).unwrap();
        fake_process(p, 1, "pause", &["/pause"]);
        fake_process(p, 7, "edgewire-agent", &["edgewire-agent", "mqtt-sidecar"]);
        assert!(
            find_mosquitto(p, 7, dir)
                .unwrap_err()
                .contains("no mosquitto")
        );
        fake_process(
            p,
            12,
            "mosquitto",
            &["mosquitto", "-c", "/mosquitto/config/mosquitto.conf"],
        );
        assert_eq!(find_mosquitto(p, 7, dir), Ok(12));
        assert!(find_mosquitto(p, 12, dir).is_err(), "never itself");
        fake_process(
            p,
            40,
            "mosquitto",
            &["mosquitto", "-c", "/elsewhere/mosquitto.conf"],
        );
        assert_eq!(find_mosquitto(p, 7, dir), Ok(12));
        fake_process(
            p,
            42,
            "mosquitto",
            &["mosquitto", "-c", "/mosquitto/config2/mosquitto.conf"],
        );
        assert_eq!(
            find_mosquitto(p, 7, dir),
            Ok(12),
            "a longer dir name is another dir"
        );
        fake_process(
            p,
            41,
            "mosquitto",
            &["mosquitto", "-c", "/mosquitto/config/other.conf"],
        );
        assert!(
            find_mosquitto(p, 7, dir)
                .unwrap_err()
                .contains("--mosquitto-pid")
        );
    }

    #[test]
    fn reads_the_signal_mask_and_the_start_time() {
        let status = "Name:\tmosquitto\nSigBlk:\t0000000000004a03\nSigIgn:\t0000000000001000\nSigCgt:\t0000000000004a03\n";
        assert_eq!(catches_sighup(status), Some(true));
        assert_eq!(catches_sighup("SigCgt:\t0000000000004a02\n"), Some(false));
        assert_eq!(catches_sighup("Name: x\n"), None);
        let stat = "4242 (mosq (a) b) S 1 4242 4242 0 -1 4194560 2000 0 0 0 3 1 0 0 20 0 1 0 123456 1000000 500";
        assert_eq!(started_after_boot(stat), Some(1234.56));
        // This very process started after boot, before now.
        let own = fs::read_to_string("/proc/self/stat").unwrap();
        let uptime: f64 = fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let started = started_after_boot(&own).unwrap();
        assert!(started > 0.0 && started <= uptime, "{started} vs {uptime}");
    }

    #[test]
    fn modification_is_compared_with_the_process_start() {
        let proc_root = tempfile::tempdir().unwrap();
        let p = proc_root.path();
        // Up 1000 s; pid 9 started 500 s after boot, so it is 500 s old.
        fs::write(p.join("uptime"), "1000.00 1900.00\n").unwrap();
        fs::create_dir(p.join("9")).unwrap();
        let mut fields = vec!["0"; 50];
        fields[22 - 3] = "50000";
        fs::write(
            p.join("9").join("stat"),
            format!("9 (mosquitto) {}", fields.join(" ")),
        )
        .unwrap();
        let ago = |s| SystemTime::now() - Duration::from_secs(s);
        assert_eq!(
            modified_after_start(p, 9, ago(100)),
            Some(true),
            "written after it started"
        );
        assert_eq!(
            modified_after_start(p, 9, ago(600)),
            Some(false),
            "written before"
        );
        assert_eq!(
            modified_after_start(p, 10, ago(100)),
            None,
            "no such process"
        );
    }

    #[test]
    fn watcher_takes_a_baseline_then_reports_changes_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A pid that is not running: reloads fail, and are retried.
        let mut w = Watcher::new(d.to_path_buf(), Some(u32::MAX - 1), PathBuf::from("/proc"));
        assert_eq!(w.poll().outcome, Outcome::Missing(1));
        assert_eq!(w.poll().outcome, Outcome::Missing(2));
        assert!(!w.watching());
        fs::write(d.join(PASSWD_FILE), "a:x\n").unwrap();
        fs::write(d.join(ACL_FILE), "user a\n").unwrap();
        fs::write(d.join(CONFIG_FILE), "listener 1883\n").unwrap();
        assert_eq!(w.poll().outcome, Outcome::Baseline);
        assert!(w.watching());
        assert_eq!(w.poll().outcome, Outcome::Unchanged);
        fs::write(d.join(CONFIG_FILE), "listener 1884\n").unwrap();
        let r = w.poll();
        assert_eq!(r.outcome, Outcome::Unchanged);
        assert!(r.config_changed);
        assert!(!w.poll().config_changed, "reported once");
        fs::write(d.join(ACL_FILE), "user a\ntopic read x\n").unwrap();
        for _ in 0..2 {
            match w.poll().outcome {
                Outcome::Failed { reason, error } => {
                    assert_eq!(reason, Reason::Changed);
                    assert!(error.contains("is gone"), "{error}");
                }
                other => panic!("expected a failed reload, got {other:?}"),
            }
        }
        fs::remove_file(d.join(PASSWD_FILE)).unwrap();
        assert_eq!(w.poll().outcome, Outcome::Missing(1));
    }
}
