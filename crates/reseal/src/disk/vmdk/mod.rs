//! VMware virtual disks (VMDK), from VMware's "Virtual Disk Format 5.0":
//! a text descriptor (embedded in a monolithicSparse or streamOptimized
//! file, or a file of its own for monolithicFlat, twoGbMaxExtentSparse and
//! twoGbMaxExtentFlat) listing extents, each a flat file, a hosted sparse
//! file (`KDMV` header, grain directory and tables) or zeros.
//!
//! No crate reads and writes VMDK with the crash ordering and the
//! hostile-input checks this block layer needs, so the format is handled
//! here; only the deflate decoder of compressed grains comes from a crate.
//!
//! * Extent file names are relative to the descriptor's directory; absolute
//!   names, names with `..`, names resolving outside that directory (through
//!   a link) and non-regular files are refused.
//! * A child (`parentCID` other than `ffffffff`) reads unwritten grains from
//!   its parent (`parentFileNameHint`), a VMDK opened read-only whose `CID`
//!   must equal the child's `parentCID`; a grain the child writes first is
//!   filled from the parent.
//! * Flat extents are written in place. In sparse extents, new grains are
//!   appended and flushed before their grain table entries are written
//!   (primary and redundant tables alike), between setting and clearing the
//!   header's unclean-shutdown flag. streamOptimized (compressed) extents
//!   are read-only.
//! * A sparse extent whose unclean-shutdown flag is set is refused.
//! * Before the first change, the descriptor's `CID` is replaced in place
//!   by a new random one (flushed), as VMware and qemu do, so that children
//!   made from the old contents no longer match.

mod descriptor;
mod sparse;

use super::{Access, BlockDevice, ImageFile, check_range, format_err, io_err};
use crate::{ResealError, Result};
use descriptor::{Descriptor, ExtentAccess, ExtentType};
use sparse::{Grain, MAX_SECTORS, SECTOR, SparseExtent};
use std::path::{Component, Path, PathBuf};

/// Largest separate descriptor file read (real ones are under 1 KiB).
const MAX_DESCRIPTOR: u64 = 1 << 20;
const MAX_CHAIN: u32 = 32;

/// The text a descriptor starts with.
pub(crate) const DESCRIPTOR_SIGNATURE: &[u8] = b"# Disk DescriptorFile";

enum Store {
    Flat { file: ImageFile, offset: u64 },
    Sparse(Box<SparseExtent>),
    Zero,
}

struct Extent {
    /// Start in the disk, in bytes.
    start: u64,
    /// Length in the disk, in bytes.
    len: u64,
    access: ExtentAccess,
    store: Store,
    /// The file, for messages.
    name: PathBuf,
}

/// An open VMDK: its descriptor, extents and parent chain.
pub struct VmdkDisk {
    path: PathBuf,
    size: u64,
    extents: Vec<Extent>,
    writable: bool,
    cid: Option<u32>,
    /// Where the eight hex digits of `CID=` are: the file (`None`: the
    /// first extent's sparse file) and the byte offset.
    cid_slot: Option<(Option<PathBuf>, u64)>,
    /// Whether this open already gave the disk a new CID.
    cid_updated: bool,
    create_type: Option<String>,
    parent: Option<Box<VmdkDisk>>,
    parent_path: Option<PathBuf>,
}

impl std::fmt::Debug for VmdkDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmdkDisk")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("create_type", &self.create_type)
            .field("extents", &self.extents.len())
            .field("parent", &self.parent_path)
            .finish()
    }
}

fn read_only_err(path: &Path, why: &str) -> ResealError {
    ResealError::InvalidInput {
        what: path.display().to_string(),
        message: why.into(),
    }
}

impl VmdkDisk {
    /// Opens a VMDK (its descriptor file, or a sparse file with an embedded
    /// descriptor); a parent is opened read-only.
    pub fn open(path: &Path, access: Access) -> Result<VmdkDisk> {
        Self::open_depth(path, access, 0)
    }

    /// The descriptor's `createType` (none for a bare sparse extent file).
    pub fn create_type(&self) -> Option<&str> {
        self.create_type.as_deref()
    }

