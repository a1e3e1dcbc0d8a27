//! Manifests the tests apply with kubectl.

/// An Opaque Secret with one key `token`.
pub fn token_secret(ns: &str, name: &str, token: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: {name}
  namespace: {ns}
type: Opaque
stringData:
  token: {token}
"#
    )
}

/// EventBroker, adapter nats, with a NATS broker the operator deploys (one replica), token auth from Secret
/// `secret` key `token`.
pub fn nats_deployed(ns: &str, name: &str, secret: &str, publisher_replicas: u32) -> String {
    format!(
        r#"apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata:
  name: {name}
  namespace: {ns}
spec:
  coreName: e2e
  adapter: nats
  nats:
    auth:
      token:
        name: {secret}
        key: token
  deployBroker:
    kind: nats
    replicas: 1
    storage:
      size: 1Gi
  publisher:
    replicas: {publisher_replicas}
"#
    )
}

/// EventBroker, adapter nats, publishing to an external NATS with token auth from Secret `secret`.
pub fn nats_external(ns: &str, name: &str, secret: &str) -> String {
    format!(
        r#"apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata:
  name: {name}
  namespace: {ns}
spec:
  adapter: nats
  nats:
    urls: ["nats://nats.messaging:4222"]
    auth:
      token:
        name: {secret}
        key: token
  publisher:
    replicas: 1
"#
    )
}

/// EventBroker, adapter redis, with a Redis the operator deploys (generated credentials).
pub fn redis_deployed(ns: &str, name: &str) -> String {
    format!(
        r#"apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata:
  name: {name}
  namespace: {ns}
spec:
  coreName: e2e
  adapter: redis
  deployBroker:
    kind: redis
    replicas: 1
    storage:
      size: 1Gi
  publisher:
    replicas: 1
"#
    )
}

/// EventBroker, adapter mqtt, publishing to an external MQTT broker (no auth).
pub fn mqtt_external(ns: &str, name: &str) -> String {
    format!(
        r#"apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata:
  name: {name}
  namespace: {ns}
spec:
  coreName: e2e
  adapter: mqtt
  mqtt:
    url: mqtt.example.com:1883
    qos: 1
  publisher:
    replicas: 1
"#
    )
}

/// An EventBroker with `spec` (YAML lines indented by two spaces) as is: for invalid specs.
pub fn eventbroker_with_spec(ns: &str, name: &str, spec: &str) -> String {
    format!(
        r#"apiVersion: edgewire.dev/v1alpha1
kind: EventBroker
metadata:
  name: {name}
  namespace: {ns}
spec:
{spec}"#
    )
}
