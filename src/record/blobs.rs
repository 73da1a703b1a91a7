//! Header blocks and captured bodies, kept outside SQLite in append-only
//! segment files (`records.blobs/<seq>.seg` in the data folder, or memory
//! files with `--data-dir :memory:`), so that a 1 MiB body costs one copy
//! into the page cache instead of a SQLite blob written page by page into
//! the WAL and copied again at every checkpoint.
//!
//! One record is one entry: a 24-byte head (record id, then the lengths of
//! the request headers, response headers, request body and response body,
//! little-endian) followed by those four parts. Its row in `records` holds
//! where the entry starts as one integer, `seq << 40 | offset`.
//!
//! A retired segment's file is kept as the one spare (`spare.seg`) when no
//! reader holds it, and the next segment is written over it in place:
//! overwriting pages already in the page cache costs a memcpy, while fresh
//! pages cost a page allocation each (ten times slower on this project's
//! VMs, which hand freed guest memory back to the host). Its stale tail is
//! never read: rows point only at entries written in the file's new life,
//! and every read checks the entry's head.
//!
//! Invariants: only the writer appends (under the store's writer lock), and
//! a batch's entries are written before the transaction that references
//! them commits, so a committed row never points past what was written
//! (bytes written for a batch that then failed are never referenced).
//! A segment is removed only when no stored record can reference it any
//! more (every id it holds is deleted); readers hold the open file, so a
//! segment removed while a read is in flight is still read whole. Each
//! read checks the entry's head (id and lengths within the file), so a
//! damaged segment gives an error, never another record's bytes.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::IoSlice;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::model::Record;

/// The segment folder inside the data folder.
pub const BLOB_DIR: &str = "records.blobs";
/// Bytes of an entry's head: id (u64) and four lengths (u32).
const HEAD: usize = 24;
/// Offsets take the low 40 bits of a location (1 TiB per segment).
const OFFSET_BITS: u32 = 40;
/// The retired file kept for the next segment to be written over.
pub const SPARE: &str = "spare.seg";

/// The four parts of an entry, in stored order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    RequestHeaders = 0,
    ResponseHeaders = 1,
    RequestBody = 2,
    ResponseBody = 3,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("record blobs {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "record blobs folder {} is a symbolic link; sluice does not follow it",
        path.display()
    )]
    Symlink { path: PathBuf },
    #[error("the stored headers and bodies of record {id} are missing or damaged ({why})")]
    Damaged { id: u64, why: &'static str },
}

/// One open segment.
struct Segment {
    file: Arc<File>,
    /// Bytes written (the next entry's offset).
    len: u64,
    /// Bytes the file holds: `len`, or more for a file written over (its
    /// stale tail still takes room on disk).
    extent: u64,
    /// The smallest and largest record id with an entry here.
    min_id: u64,
    max_id: u64,
}

struct State {
    segments: BTreeMap<u32, Segment>,
    /// The segment appends go to (the newest), if one is open.
    current: Option<u32>,
    next_seq: u32,
    /// A retired segment's file (no reader holds it), with its size, for
    /// the next segment to be written over.
    spare: Option<(Arc<File>, u64)>,
}

/// The segment files of one store.
pub struct Blobs {
    /// `None`: memory files (`:memory:` store).
    dir: Option<PathBuf>,
    /// A segment is closed for appends once it holds this many bytes.
    segment_bytes: u64,
    state: Mutex<State>,
}

/// Where one record's entry is: the segment and the offset in it.
pub fn split(at: i64) -> (u32, u64) {
    let at = at.max(0) as u64;
    ((at >> OFFSET_BITS) as u32, at & ((1 << OFFSET_BITS) - 1))
}

fn join(seq: u32, offset: u64) -> i64 {
    (((seq as u64) << OFFSET_BITS) | offset) as i64
}

/// The id range each segment holds, as the store's rows say
/// (`seq → (min id, max id)`), for [`Blobs::open`].
pub type Holdings = BTreeMap<u32, (u64, u64)>;

