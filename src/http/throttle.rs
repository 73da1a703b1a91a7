//! `throttle://` and `reqThrottle://`: a body wrapper that holds a byte
//! rate by pacing frames on the tokio timer.
//!
//! Invariants: at most one inner frame is held at a time (large frames
//! are split into slices of about 50 ms worth of bytes, so the rate is
//! smooth); no idle credit builds up, so a pause never becomes a burst;
//! trailers and the end pass through unpaced.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Duration, Instant, Sleep};

pin_project_lite::pin_project! {
    /// Streams `inner` at no more than `bytes_per_sec` (0: unlimited).
    pub struct ThrottledBody<B> {
        #[pin]
        inner: B,
        bytes_per_sec: u64,
        slice: usize,
        // The rest of a frame larger than one slice.
        held: Option<Bytes>,
        // When the next slice may leave.
        next_at: Option<Instant>,
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<B> ThrottledBody<B> {
    /// No limit: frames pass as they come.
    pub fn unlimited(inner: B) -> Self {
        ThrottledBody {
            inner,
            bytes_per_sec: 0,
            slice: usize::MAX,
            held: None,
            next_at: None,
            sleep: None,
        }
    }

    pub fn new(inner: B, bytes_per_sec: u64) -> Self {
        let bytes_per_sec = bytes_per_sec.max(1);
        let slice = (bytes_per_sec / 20).clamp(256, 64 * 1024) as usize;
        ThrottledBody {
            inner,
            bytes_per_sec,
            slice,
            held: None,
            next_at: None,
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
        if *this.bytes_per_sec == 0 {
            return this.inner.poll_frame(cx);
        }
        // Wait for the slot of the next slice.
        if let Some(at) = *this.next_at {
            if Instant::now() < at {
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
        if data.len() > *this.slice {
            *this.held = Some(data.split_off(*this.slice));
        }
        let now = Instant::now();
        let start = this.next_at.map_or(now, |at| at.max(now));
        let cost = Duration::from_secs_f64(data.len() as f64 / *this.bytes_per_sec as f64);
        *this.next_at = Some(start + cost);
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
