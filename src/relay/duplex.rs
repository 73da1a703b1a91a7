//! The duplex copy loop between two TCP sockets.
//!
//! Each direction waits for readiness without holding a buffer, borrows a
//! fixed-size buffer only while the socket has bytes, and writes them out in
//! full before reading more (so a slow reader stalls the opposite read:
//! backpressure). EOF becomes `shutdown(SHUT_WR)` on the other socket while
//! the opposite direction keeps flowing. Any error ends both directions.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use socket2::SockRef;
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::pace::Pacer;
use super::splice::Pipe;
use super::Deadlines;
use crate::net::set_abortive_close;
use crate::registry::{CloseReason, ConnEntry, ConnState, NextDeadline, Side};

/// Limits for one relayed connection.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    pub idle: Duration,
    pub half_close: Duration,
    pub buffer_size: usize,
    /// Client-to-upstream rate in bytes per second (0: unlimited).
    pub up_rate: u64,
    /// Upstream-to-client rate in bytes per second (0: unlimited).
    pub down_rate: u64,
}

impl RelayLimits {
    /// The configured deadlines and buffer size, unthrottled.
    pub fn new(config: &crate::config::RelayLimitsConfig) -> RelayLimits {
        RelayLimits {
            idle: config.idle_timeout,
            half_close: config.half_close_timeout,
            buffer_size: config.buffer_size,
            up_rate: 0,
            down_rate: 0,
        }
    }
}

/// Time of the last byte moved, in milliseconds since `base`. Written by both
/// directions, read lazily by the deadline check, so the hot path never
/// touches the timer wheel.
pub(super) struct Activity {
    pub(super) base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new(base: Instant) -> Activity {
        Activity {
            base,
            last_ms: AtomicU64::new(0),
        }
    }

