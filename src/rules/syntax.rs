//! Parses rule-file text into [`RuleSpec`]s: one rule per line,
//! `MATCH [CONDITION...] ACTION [ACTION...]` (the language is described
//! in the [`rules`](super) module docs).
//!
//! Owns the grammar: which token is a MATCH, a condition or an action,
//! and the per-rule checks (at most one action of each kind per rule,
//! except header edits; capture references that exist; interception only
//! on rules that can match a CONNECT). Value syntax lives with the value
//! types in `actions`; tokens come from `lexer`.
//!
//! Invariants: every error of the text is reported, each with its 1-based
//! line and character column, and a text with any error yields no specs;
//! parsing never panics and does no I/O (a `bodyFile://` path is only
//! checked to be relative and free of `..` here; it is read, confined to
//! its folder, when the set is compiled); the regexes of one text stay
//! within one compile budget (`budget`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use super::actions::{
    check_url_chars, parse_delay, parse_status, regex_message, split_host_port, valid_host,
    ActionKind, Block, HeaderEdit, Intercept, Rate, RedirectSpec, Upstream, UrlTarget, ValueError,
    MAX_BODY,
};
use super::body::BodySub;
use super::budget::{self, RegexBudget};
use super::cors::Cors;
use super::id::{RuleError, RuleId};
use super::lexer::{tokenize, Token};
use super::template::{Groups, Template, TemplateError};
use super::ws::{WsDrop, WsSub};

/// One parsed rule.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    pub id: RuleId,
    /// The line as written, trimmed.
    pub text: String,
    pub pattern: Pattern,
    /// Upper-case method names; empty means any method.
    pub methods: Vec<String>,
    /// Client address ranges; empty means any client.
    pub clients: Vec<Cidr>,
    /// In the order written.
    pub actions: Vec<ActionSpec>,
}

/// What a rule matches.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// `host`, `host:port`, `*.suffix`, `*`, each optionally with `/path` prefix.
    Host {
        host: HostPattern,
        port: Option<u16>,
        /// Prefix of the path and query, case-sensitive; such a rule never
        /// matches a CONNECT.
        path: Option<String>,
    },
    /// `/regex/` or `/regex/i` over the full URL (`host:port` for CONNECT).
    Regex {
        regex: regex::Regex,
        /// The regex as written between the slashes.
        pattern: String,
        case_insensitive: bool,
    },
}

/// The host part of a [`Pattern::Host`], lower-case, without brackets or
/// a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` is stored as `example.com`: any subdomain at any
    /// depth, never the apex.
    Suffix(String),
    /// `*`.
    Any,
}

/// `client:ADDR` or `client:NET/BITS`, IPv4 or IPv6. IPv4-mapped IPv6
/// addresses (`::ffff:10.1.2.3`) are compared as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr = addr
            .parse::<IpAddr>()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR range"))?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("invalid prefix length in `{s}` (0-{max})")),
            },
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let p = u32::from(self.prefix);
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - p).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - p).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// One action of a rule, with the column it was written at.
#[derive(Debug, Clone)]
pub struct ActionSpec {
    pub col: usize,
    pub action: ParsedAction,
}

/// An action as written; `mock://`, `body://` and `bodyFile://` are
/// merged into one response action when the set is compiled.
#[derive(Debug, Clone)]
pub enum ParsedAction {
    Upstream(Upstream),
    Url(UrlTarget),
    Redirect(RedirectSpec),
    ReqHeader(HeaderEdit),
    ResHeader(HeaderEdit),
    Status(StatusCode),
    Mock(StatusCode),
    Body(Bytes),
    BodyFile(PathBuf),
    BodySub(BodySub),
    Delay(Duration),
    ResDelay(Duration),
    Throttle(Rate),
    ReqThrottle(Rate),
    Block(Block),
    Cors(Cors),
    /// `intercept://[insecure]` or `passthrough://`.
    Intercept(Intercept),
    WsDrop(WsDrop),
    WsSub(WsSub),
}

