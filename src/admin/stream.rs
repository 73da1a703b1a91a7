//! Response bodies produced on a blocking thread and streamed: the
//! producer hands pieces over a bounded channel, so a response holds a
//! few pieces in memory whatever its size.
//!
//! Invariants: a reader that takes no piece for the idle deadline ends
//! the producer; a body that cannot be finished ends with an error (the
//! connection is cut), never as if complete; whatever `hold` is (a heavy
//! work permit) lives until the body is done or dropped.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::Stream;

/// Pieces in flight between a producer and its connection.
const PIECES_IN_FLIGHT: usize = 4;

/// Hands one piece to the connection; `false` means stop (the reader is
/// gone or stalled).
pub type Sink<'a> = dyn FnMut(Bytes) -> bool + 'a;

/// Runs `produce` on a blocking thread and returns the body of what it
/// sends. `produce` returns `Err(message)` when the body is incomplete.
pub fn from_blocking<H: Send + 'static>(
    idle: Duration,
    hold: H,
    produce: impl FnOnce(&mut Sink<'_>) -> Result<(), String> + Send + 'static,
) -> Body {
    let (rx, outcome) = spawn_producer(idle, produce);
    Body::from_stream(Pieces {
        first: None,
        rx,
        outcome,
        ended: false,
        _hold: hold,
    })
}

/// [`from_blocking`], waiting for the first piece before answering: a
/// producer that fails before sending anything gives `Err(message)`, so
/// the caller can answer with a plain error status instead of a cut body.
pub async fn from_blocking_first<H: Send + 'static>(
    idle: Duration,
    hold: H,
    produce: impl FnOnce(&mut Sink<'_>) -> Result<(), String> + Send + 'static,
) -> Result<Body, String> {
    let (mut rx, outcome) = spawn_producer(idle, produce);
    let Some(first) = rx.recv().await else {
        return Err(match outcome.get() {
            Some(Err(e)) => e.clone(),
            _ => "the body ended without output".to_string(),
        });
    };
    Ok(Body::from_stream(Pieces {
        first: Some(first),
        rx,
        outcome,
        ended: false,
        _hold: hold,
    }))
}

type Outcome = Arc<OnceLock<Result<(), String>>>;

/// Starts `produce` on a blocking thread with a sink over a bounded
/// channel; a piece not taken within `idle` stops it as stalled.
fn spawn_producer(
    idle: Duration,
    produce: impl FnOnce(&mut Sink<'_>) -> Result<(), String> + Send + 'static,
) -> (mpsc::Receiver<Bytes>, Outcome) {
    let (tx, rx) = mpsc::channel::<Bytes>(PIECES_IN_FLIGHT);
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
            let result = produce(&mut sink);
            let result = match result {
                Ok(()) if stalled => Err(format!("the reader took nothing for {idle:?}")),
                other => other,
            };
            if let Err(e) = &result {
                tracing::warn!(error = %e, "admin response body did not finish");
            }
            // The outcome is set before `tx` drops: the stream reads it
            // when it sees the channel close.
            let _ = outcome.set(result);
            drop(tx);
        });
    }
    (rx, outcome)
}

struct Pieces<H> {
    /// Taken by the caller before the head was sent, given out first.
    first: Option<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    outcome: Outcome,
    ended: bool,
    _hold: H,
}

impl<H> Unpin for Pieces<H> {}

impl<H> Stream for Pieces<H> {
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
                    None => {
                        Poll::Ready(Some(Err(io::Error::other("the body stopped unexpectedly"))))
                    }
                }
            }
        }
    }
}

/// A body already built, with `hold` kept until it is sent.
pub fn whole<H: Send + 'static>(bytes: Bytes, hold: H) -> Body {
    Body::from_stream(Once {
        bytes: Some(bytes),
        _hold: hold,
    })
}

struct Once<H> {
    bytes: Option<Bytes>,
    _hold: H,
}

impl<H> Unpin for Once<H> {}

impl<H> Stream for Once<H> {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.bytes.take().map(Ok))
    }
}
