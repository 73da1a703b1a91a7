//! Why a connection closed, and who failed.
//!
//! One enum for every close path, so logs, metrics, records and the
//! inventory all speak the same words.

use std::fmt;
use std::io;

/// Which party a failure is attributed to (pingora's `ErrorSource` idea).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Sluice,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Sluice => "sluice",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Both directions finished cleanly (or the peer closed an idle connection).
    Eof,
    /// A peer reset the connection.
    Reset(Side),
    /// No bytes either way for the idle timeout.
    IdleTimeout,
    /// A half-closed connection outlived its grace period.
    HalfCloseTimeout,
    /// The client did not send a complete request head in time.
    HeaderTimeout,
    /// The upstream did not accept the connection in time.
    ConnectTimeout,
    /// The upstream did not send a response head in time.
    ResponseTimeout,
    /// Keepalive probes or TCP_USER_TIMEOUT declared the peer dead.
    DeadPeer(Side),
    /// Refused because the connection limit was reached.
    RefusedAtLimit,
    /// Closed through the admin API.
    KilledByAdmin,
    /// Closed at the end of a shutdown drain.
    Shutdown,
    /// Any other failure, with the side at fault and a short description.
    Error(Side, String),
}

impl CloseReason {
    /// Every label [`CloseReason::label`] can return.
    pub const LABELS: [&'static str; 12] = [
        "eof",
        "reset",
        "idle_timeout",
        "half_close_timeout",
        "header_timeout",
        "connect_timeout",
        "response_timeout",
        "dead_peer",
        "limit_refused",
        "admin_kill",
        "shutdown",
        "error",
    ];

    /// Stable label used in metrics and counters.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::Eof => "eof",
            CloseReason::Reset(_) => "reset",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::HalfCloseTimeout => "half_close_timeout",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::ConnectTimeout => "connect_timeout",
            CloseReason::ResponseTimeout => "response_timeout",
            CloseReason::DeadPeer(_) => "dead_peer",
            CloseReason::RefusedAtLimit => "limit_refused",
            CloseReason::KilledByAdmin => "admin_kill",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Error(..) => "error",
        }
    }

    /// Who failed, where that is meaningful.
    pub fn side(&self) -> Option<Side> {
        match self {
            CloseReason::Reset(s) | CloseReason::DeadPeer(s) | CloseReason::Error(s, _) => Some(*s),
            CloseReason::ConnectTimeout | CloseReason::ResponseTimeout => Some(Side::Upstream),
            CloseReason::HeaderTimeout => Some(Side::Client),
            _ => None,
        }
    }

    /// Classifies an I/O error seen on the leg facing `side`.
    pub fn from_io(side: Side, err: &io::Error) -> CloseReason {
        match err.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => CloseReason::Reset(side),
            // ETIMEDOUT on an established socket comes from keepalive probes
            // or TCP_USER_TIMEOUT: the peer is gone.
            io::ErrorKind::TimedOut => CloseReason::DeadPeer(side),
            _ if err.raw_os_error() == Some(libc::EHOSTUNREACH)
                || err.raw_os_error() == Some(libc::ENETUNREACH) =>
            {
                CloseReason::DeadPeer(side)
            }
            _ => CloseReason::Error(side, err.to_string()),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Reset(s) => write!(f, "reset by {}", s.as_str()),
            CloseReason::DeadPeer(s) => write!(f, "dead peer ({})", s.as_str()),
            CloseReason::Error(s, msg) => write!(f, "error at {}: {}", s.as_str(), msg),
            other => f.write_str(other.label()),
        }
    }
}
