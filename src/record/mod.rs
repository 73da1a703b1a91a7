//! Request recording: every HTTP exchange, CONNECT tunnel and relay
//! connection becomes a record, stored durably and searchable.
//!
//! Data flow: capture taps ([`capture::Exchange`], the registry's close
//! hook) build a [`model::Record`] and [`Recorder::submit`] it into a
//! bounded queue; one writer thread drains the queue in batches into the
//! [`store::Store`], enforces retention, then announces the new records on
//! the live feed.
//!
//! Invariants: submitting never blocks and never waits on the disk. When
//! the queue's body budget is spent, bodies are dropped first; when the
//! queue itself is full, whole records are; each drop is counted. The
//! writer commits within [`BATCH_WINDOW`] of a record arriving, so a crash
//! loses at most that much.

pub mod blobs;
pub mod capture;
pub mod decode;
pub mod event_stream;
pub mod har;
pub mod message_chunk;
pub mod message_log;
pub mod messages;
pub mod model;
pub mod query;
pub mod redact;
pub mod store;
pub mod stream_decode;

use compact_str::CompactString;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::broadcast;

use crate::config::Recording;
use crate::registry::{CloseReason, ConnEntry, Kind};
use capture::Exchange;
use messages::{MessageRow, Queued, RecordUpdate};
use model::{unix_micros, Record, RecordKind};
use query::Summary;
use store::{Store, StoreError};

/// The writer waits this long for a record before it runs retention and
/// checks for shutdown.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// A batch is committed at most this long after its first record arrived:
/// the bound on what a crash can lose and on how late the live feed is.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// How long the writer naps between drains inside a batch window.
const BATCH_NAP: Duration = Duration::from_millis(10);
/// Items per transaction, at most.
const MAX_BATCH: usize = 8192;
/// Records per transaction, at most: about a millisecond of the writer's
/// time, so that a proxy worker sharing its core never waits out a longer
/// burst of inserts (p99). A commit costs little more than the pages it
/// dirties, and records append to the table's tail, so small batches of
/// them cost no more pages than large ones. (Messages scatter over their
/// index, one leaf per connection, so they keep the larger batches.)
const MAX_BATCH_RECORDS: usize = 256;
/// Live-feed events buffered per subscriber before it is told it lagged.
const FEED_CAPACITY: usize = 4096;
/// The age limit is checked this often (it needs a clock and a query).
const AGE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Counters the metrics and the API report.
#[derive(Debug, Default)]
pub struct RecorderStats {
    pub submitted: AtomicU64,
    pub stored: AtomicU64,
    pub dropped_records: AtomicU64,
    pub dropped_bodies: AtomicU64,
    pub write_errors: AtomicU64,
    pub retention_deleted: AtomicU64,
    /// Records in the store, as the writer counts them.
    pub stored_now: AtomicU64,
    pub queued: AtomicUsize,
    pub queued_body_bytes: AtomicUsize,
    /// WebSocket messages and events stored, and those counted only
    /// because the queue was full.
    pub messages_stored: AtomicU64,
    pub messages_dropped: AtomicU64,
    /// Messages counted but not stored: their connection's budget was
    /// spent.
    pub messages_over_budget: AtomicU64,
}

/// What goes through the queue to the writer.
enum Item {
    Record(Box<Record>),
    Message(Box<Queued>),
    Update(Box<RecordUpdate>),
}

impl Item {
    /// Bytes it adds to a batch's WAL, roughly.
    fn weight(&self) -> usize {
        match self {
            Item::Record(r) => r.weight(),
            Item::Message(m) => 96 + m.payload.len() + m.meta.as_ref().map_or(0, |t| t.len()),
            Item::Update(_) => 64,
        }
    }

    /// Captured bytes it holds against the queue's body budget.
    fn body_bytes(&self) -> usize {
        match self {
            Item::Record(r) => r.body_bytes(),
            Item::Message(m) => m.payload.len(),
            Item::Update(_) => 0,
        }
    }
}

