//! Admin routes and their JSON shapes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::AdminState;
use crate::registry::{CloseReason, ConnEntry, Kind};

type St = State<Arc<AdminState>>;

pub fn router(state: Arc<AdminState>) -> Router {
    let mut r = Router::new()
        .route("/api/health", get(health))
        .route("/api/connections", get(connections))
        .route("/api/connections/{id}", delete(kill))
        .route("/api/sockets", get(sockets))
        .route("/api/stats/history", get(history))
        .route("/api/users", get(users))
        .route(
            "/api/records",
            get(super::records::list).delete(super::records::clear),
        )
        .route("/api/records/live", get(super::records::live))
        .route("/api/har", get(super::har::har))
        .route("/api/records/{id}", get(super::records::one))
        .route("/api/records/{id}/body/{dir}", get(super::records::body))
        .route(
            "/api/rules",
            get(super::rules::get_rules).put(super::rules::put_rules),
        )
        .route("/api/rules/test", get(super::rules::test_rules))
        .route("/api/rules/validate", post(super::rules::validate_rules))
        .route("/api/records/count", get(super::records::count))
        .route("/api/watchdog", get(watchdog))
        .route("/api/session", post(session_open).delete(session_close))
        .route("/", get(super::ui::index))
        .route("/ui/{*file}", get(super::ui::asset))
        .route("/metrics", get(metrics));
    if state.config.test_hooks {
        r = r
            .route("/api/debug/leak-socket", post(leak_socket))
            .route("/api/debug/recorder", post(pause_recorder));
    }
    r.fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(super::rules::MAX_PUT))
        .layer(middleware::from_fn_with_state(state.clone(), require_token))
        .with_state(state)
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    #[derive(Serialize)]
    struct E {
        error: String,
    }
    (
        status,
        Json(E {
            error: message.into(),
        }),
    )
        .into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such admin route")
}

/// The cookie the web UI keeps its session id in (a session cookie: gone
/// when the browser closes). `EventSource` and `<a download>` cannot set
/// an `Authorization` header; a cookie rides along with both. It never
/// holds the token: cookies ignore ports, so it also rides along to every
/// proxied origin on the same host.
pub const SESSION_COOKIE: &str = "sluice_admin";
/// Header the UI sends on state-changing requests: a cross-site form or
/// image cannot set it, so a cookie alone never deletes or writes anything.
pub const UI_HEADER: &str = "x-sluice-ui";

/// The bearer token a request carries, if any.
fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The session id in the UI's cookie, if any.
fn session_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

/// Whether the `Host` header names this server by IP literal or
/// `localhost` (or has none, as HTTP/1.0 clients may). Without a token the
/// admin API trusts loopback callers; a web page whose own name was
/// rebound to 127.0.0.1 still sends that name, and is refused here.
fn host_is_local(headers: &axum::http::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// With a token (given or generated: the default), every request needs
/// `Authorization: Bearer TOKEN` (compared in constant time) or the UI's
/// session cookie (plus [`UI_HEADER`] on anything but GET/HEAD). A browser
/// asking for `/` without either gets the token prompt, which holds no
/// data (it also takes `/?token=...`, as printed at start).
async fn require_token(State(st): St, req: Request, next: Next) -> Response {
    let Some(token) = &st.token else {
        if !host_is_local(req.headers()) {
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                "without an admin token the admin server answers only requests that \
                 name it by IP address or localhost (a guard against DNS rebinding)",
            );
        }
        return next.run(req).await;
    };
    let ok = match bearer(req.headers()) {
        Some(given) => bool::from(given.as_bytes().ct_eq(token.as_bytes())),
        None => match session_cookie(req.headers()) {
            Some(id) => {
                let safe = matches!(req.method().as_str(), "GET" | "HEAD");
                (safe || req.headers().contains_key(UI_HEADER)) && st.sessions.check(id)
            }
            None => false,
        },
    };
    if !ok {
        if req.method() == axum::http::Method::GET && req.uri().path() == "/" {
            return super::ui::login_page();
        }
        let mut resp = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"sluice\""),
        );
        return resp;
    }
    next.run(req).await
}

