//! [`Plan`]: what the rules decided for one request, with the rule that
//! supplied each action, and [`Applied`], its explanation for records and
//! the test API.
//!
//! Invariants: for each action kind the plan holds the action of the
//! first matching rule (file order) that has one; header edits are
//! decided per header name the same way; a CONNECT plan holds only the
//! kinds that apply to tunnels (upstream, block, delay, throttles,
//! intercept), and `intercept` is decided for CONNECT plans only (a plain
//! request has no TLS to decrypt), while `matched` lists every rule that
//! matched either way.

use std::time::Duration;

use http::StatusCode;
use serde::Serialize;

use super::actions::{
    ActionKind, Block, HeaderEdit, Intercept, Rate, Redirect, Upstream, UrlRewrite,
};
use super::body::{BodySub, Mock, ResponseBody};
use super::cors::Cors;
use super::id::RuleId;
use super::rule::Rule;
use super::syntax::Pattern;
use super::ws::{WsDrop, WsSub};

/// An action and the rule it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chosen<T> {
    pub rule: RuleId,
    pub action: T,
}

/// The decision for one request. Borrowed from the [`RuleSet`](super::RuleSet)
/// (keep the set alive while the request runs).
#[derive(Debug, Clone, Default)]
pub struct Plan<'a> {
    /// Every rule that matched, in file order.
    pub matched: Vec<RuleId>,
    pub upstream: Option<Chosen<&'a Upstream>>,
    /// With the rule's captures expanded.
    pub url: Option<Chosen<UrlRewrite>>,
    /// With the rule's captures expanded.
    pub redirect: Option<Chosen<Redirect>>,
    /// In the order to apply them.
    pub req_headers: Vec<Chosen<&'a HeaderEdit>>,
    pub res_headers: Vec<Chosen<&'a HeaderEdit>>,
    pub status: Option<Chosen<StatusCode>>,
    pub response: Option<Chosen<&'a ResponseBody>>,
    pub body_sub: Option<Chosen<&'a BodySub>>,
    pub delay: Option<Chosen<Duration>>,
    pub res_delay: Option<Chosen<Duration>>,
    /// Response (download) direction.
    pub throttle: Option<Chosen<&'a Rate>>,
    /// Request (upload) direction.
    pub req_throttle: Option<Chosen<&'a Rate>>,
    pub block: Option<Chosen<Block>>,
    pub cors: Option<Chosen<&'a Cors>>,
    /// Whether to decrypt the tunnel's TLS; CONNECT plans only. None: no
    /// rule decided.
    pub intercept: Option<Chosen<Intercept>>,
    /// For a request that becomes a WebSocket: its messages dropped or
    /// rewritten.
    pub ws_drop: Option<Chosen<&'a WsDrop>>,
    pub ws_sub: Option<Chosen<&'a WsSub>>,
}

/// An answer sluice gives itself, without the upstream, in precedence order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer<'p> {
    Block(Chosen<Block>),
    Redirect(Chosen<&'p Redirect>),
    /// Answer the CORS preflight with 204 (see `cors_preflight_headers`).
    Preflight(Chosen<&'p Cors>),
    Mock(Chosen<&'p Mock>),
}

/// One applied action, explained: for records and `/api/rules/test`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub rule: RuleId,
    pub kind: &'static str,
    /// The action in rule syntax, e.g. `status://404`.
    pub action: String,
}

fn fill<T>(slot: &mut Option<Chosen<T>>, rule: RuleId, action: Option<T>) {
    if slot.is_none() {
        if let Some(action) = action {
            *slot = Some(Chosen { rule, action });
        }
    }
}

/// Adds a rule's edits for the header names no earlier rule edited.
fn add_header_edits<'a>(
    out: &mut Vec<Chosen<&'a HeaderEdit>>,
    rule: RuleId,
    edits: &'a [HeaderEdit],
) {
    let decided = out.len();
    for edit in edits {
        if !out[..decided]
            .iter()
            .any(|c| c.action.name() == edit.name())
        {
            out.push(Chosen { rule, action: edit });
        }
    }
}

impl<'a> Plan<'a> {
    /// Folds in a matching rule (rules arrive in file order). `url` is the
    /// full URL regex rules were matched against, when there are any.
    pub(crate) fn add(&mut self, rule: &'a Rule, connect: bool, url: Option<&str>) {
        let id = rule.id;
        let a = &rule.actions;
        self.matched.push(id);
        fill(&mut self.upstream, id, a.upstream.as_ref());
        fill(&mut self.block, id, a.block);
        fill(&mut self.delay, id, a.delay);
        fill(&mut self.throttle, id, a.throttle.as_ref());
        fill(&mut self.req_throttle, id, a.req_throttle.as_ref());
        if connect {
            fill(&mut self.intercept, id, a.intercept);
            return;
        }
        let wants_url = self.url.is_none() && a.url.is_some();
        let wants_redirect = self.redirect.is_none() && a.redirect.is_some();
        if wants_url || wants_redirect {
            let caps = match (&rule.pattern, url) {
                (Pattern::Regex { regex, .. }, Some(url)) => regex.captures(url),
                _ => None,
            };
            if wants_url {
                fill(
                    &mut self.url,
                    id,
                    a.url.as_ref().map(|t| t.expand(caps.as_ref())),
                );
            }
            if wants_redirect {
                let redirect = a.redirect.as_ref().map(|r| Redirect {
                    status: r.status,
                    location: r.location.expand(caps.as_ref()),
                });
                fill(&mut self.redirect, id, redirect);
            }
        }
        add_header_edits(&mut self.req_headers, id, &a.req_headers);
        add_header_edits(&mut self.res_headers, id, &a.res_headers);
        fill(&mut self.status, id, a.status);
        fill(&mut self.response, id, a.response.as_ref());
        fill(&mut self.body_sub, id, a.body_sub.as_ref());
        fill(&mut self.res_delay, id, a.res_delay);
        fill(&mut self.cors, id, a.cors.as_ref());
        fill(&mut self.ws_drop, id, a.ws_drop.as_ref());
        fill(&mut self.ws_sub, id, a.ws_sub.as_ref());
    }

