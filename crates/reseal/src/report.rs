//! The run report: a human summary and a JSON document.
//!
//! JSON schema (version [`REPORT_SCHEMA_VERSION`]): `{ schema, tool, version,
//! input, mode, vm, dry_run, force, outcome, notices: [text], installs: [ { windows_dir,
//! description, findings: [ {id, severity, message, fix} ], refused,
//! refused_by: [id], already_generalized, operations: [name], edits: [
//! {operation, reason, edit: {target: "registry"|"file", hive?, action, key?,
//! name?, value_type?, data?, path?, ...}} ], not_done: [ {operation, message}
//! ], hives_written: [path], files_changed, sid: null | {old, new, source,
//! hives: [ {hive, path, descriptors, key_names, value_names, value_data,
//! substring_key_names, substring_value_names, substring_value_data,
//! descriptor_slack, stale_only} ],
//! folders: [ {from, to} ], task_files: [path]} } ] }`. Fields are only ever added
//! within a schema version.

use serde::Serialize;

use crate::describe::InstallDescription;
use crate::edit::{Edit, FileEdit, PlannedEdit, RegEdit};
use crate::ops::NotDone;
use crate::ops::machine_sid::SidSummary;
use crate::options::Mode;
use crate::preflight::{Finding, Severity};

/// Version of the JSON report schema.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Edits were applied (or, with `--dry-run`, planned).
    Done,
    /// Nothing needed to change.
    NothingToDo,
    /// Preflight refused at least one install; nothing was written.
    Refused,
}

/// The report of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Schema version.
    pub schema: u32,
    /// "reseal".
    pub tool: &'static str,
    /// reseal's version.
    pub version: &'static str,
    /// The image given.
    pub input: String,
    /// `/oobe` or `/audit`.
    pub mode: Mode,
    /// `/mode:vm`.
    pub vm: bool,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Whether `--force` was given.
    pub force: bool,
    /// How the run ended.
    pub outcome: Outcome,
    /// One entry per Windows installation found.
    pub installs: Vec<InstallReport>,
    /// What the user must know about the result (for example that every
    /// machine deployed from a generalized image shares its machine SID
    /// until each copy is personalized).
    pub notices: Vec<String>,
}

/// The notice of a generalize run that leaves machine SID `sid`: copies
/// share it until each is personalized.
pub fn shared_sid_notice(input: &str, sid: &str) -> String {
    format!(
        "every machine deployed from this image shares its machine SID {sid} until each copy is personalized (reseal personalize COPY --name NAME, or reseal stamp {input} --out DIR --count N): Windows 11 24H2+ and Windows Server 2025 (September 2025 updates and later) refuse Kerberos and NTLM authentication between machines with the same SID (LsaSrv event 6167). reseal does not arm Windows' first-boot SID change (setupcl)"
    )
}

/// The report for one installation.
#[derive(Debug, Clone, Serialize)]
pub struct InstallReport {
    /// Its Windows directory inside the image.
    pub windows_dir: String,
    /// What it is.
    pub description: InstallDescription,
    /// Preflight findings.
    pub findings: Vec<Finding>,
    /// Whether preflight refused it.
    pub refused: bool,
    /// The ids of the findings that refused it.
    pub refused_by: Vec<String>,
    /// It was already generalized: nothing planned.
    pub already_generalized: bool,
    /// Operations that ran.
    pub operations: Vec<String>,
    /// Every edit, with the operation that made it.
    pub edits: Vec<PlannedEdit>,
    /// What sysprep would have done that this run did not.
    pub not_done: Vec<NotDone>,
    /// Hives rewritten.
    pub hives_written: Vec<String>,
    /// Number of file changes committed (hives, logs and other files).
    pub files_changed: usize,
    /// The machine SID rewrite: old and new SID, counts per place.
    pub sid: Option<SidSummary>,
}

