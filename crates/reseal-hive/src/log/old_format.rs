//! Old-format (`DIRT`, file type 1 or 2) transaction logs: a header, a
//! dirty-page bitmap and the dirty 512-byte pages in bitmap order.

use super::new_format::{LOG_HEADER_SIZE, Page};
use super::{MAX_BINS_SIZE, header_problem};
use crate::base_block::{BASE_BLOCK_SIZE, BaseBlock, TYPE_LOG_OLD, TYPE_LOG_OLD_NT};
use crate::bytes::round_up;

/// Size of one page of the old format.
const PAGE: usize = 512;

/// A usable old-format log.
#[derive(Debug, Clone)]
pub(super) struct OldLog {
    /// Sequence number of the header (Sequence1 = Sequence2).
    pub header_seq: u32,
    /// Last-written timestamp of the header.
    pub timestamp: u64,
    /// Hive-bins data size recorded in the header.
    pub length: u32,
    /// The dirty pages, in bitmap order.
    pub pages: Vec<Page>,
}

/// Checks an old-format log completely (header, bitmap, presence of every
/// page). `Err` carries the reason the log cannot be used.
pub(super) fn parse(bytes: &[u8], bb: &BaseBlock) -> Result<OldLog, String> {
    if bb.file_type != TYPE_LOG_OLD && bb.file_type != TYPE_LOG_OLD_NT {
        return Err(format!("file type {} is not 1 or 2", bb.file_type));
    }
    if let Some(why) = header_problem(bb) {
        return Err(why);
    }
    let length = bb.length;
    if length == 0 || length % 4096 != 0 {
        return Err(format!(
            "hive bins size {length:#x} is not a non-zero multiple of 4096"
        ));
    }
    if length > MAX_BINS_SIZE {
        return Err(format!("hive bins size {length:#x} exceeds 2 GiB"));
    }
    let sig = bytes.get(LOG_HEADER_SIZE..LOG_HEADER_SIZE + 4);
    if sig != Some(b"DIRT".as_slice()) {
        return Err(format!("dirty vector signature {sig:02x?} is not DIRT"));
    }
    let bitmap_len = length as usize / 4096;
    let bitmap_at = LOG_HEADER_SIZE + 4;
    let Some(bitmap) = bytes.get(bitmap_at..bitmap_at + bitmap_len) else {
        return Err(format!(
            "dirty vector of {bitmap_len} bytes runs past the end of the file ({} bytes)",
            bytes.len()
        ));
    };
    let start = round_up(bitmap_at + bitmap_len, PAGE);
    let mut pages = Vec::new();
    for bit in 0..bitmap_len * 8 {
        if bitmap[bit / 8] >> (bit % 8) & 1 == 1 {
            let src = start + pages.len() * PAGE;
            pages.push(Page {
                dst: bit * PAGE,
                src,
                len: PAGE,
            });
        }
    }
    let needed = start + pages.len() * PAGE;
    if needed > bytes.len() {
        return Err(format!(
            "truncated: {} dirty pages need {needed:#x} bytes, the file has {:#x}",
            pages.len(),
            bytes.len()
        ));
    }
    Ok(OldLog {
        header_seq: bb.seq1,
        timestamp: bb.timestamp,
        length,
        pages,
    })
}

/// Copies the dirty pages of `log` (from `bytes`) into `image`.
pub(super) fn apply(image: &mut Vec<u8>, bytes: &[u8], log: &OldLog) {
    for p in &log.pages {
        // `parse` checked that every page is inside the log and that
        // dst + len <= length <= 2 GiB.
        let at = BASE_BLOCK_SIZE + p.dst;
        let end = at + p.len;
        if image.len() < end {
            image.resize(end, 0);
        }
        image[at..end].copy_from_slice(&bytes[p.src..p.src + p.len]);
    }
}
