//! CONNECT as a connection's first request, served without hyper.
//!
//! Most tunnels are a connection whose only request is CONNECT. Reading
//! that one head directly (httparse over a small bounded buffer) and then
//! relaying in the same task saves hyper's connection state, the upgrade
//! hand-off and a task per tunnel: less CPU per tunnel set-up and less
//! memory per idle tunnel. Answers and limits are the same as the hyper
//! path's (400, 407, 431, 502, 504, 508), the head must arrive within the
//! header timeout, and the tunnel is owned by its own guard.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::StatusCode;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::answer::Failure;
use super::connect::{apply_rules, Route, TunnelRules};
use super::HttpContext;
use crate::net::connect_upstream_except;
use crate::record::FailedConnect;
use crate::registry::{CloseReason, ConnGuard, ConnState, Kind, Side};
use crate::relay::{relay, write_all};
use crate::users::auth::Verdict;

/// What the first bytes of a new client connection begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// `CONNECT `: served here, without hyper.
    Connect,
    /// `PRI * HT`: the HTTP/2 connection preface (prior knowledge).
    H2Preface,
    /// Anything else: HTTP/1.x for hyper.
    Other,
}

/// Waits (until `deadline`) for the first bytes of a new connection and
/// tells what they begin. Peeks without consuming and without blocking: a
/// head that arrives in pieces shorter than the method simply goes to
/// hyper.
pub async fn peek_first(stream: &TcpStream, deadline: Instant) -> Result<FirstBytes, CloseReason> {
    loop {
        match tokio::time::timeout_at(deadline, stream.readable()).await {
            Err(_) => return Err(CloseReason::HeaderTimeout),
            Ok(Err(e)) => return Err(CloseReason::from_io(Side::Client, &e)),
            Ok(Ok(())) => {}
        }
        let mut first = [std::mem::MaybeUninit::<u8>::uninit(); 8];
        match stream.try_io(tokio::io::Interest::READABLE, || {
            socket2::SockRef::from(stream).peek(&mut first)
        }) {
            Ok(0) => return Err(CloseReason::Eof),
            Ok(n) => {
                // SAFETY: peek initialised the first `n` bytes.
                let got: Vec<u8> = first[..n]
                    .iter()
                    .map(|b| unsafe { b.assume_init() })
                    .collect();
                return Ok(match &got[..] {
                    b"CONNECT " => FirstBytes::Connect,
                    b"PRI * HT" => FirstBytes::H2Preface,
                    _ => FirstBytes::Other,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(CloseReason::from_io(Side::Client, &e)),
        }
    }
}

/// Outcome of reading the head.
enum Head {
    /// Parsed: target, Proxy-Authorization value, bytes after the head.
    Connect {
        target: String,
        auth: Option<http::HeaderValue>,
        rest: Vec<u8>,
    },
    Fail(Failure),
    /// The client went away or the deadline passed; nothing to answer.
    Gone(CloseReason),
}

async fn read_head(stream: &TcpStream, ctx: &HttpContext, deadline: Instant) -> Head {
    let cfg = &ctx.config;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let ready = tokio::time::timeout_at(deadline, stream.readable()).await;
        match ready {
            Err(_) => return Head::Gone(CloseReason::HeaderTimeout),
            Ok(Err(e)) => return Head::Gone(CloseReason::from_io(Side::Client, &e)),
            Ok(Ok(())) => {}
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(buf.capacity());
        }
        match stream.try_read_buf(&mut buf) {
            Ok(0) => return Head::Gone(CloseReason::Eof),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Head::Gone(CloseReason::from_io(Side::Client, &e)),
        }
        let mut headers = vec![httparse::EMPTY_HEADER; cfg.client.max_headers];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                if len > cfg.client.max_header_size {
                    return Head::Fail(too_large());
                }
                let target = req.path.unwrap_or("").to_string();
                let auth = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
                    .and_then(|h| http::HeaderValue::from_bytes(h.value).ok());
                return Head::Connect {
                    target,
                    auth,
                    rest: buf[len..].to_vec(),
                };
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > cfg.client.max_header_size {
                    return Head::Fail(too_large());
                }
            }
            Err(httparse::Error::TooManyHeaders) => return Head::Fail(too_large()),
            Err(e) => {
                return Head::Fail(Failure::bad_request(format!(
                    "malformed CONNECT request: {e}"
                )))
            }
        }
    }
}

