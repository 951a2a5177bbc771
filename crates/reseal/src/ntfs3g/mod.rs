//! Writing NTFS volumes through libntfs-3g, with its device operations
//! bridged to our block layer ([`crate::disk::BlockDevice`]): no root, no
//! FUSE, no loop device.
//!
//! [`NtfsWriter`] works on image paths (`Windows\System32\config\SYSTEM`,
//! looked up case-insensitively as Windows does): replace a file's data (in
//! the clusters it already has when its length does not change), create
//! files and directories (their security descriptor inherited from the
//! parent, as Windows does), delete files and trees, rename, and rewrite
//! security descriptors. Security descriptors go through libntfs-3g's
//! security functions, which keep `$Secure` (`$SDS`, `$SDH`, `$SII`)
//! consistent.
//!
//! libntfs-3g promises no thread safety (it keeps process-wide state such
//! as its log handler and attribute caches, and its documentation makes no
//! claim about concurrent volumes), so one process-wide lock is held from
//! [`NtfsWriter::mount`] until the writer is unmounted or dropped: volumes
//! are written one at a time, while everything around them (hive editing,
//! planning, wimlib) still runs in parallel.
//!
//! libntfs-3g caches metadata until the unmount; a caller that wants all or
//! nothing mounts over a copy-on-write layer
//! ([`crate::disk::overlay::OverlayDisk`]) and makes the writes durable
//! only after [`NtfsWriter::unmount`] succeeded.

mod ffi;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::disk::BlockDevice;
use crate::{ResealError, Result};
use ffi::{Inode, Volume};

/// MFT record number of the root directory.
const ROOT: u64 = 5;
/// First MFT record of user files (records below are NTFS metadata).
const FIRST_USER: u64 = 16;
/// Low 48 bits of an MFT reference: the record number.
const MREF_MASK: u64 = 0xFFFF_FFFF_FFFF;

/// The lock every use of libntfs-3g holds (see the module documentation).
static LIBNTFS3G: Mutex<()> = Mutex::new(());

fn libntfs3g_lock() -> MutexGuard<'static, ()> {
    // A panic while it was held leaves nothing of libntfs-3g behind that a
    // later mount depends on (the volume was dropped): go on.
    LIBNTFS3G.lock().unwrap_or_else(|e| e.into_inner())
}
/// The largest file [`NtfsWriter::read`] returns (1 GiB): the files read
/// back through it are hives and small system files.
pub const READ_MAX_BYTES: u64 = 1 << 30;

/// A mounted NTFS volume, written through libntfs-3g.
pub struct NtfsWriter<D: BlockDevice + 'static> {
    vol: Volume<D>,
    /// Held while mounted; declared after `vol` so it is released after
    /// the volume is dropped.
    _lock: MutexGuard<'static, ()>,
    /// What to name in errors (the image file and partition).
    label: String,
    /// Whether writes leave the files' times as they were.
    keep_times: bool,
}

impl<D: BlockDevice + 'static> std::fmt::Debug for NtfsWriter<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NtfsWriter")
            .field("label", &self.label)
            .finish()
    }
}

/// What [`NtfsWriter::rewrite_security`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityRewrite {
    /// Files and directories looked at.
    pub examined: u64,
    /// Files and directories whose descriptor was replaced.
    pub files: u64,
    /// Distinct descriptors that were rewritten.
    pub descriptors: u64,
}

fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

fn split(path: &str) -> Vec<&str> {
    path.split(['\\', '/']).filter(|c| !c.is_empty()).collect()
}

/// Explains the errno of a failed mount the way a user can act on.
fn mount_hint(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => {
            "Windows is hibernated or was shut down with Fast Startup, or the NTFS journal is not clean: boot it and shut down fully (shutdown /s /t 0, or turn Fast Startup off), then run reseal again"
        }
        libc::EINVAL => "the partition does not hold a valid NTFS volume",
        libc::EIO => "an I/O error occurred reading the volume",
        _ => "libntfs-3g could not mount the volume",
    }
}

