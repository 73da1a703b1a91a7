//! HTTP/2 on intercepted connections: flow control (a slow stream stalls
//! only itself), the attacks HTTP/2 servers must refuse (rapid reset,
//! HPACK bombs, CONTINUATION floods), GOAWAY from the origin and the idle
//! deadline. The client is hyper's HTTP/2 client, or raw frames written
//! by hand for the attacks, over TLS that trusts sluice's CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sluice::registry::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::support::https::{self, Opened};
use crate::support::pki::{pki, OriginCert};
use crate::support::{bounded, eventually, origin, proxy};

type Tls = TlsStream<TcpStream>;

/// An intercepting proxy (no admin server), then `tweak`ed.
async fn intercepting(tweak: impl FnOnce(&mut sluice::Config)) -> sluice::Proxy {
    proxy::start(|c| {
        pki().intercept_all(c);
        tweak(c)
    })
    .await
}

/// A decrypted tunnel to `origin` that agreed to h2 with sluice.
async fn h2_tunnel(proxy: SocketAddr, origin: SocketAddr) -> Tls {
    match https::open(proxy, origin, &[b"h2"]).await.expect("tunnel") {
        Opened::Tls(t) => {
            let tls = *t.into_inner();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            tls
        }
        Opened::Refused(r) => panic!("CONNECT refused: {}", r.text()),
    }
}

type Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// hyper's HTTP/2 client on `tls`; the connection task is returned so a
/// test can see it end.
async fn h2_client(tls: Tls) -> (Sender, tokio::task::JoinHandle<()>) {
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake with sluice");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

fn get(port: u16, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("https://localhost:{port}{path}"))
        .body(Empty::new())
        .unwrap()
}

/// An h2 origin whose `/endless` streams 64 KiB chunks as fast as it is
/// allowed to, counting what it managed to hand over; `/small` answers.
async fn counting_origin(sent: Arc<AtomicU64>) -> SocketAddr {
    let config = pki().origin_config(OriginCert::Valid, &[b"h2"]);
    // The handler is a plain function (the origin copies it per
    // connection): the counter it adds to is this process's one.
    let _ = COUNTER.set(sent);
    origin::https_with(config, counted).await
}

static COUNTER: std::sync::OnceLock<Arc<AtomicU64>> = std::sync::OnceLock::new();

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn counted(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.uri().path() != "/endless" {
        return Ok(Response::new(
            Full::new(Bytes::from_static(b"small")).boxed(),
        ));
    }
    let sent = COUNTER.get().cloned().unwrap_or_default();
    let chunks = futures_stream(move || {
        sent.fetch_add(64 * 1024, Ordering::Relaxed);
        Ok(Frame::data(Bytes::from(vec![b'e'; 64 * 1024])))
    });
    Ok(Response::new(BodyExt::boxed(StreamBody::new(chunks))))
}

/// An endless stream whose items are made only when polled: what it made
/// is what the reader (sluice) took.
fn futures_stream<F>(next: F) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, Infallible>>
where
    F: FnMut() -> Result<Frame<Bytes>, Infallible> + Unpin,
{
    struct Gen<F>(F);
    impl<F: FnMut() -> Result<Frame<Bytes>, Infallible> + Unpin> futures_core::Stream for Gen<F> {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(Some((self.0)()))
        }
    }
    Gen(next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_nobody_reads_stalls_only_itself_and_sluice_buffers_a_bounded_amount() {
    bounded(Duration::from_secs(30), async {
        let sent = Arc::new(AtomicU64::new(0));
        let origin = counting_origin(sent.clone()).await;
        let proxy = intercepting(|_| {}).await;
        let (mut send, _conn) = h2_client(h2_tunnel(proxy.addr, origin).await).await;
        // The endless stream: its head is read, its body never.
        let endless = send
            .send_request(get(origin.port(), "/endless"))
            .await
            .unwrap();
        assert_eq!(endless.status(), 200);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let stalled_at = sent.load(Ordering::Relaxed);
        // Another stream on the same connection still flows.
        let started = Instant::now();
        send.ready().await.unwrap();
        let small = send
            .send_request(get(origin.port(), "/small"))
            .await
            .unwrap();
        let body = small.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"small");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let later = sent.load(Ordering::Relaxed);
        // Flow control holds the origin back: what left it is bounded by
        // the windows and buffers on the way (client window, sluice's
        // send buffer, socket buffers), not by the 1.5 s it had.
        eprintln!(
            "the origin handed over {} KiB, then {} KiB",
            stalled_at >> 10,
            later >> 10
        );
        assert!(
            later < 24 << 20,
            "sluice pulled {later} bytes for a stream nobody reads"
        );
        assert!(
            later - stalled_at < 2 << 20,
            "still pulling: {stalled_at} -> {later}"
        );
        drop(endless);
    })
    .await;
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// A request header block: GET https://localhost/ from the static table,
/// then `extra` (already HPACK-encoded).
fn request_block(extra: &[u8]) -> Vec<u8> {
    let mut b = vec![0x82, 0x87, 0x84, 0x41, 9];
    b.extend_from_slice(b"localhost");
    b.extend_from_slice(extra);
    b
}

/// Reads frames until GOAWAY (its error code), the end of the stream or
/// `within`; also returns the kinds of frames seen.
async fn read_until_goaway(tls: &mut Tls, within: Duration) -> (Option<u32>, Vec<u8>) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut head = [0u8; 9];
        let read = tokio::time::timeout_at(deadline, tls.read_exact(&mut head)).await;
        let Ok(Ok(_)) = read else {
            return (None, seen);
        };
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if tokio::time::timeout_at(deadline, tls.read_exact(&mut payload))
            .await
            .map_or(true, |r| r.is_err())
        {
            return (None, seen);
        }
        seen.push(head[3]);
        if head[3] == GOAWAY && payload.len() >= 8 {
            return (
                Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ])),
                seen,
            );
        }
    }
}

