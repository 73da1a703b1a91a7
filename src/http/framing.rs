//! Follows HTTP/1.1 message framing over the bytes a client sends, to find
//! every request head, including heads pipelined behind a body that is
//! still streaming, and to flag each head that carries both
//! `Content-Length` and `Transfer-Encoding`.
//!
//! hyper accepts such a head (Transfer-Encoding wins, the connection
//! closes after it); sluice refuses it with a 400, since ambiguous framing
//! is the raw material of request smuggling. hyper strips one of the two
//! headers before the handler sees the request, so the verdict has to come
//! from the bytes.
//!
//! Invariants: the tracker never buffers (a fixed 18-byte name buffer and
//! counters); body bytes are skipped by length, never scanned as heads. A
//! CONNECT has no body, so tracking goes on after it: a refused CONNECT
//! leaves the connection in HTTP, and after an accepted one the socket is
//! taken out of the reader that feeds the tracker. It only decides
//! refusals; forwarding follows hyper's parse, so a disagreement can refuse
//! a request, never smuggle one. Input it cannot follow (a bad chunk size,
//! a final coding other than chunked) is hyper's error too: it stops.

/// Where in the byte stream the tracker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// In a request head (or before one).
    Head,
    /// A body of known length: this many bytes left.
    Fixed(u64),
    /// Chunked body: reading a chunk-size line (size so far, past `;`).
    ChunkSize {
        size: u64,
        in_ext: bool,
        digits: u32,
    },
    /// Chunked body: data of the current chunk, then its CRLF.
    ChunkData(u64),
    ChunkDataEnd,
    /// Chunked body: trailer lines until an empty one.
    Trailers {
        mid_line: bool,
    },
    /// The connection left HTTP; nothing more is tracked.
    Done,
}

/// What one finished head said about framing.
#[derive(Debug, Default, Clone, Copy)]
struct HeadInfo {
    saw_cl: bool,
    cl: Option<u64>,
    saw_te: bool,
    te_chunked: bool,
}

/// The framing tracker of one client connection.
#[derive(Debug)]
pub struct FramingTracker {
    at: At,
    mid_line: bool,
    in_name: bool,
    in_value: bool,
    name: [u8; 18],
    name_len: usize,
    /// Which header the current value belongs to.
    value_of: Field,
    value_digits: Option<u64>,
    value_last_token: [u8; 7],
    value_tail_len: usize,
    lines: u32,
    head: HeadInfo,
    /// Heads finished so far.
    heads: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Other,
    ContentLength,
    TransferEncoding,
}

impl Default for FramingTracker {
    fn default() -> Self {
        FramingTracker {
            at: At::Head,
            mid_line: false,
            in_name: false,
            in_value: false,
            name: [0; 18],
            name_len: 0,
            value_of: Field::Other,
            value_digits: None,
            value_last_token: [0; 7],
            value_tail_len: 0,
            lines: 0,
            head: HeadInfo::default(),
            heads: 0,
        }
    }
}

