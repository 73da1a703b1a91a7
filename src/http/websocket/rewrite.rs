//! `wsDrop://` and `wsSub://` applied to one direction of a relayed
//! WebSocket, frame-exactly: a data message is held (its frames as they
//! came) until its last frame, then dropped, sent on unchanged, or, when
//! the substitution changed it, sent as one new frame of the same opcode
//! (masked with the message's first mask key when it came masked, so a
//! client's frames stay masked and a server's unmasked).
//!
//! Invariants: control frames are never held (a ping between fragments
//! passes at once; a close first sends on whatever message is held); a
//! message is held up to [`HOLD_MAX`] bytes, past which it and the rest
//! of it pass unchanged (counted as too large); the upgrade of a
//! WebSocket these rules act on offers no extension upstream
//! ([`refuse_extensions`]), and a compressed message an origin sends
//! anyway passes unchanged (its bytes depend on the stream's window); a
//! text message whose substitution is not UTF-8
//! passes unchanged; bytes that are not frames stop the rules and pass
//! as they are. Nothing here waits; the relay writes what it returns.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::relay::{Filter, Removed};
use crate::rules::{WsDrop, WsSub};

/// Largest message held for the rules.
pub const HOLD_MAX: usize = 1 << 20;

/// What a record of an upgrade notes when sluice took the client's
/// offered extensions out for the message rules.
pub const NO_EXTENSIONS_NOTE: &str = "wsDrop/wsSub apply to this WebSocket: sluice removed the \
     client's Sec-WebSocket-Extensions (permessage-deflate) from the upgrade, so that every \
     message crosses uncompressed and the rules can read it";

/// Takes the offered extensions out of an upgrade request that message
/// rules will act on: a compressed message's bytes depend on the whole
/// stream before it, so it could be neither matched nor rewritten
/// (browsers offer permessage-deflate on every WebSocket). Whether any
/// was taken out.
pub fn refuse_extensions(headers: &mut http::HeaderMap, drop: bool, sub: bool) -> bool {
    (drop || sub)
        && headers
            .remove(http::header::SEC_WEBSOCKET_EXTENSIONS)
            .is_some()
}

/// What the rules did to one direction's messages.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub dropped: u64,
    pub replaced: u64,
    /// Passed unchanged without a look: compressed, over [`HOLD_MAX`], or
    /// a text message whose substitution was not UTF-8.
    pub unmatched: u64,
}

/// The record's words for what a direction's rules did.
pub fn describe(dir: &str, o: Outcome) -> String {
    let mut s = format!(
        "message rules: {} {dir} messages dropped, {} rewritten",
        o.dropped, o.replaced
    );
    if o.unmatched > 0 {
        s.push_str(&format!(
            ", {} passed unmatched (compressed, over 1 MiB, or not UTF-8 once rewritten)",
            o.unmatched
        ));
    }
    s
}

/// A payload frame in progress.
struct Payload {
    left: u64,
    /// Part of the message being held, or passed as it comes.
    held: bool,
    /// A data frame that ends its message.
    last: bool,
}

/// A data message being held.
struct Held {
    opcode: u8,
    /// The mask key of its first frame.
    mask: Option<[u8; 4]>,
    /// Its frames as they came.
    raw: Vec<u8>,
    /// Its payload, unmasked.
    payload: Vec<u8>,
    /// The current frame's mask key and how far into its payload.
    frame_mask: Option<[u8; 4]>,
    frame_done: usize,
}

/// One direction's message rules.
pub struct Rewrite {
    drop: Option<regex::bytes::Regex>,
    sub: Option<WsSub>,
    /// A frame header's first bytes, when a read ended inside it.
    head: Vec<u8>,
    payload: Option<Payload>,
    held: Option<Held>,
    /// The data message under way passes unchanged to its end.
    passing: bool,
    /// Bytes that are not frames came: the rest passes as it comes.
    broken: bool,
    /// Messages dropped since the last [`Filter::filter`] handed them on.
    removed: Vec<Removed>,
    pub outcome: Outcome,
}

const TEXT: u8 = 1;

impl Rewrite {
    /// The rules for the direction (`send`: client to server), if any
    /// applies to it.
    pub fn new(send: bool, drop: Option<&WsDrop>, sub: Option<&WsSub>) -> Option<Rewrite> {
        let drop = drop
            .filter(|d| d.direction.covers(send))
            .map(|d| d.regex.clone());
        let sub = sub.filter(|s| s.direction.covers(send)).cloned();
        if drop.is_none() && sub.is_none() {
            return None;
        }
        Some(Rewrite {
            drop,
            sub,
            head: Vec::with_capacity(14),
            payload: None,
            held: None,
            passing: false,
            broken: false,
            removed: Vec::new(),
            outcome: Outcome::default(),
        })
    }