impl Blobs {
    /// Opens the segments of a store. `held` says which segments stored
    /// rows reference; a segment file no row references (left by a batch
    /// that never committed, or whose records were all deleted) is removed.
    pub fn open(
        dir: Option<&Path>,
        segment_bytes: u64,
        held: &Holdings,
    ) -> Result<Blobs, BlobError> {
        let mut segments = BTreeMap::new();
        let mut spare = None;
        if let Some(dir) = dir {
            let io = |source| BlobError::Io {
                path: dir.to_path_buf(),
                source,
            };
            if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(BlobError::Symlink {
                    path: dir.to_path_buf(),
                });
            }
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
            for entry in std::fs::read_dir(dir).map_err(io)? {
                let entry = entry.map_err(io)?;
                let name = entry.file_name();
                if name == SPARE && spare.is_none() {
                    if let Ok(file) = open_segment(&entry.path(), false) {
                        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                        spare = Some((Arc::new(file), size));
                        continue;
                    }
                }
                let Some(seq) = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".seg"))
                    .and_then(|n| u32::from_str_radix(n, 16).ok())
                else {
                    continue;
                };
                let path = entry.path();
                match held.get(&seq) {
                    Some(&(min_id, max_id)) => {
                        let file = open_segment(&path, false).map_err(|source| BlobError::Io {
                            path: path.clone(),
                            source,
                        })?;
                        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                        segments.insert(
                            seq,
                            Segment {
                                file: Arc::new(file),
                                len,
                                extent: len,
                                min_id,
                                max_id,
                            },
                        );
                    }
                    None => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        let next_seq = held
            .keys()
            .chain(segments.keys())
            .max()
            .map_or(1, |s| s + 1);
        Ok(Blobs {
            dir: dir.map(Path::to_path_buf),
            segment_bytes: segment_bytes.max(64 * 1024),
            state: Mutex::new(State {
                segments,
                // Appends start a new segment: the tail of an old one may
                // hold bytes of a batch that never committed.
                current: None,
                next_seq,
                spare,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves offsets that are still
        // consistent with the files (they only grow after a write).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends the entries of `batch` (records with nothing to keep get
    /// none) and returns each record's location, in batch order.
    pub fn append<R: Borrow<Record>>(&self, batch: &[R]) -> Result<Vec<Option<i64>>, BlobError> {
        let mut st = self.lock();
        let mut out = Vec::with_capacity(batch.len());
        let mut heads: Vec<[u8; HEAD]> = Vec::with_capacity(batch.len());
        for r in batch {
            heads.push(head_of(r.borrow()));
        }
        let mut pending: Vec<IoSlice<'_>> = Vec::new();
        let mut pending_bytes = 0u64;
        for (r, head) in batch.iter().zip(heads.iter()) {
            let r: &Record = r.borrow();
            let size = entry_size(r);
            if size == HEAD as u64 {
                out.push(None);
                continue;
            }
            let seq = match st.current {
                Some(seq)
                    if st.segments[&seq].len + pending_bytes + size <= self.segment_bytes
                        || st.segments[&seq].len + pending_bytes == 0 =>
                {
                    seq
                }
                _ => {
                    if let Some(seq) = st.current {
                        self.flush(&mut st, seq, &mut pending, &mut pending_bytes)?;
                    }
                    self.start_segment(&mut st)?
                }
            };
            let seg = st.segments.get_mut(&seq).expect("current segment is open");
            out.push(Some(join(seq, seg.len + pending_bytes)));
            if seg.min_id == 0 || r.id < seg.min_id {
                seg.min_id = r.id;
            }
            seg.max_id = seg.max_id.max(r.id);
            pending.push(IoSlice::new(head));
            pending.push(IoSlice::new(&r.req_headers));
            pending.push(IoSlice::new(&r.resp_headers));
            pending.extend(r.req_body.chunks.iter().map(|c| IoSlice::new(c)));
            pending.extend(r.resp_body.chunks.iter().map(|c| IoSlice::new(c)));
            pending_bytes += size;
        }
        if let Some(seq) = st.current {
            self.flush(&mut st, seq, &mut pending, &mut pending_bytes)?;
        }
        Ok(out)
    }

    /// Writes what is pending to segment `seq` (appends: only the writer
    /// writes, and it tracks the length itself).
    fn flush(
        &self,
        st: &mut State,
        seq: u32,
        pending: &mut Vec<IoSlice<'_>>,
        pending_bytes: &mut u64,
    ) -> Result<(), BlobError> {
        if *pending_bytes == 0 {
            pending.clear();
            return Ok(());
        }
        let seg = st.segments.get_mut(&seq).expect("flushed segment is open");
        let result = write_all_at(&seg.file, pending, seg.len);
        match result {
            Ok(()) => {
                seg.len += *pending_bytes;
                seg.extent = seg.extent.max(seg.len);
            }
            Err(source) => {
                // Whatever part was written is never referenced, and the
                // segment takes no more appends.
                let size = seg.file.metadata().map(|m| m.len()).unwrap_or(seg.len);
                seg.extent = seg.extent.max(size);
                st.current = None;
                pending.clear();
                *pending_bytes = 0;
                return Err(BlobError::Io {
                    path: self.path_of(seq),
                    source,
                });
            }
        }
        pending.clear();
        *pending_bytes = 0;
        Ok(())
    }

    fn path_of(&self, seq: u32) -> PathBuf {
        match &self.dir {
            Some(d) => d.join(format!("{seq:08x}.seg")),
            None => PathBuf::from(format!("memory segment {seq}")),
        }
    }

    fn start_segment(&self, st: &mut State) -> Result<u32, BlobError> {
        let seq = st.next_seq;
        let path = self.path_of(seq);
        let reused = match (st.spare.take(), &self.dir) {
            (Some(spare), None) => Some(spare),
            (Some(spare), Some(dir)) => match std::fs::rename(dir.join(SPARE), &path) {
                Ok(()) => Some(spare),
                // The spare is gone from the folder (removed by hand):
                // start afresh.
                Err(_) => None,
            },
            (None, _) => None,
        };
        let (file, extent) = match reused {
            Some(spare) => spare,
            None => {
                let file = match &self.dir {
                    Some(_) => open_segment(&path, true),
                    None => memory_file(seq),
                }
                .map_err(|source| BlobError::Io {
                    path: path.clone(),
                    source,
                })?;
                (Arc::new(file), 0)
            }
        };
        st.next_seq += 1;
        st.segments.insert(
            seq,
            Segment {
                file,
                len: 0,
                extent,
                min_id: 0,
                max_id: 0,
            },
        );
        st.current = Some(seq);
        Ok(seq)
    }

    /// Removes every segment whose records all have ids up to `id` (they
    /// have just been deleted); returns the bytes freed.
    pub fn retire_through(&self, id: u64) -> u64 {
        let mut st = self.lock();
        let done: Vec<u32> = st
            .segments
            .iter()
            .filter(|(_, s)| s.max_id <= id)
            .map(|(seq, _)| *seq)
            .collect();
        self.remove(&mut st, &done, true)
    }

    /// Removes the segments `keep` says no stored record references any
    /// more (after deletes by filter). Nothing is kept as a spare, and a
    /// store left without records drops its spare too: a user who deletes
    /// records wants the room back.
    pub fn retire_unless(&self, mut keep: impl FnMut(u32, u64, u64) -> bool) -> u64 {
        let mut st = self.lock();
        let done: Vec<u32> = st
            .segments
            .iter()
            .filter(|(seq, s)| !keep(**seq, s.min_id, s.max_id))
            .map(|(seq, _)| *seq)
            .collect();
        let mut freed = self.remove(&mut st, &done, false);
        if st.segments.is_empty() {
            if let Some((_, size)) = st.spare.take() {
                freed += size;
                if let Some(dir) = &self.dir {
                    let _ = std::fs::remove_file(dir.join(SPARE));
                }
            }
        }
        freed
    }

    fn remove(&self, st: &mut State, seqs: &[u32], recycle: bool) -> u64 {
        let mut freed = 0;
        for seq in seqs {
            if let Some(s) = st.segments.remove(seq) {
                // Kept as the spare only if no reader holds it (a reader
                // gets its handle under this lock, from `segments`, so none
                // can start now): it is about to be written over.
                let keep = recycle
                    && st.spare.is_none()
                    && Arc::strong_count(&s.file) == 1
                    && match &self.dir {
                        Some(dir) => std::fs::rename(self.path_of(*seq), dir.join(SPARE)).is_ok(),
                        None => true,
                    };
                if keep {
                    st.spare = Some((s.file, s.extent));
                } else {
                    freed += s.extent;
                    if self.dir.is_some() {
                        if let Err(e) = std::fs::remove_file(self.path_of(*seq)) {
                            tracing::warn!(segment = %self.path_of(*seq).display(), error = %e, "cannot remove a record segment");
                        }
                    }
                }
            }
            if st.current == Some(*seq) {
                st.current = None;
            }
        }
        freed
    }

    /// The oldest segment's largest id, if there is a segment: deleting
    /// through it frees that segment whole.
    pub fn oldest_max_id(&self) -> Option<u64> {
        let mut st = self.lock();
        let (&seq, s) = st.segments.iter().next()?;
        let max_id = s.max_id;
        // The only segment left is closed first, so the next batch does
        // not land in a segment about to be removed.
        if st.current == Some(seq) {
            st.current = None;
        }
        Some(max_id)
    }

    /// Bytes the segment files take, the spare's included.
    pub fn bytes(&self) -> u64 {
        let st = self.lock();
        let spare = st.spare.as_ref().map_or(0, |(_, size)| *size);
        st.segments.values().map(|s| s.extent).sum::<u64>() + spare
    }

    /// How many segments are open.
    pub fn segments(&self) -> usize {
        self.lock().segments.len()
    }

    /// The lengths of an entry's four parts, read from its head (checked
    /// against `id` and the file's length).
    pub fn entry(&self, at: i64, id: u64) -> Result<Entry, BlobError> {
        let (seq, offset) = split(at);
        let (file, len) = {
            let st = self.lock();
            let s = st.segments.get(&seq).ok_or(BlobError::Damaged {
                id,
                why: "segment gone",
            })?;
            (s.file.clone(), s.len)
        };
        let mut head = [0u8; HEAD];
        file.read_exact_at(&mut head, offset)
            .map_err(|_| BlobError::Damaged {
                id,
                why: "entry cut short",
            })?;
        let stored_id = u64::from_le_bytes(head[0..8].try_into().unwrap_or_default());
        if stored_id != id {
            return Err(BlobError::Damaged {
                id,
                why: "entry belongs to another record",
            });
        }
        let mut lens = [0u64; 4];
        for (i, l) in lens.iter_mut().enumerate() {
            let at = 8 + i * 4;
            *l = u32::from_le_bytes(head[at..at + 4].try_into().unwrap_or_default()) as u64;
        }
        if offset + HEAD as u64 + lens.iter().sum::<u64>() > len {
            return Err(BlobError::Damaged {
                id,
                why: "entry runs past the segment",
            });
        }
        Ok(Entry {
            file,
            start: offset + HEAD as u64,
            lens,
        })
    }
}

/// One record's stored parts, ready to be read.
pub struct Entry {
    file: Arc<File>,
    /// Where the first part starts in the segment.
    start: u64,
    lens: [u64; 4],
}

impl Entry {
    pub fn len(&self, part: Part) -> usize {
        self.lens[part as usize] as usize
    }

    /// `len` bytes of `part` from `offset` (fewer at its end).
    pub fn read(&self, part: Part, offset: usize, len: usize) -> std::io::Result<Vec<u8>> {
        let i = part as usize;
        let total = self.lens[i] as usize;
        let offset = offset.min(total);
        let len = len.min(total - offset);
        let base = self.start + self.lens[..i].iter().sum::<u64>();
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, base + offset as u64)?;
        Ok(buf)
    }

    /// All of `part`.
    pub fn whole(&self, part: Part) -> std::io::Result<Vec<u8>> {
        self.read(part, 0, usize::MAX)
    }
}

fn head_of(r: &Record) -> [u8; HEAD] {
    let mut h = [0u8; HEAD];
    h[0..8].copy_from_slice(&r.id.to_le_bytes());
    let lens = [
        r.req_headers.len(),
        r.resp_headers.len(),
        r.req_body.captured,
        r.resp_body.captured,
    ];
    for (i, l) in lens.iter().enumerate() {
        // Each part is bounded far below 4 GiB (header list and body
        // limits are checked at start).
        let l = u32::try_from(*l).unwrap_or(u32::MAX);
        h[8 + i * 4..12 + i * 4].copy_from_slice(&l.to_le_bytes());
    }
    h
}

/// Bytes an entry takes (head included).
fn entry_size(r: &Record) -> u64 {
    (HEAD + r.req_headers.len() + r.resp_headers.len() + r.req_body.captured + r.resp_body.captured)
        as u64
}

/// Writes all of `bufs` at `offset` (`pwritev`: a spare file is written
/// over from its start, so appends cannot rely on `O_APPEND`).
fn write_all_at(file: &File, bufs: &mut [IoSlice<'_>], mut offset: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut bufs = bufs;
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let count = bufs.len().min(1024) as libc::c_int;
        // SAFETY: IoSlice is ABI-compatible with iovec on Unix; `bufs`
        // holds at least `count` valid slices; the descriptor is open.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                bufs.as_ptr().cast::<libc::iovec>(),
                count,
                offset as libc::off_t,
            )
        };
        match n {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n if n > 0 => {
                IoSlice::advance_slices(&mut bufs, n as usize);
                offset += n as u64;
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Opens a segment file for reads and positional writes, never through a
/// symbolic link.
fn open_segment(path: &Path, create: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true).mode(0o600);
    o.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if create {
        o.create_new(true);
    }
    o.open(path)
}

/// An anonymous memory file (`memfd_create`): the same reads and appends
/// as a segment on disk, gone when the store is.
fn memory_file(seq: u32) -> std::io::Result<File> {
    use std::os::fd::FromRawFd;
    let name = std::ffi::CString::new(format!("sluice-records-{seq}"))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: memfd_create with a valid NUL-terminated name; the returned
    // descriptor is owned by the File from here on.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::model::{Record, RecordKind};
    use bytes::Bytes;
    use std::time::SystemTime;

    fn record(id: u64, body: usize) -> Record {
        let mut r = Record::new(RecordKind::Http, 1, "c", SystemTime::now());
        r.id = id;
        r.req_headers = format!("X-Id: {id}\r\n").into_bytes();
        r.resp_headers = b"Content-Type: text/plain\r\n".to_vec();
        let data = Bytes::from(vec![(id % 251) as u8; body]);
        r.resp_body.push(&data.slice(..body / 2), 1 << 30);
        r.resp_body.push(&data.slice(body / 2..), 1 << 30);
        r
    }

    fn roundtrip(blobs: &Blobs) {
        let batch: Vec<Record> = (1..=50).map(|i| record(i, 1000 * i as usize)).collect();
        let at = blobs.append(&batch).unwrap();
        for (r, at) in batch.iter().zip(at.iter().copied()) {
            let e = blobs.entry(at.unwrap(), r.id).unwrap();
            assert_eq!(e.whole(Part::RequestHeaders).unwrap(), r.req_headers);
            assert_eq!(e.whole(Part::ResponseHeaders).unwrap(), r.resp_headers);
            assert_eq!(e.len(Part::RequestBody), 0);
            assert_eq!(e.whole(Part::ResponseBody).unwrap(), r.resp_body.to_vec());
            assert_eq!(
                e.read(Part::ResponseBody, 10, 5).unwrap(),
                r.resp_body.to_vec()[10..15]
            );
            // Another record's id at this place is refused.
            assert!(blobs.entry(at.unwrap(), r.id + 1000).is_err());
        }
        // 1.3 MB over 256 KiB segments: several of them.
        assert!(blobs.segments() >= 4, "{}", blobs.segments());
        let (before, segments) = (blobs.bytes(), blobs.segments());
        let freed = blobs.retire_through(25);
        assert!(blobs.segments() < segments);
        assert_eq!(blobs.bytes(), before - freed, "the spare still counts");
        // Records above 25 are still readable, the retired ones are not.
        let last = blobs.append(&[record(51, 10)]).unwrap()[0].unwrap();
        assert!(blobs.entry(last, 51).is_ok());
        assert!(blobs.entry(at[0].unwrap(), 1).is_err());
    }

    #[test]
    fn entries_read_back_from_files_and_old_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join(BLOB_DIR);
        let blobs = Blobs::open(Some(&d), 256 * 1024, &Holdings::new()).unwrap();
        roundtrip(&blobs);
        let names: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names.len(),
            blobs.segments() + 1,
            "retired segment files are removed but one spare: {names:?}"
        );
        assert!(names.iter().any(|n| n == SPARE), "{names:?}");
    }

    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().ino()
    }

    #[test]
    fn a_retired_file_is_written_over_and_its_stale_tail_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join(BLOB_DIR);
        let blobs = Blobs::open(Some(&d), 64 * 1024, &Holdings::new()).unwrap();
        // Segment 1 nearly full with one record's 64 KB body, then segment 2.
        let first = blobs.append(&[record(1, 64_000)]).unwrap()[0].unwrap();
        let second = blobs.append(&[record(2, 64_000)]).unwrap()[0].unwrap();
        let (seq1, seq2) = (split(first).0, split(second).0);
        assert_ne!(seq1, seq2);
        let old = inode(&d.join(format!("{seq1:08x}.seg")));
        let before = blobs.bytes();
        assert_eq!(blobs.retire_through(1), 0, "the file is kept as the spare");
        assert_eq!(blobs.bytes(), before, "the spare still takes its room");
        assert_eq!(inode(&d.join(SPARE)), old);
        // The next segment is the same file, written from its start: a
        // 2 KB entry, with 62 KB of the old record behind it.
        let small = blobs.append(&[record(3, 2_000)]).unwrap()[0].unwrap();
        let (seq3, at3) = split(small);
        assert!(seq3 > seq2 && at3 == 0, "{seq3} {at3}");
        let path3 = d.join(format!("{seq3:08x}.seg"));
        assert_eq!(inode(&path3), old, "written over in place");
        assert!(!d.join(SPARE).exists());
        assert!(std::fs::metadata(&path3).unwrap().len() > 60_000);
        let e = blobs.entry(small, 3).unwrap();
        assert_eq!(e.whole(Part::ResponseBody).unwrap(), vec![3u8; 2_000]);
        // Past what was written: nothing, though the file holds old bytes.
        assert!(blobs.entry(join(seq3, 2_100), 1).is_err());
        // Reopened, the rows' entries still read; the stale tail does not.
        drop((blobs, e));
        let mut held = Holdings::new();
        held.insert(seq3, (3, 3));
        let again = Blobs::open(Some(&d), 64 * 1024, &held).unwrap();
        let e = again.entry(small, 3).unwrap();
        assert_eq!(e.whole(Part::ResponseBody).unwrap(), vec![3u8; 2_000]);
        assert!(again.entry(join(seq3, 2_100), 1).is_err());
        assert!(again.entry(small, 1).is_err());
    }

    #[test]
    fn a_segment_being_read_is_removed_not_written_over() {
        let blobs = Blobs::open(None, 64 * 1024, &Holdings::new()).unwrap();
        let first = blobs.append(&[record(1, 60_000)]).unwrap()[0].unwrap();
        blobs.append(&[record(2, 60_000)]).unwrap();
        let reading = blobs.entry(first, 1).unwrap();
        blobs.retire_through(1);
        // Segment after segment: none of them reuses the file being read.
        for id in 3..8 {
            blobs.append(&[record(id, 60_000)]).unwrap();
            blobs.retire_through(id - 1);
        }
        assert_eq!(
            reading.whole(Part::ResponseBody).unwrap(),
            record(1, 60_000).resp_body.to_vec()
        );
    }

    #[test]
    fn entries_read_back_from_memory_files() {
        let blobs = Blobs::open(None, 256 * 1024, &Holdings::new()).unwrap();
        roundtrip(&blobs);
    }

    #[test]
    fn reopening_keeps_referenced_segments_and_removes_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join(BLOB_DIR);
        let blobs = Blobs::open(Some(&d), 64 * 1024, &Holdings::new()).unwrap();
        let batch: Vec<Record> = (1..=8).map(|i| record(i, 40_000)).collect();
        let at = blobs.append(&batch).unwrap();
        drop(blobs);
        let mut held = Holdings::new();
        let (seq, _) = split(at[7].unwrap());
        held.insert(seq, (8, 8));
        let again = Blobs::open(Some(&d), 64 * 1024, &held).unwrap();
        assert_eq!(again.segments(), 1);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        let e = again.entry(at[7].unwrap(), 8).unwrap();
        assert_eq!(
            e.whole(Part::ResponseBody).unwrap(),
            batch[7].resp_body.to_vec()
        );
        // New appends go to a new segment.
        let next = again.append(&[record(9, 10)]).unwrap()[0].unwrap();
        assert!(split(next).0 > seq);
    }

    #[test]
    fn a_symlinked_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        let link = dir.path().join(BLOB_DIR);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            Blobs::open(Some(&link), 1 << 20, &Holdings::new()),
            Err(BlobError::Symlink { .. })
        ));
    }
}
