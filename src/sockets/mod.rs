//! Kernel cross-check: the process's sockets as the kernel sees them,
//! compared with the registry.
//!
//! Reads `/proc/self/fd` (which descriptors are sockets, by inode) and
//! `/proc/net/tcp{,6}` (state, addresses and timer of every TCP socket of
//! this network namespace). A TCP socket this process holds that the
//! registry does not account for is an **orphan**; an ESTABLISHED socket
//! with no kernel timer armed (no keepalive) is **timer-less**. In a
//! healthy sluice both counts are 0.
//!
//! Invariant: an orphan, timer-less or keepalive-less socket is only
//! reported if it is seen so in two reads a short moment apart, so a
//! connection caught between accept, registration and tuning is not
//! reported.

mod proc_net;

pub use proc_net::{tcp_table, TcpRow, TcpState};

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::registry::Registry;

/// One TCP socket the process holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SocketRow {
    pub fd: i32,
    pub inode: u64,
    pub state: String,
    pub local: String,
    pub remote: String,
    /// The kernel timer armed on it: "keepalive", "retransmit", "time_wait",
    /// "zero_window_probe" or "none".
    pub timer: String,
    pub keepalive: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerCount {
    pub ip: String,
    pub sockets: usize,
}

/// What `GET /api/sockets` and `sluice doctor` report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SocketReport {
    /// TCP sockets held by this process (listeners included).
    pub total: usize,
    pub by_state: std::collections::BTreeMap<String, usize>,
    /// Peers with the most sockets (listeners excluded), most first.
    pub top_peers: Vec<PeerCount>,
    /// ESTABLISHED sockets with no kernel timer armed (what `ss -o` shows
    /// without `timer:`).
    pub without_timer: usize,
    /// ESTABLISHED sockets without SO_KEEPALIVE.
    pub without_keepalive: usize,
    /// Sockets the registry does not account for.
    pub orphans: Vec<SocketRow>,
    pub orphan_count: usize,
    pub timerless: Vec<SocketRow>,
    /// Socket inodes the registry knows.
    pub registry_sockets: usize,
}

impl SocketReport {
    pub fn healthy(&self) -> bool {
        self.orphan_count == 0 && self.without_timer == 0 && self.without_keepalive == 0
    }
}

/// Descriptors of this process that are sockets: (fd, inode).
pub fn own_socket_fds() -> std::io::Result<Vec<(i32, u64)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        if let Some(ino) = t
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((fd, ino));
        }
    }
    Ok(out)
}

fn keepalive_on(fd: i32) -> bool {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a c_int we own; a stale fd only yields an error.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            &mut val as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    rc == 0 && val != 0
}

fn scan(registry: &Registry) -> std::io::Result<(Vec<SocketRow>, HashSet<u64>)> {
    let fds = own_socket_fds()?;
    let table = tcp_table()?;
    let known = registry.known_inodes();
    let mut rows = Vec::new();
    for (fd, inode) in fds {
        let Some(row) = table.get(&inode) else {
            continue;
        };
        rows.push(SocketRow {
            fd,
            inode,
            state: row.state.as_str().to_string(),
            local: row.local.to_string(),
            remote: row.remote.to_string(),
            timer: row.timer_name().to_string(),
            keepalive: keepalive_on(fd),
        });
    }
    Ok((rows, known))
}

/// Whether a socket looks unaccounted for or untuned in one read.
fn suspicious(r: &SocketRow, known: &HashSet<u64>) -> bool {
    !known.contains(&r.inode)
        || (r.state == TcpState::Established.as_str() && (r.timer == "none" || !r.keepalive))
}

/// [`scan`] on a blocking thread: with ten thousand sockets it reads ten
/// thousand links and the table of every socket in the namespace, hundreds
/// of milliseconds that would otherwise stall the proxy's async workers.
async fn scan_blocking(
    registry: &Arc<Registry>,
) -> std::io::Result<(Vec<SocketRow>, HashSet<u64>)> {
    let registry = registry.clone();
    tokio::task::spawn_blocking(move || scan(&registry))
        .await
        .map_err(std::io::Error::other)?
}

/// Builds the report. Takes two reads `settle` apart to rule out sockets
/// caught between accept, registration and tuning (an accepted socket is
/// registered, then given keepalive: a read in between sees it bare).
pub async fn report(
    registry: &Arc<Registry>,
    top_n: usize,
    settle: Duration,
) -> std::io::Result<SocketReport> {
    let (first, known_first) = scan_blocking(registry).await?;
    let suspects: HashSet<u64> = first
        .iter()
        .filter(|r| suspicious(r, &known_first))
        .map(|r| r.inode)
        .collect();
    let (rows, known) = if suspects.is_empty() {
        (first, known_first)
    } else {
        tokio::time::sleep(settle).await;
        scan_blocking(registry).await?
    };
    let mut by_state: std::collections::BTreeMap<String, usize> = Default::default();
    let mut peers: HashMap<IpAddr, usize> = HashMap::new();
    let mut orphans = Vec::new();
    let mut timerless = Vec::new();
    let mut without_keepalive = 0;
    for r in &rows {
        *by_state.entry(r.state.clone()).or_insert(0) += 1;
        if r.state != TcpState::Listen.as_str() {
            if let Ok(addr) = r.remote.parse::<std::net::SocketAddr>() {
                *peers.entry(addr.ip()).or_insert(0) += 1;
            }
        }
        if r.state == TcpState::Established.as_str() && suspects.contains(&r.inode) {
            if r.timer == "none" {
                timerless.push(r.clone());
            }
            if !r.keepalive {
                without_keepalive += 1;
            }
        }
        if !known.contains(&r.inode) && suspects.contains(&r.inode) {
            orphans.push(r.clone());
        }
    }
    let mut top_peers: Vec<PeerCount> = peers
        .into_iter()
        .map(|(ip, sockets)| PeerCount {
            ip: ip.to_string(),
            sockets,
        })
        .collect();
    top_peers.sort_by(|a, b| b.sockets.cmp(&a.sockets).then(a.ip.cmp(&b.ip)));
    top_peers.truncate(top_n);
    Ok(SocketReport {
        total: rows.len(),
        by_state,
        top_peers,
        without_timer: timerless.len(),
        without_keepalive,
        orphan_count: orphans.len(),
        orphans,
        timerless,
        registry_sockets: known.len(),
    })
}
