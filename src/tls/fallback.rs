//! `--tls-fallback`: a client and host pair whose client refused sluice's
//! certificate is passed through (not intercepted) for a while, so a
//! pinned app keeps working while its user looks at the record. Beside
//! it, what tells a refusal from a spare connection: the pairs whose
//! client has used an intercepted connection to the host ([`Serving`],
//! [`Fallback::vouched`]). A browser opens more connections than it needs
//! and closes the spares unused, right after their handshake, as a pinned
//! app does; but a browser also sends requests over another one.
//!
//! Invariants: at most [`MAX_PAIRS`] pairs are held (the one closest to
//! expiry goes first); an expired pair is never used and is dropped on
//! the next insert or listing. The same bound holds for pairs vouched for
//! by closed connections; pairs with a connection being served are bounded
//! by the connections themselves.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::registry::ConnEntry;

/// Pairs held at most: a bound on what hostile clients can make sluice keep.
pub const MAX_PAIRS: usize = 4096;

/// How long a closed intercepted connection that carried a request still
/// vouches for its client's trust in sluice's certificate for the host.
pub const VOUCH_FOR: Duration = Duration::from_secs(600);

type Key = (IpAddr, Box<str>);

fn key(client: IpAddr, host: &str) -> Key {
    (client, host.to_ascii_lowercase().into_boxed_str())
}

struct Pair {
    until: Instant,
    since: SystemTime,
    reason: &'static str,
}

/// A pair's intercepted connections being served, and until when a
/// closed one that carried a request vouches for the pair.
#[derive(Default)]
struct Used {
    live: Vec<Arc<ConnEntry>>,
    vouched_until: Option<Instant>,
}

impl Used {
    fn vouches(&self, now: Instant) -> bool {
        self.vouched_until.is_some_and(|t| t > now)
            || self
                .live
                .iter()
                .any(|e| e.requests.load(Ordering::Relaxed) > 0)
    }
}

/// The pairs being passed through, and the pairs whose client uses
/// intercepted connections.
pub struct Fallback {
    ttl: Option<Duration>,
    pairs: Mutex<HashMap<Key, Pair>>,
    used: Mutex<HashMap<Key, Used>>,
}

/// An intercepted connection while it is served ([`Fallback::serving`]):
/// once it has carried a request it vouches for its pair, and for
/// [`VOUCH_FOR`] after it drops.
pub struct Serving<'a> {
    fallback: &'a Fallback,
    key: Key,
    entry: Arc<ConnEntry>,
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut used = self.fallback.lock_used();
        if let Some(u) = used.get_mut(&self.key) {
            u.live.retain(|e| !Arc::ptr_eq(e, &self.entry));
            if self.entry.requests.load(Ordering::Relaxed) > 0 {
                u.vouched_until = Some(now + VOUCH_FOR);
            }
            if u.live.is_empty() && !u.vouches(now) {
                used.remove(&self.key);
            }
        }
        if used.len() > MAX_PAIRS {
            used.retain(|_, u| !u.live.is_empty() || u.vouches(now));
        }
        while used.len() > MAX_PAIRS {
            let oldest = used
                .iter()
                .filter(|(_, u)| u.live.is_empty())
                .min_by_key(|(_, u)| u.vouched_until)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => used.remove(&k),
                None => break,
            };
        }
    }
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
            used: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Pair>> {
        self.pairs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_used(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Used>> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes that `entry`, an intercepted connection from `client` to
    /// `host`, is being served, until the value returned drops.
    pub fn serving(&self, client: IpAddr, host: &str, entry: &Arc<ConnEntry>) -> Serving<'_> {
        let key = key(client, host);
        self.lock_used()
            .entry(key.clone())
            .or_default()
            .live
            .push(entry.clone());
        Serving {
            fallback: self,
            key,
            entry: entry.clone(),
        }
    }

    /// Whether `client` has shown that it trusts sluice's certificate for
    /// `host`: it sent a request over an intercepted connection to it,
    /// one being served now or one closed within [`VOUCH_FOR`]. A quiet
    /// close from such a client is a spare connection it did not need.
    pub fn vouched(&self, client: IpAddr, host: &str) -> bool {
        self.lock_used()
            .get(&key(client, host))
            .is_some_and(|u| u.vouches(Instant::now()))
    }

    /// Whether `client` reaching `host` is passed through now, and why.
    pub fn active(&self, client: IpAddr, host: &str) -> Option<&'static str> {
        self.ttl?;
        let key = key(client, host);
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
            key(client, host),
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
    fn a_connection_that_carried_a_request_vouches_while_served_and_after() {
        let registry = crate::registry::Registry::new();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let f = Fallback::new(Some(Duration::from_secs(60)));
        let used = registry.register(crate::registry::Kind::Tunnel, None);
        let spare = registry.register(crate::registry::Kind::Tunnel, None);
        let serving = f.serving(ip, "Browser.Example", used.entry());
        let quiet = f.serving(ip, "browser.example", spare.entry());
        assert!(!f.vouched(ip, "browser.example"), "no request yet");
        used.entry().requests.fetch_add(1, Ordering::Relaxed);
        assert!(f.vouched(ip, "browser.example"), "one being served");
        assert!(!f.vouched("10.0.0.6".parse().unwrap(), "browser.example"));
        assert!(!f.vouched(ip, "other.example"));
        drop(quiet);
        drop(serving);
        assert!(f.vouched(ip, "browser.example"), "closed, within VOUCH_FOR");
        // A pair whose connections never carried a request is forgotten.
        let idle = registry.register(crate::registry::Kind::Tunnel, None);
        drop(f.serving(ip, "pinned.example", idle.entry()));
        assert!(!f.vouched(ip, "pinned.example"));
        assert_eq!(f.lock_used().len(), 1);
    }

    #[test]
    fn vouches_of_closed_connections_are_bounded() {
        let registry = crate::registry::Registry::new();
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let f = Fallback::new(Some(Duration::from_secs(60)));
        let conn = registry.register(crate::registry::Kind::Tunnel, None);
        conn.entry().requests.fetch_add(1, Ordering::Relaxed);
        for i in 0..MAX_PAIRS + 10 {
            drop(f.serving(ip, &format!("h{i}.test"), conn.entry()));
        }
        assert_eq!(f.lock_used().len(), MAX_PAIRS);
        assert!(f.vouched(ip, &format!("h{}.test", MAX_PAIRS + 9)));
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
