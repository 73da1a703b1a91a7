//! Deadline arithmetic for a duplex relay, free of I/O so it is tested with
//! simulated time.
//!
//! Two deadlines govern a tunnel: the idle deadline (no byte either way for
//! `idle`) and, once one side has half-closed, the half-close grace (the
//! rest must finish within `half_close`). A half-closed tunnel obeys both.

use std::time::Duration;

use tokio::time::Instant;

use crate::registry::CloseReason;

#[derive(Debug, Clone)]
pub struct Deadlines {
    idle: Duration,
    half_close: Duration,
    last_activity: Instant,
    half_closed_at: Option<Instant>,
}

impl Deadlines {
    pub fn new(idle: Duration, half_close: Duration, now: Instant) -> Deadlines {
        Deadlines {
            idle,
            half_close,
            last_activity: now,
            half_closed_at: None,
        }
    }

    /// Bytes moved at `at`: the idle deadline moves forward.
    pub fn on_activity(&mut self, at: Instant) {
        if at > self.last_activity {
            self.last_activity = at;
        }
    }

    /// One direction finished; the grace period starts (once).
    pub fn on_half_close(&mut self, at: Instant) {
        self.half_closed_at.get_or_insert(at);
    }

    /// The earliest deadline and the reason it would close the tunnel.
    pub fn next(&self) -> (Instant, CloseReason) {
        let idle = (self.last_activity + self.idle, CloseReason::IdleTimeout);
        match self.half_closed_at {
            Some(t) if t + self.half_close < idle.0 => {
                (t + self.half_close, CloseReason::HalfCloseTimeout)
            }
            _ => idle,
        }
    }

    /// The reason to close now, if a deadline has passed.
    pub fn expired(&self, now: Instant) -> Option<CloseReason> {
        let (at, reason) = self.next();
        (now >= at).then_some(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(10);
    const GRACE: Duration = Duration::from_secs(4);

    #[tokio::test(start_paused = true)]
    async fn idle_deadline_moves_with_activity() {
        let start = Instant::now();
        let mut d = Deadlines::new(IDLE, GRACE, start);
        assert_eq!(d.next(), (start + IDLE, CloseReason::IdleTimeout));
        tokio::time::advance(Duration::from_secs(7)).await;
        d.on_activity(Instant::now());
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(
            d.expired(Instant::now()),
            None,
            "activity at 7s keeps it open at 14s"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(d.expired(Instant::now()), Some(CloseReason::IdleTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn half_close_grace_bounds_a_busy_half_closed_tunnel() {
        let start = Instant::now();
        let mut d = Deadlines::new(IDLE, GRACE, start);
        d.on_half_close(start);
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(1)).await;
            d.on_activity(Instant::now());
        }
        assert_eq!(d.expired(Instant::now()), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            d.expired(Instant::now()),
            Some(CloseReason::HalfCloseTimeout)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_closed_tunnel_still_obeys_idle() {
        let start = Instant::now();
        let mut d = Deadlines::new(Duration::from_secs(2), Duration::from_secs(60), start);
        d.on_half_close(start);
        d.on_half_close(start + Duration::from_secs(1)); // a second half-close does not extend
        assert_eq!(
            d.next(),
            (start + Duration::from_secs(2), CloseReason::IdleTimeout)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stale_activity_never_moves_deadline_back() {
        let start = Instant::now();
        let mut d = Deadlines::new(IDLE, GRACE, start + Duration::from_secs(5));
        d.on_activity(start);
        assert_eq!(d.next().0, start + Duration::from_secs(5) + IDLE);
    }
}
