//! Disk images (raw, VHD, VHDX) holding an NTFS volume.
//!
//! The image is opened through the block layer ([`crate::disk`]), its
//! partitions listed, and the NTFS partition holding a Windows install
//! picked (or the one given). Files are read with the `ntfs` crate; names
//! are looked up case-insensitively through the volume's `$UpCase` table.
//! [`Backend::commit`] writes through libntfs-3g ([`crate::ntfs3g`]) on a
//! copy-on-write layer, reads every change back with the `ntfs` crate and
//! only then writes the changed sectors into the image: on any error
//! before that last step the image file is untouched. A machine SID
//! change also rewrites the file and directory security descriptors that
//! name it ([`Backend::rewrite_file_security`]).

use std::io::{Read, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::{NtfsFileNamespace, NtfsVolumeFlags};
use ntfs::{Ntfs, NtfsFile};

use super::{Backend, DirEntry, FileChange};
use crate::disk::overlay::OverlayDisk;
use crate::disk::{Access, BlockDevice, PartitionDevice, list_partitions, open_image};
use crate::lock::{Claim, ImageLock, LockLevel};
use crate::ntfs3g::{NtfsWriter, SecurityRewrite};
use reseal_hive::Sid;

mod all;
mod journal;
mod write;

use crate::{ResealError, Result};
pub use all::{generalize_disk, windows_partitions};
pub use journal::Replay;

/// The OEM id of an NTFS boot sector.
const NTFS_OEM: &[u8; 8] = b"NTFS    ";
/// The OEM id of a BitLocker-encrypted volume's boot sector.
const BITLOCKER_OEM: &[u8; 8] = b"-FVE-FS-";
/// The file whose presence marks the partition holding Windows.
const SYSTEM_HIVE: &str = "Windows\\System32\\config\\SYSTEM";
/// Size of the read cache of [`VolumeReader`].
const CHUNK: u64 = 64 * 1024;

/// `std::io::Read + Seek` over one partition of a disk, with a one-chunk
/// cache (the `ntfs` crate reads in small pieces).
struct VolumeReader<D = Part> {
    dev: D,
    pos: u64,
    cache_at: u64,
    cache: Vec<u8>,
}

/// A partition of an opened image.
type Part = PartitionDevice<Box<dyn BlockDevice>>;

impl<D: BlockDevice> VolumeReader<D> {
    fn new(dev: D) -> Self {
        VolumeReader {
            dev,
            pos: 0,
            cache_at: 0,
            cache: Vec::new(),
        }
    }

    fn read_sector0(&mut self) -> Result<[u8; 512]> {
        let mut b = [0u8; 512];
        if self.dev.len() >= 512 {
            self.dev.read_at(0, &mut b)?;
        }
        Ok(b)
    }
}

impl<D: BlockDevice> Read for VolumeReader<D> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let len = self.dev.len();
        if buf.is_empty() || self.pos >= len {
            return Ok(0);
        }
        let in_cache = self.pos >= self.cache_at
            && self.pos < self.cache_at + self.cache.len() as u64
            && !self.cache.is_empty();
        if !in_cache {
            let at = self.pos - self.pos % CHUNK;
            let n = CHUNK.min(len - at) as usize;
            let mut chunk = vec![0u8; n];
            self.dev
                .read_at(at, &mut chunk)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            self.cache = chunk;
            self.cache_at = at;
        }
        let start = (self.pos - self.cache_at) as usize;
        let n = buf.len().min(self.cache.len() - start);
        buf[..n].copy_from_slice(&self.cache[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<D: BlockDevice> Seek for VolumeReader<D> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let new = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.dev.len().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let new = new.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start of the volume",
            )
        })?;
        self.pos = new;
        Ok(new)
    }
}

