//! Decoding of captured HTTP bodies by `Content-Encoding`, so recorded
//! exchanges can be shown and searched as the application saw them.
//!
//! Owns the mapping from a `Content-Encoding` value to a stack of streaming
//! decompressors, and the policy for bodies that decode to more than we are
//! willing to hold or whose capture was cut short.
//!
//! Invariants:
//! - never allocates more than `cap` bytes of decoded output, however well
//!   the input compresses: chained codings are decoded as one stream, with no
//!   intermediate buffers, and the output stops growing at `cap`. (Decoder
//!   state is separate and bounded: zstd windows are limited to 8 MiB, brotli's
//!   format limits its window to 16 MiB.)
//! - never panics on hostile input: every failure is a [`DecodeError`], or a
//!   partial [`Decoded`] when some bytes came out before it.
//! - never holds more than [`MAX_CODINGS`] decoders: a longer
//!   `Content-Encoding` list (`zstd, zstd, ...` thousands of times, each
//!   zstd context costing hundreds of KiB) is refused before any decoder is
//!   built, and each decoder is built only when the stream first reaches it.

use std::fmt;
use std::io::{self, Read};

use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};

/// Decoded bytes pass through a scratch buffer this big, and the output grows
/// by at least this much at a time.
const CHUNK: usize = 16 * 1024;

/// RFC 9659 only requires HTTP zstd decoders to accept windows up to 8 MiB;
/// refusing larger ones stops a hostile frame header from making the decoder
/// allocate up to zstd's default limit of 128 MiB.
pub(super) const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Size of the brotli decoder's input buffer.
pub(super) const BROTLI_INPUT_BUFFER: usize = 4096;

/// Most codings one body may stack and still be decoded. Real servers
/// apply one, rarely two; beyond this the body is kept as it crossed.
pub const MAX_CODINGS: usize = 4;

/// A decoded body, possibly cut short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub data: Vec<u8>,
    /// `data` is only a prefix of the decoded body: the output reached `cap`,
    /// or the compressed stream ended early (usually because the capture was
    /// cut at its size limit) after some bytes had decoded.
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported content encoding `{0}`")]
    Unsupported(String),
    #[error("{encoding} data is corrupt: {detail}")]
    Corrupt { encoding: String, detail: String },
    #[error(
        "{count} content codings are stacked; sluice undoes at most {MAX_CODINGS}, \
         so the body was not decoded"
    )]
    TooManyCodings { count: usize },
    #[error(
        "compressed event streams already hold sluice's {budget_mib} MiB for their decoders; \
         this one's events are not read"
    )]
    DecodersBusy { budget_mib: u64 },
}

/// `encoding` is the Content-Encoding header value, e.g. "gzip", "br", "zstd",
/// "deflate", "x-gzip", "identity", or a list "gzip, br" (codings applied in
/// order, so decode in reverse). Case-insensitive, whitespace tolerant; empty
/// or "identity" returns the input (capped).
///
/// At most `cap` decoded bytes are returned; if there were more, or the
/// stream broke after producing some output, the result is marked
/// `truncated`. An empty body decodes to an empty body under any supported
/// coding (HEAD responses, 204s and 304s carry the header with no body).
pub fn decode(encoding: &str, data: &[u8], cap: usize) -> Result<Decoded, DecodeError> {
    let layers = parse(encoding)?;
    if data.is_empty() {
        return Ok(Decoded {
            data: Vec::new(),
            truncated: false,
        });
    }
    let whole = encoding.trim();
    let mut reader = stack(&layers, data);
    read_capped(&mut reader, cap).map_err(|err| corrupt(err, whole))
}

/// The decoded body as a stream, for callers that pass it on piece by
/// piece instead of holding it whole (the admin's decoded download).
/// Errors while reading are `io::Error`s naming the coding.
pub fn reader<'a>(encoding: &'a str, data: &'a [u8]) -> Result<Box<dyn Read + 'a>, DecodeError> {
    let layers = parse(encoding)?;
    Ok(stack(&layers, data))
}

/// A read error of a [`reader`] as the [`DecodeError`] `decode` gives.
pub fn read_error(err: io::Error, encoding: &str) -> DecodeError {
    corrupt(err, encoding.trim())
}

