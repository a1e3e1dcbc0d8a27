//! `edgewire-agent tail`: subscribes with the publisher's configuration and prints each event, one line
//! (`<time> <type> <id> corename=<c> <subject>`) or structured JSON (`--json`).
//!
//! NATS: core subscription on `edge.>` (JetStream-published messages reach core subscribers too);
//! Kafka: the configured topic or the four domain topics, from the end; AMQP: an exclusive queue bound
//! to `edge.events` with `#`; Redis: `PSUBSCRIBE edge.*`; MQTT: `edge/#`.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, anyhow};
use base64::Engine;
use futures::StreamExt;
use serde_json::{Map, Value};

use crate::adapters;
use crate::connect::{self, Health};
use crate::publisher::config::{AMQP_EXCHANGE, BrokerConfig, JETSTREAM_SUBJECTS, PublisherConfig};

/// A received message, normalised to structured-mode JSON.
fn from_binary(
    attrs: BTreeMap<String, String>,
    content_type: Option<String>,
    data: &[u8],
) -> Value {
    let mut m = Map::new();
    for (k, v) in attrs {
        m.insert(k, Value::String(v));
    }
    if let Some(ct) = &content_type {
        m.insert("datacontenttype".into(), Value::String(ct.clone()));
    }
    if !data.is_empty() {
        let json_ct = content_type.as_deref().is_none_or(|c| c.contains("json"));
        match (json_ct, serde_json::from_slice::<Value>(data)) {
            (true, Ok(v)) => {
                m.insert("data".into(), v);
            }
            _ => match std::str::from_utf8(data) {
                Ok(s) => {
                    m.insert("data".into(), Value::String(s.to_string()));
                }
                Err(_) => {
                    m.insert(
                        "data_base64".into(),
                        Value::String(base64::engine::general_purpose::STANDARD.encode(data)),
                    );
                }
            },
        }
    }
    Value::Object(m)
}

fn from_structured(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|_| {
        let mut m = Map::new();
        m.insert(
            "data".into(),
            Value::String(String::from_utf8_lossy(body).into_owned()),
        );
        Value::Object(m)
    })
}

/// `<time> <type> <id> corename=<c> <subject>`; `-` for what is absent.
pub fn line(ev: &Value) -> String {
    let s = |k: &str| ev.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    format!(
        "{} {} {} corename={} {}",
        s("time"),
        s("type"),
        s("id"),
        s("corename"),
        s("subject")
    )
}

struct Printer {
    json: bool,
    remaining: Option<usize>,
}

impl Printer {
    /// Prints one event; false once `--count` is reached.
    fn print(&mut self, ev: &Value) -> bool {
        let text = if self.json { ev.to_string() } else { line(ev) };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
        match &mut self.remaining {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n > 0
            }
            None => true,
        }
    }
}

fn strip_prefix_map<'a>(
    pairs: impl Iterator<Item = (&'a str, String)>,
    prefix: &str,
) -> (BTreeMap<String, String>, Option<String>) {
    let mut attrs = BTreeMap::new();
    let mut ct = None;
    for (k, v) in pairs {
        if k.eq_ignore_ascii_case("content-type") {
            ct = Some(v);
        } else if let Some(name) = k.strip_prefix(prefix) {
            attrs.insert(name.to_string(), v);
        }
    }
    (attrs, ct)
}

