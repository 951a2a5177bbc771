//! Cell-level access to the hive-bins area: locating cells by index,
//! reading their payload, and walking the bins.

use crate::base_block::BASE_BLOCK_SIZE;
use crate::bytes::{i32_at, u32_at};
use crate::error::{HiveError, Result};

/// The "no cell" index.
pub const NIL: u32 = 0xFFFF_FFFF;
/// Size of a bin header.
pub const BIN_HEADER: usize = 32;
/// The unit bins are sized in.
pub const BIN_UNIT: usize = 4096;

/// Absolute file offset of a cell index.
pub fn file_offset(index: u32) -> u64 {
    BASE_BLOCK_SIZE as u64 + u64::from(index)
}

/// One hive bin: its index (offset from the bins area) and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bin {
    /// Offset of the bin from the start of the bins area.
    pub start: u32,
    /// Size of the bin in bytes.
    pub size: u32,
}

impl Bin {
    /// End offset (exclusive) of the bin.
    pub fn end(&self) -> u32 {
        self.start + self.size
    }
}

/// One cell found by a bin walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellEntry {
    /// Cell index.
    pub index: u32,
    /// Absolute cell size in bytes (header included).
    pub size: u32,
    /// Whether the cell is allocated (negative size field).
    pub allocated: bool,
}

/// Walks every bin of `data` (a whole hive image) up to `4096 + length`,
/// validating bin headers and cell tiling, and returns bins and cells.
pub fn walk_bins(file: &str, data: &[u8], length: u32) -> Result<(Vec<Bin>, Vec<CellEntry>)> {
    let end = BASE_BLOCK_SIZE as u64 + u64::from(length);
    if (data.len() as u64) < end {
        return Err(HiveError::corrupt(
            file,
            data.len() as u64,
            "hive file length",
            format!("at least {end} bytes (4096 + hive bins size)"),
            format!("{} bytes", data.len()),
        ));
    }
    let mut bins = Vec::new();
    let mut cells = Vec::new();
    let mut pos: u32 = 0;
    while pos < length {
        let off = BASE_BLOCK_SIZE + pos as usize;
        let sig = &data[off..off + 4];
        if sig != b"hbin" {
            return Err(HiveError::corrupt(
                file,
                off as u64,
                "hive bin signature",
                "\"hbin\"",
                format!("{sig:02x?}"),
            ));
        }
        let bin_off = u32_at(data, off + 4).unwrap_or(NIL);
        if bin_off != pos {
            return Err(HiveError::corrupt(
                file,
                off as u64 + 4,
                "hive bin offset field",
                format!("{pos:#x}"),
                format!("{bin_off:#x}"),
            ));
        }
        let size = u32_at(data, off + 8).unwrap_or(0);
        if size == 0
            || size as usize % BIN_UNIT != 0
            || u64::from(pos) + u64::from(size) > u64::from(length)
        {
            return Err(HiveError::corrupt(
                file,
                off as u64 + 8,
                "hive bin size",
                format!(
                    "a non-zero multiple of 4096 that ends within the hive bins size {length:#x}"
                ),
                format!("{size:#x}"),
            ));
        }
        let bin = Bin { start: pos, size };
        let mut c = pos + BIN_HEADER as u32;
        while c < bin.end() {
            let raw = i32_at(data, BASE_BLOCK_SIZE + c as usize).unwrap_or(0);
            let abs = raw.unsigned_abs();
            if raw == 0 || abs % 8 != 0 || u64::from(c) + u64::from(abs) > u64::from(bin.end()) {
                return Err(HiveError::corrupt(
                    file,
                    file_offset(c),
                    "cell size",
                    format!(
                        "a non-zero multiple of 8 that ends within the bin ending at {:#x}",
                        file_offset(bin.end())
                    ),
                    format!("{raw}"),
                ));
            }
            cells.push(CellEntry {
                index: c,
                size: abs,
                allocated: raw < 0,
            });
            c += abs;
        }
        bins.push(bin);
        pos += size;
    }
    Ok((bins, cells))
}
