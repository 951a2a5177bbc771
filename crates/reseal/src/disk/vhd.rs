//! Microsoft Virtual Hard Disk (VHD) images, from the "Virtual Hard Disk
//! Image Format Specification": the 512-byte footer (at the end, and a
//! copy at the start of dynamic disks), the dynamic disk header, the block
//! allocation table (BAT) and the per-block sector bitmaps.
//!
//! Fixed, dynamic and differencing disks are read; fixed and dynamic disks
//! and the child of a differencing disk are written.
//!
//! A write into unallocated blocks appends them where the footer was, in
//! an order that keeps the file valid after a crash at any point:
//!
//! 1. the file is extended and the footer is written at the new end, then
//!    flushed (the old footer, now inside the new space, is no longer the
//!    last sector; the footer copy at the start is made to match the footer
//!    once per open if it differs);
//! 2. each block's sector bitmap and data (copied from the parent for a
//!    differencing disk) and then the written bytes go into the new space;
//! 3. the BAT entries are only kept in memory (reads see them) until
//!    [`BlockDevice::flush`] (or drop): it flushes the blocks, writes the
//!    BAT entries and flushes again.
//!
//! A BAT entry therefore never names a block whose bitmap and data are not
//! durable; a crash before the BAT write leaves unreferenced space before
//! the footer.
//!
//! On open, a BAT entry may not name a block overlapping the footer copy,
//! the dynamic header, the BAT, a parent locator or another block. The
//! parent of a differencing disk (W2ru relative locator first, then W2ku,
//! then the names beside the child) must be a regular file holding a VHD
//! whose footer unique ID is the one the child records. [`create_child`]
//! makes a new differencing child of a VHD.
//!
//! No published crate writes VHD (dynamic and differencing) with crash-safe
//! ordering, so the format is implemented here from the specification.

use super::{Access, BlockDevice, ImageFile, be32, be64, check_range, utf16be, utf16le};
use crate::{ResealError, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SECTOR: u64 = 512;
const UNALLOCATED: u32 = 0xFFFF_FFFF;
const MAX_CHAIN: u32 = 32;
const MAX_BAT_ENTRIES: u64 = 1 << 26;

/// The kind of a VHD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhdType {
    /// All data stored in order, footer at the end.
    Fixed,
    /// Blocks allocated on demand.
    Dynamic,
    /// Blocks allocated on demand; unwritten sectors come from a parent.
    Differencing,
}

#[derive(Debug)]
struct Sparse {
    bat_offset: u64,
    bat: Vec<u32>,
    block_size: u64,
    bitmap_size: u64,
}

/// An open VHD file.
pub struct VhdDisk {
    file: ImageFile,
    footer: [u8; 512],
    size: u64,
    kind: VhdType,
    sparse: Option<Sparse>,
    parent: Option<Box<dyn BlockDevice>>,
    parent_path: Option<PathBuf>,
    data_end: u64,
    /// BAT entries of blocks allocated since the last flush, not yet
    /// written to the file: block number to sector.
    pending_bat: BTreeMap<u64, u32>,
    /// Whether this open already made the footer copy at the start match
    /// the footer.
    footer_copy_checked: bool,
}

impl std::fmt::Debug for VhdDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdDisk")
            .field("path", &self.file.path)
            .field("size", &self.size)
            .field("kind", &self.kind)
            .field("parent", &self.parent_path)
            .finish()
    }
}

/// The VHD checksum: ones' complement of the byte sum, skipping the
/// checksum field itself.
fn checksum(b: &[u8], field: usize) -> u32 {
    let mut sum = 0u32;
    for (i, &x) in b.iter().enumerate() {
        if !(field..field + 4).contains(&i) {
            sum = sum.wrapping_add(u32::from(x));
        }
    }
    !sum
}

impl VhdDisk {
    /// Opens a VHD; a differencing disk's parents are opened read-only.
    pub fn open(path: &Path, access: Access) -> Result<Self> {
        Self::open_depth(path, access, 0)
    }

