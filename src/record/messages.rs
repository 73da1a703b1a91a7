//! The messages of a record: WebSocket messages (each data message and
//! control frame) and server-sent events, as they are queued, stored in
//! the `message_chunks` table beside their record (a batch's messages of
//! one record packed into one row, [`super::message_chunk`]), and read
//! back page by page.
//!
//! Invariants: a chunk names its record (`record_id`) and is deleted with
//! it; a record's chunks hold disjoint, rising id ranges, so ordering them
//! by `last_id` orders the messages; a message's payload is at most the
//! message limit, with
//! `TRUNCATED` set when the message was longer; a record's counters
//! (`msg_seen`, `msg_stored`, `msg_bytes`, `msg_unstored`) count every
//! message that passed, stored or not, and say why some were not.

use std::collections::HashMap;

use rusqlite::{params, Connection};
use serde::Serialize;

use super::message_chunk as chunk;
use super::model::rfc3339;

/// Payload was longer than the message limit.
pub const TRUNCATED: i64 = 1;
/// Sent compressed (permessage-deflate, or an event stream's
/// `Content-Encoding`) and shown inflated; its size is the inflated one
/// for an event (a coded stream has no per-event wire size).
pub const COMPRESSED: i64 = 2;
/// A server-sent event (opcode 1, fields in `meta`).
pub const EVENT: i64 = 4;
/// Taken out by a `wsDrop://` rule: recorded as it came, never delivered.
pub const DROPPED: i64 = 8;

/// WebSocket opcodes (RFC 6455 5.2).
pub mod opcode {
    pub const CONTINUATION: u8 = 0;
    pub const TEXT: u8 = 1;
    pub const BINARY: u8 = 2;
    pub const CLOSE: u8 = 8;
    pub const PING: u8 = 9;
    pub const PONG: u8 = 10;

    /// The name of an opcode, as the API and HAR show it.
    pub fn name(op: u8) -> &'static str {
        match op {
            CONTINUATION => "continuation",
            TEXT => "text",
            BINARY => "binary",
            CLOSE => "close",
            PING => "ping",
            PONG => "pong",
            _ => "reserved",
        }
    }

    /// An opcode by its name (the API's `opcode=` filter).
    pub fn parse(name: &str) -> Option<u8> {
        Some(match name {
            "continuation" => CONTINUATION,
            "text" => TEXT,
            "binary" => BINARY,
            "close" => CLOSE,
            "ping" => PING,
            "pong" => PONG,
            _ => return None,
        })
    }
}

/// Which way a message went, named as browsers name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream.
    Send,
    /// Upstream to client.
    Receive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Send => "send",
            Direction::Receive => "receive",
        }
    }

    pub fn code(self) -> i64 {
        match self {
            Direction::Send => 0,
            Direction::Receive => 1,
        }
    }

    pub fn parse(text: &str) -> Option<Direction> {
        match text {
            "send" => Some(Direction::Send),
            "receive" => Some(Direction::Receive),
            _ => None,
        }
    }
}

/// Why some of a record's messages were counted but not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unstored {
    #[default]
    None,
    /// The per-connection budget (count or bytes) was spent.
    Budget,
    /// The recorder's queue was full (the disk fell behind).
    Queue,
}

impl Unstored {
    pub fn text(self) -> Option<&'static str> {
        match self {
            Unstored::None => None,
            Unstored::Budget => Some("the connection's message budget was spent"),
            Unstored::Queue => Some("the recorder's queue was full"),
        }
    }
}

/// A record's message counters at some moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub seen: u64,
    pub stored: u64,
    /// Payload bytes of every message seen (on the wire).
    pub bytes: u64,
    pub unstored: Unstored,
}

/// One message on its way to the store.
#[derive(Debug, Clone)]
pub struct Queued {
    pub record_id: u64,
    /// 1-based position among the record's messages (both directions).
    pub seq: u64,
    pub dir: Direction,
    pub at_us: i64,
    pub opcode: u8,
    /// Payload bytes on the wire.
    pub size: u64,
    pub flags: i64,
    /// JSON: `problem`, and an event's `event`, `id`, `retry`.
    pub meta: Option<String>,
    pub payload: Vec<u8>,
    /// The record's counters with this message counted.
    pub totals: Totals,
}

/// What a record learns after it was stored: a WebSocket's or an event
/// stream's end, or its counters while it lasts.
#[derive(Debug, Clone, Default)]
pub struct RecordUpdate {
    pub id: u64,
    pub totals: Option<Totals>,
    pub req_size: Option<u64>,
    pub resp_size: Option<u64>,
    pub total_us: Option<i64>,
    pub close_reason: Option<String>,
    pub error: Option<String>,
    /// Said in `msg_unstored` over what the totals say (frames that could
    /// not be read).
    pub unstored_note: Option<String>,
}

