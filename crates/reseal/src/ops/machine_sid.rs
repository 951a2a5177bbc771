//! `machine-sid`: gives the install a new machine SID, rewritten offline in
//! every place it is known to live (DESIGN decision 3; sysprep-internals
//! §3.2, locations S1–S14).
//!
//! * The old SID is read from SECURITY `Policy\PolAcDmS`, else from the end
//!   of SAM `SAM\Domains\Account` `V` ([`machine_sid`]).
//! * The new one is `--sid` (checked: `S-1-5-21-x-y-z`, three non-zero
//!   32-bit numbers, different from the old SID and from the primary domain
//!   SID in `Policy\PolPrDmS`), or 96 random bits from the operating
//!   system's CSPRNG (`getrandom`). Each random number below 65536 is drawn
//!   again: not needed for safety (the loss is under 2^-14 bits), but it
//!   rules out 0 and keeps the SID in the shape Windows gives it, far from
//!   small numbers that a reader might mistake for RIDs. With
//!   [`GeneralizeOptions::seed`](crate::options::GeneralizeOptions::seed)
//!   (tests only) the numbers come from [`SplitMix64`] seeded with the seed
//!   and the Windows directory's name instead.
//! * Every loaded hive (SYSTEM, SOFTWARE, SAM, SECURITY, DEFAULT, each
//!   profile's NTUSER.DAT and UsrClass.dat) in which the old SID occurs —
//!   live, in free space, or in its transaction logs — gets one
//!   [`RegEdit::RewriteSid`]: security descriptors (S4, S9, S10), key names
//!   (S6, S7, S8, S11 and any other key named by a local SID), value names,
//!   binary and string SIDs in value data (S1, S3, S5, S7, S8) — also where
//!   the SID is part of a longer name or string, such as the URL-encoded
//!   paths of `Local Settings\MrtCache` in UsrClass.dat — then the unused
//!   bytes inside security descriptors (ACL slack) and free space are
//!   zeroed. Well-known SIDs (`S-1-5-18`, `S-1-5-32-544`, …) and
//!   other domains' SIDs never match (only the old domain is searched).
//! * Folders named by a local SID are renamed (S13): `$Recycle.Bin\<SID>`
//!   at the volume root and, in every profile (ProfileList and the folders
//!   of `Users`), `AppData\Roaming\Microsoft\Protect\<SID>` and
//!   `AppData\Roaming\Microsoft\Crypto\RSA\<SID>`. Files and folders
//!   whose name holds a local SID among other text are renamed too: in
//!   those folders, and anywhere under `Program Files\WindowsApps` (down
//!   to [`WINDOWS_APPS_DEPTH`] levels), where the package resource cache
//!   keeps per-user files `…\S-1-5-21-…-1001-MergedResources-0.pri`.
//! * Task definitions under `<windir>\System32\Tasks` (XML, usually UTF-16LE)
//!   have SID strings (`<UserId>`, principals) rewritten.
//! * What cannot be carried is reported as not done: DPAPI-protected
//!   secrets of local users, file security descriptors (the directory
//!   backend has no access to NTFS `$Secure`), Windows' own first-boot SID
//!   change (setupcl), which is not armed because the SID was changed here.
//!
//! A verification pass ([`verify_hive`], [`verify_files`], run by
//! [`apply`](crate::apply::apply) before anything is committed) scans every
//! rewritten hive image byte for byte (binary, UTF-16 and ASCII forms, free
//! space included, and the bare 12 bytes of the domain's sub-authorities
//! `A`, `B`, `C` in any context, which also finds SIDs whose header was
//! overwritten, the `15000000`+A+B+C form in ACL slack), every file this
//! run writes and every renamed name for the old SID, and fails the run
//! when it is still there.
//!
//! Idempotence: after a rewrite the old SID is gone and the image carries
//! the markers of a generalized image, so a second default run plans
//! nothing (the install is already generalized). Selecting this operation
//! alone on an image does stamp a new SID again each time: that is a
//! deliberate request (it is how [`stamp`](crate::stamp) works).

