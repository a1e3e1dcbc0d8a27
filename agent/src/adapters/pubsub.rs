//! Google Cloud Pub/Sub (the official `google-cloud-pubsub` client, gRPC): each event goes to its domain
//! topic `projects/<project>/topics/<prefix><name>`; data = the structured-mode JSON of the whole event;
//! attributes `type` and `corename` for subscription filters.
//!
//! One client publisher per topic. Every publish flushes its topic's buffer at once, so a batch request
//! goes out as one `Publish` call per topic (the client splits above 1,000 messages or 10 MB), and a
//! single event is not held back by the client's batching delay.
//!
//! Credentials: with an `http://` endpoint override (emulators, the test fake) none are sent; otherwise
//! the service-account key of `--config` mode, else Application Default Credentials
//! (`GOOGLE_APPLICATION_CREDENTIALS`, then the metadata server / Workload Identity).
//!
//! Readiness: connected once the client is built with its credentials; a publish that fails because the
//! service is unreachable (or UNAVAILABLE) turns it down until a publish succeeds. There is no probe:
//! `roles/pubsub.publisher` grants nothing that could be probed without publishing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cloudevents::{AttributesReader, Event};
use futures::FutureExt;
use futures::future::BoxFuture;
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_pubsub::client::{BasePublisher, Publisher};
use google_cloud_pubsub::model::Message;

use super::{Adapter, PUBLISH_TIMEOUT, PublishError};
use crate::connect::{Health, Readiness, SetupError};
use crate::event;
use crate::publisher::config::PubSubConfig;

/// Most messages per `Publish` call (the service's limit).
const MAX_MESSAGES: u32 = 1000;

pub struct PubSubAdapter {
    base: BasePublisher,
    project: String,
    prefix: String,
    publishers: Mutex<HashMap<String, Publisher>>,
    health: Arc<Health>,
}

/// `projects/<project>/topics/<prefix><domain topic>`, or the 400 message naming the four domains.
pub fn topic_name(project: &str, prefix: &str, event_type: &str) -> Result<String, String> {
    match edgewire_api::domain::for_type(event_type) {
        Some(d) => Ok(format!("projects/{project}/topics/{prefix}{}", d.topic)),
        None => Err(format!(
            "type {event_type:?} belongs to no event domain; Pub/Sub routes only {}",
            super::sns::domains_described()
        )),
    }
}

