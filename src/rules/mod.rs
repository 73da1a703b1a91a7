//! Tamper rules (`--rules FILE`): a rule file is parsed and compiled into
//! a [`RuleSet`]; for each request [`RuleSet::plan`] says which rules
//! match and which action of each kind applies.
//!
//! This module owns the rule language, the matching and the pure helpers
//! that apply actions. It does no I/O after load (a `bodyFile://` is read
//! once, when the file loads, confined to one folder: see [`FileRoot`])
//! and holds no global state; reloading the
//! file and applying a [`Plan`] to traffic belong to the proxy.
//!
//! Invariants:
//! - a rule file with any error yields no [`RuleSet`] at all, and every
//!   error is reported with its line and column, so a bad edit can never
//!   replace the running rules;
//! - a rule's id is `L<line>`, its line number in the file;
//! - matching costs a few hash lookups per request, plus one `RegexSet`
//!   scan when there are regex rules, whatever the number of rules;
//! - nothing here panics on any input.
//!
//! # Rule files
//!
//! One rule per line: `MATCH [CONDITION...] ACTION [ACTION...]`. Tokens are
//! separated by whitespace; `#` starts a comment (outside quotes); blank
//! lines are ignored. A value may be double-quoted, wholly or in part, to
//! hold spaces or `#`: `body://"hello world\n"`, `reqHeaders://x-note="a b"`.
//! Inside quotes JSON escapes apply (`\"`, `\\`, `\n`, `\t`, `\u00e9`, ...);
//! outside quotes a backslash is an ordinary character, so a regex such as
//! `/\d+/` needs no doubling unless quoted.
//!
//! ```text
//! # hosts-file style: send api.example.com to a local server
//! api.example.com                 127.0.0.1:3000
//! *.cdn.example.com               status://404
//! example.com/api/ method:POST    delay://500ms resHeaders://x-debug=1
//! /^http:\/\/shop\.test\/item\/(\d+)/  url:///items?id=$1
//! *  client:10.0.0.0/8            reqHeaders://x-office=1
//! ```
//!
//! ## MATCH
//!
//! | form | matches |
//! |---|---|
//! | `example.com` | that host, any port (case-insensitive; also CONNECT to it) |
//! | `example.com:8080` | that host and port; `http://` without a port is port 80, CONNECT says its port (usually 443) |
//! | `*.example.com` | any subdomain at any depth (`a.example.com`, `a.b.example.com`), not `example.com` itself |
//! | `*` | everything (`*:8080`: everything on that port) |
//! | `example.com/api/` | host (or `*.host`, `*`) and a path prefix, case-sensitive, query included; never a CONNECT |
//! | `[::1]:8080` | IPv6 addresses go in brackets |
//! | `/regex/`, `/regex/i` | a regex (the `regex` crate: linear time) over the full URL `http://host[:port]/path?query` (host lower-case, port only when not 80), or `host:port` for a CONNECT; `/i`: case-insensitive. Slashes inside need no escaping. |
//!
//! Other wildcard shapes (`api-*.example.com`) are errors: use a regex.
//!
//! ## CONDITION (all given must hold)
//!
//! - `method:GET,POST` — any of these methods (case-insensitive; `CONNECT` for tunnels);
//! - `client:127.0.0.1`, `client:10.0.0.0/8,fd00::/8` — the client address
//!   in any of these (IPv4 or IPv6 CIDR; IPv4-mapped IPv6 clients compare as IPv4).
//!
//! ## ACTION (`op://value`; op names are case-insensitive)
//!
//! | action | effect | example |
//! |---|---|---|
//! | `HOST:PORT`, `HOST`, `upstream://HOST[:PORT]` | connect to this upstream instead (the URL and `Host` header stay); without a port, the request's port | `api.example.com 127.0.0.1:3000` |
//! | `url:///PATH?QUERY` | replace the path and query | `example.com/old url:///new?v=2` |
//! | `url://http://HOST[:PORT]/PATH` | replace the whole target (http:// only) | `old.test url://http://new.test/` |
//! | `redirect://URL`, `redirect301://URL` | answer 302 (301) with this `Location`, no upstream | `http.test redirect://https://http.test/` |
//! | `reqHeaders://name=value` | set a request header (replacing its values) | `* reqHeaders://x-debug=1` |
//! | `reqHeaders://+name=value` | add a request header value | `* reqHeaders://+via=lab` |
//! | `reqHeaders://-name` | remove a request header | `* reqHeaders://-cookie` |
//! | `resHeaders://...` | the same three forms on the response | `* resHeaders://cache-control=no-store` |
//! | `status://CODE` | replace the response status (200-599) | `api.test/flaky status://503` |
//! | `mock://STATUS` | answer without contacting the upstream; body from `body://` or `bodyFile://` in the same rule, or empty; `content-type` is `application/json` when the body is a JSON object or array, else `text/plain; charset=utf-8` (override with `resHeaders://content-type=...`) | `api.test/v1/user mock://200 body://"{\"id\": 1}"` |
//! | `body://TEXT` | replace the response body (or give the mock its body) | `example.com/robots.txt body://"User-agent: *\nDisallow: /\n"` |
//! | `bodyFile://PATH` | the same, from a file read when the rules load (relative to `--mock-dir`, else to the rule file's directory; no `..`, no symlinks, at most 16 MiB, a regular file; edit the rule file or send SIGHUP to re-read it) | `api.test/big mock://200 bodyFile://fixtures/big.json` |
//! | `bodySub:///REGEX/REPLACEMENT/[i]` | substitute every match in the response body (bodies up to 16 MiB, result too); a `/` inside is written `\/` (`\\/` inside quotes) | `example.com bodySub:///prod\.example\.com/staging.example.com/` |
//! | `delay://DURATION` | wait before sending the request upstream (for CONNECT: before connecting) | `slow.test delay://2s` |
//! | `resDelay://DURATION` | wait before sending the response to the client | `slow.test resDelay://500ms` |
//! | `throttle://RATE` | limit the response (download) direction | `* throttle://64kbps` |
//! | `reqThrottle://RATE` | limit the request (upload) direction | `upload.test reqThrottle://100KB/s` |
//! | `block://STATUS`, `block://close` | answer 4xx/5xx, or close the connection | `ads.test block://403` |
//! | `cors://*`, `cors://ORIGIN` | add `Access-Control-Allow-*` to responses and answer preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) with 204; `*` echoes the request's `Origin` with credentials allowed | `api.test cors://http://localhost:5173` |
//!
//! Values: DURATION as `500ms`, `2s`, `1m 30s` (at most 1h). RATE in bits
//! (`64kbps`, `1mbps`, `2mbit/s`; k = 1000) or bytes (`100KB/s`, `1MB/s`
//! with k = 1000; `64KiB/s`, `1MiB/s` with 1024); anything else (`64k`,
//! `64kb`, `64KBps`) is an error. In `url://`, `redirect://` and the
//! `bodySub://` replacement, `$1`..`$9`, `${N}` and `${name}` insert
//! captures of the rule's regex (`$0`: the whole match; `$$`: a `$`); a
//! reference to a group that does not exist is an error, and so is any
//! `$` reference when MATCH is not a regex. Headers that frame a message
//! (`content-length`, `transfer-encoding`, `connection`, `keep-alive`,
//! `te`, `trailer`, `upgrade`, `proxy-connection`) cannot be edited.
//! A bare `NAME:PORT` whose NAME is an action name (`status:404`) is an
//! error rather than an upstream, and `client:`/`method:` always start a
//! condition: write `upstream://client:8080` for such hosts.
//!
//! ## Which rules apply
//!
//! Rules are tried in file order. For each kind of action (upstream, url,
//! redirect, status, mock/body, bodySub, delay, resDelay, throttle,
//! reqThrottle, block, cors) the **first matching rule that has that kind
//! wins**; later rules still supply the other kinds. Header edits are
//! decided **per header name**: for each name, the edits of the first
//! matching rule that edits that name apply (all of them, in order), so a
//! broad `* resHeaders://x-env=lab` and a specific rule's
//! `resHeaders://content-type=text/html` both apply. A rule holds at most
//! one action of each kind (header edits excepted; `mock://` with one of
//! `body://`/`bodyFile://`).
//!
//! Applying a plan, in order: `delay`; then the first of `block`,
//! `redirect`, a CORS preflight answer, `mock` answers without the
//! upstream (block, redirect and preflight answers skip the response-side
//! actions; a mock response gets them all); otherwise `url`, `upstream`,
//! `reqHeaders`, `reqThrottle` shape the forwarded request. On the
//! response: `status`, `resHeaders`, CORS headers, `body` then `bodySub`,
//! `resDelay`, `throttle`. CONNECT tunnels take only upstream, block,
//! delay, throttle and reqThrottle.
//!
//! Every record lists the ids of the rules that matched it and what each
//! changed ([`Plan::describe`]); `sluice rules check FILE` validates a
//! file offline, printing `FILE:LINE:COL: message` per error.

