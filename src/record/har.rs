//! HAR 1.2 export: stored records as an HTTP Archive that browser
//! devtools and HAR viewers open.
//!
//! Invariants: entries come oldest first (ascending id), up to the newest
//! record stored when the export began, so an export under load still ends;
//! one record is held at a time, and the store is locked only while that
//! record is read, never while its bodies are decoded or encoded; output
//! reaches the sink in pieces of about [`FLUSH_AT`] bytes.
//!
//! Where HAR has no field for what sluice knows, `_`-prefixed fields carry
//! it (`_kind`, `_error`, `_rules`, ...), as the format allows.

use std::net::SocketAddr;

use base64::Engine;
use bytes::Bytes;
use rusqlite::types::Value;
use serde::Serialize;

use super::decode;
use super::messages::{self, MessageRow};
use super::model::{rfc3339, BodyDir, RecordKind};
use super::query::{self, BodyMeta, Detail, Filter, Phases};
use super::store::{Reader, Store, StoreError};

mod cookies;
pub use cookies::{request_cookies, response_cookies, Cookie};

/// Record ids read per query.
pub const PAGE: usize = 200;
/// A response body decodes to at most this much in an export.
pub const DECODE_CAP: usize = 16 * 1024 * 1024;
/// At most this many messages of one record go in an export (the
/// per-connection budget's ceiling).
pub const MESSAGE_CAP: usize = 100_000;
/// Output is handed to the sink once this much has gathered.
pub const FLUSH_AT: usize = 64 * 1024;

/// Writes the records matching `filter` as one HAR 1.2 document, in
/// pieces, to `sink`. The sink answers `false` when its reader has gone;
/// the export then stops early and still returns `Ok`. Nothing reaches the
/// sink before the first page of records has been read, so a store that
/// cannot be read fails before any output. `filter.limit` is ignored: an
/// export holds every matching record.
pub fn export(
    store: &Store,
    filter: &Filter,
    sink: &mut dyn FnMut(Bytes) -> bool,
) -> Result<(), StoreError> {
    let newest = store.max_id()?;
    let (clause, filter_params) = filter.sql();
    let joiner = if clause.is_empty() { " WHERE" } else { " AND" };
    let sql =
        format!("SELECT id FROM records{clause}{joiner} id > ? AND id <= ? ORDER BY id LIMIT ?");

    let mut out = Output {
        buf: Vec::with_capacity(FLUSH_AT * 2),
        sink,
    };
    let creator = Creator {
        name: "sluice",
        version: env!("CARGO_PKG_VERSION"),
    };
    out.buf
        .extend_from_slice(br#"{"log":{"version":"1.2","creator":"#);
    serde_json::to_writer(&mut out.buf, &creator).map_err(json_error)?;
    out.buf.extend_from_slice(br#","pages":[],"entries":["#);

    let mut after = 0u64;
    let mut first = true;
    loop {
        let ids: Vec<u64> = store.read(|c| {
            let mut params = filter_params.clone();
            params.push(Value::Integer(after as i64));
            params.push(Value::Integer(newest as i64));
            params.push(Value::Integer(PAGE as i64));
            let mut stmt = c.prepare_cached(&sql)?;
            let ids = stmt
                .query_map(rusqlite::params_from_iter(params), |r| r.get::<_, i64>(0))?
                .map(|id| id.map(|id| id as u64))
                .collect::<rusqlite::Result<Vec<_>>>();
            ids
        })?;
        for &id in &ids {
            after = id;
            // Retention may have taken it since the page was read.
            let Some(loaded) = store.read(|c| load(c, id))? else {
                continue;
            };
            if !first {
                out.buf.push(b',');
            }
            first = false;
            serde_json::to_writer(&mut out.buf, &entry(loaded)).map_err(json_error)?;
            if out.buf.len() >= FLUSH_AT && !out.flush() {
                return Ok(());
            }
        }
        if ids.len() < PAGE {
            break;
        }
    }
    out.buf.extend_from_slice(b"]}}\n");
    out.flush();
    Ok(())
}

fn json_error(e: serde_json::Error) -> StoreError {
    StoreError::Poisoned(format!("cannot encode a HAR entry: {e}"))
}

struct Output<'a> {
    buf: Vec<u8>,
    sink: &'a mut dyn FnMut(Bytes) -> bool,
}

impl Output<'_> {
    /// Hands what has gathered to the sink; false when its reader is gone.
    fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let piece = std::mem::replace(&mut self.buf, Vec::with_capacity(FLUSH_AT * 2));
        (self.sink)(Bytes::from(piece))
    }
}

