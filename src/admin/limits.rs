//! What keeps admin clients from starving each other or the proxy: a
//! connection budget per client IP (and in all) that makes room by
//! closing the oldest idle connection, a write-progress deadline, a cap on
//! live-feed readers, and a bound on heavy work (record detail, decoded
//! body, HAR export).
//!
//! Invariants: a fresh connection is always admitted while some admin
//! connection is idle (no request in flight): idle keep-alive connections
//! are the ones closed to make room, oldest first, so holding a thousand
//! idle connections locks nobody out; a response that makes no write
//! progress for [`WRITE_DEADLINE`] loses its connection; at most
//! [`heavy_permits`] heavy requests run at once, each holding its permit
//! until its body is sent, so their memory is bounded whatever the number
//! of clients asking.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Admin connections one client IP may hold.
pub const PER_CLIENT_CONNECTIONS: usize = 128;
/// Admin connections in all.
pub const TOTAL_CONNECTIONS: usize = 512;
/// A keep-alive connection with no request in flight closes after this
/// (and a new one never waits for a request head longer).
pub const IDLE_DEADLINE: Duration = Duration::from_secs(5);
/// A response whose writes make no progress for this long is cut: a
/// reader that stopped reading holds nothing for longer.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Live-feed (SSE) readers in all, and per client IP.
pub const LIVE_READERS_TOTAL: usize = 64;
pub const LIVE_READERS_PER_CLIENT: usize = 16;
/// How long a heavy request waits for a permit before it is told to retry.
pub const HEAVY_WAIT: Duration = Duration::from_secs(3);

/// Heavy requests (detail, decoded body, HAR) at once: half the CPUs, at
/// least one, so the proxy's workers keep the rest.
pub fn heavy_permits() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() / 2)
        .unwrap_or(1)
        .clamp(1, 4)
}

/// One admin connection as the budget sees it.
#[derive(Debug)]
pub struct ConnSlot {
    seq: u64,
    pub ip: IpAddr,
    /// Requests whose response is not fully sent yet.
    in_flight: AtomicUsize,
    /// Cancelled to close the connection to make room for a new one.
    pub evict: CancellationToken,
}

impl ConnSlot {
    /// Marks a request in flight until the guard drops (with its body).
    pub fn busy(self: &Arc<Self>) -> BusyGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        BusyGuard(self.clone())
    }

    fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

#[derive(Debug)]
pub struct BusyGuard(Arc<ConnSlot>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The admin connections by client IP, oldest first.
#[derive(Default)]
pub struct ConnTable {
    inner: Mutex<TableInner>,
}

#[derive(Default)]
struct TableInner {
    next_seq: u64,
    total: usize,
    by_ip: HashMap<IpAddr, VecDeque<Arc<ConnSlot>>>,
}

/// A connection's place in the table; leaving it frees the place.
pub struct Seat {
    table: Arc<ConnTable>,
    pub slot: Arc<ConnSlot>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut t = self.table.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(list) = t.by_ip.get_mut(&self.slot.ip) {
            if let Some(i) = list.iter().position(|s| s.seq == self.slot.seq) {
                list.remove(i);
                if list.is_empty() {
                    t.by_ip.remove(&self.slot.ip);
                }
                t.total -= 1;
            }
        }
    }
}

impl ConnTable {
    /// Seats a new connection from `ip`, closing the oldest idle one of
    /// the same client (or, at the total budget, of any client) to make
    /// room. `None` when every connection in the way is busy.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Seat> {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let own = t.by_ip.get(&ip).map_or(0, VecDeque::len);
        if own >= PER_CLIENT_CONNECTIONS && !Self::evict_oldest_idle(&mut t, Some(ip)) {
            return None;
        }
        if t.total >= TOTAL_CONNECTIONS
            && !Self::evict_oldest_idle(&mut t, Some(ip))
            && !Self::evict_oldest_idle(&mut t, None)
        {
            return None;
        }
        t.next_seq += 1;
        let slot = Arc::new(ConnSlot {
            seq: t.next_seq,
            ip,
            in_flight: AtomicUsize::new(0),
            evict: CancellationToken::new(),
        });
        t.by_ip.entry(ip).or_default().push_back(slot.clone());
        t.total += 1;
        Some(Seat {
            table: self.clone(),
            slot,
        })
    }

    /// Removes (and cancels) the oldest idle connection of `ip`, or of
    /// anyone; whether one was found.
    fn evict_oldest_idle(t: &mut TableInner, ip: Option<IpAddr>) -> bool {
        let pick = match ip {
            Some(ip) => t
                .by_ip
                .get(&ip)
                .and_then(|l| l.iter().find(|s| s.idle()).cloned()),
            None => t
                .by_ip
                .values()
                .filter_map(|l| l.iter().find(|s| s.idle()))
                .min_by_key(|s| s.seq)
                .cloned(),
        };
        let Some(victim) = pick else { return false };
        victim.evict.cancel();
        if let Some(list) = t.by_ip.get_mut(&victim.ip) {
            if let Some(i) = list.iter().position(|s| s.seq == victim.seq) {
                list.remove(i);
                t.total -= 1;
            }
            if list.is_empty() {
                t.by_ip.remove(&victim.ip);
            }
        }
        true
    }

    pub fn total(&self) -> usize {
        self.inner.lock().map(|t| t.total).unwrap_or(0)
    }
}

