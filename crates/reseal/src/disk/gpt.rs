//! GUID Partition Tables (UEFI specification, chapter 5): header with its
//! CRC-32, the partition entry array with its CRC-32, and the backup copy
//! at the end of the disk when the primary is damaged.

use super::partition::{Partition, PartitionKind, PartitionScheme};
use super::{BlockDevice, Fields, Guid, crc32, format_err, utf16le};
use crate::Result;
use std::path::Path;

/// Microsoft basic data (NTFS, FAT, exFAT).
pub const BASIC_DATA: Guid = Guid::from_str_const("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7");
/// EFI system partition.
pub const EFI_SYSTEM: Guid = Guid::from_str_const("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
/// Microsoft reserved partition.
pub const MS_RESERVED: Guid = Guid::from_str_const("E3C9E316-0B5C-4DB8-817D-F92DF00215AE");
/// Windows recovery environment.
pub const MS_RECOVERY: Guid = Guid::from_str_const("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC");
/// Linux filesystem data.
pub const LINUX_DATA: Guid = Guid::from_str_const("0FC63DAF-8483-4772-8E79-3D69D8477DE4");

const MAX_ENTRIES_BYTES: u64 = 16 << 20;

/// The fields of a GPT header that locate the partition entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    /// Logical block size the header was found with (512 or 4096).
    pub block: u64,
    /// LBA of this header.
    pub my_lba: u64,
    /// LBA of the other copy.
    pub alternate_lba: u64,
    /// Disk GUID.
    pub disk_guid: Guid,
    /// LBA of the entry array.
    pub entries_lba: u64,
    /// Number of entries.
    pub entry_count: u32,
    /// Size of one entry.
    pub entry_size: u32,
    /// CRC-32 of the entry array.
    pub entries_crc: u32,
}

fn parse_header(dev: &dyn BlockDevice, name: &Path, block: u64, lba: u64) -> Result<GptHeader> {
    let off = lba.saturating_mul(block);
    if off.checked_add(block).is_none_or(|e| e > dev.len()) {
        return Err(format_err(
            name,
            off,
            "GPT header",
            "inside the disk",
            "past the end",
        ));
    }
    let mut h = vec![0u8; block as usize];
    dev.read_at(off, &mut h)?;
    let f = Fields::new(&h, name, off, "GPT header");
    let sig = f.array::<8>(0)?;
    if &sig != b"EFI PART" {
        return Err(format_err(
            name,
            off,
            "GPT header signature",
            "\"EFI PART\"",
            format!("{sig:02X?}"),
        ));
    }
    let size = f.le32(12)? as usize;
    if !(92..=block as usize).contains(&size) {
        return Err(format_err(
            name,
            off + 12,
            "GPT header size",
            format!("92..={block}"),
            size.to_string(),
        ));
    }
    let stored = f.le32(16)?;
    let mut copy = f.bytes(0, size)?.to_vec();
    if let Some(c) = copy.get_mut(16..20) {
        c.fill(0);
    }
    let computed = crc32(&copy);
    if stored != computed {
        return Err(format_err(
            name,
            off + 16,
            "GPT header CRC-32",
            format!("{computed:08X}"),
            format!("{stored:08X}"),
        ));
    }
    let hdr = GptHeader {
        block,
        my_lba: f.le64(24)?,
        alternate_lba: f.le64(32)?,
        disk_guid: f.guid(56)?,
        entries_lba: f.le64(72)?,
        entry_count: f.le32(80)?,
        entry_size: f.le32(84)?,
        entries_crc: f.le32(88)?,
    };
    if hdr.my_lba != lba {
        return Err(format_err(
            name,
            off + 24,
            "GPT header's own LBA",
            lba.to_string(),
            hdr.my_lba.to_string(),
        ));
    }
    if hdr.entry_size < 128 || hdr.entry_size % 8 != 0 {
        return Err(format_err(
            name,
            off + 84,
            "GPT partition entry size",
            "a multiple of 8, at least 128",
            hdr.entry_size.to_string(),
        ));
    }
    Ok(hdr)
}

fn read_entries(dev: &dyn BlockDevice, name: &Path, h: &GptHeader) -> Result<Vec<Partition>> {
    let total = u64::from(h.entry_count) * u64::from(h.entry_size);
    let off = h.entries_lba.checked_mul(h.block);
    let off = match off {
        Some(o)
            if total <= MAX_ENTRIES_BYTES
                && o.checked_add(total).is_some_and(|e| e <= dev.len()) =>
        {
            o
        }
        _ => {
            return Err(format_err(
                name,
                h.my_lba.saturating_mul(h.block).saturating_add(72),
                "GPT partition entry array",
                "an array inside the disk (at most 16 MiB)",
                format!(
                    "{} entries of {} bytes at LBA {}",
                    h.entry_count, h.entry_size, h.entries_lba
                ),
            ));
        }
    };
    let mut arr = vec![0u8; total as usize];
    dev.read_at(off, &mut arr)?;
    let crc = crc32(&arr);
    if crc != h.entries_crc {
        return Err(format_err(
            name,
            off,
            "GPT partition entry array CRC-32",
            format!("{:08X} (from the header)", h.entries_crc),
            format!("{crc:08X}"),
        ));
    }
    let mut out = Vec::new();
    for (i, e) in arr.chunks_exact(h.entry_size as usize).enumerate() {
        let at = off + i as u64 * u64::from(h.entry_size);
        let e = Fields::new(e, name, at, "GPT partition entry");
        let kind = e.guid(0)?;
        if kind.is_nil() {
            continue;
        }
        let first = e.le64(32)?;
        let last = e.le64(40)?;
        let range = last
            .checked_sub(first)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(h.block))
            .zip(first.checked_mul(h.block));
        let (length, offset) = match range {
            Some((len, o)) if o.checked_add(len).is_some_and(|end| end <= dev.len()) => (len, o),
            _ => {
                return Err(format_err(
                    name,
                    at + 32,
                    "GPT partition extent",
                    format!("first <= last, inside the disk of {} bytes", dev.len()),
                    format!("LBA {first}..={last}"),
                ));
            }
        };
        out.push(Partition {
            number: i as u32 + 1,
            scheme: PartitionScheme::Gpt,
            kind: PartitionKind::Gpt(kind),
            offset,
            length,
            name: utf16le(e.bytes(56, 72)?),
            guid: e.guid(16)?,
            attributes: e.le64(48)?,
        });
    }
    Ok(out)
}

/// Reads the GPT: the primary header at LBA 1 (block size 512, else
/// 4096), falling back to the backup header at the last LBA when the
/// primary or its entries are damaged.
pub fn read_gpt(dev: &dyn BlockDevice, name: &Path) -> Result<Vec<Partition>> {
    let mut first_err = None;
    for block in [512u64, 4096] {
        let primary = parse_header(dev, name, block, 1).and_then(|h| read_entries(dev, name, &h));
        match primary {
            Ok(p) => return Ok(p),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
        let last = dev.len() / block;
        if last >= 2 {
            let backup =
                parse_header(dev, name, block, last - 1).and_then(|h| read_entries(dev, name, &h));
            if let Ok(p) = backup {
                return Ok(p);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| format_err(name, 512, "GPT header", "a valid header", "none")))
}
