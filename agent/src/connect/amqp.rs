//! AMQP 0-9-1 connections (lapin) of the publisher adapter, the bridge's AMQP side and `tail`: the URL
//! rules (the host as written, `amqps` when TLS is on), one TCP + TLS connector with our rustls
//! configuration (CA, client certificate, minimum version, server name), a connect timeout, and error
//! texts without passwords. lapin's own recovery is not used: each user reconnects in its own loop.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};

use crate::tls::{TlsError, TlsSettings};

/// How long opening a connection (TCP, TLS, AMQP handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Parses an `amqp://` / `amqps://` URL. amq-protocol-uri takes the host only from a domain name and
/// falls back to `localhost` for an IP address (`amqp://10.0.0.5` would silently connect to localhost):
/// the host is taken from the URL as written. The error never quotes the URL (it may hold credentials).
pub fn parse_uri(raw: &str) -> Result<AMQPUri, String> {
    let mut uri: AMQPUri = raw.parse().map_err(|m: String| {
        format!(
            "not an amqp:// or amqps:// URL: {}",
            m.replace(raw, "<url>")
        )
    })?;
    if let Some(host) = url::Url::parse(raw)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
    {
        uri.authority.host = host;
    }
    Ok(uri)
}

/// Parses `url`, as `amqps://` when `tls` is on (`amqp://` URL with TLS enabled).
pub fn uri(url: &str, tls: bool) -> Result<AMQPUri, String> {
    let raw = url.trim();
    match raw.strip_prefix("amqp://") {
        Some(rest) if tls => parse_uri(&format!("amqps://{rest}")),
        _ => parse_uri(raw),
    }
}

/// Replaces every non-empty value of `secrets` in `msg` by `***`.
pub fn redact(msg: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(msg.to_string(), |m, s| m.replace(s.as_str(), "***"))
}

/// Opens connections to one broker: the URL, TLS for `amqps`, the connection name, and the passwords
/// to keep out of error texts.
pub struct Connector {
    uri: AMQPUri,
    tls: Option<Arc<RustlsConnector>>,
    name: String,
    secrets: Vec<String>,
}

impl Connector {
    /// TLS is used when `uri` is `amqps`: with `tls` when enabled, else the system roots and TLS 1.2 or
    /// later (`amqps://` without a TLS block). Fails on unreadable TLS files.
    pub fn new(
        uri: AMQPUri,
        tls: &TlsSettings,
        name: impl Into<String>,
        secrets: Vec<String>,
    ) -> Result<Self, TlsError> {
        let tls = if uri.scheme == AMQPScheme::AMQPS {
            let settings = if tls.enabled {
                tls.clone()
            } else {
                TlsSettings {
                    enabled: true,
                    ..Default::default()
                }
            };
            let cfg = crate::tls::client_config(&settings)?;
            Some(Arc::new(RustlsConnector::from(cfg)))
        } else {
            None
        };
        Ok(Self {
            uri,
            tls,
            name: name.into(),
            secrets,
        })
    }

    /// The connection name (the bridge also names its queue and consumer so).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `msg` without the passwords.
    pub fn redact(&self, msg: &str) -> String {
        redact(msg, &self.secrets)
    }

    /// `host:port (vhost "…")`, for messages (never the credentials).
    pub fn describe(&self) -> String {
        format!(
            "{}:{} (vhost {:?})",
            self.uri.authority.host, self.uri.authority.port, self.uri.vhost
        )
    }

