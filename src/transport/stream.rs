//! [`ClientStream`]: a client connection as every layer above the
//! listener sees it, with a way back to its TCP socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::prefixed::Prefixed;

/// A client connection: TCP (with any bytes already read kept in front),
/// or a TLS server session over another client stream (HTTPS
/// interception decrypts into this).
#[derive(Debug)]
pub enum ClientStream {
    Tcp(Prefixed<TcpStream>),
    Tls(Box<tokio_rustls::server::TlsStream<ClientStream>>),
}

impl ClientStream {
    /// A fresh TCP connection, nothing read from it yet.
    pub fn tcp_stream(stream: TcpStream) -> ClientStream {
        ClientStream::Tcp(Prefixed::new(Bytes::new(), stream))
    }

    /// A TCP connection from which `read` was already taken.
    pub fn with_read(stream: TcpStream, read: Bytes) -> ClientStream {
        ClientStream::Tcp(Prefixed::new(read, stream))
    }

    /// The TCP socket under every layer: for socket options, the kernel
    /// cross-check and departure checks.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Tcp(p) => p.get_ref(),
            ClientStream::Tls(t) => t.get_ref().0.tcp(),
        }
    }

    /// Bytes read off the socket that no reader has taken yet (nothing
    /// for TLS: its leftovers are inside the session).
    pub fn unread_bytes(&self) -> &[u8] {
        match self {
            ClientStream::Tcp(p) => p.prefix(),
            ClientStream::Tls(_) => &[],
        }
    }

    /// Whether the bytes on the wire are this stream's bytes (no TLS
    /// layer): a plain stream can be relayed with splice.
    pub fn is_plain(&self) -> bool {
        matches!(self, ClientStream::Tcp(_))
    }

    /// Back to the raw socket, with the bytes read from it that nobody
    /// consumed; `Err` gives a TLS stream back unchanged (its bytes on the
    /// wire are ciphertext).
    pub fn into_tcp(self) -> Result<(TcpStream, Bytes), ClientStream> {
        match self {
            ClientStream::Tcp(p) => Ok(p.into_parts()),
            tls => Err(tls),
        }
    }

    /// Puts `earlier` (bytes read from this stream by a layer that gives
    /// it back, such as hyper after an upgrade) in front of what it has
    /// not read yet. Only a plain stream takes them; a TLS stream's
    /// leftovers are plaintext and are refused.
    pub fn unread(self, earlier: Bytes) -> Result<ClientStream, io::Error> {
        match self {
            ClientStream::Tcp(mut p) => {
                p.push_front(earlier);
                Ok(ClientStream::Tcp(p))
            }
            tls if earlier.is_empty() => Ok(tls),
            ClientStream::Tls(_) => Err(io::Error::other(
                "bytes read from a decrypted stream cannot be put back",
            )),
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            ClientStream::Tcp($s) => $e,
            ClientStream::Tls($s) => $e,
        }
    };
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ClientStream::Tcp(s) => s.is_write_vectored(),
            ClientStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::rustls;

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (c.expect("connect"), s.expect("accept").0)
    }

    #[tokio::test]
    async fn plain_stream_reads_its_prefix_then_gives_the_socket_back() {
        let (mut client, server) = pair().await;
        let peer = server.peer_addr().expect("peer");
        let stream = ClientStream::with_read(server, Bytes::from_static(b"head "))
            .unread(Bytes::from_static(b"hyper-read "))
            .expect("plain takes leftovers");
        assert_eq!(stream.tcp().peer_addr().expect("peer"), peer);
        assert!(stream.is_plain());
        client.write_all(b"wire").await.expect("write");
        drop(client);
        let mut stream = stream;
        let mut all = String::new();
        stream.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "hyper-read head wire");
        let (tcp, rest) = stream.into_tcp().expect("plain");
        assert!(rest.is_empty());
        assert_eq!(tcp.peer_addr().expect("peer"), peer);
    }

    #[tokio::test]
    async fn tls_stream_decrypts_and_still_reaches_its_socket() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = rcgen::generate_simple_self_signed(vec!["sluice.test".into()]).expect("cert");
        let der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        let server_cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).expect("root");
        let client_cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();

        let (client_tcp, server_tcp) = pair().await;
        let client_addr = client_tcp.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
        let name = rustls::pki_types::ServerName::try_from("sluice.test").expect("name");
        let (server, client) = tokio::join!(
            acceptor.accept(ClientStream::tcp_stream(server_tcp)),
            connector.connect(name, client_tcp)
        );
        let mut server = ClientStream::Tls(Box::new(server.expect("server handshake")));
        let mut client = client.expect("client handshake");
        assert!(!server.is_plain());
        assert_eq!(server.tcp().peer_addr().expect("peer"), client_addr);

        client.write_all(b"secret").await.expect("write");
        let mut got = [0u8; 6];
        server.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"secret");
        server.write_all(b"ok").await.expect("write back");
        server.flush().await.expect("flush");
        let mut back = [0u8; 2];
        client.read_exact(&mut back).await.expect("read back");
        assert_eq!(&back, b"ok");

        let server = server
            .unread(Bytes::new())
            .expect("nothing to put back is fine");
        assert!(server.unread(Bytes::from_static(b"x")).is_err());
    }
}