    /// The kind of disk.
    pub fn vhd_type(&self) -> VhdType {
        self.kind
    }

    /// The resolved parent file of a differencing disk.
    pub fn parent_path(&self) -> Option<&Path> {
        self.parent_path.as_deref()
    }

    fn open_depth(path: &Path, access: Access, depth: u32) -> Result<Self> {
        let file = ImageFile::open(path, access)?;
        let flen = file.len()?;
        if flen < SECTOR {
            return Err(file.format_err(
                0,
                "VHD footer",
                "a file of at least 512 bytes",
                format!("{flen} bytes"),
            ));
        }
        let mut footer = [0u8; 512];
        let foot_at = flen - SECTOR;
        file.read(foot_at, &mut footer, "VHD footer")?;
        if &footer[0..8] != b"conectix" {
            return Err(file.format_err(
                foot_at,
                "VHD footer cookie",
                "\"conectix\"",
                format!("{:02X?}", &footer[0..8]),
            ));
        }
        let stored = be32(&footer, 64);
        let computed = checksum(&footer, 64);
        if stored != computed {
            return Err(file.format_err(
                foot_at + 64,
                "VHD footer checksum",
                format!("{computed:08X}"),
                format!("{stored:08X}"),
            ));
        }
        let version = be32(&footer, 12);
        if version >> 16 != 1 {
            return Err(file.format_err(
                foot_at + 12,
                "VHD format version",
                "1.x",
                format!("{version:08X}"),
            ));
        }
        let kind = match be32(&footer, 60) {
            2 => VhdType::Fixed,
            3 => VhdType::Dynamic,
            4 => VhdType::Differencing,
            t => {
                return Err(file.format_err(
                    foot_at + 60,
                    "VHD disk type",
                    "2 (fixed), 3 (dynamic) or 4 (differencing)",
                    t.to_string(),
                ));
            }
        };
        let size = disk_size(&footer);
        let mut disk = VhdDisk {
            file,
            footer,
            size,
            kind,
            sparse: None,
            parent: None,
            parent_path: None,
            data_end: foot_at,
            pending_bat: BTreeMap::new(),
            footer_copy_checked: false,
        };
        if kind == VhdType::Fixed {
            // A fixed disk whose data area is shorter than its size (seen
            // in the wild) reads zeros past the data; writes there are
            // refused.
            disk.data_end = foot_at;
            return Ok(disk);
        }
        let dyn_at = be64(&footer, 16);
        if dyn_at < SECTOR || dyn_at.checked_add(1024).is_none_or(|e| e > foot_at) {
            return Err(disk.file.format_err(
                foot_at + 16,
                "VHD dynamic header offset",
                format!("a header between the footer copy and the footer at {foot_at}"),
                dyn_at.to_string(),
            ));
        }
        let mut hdr = [0u8; 1024];
        disk.file
            .read(dyn_at, &mut hdr, "VHD dynamic disk header")?;
        if &hdr[0..8] != b"cxsparse" {
            return Err(disk.file.format_err(
                dyn_at,
                "VHD dynamic header cookie",
                "\"cxsparse\"",
                format!("{:02X?}", &hdr[0..8]),
            ));
        }
        let stored = be32(&hdr, 36);
        let computed = checksum(&hdr, 36);
        if stored != computed {
            return Err(disk.file.format_err(
                dyn_at + 36,
                "VHD dynamic header checksum",
                format!("{computed:08X}"),
                format!("{stored:08X}"),
            ));
        }
        let bat_offset = be64(&hdr, 16);
        let entries = u64::from(be32(&hdr, 28));
        let block_size = u64::from(be32(&hdr, 32));
        if !block_size.is_power_of_two() || !(SECTOR..=(256 << 20)).contains(&block_size) {
            return Err(disk.file.format_err(
                dyn_at + 32,
                "VHD block size",
                "a power of two from 512 bytes to 256 MiB",
                block_size.to_string(),
            ));
        }
        let needed = size.div_ceil(block_size);
        if entries < needed || entries > MAX_BAT_ENTRIES {
            return Err(disk.file.format_err(
                dyn_at + 28,
                "VHD max table entries",
                format!("{needed}..={MAX_BAT_ENTRIES} for a {size}-byte disk"),
                entries.to_string(),
            ));
        }
        // The BAT is written in place: it must be apart from the footer
        // copy, the dynamic header and the footer.
        let bat_end = bat_offset.saturating_add(entries * 4);
        let overlaps = |a: u64, b: u64| bat_offset < b && a < bat_end;
        if overlaps(0, SECTOR) || overlaps(dyn_at, dyn_at.saturating_add(1024)) || bat_end > foot_at
        {
            return Err(disk.file.format_err(
                dyn_at + 16,
                "VHD block allocation table",
                format!(
                    "a table apart from the footer copy, the dynamic header at {dyn_at} \
                     and the footer at {foot_at}"
                ),
                format!("{} bytes at {bat_offset}", entries * 4),
            ));
        }
        let mut raw = vec![0u8; (entries * 4) as usize];
        disk.file
            .read(bat_offset, &mut raw, "VHD block allocation table")?;
        let bat: Vec<u32> = raw.chunks_exact(4).map(|c| be32(c, 0)).collect();
        let bitmap_size = (block_size / SECTOR).div_ceil(8).div_ceil(SECTOR) * SECTOR;
        // The structures a block must stay clear of: a write into the
        // block would destroy them.
        let mut structures = vec![
            ("the footer copy", 0, SECTOR),
            ("the dynamic header", dyn_at, dyn_at.saturating_add(1024)),
            (
                "the BAT",
                bat_offset,
                bat_offset.saturating_add((entries * 4).div_ceil(SECTOR) * SECTOR),
            ),
        ];
        if kind == VhdType::Differencing {
            for i in 0..8 {
                let e = 576 + 24 * i;
                // The bytes of the locator's data (its reserved space is in
                // sectors or bytes depending on the writer, so not used).
                let n = u64::from(be32(&hdr, e + 8));
                let at = be64(&hdr, e + 16);
                if n > 0 && hdr.get(e..e + 4).is_some_and(|c| c != [0; 4]) {
                    structures.push(("a parent locator", at, at.saturating_add(n)));
                }
            }
        }
        let mut used: Vec<(u64, u64, usize)> = Vec::new();
        for (i, &e) in bat.iter().enumerate() {
            if e == UNALLOCATED {
                continue;
            }
            let start = u64::from(e) * SECTOR;
            let end = start + bitmap_size + block_size;
            let entry_err = |expected: &str, found: String| {
                disk.file.format_err(
                    bat_offset + 4 * i as u64,
                    format!("VHD BAT entry {i}"),
                    expected.to_string(),
                    found,
                )
            };
            if start < 512 || end > foot_at {
                return Err(entry_err(
                    &format!("a block inside the file's {foot_at} bytes before the footer"),
                    format!("sector {e}"),
                ));
            }
            if let Some((name, a, b)) = structures.iter().find(|(_, a, b)| start < *b && *a < end) {
                return Err(entry_err(
                    "a block apart from the file's structures",
                    format!("sector {e}, a block overlapping {name} ({a}..{b})"),
                ));
            }
            used.push((start, end, i));
        }
        used.sort_unstable();
        for w in used.windows(2) {
            if let [(s0, e0, i0), (s1, _, i1)] = *w {
                if s1 < e0 {
                    return Err(disk.file.format_err(
                        bat_offset + 4 * i1 as u64,
                        format!("VHD BAT entry {i1}"),
                        "a block of its own",
                        format!("a block at {s1}, overlapping the block of entry {i0} at {s0}"),
                    ));
                }
            }
        }
        disk.sparse = Some(Sparse {
            bat_offset,
            bat,
            block_size,
            bitmap_size,
        });
        if kind == VhdType::Differencing {
            if depth >= MAX_CHAIN {
                return Err(disk.file.format_err(
                    dyn_at,
                    "VHD parent chain",
                    format!("at most {MAX_CHAIN} levels"),
                    "a longer chain (or a loop)",
                ));
            }
            let parent_path = disk.locate_parent(&hdr, dyn_at)?;
            let parent = disk.open_parent(&parent_path, &hdr, dyn_at, depth)?;
            disk.parent = Some(parent);
            disk.parent_path = Some(parent_path);
        }
        Ok(disk)
    }

