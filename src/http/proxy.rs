//! Forwarding one absolute-form HTTP request to its origin and streaming
//! the response back.
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
use super::headers::{add_via, normalize_transfer_encoding, strip_hop_by_hop, UnsupportedCoding};
use super::tamper;
use super::throttle::ThrottledBody;
use super::{ConnCtx, HttpContext};
use crate::net::ConnectError;
use crate::record::capture::{Exchange, UpstreamInfo};
use crate::registry::{CloseReason, ConnState, Side};
use crate::rules::{apply_header_edits, rewrite_uri, Answer, RequestInfo, Scheme, MAX_BODY};
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
    let mut inflight = conn.activity.begin_request();
    conn.entry.requests.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    // CONNECT becomes a tunnel record (or a failure record) in connect.rs.
    let exchange = if method == Method::CONNECT {
        None
    } else {
        ctx.recorder
            .begin_http(conn.entry.id, conn.peer, &method, req.uri(), req.version())
    };
    if had_userinfo {
        if let Some(ex) = &exchange {
            ex.note("userinfo", "credentials in the request URL (user:password@) were removed; they are neither forwarded nor recorded");
        }
    }
    if conn.activity.take_ambiguous_framing() {
        // RFC 9112 6.1: a head with both framings is how requests get
        // smuggled; refuse it and close.
        ctx.metrics.count_request(&method, 400);
        let f = Failure::bad_request("request has both Content-Length and Transfer-Encoding");
        return Ok(record_answer(exchange.as_deref(), f));
    }
    let user = match identify(&req, &ctx, &conn).await {
        Ok(u) => u,
        Err(resp) => {
            ctx.metrics.count_request(&method, resp.status().as_u16());
            if method == Method::CONNECT {
                // As the first-request path does: a refused CONNECT is a
                // record too (it holds no headers).
                ctx.recorder.connect_failed(crate::record::FailedConnect {
                    conn_id: conn.entry.id,
                    client: conn.peer,
                    user: None,
                    target: &req.uri().to_string(),
                    status: resp.status().as_u16(),
                    error: "proxy authentication failed",
                    started: started.into_std(),
                    rules: "",
                });
            }
            if let Some(ex) = &exchange {
                ex.set_request_headers(req.headers());
                ex.answered(
                    resp.status().as_u16(),
                    resp.headers(),
                    Some("proxy authentication failed"),
                );
            }
            return Ok(*resp);
        }
    };
    if let (Some(ex), Some(_)) = (&exchange, &ctx.auth) {
        // Without --auth the "user" is the client IP, already recorded.
        ex.set_user(&user);
    }
    let resp = if method == Method::CONNECT {
        let r = super::connect::handle_connect(req, &ctx, &conn, &user).await;
        conn.entry.set_state(ConnState::ReadingHeaders);
        r
    } else {
        inflight.observe_total(started, ctx.metrics.request_seconds.clone());
        match forward(req, &ctx, &conn, inflight, exchange.clone()).await {
            Ok(resp) => {
                ctx.metrics
                    .ttfb_seconds
                    .observe(started.elapsed().as_secs_f64());
                resp
            }
            Err(Stop::Close { reason, record }) => {
                if let Some(ex) = &exchange {
                    ex.fail(record);
                }
                ctx.metrics.count_request(&method, 0);
                return Err(CloseConnection { reason });
            }
            Err(Stop::Answer(f)) => {
                tracing::debug!(code = f.code, message = %f.message, "request failed");
                conn.entry.set_state(ConnState::ReadingHeaders);
                record_answer(exchange.as_deref(), f)
            }
        }
    };
    let status = resp.status().as_u16();
    ctx.metrics.count_request(&method, status);
    ctx.users.on_request(&user, status >= 500);
    Ok(resp)
}

