//! Per-client-connection activity: what the keep-alive watchdog needs to
//! tell "idle between requests" from "in the middle of a request head".
//!
//! Written by the connection's I/O wrapper and its service, read by the
//! watchdog; all fields are atomics, times are milliseconds since `base`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

const NONE: u64 = u64::MAX;

#[derive(Debug)]
pub struct Activity {
    base: Instant,
    inflight: AtomicU32,
    served: AtomicU64,
    head_started_ms: AtomicU64,
    idle_since_ms: AtomicU64,
    /// Heads (by index on this connection) that carried both
    /// Content-Length and Transfer-Encoding (hyper silently drops one;
    /// sluice rejects), not yet dispatched; `any_ambiguous` spares the
    /// lock on every request when there are none.
    ambiguous_heads: std::sync::Mutex<std::collections::VecDeque<u64>>,
    any_ambiguous: AtomicBool,
    /// Request heads handed to the service so far.
    dispatched: AtomicU64,
    /// The client stream failed with a dead-peer error (keepalive or user
    /// timeout), whatever error hyper reports later.
    dead_peer: AtomicBool,
}

/// What the watchdog should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A request is in flight: body deadlines apply, not these.
    Busy,
    /// Reading a request head (or waiting for the first one) since this instant.
    Head(Instant),
    /// Idle between keep-alive requests since this instant.
    Idle(Instant),
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            base: Instant::now(),
            inflight: AtomicU32::new(0),
            served: AtomicU64::new(0),
            head_started_ms: AtomicU64::new(NONE),
            idle_since_ms: AtomicU64::new(0),
            ambiguous_heads: std::sync::Mutex::new(std::collections::VecDeque::new()),
            any_ambiguous: AtomicBool::new(false),
            dispatched: AtomicU64::new(0),
            dead_peer: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// The framing tracker found head number `head` ambiguous.
    pub fn mark_ambiguous_framing(&self, head: u64) {
        if let Ok(mut q) = self.ambiguous_heads.lock() {
            // Bounded by the heads hyper can hold unread in its buffer;
            // a hostile stream of them is cut at 64 all the same.
            if q.len() < 64 {
                q.push_back(head);
            }
            self.any_ambiguous.store(true, Ordering::Release);
        }
    }

    /// Called once per request head the service receives, in order:
    /// whether that head had ambiguous framing.
    pub fn take_ambiguous_framing(&self) -> bool {
        let index = self.dispatched.fetch_add(1, Ordering::Relaxed);
        if !self.any_ambiguous.load(Ordering::Acquire) {
            return false;
        }
        let Ok(mut q) = self.ambiguous_heads.lock() else {
            return false;
        };
        while q.front().is_some_and(|&h| h < index) {
            q.pop_front();
        }
        let hit = q.front() == Some(&index);
        if hit {
            q.pop_front();
        }
        if q.is_empty() {
            self.any_ambiguous.store(false, Ordering::Release);
        }
        hit
    }

    /// Bytes arrived from the client.
    /// The client's socket reported a dead peer.
    pub fn saw_dead_peer(&self) {
        self.dead_peer.store(true, Ordering::Relaxed);
    }

    /// Whether it did: then that is why the connection closed.
    pub fn dead_peer(&self) -> bool {
        self.dead_peer.load(Ordering::Relaxed)
    }

    pub fn on_read(&self) {
        if self.inflight.load(Ordering::Relaxed) == 0
            && self.head_started_ms.load(Ordering::Relaxed) == NONE
        {
            let now = self.now_ms();
            let _ = self.head_started_ms.compare_exchange(
                NONE,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// A request head was parsed and dispatched; the guard ends it.
    pub fn begin_request(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
        self.head_started_ms.store(NONE, Ordering::Relaxed);
        InflightGuard {
            activity: self.clone(),
            timing: None,
        }
    }

    pub fn phase(&self) -> Phase {
        if self.inflight.load(Ordering::Relaxed) > 0 {
            return Phase::Busy;
        }
        let head = self.head_started_ms.load(Ordering::Relaxed);
        if head != NONE {
            return Phase::Head(self.at(head));
        }
        if self.served.load(Ordering::Relaxed) == 0 {
            // A fresh connection must start its first request within the
            // header timeout: a client that connects and says nothing is
            // treated like a slow request head.
            return Phase::Head(self.base);
        }
        Phase::Idle(self.at(self.idle_since_ms.load(Ordering::Relaxed)))
    }
}

/// Marks one request in flight; dropped when its response body ends.
#[derive(Debug)]
pub struct InflightGuard {
    activity: Arc<Activity>,
    /// When set, the request's total duration is observed here on drop.
    timing: Option<(Instant, prometheus_client::metrics::histogram::Histogram)>,
}

impl InflightGuard {
    /// Observes the request's duration now (a 101: the request is over,
    /// though the connection stays busy carrying what it switched to).
    pub fn observe_now(&mut self) {
        if let Some((started, h)) = self.timing.take() {
            h.observe(started.elapsed().as_secs_f64());
        }
    }

    pub fn observe_total(
        &mut self,
        started: Instant,
        h: prometheus_client::metrics::histogram::Histogram,
    ) {
        self.timing = Some((started, h));
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if let Some((started, h)) = self.timing.take() {
            h.observe(started.elapsed().as_secs_f64());
        }
        let a = &self.activity;
        a.idle_since_ms.store(a.now_ms(), Ordering::Relaxed);
        a.head_started_ms.store(NONE, Ordering::Relaxed);
        a.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}
