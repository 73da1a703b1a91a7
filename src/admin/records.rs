//! Admin routes over the record store: list with filters and cursor
//! paging, one record with headers and decoded bodies, raw or decoded body
//! download, delete, and the live feed (Server-Sent Events).
//!
//! Invariants: every store query runs on a blocking thread, never on the
//! async workers; filters are parsed by [`Filter::from_params`], so a bad
//! filter is a 400 that names it; the live feed never blocks the writer (a
//! slow subscriber is told how many records it missed).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Serialize;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use super::api::error;
use super::AdminState;
use crate::record::decode;
use crate::record::model::BodyDir;
use crate::record::query::{self, BodyMeta, Filter, Phases, Summary};
use crate::record::store::{Store, StoreError};

type St = State<Arc<AdminState>>;

/// Decoded bodies shown inline in a record, at most.
const INLINE_BODY_CAP: usize = 4 * 1024 * 1024;
/// Decoding a body for download stops here (a decompression bomb is cut).
const DECODE_CAP: usize = 64 * 1024 * 1024;

/// Query pairs, percent-decoded.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        form_urlencoded_pairs(q)
            .into_iter()
            .collect::<Vec<(String, String)>>()
    })
    .unwrap_or_default()
}

fn form_urlencoded_pairs(q: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default()
}

/// A refused admin request: its status and the message the JSON error
/// body carries.
#[derive(Debug)]
pub struct Refusal(pub StatusCode, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

/// The filter in the query string, or a 400 naming what is wrong.
pub fn filter_from(raw: Option<&str>) -> Result<Filter, Refusal> {
    let pairs = query_pairs(raw);
    Filter::from_params(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))
}

/// The store, or 503 when recording is off.
/// The filter in a query string and the store it applies to: what every
/// filtered read (list, count, HAR) starts from.
pub fn filtered_store(st: &AdminState, raw: Option<&str>) -> Result<(Filter, Arc<Store>), Refusal> {
    Ok((filter_from(raw)?, store_of(st)?))
}

pub fn store_of(st: &AdminState) -> Result<Arc<Store>, Refusal> {
    st.recorder.store.clone().ok_or_else(|| {
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "recording is off (started with --record off)".into(),
        )
    })
}

/// Runs a store query off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => Err(Refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("query task failed: {e}"),
        )),
    }
}

pub async fn list(State(st): St, RawQuery(q): RawQuery) -> Response {
    let (filter, store) = match filtered_store(&st, q.as_deref()) {
        Ok(fs) => fs,
        Err(r) => return r.into_response(),
    };
    match blocking(move || store.read(|c| query::page(c, &filter))).await {
        Ok(page) => Json(page).into_response(),
        Err(r) => r.into_response(),
    }
}

pub async fn clear(State(st): St, RawQuery(q): RawQuery) -> Response {
    let mut filter = match filter_from(q.as_deref()) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = store_of(&st) {
        return r.into_response();
    }
    // A delete takes every match, not a page of them.
    filter.limit = usize::MAX;
    let recorder = st.recorder.clone();
    match blocking(move || recorder.delete(&filter)).await {
        Ok(n) => Json(serde_json::json!({ "deleted": n })).into_response(),
        Err(r) => r.into_response(),
    }
}

/// One body as shown inside a record.
#[derive(Serialize)]
struct BodyView {
    #[serde(flatten)]
    meta: BodyMeta,
    /// The text was decoded from `encoding`.
    decoded: bool,
    decode_error: Option<String>,
    /// The (decoded) body, when it is UTF-8.
    text: Option<String>,
    /// The (decoded) body in base64, when it is not UTF-8.
    base64: Option<String>,
    /// Decoding stopped at the inline cap.
    inline_truncated: bool,
}

fn body_view(meta: BodyMeta, stored: Vec<u8>) -> BodyView {
    let (data, decoded, decode_error, inline_truncated) =
        decode_for_view(&meta, stored, INLINE_BODY_CAP);
    let (text, b64) = match String::from_utf8(data) {
        Ok(t) => (Some(t), None),
        Err(e) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
        ),
    };
    BodyView {
        meta,
        decoded,
        decode_error,
        text,
        base64: b64,
        inline_truncated,
    }
}

/// Decodes a stored body by its Content-Encoding, falling back to the
/// stored bytes (with the reason) when it cannot.
fn decode_for_view(
    meta: &BodyMeta,
    stored: Vec<u8>,
    cap: usize,
) -> (Vec<u8>, bool, Option<String>, bool) {
    let enc = meta.encoding.as_deref().unwrap_or("").trim();
    if stored.is_empty() || enc.is_empty() || enc.eq_ignore_ascii_case("identity") {
        let cut = stored.len() > cap;
        let mut data = stored;
        data.truncate(cap);
        return (data, false, None, cut);
    }
    match decode::decode(enc, &stored, cap) {
        Ok(d) => {
            let cut = d.truncated && d.data.len() >= cap;
            (d.data, true, None, cut)
        }
        Err(e) => {
            let cut = stored.len() > cap;
            let mut data = stored;
            data.truncate(cap);
            (data, false, Some(e.to_string()), cut)
        }
    }
}

