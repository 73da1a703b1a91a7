//! Applying a rule [`Plan`] on the forward HTTP path: the answers sluice
//! gives without the upstream (block, redirect, CORS preflight, mock),
//! the response-head edits, body replacement and substitution, and the
//! explanation that goes into the record.
//!
//! Invariants: a request that no rule matched never reaches this module;
//! a response body is buffered only when `body://` or `bodySub://`
//! applies, and never past [`MAX_BODY`]: a larger or undecodable body
//! passes through unchanged, with a note in the record.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use super::answer::ProxyBody;
use super::body::BoxError;
use crate::rules::{
    apply_cors, apply_header_edits, cors_preflight_headers, Answer, Applied, Block, Plan, RuleId,
    MAX_BODY,
};

/// One line of a record's `rules`: a rule, the action it applied, and
/// (when it could not apply) why.
#[derive(Debug, Clone, Serialize)]
pub struct Note {
    pub rule: RuleId,
    pub kind: &'static str,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the record says about a plan: every chosen action, then the
/// rules that matched without supplying any (kind `matched`).
pub fn notes(plan: &Plan<'_>) -> Vec<Note> {
    let mut out: Vec<Note> = plan
        .describe()
        .into_iter()
        .map(|Applied { rule, kind, action }| Note {
            rule,
            kind,
            action,
            note: None,
        })
        .collect();
    for id in &plan.matched {
        if !out.iter().any(|n| n.rule == *id) {
            out.push(Note {
                rule: *id,
                kind: "matched",
                action: String::new(),
                note: None,
            });
        }
    }
    out
}

/// Adds a note to the entry of `kind`.
pub fn add_note(notes: &mut [Note], kind: &str, note: String) {
    if let Some(n) = notes.iter_mut().find(|n| n.kind == kind) {
        n.note = Some(note);
    }
}

/// A finished body from bytes.
pub fn full(body: Bytes) -> ProxyBody {
    Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The head and body of an answer sluice gives without the upstream.
/// `None` for `block://close`, which has no answer.
pub fn answer(answer: Answer<'_>, request: &HeaderMap) -> Option<(http::response::Parts, Bytes)> {
    let (status, mut headers, body) = match answer {
        Answer::Block(c) => match c.action {
            Block::Close => return None,
            Block::Status(s) => {
                let text = format!("blocked by sluice rule {}\n", c.rule);
                let mut h = HeaderMap::new();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                (s, h, Bytes::from(text))
            }
        },
        Answer::Redirect(c) => {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&c.action.location) {
                h.insert(header::LOCATION, v);
            }
            (c.action.status, h, Bytes::new())
        }
        Answer::Preflight(c) => (
            StatusCode::NO_CONTENT,
            cors_preflight_headers(c.action, request),
            Bytes::new(),
        ),
        Answer::Mock(c) => {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, c.action.content_type.clone());
            (c.action.status, h, c.action.body.clone())
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.headers = headers;
    Some((parts, body))
}

/// `status://`, `resHeaders://` and CORS headers on a response head
/// (`request`: the client's request headers, for `Origin`).
pub fn edit_response_head(plan: &Plan<'_>, request: &HeaderMap, parts: &mut http::response::Parts) {
    if let Some(s) = plan.status {
        parts.status = s.action;
    }
    apply_header_edits(
        &mut parts.headers,
        plan.res_headers.iter().map(|c| c.action),
    );
    if let Some(c) = plan.cors {
        apply_cors(c.action, request, &mut parts.headers);
    }
}

/// Whether the response body must be buffered for `body://`/`bodySub://`.
pub fn edits_body(plan: &Plan<'_>) -> bool {
    plan.body_sub.is_some()
        || matches!(
            plan.response,
            Some(crate::rules::Chosen {
                action: crate::rules::ResponseBody::Replace(_),
                ..
            })
        )
}

/// The new body for a response whose (complete, still encoded) body is
/// `body`: `body://` then `bodySub://`. `Err`: pass the original through
/// unchanged, and why.
pub fn rewrite_body(plan: &Plan<'_>, headers: &HeaderMap, body: Bytes) -> Result<Bytes, String> {
    let mut current = match plan.response {
        Some(crate::rules::Chosen {
            action: crate::rules::ResponseBody::Replace(b),
            ..
        }) => b.clone(),
        _ => body,
    };
    let replaced = plan
        .response
        .is_some_and(|c| matches!(c.action, crate::rules::ResponseBody::Replace(_)));
    if let Some(sub) = plan.body_sub {
        if !replaced {
            if let Some(enc) = encoding(headers) {
                let decoded = crate::record::decode::decode(&enc, &current, MAX_BODY)
                    .map_err(|e| format!("bodySub skipped: cannot decode the {enc} body: {e}"))?;
                if decoded.truncated {
                    return Err(format!(
                        "bodySub skipped: the decoded body is over the {MAX_BODY}-byte limit"
                    ));
                }
                current = Bytes::from(decoded.data);
            }
        }
        current = Bytes::from(
            sub.action
                .apply(&current, MAX_BODY)
                .map_err(|e| format!("bodySub skipped: {e}"))?,
        );
    }
    Ok(current)
}

/// The response's content coding, when it has one other than identity.
fn encoding(headers: &HeaderMap) -> Option<String> {
    let v = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let v = v.trim();
    (!v.is_empty() && !v.eq_ignore_ascii_case("identity")).then(|| v.to_string())
}

/// A new identity-encoded body's framing headers.
pub fn set_identity_length(headers: &mut HeaderMap, len: usize) {
    headers.remove(header::CONTENT_ENCODING);
    headers.remove(header::TRANSFER_ENCODING);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
}

/// Reads `body` whole, up to `cap` bytes. `Ok`: all of it; `Err`: what
/// was read (over the cap, or before a failure) and the rest, to stream
/// on unchanged.
pub async fn collect_capped<B>(mut body: B, cap: usize) -> Result<Bytes, Prefixed<B>>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut prefix = VecDeque::new();
    let mut total = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => {
                    total += d.len();
                    prefix.push_back(d);
                    if total > cap {
                        return Err(Prefixed::new(prefix, body));
                    }
                }
                // Trailers: not ours to rewrite; stream as is.
                Err(_) => return Err(Prefixed::new(prefix, body)),
            },
            Some(Err(e)) => {
                let mut p = Prefixed::new(prefix, body);
                p.error = Some(e);
                return Err(p);
            }
        }
    }
    let mut all = BytesMut::with_capacity(total);
    for d in prefix {
        all.extend_from_slice(&d);
    }
    Ok(all.freeze())
}

/// Frames already read, then the rest of the body.
pub struct Prefixed<B: Body> {
    prefix: VecDeque<Bytes>,
    error: Option<B::Error>,
    inner: B,
}

impl<B: Body> Prefixed<B> {
    fn new(prefix: VecDeque<Bytes>, inner: B) -> Self {
        Prefixed {
            prefix,
            error: None,
            inner,
        }
    }
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(d) = this.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        if let Some(e) = this.error.take() {
            return Poll::Ready(Some(Err(e.into())));
        }
        Pin::new(&mut this.inner)
            .poll_frame(cx)
            .map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.error.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let held: u64 = self.prefix.iter().map(|d| d.len() as u64).sum();
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(u) = inner.upper() {
            hint.set_upper(u + held);
        }
        hint
    }
}

/// Whether the request is a CORS preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    crate::rules::is_preflight(method, headers)
}
