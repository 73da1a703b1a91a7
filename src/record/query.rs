//! Finding records: the filter language shared by the list, the live feed,
//! HAR export and delete, and the row shapes the API returns.
//!
//! Invariants: a filter means the same thing in SQL (stored records) and in
//! memory (the live feed); every value reaches SQL as a bound parameter;
//! pages are newest first and a cursor is the last id seen, so paging is
//! stable while records arrive.

use std::time::{Duration, SystemTime};

use rusqlite::types::Value;
use rusqlite::{Connection, Row};
use serde::Serialize;

use super::blobs::{BlobError, Entry, Part};
use super::model::{header_pairs, header_value, rfc3339, unix_micros, RecordKind, Timings};
use super::store::Reader;

/// Records per page unless asked otherwise, and the most a page may hold.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error)]
#[error("filter `{key}`: {reason}")]
pub struct FilterError {
    pub key: String,
    pub reason: String,
}

fn bad(key: &str, reason: impl Into<String>) -> FilterError {
    FilterError {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Which statuses a filter accepts: inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange(pub u16, pub u16);

/// A record filter. Empty matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub kind: Option<RecordKind>,
    /// Exact host, or `*.suffix` for a domain and its subdomains.
    pub host: Option<String>,
    /// Substring of the URL (ASCII case-insensitive).
    pub url: Option<String>,
    pub method: Option<String>,
    pub status: Option<StatusRange>,
    /// Client address prefix (`127.0.0.1` or `127.0.0.1:5000`).
    pub client: Option<String>,
    pub user: Option<String>,
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub min_duration_us: Option<i64>,
    /// Some(true): only failed; Some(false): only without error.
    pub has_error: Option<bool>,
    /// Only ids below this (the paging cursor).
    pub before_id: Option<u64>,
    pub limit: usize,
}

impl Filter {
    /// Builds a filter from query parameters. Unknown keys are refused so a
    /// typo does not silently return everything.
    pub fn from_params<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Filter, FilterError> {
        let mut f = Filter {
            limit: DEFAULT_LIMIT,
            ..Filter::default()
        };
        let now = SystemTime::now();
        for (key, value) in params {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key {
                "kind" => {
                    f.kind = Some(
                        RecordKind::parse(value)
                            .ok_or_else(|| bad(key, "expected http, tunnel or relay"))?,
                    )
                }
                "host" => f.host = Some(value.to_ascii_lowercase()),
                "url" | "q" => f.url = Some(value.to_string()),
                "method" => f.method = Some(value.to_ascii_uppercase()),
                "status" => f.status = Some(parse_status(value).ok_or_else(|| {
                    bad(key, "expected a status (404), a class (5xx) or a range (400-499)")
                })?),
                "client" => f.client = Some(value.to_string()),
                "user" => f.user = Some(value.to_string()),
                "since" => f.since_us = Some(parse_time(key, value, now)?),
                "until" => f.until_us = Some(parse_time(key, value, now)?),
                "min_duration" => {
                    let d = humantime::parse_duration(value)
                        .map_err(|e| bad(key, format!("{e} (e.g. 500ms, 2s)")))?;
                    f.min_duration_us = Some(d.as_micros() as i64);
                }
                "error" | "has_error" => {
                    f.has_error = Some(match value {
                        "1" | "true" | "yes" => true,
                        "0" | "false" | "no" => false,
                        _ => return Err(bad(key, "expected true or false")),
                    })
                }
                "cursor" => {
                    f.before_id = Some(
                        value
                            .parse()
                            .map_err(|_| bad(key, "expected the next_cursor of a page"))?,
                    )
                }
                "limit" => {
                    let n: usize = value
                        .parse()
                        .map_err(|_| bad(key, "expected a whole number"))?;
                    if n == 0 || n > MAX_LIMIT {
                        return Err(bad(key, format!("must be between 1 and {MAX_LIMIT}")));
                    }
                    f.limit = n;
                }
                // Accepted by routes that take more than a filter.
                "token" | "format" | "decode" => {}
                other => {
                    return Err(bad(
                        other,
                        "unknown filter (kind, host, url, method, status, client, user, since, until, min_duration, error, cursor, limit)",
                    ))
                }
            }
        }
        Ok(f)
    }

    /// The WHERE clause (with a leading ` WHERE` when non-empty) and its
    /// parameters.
    pub fn sql(&self) -> (String, Vec<Value>) {
        let mut clauses: Vec<&str> = Vec::new();
        let mut params: Vec<Value> = Vec::new();
        if let Some(k) = self.kind {
            clauses.push("kind = ?");
            params.push(Value::Integer(k.code()));
        }
        if let Some(h) = &self.host {
            match h.strip_prefix("*.") {
                Some(suffix) => {
                    clauses.push("(host = ? OR host LIKE ? ESCAPE '\\')");
                    params.push(Value::Text(suffix.to_string()));
                    params.push(Value::Text(format!("%.{}", like_escape(suffix))));
                }
                None => {
                    clauses.push("host = ?");
                    params.push(Value::Text(h.clone()));
                }
            }
        }
        if let Some(u) = &self.url {
            clauses.push("url LIKE ? ESCAPE '\\'");
            params.push(Value::Text(format!("%{}%", like_escape(u))));
        }
        if let Some(m) = &self.method {
            clauses.push("method = ?");
            params.push(Value::Text(m.clone()));
        }
        if let Some(StatusRange(lo, hi)) = self.status {
            if lo == hi {
                clauses.push("status = ?");
                params.push(Value::Integer(lo as i64));
            } else {
                clauses.push("status BETWEEN ? AND ?");
                params.push(Value::Integer(lo as i64));
                params.push(Value::Integer(hi as i64));
            }
        }
        if let Some(c) = &self.client {
            clauses.push("client LIKE ? ESCAPE '\\'");
            params.push(Value::Text(format!("{}%", like_escape(c))));
        }
        if let Some(u) = &self.user {
            clauses.push("user = ?");
            params.push(Value::Text(u.clone()));
        }
        if let Some(t) = self.since_us {
            clauses.push("started_us >= ?");
            params.push(Value::Integer(t));
        }
        if let Some(t) = self.until_us {
            clauses.push("started_us <= ?");
            params.push(Value::Integer(t));
        }
        if let Some(d) = self.min_duration_us {
            clauses.push("total_us >= ?");
            params.push(Value::Integer(d));
        }
        match self.has_error {
            Some(true) => clauses.push("error IS NOT NULL"),
            Some(false) => clauses.push("error IS NULL"),
            None => {}
        }
        if let Some(id) = self.before_id {
            clauses.push("id < ?");
            params.push(Value::Integer(id as i64));
        }
        if clauses.is_empty() {
            (String::new(), params)
        } else {
            (format!(" WHERE {}", clauses.join(" AND ")), params)
        }
    }

    /// The same test as [`Filter::sql`], on a record in memory.
    pub fn matches(&self, s: &Summary) -> bool {
        if self.kind.is_some_and(|k| k.as_str() != s.kind) {
            return false;
        }
        if let Some(h) = &self.host {
            let host = s.host.to_ascii_lowercase();
            let ok = match h.strip_prefix("*.") {
                Some(suffix) => host == suffix || host.ends_with(&format!(".{suffix}")),
                None => host == *h,
            };
            if !ok {
                return false;
            }
        }
        if let Some(u) = &self.url {
            if !s.url.to_ascii_lowercase().contains(&u.to_ascii_lowercase()) {
                return false;
            }
        }
        if self.method.as_ref().is_some_and(|m| *m != s.method) {
            return false;
        }
        if let Some(StatusRange(lo, hi)) = self.status {
            if !s.status.is_some_and(|st| st >= lo && st <= hi) {
                return false;
            }
        }
        if let Some(c) = &self.client {
            if !s
                .client
                .to_ascii_lowercase()
                .starts_with(&c.to_ascii_lowercase())
            {
                return false;
            }
        }
        if self.user.is_some() && self.user != s.user {
            return false;
        }
        if self.since_us.is_some_and(|t| s.started_us < t)
            || self.until_us.is_some_and(|t| s.started_us > t)
        {
            return false;
        }
        if let Some(d) = self.min_duration_us {
            if s.total_us.unwrap_or(0) < d {
                return false;
            }
        }
        if let Some(e) = self.has_error {
            if e != s.error.is_some() {
                return false;
            }
        }
        if self.before_id.is_some_and(|id| s.id >= id) {
            return false;
        }
        true
    }
}

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `404`, `5xx`, `400-499`.
pub fn parse_status(text: &str) -> Option<StatusRange> {
    let t = text.trim().to_ascii_lowercase();
    if let Some(class) = t.strip_suffix("xx") {
        let d: u16 = class.parse().ok()?;
        if !(1..=5).contains(&d) {
            return None;
        }
        return Some(StatusRange(d * 100, d * 100 + 99));
    }
    if let Some((a, b)) = t.split_once('-') {
        let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        return (a <= b && b <= 999).then_some(StatusRange(a, b));
    }
    let n: u16 = t.parse().ok()?;
    (100..=999).contains(&n).then_some(StatusRange(n, n))
}

/// RFC 3339 (`2026-11-26T10:00:00Z`), a duration ago (`10m`), or Unix
/// seconds.
pub fn parse_time(key: &str, text: &str, now: SystemTime) -> Result<i64, FilterError> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs.saturating_mul(1_000_000));
    }
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(unix_micros(
            now.checked_sub(d).unwrap_or(SystemTime::UNIX_EPOCH),
        ));
    }
    humantime::parse_rfc3339_weak(text)
        .map(unix_micros)
        .map_err(|_| {
            bad(
                key,
                "expected RFC 3339 time, a duration ago (10m) or Unix seconds",
            )
        })
}