#[derive(Serialize)]
struct Side {
    headers: Vec<(String, String)>,
    body: BodyView,
}

#[derive(Serialize)]
struct DetailView {
    #[serde(flatten)]
    summary: Summary,
    request: Side,
    response: Side,
    /// Phase durations in ms (-1 where a phase did not happen).
    timings: Phases,
    /// Raw offsets from the request head, in µs.
    offsets_us: crate::record::model::Timings,
}

pub async fn one(State(st): St, Path(id): Path<u64>) -> Response {
    let store = match store_of(&st) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let found = blocking(move || {
        store.read(|c| {
            let Some(d) = query::detail(c, id)? else {
                return Ok(None);
            };
            let req = query::body(c, id, BodyDir::Request)?;
            let resp = query::body(c, id, BodyDir::Response)?;
            Ok(Some((d, req, resp)))
        })
    })
    .await;
    match found {
        Ok(Some((d, req, resp))) => {
            let view = DetailView {
                timings: Phases::from_timings(&d.timings),
                offsets_us: d.timings,
                request: Side {
                    headers: d.req_headers,
                    body: body_view(d.req_body, req),
                },
                response: Side {
                    headers: d.resp_headers,
                    body: body_view(d.resp_body, resp),
                },
                summary: d.summary,
            };
            Json(view).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no record {id}")),
        Err(r) => r.into_response(),
    }
}

/// `GET /api/records/{id}/body/{request|response}[?decode=1]`: the body as
/// stored (still encoded), or decoded.
pub async fn body(
    State(st): St,
    Path((id, dir)): Path<(u64, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let Some(dir) = BodyDir::parse(&dir) else {
        return error(StatusCode::NOT_FOUND, "body is `request` or `response`");
    };
    let want_decoded = query_pairs(q.as_deref())
        .iter()
        .any(|(k, v)| k == "decode" && matches!(v.as_str(), "1" | "true" | "yes"));
    let store = match store_of(&st) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let found = blocking(move || {
        store.read(|c| {
            let Some(d) = query::detail(c, id)? else {
                return Ok(None);
            };
            let meta = match dir {
                BodyDir::Request => d.req_body,
                BodyDir::Response => d.resp_body,
            };
            Ok(Some((meta, query::body(c, id, dir)?)))
        })
    })
    .await;
    let (meta, stored) = match found {
        Ok(Some(v)) => v,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no record {id}")),
        Err(r) => return r.into_response(),
    };
    let mut headers = vec![(
        header::CONTENT_TYPE.as_str(),
        meta.content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into()),
    )];
    let data = if want_decoded {
        let (data, decoded, err, cut) = decode_for_view(&meta, stored, DECODE_CAP);
        if let Some(e) = err {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("cannot decode the {} body: {e}", dir.as_str()),
            );
        }
        if decoded {
            headers.push((
                "x-sluice-decoded-from",
                meta.encoding.clone().unwrap_or_default(),
            ));
        }
        if cut || meta.truncated {
            headers.push(("x-sluice-truncated", "true".into()));
        }
        data
    } else {
        if let Some(e) = &meta.encoding {
            headers.push(("x-sluice-content-encoding", e.clone()));
        }
        if meta.truncated {
            headers.push(("x-sluice-truncated", "true".into()));
        }
        stored
    };
    headers.push(("x-sluice-wire-size", meta.size.to_string()));
    let mut resp = data.into_response();
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            if let Ok(k) = header::HeaderName::from_bytes(k.as_bytes()) {
                resp.headers_mut().insert(k, v);
            }
        }
    }
    resp
}

/// `GET /api/records/live`: new records as Server-Sent Events (`record`
/// events carrying a summary; `lagged` when this subscriber fell behind).
pub async fn live(State(st): St, RawQuery(q): RawQuery) -> Response {
    let filter = match filter_from(q.as_deref()) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = store_of(&st) {
        return r.into_response();
    }
    // The cursor and the page size mean nothing for a feed.
    let filter = Filter {
        before_id: None,
        ..filter
    };
    let stream = BroadcastStream::new(st.recorder.subscribe()).filter_map(move |item| {
        let event = match item {
            Ok(summary) => {
                if !filter.matches(&summary) {
                    return None;
                }
                Event::default().event("record").json_data(&*summary).ok()?
            }
            Err(BroadcastStreamRecvError::Lagged(n)) => Event::default()
                .event("lagged")
                .data(format!("{{\"missed\":{n}}}")),
        };
        Some(Ok::<_, Infallible>(event))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// `GET /api/records/count?FILTER`: how many stored records match (the web
/// UI sizes its scroll area with it). Ignores `cursor` and `limit`
/// (`query::count` drops the cursor).
pub async fn count(State(st): St, RawQuery(q): RawQuery) -> Response {
    let (filter, store) = match filtered_store(&st, q.as_deref()) {
        Ok(fs) => fs,
        Err(r) => return r.into_response(),
    };
    match blocking(move || store.read(|c| query::count(c, &filter))).await {
        Ok(n) => Json(serde_json::json!({ "count": n })).into_response(),
        Err(r) => r.into_response(),
    }
}
