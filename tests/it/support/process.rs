//! The real `sluice` binary as a child process, and /proc readers for it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

impl SluiceProcess {
    /// Starts `sluice --listen 127.0.0.1:0 ARGS...` and waits for it to listen.
    pub fn start(args: &[&str]) -> SluiceProcess {
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(admin_args)
            .args(store_args)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sluice binary starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let out = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        let out2 = out.clone();
        std::thread::spawn(move || {
            let mut tx = Some(url_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("sluice admin UI: ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line.clone());
                    }
                }
                out2.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("sluice listening") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line.clone());
                    }
                }
                log2.lock().unwrap().push(line);
            }
        });
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
        if let (Some(a), Some(t)) = (admin, &admin_token) {
            super::admin::remember(a, t);
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

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    pub fn fd_count(&self) -> usize {
        fd_count(self.pid())
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn out_text(&self) -> String {
        self.out.lock().unwrap().join("\n")
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

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The highest resident set `pid` has had (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// A `/proc/PID/status` figure given in kB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