    /// Resolves the parent from the locators: W2ru (relative), W2ku
    /// (absolute; its file name looked up next to the child), then the
    /// parent name in the header.
    fn locate_parent(&self, hdr: &[u8; 1024], dyn_at: u64) -> Result<PathBuf> {
        let dir = self.file.path.parent().unwrap_or(Path::new("."));
        let mut tried = Vec::new();
        let mut candidates = Vec::new();
        for code in [b"W2ru", b"W2ku"] {
            for i in 0..8 {
                let e = &hdr[576 + 24 * i..600 + 24 * i];
                if &e[0..4] != code {
                    continue;
                }
                let len = u64::from(be32(e, 8));
                let at = be64(e, 16);
                if len == 0 || len > 65536 {
                    continue;
                }
                let mut data = vec![0u8; len as usize];
                if self.file.read(at, &mut data, "VHD parent locator").is_err() {
                    continue;
                }
                let text = utf16le(&data).replace('\\', "/");
                if code == b"W2ru" {
                    candidates.push(dir.join(text.trim_start_matches("./")));
                } else {
                    candidates.push(PathBuf::from(&text));
                    if let Some(name) = text.rsplit('/').next().filter(|s| !s.is_empty()) {
                        candidates.push(dir.join(name));
                    }
                }
            }
        }
        let name = utf16be(&hdr[64..576]).replace('\\', "/");
        if let Some(base) = name.rsplit('/').next().filter(|s| !s.is_empty()) {
            candidates.push(dir.join(base));
        }
        for c in candidates {
            // The first name that exists is the parent; it must then pass
            // the checks of `open_parent` (no falling through to others).
            if std::fs::metadata(&c).is_ok() {
                return Ok(c);
            }
            tried.push(c.display().to_string());
        }
        Err(self.file.format_err(
            dyn_at + 576,
            "VHD parent locator",
            "an existing parent file",
            if tried.is_empty() {
                "no usable W2ru/W2ku locator or parent name".to_string()
            } else {
                format!("none of: {}", tried.join(", "))
            },
        ))
    }

