//! What the rules decide for one CONNECT: open (along which route, how
//! fast), answer, close, or nothing because the connection was killed
//! during a `delay://`.

use http::StatusCode;

use super::super::answer::Failure;
use super::super::context::HttpContext;
use super::intercepted::TlsRule;
use crate::registry::{ConnEntry, Side};
use crate::relay::RelayLimits;
use crate::rules::{Block, Chosen, Intercept, Plan, Rate};

/// What the rules decided for one CONNECT, and why.
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
    /// What an `intercept://` or `passthrough://` rule said.
    pub tls: Option<TlsRule>,
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
                tls: None,
            }),
        };
    }
    let rules = serde_json::to_string(&super::super::tamper::notes(&plan)).unwrap_or_default();
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
    let tls = plan.intercept.map(|c| TlsRule {
        rule: c.rule.to_string(),
        intercept: c.action != Intercept::Passthrough,
        verify: c.action == Intercept::On,
    });
    TunnelRules::Open(Route {
        host,
        port,
        up_rate: rate(plan.req_throttle),
        down_rate: rate(plan.throttle),
        tls,
    })
}

/// 508 for a CONNECT that reaches sluice itself.
pub(super) fn loop_failure(message: String) -> Failure {
    Failure::new(StatusCode::LOOP_DETECTED, Side::Client, "loop", message)
}