/// One record and its stored bodies.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub detail: Detail,
    pub req_body: Vec<u8>,
    pub resp_body: Vec<u8>,
    /// Stored WebSocket messages or server-sent events, oldest first;
    /// bounded by the per-connection message budget.
    pub messages: Vec<MessageRow>,
}

fn load(c: &Reader<'_>, id: u64) -> rusqlite::Result<Option<Loaded>> {
    let Some(detail) = query::detail(c, id)? else {
        return Ok(None);
    };
    let req_body = if detail.req_body.captured > 0 {
        query::body(c, id, BodyDir::Request)?
    } else {
        Vec::new()
    };
    let resp_body = if detail.resp_body.captured > 0 {
        query::body(c, id, BodyDir::Response)?
    } else {
        Vec::new()
    };
    let stored = detail.summary.messages.as_ref().map_or(0, |m| m.stored);
    let messages = if stored > 0 {
        let page = messages::Filter {
            limit: MESSAGE_CAP,
            ..messages::Filter::default()
        };
        messages::list(c, id, &page)?
    } else {
        Vec::new()
    };
    Ok(Some(Loaded {
        detail,
        req_body,
        resp_body,
        messages,
    }))
}

#[derive(Serialize)]
struct Creator {
    name: &'static str,
    version: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub started_date_time: String,
    pub time: f64,
    pub request: Request,
    pub response: Response,
    pub cache: Cache,
    pub timings: Phases,
    #[serde(rename = "serverIPAddress", skip_serializing_if = "Option::is_none")]
    pub server_ip_address: Option<String>,
    pub connection: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(rename = "_id")]
    pub id: u64,
    #[serde(rename = "_kind")]
    pub kind: &'static str,
    #[serde(rename = "_client")]
    pub client: String,
    #[serde(rename = "_user", skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        rename = "_upstreamConnection",
        skip_serializing_if = "Option::is_none"
    )]
    pub upstream_connection: Option<String>,
    #[serde(rename = "_error", skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(rename = "_closeReason", skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
    #[serde(rename = "_rules")]
    pub rules: serde_json::Value,
    /// `websocket` for an upgraded connection, as Chrome writes it.
    #[serde(rename = "_resourceType", skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<&'static str>,
    /// A WebSocket's messages in Chrome's shape: Chrome DevTools and HAR
    /// viewers that read Chrome's exports show them.
    #[serde(rename = "_webSocketMessages", skip_serializing_if = "Vec::is_empty")]
    pub web_socket_messages: Vec<WsMessage>,
    /// A server-sent event stream's events (no standard field exists).
    #[serde(rename = "_eventStreamMessages", skip_serializing_if = "Vec::is_empty")]
    pub event_stream_messages: Vec<EventMessage>,
}

/// One WebSocket message as Chrome's HAR export has it.
#[derive(Debug, Serialize)]
pub struct WsMessage {
    /// `send` (client to server) or `receive`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Seconds since the Unix epoch.
    pub time: f64,
    pub opcode: u8,
    /// Text as is; binary (and a payload that is not UTF-8) base64.
    pub data: String,
    #[serde(rename = "_size")]
    pub size: u64,
    #[serde(rename = "_truncated", skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Taken out by a `wsDrop://` rule: the other end never got it.
    #[serde(rename = "_dropped", skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
}

