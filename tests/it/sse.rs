//! Server-sent events through sluice: a real hyper origin streaming
//! `text/event-stream` as the test tells it to, curl (and a raw client
//! that vanishes) through the forward path, and what sluice records: the
//! record at the response head, each event a message while the stream is
//! still open (event, id, retry; any line ending; split anywhere), the
//! body relayed byte for byte, the end, the budget, HAR.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sluice::config::{DataDir, Recording};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::support::admin::{get_json, wait_records};
use crate::support::{bounded, eventually, origin, proxy};

type Chunk = Result<Frame<Bytes>, Infallible>;

/// An origin answering one request with an event stream whose body is
/// what the test sends on the returned channel (ended when it drops).
async fn sse_origin() -> (SocketAddr, mpsc::Sender<Chunk>) {
    sse_origin_coded(None).await
}

/// [`sse_origin`] whose answer says `Content-Encoding: coding` (the test
/// sends the compressed bytes).
async fn sse_origin_coded(coding: Option<&'static str>) -> (SocketAddr, mpsc::Sender<Chunk>) {
    let (tx, rx) = mpsc::channel::<Chunk>(16);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let addr = origin::raw(move |stream| {
        let rx = rx.clone();
        async move {
            let svc = hyper::service::service_fn(move |_req| {
                let body = rx
                    .lock()
                    .unwrap()
                    .take()
                    .map(|rx| StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)));
                async move {
                    let mut resp = hyper::Response::builder()
                        .header("content-type", "text/event-stream")
                        .header("cache-control", "no-cache");
                    if let Some(c) = coding {
                        resp = resp.header("content-encoding", c);
                    }
                    let resp = resp.body(body.expect("one stream per origin")).unwrap();
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
    .await;
    (addr, tx)
}

async fn send(tx: &mpsc::Sender<Chunk>, piece: &str) {
    send_bytes(tx, piece.as_bytes()).await
}

async fn send_bytes(tx: &mpsc::Sender<Chunk>, piece: &[u8]) {
    tx.send(Ok(Frame::data(Bytes::from(piece.to_vec()))))
        .await
        .expect("the origin's body is still being read");
}

async fn recording_proxy(tweak: impl FnOnce(&mut Recording)) -> sluice::Proxy {
    proxy::start(|c| {
        c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        c.record = Recording {
            data_dir: DataDir::Memory,
            ..Recording::default()
        };
        tweak(&mut c.record)
    })
    .await
}

/// Polls the record's stored messages until there are `n`.
async fn wait_messages(admin: SocketAddr, id: u64, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = get_json(admin, &format!("/api/records/{id}/messages")).await;
        let msgs = page["messages"].as_array().cloned().unwrap_or_default();
        if msgs.len() >= n {
            return msgs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "record {id} has {} of {n} messages: {page}",
            msgs.len()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Polls the record until its end is recorded.
async fn wait_end(admin: SocketAddr, id: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let d = get_json(admin, &format!("/api/records/{id}")).await;
        if !d["close_reason"].is_null() {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "record {id} never ended: {d}"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// curl reading `http://origin/events` through the proxy, its output
/// piped (the body as it crossed: no `--compressed`).
fn curl_events(
    proxy: SocketAddr,
    origin: SocketAddr,
) -> (tokio::process::Child, tokio::process::ChildStdout) {
    let mut curl = tokio::process::Command::new("curl")
        .args(["-sSN", "--max-time", "30", "-x"])
        .arg(format!("http://{proxy}"))
        .arg(format!("http://{origin}/events"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl runs");
    let out = curl.stdout.take().expect("curl's stdout is piped");
    (curl, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reads_an_event_stream_recorded_event_by_event_while_open() {
    bounded(Duration::from_secs(40), async {
        let (origin, tx) = sse_origin().await;
        let proxy = recording_proxy(|_| {}).await;
        let admin = proxy.admin_addr.unwrap();
        let (mut curl, mut out) = curl_events(proxy.addr, origin);
        let mut seen = Vec::new();
        let mut sent = String::new();

        let first = "\u{feff}retry: 2000\nevent: greet\nid: 1\ndata: hello\n\n";
        send(&tx, first).await;
        sent.push_str(first);
        while !String::from_utf8_lossy(&seen).contains("data: hello") {
            let mut b = [0u8; 4096];
            let n = out.read(&mut b).await.unwrap();
            assert!(n > 0, "curl's output ended early");
            seen.extend_from_slice(&b[..n]);
        }
        let rows = wait_records(admin, "", 1).await;
        let id = rows[0]["id"].as_u64().unwrap();
        assert_eq!(rows[0]["status"], 200);
        // Recorded while the stream is open: the record is there, not ended.
        let msgs = wait_messages(admin, id, 1).await;
        assert_eq!(msgs[0]["opcode"], "event", "{msgs:?}");
        assert_eq!(msgs[0]["direction"], "receive");
        assert_eq!(msgs[0]["text"], "hello");
        assert_eq!(
            msgs[0]["event"],
            serde_json::json!({"event": "greet", "id": "1", "retry": 2000})
        );
        let open = get_json(admin, &format!("/api/records/{id}")).await;
        assert!(open["close_reason"].is_null(), "{open}");

        // CRLF, a comment, an event split inside a field, a bare CR.
        for piece in [
            "data: {\"a\":1}\r\ndata: second line\r\n\r\n",
            ": keepalive\n\n",
            "event: up",
            "date\ndata: spl",
            "it\r\rdata: last\n",
            "\n",
        ] {
            send(&tx, piece).await;
            sent.push_str(piece);
        }
        drop(tx);
        let mut rest = Vec::new();
        out.read_to_end(&mut rest).await.unwrap();
        seen.extend_from_slice(&rest);
        assert!(curl.wait().await.unwrap().success());
        assert_eq!(
            String::from_utf8_lossy(&seen),
            sent,
            "the body is relayed unchanged"
        );

        let msgs = wait_messages(admin, id, 4).await;
        let texts: Vec<&str> = msgs.iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["hello", "{\"a\":1}\nsecond line", "split", "last"]);
        assert_eq!(
            msgs[2]["event"],
            serde_json::json!({"event": "update", "id": "1"})
        );
        assert_eq!(msgs[1]["size"], 19);

        let d = wait_end(admin, id).await;
        assert_eq!(d["close_reason"], "eof", "{d}");
        assert!(d["error"].is_null(), "{d}");
        assert_eq!(d["messages"]["seen"], 4, "{d}");
        assert_eq!(d["messages"]["stored"], 4, "{d}");
        assert_eq!(d["resp_size"].as_u64(), Some(sent.len() as u64), "{d}");

        // HAR: the events beside the entry.
        let har = get_json(admin, "/api/har").await;
        let entry = har["log"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["_id"].as_u64() == Some(id))
            .cloned()
            .unwrap();
        let events = entry["_eventStreamMessages"].as_array().unwrap();
        assert_eq!(events.len(), 4, "{entry}");
        assert_eq!(events[0]["eventName"], "greet");
        assert_eq!(events[3]["data"], "last");
        assert!(events[0]["time"].as_f64().unwrap() > 1.7e9);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_event_stream_is_relayed_compressed_and_recorded_event_by_event() {
    use flate2::write::GzEncoder;
    use std::io::Write as _;
    bounded(Duration::from_secs(40), async {
        let (origin, tx) = sse_origin_coded(Some("gzip")).await;
        let proxy = recording_proxy(|_| {}).await;
        let admin = proxy.admin_addr.unwrap();
        // curl without --compressed: it writes the body as it crossed.
        let (mut curl, mut out) = curl_events(proxy.addr, origin);
        // The server flushes its compressor after each event, as an SSE
        // server behind gzip must for events to arrive on time.
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut sent = Vec::new();
        let event = |gz: &mut GzEncoder<Vec<u8>>, text: &str| {
            gz.write_all(text.as_bytes()).unwrap();
            gz.flush().unwrap();
            std::mem::take(gz.get_mut())
        };
        let first = event(&mut gz, "id: 1\nevent: tick\ndata: {\"n\": 1}\n\n");
        send_bytes(&tx, &first).await;
        sent.extend_from_slice(&first);
        let rows = wait_records(admin, "", 1).await;
        let id = rows[0]["id"].as_u64().unwrap();
        // Decoded while the stream is open, before any gzip trailer.
        let msgs = wait_messages(admin, id, 1).await;
        assert_eq!(msgs[0]["opcode"], "event", "{msgs:?}");
        assert_eq!(msgs[0]["text"], "{\"n\": 1}");
        assert_eq!(msgs[0]["compressed"], true);
        assert_eq!(
            msgs[0]["event"],
            serde_json::json!({"event": "tick", "id": "1"})
        );

        // The second event split across two pieces, then bytes that are
        // not gzip: the relay goes on, the record says where reading stopped.
        let second = event(&mut gz, "data: two\n\n");
        let (a, b) = second.split_at(second.len() / 2);
        for piece in [a, b] {
            send_bytes(&tx, piece).await;
            sent.extend_from_slice(piece);
        }
        wait_messages(admin, id, 2).await;
        let broken_at = sent.len();
        let junk = b"\xff\xff\xff\xff not deflate data at all";
        send_bytes(&tx, junk).await;
        sent.extend_from_slice(junk);
        drop(tx);
        let mut seen = Vec::new();
        out.read_to_end(&mut seen).await.unwrap();
        assert!(curl.wait().await.unwrap().success());
        assert_eq!(seen, sent, "the compressed body is relayed unchanged");

        let d = wait_end(admin, id).await;
        assert_eq!(d["close_reason"], "eof", "{d}");
        assert_eq!(d["messages"]["seen"], 2, "{d}");
        assert_eq!(d["resp_size"].as_u64(), Some(sent.len() as u64), "{d}");
        let note = d["messages"]["unstored"].as_str().unwrap_or_default();
        assert!(
            note.contains(&format!("after body byte {broken_at}")) && note.contains("gzip"),
            "{d}"
        );
        let texts: Vec<Value> = wait_messages(admin, id, 2)
            .await
            .iter()
            .map(|m| m["text"].clone())
            .collect();
        assert_eq!(texts, ["{\"n\": 1}", "two"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_streams_past_the_decoder_budget_are_counted_not_read() {
    use std::io::Write as _;
    bounded(Duration::from_secs(40), async {
        // Each br stream reserves its 16 MiB window from sluice's 64 MiB
        // decoder budget for its life: three fit, the fourth does not.
        let proxy = recording_proxy(|_| {}).await;
        let admin = proxy.admin_addr.unwrap();
        let mut streams = Vec::new();
        for i in 0..4 {
            let (origin, tx) = sse_origin_coded(Some("br")).await;
            let curl = tokio::process::Command::new("curl")
                .args(["-sSN", "--max-time", "30", "-o", "/dev/null", "-x"])
                .arg(format!("http://{}", proxy.addr))
                .arg(format!("http://{origin}/events/{i}"))
                .kill_on_drop(true)
                .spawn()
                .expect("curl runs");
            // In order: the record of each is written at its head.
            wait_records(admin, "", i + 1).await;
            streams.push((tx, curl));
        }
        let mut br = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
        br.write_all(b"data: squeezed\n\n").unwrap();
        br.flush().unwrap();
        let event = br.get_ref().clone();
        for (tx, _) in &streams {
            send_bytes(tx, &event).await;
        }
        let rows = wait_records(admin, "", 4).await;
        let id_of = |i: usize| {
            rows.iter()
                .find(|r| {
                    r["url"]
                        .as_str()
                        .is_some_and(|u| u.ends_with(&format!("/events/{i}")))
                })
                .and_then(|r| r["id"].as_u64())
                .unwrap_or_else(|| panic!("no record of stream {i}: {rows:#?}"))
        };
        for i in 0..3 {
            let msgs = wait_messages(admin, id_of(i), 1).await;
            assert_eq!(msgs[0]["text"], "squeezed", "{msgs:?}");
        }
        for (tx, mut curl) in streams {
            drop(tx);
            assert!(curl.wait().await.unwrap().success());
        }
        let d = wait_end(admin, id_of(3)).await;
        assert_eq!(d["close_reason"], "eof", "{d}");
        assert_eq!(d["messages"]["seen"], 0, "{d}");
        assert_eq!(d["resp_size"].as_u64(), Some(event.len() as u64), "{d}");
        let note = d["messages"]["unstored"].as_str().unwrap_or_default();
        assert!(
            note.contains("events not read") && note.contains("64 MiB"),
            "{d}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanishing_reader_past_the_budget_ends_the_record_and_the_upstream() {
    bounded(Duration::from_secs(40), async {
        let (origin, tx) = sse_origin().await;
        let proxy = recording_proxy(|r| r.connection_messages = 2).await;
        let admin = proxy.admin_addr.unwrap();
        let mut c = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        c.write_all(
            format!("GET http://{origin}/feed HTTP/1.1\r\nHost: {origin}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        for i in 0..5 {
            send(&tx, &format!("id: {i}\ndata: tick {i}\n\n")).await;
        }
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("tick 4") {
            let mut b = [0u8; 4096];
            let n = c.read(&mut b).await.unwrap();
            assert!(n > 0, "the stream ended early");
            seen.extend_from_slice(&b[..n]);
        }
        let id = wait_records(admin, "", 1).await[0]["id"].as_u64().unwrap();
        drop(c);
        // A client's FIN alone may be a half-close; the origin's next
        // writes (keepalive comments, as SSE servers send) find it gone.
        let keepalive = async {
            while tx
                .send(Ok(Frame::data(Bytes::from_static(b": ping\n\n"))))
                .await
                .is_ok()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        bounded(Duration::from_secs(10), keepalive).await;

        let d = wait_end(admin, id).await;
        assert_eq!(d["close_reason"], "cut short", "{d}");
        assert!(d["error"].as_str().unwrap().contains("cut short"), "{d}");
        assert_eq!(d["messages"]["seen"], 5, "{d}");
        assert_eq!(d["messages"]["stored"], 2, "{d}");
        assert!(
            d["messages"]["unstored"]
                .as_str()
                .unwrap()
                .contains("budget"),
            "{d}"
        );
        let msgs = wait_messages(admin, id, 2).await;
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[1]["text"], "tick 1");
        // The upstream leg went with the client (the keepalive loop above
        // ended when the origin's body was no longer read).
        assert!(
            eventually(Duration::from_secs(5), || proxy.registry.live_total() == 0).await,
            "both legs released"
        );
    })
    .await;
}
