//! A connection's messages (WebSocket frames, server-sent events) on
//! their way to the record they belong to: each becomes a [`Queued`]
//! message under that record, within the connection's budget; the
//! record's counters and its end (sizes, duration, close reason) follow as
//! updates.
//!
//! Invariants: nothing here waits (a message the queue cannot take is
//! counted, not stored); at most `connection_messages` messages and
//! `connection_message_bytes` payload bytes are stored per connection;
//! counters move at most once a second while messages go unstored, and
//! the final update is sent exactly once and never dropped (see
//! [`Recorder::update`]).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::messages::{Direction, Queued, RecordUpdate, Totals, Unstored};
use super::model::unix_micros;
use super::Recorder;

/// One message as its protocol's reader captured it.
#[derive(Debug)]
pub struct Captured {
    pub opcode: u8,
    /// When it had passed whole.
    pub at: SystemTime,
    /// Its size on the wire.
    pub size: u64,
    /// [`super::messages::TRUNCATED`], `COMPRESSED`, `EVENT`.
    pub flags: i64,
    /// JSON: an event's fields, a `problem` reading it.
    pub meta: Option<String>,
    /// At most the log's limit.
    pub payload: Vec<u8>,
}

/// How a connection ended, for its record's final update.
#[derive(Debug, Default)]
pub struct End {
    pub req_size: Option<u64>,
    pub resp_size: Option<u64>,
    pub close_reason: Option<String>,
    pub error: Option<String>,
    /// Said in the record beside the counters.
    pub note: Option<String>,
}

/// Counters move at most this often while messages go unstored.
const UPDATE_EVERY: Duration = Duration::from_secs(1);

/// One WebSocket's messages on their way to its record.
pub struct MessageLog {
    recorder: Arc<Recorder>,
    record_id: u64,
    /// When the record's request arrived (its durations count from it).
    started: Instant,
    limit: usize,
    max_messages: u64,
    max_bytes: u64,
    seen: AtomicU64,
    bytes: AtomicU64,
    stored: AtomicU64,
    stored_bytes: AtomicU64,
    unstored: AtomicU8,
    /// A message did not fit the budget: none after it is stored either
    /// (so the budget, once spent, stays spent).
    over_budget: AtomicBool,
    /// Milliseconds after `started` of the last counters update.
    updated_ms: AtomicU64,
    finished: AtomicBool,
}

impl MessageLog {
    pub fn new(recorder: Arc<Recorder>, record_id: u64, started: Instant) -> MessageLog {
        let c = recorder.config();
        MessageLog {
            limit: c.message_limit,
            max_messages: c.connection_messages,
            max_bytes: c.connection_message_bytes,
            recorder,
            record_id,
            started,
            seen: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            stored_bytes: AtomicU64::new(0),
            unstored: AtomicU8::new(0),
            over_budget: AtomicBool::new(false),
            updated_ms: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        }
    }

    fn unstored(&self) -> Unstored {
        match self.unstored.load(Ordering::Relaxed) {
            1 => Unstored::Budget,
            2 => Unstored::Queue,
            _ => Unstored::None,
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            seen: self.seen.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            unstored: self.unstored(),
        }
    }

    /// One message passed: stored if the budget and the queue allow,
    /// counted either way.
    pub fn message(&self, dir: Direction, m: Captured) {
        let seq = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = self.bytes.fetch_add(m.size, Ordering::Relaxed) + m.size;
        let len = m.payload.len() as u64;
        let stored = self.stored.load(Ordering::Relaxed);
        let fits = !self.over_budget.load(Ordering::Relaxed)
            && stored < self.max_messages
            && self.stored_bytes.load(Ordering::Relaxed) + len <= self.max_bytes;
        let why = if fits {
            let q = Queued {
                record_id: self.record_id,
                seq,
                dir,
                at_us: unix_micros(m.at),
                opcode: m.opcode,
                size: m.size,
                flags: m.flags,
                meta: m.meta,
                payload: m.payload,
                totals: Totals {
                    seen: seq,
                    stored: stored + 1,
                    bytes,
                    unstored: self.unstored(),
                },
            };
            if self.recorder.submit_message(Box::new(q)) {
                self.stored.fetch_add(1, Ordering::Relaxed);
                self.stored_bytes.fetch_add(len, Ordering::Relaxed);
                return;
            }
            Unstored::Queue
        } else {
            self.over_budget.store(true, Ordering::Relaxed);
            self.recorder
                .stats
                .messages_over_budget
                .fetch_add(1, Ordering::Relaxed);
            Unstored::Budget
        };
        self.unstored.store(why as u8, Ordering::Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.updated_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= UPDATE_EVERY.as_millis() as u64 {
            self.updated_ms.store(now, Ordering::Relaxed);
            self.recorder.update(
                RecordUpdate {
                    id: self.record_id,
                    totals: Some(self.totals()),
                    ..RecordUpdate::default()
                },
                false,
            );
        }
    }

    /// The connection ended: the final counters, its sizes and duration,
    /// why it closed; never dropped, sent once (a second call is ignored).
    pub fn finish(&self, end: End) {
        if self.finished.swap(true, Ordering::Relaxed) {
            return;
        }
        self.recorder.update(
            RecordUpdate {
                id: self.record_id,
                totals: Some(self.totals()),
                req_size: end.req_size,
                resp_size: end.resp_size,
                total_us: Some(self.started.elapsed().as_micros() as i64),
                close_reason: end.close_reason,
                error: end.error,
                unstored_note: end.note,
            },
            true,
        );
    }

    /// Whether a message beginning now could still be stored (the
    /// budget, once spent, stays spent).
    pub fn wants_payload(&self) -> bool {
        !self.over_budget.load(Ordering::Relaxed)
            && self.stored.load(Ordering::Relaxed) < self.max_messages
    }

    /// The per-message payload capture limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}
