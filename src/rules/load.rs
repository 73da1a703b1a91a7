//! Loading rules: rule text parsed and compiled into a [`RuleSet`]
//! ([`parse`], [`parse_in`]), and rule files read (at most
//! [`MAX_RULE_FILE`] bytes of UTF-8) with errors naming the file, line
//! and column ([`LoadError`]).
//!
//! Invariant: any error yields no set, and every error found in one pass
//! (syntax and compile alike) is reported, in line order.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::files::FileRoot;
use super::id::RuleError;
use super::matcher::RuleSet;
use super::syntax;

/// Largest rule file sluice reads.
pub const MAX_RULE_FILE: u64 = 64 << 20;
/// Parses and compiles rule text with no folder for `bodyFile://` (a
/// file action is an error). All errors, in line order, or the set.
pub fn parse(text: &str) -> Result<RuleSet, Vec<RuleError>> {
    compile(text, &FileRoot::none())
}

/// [`parse`], with `bodyFile://` paths read below `files`' folder.
pub fn parse_in(text: &str, files: &FileRoot) -> Result<RuleSet, Vec<RuleError>> {
    compile(text, files)
}

fn compile(text: &str, files: &FileRoot) -> Result<RuleSet, Vec<RuleError>> {
    let (specs, mut errors) = syntax::parse_partial(text);
    // Compile even after syntax errors, so that errors only compiling
    // finds (an unreadable bodyFile) are reported in the same pass.
    match RuleSet::compile_in(specs, files) {
        Ok(set) if errors.is_empty() => Ok(set),
        Ok(_) => Err(errors),
        Err(mut more) => {
            errors.append(&mut more);
            errors.sort_by_key(|e| (e.line, e.column));
            Err(errors)
        }
    }
}

/// Why a rule file did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read rule file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// One `FILE:LINE:COL: message` line per error.
    #[error("{}", format_errors(.path, .errors))]
    Invalid {
        path: PathBuf,
        errors: Vec<RuleError>,
    },
}

fn format_errors(path: &Path, errors: &[RuleError]) -> String {
    let mut out = String::new();
    for (i, e) in errors.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "{}:{}:{}: {}",
            path.display(),
            e.line,
            e.column,
            e.message
        ));
    }
    out
}

/// Reads, parses and compiles a rule file (at most [`MAX_RULE_FILE`]
/// bytes of UTF-8); `bodyFile://` paths are read below the file's folder.
pub fn load_file(path: &Path) -> Result<RuleSet, LoadError> {
    load_file_in(path, &FileRoot::for_rules(None, Some(path)))
}

/// [`load_file`], with `bodyFile://` paths read below `files`' folder.
pub fn load_file_in(path: &Path, files: &FileRoot) -> Result<RuleSet, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_RULE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_RULE_FILE {
        return Err(read_err(std::io::Error::other("larger than 64 MiB")));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "not UTF-8 (first bad byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        ))
    })?;
    compile(&text, files).map_err(|errors| LoadError::Invalid {
        path: path.to_owned(),
        errors,
    })
}

/// A loaded rule file, as the proxy holds it (behind an `Arc`, swapped
/// whole on reload).
#[derive(Debug, Clone)]
pub struct Rules {
    pub set: RuleSet,
    /// Where the rules came from (the file's path).
    pub source: String,
    pub loaded_at: SystemTime,
}

impl Rules {
    pub fn load(path: &Path) -> Result<Rules, LoadError> {
        Ok(Rules {
            set: load_file(path)?,
            source: path.display().to_string(),
            loaded_at: SystemTime::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Answer, RuleId};

    #[test]
    fn parse_reports_every_error_in_line_order() {
        let text = "a.com status://999\n\nb.com\n# fine\nc.com 1.2.3.4:80 delay://x\n";
        let errors = parse(text).unwrap_err();
        let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(at, vec![(1, 16), (3, 1), (5, 26)]);
    }

    #[test]
    fn load_file_reads_body_files_next_to_the_rules() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("fx")).expect("mkdir");
        std::fs::write(dir.path().join("fx/a.json"), br#"{"ok":true}"#).expect("write");
        let rules = dir.path().join("rules.txt");
        std::fs::write(&rules, "api.test mock://200 bodyFile://fx/a.json\n").expect("write");
        let set = load_file(&rules).expect("loads");
        let ip = "127.0.0.1".parse().expect("ip");
        let plan = set.plan_url("GET", "http://api.test/", ip).expect("url");
        match plan.answer(false) {
            Some(Answer::Mock(m)) => {
                assert_eq!(&m.action.body[..], br#"{"ok":true}"#);
                assert_eq!(m.action.content_type, "application/json");
                assert_eq!(m.rule, RuleId(1));
            }
            other => panic!("expected a mock, got {other:?}"),
        }
    }

    #[test]
    fn load_errors_name_the_file_line_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = dir.path().join("rules.txt");
        std::fs::write(
            &rules,
            "# x\napi.test mock://200 bodyFile://missing.json\nb.test nope://1\n",
        )
        .expect("write");
        let e = load_file(&rules).unwrap_err().to_string();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 2, "{e}");
        let shown = rules.display().to_string();
        assert!(
            lines[0].starts_with(&format!("{shown}:2:21: bodyFile ")),
            "{e}"
        );
        assert!(
            lines[1].starts_with(&format!("{shown}:3:8: unknown action")),
            "{e}"
        );
        let e = load_file(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(e, LoadError::Read { .. }), "{e}");
        std::fs::write(&rules, b"\xff\xfe").expect("write");
        assert!(load_file(&rules).unwrap_err().to_string().contains("UTF-8"));
    }
}
