//! `reseal stamp`: unique clones of a generalized image.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use reseal::image::ImageKind;
use reseal::stamp::{CloneNames, DEFAULT_PATTERN, StampOptions, stamp};

use crate::generalize_cmd::parse_format;
use crate::output;
use crate::progress_bar::{Bar, ProgressMode};

/// Flags of `reseal stamp`.
#[derive(Args)]
pub struct StampArgs {
    /// The generalized image, only read: a directory holding a Windows
    /// root or a disk image (raw, VHD, VHDX, qcow2, VMDK), recognised by
    /// its content.
    path: PathBuf,
    /// Number of clones (may be left out with --names).
    #[arg(long, value_name = "N", required_unless_present = "names")]
    count: Option<usize>,
    /// Folder that receives the clones, each named as its computer name
    /// (plus the image's extension for disk images).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Computer name pattern such as WEB-{n:03}: the clone number from 1,
    /// zero-padded to 3 digits (without ":03", not padded)
    /// [default: CLONE-{n:03}].
    #[arg(long, value_name = "PATTERN", conflicts_with = "names")]
    name: Option<String>,
    /// Computer names, one per clone (comma-separated).
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    names: Option<Vec<String>>,
    /// Standalone copies instead of linked clones (VHD/VHDX differencing
    /// children, qcow2 overlays, whose parent is the image).
    #[arg(long)]
    full: bool,
    /// Derive every identity from this number, so that stamping is
    /// reproducible.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// The image's format, when its content should not decide.
    #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
    format: Option<ImageKind>,
    /// Stamp an image that is not generalized.
    #[arg(long)]
    force: bool,
    /// Print the report as JSON (one object, docs/report.schema.json).
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// When to draw the progress bar (clones finished) on standard error:
    /// `auto` (when it is a terminal), `always` or `never`; never with
    /// --json or -q.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ProgressMode::Auto, hide = true)]
    progress: ProgressMode,
}

/// Runs `reseal stamp`.
pub fn run_stamp(a: StampArgs, quiet: bool) -> Result<ExitCode> {
    if let Some(p) = &a.report {
        crate::check_report_path(p)?;
    }
    let names = match (a.names, a.name) {
        (Some(list), _) => CloneNames::List(list),
        (None, Some(p)) => CloneNames::Pattern(p),
        (None, None) => CloneNames::Pattern(DEFAULT_PATTERN.to_string()),
    };
    let count = match (&names, a.count) {
        (_, Some(n)) => n,
        (CloneNames::List(l), None) => l.len(),
        (CloneNames::Pattern(_), None) => 0,
    };
    let kind = crate::generalize_cmd::image_kind(&a.path, a.format)?;
    let mut opts = StampOptions::new(a.out, count, names);
    opts.seed = a.seed;
    opts.full = a.full;
    opts.kind = Some(kind);
    opts.force = a.force;
    let bar = Bar::for_stderr(a.progress, a.json || quiet);
    opts.progress = bar.as_ref().map(Bar::progress);
    let report = {
        let _s = tracing::info_span!("stamp", clones = count).entered();
        let r = stamp(&a.path, &opts);
        drop(bar);
        r.with_context(|| format!("stamping {}", a.path.display()))?
    };
    let doc = output::document(
        "stamp",
        serde_json::json!({
            "input": a.path.display().to_string(),
            "source": report.source,
            "format": report.format,
            "clones": report.clones,
        }),
    );
    // The image is only read; the clones exist.
    output::write_report(a.report.as_deref(), &output::to_text(&doc)?, false)?;
    if a.json {
        output::print_json(&doc)?;
    } else {
        let mut out = std::io::stdout().lock();
        for c in &report.clones {
            let sids: Vec<&str> = c.sid.iter().map(|s| s.new.as_str()).collect();
            writeln!(
                out,
                "{:<16} SID {}  MachineGuid {}  {} ({}, {} bytes allocated)",
                c.name,
                sids.join(","),
                c.machine_guid,
                c.file.display(),
                c.clone_kind,
                c.allocated_bytes
            )?;
            for a in &c.answer_files {
                writeln!(
                    out,
                    "{:<16} answer file {} {} (specialize ComputerName {})",
                    "", a.path, a.action, c.name
                )?;
            }
        }
        if let Some(c) = report.clones.first() {
            for n in &c.not_done {
                writeln!(out, "note [{}]: {}", n.operation, n.message)?;
            }
        }
        writeln!(
            out,
            "{} clone(s) stamped; each keeps its name through specialize (registry, SECURITY PolAcDmN and the answer file's ComputerName)",
            report.clones.len()
        )?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}
