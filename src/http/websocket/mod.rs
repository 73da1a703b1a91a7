//! WebSocket on the request path (RFC 6455 over HTTP/1.1): which requests
//! ask to switch ([`asks`]), which upstream 101s are relayed
//! ([`accept_switch`]), and the takeover after the 101 ([`take_over`]):
//! both connections leave hyper (plain TCP, or TLS that sluice decrypts),
//! and the stream relay ([`crate::relay::relay_streams`]) carries the
//! frames as bytes, unframed and unchanged, under the tunnel lifecycle
//! (idle deadline, half-close grace, resets passed on, live byte
//! counters). A tap on each direction reads the frames as they pass
//! ([`frames`]): a close frame starts the half-close grace (the closing
//! handshake's deadline), and with recording on each message is queued
//! for the store ([`tap`]).
//!
//! Invariants: the takeover runs in the client connection's own task (its
//! serving watchdog awaits it, see [`TakeoverSlot`]), so the connection's
//! guard owns both sockets until the relay ends and its close reason is
//! the relay's; a client connection serves no HTTP after its 101; the
//! upgrade's record is the 101 exchange, submitted as the 101 goes out, so
//! a long WebSocket holds no pending record; its messages and its end are
//! recorded against that record's id.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::activity::InflightGuard;
use super::answer::Failure;
use super::headers::{asks_websocket, upgrades_to_websocket};
use super::io::ClientIo;
use super::upstream::UpstreamConn;
use crate::record::messages::Direction;
use crate::registry::{CloseReason, ConnEntry, ConnGuard, ConnState, Side};
use crate::relay::{relay_streams, tap_filtered, Hooks, RelayLimits, Removed};
use crate::transport::ClientStream;
use tokio::io::AsyncWriteExt;

mod frames;
pub mod h2;
mod rewrite;
mod tap;

pub use crate::record::message_log::MessageLog;
pub use frames::{deflate_agreed, Deflate};
pub use rewrite::{refuse_extensions, Rewrite, NO_EXTENSIONS_NOTE};
use tap::DirectionTap;

/// What a record's notes say about an upgraded exchange.
pub const NOTE: &str = "the connection was upgraded to WebSocket: its messages are \
     recorded under this record (see its messages)";

/// The relay after a 101, for the connection's watchdog to run.
pub type Takeover = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where the request path leaves a takeover for the watchdog of its
/// connection. A 101 ends HTTP on the connection, so there is at most
/// one; `expecting` is set before an upgrade request leaves, because a
/// tunnel's own upstream connection ends the moment it is upgraded, which
/// the watchdog must not take for the upstream going away.
#[derive(Clone, Default)]
pub struct TakeoverSlot(Arc<SlotInner>);

#[derive(Default)]
struct SlotInner {
    takeover: Mutex<Option<Takeover>>,
    expecting: AtomicBool,
}

impl TakeoverSlot {
    /// An upgrade request is about to leave.
    pub fn expect(&self) {
        self.0.expecting.store(true, Ordering::Relaxed);
    }

    /// The upgrade request was answered without a switch.
    pub fn settle(&self) {
        self.0.expecting.store(false, Ordering::Relaxed);
    }

    /// Whether an upgrade request is out, its answer not yet relayed.
    pub fn expecting(&self) -> bool {
        self.0.expecting.load(Ordering::Relaxed)
    }

    fn put(&self, t: Takeover) {
        if let Ok(mut slot) = self.0.takeover.lock() {
            *slot = Some(t);
        }
    }

    /// The takeover a relayed 101 left, if any.
    pub fn take(&self) -> Option<Takeover> {
        self.0.takeover.lock().ok().and_then(|mut s| s.take())
    }
}

/// Whether `req` asks to switch to WebSocket: an HTTP/1.1 `GET` with
/// `Upgrade: websocket` and `Connection: upgrade` (RFC 6455 4.1).
pub fn asks<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET
        && req.version() == Version::HTTP_11
        && asks_websocket(req.headers())
}

/// An upgrade request's `ws://` (`wss://`) URL as the `http://`
/// (`https://`) URL it stands for (RFC 6455 3: same authority, same
/// path), so the one request path routes it; `None` for any other URL.
pub fn http_url(uri: &http::Uri) -> Option<http::Uri> {
    let scheme = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("ws") => http::uri::Scheme::HTTP,
        Some(s) if s.eq_ignore_ascii_case("wss") => http::uri::Scheme::HTTPS,
        _ => return None,
    };
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(scheme);
    http::Uri::from_parts(parts).ok()
}

/// The client's side of a WebSocket switch: its pending upgrade, and for
/// an HTTP/2 client (RFC 8441) the bridge to the origin's HTTP/1.1 one.
pub struct Switch {
    pub on: OnUpgrade,
    pub bridge: Option<h2::Bridge>,
}

