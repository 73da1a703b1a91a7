//! CONNECT tunnels over real sockets: TLS end to end, half-close in both
//! directions, resets passed on, idle and half-close deadlines, failed
//! connects, backpressure and churn against the real binary.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sluice::registry::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::support::client::{self, Response};
use crate::support::{bounded, churn, eventually, netns, origin, pattern, proxy, tls};

/// How a read that waited for the end of a stream ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Eof,
    Reset,
    Other(std::io::ErrorKind),
    /// Still open when the wait ran out.
    Open,
}

/// Reads (discarding) until EOF, an error or `within`; returns how it ended,
/// how many bytes came before, and when.
async fn wait_end(s: &mut TcpStream, within: Duration) -> (End, usize, Duration) {
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        let left = within.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return (End::Open, total, start.elapsed()),
            Ok(Ok(0)) => return (End::Eof, total, start.elapsed()),
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (End::Reset, total, start.elapsed())
            }
            Ok(Err(e)) => return (End::Other(e.kind()), total, start.elapsed()),
        }
    }
}

fn abort(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
}

async fn tunnels_drop_to_zero(proxy: &sluice::Proxy, within: Duration) -> bool {
    eventually(within, || proxy.registry.live(Kind::Tunnel) == 0).await
}

// 1. TLS end to end through the tunnel -----------------------------------

