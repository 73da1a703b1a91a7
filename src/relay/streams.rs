//! The duplex relay between two byte streams of any kind (TCP, or TLS
//! that sluice decrypts), with the tunnel lifecycle of [`super::relay`]
//! and a [`Tap`] on each direction that sees every byte after it was
//! written on (WebSocket frames are read from it).
//!
//! Each direction borrows a read buffer only while its stream has bytes
//! (the buffer is dropped whenever a read would wait; it grows from
//! `buffer_size` to at most [`GROWTH`] times it while reads come back
//! full, and shrinks back when they do not), writes a read out
//! in full before the next (backpressure), passes EOF on as a shutdown of
//! the other stream's write side (TLS: `close_notify`) and lets the other
//! direction finish. A tap that reports a closing handshake starts the
//! half-close grace, as an EOF would. Any error ends both directions; a
//! reset is passed on as a reset.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::duplex::{Activity, PumpError};
use super::pace::Pacer;
use super::{Deadlines, RelayLimits};
use crate::net::set_abortive_close;
use crate::registry::{CloseReason, ConnEntry, ConnState, NextDeadline, Side};

/// A stream the relay carries, and the socket under it (for a reset):
/// none for an HTTP/2 stream, whose connection carries other streams
/// (dropping the stream unfinished resets it alone).
pub trait Leg: AsyncRead + AsyncWrite + Unpin + Send {
    fn socket(&self) -> Option<&TcpStream>;
}

impl Leg for TcpStream {
    fn socket(&self) -> Option<&TcpStream> {
        Some(self)
    }
}

impl Leg for crate::transport::ClientStream {
    fn socket(&self) -> Option<&TcpStream> {
        Some(self.tcp())
    }
}

impl Leg for tokio_rustls::client::TlsStream<TcpStream> {
    fn socket(&self) -> Option<&TcpStream> {
        Some(self.get_ref().0)
    }
}

/// An HTTP/2 stream hyper handed over after a 2xx to an extended CONNECT.
impl Leg for hyper_util::rt::TokioIo<hyper::upgrade::Upgraded> {
    fn socket(&self) -> Option<&TcpStream> {
        None
    }
}

/// Resets `leg`'s connection when it has one of its own.
fn reset(leg: &impl Leg) {
    if let Some(s) = leg.socket() {
        set_abortive_close(s);
    }
}

/// Sees one direction's bytes after they were written on.
pub trait Tap: Send {
    /// `bytes` passed; returns true once this direction has begun a
    /// closing handshake (the peer must now finish within the grace).
    fn passed(&mut self, bytes: &[u8]) -> bool;

    /// The direction's filter took `unit` out before the bytes after it
    /// were written on.
    fn removed(&mut self, _unit: Removed) {}
}

/// A unit a filter took out of the stream (a WebSocket message a rule
/// dropped), and where it would have been in the filter's output.
#[derive(Debug)]
pub struct Removed {
    /// Offset into the output of the read that removed it.
    pub at: usize,
    pub opcode: u8,
    /// Its payload bytes on the wire.
    pub size: u64,
    /// Its payload as it came (unmasked), at most what the filter held.
    pub payload: Vec<u8>,
}

/// Turns one direction's bytes into what is written on (WebSocket
/// message rules); without one, bytes pass as read.
pub trait Filter: Send {
    /// `input` was read; append to `out` what to write (maybe nothing)
    /// and to `removed` what it took out, in stream order.
    fn filter(&mut self, input: &[u8], out: &mut Vec<u8>, removed: &mut Vec<Removed>);
}

/// Shows `tap` a filtered read in stream order: the bytes written on,
/// and what the filter took out where it was; returns whether the
/// direction has begun a closing handshake.
pub fn tap_filtered(tap: &mut dyn Tap, out: &[u8], removed: &mut Vec<Removed>) -> bool {
    let mut from = 0;
    for unit in removed.drain(..) {
        let at = unit.at.clamp(from, out.len());
        tap.passed(&out[from..at]);
        from = at;
        tap.removed(unit);
    }
    tap.passed(&out[from..])
}

/// A direction's tap and filter.
#[derive(Default)]
pub struct Hooks<'a> {
    pub tap: Option<&'a mut dyn Tap>,
    pub filter: Option<&'a mut dyn Filter>,
}

