//! What never enters a record: proxy credentials and sluice's own admin
//! session, whatever path a request took (forwarded, answered by sluice,
//! refused).
//!
//! Invariants: every request header block a record holds goes through
//! [`request_block`], so the rule lives in one place rather than at each
//! call site: hop-by-hop headers (among them `Proxy-Authorization`, and
//! every header `Connection` names) are left out, as they are when the
//! request is forwarded, and the value of the admin UI's session cookie is
//! replaced by [`REDACTED`]. Response blocks keep what the client got,
//! except the admin cookie in `Cookie` or `Set-Cookie`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The name of the admin web UI's session cookie. Browsers send cookies by
/// host, ignoring the port, so a browser signed in to the admin server on
/// 127.0.0.1 sends this cookie to every proxied 127.0.0.1 origin too.
pub const ADMIN_COOKIE: &str = "sluice_admin";

/// What a removed secret is shown as.
pub const REDACTED: &str = "(redacted by sluice)";

/// The request header block a record keeps: the headers as they were (or
/// would have been) forwarded, without credentials meant for sluice. A
/// WebSocket upgrade keeps its `Upgrade` and `Connection`: they cross.
pub fn request_block(headers: &HeaderMap) -> Vec<u8> {
    let named = connection_named(headers);
    let switching = crate::http::headers::asks_websocket(headers);
    let mut out = Vec::with_capacity(block_len(headers));
    for (name, value) in headers {
        let switch = switching && (name == header::UPGRADE || name == header::CONNECTION);
        if !switch && (crate::http::headers::is_hop_by_hop(name) || named.iter().any(|n| n == name))
        {
            continue;
        }
        push_line(&mut out, name, value);
    }
    out
}

/// The response header block a record keeps.
pub fn response_block(headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(block_len(headers));
    for (name, value) in headers {
        push_line(&mut out, name, value);
    }
    out
}

/// The block's size as the headers stand (redacting the admin's cookie
/// rarely lengthens it): one allocation, no growing.
fn block_len(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

fn push_line(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    if (name == header::COOKIE || name == header::SET_COOKIE) && mentions_admin_cookie(value) {
        out.extend_from_slice(
            redact_cookie(value.as_bytes(), name == header::SET_COOKIE).as_bytes(),
        );
    } else {
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Headers named in `Connection` (hop-by-hop by declaration); framing
/// headers stay, as they do when forwarding.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    let Some(_) = headers.get(header::CONNECTION) else {
        return Vec::new();
    };
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| n != header::CONTENT_LENGTH && n != header::TRANSFER_ENCODING)
        .collect()
}

fn mentions_admin_cookie(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .windows(ADMIN_COOKIE.len())
        .any(|w| w.eq_ignore_ascii_case(ADMIN_COOKIE.as_bytes()))
}

/// `a=1; sluice_admin=SECRET; b=2` → `a=1; sluice_admin=(redacted); b=2`.
/// For `Set-Cookie` only the first pair is the cookie; attributes stay.
fn redact_cookie(value: &[u8], set_cookie: bool) -> String {
    let text = String::from_utf8_lossy(value);
    let mut parts: Vec<String> = Vec::new();
    for (i, part) in text.split(';').enumerate() {
        let is_pair = !set_cookie || i == 0;
        match part.split_once('=') {
            Some((k, _)) if is_pair && k.trim() == ADMIN_COOKIE => {
                parts.push(format!("{k}={REDACTED}"));
            }
            _ => parts.push(part.to_string()),
        }
    }
    parts.join(";")
}

/// Removes sluice's own session cookie from a request about to be
/// forwarded: it is sluice's credential, not the origin's. The `Cookie`
/// header is rebuilt without that pair (dropped when nothing is left).
pub fn strip_admin_cookie(headers: &mut HeaderMap) {
    if !headers
        .get_all(header::COOKIE)
        .iter()
        .any(mentions_admin_cookie)
    {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| {
            let text = String::from_utf8_lossy(v.as_bytes());
            let rest: Vec<&str> = text
                .split(';')
                .filter(|p| p.split_once('=').map(|(k, _)| k.trim()) != Some(ADMIN_COOKIE))
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            if rest.is_empty() {
                None
            } else {
                HeaderValue::from_str(&rest.join("; ")).ok()
            }
        })
        .collect();
    headers.remove(header::COOKIE);
    for v in kept {
        headers.append(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_text(b: Vec<u8>) -> String {
        String::from_utf8(b).unwrap().to_ascii_lowercase()
    }

    #[test]
    fn request_blocks_never_hold_proxy_credentials_or_the_admin_cookie() {
        let mut h = HeaderMap::new();
        h.insert("proxy-authorization", "Basic dTpw".parse().unwrap());
        h.insert("connection", "x-hop".parse().unwrap());
        h.insert("x-hop", "secret".parse().unwrap());
        h.insert("cookie", "a=1; sluice_admin=abcdef; b=2".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        let text = block_text(request_block(&h));
        assert!(
            !text.contains("dtpw") && !text.contains("proxy-authorization"),
            "{text}"
        );
        assert!(!text.contains("x-hop"), "{text}");
        assert!(!text.contains("abcdef"), "{text}");
        assert!(
            text.contains("a=1; sluice_admin=(redacted by sluice); b=2"),
            "{text}"
        );
        assert!(text.contains("x-kept: yes"), "{text}");
    }

    #[test]
    fn a_websocket_upgrade_keeps_its_switch_but_no_credentials() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("proxy-authorization", "Basic dTpw".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        let text = block_text(request_block(&h));
        assert_eq!(text, "upgrade: websocket\r\nconnection: upgrade\r\n");
    }

    #[test]
    fn set_cookie_keeps_its_attributes() {
        let mut h = HeaderMap::new();
        h.insert(
            "set-cookie",
            "sluice_admin=abcdef; Path=/; HttpOnly".parse().unwrap(),
        );
        let text = block_text(response_block(&h));
        assert!(!text.contains("abcdef"), "{text}");
        assert!(text.contains("path=/; httponly"), "{text}");
    }

    #[test]
    fn forwarded_cookies_lose_only_the_admin_pair() {
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1; sluice_admin=abc".parse().unwrap());
        h.append("cookie", "sluice_admin=abc".parse().unwrap());
        h.append("cookie", "sluice_administrator=keep".parse().unwrap());
        strip_admin_cookie(&mut h);
        let all: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1", "sluice_administrator=keep"]);
    }
}
