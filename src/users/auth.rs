//! Proxy authentication (`--auth FILE`): `Proxy-Authorization: Basic`
//! checked against bcrypt hashes.
//!
//! Invariants:
//! - credentials are never logged or forwarded (the header is hop-by-hop
//!   and stripped);
//! - bcrypt never runs on a proxy worker: verifications go to
//!   [`VERIFIERS`] dedicated threads, at a lower CPU priority, through a
//!   queue of [`QUEUE`]; when it is full the request is answered 503 at
//!   once, without verifying, so a password flood cannot take the CPU
//!   the proxy needs nor queue without bound;
//! - a name that is not in the file is verified against a hash of the
//!   same cost as the file's users, so answer times do not tell which
//!   names exist;
//! - a keyed hash of the header maps to the user for [`GRANTED_TTL`]
//!   (keep-alive requests do not pay bcrypt each time), and to a refusal
//!   for [`REFUSED_TTL`] (a repeated wrong password costs nothing); both
//!   caches hold at most [`CACHE_MAX`] entries.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::StatusCode;

/// Entries per cache (granted, refused).
const CACHE_MAX: usize = 4096;

/// How long a verified header is trusted without bcrypt.
pub const GRANTED_TTL: Duration = Duration::from_secs(60);

/// How long a refused header is refused without bcrypt.
pub const REFUSED_TTL: Duration = Duration::from_secs(5);

/// Threads that run bcrypt. One core of a small machine stays free for
/// the proxy whatever the flood.
pub const VERIFIERS: usize = 2;

/// Verifications that may wait for a verifier; past that, 503.
pub const QUEUE: usize = 8;

/// Verifier threads run at this nice value, so the proxy's workers win
/// the CPU whenever both want it.
const VERIFIER_NICE: libc::c_int = 10;

#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    #[error("cannot read auth file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("auth file {path} line {line}: {message}")]
    Line {
        path: String,
        line: usize,
        message: String,
    },
    #[error("cannot start the password verifier threads: {0}")]
    Verifier(std::io::Error),
}

/// One bcrypt verification for a verifier thread.
struct Job {
    password: String,
    hash: String,
    done: tokio::sync::oneshot::Sender<bool>,
}

/// A bounded cache of header keys with an expiry each.
struct TtlCache<V> {
    ttl: Duration,
    entries: HashMap<u64, (Instant, V)>,
}

impl<V: Clone> TtlCache<V> {
    fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: HashMap::new(),
        }
    }

    fn get(&self, key: u64, now: Instant) -> Option<V> {
        self.entries
            .get(&key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, v)| v.clone())
    }

    fn insert(&mut self, key: u64, value: V, now: Instant) {
        if self.entries.len() >= CACHE_MAX {
            self.entries.retain(|_, (expires, _)| *expires > now);
            if self.entries.len() >= CACHE_MAX {
                // Still full of live entries: a flood of distinct headers.
                // Starting over costs only re-verifications.
                self.entries.clear();
            }
        }
        self.entries.insert(key, (now + self.ttl, value));
    }
}

pub struct Authenticator {
    users: HashMap<String, String>,
    /// Verified for names not in the file: a user's hash of the most
    /// common cost (its password cannot matter: the name is unknown).
    decoy: String,
    keys: RandomState,
    granted: Mutex<TtlCache<String>>,
    refused: Mutex<TtlCache<()>>,
    jobs: mpsc::SyncSender<Job>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

/// The outcome of checking one request's credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    User(String),
    Missing,
    Invalid,
    /// Too many verifications are waiting: not checked.
    Busy,
}

impl Verdict {
    /// The status a refused request gets: 407, or 503 when busy.
    pub fn status(&self) -> StatusCode {
        match self {
            Verdict::Busy => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        }
    }

    /// Why a request was refused, for the answer and the record.
    pub fn reason(&self) -> &'static str {
        match self {
            Verdict::User(_) => "authenticated",
            Verdict::Missing => "proxy authentication required",
            Verdict::Invalid => "proxy credentials refused",
            Verdict::Busy => "too many proxy logins are being checked; retry shortly",
        }
    }
}

/// The cost field of a bcrypt hash (`$2b$12$...`).
fn cost_of(hash: &str) -> Option<u32> {
    hash.get(4..6)?.parse().ok()
}

