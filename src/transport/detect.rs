//! The next-layer decision: what the first bytes of a stream begin,
//! asked at the listener (CONNECT, HTTP/2 preface, other HTTP/1) and again
//! inside every tunnel (TLS, HTTP/1, HTTP/2 with prior knowledge, or
//! opaque bytes), as mitmproxy asks it at each nesting.
//!
//! Invariants: detection only peeks, so an opaque tunnel is relayed from
//! the untouched socket (splice stays possible); every wait has a
//! deadline; a server that speaks first (SSH, SMTP, MySQL) makes the
//! stream opaque at once instead of waiting for the client.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::registry::{CloseReason, Side};

/// The HTTP/2 connection preface (RFC 9113 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a new proxy connection begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// `CONNECT `: a tunnel, its head read without hyper.
    Connect,
    /// `PRI * HT`: HTTP/2 with prior knowledge.
    H2Preface,
    /// Anything else: HTTP/1.x (hyper answers what is not).
    Other,
}

/// Waits (until `deadline`) for the first bytes of a new connection and
/// tells what they begin. A head arriving in pieces shorter than the
/// method simply counts as HTTP/1.
pub async fn first_bytes(stream: &TcpStream, deadline: Instant) -> Result<FirstBytes, CloseReason> {
    let mut first = [0u8; 8];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Err(_) => Err(CloseReason::HeaderTimeout),
        Ok(Err(e)) => Err(CloseReason::from_io(Side::Client, &e)),
        Ok(Ok(0)) => Err(CloseReason::Eof),
        Ok(Ok(n)) => Ok(match &first[..n] {
            b"CONNECT " => FirstBytes::Connect,
            b"PRI * HT" => FirstBytes::H2Preface,
            _ => FirstBytes::Other,
        }),
    }
}

/// The layer inside a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// A TLS ClientHello: intercepted or passed through by policy.
    Tls,
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 preface (h2c with prior knowledge).
    Http2,
    /// Anything else, a client that says nothing, or a server that speaks
    /// first: relayed byte for byte.
    Opaque,
}

/// Tells the layer from the first bytes, or `None` while they are a
/// prefix of more than one answer (more bytes decide).
pub fn classify(first: &[u8]) -> Option<Layer> {
    if first.is_empty() {
        return None;
    }
    // TLS record: handshake (22), version 3.x.
    if first[0] == 0x16 {
        return match first.get(1) {
            None => None,
            Some(3) => Some(Layer::Tls),
            Some(_) => Some(Layer::Opaque),
        };
    }
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] == H2_PREFACE[..n] {
        return if n >= 14 { Some(Layer::Http2) } else { None };
    }
    http1_request_line(first)
}

/// `METHOD SP target`: a token of 1 to 20 upper-case letters or `-`,
/// one space, then an origin-form (`/`), absolute-form (a letter) or
/// asterisk-form target.
fn http1_request_line(first: &[u8]) -> Option<Layer> {
    const MAX_METHOD: usize = 20;
    for (i, &b) in first.iter().enumerate() {
        match b {
            b'A'..=b'Z' | b'-' if i < MAX_METHOD => continue,
            b' ' if i > 0 => {
                return match first.get(i + 1) {
                    None => None,
                    Some(b'/' | b'*' | b'a'..=b'z' | b'A'..=b'Z') => Some(Layer::Http1),
                    Some(_) => Some(Layer::Opaque),
                };
            }
            _ => return Some(Layer::Opaque),
        }
    }
    None
}

/// How long a client may take to complete a first flight that so far is
/// the prefix of a known protocol before the tunnel is taken as opaque.
const PATIENCE: Duration = Duration::from_millis(500);

