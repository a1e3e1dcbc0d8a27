//! Credentials: the [`Secret`] wrapper, and referenced Secrets mounted as files (`<dir>/<secret name>/<key>`,
//! the layout of a Secret volume), as the publisher's `--config` mode and the bridge read them.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use crate::tls::ClientCert;

/// The keys of a `kubernetes.io/tls` Secret: the client certificate and its key (mTLS).
pub const TLS_CERT_KEY: &str = "tls.crt";
pub const TLS_KEY_KEY: &str = "tls.key";

/// A credential, held in a [`secrecy::SecretString`]: zeroed when dropped, and its `Debug` and `Display`
/// never show the value, so it cannot leak into logs or errors. Equality compares the values (whole
/// configurations are compared, in tests and between the file and environment interfaces).
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The value, for handing to a client library. Never format it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `url` fit to quote in a message: the user-info of each URL (`scheme://user:password@host`, or a NATS
/// token as `nats://token@host`; also without a scheme, and in a comma-separated list) becomes `***`, so a
/// configuration error can say which URL it means without printing its credentials.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.find("://") {
                Some(i) => one.split_at(i + 3),
                None => ("", one),
            };
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}***{}", &rest[at..]),
                None => one.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The file of key `key` of the mounted Secret `name` under `dir`.
pub fn key_path(dir: &Path, name: &str, key: &str) -> PathBuf {
    dir.join(name).join(key)
}

/// The certificate and key files of the mounted `kubernetes.io/tls` Secret `name` under `dir`.
pub fn client_cert(dir: &Path, name: &str) -> ClientCert {
    ClientCert {
        cert_file: key_path(dir, name, TLS_CERT_KEY),
        key_file: key_path(dir, name, TLS_KEY_KEY),
    }
}

/// A secret value read from a file: its exact bytes apart from a trailing newline (files written with
/// `echo`, and what a Secret's `stringData` often ends with).
pub fn read_file(path: &Path) -> std::io::Result<Secret> {
    let v = std::fs::read_to_string(path)?;
    Ok(Secret::new(v.trim_end_matches(['\n', '\r'])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_quoted_without_their_credentials() {
        for (url, want) in [
            ("mqtt://bob:hunter2@broker:1883", "mqtt://***@broker:1883"),
            (
                "nats://t0ken@a:4222,nats://u:hunter2@b:4222",
                "nats://***@a:4222,nats://***@b:4222",
            ),
            ("bob:hunter2@broker:1883", "***@broker:1883"),
            ("amqp://u:p%40ss@h/vhost@x", "amqp://***@h/vhost@x"),
            ("broker:1883", "broker:1883"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn never_formats_the_value() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }
}
