//! `reseal stamp`: many unique clones of one generalized image.
//!
//! [`stamp`] copies a generalized Windows root N times into `out/<name>`
//! (a recursive copy that keeps Unix permissions and symbolic links), then
//! gives each copy its own identities, all clones in parallel (rayon), each
//! from its own state:
//!
//! * a new machine SID, rewritten everywhere as the `machine-sid` operation
//!   does ([`MachineSid::plan_rewrite`]);
//! * the computer name: `ComputerName` under `Control\ComputerName\
//!   ComputerName` (created when absent) and, where they exist,
//!   `ActiveComputerName`, `Tcpip\Parameters` `Hostname` and `NV Hostname`
//!   in every control set, and SECURITY `Policy\PolAcDmN` (the account
//!   domain name, an LSA `UNICODE_STRING` record) where it exists;
//! * the same name in the answer file, so that it survives specialize
//!   (which sets the computer name from the answer file's `ComputerName`,
//!   or a random one when there is none): `<windir>\Panther\unattend.xml`
//!   gets its specialize `Microsoft-Windows-Shell-Setup` `ComputerName` set
//!   in place, every other byte and the encoding kept
//!   ([`crate::answer_edit`]); without an answer file, one that sets only
//!   the computer name is written there;
//! * a new SOFTWARE `Microsoft\Cryptography` `MachineGuid` (a random
//!   version-4 GUID). The other per-machine identities (SQM and WSUS ids,
//!   DUID, ...) stay deleted, as generalize left them, so that each clone
//!   makes its own.
//!
//! Names come from a pattern (`WEB-{n:03}`: `{n}` is the clone's number
//! from 1, `{n:0W}` the same zero-padded to W digits) or a list, and must be
//! valid NetBIOS computer names ([`validate_computer_name`]).
//!
//! Randomness is the operating system's CSPRNG, or, with a seed (tests
//! only), [`SplitMix64`] from a per-clone seed derived from the seed and
//! the clone's index: the same seed gives the same identities, whatever the
//! number of threads. Key timestamps and the hive headers' timestamps still
//! record the time of the stamp.
//!
//! All or nothing: when one clone fails, every clone this call created is
//! removed again and the error is returned.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::answer_edit::{component_architecture, minimal_answer_file, set_computer_name};
use crate::apply::apply;
use crate::backend::Backend;
use crate::backend::dir::DirBackend;
use crate::context::PlanContext;
use crate::describe::machine_sid;
use crate::discover::{find_windows_dirs, load_install};
use crate::edit::{FileEdit, PlannedEdit, RegEdit};
use crate::error::{ResealError, Result};
use crate::hives::HiveId;
use crate::ops::answer_file::PANTHER_UNATTEND;
use crate::ops::machine_sid::{MachineSid, Random, SidSummary, SplitMix64, random_machine_sid};
use crate::ops::{NotDone, REG_SZ, set_sz};
use crate::options::GeneralizeOptions;

/// How the clones are named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum CloneNames {
    /// A pattern such as `WEB-{n:03}` (clone numbers from 1).
    Pattern(String),
    /// One name per clone.
    List(Vec<String>),
}

/// The default pattern when none is given.
pub const DEFAULT_PATTERN: &str = "CLONE-{n:03}";

/// What to stamp.
#[derive(Debug, Clone)]
pub struct StampOptions {
    /// Number of clones.
    pub count: usize,
    /// The folder that receives one folder per clone (created if needed).
    pub out: PathBuf,
    /// Computer names (also the clone folders' names).
    pub names: CloneNames,
    /// Tests only: derive every identity from this seed.
    pub seed: Option<u64>,
}

/// One stamped clone.
#[derive(Debug, Clone, Serialize)]
pub struct CloneReport {
    /// Its computer name.
    pub name: String,
    /// Its folder on the host.
    pub path: PathBuf,
    /// Its MachineGuid.
    pub machine_guid: String,
    /// The answer files that carry its name (paths inside the clone).
    pub answer_files: Vec<AnswerFileUpdate>,
    /// The SID rewrite of each install.
    pub sid: Vec<SidSummary>,
    /// What was not done, per operation.
    pub not_done: Vec<NotDone>,
    /// File changes committed.
    pub files_changed: usize,
}

/// How a clone's answer file got its computer name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnswerFileUpdate {
    /// Path inside the clone (`Windows\Panther\unattend.xml`).
    pub path: String,
    /// `edited` (the existing file), `created` (there was none) or
    /// `unchanged` (it already named the clone).
    pub action: &'static str,
}