impl DiskBackend {
    /// Applies `changes` through libntfs-3g on a copy-on-write layer,
    /// reads every change back with the `ntfs` crate, and only then writes
    /// the changed sectors into the image.
    fn write(&mut self, changes: &[FileChange]) -> Result<Option<SecurityRewrite>> {
        self.claim.for_write()?;
        let disk = open_image(&self.path, Access::ReadWrite)?;
        let part = PartitionDevice::new(disk, self.extent.0, self.extent.1)?;
        let label = self.describe();
        let mut w = NtfsWriter::mount(OverlayDisk::new(part), &label).map_err(|(e, _)| e)?;
        let applied = write::apply(&mut w, changes, self.file_security.as_ref());
        let (unmounted, overlay) = w.unmount();
        let security = applied?;
        unmounted?;
        let vol = Volume::new(&self.path, VolumeReader::new(overlay)).map_err(|(e, _)| e)?;
        {
            let mut r = vol.lock();
            guarded(&self.path, || {
                write::verify(changes, |p| {
                    let f = vol.find(&mut r, p).map_err(|e| self.err(p, e))?;
                    let Some(f) = f else { return Ok(None) };
                    if f.is_directory() {
                        return Ok(Some(None));
                    }
                    let Some(item) = f.data(&mut *r, "") else {
                        return Ok(Some(Some(Vec::new())));
                    };
                    let item = item.map_err(|e| self.err(p, e))?;
                    let attr = item.to_attribute().map_err(|e| self.err(p, e))?;
                    let value = attr.value(&mut *r).map_err(|e| self.err(p, e))?;
                    let mut out = Vec::new();
                    value
                        .attach(&mut *r)
                        .read_to_end(&mut out)
                        .map_err(|e| self.err(p, e))?;
                    Ok(Some(Some(out)))
                })
                .map_err(|m| ResealError::CommitFailed {
                    path: label.clone(),
                    action: "read the written volume back",
                    message: m,
                })
            })?;
        }
        let mut overlay = vol.into_device();
        // Write-ahead: every changed page goes to the journal beside the
        // image (synced) before the first byte is written in place.
        let base = self.extent.0;
        let runs = overlay.changed_runs()?;
        let whole: Vec<(u64, Vec<u8>)> =
            runs.iter().map(|(at, d)| (base + at, d.clone())).collect();
        crate::space::ensure(
            &journal::path_of(&self.path),
            journal::size_of(&whole),
            "the write journal of the changed sectors",
        )?;
        let jpath = journal::write(&self.path, &whole)?;
        drop(whole);
        if let Err(e) = overlay.write_runs(&runs, self.kill_after_writes) {
            if self.kill_after_writes.is_some() {
                // Simulated kill: the journal stays for the next open.
                return Err(e);
            }
            // A real write error: the journal is complete, so the next
            // open finishes the write; try that at once.
            drop(overlay);
            return match journal::recover(&self.path) {
                // Written in full from the journal on the second try.
                Ok(_) => Ok(security),
                Err(again) => Err(ResealError::CommitFailed {
                    path: self.path.display().to_string(),
                    action: "write the changed sectors",
                    message: format!(
                        "{e}; writing them again from the journal failed too ({again}); the journal {} is kept and the next run on this image finishes the write",
                        jpath.display()
                    ),
                }),
            };
        }
        journal::remove(&jpath)?;
        Ok(security)
    }
}

/// One opened NTFS volume.
struct Volume<D = Part> {
    ntfs: Ntfs,
    reader: Mutex<VolumeReader<D>>,
}

/// A read-only backend over an NTFS volume in a disk image.
pub struct DiskBackend {
    path: PathBuf,
    partition: u32,
    /// Byte offset and length of the partition in the virtual disk.
    extent: (u64, u64),
    volume: Volume,
    /// Machine SID rewrite to apply to file security at the next commit.
    file_security: Option<(Sid, Sid)>,
    /// What the last commit did to file security.
    last_security: Option<SecurityRewrite>,
    /// This process's lock on the image file (read, then write at commit)
    /// and how the file looked when it was read.
    claim: Claim,
    /// What open did with a write journal an interrupted run left.
    replay: Option<Replay>,
    /// Testing aid: stop the in-place write after this many runs.
    kill_after_writes: Option<usize>,
}

impl std::fmt::Debug for DiskBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskBackend")
            .field("path", &self.path)
            .field("partition", &self.partition)
            .finish()
    }
}

