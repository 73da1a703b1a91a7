//! Benchmark-only helper for bench/run.sh: the TCP servers (echo, bulk
//! source/sink) and the clients for the CONNECT figures (bulk throughput,
//! tunnel setup rate, idle tunnel memory) and, in `ws`, the WebSocket
//! server and clients for bench/ws.sh. Not part of sluice.
//!
//! Every client prints one machine-readable line starting with `RESULT `
//! (space-separated key=value pairs) that run.sh parses; anything else goes
//! to stderr. Everything runs on a current-thread runtime: run.sh pins this
//! process to one core, so more threads would only add contention.

use std::net::SocketAddr;
use std::process::exit;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod ws;

const USAGE: &str = "usage:
  loadgen ports N                         print N free loopback ports
  loadgen wait-port ADDR [TIMEOUT_MS]     wait until ADDR accepts connections
  loadgen serve [--echo ADDR] [--bulk ADDR]
  loadgen bulk --target ADDR [--proxy ADDR] --bytes N --dir up|down
  loadgen rate --target ADDR [--proxy ADDR] --conc N --secs S [--msg BYTES]
  loadgen idle --target ADDR --proxy ADDR --count N --pid PID [--settle-ms MS]
  loadgen hold --target ADDR --proxy ADDR --tunnels N [--idle-http M] --secs S
  loadgen ws-serve --addr ADDR
  loadgen ws-echo --target ADDR [--proxy ADDR] --conc N --secs S [--msg BYTES]
                  [--per-conn M] [--total T] [--pid PID]
  loadgen ws-bulk --target ADDR [--proxy ADDR] --bytes N [--size BYTES]

bulk protocol (bulk server): client sends 'U' or 'D' + u64 big-endian length;
'U': client sends that many bytes, server answers one byte 'K' at the end;
'D': server sends that many bytes.";

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("loadgen: {msg}");
    exit(2)
}

/// `--key value` options after the subcommand.
struct Opts(Vec<(String, String)>);

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let Some(key) = k.strip_prefix("--") else {
                die(format!("unexpected argument `{k}`\n{USAGE}"))
            };
            let v = it
                .next()
                .unwrap_or_else(|| die(format!("--{key} needs a value")));
            out.push((key.to_string(), v.clone()));
        }
        Opts(out)
    }
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    fn req(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| die(format!("--{key} is required\n{USAGE}")))
    }
    fn num(&self, key: &str, default: Option<u64>) -> u64 {
        match self.get(key) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| die(format!("--{key}: `{v}` is not a number"))),
            None => default.unwrap_or_else(|| die(format!("--{key} is required"))),
        }
    }
    fn addr(&self, key: &str) -> SocketAddr {
        let v = self.req(key);
        v.parse()
            .unwrap_or_else(|_| die(format!("--{key}: `{v}` is not an IP:port")))
    }
    fn opt_addr(&self, key: &str) -> Option<SocketAddr> {
        self.get(key).map(|v| {
            v.parse()
                .unwrap_or_else(|_| die(format!("--{key}: `{v}` is not an IP:port")))
        })
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        die(USAGE)
    };
    let rest = &args[1..];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(format!("cannot start runtime: {e}")));
    let local = tokio::task::LocalSet::new();
    match cmd.as_str() {
        "ports" => ports(rest),
        "wait-port" => rt.block_on(wait_port(rest)),
        "serve" => local.block_on(&rt, serve(Opts::parse(rest))),
        "bulk" => rt.block_on(bulk(Opts::parse(rest))),
        "rate" => local.block_on(&rt, rate(Opts::parse(rest))),
        "idle" => local.block_on(&rt, idle(Opts::parse(rest))),
        "hold" => local.block_on(&rt, hold(Opts::parse(rest))),
        "ws-serve" => local.block_on(&rt, ws::serve(Opts::parse(rest))),
        "ws-echo" => local.block_on(&rt, ws::echo(Opts::parse(rest))),
        "ws-bulk" => local.block_on(&rt, ws::bulk(Opts::parse(rest))),
        _ => die(USAGE),
    }
}

fn ports(rest: &[String]) {
    let n: usize = rest
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| die(USAGE));
    // Hold all of them at once so the N ports are distinct.
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|e| die(format!("cannot bind a free port: {e}")))
        })
        .collect();
    let list: Vec<String> = held
        .iter()
        .map(|l| l.local_addr().unwrap().port().to_string())
        .collect();
    println!("{}", list.join(" "));
}

