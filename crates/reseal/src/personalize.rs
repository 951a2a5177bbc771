//! `reseal personalize`: gives one copy of a generalized image its own
//! machine identity, in place, before it ever boots.
//!
//! Windows gives each machine deployed from a sysprepped image a new
//! machine SID at first boot (setupcl). reseal changes the SID offline at
//! generalize time and does not arm setupcl (its request format is not
//! public), so every machine deployed from one reseal image would share
//! that image's SID — and Windows 11 24H2+ and Windows Server 2025 refuse
//! Kerberos and NTLM between machines with duplicate SIDs. Personalizing
//! each copy closes that gap, and the pipeline knows each machine's SID
//! and name before first boot.
//!
//! What one run changes, for every Windows install of the image:
//!
//! * a new machine SID, rewritten everywhere the `machine-sid` operation
//!   rewrites it ([`MachineSid::plan_rewrite`]: hives, SID-named keys and
//!   folders, task files) and, where the backend can, in every file and
//!   directory security descriptor (disk images: all of NTFS `$Secure`);
//! * the computer name, when one is given: `ComputerName` under
//!   `Control\ComputerName\ComputerName` (created when absent) and, where
//!   they exist, `ActiveComputerName`, `Tcpip\Parameters` `Hostname` and
//!   `NV Hostname` in every control set, SECURITY `Policy\PolAcDmN`, and
//!   the answer file's specialize `Microsoft-Windows-Shell-Setup`
//!   `ComputerName` (`<windir>\Panther\unattend.xml`, edited in place or
//!   created), so that the name survives specialize;
//! * a new SOFTWARE `Microsoft\Cryptography` `MachineGuid` (a random
//!   version-4 GUID); the other per-machine identities are cleared as the
//!   `identities` operation does (on a generalized image they already are);
//! * reseal's record in the image ([`crate::marker`]).
//!
//! An image that is not generalized is refused ([`ResealError::Refused`])
//! unless `force` is set: personalizing a machine that still carries its
//! reference identity everywhere else would hide that it was never
//! generalized. All changes of all installs are committed in one
//! all-or-nothing step through the backend.
//!
//! ```no_run
//! use reseal::backend::dir::DirBackend;
//! use reseal::personalize::{PersonalizeOptions, personalize_backend};
//! let mut root = DirBackend::open(std::path::Path::new("copy-of-template"))?;
//! let opts = PersonalizeOptions {
//!     name: Some("WEB-001".into()),
//!     ..PersonalizeOptions::default()
//! };
//! let report = personalize_backend(&mut root, &opts)?;
//! println!("{} now has SID {}", report.name, report.sid[0].new);
//! # Ok::<(), reseal::ResealError>(())
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::answer_edit::{component_architecture, minimal_answer_file, set_computer_name};
use crate::apply::apply;
use crate::backend::Backend;
use crate::backend::dir::DirBackend;
use crate::backend::disk::{DiskBackend, windows_partitions};
use crate::context::PlanContext;
use crate::describe::{describe, machine_sid};
use crate::discover::{find_windows_dirs, load_install};
use crate::edit::{FileEdit, PlannedEdit, RegEdit};
use crate::error::{ResealError, Result};
use crate::hives::HiveId;
use crate::image::ImageKind;
use crate::ops::answer_file::PANTHER_UNATTEND;
use crate::ops::machine_sid::{MachineSid, Random, SidSummary, SplitMix64, random_machine_sid};
use crate::ops::{NotDone, Operation, REG_SZ, set_sz};
use crate::options::GeneralizeOptions;
use crate::preflight::{Severity, preflight};
use reseal_hive::Sid;

/// The operation name edits of a personalize run carry in reports.
pub const OPERATION: &str = "personalize";

