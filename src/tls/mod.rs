//! HTTPS interception: sluice's CA ([`ca`]), leaf certificates made on
//! the fly ([`leaf`]), upstream TLS and its verification ([`upstream`]),
//! what a refused handshake means ([`refusal`]), the passthrough fallback
//! for clients that refuse sluice's certificate ([`fallback`]), and the
//! interception itself ([`intercept`]): the tunnel path hands it a TLS
//! ClientHello and gets back a decrypted client stream, an upstream TLS
//! stream and what each side agreed (ALPN), ready for the one HTTP
//! serving function. [`trust`] renders what a person fetches to trust the
//! CA (the trust page, the certificate as PEM and DER), for the admin
//! server and the proxy port alike.

pub mod ca;
pub mod fallback;
pub mod intercept;
pub mod leaf;
pub mod refusal;
pub mod trust;
pub mod upstream;

pub use ca::{Ca, CaError, CaSource, CaSummary};
pub use intercept::{Decrypted, Interception, TlsInfo};
pub use leaf::Leaves;

/// The name a client configured with the proxy fetches the trust page
/// and the CA from (`http://sluice.invalid/`, as mitmproxy's `mitm.it`):
/// `.invalid` never resolves (RFC 6761), so only sluice answers it.
pub const TRUST_HOST: &str = "sluice.invalid";

/// Where the CA comes from under `config`: a team CA, the data folder's,
/// or memory.
pub fn ca_source(config: &crate::config::Config) -> Result<CaSource, String> {
    ca_source_of(
        config.tls.ca_cert.as_deref(),
        config.tls.ca_key.as_deref(),
        &config.record.data_dir,
    )
}

/// Where the CA comes from: the team CA `cert` + `key`, else the data
/// folder's (`sluice ca` and the proxy decide alike).
pub fn ca_source_of(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
    data_dir: &crate::config::DataDir,
) -> Result<CaSource, String> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(CaSource::Files {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }),
        (Some(_), None) => Err("--ca-cert needs --ca-key (the CA's private key)".into()),
        (None, Some(_)) => Err("--ca-key needs --ca-cert (the CA's certificate)".into()),
        (None, None) => Ok(match data_dir {
            crate::config::DataDir::Path(dir) => CaSource::Dir(dir.clone()),
            crate::config::DataDir::Memory => CaSource::Memory,
        }),
    }
}

/// Whether `host` (of a request URL) is [`TRUST_HOST`], which sluice
/// answers itself.
pub fn is_trust_host(host: &str) -> bool {
    host.trim_end_matches('.').eq_ignore_ascii_case(TRUST_HOST)
}