/// `POST /api/session` (authorized by the auth layer): with the bearer
/// token, mints a session and sets its id as the UI's cookie. Without a
/// token configured there is nothing to keep.
async fn session_open(State(st): St, headers: axum::http::HeaderMap) -> Response {
    if st.token.is_none() {
        return Json(serde_json::json!({ "token_required": false })).into_response();
    }
    let mut resp = Json(serde_json::json!({ "token_required": true })).into_response();
    if bearer(&headers).is_none() {
        // Already signed in by cookie: that session stays.
        return resp;
    }
    let id = match st.sessions.open() {
        Ok(id) => id,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let cookie = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict");
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            resp.headers_mut().insert(header::SET_COOKIE, v);
            resp
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the session id cannot be carried in a cookie",
        ),
    }
}

/// `DELETE /api/session`: ends the session here and in the browser (the
/// UI's "sign out").
async fn session_close(State(st): St, headers: axum::http::HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        st.sessions.close(id);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("sluice_admin=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    resp
}

/// `GET /api/watchdog`: leak-watchdog warnings so far, by check.
async fn watchdog(State(st): St) -> Response {
    let count = |check: &'static str| {
        st.metrics
            .leak_warnings
            .get(&crate::metrics::WatchdogLabels { check })
            .map(|c| c.get())
            .unwrap_or(0)
    };
    let growth = count("growth");
    let max_age = count("max_age");
    Json(serde_json::json!({
        "state": if growth + max_age == 0 { "ok" } else { "warned" },
        "warnings": { "growth": growth, "max_age": max_age },
    }))
    .into_response()
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    ready: bool,
    uptime_s: u64,
    connections: u64,
    version: &'static str,
}

async fn health(State(st): St) -> Response {
    let draining = st.shutdown.stop_accepting.is_cancelled();
    let body = Health {
        status: if draining { "draining" } else { "ok" },
        ready: !draining,
        uptime_s: st.started.elapsed().as_secs(),
        connections: st.registry.live_total(),
        version: env!("CARGO_PKG_VERSION"),
    };
    let code = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

#[derive(Deserialize, Default)]
struct ConnFilter {
    kind: Option<String>,
    client: Option<String>,
    user: Option<String>,
    min_age: Option<String>,
    min_idle: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct DeadlineRow {
    reason: &'static str,
    in_ms: u64,
}

#[derive(Serialize)]
/// Borrows from its entry: ten thousand rows, no allocation per field.
struct ConnRow<'a> {
    id: u64,
    kind: &'static str,
    /// Serialized as "ip:port".
    client: Option<std::net::SocketAddr>,
    upstream: Option<&'a str>,
    user: Option<&'a str>,
    state: &'static str,
    age_ms: u64,
    idle_ms: u64,
    bytes_up: u64,
    bytes_down: u64,
    requests: u64,
    next_deadline: Option<DeadlineRow>,
}

fn row(e: &ConnEntry) -> ConnRow<'_> {
    let now = std::time::Instant::now();
    ConnRow {
        id: e.id,
        kind: e.kind.as_str(),
        client: e.client,
        upstream: e.upstream(),
        user: e.user(),
        state: e.state().as_str(),
        age_ms: e.age().as_millis() as u64,
        idle_ms: e.idle().as_millis() as u64,
        bytes_up: e.bytes_up.load(Ordering::Relaxed),
        bytes_down: e.bytes_down.load(Ordering::Relaxed),
        requests: e.requests.load(Ordering::Relaxed),
        next_deadline: e.next_deadline().map(|d| DeadlineRow {
            reason: d.reason,
            in_ms: d.at.saturating_duration_since(now).as_millis() as u64,
        }),
    }
}

fn parse_dur(name: &str, v: &Option<String>) -> Result<Option<Duration>, Box<Response>> {
    match v {
        None => Ok(None),
        Some(t) => humantime::parse_duration(t).map(Some).map_err(|e| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                format!("{name}: invalid duration `{t}`: {e}"),
            ))
        }),
    }
}

