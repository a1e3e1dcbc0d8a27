//! `GET /asyncapi`: an AsyncAPI 3.0 document of the channels this publisher writes, derived from its
//! configuration (never showing credentials).

use serde_json::{Value, json};

use crate::publisher::config::{AMQP_EXCHANGE, BrokerConfig, JETSTREAM_SUBJECTS, PublisherConfig};
use edgewire_api::domain::DOMAINS;

fn host_of_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        },
        Err(_) => url.rsplit('@').next().unwrap_or_default().to_string(),
    }
}

fn cloud_event_schema(core_name: &str) -> Value {
    json!({
        "type": "object",
        "description": "A CloudEvents 1.0 event; `corename` is set by the publisher on every event.",
        "required": ["specversion", "id", "source", "type", "corename"],
        "properties": {
            "specversion": {"type": "string", "const": "1.0"},
            "id": {"type": "string", "minLength": 1},
            "source": {"type": "string", "format": "uri-reference", "minLength": 1},
            "type": {"type": "string", "minLength": 1, "examples": ["edge.node.registered"]},
            "corename": {"type": "string", "const": core_name},
            "subject": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"type": "string"},
            "dataschema": {"type": "string", "format": "uri"},
            "data": {},
            "data_base64": {"type": "string", "contentEncoding": "base64"}
        }
    })
}

fn binary_headers_schema(prefix: &str, core_name: &str) -> Value {
    let p = |n: &str| format!("{prefix}{n}");
    let mut props = serde_json::Map::new();
    props.insert(p("specversion"), json!({"type": "string", "const": "1.0"}));
    props.insert(p("id"), json!({"type": "string"}));
    props.insert(p("source"), json!({"type": "string"}));
    props.insert(p("type"), json!({"type": "string"}));
    props.insert(p("corename"), json!({"type": "string", "const": core_name}));
    props.insert(p("subject"), json!({"type": "string"}));
    props.insert(p("time"), json!({"type": "string", "format": "date-time"}));
    props.insert(
        "content-type".into(),
        json!({"type": "string", "description": "the event's datacontenttype"}),
    );
    json!({
        "type": "object",
        "required": [p("specversion"), p("id"), p("source"), p("type"), p("corename")],
        "properties": props,
        "additionalProperties": {"type": "string", "description": format!("further attributes and extensions as {prefix}<name>")}
    })
}

