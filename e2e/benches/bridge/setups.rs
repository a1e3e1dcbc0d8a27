//! The topologies under test: an edge broker, a cloud broker and what bridges them (Mosquitto's own bridge, a
//! NATS leaf node, JetStream sources over the leaf link, or `edgewire-agent bridge`), and the brokers' own
//! ceilings: one broker, the bench's publisher and observer both on it.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use edgewire_e2e::brokers::{BrokerProcess, Kind, free_port, wait_for_port};
use tempfile::TempDir;

use crate::clients::{Target, Watch};

/// Mosquitto as the cloud of every MQTT setup: persistent, no per-client queue cap, so the observer's own
/// session never drops anything (what is lost is lost by the bridge).
const MOSQ_CLOUD: &str = "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                          persistence_location {dir}/\nmax_queued_messages 0\n";
/// Mosquitto's defaults (no persistence, 1,000 queued messages per client session).
const MOSQ_EDGE_DEFAULT: &str = "listener {port} 127.0.0.1\nallow_anonymous true\n";
/// The tuned edge: persistence on, no queue cap (`max_queued_messages 0` = unlimited), and what the operator
/// renders for a Mosquitto it deploys (and the README asks of a bridge edge of one's own): a 1,000-message
/// in-flight window (Mosquitto's default is 20 per client) and TCP_NODELAY. Both bridges run on it: Mosquitto's
/// own bridge sends to the cloud through that window, Edgewire's agent receives through it.
const MOSQ_EDGE_TUNED: &str = "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                               persistence_location {dir}/\nmax_queued_messages 0\n\
                               max_inflight_messages 1000\nset_tcp_nodelay true\n";

/// The edge stream of the JetStream-sources setup and the cloud stream sourcing it.
const EDGE_STREAM: &str = "EDGE";
const CLOUD_STREAM: &str = "CLOUD";
/// The cloud stream that captures what Edgewire publishes with JetStream acks.
const EW_STREAM: &str = "EDGEWIRE";
/// The stream of the JetStream ceiling.
const CEIL_STREAM: &str = "CEILING";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// One Mosquitto configured as every MQTT cloud and the tuned edge; publisher (QoS 1) and observer on it.
    CeilMqtt,
    /// One nats-server (the config of Edgewire's NATS cloud); core publisher and subscriber on it.
    CeilNats,
    /// One JetStream stream: publishes with PubAcks awaited, an ordered consumer reading it.
    CeilJs,
    MosqDefault,
    MosqTuned,
    NatsLeaf,
    JsSources,
    EwMqttToMqtt,
    EwMqttToNats,
    EwMqttToJs,
}

