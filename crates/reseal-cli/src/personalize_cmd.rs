//! `reseal personalize`: one copy of a generalized image gets its own
//! machine identity, in place.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use reseal::ResealError;
use reseal::image::ImageKind;
use reseal::personalize::{PersonalizeOptions, personalize};

use crate::generalize_cmd::{parse_format, parse_sid};
use crate::output;
use crate::progress_bar::{PhaseSpinner, ProgressMode};

/// Flags of `reseal personalize`.
#[derive(Args)]
pub struct PersonalizeArgs {
    /// The copy to personalize, changed in place: a directory holding a
    /// Windows root or a disk image (raw, VHD, VHDX, qcow2, VMDK),
    /// recognised by its content.
    path: PathBuf,
    /// Its computer name (NetBIOS: 1-15 characters), set in SYSTEM,
    /// SECURITY and the answer file's specialize pass; default: unchanged.
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Its new machine SID (S-1-5-21-x-y-z) instead of a random one.
    #[arg(long, value_name = "SID", value_parser = parse_sid, conflicts_with = "seed")]
    sid: Option<String>,
    /// Derive the random choices (SID, MachineGuid) from this number, so
    /// that a pipeline can reproduce them.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Disk images only: the partition to personalize (from 1); default:
    /// every NTFS partition holding Windows, each with its own SID.
    #[arg(long, value_name = "N")]
    partition: Option<u32>,
    /// The image's format, when its content should not decide.
    #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
    format: Option<ImageKind>,
    /// Personalize even an image that is not generalized.
    #[arg(long)]
    force: bool,
    /// Plan and report only; the image is not changed.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON on standard output (one object,
    /// docs/report.schema.json).
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// When to draw the phase the run is in on standard error: `auto`
    /// (when it is a terminal), `always` or `never`; never with --json,
    /// -q or -v.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ProgressMode::Auto, hide = true)]
    progress: ProgressMode,
}

/// Runs `reseal personalize`.
pub fn run_personalize(a: PersonalizeArgs, quiet: bool) -> Result<ExitCode> {
    let opts = PersonalizeOptions {
        name: a.name.clone(),
        sid: match &a.sid {
            Some(s) => Some(s.parse().map_err(|e| ResealError::InvalidInput {
                what: format!("--sid {s}"),
                message: format!("{e}"),
            })?),
            None => None,
        },
        seed: a.seed,
        force: a.force,
        dry_run: a.dry_run,
        partition: a.partition,
    };
    if let Some(p) = &a.report {
        crate::check_report_path(p)?;
    }
    let kind = crate::generalize_cmd::image_kind(&a.path, a.format)?;
    let results = {
        let spinner = PhaseSpinner::for_stderr(a.progress, a.json || quiet, "personalize");
        let _s = tracing::info_span!("personalize").entered();
        let r = personalize(&a.path, Some(kind), &opts);
        drop(spinner);
        r?
    };
    let doc = output::document(
        "personalize",
        serde_json::json!({
            "input": a.path.display().to_string(),
            "format": kind.name(),
            "dry_run": a.dry_run,
            "results": results,
        }),
    );
    output::write_report(a.report.as_deref(), &output::to_text(&doc)?, !a.dry_run)?;
    if a.json {
        output::print_json(&doc)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    for r in &results {
        writeln!(out, "{}", r.path.display())?;
        if !r.name.is_empty() {
            writeln!(out, "  computer name  {}", r.name)?;
        }
        for s in &r.sid {
            writeln!(out, "  machine SID    {} -> {}", s.old, s.new)?;
        }
        writeln!(out, "  MachineGuid    {}", r.machine_guid)?;
        for f in &r.answer_files {
            writeln!(out, "  answer file    {} {}", f.path, f.action)?;
        }
        writeln!(
            out,
            "  {} edit(s){}, {} file change(s)",
            r.edits.len(),
            if r.dry_run { " planned" } else { "" },
            r.files_changed
        )?;
        for n in &r.not_done {
            writeln!(out, "  note [{}]: {}", n.operation, n.message)?;
        }
    }
    writeln!(
        out,
        "outcome: {}",
        if a.dry_run {
            "planned (dry run, nothing written)"
        } else {
            "personalized"
        }
    )?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
