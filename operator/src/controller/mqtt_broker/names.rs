//! Names, labels and fixed settings of an MqttBroker's children: what every stage may know.

use std::time::Duration;

/// Owner-kind label value of MqttBroker children.
pub const KIND_LABEL: &str = "mqttbroker";
/// `app.kubernetes.io/name` of the builtin broker's objects (distinct from an EventBroker's deployed
/// Mosquitto, `edgewire-mosquitto`, so the two never select each other's pods).
pub const APP: &str = "edgewire-mqtt-broker";
/// The MQTT user of the metrics/reload sidecar (reads `$SYS` only); no spec user may take this name.
pub const SIDECAR_USER: &str = "edgewire-sidecar";
/// Port of the plain listener, and of the loopback listener the sidecar uses when the plain one is off.
pub const MQTT_PORT: i32 = 1883;

/// The config Secret (`mosquitto.conf`, `passwd`, `acl`): `<mqb>-mosquitto`.
pub fn config_secret_name(mqb: &str) -> String {
    format!("{mqb}-mosquitto")
}

/// The Secret with a generated user password: `<mqb>-user-<user>` (keys `username`, `password`).
pub fn user_secret_name(mqb: &str, user: &str) -> String {
    format!("{mqb}-user-{user}")
}

/// The Secret with the sidecar's generated credentials: `<mqb>-sidecar`.
pub fn sidecar_secret_name(mqb: &str) -> String {
    format!("{mqb}-sidecar")
}

/// The headless Service: `<mqb>-headless`.
pub fn headless_name(mqb: &str) -> String {
    format!("{mqb}-headless")
}

/// How often a healthy MqttBroker is looked at again even without a change.
pub const RESYNC: Duration = Duration::from_secs(300);