use rayon::prelude::*;
use serde::Serialize;

use reseal_hive::Sid;
use reseal_hive::sid_scan::{
    RemnantForm, find_domain_sid, find_domain_sub_authorities, replace_domain_sid,
    replace_domain_sid_in_units,
};

use crate::backend::{FileChange, join};
use crate::context::PlanContext;
use crate::describe::{hive_value, machine_sid};
use crate::discover::profiles;
use crate::edit::{Edit, FileEdit, PlannedEdit, RegEdit};
use crate::error::{ResealError, Result};
use crate::hives::HiveId;
use crate::options::{GeneralizeOptions, SidChoice};

use super::{Operation, Plan, find_entry, list_dir, volume_root};

/// Stable name of the operation.
pub const NAME: &str = "machine-sid";

/// Folders inside a profile whose subfolders are named by the user's SID.
pub const PROFILE_SID_FOLDERS: [&str; 2] = [
    r"AppData\Roaming\Microsoft\Protect",
    r"AppData\Roaming\Microsoft\Crypto\RSA",
];

/// Under `Program Files`, the folder of packaged (Appx) applications, whose
/// resource cache holds per-user files named by the user's SID.
pub const WINDOWS_APPS: &str = r"Program Files\WindowsApps";

/// How deep under [`WINDOWS_APPS`] names are looked at (the cache files are
/// at `<package>\microsoft.system.package.metadata\<file>`, depth 3).
pub const WINDOWS_APPS_DEPTH: u32 = 4;

/// Task definition files larger than this are not read (real ones are a
/// few KiB).
const MAX_TASK_FILE: u64 = 4 << 20;

/// Rewrites the machine SID.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineSid;

/// Occurrences of the old SID in one hive, by kind of place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HiveSidCounts {
    /// Which hive ("SAM", "NTUSER.DAT of Users\demo").
    pub hive: String,
    /// Its path inside the image.
    pub path: String,
    /// Security descriptors (shared cells counted once).
    pub descriptors: usize,
    /// Keys named by the SID.
    pub key_names: usize,
    /// Values named by the SID.
    pub value_names: usize,
    /// Values whose data holds the SID (binary or string).
    pub value_data: usize,
    /// Of `key_names`, keys whose name holds the SID among other text.
    pub substring_key_names: usize,
    /// Of `value_names`, values whose name holds the SID among other text.
    pub substring_value_names: usize,
    /// String SIDs inside longer strings in value data (occurrences).
    pub substring_value_data: usize,
    /// Security descriptors whose unused bytes (ACL slack, gaps) are zeroed.
    pub descriptor_slack: usize,
    /// Found only in free space, cell slack or the transaction logs.
    pub stale_only: bool,
}

/// A folder or file renamed because its name holds a local SID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderRename {
    /// Path inside the image before.
    pub from: String,
    /// Path inside the image after.
    pub to: String,
}

/// What the operation rewrites (part of the install report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SidSummary {
    /// The machine SID before.
    pub old: String,
    /// The machine SID after.
    pub new: String,
    /// Where the old SID was read.
    pub source: String,
    /// Whether the new SID was derived from a seed (tests) rather than the
    /// CSPRNG or `--sid`.
    pub seeded: bool,
    /// Per hive that holds the old SID.
    pub hives: Vec<HiveSidCounts>,
    /// Folders and files renamed (parents before what they contain; each
    /// `from` is the path at the time of its rename).
    pub folders: Vec<FolderRename>,
    /// Task definition files rewritten.
    pub task_files: Vec<String>,
}

