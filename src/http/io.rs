//! The client side's meter: every byte read from a client stream is
//! reported to the connection's [`Activity`] (so the watchdog tells a slow
//! head from an idle keep-alive) and, on HTTP/1, fed to the framing
//! tracker (ambiguous heads are refused per head).
//!
//! The stream under it is a [`ClientStream`], so a CONNECT upgrade takes
//! the stream back from hyper (`Upgraded::downcast` to [`ClientIo`]) and
//! the tunnel reaches the TCP socket under it.

use std::sync::Arc;

use super::activity::Activity;
use super::framing::FramingTracker;
use crate::transport::{ClientStream, Meter, Metered};

/// A client stream as hyper serves it.
pub type ClientIo = Metered<ClientStream, ClientMeter>;

pub struct ClientMeter {
    activity: Arc<Activity>,
    /// HTTP/1 only: HTTP/2 frames its own messages.
    framing: Option<FramingTracker>,
    /// Whether a read may start a head (HTTP/1). On HTTP/2 a frame is not
    /// a request head (PING, SETTINGS, WINDOW_UPDATE arrive at any time),
    /// so the phase follows requests only.
    reads_start_heads: bool,
}

impl ClientMeter {
    pub fn http1(activity: Arc<Activity>) -> ClientMeter {
        ClientMeter {
            activity,
            framing: Some(FramingTracker::default()),
            reads_start_heads: true,
        }
    }

    pub fn http2(activity: Arc<Activity>) -> ClientMeter {
        ClientMeter {
            activity,
            framing: None,
            reads_start_heads: false,
        }
    }
}

impl Meter for ClientMeter {
    fn on_read(&mut self, bytes: &[u8]) {
        if self.reads_start_heads {
            self.activity.on_read();
        }
        if let Some(framing) = &mut self.framing {
            let activity = &self.activity;
            framing.feed(bytes, |head| activity.mark_ambiguous_framing(head));
        }
    }

    fn on_write(&mut self, _n: usize) {}

    fn on_error(&mut self, err: &std::io::Error) {
        use crate::registry::{CloseReason, Side};
        if let CloseReason::DeadPeer(_) = CloseReason::from_io(Side::Client, err) {
            self.activity.saw_dead_peer();
        }
    }
}
