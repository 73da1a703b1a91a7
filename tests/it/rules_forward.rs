//! Tamper rules on the forward HTTP path, end to end: an origin, a sluice
//! with a rule file in front of it, real requests, and assertions on what
//! the client got, what the origin saw and what the record says.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use sluice::config::{DataDir, Recording};
use sluice::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::admin::{self, get_json};
use crate::support::client::{self, Client, Response};
use crate::support::{origin, proxy};

/// A proxy whose rule file holds `rules`; the tempdir holds the file (and
/// any body files) and must outlive the proxy.
async fn proxy_with(rules: &str, files: &[(&str, &[u8])]) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in files {
        std::fs::write(dir.path().join(name), data).unwrap();
    }
    let path = dir.path().join("rules.txt");
    std::fs::write(&path, rules).unwrap();
    let proxy = proxy::start(|c| {
        c.rules.rules_file = Some(path);
        c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        c.record = Recording {
            data_dir: DataDir::Memory,
            ..Recording::default()
        };
    })
    .await;
    (proxy, dir)
}

async fn get(proxy: &Proxy, url: &str, extra: &str) -> Response {
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    client::exchange(
        proxy.addr,
        format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").as_bytes(),
    )
    .await
    .unwrap()
}

async fn send(proxy: &Proxy, raw: String) -> Response {
    client::exchange(proxy.addr, raw.as_bytes()).await.unwrap()
}

#[tokio::test]
async fn upstream_mapping_keeps_the_host_header() {
    let origin = origin::http().await;
    let (proxy, _dir) = proxy_with(&format!("api.test {origin}\n"), &[]).await;
    let r = get(&proxy, "http://api.test/headers", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.starts_with("GET /headers HTTP/1.1"), "{text}");
    assert!(text.contains("host: api.test\n"), "{text}");
}

#[tokio::test]
async fn url_rewrite_changes_the_path_and_query() {
    let origin = origin::http().await;
    let (proxy, _dir) = proxy_with(&format!("api.test {origin} url:///headers?v=2\n"), &[]).await;
    let r = get(&proxy, "http://api.test/old/path", "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().starts_with("GET /headers?v=2 HTTP/1.1"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn redirects_answer_without_the_upstream() {
    let rules = "r1.test redirect301://http://new.test/a\nr2.test redirect://http://other.test/\n";
    let (proxy, _dir) = proxy_with(rules, &[]).await;
    let r = get(&proxy, "http://r1.test/x", "").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("http://new.test/a"));
    let r = get(&proxy, "http://r2.test/x", "").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://other.test/"));
}

#[tokio::test]
async fn request_header_edits_reach_the_origin() {
    let origin = origin::http().await;
    let rules = format!(
        "api.test {origin} reqHeaders://x-set=1 reqHeaders://+x-add=2 reqHeaders://-x-drop\n"
    );
    let (proxy, _dir) = proxy_with(&rules, &[]).await;
    let r = get(
        &proxy,
        "http://api.test/headers",
        "X-Set: 0\r\nX-Add: 1\r\nX-Drop: gone\r\n",
    )
    .await;
    let text = r.text();
    assert!(
        text.contains("x-set: 1\n") && !text.contains("x-set: 0"),
        "{text}"
    );
    assert!(
        text.contains("x-add: 1\n") && text.contains("x-add: 2\n"),
        "{text}"
    );
    assert!(!text.contains("x-drop"), "{text}");
}

#[tokio::test]
async fn response_headers_and_status() {
    let origin = origin::http().await;
    let rules =
        format!("api.test {origin} resHeaders://x-res=yes resHeaders://-via status://418\n");
    let (proxy, _dir) = proxy_with(&rules, &[]).await;
    let r = get(&proxy, "http://api.test/small", "").await;
    assert_eq!(r.status, 418);
    assert_eq!(r.header("x-res"), Some("yes"));
    assert_eq!(r.header("via"), None);
    assert_eq!(r.body.len(), 100);
}

