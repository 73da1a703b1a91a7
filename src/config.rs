//! Configuration: command-line flags merged over an optional TOML file,
//! validated into one [`Config`] with built-in defaults.
//!
//! Invariants: every value in a [`Config`] has been validated; a bad key or
//! value is rejected at start with a message naming the key and the value;
//! flags override the file, the file overrides the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

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

fn invalid(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// A port relay: accept on `listen`, relay every connection to `upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySpec {
    pub listen: SocketAddr,
    /// `host:port`; resolved at each connect so DNS changes are followed.
    pub upstream: String,
}

/// Where records are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDir {
    /// An in-memory store, gone at exit (`--data-dir :memory:`).
    Memory,
    /// A folder holding `records.db` (SQLite, WAL).
    Path(PathBuf),
}

/// Request recording: what is captured and how much is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// `--record off` captures nothing.
    pub enabled: bool,
    pub data_dir: DataDir,
    /// Per body, bytes captured; 0 captures no bodies.
    pub body_limit: usize,
    pub retain_records: u64,
    pub retain_bytes: u64,
    pub retain_age: Duration,
    /// Records that may wait for the writer; past it, records are dropped.
    pub queue_records: usize,
    /// Captured body bytes that may wait for the writer; past it, bodies
    /// are dropped (their records kept).
    pub queue_body_bytes: usize,
}

impl Default for Recording {
    fn default() -> Self {
        Recording {
            enabled: true,
            // The library default keeps no files; the binary's default is
            // a folder under the user's data directory.
            data_dir: DataDir::Memory,
            body_limit: 1024 * 1024,
            retain_records: 1_000_000,
            retain_bytes: 1024 * 1024 * 1024,
            retain_age: Duration::from_secs(7 * 24 * 3600),
            queue_records: 16_384,
            queue_body_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The folder the binary records into when `--data-dir` is not given.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("sluice")
}

/// TCP keepalive settings applied to every socket, both legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub idle: Duration,
    pub interval: Duration,
    pub count: u32,
    /// TCP_USER_TIMEOUT: how long written data may stay unacknowledged.
    pub user_timeout: Duration,
}

/// The validated configuration of one sluice instance.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub relays: Vec<RelaySpec>,
    /// Tunnel/relay: no bytes either way for this long closes both legs.
    pub idle_timeout: Duration,
    /// After one side of a tunnel sent EOF, the rest must finish within this.
    pub half_close_timeout: Duration,
    pub connect_timeout: Duration,
    /// Client must deliver a complete request head within this.
    pub header_timeout: Duration,
    /// Upstream must deliver a response head within this.
    pub response_timeout: Duration,
    /// A keep-alive client connection with no request in flight closes after this.
    pub client_idle_timeout: Duration,
    /// A request or response body that makes no progress for this long fails.
    pub body_idle_timeout: Duration,
    /// Idle pooled upstream connections close after this.
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub keepalive: Keepalive,
    pub max_connections: usize,
    pub max_header_size: usize,
    pub max_headers: usize,
    pub drain_timeout: Duration,
    /// Per-direction copy buffer of tunnels and relays (allocated only while data flows).
    pub buffer_size: usize,
    pub log_level: String,
    pub workers: Option<usize>,
    /// Admin server address (API, metrics); `None` runs without one.
    pub admin: Option<SocketAddr>,
    /// How the admin server is locked: a token given, one generated at
    /// start (the default), or none (loopback only).
    pub admin_token: AdminToken,
    /// Proxy users (`name:bcrypt-hash` lines); when set, clients must
    /// authenticate with Proxy-Authorization: Basic.
    pub auth_file: Option<PathBuf>,
    /// Connections older than this are reported by the leak watchdog.
    pub max_connection_age: Option<Duration>,
    /// Enables test-only admin routes (deliberate socket leak).
    pub test_hooks: bool,
    pub record: Recording,
    /// Tamper rules (`--rules FILE`), reloaded on change and SIGHUP.
    pub rules_file: Option<PathBuf>,
    /// The only folder `bodyFile://` reads from (`--mock-dir`); without
    /// it, the rule file's folder.
    pub mock_dir: Option<PathBuf>,
}