impl FramingTracker {
    /// Feeds client bytes; calls `ambiguous(index)` for every head (counted
    /// from 0 on this connection) that named both framing headers.
    pub fn feed(&mut self, mut bytes: &[u8], mut ambiguous: impl FnMut(u64)) {
        while !bytes.is_empty() {
            match self.at {
                At::Done => return,
                At::Fixed(left) => {
                    let n = (bytes.len() as u64).min(left);
                    bytes = &bytes[n as usize..];
                    self.at = if left == n {
                        At::Head
                    } else {
                        At::Fixed(left - n)
                    };
                }
                At::ChunkData(left) => {
                    let n = (bytes.len() as u64).min(left);
                    bytes = &bytes[n as usize..];
                    self.at = if left == n {
                        At::ChunkDataEnd
                    } else {
                        At::ChunkData(left - n)
                    };
                }
                _ => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    self.byte(b, &mut ambiguous);
                }
            }
        }
    }

    fn byte(&mut self, b: u8, ambiguous: &mut impl FnMut(u64)) {
        match self.at {
            At::Head => self.head_byte(b, ambiguous),
            At::ChunkSize {
                size,
                in_ext,
                digits,
            } => {
                if b == b'\n' {
                    self.at = if size == 0 {
                        At::Trailers { mid_line: false }
                    } else {
                        At::ChunkData(size)
                    };
                } else if !in_ext {
                    if let Some(d) = (b as char).to_digit(16) {
                        // Over 16 hex digits is hyper's error too; stop
                        // following rather than wrap.
                        if digits >= 16 {
                            self.at = At::Done;
                        } else {
                            self.at = At::ChunkSize {
                                size: size * 16 + d as u64,
                                in_ext,
                                digits: digits + 1,
                            };
                        }
                    } else if b == b';' || b == b' ' || b == b'\t' || b == b'\r' {
                        self.at = At::ChunkSize {
                            size,
                            in_ext: true,
                            digits,
                        };
                    } else {
                        // Not a chunk size: hyper refuses the body.
                        self.at = At::Done;
                    }
                }
            }
            At::ChunkDataEnd => {
                if b == b'\n' {
                    self.at = At::ChunkSize {
                        size: 0,
                        in_ext: false,
                        digits: 0,
                    };
                }
            }
            At::Trailers { mid_line } => {
                if b == b'\n' {
                    self.at = if mid_line {
                        At::Trailers { mid_line: false }
                    } else {
                        At::Head
                    };
                } else if b != b'\r' {
                    self.at = At::Trailers { mid_line: true };
                }
            }
            At::Fixed(_) | At::ChunkData(_) | At::Done => {}
        }
    }

    fn head_byte(&mut self, b: u8, ambiguous: &mut impl FnMut(u64)) {
        if !self.mid_line {
            if b == b'\r' {
                return;
            }
            if b == b'\n' {
                if self.lines > 0 {
                    self.end_head(ambiguous);
                }
                return;
            }
            self.mid_line = true;
            self.in_name = self.lines > 0;
            self.in_value = false;
            self.name_len = 0;
            self.lines += 1;
        }
        if b == b'\n' {
            self.end_value();
            self.mid_line = false;
            self.in_name = false;
            return;
        }
        if self.in_name {
            if b == b':' {
                self.in_name = false;
                self.in_value = true;
                self.value_digits = None;
                self.value_tail_len = 0;
                self.value_of = match &self.name[..self.name_len] {
                    b"content-length" => {
                        self.head.saw_cl = true;
                        Field::ContentLength
                    }
                    b"transfer-encoding" => {
                        self.head.saw_te = true;
                        Field::TransferEncoding
                    }
                    _ => Field::Other,
                };
            } else if self.name_len < self.name.len() {
                self.name[self.name_len] = b.to_ascii_lowercase();
                self.name_len += 1;
            } else {
                self.in_name = false;
            }
        } else if self.in_value {
            match self.value_of {
                Field::ContentLength if b.is_ascii_digit() => {
                    let d = (b - b'0') as u64;
                    self.value_digits = Some(
                        self.value_digits
                            .unwrap_or(0)
                            .saturating_mul(10)
                            .saturating_add(d),
                    );
                }
                Field::TransferEncoding if b != b'\r' => {
                    // Keep the last 7 bytes: does the value end in "chunked"?
                    let c = b.to_ascii_lowercase();
                    if c == b' ' || c == b'\t' {
                        return;
                    }
                    if self.value_tail_len < 7 {
                        self.value_last_token[self.value_tail_len] = c;
                        self.value_tail_len += 1;
                    } else {
                        self.value_last_token.copy_within(1.., 0);
                        self.value_last_token[6] = c;
                    }
                }
                _ => {}
            }
        }
    }

    fn end_value(&mut self) {
        if !self.in_value {
            return;
        }
        self.in_value = false;
        match self.value_of {
            Field::ContentLength => {
                if let Some(n) = self.value_digits {
                    self.head.cl = Some(n);
                }
            }
            Field::TransferEncoding => {
                self.head.te_chunked =
                    self.value_tail_len == 7 && &self.value_last_token == b"chunked";
            }
            Field::Other => {}
        }
    }

    fn end_head(&mut self, ambiguous: &mut impl FnMut(u64)) {
        let head = self.head;
        let index = self.heads;
        self.heads += 1;
        if head.saw_cl && head.saw_te {
            ambiguous(index);
        }
        self.at = if head.saw_te {
            if head.te_chunked {
                At::ChunkSize {
                    size: 0,
                    in_ext: false,
                    digits: 0,
                }
            } else {
                // hyper refuses a request whose final coding is not chunked.
                At::Done
            }
        } else {
            match head.cl {
                Some(0) | None => At::Head,
                Some(n) => At::Fixed(n),
            }
        };
        self.head = HeadInfo::default();
        self.lines = 0;
        self.mid_line = false;
        self.in_name = false;
        self.in_value = false;
    }
}

#[cfg(test)]
mod tests {
    use super::FramingTracker;

    fn flagged(stream: &[u8], split_every: usize) -> Vec<u64> {
        let mut t = FramingTracker::default();
        let mut out = Vec::new();
        for piece in stream.chunks(split_every.max(1)) {
            t.feed(piece, |i| out.push(i));
        }
        out
    }

    const AMBIGUOUS: &[u8] = b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    #[test]
    fn flags_heads_with_both_framing_headers_however_split() {
        for split in 1..AMBIGUOUS.len() + 1 {
            assert_eq!(flagged(AMBIGUOUS, split), [0], "split every {split}");
        }
    }

    #[test]
    fn leaves_normal_heads_alone() {
        let s = b"POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcde\
GET http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nX-Content-Length: 1\r\n\r\n0\r\n\r\n";
        assert!(flagged(s, 1000).is_empty());
    }

    #[test]
    fn finds_heads_pipelined_behind_bodies_of_both_framings() {
        let mut s = Vec::new();
        // 0: a fixed-length body that itself looks like an ambiguous head.
        let fake = b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        s.extend_from_slice(
            format!(
                "POST http://a/ HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                fake.len()
            )
            .as_bytes(),
        );
        s.extend_from_slice(fake);
        // 1: chunked, with an extension and a trailer.
        s.extend_from_slice(b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\n");
        // 2: ambiguous, pipelined after both.
        s.extend_from_slice(AMBIGUOUS);
        // 3: plain GET.
        s.extend_from_slice(b"GET http://a/ HTTP/1.1\r\n\r\n");
        for split in [1, 3, 7, 64, 4096] {
            assert_eq!(flagged(&s, split), [2], "split every {split}");
        }
    }

    #[test]
    fn goes_on_after_a_connect_and_stops_at_a_bad_chunk() {
        let mut s = b"CONNECT a:443 HTTP/1.1\r\n\r\n".to_vec();
        s.extend_from_slice(AMBIGUOUS);
        assert_eq!(flagged(&s, 5), [1]);
        let mut s = b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec();
        s.extend_from_slice(AMBIGUOUS);
        assert!(flagged(&s, 5).is_empty());
    }
}
