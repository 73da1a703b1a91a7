//! `sluice ca`: the CA a person is asked to trust, without a running
//! instance. Prints where the certificate is, its SHA-256 fingerprint,
//! subject and validity; `--export` writes the certificate (PEM, or DER
//! with `--der`) to stdout. A data folder without a CA gets one, made as
//! the proxy would make it on its first start.
//!
//! Invariants: the key is never printed or exported; a data folder is
//! written only under its lock ([`DataDirLock`]); when a running
//! instance holds that lock its CA already exists and is only read
//! (loading never writes when both files are there); a CA that the proxy
//! would refuse (a key others may read, half a pair, a key that does not
//! match) is refused here with the same message.
//!
//! Exit codes: 0 done, 1 the CA cannot be loaded or written, 2 wrong use.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

use crate::config::DataDir;
use crate::record::store::{DataDirLock, StoreError};
use crate::tls::{Ca, CaSource};

/// How long `sluice ca` waits for an instance that holds the data folder
/// (and is making its CA) to finish writing it.
const WAIT_FOR_INSTANCE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Args)]
pub struct CaArgs {
    /// The data folder holding ca.pem and ca-key.pem, as the proxy's
    /// [default: the user's data directory, e.g. ~/.local/share/sluice].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// A team CA's certificate (with --ca-key), instead of the data folder's.
    #[arg(long, value_name = "FILE", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The team CA's private key (PEM, mode 0600; checked, never shown).
    #[arg(long, value_name = "FILE", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Write the certificate (PEM) to stdout instead of the summary.
    #[arg(long)]
    pub export: bool,
    /// With --export: the DER bytes instead of PEM (Android, Windows, Java).
    #[arg(long, requires = "export")]
    pub der: bool,
}

/// Why `sluice ca` stops.
#[derive(Debug, thiserror::Error)]
enum CaCommandError {
    #[error("{0}")]
    Ca(#[from] crate::tls::CaError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "data dir {} is in use by sluice pid {pid} and has no complete CA yet \
         (it makes one at its start): run `sluice ca` again once it is listening",
        dir.display()
    )]
    Busy { dir: PathBuf, pid: String },
    #[error(
        "--data-dir :memory: keeps the CA in the running instance's memory only: fetch it \
         from its admin server (http://ADMIN/ca.pem) or through its proxy \
         (http://sluice.invalid/ca.pem)"
    )]
    Memory,
    #[error("{0}")]
    Usage(String),
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
}

impl CaCommandError {
    fn code(&self) -> i32 {
        match self {
            CaCommandError::Memory | CaCommandError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Runs `sluice ca`; returns the exit code.
pub fn ca(args: CaArgs) -> i32 {
    match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("sluice ca: {e}");
            e.code()
        }
    }
}

fn run(args: &CaArgs) -> Result<(), CaCommandError> {
    if args.der && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(CaCommandError::Usage(
            "--export --der writes binary: redirect it to a file (> sluice-ca.der)".into(),
        ));
    }
    let data_dir = match args.data_dir.as_deref().map(str::trim) {
        None => DataDir::Path(crate::config::default_data_dir()),
        Some("") => return Err(CaCommandError::Usage("--data-dir needs a folder".into())),
        Some(":memory:") => DataDir::Memory,
        Some(d) => DataDir::Path(PathBuf::from(d)),
    };
    let source =
        crate::tls::ca_source_of(args.ca_cert.as_deref(), args.ca_key.as_deref(), &data_dir)
            .map_err(CaCommandError::Usage)?;
    let (ca, key_path) = match &source {
        CaSource::Memory => return Err(CaCommandError::Memory),
        CaSource::Files { key, .. } => (Ca::load(&source)?, key.clone()),
        CaSource::Dir(dir) => (load_dir(dir)?, dir.join(crate::tls::ca::CA_KEY_FILE)),
    };
    let mut out = std::io::stdout().lock();
    let written = if args.export && args.der {
        out.write_all(ca.cert_der().as_ref())
    } else if args.export {
        out.write_all(ca.cert_pem().as_bytes())
    } else {
        out.write_all(summary(&ca, &key_path).as_bytes())
    };
    written
        .and_then(|_| out.flush())
        .map_err(CaCommandError::Stdout)
}

/// The data folder's CA, made under the folder's lock when it has none.
fn load_dir(dir: &Path) -> Result<Ca, CaCommandError> {
    let deadline = Instant::now() + WAIT_FOR_INSTANCE;
    loop {
        match DataDirLock::acquire(dir) {
            // Held until the pair is written (or read): no instance starts
            // on this folder meanwhile.
            Ok(_lock) => return Ok(Ca::load(&CaSource::Dir(dir.to_path_buf()))?),
            Err(StoreError::InUse { dir, pid }) => {
                // A running instance makes its CA right after taking the
                // lock (the key first, then the certificate). With both
                // files there loading only reads; with one, after the
                // wait, it says which is missing; with none it would
                // write, which only the holder of the lock may.
                let (cert, key) = present(&dir);
                let late = Instant::now() >= deadline;
                if (cert && key) || (late && (cert || key)) {
                    return Ok(Ca::load(&CaSource::Dir(dir))?);
                }
                if late {
                    return Err(CaCommandError::Busy { dir, pid });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether the certificate and the key are in `dir`.
fn present(dir: &Path) -> (bool, bool) {
    (
        dir.join(crate::tls::ca::CA_CERT_FILE).exists(),
        dir.join(crate::tls::ca::CA_KEY_FILE)
            .symlink_metadata()
            .is_ok(),
    )
}

/// What `sluice ca` prints.
fn summary(ca: &Ca, key_path: &Path) -> String {
    use std::fmt::Write;
    let s = ca.summary();
    let mut o = String::new();
    let cert = ca
        .cert_path()
        .map_or_else(|| "(in memory)".to_string(), |p| p.display().to_string());
    let _ = writeln!(o, "certificate: {cert}");
    let _ = writeln!(o, "SHA-256:     {}", s.sha256);
    let _ = writeln!(o, "subject:     {}", s.subject);
    let _ = writeln!(o, "not before:  {}", s.not_before);
    let _ = writeln!(o, "not after:   {}", s.not_after);
    let _ = writeln!(
        o,
        "key:         {} (mode 0600; never shown or served)",
        key_path.display()
    );
    if s.created {
        let _ = writeln!(o, "made now: a new CA for this data folder");
    }
    let _ = writeln!(
        o,
        "Clients trust this certificate to be intercepted: `sluice ca --export > sluice-ca.pem`, \
         or open the admin server's /ca page, or http://{}/ through the proxy.",
        crate::tls::TRUST_HOST
    );
    o
}
