//! Admin API helpers: a tiny HTTP/1.1 client over a raw `TcpStream`
//! (one request per connection), Prometheus text lookups, the real binary
//! started off the async threads, and the `sluice doctor` / `sluice top`
//! commands run as child processes with a deadline.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::process::SluiceProcess;
use super::{read_response, RawResponse};

/// Sends `METHOD path` with `Connection: close` (and a bearer token when
/// given) and reads the whole answer, within 10 s.
pub async fn request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<RawResponse> {
    let work = async {
        let mut s = TcpStream::connect(admin).await?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        s.write_all(
            format!(
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        let mut r = BufReader::new(s);
        read_response(&mut r, method == "HEAD").await
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| std::io::Error::other(format!("admin {method} {path}: no answer in 10 s")))?
}

/// GET without a token; panics if the admin server cannot be reached.
pub async fn get(admin: SocketAddr, path: &str) -> RawResponse {
    request(admin, "GET", path, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// GET that must answer 200 with JSON.
pub async fn get_json(admin: SocketAddr, path: &str) -> Value {
    let r = get(admin, path).await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", r.text()))
}

/// The rows of `GET /api/connections?{query}`.
pub async fn connections(admin: SocketAddr, query: &str) -> Vec<Value> {
    let path = if query.is_empty() {
        "/api/connections".to_string()
    } else {
        format!("/api/connections?{query}")
    };
    let v = get_json(admin, &path).await;
    let rows = v["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("no connections array: {v}"))
        .clone();
    assert_eq!(
        v["count"].as_u64(),
        Some(rows.len() as u64),
        "count matches the rows (no limit given): {v}"
    );
    rows
}

/// The inventory row of `kind` whose client address is `client`, if any.
pub async fn row_for(admin: SocketAddr, client: SocketAddr, kind: &str) -> Option<Value> {
    connections(admin, "").await.into_iter().find(|r| {
        r["client"].as_str() == Some(client.to_string().as_str())
            && r["kind"].as_str() == Some(kind)
    })
}

/// Polls the inventory until the `kind` row of `client` satisfies `ok`
/// (within 3 s) and returns it; when it never does, returns the last row
/// seen (panics if there was none) so the caller's assertions show the
/// values.
pub async fn wait_row(
    admin: SocketAddr,
    client: SocketAddr,
    kind: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(r) = row_for(admin, client, kind).await {
            if ok(&r) {
                return r;
            }
            last = Some(r);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    last.unwrap_or_else(|| panic!("no {kind} inventory row for client {client}"))
}

/// `GET /metrics` as text (must answer 200).
pub async fn metrics(admin: SocketAddr) -> Prom {
    let r = get(admin, "/metrics").await;
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    Prom(r.text())
}

/// One sample line: series name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// A Prometheus text exposition with lookups by series name and labels.
#[derive(Debug, Clone)]
pub struct Prom(pub String);

impl Prom {
    /// Every sample line: (name, labels, value).
    pub fn samples(&self) -> Vec<Sample> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(parse_sample)
            .collect()
    }

    /// The value of the series `name` whose labels include every pair in
    /// `labels`; panics if several series match (ambiguous lookup).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let hits: Vec<f64> = self
            .samples()
            .into_iter()
            .filter(|(n, ls, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .collect();
        assert!(
            hits.len() <= 1,
            "{name}{labels:?} matches {} series: give all labels",
            hits.len()
        );
        hits.first().copied()
    }

    /// Like [`Prom::get`], panicking with the exposition when absent.
    pub fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in:\n{}", self.0))
    }

    /// Whether the exposition declares `# TYPE name kind`.
    pub fn has_type(&self, name: &str, kind: &str) -> bool {
        self.0.lines().any(|l| l == format!("# TYPE {name} {kind}"))
    }
}

/// `name{a="x",b="y"} 12.5` -> ("name", [(a, x), (b, y)], 12.5).
fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series.to_string(), Vec::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}')?;
            let mut labels = Vec::new();
            let mut chars = body.chars().peekable();
            loop {
                let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                if key.is_empty() {
                    break;
                }
                if chars.next() != Some('"') {
                    return None;
                }
                let mut val = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => val.extend(chars.next()),
                        '"' => break,
                        c => val.push(c),
                    }
                }
                labels.push((key.trim_start_matches(',').to_string(), val));
                if chars.peek() == Some(&',') {
                    chars.next();
                }
            }
            (name.to_string(), labels)
        }
    };
    Some((name, labels, value))
}

/// Starts the real binary without blocking the async worker.
pub async fn start(args: &[&str]) -> SluiceProcess {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        SluiceProcess::start(&args)
    })
    .await
    .unwrap()
}

/// What a finished CLI run left behind.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `sluice ARGS...` to completion (killed and reported after
/// `within`), off the async worker threads. The environment's admin token
/// is removed so only `args` decide.
pub async fn run_cli(args: &[&str], within: Duration) -> CliRun {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(&args)
            .env_remove("SLUICE_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice binary starts");
        // Drain both pipes on threads so a chatty child never blocks.
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let start = Instant::now();
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if start.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "sluice {args:?} still running after {within:?}; stderr so far: {}",
                    t_err.join().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        CliRun {
            code,
            stdout: t_out.join().unwrap_or_default(),
            stderr: t_err.join().unwrap_or_default(),
        }
    })
    .await
    .unwrap()
}

/// A loopback address where nothing listens (bound, then released).
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// Connects to `to` from the loopback address `from_ip` (any 127/8
/// address works on Linux), so a test can tell its clients apart by IP.
pub async fn connect_from(from_ip: &str, to: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from_ip}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// Field helpers for JSON rows.
pub fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}
