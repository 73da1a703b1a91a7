//! The admin token's life outside the server: made at start from the
//! operating system's CSPRNG, written to `<data-dir>/admin.token`, read
//! back by the CLI commands.
//!
//! Invariants: the file is created with mode 0600 (never chmod'ed after:
//! there is no moment when another user could read it), written to a
//! fresh temporary name and renamed into place (a reader sees the old
//! token or the new one, never half of one), and never followed through a
//! symbolic link. The token never reaches a log line.

use std::path::{Path, PathBuf};

use crate::config::ADMIN_TOKEN_FILE;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot make a random admin token: {0}")]
    Random(String),
    #[error("cannot write the admin token file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// 32 random bytes, hex: 256 bits, safe in a URL, a header and a cookie.
pub fn random_hex(bytes: usize) -> Result<String, TokenError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A fresh admin token.
pub fn generate() -> Result<String, TokenError> {
    random_hex(32)
}

/// Where the generated token lives in a data folder.
pub fn file_in(dir: &Path) -> PathBuf {
    dir.join(ADMIN_TOKEN_FILE)
}

/// Writes `token` to `<dir>/admin.token` atomically, mode 0600. The caller
/// holds the data folder's lock, so no other instance writes it meanwhile.
pub fn write(dir: &Path, token: &str) -> Result<PathBuf, TokenError> {
    let path = file_in(dir);
    crate::secret_file::write_private(&path, format!("{token}\n").as_bytes()).map_err(
        |source| TokenError::Write {
            path: path.clone(),
            source,
        },
    )?;
    Ok(path)
}

/// The token in `<dir>/admin.token`, if there is a readable one.
pub fn read(dir: &Path) -> Option<String> {
    read_file(&file_in(dir)).ok()
}

/// The token a file holds (trimmed), or why it could not be read.
pub fn read_file(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let t = text.trim();
    if t.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    Ok(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tokens_are_random_hex_of_256_bits() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn the_file_is_0600_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "first-token-0123456789").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write(dir.path(), "second-token-0123456789").unwrap();
        assert_eq!(read(dir.path()).unwrap(), "second-token-0123456789");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
    }
}
