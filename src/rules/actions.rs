//! The actions a rule can take, as typed values parsed from their
//! `op://value` text, and the pure helpers that apply them to a request:
//! upstream mapping, URL rewrite, redirects, header edits, statuses,
//! delays, rates in bytes per second, blocks, and whether a CONNECT's
//! TLS is intercepted. Bodies are in `body`, CORS in `cors`, WebSocket
//! messages in `ws`.
//!
//! Invariants: every value is validated when the rule file loads, so
//! applying an action cannot fail for a reason the rule file could have
//! shown (what can still fail at run time, a URL rewritten from request
//! captures, returns an error value); the helpers do no I/O and never
//! panic; edits of the headers that frame a message (`content-length`,
//! `transfer-encoding`, hop-by-hop) are refused at load, because framing
//! is sluice's job.

use std::fmt;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri};

use super::template::{Groups, Template};

/// Largest body a rule may produce or edit: `body://`, `bodyFile://`,
/// and the input and output of `bodySub://`.
pub const MAX_BODY: usize = 16 << 20;
/// Longest `delay://` or `resDelay://`.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// Headers that frame the message or belong to one hop; rules may not edit them.
const MANAGED_HEADERS: [&str; 8] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// The kinds of action. For each kind, the first matching rule (in file
/// order) that has an action of that kind supplies it; header edits are
/// decided per header name (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActionKind {
    Upstream,
    Url,
    Redirect,
    ReqHeaders,
    ResHeaders,
    Status,
    /// `mock://`, `body://` and `bodyFile://`: what the response body is.
    Response,
    BodySub,
    Delay,
    ResDelay,
    Throttle,
    ReqThrottle,
    Block,
    Cors,
    /// `intercept://` and `passthrough://`: whether a CONNECT's TLS is
    /// decrypted. One kind, so one rule cannot say both.
    Intercept,
    /// `wsDrop://`: WebSocket messages dropped.
    WsDrop,
    /// `wsSub://`: WebSocket messages rewritten.
    WsSub,
}

impl ActionKind {
    /// The name used in the rule syntax and in explanations.
    pub fn name(self) -> &'static str {
        match self {
            ActionKind::Upstream => "upstream",
            ActionKind::Url => "url",
            ActionKind::Redirect => "redirect",
            ActionKind::ReqHeaders => "reqHeaders",
            ActionKind::ResHeaders => "resHeaders",
            ActionKind::Status => "status",
            ActionKind::Response => "mock/body",
            ActionKind::BodySub => "bodySub",
            ActionKind::Delay => "delay",
            ActionKind::ResDelay => "resDelay",
            ActionKind::Throttle => "throttle",
            ActionKind::ReqThrottle => "reqThrottle",
            ActionKind::Block => "block",
            ActionKind::Cors => "cors",
            ActionKind::Intercept => "intercept",
            ActionKind::WsDrop => "wsDrop",
            ActionKind::WsSub => "wsSub",
        }
    }

    /// Whether the kind applies to CONNECT tunnels (whose bytes sluice
    /// does not parse): upstream mapping, block, delay, throttles and
    /// interception.
    pub fn applies_to_connect(self) -> bool {
        matches!(
            self,
            ActionKind::Upstream
                | ActionKind::Block
                | ActionKind::Delay
                | ActionKind::Throttle
                | ActionKind::ReqThrottle
                | ActionKind::Intercept
        )
    }
}

/// A value error: the character offset in the value, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValueError {
    pub offset: usize,
    pub message: String,
}

impl From<String> for ValueError {
    fn from(message: String) -> ValueError {
        ValueError { offset: 0, message }
    }
}

/// Splits `host[:port]` or `[v6][:port]`; the host is returned without brackets.
pub(crate) fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("`{s}`: `[` without its closing `]`"));
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{host}` in brackets is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(parse_port(p)?),
                None => return Err(format!("unexpected `{after}` after `]`")),
            },
        };
        return Ok((host, port));
    }
    match s.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Err(format!(
            "`{s}`: an IPv6 address goes in brackets, as in [::1]:8080"
        )),
        Some((host, port)) => Ok((host, Some(parse_port(port)?))),
        None => Ok((s, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("invalid port `{p}` (1-65535)")),
    }
}

/// A host name or IPv4 address as written in a rule (IPv6 is checked by
/// [`split_host_port`]).
pub(crate) fn valid_host(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|label| !label.is_empty())
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// `upstream://HOST[:PORT]` (or a bare `HOST:PORT`): connect here instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    /// None: keep the request's port.
    pub port: Option<u16>,
}

