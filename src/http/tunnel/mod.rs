//! The one tunnel path. Both ways of reading a CONNECT head — as a
//! connection's first request ([`head`], without hyper) or after
//! keep-alive requests ([`upgrade`], hyper's upgrade) — end here:
//! [`open`] does auth, the self-loop guard, the rules, the connect raced
//! against the connection's kill, and hands both sockets to the tunnel's
//! guard; every refusal is counted and recorded in one place. After the
//! 200, [`carry`] asks the next-layer question of the inner bytes:
//! plain HTTP is served by the one HTTP serving function (recorded like
//! forward requests, linked to the tunnel, sent over the tunnel's own
//! upstream connection); TLS (until interception exists) and anything
//! else are relayed byte for byte, with splice for bulk flows.
//!
//! Invariants: from the moment the upstream connects, both sockets belong
//! to the tunnel's guard; bytes the client sent behind the CONNECT head
//! are never lost (they go first, to the relay or to the HTTP server).

pub(super) mod head;
mod intercepted;
mod plan;
pub(super) mod upgrade;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use tokio::net::TcpStream;

use super::answer::Failure;
use super::context::HttpContext;
use super::origin::{Inside, Origin, Pinned};
use super::serve::{serve_stream, HttpVersion};
use crate::net::connect_upstream_timed;
use crate::record::capture::UpstreamInfo;
use crate::record::FailedConnect;
use crate::registry::{CloseReason, ConnEntry, ConnGuard, ConnState, Kind, Side};
use crate::relay::{relay, write_all, RelayLimits};
use crate::transport::detect::{self, Layer};
use crate::transport::ClientStream;
use crate::users::auth::Verdict;
use crate::Shutdown;
use plan::{apply_rules, loop_failure, Route, TunnelRules};

/// A CONNECT head, however it was read.
pub(super) struct ConnectRequest {
    /// The target as the client wrote it (`host:port`).
    pub target: String,
    pub proxy_authorization: Option<HeaderValue>,
    /// When the head began to arrive (the record's start).
    pub started: std::time::Instant,
}

/// Why a CONNECT got no tunnel (already counted and recorded).
pub(super) enum Refused {
    /// Answer with this failure, plus `Proxy-Authenticate` on a 407.
    Answer { failure: Failure, challenge: bool },
    /// Close the connection unanswered, for this reason.
    Close(CloseReason),
    /// The connection was killed (shutdown, admin) while the tunnel opened.
    Killed,
}

/// A tunnel whose upstream is connected, not yet answered 200.
pub(super) struct Opened {
    /// Owns both sockets from now on.
    pub guard: ConnGuard,
    pub upstream: TcpStream,
    /// The CONNECT target, `host:port` (the authority of HTTP inside).
    pub authority: http::uri::Authority,
    pub info: UpstreamInfo,
    pub limits: RelayLimits,
    /// What an `intercept://` or `passthrough://` rule said.
    pub tls_rule: Option<intercepted::TlsRule>,
}

/// Opens the tunnel `req` asks for on the client connection `entry`.
pub(super) async fn open(
    ctx: &Arc<HttpContext>,
    entry: &Arc<ConnEntry>,
    peer: SocketAddr,
    req: ConnectRequest,
) -> Result<Opened, Refused> {
    entry.requests.fetch_add(1, Ordering::Relaxed);
    let mut user = None;
    let mut rules = String::new();
    let outcome = try_open(ctx, entry, peer, &req, &mut user, &mut rules).await;
    let status = match &outcome {
        Ok(_) => 200,
        Err(Refused::Answer { failure, .. }) => failure.status.as_u16(),
        Err(Refused::Close(_)) => 0,
        Err(Refused::Killed) => return outcome,
    };
    ctx.metrics.count_request(&Method::CONNECT, status);
    if let Err(Refused::Answer { failure, .. }) = &outcome {
        // No tunnel guard exists to record this CONNECT at its close.
        ctx.recorder.connect_failed(FailedConnect {
            conn_id: entry.id,
            client: peer,
            user: user.as_deref(),
            target: &req.target,
            status: failure.status.as_u16(),
            error: &failure.message,
            started: req.started,
            rules: &rules,
        });
    }
    // A close is no answer; an auth failure has no user.
    if let (Some(user), true) = (&user, status != 0) {
        ctx.users.on_request(user, status >= 500);
    }
    outcome
}

