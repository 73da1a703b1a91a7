//! WebSocket over HTTP/2 (RFC 8441): an HTTP/2 client opens a WebSocket
//! as an extended CONNECT stream (`:protocol = websocket`); sluice asks the
//! origin with an RFC 6455 upgrade over an HTTP/1.1 connection of the
//! exchange's own. Every WebSocket origin speaks that, few take extended
//! CONNECT, and a tunnel's pinned connection carries the client's other
//! streams, which a takeover would end. The frames are the same bytes on
//! both (RFC 8441 5: framing and masking unchanged), so after the switch
//! the relay is the HTTP/1.1 one with the h2 stream as the client leg.
//!
//! Invariants: any `:protocol` but `websocket` is refused 501; the
//! origin's 101 must carry the `Sec-WebSocket-Accept` of the key sluice
//! sent (the client has no key to check it against), else 502; the
//! client gets 200 with the agreed subprotocol and extensions and no
//! hop-by-hop header, and a 2xx that did not switch is a 502 (a CONNECT
//! stream cannot carry it); the bridge's upstream socket is attached to
//! the client connection's entry (the kernel cross-check accounts for it)
//! and is driven by a task that ends with the connection's upgrade or its
//! answer.

use std::sync::Arc;
use tokio::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::ext::Protocol;
use hyper_util::rt::TokioIo;

use super::Switch;
use crate::http::answer::Failure;
use crate::http::context::HttpContext;
use crate::http::origin::{Inside, UpstreamTlsFailed};
use crate::http::upstream::UpstreamBody;
use crate::record::capture::UpstreamInfo;
use crate::registry::{ConnEntry, Side};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a record of a bridged WebSocket notes.
pub const NOTE: &str = "HTTP/2 extended CONNECT (RFC 8441): sluice asked the origin with an \
     HTTP/1.1 upgrade; the 101 recorded here reached the client as 200";

/// An extended CONNECT taken for WebSocket: the key sluice sends the
/// origin in the client's stead.
#[derive(Debug, Clone)]
pub struct Bridge {
    key: String,
}

/// Marks a request the bridge sends, so it goes over a connection of its
/// own rather than the tunnel's pinned one.
#[derive(Debug, Clone, Copy)]
pub struct OwnConnection;

/// `None` for any request but an extended CONNECT. For `:protocol
/// websocket`, the request made the RFC 6455 upgrade the origin is asked
/// with (`GET`, `Upgrade`, `Connection`, a fresh `Sec-WebSocket-Key`; the
/// client's version, subprotocols and extensions as they were) and the
/// client's side of the switch; any other protocol is refused.
pub fn extended_connect(req: &mut Request<Incoming>) -> Option<Result<Switch, Failure>> {
    let protocol = req.extensions_mut().remove::<Protocol>()?;
    if req.method() != Method::CONNECT || !protocol.as_str().eq_ignore_ascii_case("websocket") {
        return Some(Err(Failure::new(
            StatusCode::NOT_IMPLEMENTED,
            Side::Client,
            "connect-protocol",
            format!(
                "extended CONNECT for `{}`: sluice carries only WebSocket over HTTP/2 (RFC 8441)",
                protocol.as_str().escape_default()
            ),
        )));
    }
    let on = hyper::upgrade::on(&mut *req);
    let key = new_key();
    *req.method_mut() = Method::GET;
    let headers = req.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&key) {
        headers.insert(header::SEC_WEBSOCKET_KEY, v);
    }
    req.extensions_mut().insert(OwnConnection);
    Some(Ok(Switch {
        on,
        bridge: Some(Bridge { key }),
    }))
}

