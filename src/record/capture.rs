//! The capture tap: one [`Exchange`] follows an HTTP request from its head
//! to the end of its response, fed by the handler and by both bodies.
//!
//! Invariants: the tap never blocks and never buffers beyond the body
//! limit (large captured frames are zero-copy slices); the record is submitted
//! exactly once, when the last holder (handler, request body, response
//! body) lets go, so an exchange cut short is recorded too, with why.
//! An event stream's record goes at its response head instead: its body
//! becomes messages ([`EventStream`]) under that record, and its end an
//! update, sent exactly once, when the body ends or the last holder goes.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::time::Instant;

use super::decode;
use super::event_stream::{is_event_stream, EventStream};
use super::message_log::{End, MessageLog};
use super::messages::{Direction, COMPRESSED};
use super::model::Record;
use super::redact;
use super::stream_decode::StreamDecoder;
use super::Recorder;

/// What the upstream connector knows about the connection a response came
/// on; hyper-util hands it to every response of that connection.
#[derive(Debug, Clone)]
pub struct UpstreamInfo {
    pub conn_id: u64,
    pub addr: std::net::SocketAddr,
    /// `addr` as records show it, formatted once per connection.
    pub addr_label: compact_str::CompactString,
    /// When the connector was asked for this connection.
    pub connect_started: Instant,
    pub dns: std::time::Duration,
    pub connect: std::time::Duration,
    /// Set by the first exchange that reports the setup timings: later
    /// exchanges on the same connection reused it.
    pub claimed: Arc<std::sync::atomic::AtomicBool>,
    /// An intercepted tunnel's TLS facts (both handshakes).
    pub tls: Option<Arc<crate::tls::TlsInfo>>,
}

struct Pending {
    /// Boxed: it moves through the queue and the batch as a pointer.
    record: Box<Record>,
    /// Content-Length of the response, to tell a finished body from a cut one.
    resp_expected: Option<u64>,
    resp_done: bool,
    /// What sluice itself did to the exchange (not a rule), listed with
    /// the rules in the record: `(kind, note)`.
    notes: Vec<(&'static str, &'static str)>,
}

/// One HTTP exchange being captured.
pub struct Exchange {
    recorder: Arc<Recorder>,
    started: Instant,
    body_limit: usize,
    /// `None` once submitted.
    pending: Mutex<Option<Pending>>,
    /// Set at the head of an event stream whose record was submitted.
    events: Mutex<Option<Events>>,
}

/// An event stream being split into its record's messages.
struct Events {
    input: EventInput,
    log: Arc<MessageLog>,
    /// Body bytes that passed (compressed, when the body was).
    size: u64,
    error: Option<String>,
    /// Why events stopped being read part-way (a coding that broke).
    note: Option<String>,
}

/// Where an event stream's body goes as it passes.
enum EventInput {
    Plain(EventSink),
    /// Through the decoders of its `Content-Encoding` first.
    Coded(StreamDecoder),
    /// Only counted: its decoders could not be had (the note says why).
    Unread,
}

/// The event reader and the log its events go to.
struct EventSink {
    reader: EventStream,
    log: Arc<MessageLog>,
    /// Set on every event: `COMPRESSED` when the body was coded.
    flags: i64,
}

impl EventSink {
    fn feed(&mut self, bytes: &[u8]) {
        let (log, flags) = (&self.log, self.flags);
        self.reader.feed(bytes, &mut |mut m| {
            m.flags |= flags;
            log.message(Direction::Receive, m)
        });
    }
}