    pub(super) fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    pub(super) fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Failure of one direction, attributed to the socket that failed.
pub(super) struct PumpError {
    pub(super) side: Side,
    pub(super) error: io::Error,
}

/// After this many bytes in one direction, the flow is bulk and moves to
/// `splice(2)`; small exchanges stay on plain reads and writes, which cost
/// fewer system calls and no pipe.
const SPLICE_AFTER: u64 = 1 << 20;

/// Copies `from` to `to` until EOF (then half-closes `to`) or an error,
/// at no more than `rate` bytes per second when it is not 0 (a throttled
/// direction reads one pacer slice at a time and never splices).
#[allow(clippy::too_many_arguments)]
async fn pump(
    from: &TcpStream,
    from_side: Side,
    to: &TcpStream,
    to_side: Side,
    buffer_size: usize,
    rate: u64,
    counter: &AtomicU64,
    activity: &Activity,
) -> Result<(), PumpError> {
    let read_err = |error| PumpError {
        side: from_side,
        error,
    };
    let write_err = |error| PumpError {
        side: to_side,
        error,
    };
    let mut moved: u64 = 0;
    let mut pipe: Option<Pipe> = None;
    let mut pacer = (rate > 0).then(|| Pacer::new(rate));
    let read_size = pacer
        .as_ref()
        .map_or(buffer_size, |p| p.slice().min(buffer_size));
    let mut splice_ok = pacer.is_none();
    loop {
        from.readable().await.map_err(read_err)?;
        if splice_ok && moved >= SPLICE_AFTER {
            if pipe.is_none() {
                match Pipe::new() {
                    Ok(p) => pipe = Some(p),
                    Err(_) => splice_ok = false,
                }
            }
            if let Some(p) = &pipe {
                match splice_burst(from, to, p, counter, activity, &mut moved).await {
                    Ok(Burst::Drained) => continue,
                    Ok(Burst::Eof) => return pass_eof(to).map_err(write_err),
                    Ok(Burst::Unsupported) => splice_ok = false,
                    Err(e) => return Err(e.attribute(from_side, to_side)),
                }
            }
        }
        // The buffer lives only while the socket has bytes: idle tunnels
        // cost no buffer memory.
        let mut buf: Vec<u8> = Vec::with_capacity(read_size);
        loop {
            buf.clear();
            match from.try_read_buf(&mut buf) {
                Ok(0) => return pass_eof(to).map_err(write_err),
                Ok(n) => {
                    write_all(to, &buf[..n]).await.map_err(write_err)?;
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    activity.touch();
                    moved += n as u64;
                    if let Some(p) = pacer.as_mut() {
                        p.sent(n);
                        p.wait().await;
                        // Waiting on the pacer is progress, not idleness.
                        activity.touch();
                    }
                    if splice_ok && moved >= SPLICE_AFTER {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(read_err(e)),
            }
        }
    }
}

/// Passes EOF on: the peer may still send in the other direction.
/// ENOTCONN here means `to` is already gone, which is not an error.
fn pass_eof(to: &TcpStream) -> io::Result<()> {
    match SockRef::from(to).shutdown(Shutdown::Write) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(()),
    }
}

enum Burst {
    /// The socket has nothing more for now.
    Drained,
    Eof,
    /// splice(2) refused these descriptors; fall back to copying.
    Unsupported,
}

/// A splice failure, before it is attributed to a side.
enum SpliceError {
    Read(io::Error),
    Write(io::Error),
}

impl SpliceError {
    fn attribute(self, from: Side, to: Side) -> PumpError {
        match self {
            SpliceError::Read(error) => PumpError { side: from, error },
            SpliceError::Write(error) => PumpError { side: to, error },
        }
    }
}

/// Splices until `from` would block, draining the pipe into `to` after
/// every fill.
async fn splice_burst(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    counter: &AtomicU64,
    activity: &Activity,
    moved: &mut u64,
) -> Result<Burst, SpliceError> {
    let (from_fd, to_fd) = (from.as_raw_fd(), to.as_raw_fd());
    loop {
        let n = match from.try_io(Interest::READABLE, || pipe.fill_from(from_fd)) {
            Ok(0) => return Ok(Burst::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Burst::Drained),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(Burst::Unsupported),
            Err(e) => return Err(SpliceError::Read(e)),
        };
        let mut left = n;
        while left > 0 {
            to.writable().await.map_err(SpliceError::Write)?;
            match to.try_io(Interest::WRITABLE, || pipe.drain_into(to_fd, left)) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(SpliceError::Write(e)),
            }
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        activity.touch();
        *moved += n as u64;
    }
}

/// Writes all of `data`, waiting for socket readiness.
pub(crate) async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Relays between `client` and `upstream` until both directions finish, a
/// deadline passes, an error occurs or the entry's kill token fires.
/// Returns why it ended; on a reset, the other leg is set to close with a
/// reset too. Both sockets are closed by the caller dropping them.
pub async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    limits: RelayLimits,
    entry: &ConnEntry,
) -> CloseReason {
    let activity = Activity::new(Instant::now());
    let up = pump(
        client,
        Side::Client,
        upstream,
        Side::Upstream,
        limits.buffer_size,
        limits.up_rate,
        &entry.bytes_up,
        &activity,
    );
    let down = pump(
        upstream,
        Side::Upstream,
        client,
        Side::Client,
        limits.buffer_size,
        limits.down_rate,
        &entry.bytes_down,
        &activity,
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
    let (mut up_done, mut down_done) = (false, false);
    entry.set_state(ConnState::Streaming);

    let reason = loop {
        let finished: Result<Side, PumpError> = tokio::select! {
            r = &mut up, if !up_done => r.map(|_| Side::Client),
            r = &mut down, if !down_done => r.map(|_| Side::Upstream),
            _ = &mut sleep => {
                let now = Instant::now();
                deadlines.on_activity(activity.last());
                if let Some(reason) = deadlines.expired(now) {
                    break reason;
                }
                sleep.as_mut().reset(show(&deadlines));
                continue;
            }
            _ = entry.kill.cancelled() => break entry.reason().unwrap_or(CloseReason::KilledByAdmin),
        };
        match finished {
            Ok(side) => {
                let now = Instant::now();
                deadlines.on_activity(activity.last());
                deadlines.on_half_close(now);
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
    };
    // Pass a reset on as a reset, so the surviving peer learns at once that
    // the stream was cut rather than completed.
    match &reason {
        CloseReason::Reset(Side::Client) | CloseReason::DeadPeer(Side::Client) => {
            set_abortive_close(upstream)
        }
        CloseReason::Reset(Side::Upstream) | CloseReason::DeadPeer(Side::Upstream) => {
            set_abortive_close(client)
        }
        CloseReason::Error(..) => {
            set_abortive_close(client);
            set_abortive_close(upstream);
        }
        _ => {}
    }
    entry.set_reason(reason.clone());
    reason
}