/// Decides the layer inside a tunnel from `already` (bytes read off the
/// client socket behind the CONNECT head) and what the socket holds,
/// peeking only. Ends early as opaque when `upstream` speaks first; both
/// sides silent for `quiet` (the tunnel's idle timeout) is an idle close;
/// `kill` ends the wait.
pub async fn inner_layer(
    client: &TcpStream,
    already: &[u8],
    upstream: &TcpStream,
    quiet: Duration,
    kill: &CancellationToken,
) -> Result<Layer, CloseReason> {
    if let Some(layer) = classify(already) {
        return Ok(layer);
    }
    let mut peeked = vec![0u8; H2_PREFACE.len()];
    let mut seen = 0usize;
    let mut patience_ends = None;
    let quiet_deadline = Instant::now() + quiet;
    let mut upstream_is_h2 = false;
    loop {
        let wait = async {
            if seen > 0 {
                // The socket stays readable while the bytes are unread:
                // look again shortly instead of spinning on readiness.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            client.peek(&mut peeked).await
        };
        let (ends, then) = match patience_ends {
            // A partial first flight that stalls is relayed as it is.
            Some(at) => (at, Ok(Layer::Opaque)),
            // Neither side said anything: the tunnel was idle.
            None => (quiet_deadline, Err(CloseReason::IdleTimeout)),
        };
        let n = tokio::select! {
            r = wait => r.map_err(|e| CloseReason::from_io(Side::Client, &e))?,
            // The server speaks first: nothing to detect, unless what it
            // said is an HTTP/2 server preface (an h2c server sends its
            // SETTINGS at once) and the client's preface is on its way.
            _ = upstream.readable(), if seen == 0 && !upstream_is_h2 => {
                let mut head = [0u8; 9];
                let n = upstream.peek(&mut head).await.unwrap_or(0);
                if !is_settings_frame(&head[..n]) {
                    return Ok(Layer::Opaque);
                }
                upstream_is_h2 = true;
                continue;
            }
            _ = tokio::time::sleep_until(ends) => return then,
            _ = kill.cancelled() => return Err(CloseReason::KilledByAdmin),
        };
        if n == 0 {
            // The client closed right away: the relay passes the EOF on.
            return Ok(Layer::Opaque);
        }
        let mut first = already.to_vec();
        first.extend_from_slice(&peeked[..n]);
        if let Some(layer) = classify(&first) {
            return Ok(layer);
        }
        if n == peeked.len() {
            return Ok(Layer::Opaque);
        }
        seen = n;
        patience_ends.get_or_insert_with(|| Instant::now() + PATIENCE);
    }
}

/// An HTTP/2 SETTINGS frame header on stream 0 (RFC 9113 6.5), as an
/// HTTP/2 server's preface begins.
fn is_settings_frame(head: &[u8]) -> bool {
    head.len() == 9 && head[3] == 0x4 && head[0..3] != [0xff; 3] && head[5..9] == [0; 4]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_each_layer_from_its_first_bytes() {
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), Some(Layer::Tls));
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Layer::Http1));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1\r\n"), Some(Layer::Http1));
        assert_eq!(classify(b"GET http://a/ HTTP/1.1"), Some(Layer::Http1));
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1"), Some(Layer::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Layer::Http2));
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9.6\r\n"), Some(Layer::Opaque));
        assert_eq!(classify(b"\x00\x00\x00\x01"), Some(Layer::Opaque));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Layer::Opaque));
        assert_eq!(classify(b"GET  /"), Some(Layer::Opaque));
        assert_eq!(classify(&[0x16, 0x01]), Some(Layer::Opaque));
    }

    #[test]
    fn an_http2_server_preface_is_told_from_other_greetings() {
        assert!(is_settings_frame(&[0, 0, 6, 4, 0, 0, 0, 0, 0]));
        assert!(is_settings_frame(&[0, 0, 0, 4, 1, 0, 0, 0, 0]));
        assert!(!is_settings_frame(b"SSH-2.0-x"));
        assert!(!is_settings_frame(b"220 mail."));
        assert!(!is_settings_frame(&[0, 0, 6, 4, 0]));
    }

    #[test]
    fn a_prefix_of_several_answers_waits_for_more() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET "), None);
        assert_eq!(classify(b"PRI * HT"), None);
        assert_eq!(classify(&[0x16]), None);
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQRSTU"), Some(Layer::Opaque));
    }
}
