//! `--tls-fallback`: a client and host pair whose client refused sluice's
//! certificate is passed through (not intercepted) for a while, so a
//! pinned app keeps working while its user looks at the record.
//!
//! Invariants: at most [`MAX_PAIRS`] pairs are held (the one closest to
//! expiry goes first); an expired pair is never used and is dropped on
//! the next insert or listing.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Pairs held at most: a bound on what hostile clients can make sluice keep.
pub const MAX_PAIRS: usize = 4096;

struct Pair {
    until: Instant,
    since: SystemTime,
    reason: &'static str,
}

/// The pairs being passed through.
pub struct Fallback {
    ttl: Option<Duration>,
    pairs: Mutex<HashMap<(IpAddr, Box<str>), Pair>>,
}

/// One pair, as the API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FallbackEntry {
    pub client: String,
    pub host: String,
    /// Why (the refusal's label).
    pub reason: &'static str,
    pub since: String,
    pub expires_in_secs: u64,
}

impl Fallback {
    /// `ttl` `None`: fallback off.
    pub fn new(ttl: Option<Duration>) -> Fallback {
        Fallback {
            ttl,
            pairs: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(IpAddr, Box<str>), Pair>> {
        self.pairs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `client` reaching `host` is passed through now, and why.
    pub fn active(&self, client: IpAddr, host: &str) -> Option<&'static str> {
        self.ttl?;
        let key = (client, host.to_ascii_lowercase().into_boxed_str());
        let pairs = self.lock();
        pairs
            .get(&key)
            .filter(|p| p.until > Instant::now())
            .map(|p| p.reason)
    }

    /// Passes `client` reaching `host` through for the fallback time.
    pub fn add(&self, client: IpAddr, host: &str, reason: &'static str) {
        let Some(ttl) = self.ttl else { return };
        let now = Instant::now();
        let mut pairs = self.lock();
        pairs.retain(|_, p| p.until > now);
        if pairs.len() >= MAX_PAIRS {
            if let Some(k) = pairs
                .iter()
                .min_by_key(|(_, p)| p.until)
                .map(|(k, _)| k.clone())
            {
                pairs.remove(&k);
            }
        }
        pairs.insert(
            (client, host.to_ascii_lowercase().into_boxed_str()),
            Pair {
                until: now + ttl,
                since: SystemTime::now(),
                reason,
            },
        );
    }

    /// The pairs passed through now.
    pub fn list(&self) -> Vec<FallbackEntry> {
        let now = Instant::now();
        let mut pairs = self.lock();
        pairs.retain(|_, p| p.until > now);
        let mut out: Vec<FallbackEntry> = pairs
            .iter()
            .map(|((ip, host), p)| FallbackEntry {
                client: ip.to_string(),
                host: host.to_string(),
                reason: p.reason,
                since: humantime::format_rfc3339_seconds(p.since).to_string(),
                expires_in_secs: p.until.saturating_duration_since(now).as_secs(),
            })
            .collect();
        out.sort_by(|a, b| (&a.host, &a.client).cmp(&(&b.host, &b.client)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_passed_through_until_it_expires_and_off_means_never() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let f = Fallback::new(Some(Duration::from_millis(50)));
        assert_eq!(f.active(ip, "pinned.example"), None);
        f.add(ip, "Pinned.Example", "unknown_ca");
        assert_eq!(f.active(ip, "pinned.example"), Some("unknown_ca"));
        assert_eq!(
            f.active("10.0.0.6".parse().unwrap(), "pinned.example"),
            None
        );
        assert_eq!(f.list().len(), 1);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(f.active(ip, "pinned.example"), None);
        assert!(f.list().is_empty());
        let off = Fallback::new(None);
        off.add(ip, "pinned.example", "unknown_ca");
        assert_eq!(off.active(ip, "pinned.example"), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let f = Fallback::new(Some(Duration::from_secs(60)));
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        for i in 0..MAX_PAIRS + 10 {
            f.add(ip, &format!("h{i}.test"), "unknown_ca");
        }
        assert_eq!(f.list().len(), MAX_PAIRS);
        assert!(f.active(ip, &format!("h{}.test", MAX_PAIRS + 9)).is_some());
    }
}
