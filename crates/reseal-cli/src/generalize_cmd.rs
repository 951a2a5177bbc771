//! `reseal generalize`, `reseal inspect`, `reseal list-operations`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use reseal::ResealError;
use reseal::backend::Backend;
use reseal::backend::dir::DirBackend;
use reseal::backend::disk::{DiskBackend, generalize_disk};
use reseal::backend::wim::{
    ImageSelector, WimBackend, generalize_all_images_with_progress, image_count,
};
use reseal::generalize::{generalize, inspect, select_operations};
use reseal::image::ImageKind;
use reseal::options::{GeneralizeOptions, Mode, Selection, SidChoice};
use reseal::report::{Outcome, RunReport};

#[path = "progress_bar.rs"]
mod progress_bar;
use progress_bar::{Bar, ProgressMode};

/// Exit code: refused by preflight.
pub const EXIT_REFUSED: u8 = 1;

/// Opens the image given on the command line. A path that is missing or
/// not a directory is bad input (exit 2), not an internal error.
fn open_root(path: &Path) -> Result<DirBackend> {
    DirBackend::open(path).map_err(|e| {
        let why = match &e {
            ResealError::Io { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        ResealError::InvalidInput {
            what: path.display().to_string(),
            message: format!(
                "not a directory holding a Windows root ({why}); give the folder that contains Windows\\System32\\config\\SYSTEM"
            ),
        }
        .into()
    })
}

/// Parses `--format`.
pub fn parse_format(s: &str) -> Result<ImageKind, String> {
    ImageKind::from_name(s).ok_or_else(|| {
        format!(
            "unknown format {s:?}; known: {}",
            ImageKind::names().join(", ")
        )
    })
}

/// The kind of the image on the command line, by content or as
/// `--format` forces; a path that is no image is bad input (exit 2).
pub fn image_kind(path: &Path, forced: Option<ImageKind>) -> Result<ImageKind> {
    reseal::image::resolve(path, forced).map_err(|e| match e {
        ResealError::Io { action, source, .. } => ResealError::InvalidInput {
            what: path.display().to_string(),
            message: format!("cannot {action} ({source})"),
        }
        .into(),
        other => other.into(),
    })
}

/// Opens a disk image given on the command line, read-only. A file that
/// cannot be read is bad input (exit 2), not an internal error.
fn open_disk(path: &Path, partition: Option<u32>) -> Result<DiskBackend> {
    DiskBackend::open(path, partition).map_err(|e| match e {
        ResealError::Io { action, source, .. } => ResealError::InvalidInput {
            what: path.display().to_string(),
            message: format!(
                "cannot {action} ({source}); expected a disk image (raw, VHD or VHDX) with an NTFS partition holding Windows"
            ),
        }
        .into(),
        other => other.into(),
    })
}

/// Opens one image of a WIM file given on the command line; a file wimlib
/// cannot open, or a missing image, is bad input (exit 2).
fn open_wim(
    path: &Path,
    index: Option<ImageSelector>,
    output: Option<PathBuf>,
) -> Result<WimBackend> {
    if let Some(out) = &output {
        reseal::backend::wim::refuse_output_onto_input(path, out)?;
    }
    let b = WimBackend::open(path, index.unwrap_or(ImageSelector::Index(1)))
        .map_err(|e| bad_wim(path, e))?;
    Ok(b.with_output(output))
}

/// A WIM that cannot be opened, or a missing image, is bad input (exit 2).
fn bad_wim(path: &Path, e: ResealError) -> anyhow::Error {
    {
        let message = match &e {
            ResealError::Io { source, action, .. } => format!(
                "cannot {action} ({source}); expected a WIM file (.wim, .esd) that wimlib can read, holding a Windows image"
            ),
            ResealError::InvalidInput { message, .. } => message.clone(),
            ResealError::DiskFormat {
                offset,
                what,
                expected,
                found,
                ..
            } => format!(
                "{what} at offset {offset}: expected {expected}, found {found}; expected a WIM file (.wim, .esd) whose resources lie within it"
            ),
            other => other.to_string(),
        };
        anyhow::Error::from(ResealError::InvalidInput {
            what: path.display().to_string(),
            message,
        })
    }
}

/// `--index`: one image (1-based index or name), or `all`.
#[derive(Clone, Debug)]
pub enum IndexArg {
    /// Every image, each generalized on its own.
    All,
    /// One image.
    One(ImageSelector),
}

impl std::str::FromStr for IndexArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.eq_ignore_ascii_case("all") {
            Ok(IndexArg::All)
        } else {
            s.parse().map(IndexArg::One)
        }
    }
}

