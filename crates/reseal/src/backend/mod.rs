//! Backends: where an image's files live. Every backend exposes the same
//! small interface: list and read files by their path inside the image, and
//! commit a batch of changes all at once.
//!
//! Paths inside an image are Windows-style, relative to the volume root,
//! compared case-insensitively as NTFS does: `Windows\System32\config\SYSTEM`.

pub mod dir;
pub mod disk;
pub mod memory;
pub mod wim;

use serde::Serialize;

use crate::error::Result;
use reseal_hive::Sid;

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirEntry {
    /// The name as stored (original case).
    pub name: String,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Size in bytes (0 for directories).
    pub size: u64,
}

/// One change to the image, applied at commit. Its `Debug` form shows
/// lengths, never contents.
#[derive(Clone, PartialEq, Eq)]
pub enum FileChange {
    /// Create or replace a file with these bytes (parents are created).
    Write {
        /// Path inside the image.
        path: String,
        /// New contents.
        data: Vec<u8>,
    },
    /// Set a file's length to zero (keeps the file, its ACL and attributes).
    Truncate {
        /// Path inside the image.
        path: String,
    },
    /// Delete a file (absent is not an error).
    Delete {
        /// Path inside the image.
        path: String,
    },
    /// Delete a directory and everything under it (absent is not an error).
    DeleteTree {
        /// Path inside the image.
        path: String,
    },
    /// Rename (move) a file or a directory with everything under it. A
    /// missing source does nothing; an existing destination fails the
    /// commit (a change of case only is a rename in place). Missing parent
    /// directories of the destination are created.
    Rename {
        /// Path inside the image (the change's [`path`](FileChange::path)).
        from: String,
        /// The new path inside the image.
        to: String,
    },
}

impl std::fmt::Debug for FileChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileChange::Write { path, data } => write!(f, "Write({path:?}, {} bytes)", data.len()),
            FileChange::Truncate { path } => write!(f, "Truncate({path:?})"),
            FileChange::Delete { path } => write!(f, "Delete({path:?})"),
            FileChange::DeleteTree { path } => write!(f, "DeleteTree({path:?})"),
            FileChange::Rename { from, to } => write!(f, "Rename({from:?} -> {to:?})"),
        }
    }
}

impl FileChange {
    /// The path the change applies to (a rename's source).
    pub fn path(&self) -> &str {
        match self {
            FileChange::Write { path, .. }
            | FileChange::Truncate { path }
            | FileChange::Delete { path }
            | FileChange::DeleteTree { path } => path,
            FileChange::Rename { from, .. } => from,
        }
    }
}

/// Access to an image's files.
pub trait Backend: Send + Sync {
    /// A short description for messages and reports (e.g. the root path).
    fn describe(&self) -> String;
    /// Lists a directory (`""` = the root). Missing directory: `NotFound`.
    fn list(&self, dir: &str) -> Result<Vec<DirEntry>>;
    /// Whether a file or directory exists.
    fn exists(&self, path: &str) -> bool;
    /// Whether `path` is a directory.
    fn is_dir(&self, path: &str) -> bool;
    /// Reads a whole file.
    fn read(&self, path: &str) -> Result<Vec<u8>>;
    /// Reads at most `len` bytes from the start of a file.
    fn read_head(&self, path: &str, len: usize) -> Result<Vec<u8>>;
    /// How many names the host file behind `path` has (its hard-link
    /// count). More than one means a write in place would also change the
    /// other names, possibly outside the image. Backends without host files
    /// answer 1 (the default).
    fn link_count(&self, path: &str) -> Result<u64> {
        let _ = path;
        Ok(1)
    }
    /// Applies every change or none: on any failure the image is left as it
    /// was before the call.
    fn commit(&mut self, changes: &[FileChange]) -> Result<()>;
    /// Whether [`rewrite_file_security`](Backend::rewrite_file_security)
    /// covers every file and directory of the image (default: no).
    fn rewrites_file_security(&self) -> bool {
        false
    }
    /// Asks the next [`commit`](Backend::commit) to also rewrite the file
    /// and directory security descriptors that name the machine SID `old`
    /// (or an account under it) so they name `new`, in the same
    /// all-or-nothing step. Returns whether this backend can; the default
    /// cannot, and the run report then says file ACLs were not rewritten.
    fn rewrite_file_security(&mut self, old: &Sid, new: &Sid) -> bool {
        let _ = (old, new);
        false
    }
    /// What the last successful [`commit`](Backend::commit) could not keep
    /// (metadata the backend cannot carry over), one sentence each, for the
    /// run report. `sid_changed`: the run rewrote the machine SID. Default:
    /// nothing.
    fn commit_caveats(&self, sid_changed: bool) -> Vec<String> {
        let _ = sid_changed;
        Vec::new()
    }
}

/// Joins two image paths with a backslash.
pub fn join(a: &str, b: &str) -> String {
    let a = a.trim_end_matches('\\');
    let b = b.trim_start_matches('\\');
    if a.is_empty() {
        b.to_string()
    } else if b.is_empty() {
        a.to_string()
    } else {
        format!("{a}\\{b}")
    }
}
