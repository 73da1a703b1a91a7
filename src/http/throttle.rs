//! `throttle://` and `reqThrottle://` on HTTP bodies: a body wrapper that
//! holds a byte rate by pacing frames with a [`Pacer`].
//!
//! Invariants: at most one inner frame is held at a time (large frames
//! are split into the pacer's slices); trailers and the end pass through
//! unpaced.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::relay::Pacer;

pin_project_lite::pin_project! {
    /// Streams `inner` at no more than `bytes_per_sec` (0: unlimited).
    pub struct ThrottledBody<B> {
        #[pin]
        inner: B,
        // None: unlimited.
        pacer: Option<Pacer>,
        // The rest of a frame larger than one slice.
        held: Option<Bytes>,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> ThrottledBody<B> {
    /// No limit: frames pass as they come.
    pub fn unlimited(inner: B) -> Self {
        ThrottledBody {
            inner,
            pacer: None,
            held: None,
            sleep: None,
        }
    }

    pub fn new(inner: B, bytes_per_sec: u64) -> Self {
        ThrottledBody {
            inner,
            pacer: Some(Pacer::new(bytes_per_sec)),
            held: None,
            sleep: None,
        }
    }
}

impl<B> Body for ThrottledBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let Some(pacer) = this.pacer.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        // Wait for the slot of the next slice.
        if let Some(at) = pacer.ready_at() {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if sleep.deadline() != at {
                sleep.as_mut().reset(at);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let mut data = match this.held.take() {
            Some(d) => d,
            None => match this.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => d,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return other,
            },
        };
        if data.len() > pacer.slice() {
            *this.held = Some(data.split_off(pacer.slice()));
        }
        pacer.sent(data.len());
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(h) = &self.held {
            let extra = h.len() as u64;
            let lower = hint.lower() + extra;
            match hint.upper() {
                Some(u) => {
                    hint = SizeHint::with_exact(lower);
                    hint.set_upper(u + extra);
                }
                None => hint.set_lower(lower),
            }
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use tokio::time::{Duration, Instant};

    #[tokio::test(start_paused = true)]
    async fn holds_the_rate_and_splits_frames() {
        let body = Full::new(Bytes::from(vec![7u8; 100_000]));
        let mut t = ThrottledBody::new(body, 10_000);
        assert_eq!(t.size_hint().exact(), Some(100_000));
        let started = Instant::now();
        let mut total = 0;
        let mut frames = 0;
        while let Some(frame) = t.frame().await {
            let data = frame.expect("infallible").into_data().expect("data");
            assert!(data.len() <= 500, "slices of 50 ms: {}", data.len());
            total += data.len();
            frames += 1;
        }
        assert_eq!(total, 100_000);
        assert_eq!(frames, 200);
        // The first slice leaves at once; the other 99,500 bytes take 9.95 s.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(9_900), "{took:?}");
        assert!(took <= Duration::from_millis(10_100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_builds_no_burst() {
        let body = Full::new(Bytes::from(vec![1u8; 1000]));
        let mut t = ThrottledBody::new(body, 5_000);
        let first = t.frame().await.expect("frame").expect("ok");
        assert_eq!(first.data_ref().map(|d| d.len()), Some(256));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let started = Instant::now();
        while t.frame().await.is_some() {}
        // 744 bytes after the idle pause: still paced, no saved credit
        // beyond the slot that came due.
        assert!(started.elapsed() >= Duration::from_millis(90));
    }
}