    /// The descriptor's content ID.
    pub fn cid(&self) -> Option<u32> {
        self.cid
    }

    /// The resolved parent of a child disk.
    pub fn parent_path(&self) -> Option<&Path> {
        self.parent_path.as_deref()
    }

    fn open_depth(path: &Path, access: Access, depth: u32) -> Result<VmdkDisk> {
        let probe = ImageFile::open(path, Access::ReadOnly)?;
        let flen = probe.len()?;
        let mut magic = [0u8; 4];
        if flen >= 4 {
            probe.read(0, &mut magic, "VMDK signature")?;
        }
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let (desc, extents, cid_slot) = if &magic == b"KDMV" {
            drop(probe);
            let sparse = SparseExtent::open(path, access)?;
            let desc = if sparse.header.desc_offset != 0 {
                let len = sparse.header.desc_size.saturating_mul(SECTOR);
                if len > MAX_DESCRIPTOR {
                    return Err(sparse.file.format_err(
                        36,
                        "VMDK embedded descriptor size",
                        format!("at most {MAX_DESCRIPTOR} bytes"),
                        format!("{} sectors", sparse.header.desc_size),
                    ));
                }
                let at = sparse.header.desc_offset * SECTOR;
                let mut text = vec![0u8; len as usize];
                sparse
                    .file
                    .read(at, &mut text, "VMDK embedded descriptor")?;
                descriptor::parse(path, at, &text)?
            } else {
                Descriptor::default()
            };
            let desc_at = sparse.header.desc_offset * SECTOR;
            let cid_slot = desc.cid_at.map(|at| (None, desc_at + at));
            let len = sparse.capacity_bytes();
            let ext = Extent {
                start: 0,
                len,
                access: ExtentAccess::ReadWrite,
                store: Store::Sparse(Box::new(sparse)),
                name: path.to_path_buf(),
            };
            (desc, vec![ext], cid_slot)
        } else {
            if flen > MAX_DESCRIPTOR {
                return Err(probe.format_err(
                    0,
                    "VMDK descriptor file",
                    format!("a text file of at most {MAX_DESCRIPTOR} bytes"),
                    format!("{flen} bytes"),
                ));
            }
            let mut text = vec![0u8; flen as usize];
            probe.read(0, &mut text, "VMDK descriptor")?;
            let start = text.iter().position(|b| !b.is_ascii_whitespace());
            if !start.is_some_and(|s| text[s..].starts_with(DESCRIPTOR_SIGNATURE)) {
                return Err(probe.format_err(
                    0,
                    "VMDK descriptor",
                    "a text file starting with \"# Disk DescriptorFile\" or a KDMV sparse file",
                    format!("{:02X?}", &text[..text.len().min(8)]),
                ));
            }
            let desc = descriptor::parse(path, 0, &text)?;
            let extents = open_extents(path, &dir, &desc, access)?;
            let cid_slot = desc.cid_at.map(|at| (Some(path.to_path_buf()), at));
            (desc, extents, cid_slot)
        };
        let mut size = 0u64;
        for e in &extents {
            size = size.saturating_add(e.len);
        }
        if size > MAX_SECTORS * SECTOR {
            return Err(format_err(
                path,
                0,
                "VMDK disk size",
                format!("at most {} bytes", MAX_SECTORS * SECTOR),
                format!("{size} bytes"),
            ));
        }
        let mut disk = VmdkDisk {
            path: path.to_path_buf(),
            size,
            extents,
            writable: access == Access::ReadWrite,
            cid: desc.cid,
            cid_slot,
            cid_updated: false,
            create_type: desc.create_type.clone(),
            parent: None,
            parent_path: None,
        };
        if let Some(parent_cid) = desc.parent_cid {
            if depth >= MAX_CHAIN {
                return Err(format_err(
                    path,
                    desc.parent_cid_at,
                    "VMDK parent chain",
                    format!("at most {MAX_CHAIN} levels"),
                    "a longer chain (or a loop)",
                ));
            }
            let parent_path = locate_parent(path, &dir, &desc)?;
            if super::detect_format(&parent_path)? != super::ImageFormat::Vmdk {
                return Err(format_err(
                    path,
                    desc.parent_cid_at,
                    "VMDK parent",
                    "a VMDK parent disk",
                    format!("{} is not a VMDK", parent_path.display()),
                ));
            }
            let parent = VmdkDisk::open_depth(&parent_path, Access::ReadOnly, depth + 1)?;
            if parent.cid != Some(parent_cid) {
                return Err(format_err(
                    path,
                    desc.parent_cid_at,
                    "VMDK parentCID",
                    format!(
                        "the CID of {} ({}); the parent changed after this child was made",
                        parent_path.display(),
                        parent.cid.map_or("none".into(), |c| format!("{c:08x}"))
                    ),
                    format!("{parent_cid:08x}"),
                ));
            }
            disk.parent = Some(Box::new(parent));
            disk.parent_path = Some(parent_path);
        }
        Ok(disk)
    }

