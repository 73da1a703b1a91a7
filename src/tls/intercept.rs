//! The interception of one TLS tunnel: read the client's ClientHello,
//! connect to the upstream with the same SNI and the ALPN protocols the
//! client offered, make (or reuse) a leaf for the host and the names the
//! upstream's certificate carries, then finish the client's handshake
//! offering only what the upstream agreed to.
//!
//! Invariants: every step has the handshake deadline; the upstream is
//! connected first, so the client is never offered a protocol the
//! upstream refused (an h2 client reaching an h1-only origin gets h1); an
//! upstream that fails its handshake (or its verification) still lets the
//! client's handshake finish, so that each request gets a 502 saying why
//! instead of an unexplained TLS error; nothing here reads application
//! data.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream as UpstreamTlsStream;
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};

use super::fallback::Fallback;
use super::leaf::Leaves;
use super::refusal::Refusal;
use super::upstream::{describe_failure, server_name, PeerCert, UpstreamTls};
use crate::transport::ClientStream;

const H2: &[u8] = b"h2";
const H1: &[u8] = b"http/1.1";

/// What interception needs, made once at start.
pub struct Interception {
    pub leaves: Leaves,
    pub upstream: UpstreamTls,
    pub fallback: Fallback,
    pub handshake_timeout: Duration,
    /// `--insecure-upstream`: no upstream is verified.
    pub insecure_upstream: bool,
    /// Where a person gets the CA (named in refusal records).
    pub ca_url: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    key_log: Arc<dyn rustls::KeyLog>,
}

/// The TLS facts of one intercepted tunnel, as records show them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TlsInfo {
    /// The name the client asked for (SNI), if it sent one.
    pub sni: Option<String>,
    /// The client leg: version, cipher suite, ALPN protocol.
    pub client_version: String,
    pub client_cipher: String,
    pub client_alpn: Option<String>,
    /// The upstream leg (absent when its handshake failed).
    pub upstream_version: Option<String>,
    pub upstream_cipher: Option<String>,
    pub upstream_alpn: Option<String>,
    pub upstream_cert: Option<PeerCert>,
    /// Whether the upstream's certificate was verified.
    pub verified: bool,
    /// Why the upstream handshake failed, when it did.
    pub upstream_error: Option<String>,
    /// Both handshakes, in microseconds (HAR `ssl`).
    #[serde(skip)]
    pub handshake: Duration,
}

/// An intercepted tunnel, ready to be served as HTTP.
pub struct Decrypted {
    pub client: ClientStream,
    /// The client agreed to HTTP/2.
    pub client_h2: bool,
    /// The upstream TLS stream and whether it speaks HTTP/2, or why there
    /// is none.
    pub upstream: Result<(UpstreamTlsStream<TcpStream>, bool), String>,
    pub info: Arc<TlsInfo>,
}

/// Why the client's side did not become a decrypted stream.
#[derive(Debug)]
pub struct ClientRefused {
    pub refusal: Refusal,
    /// The sentence for the record.
    pub message: String,
}

