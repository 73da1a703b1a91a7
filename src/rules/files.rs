//! Files that rule actions read (`bodyFile://`), confined to one folder.
//!
//! [`FileRoot`] owns the confinement: the folder is `--mock-dir` when set,
//! else the rule file's folder; rules installed through the API with
//! neither have no folder, and a file action is then an error.
//!
//! Invariants:
//! - a path is relative, with no `..` (checked when the rule is parsed,
//!   so the error has its line and column);
//! - it is opened one component at a time from the folder, each with
//!   `O_NOFOLLOW`, so no symlink (at any depth) leads out of it, and a
//!   rename racing with the open cannot either;
//! - the file is opened `O_NONBLOCK` and must be a regular file (checked
//!   with `fstat` on the open descriptor, not on the path), so a FIFO or a
//!   device never blocks the compile, which holds the rules write lock;
//! - at most [`MAX_BODY`] bytes are read, checked on the open descriptor.
//!
//! Reading happens when the rules compile, which always runs on a blocking
//! thread (start-up, reload, `PUT` and validate), never on a proxy worker.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

use super::actions::MAX_BODY;

/// The folder file actions read from, or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRoot {
    dir: Option<PathBuf>,
}

impl FileRoot {
    /// File actions read below `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> FileRoot {
        let dir: PathBuf = dir.into();
        // A rule file given as a bare name has "" as its parent.
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        FileRoot { dir: Some(dir) }
    }

    /// No folder: every file action is refused.
    pub fn none() -> FileRoot {
        FileRoot { dir: None }
    }

    /// `mock_dir` when set, else the folder of `rule_file`, else none.
    pub fn for_rules(mock_dir: Option<&Path>, rule_file: Option<&Path>) -> FileRoot {
        match (mock_dir, rule_file) {
            (Some(d), _) => FileRoot::new(d),
            (None, Some(f)) => FileRoot::new(f.parent().unwrap_or(Path::new(""))),
            (None, None) => FileRoot::none(),
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Reads `rel` (already checked by [`check_relative`]) below the
    /// folder; the error is the message for the rule.
    pub fn read(&self, rel: &Path) -> Result<Bytes, String> {
        let shown = rel.display();
        let Some(dir) = &self.dir else {
            return Err(format!(
                "bodyFile {shown}: these rules have no folder to read files from \
                 (they did not come from a rule file): start sluice with --mock-dir DIR"
            ));
        };
        let fail = |e: std::io::Error| format!("bodyFile {shown} (in {}): {e}", dir.display());
        let file = open_beneath(dir, rel).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => format!(
                "bodyFile {shown}: a symlink is on the path; files must be inside {} \
                 and symlinks are not followed",
                dir.display()
            ),
            _ => fail(e),
        })?;
        let meta = file.metadata().map_err(fail)?;
        if !meta.is_file() {
            return Err(format!("bodyFile {shown} is not a regular file"));
        }
        let over = || format!("bodyFile {shown} is over the 16 MiB limit");
        if meta.len() > MAX_BODY as u64 {
            return Err(over());
        }
        let mut buf = Vec::with_capacity(meta.len() as usize);
        file.take(MAX_BODY as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(fail)?;
        if buf.len() > MAX_BODY {
            return Err(over());
        }
        Ok(Bytes::from(buf))
    }
}

/// Why a file action's path is refused before anything is opened.
pub(crate) fn check_relative(path: &Path) -> Result<(), String> {
    if path.has_root() {
        return Err(format!(
            "`{}` must be relative to the mock folder (--mock-dir, or the rule file's folder)",
            path.display()
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "`..` is not allowed in `{}`: files must be inside the mock folder",
            path.display()
        ));
    }
    if !path.components().any(|c| matches!(c, Component::Normal(_))) {
        return Err(format!("`{}` names no file", path.display()));
    }
    Ok(())
}

/// Opens `rel` below `dir`, one component at a time, refusing symlinks
/// and never blocking on the final open.
fn open_beneath(dir: &Path, rel: &Path) -> std::io::Result<File> {
    let mut current = open_at(None, dir.as_os_str().as_bytes(), libc::O_DIRECTORY)?;
    let names: Vec<&[u8]> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes()),
            _ => None,
        })
        .collect();
    let Some((last, folders)) = names.split_last() else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    for name in folders {
        current =
            open_at(Some(&current), name, libc::O_DIRECTORY | libc::O_NOFOLLOW).map_err(|e| {
                // O_DIRECTORY|O_NOFOLLOW on a symlink says "not a directory".
                if e.raw_os_error() == Some(libc::ENOTDIR) && is_symlink_at(&current, name) {
                    std::io::Error::from_raw_os_error(libc::ELOOP)
                } else {
                    e
                }
            })?;
    }
    let fd = open_at(
        Some(&current),
        last,
        libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
    )?;
    Ok(File::from(fd))
}

/// Whether `name` in `dir` is a symlink (for the error message only).
fn is_symlink_at(dir: &OwnedFd, name: &[u8]) -> bool {
    let Ok(name) = CString::new(name) else {
        return false;
    };
    // SAFETY: a zeroed `stat` is a valid out-buffer; `name` outlives the
    // call and `dir` is a descriptor we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    rc == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFLNK
}

fn open_at(dir: Option<&OwnedFd>, name: &[u8], flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let name = CString::new(name)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: `name` is a valid NUL-terminated string that outlives the
    // call and `dirfd` is either AT_FDCWD or a descriptor we own.
    let fd = unsafe {
        libc::openat(
            dirfd,
            name.as_ptr(),
            flags | libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_relative_and_inside() {
        assert!(check_relative(Path::new("fx/a.json")).is_ok());
        assert!(check_relative(Path::new("./a.json")).is_ok());
        for bad in ["/etc/passwd", "../x", "fx/../../x", ".", ""] {
            assert!(check_relative(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_regular_files_and_refuses_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = FileRoot::new(dir.path());
        std::fs::create_dir(dir.path().join("fx")).expect("mkdir");
        std::fs::write(dir.path().join("fx/a.json"), b"{}").expect("write");
        assert_eq!(
            &root.read(Path::new("fx/a.json")).expect("reads")[..],
            b"{}"
        );

        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), b"s").expect("write");
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link"))
            .expect("symlink");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).expect("symlink");
        let e = root.read(Path::new("link")).unwrap_err();
        assert!(e.contains("symlink"), "{e}");
        let e = root.read(Path::new("out/secret")).unwrap_err();
        assert!(e.contains("symlink"), "{e}");

        let fifo = dir.path().join("fifo");
        let c = CString::new(fifo.as_os_str().as_bytes()).expect("cstring");
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = root.read(Path::new("fifo")).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        let e = root.read(Path::new("fx")).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");

        let e = FileRoot::none().read(Path::new("fx/a.json")).unwrap_err();
        assert!(e.contains("--mock-dir"), "{e}");
    }
}
