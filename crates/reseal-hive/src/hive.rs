//! The [`Hive`]: an owned hive image with its allocator, opened from a file
//! (with log recovery) or from bytes, and saved back atomically.

use std::path::{Path, PathBuf};

use crate::alloc::Allocator;
use crate::base_block::{self, BASE_BLOCK_SIZE, BaseBlock};
use crate::bytes::{i32_at, put_u32, put_u64};
use crate::cells::{self, NIL};
use crate::error::{HiveError, Result};
use crate::log::{self, LogFile};

/// How a hive was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpenInfo {
    /// The hive was dirty and was brought up to date from these logs.
    pub replayed_logs: Vec<String>,
    /// Number of dirty pages applied from logs.
    pub replayed_pages: usize,
    /// The hive is dirty and was opened without replay: read-only.
    pub as_is: bool,
    /// Base-block flag bit 0: KTM transactions were pending when the hive was
    /// last written. Those are kept in separate logs this engine does not read.
    pub transactions_pending: bool,
}

/// An open registry hive.
#[derive(Debug, Clone)]
pub struct Hive {
    pub(crate) name: String,
    pub(crate) data: Vec<u8>,
    pub(crate) file_len: usize,
    pub(crate) minor: u32,
    pub(crate) alloc: Allocator,
    pub(crate) max_log_seq: Option<u32>,
    pub(crate) info: OpenInfo,
    pub(crate) modified: bool,
}

