//! The registry hives of one Windows installation: where they are, and
//! loading them (with transaction-log replay) through a backend.

use serde::Serialize;

use reseal_hive::Hive;
use reseal_hive::log::LogFile;

use crate::backend::{Backend, join};

/// Which hive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "hive", content = "profile", rename_all = "snake_case")]
pub enum HiveId {
    /// `config\SYSTEM`.
    System,
    /// `config\SOFTWARE`.
    Software,
    /// `config\SAM`.
    Sam,
    /// `config\SECURITY`.
    Security,
    /// `config\DEFAULT` (the .DEFAULT user).
    Default,
    /// A profile's `NTUSER.DAT`; the string is the profile's directory path
    /// inside the image (e.g. `Users\demo`).
    NtUser(String),
    /// A profile's `UsrClass.dat`.
    UsrClass(String),
}

impl HiveId {
    /// The machine hives under `System32\config`, with their file names.
    pub const MACHINE: [(HiveId, &'static str); 5] = [
        (HiveId::System, "SYSTEM"),
        (HiveId::Software, "SOFTWARE"),
        (HiveId::Sam, "SAM"),
        (HiveId::Security, "SECURITY"),
        (HiveId::Default, "DEFAULT"),
    ];

    /// A short label ("SYSTEM", "NTUSER.DAT of Users\demo").
    pub fn label(&self) -> String {
        match self {
            HiveId::System => "SYSTEM".into(),
            HiveId::Software => "SOFTWARE".into(),
            HiveId::Sam => "SAM".into(),
            HiveId::Security => "SECURITY".into(),
            HiveId::Default => "DEFAULT".into(),
            HiveId::NtUser(p) => format!("NTUSER.DAT of {p}"),
            HiveId::UsrClass(p) => format!("UsrClass.dat of {p}"),
        }
    }
}

/// A hive loaded from the image.
#[derive(Debug, Clone)]
pub struct LoadedHive {
    /// Which hive.
    pub id: HiveId,
    /// Its path inside the image.
    pub path: String,
    /// Transaction logs found beside it (paths inside the image).
    pub logs: Vec<String>,
    /// The hive, recovered from its logs when it was dirty.
    pub hive: Hive,
}

/// Why a hive that should be there could not be loaded.
#[derive(Debug, Clone, Serialize)]
pub struct HiveLoadError {
    /// Which hive.
    pub id: HiveId,
    /// Its path inside the image.
    pub path: String,
    /// Whether the failure is "dirty and its logs cannot recover it".
    pub dirty_without_logs: bool,
    /// The error message.
    pub message: String,
}

/// Finds the `.LOG`, `.LOG1`, `.LOG2` files beside `path` (case-insensitive).
pub fn log_paths(backend: &dyn Backend, path: &str) -> Vec<String> {
    let (dir, name) = match path.rfind('\\') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    };
    let Ok(entries) = backend.list(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for suffix in [".LOG", ".LOG1", ".LOG2"] {
        let want = format!("{name}{suffix}");
        if let Some(e) = entries
            .iter()
            .find(|e| !e.is_dir && e.name.eq_ignore_ascii_case(&want))
        {
            out.push(join(dir, &e.name));
        }
    }
    out
}

/// Loads one hive with its logs.
pub fn load(backend: &dyn Backend, id: HiveId, path: &str) -> Result<LoadedHive, HiveLoadError> {
    let fail = |dirty: bool, message: String| HiveLoadError {
        id: id.clone(),
        path: path.to_string(),
        dirty_without_logs: dirty,
        message,
    };
    let bytes = backend.read(path).map_err(|e| fail(false, e.to_string()))?;
    let logs = log_paths(backend, path);
    let mut files = Vec::new();
    for l in &logs {
        let b = backend.read(l).map_err(|e| fail(false, e.to_string()))?;
        files.push(LogFile {
            name: l.clone(),
            bytes: b,
        });
    }
    match Hive::from_bytes_with_logs(path, bytes, &files) {
        Ok(hive) => Ok(LoadedHive {
            id,
            path: path.to_string(),
            logs,
            hive,
        }),
        Err(e) => {
            let dirty = matches!(e, reseal_hive::HiveError::DirtyWithoutLogs { .. });
            Err(fail(dirty, e.to_string()))
        }
    }
}
