//! sluice under test. In-process: [`start`] runs the library's
//! `Proxy::start` on an ephemeral loopback port, on the test's runtime. As
//! the real binary: [`SluiceProcess`] (and [`spawn`], which starts one off
//! the async threads) is a child process with its own sockets, memory and
//! signals, which is what a test measuring any of those needs, since
//! every test shares this process. [`run_cli`] runs one of the binary's
//! commands to completion.
//!
//! Every admin server started here tells [`super::admin`] its generated
//! token, so the admin helpers carry it.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice::{Config, Proxy};

use super::admin;

/// Starts an in-process proxy on an ephemeral loopback port, with `tweak`
/// applied to the defaults.
pub async fn start(tweak: impl FnOnce(&mut Config)) -> Proxy {
    try_start(tweak).await.expect("proxy starts")
}

/// [`start`], returning the start error instead of panicking.
pub async fn try_start(tweak: impl FnOnce(&mut Config)) -> Result<Proxy, sluice::StartError> {
    share_fd_limit();
    let mut c = Config {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    };
    tweak(&mut c);
    let p = Proxy::start(c).await?;
    if let Some(a) = p.admin_addr {
        match (p.admin_token(), p.admin_token_generated()) {
            (Some(t), true) => admin::remember(a, t),
            _ => admin::forget(a),
        }
    }
    Ok(p)
}

/// Raises this process's soft descriptor limit to the hard one, once.
/// Every test shares the limit, and a test with an in-process proxy holds
/// both ends of each of its connections (one test holds 400 admin
/// connections): the common soft default of 1024 is one busy test away.
fn share_fd_limit() {
    static RAISED: std::sync::Once = std::sync::Once::new();
    RAISED.call_once(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
        }
    });
}

/// A running `sluice` process; killed (SIGKILL) on drop if still running.
pub struct SluiceProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub relay_addrs: Vec<SocketAddr>,
    /// The admin server address, unless started with `--admin off`.
    pub admin: Option<SocketAddr>,
    /// Every stderr line so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Every stdout line so far (the admin UI's address is printed there).
    pub out: Arc<Mutex<Vec<String>>>,
    /// The admin token generated at start (read from the printed address).
    pub admin_token: Option<String>,
}

/// Starts `sluice --listen 127.0.0.1:0 ARGS...` (see
/// [`SluiceProcess::start`]) without blocking the async worker.
pub async fn spawn(args: &[&str]) -> SluiceProcess {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        SluiceProcess::start(&args)
    })
    .await
    .expect("the thread starting sluice does not panic")
}

/// Every line of `stream` into `lines`; the first line containing
/// `needle` also to `first`.
fn collect_lines(
    stream: impl Read + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
    needle: &'static str,
    first: std::sync::mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        let mut first = Some(first);
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if line.contains(needle) {
                if let Some(tx) = first.take() {
                    let _ = tx.send(line.clone());
                }
            }
            lock(&lines).push(line);
        }
    });
}

/// The lines collected so far, also after a reader thread panicked.
fn lock(lines: &Mutex<Vec<String>>) -> std::sync::MutexGuard<'_, Vec<String>> {
    lines.lock().unwrap_or_else(|e| e.into_inner())
}

impl SluiceProcess {
    /// Starts `sluice --listen 127.0.0.1:0 ARGS...` and waits for it to listen.
    pub fn start(args: &[&str]) -> SluiceProcess {
        SluiceProcess::start_with(args, |_| {})
    }

