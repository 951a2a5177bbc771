//! The `reseal` command line: flags and glue only; all logic lives in the
//! `reseal` and `reseal-hive` libraries.
//!
//! Exit codes: 0 done (or nothing to do; also when standard output was
//! closed early, as by `| head`), 1 refused by preflight or problems found
//! (`hive check`), 2 bad usage or bad input, 3 internal error (a failed
//! commit or check, a report that could not be written, a bug).
#![forbid(unsafe_code)]

mod docs_cmd;
mod generalize_cmd;
mod hive_cmd;
mod logging;
mod output;
mod personalize_cmd;
mod progress_bar;
mod stamp_cmd;
mod versions;

use std::ffi::OsString;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use reseal::ResealError;

/// Generalize Windows images offline, as `sysprep /generalize` would,
/// without booting them.
#[derive(Parser)]
#[command(name = "reseal", version)]
pub struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generalize every Windows installation of an image (a directory
    /// holding a Windows root, a WIM, or a disk image). Exit 0 done or
    /// nothing to do, 1 refused by preflight, 2 bad usage or input, 3
    /// internal error.
    Generalize(generalize_cmd::GeneralizeArgs),
    /// Describe the Windows installations of an image (every image of a
    /// WIM, every partition of a disk) and the preflight findings, without
    /// changing anything.
    Inspect(generalize_cmd::InspectArgs),
    /// List the operations with their default and description.
    ListOperations(generalize_cmd::ListOperationsArgs),
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
    /// Print a shell completion script (bash, zsh, fish, powershell) on
    /// standard output.
    Completions(docs_cmd::CompletionsArgs),
    /// Print the man page (roff) on standard output, or write one page per
    /// command into a folder.
    Man(docs_cmd::ManArgs),
}

impl Command {
    /// The command's name in JSON output (`hive dump`, ...).
    fn name(&self) -> &'static str {
        match self {
            Command::Generalize(_) => "generalize",
            Command::Inspect(_) => "inspect",
            Command::ListOperations(_) => "list-operations",
            Command::Personalize(_) => "personalize",
            Command::Stamp(_) => "stamp",
            Command::Hive(h) => h.name(),
            Command::Completions(_) => "completions",
            Command::Man(_) => "man",
        }
    }

    /// Whether `--json` was given.
    fn json(&self) -> bool {
        match self {
            Command::Generalize(a) => a.json,
            Command::Inspect(a) => a.json,
            Command::ListOperations(a) => a.json,
            Command::Personalize(a) => a.json,
            Command::Stamp(a) => a.json,
            Command::Hive(h) => h.json(),
            Command::Completions(_) | Command::Man(_) => false,
        }
    }
}

/// The command-line definition, with the run-time long version.
pub fn cli_command() -> clap::Command {
    // Built once per run; clap keeps `'static` strings.
    let long: &'static str = Box::leak(versions::long_version().into_boxed_str());
    Cli::command().long_version(long)
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

/// Writes to standard error, ignoring failure (a closed or full stderr
/// must not turn an error into a panic).
fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// A panic anywhere is an internal error (exit 3) with a message, never
/// Rust's exit 101; the message is written without panicking again.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".to_string());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        say(&format!(
            "reseal: internal error (a bug): {what}{place}; please report it with the command that failed"
        ));
    }));
}

fn main() -> ExitCode {
    install_panic_hook();
    let args: Vec<OsString> = std::env::args_os().collect();
    match std::panic::catch_unwind(AssertUnwindSafe(|| run(args))) {
        Ok(code) => code,
        Err(_) => ExitCode::from(output::EXIT_INTERNAL),
    }
}

fn run(args: Vec<OsString>) -> ExitCode {
    let json_asked = args.iter().any(|a| a == "--json");
    let matches = match cli_command().try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) => return usage_error(e, json_asked, &args),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return usage_error(e, json_asked, &args),
    };
    let command = cli.command.name();
    let json = cli.command.json();
    if let Err(e) = logging::init(&cli.log) {
        return fail(command, json, e);
    }
    // Debug builds only: lets the tests check that a panic becomes exit 3.
    #[cfg(debug_assertions)]
    if std::env::var_os("RESEAL_DEBUG_PANIC").is_some() {
        panic!("RESEAL_DEBUG_PANIC is set");
    }
    // No progress drawing where it would mix with log lines or is not
    // wanted.
    let quiet = cli.log.quiet
        || cli.log.verbose > 0
        || std::env::var_os(logging::ENV).is_some_and(|v| !v.is_empty());
    let started = std::time::Instant::now();
    let span = tracing::info_span!("reseal", command).entered();
    let result = match cli.command {
        Command::Generalize(a) => generalize_cmd::run_generalize(a, quiet),
        Command::Inspect(a) => generalize_cmd::run_inspect(a),
        Command::ListOperations(a) => generalize_cmd::run_list_operations(a),
        Command::Hive(c) => hive_cmd::run(c),
        Command::Personalize(a) => personalize_cmd::run_personalize(a, quiet),
        Command::Stamp(a) => stamp_cmd::run_stamp(a, quiet),
        Command::Completions(a) => docs_cmd::run_completions(a),
        Command::Man(a) => docs_cmd::run_man(a),
    };
    drop(span);
    tracing::info!(
        "{command} finished in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    match result {
        Ok(code) => code,
        Err(e) => fail(command, json, e),
    }
}

/// Reports an error (as JSON on stdout under `--json`, always as a line on
/// stderr) and gives its exit code; a closed stdout ends quietly.
fn fail(command: &str, json: bool, e: anyhow::Error) -> ExitCode {
    if output::is_broken_pipe(&e) {
        return ExitCode::SUCCESS;
    }
    tracing::debug!(error = %format!("{e:?}"), "failed");
    if json {
        let _ = output::print_json(&output::error_document(command, &e));
    }
    say(&format!("reseal: error: {e:#}"));
    ExitCode::from(output::exit_code(&e))
}

/// A command line clap rejects: exit 2 (JSON on stdout too under
/// `--json`); `--help` and `--version` print and exit 0.
fn usage_error(e: clap::Error, json: bool, args: &[OsString]) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if json {
        let command = args
            .get(1)
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut doc = output::envelope(&command);
        doc.insert(
            "error".into(),
            serde_json::json!({
                "kind": "usage",
                "message": e.render().to_string().trim_end(),
                "exit_code": output::EXIT_BAD_INPUT,
            }),
        );
        let _ = output::print_json(&serde_json::Value::Object(doc));
    }
    let _ = e.print();
    ExitCode::from(output::EXIT_BAD_INPUT)
}
