//! QEMU copy-on-write images (qcow2, versions 2 and 3), from the qcow2
//! specification in qemu's documentation: the header and its extensions
//! ([`header`]), the two-level L1/L2 cluster map, zero and deflate
//! compressed clusters, refcounts of every width ([`refcount`]) and
//! backing files. [`create_overlay`] ([`create`]) makes a new image over a
//! backing file.
//!
//! Written by hand because no crate reads and writes qcow2 with the
//! containment checks this block layer applies to every format (tables
//! inside the file and outside the metadata, bounded allocations) and the
//! crash ordering below; the deflate streams of compressed clusters are
//! decoded with `miniz_oxide`.
//!
//! Refused with a message saying why: encryption, external data files,
//! extended L2 entries (subclusters), zstd compression, unknown
//! incompatible feature bits, the dirty bit (the fix is
//! `qemu-img check -r all FILE`) and the corrupt bit. Images with internal
//! snapshots are read (the active state) but not written.
//!
//! Writes land in place in allocated clusters. Anything else (unallocated,
//! zero or compressed clusters) gets a new cluster at the end of the file,
//! filled with the cluster's previous contents (from the backing file, or
//! decompressed) and the written bytes. The metadata changes that follow
//! are kept in memory, where reads see them, and reach the file on
//! [`BlockDevice::flush`] (also when many are pending, and on drop) in the
//! order qemu uses, each step flushed before the next:
//!
//! 1. the new data clusters (already written);
//! 2. the increased refcounts: refcount blocks, then the refcount table
//!    entries naming new blocks (or a whole new, larger refcount table and
//!    then the header fields naming it);
//! 3. the L2 tables (new ones, and new entries in existing ones);
//! 4. the L1 entries naming new L2 tables;
//! 5. the decreased refcounts of clusters nothing references any more
//!    (compressed data rewritten elsewhere, an outgrown refcount table).
//!
//! A crash at any point leaves every reference pointing at a cluster whose
//! contents and refcount are durable: at worst some clusters are leaked
//! (counted but unreferenced), which `qemu-img check` reports as harmless.

pub mod create;
pub(crate) mod header;
mod refcount;

pub use create::create_overlay;

use super::{Access, BlockDevice, ImageFile, ImageFormat, be64, check_range};
use crate::{ResealError, Result};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Longest backing chain followed.
const MAX_CHAIN: u32 = 16;
/// Largest L1 table qemu accepts (32 MiB).
const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table accepted (8 MiB, as qemu).
const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Largest virtual size accepted (64 PiB, the most host offsets of L2
/// entries can address).
const MAX_VIRTUAL_SIZE: u64 = 1 << 56;
/// Bytes of clean L2 tables kept in memory.
const L2_CACHE_BYTES: u64 = 32 << 20;
/// Bytes of pending metadata (L2 tables, refcount blocks) after which a
/// write commits them.
const MAX_PENDING_BYTES: u64 = 64 << 20;

/// Host offset bits of L1 and standard L2 entries (bits 9..=55).
const OFFSET_MASK: u64 = 0x00FF_FFFF_FFFF_FE00;
/// Bit 63 of L1/L2 entries: the refcount is exactly one.
const COPIED: u64 = 1 << 63;
/// Bit 62 of L2 entries: a compressed cluster.
const COMPRESSED: u64 = 1 << 62;
/// Bit 0 of standard L2 entries: the cluster reads as zeros.
const ZERO: u64 = 1;
/// Bits of an L1 entry that must be zero.
const L1_RESERVED: u64 = !(OFFSET_MASK | COPIED);
/// Bits of a standard L2 entry that must be zero.
const L2_RESERVED: u64 = !(OFFSET_MASK | COPIED | ZERO);

/// What a guest cluster maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapping {
    /// Not in this image: the backing file's data (or zeros).
    Unallocated,
    /// Zeros, no host cluster.
    ZeroPlain,
    /// Zeros, with a host cluster kept for later writes.
    ZeroAlloc { host: u64, copied: bool },
    /// Data in a host cluster.
    Normal { host: u64, copied: bool },
    /// Deflate data at `host` (not aligned), at most `len` bytes.
    Compressed { host: u64, len: u64 },
}

/// A decompressed cluster: the host offset and length of its compressed
/// data, and its bytes.
type Inflated = ((u64, u64), Vec<u8>);

/// The qemu name of an image format (`backing_fmt`, `qemu-img -f`).
pub fn qemu_format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Raw => "raw",
        ImageFormat::Vhd => "vpc",
        ImageFormat::Vhdx => "vhdx",
        ImageFormat::Qcow2 => "qcow2",
        ImageFormat::Vmdk => "vmdk",
    }
}

