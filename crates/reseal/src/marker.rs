//! reseal's own record in the image: that reseal generalized it, and how
//! often and under which name it was personalized since.
//!
//! The record lives in SOFTWARE under [`MARKER_KEY`] (a key no Windows
//! component reads), in two subkeys whose last-write times (which every
//! registry key carries) say when each run happened:
//!
//! | key | value | written by | meaning |
//! |---|---|---|---|
//! | `reseal\Generalize` | `Version` | generalize | the reseal version that generalized the image |
//! | `reseal\Personalize` | `Count` (REG_DWORD) | personalize, stamp | how many times the copy was personalized |
//! | `reseal\Personalize` | `Name` | personalize, stamp | the computer name the last run gave it (absent: none given) |
//! | `reseal\Personalize` | `Version` | personalize, stamp | the reseal version of the last run |
//!
//! The values are plain and deterministic (so a dry run plans exactly what
//! the real run writes); the times come from the keys. No SID is stored:
//! the machine SID is where Windows keeps it, and a copy keeps no trace of
//! its template's SID. `reseal inspect` reads the record
//! ([`read_marker`]), so a pipeline can tell a generalized template (whose
//! SID every deployed copy would share) from a personalized copy.
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
/// The subkey written by generalize.
pub const GENERALIZE_KEY: &str = r"reseal\Generalize";
/// The subkey written by personalize and stamp.
pub const PERSONALIZE_KEY: &str = r"reseal\Personalize";

/// What the record says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResealMarker {
    /// Whether reseal generalized the image.
    pub generalized: bool,
    /// When (the `Generalize` key's last-write time, UTC).
    pub generalized_at: Option<String>,
    /// The reseal version that generalized it.
    pub generalized_by: Option<String>,
    /// How many times the copy was personalized.
    pub personalizations: u32,
    /// When it was last personalized (UTC).
    pub personalized_at: Option<String>,
    /// The computer name the last personalize gave it.
    pub personalized_name: Option<String>,
    /// The reseal version of the last personalize.
    pub personalized_by: Option<String>,
}

impl ResealMarker {
    /// Whether a personalize run is recorded.
    pub fn personalized(&self) -> bool {
        self.personalizations > 0
    }

    /// One line for `inspect`.
    pub fn to_text(&self) -> String {
        let mut parts = Vec::new();
        if self.generalized {
            parts.push(format!(
                "generalized by reseal {} at {}",
                self.generalized_by.as_deref().unwrap_or("?"),
                self.generalized_at.as_deref().unwrap_or("?")
            ));
        }
        if self.personalized() {
            parts.push(format!(
                "personalized {} time(s), last at {} as {}",
                self.personalizations,
                self.personalized_at.as_deref().unwrap_or("?"),
                self.personalized_name
                    .as_deref()
                    .unwrap_or("(name unchanged)")
            ));
        }
        parts.join("; ")
    }
}

/// Reads the record of an install (`None` when reseal never wrote one).
pub fn read_marker(install: &WindowsInstall) -> Option<ResealMarker> {
    let hive = install.hive(&HiveId::Software)?;
    hive.open_key(MARKER_KEY).ok()??;
    let mut m = ResealMarker::default();
    let when = |key| {
        hive.key_info(key)
            .ok()
            .map(|i| iso_seconds(&reseal_hive::time::filetime_to_iso(i.last_written)))
    };
    let text = |data: &[u8]| Some(reg_string(data)).filter(|s| !s.is_empty());
    if let Ok(Some(k)) = hive.open_key(GENERALIZE_KEY) {
        m.generalized = true;
        m.generalized_at = when(k);
        for v in hive.values(k).unwrap_or_default() {
            if v.name.eq_ignore_ascii_case("Version") {
                m.generalized_by = text(&v.data);
            }
        }
    }
    if let Ok(Some(k)) = hive.open_key(PERSONALIZE_KEY) {
        m.personalized_at = when(k);
        for v in hive.values(k).unwrap_or_default() {
            match v.name.to_ascii_lowercase().as_str() {
                "count" => m.personalizations = reg_dword(&v.data).unwrap_or(0),
                "name" => m.personalized_name = text(&v.data),
                "version" => m.personalized_by = text(&v.data),
                _ => {}
            }
        }
    }
    Some(m)
}

/// `2026-12-07T23:51:20.1234567Z` → `2026-12-07T23:51:20Z`.
fn iso_seconds(full: &str) -> String {
    match full.find('.') {
        Some(i) => format!("{}Z", &full[..i]),
        None => full.to_string(),
    }
}

/// The edits that record a generalize run.
pub fn generalize_edits(ctx: &PlanContext, operation: &'static str) -> Vec<PlannedEdit> {
    let reason = "reseal's record of the generalize run (read by reseal inspect)";
    set_sz(
        ctx,
        operation,
        HiveId::Software,
        GENERALIZE_KEY,
        "Version",
        env!("CARGO_PKG_VERSION"),
        reason,
    )
    .into_iter()
    .collect()
}

/// The edits that record a personalize run giving the copy `name` (when
/// given).
pub fn personalize_edits(
    ctx: &PlanContext,
    operation: &'static str,
    name: Option<&str>,
) -> Vec<PlannedEdit> {
    let reason = "reseal's record of the personalize run (read by reseal inspect)";
    let sw = HiveId::Software;
    let count = ctx
        .value(&sw, PERSONALIZE_KEY, "Count")
        .and_then(|v| reg_dword(&v.data))
        .unwrap_or(0)
        .saturating_add(1);
    let mut out: Vec<PlannedEdit> = Vec::new();
    out.extend(set_dword(
        ctx,
        operation,
        sw.clone(),
        PERSONALIZE_KEY,
        "Count",
        count,
        reason,
    ));
    out.extend(set_sz(
        ctx,
        operation,
        sw.clone(),
        PERSONALIZE_KEY,
        "Version",
        env!("CARGO_PKG_VERSION"),
        reason,
    ));
    if let Some(n) = name {
        out.extend(set_sz(
            ctx,
            operation,
            sw,
            PERSONALIZE_KEY,
            "Name",
            n,
            reason,
        ));
    }
    out
}