impl Upstream {
    pub(crate) fn parse(s: &str) -> Result<Upstream, String> {
        let (host, port) = split_host_port(s)?;
        if !host.contains(':') && !valid_host(host) {
            return Err(format!("invalid upstream host `{host}`"));
        }
        Ok(Upstream {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The port to connect to for a request that was for `request_port`.
    pub fn port_or(&self, request_port: u16) -> u16 {
        self.port.unwrap_or(request_port)
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// Rejects whitespace and control characters in a URL-like value.
pub(crate) fn check_url_chars(s: &str) -> Result<(), ValueError> {
    match s.chars().position(|c| c.is_whitespace() || c.is_control()) {
        Some(offset) => Err(ValueError {
            offset,
            message: "a URL cannot contain spaces or control characters".into(),
        }),
        None => Ok(()),
    }
}

/// `url://`: what the request target becomes (before captures expand).
#[derive(Debug, Clone)]
pub enum UrlTarget {
    /// `url:///path?query`: replaces the path and query.
    PathAndQuery(Template),
    /// `url://http://host[:port]/path`: replaces the whole target.
    Absolute(Template),
}

/// `url://` with its captures expanded, for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlRewrite {
    PathAndQuery(String),
    Absolute(String),
}

impl UrlTarget {
    pub(crate) fn parse(value: &str, groups: &Groups) -> Result<UrlTarget, ValueError> {
        check_url_chars(value)?;
        let template = |v: &str| {
            Template::parse(v, groups).map_err(|e| ValueError {
                offset: e.offset,
                message: e.message,
            })
        };
        let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
        if value.starts_with('/') {
            Ok(UrlTarget::PathAndQuery(template(value)?))
        } else if lower.starts_with("http://") {
            if !value.contains('$') {
                match value.parse::<Uri>() {
                    Ok(u) if u.authority().is_some() => {}
                    _ => return Err(format!("`{value}` is not a valid http:// URL").into()),
                }
            }
            Ok(UrlTarget::Absolute(template(value)?))
        } else if lower.starts_with("https://") {
            Err("url:// to an https:// target is not supported yet: sluice forwards plain HTTP (use an http:// URL, or upstream:// for the address)".to_string().into())
        } else {
            Err(
                "url:// takes a path (url:///new/path?q=1) or an http:// URL"
                    .to_string()
                    .into(),
            )
        }
    }

    pub fn template(&self) -> &Template {
        match self {
            UrlTarget::PathAndQuery(t) | UrlTarget::Absolute(t) => t,
        }
    }

    pub fn expand(&self, caps: Option<&regex::Captures<'_>>) -> UrlRewrite {
        match self {
            UrlTarget::PathAndQuery(t) => UrlRewrite::PathAndQuery(t.expand(caps)),
            UrlTarget::Absolute(t) => UrlRewrite::Absolute(t.expand(caps)),
        }
    }
}

impl fmt::Display for UrlRewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlRewrite::PathAndQuery(s) | UrlRewrite::Absolute(s) => f.write_str(s),
        }
    }
}

/// Applies a rewrite to an absolute-form request URI. Fails only when
/// captures from the request made an invalid URI.
pub fn rewrite_uri(original: &Uri, rewrite: &UrlRewrite) -> Result<Uri, String> {
    match rewrite {
        UrlRewrite::PathAndQuery(pq) => {
            let mut parts = original.clone().into_parts();
            parts.path_and_query = Some(
                pq.parse()
                    .map_err(|e| format!("rewritten path `{pq}`: {e}"))?,
            );
            Uri::from_parts(parts).map_err(|e| format!("rewritten URL: {e}"))
        }
        UrlRewrite::Absolute(s) => {
            let uri: Uri = s.parse().map_err(|e| format!("rewritten URL `{s}`: {e}"))?;
            let Some(authority) = uri
                .authority()
                .filter(|_| uri.scheme() == Some(&http::uri::Scheme::HTTP))
            else {
                return Err(format!("rewritten URL `{s}` is not an http:// URL"));
            };
            // `http` accepts any text after the colon; an unusable port
            // must fail here, not quietly become port 80.
            let text = authority.as_str();
            let after_host = text.rsplit_once(']').map_or(text, |(_, rest)| rest);
            if after_host.contains(':') && authority.port_u16().is_none_or(|p| p == 0) {
                return Err(format!("rewritten URL `{s}` has an invalid port"));
            }
            if authority.host().is_empty() {
                return Err(format!("rewritten URL `{s}` has no host"));
            }
            Ok(uri)
        }
    }
}

/// `redirect://` before captures expand.
#[derive(Debug, Clone)]
pub struct RedirectSpec {
    pub status: StatusCode,
    pub location: Template,
}

/// A redirect answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub status: StatusCode,
    pub location: String,
}

