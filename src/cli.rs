//! Client commands that talk to a running instance through its admin API:
//! `sluice doctor` and `sluice top`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::admin::client;
use crate::metrics::history::Sample;
use crate::sockets::SocketReport;

#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Admin address of the running sluice.
    #[arg(long, value_name = "ADDR", default_value = crate::config::DEFAULT_ADMIN)]
    pub admin: SocketAddr,
    /// Bearer token [default: the one the instance wrote to
    /// DATA_DIR/admin.token].
    #[arg(
        long,
        value_name = "TOKEN",
        env = "SLUICE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// File holding the bearer token.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// The instance's data folder, where its generated token is read
    /// [default: the user's data directory, e.g. ~/.local/share/sluice].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
}

impl AdminArgs {
    /// The token to send, or a message saying why there is none.
    pub fn token(&self) -> Result<client::ClientToken, String> {
        client::ClientToken::resolve(
            self.admin_token.as_deref(),
            self.admin_token_file.as_deref(),
            self.data_dir.as_deref(),
        )
    }
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Print the raw JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// Stop after this many refreshes (default: until interrupted).
    #[arg(long, value_name = "N")]
    pub iterations: Option<u64>,
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("sluice: cannot start the runtime: {e}"))
        .ok()
}

/// Exit codes: 0 healthy, 1 orphans or timer-less sockets found, 2 the
/// instance could not be asked.
pub fn doctor(args: DoctorArgs) -> i32 {
    let Some(rt) = runtime() else { return 2 };
    let a = &args.admin;
    let token = match a.token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sluice doctor: {e}");
            return 2;
        }
    };
    let body = match rt.block_on(client::get(
        a.admin,
        "/api/sockets?top=10",
        token.as_deref(),
    )) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("sluice doctor: {}", token.explain(e));
            return 2;
        }
    };
    let report: SocketReport = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice doctor: unexpected answer from {}: {e}", a.admin);
            return 2;
        }
    };
    if args.json {
        println!("{}", String::from_utf8_lossy(&body));
    } else {
        print!("{}", render(&report, a.admin));
    }
    if report.healthy() {
        0
    } else {
        1
    }
}

pub fn render(r: &SocketReport, admin: SocketAddr) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "sluice doctor: instance at {admin}");
    let _ = writeln!(
        o,
        "  TCP sockets held:        {} (registry accounts for {})",
        r.total, r.registry_sockets
    );
    let mut states: Vec<_> = r.by_state.iter().collect();
    states.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let states: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
    let _ = writeln!(
        o,
        "  by state:                {}",
        if states.is_empty() {
            "-".into()
        } else {
            states.join(", ")
        }
    );
    let peers: Vec<String> = r
        .top_peers
        .iter()
        .map(|p| format!("{} ({})", p.ip, p.sockets))
        .collect();
    let _ = writeln!(
        o,
        "  top peers:               {}",
        if peers.is_empty() {
            "-".into()
        } else {
            peers.join(", ")
        }
    );
    let _ = writeln!(o, "  established, no timer:   {}", r.without_timer);
    let _ = writeln!(o, "  established, no keepalive: {}", r.without_keepalive);
    let _ = writeln!(o, "  orphans (not in registry): {}", r.orphan_count);
    for s in r.orphans.iter().chain(r.timerless.iter()).take(20) {
        let _ = writeln!(
            o,
            "    fd {} inode {} {} {} -> {} timer {}",
            s.fd, s.inode, s.state, s.local, s.remote, s.timer
        );
    }
    let _ = writeln!(
        o,
        "  verdict:                 {}",
        if r.healthy() {
            "healthy"
        } else {
            "LEAK SUSPECTED"
        }
    );
    o
}

fn human_bytes(b: f64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

pub fn top_line(s: &Sample) -> String {
    format!(
        "rss {:>10}  cpu {:>5.1}%  fds {:>6}  http {:>6}  tunnel {:>6}  relay {:>6}  upstream {:>6}  up {:>10}/s  down {:>10}/s  req {:>8.0}/s",
        human_bytes(s.rss_bytes as f64),
        s.cpu_percent,
        s.open_fds,
        s.http,
        s.tunnel,
        s.relay,
        s.upstream,
        human_bytes(s.bytes_up_per_s),
        human_bytes(s.bytes_down_per_s),
        s.requests_per_s
    )
}

/// Prints the newest history sample once a second.
pub fn top(args: TopArgs) -> i32 {
    let Some(rt) = runtime() else { return 2 };
    let a = &args.admin;
    let token = match a.token() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sluice top: {e}");
            return 2;
        }
    };
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut n = 0u64;
    let mut waited = Duration::ZERO;
    loop {
        let got = rt.block_on(client::get(
            a.admin,
            "/api/stats/history?last=1",
            token.as_deref(),
        ));
        match got {
            Ok(body) => {
                let samples: Vec<serde_json::Value> =
                    serde_json::from_slice(&body).unwrap_or_default();
                let Some(s) = samples.last().and_then(sample_from) else {
                    // A fresh instance has no sample until its sampler's
                    // first tick: wait for it rather than skip the line.
                    if waited < Duration::from_secs(5) {
                        std::thread::sleep(Duration::from_millis(100));
                        waited += Duration::from_millis(100);
                        continue;
                    }
                    eprintln!("sluice top: the instance reports no samples yet");
                    return 1;
                };
                {
                    if tty {
                        print!("\x1b[2K\r{}", top_line(&s));
                        let _ = std::io::Write::flush(&mut std::io::stdout());
                    } else {
                        println!("{}", top_line(&s));
                    }
                }
            }
            Err(e) => {
                eprintln!("sluice top: {}", token.explain(e));
                return 2;
            }
        }
        n += 1;
        if args.iterations.is_some_and(|max| n >= max) {
            if tty {
                println!();
            }
            return 0;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn sample_from(v: &serde_json::Value) -> Option<Sample> {
    let u = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0);
    Some(Sample {
        t: v.get("t")?.as_u64()?,
        rss_bytes: u("rss_bytes"),
        rss_anon_bytes: u("rss_anon_bytes"),
        rss_file_bytes: u("rss_file_bytes"),
        cpu_percent: f("cpu_percent"),
        open_fds: u("open_fds"),
        threads: u("threads"),
        http: u("http"),
        tunnel: u("tunnel"),
        relay: u("relay"),
        upstream: u("upstream"),
        bytes_up_per_s: f("bytes_up_per_s"),
        bytes_down_per_s: f("bytes_down_per_s"),
        requests_per_s: f("requests_per_s"),
    })
}
