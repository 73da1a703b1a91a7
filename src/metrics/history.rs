//! The one-hour history: a 1-second sampler feeding a fixed-size ring, and
//! the leak watchdog that reads the same samples.
//!
//! Invariants: the ring never holds more than `CAPACITY` samples; the
//! sampler is the only writer; each tick also refreshes every registry
//! entry's idle time (so the data path never stamps clocks for it).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{process, Metrics, WatchdogLabels};
use crate::registry::{Kind, Registry};

/// One hour of 1-second samples.
pub const CAPACITY: usize = 3600;

/// Shortest window rates (bytes/s, requests/s, CPU %) are computed over.
const MIN_RATE_WINDOW: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Unix milliseconds.
    pub t: u64,
    pub rss_bytes: u64,
    /// The anonymous part of `rss_bytes`: the process's own memory.
    pub rss_anon_bytes: u64,
    /// The file-backed and shared-memory part: page cache, mostly the
    /// binary's own pages, which the kernel can drop.
    pub rss_file_bytes: u64,
    pub cpu_percent: f64,
    pub open_fds: u64,
    pub threads: u64,
    pub http: u64,
    pub tunnel: u64,
    pub relay: u64,
    pub upstream: u64,
    pub bytes_up_per_s: f64,
    pub bytes_down_per_s: f64,
    pub requests_per_s: f64,
}

#[derive(Debug, Default)]
pub struct History {
    ring: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn new() -> Arc<History> {
        Arc::new(History {
            ring: Mutex::new(VecDeque::with_capacity(CAPACITY)),
        })
    }

    fn push(&self, s: Sample) {
        if let Ok(mut r) = self.ring.lock() {
            if r.len() == CAPACITY {
                r.pop_front();
            }
            r.push_back(s);
        }
    }

    /// The last `n` samples (all when `n` is `None`), oldest first.
    pub fn last(&self, n: Option<usize>) -> Vec<Sample> {
        let Ok(r) = self.ring.lock() else {
            return Vec::new();
        };
        let skip = n.map(|n| r.len().saturating_sub(n)).unwrap_or(0);
        r.iter().skip(skip).cloned().collect()
    }
}

/// Settings of the leak watchdog.
#[derive(Debug, Clone, Copy)]
pub struct WatchdogConfig {
    /// Samples the growth check looks back over.
    pub window: usize,
    /// Minimum growth in client-facing connections over the window.
    pub min_growth: u64,
    pub max_connection_age: Option<Duration>,
    /// At most one warning per check per this period.
    pub quiet_period: Duration,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            window: 60,
            min_growth: 50,
            max_connection_age: None,
            quiet_period: Duration::from_secs(60),
        }
    }
}