/// An open qcow2 image.
pub struct Qcow2Disk {
    file: ImageFile,
    version: u32,
    cluster_bits: u32,
    size: u64,
    refcount_order: u32,
    autoclear: u64,
    nb_snapshots: u32,
    l1_offset: u64,
    l1: Vec<u64>,
    /// L1 entries changed since the last commit.
    l1_dirty: BTreeSet<usize>,
    /// Clean L2 tables read from the file, by host offset.
    l2_cache: RefCell<HashMap<u64, Vec<u64>>>,
    /// L2 tables changed (or new) since the last commit, by host offset.
    l2_dirty: BTreeMap<u64, Vec<u64>>,
    rt_offset: u64,
    rt_clusters: u64,
    rt: Vec<u64>,
    /// Refcount table entries changed since the last commit.
    rt_dirty: BTreeSet<usize>,
    /// Whether the refcount table moved since the last commit (the whole
    /// table and the header are then written).
    rt_moved: bool,
    /// Refcount blocks read or made, by host offset.
    rb_cache: HashMap<u64, Vec<u8>>,
    /// Refcount blocks changed since the last commit.
    rb_dirty: BTreeSet<u64>,
    /// Host clusters whose refcount drops by one once the references made
    /// since the last commit are durable.
    pending_free: Vec<u64>,
    /// Host offsets of L2 tables and refcount blocks.
    metadata: HashSet<u64>,
    /// First cluster past everything allocated (cluster aligned).
    next_free: u64,
    /// The last decompressed cluster: its L2 entry and its bytes.
    inflated: RefCell<Option<Inflated>>,
    backing: Option<Box<dyn BlockDevice>>,
    backing_path: Option<PathBuf>,
    backing_format: Option<ImageFormat>,
    /// Whether this open already cleared the autoclear feature bits.
    autoclear_done: bool,
    /// Test hook: file writes left before a simulated crash.
    write_budget: Option<u64>,
    /// Set once a simulated crash happened: nothing more is written.
    crashed: bool,
}

impl std::fmt::Debug for Qcow2Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Disk")
            .field("path", &self.file.path)
            .field("version", &self.version)
            .field("size", &self.size)
            .field("cluster_size", &self.cluster_size())
            .field("backing", &self.backing_path)
            .finish()
    }
}