impl SidSummary {
    /// Human lines for the run report.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "machine SID: {} -> {} (read from {}{})\n",
            self.old,
            self.new,
            self.source,
            if self.seeded {
                "; seeded, tests only"
            } else {
                ""
            }
        );
        for h in &self.hives {
            s.push_str(&format!(
                "  {}: {} descriptor(s), {} key name(s), {} value name(s), {} value data{}{}{}\n",
                h.hive,
                h.descriptors,
                h.key_names,
                h.value_names,
                h.value_data,
                if h.substring_key_names + h.substring_value_names + h.substring_value_data > 0 {
                    format!(
                        " (inside longer text: {} key name(s), {} value name(s), {} string(s))",
                        h.substring_key_names, h.substring_value_names, h.substring_value_data
                    )
                } else {
                    String::new()
                },
                if h.descriptor_slack > 0 {
                    format!(", {} descriptor(s) with slack zeroed", h.descriptor_slack)
                } else {
                    String::new()
                },
                if h.stale_only {
                    " (stale copies only)"
                } else {
                    ""
                }
            ));
        }
        s.push_str(&format!(
            "  {} folder(s) and file(s) renamed, {} task file(s) rewritten\n",
            self.folders.len(),
            self.task_files.len()
        ));
        s
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast, well-mixed 64-bit
/// generator. Used only when a seed is given, so that tests get the same
/// "random" identities every time. Not a CSPRNG: never used for real runs.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fills `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let b = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

/// A source of random bytes: the CSPRNG, or a seeded [`SplitMix64`].
#[derive(Debug, Clone)]
pub enum Random {
    /// The operating system's CSPRNG.
    Os,
    /// Deterministic, for tests.
    Seeded(SplitMix64),
}

impl Random {
    /// The CSPRNG, or a generator derived from `seed` and `salt` when a seed
    /// is given.
    pub fn new(seed: Option<u64>, salt: &str) -> Random {
        match seed {
            None => Random::Os,
            Some(s) => Random::Seeded(SplitMix64::new(s ^ fnv1a(salt))),
        }
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        match self {
            Random::Os => getrandom::fill(buf).map_err(|e| ResealError::Io {
                path: "getrandom".into(),
                action: "read random bytes from the operating system",
                source: std::io::Error::other(e.to_string()),
            }),
            Random::Seeded(r) => {
                r.fill(buf);
                Ok(())
            }
        }
    }

    /// Whether this is the seeded generator.
    pub fn is_seeded(&self) -> bool {
        matches!(self, Random::Seeded(_))
    }
}

/// FNV-1a over the upper-cased text (mixes a name into a seed).
fn fnv1a(s: &str) -> u64 {
    s.to_uppercase()
        .bytes()
        .fold(0xCBF2_9CE4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
        })
}

/// A new random machine SID `S-1-5-21-x-y-z`, each number at least 65536.
pub fn random_machine_sid(rng: &mut Random) -> Result<Sid> {
    let mut subs = [0u32; 3];
    for s in &mut subs {
        while *s < 0x1_0000 {
            let mut b = [0u8; 4];
            rng.fill(&mut b)?;
            *s = u32::from_le_bytes(b);
        }
    }
    let mut bytes = [0u8; 12];
    for (i, s) in subs.iter().enumerate() {
        bytes[i * 4..i * 4 + 4].copy_from_slice(&s.to_le_bytes());
    }
    Ok(Sid::random_machine_domain(bytes))
}

/// Parses a machine SID given by the user: `S-1-5-21-x-y-z`, three 32-bit
/// numbers, none of them 0. Errors are [`ResealError::InvalidInput`].
pub fn parse_machine_sid(s: &str) -> Result<Sid> {
    let bad = |why: &str| ResealError::InvalidInput {
        what: format!("machine SID {s:?}"),
        message: format!(
            "{why}; expected S-1-5-21-x-y-z with x, y, z from 1 to 4294967295 (e.g. S-1-5-21-1004336348-1177238915-682003330)"
        ),
    };
    let sid: Sid = s.trim().parse().map_err(|e| bad(&format!("{e}")))?;
    if !sid.is_machine_domain() {
        return Err(bad("not a machine SID"));
    }
    if sid.sub_authorities()[1..].contains(&0) {
        return Err(bad("a sub-authority is 0"));
    }
    Ok(sid)
}

