//! `reseal hive ...` subcommands.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use reseal_hive::regfile::{RegEncoding, RegVersion, parse_reg};
use reseal_hive::{Hive, Sid};

use crate::output;

/// Hive subcommands.
#[derive(Subcommand)]
pub enum HiveCommand {
    /// Check a hive's structure; exit 1 when an error is found.
    Check {
        /// The hive file (logs beside it are replayed in memory if dirty).
        file: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// Print the report as JSON (one object, docs/report.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Print every key and value.
    Dump {
        /// The hive file.
        file: PathBuf,
        #[command(flatten)]
        open: OpenArgs,
        /// Print JSON (one object, docs/report.schema.json).
        #[arg(long)]
        json: bool,
    },
    /// Export a key and its subtree as a .reg file on standard output.
    Export {
        /// The hive file.
        file: PathBuf,
        /// Key path from the root (default: the root).
        key: Option<String>,
        #[command(flatten)]
        open: OpenArgs,
        /// Prefix for section paths, e.g. HKEY_LOCAL_MACHINE\SOFTWARE
        /// (default: paths from the root as \a\b).
        #[arg(long, default_value = "")]
        prefix: String,
        /// Write REGEDIT4 instead of version 5.00.
        #[arg(long)]
        regedit4: bool,
        /// Encode as UTF-16LE with a byte-order mark, as regedit does
        /// (default: UTF-8).
        #[arg(long)]
        utf16: bool,
    },
    /// Apply a .reg file to a hive and save it atomically.
    Import {
        /// The hive file.
        file: PathBuf,
        /// The .reg file (UTF-16LE or UTF-8, version 5.00 or REGEDIT4).
        regfile: PathBuf,
        /// Section prefix that maps to the hive's root, e.g.
        /// HKEY_LOCAL_MACHINE\SOFTWARE (default: paths relative to the root).
        #[arg(long)]
        prefix: Option<String>,
        /// Write the result here instead of replacing FILE.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Rewrite a domain (machine) SID everywhere in a hive: security
    /// descriptors, key names, value names and value data.
    RewriteSid {
        /// The hive file.
        file: PathBuf,
        /// The SID to replace, e.g. S-1-5-21-1-2-3 (account SIDs under it
        /// keep their RIDs).
        #[arg(long)]
        old: String,
        /// The SID to put in its place.
        #[arg(long)]
        new: String,
        /// Write the result here instead of replacing FILE.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Print every occurrence as JSON.
        #[arg(long)]
        json: bool,
        /// Print how long opening, rewriting and saving took (stderr).
        #[arg(long)]
        timings: bool,
    },
    /// Recover a dirty hive with its transaction logs into a clean file.
    Replay {
        /// The dirty hive (its .LOG/.LOG1/.LOG2 are found beside it).
        file: PathBuf,
        /// Where to write the recovered hive.
        #[arg(short, long)]
        output: PathBuf,
    },
}

impl HiveCommand {
    /// The command's name in JSON output.
    pub fn name(&self) -> &'static str {
        match self {
            HiveCommand::Check { .. } => "hive check",
            HiveCommand::Dump { .. } => "hive dump",
            HiveCommand::Export { .. } => "hive export",
            HiveCommand::Import { .. } => "hive import",
            HiveCommand::RewriteSid { .. } => "hive rewrite-sid",
            HiveCommand::Replay { .. } => "hive replay",
        }
    }

    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            HiveCommand::Check { json, .. }
            | HiveCommand::Dump { json, .. }
            | HiveCommand::RewriteSid { json, .. } => *json,
            _ => false,
        }
    }
}

/// How to open the hive.
#[derive(Args)]
pub struct OpenArgs {
    /// Open a dirty hive as it is, without replaying its logs (read-only).
    #[arg(long)]
    as_is: bool,
}

fn open(file: &PathBuf, args: &OpenArgs) -> Result<Hive> {
    Ok(if args.as_is {
        Hive::open_as_is(file)?
    } else {
        Hive::open(file)?
    })
}

