//! RabbitMQ specifics: a node of its own per instance (node name, distribution port, private epmd, cookie,
//! data and log dirs under `{dir}/rabbitmq`), run as the `rabbitmq` user when the tests run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

use super::free_port;

#[derive(Debug)]
pub(crate) struct Rabbit {
    dir: PathBuf,
    node: String,
    dist_port: u16,
    epmd_port: u16,
    /// uid/gid to run as (the `rabbitmq` user) when we are root.
    owner: Option<(u32, u32)>,
}

impl Rabbit {
    pub(crate) fn new(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let owner = if super::running_as_root() {
            Some(user_ids("rabbitmq").context(
                "running as root, but there is no `rabbitmq` user to run RabbitMQ as: install the Debian package \
                 `rabbitmq-server` (`make deps`)",
            )?)
        } else {
            None
        };
        Ok(Rabbit {
            dir: dir.to_path_buf(),
            node: format!("rabbit-{port}@localhost"),
            dist_port: free_port(),
            epmd_port: free_port(),
            owner,
        })
    }

    fn base(&self) -> PathBuf {
        self.dir.join("rabbitmq")
    }

    fn home(&self) -> PathBuf {
        self.base().join("home")
    }

    /// Creates the node's dirs, cookie, plugin and env files if missing, and hands `{dir}` to the
    /// `rabbitmq` user. Called before every (re)start, as the test may have added files.
    pub(crate) fn prepare(&self) -> anyhow::Result<()> {
        for sub in ["home", "mnesia", "log"] {
            let path = self.base().join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        let plugins = self.dir.join("enabled_plugins");
        if !plugins.exists() {
            std::fs::write(&plugins, "[].\n")?;
        }
        let env_file = self.dir.join("rabbitmq-env.conf");
        if !env_file.exists() {
            std::fs::write(
                &env_file,
                "# edgewire-e2e: settings come from the environment\n",
            )?;
        }
        let cookie = self.home().join(".erlang.cookie");
        if !cookie.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(&cookie, format!("EDGEWIREE2E{}", self.dist_port))?;
            std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))?;
        }
        if let Some((uid, gid)) = self.owner {
            chown_recursive(&self.dir, uid, gid)?;
        }
        Ok(())
    }

    pub(crate) fn configure(&self, cmd: &mut Command, port: u16) {
        use std::os::unix::process::CommandExt;
        let base = self.base();
        cmd.current_dir(self.home())
            .env("HOME", self.home())
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", base.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", base.join("log"))
            .env("RABBITMQ_LOGS", "-")
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq.conf"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                self.dir.join("advanced.config"),
            )
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.dir.join("enabled_plugins"),
            )
            .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf"))
            .env("RABBITMQ_PID_FILE", base.join("rabbitmq.pid"))
            // No busy-waiting schedulers: several nodes share a small CI machine.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "+sbwt none +sbwtdcpu none +sbwtdio none",
            )
            .env_remove("RABBITMQ_USE_LONGNAME")
            .env_remove("RABBITMQ_ALLOW_INPUT");
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid); // std drops supplementary groups when uid is set
            cmd.env("USER", "rabbitmq").env("LOGNAME", "rabbitmq");
        }
    }

    /// Stops the node's private epmd (Erlang starts it as a daemon outside our process group).
    pub(crate) fn stop_epmd(&self) {
        let _ = Command::new("epmd")
            .arg("-port")
            .arg(self.epmd_port.to_string())
            .arg("-kill")
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// uid and gid of `user` from /etc/passwd.
fn user_ids(user: &str) -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == user)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .with_context(|| format!("no user {user:?} in /etc/passwd"))
}

fn chown_recursive(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_recursive(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
