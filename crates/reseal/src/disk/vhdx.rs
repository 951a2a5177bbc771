//! Microsoft VHDX images (MS-VHDX): file identifier, the two headers
//! (CRC-32C, the valid one with the higher sequence number is current),
//! the region table, the BAT with its interleaved sector bitmap entries,
//! the metadata region, and the log.
//!
//! A non-empty log is replayed before use: into the file when opened for
//! writing (the header first gets a new FileWriteGuid, then the entries are
//! applied and flushed, then the log is marked empty through header
//! updates), in memory when opened read-only. A log that cannot be replayed
//! is refused with an error naming the file and the log GUID.
//!
//! Writing follows the update rules of the specification:
//!
//! 1. Before the first change of an open, the inactive header is rewritten
//!    with the sequence number plus one, a new FileWriteGuid and a new
//!    DataWriteGuid, and flushed; it becomes the current header. The update
//!    is then repeated on the other copy, so both copies agree.
//! 2. A write into a block that is not fully present gets a new 1 MiB
//!    aligned payload block at the end of the file (holding the block's
//!    previous contents for a differencing disk). The BAT entry for it is
//!    only staged in memory, where reads already see it.
//! 3. [`BlockDevice::flush`] (also run when too many BAT sectors are staged
//!    to fit one log entry, and on drop) makes the staged BAT sectors
//!    durable through the log: the payload data is flushed; a header update
//!    sets a new LogGuid; the changed 4 KiB BAT sectors are written as one
//!    log entry (entry header with sequence number, Tail, LogGuid,
//!    FlushedFileOffset and LastFileOffset, data descriptors, data sectors,
//!    CRC-32C) at the start of the log, and flushed; the sectors are written
//!    to their place in the BAT and flushed; a last header update (made on
//!    both copies) sets the LogGuid back to zero, marking the log empty.
//!
//! Before anything is read or written, the structures are checked: every
//! field is read through bounds-checked readers; a BAT entry may not name
//! a block overlapping the header section, the log, the BAT, the metadata
//! region or another block; log entries may not write into the header
//! section or the log. The parent of a differencing disk (relative locator
//! first, then the absolute path) must be a regular file holding a VHDX
//! whose DataWriteGuid is the child's `parent_linkage`. [`create_child`]
//! makes a new differencing child of a VHDX.
//!
//! No published crate reads and writes VHDX with log replay and crash-safe
//! BAT updates, so the format is implemented here from MS-VHDX.
//!
//! A crash at any point therefore leaves either the previous BAT (the new
//! blocks are unreferenced space at the end of the file), or a log that the
//! next open replays (here or in any other implementation), or the new BAT.
//! A BAT entry never names a block whose data is not yet durable. Because
//! the log is empty after every flush, read-only openers that refuse to
//! replay (such as `qemu-img check` without `-r`) accept the file.

