//! sluice's certificate authority: the certificate clients are asked to
//! trust and the key that signs every leaf.
//!
//! Where it comes from ([`CaSource`]): a pair made on first start in the
//! data folder (`ca.pem`, world-readable; `ca-key.pem`, mode 0600) and
//! reused after; a team CA the user names (`--ca-cert`, `--ca-key`); or,
//! with `--data-dir :memory:`, a pair that lives for one run.
//!
//! Invariants: the key is never written anywhere but `ca-key.pem` (0600,
//! atomically), never logged, never served; a key file that group or
//! others may read is refused, not used; a certificate and key that do
//! not belong together are refused; one file of a pair without the other
//! is an error, never silently replaced (a replaced CA would break every
//! client that trusts the old one).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::secret_file::{read_private, write_private};

/// The certificate's file name in the data folder.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The key's file name in the data folder (mode 0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// How long a generated CA is valid: long, because every client that
/// trusts it would have to install a new one.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Backdating, for clients whose clock is behind.
const BACKDATE: Duration = Duration::from_secs(2 * 24 * 3600);

/// Where the CA comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// `ca.pem` and `ca-key.pem` in this folder, made when both are absent.
    Dir(PathBuf),
    /// Files the user named (a team CA); never created or changed.
    Files { cert: PathBuf, key: PathBuf },
    /// Made at start, kept in memory for this run.
    Memory,
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("CA key: {0}")]
    Key(#[from] crate::secret_file::NotPrivate),
    #[error("cannot read the CA certificate {path}: {source}")]
    ReadCert {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the data folder has {present} but not {missing}: restore it, or remove {present} \
         to make a new CA (clients that trust the old one must then trust the new)"
    )]
    HalfPair { present: String, missing: String },
}

/// The loaded CA.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// Where the certificate is, when on disk.
    cert_path: Option<PathBuf>,
    summary: CaSummary,
}

/// What `sluice ca` and the trust page say about the CA.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaSummary {
    pub subject: String,
    /// SHA-256 of the DER certificate, colon-separated upper-case hex.
    pub sha256: String,
    pub not_before: String,
    pub not_after: String,
    /// Whether this run made it (first start, or memory mode).
    pub created: bool,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Ca")
            .field("summary", &self.summary)
            .finish()
    }
}

impl Ca {
    /// Loads the CA from `source`, making it when the data folder has none.
    pub fn load(source: &CaSource) -> Result<Ca, CaError> {
        match source {
            CaSource::Memory => {
                let (cert_pem, key) = generate()?;
                Ca::from_parts(cert_pem, key, None, true)
            }
            CaSource::Files { cert, key } => {
                let key_pem = read_private(key, true)?;
                let cert_pem = read_cert(cert)?;
                Ca::from_parts(
                    cert_pem,
                    parse_key(&key_pem, key)?,
                    Some(cert.clone()),
                    false,
                )
            }
            CaSource::Dir(dir) => load_dir(dir),
        }
    }

    fn from_parts(
        cert_pem: String,
        key: KeyPair,
        cert_path: Option<PathBuf>,
        created: bool,
    ) -> Result<Ca, CaError> {
        let shown = cert_path.as_ref().map_or_else(
            || "the CA certificate".to_string(),
            |p| p.display().to_string(),
        );
        let der = pem_der(&cert_pem)
            .ok_or_else(|| CaError::Invalid(format!("{shown} holds no PEM certificate")))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| CaError::Invalid(format!("{shown} is not a valid certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(CaError::Invalid(format!(
                "{shown} is not a CA certificate (no basicConstraints CA:TRUE)"
            )));
        }
        if x509.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
            return Err(CaError::Invalid(format!(
                "{shown} and its key do not belong together (different public keys)"
            )));
        }
        let summary = CaSummary {
            subject: x509.subject().to_string(),
            sha256: fingerprint(&der),
            not_before: x509.validity().not_before.to_string(),
            not_after: x509.validity().not_after.to_string(),
            created,
        };
        let cert_der = CertificateDer::from(der);
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| CaError::Invalid(format!("{shown}: {e}")))?;
        Ok(Ca {
            cert_pem,
            cert_der,
            issuer,
            cert_path,
            summary,
        })
    }

    /// The certificate, PEM (what clients install).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate, DER (Android, Windows and Java prefer it).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Where the certificate is on disk, if it is.
    pub fn cert_path(&self) -> Option<&Path> {
        self.cert_path.as_deref()
    }

    pub fn summary(&self) -> &CaSummary {
        &self.summary
    }

    /// Signs leaf certificates.
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

