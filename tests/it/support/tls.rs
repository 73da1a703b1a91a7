//! TLS material for tests: a self-signed certificate for `localhost`, the
//! server configuration that presents it (see [`super::origin::tls`]) and
//! a client configuration that trusts exactly that certificate (ring
//! provider only).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed certificate and its key.
pub struct TestCert {
    pub cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

/// Generates a fresh self-signed certificate for `localhost`.
pub fn self_signed_localhost() -> TestCert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("rcgen generates a certificate");
    TestCert {
        cert: ck.cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
    }
}

/// A self-signed certificate for `localhost` whose subject's common name
/// is `common_name` (a hostile peer's, e.g. one holding markup).
pub fn self_signed_localhost_named(common_name: &str) -> TestCert {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .expect("localhost is a valid name");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let key = rcgen::KeyPair::generate().expect("rcgen makes a key");
    let cert = params.self_signed(&key).expect("rcgen signs");
    TestCert {
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TestCert {
    /// The certificate as PEM (for `--upstream-ca`, curl's `--cacert`).
    pub fn pem(&self) -> String {
        pem_of(&self.cert)
    }

    /// A server configuration presenting this certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .expect("server accepts the test cert");
        Arc::new(cfg)
    }
}

/// A client configuration whose only trust anchor is `cert`.
pub fn client_config(cert: &TestCert) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert.cert.clone())
        .expect("test cert is a valid root");
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(cfg)
}

/// `der` as a PEM certificate.
pub fn pem_of(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