    /// Index of the extent holding disk byte `at` (`at` < size).
    fn extent_at(&self, at: u64) -> usize {
        self.extents.partition_point(|e| e.start + e.len <= at)
    }

    /// Gives the disk a new random CID before its first change.
    fn update_cid(&mut self) -> Result<()> {
        if self.cid_updated {
            return Ok(());
        }
        if let Some((file, at)) = &self.cid_slot {
            let mut r = [0u8; 4];
            getrandom::fill(&mut r).map_err(|e| ResealError::InvalidInput {
                what: "VMDK content ID".into(),
                message: format!("the system random source failed: {e}"),
            })?;
            let cid = u32::from_le_bytes(r);
            let text = format!("{cid:08x}");
            let opened;
            let file = match (file, self.extents.first()) {
                (Some(p), _) => {
                    opened = ImageFile::open(p, Access::ReadWrite)?;
                    Some(&opened)
                }
                (
                    None,
                    Some(Extent {
                        store: Store::Sparse(s),
                        ..
                    }),
                ) => Some(&s.file),
                _ => None,
            };
            // Only where the old CID still is (the descriptor is re-read
            // from the file, not trusted from the parse).
            let mut old = [0u8; 8];
            let here = file.filter(|f| {
                f.read(*at, &mut old, "VMDK descriptor CID").is_ok()
                    && std::str::from_utf8(&old)
                        .ok()
                        .and_then(|t| u32::from_str_radix(t, 16).ok())
                        == self.cid
            });
            if let Some(f) = here {
                f.write(*at, text.as_bytes())?;
                f.sync()?;
                self.cid = Some(cid);
            }
        }
        self.cid_updated = true;
        Ok(())
    }

    fn read_parent(parent: Option<&VmdkDisk>, offset: u64, buf: &mut [u8]) -> Result<()> {
        match parent {
            None => {
                buf.fill(0);
                Ok(())
            }
            Some(p) => {
                let avail = p.size.saturating_sub(offset).min(buf.len() as u64) as usize;
                let (head, tail) = buf.split_at_mut(avail);
                if !head.is_empty() {
                    p.read_at(offset, head)?;
                }
                tail.fill(0);
                Ok(())
            }
        }
    }
}