impl Qcow2Disk {
    /// Opens a qcow2 image; its backing chain (if any) is opened read-only.
    pub fn open(path: &Path, access: Access) -> Result<Self> {
        Self::open_depth(path, access, 0)
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// The qcow2 version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// How many internal snapshots the image holds (only the active state
    /// is read).
    pub fn snapshot_count(&self) -> u32 {
        self.nb_snapshots
    }

    /// The resolved backing file, if any.
    pub fn backing_path(&self) -> Option<&Path> {
        self.backing_path.as_deref()
    }

    /// The detected format of the backing file, if any.
    pub fn backing_format(&self) -> Option<ImageFormat> {
        self.backing_format
    }

    /// Test hook: after `n` more writes to the file, every write fails and
    /// nothing more reaches the file (not even on drop), as if the process
    /// had died there.
    #[doc(hidden)]
    pub fn crash_after_writes(&mut self, n: u64) {
        self.write_budget = Some(n);
    }

    fn open_depth(path: &Path, access: Access, depth: u32) -> Result<Self> {
        let file = ImageFile::open(path, access)?;
        let h = header::parse(&file)?;
        let flen = file.len()?;
        let cb = h.cluster_bits;
        let cs = 1u64 << cb;
        let l2_entries = cs / 8;
        if h.size > MAX_VIRTUAL_SIZE {
            return Err(file.format_err(
                24,
                "qcow2 virtual size",
                format!("at most {MAX_VIRTUAL_SIZE} bytes"),
                h.size.to_string(),
            ));
        }
        let need_l1 = h.size.div_ceil(cs * l2_entries);
        let l1_size = u64::from(h.l1_size);
        if l1_size < need_l1 || l1_size * 8 > MAX_L1_BYTES {
            return Err(file.format_err(
                36,
                "qcow2 l1_size",
                format!(
                    "{need_l1}..={} entries for a {}-byte disk",
                    MAX_L1_BYTES / 8,
                    h.size
                ),
                l1_size.to_string(),
            ));
        }
        let aligned_inside = |off: u64, len: u64| {
            off % cs == 0 && off >= cs && off.checked_add(len).is_some_and(|e| e <= flen)
        };
        if l1_size > 0 && !aligned_inside(h.l1_table_offset, l1_size * 8) {
            return Err(file.format_err(
                40,
                "qcow2 l1_table_offset",
                format!("a cluster aligned table of {l1_size} entries past the header, inside the {flen}-byte file"),
                h.l1_table_offset.to_string(),
            ));
        }
        let rt_clusters = u64::from(h.refcount_table_clusters);
        let rt_bytes = rt_clusters << cb;
        if rt_clusters == 0 || rt_bytes > MAX_REFTABLE_BYTES {
            return Err(file.format_err(
                56,
                "qcow2 refcount_table_clusters",
                format!("1..={} clusters", MAX_REFTABLE_BYTES >> cb),
                rt_clusters.to_string(),
            ));
        }
        if !aligned_inside(h.refcount_table_offset, rt_bytes) {
            return Err(file.format_err(
                48,
                "qcow2 refcount_table_offset",
                format!("a cluster aligned table of {rt_bytes} bytes past the header, inside the {flen}-byte file"),
                h.refcount_table_offset.to_string(),
            ));
        }
        let l1_range = h.l1_table_offset..h.l1_table_offset + (l1_size * 8).div_ceil(cs) * cs;
        let rt_range = h.refcount_table_offset..h.refcount_table_offset + rt_bytes;
        if l1_size > 0 && l1_range.start < rt_range.end && rt_range.start < l1_range.end {
            return Err(file.format_err(
                40,
                "qcow2 l1_table_offset",
                "an L1 table apart from the refcount table",
                format!(
                    "L1 at {} overlapping the refcount table at {}",
                    h.l1_table_offset, h.refcount_table_offset
                ),
            ));
        }
        let fixed_meta = |off: u64| off < cs || l1_range.contains(&off) || rt_range.contains(&off);

        let mut raw = vec![0u8; (l1_size * 8) as usize];
        if l1_size > 0 {
            file.read(h.l1_table_offset, &mut raw, "qcow2 L1 table")?;
        }
        let l1: Vec<u64> = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        let mut metadata = HashSet::new();
        for (i, &e) in l1.iter().enumerate() {
            if e == 0 {
                continue;
            }
            let at = h.l1_table_offset + 8 * i as u64;
            let off = e & OFFSET_MASK;
            if e & L1_RESERVED != 0
                || off == 0
                || off % cs != 0
                || off.checked_add(cs).is_none_or(|end| end > flen)
                || fixed_meta(off)
                || !metadata.insert(off)
            {
                return Err(file.format_err(
                    at,
                    format!("qcow2 L1 entry {i}"),
                    format!("an L2 table cluster inside the {flen}-byte file, apart from the header, the L1 and refcount tables and other L2 tables"),
                    format!("{e:#018X}"),
                ));
            }
        }
        let mut raw = vec![0u8; rt_bytes as usize];
        file.read(h.refcount_table_offset, &mut raw, "qcow2 refcount table")?;
        let rt: Vec<u64> = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
        for (i, &e) in rt.iter().enumerate() {
            if e == 0 {
                continue;
            }
            let at = h.refcount_table_offset + 8 * i as u64;
            if e % cs != 0
                || e.checked_add(cs).is_none_or(|end| end > flen)
                || fixed_meta(e)
                || !metadata.insert(e)
            {
                return Err(file.format_err(
                    at,
                    format!("qcow2 refcount table entry {i}"),
                    format!("a refcount block cluster inside the {flen}-byte file, apart from the header, the L1 and refcount tables and L2 tables"),
                    format!("{e:#018X}"),
                ));
            }
        }
        if access == Access::ReadWrite && h.nb_snapshots != 0 {
            return Err(file.format_err(
                60,
                "qcow2 internal snapshots",
                "none, for writing (images with internal snapshots are only read)",
                format!("{} snapshots", h.nb_snapshots),
            ));
        }
        let mut disk = Qcow2Disk {
            version: h.version,
            cluster_bits: cb,
            size: h.size,
            refcount_order: h.refcount_order,
            autoclear: h.autoclear,
            nb_snapshots: h.nb_snapshots,
            l1_offset: h.l1_table_offset,
            l1,
            l1_dirty: BTreeSet::new(),
            l2_cache: RefCell::new(HashMap::new()),
            l2_dirty: BTreeMap::new(),
            rt_offset: h.refcount_table_offset,
            rt_clusters,
            rt,
            rt_dirty: BTreeSet::new(),
            rt_moved: false,
            rb_cache: HashMap::new(),
            rb_dirty: BTreeSet::new(),
            pending_free: Vec::new(),
            metadata,
            next_free: flen.div_ceil(cs) * cs,
            inflated: RefCell::new(None),
            backing: None,
            backing_path: None,
            backing_format: None,
            autoclear_done: false,
            write_budget: None,
            crashed: false,
            file,
        };
        if let Some(name) = &h.backing_file {
            disk.open_backing(name, h.backing_format.as_deref(), depth)?;
        }
        Ok(disk)
    }

    /// Resolves, checks and opens the backing file read-only.
    fn open_backing(&mut self, name: &[u8], format: Option<&str>, depth: u32) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let at = 8;
        if depth + 1 >= MAX_CHAIN {
            return Err(self.file.format_err(
                at,
                "qcow2 backing chain",
                format!("at most {MAX_CHAIN} images"),
                "a longer chain (or a loop)",
            ));
        }
        let rel = Path::new(std::ffi::OsStr::from_bytes(name));
        if name.contains(&0) || (rel.is_relative() && name.contains(&b':')) {
            // qemu protocol prefixes (nbd:, http:...) and NULs are not files.
            return Err(self.file.format_err(
                at,
                "qcow2 backing file name",
                "a path to a local file",
                format!("{:?}", String::from_utf8_lossy(name)),
            ));
        }
        let path = if rel.is_absolute() {
            rel.to_path_buf()
        } else {
            self.file.path.parent().unwrap_or(Path::new(".")).join(rel)
        };
        let meta = std::fs::metadata(&path).map_err(|e| {
            self.file.format_err(
                at,
                "qcow2 backing file",
                "an existing regular file",
                format!("{}: {e}", path.display()),
            )
        })?;
        if !meta.is_file() {
            return Err(self.file.format_err(
                at,
                "qcow2 backing file",
                "a regular file (not a device, FIFO or directory)",
                format!("{} of type {:?}", path.display(), meta.file_type()),
            ));
        }
        let detected = super::detect_format(&path)?;
        if let Some(f) = format {
            if f != qemu_format_name(detected) {
                return Err(self.file.format_err(
                    at,
                    "qcow2 backing format extension",
                    format!(
                        "the format of {} ({})",
                        path.display(),
                        qemu_format_name(detected)
                    ),
                    format!("\"{f}\""),
                ));
            }
        }
        let dev: Box<dyn BlockDevice> = if detected == ImageFormat::Qcow2 {
            Box::new(Qcow2Disk::open_depth(&path, Access::ReadOnly, depth + 1)?)
        } else {
            super::open_image(&path, Access::ReadOnly)?
        };
        self.backing = Some(dev);
        self.backing_format = Some(detected);
        self.backing_path = Some(path);
        Ok(())
    }

    fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// The L2 table offset and entry index of a guest cluster (`None` when
    /// no L2 table covers it).
    fn l2_slot(&self, gc: u64) -> Result<Option<(u64, usize)>> {
        let l1i = gc / self.l2_entries();
        let Some(&e) = usize::try_from(l1i).ok().and_then(|i| self.l1.get(i)) else {
            return Ok(None);
        };
        let off = e & OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        Ok(Some((off, (gc % self.l2_entries()) as usize)))
    }

    /// Reads an L2 entry (from the pending changes, the cache or the file).
    fn l2_get(&self, table: u64, idx: usize) -> Result<u64> {
        if let Some(t) = self.l2_dirty.get(&table) {
            return Ok(t.get(idx).copied().unwrap_or(0));
        }
        if let Some(t) = self.l2_cache.borrow().get(&table) {
            return Ok(t.get(idx).copied().unwrap_or(0));
        }
        let t = self.read_l2(table)?;
        let v = t.get(idx).copied().unwrap_or(0);
        let mut cache = self.l2_cache.borrow_mut();
        if (cache.len() as u64 + 1) * self.cluster_size() > L2_CACHE_BYTES {
            cache.clear();
        }
        cache.insert(table, t);
        Ok(v)
    }

    fn read_l2(&self, table: u64) -> Result<Vec<u64>> {
        let mut raw = vec![0u8; self.cluster_size() as usize];
        self.file.read(table, &mut raw, "qcow2 L2 table")?;
        Ok(raw.chunks_exact(8).map(|c| be64(c, 0)).collect())
    }

    /// Whether a host offset lies in the header, the L1 or refcount table,
    /// an L2 table or a refcount block.
    fn is_metadata(&self, off: u64) -> bool {
        let cs = self.cluster_size();
        let cl = off - off % cs;
        let l1_end = self.l1_offset + (self.l1.len() as u64 * 8).div_ceil(cs) * cs;
        let rt_end = self.rt_offset + self.rt_clusters * cs;
        off < cs
            || (off >= self.l1_offset && off < l1_end)
            || (off >= self.rt_offset && off < rt_end)
            || self.metadata.contains(&cl)
    }