async fn wait_port(rest: &[String]) {
    let addr: SocketAddr = rest
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| die(USAGE));
    let timeout_ms: u64 = rest.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if Instant::now() >= deadline {
            die(format!("{addr} did not accept connections within {timeout_ms} ms"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- servers

async fn serve(o: Opts) {
    let echo = o.opt_addr("echo");
    let bulk = o.opt_addr("bulk");
    if echo.is_none() && bulk.is_none() {
        die("serve needs --echo and/or --bulk");
    }
    let mut tasks = Vec::new();
    if let Some(a) = echo {
        let l = TcpListener::bind(a)
            .await
            .unwrap_or_else(|e| die(format!("cannot listen on {a}: {e}")));
        tasks.push(tokio::task::spawn_local(accept_loop(l, true)));
    }
    if let Some(a) = bulk {
        let l = TcpListener::bind(a)
            .await
            .unwrap_or_else(|e| die(format!("cannot listen on {a}: {e}")));
        tasks.push(tokio::task::spawn_local(accept_loop(l, false)));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn accept_loop(l: TcpListener, echo: bool) {
    loop {
        match l.accept().await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                if echo {
                    tokio::task::spawn_local(echo_conn(s));
                } else {
                    tokio::task::spawn_local(bulk_conn(s));
                }
            }
            Err(e) => {
                eprintln!("loadgen serve: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn echo_conn(mut s: TcpStream) {
    // Small buffer: idle echo connections should cost the server little.
    let mut buf = [0u8; 2048];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn bulk_conn(mut s: TcpStream) {
    let mut head = [0u8; 9];
    if s.read_exact(&mut head).await.is_err() {
        return;
    }
    let len = u64::from_be_bytes(head[1..9].try_into().unwrap());
    let mut buf = vec![0u8; 64 * 1024];
    match head[0] {
        b'U' => {
            let mut left = len;
            while left > 0 {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left = left.saturating_sub(n as u64),
                }
            }
            let _ = s.write_all(b"K").await;
        }
        b'D' => {
            let mut left = len;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                if s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                left -= n as u64;
            }
        }
        _ => return,
    }
    // Let the client close first; then we go.
    let _ = s.read(&mut buf).await;
}

// ---------------------------------------------------------------- clients

/// Connects to `target`, through `proxy` with CONNECT when given.
async fn open(target: SocketAddr, proxy: Option<SocketAddr>) -> Result<TcpStream, String> {
    let addr = proxy.unwrap_or(target);
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    if proxy.is_some() {
        let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write CONNECT: {e}"))?;
        let mut head = Vec::with_capacity(128);
        let mut buf = [0u8; 512];
        loop {
            let n = s
                .read(&mut buf)
                .await
                .map_err(|e| format!("read CONNECT answer: {e}"))?;
            if n == 0 {
                return Err("proxy closed before answering CONNECT".into());
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(pos) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                if pos + 4 != head.len() {
                    return Err("bytes after the CONNECT answer".into());
                }
                break;
            }
            if head.len() > 8192 {
                return Err("CONNECT answer head too long".into());
            }
        }
        let line = String::from_utf8_lossy(&head);
        let status = line.lines().next().unwrap_or("");
        if !(status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200")) {
            return Err(format!("CONNECT refused: {status}"));
        }
    }
    Ok(s)
}

async fn bulk(o: Opts) {
    let target = o.addr("target");
    let proxy = o.opt_addr("proxy");
    let bytes = o.num("bytes", None);
    let dir = o.req("dir").to_string();
    let mut s = open(target, proxy).await.unwrap_or_else(|e| die(e));
    let mut head = [0u8; 9];
    head[0] = match dir.as_str() {
        "up" => b'U',
        "down" => b'D',
        _ => die("--dir must be up or down"),
    };
    head[1..9].copy_from_slice(&bytes.to_be_bytes());
    let mut buf = vec![0u8; 64 * 1024];
    let start = Instant::now();
    s.write_all(&head).await.unwrap_or_else(|e| die(e));
    if dir == "up" {
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            s.write_all(&buf[..n])
                .await
                .unwrap_or_else(|e| die(format!("write: {e}")));
            left -= n as u64;
        }
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack)
            .await
            .unwrap_or_else(|e| die(format!("read ack: {e}")));
    } else {
        let mut left = bytes;
        while left > 0 {
            match s.read(&mut buf).await {
                Ok(0) => die(format!("EOF with {left} bytes still to come")),
                Ok(n) => left = left.saturating_sub(n as u64),
                Err(e) => die(format!("read: {e}")),
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "RESULT bytes={bytes} secs={secs:.6} mib_per_s={:.1}",
        bytes as f64 / (1024.0 * 1024.0) / secs
    );
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Each of `conc` clients loops open (CONNECT when proxied) → write `msg`
/// bytes → read them back → close, for `secs` seconds.
async fn rate(o: Opts) {
    let target = o.addr("target");
    let proxy = o.opt_addr("proxy");
    let conc = o.num("conc", Some(20)) as usize;
    let secs = o.num("secs", Some(10));
    let msg = o.num("msg", Some(64)) as usize;
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let errors_shown = Rc::new(std::cell::Cell::new(0u32));
    let mut tasks = Vec::new();
    let start = Instant::now();
    for _ in 0..conc {
        let shown = errors_shown.clone();
        tasks.push(tokio::task::spawn_local(async move {
            let out = vec![b'x'; msg];
            let mut back = vec![0u8; msg];
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            while Instant::now() < stop_at {
                let t0 = Instant::now();
                let r: Result<(), String> = async {
                    let mut s = open(target, proxy).await?;
                    s.write_all(&out).await.map_err(|e| format!("write: {e}"))?;
                    s.read_exact(&mut back)
                        .await
                        .map_err(|e| format!("read echo: {e}"))?;
                    Ok(())
                }
                .await;
                match r {
                    Ok(()) => lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32),
                    Err(e) => {
                        errors += 1;
                        if shown.get() < 5 {
                            shown.set(shown.get() + 1);
                            eprintln!("loadgen rate: {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.unwrap();
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "RESULT ok={} errors={} secs={:.3} per_s={:.0} p50_us={} p99_us={}",
        all.len(),
        errors,
        elapsed,
        all.len() as f64 / elapsed,
        percentile(&all, 0.50),
        percentile(&all, 0.99)
    );
}

fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| die(format!("cannot read /proc/{pid}/status: {e}")));
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| die(format!("no VmRSS in /proc/{pid}/status")))
}

/// Opens `count` CONNECT tunnels and keeps them idle, reading the proxy's
/// RSS (process `pid`) before, with the tunnels open, after one 1-byte echo
/// through each, and after closing them all.
async fn idle(o: Opts) {
    let target = o.addr("target");
    let proxy = o.addr("proxy");
    let count = o.num("count", None) as usize;
    let pid = o.num("pid", None) as u32;
    let settle = Duration::from_millis(o.num("settle-ms", Some(2000)));
    const BATCH: usize = 200;

    tokio::time::sleep(settle).await;
    let rss_before = rss_kib(pid);

    let t0 = Instant::now();
    let mut tunnels: Vec<TcpStream> = Vec::with_capacity(count);
    while tunnels.len() < count {
        let n = BATCH.min(count - tunnels.len());
        let batch: Vec<_> = (0..n)
            .map(|_| tokio::task::spawn_local(open(target, Some(proxy))))
            .collect();
        for t in batch {
            match t.await.unwrap() {
                Ok(s) => tunnels.push(s),
                Err(e) => die(format!(
                    "tunnel {} of {count} failed: {e}",
                    tunnels.len() + 1
                )),
            }
        }
    }
    let open_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let rss_open = rss_kib(pid);

    // One byte each way through every tunnel: proves they all work, and
    // shows what a tunnel that has carried data costs while idle.
    let mut i = 0;
    while i < tunnels.len() {
        let end = (i + BATCH).min(tunnels.len());
        let batch: Vec<TcpStream> = tunnels.drain(i..end).collect();
        let tasks: Vec<_> = batch
            .into_iter()
            .map(|mut s| {
                tokio::task::spawn_local(async move {
                    s.write_all(b"x").await.map_err(|e| e.to_string())?;
                    let mut b = [0u8; 1];
                    s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
                    Ok::<TcpStream, String>(s)
                })
            })
            .collect();
        let mut back = Vec::with_capacity(tasks.len());
        for t in tasks {
            match t.await.unwrap() {
                Ok(s) => back.push(s),
                Err(e) => die(format!("echo through an idle tunnel failed: {e}")),
            }
        }
        let k = back.len();
        tunnels.splice(i..i, back);
        i += k;
    }
    tokio::time::sleep(settle).await;
    let rss_used = rss_kib(pid);

    drop(tunnels);
    tokio::time::sleep(settle + Duration::from_secs(1)).await;
    let rss_closed = rss_kib(pid);

    let per = |after: u64| (after as f64 - rss_before as f64) / count as f64;
    println!(
        "RESULT count={count} open_secs={open_secs:.2} rss_before_kib={rss_before} \
         rss_open_kib={rss_open} rss_used_kib={rss_used} rss_closed_kib={rss_closed} \
         per_tunnel_open_kib={:.2} per_tunnel_used_kib={:.2}",
        per(rss_open),
        per(rss_used)
    );
}

/// Opens `tunnels` CONNECT tunnels to `target` and `idle-http` plain
/// connections to the proxy that never send a request, prints one RESULT
/// line, then holds them all for `secs` seconds (the caller usually kills
/// it sooner). For measuring a proxy with many live connections.
async fn hold(o: Opts) {
    let target = o.addr("target");
    let proxy = o.addr("proxy");
    let tunnels = o.num("tunnels", None) as usize;
    let idle_http = o.num("idle-http", Some(0)) as usize;
    let secs = o.num("secs", None);
    const BATCH: usize = 200;

    let t0 = Instant::now();
    let mut held: Vec<TcpStream> = Vec::with_capacity(tunnels + idle_http);
    while held.len() < tunnels {
        let n = BATCH.min(tunnels - held.len());
        let batch: Vec<_> = (0..n)
            .map(|_| tokio::task::spawn_local(open(target, Some(proxy))))
            .collect();
        for t in batch {
            match t.await.unwrap() {
                Ok(s) => held.push(s),
                Err(e) => die(format!(
                    "tunnel {} of {tunnels} failed: {e}",
                    held.len() + 1
                )),
            }
        }
    }
    for i in 0..idle_http {
        match TcpStream::connect(proxy).await {
            Ok(s) => held.push(s),
            Err(e) => die(format!(
                "idle connection {} of {idle_http} failed: {e}",
                i + 1
            )),
        }
    }
    println!(
        "RESULT tunnels={tunnels} idle_http={idle_http} open_secs={:.2}",
        t0.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(secs)).await;
    drop(held);
}
