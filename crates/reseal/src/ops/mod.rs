//! Operations: small planners, each with a stable name, a one-line
//! description and a default. An operation never writes; it looks at the
//! install and returns the edits that would bring it to the generalized
//! state, and nothing when it is already there (so a second run plans
//! nothing).
//!
//! Each operation lives in its own module and says, next to each edit, what
//! evidence it rests on (see `reference/sysprep-internals.md`; confidence
//! levels high / medium / low as defined there).

use serde::Serialize;

use reseal_hive::Value;

use crate::backend::{DirEntry, join};
use crate::context::{PlanContext, reg_dword, reg_string, reg_sz};
use crate::edit::{PlannedEdit, RegEdit};
use crate::error::Result;
use crate::hives::HiveId;

pub mod action_files;
pub mod activation;
pub mod administrator;
pub mod answer_file;
pub mod autopilot;
pub mod boot_drivers;
pub mod devices;
pub mod identities;
pub mod leftovers;
pub mod machine_secrets;
pub mod machine_sid;
pub mod markers;
pub mod md5;
pub mod provider_actions;

/// What an operation could not do that sysprep would have done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotDone {
    /// The operation.
    pub operation: &'static str,
    /// What was not done and why.
    pub message: String,
}

/// A planner's output.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Edits to apply.
    pub edits: Vec<PlannedEdit>,
    /// Things sysprep would have done that this run does not.
    pub not_done: Vec<NotDone>,
    /// What the `machine-sid` operation rewrites (it alone sets this).
    pub sid: Option<machine_sid::SidSummary>,
}

/// One generalize operation.
pub trait Operation: Send + Sync {
    /// Stable name (`--enable`/`--disable` use it).
    fn name(&self) -> &'static str;
    /// One-line description.
    fn description(&self) -> &'static str;
    /// Whether it runs unless disabled.
    fn default_enabled(&self) -> bool;
    /// Plans the edits for one install.
    fn plan(&self, ctx: &PlanContext) -> Result<Plan>;
}

/// Every operation, in the order they are planned. The generalized-state
/// markers come last (sysprep-internals §7.6: markers are written last,
/// with the success tag).
pub fn all() -> Vec<Box<dyn Operation>> {
    vec![
        Box::new(identities::Identities),
        Box::new(autopilot::Autopilot),
        Box::new(administrator::Administrator),
        Box::new(activation::Activation),
        Box::new(devices::Devices),
        Box::new(boot_drivers::BootDrivers),
        Box::new(leftovers::Leftovers),
        Box::new(machine_secrets::MachineSecrets),
        // The image's own declarative sysprep actions; reports the
        // providers nothing here emulates.
        Box::new(provider_actions::ProviderActions),
        Box::new(answer_file::AnswerFile),
        // After every other edit of the hives, so that edits planned on
        // SID-named keys land before the keys are renamed.
        Box::new(machine_sid::MachineSid),
        Box::new(markers::Markers),
    ]
}

// ---------------------------------------------------------------------------
// Helpers shared by the planners. They compare with what is there so that
// only edits that change something are planned.

/// REG_SZ.
pub(crate) const REG_SZ: u32 = 1;
/// REG_DWORD.
pub(crate) const REG_DWORD: u32 = 4;

impl Plan {
    /// Records something not done.
    pub(crate) fn not_done(&mut self, operation: &'static str, message: impl Into<String>) {
        self.not_done.push(NotDone {
            operation,
            message: message.into(),
        });
    }

    /// Adds an edit if there is one.
    pub(crate) fn push(&mut self, edit: Option<PlannedEdit>) {
        self.edits.extend(edit);
    }
}

/// Every value of a key (empty when the hive or key is absent or unreadable).
pub(crate) fn values_of(ctx: &PlanContext, hive: &HiveId, key: &str) -> Vec<Value> {
    let Some(h) = ctx.hive(hive) else {
        return Vec::new();
    };
    match h.open_key(key) {
        Ok(Some(k)) => h.values(k).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Sets a REG_SZ unless it already has exactly that type and text.
pub(crate) fn set_sz(
    ctx: &PlanContext,
    op: &'static str,
    hive: HiveId,
    key: &str,
    name: &str,
    text: &str,
    reason: &str,
) -> Option<PlannedEdit> {
    if let Some(v) = ctx.value(&hive, key, name) {
        if v.value_type == REG_SZ && reg_string(&v.data) == text {
            return None;
        }
    }
    Some(PlannedEdit::reg(
        op,
        hive,
        RegEdit::SetValue {
            key: key.to_string(),
            name: name.to_string(),
            value_type: REG_SZ,
            data: reg_sz(text),
            secret: false,
        },
        reason,
    ))
}

/// Sets a REG_DWORD unless it already has exactly that type and number.
pub(crate) fn set_dword(
    ctx: &PlanContext,
    op: &'static str,
    hive: HiveId,
    key: &str,
    name: &str,
    n: u32,
    reason: &str,
) -> Option<PlannedEdit> {
    if let Some(v) = ctx.value(&hive, key, name) {
        if v.value_type == REG_DWORD && v.data.len() == 4 && reg_dword(&v.data) == Some(n) {
            return None;
        }
    }
    Some(PlannedEdit::reg(
        op,
        hive,
        RegEdit::SetValue {
            key: key.to_string(),
            name: name.to_string(),
            value_type: REG_DWORD,
            data: n.to_le_bytes().to_vec(),
            secret: false,
        },
        reason,
    ))
}

/// Deletes a value if it exists (named as stored).
pub(crate) fn delete_value(
    ctx: &PlanContext,
    op: &'static str,
    hive: HiveId,
    key: &str,
    name: &str,
    reason: &str,
) -> Option<PlannedEdit> {
    let v = ctx.value(&hive, key, name)?;
    Some(PlannedEdit::reg(
        op,
        hive,
        RegEdit::DeleteValue {
            key: key.to_string(),
            name: v.name,
        },
        reason,
    ))
}

/// Deletes a key and its subtree if it exists.
pub(crate) fn delete_key(
    ctx: &PlanContext,
    op: &'static str,
    hive: HiveId,
    key: &str,
    reason: &str,
) -> Option<PlannedEdit> {
    ctx.key_exists(&hive, key).then(|| {
        PlannedEdit::reg(
            op,
            hive,
            RegEdit::DeleteKey {
                key: key.to_string(),
            },
            reason,
        )
    })
}

/// Lists a directory inside the image (empty when absent or unreadable).
pub(crate) fn list_dir(ctx: &PlanContext, dir: &str) -> Vec<DirEntry> {
    if !ctx.backend.is_dir(dir) {
        return Vec::new();
    }
    ctx.backend.list(dir).unwrap_or_default()
}

/// The entry of `dir` named `name` (case-insensitive), with its path.
pub(crate) fn find_entry(ctx: &PlanContext, dir: &str, name: &str) -> Option<(String, DirEntry)> {
    list_dir(ctx, dir)
        .into_iter()
        .find(|e| e.name.eq_ignore_ascii_case(name))
        .map(|e| (join(dir, &e.name), e))
}

/// The volume root that holds the Windows directory (`""` for `Windows`).
pub(crate) fn volume_root(ctx: &PlanContext) -> String {
    let w = ctx.install.windows_dir.trim_matches('\\');
    match w.rfind('\\') {
        Some(i) => w[..i].to_string(),
        None => String::new(),
    }
}
