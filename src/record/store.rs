//! The record store: one SQLite database (WAL) in the data folder, or in
//! memory, with its schema, batched inserts and retention.
//!
//! Header blocks and bodies live in segment files beside it
//! ([`super::blobs`]); a row holds where its entry starts.
//!
//! Invariants: only the writer thread writes (through [`Store::write`]);
//! readers use their own read-only connections (file mode) or share the
//! writer's under a lock (memory mode); every batch is one transaction, so
//! a crash loses at most the batch being written; after each batch the
//! store is cut back under its record-count, byte and age limits.
//!
//! One data folder, one instance: [`DataDirLock`] holds an exclusive
//! `flock` on `sluice.lock` (with the holder's pid in it) for the life of
//! the instance, taken before the store or the admin token file is
//! touched; `records.db` (and its WAL files) are never followed through a
//! symbolic link.

use std::borrow::Borrow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::blobs::{BlobError, Blobs, Holdings};
use super::model::Record;
use crate::config::{DataDir, Recording};

/// The database file inside the data folder.
pub const DB_FILE: &str = "records.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record store {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("cannot create data folder {path}: {source}")]
    Folder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("record store query failed: {0}")]
    Query(#[from] rusqlite::Error),
    #[error(transparent)]
    Blobs(#[from] BlobError),
    #[error("record store is busy: {0}")]
    Poisoned(String),
    #[error(
        "data dir {} is in use by sluice pid {pid} (one data dir serves one \
         instance: stop that one, or give this one another --data-dir)",
        dir.display()
    )]
    InUse { dir: PathBuf, pid: String },
    #[error("cannot lock data dir {}: {source}", dir.display())]
    Lock {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "record store {} is a symbolic link; sluice does not follow it \
         (replace it with the file itself, or give another --data-dir)",
        path.display()
    )]
    Symlink { path: PathBuf },
}

/// The lock file inside the data folder.
pub const LOCK_FILE: &str = "sluice.lock";

/// An exclusive hold on a data folder for as long as it lives: the kernel
/// drops the `flock` when the process exits, however it exits, so a
/// crashed instance never leaves a stale lock behind.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
    pub dir: PathBuf,
}

impl DataDirLock {
    /// Creates the folder if needed (mode 0700) and locks it, or says which
    /// pid holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, StoreError> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Folder {
                path: dir.to_path_buf(),
                source,
            })?;
        let lock_err = |source| StoreError::Lock {
            dir: dir.to_path_buf(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir.join(LOCK_FILE))
            .map_err(lock_err)?;
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = match text.trim() {
                    "" => "unknown".to_string(),
                    t => t.to_string(),
                };
                return Err(StoreError::InUse {
                    dir: dir.to_path_buf(),
                    pid,
                });
            }
            return Err(lock_err(e));
        }
        file.set_len(0).map_err(lock_err)?;
        file.rewind().map_err(lock_err)?;
        writeln!(file, "{}", std::process::id()).map_err(lock_err)?;
        Ok(DataDirLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }
}