impl ParsedAction {
    pub fn kind(&self) -> ActionKind {
        match self {
            ParsedAction::Upstream(_) => ActionKind::Upstream,
            ParsedAction::Url(_) => ActionKind::Url,
            ParsedAction::Redirect(_) => ActionKind::Redirect,
            ParsedAction::ReqHeader(_) => ActionKind::ReqHeaders,
            ParsedAction::ResHeader(_) => ActionKind::ResHeaders,
            ParsedAction::Status(_) => ActionKind::Status,
            ParsedAction::Mock(_) | ParsedAction::Body(_) | ParsedAction::BodyFile(_) => {
                ActionKind::Response
            }
            ParsedAction::BodySub(_) => ActionKind::BodySub,
            ParsedAction::Delay(_) => ActionKind::Delay,
            ParsedAction::ResDelay(_) => ActionKind::ResDelay,
            ParsedAction::Throttle(_) => ActionKind::Throttle,
            ParsedAction::ReqThrottle(_) => ActionKind::ReqThrottle,
            ParsedAction::Block(_) => ActionKind::Block,
            ParsedAction::Cors(_) => ActionKind::Cors,
            ParsedAction::Intercept(_) => ActionKind::Intercept,
            ParsedAction::WsDrop(_) => ActionKind::WsDrop,
            ParsedAction::WsSub(_) => ActionKind::WsSub,
        }
    }

    /// The name that may appear once per rule (header edits: none).
    fn once_key(&self) -> Option<&'static str> {
        match self {
            ParsedAction::ReqHeader(_) | ParsedAction::ResHeader(_) => None,
            ParsedAction::Mock(_) => Some("mock"),
            ParsedAction::Body(_) | ParsedAction::BodyFile(_) => Some("body/bodyFile"),
            ParsedAction::Intercept(_) => Some("intercept/passthrough"),
            other => Some(other.kind().name()),
        }
    }
}

/// The action names, as written before `://` (compared case-insensitively).
/// The last, `host`, is an alias of `upstream` that error messages leave
/// out of their list of known actions.
pub const ACTION_NAMES: [&str; 22] = [
    "upstream",
    "url",
    "redirect",
    "redirect301",
    "reqHeaders",
    "resHeaders",
    "status",
    "mock",
    "body",
    "bodyFile",
    "bodySub",
    "delay",
    "resDelay",
    "throttle",
    "reqThrottle",
    "block",
    "cors",
    "intercept",
    "passthrough",
    "wsDrop",
    "wsSub",
    "host",
];

/// Parses a whole rule file. All errors, in line order, or the rules.
pub fn parse(text: &str) -> Result<Vec<RuleSpec>, Vec<RuleError>> {
    let (specs, errors) = parse_partial(text);
    if errors.is_empty() {
        Ok(specs)
    } else {
        Err(errors)
    }
}

/// The rules of the lines without errors, and the errors of the others.
pub(crate) fn parse_partial(text: &str) -> (Vec<RuleSpec>, Vec<RuleError>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut specs = Vec::new();
    let mut errors = Vec::new();
    let mut budget = RegexBudget::default();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        match tokenize(line) {
            Err(e) => errors.push(RuleError::new(number, e.col, e.message)),
            Ok(tokens) if tokens.is_empty() => {}
            Ok(tokens) => match parse_rule(number, line, &tokens) {
                Ok(spec) => match charge(&mut budget, &spec, tokens[0].col) {
                    // A rule over budget is dropped at once, so the
                    // compiled regexes held never exceed the budget.
                    Ok(()) => specs.push(spec),
                    Err(e) => errors.push(e),
                },
                Err(mut errs) => errors.append(&mut errs),
            },
        }
    }
    (specs, errors)
}

/// Charges `spec`'s regexes (its MATCH at `match_col`, its `bodySub://`,
/// `wsSub://`, `wsDrop://`)
/// to the file's budget.
fn charge(budget: &mut RegexBudget, spec: &RuleSpec, match_col: usize) -> Result<(), RuleError> {
    let line = spec.id.line();
    if let Pattern::Regex {
        pattern,
        case_insensitive,
        ..
    } = &spec.pattern
    {
        budget
            .charge(pattern, *case_insensitive)
            .map_err(|m| RuleError::new(line, match_col + 1, m))?;
    }
    for a in &spec.actions {
        let (regex, case_insensitive) = match &a.action {
            ParsedAction::BodySub(sub) => (&sub.regex, sub.case_insensitive),
            ParsedAction::WsSub(ws) => (&ws.sub.regex, ws.sub.case_insensitive),
            ParsedAction::WsDrop(ws) => (&ws.regex, ws.case_insensitive),
            _ => continue,
        };
        budget
            .charge(regex.as_str(), case_insensitive)
            .map_err(|m| RuleError::new(line, a.col, m))?;
    }
    Ok(())
}

