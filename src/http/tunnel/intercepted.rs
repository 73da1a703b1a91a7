//! A TLS tunnel: whether to intercept it (the rules' `intercept://` and
//! `passthrough://`, the fallback for clients that refused sluice's
//! certificate, `--intercept`), and, when intercepted, the decrypted
//! stream served by the one HTTP serving function over the tunnel's own
//! upstream TLS connection.
//!
//! Invariants: a tunnel that is not intercepted is relayed byte for byte
//! (nothing is read from it here); the tunnel's TLS state (intercepted,
//! passed through and why, refused and why) is set once on its entry,
//! where the inventory and the tunnel's record read it; a client that
//! shows it distrusts sluice's certificate has its host passed through
//! for `--tls-fallback`; a connection closed unused right after its
//! handshake is such a sign only when its client uses no other
//! intercepted connection to the host (a browser's spare is not).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::net::TcpStream;

use super::super::context::HttpContext;
use super::super::serve::HttpVersion;
use super::{serve_inside, Plain};
use crate::record::capture::UpstreamInfo;
use crate::registry::{CloseReason, ConnGuard, ConnState, Side};
use crate::tls::refusal::Refusal;
use crate::transport::ClientStream;
use crate::Shutdown;

/// What a rule said about a tunnel's TLS.
#[derive(Debug, Clone)]
pub(in crate::http) struct TlsRule {
    /// The rule, as records name it.
    pub rule: String,
    pub intercept: bool,
    /// `intercept://insecure`: false.
    pub verify: bool,
}

/// Intercept or pass through, and why.
pub(super) enum Policy {
    Intercept { verify: bool },
    Pass(PassWhy),
}

pub(super) enum PassWhy {
    /// A `passthrough://` rule.
    Rule(String),
    /// The client refused sluice's certificate for this host earlier.
    Fallback(&'static str),
    /// Neither a rule nor `--intercept` asks for it.
    NotSelected,
}

impl PassWhy {
    pub fn label(&self) -> &'static str {
        match self {
            PassWhy::Rule(_) => "rule",
            PassWhy::Fallback(_) => "fallback",
            PassWhy::NotSelected => "not_selected",
        }
    }
}

/// Decides one TLS tunnel: an explicit `passthrough://` first, then the
/// fallback (a pinned client keeps working even where a rule asks for
/// interception), then `intercept://`, then `--intercept`.
pub(super) fn policy(
    ctx: &HttpContext,
    rule: &Option<TlsRule>,
    client: IpAddr,
    host: &str,
    port: u16,
) -> Policy {
    if let Some(r) = rule.as_ref().filter(|r| !r.intercept) {
        return Policy::Pass(PassWhy::Rule(r.rule.clone()));
    }
    if let Some(reason) = ctx.tls.fallback.active(client, host) {
        return Policy::Pass(PassWhy::Fallback(reason));
    }
    if let Some(r) = rule {
        return Policy::Intercept { verify: r.verify };
    }
    if ctx.intercept.matches(host, port, client) {
        return Policy::Intercept { verify: true };
    }
    Policy::Pass(PassWhy::NotSelected)
}

/// The TLS state of a tunnel passed through, as its entry holds it.
pub(super) fn passthrough_state(why: &PassWhy) -> String {
    let reason = match why {
        PassWhy::Rule(rule) => format!("rule {rule} (passthrough://)"),
        PassWhy::Fallback(refusal) => format!(
            "the client refused sluice's certificate for this host earlier ({refusal}); \
             passed through for --tls-fallback"
        ),
        PassWhy::NotSelected => {
            "not selected for interception (--intercept, intercept:// rules)".to_string()
        }
    };
    json!({"state": "passthrough", "why": why.label(), "reason": reason}).to_string()
}

/// Closes within this time of the handshake, without a request, say the
/// client rejected what it saw (pinning checked after the handshake),
/// unless the client uses another connection to the host ([`spare`]).
const PIN_CLOSE_WINDOW: Duration = Duration::from_secs(3);

/// How long a quiet close waits for its client's other connection to the
/// host to show a request before it counts as a refusal.
const SPARE_GRACE: Duration = Duration::from_millis(500);

