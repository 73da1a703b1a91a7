//! The forward proxy's deadlines and limits over real sockets: slow request
//! heads, idle keep-alive clients, stalled request bodies, the connection
//! cap, and a slow reader on a large response that must not grow memory.

use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice::registry::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::support::client::{self, get_once, BodyReader, Client};
use crate::support::{eventually, origin, pattern_sha256, proxy};

async fn assert_serves(proxy: SocketAddr, origin: SocketAddr) {
    let resp = timeout(Duration::from_secs(5), get_once(proxy, origin, "/small"))
        .await
        .expect("proxy answers in time")
        .expect("proxy still serves");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, vec![b'x'; 100]);
}

/// Sends `prefix`, then one byte every `every` until the proxy closes the
/// connection or `give_up` passes. Returns when the close was seen,
/// measured from the first byte sent.
async fn trickle(
    proxy: SocketAddr,
    prefix: &[u8],
    every: Duration,
    give_up: Duration,
) -> Option<Duration> {
    let s = TcpStream::connect(proxy).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let start = Instant::now();
    wr.write_all(prefix).await.unwrap();
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if wr.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let closed = client::wait_closed(&mut rd, give_up).await;
    writer.abort();
    closed.map(|_| start.elapsed())
}

// 7. Slowloris: a head that trickles in, and a client that says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_closed_at_header_timeout() {
    let origin = origin::http().await;
    let proxy = proxy::start(|c| c.client.header_timeout = Duration::from_millis(500)).await;

    let trickled = trickle(
        proxy.addr,
        b"GET http://x/ HTTP/1.1\r\nX-Slow: ",
        Duration::from_millis(100),
        Duration::from_secs(5),
    );
    let silent = async {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let start = Instant::now();
        client::wait_closed(&mut s, Duration::from_secs(5))
            .await
            .map(|_| start.elapsed())
    };
    let (trickled, silent) = tokio::join!(trickled, silent);

    let trickled = trickled.expect("a trickling head is closed, though bytes keep coming");
    assert!(
        trickled >= Duration::from_millis(450) && trickled < Duration::from_millis(1500),
        "trickling head closed after {trickled:?}"
    );
    let silent = silent.expect("a silent client is closed");
    assert!(
        silent >= Duration::from_millis(450) && silent < Duration::from_millis(1500),
        "silent client closed after {silent:?}"
    );
    assert!(
        eventually(Duration::from_secs(1), || proxy
            .registry
            .closed("header_timeout")
            >= 2)
        .await,
        "header_timeout closes counted: {}",
        proxy.registry.closed("header_timeout")
    );
    assert_serves(proxy.addr, origin).await;
}

// 7b. The same on a keep-alive connection: after one request, a second
// head that trickles in gets the header timeout, not the (longer) client
// idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_second_head_on_keep_alive_is_closed_at_header_timeout() {
    let origin = origin::http().await;
    let proxy = proxy::start(|c| {
        c.client.header_timeout = Duration::from_millis(500);
        c.client.client_idle_timeout = Duration::from_secs(10);
    })
    .await;
    let mut c = Client::connect(proxy.addr).await.unwrap();
    assert_eq!(c.get(origin, "/small").await.unwrap().status, 200);
    // Idle for longer than the header timeout first: idle is allowed.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let (mut rd, mut wr) = c.r.into_inner().into_split();
    let start = Instant::now();
    wr.write_all(b"GET http://x/ HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if wr.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let closed = client::wait_closed(&mut rd, Duration::from_secs(5)).await;
    writer.abort();
    let took = closed.map(|_| start.elapsed());
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(450) && t < Duration::from_millis(1500)),
        "second head closed after {took:?}, header timeout is 500ms"
    );
    assert!(
        eventually(Duration::from_secs(1), || proxy
            .registry
            .closed("header_timeout")
            == 1)
        .await
    );
}

// 8a. An idle keep-alive client is closed at the client idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_client_is_closed_at_client_idle_timeout() {
    let origin = origin::http().await;
    let proxy = proxy::start(|c| {
        c.client.client_idle_timeout = Duration::from_millis(300);
        c.client.header_timeout = Duration::from_secs(5);
    })
    .await;
    let mut c = Client::connect(proxy.addr).await.unwrap();
    assert_eq!(c.get(origin, "/small").await.unwrap().status, 200);
    let before = proxy.registry.closed("idle_timeout");
    let took = c
        .wait_closed(Duration::from_millis(1500))
        .await
        .expect("idle keep-alive connection closed by the proxy");
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
    assert!(
        eventually(Duration::from_secs(1), || proxy
            .registry
            .closed("idle_timeout")
            > before)
        .await,
        "idle_timeout close counted"
    );
    assert_eq!(proxy.registry.closed("header_timeout"), 0);
    assert_serves(proxy.addr, origin).await;
}

