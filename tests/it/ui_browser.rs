//! The web UI in a real browser: start sluice with an admin token, an
//! origin in front of it and some traffic, then drive headless Chromium
//! with Playwright (`tests/ui/e2e.mjs`): the token prompt, rows arriving
//! live, the filter, the detail pane (headers, a gzip body decoded and
//! pretty-printed, the rule that touched it, copy as curl), keyboard
//! navigation, pause/clear, the HAR download, closing a connection from
//! the page, the dashboard charts and a rule error at its line; and HTTPS
//! interception as a person meets it: the header's link to the CA's
//! trust page, the list's TLS marker (decrypted, NOT verified,
//! intercepted, passthrough, refused) and the detail's TLS section, with
//! a hostile certificate subject shown as text.
//! Screenshots land in `target/ui-test-output/`.
//!
//! Needs Debian's `chromium` and `npm ci --prefix tests/ui` (./test.sh
//! installs both); without them the test fails saying so.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;

use crate::support::{client, origin, proxy, tls};

const TOKEN: &str = "ui-test-token-0123456789abcdef";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The common name of the hostile origin's certificate: markup the page
/// must show as text and never run.
const HOSTILE_CN: &str = "<script>alert(1)</script><img src=x onerror=alert(2)>";

/// Origin for the UI test: `/data.json` (gzip JSON), `/img.png`, `/bin`
/// (binary), `/status/N`, POST echoes, anything else a short text.
async fn ui_origin() -> SocketAddr {
    origin::serve(route).await
}

async fn route(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let post = req.method() == hyper::Method::POST;
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut b = Response::builder();
    let resp = if post {
        b.header("content-type", "application/json")
            .body(Full::new(body))
    } else if path == "/data.json" {
        let json = br#"{"hello":"sluice","items":[1,2,3],"nested":{"ok":true}}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(json).unwrap();
        b.header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(Full::new(Bytes::from(gz.finish().unwrap())))
    } else if path == "/img.png" {
        // A 1x1 PNG.
        const PNG: &[u8] = &[
            0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52,
            0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 0x0d, 0x49,
            0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0, 0x1f, 0, 0x05, 0x00, 0x01,
            0xff, 0x89, 0x99, 0x3d, 0x1d, 0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60,
            0x82,
        ];
        b.header("content-type", "image/png")
            .body(Full::new(Bytes::from_static(PNG)))
    } else if path == "/bin" {
        let data: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
        b.header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(data)))
    } else if let Some(code) = path.strip_prefix("/status/") {
        b = b.status(code.parse::<u16>().unwrap_or(500));
        b.body(Full::new(Bytes::new()))
    } else {
        b.header("content-type", "text/plain")
            .body(Full::new(Bytes::from(format!("you asked for {path}\n"))))
    };
    Ok(resp.unwrap())
}