/// Opens the extents a separate descriptor lists.
fn open_extents(path: &Path, dir: &Path, desc: &Descriptor, access: Access) -> Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for line in &desc.extents {
        let len = line.sectors.saturating_mul(SECTOR);
        if line.sectors > MAX_SECTORS || start.saturating_add(len) > MAX_SECTORS * SECTOR {
            return Err(format_err(
                path,
                line.at,
                "VMDK extent size",
                format!("a disk of at most {MAX_SECTORS} sectors"),
                format!("{} sectors", line.sectors),
            ));
        }
        if line.sectors == 0 {
            continue;
        }
        let ext_access = if access == Access::ReadWrite && line.access == ExtentAccess::ReadWrite {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        };
        let (store, name) = match &line.kind {
            ExtentType::Zero => (Store::Zero, path.to_path_buf()),
            ExtentType::Other(t) => {
                return Err(format_err(
                    path,
                    line.at,
                    "VMDK extent type",
                    "FLAT, SPARSE or ZERO",
                    t.clone(),
                ));
            }
            kind => {
                let file = resolve_extent(path, dir, line.file.as_deref().unwrap_or(""), line.at)?;
                if *kind == ExtentType::Sparse {
                    let s = SparseExtent::open(&file, ext_access)?;
                    if len > s.capacity_bytes() {
                        return Err(format_err(
                            &file,
                            12,
                            "VMDK sparse extent capacity",
                            format!("at least the descriptor's {} sectors", line.sectors),
                            format!("{} sectors", s.header.capacity),
                        ));
                    }
                    (Store::Sparse(Box::new(s)), file)
                } else {
                    let f = ImageFile::open(&file, ext_access)?;
                    let flen = f.len()?;
                    let offset = line
                        .offset
                        .checked_mul(SECTOR)
                        .filter(|o| o.checked_add(len).is_some_and(|end| end <= flen));
                    let Some(offset) = offset else {
                        return Err(format_err(
                            path,
                            line.at,
                            "VMDK flat extent",
                            format!(
                                "{} sectors from sector {} inside {} ({flen} bytes)",
                                line.sectors,
                                line.offset,
                                file.display()
                            ),
                            "a range past its end",
                        ));
                    };
                    (Store::Flat { file: f, offset }, file)
                }
            }
        };
        out.push(Extent {
            start,
            len,
            access: line.access,
            store,
            name,
        });
        start += len;
    }
    Ok(out)
}

/// Resolves an extent file name against the descriptor's directory,
/// refusing anything that could reach outside it or is not a regular file.
fn resolve_extent(path: &Path, dir: &Path, name: &str, at: u64) -> Result<PathBuf> {
    let rel = Path::new(name);
    let plain = !name.is_empty()
        && !name.contains('\\')
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain {
        return Err(ResealError::UnsafePath {
            path: name.to_string(),
            reason: format!(
                "{} (descriptor offset {at}): a VMDK extent must be a file name relative to the \
                 descriptor's directory, without \"..\" or a leading \"/\"",
                path.display()
            ),
        });
    }
    let full = dir.join(rel);
    let meta = std::fs::metadata(&full).map_err(|e| io_err(&full, "opening a VMDK extent", e))?;
    if !meta.is_file() {
        return Err(format_err(
            path,
            at,
            "VMDK extent file",
            "a regular file",
            format!("{} is not one", full.display()),
        ));
    }
    let real = full
        .canonicalize()
        .map_err(|e| io_err(&full, "resolving a VMDK extent", e))?;
    let real_dir = dir
        .canonicalize()
        .map_err(|e| io_err(dir, "resolving the VMDK's directory", e))?;
    if path.canonicalize().is_ok_and(|d| d == real) {
        return Err(format_err(
            path,
            at,
            "VMDK extent file",
            "a file other than the descriptor",
            "the descriptor itself",
        ));
    }
    if !real.starts_with(&real_dir) {
        return Err(ResealError::UnsafePath {
            path: name.to_string(),
            reason: format!(
                "{}: the VMDK extent resolves to {}, outside the descriptor's directory",
                path.display(),
                real.display()
            ),
        });
    }
    Ok(full)
}

