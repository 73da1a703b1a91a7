//! WebSocket server and clients for bench/ws.sh (tokio-tungstenite on
//! both ends, so direct and proxied runs differ only by the proxy).
//!
//! The client opens its WebSocket by hand — an absolute-form `GET
//! http://target/...` to a forward proxy, or an origin-form one direct —
//! then hands the socket to tungstenite: the proxied upgrade is the one a
//! browser configured with an HTTP proxy sends for `ws://`.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{die, percentile, rss_kib, Opts};

type Ws = WebSocketStream<TcpStream>;

fn config() -> WebSocketConfig {
    // Room for the 16 MiB messages the tests send, and no more.
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

/// `ws-serve --addr A`: echoes every data message; a text message
/// `bulk COUNT SIZE` is answered with COUNT binary messages of SIZE bytes
/// and then the text `done`.
pub async fn serve(o: Opts) {
    let a = o.addr("addr");
    let l = TcpListener::bind(a)
        .await
        .unwrap_or_else(|e| die(format!("cannot listen on {a}: {e}")));
    loop {
        let Ok((s, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::task::spawn_local(async move {
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(s, Some(config())).await
            else {
                return;
            };
            let _ = serve_one(ws).await;
        });
    }
}

async fn serve_one(mut ws: Ws) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    while let Some(m) = ws.next().await {
        match m? {
            Message::Text(t) if t.starts_with("bulk ") => {
                let mut it = t.split_whitespace().skip(1);
                let count: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let size: usize = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let payload = bytes::Bytes::from(vec![0xa5u8; size]);
                for _ in 0..count {
                    ws.feed(Message::Binary(payload.clone())).await?;
                }
                ws.send(Message::text("done")).await?;
            }
            m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m).await?,
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(())
}

/// Opens a WebSocket to `ws://target/path`, through `proxy` (absolute-form
/// upgrade) when given.
async fn open(target: SocketAddr, proxy: Option<SocketAddr>, path: &str) -> Result<Ws, String> {
    let addr = proxy.unwrap_or(target);
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    let uri = match proxy {
        Some(_) => format!("http://{target}{path}"),
        None => path.to_string(),
    };
    let req = format!(
        "GET {uri} HTTP/1.1\r\nHost: {target}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write upgrade: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    loop {
        let n = s
            .read(&mut buf)
            .await
            .map_err(|e| format!("read upgrade answer: {e}"))?;
        if n == 0 {
            return Err("closed before answering the upgrade".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if pos + 4 != head.len() {
                return Err("bytes after the 101 (the server spoke first)".into());
            }
            if !head.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(&head);
                return Err(format!(
                    "upgrade refused: {}",
                    line.lines().next().unwrap_or("")
                ));
            }
            break;
        }
        if head.len() > 16 * 1024 {
            return Err("upgrade answer head too large".into());
        }
    }
    Ok(WebSocketStream::from_raw_socket(s, Role::Client, Some(config())).await)
}

/// `ws-echo`: `conc` clients each loop: open a WebSocket, send `msg`-byte
/// binary messages one at a time and wait for each echo, `per-conn` of
/// them (0: until the end), close; for `secs` seconds or until `total`
/// echoes in all. With `--pid`, the proxy's RSS is read at the start and
/// every tenth of `total`.
pub async fn echo(o: Opts) {
    let target = o.addr("target");
    let proxy = o.opt_addr("proxy");
    let conc = o.num("conc", Some(50)) as usize;
    let secs = o.num("secs", Some(10));
    let msg = o.num("msg", Some(64)) as usize;
    let per_conn = o.num("per-conn", Some(0));
    let total = o.num("total", Some(0));
    let pid = o.get("pid").map(|_| o.num("pid", None) as u32);
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let done = Rc::new(Cell::new(0u64));
    let samples = Rc::new(std::cell::RefCell::new(Vec::<(u64, u64)>::new()));
    if let Some(p) = pid {
        samples.borrow_mut().push((0, rss_kib(p)));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (done, samples) = (done.clone(), samples.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let payload = bytes::Bytes::from(vec![b'x'; msg]);
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let more = || Instant::now() < stop_at && (total == 0 || done.get() < total);
            while more() {
                let r: Result<(), String> = async {
                    let mut ws = open(target, proxy, "/echo").await?;
                    let mut n = 0;
                    while more() && (per_conn == 0 || n < per_conn) {
                        let t0 = Instant::now();
                        ws.send(Message::Binary(payload.clone()))
                            .await
                            .map_err(|e| format!("send: {e}"))?;
                        match ws.next().await {
                            Some(Ok(Message::Binary(b))) if b.len() == msg => {}
                            other => return Err(format!("echo: {other:?}")),
                        }
                        lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        n += 1;
                        let d = done.get() + 1;
                        done.set(d);
                        if let Some(p) = pid {
                            if total >= 10 && d % (total / 10) == 0 {
                                samples.borrow_mut().push((d, rss_kib(p)));
                            }
                        }
                    }
                    let _ = ws.close(None).await;
                    Ok(())
                }
                .await;
                if let Err(e) = r {
                    errors += 1;
                    if errors <= 3 {
                        eprintln!("loadgen ws-echo: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.unwrap_or_else(|e| die(format!("client task: {e}")));
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let rss: Vec<String> = samples
        .borrow()
        .iter()
        .map(|(n, kib)| format!("{n}:{kib}"))
        .collect();
    println!(
        "RESULT ok={} errors={} secs={:.3} per_s={:.0} p50_us={} p99_us={} rss_kib={}",
        all.len(),
        errors,
        elapsed,
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        if rss.is_empty() { "-".into() } else { rss.join(",") }
    );
}

/// `ws-bulk`: one WebSocket asks for `bytes` in binary messages of `size`
/// bytes and times their arrival.
pub async fn bulk(o: Opts) {
    let target = o.addr("target");
    let proxy = o.opt_addr("proxy");
    let bytes = o.num("bytes", None);
    let size = o.num("size", Some(64 * 1024)).max(1);
    let count = bytes.div_ceil(size);
    let mut ws = open(target, proxy, "/bulk")
        .await
        .unwrap_or_else(|e| die(format!("ws-bulk: {e}")));
    let t0 = Instant::now();
    ws.send(Message::text(format!("bulk {count} {size}")))
        .await
        .unwrap_or_else(|e| die(format!("ws-bulk send: {e}")));
    let mut got = 0u64;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) => got += b.len() as u64,
            Some(Ok(Message::Text(t))) if t == "done" => break,
            other => die(format!("ws-bulk: after {got} bytes: {other:?}")),
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let _ = ws.close(None).await;
    if got != count * size {
        die(format!("ws-bulk: got {got} of {} bytes", count * size));
    }
    println!(
        "RESULT bytes={got} secs={secs:.3} mb_per_s={:.1}",
        got as f64 / secs / 1e6
    );
}
