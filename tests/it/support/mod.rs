//! Test support: origins, proxies (in-process and as a real process),
//! raw clients and /proc readers. Every server here binds an ephemeral
//! loopback port and lives until its task or process is dropped.
#![allow(dead_code)]

pub mod admin;
pub mod http_client;
pub mod netns;
pub mod origin;
pub mod process;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use sluice::{Config, Proxy};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Starts an in-process proxy on an ephemeral loopback port, with `tweak`
/// applied to the defaults.
pub async fn start_proxy(tweak: impl FnOnce(&mut Config)) -> Proxy {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    tweak(&mut c);
    let p = Proxy::start(c).await.expect("proxy starts");
    remember_token(&p);
    p
}

/// Tells the admin helpers the proxy's generated admin token.
pub fn remember_token(p: &Proxy) {
    if let (Some(a), Some(t), true) = (p.admin_addr, p.admin_token(), p.admin_token_generated()) {
        admin::remember(a, t);
    }
}

/// [`start_proxy`], returning the start error instead of panicking.
pub async fn start_proxy_result(
    tweak: impl FnOnce(&mut Config),
) -> Result<Proxy, sluice::StartError> {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    };
    tweak(&mut c);
    let p = Proxy::start(c).await?;
    remember_token(&p);
    Ok(p)
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A parsed HTTP/1.1 response head plus its body (read per Content-Length,
/// chunked, or to EOF).
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one response from `r` (a HEAD/CONNECT response has no body: pass
/// `no_body`).
pub async fn read_response<R: tokio::io::AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    no_body: bool,
) -> std::io::Result<RawResponse> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut resp = RawResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if no_body || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(resp);
    }
    if let Some(len) = resp.header("content-length") {
        let n: usize = len.parse().map_err(std::io::Error::other)?;
        resp.body.resize(n, 0);
        r.read_exact(&mut resp.body).await?;
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            line.clear();
            r.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(std::io::Error::other)?;
            if size == 0 {
                line.clear();
                r.read_line(&mut line).await?;
                break;
            }
            let start = resp.body.len();
            resp.body.resize(start + size, 0);
            r.read_exact(&mut resp.body[start..]).await?;
            line.clear();
            r.read_line(&mut line).await?;
        }
    } else {
        r.read_to_end(&mut resp.body).await?;
    }
    Ok(resp)
}

/// Sends raw bytes to `addr` and reads one response.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<RawResponse> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let mut r = BufReader::new(s);
    read_response(&mut r, false).await
}

/// Opens a CONNECT tunnel through the proxy and returns the stream after the
/// 200 answer.
pub async fn connect_tunnel(proxy: SocketAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    // Read the head byte by byte so no tunnel bytes are swallowed.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("CONNECT refused: {text}")));
    }
    Ok(s)
}

/// Deterministic payload byte `i` for a stream seeded by `seed`.
pub fn pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = (offset + i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
        *b = (x >> 29) as u8;
    }
}
