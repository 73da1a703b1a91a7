//! The instance's own figures: health, leak-watchdog warnings, the
//! history ring and the Prometheus metrics.
//!
//! Invariant: read-only views of state other rooms own.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::state::AdminState;

type St = State<Arc<AdminState>>;

/// `GET /api/watchdog`: leak-watchdog warnings so far, by check.
pub(super) async fn watchdog(State(st): St) -> Response {
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

pub(super) async fn health(State(st): St) -> Response {
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

#[derive(Deserialize)]
pub(super) struct HistoryQuery {
    last: Option<usize>,
}

pub(super) async fn history(State(st): St, Query(q): Query<HistoryQuery>) -> Response {
    Json(st.history.last(q.last)).into_response()
}

pub(super) async fn metrics(State(st): St) -> Response {
    let mut resp = st.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}