/// Refuses `path` when it is a symbolic link (a missing file is fine).
fn refuse_symlink(path: &Path) -> Result<(), StoreError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(StoreError::Symlink {
            path: path.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// Bumped whenever the tables change; a store of another version is moved
/// aside (kept, not read) and a new one started.
const SCHEMA_VERSION: i64 = 7;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    kind INTEGER NOT NULL,
    started_us INTEGER NOT NULL,
    conn_id INTEGER NOT NULL,
    upstream_conn_id INTEGER,
    client TEXT NOT NULL,
    user TEXT,
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    host TEXT NOT NULL,
    version TEXT NOT NULL,
    status INTEGER,
    content_type TEXT,
    req_size INTEGER NOT NULL,
    resp_size INTEGER NOT NULL,
    req_captured INTEGER NOT NULL,
    resp_captured INTEGER NOT NULL,
    req_flags INTEGER NOT NULL,
    resp_flags INTEGER NOT NULL,
    queued_us INTEGER,
    dns_us INTEGER,
    connect_us INTEGER,
    tls_us INTEGER,
    sent_us INTEGER,
    ttfb_us INTEGER,
    total_us INTEGER,
    upstream_addr TEXT,
    error TEXT,
    close_reason TEXT,
    rules TEXT NOT NULL,
    tls TEXT,
    -- Where the header blocks and bodies are: segment << 40 | offset
    -- (super::blobs); NULL when the record has none.
    blob INTEGER,
    -- WebSocket messages and server-sent events (super::messages): seen,
    -- stored, payload bytes seen, why some were not stored.
    msg_seen INTEGER NOT NULL DEFAULT 0,
    msg_stored INTEGER NOT NULL DEFAULT 0,
    msg_bytes INTEGER NOT NULL DEFAULT 0,
    msg_unstored TEXT
);
-- Header blocks and bodies live in the segment files, so that the scans a
-- filter needs read small rows and a body is one append. No secondary
-- index: every list query walks ids newest first and stops at a page, and
-- inserts stay appends (bench/records_query.sh).
";

/// Where readers get a connection.
enum Readers {
    /// File mode: a small pool of read-only connections to the file.
    Pool {
        path: PathBuf,
        idle: Mutex<Vec<Connection>>,
    },
    /// Memory mode: the one connection, shared with the writer.
    Shared(Arc<Mutex<Connection>>),
}

/// Read-only connections kept open between queries.
const READER_POOL: usize = 4;

pub struct Store {
    readers: Readers,
    writer: Arc<Mutex<Connection>>,
    /// The database file (None in memory mode).
    pub path: Option<PathBuf>,
    /// The header blocks and bodies.
    pub blobs: Arc<Blobs>,
}

/// What a reader works with: a connection and the segment files.
pub struct Reader<'a> {
    pub conn: &'a Connection,
    pub blobs: &'a Blobs,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Store {
    /// Opens (creating if needed) the store for `rec`.
    pub fn open(rec: &Recording) -> Result<Arc<Store>, StoreError> {
        match &rec.data_dir {
            DataDir::Memory => {
                let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
                    path: ":memory:".into(),
                    source,
                })?;
                init(&conn, rec).map_err(|source| StoreError::Open {
                    path: ":memory:".into(),
                    source,
                })?;
                let blobs = Blobs::open(None, segment_bytes(rec), &holdings(&conn)?)?;
                let shared = Arc::new(Mutex::new(conn));
                Ok(Arc::new(Store {
                    readers: Readers::Shared(shared.clone()),
                    writer: shared,
                    path: None,
                    blobs: Arc::new(blobs),
                }))
            }
            DataDir::Path(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder {
                    path: dir.clone(),
                    source,
                })?;
                let path = dir.join(DB_FILE);
                let conn = open_file(&path, rec)?;
                let blobs = Blobs::open(
                    Some(&dir.join(super::blobs::BLOB_DIR)),
                    segment_bytes(rec),
                    &holdings(&conn)?,
                )?;
                Ok(Arc::new(Store {
                    readers: Readers::Pool {
                        path: path.clone(),
                        idle: Mutex::new(Vec::new()),
                    },
                    writer: Arc::new(Mutex::new(conn)),
                    path: Some(path),
                    blobs: Arc::new(blobs),
                }))
            }
        }
    }

    /// Runs `f` on a reader connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Reader<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let blobs = &*self.blobs;
        match &self.readers {
            Readers::Shared(conn) => {
                let c = conn
                    .lock()
                    .map_err(|e| StoreError::Poisoned(e.to_string()))?;
                Ok(f(&Reader { conn: &c, blobs })?)
            }
            Readers::Pool { path, idle } => {
                let pooled = idle
                    .lock()
                    .map_err(|e| StoreError::Poisoned(e.to_string()))?
                    .pop();
                let conn = match pooled {
                    Some(c) => c,
                    None => open_reader(path)?,
                };
                let out = f(&Reader { conn: &conn, blobs });
                if let Ok(mut idle) = idle.lock() {
                    if idle.len() < READER_POOL {
                        idle.push(conn);
                    }
                }
                Ok(out?)
            }
        }
    }

    /// Runs `f` on the writer connection (the writer thread and deletes
    /// asked for through the API).
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let mut c = self
            .writer
            .lock()
            .map_err(|e| StoreError::Poisoned(e.to_string()))?;
        Ok(f(&mut c)?)
    }

    /// Stores one batch: entries appended to the segments first, then the
    /// rows in one transaction; `committed` runs under the writer lock
    /// once the rows are in (the writer's running count moves there).
    pub fn insert<R: Borrow<Record>>(
        &self,
        batch: &[R],
        committed: impl FnOnce(),
    ) -> Result<(), StoreError> {
        self.insert_with(batch, &Later::default(), committed)
    }

    /// [`Store::insert`], with messages and record updates committed in
    /// the same transaction after the rows (a message's record is in this
    /// batch or an earlier one).
    pub fn insert_with<R: Borrow<Record>>(
        &self,
        batch: &[R],
        later: &Later<'_>,
        committed: impl FnOnce(),
    ) -> Result<(), StoreError> {
        let mut c = self
            .writer
            .lock()
            .map_err(|e| StoreError::Poisoned(e.to_string()))?;
        let at = self.blobs.append(batch)?;
        insert_batch(&mut c, batch, &at, later)?;
        committed();
        Ok(())
    }

    /// How many records are stored.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.read(|c| c.query_row("SELECT COUNT(*) FROM records", [], |r| r.get::<_, i64>(0)))
            .map(|n| n.max(0) as u64)
    }

    /// The largest record id stored (0 when empty): ids continue from it.
    pub fn max_id(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            c.query_row("SELECT COALESCE(MAX(id), 0) FROM records", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|n| n.max(0) as u64)
    }

    /// The largest message id stored (0 when none): ids continue from it.
    pub fn max_message_id(&self) -> Result<u64, StoreError> {
        self.read(|c| super::messages::max_id(c))
    }

    /// Bytes on disk (database, WAL and segments), or in memory.
    pub fn disk_bytes(&self) -> u64 {
        self.blobs.bytes()
            + match &self.path {
                Some(p) => file_len(p) + file_len(&wal_path(p)),
                None => self.write(|c| used_bytes(c)).unwrap_or(0),
            }
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn wal_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

fn shm_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push("-shm");
    PathBuf::from(s)
}

