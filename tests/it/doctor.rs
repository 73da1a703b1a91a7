//! The kernel cross-check and the commands built on the admin API, against
//! the real binary (whose only sockets are its own): `GET /api/sockets`
//! and `sluice doctor` on a healthy instance with live traffic, on one
//! that deliberately leaked a socket (test hook), and on nothing at all;
//! the leak watchdog's max-age warning; `sluice top`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::admin::{self, s, u};
use crate::support::client::{self, Client};
use crate::support::origin;
use crate::support::proxy::{self, SluiceProcess};

async fn echo_exactly(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, data);
}

fn admin_of(p: &SluiceProcess) -> SocketAddr {
    p.admin.expect("the admin server runs")
}

fn state_count(report: &Value, state: &str) -> u64 {
    report["by_state"][state].as_u64().unwrap_or(0)
}

// 8. Kernel cross-check and doctor ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_instance_with_live_traffic_has_no_orphans_and_doctor_exits_0() {
    let http = origin::http().await;
    let echo = origin::echo().await;
    let p = proxy::spawn(&[]).await;
    let adm = admin_of(&p);

    // Live traffic: a tunnel (2 sockets in sluice) and a keep-alive
    // forward connection (client leg + pooled upstream leg).
    let mut tunnel = client::connect_tunnel(p.addr, echo).await.unwrap();
    echo_exactly(&mut tunnel, b"live").await;
    let mut ka = Client::connect(p.addr).await.unwrap();
    assert_eq!(ka.get(http, "/small").await.unwrap().status, 200);
    let opened = 4;

    let r = admin::get_json(adm, "/api/sockets").await;
    assert_eq!(u(&r, "orphan_count"), 0, "{r}");
    assert!(r["orphans"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(u(&r, "without_timer"), 0, "{r}");
    assert_eq!(u(&r, "without_keepalive"), 0, "{r}");
    assert!(r["timerless"].as_array().unwrap().is_empty(), "{r}");
    // 2 listeners, the sockets opened through it, the admin request's own.
    assert!(u(&r, "total") > opened + 2, "{r}");
    assert!(state_count(&r, "LISTEN") >= 2, "{r}");
    assert!(state_count(&r, "ESTABLISHED") > opened, "{r}");
    assert!(
        u(&r, "total") <= u(&r, "registry_sockets"),
        "the registry accounts for every socket: {r}"
    );
    let peers = r["top_peers"].as_array().unwrap();
    let local = peers
        .iter()
        .find(|p| p["ip"] == "127.0.0.1")
        .expect("loopback peer listed");
    assert!(u(local, "sockets") > opened, "{r}");
    // Without --test-hooks there is no way to leak on purpose.
    let hook = admin::request(adm, "POST", "/api/debug/leak-socket", None)
        .await
        .unwrap();
    assert_eq!(hook.status, 404, "{}", hook.text());

    // doctor, with the traffic still open and bytes moving.
    let (stop_tx, mut stop_rx) = tokio::sync::mpsc::channel::<()>(1);
    let chatter = tokio::spawn(async move {
        for _ in 0..200 {
            echo_exactly(&mut tunnel, b"ping").await;
            tokio::select! {
                _ = stop_rx.recv() => break,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        tunnel
    });
    let adm_s = adm.to_string();
    let run = proxy::run_cli(&["doctor", "--admin", &adm_s], Duration::from_secs(15)).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("healthy"), "{}", run.stdout);
    assert!(
        run.stdout.contains("orphans (not in registry): 0"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("LEAK"), "{}", run.stdout);
    let run = proxy::run_cli(
        &["doctor", "--json", "--admin", &adm_s],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let v: Value = serde_json::from_str(run.stdout.trim()).expect("--json prints the report");
    assert_eq!(u(&v, "orphan_count"), 0);
    let _ = stop_tx.send(()).await;
    let _tunnel = chatter.await.unwrap();
    assert_eq!(ka.get(http, "/small").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_instance_stays_clean_while_connections_churn() {
    let http = origin::http().await;
    let echo = origin::echo().await;
    let p = proxy::spawn(&[]).await;
    let adm = admin_of(&p);
    let proxy = p.addr;
    // Churn: tunnels and forward requests opened and closed back to back,
    // bounded by a stop signal and a count.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut churners = Vec::new();
    for i in 0..4 {
        let stop = stop_rx.clone();
        churners.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !*stop.borrow() && n < 5000 {
                if i % 2 == 0 {
                    let mut t = client::connect_tunnel(proxy, echo).await.unwrap();
                    echo_exactly(&mut t, b"c").await;
                } else {
                    let r = client::get_once(proxy, http, "/small").await.unwrap();
                    assert_eq!(r.status, 200);
                }
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut reports = Vec::new();
    for _ in 0..5 {
        let r = admin::get_json(adm, "/api/sockets").await;
        reports.push(r);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let adm_s = adm.to_string();
    let run = proxy::run_cli(&["doctor", "--admin", &adm_s], Duration::from_secs(15)).await;
    let _ = stop_tx.send(true);
    let mut loops = 0;
    for c in churners {
        loops += tokio::time::timeout(Duration::from_secs(5), c)
            .await
            .expect("churn stops")
            .unwrap();
    }
    assert!(loops > 20, "the churn ran ({loops} loops)");
    for r in &reports {
        assert_eq!(
            (
                u(r, "orphan_count"),
                u(r, "without_timer"),
                u(r, "without_keepalive")
            ),
            (0, 0, 0),
            "no orphan or timer-less socket while connections come and go: {r}"
        );
    }
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_socket_is_an_orphan_and_doctor_exits_1() {
    let p = proxy::spawn(&["--test-hooks"]).await;
    let adm = admin_of(&p);
    let before = admin::get_json(adm, "/api/sockets").await;
    assert_eq!(u(&before, "orphan_count"), 0, "{before}");

    let r = admin::request(adm, "POST", "/api/debug/leak-socket", None)
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let report = admin::get_json(adm, "/api/sockets").await;
    assert!(u(&report, "orphan_count") >= 1, "{report}");
    let orphans = report["orphans"].as_array().unwrap();
    let leaked = orphans
        .iter()
        .find(|o| o["remote"] == p.addr.to_string())
        .unwrap_or_else(|| panic!("the leaked socket (to {}) is an orphan: {report}", p.addr));
    assert_eq!(s(leaked, "state"), "ESTABLISHED", "{leaked}");
    assert_eq!(leaked["keepalive"], false, "{leaked}");
    assert_eq!(s(leaked, "timer"), "none", "{leaked}");
    assert!(u(&report, "without_keepalive") >= 1, "{report}");
    assert!(u(&report, "without_timer") >= 1, "{report}");
    // Only the leak: the proxy side of that connection is registered.
    assert_eq!(orphans.len(), 1, "{report}");

    let adm_s = adm.to_string();
    let run = proxy::run_cli(&["doctor", "--admin", &adm_s], Duration::from_secs(15)).await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("LEAK SUSPECTED"), "{}", run.stdout);
    assert!(
        run.stdout.contains("orphans (not in registry): 1"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("established, no keepalive: 1"),
        "{}",
        run.stdout
    );
    let line = format!(
        "fd {} inode {} ESTABLISHED",
        u(leaked, "fd"),
        u(leaked, "inode")
    );
    assert!(
        run.stdout.contains(&line) && run.stdout.contains(&format!("-> {}", p.addr)),
        "the orphan is listed ({line}): {}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_and_top_exit_2_when_nothing_listens() {
    let dead = origin::refusing().to_string();
    let run = proxy::run_cli(&["doctor", "--admin", &dead], Duration::from_secs(15)).await;
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&dead),
        "names the address: {}",
        run.stderr
    );
    let run = proxy::run_cli(
        &["top", "--iterations", "2", "--admin", &dead],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(run.code, Some(2), "{}\n{}", run.stdout, run.stderr);
}

// 9. Leak watchdog -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_warns_about_connections_older_than_max_age() {
    let echo = origin::echo().await;
    let p = proxy::spawn(&["--max-connection-age", "1s"]).await;
    let adm = admin_of(&p);
    let mut tunnel = client::connect_tunnel(p.addr, echo).await.unwrap();
    echo_exactly(&mut tunnel, b"old").await;
    let row = admin::wait_row(adm, tunnel.local_addr().unwrap(), "tunnel", |_| true).await;
    let id = u(&row, "id");
    let m = admin::metrics(adm).await;
    assert_eq!(
        m.get("sluice_leak_warnings_total", &[("check", "max_age")])
            .unwrap_or(0.0),
        0.0,
        "no warning while the tunnel is young"
    );

    let needle = format!("#{id} tunnel");
    let started = Instant::now();
    let mut warned = false;
    while started.elapsed() < Duration::from_millis(3500) {
        if p.log_text()
            .lines()
            .any(|l| l.contains("leak watchdog") && l.contains(&needle))
        {
            warned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        warned,
        "a warning names the old tunnel ({needle}):\n{}",
        p.log_text()
    );
    let line = p
        .log_text()
        .lines()
        .find(|l| l.contains("leak watchdog"))
        .unwrap()
        .to_string();
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&tunnel.local_addr().unwrap().to_string()),
        "names the client: {line}"
    );
    let m = admin::metrics(adm).await;
    assert!(
        m.must("sluice_leak_warnings_total", &[("check", "max_age")]) >= 1.0,
        "{}",
        m.0
    );
}

// 10. sluice top ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_prints_one_line_per_iteration() {
    let p = proxy::spawn(&[]).await;
    let adm_s = admin_of(&p).to_string();
    let run = proxy::run_cli(
        &["top", "--iterations", "2", "--admin", &adm_s],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    for l in lines {
        assert!(l.contains("rss") && l.contains("fds"), "{l}");
        assert!(!l.contains("rss        0.0 B"), "rss is read: {l}");
    }
}
