//! Per-user traffic accounting. A user is the authenticated proxy user
//! name, or the client IP when `--auth` is off.
//!
//! Invariants: the table is bounded (`MAX_USERS`; the least recently seen
//! user is evicted); open connections are counted from the registry at read
//! time, never stored twice.

pub mod auth;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::registry::{CloseReason, ConnEntry};

const MAX_USERS: usize = 10_000;

#[derive(Debug, Clone, Default, Serialize)]
pub struct UserStats {
    pub requests: u64,
    pub connections: u64,
    /// Bytes of closed connections (live ones are added at read time).
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub errors: u64,
    /// Unix milliseconds.
    pub last_seen_ms: u64,
}

/// One row of `GET /api/users`.
#[derive(Debug, Clone, Serialize)]
pub struct UserRow {
    pub user: String,
    pub open_connections: u64,
    pub requests: u64,
    pub connections: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub errors: u64,
    pub last_seen_ms: u64,
}

/// Top-N lists for bounded metric labels.
#[derive(Debug, Default)]
pub struct Top {
    pub by_bytes: Vec<(String, u64)>,
    pub by_connections: Vec<(String, u64)>,
}

#[derive(Debug, Default)]
pub struct Users {
    table: Mutex<HashMap<String, UserStats>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Users {
    fn with<F: FnOnce(&mut UserStats)>(&self, user: &str, f: F) {
        let Ok(mut t) = self.table.lock() else { return };
        if !t.contains_key(user) && t.len() >= MAX_USERS {
            if let Some(oldest) = t
                .iter()
                .min_by_key(|(_, s)| s.last_seen_ms)
                .map(|(k, _)| k.clone())
            {
                t.remove(&oldest);
            }
        }
        let s = t.entry(user.to_string()).or_default();
        s.last_seen_ms = now_ms();
        f(s);
    }

    /// A request was answered for `user`.
    pub fn on_request(&self, user: &str, failed: bool) {
        self.with(user, |s| {
            s.requests += 1;
            if failed {
                s.errors += 1;
            }
        });
    }

    /// A connection opened for `user`.
    pub fn on_open(&self, user: &str) {
        self.with(user, |s| s.connections += 1);
    }

    /// A connection closed: fold its bytes in.
    pub fn on_close(&self, e: &ConnEntry, reason: &CloseReason) {
        let Some(user) = e.user() else { return };
        if !e.kind.client_facing() {
            return;
        }
        let failed = matches!(
            reason,
            CloseReason::Error(..) | CloseReason::Reset(_) | CloseReason::DeadPeer(_)
        );
        let up = e.bytes_up.load(std::sync::atomic::Ordering::Relaxed);
        let down = e.bytes_down.load(std::sync::atomic::Ordering::Relaxed);
        self.with(user, |s| {
            s.bytes_up += up;
            s.bytes_down += down;
            if failed {
                s.errors += 1;
            }
        });
    }

    /// Every user with live figures folded in, most bytes first.
    pub fn rows(&self, live: &[std::sync::Arc<ConnEntry>]) -> Vec<UserRow> {
        let table = self.table.lock().map(|t| t.clone()).unwrap_or_default();
        let mut rows: HashMap<String, UserRow> = table
            .into_iter()
            .map(|(user, s)| {
                (
                    user.clone(),
                    UserRow {
                        user,
                        open_connections: 0,
                        requests: s.requests,
                        connections: s.connections,
                        bytes_up: s.bytes_up,
                        bytes_down: s.bytes_down,
                        errors: s.errors,
                        last_seen_ms: s.last_seen_ms,
                    },
                )
            })
            .collect();
        for e in live {
            let Some(user) = e.user() else { continue };
            if !e.kind.client_facing() {
                continue;
            }
            let row = rows.entry(user.to_string()).or_insert_with(|| UserRow {
                user: user.to_string(),
                open_connections: 0,
                requests: 0,
                connections: 0,
                bytes_up: 0,
                bytes_down: 0,
                errors: 0,
                last_seen_ms: now_ms(),
            });
            row.open_connections += 1;
            row.bytes_up += e.bytes_up.load(std::sync::atomic::Ordering::Relaxed);
            row.bytes_down += e.bytes_down.load(std::sync::atomic::Ordering::Relaxed);
        }
        let mut v: Vec<UserRow> = rows.into_values().collect();
        v.sort_by(|a, b| {
            (b.bytes_up + b.bytes_down)
                .cmp(&(a.bytes_up + a.bytes_down))
                .then(a.user.cmp(&b.user))
        });
        v
    }

    /// The top `n` users by bytes and by open connections, the rest summed
    /// as `other`, so metric labels stay bounded.
    pub fn top(&self, n: usize, live: &[std::sync::Arc<ConnEntry>]) -> Top {
        let rows = self.rows(live);
        let fold = |mut pairs: Vec<(String, u64)>| {
            pairs.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let rest: u64 = pairs.iter().skip(n).map(|p| p.1).sum();
            pairs.truncate(n);
            if rest > 0 {
                pairs.push(("other".to_string(), rest));
            }
            pairs
        };
        Top {
            by_bytes: fold(
                rows.iter()
                    .map(|r| (r.user.clone(), r.bytes_up + r.bytes_down))
                    .collect(),
            ),
            by_connections: fold(
                rows.iter()
                    .filter(|r| r.open_connections > 0)
                    .map(|r| (r.user.clone(), r.open_connections))
                    .collect(),
            ),
        }
    }
}
