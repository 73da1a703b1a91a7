//! The rules a running instance applies, swapped whole on reload.
//!
//! Invariants: a request takes one snapshot ([`LiveRules::current`]) and
//! applies it from start to end, so a reload mid-request never mixes two
//! rule sets; a replacement is installed only after it compiled, so a bad
//! file or API body never replaces the running rules.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use super::{LoadError, RuleError, RuleSet};

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
}

impl LiveRules {
    /// No rules: every request passes untouched.
    pub fn empty() -> LiveRules {
        LiveRules {
            current: RwLock::new(Arc::new(Snapshot {
                set: super::parse("").unwrap_or_else(|_| unreachable_empty()),
                text: String::new(),
                loaded_at: SystemTime::now(),
                generation: 0,
            })),
            path: None,
        }
    }

    /// Loads `path` (start-up: an error here stops the start).
    pub fn from_file(path: &Path) -> Result<LiveRules, LoadError> {
        let text = read_text(path)?;
        let set = compile_text(&text, path)?;
        Ok(LiveRules {
            current: RwLock::new(Arc::new(Snapshot {
                set,
                text,
                loaded_at: SystemTime::now(),
                generation: 1,
            })),
            path: Some(path.to_owned()),
        })
    }

    /// The rules to apply to one request.
    pub fn current(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Compiles `text` and, only if it compiles, installs it. Rule-file
    /// relative paths (`bodyFile://`) resolve against the rule file's
    /// folder, or the working directory without one.
    pub fn replace(&self, text: String) -> Result<Arc<Snapshot>, Vec<RuleError>> {
        let base = self
            .path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_owned)
            .unwrap_or_default();
        let set = super::parse_in(&text, &base)?;
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
        Ok(next)
    }

    /// Reads the rule file again and installs it if it compiles.
    pub fn reload(&self) -> Result<Arc<Snapshot>, LoadError> {
        let Some(path) = &self.path else {
            return Ok(self.current());
        };
        let text = read_text(path)?;
        self.replace(text).map_err(|errors| LoadError::Invalid {
            path: path.clone(),
            errors,
        })
    }
}

fn read_text(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })
}

fn compile_text(text: &str, path: &Path) -> Result<RuleSet, LoadError> {
    let base = path.parent().unwrap_or(Path::new(""));
    super::parse_in(text, base).map_err(|errors| LoadError::Invalid {
        path: path.to_owned(),
        errors,
    })
}

fn unreachable_empty() -> RuleSet {
    // An empty text has no rules and no errors; this is never reached.
    RuleSet::compile(Vec::new()).unwrap_or_else(|_| std::process::abort())
}