fn parse_rule(line: usize, text: &str, tokens: &[Token]) -> Result<RuleSpec, Vec<RuleError>> {
    let mut errors = Vec::new();
    let Some((first, rest)) = tokens.split_first() else {
        return Err(errors);
    };
    let pattern = match parse_pattern(&first.text) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(RuleError::new(line, first.col + e.offset, e.message));
            None
        }
    };
    let groups = match &pattern {
        Some(Pattern::Regex { regex, .. }) => Groups::of(regex),
        Some(Pattern::Host { .. }) => Groups::None,
        None => Groups::Unknown,
    };
    let mut methods: Option<(Vec<String>, usize)> = None;
    let mut clients: Option<(Vec<Cidr>, usize)> = None;
    let mut actions = Vec::new();
    for tok in rest {
        if let Some(v) = strip_prefix_ci(&tok.text, "method:") {
            condition(line, tok, v, parse_method, &mut methods, &mut errors);
        } else if let Some(v) = strip_prefix_ci(&tok.text, "client:") {
            condition(line, tok, v, Cidr::parse, &mut clients, &mut errors);
        } else {
            match parse_action(tok, &groups) {
                Ok(a) => actions.push(a),
                Err((col, message)) => errors.push(RuleError::new(line, col, message)),
            }
        }
    }
    check_once_per_rule(line, &actions, &mut errors);
    if let Some(pattern) = &pattern {
        let methods = methods.as_ref().map_or(&[][..], |m| &m.0[..]);
        check_intercept_meets_connect(line, pattern, methods, &actions, &mut errors);
    }
    if actions.is_empty() && errors.is_empty() {
        errors.push(RuleError::new(
            line,
            first.col,
            "this rule has no action (e.g. `example.com 127.0.0.1:8080` or `example.com status://404`)",
        ));
    }
    match pattern {
        Some(pattern) if errors.is_empty() => Ok(RuleSpec {
            id: RuleId(u32::try_from(line).unwrap_or(u32::MAX)),
            text: text.trim().to_owned(),
            pattern,
            methods: methods.map(|m| m.0).unwrap_or_default(),
            clients: clients.map(|c| c.0).unwrap_or_default(),
            actions,
        }),
        _ => Err(errors),
    }
}

/// Parses a `method:` or `client:` condition (`value` is what follows
/// the colon) into `slot`, once per rule.
fn condition<T>(
    line: usize,
    tok: &Token,
    value: &str,
    item: fn(&str) -> Result<T, String>,
    slot: &mut Option<(Vec<T>, usize)>,
    errors: &mut Vec<RuleError>,
) {
    // "method:" and "client:" are both 7 characters long.
    let name = &tok.text[..6];
    if let Some((_, first)) = slot {
        errors.push(RuleError::new(
            line,
            tok.col,
            format!("a second `{name}:` condition (the first is at column {first}): list the values with commas instead"),
        ));
        return;
    }
    match parse_list(value, item) {
        Ok(values) => *slot = Some((values, tok.col)),
        Err(e) => errors.push(RuleError::new(line, tok.col + 7 + e.offset, e.message)),
    }
}

/// Parses a comma-separated list, each item with `item`.
fn parse_list<T>(value: &str, item: fn(&str) -> Result<T, String>) -> Result<Vec<T>, ValueError> {
    let mut out = Vec::new();
    let mut offset = 0;
    for part in value.split(',') {
        if part.is_empty() {
            return Err(ValueError {
                offset,
                message: "empty item in a comma-separated list".into(),
            });
        }
        out.push(item(part).map_err(|message| ValueError { offset, message })?);
        offset += part.chars().count() + 1;
    }
    Ok(out)
}

