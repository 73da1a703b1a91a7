//! The real binary's lifecycle: socket options as the kernel reports them,
//! graceful shutdown with work in flight, and configuration errors.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::proxy::{self, run_cli_blocking};
use crate::support::{bounded, client, netns, origin};

async fn echo_once(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, msg);
}

// 10. Keepalive and user timeout on every socket -------------------------

/// `timer:(keepalive,6.93sec,0)` -> 6.93
fn keepalive_left(line: &str) -> Option<f64> {
    let rest = line.split("timer:(keepalive,").nth(1)?;
    let t = rest.split(',').next()?;
    if let Some(ms) = t.strip_suffix("ms") {
        return ms.parse::<f64>().ok().map(|v| v / 1000.0);
    }
    if let Some(min) = t.strip_suffix("min") {
        return min.parse::<f64>().ok().map(|v| v * 60.0);
    }
    t.strip_suffix("sec")?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_established_socket_has_keepalive_and_user_timeout() {
    bounded(Duration::from_secs(60), async move {
        let http = origin::http().await;
        let echo = origin::echo().await;
        let relay = format!("127.0.0.1:0={echo}");
        let sluice = proxy::spawn(&[
            "--keepalive-idle",
            "7s",
            "--keepalive-interval",
            "3s",
            "--keepalive-count",
            "4",
            "--user-timeout",
            "21s",
            "--relay",
            &relay,
        ])
        .await;
        let pid = sluice.pid();

        // A keep-alive forward connection, leaving a pooled upstream behind.
        let mut fwd = TcpStream::connect(sluice.addr).await.unwrap();
        fwd.write_all(format!("GET http://{http}/small HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let resp = client::read_response(&mut BufReader::new(&mut fwd))
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
        // A tunnel and a relay connection, both with bytes moved.
        let mut tunnel = client::connect_tunnel(sluice.addr, echo).await.unwrap();
        echo_once(&mut tunnel, b"through the tunnel").await;
        let mut relay = TcpStream::connect(sluice.relay_addrs[0]).await.unwrap();
        echo_once(&mut relay, b"through the relay").await;

        // What `ss` says about every established socket of the process. A
        // socket with unacknowledged data shows its retransmit timer instead
        // (`timer:(on,..)`), so look again until the last delayed ACK is in.
        let snapshot = || {
            let out = Command::new("ss")
                .args(["-Htnoep", "state", "established"])
                .output()
                .expect("ss runs");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(&format!("pid={pid},")))
                .map(str::to_string)
                .collect::<Vec<String>>()
        };
        let mut mine = snapshot();
        for _ in 0..30 {
            if mine.len() >= 6 && mine.iter().all(|l| l.contains("timer:(keepalive,")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            mine = snapshot();
        }
        assert!(
            mine.len() >= 6,
            "client+upstream legs of forward, tunnel and relay: {mine:#?}"
        );
        for line in &mine {
            let left = keepalive_left(line).unwrap_or_else(|| panic!("no keepalive timer: {line}"));
            assert!(
                left <= 7.0,
                "keepalive fires after {left}s, not within the 7s asked for: {line}"
            );
        }

        // The same sockets from /proc, and their options read from the very
        // descriptors sluice holds.
        let established: Vec<_> = netns::tcp_sockets_of(pid)
            .into_iter()
            .filter(|(_, r)| r.state == netns::TCP_ESTABLISHED)
            .collect();
        assert_eq!(established.len(), mine.len(), "ss and /proc agree");
        let mut checked = 0;
        for (fd, row) in &established {
            let sock = match netns::steal_fd(pid, *fd) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cannot read sluice's sockets (pidfd_getfd: {e}); TCP_USER_TIMEOUT left unchecked");
                    break;
                }
            };
            let opt = |level, name| netns::sockopt_int(&sock, level, name).unwrap();
            let what = format!("fd {fd} {} -> {}", row.local, row.remote);
            assert_eq!(opt(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1, "{what}");
            assert_eq!(opt(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 7, "{what}");
            assert_eq!(opt(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 3, "{what}");
            assert_eq!(opt(libc::IPPROTO_TCP, libc::TCP_KEEPCNT), 4, "{what}");
            assert_eq!(
                opt(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
                21_000,
                "{what}"
            );
            checked += 1;
        }
        eprintln!(
            "{} established sockets with keepalive, {checked} with options read",
            mine.len()
        );
        drop((fwd, tunnel, relay));
    })
    .await;
}

// 11. Graceful shutdown ---------------------------------------------------

const SLOW_BODY: &[u8] = b"abcdefghijklmnopqrst";

/// An HTTP origin whose answer trickles: 20 body bytes, one per 100 ms.
async fn slow_origin() -> SocketAddr {
    origin::raw(|mut s| async move {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut b).await {
                Ok(1) => head.push(b[0]),
                _ => return,
            }
        }
        let h = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            SLOW_BODY.len()
        );
        if s.write_all(h.as_bytes()).await.is_err() {
            return;
        }
        for c in SLOW_BODY {
            if s.write_all(&[*c]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Keep-alive: the connection stays open for the pool.
        let _ = s.read(&mut b).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_new_connections_and_finishes_the_request_in_flight() {
    bounded(Duration::from_secs(60), async move {
        let slow = slow_origin().await;
        let mut sluice = proxy::spawn(&["--drain-timeout", "10s"]).await;
        let addr = sluice.addr;

        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(format!("GET http://{slow}/ HTTP/1.1\r\nHost: {slow}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        // Wait for the head and the first body byte: the request is in flight.
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let head_end = loop {
            let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
                .await
                .expect("answer starts")
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
            if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                if got.len() > p + 4 {
                    break p + 4;
                }
            }
        };
        assert!(got.starts_with(b"HTTP/1.1 200"));

        sluice.signal(libc::SIGTERM);
        let term = Instant::now();
        // New connections are refused once the listener is gone.
        let mut refused = false;
        while term.elapsed() < Duration::from_secs(2) {
            match TcpStream::connect(addr).await {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    refused = true;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        assert!(
            refused,
            "still accepting {:?} after SIGTERM",
            term.elapsed()
        );

        // The request in flight completes, in full, and then the connection ends.
        let rest = async {
            loop {
                let n = c.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(Duration::from_secs(5), rest)
            .await
            .expect("body completes and the connection closes");
        assert_eq!(
            String::from_utf8_lossy(&got[head_end..]),
            String::from_utf8_lossy(SLOW_BODY),
            "the whole body of the request in flight; sluice log:\n{}",
            sluice.log_text()
        );
        let done = Instant::now();
        assert_eq!(
            sluice.wait_exit_in_place(Duration::from_secs(8)),
            Some(0),
            "{}",
            sluice.log_text()
        );
        // Nothing was left to drain: the exit does not wait for the 10 s deadline.
        assert!(
            done.elapsed() < Duration::from_secs(3),
            "exited {:?} after the last request finished",
            done.elapsed()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_closes_an_idle_tunnel() {
    bounded(Duration::from_secs(60), async move {
        let echo = origin::echo().await;
        let mut sluice = proxy::spawn(&["--drain-timeout", "1s"]).await;
        let mut tunnel = client::connect_tunnel(sluice.addr, echo).await.unwrap();
        echo_once(&mut tunnel, b"hello").await;

        sluice.signal(libc::SIGTERM);
        let term = Instant::now();
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(5), tunnel.read(&mut buf))
            .await
            .expect("tunnel closed in time");
        assert_eq!(r.unwrap(), 0, "the tunnel client sees EOF");
        let closed_after = term.elapsed();
        assert!(
            closed_after >= Duration::from_millis(900),
            "an idle tunnel is given the drain time ({closed_after:?})"
        );
        let code = sluice.wait_exit_in_place(Duration::from_secs(5));
        assert_eq!(code, Some(0), "{}", sluice.log_text());
        assert!(
            term.elapsed() < Duration::from_secs(3),
            "exit took {:?}",
            term.elapsed()
        );
    })
    .await;
}

#[test]
fn sigterm_right_after_the_listening_line_still_drains() {
    // A supervisor may signal as soon as it sees "listening": by then the
    // handler must be in place, or the default action kills the process
    // (exit by signal, no drain). Signal from the very line, many times.
    use std::io::BufRead;
    for round in 0..40 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--drain-timeout", "2s", "--data-dir", ":memory:"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut log = Vec::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            let ready = line.contains("sluice listening");
            log.push(line);
            if ready {
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                break;
            }
        }
        // Keep reading so the process never blocks on a full pipe.
        let drained = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break Some(st);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        log.extend(drained.join().unwrap());
        let status = status.expect("exits after SIGTERM");
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: {status:?}\n{}",
            log.join("\n")
        );
    }
}

// 12. Configuration errors ------------------------------------------------

/// Runs the binary to completion (killed after `within`): exit code, stderr.
fn run_bounded(args: &[&str], within: Duration) -> (Option<i32>, String) {
    let mut argv = vec!["--listen", "127.0.0.1:0", "--data-dir", ":memory:"];
    argv.extend_from_slice(args);
    let run = run_cli_blocking(&argv, None, within);
    (run.code, run.stderr)
}

#[test]
fn bad_duration_flag_is_rejected_naming_key_and_value() {
    let (code, err) = run_bounded(&["--idle-timeout", "5x"], Duration::from_secs(10));
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}");
    assert!(err.contains("idle_timeout") && err.contains("5x"), "{err}");
}

#[test]
fn unknown_config_key_is_rejected_naming_the_key() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut f, b"idle_timeout = \"2m\"\nidle_timout = \"3m\"\n").unwrap();
    let path = f.path().to_str().unwrap().to_string();
    let (code, err) = run_bounded(&["--config", &path], Duration::from_secs(10));
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}");
    assert!(err.contains("idle_timout"), "{err}");
}

/// A loopback port free right now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// Issue 11, finding 7: a relay to itself (which one client could use to
// fill the connection limit) or to the admin port (which it would expose)
// is refused at start, naming what it points at.
#[test]
fn a_relay_to_sluice_itself_or_its_admin_is_refused_at_start() {
    let p = free_port();
    let own = format!("127.0.0.1:{p}=127.0.0.1:{p}");
    let (code, err) = run_bounded(
        &["--admin", "off", "--relay", &own],
        Duration::from_secs(10),
    );
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
    assert!(
        err.contains("sluice itself") && err.contains("own relays"),
        "{err}"
    );

    let a = free_port();
    let admin = format!("127.0.0.1:{a}");
    let to_admin = format!("127.0.0.1:0=localhost:{a}");
    let (code, err) = run_bounded(
        &["--admin", &admin, "--relay", &to_admin],
        Duration::from_secs(10),
    );
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}: {err}");
    assert!(err.contains("admin server"), "{err}");
}
