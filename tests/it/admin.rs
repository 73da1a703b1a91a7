//! The admin API over real sockets: the live inventory (row shapes, figures
//! that match the bytes actually sent, filters), closing a connection by
//! id, health, Prometheus metrics that move with real traffic, the history
//! ring, and the self-SSRF guard in front of sluice's own listeners.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice::config::RelaySpec;
use sluice::registry::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::support::admin::{self, s, u};
use crate::support::client::{self, Client, Request};
use crate::support::{eventually, origin, pattern, proxy};

const IDLE: Duration = Duration::from_secs(30);
const CLIENT_IDLE: Duration = Duration::from_secs(20);

/// An in-process proxy with its admin server on an ephemeral port.
async fn proxy_with_admin(tweak: impl FnOnce(&mut sluice::Config)) -> (sluice::Proxy, SocketAddr) {
    let p = proxy::start(|c| {
        c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        tweak(c);
    })
    .await;
    let a = p.admin_addr.expect("the admin server runs");
    (p, a)
}

/// Writes `data` and reads exactly the same bytes back (echo origin).
async fn echo_exactly(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut back))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(back, data);
}

fn ids(rows: &[Value]) -> BTreeSet<u64> {
    rows.iter().map(|r| u(r, "id")).collect()
}

fn deadline_of(row: &Value) -> (&str, u64) {
    let d = &row["next_deadline"];
    assert!(d.is_object(), "next_deadline missing: {row}");
    (s(d, "reason"), u(d, "in_ms"))
}

