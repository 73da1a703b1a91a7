//! `wsDrop://` and `wsSub://`: rules over the messages of a WebSocket the
//! rule's request upgraded. `wsDrop://[send:|receive:]/REGEX/[i]` drops
//! the data messages whose payload matches; `wsSub://[send:|receive:]
//! /REGEX/REPLACEMENT/[i]` replaces every match in them (captures as in
//! `bodySub://`). `send` is client to server, `receive` the other way;
//! without a direction the rule applies both ways.
//!
//! Invariants: values are validated at load (the regex within the rule
//! file's compile budget); what the rule does to a message is decided by
//! the relay ([`crate::http::websocket`]), frame-exactly: a message no
//! rule changes leaves byte for byte as it came.

use std::fmt;

use super::actions::{regex_message, ValueError};
use super::body::BodySub;

/// Which messages of the WebSocket a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsDirection {
    Send,
    Receive,
    Both,
}

impl WsDirection {
    /// Whether the rule applies to the direction (`send`: client to server).
    pub fn covers(self, send: bool) -> bool {
        match self {
            WsDirection::Both => true,
            WsDirection::Send => send,
            WsDirection::Receive => !send,
        }
    }
}

/// Splits `send:` or `receive:` off `value`; the rest and its offset.
fn direction(value: &str) -> Result<(WsDirection, &str, usize), ValueError> {
    if value.starts_with('/') {
        return Ok((WsDirection::Both, value, 0));
    }
    let Some((dir, rest)) = value.split_once(':') else {
        return Err("expected [send:|receive:]/REGEX/... (a / opens the regex)"
            .to_string()
            .into());
    };
    let d = match dir.to_ascii_lowercase().as_str() {
        "send" => WsDirection::Send,
        "receive" => WsDirection::Receive,
        _ => {
            return Err(format!("unknown direction `{dir}` (send or receive)").into());
        }
    };
    Ok((d, rest, dir.len() + 1))
}

/// `wsDrop://[DIR:]/REGEX/[i]`.
#[derive(Debug, Clone)]
pub struct WsDrop {
    pub direction: WsDirection,
    pub regex: regex::bytes::Regex,
    /// The `i` flag (the regex's compile budget depends on it).
    pub(crate) case_insensitive: bool,
    source: String,
}

impl WsDrop {
    pub(crate) fn parse(value: &str) -> Result<WsDrop, ValueError> {
        let usage = "wsDrop:// takes [send:|receive:]/REGEX/[i] (a / inside written \\/)";
        let (direction, rest, at) = direction(value)?;
        let chars: Vec<char> = rest.chars().collect();
        if chars.first() != Some(&'/') {
            return Err(usage.to_string().into());
        }
        let mut pattern = String::new();
        let mut i = 1;
        let mut closed = None;
        while i < chars.len() {
            match chars[i] {
                '\\' if chars.get(i + 1) == Some(&'/') => {
                    pattern.push('/');
                    i += 2;
                }
                '\\' => {
                    pattern.push('\\');
                    if let Some(&c) = chars.get(i + 1) {
                        pattern.push(c);
                    }
                    i += 2;
                }
                '/' => {
                    closed = Some(i);
                    break;
                }
                c => {
                    pattern.push(c);
                    i += 1;
                }
            }
        }
        let Some(end) = closed else {
            return Err(ValueError {
                offset: at + chars.len(),
                message: format!("missing the closing `/`: {usage}"),
            });
        };
        let flags: String = chars[end + 1..].iter().collect();
        let case_insensitive = match flags.as_str() {
            "" => false,
            "i" => true,
            other => {
                return Err(ValueError {
                    offset: at + end + 1,
                    message: format!("unknown flags `{other}` (only `i` is known)"),
                })
            }
        };
        if pattern.is_empty() {
            return Err(ValueError {
                offset: at + 1,
                message: "empty regex".into(),
            });
        }
        let regex = regex::bytes::RegexBuilder::new(&pattern)
            .case_insensitive(case_insensitive)
            .size_limit(super::budget::SIZE_LIMIT)
            .dfa_size_limit(super::budget::DFA_CACHE)
            .build()
            .map_err(|e| ValueError {
                offset: at + 1,
                message: regex_message(&e),
            })?;
        Ok(WsDrop {
            direction,
            regex,
            case_insensitive,
            source: value.to_owned(),
        })
    }
}

impl fmt::Display for WsDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// `wsSub://[DIR:]/REGEX/REPLACEMENT/[i]`.
#[derive(Debug, Clone)]
pub struct WsSub {
    pub direction: WsDirection,
    pub sub: BodySub,
    source: String,
}

impl WsSub {
    pub(crate) fn parse(value: &str) -> Result<WsSub, ValueError> {
        let (direction, rest, at) = direction(value)?;
        let sub = BodySub::parse(rest).map_err(|e| ValueError {
            offset: at + e.offset,
            message: e.message.replace("bodySub://", "wsSub:// [send:|receive:]"),
        })?;
        Ok(WsSub {
            direction,
            sub,
            source: value.to_owned(),
        })
    }
}

impl fmt::Display for WsSub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_with_and_without_a_direction() {
        let d = WsDrop::parse("send:/^ping\\/\\d+$/i").unwrap();
        assert_eq!(d.direction, WsDirection::Send);
        assert!(d.regex.is_match(b"PING/42"));
        assert!(!d.regex.is_match(b"ping/x"));
        let d = WsDrop::parse("/secret/").unwrap();
        assert_eq!(d.direction, WsDirection::Both);
        assert!(d.direction.covers(true) && d.direction.covers(false));
        let s = WsSub::parse("receive:/(\\d+)/<$1>/").unwrap();
        assert!(!s.direction.covers(true) && s.direction.covers(false));
        assert_eq!(s.sub.apply(b"a 12 b 3", 1 << 20).unwrap(), b"a <12> b <3>");
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let e = WsDrop::parse("up:/x/").unwrap_err();
        assert!(
            e.message.contains("unknown direction `up`"),
            "{}",
            e.message
        );
        let e = WsDrop::parse("send:/x").unwrap_err();
        assert!(e.message.contains("closing"), "{}", e.message);
        let e = WsDrop::parse("/x/g").unwrap_err();
        assert!(e.message.contains("unknown flags"), "{}", e.message);
        let e = WsDrop::parse("/(/").unwrap_err();
        assert!(e.message.contains("invalid regex"), "{}", e.message);
        let e = WsSub::parse("send:/x/").unwrap_err();
        assert!(e.message.contains("wsSub://"), "{}", e.message);
        assert_eq!(e.offset, 5 + 3);
    }
}
