//! The exchange observer: what the request phases tell about one
//! exchange, and the three parties that listen — the recording (capture
//! tap into the record writer), the metrics and the per-user accounting.
//! The phases call [`Observers`] at each step; none of them knows who
//! listens (mitmproxy's hooks, not recording code inside the data path).
//!
//! Invariants: `finished` is told exactly once per exchange that reached
//! the request path (status 0: closed unanswered); headers told to an
//! observer are the headers as forwarded, so nothing hop-by-hop (proxy
//! credentials) reaches a record.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method};
use tokio::time::Instant;

use super::tamper::Note;
use crate::metrics::Metrics;
use crate::record::capture::{Exchange, UpstreamInfo};
use crate::users::Users;

/// What the request path tells about one exchange. Every event has a
/// default that ignores it: each observer listens to what it needs.
pub trait ExchangeObserver {
    /// The request head as forwarded (or as received, when sluice answered
    /// before forwarding).
    fn request_head(&self, _headers: &HeaderMap) {}
    /// The rules that matched and what each did, as far as known.
    fn rules(&self, _notes: &[Note]) {}
    /// Something sluice itself changed in the request.
    fn note(&self, _kind: &'static str, _note: &'static str) {}
    /// Who the exchange is accounted to (after authentication).
    fn identified(&self, _user: &str, _authenticated: bool) {}
    /// The request has left whole (a request without a body: at once).
    fn request_sent(&self) {}
    /// The upstream's response head, as relayed to the client.
    fn response_head(
        &self,
        _status: u16,
        _headers: &HeaderMap,
        _length: Option<u64>,
        _upstream: Option<&UpstreamInfo>,
    ) {
    }
    /// sluice answered itself: a rule's answer (`error` None) or a failure.
    fn answered(
        &self,
        _status: u16,
        _headers: &HeaderMap,
        _error: Option<&str>,
        _body: Option<&Bytes>,
    ) {
    }
    /// The connection closes without an answer, for this reason.
    fn failed(&self, _why: &str) {}
    /// The request path is done with the exchange (0: closed unanswered).
    fn finished(&self, _status: u16) {}
}

/// The recording: a record built as the exchange goes (bodies arrive
/// through the body tap, [`Observers::tap`]).
pub struct Recording(Option<Arc<Exchange>>);

impl ExchangeObserver for Recording {
    fn request_head(&self, headers: &HeaderMap) {
        if let Some(ex) = &self.0 {
            ex.set_request_headers(headers);
        }
    }
    fn rules(&self, notes: &[Note]) {
        if let Some(ex) = &self.0 {
            ex.set_rules(notes);
        }
    }
    fn note(&self, kind: &'static str, note: &'static str) {
        if let Some(ex) = &self.0 {
            ex.note(kind, note);
        }
    }
    fn identified(&self, user: &str, authenticated: bool) {
        // Without --auth the "user" is the client IP, already recorded.
        if let (Some(ex), true) = (&self.0, authenticated) {
            ex.set_user(user);
        }
    }
    fn request_sent(&self) {
        if let Some(ex) = &self.0 {
            ex.request_done();
        }
    }
    fn response_head(
        &self,
        status: u16,
        headers: &HeaderMap,
        length: Option<u64>,
        upstream: Option<&UpstreamInfo>,
    ) {
        if let Some(ex) = &self.0 {
            ex.response_head(status, headers, length, upstream);
        }
    }
    fn answered(
        &self,
        status: u16,
        headers: &HeaderMap,
        error: Option<&str>,
        body: Option<&Bytes>,
    ) {
        if let Some(ex) = &self.0 {
            ex.answered(status, headers, error);
            if let Some(body) = body {
                ex.response_chunk(body);
            }
        }
    }
    fn failed(&self, why: &str) {
        if let Some(ex) = &self.0 {
            ex.fail(why);
        }
    }
}

/// The request metrics: count by method and status, time to first byte.
pub struct Counting {
    metrics: Arc<Metrics>,
    method: Method,
    started: Instant,
}

impl Counting {
    fn first_byte(&self) {
        self.metrics
            .ttfb_seconds
            .observe(self.started.elapsed().as_secs_f64());
    }
}

impl ExchangeObserver for Counting {
    fn response_head(&self, _: u16, _: &HeaderMap, _: Option<u64>, _: Option<&UpstreamInfo>) {
        self.first_byte();
    }
    fn answered(&self, _: u16, _: &HeaderMap, error: Option<&str>, _: Option<&Bytes>) {
        // A rule's answer is a response like any other; an error is not.
        if error.is_none() {
            self.first_byte();
        }
    }
    fn finished(&self, status: u16) {
        self.metrics.count_request(&self.method, status);
    }
}

/// Per-user accounting: requests and failures of the identified user.
pub struct Accounting {
    users: Arc<Users>,
    user: std::sync::OnceLock<String>,
}

impl ExchangeObserver for Accounting {
    fn identified(&self, user: &str, _: bool) {
        let _ = self.user.set(user.to_string());
    }
    fn finished(&self, status: u16) {
        // A close is no answer; an exchange refused before identification
        // has no user.
        if let (Some(user), true) = (self.user.get(), status != 0) {
            self.users.on_request(user, status >= 500);
        }
    }
}

/// Everyone who observes one exchange.
pub struct Observers {
    recording: Recording,
    counting: Counting,
    accounting: Accounting,
}

impl Observers {
    pub fn new(
        exchange: Option<Arc<Exchange>>,
        metrics: Arc<Metrics>,
        users: Arc<Users>,
        method: Method,
        started: Instant,
    ) -> Observers {
        Observers {
            recording: Recording(exchange),
            counting: Counting {
                metrics,
                method,
                started,
            },
            accounting: Accounting {
                users,
                user: std::sync::OnceLock::new(),
            },
        }
    }

    /// The capture tap the body phase feeds (bodies never pass through
    /// the observer events: they stream).
    pub fn tap(&self) -> Option<Arc<Exchange>> {
        self.recording.0.clone()
    }

    fn each(&self, f: impl Fn(&dyn ExchangeObserver)) {
        f(&self.recording);
        f(&self.counting);
        f(&self.accounting);
    }
}

impl ExchangeObserver for Observers {
    fn request_head(&self, headers: &HeaderMap) {
        self.each(|o| o.request_head(headers))
    }
    fn rules(&self, notes: &[Note]) {
        self.each(|o| o.rules(notes))
    }
    fn note(&self, kind: &'static str, note: &'static str) {
        self.each(|o| o.note(kind, note))
    }
    fn identified(&self, user: &str, authenticated: bool) {
        self.each(|o| o.identified(user, authenticated))
    }
    fn request_sent(&self) {
        self.each(|o| o.request_sent())
    }
    fn response_head(
        &self,
        status: u16,
        headers: &HeaderMap,
        length: Option<u64>,
        upstream: Option<&UpstreamInfo>,
    ) {
        self.each(|o| o.response_head(status, headers, length, upstream))
    }
    fn answered(
        &self,
        status: u16,
        headers: &HeaderMap,
        error: Option<&str>,
        body: Option<&Bytes>,
    ) {
        self.each(|o| o.answered(status, headers, error, body))
    }
    fn failed(&self, why: &str) {
        self.each(|o| o.failed(why))
    }
    fn finished(&self, status: u16) {
        self.each(|o| o.finished(status))
    }
}
