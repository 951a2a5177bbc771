//! Free space on the host file system, checked before a run writes, so that
//! a full disk is refused up front with [`ResealError::NoSpace`] instead of
//! surfacing half-way as an I/O error.

use std::path::Path;

use crate::error::{ResealError, Result};

/// Room kept free beyond what a write needs (file system metadata, the
/// directory entries of new files).
const MARGIN: u64 = 1 << 20;

/// Bytes available to this process on the file system holding `path` (or
/// its parent directory, when `path` does not exist yet).
pub fn available(path: &Path) -> std::io::Result<u64> {
    let probe = if path.exists() {
        path
    } else {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    };
    let st = nix::sys::statvfs::statvfs(probe).map_err(std::io::Error::from)?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Refuses with [`ResealError::NoSpace`] when the file system holding
/// `path` has less than `needed` bytes (plus a small margin) free for
/// `what`. A file system that cannot tell is not refused.
pub fn ensure(path: &Path, needed: u64, what: &str) -> Result<()> {
    let Ok(free) = available(path) else {
        return Ok(());
    };
    let want = needed.saturating_add(MARGIN);
    if free < want {
        return Err(ResealError::NoSpace {
            path: path.to_path_buf(),
            what: what.to_string(),
            needed: want,
            available: free,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_need_beyond_the_free_space_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(dir.path()).unwrap();
        assert!(free > 0);
        ensure(&dir.path().join("new-file"), 1, "a small file").unwrap();
        let e = ensure(dir.path(), u64::MAX / 2, "a huge file").unwrap_err();
        assert!(matches!(e, ResealError::NoSpace { .. }), "{e}");
        assert!(e.to_string().contains("a huge file"), "{e}");
    }
}
