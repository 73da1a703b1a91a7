//! Setting text to values: durations, counts, byte sizes, switches,
//! addresses, relays, log filters; each error names the key and the value
//! as the user wrote them.
//!
//! Invariant: every parser here is pure (no I/O but the token file read
//! by [`read_token_file`]) and rejects what the old hand-written merge
//! rejected, with the same words.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::sections::{DataDir, RelaySpec};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: invalid value `{value}`: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

pub(super) fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// One setting's text, from a flag or else the file or else its default,
/// with the key that names it in messages.
#[derive(Debug, Clone)]
pub(super) struct Raw {
    pub text: String,
    pub key: &'static str,
}

/// A path setting, from a flag or else the file, with its key.
#[derive(Debug, Clone)]
pub(super) struct RawPath {
    pub path: PathBuf,
    pub key: &'static str,
}

impl Raw {
    pub fn new(text: &str, key: &'static str) -> Raw {
        Raw {
            text: text.to_string(),
            key,
        }
    }

    pub fn duration(&self) -> Result<Duration, ConfigError> {
        parse_duration(self.key, &self.text)
    }

    /// A duration, or `0`/`off` for none.
    pub fn duration_or_zero(&self) -> Result<Option<Duration>, ConfigError> {
        match self.text.trim() {
            "0" | "off" => Ok(None),
            _ => self.duration().map(Some),
        }
    }

    pub fn count(&self, min: u64, max: u64) -> Result<u64, ConfigError> {
        parse_count(self.key, &self.text, min, max)
    }

    pub fn bytes(&self) -> Result<u64, ConfigError> {
        parse_bytes(self.key, &self.text)
    }

    /// A byte size of at most `max`; `too_large` says so in the message.
    pub fn bytes_at_most(&self, max: u64, too_large: &str) -> Result<u64, ConfigError> {
        let n = self.bytes()?;
        if n > max {
            return Err(invalid(self.key, &self.text, too_large));
        }
        Ok(n)
    }

    /// A byte size of at least `min`; `too_small` says so in the message.
    pub fn bytes_at_least(&self, min: u64, too_small: &str) -> Result<u64, ConfigError> {
        let n = self.bytes()?;
        if n < min {
            return Err(invalid(self.key, &self.text, too_small));
        }
        Ok(n)
    }

    pub fn switch(&self) -> Result<bool, ConfigError> {
        match self.text.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" | "1" => Ok(true),
            "off" | "false" | "no" | "0" => Ok(false),
            _ => Err(invalid(self.key, &self.text, "expected on or off")),
        }
    }

    pub fn addr(&self) -> Result<SocketAddr, ConfigError> {
        parse_addr(self.key, &self.text)
    }

    /// An address, or `off` for none.
    pub fn addr_or_off(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.text.trim().eq_ignore_ascii_case("off") {
            Ok(None)
        } else {
            self.addr().map(Some)
        }
    }

    pub fn relay(&self) -> Result<RelaySpec, ConfigError> {
        parse_relay(self.key, &self.text)
    }

    /// A log level or tracing filter, kept as written.
    pub fn level(&self) -> Result<String, ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.text).map_err(|e| {
            invalid(
                self.key,
                &self.text,
                format!("not a log level or filter: {e}"),
            )
        })?;
        Ok(self.text.clone())
    }

    /// A folder, or `:memory:` for none on disk.
    pub fn data_dir(&self) -> Result<DataDir, ConfigError> {
        let t = self.text.trim();
        if t.is_empty() {
            return Err(invalid(self.key, t, "expected a folder or :memory:"));
        }
        Ok(if t == ":memory:" {
            DataDir::Memory
        } else {
            DataDir::Path(PathBuf::from(t))
        })
    }
}

impl RawPath {
    /// The path, which must name a folder.
    pub fn folder(self) -> Result<PathBuf, ConfigError> {
        if !self.path.is_dir() {
            return Err(invalid(
                self.key,
                &self.path.display().to_string(),
                "not a folder",
            ));
        }
        Ok(self.path)
    }
}

/// A TOML value as text: strings as they are, anything else as written
/// (`5`, `true`), so that it is validated like a flag.
pub(super) fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads a token file (`--admin-token-file`); surrounding whitespace is
/// not part of the token.
pub(super) fn read_token_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// Parses `30s`, `5m`, `250ms`, `1h 30m`. Zero is rejected: every deadline
/// must be a real deadline.
pub fn parse_duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        invalid(
            key,
            text,
            format!("{e} (expected a duration such as 30s, 5m, 250ms)"),
        )
    })?;
    if d.is_zero() {
        return Err(invalid(key, text, "must be greater than zero"));
    }
    Ok(d)
}

fn parse_count(key: &str, text: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n: u64 = text
        .trim()
        .parse()
        .map_err(|_| invalid(key, text, "expected a whole number"))?;
    if n < min || n > max {
        return Err(invalid(
            key,
            text,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(n)
}

/// Parses a byte size: `1048576`, `512KiB`, `1MiB`, `2GiB`, `10MB`, `64k`.
pub fn parse_bytes(key: &str, text: &str) -> Result<u64, ConfigError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        invalid(
            key,
            text,
            "expected a size such as 1048576, 512KiB, 1MiB, 1GiB",
        )
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "tib" => 1 << 40,
        other => {
            return Err(invalid(
                key,
                text,
                format!("unknown size unit `{other}` (use B, KiB, MiB, GiB, KB, MB, GB)"),
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| invalid(key, text, "size too large"))
}

fn parse_addr(key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.trim()
        .parse()
        .map_err(|_| invalid(key, text, "expected IP:PORT, e.g. 127.0.0.1:8899"))
}

fn parse_relay(key: &str, text: &str) -> Result<RelaySpec, ConfigError> {
    let (listen, upstream) = text.split_once('=').ok_or_else(|| {
        invalid(
            key,
            text,
            "expected LISTEN=UPSTREAM, e.g. 127.0.0.1:9000=127.0.0.1:8080",
        )
    })?;
    let listen = parse_addr(key, listen)?;
    let upstream = upstream.trim();
    match upstream.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty() && port.parse::<u16>().map(|p| p > 0).unwrap_or(false) => {}
        _ => return Err(invalid(key, text, "upstream must be HOST:PORT")),
    }
    Ok(RelaySpec {
        listen,
        upstream: upstream.to_string(),
    })
}
