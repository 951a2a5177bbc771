//! Hosted sparse extents (the `KDMV` header of VMware's "Virtual Disk
//! Format 5.0"): a grain directory (GD) of grain table (GT) sectors, grain
//! tables of grain sectors, the redundant GD/GTs, zeroed-grain entries and
//! the compressed grains with markers of streamOptimized files.
//!
//! Every GD and GT entry is checked when the extent is opened: GTs must lie
//! inside the file without overlapping each other or the header,
//! descriptor and directories; grains must lie inside the file outside all
//! of those. The memory used for tables is therefore bounded by the file's
//! size, not by header fields.
//!
//! Writes (never to compressed extents) keep the file valid after a crash
//! at any point:
//!
//! 1. before the first change, the header's unclean-shutdown byte is set
//!    and flushed;
//! 2. a missing grain table is appended as zeros (primary and redundant),
//!    flushed, and only then named by the GD entries;
//! 3. a new grain is appended with its whole contents; its GT entries are
//!    kept in memory (reads see them) until [`SparseExtent::commit`]:
//!    grains flushed, then the changed tables written to both the primary
//!    and the redundant GT, flushed, and the unclean-shutdown byte cleared
//!    last.

use super::super::{Access, ImageFile, le16, le32, le64};
use crate::{ResealError, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

pub(crate) const SECTOR: u64 = 512;
const MAGIC: &[u8; 4] = b"KDMV";
const GD_AT_END: u64 = u64::MAX;
const FLAG_NEWLINE_TEST: u32 = 1;
const FLAG_REDUNDANT: u32 = 1 << 1;
const FLAG_ZERO_GRAIN: u32 = 1 << 2;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const UNCLEAN_AT: u64 = 72;
/// Largest capacity accepted: 2^40 sectors (512 TiB; VMware's limit is
/// 62 TB).
pub(crate) const MAX_SECTORS: u64 = 1 << 40;
const MAX_GRAIN_SECTORS: u64 = 1 << 16;
const MAX_GTES: u64 = 1 << 16;
const MARKER_LEN: u64 = 12;
/// Most grain table bytes held in memory (all tables are loaded and
/// checked on open): 1 GiB covers 16 TiB of 64 KiB grains.
const MAX_TABLE_BYTES: u64 = 1 << 30;

/// A metadata area of a sparse extent file.
#[derive(Debug, Clone, Copy)]
enum Area {
    Header,
    Descriptor,
    Footer,
    Directory,
    RedundantDirectory,
    Table(usize),
    RedundantTable(usize),
}

impl std::fmt::Display for Area {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Area::Header => write!(f, "header"),
            Area::Descriptor => write!(f, "descriptor"),
            Area::Footer => write!(f, "footer"),
            Area::Directory => write!(f, "grain directory"),
            Area::RedundantDirectory => write!(f, "redundant grain directory"),
            Area::Table(i) => write!(f, "grain table of GD entry {i}"),
            Area::RedundantTable(i) => write!(f, "grain table of RGD entry {i}"),
        }
    }
}

/// The fields of a sparse extent header.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    pub flags: u32,
    pub capacity: u64,
    pub grain: u64,
    pub desc_offset: u64,
    pub desc_size: u64,
    gtes: u64,
    rgd_offset: u64,
    gd_offset: u64,
    unclean: bool,
    compress: u16,
}