// 8b. The idle and header deadlines are independent: a short header
// timeout does not cut an idle keep-alive connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_timeout_does_not_apply_to_idle_keep_alive() {
    let origin = origin::http().await;
    let proxy = proxy::start(|c| {
        c.client.client_idle_timeout = Duration::from_secs(5);
        c.client.header_timeout = Duration::from_millis(300);
    })
    .await;
    let mut c = Client::connect(proxy.addr).await.unwrap();
    assert_eq!(c.get(origin, "/small").await.unwrap().status, 200);
    assert!(
        c.wait_closed(Duration::from_secs(1)).await.is_none(),
        "idle keep-alive connection must survive past the header timeout"
    );
    // Still usable, on the same connection.
    assert_eq!(c.get(origin, "/small").await.unwrap().status, 200);
    assert_eq!(proxy.registry.accepted(Kind::Http), 1);
    assert_eq!(proxy.registry.closed("header_timeout"), 0);
    assert_eq!(proxy.registry.closed("idle_timeout"), 0);
}

// 9. A request body that stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_request_body_is_answered_or_closed_at_body_idle_timeout() {
    let origin = origin::http().await;
    let proxy = proxy::start(|c| c.client.body_idle_timeout = Duration::from_millis(300)).await;
    let mut c = Client::connect(proxy.addr).await.unwrap();
    // /hang never answers, so only the body deadline can end this.
    c.send(
        format!("POST http://{origin}/hang HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 100\r\n\r\n0123456789")
            .as_bytes(),
    )
    .await
    .unwrap();
    let start = Instant::now();
    let outcome = timeout(Duration::from_secs(2), c.read_response())
        .await
        .expect("a stalled body must not hang the client");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(250), "{took:?}");
    match outcome {
        Ok(resp) => {
            assert!(
                resp.status == 408 || resp.status == 400,
                "{:?} {}",
                resp.headers,
                resp.text()
            );
            assert!(
                resp.text().contains("made no progress for 300ms"),
                "{}",
                resp.text()
            );
            assert!(resp.text().contains("failed: client"), "{}", resp.text());
        }
        Err(e) => {
            // A close without an answer is acceptable too.
            eprintln!("closed without an answer: {e}");
        }
    }
    assert!(
        eventually(Duration::from_secs(2), || proxy.registry.live(Kind::Http)
            == 0)
        .await,
        "client connection closed after the body failed"
    );
    assert_serves(proxy.addr, origin).await;
}

// 10. The connection cap refuses at once, and frees up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_at_once() {
    let origin = origin::http().await;
    let proxy = proxy::start(|c| c.client.max_connections = 5).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    assert!(
        eventually(Duration::from_secs(2), || proxy.registry.live(Kind::Http)
            == 5)
        .await,
        "five admitted"
    );

    let start = Instant::now();
    let mut sixth = TcpStream::connect(proxy.addr).await.unwrap();
    let mut got = Vec::new();
    let read = timeout(Duration::from_secs(2), sixth.read_to_end(&mut got))
        .await
        .expect("the sixth connection is refused at once, not left hanging");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    if read.is_ok() && !got.is_empty() {
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 503"), "{text}");
        assert!(text.contains("connection limit"), "{text}");
    }
    assert!(proxy.registry.closed("limit_refused") >= 1);
    assert_eq!(
        proxy.registry.accepted(Kind::Http),
        5,
        "the sixth never got a guard"
    );

    // The five held connections still work.
    let mut first = Client::from_stream(held.remove(0));
    assert_eq!(first.get(origin, "/small").await.unwrap().status, 200);
    drop(first);
    drop(held);
    assert!(
        eventually(Duration::from_secs(2), || proxy.registry.live(Kind::Http)
            == 0)
        .await,
        "held connections released: {}",
        proxy.registry.live(Kind::Http)
    );
    assert_serves(proxy.addr, origin).await;
    let refused = proxy.registry.closed("limit_refused");
    for _ in 0..5 {
        assert_serves(proxy.addr, origin).await;
    }
    assert_eq!(proxy.registry.closed("limit_refused"), refused);
}

