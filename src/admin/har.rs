//! `GET /api/har`: the records matching a filter as one HAR 1.2 download,
//! streamed while it is written.
//!
//! Invariants: the export runs on a blocking thread and hands pieces over a
//! bounded channel, so memory stays at a few pieces whatever the export's
//! size; a reader that stops reading for the body idle timeout ends the
//! export; a response that cannot be finished is cut (an error in the
//! body), never ended as if complete, so a client never mistakes half a
//! document for a whole one.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::Stream;

use super::api::error;
use super::records::filtered_store;
use super::AdminState;
use crate::record::har::export;

/// Pieces (about [`crate::record::har::FLUSH_AT`] bytes each) in flight
/// between the export and the connection.
const PIECES_IN_FLIGHT: usize = 8;

/// How the export thread ended: `Ok` when the document is complete.
type Outcome = Arc<OnceLock<Result<(), String>>>;

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
    // A reader that takes no piece for this long has stalled.
    let idle = st.config.body_idle_timeout;
    let (tx, mut rx) = mpsc::channel::<Bytes>(PIECES_IN_FLIGHT);
    let outcome: Outcome = Arc::new(OnceLock::new());
    let handle = tokio::runtime::Handle::current();
    {
        let outcome = outcome.clone();
        tokio::task::spawn_blocking(move || {
            let mut stalled = false;
            let mut sink = |piece: Bytes| match handle.block_on(tx.send_timeout(piece, idle)) {
                Ok(()) => true,
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    stalled = true;
                    false
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
            };
            let result = export(&store, &filter, &mut sink);
            let result = match result {
                Ok(()) if stalled => Err(format!(
                    "HAR export stopped: the reader took nothing for {idle:?}"
                )),
                Ok(()) => Ok(()),
                Err(e) => Err(format!("HAR export failed: {e}")),
            };
            if let Err(e) = &result {
                tracing::warn!(error = %e, "HAR export did not finish");
            }
            let _ = outcome.set(result);
            // `tx` drops here, after the outcome is set: the stream reads
            // the outcome when it sees the channel close.
            drop(tx);
        });
    }
    // Nothing is sent before the first page was read: a store that cannot
    // be read is a plain 500.
    let first = rx.recv().await;
    if first.is_none() {
        let message = match outcome.get() {
            Some(Err(e)) => e.clone(),
            _ => "HAR export ended without output".to_string(),
        };
        return error(StatusCode::INTERNAL_SERVER_ERROR, message);
    }
    let body = Body::from_stream(Pieces {
        first,
        rx,
        outcome,
        ended: false,
        _permit: permit,
    });
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

/// The export's pieces as a body stream; ends with an error unless the
/// export completed.
struct Pieces {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    outcome: Outcome,
    ended: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Stream for Pieces {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(piece) = self.first.take() {
            return Poll::Ready(Some(Ok(piece)));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        match ready!(self.rx.poll_recv(cx)) {
            Some(piece) => Poll::Ready(Some(Ok(piece))),
            None => {
                self.ended = true;
                match self.outcome.get() {
                    Some(Ok(())) => Poll::Ready(None),
                    Some(Err(e)) => Poll::Ready(Some(Err(io::Error::other(e.clone())))),
                    None => Poll::Ready(Some(Err(io::Error::other(
                        "HAR export stopped unexpectedly",
                    )))),
                }
            }
        }
    }
}
