//! Who may use the admin server: the bearer token (compared in constant
//! time), the web UI's session cookie, and without a token the guard
//! against DNS rebinding; plus the session routes that open and close a
//! UI session.
//!
//! Invariants: the token never leaves this check (no log line, no reply
//! holds it); the session cookie holds a session id, never the token; a
//! cookie alone never authorizes a state-changing request ([`UI_HEADER`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use subtle::ConstantTimeEq;

use super::reply::error;
use super::state::AdminState;

type St = State<Arc<AdminState>>;

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
pub(super) async fn require_token(State(st): St, req: Request, next: Next) -> Response {
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
pub(super) async fn session_open(State(st): St, headers: axum::http::HeaderMap) -> Response {
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
pub(super) async fn session_close(State(st): St, headers: axum::http::HeaderMap) -> Response {
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
