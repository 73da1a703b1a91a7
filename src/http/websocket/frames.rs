//! WebSocket frames as they pass (RFC 6455 5.2), read into messages
//! without holding a frame or a message: the header is parsed by
//! tungstenite's [`FrameHeader`], payload bytes are unmasked only as far
//! as they are captured (up to the message limit), and permessage-deflate
//! messages are inflated for display (RFC 7692, [`Inflate`]).
//!
//! Invariants: the reader never changes or holds back the relayed bytes
//! (it sees them after they were written on); memory per direction is
//! the 14-byte header buffer, one data message's capture and one control
//! frame's (each at most the limit) and, once a compressed message
//! passed, one inflater; a stream it cannot parse (a reserved opcode)
//! stops the reading, never the relay.

use std::io::Cursor;
use std::time::SystemTime;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

pub use crate::record::messages::opcode::*;

/// One message (a data message with all its fragments, or one control
/// frame) as it passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub opcode: u8,
    /// When its last frame had passed.
    pub at: SystemTime,
    /// Payload bytes on the wire over all its frames (compressed size).
    pub size: u64,
    pub frames: u32,
    /// The payload, unmasked and inflated, at most the limit.
    pub payload: Vec<u8>,
    /// The payload (inflated) was longer than the limit.
    pub truncated: bool,
    /// Sent compressed (permessage-deflate, RSV1).
    pub compressed: bool,
    /// Why the payload shown is not the message's (inflating failed, or
    /// the frames broke the protocol).
    pub problem: Option<String>,
}

/// What the 101 agreed for permessage-deflate, for one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The sender resets its window after each message, so the reader
    /// may skip inflating what it does not capture.
    pub no_context_takeover: bool,
}

/// `permessage-deflate` in a 101's `Sec-WebSocket-Extensions`: what each
/// direction does, `(client to server, server to client)`; `None` when
/// it was not agreed.
pub fn deflate_agreed(headers: &http::HeaderMap) -> Option<(Deflate, Deflate)> {
    for value in headers.get_all(http::header::SEC_WEBSOCKET_EXTENSIONS) {
        let Ok(text) = value.to_str() else { continue };
        for ext in text.split(',') {
            let mut params = ext.split(';').map(str::trim);
            if !params
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
            {
                continue;
            }
            let (mut client, mut server) = (false, false);
            for p in params {
                let name = p.split('=').next().unwrap_or_default().trim();
                if name.eq_ignore_ascii_case("client_no_context_takeover") {
                    client = true;
                } else if name.eq_ignore_ascii_case("server_no_context_takeover") {
                    server = true;
                }
            }
            return Some((
                Deflate {
                    no_context_takeover: client,
                },
                Deflate {
                    no_context_takeover: server,
                },
            ));
        }
    }
    None
}

/// A message being read: a data message across its fragments, or one
/// control frame.
#[derive(Default)]
struct Building {
    opcode: u8,
    size: u64,
    frames: u32,
    payload: Vec<u8>,
    truncated: bool,
    compressed: bool,
    /// Not captured: the connection's budget was spent when it began (it
    /// is only counted, so its payload is neither copied nor inflated).
    skip: bool,
    problem: Option<String>,
}

impl Building {
    fn new(opcode: u8, compressed: bool) -> Building {
        Building {
            opcode,
            compressed,
            ..Building::default()
        }
    }

    fn finish(self) -> Message {
        Message {
            opcode: self.opcode,
            at: SystemTime::now(),
            size: self.size,
            frames: self.frames,
            payload: self.payload,
            truncated: self.truncated,
            compressed: self.compressed,
            problem: self.problem,
        }
    }
}

/// The frame whose payload is passing.
struct Payload {
    left: u64,
    mask: Option<[u8; 4]>,
    /// Payload bytes of this frame already passed (the mask's phase).
    done: u64,
    control: bool,
    fin: bool,
}

/// Reads one direction's frames into [`Message`]s.
pub struct Frames {
    /// Payload bytes kept per message; `None`: messages are not captured,
    /// only their boundaries followed (close frames are still noticed).
    limit: Option<usize>,
    deflate: Option<Deflate>,
    head: [u8; 14],
    head_len: usize,
    payload: Option<Payload>,
    data: Option<Building>,
    control: Option<Building>,
    inflate: Option<Inflate>,
    /// Why reading stopped, once it did.
    broken: Option<String>,
    /// A close frame passed this way.
    closed: bool,
    /// Whether messages beginning now are captured (see [`Frames::set_capture`]).
    capture: bool,
}

