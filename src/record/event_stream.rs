//! Server-sent events: a `text/event-stream` response body split into
//! events as it streams (the WHATWG HTML "event stream interpretation"),
//! each handed on as one message with its `event`, `id` and `retry`.
//!
//! Invariants: bytes are fed as they pass and never held beyond one line
//! of at most the capture limit plus the event being built (its data
//! capped at the limit, the rest counted); lines end in CRLF, LF or CR,
//! a CR at a chunk's end waits for the next chunk to say whether an LF
//! follows; a leading UTF-8 BOM is skipped; comments (`:`) and unknown
//! fields are ignored; an event with no data is not dispatched (as a
//! browser would not); bytes that are not UTF-8 are shown replaced.

use std::time::SystemTime;

use super::message_log::Captured;
use super::messages::{opcode, EVENT, TRUNCATED};

/// One event stream's reader.
pub struct EventStream {
    limit: usize,
    /// The line being read, at most `limit + FIELD_ROOM` bytes of it.
    line: Vec<u8>,
    /// Its length on the wire, kept or not.
    line_len: usize,
    /// The last byte seen was a CR (an LF next belongs to it).
    after_cr: bool,
    /// Bytes of a possible BOM still to check at the stream's start.
    bom_left: usize,
    data: Vec<u8>,
    /// Bytes of data the event holds, kept or not (its size).
    data_len: u64,
    has_data: bool,
    truncated: bool,
    event: Option<String>,
    id: Option<String>,
    retry: Option<u64>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// Bytes a line keeps beyond the limit for its field name and colon
/// (`retry: ` is the longest the reader uses).
const FIELD_ROOM: usize = 16;

impl EventStream {
    pub fn new(limit: usize) -> EventStream {
        EventStream {
            limit,
            line: Vec::new(),
            line_len: 0,
            after_cr: false,
            bom_left: BOM.len(),
            data: Vec::new(),
            data_len: 0,
            has_data: false,
            truncated: false,
            event: None,
            id: None,
            retry: None,
        }
    }

    /// Reads a piece of the body, handing each event completed to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut dyn FnMut(Captured)) {
        while self.bom_left > 0 && !bytes.is_empty() {
            let at = BOM.len() - self.bom_left;
            if bytes[0] != BOM[at] {
                // Not a BOM: what was taken for one is the line's start.
                self.push_line(&BOM[..at]);
                self.bom_left = 0;
                break;
            }
            bytes = &bytes[1..];
            self.bom_left -= 1;
        }
        while !bytes.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if bytes[0] == b'\n' {
                    bytes = &bytes[1..];
                    continue;
                }
            }
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    self.push_line(&bytes[..i]);
                    self.after_cr = bytes[i] == b'\r';
                    bytes = &bytes[i + 1..];
                    self.end_line(out);
                }
                None => {
                    self.push_line(bytes);
                    break;
                }
            }
        }
    }

    fn push_line(&mut self, part: &[u8]) {
        self.line_len += part.len();
        // Room for a field name too, so a value keeps `limit` bytes.
        let room = (self.limit + FIELD_ROOM).saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
    }

    fn end_line(&mut self, out: &mut dyn FnMut(Captured)) {
        let line = std::mem::take(&mut self.line);
        let line_len = std::mem::replace(&mut self.line_len, 0);
        if line_len == 0 {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (name, value, value_len) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let skip = i + 1 + usize::from(line.get(i + 1) == Some(&b' '));
                (&line[..i], &line[skip.min(line.len())..], line_len - skip)
            }
            None => (&line[..], &[][..], 0),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data_len += 1;
                    self.keep(b"\n");
                }
                self.has_data = true;
                self.data_len += value_len as u64;
                self.keep(value);
                if value.len() < value_len {
                    self.truncated = true;
                }
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // An id holding NUL is ignored, as the standard says.
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8_lossy(value).into_owned())
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                self.retry = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            }
            _ => {}
        }
    }

    fn keep(&mut self, part: &[u8]) {
        let room = self.limit.saturating_sub(self.data.len());
        if part.len() > room {
            self.truncated = true;
        }
        self.data.extend_from_slice(&part[..part.len().min(room)]);
    }

    fn dispatch(&mut self, out: &mut dyn FnMut(Captured)) {
        let has_data = std::mem::replace(&mut self.has_data, false);
        let data = std::mem::take(&mut self.data);
        let size = std::mem::replace(&mut self.data_len, 0);
        let truncated = std::mem::replace(&mut self.truncated, false);
        let event = self.event.take();
        let retry = self.retry.take();
        // The last event id persists across events, as in a browser.
        let id = self.id.clone();
        if !has_data {
            return;
        }
        let mut meta = serde_json::Map::new();
        if let Some(e) = event {
            meta.insert("event".into(), e.into());
        }
        if let Some(i) = id {
            meta.insert("id".into(), i.into());
        }
        if let Some(r) = retry {
            meta.insert("retry".into(), r.into());
        }
        let mut flags = EVENT;
        if truncated {
            flags |= TRUNCATED;
        }
        out(Captured {
            opcode: opcode::TEXT,
            at: SystemTime::now(),
            size,
            flags,
            meta: Some(serde_json::Value::Object(meta).to_string()),
            payload: data,
        });
    }
}