pub const TABLE: &str = "
-- A record's messages in runs (super::message_chunk): one row per record
-- per batch, however many messages the batch carried.
CREATE TABLE IF NOT EXISTS message_chunks (
    first_id INTEGER PRIMARY KEY,
    record_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    count INTEGER NOT NULL,
    data BLOB NOT NULL
);
-- A record's chunks in order, and retention's delete by record.
CREATE INDEX IF NOT EXISTS chunks_of_record ON message_chunks (record_id, last_id);
";

/// One row per statement, plain `INSERT`: a multi-row insert may fail
/// part-way, so SQLite gives it a statement journal that copies every page
/// it touches; a one-row insert needs none. Ids come from the writer, so
/// none conflicts.
const INSERT_SQL: &str =
    "INSERT INTO message_chunks (first_id, record_id, last_id, count, data) VALUES (?,?,?,?,?)";

/// Inserts `msgs` (ids from `first_id` on) inside the caller's
/// transaction, a chunk per record (more when one record's run is long),
/// then moves each record's counters to the last totals seen.
pub fn insert(conn: &Connection, msgs: &[Box<Queued>], first_id: u64) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(INSERT_SQL)?;
    // Each record's messages of this batch, in order (a batch may hold
    // thousands of WebSockets' messages, so a record's run is found by
    // map, not by scan).
    let mut runs: Vec<(u64, Vec<(u64, &Queued)>)> = Vec::new();
    let mut run_of: HashMap<u64, usize> = HashMap::new();
    for (id, m) in (first_id..).zip(msgs) {
        let k = *run_of.entry(m.record_id).or_insert_with(|| {
            runs.push((m.record_id, Vec::new()));
            runs.len() - 1
        });
        runs[k].1.push((id, m));
    }
    let mut data = Vec::new();
    for (record_id, run) in &runs {
        let mut rest = &run[..];
        while let Some(&(chunk_first, _)) = rest.first() {
            data.clear();
            let mut n = 0;
            while let Some(&(id, m)) = rest.get(n) {
                if n > 0 && chunk::is_full(n, data.len()) {
                    break;
                }
                chunk::push(&mut data, chunk_first, id, m);
                n += 1;
            }
            let last_id = rest[n - 1].0;
            stmt.execute(params![
                chunk_first as i64,
                *record_id as i64,
                last_id as i64,
                n as i64,
                &data
            ])?;
            rest = &rest[n..];
        }
    }
    for (record_id, run) in &runs {
        if let Some((_, m)) = run.last() {
            set_totals(conn, *record_id, m.totals)?;
        }
    }
    Ok(())
}

fn set_totals(conn: &Connection, id: u64, t: Totals) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE records SET msg_seen = MAX(msg_seen, ?2), msg_stored = MAX(msg_stored, ?3),
         msg_bytes = MAX(msg_bytes, ?4), msg_unstored = COALESCE(?5, msg_unstored) WHERE id = ?1",
    )?
    .execute(params![
        id as i64,
        t.seen as i64,
        t.stored as i64,
        t.bytes as i64,
        t.unstored.text()
    ])?;
    Ok(())
}

/// Applies what a record learnt after it was stored.
pub fn apply(conn: &Connection, u: &RecordUpdate) -> rusqlite::Result<()> {
    if let Some(t) = u.totals {
        set_totals(conn, u.id, t)?;
    }
    if let Some(note) = &u.unstored_note {
        conn.prepare_cached("UPDATE records SET msg_unstored = ?2 WHERE id = ?1")?
            .execute(params![u.id as i64, note])?;
    }
    conn.prepare_cached(
        "UPDATE records SET req_size = COALESCE(?2, req_size), resp_size = COALESCE(?3, resp_size),
         total_us = COALESCE(?4, total_us), close_reason = COALESCE(?5, close_reason),
         error = COALESCE(error, ?6) WHERE id = ?1",
    )?
    .execute(params![
        u.id as i64,
        u.req_size.map(|v| v as i64),
        u.resp_size.map(|v| v as i64),
        u.total_us,
        u.close_reason,
        u.error
    ])?;
    Ok(())
}

/// Deletes the messages of records up to `id` (retention).
pub fn delete_through(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM message_chunks WHERE record_id <= ?1")?
        .execute([id])?;
    Ok(())
}

/// Deletes the messages whose record is gone (after a delete by filter).
pub fn delete_orphans(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM message_chunks WHERE record_id NOT IN (SELECT id FROM records)",
        [],
    )?;
    Ok(())
}

/// The largest message id stored (0 when none).
pub fn max_id(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(
        "SELECT COALESCE(MAX(last_id), 0) FROM message_chunks",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as u64)
}

/// Which of a record's messages a page holds.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub direction: Option<Direction>,
    pub opcode: Option<u8>,
    /// Only messages at or after this time (Unix microseconds).
    pub since_us: Option<i64>,
    /// Only messages after this id (the previous page's `next_cursor`).
    pub cursor: Option<u64>,
    pub limit: usize,
}

/// A close frame's code and reason.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
}