impl Header {
    fn parse(file: &ImageFile, at: u64, b: &[u8; 512]) -> Result<Header> {
        if &b[0..4] != MAGIC {
            return Err(file.format_err(
                at,
                "VMDK sparse extent magic",
                "\"KDMV\"",
                format!("{:02X?}", &b[0..4]),
            ));
        }
        let version = le32(b, 4);
        if !(1..=3).contains(&version) {
            return Err(file.format_err(
                at + 4,
                "VMDK sparse extent version",
                "1, 2 or 3",
                version.to_string(),
            ));
        }
        let flags = le32(b, 8);
        if flags & FLAG_NEWLINE_TEST != 0 && &b[73..77] != b"\n \r\n" {
            return Err(file.format_err(
                at + 73,
                "VMDK newline detection bytes",
                "0A 20 0D 0A (a file copied in text mode has them altered)",
                format!("{:02X?}", &b[73..77]),
            ));
        }
        Ok(Header {
            flags,
            capacity: le64(b, 12),
            grain: le64(b, 20),
            desc_offset: le64(b, 28),
            desc_size: le64(b, 36),
            gtes: u64::from(le32(b, 44)),
            rgd_offset: le64(b, 48),
            gd_offset: le64(b, 56),
            unclean: b[72] != 0,
            compress: le16(b, 77),
        })
    }
}

/// Where a grain's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grain {
    /// Never written: reads from the parent, or zeros.
    Unallocated,
    /// Written as zeros (zeroed-grain GTE).
    Zero,
    /// Stored at this byte offset of the file.
    At(u64),
}

/// A hosted sparse extent file.
#[derive(Debug)]
pub(crate) struct SparseExtent {
    pub file: ImageFile,
    pub header: Header,
    grain_bytes: u64,
    gt_bytes: u64,
    gd: Vec<u32>,
    /// Redundant GD entries (empty when the file has none).
    rgd: Vec<u32>,
    gd_at: u64,
    rgd_at: Option<u64>,
    /// The primary grain tables, loaded (`None` where the GD entry is 0).
    gts: Vec<Option<Vec<u32>>>,
    compressed: bool,
    zero_grain: bool,
    /// Why this extent cannot be written, if it cannot.
    read_only_reason: Option<String>,
    /// Where the next appended data goes.
    end: u64,
    /// Grain tables changed in memory, not yet written.
    dirty_tables: BTreeSet<usize>,
    /// Whether the unclean-shutdown byte is set by this open.
    marked_unclean: bool,
    /// The last decompressed grain (index, bytes).
    cache: Mutex<Option<(u64, Vec<u8>)>>,
}

fn unsupported(file: &ImageFile, message: String) -> ResealError {
    ResealError::InvalidInput {
        what: file.path.display().to_string(),
        message,
    }
}

