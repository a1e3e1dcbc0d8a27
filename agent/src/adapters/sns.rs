//! AWS SNS: each event goes to its domain topic, ARN = `EVENT_BROKER_AWS_SNS_TOPIC_ARN_PREFIX` + topic
//! name (`edge-nodes-events`, ...). The body is the structured-mode JSON of the whole event; `type` and
//! `corename` travel as String MessageAttributes so subscription filter policies can match them. A batch
//! goes out as `PublishBatch` calls of at most 10 entries per topic, each entry answered on its own.
//!
//! Credentials come from the AWS SDK's standard chain (env, shared files, IRSA web identity, instance
//! roles) or, in `--config` mode, from the static keys of `spec.awsSns.credentials`.
//!
//! Readiness: a background probe calls `GetTopicAttributes` on the nodes topic (every 10 s while up).
//! Any answer from SNS that proves the endpoint is reachable and the credentials are valid counts as
//! connected, including `AuthorizationError` (a least-privilege publisher may hold `sns:Publish` only).
//! Not reachable, rejected credentials or a missing topic count as down, with the reason.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sns::Client;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use cloudevents::{AttributesReader, Event};
use futures::FutureExt;
use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;

use super::{Adapter, BrokerCalls, CallLabels, PUBLISH_TIMEOUT, PublishError};
use crate::connect::{Health, Readiness, SetupError};
use crate::event;
use crate::publisher::config::SnsConfig;

/// At most this many entries per `PublishBatch` call (the SNS limit).
pub const MAX_BATCH: usize = 10;

/// How often the readiness probe runs while connected.
const PROBE_EVERY: Duration = Duration::from_secs(10);

pub struct SnsAdapter {
    client: Client,
    prefix: String,
    health: Arc<Health>,
    calls: BrokerCalls,
}

/// The SNS client for `c`: rustls (ring) HTTPS client, region, endpoint override, credentials.
pub async fn client(c: &SnsConfig) -> Client {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_timeout(PUBLISH_TIMEOUT)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(c.region.to_string()))
        .http_client(http)
        .timeout_config(timeouts);
    if let Some(s) = &c.static_credentials {
        loader = loader.credentials_provider(aws_credential_types::Credentials::new(
            s.access_key_id.expose(),
            s.secret_access_key.expose(),
            s.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "edgewire-static",
        ));
    }
    let shared = loader.load().await;
    let mut conf = aws_sdk_sns::config::Builder::from(&shared);
    if let Some(e) = &c.endpoint {
        conf = conf.endpoint_url(e);
    }
    Client::from_conf(conf.build())
}

/// The topic ARN for an event type, or the 400 message naming the four domains.
pub fn topic_arn(prefix: &str, event_type: &str) -> Result<String, String> {
    match edgewire_api::domain::for_type(event_type) {
        Some(d) => Ok(format!("{prefix}{}", d.topic)),
        None => Err(format!(
            "type {event_type:?} belongs to no event domain; SNS routes only {}",
            domains_described()
        )),
    }
}

/// "edge.node.* → edge-nodes-events, ..." for error messages.
pub fn domains_described() -> String {
    edgewire_api::domain::DOMAINS
        .iter()
        .map(|d| format!("{}* → {}", d.type_prefix, d.topic))
        .collect::<Vec<_>>()
        .join(", ")
}

fn attribute(value: &str) -> Result<MessageAttributeValue, PublishError> {
    // SNS refuses empty attribute values.
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(if value.is_empty() { "-" } else { value })
        .build()
        .map_err(|e| PublishError::Rejected(format!("message attribute: {e}")))
}

/// Maps an SDK error of any operation to a publish error (never quoting credentials).
fn publish_error<E, R>(e: &SdkError<E, R>, health: &Health) -> PublishError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match e {
        SdkError::DispatchFailure(d) => {
            let kind = if d.is_io() {
                "connection failed"
            } else if d.is_timeout() {
                "connect timeout"
            } else if d.is_user() {
                "request could not be sent"
            } else {
                "transport error"
            };
            let why = format!("cannot reach SNS: {kind}");
            health.set_down(why.clone());
            PublishError::Unavailable(why)
        }
        SdkError::TimeoutError(_) => PublishError::Timeout("SNS did not answer in time".into()),
        SdkError::ConstructionFailure(_) => {
            let why = format!("cannot build the SNS request: {}", source_text(e));
            PublishError::Unavailable(why)
        }
        _ => {
            let code = e.code().unwrap_or("Unknown");
            let message = e.message().unwrap_or_default();
            let why = format!("{code}: {message}");
            match code {
                "Throttled"
                | "ThrottlingException"
                | "InternalError"
                | "InternalFailure"
                | "ServiceUnavailable"
                | "KMSThrottling" => PublishError::Unavailable(why),
                "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "UnrecognizedClientException"
                | "ExpiredToken"
                | "ExpiredTokenException" => {
                    health.set_down(format!("AWS rejected the credentials: {code}"));
                    PublishError::Unavailable(why)
                }
                _ => PublishError::Rejected(why),
            }
        }
    }
}