impl Setup {
    pub fn label(self) -> &'static str {
        match self {
            Setup::CeilMqtt => "ceiling: mosquitto",
            Setup::CeilNats => "ceiling: NATS core",
            Setup::CeilJs => "ceiling: NATS JetStream",
            Setup::MosqDefault => "mosquitto bridge, default",
            Setup::MosqTuned => "mosquitto bridge, tuned",
            Setup::NatsLeaf => "NATS leaf node (core)",
            Setup::JsSources => "NATS JetStream sources",
            Setup::EwMqttToMqtt => "Edgewire MQTT->MQTT",
            Setup::EwMqttToNats => "Edgewire MQTT->NATS core",
            Setup::EwMqttToJs => "Edgewire MQTT->NATS JS",
        }
    }

    pub fn is_edgewire(self) -> bool {
        matches!(
            self,
            Setup::EwMqttToMqtt | Setup::EwMqttToNats | Setup::EwMqttToJs
        )
    }

    /// A broker's own ceiling (no bridge: one broker, the bench's publisher and observer on it).
    pub fn is_ceiling(self) -> bool {
        matches!(self, Setup::CeilMqtt | Setup::CeilNats | Setup::CeilJs)
    }

    /// The ceilings of the path's (edge, cloud) brokers: what the edge can give a bridge is at most what one
    /// broker moves from a publisher to a subscriber, and so is what the cloud can take. The default Mosquitto
    /// edge counts as the tuned one (it only has less to do; its 1,000-message queue cap would drop a fast
    /// publisher's excess, which is not a rate).
    pub fn path(self) -> (Setup, Setup) {
        match self {
            Setup::CeilMqtt | Setup::MosqDefault | Setup::MosqTuned | Setup::EwMqttToMqtt => {
                (Setup::CeilMqtt, Setup::CeilMqtt)
            }
            Setup::CeilNats | Setup::NatsLeaf => (Setup::CeilNats, Setup::CeilNats),
            Setup::CeilJs | Setup::JsSources => (Setup::CeilJs, Setup::CeilJs),
            Setup::EwMqttToNats => (Setup::CeilMqtt, Setup::CeilNats),
            Setup::EwMqttToJs => (Setup::CeilMqtt, Setup::CeilJs),
        }
    }

    /// A short name of the path's brokers, e.g. `mqtt>js`.
    pub fn path_label(self) -> String {
        let short = |c: Setup| match c {
            Setup::CeilNats => "nats",
            Setup::CeilJs => "js",
            _ => "mqtt",
        };
        let (edge, cloud) = self.path();
        format!("{}>{}", short(edge), short(cloud))
    }

    /// The native setup an Edgewire bridge is compared with: the tuned Mosquitto bridge, the NATS leaf node,
    /// JetStream sources.
    pub fn native_anchor(self) -> Option<Setup> {
        match self {
            Setup::EwMqttToMqtt => Some(Setup::MosqTuned),
            Setup::EwMqttToNats => Some(Setup::NatsLeaf),
            Setup::EwMqttToJs => Some(Setup::JsSources),
            _ => None,
        }
    }
}

/// One running topology.
pub struct Topology {
    pub setup: Setup,
    pub edge: BrokerProcess,
    /// `None` for a ceiling: the edge broker is the cloud too.
    cloud: Option<BrokerProcess>,
    pub agent: Option<Agent>,
}

fn mosquitto_bridge(cloud_port: u16) -> String {
    // restart_timeout 1: reconnect a second after the cloud returns instead of Mosquitto's backoff (up to 30 s);
    // it only shortens the wait, it changes nothing about what is kept.
    format!(
        "connection cloud\naddress 127.0.0.1:{cloud_port}\ntopic local/# out 1\ncleansession false\n\
         restart_timeout 1\n"
    )
}

fn nats_cloud(jetstream: bool) -> String {
    let mut c = "listen: 127.0.0.1:{port}\nserver_name: cloud\nleafnodes {\n  listen: 127.0.0.1:{port2}\n}\n"
        .to_string();
    if jetstream {
        c.push_str("jetstream {\n  store_dir: \"{dir}/js\"\n  domain: cloud\n}\n");
    }
    c
}

fn nats_edge(leaf_port: u16, jetstream: bool) -> String {
    let mut c = format!(
        "listen: 127.0.0.1:{{port}}\nserver_name: edge\nleafnodes {{\n  remotes = [ {{ url: \"nats-leaf://127.0.0.1:{leaf_port}\" }} ]\n}}\n"
    );
    if jetstream {
        c.push_str("jetstream {\n  store_dir: \"{dir}/js\"\n  domain: edge\n}\n");
    }
    c
}

fn nats_plain() -> &'static str {
    "listen: 127.0.0.1:{port}\njetstream {\n  store_dir: \"{dir}/js\"\n}\n"
}

fn bridge_yaml(edge_port: u16, cloud: &str) -> String {
    format!(
        "apiVersion: edgewire.dev/v1alpha1\nkind: BridgeLink\nmetadata:\n  name: bench\n  namespace: default\n\
         spec:\n  siteId: site-a\n  edge:\n    endpoint:\n      protocol: mqtt\n      url: \"127.0.0.1:{edge_port}\"\n\
         \x20 cloud:\n    endpoint:\n{cloud}\
         \x20 rules:\n    - direction: EdgeToCloud\n      from: \"local.#\"\n      to: \"edge.site-a.#\"\n      qos: 1\n\
         \x20   - direction: CloudToEdge\n      from: \"cloud.commands.site-a\"\n      to: \"commands\"\n\
         \x20 spool:\n    size: 8Gi\n    maxBytes: 4Gi\n    overflow: RejectNew\n"
    )
}

