//! WebSocket through sluice: a real WebSocket origin (tokio-tungstenite,
//! echoing, plain or over TLS; Python's `websockets` with
//! permessage-deflate), real clients (tokio-tungstenite over a
//! hand-written absolute-form upgrade, inside a CONNECT tunnel and inside
//! an intercepted HTTPS tunnel, over HTTP/2 by extended CONNECT on hyper's
//! client; Python's `websockets` through CONNECT),
//! and what sluice shows of it: the 101 record and its messages (paged,
//! filtered, inflated, cut at the limit, counted past the budget), the
//! relay's idle deadline, the sockets it releases, and the answers it
//! gives to upgrades that do not happen.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use sluice::config::{DataDir, Recording};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::support::admin::{self, get_json, wait_records};
use crate::support::client::{self, read_head_unbuffered};
use crate::support::{bounded, eventually, netns, origin, proxy};

/// What the echo origin saw.
#[derive(Debug)]
pub(crate) enum Seen {
    /// The close frame a client sent.
    Close(Option<CloseFrame>),
    /// A connection ended (after a close, or cut).
    Ended,
}

/// A WebSocket echo origin: echoes text and binary messages (whole, as
/// reassembled from fragments), answers pings (tungstenite does), echoes
/// a close frame; keeps every upgrade request's headers and tells the
/// test each close and each end.
pub(crate) struct WsOrigin {
    pub(crate) addr: SocketAddr,
    heads: Arc<Mutex<Vec<http::HeaderMap>>>,
    seen: mpsc::Receiver<Seen>,
}

impl WsOrigin {
    pub(crate) async fn start() -> WsOrigin {
        WsOrigin::start_with(None).await
    }

    /// The origin, speaking TLS with `tls` when given (`wss://`).
    pub(crate) async fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> WsOrigin {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (tx, seen) = mpsc::channel(64);
        let kept = heads.clone();
        let addr = origin::raw(move |stream| {
            let (kept, tx, tls) = (kept.clone(), tx.clone(), tls.clone());
            async move {
                match tls {
                    Some(config) => {
                        let accepted = tokio_rustls::TlsAcceptor::from(config).accept(stream).await;
                        match accepted {
                            Ok(s) => echo_ws(s, kept, tx).await,
                            Err(_) => {
                                let _ = tx.try_send(Seen::Ended);
                            }
                        }
                    }
                    None => echo_ws(stream, kept, tx).await,
                }
            }
        })
        .await;
        WsOrigin { addr, heads, seen }
    }