/// Whether a host path names a disk image by its extension (`.vhd`,
/// `.vhdx`, `.qcow2`, `.vmdk`, `.img`, `.raw`, any case).
pub fn is_disk_image_path(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["vhd", "vhdx", "qcow2", "vmdk", "img", "raw"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

fn bad(path: &Path, message: impl Into<String>) -> ResealError {
    ResealError::InvalidInput {
        what: path.display().to_string(),
        message: message.into(),
    }
}

/// Runs `f`, turning a panic inside the `ntfs` crate into an error.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(bad(
            path,
            "the NTFS volume is malformed (the NTFS reader gave up on it)",
        ))
    })
}

fn split(path: &str) -> Vec<&str> {
    path.split(['\\', '/'])
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// A candidate volume: its number (0 = the whole disk) and extent.
struct Candidate {
    number: u32,
    offset: u64,
    length: u64,
}

/// The volumes of a disk: its partitions, or the whole disk (number 0)
/// when it has no partition table.
fn candidates(dev: &dyn BlockDevice, path: &Path) -> Result<Vec<Candidate>> {
    // A bare volume (no partition table): its boot sector also ends in
    // 0x55AA, so look at its OEM id before reading it as an MBR.
    let mut sector = [0u8; 512];
    if dev.len() >= 512 {
        dev.read_at(0, &mut sector)?;
    }
    let bare = [NTFS_OEM, BITLOCKER_OEM].contains(&&sector[3..11].try_into().unwrap_or([0; 8]));
    let parts = if bare {
        Vec::new()
    } else {
        list_partitions(dev, path)?
    };
    Ok(if parts.is_empty() {
        vec![Candidate {
            number: 0,
            offset: 0,
            length: dev.len(),
        }]
    } else {
        parts
            .iter()
            .map(|p| Candidate {
                number: p.number,
                offset: p.offset,
                length: p.length,
            })
            .collect()
    })
}

/// The numbers of the volumes of the disk image at `path` (see
/// [`candidates`]).
fn list_candidates(path: &Path) -> Result<Vec<u32>> {
    let dev = open_image(path, Access::ReadOnly)?;
    Ok(candidates(&*dev, path)?.iter().map(|c| c.number).collect())
}

impl DiskBackend {
    /// Opens a disk image read-only and picks the NTFS partition holding
    /// `Windows\System32\config\SYSTEM`, or partition `partition` (numbered
    /// as Linux does; 0 = a disk without a partition table). Refuses
    /// BitLocker volumes, NTFS volumes marked dirty, disks with no NTFS
    /// partition and disks with no Windows install. Takes a read lock on
    /// the image ([`crate::lock`]): an image another process writes (a
    /// running VM) is refused with [`ResealError::Busy`]; the lock is
    /// raised to a write lock at commit, which is refused when the image
    /// changed since it was opened.
    pub fn open(path: &Path, partition: Option<u32>) -> Result<Self> {
        let replay = recover_journal(path)?;
        let claim = Claim::read(path)?;
        let dev = open_image(path, Access::ReadOnly)?;
        let cands = candidates(&*dev, path)?;
        if let Some(n) = partition {
            let Some(c) = cands.iter().find(|c| c.number == n) else {
                let have: Vec<String> = cands.iter().map(|c| c.number.to_string()).collect();
                return Err(bad(
                    path,
                    format!(
                        "there is no partition {n} (partitions: {}); give one of those to --partition",
                        have.join(", ")
                    ),
                ));
            };
            let mut r = VolumeReader::new(PartitionDevice::new(dev, c.offset, c.length)?);
            let oem = r.read_sector0()?;
            check_oem(path, n, &oem[3..11])?;
            let volume = open_volume(path, n, r)?;
            return Ok(DiskBackend {
                path: path.to_path_buf(),
                partition: n,
                extent: (c.offset, c.length),
                volume,
                file_security: None,
                last_security: None,
                claim,
                replay,
                kill_after_writes: None,
            });
        }
        let mut dev = Some(dev);
        let mut bitlocker = Vec::new();
        let mut ntfs_parts = Vec::new();
        let mut unreadable = None;
        for c in &cands {
            let Some(d) = dev.take() else { break };
            let mut r = VolumeReader::new(PartitionDevice::new(d, c.offset, c.length)?);
            let sector = r.read_sector0()?;
            let oem = &sector[3..11];
            if oem == BITLOCKER_OEM {
                bitlocker.push(c.number);
            } else if oem == NTFS_OEM {
                ntfs_parts.push(c.number);
                match Volume::new(path, r) {
                    Ok(v) => {
                        if v.lookup_is_file(path, SYSTEM_HIVE) {
                            v.check_clean(path, c.number)?;
                            return Ok(DiskBackend {
                                path: path.to_path_buf(),
                                partition: c.number,
                                extent: (c.offset, c.length),
                                volume: v,
                                file_security: None,
                                last_security: None,
                                claim,
                                replay,
                                kill_after_writes: None,
                            });
                        }
                        dev = Some(v.into_device().into_inner());
                        continue;
                    }
                    Err((e, d)) => {
                        // An unreadable NTFS volume: try the others, and
                        // report it if none holds Windows.
                        unreadable.get_or_insert(e);
                        dev = Some(d.into_inner());
                        continue;
                    }
                }
            }
            dev = Some(r.dev.into_inner());
        }
        if !bitlocker.is_empty() {
            return Err(bitlocker_err(path, bitlocker[0]));
        }
        if ntfs_parts.is_empty() {
            return Err(bad(
                path,
                "no NTFS partition found (expected a disk with an NTFS partition, MBR type 0x07 or GPT basic data, whose boot sector reads \"NTFS    \")",
            ));
        }
        if let Some(e) = unreadable {
            return Err(e);
        }
        let list: Vec<String> = ntfs_parts.iter().map(|n| n.to_string()).collect();
        Err(ResealError::NoInstall {
            root: format!(
                "{} (NTFS partition(s) {}; no Windows installation: none holds {SYSTEM_HIVE})",
                path.display(),
                list.join(", ")
            ),
        })
    }

    /// What opening the image did with the write journal of an earlier
    /// run that was killed while writing (see [`Replay`]).
    pub fn replay(&self) -> Option<Replay> {
        self.replay
    }

    /// Testing aid: the next commit stops after writing this many runs of
    /// changed sectors in place, as a kill would: the journal is left for
    /// the next open, and the backend is not reopened.
    #[doc(hidden)]
    pub fn set_kill_after_writes(&mut self, n: Option<usize>) {
        self.kill_after_writes = n;
    }

    /// The partition number opened (0 = the whole disk).
    pub fn partition(&self) -> u32 {
        self.partition
    }

    fn err(&self, inner: &str, e: impl std::fmt::Display) -> ResealError {
        ResealError::InvalidInput {
            what: format!("{}: {inner}", self.path.display()),
            message: format!("reading the NTFS volume: {e}"),
        }
    }
}

/// Replays or discards the write journal a killed run left beside the
/// image, under a write lock.
fn recover_journal(path: &Path) -> Result<Option<Replay>> {
    if !journal::path_of(path).exists() {
        return Ok(None);
    }
    let lock = ImageLock::acquire(path, LockLevel::Write)?;
    let r = journal::recover(path);
    lock.lower(LockLevel::Read);
    r
}

fn check_oem(path: &Path, n: u32, oem: &[u8]) -> Result<()> {
    if oem == BITLOCKER_OEM {
        return Err(bitlocker_err(path, n));
    }
    if oem != NTFS_OEM {
        return Err(bad(
            path,
            format!(
                "partition {n} is not NTFS (boot sector OEM id {:?}, expected \"NTFS    \"); give the partition holding Windows to --partition",
                String::from_utf8_lossy(oem)
            ),
        ));
    }
    Ok(())
}

fn bitlocker_err(path: &Path, n: u32) -> ResealError {
    bad(
        path,
        format!(
            "partition {n} is encrypted with BitLocker (boot sector OEM id -FVE-FS-); decrypt it in Windows first (manage-bde -off <drive>:, wait until it reports fully decrypted), then run reseal again"
        ),
    )
}

fn open_volume(path: &Path, n: u32, r: VolumeReader) -> Result<Volume> {
    let v = Volume::new(path, r).map_err(|(e, _)| e)?;
    v.check_clean(path, n)?;
    Ok(v)
}

impl<D: BlockDevice> Volume<D> {
    /// Reads the boot sector, `$UpCase`; on failure gives the device back.
    #[allow(clippy::result_large_err)]
    fn new(path: &Path, mut r: VolumeReader<D>) -> std::result::Result<Self, (ResealError, D)> {
        let res = guarded(path, || {
            let mut ntfs = Ntfs::new(&mut r).map_err(|e| bad(path, format!("NTFS: {e}")))?;
            ntfs.read_upcase_table(&mut r)
                .map_err(|e| bad(path, format!("NTFS $UpCase: {e}")))?;
            Ok(ntfs)
        });
        match res {
            Ok(ntfs) => Ok(Volume {
                ntfs,
                reader: Mutex::new(r),
            }),
            Err(e) => Err((e, r.dev)),
        }
    }

    fn into_device(self) -> D {
        self.reader
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .dev
    }

    fn lock(&self) -> MutexGuard<'_, VolumeReader<D>> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_clean(&self, path: &Path, n: u32) -> Result<()> {
        let mut r = self.lock();
        let info = guarded(path, || {
            self.ntfs
                .volume_info(&mut *r)
                .map_err(|e| bad(path, format!("NTFS $Volume: {e}")))
        })?;
        if info.flags().contains(NtfsVolumeFlags::IS_DIRTY) {
            return Err(bad(
                path,
                format!(
                    "the NTFS volume on partition {n} is marked dirty (not cleanly unmounted, or a check is pending); boot it and shut Windows down cleanly, or run chkdsk /f on it, then run reseal again"
                ),
            ));
        }
        Ok(())
    }

    fn lookup_is_file(&self, path: &Path, inner: &str) -> bool {
        let mut r = self.lock();
        guarded(path, || {
            Ok(matches!(self.find(&mut r, inner), Ok(Some(f)) if !f.is_directory()))
        })
        .unwrap_or(false)
    }

    /// Walks `inner` from the root; `Ok(None)` when a component is missing
    /// or a non-final component is not a directory.
    fn find<'n>(
        &'n self,
        r: &mut VolumeReader<D>,
        inner: &str,
    ) -> std::result::Result<Option<NtfsFile<'n>>, ntfs::NtfsError> {
        let mut file = self.ntfs.root_directory(r)?;
        for comp in split(inner) {
            if !file.is_directory() {
                return Ok(None);
            }
            let next = {
                let index = file.directory_index(r)?;
                let mut finder = index.finder();
                match NtfsFileNameIndex::find(&mut finder, &self.ntfs, r, comp) {
                    None => return Ok(None),
                    Some(e) => e?.to_file(&self.ntfs, r)?,
                }
            };
            file = next;
        }
        Ok(Some(file))
    }
}

