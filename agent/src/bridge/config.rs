//! The bridge configuration: a whole `BridgeLink` YAML document (what the operator renders into the
//! `<name>-bridge-config` Secret, or what a user writes on an edge box), with referenced Secrets read
//! from `<secrets-dir>/<secret name>/<key>` files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use edgewire_api::quantity::quantity_bytes;
use edgewire_api::v1alpha1::{BridgeLink, BridgeRule, BridgeSide, Overflow, validate_rules};
use edgewire_api::v1alpha1::{
    Endpoint, MqttVersion, PASSWORD_KEY, Protocol, SecretKeyRef, USERNAME_KEY,
};
use edgewire_api::{HeaderName, HeaderValue};

use crate::secret::{self, Secret};
use crate::tls::TlsSettings;

/// Header carrying the site id on every edge→cloud message.
pub const SITE_HEADER: &str = "edge-site-id";

/// A configuration problem; the message names the field and never holds a secret value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BridgeConfigError(pub String);

fn err(msg: impl Into<String>) -> BridgeConfigError {
    BridgeConfigError(msg.into())
}

/// Credentials of an endpoint (a client certificate lives in `tls.client_cert`).
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    None,
    Token(Secret),
    UserPassword { username: String, password: Secret },
}

/// One resolved side.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    pub protocol: Protocol,
    pub url: String,
    pub mqtt_version: MqttVersion,
    pub jetstream: bool,
    /// AMQP 0-9-1: the exchange edge→cloud messages go to and cloud→edge queues bind to (`None`:
    /// `amq.topic`).
    pub exchange: Option<String>,
    pub auth: Auth,
    pub tls: TlsSettings,
}

impl EndpointConfig {
    /// `host`, `port` of an MQTT url (`host:port`, `mqtt://`, `mqtts://`, `tcp://`, `ssl://`).
    pub fn mqtt_host_port(&self) -> Result<(String, u16), BridgeConfigError> {
        let s = self
            .url
            .split_once("://")
            .map(|(_, r)| r)
            .unwrap_or(&self.url)
            .trim_end_matches('/');
        if s.contains('@') {
            return Err(err(format!(
                "endpoint url {:?}: credentials go in auth (a Secret), not in the URL",
                crate::secret::redact_url(&self.url)
            )));
        }
        let default = if self.tls.enabled { 8883 } else { 1883 };
        match s.rsplit_once(':') {
            Some((h, p)) => Ok((
                h.trim_matches(['[', ']']).to_string(),
                p.parse().map_err(|_| {
                    err(format!(
                        "endpoint url {:?}: bad port",
                        crate::secret::redact_url(&self.url)
                    ))
                })?,
            )),
            None if !s.is_empty() => Ok((s.to_string(), default)),
            None => Err(err(format!(
                "endpoint url {:?}: no host",
                crate::secret::redact_url(&self.url)
            ))),
        }
    }
}

/// The whole bridge configuration.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub name: String,
    pub namespace: String,
    pub site_id: String,
    pub edge: EndpointConfig,
    pub cloud: EndpointConfig,
    pub rules: Vec<BridgeRule>,
    /// `spec.headers` plus `edge-site-id`.
    pub headers: Vec<(String, String)>,
    pub spool_max_bytes: u64,
    pub overflow: Overflow,
}

/// Reads and validates a BridgeLink file.
pub fn from_file(path: &Path, secrets_dir: &Path) -> Result<BridgeConfig, BridgeConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    from_yaml(&text, secrets_dir)
}