/// Opens the writer's connection to the file. A file that is not a
/// database is moved aside (never deleted) and a fresh one is started.
fn open_file(path: &Path, rec: &Recording) -> Result<Connection, StoreError> {
    let err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    // A link planted as records.db (or as its WAL) would have the
    // writer overwrite whatever it points at: refused with a message,
    // and SQLite itself is told not to follow one (no race in between).
    for p in [path.to_path_buf(), wal_path(path), shm_path(path)] {
        refuse_symlink(&p)?;
    }
    let attempt = |path: &Path| -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::default() | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )?;
        init(&conn, rec)?;
        Ok(conn)
    };
    match attempt(path) {
        Ok(c) => Ok(c),
        Err(e) if is_corrupt(&e) => {
            let aside = path.with_extension(format!(
                "db.corrupt-{}",
                super::model::unix_micros(std::time::SystemTime::now()) / 1_000_000
            ));
            tracing::error!(
                store = %path.display(),
                moved_to = %aside.display(),
                error = %e,
                "record store is not a database this sluice can use; moved aside, starting a new one"
            );
            std::fs::rename(path, &aside).map_err(|source| StoreError::Folder {
                path: aside.clone(),
                source,
            })?;
            let _ = std::fs::remove_file(wal_path(path));
            attempt(path).map_err(err)
        }
        Err(e) => Err(err(e)),
    }
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )
    .map_err(|source| StoreError::Open {
        path: path.display().to_string(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(5))?;
    tune_cache(&conn, READER_CACHE_KIB)?;
    Ok(conn)
}

/// The WAL is checkpointed at this many pages, and a batch is cut at the
/// matching byte size, so that the WAL stays a small share of the budget.
fn wal_pages(rec: &Recording) -> i64 {
    ((rec.retain_bytes / 40) / PAGE_SIZE as u64).clamp(4, 1024) as i64
}

/// 16 KiB pages: a record and its details are about a kilobyte, and
/// bigger pages mean fewer WAL frames, writes and checkpoint copies per
/// record than SQLite's default 4 KiB.
const PAGE_SIZE: i64 = 16 * 1024;

/// Bytes a batch may carry before it is committed.
pub fn batch_bytes(rec: &Recording) -> usize {
    (wal_pages(rec) * PAGE_SIZE) as usize
}

fn init(conn: &Connection, rec: &Recording) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    // Takes effect on a new database only (before the first table).
    conn.pragma_update(None, "page_size", PAGE_SIZE)?;
    // WAL: readers never block the writer; synchronous=NORMAL: a commit
    // survives a process crash (kill -9) without an fsync per batch.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "wal_autocheckpoint", wal_pages(rec))?;
    conn.pragma_update(None, "journal_size_limit", wal_pages(rec) * PAGE_SIZE)?;
    tune_cache(conn, WRITER_CACHE_KIB)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let has_tables: bool = conn.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'records'",
        [],
        |r| r.get(0),
    )?;
    if has_tables && version != SCHEMA_VERSION {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB),
            Some(format!(
                "record store has schema version {version}, this sluice writes {SCHEMA_VERSION}"
            )),
        ));
    }
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(super::messages::TABLE)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

