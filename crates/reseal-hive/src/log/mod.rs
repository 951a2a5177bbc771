//! Transaction-log recovery of dirty hives (old DIRT and new HvLE formats).
//!
//! A hive is dirty when its two sequence numbers differ or its base-block
//! checksum is wrong. Windows 8.1 and later write changes to the `.LOG1` /
//! `.LOG2` files first and to the primary file lazily, so hives copied from a
//! running or crashed system usually need their logs replayed before they
//! can be read or edited. [`recover`] does that replay in memory, following
//! the rules Windows applies:
//!
//! * New format (`HvLE`, file type 6): logs are ordered by header sequence
//!   number with serial-number arithmetic; with a valid primary base block
//!   the first log whose header is not older than the primary's secondary
//!   sequence number is replayed, then another log only if its header
//!   continues exactly at the last applied sequence number + 1. With an
//!   invalid primary base block only the log with the later header is used,
//!   and its header becomes the base block. Entries are replayed until the
//!   first one that fails a check (signature, size, sequence, bins size,
//!   page count, both Marvin32 hashes).
//! * Old format (`DIRT`, file type 1 or 2): a log applies when its timestamp
//!   equals the primary's (or, when the primary base block is invalid, is
//!   not older than the first bin's backup timestamp); the later of two
//!   applicable logs wins.
//!
//! After a replay the base block is made clean (type 0, equal sequence
//! numbers, hive-bins size, checksum) and every bin header is verified.

mod marvin;
mod new_format;
mod old_format;

pub use marvin::{LOG_SEED as MARVIN32_LOG_SEED, marvin32};

use std::path::{Path, PathBuf};

use crate::base_block::{
    BASE_BLOCK_SIZE, BaseBlock, OFF_BOOT_RECOVER, OFF_BOOT_TYPE, OFF_FLAGS, OFF_LENGTH, OFF_SEQ1,
    OFF_SEQ2, OFF_TYPE, TYPE_PRIMARY, checksum, seq_before, seq_max, store_checksum,
};
use crate::bytes::{put_u32, u32_at, u64_at};
use crate::error::{HiveError, Result};
use new_format::{LOG_HEADER_SIZE, NewLog};
use old_format::OldLog;

/// Largest hive-bins size accepted (the 2 GiB limit of stable storage).
pub(crate) const MAX_BINS_SIZE: u32 = 0x8000_0000;

/// One transaction log file's name (for messages) and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// Name used in messages (usually the file name, e.g. `NTUSER.DAT.LOG1`).
    pub name: String,
    /// The whole content of the log file.
    pub bytes: Vec<u8>,
}

/// The format of a transaction log file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// `DIRT` logs (file type 1 or 2): a bitmap of dirty 512-byte pages.
    Old,
    /// `HvLE` logs (file type 6): a sequence of hashed log entries.
    New,
}

/// A log that was replayed into the primary image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedLog {
    /// The log's name as given in [`LogFile::name`].
    pub name: String,
    /// Its format.
    pub format: LogFormat,
    /// Number of entries applied (an old-format log counts as one entry).
    pub entries: usize,
    /// Sequence number of the first applied entry (old format: the header's).
    pub first_sequence: u32,
    /// Sequence number of the last applied entry (old format: the header's).
    pub last_sequence: u32,
}

/// Result of [`recover`].
#[derive(Debug, Clone)]
pub struct Recovery {
    /// The full primary image (base block + bins, plus any bytes the file
    /// had after the bins); clean if anything was applied, otherwise the
    /// input unchanged.
    pub data: Vec<u8>,
    /// The logs applied, in order (empty when the primary was clean).
    pub applied: Vec<AppliedLog>,
    /// Number of dirty pages applied: page references of new-format entries
    /// (whatever their size) plus 512-byte pages of old-format logs.
    pub dirty_pages: usize,
    /// Highest sequence number (serial arithmetic) seen in any valid log
    /// header or valid log entry, even when the primary was clean.
    pub max_log_sequence: Option<u32>,
}

/// What a log file turned out to be.
enum Parsed {
    New(NewLog),
    Old(OldLog),
    Unusable(String),
}

