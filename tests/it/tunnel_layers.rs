//! The next-layer decision inside CONNECT tunnels, with real clients:
//! plain HTTP/1.1 and HTTP/2 (prior knowledge) inside a tunnel are served
//! by sluice's HTTP path (recorded, linked to the tunnel, sent over the
//! tunnel's own upstream connection); a server that speaks first gets
//! its bytes to the client at once; anything else stays a byte relay.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use crate::support::admin::wait_records;
use crate::support::client::read_response;
use crate::support::{eventually, origin, proxy};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use sluice::config::{DataDir, Recording};
use sluice::registry::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

async fn recording_proxy() -> sluice::Proxy {
    proxy::start(|c| {
        c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        c.record = Recording {
            data_dir: DataDir::Memory,
            ..Recording::default()
        };
    })
    .await
}

/// Reads a CONNECT answer head byte by byte (so no tunnel byte is eaten).
async fn read_connect_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.expect("read"), 1, "closed mid-head");
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

async fn tunnel(proxy: SocketAddr, target: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.expect("connect proxy");
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("write CONNECT");
    let head = read_connect_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

/// An origin that counts the TCP connections it accepted.
async fn counting_origin() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: hyper::Request<Incoming>| async move {
                    let text = format!("{} {} {:?}", req.method(), req.uri(), req.version());
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_inside_a_tunnel_is_served_recorded_and_sent_over_the_tunnel() {
    let (origin, accepted) = counting_origin().await;
    let proxy = recording_proxy().await;
    let admin = proxy.admin_addr.expect("admin");
    let mut s = tunnel(proxy.addr, origin).await;
    // Two keep-alive requests in origin form, as a server would get them.
    for path in ["/one", "/two?x=1"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut r = BufReader::new(&mut s);
        let resp = read_response(&mut r).await.expect("answer");
        assert_eq!(resp.status, 200, "{}", resp.text());
        // Through sluice's HTTP path: it adds Via; the origin saw origin form.
        assert!(resp.header("via").is_some_and(|v| v.contains("sluice")));
        assert_eq!(resp.text(), format!("GET {path} HTTP/1.1"));
        assert!(r.buffer().is_empty());
    }
    drop(s);
    let rows = wait_records(admin, "", 3).await;
    let tunnel = rows
        .iter()
        .find(|r| r["method"] == "CONNECT")
        .expect("the tunnel is recorded");
    let inner: Vec<&Value> = rows.iter().filter(|r| r["method"] == "GET").collect();
    assert_eq!(inner.len(), 2, "{rows:?}");
    for r in &inner {
        assert!(r["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("http://{origin}/"))));
        assert_eq!(r["status"], 200);
        // Linked to the tunnel, and sent over the tunnel's own connection.
        assert_eq!(r["conn_id"], tunnel["conn_id"], "{r}");
        assert_eq!(r["upstream_conn_id"], tunnel["conn_id"], "{r}");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(
        proxy.registry.accepted(Kind::Upstream),
        0,
        "no pooled connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_proxytunnel_gets_plain_http_served_through_the_tunnel() {
    let (origin, accepted) = counting_origin().await;
    let proxy = recording_proxy().await;
    let admin = proxy.admin_addr.expect("admin");
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-p", "-x"])
        .arg(format!("http://{}", proxy.addr))
        .arg(format!("http://{origin}/a"))
        .arg(format!("http://{origin}/b"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "GET /a HTTP/1.1GET /b HTTP/1.1"
    );
    let rows = wait_records(admin, "method=GET", 2).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// An HTTP/2 origin with prior knowledge (h2c): answers with the version
/// it saw.
async fn h2c_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: hyper::Request<Incoming>| async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let text = format!("h2 origin got {} bytes", body.map_or(0, |b| b.len()));
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_inside_a_tunnel_is_served_as_http2() {
    let origin = h2c_origin().await;
    let proxy = recording_proxy().await;
    let admin = proxy.admin_addr.expect("admin");
    let s = tunnel(proxy.addr, origin).await;
    let (mut send, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(s),
    )
    .await
    .expect("h2 handshake through the tunnel");
    tokio::spawn(conn);
    // Several streams at once on the one connection.
    let mut answers = Vec::new();
    for i in 0..3 {
        let req = hyper::Request::post(format!("http://{origin}/up/{i}"))
            .body(Full::new(Bytes::from(vec![b'x'; 1000 * (i + 1)])))
            .expect("request");
        answers.push(send.send_request(req));
    }
    for (i, answer) in answers.into_iter().enumerate() {
        let resp = answer.await.expect("answer");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert!(resp.headers().get("via").is_some());
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, format!("h2 origin got {} bytes", 1000 * (i + 1)));
    }
    let rows = wait_records(admin, "method=POST", 3).await;
    assert_eq!(rows.len(), 3, "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2_prior_knowledge_through_a_tunnel() {
    let origin = h2c_origin().await;
    let proxy = recording_proxy().await;
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "-i",
            "--max-time",
            "10",
            "--http2-prior-knowledge",
            "-p",
            "-x",
        ])
        .arg(format!("http://{}", proxy.addr))
        .args(["-d", "hello"])
        .arg(format!("http://{origin}/"))
        .stdin(Stdio::null())
        .output()
        .await
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    // Served by sluice as HTTP/2 (its Via), not relayed as bytes.
    // curl -i shows the CONNECT answer first, then the served response.
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("\r\n\r\nhttp/2 200"), "{text}");
    assert!(text.contains("\r\nvia: 2 sluice"), "{text}");
    assert!(text.ends_with("\r\n\r\nh2 origin got 5 bytes"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_speaks_first_reaches_a_silent_client_at_once() {
    // SSH, SMTP and MySQL servers greet first: the client waits for them.
    let origin = origin::raw(|mut s| async move {
        let _ = s.write_all(b"SSH-2.0-sluice_test\r\n").await;
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
    .await;
    let proxy = proxy::start(|_| {}).await;
    let mut s = tunnel(proxy.addr, origin).await;
    let mut banner = [0u8; 21];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut banner))
        .await
        .expect("the banner is not held back")
        .expect("read banner");
    assert_eq!(&banner, b"SSH-2.0-sluice_test\r\n");
    // Then the client speaks, in bytes that look like an HTTP method: the
    // tunnel was decided opaque and stays a byte relay.
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
    let mut back = [0u8; 18];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("read echo");
    assert_eq!(&back, b"GET / HTTP/1.1\r\n\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_http_client_bytes_are_relayed_untouched() {
    let echo = origin::echo().await;
    let proxy = proxy::start(|_| {}).await;
    let mut s = tunnel(proxy.addr, echo).await;
    // Upper-case letters, then not a space: not a request line.
    let payload = b"HELLO\r\nthis is not HTTP\x00\x01\x02";
    s.write_all(payload).await.expect("write");
    s.shutdown().await.expect("half-close");
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut back))
        .await
        .expect("echo and EOF in time")
        .expect("read");
    assert_eq!(back, payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_partial_request_line_is_relayed_after_a_short_wait() {
    let echo = origin::echo().await;
    let proxy = proxy::start(|_| {}).await;
    let mut s = tunnel(proxy.addr, echo).await;
    // "GE" could begin a request line; with nothing more it is relayed.
    s.write_all(b"GE").await.expect("write");
    let mut back = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut back))
        .await
        .expect("relayed within the patience window")
        .expect("read");
    assert_eq!(&back, b"GE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tunnel_closes_at_the_idle_timeout() {
    let silent = origin::raw(|s| async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(s);
    })
    .await;
    let proxy = proxy::start(|c| c.relay_limits.idle_timeout = Duration::from_millis(500)).await;
    let mut s = tunnel(proxy.addr, silent).await;
    let started = std::time::Instant::now();
    let mut b = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(
        eventually(Duration::from_secs(2), || proxy.registry.live(Kind::Tunnel)
            == 0)
        .await
    );
    assert_eq!(proxy.registry.closed("idle_timeout"), 1);
}
