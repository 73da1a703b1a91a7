//! Every place a person meets sluice's CA, against the real binary:
//! `sluice ca` (making the pair in a fresh data folder, reading a running
//! instance's, refusing what the proxy refuses), the admin server's
//! public `/ca`, `/ca.pem`, `/ca.der` beside the authenticated
//! `/api/tls`, the proxy's own name `http://sluice.invalid/` (through
//! curl, as a user's client would), an intercepted exchange whose record
//! carries its TLS facts, and `--data-dir :memory:` leaving no file.
//! No answer anywhere may hold the key.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::proxy::{run_cli, run_cli_blocking, spawn, SluiceProcess};
use crate::support::{admin, origin};

const WITHIN: Duration = Duration::from_secs(20);

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The DER bytes of a PEM certificate.
fn der_of(pem: &[u8]) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).expect("a PEM certificate");
    assert_eq!(p.label, "CERTIFICATE");
    p.contents
}

/// SHA-256 as `openssl x509 -fingerprint -sha256` writes it.
fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The fingerprint `openssl` gives the certificate file, when openssl is
/// installed.
fn openssl_fingerprint(cert: &Path) -> Option<String> {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().split_once('=')?.1.to_string())
}

/// The value of `key:` in `sluice ca`'s summary.
fn field<'a>(summary: &'a str, key: &str) -> &'a str {
    summary
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no `{key}` line in:\n{summary}"))
}

fn no_key(what: &str, bytes: &[u8]) {
    assert!(
        !String::from_utf8_lossy(bytes).contains("PRIVATE KEY"),
        "{what} holds a private key"
    );
}

