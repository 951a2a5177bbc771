//! `reseal generalize`, `reseal inspect`, `reseal list-operations`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use reseal::ResealError;
use reseal::backend::Backend;
use reseal::backend::dir::DirBackend;
use reseal::backend::disk::{DiskBackend, generalize_disk, windows_partitions};
use reseal::backend::wim::{
    ImageSelector, WimBackend, generalize_all_images_with_progress, image_count,
};
use reseal::generalize::{generalize, inspect, select_operations};
use reseal::image::ImageKind;
use reseal::options::{GeneralizeOptions, Mode, Selection, SidChoice};
use reseal::report::{Outcome, RunReport};
use serde_json::{Map, Value as Json, json};

use crate::output;

use crate::progress_bar::{Bar, PhaseSpinner, ProgressMode};

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
            message: format!(
                "cannot {action} ({source}); expected a directory holding a Windows root, a WIM/ESD file or a disk image (raw, VHD, VHDX, qcow2, VMDK)"
            ),
        }
        .into(),
        other => other.into(),
    })
}

/// Opens a disk image given on the command line, read-only. A file that
/// cannot be read is bad input (exit 2), not an internal error.
fn open_disk(path: &Path, partition: Option<u32>) -> Result<DiskBackend> {
    DiskBackend::open(path, partition).map_err(|e| disk_input(path, e))
}

/// A disk image that cannot be read is bad input (exit 2).
fn disk_input(path: &Path, e: ResealError) -> anyhow::Error {
    match e {
        ResealError::Io { action, source, .. } => ResealError::InvalidInput {
            what: path.display().to_string(),
            message: format!(
                "cannot {action} ({source}); expected a disk image (raw, VHD, VHDX, qcow2, VMDK) with an NTFS partition holding Windows"
            ),
        }
        .into(),
        other => other.into(),
    }
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
    /// Disk images only: the partition to generalize (numbered as Linux
    /// does, from 1); default: every NTFS partition holding Windows.
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
    /// Print the report as JSON on standard output (one object,
    /// docs/report.schema.json).
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Proceed despite findings sysprep itself would reject (domain
    /// membership, per-user Appx packages, pending servicing, ...).
    /// Findings that make the result unsafe are never overridden.
    #[arg(long)]
    force: bool,
    /// The operations to run, comma-separated, as virt-sysprep reads them:
    /// NAME or +NAME adds, -NAME removes, `defaults` and `all` add those
    /// sets; e.g. `defaults,-leftovers` (see list-operations).
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        allow_hyphen_values = true,
        conflicts_with_all = ["enable", "disable"]
    )]
    operations: Option<Vec<String>>,
    /// Also run these operations (comma-separated).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    enable: Vec<String>,
    /// Do not run these operations (comma-separated).
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
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
    /// When to draw progress on standard error (the bars of WIM writes,
    /// otherwise the phase the run is in): `auto` (when it is a terminal),
    /// `always` or `never`; never with --json, -q or -v.
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

/// Which part of the image a run or an inspection is about.
#[derive(Clone, Debug)]
enum Target {
    /// The whole image (a directory root).
    Whole,
    /// One image of a WIM (1-based index, or its name).
    Image(String),
    /// One partition of a disk image.
    Partition(u32),
}

impl Target {
    /// The JSON fields naming the target (`image` or `partition`).
    fn fields(&self) -> Map<String, Json> {
        let mut m = Map::new();
        match self {
            Target::Whole => {}
            Target::Image(i) => {
                let v = i.parse::<u64>().map(Json::from).unwrap_or(json!(i));
                m.insert("image".into(), v);
            }
            Target::Partition(n) => {
                m.insert("partition".into(), json!(n));
            }
        }
        m
    }

    /// The header of the target's section in text output.
    fn header(&self) -> Option<String> {
        match self {
            Target::Whole => None,
            Target::Image(i) => Some(format!("== image {i} ==")),
            Target::Partition(n) => Some(format!("== partition {n} ==")),
        }
    }
}

