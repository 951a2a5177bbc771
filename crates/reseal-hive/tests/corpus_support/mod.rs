//! Shared helpers of the corpus evidence tests (`corpus_roundtrip`,
//! `corpus_edits`, `corpus_sid_rewrite`): staging a corpus hive with its
//! transaction logs in a temporary directory (decompressing `.xz` files),
//! reading base-block and log sequence numbers straight from the bytes, and
//! dumping a hive with every independent reader that is installed.
//!
//! Include it after `mod common;` with `mod corpus_support;`.
#![allow(dead_code)]

use crate::common::{
    self, Dump, PyLib, dump_hivex, dump_python, dump_regfexport, require_python, tool_exists,
};
use std::path::{Path, PathBuf};

/// Reads a corpus file, decompressing it when its name ends in `.xz`.
pub fn load(path: &Path) -> Vec<u8> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut &raw[..], &mut out)
            .unwrap_or_else(|e| panic!("xz {}: {e:?}", path.display()));
        out
    } else {
        raw
    }
}

/// A file name without a trailing `.xz`.
pub fn plain_name(path: &Path) -> String {
    let n = path.file_name().unwrap().to_string_lossy().into_owned();
    n.strip_suffix(".xz").map(str::to_string).unwrap_or(n)
}

/// The transaction logs stored beside a corpus hive: files of the same
/// directory named `<hive>.LOG`, `.LOG1`, `.LOG2` (any case, optionally
/// `.xz`-compressed).
pub fn corpus_logs(hive: &Path) -> Vec<PathBuf> {
    let base = plain_name(hive).to_lowercase();
    let dir = hive.parent().unwrap();
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let n = plain_name(p).to_lowercase();
            ["log", "log1", "log2"]
                .iter()
                .any(|ext| n == format!("{base}.{ext}"))
        })
        .collect();
    out.sort();
    out
}

/// A corpus hive copied (decompressed) into `dir` together with its logs,
/// keeping their names (minus `.xz`).
pub struct Staged {
    /// The staged hive file.
    pub hive: PathBuf,
    /// The staged log files.
    pub logs: Vec<PathBuf>,
}

/// Copies the corpus hive `src` and its logs into `dir`.
pub fn stage(src: &Path, dir: &Path) -> Staged {
    std::fs::create_dir_all(dir).unwrap();
    let hive = dir.join(plain_name(src));
    std::fs::write(&hive, load(src)).unwrap();
    let logs = corpus_logs(src)
        .into_iter()
        .map(|l| {
            let to = dir.join(plain_name(&l));
            std::fs::write(&to, load(&l)).unwrap();
            to
        })
        .collect();
    Staged { hive, logs }
}

/// Copies files into `dir` under their own names.
pub fn copy_into(files: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    files
        .iter()
        .map(|f| {
            let to = dir.join(f.file_name().unwrap());
            std::fs::copy(f, &to).unwrap();
            to
        })
        .collect()
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Sequence1 and Sequence2 of a base block (offsets 4 and 8).
pub fn base_seqs(b: &[u8]) -> (u32, u32) {
    (le32(b, 4).unwrap(), le32(b, 8).unwrap())
}

/// Every sequence number a log file carries: its header's two, and for a
/// new-format log (type 6) every `HvLE` entry's (entry +12), following the
/// entries from offset 512 while their headers look sane.
pub fn log_sequences(b: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    if b.len() < 512 || &b[0..4] != b"regf" {
        return out;
    }
    out.push(le32(b, 4).unwrap());
    out.push(le32(b, 8).unwrap());
    if le32(b, 28) == Some(6) {
        let mut at = 512;
        while at + 40 <= b.len() && &b[at..at + 4] == b"HvLE" {
            let size = le32(b, at + 4).unwrap() as usize;
            out.push(le32(b, at + 12).unwrap());
            if size < 40 || size % 512 != 0 {
                break;
            }
            at += size;
        }
    }
    out
}

/// `a` is after `b` in serial-number arithmetic.
pub fn seq_after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The checksum of a base block (XOR of the first 127 dwords, with the 0 and
/// 0xFFFFFFFF adjustments).
pub fn base_checksum(b: &[u8]) -> u32 {
    let mut x = 0u32;
    for i in 0..127 {
        x ^= le32(b, 4 * i).unwrap();
    }
    match x {
        0 => 1,
        0xFFFF_FFFF => 0xFFFF_FFFE,
        v => v,
    }
}

/// The independent readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Hivex,
    Regfexport,
    Regipy,
    Dissect,
}

impl Reader {
    /// Whether the reader is installed (no notice printed).
    pub fn available(self) -> bool {
        match self {
            Reader::Hivex => tool_exists("hivexregedit"),
            Reader::Regfexport => tool_exists("regfexport"),
            Reader::Regipy => common::python().is_some() && require_python(PyLib::Regipy),
            Reader::Dissect => common::python().is_some() && require_python(PyLib::DissectRegf),
        }
    }

    /// Dumps `path` with this reader.
    pub fn dump(self, path: &Path) -> Result<Dump, String> {
        match self {
            Reader::Hivex => dump_hivex(path),
            Reader::Regfexport => dump_regfexport(path),
            Reader::Regipy => dump_python(path, PyLib::Regipy),
            Reader::Dissect => dump_python(path, PyLib::DissectRegf),
        }
    }

    /// The form in which dumps of this reader are compared: regfexport's
    /// lossy view (see `tests/common/regfexport.rs`), the raw dump otherwise.
    pub fn view(self, d: &Dump) -> Dump {
        if self == Reader::Regfexport {
            d.regfexport_view()
        } else {
            d.clone()
        }
    }
}

/// The readers among `wanted` that are installed; prints a notice naming
/// each missing one.
pub fn readers(wanted: &[Reader]) -> Vec<Reader> {
    wanted
        .iter()
        .copied()
        .filter(|r| {
            let ok = r.available();
            if !ok {
                common::missing(&format!("reader {r:?}"));
            }
            ok
        })
        .collect()
}

/// Asserts two dumps equal in `reader`'s comparison view.
#[track_caller]
pub fn assert_dumps_equal(reader: Reader, expected: &Dump, actual: &Dump, what: &str) {
    common::assert_same(
        &reader.view(expected),
        &format!("expected ({reader:?}, {what})"),
        &reader.view(actual),
        &format!("actual ({reader:?}, {what})"),
    );
}

/// Occurrences of `needle` in `hay` (overlapping matches counted).
pub fn count(hay: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || hay.len() < needle.len() {
        return 0;
    }
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Replaces every non-overlapping occurrence of `from` by `to`.
pub fn replace_bytes(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}