/// The recorder of one sluice instance.
pub struct Recorder {
    config: Recording,
    tx: Option<SyncSender<Item>>,
    next_id: AtomicU64,
    pub stats: Arc<RecorderStats>,
    feed: broadcast::Sender<Arc<Summary>>,
    messages: broadcast::Sender<Arc<MessageRow>>,
    /// Final updates that found the queue full: the writer takes them on
    /// its next pass (one per open WebSocket or event stream at most).
    overflow: Arc<Mutex<Vec<RecordUpdate>>>,
    pub store: Option<Arc<Store>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    closing: Arc<AtomicBool>,
    /// Test hook: the writer stops draining the queue while set.
    paused: Arc<AtomicBool>,
    /// Set by the writer while it honours `paused`.
    holding: Arc<AtomicBool>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("enabled", &self.enabled())
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// Opens the store and starts the writer (or a recorder that records
    /// nothing, with `--record off`).
    pub fn start(config: &Recording) -> Result<Arc<Recorder>, StoreError> {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        let (messages, _) = broadcast::channel(FEED_CAPACITY);
        let overflow = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(RecorderStats::default());
        let closing = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let holding = Arc::new(AtomicBool::new(false));
        if !config.enabled {
            return Ok(Arc::new(Recorder {
                config: config.clone(),
                tx: None,
                next_id: AtomicU64::new(1),
                stats,
                feed,
                messages,
                overflow,
                store: None,
                writer: Mutex::new(None),
                closing,
                paused,
                holding,
            }));
        }
        let store = Store::open(config)?;
        let max_id = store.max_id()?;
        let max_message_id = store.max_message_id()?;
        let count = store.count()?;
        stats.stored_now.store(count, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(config.queue_records);
        let writer = Writer {
            store: store.clone(),
            config: config.clone(),
            rx,
            stats: stats.clone(),
            feed: feed.clone(),
            messages: messages.clone(),
            overflow: overflow.clone(),
            next_message_id: max_message_id + 1,
            closing: closing.clone(),
            paused: paused.clone(),
            holding: holding.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("sluice-recorder".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Poisoned(format!("cannot start the writer thread: {e}")))?;
        Ok(Arc::new(Recorder {
            config: config.clone(),
            tx: Some(tx),
            next_id: AtomicU64::new(max_id + 1),
            stats,
            feed,
            messages,
            overflow,
            store: Some(store),
            writer: Mutex::new(Some(handle)),
            closing,
            paused,
            holding,
        }))
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    pub fn body_limit(&self) -> usize {
        self.config.body_limit
    }

    pub fn config(&self) -> &Recording {
        &self.config
    }

    /// Starts capturing one HTTP exchange, or `None` when recording is off.
    pub fn begin_http(
        self: &Arc<Self>,
        conn_id: u64,
        client: CompactString,
        method: &http::Method,
        uri: &http::Uri,
        version: http::Version,
    ) -> Option<Arc<Exchange>> {
        if !self.enabled() {
            return None;
        }
        let mut r = Record::new(RecordKind::Http, conn_id, client, SystemTime::now());
        r.method = method.as_str().into();
        r.url = uri.to_string();
        r.host = host_name(uri.host().unwrap_or_default());
        r.version = version_name(version).into();
        Some(Arc::new(Exchange::new(self.clone(), r)))
    }

    /// A CONNECT that sluice refused or could not open (no tunnel exists
    /// to record it at close).
    pub fn connect_failed(&self, f: FailedConnect<'_>) {
        if !self.enabled() {
            return;
        }
        let FailedConnect {
            conn_id,
            client,
            user,
            target,
            status,
            error,
            started,
            rules,
        } = f;
        let wall = SystemTime::now()
            .checked_sub(started.elapsed())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut r = Record::new(
            RecordKind::Tunnel,
            conn_id,
            compact_str::format_compact!("{client}"),
            wall,
        );
        r.method = "CONNECT".into();
        r.url = target.to_string();
        r.host = host_of(target);
        r.version = "HTTP/1.1".into();
        r.user = user.map(Into::into);
        r.status = Some(status);
        r.error = Some(error.to_string());
        r.rules = rules.to_string();
        r.timings.total_us = Some(started.elapsed().as_micros() as i64);
        self.submit(Box::new(r));
    }

    /// The registry's close hook: tunnels and relays become records when
    /// they close.
    pub fn on_close(&self, e: &ConnEntry, reason: &CloseReason) {
        let kind = match e.kind {
            Kind::Tunnel => RecordKind::Tunnel,
            Kind::Relay => RecordKind::Relay,
            _ => return,
        };
        if !self.enabled() {
            return;
        }
        let age = e.age();
        let wall = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let client = e
            .client
            .map(|a| compact_str::format_compact!("{a}"))
            .unwrap_or_default();
        let mut r = Record::new(kind, e.id, client, wall);
        // Tunnels name their upstream "target (address)".
        let upstream = e.upstream().unwrap_or_default();
        let (target, addr) = match upstream.split_once(" (") {
            Some((t, a)) => (t.to_string(), Some(a.trim_end_matches(')').to_string())),
            None => (upstream.to_string(), None),
        };
        r.method = match kind {
            RecordKind::Tunnel => "CONNECT".into(),
            _ => "RELAY".into(),
        };
        r.host = host_of(&target);
        r.url = target;
        r.upstream_addr = addr.map(Into::into);
        r.version = match kind {
            RecordKind::Tunnel => "HTTP/1.1".into(),
            _ => "TCP".into(),
        };
        // Without --auth the "user" is the client IP, already recorded.
        r.user = e
            .user()
            .filter(|u| e.client.is_none_or(|c| c.ip().to_string() != *u))
            .map(Into::into);
        if kind == RecordKind::Tunnel {
            r.status = Some(200);
        }
        r.req_body.size = e.bytes_up.load(Ordering::Relaxed);
        r.resp_body.size = e.bytes_down.load(Ordering::Relaxed);
        r.timings.total_us = Some(age.as_micros() as i64);
        r.close_reason = Some(reason.to_string());
        r.rules = e.rules().unwrap_or_default().to_string();
        r.tls = e.tls().map(|t| t.to_string());
        if !matches!(reason, CloseReason::Eof) {
            if let Some(side) = reason.side() {
                r.error = Some(format!("{reason} (failed: {})", side.as_str()));
            }
        }
        self.submit(Box::new(r));
    }

    /// Hands a finished record to the writer without waiting. Bodies go
    /// first when the body budget is spent; the record goes when the queue
    /// is full. Returns the record's id when it was queued.
    pub fn submit(&self, mut record: Box<Record>) -> Option<u64> {
        let Some(tx) = &self.tx else {
            return None;
        };
        let stats = &self.stats;
        stats.submitted.fetch_add(1, Ordering::Relaxed);
        let mut body_bytes = record.req_body.captured + record.resp_body.captured;
        let mut stripped = false;
        if body_bytes > 0 {
            let queued = stats.queued_body_bytes.load(Ordering::Relaxed);
            if queued + body_bytes > self.config.queue_body_bytes {
                record.req_body.drop_capture();
                record.resp_body.drop_capture();
                body_bytes = 0;
                stripped = true;
            } else {
                stats
                    .queued_body_bytes
                    .fetch_add(body_bytes, Ordering::Relaxed);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        record.id = id;
        stats.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(Item::Record(record)) {
            Ok(()) => {
                // Counted only for records that made it: a record dropped
                // whole is one drop, not two.
                if stripped {
                    stats.dropped_bodies.fetch_add(1, Ordering::Relaxed);
                }
                Some(id)
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                stats.queued.fetch_sub(1, Ordering::Relaxed);
                stats
                    .queued_body_bytes
                    .fetch_sub(body_bytes, Ordering::Relaxed);
                stats.dropped_records.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Hands one message to the writer without waiting; false when the
    /// queue (its count or its byte budget) is full and it was not taken.
    pub fn submit_message(&self, m: Box<Queued>) -> bool {
        let Some(tx) = &self.tx else {
            return false;
        };
        let stats = &self.stats;
        let bytes = m.payload.len();
        let queued = stats.queued_body_bytes.load(Ordering::Relaxed);
        if queued + bytes > self.config.queue_body_bytes {
            stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        stats.queued_body_bytes.fetch_add(bytes, Ordering::Relaxed);
        stats.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(Item::Message(m)) {
            Ok(()) => true,
            Err(_) => {
                stats.queued.fetch_sub(1, Ordering::Relaxed);
                stats.queued_body_bytes.fetch_sub(bytes, Ordering::Relaxed);
                stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Tells the writer what a stored record learnt since. A `last`
    /// update (the end of a WebSocket) is kept aside when the queue is
    /// full, so the record's final counters are never lost; others are
    /// dropped then (a later one supersedes them).
    pub fn update(&self, u: RecordUpdate, last: bool) {
        let Some(tx) = &self.tx else {
            return;
        };
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = tx.try_send(Item::Update(Box::new(u))) {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            let item = match e {
                TrySendError::Full(i) | TrySendError::Disconnected(i) => i,
            };
            if let (true, Item::Update(u)) = (last, item) {
                if let Ok(mut o) = self.overflow.lock() {
                    o.push(*u);
                }
            }
        }
    }

    /// Messages as they are stored (every record's; subscribers filter).
    pub fn subscribe_messages(&self) -> broadcast::Receiver<Arc<MessageRow>> {
        self.messages.subscribe()
    }

    /// New records as they are stored.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Summary>> {
        self.feed.subscribe()
    }

    /// Test hook: holds (or releases) the writer, so that the queue fills
    /// as it would behind a slow disk. Holding returns once the writer has
    /// finished the batch in hand and stopped taking records (bounded).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        if paused && self.tx.is_some() {
            let until = Instant::now() + Duration::from_secs(2);
            while !self.holding.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Stops the writer after it has stored what is queued (bounded by
    /// `deadline`).
    pub fn close(&self, deadline: Duration) {
        self.closing.store(true, Ordering::Relaxed);
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(h) = handle {
            let until = Instant::now() + deadline;
            while !h.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                tracing::warn!("record writer did not finish within the shutdown deadline");
            }
        }
    }
}

/// A CONNECT answered with an error, for [`Recorder::connect_failed`].
pub struct FailedConnect<'a> {
    pub conn_id: u64,
    pub client: std::net::SocketAddr,
    pub user: Option<&'a str>,
    pub target: &'a str,
    pub status: u16,
    pub error: &'a str,
    /// When the CONNECT head arrived.
    pub started: Instant,
    /// The rules that matched the CONNECT (JSON list, empty if none).
    pub rules: &'a str,
}

/// The name a record gives an HTTP version.
fn version_name(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// The host part of `host:port` (brackets removed), lower-cased.
fn host_of(target: &str) -> CompactString {
    host_name(crate::net::split_host_port(target).map_or(target, |(h, _)| h))
}

/// A host as records keep it: without IPv6 brackets, lower-cased, inline.
fn host_name(host: &str) -> CompactString {
    let mut h = CompactString::from(host.trim_matches(|c| c == '[' || c == ']'));
    h.make_ascii_lowercase();
    h
}

/// One batch as the writer gathers it. Boxed items on purpose: a record
/// or message is built on a worker and handed through the queue and the
/// batch as a pointer, not copied at each step.
#[derive(Default)]
#[allow(clippy::vec_box)]
struct Batch {
    records: Vec<Box<Record>>,
    messages: Vec<Box<Queued>>,
    updates: Vec<RecordUpdate>,
}

impl Batch {
    fn push(&mut self, item: Item) {
        match item {
            Item::Record(r) => self.records.push(r),
            Item::Message(m) => self.messages.push(m),
            Item::Update(u) => self.updates.push(*u),
        }
    }

    fn len(&self) -> usize {
        self.records.len() + self.messages.len() + self.updates.len()
    }

    fn clear(&mut self) {
        self.records.clear();
        self.messages.clear();
        self.updates.clear();
    }
}

/// The writer thread: batches, commits, retention, feed.
struct Writer {
    store: Arc<Store>,
    config: Recording,
    rx: Receiver<Item>,
    stats: Arc<RecorderStats>,
    feed: broadcast::Sender<Arc<Summary>>,
    messages: broadcast::Sender<Arc<MessageRow>>,
    overflow: Arc<Mutex<Vec<RecordUpdate>>>,
    next_message_id: u64,
    closing: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    holding: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self) {
        short_slice();
        let mut priority = Priority::start();
        let max_batch_bytes = store::batch_bytes(&self.config);
        // An eighth of the queue's body budget: the budget frees in steps
        // that small, so bodies arriving meanwhile still fit. And at most a
        // segment: retention runs after each batch, so one batch never
        // takes the store more than a segment past its byte limit.
        let max_batch_body = (self.config.queue_body_bytes / 8)
            .min(store::segment_bytes(&self.config) as usize)
            .max(1);
        let mut last_age_check = Instant::now() - AGE_CHECK_EVERY;
        let mut batch = Batch::default();
        loop {
            if self.paused.load(Ordering::SeqCst) && !self.closing.load(Ordering::Relaxed) {
                self.holding.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            self.holding.store(false, Ordering::SeqCst);
            let first = match self.rx.recv_timeout(FLUSH_EVERY) {
                Ok(r) => Some(r),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut first = first;
            if first.is_none() && self.overflow.lock().is_ok_and(|o| !o.is_empty()) {
                // Final updates kept aside while the queue was full.
                first = Some(Item::Update(Box::default()));
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            let got = first.is_some();
            if let Some(r) = first {
                let mut bytes = r.weight();
                let mut body_bytes = r.body_bytes();
                batch.push(r);
                // Records arriving within the batch window join this batch
                // (up to a size that keeps the WAL small): one transaction
                // per window instead of one per record keeps the writer's
                // cost per record low under load. Bodies cut a batch early:
                // they are one append each, and waiting the window out with
                // bodies arriving at line rate would fill the queue's body
                // budget and drop them.
                // The writer naps and drains rather than waiting on the
                // channel: a waiting receiver makes every submit a futex
                // wake, which costs the proxy's worker more than the insert.
                let window_end = Instant::now() + BATCH_WINDOW;
                'fill: loop {
                    while batch.len() < MAX_BATCH
                        && batch.records.len() < MAX_BATCH_RECORDS
                        && bytes < max_batch_bytes
                        && body_bytes < max_batch_body
                    {
                        match self.rx.try_recv() {
                            Ok(r) => {
                                bytes += r.weight();
                                body_bytes += r.body_bytes();
                                batch.push(r);
                            }
                            Err(_) => break,
                        }
                    }
                    let full = batch.len() >= MAX_BATCH
                        || batch.records.len() >= MAX_BATCH_RECORDS
                        || bytes >= max_batch_bytes
                        || body_bytes >= max_batch_body;
                    if full || Instant::now() >= window_end || self.closing.load(Ordering::Relaxed)
                    {
                        break 'fill;
                    }
                    std::thread::sleep(BATCH_NAP);
                }
                self.write(&mut batch);
                priority.follow(self.pressure());
            }
            let check_age = last_age_check.elapsed() >= AGE_CHECK_EVERY;
            if check_age || got {
                if check_age {
                    last_age_check = Instant::now();
                }
                self.retain(check_age);
            }
            if !got && self.closing.load(Ordering::Relaxed) {
                break;
            }
        }
    }

    /// How full the queue is: the fuller of its record count and its body
    /// bytes, as a share of their bounds.
    fn pressure(&self) -> f64 {
        let records = self.stats.queued.load(Ordering::Relaxed) as f64
            / self.config.queue_records.max(1) as f64;
        let bodies = self.stats.queued_body_bytes.load(Ordering::Relaxed) as f64
            / self.config.queue_body_bytes.max(1) as f64;
        records.max(bodies)
    }

    fn write(&mut self, batch: &mut Batch) {
        let body_bytes: usize = batch.records.iter().map(|r| r.body_bytes()).sum::<usize>()
            + batch
                .messages
                .iter()
                .map(|m| m.payload.len())
                .sum::<usize>();
        let items = batch.len();
        let n = batch.records.len();
        let mut updates = std::mem::take(&mut batch.updates);
        if let Ok(mut o) = self.overflow.lock() {
            updates.append(&mut o);
        }
        // Id 0: the placeholder that woke the writer for the overflow.
        updates.retain(|u| u.id != 0);
        let first_message_id = self.next_message_id;
        self.next_message_id += batch.messages.len() as u64;
        let later = store::Later {
            messages: &batch.messages,
            first_message_id,
            updates: &updates,
        };
        let stored_now = &self.stats.stored_now;
        // The count moves under the writer lock, as deletes through the
        // API do, so the two never race.
        let result = self.store.insert_with(&batch.records, &later, || {
            stored_now.fetch_add(n as u64, Ordering::Relaxed);
        });
        self.stats.queued.fetch_sub(items, Ordering::Relaxed);
        self.stats
            .queued_body_bytes
            .fetch_sub(body_bytes, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.stats.stored.fetch_add(n as u64, Ordering::Relaxed);
                self.stats
                    .messages_stored
                    .fetch_add(batch.messages.len() as u64, Ordering::Relaxed);
                if self.feed.receiver_count() > 0 {
                    for r in batch.records.iter() {
                        let _ = self.feed.send(Arc::new(summary_of(r)));
                    }
                }
                if self.messages.receiver_count() > 0 {
                    for (k, m) in batch.messages.iter().enumerate() {
                        let row = MessageRow::of(m, first_message_id + k as u64);
                        let _ = self.messages.send(Arc::new(row));
                    }
                }
            }
            Err(e) => {
                self.stats
                    .write_errors
                    .fetch_add(items as u64, Ordering::Relaxed);
                tracing::error!(error = %e, records = n, messages = batch.messages.len(), "cannot store records");
            }
        }
        batch.clear();
    }

    fn retain(&mut self, check_age: bool) {
        let now = unix_micros(SystemTime::now());
        let config = &self.config;
        let stored_now = &self.stats.stored_now;
        let blobs = self.store.blobs.clone();
        match self.store.write(|c| {
            let mut count = stored_now.load(Ordering::Relaxed);
            let t = store::enforce_retention(c, &blobs, config, &mut count, now, check_age);
            stored_now.store(count, Ordering::Relaxed);
            t
        }) {
            Ok(t) => {
                self.stats
                    .retention_deleted
                    .fetch_add(t.records, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "record retention pass failed"),
        }
    }
}

/// Asks the scheduler (EEVDF, Linux 6.12+) for a 0.1 ms time slice for the
/// writer thread, so that a proxy worker waking on the same core preempts
/// a batch or a WAL checkpoint in progress within that, instead of waiting
/// out a default 3 ms slice (p99 latency under load). Older kernels ignore
/// it; failure only means default scheduling.
fn short_slice() {
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
        util_min: u32,
        util_max: u32,
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: 0, // SCHED_OTHER
        flags: 0,
        nice: 0,
        priority: 0,
        runtime: 100_000, // ns: the requested slice
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: sched_setattr on this thread (pid 0) with a fully
    // initialised attribute struct whose size field is correct.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "record writer keeps the default time slice"
        );
    }
}

/// The writer's niceness while it keeps up: when it and a proxy worker
/// both want the core, the worker gets three quarters of it (the writer
/// needs a few percent for small exchanges), and the scheduler preempts a
/// batch in progress for a worker sooner.
const NICE_KEEPING_UP: i32 = 5;
/// Once its queue is half full (bodies arriving at line rate cost a copy
/// each, more than a quarter of a shared core): a body dropped is lost for
/// good, a worker slowed for a moment is not.
const NICE_BEHIND: i32 = 0;

/// The writer thread's priority, moved only on a change of regime.
struct Priority {
    nice: i32,
    /// Whether this process may raise the priority back (root, or an
    /// RLIMIT_NICE that allows it); without that the writer never lowers
    /// it, so it cannot be stuck behind at nice 5.
    adaptive: bool,
}

impl Priority {
    fn start() -> Priority {
        let adaptive = may_raise() && set_nice(NICE_KEEPING_UP);
        if !adaptive {
            tracing::debug!(
                "record writer keeps the default priority (it could not raise it back)"
            );
        }
        Priority {
            nice: if adaptive { NICE_KEEPING_UP } else { 0 },
            adaptive,
        }
    }

    /// `pressure`: the fuller share of the queue (records or body bytes).
    fn follow(&mut self, pressure: f64) {
        let want = if pressure >= 0.5 {
            NICE_BEHIND
        } else if pressure <= 0.125 {
            NICE_KEEPING_UP
        } else {
            self.nice
        };
        if self.adaptive && want != self.nice && set_nice(want) {
            self.nice = want;
        }
    }
}

/// Whether this process may lower a thread's nice value back to 0: root,
/// or an RLIMIT_NICE of 20 or more (the limit allows nice down to 20 − it).
fn may_raise() -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: geteuid has no arguments; getrlimit writes into `lim`.
    unsafe {
        libc::geteuid() == 0
            || (libc::getrlimit(libc::RLIMIT_NICE, &mut lim) == 0 && lim.rlim_cur >= 20)
    }
}

fn set_nice(nice: i32) -> bool {
    // SAFETY: gettid and setpriority on this thread only.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice) == 0
    }
}

/// The list shape of a record that has just been stored.
fn summary_of(r: &Record) -> Summary {
    Summary {
        id: r.id,
        kind: r.kind.as_str(),
        started: model::rfc3339(r.started_us),
        started_us: r.started_us,
        conn_id: r.conn_id,
        upstream_conn_id: r.upstream_conn_id,
        client: r.client.to_string(),
        user: r.user.as_ref().map(|u| u.to_string()),
        method: r.method.to_string(),
        url: r.url.clone(),
        host: r.host.to_string(),
        version: r.version.to_string(),
        status: r.status,
        req_size: r.req_body.size,
        resp_size: r.resp_body.size,
        content_type: r.content_type.as_ref().map(|t| t.to_string()),
        duration_ms: r.timings.total_us.map(|t| t as f64 / 1000.0),
        total_us: r.timings.total_us,
        upstream_addr: r.upstream_addr.as_ref().map(|a| a.to_string()),
        error: r.error.clone(),
        close_reason: r.close_reason.clone(),
        rules: query::parse_rules(&r.rules),
        tls: query::parse_tls(r.tls.as_deref()),
        messages: None,
    }
}

impl Recorder {
    /// Deletes the records matching `f`; returns how many went.
    pub fn delete(&self, f: &query::Filter) -> Result<u64, StoreError> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let stored_now = &self.stats.stored_now;
        let blobs = store.blobs.clone();
        store.write(|c| {
            let n = query::delete(c, f)?;
            messages::delete_orphans(c)?;
            store::retire_unreferenced(c, &blobs)?;
            let _ = stored_now.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
            Ok(n)
        })
    }
}