/// How the admin server is locked.
#[derive(Clone, PartialEq, Eq)]
pub enum AdminToken {
    /// A random token made at start, written to `<data-dir>/admin.token`
    /// (mode 0600) and printed once as part of the UI's address.
    Generate,
    /// A token the user chose (`--admin-token`, `--admin-token-file`, the
    /// environment or the file), at least 16 characters.
    Given(String),
    /// `--admin-token none`: no token at all (loopback only, warned about
    /// at start).
    Off,
}

/// What `--admin-token` takes to turn the token off.
pub const ADMIN_TOKEN_OFF: &str = "none";

/// The name of the generated token's file inside the data folder.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

// The token is a secret: a `{:?}` of the configuration must not show it.
impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminToken::Generate => f.write_str("Generate"),
            AdminToken::Given(_) => f.write_str("Given(hidden)"),
            AdminToken::Off => f.write_str("Off"),
        }
    }
}

/// The admin address the binary uses when none is given.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:8900";

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8899)),
            relays: Vec::new(),
            idle_timeout: Duration::from_secs(300),
            half_close_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            response_timeout: Duration::from_secs(60),
            client_idle_timeout: Duration::from_secs(60),
            body_idle_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 64,
            keepalive: Keepalive {
                idle: Duration::from_secs(30),
                interval: Duration::from_secs(10),
                count: 3,
                user_timeout: Duration::from_secs(60),
            },
            max_connections: 10_000,
            max_header_size: 64 * 1024,
            max_headers: 100,
            drain_timeout: Duration::from_secs(30),
            buffer_size: 64 * 1024,
            log_level: "info".to_string(),
            workers: None,
            // The library default runs no admin server; the binary's flag
            // default is DEFAULT_ADMIN.
            admin: None,
            // Locked by default, in-process proxies too: a tokenless admin
            // lets any local user rewrite the rules.
            admin_token: AdminToken::Generate,
            auth_file: None,
            max_connection_age: None,
            test_hooks: false,
            record: Recording::default(),
            rules_file: None,
            mock_dir: None,
        }
    }
}

