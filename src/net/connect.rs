//! Upstream connects with a deadline, tuned sockets and errors that say
//! what failed in words a user can act on.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use super::tune;
use crate::config::{ConnectorConfig, Keepalive};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectErrorKind {
    /// The host name did not resolve.
    Dns,
    /// Every address refused the connection.
    Refused,
    /// No address accepted within the connect timeout.
    Timeout,
    /// Unreachable network/host or another socket error.
    Other,
    /// The target resolves to one of sluice's own listeners (a loop).
    OwnListener,
}

/// Why an upstream connect failed, naming the target.
#[derive(Debug)]
pub struct ConnectError {
    pub kind: ConnectErrorKind,
    pub target: String,
    pub detail: String,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ConnectErrorKind::Dns => {
                write!(
                    f,
                    "upstream {}: name not resolved ({})",
                    self.target, self.detail
                )
            }
            ConnectErrorKind::Refused => {
                write!(f, "upstream {} refused the connection", self.target)
            }
            ConnectErrorKind::Timeout => write!(
                f,
                "upstream {} did not accept the connection within {}",
                self.target, self.detail
            ),
            ConnectErrorKind::Other => write!(f, "upstream {}: {}", self.target, self.detail),
            ConnectErrorKind::OwnListener => write!(
                f,
                "upstream {} is sluice itself ({} is one of its own listeners)",
                self.target, self.detail
            ),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Splits `host:port` (IPv6 in brackets) into its parts.
pub fn split_host_port(target: &str) -> Option<(&str, u16)> {
    let (host, port) = target.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || port == 0 {
        return None;
    }
    Some((host, port))
}

/// Whether `addr` reaches one of `own` (sluice's listeners): the same
/// port on the listener's address, on any loopback or unspecified address,
/// or on any local address when the listener is bound to all of them.
/// IPv4-mapped IPv6 addresses count as their IPv4 form. Checked on the
/// address actually connected, so every spelling of a host (`127.1`,
/// `2130706433`, `[::ffff:127.0.0.1]`, a name resolving to loopback) is
/// caught.
pub fn is_own_listener(addr: SocketAddr, own: &[SocketAddr]) -> bool {
    let ip = addr.ip().to_canonical();
    own.iter().any(|l| {
        let lip = l.ip().to_canonical();
        l.port() == addr.port()
            && (ip == lip
                || ip.is_loopback()
                || ip.is_unspecified()
                || (lip.is_unspecified() && is_local_ip(ip)))
    })
}

/// A local interface address is one a socket can bind to.
fn is_local_ip(ip: std::net::IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Resolves and connects to `host:port` within the connector's connect
/// timeout, trying each address in turn, and tunes the socket (its
/// keepalive settings) before the first byte.
pub async fn connect_upstream(
    host: &str,
    port: u16,
    connector: &ConnectorConfig,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    connect_upstream_except(host, port, connector, &[]).await
}

/// [`connect_upstream`], refusing (before any connect) a target that
/// resolves to one of `own`, sluice's listeners: the loop and self-SSRF
/// guard, checked on resolved addresses so that no spelling of the host
/// gets around it.
pub async fn connect_upstream_except(
    host: &str,
    port: u16,
    connector: &ConnectorConfig,
    own: &[SocketAddr],
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    connect_upstream_timed(host, port, connector, own)
        .await
        .map(|(s, a, _)| (s, a))
}

/// How long the steps of a successful connect took.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectTimes {
    /// Name resolution (zero for an IP literal).
    pub dns: Duration,
    /// TCP connect, over every address tried.
    pub connect: Duration,
}

/// [`connect_upstream_except`], also reporting how long resolution and
/// connecting took (for request records).
pub async fn connect_upstream_timed(
    host: &str,
    port: u16,
    connector: &ConnectorConfig,
    own: &[SocketAddr],
) -> Result<(TcpStream, SocketAddr, ConnectTimes), ConnectError> {
    let (timeout, ka) = (connector.connect_timeout, &connector.keepalive);
    let started = std::time::Instant::now();
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let err = |kind, detail: String| ConnectError {
        kind,
        target: target.clone(),
        detail,
    };
    let attempt = async {
        let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| err(ConnectErrorKind::Dns, e.to_string()))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(err(ConnectErrorKind::Dns, "no addresses".into()));
        }
        if let Some(a) = addrs.iter().find(|a| is_own_listener(**a, own)) {
            return Err(err(ConnectErrorKind::OwnListener, a.to_string()));
        }
        let resolved = std::time::Instant::now();
        let mut last: Option<io::Error> = None;
        for addr in addrs {
            match connect_one(addr, ka).await {
                Ok(s) => {
                    let times = ConnectTimes {
                        dns: resolved - started,
                        connect: resolved.elapsed(),
                    };
                    return Ok((s, addr, times));
                }
                Err(e) => last = Some(e),
            }
        }
        let e = last.unwrap_or_else(|| io::Error::other("no address tried"));
        Err(match e.kind() {
            io::ErrorKind::ConnectionRefused => err(ConnectErrorKind::Refused, e.to_string()),
            io::ErrorKind::TimedOut => err(ConnectErrorKind::Timeout, e.to_string()),
            _ => err(ConnectErrorKind::Other, e.to_string()),
        })
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(err(
            ConnectErrorKind::Timeout,
            humantime::format_duration(timeout).to_string(),
        )),
    }
}

async fn connect_one(addr: SocketAddr, ka: &Keepalive) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    tune(&socket, ka)?;
    socket.connect(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listener_in_every_spelling() {
        let own: Vec<SocketAddr> = vec!["127.0.0.1:8900".parse().unwrap()];
        for a in [
            "127.0.0.1:8900",
            "127.0.0.2:8900",
            "0.0.0.0:8900",
            "[::1]:8900",
            "[::ffff:127.0.0.1]:8900",
        ] {
            assert!(is_own_listener(a.parse().unwrap(), &own), "{a}");
        }
        assert!(!is_own_listener("127.0.0.1:8901".parse().unwrap(), &own));
        assert!(!is_own_listener("192.0.2.1:8900".parse().unwrap(), &own));
        let all: Vec<SocketAddr> = vec!["0.0.0.0:8900".parse().unwrap()];
        assert!(is_own_listener("127.0.0.1:8900".parse().unwrap(), &all));
        assert!(!is_own_listener("192.0.2.1:8900".parse().unwrap(), &all));
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("example.com:443"),
            Some(("example.com", 443))
        );
        assert_eq!(split_host_port("[::1]:8080"), Some(("::1", 8080)));
        assert_eq!(split_host_port("example.com"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("h:0"), None);
        assert_eq!(split_host_port("h:99999"), None);
    }
}
