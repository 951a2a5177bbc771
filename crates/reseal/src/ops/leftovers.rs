//! `leftovers`: deletes logs, dumps, caches and stale copies that belong to
//! the reference machine. Only what exists is deleted (names matched
//! case-insensitively from the backend's listing).
//!
//! Evidence per item (sysprep-internals §5.6, §5.8; confidence in brackets):
//! * `<windir>\System32\winevt\Logs\*.evtx`: "deletes event logs"
//!   (sysprep command-line doc [D2], high).
//! * `<windir>\Panther`: generalize deletes some Setup logs ([D1], high;
//!   which ones is unknown). Deleted: `*.log`, `*.etl`, `diagerr.xml`,
//!   `diagwrn.xml` and the `UnattendGC` directory. Answer files
//!   (`unattend.xml`, `autounattend.xml`) and other files are kept: users
//!   place answer files there on purpose, and `answer-file` writes one.
//! * `<windir>\System32\Sysprep\Panther\*`: logs of earlier sysprep runs
//!   (sysprep logs its generalize run there, [D1]; high for the location).
//! * `<windir>\INF\setupapi*.log`: "device log files are deleted" ([D5],
//!   high for the statement, medium for the names).
//! * `ProgramData\Microsoft\Windows\WER\ReportArchive\*`, `ReportQueue\*`,
//!   `<windir>\Temp\*`, `<windir>\Prefetch\*`, `<windir>\MEMORY.DMP`,
//!   `<windir>\Minidump\*`: not documented as sysprep actions; image-prep
//!   frameworks clean them (low). They only hold the reference machine's
//!   history and crash data.
//! * `pagefile.sys`, `hiberfil.sys`, `swapfile.sys` at the volume root:
//!   DISM capture skips them by default (medium); Windows recreates them.
//!   A hibernated volume is refused by preflight before this runs.
//! * `System Volume Information`: generalize "clears any system restore
//!   points" ([D2], high). On disk these are the volume shadow copy store —
//!   the catalog `{3808876b-c176-4e48-b7ae-04046e6cc752}` and the diff areas
//!   `{GUID}{3808876b-c176-4e48-b7ae-04046e6cc752}` — and System Restore's
//!   `SPP` directory (medium: VSS on-disk naming as documented by forensic
//!   tooling, not by Microsoft). Catalog and diff areas go together, so the
//!   volume is left with no shadow copies rather than a broken set. Other
//!   files there (indexer id, tracking log, …) are kept.
//! * `<windir>\System32\config\RegBack\*`: older hive copies that still hold
//!   the old identities, SAM and LSA secrets (§5.8, medium: engineering
//!   reason, not a sysprep action).

use crate::backend::{DirEntry, join};
use crate::context::PlanContext;
use crate::edit::{FileEdit, PlannedEdit};
use crate::error::Result;

use super::{Operation, Plan, find_entry, list_dir, volume_root};

const NAME: &str = "leftovers";

/// The VSS store GUID that names shadow-copy files.
pub const VSS_STORE_GUID: &str = "{3808876b-c176-4e48-b7ae-04046e6cc752}";

/// Deletes leftovers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Leftovers;

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

/// The edit that removes `entry` of `dir`.
fn remove(dir: &str, entry: &DirEntry, reason: &str) -> PlannedEdit {
    let path = join(dir, &entry.name);
    let change = if entry.is_dir {
        FileEdit::DeleteTree { path }
    } else {
        FileEdit::Delete { path }
    };
    PlannedEdit::file(NAME, change, reason)
}

/// Removes the entries of `dir` that `keep` does not accept.
fn remove_matching(
    ctx: &PlanContext,
    plan: &mut Plan,
    dir: &str,
    wanted: impl Fn(&DirEntry) -> bool,
    reason: &str,
) {
    for e in list_dir(ctx, dir) {
        if wanted(&e) {
            plan.edits.push(remove(dir, &e, reason));
        }
    }
}

impl Operation for Leftovers {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "delete event logs, setup and device logs, dumps, temp and prefetch files, page/hibernation files, restore points and RegBack copies"
    }

    fn default_enabled(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &PlanContext) -> Result<Plan> {
        let mut plan = Plan::default();
        let win = |rel: &str| ctx.install.windows_path(rel);
        let root = volume_root(ctx);

        remove_matching(
            ctx,
            &mut plan,
            &win(r"System32\winevt\Logs"),
            |e| !e.is_dir && lower(&e.name).ends_with(".evtx"),
            "event log (sysprep deletes event logs)",
        );

        remove_matching(
            ctx,
            &mut plan,
            &win("Panther"),
            |e| {
                let n = lower(&e.name);
                if e.is_dir {
                    n == "unattendgc"
                } else {
                    n.ends_with(".log")
                        || n.ends_with(".etl")
                        || n == "diagerr.xml"
                        || n == "diagwrn.xml"
                }
            },
            "setup log of the reference machine",
        );

        remove_matching(
            ctx,
            &mut plan,
            &win(r"System32\Sysprep\Panther"),
            |_| true,
            "log of an earlier sysprep run",
        );

        remove_matching(
            ctx,
            &mut plan,
            &win("INF"),
            |e| {
                let n = lower(&e.name);
                !e.is_dir && n.starts_with("setupapi") && n.ends_with(".log")
            },
            "device installation log (sysprep deletes device logs)",
        );

        let wer = join(&root, r"ProgramData\Microsoft\Windows\WER");
        for sub in ["ReportArchive", "ReportQueue"] {
            if let Some((dir, e)) = find_entry(ctx, &wer, sub) {
                if e.is_dir {
                    remove_matching(
                        ctx,
                        &mut plan,
                        &dir,
                        |_| true,
                        "error report of the reference machine",
                    );
                }
            }
        }

        remove_matching(ctx, &mut plan, &win("Temp"), |_| true, "temporary file");
        remove_matching(
            ctx,
            &mut plan,
            &win("Prefetch"),
            |_| true,
            "prefetch trace of the reference machine",
        );
        remove_matching(
            ctx,
            &mut plan,
            &win("Minidump"),
            |_| true,
            "crash dump of the reference machine",
        );
        remove_matching(
            ctx,
            &mut plan,
            &ctx.install.windows_dir,
            |e| !e.is_dir && e.name.eq_ignore_ascii_case("MEMORY.DMP"),
            "crash dump of the reference machine",
        );

        remove_matching(
            ctx,
            &mut plan,
            &root,
            |e| {
                let n = lower(&e.name);
                !e.is_dir && (n == "pagefile.sys" || n == "hiberfil.sys" || n == "swapfile.sys")
            },
            "paging/hibernation file: Windows recreates it",
        );

        if let Some((svi, e)) = find_entry(ctx, &root, "System Volume Information") {
            if e.is_dir {
                remove_matching(
                    ctx,
                    &mut plan,
                    &svi,
                    |e| {
                        let n = lower(&e.name);
                        (!e.is_dir && n.ends_with(VSS_STORE_GUID)) || (e.is_dir && n == "spp")
                    },
                    "restore point data (sysprep clears system restore points)",
                );
            }
        }

        remove_matching(
            ctx,
            &mut plan,
            &win(r"System32\config\RegBack"),
            |_| true,
            "stale hive copy holding the reference machine's identities",
        );

        Ok(plan)
    }
}
