//! The settings of `sluice run`, one row each: key (TOML key and flag),
//! type, how it is written, value name, default, help and how its text
//! becomes a value. See `table.rs` for what a row generates.
//!
//! Invariants: the rows are in the order the file's schema lists its keys
//! (unknown-key messages list them so); `--help` shows them in the same
//! order but for `record_queue` and `record_queue_bytes`, shown last as
//! they always were; a secret (`admin_token`) never shows its value in
//! `--help`, not even one from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::parse::read_token_file;
use super::sections::{default_data_dir, DataDir, RelaySpec};

const MIB: u64 = 1024 * 1024;

knobs! {
    listen: SocketAddr = string "ADDR" [default "127.0.0.1:8899"]
        "Address of the HTTP proxy listener"
        => |r| r.addr();
    relay: Vec<RelaySpec> = list "LISTEN=UPSTREAM" []
        "Port relay LISTEN=UPSTREAM, e.g. 127.0.0.1:9000=127.0.0.1:8080 (repeatable)"
        => |r| r.iter().map(|r| r.relay()).collect();
    idle_timeout: Duration = value "DURATION" [default "5m"]
        "Tunnel/relay idle timeout: no bytes either way"
        => |r| r.duration();
    half_close_timeout: Duration = value "DURATION" [default "60s"]
        "Grace period after one side of a tunnel half-closes"
        => |r| r.duration();
    connect_timeout: Duration = value "DURATION" [default "10s"]
        "Upstream connect timeout"
        => |r| r.duration();
    header_timeout: Duration = value "DURATION" [default "30s"]
        "Time allowed to receive a complete request head"
        => |r| r.duration();
    response_timeout: Duration = value "DURATION" [default "60s"]
        "Time allowed for the upstream to send its response head"
        => |r| r.duration();
    client_idle_timeout: Duration = value "DURATION" [default "60s"]
        "Keep-alive client connection idle timeout between requests"
        => |r| r.duration();
    body_idle_timeout: Duration = value "DURATION" [default "60s"]
        "Body idle timeout: a body with no progress this long fails"
        => |r| r.duration();
    pool_idle_timeout: Duration = value "DURATION" [default "30s"]
        "Idle pooled upstream connections close after this"
        => |r| r.duration();
    pool_max_idle_per_host: usize = value "N" [default "64"]
        "Max idle pooled connections per upstream host"
        => |r| r.count(0, 100_000).map(|n| n as usize);
    keepalive_idle: Duration = value "DURATION" [default "30s"]
        "TCP keepalive idle time before the first probe"
        => |r| r.duration();
    keepalive_interval: Duration = value "DURATION" [default "10s"]
        "TCP keepalive probe interval"
        => |r| r.duration();
    keepalive_count: u32 = value "N" [default "3"]
        "TCP keepalive probes before the peer is declared dead"
        => |r| r.count(1, 127).map(|n| n as u32);
    // The default is computed from the three above (Config::from_knobs).
    user_timeout: Option<Duration> = value "DURATION" [shown "keepalive idle + interval x count"]
        "TCP_USER_TIMEOUT: max time written data may stay unacknowledged"
        => |r| r.map(|r| r.duration()).transpose();
    max_connections: usize = value "N" [default "10000"]
        "Max concurrent client connections; excess is refused at once"
        => |r| r.count(1, 10_000_000).map(|n| n as usize);
    max_header_size: usize = value "BYTES" [default "65536"]
        "Max request head size in bytes; larger heads get 431"
        => |r| r.count(1024, 16 * MIB).map(|n| n as usize);
    max_headers: usize = value "N" [default "100"]
        "Max number of request headers; more get 431"
        => |r| r.count(1, 10_000).map(|n| n as usize);
    drain_timeout: Duration = value "DURATION" [default "30s"]
        "On SIGTERM/SIGINT, time given to in-flight work before closing it"
        => |r| r.duration();
    buffer_size: usize = value "BYTES" [default "65536"]
        "Per-direction tunnel copy buffer in bytes (a WebSocket or intercepted stream grows it up to 4x while reads fill it)"
        => |r| r.count(512, 16 * MIB).map(|n| n as usize);
    log_level: String = string "LEVEL" [default "info"]
        "Log level or tracing filter (error, warn, info, debug, trace)"
        => |r| r.level();
    workers: Option<usize> = value "N" [shown "the CPUs this process may run on"]
        "Runtime worker threads"
        => |r| r.map(|r| r.count(1, 1024).map(|n| n as usize)).transpose();
    admin: Option<SocketAddr> = string "ADDR" [default "127.0.0.1:8900" library "off"]
        "Admin server address (API, /metrics), or `off`"
        => |r| r.addr_or_off();
    // Only its presence and length are looked at here (Config::from_knobs).
    admin_token: Option<String> = string "TOKEN"
        [shown "a random token, written to DATA_DIR/admin.token and printed once"]
        "Bearer token for the admin server (required when it is not on loopback), \
         or `none` for no token (loopback only)"
        { env = "SLUICE_ADMIN_TOKEN", hide_env_values = true }
        => |r| Ok(r.map(|r| r.text));
    admin_token_file: Option<String> = path "FILE" []
        "File holding the admin bearer token"
        => |r| r.map(|r| read_token_file(&r.path)).transpose();
    auth: Option<PathBuf> = path "FILE" []
        "Proxy users file: `name:bcrypt-hash` per line; enables Proxy-Authorization"
        => |r| Ok(r.map(|r| r.path));
    max_connection_age: Option<Duration> = value "DURATION" []
        "Warn about connections older than this (leak watchdog)"
        => |r| r.map(|r| r.duration()).transpose();
    record: bool = value "on|off" [default "on"]
        "Record every request: `on` or `off`"
        => |r| r.switch();
    data_dir: DataDir = string "DIR"
        [shown "the user's data directory, e.g. ~/.local/share/sluice" library ":memory:"]
        "Folder of the record store, or `:memory:` for none on disk"
        => |r| r.map_or_else(|| Ok(DataDir::Path(default_data_dir())), |r| r.data_dir());
    record_body_limit: usize = value "BYTES" [default "1MiB"]
        "Bytes of each request and response body to record; 0 records no bodies"
        => |r| r.bytes_at_most(64 * MIB, "at most 64MiB per body").map(|n| n as usize);
    ws_message_limit: usize = value "BYTES" [default "64KiB"]
        "Bytes of each WebSocket message and server-sent event to record (longer ones are \
         flagged truncated)"
        => |r| r.bytes_at_most(16 * MIB, "at most 16MiB per message").map(|n| n as usize);
    ws_connection_messages: u64 = value "N" [default "10000"]
        "Messages recorded per WebSocket or event stream; past it they are only counted"
        => |r| r.count(0, u32::MAX as u64);
    ws_connection_bytes: u64 = value "BYTES" [default "16MiB"]
        "Message bytes recorded per WebSocket or event stream; past it they are only counted"
        => |r| r.bytes_at_most(1024 * MIB, "at most 1GiB per connection");
    retain_records: u64 = value "N" [default "1000000"]
        "Keep at most this many records"
        => |r| r.count(1, u32::MAX as u64);
    retain_bytes: u64 = value "BYTES" [default "1GiB"]
        "Keep the record store under this size"
        => |r| r.bytes_at_least(MIB, "at least 1MiB");
    retain_age: Duration = value "DURATION" [default "7d"]
        "Delete records older than this"
        => |r| r.duration();
    record_queue: usize = value "N" [default "16384"]
        "Records that may wait for the store writer before new ones are dropped"
        { display_order = 900 }
        => |r| r.count(1, 1_000_000).map(|n| n as usize);
    record_queue_bytes: usize = value "BYTES" [default "64MiB"]
        "Body bytes that may wait for the store writer before new bodies are dropped"
        { display_order = 901 }
        => |r| r.bytes_at_most(4 * 1024 * MIB, "at most 4GiB").map(|n| n as usize);
    rules: Option<PathBuf> = path "FILE" []
        "Rule file: one `MATCH ACTION...` rule per line (see README), reloaded when it \
         changes and on SIGHUP"
        => |r| Ok(r.map(|r| r.path));
    mock_dir: Option<PathBuf> = path "DIR"
        [shown "the rule file's folder; rules put through the API need it to use bodyFile"]
        "The folder `bodyFile://` reads from (no `..`, no symlinks)"
        => |r| r.map(|r| r.folder()).transpose();
    intercept: String = string "off|all|PATTERN,..." [default "off"]
        "Decrypt CONNECT tunnels whose host matches (rule MATCH patterns, comma-separated), \
         `all`, or `off`; the rules' intercept:// and passthrough:// decide first"
        => |r| Ok(r.text.trim().to_string());
    ca_cert: Option<PathBuf> = path "FILE" [shown "DATA_DIR/ca.pem, made on first start"]
        "CA certificate that signs intercepted hosts' certificates (with --ca-key)"
        => |r| Ok(r.map(|r| r.path));
    ca_key: Option<PathBuf> = path "FILE" [shown "DATA_DIR/ca-key.pem (mode 0600)"]
        "The CA's private key (PEM, mode 0600) (with --ca-cert)"
        => |r| Ok(r.map(|r| r.path));
    tls_handshake_timeout: Duration = value "DURATION" [default "10s"]
        "Time allowed for each TLS handshake of an intercepted tunnel (client and upstream)"
        => |r| r.duration();
    tls_fallback: Option<Duration> = value "DURATION" [default "10m"]
        "A client that refuses sluice's certificate for a host has that host passed \
         through, not intercepted, for this long; `0` turns it off"
        => |r| r.duration_or_zero();
    upstream_ca: Vec<PathBuf> = list "FILE" []
        "Extra trusted roots (PEM) for upstream certificates, beside the system's (repeatable)"
        => |r| Ok(r.iter().map(|r| PathBuf::from(&r.text)).collect());
    insecure_upstream: bool = value "on|off" [default "off"]
        "Do not verify upstream certificates of intercepted tunnels (logged; marked in \
         every record)"
        { num_args = 0..=1, default_missing_value = "on" }
        => |r| r.switch();
    leaf_cache: usize = value "N" [default "1000"]
        "Leaf certificates kept in memory (least recently used go first)"
        => |r| r.count(1, 1_000_000).map(|n| n as usize);
}
