//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while opening, reading, editing or saving a hive.
///
/// Each variant says *where* (file, byte offset, key path) and *what*
/// (expected versus found) so that a user can act on the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HiveError {
    /// Reading or writing a file failed.
    #[error("{file}: {action}: {source}")]
    Io {
        /// The file involved.
        file: PathBuf,
        /// What was being done ("read", "write", "rename", ...).
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The bytes of a hive or log do not follow the format.
    #[error("{file}: offset {offset:#x}: {what}: expected {expected}, found {found}")]
    Corrupt {
        /// The file (or a label such as `<memory>`).
        file: String,
        /// Absolute byte offset in the file.
        offset: u64,
        /// The structure or field being read.
        what: &'static str,
        /// What the format requires there.
        expected: String,
        /// What is actually there.
        found: String,
    },

    /// The hive is dirty and its transaction logs cannot bring it up to date.
    #[error(
        "{file}: hive is dirty (sequence numbers {primary} and {secondary} differ) and cannot be recovered: {reason}; \
         copy the hive together with its .LOG1/.LOG2 files, or open it read-only as is for inspection"
    )]
    DirtyWithoutLogs {
        /// The primary hive file.
        file: String,
        /// Primary sequence number (base block offset 4).
        primary: u32,
        /// Secondary sequence number (base block offset 8).
        secondary: u32,
        /// Why no log could be used.
        reason: String,
    },

    /// A hive opened "as is" (dirty, without replay) cannot be modified or saved.
    #[error(
        "{file}: opened read-only as is (dirty, logs not replayed); it cannot be edited or saved"
    )]
    ReadOnly {
        /// The hive file.
        file: String,
    },

    /// A key path does not exist.
    #[error("{file}: key not found: {path}")]
    KeyNotFound {
        /// The hive file.
        file: String,
        /// The key path as given.
        path: String,
    },

    /// A value does not exist.
    #[error("{file}: value {name:?} not found under {path}")]
    ValueNotFound {
        /// The hive file.
        file: String,
        /// The key path.
        path: String,
        /// The value name (empty for the default value).
        name: String,
    },

    /// A key with that name already exists.
    #[error("{file}: key already exists: {path}")]
    KeyExists {
        /// The hive file.
        file: String,
        /// The conflicting path.
        path: String,
    },

    /// A key or value name breaks the registry's rules.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// The requested edit is not allowed on this key or hive.
    #[error("{file}: {path}: {reason}")]
    Refused {
        /// The hive file.
        file: String,
        /// The key path.
        path: String,
        /// Why the edit was refused.
        reason: String,
    },

    /// The hive cannot grow further (2 GiB stable storage limit).
    #[error(
        "{file}: hive would exceed the 2 GiB limit of stable storage (needs {needed} more bytes)"
    )]
    HiveFull {
        /// The hive file.
        file: String,
        /// Bytes that could not be allocated.
        needed: u64,
    },

    /// A SID string or binary SID is malformed.
    #[error("invalid SID {text:?}: {reason}")]
    InvalidSid {
        /// The SID as given.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A security descriptor is malformed.
    #[error(
        "invalid security descriptor at offset {offset:#x} of the descriptor: {what}: expected {expected}, found {found}"
    )]
    InvalidSecurityDescriptor {
        /// Offset inside the descriptor.
        offset: usize,
        /// Field being checked.
        what: &'static str,
        /// What the format requires.
        expected: String,
        /// What was found.
        found: String,
    },

    /// A `.reg` file does not parse.
    #[error("{file}: line {line}: {message}")]
    RegSyntax {
        /// The .reg file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },

    /// The data given for a value is not acceptable.
    #[error("invalid value data for {name:?}: {reason}")]
    InvalidData {
        /// The value name.
        name: String,
        /// Why it was refused.
        reason: String,
    },

    /// The structural checker found violations after an edit; nothing was saved.
    #[error("{file}: structural check failed with {count} violation(s), first: {first}")]
    CheckFailed {
        /// The hive file.
        file: String,
        /// How many violations.
        count: usize,
        /// The first violation, formatted.
        first: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = HiveError> = std::result::Result<T, E>;

impl HiveError {
    /// Builds a [`HiveError::Corrupt`].
    pub fn corrupt(
        file: &str,
        offset: u64,
        what: &'static str,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        HiveError::Corrupt {
            file: file.to_string(),
            offset,
            what,
            expected: expected.into(),
            found: found.into(),
        }
    }
}