impl<D: BlockDevice + 'static> NtfsWriter<D> {
    /// Mounts the volume on `dev` for writing. `label` names it in errors.
    /// On failure the device comes back with the error.
    #[allow(clippy::result_large_err)]
    pub fn mount(dev: D, label: &str) -> std::result::Result<Self, (ResealError, D)> {
        let lock = libntfs3g_lock();
        match Volume::mount(dev, false) {
            Ok(vol) => Ok(NtfsWriter {
                vol,
                _lock: lock,
                label: label.to_string(),
                keep_times: false,
            }),
            Err((e, dev)) => Err((
                ResealError::InvalidInput {
                    what: label.to_string(),
                    message: format!("{} ({})", mount_hint(e.errno), e.message),
                },
                dev,
            )),
        }
    }

    /// Makes later writes keep the files' times (by default a write sets
    /// the modification and change times to now, as Windows does).
    pub fn set_keep_times(&mut self, keep: bool) {
        self.keep_times = keep;
    }

    /// Flushes everything libntfs-3g holds and unmounts; gives back the
    /// device with the result. Only after `Ok` is the volume consistent.
    pub fn unmount(self) -> (Result<()>, D) {
        let label = self.label;
        let (res, dev) = self.vol.unmount();
        (
            res.map_err(|e| ResealError::CommitFailed {
                path: label,
                action: "unmount the NTFS volume",
                message: e.message,
            }),
            dev,
        )
    }

    fn err(&self, path: &str, action: &'static str, e: impl std::fmt::Display) -> ResealError {
        let mut message = e.to_string();
        if let Some(io) = self.vol.io_error() {
            message = format!("{message} (block layer: {io})");
        }
        ResealError::CommitFailed {
            path: format!("{}: {path}", self.label),
            action,
            message,
        }
    }

    /// Opens the inode at `path`; `None` when a component is missing.
    fn resolve(&mut self, path: &str) -> Result<Option<Inode>> {
        let mut cur = self
            .vol
            .open(ROOT)
            .map_err(|e| self.err(path, "open the root directory", e))?;
        for comp in split(path) {
            let found = self
                .vol
                .lookup(&cur, &utf16(comp))
                .map_err(|e| self.err(path, "look up", e))?;
            let Some(mref) = found else {
                return Ok(None);
            };
            let next = self.vol.open(mref).map_err(|e| self.err(path, "open", e))?;
            cur.close().map_err(|e| self.err(path, "close", e))?;
            cur = next;
        }
        Ok(Some(cur))
    }

    /// Opens the parent directory of `path` and gives the last component;
    /// `create` makes missing parents.
    fn parent(&mut self, path: &str, create: bool) -> Result<Option<(Inode, Vec<u16>)>> {
        let comps = split(path);
        let Some((last, dirs)) = comps.split_last() else {
            return Err(self.err(path, "resolve", "empty path"));
        };
        let mut cur = self
            .vol
            .open(ROOT)
            .map_err(|e| self.err(path, "open the root directory", e))?;
        for comp in dirs {
            let name = utf16(comp);
            let found = self
                .vol
                .lookup(&cur, &name)
                .map_err(|e| self.err(path, "look up", e))?;
            let next = match found {
                Some(mref) => self.vol.open(mref).map_err(|e| self.err(path, "open", e))?,
                None if create => self
                    .vol
                    .create(&cur, &name, true)
                    .map_err(|e| self.err(path, "create a directory", e))?,
                None => return Ok(None),
            };
            cur.close().map_err(|e| self.err(path, "close", e))?;
            cur = next;
        }
        Ok(Some((cur, utf16(last))))
    }

    /// Whether `path` exists.
    pub fn exists(&mut self, path: &str) -> Result<bool> {
        Ok(self.resolve(path)?.is_some())
    }

    /// Reads the unnamed data stream of `path`, sized from its attribute; a
    /// stream over [`READ_MAX_BYTES`] is an error, never an allocation.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>> {
        let ni = self.resolve(path)?.ok_or_else(|| ResealError::NotFound {
            path: path.to_string(),
        })?;
        self.vol
            .read_data(&ni, READ_MAX_BYTES)
            .map_err(|e| self.err(path, "read", e))
    }

    /// Replaces the contents of `path` (created with its missing parents
    /// when absent, with inherited security).
    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let ni = match self.resolve(path)? {
            Some(ni) => ni,
            None => {
                let (dir, name) = self
                    .parent(path, true)?
                    .ok_or_else(|| self.err(path, "create", "no parent directory"))?;
                let ni = self
                    .vol
                    .create(&dir, &name, false)
                    .map_err(|e| self.err(path, "create", e))?;
                dir.close().map_err(|e| self.err(path, "close", e))?;
                ni
            }
        };
        self.vol
            .write_data(&ni, data, !self.keep_times)
            .map_err(|e| self.err(path, "write", e))?;
        ni.close().map_err(|e| self.err(path, "close", e))
    }

    /// Sets the length of `path` to zero; nothing when it is absent.
    pub fn truncate(&mut self, path: &str) -> Result<()> {
        if let Some(ni) = self.resolve(path)? {
            self.vol
                .write_data(&ni, &[], !self.keep_times)
                .map_err(|e| self.err(path, "truncate", e))?;
            ni.close().map_err(|e| self.err(path, "close", e))?;
        }
        Ok(())
    }

    /// Deletes the file or empty directory `path`; nothing when absent.
    pub fn delete(&mut self, path: &str) -> Result<()> {
        let Some((dir, name)) = self.parent(path, false)? else {
            return Ok(());
        };
        let Some(mref) = self
            .vol
            .lookup(&dir, &name)
            .map_err(|e| self.err(path, "look up", e))?
        else {
            return Ok(());
        };
        let ni = self.vol.open(mref).map_err(|e| self.err(path, "open", e))?;
        // Delete by the name as stored (the lookup ignored case).
        let stored = self
            .vol
            .read_dir(&dir)
            .map_err(|e| self.err(path, "list the parent", e))?
            .into_iter()
            .find(|e| e.mref & MREF_MASK == mref & MREF_MASK)
            .map(|e| e.name)
            .unwrap_or(name);
        self.vol
            .delete(ni, dir, &stored)
            .map_err(|e| self.err(path, "delete", e))
    }

    /// Deletes `path` and everything under it; nothing when absent.
    pub fn delete_tree(&mut self, path: &str) -> Result<()> {
        let Some(ni) = self.resolve(path)? else {
            return Ok(());
        };
        let children = self.vol.read_dir(&ni).unwrap_or_default();
        ni.close().map_err(|e| self.err(path, "close", e))?;
        for c in children {
            if !c.is_dir {
                let child = format!("{path}\\{}", String::from_utf16_lossy(&c.name));
                self.delete(&child)?;
                continue;
            }
            let child = format!("{path}\\{}", String::from_utf16_lossy(&c.name));
            self.delete_tree(&child)?;
        }
        self.delete(path)
    }

    /// Renames (moves) `from` to `to`, a file or a directory with what is
    /// under it. A missing source does nothing; an existing destination is
    /// an error; missing parents of the destination are created.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let Some(ni) = self.resolve(from)? else {
            return Ok(());
        };
        let src_no = ni.mft_no();
        if let Some(existing) = self.resolve(to)? {
            let same = existing.mft_no() == src_no;
            existing.close().map_err(|e| self.err(to, "close", e))?;
            if !same {
                return Err(self.err(to, "rename", "the destination exists"));
            }
        }
        let (dir, name) = self
            .parent(to, true)?
            .ok_or_else(|| self.err(to, "rename", "no parent directory"))?;
        // Same name apart from case in the same directory: go through a
        // temporary name, as a direct link would collide.
        let same_place = self.resolve(to)?.map(|i| i.mft_no()) == Some(src_no);
        if same_place {
            let tmp = format!("{}.reseal-rename", to);
            dir.close().map_err(|e| self.err(to, "close", e))?;
            ni.close().map_err(|e| self.err(from, "close", e))?;
            self.rename(from, &tmp)?;
            return self.rename(&tmp, to);
        }
        self.vol
            .link(&ni, &dir, &name)
            .map_err(|e| self.err(to, "link the new name", e))?;
        dir.close().map_err(|e| self.err(to, "close", e))?;
        ni.close().map_err(|e| self.err(from, "close", e))?;
        // Remove the old name (the inode keeps the new one).
        let (old_dir, old_name) = self
            .parent(from, false)?
            .ok_or_else(|| self.err(from, "rename", "the source's parent vanished"))?;
        let stored = self
            .vol
            .read_dir(&old_dir)
            .map_err(|e| self.err(from, "list the parent", e))?
            .into_iter()
            .find(|e| {
                e.mref & MREF_MASK == src_no
                    && String::from_utf16_lossy(&e.name)
                        .eq_ignore_ascii_case(&String::from_utf16_lossy(&old_name))
            })
            .map(|e| e.name)
            .unwrap_or(old_name);
        let ni = self
            .vol
            .open(src_no)
            .map_err(|e| self.err(from, "open", e))?;
        self.vol
            .delete(ni, old_dir, &stored)
            .map_err(|e| self.err(from, "remove the old name", e))
    }

    /// The security descriptor of `path`.
    pub fn security(&mut self, path: &str) -> Result<Vec<u8>> {
        let ni = self.resolve(path)?.ok_or_else(|| ResealError::NotFound {
            path: path.to_string(),
        })?;
        self.vol
            .get_security(&ni)
            .map_err(|e| self.err(path, "read the security descriptor", e))
    }

    /// Sets the security descriptor of `path`.
    pub fn set_security(&mut self, path: &str, sd: &[u8]) -> Result<()> {
        let ni = self.resolve(path)?.ok_or_else(|| ResealError::NotFound {
            path: path.to_string(),
        })?;
        self.vol
            .set_security(&ni, sd)
            .map_err(|e| self.err(path, "set the security descriptor", e))?;
        ni.close().map_err(|e| self.err(path, "close", e))
    }

    /// Passes the security descriptor of every file and directory (every
    /// MFT record from 16 on) to `rewrite`; where it gives a new one, the
    /// file gets it. Records not in use are skipped; a record in use whose
    /// descriptor cannot be read is an error.
    pub fn rewrite_security(
        &mut self,
        mut rewrite: impl FnMut(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<SecurityRewrite> {
        let records = self.mft_records()?;
        let mut out = SecurityRewrite::default();
        let mut seen: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        for no in FIRST_USER..records {
            let ni = match self.vol.open(no) {
                Ok(ni) => ni,
                // Free records and extension records of other files.
                Err(_) => continue,
            };
            if ni.mft_no() != no {
                continue;
            }
            let here = format!("MFT record {no}");
            let sd = match self.vol.get_security(&ni) {
                Ok(sd) => sd,
                // An extension record opened as a file has no standard
                // information and so no descriptor.
                Err(e) if e.errno == libc::ENODATA || e.errno == libc::ENOENT => continue,
                Err(e) => return Err(self.err(&here, "read the security descriptor", e)),
            };
            out.examined += 1;
            let new = seen
                .entry(sd)
                .or_insert_with_key(|sd| {
                    let n = rewrite(sd);
                    if n.is_some() {
                        out.descriptors += 1;
                    }
                    n
                })
                .clone();
            if let Some(new) = new {
                self.vol
                    .set_security(&ni, &new)
                    .map_err(|e| self.err(&here, "set the security descriptor", e))?;
                out.files += 1;
            }
            ni.close().map_err(|e| self.err(&here, "close", e))?;
        }
        Ok(out)
    }

    /// The number of MFT records: the length of `$MFT`'s data divided by
    /// the record size.
    pub fn mft_records(&mut self) -> Result<u64> {
        let mft = self.vol.open(0).map_err(|e| self.err("$MFT", "open", e))?;
        let len = self
            .vol
            .data_size(&mft)
            .map_err(|e| self.err("$MFT", "read its size", e))?;
        let rec = self
            .vol
            .record_size()
            .map_err(|e| self.err("$MFT", "read the record size", e))?;
        mft.close().map_err(|e| self.err("$MFT", "close", e))?;
        Ok(len / rec)
    }

    /// Sets DOS attributes, times and a short name of `path` and adds named
    /// data streams: what a file needs to look as it did before it was
    /// replaced.
    pub fn set_metadata(&mut self, path: &str, meta: &FileMetadata) -> Result<()> {
        let ni = self.resolve(path)?.ok_or_else(|| ResealError::NotFound {
            path: path.to_string(),
        })?;
        if let Some(sd) = &meta.security {
            self.vol
                .set_security(&ni, sd)
                .map_err(|e| self.err(path, "set the security descriptor", e))?;
        }
        for (name, data) in &meta.streams {
            self.vol
                .write_stream(&ni, &utf16(name), data)
                .map_err(|e| self.err(path, "write a named stream", e))?;
        }
        if let Some(a) = meta.attributes {
            self.vol
                .set_attributes(&ni, a)
                .map_err(|e| self.err(path, "set the attributes", e))?;
        }
        if let Some(short) = &meta.short_name {
            let (dir, _) = self
                .parent(path, false)?
                .ok_or_else(|| self.err(path, "set the short name", "no parent"))?;
            // libntfs-3g closes both inodes and updates the times, so the
            // times are set after, on a fresh handle.
            self.vol
                .set_short_name(ni, dir, short)
                .map_err(|e| self.err(path, "set the short name", e))?;
        } else {
            ni.close().map_err(|e| self.err(path, "close", e))?;
        }
        if let Some((c, w, a)) = meta.times {
            let ni = self.resolve(path)?.ok_or_else(|| ResealError::NotFound {
                path: path.to_string(),
            })?;
            self.vol
                .set_times(&ni, c, w, a)
                .map_err(|e| self.err(path, "set the times", e))?;
            ni.close().map_err(|e| self.err(path, "close", e))?;
        }
        Ok(())
    }
}

/// Metadata to give a file ([`NtfsWriter::set_metadata`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileMetadata {
    /// Self-relative security descriptor.
    pub security: Option<Vec<u8>>,
    /// DOS attributes (`FILE_ATTRIBUTE_*`).
    pub attributes: Option<u32>,
    /// Creation, last write and last access times (NT time).
    pub times: Option<(u64, u64, u64)>,
    /// The 8.3 short name.
    pub short_name: Option<String>,
    /// Named data streams: name and contents.
    pub streams: Vec<(String, Vec<u8>)>,
}
