//! The HTTP forward proxy: the listener and its next-layer decision, the
//! one HTTP serving function ([`serve`]), the one tunnel path
//! ([`tunnel`]) and the request path ([`proxy`]).
//!
//! Invariants: each client connection is owned by one task holding its
//! [`ConnGuard`](crate::registry::ConnGuard); the first bytes must arrive
//! within the header timeout; oversized heads get 431 and malformed ones
//! 400 (from hyper); everything else is answered by [`proxy`].

mod activity;
mod answer;
mod body;
mod context;
mod departure;
mod framing;
pub(crate) mod headers;
mod io;
mod observe;
mod origin;
mod proxy;
mod serve;
mod tamper;
mod throttle;
mod tunnel;
mod upstream;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::net::{self, accept_loop, Admission, Limiter};
use crate::registry::{CloseReason, Kind, Side};
use crate::transport::detect::{first_bytes, FirstBytes};
use crate::transport::ClientStream;
use crate::Shutdown;
pub use context::{ConnCtx, HttpContext, Shared};
use origin::Origin;
use serve::{serve_stream, HttpVersion};

/// Accepts proxy clients until shutdown.
pub async fn serve_http(
    listener: TcpListener,
    ctx: Arc<HttpContext>,
    limiter: Limiter,
    shutdown: Shutdown,
) {
    let stop = shutdown.stop_accepting.clone();
    let reg = ctx.registry.clone();
    accept_loop(
        listener,
        limiter,
        stop,
        |stream, peer, admission| {
            tokio::spawn(serve_conn(
                stream,
                peer,
                admission,
                ctx.clone(),
                shutdown.clone(),
            ));
        },
        move |stream, _peer| {
            reg.count_close(&CloseReason::RefusedAtLimit);
            refuse(stream);
        },
    )
    .await;
}

/// Past the limit: one best-effort 503 without waiting, then close.
fn refuse(stream: TcpStream) {
    let _ = stream.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nX-Sluice-Error: limit\r\nContent-Length: 49\r\n\r\nsluice: connection limit reached, try again later",
    );
}

async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    _admission: Admission,
    ctx: Arc<HttpContext>,
    shutdown: Shutdown,
) {
    let guard = ctx.registry.register(Kind::Http, Some(peer));
    // Rebound after the guard so the socket closes before deregistration.
    let stream = stream;
    let entry = guard.entry().clone();
    entry.attach_socket(&stream);
    if let Err(e) = net::tune(&stream, &ctx.config.connector.keepalive) {
        guard.set_reason(CloseReason::from_io(Side::Client, &e));
        return;
    }
    // The next-layer decision at the listener: a connection that opens
    // with CONNECT (most tunnels) has its head read without hyper; an
    // HTTP/2 client with prior knowledge is told HTTP/1.1 is required;
    // anything else is HTTP/1.x for hyper.
    let deadline = Instant::now() + ctx.config.client.header_timeout;
    let first = tokio::select! {
        r = first_bytes(&stream, deadline) => r,
        _ = entry.kill.cancelled() => return,
    };
    match first {
        Ok(FirstBytes::Connect) => {
            return tunnel::head::serve(stream, peer, guard, ctx, shutdown).await
        }
        Ok(FirstBytes::H2Preface) => {
            guard.set_reason(tunnel::head::refuse_h2_preface(&stream).await);
            return;
        }
        Ok(FirstBytes::Other) => {}
        Err(reason) => {
            guard.set_reason(reason);
            return;
        }
    }
    let stream = ClientStream::tcp_stream(stream);
    let origin = Arc::new(Origin::proxy());
    serve_stream(
        stream,
        HttpVersion::H1,
        origin,
        &guard,
        peer,
        &ctx,
        &shutdown,
        std::future::pending(),
    )
    .await;
}
