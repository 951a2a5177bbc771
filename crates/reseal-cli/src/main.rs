//! The `reseal` command line: flags and glue only; all logic lives in the
//! `reseal` and `reseal-hive` libraries.
//!
//! Exit codes: 0 done (or nothing to do), 1 refused by preflight or
//! problems found (`hive check`), 2 bad usage or bad input, 3 internal
//! error (a failed commit or check; the image is left as it was).
#![forbid(unsafe_code)]

mod generalize_cmd;
mod hive_cmd;
mod personalize_cmd;
mod stamp_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use reseal::ResealError;

/// Generalize Windows images offline, as `sysprep /generalize` would,
/// without booting them.
#[derive(Parser)]
#[command(name = "reseal", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generalize every Windows installation of an image (a directory
    /// holding a Windows root, a WIM, or a disk image). Exit 0 done or nothing to do, 1 refused by
    /// preflight, 2 bad usage or input, 3 internal error.
    Generalize(generalize_cmd::GeneralizeArgs),
    /// Describe the Windows installations of an image and the preflight
    /// findings, without changing anything.
    Inspect(generalize_cmd::InspectArgs),
    /// List the operations with their default and description.
    ListOperations,
    /// Give one copy of a generalized image (directory or disk image) its
    /// own machine SID everywhere, computer name and MachineGuid, in place.
    /// Exit 0 done, 1 refused (not generalized), 2 bad input, 3 internal
    /// error.
    Personalize(personalize_cmd::PersonalizeArgs),
    /// Make N clones of a generalized image (linked clones of VHD, VHDX and
    /// qcow2 disks; copies of directories, raw and VMDK), each with its own
    /// machine SID, computer name (also in the answer file's specialize
    /// pass) and MachineGuid, in parallel; the image is only read.
    Stamp(stamp_cmd::StampArgs),
    /// Inspect, check, export, import and recover registry hive files.
    #[command(subcommand)]
    Hive(hive_cmd::HiveCommand),
}

/// Checks, before an image is touched, that `--report FILE` can be
/// written (its folder exists and is writable); bad input otherwise.
pub fn check_report_path(p: &std::path::Path) -> anyhow::Result<()> {
    let exists = p.exists();
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(p)
        .map_err(|e| ResealError::InvalidInput {
            what: p.display().to_string(),
            message: format!("--report: cannot write the report file ({e})"),
        })?;
    if !exists {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

fn exit_code_for(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ResealError>() {
        Some(ResealError::Refused { .. }) => 1,
        Some(
            ResealError::CommitFailed { .. }
            | ResealError::CheckFailed { .. }
            | ResealError::SidLeftover { .. }
            | ResealError::Io { .. },
        ) => 3,
        _ => 2,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generalize(a) => generalize_cmd::run_generalize(a),
        Command::Inspect(a) => generalize_cmd::run_inspect(a),
        Command::ListOperations => generalize_cmd::run_list_operations(),
        Command::Hive(c) => hive_cmd::run(c),
        Command::Personalize(a) => personalize_cmd::run_personalize(a),
        Command::Stamp(a) => stamp_cmd::run_stamp(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("reseal: error: {e:#}");
            ExitCode::from(exit_code_for(&e))
        }
    }
}
