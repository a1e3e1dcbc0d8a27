//! `edgewire-operator`: `run` the controllers, or `render` what they would apply.

use clap::{Parser, Subcommand};
use edgewire_operator::context::{self, Settings};
use edgewire_operator::{render, runtime};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "edgewire-operator",
    version,
    about = "Edgewire's Kubernetes operator"
)]
struct Cli {
    /// Log format: json (default) or text.
    #[arg(
        long,
        global = true,
        default_value = "json",
        env = "EDGEWIRE_LOG_FORMAT"
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster in KUBECONFIG or the in-cluster config.
    Run {
        /// Image of edgewire-agent for publisher, bridge and sidecar containers.
        #[arg(long, env = "EDGEWIRE_AGENT_IMAGE")]
        agent_image: Option<String>,
        /// Pull policy of the agent image.
        #[arg(long, env = "EDGEWIRE_AGENT_IMAGE_PULL_POLICY")]
        agent_image_pull_policy: Option<String>,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        http_addr: SocketAddr,
        /// Name of the leader-election Lease.
        #[arg(long, default_value = "edgewire-operator")]
        lease_name: String,
        /// Namespace of the Lease (the operator's own).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// How long a leader's lease lasts without renewal.
        #[arg(long, default_value_t = 15)]
        lease_duration_seconds: u64,
        /// This replica's identity in the Lease (the pod name).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Watch only these namespaces, comma-separated (`factory` or `factory,site-a`); all when empty.
        #[arg(long, env = "WATCH_NAMESPACE", value_delimiter = ',')]
        watch_namespace: Vec<String>,
        /// Reconciles of one kind running at once; 0: unbounded.
        #[arg(long, env = "EDGEWIRE_CONCURRENT_RECONCILES", default_value_t = context::CONCURRENT_RECONCILES)]
        concurrent_reconciles: u16,
    },
    /// Print, as multi-document YAML, every object the operator would apply for the resources in FILE
    /// (Secrets they reference are taken from the same file). Needs no cluster.
    Render {
        /// A YAML file with EventBrokers (and the Secrets they reference).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Image of edgewire-agent to render.
        #[arg(long)]
        agent_image: Option<String>,
    },
}

fn init_tracing(format: &str) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "text" {
        builder.init()
    } else {
        builder.json().flatten_event(true).init()
    }
}

fn settings(agent_image: Option<String>, pull_policy: Option<String>) -> Settings {
    let mut settings = Settings::default();
    if let Some(i) = agent_image.filter(|s| !s.is_empty()) {
        settings.agent = i;
    }
    settings.agent_pull_policy = pull_policy.filter(|s| !s.is_empty());
    settings
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // The workspace enables both of rustls' providers (kube uses ring, some broker clients aws-lc-rs);
    // rustls then refuses to guess, so the process names its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            agent_image,
            agent_image_pull_policy,
            http_addr,
            lease_name,
            lease_namespace,
            lease_duration_seconds,
            identity,
            watch_namespace,
            concurrent_reconciles,
        } => {
            init_tracing(&cli.log_format);
            let identity = identity.filter(|s| !s.is_empty()).unwrap_or_else(|| {
                std::env::var("HOSTNAME")
                    .unwrap_or_else(|_| format!("edgewire-operator-{}", std::process::id()))
            });
            let settings = Settings {
                concurrent_reconciles,
                ..settings(agent_image, agent_image_pull_policy)
            };
            runtime::run(runtime::RunConfig {
                settings,
                http_addr,
                lease_name,
                lease_namespace,
                lease_duration_seconds: lease_duration_seconds.max(2),
                identity,
                watch_namespaces: runtime::namespaces(watch_namespace),
            })
            .await
        }
        Command::Render { file, agent_image } => {
            render::render_file(&file, &settings(agent_image, None))
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgewire-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