/// One `reqHeaders://` or `resHeaders://` edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// `name=value`: replaces every value of the header.
    Set(HeaderName, HeaderValue),
    /// `+name=value`: adds a value, keeping the others.
    Append(HeaderName, HeaderValue),
    /// `-name`: removes the header.
    Remove(HeaderName),
}

impl HeaderEdit {
    pub fn name(&self) -> &HeaderName {
        match self {
            HeaderEdit::Set(n, _) | HeaderEdit::Append(n, _) | HeaderEdit::Remove(n) => n,
        }
    }

    pub(crate) fn parse(s: &str) -> Result<HeaderEdit, String> {
        if let Some(name) = s.strip_prefix('-') {
            if name.contains('=') {
                return Err("`-name` removes a header and takes no value".into());
            }
            return Ok(HeaderEdit::Remove(header_name(name)?));
        }
        let (append, rest) = match s.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let Some((name, value)) = rest.split_once('=') else {
            return Err(format!(
                "`{s}`: expected name=value (set), +name=value (add) or -name (remove)"
            ));
        };
        let name = header_name(name)?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("the value for `{name}` contains a control character"))?;
        Ok(if append {
            HeaderEdit::Append(name, value)
        } else {
            HeaderEdit::Set(name, value)
        })
    }
}

fn header_name(s: &str) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(s.as_bytes())
        .map_err(|_| format!("`{s}` is not a valid header name"))?;
    if MANAGED_HEADERS.contains(&name.as_str()) {
        return Err(format!(
            "`{name}` frames the message or belongs to one hop; sluice manages it and rules cannot edit it"
        ));
    }
    Ok(name)
}

impl fmt::Display for HeaderEdit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        match self {
            HeaderEdit::Set(n, v) => write!(f, "{n}={}", text(v)),
            HeaderEdit::Append(n, v) => write!(f, "+{n}={}", text(v)),
            HeaderEdit::Remove(n) => write!(f, "-{n}"),
        }
    }
}

/// Applies edits in order.
pub fn apply_header_edits<'e>(
    headers: &mut HeaderMap,
    edits: impl IntoIterator<Item = &'e HeaderEdit>,
) {
    for edit in edits {
        match edit {
            HeaderEdit::Set(n, v) => {
                headers.insert(n.clone(), v.clone());
            }
            HeaderEdit::Append(n, v) => {
                headers.append(n.clone(), v.clone());
            }
            HeaderEdit::Remove(n) => {
                headers.remove(n);
            }
        }
    }
}

/// A status code in `min..=max`.
pub(crate) fn parse_status(s: &str, min: u16, max: u16) -> Result<StatusCode, String> {
    match s.parse::<u16>() {
        Ok(n) if (min..=max).contains(&n) => {
            StatusCode::from_u16(n).map_err(|_| format!("invalid status code `{s}`"))
        }
        _ => Err(format!("invalid status code `{s}` (expected {min}-{max})")),
    }
}

/// A `delay://` or `resDelay://` duration.
pub(crate) fn parse_delay(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration `{s}` ({e}; e.g. 500ms, 2s)"))?;
    if d > MAX_DELAY {
        return Err(format!("delay `{s}` is longer than the 1h limit"));
    }
    Ok(d)
}

/// One line from a `regex` error (its Display spans several lines).
pub(crate) fn regex_message(e: &regex::Error) -> String {
    if let regex::Error::CompiledTooBig(_) = e {
        return super::budget::too_large();
    }
    let text = e.to_string();
    match text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
    {
        Some(reason) => format!("invalid regex: {reason}"),
        None => format!(
            "invalid regex: {}",
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        ),
    }
}

/// A bandwidth limit (`throttle://`, `reqThrottle://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rate {
    bytes_per_sec: u64,
    text: String,
}