async fn wait_leaf(cloud: &BrokerProcess) {
    // The leaf connection comes up within a second of both servers running; probes confirm it later.
    let _ = cloud;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

impl Topology {
    pub async fn start(setup: Setup, agent_bin: Option<&Path>) -> anyhow::Result<Self> {
        let block = |f: &dyn Fn() -> anyhow::Result<BrokerProcess>| tokio::task::block_in_place(f);
        let (edge, cloud, agent) = match setup {
            Setup::CeilMqtt => {
                let edge = block(&|| BrokerProcess::start(Kind::Mosquitto, MOSQ_EDGE_TUNED, &[]))?;
                (edge, None, None)
            }
            Setup::CeilNats | Setup::CeilJs => {
                let edge = block(&|| BrokerProcess::start(Kind::Nats, nats_plain(), &[]))?;
                if setup == Setup::CeilJs {
                    create_stream(&edge.url(), CEIL_STREAM, "ceil.>").await?;
                }
                (edge, None, None)
            }
            Setup::MosqDefault | Setup::MosqTuned => {
                let cloud = block(&|| BrokerProcess::start(Kind::Mosquitto, MOSQ_CLOUD, &[]))?;
                let base = if setup == Setup::MosqDefault {
                    MOSQ_EDGE_DEFAULT
                } else {
                    MOSQ_EDGE_TUNED
                };
                let config = format!("{base}{}", mosquitto_bridge(cloud.port()));
                let edge = block(&|| BrokerProcess::start(Kind::Mosquitto, &config, &[]))?;
                (edge, Some(cloud), None)
            }
            Setup::NatsLeaf | Setup::JsSources => {
                let js = setup == Setup::JsSources;
                let cloud = block(&|| BrokerProcess::start(Kind::Nats, &nats_cloud(js), &[]))?;
                let config = nats_edge(cloud.port2(), js);
                let edge = block(&|| BrokerProcess::start(Kind::Nats, &config, &[]))?;
                wait_leaf(&cloud).await;
                if js {
                    create_sources(&edge, &cloud).await?;
                }
                (edge, Some(cloud), None)
            }
            Setup::EwMqttToMqtt | Setup::EwMqttToNats | Setup::EwMqttToJs => {
                let bin =
                    agent_bin.context("the Edgewire setups need the edgewire-agent binary")?;
                let edge = block(&|| BrokerProcess::start(Kind::Mosquitto, MOSQ_EDGE_TUNED, &[]))?;
                let (cloud, endpoint) = match setup {
                    Setup::EwMqttToMqtt => {
                        let cloud =
                            block(&|| BrokerProcess::start(Kind::Mosquitto, MOSQ_CLOUD, &[]))?;
                        // MQTT 3.1.1: the payload travels unchanged (the headers are not sent).
                        let ep = format!(
                            "      protocol: mqtt\n      url: \"127.0.0.1:{}\"\n",
                            cloud.port()
                        );
                        (cloud, ep)
                    }
                    _ => {
                        let cloud = block(&|| BrokerProcess::start(Kind::Nats, nats_plain(), &[]))?;
                        let mut ep =
                            format!("      protocol: nats\n      url: \"{}\"\n", cloud.url());
                        if setup == Setup::EwMqttToJs {
                            create_stream(&cloud.url(), EW_STREAM, "edge.>").await?;
                            ep.push_str("      jetStream:\n        enabled: true\n");
                        }
                        (cloud, ep)
                    }
                };
                let agent = Agent::start(bin, &bridge_yaml(edge.port(), &endpoint))?;
                (edge, Some(cloud), Some(agent))
            }
        };
        Ok(Topology {
            setup,
            edge,
            cloud,
            agent,
        })
    }

    /// The cloud broker (for a ceiling, the one broker).
    pub fn cloud(&self) -> &BrokerProcess {
        self.cloud.as_ref().unwrap_or(&self.edge)
    }

    pub fn cloud_mut(&mut self) -> &mut BrokerProcess {
        self.cloud.as_mut().unwrap_or(&mut self.edge)
    }

    /// `kill -9` of the process that does the bridging, then started again on the same state: the edge
    /// broker for Mosquitto's bridge and the NATS leaf node, `edgewire-agent bridge` for Edgewire.
    pub fn crash_bridge(&mut self) -> anyhow::Result<()> {
        match &mut self.agent {
            Some(agent) => agent.crash_and_restart(),
            None => {
                self.edge.kill9();
                self.edge.restart()
            }
        }
    }

    /// Where the bench publishes on the edge.
    pub fn target(&self) -> Target {
        match self.setup {
            Setup::NatsLeaf | Setup::CeilNats => Target::NatsCore(self.edge.url()),
            Setup::JsSources | Setup::CeilJs => Target::NatsJs(self.edge.url()),
            _ => Target::Mqtt(self.edge.port()),
        }
    }

    /// How the bench watches the cloud; `persistent` asks for an MQTT session that survives a reconnect.
    pub fn watch(&self, persistent: bool) -> Watch {
        let cloud = self.cloud();
        match self.setup {
            Setup::CeilMqtt | Setup::MosqDefault | Setup::MosqTuned | Setup::EwMqttToMqtt => {
                Watch::Mqtt {
                    port: cloud.port(),
                    persistent,
                }
            }
            Setup::CeilNats | Setup::NatsLeaf | Setup::EwMqttToNats => Watch::NatsCore(cloud.url()),
            Setup::JsSources => Watch::Stream {
                url: cloud.url(),
                stream: CLOUD_STREAM.into(),
            },
            Setup::EwMqttToJs => Watch::Stream {
                url: cloud.url(),
                stream: EW_STREAM.into(),
            },
            Setup::CeilJs => Watch::Stream {
                url: cloud.url(),
                stream: CEIL_STREAM.into(),
            },
        }
    }

    /// (topic published on the edge, topic it arrives on in the cloud) for run `run`.
    pub fn topics(&self, run: &str) -> (String, String) {
        match self.setup {
            Setup::CeilMqtt => {
                let t = format!("ceil/{run}/data");
                (t.clone(), t)
            }
            Setup::CeilNats | Setup::CeilJs => {
                let t = format!("ceil.{run}.data");
                (t.clone(), t)
            }
            Setup::MosqDefault | Setup::MosqTuned => {
                let t = format!("local/{run}/data");
                (t.clone(), t)
            }
            Setup::NatsLeaf | Setup::JsSources => {
                let t = format!("local.{run}.data");
                (t.clone(), t)
            }
            Setup::EwMqttToMqtt => (
                format!("local/{run}/data"),
                format!("edge/site-a/{run}/data"),
            ),
            Setup::EwMqttToNats | Setup::EwMqttToJs => (
                format!("local/{run}/data"),
                format!("edge.site-a.{run}.data"),
            ),
        }
    }
}

async fn create_stream(url: &str, name: &str, subject: &str) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(async_nats::connect(url).await?);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating stream {name} on {url}"))?;
    Ok(())
}

