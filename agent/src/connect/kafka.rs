//! Kafka clients (librdkafka through rdkafka) of the publisher adapter, the bridge's Kafka side and
//! `tail`: the settings every producer and consumer starts from — bootstrap servers, reconnect pacing,
//! the security protocol, SASL and the TLS files. librdkafka connects and reconnects by itself.

use rdkafka::ClientConfig;

pub use edgewire_api::SaslMechanism;

use crate::secret::Secret;
use crate::tls::TlsSettings;

/// SASL credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
}

/// librdkafka settings for `brokers` (`host:port`) with `sasl` and `tls` (shared by producers and
/// consumers, which add their own).
pub fn client_config(
    brokers: &[String],
    sasl: Option<&KafkaSasl>,
    tls: &TlsSettings,
) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers.join(","))
        .set("client.id", "edgewire-agent")
        .set("reconnect.backoff.ms", "250")
        .set("reconnect.backoff.max.ms", "5000");
    let protocol = match (sasl, tls.enabled) {
        (Some(_), true) => "SASL_SSL",
        (Some(_), false) => "SASL_PLAINTEXT",
        (None, true) => "SSL",
        (None, false) => "PLAINTEXT",
    };
    cc.set("security.protocol", protocol);
    if let Some(s) = sasl {
        let mech = match s.mechanism {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        };
        cc.set("sasl.mechanism", mech)
            .set("sasl.username", &s.username)
            .set("sasl.password", s.password.expose());
    }
    if tls.enabled {
        if let Some(ca) = &tls.ca_file {
            cc.set("ssl.ca.location", ca.display().to_string());
        }
        if let Some(cc_files) = &tls.client_cert {
            cc.set(
                "ssl.certificate.location",
                cc_files.cert_file.display().to_string(),
            )
            .set("ssl.key.location", cc_files.key_file.display().to_string());
        }
    }
    cc
}