async fn try_open(
    ctx: &Arc<HttpContext>,
    entry: &Arc<ConnEntry>,
    peer: SocketAddr,
    req: &ConnectRequest,
    user_out: &mut Option<String>,
    rules_out: &mut String,
) -> Result<Opened, Refused> {
    let answer = |failure: Failure| Refused::Answer {
        failure,
        challenge: false,
    };
    let user = match &ctx.auth {
        None => peer.ip().to_string(),
        Some(a) => match a.check(req.proxy_authorization.as_ref()).await {
            Verdict::User(name) => name,
            verdict => {
                let f = Failure::new(verdict.status(), Side::Client, "auth", verdict.reason());
                return Err(Refused::Answer {
                    failure: f,
                    challenge: true,
                });
            }
        },
    };
    if entry.set_user(user.clone()) {
        ctx.users.on_open(&user);
    }
    *user_out = Some(user.clone());
    let target = &req.target;
    let Some((host, port)) = crate::net::split_host_port(target) else {
        return Err(answer(Failure::bad_request(format!(
            "CONNECT target `{target}` is not host:port"
        ))));
    };
    let authority: http::uri::Authority = target.parse().map_err(|_| {
        answer(Failure::bad_request(format!(
            "CONNECT target `{target}` is not host:port"
        )))
    })?;
    if super::context::proxy_is_self(ctx, host, port) {
        return Err(answer(loop_failure(format!(
            "CONNECT {target} is addressed to sluice itself"
        ))));
    }
    let plan = apply_rules(ctx, entry, peer.ip(), host, port).await;
    *rules_out = plan.rules;
    let route = match plan.then {
        TunnelRules::Open(route) => route,
        TunnelRules::Answer(f) => return Err(answer(f)),
        TunnelRules::Close(why) => {
            return Err(Refused::Close(CloseReason::Error(Side::Sluice, why)))
        }
        TunnelRules::Killed => return Err(Refused::Killed),
    };
    let limits = route.limits(&ctx.config);
    let Route {
        host, port, tls, ..
    } = route;
    if super::context::proxy_is_self(ctx, &host, port) {
        return Err(answer(loop_failure(format!(
            "CONNECT {target}: the rules send it to sluice itself ({host}:{port})"
        ))));
    }
    let cfg = &ctx.config;
    entry.set_state(ConnState::WaitingUpstream);
    let connect_started = tokio::time::Instant::now();
    let connected = tokio::select! {
        r = connect_upstream_timed(&host, port, &cfg.connector, &ctx.own_addrs) => r,
        _ = entry.kill.cancelled() => return Err(Refused::Killed),
    };
    let (upstream, addr, times) = connected.map_err(|e| answer(Failure::from_connect(&e)))?;
    ctx.metrics
        .upstream_connect_seconds
        .observe(connect_started.elapsed().as_secs_f64());

    // The tunnel's guard owns the upstream socket from here, and the
    // client socket once the caller hands it over.
    let guard = ctx.registry.register(Kind::Tunnel, Some(peer));
    let tunnel = guard.entry();
    tunnel.set_upstream(format!("{target} ({addr})"));
    tunnel.attach_socket(&upstream);
    tunnel.set_user(user);
    tunnel.set_rules(std::mem::take(rules_out));
    let info = UpstreamInfo {
        conn_id: tunnel.id,
        addr,
        addr_label: compact_str::format_compact!("{addr}"),
        connect_started,
        dns: times.dns,
        connect: times.connect,
        claimed: Default::default(),
        tls: None,
    };
    Ok(Opened {
        guard,
        upstream,
        authority,
        info,
        limits,
        tls_rule: tls,
    })
}

/// After the 200: decides the inner layer and serves or relays it until
/// the tunnel ends. `client` holds any bytes read behind the CONNECT head.
///
/// Boxed: serving HTTP inside a tunnel reaches this function again
/// (a request path that opens tunnels), and a named future type is what
/// lets the compiler see that the whole is `Send`.
pub(super) fn carry(
    client: ClientStream,
    opened: Opened,
    peer: SocketAddr,
    ctx: Arc<HttpContext>,
    shutdown: Shutdown,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(carry_inner(client, opened, peer, ctx, shutdown))
}

async fn carry_inner(
    client: ClientStream,
    opened: Opened,
    peer: SocketAddr,
    ctx: Arc<HttpContext>,
    shutdown: Shutdown,
) {
    let Opened {
        guard,
        upstream,
        authority,
        info,
        limits,
        tls_rule,
    } = opened;
    let entry = guard.entry().clone();
    entry.attach_socket(client.tcp());
    // A throttled tunnel is paced by the relay, byte for byte.
    let throttled = limits.up_rate != 0 || limits.down_rate != 0;
    let layer = if throttled || !client.is_plain() {
        Layer::Opaque
    } else {
        let already = client.unread_bytes();
        match detect::inner_layer(client.tcp(), already, &upstream, limits.idle, &entry.kill).await
        {
            Ok(layer) => layer,
            Err(reason) => {
                guard.set_reason(entry.reason().unwrap_or(reason));
                return;
            }
        }
    };
    match layer {
        Layer::Http1 | Layer::Http2 => {
            let version = if layer == Layer::Http1 {
                HttpVersion::H1
            } else {
                HttpVersion::H2
            };
            let inside = Plain {
                upstream: Ok(upstream),
                upstream_h2: version == HttpVersion::H2,
                scheme: http::uri::Scheme::HTTP,
            };
            // Boxed: the HTTP server's state is large, and kept inline it
            // would be part of every tunnel's future, idle relays included.
            Box::pin(serve_inside(
                client, inside, version, authority, info, &guard, peer, &ctx, &shutdown,
            ))
            .await
        }
        Layer::Tls => {
            let port = authority.port_u16().unwrap_or(443);
            let policy = intercepted::policy(&ctx, &tls_rule, peer.ip(), authority.host(), port);
            match policy {
                intercepted::Policy::Intercept { verify } => {
                    Box::pin(intercepted::serve(
                        client, upstream, verify, authority, info, &guard, peer, &ctx, &shutdown,
                    ))
                    .await
                }
                intercepted::Policy::Pass(why) => {
                    entry.set_tls(intercepted::passthrough_state(&why));
                    ctx.metrics.count_tls("passthrough", why.label());
                    relay_bytes(client, &upstream, limits, &guard).await
                }
            }
        }
        Layer::Opaque => relay_bytes(client, &upstream, limits, &guard).await,
    }
}