/// The new SID for `old`, as the options ask (`None` with `--keep-sid`).
fn choose_new(ctx: &PlanContext, old: &Sid) -> Result<Option<(Sid, bool)>> {
    let opts: &GeneralizeOptions = ctx.options;
    let primary = hive_value(ctx.install, &HiveId::Security, r"Policy\PolPrDmS", "")
        .and_then(|v| Sid::from_bytes(&v.data).map(|(s, _)| s));
    let (new, seeded) = match &opts.sid {
        SidChoice::Keep => return Ok(None),
        SidChoice::Given(s) => (parse_machine_sid(s)?, false),
        SidChoice::Random => {
            let mut rng = Random::new(opts.seed, &ctx.install.windows_dir);
            loop {
                let s = random_machine_sid(&mut rng)?;
                if &s != old && Some(&s) != primary.as_ref() {
                    break (s, rng.is_seeded());
                }
            }
        }
    };
    let refuse = |why: String| ResealError::InvalidInput {
        what: format!("machine SID {new}"),
        message: why,
    };
    if &new == old {
        return Err(refuse(format!(
            "it is the image's current machine SID ({old}); give another one or --keep-sid"
        )));
    }
    if Some(&new) == primary.as_ref() {
        return Err(refuse(
            "it is the SID of the domain the image is joined to (SECURITY Policy\\PolPrDmS)".into(),
        ));
    }
    Ok(Some((new, seeded)))
}

/// A name with the old domain SID replaced, if it holds it.
fn renamed(name: &str, old: &Sid, new: &Sid) -> Option<String> {
    let units: Vec<u16> = name.encode_utf16().collect();
    replace_domain_sid_in_units(&units, old, new).map(|u| String::from_utf16_lossy(&u))
}

/// The profile folders of the install: ProfileList, then `Users\*`.
fn profile_dirs(ctx: &PlanContext) -> Vec<String> {
    let mut dirs: Vec<String> = Vec::new();
    let mut add = |d: String| {
        if !dirs.iter().any(|x| x.eq_ignore_ascii_case(&d)) {
            dirs.push(d);
        }
    };
    if let Some(sw) = ctx.hive(&HiveId::Software) {
        for p in profiles(sw, &ctx.install.windows_dir) {
            if let Some(d) = p.dir {
                add(d);
            }
        }
    }
    if let Some((users, _)) = find_entry(ctx, &volume_root(ctx), "Users") {
        for e in list_dir(ctx, &users) {
            if e.is_dir {
                add(join(&users, &e.name));
            }
        }
    }
    dirs
}

/// Every file under `dir` (depth-limited), paths inside the image.
fn files_under(ctx: &PlanContext, dir: &str, depth: u32, out: &mut Vec<(String, u64)>) {
    for e in list_dir(ctx, dir) {
        let p = join(dir, &e.name);
        if e.is_dir {
            if depth < 16 {
                files_under(ctx, &p, depth + 1, out);
            }
        } else {
            out.push((p, e.size));
        }
    }
}

impl MachineSid {
    /// Hives holding `old`: live (with counts), or only as stale copies.
    fn scan_hives(ctx: &PlanContext, old: &Sid) -> Result<Vec<(HiveId, HiveSidCounts)>> {
        let found: Vec<Result<Option<(HiveId, HiveSidCounts)>>> = ctx
            .install
            .hives
            .par_iter()
            .map(|h| {
                let r = h
                    .hive
                    .find_sids(old)
                    .map_err(|e| ResealError::hive(&h.path, e))?;
                let live = !r.occurrences.is_empty();
                let holds = |b: &[u8]| {
                    !find_domain_sid(b, old).is_empty()
                        || !find_domain_sub_authorities(b, old).is_empty()
                };
                let stale = !live
                    && (r.descriptor_slack > 0
                        || holds(&h.hive.to_bytes())
                        || h.logs
                            .iter()
                            .any(|l| ctx.backend.read(l).is_ok_and(|b| holds(&b))));
                Ok((live || stale).then(|| {
                    (
                        h.id.clone(),
                        HiveSidCounts {
                            hive: h.id.label(),
                            path: h.path.clone(),
                            descriptors: r.descriptors,
                            key_names: r.key_names,
                            value_names: r.value_names,
                            value_data: r.value_data,
                            substring_key_names: r.substring_key_names,
                            substring_value_names: r.substring_value_names,
                            substring_value_data: r.substring_value_data,
                            descriptor_slack: r.descriptor_slack,
                            stale_only: stale,
                        },
                    )
                }))
            })
            .collect();
        let mut out = Vec::new();
        for f in found {
            out.extend(f?);
        }
        Ok(out)
    }

