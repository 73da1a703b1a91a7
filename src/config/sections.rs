//! The configuration's types: [`Config`] and its sections, one per
//! subsystem, and the values they hold.
//!
//! Invariant: plain data; every value here was validated when the
//! configuration was built (`layout.rs`), so subsystems use it as is.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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

/// The folder the binary records into when `--data-dir` is not given.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("sluice")
}

/// The validated configuration of one sluice instance.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub relays: Vec<RelaySpec>,
    pub client: ClientLimits,
    pub connector: ConnectorConfig,
    pub relay_limits: RelayLimitsConfig,
    pub admin: AdminConfig,
    pub users: UsersConfig,
    pub record: Recording,
    pub rules: RulesConfig,
    pub process: ProcessConfig,
    pub tls: TlsConfig,
}

/// What a client connection may take: its deadlines and its size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Client must deliver a complete request head within this.
    pub header_timeout: Duration,
    /// A keep-alive client connection with no request in flight closes after this.
    pub client_idle_timeout: Duration,
    /// A request or response body that makes no progress for this long fails.
    pub body_idle_timeout: Duration,
    /// Concurrent client connections, over every listener; excess is refused.
    pub max_connections: usize,
    pub max_header_size: usize,
    pub max_headers: usize,
}

/// How sluice reaches upstreams: connect deadline, socket options, how
/// long an answer may take, and the pool of idle connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectorConfig {
    pub connect_timeout: Duration,
    /// Upstream must deliver a response head within this.
    pub response_timeout: Duration,
    /// Idle pooled upstream connections close after this.
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// Applied to every socket, both legs (accepted ones too).
    pub keepalive: Keepalive,
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

/// Deadlines and buffer of the duplex copy (CONNECT tunnels, port relays).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayLimitsConfig {
    /// No bytes either way for this long closes both legs.
    pub idle_timeout: Duration,
    /// After one side sent EOF, the rest must finish within this.
    pub half_close_timeout: Duration,
    /// Per-direction copy buffer (allocated only while data flows).
    pub buffer_size: usize,
}

/// The admin server: where it listens and how it is locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Admin server address (API, metrics); `None` runs without one.
    pub admin_addr: Option<SocketAddr>,
    /// How the admin server is locked: a token given, one generated at
    /// start (the default), or none (loopback only).
    pub admin_token: AdminToken,
    /// Enables test-only admin routes (deliberate socket leak).
    pub test_hooks: bool,
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

/// Proxy users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersConfig {
    /// Proxy users (`name:bcrypt-hash` lines); when set, clients must
    /// authenticate with Proxy-Authorization: Basic.
    pub auth_file: Option<PathBuf>,
}

/// Request recording: what is captured and how much is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// `--record off` captures nothing.
    pub enabled: bool,
    pub data_dir: DataDir,
    /// Per body, bytes captured; 0 captures no bodies.
    pub body_limit: usize,
    /// Per WebSocket message or server-sent event, bytes captured.
    pub message_limit: usize,
    /// Per WebSocket or event stream, messages and payload bytes stored;
    /// past either, messages are counted only.
    pub connection_messages: u64,
    pub connection_message_bytes: u64,
    pub retain_records: u64,
    pub retain_bytes: u64,
    pub retain_age: Duration,
    /// Records that may wait for the writer; past it, records are dropped.
    pub queue_records: usize,
    /// Captured body bytes that may wait for the writer; past it, bodies
    /// are dropped (their records kept).
    pub queue_body_bytes: usize,
}

/// Tamper rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RulesConfig {
    /// Tamper rules (`--rules FILE`), reloaded on change and SIGHUP.
    pub rules_file: Option<PathBuf>,
    /// The only folder `bodyFile://` reads from (`--mock-dir`); without
    /// it, the rule file's folder.
    pub mock_dir: Option<PathBuf>,
}

/// HTTPS interception: what is decrypted, with which CA, how upstream
/// certificates are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// `off`, `all` or rule MATCH patterns (the rules decide first).
    pub intercept: String,
    /// A team CA (`--ca-cert` with `--ca-key`); neither: the data
    /// folder's own (one without the other is refused at start).
    pub ca_cert: Option<PathBuf>,
    pub ca_key: Option<PathBuf>,
    pub handshake_timeout: Duration,
    /// How long a client and host pair that refused sluice's certificate
    /// is passed through; `None`: never (`--tls-fallback 0`).
    pub fallback: Option<Duration>,
    /// Roots trusted for upstream certificates beside the system's.
    pub upstream_ca: Vec<PathBuf>,
    pub insecure_upstream: bool,
    /// Leaf certificates kept in memory.
    pub leaf_cache: usize,
}

/// The process as a whole: logging, threads, shutdown, leak watchdog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    pub log_level: String,
    pub workers: Option<usize>,
    pub drain_timeout: Duration,
    /// Connections older than this are reported by the leak watchdog.
    pub max_connection_age: Option<Duration>,
}
