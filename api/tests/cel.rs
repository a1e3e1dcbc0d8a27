//! Every CEL rule of the CRDs, evaluated client-side (kube's CEL evaluator) against a spec that passes and one
//! that breaks it. A rule that stopped being enforced, or started rejecting valid specs, fails here.

use edgewire_api::*;
use kube::core::cel::validate_cel;
use serde_json::json;

fn eb(spec: serde_json::Value) -> EventBroker {
    EventBroker::new(
        "events",
        serde_json::from_value(spec).expect("spec deserializes"),
    )
}
fn mqb(spec: serde_json::Value) -> MqttBroker {
    MqttBroker::new(
        "workers",
        serde_json::from_value(spec).expect("spec deserializes"),
    )
}
fn bl(spec: serde_json::Value) -> BridgeLink {
    BridgeLink::new(
        "site-a",
        serde_json::from_value(spec).expect("spec deserializes"),
    )
}

/// Asserts the object is rejected with a message containing `needle`.
macro_rules! rejects {
    ($obj:expr, $needle:expr) => {{
        let err = validate_cel(&$obj).expect_err("spec should be rejected");
        let text = format!("{err:?}");
        assert!(text.contains($needle), "expected {:?} in {text}", $needle);
    }};
}
macro_rules! accepts {
    ($obj:expr) => {{
        if let Err(e) = validate_cel(&$obj) {
            panic!("spec should be accepted: {e:?}");
        }
    }};
}

#[test]
fn nats_auth_exactly_one_mode() {
    let base = |auth: serde_json::Value| {
        eb(json!({"adapter": "nats", "nats": {"urls": ["nats://n:4222"], "auth": auth}}))
    };
    accepts!(base(json!({"token": {"name": "s", "key": "token"}})));
    accepts!(base(
        json!({"nkey": {"seed": {"name": "s", "key": "seed"}}})
    ));
    rejects!(
        base(json!({"token": {"name": "s", "key": "t"}, "userPassword": {"secretName": "u"}})),
        "exactly one of token, userPassword, nkey"
    );
    rejects!(base(json!({})), "exactly one of token, userPassword, nkey");
}

#[test]
fn client_certificate_requires_tls_enabled() {
    let base = |enabled: bool| {
        eb(
            json!({"adapter": "mqtt", "mqtt": {"url": "m:8883", "tls": {"enabled": enabled, "clientCertSecretRef": {"secretName": "c"}}}}),
        )
    };
    accepts!(base(true));
    rejects!(base(false), "mTLS requires SSL");
}

#[test]
fn deploy_broker_kind_must_belong_to_the_adapter_family() {
    accepts!(eb(
        json!({"adapter": "kafka", "deployBroker": {"kind": "redpanda"}})
    ));
    accepts!(eb(
        json!({"adapter": "rabbitmq", "deployBroker": {"kind": "rabbitmq"}})
    ));
    accepts!(eb(
        json!({"adapter": "mqtt", "deployBroker": {"kind": "emqx"}})
    ));
    rejects!(
        eb(json!({"adapter": "nats", "deployBroker": {"kind": "redis"}})),
        "must belong to the adapter's family"
    );
    rejects!(
        eb(json!({"adapter": "mqtt", "deployBroker": {"kind": "kafka"}})),
        "must belong to the adapter's family"
    );
}

#[test]
fn adapter_needs_its_connection_section() {
    accepts!(eb(
        json!({"adapter": "nats", "nats": {"urls": ["nats://n:4222"]}})
    ));
    accepts!(eb(
        json!({"adapter": "nats", "deployBroker": {"kind": "nats"}})
    ));
    rejects!(
        eb(json!({"adapter": "nats"})),
        "adapter nats needs spec.nats"
    );
    rejects!(
        eb(json!({"adapter": "kafka"})),
        "adapter kafka needs spec.kafka"
    );
    rejects!(
        eb(json!({"adapter": "amqp091", "amqp091": {}})),
        "adapter amqp091 needs spec.amqp091.url"
    );
    rejects!(
        eb(json!({"adapter": "redis"})),
        "adapter redis needs spec.redis.url"
    );
    rejects!(
        eb(json!({"adapter": "mqtt", "mqtt": {"qos": 1}})),
        "adapter mqtt needs spec.mqtt.url"
    );
    rejects!(
        eb(json!({"adapter": "aws_sns"})),
        "adapter aws_sns needs spec.awsSns"
    );
    accepts!(eb(
        json!({"adapter": "aws_sns", "awsSns": {"region": "us-east-1"}})
    ));
    rejects!(
        eb(json!({"adapter": "google_pubsub"})),
        "adapter google_pubsub needs spec.googlePubsub"
    );
}

#[test]
fn mqtt_qos_in_range() {
    accepts!(eb(
        json!({"adapter": "mqtt", "mqtt": {"url": "m:1883", "qos": 2}})
    ));
    rejects!(
        eb(json!({"adapter": "mqtt", "mqtt": {"url": "m:1883", "qos": 3}})),
        "mqtt.qos must be 0, 1 or 2"
    );
}