/// The leaf for every name a client asks for on one connection.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl Interception {
    pub fn new(
        leaves: Leaves,
        upstream: UpstreamTls,
        fallback: Fallback,
        handshake_timeout: Duration,
        insecure_upstream: bool,
        ca_url: String,
    ) -> Interception {
        Interception {
            leaves,
            upstream,
            fallback,
            handshake_timeout,
            insecure_upstream,
            ca_url,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            key_log: Arc::new(rustls::KeyLogFile::new()),
        }
    }

    /// Intercepts the TLS `client` (a ClientHello is waiting on it) whose
    /// tunnel goes to `upstream` (`connect_host` as the CONNECT named it).
    /// `verify`: check the upstream's certificate.
    pub async fn intercept(
        &self,
        client: ClientStream,
        upstream: TcpStream,
        connect_host: &str,
        peer: IpAddr,
        verify: bool,
    ) -> Result<Decrypted, ClientRefused> {
        let started = Instant::now();
        let deadline = self.handshake_timeout;
        let host = connect_host.trim_start_matches('[').trim_end_matches(']');
        let refused = |refusal: Refusal, detail: String| ClientRefused {
            message: refusal.explain(peer, host, &self.ca_url, &detail),
            refusal,
        };
        let acceptor = LazyConfigAcceptor::new(Acceptor::default(), client);
        let start = match tokio::time::timeout(deadline, acceptor).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(refused(Refusal::of(&e), e.to_string())),
            Err(_) => return Err(refused(Refusal::Timeout, String::new())),
        };
        let hello = start.client_hello();
        let sni = hello.server_name().map(str::to_string);
        let offered: Vec<Vec<u8>> = hello
            .alpn()
            .map(|it| {
                it.filter(|p| *p == H2 || *p == H1)
                    .map(<[u8]>::to_vec)
                    .collect()
            })
            .unwrap_or_default();
        let verify = verify && !self.insecure_upstream;

        let upstream = self
            .connect_upstream(
                upstream,
                sni.as_deref(),
                host,
                upstream_alpn_offer(&offered),
                verify,
            )
            .await;
        let upstream_alpn = upstream
            .as_ref()
            .ok()
            .and_then(|s| s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec));
        let peer_cert = upstream.as_ref().ok().and_then(|s| {
            s.get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| PeerCert::parse(c))
        });

        let mut names = vec![sni.clone().unwrap_or_else(|| host.to_string())];
        if let Some(c) = &peer_cert {
            names.extend(c.names.iter().cloned());
        }
        let leaf = self
            .leaves
            .get(&names)
            .map_err(|e| refused(Refusal::Other, e.to_string()))?;
        let client_offer = client_alpn(&offered, upstream.is_ok(), upstream_alpn.as_deref());
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| refused(Refusal::Other, e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(leaf)));
        config.alpn_protocols = client_offer;
        config.key_log = self.key_log.clone();
        let tls = match tokio::time::timeout(deadline, start.into_stream(Arc::new(config))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(refused(Refusal::of(&e), e.to_string())),
            Err(_) => return Err(refused(Refusal::Timeout, String::new())),
        };
        let conn = tls.get_ref().1;
        let client_h2 = conn.alpn_protocol() == Some(H2);
        let text = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
        let mut info = TlsInfo {
            sni,
            client_version: conn
                .protocol_version()
                .map(|v| format!("{v:?}"))
                .unwrap_or_default(),
            client_cipher: conn
                .negotiated_cipher_suite()
                .map(|c| format!("{:?}", c.suite()))
                .unwrap_or_default(),
            client_alpn: conn.alpn_protocol().map(text),
            verified: verify,
            upstream_cert: peer_cert,
            handshake: started.elapsed(),
            ..Default::default()
        };
        let upstream = match upstream {
            Ok(s) => {
                let c = s.get_ref().1;
                info.upstream_version = c.protocol_version().map(|v| format!("{v:?}"));
                info.upstream_cipher = c
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()));
                info.upstream_alpn = c.alpn_protocol().map(text);
                let h2 = c.alpn_protocol() == Some(H2);
                Ok((s, h2))
            }
            Err(why) => {
                info.upstream_error = Some(why.clone());
                Err(why)
            }
        };
        Ok(Decrypted {
            client: ClientStream::Tls(Box::new(tls)),
            client_h2,
            upstream,
            info: Arc::new(info),
        })
    }

    /// A second TLS connection to an intercepted tunnel's origin, offered
    /// HTTP/1.1 only, verified as the tunnel's was (`info`): the leg of a
    /// WebSocket an HTTP/2 client opened with extended CONNECT, which an
    /// origin takes as an HTTP/1.1 upgrade.
    pub async fn connect_http1(
        &self,
        upstream: TcpStream,
        host: &str,
        info: &TlsInfo,
    ) -> Result<UpstreamTlsStream<TcpStream>, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.connect_upstream(
            upstream,
            info.sni.as_deref(),
            host,
            vec![H1.to_vec()],
            info.verified,
        )
        .await
    }

    async fn connect_upstream(
        &self,
        upstream: TcpStream,
        sni: Option<&str>,
        host: &str,
        alpn: Vec<Vec<u8>>,
        verify: bool,
    ) -> Result<UpstreamTlsStream<TcpStream>, String> {
        let name = server_name(sni, host)
            .or_else(|| server_name(None, host))
            .ok_or_else(|| format!("`{host}` is not a name a TLS certificate can carry"))?;
        let config = self.upstream.config(verify, sni.is_some(), alpn);
        let connect = TlsConnector::from(config).connect(name, upstream);
        match tokio::time::timeout(self.handshake_timeout, connect).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(describe_failure(&e, host)),
            Err(_) => Err(format!(
                "{host} did not finish the TLS handshake within --tls-handshake-timeout"
            )),
        }
    }
}

/// What the upstream is offered: both protocols sluice speaks, in the
/// client's order of preference when it stated one. sluice bridges the
/// two, so an HTTP/1.1 client still reaches an h2-only origin.
fn upstream_alpn_offer(offered: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out = offered.to_vec();
    for p in [H2, H1] {
        if !out.iter().any(|o| o == p) {
            out.push(p.to_vec());
        }
    }
    out
}

/// What the client is offered: the upstream's choice when the client
/// offered it too (the same protocol end to end); else HTTP/1.1 if the
/// client offered it (an h2 client reaching an h1-only origin, or a
/// failed upstream whose 502s are plain), else h2; nothing when the
/// client offered no protocol sluice serves (it speaks HTTP/1.1).
fn client_alpn(offered: &[Vec<u8>], upstream_ok: bool, chosen: Option<&[u8]>) -> Vec<Vec<u8>> {
    let has = |p: &[u8]| offered.iter().any(|o| o == p);
    match chosen {
        Some(p) if upstream_ok && has(p) => vec![p.to_vec()],
        _ if has(H1) => vec![H1.to_vec()],
        _ if has(H2) => vec![H2.to_vec()],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_offered_what_the_upstream_chose() {
        let both = vec![H2.to_vec(), H1.to_vec()];
        assert_eq!(client_alpn(&both, true, Some(H2)), vec![H2.to_vec()]);
        assert_eq!(client_alpn(&both, true, Some(H1)), vec![H1.to_vec()]);
        // An h1-only origin (no ALPN): the h2 client gets HTTP/1.1.
        assert_eq!(client_alpn(&both, true, None), vec![H1.to_vec()]);
        assert_eq!(client_alpn(&[], true, None), Vec::<Vec<u8>>::new());
        // The upstream failed: its 502 goes over what the client speaks.
        assert_eq!(client_alpn(&[H2.to_vec()], false, None), vec![H2.to_vec()]);
        assert_eq!(client_alpn(&both, false, None), vec![H1.to_vec()]);
        // An h1-only client of an h2 origin: h1 to the client, h2 upstream.
        assert_eq!(
            client_alpn(&[H1.to_vec()], true, Some(H2)),
            vec![H1.to_vec()]
        );
        assert_eq!(
            upstream_alpn_offer(&[H1.to_vec()]),
            vec![H1.to_vec(), H2.to_vec()]
        );
        assert_eq!(upstream_alpn_offer(&[]), both);
    }
}
