//! Connection registry: the one owner-of-record for every live connection.
//!
//! Invariants:
//! - every socket sluice holds lives inside a value that also holds a
//!   [`ConnGuard`]; dropping the guard deregisters the entry, logs one close
//!   line with its [`CloseReason`] and counts that reason;
//! - the registry is the only source for "how many connections": live counts
//!   by [`Kind`] are maintained on register/deregister, never recomputed;
//! - every entry carries a kill token that is a child of the registry's
//!   hard-stop token, so an admin kill or the end of a drain reaches it.
//!
//! Later readers (inventory API, metrics, kernel cross-check) only add fields
//! to [`ConnEntry`] and read [`Registry::snapshot`].

mod reason;

pub use reason::{CloseReason, Side};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// What a registry entry stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An accepted client connection speaking HTTP/1.1 to the forward proxy.
    Http,
    /// A pooled connection from sluice to an origin, used by forwarded requests.
    Upstream,
    /// A CONNECT tunnel: client leg and upstream leg together.
    Tunnel,
    /// A port relay (`--relay`): client leg and fixed upstream leg together.
    Relay,
    /// A connection to the admin server.
    Admin,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Http,
        Kind::Upstream,
        Kind::Tunnel,
        Kind::Relay,
        Kind::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Upstream => "upstream",
            Kind::Tunnel => "tunnel",
            Kind::Relay => "relay",
            Kind::Admin => "admin",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Connections a client opened to sluice (not pool legs, not admin).
    pub fn client_facing(self) -> bool {
        matches!(self, Kind::Http | Kind::Tunnel | Kind::Relay)
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// The next deadline that will close a connection, as last computed by the
/// task that enforces it.
#[derive(Debug, Clone, Copy)]
pub struct NextDeadline {
    pub at: Instant,
    /// The close reason label it would produce.
    pub reason: &'static str,
    /// For idle deadlines: the idle window, so readers can move `at`
    /// forward past activity the enforcing task has not looked at yet.
    pub idle_window: Option<Duration>,
}

/// A connection's state and next deadline as its own task sees them right
/// now; `None` while the stored values apply.
#[derive(Debug, Clone, Copy)]
pub struct PhaseView {
    pub state: ConnState,
    pub deadline: Option<NextDeadline>,
}

/// Computes a [`PhaseView`] at read time.
pub type PhaseFn = Box<dyn Fn() -> Option<PhaseView> + Send + Sync>;

/// Holds the optional [`PhaseFn`] of an entry.
#[derive(Default)]
struct PhaseSlot(OnceLock<PhaseFn>);

impl std::fmt::Debug for PhaseSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "PhaseSlot(set)"
        } else {
            "PhaseSlot(unset)"
        })
    }
}

/// Coarse lifecycle state of a connection, readable live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    /// Waiting for (or reading) a request head.
    ReadingHeaders = 0,
    /// Connecting to, or waiting for the response head of, the upstream.
    WaitingUpstream = 1,
    /// Bytes are flowing.
    Streaming = 2,
    /// The client sent EOF; the upstream direction still flows.
    HalfClosedByClient = 3,
    /// The upstream sent EOF; the client direction still flows.
    HalfClosedByUpstream = 4,
    /// Shutdown has begun; the connection is finishing its work.
    Draining = 5,
    /// Idle in a pool or between keep-alive requests.
    Idle = 6,
}

impl ConnState {
    fn from_u8(v: u8) -> ConnState {
        match v {
            0 => ConnState::ReadingHeaders,
            1 => ConnState::WaitingUpstream,
            2 => ConnState::Streaming,
            3 => ConnState::HalfClosedByClient,
            4 => ConnState::HalfClosedByUpstream,
            5 => ConnState::Draining,
            _ => ConnState::Idle,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::ReadingHeaders => "reading_headers",
            ConnState::WaitingUpstream => "waiting_upstream",
            ConnState::Streaming => "streaming",
            ConnState::HalfClosedByClient => "half_closed_by_client",
            ConnState::HalfClosedByUpstream => "half_closed_by_upstream",
            ConnState::Draining => "draining",
            ConnState::Idle => "idle",
        }
    }
}

