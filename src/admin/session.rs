//! Web UI sessions: random ids handed out for the token, kept only in
//! memory.
//!
//! Invariants: the cookie carries a session id, never the token (cookies
//! ignore ports, so a cookie for 127.0.0.1 rides along to every proxied
//! 127.0.0.1 origin and would be recorded there); an id is 256 random
//! bits; the table is bounded (the least recently used session goes
//! first) and a session unused for [`SESSION_IDLE`] is gone; closing a
//! session removes it here, not only in the browser.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// Sessions kept at once; past it the least recently used is dropped.
pub const MAX_SESSIONS: usize = 256;
/// A session unused this long must sign in again.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// Mints a new session id.
    pub fn open(&self) -> Result<String, super::token::TokenError> {
        let id = super::token::random_hex(32)?;
        let now = Instant::now();
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, used| now.duration_since(*used) < SESSION_IDLE);
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, used)| **used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(id.clone(), now);
        Ok(id)
    }

    /// Whether `id` is a live session; touches it.
    pub fn check(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        // Compared in constant time against every entry (at most
        // MAX_SESSIONS), so the answer's timing says nothing about how
        // much of an id was right.
        let mut hit: Option<String> = None;
        for k in map.keys() {
            if bool::from(k.as_bytes().ct_eq(id.as_bytes())) {
                hit = Some(k.clone());
            }
        }
        let Some(k) = hit else { return false };
        match map.get_mut(&k) {
            Some(used) if now.duration_since(*used) < SESSION_IDLE => {
                *used = now;
                true
            }
            Some(_) => {
                map.remove(&k);
                false
            }
            None => false,
        }
    }

    /// Forgets `id` (sign out).
    pub fn close(&self, id: &str) {
        let mut map = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|k, _| !bool::from(k.as_bytes().ct_eq(id.as_bytes())));
    }

    pub fn len(&self) -> usize {
        self.by_id.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_bounded_and_closable() {
        let s = Sessions::default();
        let a = s.open().unwrap();
        assert_eq!(a.len(), 64);
        assert!(s.check(&a));
        assert!(!s.check(&a[..63]));
        assert!(!s.check(""));
        s.close(&a);
        assert!(!s.check(&a));
        let first = s.open().unwrap();
        for _ in 0..MAX_SESSIONS {
            s.open().unwrap();
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(!s.check(&first), "the least recently used went first");
    }
}