impl Hive {
    /// Opens a hive file, replaying `.LOG`/`.LOG1`/`.LOG2` beside it when
    /// the hive is dirty. A dirty hive whose logs cannot recover it is an error.
    pub fn open(path: impl AsRef<Path>) -> Result<Hive> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        let logs = read_logs(path)?;
        Hive::from_bytes_with_logs(&path.display().to_string(), bytes, &logs)
    }

    /// Opens a hive file without replaying its logs, even when it is dirty.
    /// A dirty hive opened this way is read-only (for inspection).
    pub fn open_as_is(path: impl AsRef<Path>) -> Result<Hive> {
        let path = path.as_ref();
        let bytes = read_file(path)?;
        Hive::build(&path.display().to_string(), bytes, None, true)
    }

    /// Opens a clean hive from bytes. A dirty hive needs its logs: use
    /// [`Hive::from_bytes_with_logs`].
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Hive> {
        Hive::from_bytes_with_logs(name, bytes, &[])
    }

    /// Opens a hive from bytes with the bytes of its transaction logs.
    pub fn from_bytes_with_logs(name: &str, bytes: Vec<u8>, logs: &[LogFile]) -> Result<Hive> {
        if bytes.len() >= BASE_BLOCK_SIZE && !BaseBlock::parse(name, &bytes)?.is_dirty() {
            // Clean: the logs are not applied; only their sequence numbers
            // matter (the saved hive must be above them). No copy is made.
            let max_seq = log::max_log_sequence(logs);
            return Hive::build(name, bytes, max_seq, false);
        }
        let recovery = log::recover(name, &bytes, logs)?;
        let info = OpenInfo {
            replayed_logs: recovery.applied.iter().map(|a| a.name.clone()).collect(),
            replayed_pages: recovery.dirty_pages,
            ..OpenInfo::default()
        };
        let max_seq = recovery.max_log_sequence;
        let data = if recovery.applied.is_empty() {
            bytes
        } else {
            recovery.data
        };
        let mut h = Hive::build(name, data, max_seq, false)?;
        h.info.replayed_logs = info.replayed_logs;
        h.info.replayed_pages = info.replayed_pages;
        Ok(h)
    }

    fn build(name: &str, mut data: Vec<u8>, max_log_seq: Option<u32>, as_is: bool) -> Result<Hive> {
        if data.len() < BASE_BLOCK_SIZE {
            return Err(HiveError::corrupt(
                name,
                data.len() as u64,
                "hive file length",
                "at least 4096 bytes (base block)",
                format!("{} bytes", data.len()),
            ));
        }
        let bb = BaseBlock::parse(name, &data)?;
        bb.validate_primary(name)?;
        let dirty = bb.is_dirty();
        if dirty && !as_is {
            return Err(HiveError::DirtyWithoutLogs {
                file: name.to_string(),
                primary: bb.seq1,
                secondary: bb.seq2,
                reason: "no transaction log was supplied".into(),
            });
        }
        let (bins, cells) = cells::walk_bins(name, &data, bb.length)?;
        let file_len = data.len();
        data.truncate(BASE_BLOCK_SIZE + bb.length as usize);
        let h = Hive {
            name: name.to_string(),
            minor: bb.minor,
            alloc: Allocator::new(bins, &cells),
            data,
            file_len,
            max_log_seq,
            info: OpenInfo {
                as_is: dirty && as_is,
                transactions_pending: bb.flags & 1 != 0,
                ..OpenInfo::default()
            },
            modified: false,
        };
        let root = h.root();
        h.key_node(root)?;
        Ok(h)
    }

    /// Creates a new, empty hive of version 1.`minor` (3 or 5 are the usual
    /// choices) whose root key is called `root_name`, with a default security
    /// descriptor (owner Administrators, full control for SYSTEM and
    /// Administrators, read for Everyone).
    pub fn create(name: &str, minor: u32, root_name: &str) -> Result<Hive> {
        crate::create::new_hive(name, minor, root_name)
    }

    /// The label used in messages (the file path, or the name given).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Minor format version (3..=6).
    pub fn minor_version(&self) -> u32 {
        self.minor
    }

    /// How the hive was opened (logs replayed, read-only state).
    pub fn open_info(&self) -> &OpenInfo {
        &self.info
    }

    /// Whether any edit was made since opening.
    pub fn is_modified(&self) -> bool {
        self.modified
    }

    pub(crate) fn ensure_writable(&self) -> Result<()> {
        if self.info.as_is {
            return Err(HiveError::ReadOnly {
                file: self.name.clone(),
            });
        }
        Ok(())
    }

    /// The payload of the allocated cell at `index`.
    pub(crate) fn cell(&self, index: u32) -> Result<&[u8]> {
        let r = self.cell_range(index)?;
        Ok(&self.data[r])
    }

    pub(crate) fn cell_range(&self, index: u32) -> Result<std::ops::Range<usize>> {
        let bad = |what, expected: &str, found: String| {
            Err(HiveError::corrupt(
                &self.name,
                cells::file_offset(index),
                what,
                expected,
                found,
            ))
        };
        if index == NIL || index as usize + 4 > self.data.len() - BASE_BLOCK_SIZE {
            return bad(
                "cell index",
                "an index inside the hive bins",
                format!("{index:#x}"),
            );
        }
        let start = BASE_BLOCK_SIZE + index as usize;
        let raw = i32_at(&self.data, start).unwrap_or(0);
        if raw >= 0 {
            return bad(
                "cell size",
                "an allocated cell (negative size)",
                raw.to_string(),
            );
        }
        let size = raw.unsigned_abs() as usize;
        if size < 8 || start + size > self.data.len() {
            return bad(
                "cell size",
                "an allocated cell within the hive bins",
                raw.to_string(),
            );
        }
        Ok(start + 4..start + size)
    }

    pub(crate) fn cell_mut(&mut self, index: u32) -> Result<&mut [u8]> {
        let r = self.cell_range(index)?;
        Ok(&mut self.data[r])
    }

    /// Allocates a cell for `payload` bytes (zeroed) and returns its index.
    pub(crate) fn alloc_cell(&mut self, payload: usize) -> Result<u32> {
        self.alloc
            .alloc(&mut self.data, payload)
            .ok_or_else(|| HiveError::HiveFull {
                file: self.name.clone(),
                needed: payload as u64,
            })
    }

    /// Allocates a cell and fills it with `bytes`.
    pub(crate) fn alloc_with(&mut self, bytes: &[u8]) -> Result<u32> {
        let idx = self.alloc_cell(bytes.len())?;
        self.cell_mut(idx)?[..bytes.len()].copy_from_slice(bytes);
        Ok(idx)
    }

    /// Frees an allocated cell (no-op for NIL).
    pub(crate) fn free_cell(&mut self, index: u32) -> Result<()> {
        if index == NIL {
            return Ok(());
        }
        let r = self.cell_range(index)?;
        let size = (r.end - r.start + 4) as u32;
        self.alloc.free(&mut self.data, index, size);
        Ok(())
    }

    /// The complete file image as it would be saved: base block finished
    /// (sequence numbers above every log's, checksum, timestamp), bins, and
    /// the original file's padding (zeroed).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.data.clone();
        self.finish_base_block(&mut out);
        if out.len() < self.file_len {
            out.resize(self.file_len, 0);
        }
        out
    }

    fn finish_base_block(&self, out: &mut [u8]) {
        let bb = BaseBlock::parse(&self.name, out).expect("validated at open");
        let mut seq = base_block::seq_max(bb.seq1, bb.seq2);
        if let Some(m) = self.max_log_seq {
            seq = base_block::seq_max(seq, m);
        }
        // Above every sequence number the primary and its logs ever used,
        // so that no existing log entry is eligible for replay.
        let seq = seq.wrapping_add(1);
        put_u32(out, base_block::OFF_SEQ1, seq);
        put_u32(out, base_block::OFF_SEQ2, seq);
        put_u32(out, base_block::OFF_TYPE, base_block::TYPE_PRIMARY);
        put_u32(out, base_block::OFF_LENGTH, self.alloc.bins_size());
        put_u32(out, base_block::OFF_CLUSTER, 1);
        if self.modified {
            let now = crate::time::now_filetime();
            put_u64(out, base_block::OFF_TIMESTAMP, now);
            put_u64(out, BASE_BLOCK_SIZE + 20, now);
        }
        put_u32(out, base_block::OFF_BOOT_TYPE, 0);
        put_u32(out, base_block::OFF_BOOT_RECOVER, 0);
        base_block::store_checksum(out);
    }

    /// Checks the hive as it would be saved with the structural checker.
    pub fn check(&self) -> crate::check::CheckReport {
        crate::check::check_image(&self.name, &self.to_bytes())
    }

    /// Saves the hive to `path` atomically: the structural checker must pass,
    /// the image is written to a temporary file in the same directory, synced,
    /// and renamed over `path`; then the transaction logs beside `path` are
    /// emptied (their sequence numbers are all below the saved hive's, so
    /// Windows would ignore them anyway; emptying them also removes stale data).
    pub fn save_to(&self, path: impl AsRef<Path>) -> Result<()> {
        self.ensure_writable()?;
        let path = path.as_ref();
        let bytes = self.to_bytes();
        let report = crate::check::check_image(&path.display().to_string(), &bytes);
        if let Some(first) = report.errors().next() {
            return Err(HiveError::CheckFailed {
                file: path.display().to_string(),
                count: report.errors().count(),
                first: first.to_string(),
            });
        }
        crate::save::write_atomic(path, &bytes)?;
        for log in log::find_log_paths(path) {
            crate::save::truncate(&log)?;
        }
        Ok(())
    }
}