    /// Maps a guest cluster, checking the host offset it names.
    fn mapping(&self, gc: u64) -> Result<Mapping> {
        let Some((table, idx)) = self.l2_slot(gc)? else {
            return Ok(Mapping::Unallocated);
        };
        let e = self.l2_get(table, idx)?;
        let at = table + 8 * idx as u64;
        let bad = |expected: &str| {
            self.file.format_err(
                at,
                format!("qcow2 L2 entry for guest cluster {gc}"),
                expected.to_string(),
                format!("{e:#018X}"),
            )
        };
        let cs = self.cluster_size();
        let end = self.next_free;
        if e & COMPRESSED != 0 {
            let x = 62 - (self.cluster_bits - 8);
            let host = e & ((1u64 << x) - 1);
            let sectors = (e & !(COPIED | COMPRESSED)) >> x;
            let stop = (host & !511) + (sectors + 1) * 512;
            if e & COPIED != 0
                || host >> 56 != 0
                || host >= end
                || self.is_metadata(host)
                || self.is_metadata(stop - 1)
            {
                return Err(bad(
                    "compressed data inside the file, apart from the metadata, without the copied flag",
                ));
            }
            return Ok(Mapping::Compressed {
                host,
                len: stop - host,
            });
        }
        if e & L2_RESERVED != 0 {
            return Err(bad("no reserved bits set"));
        }
        let host = e & OFFSET_MASK;
        let copied = e & COPIED != 0;
        if host == 0 {
            return Ok(if e & ZERO != 0 {
                Mapping::ZeroPlain
            } else if copied {
                return Err(bad("an allocated cluster with the copied flag"));
            } else {
                Mapping::Unallocated
            });
        }
        if host % cs != 0 || host >= end || self.is_metadata(host) {
            return Err(bad(
                "a cluster aligned data cluster inside the file, apart from the metadata",
            ));
        }
        Ok(if e & ZERO != 0 {
            Mapping::ZeroAlloc { host, copied }
        } else {
            Mapping::Normal { host, copied }
        })
    }

    /// Reads from the backing file (zeros past its end or without one).
    fn read_backing(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let Some(b) = &self.backing else {
            buf.fill(0);
            return Ok(());
        };
        let avail = b.len().saturating_sub(offset).min(buf.len() as u64) as usize;
        if avail > 0 {
            b.read_at(offset, &mut buf[..avail])?;
        }
        buf[avail..].fill(0);
        Ok(())
    }

    /// Reads host bytes of a data cluster; bytes past the end of the file
    /// read as zeros.
    fn read_host(&self, host: u64, buf: &mut [u8]) -> Result<()> {
        let flen = self.file.len()?;
        let avail = flen.saturating_sub(host).min(buf.len() as u64) as usize;
        if avail > 0 {
            self.file
                .read(host, &mut buf[..avail], "qcow2 data cluster")?;
        }
        buf[avail..].fill(0);
        Ok(())
    }

