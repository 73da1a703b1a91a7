//! The accepted client socket as hyper sees it: a plain `TcpStream` that
//! reports reads to the connection's [`Activity`] and feeds every byte
//! read to the framing tracker (ambiguous heads are refused per head).
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
use super::framing::FramingTracker;

pub struct ClientIo {
    pub stream: TcpStream,
    activity: Arc<Activity>,
    framing: FramingTracker,
}

impl ClientIo {
    pub fn new(stream: TcpStream, activity: Arc<Activity>) -> ClientIo {
        ClientIo {
            stream,
            activity,
            framing: FramingTracker::default(),
        }
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
            let this = &mut *self;
            let activity = &this.activity;
            this.framing.feed(&buf.filled()[before..], |head| {
                activity.mark_ambiguous_framing(head)
            });
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
