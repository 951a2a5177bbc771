//! reseal's own record in the image: which runs generalized and
//! personalized it, when, and with which machine SID.
//!
//! The record lives in SOFTWARE under [`MARKER_KEY`] (a key no Windows
//! component reads), as plain REG_SZ/REG_DWORD values:
//!
//! | value | written by | meaning |
//! |---|---|---|
//! | `GeneralizedAt` | generalize | UTC time of the run, ISO 8601 |
//! | `GeneralizedSid` | generalize | the machine SID the image was left with (deleted by personalize: a copy keeps no trace of the template's SID) |
//! | `PersonalizedAt` | personalize, stamp | UTC time of the last run |
//! | `PersonalizedSid` | personalize, stamp | the SID that run gave the copy |
//! | `PersonalizedName` | personalize, stamp | its computer name (absent: none given) |
//! | `Personalizations` | personalize, stamp | how many times the copy was personalized |
//! | `Version` | both | the reseal version of the last run |
//!
//! `reseal inspect` reads it ([`read_marker`]), so a pipeline can tell a
//! generalized template (whose SID every deployed copy would share) from a
//! personalized copy.
//!
//! ```
//! use reseal::marker::ResealMarker;
//! let m = ResealMarker::default();
//! assert!(!m.personalized());
//! ```

use serde::Serialize;

use crate::context::{PlanContext, reg_dword, reg_string};
use crate::edit::PlannedEdit;
use crate::hives::HiveId;
use crate::install::WindowsInstall;
use crate::ops::{set_dword, set_sz};

/// The SOFTWARE key of the record.
pub const MARKER_KEY: &str = "reseal";

/// What the record says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResealMarker {
    /// When reseal generalized the image.
    pub generalized_at: Option<String>,
    /// The machine SID the generalize run left.
    pub generalized_sid: Option<String>,
    /// When the copy was last personalized.
    pub personalized_at: Option<String>,
    /// The machine SID the last personalize gave it.
    pub personalized_sid: Option<String>,
    /// The computer name the last personalize gave it.
    pub personalized_name: Option<String>,
    /// How many times it was personalized.
    pub personalizations: u32,
    /// reseal's version at the last run.
    pub version: Option<String>,
}

impl ResealMarker {
    /// Whether a personalize run is recorded.
    pub fn personalized(&self) -> bool {
        self.personalizations > 0 || self.personalized_sid.is_some()
    }

    /// One line for `inspect`.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        if let Some(at) = &self.generalized_at {
            s.push_str(&format!("generalized by reseal at {at}"));
            if let Some(sid) = &self.generalized_sid {
                s.push_str(&format!(" (SID {sid})"));
            }
        }
        if self.personalized() {
            if !s.is_empty() {
                s.push_str("; ");
            }
            s.push_str(&format!(
                "personalized {} time(s), last at {} as {} (SID {})",
                self.personalizations,
                self.personalized_at.as_deref().unwrap_or("?"),
                self.personalized_name
                    .as_deref()
                    .unwrap_or("(name unchanged)"),
                self.personalized_sid.as_deref().unwrap_or("?")
            ));
        }
        s
    }
}

/// Reads the record of an install (`None` when reseal never wrote one).
pub fn read_marker(install: &WindowsInstall) -> Option<ResealMarker> {
    let hive = install.hive(&HiveId::Software)?;
    let key = hive.open_key(MARKER_KEY).ok()??;
    let values = hive.values(key).ok()?;
    let mut m = ResealMarker::default();
    for v in values {
        let text = || Some(reg_string(&v.data)).filter(|s| !s.is_empty());
        match v.name.to_ascii_lowercase().as_str() {
            "generalizedat" => m.generalized_at = text(),
            "generalizedsid" => m.generalized_sid = text(),
            "personalizedat" => m.personalized_at = text(),
            "personalizedsid" => m.personalized_sid = text(),
            "personalizedname" => m.personalized_name = text(),
            "personalizations" => m.personalizations = reg_dword(&v.data).unwrap_or(0),
            "version" => m.version = text(),
            _ => {}
        }
    }
    Some(m)
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn now_iso() -> String {
    let full = reseal_hive::time::filetime_to_iso(reseal_hive::time::now_filetime());
    // Keep whole seconds.
    match full.find('.') {
        Some(i) => format!("{}Z", &full[..i]),
        None => full,
    }
}

/// The edits that record a generalize run leaving machine SID `sid`.
pub fn generalize_edits(ctx: &PlanContext, operation: &'static str, sid: &str) -> Vec<PlannedEdit> {
    let reason = "reseal's record of the generalize run (read by reseal inspect)";
    let sw = HiveId::Software;
    [
        set_sz(
            ctx,
            operation,
            sw.clone(),
            MARKER_KEY,
            "GeneralizedAt",
            &now_iso(),
            reason,
        ),
        set_sz(
            ctx,
            operation,
            sw.clone(),
            MARKER_KEY,
            "GeneralizedSid",
            sid,
            reason,
        ),
        set_sz(
            ctx,
            operation,
            sw,
            MARKER_KEY,
            "Version",
            env!("CARGO_PKG_VERSION"),
            reason,
        ),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The edits that record a personalize run giving the copy `sid` and
/// (when given) `name`.
pub fn personalize_edits(
    ctx: &PlanContext,
    operation: &'static str,
    sid: &str,
    name: Option<&str>,
) -> Vec<PlannedEdit> {
    let reason = "reseal's record of the personalize run (read by reseal inspect)";
    let sw = HiveId::Software;
    let count = ctx
        .value(&sw, MARKER_KEY, "Personalizations")
        .and_then(|v| reg_dword(&v.data))
        .unwrap_or(0)
        .saturating_add(1);
    let mut out: Vec<PlannedEdit> = [
        set_sz(
            ctx,
            operation,
            sw.clone(),
            MARKER_KEY,
            "PersonalizedAt",
            &now_iso(),
            reason,
        ),
        set_sz(
            ctx,
            operation,
            sw.clone(),
            MARKER_KEY,
            "PersonalizedSid",
            sid,
            reason,
        ),
        set_dword(
            ctx,
            operation,
            sw.clone(),
            MARKER_KEY,
            "Personalizations",
            count,
            reason,
        ),
        set_sz(
            ctx,
            operation,
            sw.clone(),
            MARKER_KEY,
            "Version",
            env!("CARGO_PKG_VERSION"),
            reason,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(n) = name {
        out.extend(set_sz(
            ctx,
            operation,
            sw.clone(),
            MARKER_KEY,
            "PersonalizedName",
            n,
            reason,
        ));
    }
    // The template's SID must not survive in a copy (and the SID rewrite
    // would turn it into the copy's own, which would mislead): a
    // personalized copy records only when it was generalized.
    if ctx.value(&sw, MARKER_KEY, "GeneralizedSid").is_some() {
        out.push(PlannedEdit::reg(
            operation,
            sw,
            crate::edit::RegEdit::DeleteValue {
                key: MARKER_KEY.into(),
                name: "GeneralizedSid".into(),
            },
            "the template's machine SID is not kept in a personalized copy",
        ));
    }
    out
}
