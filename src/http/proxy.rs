//! The request path: one absolute-form HTTP request (from the proxy
//! listener, or made absolute inside a tunnel) through named phases —
//! request rules → target → upstream request → response rules → body —
//! each a function of its inputs, with what happens told to the exchange
//! observers ([`super::observe`]: recording, metrics, per-user accounting).
//!
//! Invariants: bodies stream frame by frame in both directions; hop-by-hop
//! headers never cross; every wait has a deadline (connect in the
//! connector, response head here, bodies in [`MeteredBody`]); every failure
//! becomes an answer that names the failing side.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::activity::InflightGuard;
use super::answer::{Failure, ProxyBody};
use super::body::{BodyError, BoxError, Direction, MeteredBody};
use super::context::{ConnCtx, HttpContext};
use super::headers::{
    add_via, normalize_transfer_encoding, strip_hop_by_hop, strip_hop_by_hop_upgrading,
    UnsupportedCoding,
};
use super::observe::{ExchangeObserver, Observers};
use super::tamper;
use super::throttle::ThrottledBody;
use super::websocket;
use crate::net::ConnectError;
use crate::record::capture::UpstreamInfo;
use crate::registry::{CloseReason, ConnState, Side};
use crate::relay::RelayLimits;
use crate::rules::{apply_header_edits, rewrite_uri, Answer, Plan, RequestInfo, Scheme, MAX_BODY};
use crate::users::auth::Verdict;
use tokio::time::Instant;

/// The connection is to be dropped without an answer (`block://close`,
/// or a client that left while its request waited): the service fails,
/// so hyper drops the connection, and the close is logged with `reason`.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct CloseConnection {
    pub reason: CloseReason,
}

/// How forwarding stops short of relaying the upstream's response.
#[derive(Debug)]
enum Stop {
    /// sluice answers the client itself.
    Answer(Failure),
    /// No answer: the connection closes, and the record says why.
    Close { reason: CloseReason, record: String },
}

impl From<Failure> for Stop {
    fn from(f: Failure) -> Stop {
        Stop::Answer(f)
    }
}

/// Answers one request on a client connection (`Err`: close it unanswered).
pub async fn handle(
    mut req: Request<Incoming>,
    ctx: Arc<HttpContext>,
    conn: ConnCtx,
) -> Result<Response<ProxyBody>, CloseConnection> {
    let started = Instant::now();
    // RFC 9110 4.2.4: userinfo in an http URL is deprecated and a
    // credential; it is neither forwarded (as part of Host) nor recorded.
    let mut had_userinfo = false;
    if let Some(uri) = without_userinfo(req.uri()) {
        *req.uri_mut() = uri;
        had_userinfo = true;
    }
    // Inside a tunnel, requests in origin form are for the tunnel's host.
    if let Some(uri) = conn.origin.absolute(req.uri()) {
        *req.uri_mut() = uri;
    }
    let mut inflight = conn.activity.begin_request();
    // An HTTP/2 client's WebSocket (RFC 8441), made the upgrade the origin
    // is asked with before anything reads the method.
    let extended = websocket::h2::extended_connect(&mut req);
    if extended.is_none()
        && req.method() == Method::CONNECT
        && !conn.activity.take_ambiguous_framing()
    {
        // The one tunnel path counts, records and answers it; the
        // connection stays busy while the tunnel opens.
        let resp = super::tunnel::upgrade::handle(req, &ctx, &conn).await;
        drop(inflight);
        return Ok(resp);
    }
    conn.entry.requests.fetch_add(1, Ordering::Relaxed);
    // The client connection's side of a WebSocket switch, claimed before
    // the request is taken apart.
    let (upgrade, refused) = match extended {
        Some(Ok(switch)) => (Some(switch), None),
        Some(Err(f)) => (None, Some(f)),
        None => (
            websocket::asks(&req).then(|| websocket::Switch::http1(&mut req)),
            None,
        ),
    };
    if upgrade.is_some() {
        // A client may name the WebSocket URL itself (`GET ws://host/`).
        if let Some(uri) = websocket::http_url(req.uri()) {
            *req.uri_mut() = uri;
        }
    }
    let method = req.method().clone();
    let exchange = ctx.recorder.begin_http(
        conn.entry.id,
        conn.peer_label.clone(),
        &method,
        req.uri(),
        req.version(),
    );
    if let (Some(x), Some(tls)) = (&exchange, conn.origin.tls_json()) {
        // Every exchange of an intercepted tunnel carries its TLS facts,
        // sluice's own answers (a 502 for a failed upstream) included.
        x.set_tls(tls);
    }
    let obs = Observers::new(
        exchange,
        ctx.metrics.clone(),
        ctx.users.clone(),
        method.clone(),
        started,
    );
    if had_userinfo {
        obs.note("userinfo", "credentials in the request URL (user:password@) were removed; they are neither forwarded nor recorded");
    }
    if let Some(f) = refused {
        obs.request_head(req.headers());
        return Ok(answer(&obs, f));
    }
    if method == Method::CONNECT || conn.activity.take_ambiguous_framing() {
        // RFC 9112 6.1: a head with both framings is how requests get
        // smuggled; refuse it and close.
        let f = Failure::bad_request("request has both Content-Length and Transfer-Encoding");
        return Ok(answer(&obs, f));
    }
    let user = match identify(&req, &ctx, &conn).await {
        Ok(u) => u,
        Err(resp) => {
            obs.request_head(req.headers());
            let status = resp.status().as_u16();
            obs.answered(
                status,
                resp.headers(),
                Some("proxy authentication failed"),
                None,
            );
            obs.finished(status);
            return Ok(*resp);
        }
    };
    obs.identified(&user, ctx.auth.is_some());
    inflight.observe_total(started, ctx.metrics.request_seconds.clone());
    match forward(req, upgrade, &ctx, &conn, inflight, &obs).await {
        Ok(resp) => {
            obs.finished(resp.status().as_u16());
            Ok(resp)
        }
        Err(Stop::Close { reason, record }) => {
            obs.failed(&record);
            obs.finished(0);
            Err(CloseConnection { reason })
        }
        Err(Stop::Answer(f)) => {
            tracing::debug!(code = f.code, message = %f.message, "request failed");
            conn.entry.set_state(ConnState::ReadingHeaders);
            Ok(answer(&obs, f))
        }
    }
}

