//! Live rules: the rule file reloaded on change and on SIGHUP, replaced
//! and dry-run through the admin API, and applied to CONNECT tunnels.
//! Real sockets throughout; SIGHUP goes to the real binary.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::admin::{self, get_json, request};
use crate::support::client::{self, Client, Response};
use crate::support::{origin, proxy};

/// `PUT /api/rules` with `body`.
async fn put_rules(admin: SocketAddr, body: &str) -> Response {
    let req = admin::with_token(admin, admin::req("PUT", "/api/rules")).body(body);
    admin::call(admin, req, Duration::from_secs(10))
        .await
        .unwrap()
}

/// Sends `CONNECT target` as the connection's first request and reads
/// the answer head (and body, if any).
async fn connect_answer(proxy: SocketAddr, target: &str) -> std::io::Result<Response> {
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    tokio::time::timeout(
        Duration::from_secs(10),
        client::exchange(proxy, req.as_bytes()),
    )
    .await
    .map_err(|_| std::io::Error::other("no answer in 10 s"))?
}

async fn generation(admin: SocketAddr) -> u64 {
    get_json(admin, "/api/rules").await["generation"]
        .as_u64()
        .unwrap()
}

async fn wait_generation(admin: SocketAddr, want: u64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if generation(admin).await >= want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

async fn tunnel_echoes(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(got, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_file_reloads_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.txt");
    write(&path, "# nothing yet\n");
    let origin = origin::http().await;
    let echo = origin::echo().await;
    let p = proxy::start(|c| {
        c.rules.rules_file = Some(path.clone());
        c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let admin = p.admin_addr.unwrap();
    assert_eq!(generation(admin).await, 1);

    // Connections opened before the reload.
    let mut keep = Client::connect(p.addr).await.unwrap();
    assert_eq!(keep.get(origin, "/small").await.unwrap().status, 200);
    let mut tunnel = client::connect_tunnel(p.addr, echo).await.unwrap();
    tunnel_echoes(&mut tunnel, b"before").await;
    let r = connect_answer(p.addr, "blocked.test:443").await.unwrap();
    assert_ne!(r.status, 403);

    write(&path, "blocked.test block://403\n# a second line\n");
    assert!(
        wait_generation(admin, 2, Duration::from_secs(3)).await,
        "the edit was not picked up"
    );
    let r = connect_answer(p.addr, "blocked.test:443").await.unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("L1"), "{}", r.text());

    // Nothing was dropped.
    assert_eq!(keep.get(origin, "/small").await.unwrap().status, 200);
    tunnel_echoes(&mut tunnel, b"after").await;

    // A bad edit keeps the old rules and generation.
    write(&path, "blocked.test block://403\nbad.test nope://1\n");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let v = get_json(admin, "/api/rules").await;
    assert_eq!(v["generation"], 2, "{v}");
    assert!(v["text"].as_str().unwrap().contains("# a second line"));
    let r = connect_answer(p.addr, "blocked.test:443").await.unwrap();
    assert_eq!(r.status, 403);
    let m = admin::metrics(admin).await;
    assert!(m.must("sluice_rules_reloads_total", &[("outcome", "failed")]) >= 1.0);
    assert!(m.must("sluice_rules_reloads_total", &[("outcome", "ok")]) >= 1.0);
    assert_eq!(m.must("sluice_rules_generation", &[]), 2.0);
    p.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_puts_validates_and_writes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.txt");
    write(&path, "one.test block://403\n");
    let p = proxy::start(|c| {
        c.rules.rules_file = Some(path.clone());
        c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let admin = p.admin_addr.unwrap();

    let r = put_rules(admin, "two.test block://451\n\nthree.test status://999\n").await;
    assert_eq!(r.status, 400, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["errors"][0]["line"], 3, "{v}");
    assert_eq!(v["errors"][0]["column"], 21, "{v}");
    assert!(v["error"].as_str().is_some());
    assert_eq!(generation(admin).await, 1);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "one.test block://403\n"
    );

    let text = "two.test block://451\n";
    let r = put_rules(admin, text).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["generation"], 2);
    assert_eq!(v["rules"], 1);
    assert_eq!(v["text"], text);
    assert_eq!(v["path"], path.display().to_string());
    assert!(v["loaded_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    assert_eq!(
        connect_answer(p.addr, "two.test:443").await.unwrap().status,
        451
    );
    assert_ne!(
        connect_answer(p.addr, "one.test:443").await.unwrap().status,
        403
    );
    // The watcher sees sluice's own write and does not reload it again.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(generation(admin).await, 2);

    // The dry run.
    let v = get_json(admin, "/api/rules/test?url=two.test:443&method=CONNECT").await;
    assert_eq!(v["matched"][0], "L1", "{v}");
    assert_eq!(v["answer"]["kind"], "block", "{v}");
    assert_eq!(v["answer"]["status"], 451, "{v}");
    assert_eq!(v["applied"][0]["action"], "block://451", "{v}");
    let v = get_json(admin, "/api/rules/test?url=http://other.test/x").await;
    assert_eq!(v["matched"].as_array().unwrap().len(), 0, "{v}");
    assert!(v["answer"].is_null());
    let r = request(admin, "GET", "/api/rules/test?url=ftp://x/", None)
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    p.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rules_block_map_and_delay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.txt");
    let echo = origin::echo().await;
    let origin = origin::http().await;
    write(
        &path,
        &format!(
            "blocked.test block://403\n\
             closed.test block://close\n\
             mapped.test 127.0.0.1:{port}\n\
             slow.test:7 127.0.0.1:{port} delay://400ms\n",
            port = echo.port()
        ),
    );
    let p = proxy::start(|c| {
        c.rules.rules_file = Some(path.clone());
    })
    .await;

    // First-request path.
    let r = connect_answer(p.addr, "blocked.test:443").await.unwrap();
    assert_eq!(r.status, 403);
    assert!(r.text().contains("blocked by rule L1"), "{}", r.text());
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"CONNECT closed.test:443 HTTP/1.1\r\nHost: closed.test:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "answered: {}", String::from_utf8_lossy(&buf[..n]));

    let mut t = connect_answer_stream(p.addr, "mapped.test:443").await;
    tunnel_echoes(&mut t, b"mapped").await;
    let started = Instant::now();
    let mut t = connect_answer_stream(p.addr, "slow.test:7").await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    tunnel_echoes(&mut t, b"slow").await;

    // hyper path: CONNECT after a request on the same connection.
    let mut c = Client::connect(p.addr).await.unwrap();
    assert_eq!(c.get(origin, "/small").await.unwrap().status, 200);
    c.send(b"CONNECT blocked.test:443 HTTP/1.1\r\nHost: blocked.test:443\r\n\r\n")
        .await
        .unwrap();
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 403);
    let mut c = Client::connect(p.addr).await.unwrap();
    assert_eq!(c.get(origin, "/small").await.unwrap().status, 200);
    c.send(b"CONNECT closed.test:443 HTTP/1.1\r\nHost: closed.test:443\r\n\r\n")
        .await
        .unwrap();
    assert!(c.wait_closed(Duration::from_secs(5)).await.is_some());
    p.shutdown(Duration::from_secs(1)).await;
}

/// CONNECT through the first-request path; the stream after the 200.
async fn connect_answer_stream(proxy: SocketAddr, target: &str) -> TcpStream {
    let answer = client::connect(proxy, target, "").await;
    assert!(answer.is_ok(), "closed before the answer: {answer:?}");
    let (_, head, s) = answer.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.txt");
    write(&path, "blocked.test block://403\n");
    let p = proxy::spawn(&["--rules", path.to_str().unwrap()]).await;
    let admin = p.admin.unwrap();
    assert_eq!(generation(admin).await, 1);
    // The file did not change: only the signal can reload it.
    p.signal(libc::SIGHUP);
    assert!(
        wait_generation(admin, 2, Duration::from_secs(3)).await,
        "SIGHUP did not reload: {}",
        p.log_text()
    );
    assert!(p.log_text().contains("SIGHUP"), "{}", p.log_text());
    // Still serving (SIGHUP does not stop it).
    assert_eq!(
        connect_answer(p.addr, "blocked.test:443")
            .await
            .unwrap()
            .status,
        403
    );
}

/// Echoes `len` bytes through a tunnel (writing and reading at once) and
/// returns how long the round trip took.
async fn echo_through(t: TcpStream, len: usize) -> Duration {
    let started = Instant::now();
    let (mut r, mut w) = t.into_split();
    let sent: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let expect = sent.clone();
    let writer = tokio::spawn(async move { w.write_all(&sent).await.map(|_| w) });
    let mut got = vec![0u8; len];
    tokio::time::timeout(Duration::from_secs(20), r.read_exact(&mut got))
        .await
        .expect("echo in time")
        .unwrap_or_else(|e| panic!("echo of {len} bytes: {e}"));
    assert!(got == expect, "the echo came back intact");
    drop(writer.await.unwrap().unwrap());
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_throttles_each_direction_and_records_name_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.txt");
    let echo = origin::echo().await;
    write(
        &path,
        &format!(
            "up.test 127.0.0.1:{port} reqThrottle://100KB/s\n\
             down.test 127.0.0.1:{port} throttle://100KB/s\n\
             blocked.test block://403\n",
            port = echo.port()
        ),
    );
    let p = proxy::start(|c| {
        c.rules.rules_file = Some(path.clone());
        c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        c.record = sluice::config::Recording {
            data_dir: sluice::config::DataDir::Memory,
            ..Default::default()
        };
    })
    .await;
    let admin = p.admin_addr.unwrap();

    // 100 KB each way at 100 KB/s in one direction: about a second, on
    // the first-request path and on hyper's.
    for target in ["up.test:9", "down.test:9"] {
        let t = connect_answer_stream(p.addr, target).await;
        let took = echo_through(t, 100_000).await;
        assert!(took >= Duration::from_millis(900), "{target}: {took:?}");
        assert!(took <= Duration::from_secs(10), "{target}: {took:?}");
    }
    let mut c = Client::connect(p.addr).await.unwrap();
    let origin = origin::http().await;
    assert_eq!(c.get(origin, "/small").await.unwrap().status, 200);
    c.send(b"CONNECT down.test:9 HTTP/1.1\r\nHost: down.test:9\r\n\r\n")
        .await
        .unwrap();
    // The head only: a CONNECT's 200 has no body.
    let head = client::read_head(&mut c.r).await.unwrap();
    assert_eq!(head.status, 200);
    let stream = c.r.into_inner();
    let took = echo_through(stream, 50_000).await;
    assert!(took >= Duration::from_millis(400), "hyper path: {took:?}");

    assert_eq!(
        connect_answer(p.addr, "blocked.test:443")
            .await
            .unwrap()
            .status,
        403
    );

    // Every tunnel's record names its rule and the action.
    let deadline = Instant::now() + Duration::from_secs(10);
    let want = [
        ("up.test:9", "L1", "reqThrottle://100KB/s"),
        ("down.test:9", "L2", "throttle://100KB/s"),
        ("blocked.test:443", "L3", "block://403"),
    ];
    loop {
        let page = get_json(admin, "/api/records?kind=tunnel&limit=50").await;
        let rows = page["records"].as_array().cloned().unwrap_or_default();
        let found = want.iter().all(|(url, rule, action)| {
            rows.iter().any(|r| {
                r["url"] == *url
                    && r["rules"].as_array().is_some_and(|rules| {
                        rules
                            .iter()
                            .any(|x| x["rule"] == *rule && x["action"] == *action)
                    })
            })
        });
        if found {
            break;
        }
        assert!(Instant::now() < deadline, "records lack rules: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.shutdown(Duration::from_secs(1)).await;
}

/// `method path` to the admin server with `headers` and `body`; `None`
/// when there was no answer within `within`.
async fn admin_send(
    admin: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    within: Duration,
) -> Option<Response> {
    // The server's generated token, as every admin client has it.
    let req = admin::with_token(admin, admin::req(method, path).headers(headers)).body(body);
    admin::call(admin, req, within).await.ok()
}

/// The first error row of a rules answer: (line, column, message).
fn first_error(r: &Response) -> (u64, u64, String) {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let e = &v["errors"][0];
    (
        e["line"].as_u64().unwrap_or(0),
        e["column"].as_u64().unwrap_or(0),
        e["message"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_files_are_confined_to_the_mock_folder() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.txt");
    write(&rules, "one.test block://403\n");
    write(&dir.path().join("fixture.json"), "[1,2,3]");
    write(&outside.path().join("secret"), "not for you");
    std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).unwrap();
    let fifo = std::ffi::CString::new(dir.path().join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let p = proxy::spawn(&["--rules", rules.to_str().unwrap()]).await;
    let admin = p.admin.unwrap();
    let within = Duration::from_secs(5);

    let ok = admin_send(
        admin,
        "PUT",
        "/api/rules",
        &[],
        "a.test mock://200 bodyFile://fixture.json\n",
        within,
    )
    .await
    .expect("answered");
    assert_eq!(ok.status, 200, "{}", ok.text());

    // A FIFO used to block the PUT (and the rules lock) for ever.
    for (path, says) in [
        ("fifo", "not a regular file"),
        ("link", "symlink"),
        ("out/secret", "symlink"),
        ("../secret", "`..`"),
        ("/etc/hostname", "relative"),
    ] {
        let text = format!("# x\nb.test mock://200 bodyFile://{path}\n");
        let r = admin_send(admin, "PUT", "/api/rules", &[], &text, within)
            .await
            .unwrap_or_else(|| panic!("PUT with bodyFile://{path} not answered in 5 s"));
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let (line, col, message) = first_error(&r);
        // At the action (read errors) or into its value (path errors).
        assert!(
            line == 2 && (col == 19 || col == 30),
            "{path}: {line}:{col} {message}"
        );
        assert!(message.contains(says), "{path}: {message}");
    }
    // The rules lock was not left held: a good PUT still goes through.
    let ok = admin_send(
        admin,
        "PUT",
        "/api/rules",
        &[],
        "c.test block://451\n",
        within,
    )
    .await
    .expect("answered after the refusals");
    assert_eq!(ok.status, 200, "{}", ok.text());
    drop(p);

    // Rules that only come through the API have no folder unless one is
    // given; with --mock-dir the file is read from there.
    let p = proxy::spawn(&[]).await;
    let r = admin_send(
        p.admin.unwrap(),
        "PUT",
        "/api/rules",
        &[],
        "a.test mock://200 bodyFile://fixture.json\n",
        within,
    )
    .await
    .expect("answered");
    assert_eq!(r.status, 400, "{}", r.text());
    let (line, col, message) = first_error(&r);
    assert_eq!((line, col), (1, 19), "{message}");
    assert!(message.contains("--mock-dir"), "{message}");
    drop(p);
    let p = proxy::spawn(&["--mock-dir", dir.path().to_str().unwrap()]).await;
    let r = admin_send(
        p.admin.unwrap(),
        "PUT",
        "/api/rules",
        &[],
        "a.test mock://200 bodyFile://fixture.json\n",
        within,
    )
    .await
    .expect("answered");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut c = Client::connect(p.addr).await.unwrap();
    c.send(b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let resp = c.read_response().await.unwrap();
    assert_eq!(resp.body, b"[1,2,3]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regex_compile_size_is_bounded() {
    // Unicode \w repeated: a few bytes of text, megabytes compiled each.
    let heavy: String = (0..40)
        .map(|i| format!("/^http://h{i}\\.test/\\w{{50}}/ status://200\n"))
        .collect();
    // ASCII-only classes fit one by one, and run out the file's total.
    let many: String = (0..3000)
        .map(|i| format!("/^http://m{i}\\.test/(?-u:\\w){{40}}x/ status://200\n"))
        .collect();
    let ui = [("x-sluice-ui", "1")];
    let within = Duration::from_secs(30);
    // Each compile in a fresh process: the bound is per compile, over
    // idle. Two compiles in one process land on tokio's blocking threads,
    // one or two of them as it happens, and each thread keeps its own
    // allocator heap: the second compile then adds its whole size to the
    // first's retained one (seen: 41-51 MiB for one, 55-76 MiB for two).
    for (what, text) in [("heavy", &heavy), ("many", &many)] {
        for method_path in [("POST", "/api/rules/validate"), ("PUT", "/api/rules")] {
            let p = proxy::spawn(&[]).await;
            let admin = p.admin.unwrap();
            let warm = admin_send(
                admin,
                "POST",
                "/api/rules/validate",
                &ui,
                "/a\\.test/ status://200\n",
                within,
            )
            .await
            .expect("answered");
            assert_eq!(warm.status, 200, "{}", warm.text());
            let before = p.peak_rss_kib();
            let r = admin_send(admin, method_path.0, method_path.1, &ui, text, within)
                .await
                .unwrap_or_else(|| panic!("{what} {method_path:?}: no answer in 30 s"));
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            assert!(
                v["valid"] == false || r.status == 400,
                "{what} {method_path:?}: {} {v}",
                r.status
            );
            let (line, col, message) = first_error(&r);
            assert!(line >= 1 && col == 2, "{what}: {line}:{col} {message}");
            assert!(
                message.contains("too large") || message.contains("budget"),
                "{what}: {message}"
            );
            let grown_mib = p.peak_rss_kib().saturating_sub(before) / 1024;
            assert!(
                grown_mib <= 64,
                "{what} {method_path:?}: peak RSS grew by {grown_mib} MiB compiling regex rules"
            );
            assert_eq!(generation(admin).await, 0, "{what}: nothing was installed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_validate_refuses_cross_site_posts() {
    // Without a token (`--admin-token none`) nothing but this check stands
    // between a cross-origin page and the compiler; with one, a page has
    // neither the token nor a session without the UI header.
    let p = proxy::spawn(&["--admin-token", "none"]).await;
    let admin = p.admin.unwrap();
    let within = Duration::from_secs(10);
    let text = "a.test status://500\n";
    // What a cross-origin page can send without a preflight.
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let headers: Vec<(&str, &str)> = ct.iter().map(|c| ("content-type", *c)).collect();
        let r = admin_send(admin, "POST", "/api/rules/validate", &headers, text, within)
            .await
            .expect("answered");
        assert_eq!(r.status, 415, "{ct:?}: {}", r.text());
    }
    // The UI's header, or a content type a form cannot send, is accepted.
    for headers in [
        vec![("x-sluice-ui", "1")],
        vec![("content-type", "application/json")],
        vec![("content-type", "text/x-sluice-rules")],
    ] {
        let r = admin_send(admin, "POST", "/api/rules/validate", &headers, text, within)
            .await
            .expect("answered");
        assert_eq!(r.status, 200, "{headers:?}: {}", r.text());
    }
}
