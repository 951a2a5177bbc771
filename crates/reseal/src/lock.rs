//! Exclusive access to images: the byte-range locks QEMU takes on image
//! files, taken the same way on disk images, WIM files and directory roots.
//!
//! QEMU's file driver (`block/file-posix.c`) describes what one opener does
//! with an image by open-file-description (OFD) read locks on single bytes:
//! byte `100 + p` while it holds permission `p`, byte `200 + p` while it
//! does not let others hold `p`. The permissions are bit numbers:
//! 0 = consistent read, 1 = write, 2 = write of unchanged data, 3 = resize.
//! Before it proceeds, an opener tests (`F_OFD_GETLK`) that nobody else
//! refuses to share what it holds (`200 + p` for each held `p`) and that
//! nobody else holds what it refuses to share (`100 + p`). A running VM or
//! `qemu-io` thus shows up here, and this module's locks show up there.
//!
//! The levels used here:
//! - [`LockLevel::Read`]: holds consistent read (byte 100), shares
//!   everything, and refuses to start while another process holds write
//!   (byte 101): a running VM is found before anything is read. It does
//!   not keep others from writing later, so that two runs reading the same
//!   image do not keep each other from committing; a commit that comes
//!   second finds that the image changed and is refused (see the backends).
//! - [`LockLevel::Write`]: holds consistent read and write (100, 101) and
//!   shares neither write, write of unchanged data nor resize (201–203):
//!   nobody else may write, nor start a writer, and `qemu-img info` (which
//!   refuses to share write) is refused too. Consistent read stays shared
//!   so that a run still reading is not blocked by the commit of another.
//!
//! OFD locks belong to one open file description, not to a process; two
//! opens of the same file in one process would conflict with each other.
//! This module therefore keeps one lock per file (by device and inode) for
//! the whole process, shared by every [`ImageLock`] handle on it, and
//! released when the last handle is dropped. Locks of a killed process are
//! released by the kernel; nothing is left behind on disk. Directory roots
//! are locked the same way on the directory's own descriptor.
//!
//! On a file system that keeps no byte-range locks (`ENOLCK`, `EINVAL`,
//! `EOPNOTSUPP`), the image is used without them, as QEMU does.
//!
//! `F_OFD_GETLK` tells that a conflicting OFD lock exists, not which
//! process holds it: the holder is named "another process (qemu or
//! reseal)" unless the kernel reports a process id (a classic POSIX lock).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use nix::fcntl::{FcntlArg, fcntl};

use crate::error::{ResealError, Result};

/// Byte offset of "holds permission p".
const PERM_BASE: i64 = 100;
/// Byte offset of "does not share permission p".
const SHARED_BASE: i64 = 200;

/// QEMU's permission bit numbers.
const CONSISTENT_READ: i64 = 0;
const WRITE: i64 = 1;
const WRITE_UNCHANGED: i64 = 2;
const RESIZE: i64 = 3;

/// Names of the permissions, for messages.
fn perm_name(p: i64) -> &'static str {
    match p {
        CONSISTENT_READ => "consistent read",
        WRITE => "write",
        WRITE_UNCHANGED => "write unchanged",
        RESIZE => "resize",
        _ => "unknown",
    }
}

/// How much of an image a holder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockLevel {
    /// Reading: refuses to start while another process writes.
    Read,
    /// Writing: nobody else may write or read for a consistent view that
    /// refuses to share write.
    Write,
}

/// The bytes a level holds (perm) and does not share.
fn layout(level: LockLevel) -> (&'static [i64], &'static [i64]) {
    match level {
        LockLevel::Read => (&[CONSISTENT_READ], &[]),
        LockLevel::Write => (&[CONSISTENT_READ, WRITE], &[WRITE, WRITE_UNCHANGED, RESIZE]),
    }
}

/// The lock bytes a level sets.
fn bytes(level: LockLevel) -> Vec<i64> {
    let (hold, unshare) = layout(level);
    hold.iter()
        .map(|p| PERM_BASE + p)
        .chain(unshare.iter().map(|p| SHARED_BASE + p))
        .collect()
}

