//! Diagnostics: `-q`, `-v` (repeatable), `--log-file FILE` and the
//! `RESEAL_LOG` filter, through `tracing`.
//!
//! Messages go to standard error (never standard output, which carries the
//! results). The level follows the flags: `-q` errors only, default
//! warnings, `-v` the phases of a run with their durations, `-vv` debug,
//! `-vvv` trace. `RESEAL_LOG` takes a `tracing` filter
//! (`RESEAL_LOG=reseal=debug,info`) and overrides the flags. `--log-file`
//! also appends every message at debug level or above (or as
//! `RESEAL_LOG` says) to a file, without colours.

use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Result;
use clap::{ArgAction, Args};
use reseal::ResealError;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::prelude::*;

/// Name of the environment variable holding a log filter.
pub const ENV: &str = "RESEAL_LOG";

/// The global flags that set what is logged.
#[derive(Args, Debug, Default)]
pub struct LogArgs {
    /// Print nothing but errors and the results: no warnings, no progress.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Say more on standard error: -v the phases of a run and how long each
    /// took, -vv debug, -vvv trace (RESEAL_LOG overrides it).
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Also append the log (debug level, or as RESEAL_LOG says) to this
    /// file.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

impl LogArgs {
    /// The level the flags ask for on standard error.
    pub fn level(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info",
            (false, 2) => "debug",
            _ => "trace",
        }
    }
}

/// The filter of one output: `RESEAL_LOG` when set, `default` otherwise.
fn filter(default: &str) -> Result<EnvFilter> {
    match std::env::var(ENV) {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(&spec).map_err(|e| {
            ResealError::InvalidInput {
                what: ENV.to_string(),
                message: format!("not a log filter ({e}); e.g. RESEAL_LOG=reseal=debug"),
            }
            .into()
        }),
        _ => Ok(EnvFilter::new(default)),
    }
}

/// Installs the subscriber for the whole run.
pub fn init(args: &LogArgs) -> Result<()> {
    let stderr_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_span_events(FmtSpan::CLOSE)
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter(args.level())?);
    let file_layer = match &args.log_file {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| ResealError::InvalidInput {
                    what: p.display().to_string(),
                    message: format!("--log-file: cannot write the log file ({e})"),
                })?;
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(Mutex::new(f))
                    .with_ansi(false)
                    .with_span_events(FmtSpan::CLOSE)
                    .log_internal_errors(false)
                    .with_filter(filter("debug")?),
            )
        }
        None => None,
    };
    let phases =
        crate::progress_bar::PhaseLayer.with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(file_layer)
        .with(phases)
        .try_init();
    Ok(())
}
