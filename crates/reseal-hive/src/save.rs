//! Writing files safely: temporary file, fsync, rename, directory fsync.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::{HiveError, Result};

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> HiveError + 'a {
    move |source| HiveError::Io {
        file: path.to_path_buf(),
        action,
        source,
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same
/// directory is written and synced, then renamed over `path`, then the
/// directory is synced. On error `path` is untouched and the temporary file
/// is removed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "hive".into());
    let tmp = dir.join(format!(".{file_name}.reseal-tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io(&tmp, "create temporary file"))?;
        f.write_all(bytes).map_err(io(&tmp, "write"))?;
        f.sync_all().map_err(io(&tmp, "sync"))?;
        drop(f);
        if let Ok(meta) = fs::metadata(path) {
            // Keep the original file's permissions.
            let _ = fs::set_permissions(&tmp, meta.permissions());
        }
        fs::rename(&tmp, path).map_err(io(path, "rename temporary file over"))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Truncates a file to zero bytes and syncs it (keeps its permissions).
pub fn truncate(path: &Path) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io(path, "open log for truncation"))?;
    f.set_len(0).map_err(io(path, "truncate log"))?;
    f.sync_all().map_err(io(path, "sync log"))?;
    Ok(())
}