/// 16 random bytes, base64 (RFC 6455 4.1).
fn new_key() -> String {
    use base64::Engine;
    let mut nonce = [0u8; 16];
    if getrandom::fill(&mut nonce).is_err() {
        // No entropy source: a key from the clock still differs per
        // request, which is all the origin's proof needs (RFC 6455 10.3
        // guards against caches, not secrets).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        nonce = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

impl Bridge {
    /// Whether the origin's 101 proves it read sluice's key.
    pub fn check(&self, resp: &http::HeaderMap, label: &str) -> Result<(), Failure> {
        let want = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        match resp.get(header::SEC_WEBSOCKET_ACCEPT) {
            Some(v) if v.as_bytes() == want.as_bytes() => Ok(()),
            _ => Err(Failure::new(
                StatusCode::BAD_GATEWAY,
                Side::Upstream,
                "upgrade",
                format!(
                    "upstream {label} switched to WebSocket without the Sec-WebSocket-Accept \
                     for the key sluice sent"
                ),
            )),
        }
    }

    /// The origin's 101 made the client's 200 (RFC 8441 5): the switch's
    /// own headers go, the agreed subprotocol and extensions stay.
    pub fn answer(&self, parts: &mut http::response::Parts) {
        parts.status = StatusCode::OK;
        for h in [
            header::UPGRADE,
            header::CONNECTION,
            header::SEC_WEBSOCKET_ACCEPT,
            header::CONTENT_LENGTH,
        ] {
            parts.headers.remove(h);
        }
    }
}

/// A 2xx answer to a bridged upgrade that did not switch: a CONNECT
/// stream cannot carry its body (RFC 9113 8.5), so it is a 502.
pub fn not_switched(status: StatusCode, label: &str) -> Failure {
    Failure::new(
        StatusCode::BAD_GATEWAY,
        Side::Upstream,
        "upgrade",
        format!("upstream {label} answered the WebSocket upgrade {status} without switching"),
    )
}

/// Sends the bridged upgrade to the tunnel's origin over a new HTTP/1.1
/// connection (TLS as the tunnel's, verified as it was): to the address
/// the tunnel reached, so no second name lookup can land elsewhere.
pub async fn send(
    inside: &Inside,
    ctx: &HttpContext,
    entry: &Arc<ConnEntry>,
    mut req: Request<UpstreamBody>,
) -> Result<Response<Incoming>, BoxError> {
    let started = Instant::now();
    let to = inside.info.addr;
    let (tcp, addr, times) = crate::net::connect_upstream_timed(
        &to.ip().to_string(),
        to.port(),
        &ctx.config.connector,
        &ctx.own_addrs,
    )
    .await?;
    // The client's entry owns the socket while it lives: until this
    // returns an error, or the relay that takes the seat from the
    // response's extensions ends.
    let seat = entry.seat_socket(&tcp).map(|s| BridgeSeat(Arc::new(s)));
    let origin_form = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = http::Uri::from(origin_form);
    let mut resp = match &inside.info.tls {
        Some(info) => {
            let tls = ctx
                .tls
                .connect_http1(tcp, inside.authority.host(), info)
                .await
                .map_err(UpstreamTlsFailed)?;
            over(tls, ctx, req).await?
        }
        None => over(tcp, ctx, req).await?,
    };
    resp.extensions_mut().insert(UpstreamInfo {
        conn_id: entry.id,
        addr,
        addr_label: compact_str::format_compact!("{addr}"),
        connect_started: started,
        dns: times.dns,
        connect: times.connect,
        claimed: Default::default(),
        tls: inside.info.tls.clone(),
    });
    if let Some(seat) = seat {
        resp.extensions_mut().insert(seat);
    }
    Ok(resp)
}

/// The bridged upgrade's socket, counted as the client entry's for as
/// long as the response or the relay holds this (only dropping it
/// matters; a response extension must be `Clone`, hence the `Arc`).
#[derive(Debug, Clone)]
pub struct BridgeSeat(#[allow(dead_code)] Arc<crate::registry::SocketSeat>);

/// One request over HTTP/1.1 on `io`; the connection is driven by its own
/// task, which ends when hyper hands the socket to the upgrade or, for an
/// answer that did not switch, when its body is read.
async fn over<I>(
    io: I,
    ctx: &HttpContext,
    req: Request<UpstreamBody>,
) -> Result<Response<Incoming>, BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::Builder::new()
        .max_headers(ctx.config.client.max_headers)
        .handshake(TokioIo::new(io))
        .await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(send.send_request(req).await?)
}