impl Frames {
    pub fn new(limit: Option<usize>, deflate: Option<Deflate>) -> Frames {
        Frames {
            limit,
            deflate,
            head: [0; 14],
            head_len: 0,
            payload: None,
            data: None,
            control: None,
            inflate: None,
            broken: None,
            closed: false,
            capture: true,
        }
    }

    /// Whether messages that begin from now on have their payload kept:
    /// off once the connection's record budget is spent (which never
    /// comes back, so a compressed stream's window is never needed again).
    pub fn set_capture(&mut self, on: bool) {
        self.capture = on;
    }

    /// Whether a close frame has passed this way.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Why the frames could not be read past some point, if so.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Reads the next relayed bytes; `out` gets each message completed.
    pub fn feed(&mut self, mut data: &[u8], out: &mut impl FnMut(Message)) {
        while !data.is_empty() && self.broken.is_none() {
            if self.payload.is_some() {
                data = self.payload_bytes(data, out);
            } else {
                data = self.header(data, out);
            }
        }
    }

    /// Takes header bytes; returns what follows them.
    fn header<'a>(&mut self, data: &'a [u8], out: &mut impl FnMut(Message)) -> &'a [u8] {
        let had = self.head_len;
        let (parsed, used) = if had == 0 {
            let mut c = Cursor::new(data);
            match FrameHeader::parse(&mut c) {
                Ok(Some(h)) => (h, c.position() as usize),
                Ok(None) => {
                    // Shorter than its header (at most 14 bytes).
                    let n = data.len().min(self.head.len());
                    self.head[..n].copy_from_slice(&data[..n]);
                    self.head_len = n;
                    return &data[n..];
                }
                Err(e) => return self.stop(format!("unreadable frame header: {e}")),
            }
        } else {
            let n = (self.head.len() - had).min(data.len());
            self.head[had..had + n].copy_from_slice(&data[..n]);
            let mut c = Cursor::new(&self.head[..had + n]);
            match FrameHeader::parse(&mut c) {
                Ok(Some(h)) => {
                    self.head_len = 0;
                    (h, c.position() as usize - had)
                }
                Ok(None) => {
                    self.head_len = had + n;
                    return &data[n..];
                }
                Err(e) => return self.stop(format!("unreadable frame header: {e}")),
            }
        };
        self.start_frame(parsed.0, parsed.1, out);
        &data[used..]
    }

    fn stop<'a>(&mut self, why: String) -> &'a [u8] {
        self.broken = Some(why);
        self.payload = None;
        self.data = None;
        self.control = None;
        &[]
    }

    fn start_frame(&mut self, h: FrameHeader, len: u64, out: &mut impl FnMut(Message)) {
        let control = matches!(h.opcode, OpCode::Control(_));
        let opcode: u8 = h.opcode.into();
        if control {
            let mut b = Building::new(opcode, false);
            b.skip = !self.capture;
            if !h.is_final || len > 125 {
                b.problem = Some("a control frame that is fragmented or over 125 bytes".into());
            }
            if h.opcode == OpCode::Control(Control::Close) {
                self.closed = true;
            }
            self.control = Some(b);
        } else if h.opcode == OpCode::Data(Data::Continue) {
            if self.data.is_none() {
                let mut b = Building::new(CONTINUATION, false);
                b.problem = Some("a continuation frame with no message to continue".into());
                self.data = Some(b);
            }
        } else {
            if let Some(mut unfinished) = self.data.take() {
                unfinished.problem =
                    Some("a new message began before this one's last frame".into());
                self.end_data(unfinished, out);
            }
            let compressed = h.rsv1 && self.deflate.is_some();
            let mut b = Building::new(opcode, compressed);
            b.skip = !self.capture;
            if let (Some(limit), false, false) = (self.limit, b.skip, compressed) {
                // One allocation for a single-frame message, not a chain
                // of regrowths.
                b.payload.reserve(len.min(limit as u64) as usize);
            }
            self.data = Some(b);
        }
        if let Some(b) = self.building(control) {
            b.frames += 1;
        }
        self.payload = Some(Payload {
            left: len,
            mask: h.mask,
            done: 0,
            control,
            fin: h.is_final,
        });
        if len == 0 {
            self.end_frame(out);
        }
    }

    fn building(&mut self, control: bool) -> Option<&mut Building> {
        if control {
            self.control.as_mut()
        } else {
            self.data.as_mut()
        }
    }

    /// Takes payload bytes of the passing frame; returns what follows.
    fn payload_bytes<'a>(&mut self, data: &'a [u8], out: &mut impl FnMut(Message)) -> &'a [u8] {
        let Some(p) = self.payload.as_mut() else {
            return data;
        };
        let take = p.left.min(data.len() as u64) as usize;
        let (chunk, rest) = data.split_at(take);
        let (mask, phase, control) = (p.mask, p.done, p.control);
        p.left -= take as u64;
        p.done += take as u64;
        let ended = p.left == 0;
        if let Some(limit) = self.limit {
            self.capture(chunk, mask, phase, control, limit);
        }
        if let Some(b) = self.building(control) {
            b.size += take as u64;
        }
        if ended {
            self.end_frame(out);
        }
        rest
    }

    /// Keeps what the limit allows of `chunk` (inflated when compressed).
    fn capture(
        &mut self,
        chunk: &[u8],
        mask: Option<[u8; 4]>,
        phase: u64,
        control: bool,
        limit: usize,
    ) {
        let deflate = self.deflate;
        let Some(b) = (if control {
            self.control.as_mut()
        } else {
            self.data.as_mut()
        }) else {
            return;
        };
        if b.skip {
            b.truncated |= !chunk.is_empty();
            return;
        }
        if !b.compressed {
            let room = limit.saturating_sub(b.payload.len());
            let keep = chunk.len().min(room);
            if keep < chunk.len() {
                b.truncated = true;
            }
            let start = b.payload.len();
            b.payload.extend_from_slice(&chunk[..keep]);
            if let Some(m) = mask {
                unmask(&mut b.payload[start..], m, phase);
            }
            return;
        }
        // Compressed: the inflater needs every byte to keep its window
        // right, unless the sender resets it after each message and the
        // capture is already full.
        let skip = deflate.is_some_and(|d| d.no_context_takeover) && b.payload.len() >= limit;
        if skip || b.problem.is_some() {
            if skip {
                b.truncated = true;
            }
            return;
        }
        let mut plain = chunk.to_vec();
        if let Some(m) = mask {
            unmask(&mut plain, m, phase);
        }
        let inflate = self.inflate.get_or_insert_with(Inflate::new);
        if let Err(why) = inflate.push(&plain, &mut b.payload, limit, &mut b.truncated) {
            b.problem = Some(why);
        }
    }

    fn end_frame(&mut self, out: &mut impl FnMut(Message)) {
        let Some(p) = self.payload.take() else { return };
        if p.control {
            if let Some(b) = self.control.take() {
                out(b.finish());
            }
        } else if p.fin {
            if let Some(b) = self.data.take() {
                self.end_data(b, out);
            }
        }
    }

    fn end_data(&mut self, mut b: Building, out: &mut impl FnMut(Message)) {
        if b.compressed {
            let no_context = self.deflate.is_some_and(|d| d.no_context_takeover);
            if let Some(inflate) = self.inflate.as_mut() {
                if self.limit.is_some() && b.problem.is_none() {
                    // RFC 7692 7.2.2: the sender removed this tail.
                    if let Err(why) = inflate.push(
                        &[0, 0, 0xff, 0xff],
                        &mut b.payload,
                        self.limit.unwrap_or(0),
                        &mut b.truncated,
                    ) {
                        b.problem = Some(why);
                    }
                }
                if no_context || inflate.ended || b.problem.is_some() {
                    inflate.reset();
                }
            }
        }
        out(b.finish());
    }
}