/// The edge stream captures `local.>`; the cloud stream sources it over the leaf link through the edge
/// domain's JetStream API.
async fn create_sources(edge: &BrokerProcess, cloud: &BrokerProcess) -> anyhow::Result<()> {
    use async_nats::jetstream::stream::{Config, External, Source};
    create_stream(&edge.url(), EDGE_STREAM, "local.>").await?;
    let js = async_nats::jetstream::new(async_nats::connect(cloud.url()).await?);
    js.get_or_create_stream(Config {
        name: CLOUD_STREAM.into(),
        sources: Some(vec![Source {
            name: EDGE_STREAM.into(),
            external: Some(External {
                api_prefix: "$JS.edge.API".into(),
                delivery_prefix: None,
            }),
            ..Default::default()
        }]),
        ..Default::default()
    })
    .await
    .context("creating the cloud stream sourcing the edge stream")?;
    Ok(())
}

/// `edgewire-agent bridge` in its own process group with a private dir (config, spool, secrets, log).
pub struct Agent {
    bin: PathBuf,
    child: Option<Child>,
    dir: TempDir,
    pub http_port: u16,
}

impl Agent {
    pub fn start(bin: &Path, yaml: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("edgewire-bench-bridge-")
            .tempdir()?;
        std::fs::write(dir.path().join("bridge.yaml"), yaml)?;
        std::fs::create_dir_all(dir.path().join("spool"))?;
        std::fs::create_dir_all(dir.path().join("secrets"))?;
        let mut agent = Agent {
            bin: bin.to_path_buf(),
            child: None,
            dir,
            http_port: free_port(),
        };
        agent.spawn()?;
        agent.wait_http(Duration::from_secs(30))?;
        Ok(agent)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))?;
        let child = Command::new(&self.bin)
            .arg("bridge")
            .arg("--config")
            .arg(dir.join("bridge.yaml"))
            .arg("--spool-dir")
            .arg(dir.join("spool"))
            .arg("--secrets-dir")
            .arg(dir.join("secrets"))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the agent serves HTTP; errors if it exits first or `timeout` passes.
    fn wait_http(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !wait_for_port(self.http_port, Duration::from_millis(200)) {
            self.ensure_running()?;
            if Instant::now() > deadline {
                bail!(
                    "edgewire-agent bridge did not open its HTTP port in {timeout:?}:\n{}",
                    self.log_tail()
                );
            }
        }
        Ok(())
    }

    /// An error with the log tail if the agent process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            bail!(
                "edgewire-agent bridge exited ({status}):\n{}",
                self.log_tail()
            );
        }
        Ok(())
    }

    /// SIGKILL (a crash: nothing flushed beyond what the agent made durable itself), then the same command
    /// again on the same spool dir. Does not wait for HTTP: with the cloud down the agent may still be
    /// connecting.
    pub fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn()
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The agent's Prometheus text.
    pub fn metrics(&self) -> Option<String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.http_port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        out.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
    }

    /// Sum of the samples of metric `name` (all label sets); `None` when the agent does not export it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_value(&self.metrics()?, name)
    }
}

pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next()?.parse::<f64>().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Finds `edgewire-agent`: `$EDGEWIRE_AGENT_BIN`, else next to the bench's target dir
/// (`target/release/edgewire-agent`, the bench itself being `target/release/deps/bridge-*`). It must have the
/// `bridge` subcommand.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    let build = "build it with `cargo build --release -p edgewire-agent --bin edgewire-agent` (make bench does)";
    let bin = match std::env::var_os("EDGEWIRE_AGENT_BIN").filter(|v| !v.is_empty()) {
        Some(v) => PathBuf::from(v),
        None => {
            let exe = std::env::current_exe()?;
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .context("the bench executable has no target dir")?;
            let release = profile_dir
                .parent()
                .map(|t| t.join("release").join("edgewire-agent"));
            match release {
                Some(p) if p.is_file() => p,
                _ => profile_dir.join("edgewire-agent"),
            }
        }
    };
    if !bin.is_file() {
        bail!("{} not found: {build}", bin.display());
    }
    let help = Command::new(&bin)
        .args(["bridge", "--help"])
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !help.status.success() {
        bail!(
            "{} has no working `bridge` subcommand ({}); {build}",
            bin.display(),
            String::from_utf8_lossy(&help.stderr)
                .lines()
                .next()
                .unwrap_or("")
        );
    }
    Ok(bin)
}

/// `<binary path>: <version>` of the broker the harness starts for `kind` (`$EDGEWIRE_TEST_BIN_<KIND>`, else
/// the package's), for the report's header.
pub fn broker_version(kind: Kind) -> String {
    let bin = match kind.binary() {
        Ok(b) => b,
        Err(e) => return format!("{kind}: {e}"),
    };
    // `nats-server --version` prints `nats-server: v2.15.3`; `mosquitto -h` starts with `mosquitto version 2.0.11`.
    let arg = if kind == Kind::Mosquitto {
        "-h"
    } else {
        "--version"
    };
    let version = Command::new(&bin)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().find_map(|l| {
                l.split_whitespace()
                    .find(|w| {
                        w.trim_start_matches('v')
                            .starts_with(|c: char| c.is_ascii_digit())
                    })
                    .map(str::to_string)
            })
        })
        .unwrap_or_else(|| "version unknown".into());
    format!("{} {version}", bin.display())
}
