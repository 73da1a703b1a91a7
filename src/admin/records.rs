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
use bytes::Bytes;
use serde::Serialize;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use super::limits::{ClientIp, LiveSeat};
use super::reply::error;
use super::state::AdminState;
use super::stream;
use crate::record::decode;
use crate::record::model::BodyDir;
use crate::record::query::{self, BodyMeta, Filter, Phases, Summary};
use crate::record::store::Reader;
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
pub(super) async fn blocking<T: Send + 'static>(
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

/// A heavy-work permit, or the 503 that says to retry.
pub async fn heavy_permit(st: &AdminState) -> Result<tokio::sync::OwnedSemaphorePermit, Refusal> {
    st.heavy.acquire().await.ok_or_else(|| {
        Refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the admin server is busy: {} record detail, body or HAR requests are \
                 running; try again shortly",
                st.heavy.max
            ),
        )
    })
}

/// A 503 refusal with `Retry-After`.
/// A seat among the live feeds' readers (capped in all and per client;
/// past it a 503 with Retry-After), for a server that keeps records.
pub(super) fn live_seat(
    st: &AdminState,
    client: Option<axum::Extension<ClientIp>>,
) -> Result<LiveSeat, Box<Response>> {
    store_of(st).map_err(|r| Box::new(r.into_response()))?;
    let ip = client.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0 .0);
    st.live_readers
        .admit(ip)
        .map_err(|e| Box::new(busy(Refusal(StatusCode::SERVICE_UNAVAILABLE, e))))
}

pub(super) fn busy(r: Refusal) -> Response {
    let mut resp = r.into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    resp
}

/// Stored body bytes are read this much at a time (the rest of a large
/// body is never loaded).
const READ_PIECE: usize = 256 * 1024;

/// How many bytes the stored body has (`None`: the record has no entry).
fn stored_len(c: &Reader<'_>, id: u64, dir: BodyDir) -> rusqlite::Result<Option<usize>> {
    Ok(query::entry(c, id)?.map(|e| e.len(query::body_part(dir))))
}

/// `len` bytes of the stored body from `offset`.
fn stored_piece(
    c: &Reader<'_>,
    id: u64,
    dir: BodyDir,
    offset: usize,
    len: usize,
) -> rusqlite::Result<Vec<u8>> {
    match query::entry(c, id)? {
        None => Ok(Vec::new()),
        Some(e) => e
            .read(query::body_part(dir), offset, len)
            .map_err(query::blob_error),
    }
}

/// The stored body, at most `cap` bytes of it.
fn stored_prefix(c: &Reader<'_>, id: u64, dir: BodyDir, cap: usize) -> rusqlite::Result<Vec<u8>> {
    stored_piece(c, id, dir, 0, cap)
}

/// A body for the inline view: an identity body needs only one byte past
/// the inline cap (to know it was cut); an encoded one is decoded whole.
fn view_of(c: &Reader<'_>, id: u64, dir: BodyDir, meta: BodyMeta) -> rusqlite::Result<BodyView> {
    let enc = meta.encoding.as_deref().unwrap_or("").trim();
    let identity = enc.is_empty() || enc.eq_ignore_ascii_case("identity");
    let cap = if identity {
        INLINE_BODY_CAP + 1
    } else {
        usize::MAX
    };
    let stored = stored_prefix(c, id, dir, cap)?;
    Ok(body_view(meta, stored))
}