/// sluice's own answer to a request, noted in its record.
fn record_answer(
    exchange: Option<&crate::record::capture::Exchange>,
    f: Failure,
) -> Response<ProxyBody> {
    match exchange {
        Some(ex) => {
            let message = f.message.clone();
            let text = bytes::Bytes::from(f.body_text());
            let resp = f.into_response();
            ex.answered(resp.status().as_u16(), resp.headers(), Some(&message));
            ex.response_chunk(&text);
            resp
        }
        None => f.into_response(),
    }
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

async fn forward(
    req: Request<Incoming>,
    ctx: &HttpContext,
    conn: &ConnCtx,
    inflight: InflightGuard,
    exchange: Option<Arc<Exchange>>,
) -> Result<Response<ProxyBody>, Stop> {
    let (mut parts, body) = req.into_parts();
    let mut authority = match target_of(&parts.uri, ctx) {
        Ok(a) => a,
        Err(f) => {
            if let Some(ex) = &exchange {
                // Refused before leaving: the record shows what the client sent.
                ex.set_request_headers(&parts.headers);
            }
            return Err(f.into());
        }
    };

    // One snapshot of the rules for the whole exchange.
    let snapshot = ctx.rules.current();
    let plan = if snapshot.set.is_empty() {
        None
    } else {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let info = RequestInfo {
            method: parts.method.as_str(),
            scheme: Scheme::Http,
            host: authority.host(),
            port: authority.port_u16().unwrap_or(80),
            path_and_query: pq,
            client: conn.peer.ip(),
        };
        Some(snapshot.set.plan(&info)).filter(|p| !p.is_empty())
    };
    let mut notes = plan.as_ref().map(tamper::notes).unwrap_or_default();
    if let Some(ex) = &exchange {
        ex.set_rules(&notes);
    }
    // The client's own request headers, for CORS (`Origin`).
    let client_headers = match &plan {
        Some(p) if p.cors.is_some() => parts.headers.clone(),
        _ => http::HeaderMap::new(),
    };
    if let Some(d) = plan.as_ref().and_then(|p| p.delay) {
        rule_sleep(d.action, conn).await?;
    }
    if let Some(p) = &plan {
        let preflight = tamper::is_preflight(&parts.method, &parts.headers);
        if let Some(a) = p.answer(preflight) {
            if let Some(ex) = &exchange {
                ex.set_request_headers(&parts.headers);
            }
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
                tamper::edit_response_head(p, &client_headers, &mut head);
                if p.body_sub.is_some() {
                    match tamper::rewrite_body(p, &http::HeaderMap::new(), bytes.clone()) {
                        Ok(b) => bytes = b,
                        Err(why) => tamper::add_note(&mut notes, "bodySub", why),
                    }
                    tamper::set_identity_length(&mut head.headers, bytes.len());
                    if let Some(ex) = &exchange {
                        ex.set_rules(&notes);
                    }
                }
            }
            if let Some(ex) = &exchange {
                ex.request_done();
                ex.answered(head.status.as_u16(), &head.headers, None);
                ex.response_chunk(&bytes);
            }
            drop(body);
            if mock {
                if let Some(d) = p.res_delay {
                    rule_sleep(d.action, conn).await?;
                }
                if let Some(t) = p.throttle {
                    let b = ThrottledBody::new(tamper::full(bytes), t.action.bytes_per_sec());
                    return Ok(Response::from_parts(head, b.boxed_unsync()));
                }
            }
            return Ok(Response::from_parts(head, tamper::full(bytes)));
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
            authority = target_of(&uri, ctx).map_err(|f| {
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
    }

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
    let mut upstream_label = authority.to_string();
    // The rule that chose the upstream, named in any failure to reach it.
    let mut mapped_by = None;
    if let Some(p) = &plan {
        if let Some(up) = p.upstream {
            // Connect elsewhere; the Host header (set above) stays.
            let port = up.action.port_or(authority.port_u16().unwrap_or(80));
            let host = if up.action.host.contains(':') {
                format!("[{}]", up.action.host)
            } else {
                up.action.host.clone()
            };
            let mapped = format!("{host}:{port}");
            if super::proxy_is_self(ctx, &host, port) {
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
            let mut uri_parts = parts.uri.clone().into_parts();
            uri_parts.authority = Some(mapped.parse().map_err(|e| {
                Failure::new(
                    StatusCode::BAD_GATEWAY,
                    Side::Sluice,
                    "rule-upstream",
                    format!("rule {}: upstream {mapped}: {e}", up.rule),
                )
            })?);
            parts.uri = http::Uri::from_parts(uri_parts).map_err(|e| {
                Failure::new(
                    StatusCode::BAD_GATEWAY,
                    Side::Sluice,
                    "rule-upstream",
                    format!("rule {}: upstream {mapped}: {e}", up.rule),
                )
            })?;
            upstream_label = mapped;
            mapped_by = Some(up.rule);
        }
        apply_header_edits(&mut parts.headers, p.req_headers.iter().map(|c| c.action));
    }
    parts.version = Version::HTTP_11;
    if let Some(ex) = &exchange {
        ex.set_request_headers(&parts.headers);
    }
    let cfg = &ctx.config;
    let body = match plan.as_ref().and_then(|p| p.req_throttle) {
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
    .with_tap(exchange.clone());
    let upstream_req = Request::from_parts(parts, body);

    if let Some(ex) = &exchange {
        if http_body::Body::is_end_stream(upstream_req.body()) {
            // No body: the request is sent once its head is written, which
            // happens as soon as a connection is ready (see response_head).
            ex.request_done();
        }
    }
    conn.entry.set_state(ConnState::WaitingUpstream);
    let sent = tokio::select! {
        r = tokio::time::timeout(cfg.connector.response_timeout, ctx.client.request(upstream_req)) => r,
        _ = conn.entry.kill.cancelled() => {
            return Err(Failure::new(StatusCode::SERVICE_UNAVAILABLE, Side::Sluice, "shutdown", "sluice is shutting down").into());
        }
        // Dropping the request future cancels the upstream request (hyper
        // closes that connection) and failing the service closes the client.
        _ = super::departure::client_left(conn.client_fd) => {
            return Err(Stop::Close {
                reason: CloseReason::Eof,
                record: format!(
                    "the client closed the connection while waiting for {upstream_label}'s response; the upstream request was cancelled"
                ),
            });
        }
    };
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            let mut f = classify(&e, &upstream_label);
            if let Some(rule) = mapped_by {
                f.message
                    .push_str(&format!(" (upstream {upstream_label} set by rule {rule})"));
            }
            return Err(f.into());
        }
        Err(_) => {
            return Err(Failure::new(
                StatusCode::GATEWAY_TIMEOUT,
                Side::Upstream,
                "response-timeout",
                format!(
                    "upstream {upstream_label} sent no response head within {}",
                    humantime::format_duration(cfg.connector.response_timeout)
                ),
            )
            .into())
        }
    };
    conn.entry.set_state(ConnState::Streaming);
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers, parts.version);
    let Some(p) = &plan else {
        if let Some(ex) = &exchange {
            ex.response_head(
                parts.status.as_u16(),
                &parts.headers,
                http_body::Body::size_hint(&body).exact(),
                parts.extensions.get::<UpstreamInfo>(),
            );
        }
        let body = downstream_body(body, conn, cfg, inflight, exchange);
        return Ok(Response::from_parts(parts, body.boxed_unsync()));
    };
    tamper::edit_response_head(p, &client_headers, &mut parts);
    let body: ProxyBody = if tamper::edits_body(p) {
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
                    tamper::add_note(&mut notes, "bodySub", why);
                    tamper::full(whole)
                }
            },
            Err(rest) => {
                let why = format!(
                    "body rules skipped: the body is over the {MAX_BODY}-byte limit or failed"
                );
                if p.body_sub.is_some() {
                    tamper::add_note(&mut notes, "bodySub", why.clone());
                }
                tamper::add_note(&mut notes, "mock/body", why);
                rest.boxed_unsync()
            }
        }
    } else {
        body.map_err(BoxError::from).boxed_unsync()
    };
    if let Some(ex) = &exchange {
        ex.set_rules(&notes);
        ex.response_head(
            parts.status.as_u16(),
            &parts.headers,
            http_body::Body::size_hint(&body).exact(),
            parts.extensions.get::<UpstreamInfo>(),
        );
    }
    if let Some(d) = p.res_delay {
        rule_sleep(d.action, conn).await?;
    }
    let body = downstream_body(body, conn, cfg, inflight, exchange);
    let body = match p.throttle {
        Some(t) => ThrottledBody::new(body, t.action.bytes_per_sec()).boxed_unsync(),
        None => body.boxed_unsync(),
    };
    Ok(Response::from_parts(parts, body))
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

