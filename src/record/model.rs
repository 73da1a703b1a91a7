//! What one record is: an HTTP exchange, a CONNECT tunnel or a port relay
//! connection, as captured and as stored.
//!
//! Invariants: header blocks keep the bytes that crossed the wire
//! (`Name: value\r\n` lines, never re-encoded); captured bodies are at most
//! the body limit, with `truncated` set when the wire carried more; timing
//! offsets are microseconds from the moment the request head arrived.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use compact_str::CompactString;

/// What a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Http,
    Tunnel,
    Relay,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Http => "http",
            RecordKind::Tunnel => "tunnel",
            RecordKind::Relay => "relay",
        }
    }

    pub fn code(self) -> i64 {
        match self {
            RecordKind::Http => 0,
            RecordKind::Tunnel => 1,
            RecordKind::Relay => 2,
        }
    }

    pub fn from_code(code: i64) -> RecordKind {
        match code {
            1 => RecordKind::Tunnel,
            2 => RecordKind::Relay,
            _ => RecordKind::Http,
        }
    }

    pub fn parse(text: &str) -> Option<RecordKind> {
        match text {
            "http" => Some(RecordKind::Http),
            "tunnel" => Some(RecordKind::Tunnel),
            "relay" => Some(RecordKind::Relay),
            _ => None,
        }
    }
}

/// Which body of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDir {
    Request,
    Response,
}

impl BodyDir {
    pub fn as_str(self) -> &'static str {
        match self {
            BodyDir::Request => "request",
            BodyDir::Response => "response",
        }
    }

    pub fn parse(text: &str) -> Option<BodyDir> {
        match text {
            "request" => Some(BodyDir::Request),
            "response" => Some(BodyDir::Response),
            _ => None,
        }
    }
}

/// Captured frames up to this size are copied rather than sliced.
const COPY_BELOW: usize = 4096;

/// One body as it crossed sluice: its full size on the wire and the part
/// that was captured.
#[derive(Debug, Clone, Default)]
pub struct CapturedBody {
    /// Bytes that crossed, whether captured or not.
    pub size: u64,
    /// The captured prefix: slices of the frames that carried it (small
    /// frames copied, see `COPY_BELOW`).
    pub chunks: Vec<Bytes>,
    /// Bytes held in `chunks`.
    pub captured: usize,
    /// The wire carried more than the body limit.
    pub truncated: bool,
    /// Capture was dropped because the recorder's queue was full.
    pub dropped: bool,
}

impl CapturedBody {
    /// Adds one frame, keeping at most `limit` bytes in all.
    pub fn push(&mut self, data: &Bytes, limit: usize) {
        self.size += data.len() as u64;
        let room = limit.saturating_sub(self.captured);
        if data.len() > room {
            self.truncated = true;
        }
        let take = data.len().min(room);
        if take > 0 {
            // A small frame is copied: a slice would keep the whole read
            // buffer it came from (8 KiB or more) alive until the record
            // is stored, for a 100-byte body.
            let chunk = if take <= COPY_BELOW {
                Bytes::copy_from_slice(&data[..take])
            } else {
                data.slice(..take)
            };
            self.chunks.push(chunk);
            self.captured += take;
        }
    }

    /// Forgets the captured bytes (queue pressure), keeping the size.
    pub fn drop_capture(&mut self) {
        if self.captured > 0 {
            self.dropped = true;
        }
        self.chunks = Vec::new();
        self.captured = 0;
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.captured);
        for c in &self.chunks {
            v.extend_from_slice(c);
        }
        v
    }

    /// Flag bits as stored: 1 truncated, 2 dropped.
    pub fn flags(&self) -> i64 {
        (self.truncated as i64) | ((self.dropped as i64) << 1)
    }
}

/// Offsets in microseconds from the arrival of the request head; `None`
/// where the step did not happen (a pooled connection has no DNS or
/// connect step).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Timings {
    /// Waiting for an upstream connection to be started.
    pub queued_us: Option<i64>,
    /// Name resolution (a duration).
    pub dns_us: Option<i64>,
    /// TCP connect (a duration).
    pub connect_us: Option<i64>,
    /// TLS handshake with the upstream (a duration).
    pub tls_us: Option<i64>,
    /// Offset at which the request (head and body) was fully sent.
    pub sent_us: Option<i64>,
    /// Offset at which the response head arrived.
    pub ttfb_us: Option<i64>,
    /// Offset at which the exchange ended.
    pub total_us: Option<i64>,
}

