//! Hop-by-hop header handling (RFC 9110 7.6.1) and `Via`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop and are never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Removes hop-by-hop headers, including every header named in
/// `Connection`. `Transfer-Encoding` is left to hyper, which re-frames the
/// body for the next hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // The common case (no hop-by-hop header at all) costs one pass over
    // the names and no allocation or hashing.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .chain(headers.get_all("proxy-connection").iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        // Framing headers are hyper's to manage, whatever Connection says.
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING {
            headers.remove(&name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether a head asks to switch to WebSocket (RFC 6455 4.1): `Upgrade`
/// lists `websocket` and `Connection` lists `upgrade`, tokens compared
/// without regard to case, either header possibly repeated or listing more.
pub fn asks_websocket(headers: &HeaderMap) -> bool {
    lists_token(headers, &header::UPGRADE, "websocket")
        && lists_token(headers, &header::CONNECTION, "upgrade")
}

/// Whether an answer's `Upgrade` names WebSocket as the protocol switched to.
pub fn upgrades_to_websocket(headers: &HeaderMap) -> bool {
    lists_token(headers, &header::UPGRADE, "websocket")
}

fn lists_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// [`strip_hop_by_hop`] for a hop that agreed to switch to WebSocket: the
/// switch itself (`Upgrade: websocket`, `Connection: Upgrade`) crosses,
/// made anew so nothing else a `Connection` header named comes along;
/// every other hop-by-hop header still goes.
pub fn strip_hop_by_hop_upgrading(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
}

/// Why a request's `Transfer-Encoding` cannot be forwarded.
#[derive(Debug, PartialEq, Eq)]
pub struct UnsupportedCoding(pub String);

/// Makes a request's `Transfer-Encoding` one sluice can forward without
/// ambiguity. hyper has already de-chunked the body and refused heads
/// whose final coding is not chunked; it re-chunks for the next hop, so a
/// value of `chunked` in any case (with `identity`, a legacy no-op) is
/// dropped and re-made by hyper, never forwarded verbatim next to a body
/// framed differently. Any other coding (`gzip, chunked`) would reach the
/// upstream still applied but unannounced: refused (RFC 9112 6.1, 501).
pub fn normalize_transfer_encoding(headers: &mut HeaderMap) -> Result<(), UnsupportedCoding> {
    if !headers.contains_key(header::TRANSFER_ENCODING) {
        return Ok(());
    }
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        let text = value.to_str().unwrap_or("(not text)");
        for coding in text.split(',').map(str::trim) {
            let known = coding.eq_ignore_ascii_case("chunked")
                || coding.eq_ignore_ascii_case("identity")
                || coding.is_empty();
            if !known {
                return Err(UnsupportedCoding(coding.to_string()));
            }
        }
    }
    headers.remove(header::TRANSFER_ENCODING);
    Ok(())
}

/// Whether `name` is one of the listed hop-by-hop headers (not counting
/// those a `Connection` header names).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    // Standard names compare as an enum tag; only custom ones as text.
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
        || matches!(name.as_str(), "proxy-connection" | "keep-alive")
}

/// Appends this hop to `Via`.
pub fn add_via(headers: &mut HeaderMap, version: http::Version) {
    let value = match version {
        http::Version::HTTP_10 => "1.0 sluice",
        http::Version::HTTP_2 => "2 sluice",
        _ => "1.1 sluice",
    };
    headers.append(header::VIA, HeaderValue::from_static(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            "keep-alive, X-Secret, content-length".parse().unwrap(),
        );
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authorization", "Basic Zm9vOmJhcg==".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("content-length", "5".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("x-kept") && h.contains_key("content-length"));
        add_via(&mut h, http::Version::HTTP_11);
        assert_eq!(h["via"], "1.1 sluice");
    }

    #[test]
    fn websocket_upgrade_is_asked_in_any_case_and_list() {
        let ask = |upgrade: &str, connection: &[&str]| {
            let mut h = HeaderMap::new();
            h.insert("upgrade", upgrade.parse().unwrap());
            for c in connection {
                h.append("connection", c.parse().unwrap());
            }
            asks_websocket(&h)
        };
        assert!(ask("websocket", &["Upgrade"]));
        assert!(ask("WebSocket", &["keep-alive, UPGRADE"]));
        assert!(ask("websocket", &["keep-alive", "upgrade"]));
        assert!(!ask("h2c", &["Upgrade"]));
        assert!(!ask("websocket", &["keep-alive"]));
        assert!(!ask("websocket", &[]));
    }

    #[test]
    fn upgrading_keeps_only_the_switch() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", "WebSocket".parse().unwrap());
        h.insert("connection", "keep-alive, Upgrade, X-Hop".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authorization", "Basic Zm9vOmJhcg==".parse().unwrap());
        h.insert(
            "sec-websocket-key",
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        strip_hop_by_hop_upgrading(&mut h);
        assert_eq!(h.len(), 3, "{h:?}");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "Upgrade");
        assert!(h.contains_key("sec-websocket-key"));
    }

    #[test]
    fn transfer_encoding_is_rebuilt_or_refused() {
        for ok in ["chunked", "CHUNKED", "identity, chunked", " Chunked "] {
            let mut h = HeaderMap::new();
            h.insert("transfer-encoding", ok.parse().unwrap());
            assert_eq!(normalize_transfer_encoding(&mut h), Ok(()), "{ok}");
            assert!(!h.contains_key("transfer-encoding"), "{ok}");
        }
        let mut h = HeaderMap::new();
        h.insert("transfer-encoding", "gzip, chunked".parse().unwrap());
        assert_eq!(
            normalize_transfer_encoding(&mut h),
            Err(UnsupportedCoding("gzip".into()))
        );
    }
}