impl Rate {
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Bits (`bps`, `kbps`, `mbps`, `gbps`, or `bit/s`, `kbit/s`, ...;
    /// k = 1000) or bytes (`B/s`, `KB/s`, `MB/s`, `GB/s` with k = 1000,
    /// `KiB/s`, `MiB/s`, `GiB/s` with 1024). Anything else is an error,
    /// so bits and bytes are never confused.
    pub(crate) fn parse(s: &str) -> Result<Rate, String> {
        let usage = "use bits (64kbps, 1mbps, 2mbit/s) or bytes (100KB/s, 1MiB/s)";
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, unit) = s.split_at(split);
        let n: f64 = number
            .parse()
            .map_err(|_| format!("rate `{s}` must start with a number: {usage}"))?;
        let bits = unit
            .strip_suffix("bps")
            .or_else(|| unit.strip_suffix("bit/s"));
        let per_sec = if let Some(prefix) = bits {
            let scale = match prefix.to_ascii_lowercase().as_str() {
                "" => 1.0,
                "k" => 1e3,
                "m" => 1e6,
                "g" => 1e9,
                _ => return Err(format!("unknown rate unit `{unit}`: {usage}")),
            };
            n * scale / 8.0
        } else if let Some(prefix) = unit.strip_suffix("B/s") {
            let scale = match prefix {
                "" => 1.0,
                "k" | "K" => 1e3,
                "M" => 1e6,
                "G" => 1e9,
                "Ki" => 1024.0,
                "Mi" => 1024.0 * 1024.0,
                "Gi" => 1024.0 * 1024.0 * 1024.0,
                _ => return Err(format!("unknown rate unit `{unit}`: {usage}")),
            };
            n * scale
        } else if unit.is_empty() {
            return Err(format!("rate `{s}` needs a unit: {usage}"));
        } else {
            return Err(format!("unknown rate unit `{unit}`: {usage}"));
        };
        if !(per_sec.is_finite() && (1.0..1e15).contains(&per_sec)) {
            return Err(format!(
                "rate `{s}` is out of range (at least 1 byte/s, i.e. 8bps)"
            ));
        }
        Ok(Rate {
            bytes_per_sec: per_sec.round() as u64,
            text: s.to_owned(),
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `block://STATUS` or `block://close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Answer with this status (4xx or 5xx) and a short body naming the rule.
    Status(StatusCode),
    /// Close the client connection without an answer.
    Close,
}

impl Block {
    pub(crate) fn parse(s: &str) -> Result<Block, String> {
        if s.eq_ignore_ascii_case("close") {
            return Ok(Block::Close);
        }
        parse_status(s, 400, 599)
            .map(Block::Status)
            .map_err(|_| format!("block:// takes a 4xx/5xx status or `close`, not `{s}`"))
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Block::Status(s) => write!(f, "{}", s.as_u16()),
            Block::Close => f.write_str("close"),
        }
    }
}

/// `intercept://`, `intercept://insecure` or `passthrough://`: what
/// sluice does with the TLS inside a CONNECT tunnel to the rule's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intercept {
    /// `intercept://`: decrypt with sluice's CA; verify the upstream.
    On,
    /// `intercept://insecure`: decrypt, and accept any upstream
    /// certificate (self-signed lab servers, expired test hosts).
    Insecure,
    /// `passthrough://`: never decrypt; relay the TLS bytes unchanged.
    Passthrough,
}

impl Intercept {
    /// The value of `op://value`, `op` lower-case (`intercept` or
    /// `passthrough`). Any value other than these is an error rather
    /// than ignored: a typo such as `intercept://insecur` must not
    /// quietly verify (or worse, not verify) the upstream.
    pub(crate) fn parse(op: &str, value: &str) -> Result<Intercept, String> {
        match op {
            "passthrough" if value.is_empty() => Ok(Intercept::Passthrough),
            "passthrough" => Err(format!("passthrough:// takes no value, not `{value}`")),
            "intercept" if value.is_empty() => Ok(Intercept::On),
            "intercept" if value.eq_ignore_ascii_case("insecure") => Ok(Intercept::Insecure),
            "intercept" => Err(format!(
                "intercept:// takes no value or `insecure`, not `{value}`"
            )),
            _ => Err(format!(
                "`{op}://` is neither intercept:// nor passthrough://"
            )),
        }
    }

    /// Whether the tunnel's TLS is decrypted.
    pub fn decrypts(self) -> bool {
        !matches!(self, Intercept::Passthrough)
    }

    /// Whether sluice checks the upstream's certificate when it decrypts
    /// (with `passthrough://` the client checks it, as without sluice).
    pub fn verifies_upstream(self) -> bool {
        !matches!(self, Intercept::Insecure)
    }
}

/// The rule syntax, as records and explanations show it.
impl fmt::Display for Intercept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Intercept::On => "intercept://",
            Intercept::Insecure => "intercept://insecure",
            Intercept::Passthrough => "passthrough://",
        })
    }
}

#[cfg(test)]
#[path = "actions_tests.rs"]
mod tests;