impl PubSubAdapter {
    pub async fn connect(c: PubSubConfig) -> Result<Self, SetupError> {
        crate::tls::install_crypto_provider();
        let mut b = BasePublisher::builder().with_retry_policy(
            google_cloud_pubsub::retry_policy::RetryableErrors
                .with_attempt_limit(3)
                .with_time_limit(PUBLISH_TIMEOUT),
        );
        if let Some(e) = &c.endpoint {
            b = b.with_endpoint(e.clone());
        }
        if c.is_emulator() {
            b = b.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        } else if let Some(path) = &c.credentials_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                SetupError::Config(format!("cannot read {}: {}", path.display(), e.kind()))
            })?;
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
                SetupError::Config(format!(
                    "{} is not a service-account JSON key",
                    path.display()
                ))
            })?;
            let creds = google_cloud_auth::credentials::service_account::Builder::new(json)
                .build()
                .map_err(|e| {
                    SetupError::Config(format!(
                        "{}: not a usable service-account key: {e}",
                        path.display()
                    ))
                })?;
            b = b.with_credentials(creds);
        }
        let base = b
            .build()
            .await
            .map_err(|e| SetupError::Config(format!("cannot build the Pub/Sub client: {e}")))?;
        let health = Arc::new(Health::default());
        health.set_connected();
        Ok(Self {
            base,
            project: c.project.into(),
            prefix: c.topic_id_prefix.into(),
            publishers: Mutex::new(HashMap::new()),
            health,
        })
    }

    fn publisher(&self, topic: &str) -> Publisher {
        let mut map = self.publishers.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(topic.to_string())
            .or_insert_with(|| {
                self.base
                    .publisher(topic)
                    .set_message_count_threshold(MAX_MESSAGES)
                    .set_delay_threshold(Duration::from_millis(50))
                    .build()
            })
            .clone()
    }

    fn message(ev: &Event) -> Message {
        let corename = event::corename(ev).unwrap_or_default();
        Message::new()
            .set_data(Bytes::from(event::structured_json(ev)))
            .set_attributes([("type", ev.ty().to_string()), ("corename", corename)])
    }

    /// Publishes events (grouped by topic, one flush per topic) and maps each outcome.
    async fn send(&self, events: &[&Event]) -> Vec<Result<(), PublishError>> {
        let mut pending = Vec::with_capacity(events.len());
        let mut touched: Vec<(String, Publisher)> = Vec::new();
        for ev in events {
            match topic_name(&self.project, &self.prefix, ev.ty()) {
                Ok(topic) => {
                    let p = self.publisher(&topic);
                    pending.push(Some(p.publish(Self::message(ev))));
                    if !touched.iter().any(|(t, _)| *t == topic) {
                        touched.push((topic, p));
                    }
                }
                Err(_) => pending.push(None),
            }
        }
        // Flushing sends each topic's buffer now; the futures below then resolve with its answer.
        for (_, p) in &touched {
            let p = p.clone();
            tokio::spawn(async move { p.flush().await });
        }
        let results = futures::future::join_all(pending.into_iter().zip(events).map(
            |(fut, ev)| async move {
                let Some(fut) = fut else {
                    return Err(PublishError::Rejected(
                        topic_name(&self.project, &self.prefix, ev.ty())
                            .err()
                            .unwrap_or_default(),
                    ));
                };
                match tokio::time::timeout(PUBLISH_TIMEOUT, fut).await {
                    Err(_) => Err(PublishError::Timeout(
                        "Pub/Sub did not answer in time".into(),
                    )),
                    Ok(Ok(_id)) => Ok(()),
                    Ok(Err(e)) => Err(self.map_error(&e)),
                }
            },
        ))
        .await;
        if results.iter().any(|r| r.is_ok()) {
            self.health.set_connected();
        }
        results
    }

    fn map_error(&self, e: &google_cloud_pubsub::error::PublishError) -> PublishError {
        use google_cloud_gax::error::rpc::Code;
        use google_cloud_pubsub::error::PublishError as E;
        let E::Rpc(err) = e else {
            return PublishError::Unavailable(format!("Pub/Sub client: {e}"));
        };
        if let Some(status) = err.status() {
            let why = format!("{:?}: {}", status.code, status.message);
            return match status.code {
                Code::Unavailable
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Internal
                | Code::Unknown
                | Code::Cancelled => {
                    if status.code == Code::Unavailable {
                        self.health
                            .set_down(format!("Pub/Sub unavailable: {}", status.message));
                    }
                    PublishError::Unavailable(why)
                }
                Code::DeadlineExceeded => PublishError::Timeout(why),
                _ => PublishError::Rejected(why),
            };
        }
        if err.is_timeout() {
            return PublishError::Timeout("Pub/Sub did not answer in time".into());
        }
        let why = if err.is_authentication() {
            "cannot obtain Google credentials".to_string()
        } else {
            "cannot reach Pub/Sub".to_string()
        };
        self.health.set_down(why.clone());
        PublishError::Unavailable(why)
    }
}

impl Adapter for PubSubAdapter {
    fn name(&self) -> &'static str {
        "google_pubsub"
    }

    fn validate(&self, event: &Event) -> Result<(), String> {
        topic_name(&self.project, &self.prefix, event.ty()).map(|_| ())
    }

    fn publish<'a>(&'a self, ev: &'a Event) -> BoxFuture<'a, Result<(), PublishError>> {
        async move {
            self.send(&[ev])
                .await
                .pop()
                .unwrap_or_else(|| Err(PublishError::Rejected("nothing published".into())))
        }
        .boxed()
    }

    fn publish_batch<'a>(
        &'a self,
        events: &'a [Event],
    ) -> BoxFuture<'a, Vec<Result<(), PublishError>>> {
        async move {
            let refs: Vec<&Event> = events.iter().collect();
            self.send(&refs).await
        }
        .boxed()
    }

    fn readiness(&self) -> Readiness {
        self.health.readiness()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_with_and_without_prefix() {
        assert_eq!(
            topic_name("my-project-123", "", "edge.node.registered").unwrap(),
            "projects/my-project-123/topics/edge-nodes-events"
        );
        assert_eq!(
            topic_name("my-project-123", "edge-prod-", "edge.ssh.opened").unwrap(),
            "projects/my-project-123/topics/edge-prod-edge-ssh-events"
        );
        let m = topic_name("p", "", "other.thing").unwrap_err();
        assert!(m.contains("edge-self-updates-events"), "{m}");
    }
}