    /// Opens the parent found by [`Self::locate_parent`] after checking
    /// that it is a regular file holding a VHD whose footer unique ID is
    /// the one this child records.
    fn open_parent(
        &self,
        parent: &Path,
        hdr: &[u8; 1024],
        dyn_at: u64,
        depth: u32,
    ) -> Result<Box<dyn BlockDevice>> {
        let child = &self.file.path;
        super::check_parent_file(child, dyn_at + 576, parent)?;
        let what = || format!("parent {} of this differencing VHD", parent.display());
        let format = super::detect_format(parent)?;
        if format != super::ImageFormat::Vhd {
            return Err(super::format_err(
                child,
                dyn_at + 576,
                what(),
                "a VHD file",
                format!("{format:?}"),
            ));
        }
        let mut want = [0u8; 16];
        want.copy_from_slice(&hdr[40..56]);
        let p = VhdDisk::open_depth(parent, Access::ReadOnly, depth + 1)?;
        let mut found = [0u8; 16];
        found.copy_from_slice(&p.footer[68..84]);
        if found != want {
            return Err(super::format_err(
                child,
                dyn_at + 40,
                what(),
                format!("unique ID {} (recorded in the child)", hex(&want)),
                format!("unique ID {}", hex(&found)),
            ));
        }
        Ok(Box::new(p))
    }

    fn read_parent(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match &self.parent {
            None => {
                buf.fill(0);
                Ok(())
            }
            Some(p) => {
                let plen = p.len();
                let avail = plen.saturating_sub(offset).min(buf.len() as u64) as usize;
                if avail > 0 {
                    p.read_at(offset, &mut buf[..avail])?;
                }
                buf[avail..].fill(0);
                Ok(())
            }
        }
    }