/// `GET /api/records/{id}`: built on a blocking thread under a heavy-work
/// permit, held until the answer is sent.
pub async fn one(State(st): St, Path(id): Path<u64>) -> Response {
    let store = match store_of(&st) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let permit = match heavy_permit(&st).await {
        Ok(p) => p,
        Err(r) => return busy(r),
    };
    let found = blocking(move || {
        store.read(|c| {
            let Some(d) = query::detail(c, id)? else {
                return Ok(None);
            };
            let request = Side {
                headers: d.req_headers,
                body: view_of(c, id, BodyDir::Request, d.req_body)?,
            };
            let response = Side {
                headers: d.resp_headers,
                body: view_of(c, id, BodyDir::Response, d.resp_body)?,
            };
            let view = DetailView {
                timings: Phases::from_timings(&d.timings),
                offsets_us: d.timings,
                request,
                response,
                summary: d.summary,
            };
            serde_json::to_vec(&view)
                .map(|v| Some(Bytes::from(v)))
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
        })
    })
    .await;
    match found {
        Ok(Some(json)) => {
            let len = json.len();
            let mut resp = stream::whole(json, permit).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            resp
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no record {id}")),
        Err(r) => r.into_response(),
    }
}

/// What a body download sends: the stored bytes, or their decoding.
struct Download {
    meta: BodyMeta,
    /// Bytes the answer will carry.
    len: usize,
    /// The decoded output stopped at the cap, or decoding broke off.
    cut: bool,
    decoded: bool,
    /// The stored (encoded) body, when it is decoded.
    encoded: Option<Vec<u8>>,
}

/// Plans a download on the blocking thread: for a decoded one, a first
/// pass counts the output without keeping it (the answer's length and
/// `x-sluice-truncated` are known before the first byte, and a body that
/// cannot be decoded is a 422, as before), so the second pass can stream.
fn plan_download(
    c: &Reader<'_>,
    id: u64,
    dir: BodyDir,
    want_decoded: bool,
) -> rusqlite::Result<Option<Result<Download, String>>> {
    let Some(d) = query::detail(c, id)? else {
        return Ok(None);
    };
    let meta = match dir {
        BodyDir::Request => d.req_body,
        BodyDir::Response => d.resp_body,
    };
    let stored_len = stored_len(c, id, dir)?.unwrap_or(0);
    let enc = meta.encoding.clone().unwrap_or_default();
    let identity = enc.trim().is_empty() || enc.trim().eq_ignore_ascii_case("identity");
    if !want_decoded || identity || stored_len == 0 {
        let len = if want_decoded {
            stored_len.min(DECODE_CAP)
        } else {
            stored_len
        };
        return Ok(Some(Ok(Download {
            meta,
            len,
            cut: want_decoded && stored_len > DECODE_CAP,
            decoded: false,
            encoded: None,
        })));
    }
    let encoded = stored_prefix(c, id, dir, usize::MAX)?;
    let mut reader = match decode::reader(&enc, &encoded) {
        Ok(r) => r,
        Err(e) => return Ok(Some(Err(e.to_string()))),
    };
    let mut scratch = vec![0u8; 64 * 1024];
    let mut len = 0usize;
    let mut cut = false;
    loop {
        let want = (DECODE_CAP + 1 - len).min(scratch.len());
        match std::io::Read::read(&mut reader, &mut scratch[..want]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len > DECODE_CAP {
                    len = DECODE_CAP;
                    cut = true;
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if len == 0 => return Ok(Some(Err(decode::read_error(e, &enc).to_string()))),
            // Broke off after some output (a capture cut at its limit):
            // the part that decoded, marked truncated.
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    drop(reader);
    Ok(Some(Ok(Download {
        meta,
        len,
        cut,
        decoded: true,
        encoded: Some(encoded),
    })))
}

/// `GET /api/records/{id}/body/{request|response}[?decode=1]`: the body as
/// stored (still encoded), or decoded; streamed in pieces under a
/// heavy-work permit.
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
    let permit = match heavy_permit(&st).await {
        Ok(p) => p,
        Err(r) => return busy(r),
    };
    let planned = {
        let store = store.clone();
        blocking(move || store.read(|c| plan_download(c, id, dir, want_decoded))).await
    };
    let mut plan = match planned {
        Ok(Some(Ok(p))) => p,
        Ok(Some(Err(e))) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("cannot decode the {} body: {e}", dir.as_str()),
            )
        }
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no record {id}")),
        Err(r) => return r.into_response(),
    };
    let meta = &plan.meta;
    let mut headers = vec![(
        header::CONTENT_TYPE.as_str(),
        meta.content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into()),
    )];
    if want_decoded {
        if plan.decoded {
            headers.push((
                "x-sluice-decoded-from",
                meta.encoding.clone().unwrap_or_default(),
            ));
        }
        if plan.cut || meta.truncated {
            headers.push(("x-sluice-truncated", "true".into()));
        }
    } else {
        if let Some(e) = &meta.encoding {
            headers.push(("x-sluice-content-encoding", e.clone()));
        }
        if meta.truncated {
            headers.push(("x-sluice-truncated", "true".into()));
        }
    }
    headers.push(("x-sluice-wire-size", meta.size.to_string()));
    headers.push((header::CONTENT_LENGTH.as_str(), plan.len.to_string()));
    let len = plan.len;
    let encoded = plan.encoded.take();
    let enc = plan.meta.encoding.clone().unwrap_or_default();
    let body = stream::from_blocking(st.body_idle_timeout, permit, move |sink| {
        match encoded {
            // Decoded: the second pass, stopped at the planned length.
            Some(encoded) => {
                let mut reader = decode::reader(&enc, &encoded).map_err(|e| e.to_string())?;
                let mut sent = 0usize;
                while sent < len {
                    let mut piece = vec![0u8; (len - sent).min(READ_PIECE)];
                    let mut got = 0;
                    while got < piece.len() {
                        match std::io::Read::read(&mut reader, &mut piece[got..]) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                    if got == 0 {
                        return Err("the decoded body ended early".into());
                    }
                    piece.truncate(got);
                    sent += got;
                    if !sink(Bytes::from(piece)) {
                        return Err("the reader went away".into());
                    }
                }
                Ok(())
            }
            // Stored bytes: read piece by piece from the store.
            None => {
                let mut sent = 0usize;
                while sent < len {
                    let want = (len - sent).min(READ_PIECE);
                    let piece = store
                        .read(|c| stored_piece(c, id, dir, sent, want))
                        .map_err(|e| e.to_string())?;
                    if piece.is_empty() {
                        return Err("the stored body ended early (deleted meanwhile?)".into());
                    }
                    sent += piece.len();
                    if !sink(Bytes::from(piece)) {
                        return Err("the reader went away".into());
                    }
                }
                Ok(())
            }
        }
    });
    let mut resp = body.into_response();
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
/// Readers are capped in all and per client (past it: 503).
pub async fn live(
    State(st): St,
    client: Option<axum::Extension<ClientIp>>,
    RawQuery(q): RawQuery,
) -> Response {
    let filter = match filter_from(q.as_deref()) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let seat = match live_seat(&st, client) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    // The cursor and the page size mean nothing for a feed.
    let filter = Filter {
        before_id: None,
        ..filter
    };
    let stream = BroadcastStream::new(st.recorder.subscribe()).filter_map(move |item| {
        // The seat lives as long as the feed.
        let _seat = &seat;
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