/// Flags of `reseal generalize`.
#[derive(Args)]
pub struct GeneralizeArgs {
    /// The image, recognised by its content: a directory holding a Windows
    /// root, a WIM/ESD file (generalized in place by appending to it, or
    /// into --output), or a disk image (raw, VHD, VHDX, qcow2, VMDK),
    /// changed in place.
    path: PathBuf,
    /// The image's format, when its content should not decide: dir, wim,
    /// raw, vhd, vhdx, qcow2, vmdk.
    #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
    format: Option<ImageKind>,
    /// Disk images only: the partition to use (numbered as Linux does, from
    /// 1); default: the NTFS partition holding Windows.
    #[arg(long, value_name = "N")]
    partition: Option<u32>,
    /// WIM only: the image to generalize, by 1-based index or by name, or
    /// `all` (every image, each on its own).
    #[arg(long, value_name = "N|NAME|all")]
    index: Option<IndexArg>,
    /// WIM only: write the result (every image) to this new WIM file and
    /// leave the input unchanged.
    #[arg(long, value_name = "NEW.wim")]
    output: Option<PathBuf>,
    /// WIM only: rewrite the whole WIM (compacting it) instead of
    /// appending the changes to it.
    #[arg(long, conflicts_with = "output")]
    rebuild: bool,
    /// Arm the image to run specialize then OOBE on first boot (default).
    #[arg(long, conflicts_with = "audit")]
    oobe: bool,
    /// Arm the image to run specialize then audit mode on first boot.
    #[arg(long)]
    audit: bool,
    /// Sysprep's /mode:vm: the image will boot on the same virtual
    /// hardware; device instances are kept. Only "vm" is accepted.
    #[arg(long, value_parser = ["vm"])]
    mode: Option<String>,
    /// Keep device instances (as PnpSysprep PersistAllDeviceInstalls).
    #[arg(long)]
    persist_devices: bool,
    /// Answer file to place at Windows\Panther\unattend.xml (must be XML;
    /// passwords in it are never printed).
    #[arg(long, value_name = "FILE")]
    unattend: Option<PathBuf>,
    /// Plan and report only; the image is not changed.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON on standard output.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Proceed despite findings sysprep itself would reject (domain
    /// membership, per-user Appx packages, pending servicing, ...).
    /// Findings that make the result unsafe are never overridden.
    #[arg(long)]
    force: bool,
    /// Run exactly these operations (comma-separated; see list-operations).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["enable", "disable"])]
    operations: Option<Vec<String>>,
    /// Also run these operations (comma-separated).
    #[arg(long, value_delimiter = ',')]
    enable: Vec<String>,
    /// Do not run these operations (comma-separated).
    #[arg(long, value_delimiter = ',')]
    disable: Vec<String>,
    /// New machine SID (S-1-5-21-x-y-z, three 32-bit numbers) instead of a
    /// random one.
    #[arg(long, value_name = "SID", conflicts_with = "keep_sid", value_parser = parse_sid)]
    sid: Option<String>,
    /// Keep the machine SID (clones made from the image share it unless
    /// each is stamped with `reseal stamp`).
    #[arg(long)]
    keep_sid: bool,
    /// For tests only: derive the random choices (new machine SID) from
    /// this number, so that runs are reproducible.
    #[arg(long, value_name = "N", hide = true)]
    seed: Option<u64>,
    /// When to draw the progress bar of WIM writes on standard error:
    /// `auto` (when it is a terminal), `always` or `never`; never with
    /// --json.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = ProgressMode::Auto, hide = true)]
    progress: ProgressMode,
}

/// Checks the form of a `--sid` argument (that it differs from the image's
/// SID is checked when the image is read).
pub fn parse_sid(s: &str) -> Result<String, String> {
    reseal::ops::machine_sid::parse_machine_sid(s)
        .map(|sid| sid.to_string())
        .map_err(|e| e.to_string())
}