/// One record, complete, as handed to the store.
#[derive(Debug, Clone)]
pub struct Record {
    /// Assigned by the recorder when the record is submitted.
    pub id: u64,
    pub kind: RecordKind,
    /// The client connection's id in the inventory.
    pub conn_id: u64,
    /// The upstream connection's id in the inventory, where one was used.
    pub upstream_conn_id: Option<u64>,
    // The short fields are inline strings: no heap allocation of their own
    // per exchange (they are almost always under 24 bytes).
    pub client: CompactString,
    pub user: Option<CompactString>,
    /// Wall-clock start, microseconds since the Unix epoch.
    pub started_us: i64,
    pub method: CompactString,
    pub url: String,
    pub host: CompactString,
    pub version: CompactString,
    pub status: Option<u16>,
    pub req_headers: Vec<u8>,
    pub resp_headers: Vec<u8>,
    /// The response's `Content-Type`, taken from its head where the
    /// exchange runs, so the writer never scans the header block for it.
    pub content_type: Option<CompactString>,
    pub req_body: CapturedBody,
    pub resp_body: CapturedBody,
    pub timings: Timings,
    pub upstream_addr: Option<CompactString>,
    pub error: Option<String>,
    /// Why a tunnel or relay connection closed.
    pub close_reason: Option<String>,
    /// The rules that touched this exchange and what each changed: a
    /// JSON array of `{rule, kind, action}` (empty string: none).
    pub rules: String,
    /// TLS facts (JSON object): an intercepted exchange's versions,
    /// ciphers, ALPN, SNI and upstream certificate; a tunnel's TLS state.
    pub tls: Option<String>,
}

impl Record {
    pub fn new(
        kind: RecordKind,
        conn_id: u64,
        client: impl Into<CompactString>,
        started: SystemTime,
    ) -> Record {
        Record {
            id: 0,
            kind,
            conn_id,
            upstream_conn_id: None,
            client: client.into(),
            user: None,
            started_us: unix_micros(started),
            method: CompactString::default(),
            url: String::new(),
            host: CompactString::default(),
            version: CompactString::default(),
            status: None,
            req_headers: Vec::new(),
            resp_headers: Vec::new(),
            content_type: None,
            req_body: CapturedBody::default(),
            resp_body: CapturedBody::default(),
            timings: Timings::default(),
            upstream_addr: None,
            error: None,
            close_reason: None,
            rules: String::new(),
            tls: None,
        }
    }

    /// Captured body bytes (what the queue's body budget counts).
    pub fn body_bytes(&self) -> usize {
        self.req_body.captured + self.resp_body.captured
    }

    /// Bytes this record's row takes in the database (and its WAL),
    /// roughly: what a batch is cut at. Header blocks and bodies go to the
    /// segment files, not through the WAL.
    pub fn weight(&self) -> usize {
        256 + self.url.len()
            + self.rules.len()
            + self.error.as_ref().map_or(0, |e| e.len())
            + self.tls.as_ref().map_or(0, |t| t.len())
    }
}

/// Microseconds since the Unix epoch (0 for times before it).
pub fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// RFC 3339 with microseconds, UTC.
pub fn rfc3339(us: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_micros(t).to_string()
}

/// Splits a stored header block back into (name, value) pairs; bytes that
/// are not UTF-8 are replaced, as JSON needs text.
pub fn header_pairs(block: &[u8]) -> Vec<(String, String)> {
    block
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                return None;
            }
            let colon = line.iter().position(|&b| b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).into_owned();
            let value = String::from_utf8_lossy(&line[colon + 1..])
                .trim_start()
                .to_string();
            Some((name, value))
        })
        .collect()
}

/// The first value of `name` (case-insensitive) in a header block, found
/// without splitting the whole block.
pub fn header_value(block: &[u8], name: &str) -> Option<String> {
    header_text(block, name).map(|v| v.into_owned())
}

/// A response head's `Content-Type`, as the list shows it.
pub fn content_type_of(headers: &http::HeaderMap) -> Option<CompactString> {
    headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into())
}

/// [`header_value`], borrowed from the block where it is UTF-8.
pub fn header_text<'b>(block: &'b [u8], name: &str) -> Option<std::borrow::Cow<'b, str>> {
    block.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        if !line[..colon].eq_ignore_ascii_case(name.as_bytes()) {
            return None;
        }
        let value = line[colon + 1..].trim_ascii_start();
        Some(String::from_utf8_lossy(value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_at_most_the_limit() {
        let mut b = CapturedBody::default();
        b.push(&Bytes::from_static(b"hello "), 8);
        b.push(&Bytes::from_static(b"world"), 8);
        assert_eq!(b.size, 11);
        assert_eq!(b.to_vec(), b"hello wo");
        assert!(b.truncated);
        b.drop_capture();
        assert!(b.dropped);
        assert_eq!(b.size, 11);
        assert_eq!(b.flags(), 3);
    }

    #[test]
    fn limit_zero_captures_nothing_but_counts() {
        let mut b = CapturedBody::default();
        b.push(&Bytes::from_static(b"abc"), 0);
        assert_eq!((b.size, b.captured, b.truncated), (3, 0, true));
    }

    #[test]
    fn header_blocks_round_trip() {
        let mut h = http::HeaderMap::new();
        h.insert("content-type", "text/plain".parse().unwrap());
        h.append("set-cookie", "a=1".parse().unwrap());
        h.append("set-cookie", "b=2".parse().unwrap());
        let block = super::super::redact::response_block(&h);
        let pairs = header_pairs(&block);
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[1], ("set-cookie".into(), "a=1".into()));
        assert_eq!(
            header_value(&block, "Content-Type").as_deref(),
            Some("text/plain")
        );
    }
}
