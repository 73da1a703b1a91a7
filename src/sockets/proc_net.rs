//! Parser for `/proc/net/tcp` and `/proc/net/tcp6`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    Established,
    SynSent,
    SynRecv,
    FinWait1,
    FinWait2,
    TimeWait,
    Close,
    CloseWait,
    LastAck,
    Listen,
    Closing,
    Other,
}

impl TcpState {
    fn from_hex(code: &str) -> TcpState {
        match u8::from_str_radix(code, 16).unwrap_or(0) {
            0x01 => TcpState::Established,
            0x02 => TcpState::SynSent,
            0x03 => TcpState::SynRecv,
            0x04 => TcpState::FinWait1,
            0x05 => TcpState::FinWait2,
            0x06 => TcpState::TimeWait,
            0x07 => TcpState::Close,
            0x08 => TcpState::CloseWait,
            0x09 => TcpState::LastAck,
            0x0A => TcpState::Listen,
            0x0B => TcpState::Closing,
            _ => TcpState::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TcpState::Established => "ESTABLISHED",
            TcpState::SynSent => "SYN_SENT",
            TcpState::SynRecv => "SYN_RECV",
            TcpState::FinWait1 => "FIN_WAIT1",
            TcpState::FinWait2 => "FIN_WAIT2",
            TcpState::TimeWait => "TIME_WAIT",
            TcpState::Close => "CLOSE",
            TcpState::CloseWait => "CLOSE_WAIT",
            TcpState::LastAck => "LAST_ACK",
            TcpState::Listen => "LISTEN",
            TcpState::Closing => "CLOSING",
            TcpState::Other => "OTHER",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TcpRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: TcpState,
    /// The `tr` column: 0 none, 1 retransmit/probe, 2 keepalive, 3 TIME_WAIT, 4 zero-window probe.
    pub timer: u8,
    pub inode: u64,
}

impl TcpRow {
    pub fn timer_name(&self) -> &'static str {
        match self.timer {
            0 => "none",
            1 => "retransmit",
            2 => "keepalive",
            3 => "time_wait",
            4 => "zero_window_probe",
            _ => "other",
        }
    }
}

fn parse_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    match ip.len() {
        8 => {
            let v = u32::from_str_radix(ip, 16).ok()?;
            // The kernel prints the address as a native-endian u32.
            Some(SocketAddr::from((
                Ipv4Addr::from(u32::from_be(v.to_le())),
                port,
            )))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let word = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_le_bytes());
            }
            Some(SocketAddr::from((Ipv6Addr::from(bytes), port)))
        }
        _ => None,
    }
}

/// Parses one `/proc/net/tcp*` line.
pub fn parse_line(line: &str) -> Option<TcpRow> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 {
        return None;
    }
    let timer = f[5]
        .split(':')
        .next()
        .and_then(|t| u8::from_str_radix(t, 16).ok())?;
    Some(TcpRow {
        local: parse_addr(f[1])?,
        remote: parse_addr(f[2])?,
        state: TcpState::from_hex(f[3]),
        timer,
        inode: f[9].parse().ok()?,
    })
}

/// Every TCP socket of this network namespace, by inode.
pub fn tcp_table() -> std::io::Result<HashMap<u64, TcpRow>> {
    let mut map = HashMap::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in text.lines().skip(1) {
            if let Some(row) = parse_line(line) {
                if row.inode != 0 {
                    map.insert(row.inode, row);
                }
            }
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_v6_lines() {
        let v4 = "   1: 0100007F:22C3 0100007F:A1B2 01 00000000:00000000 02:000003E8 00000000     0        0 424242 2 0000000000000000 20 4 30 10 -1";
        let r = parse_line(v4).unwrap();
        assert_eq!(r.local, "127.0.0.1:8899".parse().unwrap());
        assert_eq!(r.remote, "127.0.0.1:41394".parse().unwrap());
        assert_eq!(r.state, TcpState::Established);
        assert_eq!(r.timer_name(), "keepalive");
        assert_eq!(r.inode, 424242);
        let v6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1 0000000000000000 100 0 0 10 0";
        let r = parse_line(v6).unwrap();
        assert_eq!(r.local, "[::1]:8080".parse().unwrap());
        assert_eq!(r.state, TcpState::Listen);
        assert_eq!(r.timer_name(), "none");
    }

    #[test]
    fn reads_the_live_table() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ino = crate::registry::socket_inode(&l).unwrap();
        let t = tcp_table().unwrap();
        let row = t.get(&ino).expect("our listener is in /proc/net/tcp");
        assert_eq!(row.local, l.local_addr().unwrap());
        assert_eq!(row.state, TcpState::Listen);
    }
}
