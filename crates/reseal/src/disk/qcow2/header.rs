//! The qcow2 header (versions 2 and 3) and its extensions: the fixed
//! fields, the feature bits, the backing file name and format, and the
//! feature name table (used to name unknown feature bits in errors).

use super::super::{ImageFile, be32, be64};
use crate::Result;

/// "QFI\xfb", the first four bytes of every qcow2 file.
pub(crate) const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Length of a version 2 header (and of the common part of version 3).
pub(super) const V2_HEADER_LEN: u32 = 72;
/// Smallest valid version 3 header length.
const V3_MIN_HEADER_LEN: u32 = 104;
/// Longest backing file name qemu accepts.
pub(super) const MAX_BACKING_NAME: u32 = 1023;

/// Header extension: the format of the backing file.
pub(super) const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
/// Header extension: names of the feature bits.
const EXT_FEATURE_TABLE: u32 = 0x6803_F857;
/// Header extension: full disk encryption parameters.
const EXT_CRYPTO: u32 = 0x0537_BE77;
/// Header extension: name of an external data file.
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Incompatible feature bit 0: the image was not closed cleanly (lazy
/// refcounts) and its refcounts may be wrong.
pub(super) const INCOMPAT_DIRTY: u64 = 1;
/// Incompatible feature bit 1: qemu found the image corrupt.
pub(super) const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Incompatible feature bit 2: guest data lives in an external file.
pub(super) const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// Incompatible feature bit 3: the compression type field is used.
pub(super) const INCOMPAT_COMPRESSION: u64 = 1 << 3;
/// Incompatible feature bit 4: extended L2 entries (subclusters).
pub(super) const INCOMPAT_EXTL2: u64 = 1 << 4;

/// The parsed header of a qcow2 file.
#[derive(Debug, Clone)]
pub(super) struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub autoclear: u64,
    pub refcount_order: u32,
    /// The backing file name as stored (bytes, not NUL terminated).
    pub backing_file: Option<Vec<u8>>,
    /// The backing format extension, when present.
    pub backing_format: Option<String>,
}

fn feature_name(table: &[(u8, u8, String)], kind: u8, bit: u32) -> String {
    table
        .iter()
        .find(|(k, b, _)| *k == kind && u32::from(*b) == bit)
        .map_or_else(
            || format!("bit {bit}"),
            |(_, _, n)| format!("bit {bit} ({n})"),
        )
}

