//! Origin servers for tests: an HTTP origin with fixed routes, an HTTP
//! origin driven by a handler, a TCP echo server, and a raw TCP server
//! driven by a closure.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|n| match n {}).boxed()
}

/// HTTP/1.1 origin. Routes:
/// - `/small`: 100 bytes;
/// - `/bytes/N`: N bytes of `pattern(N, ..)` in 64 KiB chunks (chunked);
/// - `/echo`: the request body streamed back (chunked);
/// - `/headers`: the request head as text, one `name: value` a line;
/// - `/hang`: never answers;
/// - `/status/N`: empty answer with status N.
pub async fn http_origin() -> SocketAddr {
    serve_http(route).await
}

/// HTTP/1.1 origin answering every request with `handler`.
pub async fn serve_http<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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
        let stream = futures_stream(total);
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
        *r.status_mut() = hyper::StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
        r
    } else {
        let mut r = Response::new(full("not found"));
        *r.status_mut() = hyper::StatusCode::NOT_FOUND;
        r
    };
    Ok(resp)
}

fn futures_stream(
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
pub async fn echo_origin() -> SocketAddr {
    raw_origin(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
    })
    .await
}

/// TCP server that runs `handler` on every accepted connection.
pub async fn raw_origin<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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
