//! CONNECT after keep-alive requests: hyper read the head; the tunnel
//! opens through the one path ([`super::open`]), hyper answers 200, and
//! the client stream is taken back from hyper's upgrade (with the bytes
//! hyper read behind the head) for [`super::carry`].

use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::super::answer::{empty, ProxyBody};
use super::super::context::{ConnCtx, HttpContext};
use super::super::io::ClientIo;
use super::{not_here, ConnectRequest, Refused};
use crate::registry::{CloseReason, ConnState, Side};

/// Answers a CONNECT read by hyper. A refusal is answered here; a close
/// never completes (the connection's own loop drops it on the kill).
pub(in crate::http) async fn handle(
    mut req: Request<Incoming>,
    ctx: &Arc<HttpContext>,
    conn: &ConnCtx,
) -> Response<ProxyBody> {
    if conn.origin.inside.is_some() || req.version() == http::Version::HTTP_2 {
        conn.entry
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ctx.metrics.count_request(req.method(), 400);
        return not_here(
            "CONNECT is served on the proxy's own HTTP/1.1 connections, not inside a tunnel or over HTTP/2",
        )
        .into_response();
    }
    let connect = ConnectRequest {
        target: req.uri().to_string(),
        proxy_authorization: req.headers().get(header::PROXY_AUTHORIZATION).cloned(),
        started: std::time::Instant::now(),
    };
    let opened = super::open(ctx, &conn.entry, conn.peer, connect).await;
    conn.entry.set_state(ConnState::ReadingHeaders);
    let opened = match opened {
        Ok(opened) => opened,
        Err(Refused::Answer { failure, challenge }) => {
            let mut resp = failure.into_response();
            if challenge {
                resp.headers_mut().insert(
                    header::PROXY_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"sluice\""),
                );
            }
            return resp;
        }
        Err(Refused::Close(reason)) => {
            ctx.registry.kill(conn.entry.id, reason);
            return std::future::pending().await;
        }
        Err(Refused::Killed) => return std::future::pending().await,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let upgrade_deadline = ctx.config.client.header_timeout;
    let (ctx, peer, shutdown) = (ctx.clone(), conn.peer, conn.shutdown.clone());
    tokio::spawn(async move {
        let guard = &opened.guard;
        let entry = guard.entry().clone();
        let upgraded = tokio::select! {
            r = tokio::time::timeout(upgrade_deadline, on_upgrade) => r,
            _ = entry.kill.cancelled() => return,
        };
        let upgraded = match upgraded {
            Ok(Ok(u)) => u,
            Ok(Err(e)) => {
                guard.set_reason(CloseReason::Error(
                    Side::Client,
                    format!("upgrade failed: {e}"),
                ));
                return;
            }
            Err(_) => {
                guard.set_reason(CloseReason::HeaderTimeout);
                return;
            }
        };
        let Ok(parts) = upgraded.downcast::<TokioIo<ClientIo>>() else {
            guard.set_reason(CloseReason::Error(
                Side::Sluice,
                "upgraded stream of unexpected type".into(),
            ));
            return;
        };
        // Bytes the client sent right behind the CONNECT head (a
        // pipelined ClientHello) were read by hyper: they go first.
        let client = match parts.io.into_inner().into_inner().unread(parts.read_buf) {
            Ok(c) => c,
            Err(e) => {
                guard.set_reason(CloseReason::Error(Side::Sluice, e.to_string()));
                return;
            }
        };
        super::carry(client, opened, peer, ctx, shutdown).await;
    });
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::OK;
    resp
}