/// Runs `reseal generalize`.
pub fn run_generalize(a: GeneralizeArgs) -> Result<ExitCode> {
    let unattend = match &a.unattend {
        Some(p) => {
            // An answer file is a few KiB; 16 MiB is far beyond any real one.
            let bytes = reseal::backend::dir::read_regular_file(p, 16 << 20, "the answer file")?;
            Some((p.display().to_string(), bytes))
        }
        None => None,
    };
    let options = GeneralizeOptions {
        mode: if a.audit { Mode::Audit } else { Mode::Oobe },
        vm: a.mode.is_some(),
        persist_devices: a.persist_devices,
        unattend,
        force: a.force,
        dry_run: a.dry_run,
        selection: Selection {
            only: a.operations,
            enable: a.enable,
            disable: a.disable,
        },
        sid: match (a.sid, a.keep_sid) {
            (_, true) => SidChoice::Keep,
            (Some(s), false) => SidChoice::Given(s),
            (None, false) => SidChoice::Random,
        },
        seed: a.seed,
    };
    if let Some(p) = &a.report {
        crate::check_report_path(p)?;
    }
    let kind = image_kind(&a.path, a.format)?;
    let is_wim = kind == ImageKind::Wim;
    let is_disk = matches!(kind, ImageKind::Disk(_));
    if a.partition.is_some() && !is_disk {
        return Err(ResealError::InvalidInput {
            what: a.path.display().to_string(),
            message: format!("--partition applies to disk images only (this is {kind})"),
        }
        .into());
    }
    if !is_wim && (a.index.is_some() || a.output.is_some() || a.rebuild) {
        return Err(ResealError::InvalidInput {
            what: a.path.display().to_string(),
            message: format!(
                "--index, --output and --rebuild apply to WIM files (.wim, .esd) only (this is {kind})"
            ),
        }
        .into());
    }
    // Only WIM writes report progress; the bar ends its line when dropped,
    // before the report or an error is printed.
    let bar = if is_wim {
        Bar::for_stderr(a.progress, a.json)
    } else {
        None
    };
    let progress = bar.as_ref().map(Bar::progress);
    if is_wim && matches!(a.index, Some(IndexArg::All)) {
        let reports = generalize_all_images_with_progress(
            &a.path,
            a.output.clone(),
            a.rebuild,
            &options,
            progress,
        )
        .map_err(|e| match e {
            e @ (ResealError::Io { .. }
            | ResealError::InvalidInput { .. }
            | ResealError::DiskFormat { .. }) => bad_wim(&a.path, e),
            other => other.into(),
        });
        drop(bar);
        let reports = reports?;
        let json = serde_json::to_string_pretty(&reports)?;
        if let Some(p) = &a.report {
            std::fs::write(p, format!("{json}\n"))
                .with_context(|| format!("{}: write report", p.display()))?;
        }
        let mut out = std::io::stdout().lock();
        if a.json {
            writeln!(out, "{json}")?;
        } else {
            for (i, r) in (1..).zip(&reports) {
                writeln!(out, "== image {i} ==")?;
                out.write_all(r.to_text().as_bytes())?;
            }
        }
        return Ok(if reports.iter().any(|r| r.outcome == Outcome::Refused) {
            ExitCode::from(EXIT_REFUSED)
        } else {
            ExitCode::SUCCESS
        });
    }
    if is_disk && a.partition.is_none() {
        let mut reports = generalize_disk(&a.path, &options)?;
        if reports.len() == 1 {
            let (_, report) = reports.remove(0);
            return emit_report(&a.report, a.json, &report);
        }
        if reports.len() > 1 {
            let only: Vec<&RunReport> = reports.iter().map(|(_, r)| r).collect();
            let json = serde_json::to_string_pretty(&only)?;
            if let Some(p) = &a.report {
                std::fs::write(p, format!("{json}\n"))
                    .with_context(|| format!("{}: write report", p.display()))?;
            }
            let mut out = std::io::stdout().lock();
            if a.json {
                writeln!(out, "{json}")?;
            } else {
                for (n, r) in &reports {
                    writeln!(out, "== partition {n} ==")?;
                    out.write_all(r.to_text().as_bytes())?;
                }
            }
            return Ok(if only.iter().any(|r| r.outcome == Outcome::Refused) {
                ExitCode::from(EXIT_REFUSED)
            } else {
                ExitCode::SUCCESS
            });
        }
    }
    let mut backend: Box<dyn Backend> = if is_wim {
        let index = match a.index {
            Some(IndexArg::One(s)) => Some(s),
            _ => None,
        };
        Box::new(
            open_wim(&a.path, index, a.output)?
                .with_rebuild(a.rebuild)
                .with_progress(progress),
        )
    } else if is_disk {
        Box::new(open_disk(&a.path, a.partition)?)
    } else {
        Box::new(open_root(&a.path)?)
    };
    let report = generalize(backend.as_mut(), &options);
    drop(bar);
    let report = report?;
    emit_report(&a.report, a.json, &report)
}

