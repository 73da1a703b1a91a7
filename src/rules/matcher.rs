//! Compiles rule specs into a [`RuleSet`] indexed for lookup, and answers
//! [`RuleSet::plan`]: which rules match a request, and which action of
//! each kind applies.
//!
//! The index: exact hosts in a hash map (host → rule indices),
//! `*.suffix` rules in a hash map keyed by suffix (looked up with each
//! label suffix of the request host), `*` rules in a short list, and the
//! regex rules in one `RegexSet`. Candidates from the four are merged in
//! file order; port, path, method and client are then checked per
//! candidate.
//!
//! Invariants: `plan` is pure, cannot fail and does not panic; its cost
//! follows the number of candidates for the request's host (plus one
//! `RegexSet` scan when there are regex rules), not the number of rules;
//! its result is the one a linear scan over the rules in file order
//! would give (a test compares the two on random rules and requests).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use super::actions::split_host_port;
use super::files::FileRoot;
use super::id::{RuleError, RuleId};
use super::plan::Plan;
use super::rule::{self, RequestInfo, Rule, Scheme};
use super::syntax::{HostPattern, Pattern, RuleSpec};

#[derive(Debug, Clone)]
struct RegexIndex {
    set: regex::RegexSet,
    /// Set pattern index → rule index.
    rules: Vec<u32>,
}

/// A compiled, indexed rule file. Cheap to share behind an `Arc`; a new
/// file means a new `RuleSet`, swapped in whole.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    exact: HashMap<Box<str>, Vec<u32>>,
    suffix: HashMap<Box<str>, Vec<u32>>,
    any: Vec<u32>,
    regex: Option<RegexIndex>,
}

impl RuleSet {
    /// Builds the set from parsed rules with no folder to read files
    /// from (a `bodyFile://` is an error); see [`RuleSet::compile_in`].
    pub fn compile(specs: Vec<RuleSpec>) -> Result<RuleSet, Vec<RuleError>> {
        RuleSet::compile_in(specs, &FileRoot::none())
    }

    /// Builds the set from parsed rules: merges each rule's actions,
    /// reads its `bodyFile://` below `files` and builds the index. Every
    /// error is reported; any error means no set.
    pub fn compile_in(specs: Vec<RuleSpec>, files: &FileRoot) -> Result<RuleSet, Vec<RuleError>> {
        let mut errors = Vec::new();
        let mut rules = Vec::with_capacity(specs.len());
        for spec in specs {
            match rule::compile(spec, files) {
                Ok(rule) => rules.push(rule),
                Err(mut e) => errors.append(&mut e),
            }
        }
        let mut set = RuleSet::default();
        let mut patterns = Vec::new();
        let mut regex_rules = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            match &rule.pattern {
                Pattern::Host { host, .. } => match host {
                    HostPattern::Exact(h) => {
                        set.exact.entry(h.as_str().into()).or_default().push(index)
                    }
                    HostPattern::Suffix(s) => {
                        set.suffix.entry(s.as_str().into()).or_default().push(index)
                    }
                    HostPattern::Any => set.any.push(index),
                },
                Pattern::Regex {
                    pattern,
                    case_insensitive,
                    ..
                } => {
                    patterns.push(if *case_insensitive {
                        format!("(?i){pattern}")
                    } else {
                        pattern.clone()
                    });
                    regex_rules.push(index);
                }
            }
        }
        // With errors already, no set will be returned: don't build one.
        if !patterns.is_empty() && errors.is_empty() {
            // Each pattern already fit the file's budget; the set (their
            // union) is held to the same total.
            match regex::RegexSetBuilder::new(&patterns)
                .size_limit(super::budget::SET_LIMIT)
                .dfa_size_limit(super::budget::DFA_CACHE * 2)
                .build()
            {
                Ok(regex_set) => {
                    set.regex = Some(RegexIndex {
                        set: regex_set,
                        rules: regex_rules,
                    })
                }
                Err(e) => {
                    let line = regex_rules
                        .first()
                        .and_then(|&i| rules.get(i as usize))
                        .map_or(1, |r| r.id.line());
                    errors.push(RuleError::new(
                        line,
                        1,
                        format!("the regex rules together are too large to compile: {e}"),
                    ));
                }
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| (e.line, e.column));
            return Err(errors);
        }
        set.rules = rules;
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Each rule's id and text, in file order.
    pub fn rules(&self) -> impl Iterator<Item = (RuleId, &str)> {
        self.rules.iter().map(|r| (r.id, r.text.as_str()))
    }