    /// Renames of folders named by a local SID.
    fn folders(ctx: &PlanContext, old: &Sid, new: &Sid) -> Vec<FolderRename> {
        let mut parents = Vec::new();
        if let Some((bin, _)) = find_entry(ctx, &volume_root(ctx), "$Recycle.Bin") {
            parents.push(bin);
        }
        for d in profile_dirs(ctx) {
            for sub in PROFILE_SID_FOLDERS {
                let p = join(&d, sub);
                if ctx.backend.is_dir(&p) {
                    parents.push(p);
                }
            }
        }
        let mut out = Vec::new();
        for parent in parents {
            for e in list_dir(ctx, &parent) {
                if let Some(n) = renamed(&e.name, old, new) {
                    out.push(FolderRename {
                        from: join(&parent, &e.name),
                        to: join(&parent, &n),
                    });
                }
            }
        }
        if let Some((pf, _)) = find_entry(ctx, &volume_root(ctx), "Program Files") {
            if let Some((apps, _)) = find_entry(ctx, &pf, "WindowsApps") {
                Self::renames_under(ctx, &apps, &apps, 1, old, new, &mut out);
            }
        }
        out
    }

    /// Renames of every file and folder under `dir` (read at `dir`, named
    /// `now` once its parents' renames are done) whose name holds `old`,
    /// parents first, down to [`WINDOWS_APPS_DEPTH`] levels.
    fn renames_under(
        ctx: &PlanContext,
        dir: &str,
        now: &str,
        depth: u32,
        old: &Sid,
        new: &Sid,
        out: &mut Vec<FolderRename>,
    ) {
        for e in list_dir(ctx, dir) {
            let here = join(now, &e.name);
            let after = match renamed(&e.name, old, new) {
                Some(n) => {
                    let to = join(now, &n);
                    out.push(FolderRename {
                        from: here,
                        to: to.clone(),
                    });
                    to
                }
                None => here,
            };
            if e.is_dir && depth < WINDOWS_APPS_DEPTH {
                Self::renames_under(ctx, &join(dir, &e.name), &after, depth + 1, old, new, out);
            }
        }
    }

    /// Task definitions holding the old SID, with their new contents.
    fn tasks(ctx: &PlanContext, old: &Sid, new: &Sid) -> Vec<(String, Vec<u8>)> {
        let dir = ctx.install.windows_path(r"System32\Tasks");
        let mut files = Vec::new();
        files_under(ctx, &dir, 0, &mut files);
        files
            .into_par_iter()
            .filter(|(_, size)| *size <= MAX_TASK_FILE)
            .filter_map(|(p, _)| {
                let data = ctx.backend.read(&p).ok()?;
                replace_domain_sid(&data, old, new).map(|(d, _)| (p, d))
            })
            .collect()
    }