impl Switch {
    /// An HTTP/1.1 client's `Upgrade: websocket`.
    pub fn http1<B>(req: &mut Request<B>) -> Switch {
        Switch {
            on: hyper::upgrade::on(req),
            bridge: None,
        }
    }
}

/// The client's side of a 101 the upstream sent: `Ok` with the client's
/// switch when the request asked for WebSocket and the upstream switched
/// to it, else the 502 that answers instead (a 101 relayed for a switch
/// sluice cannot carry would leave the client waiting on a dead
/// connection).
pub fn accept_switch<B>(
    resp: &Response<B>,
    client: Option<Switch>,
    label: &str,
) -> Result<Switch, Failure> {
    let refuse =
        |why: String| Failure::new(StatusCode::BAD_GATEWAY, Side::Upstream, "upgrade", why);
    let Some(client) = client else {
        return Err(refuse(format!(
            "upstream {label} answered 101 Switching Protocols to a request that did not ask to upgrade"
        )));
    };
    if !upgrades_to_websocket(resp.headers()) {
        let to = resp
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(no Upgrade header)");
        return Err(refuse(format!(
            "upstream {label} switched protocols to `{to}`; sluice relays only WebSocket upgrades"
        )));
    }
    if let Some(b) = &client.bridge {
        b.check(resp.headers(), label)?;
    }
    Ok(client)
}

/// What the takeover needs besides the two pending upgrades.
pub struct Carry {
    /// The client connection's entry: counters, state, deadline, reason.
    pub entry: Arc<ConnEntry>,
    pub limits: RelayLimits,
    /// How long hyper may take to hand over both connections.
    pub handover: Duration,
    /// Keeps the connection busy (no keep-alive deadline) while it relays.
    pub busy: InflightGuard,
    /// Where the messages go, when the 101's record was taken.
    pub log: Option<Arc<MessageLog>>,
    /// permessage-deflate as the 101 agreed: (client's, upstream's).
    pub deflate: Option<(Deflate, Deflate)>,
    /// `wsDrop://` / `wsSub://` for (client to server, server to client).
    pub rewrite: (Option<Rewrite>, Option<Rewrite>),
    /// A bridged (HTTP/2) WebSocket's upstream socket on the client's
    /// entry, released when the relay ends.
    pub seat: Option<h2::BridgeSeat>,
}

/// Leaves the relay of an accepted 101 in `slot`, for the connection's
/// watchdog to run once hyper has written the 101. An HTTP/2 client's
/// WebSocket is one stream of a connection that goes on serving: its
/// relay runs in a task of its own, bounded like any relay (idle
/// deadline, close grace, the entry's kill) and by the connection, whose
/// end ends the stream.
pub fn take_over(slot: &TakeoverSlot, client: Switch, upstream: OnUpgrade, carry: Carry) {
    let over_h2 = client.bridge.is_some();
    let relay = run(client.on, upstream, carry, over_h2);
    if over_h2 {
        tokio::spawn(relay);
    } else {
        slot.put(Box::pin(relay));
    }
}

async fn run(client: OnUpgrade, upstream: OnUpgrade, carry: Carry, over_h2: bool) {
    let Carry {
        entry,
        limits,
        handover,
        busy,
        log,
        deflate,
        rewrite: (mut up_rw, mut down_rw),
        seat,
    } = carry;
    let base = (
        entry.bytes_up.load(Ordering::Relaxed),
        entry.bytes_down.load(Ordering::Relaxed),
    );
    let mut up_tap = DirectionTap::new(Direction::Send, log.clone(), deflate.map(|d| d.0));
    let mut down_tap = DirectionTap::new(Direction::Receive, log.clone(), deflate.map(|d| d.1));
    let reason = relay_upgraded(
        (client, over_h2),
        upstream,
        &entry,
        limits,
        handover,
        (&mut up_tap, &mut down_tap),
        (&mut up_rw, &mut down_rw),
    )
    .await;
    if let (Some(reason), false) = (&reason, over_h2) {
        // The connection ends with its WebSocket; an HTTP/2 one goes on.
        entry.set_reason(reason.clone());
    }
    if let Some(log) = log {
        let reason = reason
            .or_else(|| entry.reason())
            .unwrap_or(CloseReason::Eof);
        let up = entry
            .bytes_up
            .load(Ordering::Relaxed)
            .saturating_sub(base.0);
        let down = entry
            .bytes_down
            .load(Ordering::Relaxed)
            .saturating_sub(base.1);
        let unreadable = up_tap
            .unreadable()
            .or_else(|| down_tap.unreadable())
            .map(|w| format!("frames past this point could not be read: {w}"));
        let rules = [("sent", &up_rw), ("received", &down_rw)]
            .into_iter()
            .filter_map(|(dir, rw)| rw.as_ref().map(|r| rewrite::describe(dir, r.outcome)));
        let note: Vec<String> = unreadable.into_iter().chain(rules).collect();
        tap::finish(
            &log,
            &reason,
            up,
            down,
            (!note.is_empty()).then(|| note.join("; ")),
        );
    }
    drop(seat);
    drop(busy);
}