/// sluice's own answer to a request (a failure), told to the observers.
fn answer(obs: &Observers, f: Failure) -> Response<ProxyBody> {
    let message = f.message.clone();
    let text = bytes::Bytes::from(f.body_text());
    let resp = f.into_response();
    let status = resp.status().as_u16();
    obs.answered(status, resp.headers(), Some(&message), Some(&text));
    obs.finished(status);
    resp
}

/// Who this request is accounted to: the authenticated user, or the client
/// IP. With `--auth`, a request without valid credentials gets 407.
async fn identify(
    req: &Request<Incoming>,
    ctx: &HttpContext,
    conn: &ConnCtx,
) -> Result<String, Box<Response<ProxyBody>>> {
    let user = match &ctx.auth {
        None => conn.peer.ip().to_string(),
        Some(auth) => match auth
            .check(req.headers().get(header::PROXY_AUTHORIZATION))
            .await
        {
            Verdict::User(name) => name,
            verdict => {
                let why = verdict.reason();
                let mut resp =
                    Failure::new(verdict.status(), Side::Client, "auth", why).into_response();
                resp.headers_mut().insert(
                    header::PROXY_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"sluice\""),
                );
                return Err(Box::new(resp));
            }
        },
    };
    if conn.entry.set_user(user.clone()) {
        ctx.users.on_open(&user);
    }
    Ok(user)
}

/// Waits `d` (a rule's delay), or fails when the connection is killed.
async fn rule_sleep(d: std::time::Duration, conn: &ConnCtx) -> Result<(), Failure> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = conn.entry.kill.cancelled() => Err(Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Side::Sluice,
            "shutdown",
            "sluice is shutting down",
        )),
    }
}

/// The request's rules, decided once per exchange from one snapshot.
struct Rules<'s> {
    plan: Option<Plan<'s>>,
    /// What the record says about them (updated as actions apply).
    notes: Vec<tamper::Note>,
    /// The client's own request headers, for CORS (`Origin`).
    client_headers: http::HeaderMap,
}

/// Where the request goes after the rules.
struct Target {
    authority: http::uri::Authority,
    /// `host:port` as failures name it.
    label: String,
    /// The rule that chose the upstream (`upstream://`), named in failures.
    mapped_by: Option<String>,
}

/// What the request-rules phase decided.
// Returned once per request and taken apart at once: boxing the large
// variant would cost an allocation on every forwarded request.
#[allow(clippy::large_enum_variant)]
enum Requested<'s> {
    /// A rule answered (mock, block, redirect, CORS preflight).
    Answered(Response<ProxyBody>),
    Forward(Rules<'s>, http::uri::Authority),
}

