//! The kernel's view of sockets, for tests that must not trust sluice's own
//! bookkeeping: network namespaces with a veth link (so a peer can vanish
//! without FIN or RST), `/proc/net/tcp*` tables, the socket inodes a
//! process holds, and socket options read from another process's fds.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// TCP states as numbered in `/proc/net/tcp`.
pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_LISTEN: u8 = 0x0A;

static NEXT_NS: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new("ip").args(args).output()
}

fn ip_ok(args: &[&str]) {
    let out = ip(args).expect("`ip` runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace joined to the root namespace by a veth pair:
/// `host_ip` (10.213.X.1/30) on the root side, `ns_ip` (10.213.X.2/30)
/// inside. Deleted on drop, also when the test panics.
pub struct Netns {
    pub name: String,
    pub host_if: String,
    pub ns_if: String,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
}

impl Netns {
    /// Creates `sluice-t-<pid>-<n>` with a fresh /30 in 10.213.0.0/16 that
    /// no interface of the root namespace uses yet.
    pub fn create() -> Netns {
        let pid = std::process::id();
        let n = NEXT_NS.fetch_add(1, Ordering::Relaxed);
        // Choosing a free /30 and taking it is one step: tests creating
        // namespaces at once (threads of this process, or another test
        // process on the machine) would otherwise pick the same one.
        let _choosing = SubnetLock::take();
        let used =
            String::from_utf8_lossy(&ip(&["-o", "-4", "addr", "show"]).expect("`ip` runs").stdout)
                .into_owned();
        let third = (0..250u32)
            .map(|i| ((pid.wrapping_mul(7) + n * 3 + i) % 250 + 1) as u8)
            .find(|x| !used.contains(&format!("10.213.{x}.")))
            .expect("a free 10.213.X.0/30");
        let ns = Netns {
            name: format!("sluice-t-{pid}-{n}"),
            host_if: format!("slh{pid}x{n}"),
            ns_if: format!("sln{pid}x{n}"),
            host_ip: Ipv4Addr::new(10, 213, third, 1),
            ns_ip: Ipv4Addr::new(10, 213, third, 2),
        };
        // From here on, Drop cleans up whatever was created.
        ip_ok(&["netns", "add", &ns.name]);
        ip_ok(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
        ]);
        ip_ok(&["link", "set", &ns.ns_if, "netns", &ns.name]);
        ip_ok(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        ip_ok(&["link", "set", &ns.host_if, "up"]);
        ns.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", ns.ns_ip),
            "dev",
            &ns.ns_if,
        ]);
        ns.exec_ok(&["ip", "link", "set", &ns.ns_if, "up"]);
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    fn exec_ok(&self, argv: &[&str]) {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(argv);
        ip_ok(&args);
    }

    /// Takes the namespace's end of the link down: from the root namespace
    /// the peer simply stops answering, with no FIN and no RST.
    pub fn cut_link(&self) {
        self.exec_ok(&["ip", "link", "set", &self.ns_if, "down"]);
    }
}

impl Netns {
    /// Removes the namespace's address while the link stays up: packets
    /// from the root namespace still go out and arrive, and are dropped
    /// without an answer (no local route, no forwarding). Unlike
    /// [`cut_link`](Self::cut_link), the sender's transmissions succeed, so
    /// this is a peer that went silent somewhere beyond the wire.
    pub fn silence(&self) {
        self.exec_ok(&["ip", "addr", "flush", "dev", &self.ns_if]);
    }
}

/// An exclusive `flock` on a file shared by every test process, held
/// while a namespace's subnet is chosen and assigned.
struct SubnetLock {
    _file: std::fs::File,
}

impl SubnetLock {
    fn take() -> SubnetLock {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join("sluice-tests-netns.lock"))
            .expect("open the netns subnet lock file");
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) };
        assert_eq!(
            rc,
            0,
            "flock the netns subnet lock: {}",
            std::io::Error::last_os_error()
        );
        SubnetLock { _file: file }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end and with it the peer;
        // the explicit delete covers a namespace that was never populated.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// One row of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Debug, Clone)]
pub struct TcpRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
    /// Bytes sent and not yet acknowledged (established sockets).
    pub tx_queue: u64,
    pub inode: u64,
}

fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip_hex, port_hex) = text.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    // The kernel prints each 32-bit word of the address in host order.
    let words: Vec<u32> = (0..ip_hex.len() / 8)
        .map(|i| u32::from_str_radix(&ip_hex[i * 8..i * 8 + 8], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let ip = match words.len() {
        1 => IpAddr::V4(Ipv4Addr::from(words[0].to_le_bytes())),
        4 => {
            let mut b = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Every TCP socket of the current network namespace, IPv4 and IPv6.
pub fn tcp_table() -> Vec<TcpRow> {
    let mut rows = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let (Some(local), Some(remote)) = (parse_addr(f[1]), parse_addr(f[2])) else {
                continue;
            };
            let (Ok(state), Ok(inode)) = (u8::from_str_radix(f[3], 16), f[9].parse()) else {
                continue;
            };
            let tx_queue = f[4]
                .split_once(':')
                .and_then(|(tx, _)| u64::from_str_radix(tx, 16).ok())
                .unwrap_or(0);
            rows.push(TcpRow {
                local,
                remote,
                state,
                tx_queue,
                inode,
            });
        }
    }
    rows
}

/// Socket inodes held open by `pid` (from `/proc/PID/fd`), with the fd.
pub fn socket_fds(pid: u32) -> Vec<(i32, u64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd: i32 = e.file_name().to_str()?.parse().ok()?;
        let target = std::fs::read_link(e.path()).ok()?;
        let inode = target
            .to_str()?
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        Some((fd, inode))
    })
    .collect()
}

/// The TCP sockets `pid` holds, as the kernel sees them.
pub fn tcp_sockets_of(pid: u32) -> Vec<(i32, TcpRow)> {
    let fds = socket_fds(pid);
    let inodes: HashSet<u64> = fds.iter().map(|(_, i)| *i).collect();
    let rows: Vec<TcpRow> = tcp_table()
        .into_iter()
        .filter(|r| r.inode != 0 && inodes.contains(&r.inode))
        .collect();
    fds.into_iter()
        .filter_map(|(fd, inode)| {
            rows.iter()
                .find(|r| r.inode == inode)
                .map(|r| (fd, r.clone()))
        })
        .collect()
}

/// A duplicate of `pid`'s descriptor `fd` (pidfd_getfd; needs ptrace
/// rights over `pid`). The socket it names is the very socket `pid` uses.
pub fn steal_fd(pid: u32, fd: i32) -> std::io::Result<OwnedFd> {
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
        if pidfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
        let dup = libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            fd,
            0,
        );
        if dup < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(dup as i32))
    }
}

/// An integer socket option of `fd`.
pub fn sockopt_int(fd: &OwnedFd, level: i32, name: i32) -> std::io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            level,
            name,
            &mut v as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(v)
}
