//! What every connection of one proxy listener shares ([`HttpContext`])
//! and what a request handler knows about its client connection
//! ([`ConnCtx`]); the self-loop test for targets.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::activity::Activity;
use super::origin::Origin;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::record::Recorder;
use crate::registry::{ConnEntry, Registry};
use crate::users::auth::Authenticator;
use crate::users::Users;
use crate::Shutdown;

/// Shared by every connection of one proxy listener.
pub struct HttpContext {
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub users: Arc<Users>,
    /// Set with `--auth`: clients must authenticate.
    pub auth: Option<Arc<Authenticator>>,
    pub(super) client: super::upstream::UpstreamClient,
    pub(super) server: http1::Builder,
    pub(super) server_h2: http2::Builder<TokioExecutor>,
    /// Listener addresses of this instance, refused as targets (loop guard).
    pub own_addrs: Vec<SocketAddr>,
    pub recorder: Arc<Recorder>,
    pub rules: Arc<crate::rules::live::LiveRules>,
    /// HTTPS interception: CA, leaves, upstream TLS, fallback.
    pub tls: Arc<crate::tls::Interception>,
    /// `--intercept`: the hosts decrypted when no rule decides.
    pub intercept: crate::rules::InterceptScope,
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
    pub tls: Arc<crate::tls::Interception>,
    pub intercept: crate::rules::InterceptScope,
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
            tls,
            intercept,
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
        let mut server_h2 = http2::Builder::new(TokioExecutor::new());
        server_h2
            .timer(TokioTimer::new())
            .max_concurrent_streams(100)
            // RFC 8441: clients may open WebSockets as extended CONNECT
            // streams (websocket::h2 bridges them to HTTP/1.1 upgrades).
            .enable_connect_protocol()
            // HPACK bombs: the decoded header list is bounded like an
            // HTTP/1.1 head.
            .max_header_list_size(config.client.max_header_size as u32)
            // Rapid reset (CVE-2023-44487): streams a client opens and
            // resets before they are served count against this; past it
            // the connection gets GOAWAY (h2 also bounds CONTINUATION
            // frames and locally reset streams).
            .max_pending_accept_reset_streams(20)
            .max_local_error_reset_streams(Some(256))
            // PING finds a peer gone quiet under HTTP/2's own flow control
            // (TCP keepalive finds it at the socket).
            .keep_alive_interval(config.connector.keepalive.idle)
            .keep_alive_timeout(config.connector.keepalive.interval);
        HttpContext {
            client: super::upstream::client(&config, &registry, &metrics, &own_addrs),
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
            tls,
            intercept,
        }
    }
}

/// What a request handler knows about its client connection.
#[derive(Clone)]
pub struct ConnCtx {
    pub entry: Arc<ConnEntry>,
    pub(super) activity: Arc<Activity>,
    pub peer: SocketAddr,
    /// `peer` as records show it, formatted once per connection (an
    /// inline string: cloning it per request allocates nothing).
    pub peer_label: compact_str::CompactString,
    /// The client socket, for noticing a departure while a request waits.
    /// Valid while the connection is served, which outlives every handler.
    pub(super) client_fd: std::os::fd::RawFd,
    /// Where the stream came from: the listener, or inside which tunnel.
    pub(super) origin: Arc<Origin>,
    /// A tunnel opened on this connection is drained with it.
    pub(super) shutdown: Shutdown,
    /// Where a relayed 101 leaves the WebSocket relay for the watchdog.
    pub(super) takeover: super::websocket::TakeoverSlot,
}

pub(super) fn proxy_is_self(ctx: &HttpContext, host: &str, port: u16) -> bool {
    let host = host.trim_matches(|c| c == '[' || c == ']');
    ctx.own_addrs.iter().any(|a| {
        a.port() == port
            && match host.parse::<std::net::IpAddr>() {
                Ok(ip) => ip == a.ip() || ip.is_loopback() || ip.is_unspecified(),
                Err(_) => host.eq_ignore_ascii_case("localhost"),
            }
    })
}