/// A direction's tap and, when rules apply to it, its rewrite.
fn hooks<'a>(tap: &'a mut DirectionTap, rw: &'a mut Option<Rewrite>) -> Hooks<'a> {
    Hooks {
        tap: Some(tap),
        filter: rw.as_mut().map(|r| r as &mut dyn crate::relay::Filter),
    }
}

/// `bytes` as the direction's rules leave them, and what they took out.
fn filtered<T: AsRef<[u8]>>(rw: &mut Option<Rewrite>, bytes: T) -> (Vec<u8>, Vec<Removed>) {
    let bytes = bytes.as_ref();
    let mut removed = Vec::new();
    match rw {
        Some(r) => {
            let mut out = Vec::new();
            r.feed(bytes, &mut out);
            r.take_removed(&mut removed);
            (out, removed)
        }
        None => (bytes.to_vec(), removed),
    }
}

/// Waits for both connections back from hyper, writes what hyper read
/// past each head, then relays; returns why it ended (`None`: the entry
/// was killed, its reason already set).
async fn relay_upgraded(
    (client, over_h2): (OnUpgrade, bool),
    upstream: OnUpgrade,
    entry: &ConnEntry,
    limits: RelayLimits,
    handover: Duration,
    (up_tap, down_tap): (&mut DirectionTap, &mut DirectionTap),
    (up_rw, down_rw): (&mut Option<Rewrite>, &mut Option<Rewrite>),
) -> Option<CloseReason> {
    let legs = async { tokio::try_join!(client_leg(client, over_h2), upstream_leg(upstream)) };
    let legs = tokio::select! {
        r = tokio::time::timeout(handover, legs) => r,
        _ = entry.kill.cancelled() => return None,
    };
    let ((mut client, client_rest), mut upstream) = match legs {
        Ok(Ok(legs)) => legs,
        Ok(Err(reason)) => return Some(reason),
        Err(_) => {
            return Some(CloseReason::Error(
                Side::Sluice,
                format!(
                    "the upgraded connections were not handed over within {}",
                    humantime::format_duration(handover)
                ),
            ))
        }
    };
    entry.set_state(ConnState::Streaming);
    // What hyper read past each head (the client's first frames, the
    // upstream's greeting right behind its 101) goes first, through the
    // taps like every later byte.
    let leftovers = async {
        let (client_rest, mut up_removed) = filtered(up_rw, client_rest);
        let (upstream_rest, mut down_removed) =
            filtered(down_rw, std::mem::take(&mut upstream.rest));
        if !client_rest.is_empty() {
            upstream
                .stream
                .write_all(&client_rest)
                .await
                .map_err(|e| CloseReason::from_io(Side::Upstream, &e))?;
            entry
                .bytes_up
                .fetch_add(client_rest.len() as u64, Ordering::Relaxed);
        }
        tap_filtered(up_tap, &client_rest, &mut up_removed);
        if !upstream_rest.is_empty() {
            client
                .write_all(&upstream_rest)
                .await
                .map_err(|e| CloseReason::from_io(Side::Client, &e))?;
            entry
                .bytes_down
                .fetch_add(upstream_rest.len() as u64, Ordering::Relaxed);
        }
        tap_filtered(down_tap, &upstream_rest, &mut down_removed);
        Ok(())
    };
    match tokio::time::timeout(limits.idle, leftovers).await {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => return Some(reason),
        Err(_) => return Some(CloseReason::IdleTimeout),
    }
    let pool_kill = upstream.guard.as_ref().map(|g| g.entry().kill.clone());
    let killed_upstream = async {
        match pool_kill {
            Some(k) => k.cancelled().await,
            None => std::future::pending().await,
        }
    };
    let UpstreamLeg { stream, guard, .. } = upstream;
    let (up, down) = (hooks(up_tap, up_rw), hooks(down_tap, down_rw));
    let relayed = async {
        match client {
            ClientLeg::H1(c) => relay_legs(c, stream, limits, entry, up, down).await,
            ClientLeg::H2(c) => relay_legs(c, stream, limits, entry, up, down).await,
        }
    };
    // The streams close when the relay's future ends, before the pooled
    // upstream's guard deregisters the socket.
    let reason = tokio::select! {
        r = relayed => r,
        // Killing the pooled upstream leg (admin) ends the WebSocket too.
        _ = killed_upstream => CloseReason::KilledByAdmin,
    };
    drop(guard);
    Some(reason)
}

