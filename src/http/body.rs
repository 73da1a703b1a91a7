//! Body wrappers for the forward path: count bytes live, enforce the body
//! idle deadline, attribute errors to the side that failed, and release the
//! connection's in-flight mark when a response ends.
//!
//! Bodies are streamed frame by frame; nothing here buffers a body.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::activity::InflightGuard;
use crate::registry::{ConnEntry, Side};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body failure, with the side it came from.
#[derive(Debug)]
pub struct BodyError {
    pub side: Side,
    pub idle: Option<Duration>,
    pub source: Option<BoxError>,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.idle, &self.source) {
            (Some(d), _) => write!(
                f,
                "{} body made no progress for {}",
                self.side.as_str(),
                humantime::format_duration(*d)
            ),
            (None, Some(e)) => write!(f, "{} body failed: {}", self.side.as_str(), e),
            (None, None) => write!(f, "{} body failed", self.side.as_str()),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Which counter of the connection entry a body feeds.
#[derive(Debug, Clone, Copy)]
pub enum Direction {
    /// Client to upstream (request bodies).
    Up,
    /// Upstream to client (response bodies).
    Down,
}

pin_project_lite::pin_project! {
    /// Streams `inner` while metering it and bounding its idle time.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        entry: Arc<ConnEntry>,
        direction: Direction,
        side: Side,
        idle: Duration,
        last_progress: Instant,
        // Created on the first Pending only: bodies that are always ready
        // never touch the timer wheel.
        sleep: Option<Pin<Box<Sleep>>>,
        inflight: Option<InflightGuard>,
    }
}

impl<B> MeteredBody<B> {
    pub fn new(
        inner: B,
        entry: Arc<ConnEntry>,
        direction: Direction,
        side: Side,
        idle: Duration,
        inflight: Option<InflightGuard>,
    ) -> Self {
        MeteredBody {
            inner,
            entry,
            direction,
            side,
            idle,
            last_progress: Instant::now(),
            sleep: None,
            inflight,
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let counter = match this.direction {
                        Direction::Up => &this.entry.bytes_up,
                        Direction::Down => &this.entry.bytes_down,
                    };
                    counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                *this.last_progress = Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(BodyError {
                side: *this.side,
                idle: None,
                source: Some(e.into()),
            })))),
            Poll::Ready(None) => {
                this.inflight.take();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let deadline = *this.last_progress + *this.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyError {
                        side: *this.side,
                        idle: Some(*this.idle),
                        source: None,
                    })))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