impl Authenticator {
    /// Reads `name:bcrypt-hash` lines; `#` starts a comment.
    pub fn load(path: &Path) -> Result<Authenticator, AuthFileError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|e| AuthFileError::Read(shown.clone(), e))?;
        let mut users = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: &str| AuthFileError::Line {
                path: shown.clone(),
                line: i + 1,
                message: message.to_string(),
            };
            let (name, hash) = line
                .split_once(':')
                .ok_or_else(|| err("expected name:bcrypt-hash"))?;
            if name.is_empty() {
                return Err(err("empty user name"));
            }
            if !(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$"))
                || hash.len() != 60
                || cost_of(hash).is_none()
            {
                return Err(err("password hash must be bcrypt ($2b$..., 60 characters)"));
            }
            users.insert(name.to_string(), hash.to_string());
        }
        let Some(decoy) = decoy_of(&users) else {
            return Err(AuthFileError::Line {
                path: shown,
                line: 0,
                message: "no users defined".into(),
            });
        };
        let jobs = start_verifiers().map_err(AuthFileError::Verifier)?;
        Ok(Authenticator {
            users,
            decoy,
            keys: RandomState::new(),
            granted: Mutex::new(TtlCache::new(GRANTED_TTL)),
            refused: Mutex::new(TtlCache::new(REFUSED_TTL)),
            jobs,
        })
    }

    /// Checks a `Proxy-Authorization` header value. Cached answers are
    /// immediate; otherwise bcrypt runs on a verifier thread.
    pub async fn check(&self, header: Option<&http::HeaderValue>) -> Verdict {
        let Some(value) = header else {
            return Verdict::Missing;
        };
        let key = self.keys.hash_one(value.as_bytes());
        let now = Instant::now();
        if let Some(user) = self.granted.lock().ok().and_then(|c| c.get(key, now)) {
            return Verdict::User(user);
        }
        if let Some(()) = self.refused.lock().ok().and_then(|c| c.get(key, now)) {
            return Verdict::Invalid;
        }
        let Some((name, password)) = basic_credentials(value) else {
            return Verdict::Invalid;
        };
        let (hash, known) = match self.users.get(&name) {
            Some(h) => (h.clone(), true),
            None => (self.decoy.clone(), false),
        };
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            password,
            hash,
            done,
        };
        if self.jobs.try_send(job).is_err() {
            return Verdict::Busy;
        }
        let matched = answer.await.unwrap_or(false);
        let now = Instant::now();
        if matched && known {
            if let Ok(mut c) = self.granted.lock() {
                c.insert(key, name.clone(), now);
            }
            Verdict::User(name)
        } else {
            if let Ok(mut c) = self.refused.lock() {
                c.insert(key, (), now);
            }
            Verdict::Invalid
        }
    }
}

/// The name and password of a `Basic` header, if it is one.
fn basic_credentials(value: &http::HeaderValue) -> Option<(String, String)> {
    let (scheme, rest) = value.to_str().ok()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

/// The hash unknown names are verified against: one of the most common
/// cost among the users (ties: the higher cost), so an unknown name costs
/// what most known names cost.
fn decoy_of(users: &HashMap<String, String>) -> Option<String> {
    let mut by_cost: HashMap<u32, usize> = HashMap::new();
    for h in users.values() {
        *by_cost.entry(cost_of(h).unwrap_or(0)).or_default() += 1;
    }
    let (&cost, _) = by_cost.iter().max_by_key(|(c, n)| (**n, **c))?;
    users
        .values()
        .filter(|h| cost_of(h) == Some(cost))
        .min()
        .cloned()
}

/// Starts the verifier threads; they end when the sender is dropped.
fn start_verifiers() -> std::io::Result<mpsc::SyncSender<Job>> {
    let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
    let rx = std::sync::Arc::new(Mutex::new(rx));
    for i in 0..VERIFIERS {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("sluice-bcrypt-{i}"))
            .spawn(move || {
                // SAFETY: setpriority on this thread's own id (0 = the
                // calling thread on Linux) has no memory effects. If it
                // fails, verification still works at normal priority.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, 0, VERIFIER_NICE);
                }
                loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(p) => p.into_inner().recv(),
                    };
                    let Ok(job) = job else { return };
                    let ok = bcrypt::verify(&job.password, &job.hash).unwrap_or(false);
                    let _ = job.done.send(ok);
                }
            })?;
    }
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn verifies_basic_credentials_against_bcrypt() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "# users\nalice:{hash}").unwrap();
        let a = Authenticator::load(f.path()).unwrap();
        let hv = |s: &str| http::HeaderValue::from_str(s).unwrap();
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
        );
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:nope")
        );
        let unknown = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("mallory:s3cret")
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(
                a.check(Some(&hv(&good))).await,
                Verdict::User("alice".into())
            );
            assert_eq!(
                a.check(Some(&hv(&good))).await,
                Verdict::User("alice".into()),
                "cached"
            );
            assert_eq!(a.check(Some(&hv(&bad))).await, Verdict::Invalid);
            assert_eq!(a.check(Some(&hv(&bad))).await, Verdict::Invalid, "cached");
            // alice's password under an unknown name: the decoy is
            // alice's hash, and still the name is refused.
            assert_eq!(a.check(Some(&hv(&unknown))).await, Verdict::Invalid);
            assert_eq!(a.check(None).await, Verdict::Missing);
            assert_eq!(a.check(Some(&hv("Bearer x"))).await, Verdict::Invalid);
        });
    }

    #[test]
    fn rejects_bad_lines_with_line_number() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "alice:plaintext").unwrap();
        let e = Authenticator::load(f.path()).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("bcrypt"), "{e}");
    }
}