/// Checks that a log header is a consistent snapshot: checksum correct and
/// both sequence numbers equal. Returns the problem, if any.
pub(crate) fn header_problem(bb: &BaseBlock) -> Option<String> {
    if !bb.checksum_ok {
        return Some(format!(
            "header checksum {:#010x} is wrong",
            bb.stored_checksum
        ));
    }
    if bb.seq1 != bb.seq2 {
        return Some(format!(
            "header sequence numbers {} and {} differ (interrupted log write)",
            bb.seq1, bb.seq2
        ));
    }
    None
}

fn classify(log: &LogFile) -> Parsed {
    let b = &log.bytes;
    if b.is_empty() {
        return Parsed::Unusable("empty file".into());
    }
    if b.len() < LOG_HEADER_SIZE {
        return Parsed::Unusable(format!(
            "{} bytes, shorter than a 512-byte log header",
            b.len()
        ));
    }
    let head = &b[..LOG_HEADER_SIZE];
    let Ok(bb) = BaseBlock::parse(&log.name, head) else {
        return Parsed::Unusable(format!("no regf signature (found {:02x?})", &b[0..4]));
    };
    if !bb.checksum_ok {
        return Parsed::Unusable(format!(
            "header checksum {:#010x} is wrong (computed {:#010x})",
            bb.stored_checksum,
            checksum(head)
        ));
    }
    match bb.file_type {
        crate::base_block::TYPE_LOG_NEW => match new_format::parse(&log.name, b, &bb) {
            Ok(l) => Parsed::New(l),
            Err(why) => Parsed::Unusable(why),
        },
        crate::base_block::TYPE_LOG_OLD | crate::base_block::TYPE_LOG_OLD_NT => {
            match old_format::parse(b, &bb) {
                Ok(l) => Parsed::Old(l),
                Err(why) => Parsed::Unusable(why),
            }
        }
        t => Parsed::Unusable(format!(
            "file type {t} is not a transaction log type (1, 2 or 6)"
        )),
    }
}

/// Highest sequence number over valid headers and entries.
fn max_sequence(parsed: &[Parsed]) -> Option<u32> {
    let mut max: Option<u32> = None;
    let mut see = |s: u32| max = Some(max.map_or(s, |m| seq_max(m, s)));
    for p in parsed {
        match p {
            Parsed::New(l) => {
                see(l.header_seq);
                for e in &l.entries {
                    see(e.seq);
                }
            }
            Parsed::Old(l) => see(l.header_seq),
            Parsed::Unusable(_) => {}
        }
    }
    max
}

/// The highest sequence number in any valid log header or entry of `logs`
/// (serial arithmetic), without applying anything.
pub fn max_log_sequence(logs: &[LogFile]) -> Option<u32> {
    let parsed: Vec<Parsed> = logs.iter().map(classify).collect();
    max_sequence(&parsed)
}

/// Recovers `primary` with `logs`.
///
/// A clean primary is returned unchanged (`applied` empty). A dirty primary
/// is replayed with the applicable logs (see the module documentation) and
/// returned clean. A dirty primary without a usable log returns
/// [`HiveError::DirtyWithoutLogs`] whose reason names each log and why it
/// was not usable. Format violations in what is applied (an authentic log
/// entry with impossible contents, or a rebuilt bin with a bad header) give
/// [`HiveError::Corrupt`].
pub fn recover(file: &str, primary: &[u8], logs: &[LogFile]) -> Result<Recovery> {
    let bb = BaseBlock::parse(file, primary)?;
    let parsed: Vec<Parsed> = logs.iter().map(classify).collect();
    let max_log_sequence = max_sequence(&parsed);
    if !bb.is_dirty() {
        return Ok(Recovery {
            data: primary.to_vec(),
            applied: Vec::new(),
            dirty_pages: 0,
            max_log_sequence,
        });
    }
    let valid = bb.checksum_ok && bb.validate_primary(file).is_ok();

    let mut reasons: Vec<String> = Vec::new();
    for (log, p) in logs.iter().zip(&parsed) {
        if let Parsed::Unusable(why) = p {
            reasons.push(format!("{}: {why}", log.name));
        }
    }
    let news: Vec<(&LogFile, &NewLog)> = logs
        .iter()
        .zip(&parsed)
        .filter_map(|(f, p)| match p {
            Parsed::New(l) => Some((f, l)),
            _ => None,
        })
        .collect();
    let olds: Vec<(&LogFile, &OldLog)> = logs
        .iter()
        .zip(&parsed)
        .filter_map(|(f, p)| match p {
            Parsed::Old(l) => Some((f, l)),
            _ => None,
        })
        .collect();

    let done = if news.is_empty() {
        None
    } else {
        recover_new(file, primary, &bb, valid, &news, &mut reasons)?
    };
    let done = match done {
        Some(r) => Some(r),
        None if !olds.is_empty() => recover_old(file, primary, &bb, valid, &olds, &mut reasons)?,
        None => None,
    };
    match done {
        Some((data, applied, dirty_pages)) => Ok(Recovery {
            data,
            applied,
            dirty_pages,
            max_log_sequence,
        }),
        None => Err(HiveError::DirtyWithoutLogs {
            file: file.to_string(),
            primary: bb.seq1,
            secondary: bb.seq2,
            reason: if logs.is_empty() {
                "no transaction log file (.LOG, .LOG1, .LOG2) was found".to_string()
            } else {
                reasons.join("; ")
            },
        }),
    }
}

