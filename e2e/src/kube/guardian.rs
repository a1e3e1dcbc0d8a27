//! The guardian: a tiny shell process that tears the control plane down when the test process goes
//! away, however it goes (a normal exit with the control plane in a `static` that is never dropped, a
//! panic, `kill -9`).
//!
//! It reads commands from a pipe whose write end only this process holds (Rust opens pipes close-on-exec,
//! so no child inherits it). End of file means the holder is gone: it SIGKILLs every process a test
//! [adopted](Guardian::adopt) into its process group (operators, agents), stops every registered
//! component (SIGTERM newest first, SIGKILL after 10 s each; etcd was started first and stops last, since a
//! kube-apiserver without etcd takes minutes to stop), removes the work directory unless told to keep it,
//! and finally SIGKILLs its own process group, so nothing outlives the run.
//!
//! Commands, one per line: `pid N` (a component to stop), `keep` (keep the work directory and say where).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

use anyhow::Context;

const SCRIPT: &str = r#"
trap '' INT TERM HUP PIPE
dir=$1; keep=$2; pids=
while IFS= read -r line; do
  case $line in
    "pid "*) pids="${line#pid } $pids" ;;
    keep) keep=1 ;;
  esac
done
# First the processes the tests adopted (operators, agents: every member of this process group that is
# neither a component nor this shell), so the kube-apiserver has no clients left when it stops.
for f in /proc/[0-9]*/stat; do
  read -r p _ _ _ g _ 2>/dev/null < "$f" || continue
  [ "$g" = "$$" ] && [ "$p" != "$$" ] || continue
  case " $pids " in *" $p "*) continue ;; esac
  kill -KILL "$p" 2>/dev/null
done
alive() { # running, not a zombie (a dead child the test process did not reap)
  st=
  [ -r "/proc/$1/stat" ] && read -r _ _ st _ 2>/dev/null < "/proc/$1/stat"
  [ -n "$st" ] && [ "$st" != Z ]
}
for p in $pids; do
  alive "$p" || continue
  kill -TERM "$p" 2>/dev/null
  i=0
  while alive "$p" && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
  alive "$p" && kill -KILL "$p" 2>/dev/null
done
if [ "$keep" = 1 ]; then
  echo "e2e: control plane stopped; logs kept in $dir" >&2
else
  rm -rf "$dir"
fi
kill -KILL 0
"#;

/// The guardian process and the write end of its pipe.
pub struct Guardian {
    child: Mutex<Option<Child>>,
    stdin: Mutex<Option<ChildStdin>>,
    pgid: u32,
}

impl Guardian {
    /// Starts the guardian of work directory `dir`, in a new process group. `keep`: keep `dir` even on
    /// success (`EDGEWIRE_E2E_KEEP`).
    pub fn start(dir: &Path, keep: bool) -> anyhow::Result<Guardian> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("edgewire-e2e-guardian")
            .arg(dir)
            .arg(if keep { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .context("starting the guardian (sh)")?;
        let stdin = child.stdin.take().context("the guardian's stdin")?;
        Ok(Guardian {
            pgid: child.id(),
            child: Mutex::new(Some(child)),
            stdin: Mutex::new(Some(stdin)),
        })
    }

    fn send(&self, line: &str) -> anyhow::Result<()> {
        let mut stdin = self.stdin.lock().unwrap_or_else(|e| e.into_inner());
        let pipe = stdin.as_mut().context("the guardian was closed")?;
        writeln!(pipe, "{line}")
            .and_then(|_| pipe.flush())
            .context("writing to the guardian (did it die?)")
    }

    /// Puts a command into the guardian's process group: the process is killed when the test process
    /// is gone, even if it is killed. Call before `spawn`.
    pub fn adopt(&self, cmd: &mut Command) {
        cmd.process_group(self.pgid as i32);
    }

    /// Registers a component the guardian stops (in reverse registration order).
    pub fn register(&self, pid: u32) -> anyhow::Result<()> {
        self.send(&format!("pid {pid}"))
    }

    /// Keep the work directory when the control plane stops (a test failed).
    pub fn keep(&self) {
        // A dead guardian cannot remove anything either.
        let _ = self.send("keep");
    }

    /// Closes the pipe and waits until the guardian has stopped everything (an owned control plane
    /// being dropped; a `static` one never is, and the process exit closes the pipe instead).
    pub fn shut_down(&self) {
        drop(self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.wait();
        }
    }
}
