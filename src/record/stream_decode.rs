//! A `Content-Encoding` undone as the body passes, for bodies that are read
//! as a stream rather than captured whole (an event stream's events):
//! compressed bytes are written in piece by piece, and the decoded bytes
//! reach the sink as each piece is decoded.
//!
//! Invariants: the codings and their limits are [`super::decode`]'s (at
//! most [`super::decode::MAX_CODINGS`], zstd windows at most 8 MiB);
//! decoded bytes pass through the decoders' own bounded buffers straight
//! into the sink, never gathered; and a stream may decode to at most
//! [`MAX_RATIO`] times its compressed size plus [`SLACK`], so a
//! compression bomb costs a bounded amount of CPU and ends decoding with
//! an error instead of running for minutes. After an error nothing more
//! is decoded. Decoder state is bounded process-wide: each stream reserves
//! its decoders' worst case ([`state_bytes`]) from [`DECODER_BUDGET`] for
//! its life, and a stream that does not fit is refused, so many
//! compressed streams from a hostile origin cannot make sluice hold
//! megabytes of window each.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::write::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

use super::decode::{self, Coding, DecodeError};

/// Decoded bytes allowed per compressed byte: text compresses 5 to 20
/// times, an event stream of repeated JSON maybe 50.
pub const MAX_RATIO: u64 = 200;
/// Decoded bytes allowed beyond the ratio (the decoders' first buffers).
pub const SLACK: u64 = 1 << 20;

/// Bytes all streams' decoders may hold at once, worst case.
pub const DECODER_BUDGET: u64 = 64 << 20;
/// The process's decoder budget.
pub static DECODERS: Budget = Budget::new(DECODER_BUDGET);

/// A bound on the decoder state streams hold at once.
pub struct Budget {
    limit: u64,
    held: AtomicU64,
}

impl Budget {
    pub const fn new(limit: u64) -> Budget {
        Budget {
            limit,
            held: AtomicU64::new(0),
        }
    }

    fn take(&'static self, bytes: u64) -> Option<Reserved> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + bytes <= self.limit).then_some(held + bytes)
            })
            .ok()
            .map(|_| Reserved {
                budget: self,
                bytes,
            })
    }
}

/// The most a coding's decoder may hold: its window and buffers.
fn state_bytes(coding: Coding) -> u64 {
    match coding {
        // A 32 KiB window, flate2's buffers and inflate state.
        Coding::Gzip | Coding::Deflate => 128 << 10,
        // The RFC 7932 window is at most 16 MiB.
        Coding::Brotli => (16 << 20) + (256 << 10),
        Coding::Zstd => (1 << decode::ZSTD_WINDOW_LOG_MAX) + (256 << 10),
    }
}

/// A stream's share of a [`Budget`], given back on drop.
struct Reserved {
    budget: &'static Budget,
    bytes: u64,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A body's codings, undone as it passes.
pub struct StreamDecoder {
    top: Box<dyn Write + Send>,
    _reserved: Reserved,
    /// Decoded bytes the sink may still take.
    allowance: Arc<AtomicU64>,
    encoding: String,
    failed: bool,
}

impl StreamDecoder {
    /// Decoders for `encoding` (as [`decode::decode`] reads it) writing
    /// into `sink`.
    pub fn new(encoding: &str, sink: Box<dyn Write + Send>) -> Result<Self, DecodeError> {
        Self::within(&DECODERS, encoding, sink)
    }

    /// [`StreamDecoder::new`], its decoders' state reserved from `budget`.
    pub fn within(
        budget: &'static Budget,
        encoding: &str,
        sink: Box<dyn Write + Send>,
    ) -> Result<Self, DecodeError> {
        let allowance = Arc::new(AtomicU64::new(SLACK));
        let mut top: Box<dyn Write + Send> = Box::new(Allowed {
            inner: sink,
            allowance: allowance.clone(),
        });
        let codings = decode::codings(encoding)?;
        let worst = codings.iter().map(|&c| state_bytes(c)).sum();
        let reserved = budget.take(worst).ok_or(DecodeError::DecodersBusy {
            budget_mib: budget.limit >> 20,
        })?;
        // The last coding listed was applied last: it is undone first, so
        // it sits outermost, next to the raw bytes.
        for coding in codings {
            top = open(coding, top).map_err(|e| decode::read_error(e, encoding))?;
        }
        Ok(StreamDecoder {
            top,
            _reserved: reserved,
            allowance,
            encoding: encoding.trim().to_string(),
            failed: false,
        })
    }