/// Image, applied logs, dirty page count.
type Replayed = (Vec<u8>, Vec<AppliedLog>, usize);

/// The primary image to replay into: a copy padded to a full base block.
fn start_image(primary: &[u8]) -> Vec<u8> {
    let mut image = primary.to_vec();
    if image.len() < BASE_BLOCK_SIZE {
        image.resize(BASE_BLOCK_SIZE, 0);
    }
    image
}

/// A log is worth selecting when it has entries to apply (or an authentic
/// entry whose contents must be reported).
fn has_work(l: &NewLog) -> bool {
    !l.entries.is_empty() || l.fatal.is_some()
}

fn recover_new(
    file: &str,
    primary: &[u8],
    bb: &BaseBlock,
    valid: bool,
    news: &[(&LogFile, &NewLog)],
    reasons: &mut Vec<String>,
) -> Result<Option<Replayed>> {
    let mut image = start_image(primary);
    // Indexes into `news`, in replay order.
    let mut order: Vec<usize> = Vec::new();
    if valid {
        let seq2 = bb.seq2;
        let mut eligible: Vec<usize> = Vec::new();
        for (i, (f, l)) in news.iter().enumerate() {
            if seq_before(l.header_seq, seq2) {
                reasons.push(format!(
                    "{}: stale (header sequence {} is older than the hive's secondary sequence {seq2})",
                    f.name, l.header_seq
                ));
            } else if !has_work(l) {
                reasons.push(format!("{}: no valid log entry ({})", f.name, l.stop));
            } else {
                eligible.push(i);
            }
        }
        // Distance from the primary's sequence orders eligible logs in serial
        // arithmetic (all of them lie in [seq2, seq2 + 2^31)).
        eligible.sort_by_key(|&i| news[i].1.header_seq.wrapping_sub(seq2));
        let Some(&first) = eligible.first() else {
            return Ok(None);
        };
        order.push(first);
        let mut last = last_seq(news[first].1);
        while let Some(next) = eligible.iter().copied().find(|&i| {
            !order.contains(&i)
                && news[i].1.header_seq == last.wrapping_add(1)
                && !news[i].1.entries.is_empty()
        }) {
            order.push(next);
            last = last_seq(news[next].1);
        }
    } else {
        // Invalid base block: only the log with the later header counts.
        let mut best: Option<usize> = None;
        for (i, (f, l)) in news.iter().enumerate() {
            if !has_work(l) {
                reasons.push(format!("{}: no valid log entry ({})", f.name, l.stop));
                continue;
            }
            best = match best {
                Some(b) if !seq_before(news[b].1.header_seq, l.header_seq) => Some(b),
                _ => Some(i),
            };
        }
        let Some(best) = best else {
            return Ok(None);
        };
        image[..LOG_HEADER_SIZE].copy_from_slice(&news[best].0.bytes[..LOG_HEADER_SIZE]);
        order.push(best);
    }

    let mut applied = Vec::new();
    let mut dirty_pages = 0usize;
    let mut tail: Option<(u32, u32, u32)> = None; // seq, bins size, flags
    for &i in &order {
        let (f, l) = news[i];
        for e in &l.entries {
            new_format::apply_entry(&mut image, &f.bytes, e);
            dirty_pages += e.pages.len();
            tail = Some((e.seq, e.bins_size, e.flags));
        }
        if let Some(fatal) = &l.fatal {
            return Err(fatal.error());
        }
        if let (Some(a), Some(z)) = (l.entries.first(), l.entries.last()) {
            applied.push(AppliedLog {
                name: f.name.clone(),
                format: LogFormat::New,
                entries: l.entries.len(),
                first_sequence: a.seq,
                last_sequence: z.seq,
            });
        }
    }
    let Some((seq, bins_size, flags)) = tail else {
        return Ok(None);
    };
    let old_flags = u32_at(&image, OFF_FLAGS).unwrap_or(0);
    put_u32(&mut image, OFF_FLAGS, (old_flags & !1) | (flags & 1));
    finish(file, &mut image, seq.wrapping_add(1), bins_size)?;
    Ok(Some((image, applied, dirty_pages)))
}