/// Live, shared facts about one connection. Cheap to read from any thread.
#[derive(Debug)]
pub struct ConnEntry {
    pub id: u64,
    pub kind: Kind,
    pub client: Option<SocketAddr>,
    upstream: OnceLock<String>,
    pub started: Instant,
    state: AtomicU8,
    /// Bytes sent from the client towards the upstream.
    pub bytes_up: AtomicU64,
    /// Bytes sent from the upstream towards the client.
    pub bytes_down: AtomicU64,
    pub requests: AtomicU64,
    /// Cancelled by an admin kill or at the end of a shutdown drain.
    pub kill: CancellationToken,
    reason: Mutex<Option<CloseReason>>,
    /// Kernel inodes of the sockets this entry owns (for the orphan check).
    sockets: Mutex<Vec<u64>>,
    /// Who the traffic belongs to: the authenticated user or the client IP.
    user: OnceLock<String>,
    /// The rules that shaped this connection (a tunnel's CONNECT), as the
    /// JSON list records carry.
    rules: OnceLock<String>,
    /// What happened to a tunnel's TLS (intercepted, passed through and
    /// why, refused), as a JSON object; the latest word wins (an
    /// intercepted tunnel can turn out refused).
    tls: Mutex<Option<Arc<str>>>,
    deadline: Mutex<Option<NextDeadline>>,
    /// Read-time view of state and deadline, for connections whose phase
    /// changes on the data path without waking the task that enforces the
    /// deadline (an HTTP keep-alive connection between requests).
    phase: PhaseSlot,
    /// Byte total last seen by the sampler and when it last changed (ms
    /// since `started`): idle time without touching the data path.
    seen_bytes: AtomicU64,
    last_change_ms: AtomicU64,
}

impl ConnEntry {
    pub fn state(&self) -> ConnState {
        let stored = ConnState::from_u8(self.state.load(Ordering::Relaxed));
        if stored == ConnState::Draining {
            return stored;
        }
        self.phase_view().map(|v| v.state).unwrap_or(stored)
    }

    /// Installs the read-time view of state and deadline (once).
    pub fn set_phase_fn(&self, f: PhaseFn) {
        let _ = self.phase.0.set(f);
    }

    fn phase_view(&self) -> Option<PhaseView> {
        self.phase.0.get().and_then(|f| f())
    }

