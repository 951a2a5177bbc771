//! Partitions: the list of partitions of a disk (MBR or GPT) and a
//! [`BlockDevice`] view of one of them.

use super::{BlockDevice, Guid, format_err, gpt, mbr};
use crate::Result;
use std::path::Path;

/// Which partition table a partition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionScheme {
    /// Master Boot Record (including logical partitions in extended ones).
    Mbr,
    /// GUID Partition Table.
    Gpt,
}

/// The type of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKind {
    /// An MBR partition type byte (0x07 = NTFS/exFAT, 0x0C = FAT32 LBA, ...).
    Mbr(u8),
    /// A GPT partition type GUID.
    Gpt(Guid),
}

impl PartitionKind {
    /// A short human-readable name of the type, when known.
    pub fn describe(&self) -> &'static str {
        match self {
            PartitionKind::Mbr(t) => match t {
                0x07 => "NTFS/exFAT",
                0x0B | 0x0C => "FAT32",
                0x01 | 0x04 | 0x06 | 0x0E => "FAT",
                0x27 => "Windows recovery",
                0x83 => "Linux",
                0x82 => "Linux swap",
                0xEE => "GPT protective",
                0xEF => "EFI system",
                _ => "other",
            },
            PartitionKind::Gpt(g) => {
                if *g == gpt::BASIC_DATA {
                    "Microsoft basic data"
                } else if *g == gpt::EFI_SYSTEM {
                    "EFI system"
                } else if *g == gpt::MS_RESERVED {
                    "Microsoft reserved"
                } else if *g == gpt::MS_RECOVERY {
                    "Windows recovery"
                } else if *g == gpt::LINUX_DATA {
                    "Linux filesystem"
                } else {
                    "other"
                }
            }
        }
    }

    /// Whether the type may hold an NTFS volume (MBR 0x07, GPT basic data).
    pub fn may_be_ntfs(&self) -> bool {
        matches!(self, PartitionKind::Mbr(0x07)) || *self == PartitionKind::Gpt(gpt::BASIC_DATA)
    }
}

/// One partition of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Number as Linux counts them: MBR primaries 1-4, logical from 5;
    /// GPT entries from 1 in table order (empty entries skipped but counted).
    pub number: u32,
    /// Which table it comes from.
    pub scheme: PartitionScheme,
    /// The type.
    pub kind: PartitionKind,
    /// Byte offset on the disk.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// GPT partition name (empty for MBR).
    pub name: String,
    /// GPT unique partition GUID (nil for MBR).
    pub guid: Guid,
    /// MBR active flag or GPT attribute bits (as read).
    pub attributes: u64,
}

/// Lists the partitions of a disk: GPT when the MBR is protective (type
/// 0xEE) and a valid GPT header is found, MBR otherwise. A disk with no
/// partition table (no 0x55AA signature) gives an empty list.
pub fn list_partitions(dev: &dyn BlockDevice, name: &Path) -> Result<Vec<Partition>> {
    let Some(table) = mbr::read_mbr(dev, name)? else {
        return Ok(Vec::new());
    };
    if table.iter().any(|e| e.kind == 0xEE) {
        return gpt::read_gpt(dev, name);
    }
    mbr::list_mbr(dev, name, &table)
}

/// A [`BlockDevice`] covering one partition of another device.
#[derive(Debug)]
pub struct PartitionDevice<D> {
    inner: D,
    offset: u64,
    len: u64,
}

impl<D: BlockDevice> PartitionDevice<D> {
    /// A view of `len` bytes at `offset` of `inner`; refused when it does
    /// not fit inside `inner`.
    pub fn new(inner: D, offset: u64, len: u64) -> Result<Self> {
        if offset.checked_add(len).is_none_or(|e| e > inner.len()) {
            return Err(format_err(
                Path::new("<partition>"),
                offset,
                "partition extent",
                format!("inside the disk of {} bytes", inner.len()),
                format!("{len} bytes"),
            ));
        }
        Ok(PartitionDevice { inner, offset, len })
    }

    /// A view of `part` on `inner`.
    pub fn of(inner: D, part: &Partition) -> Result<Self> {
        Self::new(inner, part.offset, part.length)
    }

    /// Gives back the underlying device.
    pub fn into_inner(self) -> D {
        self.inner
    }

    fn translate(&self, offset: u64, n: usize) -> Result<u64> {
        super::check_range(Path::new("<partition>"), self.len, offset, n)?;
        Ok(self.offset + offset)
    }
}

impl<D: BlockDevice> BlockDevice for PartitionDevice<D> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let at = self.translate(offset, buf.len())?;
        self.inner.read_at(at, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        let at = self.translate(offset, buf.len())?;
        self.inner.write_at(at, buf)
    }
    fn flush(&mut self) -> Result<()> {
        self.inner.flush()
    }
}