    fn read_bitmap(&self, entry: u32, s: &Sparse) -> Result<Vec<u8>> {
        let mut bm = vec![0u8; s.bitmap_size as usize];
        self.file
            .read(u64::from(entry) * SECTOR, &mut bm, "VHD sector bitmap")?;
        Ok(bm)
    }

    /// Reads `buf` from inside one block.
    fn read_in_block(&self, block: u64, in_block: u64, buf: &mut [u8]) -> Result<()> {
        let Some(s) = &self.sparse else { return Ok(()) };
        let offset = block * s.block_size + in_block;
        let entry = s.bat.get(block as usize).copied().unwrap_or(UNALLOCATED);
        if entry == UNALLOCATED {
            return self.read_parent(offset, buf);
        }
        let data = u64::from(entry) * SECTOR + s.bitmap_size;
        if self.parent.is_none() {
            return self.file.read(data + in_block, buf, "VHD block data");
        }
        let bm = self.read_bitmap(entry, s)?;
        let bit = |sector: u64| {
            bm.get((sector / 8) as usize)
                .is_some_and(|b| b & (0x80 >> (sector % 8)) != 0)
        };
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = in_block + pos as u64;
            let present = bit(at / SECTOR);
            let mut end = (at / SECTOR + 1) * SECTOR;
            while end < in_block + buf.len() as u64 && bit(end / SECTOR) == present {
                end += SECTOR;
            }
            let end = end.min(in_block + buf.len() as u64);
            let n = (end - at) as usize;
            let chunk = &mut buf[pos..pos + n];
            if present {
                self.file.read(data + at, chunk, "VHD block data")?;
            } else {
                self.read_parent(block * s.block_size + at, chunk)?;
            }
            pos += n;
        }
        Ok(())
    }

    /// Makes the footer copy at the start of a dynamic or differencing
    /// disk equal to the footer, once per open.
    fn check_footer_copy(&mut self) -> Result<()> {
        if self.footer_copy_checked || self.kind == VhdType::Fixed {
            return Ok(());
        }
        let mut copy = [0u8; 512];
        self.file.read(0, &mut copy, "VHD footer copy")?;
        if copy != self.footer {
            self.file.write(0, &self.footer)?;
        }
        self.footer_copy_checked = true;
        Ok(())
    }

    /// Appends a block for each of `blocks` (their data copied from the
    /// parent for a differencing disk, zeros otherwise), moving the footer
    /// after them; the BAT entries are staged until the next flush.
    fn allocate(&mut self, blocks: &[u64]) -> Result<()> {
        let (bs, bms) = match &self.sparse {
            Some(s) => (s.block_size, s.bitmap_size),
            None => return Ok(()),
        };
        if blocks.is_empty() {
            return Ok(());
        }
        let flen = self.file.len()?;
        let first = flen.saturating_sub(SECTOR).div_ceil(SECTOR) * SECTOR;
        let per_block = bms + bs;
        let last = (blocks.len() as u64 - 1) * per_block + first;
        let sector = |start: u64| {
            u32::try_from(start / SECTOR)
                .ok()
                .filter(|&s| s != UNALLOCATED)
        };
        let end = match (last.checked_add(per_block), sector(last)) {
            (Some(end), Some(_)) if end < (1 << 62) => end,
            _ => {
                return Err(self.file.format_err(
                    last,
                    "VHD new block",
                    "a sector number below 2^32",
                    (last / SECTOR).to_string(),
                ));
            }
        };
        // The footer moves first, so that the file ends with a valid footer
        // before the old one is overwritten.
        self.file.set_len(end + SECTOR)?;
        self.file.write(end, &self.footer)?;
        self.file.sync()?;
        self.check_footer_copy()?;
        let bitmap = vec![0xFFu8; bms as usize];
        for (i, &block) in blocks.iter().enumerate() {
            let start = first + i as u64 * per_block;
            self.file.write(start, &bitmap)?;
            if self.parent.is_some() {
                let mut data = vec![0u8; bs as usize];
                self.read_parent(block * bs, &mut data)?;
                self.file.write(start + bms, &data)?;
            }
            let Some(s) = sector(start) else { continue };
            if let Some(sp) = &mut self.sparse {
                if let Some(e) = sp.bat.get_mut(block as usize) {
                    *e = s;
                }
            }
            self.pending_bat.insert(block, s);
        }
        Ok(())
    }

    /// Writes the staged BAT entries once the blocks they name are durable.
    fn commit_bat(&mut self) -> Result<()> {
        if self.pending_bat.is_empty() {
            return Ok(());
        }
        let Some(bat_offset) = self.sparse.as_ref().map(|s| s.bat_offset) else {
            return Ok(());
        };
        self.file.sync()?;
        for (&block, &sector) in &self.pending_bat {
            self.file
                .write(bat_offset + 4 * block, &sector.to_be_bytes())?;
        }
        self.file.sync()?;
        self.pending_bat.clear();
        Ok(())
    }

    /// For a differencing disk: makes an allocated block hold all of its
    /// sectors (copying the missing ones from the parent) so that any
    /// write to it is a plain write.
    fn materialize(&mut self, block: u64, entry: u32) -> Result<()> {
        let Some(s) = &self.sparse else { return Ok(()) };
        let bm = self.read_bitmap(entry, s)?;
        let sectors = (s.block_size / SECTOR) as usize;
        let full = (0..sectors).all(|i| bm.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0));
        if full {
            return Ok(());
        }
        let (bs, bms) = (s.block_size, s.bitmap_size);
        let mut data = vec![0u8; bs as usize];
        self.read_in_block(block, 0, &mut data)?;
        let base = u64::from(entry) * SECTOR;
        self.file.write(base + bms, &data)?;
        self.file.sync()?;
        self.file.write(base, &vec![0xFFu8; bms as usize])
    }
}