/// One record in a list: everything but headers and bodies.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: u64,
    pub kind: &'static str,
    pub started: String,
    pub started_us: i64,
    pub conn_id: u64,
    pub upstream_conn_id: Option<u64>,
    pub client: String,
    pub user: Option<String>,
    pub method: String,
    pub url: String,
    pub host: String,
    pub version: String,
    pub status: Option<u16>,
    pub req_size: u64,
    pub resp_size: u64,
    /// Response Content-Type, when it had one.
    pub content_type: Option<String>,
    pub duration_ms: Option<f64>,
    pub total_us: Option<i64>,
    pub upstream_addr: Option<String>,
    pub error: Option<String>,
    pub close_reason: Option<String>,
    /// The rules that touched this exchange: `[{rule, kind, action}]`.
    pub rules: serde_json::Value,
    /// TLS facts, when there are any: of an intercepted exchange (sni,
    /// both legs' version, cipher and ALPN, the upstream's certificate,
    /// verified) or of a tunnel (`state`: intercepted, passthrough or
    /// refused, and why).
    pub tls: Option<serde_json::Value>,
    /// WebSocket messages or server-sent events, when it carried any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<MessageCounts>,
}

/// Columns read for a [`Summary`], in [`summary_from_row`] order.
pub const SUMMARY_COLUMNS: &str = "id, kind, started_us, conn_id, upstream_conn_id, client, user,
    method, url, host, version, status, req_size, resp_size, content_type, total_us,
    upstream_addr, error, close_reason, rules, tls, msg_seen, msg_stored, msg_bytes, msg_unstored";