/// The codings `encoding` names, in the order they were applied.
pub(super) fn codings(encoding: &str) -> Result<Vec<Coding>, DecodeError> {
    Ok(parse(encoding)?.into_iter().map(|l| l.coding).collect())
}

/// Whether `encoding` names only codings `decode` understands.
pub fn supported(encoding: &str) -> bool {
    parse(encoding).is_ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

/// One coding from the header, with its name as written there so errors
/// quote what the user can see.
#[derive(Debug)]
struct Layer<'a> {
    coding: Coding,
    name: &'a str,
}

/// Parses a Content-Encoding value into the codings to undo, in the order they
/// were applied. `identity` and empty list elements (which RFC 9110 list
/// syntax allows) are dropped. More than [`MAX_CODINGS`] codings is an
/// error, counted without holding them.
fn parse(encoding: &str) -> Result<Vec<Layer<'_>>, DecodeError> {
    let mut layers = Vec::new();
    let mut count = 0;
    for name in encoding.split(',').map(str::trim) {
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        let coding = if name.is_empty() || is("identity") {
            continue;
        } else if is("gzip") || is("x-gzip") {
            Coding::Gzip
        } else if is("deflate") {
            Coding::Deflate
        } else if is("br") {
            Coding::Brotli
        } else if is("zstd") {
            Coding::Zstd
        } else {
            return Err(DecodeError::Unsupported(name.to_owned()));
        };
        count += 1;
        if count <= MAX_CODINGS {
            layers.push(Layer { coding, name });
        }
    }
    if count > MAX_CODINGS {
        return Err(DecodeError::TooManyCodings { count });
    }
    Ok(layers)
}

/// Builds one reader that undoes every layer. The last coding listed was
/// applied last, so it is the first to undo and sits next to the raw bytes.
/// Each decoder is opened lazily, on the first read that reaches it.
fn stack<'a>(layers: &[Layer<'a>], data: &'a [u8]) -> Box<dyn Read + 'a> {
    let mut reader: Box<dyn Read + 'a> = Box::new(data);
    for layer in layers.iter().rev() {
        reader = Box::new(Tagged {
            name: layer.name,
            inner: Lazy::Pending(layer.coding, reader),
        });
    }
    reader
}

/// A decoder not built until something reads from it, so a chain costs
/// decoder state only as deep as the stream actually goes.
enum Lazy<'a> {
    Pending(Coding, Box<dyn Read + 'a>),
    Open(Box<dyn Read + 'a>),
    /// Opening failed; the error was returned once.
    Failed,
}

impl Read for Lazy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if matches!(self, Lazy::Pending(..)) {
            match std::mem::replace(self, Lazy::Failed) {
                Lazy::Pending(coding, compressed) => *self = Lazy::Open(open(coding, compressed)?),
                other => *self = other,
            }
        }
        match self {
            Lazy::Open(decoder) => decoder.read(buf),
            Lazy::Pending(..) | Lazy::Failed => Err(io::Error::other("decoder failed to open")),
        }
    }
}

fn open<'a>(coding: Coding, compressed: Box<dyn Read + 'a>) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match coding {
        // Multi-member: concatenated gzip files are one valid gzip body.
        Coding::Gzip => Box::new(MultiGzDecoder::new(compressed)),
        Coding::Deflate => open_deflate(compressed)?,
        Coding::Brotli => Box::new(brotli::Decompressor::new(compressed, BROTLI_INPUT_BUFFER)),
        Coding::Zstd => {
            let mut decoder = zstd::Decoder::new(compressed)?;
            decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(decoder)
        }
    })
}

/// HTTP `deflate` is zlib-wrapped (RFC 9110, RFC 1950), but some servers send
/// raw deflate (RFC 1951). Try zlib: if its two-byte header is there, decode
/// as zlib, otherwise fall back to raw. Deciding on the header rather than on
/// a failed first attempt keeps this working mid-chain, where the input is a
/// stream that cannot be rewound; a raw stream only looks like a zlib header
/// if its encoder set padding bits that encoders leave zero.
fn open_deflate<'a>(mut compressed: Box<dyn Read + 'a>) -> io::Result<Box<dyn Read + 'a>> {
    let mut header = [0u8; 2];
    let seen = read_up_to(&mut compressed, &mut header)?;
    let replayed = io::Cursor::new(header).take(seen as u64).chain(compressed);
    Ok(if seen == header.len() && is_zlib_header(header) {
        Box::new(ZlibDecoder::new(replayed))
    } else {
        Box::new(DeflateDecoder::new(replayed))
    })
}