/// Relays between `client` and `upstream` until both directions finish,
/// a deadline passes, an error occurs or the entry's kill token fires;
/// returns why, with both streams (closed by the caller dropping them,
/// set to reset when the reason was one). The caller records the reason
/// on the entry: an HTTP/2 stream's end is not its connection's.
pub async fn relay_streams<C: Leg, U: Leg>(
    client: C,
    upstream: U,
    limits: RelayLimits,
    entry: &ConnEntry,
    up: Hooks<'_>,
    down: Hooks<'_>,
) -> (CloseReason, C, U) {
    let activity = Activity::new(Instant::now());
    let closing = Notify::new();
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let reason = {
        let up = pump(
            &mut cr,
            Side::Client,
            &mut uw,
            Side::Upstream,
            Flow {
                read_size: limits.buffer_size,
                rate: limits.up_rate,
                counter: &entry.bytes_up,
                activity: &activity,
                closing: &closing,
            },
            up,
        );
        let down = pump(
            &mut ur,
            Side::Upstream,
            &mut cw,
            Side::Client,
            Flow {
                read_size: limits.buffer_size,
                rate: limits.down_rate,
                counter: &entry.bytes_down,
                activity: &activity,
                closing: &closing,
            },
            down,
        );
        tokio::pin!(up, down);
        let mut deadlines = Deadlines::new(limits.idle, limits.half_close, activity.base);
        let show = |d: &Deadlines| {
            let (at, reason) = d.next();
            entry.set_deadline(Some(NextDeadline {
                at: at.into_std(),
                reason: reason.label(),
                idle_window: (reason == CloseReason::IdleTimeout).then_some(limits.idle),
            }));
            at
        };
        let sleep = tokio::time::sleep_until(show(&deadlines));
        tokio::pin!(sleep);
        let (mut up_done, mut down_done, mut close_begun) = (false, false, false);
        entry.set_state(ConnState::Streaming);
        loop {
            let finished: Result<Side, PumpError> = tokio::select! {
                r = &mut up, if !up_done => r.map(|_| Side::Client),
                r = &mut down, if !down_done => r.map(|_| Side::Upstream),
                _ = closing.notified(), if !close_begun => {
                    close_begun = true;
                    deadlines.on_half_close(Instant::now());
                    sleep.as_mut().reset(show(&deadlines));
                    continue;
                }
                _ = &mut sleep => {
                    deadlines.on_activity(activity.last());
                    if let Some(reason) = deadlines.expired(Instant::now()) {
                        break reason;
                    }
                    sleep.as_mut().reset(show(&deadlines));
                    continue;
                }
                _ = entry.kill.cancelled() => {
                    break entry.reason().unwrap_or(CloseReason::KilledByAdmin)
                }
            };
            match finished {
                Ok(side) => {
                    deadlines.on_activity(activity.last());
                    deadlines.on_half_close(Instant::now());
                    sleep.as_mut().reset(show(&deadlines));
                    if side == Side::Client {
                        up_done = true;
                        entry.set_state(ConnState::HalfClosedByClient);
                    } else {
                        down_done = true;
                        entry.set_state(ConnState::HalfClosedByUpstream);
                    }
                    if up_done && down_done {
                        break CloseReason::Eof;
                    }
                }
                Err(PumpError { side, error }) => break CloseReason::from_io(side, &error),
            }
        }
    };
    let client = cr.unsplit(cw);
    let upstream = ur.unsplit(uw);
    match &reason {
        CloseReason::Reset(Side::Client) | CloseReason::DeadPeer(Side::Client) => reset(&upstream),
        CloseReason::Reset(Side::Upstream) | CloseReason::DeadPeer(Side::Upstream) => {
            reset(&client)
        }
        CloseReason::Error(..) => {
            reset(&client);
            reset(&upstream);
        }
        _ => {}
    }
    (reason, client, upstream)
}

/// How far a direction's reads may grow past the configured buffer size
/// while they keep coming back full.
const GROWTH: usize = 4;

/// The next read's size after a read of `got` bytes asked for `asked`:
/// doubled when the read filled its buffer, halved when it used less than
/// a quarter, within `base..=most`.
fn next_read_size(asked: usize, got: usize, base: usize, most: usize) -> usize {
    if got >= asked {
        (asked * 2).min(most)
    } else if got < asked / 4 {
        (asked / 2).max(base)
    } else {
        asked
    }
}

/// What one direction moves with.
struct Flow<'a> {
    read_size: usize,
    /// Bytes per second, 0: unlimited.
    rate: u64,
    counter: &'a AtomicU64,
    activity: &'a Activity,
    closing: &'a Notify,
}

