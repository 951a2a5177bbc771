//! The VMDK text descriptor: `key=value` lines (`CID`, `parentCID`,
//! `createType`, `parentFileNameHint`) and the extent lines
//! `ACCESS SECTORS TYPE "file" [OFFSET]`, as described in VMware's
//! "Virtual Disk Format 5.0". The disk database (`ddb.*`) is not needed
//! and is skipped.

use crate::Result;
use crate::disk::format_err;
use std::path::Path;

/// Most extents a descriptor may list (a 2 TiB twoGbMaxExtent disk has
/// about a thousand).
pub(crate) const MAX_EXTENTS: usize = 4096;

/// How an extent may be accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExtentAccess {
    /// Read and write.
    ReadWrite,
    /// Read only.
    ReadOnly,
    /// Neither.
    NoAccess,
}

/// The storage of an extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExtentType {
    /// Plain sectors in a file, from an offset (FLAT, VMFS).
    Flat,
    /// A hosted sparse extent file (KDMV header).
    Sparse,
    /// Reads as zeros, has no file.
    Zero,
    /// Any other type (VMFSSPARSE, SESPARSE, VMFSRDM, VMFSRAW...).
    Other(String),
}

/// One extent line.
#[derive(Debug, Clone)]
pub(crate) struct ExtentLine {
    pub access: ExtentAccess,
    pub sectors: u64,
    pub kind: ExtentType,
    pub file: Option<String>,
    /// Start in the file, in sectors (flat extents).
    pub offset: u64,
    /// Byte offset of the line in the descriptor.
    pub at: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, Default)]
pub(crate) struct Descriptor {
    /// This disk's content ID.
    pub cid: Option<u32>,
    /// Where the `CID=` value starts (bytes from the descriptor's start)
    /// when it is exactly eight hex digits.
    pub cid_at: Option<u64>,
    /// The parent's content ID (absent or `ffffffff`: no parent).
    pub parent_cid: Option<u32>,
    /// Byte offset of the `parentCID` line.
    pub parent_cid_at: u64,
    /// `createType`.
    pub create_type: Option<String>,
    /// `parentFileNameHint`.
    pub parent_hint: Option<String>,
    /// The extents, in disk order.
    pub extents: Vec<ExtentLine>,
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
}

/// Parses descriptor text (`base` is where it starts in `path`, for error
/// offsets). Text after a NUL byte is ignored (an embedded descriptor is
/// padded with zeros).
pub(crate) fn parse(path: &Path, base: u64, bytes: &[u8]) -> Result<Descriptor> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let text = String::from_utf8_lossy(bytes.get(..end).unwrap_or_default());
    let mut d = Descriptor::default();
    let mut pos = 0u64;
    for raw_line in text.split('\n') {
        let at = base + pos;
        let line_start = pos;
        pos += raw_line.len() as u64 + 1;
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        let access = match first {
            "RW" => Some(ExtentAccess::ReadWrite),
            "RDONLY" => Some(ExtentAccess::ReadOnly),
            "NOACCESS" => Some(ExtentAccess::NoAccess),
            _ => None,
        };
        if let Some(access) = access {
            if d.extents.len() >= MAX_EXTENTS {
                return Err(format_err(
                    path,
                    at,
                    "VMDK descriptor extents",
                    format!("at most {MAX_EXTENTS} extents"),
                    "more",
                ));
            }
            d.extents
                .push(parse_extent(path, at, access, &line[first.len()..])?);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format_err(
                path,
                at,
                "VMDK descriptor line",
                "key=value, an extent line or a comment",
                format!("{:?}", truncate(line)),
            ));
        };
        let key = key.trim();
        let value = unquote(value);
        match key {
            "CID" => {
                d.cid = Some(parse_cid(path, at, key, value)?);
                let offset_in_line = raw_line.find('=').map_or(0, |i| i + 1);
                let after = &raw_line[offset_in_line..];
                let lead = after.len() - after.trim_start().len();
                let digits = after.trim();
                if digits.len() == 8 && digits.bytes().all(|b| b.is_ascii_hexdigit()) {
                    d.cid_at = Some(line_start + (offset_in_line + lead) as u64);
                }
            }
            "parentCID" => {
                let cid = parse_cid(path, at, key, value)?;
                d.parent_cid = (cid != u32::MAX).then_some(cid);
                d.parent_cid_at = at;
            }
            "createType" => d.create_type = Some(value.to_string()),
            "parentFileNameHint" => d.parent_hint = Some(value.to_string()),
            _ => {}
        }
    }
    Ok(d)
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