/// Live-feed readers, in all and by client.
#[derive(Default)]
pub struct LiveReaders {
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// A live-feed reader's place; the feed holds it while it streams.
pub struct LiveSeat {
    readers: Arc<LiveReaders>,
    ip: IpAddr,
}

impl Drop for LiveSeat {
    fn drop(&mut self) {
        let mut m = self.readers.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl LiveReaders {
    /// A seat for one more reader from `ip`, or the reason there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<LiveSeat, String> {
        let mut m = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = m.values().sum();
        let own = m.get(&ip).copied().unwrap_or(0);
        if own >= LIVE_READERS_PER_CLIENT {
            return Err(format!(
                "too many live-feed readers from {ip} ({own}, at most \
                 {LIVE_READERS_PER_CLIENT}): close another tab or reader"
            ));
        }
        if total >= LIVE_READERS_TOTAL {
            return Err(format!(
                "too many live-feed readers ({total}, at most {LIVE_READERS_TOTAL}): \
                 close another tab or reader"
            ));
        }
        *m.entry(ip).or_insert(0) += 1;
        Ok(LiveSeat {
            readers: self.clone(),
            ip,
        })
    }
}

/// The bound on heavy work.
pub struct Heavy {
    permits: Arc<Semaphore>,
    pub max: usize,
}

impl Default for Heavy {
    fn default() -> Self {
        let max = heavy_permits();
        Heavy {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

impl Heavy {
    /// A permit within [`HEAVY_WAIT`], or `None` (the caller answers 503).
    pub async fn acquire(&self) -> Option<OwnedSemaphorePermit> {
        tokio::time::timeout(HEAVY_WAIT, self.permits.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }
}

/// The client's IP, put in each request's extensions by the connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// A stream that remembers since when a write has been waiting: the
/// connection's watchdog cuts it when that passes [`WRITE_DEADLINE`].
pub struct ProgressIo<S> {
    inner: S,
    started: Instant,
    /// Milliseconds after `started` + 1 at which the pending write began
    /// (0: no write waiting).
    pub blocked_since: Arc<AtomicU64>,
}

impl<S> ProgressIo<S> {
    pub fn new(inner: S) -> (ProgressIo<S>, WriteWatch) {
        let blocked = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        (
            ProgressIo {
                inner,
                started,
                blocked_since: blocked.clone(),
            },
            WriteWatch { blocked, started },
        )
    }

    fn note(&self, pending: bool) {
        if pending {
            if self.blocked_since.load(Ordering::Relaxed) == 0 {
                let ms = self.started.elapsed().as_millis() as u64 + 1;
                self.blocked_since.store(ms, Ordering::Relaxed);
            }
        } else {
            self.blocked_since.store(0, Ordering::Relaxed);
        }
    }
}

/// The watchdog's view of a [`ProgressIo`].
pub struct WriteWatch {
    blocked: Arc<AtomicU64>,
    started: Instant,
}

impl WriteWatch {
    /// How long the current write has been waiting (zero when none is).
    pub fn stalled_for(&self) -> Duration {
        match self.blocked.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => {
                let now = self.started.elapsed().as_millis() as u64 + 1;
                Duration::from_millis(now.saturating_sub(since))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProgressIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProgressIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(r.is_pending());
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(r.is_pending());
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(r.is_pending());
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_client_budget_closes_its_oldest_idle_connection() {
        let t = Arc::new(ConnTable::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let seats: Vec<_> = (0..PER_CLIENT_CONNECTIONS)
            .map(|_| t.admit(ip).unwrap())
            .collect();
        let _busy = seats[0].slot.busy();
        let extra = t.admit(ip).expect("room is made");
        assert!(!seats[0].slot.evict.is_cancelled(), "a busy one is kept");
        assert!(seats[1].slot.evict.is_cancelled(), "the oldest idle goes");
        assert_eq!(t.total(), PER_CLIENT_CONNECTIONS);
        drop(seats);
        drop(extra);
        assert_eq!(t.total(), 0);
    }

    #[test]
    fn live_readers_are_capped_per_client() {
        let r = Arc::new(LiveReaders::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let seats: Vec<_> = (0..LIVE_READERS_PER_CLIENT)
            .map(|_| r.admit(ip).unwrap())
            .collect();
        assert!(r.admit(ip).err().unwrap().contains("too many"));
        drop(seats);
        assert!(r.admit(ip).is_ok());
    }
}
