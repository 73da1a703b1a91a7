//! HAR export over real sockets: traffic of every shape goes through the
//! real binary with recording on; `GET /api/har` must then be a document
//! that the HAR 1.2 JSON Schema (har-schema, tests/data) accepts and the
//! `har` crate reads, whose entries say what crossed: decoded gzip, base64
//! binary, the posted JSON, cookies, query strings, the refused upstream,
//! the tunnel, the port relay. `sluice har` and `sluice records` run as real processes
//! against the same instance, and a 2,000-record export streams without
//! the instance's memory growing with it.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::admin;
use crate::support::client::{self, BodyReader, Client};
use crate::support::origin;
use crate::support::proxy::{self, run_cli, SluiceProcess};

const GZIP_TEXT: &str = "hello from a gzip body; ";
const POST_JSON: &str = r#"{"name":"sluice","tags":["a","b"],"n":1}"#;
/// Bytes of each response in the big export.
const BIG_BODY: usize = 16 * 1024;
/// An admin token (sluice wants at least 16 characters).
const TOKEN: &str = "har-test-token-0123456789";

fn gzip_body() -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(GZIP_TEXT.repeat(50).as_bytes()).unwrap();
    e.finish().unwrap()
}

fn binary_body() -> Vec<u8> {
    (0..=255u8).collect()
}

/// The HAR 1.2 schema, compiled once (draft 6, as it declares; formats are
/// checked, which `serverIPAddress`'s ipv4/ipv6 `oneOf` needs).
fn schema() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/har-1.2.schema.json"
        );
        let text = std::fs::read_to_string(path).expect("schema file");
        let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
        jsonschema::draft6::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("schema compiles")
    })
}

/// Checks a HAR document with the schema and the `har` crate; returns it.
fn valid_har(body: &[u8]) -> Value {
    let doc: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "HAR is not JSON ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(2000)])
        )
    });
    let errors: Vec<String> = schema()
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .take(10)
        .collect();
    assert!(errors.is_empty(), "HAR fails the schema: {errors:#?}");
    let parsed = har::from_slice(body).unwrap_or_else(|e| panic!("har crate: {e:?}"));
    assert_eq!(parsed.version(), har::HarVersion::V1_2);
    doc
}

/// An origin with the routes the export is checked against.
async fn har_origin() -> SocketAddr {
    origin::serve(route).await
}

async fn route(
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let resp = hyper::Response::builder();
    let resp = match path.as_str() {
        "/cookies" => resp
            .header("content-type", "text/plain; charset=utf-8")
            .header("set-cookie", "sid=abc123; Path=/; HttpOnly")
            .header("set-cookie", "seen=1; Max-Age=3600; Secure")
            .body(Full::new(Bytes::from("cookies seen"))),
        "/post" => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            resp.header("content-type", "application/json")
                .body(Full::new(Bytes::from(format!(
                    r#"{{"received":{}}}"#,
                    body.len()
                ))))
        }
        "/gzip" => resp
            .header("content-type", "text/plain")
            .header("content-encoding", "gzip")
            .body(Full::new(Bytes::from(gzip_body()))),
        "/binary" => resp
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(binary_body()))),
        "/redirect" => resp
            .status(302)
            .header("location", "/cookies")
            .body(Full::new(Bytes::new())),
        "/big" => resp
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(vec![0xA5u8; BIG_BODY]))),
        _ => resp
            .status(404)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from("not here"))),
    };
    Ok(resp.unwrap())
}

/// Starts the binary recording into memory.
async fn sluice(extra: &[&str]) -> (SluiceProcess, SocketAddr) {
    let mut args = vec!["--data-dir", ":memory:"];
    args.extend_from_slice(extra);
    let p = proxy::spawn(&args).await;
    let a = p.admin.expect("admin server runs");
    (p, a)
}

/// Waits until `GET /api/records` lists at least `n` records.
async fn wait_records(admin_addr: SocketAddr, n: usize) -> Vec<Value> {
    admin::wait_records(admin_addr, "", n).await
}

