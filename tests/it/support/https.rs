//! An HTTPS client through sluice: `CONNECT localhost:PORT`, a TLS
//! handshake that trusts sluice's team CA ([`super::pki`]) with SNI
//! `localhost`, then HTTP/1.1 requests in origin form over the decrypted
//! tunnel, read with the one client's parser ([`super::client`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::client::{self, BodyReader, Head, Response};
use super::pki::pki;

type Tls = BufReader<Box<TlsStream<TcpStream>>>;

/// What opening a tunnel gave: the TLS stream, or the proxy's refusal.
pub enum Opened {
    Tls(Tls),
    Refused(Response),
}

/// Opens a decrypted tunnel to `origin` (as `localhost:PORT`) through
/// `proxy`, with a client that trusts sluice's CA and offers `alpn`.
pub async fn open(proxy: SocketAddr, origin: SocketAddr, alpn: &[&[u8]]) -> io::Result<Opened> {
    open_with(proxy, origin, pki().client_config(alpn)).await
}

/// [`open`] with the client configuration given.
pub async fn open_with(
    proxy: SocketAddr,
    origin: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> io::Result<Opened> {
    let target = format!("localhost:{}", origin.port());
    let (status, head, s) = client::connect(proxy, &target, "").await?;
    if status != 200 {
        let parsed = parse(&head)?;
        let mut r = BufReader::new(s);
        let body = BodyReader::for_head(&parsed).read_all(&mut r).await?;
        return Ok(Opened::Refused(Response {
            status,
            headers: parsed.headers,
            body,
        }));
    }
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a DNS name");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, s)
        .await?;
    Ok(Opened::Tls(BufReader::new(Box::new(tls))))
}

fn parse(head: &str) -> io::Result<Head> {
    let mut r = BufReader::new(head.as_bytes());
    futures_block(client::read_head(&mut r))
}

/// Runs a future that cannot wait (it reads from memory) to completion.
fn futures_block<T>(f: impl std::future::Future<Output = T>) -> T {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// A keep-alive HTTPS client: one decrypted tunnel, opened on the first
/// request.
pub struct HttpsClient {
    proxy: SocketAddr,
    tunnel: Option<(SocketAddr, Tls)>,
}

impl HttpsClient {
    pub fn new(proxy: SocketAddr) -> HttpsClient {
        HttpsClient {
            proxy,
            tunnel: None,
        }
    }

    /// `GET path` of `origin` over the tunnel (opened when there is none,
    /// or when it was for another origin). A refused CONNECT is the answer.
    pub async fn get(&mut self, origin: SocketAddr, path: &str) -> io::Result<Response> {
        self.request(origin, path, "").await
    }

    /// `GET path` with extra header lines (each ending in CRLF).
    pub async fn request(
        &mut self,
        origin: SocketAddr,
        path: &str,
        headers: &str,
    ) -> io::Result<Response> {
        if self.tunnel.as_ref().is_none_or(|(o, _)| *o != origin) {
            match open(self.proxy, origin, &[b"http/1.1"]).await? {
                Opened::Tls(t) => self.tunnel = Some((origin, t)),
                Opened::Refused(resp) => return Ok(resp),
            }
        }
        let Some((_, t)) = self.tunnel.as_mut() else {
            return Err(io::Error::other("no tunnel"));
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:{}\r\n{headers}\r\n",
            origin.port()
        );
        t.get_mut().write_all(req.as_bytes()).await?;
        client::read_response(t).await
    }
}

/// One `GET path` over a tunnel of its own that closes after it.
pub async fn get_once(proxy: SocketAddr, origin: SocketAddr, path: &str) -> io::Result<Response> {
    HttpsClient::new(proxy)
        .request(origin, path, "Connection: close\r\n")
        .await
}