/// One locked file of this process.
#[derive(Debug)]
struct Held {
    file: File,
    path: PathBuf,
    level: Mutex<LockLevel>,
}

type Registry = Mutex<HashMap<(u64, u64), Weak<Held>>>;

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A handle on this process's lock of one image file or directory root.
/// Cloning shares the lock; it is released when the last handle drops.
#[derive(Debug, Clone)]
pub struct ImageLock {
    held: Arc<Held>,
}

fn io_err(path: &Path, action: &'static str, e: impl Into<std::io::Error>) -> ResealError {
    ResealError::Io {
        path: path.to_path_buf(),
        action,
        source: e.into(),
    }
}

fn flock(kind: i32, start: i64) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: 1,
        l_pid: 0,
    }
}

/// Whether an error says the file system keeps no byte-range locks (some
/// network and FUSE file systems): the image is then used unlocked, as
/// QEMU does.
fn unsupported(e: nix::errno::Errno) -> bool {
    use nix::errno::Errno;
    matches!(
        e,
        Errno::ENOLCK | Errno::EINVAL | Errno::EOPNOTSUPP | Errno::ENOSYS
    )
}

/// Sets (`F_RDLCK`) or clears (`F_UNLCK`) one lock byte.
fn set_byte(file: &File, path: &Path, kind: i32, at: i64) -> Result<()> {
    match fcntl(file, FcntlArg::F_OFD_SETLK(&flock(kind, at))) {
        Ok(_) => Ok(()),
        Err(e) if unsupported(e) => Ok(()),
        Err(e) if e == nix::errno::Errno::EAGAIN || e == nix::errno::Errno::EACCES => {
            Err(busy(path, None, at))
        }
        Err(e) => Err(io_err(path, "lock the image", e)),
    }
}

/// Who holds a conflicting lock on byte `at`, if anyone (own locks of
/// this open file description do not count).
fn conflict(file: &File, path: &Path, at: i64) -> Result<Option<i32>> {
    let mut probe = flock(libc::F_WRLCK, at);
    match fcntl(file, FcntlArg::F_OFD_GETLK(&mut probe)) {
        Ok(_) => {}
        Err(e) if unsupported(e) => return Ok(None),
        Err(e) => return Err(io_err(path, "test the image's locks", e)),
    }
    if i32::from(probe.l_type) == libc::F_UNLCK {
        Ok(None)
    } else {
        Ok(Some(probe.l_pid))
    }
}

/// A name for the holder of a lock: a process id the kernel gave, or the
/// generic name for OFD locks (which carry none).
fn holder(pid: Option<i32>) -> String {
    match pid {
        Some(p) if p > 0 => {
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            let comm = comm.trim();
            if comm.is_empty() {
                format!("process {p}")
            } else {
                format!("process {p} ({comm})")
            }
        }
        _ => "another process (qemu or reseal)".to_string(),
    }
}

fn busy(path: &Path, pid: Option<i32>, at: i64) -> ResealError {
    let what = if at >= SHARED_BASE {
        format!(
            "it does not let others hold \"{}\" permission",
            perm_name(at - SHARED_BASE)
        )
    } else {
        format!("it holds \"{}\" permission", perm_name(at - PERM_BASE))
    };
    ResealError::Busy {
        path: path.to_path_buf(),
        holder: holder(pid),
        what: format!(
            "{what} (QEMU lock byte {at}); stop the virtual machine or the other program using it, then run reseal again"
        ),
    }
}

/// Tests every conflict `level` has with other holders.
fn check(file: &File, path: &Path, level: LockLevel) -> Result<()> {
    let (hold, unshare) = layout(level);
    let mut probes: Vec<i64> = hold.iter().map(|p| SHARED_BASE + p).collect();
    probes.extend(unshare.iter().map(|p| PERM_BASE + p));
    if level == LockLevel::Read {
        // A reader waits for no writer: refuse while one is at work.
        probes.push(PERM_BASE + WRITE);
    }
    for at in probes {
        if let Some(pid) = conflict(file, path, at)? {
            return Err(busy(path, Some(pid), at));
        }
    }
    Ok(())
}