/// The entry whose request URL ends with `suffix` (exactly one).
fn entry<'a>(doc: &'a Value, suffix: &str) -> &'a Value {
    let hits: Vec<&Value> = doc["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["request"]["url"].as_str().unwrap().ends_with(suffix))
        .collect();
    assert_eq!(hits.len(), 1, "entries ending in {suffix}: {hits:#?}");
    hits[0]
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|h| {
            h["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

/// HAR timing rules: phases are -1 or at least 0 (send, wait and receive
/// at least 0), and `time` is the sum of those that apply.
fn check_timings(e: &Value) {
    let t = &e["timings"];
    let mut sum = 0.0;
    for phase in [
        "blocked", "dns", "connect", "ssl", "send", "wait", "receive",
    ] {
        let v = t[phase]
            .as_f64()
            .unwrap_or_else(|| panic!("{phase} missing: {t}"));
        let must_apply = matches!(phase, "send" | "wait" | "receive");
        assert!(
            v >= 0.0 || (v == -1.0 && !must_apply),
            "{phase} = {v} in {t}"
        );
        if v >= 0.0 {
            sum += v;
        }
    }
    let time = e["time"].as_f64().unwrap();
    assert!((time - sum).abs() < 1e-6, "time {time} != sum {sum} of {t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_valid_har_with_what_crossed() {
    let origin = har_origin().await;
    let echo = origin::echo().await;
    let relay = format!("127.0.0.1:0={echo}");
    let (p, admin_addr) = sluice(&["--relay", &relay]).await;
    let proxy = p.addr;

    let r = client::exchange(
        proxy,
        format!(
            "GET http://{origin}/cookies?a=1&b=x+y&c=%E2%9C%93 HTTP/1.1\r\nHost: {origin}\r\n\
             Cookie: theme=dark; lang=en\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let r = client::exchange(
        proxy,
        format!(
            "POST http://{origin}/post HTTP/1.1\r\nHost: {origin}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{POST_JSON}",
            POST_JSON.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    for (path, status) in [
        ("/gzip", 200),
        ("/binary", 200),
        ("/missing", 404),
        ("/redirect", 302),
    ] {
        let r = client::get_once(proxy, origin, path).await.unwrap();
        assert_eq!(r.status, status, "{path}");
    }
    let dead = origin::refusing();
    let r = client::get_once(proxy, dead, "/refused").await.unwrap();
    assert_eq!(r.status, 502);
    let mut tunnel = client::connect_tunnel(proxy, echo).await.unwrap();
    tunnel.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(3), tunnel.read_exact(&mut back))
        .await
        .expect("echo through the tunnel")
        .unwrap();
    drop(tunnel);
    let mut relayed = TcpStream::connect(p.relay_addrs[0]).await.unwrap();
    relayed.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(3), relayed.read_exact(&mut back))
        .await
        .expect("echo through the relay")
        .unwrap();
    drop(relayed);

    wait_records(admin_addr, 9).await;

    let resp = admin::get(admin_addr, "/api/har").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let disposition = resp.header("content-disposition").unwrap_or_default();
    assert!(
        disposition.starts_with("attachment; filename=\"sluice-")
            && disposition.ends_with(".har\""),
        "{disposition}"
    );
    let doc = valid_har(&resp.body);
    let log = &doc["log"];
    assert_eq!(log["version"], "1.2");
    assert_eq!(log["creator"]["name"], "sluice");
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 9, "{doc:#}");
    let ids: Vec<u64> = entries.iter().map(|e| e["_id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first: {ids:?}");
    for e in entries {
        check_timings(e);
        let started = e["startedDateTime"].as_str().unwrap();
        assert!(started.ends_with('Z') && started.contains('.'), "{started}");
        assert_eq!(e["request"]["headersSize"], -1);
        assert!(e["connection"].as_str().is_some_and(|c| !c.is_empty()));
    }

    // GET with a query string and cookies, answered with Set-Cookie.
    let e = entry(&doc, "/cookies?a=1&b=x+y&c=%E2%9C%93");
    let req = &e["request"];
    assert_eq!(req["method"], "GET");
    assert_eq!(req["httpVersion"], "HTTP/1.1");
    assert_eq!(
        req["queryString"],
        serde_json::json!([
            {"name": "a", "value": "1"},
            {"name": "b", "value": "x y"},
            {"name": "c", "value": "✓"}
        ])
    );
    assert_eq!(
        req["cookies"],
        serde_json::json!([
            {"name": "theme", "value": "dark"},
            {"name": "lang", "value": "en"}
        ])
    );
    assert_eq!(
        named(&req["headers"], "cookie")["value"],
        "theme=dark; lang=en"
    );
    assert!(req.get("postData").is_none());
    let resp = &e["response"];
    assert_eq!(resp["status"], 200);
    assert_eq!(resp["statusText"], "OK");
    assert_eq!(resp["content"]["text"], "cookies seen");
    assert_eq!(resp["content"]["mimeType"], "text/plain; charset=utf-8");
    assert_eq!(resp["content"]["size"], 12);
    assert_eq!(resp["bodySize"], 12);
    let sid = named(&resp["cookies"], "sid");
    assert_eq!(
        (
            &sid["value"],
            &sid["path"],
            &sid["httpOnly"],
            &sid["secure"]
        ),
        (
            &Value::from("abc123"),
            &Value::from("/"),
            &Value::from(true),
            &Value::from(false)
        )
    );
    let seen = named(&resp["cookies"], "seen");
    assert_eq!(seen["secure"], true);
    assert!(seen["expires"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(e["serverIPAddress"], "127.0.0.1");
    assert_eq!(e["_kind"], "http");
    assert!(e.get("_error").is_none(), "{e}");

    // POST with a JSON body.
    let e = entry(&doc, "/post");
    let req = &e["request"];
    assert_eq!(req["method"], "POST");
    assert_eq!(req["bodySize"], POST_JSON.len());
    assert_eq!(req["postData"]["mimeType"], "application/json");
    assert_eq!(req["postData"]["text"], POST_JSON);
    assert!(req["postData"].get("_encoding").is_none());
    assert_eq!(
        e["response"]["content"]["text"],
        format!(r#"{{"received":{}}}"#, POST_JSON.len())
    );

    // gzip is decoded, with the bytes it saved.
    let e = entry(&doc, "/gzip");
    let content = &e["response"]["content"];
    let plain = GZIP_TEXT.repeat(50);
    assert_eq!(content["text"], plain.as_str());
    assert!(content.get("encoding").is_none());
    assert_eq!(content["size"], plain.len());
    let wire = gzip_body().len();
    assert_eq!(e["response"]["bodySize"], wire);
    assert_eq!(content["compression"], plain.len() as i64 - wire as i64);
    assert_eq!(
        named(&e["response"]["headers"], "content-encoding")["value"],
        "gzip"
    );

    // Binary is base64.
    let e = entry(&doc, "/binary");
    let content = &e["response"]["content"];
    assert_eq!(content["encoding"], "base64");
    assert_eq!(content["mimeType"], "application/octet-stream");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(content["text"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, binary_body());
    assert_eq!(content["size"], 256);

    // 404 and a redirect.
    let e = entry(&doc, "/missing");
    assert_eq!(e["response"]["status"], 404);
    assert_eq!(e["response"]["statusText"], "Not Found");
    assert_eq!(e["response"]["content"]["text"], "not here");
    let e = entry(&doc, "/redirect");
    assert_eq!(e["response"]["status"], 302);
    assert_eq!(e["response"]["redirectURL"], "/cookies");

    // The refused upstream: sluice's own 502, with the cause.
    let e = entry(&doc, &format!("{dead}/refused"));
    assert_eq!(e["response"]["status"], 502);
    assert_eq!(e["response"]["statusText"], "Bad Gateway");
    let error = e["_error"].as_str().expect("_error on the refused request");
    assert!(error.contains("refused"), "{error}");

    // The tunnel, as a CONNECT entry with a URL viewers parse.
    let e = entry(&doc, &format!("https://{echo}"));
    assert_eq!(e["request"]["method"], "CONNECT");
    assert_eq!(e["_kind"], "tunnel");
    assert_eq!(e["response"]["status"], 200);
    assert_eq!(e["request"]["bodySize"], 4);
    assert_eq!(e["response"]["bodySize"], 4);

    // The port relay, as a RELAY entry with a tcp:// URL and no status.
    let e = entry(&doc, &format!("tcp://{echo}"));
    assert_eq!(e["request"]["method"], "RELAY");
    assert_eq!(e["_kind"], "relay");
    assert_eq!(e["response"]["status"], 0);
    assert_eq!(e["request"]["bodySize"], 5);
    assert_eq!(e["response"]["bodySize"], 5);

    // Filters select, bad ones are refused.
    let only_404 = admin::get(admin_addr, "/api/har?status=404").await;
    let filtered = valid_har(&only_404.body);
    let statuses: Vec<&Value> = filtered["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["response"]["status"])
        .collect();
    assert_eq!(statuses, [&Value::from(404)]);
    let bad = admin::get(admin_addr, "/api/har?status=9xx").await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    let msg: Value = serde_json::from_slice(&bad.body).unwrap();
    assert!(msg["error"].as_str().unwrap().contains("status"), "{msg}");
    let unknown = admin::get(admin_addr, "/api/har?hots=x").await;
    assert_eq!(unknown.status, 400);

    // `sluice har` streams the same document to stdout.
    let a = admin_addr.to_string();
    let run = run_cli(
        &["har", "--since", "10m", "--admin", &a],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let cli_doc = valid_har(run.stdout.as_bytes());
    assert_eq!(cli_doc["log"]["entries"], doc["log"]["entries"]);
    let run = run_cli(
        &["har", "--method", "post", "--url", "/po", "--admin", &a],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let posts = valid_har(run.stdout.as_bytes());
    assert_eq!(posts["log"]["entries"].as_array().unwrap().len(), 1);
    let run = run_cli(&["har", "--error", "--admin", &a], Duration::from_secs(10)).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let failed = valid_har(run.stdout.as_bytes());
    assert!(failed["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["response"]["status"] == 502));

    // `sluice records` prints a row per record.
    let run = run_cli(&["records", "--admin", &a], Duration::from_secs(10)).await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1 + 9, "{}", run.stdout);
    assert!(lines[0].starts_with("TIME(UTC)"), "{}", run.stdout);
    for needle in [
        "/gzip", "/binary", "/post", "CONNECT", "404", "502", "refused",
    ] {
        assert!(run.stdout.contains(needle), "{needle} in:\n{}", run.stdout);
    }
    let run = run_cli(
        &["records", "--limit", "3", "--status", "2xx", "--admin", &a],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 1 + 3, "{}", run.stdout);
    let run = run_cli(
        &["records", "--json", "--host", "127.0.0.1", "--admin", &a],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    for line in run.stdout.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        assert_eq!(row["host"], "127.0.0.1");
    }

    // An error answer exits 1 with its message; no instance exits 2.
    let run = run_cli(
        &["har", "--status", "9xx", "--admin", &a],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("status"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let nowhere = origin::refusing().to_string();
    for cmd in ["har", "records"] {
        let run = run_cli(&[cmd, "--admin", &nowhere], Duration::from_secs(10)).await;
        assert_eq!(run.code, Some(2), "{cmd}: {run:?}");
        assert!(run.stderr.contains("cannot reach"), "{cmd}: {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_off_is_503_and_tokens_are_sent() {
    let (_off, off_admin) = sluice(&["--record", "off"]).await;
    let r = admin::get(off_admin, "/api/har").await;
    assert_eq!(r.status, 503, "{}", r.text());
    let run = run_cli(
        &["har", "--admin", &off_admin.to_string()],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("recording is off"), "{}", run.stderr);

    let (_p, a) = sluice(&["--admin-token", TOKEN]).await;
    let a = a.to_string();
    let run = run_cli(&["har", "--admin", &a], Duration::from_secs(10)).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    let run = run_cli(
        &["har", "--admin", &a, "--token", TOKEN],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let doc = valid_har(run.stdout.as_bytes());
    assert_eq!(doc["log"]["entries"], serde_json::json!([]));
    let run = run_cli(
        &["records", "--admin", &a, "--admin-token", TOKEN],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout.lines().count(), 1, "header only: {}", run.stdout);
}

/// 2,000 records of 16 KiB bodies (a ~45 MB export once base64'd) stream
/// out in pieces: the instance's resident memory stays far below the
/// document's size while it is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_export_streams() {
    const N: usize = 2000;
    let origin = har_origin().await;
    let (p, admin_addr) = sluice(&[]).await;
    let mut c = Client::connect(p.addr).await.unwrap();
    // Pipelined in batches: one keep-alive connection, few round trips.
    let request = format!("GET http://{origin}/big HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    for _ in 0..N / 100 {
        c.send(request.repeat(100).as_bytes()).await.unwrap();
        for _ in 0..100 {
            let r = c.read_response().await.unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.body.len(), BIG_BODY);
        }
    }
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = admin::metrics(admin_addr).await;
        if m.get("sluice_records", &[]).unwrap_or(0.0) >= N as f64 {
            break;
        }
        assert!(Instant::now() < deadline, "records not stored in 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let before_kib = p.rss_kib();
    let mut s = TcpStream::connect(admin_addr).await.unwrap();
    let export = admin::with_token(admin_addr, admin::req("GET", "/api/har"));
    s.write_all(&export.to_bytes()).await.unwrap();
    let mut r = BufReader::new(s);
    let read = async {
        let head = client::read_head(&mut r).await.unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("transfer-encoding"), Some("chunked"));
        let mut body = BodyReader::for_head(&head);
        let mut doc = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut peak_kib = before_kib;
        let mut sampled_at = 0;
        loop {
            let n = body.read(&mut r, &mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            doc.extend_from_slice(&buf[..n]);
            if doc.len() - sampled_at >= 1024 * 1024 {
                sampled_at = doc.len();
                peak_kib = peak_kib.max(p.rss_kib());
            }
        }
        (doc, peak_kib)
    };
    let (doc, peak_kib) = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("export read within 20 s");
    let base64_bytes = N * BIG_BODY * 4 / 3;
    assert!(doc.len() > base64_bytes, "{} bytes", doc.len());
    let grew_kib = peak_kib.saturating_sub(before_kib);
    assert!(
        grew_kib < (base64_bytes / 1024 / 2) as u64,
        "RSS grew {grew_kib} KiB exporting a {} KiB document",
        doc.len() / 1024
    );
    let doc = valid_har(&doc);
    let entries = doc["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), N);
    assert!(entries
        .iter()
        .all(|e| e["response"]["content"]["encoding"] == "base64"
            && e["response"]["content"]["size"] == BIG_BODY));
}

/// The merged schema is not vacuous: its `$ref`s resolve into the entry
/// rules, which a broken entry fails.
#[test]
fn schema_rejects_broken_entries() {
    let ok = serde_json::json!({"log": {"version": "1.2", "creator": {"name": "x", "version": "1"}, "entries": []}});
    assert!(schema().is_valid(&ok));
    let mut bad = ok.clone();
    bad["log"]["entries"] = serde_json::json!([{
        "startedDateTime": "2026-11-26T10:00:00.000Z", "time": 1,
        "request": {"method": "GET", "url": "http://h/", "httpVersion": "HTTP/1.1",
            "cookies": [], "headers": [], "queryString": [], "headersSize": -1, "bodySize": 0},
        "response": {"status": "200", "statusText": "OK", "httpVersion": "HTTP/1.1",
            "cookies": [], "headers": [], "content": {"size": 0, "mimeType": "x"},
            "redirectURL": "", "headersSize": -1, "bodySize": 0},
        "cache": {}, "timings": {"send": 0, "wait": 0, "receive": 1},
        "serverIPAddress": "not an address"
    }]);
    let errors: Vec<String> = schema().iter_errors(&bad).map(|e| e.to_string()).collect();
    assert!(errors.iter().any(|e| e.contains("\"200\"")), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.contains("not an address")),
        "{errors:?}"
    );
}
