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
use tokio::sync::Mutex;

use super::upstream::UpstreamBody;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
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
    /// `http` for plain HTTP in the tunnel, `https` for decrypted TLS.
    pub scheme: Scheme,
    pub upstream: Pinned,
    /// The tunnel's upstream connection, for the records' timings.
    pub info: UpstreamInfo,
    /// An intercepted tunnel's TLS facts as records hold them, encoded
    /// once for all its exchanges.
    pub tls_json: Option<std::sync::Arc<str>>,
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
        parts.scheme = Some(inside.scheme.clone());
        // The scheme's own port is left out (`https://host/`, as a
        // browser shows it).
        parts.authority = Some(
            if inside.authority.port_u16() == Some(default_port(&inside.scheme)) {
                inside
                    .authority
                    .host()
                    .parse()
                    .unwrap_or_else(|_| inside.authority.clone())
            } else {
                inside.authority.clone()
            },
        );
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        Uri::from_parts(parts).ok()
    }

    /// The tunnel's upstream connection, when a request for `authority`
    /// (after the rules) may use it.
    pub fn pinned_for(&self, authority: &Authority, rerouted: bool) -> Option<&Inside> {
        let inside = self.inside.as_ref()?;
        let port = |a: &Authority| a.port_u16().unwrap_or(default_port(&inside.scheme));
        let same = inside
            .authority
            .host()
            .eq_ignore_ascii_case(authority.host())
            && port(&inside.authority) == port(authority);
        (same && !rerouted).then_some(inside)
    }

    /// The TLS facts of the intercepted tunnel (JSON), for its records.
    pub fn tls_json(&self) -> Option<&str> {
        self.inside.as_ref()?.tls_json.as_deref()
    }

    /// Whether the stream is decrypted TLS (its requests are `https://`).
    pub fn is_tls(&self) -> bool {
        self.inside
            .as_ref()
            .is_some_and(|i| i.scheme == Scheme::HTTPS)
    }
}

/// 443 for `https`, else 80.
pub fn default_port(scheme: &Scheme) -> u16 {
    if *scheme == Scheme::HTTPS {
        443
    } else {
        80
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
    /// There is none: the upstream's TLS handshake failed, for this
    /// reason (each request is answered 502 with it).
    Unavailable(String),
}

/// A request for a tunnel whose upstream could not be reached over TLS.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamTlsFailed(pub String);

impl Pinned {
    /// Starts HTTP/1.1 (or HTTP/2 with prior knowledge, or as ALPN
    /// agreed) on `upstream`; the driver must be polled for any request
    /// to make progress.
    pub async fn handshake<I>(
        upstream: I,
        h2: bool,
        config: &Config,
    ) -> Result<(Pinned, Driver), hyper::Error>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
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
            // With upgrades: a WebSocket request for the tunnel's host
            // takes this connection over after its 101.
            let driver = Box::pin(async move {
                let _ = conn.with_upgrades().await;
            });
            Ok((Pinned::H1(Mutex::new(send)), driver))
        }
    }

    /// Sends one request (its URI made origin-form for HTTP/1.1).
    pub async fn send(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, BoxError> {
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
                Ok(send.send_request(req).await?)
            }
            Pinned::H2(send) => {
                *req.version_mut() = http::Version::HTTP_2;
                // HTTP/2 carries the authority as `:authority` (from the
                // absolute URI); a Host header beside it is a duplicate
                // that servers such as nginx refuse with 400.
                req.headers_mut().remove(http::header::HOST);
                let mut send = send.clone();
                send.ready().await?;
                Ok(send.send_request(req).await?)
            }
            Pinned::Unavailable(why) => Err(Box::new(UpstreamTlsFailed(why.clone()))),
        }
    }
}