/// Sets the bytes of `level` beyond those of `from`, then tests for
/// conflicts; on a conflict the added bytes are cleared again.
fn apply(file: &File, path: &Path, from: Option<LockLevel>, level: LockLevel) -> Result<()> {
    let have = from.map(bytes).unwrap_or_default();
    let added: Vec<i64> = bytes(level)
        .into_iter()
        .filter(|b| !have.contains(b))
        .collect();
    let mut set = Vec::new();
    let mut result = Ok(());
    for &b in &added {
        if let Err(e) = set_byte(file, path, libc::F_RDLCK, b) {
            result = Err(e);
            break;
        }
        set.push(b);
    }
    if result.is_ok() {
        result = check(file, path, level);
    }
    if result.is_err() {
        for b in set {
            let _ = set_byte(file, path, libc::F_UNLCK, b);
        }
    }
    result
}

impl ImageLock {
    /// Locks the image file or directory root at `path` for `level`, or
    /// shares the lock this process already holds on it (raising it to
    /// `level` if needed). Another process's conflicting lock gives
    /// [`ResealError::Busy`].
    pub fn acquire(path: &Path, level: LockLevel) -> Result<ImageLock> {
        let meta = std::fs::metadata(path).map_err(|e| io_err(path, "open for locking", e))?;
        let key = (meta.dev(), meta.ino());
        let mut reg = registry().lock().unwrap_or_else(|p| p.into_inner());
        reg.retain(|_, w| w.strong_count() > 0);
        if let Some(held) = reg.get(&key).and_then(Weak::upgrade) {
            let lock = ImageLock { held };
            lock.raise(level)?;
            return Ok(lock);
        }
        let file = File::open(path).map_err(|e| io_err(path, "open for locking", e))?;
        apply(&file, path, None, level)?;
        let held = Arc::new(Held {
            file,
            path: path.to_path_buf(),
            level: Mutex::new(level),
        });
        reg.insert(key, Arc::downgrade(&held));
        Ok(ImageLock { held })
    }

    /// Raises the lock to `level` (nothing when it is already there).
    pub fn raise(&self, level: LockLevel) -> Result<()> {
        let mut cur = self.held.level.lock().unwrap_or_else(|p| p.into_inner());
        if *cur >= level {
            return Ok(());
        }
        apply(&self.held.file, &self.held.path, Some(*cur), level)?;
        *cur = level;
        Ok(())
    }

    /// Lowers the lock to `level` (nothing when it is already there or
    /// below): after a commit, the image is readable by others again.
    pub fn lower(&self, level: LockLevel) {
        let mut cur = self.held.level.lock().unwrap_or_else(|p| p.into_inner());
        if *cur <= level {
            return;
        }
        let keep = bytes(level);
        for b in bytes(*cur).into_iter().filter(|b| !keep.contains(b)) {
            // Clearing a lock byte does not fail on an open descriptor.
            let _ = set_byte(&self.held.file, &self.held.path, libc::F_UNLCK, b);
        }
        *cur = level;
    }

