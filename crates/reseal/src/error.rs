//! The one error type of the `reseal` library.

use std::path::PathBuf;

/// Everything that can go wrong while inspecting or generalizing an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResealError {
    /// A file operation on the host failed.
    #[error("{path}: {action}: {source}")]
    Io {
        /// Host path involved.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A registry hive could not be read, edited or written.
    #[error("{path}: {source}")]
    Hive {
        /// Path of the hive inside the image.
        path: String,
        /// The hive engine's error (file, offset, expected, found).
        #[source]
        source: reseal_hive::HiveError,
    },
    /// A path inside the image is missing.
    #[error("{path}: not found in the image")]
    NotFound {
        /// Path inside the image (Windows form, relative to the root).
        path: String,
    },
    /// A path inside the image is unsafe (escapes the root, follows a link
    /// out of it) or malformed.
    #[error("{path}: {reason}")]
    UnsafePath {
        /// Path inside the image.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// No Windows installation was found under the given root.
    #[error(
        "{root}: no Windows installation found (expected <dir>\\System32\\config\\SYSTEM under the root)"
    )]
    NoInstall {
        /// The root given.
        root: String,
    },
    /// Input given by the user is not acceptable (answer file, SID, option).
    #[error("{what}: {message}")]
    InvalidInput {
        /// Which input.
        what: String,
        /// What is wrong, with what was expected.
        message: String,
    },
    /// Committing changes failed; the image was restored to its prior state.
    #[error(
        "commit failed at {path} ({action}): {message}; the image was left as it was before the run"
    )]
    CommitFailed {
        /// Path being changed when it failed.
        path: String,
        /// Step that failed.
        action: &'static str,
        /// The underlying error.
        message: String,
    },
    /// The structural checker found problems in a hive after editing;
    /// nothing was written.
    #[error(
        "{path}: the edited hive fails the structural check ({count} error(s), first: {first}); nothing was written"
    )]
    CheckFailed {
        /// Path of the hive inside the image.
        path: String,
        /// Number of errors.
        count: usize,
        /// The first error.
        first: String,
    },
    /// The verification pass after a machine SID rewrite found the old SID
    /// in a hive or file the run writes; nothing was written.
    #[error(
        "{place}: the old machine SID {sid} is still present after the rewrite ({detail}); nothing was written"
    )]
    SidLeftover {
        /// The hive or file (path inside the image).
        place: String,
        /// The old SID.
        sid: String,
        /// Where in it, and in which form.
        detail: String,
    },
    /// The image is not in a state the command accepts (for example
    /// `personalize` of an image that was never generalized); nothing was
    /// written. The command line exits with 1 for it, as for a preflight
    /// refusal.
    #[error("{what}: refused: {message}")]
    Refused {
        /// The image (and install) refused.
        what: String,
        /// Why, with the way forward.
        message: String,
    },
    /// A disk image container or partition table is corrupt, truncated or
    /// of an unsupported kind.
    #[error("{file}: {what} at offset {offset}: expected {expected}, found {found}")]
    DiskFormat {
        /// Host path of the image file.
        file: PathBuf,
        /// Byte offset in the file (or device) where the problem is.
        offset: u64,
        /// Which structure or field.
        what: String,
        /// What was expected.
        expected: String,
        /// What was found.
        found: String,
    },
    /// Another process holds the image (a running VM, `qemu-img`, or
    /// another reseal run), or changed it since this run read it.
    #[error("{path}: the image is in use: {holder}; {what}")]
    Busy {
        /// Host path of the image file or root.
        path: PathBuf,
        /// Who holds it, as far as it can be known.
        holder: String,
        /// What was refused, and what to do.
        what: String,
    },
    /// Not enough free space on the host file system for what the run
    /// would write; nothing was written.
    #[error(
        "{path}: not enough free space for {what}: {needed} bytes needed, {available} bytes available; nothing was written"
    )]
    NoSpace {
        /// A path on the file system that is full.
        path: PathBuf,
        /// What would have been written.
        what: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes available to this user.
        available: u64,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = ResealError> = std::result::Result<T, E>;

impl ResealError {
    /// Wraps a hive engine error with the hive's path in the image.
    pub fn hive(path: impl Into<String>, source: reseal_hive::HiveError) -> Self {
        ResealError::Hive {
            path: path.into(),
            source,
        }
    }
}
