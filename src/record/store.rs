//! The record store: one SQLite database (WAL) in the data folder, or in
//! memory, with its schema, batched inserts and retention.
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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

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
const SCHEMA_VERSION: i64 = 4;

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
    weight INTEGER NOT NULL,
    tls TEXT
);
-- Header blocks and bodies live apart from the list columns, so that the
-- scans a filter needs read small rows. No secondary index: every list
-- query walks ids newest first and stops at a page, and inserts stay
-- appends (a full scan of a million rows takes ~20 ms; bench/records_query.sh).
CREATE TABLE IF NOT EXISTS details (
    id INTEGER PRIMARY KEY,
    req_headers BLOB NOT NULL,
    resp_headers BLOB NOT NULL,
    req_body BLOB,
    resp_body BLOB
);
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
                let shared = Arc::new(Mutex::new(conn));
                Ok(Arc::new(Store {
                    readers: Readers::Shared(shared.clone()),
                    writer: shared,
                    path: None,
                }))
            }
            DataDir::Path(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Folder {
                    path: dir.clone(),
                    source,
                })?;
                let path = dir.join(DB_FILE);
                let conn = open_file(&path, rec)?;
                Ok(Arc::new(Store {
                    readers: Readers::Pool {
                        path: path.clone(),
                        idle: Mutex::new(Vec::new()),
                    },
                    writer: Arc::new(Mutex::new(conn)),
                    path: Some(path),
                }))
            }
        }
    }

    /// Runs `f` on a reader connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        match &self.readers {
            Readers::Shared(conn) => {
                let c = conn
                    .lock()
                    .map_err(|e| StoreError::Poisoned(e.to_string()))?;
                Ok(f(&c)?)
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
                let out = f(&conn);
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

    /// Bytes on disk (database plus WAL), or pages in use in memory mode.
    pub fn disk_bytes(&self) -> u64 {
        match &self.path {
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
    tune_cache(&conn)?;
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
    tune_cache(conn)?;
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
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

/// Index pages stay in SQLite's cache and the file is read through mmap:
/// without both, every insert pays read syscalls for pages it just wrote.
fn tune_cache(conn: &Connection) -> rusqlite::Result<()> {
    // Negative: KiB. 32 MiB per connection, allocated as pages are used.
    conn.pragma_update(None, "cache_size", -32 * 1024)?;
    conn.pragma_update(None, "mmap_size", 1024i64 * 1024 * 1024)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Pages in use (not on the free list), in bytes.
fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

/// Inserts one batch in one transaction.
pub fn insert_batch(conn: &mut Connection, batch: &[Record]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut rec_stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO records (id, kind, started_us, conn_id, upstream_conn_id, client, user,
                method, url, host, version, status, content_type, req_size, resp_size,
                req_captured, resp_captured, req_flags, resp_flags, queued_us, dns_us, connect_us,
                tls_us, sent_us, ttfb_us, total_us, upstream_addr, error, close_reason, rules, weight, tls)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32)",
        )?;
        let mut details_stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO details (id, req_headers, resp_headers, req_body, resp_body)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (i, r) in batch.iter().enumerate() {
            // A batch is milliseconds of CPU: yielding now and then lets a
            // proxy worker that shares this core answer in between, instead
            // of waiting out the writer's whole time slice (p99 latency).
            if i % 64 == 63 {
                std::thread::yield_now();
            }
            let t = &r.timings;
            let rules = r.rules.clone();
            rec_stmt.execute(params![
                r.id as i64,
                r.kind.code(),
                r.started_us,
                r.conn_id as i64,
                r.upstream_conn_id.map(|v| v as i64),
                r.client,
                r.user,
                r.method,
                r.url,
                r.host,
                r.version,
                r.status,
                super::model::header_value(&r.resp_headers, "content-type"),
                r.req_body.size as i64,
                r.resp_body.size as i64,
                r.req_body.captured as i64,
                r.resp_body.captured as i64,
                r.req_body.flags(),
                r.resp_body.flags(),
                t.queued_us,
                t.dns_us,
                t.connect_us,
                t.tls_us,
                t.sent_us,
                t.ttfb_us,
                t.total_us,
                r.upstream_addr,
                r.error,
                r.close_reason,
                rules,
                r.weight() as i64,
                r.tls,
            ])?;
            let body = |b: &super::model::CapturedBody| (b.captured > 0).then(|| b.to_vec());
            details_stmt.execute(params![
                r.id as i64,
                r.req_headers,
                r.resp_headers,
                body(&r.req_body),
                body(&r.resp_body),
            ])?;
        }
    }
    tx.commit()
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
    rec: &Recording,
    count: &mut u64,
    now_us: i64,
    check_age: bool,
) -> rusqlite::Result<Trimmed> {
    let mut trimmed = Trimmed::default();
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
            let n = delete_through(conn, id)?;
            trimmed.records += n;
            *count = count.saturating_sub(n);
            if n < AGE_CHUNK as u64 {
                break;
            }
        }
    }
    if *count > rec.retain_records {
        let n = delete_oldest(conn, *count - rec.retain_records)?;
        trimmed.records += n;
        *count = count.saturating_sub(n);
    }
    // The file never shrinks, but freed pages are reused: keeping pages in
    // use under the target keeps the file, plus a batch and the WAL, under
    // the byte limit.
    let target = byte_target(rec);
    for _ in 0..8 {
        let used = used_bytes(conn)?;
        if used <= target {
            break;
        }
        if *count == 0 {
            break;
        }
        // Cut proportionally to the excess, plus a margin so that the next
        // few batches fit without another pass.
        let share = (used - target) as f64 / used as f64 + 0.02;
        let n = ((*count as f64) * share).ceil().max(1.0) as u64;
        let n = delete_oldest(conn, n)?;
        trimmed.records += n;
        *count = count.saturating_sub(n);
    }
    Ok(trimmed)
}

/// Pages the database may keep in use: the byte limit less room for the
/// WAL and one batch.
fn byte_target(rec: &Recording) -> u64 {
    let wal = (wal_pages(rec) * PAGE_SIZE) as u64;
    (rec.retain_bytes * 90 / 100).saturating_sub(2 * wal)
}

fn delete_oldest(conn: &mut Connection, n: u64) -> rusqlite::Result<u64> {
    let last: Option<i64> = conn
        .query_row(
            "SELECT id FROM records ORDER BY id LIMIT 1 OFFSET ?1",
            [n.saturating_sub(1) as i64],
            |r| r.get(0),
        )
        .optional()?;
    match last {
        Some(id) => delete_through(conn, id),
        None => {
            let tx = conn.transaction()?;
            let n = tx.execute("DELETE FROM records", [])? as u64;
            tx.execute("DELETE FROM details", [])?;
            tx.commit()?;
            Ok(n)
        }
    }
}

/// Deletes every record with an id up to `id`, and their bodies.
fn delete_through(conn: &mut Connection, id: i64) -> rusqlite::Result<u64> {
    let tx = conn.transaction()?;
    let n = tx.execute("DELETE FROM records WHERE id <= ?1", [id])? as u64;
    tx.execute("DELETE FROM details WHERE id <= ?1", [id])?;
    tx.commit()?;
    Ok(n)
}
