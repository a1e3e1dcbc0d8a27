//! The control plane's certificates (what `hack/kube/smoke.sh` makes with openssl, made with rcgen):
//! a cluster CA (serving certificates, client certificates, the controller-manager's CSR signer), a
//! front-proxy CA (request-header authentication, which KCM and the scheduler read from the
//! `extension-apiserver-authentication` ConfigMap and complain about every second without it), the
//! kube-apiserver's serving certificate, one client certificate per user, and the ServiceAccount
//! token signing key. All ECDSA P-256; every file PEM in `dir`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// The kube-apiserver's serving names: loopback, the first ClusterIP of the service range, and the
/// in-cluster DNS names of the `kubernetes` Service.
const APISERVER_NAMES: &[&str] = &[
    "127.0.0.1",
    "10.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// A client identity: file stem, `O=` (its group) and `CN=` (user name) of its certificate.
pub struct User {
    pub file: &'static str,
    pub group: Option<&'static str>,
    pub name: &'static str,
}

/// Who talks to the kube-apiserver with a client certificate. The admin and kwok are in
/// `system:masters`; KCM and the scheduler have the bootstrap RBAC roles of their user names.
pub const USERS: &[User] = &[
    User {
        file: "admin",
        group: Some("system:masters"),
        name: "admin",
    },
    User {
        file: "kcm",
        group: None,
        name: "system:kube-controller-manager",
    },
    User {
        file: "scheduler",
        group: None,
        name: "system:kube-scheduler",
    },
    User {
        file: "kwok",
        group: Some("system:masters"),
        name: "kwok-controller",
    },
];

/// Paths of the files [`generate`] wrote.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// `<dir>/<name>.crt`.
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }

    /// `<dir>/<name>.key`.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// The cluster CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.cert("ca")
    }

    /// The ServiceAccount token signing key.
    pub fn service_account_key(&self) -> PathBuf {
        self.key("sa")
    }

    /// Its public half (what verifies the tokens).
    pub fn service_account_public_key(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }
}

fn name(cn: &str, group: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some(g) = group {
        dn.push(DnType::OrganizationName, g);
    }
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca(cn: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name(cn, None);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate()?)
        .with_context(|| format!("self-signing CA {cn}"))
}

/// Signs a leaf certificate and writes `<stem>.crt` and `<stem>.key`.
fn leaf(
    dir: &Path,
    stem: &str,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    mut params: CertificateParams,
    usage: ExtendedKeyUsagePurpose,
) -> anyhow::Result<()> {
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("signing {stem}"))?;
    write(dir, &format!("{stem}.crt"), &cert.pem())?;
    write(dir, &format!("{stem}.key"), &key.serialize_pem())
}

fn write(dir: &Path, file: &str, pem: &str) -> anyhow::Result<()> {
    let path = dir.join(file);
    std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))
}

/// Writes every certificate and key into `dir` (created if absent).
pub fn generate(dir: &Path) -> anyhow::Result<Pki> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cluster_ca = ca("edgewire-e2e-ca")?;
    write(dir, "ca.crt", &cluster_ca.pem())?;
    write(dir, "ca.key", &cluster_ca.key().serialize_pem())?;
    let front_proxy_ca = ca("edgewire-e2e-front-proxy-ca")?;
    write(dir, "front-proxy-ca.crt", &front_proxy_ca.pem())?;

    let names: Vec<String> = APISERVER_NAMES.iter().map(|s| s.to_string()).collect();
    let mut serving = CertificateParams::new(names)?;
    serving.distinguished_name = name("kube-apiserver", None);
    leaf(
        dir,
        "apiserver",
        &cluster_ca,
        serving,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    for user in USERS {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = name(user.name, user.group);
        leaf(
            dir,
            user.file,
            &cluster_ca,
            params,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
    }
    let mut proxy = CertificateParams::new(Vec::<String>::new())?;
    proxy.distinguished_name = name("front-proxy-client", None);
    leaf(
        dir,
        "front-proxy-client",
        &front_proxy_ca,
        proxy,
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    // ECDSA (ES256): the kube-apiserver signs tokens with sa.key and verifies them with sa.pub.
    let sa = KeyPair::generate()?;
    write(dir, "sa.key", &sa.serialize_pem())?;
    write(dir, "sa.pub", &sa.public_key_pem())?;
    Ok(Pki {
        dir: dir.to_path_buf(),
    })
}
