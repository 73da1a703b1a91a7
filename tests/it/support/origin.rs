//! Origins: the servers sluice forwards to. An HTTP/1.1 origin with fixed
//! routes ([`http`]), one driven by a handler ([`serve`]), a TCP echo
//! server ([`echo`]), a raw TCP server driven by a closure ([`raw`]), a
//! TLS origin with one fixed answer ([`tls`]; [`tls_trusted`] also gives
//! the flags that make sluice decrypt and verify it), and an address
//! that refuses every connection ([`refusing`]). Each binds an ephemeral
//! loopback port and serves until the test's runtime ends.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::tls::TestCert;

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|n| match n {}).boxed()
}

/// Binds an ephemeral loopback port.
async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("an origin binds a loopback port");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    (listener, addr)
}

/// HTTP/1.1 origin. Routes:
/// - `/small`: 100 bytes;
/// - `/bytes/N`: N bytes of `pattern(N, ..)` in 64 KiB chunks (chunked);
/// - `/echo`: the request body streamed back (chunked);
/// - `/headers`: the request head as text, one `name: value` a line;
/// - `/hang`: never answers;
/// - `/status/N`: empty answer with status N.
pub async fn http() -> SocketAddr {
    serve(route).await
}

/// HTTP/1.1 origin answering every request with `handler`.
pub async fn serve<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(handler);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn route(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = if path == "/small" {
        Response::new(full(vec![b'x'; 100]))
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let total: u64 = n.parse().unwrap_or(0);
        let stream = pattern_stream(total);
        Response::new(BodyExt::boxed(StreamBody::new(stream)))
    } else if path == "/echo" {
        let body = req.into_body().map_err(std::io::Error::other).boxed();
        Response::new(body)
    } else if path == "/headers" {
        let mut text = format!("{} {} {:?}\n", req.method(), req.uri(), req.version());
        for (k, v) in req.headers() {
            text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        Response::new(full(text))
    } else if path == "/hang" {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Response::new(full(""))
    } else if let Some(code) = path.strip_prefix("/status/") {
        let mut r = Response::new(full(""));
        *r.status_mut() = hyper::StatusCode::from_u16(code.parse().unwrap_or(500))
            .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        r
    } else {
        let mut r = Response::new(full("not found"));
        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
        r
    };
    Ok(resp)
}

fn pattern_stream(
    total: u64,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
    tokio::spawn(async move {
        let mut off = 0u64;
        while off < total {
            let n = (total - off).min(64 * 1024) as usize;
            let mut buf = vec![0u8; n];
            super::pattern(total, off, &mut buf);
            off += n as u64;
            if tx.send(Ok(Frame::data(Bytes::from(buf)))).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// TCP echo server: echoes until EOF, then half-closes its side.
pub async fn echo() -> SocketAddr {
    raw(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// TCP server that runs `handler` on every accepted connection.
pub async fn raw<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(handler(stream));
        }
    });
    addr
}

/// Reads a request head from a raw origin connection (everything up to
/// the empty line, and whatever arrived with it).
pub async fn read_request_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&b[..n]),
        }
    }
    head
}

/// A TLS origin: for every connection it completes the handshake with
/// `cert`, reads one request head, writes `response`, sends close_notify
/// and closes.
pub async fn tls(cert: &TestCert, response: &'static [u8]) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls.write_all(response).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// An HTTPS origin: TLS with `config` in front of the routes of
/// [`http`], served as HTTP/2 when ALPN chose it, else HTTP/1.1.
pub async fn https(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    https_with(config, route).await
}

/// An HTTPS origin answering every request with `handler`.
pub async fn https_with<F, Fut, B>(config: Arc<rustls::ServerConfig>, handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (listener, addr) = listen().await;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let svc = hyper::service::service_fn(handler);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                }
            });
        }
    });
    addr
}

/// What a [`tls_trusted`] origin answers: `decrypted`.
pub const TLS_ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\ndecrypted";

/// A TLS origin for `localhost` answering [`TLS_ANSWER`], and the flags
/// that make sluice intercept `localhost` and verify this origin: its
/// certificate is written to `dir/origin.pem` for `--upstream-ca`.
pub async fn tls_trusted(dir: &std::path::Path) -> (SocketAddr, [String; 4]) {
    let cert = super::tls::self_signed_localhost();
    let file = dir.join("origin.pem");
    std::fs::write(&file, cert.pem()).expect("the origin's certificate is written");
    let addr = tls(&cert, TLS_ANSWER).await;
    let flags = [
        "--intercept".to_string(),
        "localhost".to_string(),
        "--upstream-ca".to_string(),
        file.display().to_string(),
    ];
    (addr, flags)
}

/// Ports [`refusing`] holds for the rest of the test process.
static REFUSING: Mutex<Vec<socket2::Socket>> = Mutex::new(Vec::new());

/// A loopback address where nothing listens: connecting to it is refused
/// (RST). The port stays bound, never listening, until the test process
/// ends, so no other test's server can be given it meanwhile: a port that
/// was merely bound and released could be handed to a listener of a test
/// running alongside, and a refusal test would then reach it.
pub fn refusing() -> SocketAddr {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind a loopback port");
    let addr = sock
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("a bound socket has an address");
    REFUSING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(sock);
    addr
}