// 11. A slow reader on a 200 MiB response: backpressure reaches the
// origin instead of piling the body up in sluice's memory. Uses the real
// binary so RSS is the proxy's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_on_large_response_keeps_memory_flat() {
    const TOTAL: u64 = 200 * 1024 * 1024;
    let origin = origin::http().await;
    let proxy = proxy::spawn(&[]).await;

    // Warm up: one request through, so lazily built state is in the baseline.
    assert_serves(proxy.addr, origin).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let baseline = proxy.rss_kib();
    assert!(baseline > 0);

    let mut c = Client::connect(proxy.addr).await.unwrap();
    c.send(
        format!("GET http://{origin}/bytes/{TOTAL} HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let head = client::read_head(&mut c.r).await.unwrap();
    assert_eq!(head.status, 200);
    let mut body = BodyReader::for_head(&head);
    let mut hash = Sha256::new();
    let mut received = 0u64;
    let mut peak = baseline;
    let mut buf = vec![0u8; 64 * 1024];

    // Slow phase: 256 KiB per 100 ms for 3 s (~7.5 MiB of 200).
    let slow_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < slow_until {
        let mut chunk = 0;
        while chunk < 256 * 1024 {
            let n = body.read(&mut c.r, &mut buf).await.unwrap();
            assert!(n > 0, "body ended early at {received}");
            hash.update(&buf[..n]);
            received += n as u64;
            chunk += n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(proxy.rss_kib());
    }
    assert!(received < TOTAL / 4, "slow phase read too much: {received}");

    // Fast phase: the rest at full speed, still sampling.
    let mut last_sample = Instant::now();
    loop {
        let n = timeout(Duration::from_secs(20), body.read(&mut c.r, &mut buf))
            .await
            .expect("body keeps flowing")
            .unwrap();
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        received += n as u64;
        if last_sample.elapsed() >= Duration::from_millis(100) {
            peak = peak.max(proxy.rss_kib());
            last_sample = Instant::now();
        }
    }
    peak = peak.max(proxy.rss_kib());
    assert_eq!(received, TOTAL);
    let expected = tokio::task::spawn_blocking(|| pattern_sha256(TOTAL, TOTAL))
        .await
        .unwrap();
    assert_eq!(
        <[u8; 32]>::from(hash.finalize()),
        expected,
        "body corrupted"
    );
    let growth_mib = (peak.saturating_sub(baseline)) as f64 / 1024.0;
    eprintln!("proxy rss baseline {baseline} KiB, peak {peak} KiB, growth {growth_mib:.1} MiB");
    assert!(
        growth_mib < 32.0,
        "proxy RSS grew {growth_mib:.1} MiB over {baseline} KiB while streaming 200 MiB to a slow reader"
    );
}

/// xorshift64*: a fixed-seed generator, so a failing case reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// `seed` mutated a few times: bytes flipped, inserted, deleted, lines
/// repeated, the head cut short.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    const SPICE: &[u8] = b"\r\n: \t\0\xff/?#%@[]CONNECTGET HTTP/1.1 0123456789chunked";
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(5) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if at < v.len() => {
                v.remove(at);
            }
            1 => v.insert(at, SPICE[rng.below(SPICE.len())]),
            2 if at < v.len() => v[at] = rng.next() as u8,
            3 => {
                let line = b"X-Fuzz: aaaaaaaaaaaaaaaa\r\n".repeat(1 + rng.below(400));
                v.splice(at..at, line);
            }
            4 => v.truncate(at),
            _ => {}
        }
    }
    v
}

/// Sends `bytes` on a fresh connection (then half-closes, when
/// `half_close`) and says whether the proxy answered something or closed
/// within `within`.
async fn answers_or_closes(
    proxy: SocketAddr,
    bytes: Vec<u8>,
    half_close: bool,
    within: Duration,
) -> bool {
    let Ok(mut s) = TcpStream::connect(proxy).await else {
        return false;
    };
    // The proxy may close or answer before everything is written.
    let _ = s.write_all(&bytes).await;
    if half_close {
        let _ = s.shutdown().await;
    }
    let mut b = [0u8; 1];
    matches!(
        timeout(within, s.read(&mut b)).await,
        Ok(Ok(_)) | Ok(Err(_))
    )
}

// Fuzz: mutated request heads (CONNECT on the fast path, forward requests
// through hyper) over real sockets. Every one is answered or closed within
// the header timeout (plus slack), and the proxy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_request_heads_are_answered_or_closed_in_time() {
    let origin = origin::http().await;
    let echo = origin::echo().await;
    let proxy = proxy::start(|c| {
        c.client.header_timeout = Duration::from_millis(400);
        c.client.client_idle_timeout = Duration::from_millis(400);
        c.relay_limits.idle_timeout = Duration::from_secs(1);
        c.client.body_idle_timeout = Duration::from_secs(1);
    })
    .await;
    let seeds: Vec<Vec<u8>> = vec![
        format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\nProxy-Authorization: Basic YTpi\r\n\r\n").into_bytes(),
        format!("GET http://{origin}/small HTTP/1.1\r\nHost: {origin}\r\nAccept: */*\r\n\r\n").into_bytes(),
        format!("POST http://{origin}/small HTTP/1.1\r\nHost: {origin}\r\nContent-Length: 5\r\n\r\nhello").into_bytes(),
        format!("GET http://{origin}/small HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n").into_bytes(),
        format!("GET /small HTTP/1.0\r\nHost: {origin}\r\n\r\n").into_bytes(),
    ];
    let addr = proxy.addr;
    let mut rng = Rng(0x00F0_22ED_4EAD_5EED);
    let started = Instant::now();
    let cases = 240;
    let mut failures = Vec::new();
    for round in 0..cases / 24 {
        let batch: Vec<_> = (0..24)
            .map(|i| {
                let seed = &seeds[rng.below(seeds.len())];
                let bytes = mutate(&mut rng, seed);
                let half_close = rng.below(2) == 0;
                let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).to_string();
                let case = round * 24 + i;
                tokio::spawn(async move {
                    let ok =
                        answers_or_closes(addr, bytes, half_close, Duration::from_secs(3)).await;
                    (ok, case, shown)
                })
            })
            .collect();
        for job in batch {
            let (ok, case, shown) = job.await.unwrap();
            if !ok {
                failures.push(format!("case {case}: {shown:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "neither answered nor closed in 3 s:\n{}",
        failures.join("\n")
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert_serves(proxy.addr, origin).await;
}