/// Whether a response's head makes it an event stream sluice splits: a
/// 2xx `text/event-stream` with no content coding or only codings sluice
/// decodes as the body passes (`super::stream_decode`).
pub fn is_event_stream(status: u16, headers: &http::HeaderMap) -> bool {
    let sse = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"));
    // A coding sluice cannot undo as the body passes leaves the stream
    // recorded as a body (bytes as they crossed).
    let decodable = headers
        .get(http::header::CONTENT_ENCODING)
        .is_none_or(|v| v.to_str().is_ok_and(super::decode::supported));
    (200..300).contains(&status) && sse && decodable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(limit: usize, pieces: &[&[u8]]) -> Vec<(String, serde_json::Value, u64, bool)> {
        let mut s = EventStream::new(limit);
        let mut got = Vec::new();
        for p in pieces {
            s.feed(p, &mut |c| {
                let meta: serde_json::Value =
                    serde_json::from_str(c.meta.as_deref().unwrap_or("{}")).unwrap();
                got.push((
                    String::from_utf8(c.payload).unwrap(),
                    meta,
                    c.size,
                    c.flags & TRUNCATED != 0,
                ));
            });
        }
        got
    }

    #[test]
    fn fields_and_multiline_data() {
        let got = events(
            1024,
            &[b"\xEF\xBB\xBF: hello\nevent: tick\nid: 7\nretry: 3000\ndata: a\ndata:b\n\ndata: c\n\n"],
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "a\nb");
        assert_eq!(
            got[0].1,
            serde_json::json!({"event": "tick", "id": "7", "retry": 3000})
        );
        assert_eq!(got[0].2, 3);
        // The id persists; event and retry do not.
        assert_eq!(got[1].1, serde_json::json!({"id": "7"}));
        assert_eq!(got[1].0, "c");
    }

    #[test]
    fn any_line_ending_and_any_split() {
        let whole: &[u8] = b"data: one\r\n\r\ndata: two\r\rdata: three\n\n";
        for cut in 0..whole.len() {
            let (a, b) = whole.split_at(cut);
            let got: Vec<String> = events(64, &[a, b]).into_iter().map(|e| e.0).collect();
            assert_eq!(got, ["one", "two", "three"], "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(events(64, &bytewise).len(), 3);
    }

    #[test]
    fn events_without_data_and_bad_fields_are_not_dispatched() {
        let got = events(64, &[b"event: x\n\nretry: soon\nid: a\0b\ndata\n\n"]);
        // `data` with no colon is an empty data line: dispatched, empty.
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "");
        assert_eq!(got[0].1, serde_json::json!({}));
    }

    #[test]
    fn data_past_the_limit_is_counted_not_kept() {
        let mut body = b"data: ".to_vec();
        body.extend(std::iter::repeat_n(b'x', 10_000));
        body.extend_from_slice(b"\ndata: y\n\n");
        let got = events(100, &[&body]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.len(), 100);
        assert_eq!(got[0].2, 10_002);
        assert!(got[0].3);
    }

    #[test]
    fn which_heads_are_event_streams() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "content-type",
            "text/event-stream; charset=utf-8".parse().unwrap(),
        );
        assert!(is_event_stream(200, &h));
        assert!(!is_event_stream(404, &h));
        // Codings sluice undoes as the body passes; others leave a body.
        for coding in ["gzip", "br, zstd", "identity"] {
            h.insert("content-encoding", coding.parse().unwrap());
            assert!(is_event_stream(200, &h), "{coding}");
        }
        h.insert("content-encoding", "compress".parse().unwrap());
        assert!(!is_event_stream(200, &h));
        h.remove("content-encoding");
        h.insert("content-type", "text/plain".parse().unwrap());
        assert!(!is_event_stream(200, &h));
    }
}