fn source_text(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

impl SnsAdapter {
    pub async fn connect(c: SnsConfig) -> Result<Self, SetupError> {
        crate::tls::install_crypto_provider();
        let client = client(&c).await;
        let health = Arc::new(Health::default());
        let calls = BrokerCalls::default();
        let probe_arn = format!(
            "{}{}",
            c.topic_arn_prefix,
            edgewire_api::domain::DOMAINS[0].topic
        );
        tokio::spawn(probe(
            client.clone(),
            probe_arn,
            health.clone(),
            counter(&calls, "GetTopicAttributes"),
        ));
        Ok(Self {
            client,
            prefix: c.topic_arn_prefix.into(),
            health,
            calls,
        })
    }

    /// Publishes `events` (all with a domain) grouped by topic in `PublishBatch` calls of ≤ 10.
    async fn batch(&self, events: &[Event]) -> Vec<Result<(), PublishError>> {
        let mut results: Vec<Option<Result<(), PublishError>>> = vec![None; events.len()];
        let mut by_topic: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            match topic_arn(&self.prefix, ev.ty()) {
                Ok(arn) => match by_topic.iter_mut().find(|(t, _)| *t == arn) {
                    Some((_, idx)) => idx.push(i),
                    None => by_topic.push((arn, vec![i])),
                },
                Err(m) => results[i] = Some(Err(PublishError::Rejected(m))),
            }
        }
        let chunks = by_topic.iter().flat_map(|(arn, idx)| {
            idx.chunks(MAX_BATCH)
                .map(move |chunk| (arn.as_str(), chunk))
        });
        let calls = counter(&self.calls, "PublishBatch");
        let answers = futures::future::join_all(chunks.map(|(arn, chunk)| {
            let calls = calls.clone();
            async move {
                let mut req = self.client.publish_batch().topic_arn(arn);
                for &i in chunk {
                    match entry(i, &events[i]) {
                        Ok(e) => req = req.publish_batch_request_entries(e),
                        Err(e) => return (chunk, Err(e)),
                    }
                }
                calls.inc();
                (
                    chunk,
                    req.send()
                        .await
                        .map_err(|e| publish_error(&e, &self.health)),
                )
            }
        }))
        .await;
        for (chunk, answer) in answers {
            match answer {
                Ok(out) => {
                    self.health.set_connected();
                    for ok in out.successful() {
                        if let Some(slot) = ok
                            .id()
                            .and_then(entry_index)
                            .and_then(|i| results.get_mut(i))
                        {
                            *slot = Some(Ok(()));
                        }
                    }
                    for f in out.failed() {
                        let why = format!("{}: {}", f.code(), f.message().unwrap_or_default());
                        let e = if f.sender_fault() {
                            PublishError::Rejected(why)
                        } else {
                            PublishError::Unavailable(why)
                        };
                        if let Some(slot) = entry_index(f.id()).and_then(|i| results.get_mut(i)) {
                            *slot = Some(Err(e));
                        }
                    }
                }
                Err(err) => {
                    for &i in chunk {
                        results[i] = Some(Err(err.clone()));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(PublishError::Rejected(
                        "SNS answered the batch without this entry".into(),
                    ))
                })
            })
            .collect()
    }
}

fn counter(calls: &BrokerCalls, operation: &str) -> Counter {
    calls
        .get_or_create(&CallLabels {
            adapter: "aws_sns".into(),
            operation: operation.into(),
        })
        .clone()
}

