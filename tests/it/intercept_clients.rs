//! Real clients through HTTPS interception, each trusting sluice's team CA
//! the way its users would: Python's requests (a CA file), httpx over
//! HTTP/2 (concurrent streams on one connection), headless Chromium (an
//! NSS database) loading a page of many subresources over h2, and git
//! cloning a dumb-HTTP repository (`GIT_SSL_CAINFO`). Each story starts a
//! TLS origin, an intercepting sluice in front of it and the client, then
//! checks what the client got and what sluice recorded: `https://` URLs
//! and the TLS facts of each exchange (SNI, ALPN on both sides, a verified
//! upstream).
//!
//! The clients are the machine's own: python3 with requests and
//! httpx[http2], Debian's chromium and libnss3-tools (certutil), node with
//! tests/ui's node modules, git. ./test.sh installs them; without one, its
//! test fails saying what is missing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::Value;
use sluice::{Config, Proxy};
use tokio::process::Command;

use crate::support::admin::{get_json, wait_records};
use crate::support::pki::{pki, OriginCert};
use crate::support::{bounded, origin, pattern_sha256, proxy};

const BOTH: &[&[u8]] = &[b"h2", b"http/1.1"];
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// An intercepting proxy with an admin server, then `tweak`ed.
async fn intercepting(tweak: impl FnOnce(&mut Config)) -> Proxy {
    proxy::start(|c| {
        pki().intercept_all(c);
        c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        tweak(c)
    })
    .await
}

/// `program`, with none of this process's proxy settings (each client is
/// told its proxy explicitly), killed if the test drops it.
pub(crate) fn client(program: &str) -> Command {
    let mut c = Command::new(program);
    for var in [
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
    ] {
        c.env_remove(var);
    }
    c.stdin(Stdio::null()).kill_on_drop(true);
    c
}