/// Writes one run's report (to `--report`, and as JSON or text on stdout)
/// and gives the exit code for its outcome.
fn emit_report(report_path: &Option<PathBuf>, json: bool, report: &RunReport) -> Result<ExitCode> {
    let text = serde_json::to_string_pretty(report)?;
    if let Some(p) = report_path {
        std::fs::write(p, format!("{text}\n"))
            .with_context(|| format!("{}: write report", p.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{text}")?;
    } else {
        out.write_all(report.to_text().as_bytes())?;
    }
    Ok(match report.outcome {
        Outcome::Refused => ExitCode::from(EXIT_REFUSED),
        Outcome::Done | Outcome::NothingToDo => ExitCode::SUCCESS,
    })
}

/// Flags of `reseal inspect`.
#[derive(Args)]
pub struct InspectArgs {
    /// The image, recognised by its content: a directory holding a Windows
    /// root, a WIM/ESD file, or a disk image (raw, VHD, VHDX, qcow2,
    /// VMDK); only read.
    path: PathBuf,
    /// The image's format, when its content should not decide: dir, wim,
    /// raw, vhd, vhdx, qcow2, vmdk.
    #[arg(long, value_name = "FORMAT", value_parser = parse_format)]
    format: Option<ImageKind>,
    /// Disk images only: the partition to use (numbered as Linux does, from
    /// 1); default: the NTFS partition holding Windows.
    #[arg(long, value_name = "N")]
    partition: Option<u32>,
    /// WIM only: the image to inspect, by 1-based index or by name, or
    /// `all` (default: every image).
    #[arg(long, value_name = "N|NAME|all")]
    index: Option<IndexArg>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `reseal inspect`.
pub fn run_inspect(a: InspectArgs) -> Result<ExitCode> {
    let kind = image_kind(&a.path, a.format)?;
    if a.partition.is_some() && !matches!(kind, ImageKind::Disk(_)) {
        return Err(ResealError::InvalidInput {
            what: a.path.display().to_string(),
            message: format!("--partition applies to disk images only (this is {kind})"),
        }
        .into());
    }
    if a.index.is_some() && kind != ImageKind::Wim {
        return Err(ResealError::InvalidInput {
            what: a.path.display().to_string(),
            message: format!("--index applies to WIM files only (this is {kind})"),
        }
        .into());
    }
    let mut backends: Vec<Box<dyn Backend>> = Vec::new();
    match kind {
        ImageKind::Wim => {
            let selectors = match a.index {
                Some(IndexArg::One(s)) => vec![s],
                _ => (1..=image_count(&a.path).map_err(|e| bad_wim(&a.path, e))?)
                    .map(ImageSelector::Index)
                    .collect(),
            };
            for s in selectors {
                backends.push(Box::new(open_wim(&a.path, Some(s), None)?));
            }
        }
        ImageKind::Disk(_) => backends.push(Box::new(open_disk(&a.path, a.partition)?)),
        ImageKind::Directory => backends.push(Box::new(open_root(&a.path)?)),
    }
    let mut installs = Vec::new();
    for b in &backends {
        installs.extend(inspect(b.as_ref())?);
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&installs)?)?;
    } else {
        for i in &installs {
            writeln!(out, "== {} ==", i.windows_dir)?;
            out.write_all(i.description.to_text().as_bytes())?;
            for f in &i.findings {
                writeln!(out, "  {:?} {}: {}", f.severity, f.id, f.message)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `reseal list-operations`.
pub fn run_list_operations() -> Result<ExitCode> {
    let all = select_operations(&Selection {
        only: Some(
            reseal::ops::all()
                .iter()
                .map(|o| o.name().to_string())
                .collect(),
        ),
        ..Selection::default()
    })?;
    let mut out = std::io::stdout().lock();
    for o in all {
        writeln!(
            out,
            "{:<16} {:<8} {}",
            o.name(),
            if o.default_enabled() { "on" } else { "off" },
            o.description()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
