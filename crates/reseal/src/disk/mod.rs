//! Disk images in pure Rust: a [`BlockDevice`] abstraction, the container
//! formats raw ([`raw`]), VHD ([`vhd`]), VHDX ([`vhdx`]), qcow2
//! ([`qcow2`]) and VMDK ([`vmdk`]), the partition tables MBR ([`mbr`]) and
//! GPT ([`gpt`]), and a view of one partition ([`partition`]).
//!
//! Every length and offset read from a file is checked before use; corrupt
//! or unsupported containers give [`ResealError::DiskFormat`] naming the
//! file, the offset, what was expected and what was found.

pub mod gpt;
pub mod mbr;
pub mod overlay;
pub mod partition;
pub mod qcow2;
pub mod raw;
pub mod vhd;
pub mod vhdx;
pub mod vmdk;

use crate::{ResealError, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub use partition::{Partition, PartitionDevice, PartitionKind, PartitionScheme, list_partitions};

/// A virtual disk: a fixed-size array of bytes, read and written at byte
/// offsets. Reads of ranges the container never allocated give zeros.
pub trait BlockDevice: Send {
    /// Size of the virtual disk in bytes.
    fn len(&self) -> u64;
    /// Whether the disk has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` with the bytes at `offset`. The whole range must lie
    /// inside the disk.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes `buf` at `offset`. The whole range must lie inside the disk.
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()>;
    /// Makes every write so far durable, with the container's metadata
    /// consistent.
    fn flush(&mut self) -> Result<()>;
}

impl<T: BlockDevice + ?Sized> BlockDevice for Box<T> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        (**self).write_at(offset, buf)
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
}

impl<T: BlockDevice + ?Sized> BlockDevice for &mut T {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        (**self).write_at(offset, buf)
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
}

/// An in-memory disk, for tests and staging.
#[derive(Debug, Clone, Default)]
pub struct MemDisk {
    /// The bytes of the disk.
    pub data: Vec<u8>,
}

impl BlockDevice for MemDisk {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = check_range(Path::new("<memory>"), self.len(), offset, buf.len())?;
        buf.copy_from_slice(&self.data[start..start + buf.len()]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        let start = check_range(Path::new("<memory>"), self.len(), offset, buf.len())?;
        self.data[start..start + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// How an image is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only: the file is never modified (a VHDX log is replayed in
    /// memory only).
    ReadOnly,
    /// Read and write.
    ReadWrite,
}

/// The container format of an image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// A plain disk image.
    Raw,
    /// Microsoft Virtual Hard Disk (fixed, dynamic or differencing).
    Vhd,
    /// Microsoft VHDX.
    Vhdx,
    /// QEMU copy-on-write, versions 2 and 3.
    Qcow2,
    /// VMware VMDK (a sparse file, or a descriptor naming extent files).
    Vmdk,
}

impl ImageFormat {
    /// Every format, in the order they are listed to users.
    pub const ALL: &'static [ImageFormat] = &[
        ImageFormat::Raw,
        ImageFormat::Vhd,
        ImageFormat::Vhdx,
        ImageFormat::Qcow2,
        ImageFormat::Vmdk,
    ];

    /// The short name (as `--format` and qemu-img name it, except `vhd`
    /// for qemu's `vpc`).
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Vhd => "vhd",
            ImageFormat::Vhdx => "vhdx",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Vmdk => "vmdk",
        }
    }

    /// The format of a short name ([`name`](ImageFormat::name); `vpc` is
    /// accepted for VHD).
    pub fn from_name(name: &str) -> Option<ImageFormat> {
        let n = name.to_ascii_lowercase();
        if n == "vpc" {
            return Some(ImageFormat::Vhd);
        }
        ImageFormat::ALL.iter().copied().find(|f| f.name() == n)
    }

    /// The usual file extension of an image of this format.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Raw => "img",
            other => other.name(),
        }
    }
}