    /// A plain origin that also speaks HTTP/2 with prior knowledge (h2c)
    /// on the same port, told apart by the first bytes, as a server
    /// offering both does: h2c requests are answered 204, an HTTP/1.1
    /// WebSocket upgrade is echoed.
    pub(crate) async fn start_h2c_too() -> WsOrigin {
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (tx, seen) = mpsc::channel(64);
        let kept = heads.clone();
        let addr = origin::raw(move |stream| {
            let (kept, tx) = (kept.clone(), tx.clone());
            async move {
                let mut first = [0u8; 3];
                let peeked = tokio::time::timeout(Duration::from_secs(5), async {
                    while stream.peek(&mut first).await.ok()? < first.len() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Some(())
                })
                .await;
                if !matches!(peeked, Ok(Some(()))) {
                    return;
                }
                if &first == b"PRI" {
                    let svc = hyper::service::service_fn(|_req| async {
                        let resp = hyper::Response::builder()
                            .status(204)
                            .body(Empty::<Bytes>::new());
                        Ok::<_, http::Error>(resp.expect("a 204"))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                } else {
                    echo_ws(stream, kept, tx).await;
                }
            }
        })
        .await;
        WsOrigin { addr, heads, seen }
    }

    pub(crate) async fn next_seen(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(10), self.seen.recv())
            .await
            .expect("the origin reports within 10 s")
            .expect("the origin's channel stays open")
    }
}

/// The echo origin's side of one connection.
async fn echo_ws<S>(stream: S, kept: Arc<Mutex<Vec<http::HeaderMap>>>, tx: mpsc::Sender<Seen>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // The signature is tungstenite's callback's.
    #[allow(clippy::result_large_err)]
    let keep = |req: &Request, resp: Response| {
        kept.lock().unwrap().push(req.headers().clone());
        Ok(resp)
    };
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
    let accepted =
        tokio_tungstenite::accept_hdr_async_with_config(stream, keep, Some(config)).await;
    let Ok(mut ws) = accepted else {
        let _ = tx.try_send(Seen::Ended);
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        let echoed = match msg {
            Message::Text(_) | Message::Binary(_) => ws.send(msg).await,
            Message::Close(frame) => {
                let _ = tx.try_send(Seen::Close(frame));
                // tungstenite echoes the close frame; flushing sends it.
                ws.flush().await
            }
            _ => Ok(()),
        };
        if echoed.is_err() {
            break;
        }
    }
    let _ = tx.try_send(Seen::Ended);
}

/// Every stored message of record `id`, page after page (small pages, so
/// the cursor is exercised), once its counters say `seen` passed and the
/// WebSocket's end was recorded.
async fn messages_of(admin: SocketAddr, id: &Value, seen: u64) -> (Value, Vec<Value>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let record = loop {
        let d = get_json(admin, &format!("/api/records/{id}")).await;
        let done = d["messages"]["seen"].as_u64() == Some(seen) && !d["close_reason"].is_null();
        if done {
            break d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "record {id} never counted {seen} messages and its end: {d}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut all = Vec::new();
    let mut cursor: Option<u64> = None;
    loop {
        let q = cursor.map_or(String::new(), |c| format!("&cursor={c}"));
        let page = get_json(admin, &format!("/api/records/{id}/messages?limit=3{q}")).await;
        all.extend(page["messages"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_u64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    (record, all)
}

/// The `(direction, opcode, text)` of each message, for comparing.
fn shape(msgs: &[Value]) -> Vec<(String, String, String)> {
    msgs.iter()
        .map(|m| {
            (
                m["direction"].as_str().unwrap_or_default().to_string(),
                m["opcode"].as_str().unwrap_or_default().to_string(),
                m["text"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// What [`conversation`] records, in order.
fn conversation_shape() -> Vec<(String, String, String)> {
    let t = |d: &str, o: &str, x: &str| (d.to_string(), o.to_string(), x.to_string());
    vec![
        t("send", "text", "hello through sluice"),
        t("receive", "text", "hello through sluice"),
        t("send", "binary", ""),
        t("receive", "binary", ""),
        t("send", "text", "fragmented"),
        t("receive", "text", "fragmented"),
        t("send", "ping", "are you there"),
        t("receive", "pong", "are you there"),
        t("send", "binary", ""),
        t("receive", "binary", ""),
        t("send", "close", "done, thanks"),
        t("receive", "close", "done, thanks"),
    ]
}

/// Checks the recorded [`conversation`] beyond its shape: payloads,
/// fragments, the big message cut at the limit, the close code.
fn check_conversation(msgs: &[Value]) {
    assert_eq!(shape(msgs), conversation_shape(), "{msgs:#?}");
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let binary: Vec<u8> = (0..=255u8).rev().collect();
    assert_eq!(msgs[2]["base64"], b64.encode(&binary), "{}", msgs[2]);
    assert_eq!(msgs[4]["size"], 10);
    let big = &msgs[8];
    assert_eq!(big["size"], 5 << 20, "{big}");
    assert_eq!(big["captured"], 64 * 1024, "{big}");
    assert_eq!(big["truncated"], true, "{big}");
    let mut want = vec![0u8; 5 << 20];
    crate::support::pattern(15, 0, &mut want);
    assert_eq!(
        big["base64"],
        b64.encode(&want[..64 * 1024]),
        "the capture is the unmasked payload's start"
    );
    for close in &msgs[10..12] {
        assert_eq!(close["close"]["code"], 4000, "{close}");
        assert_eq!(close["close"]["reason"], "done, thanks", "{close}");
    }
    let seqs: Vec<u64> = msgs.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

/// An in-process sluice with the admin API and in-memory records.
async fn recording_proxy(tweak: impl FnOnce(&mut sluice::Config)) -> sluice::Proxy {
    proxy::start(|c| {
        c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        c.record = Recording {
            data_dir: DataDir::Memory,
            ..Recording::default()
        };
        tweak(c)
    })
    .await
}

/// Writes a WebSocket upgrade request for `target` (absolute form through
/// the proxy, or origin form inside a tunnel) on `s` and reads the answer's
/// head without a byte past it. `connection` is the client's Connection
/// header (several tokens, in any case, are allowed).
async fn upgrade_request(
    s: &mut TcpStream,
    target: &str,
    host: impl std::fmt::Display,
    connection: &str,
) -> (String, String) {
    let key = generate_key();
    s.write_all(
        format!(
            "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: {connection}\r\nKeep-Alive: timeout=5\r\nX-Hop: dropped\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("the upgrade request is written");
    let head = read_head_unbuffered(s)
        .await
        .expect("an answer head arrives");
    (head, key)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// An absolute-form upgrade to `origin` through the proxy at `proxy`,
/// asserted to switch; the client WebSocket over that connection.
async fn open_forward(proxy: SocketAddr, origin: SocketAddr) -> WebSocketStream<TcpStream> {
    open_url(proxy, &format!("ws://{origin}/echo"), origin).await
}

/// [`open_forward`] to any `url`, with `host` as the Host header.
async fn open_url(
    proxy: SocketAddr,
    url: &str,
    host: impl std::fmt::Display,
) -> WebSocketStream<TcpStream> {
    let mut s = TcpStream::connect(proxy).await.expect("proxy accepts");
    let (head, key) = upgrade_request(&mut s, url, host, "keep-alive, X-Hop, Upgrade").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        header(&head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{head}"
    );
    assert!(
        header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
        "{head}"
    );
    assert_eq!(
        header(&head, "sec-websocket-accept"),
        Some(derive_accept_key(key.as_bytes()).as_str()),
        "{head}"
    );
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
    WebSocketStream::from_raw_socket(s, Role::Client, Some(config)).await
}

/// The next message that is not a pong... or the pong, when asked.
async fn next_msg<S>(ws: &mut WebSocketStream<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a message within 10 s")
        .expect("the stream is open")
        .expect("the message is well formed")
}

/// Message after message, the whole WebSocket vocabulary: text, binary,
/// a fragmented text, a ping, a 5 MiB binary, and a close with a code,
/// which must reach the origin intact and come back.
async fn conversation<S>(ws: &mut WebSocketStream<S>, origin: &mut WsOrigin)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text("hello through sluice"))
        .await
        .unwrap();
    assert_eq!(next_msg(ws).await, Message::text("hello through sluice"));

    let binary: Vec<u8> = (0..=255u8).rev().collect();
    ws.send(Message::binary(binary.clone())).await.unwrap();
    assert_eq!(next_msg(ws).await, Message::binary(binary));

    // One text message in three frames: the origin reassembles what
    // sluice passed on frame for frame.
    for (part, op, last) in [
        ("frag", OpCode::Data(Data::Text), false),
        ("ment", OpCode::Data(Data::Continue), false),
        ("ed", OpCode::Data(Data::Continue), true),
    ] {
        ws.send(Message::Frame(Frame::message(part, op, last)))
            .await
            .unwrap();
    }
    assert_eq!(next_msg(ws).await, Message::text("fragmented"));

    ws.send(Message::Ping("are you there".into()))
        .await
        .unwrap();
    assert_eq!(next_msg(ws).await, Message::Pong("are you there".into()));

    let mut big = vec![0u8; 5 << 20];
    crate::support::pattern(15, 0, &mut big);
    ws.send(Message::binary(big.clone())).await.unwrap();
    match next_msg(ws).await {
        Message::Binary(back) => {
            assert_eq!(back.len(), big.len());
            assert!(back == big, "the 5 MiB message came back changed");
        }
        other => panic!("expected the big binary back, got {other:?}"),
    }

    let bye = CloseFrame {
        code: CloseCode::from(4000),
        reason: "done, thanks".into(),
    };
    ws.send(Message::Close(Some(bye.clone()))).await.unwrap();
    match origin.next_seen().await {
        Seen::Close(Some(f)) => assert_eq!(f, bye, "the close frame reached the origin intact"),
        other => panic!("expected the client's close at the origin, got {other:?}"),
    }
    match next_msg(ws).await {
        Message::Close(Some(f)) => assert_eq!(f, bye, "the origin's echoed close came back"),
        other => panic!("expected the origin's close, got {other:?}"),
    }
    assert!(matches!(origin.next_seen().await, Seen::Ended));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_upgrade_is_relayed_and_recorded_as_one_101() {
    bounded(Duration::from_secs(30), async {
        let mut origin = WsOrigin::start().await;
        let proxy = recording_proxy(|_| {}).await;
        let admin = proxy.admin_addr.unwrap();
        let mut ws = open_forward(proxy.addr, origin.addr).await;

        // The origin saw the switch and nothing else hop-by-hop.
        let h = origin.heads.lock().unwrap()[0].clone();
        assert_eq!(h["upgrade"], "websocket", "{h:?}");
        assert_eq!(h["connection"], "Upgrade", "{h:?}");
        assert_eq!(h["via"], "1.1 sluice", "{h:?}");
        assert!(
            !h.contains_key("keep-alive") && !h.contains_key("x-hop"),
            "{h:?}"
        );

        // While it is open, the client connection streams (not idle, not
        // reading headers) and counts the WebSocket's bytes.
        let client_addr = ws.get_ref().local_addr().unwrap();
        ws.send(Message::text("count me")).await.unwrap();
        assert_eq!(next_msg(&mut ws).await, Message::text("count me"));
        let row = admin::row_for(admin, client_addr, "http")
            .await
            .expect("the upgraded connection is in the inventory");
        assert_eq!(row["state"], "streaming", "{row}");

        conversation(&mut ws, &mut origin).await;
        // The client's close was answered: the client leg ends cleanly.
        assert!(tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("the client leg closes")
            .is_none_or(|r| r.is_err()),);
        drop(ws);
        assert!(
            eventually(Duration::from_secs(5), || proxy.registry.live_total() == 0).await,
            "both legs released"
        );

        let rows = wait_records(admin, "kind=http", 1).await;
        assert_eq!(rows.len(), 1, "one record for the upgrade: {rows:#?}");
        let r = &rows[0];
        assert_eq!(r["status"], 101, "{r}");
        assert_eq!(r["url"], format!("http://{}/echo", origin.addr), "{r}");
        assert!(r["error"].is_null(), "{r}");
        // The two "count me" messages, then the conversation's.
        let (d, msgs) = messages_of(admin, &r["id"], 14).await;
        assert_eq!(
            shape(&msgs[..2]),
            vec![
                ("send".into(), "text".into(), "count me".into()),
                ("receive".into(), "text".into(), "count me".into())
            ]
        );
        check_conversation(&msgs[2..]);
        let s = &d;
        assert_eq!(s["messages"]["stored"], 14, "{s}");
        assert!(s["messages"]["unstored"].is_null(), "{s}");
        assert!(s["close_reason"].as_str().is_some(), "{s}");
        // Sizes: what crossed after the switch, each way (frames and all).
        assert!(s["req_size"].as_u64().unwrap() > 5 << 20, "{s}");
        assert!(s["resp_size"].as_u64().unwrap() > 5 << 20, "{s}");
        let has = |block: &Value, name: &str, value: &str| {
            block.as_array().unwrap().iter().any(|p| {
                p[0].as_str().unwrap().eq_ignore_ascii_case(name)
                    && p[1].as_str().unwrap().eq_ignore_ascii_case(value)
            })
        };
        assert!(has(&d["request"]["headers"], "upgrade", "websocket"), "{d}");
        assert!(
            has(&d["request"]["headers"], "connection", "upgrade"),
            "{d}"
        );
        assert!(
            has(&d["response"]["headers"], "upgrade", "websocket"),
            "{d}"
        );
        assert!(
            has(&d["response"]["headers"], "connection", "upgrade"),
            "{d}"
        );
        let notes = d["rules"].to_string();
        assert!(
            notes.contains("upgraded to WebSocket"),
            "the record says what became of the connection: {d}"
        );
    })
    .await;
}

#[tokio::test]
async fn request_rules_apply_to_an_upgrade() {
    bounded(Duration::from_secs(20), async {
        let mut origin = WsOrigin::start().await;
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.txt");
        std::fs::write(
            &rules,
            format!("chat.test {} reqHeaders://x-set=1\n", origin.addr),
        )
        .unwrap();
        let proxy = proxy::start(|c| c.rules.rules_file = Some(rules)).await;
        // chat.test resolves nowhere: only the rule's upstream reaches it.
        let mut ws = open_url(proxy.addr, "ws://chat.test/echo", "chat.test").await;
        ws.send(Message::text("mapped")).await.unwrap();
        assert_eq!(next_msg(&mut ws).await, Message::text("mapped"));
        let h = origin.heads.lock().unwrap()[0].clone();
        assert_eq!(h["x-set"], "1", "{h:?}");
        assert_eq!(h["host"], "chat.test", "{h:?}");
        assert_eq!(h["upgrade"], "websocket", "{h:?}");
        ws.send(Message::Close(None)).await.unwrap();
        assert!(matches!(origin.next_seen().await, Seen::Close(None)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_inside_a_connect_tunnel() {
    bounded(Duration::from_secs(30), async {
        let mut origin = WsOrigin::start_h2c_too().await;
        let proxy = recording_proxy(|_| {}).await;
        let admin = proxy.admin_addr.unwrap();
        let tunnel = client::connect_tunnel(proxy.addr, origin.addr)
            .await
            .expect("CONNECT opens");
        let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
        let (mut ws, resp) = tokio_tungstenite::client_async_with_config(
            format!("ws://{}/in-tunnel", origin.addr),
            tunnel,
            Some(config),
        )
        .await
        .expect("the WebSocket handshake completes inside the tunnel");
        assert_eq!(resp.status(), 101);
        conversation(&mut ws, &mut origin).await;
        drop(ws);
        assert!(
            eventually(Duration::from_secs(5), || proxy.registry.live_total() == 0).await,
            "the tunnel and both its legs are released"
        );
        let rows = wait_records(admin, "kind=http", 1).await;
        assert!(
            rows.iter()
                .any(|r| r["status"] == 101 && r["url"].as_str().unwrap().ends_with("/in-tunnel")),
            "{rows:#?}"
        );
    })
    .await;
}

const PYTHON_CLIENT: &str = r#"
import asyncio, json, os
from websockets.asyncio.client import connect

async def main():
    out = {}
    async with connect(os.environ["URL"], proxy=os.environ["PROXY"], max_size=None,
                       open_timeout=10, close_timeout=10) as ws:
        await ws.send("hello from python")
        out["text"] = await ws.recv()
        await ws.send(b"\x00\x01binary\xff")
        out["binary"] = (await ws.recv()).hex()
        await ws.send(["frag", "ment", "ed"])
        out["fragmented"] = await ws.recv()
        pong = await ws.ping(b"python ping")
        await asyncio.wait_for(pong, 10)
        out["pong"] = True
        big = bytes(range(256)) * (6 * 1024 * 1024 // 256)
        await ws.send(big)
        back = await ws.recv()
        out["big"] = back == big
        out["big_len"] = len(back)
        await ws.close(code=4001, reason="python says bye")
        out["close_code"] = ws.close_code
        out["close_reason"] = ws.close_reason
    print(json.dumps(out))

asyncio.run(asyncio.wait_for(main(), 20))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_through_a_connect_tunnel() {
    bounded(Duration::from_secs(40), async {
        let probe = tokio::process::Command::new("python3")
            .args(["-c", "import websockets"])
            .output()
            .await;
        assert!(
            probe.is_ok_and(|o| o.status.success()),
            "this test needs python3 with websockets; ./test.sh installs it"
        );
        let mut origin = WsOrigin::start().await;
        let proxy = recording_proxy(|_| {}).await;
        let env = [
            ("URL", format!("ws://{}/py", origin.addr)),
            ("PROXY", format!("http://{}", proxy.addr)),
        ];
        let v = run_python(PYTHON_CLIENT, &env).await;
        assert_eq!(v["text"], "hello from python", "{v}");
        assert_eq!(v["binary"], "000162696e617279ff", "{v}");
        assert_eq!(v["fragmented"], "fragmented", "{v}");
        assert_eq!(v["pong"], true, "{v}");
        assert_eq!(v["big"], true, "{v}");
        assert_eq!(v["big_len"], 6 * 1024 * 1024, "{v}");
        assert_eq!(v["close_code"], 4001, "{v}");
        assert_eq!(v["close_reason"], "python says bye", "{v}");
        match origin.next_seen().await {
            Seen::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 4001);
                assert_eq!(f.reason.as_str(), "python says bye");
            }
            other => panic!("expected python's close at the origin, got {other:?}"),
        }
        // The tunnel came through CONNECT: the upgrade was the tunnel's
        // plain HTTP, served by the one request path.
        let h = origin.heads.lock().unwrap()[0].clone();
        assert_eq!(h["via"], "1.1 sluice", "{h:?}");
        assert!(
            eventually(Duration::from_secs(5), || proxy.registry.live_total() == 0).await,
            "the tunnel is released"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websocket_is_closed_by_the_tunnel_idle_deadline() {
    bounded(Duration::from_secs(30), async {
        let mut origin = WsOrigin::start().await;
        let sluice = proxy::spawn(&["--idle-timeout", "1s"]).await;
        let pid = sluice.pid();
        let admin = sluice.admin.expect("admin is on");
        let mut ws = open_forward(sluice.addr, origin.addr).await;
        // The last byte sluice moves (the echo) passes after this: the
        // deadline cannot fire earlier than a second from here, however
        // late this task sees the echo on a loaded machine.
        let quiet = tokio::time::Instant::now();
        ws.send(Message::text("one, then silence")).await.unwrap();
        assert_eq!(next_msg(&mut ws).await, Message::text("one, then silence"));
        let established = || {
            netns::tcp_sockets_of(pid)
                .into_iter()
                .filter(|(_, r)| r.state == netns::TCP_ESTABLISHED)
                .count()
        };
        assert_eq!(
            established(),
            2,
            "sluice holds the client and upstream legs"
        );

        let end = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("sluice closes the idle WebSocket");
        let waited = quiet.elapsed();
        assert!(
            end.as_ref().is_none_or(|r| r.is_err()),
            "the client leg is closed, not sent a message: {end:?}"
        );
        assert!(
            waited >= Duration::from_millis(950),
            "closed {waited:?} after the last message was sent, before the 1 s idle deadline"
        );
        assert!(
            matches!(origin.next_seen().await, Seen::Ended),
            "the upstream leg is closed too"
        );
        assert!(
            eventually(Duration::from_secs(5), || established() == 0).await,
            "sluice still holds sockets: {:?}",
            netns::tcp_sockets_of(pid)
        );
        let m = admin::metrics(admin).await;
        assert_eq!(
            m.must(
                "sluice_connections_closed_total",
                &[("reason", "idle_timeout")]
            ),
            1.0
        );
    })
    .await;
}

#[tokio::test]
async fn upgrade_answered_200_is_relayed_as_a_normal_response() {
    bounded(Duration::from_secs(20), async {
        let origin = origin::serve(|req: hyper::Request<hyper::body::Incoming>| async move {
            let seen = format!(
                "upgrade={:?} connection={:?}",
                req.headers().get("upgrade"),
                req.headers().get("connection")
            );
            Ok::<_, std::convert::Infallible>(
                hyper::Response::builder()
                    .header("content-type", "text/plain")
                    .body(http_body_util::Full::new(bytes::Bytes::from(seen)))
                    .unwrap(),
            )
        })
        .await;
        let proxy = recording_proxy(|_| {}).await;
        let admin = proxy.admin_addr.unwrap();
        let s = TcpStream::connect(proxy.addr).await.unwrap();
        let mut c = client::Client::from_stream(s);
        c.send(
            format!(
                "GET ws://{origin}/not-a-socket HTTP/1.1\r\nHost: {origin}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
                generate_key()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let resp = c.read_response().await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.text(),
            "upgrade=Some(\"websocket\") connection=Some(\"Upgrade\")"
        );
        assert!(resp.header("upgrade").is_none());
        // Still HTTP: the connection serves the next request.
        let again = c.get(origin, "/after").await.unwrap();
        assert_eq!(again.status, 200);
        let rows = wait_records(admin, "kind=http", 2).await;
        assert!(rows.iter().all(|r| r["status"] == 200), "{rows:#?}");
    })
    .await;
}

/// An origin that answers every request `101 Switching Protocols` with
/// `Upgrade: {to}`, then holds the connection open.
async fn switching_origin(to: &'static str) -> SocketAddr {
    origin::raw(move |mut s| async move {
        origin::read_request_head(&mut s).await;
        let _ = s
            .write_all(
                format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: {to}\r\nConnection: Upgrade\r\n\r\n")
                    .as_bytes(),
            )
            .await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    })
    .await
}

#[tokio::test]
async fn a_101_sluice_cannot_carry_is_answered_502() {
    bounded(Duration::from_secs(20), async {
        let proxy = recording_proxy(|_| {}).await;
        // A switch to another protocol than the WebSocket asked for.
        let h2c = switching_origin("h2c").await;
        let resp = client::exchange(
            proxy.addr,
            format!(
                "GET ws://{h2c}/ HTTP/1.1\r\nHost: {h2c}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
                generate_key()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 502);
        assert!(resp.text().contains("`h2c`"), "{}", resp.text());

        // A switch nobody asked for.
        let ws = switching_origin("websocket").await;
        let resp = client::get_once(proxy.addr, ws, "/plain").await.unwrap();
        assert_eq!(resp.status, 502);
        assert!(
            resp.text().contains("did not ask to upgrade"),
            "{}",
            resp.text()
        );
        assert!(
            eventually(Duration::from_secs(5), || proxy.registry.live_total() == 0).await,
            "nothing is left holding the refused switches"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_inside_intercepted_https_is_relayed_and_its_messages_recorded() {
    use crate::support::https::{self, Opened};
    use crate::support::pki::{pki, OriginCert};
    bounded(Duration::from_secs(30), async {
        let mut origin =
            WsOrigin::start_with(Some(pki().origin_config(OriginCert::Valid, &[b"http/1.1"])))
                .await;
        let proxy = proxy::start(|c| {
            pki().intercept_all(c);
            c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        })
        .await;
        let admin = proxy.admin_addr.unwrap();
        let Opened::Tls(tls) = https::open(proxy.addr, origin.addr, &[b"http/1.1"])
            .await
            .expect("the tunnel opens")
        else {
            panic!("CONNECT refused");
        };
        let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
        let (mut ws, resp) = tokio_tungstenite::client_async_with_config(
            format!("wss://localhost:{}/secure-chat", origin.addr.port()),
            tls.into_inner(),
            Some(config),
        )
        .await
        .expect("the WebSocket handshake completes inside the decrypted tunnel");
        assert_eq!(resp.status(), 101);
        conversation(&mut ws, &mut origin).await;
        drop(ws);
        assert!(
            eventually(Duration::from_secs(5), || proxy.registry.live_total() == 0).await,
            "the tunnel and both its legs are released"
        );
        let rows = wait_records(admin, "kind=http", 1).await;
        let r = rows
            .iter()
            .find(|r| r["status"] == 101)
            .unwrap_or_else(|| panic!("no 101 record: {rows:#?}"));
        assert_eq!(
            r["url"],
            format!("https://localhost:{}/secure-chat", origin.addr.port()),
            "{r}"
        );
        assert_eq!(r["tls"]["sni"], "localhost", "{r}");
        let (_, msgs) = messages_of(admin, &r["id"], 12).await;
        check_conversation(&msgs);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_budget_messages_are_counted_not_stored() {
    bounded(Duration::from_secs(30), async {
        let mut origin = WsOrigin::start().await;
        let proxy = recording_proxy(|c| c.record.connection_messages = 5).await;
        let admin = proxy.admin_addr.unwrap();
        let mut ws = open_forward(proxy.addr, origin.addr).await;
        // A 16 MiB message first: relayed whole, recorded to the limit.
        let mut big = vec![0u8; 16 << 20];
        crate::support::pattern(3, 0, &mut big);
        ws.send(Message::binary(big.clone())).await.unwrap();
        match next_msg(&mut ws).await {
            Message::Binary(back) => assert!(back == big, "the 16 MiB message came back changed"),
            other => panic!("expected the 16 MiB binary back, got {other:?}"),
        }
        for i in 0..10 {
            let text = format!("message {i}");
            ws.send(Message::text(text.clone())).await.unwrap();
            assert_eq!(next_msg(&mut ws).await, Message::text(text));
        }
        ws.send(Message::Close(None)).await.unwrap();
        assert!(matches!(origin.next_seen().await, Seen::Close(None)));
        assert!(matches!(next_msg(&mut ws).await, Message::Close(None)));
        drop(ws);
        let rows = wait_records(admin, "kind=http", 1).await;
        // 2 big, 20 texts, 2 closes.
        let (d, msgs) = messages_of(admin, &rows[0]["id"], 24).await;
        let counts = &d["messages"];
        assert_eq!(counts["stored"], 5, "{counts}");
        assert!(
            counts["unstored"]
                .as_str()
                .is_some_and(|w| w.contains("budget")),
            "{counts}"
        );
        assert!(
            counts["bytes"].as_u64().unwrap() >= 2 * (16 << 20),
            "{counts}"
        );
        assert_eq!(msgs.len(), 5, "{msgs:#?}");
        assert_eq!(msgs[0]["size"], 16 << 20);
        assert_eq!(msgs[0]["captured"], 64 * 1024);
        assert_eq!(msgs[0]["truncated"], true);
        assert_eq!(msgs[4]["text"], "message 1");
        let m = admin::metrics(admin).await;
        assert_eq!(
            m.must("sluice_record_messages_total", &[("what", "stored")]),
            5.0
        );
        assert_eq!(
            m.must("sluice_record_messages_total", &[("what", "over_budget")]),
            19.0
        );
        assert_eq!(
            m.must("sluice_record_messages_total", &[("what", "dropped")]),
            0.0
        );
        // Filters: one direction, one opcode.
        let sent = get_json(
            admin,
            &format!(
                "/api/records/{}/messages?direction=send&opcode=text",
                rows[0]["id"]
            ),
        )
        .await;
        let sent = sent["messages"].as_array().unwrap();
        assert_eq!(sent.len(), 2, "{sent:#?}");
        assert!(sent
            .iter()
            .all(|m| m["direction"] == "send" && m["opcode"] == "text"));
        let bad = admin::get(
            admin,
            &format!("/api/records/{}/messages?direction=up", rows[0]["id"]),
        )
        .await;
        assert_eq!(bad.status, 400, "{}", bad.text());
        assert!(bad.text().contains("direction"), "{}", bad.text());
    })
    .await;
}

const PYTHON_DEFLATE: &str = r#"
import asyncio, json, os
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

async def echo(ws):
    async for m in ws:
        await ws.send(m)

async def main():
    out = {}
    async with serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        out["port"] = port
        async with connect(f"ws://127.0.0.1:{port}/deflate", proxy=os.environ["PROXY"],
                           open_timeout=10, close_timeout=10) as ws:
            out["extensions"] = [e.name for e in ws.protocol.extensions]
            back = []
            for i in range(3):
                await ws.send(os.environ["TEXT"] + str(i))
                back.append(await ws.recv())
            out["back"] = back
    print(json.dumps(out))

asyncio.run(asyncio.wait_for(main(), 20))
"#;

/// Runs a Python `script` with `env`; its last line of output, as JSON.
async fn run_python(script: &str, env: &[(&str, String)]) -> Value {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg("-c").arg(script).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("python finishes within 30 s")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no JSON from python ({e}): {stdout}"))
}

/// [`PYTHON_DEFLATE`] through the proxy at `proxy`, sending `text` three
/// times: the extensions agreed and the echoes back.
async fn python_deflate(proxy: SocketAddr, text: &str) -> Value {
    let env = [
        ("PROXY", format!("http://{proxy}")),
        ("TEXT", text.to_string()),
    ];
    run_python(PYTHON_DEFLATE, &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permessage_deflate_messages_are_recorded_inflated() {
    bounded(Duration::from_secs(40), async {
        let proxy = recording_proxy(|_| {}).await;
        let admin = proxy.admin_addr.unwrap();
        let text = "compress me, compress me again, and once more ".repeat(40);
        let v = python_deflate(proxy.addr, &text).await;
        assert_eq!(v["extensions"][0], "permessage-deflate", "{v}");
        for i in 0..3 {
            assert_eq!(v["back"][i], format!("{text}{i}"));
        }
        let rows = wait_records(admin, "kind=http", 1).await;
        let (_, msgs) = messages_of(admin, &rows[0]["id"], 8).await;
        let data: Vec<&Value> = msgs.iter().filter(|m| m["opcode"] == "text").collect();
        assert_eq!(data.len(), 6, "{msgs:#?}");
        for (k, m) in data.iter().enumerate() {
            assert_eq!(m["compressed"], true, "{m}");
            assert!(m["problem"].is_null(), "{m}");
            assert_eq!(m["text"], format!("{text}{}", k / 2), "shown inflated: {m}");
            assert!(
                m["size"].as_u64().unwrap() < text.len() as u64 / 4,
                "sent compressed: {m}"
            );
        }
        // Later messages lean on the earlier ones' window (context takeover).
        assert!(
            data[2]["size"].as_u64() < data[0]["size"].as_u64(),
            "{msgs:#?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_rules_take_permessage_deflate_out_so_they_apply() {
    bounded(Duration::from_secs(40), async {
        // Python's websockets offers and accepts permessage-deflate, as
        // browsers do; under a wsSub rule sluice takes the offer out.
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.txt");
        std::fs::write(&rules, "127.0.0.1 wsSub://receive:/compress/squash/\n").unwrap();
        let proxy = recording_proxy(|c| c.rules.rules_file = Some(rules)).await;
        let admin = proxy.admin_addr.unwrap();
        let text = "compress me ".repeat(20);
        let v = python_deflate(proxy.addr, &text).await;
        assert_eq!(v["extensions"], serde_json::json!([]), "{v}");
        for i in 0..3 {
            assert_eq!(
                v["back"][i],
                format!("{}{i}", "squash me ".repeat(20)),
                "{v}"
            );
        }
        let rows = wait_records(admin, "kind=http", 1).await;
        let d = get_json(admin, &format!("/api/records/{}", rows[0]["id"])).await;
        let kinds: Vec<&str> = d["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["kind"].as_str())
            .collect();
        assert!(kinds.contains(&"websocket-extensions"), "{d}");
        // The request as it went upstream: the offer taken out.
        let sent: Vec<String> = d["request"]["headers"]
            .as_array()
            .unwrap_or_else(|| panic!("no request headers: {d}"))
            .iter()
            .map(|h| h[0].as_str().unwrap_or_default().to_ascii_lowercase())
            .collect();
        assert!(sent.iter().any(|h| h == "sec-websocket-key"), "{d}");
        assert!(!sent.iter().any(|h| h == "sec-websocket-extensions"), "{d}");
        // Three each way, and the close each way.
        let (_, msgs) = messages_of(admin, &rows[0]["id"], 8).await;
        assert!(msgs.iter().all(|m| m["compressed"] == false), "{msgs:#?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_rules_drop_and_rewrite_messages_one_direction_each() {
    bounded(Duration::from_secs(30), async {
        let mut origin = WsOrigin::start().await;
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.txt");
        std::fs::write(
            &rules,
            format!(
                "{} wsDrop://send:/^drop/ wsSub://receive:/secret-(\\d+)/[hidden-$1]/\n",
                origin.addr
            ),
        )
        .unwrap();
        let proxy = recording_proxy(|c| c.rules.rules_file = Some(rules)).await;
        let admin = proxy.admin_addr.unwrap();
        let mut ws = open_forward(proxy.addr, origin.addr).await;
        // Dropped on the way up: the origin never sees it, so no echo.
        for text in ["keep 1", "drop this one", "a secret-42 here"] {
            ws.send(Message::text(text)).await.unwrap();
        }
        assert_eq!(next_msg(&mut ws).await, Message::text("keep 1"));
        // The echo is rewritten on the way down (the origin sent it whole).
        assert_eq!(next_msg(&mut ws).await, Message::text("a [hidden-42] here"));
        // A fragmented message is rewritten whole; a ping between its
        // fragments passes at once.
        let frag = |fin, op, data: &[u8]| Message::Frame(Frame::message(data.to_vec(), op, fin));
        ws.send(frag(false, OpCode::Data(Data::Text), b"drop"))
            .await
            .unwrap();
        ws.send(Message::Ping(b"mid".to_vec().into()))
            .await
            .unwrap();
        ws.send(frag(true, OpCode::Data(Data::Continue), b" me too"))
            .await
            .unwrap();
        assert_eq!(
            next_msg(&mut ws).await,
            Message::Pong(b"mid".to_vec().into())
        );
        ws.send(Message::text("last secret-7")).await.unwrap();
        assert_eq!(next_msg(&mut ws).await, Message::text("last [hidden-7]"));
        ws.send(Message::Close(None)).await.unwrap();
        assert!(matches!(origin.next_seen().await, Seen::Close(None)));
        assert!(matches!(next_msg(&mut ws).await, Message::Close(None)));
        drop(ws);

        let rows = wait_records(admin, "kind=http", 1).await;
        // Recorded as they were passed on, and what a rule dropped as it
        // came, flagged (each direction in its own order: the two race).
        let (d, msgs) = messages_of(admin, &rows[0]["id"], 12).await;
        let way = |dir: &str| -> Vec<(String, String, bool)> {
            msgs.iter()
                .filter(|m| m["direction"] == dir)
                .map(|m| {
                    (
                        m["opcode"].as_str().unwrap_or_default().to_string(),
                        m["text"].as_str().unwrap_or_default().to_string(),
                        m["dropped"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        };
        let t = |o: &str, x: &str, dropped: bool| (o.to_string(), x.to_string(), dropped);
        assert_eq!(
            way("send"),
            vec![
                t("text", "keep 1", false),
                t("text", "drop this one", true),
                t("text", "a secret-42 here", false),
                t("ping", "mid", false),
                // Decided at its last frame, after the ping between its
                // fragments; recorded whole.
                t("text", "drop me too", true),
                t("text", "last secret-7", false),
                t("close", "", false),
            ],
            "{msgs:#?}"
        );
        assert_eq!(
            way("receive"),
            vec![
                t("text", "keep 1", false),
                t("text", "a [hidden-42] here", false),
                t("pong", "mid", false),
                t("text", "last [hidden-7]", false),
                t("close", "", false),
            ],
            "{msgs:#?}"
        );
        let har = get_json(admin, "/api/har").await;
        let ws_messages = har["log"]["entries"][0]["_webSocketMessages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let dropped: Vec<&str> = ws_messages
            .iter()
            .filter(|m| m["_dropped"] == true)
            .filter_map(|m| m["data"].as_str())
            .collect();
        assert_eq!(
            dropped,
            ["drop this one", "drop me too"],
            "HAR marks the dropped messages: {ws_messages:#?}"
        );
        let all = d.to_string();
        assert!(
            all.contains("2 sent messages dropped") && all.contains("2 rewritten"),
            "the record says what the rules did: {d}"
        );
        let kinds: Vec<&str> = d["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["kind"].as_str())
            .collect();
        assert!(
            kinds.contains(&"wsDrop") && kinds.contains(&"wsSub"),
            "{kinds:?}"
        );
    })
    .await;
}

/// An HTTP/2 client's extended CONNECT (RFC 8441) for `path`, as hyper's
/// client sends it (`:protocol` from the extension).
fn extended_connect(port: u16, path: &str, protocol: &'static str) -> http::Request<Empty<Bytes>> {
    extended_connect_to(&format!("https://localhost:{port}{path}"), protocol)
}

/// [`extended_connect`] to any URI (`:scheme`, `:authority`, `:path`).
fn extended_connect_to(uri: &str, protocol: &'static str) -> http::Request<Empty<Bytes>> {
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(uri)
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static(protocol));
    req
}

/// A WebSocket over the h2 stream of an extended CONNECT answered 200.
async fn h2_websocket(
    send: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    port: u16,
    path: &str,
) -> WebSocketStream<TokioIo<hyper::upgrade::Upgraded>> {
    h2_websocket_to(send, extended_connect(port, path, "websocket")).await
}

async fn h2_websocket_to(
    send: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    req: http::Request<Empty<Bytes>>,
) -> WebSocketStream<TokioIo<hyper::upgrade::Upgraded>> {
    let resp = send
        .send_request(req)
        .await
        .expect("sluice answers the extended CONNECT");
    assert_eq!(resp.status(), 200, "{resp:?}");
    for switch_only in ["upgrade", "connection", "sec-websocket-accept"] {
        assert!(
            resp.headers().get(switch_only).is_none(),
            "an HTTP/2 answer carries no {switch_only}: {resp:?}"
        );
    }
    let stream = hyper::upgrade::on(resp)
        .await
        .expect("the CONNECT stream is handed over");
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
    WebSocketStream::from_raw_socket(TokioIo::new(stream), Role::Client, Some(config)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_websockets_by_extended_connect_are_bridged_to_http1_upgrades() {
    use crate::support::https::{self, Opened};
    use crate::support::pki::{pki, OriginCert};
    bounded(Duration::from_secs(40), async {
        // An origin that speaks HTTP/1.1 only, as most WebSocket servers do.
        let mut origin =
            WsOrigin::start_with(Some(pki().origin_config(OriginCert::Valid, &[b"http/1.1"])))
                .await;
        let port = origin.addr.port();
        let proxy = proxy::start(|c| {
            pki().intercept_all(c);
            c.admin.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        })
        .await;
        let admin = proxy.admin_addr.unwrap();
        let Opened::Tls(tls) = https::open(proxy.addr, origin.addr, &[b"h2"])
            .await
            .expect("the tunnel opens")
        else {
            panic!("CONNECT refused");
        };
        let tls = *tls.into_inner();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2 handshake with sluice");
        let conn = tokio::spawn(conn);

        // Two WebSockets on one HTTP/2 connection, each its own stream.
        let mut first = h2_websocket(&mut send, port, "/first").await;
        let mut second = h2_websocket(&mut send, port, "/second").await;
        second
            .send(Message::text("on the second stream"))
            .await
            .unwrap();
        assert_eq!(
            next_msg(&mut second).await,
            Message::text("on the second stream")
        );
        conversation(&mut first, &mut origin).await;
        // Each bridged leg's socket is the tunnel entry's while it lives.
        let most_sockets = || {
            proxy
                .registry
                .snapshot()
                .iter()
                .map(|e| e.socket_inodes().len())
                .max()
                .unwrap_or(0)
        };
        let with_both = most_sockets();
        drop(first);
        // The first one's end is its stream's alone.
        second.send(Message::text("still here")).await.unwrap();
        assert_eq!(next_msg(&mut second).await, Message::text("still here"));
        assert!(
            eventually(Duration::from_secs(5), || most_sockets() == with_both - 1).await,
            "the first WebSocket's upstream socket leaves the tunnel's entry with it \
             ({with_both} before, {} now)",
            most_sockets()
        );

        // Any other protocol is refused, and the connection goes on.
        let refused = send
            .send_request(extended_connect(port, "/udp", "connect-udp"))
            .await
            .expect("an answer to an unknown protocol");
        assert_eq!(refused.status(), 501);
        // Its body unread, the stream would keep the client's connection.
        drop(refused);

        second.send(Message::Close(None)).await.unwrap();
        let seen = origin.next_seen().await;
        assert!(matches!(seen, Seen::Close(None)), "{seen:?}");
        let m = next_msg(&mut second).await;
        assert!(matches!(m, Message::Close(None)), "{m:?}");
        drop(second);
        drop(send);
        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        assert!(
            eventually(Duration::from_secs(5), || proxy.registry.live_total() == 0).await,
            "the tunnel, its pinned connection and both bridged legs are released"
        );

        // The origin was asked in HTTP/1.1 with a key sluice made.
        {
            let heads = origin.heads.lock().unwrap();
            assert_eq!(heads.len(), 2, "{heads:?}");
            for h in heads.iter() {
                assert!(h.get("sec-websocket-key").is_some(), "{h:?}");
                assert_eq!(h["sec-websocket-version"], "13", "{h:?}");
                assert!(h["upgrade"]
                    .to_str()
                    .unwrap()
                    .eq_ignore_ascii_case("websocket"));
            }
        }
        let rows = wait_records(admin, "kind=http", 3).await;
        let first = rows
            .iter()
            .find(|r| r["url"].as_str().is_some_and(|u| u.ends_with("/first")))
            .unwrap_or_else(|| panic!("no record of /first: {rows:#?}"));
        assert_eq!(first["status"], 101, "{first}");
        assert_eq!(first["version"], "HTTP/2.0", "{first}");
        assert_eq!(first["method"], "GET", "{first}");
        let d = get_json(admin, &format!("/api/records/{}", first["id"])).await;
        assert!(d["rules"].to_string().contains("RFC 8441"), "{d}");
        let (_, msgs) = messages_of(admin, &first["id"], 12).await;
        check_conversation(&msgs);
        let udp = rows
            .iter()
            .find(|r| r["url"].as_str().is_some_and(|u| u.ends_with("/udp")))
            .unwrap_or_else(|| panic!("no record of the refused CONNECT: {rows:#?}"));
        assert_eq!(udp["status"], 501, "{udp}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_extended_connect_inside_a_plain_tunnel_reaches_a_ws_origin() {
    bounded(Duration::from_secs(40), async {
        // A plain ws:// origin; the client speaks HTTP/2 with prior
        // knowledge inside a CONNECT tunnel, as an h2c client behind a
        // proxy does, and opens its WebSocket by extended CONNECT.
        let mut origin = WsOrigin::start_h2c_too().await;
        let proxy = recording_proxy(|_| {}).await;
        let admin = proxy.admin_addr.unwrap();
        let tunnel = client::connect_tunnel(proxy.addr, origin.addr)
            .await
            .expect("the tunnel opens");
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tunnel))
                .await
                .expect("h2c handshake inside the tunnel");
        let conn = tokio::spawn(conn);
        let uri = format!("http://{}/h2c", origin.addr);
        let mut ws = h2_websocket_to(&mut send, extended_connect_to(&uri, "websocket")).await;
        // The tunnel's other streams still go over its pinned h2c connection.
        let plain = http::Request::get(format!("http://{}/plain", origin.addr))
            .body(Empty::new())
            .unwrap();
        let resp = send.send_request(plain).await.expect("a plain h2c request");
        assert_eq!(resp.status(), 204);
        drop(resp);
        // Ends with the close handshake and the origin's connection gone.
        conversation(&mut ws, &mut origin).await;
        drop(ws);
        drop(send);
        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        assert!(
            eventually(Duration::from_secs(5), || proxy.registry.live_total() == 0).await,
            "the tunnel and the bridged leg are released"
        );
        {
            let heads = origin.heads.lock().unwrap();
            assert_eq!(heads.len(), 1, "{heads:?}");
            assert!(heads[0].get("sec-websocket-key").is_some(), "{heads:?}");
        }
        let rows = wait_records(admin, "kind=http", 1).await;
        let rec = rows
            .iter()
            .find(|r| r["url"].as_str().is_some_and(|u| u.ends_with("/h2c")))
            .unwrap_or_else(|| panic!("no record of /h2c: {rows:#?}"));
        assert_eq!(rec["status"], 101, "{rec}");
        assert_eq!(rec["version"], "HTTP/2.0", "{rec}");
        let (_, msgs) = messages_of(admin, &rec["id"], 12).await;
        check_conversation(&msgs);
    })
    .await;
}