async fn connections(State(st): St, Query(f): Query<ConnFilter>) -> Response {
    let kind = match f.kind.as_deref() {
        None => None,
        Some(k) => match Kind::parse(k) {
            Some(k) => Some(k),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("kind: unknown `{k}` (http, upstream, tunnel, relay, admin)"),
                )
            }
        },
    };
    let min_age = match parse_dur("min_age", &f.min_age) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let min_idle = match parse_dur("min_idle", &f.min_idle) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let mut entries: Vec<_> = st
        .registry
        .snapshot()
        .into_iter()
        .filter(|e| kind.is_none_or(|k| e.kind == k))
        .filter(|e| {
            f.client.as_deref().is_none_or(|c| {
                e.client
                    .is_some_and(|a| a.to_string().starts_with(c) || a.ip().to_string() == c)
            })
        })
        .filter(|e| f.user.as_deref().is_none_or(|u| e.user() == Some(u)))
        .filter(|e| min_age.is_none_or(|d| e.age() >= d))
        .filter(|e| min_idle.is_none_or(|d| e.idle() >= d))
        .collect();
    entries.sort_by_key(|e| e.id);
    let count = entries.len();
    let shown = &entries[..count.min(f.limit.unwrap_or(usize::MAX))];
    // Ten thousand rows take tens of milliseconds to write: written in
    // slices with a yield between them, so the proxy connections sharing
    // this worker are served in between instead of stalling behind it.
    let mut body = Vec::with_capacity(64 + shown.len() * 288);
    body.extend_from_slice(format!("{{\"count\":{count},\"connections\":[").as_bytes());
    for (i, slice) in shown.chunks(ROWS_PER_SLICE).enumerate() {
        if i > 0 {
            tokio::task::yield_now().await;
        }
        for (j, e) in slice.iter().enumerate() {
            if i + j > 0 {
                body.push(b',');
            }
            if let Err(e) = serde_json::to_writer(&mut body, &row(e)) {
                return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
            }
        }
    }
    body.extend_from_slice(b"]}");
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Inventory rows written between two yields to the scheduler.
const ROWS_PER_SLICE: usize = 256;

async fn kill(State(st): St, Path(id): Path<u64>) -> Response {
    if st.registry.kill(id, CloseReason::KilledByAdmin) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no live connection {id}"))
    }
}

#[derive(Deserialize)]
struct TopQuery {
    top: Option<usize>,
}

async fn sockets(State(st): St, Query(q): Query<TopQuery>) -> Response {
    match crate::sockets::report(
        &st.registry,
        q.top.unwrap_or(10).min(1000),
        Duration::from_millis(100),
    )
    .await
    {
        Ok(r) => Json(r).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read /proc: {e}"),
        ),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    last: Option<usize>,
}

async fn history(State(st): St, Query(q): Query<HistoryQuery>) -> Response {
    Json(st.history.last(q.last)).into_response()
}

async fn users(State(st): St) -> Response {
    Json(st.users.rows(&st.registry.snapshot())).into_response()
}

async fn metrics(State(st): St) -> Response {
    let mut resp = st.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// Test-only: opens a socket the registry never sees, to prove the orphan
/// detector can fail.
async fn leak_socket(State(st): St) -> Response {
    match std::net::TcpStream::connect_timeout(&st.proxy_addr, Duration::from_secs(2)) {
        Ok(s) => {
            std::mem::forget(s);
            (StatusCode::CREATED, "leaked one socket\n").into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Test-only: `POST /api/debug/recorder?paused=true|false` holds or
/// releases the record writer (to fill its queue as a slow disk would).
async fn pause_recorder(State(st): St, RawQuery(q): RawQuery) -> Response {
    let paused = q.as_deref().is_some_and(|q| q.contains("paused=true"));
    let recorder = st.recorder.clone();
    let _ = tokio::task::spawn_blocking(move || recorder.set_paused(paused)).await;
    Json(serde_json::json!({ "paused": paused })).into_response()
}
