//! The `sluice` command: parse flags, build the configuration, run; or ask
//! a running instance (`doctor`, `top`).

use clap::{Parser, Subcommand};
use sluice::cli::{DoctorArgs, TopArgs};
use sluice::config::{Config, RunArgs};

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
}

fn main() {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Run(args)) => *args,
        Some(Command::Doctor(args)) => std::process::exit(sluice::cli::doctor(args)),
        Some(Command::Top(args)) => std::process::exit(sluice::cli::top(args)),
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