/// The response body as the response-rules phase leaves it.
enum Relayed {
    /// The upstream's body, untouched.
    Upstream(Incoming),
    /// Rewritten (or read whole and kept) by body rules.
    Rewritten(ProxyBody),
}

/// The phases of one forwarded exchange: request rules → target →
/// upstream request → response rules → body. Each is a function of its
/// inputs; what happens is told to `obs`.
async fn forward(
    req: Request<Incoming>,
    upgrade: Option<websocket::Switch>,
    ctx: &HttpContext,
    conn: &ConnCtx,
    inflight: InflightGuard,
    obs: &Observers,
) -> Result<Response<ProxyBody>, Stop> {
    let (mut parts, body) = req.into_parts();
    if parts.uri.host().is_some_and(crate::tls::is_trust_host) {
        return own_name(&parts, ctx, obs);
    }
    let authority = target_of(&parts.uri, ctx, conn).inspect_err(|_| {
        // Refused before leaving: the record shows what the client sent.
        obs.request_head(&parts.headers);
    })?;
    // One snapshot of the rules for the whole exchange.
    let snapshot = ctx.rules.current();
    let (mut rules, authority) =
        match request_rules(&mut parts, authority, &snapshot.set, ctx, conn, obs).await? {
            Requested::Answered(resp) => return Ok(resp),
            Requested::Forward(rules, authority) => (rules, authority),
        };
    let target = target(&mut parts, authority, &rules, ctx, upgrade.is_some())?;
    if let (Some(_), Some(p)) = (&upgrade, &rules.plan) {
        if websocket::refuse_extensions(&mut parts.headers, p.ws_drop.is_some(), p.ws_sub.is_some())
        {
            obs.note("websocket-extensions", websocket::NO_EXTENSIONS_NOTE);
        }
    }
    obs.request_head(&parts.headers);
    let bridged = upgrade.as_ref().is_some_and(|u| u.bridge.is_some());
    if upgrade.is_some() && !bridged {
        // The bridge's upstream is a connection of its own: the tunnel's
        // is not taken over.
        conn.takeover.expect();
    }
    let resp = match upstream_request(parts, body, &rules, &target, ctx, conn, obs).await {
        Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let relayed = switched(resp, upgrade, &rules, &target, ctx, conn, inflight, obs);
            if relayed.is_err() {
                conn.takeover.settle();
            }
            return relayed;
        }
        Ok(resp) if bridged && resp.status().is_success() => {
            return Err(websocket::h2::not_switched(resp.status(), &target.label).into());
        }
        other => {
            if upgrade.is_some() {
                conn.takeover.settle();
            }
            other?
        }
    };
    let (parts, body) = response_rules(resp, &mut rules, conn, &ctx.config, obs).await?;
    Ok(body_phase(
        parts,
        body,
        &rules,
        conn,
        &ctx.config,
        inflight,
        obs,
    ))
}

/// A request for sluice's own name (`http://sluice.invalid/`): the CA's
/// trust page and certificate, answered here and recorded like a rule's
/// answer. It comes before the rules, so no rule can hide or change the
/// page, and is never forwarded (`.invalid` resolves nowhere).
fn own_name(
    parts: &http::request::Parts,
    ctx: &HttpContext,
    obs: &Observers,
) -> Result<Response<ProxyBody>, Stop> {
    obs.request_head(&parts.headers);
    obs.note(
        "trust",
        "answered by sluice itself: sluice.invalid serves its CA's trust page and certificate",
    );
    let a = super::answer::trust(&parts.method, parts.uri.path(), ctx.tls.leaves.ca())?;
    obs.request_sent();
    let sent = (parts.method != Method::HEAD).then_some(&a.body);
    obs.answered(StatusCode::OK.as_u16(), &a.headers, None, sent);
    Ok(a.into_response(super::answer::full))
}