    /// The rules that match `req` and the action chosen for each kind.
    pub fn plan(&self, req: &RequestInfo<'_>) -> Plan<'_> {
        let mut plan = Plan::default();
        if self.rules.is_empty() {
            return plan;
        }
        let host = normalize_host(req.host);
        let mut candidates: Vec<u32> = Vec::new();
        let mut sources = 0;
        if let Some(v) = self.exact.get(&*host) {
            candidates.extend_from_slice(v);
            sources += 1;
        }
        if !self.suffix.is_empty() {
            let mut rest: &str = &host;
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if let Some(v) = self.suffix.get(rest) {
                    candidates.extend_from_slice(v);
                    sources += 1;
                }
            }
        }
        if !self.any.is_empty() {
            candidates.extend_from_slice(&self.any);
            sources += 1;
        }
        let url = self.regex.as_ref().map(|_| full_url(req, &host));
        if let (Some(index), Some(url)) = (&self.regex, &url) {
            if index.set.is_match(url) {
                candidates.extend(index.set.matches(url).iter().map(|i| index.rules[i]));
                sources += 1;
            }
        }
        if sources > 1 {
            candidates.sort_unstable();
        }
        let connect = req.scheme == Scheme::Connect;
        for &i in &candidates {
            let Some(rule) = self.rules.get(i as usize) else {
                continue;
            };
            if rule.admits(req) {
                plan.add(rule, connect, url.as_deref());
            }
        }
        plan
    }

    /// [`plan`](Self::plan) for `CONNECT host:port` from `client`.
    pub fn plan_connect(&self, host: &str, port: u16, client: IpAddr) -> Plan<'_> {
        self.plan(&RequestInfo {
            method: "CONNECT",
            scheme: Scheme::Connect,
            host,
            port,
            path_and_query: "",
            client,
        })
    }

    /// [`plan`](Self::plan) for a URL as the test API receives it:
    /// `http://host[:port]/path?query`, or `host:port` with `CONNECT`.
    pub fn plan_url(&self, method: &str, url: &str, client: IpAddr) -> Result<Plan<'_>, String> {
        if method.eq_ignore_ascii_case("CONNECT") {
            let (host, port) = split_host_port(url)?;
            let port = port.ok_or_else(|| format!("CONNECT `{url}` needs a port"))?;
            return Ok(self.plan_connect(host, port, client));
        }
        let uri: http::Uri = url.parse().map_err(|e| format!("`{url}`: {e}"))?;
        if uri.scheme() != Some(&http::uri::Scheme::HTTP) {
            return Err(format!("`{url}` is not an http:// URL"));
        }
        let host = uri.host().ok_or_else(|| format!("`{url}` has no host"))?;
        Ok(self.plan(&RequestInfo {
            method,
            scheme: Scheme::Http,
            host,
            port: uri.port_u16().unwrap_or(80),
            path_and_query: uri.path_and_query().map_or("/", |pq| pq.as_str()),
            client,
        }))
    }
}

/// Lower-case, without IPv6 brackets or a trailing dot; borrowed when
/// already in that form (the common case).
pub(crate) fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// What regex rules see: `http://host[:port]/path?query` (port only when
/// not 80), or `host:port` for CONNECT; the host lower-case.
pub(crate) fn full_url(req: &RequestInfo<'_>, host: &str) -> String {
    let mut s = String::with_capacity(host.len() + req.path_and_query.len() + 16);
    if req.scheme == Scheme::Http {
        s.push_str("http://");
    }
    if host.contains(':') {
        s.push('[');
        s.push_str(host);
        s.push(']');
    } else {
        s.push_str(host);
    }
    match req.scheme {
        Scheme::Http => {
            if req.port != 80 {
                let _ = write!(s, ":{}", req.port);
            }
            if req.path_and_query.is_empty() {
                s.push('/');
            } else {
                s.push_str(req.path_and_query);
            }
        }
        Scheme::Connect => {
            let _ = write!(s, ":{}", req.port);
        }
    }
    s
}

#[cfg(test)]
#[path = "matcher_tests.rs"]
mod tests;
