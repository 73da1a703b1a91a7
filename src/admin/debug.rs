//! Test-only admin routes (`--test-hooks`): a deliberate socket leak, to
//! prove the orphan detector can fail, and holding the record writer, to
//! fill its queue as a slow disk would.
//!
//! Invariant: routed only when the instance runs with test hooks.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::reply::error;
use super::state::AdminState;

type St = State<Arc<AdminState>>;

/// Test-only: opens a socket the registry never sees, to prove the orphan
/// detector can fail.
pub(super) async fn leak_socket(State(st): St) -> Response {
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
pub(super) async fn pause_recorder(State(st): St, RawQuery(q): RawQuery) -> Response {
    let paused = q.as_deref().is_some_and(|q| q.contains("paused=true"));
    let recorder = st.recorder.clone();
    let _ = tokio::task::spawn_blocking(move || recorder.set_paused(paused)).await;
    Json(serde_json::json!({ "paused": paused })).into_response()
}
