//! Byte relays: the duplex copy with deadlines (between TCP sockets, and
//! between any two streams with a tap on each direction), CONNECT tunnels
//! and port relays.
//!
//! Invariants: per-tunnel memory is bounded by two copy buffers of
//! `buffer_size` (a stream relay's grow to four times it while a bulk
//! flow fills them), allocated only while data flows; every tunnel has an idle
//! deadline and a half-close grace; an error on either leg closes both at
//! once, passing a reset on as a reset.

mod deadline;
mod duplex;
mod pace;
mod port;
mod splice;
mod streams;

pub use deadline::Deadlines;
pub(crate) use duplex::write_all;
pub use duplex::{relay, RelayLimits};
pub use pace::Pacer;
pub use port::{refuse_relay_loops, serve_relay, RelayShared};
pub use streams::{relay_streams, tap_filtered, Filter, Hooks, Leg, Removed, Tap};
