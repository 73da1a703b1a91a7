//! Proxy authentication (`--auth FILE`): `Proxy-Authorization: Basic`
//! checked against bcrypt hashes.
//!
//! Invariants: credentials are never logged or forwarded (the header is
//! hop-by-hop and stripped); a bcrypt verification runs once per distinct
//! credential, after which a keyed hash of the header maps to the user in a
//! bounded cache, so the data path does not pay bcrypt per request.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;

const CACHE_MAX: usize = 4096;

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
}

pub struct Authenticator {
    users: HashMap<String, String>,
    keys: RandomState,
    cache: Mutex<HashMap<u64, String>>,
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
            {
                return Err(err("password hash must be bcrypt ($2b$..., 60 characters)"));
            }
            users.insert(name.to_string(), hash.to_string());
        }
        if users.is_empty() {
            return Err(AuthFileError::Line {
                path: shown,
                line: 0,
                message: "no users defined".into(),
            });
        }
        Ok(Authenticator {
            users,
            keys: RandomState::new(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Checks a `Proxy-Authorization` header value.
    pub fn check(&self, header: Option<&http::HeaderValue>) -> Verdict {
        let Some(value) = header else {
            return Verdict::Missing;
        };
        let key = self.keys.hash_one(value.as_bytes());
        if let Some(user) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Verdict::User(user);
        }
        let Some(encoded) = value.to_str().ok().and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("basic")
                .then(|| rest.trim().to_string())
        }) else {
            return Verdict::Invalid;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return Verdict::Invalid;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return Verdict::Invalid;
        };
        let Some((name, password)) = text.split_once(':') else {
            return Verdict::Invalid;
        };
        let Some(hash) = self.users.get(name) else {
            return Verdict::Invalid;
        };
        if !bcrypt::verify(password, hash).unwrap_or(false) {
            return Verdict::Invalid;
        }
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_MAX {
                c.clear();
            }
            c.insert(key, name.to_string());
        }
        Verdict::User(name.to_string())
    }
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
        assert_eq!(a.check(Some(&hv(&good))), Verdict::User("alice".into()));
        assert_eq!(
            a.check(Some(&hv(&good))),
            Verdict::User("alice".into()),
            "cached"
        );
        assert_eq!(a.check(Some(&hv(&bad))), Verdict::Invalid);
        assert_eq!(a.check(None), Verdict::Missing);
        assert_eq!(a.check(Some(&hv("Bearer x"))), Verdict::Invalid);
    }

    #[test]
    fn rejects_bad_lines_with_line_number() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "alice:plaintext").unwrap();
        let e = Authenticator::load(f.path()).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("bcrypt"), "{e}");
    }
}