/// XORs `data` with the frame's mask, `phase` bytes into its payload.
fn unmask(data: &mut [u8], mask: [u8; 4], phase: u64) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= mask[((phase as usize) + i) & 3];
    }
}

/// permessage-deflate's inflater for one direction (raw DEFLATE, the
/// window kept across messages unless the sender resets it).
pub struct Inflate {
    z: flate2::Decompress,
    /// The stream hit a final block: the next message starts afresh.
    ended: bool,
}

impl Inflate {
    fn new() -> Inflate {
        Inflate {
            z: flate2::Decompress::new(false),
            ended: false,
        }
    }

    fn reset(&mut self) {
        self.z.reset(false);
        self.ended = false;
    }

    /// Inflates `input`, keeping output up to `limit` in `out` and
    /// discarding the rest (still inflated: the window needs it).
    fn push(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
        truncated: &mut bool,
    ) -> Result<(), String> {
        let mut spill = [0u8; 4096];
        while !input.is_empty() && !self.ended {
            let before_in = self.z.total_in();
            let before_out = self.z.total_out();
            let room = limit.saturating_sub(out.len());
            let status = if room > 0 {
                out.reserve(room.min(16 * 1024));
                let status = self
                    .z
                    .decompress_vec(input, out, flate2::FlushDecompress::Sync);
                if out.len() > limit {
                    out.truncate(limit);
                    *truncated = true;
                }
                status
            } else {
                let s = self
                    .z
                    .decompress(input, &mut spill, flate2::FlushDecompress::Sync);
                if self.z.total_out() > before_out {
                    *truncated = true;
                }
                s
            };
            let status =
                status.map_err(|e| format!("permessage-deflate payload did not inflate: {e}"))?;
            let used = (self.z.total_in() - before_in) as usize;
            input = &input[used..];
            let produced = self.z.total_out() - before_out;
            if status == flate2::Status::StreamEnd {
                self.ended = true;
            } else if used == 0 && produced == 0 {
                // Input left and room to write, yet nothing moved.
                return Err("permessage-deflate payload made no progress".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame as an endpoint sends it (masked when `mask` is given).
    fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![(fin as u8) << 7 | (rsv1 as u8) << 6 | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n < 65536 => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mut body = payload.to_vec();
        if let Some(k) = mask {
            out.extend_from_slice(&k);
            unmask(&mut body, k, 0);
        }
        out.extend_from_slice(&body);
        out
    }

    fn read_all(f: &mut Frames, bytes: &[u8], step: usize) -> Vec<Message> {
        let mut got = Vec::new();
        for chunk in bytes.chunks(step.max(1)) {
            f.feed(chunk, &mut |m| got.push(m));
        }
        got
    }

    #[test]
    fn messages_read_the_same_whatever_the_chunking() {
        let key = Some([1, 2, 3, 4]);
        let mut wire = frame(true, false, TEXT, b"hello", key);
        wire.extend(frame(false, false, BINARY, &[7; 300], key));
        wire.extend(frame(true, false, PING, b"p", key)); // inside the fragments
        wire.extend(frame(true, false, CONTINUATION, &[8; 70_000], key));
        wire.extend(frame(
            true,
            false,
            CLOSE,
            &[0x03, 0xe8, b'b', b'y', b'e'],
            key,
        ));
        for step in [1, 2, 3, 7, 13, 100, 4096, wire.len()] {
            let mut f = Frames::new(Some(1000), None);
            let got = read_all(&mut f, &wire, step);
            let ops: Vec<u8> = got.iter().map(|m| m.opcode).collect();
            assert_eq!(ops, vec![TEXT, PING, BINARY, CLOSE], "step {step}");
            assert_eq!(got[0].payload, b"hello");
            assert_eq!(got[1].payload, b"p");
            assert_eq!(got[2].size, 70_300);
            assert_eq!(got[2].frames, 2);
            assert_eq!(got[2].payload.len(), 1000);
            assert!(got[2].payload[..300].iter().all(|b| *b == 7));
            assert!(got[2].payload[300..].iter().all(|b| *b == 8));
            assert!(got[2].truncated);
            assert_eq!(got[3].payload, [0x03, 0xe8, b'b', b'y', b'e']);
            assert!(f.closed());
            assert!(f.broken().is_none());
        }
    }

    #[test]
    fn without_capture_only_boundaries_are_followed() {
        let mut wire = frame(true, false, BINARY, &[1; 200], None);
        wire.extend(frame(true, false, CLOSE, &[0x03, 0xe8], None));
        let mut f = Frames::new(None, None);
        let got = read_all(&mut f, &wire, 5);
        assert_eq!(got.len(), 2);
        assert!(got[0].payload.is_empty());
        assert_eq!(got[0].size, 200);
        assert!(f.closed());
    }

    #[test]
    fn capture_turned_off_applies_from_the_next_message() {
        let key = Some([4, 3, 2, 1]);
        let first = frame(false, false, TEXT, b"kept ", key);
        let mut rest = frame(true, false, CONTINUATION, b"whole", key);
        rest.extend(frame(true, false, TEXT, b"only counted", key));
        let mut f = Frames::new(Some(100), None);
        let mut got = read_all(&mut f, &first, 2);
        // Off mid-message: the message begun keeps its capture.
        f.set_capture(false);
        got.extend(read_all(&mut f, &rest, 2));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].payload, b"kept whole");
        assert!(!got[0].truncated);
        assert!(got[1].payload.is_empty());
        assert!(got[1].truncated);
        assert_eq!(got[1].size, 12);
    }

    #[test]
    fn a_reserved_opcode_stops_reading_not_the_caller() {
        let mut wire = frame(true, false, TEXT, b"ok", None);
        wire.extend([0x83, 0x00]); // opcode 3 is reserved
        wire.extend(frame(true, false, TEXT, b"unseen", None));
        let mut f = Frames::new(Some(100), None);
        let got = read_all(&mut f, &wire, 3);
        assert_eq!(got.len(), 1);
        assert!(f.broken().is_some_and(|w| w.contains("opcode")));
    }

    fn deflate_raw(z: &mut flate2::Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        z.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn permessage_deflate_is_inflated_with_the_window_kept() {
        let mut z = flate2::Compress::new(flate2::Compression::default(), false);
        let text = b"the same words, the same words, again and again".repeat(20);
        let first = deflate_raw(&mut z, &text);
        // The second message refers back into the first one's window.
        let second = deflate_raw(&mut z, &text);
        assert!(second.len() < first.len() / 2, "context takeover in use");
        let mut wire = frame(true, true, TEXT, &first, Some([9, 8, 7, 6]));
        wire.extend(frame(true, true, TEXT, &second, Some([5, 4, 3, 2])));
        wire.extend(frame(true, false, TEXT, b"plain", Some([1, 1, 1, 1])));
        let deflate = Some(Deflate {
            no_context_takeover: false,
        });
        for step in [1, 5, 64, wire.len()] {
            let mut f = Frames::new(Some(64 * 1024), deflate);
            let got = read_all(&mut f, &wire, step);
            assert_eq!(got.len(), 3, "step {step}");
            for m in &got[..2] {
                assert!(m.compressed);
                assert_eq!(m.problem, None);
                assert_eq!(m.payload, text);
            }
            assert_eq!(got[1].size, second.len() as u64);
            assert_eq!(got[2].payload, b"plain");
        }
        // Captured short, the window is still kept whole.
        let mut f = Frames::new(Some(10), deflate);
        let got = read_all(&mut f, &wire, 7);
        assert_eq!(got[1].payload, text[..10]);
        assert!(got[1].truncated && got[1].problem.is_none());
    }

    #[test]
    fn a_payload_that_does_not_inflate_is_noted_and_reading_goes_on() {
        let deflate = Some(Deflate {
            no_context_takeover: true,
        });
        let mut wire = frame(true, true, BINARY, &[0xff; 40], None);
        wire.extend(frame(true, false, TEXT, b"after", None));
        let mut f = Frames::new(Some(1024), deflate);
        let got = read_all(&mut f, &wire, 9);
        assert_eq!(got.len(), 2);
        assert!(got[0]
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("inflate")));
        assert_eq!(got[1].payload, b"after");
    }

    #[test]
    fn the_extension_header_says_what_each_side_resets() {
        let mut h = http::HeaderMap::new();
        assert_eq!(deflate_agreed(&h), None);
        h.insert(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            deflate_agreed(&h),
            Some((
                Deflate {
                    no_context_takeover: true
                },
                Deflate {
                    no_context_takeover: false
                }
            ))
        );
    }
}