/// Growth check on a window of samples: connections kept rising while
/// traffic did not. Pure, so it is tested on synthetic samples.
pub fn growth_without_traffic(samples: &[Sample], min_growth: u64) -> bool {
    if samples.len() < 10 {
        return false;
    }
    let conns = |s: &Sample| s.http + s.tunnel + s.relay;
    let first = conns(&samples[0]);
    let last = conns(&samples[samples.len() - 1]);
    if last < first + min_growth {
        return false;
    }
    // Mostly monotonic: at most a tenth of the steps went down.
    let downs = samples
        .windows(2)
        .filter(|w| conns(&w[1]) < conns(&w[0]))
        .count();
    if downs * 10 > samples.len() {
        return false;
    }
    let tenth = (samples.len() / 10).max(1);
    let rate = |ss: &[Sample]| {
        ss.iter()
            .map(|s| s.bytes_up_per_s + s.bytes_down_per_s + s.requests_per_s * 1000.0)
            .sum::<f64>()
            / ss.len() as f64
    };
    let early = rate(&samples[..tenth]);
    let late = rate(&samples[samples.len() - tenth..]);
    // More connections should mean more traffic; flat or falling traffic
    // while connections pile up is the legacy leak's signature.
    late <= early * 1.1 + 1.0
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Samples once a second until `stop`.
pub async fn run_sampler(
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    history: Arc<History>,
    watchdog: WatchdogConfig,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev_proc = process::read();
    let mut prev_at = tokio::time::Instant::now();
    let (mut prev_up, mut prev_down) = registry.bytes_total();
    let mut prev_req = metrics.requests_total.load(Ordering::Relaxed);
    let mut last_growth_warning: Option<tokio::time::Instant> = None;
    let mut last_age_warning: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = tokio::time::Instant::now();
        let window = now - prev_at;
        // The first tick fires at once, with no window behind it: a count
        // divided by ~0 s would be a made-up spike (one request read as
        // 1000/s), so rates read 0 until a real window has passed.
        let dt = window.as_secs_f64();
        let per_s = |delta: u64| {
            if window >= MIN_RATE_WINDOW {
                delta as f64 / dt
            } else {
                0.0
            }
        };
        let p = process::read();
        let snapshot = registry.snapshot();
        for e in &snapshot {
            e.observe_activity();
        }
        let (up, down) = registry.bytes_total();
        let req = metrics.requests_total.load(Ordering::Relaxed);
        history.push(Sample {
            t: now_ms(),
            rss_bytes: p.rss_bytes,
            rss_anon_bytes: p.rss.anon,
            rss_file_bytes: p.rss.file_and_shmem(),
            cpu_percent: if window >= MIN_RATE_WINDOW {
                process::cpu_percent(&prev_proc, &p, window)
            } else {
                0.0
            },
            open_fds: p.open_fds,
            threads: p.threads,
            http: registry.live(Kind::Http),
            tunnel: registry.live(Kind::Tunnel),
            relay: registry.live(Kind::Relay),
            upstream: registry.live(Kind::Upstream),
            bytes_up_per_s: per_s(up.saturating_sub(prev_up)),
            bytes_down_per_s: per_s(down.saturating_sub(prev_down)),
            requests_per_s: per_s(req.saturating_sub(prev_req)),
        });
        (prev_proc, prev_at, prev_up, prev_down, prev_req) = (p, now, up, down, req);

        let quiet = |last: Option<tokio::time::Instant>| {
            last.is_none_or(|t| now - t >= watchdog.quiet_period)
        };
        if quiet(last_growth_warning)
            && growth_without_traffic(&history.last(Some(watchdog.window)), watchdog.min_growth)
        {
            last_growth_warning = Some(now);
            metrics
                .leak_warnings
                .get_or_create(&WatchdogLabels { check: "growth" })
                .inc();
            tracing::warn!(
                connections = snapshot.len(),
                oldest = %oldest(&snapshot, 5),
                "leak watchdog: open connections keep growing while traffic does not"
            );
        }
        if let Some(max_age) = watchdog.max_connection_age {
            let old: Vec<_> = snapshot
                .iter()
                .filter(|e| e.kind.client_facing() && e.age() > max_age)
                .cloned()
                .collect();
            if !old.is_empty() && quiet(last_age_warning) {
                last_age_warning = Some(now);
                metrics
                    .leak_warnings
                    .get_or_create(&WatchdogLabels { check: "max_age" })
                    .inc();
                tracing::warn!(
                    count = old.len(),
                    max_age = %humantime::format_duration(max_age),
                    oldest = %oldest(&old, 5),
                    "leak watchdog: connections older than --max-connection-age"
                );
            }
        }
    }
}

/// "id kind client->upstream age" for the `n` oldest entries.
fn oldest(entries: &[Arc<crate::registry::ConnEntry>], n: usize) -> String {
    let mut v: Vec<_> = entries.iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(e.age()));
    v.iter()
        .take(n)
        .map(|e| {
            format!(
                "#{} {} {}->{} age {}s",
                e.id,
                e.kind.as_str(),
                e.client
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                e.upstream().unwrap_or("-"),
                e.age().as_secs()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(conns: u64, bytes: f64, reqs: f64) -> Sample {
        Sample {
            t: 0,
            rss_bytes: 0,
            rss_anon_bytes: 0,
            rss_file_bytes: 0,
            cpu_percent: 0.0,
            open_fds: 0,
            threads: 0,
            http: conns,
            tunnel: 0,
            relay: 0,
            upstream: 0,
            bytes_up_per_s: bytes,
            bytes_down_per_s: 0.0,
            requests_per_s: reqs,
        }
    }

    #[test]
    fn growth_with_flat_traffic_is_a_leak() {
        let s: Vec<_> = (0..60).map(|i| sample(100 + i * 5, 1000.0, 10.0)).collect();
        assert!(growth_without_traffic(&s, 50));
    }

    #[test]
    fn growth_with_rising_traffic_is_load() {
        let s: Vec<_> = (0..60)
            .map(|i| sample(100 + i * 5, 1000.0 * (i + 1) as f64, 10.0 * (i + 1) as f64))
            .collect();
        assert!(!growth_without_traffic(&s, 50));
    }

    #[test]
    fn small_or_noisy_growth_is_not_reported() {
        let s: Vec<_> = (0..60).map(|i| sample(100 + i / 3, 0.0, 0.0)).collect();
        assert!(!growth_without_traffic(&s, 50));
        let s: Vec<_> = (0..60)
            .map(|i| sample(if i % 2 == 0 { 100 } else { 300 }, 0.0, 0.0))
            .collect();
        assert!(!growth_without_traffic(&s, 50));
    }

    #[test]
    fn ring_is_bounded() {
        let h = History::new();
        for i in 0..(CAPACITY + 10) {
            h.push(sample(i as u64, 0.0, 0.0));
        }
        let all = h.last(None);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].http, 10);
        assert_eq!(h.last(Some(3)).len(), 3);
    }
}