fn last_seq(l: &NewLog) -> u32 {
    l.entries.last().map_or(l.header_seq, |e| e.seq)
}

fn recover_old(
    file: &str,
    primary: &[u8],
    bb: &BaseBlock,
    valid: bool,
    olds: &[(&LogFile, &OldLog)],
    reasons: &mut Vec<String>,
) -> Result<Option<Replayed>> {
    // The timestamp a log must match: the base block's when it is valid,
    // else the backup copy in the first bin (which Windows does not refresh
    // on every write, so a later log timestamp is accepted).
    let hbin_ts = (primary.get(BASE_BLOCK_SIZE..BASE_BLOCK_SIZE + 4) == Some(b"hbin".as_slice()))
        .then(|| u64_at(primary, BASE_BLOCK_SIZE + 20))
        .flatten();
    let mut best: Option<usize> = None;
    for (i, (f, l)) in olds.iter().enumerate() {
        let ok = if valid {
            if l.timestamp != bb.timestamp {
                reasons.push(format!(
                    "{}: timestamp {:#x} does not match the hive's {:#x}",
                    f.name, l.timestamp, bb.timestamp
                ));
            }
            l.timestamp == bb.timestamp
        } else {
            match hbin_ts {
                Some(t) if l.timestamp >= t => true,
                Some(t) => {
                    reasons.push(format!(
                        "{}: timestamp {:#x} is older than the first bin's {t:#x}",
                        f.name, l.timestamp
                    ));
                    false
                }
                None => {
                    reasons.push(format!(
                        "{}: the hive's base block is invalid and it has no first bin to compare timestamps with",
                        f.name
                    ));
                    false
                }
            }
        };
        if ok {
            best = match best {
                Some(b) if olds[b].1.timestamp >= l.timestamp => Some(b),
                _ => Some(i),
            };
        }
    }
    let Some(best) = best else {
        return Ok(None);
    };
    let (f, l) = olds[best];
    let mut image = start_image(primary);
    let seq = if valid {
        seq_max(seq_max(bb.seq1, bb.seq2), l.header_seq)
    } else {
        image[..LOG_HEADER_SIZE].copy_from_slice(&f.bytes[..LOG_HEADER_SIZE]);
        l.header_seq
    };
    old_format::apply(&mut image, &f.bytes, l);
    finish(file, &mut image, seq, l.length)?;
    let applied = vec![AppliedLog {
        name: f.name.clone(),
        format: LogFormat::Old,
        entries: 1,
        first_sequence: l.header_seq,
        last_sequence: l.header_seq,
    }];
    Ok(Some((image, applied, l.pages.len())))
}

/// Makes the base block clean and verifies the rebuilt bins.
fn finish(file: &str, image: &mut [u8], seq: u32, bins_size: u32) -> Result<()> {
    put_u32(image, OFF_SEQ1, seq);
    put_u32(image, OFF_SEQ2, seq);
    put_u32(image, OFF_TYPE, TYPE_PRIMARY);
    put_u32(image, OFF_LENGTH, bins_size);
    put_u32(image, OFF_BOOT_TYPE, 0);
    put_u32(image, OFF_BOOT_RECOVER, 0);
    store_checksum(&mut image[..BASE_BLOCK_SIZE]);
    // The base block may come from a log header: it must be one a loader
    // accepts.
    BaseBlock::parse(file, image)?.validate_primary(file)?;
    verify_bins(file, image, bins_size)
}