    /// True when no rule matched (a rule that only decides interception
    /// matched too: its tunnel is recorded with it).
    pub fn is_empty(&self) -> bool {
        self.matched.is_empty()
    }

    /// The answer sluice gives without the upstream, if any: block, then
    /// redirect, then a CORS preflight (`is_preflight`: the request is
    /// one, see `cors::is_preflight`), then mock.
    pub fn answer(&self, is_preflight: bool) -> Option<Answer<'_>> {
        if let Some(b) = self.block {
            return Some(Answer::Block(b));
        }
        if let Some(r) = &self.redirect {
            return Some(Answer::Redirect(Chosen {
                rule: r.rule,
                action: &r.action,
            }));
        }
        if let (true, Some(c)) = (is_preflight, self.cors) {
            return Some(Answer::Preflight(c));
        }
        match self.response {
            Some(Chosen {
                rule,
                action: ResponseBody::Mock(m),
            }) => Some(Answer::Mock(Chosen { rule, action: m })),
            _ => None,
        }
    }

    /// Every chosen action in rule syntax, grouped by kind in the order
    /// of [`ActionKind`].
    pub fn describe(&self) -> Vec<Applied> {
        let mut out = Vec::new();
        let mut push = |rule: RuleId, kind: ActionKind, action: String| {
            out.push(Applied {
                rule,
                kind: kind.name(),
                action,
            })
        };
        if let Some(c) = &self.upstream {
            push(
                c.rule,
                ActionKind::Upstream,
                format!("upstream://{}", c.action),
            );
        }
        if let Some(c) = &self.url {
            push(c.rule, ActionKind::Url, format!("url://{}", c.action));
        }
        if let Some(c) = &self.redirect {
            let op = if c.action.status == StatusCode::MOVED_PERMANENTLY {
                "redirect301"
            } else {
                "redirect"
            };
            push(
                c.rule,
                ActionKind::Redirect,
                format!("{op}://{}", c.action.location),
            );
        }
        for c in &self.req_headers {
            push(
                c.rule,
                ActionKind::ReqHeaders,
                format!("reqHeaders://{}", c.action),
            );
        }
        for c in &self.res_headers {
            push(
                c.rule,
                ActionKind::ResHeaders,
                format!("resHeaders://{}", c.action),
            );
        }
        if let Some(c) = &self.status {
            push(
                c.rule,
                ActionKind::Status,
                format!("status://{}", c.action.as_u16()),
            );
        }
        if let Some(c) = &self.response {
            let text = match c.action {
                ResponseBody::Mock(m) => format!(
                    "mock://{} ({} bytes, {})",
                    m.status.as_u16(),
                    m.body.len(),
                    String::from_utf8_lossy(m.content_type.as_bytes())
                ),
                ResponseBody::Replace(b) => format!("body:// ({} bytes)", b.len()),
            };
            push(c.rule, ActionKind::Response, text);
        }
        if let Some(c) = &self.body_sub {
            push(
                c.rule,
                ActionKind::BodySub,
                format!("bodySub://{}", c.action),
            );
        }
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        if let Some(c) = &self.delay {
            push(
                c.rule,
                ActionKind::Delay,
                format!("delay://{}", duration(c.action)),
            );
        }
        if let Some(c) = &self.res_delay {
            push(
                c.rule,
                ActionKind::ResDelay,
                format!("resDelay://{}", duration(c.action)),
            );
        }
        if let Some(c) = &self.throttle {
            push(
                c.rule,
                ActionKind::Throttle,
                format!("throttle://{}", c.action),
            );
        }
        if let Some(c) = &self.req_throttle {
            push(
                c.rule,
                ActionKind::ReqThrottle,
                format!("reqThrottle://{}", c.action),
            );
        }
        if let Some(c) = &self.block {
            push(c.rule, ActionKind::Block, format!("block://{}", c.action));
        }
        if let Some(c) = &self.cors {
            push(c.rule, ActionKind::Cors, format!("cors://{}", c.action));
        }
        if let Some(c) = &self.intercept {
            push(c.rule, ActionKind::Intercept, c.action.to_string());
        }
        if let Some(c) = &self.ws_drop {
            push(c.rule, ActionKind::WsDrop, format!("wsDrop://{}", c.action));
        }
        if let Some(c) = &self.ws_sub {
            push(c.rule, ActionKind::WsSub, format!("wsSub://{}", c.action));
        }
        out
    }
}
