//! Applying planned edits: registry edits to in-memory copies of the hives
//! (checked afterwards), file edits to a change list for the backend.

use std::collections::BTreeMap;

use reseal_hive::Hive;

use crate::backend::FileChange;
use crate::edit::{Edit, FileEdit, PlannedEdit, RegEdit};
use crate::error::{ResealError, Result};
use crate::hives::HiveId;
use crate::install::WindowsInstall;

/// The outcome of applying one install's edits: the file changes to commit
/// and the hives that were rewritten.
#[derive(Debug, Default)]
pub struct Applied {
    /// Changes for the backend, in order.
    pub changes: Vec<FileChange>,
    /// Paths of the hives rewritten.
    pub hives_written: Vec<String>,
}

/// Applies one registry edit to a hive. Edits are idempotent: deleting
/// what is absent does nothing.
pub fn apply_reg(hive: &mut Hive, change: &RegEdit) -> reseal_hive::Result<()> {
    match change {
        RegEdit::CreateKey { key } => {
            hive.create_key(key)?;
        }
        RegEdit::DeleteKey { key } => {
            if hive.open_key(key)?.is_some() {
                hive.delete_key(key)?;
            }
        }
        RegEdit::SetValue {
            key,
            name,
            value_type,
            data,
            ..
        } => {
            let k = hive.create_key(key)?;
            hive.set_value_id(k, name, *value_type, data)?;
        }
        RegEdit::DeleteValue { key, name } => {
            if let Some(k) = hive.open_key(key)? {
                if hive.value(k, name)?.is_some() {
                    hive.delete_value(key, name)?;
                }
            }
        }
        RegEdit::RenameKey { key, new_name } => {
            hive.rename_key(key, new_name)?;
        }
        RegEdit::RewriteSid { old, new } => {
            let old: reseal_hive::Sid = old.parse()?;
            let new: reseal_hive::Sid = new.parse()?;
            let found = hive.rewrite_sids(&old, &new)?;
            // Nothing live, but stale copies in free cells or slack (whole
            // SIDs, or bare sub-authorities): zero them (a rewrite that found
            // something has scrubbed already).
            if found.occurrences.is_empty() && found.descriptor_slack == 0 {
                let bytes = hive.to_bytes();
                if !reseal_hive::sid_scan::find_domain_sid(&bytes, &old).is_empty()
                    || !reseal_hive::sid_scan::find_domain_sub_authorities(&bytes, &old).is_empty()
                {
                    hive.scrub_unused()?;
                }
            }
        }
    }
    Ok(())
}

/// Applies every edit of one install: hives edited in memory (each checked
/// with the structural checker; a hive with errors stops the run before
/// anything is written), files turned into backend changes. Rewritten
/// hives get their transaction logs emptied.
pub fn apply(install: &WindowsInstall, edits: &[PlannedEdit]) -> Result<Applied> {
    let mut by_hive: BTreeMap<HiveId, Vec<&RegEdit>> = BTreeMap::new();
    let mut out = Applied::default();
    for e in edits {
        match &e.edit {
            Edit::Registry { hive, change } => {
                by_hive.entry(hive.clone()).or_default().push(change)
            }
            Edit::File { change } => out.changes.push(match change {
                FileEdit::Write { path, data, .. } => FileChange::Write {
                    path: path.clone(),
                    data: data.clone(),
                },
                FileEdit::Delete { path } => FileChange::Delete { path: path.clone() },
                FileEdit::DeleteTree { path } => FileChange::DeleteTree { path: path.clone() },
                FileEdit::Rename { from, to } => FileChange::Rename {
                    from: from.clone(),
                    to: to.clone(),
                },
            }),
        }
    }
    let mut hive_changes = Vec::new();
    for (id, changes) in by_hive {
        let loaded = install
            .loaded(&id)
            .ok_or_else(|| ResealError::InvalidInput {
                what: id.label(),
                message: "an operation planned edits for a hive that is not loaded".into(),
            })?;
        let mut hive = loaded.hive.clone();
        for c in &changes {
            apply_reg(&mut hive, c).map_err(|e| ResealError::hive(&loaded.path, e))?;
        }
        let bytes = hive.to_bytes();
        crate::ops::machine_sid::verify_hive(&loaded.path, &changes, &bytes)?;
        let report = reseal_hive::check::check_image(&loaded.path, &bytes);
        if let Some(first) = report.errors().next() {
            return Err(ResealError::CheckFailed {
                path: loaded.path.clone(),
                count: report.errors().count(),
                first: first.to_string(),
            });
        }
        hive_changes.push(FileChange::Write {
            path: loaded.path.clone(),
            data: bytes,
        });
        for log in &loaded.logs {
            hive_changes.push(FileChange::Truncate { path: log.clone() });
        }
        out.hives_written.push(loaded.path.clone());
    }
    crate::ops::machine_sid::verify_files(edits, &out.changes)?;
    // Hives first, then the other files (markers such as the success tag
    // are plain files and come last in the operations' order).
    hive_changes.append(&mut out.changes);
    out.changes = hive_changes;
    Ok(out)
}
