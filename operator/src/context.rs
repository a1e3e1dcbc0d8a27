//! What every reconcile shares.

use crate::controller::event_broker::Images;
use crate::metrics::Metrics;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use std::sync::Arc;

/// Shared state of the controllers. Holds nothing the cluster does not hold.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub images: Images,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
}

impl Context {
    pub fn new(
        client: Client,
        images: Images,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: edgewire_api::FIELD_MANAGER.into(),
            instance,
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            images,
            metrics,
            recorder,
        }
    }
}