fn entry(i: usize, ev: &Event) -> Result<PublishBatchRequestEntry, PublishError> {
    let corename = event::corename(ev).unwrap_or_default();
    PublishBatchRequestEntry::builder()
        .id(format!("e{i}"))
        .message(String::from_utf8_lossy(&event::structured_json(ev)).into_owned())
        .message_attributes("type", attribute(ev.ty())?)
        .message_attributes("corename", attribute(&corename)?)
        .build()
        .map_err(|e| PublishError::Rejected(format!("batch entry: {e}")))
}

fn entry_index(id: &str) -> Option<usize> {
    id.strip_prefix('e')?.parse().ok()
}

async fn probe(client: Client, arn: String, health: Arc<Health>, calls: Counter) {
    let mut backoff = crate::retry::PUBLISHER.backoff();
    loop {
        calls.inc();
        let r = client.get_topic_attributes().topic_arn(&arn).send().await;
        let up = match &r {
            Ok(_) => true,
            Err(SdkError::ServiceError(_)) => {
                let e = r.as_ref().err();
                match e.and_then(|e| e.code()) {
                    Some("AuthorizationError" | "AccessDenied" | "AccessDeniedException") => true,
                    Some("NotFound") => {
                        health.set_down(format!("SNS topic {arn} does not exist"));
                        false
                    }
                    Some(code) => {
                        health.set_down(format!("SNS refused GetTopicAttributes: {code}"));
                        false
                    }
                    None => {
                        health.set_down("SNS answered with an unknown error");
                        false
                    }
                }
            }
            Err(e) => {
                let _ = publish_error(e, &health);
                if !matches!(e, SdkError::DispatchFailure(_)) {
                    health.set_down(format!("SNS unreachable: {}", source_text(e)));
                }
                false
            }
        };
        if up {
            health.set_connected();
            backoff.reset();
            tokio::time::sleep(PROBE_EVERY).await;
        } else {
            backoff.wait().await;
        }
    }
}

impl Adapter for SnsAdapter {
    fn name(&self) -> &'static str {
        "aws_sns"
    }

    fn validate(&self, event: &Event) -> Result<(), String> {
        topic_arn(&self.prefix, event.ty()).map(|_| ())
    }

    fn publish<'a>(&'a self, ev: &'a Event) -> BoxFuture<'a, Result<(), PublishError>> {
        async move {
            let arn = topic_arn(&self.prefix, ev.ty()).map_err(PublishError::Rejected)?;
            let corename = event::corename(ev).unwrap_or_default();
            let body = String::from_utf8_lossy(&event::structured_json(ev)).into_owned();
            counter(&self.calls, "Publish").inc();
            let r = self
                .client
                .publish()
                .topic_arn(arn)
                .message(body)
                .message_attributes("type", attribute(ev.ty())?)
                .message_attributes("corename", attribute(&corename)?)
                .send()
                .await;
            match r {
                Ok(_) => {
                    self.health.set_connected();
                    Ok(())
                }
                Err(e) => Err(publish_error(&e, &self.health)),
            }
        }
        .boxed()
    }

    fn publish_batch<'a>(
        &'a self,
        events: &'a [Event],
    ) -> BoxFuture<'a, Vec<Result<(), PublishError>>> {
        self.batch(events).boxed()
    }

    fn readiness(&self) -> Readiness {
        self.health.readiness()
    }

    fn broker_calls(&self) -> Option<BrokerCalls> {
        Some(self.calls.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_per_domain_and_the_400_message() {
        let p = "arn:aws:sns:us-east-1:123456789012:";
        assert_eq!(
            topic_arn(p, "edge.node.registered").unwrap(),
            "arn:aws:sns:us-east-1:123456789012:edge-nodes-events"
        );
        assert_eq!(
            topic_arn(p, "edge.command_execution.finished").unwrap(),
            "arn:aws:sns:us-east-1:123456789012:edge-commands-events"
        );
        assert_eq!(
            topic_arn(p, "edge.self_update.started").unwrap(),
            "arn:aws:sns:us-east-1:123456789012:edge-self-updates-events"
        );
        assert_eq!(
            topic_arn(p, "edge.ssh.opened").unwrap(),
            "arn:aws:sns:us-east-1:123456789012:edge-ssh-events"
        );
        let m = topic_arn(p, "com.example.other").unwrap_err();
        for topic in [
            "edge-nodes-events",
            "edge-commands-events",
            "edge-self-updates-events",
            "edge-ssh-events",
        ] {
            assert!(m.contains(topic), "{m}");
        }
        assert_eq!(entry_index("e17"), Some(17));
        assert_eq!(entry_index("x1"), None);
    }
}