/// Columns in [`SUMMARY_COLUMNS`]: a query's own columns follow them.
const SUMMARY_WIDTH: usize = 25;

pub fn summary_from_row(r: &Row<'_>) -> rusqlite::Result<Summary> {
    let total_us: Option<i64> = r.get(15)?;
    let rules: String = r.get(19)?;
    let started_us: i64 = r.get(2)?;
    Ok(Summary {
        id: r.get::<_, i64>(0)? as u64,
        kind: RecordKind::from_code(r.get(1)?).as_str(),
        started: rfc3339(started_us),
        started_us,
        conn_id: r.get::<_, i64>(3)? as u64,
        upstream_conn_id: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
        client: r.get(5)?,
        user: r.get(6)?,
        method: r.get(7)?,
        url: r.get(8)?,
        host: r.get(9)?,
        version: r.get(10)?,
        status: r.get(11)?,
        req_size: r.get::<_, i64>(12)? as u64,
        resp_size: r.get::<_, i64>(13)? as u64,
        content_type: r.get(14)?,
        duration_ms: total_us.map(|t| t as f64 / 1000.0),
        total_us,
        upstream_addr: r.get(16)?,
        error: r.get(17)?,
        close_reason: r.get(18)?,
        rules: parse_rules(&rules),
        tls: parse_tls(r.get::<_, Option<String>>(20)?.as_deref()),
        messages: MessageCounts::of(
            r.get::<_, i64>(21)? as u64,
            r.get::<_, i64>(22)? as u64,
            r.get::<_, i64>(23)? as u64,
            r.get(24)?,
        ),
    })
}

/// A WebSocket's or event stream's message counters, in a summary.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MessageCounts {
    /// Messages that passed, stored or not.
    pub seen: u64,
    pub stored: u64,
    /// Payload bytes of every message that passed.
    pub bytes: u64,
    /// Why some were counted but not stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unstored: Option<String>,
}

