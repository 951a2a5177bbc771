//! Master Boot Record partition tables, with logical partitions in
//! extended partitions (the EBR chain).

use super::partition::{Partition, PartitionKind, PartitionScheme};
use super::{BlockDevice, Guid, format_err, le32};
use crate::Result;
use std::path::Path;

/// One of the four entries of an MBR or EBR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrEntry {
    /// Status byte (0x80 = active).
    pub status: u8,
    /// Partition type byte.
    pub kind: u8,
    /// First sector (LBA), relative to the table's base.
    pub start: u32,
    /// Number of sectors.
    pub sectors: u32,
}

const SECTOR: u64 = 512;
const MAX_LOGICAL: u32 = 128;

fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0F | 0x85)
}

fn parse_table(sector: &[u8; 512]) -> [MbrEntry; 4] {
    let mut out = [MbrEntry {
        status: 0,
        kind: 0,
        start: 0,
        sectors: 0,
    }; 4];
    for (i, e) in out.iter_mut().enumerate() {
        let b = 446 + 16 * i;
        *e = MbrEntry {
            status: sector[b],
            kind: sector[b + 4],
            start: le32(sector, b + 8),
            sectors: le32(sector, b + 12),
        };
    }
    out
}

fn read_sector(dev: &dyn BlockDevice, lba: u64, name: &Path) -> Result<[u8; 512]> {
    let mut s = [0u8; 512];
    let off = lba.checked_mul(SECTOR).ok_or_else(|| {
        format_err(
            name,
            0,
            "partition table sector",
            "an addressable LBA",
            lba.to_string(),
        )
    })?;
    if off.checked_add(SECTOR).is_none_or(|e| e > dev.len()) {
        return Err(format_err(
            name,
            off,
            "partition table sector",
            "inside the disk",
            "past the end of the disk",
        ));
    }
    dev.read_at(off, &mut s)?;
    Ok(s)
}

/// Reads the four entries of the MBR, or `None` when sector 0 has no
/// 0x55AA signature (or the disk is smaller than a sector).
pub fn read_mbr(dev: &dyn BlockDevice, name: &Path) -> Result<Option<[MbrEntry; 4]>> {
    if dev.len() < SECTOR {
        return Ok(None);
    }
    let s = read_sector(dev, 0, name)?;
    if s[510] != 0x55 || s[511] != 0xAA {
        return Ok(None);
    }
    Ok(Some(parse_table(&s)))
}

fn extent(
    dev: &dyn BlockDevice,
    name: &Path,
    base: u64,
    e: &MbrEntry,
    at: u64,
) -> Result<(u64, u64)> {
    let start = base
        .checked_add(u64::from(e.start))
        .and_then(|l| l.checked_mul(SECTOR));
    let len = u64::from(e.sectors) * SECTOR;
    match start {
        Some(s) if s.checked_add(len).is_some_and(|end| end <= dev.len()) => Ok((s, len)),
        _ => Err(format_err(
            name,
            at,
            "MBR partition entry",
            format!("an extent inside the disk of {} bytes", dev.len()),
            format!(
                "start sector {} + {} sectors (base {base})",
                e.start, e.sectors
            ),
        )),
    }
}

/// Lists the primary and logical partitions of an MBR disk.
pub fn list_mbr(
    dev: &dyn BlockDevice,
    name: &Path,
    table: &[MbrEntry; 4],
) -> Result<Vec<Partition>> {
    let mut out = Vec::new();
    let mut extended = None;
    for (i, e) in table.iter().enumerate() {
        if e.kind == 0 || e.sectors == 0 {
            continue;
        }
        let at = 446 + 16 * i as u64;
        let (offset, length) = extent(dev, name, 0, e, at)?;
        if is_extended(e.kind) {
            if extended.is_none() {
                extended = Some(u64::from(e.start));
            }
            continue;
        }
        out.push(Partition {
            number: i as u32 + 1,
            scheme: PartitionScheme::Mbr,
            kind: PartitionKind::Mbr(e.kind),
            offset,
            length,
            name: String::new(),
            guid: Guid::default(),
            attributes: u64::from(e.status),
        });
    }
    if let Some(ext_base) = extended {
        let mut ebr = ext_base;
        let mut number = 5;
        let mut seen = Vec::new();
        while number < 5 + MAX_LOGICAL {
            if seen.contains(&ebr) {
                return Err(format_err(
                    name,
                    ebr * SECTOR,
                    "extended boot record chain",
                    "a chain without loops",
                    "a link back to an earlier record",
                ));
            }
            seen.push(ebr);
            let s = read_sector(dev, ebr, name)?;
            if s[510] != 0x55 || s[511] != 0xAA {
                return Err(format_err(
                    name,
                    ebr * SECTOR + 510,
                    "extended boot record signature",
                    "55 AA",
                    format!("{:02X} {:02X}", s[510], s[511]),
                ));
            }
            let t = parse_table(&s);
            let e = t[0];
            if e.kind != 0 && e.sectors != 0 {
                let (offset, length) = extent(dev, name, ebr, &e, ebr * SECTOR + 446)?;
                out.push(Partition {
                    number,
                    scheme: PartitionScheme::Mbr,
                    kind: PartitionKind::Mbr(e.kind),
                    offset,
                    length,
                    name: String::new(),
                    guid: Guid::default(),
                    attributes: u64::from(e.status),
                });
                number += 1;
            }
            let next = t[1];
            if next.kind == 0 || next.start == 0 {
                break;
            }
            ebr = ext_base + u64::from(next.start);
        }
    }
    Ok(out)
}
