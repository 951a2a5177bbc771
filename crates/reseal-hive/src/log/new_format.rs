//! New-format (`HvLE`, file type 6) transaction logs: header check, entry
//! walk with full validation, and page application.

use super::marvin::{LOG_SEED, marvin32};
use super::{MAX_BINS_SIZE, header_problem};
use crate::base_block::{BASE_BLOCK_SIZE, BaseBlock, TYPE_LOG_NEW};
use crate::bytes::{u32_at, u64_at};
use crate::error::HiveError;

/// Size of a log file's header (a copy of the first 512 base-block bytes).
pub(super) const LOG_HEADER_SIZE: usize = 512;
/// Size of the fixed part of an entry, before the page references.
const ENTRY_HEADER_SIZE: usize = 40;

/// One dirty page of an entry: where it goes and where its bytes are.
#[derive(Debug, Clone, Copy)]
pub(super) struct Page {
    /// Offset in the hive-bins area.
    pub dst: usize,
    /// Offset of the page bytes in the log file.
    pub src: usize,
    /// Number of bytes.
    pub len: usize,
}

/// A log entry that passed every check.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// Entry flags (bit 0 mirrors base-block flags bit 0).
    pub flags: u32,
    /// Sequence number.
    pub seq: u32,
    /// Hive-bins data size after this entry.
    pub bins_size: u32,
    /// Pages to copy.
    pub pages: Vec<Page>,
}

/// The result of walking a new-format log.
#[derive(Debug)]
pub(super) struct NewLog {
    /// Sequence number of the log header (= first entry's).
    pub header_seq: u32,
    /// Consecutive valid entries from offset 512.
    pub entries: Vec<Entry>,
    /// Why the walk stopped (informative).
    pub stop: String,
    /// A hash-valid but inconsistent entry found after `entries`; applying
    /// this log must fail with it.
    pub fatal: Option<Fatal>,
}

/// The parts of a [`HiveError::Corrupt`] describing an impossible entry.
#[derive(Debug, Clone)]
pub(super) struct Fatal {
    file: String,
    offset: u64,
    what: &'static str,
    expected: String,
    found: String,
}

impl Fatal {
    /// Builds the error to return.
    pub fn error(&self) -> HiveError {
        HiveError::corrupt(
            &self.file,
            self.offset,
            self.what,
            self.expected.clone(),
            self.found.clone(),
        )
    }
}

/// Checks the header of a log that declares file type 6 and walks its entries.
/// `Err` carries the reason the log cannot be used.
pub(super) fn parse(name: &str, bytes: &[u8], bb: &BaseBlock) -> Result<NewLog, String> {
    if bb.file_type != TYPE_LOG_NEW {
        return Err(format!("file type {} is not 6", bb.file_type));
    }
    if let Some(why) = header_problem(bb) {
        return Err(why);
    }
    let mut log = NewLog {
        header_seq: bb.seq1,
        entries: Vec::new(),
        stop: String::new(),
        fatal: None,
    };
    let mut pos = LOG_HEADER_SIZE;
    let mut expected = bb.seq1;
    loop {
        match check_entry(name, bytes, pos, expected) {
            Ok((entry, size)) => {
                log.entries.push(entry);
                pos += size;
                expected = expected.wrapping_add(1);
            }
            Err(Stop::End(why)) => {
                log.stop = why;
                break;
            }
            Err(Stop::Fatal(f)) => {
                log.stop = f.error().to_string();
                log.fatal = Some(f);
                break;
            }
        }
    }
    Ok(log)
}

/// Why an entry walk ended.
enum Stop {
    /// Normal end of the valid entries (garbage, stale or torn data).
    End(String),
    /// An entry whose hashes are valid but whose contents are impossible.
    Fatal(Fatal),
}

