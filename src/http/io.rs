//! The accepted client socket as hyper sees it: a plain `TcpStream` that
//! reports reads to the connection's [`Activity`].
//!
//! It stays a concrete type so a CONNECT upgrade can take the `TcpStream`
//! back (hyper's `Upgraded::downcast`) and relay it with socket-level
//! control (half-close, abortive close).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::activity::Activity;

#[cfg(test)]
mod tests {
    use super::FramingScan;

    #[test]
    fn flags_heads_with_both_framing_headers_even_when_split() {
        let head = b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut s = FramingScan::default();
        assert!(s.feed(head));
        for split in 1..head.len() {
            let mut s = FramingScan::default();
            let a = s.feed(&head[..split]);
            let b = s.feed(&head[split..]);
            assert!(a || b, "split at {split}");
        }
    }

    #[test]
    fn leaves_normal_heads_alone() {
        let mut s = FramingScan::default();
        assert!(!s.feed(b"POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n"));
        assert!(!s.feed(
            b"GET http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Content-Length: 1\r\n\r\n"
        ));
    }
}

pub struct ClientIo {
    pub stream: TcpStream,
    activity: Arc<Activity>,
    scan: FramingScan,
}

impl ClientIo {
    pub fn new(stream: TcpStream, activity: Arc<Activity>) -> ClientIo {
        ClientIo {
            stream,
            activity,
            scan: FramingScan::default(),
        }
    }
}

/// Watches request-head bytes for a head that names both Content-Length
/// and Transfer-Encoding. hyper accepts such a head (Transfer-Encoding
/// wins, the connection closes after); sluice answers 400 instead, since
/// ambiguous framing is the raw material of request smuggling. Only bytes
/// read while no request is in flight are scanned, so bodies are not.
#[derive(Default)]
struct FramingScan {
    mid_line: bool,
    in_name: bool,
    name: [u8; 18],
    name_len: usize,
    saw_cl: bool,
    saw_te: bool,
    lines: u32,
}

impl FramingScan {
    /// Feeds bytes; returns true when a head with both headers just ended.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        let mut ambiguous = false;
        for &b in bytes {
            if !self.mid_line {
                if b == b'\r' {
                    continue;
                }
                if b == b'\n' {
                    // An empty line: the head ends (if one started).
                    if self.lines > 0 && self.saw_cl && self.saw_te {
                        ambiguous = true;
                    }
                    *self = FramingScan::default();
                    continue;
                }
                self.mid_line = true;
                self.in_name = true;
                self.name_len = 0;
                self.lines += 1;
            }
            if b == b'\n' {
                self.mid_line = false;
                self.in_name = false;
                continue;
            }
            if self.in_name {
                if b == b':' {
                    self.in_name = false;
                    let name = &self.name[..self.name_len];
                    if name == b"content-length" {
                        self.saw_cl = true;
                    } else if name == b"transfer-encoding" {
                        self.saw_te = true;
                    }
                } else if self.name_len < self.name.len() {
                    self.name[self.name_len] = b.to_ascii_lowercase();
                    self.name_len += 1;
                } else {
                    self.in_name = false;
                }
            }
        }
        ambiguous
    }
}

impl AsyncRead for ClientIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
            if self.activity.reading_head() {
                let this = &mut *self;
                if this.scan.feed(&buf.filled()[before..]) {
                    this.activity.mark_ambiguous_framing();
                }
            }
        }
        r
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
