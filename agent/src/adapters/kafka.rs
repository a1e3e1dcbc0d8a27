//! Kafka (librdkafka): topic = the event's domain topic (or `EVENT_BROKER_KAFKA_TOPIC`), key = corename,
//! CloudEvents Kafka binary mode (`ce_*` headers, `content-type`), `acks=all`, and the publish waits for
//! the delivery report. librdkafka reconnects by itself; a metadata probe tracks reachability.

use std::sync::Arc;
use std::time::Duration;

use cloudevents::{AttributesReader, Event};
use futures::FutureExt;
use futures::future::BoxFuture;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{Adapter, PUBLISH_TIMEOUT, PublishError};
use crate::connect::{self, Health, Readiness, SetupError};
use crate::event;
use crate::publisher::config::KafkaConfig;

pub struct KafkaAdapter {
    producer: FutureProducer,
    topic: Option<String>,
    health: Arc<Health>,
}

/// librdkafka settings for `c` (shared with `tail`, which adds consumer settings).
pub fn client_config(c: &KafkaConfig) -> ClientConfig {
    connect::kafka::client_config(&c.brokers, c.sasl.as_ref(), &c.tls)
}

impl KafkaAdapter {
    pub fn connect(c: KafkaConfig) -> Result<Self, SetupError> {
        let mut cc = client_config(&c);
        cc.set("acks", "all")
            .set(
                "message.timeout.ms",
                PUBLISH_TIMEOUT.as_millis().to_string(),
            )
            .set("linger.ms", "1");
        let producer: FutureProducer = cc
            .create()
            .map_err(|e| SetupError::Config(format!("kafka producer: {e}")))?;
        let health = Arc::new(Health::default());
        let probe = producer.clone();
        let h = health.clone();
        tokio::spawn(async move {
            loop {
                let p = probe.clone();
                let r = tokio::task::spawn_blocking(move || {
                    p.client().fetch_metadata(None, Duration::from_secs(3))
                })
                .await;
                match r {
                    Ok(Ok(md)) if !md.brokers().is_empty() => h.set_connected(),
                    Ok(Ok(_)) => h.set_down("the Kafka cluster reports no brokers"),
                    Ok(Err(e)) => h.set_down(format!("cannot reach the Kafka cluster: {e}")),
                    Err(_) => return,
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(Self {
            producer,
            topic: c.topic,
            health,
        })
    }

    fn topic_for(&self, event_type: &str) -> Result<String, String> {
        if let Some(t) = &self.topic {
            return Ok(t.clone());
        }
        edgewire_api::domain::for_type(event_type).map(|d| d.topic.to_string()).ok_or_else(|| {
            format!(
                "type {event_type:?} belongs to no event domain ({}); set {} to send every event to one topic",
                edgewire_api::domain::describe(),
                edgewire_api::env::KAFKA_TOPIC
            )
        })
    }
}

impl Adapter for KafkaAdapter {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn validate(&self, event: &Event) -> Result<(), String> {
        self.topic_for(event.ty()).map(|_| ())
    }

    fn publish<'a>(&'a self, ev: &'a Event) -> BoxFuture<'a, Result<(), PublishError>> {
        async move {
            self.health.require()?;
            let topic = self.topic_for(ev.ty()).map_err(PublishError::Rejected)?;
            let key = event::corename(ev).unwrap_or_default();
            let payload = event::data_bytes(ev);
            let mut headers = OwnedHeaders::new();
            for (k, v) in event::kafka_headers(ev) {
                headers = headers.insert(Header {
                    key: &k,
                    value: Some(v.as_bytes()),
                });
            }
            let record = FutureRecord::to(&topic)
                .key(&key)
                .payload(&payload)
                .headers(headers);
            match self.producer.send(record, PUBLISH_TIMEOUT).await {
                Ok(_) => Ok(()),
                Err((e, _)) => Err(match e {
                    KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut) => {
                        PublishError::Timeout(e.to_string())
                    }
                    KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                        PublishError::Unavailable(e.to_string())
                    }
                    KafkaError::MessageProduction(
                        RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown,
                    ) => PublishError::Unavailable(e.to_string()),
                    other => PublishError::Rejected(other.to_string()),
                }),
            }
        }
        .boxed()
    }

    fn readiness(&self) -> Readiness {
        self.health.readiness()
    }
}

#[cfg(test)]
mod tests {
    //! librdkafka's mock cluster has no SASL or TLS listeners, so these modes are proven here at the level
    //! of the settings handed to librdkafka; arrival, keys and headers are proven against the mock cluster.
    use super::*;
    use crate::publisher::config::{ClientCert, KafkaSasl, SaslMechanism, Secret, TlsSettings};

    fn get(cc: &ClientConfig, key: &str) -> Option<String> {
        cc.get(key).map(str::to_string)
    }

    #[test]
    fn sasl_scram_over_tls_maps_to_librdkafka_settings() {
        let pki = edgewire_e2e::pki::TestPki::new("edge").unwrap();
        let c = KafkaConfig {
            brokers: vec!["a:9093".into(), "b:9093".into()],
            topic: None,
            sasl: Some(KafkaSasl {
                mechanism: SaslMechanism::ScramSha512,
                username: "edge".into(),
                password: Secret::new("pw"),
            }),
            tls: TlsSettings {
                enabled: true,
                ca_file: Some(pki.ca_path()),
                client_cert: Some(ClientCert {
                    cert_file: pki.client_cert_path(),
                    key_file: pki.client_key_path(),
                }),
                ..Default::default()
            },
        };
        let cc = client_config(&c);
        assert_eq!(
            get(&cc, "bootstrap.servers").as_deref(),
            Some("a:9093,b:9093")
        );
        assert_eq!(get(&cc, "security.protocol").as_deref(), Some("SASL_SSL"));
        assert_eq!(get(&cc, "sasl.mechanism").as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(get(&cc, "sasl.username").as_deref(), Some("edge"));
        assert_eq!(get(&cc, "sasl.password").as_deref(), Some("pw"));
        let path = |p: std::path::PathBuf| Some(p.display().to_string());
        assert_eq!(get(&cc, "ssl.ca.location"), path(pki.ca_path()));
        assert_eq!(
            get(&cc, "ssl.certificate.location"),
            path(pki.client_cert_path())
        );
        assert_eq!(get(&cc, "ssl.key.location"), path(pki.client_key_path()));
        // librdkafka accepts the settings and loads the PEM files (a wrong key, value or file fails here).
        if let Err(e) = cc.create::<rdkafka::producer::FutureProducer>() {
            panic!("librdkafka refused the settings: {e}");
        }
        let mut broken = cc.clone();
        broken.set("ssl.ca.location", "/nonexistent/ca.pem");
        assert!(
            broken
                .create::<rdkafka::producer::FutureProducer>()
                .is_err(),
            "a missing CA file must be refused"
        );
    }

    #[test]
    fn each_mechanism_and_plaintext() {
        for (m, want) in [
            (SaslMechanism::Plain, "PLAIN"),
            (SaslMechanism::ScramSha256, "SCRAM-SHA-256"),
            (SaslMechanism::ScramSha512, "SCRAM-SHA-512"),
        ] {
            let c = KafkaConfig {
                brokers: vec!["k:9092".into()],
                topic: None,
                sasl: Some(KafkaSasl {
                    mechanism: m,
                    username: "u".into(),
                    password: Secret::new("p"),
                }),
                tls: TlsSettings::default(),
            };
            let cc = client_config(&c);
            assert_eq!(
                get(&cc, "security.protocol").as_deref(),
                Some("SASL_PLAINTEXT")
            );
            assert_eq!(get(&cc, "sasl.mechanism").as_deref(), Some(want));
            assert!(
                cc.create::<rdkafka::producer::FutureProducer>().is_ok(),
                "{want}"
            );
        }
        let plain = KafkaConfig {
            brokers: vec!["k:9092".into()],
            topic: None,
            sasl: None,
            tls: TlsSettings::default(),
        };
        assert_eq!(
            get(&client_config(&plain), "security.protocol").as_deref(),
            Some("PLAINTEXT")
        );
        assert!(get(&client_config(&plain), "sasl.mechanism").is_none());
    }
}
