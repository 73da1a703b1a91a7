//! CONNECT tunnels: connect to the target, answer 200, take the client
//! socket back from hyper and hand both legs to the duplex relay.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::answer::{empty, Failure, ProxyBody};
use super::io::ClientIo;
use super::{ConnCtx, HttpContext};
use crate::net::connect_upstream_except;
use crate::record::FailedConnect;
use crate::registry::{CloseReason, ConnEntry, ConnState, Kind, Side};
use crate::relay::{relay, write_all, RelayLimits};
use crate::rules::{Block, Chosen, Plan, Rate};

/// What the rules decided for one CONNECT (both CONNECT paths), and why.
pub(super) struct TunnelPlan {
    /// The rules that matched and what each decided, as the JSON list
    /// records carry (empty when no rule matched).
    pub rules: String,
    pub then: TunnelRules,
}

/// Where a tunnel goes (the rules' upstream, or the CONNECT target) and
/// how fast, in bytes per second (0: unlimited; up is client to upstream).
pub(super) struct Route {
    pub host: String,
    pub port: u16,
    pub up_rate: u64,
    pub down_rate: u64,
}

impl Route {
    /// The relay limits for this route under `config`.
    pub fn limits(&self, config: &crate::config::Config) -> RelayLimits {
        RelayLimits {
            up_rate: self.up_rate,
            down_rate: self.down_rate,
            ..RelayLimits::new(&config.relay_limits)
        }
    }
}

/// What to do with one CONNECT.
pub(super) enum TunnelRules {
    /// Open the tunnel along this route.
    Open(Route),
    /// Answer with this failure (`block://STATUS`).
    Answer(Failure),
    /// Close the client connection unanswered (`block://close`).
    Close(String),
    /// The connection was killed during a `delay://`.
    Killed,
}

/// Plans `CONNECT host:port` from `client` against the live rules and
/// applies, in order, `delay` (cancelled by `entry.kill`), `block`,
/// `upstream` and the throttles (`reqThrottle` up, `throttle` down).
pub(super) async fn apply_rules(
    ctx: &HttpContext,
    entry: &ConnEntry,
    client: std::net::IpAddr,
    host: &str,
    port: u16,
) -> TunnelPlan {
    let snapshot = ctx.rules.current();
    let plan = snapshot.set.plan_connect(host, port, client);
    if plan.is_empty() {
        return TunnelPlan {
            rules: String::new(),
            then: TunnelRules::Open(Route {
                host: host.to_string(),
                port,
                up_rate: 0,
                down_rate: 0,
            }),
        };
    }
    let rules = serde_json::to_string(&super::tamper::notes(&plan)).unwrap_or_default();
    let then = decide(&plan, entry, host, port).await;
    TunnelPlan { rules, then }
}

async fn decide(plan: &Plan<'_>, entry: &ConnEntry, host: &str, port: u16) -> TunnelRules {
    if let Some(d) = plan.delay {
        tokio::select! {
            _ = tokio::time::sleep(d.action) => {}
            _ = entry.kill.cancelled() => return TunnelRules::Killed,
        }
    }
    if let Some(b) = plan.block {
        return match b.action {
            Block::Status(status) => TunnelRules::Answer(Failure::new(
                status,
                Side::Sluice,
                "blocked",
                format!(
                    "CONNECT {host}:{port} blocked by rule {} (block://{})",
                    b.rule,
                    status.as_u16()
                ),
            )),
            Block::Close => TunnelRules::Close(format!(
                "CONNECT {host}:{port} closed by rule {} (block://close)",
                b.rule
            )),
        };
    }
    let (host, port) = match plan.upstream {
        Some(u) => (u.action.host.clone(), u.action.port.unwrap_or(port)),
        None => (host.to_string(), port),
    };
    let rate = |r: Option<Chosen<&Rate>>| r.map_or(0, |c| c.action.bytes_per_sec());
    TunnelRules::Open(Route {
        host,
        port,
        up_rate: rate(plan.req_throttle),
        down_rate: rate(plan.throttle),
    })
}

pub async fn handle_connect(
    req: Request<Incoming>,
    ctx: &Arc<HttpContext>,
    conn: &ConnCtx,
    user: &str,
) -> Response<ProxyBody> {
    let started = std::time::Instant::now();
    let target = req.uri().to_string();
    let mut rules = String::new();
    match open_tunnel(req, ctx, conn, user, &mut rules).await {
        Ok(resp) => resp,
        Err(f) => {
            // No tunnel guard exists to record this CONNECT at close.
            ctx.recorder.connect_failed(FailedConnect {
                conn_id: conn.entry.id,
                client: conn.peer,
                user: Some(user),
                target: &target,
                status: f.status.as_u16(),
                error: &f.message,
                started,
                rules: &rules,
            });
            f.into_response()
        }
    }
}

