//! Port relays (`--relay LISTEN=UPSTREAM`) over real sockets: bytes pass
//! both ways, a dead upstream is reported to the client at once, the idle
//! deadline applies, and every relay leaves the registry when it ends.

use std::time::{Duration, Instant};

use sluice::config::RelaySpec;
use sluice::registry::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{bounded, eventually, origin, pattern, proxy};

async fn relay_proxy(upstream: &str, tweak: impl FnOnce(&mut sluice::Config)) -> sluice::Proxy {
    let spec = RelaySpec {
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream: upstream.to_string(),
    };
    proxy::start(move |c| {
        c.relays = vec![spec];
        tweak(c);
    })
    .await
}

/// Reads until EOF, an error or `within`: (closed?, was it a reset?, when).
async fn wait_closed(s: &mut TcpStream, within: Duration) -> (bool, bool, Duration) {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return (false, false, start.elapsed()),
            Ok(Ok(0)) => return (true, false, start.elapsed()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let reset = e.kind() == std::io::ErrorKind::ConnectionReset;
                return (true, reset, start.elapsed());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_echoes_bytes_and_releases_its_entry() {
    bounded(Duration::from_secs(60), async move {
        let echo = origin::echo().await;
        // A name, so the relay resolves it at connect time.
        let proxy = relay_proxy(&format!("localhost:{}", echo.port()), |_| {}).await;
        let relay = proxy.relay_addrs[0];

        let mut s = TcpStream::connect(relay).await.unwrap();
        let mut data = vec![0u8; 4 << 20];
        pattern(9, 0, &mut data);
        let (mut r, mut w) = s.split();
        let send = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut back = Vec::new();
        let recv = r.read_to_end(&mut back);
        let (_, got) =
            tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(send, recv) })
                .await
                .expect("echo completes");
        got.unwrap();
        assert!(
            back == data,
            "echoed {} bytes, not the 4 MiB sent",
            back.len()
        );
        assert_eq!(proxy.registry.accepted(Kind::Relay), 1);
        drop(s);
        assert!(
            eventually(Duration::from_secs(2), || proxy.registry.live(Kind::Relay)
                == 0)
            .await
        );
        assert_eq!(proxy.registry.closed("error"), 0);
        assert_eq!(proxy.registry.closed("reset"), 0);
        assert!(proxy.registry.closed("eof") >= 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_to_refused_upstream_closes_client_at_once() {
    bounded(Duration::from_secs(60), async move {
        let closed = origin::refusing();
        let proxy = relay_proxy(&closed.to_string(), |_| {}).await;
        // The reset can beat the client's own connect completion: then connect
        // itself reports it.
        let (closed_now, reset, took) = match TcpStream::connect(proxy.relay_addrs[0]).await {
            Ok(mut s) => wait_closed(&mut s, Duration::from_secs(3)).await,
            Err(e) => (
                true,
                e.kind() == std::io::ErrorKind::ConnectionReset,
                Duration::ZERO,
            ),
        };
        assert!(closed_now, "client still open after {took:?}");
        assert!(reset, "nothing behind the port: the client gets a reset");
        assert!(took < Duration::from_secs(1), "took {took:?}");
        assert!(
            eventually(Duration::from_secs(1), || proxy.registry.live(Kind::Relay)
                == 0)
            .await
        );
        assert_eq!(proxy.registry.closed("error"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_relay_is_closed() {
    bounded(Duration::from_secs(60), async move {
        let echo = origin::echo().await;
        let proxy = relay_proxy(&echo.to_string(), |c| {
            c.relay_limits.idle_timeout = Duration::from_millis(300)
        })
        .await;
        let mut s = TcpStream::connect(proxy.relay_addrs[0]).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        let (closed_now, reset, took) = wait_closed(&mut s, Duration::from_secs(5)).await;
        assert!(closed_now && !reset, "closed {closed_now}, reset {reset}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
            "closed after {took:?}"
        );
        assert!(
            eventually(Duration::from_secs(1), || proxy.registry.live(Kind::Relay)
                == 0)
            .await
        );
        assert_eq!(proxy.registry.closed("idle_timeout"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_passes_upstream_reset_to_client() {
    bounded(Duration::from_secs(60), async move {
        let origin = origin::raw(|mut s| async move {
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).await.is_ok() {
                socket2::SockRef::from(&s)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
        })
        .await;
        let proxy = relay_proxy(&origin.to_string(), |_| {}).await;
        let mut s = TcpStream::connect(proxy.relay_addrs[0]).await.unwrap();
        s.write_all(b"x").await.unwrap();
        let (closed_now, reset, took) = wait_closed(&mut s, Duration::from_secs(3)).await;
        assert!(closed_now && reset, "closed {closed_now}, reset {reset}");
        assert!(took < Duration::from_secs(1), "took {took:?}");
        assert!(
            eventually(Duration::from_secs(1), || proxy.registry.live(Kind::Relay)
                == 0)
            .await
        );
        assert_eq!(proxy.registry.closed("reset"), 1);
    })
    .await;
}