/// Guesses the format of an image file from its signatures: `vhdxfile` at
/// the start (or a `head` header signature at 64 or 128 KiB), `QFI\xfb`
/// (qcow2) at the start, `conectix` in the last 512 bytes (or at the
/// start), `KDMV` at the start or a text file starting with `# Disk
/// DescriptorFile` (VMDK), else raw.
pub fn detect_format(path: &Path) -> Result<ImageFormat> {
    let file = File::open(path).map_err(|e| io_err(path, "opening the image", e))?;
    let len = file
        .metadata()
        .map_err(|e| io_err(path, "reading the image's size", e))?
        .len();
    let mut sig = [0u8; 8];
    if len >= 8 {
        file.read_exact_at(&mut sig, 0)
            .map_err(|e| io_err(path, "reading the image", e))?;
        if &sig == b"vhdxfile" {
            return Ok(ImageFormat::Vhdx);
        }
        if &sig == b"conectix" {
            return Ok(ImageFormat::Vhd);
        }
        if sig[..4] == qcow2::header::MAGIC {
            return Ok(ImageFormat::Qcow2);
        }
        if &sig[..4] == b"KDMV" {
            return Ok(ImageFormat::Vmdk);
        }
        let mut head = [0u8; 64];
        let n = head.len().min(len as usize);
        file.read_exact_at(&mut head[..n], 0)
            .map_err(|e| io_err(path, "reading the image", e))?;
        let text = head[..n].trim_ascii_start();
        if text.starts_with(vmdk::DESCRIPTOR_SIGNATURE) {
            return Ok(ImageFormat::Vmdk);
        }
    }
    for at in [64 * 1024u64, 128 * 1024] {
        if len >= at + 4 {
            file.read_exact_at(&mut sig[..4], at)
                .map_err(|e| io_err(path, "reading the image", e))?;
            if &sig[..4] == b"head" {
                return Ok(ImageFormat::Vhdx);
            }
        }
    }
    if len >= 512 {
        file.read_exact_at(&mut sig, len - 512)
            .map_err(|e| io_err(path, "reading the image", e))?;
        if &sig == b"conectix" {
            return Ok(ImageFormat::Vhd);
        }
    }
    Ok(ImageFormat::Raw)
}

/// Opens an image of any supported format (see [`detect_format`]).
pub fn open_image(path: &Path, access: Access) -> Result<Box<dyn BlockDevice>> {
    Ok(match detect_format(path)? {
        ImageFormat::Raw => Box::new(raw::RawDisk::open(path, access)?),
        ImageFormat::Vhd => Box::new(vhd::VhdDisk::open(path, access)?),
        ImageFormat::Vhdx => Box::new(vhdx::VhdxDisk::open(path, access)?),
        ImageFormat::Qcow2 => Box::new(qcow2::Qcow2Disk::open(path, access)?),
        ImageFormat::Vmdk => Box::new(vmdk::VmdkDisk::open(path, access)?),
    })
}

/// Makes `dst` a linked clone of the image `src` of format `format`: a
/// differencing child (VHD, VHDX) or an overlay (qcow2) whose reads fall
/// through to `src` and whose writes stay in `dst`. Returns the clone's
/// kind (`"linked"`), or `None` for a format without linked clones (the
/// caller copies instead). `src` is only read.
pub fn create_linked_clone(
    src: &Path,
    format: ImageFormat,
    dst: &Path,
) -> Result<Option<&'static str>> {
    match format {
        ImageFormat::Vhdx => vhdx::create_child(src, dst).map(|()| Some("linked")),
        ImageFormat::Vhd => vhd::create_child(src, dst).map(|()| Some("linked")),
        ImageFormat::Qcow2 => qcow2::create_overlay(src, dst).map(|()| Some("linked")),
        ImageFormat::Raw | ImageFormat::Vmdk => Ok(None),
    }
}

/// An open image file with error mapping that names the file.
#[derive(Debug)]
pub(crate) struct ImageFile {
    pub path: PathBuf,
    pub file: File,
    pub writable: bool,
}