const TLS_ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello, tls!\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshake_and_request_through_tunnel() {
    bounded(Duration::from_secs(60), async move {
        let cert = tls::self_signed_localhost();
        let origin = origin::tls(&cert, TLS_ANSWER).await;
        let proxy = proxy::start(|_| {}).await;
        let target = format!("localhost:{}", origin.port());
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();

        let s = client::connect_tunnel(proxy.addr, &target).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(tls::client_config(&cert));
        let mut tls =
            tokio::time::timeout(Duration::from_secs(5), connector.connect(name.clone(), s))
                .await
                .expect("handshake in time")
                .expect("handshake through the tunnel verifies the origin");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut answer))
            .await
            .expect("answer in time")
            .expect("answer ends with close_notify");
        assert_eq!(answer, TLS_ANSWER);
        drop(tls);
        assert!(tunnels_drop_to_zero(&proxy, Duration::from_secs(2)).await);
        assert!(proxy.registry.closed("eof") >= 1);

        // The check is real: a client trusting another certificate fails.
        let other = tls::self_signed_localhost();
        let s = client::connect_tunnel(proxy.addr, &target).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(tls::client_config(&other));
        let r = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, s))
            .await
            .expect("handshake ends in time");
        assert!(r.is_err(), "a foreign certificate must not verify");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pipelined_behind_connect_head_reach_origin() {
    bounded(Duration::from_secs(60), async move {
        let echo = origin::echo().await;
        let proxy = proxy::start(|_| {}).await;
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        // Head and first tunnel bytes in one write: hyper reads them together.
        s.write_all(
            format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\npipelined!").as_bytes(),
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        let want = b"pipelined!";
        while !got.ends_with(want) {
            let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
                .await
                .expect("echo in time")
                .unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("\r\n\r\npipelined!"), "{text}");
    })
    .await;
}

/// Sends one keep-alive forward GET on `s` and reads its 100-byte answer.
async fn forward_get(s: &mut TcpStream, origin: SocketAddr) {
    s.write_all(format!("GET http://{origin}/small HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut r = tokio::io::BufReader::new(&mut *s);
    let resp = client::read_response(&mut r).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.len(), 100);
    assert!(r.buffer().is_empty(), "nothing beyond the answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_after_a_forward_request_on_the_same_connection() {
    bounded(Duration::from_secs(30), async move {
        // CONNECT as a later request on a keep-alive connection goes
        // through the HTTP server's upgrade, not the first-request path.
        let http = origin::http().await;
        let echo = origin::echo().await;
        let proxy = proxy::start(|_| {}).await;

        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        forward_get(&mut s, http).await;
        // Head and first tunnel bytes in one write: the server reads both.
        s.write_all(
            format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\nafter a GET").as_bytes(),
        )
        .await
        .unwrap();
        let head = client::read_head_unbuffered(&mut s).await;
        assert!(head.is_ok(), "closed mid-head: {head:?}");
        let head = head.unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut back))
            .await
            .expect("echo and EOF in time")
            .unwrap();
        assert_eq!(back, b"after a GET");
        assert!(tunnels_drop_to_zero(&proxy, Duration::from_secs(2)).await);
        assert_eq!(proxy.registry.accepted(Kind::Tunnel), 1);

        // A failing CONNECT on that path is answered the same way.
        let closed_port = origin::refusing();
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        forward_get(&mut s, http).await;
        s.write_all(
            format!("CONNECT {closed_port} HTTP/1.1\r\nHost: {closed_port}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut r = tokio::io::BufReader::new(&mut s);
        let resp = client::read_response(&mut r).await.unwrap();
        assert_eq!(resp.status, 502, "{}", resp.text());
        assert!(resp.text().contains("refused"), "{}", resp.text());
    })
    .await;
}

// 2. Half-close ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_still_receives_answer() {
    bounded(Duration::from_secs(60), async move {
        // Reads to EOF, then answers and closes.
        let origin = origin::raw(|mut s| async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut n = 0;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(_) => return,
                }
            }
            let _ = s.write_all(format!("got {n} bytes").as_bytes()).await;
        })
        .await;
        let proxy = proxy::start(|_| {}).await;
        let mut s = client::connect_tunnel(proxy.addr, origin).await.unwrap();
        let mut data = vec![0u8; 300_000];
        pattern(1, 0, &mut data);
        s.write_all(&data).await.unwrap();
        s.shutdown().await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
            .await
            .expect("answer and EOF in time")
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&answer), "got 300000 bytes");
        drop(s);
        assert!(tunnels_drop_to_zero(&proxy, Duration::from_secs(2)).await);
        // "eof" also counts the CONNECT's client connection; a clean tunnel
        // adds no other reason.
        assert!(proxy.registry.closed("eof") >= 1);
        assert_eq!(proxy.registry.closed("reset"), 0);
        assert_eq!(proxy.registry.closed("error"), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_half_close_still_receives_client_bytes() {
    bounded(Duration::from_secs(60), async move {
        let (tx, mut rx) = mpsc::unbounded_channel::<usize>();
        // Greets, half-closes, then counts what the client still sends.
        let origin = origin::raw(move |mut s| {
            let tx = tx.clone();
            async move {
                s.write_all(b"hello").await.unwrap();
                s.shutdown().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let mut n = 0;
                while let Ok(k) = s.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                let _ = tx.send(n);
            }
        })
        .await;
        let proxy = proxy::start(|_| {}).await;
        let mut s = client::connect_tunnel(proxy.addr, origin).await.unwrap();
        let mut greeting = Vec::new();
        tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut greeting))
            .await
            .expect("greeting and EOF in time")
            .unwrap();
        assert_eq!(greeting, b"hello");
        for _ in 0..5 {
            s.write_all(&[7u8; 1000]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.shutdown().await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .expect("origin finishes")
            .unwrap();
        assert_eq!(n, 5000, "every byte sent after the origin's EOF arrives");
        assert!(tunnels_drop_to_zero(&proxy, Duration::from_secs(2)).await);
    })
    .await;
}

// 3. Resets --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_reset_reaches_client_promptly() {
    bounded(Duration::from_secs(60), async move {
        let origin = origin::raw(|mut s| async move {
            s.write_all(b"data").await.unwrap();
            let mut ok = [0u8; 2];
            if s.read_exact(&mut ok).await.is_ok() {
                abort(s);
            }
        })
        .await;
        let proxy = proxy::start(|_| {}).await;
        let mut s = client::connect_tunnel(proxy.addr, origin).await.unwrap();
        let mut data = [0u8; 4];
        s.read_exact(&mut data).await.unwrap();
        assert_eq!(&data, b"data");
        s.write_all(b"ok").await.unwrap();
        let (end, _, took) = wait_end(&mut s, Duration::from_secs(3)).await;
        assert_eq!(end, End::Reset, "a reset is passed on as a reset");
        assert!(took < Duration::from_secs(1), "took {took:?}");
        assert!(tunnels_drop_to_zero(&proxy, Duration::from_secs(1)).await);
        assert_eq!(proxy.registry.closed("reset"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reset_reaches_origin_promptly() {
    bounded(Duration::from_secs(60), async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let origin = origin::raw(move |mut s| {
            let tx = tx.clone();
            async move {
                let mut hi = [0u8; 2];
                s.read_exact(&mut hi).await.unwrap();
                s.write_all(b"go").await.unwrap();
                let _ = tx.send(wait_end(&mut s, Duration::from_secs(3)).await);
            }
        })
        .await;
        let proxy = proxy::start(|_| {}).await;
        let mut s = client::connect_tunnel(proxy.addr, origin).await.unwrap();
        s.write_all(b"hi").await.unwrap();
        let mut go = [0u8; 2];
        s.read_exact(&mut go).await.unwrap();
        abort(s);
        let (end, _, took) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end, End::Reset, "a reset is passed on as a reset");
        assert!(took < Duration::from_secs(1), "took {took:?}");
        assert!(tunnels_drop_to_zero(&proxy, Duration::from_secs(1)).await);
        assert_eq!(proxy.registry.closed("reset"), 1);
    })
    .await;
}

// 4. Idle timeout --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_is_closed_on_both_legs() {
    bounded(Duration::from_secs(60), async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let origin = origin::raw(move |mut s| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(wait_end(&mut s, Duration::from_secs(5)).await);
            }
        })
        .await;
        let proxy =
            proxy::start(|c| c.relay_limits.idle_timeout = Duration::from_millis(300)).await;
        let mut s = client::connect_tunnel(proxy.addr, origin).await.unwrap();
        let (end, n, took) = wait_end(&mut s, Duration::from_secs(5)).await;
        assert_eq!((end, n), (End::Eof, 0), "client leg closed cleanly");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
            "client leg closed after {took:?}"
        );
        let (end, _, took) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(end, End::Eof | End::Reset), "origin leg: {end:?}");
        assert!(
            took < Duration::from_millis(1500),
            "origin leg closed after {took:?}"
        );
        assert!(tunnels_drop_to_zero(&proxy, Duration::from_secs(1)).await);
        assert_eq!(proxy.registry.closed("idle_timeout"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_tunnel_outlives_idle_timeout() {
    bounded(Duration::from_secs(60), async move {
        let echo = origin::echo().await;
        let proxy =
            proxy::start(|c| c.relay_limits.idle_timeout = Duration::from_millis(300)).await;
        let mut s = client::connect_tunnel(proxy.addr, echo).await.unwrap();
        let start = Instant::now();
        let mut i = 0u32;
        while start.elapsed() < Duration::from_millis(1200) {
            let msg = i.to_be_bytes();
            s.write_all(&msg).await.unwrap();
            let mut back = [0u8; 4];
            tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut back))
                .await
                .expect("echo in time")
                .expect("tunnel still open");
            assert_eq!(back, msg);
            tokio::time::sleep(Duration::from_millis(100)).await;
            i += 1;
        }
        assert!(i >= 8, "only {i} exchanges");
        assert_eq!(proxy.registry.live(Kind::Tunnel), 1);
        assert_eq!(proxy.registry.closed("idle_timeout"), 0);
        // And once the traffic stops, the deadline does apply.
        let (end, _, took) = wait_end(&mut s, Duration::from_secs(3)).await;
        assert_eq!(end, End::Eof);
        assert!(took < Duration::from_millis(1500), "{took:?}");
        assert_eq!(proxy.registry.closed("idle_timeout"), 1);
    })
    .await;
}

