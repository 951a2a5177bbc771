//! The write-ahead journal of a disk image commit: every page to be written
//! into the image, in a file beside it, synced before the first in-place
//! write and removed after the last one is flushed.
//!
//! A commit writes its changed pages (offsets in the virtual disk, so the
//! same bytes go through the container format again on replay) to
//! `<image>.reseal-journal`, syncs it and its directory, writes the pages
//! into the image, flushes the image, then removes the journal. The next
//! open of the image finds a leftover journal: when it is complete (its
//! trailer and checksums are right) the pages are written again (roll
//! forward: writing a page twice gives the same result); when it is torn,
//! the kill came before any in-place write, and it is removed.
//!
//! Layout (little-endian): the magic `RESEALPJ`, version (u32 = 1), number
//! of runs (u32); per run its offset (u64), length (u32), CRC-32C of its
//! data (u32) and the data; then `RESEALPE` and the CRC-32C of everything
//! before it. Hand-written because it is a private format of a few fields.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::disk::{Access, BlockDevice, open_image};
use crate::error::{ResealError, Result};

const MAGIC: &[u8; 8] = b"RESEALPJ";
const END: &[u8; 8] = b"RESEALPE";
const VERSION: u32 = 1;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Where the journal of `image` lives.
pub(super) fn path_of(image: &Path) -> PathBuf {
    let mut name = image.file_name().unwrap_or_default().to_os_string();
    name.push(".reseal-journal");
    image.with_file_name(name)
}

fn io_err(path: &Path, action: &'static str, e: io::Error) -> ResealError {
    ResealError::Io {
        path: path.to_path_buf(),
        action,
        source: e,
    }
}

fn sync_dir_of(p: &Path) -> io::Result<()> {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Bytes the journal of these runs takes.
pub(super) fn size_of(runs: &[(u64, Vec<u8>)]) -> u64 {
    16 + runs.iter().map(|(_, d)| 16 + d.len() as u64).sum::<u64>() + 12
}

/// Writes the journal of `runs` (virtual disk offsets) beside `image` and
/// syncs it and its directory.
pub(super) fn write(image: &Path, runs: &[(u64, Vec<u8>)]) -> Result<PathBuf> {
    let path = path_of(image);
    let mut buf = Vec::with_capacity(usize::try_from(size_of(runs)).unwrap_or(0));
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    let count = u32::try_from(runs.len()).map_err(|_| ResealError::InvalidInput {
        what: image.display().to_string(),
        message: "too many changed runs for one journal".into(),
    })?;
    buf.extend_from_slice(&count.to_le_bytes());
    for (at, data) in runs {
        let len = u32::try_from(data.len()).map_err(|_| ResealError::InvalidInput {
            what: image.display().to_string(),
            message: "a changed run over 4 GiB".into(),
        })?;
        buf.extend_from_slice(&at.to_le_bytes());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&CRC.checksum(data).to_le_bytes());
        buf.extend_from_slice(data);
    }
    buf.extend_from_slice(END);
    let sum = CRC.checksum(&buf);
    buf.extend_from_slice(&sum.to_le_bytes());
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| io_err(&path, "create the write journal", e))?;
    f.write_all(&buf)
        .and_then(|()| f.sync_all())
        .and_then(|()| sync_dir_of(&path))
        .map_err(|e| {
            let _ = fs::remove_file(&path);
            io_err(&path, "write the write journal", e)
        })?;
    Ok(path)
}

/// Removes the journal once every page is in the image and flushed.
pub(super) fn remove(path: &Path) -> Result<()> {
    fs::remove_file(path)
        .and_then(|()| sync_dir_of(path))
        .map_err(|e| io_err(path, "remove the write journal", e))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Parses a journal: its runs when it is complete, `None` when torn.
fn parse(b: &[u8]) -> Option<Vec<(u64, Vec<u8>)>> {
    if b.len() < 28 || b.get(..8)? != MAGIC || le32(b, 8)? != VERSION {
        return None;
    }
    let body = b.len() - 4;
    if CRC.checksum(b.get(..body)?) != le32(b, body)? || b.get(body - 8..body)? != END {
        return None;
    }
    let count = le32(b, 12)?;
    let mut at = 16usize;
    let mut runs = Vec::new();
    for _ in 0..count {
        let off = le64(b, at)?;
        let len = le32(b, at + 8)? as usize;
        let sum = le32(b, at + 12)?;
        let data = b.get(at + 16..at.checked_add(16)?.checked_add(len)?)?;
        if CRC.checksum(data) != sum {
            return None;
        }
        runs.push((off, data.to_vec()));
        at += 16 + len;
    }
    (at == body - 8).then_some(runs)
}

/// What replaying a leftover journal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// A complete journal: its pages were written into the image.
    RolledForward {
        /// Bytes written.
        bytes: u64,
    },
    /// A torn journal (killed while it was written, before any in-place
    /// write): removed, the image is as before that run.
    Discarded,
}

/// Finishes what a killed commit left: replays or discards the journal
/// beside `image`, if there is one. The caller holds a write lock.
pub(super) fn recover(image: &Path) -> Result<Option<Replay>> {
    let path = path_of(image);
    let mut bytes = Vec::new();
    match File::open(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path, "open the write journal", e)),
        Ok(mut f) => {
            f.read_to_end(&mut bytes)
                .map_err(|e| io_err(&path, "read the write journal", e))?;
        }
    }
    let outcome = match parse(&bytes) {
        None => Replay::Discarded,
        Some(runs) => {
            let mut dev = open_image(image, Access::ReadWrite)?;
            let mut total = 0u64;
            for (at, data) in &runs {
                dev.write_at(*at, data)?;
                total += data.len() as u64;
            }
            dev.flush()?;
            Replay::RolledForward { bytes: total }
        }
    };
    remove(&path)?;
    Ok(Some(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_reads_back_and_any_cut_is_torn() {
        let runs = vec![(4096u64, vec![7u8; 8192]), (1 << 20, vec![9u8; 512])];
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("x.raw");
        let p = write(&img, &runs).unwrap();
        let b = fs::read(&p).unwrap();
        assert_eq!(b.len() as u64, size_of(&runs));
        assert_eq!(parse(&b), Some(runs));
        for cut in [0, 10, 16, 100, b.len() / 2, b.len() - 5, b.len() - 1] {
            assert_eq!(parse(&b[..cut]), None, "cut at {cut}");
        }
        let mut flipped = b.clone();
        flipped[40] ^= 1;
        assert_eq!(parse(&flipped), None);
    }
}