/// An h2 origin that counts the requests reaching it.
async fn request_counting_origin(count: &'static AtomicU64) -> SocketAddr {
    let config = pki().origin_config(OriginCert::Valid, &[b"h2"]);
    origin::https_with(config, move |_req: Request<Incoming>| async move {
        count.fetch_add(1, Ordering::Relaxed);
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_gets_goaway_and_the_origin_is_spared() {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    bounded(Duration::from_secs(30), async {
        let origin = request_counting_origin(&SEEN).await;
        let proxy = intercepting(|_| {}).await;
        let mut tls = h2_tunnel(proxy.addr, origin).await;
        let mut burst = PREFACE.to_vec();
        burst.extend(frame(SETTINGS, 0, 0, &[]));
        // CVE-2023-44487: open a stream and cancel it at once, 1,000 times.
        for i in 0..1000u32 {
            let id = 2 * i + 1;
            burst.extend(frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                id,
                &request_block(&[]),
            ));
            burst.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        let _ = tls.write_all(&burst).await;
        let (code, _) = read_until_goaway(&mut tls, Duration::from_secs(5)).await;
        // ENHANCE_YOUR_CALM (0xb).
        assert_eq!(code, Some(0xb), "sluice must send GOAWAY ENHANCE_YOUR_CALM");
        let reached = SEEN.load(Ordering::Relaxed);
        assert!(
            reached < 200,
            "{reached} of 1000 cancelled requests reached the origin"
        );
        // Everyone else is still served.
        let (mut send, _c) = h2_client(h2_tunnel(proxy.addr, origin).await).await;
        let r = send.send_request(get(origin.port(), "/")).await.unwrap();
        assert_eq!(r.status(), 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpack_bomb_and_a_continuation_flood_never_reach_the_origin() {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    bounded(Duration::from_secs(30), async {
        let origin = request_counting_origin(&SEEN).await;
        let proxy = intercepting(|_| {}).await;

        // HPACK bomb: one 4 KiB header put in the dynamic table, then
        // referenced 4,000 times: 16 MB of headers from 8 KB of frame.
        let mut tls = h2_tunnel(proxy.addr, origin).await;
        let mut extra = vec![0x40, 1, b'x', 0x7f, 0x81, 0x1f]; // literal, indexed; len 4096
        extra.extend(std::iter::repeat_n(b'a', 4096));
        extra.extend(std::iter::repeat_n(0xbe, 4000)); // dynamic index 62
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        let block = request_block(&extra);
        // A header block may span HEADERS and CONTINUATION frames of at
        // most 16 KiB each.
        let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
        for (i, c) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            let (kind, flags) = match (i, last) {
                (0, true) => (HEADERS, END_STREAM | END_HEADERS),
                (0, false) => (HEADERS, END_STREAM),
                (_, true) => (CONTINUATION, END_HEADERS),
                (_, false) => (CONTINUATION, 0),
            };
            out.extend(frame(kind, flags, 1, c));
        }
        let _ = tls.write_all(&out).await;
        let (_, seen) = read_until_goaway(&mut tls, Duration::from_secs(3)).await;
        assert_eq!(
            SEEN.load(Ordering::Relaxed),
            0,
            "the bomb reached the origin"
        );
        assert!(
            !seen.is_empty(),
            "sluice answered the bomb (431, a reset or GOAWAY)"
        );

        // CONTINUATION flood: a header block that never ends.
        let mut tls = h2_tunnel(proxy.addr, origin).await;
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        out.extend(frame(HEADERS, END_STREAM, 1, &request_block(&[])));
        let mut junk = Vec::new();
        for i in 0..200u32 {
            // Literal without indexing, a fresh name each time.
            let name = format!("h{i:05}");
            junk.push(0x00);
            junk.push(name.len() as u8);
            junk.extend_from_slice(name.as_bytes());
            junk.extend_from_slice(&[0x7f, 0x81, 0x07]); // len 1024
            junk.extend(std::iter::repeat_n(b'v', 1024));
        }
        let started = Instant::now();
        for _ in 0..50 {
            if tls
                .write_all(&frame(CONTINUATION, 0, 1, &junk))
                .await
                .is_err()
            {
                break;
            }
        }
        let (code, _) = read_until_goaway(&mut tls, Duration::from_secs(5)).await;
        eprintln!(
            "CONTINUATION flood ended after {:?}, GOAWAY {code:?}",
            started.elapsed()
        );
        assert_eq!(
            SEEN.load(Ordering::Relaxed),
            0,
            "the flood reached the origin"
        );
        // And sluice still serves.
        let (mut send, _c) = h2_client(h2_tunnel(proxy.addr, origin).await).await;
        let r = send.send_request(get(origin.port(), "/")).await.unwrap();
        assert_eq!(r.status(), 200);
    })
    .await;
}

/// An h2 origin whose `/drain` sends GOAWAY on its connection and then
/// answers after 300 ms (the stream was below last-stream-id: it finishes).
async fn draining_origin() -> SocketAddr {
    let config = pki().origin_config(OriginCert::Valid, &[b"h2"]);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let drain = Arc::new(tokio::sync::Notify::new());
                let d = drain.clone();
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let d = d.clone();
                    async move {
                        if req.uri().path() == "/drain" {
                            d.notify_one();
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"done"))))
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = drain.notified() => conn.as_mut().graceful_shutdown(),
                }
                let _ = conn.await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_from_the_origin_finishes_the_stream_in_flight_and_the_client_moves_on() {
    bounded(Duration::from_secs(30), async {
        let origin = draining_origin().await;
        let proxy = intercepting(|_| {}).await;
        let (mut send, conn) = h2_client(h2_tunnel(proxy.addr, origin).await).await;
        let r = send
            .send_request(get(origin.port(), "/drain"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"done", "the stream in flight finished");
        // The tunnel's upstream connection is gone: sluice sends the
        // client GOAWAY and the connection ends, rather than hanging.
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("the client connection ends after the origin's GOAWAY")
            .unwrap();
        // A new connection is served.
        let (mut send, _c) = h2_client(h2_tunnel(proxy.addr, origin).await).await;
        let r = send.send_request(get(origin.port(), "/")).await.unwrap();
        assert_eq!(r.status(), 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_h2_connection_is_closed_at_the_idle_deadline() {
    bounded(Duration::from_secs(30), async {
        let origin = origin::https(pki().origin_config(OriginCert::Valid, &[b"h2"])).await;
        let proxy = intercepting(|c| c.client.client_idle_timeout = Duration::from_secs(1)).await;
        let (mut send, conn) = h2_client(h2_tunnel(proxy.addr, origin).await).await;
        let r = send
            .send_request(get(origin.port(), "/small"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.into_body().collect().await;
        let idle_from = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), conn)
            .await
            .expect("sluice closes the idle h2 connection")
            .unwrap();
        let took = idle_from.elapsed();
        assert!(
            took >= Duration::from_millis(900),
            "closed too early: {took:?}"
        );
        assert!(
            eventually(Duration::from_secs(3), || proxy.registry.live(Kind::Tunnel)
                == 0)
            .await
        );
        assert_eq!(proxy.registry.closed("idle_timeout"), 1);
    })
    .await;
}