    pub fn set_state(&self, state: ConnState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// The upstream this connection reaches, once known. Set at most once.
    pub fn upstream(&self) -> Option<&str> {
        self.upstream.get().map(String::as_str)
    }

    pub fn set_upstream(&self, upstream: impl Into<String>) {
        let _ = self.upstream.set(upstream.into());
    }

    /// Records why the connection is closing. The first reason wins: the
    /// cause is recorded where it is detected, later cleanup must not mask it.
    pub fn set_reason(&self, reason: CloseReason) {
        if let Ok(mut slot) = self.reason.lock() {
            if slot.is_none() {
                *slot = Some(reason);
            }
        }
    }

    pub fn reason(&self) -> Option<CloseReason> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records that this entry owns `socket`, so the kernel cross-check can
    /// account for it.
    pub fn attach_socket<S: std::os::fd::AsFd>(&self, socket: &S) {
        if let Some(ino) = socket_inode(socket) {
            if let Ok(mut v) = self.sockets.lock() {
                v.push(ino);
            }
        }
    }

    /// Like [`Self::attach_socket`], for a socket that closes before the
    /// entry does (one stream's own connection on a multiplexed client
    /// connection): the seat takes the socket off the entry when dropped,
    /// so a long-lived entry does not collect one inode per stream.
    pub fn seat_socket<S: std::os::fd::AsFd>(self: &Arc<Self>, socket: &S) -> Option<SocketSeat> {
        let ino = socket_inode(socket)?;
        self.sockets.lock().ok()?.push(ino);
        Some(SocketSeat {
            entry: self.clone(),
            ino,
        })
    }

    pub fn user(&self) -> Option<&str> {
        self.user.get().map(String::as_str)
    }

    /// The rules that shaped this connection (JSON list), if any.
    pub fn rules(&self) -> Option<&str> {
        self.rules.get().map(String::as_str)
    }

    /// Set at most once; an empty list is not stored.
    pub fn set_rules(&self, rules: String) {
        if !rules.is_empty() {
            let _ = self.rules.set(rules);
        }
    }

    /// The tunnel's TLS state (JSON object), if it carried TLS.
    pub fn tls(&self) -> Option<Arc<str>> {
        self.tls.lock().ok().and_then(|t| t.clone())
    }

    pub fn set_tls(&self, tls: String) {
        if let Ok(mut slot) = self.tls.lock() {
            *slot = Some(tls.into());
        }
    }

    /// Sets the user once; true if this call set it.
    pub fn set_user(&self, user: impl Into<String>) -> bool {
        self.user.set(user.into()).is_ok()
    }

    pub fn set_deadline(&self, d: Option<NextDeadline>) {
        if let Ok(mut slot) = self.deadline.lock() {
            *slot = d;
        }
    }

    /// The next deadline, with idle deadlines moved past observed activity.
    pub fn next_deadline(&self) -> Option<NextDeadline> {
        if let Some(v) = self.phase_view() {
            return v.deadline;
        }
        let mut d = self.deadline.lock().ok().and_then(|d| *d)?;
        if let Some(w) = d.idle_window {
            let moved = self.last_active() + w;
            if moved > d.at {
                d.at = moved;
            }
        }
        Some(d)
    }

    /// Called by the sampler about once a second: notes whether bytes moved.
    pub fn observe_activity(&self) {
        let total = self.bytes_up.load(Ordering::Relaxed) + self.bytes_down.load(Ordering::Relaxed);
        if self.seen_bytes.swap(total, Ordering::Relaxed) != total {
            self.last_change_ms
                .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }

    /// When bytes last moved (as observed by the sampler), or the start.
    pub fn last_active(&self) -> Instant {
        self.started + Duration::from_millis(self.last_change_ms.load(Ordering::Relaxed))
    }

    pub fn idle(&self) -> Duration {
        self.last_active().elapsed()
    }

    pub fn socket_inodes(&self) -> Vec<u64> {
        self.sockets.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// A socket counted as an entry's until this is dropped
/// ([`ConnEntry::seat_socket`]).
#[derive(Debug)]
pub struct SocketSeat {
    entry: Arc<ConnEntry>,
    ino: u64,
}

impl Drop for SocketSeat {
    fn drop(&mut self) {
        if let Ok(mut v) = self.entry.sockets.lock() {
            if let Some(i) = v.iter().rposition(|&n| n == self.ino) {
                v.swap_remove(i);
            }
        }
    }
}

/// The kernel inode of a socket (what /proc/net/tcp and /proc/PID/fd show).
pub fn socket_inode<S: std::os::fd::AsFd>(socket: &S) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a live descriptor borrowed for the call, into a zeroed stat.
    let rc = unsafe { libc::fstat(socket.as_fd().as_raw_fd(), &mut st) };
    (rc == 0).then_some(st.st_ino)
}

const SHARDS: usize = 16;

/// Called with every entry as it closes.
pub type CloseHook = Box<dyn Fn(&ConnEntry, &CloseReason) + Send + Sync>;

/// Process-wide (per running instance) table of live connections.
pub struct Registry {
    shards: Vec<Mutex<HashMap<u64, Arc<ConnEntry>>>>,
    next_id: AtomicU64,
    live: [AtomicU64; 5],
    accepted: [AtomicU64; 5],
    /// Bytes of connections already closed, by direction (live ones are
    /// summed from their entries at read time).
    closed_bytes_up: AtomicU64,
    closed_bytes_down: AtomicU64,
    /// Called with every entry as it closes (per-user accounting).
    on_close: OnceLock<CloseHook>,
    closed_by_reason: Mutex<HashMap<&'static str, u64>>,
    hard_stop: CancellationToken,
    /// Listening sockets of this instance (inodes), owned by the server.
    listeners: Mutex<Vec<u64>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("live_total", &self.live_total())
            .finish_non_exhaustive()
    }
}

impl Registry {
    pub fn new() -> Arc<Registry> {
        Arc::new(Registry {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_id: AtomicU64::new(1),
            live: Default::default(),
            accepted: Default::default(),
            closed_by_reason: Mutex::new(HashMap::new()),
            hard_stop: CancellationToken::new(),
            listeners: Mutex::new(Vec::new()),
            closed_bytes_up: AtomicU64::new(0),
            closed_bytes_down: AtomicU64::new(0),
            on_close: OnceLock::new(),
        })
    }

    /// Registers a new connection and returns the guard that owns its entry.
    pub fn register(self: &Arc<Self>, kind: Kind, client: Option<SocketAddr>) -> ConnGuard {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(ConnEntry {
            id,
            kind,
            client,
            upstream: OnceLock::new(),
            started: Instant::now(),
            state: AtomicU8::new(ConnState::ReadingHeaders as u8),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            kill: self.hard_stop.child_token(),
            reason: Mutex::new(None),
            sockets: Mutex::new(Vec::new()),
            user: OnceLock::new(),
            rules: OnceLock::new(),
            tls: Mutex::new(None),
            deadline: Mutex::new(None),
            phase: PhaseSlot::default(),
            seen_bytes: AtomicU64::new(0),
            last_change_ms: AtomicU64::new(0),
        });
        if let Ok(mut shard) = self.shard(id).lock() {
            shard.insert(id, entry.clone());
        }
        self.live[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.accepted[kind.index()].fetch_add(1, Ordering::Relaxed);
        ConnGuard {
            registry: self.clone(),
            entry,
        }
    }

    fn shard(&self, id: u64) -> &Mutex<HashMap<u64, Arc<ConnEntry>>> {
        &self.shards[(id as usize) % SHARDS]
    }

    /// Records a listening socket of this instance.
    pub fn attach_listener<S: std::os::fd::AsFd>(&self, socket: &S) {
        if let (Some(ino), Ok(mut v)) = (socket_inode(socket), self.listeners.lock()) {
            v.push(ino);
        }
    }

    /// Every socket inode the registry accounts for: listeners and the
    /// sockets of live entries.
    pub fn known_inodes(&self) -> std::collections::HashSet<u64> {
        let mut set: std::collections::HashSet<u64> = self
            .listeners
            .lock()
            .map(|v| v.iter().copied().collect())
            .unwrap_or_default();
        for e in self.snapshot() {
            set.extend(e.socket_inodes());
        }
        set
    }

    /// Live connections of one kind.
    pub fn live(&self, kind: Kind) -> u64 {
        self.live[kind.index()].load(Ordering::Relaxed)
    }

    /// Live connections of all kinds.
    pub fn live_total(&self) -> u64 {
        Kind::ALL.iter().map(|k| self.live(*k)).sum()
    }

    /// Connections of one kind registered since start.
    pub fn accepted(&self, kind: Kind) -> u64 {
        self.accepted[kind.index()].load(Ordering::Relaxed)
    }

    /// How many connections closed for a reason (by [`CloseReason::label`]).
    pub fn closed(&self, reason_label: &str) -> u64 {
        self.closed_by_reason
            .lock()
            .ok()
            .and_then(|m| m.get(reason_label).copied())
            .unwrap_or(0)
    }

    /// Counts an event that closed a connection before it got a guard
    /// (for example a connection refused at the limit).
    pub fn count_close(&self, reason: &CloseReason) {
        if let Ok(mut m) = self.closed_by_reason.lock() {
            *m.entry(reason.label()).or_insert(0) += 1;
        }
    }

    /// Installs the close hook (once).
    pub fn set_on_close(&self, hook: CloseHook) {
        let _ = self.on_close.set(hook);
    }

    /// Bytes relayed since start, (client to upstream, upstream to client),
    /// counted on client-facing entries (upstream pool legs would double count).
    pub fn bytes_total(&self) -> (u64, u64) {
        let mut up = self.closed_bytes_up.load(Ordering::Relaxed);
        let mut down = self.closed_bytes_down.load(Ordering::Relaxed);
        for e in self.snapshot() {
            if e.kind.client_facing() {
                up += e.bytes_up.load(Ordering::Relaxed);
                down += e.bytes_down.load(Ordering::Relaxed);
            }
        }
        (up, down)
    }

    /// Every close count by reason label.
    pub fn closed_all(&self) -> Vec<(&'static str, u64)> {
        let mut v: Vec<_> = self
            .closed_by_reason
            .lock()
            .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A copy of every live entry, for inventory readers.
    pub fn snapshot(&self) -> Vec<Arc<ConnEntry>> {
        let mut out = Vec::new();
        for shard in &self.shards {
            if let Ok(shard) = shard.lock() {
                out.extend(shard.values().cloned());
            }
        }
        out
    }

    /// Closes one connection (both legs) by id. Returns false if unknown.
    pub fn kill(&self, id: u64, reason: CloseReason) -> bool {
        let entry = self.shard(id).lock().ok().and_then(|s| s.get(&id).cloned());
        match entry {
            Some(e) => {
                e.set_reason(reason);
                e.kill.cancel();
                true
            }
            None => false,
        }
    }

    /// Closes every live connection with `reason` (end of a shutdown drain).
    pub fn kill_all(&self, reason: CloseReason) {
        for e in self.snapshot() {
            e.set_reason(reason.clone());
        }
        self.hard_stop.cancel();
    }
}

/// Owns one registry entry. Dropping it deregisters the connection, counts
/// its close reason and writes the one close log line.
#[derive(Debug)]
pub struct ConnGuard {
    registry: Arc<Registry>,
    entry: Arc<ConnEntry>,
}

impl ConnGuard {
    pub fn entry(&self) -> &Arc<ConnEntry> {
        &self.entry
    }

    pub fn id(&self) -> u64 {
        self.entry.id
    }

    pub fn set_reason(&self, reason: CloseReason) {
        self.entry.set_reason(reason);
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let e = &self.entry;
        if let Ok(mut shard) = self.registry.shard(e.id).lock() {
            shard.remove(&e.id);
        }
        self.registry.live[e.kind.index()].fetch_sub(1, Ordering::Relaxed);
        let reason = e.reason().unwrap_or(CloseReason::Eof);
        self.registry.count_close(&reason);
        if e.kind.client_facing() {
            let r = &self.registry;
            r.closed_bytes_up
                .fetch_add(e.bytes_up.load(Ordering::Relaxed), Ordering::Relaxed);
            r.closed_bytes_down
                .fetch_add(e.bytes_down.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if let Some(hook) = self.registry.on_close.get() {
            hook(e, &reason);
        }
        let client = e.client.map(|a| a.to_string());
        tracing::info!(
            target: "sluice::conn",
            id = e.id,
            kind = e.kind.as_str(),
            client = client.as_deref().unwrap_or("-"),
            upstream = e.upstream().unwrap_or("-"),
            reason = %reason,
            failed = reason.side().map(Side::as_str).unwrap_or("-"),
            duration_ms = e.age().as_millis() as u64,
            bytes_up = e.bytes_up.load(Ordering::Relaxed),
            bytes_down = e.bytes_down.load(Ordering::Relaxed),
            requests = e.requests.load(Ordering::Relaxed),
            "connection closed"
        );
    }
}