/// Request rules: plan, `delay`, the rules that answer themselves, and
/// `url://` rewrites (which change the target).
async fn request_rules<'s>(
    parts: &mut http::request::Parts,
    mut authority: http::uri::Authority,
    set: &'s crate::rules::RuleSet,
    ctx: &HttpContext,
    conn: &ConnCtx,
    obs: &Observers,
) -> Result<Requested<'s>, Stop> {
    let plan = if set.is_empty() {
        None
    } else {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let info = RequestInfo {
            method: parts.method.as_str(),
            scheme: Scheme::Http,
            host: authority.host(),
            port: authority.port_u16().unwrap_or(default_port_of(&parts.uri)),
            path_and_query: pq,
            client: conn.peer.ip(),
        };
        Some(set.plan(&info)).filter(|p| !p.is_empty())
    };
    let Some(p) = plan else {
        let rules = Rules {
            plan: None,
            notes: Vec::new(),
            client_headers: http::HeaderMap::new(),
        };
        return Ok(Requested::Forward(rules, authority));
    };
    let mut notes = tamper::notes(&p);
    obs.rules(&notes);
    let client_headers = if p.cors.is_some() {
        parts.headers.clone()
    } else {
        http::HeaderMap::new()
    };
    if let Some(d) = p.delay {
        rule_sleep(d.action, conn).await?;
    }
    let preflight = tamper::is_preflight(&parts.method, &parts.headers);
    if let Some(a) = p.answer(preflight) {
        obs.request_head(&parts.headers);
        let Some((mut head, mut bytes)) = tamper::answer(a, &parts.headers) else {
            let why = format!(
                "connection closed by rule {}",
                p.block.map(|b| b.rule.to_string()).unwrap_or_default()
            );
            return Err(Stop::Close {
                reason: CloseReason::Error(Side::Sluice, why.clone()),
                record: why,
            });
        };
        let mock = matches!(a, Answer::Mock(_));
        if mock {
            tamper::edit_response_head(&p, &client_headers, &mut head);
            if p.body_sub.is_some() {
                match tamper::rewrite_body(&p, &http::HeaderMap::new(), bytes.clone()) {
                    Ok(b) => bytes = b,
                    Err(why) => tamper::add_note(&mut notes, "bodySub", why),
                }
                tamper::set_identity_length(&mut head.headers, bytes.len());
                obs.rules(&notes);
            }
        }
        obs.request_sent();
        obs.answered(head.status.as_u16(), &head.headers, None, Some(&bytes));
        if mock {
            if let Some(d) = p.res_delay {
                rule_sleep(d.action, conn).await?;
            }
            if let Some(t) = p.throttle {
                let b = ThrottledBody::new(tamper::full(bytes), t.action.bytes_per_sec());
                return Ok(Requested::Answered(Response::from_parts(
                    head,
                    b.boxed_unsync(),
                )));
            }
        }
        return Ok(Requested::Answered(Response::from_parts(
            head,
            tamper::full(bytes),
        )));
    }
    if let Some(u) = &p.url {
        let uri = rewrite_uri(&parts.uri, &u.action)
            .map(|uri| without_userinfo(&uri).unwrap_or(uri))
            .map_err(|e| {
                Failure::new(
                    StatusCode::BAD_GATEWAY,
                    Side::Sluice,
                    "rule-url",
                    format!("rule {}: {e}", u.rule),
                )
            })?;
        authority = target_of(&uri, ctx, conn).map_err(|f| {
            if f.status == StatusCode::LOOP_DETECTED {
                return f;
            }
            Failure::new(
                StatusCode::BAD_GATEWAY,
                Side::Sluice,
                "rule-url",
                format!("rule {} rewrote the URL to {uri}: {}", u.rule, f.message),
            )
        })?;
        parts.uri = uri;
    }
    let rules = Rules {
        plan: Some(p),
        notes,
        client_headers,
    };
    Ok(Requested::Forward(rules, authority))
}