impl MessageCounts {
    /// `None` for a record that carried no messages.
    pub fn of(
        seen: u64,
        stored: u64,
        bytes: u64,
        unstored: Option<String>,
    ) -> Option<MessageCounts> {
        (seen > 0 || unstored.is_some()).then_some(MessageCounts {
            seen,
            stored,
            bytes,
            unstored,
        })
    }
}

/// The stored TLS JSON object (`None` when absent or unreadable).
pub fn parse_tls(text: Option<&str>) -> Option<serde_json::Value> {
    serde_json::from_str(text?).ok()
}

/// The stored JSON array of applied rules (an empty array when none).
pub fn parse_rules(text: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Array(_)) => v,
        _ => serde_json::Value::Array(Vec::new()),
    }
}

/// A page of records and the cursor of the next one.
#[derive(Debug, Serialize)]
pub struct Page {
    pub records: Vec<Summary>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<u64>,
    /// The page holds fewer records than asked because the scan window
    /// ended, not because nothing older matches: continue with
    /// `next_cursor`.
    pub partial: bool,
}

/// Records one page request looks at, at most. A filter that matches
/// rarely would otherwise read the whole store for one page; with the
/// window a page costs the same whatever the store holds (about 20 ms per
/// 400,000 rows here) and a short page says where to continue.
pub const SCAN_WINDOW: u64 = 400_000;

/// Newest-first page of records matching `f`, looking at most at
/// [`SCAN_WINDOW`] ids below the cursor.
pub fn page(conn: &Connection, f: &Filter) -> rusqlite::Result<Page> {
    page_within(conn, f, SCAN_WINDOW)
}

fn page_within(conn: &Connection, f: &Filter, window: u64) -> rusqlite::Result<Page> {
    // Two statements: SQLite answers MIN or MAX alone from the b-tree's
    // ends, but scans the table for both in one SELECT.
    let lowest: Option<i64> = conn.query_row("SELECT MIN(id) FROM records", [], |r| r.get(0))?;
    let highest: Option<i64> = conn.query_row("SELECT MAX(id) FROM records", [], |r| r.get(0))?;
    let (Some(lowest), Some(highest)) = (lowest, highest) else {
        return Ok(Page {
            records: Vec::new(),
            next_cursor: None,
            partial: false,
        });
    };
    let top = f
        .before_id
        .map(|c| (c as i64).min(highest + 1))
        .unwrap_or(highest + 1);
    let floor = top - window as i64;
    let (clause, mut params) = f.sql();
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM records{clause}{} id >= ? ORDER BY id DESC LIMIT ?",
        if clause.is_empty() { " WHERE" } else { " AND" }
    );
    params.push(Value::Integer(floor));
    params.push(Value::Integer(f.limit as i64 + 1));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut records = stmt
        .query_map(rusqlite::params_from_iter(params), summary_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let (next_cursor, partial) = if records.len() > f.limit {
        records.truncate(f.limit);
        (records.last().map(|r| r.id), false)
    } else if floor > lowest {
        (Some(floor as u64), true)
    } else {
        (None, false)
    };
    Ok(Page {
        records,
        next_cursor,
        partial,
    })
}