/// What to give the copy.
#[derive(Debug, Clone, Default)]
pub struct PersonalizeOptions {
    /// Its computer name (a NetBIOS name, see [`validate_computer_name`]);
    /// `None` leaves the name as the image has it (after generalize,
    /// specialize picks a random one unless the answer file names one).
    pub name: Option<String>,
    /// Its machine SID; `None` for a fresh random one. Refused for an
    /// image holding several installs (they must not share one).
    pub sid: Option<Sid>,
    /// Derive every random choice from this number (tests and
    /// reproducible pipelines).
    pub seed: Option<u64>,
    /// Personalize even an image that is not generalized.
    pub force: bool,
    /// Plan only; nothing is written.
    pub dry_run: bool,
    /// Disk images: only this partition (numbered from 1).
    pub partition: Option<u32>,
}

/// What a personalize run gave one image (all its installs).
#[derive(Debug, Clone, Serialize)]
pub struct CloneReport {
    /// Its computer name (empty when none was given).
    pub name: String,
    /// The image on the host (a folder or a file).
    pub path: PathBuf,
    /// Its new MachineGuid.
    pub machine_guid: String,
    /// The answer files that carry its name (paths inside the image).
    pub answer_files: Vec<AnswerFileUpdate>,
    /// The SID rewrite of each install (old and new SID, counts).
    pub sid: Vec<SidSummary>,
    /// Every edit planned, with the operation that made it.
    pub edits: Vec<PlannedEdit>,
    /// What was not done, per operation.
    pub not_done: Vec<NotDone>,
    /// File changes committed (0 for a dry run).
    pub files_changed: usize,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// How a copy's answer file got its computer name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnswerFileUpdate {
    /// Path inside the image (`Windows\Panther\unattend.xml`).
    pub path: String,
    /// `edited` (the existing file), `created` (there was none) or
    /// `unchanged` (it already named the copy).
    pub action: &'static str,
}

fn invalid(what: impl Into<String>, message: impl Into<String>) -> ResealError {
    ResealError::InvalidInput {
        what: what.into(),
        message: message.into(),
    }
}

