//! `edgewire-agent`: one binary, one subcommand per data-plane role.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use edgewire_agent::publisher::config::{self, PublisherConfig};

#[derive(Parser)]
#[command(
    name = "edgewire-agent",
    version,
    about = "Edgewire data plane: CloudEvents publisher and broker tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CloudEvents HTTP ingress and publish to the configured broker.
    Publisher {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        limits: edgewire_agent::publisher::Limits,
    },
    /// Bridge edge topics to the cloud through a durable spool, and cloud topics to the edge.
    Bridge(edgewire_agent::bridge::BridgeArgs),
    /// Beside Mosquitto (builtin MqttBroker): Prometheus metrics from $SYS, SIGHUP when passwd/acl change.
    MqttSidecar(edgewire_agent::mqtt_sidecar::SidecarArgs),
    /// Subscribe with the publisher's configuration and print every event (one line each, or JSON).
    Tail {
        #[command(flatten)]
        source: Source,
        /// Print each event as structured-mode CloudEvents JSON.
        #[arg(long)]
        json: bool,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
}

/// Where the configuration comes from: the environment (`EVENT_BROKER_*`), or an EventBroker file.
#[derive(Args)]
struct Source {
    /// An EventBroker YAML file (edge boxes without Kubernetes); without it the environment is read.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory holding referenced Secrets as `DIR/<secret-name>/<key>`.
    #[arg(long, value_name = "DIR", requires = "config")]
    secrets_dir: Option<PathBuf>,
}

impl Source {
    fn load(&self) -> Result<PublisherConfig, config::ConfigError> {
        match &self.config {
            Some(file) => config::file::from_file(file, self.secrets_dir.as_deref()),
            None => config::env::from_process_env(),
        }
    }
}

/// What a command reading the publisher's configuration does with it.
enum Run {
    Publisher(edgewire_agent::publisher::Limits),
    Tail { json: bool, count: Option<usize> },
}

/// One line on stderr, exit code 2: what an operator sees in `kubectl logs` for a bad configuration.
fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("edgewire-agent: {msg}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = edgewire_agent::telemetry::init() {
        return fail(e);
    }
    if let Command::Bridge(args) = &cli.command {
        let args = args.clone();
        return match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(edgewire_agent::bridge::run(args)))
        {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => fail(format!("{e:#}")),
            Err(e) => fail(format!("cannot start the async runtime: {e}")),
        };
    }
    if let Command::MqttSidecar(args) = cli.command {
        return match tokio::runtime::Runtime::new()
            .map(|rt| rt.block_on(edgewire_agent::mqtt_sidecar::run(args)))
        {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => {
                eprintln!("edgewire-agent: {e:#}");
                ExitCode::FAILURE
            }
            Err(e) => fail(format!("cannot start the async runtime: {e}")),
        };
    }
    let (source, run_tail) = match &cli.command {
        Command::Publisher { source, limits } => (source, Run::Publisher(limits.clone())),
        Command::MqttSidecar(_) | Command::Bridge(_) => unreachable!("dispatched above"),
        Command::Tail {
            source,
            json,
            count,
        } => (
            source,
            Run::Tail {
                json: *json,
                count: *count,
            },
        ),
    };
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let listen = match config::env::listen_addr(|k| std::env::var(k).ok()) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let result = rt.block_on(async move {
        match run_tail {
            Run::Publisher(limits) => edgewire_agent::publisher::run(config, listen, limits).await,
            Run::Tail { json, count } => edgewire_agent::tail::run(config, json, count).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgewire-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