// 5. Half-closed tunnels still have deadlines ----------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_tunnel_obeys_idle_timeout() {
    bounded(Duration::from_secs(60), async move {
        // Reads the client's EOF, then neither answers nor closes.
        let origin = origin::raw(|mut s| async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        })
        .await;
        let proxy = proxy::start(|c| {
            c.relay_limits.idle_timeout = Duration::from_millis(400);
            c.relay_limits.half_close_timeout = Duration::from_secs(60);
        })
        .await;
        let mut s = client::connect_tunnel(proxy.addr, origin).await.unwrap();
        s.write_all(b"question").await.unwrap();
        s.shutdown().await.unwrap();
        let (end, n, took) = wait_end(&mut s, Duration::from_secs(5)).await;
        assert_eq!((end, n), (End::Eof, 0));
        assert!(took < Duration::from_millis(1500), "closed after {took:?}");
        assert!(tunnels_drop_to_zero(&proxy, Duration::from_secs(1)).await);
        assert_eq!(proxy.registry.closed("idle_timeout"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_timeout_bounds_a_busy_half_closed_tunnel() {
    bounded(Duration::from_secs(60), async move {
        // After the client's EOF, trickles a byte every 100 ms for 5 s, so the
        // idle deadline never fires; only the half-close grace can end it.
        let origin = origin::raw(|mut s| async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
            for _ in 0..50 {
                if s.write_all(b".").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        let proxy = proxy::start(|c| {
            c.relay_limits.idle_timeout = Duration::from_secs(5);
            c.relay_limits.half_close_timeout = Duration::from_millis(500);
        })
        .await;
        let mut s = client::connect_tunnel(proxy.addr, origin).await.unwrap();
        s.write_all(b"question").await.unwrap();
        s.shutdown().await.unwrap();
        let (end, n, took) = wait_end(&mut s, Duration::from_secs(6)).await;
        assert_eq!(end, End::Eof);
        assert!(
            n >= 2,
            "the trickle flowed before the grace ran out ({n} bytes)"
        );
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_millis(1500),
            "closed after {took:?}"
        );
        assert!(tunnels_drop_to_zero(&proxy, Duration::from_secs(1)).await);
        assert_eq!(proxy.registry.closed("half_close_timeout"), 1);
    })
    .await;
}

// 6. Upstreams that fail -------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_is_closed_at_idle() {
    bounded(Duration::from_secs(60), async move {
        let origin = origin::raw(|s| async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(s);
        })
        .await;
        let proxy =
            proxy::start(|c| c.relay_limits.idle_timeout = Duration::from_millis(500)).await;
        let mut s = client::connect_tunnel(proxy.addr, origin)
            .await
            .expect("an accepting upstream gets 200");
        let (end, _, took) = wait_end(&mut s, Duration::from_secs(5)).await;
        assert_eq!(end, End::Eof);
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(2),
            "closed after {took:?}"
        );
        assert!(tunnels_drop_to_zero(&proxy, Duration::from_secs(1)).await);
        assert_eq!(proxy.registry.closed("idle_timeout"), 1);
    })
    .await;
}

async fn connect_answer(proxy: SocketAddr, target: &str) -> Response {
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    tokio::time::timeout(
        Duration::from_secs(10),
        client::exchange(proxy, req.as_bytes()),
    )
    .await
    .expect("answer in time")
    .expect("an HTTP answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_connects_are_answered_with_reasons() {
    bounded(Duration::from_secs(60), async move {
        let proxy = proxy::start(|_| {}).await;

        let closed_port = origin::refusing();
        let r = connect_answer(proxy.addr, &closed_port.to_string()).await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(r.text().contains("refused"), "{}", r.text());
        assert_eq!(r.header("x-sluice-error"), Some("refused"));

        let r = connect_answer(proxy.addr, "nothing.invalid:443").await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert!(r.text().contains("name not resolved"), "{}", r.text());

        let r = connect_answer(proxy.addr, "localhost").await;
        assert_eq!(r.status, 400, "{}", r.text());

        assert_eq!(proxy.registry.accepted(Kind::Tunnel), 0);
        assert_eq!(proxy.registry.live(Kind::Tunnel), 0);
    })
    .await;
}

// Bulk flows (over 1 MiB in a direction take sluice's zero-copy path) keep
// every lifecycle rule: counters, idle deadline, resets, half-close.

const BULK: usize = 3 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_flow_is_counted_and_still_obeys_idle_timeout() {
    bounded(Duration::from_secs(30), async move {
        let origin = origin::raw(|mut s| async move {
            let mut data = vec![0u8; BULK];
            pattern(5, 0, &mut data);
            if s.write_all(&data).await.is_ok() {
                // Then silence, without closing.
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        })
        .await;
        let proxy =
            proxy::start(|c| c.relay_limits.idle_timeout = Duration::from_millis(500)).await;
        let mut s = client::connect_tunnel(proxy.addr, origin).await.unwrap();
        let mut got = vec![0u8; BULK];
        s.read_exact(&mut got).await.unwrap();
        let mut want = vec![0u8; BULK];
        pattern(5, 0, &mut want);
        assert!(got == want, "bulk bytes arrive intact");
        let entries = proxy.registry.snapshot();
        let tunnel = entries
            .iter()
            .find(|e| e.kind == Kind::Tunnel)
            .expect("the tunnel is in the inventory");
        // The relay counts a pipe-full once its last byte is written, and
        // the client may read that byte before the relay's task runs again:
        // the count reaches the total a moment after the bytes do.
        let down = || tunnel.bytes_down.load(Ordering::Relaxed);
        eventually(Duration::from_secs(2), || down() >= BULK as u64).await;
        assert_eq!(down(), BULK as u64);
        let (end, n, took) = wait_end(&mut s, Duration::from_secs(5)).await;
        assert_eq!((end, n), (End::Eof, 0));
        assert!(took < Duration::from_millis(1500), "closed after {took:?}");
        assert!(tunnels_drop_to_zero(&proxy, Duration::from_secs(1)).await);
        assert_eq!(proxy.registry.closed("idle_timeout"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_flow_then_origin_reset_reaches_client() {
    bounded(Duration::from_secs(30), async move {
        let origin = origin::raw(|mut s| async move {
            let mut data = vec![0u8; BULK];
            pattern(6, 0, &mut data);
            s.write_all(&data).await.unwrap();
            let mut ok = [0u8; 2];
            if s.read_exact(&mut ok).await.is_ok() {
                abort(s);
            }
        })
        .await;
        let proxy = proxy::start(|_| {}).await;
        let mut s = client::connect_tunnel(proxy.addr, origin).await.unwrap();
        let mut got = vec![0u8; BULK];
        s.read_exact(&mut got).await.unwrap();
        s.write_all(b"ok").await.unwrap();
        let (end, _, took) = wait_end(&mut s, Duration::from_secs(3)).await;
        assert_eq!(end, End::Reset, "a reset is passed on as a reset");
        assert!(took < Duration::from_secs(1), "took {took:?}");
        assert!(tunnels_drop_to_zero(&proxy, Duration::from_secs(1)).await);
        assert_eq!(proxy.registry.closed("reset"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_upload_then_half_close_gets_the_answer() {
    bounded(Duration::from_secs(30), async move {
        // Hashes everything up to EOF, answers with the digest, closes.
        let origin = origin::raw(|mut s| async move {
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => h.update(&buf[..n]),
                    Err(_) => return,
                }
            }
            let _ = s.write_all(&h.finalize()).await;
        })
        .await;
        let proxy = proxy::start(|_| {}).await;
        let mut s = client::connect_tunnel(proxy.addr, origin).await.unwrap();
        let mut data = vec![0u8; BULK];
        pattern(8, 0, &mut data);
        s.write_all(&data).await.unwrap();
        s.shutdown().await.unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, Sha256::digest(&data).to_vec());
        assert!(tunnels_drop_to_zero(&proxy, Duration::from_secs(2)).await);
        assert_eq!(proxy.registry.closed("reset"), 0);
        assert_eq!(proxy.registry.closed("error"), 0);
    })
    .await;
}

// 7. Backpressure, against the real binary -------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_keeps_proxy_memory_bounded() {
    bounded(Duration::from_secs(60), async move {
        const TOTAL: u64 = 200 << 20;
        const CHUNK: usize = 1 << 20;
        let sent = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let sent2 = sent.clone();
        let origin = origin::raw(move |mut s| {
            let (tx, sent) = (tx.clone(), sent2.clone());
            async move {
                let mut h = Sha256::new();
                let mut buf = vec![0u8; CHUNK];
                let mut off = 0u64;
                while off < TOTAL {
                    pattern(42, off, &mut buf);
                    if s.write_all(&buf).await.is_err() {
                        return;
                    }
                    h.update(&buf);
                    off += CHUNK as u64;
                    sent.store(off, Ordering::Relaxed);
                }
                let _ = s.shutdown().await;
                let _ = tx.send(h.finalize().to_vec());
            }
        })
        .await;
        let echo = origin::echo().await;
        let sluice = proxy::spawn(&[]).await;

        // Warm up the runtime and allocator, then take the baseline.
        for _ in 0..4 {
            let mut s = client::connect_tunnel(sluice.addr, echo).await.unwrap();
            s.write_all(&[1u8; 100_000]).await.unwrap();
            let mut back = vec![0u8; 100_000];
            s.read_exact(&mut back).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let baseline = sluice.rss_kib();
        assert!(baseline > 0);

        let mut s = client::connect_tunnel(sluice.addr, origin).await.unwrap();
        let mut peak = baseline;
        let stall = Instant::now();
        while stall.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            peak = peak.max(sluice.rss_kib());
        }
        let sent_while_stalled = sent.load(Ordering::Relaxed);
        let growth_mib = (peak.saturating_sub(baseline)) as f64 / 1024.0;
        eprintln!(
            "rss baseline {baseline} KiB, peak {peak} KiB, origin sent {} MiB while stalled",
            sent_while_stalled >> 20
        );
        assert!(
            growth_mib < 32.0,
            "rss grew {growth_mib:.1} MiB while stalled"
        );
        assert!(
            sent_while_stalled < TOTAL / 2,
            "backpressure must reach the origin; it sent {sent_while_stalled} bytes"
        );

        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        let read_all = async {
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                got += n as u64;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read_all)
            .await
            .expect("the rest arrives");
        assert_eq!(got, TOTAL);
        let want = rx.recv().await.unwrap();
        assert_eq!(h.finalize().to_vec(), want, "sha256 of what arrived");
    })
    .await;
}

// 8. Churn, against the real binary --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_5000_tunnels_leaves_no_fd_or_socket_behind() {
    bounded(Duration::from_secs(60), async move {
        const TUNNELS: usize = 5000;
        const PARALLEL: usize = 50;
        let echo = origin::echo().await;
        let sluice = proxy::spawn(&[]).await;
        let proxy = sluice.addr;

        async fn one(proxy: SocketAddr, echo: SocketAddr, i: usize) -> Result<(), String> {
            let mut s = client::connect_tunnel(proxy, echo)
                .await
                .map_err(|e| format!("tunnel {i}: {e}"))?;
            let mut msg = [0u8; 32];
            pattern(i as u64, 0, &mut msg);
            s.write_all(&msg).await.map_err(|e| e.to_string())?;
            let mut back = [0u8; 32];
            s.read_exact(&mut back).await.map_err(|e| e.to_string())?;
            if back != msg {
                return Err(format!("tunnel {i}: echo mismatch"));
            }
            s.shutdown().await.map_err(|e| e.to_string())?;
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.map_err(|e| e.to_string())?;
            if !rest.is_empty() {
                return Err(format!("tunnel {i}: {} stray bytes", rest.len()));
            }
            Ok(())
        }

        // Warm-up, so lazily created runtime resources are in the baseline.
        for i in 0..PARALLEL {
            one(proxy, echo, i).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let baseline = sluice.fd_count();

        let start = Instant::now();
        let errors = churn(TUNNELS, PARALLEL, move |i| one(proxy, echo, i)).await;
        eprintln!("{TUNNELS} tunnels in {:?}", start.elapsed());
        assert!(
            errors.is_empty(),
            "{} failures, first: {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );

        let pid = sluice.pid();
        let settled =
            eventually(Duration::from_secs(5), || sluice.fd_count() <= baseline + 4).await;
        assert!(
            settled,
            "fds: baseline {baseline}, now {}",
            sluice.fd_count()
        );
        let established: Vec<_> = netns::tcp_sockets_of(pid)
            .into_iter()
            .filter(|(_, r)| r.state == netns::TCP_ESTABLISHED)
            .collect();
        assert!(established.is_empty(), "still established: {established:?}");
        let listening = netns::tcp_sockets_of(pid)
            .into_iter()
            .filter(|(_, r)| r.state == netns::TCP_LISTEN)
            .count();
        assert_eq!(
            listening,
            1 + usize::from(sluice.admin.is_some()),
            "the proxy (and admin) listeners are seen, so the check is live"
        );
    })
    .await;
}
