//! Who may use sluice. The admin server: off loopback it refuses to start
//! without a bearer token, and with one every request needs it. The proxy
//! with `--auth`: 407 without or with wrong Basic credentials, accounting
//! by user name, credentials never forwarded nor logged. Without `--auth`
//! the user is the client IP.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::admin::{self, s, u};
use crate::support::client::{self, Client};
use crate::support::proxy::{self, SluiceProcess};
use crate::support::{eventually, origin};

const TOKEN: &str = "s3cret-admin-token-0123456789";

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

// 4. Admin bearer token --------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_admin_address_without_a_token_refuses_to_start() {
    let run = proxy::run_cli(
        &["--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"],
        Duration::from_secs(10),
    )
    .await;
    assert!(
        matches!(run.code, Some(c) if c != 0),
        "exit {:?}: {}",
        run.code,
        run.stderr
    );
    assert!(
        run.stderr.contains("admin") && run.stderr.contains("token"),
        "the message names the admin address and the missing token: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("sluice listening"), "{}", run.stderr);

    // A token too short to be a secret is refused too.
    let run = proxy::run_cli(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "0.0.0.0:0",
            "--admin-token",
            "short",
        ],
        Duration::from_secs(10),
    )
    .await;
    assert!(matches!(run.code, Some(c) if c != 0), "exit {:?}", run.code);
    assert!(
        run.stderr.contains("admin_token") && run.stderr.contains("16"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("short"),
        "the token is not echoed: {}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_admin_address_demands_the_bearer_token() {
    let p = proxy::spawn(&["--admin", "0.0.0.0:0", "--admin-token", TOKEN]).await;
    let bound = p.admin.expect("admin address in the listening line");
    assert!(bound.ip().is_unspecified(), "{bound}");
    let adm = SocketAddr::from(([127, 0, 0, 1], bound.port()));
    let wrong = "s3cret-admin-token-0123456780";
    let prefix = &TOKEN[..TOKEN.len() - 1];
    for path in [
        "/api/health",
        "/metrics",
        "/api/connections",
        "/api/sockets",
        "/api/users",
        "/api/stats/history",
    ] {
        let none = admin::request(adm, "GET", path, None).await.unwrap();
        assert_eq!(none.status, 401, "{path} without a token: {}", none.text());
        assert!(
            none.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{path}: {:?}",
            none.headers
        );
        for bad in [wrong, prefix, ""] {
            let r = admin::request(adm, "GET", path, Some(bad)).await.unwrap();
            assert_eq!(r.status, 401, "{path} with token {bad:?}: {}", r.text());
        }
        let ok = admin::request(adm, "GET", path, Some(TOKEN)).await.unwrap();
        assert_eq!(ok.status, 200, "{path} with the token: {}", ok.text());
    }
    let h: Value = serde_json::from_slice(
        &admin::request(adm, "GET", "/api/health", Some(TOKEN))
            .await
            .unwrap()
            .body,
    )
    .unwrap();
    assert_eq!(h["status"], "ok");
    // The check runs before routing: no route or id leaks without it.
    for (method, path) in [("DELETE", "/api/connections/1"), ("GET", "/no/such/route")] {
        let r = admin::request(adm, method, path, None).await.unwrap();
        assert_eq!(r.status, 401, "{method} {path}");
    }

    // The CLI commands carry the token.
    let adm_s = adm.to_string();
    let run = proxy::run_cli(
        &["doctor", "--admin", &adm_s, "--admin-token", TOKEN],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let run = proxy::run_cli(&["doctor", "--admin", &adm_s], Duration::from_secs(15)).await;
    assert_eq!(run.code, Some(2), "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    assert!(
        !p.log_text().contains(TOKEN),
        "the token is never logged:\n{}",
        p.log_text()
    );
}

// 5. Proxy users ---------------------------------------------------------

/// Sends a CONNECT (with `auth` as Proxy-Authorization, if any) and returns
/// the answer's status and the stream.
async fn connect_with(
    proxy: SocketAddr,
    target: SocketAddr,
    auth: Option<&str>,
) -> (u16, TcpStream, String) {
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        client::connect(proxy, target, &auth),
    )
    .await
    .expect("CONNECT answered in time");
    assert!(answer.is_ok(), "closed before answering: {answer:?}");
    let (status, head, s) = answer.unwrap();
    (status, s, head)
}

fn get_with(origin: SocketAddr, path: &str, auth: Option<&str>) -> String {
    let auth = auth
        .map(|a| format!("Proxy-Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!("GET http://{origin}{path} HTTP/1.1\r\nHost: {origin}\r\n{auth}\r\n")
}

async fn users(adm: SocketAddr) -> Vec<Value> {
    admin::get_json(adm, "/api/users")
        .await
        .as_array()
        .expect("an array of users")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_auth_demands_basic_credentials_and_accounts_by_user() {
    let http = origin::http().await;
    let echo = origin::echo().await;
    let password = "correct horse battery";
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "# proxy users\nalice:{}\nbob:{}",
        bcrypt::hash(password, 4).unwrap(),
        bcrypt::hash("another one", 4).unwrap()
    )
    .unwrap();
    let path = f.path().to_str().unwrap().to_string();
    let p = proxy::spawn(&["--auth", &path, "--log-level", "debug"]).await;
    let adm = p.admin.unwrap();
    let good = basic("alice", password);
    let wrong = basic("alice", "correct horse battery!");
    let nobody = basic("mallory", password);

    // Forward requests: none, wrong, unknown user -> 407; right -> 200.
    for (auth, what) in [
        (None, "no credentials"),
        (Some(wrong.as_str()), "wrong password"),
        (Some(nobody.as_str()), "unknown user"),
        (Some("Bearer abc"), "another scheme"),
    ] {
        let r = client::exchange(p.addr, get_with(http, "/small", auth).as_bytes())
            .await
            .unwrap();
        assert_eq!(r.status, 407, "{what}: {}", r.text());
        assert!(
            r.header("proxy-authenticate")
                .is_some_and(|v| v.starts_with("Basic")),
            "{what}: {:?}",
            r.headers
        );
    }
    let mut ka = Client::connect(p.addr).await.unwrap();
    for _ in 0..2 {
        ka.send(get_with(http, "/small", Some(&good)).as_bytes())
            .await
            .unwrap();
        let r = ka.read_response().await.unwrap();
        assert_eq!((r.status, r.body.len()), (200, 100), "{}", r.text());
    }
    ka.send(get_with(http, "/headers", Some(&good)).as_bytes())
        .await
        .unwrap();
    let seen = ka.read_response().await.unwrap();
    assert_eq!(seen.status, 200);
    let seen_text = seen.text().to_ascii_lowercase();
    assert!(seen_text.contains("host:"), "{seen_text}");
    assert!(
        !seen_text.contains("proxy-authorization") && !seen_text.contains("basic"),
        "the origin never sees the proxy credentials: {seen_text}"
    );

    // CONNECT: the same rules.
    for (auth, what) in [
        (None, "no credentials"),
        (Some(wrong.as_str()), "wrong password"),
    ] {
        let (status, _s, head) = connect_with(p.addr, echo, auth).await;
        assert_eq!(status, 407, "CONNECT with {what}: {head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("proxy-authenticate: basic"),
            "{head}"
        );
    }
    let (status, mut tunnel, head) = connect_with(p.addr, echo, Some(&good)).await;
    assert_eq!(status, 200, "{head}");
    let data = vec![b't'; 500];
    tunnel.write_all(&data).await.unwrap();
    let mut back = vec![0u8; 500];
    tokio::time::timeout(Duration::from_secs(3), tunnel.read_exact(&mut back))
        .await
        .expect("echo through the authenticated tunnel")
        .unwrap();
    assert_eq!(back, data);

    // Accounting by user name: 4 requests (2 x /small, /headers, CONNECT),
    // 500 bytes up (tunnel), 200 + /headers + 500 bytes down.
    let want_down = 200 + seen.body.len() as u64 + 500;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let (ok, alice) = loop {
        let alice = users(adm)
            .await
            .into_iter()
            .find(|r| r["user"] == "alice")
            .unwrap_or(Value::Null);
        if alice.is_object() && alice["bytes_down"] == want_down && alice["requests"] == 4 {
            break (true, alice);
        }
        if std::time::Instant::now() > deadline {
            break (false, alice);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(ok, "alice's figures: {alice}");
    assert_eq!(u(&alice, "requests"), 4, "{alice}");
    assert_eq!(u(&alice, "bytes_up"), 500, "{alice}");
    assert_eq!(u(&alice, "bytes_down"), want_down, "{alice}");
    assert_eq!(
        u(&alice, "open_connections"),
        2,
        "the keep-alive connection and the tunnel: {alice}"
    );
    assert!(u(&alice, "last_seen_ms") > 0, "{alice}");
    let all = users(adm).await;
    assert!(
        all.iter()
            .all(|r| r["user"] != "mallory" && r["user"] != "127.0.0.1"),
        "refused requests are nobody's traffic: {all:?}"
    );
    assert!(
        !all.iter().any(|r| r["user"] == "bob"),
        "bob never came: {all:?}"
    );
    let rows = admin::connections(adm, "user=alice").await;
    assert!(
        rows.len() == 2 && rows.iter().all(|r| s(r, "user") == "alice"),
        "{rows:?}"
    );
    let m = admin::metrics(adm).await;
    assert!(
        m.must("sluice_client_bytes", &[("client", "alice")]) >= (500 + want_down) as f64,
        "{}",
        m.0
    );

    // Credentials never appear in the log, even at debug level.
    let log = p.log_text();
    for secret in [
        password,
        good.trim_start_matches("Basic "),
        wrong.trim_start_matches("Basic "),
    ] {
        assert!(!log.contains(secret), "log shows {secret:?}:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_the_user_is_the_client_ip() {
    let http = origin::http().await;
    let p = proxy::start(|c| c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let adm = p.admin_addr.unwrap();
    let mut c = Client::from_stream(client::connect_from("127.0.0.3", p.addr).await);
    for _ in 0..2 {
        assert_eq!(c.get(http, "/small").await.unwrap().body.len(), 100);
    }
    // A Proxy-Authorization sent anyway is not forwarded either.
    c.send(get_with(http, "/headers", Some(&basic("x", "y"))).as_bytes())
        .await
        .unwrap();
    let seen = c.read_response().await.unwrap();
    assert!(
        !seen
            .text()
            .to_ascii_lowercase()
            .contains("proxy-authorization"),
        "{}",
        seen.text()
    );
    let want_down = 200 + seen.body.len() as u64;
    assert!(
        eventually(Duration::from_secs(3), || {
            p.users
                .rows(&p.registry.snapshot())
                .iter()
                .any(|r| r.user == "127.0.0.3" && r.bytes_down == want_down)
        })
        .await
    );
    let row = users(adm)
        .await
        .into_iter()
        .find(|r| r["user"] == "127.0.0.3")
        .expect("a row for the client IP");
    assert_eq!(u(&row, "requests"), 3, "{row}");
    assert_eq!(u(&row, "bytes_down"), want_down, "{row}");
    assert_eq!(u(&row, "open_connections"), 1, "{row}");
    drop(c);
    // After the close, the bytes stay with the user.
    assert!(
        eventually(Duration::from_secs(3), || p
            .registry
            .live(sluice::registry::Kind::Http)
            == 0)
        .await
    );
    let row = users(adm)
        .await
        .into_iter()
        .find(|r| r["user"] == "127.0.0.3")
        .unwrap();
    assert_eq!(
        (u(&row, "bytes_down"), u(&row, "open_connections")),
        (want_down, 0),
        "{row}"
    );
}

/// An auth file with alice (`password`) and bob, bcrypt `cost`.
fn auth_file(password: &str, cost: u32) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        "alice:{}\nbob:{}",
        bcrypt::hash(password, cost).unwrap(),
        bcrypt::hash("bob's own", cost).unwrap()
    )
    .unwrap();
    f
}

/// One request on a fresh connection: its status and how long it took.
async fn timed_get(proxy: SocketAddr, origin: SocketAddr, auth: &str) -> (u16, Duration) {
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(15),
        client::exchange(proxy, get_with(origin, "/small", Some(auth)).as_bytes()),
    )
    .await
    .expect("answered in 15 s")
    .unwrap();
    (r.status, started.elapsed())
}

/// One authenticated request on `ka`; how long it took.
async fn keep_alive_get(ka: &mut Client, origin: SocketAddr, auth: &str) -> Duration {
    let started = std::time::Instant::now();
    ka.send(get_with(origin, "/small", Some(auth)).as_bytes())
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(15), ka.read_response())
        .await
        .expect("authenticated request answered in 15 s")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_floods_do_not_stall_authenticated_traffic() {
    let http = origin::http().await;
    let password = "the right one";
    let f = auth_file(password, 12);
    let p = proxy::spawn(&["--auth", f.path().to_str().unwrap()]).await;
    let proxy = p.addr;
    let good = basic("alice", password);
    let mut ka = Client::connect(proxy).await.unwrap();
    // The first request pays bcrypt once.
    keep_alive_get(&mut ka, http, &good).await;

    // Eight clients guessing alice's password, each guess new.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood_deadline = std::time::Instant::now() + Duration::from_secs(20);
    let flooders: Vec<_> = (0..8)
        .map(|i| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && std::time::Instant::now() < flood_deadline
                {
                    n += 1;
                    let guess = basic("alice", &format!("guess {i}-{n}"));
                    let (status, _) = timed_get(proxy, http, &guess).await;
                    statuses.push(status);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut latencies = Vec::new();
    for _ in 0..40 {
        latencies.push(keep_alive_get(&mut ka, http, &good).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut refused = Vec::new();
    for f in flooders {
        refused.extend(f.await.unwrap());
    }
    latencies.sort();
    let p95 = latencies[latencies.len() * 95 / 100 - 1];
    assert!(
        refused.iter().all(|s| *s == 407 || *s == 503),
        "every guess refused: {refused:?}"
    );
    assert!(
        p95 < Duration::from_millis(250),
        "authenticated p95 {p95:?} during the flood (all: {latencies:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_names_take_as_long_as_known_ones() {
    let http = origin::http().await;
    let f = auth_file("secret", 10);
    let p = proxy::spawn(&["--auth", f.path().to_str().unwrap()]).await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..5 {
        let (s1, t1) = timed_get(p.addr, http, &basic("alice", &format!("wrong {i}"))).await;
        let (s2, t2) = timed_get(p.addr, http, &basic(&format!("nobody{i}"), "wrong")).await;
        assert_eq!((s1, s2), (407, 407));
        known.push(t1);
        unknown.push(t2);
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[2], unknown[2]);
    assert!(
        k >= Duration::from_millis(5),
        "a cost-10 verification takes a few ms at least: {known:?}"
    );
    assert!(
        u * 2 >= k && k * 2 >= u,
        "median answer: known name {k:?}, unknown name {u:?} (names must not be enumerable)"
    );
}

// Issue 11, finding 2: locked by default ---------------------------------

/// The token printed in `sluice admin UI: http://.../?token=...`.
fn printed_token(p: &SluiceProcess) -> String {
    p.admin_token
        .clone()
        .unwrap_or_else(|| panic!("no token in the printed address: {}", p.out_text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_flag_the_admin_is_locked_by_a_generated_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let p = proxy::spawn(&["--data-dir", &data]).await;
    let adm = p.admin.unwrap();

    // Any local user, no token: nothing to read, no rules to write.
    for (method, path) in [
        ("GET", "/api/rules"),
        ("PUT", "/api/rules"),
        ("GET", "/api/records"),
        ("GET", "/api/health"),
    ] {
        let r = admin::request_as(adm, method, path, None).await.unwrap();
        assert_eq!(
            r.status,
            401,
            "{method} {path} without the token: {}",
            r.text()
        );
    }
    let prompt = admin::request_as(adm, "GET", "/", None).await.unwrap();
    assert!(prompt.text().contains("id=\"token\""), "{}", prompt.text());

    // The token: printed once on stdout, in a 0600 file of the data dir,
    // never in the log.
    let token = printed_token(&p);
    assert!(token.len() >= 32, "{token}");
    assert!(
        p.out_text()
            .contains(&format!("http://{adm}/?token={token}")),
        "{}",
        p.out_text()
    );
    let file = dir.path().join("admin.token");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the token file is the owner's only");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    assert!(!p.log_text().contains(&token), "{}", p.log_text());
    assert!(p.log_text().contains("admin.token"), "the log says where");
    let ok = admin::request_as(adm, "GET", "/api/rules", Some(&token))
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());

    // The CLI commands read the file: no flag needed.
    let a = adm.to_string();
    for args in [
        vec!["doctor", "--admin", &a, "--data-dir", &data],
        vec!["records", "--admin", &a, "--data-dir", &data],
        vec!["har", "--admin", &a, "--data-dir", &data],
        vec![
            "top",
            "--iterations",
            "1",
            "--admin",
            &a,
            "--data-dir",
            &data,
        ],
    ] {
        let run = proxy::run_cli_with_token(&args, None, Duration::from_secs(15)).await;
        assert_eq!(run.code, Some(0), "{args:?}: {}{}", run.stdout, run.stderr);
    }
    // Without any token found, the error says what to do.
    let empty = tempfile::tempdir().unwrap();
    let run = proxy::run_cli_with_token(
        &[
            "doctor",
            "--admin",
            &a,
            "--data-dir",
            empty.path().to_str().unwrap(),
        ],
        None,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("401") && run.stderr.contains("no admin token"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--admin-token-file"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_none_is_an_explicit_logged_opt_out_on_loopback_only() {
    let p = proxy::spawn(&["--admin-token", "none"]).await;
    let adm = p.admin.unwrap();
    let r = admin::request_as(adm, "GET", "/api/rules", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        p.log_text().contains("NO token"),
        "the opt-out is warned about: {}",
        p.log_text()
    );
    assert!(p.admin_token.is_none(), "{}", p.out_text());
    let run = proxy::run_cli(
        &[
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "0.0.0.0:0",
            "--admin-token",
            "none",
        ],
        Duration::from_secs(10),
    )
    .await;
    assert!(matches!(run.code, Some(c) if c != 0), "{run:?}");
    assert!(run.stderr.contains("loopback"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_a_random_id_never_the_token_and_ends_server_side() {
    let p = proxy::spawn(&["--admin-token", TOKEN]).await;
    let adm = p.admin.unwrap();
    let open = |token: &'static str| async move {
        let req = admin::req("POST", "/api/session")
            .bearer(Some(token))
            .body("");
        admin::call(adm, req, Duration::from_secs(10))
            .await
            .unwrap()
    };
    let first = open(TOKEN).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let cookie = first.header("set-cookie").unwrap().to_string();
    assert!(
        !cookie.contains(TOKEN),
        "the cookie carries no token: {cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let id = pair.split_once('=').unwrap().1.to_string();
    assert!(id.len() >= 32, "at least 128 bits: {id}");
    let second = open(TOKEN).await;
    let pair2 = second
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(pair, pair2, "each session its own id");

    let with_cookie = |pair: String, method: &'static str, path: &'static str| async move {
        let req = admin::req(method, path)
            .header("Cookie", pair)
            .header("x-sluice-ui", 1)
            .body("");
        admin::call(adm, req, Duration::from_secs(10))
            .await
            .unwrap()
    };
    assert_eq!(
        with_cookie(pair.clone(), "GET", "/api/rules").await.status,
        200
    );
    // The token itself in the cookie opens nothing.
    let forged = format!("sluice_admin={TOKEN}");
    assert_eq!(with_cookie(forged, "GET", "/api/rules").await.status, 401);
    // Signing out ends the session here, not only in the browser: the
    // same cookie replayed is refused; the other session lives on.
    assert_eq!(
        with_cookie(pair.clone(), "DELETE", "/api/session")
            .await
            .status,
        204
    );
    assert_eq!(with_cookie(pair, "GET", "/api/rules").await.status, 401);
    assert_eq!(with_cookie(pair2, "GET", "/api/rules").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_never_shows_the_admin_token_from_the_environment() {
    let secret = "env-secret-token-0123456789";
    for args in [
        &["--help"][..],
        &["doctor", "--help"],
        &["records", "--help"],
        &["har", "--help"],
    ] {
        let run = proxy::run_cli_with_token(args, Some(secret), Duration::from_secs(10)).await;
        assert_eq!(run.code, Some(0), "{args:?}: {}", run.stderr);
        assert!(run.stdout.contains("--admin-token"), "{}", run.stdout);
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{args:?} shows the token:\n{}",
            run.stdout
        );
    }
}