// 1. Inventory rows ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_rows_match_a_live_tunnel_keepalive_connection_and_relay() {
    let http = origin::http().await;
    let echo = origin::echo().await;
    let (proxy, adm) = proxy_with_admin(|c| {
        c.relay_limits.idle_timeout = IDLE;
        c.client.client_idle_timeout = CLIENT_IDLE;
        c.relays = vec![RelaySpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            upstream: echo.to_string(),
        }];
    })
    .await;

    // A CONNECT tunnel carrying 1000 bytes each way.
    let mut tunnel = client::connect_tunnel(proxy.addr, echo).await.unwrap();
    let mut data = vec![0u8; 1000];
    pattern(7, 0, &mut data);
    echo_exactly(&mut tunnel, &data).await;
    // A keep-alive forward connection that served three 100-byte answers.
    let mut ka = Client::connect(proxy.addr).await.unwrap();
    for _ in 0..3 {
        let r = ka.get(http, "/small").await.unwrap();
        assert_eq!((r.status, r.body.len()), (200, 100));
    }
    // A port relay carrying 777 bytes each way.
    let mut relay = TcpStream::connect(proxy.relay_addrs[0]).await.unwrap();
    let mut data = vec![0u8; 777];
    pattern(8, 0, &mut data);
    echo_exactly(&mut relay, &data).await;

    let t = admin::wait_row(adm, tunnel.local_addr().unwrap(), "tunnel", |r| {
        r["bytes_up"] == 1000 && r["bytes_down"] == 1000
    })
    .await;
    assert_eq!(
        (u(&t, "bytes_up"), u(&t, "bytes_down")),
        (1000, 1000),
        "{t}"
    );
    assert!(
        s(&t, "upstream").contains(&echo.to_string()),
        "tunnel upstream names the target: {t}"
    );
    assert_eq!(s(&t, "state"), "streaming", "{t}");
    assert_eq!(s(&t, "user"), "127.0.0.1", "{t}");
    let age = u(&t, "age_ms");
    assert!(age < 10_000, "{t}");
    assert!(u(&t, "idle_ms") <= age, "{t}");
    let (reason, in_ms) = deadline_of(&t);
    assert_eq!(reason, "idle_timeout", "{t}");
    let idle_ms = IDLE.as_millis() as u64;
    assert!(
        in_ms <= idle_ms && in_ms + age + 2000 >= idle_ms,
        "tunnel closes within the idle window, from its last activity: {t}"
    );

    let h = admin::wait_row(adm, ka.r.get_ref().local_addr().unwrap(), "http", |r| {
        r["requests"] == 3 && r["bytes_down"] == 300
    })
    .await;
    assert_eq!(u(&h, "requests"), 3, "requests served on it: {h}");
    assert_eq!(
        (u(&h, "bytes_up"), u(&h, "bytes_down")),
        (0, 300),
        "body bytes each way: {h}"
    );
    assert_eq!(s(&h, "user"), "127.0.0.1", "{h}");
    assert_eq!(
        s(&h, "state"),
        "idle",
        "between keep-alive requests the connection is idle: {h}"
    );
    let (reason, in_ms) = deadline_of(&h);
    assert_eq!(
        reason, "idle_timeout",
        "a keep-alive connection with no request in flight closes at the client idle timeout: {h}"
    );
    let client_idle_ms = CLIENT_IDLE.as_millis() as u64;
    assert!(
        in_ms <= client_idle_ms && in_ms + 3000 >= client_idle_ms,
        "{h}"
    );

    let r = admin::wait_row(adm, relay.local_addr().unwrap(), "relay", |r| {
        r["bytes_up"] == 777 && r["bytes_down"] == 777
    })
    .await;
    assert_eq!((u(&r, "bytes_up"), u(&r, "bytes_down")), (777, 777), "{r}");
    assert_eq!(s(&r, "upstream"), echo.to_string(), "{r}");
    assert_eq!(s(&r, "state"), "streaming", "{r}");
    let (reason, in_ms) = deadline_of(&r);
    assert_eq!(reason, "idle_timeout", "{r}");
    assert!(in_ms <= idle_ms && in_ms + 5000 >= idle_ms, "{r}");

    // Every row has the full shape, ids are unique and sorted.
    let rows = admin::connections(adm, "").await;
    let mut last_id = 0;
    for row in &rows {
        for key in [
            "id",
            "kind",
            "client",
            "upstream",
            "user",
            "state",
            "age_ms",
            "idle_ms",
            "bytes_up",
            "bytes_down",
            "requests",
            "next_deadline",
        ] {
            assert!(row.get(key).is_some(), "row lacks {key}: {row}");
        }
        assert!(u(row, "id") > last_id, "ids unique and ascending: {rows:?}");
        last_id = u(row, "id");
    }
    assert!(
        rows.iter().any(|r| r["kind"] == "admin"),
        "the admin request itself is a registered connection: {rows:?}"
    );
    assert_eq!(proxy.registry.live(Kind::Tunnel), 1);
    assert_eq!(proxy.registry.live(Kind::Relay), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_filters_by_kind_client_age_and_idle() {
    let http = origin::http().await;
    let echo = origin::echo().await;
    let (proxy, adm) = proxy_with_admin(|c| c.relay_limits.idle_timeout = IDLE).await;

    // Old and idle after one byte; old and busy (a byte every 100 ms).
    let mut quiet = client::connect_tunnel(proxy.addr, echo).await.unwrap();
    echo_exactly(&mut quiet, b"x").await;
    let mut busy = client::connect_tunnel(proxy.addr, echo).await.unwrap();
    let busy_addr = busy.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = mpsc::channel::<()>(1);
    let chatter = tokio::spawn(async move {
        for _ in 0..100 {
            echo_exactly(&mut busy, b"p").await;
            tokio::select! {
                _ = stop_rx.recv() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        busy
    });
    // A forward connection from another loopback address.
    let other = client::connect_from("127.0.0.2", proxy.addr).await;
    let other_addr = other.local_addr().unwrap();
    let mut other = Client::from_stream(other);
    assert_eq!(other.get(http, "/small").await.unwrap().status, 200);

    tokio::time::sleep(Duration::from_millis(3000)).await;
    let mut young = client::connect_tunnel(proxy.addr, echo).await.unwrap();
    echo_exactly(&mut young, b"y").await;

    let quiet_id = u(
        &admin::wait_row(adm, quiet.local_addr().unwrap(), "tunnel", |_| true).await,
        "id",
    );
    let busy_id = u(
        &admin::wait_row(adm, busy_addr, "tunnel", |_| true).await,
        "id",
    );
    let young_id = u(
        &admin::wait_row(adm, young.local_addr().unwrap(), "tunnel", |_| true).await,
        "id",
    );
    let other_id = u(
        &admin::wait_row(adm, other_addr, "http", |_| true).await,
        "id",
    );

    let tunnels = admin::connections(adm, "kind=tunnel").await;
    assert!(tunnels.iter().all(|r| r["kind"] == "tunnel"), "{tunnels:?}");
    assert_eq!(ids(&tunnels), BTreeSet::from([quiet_id, busy_id, young_id]));

    let https = admin::connections(adm, "kind=http").await;
    assert!(https.iter().all(|r| r["kind"] == "http"), "{https:?}");
    assert!(ids(&https).contains(&other_id));

    let by_ip = admin::connections(adm, "client=127.0.0.2").await;
    assert_eq!(ids(&by_ip), BTreeSet::from([other_id]), "{by_ip:?}");
    let by_addr = admin::connections(adm, &format!("client={other_addr}")).await;
    assert_eq!(ids(&by_addr), BTreeSet::from([other_id]), "{by_addr:?}");
    let local = admin::connections(adm, "client=127.0.0.1").await;
    assert!(!ids(&local).contains(&other_id), "{local:?}");
    assert!(ids(&local).is_superset(&BTreeSet::from([quiet_id, busy_id, young_id])));

    let old = admin::connections(adm, "min_age=2s").await;
    assert!(
        old.iter().all(|r| u(r, "age_ms") >= 2000),
        "min_age keeps old rows only: {old:?}"
    );
    assert!(ids(&old).is_superset(&BTreeSet::from([quiet_id, busy_id, other_id])));
    assert!(!ids(&old).contains(&young_id), "{old:?}");
    let old_tunnels = admin::connections(adm, "kind=tunnel&min_age=2s").await;
    assert_eq!(ids(&old_tunnels), BTreeSet::from([quiet_id, busy_id]));

    let idle = admin::connections(adm, "kind=tunnel&min_idle=1500ms").await;
    assert!(
        idle.iter().all(|r| u(r, "idle_ms") >= 1500),
        "min_idle keeps idle rows only: {idle:?}"
    );
    assert_eq!(
        ids(&idle),
        BTreeSet::from([quiet_id]),
        "the quiet tunnel is idle, the chatty and the young ones are not: {idle:?}"
    );

    let limited = admin::get_json(adm, "/api/connections?kind=tunnel&limit=1").await;
    assert_eq!(limited["count"], 3, "count is before the limit: {limited}");
    assert_eq!(limited["connections"].as_array().unwrap().len(), 1);

    for (query, names) in [
        ("kind=bogus", ["kind", "bogus"]),
        ("min_age=forever", ["min_age", "forever"]),
        ("min_idle=3parsecs", ["min_idle", "3parsecs"]),
    ] {
        let r = admin::get(adm, &format!("/api/connections?{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        let v: Value = serde_json::from_slice(&r.body).expect("error answer is JSON");
        let msg = s(&v, "error");
        for n in names {
            assert!(msg.contains(n), "{query}: message names `{n}`: {msg}");
        }
    }

    let _ = stop_tx.send(()).await;
    let _busy = tokio::time::timeout(Duration::from_secs(5), chatter)
        .await
        .expect("chatter stops")
        .unwrap();
}

// 2. Kill by id ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_closes_both_legs_of_a_tunnel_and_counts_admin_kill() {
    // Echoes and reports how its side of the tunnel ended.
    let (tx, mut origin_end) = mpsc::unbounded_channel::<String>();
    let target = origin::raw(move |mut s| {
        let tx = tx.clone();
        async move {
            let mut buf = [0u8; 1024];
            let end = loop {
                match s.read(&mut buf).await {
                    Ok(0) => break "eof".to_string(),
                    Ok(n) => {
                        if let Err(e) = s.write_all(&buf[..n]).await {
                            break format!("write {:?}", e.kind());
                        }
                    }
                    Err(e) => break format!("read {:?}", e.kind()),
                }
            };
            let _ = tx.send(end);
        }
    })
    .await;
    let http = origin::http().await;
    let (proxy, adm) = proxy_with_admin(|_| {}).await;

    let mut tunnel = client::connect_tunnel(proxy.addr, target).await.unwrap();
    echo_exactly(&mut tunnel, b"hello").await;
    let row = admin::wait_row(adm, tunnel.local_addr().unwrap(), "tunnel", |_| true).await;
    let id = u(&row, "id");
    let before = proxy.registry.closed("admin_kill");

    let r = admin::request(adm, "DELETE", &format!("/api/connections/{id}"), None)
        .await
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    let mut buf = [0u8; 64];
    let client_end = tokio::time::timeout(Duration::from_secs(2), tunnel.read(&mut buf))
        .await
        .expect("the client leg closes promptly");
    assert!(
        matches!(client_end, Ok(0) | Err(_)),
        "client leg: EOF or reset, got {client_end:?}"
    );
    let seen = tokio::time::timeout(Duration::from_secs(2), origin_end.recv())
        .await
        .expect("the origin leg closes promptly")
        .unwrap();
    assert!(
        seen == "eof" || seen.contains("ConnectionReset"),
        "origin leg: {seen}"
    );
    assert!(
        eventually(Duration::from_secs(2), || proxy
            .registry
            .closed("admin_kill")
            == before + 1)
        .await,
        "closed(admin_kill) counts the kill once: {}",
        proxy.registry.closed("admin_kill")
    );
    assert!(
        eventually(Duration::from_secs(2), || proxy.registry.live(Kind::Tunnel)
            == 0)
        .await
    );
    assert!(admin::connections(adm, "kind=tunnel").await.is_empty());

    // A keep-alive forward connection is closed the same way.
    let mut ka = Client::connect(proxy.addr).await.unwrap();
    assert_eq!(ka.get(http, "/small").await.unwrap().status, 200);
    let row = admin::wait_row(adm, ka.r.get_ref().local_addr().unwrap(), "http", |_| true).await;
    let r = admin::request(
        adm,
        "DELETE",
        &format!("/api/connections/{}", u(&row, "id")),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204);
    assert!(
        ka.wait_closed(Duration::from_secs(2)).await.is_some(),
        "killed keep-alive connection closes"
    );
    assert!(
        eventually(Duration::from_secs(2), || proxy
            .registry
            .closed("admin_kill")
            == before + 2)
        .await
    );

    // Gone, unknown and malformed ids.
    let again = admin::request(adm, "DELETE", &format!("/api/connections/{id}"), None)
        .await
        .unwrap();
    assert_eq!(again.status, 404, "{}", again.text());
    assert!(again.text().contains(&id.to_string()), "{}", again.text());
    let unknown = admin::request(adm, "DELETE", "/api/connections/987654321", None)
        .await
        .unwrap();
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let bad = admin::request(adm, "DELETE", "/api/connections/abc", None)
        .await
        .unwrap();
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert_eq!(proxy.registry.closed("admin_kill"), before + 2);
}

// 3. Health --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_ok_json() {
    let (_proxy, adm) = proxy_with_admin(|_| {}).await;
    let r = admin::get(adm, "/api/health").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.contains("application/json")),
        "{:?}",
        r.headers
    );
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(v["ready"], true, "{v}");
    assert!(v["uptime_s"].is_u64() && v["version"].is_string(), "{v}");
    assert!(
        u(&v, "connections") >= 1,
        "the health request itself is live: {v}"
    );
    let missing = admin::get(adm, "/api/nothing-here").await;
    assert_eq!(missing.status, 404);
}

// 6. Metrics -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_names_and_values_move_with_real_traffic() {
    let http = origin::http().await;
    let echo = origin::echo().await;
    let (proxy, adm) =
        proxy_with_admin(|c| c.relay_limits.idle_timeout = Duration::from_secs(1)).await;

    let m0 = admin::metrics(adm).await;
    for (name, kind) in [
        ("sluice_connections_open", "gauge"),
        ("sluice_connections_accepted", "counter"),
        ("sluice_connections_closed", "counter"),
        ("sluice_bytes", "counter"),
        ("sluice_upstream_connect_seconds", "histogram"),
        ("sluice_time_to_first_byte_seconds", "histogram"),
        ("sluice_request_duration_seconds", "histogram"),
        ("sluice_process_resident_memory_bytes", "gauge"),
        ("sluice_process_resident_memory_by_kind_bytes", "gauge"),
        ("sluice_process_cpu_seconds", "counter"),
        ("sluice_process_open_fds", "gauge"),
        ("sluice_process_threads", "gauge"),
        ("sluice_client_bytes", "gauge"),
        ("sluice_client_connections_open", "gauge"),
    ] {
        assert!(
            m0.has_type(name, kind),
            "no `# TYPE {name} {kind}` in:\n{}",
            m0.0
        );
    }
    for reason in [
        "eof",
        "reset",
        "idle_timeout",
        "header_timeout",
        "connect_timeout",
        "dead_peer",
        "limit_refused",
        "admin_kill",
        "shutdown",
    ] {
        m0.must("sluice_connections_closed_total", &[("reason", reason)]);
    }
    let rss = m0.must("sluice_process_resident_memory_bytes", &[]);
    assert!(rss > 1024.0 * 1024.0);
    // The split: the process's own memory, page cache, shared memory; the
    // parts add up to the total (read a moment apart, so roughly).
    let kind = |k: &str| {
        m0.must(
            "sluice_process_resident_memory_by_kind_bytes",
            &[("kind", k)],
        )
    };
    let (anon, file, shmem) = (kind("anon"), kind("file"), kind("shmem"));
    assert!(anon > 0.0 && file > 0.0 && shmem >= 0.0, "{}", m0.0);
    let parts = anon + file + shmem;
    assert!(
        (parts - rss).abs() < rss * 0.1,
        "anon {anon} + file {file} + shmem {shmem} = {parts}, total {rss}"
    );
    assert!(m0.must("sluice_process_open_fds", &[]) > 3.0);
    assert!(m0.must("sluice_process_threads", &[]) >= 1.0);
    assert!(m0.must("sluice_process_cpu_seconds_total", &[]) >= 0.0);
    let get2xx = [("method", "GET"), ("status", "2xx")];
    let post2xx = [("method", "POST"), ("status", "2xx")];
    let val = |m: &admin::Prom, n: &str, l: &[(&str, &str)]| m.get(n, l).unwrap_or(0.0);

    // 8 GETs and one 5000-byte POST on one keep-alive connection.
    let mut c = Client::connect(proxy.addr).await.unwrap();
    for _ in 0..7 {
        assert_eq!(c.get(http, "/small").await.unwrap().body.len(), 100);
    }
    assert_eq!(
        c.get(http, "/bytes/200000").await.unwrap().body.len(),
        200_000
    );
    let body = vec![b'p'; 5000];
    c.send(
        format!("POST http://{http}/echo HTTP/1.1\r\nHost: {http}\r\nContent-Length: 5000\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    c.send(&body).await.unwrap();
    assert_eq!(c.read_response().await.unwrap().body, body);
    let sent_up = 5000.0;
    let sent_down = 7.0 * 100.0 + 200_000.0 + 5000.0;

    // Counters settle when the last body frame is accounted.
    let deadline = Instant::now() + Duration::from_secs(3);
    let m1 = loop {
        let m = admin::metrics(adm).await;
        let done = val(&m, "sluice_requests_total", &get2xx)
            - val(&m0, "sluice_requests_total", &get2xx)
            >= 8.0
            && m.must("sluice_bytes_total", &[("direction", "down")])
                - m0.must("sluice_bytes_total", &[("direction", "down")])
                >= sent_down;
        if done || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(m1.has_type("sluice_requests", "counter"), "{}", m1.0);
    assert_eq!(
        val(&m1, "sluice_requests_total", &get2xx) - val(&m0, "sluice_requests_total", &get2xx),
        8.0,
        "requests_total{{GET,2xx}} grows by exactly the requests made"
    );
    assert_eq!(
        val(&m1, "sluice_requests_total", &post2xx) - val(&m0, "sluice_requests_total", &post2xx),
        1.0
    );
    let up = m1.must("sluice_bytes_total", &[("direction", "up")])
        - m0.must("sluice_bytes_total", &[("direction", "up")]);
    let down = m1.must("sluice_bytes_total", &[("direction", "down")])
        - m0.must("sluice_bytes_total", &[("direction", "down")]);
    assert!(
        up >= sent_up && up <= sent_up + 64.0 * 1024.0,
        "bytes up grew by {up}, {sent_up} sent"
    );
    assert!(
        down >= sent_down && down <= sent_down + 64.0 * 1024.0,
        "bytes down grew by {down}, {sent_down} sent (no double counting)"
    );
    let grew = |n: &str, l: &[(&str, &str)]| m1.must(n, l) - m0.must(n, l);
    assert!(grew("sluice_request_duration_seconds_count", &[]) >= 9.0);
    assert_eq!(grew("sluice_time_to_first_byte_seconds_count", &[]), 9.0);
    assert!(grew("sluice_upstream_connect_seconds_count", &[]) >= 1.0);
    assert!(m1.must("sluice_request_duration_seconds_sum", &[]) > 0.0);
    assert!(
        grew("sluice_request_duration_seconds_bucket", &[("le", "+Inf")]) >= 9.0,
        "histogram buckets fill"
    );
    assert!(grew("sluice_connections_accepted_total", &[("kind", "http")]) >= 1.0);
    assert!(grew("sluice_connections_accepted_total", &[("kind", "upstream")]) >= 1.0);
    assert_eq!(
        m1.must(
            "sluice_connections_open",
            &[("kind", "http"), ("state", "all")]
        ),
        1.0
    );
    assert!(
        m1.must("sluice_client_bytes", &[("client", "127.0.0.1")]) >= sent_up + sent_down,
        "{}",
        m1.0
    );
    assert!(m1.must("sluice_client_connections_open", &[("client", "127.0.0.1")]) >= 1.0);

    // A tunnel that goes idle for longer than the 1 s idle timeout.
    let idle_before = m1.must(
        "sluice_connections_closed_total",
        &[("reason", "idle_timeout")],
    );
    let mut t = client::connect_tunnel(proxy.addr, echo).await.unwrap();
    echo_exactly(&mut t, b"abc").await;
    let m2 = admin::metrics(adm).await;
    assert_eq!(
        m2.must(
            "sluice_connections_open",
            &[("kind", "tunnel"), ("state", "all")]
        ),
        1.0
    );
    assert!(
        eventually(Duration::from_secs(4), || proxy.registry.live(Kind::Tunnel)
            == 0)
        .await,
        "idle tunnel closed"
    );
    let m3 = admin::metrics(adm).await;
    assert_eq!(
        m3.must(
            "sluice_connections_closed_total",
            &[("reason", "idle_timeout")]
        ) - idle_before,
        1.0,
        "closed_total{{idle_timeout}} counts the idle tunnel once"
    );
    assert_eq!(
        m3.must(
            "sluice_connections_open",
            &[("kind", "tunnel"), ("state", "all")]
        ),
        0.0
    );
    let up3 = m3.must("sluice_bytes_total", &[("direction", "up")])
        - m1.must("sluice_bytes_total", &[("direction", "up")]);
    assert_eq!(up3, 3.0, "the closed tunnel's bytes stay in the total");
}

// 7. History -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_has_process_samples_and_request_rate_under_load() {
    let http = origin::http().await;
    let (proxy, adm) = proxy_with_admin(|_| {}).await;
    // A paced load loop, bounded by time: 2.5 s, one request every ~2 ms.
    let started = Instant::now();
    let mut c = Client::connect(proxy.addr).await.unwrap();
    let mut done = 0u64;
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(c.get(http, "/small").await.unwrap().status, 200);
        done += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let v = admin::get_json(adm, "/api/stats/history").await;
    let samples = v.as_array().expect("an array of samples");
    assert!(samples.len() >= 2, "{v}");
    let mut prev_t = 0;
    for smp in samples {
        assert!(u(smp, "rss_bytes") > 0, "{smp}");
        assert!(u(smp, "rss_anon_bytes") > 0, "{smp}");
        assert!(u(smp, "rss_file_bytes") > 0, "{smp}");
        assert!(
            u(smp, "rss_anon_bytes") + u(smp, "rss_file_bytes") <= u(smp, "rss_bytes") * 11 / 10,
            "the parts fit in the total: {smp}"
        );
        assert!(u(smp, "open_fds") > 0, "{smp}");
        assert!(u(smp, "threads") > 0, "{smp}");
        for key in [
            "cpu_percent",
            "bytes_up_per_s",
            "bytes_down_per_s",
            "requests_per_s",
        ] {
            assert!(smp[key].is_f64() || smp[key].is_u64(), "{key}: {smp}");
        }
        for key in ["http", "tunnel", "relay", "upstream"] {
            assert!(smp[key].is_u64(), "{key}: {smp}");
        }
        let t = u(smp, "t");
        if prev_t > 0 {
            let gap = t - prev_t;
            assert!((500..=2500).contains(&gap), "samples ~1 s apart: {gap} ms");
        }
        prev_t = t;
    }
    let rates: Vec<f64> = samples
        .iter()
        .map(|s| s["requests_per_s"].as_f64().unwrap())
        .collect();
    assert!(
        rates.iter().any(|r| *r > 0.0),
        "a sample taken during the load shows requests/s: {rates:?}"
    );
    let counted: f64 = rates.iter().sum();
    assert!(
        counted <= done as f64 * 1.5 + 10.0,
        "rates add up to no more than the requests made ({done}): {rates:?}"
    );
    assert!(
        samples.iter().any(|s| u(s, "http") >= 1),
        "the keep-alive connection shows in a sample"
    );
    let last = admin::get_json(adm, "/api/stats/history?last=1").await;
    assert_eq!(last.as_array().unwrap().len(), 1, "{last}");
}

// 11. Self-SSRF guard ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_sluices_own_listeners_are_refused_with_508() {
    let (proxy, adm) = proxy_with_admin(|_| {}).await;
    let ap = adm.port();
    let pp = proxy.addr.port();
    let targets = [
        format!("127.0.0.1:{ap}"),
        format!("localhost:{ap}"),
        format!("[::1]:{ap}"),
        format!("0.0.0.0:{ap}"),
        // Other spellings of the loopback address: they resolve to the
        // admin listener too.
        format!("127.1:{ap}"),
        format!("2130706433:{ap}"),
        format!("[::ffff:127.0.0.1]:{ap}"),
        // The proxy port itself.
        format!("127.0.0.1:{pp}"),
    ];
    let admin_before = proxy.registry.accepted(Kind::Admin);
    for t in &targets {
        let r = client::exchange(
            proxy.addr,
            format!("GET http://{t}/api/health HTTP/1.1\r\nHost: {t}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 508, "GET via {t}: {}", r.text());
        let resp = client::exchange(
            proxy.addr,
            format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 508, "CONNECT {t}: {}", resp.text());
    }
    assert_eq!(
        proxy.registry.accepted(Kind::Admin),
        admin_before,
        "no connection reached the admin server through the proxy"
    );
}

// Issue 11, finding 4: admin clients cannot starve the admin server ------

/// `GET /api/health` on a fresh connection, answered within `within`.
async fn health_within(adm: SocketAddr, within: Duration) -> Result<u16, String> {
    let t0 = Instant::now();
    match tokio::time::timeout(within, admin::request(adm, "GET", "/api/health", None)).await {
        Ok(Ok(r)) => Ok(r.status),
        Ok(Err(e)) => Err(format!("failed after {:?}: {e}", t0.elapsed())),
        Err(_) => Err(format!("no answer within {within:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_one_client_holds_hundreds_of_idle_admin_connections() {
    let (_p, adm) = proxy_with_admin(|_| {}).await;
    // More idle connections than the old fixed limit (256), all from
    // 127.0.0.1, none sending a byte.
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(TcpStream::connect(adm).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for round in 0..5 {
        let got = health_within(adm, Duration::from_secs(2)).await;
        assert_eq!(got, Ok(200), "round {round}: /api/health while 400 idle");
    }
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_feed_readers_are_capped_with_a_clear_503() {
    use tokio::io::AsyncBufReadExt;
    let (_p, adm) = proxy_with_admin(|_| {}).await;
    let cap = sluice::admin::limits::LIVE_READERS_PER_CLIENT;
    let open = || async move {
        let mut s = TcpStream::connect(adm).await.unwrap();
        let feed = Request::get("/api/records/live").header("Host", "127.0.0.1");
        s.write_all(&admin::with_token(adm, feed).to_bytes())
            .await
            .unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line))
            .await
            .expect("a status line in 5 s")
            .unwrap();
        (line, r)
    };
    let mut feeds = Vec::new();
    for i in 0..cap {
        let (line, r) = open().await;
        assert!(line.starts_with("HTTP/1.1 200"), "reader {i}: {line}");
        feeds.push(r);
    }
    let (line, mut r) = open().await;
    assert!(
        line.starts_with("HTTP/1.1 503"),
        "reader past the cap: {line}"
    );
    let mut rest = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), r.read(&mut rest))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&rest[..n]).to_string();
    assert!(text.contains("too many live-feed readers"), "{text}");
    assert_eq!(health_within(adm, Duration::from_secs(2)).await, Ok(200));
    // A reader that leaves frees its seat.
    drop(feeds.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (line, _r) = open().await;
    assert!(line.starts_with("HTTP/1.1 200"), "after one left: {line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_cut_and_heavy_work_is_bounded() {
    let origin = origin::http().await;
    let (p, adm) = proxy_with_admin(|c| c.record.body_limit = 32 * 1024 * 1024).await;
    let size = 24 * 1024 * 1024;
    let r = client::get_once(p.addr, origin, &format!("/bytes/{size}"))
        .await
        .unwrap();
    assert_eq!(r.body.len(), size);
    let id = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = admin::get_json(adm, "/api/records?url=bytes").await;
            if let Some(id) = v["records"][0]["id"].as_u64() {
                break id;
            }
            assert!(Instant::now() < deadline, "recorded in 5 s: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // Readers that ask for the 24 MB body and never read it: as many as
    // heavy requests may run at once.
    let permits = sluice::admin::limits::heavy_permits();
    let mut stalled = Vec::new();
    for _ in 0..permits {
        let mut s = TcpStream::connect(adm).await.unwrap();
        let body =
            Request::get(format!("/api/records/{id}/body/response")).header("Host", "127.0.0.1");
        s.write_all(&admin::with_token(adm, body).to_bytes())
            .await
            .unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One more heavy request waits briefly, then is told to retry.
    let t0 = Instant::now();
    let busy = admin::get(adm, &format!("/api/records/{id}")).await;
    assert_eq!(busy.status, 503, "{}", busy.text());
    assert!(busy.header("retry-after").is_some());
    assert!(busy.text().contains("busy"), "{}", busy.text());
    assert!(t0.elapsed() < Duration::from_secs(6), "{:?}", t0.elapsed());
    // Light routes stay quick meanwhile.
    assert_eq!(health_within(adm, Duration::from_secs(1)).await, Ok(200));
    // The stalled readers are cut at the write deadline (10 s): after it,
    // each stream holds only what was in flight, then ends (EOF or reset).
    tokio::time::sleep(Duration::from_secs(12)).await;
    let cut = tokio::time::timeout(Duration::from_secs(10), async {
        for s in &mut stalled {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0usize;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            assert!(total < size, "a stalled reader got the whole body");
        }
    })
    .await;
    assert!(cut.is_ok(), "stalled admin readers were never cut");
    // Their permits came back: the detail answers again.
    let d = admin::get_json(adm, &format!("/api/records/{id}")).await;
    assert_eq!(
        d["response"]["body"]["inline_truncated"], true,
        "{}",
        d["response"]["body"]["size"]
    );
}
