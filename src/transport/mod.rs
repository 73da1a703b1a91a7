//! The transport seam: what every protocol layer reads and writes.
//!
//! - [`ClientStream`]: a client connection as any layer sees it — plain
//!   TCP, TCP with bytes already read in front of it (CONNECT leftovers,
//!   a first flight read while detecting), or a TLS server session over
//!   one of those. Each gives back its TCP socket ([`ClientStream::tcp`])
//!   for socket options, the kernel cross-check and splice.
//! - [`Metered`]: the one wrapper that reports what crosses a stream
//!   (bytes, reads) to a [`Meter`]: the client side's activity and framing
//!   tracker, the upstream side's byte counters.
//! - [`detect`]: the next-layer decision from the first bytes, asked at
//!   the listener and again inside every tunnel.
//!
//! Invariants: bytes already read are never lost — they stay in front of
//! the stream ([`Prefixed`]) until a reader takes them, and a layer that
//! goes back to the raw socket takes them with it
//! ([`ClientStream::into_tcp`]); detection peeks and never consumes.

pub mod detect;
mod meter;
mod prefixed;
mod stream;

pub use meter::{Meter, Metered};
pub use prefixed::Prefixed;
pub use stream::ClientStream;
