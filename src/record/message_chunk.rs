//! The stored form of a run of one record's messages: one SQLite row (a
//! chunk) holds up to [`MAX_MESSAGES`] messages of one record from one
//! batch, packed into one blob, so that a batch of thousands of small
//! WebSocket messages costs the store a row per open connection, not a
//! row and an index entry per message.
//!
//! A chunk's blob is its messages one after another, each a fixed
//! [`HEAD`]-byte head (little-endian) followed by its meta and payload:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | id − the chunk's first id |
//! | 8 | seq |
//! | 8 | at_us |
//! | 8 | size on the wire |
//! | 1 | direction code |
//! | 1 | opcode |
//! | 2 | flags |
//! | 4 | meta length, or `u32::MAX` for none |
//! | 4 | payload length |
//!
//! Invariants: ids inside a chunk rise strictly and start at the chunk's
//! first id; a chunk is at most [`MAX_MESSAGES`] messages and, past its
//! first message, at most [`MAX_BYTES`]; decoding checks every length
//! against the blob, so a damaged chunk reads as an error, never as
//! another message's bytes or a panic.

use super::messages::{Direction, Queued};

/// Bytes of a message's head in a chunk.
pub const HEAD: usize = 40;
/// Messages per chunk: a page of the API decodes at most a few chunks.
pub const MAX_MESSAGES: usize = 512;
/// Blob bytes a chunk grows to before the next message starts a new one.
pub const MAX_BYTES: usize = 1 << 20;
const NO_META: u32 = u32::MAX;

/// One message as read back from a chunk, borrowing the chunk's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored<'a> {
    pub id: u64,
    pub seq: u64,
    pub at_us: i64,
    pub size: u64,
    pub dir: i64,
    pub opcode: u8,
    pub flags: i64,
    pub meta: Option<&'a str>,
    pub payload: &'a [u8],
}

/// Appends `m`, stored as `id`, to the chunk `out` whose first id is
/// `first_id`.
pub fn push(out: &mut Vec<u8>, first_id: u64, id: u64, m: &Queued) {
    let meta = m.meta.as_deref().map(str::as_bytes);
    out.reserve(HEAD + meta.map_or(0, <[u8]>::len) + m.payload.len());
    // A chunk spans one batch, far fewer than 2^32 ids.
    out.extend_from_slice(&((id - first_id) as u32).to_le_bytes());
    out.extend_from_slice(&m.seq.to_le_bytes());
    out.extend_from_slice(&m.at_us.to_le_bytes());
    out.extend_from_slice(&m.size.to_le_bytes());
    out.push(m.dir.code() as u8);
    out.push(m.opcode);
    out.extend_from_slice(&(m.flags as u16).to_le_bytes());
    let meta_len = meta.map_or(NO_META, |b| b.len() as u32);
    out.extend_from_slice(&meta_len.to_le_bytes());
    out.extend_from_slice(&(m.payload.len() as u32).to_le_bytes());
    if let Some(b) = meta {
        out.extend_from_slice(b);
    }
    out.extend_from_slice(&m.payload);
}

/// Whether a chunk holding `count` messages in `bytes` takes no more.
pub fn is_full(count: usize, bytes: usize) -> bool {
    count >= MAX_MESSAGES || bytes >= MAX_BYTES
}

/// A chunk that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("message chunk {first_id} is damaged at byte {at}")]
pub struct Damaged {
    pub first_id: u64,
    pub at: usize,
}

/// The messages of a chunk, in order.
pub fn decode(first_id: u64, data: &[u8]) -> Messages<'_> {
    Messages {
        first_id,
        data,
        at: 0,
    }
}

/// Iterator over a chunk's messages; stops after the first error.
pub struct Messages<'a> {
    first_id: u64,
    data: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Stored<'a>, Damaged>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.data.len() {
            return None;
        }
        let start = self.at;
        let item = self.read();
        if item.is_none() {
            // Nothing more is read from a damaged chunk.
            self.at = self.data.len();
        }
        Some(item.ok_or(Damaged {
            first_id: self.first_id,
            at: start,
        }))
    }
}

impl<'a> Messages<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.data.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }

    fn read(&mut self) -> Option<Stored<'a>> {
        let head = self.take(HEAD)?;
        let u32_at =
            |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[i..i + 8]);
            u64::from_le_bytes(b)
        };
        let meta_len = u32_at(32);
        let payload_len = u32_at(36) as usize;
        let meta = match meta_len {
            NO_META => None,
            n => Some(std::str::from_utf8(self.take(n as usize)?).ok()?),
        };
        let payload = self.take(payload_len)?;
        let dir = match head[28] {
            0 => Direction::Send,
            1 => Direction::Receive,
            _ => return None,
        };
        Some(Stored {
            id: self.first_id.checked_add(u64::from(u32_at(0)))?,
            seq: u64_at(4),
            at_us: u64_at(12) as i64,
            size: u64_at(20),
            dir: dir.code(),
            opcode: head[29],
            flags: i64::from(u16::from_le_bytes([head[30], head[31]])),
            meta,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::messages::Totals;

    fn queued(seq: u64, dir: Direction, meta: Option<&str>, payload: &[u8]) -> Queued {
        Queued {
            record_id: 7,
            seq,
            dir,
            at_us: 1_700_000_000_000_000 + seq as i64,
            opcode: 2,
            size: payload.len() as u64 + 3,
            flags: 1,
            meta: meta.map(str::to_string),
            payload: payload.to_vec(),
            totals: Totals::default(),
        }
    }

    #[test]
    fn messages_read_back_as_they_were_pushed() {
        let a = queued(1, Direction::Send, None, b"hello");
        let b = queued(2, Direction::Receive, Some(r#"{"event":"x"}"#), b"");
        let mut chunk = Vec::new();
        push(&mut chunk, 100, 100, &a);
        push(&mut chunk, 100, 142, &b);
        let got: Vec<Stored> = decode(100, &chunk).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Stored {
                id: 100,
                seq: 1,
                at_us: a.at_us,
                size: 8,
                dir: 0,
                opcode: 2,
                flags: 1,
                meta: None,
                payload: b"hello",
            }
        );
        assert_eq!(got[1].id, 142);
        assert_eq!(got[1].dir, 1);
        assert_eq!(got[1].meta, Some(r#"{"event":"x"}"#));
        assert_eq!(got[1].payload, b"");
    }

    #[test]
    fn a_damaged_chunk_is_an_error_not_a_panic() {
        let mut chunk = Vec::new();
        push(&mut chunk, 1, 1, &queued(1, Direction::Send, None, b"abc"));
        push(&mut chunk, 1, 2, &queued(2, Direction::Send, None, b"defg"));
        // Every truncation: the whole messages before the cut, then one error.
        for cut in 0..chunk.len() {
            let got: Vec<_> = decode(1, &chunk[..cut]).collect();
            let whole = if cut >= HEAD + 3 { 1 } else { 0 };
            assert!(got.iter().take(whole).all(Result::is_ok), "cut {cut}");
            if cut != 0 && cut != HEAD + 3 {
                assert!(got.last().unwrap().is_err(), "cut {cut}");
            }
        }
        // A payload length past the end.
        let mut bad = chunk.clone();
        bad[36..40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(1, &bad).next().unwrap().is_err());
        // An unknown direction.
        let mut bad = chunk;
        bad[28] = 9;
        assert!(decode(1, &bad).next().unwrap().is_err());
    }
}
