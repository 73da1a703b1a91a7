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
use super::body::{BodyError, Direction, MeteredBody};
use super::headers::{add_via, strip_hop_by_hop};
use super::{ConnCtx, HttpContext};
use crate::net::ConnectError;
use crate::record::capture::{Exchange, UpstreamInfo};
use crate::registry::{ConnState, Side};
use crate::users::auth::Verdict;
use tokio::time::Instant;

/// Answers one request on a client connection.
pub async fn handle(
    req: Request<Incoming>,
    ctx: Arc<HttpContext>,
    conn: ConnCtx,
) -> Response<ProxyBody> {
    let started = Instant::now();
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
    if conn.activity.take_ambiguous_framing() {
        // RFC 9112 6.1: a head with both framings is how requests get
        // smuggled; refuse it and close.
        ctx.metrics.count_request(&method, 400);
        let f = Failure::bad_request("request has both Content-Length and Transfer-Encoding");
        return record_answer(exchange.as_deref(), f);
    }
    let user = match identify(&req, &ctx, &conn) {
        Ok(u) => u,
        Err(resp) => {
            ctx.metrics.count_request(&method, resp.status().as_u16());
            if let Some(ex) = &exchange {
                ex.set_request_headers(req.headers());
                ex.answered(
                    resp.status().as_u16(),
                    resp.headers(),
                    Some("proxy authentication failed"),
                );
            }
            return *resp;
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
            Err(f) => {
                tracing::debug!(code = f.code, message = %f.message, "request failed");
                conn.entry.set_state(ConnState::ReadingHeaders);
                record_answer(exchange.as_deref(), f)
            }
        }
    };
    let status = resp.status().as_u16();
    ctx.metrics.count_request(&method, status);
    ctx.users.on_request(&user, status >= 500);
    resp
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
fn identify(
    req: &Request<Incoming>,
    ctx: &HttpContext,
    conn: &ConnCtx,
) -> Result<String, Box<Response<ProxyBody>>> {
    let user = match &ctx.auth {
        None => conn.peer.ip().to_string(),
        Some(auth) => match auth.check(req.headers().get(header::PROXY_AUTHORIZATION)) {
            Verdict::User(name) => name,
            verdict => {
                let why = if verdict == Verdict::Missing {
                    "proxy authentication required"
                } else {
                    "proxy credentials refused"
                };
                let mut resp = Failure::new(
                    StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                    Side::Client,
                    "auth",
                    why,
                )
                .into_response();
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

async fn forward(
    req: Request<Incoming>,
    ctx: &HttpContext,
    conn: &ConnCtx,
    inflight: InflightGuard,
    exchange: Option<Arc<Exchange>>,
) -> Result<Response<ProxyBody>, Failure> {
    let (mut parts, body) = req.into_parts();
    let authority = match target_of(&parts.uri, ctx) {
        Ok(a) => a,
        Err(f) => {
            if let Some(ex) = &exchange {
                // Refused before leaving: the record shows what the client sent.
                ex.set_request_headers(&parts.headers);
            }
            return Err(f);
        }
    };

    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers, parts.version);
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        parts.headers.insert(header::HOST, host);
    }
    parts.version = Version::HTTP_11;
    if let Some(ex) = &exchange {
        ex.set_request_headers(&parts.headers);
    }
    let cfg = &ctx.config;
    let body = MeteredBody::new(
        body,
        conn.entry.clone(),
        Direction::Up,
        Side::Client,
        cfg.body_idle_timeout,
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
        r = tokio::time::timeout(cfg.response_timeout, ctx.client.request(upstream_req)) => r,
        _ = conn.entry.kill.cancelled() => {
            return Err(Failure::new(StatusCode::SERVICE_UNAVAILABLE, Side::Sluice, "shutdown", "sluice is shutting down"));
        }
    };
    let resp = match sent {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return Err(classify(&e, authority.as_str())),
        Err(_) => {
            return Err(Failure::new(
                StatusCode::GATEWAY_TIMEOUT,
                Side::Upstream,
                "response-timeout",
                format!(
                    "upstream {authority} sent no response head within {}",
                    humantime::format_duration(cfg.response_timeout)
                ),
            ))
        }
    };
    conn.entry.set_state(ConnState::Streaming);
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    add_via(&mut parts.headers, parts.version);
    if let Some(ex) = &exchange {
        ex.response_head(
            parts.status.as_u16(),
            &parts.headers,
            http_body::Body::size_hint(&body).exact(),
            parts.extensions.get::<UpstreamInfo>(),
        );
    }
    let body = MeteredBody::new(
        body,
        conn.entry.clone(),
        Direction::Down,
        Side::Upstream,
        cfg.body_idle_timeout,
        Some(inflight),
    )
    .with_tap(exchange);
    Ok(Response::from_parts(parts, body.boxed_unsync()))
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
    let Some(authority) = uri.authority().cloned() else {
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
