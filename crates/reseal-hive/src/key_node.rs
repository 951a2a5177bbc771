//! The key node (`nk`) record: field offsets and a parsed view.

use crate::bytes::{u16_at, u32_at, u64_at};
use crate::names::decode_name;

/// Offsets inside the `nk` record (relative to the cell payload).
pub mod off {
    /// Flags (u16).
    pub const FLAGS: usize = 2;
    /// LastWriteTime FILETIME (u64).
    pub const TIMESTAMP: usize = 4;
    /// Parent key index.
    pub const PARENT: usize = 16;
    /// Stable subkey count.
    pub const SUBKEY_COUNT: usize = 20;
    /// Volatile subkey count.
    pub const VOLATILE_COUNT: usize = 24;
    /// Stable subkey list index.
    pub const SUBKEY_LIST: usize = 28;
    /// Volatile subkey list index.
    pub const VOLATILE_LIST: usize = 32;
    /// Value count.
    pub const VALUE_COUNT: usize = 36;
    /// Value list index.
    pub const VALUE_LIST: usize = 40;
    /// Security cell index.
    pub const SECURITY: usize = 44;
    /// Class cell index.
    pub const CLASS: usize = 48;
    /// MaxNameLen (low 16 bits) and user/virtualisation flags (high 16).
    pub const MAX_NAME: usize = 52;
    /// MaxClassLen.
    pub const MAX_CLASS: usize = 56;
    /// MaxValueNameLen.
    pub const MAX_VALUE_NAME: usize = 60;
    /// MaxValueDataLen.
    pub const MAX_VALUE_DATA: usize = 64;
    /// WorkVar.
    pub const WORKVAR: usize = 68;
    /// Name length in bytes as stored.
    pub const NAME_LEN: usize = 72;
    /// Class length in bytes.
    pub const CLASS_LEN: usize = 74;
    /// Start of the name.
    pub const NAME: usize = 76;
}

/// KEY_VOLATILE.
pub const KEY_VOLATILE: u16 = 0x0001;
/// KEY_HIVE_EXIT.
pub const KEY_HIVE_EXIT: u16 = 0x0002;
/// KEY_HIVE_ENTRY (root key).
pub const KEY_HIVE_ENTRY: u16 = 0x0004;
/// KEY_NO_DELETE.
pub const KEY_NO_DELETE: u16 = 0x0008;
/// KEY_SYM_LINK.
pub const KEY_SYM_LINK: u16 = 0x0010;
/// KEY_COMP_NAME: the name is stored one byte per code unit.
pub const KEY_COMP_NAME: u16 = 0x0020;

/// A parsed `nk` record.
#[derive(Debug, Clone)]
pub struct KeyNode {
    /// Flags.
    pub flags: u16,
    /// LastWriteTime.
    pub timestamp: u64,
    /// Parent key index.
    pub parent: u32,
    /// Stable subkey count.
    pub subkey_count: u32,
    /// Stable subkey list.
    pub subkey_list: u32,
    /// Value count.
    pub value_count: u32,
    /// Value list.
    pub value_list: u32,
    /// Security cell.
    pub security: u32,
    /// Class cell.
    pub class: u32,
    /// Class length in bytes.
    pub class_len: u16,
    /// Name as UTF-16 code units.
    pub name: Vec<u16>,
}

impl KeyNode {
    /// Parses an `nk` payload; `None` when the signature is wrong or the
    /// name does not fit the cell.
    pub fn parse(p: &[u8]) -> Option<KeyNode> {
        if p.get(0..2)? != b"nk" {
            return None;
        }
        let flags = u16_at(p, off::FLAGS)?;
        let name_len = u16_at(p, off::NAME_LEN)? as usize;
        let raw = p.get(off::NAME..off::NAME + name_len)?;
        Some(KeyNode {
            flags,
            timestamp: u64_at(p, off::TIMESTAMP)?,
            parent: u32_at(p, off::PARENT)?,
            subkey_count: u32_at(p, off::SUBKEY_COUNT)?,
            subkey_list: u32_at(p, off::SUBKEY_LIST)?,
            value_count: u32_at(p, off::VALUE_COUNT)?,
            value_list: u32_at(p, off::VALUE_LIST)?,
            security: u32_at(p, off::SECURITY)?,
            class: u32_at(p, off::CLASS)?,
            class_len: u16_at(p, off::CLASS_LEN)?,
            name: decode_name(raw, flags & KEY_COMP_NAME != 0),
        })
    }
}
