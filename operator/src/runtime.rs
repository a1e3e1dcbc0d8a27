//! `edgewire-operator run`: HTTP (metrics, probes), wait for the CRDs, leader election, controllers,
//! clean shutdown on SIGTERM.

use crate::context::Context;
use crate::context::Settings;
use crate::controller;
use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use edgewire_api::{BridgeLink, EventBroker, MqttBroker};
use futures::FutureExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Settings of `run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub settings: Settings,
    pub http_addr: SocketAddr,
    pub lease_name: String,
    pub lease_namespace: String,
    pub lease_duration_seconds: u64,
    pub identity: String,
    /// The namespaces whose resources are reconciled; empty: every namespace.
    pub watch_namespaces: Vec<String>,
}

/// The namespaces of `--watch-namespace` (comma-separated, possibly repeated): trimmed, empty ones and
/// repeats dropped, in the order given. Empty means every namespace.
pub fn namespaces(values: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for ns in values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        if !out.iter().any(|o| o == ns) {
            out.push(ns.to_string());
        }
    }
    out
}

/// Runs the three controllers until `until` resolves: once for every namespace (`Api::all`) when
/// `namespaces` is empty, else one set per namespace, each watching only its namespace (so the operator
/// needs no cluster-wide access to Secrets and workloads: the chart's `watchNamespaces` gives it Roles in
/// those namespaces only).
pub async fn run_controllers<F>(ctx: Arc<Context>, namespaces: &[String], until: F)
where
    F: Future<Output = ()> + Clone + Send + Sync + 'static,
{
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    futures::future::join_all(scopes.into_iter().map(|ns| {
        let (ctx, until) = (ctx.clone(), until.clone());
        async move {
            tokio::join!(
                controller::run::<EventBroker>(ctx.clone(), ns.clone(), until.clone()),
                controller::run::<MqttBroker>(ctx.clone(), ns.clone(), until.clone()),
                controller::run::<BridgeLink>(ctx, ns, until),
            );
        }
    }))
    .await;
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

async fn metrics(
    State(s): State<HttpState>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<HttpState>) -> (StatusCode, &'static str) {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

/// The HTTP router: `/metrics`, `/healthz`, `/readyz`.
fn router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(HttpState { metrics, ready })
}

async fn metrics_handler(
    s: State<HttpState>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    metrics(s).await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Waits until every Edgewire CRD is established, logging while it waits.
async fn wait_for_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in edgewire_api::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        loop {
            let cond = await_condition(api.clone(), &name, conditions::is_crd_established());
            match tokio::time::timeout(Duration::from_secs(30), cond).await {
                Ok(Ok(_)) => break,
                Ok(Err(e)) => warn!(crd = %name, error = %e, "waiting for CRD"),
                Err(_) => {
                    warn!(crd = %name, "CRD not established yet; install the CRDs (helm chart or crds/)")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        info!(crd = %name, "CRD established");
    }
}

pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));

    let listener = tokio::net::TcpListener::bind(cfg.http_addr).await?;
    info!(addr = %listener.local_addr()?, "serving /metrics /healthz /readyz");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(
        axum::serve(listener, router(metrics.clone(), ready.clone()))
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .into_future(),
    );

    let mut signal_tx = Some(stop_tx);
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutting down");
        if let Some(tx) = signal_tx.take() {
            let _ = tx.send(true);
        }
    });

    let mut stop = stop_rx.clone();
    tokio::select! {
        _ = wait_for_crds(&client) => {}
        _ = stop.wait_for(|s| *s) => { let _ = http.await; return Ok(()); }
    }
    ready.store(true, Ordering::Relaxed);

    let manager = LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
        .with_namespace(&cfg.lease_namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.lease_duration_seconds)
        .with_grace((cfg.lease_duration_seconds / 3).max(1))
        .build()
        .await?;
    let (mut leader, lease_task) = manager.watch().await;
    info!(identity = %cfg.identity, lease = %cfg.lease_name, "waiting for leadership");

    let ctx = Arc::new(
        Context::new(
            client.clone(),
            cfg.settings.clone(),
            metrics.clone(),
            Some(cfg.identity.clone()),
        )
        .with_home_namespace(&cfg.lease_namespace),
    );
    let mut stop = stop_rx.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            changed = leader.changed() => {
                if changed.is_err() { error!("lease manager stopped"); break; }
                if !*leader.borrow_and_update() { continue; }
                info!("became leader: starting controllers");
                metrics.leader.set(1);
                let mut lost = leader.clone();
                let mut stop_c = stop_rx.clone();
                let until = async move {
                    tokio::select! {
                        _ = lost.wait_for(|l| !*l) => warn!("lost leadership"),
                        _ = stop_c.wait_for(|s| *s) => {},
                    }
                };
                let until = until.shared();
                run_controllers(ctx.clone(), &cfg.watch_namespaces, until).await;
                metrics.leader.set(0);
                if !*stop_rx.borrow() {
                    // Another replica leads now; exit so that the pod restarts fresh as a standby.
                    error!("leadership lost; exiting");
                }
                break;
            }
        }
    }
    // Dropping the receiver ends the lease task, which releases the lease for the next leader.
    drop(leader);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(manager))) => {
            let _ = manager.release().await;
        }
        Ok(Ok(Err(e))) => warn!(error = %e, "lease manager"),
        _ => {}
    }
    signal.abort();
    let _ = http.await;
    info!("stopped");
    Ok(())
}