impl SparseExtent {
    /// Opens a sparse extent file and checks its tables.
    pub fn open(path: &Path, access: Access) -> Result<SparseExtent> {
        let file = ImageFile::open(path, access)?;
        let flen = file.len()?;
        let mut b = [0u8; 512];
        file.read(0, &mut b, "VMDK sparse extent header")?;
        let mut header = Header::parse(&file, 0, &b)?;
        let mut footer_at = None;
        if header.gd_offset == GD_AT_END {
            // streamOptimized as VMware writes it: the real header is a
            // footer, followed by an end-of-stream marker.
            let at = flen.checked_sub(2 * SECTOR).ok_or_else(|| {
                file.format_err(
                    0,
                    "VMDK footer",
                    "a file ending with a footer and end-of-stream marker",
                    format!("{flen} bytes"),
                )
            })?;
            let mut f = [0u8; 512];
            file.read(at, &mut f, "VMDK footer")?;
            let footer = Header::parse(&file, at, &f)?;
            if footer.gd_offset == GD_AT_END {
                return Err(file.format_err(
                    at + 56,
                    "VMDK footer GD offset",
                    "a sector number",
                    "GD_AT_END again",
                ));
            }
            header = Header {
                unclean: header.unclean,
                ..footer
            };
            footer_at = Some(at.saturating_sub(SECTOR));
        }
        if header.unclean {
            return Err(unsupported(
                &file,
                "the VMDK was not closed cleanly (unclean-shutdown flag set); open it once in \
                 VMware to let it check the disk, or make a clean copy with \
                 `qemu-img convert -O vmdk -o subformat=monolithicSparse IN OUT`"
                    .into(),
            ));
        }
        let h = header.clone();
        if h.capacity > MAX_SECTORS {
            return Err(file.format_err(
                12,
                "VMDK capacity",
                format!("at most {MAX_SECTORS} sectors"),
                h.capacity.to_string(),
            ));
        }
        if !h.grain.is_power_of_two() || h.grain > MAX_GRAIN_SECTORS {
            return Err(file.format_err(
                20,
                "VMDK grain size",
                format!("a power of two of at most {MAX_GRAIN_SECTORS} sectors"),
                h.grain.to_string(),
            ));
        }
        if h.gtes == 0 || h.gtes > MAX_GTES {
            return Err(file.format_err(
                44,
                "VMDK grain table entries",
                format!("1..={MAX_GTES}"),
                h.gtes.to_string(),
            ));
        }
        let compressed = h.flags & FLAG_COMPRESSED != 0;
        if compressed && (h.compress != 1 || h.flags & FLAG_MARKERS == 0) {
            return Err(file.format_err(
                77,
                "VMDK compression",
                "deflate (1) with grain markers",
                format!("algorithm {} with flags {:08X}", h.compress, h.flags),
            ));
        }
        let grain_bytes = h.grain * SECTOR;
        let gt_bytes = h.gtes * 4;
        let gd_entries = h.capacity.div_ceil(h.grain * h.gtes);
        let gd_bytes = gd_entries * 4;
        if gd_entries.saturating_mul(gt_bytes) > MAX_TABLE_BYTES {
            return Err(file.format_err(
                12,
                "VMDK grain tables",
                format!(
                    "at most {MAX_TABLE_BYTES} bytes of tables (a smaller disk or larger grains)"
                ),
                format!("{gd_entries} tables of {gt_bytes} bytes"),
            ));
        }
        if gd_bytes > flen {
            return Err(file.format_err(
                56,
                "VMDK grain directory",
                format!("{gd_bytes} bytes inside the file"),
                format!("the file has {flen} bytes"),
            ));
        }
        // Metadata areas, as byte ranges; nothing else may overlap them.
        let mut meta: Vec<(u64, u64, Area)> = vec![(0, SECTOR, Area::Header)];
        if h.desc_offset != 0 {
            let s = sector_range(
                &file,
                28,
                h.desc_offset,
                h.desc_size.saturating_mul(SECTOR),
                flen,
            )?;
            meta.push((s.0, s.1, Area::Descriptor));
        }
        if let Some(at) = footer_at {
            meta.push((at, flen, Area::Footer));
        }
        let gd_at = sector_range(&file, 56, h.gd_offset, gd_bytes, flen)?;
        meta.push((gd_at.0, gd_at.1.max(gd_at.0 + 1), Area::Directory));
        let gd = read_u32s(&file, gd_at.0, gd_entries, "VMDK grain directory")?;
        let mut rgd = Vec::new();
        let mut rgd_at = None;
        if h.flags & FLAG_REDUNDANT != 0 && h.rgd_offset != 0 {
            let r = sector_range(&file, 48, h.rgd_offset, gd_bytes, flen)?;
            meta.push((r.0, r.1.max(r.0 + 1), Area::RedundantDirectory));
            rgd = read_u32s(&file, r.0, gd_entries, "VMDK redundant grain directory")?;
            rgd_at = Some(r.0);
        }
        for (dir, base, redundant) in [(&gd, gd_at.0, false), (&rgd, rgd_at.unwrap_or(0), true)] {
            for (i, &e) in dir.iter().enumerate() {
                if e != 0 {
                    let at = base + 4 * i as u64;
                    let r = sector_range(&file, at, u64::from(e), gt_bytes, flen)?;
                    let area = if redundant {
                        Area::RedundantTable(i)
                    } else {
                        Area::Table(i)
                    };
                    meta.push((r.0, r.1, area));
                }
            }
        }
        meta.sort_by_key(|m| m.0);
        for w in meta.windows(2) {
            if let [a, b] = w {
                if b.0 < a.1 {
                    return Err(file.format_err(
                        b.0,
                        format!("VMDK {}", b.2),
                        format!("an area not overlapping the {} ({}..{})", a.2, a.0, a.1),
                        format!("{}..{}", b.0, b.1),
                    ));
                }
            }
        }
        let zero_grain = h.flags & FLAG_ZERO_GRAIN != 0;
        let mut gts = Vec::with_capacity(gd.len());
        for (i, &e) in gd.iter().enumerate() {
            if e == 0 {
                gts.push(None);
                continue;
            }
            let gt_at = u64::from(e) * SECTOR;
            let gt = read_u32s(&file, gt_at, h.gtes, "VMDK grain table")?;
            for (j, &g) in gt.iter().enumerate() {
                if g == 0 || (g == 1 && zero_grain) {
                    continue;
                }
                let start = u64::from(g) * SECTOR;
                let len = if compressed { MARKER_LEN } else { grain_bytes };
                let bad = start.checked_add(len).is_none_or(|end| end > flen)
                    || overlaps(&meta, start, start + len);
                if bad {
                    return Err(file.format_err(
                        gt_at + 4 * j as u64,
                        format!("VMDK grain table entry {j} of table {i}"),
                        format!(
                            "a grain inside the file's {flen} bytes, outside the header, \
                             directories and tables"
                        ),
                        format!("sector {g}"),
                    ));
                }
            }
            gts.push(Some(gt));
        }
        let read_only_reason = if compressed {
            Some(
                "streamOptimized (compressed) VMDKs are read-only here; convert it first: \
                 `qemu-img convert -O vmdk -o subformat=monolithicSparse IN OUT`"
                    .to_string(),
            )
        } else if footer_at.is_some() {
            Some("this VMDK keeps its grain directory in a footer; it is read-only here".into())
        } else if rgd_at.is_some() && gd.iter().zip(&rgd).any(|(&a, &b)| (a == 0) != (b == 0)) {
            Some(
                "the VMDK's grain directory and redundant grain directory disagree on which \
                 grain tables exist; repair it first (`qemu-img check -r all`)"
                    .into(),
            )
        } else {
            None
        };
        if access == Access::ReadWrite {
            if let Some(r) = &read_only_reason {
                return Err(unsupported(&file, r.clone()));
            }
        }
        Ok(SparseExtent {
            end: flen.div_ceil(SECTOR) * SECTOR,
            file,
            header,
            grain_bytes,
            gt_bytes,
            gd,
            rgd,
            gd_at: gd_at.0,
            rgd_at,
            gts,
            compressed,
            zero_grain,
            read_only_reason,
            dirty_tables: BTreeSet::new(),
            marked_unclean: false,
            cache: Mutex::new(None),
        })
    }

