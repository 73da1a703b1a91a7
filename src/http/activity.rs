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
    /// The last request head carried both Content-Length and
    /// Transfer-Encoding (hyper silently drops one; sluice rejects).
    ambiguous_framing: AtomicBool,
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
            ambiguous_framing: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.base + Duration::from_millis(ms)
    }

    /// No request is in flight: bytes read now belong to a request head.
    pub fn reading_head(&self) -> bool {
        self.inflight.load(Ordering::Relaxed) == 0
    }

    pub fn mark_ambiguous_framing(&self) {
        self.ambiguous_framing.store(true, Ordering::Relaxed);
    }

    /// Whether the head just dispatched had ambiguous framing (clears it).
    pub fn take_ambiguous_framing(&self) -> bool {
        self.ambiguous_framing.swap(false, Ordering::Relaxed)
    }

    /// Bytes arrived from the client.
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