/// SQLite's page cache per connection, in KiB: the writer touches the
/// newest and oldest leaves and the interior pages (a few MiB at a million
/// rows), a reader's scans stream through the OS page cache anyway. No
/// mmap: pages mapped in count in the process's RSS, which would then
/// climb with the store's size (file-backed, reclaimable, but read by a
/// person as the proxy's memory).
const WRITER_CACHE_KIB: i64 = 4 * 1024;
const READER_CACHE_KIB: i64 = 2 * 1024;

fn tune_cache(conn: &Connection, kib: i64) -> rusqlite::Result<()> {
    // Negative: KiB, allocated as pages are used.
    conn.pragma_update(None, "cache_size", -kib)?;
    conn.pragma_update(None, "mmap_size", 0)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// The id range each segment holds, from the rows (one scan at start).
fn holdings(conn: &Connection) -> rusqlite::Result<Holdings> {
    let mut stmt = conn.prepare(
        "SELECT blob >> 40, MIN(id), MAX(id) FROM records WHERE blob IS NOT NULL GROUP BY blob >> 40",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut held = Holdings::new();
    for row in rows {
        let (seq, min, max) = row?;
        held.insert(seq.max(0) as u32, (min.max(0) as u64, max.max(0) as u64));
    }
    Ok(held)
}

/// A segment is closed for appends at this size: small against the byte
/// limit, because the oldest segment is freed whole.
pub fn segment_bytes(rec: &Recording) -> u64 {
    (rec.retain_bytes / 16).clamp(64 * 1024, 64 * 1024 * 1024)
}

/// Pages in use (not on the free list), in bytes.
fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

/// The columns a record row is inserted with, in binding order.
const INSERT_COLUMNS: &str = "id, kind, started_us, conn_id, upstream_conn_id, client, user,
    method, url, host, version, status, content_type, req_size, resp_size,
    req_captured, resp_captured, req_flags, resp_flags, queued_us, dns_us, connect_us,
    tls_us, sent_us, ttfb_us, total_us, upstream_addr, error, close_reason, rules, tls, blob";
const INSERT_WIDTH: usize = 32;
/// Rows inserted between two yields of the writer's core.
const ROWS_PER_YIELD: usize = 32;

/// One row per statement, plain `INSERT`: ids come from the recorder's
/// counter and never collide, and a single-row insert needs no statement
/// journal (a multi-row or `OR REPLACE` one spills every row it touches
/// into it first, which cost the writer half its time in `perf`).
fn insert_sql() -> String {
    format!(
        "INSERT INTO records ({INSERT_COLUMNS}) VALUES ({})",
        ["?"; INSERT_WIDTH].join(",")
    )
}

/// Binds one record's values to the insert statement.
fn bind_row(
    stmt: &mut rusqlite::Statement<'_>,
    r: &Record,
    at: Option<i64>,
) -> rusqlite::Result<()> {
    let t = &r.timings;
    let content_type = r.content_type.as_deref();
    let values: [&dyn rusqlite::ToSql; INSERT_WIDTH] = [
        &(r.id as i64),
        &r.kind.code(),
        &r.started_us,
        &(r.conn_id as i64),
        &r.upstream_conn_id.map(|v| v as i64),
        &r.client.as_str(),
        &r.user.as_deref(),
        &r.method.as_str(),
        &r.url,
        &r.host.as_str(),
        &r.version.as_str(),
        &r.status,
        &content_type,
        &(r.req_body.size as i64),
        &(r.resp_body.size as i64),
        &(r.req_body.captured as i64),
        &(r.resp_body.captured as i64),
        &r.req_body.flags(),
        &r.resp_body.flags(),
        &t.queued_us,
        &t.dns_us,
        &t.connect_us,
        &t.tls_us,
        &t.sent_us,
        &t.ttfb_us,
        &t.total_us,
        &r.upstream_addr.as_deref(),
        &r.error,
        &r.close_reason,
        &r.rules,
        &r.tls,
        &at,
    ];
    for (i, v) in values.iter().enumerate() {
        stmt.raw_bind_parameter(1 + i, v)?;
    }
    Ok(())
}

/// Inserts the rows of one batch in one transaction; `at` holds each
/// record's entry in the segments ([`Blobs::append`]).
pub fn insert_batch<R: Borrow<Record>>(
    conn: &mut Connection,
    batch: &[R],
    at: &[Option<i64>],
    later: &Later<'_>,
) -> rusqlite::Result<()> {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(insert_sql);
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(sql)?;
        for (k, r) in batch.iter().enumerate() {
            if k % ROWS_PER_YIELD == 0 {
                // A batch is milliseconds of CPU: yielding now and then lets
                // a proxy worker that shares this core answer in between,
                // instead of waiting out the writer's whole time slice (p99).
                std::thread::yield_now();
            }
            bind_row(&mut stmt, r.borrow(), at.get(k).copied().flatten())?;
            stmt.raw_execute()?;
        }
    }
    if !later.messages.is_empty() {
        super::messages::insert(&tx, later.messages, later.first_message_id)?;
    }
    for u in later.updates {
        super::messages::apply(&tx, u)?;
    }
    tx.commit()
}

/// What a batch carries besides new records: messages (their ids from
/// `first_message_id` on) and updates of stored records.
#[derive(Default)]
pub struct Later<'a> {
    pub messages: &'a [Box<super::messages::Queued>],
    pub first_message_id: u64,
    pub updates: &'a [super::messages::RecordUpdate],
}

