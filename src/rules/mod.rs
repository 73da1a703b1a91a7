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
//! | `intercept://`, `intercept://insecure` | decrypt the TLS of a CONNECT tunnel with sluice's CA; `insecure`: accept any upstream certificate | `api.example.com intercept://`, `10.0.0.5:8443 intercept://insecure` |
//! | `passthrough://` | never decrypt the tunnel: relay its TLS unchanged | `*.bank.example passthrough://` |
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
//! reqThrottle, block, cors, intercept) the **first matching rule that has
//! that kind wins**; later rules still supply the other kinds. Header edits
//! are decided **per header name**: for each name, the edits of the first
//! matching rule that edits that name apply (all of them, in order), so a
//! broad `* resHeaders://x-env=lab` and a specific rule's
//! `resHeaders://content-type=text/html` both apply. A rule holds at most
//! one action of each kind (header edits excepted; `mock://` with one of
//! `body://`/`bodyFile://`); `intercept://` and `passthrough://` are one
//! kind, so `*.example.com passthrough://` before `api.example.com
//! intercept://` passes `api.example.com` through.
//!
//! Applying a plan, in order: `delay`; then the first of `block`,
//! `redirect`, a CORS preflight answer, `mock` answers without the
//! upstream (block, redirect and preflight answers skip the response-side
//! actions; a mock response gets them all); otherwise `url`, `upstream`,
//! `reqHeaders`, `reqThrottle` shape the forwarded request. On the
//! response: `status`, `resHeaders`, CORS headers, `body` then `bodySub`,
//! `resDelay`, `throttle`. CONNECT tunnels take only upstream, block,
//! delay, throttle, reqThrottle and intercept/passthrough (which only
//! CONNECT tunnels take: on a rule that cannot match one, a MATCH with a
//! path or a `method:` list without CONNECT, they are an error).
//!
//! Every record lists the ids of the rules that matched it and what each
//! changed ([`Plan::describe`]); `sluice rules check FILE` validates a
//! file offline, printing `FILE:LINE:COL: message` per error.
//!
//! # Modules, bottom up
//!
//! `id` (rule ids, positioned errors) and the action types (`template`,
//! `budget`, `actions`, `body`, `cors`, `files`) are leaves;
//! `lexer` and `syntax` parse a file into specs; `rule` compiles one
//! spec into a `Rule`; `plan` folds matching rules into a [`Plan`];
//! `matcher` indexes rules into a [`RuleSet`]; `load` reads and
//! compiles files; `scope` compiles the `--intercept` setting into rules
//! ([`InterceptScope`]); [`live`] holds the running set, `cli` the offline
//! commands. Each imports only modules below it, by their own path: this
//! file defines nothing and only re-exports, so no module reaches back
//! through it (`scripts/import_graph.sh src/rules` checks).

mod actions;
mod body;
mod budget;
mod cli;
mod cors;
mod files;
mod id;
mod lexer;
pub mod live;
mod load;
mod matcher;
mod plan;
mod rule;
mod scope;
mod syntax;
mod template;
mod ws;

pub use actions::{
    apply_header_edits, rewrite_uri, ActionKind, Block, HeaderEdit, Intercept, Rate, Redirect,
    RedirectSpec, Upstream, UrlRewrite, UrlTarget, MAX_BODY, MAX_DELAY,
};
pub use body::{default_content_type, substitute, BodySub, Mock, ResponseBody, SubstError};
pub use cli::{cli_check, cli_test};
pub use cors::{apply_cors, cors_preflight_headers, is_preflight, Cors};
pub use files::FileRoot;
pub use id::{RuleError, RuleId};
pub use load::{load_file, load_file_in, parse, parse_in, LoadError, Rules, MAX_RULE_FILE};
pub use matcher::RuleSet;
pub use plan::{Answer, Applied, Chosen, Plan};
pub use rule::{RequestInfo, Scheme};
pub use scope::InterceptScope;
pub use syntax::{
    parse as parse_specs, ActionSpec, Cidr, HostPattern, ParsedAction, Pattern, RuleSpec,
};
pub use template::Template;
pub use ws::{WsDirection, WsDrop, WsSub};