impl ImageFile {
    pub fn open(path: &Path, access: Access) -> Result<Self> {
        let writable = access == Access::ReadWrite;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| io_err(path, "opening the image", e))?;
        Ok(ImageFile {
            path: path.to_path_buf(),
            file,
            writable,
        })
    }

    pub fn len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| io_err(&self.path, "reading the image's size", e))?
            .len())
    }

    /// Reads exactly `buf.len()` bytes; a short file is a format error.
    pub fn read(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<()> {
        let flen = self.len()?;
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > flen) {
            return Err(self.format_err(
                offset,
                what,
                format!("{} bytes inside the file", buf.len()),
                format!("the file ends at {flen}"),
            ));
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| io_err(&self.path, "reading the image", e))
    }

    pub fn write(&self, offset: u64, buf: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(ResealError::InvalidInput {
                what: self.path.display().to_string(),
                message: "the image was opened read-only".into(),
            });
        }
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| io_err(&self.path, "writing the image", e))
    }

    pub fn set_len(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| io_err(&self.path, "resizing the image", e))
    }

    pub fn sync(&self) -> Result<()> {
        if self.writable {
            self.file
                .sync_data()
                .map_err(|e| io_err(&self.path, "flushing the image", e))?;
        }
        Ok(())
    }

    pub fn format_err(
        &self,
        offset: u64,
        what: impl Into<String>,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> ResealError {
        format_err(&self.path, offset, what, expected, found)
    }
}

pub(crate) fn io_err(path: &Path, action: &'static str, source: std::io::Error) -> ResealError {
    ResealError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

pub(crate) fn format_err(
    path: &Path,
    offset: u64,
    what: impl Into<String>,
    expected: impl Into<String>,
    found: impl Into<String>,
) -> ResealError {
    ResealError::DiskFormat {
        file: path.to_path_buf(),
        offset,
        what: what.into(),
        expected: expected.into(),
        found: found.into(),
    }
}

/// Checks that `offset..offset+n` lies inside a disk of `len` bytes and
/// returns `offset` as usize-compatible start.
pub(crate) fn check_range(path: &Path, len: u64, offset: u64, n: usize) -> Result<usize> {
    match offset.checked_add(n as u64) {
        Some(end) if end <= len => usize::try_from(offset)
            .map_err(|_| format_err(path, offset, "access", "an addressable offset", "too large")),
        _ => Err(format_err(
            path,
            offset,
            "access range",
            format!("{n} bytes inside the disk of {len} bytes"),
            "a range past the end",
        )),
    }
}

const fn crc_table(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC32_TABLE: [u32; 256] = crc_table(0xEDB8_8320);
static CRC32C_TABLE: [u32; 256] = crc_table(0x82F6_3B78);

fn crc_with(table: &[u32; 256], data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// CRC-32 (IEEE 802.3, as used by GPT).
pub fn crc32(data: &[u8]) -> u32 {
    crc_with(&CRC32_TABLE, data)
}

/// CRC-32C (Castagnoli, as used by VHDX).
pub fn crc32c(data: &[u8]) -> u32 {
    crc_with(&CRC32C_TABLE, data)
}

/// A GUID in the mixed-endian on-disk layout used by GPT and VHDX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses the textual form `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`.
    pub const fn from_str_const(s: &str) -> Guid {
        let b = s.as_bytes();
        let mut raw = [0u8; 16];
        // Textual byte order, then the first three groups are little-endian.
        let mut hexes = [0u8; 32];
        let mut i = 0;
        let mut n = 0;
        while i < b.len() {
            let c = b[i];
            let v = match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            };
            if let Some(v) = v {
                if n < 32 {
                    hexes[n] = v;
                }
                n += 1;
            }
            i += 1;
        }
        let mut j = 0;
        while j < 16 {
            raw[j] = (hexes[2 * j] << 4) | hexes[2 * j + 1];
            j += 1;
        }
        let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
        let mut out = [0u8; 16];
        let mut k = 0;
        while k < 16 {
            out[k] = raw[order[k]];
            k += 1;
        }
        Guid(out)
    }

    /// Reads a GUID from 16 bytes at `at` of `b`; the nil GUID when they
    /// are not all inside `b` (callers check bounds first).
    pub fn read(b: &[u8], at: usize) -> Guid {
        Guid(field(b, at).unwrap_or_default())
    }

    /// Whether every byte is zero.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// A new random GUID (version 4).
    pub fn random() -> Result<Guid> {
        let mut g = [0u8; 16];
        getrandom::fill(&mut g).map_err(|e| ResealError::InvalidInput {
            what: "random GUID".into(),
            message: format!("the system random source failed: {e}"),
        })?;
        g[7] = (g[7] & 0x0F) | 0x40;
        g[8] = (g[8] & 0x3F) | 0x80;
        Ok(Guid(g))
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            g[3],
            g[2],
            g[1],
            g[0],
            g[5],
            g[4],
            g[7],
            g[6],
            g[8],
            g[9],
            g[10],
            g[11],
            g[12],
            g[13],
            g[14],
            g[15]
        )
    }
}