/// One message as the API and HAR show it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRow {
    pub id: u64,
    pub record_id: u64,
    pub seq: u64,
    pub time: String,
    pub time_us: i64,
    pub direction: &'static str,
    pub opcode: &'static str,
    pub size: u64,
    pub captured: usize,
    pub truncated: bool,
    pub compressed: bool,
    /// A rule took it out of the stream: the other end never got it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close: Option<Close>,
    /// A server-sent event's fields besides its data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<serde_json::Value>,
    /// The payload when it is UTF-8 (a close frame: its reason).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The payload otherwise, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

impl MessageRow {
    /// The row a queued message becomes once stored as `id`.
    pub fn of(m: &Queued, id: u64) -> MessageRow {
        row(
            id,
            m.record_id,
            m.seq,
            m.at_us,
            m.dir.code(),
            m.opcode,
            m.size,
            m.flags,
            m.meta.as_deref(),
            &m.payload,
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn row(
    id: u64,
    record_id: u64,
    seq: u64,
    at_us: i64,
    dir: i64,
    opcode: u8,
    size: u64,
    flags: i64,
    meta: Option<&str>,
    payload: &[u8],
) -> MessageRow {
    use base64::Engine as _;
    let meta: Option<serde_json::Value> = meta.and_then(|m| serde_json::from_str(m).ok());
    let problem = meta
        .as_ref()
        .and_then(|m| m.get("problem"))
        .and_then(|p| p.as_str())
        .map(str::to_string);
    let is_event = flags & EVENT != 0;
    let event = meta.filter(|_| is_event).map(|mut m| {
        if let Some(o) = m.as_object_mut() {
            o.remove("problem");
        }
        m
    });
    let (close, body) = if opcode == opcode::CLOSE && payload.len() >= 2 {
        let code = u16::from_be_bytes([payload[0], payload[1]]);
        let reason = String::from_utf8_lossy(&payload[2..]).into_owned();
        (Some(Close { code, reason }), &payload[2..])
    } else {
        (None, payload)
    };
    let (text, base64) = match std::str::from_utf8(body) {
        Ok(t) if opcode != opcode::BINARY => (Some(t.to_string()), None),
        _ => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(body)),
        ),
    };
    MessageRow {
        id,
        record_id,
        seq,
        time: rfc3339(at_us),
        time_us: at_us,
        direction: if dir == 0 { "send" } else { "receive" },
        opcode: if is_event {
            "event"
        } else {
            opcode::name(opcode)
        },
        size,
        captured: payload.len(),
        truncated: flags & TRUNCATED != 0,
        compressed: flags & COMPRESSED != 0,
        dropped: flags & DROPPED != 0,
        problem,
        close,
        event,
        text,
        base64,
    }
}

/// One page of a record's messages, oldest first.
pub fn list(conn: &Connection, record_id: u64, f: &Filter) -> rusqlite::Result<Vec<MessageRow>> {
    let after = f.cursor.unwrap_or(0);
    let mut stmt = conn.prepare_cached(
        "SELECT first_id, data FROM message_chunks
         WHERE record_id = ?1 AND last_id > ?2 ORDER BY last_id",
    )?;
    let mut rows = stmt.query(params![record_id as i64, after as i64])?;
    let mut page = Vec::new();
    while page.len() < f.limit {
        let Some(r) = rows.next()? else { break };
        let first_id = r.get::<_, i64>(0)?.max(0) as u64;
        let data = r.get_ref(1)?.as_blob()?;
        for m in chunk::decode(first_id, data) {
            let m = m.map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    1,
                    rusqlite::types::Type::Blob,
                    Box::new(e),
                )
            })?;
            if m.id <= after || !f.matches(&m) {
                continue;
            }
            page.push(row(
                m.id, record_id, m.seq, m.at_us, m.dir, m.opcode, m.size, m.flags, m.meta,
                m.payload,
            ));
            if page.len() >= f.limit {
                break;
            }
        }
    }
    Ok(page)
}

impl Filter {
    fn matches(&self, m: &chunk::Stored<'_>) -> bool {
        self.direction.is_none_or(|d| d.code() == m.dir)
            && self.opcode.is_none_or(|op| op == m.opcode)
            && self.since_us.is_none_or(|t| m.at_us >= t)
    }
}

/// A record's message counters as stored.
pub fn totals(
    conn: &Connection,
    record_id: u64,
) -> rusqlite::Result<Option<(Totals, Option<String>)>> {
    use rusqlite::OptionalExtension as _;
    conn.query_row(
        "SELECT msg_seen, msg_stored, msg_bytes, msg_unstored FROM records WHERE id = ?1",
        [record_id as i64],
        |r| {
            Ok((
                Totals {
                    seen: r.get::<_, i64>(0)? as u64,
                    stored: r.get::<_, i64>(1)? as u64,
                    bytes: r.get::<_, i64>(2)? as u64,
                    unstored: Unstored::None,
                },
                r.get::<_, Option<String>>(3)?,
            ))
        },
    )
    .optional()
}