pub async fn run(config: PublisherConfig, json: bool, count: Option<usize>) -> anyhow::Result<()> {
    crate::tls::install_crypto_provider();
    let broker = config.broker.ok_or_else(|| {
        anyhow!(
            "{}: the event broker is disabled; nothing to tail",
            edgewire_api::env::ENABLED
        )
    })?;
    let mut printer = Printer {
        json,
        remaining: count,
    };
    if count == Some(0) {
        return Ok(());
    }
    match broker {
        BrokerConfig::Sns(_) | BrokerConfig::PubSub(_) => {
            return Err(anyhow!(
                "tail does not support managed clouds: SNS stores nothing and Pub/Sub delivers only to subscriptions; subscribe a queue (SQS) or a subscription and read that"
            ));
        }
        BrokerConfig::Nats(c) => {
            let opts = connect::nats::options(
                "edgewire-agent",
                &c.auth,
                &c.tls,
                crate::retry::PUBLISHER,
                std::sync::Arc::new(Health::default()),
            )?;
            let client = opts
                .connect(c.urls.clone())
                .await
                .context("connecting to NATS")?;
            let mut sub = client
                .subscribe(JETSTREAM_SUBJECTS)
                .await
                .context("subscribing to edge.>")?;
            eprintln!("tailing NATS subject {JETSTREAM_SUBJECTS}");
            while let Some(msg) = sub.next().await {
                let pairs: Vec<(String, String)> = msg
                    .headers
                    .iter()
                    .flat_map(|h| h.iter())
                    .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
                    .collect();
                let (attrs, ct) =
                    strip_prefix_map(pairs.iter().map(|(k, v)| (k.as_str(), v.clone())), "ce-");
                if !printer.print(&from_binary(attrs, ct, &msg.payload)) {
                    break;
                }
            }
        }
        BrokerConfig::Kafka(c) => {
            use rdkafka::Message;
            use rdkafka::consumer::{Consumer, StreamConsumer};
            use rdkafka::message::Headers;
            let mut cc = adapters::kafka::client_config(&c);
            cc.set("group.id", connect::mqtt::client_id("tail"))
                .set("auto.offset.reset", "latest")
                .set("enable.auto.commit", "false");
            let consumer: StreamConsumer = cc.create().context("creating the Kafka consumer")?;
            let topics: Vec<String> = match &c.topic {
                Some(t) => vec![t.clone()],
                None => edgewire_api::domain::DOMAINS
                    .iter()
                    .map(|d| d.topic.to_string())
                    .collect(),
            };
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.subscribe(&refs).context("subscribing")?;
            eprintln!("tailing Kafka topics {}", topics.join(", "));
            loop {
                let m = consumer.recv().await.context("receiving from Kafka")?;
                let pairs: Vec<(String, String)> = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    h.value
                                        .map(|v| String::from_utf8_lossy(v).into_owned())
                                        .unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let (attrs, ct) =
                    strip_prefix_map(pairs.iter().map(|(k, v)| (k.as_str(), v.clone())), "ce_");
                if !printer.print(&from_binary(attrs, ct, m.payload().unwrap_or_default())) {
                    break;
                }
            }
        }
        BrokerConfig::Amqp(c) => {
            use lapin::options::{
                BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
            };
            use lapin::types::{AMQPValue, FieldTable};
            let conn = adapters::amqp::connector(&c)?
                .open()
                .await
                .map_err(|e| anyhow!(e))?;
            let ch = conn.create_channel().await?;
            ch.exchange_declare(
                AMQP_EXCHANGE.into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
            let q = ch
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            ch.queue_bind(
                q.name().clone(),
                AMQP_EXCHANGE.into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            let mut consumer = ch
                .basic_consume(
                    q.name().clone(),
                    "edgewire-tail".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            eprintln!("tailing AMQP exchange {AMQP_EXCHANGE} (#)");
            while let Some(d) = consumer.next().await {
                let d = d?;
                let mut attrs = BTreeMap::new();
                if let Some(h) = d.properties.headers() {
                    for (k, v) in h.inner() {
                        if let Some(name) = k.as_str().strip_prefix("cloudEvents:") {
                            let v = match v {
                                AMQPValue::LongString(s) => {
                                    String::from_utf8_lossy(s.as_bytes()).into_owned()
                                }
                                AMQPValue::ShortString(s) => s.as_str().to_string(),
                                other => format!("{other:?}"),
                            };
                            attrs.insert(name.to_string(), v);
                        }
                    }
                }
                let ct = d
                    .properties
                    .content_type()
                    .as_ref()
                    .map(|s| s.as_str().to_string());
                if !printer.print(&from_binary(attrs, ct, &d.data)) {
                    break;
                }
            }
        }
        BrokerConfig::Redis(c) => {
            let client = connect::redis::client(&c.url, &c.tls)?;
            let mut pubsub = client
                .get_async_pubsub()
                .await
                .map_err(|e| anyhow!("connecting to Redis: {:?}", e.kind()))?;
            pubsub
                .psubscribe("edge.*")
                .await
                .map_err(|e| anyhow!("PSUBSCRIBE edge.*: {:?}", e.kind()))?;
            eprintln!("tailing Redis channels edge.*");
            let mut stream = pubsub.on_message();
            while let Some(msg) = stream.next().await {
                if !printer.print(&from_structured(msg.get_payload_bytes())) {
                    break;
                }
            }
        }
        BrokerConfig::Mqtt(c) => {
            let opts = adapters::mqtt::options(&c, &connect::mqtt::client_id("tail"))?;
            let (client, mut el) = rumqttc::AsyncClient::new(opts, 64);
            client
                .subscribe("edge/#", connect::mqtt::qos(c.qos))
                .await?;
            eprintln!("tailing MQTT topic edge/#");
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        if !printer.print(&from_structured(&p.payload)) {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return Err(anyhow!(connect::mqtt::describe(&e))),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let ev = serde_json::json!({"time": "2026-01-01T00:00:00Z", "type": "edge.node.registered", "id": "7", "corename": "prod-us"});
        assert_eq!(
            line(&ev),
            "2026-01-01T00:00:00Z edge.node.registered 7 corename=prod-us -"
        );
    }

    #[test]
    fn binary_messages_become_structured_json() {
        let mut attrs = BTreeMap::new();
        attrs.insert("type".to_string(), "edge.node.x".to_string());
        let v = from_binary(attrs, Some("application/json".into()), br#"{"a":1}"#);
        assert_eq!(v["data"]["a"], 1);
        assert_eq!(v["datacontenttype"], "application/json");
        let v = from_binary(
            BTreeMap::new(),
            Some("application/octet-stream".into()),
            &[0xff, 0xfe],
        );
        assert!(v["data_base64"].is_string());
    }
}
