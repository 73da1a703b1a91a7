//! Where a served client stream came from, which the HTTP serving function
//! is told alongside the stream: straight from the proxy listener, or from
//! inside a CONNECT tunnel (its authority, its connection id and the
//! tunnel's own upstream connection, [`Pinned`]).
//!
//! Invariants: a pinned upstream connection is driven by the task that
//! serves its tunnel (never a detached task), so it closes with the
//! tunnel; requests inside a tunnel go over it unless their URL or the
//! rules send them elsewhere, in which case the pool serves them.

use std::future::Future;
use std::pin::Pin;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::upstream::UpstreamBody;
use crate::config::Config;
use crate::record::capture::UpstreamInfo;

/// Where the requests of one served stream come from.
pub struct Origin {
    /// Set for HTTP served inside a CONNECT tunnel.
    pub inside: Option<Inside>,
}

/// The tunnel a stream is inside (its exchanges are recorded under the
/// tunnel's connection id: the tunnel's guard serves them).
pub struct Inside {
    /// The CONNECT target: requests in origin form are for this authority.
    pub authority: Authority,
    pub upstream: Pinned,
    /// The tunnel's upstream connection, for the records' timings.
    pub info: UpstreamInfo,
}

impl Origin {
    /// The proxy listener: requests arrive in absolute form.
    pub fn proxy() -> Origin {
        Origin { inside: None }
    }

    pub fn inside(inside: Inside) -> Origin {
        Origin {
            inside: Some(inside),
        }
    }

    /// A request target in origin form (`/path`) made absolute for the
    /// tunnel's authority; `None` when the URI needs nothing (absolute
    /// already, or not inside a tunnel).
    pub fn absolute(&self, uri: &Uri) -> Option<Uri> {
        let inside = self.inside.as_ref()?;
        if uri.scheme().is_some() {
            return None;
        }
        let mut parts = uri.clone().into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(inside.authority.clone());
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        Uri::from_parts(parts).ok()
    }

    /// The tunnel's upstream connection, when a request for `authority`
    /// (after the rules) may use it.
    pub fn pinned_for(&self, authority: &Authority, rerouted: bool) -> Option<&Inside> {
        let inside = self.inside.as_ref()?;
        let same = inside
            .authority
            .host()
            .eq_ignore_ascii_case(authority.host())
            && inside.authority.port_u16() == authority.port_u16();
        (same && !rerouted).then_some(inside)
    }
}

/// The future that drives a pinned connection's I/O.
pub type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A tunnel's own upstream HTTP connection.
pub enum Pinned {
    /// One request at a time, in order (as the client's HTTP/1.1 sends them).
    H1(Mutex<http1::SendRequest<UpstreamBody>>),
    /// Multiplexed.
    H2(http2::SendRequest<UpstreamBody>),
}

impl Pinned {
    /// Starts HTTP/1.1 (or HTTP/2 with prior knowledge) on `upstream`;
    /// the driver must be polled for any request to make progress.
    pub async fn handshake(
        upstream: TcpStream,
        h2: bool,
        config: &Config,
    ) -> Result<(Pinned, Driver), hyper::Error> {
        let io = TokioIo::new(upstream);
        if h2 {
            let (send, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .keep_alive_interval(config.connector.keepalive.idle)
                .keep_alive_timeout(config.connector.keepalive.interval)
                .max_header_list_size(config.client.max_header_size as u32)
                .handshake(io)
                .await?;
            let driver = Box::pin(async move {
                let _ = conn.await;
            });
            Ok((Pinned::H2(send), driver))
        } else {
            let (send, conn) = http1::Builder::new()
                .max_headers(config.client.max_headers)
                .handshake(io)
                .await?;
            let driver = Box::pin(async move {
                let _ = conn.await;
            });
            Ok((Pinned::H1(Mutex::new(send)), driver))
        }
    }

    /// Sends one request (its URI made origin-form for HTTP/1.1).
    pub async fn send(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        match self {
            Pinned::H1(send) => {
                let origin_form = req
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                *req.uri_mut() = Uri::from(origin_form);
                let mut send = send.lock().await;
                send.ready().await?;
                send.send_request(req).await
            }
            Pinned::H2(send) => {
                *req.version_mut() = http::Version::HTTP_2;
                let mut send = send.clone();
                send.ready().await?;
                send.send_request(req).await
            }
        }
    }
}
