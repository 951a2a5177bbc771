//! Structural checks of a WIM file's header and blob table, made before
//! wimlib is given the file and again after every write.
//!
//! wimlib trusts the resource headers it reads: a header whose XML data,
//! blob table or integrity table (or a blob of the table) claims to lie
//! past the end of the file makes a later in-place write start at that
//! claimed end, and the file grows to terabytes. This module reads the
//! 208-byte header and the blob table itself (the layout is fixed and small;
//! no Rust crate reads WIM headers, and wimlib does not expose them) and
//! refuses a file whose resources do not lie within it, with the offset,
//! what was expected and what was found.
//!
//! Layout (all little-endian): magic `MSWIM\0\0\0` (or `WLPWM\0\0\0` for a
//! pipable WIM) at 0, header size (208) at 8, part number at 40, image count
//! at 44, then resource headers for the blob table at 48, the XML data at
//! 72, the boot metadata at 96 and the integrity table at 124. A resource
//! header is 24 bytes: stored size (7 bytes), flags (1 byte), offset in the
//! file (8 bytes), original size (8 bytes). The blob table is an array of
//! 50-byte entries: a resource header, the part number (2 bytes), a
//! reference count (4 bytes) and a SHA-1 (20 bytes).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{ResealError, Result};

/// Size of a WIM header.
pub const HEADER_LEN: usize = 208;
/// Size of one blob-table entry.
const BLOB_ENTRY_LEN: usize = 50;
/// Resource flag: the resource is compressed.
const RESHDR_COMPRESSED: u8 = 0x04;
/// Resource flag: metadata resource of an image.
const RESHDR_METADATA: u8 = 0x02;
/// Resource flag: the blob lives in a solid resource.
const RESHDR_SOLID: u8 = 0x10;
/// The original size a solid resource's own header carries.
const SOLID_MAGIC_SIZE: u64 = 0x1_0000_0000;
/// The largest XML data accepted (it holds a few KiB per image).
const XML_MAX: u64 = 64 << 20;
/// The largest blob table read (about five million blobs).
const BLOB_TABLE_MAX: u64 = 256 << 20;

/// What the checks learned about a WIM file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The file's length.
    pub file_len: u64,
    /// Bytes of metadata a write rewrites: image metadata resources, blob
    /// table, XML data and integrity table, as stored.
    pub metadata_bytes: u64,
}

