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
use crate::record::capture::Exchange;
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
        // The record this body feeds, when recording.
        tap: Option<Arc<Exchange>>,
        // False for a body read on the way to another metered body (a
        // response collected for a rewrite): its bytes are counted there.
        counted: bool,
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
            tap: None,
            counted: true,
        }
    }

    /// Leaves the connection's byte counters alone (the deadline and the
    /// error attribution stay).
    pub fn uncounted(mut self) -> Self {
        self.counted = false;
        self
    }

    /// Feeds the frames (and the end, or the failure) to a record.
    pub fn with_tap(mut self, tap: Option<Arc<Exchange>>) -> Self {
        self.tap = tap;
        self
    }
}

/// What a tap learns from one poll.
fn tap_frame(tap: &Exchange, direction: Direction, data: &Bytes, ended: bool) {
    match direction {
        Direction::Up => {
            tap.request_chunk(data);
            if ended {
                tap.request_done();
            }
        }
        Direction::Down => {
            tap.response_chunk(data);
            if ended {
                tap.response_done();
            }
        }
    }
}

fn tap_end(tap: &Exchange, direction: Direction) {
    match direction {
        Direction::Up => tap.request_done(),
        Direction::Down => tap.response_done(),
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
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if *this.counted {
                        let counter = match this.direction {
                            Direction::Up => &this.entry.bytes_up,
                            Direction::Down => &this.entry.bytes_down,
                        };
                        counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    if let Some(tap) = this.tap.as_deref() {
                        // A body of known length may never be polled for
                        // its end: its last frame is its end.
                        let ended = this.inner.is_end_stream();
                        tap_frame(tap, *this.direction, data, ended);
                    }
                }
                *this.last_progress = Instant::now();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let err = BodyError {
                    side: *this.side,
                    idle: None,
                    source: Some(e.into()),
                };
                if let Some(tap) = this.tap.as_deref() {
                    tap.fail(err.to_string());
                }
                Poll::Ready(Some(Err(Box::new(err))))
            }
            Poll::Ready(None) => {
                this.inflight.take();
                if let Some(tap) = this.tap.as_deref() {
                    tap_end(tap, *this.direction);
                }
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
                    Poll::Ready(()) => {
                        let err = BodyError {
                            side: *this.side,
                            idle: Some(*this.idle),
                            source: None,
                        };
                        if let Some(tap) = this.tap.as_deref() {
                            tap.fail(err.to_string());
                        }
                        Poll::Ready(Some(Err(Box::new(err))))
                    }
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
