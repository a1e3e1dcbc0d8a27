//! TLS of a broker connection, as the publisher and the bridge configure it ([`TlsSettings`]), and one
//! rustls client configuration from it for every connection that speaks rustls (NATS, MQTT, AMQP through
//! lapin's connector; Redis takes the same files; Kafka goes through librdkafka's OpenSSL).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

pub use edgewire_api::TlsVersion;

/// TLS of one connection. Paths point at PEM files (mounted Secrets).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsSettings {
    pub enabled: bool,
    /// CA bundle verifying the server; the system roots when absent.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (mTLS).
    pub client_cert: Option<ClientCert>,
    pub min_version: TlsVersion,
    /// Name to verify in the server certificate when it differs from the host connected to.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Why a TLS configuration cannot be built. Names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read PEM file {path}: {message}")]
    Pem { path: String, message: String },
    #[error("{0}")]
    Rustls(String),
}

/// Makes `ring` the process-wide rustls provider (several crates in the graph bring their own; the
/// explicit choice keeps every client on the same one). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn pem_err(path: &std::path::Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Reads every certificate of a PEM file.
pub fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, e))?;
    if certs.is_empty() {
        return Err(pem_err(path, "no certificate found"));
    }
    Ok(certs)
}

/// Reads a private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
pub fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_err(path, e))
}

/// The rustls client configuration for `tls`: the CA file or the system roots, the client certificate
/// for mTLS, the minimum version, and the server-name override.
pub fn client_config(tls: &TlsSettings) -> Result<ClientConfig, TlsError> {
    install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| pem_err(path, e))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let roots = Arc::new(roots);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match &tls.server_name {
        Some(name) => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            let name = ServerName::try_from(name.clone())
                .map_err(|_| TlsError::Rustls(format!("invalid TLS server name {name:?}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FixedServerName { inner, name }))
        }
        None => builder.with_root_certificates(roots),
    };
    let config = match &tls.client_cert {
        Some(cc) => builder
            .with_client_auth_cert(read_certs(&cc.cert_file)?, read_key(&cc.key_file)?)
            .map_err(|e| TlsError::Rustls(format!("client certificate: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// Verifies the server certificate against a configured name instead of the host connected to
/// (`TLS_SERVER_NAME`), with full chain validation otherwise.
#[derive(Debug)]
struct FixedServerName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedServerName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A TLS server for tests of what a client negotiates.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;
    use std::time::Duration;

    /// Accepts one TLS connection speaking only `versions` with the test PKI's server certificate
    /// (`localhost`) and returns the negotiated version, or the handshake error.
    pub(crate) fn tls_server(
        pki: &edgewire_e2e::pki::TestPki,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (
        u16,
        std::sync::mpsc::Receiver<Result<rustls::ProtocolVersion, String>>,
    ) {
        super::install_crypto_provider();
        let cfg = rustls::ServerConfig::builder_with_protocol_versions(versions)
            .with_no_client_auth()
            .with_single_cert(
                super::read_certs(&pki.server_cert_path()).unwrap(),
                super::read_key(&pki.server_key_path()).unwrap(),
            )
            .unwrap();
        let cfg = Arc::new(cfg);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut conn = rustls::ServerConnection::new(cfg).unwrap();
            let mut result = Ok(());
            while conn.is_handshaking() {
                if let Err(e) = conn.complete_io(&mut sock) {
                    result = Err(e.to_string());
                    break;
                }
            }
            let _ = tx.send(result.map(|()| conn.protocol_version().expect("negotiated")));
        });
        (port, rx)
    }
}
