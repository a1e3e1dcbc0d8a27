//! Redis clients (redis-rs) of the publisher adapter and `tail`: the URL (`rediss://` when TLS is on)
//! with the CA and client certificate when given, and errors that never quote the URL.

use super::SetupError;
use crate::secret::Secret;
use crate::tls::TlsSettings;

/// A redis client for `url`: `rediss://` when TLS is on, with the CA and client certificate when given.
pub fn client(url: &Secret, tls: &TlsSettings) -> Result<redis::Client, SetupError> {
    let raw = url.expose();
    let url = match raw.strip_prefix("redis://") {
        Some(rest) if tls.enabled => format!("rediss://{rest}"),
        _ => raw.to_string(),
    };
    let bad_url = |e: redis::RedisError| {
        SetupError::Config(format!(
            "{}: invalid URL ({:?})",
            edgewire_api::env::REDIS_URL,
            e.kind()
        ))
    };
    if tls.enabled && (tls.ca_file.is_some() || tls.client_cert.is_some()) {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| {
                SetupError::Config(format!("cannot read {}: {}", p.display(), e.kind()))
            })
        };
        let root_cert = match &tls.ca_file {
            Some(p) => Some(read(p)?),
            None => None,
        };
        let client_tls = match &tls.client_cert {
            Some(cc) => Some(redis::ClientTlsConfig {
                client_cert: read(&cc.cert_file)?,
                client_key: read(&cc.key_file)?,
            }),
            None => None,
        };
        redis::Client::build_with_tls(
            url.as_str(),
            redis::TlsCertificates {
                client_tls,
                root_cert,
            },
        )
        .map_err(bad_url)
    } else {
        redis::Client::open(url.as_str()).map_err(bad_url)
    }
}

/// A Redis error without anything that may quote credentials.
pub fn describe(e: &redis::RedisError) -> String {
    match (e.code(), std::error::Error::source(e)) {
        (Some(code), _) => format!("{code} {}", e.detail().unwrap_or_default()),
        (None, Some(io)) if e.is_io_error() => format!("{:?}: {io}", e.kind()),
        (None, _) => format!("{:?}", e.kind()),
    }
}