/// Checks that the bins area `[4096, 4096 + bins_size)` is present and made
/// of contiguous bins with correct signature, offset and size.
fn verify_bins(file: &str, image: &[u8], bins_size: u32) -> Result<()> {
    let end = BASE_BLOCK_SIZE + bins_size as usize;
    if image.len() < end {
        return Err(HiveError::corrupt(
            file,
            image.len() as u64,
            "hive bins data after recovery",
            format!("{bins_size:#x} bytes of bins (file end at {end:#x})"),
            format!("file end at {:#x}", image.len()),
        ));
    }
    let mut pos = BASE_BLOCK_SIZE;
    while pos < end {
        let sig = &image[pos..pos + 4];
        if sig != b"hbin" {
            return Err(HiveError::corrupt(
                file,
                pos as u64,
                "hive bin signature after recovery",
                "\"hbin\"",
                format!("{sig:02x?}"),
            ));
        }
        let off = u32_at(image, pos + 4).unwrap_or(0);
        if off as usize != pos - BASE_BLOCK_SIZE {
            return Err(HiveError::corrupt(
                file,
                pos as u64 + 4,
                "hive bin offset after recovery",
                format!("{:#x}", pos - BASE_BLOCK_SIZE),
                format!("{off:#x}"),
            ));
        }
        let size = u32_at(image, pos + 8).unwrap_or(0) as usize;
        if size == 0 || size % 4096 != 0 || size > end - pos {
            return Err(HiveError::corrupt(
                file,
                pos as u64 + 8,
                "hive bin size after recovery",
                format!(
                    "a non-zero multiple of 4096 ending by {:#x}",
                    end - BASE_BLOCK_SIZE
                ),
                format!("{size:#x}"),
            ));
        }
        pos += size;
    }
    Ok(())
}

