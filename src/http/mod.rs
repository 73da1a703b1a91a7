//! The HTTP forward proxy: the listener and its next-layer decision, the
//! one HTTP serving function ([`serve`]), the one tunnel path
//! ([`tunnel`]) and the request path ([`proxy`]).
//!
//! Invariants: each client connection is owned by one task holding its
//! [`ConnGuard`](crate::registry::ConnGuard); the first bytes must arrive
//! within the header timeout; oversized heads get 431 and malformed ones
//! 400 (from hyper); everything else is answered by [`proxy`].

mod activity;
mod answer;
mod body;
mod departure;
mod framing;
pub(crate) mod headers;
mod io;
mod observe;
mod origin;
mod proxy;
mod serve;
mod tamper;
mod throttle;
mod tunnel;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::{self, accept_loop, Admission, Limiter};
use crate::record::Recorder;
use crate::registry::{CloseReason, ConnEntry, Kind, Registry, Side};
use crate::transport::detect::{first_bytes, FirstBytes};
use crate::transport::ClientStream;
use crate::users::auth::Authenticator;
use crate::users::Users;
use crate::Shutdown;
use activity::Activity;
use origin::Origin;
use serve::{serve_stream, HttpVersion};

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
    server_h2: http2::Builder<TokioExecutor>,
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
            .max_headers(config.max_headers)
            .max_header_size(config.max_header_size)
            .max_buf_size((config.max_header_size + 8192).max(8192 * 2));
        let mut server_h2 = http2::Builder::new(TokioExecutor::new());
        server_h2
            .timer(TokioTimer::new())
            .max_concurrent_streams(100)
            .max_header_list_size(config.max_header_size as u32)
            // PING finds a peer gone quiet under HTTP/2's own flow control
            // (TCP keepalive finds it at the socket).
            .keep_alive_interval(config.keepalive.idle)
            .keep_alive_timeout(config.keepalive.interval);
        HttpContext {
            client: upstream::client(&config, &registry, &metrics, &own_addrs),
            config,
            registry,
            metrics,
            users,
            auth,
            server,
            server_h2,
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
    /// Where the stream came from: the listener, or inside which tunnel.
    origin: Arc<Origin>,
    /// A tunnel opened on this connection is drained with it.
    shutdown: Shutdown,
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
    if let Err(e) = net::tune(&stream, &ctx.config.keepalive) {
        guard.set_reason(CloseReason::from_io(Side::Client, &e));
        return;
    }
    // The next-layer decision at the listener: a connection that opens
    // with CONNECT (most tunnels) has its head read without hyper; an
    // HTTP/2 client with prior knowledge is told HTTP/1.1 is required;
    // anything else is HTTP/1.x for hyper.
    let deadline = Instant::now() + ctx.config.header_timeout;
    let first = tokio::select! {
        r = first_bytes(&stream, deadline) => r,
        _ = entry.kill.cancelled() => return,
    };
    match first {
        Ok(FirstBytes::Connect) => {
            return tunnel::head::serve(stream, peer, guard, ctx, shutdown).await
        }
        Ok(FirstBytes::H2Preface) => {
            guard.set_reason(tunnel::head::refuse_h2_preface(&stream).await);
            return;
        }
        Ok(FirstBytes::Other) => {}
        Err(reason) => {
            guard.set_reason(reason);
            return;
        }
    }
    let stream = ClientStream::tcp_stream(stream);
    let origin = Arc::new(Origin::proxy());
    serve_stream(
        stream,
        HttpVersion::H1,
        origin,
        &guard,
        peer,
        &ctx,
        &shutdown,
        std::future::pending(),
    )
    .await;
}