/// Flags of `sluice run` (and of plain `sluice`). Every flag is optional so
/// that an absent flag leaves the file's value in place.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// TOML config file; flags given on the command line override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP proxy listener [default: 127.0.0.1:8899].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Port relay LISTEN=UPSTREAM, e.g. 127.0.0.1:9000=127.0.0.1:8080 (repeatable).
    #[arg(long = "relay", value_name = "LISTEN=UPSTREAM")]
    pub relays: Vec<String>,
    /// Tunnel/relay idle timeout: no bytes either way [default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// Grace period after one side of a tunnel half-closes [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub half_close_timeout: Option<String>,
    /// Upstream connect timeout [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Time allowed to receive a complete request head [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub header_timeout: Option<String>,
    /// Time allowed for the upstream to send its response head [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub response_timeout: Option<String>,
    /// Keep-alive client connection idle timeout between requests [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub client_idle_timeout: Option<String>,
    /// Body idle timeout: a body with no progress this long fails [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub body_idle_timeout: Option<String>,
    /// Idle pooled upstream connections close after this [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub pool_idle_timeout: Option<String>,
    /// Max idle pooled connections per upstream host [default: 64].
    #[arg(long, value_name = "N")]
    pub pool_max_idle_per_host: Option<String>,
    /// TCP keepalive idle time before the first probe [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub keepalive_idle: Option<String>,
    /// TCP keepalive probe interval [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub keepalive_interval: Option<String>,
    /// TCP keepalive probes before the peer is declared dead [default: 3].
    #[arg(long, value_name = "N")]
    pub keepalive_count: Option<String>,
    /// TCP_USER_TIMEOUT: max time written data may stay unacknowledged
    /// [default: keepalive idle + interval x count].
    #[arg(long, value_name = "DURATION")]
    pub user_timeout: Option<String>,
    /// Max concurrent client connections; excess is refused at once [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<String>,
    /// Max request head size in bytes; larger heads get 431 [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub max_header_size: Option<String>,
    /// Max number of request headers; more get 431 [default: 100].
    #[arg(long, value_name = "N")]
    pub max_headers: Option<String>,
    /// On SIGTERM/SIGINT, time given to in-flight work before closing it [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Per-direction tunnel copy buffer in bytes [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub buffer_size: Option<String>,
    /// Log level or tracing filter (error, warn, info, debug, trace) [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Runtime worker threads [default: the CPUs this process may run on].
    #[arg(long, value_name = "N")]
    pub workers: Option<String>,
    /// Admin server address (API, /metrics), or `off` [default: 127.0.0.1:8900].
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Bearer token for the admin server (required when it is not on
    /// loopback), or `none` for no token (loopback only) [default: a random
    /// token, written to DATA_DIR/admin.token and printed once].
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SLUICE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// File holding the admin bearer token.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Proxy users file: `name:bcrypt-hash` per line; enables Proxy-Authorization.
    #[arg(long, value_name = "FILE")]
    pub auth: Option<PathBuf>,
    /// Warn about connections older than this (leak watchdog).
    #[arg(long, value_name = "DURATION")]
    pub max_connection_age: Option<String>,
    /// Test-only admin routes.
    #[arg(long, hide = true)]
    pub test_hooks: bool,
    /// Record every request: `on` or `off` [default: on].
    #[arg(long, value_name = "on|off")]
    pub record: Option<String>,
    /// Folder of the record store, or `:memory:` for none on disk
    /// [default: the user's data directory, e.g. ~/.local/share/sluice].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Bytes of each request and response body to record; 0 records no
    /// bodies [default: 1MiB].
    #[arg(long, value_name = "BYTES")]
    pub record_body_limit: Option<String>,
    /// Keep at most this many records [default: 1000000].
    #[arg(long, value_name = "N")]
    pub retain_records: Option<String>,
    /// Keep the record store under this size [default: 1GiB].
    #[arg(long, value_name = "BYTES")]
    pub retain_bytes: Option<String>,
    /// Delete records older than this [default: 7d].
    #[arg(long, value_name = "DURATION")]
    pub retain_age: Option<String>,
    /// Rule file: one `MATCH ACTION...` rule per line (see README), reloaded
    /// when it changes and on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// The folder `bodyFile://` reads from (no `..`, no symlinks) [default:
    /// the rule file's folder; rules put through the API need it to use
    /// bodyFile].
    #[arg(long, value_name = "DIR")]
    pub mock_dir: Option<PathBuf>,
    /// Records that may wait for the store writer before new ones are
    /// dropped [default: 16384].
    #[arg(long, value_name = "N")]
    pub record_queue: Option<String>,
    /// Body bytes that may wait for the store writer before new bodies are
    /// dropped [default: 64MiB].
    #[arg(long, value_name = "BYTES")]
    pub record_queue_bytes: Option<String>,
}

/// The TOML file: the same keys as the flags, with `_` for `-`. Values are
/// read as written and validated with the flags, so messages name the key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    relay: Option<Vec<String>>,
    idle_timeout: Option<toml::Value>,
    half_close_timeout: Option<toml::Value>,
    connect_timeout: Option<toml::Value>,
    header_timeout: Option<toml::Value>,
    response_timeout: Option<toml::Value>,
    client_idle_timeout: Option<toml::Value>,
    body_idle_timeout: Option<toml::Value>,
    pool_idle_timeout: Option<toml::Value>,
    pool_max_idle_per_host: Option<toml::Value>,
    keepalive_idle: Option<toml::Value>,
    keepalive_interval: Option<toml::Value>,
    keepalive_count: Option<toml::Value>,
    user_timeout: Option<toml::Value>,
    max_connections: Option<toml::Value>,
    max_header_size: Option<toml::Value>,
    max_headers: Option<toml::Value>,
    drain_timeout: Option<toml::Value>,
    buffer_size: Option<toml::Value>,
    log_level: Option<String>,
    workers: Option<toml::Value>,
    admin: Option<String>,
    admin_token: Option<String>,
    admin_token_file: Option<PathBuf>,
    auth: Option<PathBuf>,
    max_connection_age: Option<toml::Value>,
    record: Option<toml::Value>,
    data_dir: Option<String>,
    record_body_limit: Option<toml::Value>,
    retain_records: Option<toml::Value>,
    retain_bytes: Option<toml::Value>,
    retain_age: Option<toml::Value>,
    record_queue: Option<toml::Value>,
    record_queue_bytes: Option<toml::Value>,
    rules: Option<PathBuf>,
    mock_dir: Option<PathBuf>,
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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