/// RFC 1950 §2.2: method 8 (deflate), window at most 32 KiB, and the header
/// checksum.
pub(super) fn is_zlib_header([cmf, flg]: [u8; 2]) -> bool {
    let method = cmf & 0x0f;
    let window_bits = cmf >> 4;
    method == 8 && window_bits <= 7 && (u16::from(cmf) << 8 | u16::from(flg)) % 31 == 0
}

/// Fills as much of `buf` as `reader` has, returning how many bytes that was.
fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Reads `reader` to the end or to `cap` bytes, whichever comes first.
fn read_capped(reader: &mut dyn Read, cap: usize) -> io::Result<Decoded> {
    let mut data = Vec::new();
    let mut chunk = [0u8; CHUNK];
    loop {
        let room = cap - data.len();
        // At the cap, asking for one more byte tells a body that fits exactly
        // from one that doesn't, without holding the extra byte.
        let want = room.clamp(1, CHUNK);
        let n = match reader.read(&mut chunk[..want]) {
            Ok(0) => {
                return Ok(Decoded {
                    data,
                    truncated: false,
                })
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            // The stream broke after some output: usually the capture was cut
            // at its size limit mid-stream, and what decoded is still worth
            // showing. Decoders can't reliably tell that apart from
            // corruption, so both are reported as truncation.
            Err(_) if !data.is_empty() => {
                return Ok(Decoded {
                    data,
                    truncated: true,
                })
            }
            Err(err) => return Err(err),
        };
        if room == 0 {
            return Ok(Decoded {
                data,
                truncated: true,
            });
        }
        grow(&mut data, n, cap);
        data.extend_from_slice(&chunk[..n]);
    }
}

/// Makes room for `extra` more bytes, doubling as `Vec` would but never past
/// `cap`, so the cap bounds the allocation and not just the length.
/// Callers never ask for more than `cap` in total.
fn grow(data: &mut Vec<u8>, extra: usize, cap: usize) {
    let needed = data.len() + extra;
    if needed <= data.capacity() {
        return;
    }
    let target = needed.max(data.len().saturating_mul(2)).max(CHUNK).min(cap);
    data.reserve_exact(target - data.len());
}

/// Names the coding whose decoder failed, so in a chain like "gzip, br" a
/// broken gzip layer inside valid brotli is blamed on gzip.
#[derive(Debug)]
struct LayerError {
    name: String,
    source: io::Error,
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for LayerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A decoder whose errors carry its coding's name.
struct Tagged<'a, R> {
    name: &'a str,
    inner: R,
}

impl<R: Read> Read for Tagged<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|err| tag(err, self.name))
    }
}

/// Tags `err` with `name`, unless a decoder closer to the raw bytes already
/// did: outer decoders pass their input's errors through, and the blame
/// belongs to the layer where the error started.
fn tag(err: io::Error, name: &str) -> io::Error {
    if err.get_ref().is_some_and(|inner| inner.is::<LayerError>()) {
        return err;
    }
    io::Error::new(
        err.kind(),
        LayerError {
            name: name.to_owned(),
            source: err,
        },
    )
}

