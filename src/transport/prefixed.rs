//! A stream with bytes already read from it kept in front (linkerd2-proxy
//! calls it `PrefixedIo`): reads return the prefix first, then the stream;
//! writes go straight to the stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Bytes, inner: S) -> Prefixed<S> {
        Prefixed { prefix, inner }
    }

    /// The bytes not yet read from the prefix.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream and the prefix bytes nobody read yet.
    pub fn into_parts(self) -> (S, Bytes) {
        (self.inner, self.prefix)
    }

    /// Puts `earlier` (bytes read from this stream before the prefix was)
    /// in front of what is left of the prefix.
    pub fn push_front(&mut self, earlier: Bytes) {
        if earlier.is_empty() {
            return;
        }
        if self.prefix.is_empty() {
            self.prefix = earlier;
        } else {
            let mut joined = Vec::with_capacity(earlier.len() + self.prefix.len());
            joined.extend_from_slice(&earlier);
            joined.extend_from_slice(&self.prefix);
            self.prefix = joined.into();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefix_is_read_first_then_the_stream() {
        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(b" world").await.expect("write");
        drop(b);
        let mut p = Prefixed::new(Bytes::from_static(b"lo"), a);
        p.push_front(Bytes::from_static(b"hel"));
        let mut all = String::new();
        p.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "hello world");
    }

    #[tokio::test]
    async fn a_small_read_takes_only_part_of_the_prefix() {
        let (a, _b) = tokio::io::duplex(64);
        let mut p = Prefixed::new(Bytes::from_static(b"abcdef"), a);
        let mut two = [0u8; 2];
        p.read_exact(&mut two).await.expect("read");
        assert_eq!(&two, b"ab");
        assert_eq!(p.prefix(), b"cdef");
        let (_, rest) = p.into_parts();
        assert_eq!(&rest[..], b"cdef");
    }
}