async fn pump<R, W>(
    from: &mut R,
    from_side: Side,
    to: &mut W,
    to_side: Side,
    flow: Flow<'_>,
    hooks: Hooks<'_>,
) -> Result<(), PumpError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let read_err = |error| PumpError {
        side: from_side,
        error,
    };
    let write_err = |error| PumpError {
        side: to_side,
        error,
    };
    let mut pacer = (flow.rate > 0).then(|| Pacer::new(flow.rate));
    let base = pacer
        .as_ref()
        .map_or(flow.read_size, |p| p.slice().min(flow.read_size))
        .max(1);
    // A paced direction reads one slice at a time; any other grows its
    // reads while they come back full (a bulk flow then costs a quarter
    // of the system calls and wake-ups) and shrinks them back when not.
    let most = if pacer.is_some() { base } else { base * GROWTH };
    let mut read_size = base;
    let Hooks {
        mut tap,
        mut filter,
    } = hooks;
    let mut buf: Option<Vec<u8>> = None;
    // What a filter made of a read (kept between reads, bounded below),
    // and what it took out.
    let mut filtered: Vec<u8> = Vec::new();
    let mut removed: Vec<Removed> = Vec::new();
    let mut told_closing = false;
    loop {
        let n = poll_fn(|cx| {
            let b = buf.get_or_insert_with(|| Vec::with_capacity(read_size));
            b.clear();
            b.reserve(read_size);
            match tokio_util::io::poll_read_buf(Pin::new(&mut *from), cx, b) {
                // Nothing to read: an idle direction holds no buffer.
                Poll::Pending => {
                    buf = None;
                    Poll::Pending
                }
                // A TLS peer that closes without close_notify (servers do,
                // after a WebSocket's closing handshake) has ended its
                // stream: passed on as EOF, so the other direction may
                // still finish (an HTTP/2 stream's END_STREAM, not a reset).
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    Poll::Ready(Ok(0))
                }
                ready => ready,
            }
        })
        .await
        .map_err(read_err)?;
        read_size = next_read_size(read_size, n, base, most);
        let Some(data) = buf.as_deref().filter(|_| n > 0) else {
            return match to.shutdown().await {
                Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(write_err(e)),
                _ => Ok(()),
            };
        };
        let data = match filter.as_mut() {
            Some(f) => {
                filtered.clear();
                if filtered.capacity() > 4 * most {
                    filtered.shrink_to(most);
                }
                f.filter(data, &mut filtered, &mut removed);
                &filtered[..]
            }
            None => data,
        };
        if !data.is_empty() {
            to.write_all(data).await.map_err(write_err)?;
            to.flush().await.map_err(write_err)?;
        }
        flow.counter.fetch_add(n as u64, Ordering::Relaxed);
        flow.activity.touch();
        match tap.as_mut() {
            Some(t) => {
                if tap_filtered(&mut **t, data, &mut removed) && !told_closing {
                    told_closing = true;
                    flow.closing.notify_one();
                }
            }
            // Nobody to show what the filter took out: it goes now, so a
            // filter without a tap holds nothing across reads.
            None => removed.clear(),
        }
        if let Some(p) = pacer.as_mut() {
            p.sent(n);
            p.wait().await;
            flow.activity.touch();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{next_read_size, tap_filtered, Removed, Tap};

    /// What a tap was shown, in order.
    #[derive(Default)]
    struct Seen(Vec<String>);

    impl Tap for Seen {
        fn passed(&mut self, bytes: &[u8]) -> bool {
            if !bytes.is_empty() {
                self.0.push(String::from_utf8_lossy(bytes).into_owned());
            }
            false
        }
        fn removed(&mut self, unit: Removed) {
            self.0
                .push(format!("-{}", String::from_utf8_lossy(&unit.payload)));
        }
    }

    #[test]
    fn a_filtered_read_is_shown_in_stream_order() {
        let unit = |at, p: &str| Removed {
            at,
            opcode: 1,
            size: p.len() as u64,
            payload: p.as_bytes().to_vec(),
        };
        let mut seen = Seen::default();
        let mut removed = vec![unit(0, "x"), unit(3, "y"), unit(3, "z"), unit(99, "w")];
        tap_filtered(&mut seen, b"abcdef", &mut removed);
        assert_eq!(seen.0, ["-x", "abc", "-y", "-z", "def", "-w"]);
        assert!(removed.is_empty());
    }

    #[test]
    fn reads_grow_while_full_and_shrink_back() {
        let (base, most) = (64, 256);
        assert_eq!(next_read_size(64, 64, base, most), 128);
        assert_eq!(next_read_size(128, 128, base, most), 256);
        assert_eq!(next_read_size(256, 256, base, most), 256, "capped");
        assert_eq!(next_read_size(256, 100, base, most), 256, "half full: kept");
        assert_eq!(next_read_size(256, 10, base, most), 128);
        assert_eq!(next_read_size(64, 1, base, most), 64, "never below base");
        assert_eq!(next_read_size(64, 0, base, most), 64);
    }
}
