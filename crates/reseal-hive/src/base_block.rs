//! The base block: the first 4096 bytes of a hive or the first 512 of a log.

use crate::bytes::{put_u32, u32_at, u64_at};
use crate::error::{HiveError, Result};

/// Size of the base block of a primary hive file.
pub const BASE_BLOCK_SIZE: usize = 4096;
/// Bytes covered by the checksum (the first 127 little-endian words).
pub const CHECKSUM_COVERS: usize = 508;
/// Offset of the checksum field.
pub const OFF_CHECKSUM: usize = 508;
/// Offset of the primary sequence number.
pub const OFF_SEQ1: usize = 4;
/// Offset of the secondary sequence number.
pub const OFF_SEQ2: usize = 8;
/// Offset of the last-written FILETIME.
pub const OFF_TIMESTAMP: usize = 12;
/// Offset of the major version.
pub const OFF_MAJOR: usize = 20;
/// Offset of the minor version.
pub const OFF_MINOR: usize = 24;
/// Offset of the file type.
pub const OFF_TYPE: usize = 28;
/// Offset of the file format field.
pub const OFF_FORMAT: usize = 32;
/// Offset of the root cell index.
pub const OFF_ROOT: usize = 36;
/// Offset of the hive-bins data size.
pub const OFF_LENGTH: usize = 40;
/// Offset of the clustering factor.
pub const OFF_CLUSTER: usize = 44;
/// Offset of the flags field.
pub const OFF_FLAGS: usize = 144;
/// Offset of BootType.
pub const OFF_BOOT_TYPE: usize = 4088;
/// Offset of BootRecover.
pub const OFF_BOOT_RECOVER: usize = 4092;

/// File type of a primary hive.
pub const TYPE_PRIMARY: u32 = 0;
/// File type of an old-format (DIRT) log.
pub const TYPE_LOG_OLD: u32 = 1;
/// File type of an NT 4/2000 old-format log.
pub const TYPE_LOG_OLD_NT: u32 = 2;
/// File type of a new-format (HvLE) log.
pub const TYPE_LOG_NEW: u32 = 6;

/// Computes the base-block checksum of the first 508 bytes of `b`
/// (XOR of 127 words, with Windows' fix-ups for 0 and 0xFFFFFFFF).
pub fn checksum(b: &[u8]) -> u32 {
    let mut x = 0u32;
    for i in 0..CHECKSUM_COVERS / 4 {
        x ^= u32_at(b, i * 4).unwrap_or(0);
    }
    match x {
        0 => 1,
        0xFFFF_FFFF => 0xFFFF_FFFE,
        v => v,
    }
}

/// Recomputes and stores the checksum of a base block.
pub fn store_checksum(b: &mut [u8]) {
    let c = checksum(b);
    put_u32(b, OFF_CHECKSUM, c);
}

/// The fields of a base block that the engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseBlock {
    /// Primary sequence number.
    pub seq1: u32,
    /// Secondary sequence number.
    pub seq2: u32,
    /// Last-written FILETIME.
    pub timestamp: u64,
    /// Major version (1).
    pub major: u32,
    /// Minor version (3..=6).
    pub minor: u32,
    /// File type (0 primary, 1/2 old log, 6 new log).
    pub file_type: u32,
    /// File format (1).
    pub format: u32,
    /// Root key cell index.
    pub root: u32,
    /// Size of the hive-bins area.
    pub length: u32,
    /// Clustering factor (1).
    pub cluster: u32,
    /// Flags (bit 0: KTM transactions pending).
    pub flags: u32,
    /// Stored checksum.
    pub stored_checksum: u32,
    /// Whether the stored checksum matches the computed one.
    pub checksum_ok: bool,
}

impl BaseBlock {
    /// Parses a base block without judging it: only the signature and the
    /// size of the buffer are required.
    pub fn parse(file: &str, b: &[u8]) -> Result<Self> {
        if b.len() < 512 {
            return Err(HiveError::corrupt(
                file,
                0,
                "base block",
                "at least 512 bytes",
                format!("{} bytes", b.len()),
            ));
        }
        if &b[0..4] != b"regf" {
            return Err(HiveError::corrupt(
                file,
                0,
                "base block signature",
                "\"regf\"",
                format!("{:02x?}", &b[0..4]),
            ));
        }
        let g = |o| u32_at(b, o).unwrap_or(0);
        let stored_checksum = g(OFF_CHECKSUM);
        Ok(BaseBlock {
            seq1: g(OFF_SEQ1),
            seq2: g(OFF_SEQ2),
            timestamp: u64_at(b, OFF_TIMESTAMP).unwrap_or(0),
            major: g(OFF_MAJOR),
            minor: g(OFF_MINOR),
            file_type: g(OFF_TYPE),
            format: g(OFF_FORMAT),
            root: g(OFF_ROOT),
            length: g(OFF_LENGTH),
            cluster: g(OFF_CLUSTER),
            flags: g(OFF_FLAGS),
            stored_checksum,
            checksum_ok: checksum(b) == stored_checksum,
        })
    }

    /// True when the hive needs log recovery: sequence numbers differ or the
    /// checksum is wrong.
    pub fn is_dirty(&self) -> bool {
        self.seq1 != self.seq2 || !self.checksum_ok
    }

    /// Checks the fields a loader requires of a primary hive (other than the
    /// dirty state), returning the first violation.
    pub fn validate_primary(&self, file: &str) -> Result<()> {
        let bad = |off: usize, what, exp: &str, found: u32| {
            Err(HiveError::corrupt(
                file,
                off as u64,
                what,
                exp,
                found.to_string(),
            ))
        };
        if self.major != 1 {
            return bad(OFF_MAJOR, "major version", "1", self.major);
        }
        if !(3..=6).contains(&self.minor) {
            return bad(OFF_MINOR, "minor version", "3, 4, 5 or 6", self.minor);
        }
        if self.file_type != TYPE_PRIMARY {
            return bad(OFF_TYPE, "file type", "0 (primary hive)", self.file_type);
        }
        if self.format != 1 {
            return bad(OFF_FORMAT, "file format", "1", self.format);
        }
        if self.length % 4096 != 0 || self.length == 0 {
            return bad(
                OFF_LENGTH,
                "hive bins size",
                "a non-zero multiple of 4096",
                self.length,
            );
        }
        if self.length > 0x8000_0000 {
            return bad(OFF_LENGTH, "hive bins size", "at most 2 GiB", self.length);
        }
        Ok(())
    }
}

/// Serial-number comparison of sequence numbers: true when `a` comes before `b`.
pub fn seq_before(a: u32, b: u32) -> bool {
    let d = b.wrapping_sub(a);
    (1..=0x7FFF_FFFF).contains(&d)
}

/// The later of two sequence numbers under serial-number arithmetic.
pub fn seq_max(a: u32, b: u32) -> u32 {
    if seq_before(a, b) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_fixups() {
        let mut b = vec![0u8; 512];
        assert_eq!(checksum(&b), 1, "XOR of zeros is stored as 1");
        b[0..4].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        assert_eq!(checksum(&b), 0xFFFF_FFFE);
        b[4..8].copy_from_slice(&0x0000_00F0u32.to_le_bytes());
        assert_eq!(checksum(&b), 0xFFFF_FF0F);
    }

    #[test]
    fn serial_order() {
        assert!(seq_before(1, 2));
        assert!(!seq_before(2, 1));
        assert!(seq_before(0xFFFF_FFFF, 0));
        assert_eq!(seq_max(0xFFFF_FFF0, 3), 3);
        assert!(!seq_before(5, 5));
    }
}
