//! The ways a client can reach sluice: HTTP/1.1 to the forward proxy
//! ([`Mode::H1`]) and HTTPS through an intercepted CONNECT tunnel
//! ([`Mode::Https`]). A test written with [`per_mode!`] takes
//! its origin, its proxy and its client from the mode it is given and
//! runs once per mode, each run a test of its own (`NAME::h1`), so a mode
//! added here (HTTP/2, intercepted TLS) is its variant, its arms in the
//! methods below and one line in the macro, and every such test runs in
//! it without being touched.

use std::io;
use std::net::SocketAddr;

use sluice::{Config, Proxy};

use sluice::registry::Kind;

use super::client::{self, Client, Response};
use super::https::{self, HttpsClient};
use super::pki::{pki, OriginCert};
use super::{origin, proxy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// HTTP/1.1 in absolute form to the forward proxy.
    H1,
    /// HTTPS: CONNECT, TLS with sluice's certificate (intercepted), then
    /// HTTP/1.1 in origin form; the origin speaks TLS too.
    Https,
}

/// A client of either mode.
pub enum AnyClient {
    Plain(Client),
    Https(Box<HttpsClient>),
}

impl AnyClient {
    /// `GET path` of `origin` through the proxy, keep-alive.
    pub async fn get(&mut self, origin: SocketAddr, path: &str) -> io::Result<Response> {
        match self {
            AnyClient::Plain(c) => c.get(origin, path).await,
            AnyClient::Https(c) => c.get(origin, path).await,
        }
    }
}

impl Mode {
    /// The standard HTTP origin ([`origin::http`]) as this mode reaches it.
    pub async fn http_origin(self) -> SocketAddr {
        match self {
            Mode::H1 => origin::http().await,
            Mode::Https => {
                // HTTP/1.1, as the forward proxy's origin speaks: the same
                // test then compares like with like.
                origin::https(pki().origin_config(OriginCert::Valid, &[b"http/1.1"])).await
            }
        }
    }

    /// An in-process proxy set up for this mode, then `tweak`ed.
    pub async fn proxy(self, tweak: impl FnOnce(&mut Config)) -> Proxy {
        proxy::start(|c| {
            match self {
                Mode::H1 => {}
                Mode::Https => pki().intercept_all(c),
            }
            tweak(c)
        })
        .await
    }

    /// A keep-alive client connection to the proxy at `proxy`.
    pub async fn connect(self, proxy: SocketAddr) -> io::Result<AnyClient> {
        match self {
            Mode::H1 => Ok(AnyClient::Plain(Client::connect(proxy).await?)),
            Mode::Https => Ok(AnyClient::Https(Box::new(HttpsClient::new(proxy)))),
        }
    }

    /// The registry kind of the client's connection while it is served:
    /// an HTTP connection, or the tunnel it opened.
    pub fn client_kind(self) -> Kind {
        match self {
            Mode::H1 => Kind::Http,
            Mode::Https => Kind::Tunnel,
        }
    }

    /// The registry kind of the connection sluice sends the requests
    /// over: the pool's for the forward proxy, the tunnel's own when
    /// intercepting.
    pub fn upstream_kind(self) -> Kind {
        match self {
            Mode::H1 => Kind::Upstream,
            Mode::Https => Kind::Tunnel,
        }
    }

    /// One `GET path` of `origin` through the proxy, on a connection of
    /// its own that closes after it.
    pub async fn get_once(
        self,
        proxy: SocketAddr,
        origin: SocketAddr,
        path: &str,
    ) -> io::Result<Response> {
        match self {
            Mode::H1 => client::get_once(proxy, origin, path).await,
            Mode::Https => https::get_once(proxy, origin, path).await,
        }
    }
}

/// Defines a test that runs once per [`Mode`]: `mod NAME` holding the
/// body as `async fn run(mode: Mode)` and one test per mode calling it,
/// each with the attributes given (`#[tokio::test(...)]`).
///
/// ```ignore
/// per_mode! {
///     #[tokio::test]
///     async fn keep_alive_reuses_connections(mode) {
///         let proxy = mode.proxy(|_| {}).await;
///         ...
///     }
/// }
/// ```
macro_rules! per_mode {
    ($(#[$attr:meta])* async fn $name:ident($mode:ident) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($mode: $crate::support::mode::Mode) $body

            $(#[$attr])* async fn h1() { run($crate::support::mode::Mode::H1).await }

            $(#[$attr])* async fn https() { run($crate::support::mode::Mode::Https).await }
        }
    };
}
pub(crate) use per_mode;