fn too_large() -> Failure {
    Failure::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        Side::Client,
        "head-too-large",
        "request head is larger than the limit (size or header count)",
    )
}

/// Writes a whole answer (status line, headers, body) and gives up after the
/// header timeout: a client that does not read is not waited for.
async fn answer(stream: &TcpStream, ctx: &HttpContext, bytes: &[u8]) {
    let _ = tokio::time::timeout(ctx.config.client.header_timeout, write_all(stream, bytes)).await;
}

/// Serves a connection whose first request is CONNECT. `http_guard` owns
/// the client connection until the tunnel's guard takes over.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    http_guard: ConnGuard,
    ctx: Arc<HttpContext>,
) {
    let cfg = &ctx.config;
    let entry = http_guard.entry().clone();
    let head_started = std::time::Instant::now();
    let deadline = Instant::now() + cfg.client.header_timeout;
    let head = tokio::select! {
        h = read_head(&stream, &ctx, deadline) => h,
        _ = entry.kill.cancelled() => return,
    };
    let (target, auth, rest) = match head {
        Head::Connect { target, auth, rest } => (target, auth, rest),
        Head::Fail(f) => {
            ctx.metrics
                .count_request(&http::Method::CONNECT, f.status.as_u16());
            http_guard.set_reason(CloseReason::Error(Side::Client, f.message.clone()));
            answer(&stream, &ctx, &f.to_bytes(&[])).await;
            return;
        }
        Head::Gone(reason) => {
            http_guard.set_reason(reason);
            return;
        }
    };
    entry.requests.fetch_add(1, Ordering::Relaxed);
    let user = match &ctx.auth {
        None => peer.ip().to_string(),
        Some(a) => match a.check(auth.as_ref()).await {
            Verdict::User(name) => name,
            verdict => {
                let why = verdict.reason();
                let status = verdict.status();
                let f = Failure::new(status, Side::Client, "auth", why);
                ctx.metrics
                    .count_request(&http::Method::CONNECT, status.as_u16());
                ctx.recorder.connect_failed(FailedConnect {
                    conn_id: entry.id,
                    client: peer,
                    user: None,
                    target: &target,
                    status: status.as_u16(),
                    error: why,
                    started: head_started,
                    rules: "",
                });
                answer(
                    &stream,
                    &ctx,
                    &f.to_bytes(&[("Proxy-Authenticate", "Basic realm=\"sluice\"")]),
                )
                .await;
                return;
            }
        },
    };
    if entry.set_user(user.clone()) {
        ctx.users.on_open(&user);
    }
    // The rules' explanation, once they have been asked (for records).
    let rules = std::sync::OnceLock::<String>::new();
    let fail = |f: Failure| {
        ctx.metrics
            .count_request(&http::Method::CONNECT, f.status.as_u16());
        ctx.recorder.connect_failed(FailedConnect {
            conn_id: entry.id,
            client: peer,
            user: Some(&user),
            target: &target,
            status: f.status.as_u16(),
            error: &f.message,
            started: head_started,
            rules: rules.get().map_or("", String::as_str),
        });
        ctx.users.on_request(&user, f.status.is_server_error());
        f.to_bytes(&[])
    };
    let Some((host, port)) = crate::net::split_host_port(&target) else {
        let f = Failure::bad_request(format!("CONNECT target `{target}` is not host:port"));
        answer(&stream, &ctx, &fail(f)).await;
        return;
    };
    if super::proxy_is_self(&ctx, host, port) {
        let f = Failure::new(
            StatusCode::LOOP_DETECTED,
            Side::Client,
            "loop",
            format!("CONNECT {target} is addressed to sluice itself"),
        );
        answer(&stream, &ctx, &fail(f)).await;
        return;
    }
    let plan = apply_rules(&ctx, &entry, peer.ip(), host, port).await;
    let _ = rules.set(plan.rules);
    let route = match plan.then {
        TunnelRules::Open(route) => route,
        TunnelRules::Answer(f) => {
            answer(&stream, &ctx, &fail(f)).await;
            return;
        }
        TunnelRules::Close(why) => {
            ctx.metrics.count_request(&http::Method::CONNECT, 0);
            http_guard.set_reason(CloseReason::Error(Side::Sluice, why));
            return;
        }
        TunnelRules::Killed => return,
    };
    let limits = route.limits(cfg);
    let Route { host, port, .. } = route;
    if super::proxy_is_self(&ctx, &host, port) {
        let f = Failure::new(
            StatusCode::LOOP_DETECTED,
            Side::Client,
            "loop",
            format!("CONNECT {target}: the rules send it to sluice itself ({host}:{port})"),
        );
        answer(&stream, &ctx, &fail(f)).await;
        return;
    }
    entry.set_state(ConnState::WaitingUpstream);
    let started = std::time::Instant::now();
    let connected = tokio::select! {
        r = connect_upstream_except(&host, port, &cfg.connector, &ctx.own_addrs) => r,
        _ = entry.kill.cancelled() => return,
    };
    let (upstream, addr) = match connected {
        Ok(c) => c,
        Err(e) => {
            answer(&stream, &ctx, &fail(Failure::from_connect(&e))).await;
            return;
        }
    };
    ctx.metrics
        .upstream_connect_seconds
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics.count_request(&http::Method::CONNECT, 200);
    ctx.users.on_request(&user, false);

    // The tunnel's guard takes over both sockets; the HTTP entry ends here.
    let guard = ctx.registry.register(Kind::Tunnel, Some(peer));
    let (client, upstream) = (stream, upstream);
    let tunnel = guard.entry().clone();
    tunnel.set_upstream(format!("{target} ({addr})"));
    tunnel.attach_socket(&client);
    tunnel.attach_socket(&upstream);
    tunnel.set_user(user);
    tunnel.set_rules(rules.get().cloned().unwrap_or_default());
    drop(http_guard);

    if let Err(e) = write_all(&client, b"HTTP/1.1 200 Connection Established\r\n\r\n").await {
        guard.set_reason(CloseReason::from_io(Side::Client, &e));
        return;
    }
    // Bytes the client sent right behind the head (a pipelined TLS
    // ClientHello) go first.
    if !rest.is_empty() {
        if let Err(e) = write_all(&upstream, &rest).await {
            guard.set_reason(CloseReason::from_io(Side::Upstream, &e));
            return;
        }
        tunnel
            .bytes_up
            .fetch_add(rest.len() as u64, Ordering::Relaxed);
    }
    drop(rest);
    relay(&client, &upstream, limits, &tunnel).await;
    drop((client, upstream));
    drop(guard);
}