/// Length of a file's unnamed data stream (0 when it has none).
fn data_len<D: BlockDevice>(
    file: &NtfsFile<'_>,
    r: &mut VolumeReader<D>,
) -> std::result::Result<u64, ntfs::NtfsError> {
    match file.data(r, "") {
        None => Ok(0),
        Some(item) => {
            let item = item?;
            let attr = item.to_attribute()?;
            Ok(attr.value_length())
        }
    }
}

impl Backend for DiskBackend {
    fn describe(&self) -> String {
        if self.partition == 0 {
            self.path.display().to_string()
        } else {
            format!("{} (partition {})", self.path.display(), self.partition)
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<DirEntry>> {
        let v = &self.volume;
        let mut r = v.lock();
        guarded(&self.path, || {
            let file = v
                .find(&mut r, dir)
                .map_err(|e| self.err(dir, e))?
                .filter(|f| f.is_directory())
                .ok_or_else(|| ResealError::NotFound {
                    path: dir.to_string(),
                })?;
            let index = file
                .directory_index(&mut *r)
                .map_err(|e| self.err(dir, e))?;
            let mut iter = index.entries();
            let mut refs = Vec::new();
            while let Some(entry) = iter.next(&mut *r) {
                let entry = entry.map_err(|e| self.err(dir, e))?;
                let Some(key) = entry.key() else { continue };
                let key = key.map_err(|e| self.err(dir, e))?;
                if key.namespace() == NtfsFileNamespace::Dos {
                    continue;
                }
                let record = entry.file_reference().file_record_number();
                // NTFS metadata files ($MFT, ..., $Extend) and the root's "."
                if record < 16 {
                    continue;
                }
                refs.push((
                    key.name().to_string_lossy(),
                    key.is_directory(),
                    entry.file_reference(),
                ));
            }
            let mut out = Vec::with_capacity(refs.len());
            for (name, is_dir, fref) in refs {
                let size = if is_dir {
                    0
                } else {
                    let f = fref
                        .to_file(&v.ntfs, &mut *r)
                        .map_err(|e| self.err(dir, e))?;
                    data_len(&f, &mut r).map_err(|e| self.err(&name, e))?
                };
                out.push(DirEntry { name, is_dir, size });
            }
            Ok(out)
        })
    }

    fn exists(&self, path: &str) -> bool {
        let v = &self.volume;
        let mut r = v.lock();
        guarded(&self.path, || {
            Ok(matches!(v.find(&mut r, path), Ok(Some(_))))
        })
        .unwrap_or(false)
    }

    fn is_dir(&self, path: &str) -> bool {
        let v = &self.volume;
        let mut r = v.lock();
        guarded(&self.path, || {
            Ok(matches!(v.find(&mut r, path), Ok(Some(f)) if f.is_directory()))
        })
        .unwrap_or(false)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.read_limited(path, u64::MAX)
    }

    fn read_head(&self, path: &str, len: usize) -> Result<Vec<u8>> {
        self.read_limited(path, len as u64)
    }

    fn commit(&mut self, changes: &[FileChange]) -> Result<()> {
        if changes.is_empty() && self.file_security.is_none() {
            return Ok(());
        }
        let result = self.write(changes);
        self.claim.done();
        if self.kill_after_writes.take().is_some() {
            return result.map(|_| ());
        }
        // Reopen either way: on failure nothing reached the file and this
        // drops nothing; on success it reads what was written.
        let fresh = DiskBackend::open(&self.path, Some(self.partition))?;
        self.volume = fresh.volume;
        self.file_security = None;
        self.last_security = result?;
        Ok(())
    }

    fn rewrites_file_security(&self) -> bool {
        true
    }

    fn rewrite_file_security(&mut self, old: &Sid, new: &Sid) -> bool {
        self.file_security = Some((old.clone(), new.clone()));
        true
    }

    fn commit_caveats(&self, sid_changed: bool) -> Vec<String> {
        let mut out = Vec::new();
        if let (true, Some(s)) = (sid_changed, &self.last_security) {
            if s.files > 0 {
                out.push(format!(
                    "file security: the {} file(s) and director(ies) (of {}) whose descriptors named the old machine SID now name the new one ({} distinct descriptor(s)); the old descriptors stay in $Secure, unreferenced (NTFS never removes $SDS entries)",
                    s.files, s.examined, s.descriptors
                ));
            }
        }
        out
    }
}

impl DiskBackend {
    fn read_limited(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let v = &self.volume;
        let mut r = v.lock();
        guarded(&self.path, || {
            let not_found = || ResealError::NotFound {
                path: path.to_string(),
            };
            let file = v
                .find(&mut r, path)
                .map_err(|e| self.err(path, e))?
                .ok_or_else(not_found)?;
            if file.is_directory() {
                return Err(bad(
                    &self.path,
                    format!("{path}: is a directory, expected a file"),
                ));
            }
            let Some(item) = file.data(&mut *r, "") else {
                return Ok(Vec::new());
            };
            let item = item.map_err(|e| self.err(path, e))?;
            let attr = item.to_attribute().map_err(|e| self.err(path, e))?;
            let value = attr.value(&mut *r).map_err(|e| self.err(path, e))?;
            let want = value.len().min(limit);
            let mut out = Vec::with_capacity(want.min(64 << 20) as usize);
            let mut rd = value.attach(&mut *r).take(want);
            rd.read_to_end(&mut out).map_err(|e| self.err(path, e))?;
            if (out.len() as u64) < want {
                return Err(self.err(
                    path,
                    format!("the file's data ends after {} of {want} bytes", out.len()),
                ));
            }
            Ok(out)
        })
    }
}