fn edit_line(e: &PlannedEdit) -> String {
    let what = match &e.edit {
        Edit::Registry { hive, change } => {
            let h = hive.label();
            match change {
                RegEdit::CreateKey { key } => format!("{h}\\{key}: create key"),
                RegEdit::DeleteKey { key } => format!("{h}\\{key}: delete key"),
                RegEdit::SetValue {
                    key,
                    name,
                    secret,
                    data,
                    value_type,
                    ..
                } => {
                    let shown = if *secret {
                        "(secret)".to_string()
                    } else {
                        reseal_hive::dump::render(*value_type, data)
                            .map(|t| format!("{t:?}"))
                            .unwrap_or_else(|| format!("{} bytes", data.len()))
                    };
                    format!(
                        "{h}\\{key}: set {} = {shown}",
                        if name.is_empty() { "@" } else { name }
                    )
                }
                RegEdit::DeleteValue { key, name } => {
                    format!(
                        "{h}\\{key}: delete value {}",
                        if name.is_empty() { "@" } else { name }
                    )
                }
                RegEdit::RenameKey { key, new_name } => format!("{h}\\{key}: rename to {new_name}"),
                RegEdit::RewriteSid { old, new } => format!("{h}: rewrite SID {old} -> {new}"),
            }
        }
        Edit::File { change } => match change {
            FileEdit::Write { path, len, .. } => format!("{path}: write {len} bytes"),
            FileEdit::Delete { path } => format!("{path}: delete"),
            FileEdit::DeleteTree { path } => format!("{path}: delete tree"),
            FileEdit::Rename { from, to } => format!("{from}: rename to {to}"),
        },
    };
    format!("[{}] {what}", e.operation)
}

impl RunReport {
    /// The human summary.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "reseal {}: {} ({}{}{})\n",
            self.version,
            self.input,
            match self.mode {
                Mode::Oobe => "/generalize /oobe",
                Mode::Audit => "/generalize /audit",
            },
            if self.vm { " /mode:vm" } else { "" },
            if self.dry_run { ", dry run" } else { "" }
        );
        for i in &self.installs {
            s.push_str(&format!("\n== {} ==\n", i.windows_dir));
            s.push_str(&i.description.to_text());
            if !i.findings.is_empty() {
                s.push_str("findings:\n");
                for f in &i.findings {
                    s.push_str(&format!("  {:?} {}: {}\n", f.severity, f.id, f.message));
                    if !f.fix.is_empty() && f.severity != Severity::Info {
                        s.push_str(&format!("      fix: {}\n", f.fix));
                    }
                }
            }
            if i.refused {
                s.push_str(&format!("REFUSED by: {}\n", i.refused_by.join(", ")));
                continue;
            }
            if i.already_generalized {
                s.push_str("already generalized: nothing to do\n");
                continue;
            }
            s.push_str(&format!(
                "{} edit(s){}:\n",
                i.edits.len(),
                if self.dry_run { " planned" } else { "" }
            ));
            for e in &i.edits {
                s.push_str(&format!("  {}\n", edit_line(e)));
            }
            if let Some(sid) = &i.sid {
                s.push_str(&sid.to_text());
            }
            if !i.not_done.is_empty() {
                s.push_str("not done (sysprep would have):\n");
                for n in &i.not_done {
                    s.push_str(&format!("  [{}] {}\n", n.operation, n.message));
                }
            }
            if !self.dry_run {
                s.push_str(&format!(
                    "wrote {} hive(s), {} file change(s)\n",
                    i.hives_written.len(),
                    i.files_changed
                ));
            }
        }
        for n in &self.notices {
            s.push_str(&format!("\nNOTE: {n}\n"));
        }
        s.push_str(&format!(
            "\noutcome: {}\n",
            match self.outcome {
                Outcome::Done if self.dry_run => "planned (dry run, nothing written)",
                Outcome::Done => "generalized",
                Outcome::NothingToDo => "nothing to do",
                Outcome::Refused => "refused (nothing written)",
            }
        ));
        s
    }
}
