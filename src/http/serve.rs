//! The one HTTP serving function: any [`ClientStream`], plus where it came
//! from ([`Origin`]), served as HTTP/1.1 or HTTP/2 by hyper with sluice's
//! own watchdog. The proxy listener, plain HTTP inside a tunnel and (with
//! interception) decrypted HTTPS all come through here into the same
//! request path ([`super::proxy::handle`]).
//!
//! Invariants: a fresh connection must complete its first request head
//! within the header timeout, a started head within the header timeout,
//! and a connection with no request in flight closes after the client
//! idle timeout; a shutdown finishes the requests in flight, then closes;
//! a kill closes at once. A companion future (a tunnel's upstream
//! connection) runs in the same task: when it ends, the client connection
//! is shut down gracefully.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use hyper::body::{Body, Incoming};
use hyper::service::{service_fn, HttpService};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::activity::{Activity, Phase};
use super::context::{ConnCtx, HttpContext};
use super::io::{ClientIo, ClientMeter};
use super::origin::Origin;
use super::proxy;
use super::websocket::TakeoverSlot;
use crate::registry::{CloseReason, ConnGuard, ConnState, NextDeadline, PhaseView, Side};
use crate::transport::{ClientStream, Metered};
use crate::Shutdown;

/// Which HTTP a stream speaks, chosen before serving (by the first bytes,
/// or ALPN once TLS is in front).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    H1,
    H2,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A hyper server connection the watchdog can stop gracefully.
