//! The connection inventory: live connections (filtered, written in
//! slices so a large inventory does not stall the worker), killing one,
//! the kernel cross-check of sockets, and the proxy users.
//!
//! Invariant: rows borrow from registry entries; nothing here holds an
//! entry past the request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::reply::error;
use super::state::AdminState;
use crate::registry::{CloseReason, ConnEntry, Kind};

type St = State<Arc<AdminState>>;

#[derive(Deserialize, Default)]
pub(super) struct ConnFilter {
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
    /// A tunnel's TLS state: intercepted, passed through (and why).
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<serde_json::Value>,
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
        tls: e.tls().and_then(|t| serde_json::from_str(&t).ok()),
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

pub(super) async fn connections(State(st): St, Query(f): Query<ConnFilter>) -> Response {
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

pub(super) async fn kill(State(st): St, Path(id): Path<u64>) -> Response {
    if st.registry.kill(id, CloseReason::KilledByAdmin) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no live connection {id}"))
    }
}

#[derive(Deserialize)]
pub(super) struct TopQuery {
    top: Option<usize>,
}

pub(super) async fn sockets(State(st): St, Query(q): Query<TopQuery>) -> Response {
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

pub(super) async fn users(State(st): St) -> Response {
    Json(st.users.rows(&st.registry.snapshot())).into_response()
}
