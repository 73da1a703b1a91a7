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
    let (tx, rx) = mpsc::channel::<Bytes>(PIECES_IN_FLIGHT);
    let outcome: Arc<OnceLock<Result<(), String>>> = Arc::new(OnceLock::new());
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
            let _ = outcome.set(result);
            drop(tx);
        });
    }
    Body::from_stream(Pieces {
        rx,
        outcome,
        ended: false,
        _hold: hold,
    })
}

struct Pieces<H> {
    rx: mpsc::Receiver<Bytes>,
    outcome: Arc<OnceLock<Result<(), String>>>,
    ended: bool,
    _hold: H,
}

impl<H> Unpin for Pieces<H> {}

impl<H> Stream for Pieces<H> {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
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