/// Lists the existing log files beside a hive: `<name>.LOG`, `<name>.LOG1`
/// and `<name>.LOG2`, in that order.
///
/// Names are matched case-insensitively within the hive's directory, as on
/// Windows (captured files come as `ntuser.dat.LOG1` next to `NTUSER.DAT`).
/// When several spellings exist, the exact one wins, then the first in
/// byte order.
pub fn find_log_paths(hive: &Path) -> Vec<PathBuf> {
    let Some(name) = hive.file_name() else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let dir = match hive.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut listing: Vec<(String, PathBuf)> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_str()?.to_string();
                Some((n, e.path()))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    listing.sort();
    let mut found = Vec::new();
    for ext in ["LOG", "LOG1", "LOG2"] {
        let wanted = format!("{name}.{ext}");
        let wanted_lower = wanted.to_lowercase();
        let exact = listing.iter().find(|(n, _)| *n == wanted);
        let any = exact.or_else(|| {
            listing
                .iter()
                .find(|(n, _)| n.to_lowercase() == wanted_lower)
        });
        match any {
            Some((_, p)) if p.is_file() => found.push(p.clone()),
            _ => {
                // Directory not listable: fall back to the exact spelling.
                let p = dir.join(&wanted);
                if listing.is_empty() && p.is_file() {
                    found.push(p);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal hive: base block + one empty 4 KiB bin.
    fn tiny_hive(seq1: u32, seq2: u32) -> Vec<u8> {
        let mut h = vec![0u8; BASE_BLOCK_SIZE + 4096];
        h[0..4].copy_from_slice(b"regf");
        put_u32(&mut h, OFF_SEQ1, seq1);
        put_u32(&mut h, OFF_SEQ2, seq2);
        put_u32(&mut h, 20, 1);
        put_u32(&mut h, 24, 5);
        put_u32(&mut h, 32, 1);
        put_u32(&mut h, 36, 0x20);
        put_u32(&mut h, OFF_LENGTH, 4096);
        put_u32(&mut h, 44, 1);
        store_checksum(&mut h[..BASE_BLOCK_SIZE]);
        h[4096..4100].copy_from_slice(b"hbin");
        put_u32(&mut h, 4096 + 8, 4096);
        h
    }

    /// A new-format log whose entries each rewrite the bin with `marker`
    /// at bin offset 0x100, numbered from `first`.
    fn log(name: &str, hive: &[u8], first: u32, markers: &[u8]) -> LogFile {
        let mut b = hive[..512].to_vec();
        put_u32(&mut b, OFF_SEQ1, first);
        put_u32(&mut b, OFF_SEQ2, first);
        put_u32(&mut b, OFF_TYPE, 6);
        store_checksum(&mut b);
        for (k, &m) in markers.iter().enumerate() {
            let mut page = hive[4096..8192].to_vec();
            page[0x100] = m;
            let mut e = vec![0u8; 48];
            e[0..4].copy_from_slice(b"HvLE");
            put_u32(&mut e, 8, 0);
            put_u32(&mut e, 12, first.wrapping_add(k as u32));
            put_u32(&mut e, 16, 4096);
            put_u32(&mut e, 20, 1);
            put_u32(&mut e, 40, 0);
            put_u32(&mut e, 44, 4096);
            e.extend_from_slice(&page);
            e.resize(e.len().next_multiple_of(512), 0);
            let size = e.len() as u32;
            put_u32(&mut e, 4, size);
            let h1 = marvin32(&e[40..], MARVIN32_LOG_SEED);
            e[24..32].copy_from_slice(&h1.to_le_bytes());
            let h2 = marvin32(&e[..32], MARVIN32_LOG_SEED);
            e[32..40].copy_from_slice(&h2.to_le_bytes());
            b.extend_from_slice(&e);
        }
        LogFile {
            name: name.into(),
            bytes: b,
        }
    }

    #[test]
    fn serial_ordering_across_wraparound() {
        // Primary at 0xFFFFFFFF/0xFFFFFFFE; LOG1 continues after the wrap
        // (header 0), LOG2 holds the earlier entries (0xFFFFFFFE, 0xFFFFFFFF).
        let hive = tiny_hive(0xFFFF_FFFF, 0xFFFF_FFFE);
        let l1 = log("h.LOG1", &hive, 0, &[0xA1, 0xA2]);
        let l2 = log("h.LOG2", &hive, 0xFFFF_FFFE, &[0xB1, 0xB2]);
        let r = recover("h", &hive, &[l1, l2]).unwrap();
        let names: Vec<&str> = r.applied.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            ["h.LOG2", "h.LOG1"],
            "the log before the wrap goes first"
        );
        assert_eq!(r.applied[0].first_sequence, 0xFFFF_FFFE);
        assert_eq!(r.applied[1].last_sequence, 1);
        assert_eq!(
            r.data[4096 + 0x100],
            0xA2,
            "the last entry after the wrap wins"
        );
        let bb = BaseBlock::parse("h", &r.data).unwrap();
        assert_eq!((bb.seq1, bb.seq2), (2, 2));
        assert!(bb.checksum_ok && !bb.is_dirty());
        assert_eq!(r.dirty_pages, 4);
        assert_eq!(
            r.max_log_sequence,
            Some(1),
            "1 is later than 0xFFFFFFFF in serial order"
        );
    }

    #[test]
    fn stale_log_is_not_eligible_and_gap_is_not_chained() {
        let hive = tiny_hive(11, 10);
        // LOG1 is stale (9 < 10); LOG2 starts at 10; a third log at 13
        // leaves a gap after 11 and must not be chained.
        let l1 = log("h.LOG1", &hive, 9, &[1]);
        let l2 = log("h.LOG2", &hive, 10, &[2, 3]);
        let l3 = log("h.LOG", &hive, 13, &[4]);
        let r = recover("h", &hive, &[l1.clone(), l2, l3]).unwrap();
        assert_eq!(r.applied.len(), 1);
        assert_eq!(r.applied[0].name, "h.LOG2");
        assert_eq!(r.data[4096 + 0x100], 3);
        assert_eq!(r.max_log_sequence, Some(13));
        match recover("h", &hive, &[l1]) {
            Err(HiveError::DirtyWithoutLogs {
                reason,
                primary,
                secondary,
                ..
            }) => {
                assert_eq!((primary, secondary), (11, 10));
                assert!(
                    reason.contains("h.LOG1") && reason.contains("stale"),
                    "{reason}"
                );
            }
            other => panic!("expected DirtyWithoutLogs, got {other:?}"),
        }
    }

    #[test]
    fn clean_primary_is_returned_unchanged() {
        let hive = tiny_hive(5, 5);
        let l = log("h.LOG1", &hive, 6, &[9]);
        let r = recover("h", &hive, &[l]).unwrap();
        assert_eq!(r.data, hive);
        assert!(r.applied.is_empty());
        assert_eq!(r.max_log_sequence, Some(6));
    }

    #[test]
    fn header_problem_reports_sequence_mismatch() {
        let mut b = vec![0u8; 512];
        b[0..4].copy_from_slice(b"regf");
        put_u32(&mut b, OFF_SEQ1, 7);
        put_u32(&mut b, OFF_SEQ2, 6);
        store_checksum(&mut b);
        let bb = BaseBlock::parse("x", &b).unwrap();
        assert!(header_problem(&bb).unwrap().contains("7 and 6"));
    }
}
