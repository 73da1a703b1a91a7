//! The HTTP/1.1 forward proxy listener: accepts client connections, serves
//! them with hyper, and watches each one with its own deadlines.
//!
//! Invariants: each client connection is owned by one task holding its
//! [`ConnGuard`](crate::registry::ConnGuard); a fresh connection must send a
//! complete request head within the header timeout, a started head must
//! complete within the header timeout, and a keep-alive connection with no
//! request in flight closes after the client idle timeout. Oversized heads
//! get 431 and malformed ones 400 (from hyper); everything else is answered
//! by [`proxy`].

mod activity;
mod answer;
mod body;
mod connect;
mod connect_fast;
mod departure;
mod framing;
pub(crate) mod headers;
mod io;
mod proxy;
mod tamper;
mod throttle;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::{self, accept_loop, Admission, Limiter};
use crate::record::Recorder;
use crate::registry::{
    CloseReason, ConnEntry, ConnState, Kind, NextDeadline, PhaseView, Registry, Side,
};
use crate::users::auth::Authenticator;
use crate::users::Users;
use crate::Shutdown;
use activity::{Activity, Phase};

/// Shared by every connection of one proxy listener.
pub struct HttpContext {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub users: Arc<Users>,
    /// Set with `--auth`: clients must authenticate.
    pub auth: Option<Arc<Authenticator>>,
    client: upstream::UpstreamClient,
    server: http1::Builder,
    /// Listener addresses of this instance, refused as targets (loop guard).
    pub own_addrs: Vec<SocketAddr>,
    pub recorder: Arc<Recorder>,
    pub rules: Arc<crate::rules::live::LiveRules>,
}

/// What the proxy listener shares with the rest of the instance.
pub struct Shared {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub users: Arc<Users>,
    pub auth: Option<Arc<Authenticator>>,
    pub own_addrs: Vec<SocketAddr>,
    pub recorder: Arc<Recorder>,
    pub rules: Arc<crate::rules::live::LiveRules>,
}

impl HttpContext {
    pub fn new(shared: Shared) -> Self {
        let Shared {
            config,
            registry,
            metrics,
            users,
            auth,
            own_addrs,
            recorder,
            rules,
        } = shared;
        let mut server = http1::Builder::new();
        server
            .timer(TokioTimer::new())
            // The watchdog below owns header and idle deadlines, so that a
            // keep-alive idle period and a slow head are told apart.
            .header_read_timeout(None)
            .keep_alive(true)
            // A client that half-closes after its request still gets the
            // whole response; keepalive and deadlines catch real departures.
            .half_close(true)
            .max_headers(config.client.max_headers)
            .max_header_size(config.client.max_header_size)
            .max_buf_size((config.client.max_header_size + 8192).max(8192 * 2));
        HttpContext {
            client: upstream::client(&config, &registry, &metrics, &own_addrs),
            config,
            registry,
            metrics,
            users,
            auth,
            server,
            own_addrs,
            recorder,
            rules,
        }
    }
}

/// What a request handler knows about its client connection.
#[derive(Clone)]
pub struct ConnCtx {
    pub entry: Arc<ConnEntry>,
    activity: Arc<Activity>,
    pub peer: SocketAddr,
    /// The client socket, for noticing a departure while a request waits.
    /// Valid while the connection is served, which outlives every handler.
    client_fd: std::os::fd::RawFd,
}

fn proxy_is_self(ctx: &HttpContext, host: &str, port: u16) -> bool {
    let host = host.trim_matches(|c| c == '[' || c == ']');
    ctx.own_addrs.iter().any(|a| {
        a.port() == port
            && match host.parse::<std::net::IpAddr>() {
                Ok(ip) => ip == a.ip() || ip.is_loopback() || ip.is_unspecified(),
                Err(_) => host.eq_ignore_ascii_case("localhost"),
            }
    })
}

/// Accepts proxy clients until shutdown.
pub async fn serve_http(
    listener: TcpListener,
    ctx: Arc<HttpContext>,
    limiter: Limiter,
    shutdown: Shutdown,
) {
    let stop = shutdown.stop_accepting.clone();
    let reg = ctx.registry.clone();
    accept_loop(
        listener,
        limiter,
        stop,
        |stream, peer, admission| {
            tokio::spawn(serve_conn(
                stream,
                peer,
                admission,
                ctx.clone(),
                shutdown.clone(),
            ));
        },
        move |stream, _peer| {
            reg.count_close(&CloseReason::RefusedAtLimit);
            refuse(stream);
        },
    )
    .await;
}

/// Past the limit: one best-effort 503 without waiting, then close.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nX-Sluice-Error: limit\r\nContent-Length: 49\r\n\r\nsluice: connection limit reached, try again later",
    );
}

async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    _admission: Admission,
    ctx: Arc<HttpContext>,
    shutdown: Shutdown,
) {
    let guard = ctx.registry.register(Kind::Http, Some(peer));
    // Rebound after the guard so the socket closes before deregistration.
    let stream = stream;
    let entry = guard.entry().clone();
    entry.attach_socket(&stream);
    if let Err(e) = net::tune(&stream, &ctx.config.connector.keepalive) {
        guard.set_reason(CloseReason::from_io(Side::Client, &e));
        return;
    }
    let activity = Activity::new();
    // A connection that opens with CONNECT (most tunnels) is served without
    // hyper; anything else, or a head not yet fully peekable, goes to hyper.
    let deadline = Instant::now() + ctx.config.client.header_timeout;
    let first = tokio::select! {
        r = connect_fast::peek_first(&stream, deadline) => r,
        _ = entry.kill.cancelled() => return,
    };
    match first {
        Ok(connect_fast::FirstBytes::Connect) => {
            return connect_fast::serve(stream, peer, guard, ctx).await
        }
        Ok(connect_fast::FirstBytes::H2Preface) => {
            guard.set_reason(connect_fast::refuse_h2_preface(&stream).await);
            return;
        }
        Ok(connect_fast::FirstBytes::Other) => {}
        Err(reason) => {
            guard.set_reason(reason);
            return;
        }
    }
    // The inventory reads state and next deadline from the phase at read
    // time: the phase changes on the data path (a request ends, a head
    // starts) while the watchdog below sleeps.
    {
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
    let conn_ctx = ConnCtx {
        entry: entry.clone(),
        activity: activity.clone(),
        peer,
        client_fd: std::os::fd::AsRawFd::as_raw_fd(&stream),
    };
    let svc_ctx = ctx.clone();
    let service = service_fn(move |req| {
        let (ctx, conn) = (svc_ctx.clone(), conn_ctx.clone());
        async move { proxy::handle(req, ctx, conn).await }
    });
    let io = TokioIo::new(io::ClientIo::new(stream, activity.clone()));
    let conn = ctx.server.serve_connection(io, service).with_upgrades();
    tokio::pin!(conn);

    let cfg = &ctx.config;
    let recheck = cfg
        .client
        .header_timeout
        .min(cfg.client.client_idle_timeout);
    let mut draining = false;
    loop {
        let next = match activity.phase() {
            Phase::Busy => Instant::now() + recheck,
            Phase::Head(since) => since + cfg.client.header_timeout,
            Phase::Idle(since) => since + cfg.client.client_idle_timeout,
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    guard.set_reason(reason_from_hyper(&e));
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
                conn.as_mut().graceful_shutdown();
            }
            _ = entry.kill.cancelled() => {
                guard.set_reason(entry.reason().unwrap_or(CloseReason::KilledByAdmin));
                break;
            }
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