trait Graceful: Future<Output = hyper::Result<()>> {
    fn stop_gracefully(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn stop_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

impl<I, S, B, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn stop_gracefully(self: Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

/// Serves `stream` until the client leaves, a deadline passes, the
/// connection is killed or shutdown drains it; `companion` runs beside it.
/// The close reason goes to `guard`.
#[allow(clippy::too_many_arguments)]
pub async fn serve_stream<F>(
    stream: ClientStream,
    version: HttpVersion,
    origin: Arc<Origin>,
    guard: &ConnGuard,
    peer: SocketAddr,
    ctx: &Arc<HttpContext>,
    shutdown: &Shutdown,
    companion: F,
) where
    F: Future<Output = ()>,
{
    let entry = guard.entry().clone();
    let activity = Activity::new();
    show_phase(&entry, &activity, ctx);
    let takeover = TakeoverSlot::default();
    let conn_ctx = ConnCtx {
        entry: entry.clone(),
        activity: activity.clone(),
        peer,
        peer_label: compact_str::format_compact!("{peer}"),
        client_fd: std::os::fd::AsRawFd::as_raw_fd(stream.tcp()),
        origin,
        shutdown: shutdown.clone(),
        takeover: takeover.clone(),
    };
    let svc_ctx = ctx.clone();
    let service = service_fn(move |req| {
        let (ctx, conn) = (svc_ctx.clone(), conn_ctx.clone());
        async move { proxy::handle(req, ctx, conn).await }
    });
    match version {
        HttpVersion::H1 => {
            let io: ClientIo = Metered::new(stream, ClientMeter::http1(activity.clone()));
            let conn = ctx
                .server
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            watch(conn, &activity, guard, ctx, shutdown, companion, &takeover).await
        }
        HttpVersion::H2 => {
            let io: ClientIo = Metered::new(stream, ClientMeter::http2(activity.clone()));
            let conn = ctx.server_h2.serve_connection(TokioIo::new(io), service);
            watch(conn, &activity, guard, ctx, shutdown, companion, &takeover).await
        }
    }
}

/// The inventory reads state and next deadline from the phase at read
/// time: the phase changes on the data path (a request ends, a head
/// starts) while the watchdog sleeps.
fn show_phase(entry: &crate::registry::ConnEntry, activity: &Arc<Activity>, ctx: &HttpContext) {
    let activity = activity.clone();
    let (head_limit, idle_limit) = (
        ctx.config.client.header_timeout,
        ctx.config.client.client_idle_timeout,
    );
    entry.set_phase_fn(Box::new(move || {
        let (state, at, reason) = match activity.phase() {
            Phase::Busy => return None,
            Phase::Head(since) => (
                ConnState::ReadingHeaders,
                since + head_limit,
                "header_timeout",
            ),
            Phase::Idle(since) => (ConnState::Idle, since + idle_limit, "idle_timeout"),
        };
        Some(PhaseView {
            state,
            deadline: Some(NextDeadline {
                at: at.into_std(),
                reason,
                idle_window: None,
            }),
        })
    }));
}

/// The watchdog: header and idle deadlines by phase, shutdown, kill;
/// then, when hyper handed the connection over after a relayed 101, the
/// WebSocket relay, in this same task.
async fn watch<C, F>(
    conn: C,
    activity: &Activity,
    guard: &ConnGuard,
    ctx: &HttpContext,
    shutdown: &Shutdown,
    companion: F,
    takeover: &TakeoverSlot,
) where
    C: Graceful,
    F: Future<Output = ()>,
{
    let entry = guard.entry();
    tokio::pin!(conn);
    tokio::pin!(companion);
    let cfg = &ctx.config;
    let recheck = cfg
        .client
        .header_timeout
        .min(cfg.client.client_idle_timeout);
    let (mut draining, mut companion_done) = (false, false);
    let mut upgraded = None;
    loop {
        let next = match activity.phase() {
            Phase::Busy => Instant::now() + recheck,
            Phase::Head(since) => since + cfg.client.header_timeout,
            Phase::Idle(since) => since + cfg.client.client_idle_timeout,
        };
        tokio::select! {
            r = conn.as_mut() => {
                if activity.dead_peer() {
                    // The first error the socket gave; what hyper saw
                    // after it (a broken pipe, an EOF) says less.
                    guard.set_reason(CloseReason::DeadPeer(Side::Client));
                } else if let Err(e) = r {
                    tracing::debug!(error = %proxy::error_chain(&e), "client connection failed");
                    guard.set_reason(reason_from_hyper(&e));
                } else {
                    upgraded = takeover.take();
                }
                break;
            }
            // The phase can change while this sleeps (a request ends, a
            // new head starts) and the new deadline may be earlier. Waking
            // at least every `recheck`, the shorter of the two timeouts,
            // still meets it: a phase that began at t ends no earlier
            // than t + recheck.
            _ = tokio::time::sleep_until(next.min(Instant::now() + recheck)) => {
                let now = Instant::now();
                match activity.phase() {
                    Phase::Head(since) if now >= since + cfg.client.header_timeout => {
                        guard.set_reason(CloseReason::HeaderTimeout);
                        break;
                    }
                    Phase::Idle(since) if now >= since + cfg.client.client_idle_timeout => {
                        guard.set_reason(CloseReason::IdleTimeout);
                        break;
                    }
                    _ => {}
                }
            }
            _ = shutdown.stop_accepting.cancelled(), if !draining => {
                draining = true;
                entry.set_state(ConnState::Draining);
                // Finishes the request in flight, then closes; closes an
                // idle connection at once.
                conn.as_mut().stop_gracefully();
            }
            // The tunnel's upstream connection ended: no request can be
            // sent any more; the ones in flight finish.
            _ = &mut companion, if !companion_done => {
                companion_done = true;
                // An upgraded tunnel connection ends as it switches; the
                // client's 101 is still to be written.
                if !draining && !takeover.expecting() {
                    draining = true;
                    conn.as_mut().stop_gracefully();
                }
            }
            _ = entry.kill.cancelled() => {
                guard.set_reason(entry.reason().unwrap_or(CloseReason::KilledByAdmin));
                break;
            }
        }
    }
    let Some(relay) = upgraded else {
        return;
    };
    // A tunnel's own upstream connection hands itself over only while its
    // driver (the companion) runs; the relay watches the kill itself.
    tokio::pin!(relay);
    loop {
        tokio::select! {
            _ = relay.as_mut() => break,
            _ = &mut companion, if !companion_done => companion_done = true,
        }
    }
}

fn reason_from_hyper(e: &hyper::Error) -> CloseReason {
    use std::error::Error as _;
    if e.is_timeout() {
        return CloseReason::HeaderTimeout;
    }
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(close) = s.downcast_ref::<proxy::CloseConnection>() {
            return close.reason.clone();
        }
        if let Some(ioe) = s.downcast_ref::<std::io::Error>() {
            // A TLS client closing without close_notify (browsers do, for
            // connections they no longer need) has simply left.
            if ioe.kind() == std::io::ErrorKind::UnexpectedEof {
                return CloseReason::Eof;
            }
            return CloseReason::from_io(Side::Client, ioe);
        }
        src = s.source();
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        return CloseReason::Eof;
    }
    if e.is_parse() || e.is_parse_too_large() {
        return CloseReason::Error(Side::Client, format!("malformed request: {e}"));
    }
    CloseReason::Error(Side::Client, proxy::error_chain(e))
}