mod actions;
mod body;
mod budget;
mod cors;
mod files;
mod lexer;
pub mod live;
mod matcher;
mod plan;
mod syntax;
mod template;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use actions::{
    apply_header_edits, rewrite_uri, ActionKind, Block, HeaderEdit, Rate, Redirect, RedirectSpec,
    Upstream, UrlRewrite, UrlTarget, MAX_BODY, MAX_DELAY,
};
pub use body::{default_content_type, substitute, BodySub, Mock, ResponseBody, SubstError};
pub use cors::{apply_cors, cors_preflight_headers, is_preflight, Cors};
pub use files::FileRoot;
pub use matcher::{RequestInfo, RuleSet, Scheme};
pub use plan::{Answer, Applied, Chosen, Plan};
pub use syntax::{
    parse as parse_specs, ActionSpec, Cidr, HostPattern, ParsedAction, Pattern, RuleSpec,
};
pub use template::Template;

/// Largest rule file sluice reads.
pub const MAX_RULE_FILE: u64 = 64 << 20;

/// A rule's id: `L<line>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleId(pub u32);

impl RuleId {
    /// The rule's line in its file.
    pub fn line(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "L{}", self.0)
    }
}

impl serde::Serialize for RuleId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One error in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
}

impl RuleError {
    pub(crate) fn new(line: usize, column: usize, message: impl Into<String>) -> RuleError {
        RuleError {
            line,
            column,
            message: message.into(),
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for RuleError {}

/// Parses and compiles rule text with no folder for `bodyFile://` (a
/// file action is an error). All errors, in line order, or the set.
pub fn parse(text: &str) -> Result<RuleSet, Vec<RuleError>> {
    compile(text, &FileRoot::none())
}

/// [`parse`], with `bodyFile://` paths read below `files`' folder.
pub fn parse_in(text: &str, files: &FileRoot) -> Result<RuleSet, Vec<RuleError>> {
    compile(text, files)
}

fn compile(text: &str, files: &FileRoot) -> Result<RuleSet, Vec<RuleError>> {
    let (specs, mut errors) = syntax::parse_partial(text);
    // Compile even after syntax errors, so that errors only compiling
    // finds (an unreadable bodyFile) are reported in the same pass.
    match RuleSet::compile_in(specs, files) {
        Ok(set) if errors.is_empty() => Ok(set),
        Ok(_) => Err(errors),
        Err(mut more) => {
            errors.append(&mut more);
            errors.sort_by_key(|e| (e.line, e.column));
            Err(errors)
        }
    }
}

/// Why a rule file did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read rule file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// One `FILE:LINE:COL: message` line per error.
    #[error("{}", format_errors(.path, .errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<RuleError>,
    },
}

fn format_errors(path: &Path, errors: &[RuleError]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{}:{}:{}: {}",
            path.display(),
            e.line,
            e.column,
            e.message
        ));
    }
    out
}