/// How many records match `f` (its cursor and limit are ignored).
pub fn count(conn: &Connection, f: &Filter) -> rusqlite::Result<u64> {
    let f = Filter {
        before_id: None,
        ..f.clone()
    };
    let (clause, params) = f.sql();
    let sql = format!("SELECT COUNT(*) FROM records{clause}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let n: i64 = stmt.query_row(rusqlite::params_from_iter(params), |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// One record with headers, timings and body metadata; the bodies
/// themselves are read with [`body`].
#[derive(Debug, Clone)]
pub struct Detail {
    pub summary: Summary,
    pub req_headers: Vec<(String, String)>,
    pub resp_headers: Vec<(String, String)>,
    pub req_body: BodyMeta,
    pub resp_body: BodyMeta,
    pub timings: Timings,
}

/// What is known about one body without reading it.
#[derive(Debug, Clone, Serialize)]
pub struct BodyMeta {
    /// Bytes that crossed sluice.
    pub size: u64,
    /// Bytes stored.
    pub captured: u64,
    /// More crossed than the body limit allowed to store.
    pub truncated: bool,
    /// Dropped because the recorder's queue was full.
    pub dropped: bool,
    /// Content-Encoding as sent.
    pub encoding: Option<String>,
    pub content_type: Option<String>,
}

pub fn detail(conn: &Reader<'_>, id: u64) -> rusqlite::Result<Option<Detail>> {
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS}, req_captured, resp_captured, req_flags, resp_flags,
            queued_us, dns_us, connect_us, tls_us, sent_us, ttfb_us, blob
         FROM records WHERE id = ?1"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([id as i64])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let summary = summary_from_row(r)?;
    let at: Option<i64> = r.get(SUMMARY_WIDTH + 10)?;
    // A record whose entry cannot be read still shows what its row holds.
    let blocks = at.map(|at| {
        conn.blobs.entry(at, id).and_then(|e| {
            let read = |part| {
                e.whole(part).map_err(|_| BlobError::Damaged {
                    id,
                    why: "entry cut short",
                })
            };
            Ok((read(Part::RequestHeaders)?, read(Part::ResponseHeaders)?))
        })
    });
    let (req_block, resp_block) = match blocks {
        None => (Vec::new(), Vec::new()),
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "record detail without its headers");
            (Vec::new(), Vec::new())
        }
    };
    let meta = |block: &[u8], size: u64, captured: i64, flags: i64| BodyMeta {
        size,
        captured: captured.max(0) as u64,
        truncated: flags & 1 != 0,
        dropped: flags & 2 != 0,
        encoding: header_value(block, "content-encoding"),
        content_type: header_value(block, "content-type"),
    };
    let req_body = meta(
        &req_block,
        summary.req_size,
        r.get(SUMMARY_WIDTH)?,
        r.get(SUMMARY_WIDTH + 2)?,
    );
    let resp_body = meta(
        &resp_block,
        summary.resp_size,
        r.get(SUMMARY_WIDTH + 1)?,
        r.get(SUMMARY_WIDTH + 3)?,
    );
    let timings = Timings {
        queued_us: r.get(SUMMARY_WIDTH + 4)?,
        dns_us: r.get(SUMMARY_WIDTH + 5)?,
        connect_us: r.get(SUMMARY_WIDTH + 6)?,
        tls_us: r.get(SUMMARY_WIDTH + 7)?,
        sent_us: r.get(SUMMARY_WIDTH + 8)?,
        ttfb_us: r.get(SUMMARY_WIDTH + 9)?,
        total_us: summary.total_us,
    };
    Ok(Some(Detail {
        req_headers: header_pairs(&req_block),
        resp_headers: header_pairs(&resp_block),
        summary,
        req_body,
        resp_body,
        timings,
    }))
}

/// The stored parts of record `id`, if it has any (none either when its
/// segment is gone: see below).
pub fn entry(conn: &Reader<'_>, id: u64) -> rusqlite::Result<Option<Entry>> {
    use rusqlite::OptionalExtension;
    let at: Option<i64> = conn
        .query_row("SELECT blob FROM records WHERE id = ?1", [id as i64], |r| {
            r.get(0)
        })
        .optional()?
        .flatten();
    match at {
        None => Ok(None),
        Some(at) => match conn.blobs.entry(at, id) {
            Ok(e) => Ok(Some(e)),
            // A reader's snapshot can still show a row whose segment
            // retention has just removed (or the segment is damaged):
            // the record reads as having nothing stored, so a listing or
            // a HAR export carries on rather than failing whole.
            Err(e) => {
                tracing::debug!(error = %e, "record read without its stored parts");
                Ok(None)
            }
        },
    }
}

/// A segment failure, as the error of a store read.
pub fn blob_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// The part of the entry holding the body in `dir`.
pub fn body_part(dir: super::model::BodyDir) -> Part {
    match dir {
        super::model::BodyDir::Request => Part::RequestBody,
        super::model::BodyDir::Response => Part::ResponseBody,
    }
}

/// The stored bytes of one body (empty when none was captured).
pub fn body(conn: &Reader<'_>, id: u64, dir: super::model::BodyDir) -> rusqlite::Result<Vec<u8>> {
    match entry(conn, id)? {
        None => Ok(Vec::new()),
        Some(e) => e.whole(body_part(dir)).map_err(blob_error),
    }
}

/// Deletes the records matching `f` (all when empty); their segments go
/// with [`super::store::retire_unreferenced`].
pub fn delete(conn: &mut Connection, f: &Filter) -> rusqlite::Result<u64> {
    let (clause, params) = f.sql();
    let n = conn.execute(
        &format!("DELETE FROM records{clause}"),
        rusqlite::params_from_iter(params),
    )? as u64;
    Ok(n)
}

/// HAR-style phase durations in milliseconds (-1 where not applicable),
/// derived from the stored offsets.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Phases {
    pub blocked: f64,
    pub dns: f64,
    pub connect: f64,
    pub ssl: f64,
    pub send: f64,
    pub wait: f64,
    pub receive: f64,
}

