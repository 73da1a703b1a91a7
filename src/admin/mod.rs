//! The admin server: inventory, kernel cross-check, metrics, history,
//! users, records, rules and the web UI over HTTP, on its own listener.
//!
//! Invariants: admin connections are registered (kind `admin`), tuned and
//! bounded like proxy connections (hyper's header timer closes idle and
//! slow ones, a write watchdog closes ones whose reader stopped reading);
//! every client has a connection budget that makes room by closing its
//! oldest idle connection ([`limits`]); every request must carry the token
//! (generated at start unless given, or `--admin-token none` on loopback),
//! compared in constant time, but those for the CA's certificate and
//! trust page, which are public.
//!
//! Modules, bottom up: `reply` (error replies), `state` (what handlers
//! read), [`token`], [`session`], [`limits`] and `stream` are leaves; `ui`
//! serves the embedded web UI and its login page; `auth` checks each
//! request (answering a browser with that login page); the handlers by
//! concern are `inventory` (connections, sockets, users), `status`
//! (health, history, metrics), `records`, `har`, `rules`, `ca` (the
//! CA's public trust page and certificate, `/api/tls`) and `debug`
//! (test hooks); `router` maps paths to them behind `auth`; this file
//! serves connections. No module imports one above it
//! (`scripts/import_graph.sh src/admin` checks).

mod auth;
mod ca;
pub mod client;
mod debug;
mod har;
mod inventory;
pub mod limits;
mod messages;
mod records;
mod reply;
mod router;
mod rules;
pub mod session;
mod state;
mod status;
mod stream;
pub mod token;
mod ui;

pub use state::AdminState;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::net::{self, accept_loop, Admission, Limiter};
use crate::registry::{CloseReason, Kind, Side};

/// A ceiling under the per-client budget: past it the accept loop refuses
/// at once (descriptors are finite). The budget in [`limits`] is what
/// normally decides.
const ADMIN_MAX_CONNECTIONS: usize = limits::TOTAL_CONNECTIONS + 64;

/// How often a connection checks its write progress.
const WATCH_EVERY: Duration = Duration::from_millis(500);

pub async fn serve_admin(listener: TcpListener, state: Arc<AdminState>) {
    let router = router::router(state.clone());
    let stop = state.shutdown.stop_accepting.clone();
    let reg = state.registry.clone();
    let mut server = http1::Builder::new();
    // The header timer is also the idle deadline between requests: hyper
    // starts it when it waits for a request head.
    server
        .timer(TokioTimer::new())
        .header_read_timeout(limits::IDLE_DEADLINE)
        .keep_alive(true);
    let reg2 = reg.clone();
    accept_loop(
        listener,
        Limiter::new(ADMIN_MAX_CONNECTIONS),
        stop,
        |stream, peer, admission| match state.conns.admit(peer.ip()) {
            Some(seat) => {
                tokio::spawn(serve_conn(
                    stream,
                    peer,
                    (admission, seat),
                    state.clone(),
                    router.clone(),
                    server.clone(),
                ));
            }
            None => {
                drop(stream);
                reg2.count_close(&CloseReason::RefusedAtLimit);
            }
        },
        move |_stream, _peer| reg.count_close(&CloseReason::RefusedAtLimit),
    )
    .await;
}

async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    (_admission, seat): (Admission, limits::Seat),
    state: Arc<AdminState>,
    router: axum::Router,
    server: http1::Builder,
) {
    let guard = state.registry.register(Kind::Admin, Some(peer));
    guard.entry().attach_socket(&stream);
    if let Err(e) = net::tune(&stream, &state.keepalive) {
        guard.set_reason(CloseReason::from_io(Side::Client, &e));
        return;
    }
    let (io, watch) = limits::ProgressIo::new(stream);
    let slot = seat.slot.clone();
    let client = limits::ClientIp(peer.ip());
    // Each request marks the connection busy until its response body is
    // sent: only idle connections are closed to make room.
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        let busy = slot.busy();
        req.extensions_mut().insert(client);
        let mut router = router.clone();
        async move {
            let resp = tower_service::Service::call(&mut router, req).await?;
            Ok::<_, std::convert::Infallible>(resp.map(|b| BusyBody {
                inner: b,
                _busy: busy,
            }))
        }
    });
    let conn = server.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let entry = guard.entry().clone();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        guard.set_reason(CloseReason::HeaderTimeout);
                    }
                }
                return;
            }
            _ = tick.tick() => {
                if watch.stalled_for() > limits::WRITE_DEADLINE {
                    tracing::debug!(client = %peer, "admin reader stopped reading; closing");
                    guard.set_reason(CloseReason::IdleTimeout);
                    return;
                }
            }
            _ = seat.slot.evict.cancelled() => {
                // Oldest idle connection of a client at its budget.
                guard.set_reason(CloseReason::RefusedAtLimit);
                return;
            }
            _ = entry.kill.cancelled() => return,
            _ = state.shutdown.stop_accepting.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(Duration::from_secs(2), conn.as_mut()).await;
                return;
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its connection marked busy until it is
    /// sent (or dropped).
    struct BusyBody {
        #[pin]
        inner: axum::body::Body,
        _busy: limits::BusyGuard,
    }
}

impl http_body::Body for BusyBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
