//! HTTPS interception: sluice's CA ([`ca`]), leaf certificates made on
//! the fly ([`leaf`]), upstream TLS and its verification ([`upstream`]),
//! what a refused handshake means ([`refusal`]), the passthrough fallback
//! for clients that refuse sluice's certificate ([`fallback`]), and the
//! interception itself ([`intercept`]): the tunnel path hands it a TLS
//! ClientHello and gets back a decrypted client stream, an upstream TLS
//! stream and what each side agreed (ALPN), ready for the one HTTP
//! serving function.

pub mod ca;
pub mod fallback;
pub mod intercept;
pub mod leaf;
pub mod refusal;
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
    match (&config.tls.ca_cert, &config.tls.ca_key) {
        (Some(cert), Some(key)) => Ok(CaSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (Some(_), None) => Err("--ca-cert needs --ca-key (the CA's private key)".into()),
        (None, Some(_)) => Err("--ca-key needs --ca-cert (the CA's certificate)".into()),
        (None, None) => Ok(match &config.record.data_dir {
            crate::config::DataDir::Path(dir) => CaSource::Dir(dir.clone()),
            crate::config::DataDir::Memory => CaSource::Memory,
        }),
    }
}
