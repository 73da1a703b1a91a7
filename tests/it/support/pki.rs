//! Certificates for interception tests, made once per test process: a
//! CA for sluice (handed to the proxy as a team CA with `--ca-cert` and
//! `--ca-key`, and trusted by the tests' clients) and a CA for origins
//! (handed to sluice with `--upstream-ca`), which signs the origins'
//! certificates: valid, expired, for another name, or self-signed.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sluice::Config;

/// How an origin's certificate is wrong, if it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginCert {
    /// Signed by the origin CA for `localhost` and 127.0.0.1.
    Valid,
    /// As valid, but its validity ended yesterday.
    Expired,
    /// Signed by the origin CA, for `elsewhere.test` only.
    WrongName,
    /// Self-signed for `localhost` (no CA sluice trusts).
    SelfSigned,
}

pub struct Pki {
    _dir: tempfile::TempDir,
    pub sluice_ca_cert: PathBuf,
    pub sluice_ca_key: PathBuf,
    pub sluice_ca_der: CertificateDer<'static>,
    pub origin_ca_cert: PathBuf,
    pub origin_ca_der: CertificateDer<'static>,
    origin_ca: Issuer<'static, KeyPair>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// The process's certificates.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let sluice_key = KeyPair::generate().expect("key");
        let sluice_ca = ca_params("sluice test team CA")
            .self_signed(&sluice_key)
            .expect("CA");
        let sluice_ca_cert = dir.path().join("team-ca.pem");
        let sluice_ca_key = dir.path().join("team-ca-key.pem");
        std::fs::write(&sluice_ca_cert, sluice_ca.pem()).expect("write");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&sluice_ca_key)
                .expect("key file");
            f.write_all(sluice_key.serialize_pem().as_bytes())
                .expect("write");
        }
        let origin_key = KeyPair::generate().expect("key");
        let params = ca_params("origin test CA");
        let origin_ca = params.self_signed(&origin_key).expect("CA");
        let origin_ca_cert = dir.path().join("origin-ca.pem");
        std::fs::write(&origin_ca_cert, origin_ca.pem()).expect("write");
        Pki {
            _dir: dir,
            sluice_ca_cert,
            sluice_ca_key,
            sluice_ca_der: sluice_ca.der().clone(),
            origin_ca_cert,
            origin_ca_der: origin_ca.der().clone(),
            origin_ca: Issuer::new(params, origin_key),
        }
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Pki {
    /// Sets `c` up to intercept every TLS tunnel with the team CA, trusting
    /// the origin CA upstream.
    pub fn intercept_all(&self, c: &mut Config) {
        c.tls.intercept = "all".into();
        c.tls.ca_cert = Some(self.sluice_ca_cert.clone());
        c.tls.ca_key = Some(self.sluice_ca_key.clone());
        c.tls.upstream_ca = vec![self.origin_ca_cert.clone()];
    }

    /// A server configuration for an origin with the certificate `kind`,
    /// offering `alpn`.
    pub fn origin_config(&self, kind: OriginCert, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().expect("key");
        let names: Vec<SanType> = match kind {
            OriginCert::WrongName => vec![SanType::DnsName("elsewhere.test".try_into().unwrap())],
            _ => vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ],
        };
        let mut p = CertificateParams::default();
        // A name no trust store holds: a self-signed certificate is then
        // an unknown issuer everywhere, whatever roots the machine has.
        let cn = if kind == OriginCert::SelfSigned {
            "sluice self-signed test origin"
        } else {
            "localhost"
        };
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = names;
        let now = SystemTime::now();
        let day = Duration::from_secs(24 * 3600);
        if kind == OriginCert::Expired {
            p.not_before = (now - 30 * day).into();
            p.not_after = (now - day).into();
        } else {
            p.not_before = (now - day).into();
            p.not_after = (now + 30 * day).into();
        }
        let cert = match kind {
            OriginCert::SelfSigned => p.self_signed(&key).expect("cert"),
            _ => p.signed_by(&key, &self.origin_ca).expect("cert"),
        };
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }

    /// A client that trusts sluice's team CA only, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        self.client_trusting(&self.sluice_ca_der, alpn)
    }

    /// A client that trusts only `root`, offering `alpn`.
    pub fn client_trusting(
        &self,
        root: &CertificateDer<'static>,
        alpn: &[&[u8]],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone()).expect("root");
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}