/// Target: the request as it leaves — hop-by-hop headers dropped, the
/// transfer coding checked, sluice's admin cookie removed, `Via` and
/// `Host` set, the rules' `upstream://` and header edits applied.
fn target(
    parts: &mut http::request::Parts,
    authority: http::uri::Authority,
    rules: &Rules<'_>,
    ctx: &HttpContext,
    upgrading: bool,
) -> Result<Target, Stop> {
    strip_hop_by_hop(&mut parts.headers);
    if let Err(UnsupportedCoding(coding)) = normalize_transfer_encoding(&mut parts.headers) {
        return Err(Failure::new(
            StatusCode::NOT_IMPLEMENTED,
            Side::Client,
            "transfer-coding",
            format!("request transfer coding `{coding}` is not supported (only chunked)"),
        )
        .into());
    }
    crate::record::redact::strip_admin_cookie(&mut parts.headers);
    add_via(&mut parts.headers, parts.version);
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        parts.headers.insert(header::HOST, host);
    }
    let mut target = Target {
        label: authority.to_string(),
        authority,
        mapped_by: None,
    };
    if let Some(p) = &rules.plan {
        if let Some(up) = p.upstream {
            // Connect elsewhere; the Host header (set above) stays.
            let port = up.action.port_or(
                target
                    .authority
                    .port_u16()
                    .unwrap_or(default_port_of(&parts.uri)),
            );
            let host = if up.action.host.contains(':') {
                format!("[{}]", up.action.host)
            } else {
                up.action.host.clone()
            };
            let mapped = format!("{host}:{port}");
            if super::context::proxy_is_self(ctx, &host, port) {
                return Err(Failure::new(
                    StatusCode::LOOP_DETECTED,
                    Side::Client,
                    "loop",
                    format!(
                        "rule {} maps the request to {mapped}, which is sluice itself",
                        up.rule
                    ),
                )
                .into());
            }
            let bad = |e: &dyn std::fmt::Display| {
                Failure::new(
                    StatusCode::BAD_GATEWAY,
                    Side::Sluice,
                    "rule-upstream",
                    format!("rule {}: upstream {mapped}: {e}", up.rule),
                )
            };
            let mut uri_parts = parts.uri.clone().into_parts();
            uri_parts.authority = Some(mapped.parse().map_err(|e| bad(&e))?);
            parts.uri = http::Uri::from_parts(uri_parts).map_err(|e| bad(&e))?;
            target.label = mapped;
            target.mapped_by = Some(up.rule.to_string());
        }
        apply_header_edits(&mut parts.headers, p.req_headers.iter().map(|c| c.action));
    }
    if upgrading {
        // After the rules' edits: the switch crosses whatever they did,
        // and nothing else hop-by-hop does.
        strip_hop_by_hop_upgrading(&mut parts.headers);
    }
    parts.version = Version::HTTP_11;
    Ok(target)
}

/// Upstream request: the body throttled, metered and tapped; sent over
/// the tunnel's own connection or the pool; raced against the response
/// deadline, the connection's kill and the client leaving.
async fn upstream_request(
    parts: http::request::Parts,
    body: Incoming,
    rules: &Rules<'_>,
    target: &Target,
    ctx: &HttpContext,
    conn: &ConnCtx,
    obs: &Observers,
) -> Result<Response<Incoming>, Stop> {
    let cfg = &ctx.config;
    let body = match rules.plan.as_ref().and_then(|p| p.req_throttle) {
        Some(t) => ThrottledBody::new(body, t.action.bytes_per_sec()),
        None => ThrottledBody::unlimited(body),
    };
    let body = MeteredBody::new(
        body,
        conn.entry.clone(),
        Direction::Up,
        Side::Client,
        cfg.client.body_idle_timeout,
        None,
    )
    .with_tap(obs.tap());
    let upstream_req = Request::from_parts(parts, body);
    if http_body::Body::is_end_stream(upstream_req.body()) {
        // No body: the request is sent once its head is written, which
        // happens as soon as a connection is ready (see response_head).
        obs.request_sent();
    }
    conn.entry.set_state(ConnState::WaitingUpstream);
    // Inside a tunnel, a request for the tunnel's own host goes over the
    // tunnel's upstream connection; anything else through the pool.
    let pinned = conn
        .origin
        .pinned_for(&target.authority, target.mapped_by.is_some());
    if pinned.is_none() && parts_scheme_is_https(&upstream_req) {
        return Err(Failure::new(
            StatusCode::BAD_GATEWAY,
            Side::Sluice,
            "https-elsewhere",
            format!(
                "{} is https:// to another host than the intercepted tunnel's: sluice sends \
                 https:// only over the tunnel's own connection (rewrite it to http://, or \
                 map the CONNECT with upstream:// instead)",
                target.label
            ),
        )
        .into());
    }
    let own_connection = upstream_req
        .extensions()
        .get::<websocket::h2::OwnConnection>()
        .is_some();
    let send = async {
        match pinned {
            // Boxed: a rare path whose future (a connect and two
            // handshakes) would otherwise make every request's future,
            // and each of its moves, that much larger.
            Some(inside) if own_connection => {
                Box::pin(websocket::h2::send(inside, ctx, &conn.entry, upstream_req)).await
            }
            Some(inside) => {
                let mut resp = inside.upstream.send(upstream_req).await?;
                resp.extensions_mut().insert(inside.info.clone());
                Ok(resp)
            }
            None => ctx
                .client
                .request(upstream_req)
                .await
                .map_err(BoxError::from),
        }
    };
    let label = &target.label;
    let sent = tokio::select! {
        r = tokio::time::timeout(cfg.connector.response_timeout, send) => r,
        _ = conn.entry.kill.cancelled() => {
            return Err(Failure::new(StatusCode::SERVICE_UNAVAILABLE, Side::Sluice, "shutdown", "sluice is shutting down").into());
        }
        // Dropping the request future cancels the upstream request (hyper
        // closes that connection) and failing the service closes the client.
        _ = super::departure::client_left(conn.client_fd) => {
            return Err(Stop::Close {
                reason: CloseReason::Eof,
                record: format!(
                    "the client closed the connection while waiting for {label}'s response; the upstream request was cancelled"
                ),
            });
        }
    };
    match sent {
        Ok(Ok(resp)) => {
            conn.entry.set_state(ConnState::Streaming);
            Ok(resp)
        }
        Ok(Err(e)) => {
            let mut f = classify(&*e, label);
            if let Some(rule) = &target.mapped_by {
                f.message
                    .push_str(&format!(" (upstream {label} set by rule {rule})"));
            }
            Err(f.into())
        }
        Err(_) => Err(Failure::new(
            StatusCode::GATEWAY_TIMEOUT,
            Side::Upstream,
            "response-timeout",
            format!(
                "upstream {label} sent no response head within {}",
                humantime::format_duration(cfg.connector.response_timeout)
            ),
        )
        .into()),
    }
}