/// Reads and validates the header in cluster 0 of `file`.
pub(super) fn parse(file: &ImageFile) -> Result<Header> {
    let flen = file.len()?;
    if flen < u64::from(V2_HEADER_LEN) {
        return Err(file.format_err(
            0,
            "qcow2 header",
            "a file of at least 72 bytes",
            format!("{flen} bytes"),
        ));
    }
    let mut fixed = [0u8; V2_HEADER_LEN as usize];
    file.read(0, &mut fixed, "qcow2 header")?;
    if fixed[0..4] != MAGIC {
        return Err(file.format_err(
            0,
            "qcow2 magic",
            "\"QFI\\xfb\"",
            format!("{:02X?}", &fixed[0..4]),
        ));
    }
    let version = be32(&fixed, 4);
    if version != 2 && version != 3 {
        return Err(file.format_err(4, "qcow2 version", "2 or 3", version.to_string()));
    }
    let cluster_bits = be32(&fixed, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(file.format_err(
            20,
            "qcow2 cluster_bits",
            "9..=21 (512 bytes to 2 MiB clusters)",
            cluster_bits.to_string(),
        ));
    }
    let cs = 1u64 << cluster_bits;
    // Cluster 0 holds the header, its extensions and the backing name.
    let mut c0 = vec![0u8; cs.min(flen) as usize];
    file.read(0, &mut c0, "qcow2 header cluster")?;
    let crypt = be32(&c0, 32);
    if crypt != 0 {
        return Err(file.format_err(
            32,
            "qcow2 crypt_method",
            "0 (no encryption; encrypted images are not supported)",
            format!(
                "{crypt} ({})",
                if crypt == 1 { "AES" } else { "LUKS or unknown" }
            ),
        ));
    }
    let (incompat, autoclear, refcount_order, header_length, compression) = if version == 3 {
        if c0.len() < V3_MIN_HEADER_LEN as usize {
            return Err(file.format_err(
                0,
                "qcow2 version 3 header",
                "at least 104 bytes",
                format!("{} bytes", c0.len()),
            ));
        }
        let hl = be32(&c0, 100);
        if hl < V3_MIN_HEADER_LEN || hl % 8 != 0 || u64::from(hl) > c0.len() as u64 {
            return Err(file.format_err(
                100,
                "qcow2 header_length",
                format!("a multiple of 8 from 104 to {}", c0.len()),
                hl.to_string(),
            ));
        }
        let compression = if hl > 104 { c0[104] } else { 0 };
        (be64(&c0, 72), be64(&c0, 88), be32(&c0, 96), hl, compression)
    } else {
        (0, 0, 4, V2_HEADER_LEN, 0)
    };
    if refcount_order > 6 {
        return Err(file.format_err(
            96,
            "qcow2 refcount_order",
            "0..=6 (1- to 64-bit refcounts)",
            refcount_order.to_string(),
        ));
    }

    // Extensions, then the backing file name.
    let mut backing_format = None;
    let mut features: Vec<(u8, u8, String)> = Vec::new();
    let mut at = header_length as usize;
    loop {
        let Some(head) = c0.get(at..at + 8) else {
            return Err(file.format_err(
                at as u64,
                "qcow2 header extension",
                "extensions ending inside the first cluster",
                "an extension header past it",
            ));
        };
        let kind = be32(head, 0);
        let len = be32(head, 4) as usize;
        if kind == 0 {
            break;
        }
        let Some(data) = c0.get(at + 8..at + 8 + len) else {
            return Err(file.format_err(
                at as u64 + 4,
                format!("qcow2 header extension {kind:08X}"),
                "data inside the first cluster",
                format!("{len} bytes"),
            ));
        };
        match kind {
            EXT_BACKING_FORMAT => {
                if len > 16 || !data.iter().all(|b| b.is_ascii_graphic()) {
                    return Err(file.format_err(
                        at as u64 + 8,
                        "qcow2 backing format extension",
                        "a format name of at most 16 printable characters",
                        format!("{:02X?}", &data[..len.min(32)]),
                    ));
                }
                backing_format = Some(String::from_utf8_lossy(data).into_owned());
            }
            EXT_FEATURE_TABLE => {
                for e in data.chunks_exact(48) {
                    let name: Vec<u8> = e[2..].iter().copied().take_while(|&b| b != 0).collect();
                    features.push((e[0], e[1], String::from_utf8_lossy(&name).into_owned()));
                }
            }
            EXT_DATA_FILE => {
                return Err(file.format_err(
                    at as u64,
                    "qcow2 external data file extension",
                    "guest data inside the image (external data files are not supported)",
                    format!("data file {:?}", String::from_utf8_lossy(data)),
                ));
            }
            EXT_CRYPTO => {
                return Err(file.format_err(
                    at as u64,
                    "qcow2 full disk encryption extension",
                    "an unencrypted image (encryption is not supported)",
                    "an encryption header",
                ));
            }
            _ => {}
        }
        at += 8 + len.div_ceil(8) * 8;
    }

    // Feature bits.
    if incompat & INCOMPAT_DIRTY != 0 {
        return Err(file.format_err(
            72,
            "qcow2 dirty bit (incompatible feature bit 0)",
            format!(
                "a cleanly closed image; its refcounts may be wrong: repair it with \
                 `qemu-img check -r all {}`",
                file.path.display()
            ),
            "the dirty bit set",
        ));
    }
    if incompat & INCOMPAT_CORRUPT != 0 {
        return Err(file.format_err(
            72,
            "qcow2 corrupt bit (incompatible feature bit 1)",
            format!(
                "an image qemu did not mark corrupt; inspect it with `qemu-img check {}`",
                file.path.display()
            ),
            "the corrupt bit set",
        ));
    }
    if incompat & INCOMPAT_DATA_FILE != 0 {
        return Err(file.format_err(
            72,
            "qcow2 external data file (incompatible feature bit 2)",
            "guest data inside the image (external data files are not supported)",
            "the external data file bit set",
        ));
    }
    if incompat & INCOMPAT_EXTL2 != 0 {
        return Err(file.format_err(
            72,
            "qcow2 extended L2 entries (incompatible feature bit 4)",
            "standard L2 entries (subclusters are not supported; convert with \
             `qemu-img convert -O qcow2 -o extended_l2=off`)",
            "the extended L2 bit set",
        ));
    }
    let unknown = incompat & !(INCOMPAT_COMPRESSION);
    if unknown != 0 {
        let bit = unknown.trailing_zeros();
        return Err(file.format_err(
            72,
            "qcow2 incompatible feature bits",
            "only known bits (3: compression type)",
            format!("unknown {}", feature_name(&features, 0, bit)),
        ));
    }
    if compression != 0 {
        return Err(file.format_err(
            104,
            "qcow2 compression type",
            "0 (deflate; zstd compressed images are not supported, convert with \
             `qemu-img convert -O qcow2 -o compression_type=zlib`)",
            if compression == 1 {
                "1 (zstd)".to_string()
            } else {
                compression.to_string()
            },
        ));
    }

    let backing_off = be64(&c0, 8);
    let backing_len = be32(&c0, 16);
    let backing_file = if backing_off == 0 {
        None
    } else {
        if backing_len == 0 || backing_len > MAX_BACKING_NAME {
            return Err(file.format_err(
                16,
                "qcow2 backing_file_size",
                format!("1..={MAX_BACKING_NAME} bytes"),
                backing_len.to_string(),
            ));
        }
        let name = backing_off
            .checked_add(u64::from(backing_len))
            .filter(|&end| end <= c0.len() as u64)
            .and_then(|end| c0.get(backing_off as usize..end as usize));
        let Some(name) = name else {
            return Err(file.format_err(
                8,
                "qcow2 backing_file_offset",
                format!("a name inside the first cluster ({} bytes)", c0.len()),
                format!("{backing_len} bytes at {backing_off}"),
            ));
        };
        Some(name.to_vec())
    };

    Ok(Header {
        version,
        cluster_bits,
        size: be64(&c0, 24),
        l1_size: be32(&c0, 36),
        l1_table_offset: be64(&c0, 40),
        refcount_table_offset: be64(&c0, 48),
        refcount_table_clusters: be32(&c0, 56),
        nb_snapshots: be32(&c0, 60),
        autoclear,
        refcount_order,
        backing_file,
        backing_format,
    })
}