/// Parses and validates a BridgeLink document.
pub fn from_yaml(text: &str, secrets_dir: &Path) -> Result<BridgeConfig, BridgeConfigError> {
    let bl: BridgeLink = serde_norway::from_str(text)
        .map_err(|e| err(format!("not a valid BridgeLink document: {e}")))?;
    let name = bl
        .metadata
        .name
        .clone()
        .ok_or_else(|| err("metadata.name is required"))?;
    let namespace = bl
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let spec = bl.spec;
    validate_rules(&spec).map_err(err)?;
    let edge = side(&spec.edge, "spec.edge", secrets_dir)?;
    let cloud = side(&spec.cloud, "spec.cloud", secrets_dir)?;
    if !matches!(edge.protocol, Protocol::Mqtt | Protocol::Nats) {
        return Err(err(
            "spec.edge.endpoint.protocol: the edge side speaks mqtt or nats",
        ));
    }
    let max = quantity_bytes(&spec.spool.max_bytes).ok_or_else(|| {
        err(format!(
            "spec.spool.maxBytes: {:?} is not a quantity",
            spec.spool.max_bytes
        ))
    })?;
    if max == 0 {
        return Err(err("spec.spool.maxBytes must be above 0"));
    }
    // Every header goes out on every edge→cloud message: one the protocol cannot carry (a space or `:`
    // in a NATS header name, a line break in a value, an AMQP key over 255 bytes) must stop the start
    // here with the field named, not panic in the client library at the first message.
    check_site_id(&spec.site_id)?;
    for (name, value) in &spec.headers {
        HeaderName::from_str(name).map_err(|m| err(format!("spec.headers: {m}")))?;
        HeaderValue::from_str(value).map_err(|m| err(format!("spec.headers.{name}: {m}")))?;
    }
    for (field, side) in [("spec.edge", &edge), ("spec.cloud", &cloud)] {
        if side.protocol == Protocol::Amqp091 {
            check_amqp_names(field, side, &name, &namespace, &spec.rules)?;
        }
    }
    let mut headers: BTreeMap<String, String> = spec.headers.clone();
    headers.insert(SITE_HEADER.into(), spec.site_id.clone());
    Ok(BridgeConfig {
        name,
        namespace,
        site_id: spec.site_id.clone(),
        edge,
        cloud,
        rules: spec.rules.clone(),
        headers: headers.into_iter().collect(),
        spool_max_bytes: max,
        overflow: spec.spool.overflow,
    })
}

/// AMQP 0-9-1 names are short strings of at most 255 bytes (lapin panics on a longer one): the exchange,
/// the queue (`edgewire-bridge-<namespace>-<name>-cloud`) and the binding keys of the cloud→edge rules.
fn check_amqp_names(
    field: &str,
    side: &EndpointConfig,
    name: &str,
    namespace: &str,
    rules: &[BridgeRule],
) -> Result<(), BridgeConfigError> {
    const MAX: usize = 255;
    if let Some(x) = &side.exchange
        && x.len() > MAX
    {
        return Err(err(format!(
            "{field}.endpoint.exchange is {} bytes; AMQP names are at most {MAX}",
            x.len()
        )));
    }
    let queue = format!("edgewire-bridge-{namespace}-{name}-cloud").len();
    if queue > MAX {
        return Err(err(format!(
            "metadata.name and metadata.namespace make an AMQP queue name of {queue} bytes (edgewire-bridge-<namespace>-<name>-cloud); at most {MAX}"
        )));
    }
    for (i, r) in rules.iter().enumerate() {
        let key = r.from.to_amqp();
        if r.direction == edgewire_api::v1alpha1::Direction::CloudToEdge && key.len() > MAX {
            return Err(err(format!(
                "spec.rules[{i}].from is {} bytes as an AMQP binding key; at most {MAX}",
                key.len()
            )));
        }
    }
    Ok(())
}