/// Turns a decoder failure into [`DecodeError::Corrupt`], blaming the layer it
/// was tagged with, or `fallback` when it somehow wasn't.
fn corrupt(err: io::Error, fallback: &str) -> DecodeError {
    let kind = err.kind();
    let (encoding, detail) = match err.into_inner().map(|inner| inner.downcast::<LayerError>()) {
        Some(Ok(layer)) => (layer.name, layer.source.to_string()),
        Some(Err(other)) => (fallback.to_owned(), other.to_string()),
        None => (fallback.to_owned(), kind.to_string()),
    };
    DecodeError::Corrupt { encoding, detail }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;

    use super::*;

    const MIB: usize = 1024 * 1024;

    /// Compressible but not trivial: several CHUNKs long, and varied enough
    /// that every coding's output spans several blocks, so a stream cut
    /// halfway has already produced some output.
    fn sample() -> Vec<u8> {
        let mut seed = 0x0dd_ba11_u64;
        (0..8000)
            .map(|i| {
                format!(
                    "line {i}: request id {:016x} took {} ms\n",
                    noise(&mut seed),
                    i % 97
                )
            })
            .collect::<String>()
            .into_bytes()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn raw_deflate(data: &[u8], level: Compression) -> Vec<u8> {
        let mut encoder = DeflateEncoder::new(Vec::new(), level);
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn br(data: &[u8]) -> Vec<u8> {
        let mut encoder = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
        encoder.write_all(data).unwrap();
        encoder.into_inner()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    /// One compressed form of `data` per supported coding, named as in the header.
    fn every_coding(data: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("gzip", gzip(data)),
            ("x-gzip", gzip(data)),
            ("deflate", zlib(data)),
            ("deflate", raw_deflate(data, Compression::default())),
            ("br", br(data)),
            ("zstd", zstd(data)),
            ("gzip, br", br(&gzip(data))),
        ]
    }

    fn complete(data: Vec<u8>) -> Decoded {
        Decoded {
            data,
            truncated: false,
        }
    }

    #[test]
    fn round_trips_every_coding() {
        let body = sample();
        for (encoding, compressed) in every_coding(&body) {
            let decoded = decode(encoding, &compressed, 10 * MIB).unwrap();
            assert_eq!(decoded, complete(body.clone()), "{encoding}");
        }
    }

    #[test]
    fn deflate_accepts_zlib_and_raw_forms() {
        let body = sample();
        for (form, compressed) in [
            ("zlib", zlib(&body)),
            ("raw", raw_deflate(&body, Compression::default())),
            ("raw stored blocks", raw_deflate(&body, Compression::none())),
            ("raw fastest", raw_deflate(&body, Compression::fast())),
        ] {
            let decoded = decode("deflate", &compressed, 10 * MIB).unwrap();
            assert_eq!(decoded, complete(body.clone()), "{form}");
        }
    }

    #[test]
    fn deflate_is_sniffed_mid_chain_too() {
        let body = sample();
        let raw_inside_br = br(&raw_deflate(&body, Compression::default()));
        let zlib_inside_zstd = zstd(&zlib(&body));
        assert_eq!(
            decode("deflate, br", &raw_inside_br, 10 * MIB).unwrap(),
            complete(body.clone())
        );
        assert_eq!(
            decode("deflate, zstd", &zlib_inside_zstd, 10 * MIB).unwrap(),
            complete(body)
        );
    }

    #[test]
    fn chain_decodes_in_reverse_order() {
        let body = sample();
        let gzip_then_br = br(&gzip(&body));
        assert_eq!(
            decode("gzip, br", &gzip_then_br, 10 * MIB).unwrap(),
            complete(body.clone())
        );
        assert!(decode("br, gzip", &gzip_then_br, 10 * MIB).is_err());

        let three = zstd(&br(&gzip(&body)));
        assert_eq!(
            decode("gzip, br, zstd", &three, 10 * MIB).unwrap(),
            complete(body)
        );
    }

    #[test]
    fn stacked_codings_beyond_the_cap_are_refused() {
        let body = sample();
        let mut four = body.clone();
        for _ in 0..MAX_CODINGS {
            four = zstd(&four);
        }
        let header = ["zstd"; MAX_CODINGS].join(", ");
        assert_eq!(decode(&header, &four, 10 * MIB).unwrap(), complete(body));
        let many = vec!["zstd"; 5000].join(", ");
        match decode(&many, &four, 10 * MIB) {
            Err(DecodeError::TooManyCodings { count }) => assert_eq!(count, 5000),
            other => panic!("expected TooManyCodings, got {other:?}"),
        }
        let err = decode(&many, b"", MIB).unwrap_err().to_string();
        assert!(
            err.contains("5000 content codings") && err.contains("at most 4"),
            "{err}"
        );
        assert!(!supported(&many));
        // identity entries do not count.
        let padded = format!("{header}, identity, identity");
        assert!(supported(&padded));
    }

    #[test]
    fn gzip_reads_every_member() {
        let mut members = gzip(b"first member, ");
        members.extend(gzip(b"second member"));
        assert_eq!(
            decode("gzip", &members, MIB).unwrap(),
            complete(b"first member, second member".to_vec())
        );
    }

    #[test]
    fn identity_and_empty_return_input() {
        let body = sample();
        for encoding in ["", "identity", " IDENTITY ", "identity, identity", " , "] {
            assert_eq!(
                decode(encoding, &body, 10 * MIB).unwrap(),
                complete(body.clone()),
                "{encoding:?}"
            );
        }
    }

    #[test]
    fn identity_is_capped() {
        let body = sample();
        let decoded = decode("identity", &body, 100).unwrap();
        assert!(decoded.truncated);
        assert_eq!(decoded.data, body[..100]);
    }

    #[test]
    fn names_are_case_insensitive_and_whitespace_tolerant() {
        let body = sample();
        let cases = [
            (" GZip ", gzip(&body)),
            ("X-GZIP", gzip(&body)),
            ("\tDeflate\t", zlib(&body)),
            ("BR", br(&body)),
            ("ZStd ", zstd(&body)),
            ("Gzip ,  Br", br(&gzip(&body))),
            ("gzip,br", br(&gzip(&body))),
            ("gzip, identity, br,", br(&gzip(&body))),
        ];
        for (encoding, compressed) in cases {
            let decoded = decode(encoding, &compressed, 10 * MIB).unwrap();
            assert_eq!(decoded, complete(body.clone()), "{encoding:?}");
        }
    }

    #[test]
    fn empty_body_is_empty_under_any_coding() {
        for encoding in ["gzip", "deflate", "br", "zstd", "gzip, br"] {
            assert_eq!(decode(encoding, b"", MIB).unwrap(), complete(Vec::new()));
        }
    }

    #[test]
    fn bomb_stops_at_cap() {
        let zeros = vec![0u8; 10 * MIB];
        for (encoding, compressed) in [
            ("gzip", gzip(&zeros)),
            ("deflate", zlib(&zeros)),
            ("br", br(&zeros)),
            ("zstd", zstd(&zeros)),
            ("gzip, br", br(&gzip(&zeros))),
        ] {
            assert!(compressed.len() < 100 * 1024, "{encoding} bomb is small");
            let decoded = decode(encoding, &compressed, MIB).unwrap();
            assert!(decoded.truncated, "{encoding}");
            assert_eq!(decoded.data.len(), MIB, "{encoding}");
            assert!(decoded.data.iter().all(|&b| b == 0), "{encoding}");
            assert!(
                decoded.data.capacity() <= MIB,
                "{encoding} allocated {} bytes for a {MIB} cap",
                decoded.data.capacity()
            );
        }
    }

    #[test]
    fn body_exactly_at_cap_is_not_truncated() {
        let body = sample();
        let decoded = decode("gzip", &gzip(&body), body.len()).unwrap();
        assert_eq!(decoded, complete(body.clone()));

        let decoded = decode("gzip", &gzip(&body), body.len() - 1).unwrap();
        assert!(decoded.truncated);
        assert_eq!(decoded.data, body[..body.len() - 1]);
    }

    #[test]
    fn zero_cap_reports_whether_anything_was_there() {
        let decoded = decode("gzip", &gzip(b"x"), 0).unwrap();
        assert_eq!(
            decoded,
            Decoded {
                data: Vec::new(),
                truncated: true
            }
        );
        assert_eq!(decode("gzip", &gzip(b""), 0).unwrap(), complete(Vec::new()));
    }

    #[test]
    fn input_cut_halfway_gives_partial_output() {
        let body = sample();
        for (encoding, compressed) in every_coding(&body) {
            let half = &compressed[..compressed.len() / 2];
            let decoded = decode(encoding, half, 10 * MIB).unwrap();
            assert!(decoded.truncated, "{encoding}");
            assert!(!decoded.data.is_empty(), "{encoding}");
            assert!(decoded.data.len() < body.len(), "{encoding}");
            assert!(body.starts_with(&decoded.data), "{encoding}");
        }
    }

    #[test]
    fn input_cut_before_any_output_is_corrupt() {
        let compressed = gzip(&sample());
        assert!(matches!(
            decode("gzip", &compressed[..5], MIB),
            Err(DecodeError::Corrupt { .. })
        ));
    }

    #[test]
    fn input_missing_only_its_trailer_keeps_all_data() {
        let body = sample();
        let compressed = gzip(&body);
        // The gzip trailer is 8 bytes of CRC and length.
        let decoded = decode("gzip", &compressed[..compressed.len() - 4], 10 * MIB).unwrap();
        assert_eq!(decoded.data, body);
        assert!(decoded.truncated);
    }

    #[test]
    fn garbage_is_corrupt() {
        let garbage = b"this is not compressed at all, just text".repeat(10);
        for encoding in ["gzip", "x-gzip", "deflate", "br", "zstd"] {
            match decode(encoding, &garbage, MIB) {
                Err(DecodeError::Corrupt {
                    encoding: blamed,
                    detail,
                }) => {
                    assert_eq!(blamed, encoding);
                    assert!(!detail.is_empty());
                }
                other => panic!("{encoding}: expected Corrupt, got {other:?}"),
            }
        }
    }

    #[test]
    fn corrupt_error_blames_the_broken_layer() {
        let not_gzip_inside_br = br(b"plain text where gzip should be");
        match decode("gzip, br", &not_gzip_inside_br, MIB) {
            Err(DecodeError::Corrupt { encoding, .. }) => assert_eq!(encoding, "gzip"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        match decode("gzip, br", &gzip(b"gzip where br should be"), MIB) {
            Err(DecodeError::Corrupt { encoding, .. }) => assert_eq!(encoding, "br"),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_message_names_the_coding() {
        let err = decode("gzip", b"nope", MIB).unwrap_err();
        assert!(
            err.to_string().starts_with("gzip data is corrupt: "),
            "{err}"
        );
    }

    #[test]
    fn unknown_coding_is_unsupported() {
        for (encoding, unknown) in [
            ("compress", "compress"),
            ("x-compress", "x-compress"),
            ("gzip, compress", "compress"),
            (" Snappy ", "Snappy"),
        ] {
            match decode(encoding, b"whatever", MIB) {
                Err(DecodeError::Unsupported(name)) => assert_eq!(name, unknown),
                other => panic!("{encoding}: expected Unsupported, got {other:?}"),
            }
        }
        let err = decode("compress", b"", MIB).unwrap_err();
        assert_eq!(err.to_string(), "unsupported content encoding `compress`");
    }

    #[test]
    fn supported_names_only_known_codings() {
        for encoding in [
            "",
            "identity",
            "gzip",
            "x-gzip",
            "deflate",
            "br",
            "zstd",
            "GZIP",
            " br ",
            "gzip, br",
            "deflate,zstd,identity",
        ] {
            assert!(supported(encoding), "{encoding:?}");
        }
        for encoding in [
            "compress",
            "x-compress",
            "gzip, compress",
            "gzip;q=1",
            "brotli",
            "dcb",
        ] {
            assert!(!supported(encoding), "{encoding:?}");
        }
    }

    /// Deterministic xorshift, so failures reproduce without a rand dependency.
    fn noise(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn hostile_input_never_panics_or_exceeds_cap() {
        let body = sample();
        let mut seed = 0x5eed_cafe_f00d_u64;
        let cap = 64 * 1024;
        for (encoding, compressed) in every_coding(&body) {
            for _ in 0..50 {
                let mut mangled = compressed.clone();
                for _ in 0..=(noise(&mut seed) % 8) {
                    let at = (noise(&mut seed) as usize) % mangled.len();
                    mangled[at] = noise(&mut seed) as u8;
                }
                let cut = (noise(&mut seed) as usize) % (mangled.len() + 1);
                if let Ok(decoded) = decode(encoding, &mangled[..cut], cap) {
                    assert!(decoded.data.len() <= cap);
                }
            }
            for len in [1, 2, 3, 10, 100, 1000] {
                let random: Vec<u8> = (0..len).map(|_| noise(&mut seed) as u8).collect();
                if let Ok(decoded) = decode(encoding, &random, cap) {
                    assert!(decoded.data.len() <= cap);
                }
            }
        }
    }
}