/// The document for `config`.
pub fn document(config: &PublisherConfig) -> Value {
    let core = &config.core_name;
    let Some(broker) = &config.broker else {
        return json!({
            "asyncapi": "3.0.0",
            "info": {"title": "Edgewire publisher", "version": "1.0.0", "description": format!("The event broker is disabled ({}=false): no channels.", edgewire_api::env::ENABLED)},
            "channels": {},
            "operations": {}
        });
    };
    // (channel id, address, description)
    let mut channels: Vec<(String, String, String)>;
    let domain_channels = |sep: &str| -> Vec<(String, String, String)> {
        DOMAINS
            .iter()
            .map(|d| {
                let prefix = d.type_prefix.replace('.', sep);
                (
                    d.name.to_string(),
                    format!("{prefix}{{event}}"),
                    format!("{} events ({}*)", d.name, d.type_prefix),
                )
            })
            .collect()
    };
    let (protocol, host, message, description, channel_bindings, message_bindings) = match broker {
        BrokerConfig::Nats(n) => {
            channels = domain_channels(".");
            if n.jetstream.is_none() {
                channels.push((
                    "any".into(),
                    "{type}".into(),
                    "any other event type: subject = type".into(),
                ));
            }
            let desc = match &n.jetstream {
                Some(js) => format!(
                    "Subject = event type. JetStream stream {} captures {JETSTREAM_SUBJECTS} (max age {:?}); each publish waits for the stream's ack.",
                    js.stream, js.max_age
                ),
                None => "Subject = event type (core NATS).".to_string(),
            };
            let host = n.urls.first().map(|u| host_of_url(u)).unwrap_or_default();
            let msg = json!({"name": "CloudEvent", "title": "CloudEvent (NATS binary mode)", "headers": binary_headers_schema("ce-", core), "payload": {"description": "the event's data, unchanged"}});
            ("nats", host, msg, desc, json!({}), json!({}))
        }
        BrokerConfig::Kafka(k) => {
            channels = match &k.topic {
                Some(t) => vec![(
                    "all".into(),
                    t.clone(),
                    format!("every event ({})", edgewire_api::env::KAFKA_TOPIC),
                )],
                None => DOMAINS
                    .iter()
                    .map(|d| {
                        (
                            d.name.to_string(),
                            d.topic.to_string(),
                            format!("{} events ({}*)", d.name, d.type_prefix),
                        )
                    })
                    .collect(),
            };
            let msg = json!({"name": "CloudEvent", "title": "CloudEvent (Kafka binary mode)", "headers": binary_headers_schema("ce_", core), "payload": {"description": "the event's data, unchanged"}});
            (
                "kafka",
                k.brokers.join(","),
                msg,
                "Topic = the event's domain topic (or the one configured topic); key = corename; acks=all.".to_string(),
                json!({}),
                json!({"kafka": {"key": {"type": "string", "const": core, "description": "corename"}, "bindingVersion": "0.5.0"}}),
            )
        }
        BrokerConfig::Amqp(a) => {
            channels = domain_channels(".");
            channels.push((
                "any".into(),
                "{type}".into(),
                "any other event type: routing key = type".into(),
            ));
            let msg = json!({"name": "CloudEvent", "title": "CloudEvent (AMQP application properties)", "headers": binary_headers_schema("cloudEvents:", core), "payload": {"description": "the event's data, unchanged"}});
            (
                "amqp",
                host_of_url(a.url.expose()),
                msg,
                format!(
                    "Durable topic exchange {AMQP_EXCHANGE}; routing key = event type; persistent; publisher confirms."
                ),
                json!({"amqp": {"is": "routingKey", "exchange": {"name": AMQP_EXCHANGE, "type": "topic", "durable": true, "autoDelete": false}, "bindingVersion": "0.3.0"}}),
                json!({"amqp": {"deliveryMode": 2, "bindingVersion": "0.3.0"}}),
            )
        }
        BrokerConfig::Redis(r) => {
            channels = domain_channels(".");
            channels.push((
                "any".into(),
                "{type}".into(),
                "any other event type: channel = type".into(),
            ));
            let msg = json!({"name": "CloudEvent", "title": "CloudEvent (structured JSON)", "contentType": "application/cloudevents+json", "payload": cloud_event_schema(core)});
            ("redis", host_of_url(r.url.expose()), msg, "PUBLISH on channel = event type; PSUBSCRIBE edge.* sees everything; nothing is stored.".to_string(), json!({}), json!({}))
        }
        BrokerConfig::Mqtt(m) => {
            channels = domain_channels("/");
            channels.push((
                "any".into(),
                "{type}".into(),
                "any other event type: topic = type with . replaced by /".into(),
            ));
            let msg = json!({"name": "CloudEvent", "title": "CloudEvent (structured JSON)", "contentType": "application/cloudevents+json", "payload": cloud_event_schema(core)});
            (
                "mqtt",
                format!("{}:{}", m.host, m.port),
                msg,
                format!("Topic = event type with . → / (MQTT 3.1.1), QoS {}.", m.qos),
                json!({}),
                json!({"mqtt": {"qos": m.qos, "retain": false, "bindingVersion": "0.2.0"}}),
            )
        }
        BrokerConfig::Sns(c) => {
            channels = DOMAINS
                .iter()
                .map(|d| {
                    (
                        d.name.to_string(),
                        format!("{}{}", c.topic_arn_prefix, d.topic),
                        format!("{} events ({}*)", d.name, d.type_prefix),
                    )
                })
                .collect();
            let msg = json!({"name": "CloudEvent", "title": "CloudEvent (structured JSON, SNS MessageAttributes type and corename)", "contentType": "application/cloudevents+json", "headers": {"type": "object", "description": "SNS MessageAttributes (DataType String), for subscription filter policies", "properties": {"type": {"type": "string"}, "corename": {"type": "string", "const": core}}}, "payload": cloud_event_schema(core)});
            let host = c
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("sns.{}.amazonaws.com", c.region));
            (
                "sns",
                host,
                msg,
                "Topic ARN = prefix + the event's domain topic; Publish / PublishBatch (≤ 10 per call); SNS stores nothing.".to_string(),
                json!({}),
                json!({}),
            )
        }
        BrokerConfig::PubSub(c) => {
            channels = DOMAINS
                .iter()
                .map(|d| {
                    (
                        d.name.to_string(),
                        format!(
                            "projects/{}/topics/{}{}",
                            c.project, c.topic_id_prefix, d.topic
                        ),
                        format!("{} events ({}*)", d.name, d.type_prefix),
                    )
                })
                .collect();
            let msg = json!({"name": "CloudEvent", "title": "CloudEvent (structured JSON, Pub/Sub attributes type and corename)", "contentType": "application/cloudevents+json", "headers": {"type": "object", "description": "Pub/Sub message attributes, for subscription filters", "properties": {"type": {"type": "string"}, "corename": {"type": "string", "const": core}}}, "payload": cloud_event_schema(core)});
            let host = c
                .endpoint
                .clone()
                .unwrap_or_else(|| "pubsub.googleapis.com".to_string());
            (
                "googlepubsub",
                host,
                msg,
                "Topic = projects/<project>/topics/<prefix><domain topic>; one Publish call per topic and request.".to_string(),
                json!({}),
                json!({}),
            )
        }
    };
    let mut channel_map = serde_json::Map::new();
    let mut operations = serde_json::Map::new();
    for (id, address, desc) in &channels {
        let mut ch = json!({
            "address": address,
            "description": desc,
            "messages": {"cloudEvent": {"$ref": "#/components/messages/cloudEvent"}},
            "bindings": channel_bindings,
        });
        let params: Vec<&str> = ["event", "type"]
            .into_iter()
            .filter(|p| address.contains(&format!("{{{p}}}")))
            .collect();
        if !params.is_empty() {
            let mut pm = serde_json::Map::new();
            for p in params {
                pm.insert(
                    p.to_string(),
                    json!({"description": "from the event's type attribute"}),
                );
            }
            ch["parameters"] = Value::Object(pm);
        }
        channel_map.insert(id.clone(), ch);
        operations.insert(
            format!("publish_{id}"),
            json!({
                "action": "send",
                "channel": {"$ref": format!("#/channels/{id}")},
                "messages": [{"$ref": format!("#/channels/{id}/messages/cloudEvent")}]
            }),
        );
    }
    let mut message = message;
    message["bindings"] = message_bindings;
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": format!("Edgewire publisher ({} adapter, core {core})", broker.adapter_name()),
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("{description} Events enter through POST / (CloudEvents HTTP binary, structured or batch mode).")
        },
        "servers": {"broker": {"host": host, "protocol": protocol}},
        "channels": channel_map,
        "operations": operations,
        "components": {
            "messages": {"cloudEvent": message},
            "schemas": {"CloudEvent": cloud_event_schema(core)}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publisher::config::{
        AmqpConfig, KafkaConfig, MqttAuth, MqttConfig, Secret, TlsSettings,
    };

    fn cfg(b: BrokerConfig) -> PublisherConfig {
        PublisherConfig {
            enabled: true,
            core_name: "prod-us".into(),
            broker: Some(b),
            notes: vec![],
        }
    }

    #[test]
    fn mqtt_channels_use_slashes() {
        let d = document(&cfg(BrokerConfig::Mqtt(MqttConfig {
            host: "b".into(),
            port: 1883,
            qos: 1,
            auth: MqttAuth::None,
            tls: TlsSettings::default(),
        })));
        assert_eq!(d["asyncapi"], "3.0.0");
        assert_eq!(d["channels"]["nodes"]["address"], "edge/node/{event}");
        assert_eq!(
            d["components"]["messages"]["cloudEvent"]["bindings"]["mqtt"]["qos"],
            1
        );
    }

    #[test]
    fn kafka_domain_topics_or_one_topic() {
        let k = KafkaConfig {
            brokers: vec!["k:9092".into()],
            topic: None,
            sasl: None,
            tls: TlsSettings::default(),
        };
        let d = document(&cfg(BrokerConfig::Kafka(k.clone())));
        assert_eq!(d["channels"]["commands"]["address"], "edge-commands-events");
        assert_eq!(d["channels"].as_object().unwrap().len(), 4);
        let d = document(&cfg(BrokerConfig::Kafka(KafkaConfig {
            topic: Some("all".into()),
            ..k
        })));
        assert_eq!(d["channels"]["all"]["address"], "all");
    }

    #[test]
    fn amqp_server_hides_credentials() {
        let d = document(&cfg(BrokerConfig::Amqp(AmqpConfig {
            url: Secret::new("amqp://user:s3cret@rabbit:5672/%2f"),
            tls: TlsSettings::default(),
        })));
        assert_eq!(d["servers"]["broker"]["host"], "rabbit:5672");
        assert!(!d.to_string().contains("s3cret"));
        assert_eq!(
            d["channels"]["ssh"]["bindings"]["amqp"]["exchange"]["name"],
            "edge.events"
        );
    }
}