#[test]
fn mqtt_auth_exactly_one_mode() {
    let base = |auth: serde_json::Value| {
        eb(json!({"adapter": "mqtt", "mqtt": {"url": "m:1883", "auth": auth}}))
    };
    accepts!(base(json!({"jwt": {"name": "s", "key": "jwt"}})));
    rejects!(
        base(json!({"jwt": {"name": "s", "key": "jwt"}, "userPassword": {"secretName": "u"}})),
        "exactly one of jwt, userPassword"
    );
}

#[test]
fn deploy_broker_replicas() {
    accepts!(eb(
        json!({"adapter": "nats", "deployBroker": {"kind": "nats", "replicas": 3}})
    ));
    rejects!(
        eb(json!({"adapter": "nats", "deployBroker": {"kind": "nats", "replicas": 2}})),
        "must be odd"
    );
    accepts!(eb(
        json!({"adapter": "amqp091", "deployBroker": {"kind": "rabbitmq", "replicas": 2}})
    ));
    rejects!(
        eb(json!({"adapter": "redis", "deployBroker": {"kind": "redis", "replicas": 3}})),
        "redis and mosquitto run as a single replica"
    );
}

#[test]
fn mqtt_broker_type_needs_its_section() {
    accepts!(mqb(json!({"type": "builtin", "builtin": {}})));
    accepts!(mqb(
        json!({"type": "iotcore", "iotcore": {"region": "us-east-1"}})
    ));
    rejects!(
        mqb(json!({"type": "iotcore"})),
        "type iotcore needs spec.iotcore"
    );
    rejects!(
        mqb(json!({"type": "builtin", "iotcore": {"region": "us-east-1"}})),
        "spec.iotcore is set but type is builtin"
    );
}

fn bridge(edge: serde_json::Value, cloud: serde_json::Value) -> BridgeLink {
    bl(json!({
        "siteId": "site-a", "edge": edge, "cloud": cloud,
        "rules": [{"direction": "EdgeToCloud", "from": "local.#", "to": "edge.site-a.#"}]
    }))
}

#[test]
fn bridge_side_exactly_one_of_ref_and_endpoint() {
    let ep = json!({"endpoint": {"protocol": "nats", "url": "nats://c:4222"}});
    accepts!(bridge(
        json!({"brokerRef": {"kind": "MqttBroker", "name": "local"}}),
        ep.clone()
    ));
    rejects!(
        bridge(
            json!({"brokerRef": {"kind": "MqttBroker", "name": "local"}, "endpoint": {"protocol": "mqtt", "url": "e:1883"}}),
            ep.clone()
        ),
        "exactly one of brokerRef, endpoint"
    );
    rejects!(bridge(json!({}), ep), "exactly one of brokerRef, endpoint");
}

#[test]
fn bridge_endpoint_rules() {
    let edge = json!({"endpoint": {"protocol": "mqtt", "url": "e:1883"}});
    let cloud = |ep: serde_json::Value| json!({"endpoint": ep});
    accepts!(bridge(
        edge.clone(),
        cloud(
            json!({"protocol": "nats", "url": "tls://c:4222", "auth": {"clientCert": {"secretName": "c"}}, "tls": {"enabled": true, "minVersion": "1.3"}})
        )
    ));
    rejects!(
        bridge(
            edge.clone(),
            cloud(
                json!({"protocol": "nats", "url": "c:4222", "auth": {"clientCert": {"secretName": "c"}}})
            )
        ),
        "auth.clientCert requires tls.enabled"
    );
    rejects!(
        bridge(
            edge.clone(),
            cloud(
                json!({"protocol": "nats", "url": "c:4222", "auth": {"token": {"name": "t", "key": "t"}, "clientCert": {"secretName": "c"}}, "tls": {"enabled": true}})
            )
        ),
        "set exactly one of token, userPassword, clientCert"
    );
    rejects!(
        bridge(
            edge.clone(),
            cloud(json!({"protocol": "nats", "url": "c:4222", "mqttVersion": "5"}))
        ),
        "mqttVersion applies to protocol mqtt only"
    );
    rejects!(
        bridge(
            edge,
            cloud(json!({"protocol": "kafka", "url": "c:9092", "jetStream": {"enabled": true}}))
        ),
        "jetStream applies to protocol nats only"
    );
}

#[test]
fn bridge_rule_qos_in_range() {
    let mut b = bridge(
        json!({"endpoint": {"protocol": "mqtt", "url": "e:1883"}}),
        json!({"endpoint": {"protocol": "nats", "url": "c:4222"}}),
    );
    accepts!(b);
    b.spec.rules[0].qos = 5;
    rejects!(b, "rules[].qos must be 0, 1 or 2");
}