/// `ca.pem` + `ca-key.pem` in `dir`: both are loaded, neither is made;
/// none: both are made.
fn load_dir(dir: &Path) -> Result<Ca, CaError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let shown = |p: &Path| p.display().to_string();
    match (cert_path.exists(), key_path.symlink_metadata().is_ok()) {
        (true, true) => {
            let key_pem = read_private(&key_path, false)?;
            let key = parse_key(&key_pem, &key_path)?;
            Ca::from_parts(read_cert(&cert_path)?, key, Some(cert_path), false)
        }
        (false, false) => {
            let (cert_pem, key) = generate()?;
            std::fs::create_dir_all(dir).map_err(|source| CaError::Write {
                path: shown(dir),
                source,
            })?;
            // The key first: a crash between the two leaves a key without
            // a certificate, reported as such, never a certificate whose
            // key is lost.
            write_private(&key_path, key.serialize_pem().as_bytes()).map_err(|source| {
                CaError::Write {
                    path: shown(&key_path),
                    source,
                }
            })?;
            write_public(&cert_path, cert_pem.as_bytes()).map_err(|source| CaError::Write {
                path: shown(&cert_path),
                source,
            })?;
            Ca::from_parts(cert_pem, key, Some(cert_path), true)
        }
        (true, false) => Err(CaError::HalfPair {
            present: shown(&cert_path),
            missing: shown(&key_path),
        }),
        (false, true) => Err(CaError::HalfPair {
            present: shown(&key_path),
            missing: shown(&cert_path),
        }),
    }
}

/// A fresh CA: ECDSA P-256 (fast to sign with, accepted everywhere).
fn generate() -> Result<(String, KeyPair), CaError> {
    let bad = |e: rcgen::Error| CaError::Invalid(format!("cannot make a CA: {e}"));
    let key = KeyPair::generate().map_err(bad)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    let host = hostname();
    dn.push(DnType::CommonName, format!("sluice CA ({host})"));
    dn.push(DnType::OrganizationName, "sluice debugging proxy");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_VALIDITY).into();
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key).map_err(bad)?;
    Ok((cert.pem(), key))
}

/// A positive 16-byte serial (RFC 5280 4.1.2.2: unique per issuer).
pub(crate) fn random_serial() -> Result<SerialNumber, CaError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| CaError::Invalid(format!("no randomness: {e}")))?;
    b[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&b))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn read_cert(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::ReadCert {
        path: path.display().to_string(),
        source,
    })
}

fn parse_key(pem: &[u8], path: &Path) -> Result<KeyPair, CaError> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| CaError::Invalid(format!("{} is not a PEM key", path.display())))?;
    KeyPair::from_pem(text).map_err(|e| {
        CaError::Invalid(format!(
            "{} is not a usable private key (PKCS#8 PEM, ECDSA, Ed25519 or RSA): {e}",
            path.display()
        ))
    })
}

/// The certificate, mode 0644: clients and other users need it.
fn write_public(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("pem.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    f.write_all(contents).and_then(|_| f.sync_all())?;
    std::fs::rename(&tmp, path)
}

/// The DER bytes of the first certificate in a PEM text.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    (p.label == "CERTIFICATE").then_some(p.contents)
}

/// SHA-256 fingerprint as browsers and `openssl x509 -fingerprint` show it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
#[path = "ca_tests.rs"]
mod tests;
