//! The exercise code of reseal's disk fuzz targets: an input becomes an
//! image file on a memory-backed file system, is opened through the block
//! layer as `reseal` opens images (detection by content, the container,
//! the partition table, each partition), and is read at its start, end and
//! a few offsets. Errors are the expected outcome; a panic, a hang or an
//! unbounded allocation is a finding.
//!
//! [`fix_vhdx_checksums`] and [`fix_vhd_gpt_checksums`] recompute the
//! checksums a mutated VHDX, VHD or GPT would otherwise fail at once, so
//! the fuzzer reaches the code behind them.

use std::path::PathBuf;

use reseal::disk::{Access, BlockDevice, list_partitions, open_image};

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// A file for the input, in `/dev/shm` when there is one, unique per
/// process (libFuzzer runs one input at a time per process).
fn scratch() -> PathBuf {
    let dir = std::path::Path::new("/dev/shm");
    let base = if dir.is_dir() {
        dir.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("reseal-fuzz-{}.img", std::process::id()))
}

/// Opens `data` as an image and reads it; never panics on its own.
pub fn exercise(data: &[u8]) {
    let path = scratch();
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(dev) = open_image(&path, Access::ReadOnly) {
        read_around(&*dev);
        if let Ok(parts) = list_partitions(&*dev, &path) {
            std::hint::black_box(parts.len());
        }
    }
    let _ = std::fs::remove_file(&path);
}

/// Reads the first and last 64 KiB and a few offsets in between.
fn read_around(dev: &dyn BlockDevice) {
    let len = dev.len();
    let mut buf = vec![0u8; 64 * 1024];
    for at in [0, len / 3, len / 2, len.saturating_sub(buf.len() as u64)] {
        let n = (len.saturating_sub(at)).min(buf.len() as u64) as usize;
        let _ = dev.read_at(at, &mut buf[..n]);
    }
}

fn put_le32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

fn crc32c_field(b: &mut [u8], start: usize, len: usize) {
    if b.len() < start + len {
        return;
    }
    put_le32(b, start + 4, 0);
    let c = CRC32C.checksum(&b[start..start + len]);
    put_le32(b, start + 4, c);
}

/// Recomputes the CRC-32C of both VHDX headers (4 KiB at 64 and 128 KiB)
/// and both region tables (64 KiB at 192 and 256 KiB).
pub fn fix_vhdx_checksums(b: &mut [u8]) {
    const KIB: usize = 1024;
    for at in [64 * KIB, 128 * KIB] {
        crc32c_field(b, at, 4 * KIB);
    }
    for at in [192 * KIB, 256 * KIB] {
        crc32c_field(b, at, 64 * KIB);
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn vhd_checksum(b: &mut [u8], start: usize, len: usize, field: usize) {
    if b.len() < start + len {
        return;
    }
    b[start + field..start + field + 4].fill(0);
    let sum = b[start..start + len]
        .iter()
        .fold(0u32, |s, &x| s.wrapping_add(u32::from(x)));
    b[start + field..start + field + 4].copy_from_slice(&(!sum).to_be_bytes());
}

/// Recomputes the VHD footer checksum (last 512 bytes, and the copy at 0
/// when it is one), the dynamic header's (1 KiB at the footer's data
/// offset), and the GPT header and entry-array CRC-32 of the disk (at LBA
/// 1, 512-byte sectors).
pub fn fix_vhd_gpt_checksums(b: &mut [u8]) {
    let n = b.len();
    if n >= 512 {
        vhd_checksum(b, n - 512, 512, 64);
        if b.starts_with(b"conectix") {
            vhd_checksum(b, 0, 512, 64);
            let off = be32(b, 12).map(u64::from).unwrap_or(u64::MAX);
            if let Ok(off) = usize::try_from(off) {
                vhd_checksum(b, off, 1024, 36);
            }
        }
    }
    // The GPT of a raw image or a fixed VHD (whose data starts at 0).
    let base = 0usize;
    let h = base + 512;
    if b.get(h..h + 8) == Some(&b"EFI PART"[..]) {
        let le32 = |b: &[u8], at: usize| {
            b.get(at..at + 4)
                .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        };
        let le64 = |b: &[u8], at: usize| {
            b.get(at..at + 8).map(|s| {
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                u64::from_le_bytes(a)
            })
        };
        let entries = le64(b, h + 72).unwrap_or(0);
        let count = le32(b, h + 80).unwrap_or(0) as usize;
        let size = le32(b, h + 84).unwrap_or(0) as usize;
        if let (Ok(e), Some(total)) = (usize::try_from(entries), count.checked_mul(size)) {
            let start = base + e.saturating_mul(512);
            if let Some(arr) = b.get(start..start.saturating_add(total)) {
                let c = CRC32.checksum(arr);
                put_le32(b, h + 88, c);
            }
        }
        let hs = le32(b, h + 12).unwrap_or(0) as usize;
        if (92..=512).contains(&hs) && b.len() >= h + hs {
            put_le32(b, h + 16, 0);
            let c = CRC32.checksum(&b[h..h + hs]);
            put_le32(b, h + 16, c);
        }
    }
}