impl std::io::Write for EventSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.feed(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Exchange {
    pub(super) fn new(recorder: Arc<Recorder>, record: Record) -> Exchange {
        Exchange {
            body_limit: recorder.body_limit(),
            recorder,
            started: Instant::now(),
            pending: Mutex::new(Some(Pending {
                record: Box::new(record),
                resp_expected: None,
                resp_done: false,
                notes: Vec::new(),
            })),
            events: Mutex::new(None),
        }
    }

    fn offset_us(&self) -> i64 {
        self.started.elapsed().as_micros() as i64
    }

    fn with(&self, f: impl FnOnce(&mut Pending)) {
        if let Ok(mut p) = self.pending.lock() {
            if let Some(p) = p.as_mut() {
                f(p);
            }
        }
    }

    pub fn set_user(&self, user: &str) {
        self.with(|p| p.record.user = Some(user.into()));
    }

    /// The rules that touched this exchange and what each changed
    /// (`Plan::describe`), plus any note about an action that could not
    /// apply; stored as a JSON array.
    pub fn set_rules<T: serde::Serialize>(&self, applied: &[T]) {
        if applied.is_empty() {
            return;
        }
        let text = serde_json::to_string(applied).unwrap_or_default();
        self.with(|p| p.record.rules = text);
    }

    /// Something sluice itself changed, listed with the rules as
    /// `{"rule": "sluice", "kind": KIND, "note": NOTE}`.
    pub fn note(&self, kind: &'static str, note: &'static str) {
        self.with(|p| p.notes.push((kind, note)));
    }

    /// The request as it leaves (or would have left) for the upstream:
    /// hop-by-hop headers, proxy credentials among them, are never kept,
    /// whichever path calls this (see [`redact`]).
    pub fn set_request_headers(&self, headers: &http::HeaderMap) {
        let block = redact::request_block(headers);
        self.with(|p| p.record.req_headers = block);
    }

    pub fn request_chunk(&self, data: &Bytes) {
        let limit = self.body_limit;
        self.with(|p| p.record.req_body.push(data, limit));
    }

    pub fn request_done(&self) {
        let at = self.offset_us();
        self.with(|p| {
            p.record.timings.sent_us.get_or_insert(at);
        });
    }

    /// The TLS facts of the intercepted tunnel this exchange came through.
    pub fn set_tls(&self, tls: &str) {
        self.with(|p| p.record.tls = Some(tls.to_string()));
    }

    /// The response head arrived from the upstream.
    pub fn response_head(
        &self,
        status: u16,
        headers: &http::HeaderMap,
        expected_len: Option<u64>,
        upstream: Option<&UpstreamInfo>,
    ) {
        let at = self.offset_us();
        let block = redact::response_block(headers);
        let content_type = super::model::content_type_of(headers);
        self.with(|p| {
            let r = &mut p.record;
            r.status = Some(status);
            r.resp_headers = block;
            r.content_type = content_type;
            r.timings.ttfb_us = Some(at);
            p.resp_expected = expected_len;
            if let Some(u) = upstream {
                r.upstream_conn_id = Some(u.conn_id);
                r.upstream_addr = Some(u.addr_label.clone());
                let fresh = !u.claimed.swap(true, std::sync::atomic::Ordering::Relaxed);
                if fresh {
                    let queued = u.connect_started.saturating_duration_since(self.started);
                    let queued_us = queued.as_micros() as i64;
                    let dns_us = u.dns.as_micros() as i64;
                    let connect_us = u.connect.as_micros() as i64;
                    r.timings.queued_us = Some(queued_us);
                    r.timings.dns_us = Some(dns_us);
                    r.timings.connect_us = Some(connect_us);
                    if let Some(t) = &u.tls {
                        r.timings.tls_us = Some(t.handshake.as_micros() as i64);
                    }
                    // The request could not leave before its connection
                    // was up.
                    let ready = queued_us + dns_us + connect_us + r.timings.tls_us.unwrap_or(0);
                    if let Some(sent) = r.timings.sent_us.as_mut() {
                        *sent = (*sent).max(ready);
                    }
                }
            }
            // A request without a body is sent once its head is written,
            // which the tap cannot see; the head arriving bounds it.
            r.timings.sent_us.get_or_insert(at);
        });
        if is_event_stream(status, headers) {
            let coding = headers
                .get(http::header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok());
            self.start_events(coding);
        }
    }

    /// Submits the record of an event stream at its head; its events
    /// follow as messages, decoded first when `coding` (a coding
    /// [`is_event_stream`] accepted) says the body is compressed.
    fn start_events(&self, coding: Option<&str>) {
        let Some(p) = self.pending.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        let Some(id) = self.finish(p, true) else {
            return;
        };
        let log = Arc::new(MessageLog::new(self.recorder.clone(), id, self.started));
        let coded = coding.filter(|c| !decode::codings(c).is_ok_and(|l| l.is_empty()));
        let sink = EventSink {
            reader: EventStream::new(log.limit()),
            log: log.clone(),
            flags: if coded.is_some() { COMPRESSED } else { 0 },
        };
        let mut note = None;
        let input = match coded {
            None => EventInput::Plain(sink),
            Some(c) => match StreamDecoder::new(c, Box::new(sink)) {
                Ok(d) => EventInput::Coded(d),
                Err(e) => {
                    // The decoder budget is spent (`is_event_stream` let
                    // only codings sluice decodes through).
                    note = Some(format!("events not read: {e}"));
                    EventInput::Unread
                }
            },
        };
        if let Ok(mut e) = self.events.lock() {
            *e = Some(Events {
                input,
                log,
                size: 0,
                error: None,
                note,
            });
        }
    }

    /// Runs `f` on the event stream, if this exchange is one.
    fn with_events(&self, f: impl FnOnce(&mut Events)) -> bool {
        match self.events.lock() {
            Ok(mut e) => e.as_mut().map(f).is_some(),
            Err(_) => false,
        }
    }

    pub fn response_chunk(&self, data: &Bytes) {
        let streamed = self.with_events(|e| {
            let at = e.size;
            e.size += data.len() as u64;
            match &mut e.input {
                EventInput::Plain(sink) => sink.feed(data),
                EventInput::Coded(d) => {
                    if let Err(err) = d.feed(data) {
                        e.note.get_or_insert_with(|| {
                            format!("events after body byte {at} not read: {err}")
                        });
                    }
                }
                EventInput::Unread => {}
            }
        });
        if !streamed {
            let limit = self.body_limit;
            self.with(|p| p.record.resp_body.push(data, limit));
        }
    }

    pub fn response_done(&self) {
        let at = self.offset_us();
        self.with(|p| {
            p.resp_done = true;
            p.record.timings.total_us.get_or_insert(at);
        });
        self.with_events(|e| {
            e.log.finish(End {
                resp_size: Some(e.size),
                close_reason: Some("eof".into()),
                error: e.error.take(),
                note: e.note.take(),
                ..End::default()
            })
        });
    }

    /// The exchange failed; the first error wins (it is the cause).
    pub fn fail(&self, error: impl Into<String>) {
        let error = error.into();
        let streamed = self.with_events(|e| {
            e.error.get_or_insert_with(|| error.clone());
        });
        if !streamed {
            self.with(|p| {
                p.record.error.get_or_insert(error);
            });
        }
    }

    /// sluice answered itself (an error answer): status and headers of that
    /// answer, and why.
    pub fn answered(&self, status: u16, headers: &http::HeaderMap, error: Option<&str>) {
        let at = self.offset_us();
        let block = redact::response_block(headers);
        let content_type = super::model::content_type_of(headers);
        self.with(|p| {
            let r = &mut p.record;
            r.status = Some(status);
            r.resp_headers = block;
            r.content_type = content_type;
            r.timings.ttfb_us.get_or_insert(at);
            r.timings.total_us.get_or_insert(at);
            p.resp_done = true;
            if let Some(e) = error {
                r.error.get_or_insert_with(|| e.to_string());
            }
        });
    }
}

impl Exchange {
    /// Submits the record now (a 101, or an event stream's head: what
    /// follows is messages, recorded under the id returned) instead of
    /// when the last holder lets go. `None` when it was submitted before
    /// or the queue did not take it.
    pub fn submit_now(&self) -> Option<(u64, Instant)> {
        let p = self.pending.lock().ok()?.take()?;
        self.finish(p, true).map(|id| (id, self.started))
    }

    /// Submits the record; `streaming`: what follows the head is
    /// recorded as messages, so no body is missing yet.
    fn finish(&self, mut p: Pending, streaming: bool) -> Option<u64> {
        let at = self.offset_us();
        let r = &mut p.record;
        let body_complete = streaming || p.resp_done || p.resp_expected == Some(r.resp_body.size);
        if r.status.is_some() && !body_complete && r.error.is_none() {
            r.error = Some(format!(
                "response cut short after {} bytes (client went away or the upstream stopped)",
                r.resp_body.size
            ));
        } else if r.status.is_none() && r.error.is_none() {
            r.error = Some("no response: the client went away before the upstream answered".into());
        }
        r.timings.total_us.get_or_insert(at);
        if !p.notes.is_empty() {
            let mut list: Vec<serde_json::Value> =
                serde_json::from_str(&r.rules).unwrap_or_default();
            list.extend(p.notes.iter().map(
                |(kind, note)| serde_json::json!({ "rule": "sluice", "kind": kind, "note": note }),
            ));
            r.rules = serde_json::to_string(&list).unwrap_or_default();
        }
        self.recorder.submit(p.record)
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(p) = self.pending.get_mut().ok().and_then(Option::take) {
            self.finish(p, false);
        }
        // An event stream whose body did not end: cut short. (The log
        // ignores this when the body's end was already reported.)
        if let Some(e) = self.events.get_mut().ok().and_then(Option::take) {
            let error = e.error.unwrap_or_else(|| {
                format!(
                    "event stream cut short after {} bytes (client went away or the upstream stopped)",
                    e.size
                )
            });
            e.log.finish(End {
                resp_size: Some(e.size),
                close_reason: Some("cut short".into()),
                error: Some(error),
                note: e.note,
                ..End::default()
            });
        }
    }
}