    /// [`start`](Self::start), with `tweak` applied to the command first
    /// (its environment, its working folder).
    pub fn start_with(args: &[&str], tweak: impl FnOnce(&mut Command)) -> SluiceProcess {
        // An ephemeral admin port too, unless the test chooses one: tests
        // run in parallel and must not fight over the default 8900.
        // Records stay in memory unless the test names a folder: parallel
        // tests must not share the user's record store.
        let store_args: &[&str] = if args.contains(&"--data-dir") {
            &[]
        } else {
            &["--data-dir", ":memory:"]
        };
        let admin_args: &[&str] = if args.contains(&"--admin") {
            &[]
        } else {
            &["--admin", "127.0.0.1:0"]
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .args(admin_args)
            .args(store_args)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tweak(&mut cmd);
        let mut child = cmd.spawn().expect("sluice binary starts");
        let out = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        collect_lines(
            child.stdout.take().expect("stdout piped"),
            out.clone(),
            "sluice admin UI: ",
            url_tx,
        );
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        collect_lines(
            child.stderr.take().expect("stderr piped"),
            log.clone(),
            "sluice listening",
            tx,
        );
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("sluice reports its listening address");
        let addr = field(&line, "proxy=").expect("proxy= in listening line");
        let relay_addrs = line
            .split("relays=[")
            .nth(1)
            .map(|r| {
                r.trim_end_matches(']')
                    .split(", ")
                    .filter_map(|a| a.trim_end_matches(']').parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let admin = field(&line, "admin=");
        // The address is printed right after the listening line.
        let admin_token = match admin {
            Some(_) => url_rx
                .recv_timeout(Duration::from_secs(5))
                .ok()
                .and_then(|l| l.split("?token=").nth(1).map(|t| t.trim().to_string())),
            None => None,
        };
        match (admin, &admin_token) {
            (Some(a), Some(t)) => admin::remember(a, t),
            (Some(a), None) => admin::forget(a),
            (None, _) => {}
        }
        SluiceProcess {
            child,
            addr,
            relay_addrs,
            admin,
            log,
            out,
            admin_token,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for exit up to `within`; returns the exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// [`wait_exit`](Self::wait_exit) from an async test, without holding
    /// up the other tasks of its runtime.
    pub fn wait_exit_in_place(&mut self, within: Duration) -> Option<i32> {
        tokio::task::block_in_place(|| self.wait_exit(within))
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmRSS:")
    }

    /// The highest resident set the process has had (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_kib(self.pid(), "VmHWM:")
    }

    /// Open file descriptors.
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        lock(&self.log).join("\n")
    }

    pub fn out_text(&self) -> String {
        lock(&self.out).join("\n")
    }
}

impl Drop for SluiceProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn field(line: &str, key: &str) -> Option<SocketAddr> {
    line.split(key)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A `/proc/PID/status` figure given in kB (0 when unreadable).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// What a finished CLI run left behind.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `sluice ARGS...` to completion (killed and reported after
/// `within`), off the async worker threads. The environment's admin token
/// is removed so only `args` decide; a client command (`doctor`, `top`,
/// `records`, `har`) aimed with `--admin` at a server whose token the
/// support layer generated gets that token, as a user's would from the
/// token file, unless `args` name a token or a data dir themselves.
pub async fn run_cli(args: &[&str], within: Duration) -> CliRun {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let client = matches!(
        args.first().map(String::as_str),
        Some("doctor" | "top" | "records" | "har")
    );
    let own = args.iter().any(|a| {
        matches!(
            a.as_str(),
            "--admin-token" | "--token" | "--admin-token-file" | "--data-dir"
        )
    });
    let token = if client && !own {
        args.iter()
            .position(|a| a == "--admin")
            .and_then(|i| args.get(i + 1))
            .and_then(|a| a.parse().ok())
            .and_then(admin::token_of)
    } else {
        None
    };
    run_cli_off_thread(args, token, within).await
}

/// [`run_cli`] with exactly `token` in `SLUICE_ADMIN_TOKEN` (none: unset).
pub async fn run_cli_with_token(args: &[&str], token: Option<&str>, within: Duration) -> CliRun {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run_cli_off_thread(args, token.map(str::to_string), within).await
}

async fn run_cli_off_thread(args: Vec<String>, token: Option<String>, within: Duration) -> CliRun {
    tokio::task::spawn_blocking(move || run_cli_blocking(&args, token.as_deref(), within))
        .await
        .expect("the thread running sluice does not panic")
}

/// Runs `sluice ARGS...` to completion on this thread, with exactly
/// `token` in `SLUICE_ADMIN_TOKEN` (none: unset); panics (after killing
/// it) if it still runs after `within`.
pub fn run_cli_blocking<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(
    args: &[S],
    token: Option<&str>,
    within: Duration,
) -> CliRun {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args).env_remove("SLUICE_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("SLUICE_ADMIN_TOKEN", t);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sluice binary starts");
    // Drain both pipes on threads so a chatty child never blocks.
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for sluice") {
            break status.code();
        }
        if start.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sluice {args:?} still running after {within:?}; stderr so far: {}",
                t_err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliRun {
        code,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    }
}