/// `curl ARGS...`: exit success and stdout.
async fn curl(args: &[&str]) -> (bool, Vec<u8>, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("curl runs (./test.sh installs it)");
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `GET path` until `found` holds for its JSON, within 10 s.
async fn wait_json(
    admin_addr: std::net::SocketAddr,
    path: &str,
    found: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin::get_json(admin_addr, path).await;
        if found(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET {path} never matched: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_ca_makes_the_pair_in_a_fresh_data_dir_and_prints_its_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let d = dir.to_str().unwrap();
    let run = run_cli(&["ca", "--data-dir", d], WITHIN).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    assert_eq!(mode_of(&key), 0o600, "the key is private");
    assert_eq!(mode_of(&cert), 0o644, "the certificate is for everyone");
    let pem = std::fs::read(&cert).unwrap();
    let der = der_of(&pem);
    let printed = field(&run.stdout, "SHA-256:");
    assert_eq!(printed, fingerprint(&der), "{}", run.stdout);
    if let Some(theirs) = openssl_fingerprint(&cert) {
        assert_eq!(printed, theirs, "openssl agrees");
    }
    assert_eq!(
        field(&run.stdout, "certificate:"),
        cert.display().to_string()
    );
    assert!(field(&run.stdout, "subject:").contains("sluice CA"));
    assert!(field(&run.stdout, "not before:").contains(' '));
    assert!(field(&run.stdout, "not after:").contains(' '));
    assert!(run.stdout.contains("made now"), "{}", run.stdout);
    no_key("sluice ca", run.stdout.as_bytes());

    // Again: the same CA, read, not made.
    let again = run_cli(&["ca", "--data-dir", d], WITHIN).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(field(&again.stdout, "SHA-256:"), printed);
    assert!(!again.stdout.contains("made now"));
    assert_eq!(std::fs::read(&cert).unwrap(), pem, "not rewritten");

    let export = run_cli(&["ca", "--data-dir", d, "--export"], WITHIN).await;
    assert_eq!(export.code, Some(0), "{}", export.stderr);
    assert_eq!(export.stdout.as_bytes(), &pem[..], "--export is the file");
    // DER through a file: the runner reads stdout as text.
    let der_file = tmp.path().join("ca.der");
    let out = std::fs::File::create(&der_file).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["ca", "--data-dir", d, "--export", "--der"])
        .stdout(out)
        .status()
        .unwrap();
    assert!(status.success());
    let exported = std::fs::read(&der_file).unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&exported).expect("DER certificate");
    assert!(parsed.is_ca());
    assert_eq!(exported, der, "the DER of the same certificate");

    // A team CA is shown from its files, which are never changed.
    let team = run_cli(
        &[
            "ca",
            "--ca-cert",
            cert.to_str().unwrap(),
            "--ca-key",
            key.to_str().unwrap(),
        ],
        WITHIN,
    )
    .await;
    assert_eq!(team.code, Some(0), "{}", team.stderr);
    assert_eq!(field(&team.stdout, "SHA-256:"), printed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_proxy_refuses_sluice_ca_refuses_with_the_same_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for dir in [&a, &b] {
        let run = run_cli(&["ca", "--data-dir", dir.to_str().unwrap()], WITHIN).await;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
    }
    let key = a.join("ca-key.pem");
    let proxy_start = |dir: &Path| {
        let d = dir.to_str().unwrap().to_string();
        tokio::task::spawn_blocking(move || {
            run_cli_blocking(
                &[
                    "--listen",
                    "127.0.0.1:0",
                    "--admin",
                    "off",
                    "--data-dir",
                    &d,
                ],
                None,
                WITHIN,
            )
        })
    };

    // A key others may read.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ca = run_cli(&["ca", "--data-dir", a.to_str().unwrap()], WITHIN).await;
    assert_eq!(ca.code, Some(1), "{ca:?}");
    let chmod = format!("run `chmod 600 {}`", key.display());
    assert!(ca.stderr.contains(&chmod), "{}", ca.stderr);
    assert!(ca.stdout.is_empty(), "nothing printed: {}", ca.stdout);
    let proxy = proxy_start(&a).await.unwrap();
    assert_ne!(proxy.code, Some(0), "the proxy does not start");
    assert!(proxy.stderr.contains(&chmod), "{}", proxy.stderr);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A key that is not the certificate's.
    std::fs::copy(b.join("ca-key.pem"), &key).unwrap();
    let ca = run_cli(&["ca", "--data-dir", a.to_str().unwrap()], WITHIN).await;
    assert_eq!(ca.code, Some(1), "{ca:?}");
    assert!(
        ca.stderr.contains("do not belong together"),
        "{}",
        ca.stderr
    );
    let proxy = proxy_start(&a).await.unwrap();
    assert_ne!(proxy.code, Some(0));
    assert!(
        proxy.stderr.contains("do not belong together"),
        "{}",
        proxy.stderr
    );

    // Half a pair: neither replaced nor completed.
    std::fs::remove_file(&key).unwrap();
    let before = std::fs::read(a.join("ca.pem")).unwrap();
    let ca = run_cli(&["ca", "--data-dir", a.to_str().unwrap()], WITHIN).await;
    assert_eq!(ca.code, Some(1), "{ca:?}");
    assert!(ca.stderr.contains("but not"), "{}", ca.stderr);
    assert!(!key.exists(), "no new key beside the old certificate");
    assert_eq!(std::fs::read(a.join("ca.pem")).unwrap(), before);
    let proxy = proxy_start(&a).await.unwrap();
    assert_ne!(proxy.code, Some(0));
    assert!(proxy.stderr.contains("but not"), "{}", proxy.stderr);

    // The key is never what an error shows.
    for text in [&ca.stderr, &proxy.stderr] {
        no_key("an error", text.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_ca_reads_the_ca_of_a_running_instance() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let d = dir.to_str().unwrap();
    let p = spawn(&["--data-dir", d]).await;
    let pem = std::fs::read(dir.join("ca.pem")).expect("the proxy made its CA");
    let run = run_cli(&["ca", "--data-dir", d], WITHIN).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(field(&run.stdout, "SHA-256:"), fingerprint(&der_of(&pem)));
    assert!(!run.stdout.contains("made now"));
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), pem);
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_serves_the_certificate_and_trust_page_without_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let p = spawn(&[
        "--data-dir",
        dir.to_str().unwrap(),
        "--intercept",
        "*.example.com",
    ])
    .await;
    let a = p.admin.expect("admin");
    let pem = std::fs::read(dir.join("ca.pem")).unwrap();
    let der = der_of(&pem);
    let sha = fingerprint(&der);

    let r = admin::request_as(a, "GET", "/ca.pem", None).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-pem-file"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"sluice-ca.pem\"")
    );
    assert_eq!(r.body, pem);
    no_key("/ca.pem", &r.body);

    let r = admin::request_as(a, "GET", "/ca.der", None).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-x509-ca-cert"));
    assert_eq!(r.body, der);

    let r = admin::request_as(a, "GET", "/ca", None).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").expect("a CSP");
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let page = r.text();
    assert!(page.contains(&sha), "the page shows the fingerprint");
    assert!(page.contains("href=\"/ca.pem\"") && page.contains("update-ca-certificates"));
    assert!(!page.to_ascii_lowercase().contains("<script"));
    no_key("/ca", &r.body);

    // Wrong tokens do not matter to the public routes, and the key's
    // file name is not a route.
    let r = admin::request_as(a, "GET", "/ca.pem", Some("wrong"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    for path in ["/ca-key.pem", "/ca/../ca-key.pem", "/ui/../ca-key.pem"] {
        let r = admin::request_as(a, "GET", path, p.admin_token.as_deref())
            .await
            .unwrap();
        assert_ne!(r.status, 200, "{path}");
        no_key(path, &r.body);
    }

    let r = admin::request_as(a, "GET", "/api/tls", None).await.unwrap();
    assert_eq!(r.status, 401, "/api/tls needs the token");
    let v = admin::get_json(a, "/api/tls").await;
    assert_eq!(v["ca"]["sha256"], sha.as_str(), "{v}");
    assert_eq!(v["ca"]["path"], dir.join("ca.pem").display().to_string());
    assert_eq!(v["ca"]["created"], true, "made at this start");
    assert!(v["ca"]["subject"].as_str().unwrap().contains("sluice CA"));
    assert!(v["ca"]["not_before"].is_string() && v["ca"]["not_after"].is_string());
    assert_eq!(v["intercept"], "*.example.com");
    assert_eq!(v["leaf_cache"]["cached"], 0);
    assert!(v["leaf_cache"]["made"].is_u64() && v["leaf_cache"]["hits"].is_u64());
    assert_eq!(v["fallback"], serde_json::json!([]));
    assert_eq!(v["trust"]["through_proxy"], "http://sluice.invalid/");
    no_key("/api/tls", v.to_string().as_bytes());
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_invalid_through_the_proxy_is_answered_by_sluice_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let p = spawn(&["--data-dir", dir.to_str().unwrap()]).await;
    let a = p.admin.expect("admin");
    let proxy = format!("http://{}", p.addr);
    let pem = std::fs::read(dir.join("ca.pem")).unwrap();

    let (ok, body, err) = curl(&["-x", &proxy, "http://sluice.invalid/ca.pem"]).await;
    assert!(ok, "{err}");
    assert_eq!(body, pem, "the same certificate");
    let (ok, body, err) = curl(&["-x", &proxy, "http://sluice.invalid/ca.der"]).await;
    assert!(ok, "{err}");
    assert_eq!(body, der_of(&pem));
    let (ok, body, err) = curl(&["-x", &proxy, "http://SLUICE.invalid./"]).await;
    assert!(ok, "{err}");
    let page = String::from_utf8_lossy(&body);
    assert!(page.contains(&fingerprint(&der_of(&pem))), "{page}");
    let (ok, body, _) = curl(&[
        "-x",
        &proxy,
        "-w",
        "%{http_code}",
        "http://sluice.invalid/ca-key.pem",
    ])
    .await;
    assert!(ok);
    let text = String::from_utf8_lossy(&body);
    assert!(text.ends_with("404"), "{text}");
    for b in [&body, &pem] {
        no_key("through the proxy", b);
    }

    // Recorded like sluice's other answers: status, the note, never
    // forwarded (no upstream). (The URL filter: one host was spelled
    // `SLUICE.invalid.`.)
    let page = wait_json(a, "/api/records?url=sluice.invalid", |v| {
        v["records"].as_array().is_some_and(|r| r.len() == 4)
    })
    .await;
    for r in page["records"].as_array().unwrap() {
        assert!(r["upstream_addr"].is_null(), "{r}");
        assert!(r["rules"].to_string().contains("trust"), "{r}");
    }
    let statuses: Vec<u64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [404, 200, 200, 200]);
    drop(p);

    // With --auth, the page too needs the proxy's credentials.
    let users = tmp.path().join("users");
    let hash = bcrypt::hash("pw", 4).unwrap();
    std::fs::write(&users, format!("alice:{hash}\n")).unwrap();
    let p = spawn(&["--auth", users.to_str().unwrap()]).await;
    let proxy = format!("http://{}", p.addr);
    let (_, code, _) = curl(&[
        "-x",
        &proxy,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://sluice.invalid/ca.pem",
    ])
    .await;
    assert_eq!(String::from_utf8_lossy(&code), "407");
    let (ok, body, err) = curl(&[
        "-x",
        &proxy,
        "-U",
        "alice:pw",
        "http://sluice.invalid/ca.pem",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(String::from_utf8_lossy(&body).starts_with("-----BEGIN CERTIFICATE-----"));
    drop(p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intercepted_exchange_is_listed_with_its_tls_facts() {
    let tmp = tempfile::tempdir().unwrap();
    let (o, intercept) = origin::tls_trusted(tmp.path()).await;
    let p = spawn(&intercept.each_ref().map(String::as_str)).await;
    let a = p.admin.expect("admin");
    let proxy = format!("http://{}", p.addr);
    // A client that trusts sluice's CA, fetched where a person would.
    let client_ca = tmp.path().join("sluice-ca.pem");
    let (ok, _, err) = curl(&[
        "-x",
        &proxy,
        "-o",
        client_ca.to_str().unwrap(),
        "http://sluice.invalid/ca.pem",
    ])
    .await;
    assert!(ok, "{err}");
    let url = format!("https://localhost:{}/secret", o.port());
    let (ok, body, err) = curl(&[
        "--cacert",
        client_ca.to_str().unwrap(),
        "-p",
        "-x",
        &proxy,
        &url,
    ])
    .await;
    assert!(ok, "{err}\n{}", p.log_text());
    assert_eq!(body, b"decrypted");

    let page = wait_json(a, "/api/records?host=localhost", |v| {
        v["records"].as_array().is_some_and(|r| r.len() == 2)
    })
    .await;
    let rows = page["records"].as_array().unwrap();
    let inner = rows
        .iter()
        .find(|r| r["kind"] == "http")
        .expect("the exchange");
    assert_eq!(inner["url"], url.as_str());
    let t = &inner["tls"];
    assert_eq!(t["sni"], "localhost", "{inner}");
    assert_eq!(t["verified"], true);
    assert!(
        t["client_version"].as_str().unwrap().starts_with("TLS"),
        "{t}"
    );
    assert!(t["upstream_cert"]["subject"].is_string(), "{t}");
    let tunnel = rows
        .iter()
        .find(|r| r["kind"] == "tunnel")
        .expect("the tunnel");
    assert_eq!(tunnel["tls"]["state"], "intercepted", "{tunnel}");
    // The detail carries the same object.
    let d = admin::get_json(a, &format!("/api/records/{}", inner["id"])).await;
    assert_eq!(d["tls"], *t);

    let v = admin::get_json(a, "/api/tls").await;
    assert_eq!(v["leaf_cache"]["cached"], 1, "{v}");
    assert_eq!(v["leaf_cache"]["made"], 1, "{v}");
    assert_eq!(v["intercept"], "localhost");
    drop(p);
}

/// Every file below `dir`.
fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files_below(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_data_dir_memory_the_ca_is_served_and_nothing_is_written() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path().to_path_buf();
    let mut p = tokio::task::spawn_blocking(move || {
        SluiceProcess::start_with(&["--data-dir", ":memory:", "--intercept", "all"], |cmd| {
            cmd.current_dir(&h)
                .env("HOME", &h)
                .env("XDG_DATA_HOME", h.join("xdg"));
        })
    })
    .await
    .unwrap();
    let a = p.admin.expect("admin");
    let r = admin::request_as(a, "GET", "/ca.pem", None).await.unwrap();
    assert_eq!(r.status, 200);
    let v = admin::get_json(a, "/api/tls").await;
    assert!(v["ca"]["path"].is_null(), "{v}");
    assert_eq!(v["ca"]["sha256"], fingerprint(&der_of(&r.body)));
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit_in_place(Duration::from_secs(10)), Some(0));
    assert_eq!(files_below(home.path()), Vec::<std::path::PathBuf>::new());
}
