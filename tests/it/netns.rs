//! The legacy failure itself: a client that disappears without FIN or RST.
//!
//! The client lives in its own network namespace behind a veth link. Once
//! it holds a tunnel, the link is cut and the client killed: from sluice's
//! side the peer just goes silent. Only TCP keepalive (idle tunnel) or
//! TCP_USER_TIMEOUT (data in flight) can notice; the idle timeout is set
//! far away so it cannot be what saves the day.

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::config::Keepalive;
use sluice::registry::Kind;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::Mutex;

use crate::support::netns::{tcp_table, Netns, TcpRow};
use crate::support::{bounded, eventually, origin, pattern, proxy};

/// The client, run inside the namespace. `echo`: one exchange through the
/// tunnel, then sleep. `ws`: a WebSocket through the forward path (no
/// CONNECT), one message echoed, then sleep. `stream`: read forever, so that sluice always has
/// data in flight towards it. Prints `ready` once the tunnel carries bytes.
const CLIENT_PY: &str = r#"
import socket, sys, time
proxy_ip, proxy_port, target, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((proxy_ip, proxy_port), timeout=10)
def head_of(what):
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        b = s.recv(1)
        if not b:
            sys.exit("closed before the %s answer" % what)
        head += b
    return head
if mode == "ws":
    # A WebSocket by absolute-form upgrade, one masked "hi" echoed.
    s.sendall(("GET http://%s/vanish HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (target, target)).encode())
    head = head_of("upgrade")
    if not head.startswith(b"HTTP/1.1 101"):
        sys.exit("upgrade refused: %r" % head)
    mask = b"\x01\x02\x03\x04"
    s.sendall(b"\x81\x82" + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(b"hi")))
    got = b""
    while len(got) < 4:
        got += s.recv(4 - len(got))
    if got != b"\x81\x02hi":
        sys.exit("echo: %r" % got)
    print("ready", flush=True)
    time.sleep(3600)
    sys.exit(0)
s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
head = head_of("CONNECT")
if not head.startswith(b"HTTP/1.1 200"):
    sys.exit("CONNECT failed: %r" % head)
s.settimeout(None)
if mode.startswith("tls:"):
    import ssl
    ctx = ssl.create_default_context(cafile=mode[4:])
    t = ctx.wrap_socket(s, server_hostname="localhost")
    t.sendall(b"GET /small HTTP/1.1\r\nHost: localhost\r\n\r\n")
    got = b""
    while b"x" * 100 not in got:
        b = t.recv(65536)
        if not b:
            sys.exit("closed before the answer: %r" % got)
        got += b
    print("ready", flush=True)
    time.sleep(3600)
elif mode == "echo":
    s.sendall(b"hello")
    got = b""
    while len(got) < 5:
        got += s.recv(5 - len(got))
    print("ready", flush=True)
    time.sleep(3600)
else:
    n, told = 0, False
    while True:
        b = s.recv(65536)
        if not b:
            break
        n += len(b)
        if n >= (1 << 20) and not told:
            print("ready", flush=True)
            told = True
"#;

/// Starts an in-process proxy on the root side of `ns`'s link with short
/// keepalive and user timeout, and a far idle timeout.
///
/// Linux lets a non-zero TCP_USER_TIMEOUT override the keepalive probe
/// count (a connection dies once probes went unanswered for the user
/// timeout), which is why sluice defaults it to idle + interval x count.
async fn proxy_for(ns: &Netns) -> sluice::Proxy {
    let listen = SocketAddr::new(IpAddr::V4(ns.host_ip), 0);
    proxy::start(move |c| {
        c.listen = listen;
        c.connector.keepalive = Keepalive {
            idle: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            count: 2,
            user_timeout: Duration::from_secs(3),
        };
        c.relay_limits.idle_timeout = Duration::from_secs(300);
        c.relay_limits.half_close_timeout = Duration::from_secs(300);
    })
    .await
}

/// Runs the client in `ns` and waits for its `ready`.
async fn start_client(
    ns: &Netns,
    proxy: SocketAddr,
    target: impl std::fmt::Display,
    mode: &str,
) -> Child {
    let mut cmd = tokio::process::Command::from(ns.command("python3"));
    cmd.args([
        "-c",
        CLIENT_PY,
        &proxy.ip().to_string(),
        &proxy.port().to_string(),
        &target.to_string(),
        mode,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .kill_on_drop(true);
    let mut child = cmd.spawn().expect("python3 runs in the namespace");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
        .await
        .expect("client ready in time")
        .expect("client stdout");
    assert_eq!(line.as_deref(), Some("ready"), "client did not get going");
    child
}

/// Cuts the link, then kills the client: its FIN (or RST) can never arrive.
async fn vanish(ns: &Netns, mut client: Child) {
    ns.cut_link();
    client.start_kill().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.wait()).await;
}

/// Waits for the client's (delayed) ACK of the last bytes sent to it:
/// keepalive probes only an idle connection; while data is unacknowledged
/// the retransmit timer owns the socket and only the user timeout applies.
async fn all_acked(ns: &Netns) -> bool {
    eventually(Duration::from_secs(3), || {
        sockets_towards(ns).iter().all(|r| r.tx_queue == 0)
    })
    .await
}

fn sockets_towards(ns: &Netns) -> Vec<TcpRow> {
    let ip = IpAddr::V4(ns.ns_ip);
    tcp_table()
        .into_iter()
        .filter(|r| r.remote.ip() == ip || r.local.ip() == ip)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_vanishing_without_fin_is_found_by_keepalive() {
    bounded(Duration::from_secs(60), async move {
        let ns = Netns::create();
        let echo = origin::echo().await;
        let proxy = proxy_for(&ns).await;
        let client = start_client(&ns, proxy.addr, echo, "echo").await;
        assert!(
            eventually(Duration::from_secs(3), || proxy.registry.live(Kind::Tunnel)
                == 1)
            .await,
            "the tunnel is registered"
        );
        assert!(
            !sockets_towards(&ns).is_empty(),
            "the client leg is visible"
        );
        assert!(
            all_acked(&ns).await,
            "the client acknowledged everything: the tunnel is idle"
        );

        vanish(&ns, client).await;
        let cut = Instant::now();
        // Nothing happens by itself for a while: the peer is merely silent.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(proxy.registry.live(Kind::Tunnel), 1);

        let released = eventually(Duration::from_secs(10), || {
            proxy.registry.live(Kind::Tunnel) == 0
        })
        .await;
        let took = cut.elapsed();
        assert!(
            released,
            "tunnel to a vanished client still live after {took:?}"
        );
        eprintln!("vanished idle client released after {took:?}");
        assert_eq!(proxy.registry.closed("dead_peer"), 1);
        assert_eq!(proxy.registry.closed("idle_timeout"), 0);
        let left = sockets_towards(&ns);
        assert!(
            left.is_empty(),
            "sockets towards the client remain: {left:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intercepted_client_vanishing_without_fin_is_found_by_keepalive() {
    use crate::support::pki::{pki, OriginCert};
    bounded(Duration::from_secs(60), async move {
        let ns = Netns::create();
        let origin = origin::https(pki().origin_config(OriginCert::Valid, &[b"http/1.1"])).await;
        let listen = SocketAddr::new(IpAddr::V4(ns.host_ip), 0);
        let proxy = proxy::start(move |c| {
            c.listen = listen;
            pki().intercept_all(c);
            c.connector.keepalive = Keepalive {
                idle: Duration::from_secs(1),
                interval: Duration::from_secs(1),
                count: 2,
                user_timeout: Duration::from_secs(3),
            };
            // Only the socket can notice: the HTTP deadlines are far away.
            c.client.client_idle_timeout = Duration::from_secs(300);
            c.relay_limits.idle_timeout = Duration::from_secs(300);
        })
        .await;
        let target = format!("localhost:{}", origin.port());
        let mode = format!("tls:{}", pki().sluice_ca_cert.display());
        let client = start_client(&ns, proxy.addr, &target, &mode).await;
        assert_eq!(
            proxy.registry.live(Kind::Tunnel),
            1,
            "an intercepted tunnel"
        );
        assert!(all_acked(&ns).await, "the decrypted connection is idle");
        vanish(&ns, client).await;
        let cut = Instant::now();
        let released = eventually(Duration::from_secs(10), || {
            proxy.registry.live(Kind::Tunnel) == 0
        })
        .await;
        assert!(
            released,
            "intercepted tunnel still live after {:?}",
            cut.elapsed()
        );
        eprintln!(
            "vanished intercepted client released after {:?}",
            cut.elapsed()
        );
        assert_eq!(
            proxy.registry.closed("dead_peer"),
            1,
            "{:?}",
            proxy.registry.closed_all()
        );
        assert!(sockets_towards(&ns).is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_to_a_vanished_client_is_ended_by_user_timeout() {
    bounded(Duration::from_secs(60), async move {
        let ns = Netns::create();
        // Streams until its writes fail, then reports how they failed.
        let origin_end: Arc<Mutex<Option<(std::io::ErrorKind, Instant)>>> = Arc::default();
        let end2 = origin_end.clone();
        let origin = origin::raw(move |mut s| {
            let end = end2.clone();
            async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut off = 0u64;
                loop {
                    pattern(3, off, &mut buf);
                    if let Err(e) = s.write_all(&buf).await {
                        *end.lock().await = Some((e.kind(), Instant::now()));
                        return;
                    }
                    off += buf.len() as u64;
                }
            }
        })
        .await;
        let proxy = proxy_for(&ns).await;
        let client = start_client(&ns, proxy.addr, origin, "stream").await;
        assert_eq!(proxy.registry.live(Kind::Tunnel), 1);

        vanish(&ns, client).await;
        let cut = Instant::now();
        let released = eventually(Duration::from_secs(10), || {
            proxy.registry.live(Kind::Tunnel) == 0
        })
        .await;
        let took = cut.elapsed();
        assert!(
            released,
            "tunnel streaming to a vanished client still live after {took:?}"
        );
        eprintln!("vanished streaming client released after {took:?}");
        assert_eq!(proxy.registry.closed("dead_peer"), 1);

        // The origin leg was released too: its writes failed, promptly.
        let mut origin_saw = None;
        for _ in 0..50 {
            origin_saw = *origin_end.lock().await;
            if origin_saw.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (kind, at) = origin_saw.expect("the origin's writes fail once the tunnel ends");
        assert!(
            at.duration_since(cut) < Duration::from_secs(10),
            "origin leg released {:?} after the cut",
            at.duration_since(cut)
        );
        eprintln!("origin write ended with {kind:?}");
        let left = sockets_towards(&ns);
        assert!(
            left.is_empty(),
            "sockets towards the client remain: {left:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_idle_client_is_found_by_unanswered_keepalive_probes() {
    bounded(Duration::from_secs(60), async move {
        // With the link cut, the kernel cannot even transmit its probes. Here
        // the link stays up and the probes go out, reach the namespace and are
        // dropped there: a peer that went silent somewhere beyond the wire.
        let ns = Netns::create();
        let echo = origin::echo().await;
        let proxy = proxy_for(&ns).await;
        let mut client = start_client(&ns, proxy.addr, echo, "echo").await;
        assert!(
            eventually(Duration::from_secs(3), || proxy.registry.live(Kind::Tunnel)
                == 1)
            .await,
            "the tunnel is registered"
        );
        assert!(
            all_acked(&ns).await,
            "the client acknowledged everything: the tunnel is idle"
        );
        ns.silence();
        client.start_kill().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), client.wait()).await;
        let cut = Instant::now();

        let released = eventually(Duration::from_secs(10), || {
            proxy.registry.live(Kind::Tunnel) == 0
        })
        .await;
        let took = cut.elapsed();
        assert!(
            released,
            "tunnel to a silent client still live after {took:?}"
        );
        eprintln!("silent idle client released after {took:?}");
        assert_eq!(proxy.registry.closed("dead_peer"), 1);
        let left = sockets_towards(&ns);
        assert!(
            left.is_empty(),
            "sockets towards the client remain: {left:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_vanishing_without_fin_releases_both_legs() {
    use crate::websocket::{Seen, WsOrigin};
    bounded(Duration::from_secs(60), async move {
        let ns = Netns::create();
        let mut origin = WsOrigin::start().await;
        let proxy = proxy_for(&ns).await;
        let client = start_client(&ns, proxy.addr, origin.addr, "ws").await;
        assert!(
            !sockets_towards(&ns).is_empty(),
            "the client leg is visible"
        );
        assert!(
            all_acked(&ns).await,
            "the client acknowledged everything: the WebSocket is idle"
        );
        let live = proxy.registry.live_total();
        assert!(live >= 2, "both legs are registered: {live}");

        vanish(&ns, client).await;
        let cut = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            proxy.registry.live_total(),
            live,
            "nothing ends by itself: the peer is merely silent"
        );
        let released =
            eventually(Duration::from_secs(10), || proxy.registry.live_total() == 0).await;
        let took = cut.elapsed();
        assert!(
            released,
            "the WebSocket of a vanished client still live after {took:?}"
        );
        eprintln!("vanished WebSocket client released after {took:?}");
        // The upstream leg went with it: the origin sees its end.
        loop {
            match origin.next_seen().await {
                Seen::Ended => break,
                Seen::Close(_) => continue,
            }
        }
        let left = sockets_towards(&ns);
        assert!(
            left.is_empty(),
            "sockets towards the client remain: {left:?}"
        );
        assert_eq!(proxy.registry.closed("idle_timeout"), 0);
    })
    .await;
}