/// Runs `cmd` to its end within `within`; panics with what it printed
/// unless it succeeded.
async fn run(what: &str, mut cmd: Command, within: Duration) -> Output {
    let out = tokio::time::timeout(within, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: still running after {within:?}"))
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Fails (never skips) when a client the test needs is missing.
/// Fails unless Chromium, certutil, Node.js and the test's node modules
/// are there.
pub(crate) fn require_browser(test: &str) {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push("Debian's chromium (apt-get install chromium)".to_string());
    }
    if std::process::Command::new("certutil")
        .arg("-H")
        .output()
        .is_err()
    {
        missing.push("certutil (apt-get install libnss3-tools)".to_string());
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        missing.push("Node.js (node)".to_string());
    }
    if !ui_dir().join("node_modules/playwright-core").exists() {
        missing.push("the test's node modules (npm ci --prefix tests/ui)".to_string());
    }
    require(missing, test);
}

fn require(missing: Vec<String>, test: &str) {
    assert!(
        missing.is_empty(),
        "the {test} test needs {}; ./test.sh installs them",
        missing.join(", ")
    );
}

/// Fails unless python3 imports every one of `modules`.
async fn require_python(modules: &str, install: &str) {
    let probe = client("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .await;
    let missing = match probe {
        Ok(o) if o.status.success() => vec![],
        Ok(_) => vec![format!(
            "python3 with {modules} (python3 -m pip install {install})"
        )],
        Err(_) => vec!["python3".to_string()],
    };
    require(missing, &format!("python {modules}"));
}

/// Runs a Python `script` with `PROXY` (`http://ADDR`), `CA` (sluice's
/// team CA, PEM) and `BASE` (`https://localhost:PORT`) in its
/// environment; the JSON object it printed last.
async fn python(script: &str, proxy: SocketAddr, origin: SocketAddr) -> Value {
    let mut cmd = client("python3");
    cmd.arg("-c")
        .arg(script)
        .env("PROXY", format!("http://{proxy}"))
        .env("CA", &pki().sluice_ca_cert)
        .env("BASE", format!("https://localhost:{}", origin.port()));
    let out = run("python3", cmd, Duration::from_secs(20)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    serde_json::from_str(line.unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON from python ({e}): {stdout}"))
}

/// The HTTP records once there are at least `n`, oldest first.
async fn exchanges(admin: SocketAddr, n: usize) -> Vec<Value> {
    let mut rows = wait_records(admin, "kind=http", n).await;
    rows.reverse();
    rows
}

/// The record of `url` among `rows`, in detail.
async fn detail_of(admin: SocketAddr, rows: &[Value], url: &str) -> Value {
    let row = rows
        .iter()
        .find(|r| r["url"] == url)
        .unwrap_or_else(|| panic!("no record of {url} among {rows:#?}"));
    get_json(admin, &format!("/api/records/{}", row["id"])).await
}

/// Asserts that the record `d` was decrypted by sluice from a client that
/// agreed `client_alpn`, and sent on to the origin (which prefers h2)
/// over TLS it verified.
fn assert_intercepted(d: &Value, client_alpn: &str) {
    assert!(
        d["url"]
            .as_str()
            .unwrap_or_default()
            .starts_with("https://"),
        "{d}"
    );
    let tls = &d["tls"];
    assert_eq!(tls["sni"], "localhost", "{d}");
    assert_eq!(tls["client_alpn"], client_alpn, "{d}");
    assert_eq!(tls["upstream_alpn"], "h2", "{d}");
    assert_eq!(tls["verified"], true, "{d}");
}

const REQUESTS_SCRIPT: &str = r#"
import json, os, requests
proxies = {"https": os.environ["PROXY"]}
ca, base = os.environ["CA"], os.environ["BASE"]
body = b"sluice " * 1000
with requests.Session() as s:
    s.trust_env = False
    g = s.get(base + "/small", proxies=proxies, verify=ca, timeout=10)
    p = s.post(base + "/echo", data=body, proxies=proxies, verify=ca, timeout=10)
print(json.dumps({
    "get": {"status": g.status_code, "body": g.text, "via": g.headers.get("via")},
    "post": {"status": p.status_code, "echoed": p.content == body, "len": len(p.content)},
}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_gets_and_posts_through_interception() {
    require_python("requests", "requests").await;
    bounded(Duration::from_secs(30), async {
        let origin = origin::https(pki().origin_config(OriginCert::Valid, BOTH)).await;
        let proxy = intercepting(|_| {}).await;
        let admin = proxy.admin_addr.unwrap();

        let got = python(REQUESTS_SCRIPT, proxy.addr, origin).await;
        assert_eq!(got["get"]["status"], 200, "{got}");
        assert_eq!(got["get"]["body"], "x".repeat(100), "{got}");
        // Via names the protocol the response came in on: h2 from the origin.
        assert_eq!(got["get"]["via"], "2 sluice", "served by sluice: {got}");
        assert_eq!(got["post"]["status"], 200, "{got}");
        assert_eq!(got["post"]["echoed"], true, "{got}");

        // One record each, decrypted: urllib3 offers ALPN http/1.1 only,
        // and sluice bridges it to the origin's h2.
        let base = format!("https://localhost:{}", origin.port());
        let rows = exchanges(admin, 2).await;
        let get = detail_of(admin, &rows, &format!("{base}/small")).await;
        assert_eq!(get["method"], "GET", "{get}");
        assert_eq!(get["status"], 200, "{get}");
        assert_eq!(get["resp_size"], 100, "{get}");
        assert_intercepted(&get, "http/1.1");
        let post = detail_of(admin, &rows, &format!("{base}/echo")).await;
        assert_eq!(post["method"], "POST", "{post}");
        assert_eq!(post["status"], 200, "{post}");
        assert_eq!(post["req_size"], 7000, "{post}");
        assert_eq!(post["resp_size"], 7000, "{post}");
        assert_intercepted(&post, "http/1.1");
    })
    .await;
}

const HTTPX_SCRIPT: &str = r#"
import asyncio, hashlib, json, os, ssl, httpx
# httpx 0.28 takes an SSL context for verify= (a path is deprecated).
ctx = ssl.create_default_context(cafile=os.environ["CA"])
base = os.environ["BASE"]
async def main():
    async with httpx.AsyncClient(http2=True, verify=ctx, proxy=os.environ["PROXY"],
                                 trust_env=False, timeout=10) as c:
        first = await c.get(base + "/bytes/5000")
        together = await asyncio.gather(*(c.get(f"{base}/together/{i}") for i in range(8)))
    return {
        "first": {"version": first.http_version, "status": first.status_code,
                  "sha256": hashlib.sha256(first.content).hexdigest()},
        "together": [{"version": r.http_version, "status": r.status_code, "body": r.text}
                     for r in together],
    }
print(json.dumps(asyncio.run(main())))
"#;

/// How many requests the `/together/` origin holds until all are in flight.
const TOGETHER: usize = 8;

/// An origin that answers `/together/N` only once [`TOGETHER`] such
/// requests are in flight at once (else 504 after 5 s), with `N` as the
/// body; anything else as the standard routes' `/bytes/N`.
async fn together_origin() -> SocketAddr {
    let gate: &'static tokio::sync::Barrier =
        Box::leak(Box::new(tokio::sync::Barrier::new(TOGETHER)));
    origin::https_with(
        pki().origin_config(OriginCert::Valid, BOTH),
        move |req: Request<Incoming>| async move {
            let path = req.uri().path().to_string();
            if let Some(n) = path.strip_prefix("/together/") {
                let all_in = tokio::time::timeout(Duration::from_secs(5), gate.wait()).await;
                let mut r = Response::new(Full::new(Bytes::from(n.to_string())));
                if all_in.is_err() {
                    *r.status_mut() = StatusCode::GATEWAY_TIMEOUT;
                }
                return Ok::<_, Infallible>(r);
            }
            let n: usize = path
                .strip_prefix("/bytes/")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; n];
            crate::support::pattern(n as u64, 0, &mut body);
            Ok(Response::new(Full::new(Bytes::from(body))))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_httpx_speaks_http2_with_concurrent_streams_on_one_connection() {
    require_python("httpx, h2", "'httpx[http2]'").await;
    bounded(Duration::from_secs(30), async {
        let origin = together_origin().await;
        let proxy = intercepting(|_| {}).await;
        let admin = proxy.admin_addr.unwrap();

        let got = python(HTTPX_SCRIPT, proxy.addr, origin).await;
        assert_eq!(got["first"]["version"], "HTTP/2", "{got}");
        assert_eq!(got["first"]["status"], 200, "{got}");
        let want = pattern_sha256(5000, 5000)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        assert_eq!(got["first"]["sha256"], want.as_str(), "{got}");
        // The origin answered none of these before all eight were in
        // flight: concurrent streams, client to sluice to origin.
        let together = got["together"].as_array().expect("together");
        assert_eq!(together.len(), TOGETHER, "{got}");
        for (i, r) in together.iter().enumerate() {
            assert_eq!(r["version"], "HTTP/2", "{got}");
            assert_eq!(r["status"], 200, "{got}");
            assert_eq!(r["body"], i.to_string(), "{got}");
        }

        let rows = exchanges(admin, 1 + TOGETHER).await;
        assert_eq!(rows.len(), 1 + TOGETHER, "{rows:#?}");
        for row in &rows {
            let d = get_json(admin, &format!("/api/records/{}", row["id"])).await;
            assert_eq!(d["status"], 200, "{d}");
            assert_eq!(d["version"], "HTTP/2.0", "{d}");
            assert_intercepted(&d, "h2");
        }
        // All of them over one connection: one tunnel, one intercepted TLS.
        let tunnels = wait_records(admin, "kind=tunnel", 1).await;
        assert_eq!(tunnels.len(), 1, "{tunnels:#?}");
        assert!(rows.iter().all(|r| r["conn_id"] == tunnels[0]["conn_id"]));
    })
    .await;
}

/// Subresources of each kind on the browser's page.
const PER_KIND: usize = 10;

/// The page: an inline script that counts what loaded, then
/// [`PER_KIND`] stylesheets, images and scripts, each reporting its load
/// or its failure.
fn page_html() -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=utf-8><title>many</title><script>\n\
         const loaded = {css: [], img: [], js: []}, failed = [];\n\
         function ok(kind, n) { loaded[kind].push(n); }\n\
         function bad(what) { failed.push(what); }\n\
         window.report = () => ({loaded, failed,\n\
           protocols: performance.getEntriesByType('navigation')\n\
             .concat(performance.getEntriesByType('resource'))\n\
             .map(e => [new URL(e.name).pathname, e.nextHopProtocol])});\n\
         </script>\n",
    );
    for n in 0..PER_KIND {
        html.push_str(&format!(
            "<link rel=stylesheet href=\"/css/{n}.css\" onload=\"ok('css', {n})\" \
             onerror=\"bad('css {n}')\">\n"
        ));
    }
    html.push_str("</head><body>\n");
    for n in 0..PER_KIND {
        html.push_str(&format!(
            "<img src=\"/img/{n}.svg\" onload=\"ok('img', {n})\" onerror=\"bad('img {n}')\">\n\
             <script src=\"/js/{n}.js\" onerror=\"bad('js {n}')\"></script>\n"
        ));
    }
    html.push_str("</body></html>\n");
    html
}

/// The page's subresources, as paths.
fn subresources() -> Vec<String> {
    (0..PER_KIND)
        .flat_map(|n| {
            [
                format!("/css/{n}.css"),
                format!("/img/{n}.svg"),
                format!("/js/{n}.js"),
            ]
        })
        .collect()
}

async fn page_route(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let stem = |p: &str, ext: &str| {
        path.strip_prefix(p)
            .and_then(|n| n.strip_suffix(ext))
            .and_then(|n| n.parse::<usize>().ok())
    };
    let (content_type, body) = if path == "/page.html" {
        ("text/html; charset=utf-8", page_html())
    } else if let Some(n) = stem("/css/", ".css") {
        ("text/css", format!(".c{n} {{ margin: {n}px; }}\n"))
    } else if let Some(n) = stem("/img/", ".svg") {
        (
            "image/svg+xml",
            format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"4\">\
                 <rect width=\"{w}\" height=\"4\" fill=\"teal\"/></svg>",
                w = n + 1
            ),
        )
    } else if let Some(n) = stem("/js/", ".js") {
        ("text/javascript", format!("ok('js', {n});\n"))
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return Ok(r);
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert("content-type", content_type.parse().unwrap());
    Ok(r)
}

pub(crate) fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// A rule file in `dir` for a browser's proxy: the browser's own
/// background traffic (update checks, sign-in) goes through the proxy
/// too, so any dotted name is refused before sluice would look it up.
/// `localhost` and addresses pass.
pub(crate) fn browser_rules(dir: &Path) -> PathBuf {
    let rules = dir.join("rules.txt");
    std::fs::write(
        &rules,
        "/^(http:\\/\\/)?[^\\/:]+\\.[a-z]+[:\\/]/ block://403\n",
    )
    .unwrap();
    rules
}

/// A HOME for the browser whose NSS database (`.pki/nssdb`, where
/// Chromium on Linux looks) trusts sluice's team CA to identify sites.
pub(crate) async fn browser_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let db = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let db = format!("sql:{}", db.display());
    let mut create = client("certutil");
    create.args(["-d", &db, "-N", "--empty-password"]);
    run("certutil -N", create, Duration::from_secs(10)).await;
    let mut add = client("certutil");
    add.args([
        "-d",
        &db,
        "-A",
        "-t",
        "C,,",
        "-n",
        "sluice test team CA",
        "-i",
    ])
    .arg(&pki().sluice_ca_cert);
    run("certutil -A", add, Duration::from_secs(10)).await;
    home
}

/// Loads `url` in a fresh headless Chromium (its own profile) through
/// `proxy`, with `home` as HOME; the script's JSON result.
async fn load_in_browser(url: &str, proxy: SocketAddr, home: &Path) -> Value {
    let mut node = client("node");
    node.arg(ui_dir().join("intercept-page.mjs"))
        .current_dir(ui_dir())
        .env("HOME", home)
        .env("PAGE_URL", url)
        .env("SLUICE_PROXY", format!("http://{proxy}"))
        .env("CHROMIUM", CHROMIUM);
    let within = Duration::from_secs(30);
    let out = tokio::time::timeout(within, node.output())
        .await
        .unwrap_or_else(|_| panic!("the browser still running after {within:?}"))
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    serde_json::from_str(line.unwrap_or_default()).unwrap_or_else(|e| {
        panic!(
            "no JSON from intercept-page.mjs ({e})\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Asserts that the browser loaded the page and every subresource over h2.
fn assert_page_loaded(got: &Value) {
    assert_eq!(got["ok"], true, "{got:#}");
    assert_eq!(got["status"], 200, "{got:#}");
    let report = &got["report"];
    assert_eq!(report["failed"], serde_json::json!([]), "{report:#}");
    for kind in ["css", "img", "js"] {
        let n = report["loaded"][kind].as_array().map_or(0, Vec::len);
        assert_eq!(n, PER_KIND, "{kind}: {report:#}");
    }
    // The page and its subresources (the browser may add /favicon.ico).
    let protocols: Vec<&Value> = report["protocols"]
        .as_array()
        .expect("protocols")
        .iter()
        .filter(|p| p[0] != "/favicon.ico")
        .collect();
    assert_eq!(protocols.len(), 1 + 3 * PER_KIND, "{report:#}");
    for p in protocols {
        assert_eq!(p[1], "h2", "the browser's own word: {p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_loads_a_page_of_many_subresources_over_h2_through_interception() {
    require_browser("browser interception");
    bounded(Duration::from_secs(90), async {
        let origin =
            origin::https_with(pki().origin_config(OriginCert::Valid, BOTH), page_route).await;
        let dir = tempfile::tempdir().unwrap();
        let rules = browser_rules(dir.path());
        let proxy = intercepting(|c| c.rules.rules_file = Some(rules)).await;
        let admin = proxy.admin_addr.unwrap();
        let home = browser_home().await;
        let base = format!("https://localhost:{}", origin.port());
        let page = format!("{base}/page.html");

        let got = load_in_browser(&page, proxy.addr, home.path()).await;
        assert_page_loaded(&got);
        // The page and every subresource: decrypted records, h2 from the
        // browser to sluice and from sluice to the origin.
        let rows = exchanges(admin, 1 + 3 * PER_KIND).await;
        let mut paths = vec!["/page.html".to_string()];
        paths.extend(subresources());
        for path in &paths {
            let d = detail_of(admin, &rows, &format!("{base}{path}")).await;
            assert_eq!(d["status"], 200, "{d}");
            assert_intercepted(&d, "h2");
        }

        // A second browser, after the first has closed (with whatever
        // connections it opened and never used): still intercepted, still
        // trusted.
        let again = load_in_browser(&page, proxy.addr, home.path()).await;
        assert_page_loaded(&again);
        let rows = exchanges(admin, 2 * (1 + 3 * PER_KIND)).await;
        let pages = rows.iter().filter(|r| r["url"] == page.as_str()).count();
        assert_eq!(pages, 2, "{rows:#?}");
        // No tunnel of either browser was taken for a refusal.
        let authority = format!("localhost:{}", origin.port());
        let tunnels = wait_records(admin, "kind=tunnel", 2).await;
        for t in tunnels.iter().filter(|t| t["url"] == authority.as_str()) {
            let d = get_json(admin, &format!("/api/records/{}", t["id"])).await;
            assert_eq!(d["tls"]["state"], "intercepted", "{d}");
        }
    })
    .await;
}

/// Serves the files under `root` (GET, by path; nothing outside it).
async fn static_file(
    root: &'static Path,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let safe = segments
        .iter()
        .all(|s| !s.is_empty() && *s != "." && *s != "..");
    let file = safe.then(|| segments.iter().fold(root.to_path_buf(), |p, s| p.join(s)));
    let body = match file {
        Some(f) => tokio::fs::read(f).await.ok(),
        None => None,
    };
    Ok(match body {
        Some(b) => Response::new(Full::new(Bytes::from(b))),
        None => {
            let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
    })
}

/// `git ARGS` with `home` as HOME and no system configuration.
fn git(home: &Path, args: &[&str]) -> Command {
    let mut c = client("git");
    c.args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clones_a_dumb_http_repository_through_interception() {
    let have_git = std::process::Command::new("git")
        .arg("--version")
        .output()
        .is_ok();
    require(
        if have_git {
            vec![]
        } else {
            vec!["git (apt-get install git)".to_string()]
        },
        "git",
    );
    bounded(Duration::from_secs(60), async {
        // A bare repository with one commit, made servable as plain files.
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let www = dir.path().join("www");
        let work = dir.path().join("work");
        let within = Duration::from_secs(10);
        let bare = www.join("repo.git");
        let steps: [&[&str]; 2] = [
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
            &["init", "-q", "-b", "main", work.to_str().unwrap()],
        ];
        for args in steps {
            run("git init", git(&home, args), within).await;
        }
        std::fs::write(work.join("README"), "cloned through sluice\n").unwrap();
        let w = work.to_str().unwrap();
        let steps: [&[&str]; 3] = [
            &["-C", w, "add", "README"],
            &[
                "-C",
                w,
                "-c",
                "user.name=sluice test",
                "-c",
                "user.email=test@sluice.invalid",
                "commit",
                "-q",
                "-m",
                "the commit to clone",
            ],
            &["-C", w, "push", "-q", bare.to_str().unwrap(), "main"],
        ];
        for args in steps {
            run("git (making the repository)", git(&home, args), within).await;
        }
        let info = ["--git-dir", bare.to_str().unwrap(), "update-server-info"];
        run("git update-server-info", git(&home, &info), within).await;
        let head = run(
            "git rev-parse",
            git(&home, &["-C", w, "rev-parse", "HEAD"]),
            within,
        )
        .await;
        let commit = String::from_utf8_lossy(&head.stdout).trim().to_string();

        let root: &'static Path = Box::leak(www.into_boxed_path());
        let origin = origin::https_with(
            pki().origin_config(OriginCert::Valid, BOTH),
            move |req: Request<Incoming>| static_file(root, req),
        )
        .await;
        let proxy = intercepting(|_| {}).await;
        let admin = proxy.admin_addr.unwrap();

        let url = format!("https://localhost:{}/repo.git", origin.port());
        let clone = dir.path().join("clone");
        let mut cmd = git(&home, &["clone", "-q", &url, clone.to_str().unwrap()]);
        cmd.env("https_proxy", format!("http://{}", proxy.addr))
            .env("GIT_SSL_CAINFO", &pki().sluice_ca_cert);
        run("git clone", cmd, Duration::from_secs(20)).await;
        let c = clone.to_str().unwrap();
        let cloned = run(
            "git rev-parse",
            git(&home, &["-C", c, "rev-parse", "HEAD"]),
            within,
        )
        .await;
        assert_eq!(String::from_utf8_lossy(&cloned.stdout).trim(), commit);
        assert_eq!(
            std::fs::read_to_string(clone.join("README")).unwrap(),
            "cloned through sluice\n"
        );

        // git's requests, decrypted: the smart-HTTP probe of info/refs
        // (answered as a plain file, so git goes on as a dumb client),
        // HEAD, and the three loose objects (commit, tree, blob).
        let rows = exchanges(admin, 5).await;
        let refs = detail_of(
            admin,
            &rows,
            &format!("{url}/info/refs?service=git-upload-pack"),
        )
        .await;
        let head = detail_of(admin, &rows, &format!("{url}/HEAD")).await;
        for d in [&refs, &head] {
            assert_eq!(d["status"], 200, "{d}");
            assert_intercepted(d, "h2");
        }
        let objects: Vec<&Value> = rows
            .iter()
            .filter(|r| {
                r["url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with(&format!("{url}/objects/")))
            })
            .collect();
        assert_eq!(objects.len(), 3, "{rows:#?}");
        for o in objects {
            let d = get_json(admin, &format!("/api/records/{}", o["id"])).await;
            assert_eq!(d["status"], 200, "{d}");
            assert_intercepted(&d, "h2");
        }
    })
    .await;
}