/// The disk size as Virtual PC and QEMU's older images define it (from
/// the CHS geometry), or the footer's current size for everyone else.
fn disk_size(footer: &[u8; 512]) -> u64 {
    let current = be64(footer, 48);
    let creator = &footer[28..32];
    let cyl = u64::from(u16::from_be_bytes([footer[56], footer[57]]));
    let heads = u64::from(footer[58]);
    let spt = u64::from(footer[59]);
    let chs = cyl * heads * spt * SECTOR;
    let max_geometry = cyl == 65535 && heads == 16 && spt == 255;
    if (creator == b"vpc " || creator == b"qemu") && !max_geometry && chs != 0 {
        chs
    } else {
        current
    }
}

impl BlockDevice for VhdDisk {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.file.path, self.size, offset, buf.len())?;
        let Some(s) = &self.sparse else {
            let avail = self.data_end.saturating_sub(offset).min(buf.len() as u64) as usize;
            if avail > 0 {
                self.file.read(offset, &mut buf[..avail], "VHD data")?;
            }
            buf[avail..].fill(0);
            return Ok(());
        };
        let bs = s.block_size;
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = offset + pos as u64;
            let in_block = at % bs;
            let n = ((bs - in_block) as usize).min(buf.len() - pos);
            self.read_in_block(at / bs, in_block, &mut buf[pos..pos + n])?;
            pos += n;
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(&self.file.path, self.size, offset, buf.len())?;
        if !self.file.writable {
            return Err(ResealError::InvalidInput {
                what: self.file.path.display().to_string(),
                message: "the image was opened read-only".into(),
            });
        }
        let (bs, bms) = match &self.sparse {
            None => {
                if offset + buf.len() as u64 > self.data_end {
                    return Err(self.file.format_err(
                        self.data_end,
                        "VHD fixed disk data area",
                        format!("room for a write up to {}", offset + buf.len() as u64),
                        format!("data ending at {}", self.data_end),
                    ));
                }
                return self.file.write(offset, buf);
            }
            Some(s) => (s.block_size, s.bitmap_size),
        };
        let first = offset / bs;
        let last = (offset + buf.len() as u64).div_ceil(bs);
        let missing: Vec<u64> = (first..last)
            .filter(|&b| {
                self.sparse
                    .as_ref()
                    .and_then(|s| s.bat.get(b as usize))
                    .is_some_and(|&e| e == UNALLOCATED)
            })
            .collect();
        self.allocate(&missing)?;
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = offset + pos as u64;
            let block = at / bs;
            let in_block = at % bs;
            let n = ((bs - in_block) as usize).min(buf.len() - pos);
            let entry = self
                .sparse
                .as_ref()
                .and_then(|s| s.bat.get(block as usize).copied())
                .unwrap_or(UNALLOCATED);
            if entry == UNALLOCATED {
                return Err(self.file.format_err(
                    self.sparse.as_ref().map_or(0, |s| s.bat_offset + 4 * block),
                    format!("VHD BAT entry {block}"),
                    "an allocated block",
                    "none",
                ));
            }
            if self.parent.is_some() && !missing.contains(&block) {
                self.materialize(block, entry)?;
            }
            let data = u64::from(entry) * SECTOR + bms;
            self.file.write(data + in_block, &buf[pos..pos + n])?;
            pos += n;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.commit_bat()?;
        self.file.sync()
    }
}