/// An HTTP/2 client with prior knowledge on this HTTP/1.1 port: it would
/// not understand an HTTP/1.1 answer, so it gets HTTP/2's own: the server
/// preface (an empty SETTINGS frame) and a GOAWAY with
/// `HTTP_1_1_REQUIRED` (RFC 9113 7) whose debug text says why. What the
/// client sent is then drained briefly, so the close is a FIN after the
/// GOAWAY rather than a reset that could destroy it in flight.
pub async fn refuse_h2_preface(stream: &TcpStream) -> CloseReason {
    const WHY: &[u8] = b"sluice serves HTTP/1.1 on this port; send requests as HTTP/1.1";
    let mut frames = Vec::with_capacity(9 + 9 + 8 + WHY.len());
    // SETTINGS, no parameters: length 0, type 0x4, flags 0, stream 0.
    frames.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
    // GOAWAY: last stream 0, error HTTP_1_1_REQUIRED (0xd), debug data.
    let len = (8 + WHY.len()) as u32;
    frames.extend_from_slice(&len.to_be_bytes()[1..]);
    frames.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
    frames.extend_from_slice(&0u32.to_be_bytes());
    frames.extend_from_slice(&0xdu32.to_be_bytes());
    frames.extend_from_slice(WHY);
    let reason = CloseReason::Error(
        Side::Client,
        "HTTP/2 with prior knowledge on the HTTP/1.1 port (answered GOAWAY HTTP_1_1_REQUIRED)"
            .into(),
    );
    let send = async {
        write_all(stream, &frames).await?;
        socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write)?;
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 64 * 1024 {
            stream.readable().await?;
            match stream.try_read(&mut sink) {
                Ok(0) => break,
                Ok(n) => drained += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), send).await;
    reason
}