/// Checks a computer name against NetBIOS rules: 1–15 characters, none of
/// `\ / : * ? " < > |` nor control characters, not all digits, no leading
/// or trailing dot or space.
///
/// ```
/// use reseal::personalize::validate_computer_name;
/// assert!(validate_computer_name("WEB-001").is_ok());
/// assert!(validate_computer_name("1234").is_err());
/// ```
pub fn validate_computer_name(name: &str) -> Result<()> {
    let bad = |why: &str| invalid(format!("computer name {name:?}"), why.to_string());
    let n = name.chars().count();
    if n == 0 || n > 15 {
        return Err(bad("must have 1 to 15 characters (NetBIOS)"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| r#"\/:*?"<>|"#.contains(*c) || c.is_control())
    {
        return Err(bad(&format!("{c:?} is not allowed in a computer name")));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad("must not be all digits"));
    }
    if name.starts_with(['.', ' ']) || name.ends_with(['.', ' ']) {
        return Err(bad("must not start or end with a dot or a space"));
    }
    Ok(())
}

/// A random version-4 GUID in the registry's lower-case form.
pub fn random_guid(rng: &mut Random) -> Result<String> {
    let mut b = [0u8; 16];
    rng.fill(&mut b)?;
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// The seed of part `index` (a clone, a partition) derived from a seed.
pub fn derive_seed(seed: u64, index: usize) -> u64 {
    SplitMix64::new(seed ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// Personalizes every Windows install of the image behind `backend`, in
/// place. See the module documentation.
pub fn personalize_backend(
    backend: &mut dyn Backend,
    opts: &PersonalizeOptions,
) -> Result<CloneReport> {
    if let Some(n) = &opts.name {
        validate_computer_name(n)?;
    }
    let dirs = find_windows_dirs(backend)?;
    if dirs.is_empty() {
        return Err(ResealError::NoInstall {
            root: backend.describe(),
        });
    }
    if dirs.len() > 1 && opts.sid.is_some() {
        return Err(invalid(
            backend.describe(),
            format!(
                "--sid names one machine SID but the image holds {} Windows installs ({}), which must not share one; leave --sid out",
                dirs.len(),
                dirs.join(", ")
            ),
        ));
    }
    let seed = opts.seed;
    let options = GeneralizeOptions {
        seed,
        force: opts.force,
        ..GeneralizeOptions::default()
    };
    let mut guid_rng = Random::new(seed, "MachineGuid");
    let guid = random_guid(&mut guid_rng)?;
    let mut report = CloneReport {
        name: opts.name.clone().unwrap_or_default(),
        path: PathBuf::from(backend.describe()),
        machine_guid: guid.clone(),
        answer_files: Vec::new(),
        sid: Vec::new(),
        edits: Vec::new(),
        not_done: Vec::new(),
        files_changed: 0,
        dry_run: opts.dry_run,
    };
    let mut changes = Vec::new();
    for dir in dirs {
        let install = load_install(backend, &dir);
        if let Some(e) = install.load_errors.first() {
            return Err(invalid(e.path.clone(), e.message.clone()));
        }
        let description = describe(&install, backend);
        let findings = preflight(&install, backend, &description);
        if let Some(f) = findings.iter().find(|f| f.severity == Severity::Refuse) {
            return Err(ResealError::Refused {
                what: format!("{} {dir}", backend.describe()),
                message: format!("{}: {} (fix: {})", f.id, f.message, f.fix),
            });
        }
        if !description.generalization.already_generalized() && !opts.force {
            return Err(ResealError::Refused {
                what: format!("{} {dir}", backend.describe()),
                message: "the install is not generalized (ImageState is not IMAGE_STATE_GENERALIZE_RESEAL_TO_*): personalize copies of a generalized image (reseal generalize IMAGE first), or give --force to personalize it anyway".into(),
            });
        }
        let ctx = PlanContext {
            install: &install,
            backend,
            options: &options,
            unattend: None,
        };
        let (old, source) = machine_sid(&install).ok_or_else(|| {
            invalid(
                dir.clone(),
                "no machine SID found (SECURITY Policy\\PolAcDmS, SAM Domains\\Account V)",
            )
        })?;
        let mut rng = Random::new(seed, &dir);
        let new = match &opts.sid {
            Some(s) if *s == old => {
                return Err(invalid(
                    s.to_string(),
                    "is the image's machine SID already; give another one or leave --sid out",
                ));
            }
            Some(s) => s.clone(),
            None => loop {
                let s = random_machine_sid(&mut rng)?;
                if s != old {
                    break s;
                }
            },
        };
        // The per-machine identities the `identities` operation clears
        // (nothing on a generalized image), then the new ones.
        let mut plan = crate::ops::identities::Identities.plan(&ctx)?;
        plan.edits.retain(|e| !sets_identity_personalize_owns(e));
        let sid_plan = MachineSid::plan_rewrite(&ctx, &old, source, &new, rng.is_seeded())?;
        plan.edits.extend(sid_plan.edits);
        plan.not_done.extend(sid_plan.not_done);
        if let Some(name) = &opts.name {
            plan.edits.extend(computer_name_edits(&ctx, name));
            let (edit, update) = answer_file_edit(&ctx, name)?;
            plan.edits.extend(edit);
            report.answer_files.push(update);
            for note in shadowing_answer_files(&ctx) {
                plan.not_done(OPERATION, note);
            }
        }
        plan.edits.push(PlannedEdit::reg(
            OPERATION,
            HiveId::Software,
            RegEdit::SetValue {
                key: r"Microsoft\Cryptography".into(),
                name: "MachineGuid".into(),
                value_type: REG_SZ,
                data: crate::context::reg_sz(&guid),
                secret: false,
            },
            "machine GUID of this copy",
        ));
        plan.edits.extend(crate::marker::personalize_edits(
            &ctx,
            OPERATION,
            opts.name.as_deref(),
        ));
        if !opts.dry_run {
            let applied = apply(&install, &plan.edits)?;
            changes.extend(applied.changes);
        }
        report.edits.extend(plan.edits);
        report.sid.extend(sid_plan.sid);
        report.not_done.extend(plan.not_done);
    }
    if opts.dry_run {
        return Ok(report);
    }
    for s in &report.sid {
        if let (Ok(old), Ok(new)) = (s.old.parse::<Sid>(), s.new.parse::<Sid>()) {
            backend.rewrite_file_security(&old, &new);
        }
    }
    backend.commit(&changes)?;
    report.files_changed = changes.len();
    report.not_done.extend(
        backend
            .commit_caveats(true)
            .into_iter()
            .map(|message| NotDone {
                operation: "backend",
                message,
            }),
    );
    Ok(report)
}

/// Whether an edit of the `identities` operation touches what personalize
/// sets itself (the computer name, the MachineGuid): those are left to
/// personalize, so that re-personalizing with the same name keeps it.
fn sets_identity_personalize_owns(e: &PlannedEdit) -> bool {
    let crate::edit::Edit::Registry { change, .. } = &e.edit else {
        return false;
    };
    let (key, name) = match change {
        RegEdit::SetValue { key, name, .. } | RegEdit::DeleteValue { key, name } => (key, name),
        _ => return false,
    };
    ["ComputerName", "Hostname", "NV Hostname", "MachineGuid"]
        .iter()
        .any(|n| n.eq_ignore_ascii_case(name))
        || key.to_ascii_lowercase().ends_with(r"policy\polacdmn")
}

/// The computer-name edits in SYSTEM (every control set) and SECURITY.
fn computer_name_edits(ctx: &PlanContext, name: &str) -> Vec<PlannedEdit> {
    let reason = "computer name of this copy";
    let mut out = Vec::new();
    for cs in ctx.control_sets() {
        let main = format!(r"{cs}\Control\ComputerName\ComputerName");
        out.extend(set_sz(
            ctx,
            OPERATION,
            HiveId::System,
            &main,
            "ComputerName",
            name,
            reason,
        ));
        for (key, value) in [
            (
                format!(r"{cs}\Control\ComputerName\ActiveComputerName"),
                "ComputerName",
            ),
            (format!(r"{cs}\Services\Tcpip\Parameters"), "Hostname"),
            (format!(r"{cs}\Services\Tcpip\Parameters"), "NV Hostname"),
        ] {
            if ctx.value(&HiveId::System, &key, value).is_some() {
                out.extend(set_sz(
                    ctx,
                    OPERATION,
                    HiveId::System,
                    &key,
                    value,
                    name,
                    reason,
                ));
            }
        }
    }
    if let Some(v) = ctx.value(&HiveId::Security, r"Policy\PolAcDmN", "") {
        let data = lsa_unicode_string_data(&v.data, name);
        if data != v.data {
            out.push(PlannedEdit::reg(
                OPERATION,
                HiveId::Security,
                RegEdit::SetValue {
                    key: r"Policy\PolAcDmN".into(),
                    name: String::new(),
                    value_type: v.value_type,
                    data,
                    secret: false,
                },
                "account domain name (the computer name) of this copy",
            ));
        }
    }
    out
}

/// `PolAcDmN`-style LSA `UNICODE_STRING` data (u16 length, u16 maximum
/// length, u32 offset, then the UTF-16 text) holding `text`, laid out as
/// `old` was: the same offset and header, a terminating NUL when `old` had
/// one (the maximum length then counts it), and zero padding to a multiple
/// of 4 bytes when `old` was padded.
pub fn lsa_unicode_string_data(old: &[u8], text: &str) -> Vec<u8> {
    let field = |i: usize| {
        old.get(i..i + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let old_len = field(0).unwrap_or(0);
    let off = old
        .get(4..8)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .filter(|&o| o >= 8 && o < old.len())
        .unwrap_or(8);
    let trailing = old.len().saturating_sub(off + old_len);
    // A record without a text (or too short to tell) gets the usual form.
    let nul = trailing >= 2 || old_len == 0;
    let padded = trailing > 2 && old.len() % 4 == 0;
    let units: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let len = units.len().min(usize::from(u16::MAX) - 2);
    let max = if nul { len + 2 } else { len };
    let mut out = Vec::with_capacity(off + max + 4);
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&(max as u16).to_le_bytes());
    out.extend_from_slice(&(off as u32).to_le_bytes());
    out.extend(old.get(8..off).unwrap_or(&[]));
    out.resize(off, 0);
    out.extend_from_slice(&units[..len]);
    if nul {
        out.extend_from_slice(&[0, 0]);
    }
    if padded {
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

/// The `processorArchitecture` of the install's components (from SYSTEM's
/// `PROCESSOR_ARCHITECTURE`), or `amd64` when it is not known.
fn install_architecture(ctx: &PlanContext) -> &'static str {
    ctx.current_control_set()
        .or_else(|| ctx.control_sets().into_iter().next())
        .and_then(|cs| {
            ctx.value(
                &HiveId::System,
                &format!(r"{cs}\Control\Session Manager\Environment"),
                "PROCESSOR_ARCHITECTURE",
            )
        })
        .and_then(|v| component_architecture(&crate::context::reg_string(&v.data)))
        .unwrap_or("amd64")
}

/// The write that makes `<windir>\Panther\unattend.xml` name the copy
/// `name` in specialize (none when it does already).
fn answer_file_edit(
    ctx: &PlanContext,
    name: &str,
) -> Result<(Option<PlannedEdit>, AnswerFileUpdate)> {
    let path = ctx.install.windows_path(PANTHER_UNATTEND);
    let arch = install_architecture(ctx);
    let (data, action) = if ctx.backend.exists(&path) {
        if ctx.backend.is_dir(&path) {
            return Err(invalid(path, "is a directory; expected the answer file"));
        }
        let old = ctx.backend.read(&path)?;
        let new = set_computer_name(&path, &old, name, arch)?;
        if new == old {
            return Ok((
                None,
                AnswerFileUpdate {
                    path,
                    action: "unchanged",
                },
            ));
        }
        (new, "edited")
    } else {
        (minimal_answer_file(name, arch), "created")
    };
    let edit = PlannedEdit::file(
        OPERATION,
        FileEdit::write(path.clone(), data),
        "specialize ComputerName of this copy, so that its name survives specialize",
    );
    Ok((Some(edit), AnswerFileUpdate { path, action }))
}

/// Answer files that Setup would find before
/// `<windir>\Panther\unattend.xml` (and which therefore would decide the
/// name), as notes.
fn shadowing_answer_files(ctx: &PlanContext) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(v) = ctx.value(&HiveId::System, "Setup", "UnattendFile") {
        let p = crate::context::reg_string(&v.data);
        let p = p.trim().trim_matches('"');
        if !p.is_empty()
            && !p
                .to_ascii_lowercase()
                .ends_with(&PANTHER_UNATTEND.to_ascii_lowercase())
        {
            notes.push(format!(
                "SYSTEM Setup UnattendFile points to {p:?}, which Setup reads before Panther\\unattend.xml: the computer name was not set there"
            ));
        }
    }
    for rel in [
        r"Panther\Unattend\unattend.xml",
        r"Panther\Unattend\autounattend.xml",
    ] {
        let path = ctx.install.windows_path(rel);
        if ctx.backend.exists(&path) && !ctx.backend.is_dir(&path) {
            notes.push(format!(
                "{path} is read before Panther\\unattend.xml: the computer name was not set there"
            ));
        }
    }
    notes
}

/// Personalizes the image at `path` in place: a directory root, or a disk
/// image (every partition holding Windows, each with its own SID, unless
/// `opts.partition` picks one), found by content or as `kind` says. WIM
/// files are not personalized in place (their unreplaced entries' ACLs
/// cannot be rewritten): stamp them instead.
///
/// A disk with several installs is planned in full first (a dry run per
/// partition), so a refusal on one partition writes nothing to any.
pub fn personalize(
    path: &Path,
    kind: Option<ImageKind>,
    opts: &PersonalizeOptions,
) -> Result<Vec<CloneReport>> {
    let kind = crate::image::resolve(path, kind)?;
    match kind {
        ImageKind::Directory => {
            if opts.partition.is_some() {
                return Err(invalid(
                    path.display().to_string(),
                    "--partition applies to disk images only",
                ));
            }
            let mut b = DirBackend::open(path)?;
            Ok(vec![personalize_backend(&mut b, opts)?])
        }
        ImageKind::Wim => Err(invalid(
            path.display().to_string(),
            "personalize works on directory roots and disk images; for a WIM, generalize it and deploy, then personalize each applied copy (or its disk image)",
        )),
        ImageKind::Disk(_) => {
            let parts = match opts.partition {
                Some(n) => vec![n],
                None => windows_partitions(path)?,
            };
            if parts.is_empty() {
                // Let the single-volume open produce its specific error.
                DiskBackend::open(path, None)?;
                return Err(ResealError::NoInstall {
                    root: path.display().to_string(),
                });
            }
            if parts.len() > 1 && opts.sid.is_some() {
                return Err(invalid(
                    path.display().to_string(),
                    format!(
                        "--sid names one machine SID but the disk holds {} Windows installs, which must not share one; give --partition N with --sid",
                        parts.len()
                    ),
                ));
            }
            let per_part = |i: usize| PersonalizeOptions {
                seed: opts.seed.map(|s| derive_seed(s, i)),
                ..opts.clone()
            };
            // With several installs, plan them all first: a refusal of one
            // writes nothing to any. (One install is refused before its
            // own commit anyway.)
            for (i, &n) in parts.iter().enumerate().filter(|_| parts.len() > 1) {
                let mut b = DiskBackend::open(path, Some(n))?;
                personalize_backend(
                    &mut b,
                    &PersonalizeOptions {
                        dry_run: true,
                        ..per_part(i)
                    },
                )?;
            }
            let mut out = Vec::new();
            for (i, &n) in parts.iter().enumerate() {
                let mut b = DiskBackend::open(path, Some(n))?;
                out.push(personalize_backend(&mut b, &per_part(i))?);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netbios_names() {
        for ok in ["WEB-001", "a", "PC.LAB", "X1234567890ABCD"] {
            validate_computer_name(ok).expect(ok);
        }
        for bad in [
            "",
            "1234",
            "X1234567890ABCDE",
            "A/B",
            "A:B",
            "A*",
            ".A",
            "A.",
            " A",
            "A ",
            "A|B",
            "A\"B",
        ] {
            assert!(validate_computer_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lsa_records() {
        use crate::describe::lsa_unicode_string;
        let mut old = vec![0x12, 0, 0x14, 0, 8, 0, 0, 0];
        old.extend("WORKGROUP\0".encode_utf16().flat_map(u16::to_le_bytes));
        let new = lsa_unicode_string_data(&old, "WEB-001");
        assert_eq!(&new[..8], &[14, 0, 16, 0, 8, 0, 0, 0]);
        assert_eq!(new.len(), 8 + 16);
        assert_eq!(lsa_unicode_string(&new).as_deref(), Some("WEB-001"));
        // No terminator stays without one; padding to 4 bytes is kept.
        let bare = lsa_unicode_string_data(&old[..old.len() - 2], "AB");
        assert_eq!(bare, [4, 0, 4, 0, 8, 0, 0, 0, 65, 0, 66, 0]);
        let mut padded = old.clone();
        padded.extend([0, 0]);
        let p = lsa_unicode_string_data(&padded, "ABC");
        assert_eq!(p.len(), 16);
        assert_eq!(lsa_unicode_string(&p).as_deref(), Some("ABC"));
        assert_eq!(
            lsa_unicode_string(&lsa_unicode_string_data(&[], "X")).as_deref(),
            Some("X")
        );
    }

    #[test]
    fn guids() {
        let a = random_guid(&mut Random::new(Some(1), "x")).expect("g");
        let b = random_guid(&mut Random::new(Some(1), "x")).expect("g");
        assert_eq!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(derive_seed(1, 0), derive_seed(1, 1));
    }
}
