//! `GET /api/har`: the records matching a filter as one HAR 1.2 download,
//! streamed while it is written.
//!
//! Invariants (through `stream::from_blocking_first`): the export runs on a blocking thread and hands pieces over a
//! bounded channel, so memory stays at a few pieces whatever the export's
//! size; a reader that stops reading for the body idle timeout ends the
//! export; a response that cannot be finished is cut (an error in the
//! body), never ended as if complete, so a client never mistakes half a
//! document for a whole one.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::records::filtered_store;
use super::reply::error;
use super::state::AdminState;
use crate::record::har::export;

pub async fn har(State(st): State<Arc<AdminState>>, RawQuery(q): RawQuery) -> Response {
    let (filter, store) = match filtered_store(&st, q.as_deref()) {
        Ok(fs) => fs,
        Err(resp) => return resp.into_response(),
    };
    // Exports are heavy work: bounded in number, each holding its permit
    // until its body is sent or dropped.
    let permit = match super::records::heavy_permit(&st).await {
        Ok(p) => p,
        Err(r) => {
            let mut resp = r.into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            return resp;
        }
    };
    // A reader that takes no piece for this long has stalled. Nothing is
    // sent before the first page was read: a store that cannot be read is
    // a plain 500.
    let idle = st.body_idle_timeout;
    let produced = super::stream::from_blocking_first(idle, permit, move |sink| {
        export(&store, &filter, sink).map_err(|e| format!("HAR export failed: {e}"))
    })
    .await;
    let body = match produced {
        Ok(body) => body,
        Err(message) => return error(StatusCode::INTERNAL_SERVER_ERROR, message),
    };
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"sluice-{unix}.har\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