    /// Plans the rewrite of `old` into `new` (used by `plan` and by
    /// [`stamp`](crate::stamp)).
    pub fn plan_rewrite(
        ctx: &PlanContext,
        old: &Sid,
        source: &str,
        new: &Sid,
        seeded: bool,
    ) -> Result<Plan> {
        let mut plan = Plan::default();
        let hives = Self::scan_hives(ctx, old)?;
        for (id, c) in &hives {
            plan.edits.push(PlannedEdit::reg(
                NAME,
                id.clone(),
                RegEdit::RewriteSid {
                    old: old.to_string(),
                    new: new.to_string(),
                },
                if c.stale_only {
                    "machine SID: stale copies in free space or logs are zeroed".to_string()
                } else {
                    format!(
                        "machine SID in {} descriptor(s), {} key name(s), {} value name(s), {} value data",
                        c.descriptors, c.key_names, c.value_names, c.value_data
                    )
                },
            ));
        }
        let folders = Self::folders(ctx, old, new);
        for f in &folders {
            plan.edits.push(PlannedEdit::file(
                NAME,
                FileEdit::Rename {
                    from: f.from.clone(),
                    to: f.to.clone(),
                },
                "folder or file named by a local account's SID",
            ));
        }
        let tasks = Self::tasks(ctx, old, new);
        let task_files = tasks.iter().map(|(p, _)| p.clone()).collect();
        for (p, d) in tasks {
            plan.edits.push(PlannedEdit::file(
                NAME,
                FileEdit::write(p, d),
                "task definition naming a local account by SID",
            ));
        }
        plan.not_done(
            NAME,
            "DPAPI: local users' master keys (AppData\\Roaming\\Microsoft\\Protect\\<SID>) are bound to the old user SIDs; the folders were renamed, but secrets protected before (saved credentials, Wi-Fi and browser secrets, EFS private keys) can no longer be decrypted by local users",
        );
        if !ctx.backend.rewrites_file_security() {
            plan.not_done(
                NAME,
                "file security: this backend has no access to NTFS security descriptors ($Secure); files and folders owned by or granting access to local accounts still carry the old SID (the backend's notes say which, where it can tell)",
            );
        }
        plan.not_done(
            NAME,
            "Windows' own first-boot SID change (setupcl) is not armed: the SID was changed offline instead",
        );
        let regback = ctx.install.windows_path(r"System32\config\RegBack");
        if list_dir(ctx, &regback)
            .iter()
            .any(|e| !e.is_dir && e.size > 0)
        {
            plan.not_done(
                NAME,
                format!(
                    "{regback}: stale hive copies still hold the old SID (the leftovers operation deletes them)"
                ),
            );
        }
        plan.sid = Some(SidSummary {
            old: old.to_string(),
            new: new.to_string(),
            source: source.to_string(),
            seeded,
            hives: hives.into_iter().map(|(_, c)| c).collect(),
            folders,
            task_files,
        });
        Ok(plan)
    }
}

impl Operation for MachineSid {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "give the install a new machine SID, rewritten offline in every hive (descriptors, SID-named keys, values), SID-named folders and task definitions"
    }

    fn default_enabled(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &PlanContext) -> Result<Plan> {
        let mut plan = Plan::default();
        if ctx.options.sid == SidChoice::Keep {
            plan.not_done(
                NAME,
                "machine SID kept (--keep-sid): every clone of this image shares it unless stamped (reseal stamp)",
            );
            return Ok(plan);
        }
        let Some((old, source)) = machine_sid(ctx.install) else {
            plan.not_done(
                NAME,
                "no machine SID found (SECURITY Policy\\PolAcDmS, SAM Domains\\Account V): not changed",
            );
            return Ok(plan);
        };
        let Some((new, seeded)) = choose_new(ctx, &old)? else {
            return Ok(plan);
        };
        Self::plan_rewrite(ctx, &old, source, &new, seeded)
    }
}