/// The origin a request is for, or why it cannot be forwarded.
fn target_of(uri: &http::Uri, ctx: &HttpContext) -> Result<http::uri::Authority, Failure> {
    match uri.scheme_str() {
        Some("http") => {}
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
    let port = authority.port_u16().unwrap_or(80);
    if super::proxy_is_self(ctx, authority.host(), port) {
        return Err(Failure::new(
            StatusCode::LOOP_DETECTED,
            Side::Client,
            "loop",
            format!("request for {authority} is addressed to sluice itself"),
        ));
    }
    Ok(authority)
}

/// Turns a client error into an answer that says who failed and why.
fn classify(err: &hyper_util::client::legacy::Error, target: &str) -> Failure {
    let chain = error_chain(err);
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = src {
        if let Some(ce) = e.downcast_ref::<ConnectError>() {
            return Failure::from_connect(ce);
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

/// The response body as it goes to the client: counted, tapped for the
/// record, under the body idle deadline, releasing the connection's
/// in-flight mark at its end.
fn downstream_body<B>(
    body: B,
    conn: &ConnCtx,
    cfg: &crate::config::Config,
    inflight: InflightGuard,
    exchange: Option<Arc<Exchange>>,
) -> MeteredBody<B> {
    MeteredBody::new(
        body,
        conn.entry.clone(),
        Direction::Down,
        Side::Upstream,
        cfg.client.body_idle_timeout,
        Some(inflight),
    )
    .with_tap(exchange)
}