/// One server-sent event.
#[derive(Debug, Serialize)]
pub struct EventMessage {
    pub time: f64,
    #[serde(rename = "eventName", skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(rename = "eventId", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
    pub data: String,
    #[serde(rename = "_truncated", skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Splits stored messages into WebSocket messages and SSE events.
fn har_messages(rows: Vec<MessageRow>) -> (Vec<WsMessage>, Vec<EventMessage>) {
    let mut ws = Vec::new();
    let mut sse = Vec::new();
    for m in rows {
        let time = m.time_us as f64 / 1e6;
        let data = m.text.or(m.base64).unwrap_or_default();
        if let Some(ev) = m.event {
            let field = |k: &str| ev.get(k).and_then(|v| v.as_str()).map(str::to_string);
            sse.push(EventMessage {
                time,
                event: field("event"),
                id: field("id"),
                retry: ev.get("retry").and_then(|v| v.as_u64()),
                data,
                truncated: m.truncated,
            });
            continue;
        }
        let data = match m.close {
            // Chrome shows a close frame's payload; keep code and reason.
            Some(c) => format!("{} {}", c.code, c.reason).trim_end().to_string(),
            None => data,
        };
        ws.push(WsMessage {
            kind: m.direction,
            time,
            opcode: messages::opcode::parse(m.opcode).unwrap_or(0),
            data,
            size: m.size,
            truncated: m.truncated,
            dropped: m.dropped,
        });
    }
    (ws, sse)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub method: String,
    pub url: String,
    pub http_version: String,
    pub cookies: Vec<Cookie>,
    pub headers: Vec<Header>,
    pub query_string: Vec<Header>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_data: Option<PostData>,
    pub headers_size: i64,
    pub body_size: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub status: u16,
    pub status_text: String,
    pub http_version: String,
    pub cookies: Vec<Cookie>,
    pub headers: Vec<Header>,
    pub content: Content,
    #[serde(rename = "redirectURL")]
    pub redirect_url: String,
    pub headers_size: i64,
    pub body_size: i64,
}

/// A header, or a query-string parameter (the same shape in HAR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// A request body. HAR 1.2 has no encoding for `postData.text`; a body
/// that is not UTF-8 is base64 in `text`, marked by `_encoding` and a
/// comment, so it survives the round trip (viewers show the base64).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostData {
    pub mime_type: String,
    pub text: String,
    #[serde(rename = "_encoding", skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Content {
    pub size: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<i64>,
    pub mime_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// sluice keeps no cache: always empty.
#[derive(Debug, Serialize)]
pub struct Cache {}

/// The HAR entry of one record.
pub fn entry(l: Loaded) -> Entry {
    let Loaded {
        detail: d,
        req_body,
        resp_body,
        messages,
    } = l;
    let (web_socket_messages, event_stream_messages) = har_messages(messages);
    let resource_type = d
        .resp_headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("upgrade") && v.eq_ignore_ascii_case("websocket"))
        .then_some("websocket");
    let s = d.summary;
    let kind = RecordKind::parse(s.kind).unwrap_or(RecordKind::Http);
    let phases = Phases::from_timings(&d.timings);
    let started_us = s.started_us;