/// Runs one hive subcommand.
pub fn run(cmd: HiveCommand) -> Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        HiveCommand::Check {
            file,
            open: o,
            json,
        } => {
            let hive = open(&file, &o)?;
            let report = hive.check();
            if json {
                let violations: Vec<_> = report
                    .violations
                    .iter()
                    .map(|v| {
                        serde_json::json!({
                            "offset": v.offset,
                            "rule": v.rule,
                            "severity": format!("{:?}", v.severity).to_lowercase(),
                            "message": v.message,
                        })
                    })
                    .collect();
                let doc = output::document(
                    "hive check",
                    serde_json::json!({
                    "file": file.display().to_string(),
                    "clean": report.is_clean(),
                    "keys": report.keys,
                    "values": report.values,
                    "security_cells": report.security_cells,
                    "replayed_logs": hive.open_info().replayed_logs,
                    "violations": violations,
                    }),
                );
                drop(out);
                output::print_json(&doc)?;
            } else {
                for v in &report.violations {
                    writeln!(out, "{v}")?;
                }
                let info = hive.open_info();
                if !info.replayed_logs.is_empty() {
                    writeln!(
                        out,
                        "replayed {} dirty page(s) from {}",
                        info.replayed_pages,
                        info.replayed_logs.join(", ")
                    )?;
                }
                writeln!(
                    out,
                    "{}: {} keys, {} values, {} security cells: {} error(s), {} warning(s)",
                    file.display(),
                    report.keys,
                    report.values,
                    report.security_cells,
                    report.errors().count(),
                    report.violations.len() - report.errors().count()
                )?;
            }
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        HiveCommand::Dump {
            file,
            open: o,
            json,
        } => {
            let dump = open(&file, &o)?.dump()?;
            if json {
                drop(out);
                output::print_json(&output::document(
                    "hive dump",
                    serde_json::json!({
                        "file": file.display().to_string(),
                        "result": dump,
                    }),
                ))?;
            } else {
                out.write_all(dump.to_text().as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        HiveCommand::Export {
            file,
            key,
            open: o,
            prefix,
            regedit4,
            utf16,
        } => {
            let hive = open(&file, &o)?;
            let version = if regedit4 {
                RegVersion::V4
            } else {
                RegVersion::V5
            };
            let w = hive.export_reg(key.as_deref().unwrap_or(""), &prefix, version)?;
            let enc = if utf16 {
                RegEncoding::Utf16Le
            } else {
                RegEncoding::Utf8
            };
            out.write_all(&w.finish(enc))?;
            Ok(ExitCode::SUCCESS)
        }
        HiveCommand::Import {
            file,
            regfile,
            prefix,
            output,
        } => {
            let bytes =
                std::fs::read(&regfile).with_context(|| format!("{}: read", regfile.display()))?;
            let doc = parse_reg(&regfile.display().to_string(), &bytes)?;
            let mut hive = Hive::open(&file)?;
            let stats = hive.import_reg(&doc, prefix.as_deref())?;
            let target = output.as_ref().unwrap_or(&file);
            hive.save_to(target)?;
            writeln!(
                out,
                "{}: {} key section(s), {} key deletion(s), {} value(s) set, {} value deletion(s)",
                target.display(),
                stats.keys,
                stats.keys_deleted,
                stats.values_set,
                stats.values_deleted
            )?;
            Ok(ExitCode::SUCCESS)
        }
        HiveCommand::RewriteSid {
            file,
            old,
            new,
            output,
            json,
            timings,
        } => {
            let old: Sid = old.parse()?;
            let new: Sid = new.parse()?;
            let t0 = Instant::now();
            let mut hive = Hive::open(&file)?;
            let t1 = Instant::now();
            let report = hive.rewrite_sids(&old, &new)?;
            let t2 = Instant::now();
            let target = output.as_ref().unwrap_or(&file);
            hive.save_to(target)?;
            if timings {
                let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1000.0;
                eprintln!(
                    "timings: open {:.1} ms, rewrite {:.1} ms, check+save {:.1} ms",
                    ms(t0, t1),
                    ms(t1, t2),
                    ms(t2, Instant::now())
                );
            }
            if json {
                drop(out);
                output::print_json(&output::document(
                    "hive rewrite-sid",
                    serde_json::json!({
                        "file": file.display().to_string(),
                        "output": target.display().to_string(),
                        "old": old.to_string(),
                        "new": new.to_string(),
                        "result": report,
                    }),
                ))?;
            } else {
                writeln!(
                    out,
                    "{}: {} occurrence(s) of {old}: {} descriptor(s), {} key name(s), {} value name(s), {} value data",
                    target.display(),
                    report.occurrences.len(),
                    report.descriptors,
                    report.key_names,
                    report.value_names,
                    report.value_data
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        HiveCommand::Replay { file, output } => {
            let hive = Hive::open(&file)?;
            hive.save_to(&output)?;
            let info = hive.open_info();
            if info.replayed_logs.is_empty() {
                writeln!(
                    out,
                    "{}: hive was clean; written to {}",
                    file.display(),
                    output.display()
                )?;
            } else {
                writeln!(
                    out,
                    "{}: replayed {} dirty page(s) from {}; written to {}",
                    file.display(),
                    info.replayed_pages,
                    info.replayed_logs.join(", "),
                    output.display()
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
