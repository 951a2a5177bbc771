//! One generalize run: discover, load, preflight, plan, apply, check,
//! commit, report.

use crate::apply::apply;
use crate::backend::{Backend, FileChange};
use crate::context::PlanContext;
use crate::describe::describe;
use crate::discover::{find_windows_dirs, load_install};
use crate::error::{ResealError, Result};
use crate::ops::{self, Operation};
use crate::options::{GeneralizeOptions, Selection};
use crate::preflight::{Severity, preflight};
use crate::report::{InstallReport, Outcome, REPORT_SCHEMA_VERSION, RunReport};
use crate::unattend::Unattend;
use reseal_hive::Sid;

/// Chooses the operations to run from the selection flags: the
/// `--operations` list in virt-sysprep's grammar
/// ([`operation_list`](crate::options::operation_list)), or the defaults
/// with `--enable`/`--disable`. Unknown names are an error that lists the
/// known ones.
pub fn select_operations(sel: &Selection) -> Result<Vec<Box<dyn Operation>>> {
    let all = ops::all();
    let known: Vec<(&'static str, bool)> = all
        .iter()
        .map(|o| (o.name(), o.default_enabled()))
        .collect();
    if let Some(list) = &sel.only {
        let chosen = crate::options::operation_list(list, &known)?;
        return Ok(all
            .into_iter()
            .filter(|o| chosen.contains(&o.name()))
            .collect());
    }
    for n in sel.enable.iter().chain(&sel.disable) {
        if !known.iter().any(|(k, _)| k.eq_ignore_ascii_case(n)) {
            return Err(ResealError::InvalidInput {
                what: format!("operation {n:?}"),
                message: format!(
                    "unknown operation; known: {}",
                    known.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    let has = |list: &[String], name: &str| list.iter().any(|n| n.eq_ignore_ascii_case(name));
    Ok(all
        .into_iter()
        .filter(|o| {
            (o.default_enabled() || has(&sel.enable, o.name())) && !has(&sel.disable, o.name())
        })
        .collect())
}

/// Generalizes every Windows installation of the image behind `backend`.
///
/// Nothing is written when preflight refuses any install, with `dry_run`,
/// or when an edited hive fails the structural check; all changes of all
/// installs are committed in one all-or-nothing batch.
pub fn generalize(backend: &mut dyn Backend, options: &GeneralizeOptions) -> Result<RunReport> {
    let unattend = match &options.unattend {
        Some((name, bytes)) => Some(Unattend::parse(name, bytes)?),
        None => None,
    };
    let operations = select_operations(&options.selection)?;
    let dirs = {
        let _s = tracing::info_span!("discover").entered();
        find_windows_dirs(backend)?
    };
    if dirs.is_empty() {
        return Err(ResealError::NoInstall {
            root: backend.describe(),
        });
    }
    tracing::info!(installs = dirs.len(), "found Windows installations");
    let mut report = RunReport {
        schema: REPORT_SCHEMA_VERSION,
        tool: "reseal",
        version: env!("CARGO_PKG_VERSION"),
        input: backend.describe(),
        mode: options.mode,
        vm: options.vm,
        dry_run: options.dry_run,
        force: options.force,
        outcome: Outcome::NothingToDo,
        installs: Vec::new(),
        notices: Vec::new(),
    };
    let arms = operations.iter().any(|o| o.name() == "markers");
    let mut changes: Vec<FileChange> = Vec::new();
    for dir in dirs {
        let _install_span = tracing::info_span!("install", dir = %dir).entered();
        let install = {
            let _s = tracing::info_span!("load hives").entered();
            load_install(backend, &dir)
        };
        let (description, findings) = {
            let _s = tracing::info_span!("preflight").entered();
            let description = describe(&install, backend);
            let findings = preflight(&install, backend, &description);
            (description, findings)
        };
        let refused_by: Vec<String> = findings
            .iter()
            .filter(|f| {
                f.severity == Severity::Refuse
                    || (f.severity == Severity::RefuseUnlessForced && !options.force)
            })
            .map(|f| f.id.to_string())
            .collect();
        let already = findings.iter().any(|f| f.id == "already-generalized");
        let mut entry = InstallReport {
            windows_dir: dir.clone(),
            description,
            findings,
            refused: !refused_by.is_empty(),
            refused_by,
            already_generalized: already,
            operations: operations.iter().map(|o| o.name().to_string()).collect(),
            edits: Vec::new(),
            not_done: Vec::new(),
            hives_written: Vec::new(),
            files_changed: 0,
            sid: None,
        };
        if !entry.refused && !already {
            let ctx = PlanContext {
                install: &install,
                backend,
                options,
                unattend: unattend.as_ref(),
            };
            let plan_span = tracing::info_span!("plan").entered();
            for op in &operations {
                let _s = tracing::debug_span!("operation", name = op.name()).entered();
                let plan = op.plan(&ctx)?;
                entry.edits.extend(plan.edits);
                entry.not_done.extend(plan.not_done);
                entry.sid = plan.sid.or(entry.sid.take());
            }
            let left_sid = entry
                .sid
                .as_ref()
                .map(|s| s.new.clone())
                .or_else(|| entry.description.machine_sid.clone());
            if arms && !entry.edits.is_empty() {
                entry
                    .edits
                    .extend(crate::marker::generalize_edits(&ctx, "markers"));
                if let Some(sid) = &left_sid {
                    report
                        .notices
                        .push(crate::report::shared_sid_notice(&report.input, sid));
                }
            }
            drop(plan_span);
            tracing::info!(edits = entry.edits.len(), "planned");
            if !options.dry_run && !entry.edits.is_empty() {
                let _s = tracing::info_span!("apply and check").entered();
                let applied = apply(&install, &entry.edits)?;
                entry.files_changed = applied.changes.len();
                entry.hives_written = applied.hives_written;
                changes.extend(applied.changes);
            }
        }
        report.installs.push(entry);
    }
    if report.installs.iter().any(|i| i.refused) {
        report.outcome = Outcome::Refused;
        for i in &mut report.installs {
            i.hives_written.clear();
            i.files_changed = 0;
        }
        return Ok(report);
    }
    if report.installs.iter().any(|i| !i.edits.is_empty()) {
        report.outcome = Outcome::Done;
    }
    if !options.dry_run && !changes.is_empty() {
        request_file_security_rewrite(backend, &report);
        let _s = tracing::info_span!("commit", files = changes.len()).entered();
        backend.commit(&changes)?;
        for i in &mut report.installs {
            if i.files_changed == 0 {
                continue;
            }
            let caveats = backend.commit_caveats(i.sid.is_some());
            i.not_done
                .extend(caveats.into_iter().map(|message| ops::NotDone {
                    operation: "backend",
                    message,
                }));
        }
    }
    Ok(report)
}

/// Describes every installation of an image with its preflight findings
/// (`reseal inspect`).
pub fn inspect(backend: &dyn Backend) -> Result<Vec<InstallReport>> {
    let dirs = find_windows_dirs(backend)?;
    if dirs.is_empty() {
        return Err(ResealError::NoInstall {
            root: backend.describe(),
        });
    }
    Ok(dirs
        .into_iter()
        .map(|dir| {
            let install = load_install(backend, &dir);
            let description = describe(&install, backend);
            let findings = preflight(&install, backend, &description);
            let refused_by: Vec<String> = findings
                .iter()
                .filter(|f| matches!(f.severity, Severity::Refuse | Severity::RefuseUnlessForced))
                .map(|f| f.id.to_string())
                .collect();
            InstallReport {
                windows_dir: dir,
                already_generalized: findings.iter().any(|f| f.id == "already-generalized"),
                description,
                findings,
                refused: !refused_by.is_empty(),
                refused_by,
                operations: Vec::new(),
                edits: Vec::new(),
                not_done: Vec::new(),
                hives_written: Vec::new(),
                files_changed: 0,
                sid: None,
            }
        })
        .collect())
}

/// Asks `backend` to rewrite, at its next commit, the file security that
/// names the machine SIDs `report` changes (see
/// [`Backend::rewrite_file_security`]).
pub fn request_file_security_rewrite(backend: &mut dyn Backend, report: &RunReport) {
    for i in &report.installs {
        if let Some(s) = &i.sid {
            if let (Ok(old), Ok(new)) = (s.old.parse::<Sid>(), s.new.parse::<Sid>()) {
                backend.rewrite_file_security(&old, &new);
            }
        }
    }
}
