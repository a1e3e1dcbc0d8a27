//! A throw-away PKI for TLS and mTLS tests: a CA, a server certificate for `localhost`/`127.0.0.1` and a
//! client certificate, all written as PEM files into a temp dir.
//!
//! Every [`TestPki`] has its own CA, so a second `TestPki` (or [`TestPki::other_ca`]) provides
//! certificates a broker trusting the first CA must refuse.

use std::path::PathBuf;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

pub const CA_FILE: &str = "ca.pem";
pub const SERVER_CERT_FILE: &str = "server.pem";
pub const SERVER_KEY_FILE: &str = "server-key.pem";
pub const CLIENT_CERT_FILE: &str = "client.pem";
pub const CLIENT_KEY_FILE: &str = "client-key.pem";

/// A CA with one server and one client certificate (ECDSA P-256), PEM in memory and in `dir`.
pub struct TestPki {
    pub dir: TempDir,
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_pem: String,
    pub client_key_pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TestPki {
    /// A new CA ("Edgewire Test CA"); a server certificate with SANs `localhost` and `127.0.0.1`; a client
    /// certificate with `CN=client_cn`; both signed by the CA.
    pub fn new(client_cn: &str) -> anyhow::Result<Self> {
        Self::with_ca_name("Edgewire Test CA", client_cn)
    }

    /// An independent PKI (its own CA, "Edgewire Other CA"; client `CN=intruder`): its client certificate must
    /// be refused by a server trusting another `TestPki`'s CA.
    pub fn other_ca() -> anyhow::Result<Self> {
        Self::with_ca_name("Edgewire Other CA", "intruder")
    }

    fn with_ca_name(ca_cn: &str, client_cn: &str) -> anyhow::Result<Self> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name = name(ca_cn);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)
            .context("self-signing the test CA")?;

        let mut server =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        server.distinguished_name = name("localhost");
        server.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = server
            .signed_by(&server_key, &issuer)
            .context("signing the server certificate")?;

        let (client_cert_pem, client_key_pem) = issue_client(&issuer, client_cn)?;

        let dir = tempfile::Builder::new().prefix("edgewire-pki-").tempdir()?;
        let pki = TestPki {
            dir,
            ca_pem: issuer.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem,
            client_key_pem,
            issuer,
        };
        for (file, pem) in [
            (CA_FILE, &pki.ca_pem),
            (SERVER_CERT_FILE, &pki.server_cert_pem),
            (SERVER_KEY_FILE, &pki.server_key_pem),
            (CLIENT_CERT_FILE, &pki.client_cert_pem),
            (CLIENT_KEY_FILE, &pki.client_key_pem),
        ] {
            std::fs::write(pki.dir.path().join(file), pem)
                .with_context(|| format!("writing {file}"))?;
        }
        Ok(pki)
    }

    /// Another client certificate and key (PEM) with `CN=cn`, signed by this CA (not written to `dir`).
    pub fn issue_client(&self, cn: &str) -> anyhow::Result<(String, String)> {
        issue_client(&self.issuer, cn)
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join(CA_FILE)
    }

    pub fn server_cert_path(&self) -> PathBuf {
        self.dir.path().join(SERVER_CERT_FILE)
    }

    pub fn server_key_path(&self) -> PathBuf {
        self.dir.path().join(SERVER_KEY_FILE)
    }

    pub fn client_cert_path(&self) -> PathBuf {
        self.dir.path().join(CLIENT_CERT_FILE)
    }

    pub fn client_key_path(&self) -> PathBuf {
        self.dir.path().join(CLIENT_KEY_FILE)
    }

    /// The server files as `(name, bytes)` for [`crate::brokers::BrokerProcess::start`]:
    /// `ca.pem`, `server.pem`, `server-key.pem` (reference them as `{dir}/ca.pem` etc. in the config).
    pub fn server_files(&self) -> [(&'static str, &[u8]); 3] {
        [
            (CA_FILE, self.ca_pem.as_bytes()),
            (SERVER_CERT_FILE, self.server_cert_pem.as_bytes()),
            (SERVER_KEY_FILE, self.server_key_pem.as_bytes()),
        ]
    }
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Edgewire tests");
    dn.push(DnType::CommonName, cn);
    dn
}

fn issue_client(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
) -> anyhow::Result<(String, String)> {
    let mut client = CertificateParams::new(Vec::<String>::new())?;
    client.distinguished_name = name(cn);
    client.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = client
        .signed_by(&key, issuer)
        .with_context(|| format!("signing the client certificate {cn}"))?;
    Ok((cert.pem(), key.serialize_pem()))
}