fn parse_method(s: &str) -> Result<String, String> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if s.bytes().all(tchar) {
        Ok(s.to_ascii_uppercase())
    } else {
        Err(format!("`{s}` is not a method name"))
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Each action kind once per rule (header edits excepted), and no body
/// for a status that cannot have one.
fn check_once_per_rule(line: usize, actions: &[ActionSpec], errors: &mut Vec<RuleError>) {
    let mut seen: Vec<(&'static str, usize)> = Vec::new();
    for a in actions {
        let Some(key) = a.action.once_key() else {
            continue;
        };
        match seen.iter().find(|(k, _)| *k == key) {
            Some((_, first)) if matches!(a.action, ParsedAction::Intercept(_)) => {
                errors.push(RuleError::new(
                    line,
                    a.col,
                    format!("this rule already decides interception at column {first}: a rule has one of intercept://, intercept://insecure or passthrough://"),
                ))
            }
            Some((_, first)) => errors.push(RuleError::new(
                line,
                a.col,
                format!("a second `{key}` action in this rule (the first is at column {first}); only reqHeaders and resHeaders may repeat"),
            )),
            None => seen.push((key, a.col)),
        }
    }
    let mock = actions.iter().find_map(|a| match a.action {
        ParsedAction::Mock(s) => Some((s, a.col)),
        _ => None,
    });
    let has_body = actions
        .iter()
        .any(|a| matches!(&a.action, ParsedAction::Body(b) if !b.is_empty()));
    if let Some((status, col)) = mock {
        if has_body && matches!(status.as_u16(), 204 | 205 | 304) {
            errors.push(RuleError::new(
                line,
                col,
                format!("a {} answer cannot have a body", status.as_u16()),
            ));
        }
    }
}

/// `intercept://` and `passthrough://` decide for CONNECT tunnels only:
/// on a rule that can never match a CONNECT (a MATCH with a path, a
/// `method:` list without CONNECT) they would be silently dead, so they
/// are an error instead.
fn check_intercept_meets_connect(
    line: usize,
    pattern: &Pattern,
    methods: &[String],
    actions: &[ActionSpec],
    errors: &mut Vec<RuleError>,
) {
    let Some((col, intercept)) = actions.iter().find_map(|a| match a.action {
        ParsedAction::Intercept(i) => Some((a.col, i)),
        _ => None,
    }) else {
        return;
    };
    let why = if matches!(pattern, Pattern::Host { path: Some(_), .. }) {
        "a MATCH with a /path never matches a CONNECT: write the host alone"
    } else if !methods.is_empty() && !methods.iter().any(|m| m == "CONNECT") {
        "this rule's method: list leaves out CONNECT"
    } else {
        return;
    };
    errors.push(RuleError::new(
        line,
        col,
        format!("`{intercept}` applies to CONNECT tunnels, and {why}"),
    ));
}

fn parse_pattern(text: &str) -> Result<Pattern, ValueError> {
    if let Some(body) = text.strip_prefix('/') {
        let (re, case_insensitive) = if let Some(r) = body.strip_suffix("/i") {
            (r, true)
        } else if let Some(r) = body.strip_suffix('/') {
            (r, false)
        } else {
            return Err("a /regex/ MATCH must end with `/` or `/i`"
                .to_string()
                .into());
        };
        if re.is_empty() {
            return Err(ValueError {
                offset: 1,
                message: "empty regex (use `*` to match everything)".into(),
            });
        }
        let regex = regex::RegexBuilder::new(re)
            .case_insensitive(case_insensitive)
            .size_limit(budget::SIZE_LIMIT)
            .dfa_size_limit(budget::DFA_CACHE)
            .build()
            .map_err(|e| ValueError {
                offset: 1,
                message: regex_message(&e),
            })?;
        return Ok(Pattern::Regex {
            regex,
            pattern: re.to_owned(),
            case_insensitive,
        });
    }
    if text.is_empty() {
        return Err("empty MATCH".to_string().into());
    }
    if text.contains("://") {
        return Err(format!(
            "MATCH takes a host, host/path or /regex/, not a URL: write `example.com/path` instead of `{text}`"
        )
        .into());
    }
    let (hostport, path) = match text.find('/') {
        Some(i) => (&text[..i], Some(text[i..].to_owned())),
        None => (text, None),
    };
    let (host, port) = split_host_port(hostport)?;
    let host = host.to_ascii_lowercase();
    let name = |h: &str| -> Result<String, ValueError> {
        let h = h.strip_suffix('.').unwrap_or(h);
        if h.contains('*') {
            Err("only a leading `*.` wildcard (or `*` alone) is supported; use a /regex/ for other shapes".to_string().into())
        } else if valid_host(h) || (h.contains(':') && h.parse::<std::net::Ipv6Addr>().is_ok()) {
            Ok(h.to_owned())
        } else {
            Err(format!("invalid host `{h}` in MATCH").into())
        }
    };
    let host = if host == "*" {
        HostPattern::Any
    } else if let Some(suffix) = host.strip_prefix("*.") {
        HostPattern::Suffix(name(suffix)?)
    } else {
        HostPattern::Exact(name(&host)?)
    };
    Ok(Pattern::Host { host, port, path })
}

fn parse_action(tok: &Token, groups: &Groups) -> Result<ActionSpec, (usize, String)> {
    let text = &tok.text;
    let Some(sep) = text.find("://") else {
        let hint = || {
            let head = text.split(':').next().unwrap_or("");
            let known = ACTION_NAMES.iter().any(|n| n.eq_ignore_ascii_case(head));
            if known {
                format!(" (did you mean `{head}://...`?)")
            } else {
                String::new()
            }
        };
        return match Upstream::parse(text) {
            Ok(u) if hint().is_empty() => Ok(ActionSpec {
                col: tok.col,
                action: ParsedAction::Upstream(u),
            }),
            Ok(_) => Err((tok.col, format!("`{text}` looks like an action{}", hint()))),
            Err(e) => Err((
                tok.col,
                format!("expected an action (op://value), a condition (method:, client:) or an upstream HOST:PORT: {e}{}", hint()),
            )),
        };
    };
    let op = &text[..sep];
    let value = &text[sep + 3..];
    let value_col = tok.col + op.chars().count() + 3;
    match parse_op(&op.to_ascii_lowercase(), value, groups) {
        Ok(Some(action)) => Ok(ActionSpec {
            col: tok.col,
            action,
        }),
        Ok(None) => Err((
            tok.col,
            format!(
                "unknown action `{op}://` (known: {})",
                ACTION_NAMES[..ACTION_NAMES.len() - 1].join(", ")
            ),
        )),
        Err(e) => Err((value_col + e.offset, format!("{op}://: {}", e.message))),
    }
}

fn template(value: &str, groups: &Groups) -> Result<Template, ValueError> {
    Template::parse(value, groups)
        .map_err(|TemplateError { offset, message }| ValueError { offset, message })
}

/// The action for `op://value`; None for an unknown op.
fn parse_op(op: &str, value: &str, groups: &Groups) -> Result<Option<ParsedAction>, ValueError> {
    Ok(Some(match op {
        "upstream" | "host" => ParsedAction::Upstream(Upstream::parse(value)?),
        "url" => ParsedAction::Url(UrlTarget::parse(value, groups)?),
        "redirect" | "redirect301" => {
            check_url_chars(value)?;
            if value.is_empty() {
                return Err("a redirect needs a Location URL".to_string().into());
            }
            ParsedAction::Redirect(RedirectSpec {
                status: if op == "redirect301" {
                    StatusCode::MOVED_PERMANENTLY
                } else {
                    StatusCode::FOUND
                },
                location: template(value, groups)?,
            })
        }
        "reqheaders" => ParsedAction::ReqHeader(HeaderEdit::parse(value)?),
        "resheaders" => ParsedAction::ResHeader(HeaderEdit::parse(value)?),
        "status" => ParsedAction::Status(parse_status(value, 200, 599)?),
        "mock" => ParsedAction::Mock(parse_status(value, 200, 599)?),
        "body" => {
            if value.len() > MAX_BODY {
                return Err("body is over the 16 MiB limit".to_string().into());
            }
            ParsedAction::Body(Bytes::copy_from_slice(value.as_bytes()))
        }
        "bodyfile" => {
            if value.is_empty() {
                return Err("bodyFile:// needs a path".to_string().into());
            }
            let path = PathBuf::from(value);
            super::files::check_relative(&path)?;
            ParsedAction::BodyFile(path)
        }
        "bodysub" => ParsedAction::BodySub(BodySub::parse(value)?),
        "delay" => ParsedAction::Delay(parse_delay(value)?),
        "resdelay" => ParsedAction::ResDelay(parse_delay(value)?),
        "throttle" => ParsedAction::Throttle(Rate::parse(value)?),
        "reqthrottle" => ParsedAction::ReqThrottle(Rate::parse(value)?),
        "block" => ParsedAction::Block(Block::parse(value)?),
        "cors" => ParsedAction::Cors(Cors::parse(value)?),
        "intercept" | "passthrough" => ParsedAction::Intercept(Intercept::parse(op, value)?),
        "wsdrop" => ParsedAction::WsDrop(WsDrop::parse(value)?),
        "wssub" => ParsedAction::WsSub(WsSub::parse(value)?),
        _ => return Ok(None),
    }))
}

#[cfg(test)]
#[path = "syntax_tests.rs"]
mod tests;
