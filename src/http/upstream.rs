//! The upstream side of the forward proxy: a pooled hyper client whose
//! connector resolves, connects with a deadline, tunes the socket and puts
//! each connection under a registry guard.
//!
//! Invariants: a pooled connection is owned by its [`UpstreamConn`], which
//! owns its guard, so leaving the pool deregisters it; the pool has an idle
//! timeout and a timer, so idle upstream sockets do not live forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::{BoxError, MeteredBody};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::net::{connect_upstream_timed, ConnectError, ConnectErrorKind};
use crate::record::capture::UpstreamInfo;
use crate::registry::{ConnEntry, ConnGuard, ConnState, Kind, Registry};
use crate::transport::{Meter, Metered};

/// A request body as it goes upstream: throttled, metered, tapped.
pub type UpstreamBody = MeteredBody<super::throttle::ThrottledBody<hyper::body::Incoming>>;

pub type UpstreamClient = Client<Connector, UpstreamBody>;

/// Builds the pooled client for one sluice instance.
pub fn client(
    config: &Arc<Config>,
    registry: &Arc<Registry>,
    metrics: &Arc<Metrics>,
    own: &[std::net::SocketAddr],
) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(config.connector.pool_idle_timeout)
        .pool_max_idle_per_host(config.connector.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .retry_canceled_requests(true)
        .set_host(false)
        .build(Connector {
            config: config.clone(),
            registry: registry.clone(),
            metrics: metrics.clone(),
            own: own.into(),
        })
}

#[derive(Clone)]
pub struct Connector {
    config: Arc<Config>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    /// sluice's own listeners, never connected to (loop guard).
    own: Arc<[std::net::SocketAddr]>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = UpstreamConn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamConn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        let registry = self.registry.clone();
        let metrics = self.metrics.clone();
        let own = self.own.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_matches(|c| c == '[' || c == ']');
            let port = uri.port_u16().unwrap_or(80);
            if host.is_empty() {
                return Err(Box::new(ConnectError {
                    kind: ConnectErrorKind::Other,
                    target: uri.to_string(),
                    detail: "no host".into(),
                }) as BoxError);
            }
            let connect_started = tokio::time::Instant::now();
            let started = std::time::Instant::now();
            let (stream, addr, times) =
                connect_upstream_timed(host, port, &config.connector, &own).await?;
            metrics
                .upstream_connect_seconds
                .observe(started.elapsed().as_secs_f64());
            let guard = registry.register(Kind::Upstream, None);
            guard.entry().set_upstream(addr.to_string());
            guard.entry().attach_socket(&stream);
            guard.entry().set_state(ConnState::Streaming);
            let entry = guard.entry().clone();
            let info = UpstreamInfo {
                conn_id: guard.id(),
                addr,
                addr_label: compact_str::format_compact!("{addr}"),
                connect_started,
                dns: times.dns,
                connect: times.connect,
                claimed: Default::default(),
                tls: None,
            };
            Ok(UpstreamConn {
                io: TokioIo::new(Metered::new(stream, EntryBytes(entry))),
                info,
                _guard: guard,
            })
        })
    }
}

/// One pooled upstream connection and the guard that owns it.
pub struct UpstreamConn {
    io: TokioIo<Metered<TcpStream, EntryBytes>>,
    /// Handed to every response of this connection (records use it).
    info: UpstreamInfo,
    _guard: ConnGuard,
}

impl UpstreamConn {
    /// The socket, out of the pool's hands (after a WebSocket upgrade
    /// took the connection), with the guard that still owns it: keep the
    /// guard until the socket is closed.
    pub fn into_socket(self) -> (TcpStream, ConnGuard) {
        (self.io.into_inner().into_inner(), self._guard)
    }
}

/// Counts an upstream socket's bytes into its registry entry.
pub struct EntryBytes(Arc<ConnEntry>);

impl Meter for EntryBytes {
    fn on_read(&mut self, bytes: &[u8]) {
        self.0
            .bytes_down
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
    }

    fn on_write(&mut self, n: usize) {
        self.0.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Connection for UpstreamConn {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.info.clone())
    }
}

impl Read for UpstreamConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for UpstreamConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