/// The outcome of several runs: refused if any was, done if any did
/// something, nothing to do otherwise.
fn overall(reports: &[(Target, RunReport)]) -> Outcome {
    let any = |o: Outcome| reports.iter().any(|(_, r)| r.outcome == o);
    if any(Outcome::Refused) {
        Outcome::Refused
    } else if any(Outcome::Done) {
        Outcome::Done
    } else {
        Outcome::NothingToDo
    }
}

/// Runs `reseal generalize`.
pub fn run_generalize(a: GeneralizeArgs, quiet: bool) -> Result<ExitCode> {
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
    // Unknown operation names are bad input before the image is opened.
    select_operations(&options.selection)?;
    let kind = {
        let _s = tracing::info_span!("detect").entered();
        image_kind(&a.path, a.format)?
    };
    tracing::info!(format = %kind, path = %a.path.display(), "image");
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
    // Only WIM writes report progress; the bar is cleared when dropped,
    // before the report or an error is printed.
    let bar = if is_wim {
        Bar::for_stderr(a.progress, a.json || quiet)
    } else {
        None
    };
    // Other images: the phase the run is in.
    let spinner = if is_wim {
        None
    } else {
        PhaseSpinner::for_stderr(a.progress, a.json || quiet, "generalize")
    };
    let progress = bar.as_ref().map(Bar::progress);
    let span = tracing::info_span!("generalize").entered();
    let reports: Result<Vec<(Target, RunReport)>> =
        if is_wim && matches!(a.index, Some(IndexArg::All)) {
            generalize_all_images_with_progress(
                &a.path,
                a.output.clone(),
                a.rebuild,
                &options,
                progress,
            )
            .map(|rs| {
                (1..)
                    .zip(rs)
                    .map(|(i, r)| (Target::Image(i.to_string()), r))
                    .collect()
            })
            .map_err(|e| match e {
                e @ (ResealError::Io { .. }
                | ResealError::InvalidInput { .. }
                | ResealError::DiskFormat { .. }) => bad_wim(&a.path, e),
                other => other.into(),
            })
        } else if is_disk && a.partition.is_none() {
            generalize_disk(&a.path, &options)
                .map(|rs| {
                    rs.into_iter()
                        .map(|(n, r)| (Target::Partition(n), r))
                        .collect()
                })
                .map_err(Into::into)
        } else {
            (|| {
                let (target, mut backend): (Target, Box<dyn Backend>) = if is_wim {
                    let index = match a.index {
                        Some(IndexArg::One(s)) => Some(s),
                        _ => None,
                    };
                    let target = Target::Image(
                        index
                            .as_ref()
                            .map(selector_text)
                            .unwrap_or_else(|| "1".to_string()),
                    );
                    let b = open_wim(&a.path, index, a.output.clone())?
                        .with_rebuild(a.rebuild)
                        .with_progress(progress);
                    (target, Box::new(b))
                } else if is_disk {
                    let b = open_disk(&a.path, a.partition)?;
                    (Target::Partition(b.partition()), Box::new(b))
                } else {
                    (Target::Whole, Box::new(open_root(&a.path)?))
                };
                let report = generalize(backend.as_mut(), &options)?;
                Ok(vec![(target, report)])
            })()
        };
    drop(span);
    drop(bar);
    drop(spinner);
    let reports = reports?;
    let outcome = overall(&reports);
    let results: Vec<Json> = reports
        .iter()
        .map(|(t, r)| {
            let mut m = t.fields();
            if let Json::Object(f) = serde_json::to_value(r)? {
                m.extend(
                    f.into_iter()
                        .filter(|(k, _)| !matches!(k.as_str(), "schema" | "tool" | "version")),
                );
            }
            Ok(Json::Object(m))
        })
        .collect::<Result<_>>()?;
    let doc = output::document(
        "generalize",
        json!({
            "input": a.path.display().to_string(),
            "format": kind.name(),
            "dry_run": a.dry_run,
            "outcome": outcome,
            "results": results,
        }),
    );
    let changed = !a.dry_run && outcome == Outcome::Done;
    output::write_report(a.report.as_deref(), &output::to_text(&doc)?, changed)?;
    if a.json {
        output::print_json(&doc)?;
    } else {
        let mut out = std::io::stdout().lock();
        for (t, r) in &reports {
            if reports.len() > 1 {
                if let Some(h) = t.header() {
                    writeln!(out, "{h}")?;
                }
            }
            out.write_all(r.to_text().as_bytes())?;
        }
        out.flush()?;
    }
    Ok(match outcome {
        Outcome::Refused => ExitCode::from(output::EXIT_REFUSED),
        Outcome::Done | Outcome::NothingToDo => ExitCode::SUCCESS,
    })
}