/// Response rules: hop-by-hop headers dropped and `Via` added, then the
/// rules' head edits, body rewrites (bounded) and `resDelay`; the head as
/// relayed is told to the observers.
async fn response_rules(
    resp: Response<Incoming>,
    rules: &mut Rules<'_>,
    conn: &ConnCtx,
    cfg: &crate::config::Config,
    obs: &Observers,
) -> Result<(http::response::Parts, Relayed), Stop> {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers, parts.version);
    let tell = |parts: &http::response::Parts, length: Option<u64>| {
        obs.response_head(
            parts.status.as_u16(),
            &parts.headers,
            length,
            parts.extensions.get::<UpstreamInfo>(),
        );
    };
    let Some(p) = &rules.plan else {
        tell(&parts, http_body::Body::size_hint(&body).exact());
        return Ok((parts, Relayed::Upstream(body)));
    };
    tamper::edit_response_head(p, &rules.client_headers, &mut parts);
    let notes = &mut rules.notes;
    let body = if tamper::edits_body(p) {
        // Read the upstream body (under the idle deadline, but untapped
        // and uncounted: the record and the byte counters keep what the
        // client gets), then rewrite it.
        let upstream_body = MeteredBody::new(
            body,
            conn.entry.clone(),
            Direction::Down,
            Side::Upstream,
            cfg.client.body_idle_timeout,
            None,
        )
        .uncounted();
        match tamper::collect_capped(upstream_body, MAX_BODY).await {
            Ok(whole) => match tamper::rewrite_body(p, &parts.headers, whole.clone()) {
                Ok(new) => {
                    tamper::set_identity_length(&mut parts.headers, new.len());
                    tamper::full(new)
                }
                Err(why) => {
                    tamper::add_note(notes, "bodySub", why);
                    tamper::full(whole)
                }
            },
            Err(rest) => {
                let why = format!(
                    "body rules skipped: the body is over the {MAX_BODY}-byte limit or failed"
                );
                if p.body_sub.is_some() {
                    tamper::add_note(notes, "bodySub", why.clone());
                }
                tamper::add_note(notes, "mock/body", why);
                rest.boxed_unsync()
            }
        }
    } else {
        body.map_err(BoxError::from).boxed_unsync()
    };
    obs.rules(notes);
    tell(&parts, http_body::Body::size_hint(&body).exact());
    if let Some(d) = p.res_delay {
        rule_sleep(d.action, conn).await?;
    }
    Ok((parts, Relayed::Rewritten(body)))
}

