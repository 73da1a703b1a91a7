//! The tests' one HTTP/1.1 client. A request is bytes on a socket: a
//! [`Request`] builds an ordinary one, and a test that needs exact bytes
//! (smuggling, malformed heads, pipelining) writes them itself. Answers
//! are parsed here only: a head ([`read_head`]), then a body read
//! incrementally ([`BodyReader`]: Content-Length, chunked with trailers,
//! or to EOF), so a test controls how fast it sends and reads.
//!
//! [`Client`] is one keep-alive connection; [`exchange`], [`send`] and
//! [`get_once`] are one request on a fresh connection; [`connect_tunnel`]
//! opens a CONNECT tunnel without reading a byte past the answer's head.

use std::fmt::Display;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A request written byte for byte: the request line, the headers in the
/// order given, and a body (with its Content-Length) if one was set.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: &str, target: impl Display) -> Request {
        Request {
            method: method.to_string(),
            target: target.to_string(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn get(target: impl Display) -> Request {
        Request::new("GET", target)
    }

    pub fn method(&self) -> &str {
        &self.method
    }

    pub fn header(mut self, name: &str, value: impl Display) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Every pair of `headers`, in order.
    pub fn headers(self, headers: &[(&str, &str)]) -> Request {
        headers
            .iter()
            .fold(self, |req, (name, value)| req.header(name, value))
    }

    /// `Authorization: Bearer TOKEN`, when there is a token.
    pub fn bearer(self, token: Option<&str>) -> Request {
        match token {
            Some(t) => self.header("Authorization", format!("Bearer {t}")),
            None => self,
        }
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(name))
    }

    /// The body, sent after a `Content-Length` header (also when empty).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (k, v) in &self.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(body) = &self.body {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(self.body.as_deref().unwrap_or_default());
        bytes
    }
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parses a status line and header lines (without the final empty line).
fn parse_head(text: &str) -> io::Result<Head> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let status: u16 = first
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {first:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Head { status, headers })
}

/// Reads one response head (status line and headers). A stream that ends
/// before the empty line is an `UnexpectedEof` error.
pub async fn read_head<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> io::Result<Head> {
    let mut text = String::new();
    if r.read_line(&mut text).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line.trim_end().is_empty() {
            return parse_head(&text);
        }
        text.push_str(&line);
    }
}

/// Reads a response head byte by byte, so not one byte after it leaves
/// the socket (a CONNECT answer is followed by the tunnel's own bytes).
/// Returns the head as text, with its final empty line.
pub async fn read_head_unbuffered(s: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("closed mid-head: {:?}", String::from_utf8_lossy(&head)),
            ));
        }
        head.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Incremental body decoder for one response.
#[derive(Debug)]
pub enum BodyReader {
    Length(u64),
    /// Bytes left in the current chunk; `None` before a size line.
    Chunked(Option<u64>),
    Eof,
    Done,
}

impl BodyReader {
    pub fn for_head(head: &Head) -> BodyReader {
        if head.status == 204 || head.status == 304 || (100..200).contains(&head.status) {
            BodyReader::Done
        } else if head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            BodyReader::Chunked(None)
        } else if let Some(n) = head.header("content-length") {
            BodyReader::Length(n.parse().unwrap_or(0))
        } else {
            BodyReader::Eof
        }
    }

    /// Reads up to `buf.len()` body bytes; 0 means the body ended cleanly.
    /// A stream that ends before the framing says it should is an
    /// `UnexpectedEof` error.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut BufReader<R>,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        loop {
            match self {
                BodyReader::Done => return Ok(0),
                BodyReader::Eof => {
                    let n = r.read(buf).await?;
                    if n == 0 {
                        *self = BodyReader::Done;
                    }
                    return Ok(n);
                }
                BodyReader::Length(0) => {
                    *self = BodyReader::Done;
                }
                BodyReader::Length(left) => {
                    let want = (*left).min(buf.len() as u64) as usize;
                    let n = r.read(&mut buf[..want]).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    *left -= n as u64;
                    return Ok(n);
                }
                BodyReader::Chunked(None) => {
                    let mut line = String::new();
                    if r.read_line(&mut line).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                        .map_err(|e| io::Error::other(format!("bad chunk size {line:?}: {e}")))?;
                    if size == 0 {
                        // Trailers, then the empty line.
                        loop {
                            line.clear();
                            if r.read_line(&mut line).await? == 0 {
                                return Err(io::ErrorKind::UnexpectedEof.into());
                            }
                            if line.trim_end().is_empty() {
                                break;
                            }
                        }
                        *self = BodyReader::Done;
                    } else {
                        *self = BodyReader::Chunked(Some(size));
                    }
                }
                BodyReader::Chunked(Some(0)) => {
                    let mut crlf = [0u8; 2];
                    r.read_exact(&mut crlf).await?;
                    if &crlf != b"\r\n" {
                        return Err(io::Error::other("chunk not followed by CRLF"));
                    }
                    *self = BodyReader::Chunked(None);
                }
                BodyReader::Chunked(Some(left)) => {
                    let want = (*left).min(buf.len() as u64) as usize;
                    let n = r.read(&mut buf[..want]).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    *left -= n as u64;
                    return Ok(n);
                }
            }
        }
    }

    /// Reads the whole body into memory (small bodies only).
    pub async fn read_all<R: AsyncRead + Unpin>(
        &mut self,
        r: &mut BufReader<R>,
    ) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.read(r, &mut buf).await?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }
}

