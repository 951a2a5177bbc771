//! Edits: what operations plan. Data only; nothing here writes.

use serde::Serialize;

use crate::hives::HiveId;

/// A change to one registry hive, addressed by key path from the hive root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum RegEdit {
    /// Create a key (and missing parents).
    CreateKey {
        /// Key path from the hive root.
        key: String,
    },
    /// Delete a key and its subtree.
    DeleteKey {
        /// Key path from the hive root.
        key: String,
    },
    /// Set a value (creating the key if needed).
    SetValue {
        /// Key path from the hive root.
        key: String,
        /// Value name ("" = default value).
        name: String,
        /// Registry type number.
        value_type: u32,
        /// Raw data (hidden in reports when `secret`).
        #[serde(serialize_with = "hex_data")]
        data: Vec<u8>,
        /// The data is a secret (password): never printed or logged.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        secret: bool,
    },
    /// Delete a value.
    DeleteValue {
        /// Key path from the hive root.
        key: String,
        /// Value name ("" = default value).
        name: String,
    },
    /// Rename a key (same parent).
    RenameKey {
        /// Key path from the hive root.
        key: String,
        /// The new last component.
        new_name: String,
    },
    /// Rewrite a domain SID (and every account SID under it) everywhere in
    /// the hive: security descriptors, key names, value names, value data.
    RewriteSid {
        /// The SID to replace (string form).
        old: String,
        /// The SID to put in its place.
        new: String,
    },
}

fn hex_data<S: serde::Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&reseal_hive::dump::hex(data))
}

/// A change to a file inside the Windows root, by path from the image root.
/// Its `Debug` form shows lengths, never contents (an answer file may hold
/// passwords).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FileEdit {
    /// Create or replace a file.
    Write {
        /// Path inside the image.
        path: String,
        /// New contents (not serialized; its length is).
        #[serde(skip)]
        data: Vec<u8>,
        /// Length of the new contents.
        len: usize,
    },
    /// Delete a file.
    Delete {
        /// Path inside the image.
        path: String,
    },
    /// Delete a directory tree.
    DeleteTree {
        /// Path inside the image.
        path: String,
    },
    /// Rename (move) a file or directory; the destination must not exist.
    Rename {
        /// Path inside the image.
        from: String,
        /// The new path inside the image.
        to: String,
    },
}

impl std::fmt::Debug for FileEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileEdit::Write { path, len, .. } => write!(f, "Write({path:?}, {len} bytes)"),
            FileEdit::Delete { path } => write!(f, "Delete({path:?})"),
            FileEdit::DeleteTree { path } => write!(f, "DeleteTree({path:?})"),
            FileEdit::Rename { from, to } => write!(f, "Rename({from:?} -> {to:?})"),
        }
    }
}

impl FileEdit {
    /// A write of `data` to `path`.
    pub fn write(path: impl Into<String>, data: Vec<u8>) -> FileEdit {
        FileEdit::Write {
            path: path.into(),
            len: data.len(),
            data,
        }
    }
}

/// One edit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "target", rename_all = "snake_case")]
pub enum Edit {
    /// A registry edit in one hive.
    Registry {
        /// Which hive.
        hive: HiveId,
        /// The change.
        #[serde(flatten)]
        change: RegEdit,
    },
    /// A file edit.
    File {
        /// The change.
        #[serde(flatten)]
        change: FileEdit,
    },
}

/// An edit with the operation that planned it and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedEdit {
    /// Stable name of the operation.
    pub operation: &'static str,
    /// Why (one line, for the report).
    pub reason: String,
    /// The edit.
    pub edit: Edit,
}

/// Builder helpers for planners.
impl PlannedEdit {
    /// A registry edit.
    pub fn reg(
        operation: &'static str,
        hive: HiveId,
        change: RegEdit,
        reason: impl Into<String>,
    ) -> Self {
        PlannedEdit {
            operation,
            reason: reason.into(),
            edit: Edit::Registry { hive, change },
        }
    }

    /// A file edit.
    pub fn file(operation: &'static str, change: FileEdit, reason: impl Into<String>) -> Self {
        PlannedEdit {
            operation,
            reason: reason.into(),
            edit: Edit::File { change },
        }
    }
}