impl Drop for VhdDisk {
    fn drop(&mut self) {
        if self.file.writable && !self.pending_bat.is_empty() {
            // Nothing can report an error from here; callers that need to
            // know call flush() first.
            let _ = self.commit_bat();
        }
    }
}

/// Hexadecimal text of `b`.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// Seconds since 2000-01-01 00:00:00 UTC (the VHD time stamp) of `t`.
fn vhd_time(t: std::time::SystemTime) -> u32 {
    const EPOCH_2000: u64 = 946_684_800;
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs.saturating_sub(EPOCH_2000)).unwrap_or(u32::MAX)
}

/// Block size of the differencing disks [`create_child`] makes (2 MiB).
const CHILD_BLOCK: u64 = 2 << 20;

/// Creates `child`, a new differencing VHD whose parent is the VHD
/// `parent`: the parent's size, geometry and creator (so every reader
/// derives the same size for both), block size 2 MiB, an empty BAT, the
/// parent's unique ID, modification time and file name in the dynamic
/// header, and two parent locators: W2ru (the path relative to the
/// child's directory, `.\name.vhd` or `..\dir\name.vhd`) and W2ku (the
/// absolute path), both UTF-16LE.
///
/// The layout is the footer copy, the dynamic header, the BAT, the two
/// locators and the footer. The file is written under a temporary name
/// beside `child` and linked into place; `child` must not exist.
pub fn create_child(parent: &Path, child: &Path) -> Result<()> {
    let parent_abs = super::absolute(parent)?;
    super::check_parent_file(child, 0, &parent_abs)?;
    if super::detect_format(&parent_abs)? != super::ImageFormat::Vhd {
        return Err(super::format_err(
            &parent_abs,
            0,
            "parent of a new differencing VHD",
            "a VHD file",
            "another format",
        ));
    }
    let p = VhdDisk::open(&parent_abs, Access::ReadOnly)?;
    let pfoot = p.footer;
    let size = be64(&pfoot, 48).max(p.len());
    drop(p);
    let mtime = std::fs::metadata(&parent_abs)
        .and_then(|m| m.modified())
        .map_err(|e| super::io_err(&parent_abs, "reading the parent's time stamp", e))?;
    let child_dir = match child.parent() {
        Some(d) if !d.as_os_str().is_empty() => super::absolute(d)?,
        _ => super::absolute(Path::new("."))?,
    };
    if parent_abs.to_string_lossy().contains('\\') || child_dir.to_string_lossy().contains('\\') {
        return Err(ResealError::InvalidInput {
            what: parent_abs.display().to_string(),
            message: "a parent locator cannot name a path holding a backslash".into(),
        });
    }
    let relative = super::to_utf16le(&super::relative_win_path(&child_dir, &parent_abs));
    let absolute = super::to_utf16le(&super::win_path(&parent_abs));
    let name: Vec<u8> = parent_abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect();
    if name.len() > 512 {
        return Err(ResealError::InvalidInput {
            what: parent_abs.display().to_string(),
            message: "the parent's file name is longer than a VHD header holds".into(),
        });
    }
    let entries = size.div_ceil(CHILD_BLOCK).max(1);
    let dyn_at = SECTOR;
    let bat_at = dyn_at + 1024;
    let bat_len = (entries * 4).div_ceil(SECTOR) * SECTOR;
    let rel_at = bat_at + bat_len;
    let rel_space = (relative.len() as u64).div_ceil(SECTOR).max(1);
    let abs_at = rel_at + rel_space * SECTOR;
    let abs_space = (absolute.len() as u64).div_ceil(SECTOR).max(1);
    let foot_at = abs_at + abs_space * SECTOR;
    let entries32 = u32::try_from(entries).map_err(|_| {
        super::format_err(
            &parent_abs,
            48,
            "VHD disk size",
            "a size a VHD can hold",
            size.to_string(),
        )
    })?;

    let mut footer = [0u8; 512];
    footer[0..8].copy_from_slice(b"conectix");
    footer[8..12].copy_from_slice(&2u32.to_be_bytes());
    footer[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    footer[16..24].copy_from_slice(&dyn_at.to_be_bytes());
    footer[24..28].copy_from_slice(&vhd_time(std::time::SystemTime::now()).to_be_bytes());
    // Creator, version, host OS, sizes and geometry as the parent's, so
    // that readers choosing between the geometry and the size field agree.
    footer[28..60].copy_from_slice(&pfoot[28..60]);
    footer[60..64].copy_from_slice(&4u32.to_be_bytes());
    let mut uid = [0u8; 16];
    getrandom::fill(&mut uid).map_err(|e| ResealError::InvalidInput {
        what: "VHD unique ID".into(),
        message: format!("the system random source failed: {e}"),
    })?;
    footer[68..84].copy_from_slice(&uid);
    let c = checksum(&footer, 64);
    footer[64..68].copy_from_slice(&c.to_be_bytes());

    let mut hdr = [0u8; 1024];
    hdr[0..8].copy_from_slice(b"cxsparse");
    hdr[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    hdr[16..24].copy_from_slice(&bat_at.to_be_bytes());
    hdr[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    hdr[28..32].copy_from_slice(&entries32.to_be_bytes());
    hdr[32..36].copy_from_slice(&(CHILD_BLOCK as u32).to_be_bytes());
    hdr[40..56].copy_from_slice(&pfoot[68..84]);
    hdr[56..60].copy_from_slice(&vhd_time(mtime).to_be_bytes());
    hdr[64..64 + name.len()].copy_from_slice(&name);
    for (i, (code, len, space, at)) in [
        (b"W2ru", relative.len(), rel_space, rel_at),
        (b"W2ku", absolute.len(), abs_space, abs_at),
    ]
    .into_iter()
    .enumerate()
    {
        let e = 576 + 24 * i;
        hdr[e..e + 4].copy_from_slice(code);
        hdr[e + 4..e + 8].copy_from_slice(&(space as u32).to_be_bytes());
        hdr[e + 8..e + 12].copy_from_slice(&(len as u32).to_be_bytes());
        hdr[e + 16..e + 24].copy_from_slice(&at.to_be_bytes());
    }
    let c = checksum(&hdr, 36);
    hdr[36..40].copy_from_slice(&c.to_be_bytes());

    super::create_image_file(child, |f| {
        f.set_len(foot_at + SECTOR)?;
        f.write(0, &footer)?;
        f.write(dyn_at, &hdr)?;
        f.write(bat_at, &vec![0xFFu8; bat_len as usize])?;
        f.write(rel_at, &relative)?;
        f.write(abs_at, &absolute)?;
        f.write(foot_at, &footer)
    })
}