fn parse_cid(path: &Path, at: u64, key: &str, value: &str) -> Result<u32> {
    u32::from_str_radix(value, 16).map_err(|_| {
        format_err(
            path,
            at,
            format!("VMDK descriptor {key}"),
            "a 32-bit hexadecimal number",
            format!("{:?}", truncate(value)),
        )
    })
}

fn parse_extent(path: &Path, at: u64, access: ExtentAccess, rest: &str) -> Result<ExtentLine> {
    let bad = |found: String| {
        format_err(
            path,
            at,
            "VMDK extent line",
            "ACCESS SECTORS TYPE \"file\" [OFFSET]",
            found,
        )
    };
    let rest = rest.trim_start();
    let (sectors, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let sectors: u64 = sectors
        .parse()
        .map_err(|_| bad(format!("sector count {:?}", truncate(sectors))))?;
    let rest = rest.trim_start();
    let (kind, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let kind = match kind {
        "FLAT" | "VMFS" => ExtentType::Flat,
        "SPARSE" => ExtentType::Sparse,
        "ZERO" => ExtentType::Zero,
        "" => return Err(bad("no extent type".into())),
        other => ExtentType::Other(truncate(other)),
    };
    let rest = rest.trim();
    let (file, rest) = if let Some(q) = rest.strip_prefix('"') {
        let Some(close) = q.find('"') else {
            return Err(bad(format!(
                "an unterminated file name {:?}",
                truncate(rest)
            )));
        };
        (Some(q[..close].to_string()), q[close + 1..].trim())
    } else {
        (None, rest)
    };
    let offset = if rest.is_empty() {
        0
    } else {
        rest.parse()
            .map_err(|_| bad(format!("offset {:?}", truncate(rest))))?
    };
    if file.is_none() && kind != ExtentType::Zero {
        return Err(bad("no quoted file name".into()));
    }
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_descriptor() {
        let text = b"# Disk DescriptorFile\nversion=1\nCID=73826b4c\nparentCID=ffffffff\n\
createType=\"twoGbMaxExtentFlat\"\n\n# Extent description\nRW 4194304 FLAT \"a b-f001.vmdk\" 0\n\
RDONLY 8 ZERO\nNOACCESS 16 SPARSE \"x.vmdk\"\n\n#DDB\nddb.adapterType = \"ide\"\n\0\0garbage";
        let d = parse(Path::new("t"), 512, text).unwrap();
        assert_eq!(d.cid, Some(0x7382_6b4c));
        assert_eq!(d.cid_at, Some(36));
        assert_eq!(d.parent_cid, None);
        assert_eq!(d.create_type.as_deref(), Some("twoGbMaxExtentFlat"));
        assert_eq!(d.extents.len(), 3);
        assert_eq!(d.extents[0].file.as_deref(), Some("a b-f001.vmdk"));
        assert_eq!(d.extents[0].sectors, 4_194_304);
        assert_eq!(d.extents[1].kind, ExtentType::Zero);
        assert_eq!(d.extents[2].access, ExtentAccess::NoAccess);
    }

    #[test]
    fn refuses_malformed_lines() {
        for bad in [
            &b"RW x FLAT \"a\""[..],
            b"RW 5 FLAT a",
            b"RW 5 FLAT \"a",
            b"RW 5 FLAT \"a\" z",
            b"CID=zz",
            b"just words",
            b"RW 99999999999999999999999 FLAT \"a\"",
        ] {
            assert!(parse(Path::new("t"), 0, bad).is_err(), "{bad:?}");
        }
    }
}
