//! Client commands over a running instance's records: `sluice records`
//! prints a table of recent exchanges, `sluice har` writes an HTTP Archive
//! to stdout, streamed as the instance produces it.
//!
//! Exit codes: 0 done, 1 the instance answered with an error (the message
//! is printed) or the output could not be written, 2 the instance could
//! not be reached.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::admin::client::{self, ClientError};
use crate::record::query::MAX_LIMIT;

/// Connecting to the admin server, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// From the request to the response head (the export reads its first page
/// of records before it answers).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two pieces of a streamed export.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// An error answer is read up to this much.
const ERROR_BODY_CAP: usize = 64 * 1024;

#[derive(Debug, Clone, Args)]
pub struct InstanceArgs {
    /// Admin address of the running sluice.
    #[arg(long, value_name = "ADDR", default_value = crate::config::DEFAULT_ADMIN)]
    pub admin: SocketAddr,
    /// Bearer token [default: the one the instance wrote to
    /// DATA_DIR/admin.token].
    #[arg(
        long = "admin-token",
        visible_alias = "token",
        value_name = "TOKEN",
        env = "SLUICE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// The instance's data folder, where its generated token is read
    /// [default: the user's data directory, e.g. ~/.local/share/sluice].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
}

impl InstanceArgs {
    /// The token to send, or a message saying why there is none.
    pub fn client_token(&self) -> Result<client::ClientToken, String> {
        client::ClientToken::resolve(
            self.token.as_deref(),
            self.admin_token_file.as_deref(),
            self.data_dir.as_deref(),
        )
    }
}

/// The record filters, as the admin API takes them.
#[derive(Debug, Clone, Default, Args)]
pub struct FilterArgs {
    /// Records started since then: a duration ago (10m), RFC 3339 or Unix seconds.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Records started until then (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
    /// Exact host, or *.domain for a domain and its subdomains.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Substring of the URL.
    #[arg(long, value_name = "TEXT")]
    pub url: Option<String>,
    /// A status (404), a class (5xx) or a range (400-499).
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// HTTP method (GET, POST, CONNECT, RELAY).
    #[arg(long, value_name = "METHOD")]
    pub method: Option<String>,
    /// Client address prefix (127.0.0.1 or 127.0.0.1:5000).
    #[arg(long, value_name = "ADDR")]
    pub client: Option<String>,
    /// Proxy user.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// http, tunnel or relay.
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Records that took at least this long (500ms).
    #[arg(long, value_name = "DURATION")]
    pub min_duration: Option<String>,
    /// Only records that failed.
    #[arg(long)]
    pub error: bool,
}

impl FilterArgs {
    /// The filter as query pairs.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        for (key, value) in [
            ("since", &self.since),
            ("until", &self.until),
            ("host", &self.host),
            ("url", &self.url),
            ("status", &self.status),
            ("method", &self.method),
            ("client", &self.client),
            ("user", &self.user),
            ("kind", &self.kind),
            ("min_duration", &self.min_duration),
        ] {
            if let Some(v) = value {
                p.push((key, v.clone()));
            }
        }
        if self.error {
            p.push(("error", "true".to_string()));
        }
        p
    }
}

#[derive(Debug, Clone, Args)]
pub struct HarArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RecordsArgs {
    #[command(flatten)]
    pub instance: InstanceArgs,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Show at most this many records, newest first.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
    /// One JSON object a line instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `a=1&b=x%20y`, each value percent-encoded.
pub fn query_string(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("sluice: cannot start the runtime: {e}"))
        .ok()
}

/// The message of an error answer: its JSON `error`, else its text.
fn answer_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

/// Prints a client error and picks the exit code.
fn fail(cmd: &str, e: &ClientError) -> i32 {
    match e {
        ClientError::Status(code, body) => {
            eprintln!(
                "sluice {cmd}: the instance answered {code}: {}",
                answer_message(body)
            );
            1
        }
        other => {
            eprintln!("sluice {cmd}: {other}");
            2
        }
    }
}