/// One resource header.
#[derive(Debug, Clone, Copy)]
struct Reshdr {
    size: u64,
    flags: u8,
    offset: u64,
    original: u64,
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn le16(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

fn reshdr(b: &[u8], at: usize) -> Reshdr {
    let size = le64(b, at) & 0x00ff_ffff_ffff_ffff;
    Reshdr {
        size,
        flags: b.get(at + 7).copied().unwrap_or(0),
        offset: le64(b, at + 8),
        original: le64(b, at + 16),
    }
}

fn bad(path: &Path, offset: u64, what: &str, expected: String, found: String) -> ResealError {
    ResealError::DiskFormat {
        file: path.to_path_buf(),
        offset,
        what: what.to_string(),
        expected,
        found,
    }
}

/// Checks that resource `r` (described at file offset `at`) lies within a
/// file of `len` bytes.
fn within(path: &Path, at: u64, what: &str, r: &Reshdr, len: u64) -> Result<()> {
    let end = r.offset.checked_add(r.size);
    if end.is_none_or(|e| e > len) {
        return Err(bad(
            path,
            at,
            what,
            format!("a resource within the file's {len} bytes"),
            format!("{} bytes at offset {}", r.size, r.offset),
        ));
    }
    Ok(())
}

/// Reads and checks the header and blob table of the WIM at `path`.
/// Refuses (with [`ResealError::DiskFormat`], exit 2) a file that is not a
/// regular file, is shorter than a header, has a bad magic or header size,
/// or whose blob table, XML data, boot metadata, integrity table or blob
/// entries lie outside the file or have absurd sizes.
pub fn check(path: &Path) -> Result<Layout> {
    let io = |action, source| ResealError::Io {
        path: path.to_path_buf(),
        action,
        source,
    };
    let mut f = File::open(path).map_err(|e| io("open the WIM", e))?;
    let meta = f.metadata().map_err(|e| io("read metadata", e))?;
    if !meta.is_file() {
        return Err(ResealError::InvalidInput {
            what: path.display().to_string(),
            message: "a WIM must be a regular file".into(),
        });
    }
    let len = meta.len();
    let mut h = [0u8; HEADER_LEN];
    if len < HEADER_LEN as u64 {
        return Err(bad(
            path,
            0,
            "WIM header",
            format!("{HEADER_LEN} bytes"),
            format!("a file of {len} bytes"),
        ));
    }
    f.read_exact(&mut h)
        .map_err(|e| io("read the WIM header", e))?;
    let magic = h.get(..8).unwrap_or_default();
    if magic != b"MSWIM\0\0\0" && magic != b"WLPWM\0\0\0" {
        return Err(bad(
            path,
            0,
            "WIM magic",
            "MSWIM or WLPWM".into(),
            format!("{magic:02x?}"),
        ));
    }
    let hdr_size = le32(&h, 8);
    if hdr_size as usize != HEADER_LEN {
        return Err(bad(
            path,
            8,
            "WIM header size",
            HEADER_LEN.to_string(),
            hdr_size.to_string(),
        ));
    }
    let part = le16(&h, 40);
    let blob_table = reshdr(&h, 48);
    let xml = reshdr(&h, 72);
    let boot = reshdr(&h, 96);
    let integrity = reshdr(&h, 124);
    let pipable = magic == b"WLPWM\0\0\0";
    for (at, what, r) in [
        (48u64, "blob table resource", &blob_table),
        (72, "XML data resource", &xml),
        (96, "boot metadata resource", &boot),
        (124, "integrity table resource", &integrity),
    ] {
        if r.size == 0 && r.offset == 0 {
            continue;
        }
        within(path, at, what, r, len)?;
    }
    for (at, what, r, max) in [
        (72u64, "XML data resource", &xml, XML_MAX),
        (48, "blob table resource", &blob_table, BLOB_TABLE_MAX),
    ] {
        if r.flags & RESHDR_COMPRESSED == 0 && r.original != r.size {
            return Err(bad(
                path,
                at + 16,
                &format!("{what} original size"),
                format!("{} (its stored size; it is not compressed)", r.size),
                r.original.to_string(),
            ));
        }
        if r.original > max {
            return Err(bad(
                path,
                at + 16,
                &format!("{what} original size"),
                format!("at most {max} bytes"),
                r.original.to_string(),
            ));
        }
    }
    let mut metadata_bytes = blob_table
        .size
        .saturating_add(xml.size)
        .saturating_add(integrity.size);
    // The blob table of a pipable WIM is checked by wimlib as it streams.
    if !pipable && blob_table.size > 0 && blob_table.flags & RESHDR_COMPRESSED == 0 {
        if blob_table.size % BLOB_ENTRY_LEN as u64 != 0 {
            return Err(bad(
                path,
                48,
                "blob table size",
                format!("a multiple of {BLOB_ENTRY_LEN} bytes"),
                blob_table.size.to_string(),
            ));
        }
        let n = usize::try_from(blob_table.size).unwrap_or(0);
        let mut table = vec![0u8; n];
        f.seek(SeekFrom::Start(blob_table.offset))
            .and_then(|_| f.read_exact(&mut table))
            .map_err(|e| io("read the WIM blob table", e))?;
        for (i, e) in table.chunks_exact(BLOB_ENTRY_LEN).enumerate() {
            let at = blob_table.offset + (i * BLOB_ENTRY_LEN) as u64;
            let r = reshdr(e, 0);
            if le16(e, 24) != part {
                continue;
            }
            let is_solid_blob = r.flags & RESHDR_SOLID != 0 && r.original != SOLID_MAGIC_SIZE;
            if is_solid_blob {
                // Offsets inside the uncompressed solid resource.
                continue;
            }
            within(path, at, "blob table entry", &r, len)?;
            if r.flags & RESHDR_METADATA != 0 {
                metadata_bytes = metadata_bytes.saturating_add(r.size);
            }
        }
    }
    Ok(Layout {
        file_len: len,
        metadata_bytes,
    })
}

/// The most bytes a write may add to a WIM of layout `before` that adds
/// `data` bytes of file contents: the data itself, the rewritten metadata
/// twice over (new metadata resources, blob table, XML and integrity table
/// are appended before the old ones can be dropped) and 16 MiB for headers
/// and per-blob overhead.
pub fn growth_bound(before: &Layout, data: u64) -> u64 {
    data.saturating_add(before.metadata_bytes.saturating_mul(2))
        .saturating_add(16 << 20)
}