/// `spec.siteId` is a DNS label (the CRD's pattern); it travels as the `edge-site-id` header.
fn check_site_id(s: &str) -> Result<(), BridgeConfigError> {
    let b = s.as_bytes();
    let ok = (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    ok.then_some(()).ok_or_else(|| {
        err(format!(
            "spec.siteId: {s:?} must be a DNS label (lower-case letters, digits and '-', at most 63)"
        ))
    })
}

fn side(s: &BridgeSide, field: &str, dir: &Path) -> Result<EndpointConfig, BridgeConfigError> {
    if s.broker_ref.is_some() {
        return Err(err(format!(
            "{field}.brokerRef: a brokerRef is resolved by the operator into an endpoint; give an endpoint when running the agent directly"
        )));
    }
    let e: &Endpoint = s
        .endpoint
        .as_ref()
        .ok_or_else(|| err(format!("{field}: set an endpoint")))?;
    let f = format!("{field}.endpoint");
    let mut tls = TlsSettings::default();
    if let Some(t) = &e.tls {
        tls.enabled = t.enabled;
        tls.min_version = t.min_version;
        tls.server_name = t.server_name.clone();
        if let Some(ca) = &t.ca_secret_ref {
            tls.ca_file = Some(key_path(dir, ca));
        }
        if let Some(cc) = &t.client_cert_secret_ref {
            tls.client_cert = Some(secret::client_cert(dir, &cc.secret_name));
        }
    }
    let mut auth = Auth::None;
    if let Some(a) = &e.auth {
        let modes = [
            a.token.is_some(),
            a.user_password.is_some(),
            a.client_cert.is_some(),
        ];
        if modes.iter().filter(|m| **m).count() != 1 {
            return Err(err(format!(
                "{f}.auth: set exactly one of token, userPassword, clientCert"
            )));
        }
        if let Some(t) = &a.token {
            auth = Auth::Token(read_secret(dir, t, &format!("{f}.auth.token"))?);
        }
        if let Some(up) = &a.user_password {
            let r = |key: &str| {
                read_secret(
                    dir,
                    &SecretKeyRef {
                        name: up.secret_name.clone(),
                        key: key.into(),
                    },
                    &format!("{f}.auth.userPassword"),
                )
            };
            auth = Auth::UserPassword {
                username: r(USERNAME_KEY)?.expose().to_string(),
                password: r(PASSWORD_KEY)?,
            };
        }
        if let Some(cc) = &a.client_cert {
            if !tls.enabled {
                return Err(err(format!(
                    "{f}.auth.clientCert requires tls.enabled: true"
                )));
            }
            tls.client_cert = Some(secret::client_cert(dir, &cc.secret_name));
        }
    }
    for p in [
        tls.ca_file.as_ref(),
        tls.client_cert.as_ref().map(|c| &c.cert_file),
        tls.client_cert.as_ref().map(|c| &c.key_file),
    ]
    .into_iter()
    .flatten()
    {
        if !p.is_file() {
            return Err(err(format!("{f}.tls: file {} does not exist", p.display())));
        }
    }
    if e.mqtt_version.is_some() && e.protocol != Protocol::Mqtt {
        return Err(err(format!(
            "{f}.mqttVersion applies to protocol mqtt only"
        )));
    }
    if e.jet_stream.is_some() && e.protocol != Protocol::Nats {
        return Err(err(format!("{f}.jetStream applies to protocol nats only")));
    }
    if e.exchange.is_some() && e.protocol != Protocol::Amqp091 {
        return Err(err(format!(
            "{f}.exchange applies to protocol amqp091 only"
        )));
    }
    let mqtt_version = e.mqtt_version.unwrap_or_default();
    Ok(EndpointConfig {
        protocol: e.protocol,
        url: e.url.clone(),
        mqtt_version,
        jetstream: e.jet_stream.as_ref().is_some_and(|j| j.enabled),
        exchange: e.exchange.clone(),
        auth,
        tls,
    })
}

fn key_path(dir: &Path, r: &SecretKeyRef) -> PathBuf {
    secret::key_path(dir, &r.name, &r.key)
}

fn read_secret(dir: &Path, r: &SecretKeyRef, field: &str) -> Result<Secret, BridgeConfigError> {
    let p = key_path(dir, r);
    secret::read_file(&p).map_err(|e| {
        err(format!(
            "{field}: cannot read Secret {}/{} from {}: {e}",
            r.name,
            r.key,
            p.display()
        ))
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A BridgeLink document: an MQTT edge, a NATS cloud, one rule each way (also the bridge's ingest tests).
    pub(in crate::bridge) const DOC: &str = r#"
apiVersion: edgewire.dev/v1alpha1
kind: BridgeLink
metadata: {name: site-a, namespace: factory}
spec:
  siteId: site-a
  edge: {endpoint: {protocol: mqtt, url: "127.0.0.1:1883"}}
  cloud: {endpoint: {protocol: nats, url: "nats://127.0.0.1:4222"}}
  headers: {plant: berlin}
  spool: {maxBytes: 64Mi, overflow: DropOldest}
  rules:
    - {direction: EdgeToCloud, from: "local.telemetry.#", to: "edge.site-a.telemetry.#"}
    - {direction: CloudToEdge, from: "cmd.site-a.*", to: "local.cmd.*"}
"#;

    #[test]
    fn parses_a_bridgelink_document() {
        let c = from_yaml(DOC, Path::new("/nonexistent")).unwrap();
        assert_eq!(
            (c.name.as_str(), c.namespace.as_str()),
            ("site-a", "factory")
        );
        assert_eq!(c.spool_max_bytes, 64 << 20);
        assert_eq!(c.overflow, Overflow::DropOldest);
        assert_eq!(
            c.headers,
            vec![
                ("edge-site-id".to_string(), "site-a".to_string()),
                ("plant".to_string(), "berlin".to_string())
            ]
        );
        assert_eq!(c.edge.mqtt_host_port().unwrap(), ("127.0.0.1".into(), 1883));
    }

    #[test]
    fn rejects_a_loop_naming_both_rules() {
        let doc = DOC.replace("local.cmd.*", "local.telemetry.*");
        let e = from_yaml(&doc, Path::new("/x")).unwrap_err().to_string();
        assert!(
            e.contains("rules[1]") && e.contains("rules[0]") && e.contains("loop"),
            "{e}"
        );
    }

    #[test]
    fn rejects_broker_ref_and_cloud_only_edge() {
        let doc = DOC.replace(
            "edge: {endpoint: {protocol: mqtt, url: \"127.0.0.1:1883\"}}",
            "edge: {brokerRef: {kind: MqttBroker, name: m}}",
        );
        let e = from_yaml(&doc, Path::new("/x")).unwrap_err().to_string();
        assert!(e.contains("brokerRef is resolved by the operator"), "{e}");
        let doc = DOC.replace("protocol: mqtt, url", "protocol: kafka, url");
        assert!(from_yaml(&doc, Path::new("/x")).is_err());
    }

    #[test]
    fn reads_secrets_from_files_and_never_prints_them() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("edge-creds")).unwrap();
        std::fs::write(d.path().join("edge-creds/username"), "bridge\n").unwrap();
        std::fs::write(d.path().join("edge-creds/password"), "s3cr3t\n").unwrap();
        let doc = DOC.replace(
            "url: \"127.0.0.1:1883\"}",
            "url: \"127.0.0.1:1883\", auth: {userPassword: {secretName: edge-creds}}}",
        );
        let c = from_yaml(&doc, d.path()).unwrap();
        match &c.edge.auth {
            Auth::UserPassword { username, password } => {
                assert_eq!(username, "bridge");
                assert_eq!(password.expose(), "s3cr3t");
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let missing = from_yaml(&doc, Path::new("/nonexistent")).unwrap_err();
        assert!(
            missing.to_string().contains("edge-creds/username"),
            "{missing}"
        );
    }

    #[test]
    fn amqp_cloud_with_its_exchange() {
        let doc = DOC.replace(
            "cloud: {endpoint: {protocol: nats, url: \"nats://127.0.0.1:4222\"}}",
            "cloud: {endpoint: {protocol: amqp091, url: \"amqp://127.0.0.1:5672/%2f\", exchange: telemetry}}",
        );
        let c = from_yaml(&doc, Path::new("/x")).unwrap();
        assert_eq!(c.cloud.protocol, Protocol::Amqp091);
        assert_eq!(c.cloud.exchange.as_deref(), Some("telemetry"));
        let doc = DOC.replace(
            "url: \"nats://127.0.0.1:4222\"}",
            "url: \"nats://127.0.0.1:4222\", exchange: telemetry}",
        );
        let e = from_yaml(&doc, Path::new("/x")).unwrap_err().to_string();
        assert!(
            e.contains("exchange applies to protocol amqp091 only"),
            "{e}"
        );
    }

    /// Issue 14 item 9: a header NATS (or AMQP) cannot carry panicked the client library at the first
    /// message; it is a configuration error naming the field.
    #[test]
    fn headers_no_protocol_can_carry_are_refused_naming_the_field() {
        let cases = [
            (
                "headers: {plant: berlin}",
                "headers: {\"a b\": x}",
                "spec.headers",
            ),
            (
                "headers: {plant: berlin}",
                "headers: {\"a:b\": x}",
                "spec.headers",
            ),
            (
                "headers: {plant: berlin}",
                "headers: {\"pläntä\": x}",
                "spec.headers",
            ),
            (
                "headers: {plant: berlin}",
                "headers: {plant: \"a\\r\\nb\"}",
                "spec.headers.plant",
            ),
            (
                "headers: {plant: berlin}",
                "headers: {plant: \"bé\"}",
                "spec.headers.plant",
            ),
            ("siteId: site-a", "siteId: \"site a\"", "spec.siteId"),
        ];
        for (from, to, field) in cases {
            let doc = DOC.replace(from, to);
            assert_ne!(doc, DOC, "{to}");
            let e = from_yaml(&doc, Path::new("/x")).unwrap_err().to_string();
            assert!(e.starts_with(field), "{to}: {e}");
        }
        let long = format!("headers: {{{}: x}}", "k".repeat(256));
        let e = from_yaml(
            &DOC.replace("headers: {plant: berlin}", &long),
            Path::new("/x"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("spec.headers"), "{e}");
    }

    /// `spec.spool.maxBytes` is read with the api crate's quantity parser, as the operator reads it: `1e9`
    /// and `1.5Gi` mean the same to both.
    #[test]
    fn quantities() {
        let max = |q: &str| {
            from_yaml(
                &DOC.replace("maxBytes: 64Mi", &format!("maxBytes: {q}")),
                Path::new("/x"),
            )
            .map(|c| c.spool_max_bytes)
        };
        assert_eq!(max("4Gi").unwrap(), 4 << 30);
        assert_eq!(max("10M").unwrap(), 10_000_000);
        assert_eq!(max("1024").unwrap(), 1024);
        assert_eq!(max("1e9").unwrap(), 1_000_000_000);
        assert_eq!(max("1.5Gi").unwrap(), 3 << 29);
        assert!(max("x").is_err());
    }

    /// Header names and values are held to what every bridge protocol can carry (the api crate's
    /// `HeaderName`, `HeaderValue`); the error names the field.
    #[test]
    fn refuses_headers_a_protocol_cannot_carry() {
        for (headers, field) in [
            ("{\"has space\": x}", "spec.headers"),
            ("{\"a:b\": x}", "spec.headers"),
            ("{plant: \"a\\r\\nInjected: x\"}", "spec.headers.plant"),
            ("{plant: \"Köln\"}", "spec.headers.plant"),
        ] {
            let doc = DOC.replace("{plant: berlin}", headers);
            let e = from_yaml(&doc, Path::new("/x")).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{field}: ")), "{headers}: {e}");
        }
    }
}
