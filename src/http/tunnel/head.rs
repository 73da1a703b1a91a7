//! CONNECT as a connection's first request, its head read without hyper.
//!
//! Most tunnels are a connection whose only request is CONNECT. Reading
//! that one head directly (httparse over a small bounded buffer) and then
//! relaying in the same task saves hyper's connection state, the upgrade
//! hand-off and a task per tunnel: less CPU per tunnel set-up and less
//! memory per idle tunnel. Answers and limits are the same as the hyper
//! path's (400, 407, 431, 502, 504, 508), the head must arrive within the
//! header timeout, and the tunnel is owned by its own guard.

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::super::answer::Failure;
use super::super::context::HttpContext;
use super::{refusal_bytes, ConnectRequest, Refused};
use crate::registry::{CloseReason, ConnGuard, Side};
use crate::relay::write_all;
use crate::transport::ClientStream;
use crate::Shutdown;

/// Outcome of reading the head.
enum Head {
    /// Parsed: target, Proxy-Authorization value, bytes after the head.
    Connect {
        target: String,
        auth: Option<http::HeaderValue>,
        rest: Vec<u8>,
    },
    Fail(Failure),
    /// The client went away or the deadline passed; nothing to answer.
    Gone(CloseReason),
}

async fn read_head(stream: &TcpStream, ctx: &HttpContext, deadline: Instant) -> Head {
    let cfg = &ctx.config;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let ready = tokio::time::timeout_at(deadline, stream.readable()).await;
        match ready {
            Err(_) => return Head::Gone(CloseReason::HeaderTimeout),
            Ok(Err(e)) => return Head::Gone(CloseReason::from_io(Side::Client, &e)),
            Ok(Ok(())) => {}
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(buf.capacity());
        }
        match stream.try_read_buf(&mut buf) {
            Ok(0) => return Head::Gone(CloseReason::Eof),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Head::Gone(CloseReason::from_io(Side::Client, &e)),
        }
        let mut headers = vec![httparse::EMPTY_HEADER; cfg.client.max_headers];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                if len > cfg.client.max_header_size {
                    return Head::Fail(too_large());
                }
                let target = req.path.unwrap_or("").to_string();
                let auth = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
                    .and_then(|h| http::HeaderValue::from_bytes(h.value).ok());
                return Head::Connect {
                    target,
                    auth,
                    rest: buf[len..].to_vec(),
                };
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > cfg.client.max_header_size {
                    return Head::Fail(too_large());
                }
            }
            Err(httparse::Error::TooManyHeaders) => return Head::Fail(too_large()),
            Err(e) => {
                return Head::Fail(Failure::bad_request(format!(
                    "malformed CONNECT request: {e}"
                )))
            }
        }
    }
}

fn too_large() -> Failure {
    Failure::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        Side::Client,
        "head-too-large",
        "request head is larger than the limit (size or header count)",
    )
}

/// Writes a whole answer (status line, headers, body) and gives up after the
/// header timeout: a client that does not read is not waited for.
async fn answer(stream: &TcpStream, ctx: &HttpContext, bytes: &[u8]) {
    let _ = tokio::time::timeout(ctx.config.client.header_timeout, write_all(stream, bytes)).await;
}

/// Serves a connection whose first request is CONNECT. `http_guard` owns
/// the client connection until the tunnel's guard takes over.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    http_guard: ConnGuard,
    ctx: Arc<HttpContext>,
    shutdown: Shutdown,
) {
    let entry = http_guard.entry().clone();
    let started = std::time::Instant::now();
    let deadline = Instant::now() + ctx.config.client.header_timeout;
    let head = tokio::select! {
        h = read_head(&stream, &ctx, deadline) => h,
        _ = entry.kill.cancelled() => return,
    };
    let (target, proxy_authorization, rest) = match head {
        Head::Connect { target, auth, rest } => (target, auth, rest),
        Head::Fail(f) => {
            ctx.metrics
                .count_request(&http::Method::CONNECT, f.status.as_u16());
            http_guard.set_reason(CloseReason::Error(Side::Client, f.message.clone()));
            answer(&stream, &ctx, &f.to_bytes(&[])).await;
            return;
        }
        Head::Gone(reason) => {
            http_guard.set_reason(reason);
            return;
        }
    };
    let req = ConnectRequest {
        target,
        proxy_authorization,
        started,
    };
    let opened = match super::open(&ctx, &entry, peer, req).await {
        Ok(opened) => opened,
        Err(Refused::Answer { failure, challenge }) => {
            answer(&stream, &ctx, &refusal_bytes(&failure, challenge)).await;
            return;
        }
        Err(Refused::Close(reason)) => {
            http_guard.set_reason(reason);
            return;
        }
        Err(Refused::Killed) => return,
    };
    // The tunnel's guard takes over both sockets; the HTTP entry ends here.
    drop(http_guard);
    if let Err(e) = write_all(&stream, b"HTTP/1.1 200 Connection Established\r\n\r\n").await {
        opened
            .guard
            .set_reason(CloseReason::from_io(Side::Client, &e));
        return;
    }
    let client = ClientStream::with_read(stream, rest.into());
    super::carry(client, opened, peer, ctx, shutdown).await;
}

/// An HTTP/2 client with prior knowledge on this HTTP/1.1 port: it would
/// not understand an HTTP/1.1 answer, so it gets HTTP/2's own: the server
/// preface (an empty SETTINGS frame) and a GOAWAY with
/// `HTTP_1_1_REQUIRED` (RFC 9113 7) whose debug text says why. What the
/// client sent is then drained briefly, so the close is a FIN after the
/// GOAWAY rather than a reset that could destroy it in flight.
pub async fn refuse_h2_preface(stream: &TcpStream) -> CloseReason {
    const WHY: &[u8] = b"sluice serves HTTP/1.1 on this port; send requests as HTTP/1.1";
    let mut frames = Vec::with_capacity(9 + 9 + 8 + WHY.len());
    // SETTINGS, no parameters: length 0, type 0x4, flags 0, stream 0.
    frames.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    // GOAWAY: last stream 0, error HTTP_1_1_REQUIRED (0xd), debug data.
    let len = (8 + WHY.len()) as u32;
    frames.extend_from_slice(&len.to_be_bytes()[1..]);
    frames.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
    frames.extend_from_slice(&0u32.to_be_bytes());
    frames.extend_from_slice(&0xdu32.to_be_bytes());
    frames.extend_from_slice(WHY);
    let reason = CloseReason::Error(
        Side::Client,
        "HTTP/2 with prior knowledge on the HTTP/1.1 port (answered GOAWAY HTTP_1_1_REQUIRED)"
            .into(),
    );
    let send = async {
        write_all(stream, &frames).await?;
        socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write)?;
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            stream.readable().await?;
            match stream.try_read(&mut sink) {
                Ok(0) => break,
                Ok(n) => drained += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), send).await;
    reason
}
