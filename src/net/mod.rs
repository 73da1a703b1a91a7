//! Sockets: listeners, the options every socket gets, upstream connects and
//! the client connection limit.
//!
//! Invariants: every accepted and every connected socket passes through
//! [`tune`] (keepalive idle/interval/count, TCP_USER_TIMEOUT, no Nagle)
//! before any byte is exchanged; every connect has a deadline; the limit
//! refuses at once and never queues.

mod connect;
mod listen;

pub use connect::{
    connect_upstream, connect_upstream_except, connect_upstream_timed, is_own_listener,
    split_host_port, ConnectError, ConnectErrorKind, ConnectTimes,
};
pub use listen::{accept_loop, bind, Admission, Limiter};

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

use crate::config::Keepalive;

/// Applies the per-socket options sluice guarantees on both legs.
pub fn tune<S: std::os::fd::AsFd>(socket: &S, ka: &Keepalive) -> io::Result<()> {
    let sock = SockRef::from(socket);
    let params = TcpKeepalive::new()
        .with_time(ka.idle)
        .with_interval(ka.interval)
        .with_retries(ka.count);
    sock.set_tcp_keepalive(&params)?;
    sock.set_tcp_user_timeout(Some(ka.user_timeout))?;
    sock.set_tcp_nodelay(true)?;
    Ok(())
}

/// Makes the next close of this socket abortive (RST), used to pass a reset
/// on to the other leg.
pub fn set_abortive_close(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
