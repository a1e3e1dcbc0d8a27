//! MQTT connections (rumqttc) of the publisher adapter, `tail`, the bridge's MQTT 3.1.1 and 5 sides and
//! the MQTT sidecar: the limits, keep-alive, credentials and TLS transport every client is built with, the
//! QoS mapping, and connection errors in words. The caller adds what its role needs (clean session or a
//! persistent one, manual acknowledgements, the in-flight window) and drives the event loop.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, QoS, TlsConfiguration, Transport};

use crate::tls::{TlsError, TlsSettings};

/// Largest packet sent or received.
pub const MAX_PACKET: usize = 4 * 1024 * 1024;

/// Keep-alive of every connection: how soon a dead broker is noticed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The QoS of a configured level (0, 1 or 2; anything else is 1).
pub fn qos(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        2 => QoS::ExactlyOnce,
        _ => QoS::AtLeastOnce,
    }
}

/// The same for MQTT 5.
pub fn qos_v5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS as V5;
    match qos(q) {
        QoS::AtMostOnce => V5::AtMostOnce,
        QoS::AtLeastOnce => V5::AtLeastOnce,
        QoS::ExactlyOnce => V5::ExactlyOnce,
    }
}

/// MQTT 3.1.1 options: keep-alive, [`MAX_PACKET`] both ways, `credentials` (user name, password) and the
/// TLS transport when enabled.
pub fn options(
    client_id: impl Into<String>,
    host: impl Into<String>,
    port: u16,
    credentials: Option<(String, String)>,
    tls: &TlsSettings,
) -> Result<MqttOptions, TlsError> {
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(KEEP_ALIVE)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    if let Some((user, password)) = credentials {
        o.set_credentials(user, password);
    }
    if let Some(t) = transport(tls)? {
        o.set_transport(t);
    }
    Ok(o)
}

/// The TLS transport of `tls` (our rustls configuration); `None` for plain TCP. For both MQTT versions.
pub fn transport(tls: &TlsSettings) -> Result<Option<Transport>, TlsError> {
    if !tls.enabled {
        return Ok(None);
    }
    let cfg = crate::tls::client_config(tls)?;
    Ok(Some(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(cfg),
    ))))
}

/// A client id unique per process (two publisher replicas must not kick each other off).
pub fn client_id(role: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("edgewire-{role}-{}-{nanos:08x}", std::process::id())
}

/// A connection error in words, without secrets.
pub fn describe(e: &rumqttc::ConnectionError) -> String {
    match e {
        rumqttc::ConnectionError::ConnectionRefused(code) => {
            format!("the MQTT broker refused the connection: {code:?}")
        }
        other => format!("MQTT connection error: {other}"),
    }
}

/// The same for MQTT 5.
pub fn describe_v5(e: &rumqttc::v5::ConnectionError) -> String {
    match e {
        rumqttc::v5::ConnectionError::ConnectionRefused(code) => {
            format!("the MQTT broker refused the connection: {code:?}")
        }
        other => format!("MQTT connection error: {other}"),
    }
}