async fn open_tunnel(
    mut req: Request<Incoming>,
    ctx: &Arc<HttpContext>,
    conn: &ConnCtx,
    user: &str,
    rules: &mut String,
) -> Result<Response<ProxyBody>, Failure> {
    let Some(authority) = req.uri().authority().cloned() else {
        return Err(Failure::bad_request("CONNECT needs a host:port target"));
    };
    let Some(port) = authority.port_u16().filter(|p| *p != 0) else {
        return Err(Failure::bad_request(format!(
            "CONNECT target `{authority}` has no port"
        )));
    };
    let host = authority
        .host()
        .trim_matches(|c| c == '[' || c == ']')
        .to_string();
    if super::proxy_is_self(ctx, &host, port) {
        return Err(Failure::new(
            StatusCode::LOOP_DETECTED,
            Side::Client,
            "loop",
            format!("CONNECT {authority} is addressed to sluice itself"),
        ));
    }
    let plan = apply_rules(ctx, &conn.entry, conn.peer.ip(), &host, port).await;
    *rules = plan.rules;
    let route = match plan.then {
        TunnelRules::Open(route) => route,
        TunnelRules::Answer(f) => return Err(f),
        TunnelRules::Close(why) => {
            // Closed unanswered: the connection's own loop drops it when
            // it sees the kill, and this answer never completes.
            ctx.registry
                .kill(conn.entry.id, CloseReason::Error(Side::Sluice, why));
            return std::future::pending().await;
        }
        TunnelRules::Killed => {
            return Err(Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Side::Sluice,
                "shutdown",
                "connection closed during a rule delay",
            ))
        }
    };
    let limits = route.limits(&ctx.config);
    let Route { host, port, .. } = route;
    if super::proxy_is_self(ctx, &host, port) {
        return Err(Failure::new(
            StatusCode::LOOP_DETECTED,
            Side::Client,
            "loop",
            format!("CONNECT {authority}: the rules send it to sluice itself ({host}:{port})"),
        ));
    }
    let cfg = &ctx.config;
    conn.entry.set_state(ConnState::WaitingUpstream);
    let connect_started = std::time::Instant::now();
    let connected = tokio::select! {
        r = connect_upstream_except(&host, port, &cfg.connector, &ctx.own_addrs) => r,
        _ = conn.entry.kill.cancelled() => {
            return Err(Failure::new(StatusCode::SERVICE_UNAVAILABLE, Side::Sluice, "shutdown", "sluice is shutting down"));
        }
    };
    let (upstream, addr) = match connected {
        Ok(c) => {
            ctx.metrics
                .upstream_connect_seconds
                .observe(connect_started.elapsed().as_secs_f64());
            c
        }
        Err(e) => {
            return Err(Failure::from_connect(&e));
        }
    };
    // From here the upstream socket is owned by the tunnel's guard.
    let guard = ctx.registry.register(Kind::Tunnel, Some(conn.peer));
    guard.entry().set_upstream(format!("{authority} ({addr})"));
    guard.entry().attach_socket(&upstream);
    guard.entry().set_user(user);
    guard.entry().set_rules(std::mem::take(rules));
    ctx.users.on_open(user);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let upgrade_deadline = cfg.client.header_timeout;
    tokio::spawn(async move {
        let entry = guard.entry().clone();
        let upstream: TcpStream = upstream;
        let upgraded = tokio::select! {
            r = tokio::time::timeout(upgrade_deadline, on_upgrade) => r,
            _ = entry.kill.cancelled() => return,
        };
        let upgraded = match upgraded {
            Ok(Ok(u)) => u,
            Ok(Err(e)) => {
                guard.set_reason(CloseReason::Error(
                    Side::Client,
                    format!("upgrade failed: {e}"),
                ));
                return;
            }
            Err(_) => {
                guard.set_reason(CloseReason::HeaderTimeout);
                return;
            }
        };
        let parts = match upgraded.downcast::<TokioIo<ClientIo>>() {
            Ok(p) => p,
            Err(_) => {
                guard.set_reason(CloseReason::Error(
                    Side::Sluice,
                    "upgraded stream of unexpected type".into(),
                ));
                return;
            }
        };
        let client: TcpStream = parts.io.into_inner().stream;
        entry.attach_socket(&client);
        // Bytes the client sent right behind the CONNECT head (a pipelined
        // TLS ClientHello) were read by hyper; they go first.
        if !parts.read_buf.is_empty() {
            let n = parts.read_buf.len() as u64;
            if let Err(e) = write_all(&upstream, &parts.read_buf).await {
                guard.set_reason(CloseReason::from_io(Side::Upstream, &e));
                return;
            }
            entry
                .bytes_up
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        relay(&client, &upstream, limits, &entry).await;
        drop((client, upstream));
        drop(guard);
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}