/// A whole response: status, headers and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one complete response from a connection that stays usable.
pub async fn read_response<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> io::Result<Response> {
    let head = read_head(r).await?;
    let body = BodyReader::for_head(&head).read_all(r).await?;
    Ok(Response {
        status: head.status,
        headers: head.headers,
        body,
    })
}

/// A keep-alive client connection to the proxy.
pub struct Client {
    pub r: BufReader<TcpStream>,
}

impl Client {
    pub async fn connect(proxy: SocketAddr) -> io::Result<Client> {
        Ok(Client::from_stream(TcpStream::connect(proxy).await?))
    }

    /// A client on a connection the test opened itself.
    pub fn from_stream(s: TcpStream) -> Client {
        Client {
            r: BufReader::new(s),
        }
    }

    /// This end's address, as the proxy's inventory shows the client.
    pub fn local_addr(&self) -> SocketAddr {
        self.r
            .get_ref()
            .local_addr()
            .expect("a connected socket has a local address")
    }

    pub async fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.r.get_mut().write_all(raw).await
    }

    /// Sends `GET http://{origin}{path}` (keep-alive) and reads the answer.
    pub async fn get(&mut self, origin: SocketAddr, path: &str) -> io::Result<Response> {
        self.send(&forward_get(origin, path).to_bytes()).await?;
        self.read_response().await
    }

    pub async fn read_response(&mut self) -> io::Result<Response> {
        read_response(&mut self.r).await
    }

    /// Waits until the proxy closes this connection (EOF or reset),
    /// discarding anything it sends. Returns how long that took, or `None`
    /// if it was still open after `within`.
    pub async fn wait_closed(&mut self, within: Duration) -> Option<Duration> {
        wait_closed(&mut self.r, within).await
    }
}

/// `GET http://{origin}{path}` in absolute form, as a client of a forward
/// proxy sends it.
fn forward_get(origin: SocketAddr, path: &str) -> Request {
    Request::get(format!("http://{origin}{path}")).header("Host", origin)
}

/// Reads and discards until EOF or an error; `None` if still open after `within`.
pub async fn wait_closed<R: AsyncRead + Unpin>(r: &mut R, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    let closed = tokio::time::timeout(within, async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.ok().map(|_| start.elapsed())
}

/// One request through the proxy on a fresh connection that asks to
/// close afterwards.
pub async fn get_once(proxy: SocketAddr, origin: SocketAddr, path: &str) -> io::Result<Response> {
    send(
        proxy,
        &forward_get(origin, path).header("Connection", "close"),
    )
    .await
}

/// Sends raw bytes on a fresh connection to `addr` and reads one response.
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> io::Result<Response> {
    let mut c = Client::connect(addr).await?;
    c.send(raw).await?;
    c.read_response().await
}

/// Sends `req` on a fresh connection to `addr` and reads one response (a
/// `HEAD` answer has no body).
pub async fn send(addr: SocketAddr, req: &Request) -> io::Result<Response> {
    let mut c = Client::connect(addr).await?;
    c.send(&req.to_bytes()).await?;
    if req.method() == "HEAD" {
        let head = read_head(&mut c.r).await?;
        return Ok(Response {
            status: head.status,
            headers: head.headers,
            body: Vec::new(),
        });
    }
    c.read_response().await
}

/// Connects to `to` from the loopback address `from_ip` (any 127/8
/// address works on Linux), so a test can tell its clients apart by IP.
pub async fn connect_from(from_ip: &str, to: SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    let from: SocketAddr = format!("{from_ip}:0")
        .parse()
        .expect("a loopback address to bind");
    sock.bind(from)
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    sock.connect(to)
        .await
        .unwrap_or_else(|e| panic!("connect {from_ip} -> {to}: {e}"))
}

/// Sends `CONNECT target` (with `headers`, each line ending in CRLF) and
/// reads the answer's head without touching the bytes behind it: the
/// status, the head as text, and the stream.
pub async fn connect(
    proxy: SocketAddr,
    target: impl Display,
    headers: &str,
) -> io::Result<(u16, String, TcpStream)> {
    let mut s = TcpStream::connect(proxy).await?;
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{headers}\r\n").as_bytes())
        .await?;
    let head = read_head_unbuffered(&mut s).await?;
    let status = parse_head(&head)?.status;
    Ok((status, head, s))
}

/// Opens a CONNECT tunnel through the proxy to `target` (an address, or a
/// `host:port` text the proxy resolves) and returns the stream after the
/// 200 answer; any other answer is an error showing it.
pub async fn connect_tunnel(proxy: SocketAddr, target: impl Display) -> io::Result<TcpStream> {
    let (status, head, s) = connect(proxy, target, "").await?;
    if status != 200 {
        return Err(io::Error::other(format!("CONNECT refused: {head}")));
    }
    Ok(s)
}
