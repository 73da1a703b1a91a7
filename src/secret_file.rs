//! Files that hold a secret (the admin token, the CA key): written whole
//! and private, read only when still private.
//!
//! Invariants: a secret file is created with mode 0600 (never chmod'ed
//! after: there is no moment when another user could read it), written to
//! a fresh temporary name, synced and renamed into place (a reader sees
//! the old contents or the new, never half), and never followed through
//! a symbolic link.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `contents` to `path` atomically, mode 0600. The caller holds
/// the folder's lock, so no other instance writes it meanwhile.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    // A leftover from a crashed start of this pid would make O_EXCL fail.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)?;
    if let Err(e) = f.write_all(contents).and_then(|_| f.sync_all()) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // rename(2) replaces a link at `path` itself, never what it points at.
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Why a secret file is not safe to use.
#[derive(Debug, thiserror::Error)]
pub enum NotPrivate {
    #[error("{path} is readable by other users (mode {mode:o}): run `chmod 600 {path}`")]
    Readable { path: String, mode: u32 },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Reads a secret file, refusing one that group or others may read.
/// `follow` allows a symbolic link (a file the user named) or refuses it
/// (a file in sluice's own folder).
pub fn read_private(path: &Path, follow: bool) -> Result<Vec<u8>, NotPrivate> {
    let shown = path.display().to_string();
    let io = |source| NotPrivate::Io {
        path: shown.clone(),
        source,
    };
    let flags = if follow { 0 } else { libc::O_NOFOLLOW };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    // The mode of the file opened, not of a name that may change meanwhile.
    let mode = f.metadata().map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(NotPrivate::Readable { path: shown, mode });
    }
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut out).map_err(io)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_are_0600_and_others_readable_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.pem");
        write_private(&p, b"secret").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_private(&p, false).unwrap(), b"secret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_private(&p, false).unwrap_err().to_string();
        assert!(
            e.contains("readable by other users") && e.contains("chmod 600"),
            "{e}"
        );
    }

    #[test]
    fn a_link_is_followed_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.pem");
        write_private(&p, b"secret").unwrap();
        let link = dir.path().join("link.pem");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(read_private(&link, false).is_err());
        assert_eq!(read_private(&link, true).unwrap(), b"secret");
    }
}