/// The text of an image selector (its index or its name).
fn selector_text(s: &ImageSelector) -> String {
    match s {
        ImageSelector::Index(i) => i.to_string(),
        ImageSelector::Name(n) => n.clone(),
    }
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
    /// Disk images only: the partition to inspect (numbered as Linux does,
    /// from 1); default: every NTFS partition holding Windows.
    #[arg(long, value_name = "N")]
    partition: Option<u32>,
    /// WIM only: the image to inspect, by 1-based index or by name, or
    /// `all` (default: every image).
    #[arg(long, value_name = "N|NAME|all")]
    index: Option<IndexArg>,
    /// Print JSON (one object, docs/report.schema.json).
    #[arg(long)]
    pub json: bool,
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
    let mut backends: Vec<(Target, Box<dyn Backend>)> = Vec::new();
    match kind {
        ImageKind::Wim => {
            let selectors = match a.index {
                Some(IndexArg::One(s)) => vec![s],
                _ => (1..=image_count(&a.path).map_err(|e| bad_wim(&a.path, e))?)
                    .map(ImageSelector::Index)
                    .collect(),
            };
            for s in selectors {
                let t = Target::Image(selector_text(&s));
                backends.push((t, Box::new(open_wim(&a.path, Some(s), None)?)));
            }
        }
        ImageKind::Disk(_) => {
            let parts = match a.partition {
                Some(n) => vec![n],
                None => windows_partitions(&a.path).map_err(|e| disk_input(&a.path, e))?,
            };
            if parts.is_empty() {
                // Opening names what was found instead of Windows.
                let b = open_disk(&a.path, None)?;
                backends.push((Target::Partition(b.partition()), Box::new(b)));
            }
            for n in parts {
                backends.push((Target::Partition(n), Box::new(open_disk(&a.path, Some(n))?)));
            }
        }
        ImageKind::Directory => backends.push((Target::Whole, Box::new(open_root(&a.path)?))),
    }
    let mut found = Vec::new();
    for (t, b) in &backends {
        found.push((t.clone(), inspect(b.as_ref())?));
    }
    if a.json {
        let results: Vec<Json> = found
            .iter()
            .map(|(t, installs)| {
                let mut m = t.fields();
                m.insert("installs".into(), serde_json::to_value(installs)?);
                Ok(Json::Object(m))
            })
            .collect::<Result<_>>()?;
        output::print_json(&output::document(
            "inspect",
            json!({
                "input": a.path.display().to_string(),
                "format": kind.name(),
                "results": results,
            }),
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    for (t, installs) in &found {
        if found.len() > 1 {
            if let Some(h) = t.header() {
                writeln!(out, "{h}")?;
            }
        }
        for i in installs {
            writeln!(out, "== {} ==", i.windows_dir)?;
            out.write_all(i.description.to_text().as_bytes())?;
            for f in &i.findings {
                writeln!(out, "  {:?} {}: {}", f.severity, f.id, f.message)?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Flags of `reseal list-operations`.
#[derive(Args)]
pub struct ListOperationsArgs {
    /// Print JSON (one object, docs/report.schema.json).
    #[arg(long)]
    pub json: bool,
}

/// Runs `reseal list-operations`.
pub fn run_list_operations(a: ListOperationsArgs) -> Result<ExitCode> {
    let all = reseal::ops::all();
    if a.json {
        let ops: Vec<Json> = all
            .iter()
            .map(|o| {
                json!({
                    "name": o.name(),
                    "default": o.default_enabled(),
                    "description": o.description(),
                })
            })
            .collect();
        output::print_json(&output::document(
            "list-operations",
            json!({ "operations": ops }),
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
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
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