/// The opaque tunnel, from a stream that is still plain TCP.
async fn relay_bytes(
    client: ClientStream,
    upstream: &TcpStream,
    limits: RelayLimits,
    guard: &ConnGuard,
) {
    match client.into_tcp() {
        Ok((client, rest)) => relay_plain(&client, upstream, rest, limits, guard).await,
        Err(_) => guard.set_reason(CloseReason::Error(
            Side::Sluice,
            "a decrypted stream cannot be relayed as bytes".into(),
        )),
    }
}

/// The opaque tunnel: leftovers first, then the duplex relay (splice for
/// bulk flows).
async fn relay_plain(
    client: &TcpStream,
    upstream: &TcpStream,
    rest: Bytes,
    limits: RelayLimits,
    guard: &ConnGuard,
) {
    let entry = guard.entry();
    if !rest.is_empty() {
        if let Err(e) = write_all(upstream, &rest).await {
            guard.set_reason(CloseReason::from_io(Side::Upstream, &e));
            return;
        }
        entry
            .bytes_up
            .fetch_add(rest.len() as u64, Ordering::Relaxed);
    }
    drop(rest);
    relay(client, upstream, limits, entry).await;
}

/// The upstream side of HTTP served inside a tunnel.
pub(super) struct Plain<I> {
    /// The tunnel's upstream connection (TCP, or TLS when intercepted),
    /// or why there is none (its TLS handshake failed).
    pub upstream: Result<I, String>,
    /// Speak HTTP/2 to it (prior knowledge, or as ALPN agreed).
    pub upstream_h2: bool,
    pub scheme: http::uri::Scheme,
}

/// HTTP inside the tunnel (plain, or decrypted): served by the one HTTP
/// serving function, each request sent over the tunnel's upstream
/// connection.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_inside<I>(
    client: ClientStream,
    inside: Plain<I>,
    version: HttpVersion,
    authority: http::uri::Authority,
    info: UpstreamInfo,
    guard: &ConnGuard,
    peer: SocketAddr,
    ctx: &Arc<HttpContext>,
    shutdown: &Shutdown,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let cfg = &ctx.config;
    let (pinned, driver) = match inside.upstream {
        Err(why) => {
            let none: super::origin::Driver = Box::pin(std::future::pending());
            (Pinned::Unavailable(why), none)
        }
        Ok(upstream) => {
            let handshake = Pinned::handshake(upstream, inside.upstream_h2, cfg);
            match tokio::time::timeout(cfg.connector.connect_timeout, handshake).await {
                Ok(Ok(p)) => p,
                Ok(Err(e)) => {
                    guard.set_reason(CloseReason::Error(
                        Side::Upstream,
                        format!("HTTP handshake with {authority} failed: {e}"),
                    ));
                    return;
                }
                Err(_) => {
                    guard.set_reason(CloseReason::ConnectTimeout);
                    return;
                }
            }
        }
    };
    let tls_json = info
        .tls
        .as_ref()
        .and_then(|t| serde_json::to_string(&**t).ok())
        .map(Arc::from);
    let origin = Arc::new(Origin::inside(Inside {
        authority,
        scheme: inside.scheme,
        upstream: pinned,
        info,
        tls_json,
    }));
    serve_stream(client, version, origin, guard, peer, ctx, shutdown, driver).await;
}

/// A refusal as the bytes of an HTTP/1.1 answer (the first-request path
/// writes them itself).
pub(super) fn refusal_bytes(failure: &Failure, challenge: bool) -> Vec<u8> {
    if challenge {
        failure.to_bytes(&[("Proxy-Authenticate", "Basic realm=\"sluice\"")])
    } else {
        failure.to_bytes(&[])
    }
}

/// 400 for a CONNECT where a tunnel cannot be opened (inside a tunnel,
/// or over HTTP/2).
pub(super) fn not_here(why: &str) -> Failure {
    Failure::new(StatusCode::BAD_REQUEST, Side::Client, "connect-here", why)
}