/// Finds the parent named by `parentFileNameHint`: relative to the child's
/// directory, or an absolute path, or its file name next to the child.
fn locate_parent(path: &Path, dir: &Path, desc: &Descriptor) -> Result<PathBuf> {
    let Some(hint) = desc.parent_hint.as_deref().filter(|h| !h.is_empty()) else {
        return Err(format_err(
            path,
            desc.parent_cid_at,
            "VMDK parentFileNameHint",
            "the parent's file name (the disk has a parentCID)",
            "none",
        ));
    };
    let hint = hint.replace('\\', "/");
    let mut candidates = vec![dir.join(&hint)];
    if let Some(base) = hint.rsplit('/').next().filter(|b| !b.is_empty()) {
        candidates.push(dir.join(base));
    }
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    Err(format_err(
        path,
        desc.parent_cid_at,
        "VMDK parent",
        "an existing parent file",
        format!(
            "none of: {}",
            candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

impl BlockDevice for VmdkDisk {
    fn len(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.path, self.size, offset, buf.len())?;
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = offset + pos as u64;
            let Some(e) = self.extents.get(self.extent_at(at)) else {
                return Err(format_err(
                    &self.path,
                    at,
                    "VMDK extent",
                    "an extent",
                    "none",
                ));
            };
            let rel = at - e.start;
            let n = ((e.len - rel) as usize).min(buf.len() - pos);
            let chunk = &mut buf[pos..pos + n];
            match &e.store {
                _ if e.access == ExtentAccess::NoAccess => {
                    return Err(read_only_err(
                        &e.name,
                        "the VMDK descriptor marks this extent NOACCESS",
                    ));
                }
                Store::Zero => chunk.fill(0),
                Store::Flat { file, offset } => {
                    file.read(offset + rel, chunk, "VMDK flat extent")?
                }
                Store::Sparse(s) => {
                    let gb = s.grain_bytes();
                    let mut done = 0usize;
                    while done < n {
                        let r = rel + done as u64;
                        let in_grain = r % gb;
                        let k = ((gb - in_grain) as usize).min(n - done);
                        let piece = &mut chunk[done..done + k];
                        match s.lookup(r / gb) {
                            Grain::Unallocated => {
                                Self::read_parent(self.parent.as_deref(), at + done as u64, piece)?
                            }
                            Grain::Zero => piece.fill(0),
                            Grain::At(p) => s.read_grain(r / gb, p, in_grain, piece)?,
                        }
                        done += k;
                    }
                }
            }
            pos += n;
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        check_range(&self.path, self.size, offset, buf.len())?;
        if !self.writable {
            return Err(read_only_err(&self.path, "the image was opened read-only"));
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.update_cid()?;
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = offset + pos as u64;
            let idx = self.extent_at(at);
            let parent = self.parent.as_deref();
            let Some(e) = self.extents.get_mut(idx) else {
                return Err(format_err(
                    &self.path,
                    at,
                    "VMDK extent",
                    "an extent",
                    "none",
                ));
            };
            let rel = at - e.start;
            let n = ((e.len - rel) as usize).min(buf.len() - pos);
            let chunk = &buf[pos..pos + n];
            if e.access != ExtentAccess::ReadWrite {
                return Err(read_only_err(
                    &e.name,
                    "the VMDK descriptor marks this extent read-only",
                ));
            }
            match &mut e.store {
                Store::Zero => {
                    return Err(read_only_err(
                        &e.name,
                        "a ZERO extent of a VMDK cannot be written",
                    ));
                }
                Store::Flat { file, offset } => file.write(*offset + rel, chunk)?,
                Store::Sparse(s) => {
                    let gb = s.grain_bytes();
                    let mut done = 0usize;
                    while done < n {
                        let r = rel + done as u64;
                        let g = r / gb;
                        let in_grain = r % gb;
                        let k = ((gb - in_grain) as usize).min(n - done);
                        let piece = &chunk[done..done + k];
                        let state = s.lookup(g);
                        if let Grain::At(p) = state {
                            s.write_in_place(p + in_grain, piece)?;
                        } else {
                            let mut data = vec![0u8; gb as usize];
                            if state == Grain::Unallocated && parent.is_some() {
                                // The part of the grain inside this extent.
                                let grain_rel = g * gb;
                                let valid = (e.len - grain_rel).min(gb) as usize;
                                Self::read_parent(parent, e.start + grain_rel, &mut data[..valid])?;
                            }
                            let i = in_grain as usize;
                            data[i..i + k].copy_from_slice(piece);
                            s.allocate_grain(g, &data)?;
                        }
                        done += k;
                    }
                }
            }
            pos += n;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        for e in &mut self.extents {
            match &mut e.store {
                Store::Sparse(s) => s.commit()?,
                Store::Flat { file, .. } => file.sync()?,
                Store::Zero => {}
            }
        }
        Ok(())
    }
}

impl Drop for VmdkDisk {
    fn drop(&mut self) {
        let dirty = self.extents.iter().any(|e| match &e.store {
            Store::Sparse(s) => s.is_dirty(),
            _ => false,
        });
        if self.writable && dirty {
            // Nothing can report an error from here; callers that need to
            // know call flush() first.
            let _ = self.flush();
        }
    }
}