/// The outcome of [`stamp`].
#[derive(Debug, Clone, Serialize)]
pub struct StampReport {
    /// The source root.
    pub source: PathBuf,
    /// The clones, in order.
    pub clones: Vec<CloneReport>,
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

/// Expands a name pattern for clone number `n`: `{n}` or `{n:0W}` (width
/// W, zero-padded); `{{` and `}}` stand for braces.
pub fn expand_pattern(pattern: &str, n: usize) -> Result<String> {
    let bad = |why: &str| invalid(format!("name pattern {pattern:?}"), why.to_string());
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("{{") {
            out.push('{');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("}}") {
            out.push('}');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("{n") {
            let end = t
                .find('}')
                .ok_or_else(|| bad("unclosed {n...}; use {n} or {n:03}"))?;
            let spec = &t[..end];
            if spec.is_empty() {
                out.push_str(&n.to_string());
            } else {
                let w = spec
                    .strip_prefix(':')
                    .filter(|w| {
                        !w.is_empty() && w.len() <= 3 && w.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|w| w.parse::<usize>().ok())
                    .ok_or_else(|| bad("unknown placeholder; use {n} or {n:03}"))?;
                out.push_str(&format!("{n:0w$}"));
            }
            rest = &t[end + 1..];
        } else {
            return Err(bad("a lone brace; use {n}, {n:03}, {{ or }}"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The clones' names, checked (valid and unique, case-insensitively).
pub fn clone_names(opts: &StampOptions) -> Result<Vec<String>> {
    let names = match &opts.names {
        CloneNames::Pattern(p) => (1..=opts.count)
            .map(|n| expand_pattern(p, n))
            .collect::<Result<Vec<_>>>()?,
        CloneNames::List(l) => {
            if l.len() != opts.count {
                return Err(invalid(
                    "--names",
                    format!("{} name(s) for {} clone(s)", l.len(), opts.count),
                ));
            }
            l.iter().map(|s| s.trim().to_string()).collect()
        }
    };
    if names.is_empty() {
        return Err(invalid("--count", "at least one clone is needed"));
    }
    for (i, n) in names.iter().enumerate() {
        validate_computer_name(n)?;
        if names[..i].iter().any(|m| m.eq_ignore_ascii_case(n)) {
            return Err(invalid(
                format!("computer name {n:?}"),
                "given to two clones; each clone needs its own name",
            ));
        }
    }
    Ok(names)
}

/// The seed of clone `index` derived from the run's seed.
pub fn clone_seed(seed: u64, index: usize) -> u64 {
    SplitMix64::new(seed ^ (index as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
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

/// Copies the tree at `src` to `dst` (which must not exist): files with
/// their permissions, directories, symbolic links as links.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let io = |p: &Path, action: &'static str| {
        let p = p.to_path_buf();
        move |source: io::Error| ResealError::Io {
            path: p,
            action,
            source,
        }
    };
    let meta = fs::metadata(src).map_err(io(src, "read metadata"))?;
    fs::create_dir(dst).map_err(io(dst, "create directory"))?;
    for entry in fs::read_dir(src).map_err(io(src, "list directory"))? {
        let entry = entry.map_err(io(src, "list directory"))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type().map_err(io(&from, "read metadata"))?;
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(io(&from, "read link"))?;
            copy_link(&target, &to).map_err(io(&to, "create link"))?;
        } else if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            fs::copy(&from, &to).map_err(io(&from, "copy file"))?;
        }
    }
    // Last, so that a read-only directory could still be filled.
    fs::set_permissions(dst, meta.permissions()).map_err(io(dst, "set permissions"))?;
    Ok(())
}

#[cfg(unix)]
fn copy_link(target: &Path, to: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, to)
}

#[cfg(not(unix))]
fn copy_link(_target: &Path, _to: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symbolic links are only copied on Unix",
    ))
}

/// Gives the Windows root at `root` (a copy) new identities in place:
/// machine SID, computer name `name`, MachineGuid. `seed` (tests only)
/// makes it deterministic.
pub fn stamp_root(root: &Path, name: &str, seed: Option<u64>) -> Result<CloneReport> {
    validate_computer_name(name)?;
    let mut backend = DirBackend::open(root)?;
    let dirs = find_windows_dirs(&backend)?;
    if dirs.is_empty() {
        return Err(ResealError::NoInstall {
            root: backend.describe(),
        });
    }
    let options = GeneralizeOptions {
        seed,
        ..GeneralizeOptions::default()
    };
    let mut guid_rng = Random::new(seed, "MachineGuid");
    let mut report = CloneReport {
        name: name.to_string(),
        path: root.to_path_buf(),
        machine_guid: String::new(),
        answer_files: Vec::new(),
        sid: Vec::new(),
        not_done: Vec::new(),
        files_changed: 0,
    };
    let mut changes = Vec::new();
    for dir in dirs {
        let install = load_install(&backend, &dir);
        if let Some(e) = install.load_errors.first() {
            return Err(invalid(e.path.clone(), e.message.clone()));
        }
        let ctx = PlanContext {
            install: &install,
            backend: &backend,
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
        let new = loop {
            let s = random_machine_sid(&mut rng)?;
            if s != old {
                break s;
            }
        };
        let mut plan = MachineSid::plan_rewrite(&ctx, &old, source, &new, rng.is_seeded())?;
        const OP: &str = "stamp";
        let reason = "computer name of this clone";
        for cs in ctx.control_sets() {
            let main = format!(r"{cs}\Control\ComputerName\ComputerName");
            plan.push(set_sz(
                &ctx,
                OP,
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
                    plan.push(set_sz(&ctx, OP, HiveId::System, &key, value, name, reason));
                }
            }
        }
        let guid = random_guid(&mut guid_rng)?;
        plan.edits.push(PlannedEdit::reg(
            OP,
            HiveId::Software,
            RegEdit::SetValue {
                key: r"Microsoft\Cryptography".into(),
                name: "MachineGuid".into(),
                value_type: REG_SZ,
                data: crate::context::reg_sz(&guid),
                secret: false,
            },
            "machine GUID of this clone",
        ));
        if let Some(v) = ctx.value(&HiveId::Security, r"Policy\PolAcDmN", "") {
            let data = lsa_unicode_string_data(&v.data, name);
            if data != v.data {
                plan.edits.push(PlannedEdit::reg(
                    OP,
                    HiveId::Security,
                    RegEdit::SetValue {
                        key: r"Policy\PolAcDmN".into(),
                        name: String::new(),
                        value_type: v.value_type,
                        data,
                        secret: false,
                    },
                    "account domain name (the computer name) of this clone",
                ));
            }
        }
        let (edit, update) = answer_file_edit(&ctx, name)?;
        plan.edits.extend(edit);
        report.answer_files.push(update);
        for note in shadowing_answer_files(&ctx) {
            plan.not_done(OP, note);
        }
        report.machine_guid = guid;
        let applied = apply(&install, &plan.edits)?;
        changes.extend(applied.changes);
        report.sid.extend(plan.sid);
        report.not_done.extend(plan.not_done);
    }
    backend.commit(&changes)?;
    report.files_changed = changes.len();
    Ok(report)
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

/// The write that makes `<windir>\Panther\unattend.xml` name the clone
/// `name` in specialize (none when it does already).
fn answer_file_edit(
    ctx: &PlanContext,
    name: &str,
) -> Result<(Option<PlannedEdit>, AnswerFileUpdate)> {
    const OP: &str = "stamp";
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
        OP,
        FileEdit::write(path.clone(), data),
        "specialize ComputerName of this clone, so that its name survives specialize",
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

/// Makes `opts.count` stamped copies of the generalized root `src` in
/// `opts.out`, in parallel. See the module documentation.
pub fn stamp(src: &Path, opts: &StampOptions) -> Result<StampReport> {
    let names = clone_names(opts)?;
    let source = DirBackend::open(src)?;
    if find_windows_dirs(&source)?.is_empty() {
        return Err(ResealError::NoInstall {
            root: source.describe(),
        });
    }
    let src = source.root().to_path_buf();
    fs::create_dir_all(&opts.out).map_err(|e| ResealError::Io {
        path: opts.out.clone(),
        action: "create the output folder",
        source: e,
    })?;
    let out = fs::canonicalize(&opts.out).map_err(|e| ResealError::Io {
        path: opts.out.clone(),
        action: "open the output folder",
        source: e,
    })?;
    if out.starts_with(&src) {
        return Err(invalid(
            opts.out.display().to_string(),
            "the output folder is inside the source image",
        ));
    }
    for n in &names {
        let p = out.join(n);
        if fs::symlink_metadata(&p).is_ok() {
            return Err(invalid(
                p.display().to_string(),
                "exists already; stamp into an empty folder or choose other names",
            ));
        }
    }
    let results: Vec<Result<CloneReport>> = names
        .par_iter()
        .enumerate()
        .map(|(i, name)| {
            let dst = out.join(name);
            copy_tree(&src, &dst)?;
            stamp_root(&dst, name, opts.seed.map(|s| clone_seed(s, i)))
        })
        .collect();
    let mut clones = Vec::with_capacity(results.len());
    let mut first_err = None;
    for r in results {
        match r {
            Ok(c) => clones.push(c),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        for n in &names {
            let _ = fs::remove_dir_all(out.join(n));
        }
        return Err(e);
    }
    Ok(StampReport {
        source: src,
        clones,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(expand_pattern("WEB-{n:03}", 7).expect("p"), "WEB-007");
        assert_eq!(expand_pattern("WEB-{n}", 12).expect("p"), "WEB-12");
        assert_eq!(expand_pattern("A{{n}}{n:2}", 3).expect("p"), "A{n}03");
        assert!(expand_pattern("WEB-{x}", 1).is_err());
        assert!(expand_pattern("WEB-{n", 1).is_err());
        assert!(expand_pattern("WEB-}", 1).is_err());
    }

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
    fn names_are_unique_and_counted() {
        let o = |names| StampOptions {
            count: 2,
            out: PathBuf::new(),
            names,
            seed: None,
        };
        assert!(clone_names(&o(CloneNames::List(vec!["a".into(), "A".into()]))).is_err());
        assert!(clone_names(&o(CloneNames::List(vec!["a".into()]))).is_err());
        assert!(clone_names(&o(CloneNames::Pattern("WEB".into()))).is_err());
        assert_eq!(
            clone_names(&o(CloneNames::Pattern("WEB-{n:02}".into()))).expect("ok"),
            ["WEB-01", "WEB-02"]
        );
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
        assert_ne!(clone_seed(1, 0), clone_seed(1, 1));
    }
}