/// `sluice records`: newest first, following cursors up to `--limit`.
pub fn records(args: RecordsArgs) -> i32 {
    let Some(rt) = runtime() else { return 2 };
    if args.limit == 0 {
        return 0;
    }
    let inst = &args.instance;
    let token = match inst.client_token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sluice records: {e}");
            return 2;
        }
    };
    let mut rows: Vec<Value> = Vec::new();
    let mut cursor: Option<u64> = None;
    while rows.len() < args.limit {
        let mut pairs = args.filter.pairs();
        pairs.push((
            "limit",
            (args.limit - rows.len()).min(MAX_LIMIT).to_string(),
        ));
        if let Some(c) = cursor {
            pairs.push(("cursor", c.to_string()));
        }
        let path = format!("/api/records?{}", query_string(&pairs));
        let body = match rt.block_on(client::get(inst.admin, &path, token.as_deref())) {
            Ok(b) => b,
            Err(e) => return fail("records", &token.explain(e)),
        };
        let page: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("sluice records: unexpected answer from {}: {e}", inst.admin);
                return 2;
            }
        };
        let got = page["records"].as_array().cloned().unwrap_or_default();
        let empty = got.is_empty();
        rows.extend(got);
        cursor = page["next_cursor"].as_u64();
        // A short page that says `partial` ended its scan window: older
        // records may still match.
        let partial = page["partial"].as_bool().unwrap_or(false);
        if cursor.is_none() || (empty && !partial) {
            break;
        }
    }
    rows.truncate(args.limit);
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        rows.iter().try_for_each(|r| writeln!(out, "{r}"))
    } else {
        out.write_all(render_table(&rows).as_bytes())
    };
    match written.and_then(|_| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("sluice records: cannot write: {e}");
            1
        }
    }
}

/// The table `sluice records` prints.
pub fn render_table(rows: &[Value]) -> String {
    const PATH_WIDTH: usize = 60;
    let header = [
        "TIME(UTC)",
        "METHOD",
        "STATUS",
        "HOST",
        "PATH",
        "SIZE",
        "MSGS",
        "DURATION",
        "ERROR",
    ];
    let mut table: Vec<[String; 9]> = vec![header.map(str::to_string)];
    for r in rows {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
        let started = s("started");
        let time = started.get(11..23).unwrap_or(&started).to_string();
        let status = r["status"]
            .as_u64()
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into());
        let mut path = path_of(&s("url"), &s("kind"));
        if path.chars().count() > PATH_WIDTH {
            path = path.chars().take(PATH_WIDTH - 1).collect::<String>() + "…";
        }
        let size = human_size(r["resp_size"].as_u64().unwrap_or(0));
        let duration = r["duration_ms"]
            .as_f64()
            .map(human_ms)
            .unwrap_or_else(|| "-".into());
        let error = r["error"].as_str().unwrap_or("").to_string();
        table.push([
            time,
            s("method"),
            status,
            s("host"),
            path,
            size,
            message_count(&r["messages"]),
            duration,
            error,
        ]);
    }
    let mut widths = [0usize; 9];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut o = String::new();
    for row in &table {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i == 8 {
                line.push_str(cell);
                break;
            }
            // Numbers right-aligned, text left-aligned.
            let pad = widths[i] - cell.chars().count();
            if matches!(i, 2 | 5 | 6 | 7) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
            line.push_str("  ");
        }
        o.push_str(line.trim_end());
        o.push('\n');
    }
    o
}

/// A WebSocket's or event stream's message count: `-` for a record that
/// carries none, `seen/stored` when the budget left some unstored.
fn message_count(m: &Value) -> String {
    let (Some(seen), Some(stored)) = (m["seen"].as_u64(), m["stored"].as_u64()) else {
        return "-".into();
    };
    if seen == stored {
        seen.to_string()
    } else {
        format!("{seen}/{stored}")
    }
}

/// Path and query of an HTTP URL; tunnels and relays show their target.
pub fn path_of(url: &str, kind: &str) -> String {
    if kind != "http" && !kind.is_empty() {
        return url.to_string();
    }
    match url.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        },
        None => url.to_string(),
    }
}

fn human_size(b: u64) -> String {
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    for unit in ["KiB", "MiB", "GiB"] {
        if v < 1024.0 {
            return format!("{v:.1} {unit}");
        }
        v /= 1024.0;
    }
    format!("{v:.1} TiB")
}