/// A 101 from the upstream: relayed when the request asked for WebSocket
/// and the upstream switched to it, with the switch's headers kept, the
/// rules' head edits applied and the relay left for the connection's
/// watchdog ([`websocket::take_over`]); anything else is answered 502.
/// Nothing here waits: a tunnel's upstream connection has already handed
/// itself over, and the client's 101 must follow.
#[allow(clippy::too_many_arguments)]
fn switched(
    mut resp: Response<Incoming>,
    upgrade: Option<websocket::Switch>,
    rules: &Rules<'_>,
    target: &Target,
    ctx: &HttpContext,
    conn: &ConnCtx,
    mut inflight: InflightGuard,
    obs: &Observers,
) -> Result<Response<ProxyBody>, Stop> {
    let client = websocket::accept_switch(&resp, upgrade, &target.label)?;
    let seat = resp.extensions_mut().remove::<websocket::h2::BridgeSeat>();
    let upstream = hyper::upgrade::on(&mut resp);
    let (mut parts, _empty) = resp.into_parts();
    add_via(&mut parts.headers, parts.version);
    if let Some(p) = &rules.plan {
        tamper::edit_response_head(p, &rules.client_headers, &mut parts);
    }
    strip_hop_by_hop_upgrading(&mut parts.headers);
    // Sizes 0: the record is the switch; what follows is not HTTP.
    obs.response_head(
        parts.status.as_u16(),
        &parts.headers,
        Some(0),
        parts.extensions.get::<UpstreamInfo>(),
    );
    obs.note("websocket", websocket::NOTE);
    if let Some(b) = &client.bridge {
        obs.note("websocket-h2", websocket::h2::NOTE);
        b.answer(&mut parts);
    }
    inflight.observe_now();
    // The record is the switch: stored now, its messages follow under
    // its id (nothing of the exchange is pending while the socket lives).
    let log = obs.tap().and_then(|x| x.submit_now()).map(|(id, started)| {
        Arc::new(websocket::MessageLog::new(
            ctx.recorder.clone(),
            id,
            started,
        ))
    });
    // throttle:// paces the messages each way as it paces bodies.
    let rate = |r: Option<&crate::rules::Chosen<&crate::rules::Rate>>| {
        r.map_or(0, |c| c.action.bytes_per_sec())
    };
    let mut limits = RelayLimits::new(&ctx.config.relay_limits);
    if let Some(p) = &rules.plan {
        limits.up_rate = rate(p.req_throttle.as_ref());
        limits.down_rate = rate(p.throttle.as_ref());
    }
    let (drop, sub) = rules.plan.as_ref().map_or((None, None), |p| {
        (p.ws_drop.map(|c| c.action), p.ws_sub.map(|c| c.action))
    });
    let carry = websocket::Carry {
        rewrite: (
            websocket::Rewrite::new(true, drop, sub),
            websocket::Rewrite::new(false, drop, sub),
        ),
        entry: conn.entry.clone(),
        limits,
        handover: ctx.config.client.header_timeout,
        busy: inflight,
        log,
        deflate: websocket::deflate_agreed(&parts.headers),
        seat,
    };
    websocket::take_over(&conn.takeover, client, upstream, carry);
    Ok(Response::from_parts(parts, super::answer::empty()))
}

/// Body: the response body as the client gets it — counted, tapped for
/// the record, under the body idle deadline, paced by `throttle://`,
/// releasing the connection's in-flight mark at its end.
fn body_phase(
    parts: http::response::Parts,
    body: Relayed,
    rules: &Rules<'_>,
    conn: &ConnCtx,
    cfg: &crate::config::Config,
    inflight: InflightGuard,
    obs: &Observers,
) -> Response<ProxyBody> {
    let rate = rules
        .plan
        .as_ref()
        .and_then(|p| p.throttle)
        .map(|t| t.action.bytes_per_sec());
    let tap = obs.tap();
    let body = match body {
        Relayed::Upstream(b) => paced(downstream(b, conn, cfg, inflight, tap), rate),
        Relayed::Rewritten(b) => paced(downstream(b, conn, cfg, inflight, tap), rate),
    };
    Response::from_parts(parts, body)
}

/// `uri` without its userinfo (`user:pass@`), or `None` when it has none.
fn without_userinfo(uri: &http::Uri) -> Option<http::Uri> {
    let authority = uri.authority()?;
    let (_, host) = authority.as_str().rsplit_once('@')?;
    let mut parts = uri.clone().into_parts();
    match host.parse() {
        Ok(a) => parts.authority = Some(a),
        // Nothing after the `@`: keep only the path, and the request is
        // refused as having no host.
        Err(_) => {
            parts.authority = None;
            parts.scheme = None;
        }
    }
    http::Uri::from_parts(parts).ok()
}