#[tokio::test]
async fn mocks_text_json_and_body_file() {
    let rules = "t.test mock://200 body://\"hello mock\"\n\
                 j.test mock://201 body://\"{\\\"id\\\": 1}\"\n\
                 f.test mock://200 bodyFile://fixture.json\n";
    let (proxy, _dir) = proxy_with(rules, &[("fixture.json", b"[1,2,3]")]).await;
    let r = get(&proxy, "http://t.test/", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello mock");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    let r = get(&proxy, "http://j.test/", "").await;
    assert_eq!(r.status, 201);
    assert_eq!(r.text(), "{\"id\": 1}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = get(&proxy, "http://f.test/", "").await;
    assert_eq!(r.text(), "[1,2,3]");
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn body_replace() {
    let origin = origin::http().await;
    let (proxy, _dir) = proxy_with(&format!("api.test {origin} body://replaced\n"), &[]).await;
    let r = get(&proxy, "http://api.test/small", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "replaced");
    assert_eq!(r.header("content-length"), Some("8"));
}

/// An origin that answers every request with a gzip body.
async fn gzip_origin(text: &'static str) -> SocketAddr {
    origin::serve(move |_req| async move {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        let body = e.finish().unwrap();
        Ok::<_, Infallible>(
            hyper::Response::builder()
                .header("content-encoding", "gzip")
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
    })
    .await
}

#[tokio::test]
async fn body_sub_decodes_a_gzip_body() {
    let gz = gzip_origin("api at prod.example.com, again prod.example.com").await;
    let rules = format!("gz.test {gz} bodySub:///prod\\.example\\.com/staging.test/\n");
    let (proxy, _dir) = proxy_with(&rules, &[]).await;
    let r = get(&proxy, "http://gz.test/", "Accept-Encoding: gzip\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.text(), "api at staging.test, again staging.test");
}

#[tokio::test]
async fn request_and_response_delays() {
    let origin = origin::http().await;
    let rules = format!("d1.test {origin} delay://300ms\nd2.test {origin} resDelay://300ms\n");
    let (proxy, _dir) = proxy_with(&rules, &[]).await;
    for host in ["d1.test", "d2.test"] {
        let t = Instant::now();
        let r = get(&proxy, &format!("http://{host}/small"), "").await;
        assert_eq!(r.status, 200);
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{host}: {:?}",
            t.elapsed()
        );
    }
}

#[tokio::test]
async fn throttles_hold_the_rate() {
    let origin = origin::http().await;
    let rules =
        format!("down.test {origin} throttle://200KB/s\nup.test {origin} reqThrottle://200KB/s\n");
    let (proxy, _dir) = proxy_with(&rules, &[]).await;
    let t = Instant::now();
    let r = get(&proxy, "http://down.test/bytes/100000", "").await;
    assert_eq!(r.body.len(), 100_000);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );

    let body = vec![b'u'; 100_000];
    let t = Instant::now();
    let mut raw = format!(
        "POST http://up.test/echo HTTP/1.1\r\nHost: up.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let r = client::exchange(proxy.addr, &raw).await.unwrap();
    assert_eq!(r.body.len(), 100_000);
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn block_status_and_close() {
    let rules = "b.test block://403\nc.test block://close\n";
    let (proxy, _dir) = proxy_with(rules, &[]).await;
    let r = get(&proxy, "http://b.test/", "").await;
    assert_eq!(r.status, 403);
    assert!(r.text().contains("L1"), "{}", r.text());

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET http://c.test/ HTTP/1.1\r\nHost: c.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection stays open");
    assert!(
        got.is_empty(),
        "no answer: {:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test]
async fn cors_headers_and_preflight() {
    let origin = origin::http().await;
    let (proxy, _dir) = proxy_with(&format!("api.test {origin} cors://*\n"), &[]).await;
    let r = get(
        &proxy,
        "http://api.test/small",
        "Origin: http://app.test\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://app.test")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));

    let r = send(
        &proxy,
        "OPTIONS http://api.test/small HTTP/1.1\r\nHost: api.test\r\nOrigin: http://app.test\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: x-token\r\n\r\n".into(),
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://app.test")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(r.header("access-control-allow-headers"), Some("x-token"));
}

#[tokio::test]
async fn first_rule_wins_per_kind() {
    let origin = origin::http().await;
    let rules = format!(
        "p.test status://201\np.test status://202 resHeaders://x-second=1\np.test {origin}\n"
    );
    let (proxy, _dir) = proxy_with(&rules, &[]).await;
    let r = get(&proxy, "http://p.test/small", "").await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("x-second"), Some("1"));
}

#[tokio::test]
async fn method_and_client_conditions() {
    let rules = "m.test method:POST mock://200 body://post\n\
                 m.test mock://200 body://other\n\
                 c.test client:10.0.0.0/8 mock://200 body://ten\n\
                 c.test client:127.0.0.1 mock://200 body://loopback\n";
    let (proxy, _dir) = proxy_with(rules, &[]).await;
    assert_eq!(get(&proxy, "http://m.test/", "").await.text(), "other");
    let r = send(
        &proxy,
        "POST http://m.test/ HTTP/1.1\r\nHost: m.test\r\nContent-Length: 0\r\n\r\n".into(),
    )
    .await;
    assert_eq!(r.text(), "post");
    assert_eq!(get(&proxy, "http://c.test/", "").await.text(), "loopback");
}

#[tokio::test]
async fn records_list_the_rules_and_what_they_changed() {
    let rules = "# mocks\nmock.test mock://200 body://hi resHeaders://x-m=1\n";
    let (proxy, _dir) = proxy_with(rules, &[]).await;
    let admin = proxy.admin_addr.unwrap();
    let r = get(&proxy, "http://mock.test/", "").await;
    assert_eq!(r.text(), "hi");
    let deadline = Instant::now() + Duration::from_secs(10);
    let row = loop {
        let page = get_json(admin, "/api/records?limit=10").await;
        if let Some(row) = page["records"].as_array().and_then(|a| a.first().cloned()) {
            break row;
        }
        assert!(Instant::now() < deadline, "no record: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let d = get_json(admin, &format!("/api/records/{}", row["id"])).await;
    let text = d.to_string();
    assert!(text.contains("\"status\":200"), "{text}");
    let rules = row["rules"].as_array().expect("rules array");
    assert!(
        rules
            .iter()
            .any(|r| r["rule"] == "L2" && r["kind"] == "mock/body"),
        "{rules:?}"
    );
    assert!(
        rules
            .iter()
            .any(|r| r["rule"] == "L2" && r["action"] == "resHeaders://x-m=1"),
        "{rules:?}"
    );
    assert!(text.contains("mock://200"), "{text}");
}

/// Sends `GET url` on a kept-alive connection and returns the answer and
/// the connection (still open), so the inventory row can be read.
async fn get_keepalive(proxy: &Proxy, host: &str, path: &str) -> (Response, Client, SocketAddr) {
    let mut c = Client::connect(proxy.addr).await.unwrap();
    let local = c.local_addr();
    c.send(format!("GET http://{host}{path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), c.read_response())
        .await
        .expect("answer in time")
        .unwrap();
    (resp, c, local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_rules_count_what_the_client_gets_and_note_the_cap() {
    let origin = origin::http().await;
    let rules = format!(
        "small.test {origin} body://replaced\n\
         big.test {origin} bodySub:///never-there/x/\n"
    );
    let (proxy, _dir) = proxy_with(&rules, &[]).await;
    let admin = proxy.admin_addr.unwrap();

    // 100,000 bytes read from the origin, 8 sent: the connection counts 8.
    let (r, _conn, local) = get_keepalive(&proxy, "small.test", "/bytes/100000").await;
    assert_eq!(r.text(), "replaced");
    let row = admin::wait_row(admin, local, "http", |r| r["bytes_down"] == 8).await;
    assert_eq!(row["bytes_down"], 8, "{row}");

    // Past the 16 MiB rewrite cap the body passes untouched, counted once,
    // and the record says why the rule did not apply.
    let big = (16u64 << 20) + 100_000;
    let (r, _conn, local) = get_keepalive(&proxy, "big.test", &format!("/bytes/{big}")).await;
    assert_eq!(r.body.len() as u64, big);
    let row = admin::wait_row(admin, local, "http", |r| r["bytes_down"] == big).await;
    assert_eq!(row["bytes_down"], big, "{row}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = get_json(admin, "/api/records?host=big.test&limit=5").await;
        let note = page["records"][0]["rules"]
            .as_array()
            .and_then(|rules| rules.iter().find(|n| n["kind"] == "bodySub").cloned());
        if let Some(n) = note {
            let text = n["note"].as_str().unwrap_or_default();
            assert!(text.contains("limit"), "{n}");
            assert_eq!(n["rule"], "L2", "{n}");
            break;
        }
        assert!(Instant::now() < deadline, "no bodySub note: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rules_that_fail_at_run_time_answer_clearly() {
    // A mapping to a port nothing listens on, and a URL rewrite that
    // yields no valid URI: both answer with the rule named, never hang.
    let dead = origin::refusing();
    let rules = format!(
        "dead.test {dead}\n\
         /^http://bad\\.test/(.*)/ url://http://x.test:$1/\n"
    );
    let (proxy, _dir) = proxy_with(&rules, &[]).await;
    let r = get(&proxy, "http://dead.test/x", "").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("L1"), "{}", r.text());
    // An unusable rewritten authority is a 502 naming the rule (issue 11:
    // it was a 500), whether the URL does not parse or has no host.
    let r = get(&proxy, "http://bad.test/y", "").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("L2"), "{}", r.text());
    let r = get(&proxy, "http://bad.test/", "").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("L2"), "{}", r.text());
}
