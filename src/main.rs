//! The `sluice` command: parse flags, build the configuration, run.

use clap::{Parser, Subcommand};
use sluice::config::{Config, RunArgs};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Leak-proof traffic relay and debugging proxy"
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
    Run(RunArgs),
}

fn main() {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Run(args)) => args,
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