    /// The messages dropped since the last call, in stream order (their
    /// offsets are into the output of the feeds since then).
    pub fn take_removed(&mut self, into: &mut Vec<Removed>) {
        into.append(&mut self.removed);
    }

    /// Takes the next bytes read; appends to `out` what is to be written.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            if self.broken {
                out.extend_from_slice(data);
                return;
            }
            let Some(p) = self.payload.as_mut() else {
                let used = self.header(data, out);
                data = &data[used..];
                continue;
            };
            let take = p.left.min(data.len() as u64) as usize;
            let (chunk, rest) = data.split_at(take);
            p.left -= take as u64;
            let (held, ended) = (p.held, p.left == 0);
            data = rest;
            match self.held.as_mut().filter(|_| held) {
                Some(m) => {
                    m.raw.extend_from_slice(chunk);
                    let start = m.payload.len();
                    m.payload.extend_from_slice(chunk);
                    if let Some(key) = m.frame_mask {
                        for (i, b) in m.payload[start..].iter_mut().enumerate() {
                            *b ^= key[(m.frame_done + i) % 4];
                        }
                    }
                    m.frame_done += take;
                    self.too_large(out);
                }
                None => out.extend_from_slice(chunk),
            }
            if ended {
                self.end_frame(out);
            }
        }
    }

    /// Takes header bytes; returns how many of `data` it used.
    fn header(&mut self, data: &[u8], out: &mut Vec<u8>) -> usize {
        let had = self.head.len();
        let take = (14 - had).min(data.len());
        self.head.extend_from_slice(&data[..take]);
        let mut c = Cursor::new(&self.head[..]);
        let (h, len) = match FrameHeader::parse(&mut c) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return take,
            Err(_) => {
                self.broken = true;
                self.flush_held(out);
                out.extend_from_slice(&self.head);
                self.head.clear();
                return take;
            }
        };
        let head_len = c.position() as usize;
        self.head.truncate(head_len);
        let head = std::mem::take(&mut self.head);
        self.start_frame(h, len, &head, out);
        self.head = head;
        self.head.clear();
        head_len - had
    }

    fn start_frame(&mut self, h: FrameHeader, len: u64, head: &[u8], out: &mut Vec<u8>) {
        let (held, last) = match h.opcode {
            OpCode::Control(c) => {
                if c == Control::Close {
                    self.flush_held(out);
                }
                (false, false)
            }
            OpCode::Data(Data::Continue) => (self.held.is_some(), h.is_final),
            OpCode::Data(_) => {
                // A new message ends an unfinished one (a broken peer):
                // that one goes on as it came.
                self.flush_held(out);
                self.passing = h.rsv1;
                if h.rsv1 {
                    self.outcome.unmatched += 1;
                } else {
                    self.held = Some(Held {
                        opcode: h.opcode.into(),
                        mask: h.mask,
                        raw: Vec::new(),
                        payload: Vec::new(),
                        frame_mask: None,
                        frame_done: 0,
                    });
                }
                (!h.rsv1, h.is_final)
            }
        };
        match self.held.as_mut().filter(|_| held) {
            Some(m) => {
                m.raw.extend_from_slice(head);
                m.frame_mask = h.mask;
                m.frame_done = 0;
            }
            None => out.extend_from_slice(head),
        }
        self.payload = Some(Payload {
            left: len,
            held,
            last,
        });
        if held {
            self.too_large(out);
        }
        if len == 0 {
            self.end_frame(out);
        }
    }

    /// A held message past [`HOLD_MAX`] goes on unchanged, and the rest
    /// of it as it comes.
    fn too_large(&mut self, out: &mut Vec<u8>) {
        if self.held.as_ref().is_some_and(|m| m.raw.len() > HOLD_MAX) {
            self.flush_held(out);
            self.passing = true;
            self.outcome.unmatched += 1;
            if let Some(p) = self.payload.as_mut() {
                p.held = false;
            }
        }
    }

    fn flush_held(&mut self, out: &mut Vec<u8>) {
        if let Some(m) = self.held.take() {
            out.extend_from_slice(&m.raw);
        }
    }

    fn end_frame(&mut self, out: &mut Vec<u8>) {
        let Some(p) = self.payload.take() else {
            return;
        };
        if !p.last {
            return;
        }
        self.passing = false;
        if let Some(m) = self.held.take() {
            self.decide(m, out);
        }
    }

    /// The whole message is here: dropped, rewritten or sent on as it came.
    fn decide(&mut self, m: Held, out: &mut Vec<u8>) {
        if self.drop.as_ref().is_some_and(|re| re.is_match(&m.payload)) {
            self.outcome.dropped += 1;
            self.removed.push(Removed {
                at: out.len(),
                opcode: m.opcode,
                size: m.payload.len() as u64,
                payload: m.payload,
            });
            return;
        }
        if let Some(s) = &self.sub {
            match s.sub.apply(&m.payload, HOLD_MAX) {
                Ok(new) if new == m.payload => {}
                Ok(new) if m.opcode == TEXT && std::str::from_utf8(&new).is_err() => {
                    self.outcome.unmatched += 1;
                }
                Ok(new) => {
                    encode(m.opcode, m.mask, &new, out);
                    self.outcome.replaced += 1;
                    return;
                }
                Err(_) => self.outcome.unmatched += 1,
            }
        }
        out.extend_from_slice(&m.raw);
    }
}