/// Records looked at per step of the age limit.
const AGE_CHUNK: i64 = 1000;

/// What one retention pass removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Trimmed {
    pub records: u64,
}

/// Deletes the oldest records until the store is within its limits.
/// `now_us` is the wall clock, for the age limit.
/// `count` is the writer's running count of stored records, kept here so
/// that no pass has to count a large table.
pub fn enforce_retention(
    conn: &mut Connection,
    blobs: &Blobs,
    rec: &Recording,
    count: &mut u64,
    now_us: i64,
    check_age: bool,
) -> rusqlite::Result<Trimmed> {
    let mut trimmed = Trimmed::default();
    let mut cut = |count: &mut u64, n: u64| {
        trimmed.records += n;
        *count = count.saturating_sub(n);
    };
    if check_age {
        let cutoff = now_us - rec.retain_age.as_micros() as i64;
        // Ids follow completion order, close to start order: the oldest
        // records are cut a chunk at a time from the low end, so the check
        // reads a handful of rows, never the table.
        loop {
            let last_old: Option<i64> = conn
                .query_row(
                    "SELECT MAX(id) FROM (SELECT id, started_us FROM records ORDER BY id LIMIT ?1)
                     WHERE started_us < ?2",
                    params![AGE_CHUNK, cutoff],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            let Some(id) = last_old else { break };
            let n = delete_through(conn, blobs, id)?;
            cut(count, n);
            if n < AGE_CHUNK as u64 {
                break;
            }
        }
    }
    if *count > rec.retain_records {
        let n = delete_oldest(conn, blobs, *count - rec.retain_records)?;
        cut(count, n);
    }
    // The file never shrinks, but freed pages are reused: keeping pages in
    // use plus the segments under the target keeps the files, plus a batch
    // and the WAL, under the byte limit.
    let target = byte_target(rec);
    for _ in 0..64 {
        let in_db = used_bytes(conn)?;
        let in_segments = blobs.bytes();
        let used = in_db + in_segments;
        if used <= target || *count == 0 {
            break;
        }
        // Bodies and headers are most of the bytes: the oldest segment is
        // freed whole by deleting the records up to its last id.
        if in_segments > 0 {
            if let Some(last) = blobs.oldest_max_id() {
                let n = delete_through(conn, blobs, last as i64)?;
                cut(count, n);
                continue;
            }
        }
        // Rows alone: cut proportionally to the excess, plus a margin so
        // that the next few batches fit without another pass.
        let share = (used - target) as f64 / used as f64 + 0.02;
        let n = ((*count as f64) * share).ceil().max(1.0) as u64;
        let n = delete_oldest(conn, blobs, n)?;
        cut(count, n);
    }
    Ok(trimmed)
}

/// Pages the database and segments may keep in use: the byte limit less
/// room for the WAL and one batch.
fn byte_target(rec: &Recording) -> u64 {
    let wal = (wal_pages(rec) * PAGE_SIZE) as u64;
    (rec.retain_bytes * 90 / 100).saturating_sub(2 * wal)
}

fn delete_oldest(conn: &mut Connection, blobs: &Blobs, n: u64) -> rusqlite::Result<u64> {
    let last: Option<i64> = conn
        .query_row(
            "SELECT id FROM records ORDER BY id LIMIT 1 OFFSET ?1",
            [n.saturating_sub(1) as i64],
            |r| r.get(0),
        )
        .optional()?;
    match last {
        Some(id) => delete_through(conn, blobs, id),
        None => {
            let n = conn.execute("DELETE FROM records", [])? as u64;
            conn.execute("DELETE FROM message_chunks", [])?;
            blobs.retire_through(u64::MAX);
            Ok(n)
        }
    }
}

/// Deletes every record with an id up to `id`, then the segments that
/// held only such records.
fn delete_through(conn: &mut Connection, blobs: &Blobs, id: i64) -> rusqlite::Result<u64> {
    let n = conn.execute("DELETE FROM records WHERE id <= ?1", [id])? as u64;
    super::messages::delete_through(conn, id)?;
    blobs.retire_through(id.max(0) as u64);
    Ok(n)
}

/// After a delete by filter: removes the segments no stored record
/// references any more.
pub fn retire_unreferenced(conn: &Connection, blobs: &Blobs) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM records WHERE id BETWEEN ?1 AND ?2 AND blob >> 40 = ?3)",
    )?;
    let mut failed = None;
    blobs.retire_unless(|seq, min_id, max_id| {
        match stmt.query_row(params![min_id as i64, max_id as i64, seq as i64], |r| {
            r.get::<_, bool>(0)
        }) {
            Ok(live) => live,
            Err(e) => {
                failed = Some(e);
                true
            }
        }
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::messages::{Direction, Queued, Totals, Unstored};
    use crate::record::model::{BodyDir, RecordKind};
    use crate::record::query::{self, Filter};
    use bytes::Bytes;
    use std::time::SystemTime;

    fn record(id: u64, host: &str, body: usize) -> Record {
        let mut r = Record::new(RecordKind::Http, id, "127.0.0.1:1", SystemTime::now());
        r.id = id;
        r.method = "GET".into();
        r.host = host.into();
        r.url = format!("http://{host}/{id}");
        r.version = "HTTP/1.1".into();
        r.status = Some(200);
        r.req_headers = format!("x-n: {id}\r\n").into_bytes();
        r.resp_headers = b"content-type: application/json\r\n".to_vec();
        r.content_type = Some("application/json".into());
        r.resp_body
            .push(&Bytes::from(vec![b'a' + (id % 26) as u8; body]), 1 << 20);
        r
    }

    fn store_in(dir: &Path, retain_bytes: u64) -> Arc<Store> {
        Store::open(&Recording {
            data_dir: DataDir::Path(dir.to_path_buf()),
            retain_bytes,
            ..Recording::default()
        })
        .unwrap()
    }

    #[test]
    fn rows_and_entries_read_back_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1 << 30);
        // 70 rows: two full multi-row statements and six single rows.
        let batch: Vec<Record> = (1..=70)
            .map(|i| record(i, "a.test", 100 * i as usize))
            .collect();
        store.insert(&batch, || {}).unwrap();
        drop(store);
        let store = store_in(dir.path(), 1 << 30);
        assert_eq!(store.count().unwrap(), 70);
        for id in [1u64, 33, 64, 70] {
            let (d, body) = store
                .read(|c| {
                    let d = query::detail(c, id)?.unwrap();
                    Ok((d, query::body(c, id, BodyDir::Response)?))
                })
                .unwrap();
            assert_eq!(d.summary.url, format!("http://a.test/{id}"));
            assert_eq!(d.summary.content_type.as_deref(), Some("application/json"));
            assert_eq!(d.req_headers, vec![("x-n".to_string(), id.to_string())]);
            assert_eq!(d.resp_body.captured, 100 * id);
            assert_eq!(body, batch[id as usize - 1].resp_body.to_vec());
        }
    }

    #[test]
    fn a_row_whose_segment_is_gone_reads_as_nothing_stored() {
        // A reader's snapshot may still show rows that retention has just
        // deleted, whose segment went with them.
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1 << 30);
        store.insert(&[record(1, "a.test", 500)], || {}).unwrap();
        store.blobs.retire_through(u64::MAX);
        let (d, body) = store
            .read(|c| {
                let d = query::detail(c, 1)?.unwrap();
                Ok((d, query::body(c, 1, BodyDir::Response)?))
            })
            .unwrap();
        assert_eq!(d.summary.url, "http://a.test/1");
        assert!(d.req_headers.is_empty() && body.is_empty());
    }

    #[test]
    fn deletes_and_retention_remove_segments_with_their_records() {
        let dir = tempfile::tempdir().unwrap();
        // 4 MiB budget: 256 KiB segments.
        let limit = 4 << 20;
        let store = store_in(dir.path(), limit);
        let rec = Recording {
            retain_bytes: limit,
            ..Recording::default()
        };
        let mut count = 0u64;
        for b in 0..40u64 {
            let batch: Vec<Record> = (0..10)
                .map(|i| {
                    record(
                        b * 10 + i + 1,
                        if i % 2 == 0 { "even.test" } else { "odd.test" },
                        30_000,
                    )
                })
                .collect();
            store.insert(&batch, || count += 10).unwrap();
            let blobs = store.blobs.clone();
            store
                .write(|c| enforce_retention(c, &blobs, &rec, &mut count, 0, false))
                .unwrap();
            assert!(
                store.disk_bytes() <= limit,
                "{} > {limit}",
                store.disk_bytes()
            );
        }
        // 12 MB went in; the oldest records went with their segments.
        assert!(store.count().unwrap() < 400);
        assert_eq!(store.count().unwrap(), count);
        // Every file is a segment in use, or the one spare retention keeps.
        let files: Vec<String> = std::fs::read_dir(dir.path().join(super::super::blobs::BLOB_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != super::super::blobs::SPARE)
            .collect();
        assert_eq!(files.len(), store.blobs.segments(), "{files:?}");
        // Deleting everything by filter frees every segment.
        let blobs = store.blobs.clone();
        store
            .write(|c| {
                query::delete(c, &Filter::default())?;
                retire_unreferenced(c, &blobs)
            })
            .unwrap();
        assert_eq!(store.blobs.bytes(), 0);
        assert_eq!(store.blobs.segments(), 0);
        let left = std::fs::read_dir(dir.path().join(super::super::blobs::BLOB_DIR))
            .unwrap()
            .count();
        assert_eq!(left, 0, "no spare is kept once every record is deleted");
    }

    fn message(
        record_id: u64,
        seq: u64,
        dir: Direction,
        opcode: u8,
        payload: &[u8],
    ) -> Box<Queued> {
        Box::new(Queued {
            record_id,
            seq,
            dir,
            at_us: 1_000 + seq as i64,
            opcode,
            size: payload.len() as u64,
            flags: 0,
            meta: None,
            payload: payload.to_vec(),
            totals: Totals {
                seen: seq,
                stored: seq,
                bytes: seq * 10,
                unstored: Unstored::None,
            },
        })
    }

    #[test]
    fn interleaved_messages_page_back_per_record_across_chunks() {
        use crate::record::message_chunk::MAX_MESSAGES;
        use crate::record::messages::{self, opcode, Direction::*, Filter};
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), 1 << 30);
        store
            .insert(&[record(1, "a.test", 0), record(2, "b.test", 0)], || {})
            .unwrap();
        // Two batches; record 1 sends and receives in turn, record 2's
        // messages interleave, and record 1's first batch spans chunks.
        let n1 = MAX_MESSAGES + 10;
        let mut next_id = 1;
        let mut seq = [0u64; 3];
        for round in 0..2 {
            let mut batch = Vec::new();
            for i in 0..n1 {
                for rec in [1u64, 2] {
                    if rec == 2 && (round == 1 || i % 100 != 0) {
                        continue;
                    }
                    seq[rec as usize] += 1;
                    let s = seq[rec as usize];
                    let (d, op) = match s % 3 {
                        0 => (Receive, opcode::TEXT),
                        1 => (Send, opcode::TEXT),
                        _ => (Send, opcode::PING),
                    };
                    batch.push(message(rec, s, d, op, format!("{rec}:{s}").as_bytes()));
                }
            }
            let later = Later {
                messages: &batch,
                first_message_id: next_id,
                updates: &[],
            };
            next_id += batch.len() as u64;
            store.insert_with(&[] as &[Record], &later, || {}).unwrap();
        }
        let page = |rec: u64, f: Filter| store.read(|c| messages::list(c, rec, &f)).unwrap();
        // Paging by cursor walks record 1's messages in order, none twice.
        let mut cursor = None;
        let mut got = Vec::new();
        loop {
            let rows = page(
                1,
                Filter {
                    cursor,
                    limit: 300,
                    ..Filter::default()
                },
            );
            let Some(last) = rows.last() else { break };
            cursor = Some(last.id);
            got.extend(rows.into_iter().map(|r| (r.seq, r.text.unwrap())));
        }
        let want: Vec<_> = (1..=seq[1]).map(|s| (s, format!("1:{s}"))).collect();
        assert_eq!(got, want);
        let two = page(
            2,
            Filter {
                limit: 100,
                ..Filter::default()
            },
        );
        assert_eq!(two.len() as u64, seq[2]);
        assert!(two
            .iter()
            .all(|r| r.record_id == 2 && r.text.as_deref().unwrap().starts_with("2:")));
        // Filters apply inside chunks.
        let pings = page(
            1,
            Filter {
                opcode: Some(opcode::PING),
                limit: 10_000,
                ..Filter::default()
            },
        );
        assert_eq!(
            pings.len() as u64,
            (1..=seq[1]).filter(|s| s % 3 == 2).count() as u64
        );
        assert!(pings.iter().all(|r| r.opcode == "ping"));
        let received = page(
            1,
            Filter {
                direction: Some(Receive),
                since_us: Some(1_000 + 600),
                limit: 5,
                ..Filter::default()
            },
        );
        assert_eq!(
            received.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![600, 603, 606, 609, 612]
        );
        // The counters hold each record's last totals; ids go on after a reopen.
        let (t, _) = store.read(|c| messages::totals(c, 1)).unwrap().unwrap();
        assert_eq!((t.seen, t.bytes), (seq[1], seq[1] * 10));
        assert_eq!(store.max_message_id().unwrap(), next_id - 1);
        // Retention takes a record's chunks with it.
        store.write(|c| delete_through(c, &store.blobs, 1)).unwrap();
        assert!(page(
            1,
            Filter {
                limit: 10,
                ..Filter::default()
            }
        )
        .is_empty());
        assert_eq!(
            page(
                2,
                Filter {
                    limit: 100,
                    ..Filter::default()
                }
            )
            .len() as u64,
            seq[2]
        );
    }
}