/// Bounds-checked reads of fields from untrusted bytes: a structure read
/// from `path` at file (or disk) offset `base`. A field past the end of the
/// bytes is a [`ResealError::DiskFormat`] naming the file, the offset and
/// the structure; nothing here panics.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    /// The bytes of the structure.
    pub buf: &'a [u8],
    path: &'a Path,
    base: u64,
    what: &'a str,
}

#[allow(dead_code)]
impl<'a> Fields<'a> {
    /// Fields of `buf`, read from `path` at `base`, describing `what`.
    pub fn new(buf: &'a [u8], path: &'a Path, base: u64, what: &'a str) -> Self {
        Fields {
            buf,
            path,
            base,
            what,
        }
    }

    /// The `n` bytes at `at`.
    pub fn bytes(&self, at: usize, n: usize) -> Result<&'a [u8]> {
        at.checked_add(n)
            .and_then(|end| self.buf.get(at..end))
            .ok_or_else(|| {
                format_err(
                    self.path,
                    self.base.saturating_add(at as u64),
                    self.what,
                    format!("{n} bytes at {at} inside its {} bytes", self.buf.len()),
                    "a field past the end",
                )
            })
    }

    /// The `n` bytes at `at` as fields of their own, describing `what`.
    pub fn sub(&self, at: usize, n: usize, what: &'a str) -> Result<Fields<'a>> {
        Ok(Fields {
            buf: self.bytes(at, n)?,
            path: self.path,
            base: self.base.saturating_add(at as u64),
            what,
        })
    }

    /// The `N` bytes at `at`.
    pub fn array<const N: usize>(&self, at: usize) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(at, N)?);
        Ok(a)
    }

    /// The byte at `at`.
    pub fn u8(&self, at: usize) -> Result<u8> {
        Ok(self.array::<1>(at)?[0])
    }
    /// Little-endian u16 at `at`.
    pub fn le16(&self, at: usize) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(at)?))
    }
    /// Little-endian u32 at `at`.
    pub fn le32(&self, at: usize) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(at)?))
    }
    /// Little-endian u64 at `at`.
    pub fn le64(&self, at: usize) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(at)?))
    }
    /// Big-endian u16 at `at`.
    pub fn be16(&self, at: usize) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(at)?))
    }
    /// Big-endian u32 at `at`.
    pub fn be32(&self, at: usize) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(at)?))
    }
    /// Big-endian u64 at `at`.
    pub fn be64(&self, at: usize) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(at)?))
    }
    /// A GUID (on-disk layout) at `at`.
    pub fn guid(&self, at: usize) -> Result<Guid> {
        Ok(Guid(self.array(at)?))
    }
}

/// Reads the `N` bytes at `at` of `b`, or `None` past its end.
fn field<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    let mut a = [0u8; N];
    a.copy_from_slice(b.get(at..at.checked_add(N)?)?);
    Some(a)
}

// The plain readers below never panic: a field past the end of `b` reads
// as 0, so their callers check lengths first. Structure parsers use
// [`Fields`], which reports such a field as a format error.

