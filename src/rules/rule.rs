//! One compiled rule: what it matches ([`Pattern`], methods, clients), its
//! merged [`Actions`], and [`compile`] from a parsed [`RuleSpec`]; plus
//! [`RequestInfo`], what rules look at in a request.
//!
//! Invariants: a [`Rule`] holds at most one action of each kind (header
//! edits excepted) and its `bodyFile://` already read; [`Rule::admits`] is
//! pure and checks what the [`RuleSet`](super::RuleSet) index leaves
//! (port, path, method, client).

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::actions::{Block, HeaderEdit, Intercept, Rate, RedirectSpec, Upstream, UrlTarget};
use super::body::{default_content_type, BodySub, Mock, ResponseBody};
use super::cors::Cors;
use super::files::FileRoot;
use super::id::{RuleError, RuleId};
use super::syntax::{Cidr, ParsedAction, Pattern, RuleSpec};
use super::ws::{WsDrop, WsSub};

/// How the client asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// An absolute-form `http://` request.
    Http,
    /// A CONNECT tunnel to `host:port`.
    Connect,
}

/// What the rules look at in a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'r> {
    pub method: &'r str,
    pub scheme: Scheme,
    /// As the client gave it (any case, IPv6 with or without brackets).
    pub host: &'r str,
    /// The effective port: 80 for `http://` without one, the CONNECT port.
    pub port: u16,
    /// `/path?query` (empty for CONNECT).
    pub path_and_query: &'r str,
    pub client: IpAddr,
}

/// The actions of one rule, merged from its specs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Actions {
    pub upstream: Option<Upstream>,
    pub url: Option<UrlTarget>,
    pub redirect: Option<RedirectSpec>,
    pub req_headers: Vec<HeaderEdit>,
    pub res_headers: Vec<HeaderEdit>,
    pub status: Option<StatusCode>,
    pub response: Option<ResponseBody>,
    pub body_sub: Option<BodySub>,
    pub delay: Option<Duration>,
    pub res_delay: Option<Duration>,
    pub throttle: Option<Rate>,
    pub req_throttle: Option<Rate>,
    pub block: Option<Block>,
    pub cors: Option<Cors>,
    pub intercept: Option<Intercept>,
    pub ws_drop: Option<WsDrop>,
    pub ws_sub: Option<WsSub>,
}

#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub id: RuleId,
    pub text: String,
    pub pattern: Pattern,
    pub methods: Box<[String]>,
    pub clients: Box<[Cidr]>,
    pub actions: Actions,
}

impl Rule {
    /// The checks the index leaves: port, path, method and client.
    pub(crate) fn admits(&self, req: &RequestInfo<'_>) -> bool {
        if let Pattern::Host { port, path, .. } = &self.pattern {
            if port.is_some_and(|p| p != req.port) {
                return false;
            }
            if let Some(prefix) = path {
                if req.scheme == Scheme::Connect || !req.path_and_query.starts_with(prefix.as_str())
                {
                    return false;
                }
            }
        }
        (self.methods.is_empty()
            || self
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(req.method)))
            && (self.clients.is_empty() || self.clients.iter().any(|c| c.contains(req.client)))
    }
}

/// Compiles one parsed rule: merges its actions and reads its
/// `bodyFile://` below `files`. Every error of the rule is reported.
pub(crate) fn compile(spec: RuleSpec, files: &FileRoot) -> Result<Rule, Vec<RuleError>> {
    let line = spec.id.line();
    let mut errors = Vec::new();
    let mut a = Actions::default();
    let mut mock: Option<(StatusCode, usize)> = None;
    let mut body: Option<Bytes> = None;
    for action in spec.actions {
        match action.action {
            ParsedAction::Upstream(u) => a.upstream = Some(u),
            ParsedAction::Url(u) => a.url = Some(u),
            ParsedAction::Redirect(r) => a.redirect = Some(r),
            ParsedAction::ReqHeader(e) => a.req_headers.push(e),
            ParsedAction::ResHeader(e) => a.res_headers.push(e),
            ParsedAction::Status(s) => a.status = Some(s),
            ParsedAction::Mock(s) => mock = Some((s, action.col)),
            ParsedAction::Body(b) => body = Some(b),
            ParsedAction::BodyFile(path) => match files.read(&path) {
                Ok(b) => body = Some(b),
                Err(message) => errors.push(RuleError::new(line, action.col, message)),
            },
            ParsedAction::BodySub(s) => a.body_sub = Some(s),
            ParsedAction::Delay(d) => a.delay = Some(d),
            ParsedAction::ResDelay(d) => a.res_delay = Some(d),
            ParsedAction::Throttle(r) => a.throttle = Some(r),
            ParsedAction::ReqThrottle(r) => a.req_throttle = Some(r),
            ParsedAction::Block(b) => a.block = Some(b),
            ParsedAction::Cors(c) => a.cors = Some(c),
            ParsedAction::Intercept(i) => a.intercept = Some(i),
            ParsedAction::WsDrop(d) => a.ws_drop = Some(d),
            ParsedAction::WsSub(s) => a.ws_sub = Some(s),
        }
    }
    a.response = match (mock, body) {
        (Some((status, col)), body) => {
            let body = body.unwrap_or_default();
            if !body.is_empty() && matches!(status.as_u16(), 204 | 205 | 304) {
                errors.push(RuleError::new(
                    line,
                    col,
                    format!("a {} answer cannot have a body", status.as_u16()),
                ));
            }
            Some(ResponseBody::Mock(Mock {
                status,
                content_type: default_content_type(&body),
                body,
            }))
        }
        (None, Some(body)) => Some(ResponseBody::Replace(body)),
        (None, None) => None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Rule {
        id: spec.id,
        text: spec.text,
        pattern: spec.pattern,
        methods: spec.methods.into(),
        clients: spec.clients.into(),
        actions: a,
    })
}