fn parse_switch(key: &str, text: &str) -> Result<bool, ConfigError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(invalid(key, text, "expected on or off")),
    }
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

fn parse_level(key: &str, text: &str) -> Result<String, ConfigError> {
    tracing_subscriber::EnvFilter::try_new(text)
        .map_err(|e| invalid(key, text, format!("not a log level or filter: {e}")))?;
    Ok(text.to_string())
}

/// One setting's raw text, from a flag or else the file, with its name.
struct Source<'a> {
    flag: Option<&'a String>,
    file: Option<String>,
    key: &'static str,
}

impl Source<'_> {
    fn get(&self) -> Option<(String, &'static str)> {
        match (self.flag, &self.file) {
            (Some(f), _) => Some((f.clone(), self.key)),
            (None, Some(v)) => Some((v.clone(), self.key)),
            _ => None,
        }
    }
}

impl Config {
    /// Builds the configuration from flags and the file they may name.
    pub fn from_args(args: &RunArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string().trim_end().to_string(),
                })?
            }
            None => FileConfig::default(),
        };
        let mut c = Config::default();
        let v = |o: &Option<toml::Value>| o.as_ref().map(value_text);

        macro_rules! src {
            ($flag:ident, $file:expr, $key:expr) => {
                Source {
                    flag: args.$flag.as_ref(),
                    file: $file,
                    key: $key,
                }
                .get()
            };
        }
        macro_rules! duration {
            ($field:expr, $flag:ident) => {
                if let Some((t, k)) = src!($flag, v(&file.$flag), stringify!($flag)) {
                    $field = parse_duration(k, &t)?;
                }
            };
        }

        if let Some((t, k)) = src!(listen, file.listen.clone(), "listen") {
            c.listen = parse_addr(k, &t)?;
        }
        let relay_texts: Vec<String> = if !args.relays.is_empty() {
            args.relays.clone()
        } else {
            file.relay.clone().unwrap_or_default()
        };
        for r in &relay_texts {
            c.relays.push(parse_relay("relay", r)?);
        }
        duration!(c.idle_timeout, idle_timeout);
        duration!(c.half_close_timeout, half_close_timeout);
        duration!(c.connect_timeout, connect_timeout);
        duration!(c.header_timeout, header_timeout);
        duration!(c.response_timeout, response_timeout);
        duration!(c.client_idle_timeout, client_idle_timeout);
        duration!(c.body_idle_timeout, body_idle_timeout);
        duration!(c.pool_idle_timeout, pool_idle_timeout);
        duration!(c.keepalive.idle, keepalive_idle);
        duration!(c.keepalive.interval, keepalive_interval);
        duration!(c.drain_timeout, drain_timeout);
        if let Some((t, k)) = src!(keepalive_count, v(&file.keepalive_count), "keepalive_count") {
            c.keepalive.count = parse_count(k, &t, 1, 127)? as u32;
        }
        c.keepalive.user_timeout = c.keepalive.idle + c.keepalive.interval * c.keepalive.count;
        duration!(c.keepalive.user_timeout, user_timeout);
        if let Some((t, k)) = src!(max_connections, v(&file.max_connections), "max_connections") {
            c.max_connections = parse_count(k, &t, 1, 10_000_000)? as usize;
        }
        if let Some((t, k)) = src!(max_header_size, v(&file.max_header_size), "max_header_size") {
            c.max_header_size = parse_count(k, &t, 1024, 16 * 1024 * 1024)? as usize;
        }
        if let Some((t, k)) = src!(max_headers, v(&file.max_headers), "max_headers") {
            c.max_headers = parse_count(k, &t, 1, 10_000)? as usize;
        }
        if let Some((t, k)) = src!(
            pool_max_idle_per_host,
            v(&file.pool_max_idle_per_host),
            "pool_max_idle_per_host"
        ) {
            c.pool_max_idle_per_host = parse_count(k, &t, 0, 100_000)? as usize;
        }
        if let Some((t, k)) = src!(buffer_size, v(&file.buffer_size), "buffer_size") {
            c.buffer_size = parse_count(k, &t, 512, 16 * 1024 * 1024)? as usize;
        }
        if let Some((t, k)) = src!(log_level, file.log_level.clone(), "log_level") {
            c.log_level = parse_level(k, &t)?;
        }
        if let Some((t, k)) = src!(workers, v(&file.workers), "workers") {
            c.workers = Some(parse_count(k, &t, 1, 1024)? as usize);
        }
        let admin_text = args
            .admin
            .clone()
            .or(file.admin.clone())
            .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
        c.admin = if admin_text.trim().eq_ignore_ascii_case("off") {
            None
        } else {
            Some(parse_addr("admin", &admin_text)?)
        };
        let mut given = args.admin_token.clone().or(file.admin_token.clone());
        if let Some(path) = args
            .admin_token_file
            .as_ref()
            .or(file.admin_token_file.as_ref())
        {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            given = Some(text.trim().to_string());
        }
        c.admin_token = match given {
            None => AdminToken::Generate,
            Some(t) if t.trim().eq_ignore_ascii_case(ADMIN_TOKEN_OFF) => AdminToken::Off,
            Some(t) if t.len() < 16 => {
                return Err(invalid(
                    "admin_token",
                    "(hidden)",
                    "must be at least 16 characters",
                ))
            }
            Some(t) => AdminToken::Given(t),
        };
        if let Some(a) = c.admin {
            if !a.ip().is_loopback() {
                match c.admin_token {
                    AdminToken::Given(_) => {}
                    AdminToken::Generate => {
                        return Err(invalid(
                            "admin",
                            &a.to_string(),
                            "not a loopback address: give --admin-token or --admin-token-file",
                        ))
                    }
                    AdminToken::Off => {
                        return Err(invalid(
                            "admin",
                            &a.to_string(),
                            "not a loopback address: --admin-token none is for a loopback \
                             admin only; give --admin-token or --admin-token-file",
                        ))
                    }
                }
            }
            if a == c.listen && a.port() != 0 {
                return Err(invalid("admin", &a.to_string(), "same address as --listen"));
            }
        }
        c.auth_file = args.auth.clone().or(file.auth.clone());
        if let Some((t, k)) = src!(
            max_connection_age,
            v(&file.max_connection_age),
            "max_connection_age"
        ) {
            c.max_connection_age = Some(parse_duration(k, &t)?);
        }
        c.test_hooks = args.test_hooks;
        c.record = recording_from(args, &file)?;
        c.rules_file = args.rules.clone().or(file.rules.clone());
        c.mock_dir = args.mock_dir.clone().or(file.mock_dir.clone());
        if let Some(d) = &c.mock_dir {
            if !d.is_dir() {
                return Err(invalid(
                    "mock_dir",
                    &d.display().to_string(),
                    "not a folder",
                ));
            }
        }
        for r in &c.relays {
            // Port 0 asks for an ephemeral port each: no clash possible.
            if r.listen == c.listen && r.listen.port() != 0 {
                return Err(invalid(
                    "relay",
                    &r.listen.to_string(),
                    "same address as --listen",
                ));
            }
        }
        Ok(c)
    }
}