    /// Decompresses a compressed cluster into `out` (one cluster).
    fn inflate(&self, gc: u64, host: u64, len: u64, out: &mut [u8]) -> Result<()> {
        use miniz_oxide::inflate::TINFLStatus;
        use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};
        let flen = self.file.len()?;
        let n = len.min(flen.saturating_sub(host));
        let mut input = vec![0u8; n as usize];
        self.file
            .read(host, &mut input, "qcow2 compressed cluster")?;
        let mut d = Box::<DecompressorOxide>::default();
        let (status, _, written) = decompress(
            &mut d,
            &input,
            out,
            0,
            inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
        );
        let ok = matches!(status, TINFLStatus::Done | TINFLStatus::HasMoreOutput);
        if !ok || written != out.len() {
            return Err(self.file.format_err(
                host,
                format!("qcow2 compressed data of guest cluster {gc}"),
                format!("a deflate stream of {} bytes", out.len()),
                format!("{status:?} after {written} bytes"),
            ));
        }
        Ok(())
    }

    /// Reads `buf` from inside guest cluster `gc`, at `within`.
    fn read_in_cluster(&self, gc: u64, within: u64, buf: &mut [u8]) -> Result<()> {
        match self.mapping(gc)? {
            Mapping::Unallocated => self.read_backing((gc << self.cluster_bits) + within, buf),
            Mapping::ZeroPlain | Mapping::ZeroAlloc { .. } => {
                buf.fill(0);
                Ok(())
            }
            Mapping::Normal { host, .. } => self.read_host(host + within, buf),
            Mapping::Compressed { host, len } => {
                let key = (host, len);
                let mut cache = self.inflated.borrow_mut();
                if cache.as_ref().is_none_or(|(k, _)| *k != key) {
                    let mut out = vec![0u8; self.cluster_size() as usize];
                    self.inflate(gc, host, len, &mut out)?;
                    *cache = Some((key, out));
                }
                let data = cache.as_ref().map(|(_, d)| d.as_slice()).unwrap_or(&[]);
                let s = within as usize;
                match data.get(s..s + buf.len()) {
                    Some(src) => {
                        buf.copy_from_slice(src);
                        Ok(())
                    }
                    None => Err(self.file.format_err(
                        host,
                        "qcow2 compressed cluster",
                        "a full cluster",
                        "less",
                    )),
                }
            }
        }
    }

    /// Writes to the file, counting writes for the crash test hook.
    fn wr(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        self.spend()?;
        self.file.write(offset, buf)
    }

    fn spend(&mut self) -> Result<()> {
        if let Some(n) = self.write_budget {
            if n == 0 {
                self.crashed = true;
            } else {
                self.write_budget = Some(n - 1);
            }
        }
        if self.crashed {
            return Err(ResealError::InvalidInput {
                what: self.file.path.display().to_string(),
                message: "simulated crash: no more writes".into(),
            });
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if self.crashed {
            return Err(ResealError::InvalidInput {
                what: self.file.path.display().to_string(),
                message: "simulated crash: no more writes".into(),
            });
        }
        self.file.sync()
    }

    /// Before the first change: version 3 autoclear bits name extensions
    /// (such as dirty bitmaps) that become stale once the data changes, so
    /// they are cleared first, as qemu does.
    fn begin_change(&mut self) -> Result<()> {
        if self.autoclear_done {
            return Ok(());
        }
        if self.version == 3 && self.autoclear != 0 {
            self.wr(88, &0u64.to_be_bytes())?;
            self.sync()?;
            self.autoclear = 0;
        }
        self.autoclear_done = true;
        Ok(())
    }

    /// Reserves `n` contiguous clusters at the end and counts one
    /// reference to each (in memory until the next commit).
    fn alloc(&mut self, n: u64) -> Result<u64> {
        let cs = self.cluster_size();
        let start = self.next_free;
        let end = n
            .checked_mul(cs)
            .and_then(|b| start.checked_add(b))
            .filter(|&e| e <= OFFSET_MASK)
            .ok_or_else(|| {
                self.file.format_err(
                    start,
                    "qcow2 new cluster",
                    "a host offset below 2^56",
                    "past it",
                )
            })?;
        self.next_free = end;
        for i in 0..n {
            self.rc_update(start + i * cs, true)?;
        }
        Ok(start)
    }

    /// The refcount block covering host cluster `host`, made if missing.
    fn refblock_for(&mut self, host: u64) -> Result<(u64, u64)> {
        let epb = (self.cluster_size() * 8) >> self.refcount_order;
        let c = host >> self.cluster_bits;
        let ti = c / epb;
        if ti >= self.rt.len() as u64 {
            self.grow_reftable(ti)?;
        }
        let ti = ti as usize;
        let mut block = self.rt.get(ti).copied().unwrap_or(0);
        if block == 0 {
            // The new block sits at the end; it usually covers itself.
            block = self.next_free;
            self.next_free += self.cluster_size();
            self.rb_cache
                .insert(block, vec![0u8; self.cluster_size() as usize]);
            self.metadata.insert(block);
            if let Some(e) = self.rt.get_mut(ti) {
                *e = block;
            }
            self.rt_dirty.insert(ti);
            self.rb_dirty.insert(block);
            self.rc_update(block, true)?;
        }
        Ok((block, c % epb))
    }

    /// In memory: gives a newly allocated host cluster (past everything
    /// referenced) the refcount 1, whatever a damaged block said, or
    /// (`allocated` false) removes one reference to a host cluster.
    fn rc_update(&mut self, host: u64, allocated: bool) -> Result<()> {
        let (block, idx) = self.refblock_for(host)?;
        if !self.rb_cache.contains_key(&block) {
            let mut raw = vec![0u8; self.cluster_size() as usize];
            self.file.read(block, &mut raw, "qcow2 refcount block")?;
            self.rb_cache.insert(block, raw);
        }
        let order = self.refcount_order;
        let b = self.rb_cache.get_mut(&block);
        let old = b.as_ref().and_then(|b| refcount::get(b, idx, order));
        let new = match (old, allocated) {
            (Some(_), true) => Some(1),
            (Some(v), false) => v.checked_sub(1),
            (None, _) => None,
        };
        let done = match (b, new) {
            (Some(b), Some(v)) => refcount::set(b, idx, order, v),
            _ => None,
        };
        if done.is_none() {
            return Err(self.file.format_err(
                block,
                format!("qcow2 refcount of host cluster at {host}"),
                if allocated {
                    "an entry inside the refcount block"
                } else {
                    "a refcount above zero"
                },
                format!("{old:?}"),
            ));
        }
        self.rb_dirty.insert(block);
        Ok(())
    }

    /// Replaces the refcount table by a larger one at the end of the file
    /// that has an entry `ti` and covers its own clusters.
    fn grow_reftable(&mut self, ti: u64) -> Result<()> {
        let cs = self.cluster_size();
        let epb = (cs * 8) >> self.refcount_order;
        let mut entries = (ti + 1).max(self.rt.len() as u64 * 2);
        let (start, clusters) = loop {
            let clusters = (entries * 8).div_ceil(cs);
            let start = self.next_free;
            let last = (start >> self.cluster_bits) + clusters + 2;
            if last / epb < entries {
                break (start, clusters);
            }
            entries = last / epb + 1;
        };
        if clusters * cs > MAX_REFTABLE_BYTES {
            return Err(self.file.format_err(
                48,
                "qcow2 refcount table",
                format!("at most {MAX_REFTABLE_BYTES} bytes"),
                format!("{} bytes needed", clusters * cs),
            ));
        }
        let old = (self.rt_offset, self.rt_clusters);
        self.next_free = start + clusters * cs;
        self.rt.resize((clusters * cs / 8) as usize, 0);
        self.rt_offset = start;
        self.rt_clusters = clusters;
        self.rt_moved = true;
        for i in 0..clusters {
            self.rc_update(start + i * cs, true)?;
        }
        for i in 0..old.1 {
            self.pending_free.push(old.0 + i * cs);
        }
        Ok(())
    }

    /// The L2 table for guest cluster `gc`, made if missing, loaded into
    /// the pending changes; returns its offset and the entry index.
    fn l2_for_write(&mut self, gc: u64) -> Result<(u64, usize)> {
        let l1i = (gc / self.l2_entries()) as usize;
        let Some(&e) = self.l1.get(l1i) else {
            return Err(self.file.format_err(
                self.l1_offset,
                "qcow2 L1 table",
                format!("an entry for guest cluster {gc}"),
                format!("{} entries", self.l1.len()),
            ));
        };
        let idx = (gc % self.l2_entries()) as usize;
        let table = e & OFFSET_MASK;
        if table == 0 {
            let t = self.alloc(1)?;
            self.metadata.insert(t);
            self.l2_dirty
                .insert(t, vec![0u64; self.l2_entries() as usize]);
            if let Some(slot) = self.l1.get_mut(l1i) {
                *slot = t | COPIED;
            }
            self.l1_dirty.insert(l1i);
            return Ok((t, idx));
        }
        if e & COPIED == 0 {
            return Err(self.file.format_err(
                self.l1_offset + 8 * l1i as u64,
                format!("qcow2 L1 entry {l1i}"),
                "an L2 table used only by the active image (copied flag)",
                format!("{e:#018X}"),
            ));
        }
        if !self.l2_dirty.contains_key(&table) {
            let t = match self.l2_cache.borrow_mut().remove(&table) {
                Some(t) => t,
                None => self.read_l2(table)?,
            };
            self.l2_dirty.insert(table, t);
        }
        Ok((table, idx))
    }

    fn set_l2(&mut self, table: u64, idx: usize, v: u64) {
        if let Some(e) = self.l2_dirty.get_mut(&table).and_then(|t| t.get_mut(idx)) {
            *e = v;
        }
    }

    /// Writes `data` into guest cluster `gc` at `within`.
    fn write_in_cluster(&mut self, gc: u64, within: u64, data: &[u8]) -> Result<()> {
        let cs = self.cluster_size();
        let mapping = self.mapping(gc)?;
        let whole = |this: &Self, data: &[u8]| -> Result<Vec<u8>> {
            let mut full = vec![0u8; cs as usize];
            if (data.len() as u64) < cs {
                this.read_in_cluster(gc, 0, &mut full)?;
            }
            let s = within as usize;
            if let Some(dst) = full.get_mut(s..s + data.len()) {
                dst.copy_from_slice(data);
            }
            Ok(full)
        };
        match mapping {
            Mapping::Normal { host, copied: true } => self.wr(host + within, data),
            Mapping::ZeroAlloc { host, copied: true } => {
                let full = whole(self, data)?;
                self.wr(host, &full)?;
                let (table, idx) = self.l2_for_write(gc)?;
                self.set_l2(table, idx, host | COPIED);
                Ok(())
            }
            Mapping::Normal { .. } | Mapping::ZeroAlloc { .. } => Err(self.file.format_err(
                0,
                format!("qcow2 guest cluster {gc}"),
                "a cluster used only by the active image (copied flag)",
                "a shared cluster",
            )),
            Mapping::Unallocated | Mapping::ZeroPlain | Mapping::Compressed { .. } => {
                let full = whole(self, data)?;
                let (table, idx) = self.l2_for_write(gc)?;
                let host = self.alloc(1)?;
                self.wr(host, &full)?;
                self.set_l2(table, idx, host | COPIED);
                if let Mapping::Compressed { host: c, len } = mapping {
                    let first = c >> self.cluster_bits;
                    let last = (c + len - 1) >> self.cluster_bits;
                    for k in first..=last {
                        self.pending_free.push(k << self.cluster_bits);
                    }
                }
                Ok(())
            }
        }
    }

    fn pending_bytes(&self) -> u64 {
        (self.l2_dirty.len() + self.rb_dirty.len()) as u64 * self.cluster_size()
            + self.pending_free.len() as u64 * 8
    }

    fn has_pending(&self) -> bool {
        !self.l2_dirty.is_empty()
            || !self.rb_dirty.is_empty()
            || !self.l1_dirty.is_empty()
            || !self.rt_dirty.is_empty()
            || self.rt_moved
            || !self.pending_free.is_empty()
    }

    /// Writes the refcount blocks in `rb_dirty`.
    fn write_refblocks(&mut self) -> Result<()> {
        let dirty = std::mem::take(&mut self.rb_dirty);
        for b in dirty {
            if let Some(data) = self.rb_cache.get(&b).cloned() {
                self.wr(b, &data)?;
            }
        }
        Ok(())
    }

    /// Makes the pending metadata durable (see the module doc).
    fn commit(&mut self) -> Result<()> {
        if !self.has_pending() {
            return Ok(());
        }
        let cs = self.cluster_size();
        // 1. Data; every allocated cluster inside the file.
        if self.file.len()? < self.next_free {
            self.spend()?;
            self.file.set_len(self.next_free)?;
        }
        self.sync()?;
        // 2. Increased refcounts, then what names new blocks.
        self.write_refblocks()?;
        self.sync()?;
        if self.rt_moved {
            let mut raw = Vec::with_capacity(self.rt.len() * 8);
            for e in &self.rt {
                raw.extend_from_slice(&e.to_be_bytes());
            }
            let at = self.rt_offset;
            self.wr(at, &raw)?;
            self.sync()?;
            let mut h = [0u8; 12];
            h[..8].copy_from_slice(&self.rt_offset.to_be_bytes());
            h[8..].copy_from_slice(&(self.rt_clusters as u32).to_be_bytes());
            self.wr(48, &h)?;
            self.sync()?;
            self.rt_moved = false;
            self.rt_dirty.clear();
        } else if !self.rt_dirty.is_empty() {
            let dirty = std::mem::take(&mut self.rt_dirty);
            for i in dirty {
                let v = self.rt.get(i).copied().unwrap_or(0);
                self.wr(self.rt_offset + 8 * i as u64, &v.to_be_bytes())?;
            }
            self.sync()?;
        }
        // 3. L2 tables.
        let tables = std::mem::take(&mut self.l2_dirty);
        for (&off, t) in &tables {
            let mut raw = Vec::with_capacity(cs as usize);
            for e in t {
                raw.extend_from_slice(&e.to_be_bytes());
            }
            self.wr(off, &raw)?;
        }
        self.sync()?;
        {
            let mut cache = self.l2_cache.borrow_mut();
            for (off, t) in tables {
                if (cache.len() as u64 + 1) * cs > L2_CACHE_BYTES {
                    cache.clear();
                }
                cache.insert(off, t);
            }
        }
        // 4. L1 entries.
        if !self.l1_dirty.is_empty() {
            let dirty = std::mem::take(&mut self.l1_dirty);
            for i in dirty {
                let v = self.l1.get(i).copied().unwrap_or(0);
                self.wr(self.l1_offset + 8 * i as u64, &v.to_be_bytes())?;
            }
            self.sync()?;
        }
        // 5. Decreased refcounts.
        if !self.pending_free.is_empty() {
            let freed = std::mem::take(&mut self.pending_free);
            for host in freed {
                self.rc_update(host, false)?;
            }
            self.write_refblocks()?;
            self.sync()?;
        }
        // Clean refcount blocks need not stay in memory.
        if self.rb_cache.len() as u64 * cs > MAX_PENDING_BYTES {
            self.rb_cache.clear();
        }
        Ok(())
    }
}

impl BlockDevice for Qcow2Disk {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.file.path, self.size, offset, buf.len())?;
        let cs = self.cluster_size();
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = offset + pos as u64;
            let within = at % cs;
            let n = ((cs - within) as usize).min(buf.len() - pos);
            self.read_in_cluster(at >> self.cluster_bits, within, &mut buf[pos..pos + n])?;
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
        if buf.is_empty() {
            return Ok(());
        }
        self.begin_change()?;
        let cs = self.cluster_size();
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = offset + pos as u64;
            let within = at % cs;
            let n = ((cs - within) as usize).min(buf.len() - pos);
            self.write_in_cluster(at >> self.cluster_bits, within, &buf[pos..pos + n])?;
            pos += n;
            if self.pending_bytes() > MAX_PENDING_BYTES {
                self.commit()?;
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.commit()?;
        self.sync()
    }
}

impl Drop for Qcow2Disk {
    fn drop(&mut self) {
        if self.file.writable && !self.crashed && self.has_pending() {
            // Nothing can report an error from here; callers that need to
            // know call flush() first.
            let _ = self.commit();
        }
    }
}