/// Reads, parses and compiles a rule file (at most [`MAX_RULE_FILE`]
/// bytes of UTF-8); `bodyFile://` paths are read below the file's folder.
pub fn load_file(path: &Path) -> Result<RuleSet, LoadError> {
    load_file_in(path, &FileRoot::for_rules(None, Some(path)))
}

/// [`load_file`], with `bodyFile://` paths read below `files`' folder.
pub fn load_file_in(path: &Path, files: &FileRoot) -> Result<RuleSet, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_RULE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_RULE_FILE {
        return Err(read_err(std::io::Error::other("larger than 64 MiB")));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 (first bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ))
    })?;
    compile(&text, files).map_err(|errors| LoadError::Invalid {
        path: path.to_owned(),
        errors,
    })
}

/// A loaded rule file, as the proxy holds it (behind an `Arc`, swapped
/// whole on reload).
#[derive(Debug, Clone)]
pub struct Rules {
    pub set: RuleSet,
    /// Where the rules came from (the file's path).
    pub source: String,
    pub loaded_at: SystemTime,
}

impl Rules {
    pub fn load(path: &Path) -> Result<Rules, LoadError> {
        Ok(Rules {
            set: load_file(path)?,
            source: path.display().to_string(),
            loaded_at: SystemTime::now(),
        })
    }
}

