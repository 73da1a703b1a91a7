//! The rules a running instance applies, swapped whole on reload.
//!
//! Invariants: a request takes one snapshot ([`LiveRules::current`]) and
//! applies it from start to end, so a reload mid-request never mixes two
//! rule sets; a replacement is installed only after it compiled, so a bad
//! file or API body never replaces the running rules.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::files::FileRoot;
use super::id::RuleError;
use super::load::{self, LoadError};
use super::matcher::RuleSet;
use crate::config::RulesConfig;

/// How often the rule file's mtime and size are compared.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Reload outcomes, for `/metrics`.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Replacements installed (file reloads and API puts).
    pub ok: AtomicU64,
    /// Replacements refused (unreadable file or rule errors).
    pub failed: AtomicU64,
}

/// What the watcher compares to notice an edit.
type FileSig = Option<(SystemTime, u64)>;

fn file_sig(path: &Path) -> FileSig {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// One installed rule set and where it came from.
#[derive(Debug)]
pub struct Snapshot {
    pub set: RuleSet,
    /// The rule text as loaded (served by `GET /api/rules`).
    pub text: String,
    pub loaded_at: SystemTime,
    /// Bumped on every successful install.
    pub generation: u64,
}

/// The live rules of one instance.
#[derive(Debug)]
pub struct LiveRules {
    current: RwLock<Arc<Snapshot>>,
    /// The rule file (`--rules`), if rules come from one.
    pub path: Option<PathBuf>,
    /// Where `bodyFile://` reads: `--mock-dir`, else the rule file's
    /// folder, else nowhere.
    pub files: FileRoot,
    pub stats: ReloadStats,
    /// The rule file's signature when last read or written by sluice.
    seen: Mutex<FileSig>,
    /// Serializes reloads and API writes, so a write and a reload cannot
    /// interleave (the file and the installed rules stay in step).
    writing: tokio::sync::Mutex<()>,
}

impl LiveRules {
    /// No rules: every request passes untouched.
    pub fn empty() -> LiveRules {
        LiveRules::empty_in(FileRoot::none())
    }

    /// No rules yet; rules put through the API read files below `files`.
    pub fn empty_in(files: FileRoot) -> LiveRules {
        LiveRules {
            current: RwLock::new(Arc::new(Snapshot {
                set: load::parse("").unwrap_or_else(|_| unreachable_empty()),
                text: String::new(),
                loaded_at: SystemTime::now(),
                generation: 0,
            })),
            path: None,
            files,
            stats: ReloadStats::default(),
            seen: Mutex::new(None),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// The rules a configuration names: its rule file, if any (an error
    /// here stops the start), with `bodyFile://` read below the mock
    /// folder, else the rule file's folder.
    pub fn from_config(config: &RulesConfig) -> Result<LiveRules, LoadError> {
        let files = FileRoot::for_rules(config.mock_dir.as_deref(), config.rules_file.as_deref());
        match &config.rules_file {
            Some(path) => LiveRules::from_file_in(path, files),
            None => Ok(LiveRules::empty_in(files)),
        }
    }

    /// Loads `path` (start-up: an error here stops the start), reading
    /// files below its folder.
    pub fn from_file(path: &Path) -> Result<LiveRules, LoadError> {
        LiveRules::from_file_in(path, FileRoot::for_rules(None, Some(path)))
    }

    /// [`from_file`](Self::from_file), reading files below `files`.
    pub fn from_file_in(path: &Path, files: FileRoot) -> Result<LiveRules, LoadError> {
        let sig = file_sig(path);
        let text = read_text(path)?;
        let set = compile_text(&text, path, &files)?;
        Ok(LiveRules {
            current: RwLock::new(Arc::new(Snapshot {
                set,
                text,
                loaded_at: SystemTime::now(),
                generation: 1,
            })),
            path: Some(path.to_owned()),
            files,
            stats: ReloadStats::default(),
            seen: Mutex::new(sig),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// The rules to apply to one request.
    pub fn current(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reads the rule file again and installs it if it compiles. Reading
    /// and compiling run on a blocking thread: a 5,000-rule file takes
    /// ~15 ms to compile, which must not stall the proxy's workers.
    pub async fn reload(&self) -> Result<Arc<Snapshot>, LoadError> {
        let Some(path) = self.path.clone() else {
            return Ok(self.current());
        };
        let files = self.files.clone();
        let job = tokio::task::spawn_blocking(move || {
            // The signature before the read: a change after it is seen
            // by the next watch tick.
            let sig = file_sig(&path);
            let loaded =
                read_text(&path).and_then(|text| Ok((compile_text(&text, &path, &files)?, text)));
            (sig, loaded)
        });
        let (sig, loaded) = job.await.unwrap_or_else(|e| {
            let path = self.path.clone().unwrap_or_default();
            let source = std::io::Error::other(format!("rule reload task failed: {e}"));
            (None, Err(LoadError::Read { path, source }))
        });
        self.set_seen(sig);
        let r = loaded.map(|(set, text)| self.install(set, text));
        let counter = if r.is_ok() {
            &self.stats.ok
        } else {
            &self.stats.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// [`reload`](Self::reload), logged: the new generation at info, or
    /// each error as `FILE:LINE:COL: message` at warn (the running rules
    /// stay). `why` says what triggered it (`file change`, `SIGHUP`).
    pub async fn reload_logged(&self, why: &str) {
        if self.path.is_none() {
            tracing::info!(trigger = why, "no rule file (--rules) to reload");
            return;
        }
        let _w = self.writing.lock().await;
        let started = std::time::Instant::now();
        match self.reload().await {
            Ok(s) => tracing::info!(
                trigger = why,
                generation = s.generation,
                rules = s.set.len(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                "rules reloaded"
            ),
            Err(e) => {
                for line in e.to_string().lines() {
                    tracing::warn!(trigger = why, "{line}");
                }
                tracing::warn!(
                    trigger = why,
                    generation = self.current().generation,
                    "rule file not loaded; the running rules stay"
                );
            }
        }
    }

    /// Installs `text` from the admin API: compiled first (errors leave
    /// everything as it was), then, when rules come from a file, written
    /// to it atomically (temp file + rename in the same folder) so the
    /// file watch sees sluice's own write and does not revert it.
    pub async fn put(&self, text: String) -> Result<Arc<Snapshot>, PutError> {
        let _w = self.writing.lock().await;
        let files = self.files.clone();
        // Compiled on a blocking thread, like `reload`; file actions open
        // non-blocking, so this cannot hang with the write lock held.
        let job = tokio::task::spawn_blocking(move || {
            let set = load::parse_in(&text, &files);
            (set, text)
        });
        let (set, text) = match job.await {
            Ok(done) => done,
            Err(e) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                return Err(PutError::Write(std::io::Error::other(format!(
                    "rule compile task failed: {e}"
                ))));
            }
        };
        let set = match set {
            Ok(set) => set,
            Err(errors) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                return Err(PutError::Invalid(errors));
            }
        };
        if let Some(path) = &self.path {
            let path = path.clone();
            let bytes = text.clone().into_bytes();
            let written = tokio::task::spawn_blocking(move || write_atomic(&path, &bytes))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            match written {
                Ok(sig) => self.set_seen(sig),
                Err(e) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    return Err(PutError::Write(e));
                }
            }
        }
        let next = self.install(set, text);
        self.stats.ok.fetch_add(1, Ordering::Relaxed);
        Ok(next)
    }

    fn install(&self, set: RuleSet, text: String) -> Arc<Snapshot> {
        let mut g = match self.current.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let next = Arc::new(Snapshot {
            set,
            text,
            loaded_at: SystemTime::now(),
            generation: g.generation + 1,
        });
        *g = next.clone();
        next
    }

    fn set_seen(&self, sig: FileSig) {
        match self.seen.lock() {
            Ok(mut g) => *g = sig,
            Err(p) => *p.into_inner() = sig,
        }
    }

    fn seen(&self) -> FileSig {
        match self.seen.lock() {
            Ok(g) => *g,
            Err(p) => *p.into_inner(),
        }
    }

    /// Polls the rule file every [`WATCH_INTERVAL`] and reloads it when
    /// its mtime or size changed, until `stop`. A file that is missing for
    /// a moment (an editor's save) is simply not reloaded until it is back.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            let p = path.clone();
            let sig = tokio::task::spawn_blocking(move || file_sig(&p))
                .await
                .ok()
                .flatten();
            if sig.is_some() && sig != self.seen() {
                self.reload_logged("file change").await;
            }
        }
    }
}

/// Why `PUT /api/rules` did not install the text.
#[derive(Debug)]
pub enum PutError {
    Invalid(Vec<RuleError>),
    /// The rules compiled but the rule file could not be written.
    Write(std::io::Error),
}

/// Writes `bytes` to a temp file next to `path`, then renames it over
/// `path`; returns the new file's signature.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<FileSig> {
    use std::io::Write;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rules".into());
    let tmp = dir.join(format!(".{name}.sluice-{}.tmp", std::process::id()));
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if let Ok(m) = std::fs::metadata(path) {
            let _ = std::fs::set_permissions(&tmp, m.permissions());
        }
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.map(|()| file_sig(path))
}

fn read_text(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })
}

fn compile_text(text: &str, path: &Path, files: &FileRoot) -> Result<RuleSet, LoadError> {
    load::parse_in(text, files).map_err(|errors| LoadError::Invalid {
        path: path.to_owned(),
        errors,
    })
}

fn unreachable_empty() -> RuleSet {
    // An empty text has no rules and no errors; this is never reached.
    RuleSet::compile(Vec::new()).unwrap_or_else(|_| std::process::abort())
}