use super::{Access, BlockDevice, Fields, Guid, ImageFile, check_range, crc32c, utf16le};
use crate::{ResealError, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const PAGE: u64 = 4 * KIB;
const MAX_CHAIN: u32 = 32;
const MAX_OVERLAY_PAGES: usize = 65536;

const BAT_REGION: Guid = Guid::from_str_const("2DC27766-F623-4200-9D64-115E9BFD4A08");
const METADATA_REGION: Guid = Guid::from_str_const("8B7CA206-4790-4B9A-B8FE-575F050F886E");
const FILE_PARAMETERS: Guid = Guid::from_str_const("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
const VIRTUAL_DISK_SIZE: Guid = Guid::from_str_const("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
const VIRTUAL_DISK_ID: Guid = Guid::from_str_const("BECA12AB-B2E6-4523-93EF-C309E000C746");
const LOGICAL_SECTOR_SIZE: Guid = Guid::from_str_const("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
const PHYSICAL_SECTOR_SIZE: Guid = Guid::from_str_const("CDA348C7-445D-4471-9CC9-E9885251C556");
const PARENT_LOCATOR: Guid = Guid::from_str_const("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");
/// Locator type of a VHDX parent locator naming a VHDX parent.
const VHDX_PARENT_LOCATOR_TYPE: Guid = Guid::from_str_const("B04AEFB7-D19E-4A81-B789-25B8E9445913");

const PAYLOAD_NOT_PRESENT: u64 = 0;
const PAYLOAD_FULLY_PRESENT: u64 = 6;
const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;
const SB_PRESENT: u64 = 6;

#[derive(Debug, Clone)]
struct Header {
    raw: Vec<u8>,
    slot: u64,
    seq: u64,
    data_write: Guid,
    log_guid: Guid,
    log_length: u64,
    log_offset: u64,
}

fn parse_header(raw: Vec<u8>, slot: u64, path: &Path) -> std::result::Result<Header, String> {
    let f = Fields::new(&raw, path, slot, "VHDX header");
    let field = |r: Result<u64>| r.map_err(|e| e.to_string());
    let sig = f.array::<4>(0).map_err(|e| e.to_string())?;
    if &sig != b"head" {
        return Err(format!("signature {sig:02X?}"));
    }
    let stored = field(f.le32(4).map(u64::from))?;
    let mut copy = raw.clone();
    copy.get_mut(4..8)
        .ok_or("a header of 8 bytes or less")?
        .fill(0);
    let computed = u64::from(crc32c(&copy));
    if stored != computed {
        return Err(format!("CRC-32C {stored:08X}, computed {computed:08X}"));
    }
    let version = field(f.le16(66).map(u64::from))?;
    if version != 1 {
        return Err(format!("version {version}"));
    }
    let guid = |at| f.guid(at).map_err(|e| e.to_string());
    Ok(Header {
        seq: field(f.le64(8))?,
        data_write: guid(32)?,
        log_guid: guid(48)?,
        log_length: field(f.le32(68).map(u64::from))?,
        log_offset: field(f.le64(72))?,
        raw,
        slot,
    })
}

/// One write recorded in the log.
#[derive(Debug)]
enum LogOp {
    Data(u64, Vec<u8>),
    Zero(u64, u64),
}

#[derive(Debug)]
struct LogEntry {
    pos: u64,
    len: u64,
    tail: u64,
    seq: u64,
    flushed_file_offset: u64,
    last_file_offset: u64,
    ops: Vec<LogOp>,
}

/// Most data sectors put in one log entry (and most BAT sectors staged
/// before they are written through the log).
const MAX_ENTRY_SECTORS: u64 = 1024;

/// Where [`VhdxDisk::flush_then_crash`] stops a flush, leaving the file as
/// a crash at that moment would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The new payload blocks and the log entry holding the BAT changes are
    /// durable; the BAT itself is not changed yet.
    AfterLogWrite,
    /// The log entry was also applied to the BAT and flushed; the header
    /// still names the log, so the next open replays it once more.
    AfterApply,
}

/// An open VHDX file.
pub struct VhdxDisk {
    file: ImageFile,
    header: Header,
    /// Replayed log pages (read-only opens), by 4 KiB aligned file offset.
    overlay: BTreeMap<u64, Vec<u8>>,
    /// File length including what a replayed log extended it to.
    file_len: u64,
    size: u64,
    block_size: u64,
    sector_size: u64,
    physical_sector_size: u64,
    chunk_ratio: u64,
    bat_offset: u64,
    /// Length of the BAT region in bytes.
    bat_region_len: u64,
    /// Offset and length of the metadata region.
    meta_region: (u64, u64),
    bat: Vec<u64>,
    /// Changed metadata sectors not yet written through the log, by 4 KiB
    /// aligned file offset, with their new contents.
    staged: BTreeMap<u64, Vec<u8>>,
    /// Set once the disk was given up by [`VhdxDisk::flush_then_crash`]:
    /// dropping it then writes nothing.
    abandoned: bool,
    has_parent: bool,
    parent: Option<Box<dyn BlockDevice>>,
    parent_path: Option<PathBuf>,
    /// Whether this open already gave the header a new FileWriteGuid.
    file_guid_renewed: bool,
    /// Whether this open already gave the header a new DataWriteGuid.
    data_guid_renewed: bool,
    replayed: bool,
}

impl std::fmt::Debug for VhdxDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhdxDisk")
            .field("path", &self.file.path)
            .field("size", &self.size)
            .field("block_size", &self.block_size)
            .field("parent", &self.parent_path)
            .finish()
    }
}

impl VhdxDisk {
    /// Opens a VHDX (replaying its log if needed); parents of a
    /// differencing disk are opened read-only.
    pub fn open(path: &Path, access: Access) -> Result<Self> {
        Self::open_depth(path, access, 0)
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }
    /// Logical sector size in bytes.
    pub fn logical_sector_size(&self) -> u64 {
        self.sector_size
    }
    /// Whether a non-empty log was replayed when opening.
    pub fn log_replayed(&self) -> bool {
        self.replayed
    }
    /// The current header's DataWriteGuid.
    pub fn data_write_guid(&self) -> Guid {
        self.header.data_write
    }
    /// The resolved parent of a differencing disk.
    pub fn parent_path(&self) -> Option<&Path> {
        self.parent_path.as_deref()
    }

    fn open_depth(path: &Path, access: Access, depth: u32) -> Result<Self> {
        let file = ImageFile::open(path, access)?;
        let flen = file.len()?;
        let mut ident = [0u8; 8];
        file.read(0, &mut ident, "VHDX file identifier")?;
        if &ident != b"vhdxfile" {
            return Err(file.format_err(
                0,
                "VHDX file identifier",
                "\"vhdxfile\"",
                format!("{ident:02X?}"),
            ));
        }
        let mut best: Option<Header> = None;
        let mut problems = Vec::new();
        for slot in [64 * KIB, 128 * KIB] {
            let mut raw = vec![0u8; PAGE as usize];
            if let Err(e) = file.read(slot, &mut raw, "VHDX header") {
                problems.push(format!("header at {slot}: {e}"));
                continue;
            }
            match parse_header(raw, slot, &file.path) {
                Ok(h) => {
                    if best.as_ref().is_none_or(|b| h.seq > b.seq) {
                        best = Some(h);
                    }
                }
                Err(e) => problems.push(format!("header at {slot}: {e}")),
            }
        }
        let Some(header) = best else {
            return Err(file.format_err(
                64 * KIB,
                "VHDX headers",
                "at least one header with signature \"head\", a valid CRC-32C and version 1",
                problems.join("; "),
            ));
        };
        let mut disk = VhdxDisk {
            file,
            header,
            overlay: BTreeMap::new(),
            file_len: flen,
            size: 0,
            block_size: 0,
            sector_size: 0,
            physical_sector_size: 4096,
            chunk_ratio: 0,
            bat_offset: 0,
            bat_region_len: 0,
            meta_region: (0, 0),
            bat: Vec::new(),
            staged: BTreeMap::new(),
            abandoned: false,
            has_parent: false,
            parent: None,
            parent_path: None,
            file_guid_renewed: false,
            data_guid_renewed: false,
            replayed: false,
        };
        if !disk.header.log_guid.is_nil() {
            disk.replay_log()?;
        }
        disk.load_regions(depth)?;
        Ok(disk)
    }

    fn log_err(&self, offset: u64, found: impl Into<String>) -> ResealError {
        self.file.format_err(
            offset,
            format!(
                "VHDX log {} (not replayed; the image was not used)",
                self.header.log_guid
            ),
            "a log that can be replayed",
            found,
        )
    }

    /// Reads file bytes as they are after log replay.
    fn fread(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.file_len) {
            return Err(self.file.format_err(
                offset,
                what,
                format!("{} bytes inside the file", buf.len()),
                format!("the file ends at {}", self.file_len),
            ));
        }
        let end = offset + buf.len() as u64;
        let real = self.file.len()?;
        let in_file = real.saturating_sub(offset).min(buf.len() as u64) as usize;
        if in_file > 0 {
            self.file.read(offset, &mut buf[..in_file], what)?;
        }
        buf[in_file..].fill(0);
        if !self.overlay.is_empty() {
            let first = offset - offset % PAGE;
            for (&p, page) in self.overlay.range(first..end) {
                let s = p.max(offset);
                let e = (p + PAGE).min(end);
                if s < e {
                    buf[(s - offset) as usize..(e - offset) as usize]
                        .copy_from_slice(&page[(s - p) as usize..(e - p) as usize]);
                }
            }
        }
        Ok(())
    }

    fn parse_log_entry(&self, log: &[u8], pos: u64) -> Option<LogEntry> {
        let llen = log.len() as u64;
        if llen == 0 {
            return None;
        }
        // The entry may wrap around the end of the log.
        let get = |o: u64, n: u64| -> Option<Vec<u8>> {
            (0..n)
                .map(|i| log.get(((pos + o + i) % llen) as usize).copied())
                .collect()
        };
        let path = &self.file.path;
        let h = get(0, 64)?;
        let hf = Fields::new(&h, path, pos, "VHDX log entry header");
        if &hf.array::<4>(0).ok()? != b"loge" {
            return None;
        }
        let len = u64::from(hf.le32(8).ok()?);
        if len < PAGE || len % PAGE != 0 || len > llen {
            return None;
        }
        let tail = u64::from(hf.le32(12).ok()?);
        if tail % PAGE != 0 || tail >= llen {
            return None;
        }
        let seq = hf.le64(16).ok()?;
        let count = u64::from(hf.le32(24).ok()?);
        if hf.guid(32).ok()? != self.header.log_guid || seq == 0 {
            return None;
        }
        let mut entry = get(0, len)?;
        let stored = Fields::new(&entry, path, pos, "VHDX log entry")
            .le32(4)
            .ok()?;
        entry.get_mut(4..8)?.fill(0);
        if crc32c(&entry) != stored {
            return None;
        }
        let desc_bytes = (64 + 32 * count).div_ceil(PAGE) * PAGE;
        if desc_bytes > len {
            return None;
        }
        let ef = Fields::new(&entry, path, pos, "VHDX log entry");
        let mut ops = Vec::new();
        let mut data_at = desc_bytes as usize;
        for i in 0..count as usize {
            let d = ef.sub(64 + 32 * i, 32, "VHDX log descriptor").ok()?;
            if d.le64(24).ok()? != seq {
                return None;
            }
            let file_offset = d.le64(16).ok()?;
            // Log entries update the BAT and the metadata: never the header
            // section or the log itself.
            let (lo, ll) = (self.header.log_offset, self.header.log_length);
            if file_offset % PAGE != 0
                || file_offset < MIB
                || (file_offset < lo.saturating_add(ll) && lo < file_offset.saturating_add(PAGE))
            {
                return None;
            }
            match &d.array::<4>(0).ok()? {
                b"zero" => {
                    let zlen = d.le64(8).ok()?;
                    let zend = file_offset.checked_add(zlen)?;
                    if zlen % PAGE != 0 || (file_offset < lo.saturating_add(ll) && lo < zend) {
                        return None;
                    }
                    ops.push(LogOp::Zero(file_offset, zlen));
                }
                b"desc" => {
                    let s = ef
                        .sub(data_at, PAGE as usize, "VHDX log data sector")
                        .ok()?;
                    let sseq = (u64::from(s.le32(4).ok()?) << 32) | u64::from(s.le32(4092).ok()?);
                    if &s.array::<4>(0).ok()? != b"data" || sseq != seq {
                        return None;
                    }
                    let mut sector = Vec::with_capacity(PAGE as usize);
                    sector.extend_from_slice(d.bytes(8, 8).ok()?);
                    sector.extend_from_slice(s.bytes(8, 4084).ok()?);
                    sector.extend_from_slice(d.bytes(4, 4).ok()?);
                    ops.push(LogOp::Data(file_offset, sector));
                    data_at += PAGE as usize;
                }
                _ => return None,
            }
        }
        Some(LogEntry {
            pos,
            len,
            tail,
            seq,
            flushed_file_offset: hf.le64(48).ok()?,
            last_file_offset: hf.le64(56).ok()?,
            ops,
        })
    }

    /// Finds the active log sequence and replays it (see the module doc).
    fn replay_log(&mut self) -> Result<()> {
        let (lo, ll) = (self.header.log_offset, self.header.log_length);
        let hslot = self.header.slot;
        if ll == 0
            || lo % MIB != 0
            || ll % MIB != 0
            || lo.checked_add(ll).is_none_or(|e| e > self.file_len)
        {
            return Err(self.log_err(
                hslot + 68,
                format!("log region of {ll} bytes at {lo} outside the file or misaligned"),
            ));
        }
        if ll > 256 * MIB {
            return Err(self.log_err(
                hslot + 68,
                format!("a log of {ll} bytes (more than 256 MiB)"),
            ));
        }
        let mut log = vec![0u8; ll as usize];
        self.file.read(lo, &mut log, "VHDX log")?;
        let mut entries: BTreeMap<u64, LogEntry> = BTreeMap::new();
        let mut pos = 0;
        while pos < ll {
            if let Some(e) = self.parse_log_entry(&log, pos) {
                entries.insert(pos, e);
            }
            pos += PAGE;
        }
        let mut best: Option<(u64, Vec<u64>)> = None;
        for (&start, first) in &entries {
            let mut chain = vec![start];
            let mut cur = first;
            while chain.len() <= entries.len() {
                let next = (cur.pos + cur.len) % ll;
                match entries.get(&next) {
                    Some(n) if n.seq == cur.seq.wrapping_add(1) && !chain.contains(&next) => {
                        chain.push(next);
                        cur = n;
                    }
                    _ => break,
                }
            }
            if let Some(i) = chain.iter().position(|&p| p == cur.tail) {
                let active = chain[i..].to_vec();
                if best.as_ref().is_none_or(|(s, _)| cur.seq > *s) {
                    best = Some((cur.seq, active));
                }
            }
        }
        let Some((_, active)) = best else {
            // No valid sequence: the log holds nothing to replay.
            if self.file.writable {
                self.write_both_headers(Guid::default(), true, false)?;
            }
            return Ok(());
        };
        if let Some(head) = active.last().and_then(|p| entries.get(p)) {
            let real = self.file.len()?;
            if real < head.flushed_file_offset {
                return Err(self.log_err(
                    lo + head.pos + 48,
                    format!(
                        "a file of at least FlushedFileOffset {} bytes, found {real} (truncated)",
                        head.flushed_file_offset
                    ),
                ));
            }
        }
        if self.file.writable {
            // The header changes before anything else in the file does;
            // the log stays named until every entry is applied.
            self.write_header(self.header.log_guid, true, true)?;
        }
        let mut new_len = self.file_len;
        let mut pages = 0usize;
        for p in &active {
            let Some(e) = entries.get(p) else { continue };
            new_len = new_len.max(e.last_file_offset);
            for op in &e.ops {
                match op {
                    LogOp::Data(o, d) => {
                        new_len = new_len.max(o + PAGE);
                        pages += 1;
                        if self.file.writable {
                            self.file.write(*o, d)?;
                        } else {
                            self.overlay.insert(*o, d.clone());
                        }
                    }
                    LogOp::Zero(o, n) => {
                        let end = o
                            .checked_add(*n)
                            .ok_or_else(|| self.log_err(lo + p, "a zero descriptor past 2^64"))?;
                        new_len = new_len.max(end);
                        if self.file.writable {
                            let zeros = vec![0u8; MIB as usize];
                            let mut at = *o;
                            while at < end {
                                let k = (end - at).min(MIB);
                                self.file.write(at, &zeros[..k as usize])?;
                                at += k;
                            }
                        } else {
                            let mut at = *o;
                            while at < end {
                                pages += 1;
                                if pages > MAX_OVERLAY_PAGES {
                                    return Err(self.log_err(
                                        lo + p,
                                        "more than 256 MiB of replayed data for a read-only open",
                                    ));
                                }
                                self.overlay.insert(at, vec![0u8; PAGE as usize]);
                                at += PAGE;
                            }
                        }
                    }
                }
            }
            if pages > MAX_OVERLAY_PAGES && !self.file.writable {
                return Err(self.log_err(
                    lo + p,
                    "more than 256 MiB of replayed data for a read-only open",
                ));
            }
        }
        if self.file.writable {
            if new_len > self.file.len()? {
                self.file.set_len(new_len)?;
            }
            self.file.sync()?;
            self.write_both_headers(Guid::default(), false, false)?;
        }
        self.file_len = new_len;
        self.replayed = true;
        Ok(())
    }

    /// Updates the header twice, so that both copies hold the new state and
    /// a damaged copy later still leaves a current header saying the same.
    fn write_both_headers(
        &mut self,
        log_guid: Guid,
        new_file_guid: bool,
        new_data_guid: bool,
    ) -> Result<()> {
        self.write_header(log_guid, new_file_guid, new_data_guid)?;
        self.write_header(log_guid, false, false)
    }

    /// Writes the inactive header with sequence + 1 and the given log GUID
    /// (and, when asked, a new FileWriteGuid and/or DataWriteGuid), flushes
    /// it and makes it current.
    fn write_header(
        &mut self,
        log_guid: Guid,
        new_file_guid: bool,
        new_data_guid: bool,
    ) -> Result<()> {
        let mut raw = self.header.raw.clone();
        let seq = self.header.seq.checked_add(1).ok_or_else(|| {
            self.file.format_err(
                self.header.slot + 8,
                "VHDX header sequence number",
                "below 2^64 - 1",
                "the maximum",
            )
        })?;
        raw[8..16].copy_from_slice(&seq.to_le_bytes());
        if new_file_guid {
            raw[16..32].copy_from_slice(&Guid::random()?.0);
        }
        if new_data_guid {
            raw[32..48].copy_from_slice(&Guid::random()?.0);
        }
        raw[48..64].copy_from_slice(&log_guid.0);
        raw[4..8].fill(0);
        let crc = crc32c(&raw);
        raw[4..8].copy_from_slice(&crc.to_le_bytes());
        let slot = if self.header.slot == 64 * KIB {
            128 * KIB
        } else {
            64 * KIB
        };
        self.file.write(slot, &raw)?;
        self.file.sync()?;
        self.header = parse_header(raw, slot, &self.file.path).map_err(|e| {
            self.file
                .format_err(slot, "VHDX header just written", "valid", e)
        })?;
        self.file_guid_renewed |= new_file_guid;
        self.data_guid_renewed |= new_data_guid;
        Ok(())
    }

    fn load_regions(&mut self, depth: u32) -> Result<()> {
        let mut table = None;
        let mut problems = Vec::new();
        for at in [192 * KIB, 256 * KIB] {
            let mut rt = vec![0u8; (64 * KIB) as usize];
            if let Err(e) = self.fread(at, &mut rt, "VHDX region table") {
                problems.push(e.to_string());
                continue;
            }
            let f = Fields::new(&rt, &self.file.path, at, "VHDX region table");
            let (sig, stored, count) = (f.array::<4>(0)?, f.le32(4)?, f.le32(8)?);
            let mut copy = rt.clone();
            if let Some(c) = copy.get_mut(4..8) {
                c.fill(0);
            }
            if &sig != b"regi" {
                problems.push(format!("region table at {at}: signature {sig:02X?}"));
            } else if crc32c(&copy) != stored {
                problems.push(format!(
                    "region table at {at}: CRC-32C {stored:08X}, computed {:08X}",
                    crc32c(&copy)
                ));
            } else if count > 2047 {
                problems.push(format!("region table at {at}: {count} entries"));
            } else {
                table = Some((at, rt, count));
                break;
            }
        }
        let Some((rt_at, rt, count)) = table else {
            return Err(self.file.format_err(
                192 * KIB,
                "VHDX region table",
                "signature \"regi\", a valid CRC-32C, at most 2047 entries",
                problems.join("; "),
            ));
        };
        let (mut bat, mut meta) = (None, None);
        let table = Fields::new(&rt, &self.file.path, rt_at, "VHDX region table");
        for i in 0..count as usize {
            let e = table.sub(16 + 32 * i, 32, "VHDX region table entry")?;
            let guid = e.guid(0)?;
            let off = e.le64(16)?;
            let len = u64::from(e.le32(24)?);
            let required = e.le32(28)? & 1 != 0;
            let entry_at = rt_at + 16 + 32 * i as u64;
            if off % MIB != 0
                || len % MIB != 0
                || off < MIB
                || off.checked_add(len).is_none_or(|e| e > self.file_len)
            {
                return Err(self.file.format_err(
                    entry_at,
                    format!("VHDX region {guid}"),
                    format!("1 MiB aligned, inside the file of {} bytes", self.file_len),
                    format!("{len} bytes at {off}"),
                ));
            }
            if guid == BAT_REGION {
                bat = Some((off, len));
            } else if guid == METADATA_REGION {
                meta = Some((off, len));
            } else if required {
                return Err(self.file.format_err(
                    entry_at,
                    "VHDX region",
                    "only known required regions (BAT, metadata)",
                    format!("unknown required region {guid}"),
                ));
            }
        }
        let (Some((bat_off, bat_len)), Some((meta_off, meta_len))) = (bat, meta) else {
            return Err(self.file.format_err(
                rt_at,
                "VHDX region table",
                "a BAT and a metadata region",
                "one of them missing",
            ));
        };
        if bat_off < meta_off.saturating_add(meta_len) && meta_off < bat_off.saturating_add(bat_len)
        {
            return Err(self.file.format_err(
                rt_at,
                "VHDX region table",
                "a BAT region and a metadata region apart",
                format!(
                    "BAT of {bat_len} bytes at {bat_off}, metadata of {meta_len} bytes at {meta_off}"
                ),
            ));
        }
        self.meta_region = (meta_off, meta_len);
        self.read_metadata(meta_off, meta_len, depth)?;
        // BAT
        let payload = self.size.div_ceil(self.block_size);
        let entries = if self.has_parent {
            payload.div_ceil(self.chunk_ratio) * (self.chunk_ratio + 1)
        } else {
            payload + payload.saturating_sub(1) / self.chunk_ratio
        };
        if entries.checked_mul(8).is_none_or(|b| b > bat_len) {
            return Err(self.file.format_err(
                bat_off,
                "VHDX BAT region",
                format!("room for {entries} entries"),
                format!("{bat_len} bytes"),
            ));
        }
        let mut raw = vec![0u8; (entries * 8) as usize];
        self.fread(bat_off, &mut raw, "VHDX BAT")?;
        self.bat = raw
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            })
            .collect();
        self.bat_offset = bat_off;
        self.bat_region_len = bat_len;
        // Every block the BAT names, to check that none overlaps the
        // structures of the file or another block.
        let mut used: Vec<(u64, u64, u64)> = Vec::new();
        for (i, &e) in self.bat.iter().enumerate() {
            let i = i as u64;
            let state = e & 7;
            let off = (e >> 20) << 20;
            let is_bitmap = (i + 1) % (self.chunk_ratio + 1) == 0;
            let (ok, need) = if is_bitmap {
                (
                    state == 0 || state == SB_PRESENT,
                    if state == SB_PRESENT { MIB } else { 0 },
                )
            } else {
                let ok = matches!(state, 0..=3 | 6 | 7)
                    && (state != PAYLOAD_PARTIALLY_PRESENT || self.has_parent);
                (ok, if state >= 6 { self.block_size } else { 0 })
            };
            let in_file = need == 0
                || (off >= MIB
                    && off
                        .checked_add(need)
                        .is_some_and(|end| end <= self.file_len));
            if !ok || !in_file {
                return Err(self.file.format_err(
                    bat_off + 8 * i,
                    format!("VHDX BAT entry {i}"),
                    format!(
                        "a valid state and a block inside the file of {} bytes",
                        self.file_len
                    ),
                    format!("state {state}, offset {off}"),
                ));
            }
            if need > 0 {
                used.push((off, off + need, i));
            }
        }
        self.check_blocks_apart(used)
    }

    /// Checks that no block named by the BAT (start, end, entry index)
    /// overlaps the header section, the log, the BAT, the metadata region
    /// or another block: a write there would destroy them.
    fn check_blocks_apart(&self, mut used: Vec<(u64, u64, u64)>) -> Result<()> {
        let (lo, ll) = (self.header.log_offset, self.header.log_length);
        let structures = [
            ("the header section", 0, MIB),
            ("the log", lo, lo.saturating_add(ll)),
            (
                "the BAT",
                self.bat_offset,
                self.bat_offset.saturating_add(self.bat_region_len),
            ),
            (
                "the metadata region",
                self.meta_region.0,
                self.meta_region.0.saturating_add(self.meta_region.1),
            ),
        ];
        let entry_err = |i: u64, expected: &str, found: String| {
            self.file.format_err(
                self.bat_offset + 8 * i,
                format!("VHDX BAT entry {i}"),
                expected.to_string(),
                found,
            )
        };
        for &(s, e, i) in &used {
            for (name, a, b) in structures {
                if s < b && a < e {
                    return Err(entry_err(
                        i,
                        "a block apart from the file's structures",
                        format!("a block at {s} inside {name} ({a}..{b})"),
                    ));
                }
            }
        }
        used.sort_unstable();
        for w in used.windows(2) {
            if let [(s0, e0, i0), (s1, _, i1)] = *w {
                if s1 < e0 {
                    return Err(entry_err(
                        i1,
                        "a block of its own",
                        format!("a block at {s1}, overlapping the block of entry {i0} at {s0}"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn read_metadata(&mut self, off: u64, len: u64, depth: u32) -> Result<()> {
        if len > 64 * MIB {
            return Err(self.file.format_err(
                off,
                "VHDX metadata region",
                "at most 64 MiB",
                format!("{len} bytes"),
            ));
        }
        let mut m = vec![0u8; len as usize];
        self.fread(off, &mut m, "VHDX metadata region")?;
        let mf = Fields::new(&m, &self.file.path, off, "VHDX metadata table");
        let sig = mf.array::<8>(0)?;
        let count = u64::from(mf.le16(10)?);
        if &sig != b"metadata" || count > 2047 || 32 + 32 * count > len {
            return Err(self.file.format_err(
                off,
                "VHDX metadata table",
                "signature \"metadata\" and at most 2047 entries",
                format!("{sig:02X?}, {count} entries"),
            ));
        }
        let mut items: Vec<(Guid, &[u8], u64)> = Vec::new();
        for i in 0..count as usize {
            let e = mf.sub(32 + 32 * i, 32, "VHDX metadata table entry")?;
            let id = e.guid(0)?;
            let io = u64::from(e.le32(16)?);
            let il = u64::from(e.le32(20)?);
            let required = e.le32(24)? & 4 != 0;
            let at = off + 32 + 32 * i as u64;
            if il > 0 && (io < 64 * KIB || io.checked_add(il).is_none_or(|x| x > len)) {
                return Err(self.file.format_err(
                    at,
                    format!("VHDX metadata item {id}"),
                    "inside the metadata region",
                    format!("{il} bytes at {io}"),
                ));
            }
            let known = [
                FILE_PARAMETERS,
                VIRTUAL_DISK_SIZE,
                VIRTUAL_DISK_ID,
                LOGICAL_SECTOR_SIZE,
                PHYSICAL_SECTOR_SIZE,
                PARENT_LOCATOR,
            ];
            if required && !known.contains(&id) {
                return Err(self.file.format_err(
                    at,
                    "VHDX metadata item",
                    "only known required items",
                    format!("unknown required item {id}"),
                ));
            }
            items.push((id, mf.bytes(io as usize, il as usize)?, at));
        }
        let find = |id: Guid, min: usize, what: &str| -> Result<&[u8]> {
            match items.iter().find(|(g, _, _)| *g == id) {
                Some((_, d, _)) if d.len() >= min => Ok(d),
                Some((_, d, at)) => Err(self.file.format_err(
                    *at,
                    what.to_string(),
                    format!("at least {min} bytes"),
                    format!("{} bytes", d.len()),
                )),
                None => Err(self.file.format_err(
                    off,
                    what.to_string(),
                    "present in the metadata table",
                    "missing",
                )),
            }
        };
        let path = &self.file.path;
        let item = |id: Guid, min: usize, what: &'static str| -> Result<Fields<'_>> {
            Ok(Fields::new(find(id, min, what)?, path, off, what))
        };
        let params = item(FILE_PARAMETERS, 8, "VHDX file parameters")?;
        let block_size = u64::from(params.le32(0)?);
        let has_parent = params.le32(4)? & 2 != 0;
        let size = item(VIRTUAL_DISK_SIZE, 8, "VHDX virtual disk size")?.le64(0)?;
        let lss = u64::from(item(LOGICAL_SECTOR_SIZE, 4, "VHDX logical sector size")?.le32(0)?);
        if !block_size.is_power_of_two() || !(MIB..=256 * MIB).contains(&block_size) {
            return Err(self.file.format_err(
                off,
                "VHDX block size",
                "a power of two from 1 MiB to 256 MiB",
                block_size.to_string(),
            ));
        }
        if lss != 512 && lss != 4096 {
            return Err(self.file.format_err(
                off,
                "VHDX logical sector size",
                "512 or 4096",
                lss.to_string(),
            ));
        }
        if size == 0 || size % lss != 0 || size > 64 * 1024 * 1024 * MIB {
            return Err(self.file.format_err(
                off,
                "VHDX virtual disk size",
                "a multiple of the sector size, at most 64 TiB",
                size.to_string(),
            ));
        }
        let locator = if has_parent {
            Some(find(PARENT_LOCATOR, 20, "VHDX parent locator")?.to_vec())
        } else {
            None
        };
        self.block_size = block_size;
        self.sector_size = lss;
        if let Some((_, d, _)) = items.iter().find(|(g, _, _)| *g == PHYSICAL_SECTOR_SIZE) {
            if let Ok(pss) = Fields::new(d, &self.file.path, off, "")
                .le32(0)
                .map(u64::from)
            {
                if pss == 512 || pss == 4096 {
                    self.physical_sector_size = pss;
                }
            }
        }
        self.size = size;
        self.has_parent = has_parent;
        self.chunk_ratio = (1u64 << 23) * lss / block_size;
        if let Some(loc) = locator {
            if depth >= MAX_CHAIN {
                return Err(self.file.format_err(
                    off,
                    "VHDX parent chain",
                    format!("at most {MAX_CHAIN} levels"),
                    "a longer chain (or a loop)",
                ));
            }
            self.open_parent(&loc, off, depth)?;
        }
        Ok(())
    }

    fn open_parent(&mut self, loc: &[u8], at: u64, depth: u32) -> Result<()> {
        let lf = Fields::new(loc, &self.file.path, at, "VHDX parent locator");
        let n = usize::from(lf.le16(18)?);
        let mut kv = BTreeMap::new();
        for i in 0..n {
            let e = lf.sub(20 + 12 * i, 12, "VHDX parent locator entry")?;
            let (ko, vo) = (e.le32(0)? as usize, e.le32(4)? as usize);
            let (kl, vl) = (usize::from(e.le16(8)?), usize::from(e.le16(10)?));
            kv.insert(utf16le(lf.bytes(ko, kl)?), utf16le(lf.bytes(vo, vl)?));
        }
        let dir = self
            .file
            .path
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut candidates = Vec::new();
        if let Some(rel) = kv.get("relative_path") {
            let rel = rel.replace('\\', "/");
            candidates.push(dir.join(rel.trim_start_matches("./")));
        }
        for key in ["absolute_win32_path", "volume_path"] {
            if let Some(abs) = kv.get(key) {
                let abs = abs.replace('\\', "/");
                if abs.starts_with('/') {
                    candidates.push(PathBuf::from(&abs));
                }
                if let Some(name) = abs.rsplit('/').next().filter(|s| !s.is_empty()) {
                    candidates.push(dir.join(name));
                }
            }
        }
        // The first name that exists is the parent; it must then pass the
        // checks below (no falling through to other names).
        let Some(found) = candidates
            .iter()
            .find(|c| std::fs::metadata(c).is_ok())
            .cloned()
        else {
            return Err(self.file.format_err(
                at,
                "VHDX parent",
                "an existing parent file",
                format!(
                    "none of: {}",
                    candidates
                        .iter()
                        .map(|c| c.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let child = &self.file.path;
        super::check_parent_file(child, at, &found)?;
        let what = || format!("parent {} of this differencing VHDX", found.display());
        let format = super::detect_format(&found)?;
        if format != super::ImageFormat::Vhdx {
            return Err(super::format_err(
                child,
                at,
                what(),
                "a VHDX file",
                format!("{format:?}"),
            ));
        }
        let norm = |s: &String| {
            s.trim_matches(|c| c == '{' || c == '}')
                .to_ascii_uppercase()
        };
        let linkages: Vec<String> = ["parent_linkage", "parent_linkage2"]
            .iter()
            .filter_map(|k| kv.get(*k).map(norm))
            .filter(|l| l.chars().any(|c| c != '0' && c != '-'))
            .collect();
        if linkages.is_empty() {
            return Err(super::format_err(
                child,
                at,
                "VHDX parent locator",
                "a parent_linkage entry",
                "none",
            ));
        }
        let p = VhdxDisk::open_depth(&found, Access::ReadOnly, depth + 1)?;
        let dw = p.data_write_guid().to_string();
        if !linkages.contains(&dw) {
            return Err(super::format_err(
                child,
                at,
                what(),
                format!(
                    "DataWriteGuid {} (parent_linkage in the child)",
                    linkages.join(" or ")
                ),
                format!("DataWriteGuid {dw}"),
            ));
        }
        let parent: Box<dyn BlockDevice> = Box::new(p);
        self.parent = Some(parent);
        self.parent_path = Some(found);
        Ok(())
    }

    fn read_parent(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match &self.parent {
            Some(p) => {
                let avail = p.len().saturating_sub(offset).min(buf.len() as u64) as usize;
                if avail > 0 {
                    p.read_at(offset, &mut buf[..avail])?;
                }
                buf[avail..].fill(0);
            }
            None => buf.fill(0),
        }
        Ok(())
    }

    /// The BAT entry at `idx` (an index the disk's size makes valid).
    fn bat_entry(&self, idx: usize) -> Result<u64> {
        self.bat.get(idx).copied().ok_or_else(|| {
            self.file.format_err(
                self.bat_offset + 8 * idx as u64,
                format!("VHDX BAT entry {idx}"),
                format!("one of the {} entries", self.bat.len()),
                "an index past the table",
            )
        })
    }

    fn bat_index(&self, block: u64) -> usize {
        (block + block / self.chunk_ratio) as usize
    }

    fn read_in_block(&self, block: u64, in_block: u64, buf: &mut [u8]) -> Result<()> {
        let e = self.bat_entry(self.bat_index(block))?;
        let state = e & 7;
        let off = (e >> 20) << 20;
        let at = block * self.block_size + in_block;
        match state {
            PAYLOAD_FULLY_PRESENT => self.fread(off + in_block, buf, "VHDX payload block"),
            PAYLOAD_PARTIALLY_PRESENT => {
                let chunk = block / self.chunk_ratio;
                let sb =
                    self.bat_entry((chunk * (self.chunk_ratio + 1) + self.chunk_ratio) as usize)?;
                if sb & 7 != SB_PRESENT {
                    return Err(self.file.format_err(
                        self.bat_offset,
                        format!("VHDX sector bitmap of chunk {chunk}"),
                        "present for a partially present block",
                        "not present",
                    ));
                }
                let sb_off = (sb >> 20) << 20;
                let ss = self.sector_size;
                let first_sector = (block % self.chunk_ratio) * (self.block_size / ss);
                let mut pos = 0u64;
                let len = buf.len() as u64;
                while pos < len {
                    let p = in_block + pos;
                    let sector = first_sector + p / ss;
                    let mut byte = [0u8; 1];
                    self.fread(sb_off + sector / 8, &mut byte, "VHDX sector bitmap")?;
                    let present = byte[0] & (1 << (sector % 8)) != 0;
                    let n = (ss - p % ss).min(len - pos);
                    let chunk_buf = &mut buf[pos as usize..(pos + n) as usize];
                    if present {
                        self.fread(off + p, chunk_buf, "VHDX payload block")?;
                    } else {
                        self.read_parent(block * self.block_size + p, chunk_buf)?;
                    }
                    pos += n;
                }
                Ok(())
            }
            PAYLOAD_NOT_PRESENT if self.has_parent => self.read_parent(at, buf),
            _ => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    fn for_each_block(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(u64, u64, usize, usize) -> Result<()>,
    ) -> Result<()> {
        let mut pos = 0usize;
        while pos < len {
            let at = offset + pos as u64;
            let in_block = at % self.block_size;
            let n = ((self.block_size - in_block) as usize).min(len - pos);
            f(at / self.block_size, in_block, pos, n)?;
            pos += n;
        }
        Ok(())
    }

    /// Gives `block` a fully present payload block at the end of the file,
    /// holding its current contents; returns the block's file offset.
    fn allocate(&mut self, block: u64) -> Result<u64> {
        let mut data = Vec::new();
        if self.has_parent {
            data = vec![0u8; self.block_size as usize];
            self.read_in_block(block, 0, &mut data)?;
        }
        let start = self.file.len()?.max(self.file_len).div_ceil(MIB) * MIB;
        let end = start
            .checked_add(self.block_size)
            .filter(|&e| e < (1 << 63))
            .ok_or_else(|| {
                self.file.format_err(
                    start,
                    "VHDX new payload block",
                    "an offset below 2^63",
                    "too large",
                )
            })?;
        self.file.set_len(end)?;
        if !data.is_empty() {
            self.file.write(start, &data)?;
        }
        self.file_len = end;
        Ok(start)
    }

    /// Differencing disks: sets the sector bitmap bits of `block`, which
    /// is about to become fully present, allocating its chunk's sector
    /// bitmap block (1 MiB at the end of the file, staged in the BAT like a
    /// payload block) when the chunk has none. MS-VHDX readers ignore the
    /// bitmap of a fully present block, but some readers (libvhdi
    /// 20210425) consult it for every block of a differencing disk and
    /// would otherwise read the block from the parent; Hyper-V keeps it
    /// set as well.
    fn mark_in_sector_bitmap(&mut self, block: u64) -> Result<()> {
        let chunk = block / self.chunk_ratio;
        let idx = chunk * (self.chunk_ratio + 1) + self.chunk_ratio;
        let Some(&entry) = self.bat.get(idx as usize) else {
            return Err(self.file.format_err(
                self.bat_offset,
                format!("VHDX sector bitmap entry of chunk {chunk}"),
                format!("BAT entry {idx} inside the BAT"),
                format!("a BAT of {} entries", self.bat.len()),
            ));
        };
        let mut e = entry;
        if e & 7 != SB_PRESENT {
            let start = self.file.len()?.max(self.file_len).div_ceil(MIB) * MIB;
            let end = start
                .checked_add(MIB)
                .filter(|&e| e < (1 << 63))
                .ok_or_else(|| {
                    self.file.format_err(
                        start,
                        "VHDX new sector bitmap block",
                        "an offset below 2^63",
                        "too large",
                    )
                })?;
            self.file.set_len(end)?;
            self.file_len = end;
            e = start | SB_PRESENT;
            self.stage(self.bat_offset + 8 * idx, &e.to_le_bytes())?;
            self.bat[idx as usize] = e;
        }
        let sb_off = (e >> 20) << 20;
        let per_block = self.block_size / self.sector_size;
        let first = (block % self.chunk_ratio) * per_block;
        // A block holds at least 1 MiB of sectors of at most 4 KiB: whole
        // bytes of the bitmap.
        let ones = vec![0xFFu8; per_block.div_ceil(8) as usize];
        self.file.write(sb_off + first / 8, &ones)
    }

    /// Stages the BAT entry of `block` as fully present at `off`: reads
    /// see it at once, the file gets it through the log on the next flush.
    fn stage_bat(&mut self, block: u64, off: u64) -> Result<()> {
        let idx = self.bat_index(block);
        let e = off | PAYLOAD_FULLY_PRESENT;
        self.stage(self.bat_offset + 8 * idx as u64, &e.to_le_bytes())?;
        if let Some(slot) = self.bat.get_mut(idx) {
            *slot = e;
        }
        Ok(())
    }

    /// Stages new bytes for a metadata range inside one 4 KiB sector.
    fn stage(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let sector = offset - offset % PAGE;
        let at = (offset - sector) as usize;
        if at + bytes.len() > PAGE as usize {
            return Err(self.file.format_err(
                offset,
                "VHDX metadata update",
                "a range inside one 4 KiB sector",
                format!("{} bytes", bytes.len()),
            ));
        }
        if !self.staged.contains_key(&sector) {
            let mut current = vec![0u8; PAGE as usize];
            self.fread(sector, &mut current, "VHDX metadata sector")?;
            self.staged.insert(sector, current);
        }
        if let Some(s) = self.staged.get_mut(&sector) {
            s[at..at + bytes.len()].copy_from_slice(bytes);
        }
        Ok(())
    }

    /// The log region as a writer may use it: 1 MiB aligned, at least
    /// 1 MiB, inside the file, clear of the header section, the BAT and the
    /// metadata region.
    fn log_region(&self) -> Result<(u64, u64)> {
        let (lo, ll) = (self.header.log_offset, self.header.log_length);
        let overlaps = |o: u64, l: u64| lo < o.saturating_add(l) && o < lo.saturating_add(ll);
        let ok = ll >= MIB
            && lo >= MIB
            && lo % MIB == 0
            && ll % MIB == 0
            && lo.checked_add(ll).is_some_and(|e| e <= self.file_len)
            && !overlaps(self.bat_offset, self.bat_region_len)
            && !overlaps(self.meta_region.0, self.meta_region.1);
        if ok {
            Ok((lo, ll))
        } else {
            Err(self.file.format_err(
                self.header.slot + 68,
                "VHDX log region (needed to update the BAT)",
                "a 1 MiB aligned log of at least 1 MiB inside the file, \
                 clear of the header section, the BAT and the metadata region",
                format!("{ll} bytes at {lo}"),
            ))
        }
    }

    /// Builds one log entry that writes `sectors` (file offset, 4 KiB of
    /// new contents) and names the current header's LogGuid.
    fn log_entry(
        &self,
        seq: u64,
        tail: u64,
        sectors: &[(u64, &[u8])],
        sizes: (u64, u64),
    ) -> Vec<u8> {
        let n = sectors.len() as u64;
        let head = desc_sectors(n) * PAGE;
        let len = head + n * PAGE;
        let mut e = vec![0u8; len as usize];
        e[0..4].copy_from_slice(b"loge");
        e[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        e[12..16].copy_from_slice(&(tail as u32).to_le_bytes());
        e[16..24].copy_from_slice(&seq.to_le_bytes());
        e[24..28].copy_from_slice(&(n as u32).to_le_bytes());
        e[32..48].copy_from_slice(&self.header.log_guid.0);
        e[48..56].copy_from_slice(&sizes.0.to_le_bytes());
        e[56..64].copy_from_slice(&sizes.1.to_le_bytes());
        for (i, (offset, data)) in sectors.iter().enumerate() {
            let d = 64 + 32 * i;
            e[d..d + 4].copy_from_slice(b"desc");
            e[d + 4..d + 8].copy_from_slice(&data[4092..4096]);
            e[d + 8..d + 16].copy_from_slice(&data[0..8]);
            e[d + 16..d + 24].copy_from_slice(&offset.to_le_bytes());
            e[d + 24..d + 32].copy_from_slice(&seq.to_le_bytes());
            let s = (head + PAGE * i as u64) as usize;
            e[s..s + 4].copy_from_slice(b"data");
            e[s + 4..s + 8].copy_from_slice(&((seq >> 32) as u32).to_le_bytes());
            e[s + 8..s + 4092].copy_from_slice(&data[8..4092]);
            e[s + 4092..s + 4096].copy_from_slice(&(seq as u32).to_le_bytes());
        }
        let crc = crc32c(&e);
        e[4..8].copy_from_slice(&crc.to_le_bytes());
        e
    }

    /// Makes the staged metadata sectors durable through the log (see the
    /// module documentation). With `crash`, stops there and leaves the rest
    /// undone.
    fn commit_staged(&mut self, crash: Option<CrashPoint>) -> Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let (lo, ll) = self.log_region()?;
        // The payload blocks the new entries point at are durable first.
        self.file.sync()?;
        self.write_header(Guid::random()?, false, false)?;
        let staged = std::mem::take(&mut self.staged);
        let done = self.write_through_log(&staged, lo, ll, crash);
        if done.is_err() || crash == Some(CrashPoint::AfterLogWrite) {
            self.staged = staged;
            return done;
        }
        if crash.is_some() {
            return Ok(());
        }
        // Every entry is applied: the log is marked empty.
        self.write_both_headers(Guid::default(), false, false)
    }

    /// Writes `staged` as log entries at the start of the log (as many
    /// sectors per entry as fit), flushing each entry, then applying and
    /// flushing its sectors.
    fn write_through_log(
        &self,
        staged: &BTreeMap<u64, Vec<u8>>,
        lo: u64,
        ll: u64,
        crash: Option<CrashPoint>,
    ) -> Result<()> {
        let real = self.file.len()?;
        let sizes = (
            real - real % MIB,
            real.max(self.file_len).div_ceil(MIB) * MIB,
        );
        let sectors: Vec<(u64, &[u8])> = staged.iter().map(|(o, d)| (*o, d.as_slice())).collect();
        let per_entry = entry_capacity(ll).max(1) as usize;
        let (mut pos, mut seq) = (0u64, 1u64);
        for group in sectors.chunks(per_entry) {
            let n = group.len() as u64;
            let len = (desc_sectors(n) + n) * PAGE;
            if pos + len > ll {
                pos = 0;
            }
            // Every earlier entry is applied, so this one is its own tail.
            let entry = self.log_entry(seq, pos, group, sizes);
            self.file.write(lo + pos, &entry)?;
            self.file.sync()?;
            if crash == Some(CrashPoint::AfterLogWrite) {
                return Ok(());
            }
            for (offset, data) in group {
                self.file.write(*offset, data)?;
            }
            self.file.sync()?;
            pos = (pos + len) % ll;
            seq += 1;
        }
        Ok(())
    }

    /// Runs [`BlockDevice::flush`] up to `point` and then gives the disk up
    /// without writing anything more, leaving the file as a crash at that
    /// moment would. This exists to test recovery; with nothing staged it
    /// only flushes the data.
    pub fn flush_then_crash(mut self, point: CrashPoint) -> Result<()> {
        self.abandoned = true;
        self.commit_staged(Some(point))
    }

    /// Updates the header as the first change of this open must: a new
    /// DataWriteGuid (and FileWriteGuid, unless a replay already gave one).
    fn begin_data_change(&mut self) -> Result<()> {
        if !self.data_guid_renewed {
            self.write_both_headers(self.header.log_guid, !self.file_guid_renewed, true)?;
        }
        Ok(())
    }
}

/// Number of 4 KiB sectors that the entry header and `n` descriptors take.
fn desc_sectors(n: u64) -> u64 {
    (64 + 32 * n).div_ceil(PAGE)
}

/// How many data sectors one entry holds in a log of `log_len` bytes: the
/// entry leaves one sector of the log unused, and holds at most
/// [`MAX_ENTRY_SECTORS`].
fn entry_capacity(log_len: u64) -> u64 {
    let room = (log_len / PAGE).saturating_sub(1);
    let mut n = room.min(MAX_ENTRY_SECTORS);
    while n > 0 && desc_sectors(n) + n > room {
        n -= 1;
    }
    n
}

impl Drop for VhdxDisk {
    fn drop(&mut self) {
        if self.file.writable && !self.abandoned && !self.staged.is_empty() {
            // Nothing can report an error from here; callers that need to
            // know call flush() first.
            let _ = self.commit_staged(None);
        }
    }
}

impl BlockDevice for VhdxDisk {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.file.path, self.size, offset, buf.len())?;
        self.for_each_block(offset, buf.len(), |block, in_block, pos, n| {
            self.read_in_block(block, in_block, &mut buf[pos..pos + n])
        })
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(&self.file.path, self.size, offset, buf.len())?;
        if !self.file.writable {
            return Err(ResealError::InvalidInput {
                what: self.file.path.display().to_string(),
                message: "the image was opened read-only".into(),
            });
        }
        let mut plan = Vec::new();
        self.for_each_block(offset, buf.len(), |b, i, p, n| {
            plan.push((b, i, p, n));
            Ok(())
        })?;
        let allocating = plan.iter().any(|&(b, ..)| {
            self.bat_entry(self.bat_index(b))
                .map_or(true, |e| e & 7 != PAYLOAD_FULLY_PRESENT)
        });
        let per_entry = if allocating {
            // Refuse before changing anything if the BAT cannot be updated.
            entry_capacity(self.log_region()?.1).max(1)
        } else {
            u64::MAX
        };
        self.begin_data_change()?;
        for (block, in_block, pos, n) in plan {
            let e = self.bat_entry(self.bat_index(block))?;
            let chunk = &buf[pos..pos + n];
            if e & 7 == PAYLOAD_FULLY_PRESENT {
                self.file.write(((e >> 20) << 20) + in_block, chunk)?;
            } else {
                let start = self.allocate(block)?;
                self.file.write(start + in_block, chunk)?;
                if self.has_parent {
                    self.mark_in_sector_bitmap(block)?;
                }
                self.stage_bat(block, start)?;
                if self.staged.len() as u64 >= per_entry {
                    self.commit_staged(None)?;
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.commit_staged(None)?;
        self.file.sync()
    }
}

/// Metadata item flags: IsVirtualDisk and IsRequired.
const META_VIRTUAL_DISK: u32 = 2;
const META_REQUIRED: u32 = 4;

/// Builds a parent locator item of type
/// `B04AEFB7-D19E-4A81-B789-25B8E9445913` with the given key/value pairs.
fn parent_locator(pairs: &[(&str, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&VHDX_PARENT_LOCATOR_TYPE.0);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(pairs.len() as u16).to_le_bytes());
    let mut strings = Vec::new();
    let mut entries = Vec::new();
    let base = 20 + 12 * pairs.len();
    for (k, v) in pairs {
        let (k, v) = (super::to_utf16le(k), super::to_utf16le(v));
        let ko = base + strings.len();
        strings.extend_from_slice(&k);
        let vo = base + strings.len();
        strings.extend_from_slice(&v);
        entries.extend_from_slice(&(ko as u32).to_le_bytes());
        entries.extend_from_slice(&(vo as u32).to_le_bytes());
        entries.extend_from_slice(&(k.len() as u16).to_le_bytes());
        entries.extend_from_slice(&(v.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&entries);
    out.extend_from_slice(&strings);
    out
}

/// Puts a header with sequence number `seq` into a 4 KiB page.
fn new_header(seq: u64, file_write: Guid, data_write: Guid, log_offset: u64) -> Vec<u8> {
    let mut h = vec![0u8; PAGE as usize];
    h[0..4].copy_from_slice(b"head");
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..32].copy_from_slice(&file_write.0);
    h[32..48].copy_from_slice(&data_write.0);
    // LogGuid zero: the log is empty. LogVersion 0, Version 1.
    h[66..68].copy_from_slice(&1u16.to_le_bytes());
    h[68..72].copy_from_slice(&(MIB as u32).to_le_bytes());
    h[72..80].copy_from_slice(&log_offset.to_le_bytes());
    let crc = crc32c(&h);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Creates `child`, a new differencing VHDX whose parent is the VHDX
/// `parent`: same virtual size and sector sizes, the parent's block size
/// (2 MiB if the parent's is not usable), every block not present (so
/// every read goes to the parent), and a parent locator with
/// `parent_linkage` (the parent's current DataWriteGuid),
/// `relative_path` (from the child's directory, as `.\name.vhdx` or
/// `..\dir\name.vhdx`) and `absolute_win32_path`.
///
/// The layout is the header section (file identifier, two headers, two
/// region tables) in the first MiB, an empty 1 MiB log, a 1 MiB metadata
/// region, then the BAT. The file is written under a temporary name beside
/// `child` and linked into place; `child` must not exist.
pub fn create_child(parent: &Path, child: &Path) -> Result<()> {
    let parent_abs = super::absolute(parent)?;
    super::check_parent_file(child, 0, &parent_abs)?;
    if super::detect_format(&parent_abs)? != super::ImageFormat::Vhdx {
        return Err(super::format_err(
            &parent_abs,
            0,
            "parent of a new differencing VHDX",
            "a VHDX file",
            "another format",
        ));
    }
    let p = VhdxDisk::open(&parent_abs, Access::ReadOnly)?;
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
    let relative = super::relative_win_path(&child_dir, &parent_abs);
    let absolute = super::win_path(&parent_abs);
    let size = p.len();
    let lss = p.sector_size;
    let pss = p.physical_sector_size;
    // 2 MiB, as Hyper-V makes differencing disks whatever the parent's
    // block size: a child stores whole blocks, so small blocks keep it
    // small (a personalize touches scattered sectors).
    // 2 MiB, as Hyper-V makes differencing disks whatever the parent's
    // block size: a child stores whole blocks, so small blocks keep it
    // small (a personalize touches scattered sectors).
    let block_size = 2 * MIB;
    // Lower case with braces, as Hyper-V writes it (and libvhdi reads it).
    let linkage = format!("{{{}}}", p.data_write_guid()).to_ascii_lowercase();
    drop(p);

    let chunk_ratio = (1u64 << 23) * lss / block_size;
    let blocks = size.div_ceil(block_size);
    let bat_entries = blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1);
    let bat_len = (bat_entries * 8).div_ceil(MIB) * MIB;
    let (log_at, meta_at, bat_at) = (MIB, 2 * MIB, 3 * MIB);
    let file_len = bat_at + bat_len;

    let locator = parent_locator(&[
        ("parent_linkage", linkage),
        ("absolute_win32_path", absolute),
        ("relative_path", relative),
    ]);
    let mut items: Vec<(Guid, u32, Vec<u8>)> = Vec::new();
    let mut params = (block_size as u32).to_le_bytes().to_vec();
    params.extend_from_slice(&2u32.to_le_bytes()); // HasParent
    items.push((FILE_PARAMETERS, META_REQUIRED, params));
    items.push((
        VIRTUAL_DISK_SIZE,
        META_VIRTUAL_DISK | META_REQUIRED,
        size.to_le_bytes().to_vec(),
    ));
    items.push((
        VIRTUAL_DISK_ID,
        META_VIRTUAL_DISK | META_REQUIRED,
        Guid::random()?.0.to_vec(),
    ));
    items.push((
        LOGICAL_SECTOR_SIZE,
        META_VIRTUAL_DISK | META_REQUIRED,
        (lss as u32).to_le_bytes().to_vec(),
    ));
    items.push((
        PHYSICAL_SECTOR_SIZE,
        META_VIRTUAL_DISK | META_REQUIRED,
        (pss as u32).to_le_bytes().to_vec(),
    ));
    items.push((PARENT_LOCATOR, META_REQUIRED, locator));
    let mut meta = vec![0u8; (64 * KIB) as usize];
    meta[0..8].copy_from_slice(b"metadata");
    meta[10..12].copy_from_slice(&(items.len() as u16).to_le_bytes());
    let mut data_at = 64 * KIB as usize;
    for (i, (id, flags, data)) in items.iter().enumerate() {
        let e = 32 + 32 * i;
        meta[e..e + 16].copy_from_slice(&id.0);
        meta[e + 16..e + 20].copy_from_slice(&(data_at as u32).to_le_bytes());
        meta[e + 20..e + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
        meta[e + 24..e + 28].copy_from_slice(&flags.to_le_bytes());
        meta.extend_from_slice(data);
        // Items start on 8-byte boundaries.
        meta.resize(meta.len().div_ceil(8) * 8, 0);
        data_at = meta.len();
    }
    if meta.len() as u64 > MIB {
        return Err(ResealError::InvalidInput {
            what: parent_abs.display().to_string(),
            message: "the parent's path is too long for a parent locator".into(),
        });
    }

    let mut regions = vec![0u8; (64 * KIB) as usize];
    regions[0..4].copy_from_slice(b"regi");
    regions[8..12].copy_from_slice(&2u32.to_le_bytes());
    for (i, (id, off, len)) in [
        (BAT_REGION, bat_at, bat_len),
        (METADATA_REGION, meta_at, MIB),
    ]
    .iter()
    .enumerate()
    {
        let e = 16 + 32 * i;
        regions[e..e + 16].copy_from_slice(&id.0);
        regions[e + 16..e + 24].copy_from_slice(&off.to_le_bytes());
        regions[e + 24..e + 28].copy_from_slice(&(*len as u32).to_le_bytes());
        regions[e + 28..e + 32].copy_from_slice(&1u32.to_le_bytes());
    }
    let crc = crc32c(&regions);
    regions[4..8].copy_from_slice(&crc.to_le_bytes());

    let mut ident = vec![0u8; (64 * KIB) as usize];
    ident[0..8].copy_from_slice(b"vhdxfile");
    let creator = super::to_utf16le(concat!("reseal ", env!("CARGO_PKG_VERSION")));
    ident[8..8 + creator.len()].copy_from_slice(&creator);
    let (file_write, data_write) = (Guid::random()?, Guid::random()?);

    super::create_image_file(child, |f| {
        f.set_len(file_len)?;
        f.write(0, &ident)?;
        f.write(64 * KIB, &new_header(1, file_write, data_write, log_at))?;
        f.write(128 * KIB, &new_header(2, file_write, data_write, log_at))?;
        f.write(192 * KIB, &regions)?;
        f.write(256 * KIB, &regions)?;
        f.write(meta_at, &meta)
    })
}
