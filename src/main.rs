//! The `sluice` command: parse flags, build the configuration, run; or ask
//! a running instance (`doctor`, `top`, `records`, `har`); or show the CA
//! (`ca`).

use clap::{Parser, Subcommand};
use sluice::cli::{DoctorArgs, TopArgs};
use sluice::cli_ca::CaArgs;
use sluice::cli_records::{HarArgs, RecordsArgs};
use sluice::config::{Config, RunArgs};

// mimalloc: per-thread free lists make the many small allocations of
// request handling, and records freed on the writer thread after being
// built on a worker, cheaper than glibc's arenas (measured: bench/run.sh R).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc asks for
/// them on its arena, so every 64 KiB page it touches in a fresh 2 MiB
/// region made 2 MiB resident: 16 MiB of RSS at idle for 3 MiB of heap
/// (measured with `MIMALLOC_SHOW_STATS=1`), and an RSS that says little
/// about what the proxy holds. A proxy's heap is too small for the TLB
/// savings to show. Failure (an old kernel) only leaves them on.
fn no_huge_pages() {
    // SAFETY: prctl with integer arguments; it changes only this process's
    // THP policy for later page faults.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Leak-proof traffic relay and debugging proxy",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default when no command is given).
    Run(Box<RunArgs>),
    /// Check a running instance for orphan and timer-less sockets
    /// (exit 0 healthy, 1 leak suspected, 2 unreachable).
    Doctor(DoctorArgs),
    /// Show a running instance's live figures once a second.
    Top(TopArgs),
    /// List a running instance's recorded exchanges, newest first
    /// (exit 1 on an error answer, 2 unreachable).
    Records(RecordsArgs),
    /// Write a running instance's records as a HAR 1.2 file to stdout
    /// (exit 1 on an error answer, 2 unreachable).
    Har(HarArgs),
    /// Show the CA clients trust to be intercepted: path, SHA-256
    /// fingerprint, subject, validity; `--export` writes the certificate
    /// (never the key). Makes the data folder's CA when it has none.
    Ca(CaArgs),
    /// Work with tamper-rule files offline.
    #[command(subcommand)]
    Rules(RulesCommand),
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate a rule file: prints `FILE: N rules OK` (exit 0) or each
    /// error as `FILE:LINE:COL: message` (exit 1).
    Check { file: std::path::PathBuf },
    /// Show which rules of a file a request would meet and what each
    /// would do (exit 0 matched, 1 no match, 2 bad file or URL).
    Test {
        file: std::path::PathBuf,
        /// `http://host/path?query`, or `host:port` with `--method CONNECT`.
        url: String,
        #[arg(long, default_value = "GET")]
        method: String,
        /// The client address the request comes from (for `client:`).
        #[arg(long, default_value = "127.0.0.1")]
        client: std::net::IpAddr,
    },
}

fn main() {
    no_huge_pages();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Run(args)) => *args,
        Some(Command::Doctor(args)) => std::process::exit(sluice::cli::doctor(args)),
        Some(Command::Top(args)) => std::process::exit(sluice::cli::top(args)),
        Some(Command::Records(args)) => std::process::exit(sluice::cli_records::records(args)),
        Some(Command::Har(args)) => std::process::exit(sluice::cli_records::har(args)),
        Some(Command::Ca(args)) => std::process::exit(sluice::cli_ca::ca(args)),
        Some(Command::Rules(RulesCommand::Check { file })) => {
            std::process::exit(sluice::rules::cli_check(&file))
        }
        Some(Command::Rules(RulesCommand::Test {
            file,
            url,
            method,
            client,
        })) => std::process::exit(sluice::rules::cli_test(&file, &method, &url, client)),
        None => cli.run,
    };
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice: {e}");
            std::process::exit(2);
        }
    };
    std::process::exit(sluice::run(config));
}