    /// Bytes per grain.
    pub fn grain_bytes(&self) -> u64 {
        self.grain_bytes
    }

    /// Size of the extent by its header, in bytes.
    pub fn capacity_bytes(&self) -> u64 {
        self.header.capacity * SECTOR
    }

    /// Where grain `g` is.
    pub fn lookup(&self, g: u64) -> Grain {
        let gtes = self.header.gtes;
        let Some(Some(gt)) = self.gts.get((g / gtes) as usize) else {
            return Grain::Unallocated;
        };
        match gt.get((g % gtes) as usize).copied().unwrap_or(0) {
            0 => Grain::Unallocated,
            1 if self.zero_grain => Grain::Zero,
            s => Grain::At(u64::from(s) * SECTOR),
        }
    }

    /// Reads `buf` from an allocated grain `g` stored at `at`, from `in_grain`.
    pub fn read_grain(&self, g: u64, at: u64, in_grain: u64, buf: &mut [u8]) -> Result<()> {
        if !self.compressed {
            return self.file.read(at + in_grain, buf, "VMDK grain");
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.as_ref().is_none_or(|c| c.0 != g) {
            *cache = Some((g, self.inflate(at)?));
        }
        let data = cache.as_ref().map(|c| c.1.as_slice()).unwrap_or_default();
        let start = in_grain as usize;
        match data.get(start..start + buf.len()) {
            Some(src) => buf.copy_from_slice(src),
            None => buf.fill(0),
        }
        Ok(())
    }

    /// Decompresses the grain whose marker is at `at`: a whole grain.
    fn inflate(&self, at: u64) -> Result<Vec<u8>> {
        let mut marker = [0u8; MARKER_LEN as usize];
        self.file.read(at, &mut marker, "VMDK grain marker")?;
        let size = u64::from(le32(&marker, 8));
        if size == 0 || size > 2 * self.grain_bytes {
            return Err(self.file.format_err(
                at + 8,
                "VMDK compressed grain size",
                format!("1..={} bytes", 2 * self.grain_bytes),
                size.to_string(),
            ));
        }
        let mut data = vec![0u8; size as usize];
        self.file
            .read(at + MARKER_LEN, &mut data, "VMDK compressed grain")?;
        let mut out = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(
            &data,
            self.grain_bytes as usize,
        )
        .map_err(|e| {
            self.file.format_err(
                at + MARKER_LEN,
                "VMDK compressed grain",
                format!("a zlib stream of at most {} bytes", self.grain_bytes),
                format!("{:?}", e.status),
            )
        })?;
        out.resize(self.grain_bytes as usize, 0);
        Ok(out)
    }

    fn refuse_write(&self) -> Result<()> {
        match &self.read_only_reason {
            Some(r) => Err(unsupported(&self.file, r.clone())),
            None => Ok(()),
        }
    }

    /// Sets the unclean-shutdown byte (flushed) before the first change.
    pub fn begin_write(&mut self) -> Result<()> {
        self.refuse_write()?;
        if !self.marked_unclean {
            self.file.write(UNCLEAN_AT, &[1])?;
            self.file.sync()?;
            self.marked_unclean = true;
        }
        Ok(())
    }

    /// Writes inside an allocated grain.
    pub fn write_in_place(&mut self, at: u64, buf: &[u8]) -> Result<()> {
        self.begin_write()?;
        self.file.write(at, buf)
    }

    /// Appends grain `g` with `data` (a whole grain); its GT entry is
    /// staged until [`SparseExtent::commit`].
    pub fn allocate_grain(&mut self, g: u64, data: &[u8]) -> Result<()> {
        self.begin_write()?;
        let gtes = self.header.gtes;
        let t = (g / gtes) as usize;
        let j = (g % gtes) as usize;
        if self.gd.get(t).is_none() {
            return Err(self.file.format_err(
                self.gd_at,
                "VMDK grain directory",
                format!("an entry for grain {g}"),
                format!("{} entries", self.gd.len()),
            ));
        }
        if self.gts.get(t).is_some_and(Option::is_none) {
            self.allocate_table(t)?;
        }
        let at = self.end;
        let sector = u32::try_from(at / SECTOR).ok().filter(|&s| s > 1);
        let (Some(sector), Some(new_end)) = (sector, at.checked_add(self.grain_bytes)) else {
            return Err(self.file.format_err(
                at,
                "VMDK new grain",
                "a sector number below 2^32",
                (at / SECTOR).to_string(),
            ));
        };
        self.file.write(at, data)?;
        self.end = new_end;
        if let Some(Some(gt)) = self.gts.get_mut(t) {
            if let Some(e) = gt.get_mut(j) {
                *e = sector;
            }
        }
        self.dirty_tables.insert(t);
        Ok(())
    }

    /// Appends a zeroed grain table (and its redundant copy) for GD entry
    /// `t`, flushes, then names them in the directories.
    fn allocate_table(&mut self, t: usize) -> Result<()> {
        let span = self.gt_bytes.div_ceil(SECTOR) * SECTOR;
        let copies = if self.rgd_at.is_some() { 2 } else { 1 };
        let at = self.end;
        let sector = |x: u64| u32::try_from(x / SECTOR).ok().filter(|&s| s > 1);
        let last = at + span * (copies - 1);
        let (Some(first), Some(second)) = (sector(at), sector(last)) else {
            return Err(self.file.format_err(
                at,
                "VMDK new grain table",
                "a sector number below 2^32",
                (last / SECTOR).to_string(),
            ));
        };
        self.file.write(at, &vec![0u8; (span * copies) as usize])?;
        self.file.sync()?;
        self.end = at + span * copies;
        self.file
            .write(self.gd_at + 4 * t as u64, &first.to_le_bytes())?;
        if let Some(r) = self.rgd_at {
            self.file.write(r + 4 * t as u64, &second.to_le_bytes())?;
            if let Some(e) = self.rgd.get_mut(t) {
                *e = second;
            }
        }
        if let Some(e) = self.gd.get_mut(t) {
            *e = first;
        }
        if let Some(slot) = self.gts.get_mut(t) {
            *slot = Some(vec![0u32; self.header.gtes as usize]);
        }
        Ok(())
    }

    /// Makes every change durable: the grains, then the grain tables (both
    /// copies), then the cleared unclean-shutdown byte.
    pub fn commit(&mut self) -> Result<()> {
        if !self.dirty_tables.is_empty() {
            self.file.sync()?;
            for &t in &self.dirty_tables {
                let Some(Some(gt)) = self.gts.get(t) else {
                    continue;
                };
                let bytes: Vec<u8> = gt.iter().flat_map(|e| e.to_le_bytes()).collect();
                if let Some(&e) = self.gd.get(t) {
                    self.file.write(u64::from(e) * SECTOR, &bytes)?;
                }
                if let Some(&e) = self.rgd.get(t) {
                    if e != 0 {
                        self.file.write(u64::from(e) * SECTOR, &bytes)?;
                    }
                }
            }
            self.file.sync()?;
            self.dirty_tables.clear();
        }
        if self.marked_unclean {
            self.file.sync()?;
            self.file.write(UNCLEAN_AT, &[0])?;
            self.file.sync()?;
            self.marked_unclean = false;
        }
        Ok(())
    }

    /// Whether changes are waiting for [`SparseExtent::commit`].
    pub fn is_dirty(&self) -> bool {
        self.marked_unclean || !self.dirty_tables.is_empty()
    }
}

/// Checks that `len` bytes at sector `sector` lie inside a file of `flen`
/// bytes; returns the byte range.
fn sector_range(
    file: &ImageFile,
    field: u64,
    sector: u64,
    len: u64,
    flen: u64,
) -> Result<(u64, u64)> {
    let range = sector
        .checked_mul(SECTOR)
        .and_then(|s| s.checked_add(len).map(|e| (s, e)));
    match range {
        Some((s, e)) if s >= SECTOR && e <= flen => Ok((s, e)),
        _ => Err(file.format_err(
            field,
            "VMDK sector offset",
            format!("{len} bytes after the header and inside the file's {flen} bytes"),
            format!("sector {sector}"),
        )),
    }
}

fn read_u32s(file: &ImageFile, at: u64, n: u64, what: &str) -> Result<Vec<u32>> {
    let mut raw = vec![0u8; (n * 4) as usize];
    file.read(at, &mut raw, what)?;
    Ok(raw.chunks_exact(4).map(|c| le32(c, 0)).collect())
}

/// Whether `start..end` overlaps any of the sorted, disjoint `meta` ranges.
fn overlaps(meta: &[(u64, u64, Area)], start: u64, end: u64) -> bool {
    let i = meta.partition_point(|m| m.1 <= start);
    meta.get(i).is_some_and(|m| m.0 < end)
}