fn human_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// `sluice har`: streams `GET /api/har` to stdout.
pub fn har(args: HarArgs) -> i32 {
    let Some(rt) = runtime() else { return 2 };
    let query = query_string(&args.filter.pairs());
    let path = if query.is_empty() {
        "/api/har".to_string()
    } else {
        format!("/api/har?{query}")
    };
    let inst = &args.instance;
    let token = match inst.client_token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sluice har: {e}");
            return 2;
        }
    };
    let mut out = std::io::stdout().lock();
    let got = rt.block_on(stream_get(
        inst.admin,
        &path,
        token.as_deref(),
        &mut |piece| out.write_all(piece),
    ));
    match got.and_then(|()| out.flush().map_err(StreamError::Write)) {
        Ok(()) => 0,
        Err(StreamError::Client(e)) => fail("har", &token.explain(e)),
        Err(StreamError::Cut(e)) => {
            eprintln!("sluice har: the export was cut short ({e}); the output is incomplete");
            1
        }
        Err(StreamError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => 1,
        Err(StreamError::Write(e)) => {
            eprintln!("sluice har: cannot write the output: {e}");
            1
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    /// Nothing was written: unreachable, or an error answer.
    #[error(transparent)]
    Client(ClientError),
    /// The body broke off after some of it was written.
    #[error("{0}")]
    Cut(String),
    #[error("{0}")]
    Write(std::io::Error),
}

/// GETs `path` and hands each piece of a 2xx body to `write` as it
/// arrives; every wait has a deadline.
async fn stream_get(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    write: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<(), StreamError> {
    let client = |e: ClientError| StreamError::Client(e);
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| client(ClientError::Timeout(addr, CONNECT_TIMEOUT)))?
        .map_err(|e| client(ClientError::Connect(addr, e.to_string())))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| client(ClientError::Http(e.to_string())))?;
    tokio::spawn(conn);
    let mut req = http::Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| client(ClientError::Http(e.to_string())))?;
    if let Some(t) = token {
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {t}")) {
            req.headers_mut().insert(http::header::AUTHORIZATION, v);
        }
    }
    let resp = tokio::time::timeout(HEAD_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| client(ClientError::Timeout(addr, HEAD_TIMEOUT)))?
        .map_err(|e| client(ClientError::Http(e.to_string())))?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let mut text = Vec::new();
        while text.len() < ERROR_BODY_CAP {
            match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    if let Some(d) = frame.data_ref() {
                        text.extend_from_slice(d);
                    }
                }
                _ => break,
            }
        }
        return Err(client(ClientError::Status(
            status.as_u16(),
            String::from_utf8_lossy(&text).trim().to_string(),
        )));
    }
    loop {
        match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.frame()).await {
            Err(_) => {
                return Err(StreamError::Cut(format!(
                    "no data for {BODY_IDLE_TIMEOUT:?}"
                )))
            }
            Ok(None) => return Ok(()),
            Ok(Some(Err(e))) => return Err(StreamError::Cut(e.to_string())),
            Ok(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    write(d).map_err(StreamError::Write)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_an_encoded_query() {
        let f = FilterArgs {
            since: Some("10m".into()),
            url: Some("/a b?c=d&e".into()),
            status: Some("5xx".into()),
            error: true,
            ..FilterArgs::default()
        };
        assert_eq!(
            query_string(&f.pairs()),
            "since=10m&url=%2Fa%20b%3Fc%3Dd%26e&status=5xx&error=true"
        );
        assert_eq!(query_string(&FilterArgs::default().pairs()), "");
    }

    #[test]
    fn paths_of_urls() {
        assert_eq!(path_of("http://h:8080/a/b?x=1", "http"), "/a/b?x=1");
        assert_eq!(path_of("http://h", "http"), "/");
        assert_eq!(path_of("example.com:443", "tunnel"), "example.com:443");
    }

    #[test]
    fn table_has_a_row_per_record() {
        let rows = vec![
            serde_json::json!({
                "started": "2026-11-26T10:00:01.234567Z", "method": "GET", "status": 404,
                "host": "h", "url": "http://h/missing", "kind": "http", "resp_size": 2048,
                "duration_ms": 1.5, "error": null
            }),
            serde_json::json!({
                "started": "2026-11-26T10:00:02.000000Z", "method": "GET", "status": null,
                "host": "x", "url": "http://x/", "kind": "http", "resp_size": 0,
                "duration_ms": 1500.0, "error": "upstream refused"
            }),
            serde_json::json!({
                "started": "2026-11-26T10:00:03.000000Z", "method": "GET", "status": 101,
                "host": "ws", "url": "http://ws/chat", "kind": "http", "resp_size": 0,
                "duration_ms": 2.0, "error": null,
                "messages": {"seen": 12, "stored": 5, "bytes": 100, "unstored": "budget"}
            }),
        ];
        let t = render_table(&rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].contains("MSGS"));
        assert!(
            lines[3].contains(" 12/5 ") && lines[3].contains(" 101 "),
            "{t}"
        );
        assert!(lines[0].starts_with("TIME(UTC)"));
        assert!(lines[1].contains("10:00:01.234") && lines[1].contains("404"));
        assert!(lines[1].contains("/missing") && lines[1].contains("2.0 KiB"));
        assert!(lines[1].contains("1.5ms"));
        assert!(lines[2].contains(" - ") && lines[2].ends_with("upstream refused"));
        assert!(lines[2].contains("1.50s"));
    }

    #[test]
    fn error_answers_show_their_message() {
        assert_eq!(
            answer_message(r#"{"error":"filter `status`: expected"}"#),
            "filter `status`: expected"
        );
        assert_eq!(answer_message(" plain \n"), "plain");
    }
}