/// `curl ARGS...` through `proxy`: whether it succeeded.
async fn curl<S: AsRef<std::ffi::OsStr>>(proxy: SocketAddr, args: &[S]) -> bool {
    tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-x"])
        .arg(format!("http://{proxy}"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .expect("curl runs (./test.sh installs it)")
        .success()
}

/// HTTPS through the proxy as curl sends it: a client that fetched
/// sluice's CA from `http://sluice.invalid/ca.pem` reaches the trusted
/// origin (decrypted, verified) and the hostile one (decrypted, NOT
/// verified); a tunnel outside `--intercept` is passed through; last, a
/// client without the CA refuses sluice's certificate (which puts the
/// host in the fallback table, hence last).
async fn tls_traffic(proxy: SocketAddr, dir: &Path, trusted: SocketAddr, hostile: SocketAddr) {
    let ca = dir.join("sluice-ca.pem");
    let ca = ca.to_str().unwrap();
    assert!(curl(proxy, &["-o", ca, "http://sluice.invalid/ca.pem"]).await);
    let verified = format!("https://localhost:{}/tls-verified", trusted.port());
    let trusting = |url: &str| ["--cacert", ca, "-o", "/dev/null", "-p", url].map(String::from);
    assert!(curl(proxy, &trusting(&verified)).await, "{verified}");
    let unverified = format!("https://localhost:{}/tls-hostile", hostile.port());
    assert!(curl(proxy, &trusting(&unverified)).await, "{unverified}");
    let passed = format!("https://127.0.0.1:{}/tls-passthrough", trusted.port());
    assert!(
        curl(proxy, &["-k", "-o", "/dev/null", "-p", &passed]).await,
        "{passed}"
    );
    let refused = format!("https://localhost:{}/tls-refused", trusted.port());
    assert!(
        !curl(
            proxy,
            &["--stderr", "/dev/null", "-o", "/dev/null", "-p", &refused]
        )
        .await,
        "curl distrusts sluice's CA"
    );
}

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// Fails (never skips) when the browser or the node modules are missing.
fn require_tools() {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push("Debian's chromium (apt-get install chromium)".to_string());
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("Node.js (node)".to_string());
    }
    if !ui_dir().join("node_modules/playwright-core").exists() {
        missing.push("the test's node modules (npm ci --prefix tests/ui)".to_string());
    }
    assert!(
        missing.is_empty(),
        "the browser test needs {}; ./test.sh installs them",
        missing.join(", ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_ui_in_a_real_browser() {
    require_tools();
    let origin = ui_origin().await;
    let dir = tempfile::tempdir().unwrap();
    // Two TLS origins for `localhost`: one whose certificate sluice is
    // told to trust (verified), one with a hostile subject that a rule
    // intercepts without verifying.
    let (tls_trusted, intercept) = origin::tls_trusted(dir.path()).await;
    let hostile = tls::self_signed_localhost_named(HOSTILE_CN);
    let tls_hostile = origin::tls(&hostile, origin::TLS_ANSWER).await;
    let rules = dir.path().join("ui.rules");
    std::fs::write(
        &rules,
        format!(
            "*/data.json resHeaders://x-rule=L1\nlocalhost:{} intercept://insecure\n",
            tls_hostile.port()
        ),
    )
    .unwrap();
    let mut args = vec!["--admin-token", TOKEN, "--rules", rules.to_str().unwrap()];
    args.extend(intercept.iter().map(String::as_str));
    let p = proxy::spawn(&args).await;
    let admin_addr = p.admin.expect("admin address");

    // Traffic before the page opens: JSON (gzip), an image, binary, a
    // POST, a 5xx and a 404.
    let o = origin;
    let sent = [
        format!("GET http://{o}/data.json HTTP/1.1\r\nHost: {o}\r\nAccept-Encoding: gzip\r\nX-UI-Test: 1\r\nConnection: close\r\n\r\n"),
        format!("GET http://{o}/img.png HTTP/1.1\r\nHost: {o}\r\nConnection: close\r\n\r\n"),
        format!("GET http://{o}/bin HTTP/1.1\r\nHost: {o}\r\nConnection: close\r\n\r\n"),
        format!("POST http://{o}/submit HTTP/1.1\r\nHost: {o}\r\nContent-Type: application/json\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{{\"a\":[1,2,3]}}"),
        format!("GET http://{o}/status/500 HTTP/1.1\r\nHost: {o}\r\nConnection: close\r\n\r\n"),
        format!("GET http://{o}/status/404 HTTP/1.1\r\nHost: {o}\r\nConnection: close\r\n\r\n"),
    ];
    for raw in &sent {
        let r = client::exchange(p.addr, raw.as_bytes())
            .await
            .expect("proxied");
        assert!(r.status >= 200, "{}", r.status);
    }

    tls_traffic(p.addr, dir.path(), tls_trusted, tls_hostile).await;

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-test-output");
    std::fs::create_dir_all(&out).unwrap();
    let script = ui_dir().join("e2e.mjs");
    let run = tokio::task::spawn_blocking({
        let out = out.clone();
        move || {
            Command::new("node")
                .arg(script)
                .env("SLUICE_ADMIN", format!("http://{admin_addr}"))
                .env("SLUICE_PROXY", format!("http://{}", p.addr))
                .env("SLUICE_ORIGIN", format!("http://{origin}"))
                .env("SLUICE_TOKEN", TOKEN)
                .env("SLUICE_OUT", &out)
                .env("CHROMIUM", CHROMIUM)
                .output()
                .map(|o| (o, p))
        }
    })
    .await
    .unwrap()
    .expect("node runs");
    let (output, p) = run;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no JSON result from e2e.mjs\nstdout: {stdout}\nstderr: {stderr}\nsluice: {}",
                p.log_text()
            )
        });
    let result: Value = serde_json::from_str(line).expect("JSON result");
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    assert!(
        output.status.success() && result["ok"] == true,
        "browser test failed: {:#}\nstderr: {stderr}",
        result["failures"]
    );
    for check in [
        "token_required",
        "rows_listed",
        "row_appears_live",
        "filter_works",
        "detail_headers_and_decoded_body",
        "keyboard",
        "pause_and_clear",
        "har_download",
        "close_connection",
        "dashboard_has_data",
        "rule_line_error",
        "token_in_url",
        "ca_link_and_trust_page",
        "tls_list_and_detail",
        "no_page_errors",
    ] {
        assert!(
            result["checks"][check] != false && !result["checks"][check].is_null(),
            "check {check} missing or failed: {result}"
        );
    }
    for shot in [
        "1-network",
        "1-network-detail",
        "2-connections",
        "3-dashboard",
        "4-rules",
        "5-trust-page",
        "6-network-tls",
    ] {
        let f = out.join(format!("{shot}.png"));
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "screenshot {} missing or empty", f.display());
    }
    drop(p);
}