/// [`relay_streams`] from `client` to either kind of upstream stream.
async fn relay_legs<C: crate::relay::Leg>(
    client: C,
    upstream: UpstreamStream,
    limits: RelayLimits,
    entry: &ConnEntry,
    up: Hooks<'_>,
    down: Hooks<'_>,
) -> CloseReason {
    match upstream {
        UpstreamStream::Tcp(s) => relay_streams(client, s, limits, entry, up, down).await.0,
        UpstreamStream::Tls(s) => relay_streams(client, *s, limits, entry, up, down).await.0,
    }
}

/// The client's side after the switch: its HTTP/1.1 connection, or the
/// HTTP/2 stream of its extended CONNECT.
enum ClientLeg {
    H1(ClientStream),
    H2(TokioIo<hyper::upgrade::Upgraded>),
}

impl ClientLeg {
    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            ClientLeg::H1(s) => write_flushed(s, data).await,
            ClientLeg::H2(s) => write_flushed(s, data).await,
        }
    }
}

/// Writes `data` and flushes it out of any layer that buffers (TLS, an
/// HTTP/2 stream; a TCP socket's flush is free).
async fn write_flushed<W>(w: &mut W, data: &[u8]) -> std::io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    w.write_all(data).await?;
    w.flush().await
}

/// The client's side, back from hyper after it wrote the 101 (the 200 of
/// an extended CONNECT), and the bytes hyper read past the request head.
async fn client_leg(on: OnUpgrade, over_h2: bool) -> Result<(ClientLeg, Bytes), CloseReason> {
    let upgraded = on
        .await
        .map_err(|e| CloseReason::Error(Side::Client, format!("WebSocket upgrade failed: {e}")))?;
    if over_h2 {
        // An h2 stream reads nothing past a head: DATA frames are its bytes.
        return Ok((ClientLeg::H2(TokioIo::new(upgraded)), Bytes::new()));
    }
    let parts = upgraded
        .downcast::<TokioIo<ClientIo>>()
        .map_err(|_| sluice_fault("upgraded client stream of unexpected type"))?;
    Ok((
        ClientLeg::H1(parts.io.into_inner().into_inner()),
        parts.read_buf,
    ))
}

/// The upstream stream after its 101: plain, or TLS sluice decrypts.
enum UpstreamStream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpstreamStream {
    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            UpstreamStream::Tcp(s) => write_flushed(s, data).await,
            UpstreamStream::Tls(s) => write_flushed(s.as_mut(), data).await,
        }
    }
}

/// The upstream connection after its 101.
struct UpstreamLeg {
    // Declared before the guard: the socket closes before the guard
    // deregisters it.
    stream: UpstreamStream,
    /// Bytes hyper read past the 101 head.
    rest: Bytes,
    /// A pooled connection's own guard; a tunnel's upstream socket is
    /// owned by the tunnel's guard, which outlives this.
    guard: Option<ConnGuard>,
}

async fn upstream_leg(on: OnUpgrade) -> Result<UpstreamLeg, CloseReason> {
    let upgraded = on.await.map_err(|e| {
        CloseReason::Error(Side::Upstream, format!("WebSocket upgrade failed: {e}"))
    })?;
    // From the pool, or a tunnel's own connection (plain or intercepted).
    let upgraded = match upgraded.downcast::<UpstreamConn>() {
        Ok(parts) => {
            let (tcp, guard) = parts.io.into_socket();
            return Ok(UpstreamLeg {
                stream: UpstreamStream::Tcp(tcp),
                rest: parts.read_buf,
                guard: Some(guard),
            });
        }
        Err(upgraded) => upgraded,
    };
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            return Ok(UpstreamLeg {
                stream: UpstreamStream::Tcp(parts.io.into_inner()),
                rest: parts.read_buf,
                guard: None,
            })
        }
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>() {
        Ok(parts) => Ok(UpstreamLeg {
            stream: UpstreamStream::Tls(Box::new(parts.io.into_inner())),
            rest: parts.read_buf,
            guard: None,
        }),
        Err(_) => Err(sluice_fault("upgraded upstream stream of unexpected type")),
    }
}

fn sluice_fault(why: &str) -> CloseReason {
    CloseReason::Error(Side::Sluice, why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls_route_as_http() {
        let u = |s: &str| s.parse::<http::Uri>().unwrap();
        assert_eq!(
            http_url(&u("ws://example.test:8080/chat?x=1")),
            Some(u("http://example.test:8080/chat?x=1"))
        );
        assert_eq!(
            http_url(&u("WSS://example.test/")),
            Some(u("https://example.test/"))
        );
        assert_eq!(http_url(&u("http://example.test/")), None);
        assert_eq!(http_url(&u("/chat")), None);
    }
}