    let (request, response, comment) = match kind {
        RecordKind::Http => {
            let post_data = (d.req_body.size > 0 || !req_body.is_empty())
                .then(|| post_data(&d.req_headers, &d.req_body, &req_body));
            let request = Request {
                url: http_url(&s.url, &s.host),
                query_string: query_pairs(&s.url),
                method: s.method,
                http_version: s.version.clone(),
                cookies: request_cookies(&d.req_headers),
                headers: headers(&d.req_headers),
                post_data,
                headers_size: -1,
                body_size: s.req_size as i64,
            };
            let response = Response {
                status: s.status.unwrap_or(0),
                status_text: status_text(s.status),
                http_version: s.version,
                cookies: response_cookies(&d.resp_headers, started_us),
                content: content(&d.resp_headers, &d.resp_body, &resp_body),
                redirect_url: header(&d.resp_headers, "location").unwrap_or_default(),
                headers: headers(&d.resp_headers),
                headers_size: -1,
                body_size: s.resp_size as i64,
            };
            (request, response, None)
        }
        RecordKind::Tunnel | RecordKind::Relay => {
            let what = if kind == RecordKind::Tunnel {
                "CONNECT tunnel"
            } else {
                "port relay"
            };
            let request = Request {
                url: stream_url(kind, &s.url),
                query_string: Vec::new(),
                method: s.method,
                http_version: s.version.clone(),
                cookies: Vec::new(),
                headers: headers(&d.req_headers),
                post_data: None,
                headers_size: -1,
                body_size: s.req_size as i64,
            };
            let response = Response {
                status: s.status.unwrap_or(0),
                status_text: status_text(s.status),
                http_version: s.version,
                cookies: Vec::new(),
                headers: headers(&d.resp_headers),
                content: Content {
                    size: s.resp_size as i64,
                    compression: None,
                    mime_type: "x-unknown".into(),
                    text: None,
                    encoding: None,
                    comment: Some(format!("{what}: bytes relayed, not recorded")),
                },
                redirect_url: String::new(),
                headers_size: -1,
                body_size: s.resp_size as i64,
            };
            let comment = format!(
                "{what}: {} bytes up, {} bytes down; request.bodySize and response.bodySize count them",
                s.req_size, s.resp_size
            );
            (request, response, Some(comment))
        }
    };

    Entry {
        started_date_time: rfc3339(started_us),
        time: phases.total(),
        request,
        response,
        cache: Cache {},
        timings: phases,
        server_ip_address: s.upstream_addr.as_deref().and_then(server_ip),
        connection: s.conn_id.to_string(),
        comment,
        id: s.id,
        kind: s.kind,
        client: s.client,
        user: s.user,
        upstream_connection: s.upstream_conn_id.map(|c| c.to_string()),
        error: s.error,
        close_reason: s.close_reason,
        rules: s.rules,
        resource_type,
        web_socket_messages,
        event_stream_messages,
    }
}

fn headers(pairs: &[(String, String)]) -> Vec<Header> {
    pairs
        .iter()
        .map(|(name, value)| Header {
            name: name.clone(),
            value: value.clone(),
        })
        .collect()
}

