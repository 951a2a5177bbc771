//! The registry hives of one Windows installation: where they are, and
//! loading them (with transaction-log replay) through a backend.
//!
//! # Size limits
//!
//! A hive file states its own size: its base block (4096 bytes) records the
//! length of the hive bins that follow. Neither a hive nor a log is read
//! without bound: a hive file longer than [`HIVE_MAX_BYTES`], or whose base
//! block claims more, is refused before it is read in full; a transaction
//! log may hold at most [`log_limit`] bytes (a multiple of its hive's size,
//! under a hard cap). Backends read only regular files (see
//! [`crate::backend::dir`]), so a device or a FIFO named like a hive is
//! refused too. Such refusals are load errors, which preflight turns into a
//! refusal of the run.

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

/// The largest hive file read (1 GiB). Real hives stay far below it (the
/// largest SOFTWARE hives reach a few hundred MiB); the format itself cannot
/// address more than 2 GiB of bins.
pub const HIVE_MAX_BYTES: u64 = 1 << 30;

/// The hard cap on a transaction log (1 GiB), whatever its hive's size.
pub const LOG_MAX_BYTES: u64 = 1 << 30;

/// Offset of the hive-bins data size in a hive's base block.
const HBINS_SIZE_OFFSET: usize = 0x28;
/// Size of a hive's base block.
const BASE_BLOCK_LEN: u64 = 4096;

/// The most bytes a transaction log of a hive of `hive_len` bytes may hold:
/// four times the hive plus 64 MiB (a log carries dirty pages of the hive,
/// possibly several times over, and small hives have logs larger than
/// themselves), never more than [`LOG_MAX_BYTES`].
pub fn log_limit(hive_len: u64) -> u64 {
    hive_len
        .saturating_mul(4)
        .saturating_add(64 << 20)
        .min(LOG_MAX_BYTES)
}

/// The size a hive's base block claims for the whole file (base block plus
/// hive bins), when `head` starts with a `regf` base block.
pub fn claimed_hive_len(head: &[u8]) -> Option<u64> {
    if head.get(..4)? != b"regf" {
        return None;
    }
    let field = head.get(HBINS_SIZE_OFFSET..HBINS_SIZE_OFFSET + 4)?;
    let bins = u32::from_le_bytes(field.try_into().ok()?);
    Some(BASE_BLOCK_LEN + u64::from(bins))
}

/// The size the listing of `path`'s directory gives for it, if any.
fn listed_size(backend: &dyn Backend, path: &str) -> Option<u64> {
    let (dir, name) = match path.rfind('\\') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    };
    let entries = backend.list(dir).ok()?;
    entries
        .iter()
        .find(|e| e.name == name)
        .or_else(|| entries.iter().find(|e| e.name.eq_ignore_ascii_case(name)))
        .map(|e| e.size)
}

/// Reads at most `limit` bytes of `path`; a longer file (by its listed size,
/// or by what could be read) is refused with a message naming the file
/// (`what`), its size and the limit.
fn read_capped(
    backend: &dyn Backend,
    path: &str,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, String> {
    let too_big = |found: String| {
        format!("{what} is {found}, over the limit of {limit} bytes; refused unread")
    };
    if let Some(size) = listed_size(backend, path)
        && size > limit
    {
        return Err(too_big(format!("{size} bytes")));
    }
    let want = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
    let bytes = backend.read_head(path, want).map_err(|e| e.to_string())?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(too_big("longer than that".into()));
    }
    Ok(bytes)
}

/// Reads a hive file within [`HIVE_MAX_BYTES`], refusing one whose base
/// block claims more than the cap.
pub fn read_hive_file(backend: &dyn Backend, path: &str) -> Result<Vec<u8>, String> {
    let bytes = read_capped(backend, path, HIVE_MAX_BYTES, "the hive file")?;
    if let Some(claimed) = claimed_hive_len(&bytes)
        && claimed > HIVE_MAX_BYTES
    {
        return Err(format!(
            "the base block of {path} claims {claimed} bytes of hive, over the limit of {HIVE_MAX_BYTES} bytes; refused"
        ));
    }
    Ok(bytes)
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

/// Refuses a hive or log whose host file has other names (hard links): the
/// run rewrites hives and resets their logs, and a write in place would
/// reach every other name of the file, possibly outside the image.
fn refuse_shared(backend: &dyn Backend, path: &str) -> Result<(), String> {
    let links = backend.link_count(path).map_err(|e| e.to_string())?;
    if links > 1 {
        return Err(format!(
            "{path} has {links} hard links (its contents are shared with {} other name(s), possibly outside the image); a hive or log is never written through a shared file: break the link (copy the file over itself) and run again",
            links - 1
        ));
    }
    Ok(())
}

/// Loads one hive with its logs. A hive or log that is not a regular file,
/// is over its size limit (see the module documentation) or has more than
/// one hard link is a load error.
pub fn load(backend: &dyn Backend, id: HiveId, path: &str) -> Result<LoadedHive, HiveLoadError> {
    let fail = |dirty: bool, message: String| HiveLoadError {
        id: id.clone(),
        path: path.to_string(),
        dirty_without_logs: dirty,
        message,
    };
    refuse_shared(backend, path).map_err(|m| fail(false, m))?;
    let bytes = read_hive_file(backend, path).map_err(|m| fail(false, m))?;
    let hive_len = claimed_hive_len(&bytes)
        .unwrap_or(0)
        .max(u64::try_from(bytes.len()).unwrap_or(u64::MAX))
        .min(HIVE_MAX_BYTES);
    let logs = log_paths(backend, path);
    let mut files = Vec::new();
    for l in &logs {
        refuse_shared(backend, l).map_err(|m| fail(false, m))?;
        let what = format!("the transaction log {l}");
        let b = read_capped(backend, l, log_limit(hive_len), &what).map_err(|m| fail(false, m))?;
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