/// Little-endian u16 at `at` of `b` (0 past the end).
#[allow(dead_code)]
pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    field(b, at).map_or(0, u16::from_le_bytes)
}
/// Little-endian u32 at `at` of `b` (0 past the end).
pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    field(b, at).map_or(0, u32::from_le_bytes)
}
/// Little-endian u64 at `at` of `b` (0 past the end).
#[allow(dead_code)]
pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    field(b, at).map_or(0, u64::from_le_bytes)
}
/// Big-endian u32 at `at` of `b` (0 past the end).
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    field(b, at).map_or(0, u32::from_be_bytes)
}
/// Big-endian u64 at `at` of `b` (0 past the end).
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    field(b, at).map_or(0, u64::from_be_bytes)
}

/// Creates the new image `path` without ever leaving a partial file under
/// that name: `fill` writes it under a temporary name beside it (created
/// exclusively), the data is flushed, and the file is linked to `path`,
/// which must not exist (checked again atomically by the link).
pub(crate) fn create_image_file(
    path: &Path,
    fill: impl FnOnce(&ImageFile) -> Result<()>,
) -> Result<()> {
    let exists = |p: &Path| ResealError::InvalidInput {
        what: p.display().to_string(),
        message: "the new image already exists".into(),
    };
    if path.symlink_metadata().is_ok() {
        return Err(exists(path));
    }
    let name = path.file_name().ok_or_else(|| ResealError::InvalidInput {
        what: path.display().to_string(),
        message: "a new image needs a file name".into(),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut suffix = [0u8; 6];
    getrandom::fill(&mut suffix).map_err(|e| ResealError::InvalidInput {
        what: path.display().to_string(),
        message: format!("the system random source failed: {e}"),
    })?;
    let tmp_name = format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let tmp = dir.join(tmp_name);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, "creating the new image", e))?;
    let image = ImageFile {
        path: tmp.clone(),
        file,
        writable: true,
    };
    let done = fill(&image).and_then(|()| image.sync());
    drop(image);
    let linked = done.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists(path)),
        // A file system without hard links: rename, after a last check.
        Err(_) if path.symlink_metadata().is_err() => {
            std::fs::rename(&tmp, path).map_err(|e| io_err(path, "renaming the new image", e))
        }
        Err(e) => Err(io_err(path, "linking the new image", e)),
    });
    let _ = std::fs::remove_file(&tmp);
    linked?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The absolute, symlink-free form of `path` (which must exist).
pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| io_err(path, "resolving the path", e))
}

/// `to` relative to the directory `from` (both absolute), in Windows form
/// with backslashes: `.\\name` or `..\\dir\\name`.
pub(crate) fn relative_win_path(from: &Path, to: &Path) -> String {
    let a: Vec<_> = from.components().collect();
    let b: Vec<_> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = Vec::new();
    if common == a.len() {
        parts.push(".".into());
    }
    for _ in common..a.len() {
        parts.push("..".into());
    }
    for c in &b[common..] {
        parts.push(c.as_os_str().to_string_lossy().into_owned());
    }
    parts.join("\\")
}

/// A path in Windows form: every `/` becomes a backslash.
pub(crate) fn win_path(p: &Path) -> String {
    p.to_string_lossy().replace('/', "\\")
}

/// Encodes `s` as UTF-16LE (no terminating NUL).
pub(crate) fn to_utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Checks that a parent named by a differencing disk is a regular file
/// (not a device, FIFO, socket or directory) before it is opened.
pub(crate) fn check_parent_file(child: &Path, at: u64, parent: &Path) -> Result<()> {
    match std::fs::metadata(parent) {
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) => Err(format_err(
            child,
            at,
            format!("parent {}", parent.display()),
            "a regular file",
            format!("{:?}", m.file_type()),
        )),
        Err(e) => Err(format_err(
            child,
            at,
            format!("parent {}", parent.display()),
            "an existing regular file",
            e.to_string(),
        )),
    }
}

/// Decodes UTF-16LE up to the first NUL.
pub(crate) fn utf16le(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .filter_map(|c| field(c, 0).map(u16::from_le_bytes))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Decodes UTF-16BE up to the first NUL.
pub(crate) fn utf16be(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .filter_map(|c| field(c, 0).map(u16::from_be_bytes))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn guid_text_roundtrip() {
        let s = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
        let g = Guid::from_str_const(s);
        assert_eq!(g.0[0], 0xA2);
        assert_eq!(g.to_string(), s);
    }
}
