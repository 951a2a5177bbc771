//! `.reg` files: parsing and writing (REGEDIT5 UTF-16LE/UTF-8 and REGEDIT4).
//!
//! This module knows nothing about hives: [`parse_reg`] turns the bytes of a
//! `.reg` file into a list of [`RegOp`]s (key paths exactly as written, with
//! any `HKEY_...` prefix left in place), and [`RegWriter`] produces text in
//! the layout that Windows `regedit.exe` exports.
//!
//! # Format summary
//!
//! * Encoding: UTF-16LE with a byte order mark (what regedit writes for
//!   version 5), UTF-8 with or without a byte order mark, and, for files that
//!   are not valid UTF-8, Windows-1252 (the ANSI code page of `REGEDIT4`
//!   files on western systems). Line ends may be CRLF, LF or CR.
//! * The first non-blank line is the header: `Windows Registry Editor
//!   Version 5.00` ([`RegVersion::V5`]) or `REGEDIT4` ([`RegVersion::V4`]).
//! * Blank lines and lines starting with `;` are ignored, as are `;`
//!   comments after a section header or after value data.
//! * `[path]` starts a key section, `[-path]` deletes a key (with its
//!   subkeys). The path is the text between the first `[` and the *last* `]`
//!   of the line, so key names may contain brackets.
//! * `"name"=data` or `@=data` (the default value) sets a value; in names,
//!   `\\` stands for `\` and `\"` for `"`. `"name"=-` deletes a value.
//! * Data is one of `"text"` (REG_SZ, same escapes as names, stored as
//!   UTF-16LE with a terminating NUL), `dword:` followed by up to 8 hex
//!   digits (REG_DWORD, little endian), `hex:` (REG_BINARY) or `hex(N):`
//!   with `N` any 32-bit type in hex, each followed by comma-separated hex
//!   bytes. Hex lists may continue on following lines after a trailing `\`;
//!   indentation, stray spaces and a trailing comma are accepted.
//!
//! # Deliberate deviations from regedit
//!
//! * `hex(N):` data is always the stored bytes, also in `REGEDIT4` files.
//!   Windows regedit converts `hex(1)`, `hex(2)` and `hex(7)` data of
//!   version 4 files from the ANSI code page to UTF-16, and adds a missing
//!   terminating NUL to string types; doing so here would break exact round
//!   trips. Quoted strings of version 4 files are converted to UTF-16LE, as
//!   regedit does.
//! * Only the `\\` and `\"` escapes are accepted in quoted text (Wine's
//!   `\n`, `\r` and `\0` are not Windows syntax); other escapes are errors.
//! * The writer never puts CR or LF inside quotes: such strings are written
//!   as `hex(1):` (regedit would write them raw and could not read them
//!   back).
//! * Key paths and value names cannot contain CR or LF in this format, and a
//!   key path cannot start with `-` (it would read as a deletion); the writer
//!   writes them as given and such files do not parse back to the same ops.

mod parse;
mod write;

pub use parse::parse_reg;
pub use write::RegWriter;

/// Value type REG_NONE.
pub const REG_NONE: u32 = 0;
/// Value type REG_SZ.
pub const REG_SZ: u32 = 1;
/// Value type REG_EXPAND_SZ.
pub const REG_EXPAND_SZ: u32 = 2;
/// Value type REG_BINARY.
pub const REG_BINARY: u32 = 3;
/// Value type REG_DWORD (little endian).
pub const REG_DWORD: u32 = 4;
/// Value type REG_MULTI_SZ.
pub const REG_MULTI_SZ: u32 = 7;
/// Value type REG_QWORD (little endian).
pub const REG_QWORD: u32 = 11;

/// The header, and with it the dialect, of a `.reg` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegVersion {
    /// `Windows Registry Editor Version 5.00` (Windows 2000 and later).
    V5,
    /// `REGEDIT4` (Windows 95/NT 4; quoted strings in the ANSI code page).
    V4,
}

impl RegVersion {
    /// The header line of this version, without line end.
    pub fn header(self) -> &'static str {
        match self {
            RegVersion::V5 => "Windows Registry Editor Version 5.00",
            RegVersion::V4 => "REGEDIT4",
        }
    }
}

/// The character encoding of a `.reg` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegEncoding {
    /// UTF-16LE with a byte order mark: what regedit writes for version 5.
    Utf16Le,
    /// UTF-8 (with or without byte order mark when reading, without when
    /// writing). Also reported for 8-bit files that were read as
    /// Windows-1252 because they are not valid UTF-8.
    Utf8,
}

/// One instruction of a `.reg` file, in file order.
///
/// Paths are exactly as written between the brackets, including any root
/// prefix such as `HKEY_LOCAL_MACHINE\SOFTWARE`; see [`strip_prefix_ci`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RegOp {
    /// `[path]`: create the key if missing and make it current.
    CreateKey {
        /// The key path.
        path: String,
    },
    /// `[-path]`: delete the key and all its subkeys.
    DeleteKey {
        /// The key path.
        path: String,
    },
    /// `"name"=data` or `@=data` under the current key.
    SetValue {
        /// The key path of the enclosing section.
        path: String,
        /// The value name; `None` for the default value `@`.
        name: Option<String>,
        /// The registry value type (REG_SZ = 1, ...), any 32-bit number.
        value_type: u32,
        /// The raw data bytes as stored in the registry (REG_SZ as UTF-16LE
        /// with its terminating NUL, REG_DWORD as 4 little-endian bytes).
        data: Vec<u8>,
    },
    /// `"name"=-` or `@=-` under the current key.
    DeleteValue {
        /// The key path of the enclosing section.
        path: String,
        /// The value name; `None` for the default value `@`.
        name: Option<String>,
    },
}

/// A parsed `.reg` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegDocument {
    /// The header found.
    pub version: RegVersion,
    /// The encoding the file was read in.
    pub encoding: RegEncoding,
    /// The instructions, in file order.
    pub ops: Vec<RegOp>,
}

/// Strips `prefix` from the start of the key path `path`, comparing ASCII
/// letters case-insensitively, on a backslash boundary.
///
/// Returns the rest of the path without its leading backslash (`""` when
/// `path` is the prefix itself), or `None` when `path` does not start with
/// `prefix` followed by `\` or the end of the path. A trailing backslash on
/// `prefix` is allowed.
///
/// ```
/// use reseal_hive::regfile::strip_prefix_ci;
/// let p = r"hkey_local_machine\Software\Foo";
/// assert_eq!(strip_prefix_ci(p, r"HKEY_LOCAL_MACHINE\SOFTWARE"), Some("Foo"));
/// assert_eq!(strip_prefix_ci(p, r"HKEY_LOCAL_MACHINE\SOFTWARE\"), Some("Foo"));
/// assert_eq!(strip_prefix_ci(r"HKLM\SOFTWARE", r"HKLM\software"), Some(""));
/// assert_eq!(strip_prefix_ci(r"HKLM\SOFTWARE2", r"HKLM\SOFTWARE"), None);
/// ```
pub fn strip_prefix_ci<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let prefix = prefix.strip_suffix('\\').unwrap_or(prefix);
    let head = path.as_bytes().get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix.as_bytes()) {
        return None;
    }
    let rest = path.get(prefix.len()..)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix('\\')
    }
}

#[cfg(test)]
mod tests;
