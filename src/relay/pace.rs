//! [`Pacer`]: the schedule behind every bandwidth throttle (rule
//! `throttle://` and `reqThrottle://`, on HTTP bodies and on tunnels).
//!
//! Invariants: bytes leave in slices of about 50 ms worth, so the rate is
//! smooth; a slice's cost is paid after it leaves (the first slice goes at
//! once); no idle credit builds up, so a pause never becomes a burst.

use tokio::time::{Duration, Instant};

/// Paces a byte stream at a fixed rate.
#[derive(Debug, Clone)]
pub struct Pacer {
    bytes_per_sec: u64,
    /// When the next slice may leave.
    next_at: Option<Instant>,
}

impl Pacer {
    /// A pacer for `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> Pacer {
        Pacer {
            bytes_per_sec: bytes_per_sec.max(1),
            next_at: None,
        }
    }

    /// The largest piece to send at once: about 50 ms worth of bytes,
    /// within 256 B and 64 KiB.
    pub fn slice(&self) -> usize {
        (self.bytes_per_sec / 20).clamp(256, 64 * 1024) as usize
    }

    /// When the next slice may leave (`None`: now).
    pub fn ready_at(&self) -> Option<Instant> {
        self.next_at.filter(|at| *at > Instant::now())
    }

    /// Books `n` bytes that leave now: the next slice waits their cost.
    pub fn sent(&mut self, n: usize) {
        let now = Instant::now();
        let start = self.next_at.map_or(now, |at| at.max(now));
        let cost = Duration::from_secs_f64(n as f64 / self.bytes_per_sec as f64);
        self.next_at = Some(start + cost);
    }

    /// Waits until the next slice may leave.
    pub async fn wait(&self) {
        if let Some(at) = self.ready_at() {
            tokio::time::sleep_until(at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_slices_and_keeps_no_credit() {
        let mut p = Pacer::new(10_000);
        assert_eq!(p.slice(), 500);
        let started = Instant::now();
        for _ in 0..20 {
            p.wait().await;
            p.sent(500);
        }
        // 20 slices of 500 B at 10 kB/s: the first leaves at once, the
        // 20th after 19 x 50 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(950));
        tokio::time::sleep(Duration::from_secs(10)).await;
        // After a long pause the next slice goes at once, the one after
        // it waits its full cost: no saved credit.
        assert_eq!(p.ready_at(), None);
        p.sent(500);
        assert_eq!(
            p.ready_at().map(|at| at - Instant::now()),
            Some(Duration::from_millis(50))
        );
    }

    #[test]
    fn slices_are_bounded() {
        assert_eq!(Pacer::new(0).slice(), 256);
        assert_eq!(Pacer::new(1 << 40).slice(), 64 * 1024);
    }
}
