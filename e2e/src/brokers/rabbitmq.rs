//! RabbitMQ specifics: a node of its own per instance (node name, distribution port, private epmd, cookie,
//! data and log dirs under `{dir}/rabbitmq`), run as the `rabbitmq` user when the tests run as root.
//! Nodes of a [`RabbitCluster`] share one epmd and one cookie instead, and have names known before any
//! of them starts, so a peer discovery config can list them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

use super::{BrokerProcess, Kind, free_port};

/// What a cluster node shares with its peers.
#[derive(Debug, Clone)]
pub(crate) struct ClusterNode {
    pub(crate) node: String,
    pub(crate) epmd_port: u16,
    pub(crate) cookie: String,
}

/// RabbitMQ nodes on loopback that can form one cluster: one epmd port and one Erlang cookie for all,
/// node names fixed up front ([`Self::node_name`]). The shared epmd is stopped when this is dropped.
///
/// ```no_run
/// use edgewire_e2e::brokers::RabbitCluster;
///
/// let cluster = RabbitCluster::new();
/// let conf = format!(
///     "cluster_formation.peer_discovery_backend = classic_config\n\
///      cluster_formation.classic_config.nodes.1 = {}\n\
///      cluster_formation.classic_config.nodes.2 = {}\n",
///     cluster.node_name(0),
///     cluster.node_name(1)
/// );
/// let first = cluster.start_node(0, &conf, &[])?;
/// let second = cluster.start_node(1, &conf, &[])?; // joins the first
/// # anyhow::Ok(())
/// ```
#[derive(Debug)]
pub struct RabbitCluster {
    id: u16,
    epmd_port: u16,
    cookie: String,
}

impl RabbitCluster {
    pub fn new() -> Self {
        let epmd_port = free_port();
        RabbitCluster {
            id: free_port(),
            epmd_port,
            cookie: format!("EDGEWIREE2ECLUSTER{epmd_port}"),
        }
    }

    /// The short node name of node `i` (`rabbit-<id>-<i>@localhost`).
    pub fn node_name(&self, i: usize) -> String {
        format!("rabbit-{}-{i}@localhost", self.id)
    }

    /// Starts node `i` like [`BrokerProcess::start`] (same placeholders, files and ports), named
    /// [`Self::node_name`]`(i)`, registered with the shared epmd, holding the shared cookie.
    pub fn start_node(
        &self,
        i: usize,
        config: &str,
        files: &[(&str, &[u8])],
    ) -> anyhow::Result<BrokerProcess> {
        let node = ClusterNode {
            node: self.node_name(i),
            epmd_port: self.epmd_port,
            cookie: self.cookie.clone(),
        };
        BrokerProcess::start_with(Kind::RabbitMq, config, files, Some(&node), &mut free_port)
    }
}

impl Default for RabbitCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RabbitCluster {
    fn drop(&mut self) {
        stop_epmd(self.epmd_port);
    }
}

#[derive(Debug)]
pub(crate) struct Rabbit {
    dir: PathBuf,
    node: String,
    dist_port: u16,
    epmd_port: u16,
    cookie: String,
    /// The epmd is this node's alone (stopped with it), not a cluster's.
    own_epmd: bool,
    /// uid/gid to run as (the `rabbitmq` user) when we are root.
    owner: Option<(u32, u32)>,
}

impl Rabbit {
    pub(crate) fn new(
        dir: &Path,
        port: u16,
        cluster: Option<&ClusterNode>,
        pick: &mut dyn FnMut() -> u16,
    ) -> anyhow::Result<Self> {
        let owner = if super::running_as_root() {
            Some(user_ids("rabbitmq").context(
                "running as root, but there is no `rabbitmq` user to run RabbitMQ as: install the Debian package \
                 `rabbitmq-server` (`make deps`)",
            )?)
        } else {
            None
        };
        let dist_port = pick();
        Ok(match cluster {
            Some(c) => Rabbit {
                dir: dir.to_path_buf(),
                node: c.node.clone(),
                dist_port,
                epmd_port: c.epmd_port,
                cookie: c.cookie.clone(),
                own_epmd: false,
                owner,
            },
            None => Rabbit {
                dir: dir.to_path_buf(),
                node: format!("rabbit-{port}@localhost"),
                dist_port,
                epmd_port: pick(),
                cookie: format!("EDGEWIREE2E{dist_port}"),
                own_epmd: true,
                owner,
            },
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
            std::fs::write(&cookie, &self.cookie)?;
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

    /// Stops the node's private epmd (Erlang starts it as a daemon outside our process group); a cluster
    /// node leaves the shared one to its [`RabbitCluster`].
    pub(crate) fn stop_epmd(&self) {
        if self.own_epmd {
            stop_epmd(self.epmd_port);
        }
    }
}

fn stop_epmd(port: u16) {
    let _ = Command::new("epmd")
        .arg("-port")
        .arg(port.to_string())
        .arg("-kill")
        .env("ERL_EPMD_PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
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
