//! What every reconcile shares: the client, the operator's settings, its metrics, the Event recorder and the
//! memo of what it applied.

use crate::apply::Memo;
use crate::cache::SecretCache;
use crate::events::Recorder;
use crate::metrics::Metrics;
use kube::Client;
use kube::runtime::events::Reporter;
use std::sync::Arc;

/// Settings the operator was started with (flags / chart values): the children it builds and how hard it
/// drives the API server.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// `edgewire-agent` image run by publisher, bridge and sidecar containers.
    pub agent: String,
    /// Pull policy of the agent image (`IfNotPresent` unless set).
    pub agent_pull_policy: Option<String>,
    /// Reconciles of one kind running at once (per watched namespace scope); 0: unbounded.
    pub concurrent_reconciles: u16,
}

/// Default of [`Settings::concurrent_reconciles`]: a reconcile makes about ten requests in a row, so eight
/// per kind keep a few dozen requests in flight. Unbounded (kube's default), 2,200 resources applied at once
/// buried a small API server in thousands of requests it answered 429 and 504 (the scale bench).
pub const CONCURRENT_RECONCILES: u16 = 8;

impl Default for Settings {
    fn default() -> Self {
        Self {
            agent: format!(
                "ghcr.io/edgewire/edgewire-agent:{}",
                env!("CARGO_PKG_VERSION")
            ),
            agent_pull_policy: None,
            concurrent_reconciles: CONCURRENT_RECONCILES,
        }
    }
}

impl Settings {
    /// The pull policy of the agent image as a container states it.
    pub fn agent_pull_policy(&self) -> String {
        self.agent_pull_policy
            .clone()
            .unwrap_or_else(|| "IfNotPresent".into())
    }
}

/// Shared state of the controllers. Holds nothing the cluster does not hold, except a memo of its own applies
/// (which only saves requests: without it, everything is applied again).
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub recorder: Arc<Recorder>,
    /// The operator's own namespace (its Lease's): where an Event goes that its object's namespace refuses
    /// because that namespace is being deleted (see [`crate::status::publish`]).
    pub home_namespace: Option<String>,
    /// What this process applied for each owner's children, so that a resync of an unchanged resource
    /// writes nothing ([`Memo`]).
    pub applied: Arc<Memo>,
    /// The Secrets reconciles read, kept while the Secret watch shows them unchanged.
    pub secrets: Arc<SecretCache>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: edgewire_api::FIELD_MANAGER.into(),
            instance,
        };
        let recorder = Arc::new(Recorder::new(client.clone(), reporter));
        Self {
            client,
            settings,
            metrics,
            recorder,
            home_namespace: None,
            applied: Arc::default(),
            secrets: Arc::default(),
        }
    }

    /// The Secret `namespace/name` ([`SecretCache::get`]).
    pub async fn secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<k8s_openapi::api::core::v1::Secret>, kube::Error> {
        self.secrets.get(&self.client, namespace, name).await
    }

    /// The operator's own namespace, for Events its objects' namespaces refuse (being deleted).
    pub fn with_home_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.home_namespace = Some(namespace.into());
        self
    }
}