fn header(pairs: &[(String, String)], name: &str) -> Option<String> {
    pairs
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// The canonical reason phrase ("" for 0 and unknown codes).
pub fn status_text(status: Option<u16>) -> String {
    status
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
        .to_string()
}

/// The IP of `host:port` (an upstream address as stored).
pub fn server_ip(addr: &str) -> Option<String> {
    let addr = addr.trim();
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Some(a.ip().to_string());
    }
    addr.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

/// The request URL, absolute: a record of an origin-form request (no
/// scheme) gets `http://host` in front, as viewers need a full URL.
pub fn http_url(url: &str, host: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    let host = if host.is_empty() { "unknown" } else { host };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if url.starts_with('/') {
        format!("http://{host}{url}")
    } else {
        format!("http://{host}/{url}")
    }
}

/// A URL for a tunnel or relay target (`host:port`). HAR viewers need a
/// URL that parses: tunnels become `https://host:port` (a CONNECT almost
/// always carries TLS, and Chrome shows it as that origin), relays
/// `tcp://host:port`.
pub fn stream_url(kind: RecordKind, target: &str) -> String {
    let target = target.trim();
    let target = if target.is_empty() { "unknown" } else { target };
    match kind {
        RecordKind::Relay => format!("tcp://{target}"),
        _ => format!("https://{target}"),
    }
}

/// The query-string parameters of `url`, percent-decoded (`+` is a space,
/// as browsers read query strings).
pub fn query_pairs(url: &str) -> Vec<Header> {
    let Some((_, rest)) = url.split_once('?') else {
        return Vec::new();
    };
    let query = rest.split('#').next().unwrap_or("");
    form_pairs(query)
        .into_iter()
        .map(|(name, value)| Header { name, value })
        .collect()
}

/// `a=1&b=x+y` as decoded pairs.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// How one body appears in HAR: the text, whether it is base64, and what
/// the reader should know about it.
#[derive(Debug, PartialEq, Eq)]
pub struct Rendered {
    /// Decoded size (the full size when the capture was cut and not
    /// encoded, as the wire says it).
    pub size: i64,
    pub text: Option<String>,
    pub base64: bool,
    /// Bytes the content coding saved, when the whole body was captured.
    pub compression: Option<i64>,
    pub comment: Option<String>,
}

/// Decodes a captured body by its Content-Encoding and picks text or
/// base64. A body that cannot be decoded is given raw, in base64, with the
/// reason in the comment.
pub fn render(meta: &BodyMeta, captured: &[u8]) -> Rendered {
    if captured.is_empty() {
        let comment = if meta.size == 0 {
            None
        } else if meta.dropped {
            Some("body not recorded: the recorder's queue was full".to_string())
        } else {
            Some("body not recorded (record body limit)".to_string())
        };
        return Rendered {
            size: meta.size as i64,
            text: None,
            base64: false,
            compression: None,
            comment,
        };
    }
    let encoding = meta.encoding.as_deref().unwrap_or("");
    let identity = encoding
        .split(',')
        .all(|t| t.trim().is_empty() || t.trim().eq_ignore_ascii_case("identity"));
    if identity {
        let (text, base64) = text_or_base64(captured, meta.truncated);
        return Rendered {
            size: meta.size as i64,
            text: Some(text),
            base64,
            compression: None,
            comment: meta.truncated.then(|| {
                format!(
                    "body truncated: {} of {} bytes recorded",
                    captured.len(),
                    meta.size
                )
            }),
        };
    }
    match decode::decode(encoding, captured, DECODE_CAP) {
        Ok(decoded) => {
            let cut = decoded.truncated || meta.truncated;
            let (text, base64) = text_or_base64(&decoded.data, cut);
            let size = decoded.data.len() as i64;
            let comment = if decoded.truncated && decoded.data.len() >= DECODE_CAP {
                Some(format!("decoded {encoding} body cut at {DECODE_CAP} bytes"))
            } else if cut {
                Some(format!(
                    "body truncated: {} of {} {encoding} bytes recorded; {size} bytes decoded",
                    captured.len(),
                    meta.size
                ))
            } else {
                None
            };
            Rendered {
                size,
                text: Some(text),
                base64,
                compression: (!cut).then(|| size - meta.size as i64),
                comment,
            }
        }
        Err(e) => Rendered {
            size: captured.len() as i64,
            text: Some(base64::engine::general_purpose::STANDARD.encode(captured)),
            base64: true,
            compression: None,
            comment: Some(format!("{e}: the recorded bytes are given as they crossed")),
        },
    }
}

/// UTF-8 as text; anything else as base64. A cut capture that only ends
/// inside a character loses that partial character and stays text.
pub fn text_or_base64(data: &[u8], truncated: bool) -> (String, bool) {
    match std::str::from_utf8(data) {
        Ok(s) => (s.to_string(), false),
        Err(e) if truncated && e.error_len().is_none() => (
            String::from_utf8_lossy(&data[..e.valid_up_to()]).into_owned(),
            false,
        ),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(data), true),
    }
}

fn content(headers: &[(String, String)], meta: &BodyMeta, captured: &[u8]) -> Content {
    let r = render(meta, captured);
    Content {
        size: r.size,
        compression: r.compression,
        mime_type: mime(headers),
        text: r.text,
        encoding: r.base64.then_some("base64"),
        comment: r.comment,
    }
}