    /// Decodes the next piece of the body; the decoded bytes are in the
    /// sink when this returns. After an error, does nothing.
    pub fn feed(&mut self, compressed: &[u8]) -> Result<(), DecodeError> {
        if self.failed {
            return Ok(());
        }
        self.allowance.fetch_add(
            (compressed.len() as u64).saturating_mul(MAX_RATIO),
            Ordering::Relaxed,
        );
        // flate2's writers hold decoded output until the next write or a
        // flush: flush so each event reaches the sink as it arrives.
        let r = self
            .top
            .write_all(compressed)
            .and_then(|()| self.top.flush());
        r.map_err(|e| self.fail(e))
    }

    fn fail(&mut self, e: io::Error) -> DecodeError {
        self.failed = true;
        decode::read_error(e, &self.encoding)
    }
}

/// Refuses decoded bytes beyond the allowance.
struct Allowed {
    inner: Box<dyn Write + Send>,
    allowance: Arc<AtomicU64>,
}

impl Write for Allowed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len() as u64;
        let left = self.allowance.load(Ordering::Relaxed);
        if n > left {
            return Err(io::Error::other(format!(
                "it decodes to more than {MAX_RATIO} times its compressed size (a compression bomb?)"
            )));
        }
        self.allowance.store(left - n, Ordering::Relaxed);
        self.inner.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn open(coding: Coding, inner: Box<dyn Write + Send>) -> io::Result<Box<dyn Write + Send>> {
    Ok(match coding {
        Coding::Gzip => Box::new(MultiGzDecoder::new(inner)),
        Coding::Deflate => Box::new(Deflate::Sniffing(Vec::new(), Some(inner))),
        Coding::Brotli => Box::new(brotli::DecompressorWriter::new(
            inner,
            decode::BROTLI_INPUT_BUFFER,
        )),
        Coding::Zstd => {
            let mut d = zstd::stream::write::Decoder::new(inner)?;
            d.window_log_max(decode::ZSTD_WINDOW_LOG_MAX)?;
            Box::new(d)
        }
    })
}

/// HTTP `deflate`, zlib-wrapped or raw: decided on its first two bytes,
/// as [`decode`] does for a whole body.
enum Deflate {
    Sniffing(Vec<u8>, Option<Box<dyn Write + Send>>),
    Zlib(ZlibDecoder<Box<dyn Write + Send>>),
    Raw(DeflateDecoder<Box<dyn Write + Send>>),
}

impl Write for Deflate {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Deflate::Zlib(d) => d.write(buf),
            Deflate::Raw(d) => d.write(buf),
            Deflate::Sniffing(head, inner) => {
                let take = (2 - head.len()).min(buf.len());
                head.extend_from_slice(&buf[..take]);
                if head.len() == 2 {
                    let Some(inner) = inner.take() else {
                        return Err(io::Error::other("deflate decoder lost its output"));
                    };
                    let seen = [head[0], head[1]];
                    let mut next = if decode::is_zlib_header(seen) {
                        Deflate::Zlib(ZlibDecoder::new(inner))
                    } else {
                        Deflate::Raw(DeflateDecoder::new(inner))
                    };
                    next.write_all(&seen)?;
                    *self = next;
                }
                Ok(take)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Deflate::Zlib(d) => d.flush(),
            Deflate::Raw(d) => d.flush(),
            Deflate::Sniffing(..) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sink the test reads back, with the size of every write it got.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut g = self.0.lock().unwrap();
            g.0.extend_from_slice(buf);
            g.1 = g.1.max(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn compress(coding: &str, data: &[u8]) -> Vec<u8> {
        use flate2::Compression;
        match coding {
            "gzip" => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "deflate" => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "raw-deflate" => {
                let mut e = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            "br" => {
                let mut out = Vec::new();
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).unwrap();
                drop(w);
                out
            }
            "zstd" => zstd::encode_all(data, 3).unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_coding_decodes_fed_a_byte_at_a_time_and_in_one_piece() {
        let text: Vec<u8> = (0..2000)
            .flat_map(|i| format!("id: {i}\ndata: {{\"n\": {i}}}\n\n").into_bytes())
            .collect();
        for coding in ["gzip", "deflate", "raw-deflate", "br", "zstd"] {
            let wire = compress(coding, &text);
            let name = if coding == "raw-deflate" {
                "deflate"
            } else {
                coding
            };
            for piece in [1, wire.len()] {
                let sink = Shared::default();
                let mut d = StreamDecoder::new(name, Box::new(sink.clone())).unwrap();
                for p in wire.chunks(piece) {
                    d.feed(p).unwrap();
                }
                assert_eq!(
                    sink.0.lock().unwrap().0,
                    text,
                    "{coding} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn decoders_past_the_budget_are_refused_and_given_back_on_drop() {
        // Room for two zstd streams (8.25 MiB each) or 160 gzip ones.
        static BUDGET: Budget = Budget::new(20 << 20);
        let open = |coding| StreamDecoder::within(&BUDGET, coding, Box::new(Shared::default()));
        let first = open("zstd").unwrap();
        let second = open("zstd").unwrap();
        let refused = open("zstd")
            .err()
            .expect("a third zstd stream is over")
            .to_string();
        assert!(refused.contains("20 MiB"), "{refused}");
        assert!(open("br").is_err(), "16 MiB of window does not fit either");
        let gzip: Vec<_> = (0..20).map(|_| open("gzip").unwrap()).collect();
        drop((first, gzip));
        assert!(
            open("zstd").is_ok(),
            "a dropped stream gives its share back"
        );
        drop(second);
        assert_eq!(BUDGET.held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_flushed_event_is_decoded_before_the_stream_ends() {
        // A server flushes its compressor after each event (Z_SYNC_FLUSH).
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"data: first\n\n").unwrap();
        e.flush().unwrap();
        let first = e.get_ref().len();
        let sink = Shared::default();
        let mut d = StreamDecoder::new("gzip", Box::new(sink.clone())).unwrap();
        d.feed(&e.get_ref()[..first]).unwrap();
        assert_eq!(sink.0.lock().unwrap().0, b"data: first\n\n");
    }

    #[test]
    fn a_bomb_stops_at_the_ratio_and_corrupt_input_is_an_error() {
        let zeros = vec![0u8; 256 << 20];
        let wire = compress("gzip", &zeros);
        let sink = Shared::default();
        let mut d = StreamDecoder::new("gzip", Box::new(sink.clone())).unwrap();
        let err = wire.chunks(4096).map(|p| d.feed(p)).find_map(Result::err);
        let err = err.expect("a 256 MiB bomb is refused").to_string();
        assert!(err.contains("compression bomb"), "{err}");
        let (got, largest) = *sink.0.lock().map(|g| (g.0.len(), g.1)).as_ref().unwrap();
        assert!(
            (got as u64) <= wire.len() as u64 * MAX_RATIO + SLACK,
            "{got}"
        );
        assert!(
            largest <= 64 << 10,
            "decoded bytes pass in small pieces: {largest}"
        );
        // Nothing more is decoded after the error.
        d.feed(&wire).unwrap();
        assert_eq!(sink.0.lock().unwrap().0.len(), got);

        let mut d = StreamDecoder::new("gzip", Box::new(Shared::default())).unwrap();
        let err = d.feed(b"this is not gzip at all").unwrap_err().to_string();
        assert!(err.contains("gzip"), "{err}");
        assert!(StreamDecoder::new("compress", Box::new(Shared::default())).is_err());
    }
}
