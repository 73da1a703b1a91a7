//! A small raw HTTP/1.1 client for the forward-proxy tests: requests are
//! written byte for byte, heads are parsed by hand and bodies are read
//! incrementally (Content-Length, chunked or to EOF), so a test controls
//! exactly how fast it sends and reads.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// Reads one response head (status line and headers).
pub async fn read_head<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> io::Result<Head> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Head { status, headers })
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
        if head
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            BodyReader::Chunked(None)
        } else if let Some(n) = head.header("content-length") {
            BodyReader::Length(n.parse().unwrap_or(0))
        } else if head.status == 204 || head.status == 304 {
            BodyReader::Done
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

/// A full response: head and body.
#[derive(Debug)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Reads one complete response from a connection that stays usable.
pub async fn read_full<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> io::Result<Response> {
    let head = read_head(r).await?;
    let body = BodyReader::for_head(&head).read_all(r).await?;
    Ok(Response { head, body })
}

/// A keep-alive client connection to the proxy.
pub struct Client {
    pub r: BufReader<TcpStream>,
}

impl Client {
    pub async fn connect(proxy: SocketAddr) -> io::Result<Client> {
        Ok(Client {
            r: BufReader::new(TcpStream::connect(proxy).await?),
        })
    }

    pub async fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.r.get_mut().write_all(raw).await
    }

    /// Sends `GET http://{origin}{path}` (keep-alive) and reads the answer.
    pub async fn get(&mut self, origin: SocketAddr, path: &str) -> io::Result<Response> {
        self.send(
            format!("GET http://{origin}{path} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
        )
        .await?;
        read_full(&mut self.r).await
    }

    pub async fn read_response(&mut self) -> io::Result<Response> {
        read_full(&mut self.r).await
    }

    /// Waits until the proxy closes this connection (EOF or reset),
    /// discarding anything it sends. Returns how long that took, or `None`
    /// if it was still open after `within`.
    pub async fn wait_closed(&mut self, within: Duration) -> Option<Duration> {
        wait_closed(&mut self.r, within).await
    }
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

/// One request on a fresh connection that asks to close afterwards.
pub async fn get_once(proxy: SocketAddr, origin: SocketAddr, path: &str) -> io::Result<Response> {
    let mut c = Client::connect(proxy).await?;
    c.send(
        format!(
            "GET http://{origin}{path} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    c.read_response().await
}

/// Sends raw bytes on a fresh connection and reads one response.
pub async fn exchange(proxy: SocketAddr, raw: &[u8]) -> io::Result<Response> {
    let mut c = Client::connect(proxy).await?;
    c.send(raw).await?;
    c.read_response().await
}

/// SHA-256 of `len` bytes of `super::pattern(seed, ..)`.
pub fn pattern_sha256(seed: u64, len: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        super::pattern(seed, off, &mut buf[..n]);
        h.update(&buf[..n]);
        off += n as u64;
    }
    h.finalize().into()
}