/// Verification after the edits of one hive: the hive image about to be
/// written must not hold any old SID that an edit rewrote, in any form,
/// anywhere (free space included).
pub fn verify_hive(path: &str, changes: &[&RegEdit], image: &[u8]) -> Result<()> {
    for c in changes {
        let RegEdit::RewriteSid { old, .. } = c else {
            continue;
        };
        let Ok(sid) = old.parse::<Sid>() else {
            continue;
        };
        let hits = find_domain_sid(image, &sid);
        if let Some(first) = hits.first() {
            return Err(ResealError::SidLeftover {
                place: path.to_string(),
                sid: old.clone(),
                detail: format!(
                    "{} occurrence(s), the first at file offset {:#x} ({:?})",
                    hits.len(),
                    first.offset,
                    first.form
                ),
            });
        }
        // What no SID parser sees: the domain's sub-authorities without a
        // valid SID header (an overwritten header in ACL slack, a record
        // that stores them apart).
        let remnants = find_domain_sub_authorities(image, &sid);
        if let Some(first) = remnants.first() {
            return Err(ResealError::SidLeftover {
                place: path.to_string(),
                sid: old.clone(),
                detail: format!(
                    "{} remnant(s) of its sub-authorities, the first at file offset {:#x} ({})",
                    remnants.len(),
                    first.offset,
                    match first.form {
                        RemnantForm::WithLeading21 => "15000000 and the three 32-bit values",
                        RemnantForm::SubAuthorities => "the three 32-bit values",
                    }
                ),
            });
        }
    }
    Ok(())
}

/// Verification of the file changes of one install: when the edits rewrite
/// a machine SID, no file written and no renamed name may hold the old one.
pub fn verify_files(edits: &[PlannedEdit], changes: &[FileChange]) -> Result<()> {
    let mut olds: Vec<Sid> = Vec::new();
    for e in edits {
        if let Edit::Registry {
            change: RegEdit::RewriteSid { old, .. },
            ..
        } = &e.edit
        {
            if let Ok(s) = old.parse::<Sid>() {
                if !olds.contains(&s) {
                    olds.push(s);
                }
            }
        }
    }
    for old in &olds {
        for c in changes {
            let (place, hits) = match c {
                FileChange::Write { path, data } => (path, find_domain_sid(data, old)),
                FileChange::Rename { to, .. } => (to, find_domain_sid(to.as_bytes(), old)),
                _ => continue,
            };
            if let Some(first) = hits.first() {
                return Err(ResealError::SidLeftover {
                    place: place.clone(),
                    sid: old.to_string(),
                    detail: format!(
                        "{} occurrence(s), the first at offset {:#x} ({:?})",
                        hits.len(),
                        first.offset,
                        first.form
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_sids() {
        let s = parse_machine_sid("S-1-5-21-1-2-3").expect("valid");
        assert_eq!(s.to_string(), "S-1-5-21-1-2-3");
        for bad in [
            "",
            "S-1-5-21-1-2",
            "S-1-5-21-1-2-3-4",
            "S-1-5-32-1-2-3",
            "S-1-5-21-1-2-4294967296",
            "S-1-5-21-0-2-3",
            "x",
        ] {
            assert!(
                matches!(
                    parse_machine_sid(bad),
                    Err(ResealError::InvalidInput { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn seeded_sids_repeat_and_differ_by_salt() {
        let a = random_machine_sid(&mut Random::new(Some(7), "Windows")).expect("a");
        let b = random_machine_sid(&mut Random::new(Some(7), "WINDOWS")).expect("b");
        let c = random_machine_sid(&mut Random::new(Some(7), "Win2")).expect("c");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.is_machine_domain());
        assert!(a.sub_authorities()[1..].iter().all(|&x| x >= 0x1_0000));
        let r1 = random_machine_sid(&mut Random::Os).expect("os");
        let r2 = random_machine_sid(&mut Random::Os).expect("os");
        assert_ne!(r1, r2);
    }

    #[test]
    fn renames_only_the_old_domain() {
        let old: Sid = "S-1-5-21-1-2-3".parse().expect("sid");
        let new: Sid = "S-1-5-21-70000-80000-90000".parse().expect("sid");
        assert_eq!(
            renamed("S-1-5-21-1-2-3-1001", &old, &new).as_deref(),
            Some("S-1-5-21-70000-80000-90000-1001")
        );
        assert_eq!(renamed("S-1-5-21-1-2-33-1001", &old, &new), None);
        assert_eq!(renamed("S-1-5-18", &old, &new), None);
    }
}