fn post_data(headers: &[(String, String)], meta: &BodyMeta, captured: &[u8]) -> PostData {
    let r = render(meta, captured);
    let comment = match (r.base64, r.comment) {
        (true, Some(c)) => Some(format!("{c}; text is base64")),
        (true, None) => Some("binary body: text is base64 (see _encoding)".to_string()),
        (false, c) => c,
    };
    PostData {
        mime_type: header(headers, "content-type").unwrap_or_default(),
        text: r.text.unwrap_or_default(),
        encoding: r.base64.then_some("base64"),
        comment,
    }
}

/// The Content-Type, or Chrome's `x-unknown` when there is none.
fn mime(headers: &[(String, String)]) -> String {
    header(headers, "content-type").unwrap_or_else(|| "x-unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn meta(size: u64, captured: u64, truncated: bool, encoding: Option<&str>) -> BodyMeta {
        BodyMeta {
            size,
            captured,
            truncated,
            dropped: false,
            encoding: encoding.map(str::to_string),
            content_type: None,
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn query_strings_are_decoded() {
        let q = query_pairs("http://h/p?a=1&b=x+y&c=%E2%9C%93&d&&e=%zz&f=50%#frag");
        let got: Vec<(&str, &str)> = q
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", "1"),
                ("b", "x y"),
                ("c", "✓"),
                ("d", ""),
                ("e", "%zz"),
                ("f", "50%")
            ]
        );
        assert!(query_pairs("http://h/p").is_empty());
        assert!(query_pairs("http://h/p?").is_empty());
    }

    #[test]
    fn status_texts_are_canonical() {
        assert_eq!(status_text(Some(200)), "OK");
        assert_eq!(status_text(Some(404)), "Not Found");
        assert_eq!(status_text(Some(502)), "Bad Gateway");
        assert_eq!(status_text(Some(599)), "");
        assert_eq!(status_text(None), "");
    }

    #[test]
    fn urls_parse_in_viewers() {
        assert_eq!(http_url("http://a/b?c", "a"), "http://a/b?c");
        assert_eq!(http_url("/b", "a"), "http://a/b");
        assert_eq!(http_url("/b", "::1"), "http://[::1]/b");
        assert_eq!(stream_url(RecordKind::Tunnel, "h:443"), "https://h:443");
        assert_eq!(
            stream_url(RecordKind::Relay, "10.0.0.1:5432"),
            "tcp://10.0.0.1:5432"
        );
        assert_eq!(stream_url(RecordKind::Relay, ""), "tcp://unknown");
        assert_eq!(server_ip("127.0.0.1:80").as_deref(), Some("127.0.0.1"));
        assert_eq!(server_ip("[::1]:443").as_deref(), Some("::1"));
        assert_eq!(server_ip("name:443"), None);
    }

    #[test]
    fn text_or_base64_by_utf8() {
        assert_eq!(text_or_base64(b"hello", false), ("hello".into(), false));
        assert_eq!(
            text_or_base64(&[0xff, 0x00, 0x01], false),
            ("/wAB".into(), true)
        );
        // A capture cut inside "é" keeps the text before it.
        let cut = &"caf\u{e9}".as_bytes()[..4];
        assert_eq!(text_or_base64(cut, true), ("caf".into(), false));
        assert!(text_or_base64(cut, false).1);
    }

    #[test]
    fn gzip_bodies_are_decoded_with_compression() {
        let body = b"hello hello hello hello hello hello".repeat(10);
        let wire = gzip(&body);
        let r = render(
            &meta(wire.len() as u64, wire.len() as u64, false, Some("gzip")),
            &wire,
        );
        assert_eq!(r.text.as_deref().map(str::as_bytes), Some(&body[..]));
        assert!(!r.base64);
        assert_eq!(r.size, body.len() as i64);
        assert_eq!(r.compression, Some(body.len() as i64 - wire.len() as i64));
        assert_eq!(r.comment, None);
    }

    #[test]
    fn undecodable_bodies_are_raw_base64() {
        let r = render(&meta(5, 5, false, Some("gzip")), b"nope!");
        assert!(r.base64);
        assert_eq!(r.text.as_deref(), Some("bm9wZSE="));
        assert_eq!(r.size, 5);
        assert!(r.comment.unwrap().contains("gzip"));
    }

    #[test]
    fn uncaptured_and_truncated_bodies_say_so() {
        let r = render(&meta(10, 0, true, None), b"");
        assert_eq!((r.size, r.text), (10, None));
        assert!(r.comment.unwrap().contains("not recorded"));
        let r = render(&meta(10, 4, true, None), b"abcd");
        assert_eq!(r.size, 10);
        assert_eq!(r.text.as_deref(), Some("abcd"));
        assert!(r.comment.unwrap().contains("4 of 10"));
        let empty = render(&meta(0, 0, false, Some("gzip")), b"");
        assert_eq!(empty.comment, None);
    }

    fn store_with(n: u64) -> std::sync::Arc<Store> {
        use super::super::model::Record;
        let store = Store::open(&crate::config::Recording::default()).unwrap();
        let batch: Vec<Record> = (1..=n)
            .map(|id| {
                let mut r = Record::new(
                    RecordKind::Http,
                    id,
                    "127.0.0.1:5000",
                    std::time::SystemTime::now(),
                );
                r.id = id;
                r.method = "GET".into();
                r.url = format!("http://h/{id}");
                r.host = "h".into();
                r.version = "HTTP/1.1".into();
                r.status = Some(if id % 2 == 0 { 200 } else { 404 });
                r.resp_body.push(&Bytes::from(vec![b'x'; 1000]), 1 << 20);
                r
            })
            .collect();
        store.insert(&batch, || {}).unwrap();
        store
    }

    fn run(store: &Store, f: &Filter) -> (usize, serde_json::Value) {
        let mut doc = Vec::new();
        let mut pieces = 0;
        export(store, f, &mut |b| {
            pieces += 1;
            doc.extend_from_slice(&b);
            true
        })
        .unwrap();
        (pieces, serde_json::from_slice(&doc).unwrap())
    }

    #[test]
    fn export_pages_oldest_first_in_pieces() {
        let store = store_with(2 * PAGE as u64 + 50);
        let (pieces, doc) = run(&store, &Filter::default());
        let entries = doc["log"]["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2 * PAGE + 50);
        let ids: Vec<u64> = entries.iter().map(|e| e["_id"].as_u64().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
        assert!(pieces > 5, "streamed in pieces, not one: {pieces}");
        assert_eq!(doc["log"]["version"], "1.2");
        assert_eq!(doc["log"]["creator"]["name"], "sluice");

        let f = Filter::from_params([("status", "404")]).unwrap();
        let (_, doc) = run(&store, &f);
        let entries = doc["log"]["entries"].as_array().unwrap();
        assert_eq!(entries.len(), PAGE + 25);
        assert!(entries.iter().all(|e| e["response"]["status"] == 404));

        let f = Filter::from_params([("host", "nowhere")]).unwrap();
        let (pieces, doc) = run(&store, &f);
        assert_eq!(pieces, 1);
        assert_eq!(doc["log"]["entries"], serde_json::json!([]));
    }

    #[test]
    fn export_stops_when_the_reader_goes() {
        let store = store_with(500);
        let mut pieces = 0;
        export(&store, &Filter::default(), &mut |_| {
            pieces += 1;
            false
        })
        .unwrap();
        assert_eq!(pieces, 1);
    }

    #[test]
    fn admin_query_pairs() {
        assert_eq!(
            form_pairs("host=a.b&status=5xx&url=%2Fx%3Fy"),
            pairs(&[("host", "a.b"), ("status", "5xx"), ("url", "/x?y")])
        );
    }
}