    /// The level held now.
    pub fn level(&self) -> LockLevel {
        *self.held.level.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The path the lock was taken on.
    pub fn path(&self) -> &Path {
        &self.held.path
    }
}

/// What a file looked like when a run read it: inode, length, and the
/// modification and change times, which any write changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of the file at `path` now (links followed).
    pub fn of(path: &Path) -> std::io::Result<FileStamp> {
        let m = std::fs::metadata(path)?;
        Ok(FileStamp {
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Refuses with [`ResealError::Busy`] when the file at `path` is no
    /// longer as it was: another process wrote it after this run read it.
    pub fn check_unchanged(&self, path: &Path) -> Result<()> {
        match FileStamp::of(path) {
            Ok(now) if now == *self => Ok(()),
            _ => Err(ResealError::Busy {
                path: path.to_path_buf(),
                holder: "another process (qemu or reseal)".into(),
                what: "it changed after this run read it, so the changes planned from what was read would not fit; nothing was written; run reseal again".into(),
            }),
        }
    }
}

/// A read lock on an image file and how the file looked when it was
/// taken: what a backend holds from open to commit.
#[derive(Debug)]
pub struct Claim {
    lock: ImageLock,
    seen: FileStamp,
}

impl Claim {
    /// Takes a read lock on the file at `path` and notes how it looks.
    pub fn read(path: &Path) -> Result<Claim> {
        let lock = ImageLock::acquire(path, LockLevel::Read)?;
        let seen = FileStamp::of(path).map_err(|e| io_err(path, "read the image's metadata", e))?;
        Ok(Claim { lock, seen })
    }

    /// Before writing: raises the lock to a write lock, and refuses with
    /// [`ResealError::Busy`] when the file changed since it was read.
    pub fn for_write(&self) -> Result<()> {
        self.lock.raise(LockLevel::Write)?;
        if let Err(e) = self.seen.check_unchanged(self.lock.path()) {
            self.lock.lower(LockLevel::Read);
            return Err(e);
        }
        Ok(())
    }

    /// After writing (or failing to): back to a read lock, and the file's
    /// new look is the one later writes are checked against.
    pub fn done(&mut self) {
        self.lock.lower(LockLevel::Read);
        if let Ok(now) = FileStamp::of(self.lock.path()) {
            self.seen = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locks_of(path: &Path) -> Vec<(u64, u64)> {
        let ino = std::fs::metadata(path).unwrap().ino();
        let tag = format!(":{ino} ");
        std::fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .filter(|l| l.contains("OFDLCK") && l.contains(&tag))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let n = f.len();
                Some((f.get(n - 2)?.parse().ok()?, f.get(n - 1)?.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn levels_set_the_qemu_bytes_and_share_one_lock_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img.raw");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let a = ImageLock::acquire(&p, LockLevel::Read).unwrap();
        assert_eq!(locks_of(&p), vec![(100, 100)]);
        let b = ImageLock::acquire(&p, LockLevel::Write).unwrap();
        assert_eq!(a.level(), LockLevel::Write, "one lock per file and process");
        let mut got = locks_of(&p);
        got.sort();
        assert_eq!(got, vec![(100, 101), (201, 203)], "{got:?}");
        b.lower(LockLevel::Read);
        assert_eq!(locks_of(&p), vec![(100, 100)]);
        drop(a);
        drop(b);
        assert!(locks_of(&p).is_empty(), "released with the last handle");
    }

    #[test]
    fn a_foreign_writer_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img.raw");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        // Another open file description, as another process would have.
        let other = File::open(&p).unwrap();
        set_byte(&other, &p, libc::F_RDLCK, PERM_BASE + WRITE).unwrap();
        let e = ImageLock::acquire(&p, LockLevel::Read).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ResealError::Busy { .. }), "{msg}");
        assert!(msg.contains("another process (qemu or reseal)"), "{msg}");
        assert!(msg.contains("\"write\""), "{msg}");
        drop(other);
        let l = ImageLock::acquire(&p, LockLevel::Read).unwrap();
        // A reader elsewhere does not keep this process from writing.
        let reader = File::open(&p).unwrap();
        set_byte(&reader, &p, libc::F_RDLCK, PERM_BASE + CONSISTENT_READ).unwrap();
        l.raise(LockLevel::Write).unwrap();
        // But a writer elsewhere is refused now.
        let before = locks_of(&p).len();
        let w = File::open(&p).unwrap();
        apply(&w, &p, None, LockLevel::Write).unwrap_err();
        assert_eq!(
            locks_of(&p).len(),
            before,
            "a refused lock leaves no byte set"
        );
    }
}