/// The largest hive or log file read (1 GiB): real hives stay far below
/// (the largest SOFTWARE hives are a few hundred MiB).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// Reads a hive or log file: only a regular file (a FIFO, device, socket or
/// directory is refused before it is opened, so nothing blocks or reads
/// without end), of at most [`MAX_FILE_BYTES`].
fn read_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let err = |source: std::io::Error| HiveError::Io {
        file: path.to_path_buf(),
        action: "read",
        source,
    };
    let refuse = |what: String| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, what));
    let meta = std::fs::metadata(path).map_err(err)?;
    if !meta.is_file() {
        return Err(refuse(
            "not a regular file (a directory, FIFO, device or socket is not read as a hive)".into(),
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(refuse(format!(
            "{} bytes, more than the {MAX_FILE_BYTES} bytes a hive or log may have",
            meta.len()
        )));
    }
    let file = std::fs::File::open(path).map_err(err)?;
    if !file.metadata().map_err(err)?.is_file() {
        return Err(refuse("not a regular file".into()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(refuse(format!(
            "grew past {MAX_FILE_BYTES} bytes while being read"
        )));
    }
    Ok(bytes)
}

fn read_logs(path: &Path) -> Result<Vec<LogFile>> {
    log::find_log_paths(path)
        .into_iter()
        .map(|p: PathBuf| {
            Ok(LogFile {
                name: p.display().to_string(),
                bytes: read_file(&p)?,
            })
        })
        .collect()
}
