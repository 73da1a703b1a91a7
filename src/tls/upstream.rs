//! The upstream leg of an intercepted tunnel: a TLS client verified
//! against the operating system's trust store (plus `--upstream-ca`
//! roots), or, with `--insecure-upstream` or `intercept://insecure`, not
//! verified; and what a failed handshake means, in words a person can act
//! on ("expired on ...", "not valid for name ...", "unknown issuer").
//!
//! Invariants: SNI is sent as the client sent it (none when it sent
//! none); ALPN offers only what the client offered and sluice can serve
//! (h2, http/1.1); key logs go to `SSLKEYLOGFILE` when it is set.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The two client configurations (verified, not), made once at start.
pub struct UpstreamTls {
    verified: Arc<ClientConfig>,
    insecure: Arc<ClientConfig>,
    /// How many roots the verified configuration trusts (logged at start).
    pub roots: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error("--upstream-ca {path}: {why}")]
    File { path: String, why: String },
}

impl UpstreamTls {
    /// Loads the system's roots and `extra` (PEM files).
    pub fn new(extra: &[PathBuf]) -> Result<UpstreamTls, RootsError> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            tracing::warn!(error = %e, "could not read part of the system's trust store");
        }
        let (_, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            tracing::debug!(ignored, "system roots that rustls cannot use");
        }
        for path in extra {
            let file = |why: String| RootsError::File {
                path: path.display().to_string(),
                why,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| file(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| file(e.to_string()))?;
            if certs.is_empty() {
                return Err(file("no PEM certificate in the file".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| file(e.to_string()))?;
            }
        }
        let count = roots.len();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = || {
            ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
        };
        let mut verified = builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut insecure = builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerifier(provider.clone())))
            .with_no_client_auth();
        for c in [&mut verified, &mut insecure] {
            c.key_log = Arc::new(rustls::KeyLogFile::new());
        }
        Ok(UpstreamTls {
            verified: Arc::new(verified),
            insecure: Arc::new(insecure),
            roots: count,
        })
    }

    /// The configuration for one upstream handshake: verified or not,
    /// SNI on when the client sent one, ALPN as given.
    pub fn config(&self, verify: bool, sni: bool, alpn: Vec<Vec<u8>>) -> Arc<ClientConfig> {
        let base = if verify {
            &self.verified
        } else {
            &self.insecure
        };
        if sni && alpn.is_empty() {
            return base.clone();
        }
        let mut c = ClientConfig::clone(base);
        c.enable_sni = sni;
        c.alpn_protocols = alpn;
        Arc::new(c)
    }
}

/// The name to verify the upstream's certificate against: the client's
/// SNI, else the CONNECT host (an IP literal is an IP name).
pub fn server_name(sni: Option<&str>, connect_host: &str) -> Option<ServerName<'static>> {
    let host = sni.unwrap_or(connect_host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).ok()
}

/// Why the upstream handshake failed, for the 502 and the record.
pub fn describe_failure(e: &std::io::Error, host: &str) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => format!(
                "{host} closed the connection during the TLS handshake (is it a TLS server?)"
            ),
            _ => format!("TLS handshake with {host} failed: {e}"),
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => certificate_problem(c, host),
        rustls::Error::AlertReceived(a) => {
            format!("{host} refused the TLS handshake (alert {a:?})")
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("{host} did not answer with TLS ({tls}): is it a TLS server?")
        }
        other => format!("TLS handshake with {host} failed: {other}"),
    }
}

fn certificate_problem(c: &CertificateError, host: &str) -> String {
    let date = |t: &UnixTime| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.as_secs()),
        )
        .to_string()
    };
    let hint = "add its issuer with --upstream-ca, or skip verification for this host with \
                the rule action intercept://insecure";
    match c {
        CertificateError::Expired => format!("the certificate of {host} has expired"),
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("the certificate of {host} expired on {}", date(not_after))
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("the certificate of {host} is not valid yet")
        }
        CertificateError::NotValidForName => {
            format!("the certificate of {host} is not valid for the name {host}")
        }
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "the certificate of {host} is not valid for the name {host} (it names {})",
            presented.join(", ")
        ),
        CertificateError::UnknownIssuer => format!(
            "the certificate of {host} is signed by an unknown issuer (self-signed, or a CA \
             not in the system's trust store): {hint}"
        ),
        CertificateError::BadSignature => {
            format!("the certificate of {host} has a bad signature")
        }
        CertificateError::Revoked => format!("the certificate of {host} is revoked"),
        CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmContext { .. } => format!(
            "the certificate of {host} does not verify against any trusted issuer (its \
             signature does not match the key of the trusted CA with its issuer's name; a \
             self-signed certificate?): {hint}"
        ),
        other => format!("the certificate of {host} was refused: {other:?}: {hint}"),
    }
}

/// `--insecure-upstream`: any certificate is accepted, but the handshake
/// signatures are still checked (the connection is still TLS, only not
/// authenticated).
#[derive(Debug)]
struct NoVerifier(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What the upstream's certificate says, for records and the mirrored
/// names of the leaf.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PeerCert {
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
    /// DNS names and IP addresses it is valid for.
    #[serde(skip)]
    pub names: Vec<String>,
}

impl PeerCert {
    pub fn parse(der: &[u8]) -> Option<PeerCert> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(b) => {
                        if let Some(ip) = ip_from(b) {
                            names.push(ip.to_string())
                        }
                    }
                    _ => {}
                }
                if names.len() >= super::leaf::MAX_NAMES {
                    break;
                }
            }
        }
        Some(PeerCert {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_after: cert.validity().not_after.to_string(),
            names,
        })
    }
}

fn ip_from(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => Some(<[u8; 4]>::try_from(b).ok()?.into()),
        16 => Some(<[u8; 16]>::try_from(b).ok()?.into()),
        _ => None,
    }
}
