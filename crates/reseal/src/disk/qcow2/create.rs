//! Making a new qcow2 version 3 image over a backing file (a linked
//! clone): header with the backing format extension and the backing file
//! name, one refcount table cluster, one refcount block, an empty L1
//! table.

use super::header::{EXT_BACKING_FORMAT, MAGIC, MAX_BACKING_NAME};
use super::qemu_format_name;
use crate::disk::{Access, ImageFormat, format_err, io_err};
use crate::{ResealError, Result};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Version 3 header length (with the compression type byte, padded).
const HEADER_LEN: usize = 112;

/// `target` relative to the directory `dir` (both absolute and free of
/// `..`), going up with `..` where needed.
fn relative_to(dir: &Path, target: &Path) -> PathBuf {
    let d: Vec<Component> = dir.components().collect();
    let t: Vec<Component> = target.components().collect();
    let common = d.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..d.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// Creates `out`, a qcow2 version 3 image with 64 KiB clusters whose
/// backing file is `backing` (any supported format, opened read-only to
/// learn its format and size). The backing file is named relative to
/// `out`'s directory, with a backing format extension; the virtual size is
/// the backing file's size rounded up to 512 bytes. Fails if `out` exists.
pub fn create_overlay(backing: &Path, out: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let meta = std::fs::metadata(backing)
        .map_err(|e| io_err(backing, "reading the backing file's type", e))?;
    if !meta.is_file() {
        return Err(ResealError::InvalidInput {
            what: backing.display().to_string(),
            message: "a backing file must be a regular file".into(),
        });
    }
    let format: ImageFormat = crate::disk::detect_format(backing)?;
    let fmt_name = qemu_format_name(format);
    let size = crate::disk::open_image(backing, Access::ReadOnly)?
        .len()
        .div_ceil(512)
        * 512;
    let backing_abs = std::fs::canonicalize(backing)
        .map_err(|e| io_err(backing, "resolving the backing file's path", e))?;
    let out_dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let out_dir_abs = std::fs::canonicalize(&out_dir)
        .map_err(|e| io_err(&out_dir, "resolving the image's directory", e))?;
    let name = relative_to(&out_dir_abs, &backing_abs);
    let name = name.as_os_str().as_bytes();
    if name.is_empty() || name.len() > MAX_BACKING_NAME as usize {
        return Err(format_err(
            out,
            8,
            "qcow2 backing file name",
            format!("1..={MAX_BACKING_NAME} bytes"),
            format!("{} bytes", name.len()),
        ));
    }

    let cs = CLUSTER;
    let l2_span = cs * (cs / 8);
    let l1_size = size.div_ceil(l2_span);
    let l1_clusters = (l1_size * 8).div_ceil(cs);
    let rt_at = cs;
    let rb_at = 2 * cs;
    let l1_at = 3 * cs;
    let total = 3 + l1_clusters;
    let l1_size32 = u32::try_from(l1_size).map_err(|_| ResealError::InvalidInput {
        what: backing.display().to_string(),
        message: format!("a backing file of {size} bytes is too large for qcow2"),
    })?;

    let mut h = vec![0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    h[24..32].copy_from_slice(&size.to_be_bytes());
    h[36..40].copy_from_slice(&l1_size32.to_be_bytes());
    h[40..48].copy_from_slice(&l1_at.to_be_bytes());
    h[48..56].copy_from_slice(&rt_at.to_be_bytes());
    h[56..60].copy_from_slice(&1u32.to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&(HEADER_LEN as u32).to_be_bytes());
    // Backing format extension, then the end marker.
    h.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
    h.extend_from_slice(&(fmt_name.len() as u32).to_be_bytes());
    h.extend_from_slice(fmt_name.as_bytes());
    h.resize(h.len().div_ceil(8) * 8, 0);
    h.extend_from_slice(&[0u8; 8]);
    let name_at = h.len() as u64;
    h.extend_from_slice(name);
    h[8..16].copy_from_slice(&name_at.to_be_bytes());
    h[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());

    let mut image = vec![0u8; (total * cs) as usize];
    image[..h.len()].copy_from_slice(&h);
    image[rt_at as usize..rt_at as usize + 8].copy_from_slice(&rb_at.to_be_bytes());
    for c in 0..total as usize {
        let at = rb_at as usize + 2 * c;
        image[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
    }

    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| io_err(out, "creating the image", e))?;
    let written = f
        .write_all(&image)
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err(out, "writing the image", e));
    if written.is_err() {
        drop(f);
        let _ = std::fs::remove_file(out);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let r = |d: &str, t: &str| relative_to(Path::new(d), Path::new(t));
        assert_eq!(r("/a/b", "/a/b/c.img"), PathBuf::from("c.img"));
        assert_eq!(r("/a/b", "/a/x/c.img"), PathBuf::from("../x/c.img"));
        assert_eq!(r("/a/b", "/c.img"), PathBuf::from("../../c.img"));
    }
}
