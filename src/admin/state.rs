//! What the admin handlers read: [`AdminState`], one per admin server,
//! shared by every connection and request.
//!
//! Invariant: a leaf of the admin tree (handlers depend on it, it on no
//! handler); it holds handles to state other rooms own, plus the admin's
//! own sessions and connection budgets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{limits, session};
use crate::config::{AdminConfig, Keepalive};
use crate::metrics::history::History;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::users::Users;
use crate::Shutdown;

/// What the admin handlers read.
pub struct AdminState {
    /// The admin server's own section: address, lock, test hooks.
    pub config: AdminConfig,
    /// Socket options of admin connections, as of every socket.
    pub keepalive: Keepalive,
    /// Deadline of a streamed answer (records, HAR) whose reader stalls,
    /// the proxy's body idle timeout.
    pub body_idle_timeout: Duration,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    pub history: Arc<History>,
    pub users: Arc<Users>,
    pub recorder: Arc<crate::record::Recorder>,
    pub rules: Arc<crate::rules::live::LiveRules>,
    pub started: Instant,
    pub shutdown: Shutdown,
    /// The proxy listener (target of the test-only leak hook).
    pub proxy_addr: SocketAddr,
    /// The token every request needs (`None`: `--admin-token none`).
    pub token: Option<String>,
    pub sessions: session::Sessions,
    /// The admin connections by client, for the budget.
    pub conns: Arc<limits::ConnTable>,
    pub live_readers: Arc<limits::LiveReaders>,
    pub heavy: limits::Heavy,
    /// HTTPS interception: the CA (served at `/ca*`), the leaf cache and
    /// the fallback table (shown at `/api/tls`).
    pub tls: Arc<crate::tls::Interception>,
    /// `--intercept` as given.
    pub intercept: String,
}
