//! The `reseal` command line: flags and glue only; all logic lives in the
//! `reseal` and `reseal-hive` libraries.
//!
//! Exit codes: 0 success, 1 problems found (for example `hive check`
//! violations), 2 bad input or failure.
#![forbid(unsafe_code)]

mod hive_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Generalize Windows images offline.
#[derive(Parser)]
#[command(name = "reseal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect, check, export, import and recover registry hive files.
    #[command(subcommand)]
    Hive(hive_cmd::HiveCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Hive(c) => hive_cmd::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("reseal: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
