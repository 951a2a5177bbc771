//! The value record (`vk`) and value data placement rules.

use crate::bytes::{u16_at, u32_at};
use crate::names::decode_name;

/// Offsets inside the `vk` record (relative to the cell payload).
pub mod off {
    /// Name length (u16).
    pub const NAME_LEN: usize = 2;
    /// Data length; bit 31 = inline.
    pub const DATA_LEN: usize = 4;
    /// Data cell index or inline bytes.
    pub const DATA: usize = 8;
    /// Value type.
    pub const TYPE: usize = 12;
    /// Flags (u16).
    pub const FLAGS: usize = 16;
    /// Spare (u16).
    pub const SPARE: usize = 18;
    /// Start of the name.
    pub const NAME: usize = 20;
}

/// VALUE_COMP_NAME: the name is stored one byte per code unit.
pub const VALUE_COMP_NAME: u16 = 0x0001;
/// Bit 31 of the data length: data stored inline in the Data field.
pub const DATA_INLINE: u32 = 0x8000_0000;
/// Largest data stored in one cell in hives that use big data (minor >= 4).
pub const BIG_DATA_SEGMENT: usize = 16344;

/// A parsed `vk` record.
#[derive(Debug, Clone)]
pub struct ValueNode {
    /// Raw data length field (with the inline bit).
    pub data_len_raw: u32,
    /// Data field (cell index or inline bytes).
    pub data: u32,
    /// Value type.
    pub value_type: u32,
    /// Flags.
    pub flags: u16,
    /// Name as UTF-16 code units (empty for the default value).
    pub name: Vec<u16>,
}

impl ValueNode {
    /// Parses a `vk` payload; `None` when malformed.
    pub fn parse(p: &[u8]) -> Option<ValueNode> {
        if p.get(0..2)? != b"vk" {
            return None;
        }
        let name_len = u16_at(p, off::NAME_LEN)? as usize;
        let flags = u16_at(p, off::FLAGS)?;
        let raw = p.get(off::NAME..off::NAME + name_len)?;
        Some(ValueNode {
            data_len_raw: u32_at(p, off::DATA_LEN)?,
            data: u32_at(p, off::DATA)?,
            value_type: u32_at(p, off::TYPE)?,
            flags,
            name: decode_name(raw, flags & VALUE_COMP_NAME != 0),
        })
    }

    /// Data length without the inline bit.
    pub fn data_len(&self) -> u32 {
        self.data_len_raw & !DATA_INLINE
    }

    /// Whether the data is stored in the Data field itself.
    pub fn is_inline(&self) -> bool {
        self.data_len_raw & DATA_INLINE != 0
    }
}

/// Whether a value of `len` bytes uses big data in a hive of minor version `minor`.
pub fn uses_big_data(minor: u32, len: usize) -> bool {
    minor >= 4 && len > BIG_DATA_SEGMENT
}
