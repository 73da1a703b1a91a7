//! Admin routes over a record's messages (WebSocket messages and
//! server-sent events): one page at a time with filters and a cursor,
//! and a live feed of the messages stored from then on.
//!
//! Invariants: queries run on a blocking thread; a page is at most
//! [`MAX_PAGE`] messages (each at most the message limit); a bad filter is
//! a 400 that names it; the live feed shares the record feed's reader
//! seats and never blocks the writer (a slow reader is told it lagged).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use super::limits::ClientIp;
use super::records::{blocking, live_seat, query_pairs, store_of, Refusal};
use super::state::AdminState;
use crate::record::messages::{self, opcode, Direction, Filter, MessageRow};
use crate::record::query::parse_time;

type St = State<Arc<AdminState>>;

/// Messages per page by default, and at most.
const PAGE: usize = 200;
const MAX_PAGE: usize = 1000;

/// The filter in the query string, or a 400 naming what is wrong.
fn filter_from(raw: Option<&str>) -> Result<Filter, Refusal> {
    let bad = |key: &str, why: &str| Refusal(StatusCode::BAD_REQUEST, format!("{key}: {why}"));
    let mut f = Filter {
        limit: PAGE,
        ..Filter::default()
    };
    for (key, value) in query_pairs(raw) {
        match key.as_str() {
            "direction" => {
                f.direction = Some(
                    Direction::parse(&value)
                        .ok_or_else(|| bad(&key, "expected send or receive"))?,
                )
            }
            "opcode" => {
                f.opcode = Some(opcode::parse(&value).ok_or_else(|| {
                    bad(
                        &key,
                        "expected text, binary, close, ping, pong or continuation",
                    )
                })?)
            }
            "since" => {
                f.since_us = Some(
                    parse_time(&key, &value, SystemTime::now())
                        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?,
                )
            }
            "cursor" => {
                f.cursor = Some(
                    value
                        .parse()
                        .map_err(|_| bad(&key, "expected a message id"))?,
                )
            }
            "limit" => {
                let n: usize = value.parse().map_err(|_| bad(&key, "expected a number"))?;
                if n == 0 || n > MAX_PAGE {
                    return Err(bad(&key, "expected 1 to 1000"));
                }
                f.limit = n;
            }
            _ => {
                return Err(bad(
                    &key,
                    "unknown filter (direction, opcode, since, cursor, limit)",
                ))
            }
        }
    }
    Ok(f)
}

#[derive(Serialize)]
struct Totals {
    /// Messages that passed, stored or not.
    seen: u64,
    stored: u64,
    /// Payload bytes of every message that passed.
    bytes: u64,
    /// Why some were counted but not stored.
    unstored: Option<String>,
}

#[derive(Serialize)]
struct Page {
    record_id: u64,
    messages: Vec<MessageRow>,
    /// Pass as `cursor` for the next page; null at the end.
    next_cursor: Option<u64>,
    totals: Totals,
}

/// `GET /api/records/{id}/messages?direction=&opcode=&since=&cursor=&limit=`:
/// one page of the record's messages, oldest first.
pub async fn list(State(st): St, Path(id): Path<u64>, RawQuery(q): RawQuery) -> Response {
    let filter = match filter_from(q.as_deref()) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let store = match store_of(&st) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let limit = filter.limit;
    let found = blocking(move || {
        store.read(|c| {
            let Some((t, unstored)) = messages::totals(c, id)? else {
                return Ok(None);
            };
            let rows = messages::list(c, id, &filter)?;
            Ok(Some((t, unstored, rows)))
        })
    })
    .await;
    match found {
        Ok(Some((t, unstored, rows))) => {
            let next_cursor = (rows.len() == limit)
                .then(|| rows.last().map(|m| m.id))
                .flatten();
            Json(Page {
                record_id: id,
                messages: rows,
                next_cursor,
                totals: Totals {
                    seen: t.seen,
                    stored: t.stored,
                    bytes: t.bytes,
                    unstored,
                },
            })
            .into_response()
        }
        Ok(None) => Refusal(StatusCode::NOT_FOUND, format!("no record {id}")).into_response(),
        Err(r) => r.into_response(),
    }
}

/// `GET /api/records/{id}/messages/live?direction=&opcode=`: the record's
/// messages as Server-Sent Events as they are stored (`message` events
/// carrying a message; `lagged` when this reader fell behind). Read a page
/// first and start the feed from its last id (`cursor=`) to miss none.
pub async fn live(
    State(st): St,
    Path(id): Path<u64>,
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
    let direction = filter.direction.map(Direction::as_str);
    let op = filter.opcode.map(opcode::name);
    let after = filter.cursor.unwrap_or(0);
    let stream = BroadcastStream::new(st.recorder.subscribe_messages()).filter_map(move |item| {
        // The seat lives as long as the feed.
        let _seat = &seat;
        let event = match item {
            Ok(m) => {
                if m.record_id != id
                    || m.id <= after
                    || direction.is_some_and(|d| d != m.direction)
                    || op.is_some_and(|o| o != m.opcode)
                {
                    return None;
                }
                Event::default().event("message").json_data(&*m).ok()?
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
