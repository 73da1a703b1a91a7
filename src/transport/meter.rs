//! The one metering wrapper: a stream that tells a [`Meter`] what crossed
//! it. The client side's meter feeds the connection's activity and framing
//! tracker; the upstream side's counts bytes into its registry entry.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a [`Metered`] stream reports.
pub trait Meter {
    /// `bytes` were just read from the stream.
    fn on_read(&mut self, bytes: &[u8]);
    /// `n` bytes were just written to the stream.
    fn on_write(&mut self, n: usize);
    /// An operation on the stream failed. The kernel reports a socket's
    /// error once (ETIMEDOUT from keepalive, then EPIPE): a layer above
    /// may see only the later one, so the meter is told the first.
    fn on_error(&mut self, _err: &io::Error) {}
}

fn seen<M: Meter, T>(meter: &mut M, r: &Poll<io::Result<T>>) {
    if let Poll::Ready(Err(e)) = r {
        meter.on_error(e);
    }
}

#[derive(Debug)]
pub struct Metered<S, M> {
    inner: S,
    meter: M,
}

impl<S, M: Meter> Metered<S, M> {
    pub fn new(inner: S, meter: M) -> Metered<S, M> {
        Metered { inner, meter }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin, M: Meter + Unpin> AsyncRead for Metered<S, M> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.meter.on_read(&buf.filled()[before..]);
        }
        seen(&mut this.meter, &r);
        r
    }
}

impl<S: AsyncWrite + Unpin, M: Meter + Unpin> AsyncWrite for Metered<S, M> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.meter.on_write(*n);
        }
        seen(&mut this.meter, &r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            this.meter.on_write(*n);
        }
        seen(&mut this.meter, &r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        seen(&mut this.meter, &r);
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        seen(&mut this.meter, &r);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(Default)]
    struct Tally {
        read: Vec<u8>,
        written: usize,
    }

    impl Meter for Tally {
        fn on_read(&mut self, bytes: &[u8]) {
            self.read.extend_from_slice(bytes);
        }
        fn on_write(&mut self, n: usize) {
            self.written += n;
        }
    }

    #[tokio::test]
    async fn reports_every_byte_each_way() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut m = Metered::new(a, Tally::default());
        m.write_all(b"ping!").await.expect("write");
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.expect("peer read");
        b.write_all(b"pong").await.expect("peer write");
        drop(b);
        let mut back = Vec::new();
        m.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"pong");
        assert_eq!(m.meter.read, b"pong");
        assert_eq!(m.meter.written, 5);
    }
}