/// The recording settings; the store defaults to the user's data folder.
fn recording_from(args: &RunArgs, file: &FileConfig) -> Result<Recording, ConfigError> {
    let v = |o: &Option<toml::Value>| o.as_ref().map(value_text);
    let src = |flag: Option<&String>, file: Option<String>, key: &'static str| {
        Source { flag, file, key }.get()
    };
    let mut r = Recording {
        data_dir: DataDir::Path(default_data_dir()),
        ..Recording::default()
    };
    if let Some((t, k)) = src(args.record.as_ref(), v(&file.record), "record") {
        r.enabled = parse_switch(k, &t)?;
    }
    if let Some((t, k)) = src(args.data_dir.as_ref(), file.data_dir.clone(), "data_dir") {
        let t = t.trim();
        if t.is_empty() {
            return Err(invalid(k, t, "expected a folder or :memory:"));
        }
        r.data_dir = if t == ":memory:" {
            DataDir::Memory
        } else {
            DataDir::Path(PathBuf::from(t))
        };
    }
    if let Some((t, k)) = src(
        args.record_body_limit.as_ref(),
        v(&file.record_body_limit),
        "record_body_limit",
    ) {
        let n = parse_bytes(k, &t)?;
        if n > 64 * 1024 * 1024 {
            return Err(invalid(k, &t, "at most 64MiB per body"));
        }
        r.body_limit = n as usize;
    }
    if let Some((t, k)) = src(
        args.retain_records.as_ref(),
        v(&file.retain_records),
        "retain_records",
    ) {
        r.retain_records = parse_count(k, &t, 1, u32::MAX as u64)?;
    }
    if let Some((t, k)) = src(
        args.retain_bytes.as_ref(),
        v(&file.retain_bytes),
        "retain_bytes",
    ) {
        let n = parse_bytes(k, &t)?;
        if n < 1024 * 1024 {
            return Err(invalid(k, &t, "at least 1MiB"));
        }
        r.retain_bytes = n;
    }
    if let Some((t, k)) = src(args.retain_age.as_ref(), v(&file.retain_age), "retain_age") {
        r.retain_age = parse_duration(k, &t)?;
    }
    if let Some((t, k)) = src(
        args.record_queue.as_ref(),
        v(&file.record_queue),
        "record_queue",
    ) {
        r.queue_records = parse_count(k, &t, 1, 1_000_000)? as usize;
    }
    if let Some((t, k)) = src(
        args.record_queue_bytes.as_ref(),
        v(&file.record_queue_bytes),
        "record_queue_bytes",
    ) {
        let n = parse_bytes(k, &t)?;
        if n > 4 * 1024 * 1024 * 1024 {
            return Err(invalid(k, &t, "at most 4GiB"));
        }
        r.queue_body_bytes = n as usize;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn args() -> RunArgs {
        RunArgs::default()
    }

    #[test]
    fn defaults_when_nothing_given() {
        let c = Config::from_args(&args()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8899".parse().unwrap());
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.keepalive.user_timeout, Duration::from_secs(60));
    }

    #[test]
    fn durations_accept_common_units() {
        assert_eq!(parse_duration("k", "30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("k", "5m").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_duration("k", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        let e = parse_duration("idle_timeout", "5x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("idle_timeout") && e.contains("5x"), "{e}");
        assert!(parse_duration("k", "0s").is_err());
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "idle_timeout = \"2m\"\nconnect_timeout = \"3s\"\nkeepalive_count = 5\nrelay = [\"127.0.0.1:9000=localhost:80\"]").unwrap();
        let mut a = args();
        a.config = Some(f.path().to_path_buf());
        a.connect_timeout = Some("7s".into());
        let c = Config::from_args(&a).unwrap();
        assert_eq!(c.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.connect_timeout, Duration::from_secs(7));
        assert_eq!(c.keepalive.count, 5);
        assert_eq!(c.relays[0].upstream, "localhost:80");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "idle_timout = \"2m\"").unwrap();
        let mut a = args();
        a.config = Some(f.path().to_path_buf());
        let e = Config::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("idle_timout"), "{e}");

        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "max_connections = \"lots\"").unwrap();
        a.config = Some(f.path().to_path_buf());
        let e = Config::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("max_connections") && e.contains("lots"), "{e}");

        let mut a = args();
        a.relays = vec!["127.0.0.1:9000".into()];
        let e = Config::from_args(&a).unwrap_err().to_string();
        assert!(e.contains("relay") && e.contains("127.0.0.1:9000"), "{e}");
        let mut a = args();
        a.listen = Some("127.0.0.1:0".into());
        a.relays = vec!["127.0.0.1:0=localhost:80".into()];
        assert!(
            Config::from_args(&a).is_ok(),
            "two ephemeral ports never clash"
        );
        a.listen = Some("127.0.0.1:9000".into());
        a.relays = vec!["127.0.0.1:9000=localhost:80".into()];
        assert!(Config::from_args(&a).is_err());
        let mut a = args();
        a.listen = Some("nowhere".into());
        assert!(Config::from_args(&a)
            .unwrap_err()
            .to_string()
            .contains("nowhere"));
    }
}