/// The origin a request is for, or why it cannot be forwarded. An
/// `https://` URL is served only where sluice decrypted it (inside an
/// intercepted tunnel); on the proxy port it must come through CONNECT.
fn target_of(
    uri: &http::Uri,
    ctx: &HttpContext,
    conn: &ConnCtx,
) -> Result<http::uri::Authority, Failure> {
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") if conn.origin.is_tls() => {}
        Some("https") => {
            return Err(Failure::bad_request(
                "https:// URLs must be tunnelled with CONNECT through this proxy",
            ))
        }
        Some(other) => {
            return Err(Failure::bad_request(format!(
                "unsupported URL scheme `{other}`"
            )))
        }
        None => {
            return Err(Failure::bad_request(
                "sluice is a forward proxy: send requests in absolute form (GET http://host/path)",
            ))
        }
    }
    let Some(authority) = uri.authority().cloned().filter(|a| !a.host().is_empty()) else {
        return Err(Failure::bad_request("request URL has no host"));
    };
    let port = authority.port_u16().unwrap_or(default_port_of(uri));
    if super::context::proxy_is_self(ctx, authority.host(), port) {
        return Err(Failure::new(
            StatusCode::LOOP_DETECTED,
            Side::Client,
            "loop",
            format!("request for {authority} is addressed to sluice itself"),
        ));
    }
    Ok(authority)
}

fn parts_scheme_is_https<B>(req: &Request<B>) -> bool {
    req.uri().scheme() == Some(&http::uri::Scheme::HTTPS)
}

/// The port a URL means when it names none: 443 for `https`, else 80.
fn default_port_of(uri: &http::Uri) -> u16 {
    super::origin::default_port(uri.scheme().unwrap_or(&http::uri::Scheme::HTTP))
}

/// Turns a client error into an answer that says who failed and why.
fn classify(err: &(dyn std::error::Error + 'static), target: &str) -> Failure {
    let chain = error_chain(err);
    let mut src = Some(err);
    while let Some(e) = src {
        if let Some(ce) = e.downcast_ref::<ConnectError>() {
            return Failure::from_connect(ce);
        }
        if let Some(tls) = e.downcast_ref::<super::origin::UpstreamTlsFailed>() {
            return Failure::new(
                StatusCode::BAD_GATEWAY,
                Side::Upstream,
                "upstream-tls",
                tls.0.clone(),
            );
        }
        if let Some(be) = e.downcast_ref::<BodyError>() {
            if be.side == Side::Client {
                let status = if be.idle.is_some() {
                    StatusCode::REQUEST_TIMEOUT
                } else {
                    StatusCode::BAD_REQUEST
                };
                return Failure::new(status, Side::Client, "bad-request-body", be.to_string());
            }
        }
        if let Some(ioe) = e.downcast_ref::<io::Error>() {
            if matches!(
                ioe.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionAborted
            ) {
                return Failure::new(
                    StatusCode::BAD_GATEWAY,
                    Side::Upstream,
                    "upstream-reset",
                    format!("upstream {target} reset the connection"),
                );
            }
        }
        if let Some(he) = e.downcast_ref::<hyper::Error>() {
            if he.is_incomplete_message() {
                return Failure::new(
                    StatusCode::BAD_GATEWAY,
                    Side::Upstream,
                    "upstream-closed",
                    format!("upstream {target} closed the connection before answering"),
                );
            }
            if he.is_parse() {
                return Failure::new(
                    StatusCode::BAD_GATEWAY,
                    Side::Upstream,
                    "upstream-malformed",
                    format!("upstream {target} sent a malformed response: {chain}"),
                );
            }
        }
        src = e.source();
    }
    Failure::new(
        StatusCode::BAD_GATEWAY,
        Side::Upstream,
        "upstream-error",
        format!("upstream {target}: {chain}"),
    )
}

/// "outer: inner: innermost", skipping repeated messages.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut src = Some(err);
    while let Some(e) = src {
        let s = e.to_string();
        if parts.last() != Some(&s) {
            parts.push(s);
        }
        src = e.source();
    }
    parts.join(": ")
}

fn downstream<B>(
    body: B,
    conn: &ConnCtx,
    cfg: &crate::config::Config,
    inflight: InflightGuard,
    tap: Option<Arc<crate::record::capture::Exchange>>,
) -> MeteredBody<B> {
    MeteredBody::new(
        body,
        conn.entry.clone(),
        Direction::Down,
        Side::Upstream,
        cfg.client.body_idle_timeout,
        Some(inflight),
    )
    .with_tap(tap)
}

/// `body` paced at `rate` bytes per second (`throttle://`), boxed once.
fn paced<B>(body: B, rate: Option<u64>) -> ProxyBody
where
    B: http_body::Body<Data = bytes::Bytes, Error = BoxError> + Send + 'static,
{
    match rate {
        Some(r) => ThrottledBody::new(body, r).boxed_unsync(),
        None => body.boxed_unsync(),
    }
}