/// Validates the entry at `pos`; returns it and its size.
fn check_entry(name: &str, b: &[u8], pos: usize, expected: u32) -> Result<(Entry, usize), Stop> {
    let end = |why: String| Err(Stop::End(format!("entry at offset {pos:#x}: {why}")));
    if pos >= b.len() {
        return end("end of file".into());
    }
    let Some(head) = pos
        .checked_add(ENTRY_HEADER_SIZE)
        .and_then(|e| b.get(pos..e))
    else {
        return end("truncated entry header".into());
    };
    if &head[0..4] != b"HvLE" {
        return end(format!("signature {:02x?} is not HvLE", &head[0..4]));
    }
    let g = |o: usize| u32_at(head, o).unwrap_or(0);
    let size = g(4) as usize;
    let flags = g(8);
    let seq = g(12);
    let bins_size = g(16);
    let count = g(20) as usize;
    if size < 512 || size % 512 != 0 {
        return end(format!("size {size:#x} is not a non-zero multiple of 512"));
    }
    let Some(body) = pos.checked_add(size).and_then(|e| b.get(pos..e)) else {
        return end(format!("size {size:#x} runs past the end of the file"));
    };
    if seq != expected {
        return end(format!("sequence {seq} is not the expected {expected}"));
    }
    if bins_size == 0 || bins_size % 4096 != 0 {
        return end(format!(
            "hive bins size {bins_size:#x} is not a non-zero multiple of 4096"
        ));
    }
    if count == 0 {
        return end("dirty page count is 0".into());
    }
    let hash1 = u64_at(head, 24).unwrap_or(0);
    let hash2 = u64_at(head, 32).unwrap_or(0);
    if marvin32(&body[0..32], LOG_SEED) != hash2 {
        return end("header hash mismatch".into());
    }
    if marvin32(&body[ENTRY_HEADER_SIZE..], LOG_SEED) != hash1 {
        return end("data hash mismatch".into());
    }

    // From here on the entry is authentic; inconsistencies are errors.
    let fatal = |off: usize, what: &'static str, expected: String, found: String| {
        Err(Stop::Fatal(Fatal {
            file: name.to_string(),
            offset: (pos + off) as u64,
            what,
            expected,
            found,
        }))
    };
    if bins_size > MAX_BINS_SIZE {
        return fatal(
            16,
            "log entry hive bins size",
            "at most 2 GiB".into(),
            format!("{bins_size:#x}"),
        );
    }
    let refs_end = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(ENTRY_HEADER_SIZE))
        .filter(|&n| n <= size);
    let Some(refs_end) = refs_end else {
        return fatal(
            20,
            "log entry dirty page count",
            format!("references that fit in the entry size {size:#x}"),
            count.to_string(),
        );
    };
    let mut pages = Vec::with_capacity(count);
    let mut src = refs_end;
    for i in 0..count {
        let r = ENTRY_HEADER_SIZE + 8 * i;
        let dst = u32_at(body, r).unwrap_or(0) as usize;
        let len = u32_at(body, r + 4).unwrap_or(0) as usize;
        if dst.checked_add(len).is_none_or(|e| e > bins_size as usize) {
            return fatal(
                r,
                "log entry page reference",
                format!("a page inside the hive bins size {bins_size:#x}"),
                format!("offset {dst:#x}, size {len:#x}"),
            );
        }
        match src.checked_add(len) {
            Some(e) if e <= size => {}
            _ => {
                return fatal(
                    r + 4,
                    "log entry page size",
                    format!("page data inside the entry of size {size:#x}"),
                    format!("{len:#x} bytes at entry offset {src:#x}"),
                );
            }
        }
        pages.push(Page {
            dst,
            src: pos + src,
            len,
        });
        src += len;
    }
    Ok((
        Entry {
            flags,
            seq,
            bins_size,
            pages,
        },
        size,
    ))
}

/// Copies the pages of `entry` from `log` into `image` (base block + bins),
/// growing the image when a page lies past its end.
pub(super) fn apply_entry(image: &mut Vec<u8>, log: &[u8], entry: &Entry) {
    for p in &entry.pages {
        // Offsets were bounds-checked in `check_entry` (dst + len <= 2 GiB,
        // src + len inside the log).
        let at = BASE_BLOCK_SIZE + p.dst;
        let end = at + p.len;
        if image.len() < end {
            image.resize(end, 0);
        }
        image[at..end].copy_from_slice(&log[p.src..p.src + p.len]);
    }
}