/// `sluice rules check FILE`: prints `FILE: N rules OK` (stdout, exit 0),
/// or each error as `FILE:LINE:COL: message` (stderr, exit 1).
pub fn cli_check(path: &Path) -> i32 {
    match load_file(path) {
        Ok(set) => {
            let n = set.len();
            println!(
                "{}: {n} rule{} OK",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// `sluice rules test FILE URL`: which rules of `path` a request would
/// meet, and what each would do, in the same words records use. Exit 0
/// when a rule matched, 1 when none did, 2 when the file or the URL is
/// bad.
pub fn cli_test(path: &Path, method: &str, url: &str, client: std::net::IpAddr) -> i32 {
    let set = match load_file(path) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let plan = match set.plan_url(method, url, client) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sluice: url: {e}");
            return 2;
        }
    };
    let method = method.to_ascii_uppercase();
    if plan.is_empty() {
        println!("{method} {url}: no rule matches");
        return 1;
    }
    let n = plan.matched.len();
    println!(
        "{method} {url}: {n} rule{} match",
        if n == 1 { "" } else { "s" }
    );
    let applied = plan.describe();
    for id in &plan.matched {
        let mut any = false;
        for a in applied.iter().filter(|a| a.rule == *id) {
            println!("  {id}  {:<12} {}", a.kind, a.action);
            any = true;
        }
        if !any {
            println!(
                "  {id}  (matched; earlier rules decided its actions, or they do not apply here)"
            );
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_line_and_column() {
        let e = RuleError::new(3, 17, "bad");
        assert_eq!(e.to_string(), "line 3, column 17: bad");
        assert_eq!(RuleId(12).to_string(), "L12");
        assert_eq!(
            serde_json::to_string(&RuleId(12)).expect("serializes"),
            "\"L12\""
        );
    }

    #[test]
    fn parse_reports_every_error_in_line_order() {
        let text = "a.com status://999\n\nb.com\n# fine\nc.com 1.2.3.4:80 delay://x\n";
        let errors = parse(text).unwrap_err();
        let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(at, vec![(1, 16), (3, 1), (5, 26)]);
    }

    #[test]
    fn load_file_reads_body_files_next_to_the_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("fx")).expect("mkdir");
        std::fs::write(dir.path().join("fx/a.json"), br#"{"ok":true}"#).expect("write");
        let rules = dir.path().join("rules.txt");
        std::fs::write(&rules, "api.test mock://200 bodyFile://fx/a.json\n").expect("write");
        let set = load_file(&rules).expect("loads");
        let ip = "127.0.0.1".parse().expect("ip");
        let plan = set.plan_url("GET", "http://api.test/", ip).expect("url");
        match plan.answer(false) {
            Some(Answer::Mock(m)) => {
                assert_eq!(&m.action.body[..], br#"{"ok":true}"#);
                assert_eq!(m.action.content_type, "application/json");
                assert_eq!(m.rule, RuleId(1));
            }
            other => panic!("expected a mock, got {other:?}"),
        }
    }

    #[test]
    fn load_errors_name_the_file_line_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = dir.path().join("rules.txt");
        std::fs::write(
            &rules,
            "# x\napi.test mock://200 bodyFile://missing.json\nb.test nope://1\n",
        )
        .expect("write");
        let e = load_file(&rules).unwrap_err().to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 2, "{e}");
        let shown = rules.display().to_string();
        assert!(
            lines[0].starts_with(&format!("{shown}:2:21: bodyFile ")),
            "{e}"
        );
        assert!(
            lines[1].starts_with(&format!("{shown}:3:8: unknown action")),
            "{e}"
        );
        let e = load_file(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(e, LoadError::Read { .. }), "{e}");
        std::fs::write(&rules, b"\xff\xfe").expect("write");
        assert!(load_file(&rules).unwrap_err().to_string().contains("UTF-8"));
    }
}