    /// One TCP (and TLS) connection by lapin's connector, with our rustls configuration instead of
    /// lapin's own. The error is redacted.
    pub async fn open(&self) -> Result<Connection, String> {
        let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
        let props = ConnectionProperties::default().with_connection_name(self.name.as_str().into());
        let tls = self.tls.clone();
        let connecting = Connection::connector(
            self.uri.clone(),
            runtime,
            async move |uri: AMQPUri, rt| {
                // Runs on lapin's I/O thread, where blocking name resolution is harmless.
                let addrs: Vec<SocketAddr> = (uri.authority.host.as_str(), uri.authority.port)
                    .to_socket_addrs()?
                    .collect();
                let stream = AsyncTcpStream::connect(&rt, addrs).await?;
                match &tls {
                    Some(c) => Ok(stream.into_rustls(c, &uri.authority.host).await?),
                    None => Ok(stream),
                }
            },
            props,
        );
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => Err(format!("no connection within {CONNECT_TIMEOUT:?}")),
            Ok(Err(e)) => Err(self.redact(&e.to_string())),
            Ok(Ok(conn)) => Ok(conn),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_address_host_is_kept_not_replaced_by_localhost() {
        let u = parse_uri("amqp://user:pw@10.0.0.5:5673/%2f").unwrap();
        assert_eq!(u.authority.host, "10.0.0.5");
        assert_eq!(u.authority.port, 5673);
        let u = parse_uri("amqps://[fd00::7]/prod").unwrap();
        assert_eq!(u.authority.host, "fd00::7");
        assert_eq!(u.vhost, "prod");
        assert_eq!(
            parse_uri("amqp://rabbit.ns.svc:5672/%2f")
                .unwrap()
                .authority
                .host,
            "rabbit.ns.svc"
        );
    }

    #[test]
    fn a_bad_url_error_does_not_quote_the_credentials() {
        let e = parse_uri("amqpx://user:s3cret@host/").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn tls_switches_an_amqp_url_to_amqps() {
        let u = uri(" amqp://rabbit/%2f ", true).unwrap();
        assert_eq!((u.scheme, u.authority.port), (AMQPScheme::AMQPS, 5671));
        let u = uri("amqp://rabbit/%2f", false).unwrap();
        assert_eq!((u.scheme, u.authority.port), (AMQPScheme::AMQP, 5672));
        let u = uri("amqps://rabbit/%2f", false).unwrap();
        assert_eq!(u.scheme, AMQPScheme::AMQPS);
    }

    /// What the connector negotiates with a server speaking only `versions`, under `min` and `server_name`
    /// (the server's certificate is for `localhost`).
    async fn negotiated(
        versions: &[&'static rustls::SupportedProtocolVersion],
        min: crate::tls::TlsVersion,
        host: &str,
        server_name: Option<&str>,
    ) -> Result<rustls::ProtocolVersion, String> {
        let pki = edgewire_e2e::pki::TestPki::new("amqp").unwrap();
        let (port, rx) = crate::tls::testing::tls_server(&pki, versions);
        let tls = TlsSettings {
            enabled: true,
            ca_file: Some(pki.ca_path()),
            min_version: min,
            server_name: server_name.map(String::from),
            ..Default::default()
        };
        let uri = uri(&format!("amqp://{host}:{port}/%2f"), true).unwrap();
        let c = Connector::new(uri, &tls, "tls-probe", vec![]).unwrap();
        // The server speaks no AMQP after the handshake: opening fails either way.
        assert!(c.open().await.is_err());
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the connector never reached the TLS server")
    }

    /// The publisher's AMQP connection used to go through lapin's own TLS setup, which ignored
    /// `EVENT_BROKER_RABBITMQ_TLS_MIN_VERSION` and `_TLS_SERVER_NAME`; through this connector both apply.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_tls_minimum_version_and_server_name_apply() {
        use crate::tls::TlsVersion::{V1_2, V1_3};
        use rustls::ProtocolVersion::TLSv1_2;
        use rustls::version::TLS12;
        assert_eq!(
            negotiated(&[&TLS12], V1_2, "localhost", None).await,
            Ok(TLSv1_2)
        );
        let r = negotiated(&[&TLS12], V1_3, "localhost", None).await;
        assert!(r.is_err(), "a TLS 1.2-only broker was accepted: {r:?}");
        // Connected by IP address, verified against the configured name.
        let by_name = negotiated(&[&TLS12], V1_2, "127.0.0.1", Some("localhost")).await;
        assert_eq!(by_name, Ok(TLSv1_2));
    }
}