/// One final frame of `opcode` carrying `payload`, masked with `mask`.
fn encode(opcode: u8, mask: Option<[u8; 4]>, payload: &[u8], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    let bit = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        out.push(bit | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(bit | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(bit | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
}

impl Filter for Rewrite {
    fn filter(&mut self, input: &[u8], out: &mut Vec<u8>, removed: &mut Vec<Removed>) {
        self.feed(input, out);
        self.take_removed(removed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        encode(opcode, mask, payload, &mut out);
        if !fin {
            out[0] &= 0x7f;
        }
        out
    }

    fn rules(drop: &str, sub: &str) -> Rewrite {
        let d = (!drop.is_empty()).then(|| WsDrop::parse(drop).unwrap());
        let s = (!sub.is_empty()).then(|| WsSub::parse(sub).unwrap());
        Rewrite::new(true, d.as_ref(), s.as_ref()).unwrap()
    }

    fn run(r: &mut Rewrite, wire: &[u8], step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in wire.chunks(step) {
            r.feed(c, &mut out);
        }
        out
    }

    #[test]
    fn drops_and_rewrites_whole_messages_whatever_the_chunking() {
        let key = Some([9, 8, 7, 6]);
        let keep = frame(true, TEXT, b"keep me", key);
        let mut wire = keep.clone();
        wire.extend(frame(true, TEXT, b"secret token", key));
        // Fragmented, a ping between its fragments.
        wire.extend(frame(false, TEXT, b"price=", key));
        let ping = frame(true, 9, b"p", key);
        wire.extend(&ping);
        wire.extend(frame(true, 0, b"10", key));
        let big = vec![b'x'; 70_000];
        wire.extend(frame(true, 2, &big, None));
        for step in [1, 3, 7, 1000, wire.len()] {
            let mut r = rules("/secret/", "/price=(\\d+)/price=$1$1/");
            let out = run(&mut r, &wire, step);
            let mut want = keep.clone();
            want.extend(&ping);
            want.extend(frame(true, TEXT, b"price=1010", key));
            want.extend(frame(true, 2, &big, None));
            assert!(out == want, "step {step}");
            assert_eq!(r.outcome.dropped, 1);
            assert_eq!(r.outcome.replaced, 1);
        }
    }

    #[test]
    fn what_cannot_be_matched_passes_unchanged() {
        let mut r = rules("/x/", "");
        let mut wire = Vec::new();
        let mut compressed = frame(true, TEXT, b"xxx", None);
        compressed[0] |= 0x40; // RSV1: permessage-deflate
        wire.extend(&compressed);
        let huge = vec![b'x'; HOLD_MAX + 10];
        wire.extend(frame(true, 2, &huge, Some([1, 2, 3, 4])));
        let close = frame(true, 8, &[0x03, 0xe8], None);
        wire.extend(&close);
        let out = run(&mut r, &wire, 65536);
        assert!(out == wire);
        assert_eq!(r.outcome.unmatched, 2);
        assert_eq!(r.outcome.dropped, 0);
        // Not frames: the rest passes as it comes.
        let mut r = rules("/x/", "");
        let junk = [0x83u8, 0x01, b'x', b'x'];
        assert_eq!(run(&mut r, &junk, 1), junk);
    }

    #[test]
    fn a_text_rewrite_that_is_not_utf8_is_not_sent() {
        // Takes the second byte of "é" away: what is left is not UTF-8.
        let mut r = rules("", "/(?-u:\\xA9)//");
        let wire = frame(true, TEXT, "é".as_bytes(), None);
        assert_eq!(run(&mut r, &wire, 2), wire);
    }

    #[test]
    fn directions_are_chosen_per_rule() {
        let d = WsDrop::parse("receive:/x/").unwrap();
        assert!(Rewrite::new(true, Some(&d), None).is_none());
        assert!(Rewrite::new(false, Some(&d), None).is_some());
    }
}