/// Whether a connection that closed without a request was a spare: its
/// client sends requests to the host over another intercepted connection
/// (one open now, or closed lately), so it trusts sluice's certificate.
/// A browser opens two connections at once and closes the one it does
/// not need as soon as the other is ready, which can be a moment before
/// sluice has read the first request on that other one: hence the grace.
async fn spare(ctx: &HttpContext, client: IpAddr, host: &str) -> bool {
    let deadline = Instant::now() + SPARE_GRACE;
    loop {
        if ctx.tls.fallback.vouched(client, host) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Intercepts the tunnel and serves what it carries as HTTPS.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    client: ClientStream,
    upstream: TcpStream,
    verify: bool,
    authority: http::uri::Authority,
    info: UpstreamInfo,
    guard: &ConnGuard,
    peer: SocketAddr,
    ctx: &Arc<HttpContext>,
    shutdown: &Shutdown,
) {
    let entry = guard.entry().clone();
    let host = authority.host().to_string();
    entry.set_state(ConnState::WaitingUpstream);
    let intercepted = tokio::select! {
        r = ctx.tls.intercept(client, upstream, &host, peer.ip(), verify) => r,
        _ = entry.kill.cancelled() => {
            guard.set_reason(entry.reason().unwrap_or(CloseReason::KilledByAdmin));
            return;
        }
    };
    let decrypted = match intercepted {
        Ok(d) => d,
        Err(refused) => {
            refuse(
                ctx,
                guard,
                peer.ip(),
                &host,
                refused.refusal,
                refused.message,
            );
            return;
        }
    };
    let tls = &decrypted.info;
    let outcome = if tls.upstream_error.is_some() {
        "upstream_failed"
    } else {
        "intercepted"
    };
    ctx.metrics
        .count_tls(outcome, if decrypted.client_h2 { "h2" } else { "http1" });
    entry.set_tls(
        json!({
            "state": "intercepted",
            "sni": tls.sni,
            "client_alpn": tls.client_alpn,
            "upstream_alpn": tls.upstream_alpn,
            "version": tls.client_version,
            "verified": tls.verified,
            "upstream_error": tls.upstream_error,
        })
        .to_string(),
    );
    let info = UpstreamInfo {
        tls: Some(decrypted.info.clone()),
        ..info
    };
    let version = if decrypted.client_h2 {
        HttpVersion::H2
    } else {
        HttpVersion::H1
    };
    let (upstream, upstream_h2) = match decrypted.upstream {
        Ok((s, h2)) => (Ok(s), h2),
        Err(why) => (Err(why), false),
    };
    let inside = Plain {
        upstream,
        upstream_h2,
        scheme: http::uri::Scheme::HTTPS,
    };
    let handshaken = Instant::now();
    let serving = ctx.tls.fallback.serving(peer.ip(), &host, &entry);
    serve_inside(
        decrypted.client,
        inside,
        version,
        authority,
        info,
        guard,
        peer,
        ctx,
        shutdown,
    )
    .await;
    let quiet = entry.requests.load(Ordering::Relaxed) == 0;
    let closed = matches!(
        entry.reason(),
        None | Some(CloseReason::Eof | CloseReason::Reset(_))
    );
    if quiet
        && closed
        && handshaken.elapsed() < PIN_CLOSE_WINDOW
        && !spare(ctx, peer.ip(), &host).await
    {
        let refusal = Refusal::ClosedAfterHandshake;
        let message = refusal.explain(peer.ip(), &host, &ctx.tls.ca_url, "");
        refuse(ctx, guard, peer.ip(), &host, refusal, message);
    }
    drop(serving);
}

/// A client that did not accept (or use) sluice's certificate: counted,
/// recorded with a sentence a person can act on, and, when it says the
/// client distrusts the certificate, its host passed through for a while.
fn refuse(
    ctx: &HttpContext,
    guard: &ConnGuard,
    client: IpAddr,
    host: &str,
    refusal: Refusal,
    message: String,
) {
    ctx.metrics.count_tls("client_refused", refusal.label());
    let fallback = refusal.distrusts() && ctx.config.tls.fallback.is_some();
    if fallback {
        ctx.tls.fallback.add(client, host, refusal.label());
    }
    tracing::info!(%client, host, reason = refusal.label(), fallback, "{message}");
    guard.entry().set_tls(
        json!({
            "state": "refused",
            "why": refusal.label(),
            "reason": message,
            "fallback": fallback,
        })
        .to_string(),
    );
    guard.set_reason(CloseReason::Error(Side::Client, message));
}