impl Phases {
    pub fn from_timings(t: &Timings) -> Phases {
        let ms = |us: i64| us.max(0) as f64 / 1000.0;
        let opt = |v: Option<i64>| v.map(ms).unwrap_or(-1.0);
        let setup = t.queued_us.unwrap_or(0)
            + t.dns_us.unwrap_or(0)
            + t.connect_us.unwrap_or(0)
            + t.tls_us.unwrap_or(0);
        let sent = t.sent_us.unwrap_or(setup).max(setup);
        let ttfb = t.ttfb_us.unwrap_or(sent).max(sent);
        let total = t.total_us.unwrap_or(ttfb).max(ttfb);
        Phases {
            blocked: opt(t.queued_us),
            dns: opt(t.dns_us),
            connect: opt(t.connect_us),
            ssl: opt(t.tls_us),
            send: ms(sent - setup),
            wait: ms(ttfb - sent),
            receive: ms(total - ttfb),
        }
    }

    /// The sum HAR's `time` must equal: every phase that applies.
    pub fn total(&self) -> f64 {
        [
            self.blocked,
            self.dns,
            self.connect,
            self.ssl,
            self.send,
            self.wait,
            self.receive,
        ]
        .iter()
        .filter(|v| **v >= 0.0)
        .sum()
    }
}

/// Used by the time filters in tests and the CLI.
pub fn ago(d: Duration) -> i64 {
    unix_micros(
        SystemTime::now()
            .checked_sub(d)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rare_match_pages_through_scan_windows() {
        use crate::config::Recording;
        use crate::record::model::{Record, RecordKind};
        let store = crate::record::store::Store::open(&Recording::default()).unwrap();
        let batch: Vec<Record> = (1..=1000u64)
            .map(|id| {
                let mut r = Record::new(
                    RecordKind::Http,
                    1,
                    "127.0.0.1:1",
                    std::time::SystemTime::now(),
                );
                r.id = id;
                r.method = "GET".into();
                r.host = if id % 250 == 0 {
                    "rare.test"
                } else {
                    "common.test"
                }
                .into();
                r.url = format!("http://{}/{id}", r.host);
                r
            })
            .collect();
        store.insert(&batch, || {}).unwrap();
        let mut f = Filter::from_params([("host", "rare.test")]).unwrap();
        let mut found = Vec::new();
        let mut pages = 0;
        loop {
            let p = store.read(|c| page_within(c, &f, 300)).unwrap();
            pages += 1;
            found.extend(p.records.iter().map(|r| r.id));
            match p.next_cursor {
                Some(c) => f.before_id = Some(c),
                None => break,
            }
            assert!(pages < 10);
        }
        assert_eq!(found, vec![1000, 750, 500, 250]);
        assert_eq!(pages, 4, "1000 ids in windows of 300");
    }

    #[test]
    fn statuses() {
        assert_eq!(parse_status("404"), Some(StatusRange(404, 404)));
        assert_eq!(parse_status("5xx"), Some(StatusRange(500, 599)));
        assert_eq!(parse_status("400-499"), Some(StatusRange(400, 499)));
        assert_eq!(parse_status("6xx"), None);
        assert_eq!(parse_status("abc"), None);
        assert_eq!(parse_status("500-400"), None);
    }

    #[test]
    fn unknown_filter_keys_are_refused() {
        let e = Filter::from_params([("hots", "x")]).unwrap_err();
        assert_eq!(e.key, "hots");
        let e = Filter::from_params([("limit", "0")]).unwrap_err();
        assert_eq!(e.key, "limit");
    }

    #[test]
    fn like_patterns_are_escaped() {
        let f = Filter::from_params([("url", "100%_x")]).unwrap();
        let (_, params) = f.sql();
        assert_eq!(params[0], Value::Text("%100\\%\\_x%".into()));
    }

    #[test]
    fn phases_follow_offsets() {
        let t = Timings {
            queued_us: Some(1000),
            dns_us: Some(2000),
            connect_us: Some(3000),
            tls_us: None,
            sent_us: Some(7000),
            ttfb_us: Some(10_000),
            total_us: Some(15_000),
        };
        let p = Phases::from_timings(&t);
        assert_eq!(
            (p.blocked, p.dns, p.connect, p.ssl, p.send, p.wait, p.receive),
            (1.0, 2.0, 3.0, -1.0, 1.0, 3.0, 5.0)
        );
        assert_eq!(p.total(), 15.0);
    }
}
