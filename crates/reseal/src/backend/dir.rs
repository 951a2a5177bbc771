//! The directory backend: a Windows root as a folder on the host, as
//! `wimlib-imagex apply` to a folder, `dism /Mount-Image` or a mounted
//! volume leaves it.
//!
//! # Paths
//!
//! Image paths are relative to the root, Windows-style (`\`) or with `/`.
//! Empty and `.` components are ignored. Refused with
//! [`ResealError::UnsafePath`]: a leading separator (absolute or UNC path),
//! a `..` component, any `:` (drive letters, NTFS stream names) and NUL.
//!
//! Each component is looked up case-insensitively, as NTFS does: an exact
//! match wins; otherwise the directory is listed and the first entry, in
//! byte order of the host names, whose name is equal under simple Unicode
//! upper-casing is taken. Host names that are not valid UTF-8, or that hold
//! `\` or `:` (legal on Linux, but not one component of an image path), are
//! left out of listings and so left alone; they are named in the run report
//! ([`Backend::commit_caveats`]). Other odd names (control characters, a
//! leading `..` followed by more characters) are ordinary components. Listings used for
//! these lookups are cached between commits (a commit clears the cache); the
//! tree must not be changed behind the backend's back while it is open.
//!
//! # Reading
//!
//! Only regular files are read: a path that resolves to a directory, FIFO,
//! device or socket is refused with [`ResealError::UnsafePath`] naming the
//! host path and the kind of file, checked before opening and again on the
//! opened handle (opened non-blocking, so a FIFO never waits for a writer).
//! A read returns at most the file's size at opening; a file that grows
//! meanwhile is refused.
//!
//! # Links
//!
//! Symbolic links (wimlib applies junctions as symlinks) are followed only
//! when their target, fully resolved, lies inside the root; a link that
//! leads out of the root or cannot be resolved gives `UnsafePath`. Changes
//! never act on a link itself: a [`FileChange`] whose last component is a
//! symbolic link is refused with `UnsafePath` before anything is written.
//! Links in the middle of a changed path are followed under the same rule.
//! Listings show links as they are named; one that cannot be followed is
//! listed as a file of size 0.
//! [`Backend::link_count`] gives a file's hard-link count, so that callers
//! can refuse to write a file whose contents other names share (hives and
//! their logs are refused at load time, see [`crate::hives::load`]); at
//! commit, a `Truncate` acts on the shared contents as it would on NTFS, a
//! `Write` replaces only the name.
//!
//! # Commit
//!
//! [`Backend::commit`] applies the changes in list order (so a later change
//! to the same path wins, and `DeleteTree` then `Write` below it gives a
//! fresh directory), with a journal that lets every step be undone:
//!
//! 1. Every path is checked first; an unsafe one fails the commit with
//!    `UnsafePath` before anything is touched. The new contents of every
//!    `Write` whose directory already exists are written to a temporary file
//!    beside the target (`.<name>.reseal-new-<pid>`) and synced.
//! 2. Then each change in order: missing parent directories are created
//!    (remembered); an existing target that is replaced, deleted, or a tree
//!    that is deleted is renamed aside to `.<name>.reseal-old-<pid>` in the
//!    same directory; a file to truncate is first copied aside, then set to
//!    length zero in place (so it keeps its inode and attributes); a new
//!    file is renamed into place with the replaced file's permissions.
//! 3. Every touched directory is synced.
//! 4. Only then are the backups (and any unused temporary file) removed.
//!
//! Every step is first recorded in a journal file beside the root and
//! synced (see the `journal` module: `.<root name>.reseal-journal` in the
//! parent directory); an `applied` record follows step 3, and the journal
//! is removed after step 4. Free space for the staged files and the copies
//! of truncated files is checked before anything is written
//! ([`ResealError::NoSpace`]).
//!
//! A failure in 1–3 undoes the journal in reverse (unused temporary files
//! removed first, to free space; backups renamed back, truncated files
//! copied back — or their backup renamed over them when there is no room
//! to copy; new files and created directories removed), which leaves the
//! tree byte-identical, and returns [`ResealError::CommitFailed`]. A
//! backup whose restore failed is kept, and so is the journal. A failure
//! while removing backups in step 4 is ignored: the changes are in place.
//!
//! When the process is killed during a commit, the journal stays: the next
//! [`DirBackend::open`] of the root replays it (under the write lock),
//! finishing the commit when its `applied` record is there and undoing it
//! otherwise, and says so in [`DirBackend::recovery`].
//!
//! # Exclusive access
//!
//! The root directory is locked with QEMU's lock bytes ([`crate::lock`]):
//! a read lock from open, a write lock during a commit. A commit is also
//! refused with [`ResealError::Busy`] when a file read since the last
//! commit was changed meanwhile (by another run).
//! A `Rename` moves the entry (a directory with everything under it) with
//! one host rename, undone by renaming it back; missing parent directories
//! of the destination are created (and removed on undo). A `Write` into a
//! directory that a `Rename` of the same commit moves is not pre-staged in
//! step 1 (its temporary file would move along), and backups made inside a
//! renamed directory are removed at their new place in step 4.
//! `Truncate`, `Delete`, `DeleteTree` and `Rename` of a missing path do
//! nothing; a `Rename` onto an existing entry (other than the source itself,
//! as in a change of case) or into the source directory fails the commit;
//! `Delete` of a directory, `Truncate` of a directory and `Write` onto a
//! directory fail the commit; `DeleteTree` of a file deletes the file.
//! Permissions (Unix mode) of replaced files are kept; owners, extended
//! attributes and ACLs of replaced files are not carried over.

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, DirEntry, FileChange};
use crate::error::{ResealError, Result};
use crate::lock::{FileStamp, ImageLock, LockLevel};

mod journal;
pub use journal::Recovery;
use journal::{Entry, Journal};

/// Names of one host directory: (folded name, host name), sorted by host name.
type Listing = Arc<Vec<(String, OsString)>>;

/// A Windows root held as a directory on the host.
#[derive(Debug)]
pub struct DirBackend {
    root: PathBuf,
    fail_after: Option<usize>,
    fail_kills: bool,
    last_steps: usize,
    listings: Mutex<HashMap<PathBuf, Listing>>,
    /// What open did about an interrupted earlier commit.
    recovery: Option<Recovery>,
    /// This process's lock on the root directory.
    lock: ImageLock,
    /// Files read since the last commit, as they were when read.
    reads: Mutex<HashMap<PathBuf, FileStamp>>,
    /// Host entries left out of listings because no image path can name
    /// them (not UTF-8, or holding `\` or `:`), for the run report.
    unnamed: Mutex<BTreeSet<PathBuf>>,
}

/// Where a changed path lands on the host.
struct Target {
    /// The deepest existing directory on the way (canonical host path).
    dir: PathBuf,
    /// Directories still to create below `dir`, in order.
    missing: Vec<String>,
    /// Set when a component is a file where a directory is needed.
    blocked: Option<String>,
    /// The host name of the last component (stored case when it exists).
    name: OsString,
    /// The last component's own metadata (not followed), when it exists.
    existing: Option<Metadata>,
}

/// How far a walk through directories got.
struct Walk {
    dir: PathBuf,
    used: usize,
    blocked: bool,
}

/// Upper-cases each character when it has a one-character upper case
/// (close to the simple case mapping NTFS's upcase table applies).
fn fold(s: &str) -> String {
    s.chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect()
}

fn unsafe_path(path: &str, reason: impl Into<String>) -> ResealError {
    ResealError::UnsafePath {
        path: path.to_string(),
        reason: reason.into(),
    }
}

fn io_err(path: &Path, action: &'static str, source: io::Error) -> ResealError {
    ResealError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Splits an image path into its components, refusing unsafe forms.
fn components(path: &str) -> Result<Vec<&str>> {
    if path.contains('\0') {
        return Err(unsafe_path(path, "the path contains a NUL character"));
    }
    if path.starts_with(['\\', '/']) {
        return Err(unsafe_path(
            path,
            "absolute path; image paths are relative to the image root",
        ));
    }
    let mut out = Vec::new();
    for comp in path.split(['\\', '/']) {
        match comp {
            "" | "." => {}
            ".." => {
                return Err(unsafe_path(
                    path,
                    "a `..` component would leave the image root",
                ));
            }
            _ if comp.contains(':') => {
                return Err(unsafe_path(
                    path,
                    "`:` is not allowed (drive letter or alternate data stream)",
                ));
            }
            _ => out.push(comp),
        }
    }
    Ok(out)
}

/// A name beside `name` for a temporary (`new`) or backup (`old`) file.
fn side_name(name: &OsStr, kind: &str, n: u32) -> OsString {
    let pid = std::process::id();
    let suffix = if n == 0 {
        format!(".reseal-{kind}-{pid}")
    } else {
        format!(".reseal-{kind}-{pid}-{n}")
    };
    let mut out = OsString::from(".");
    // Keep well inside the usual 255-byte name limit.
    if name.len() + suffix.len() < 240 {
        out.push(name);
        out.push(&suffix);
    } else {
        out.push(suffix.trim_start_matches('.'));
    }
    out
}

/// A path in `dir` that does not exist yet, for a backup of `name`.
fn fresh_path(dir: &Path, name: &OsStr, kind: &str) -> io::Result<PathBuf> {
    for n in 0..1000 {
        let p = dir.join(side_name(name, kind, n));
        match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name for a backup file",
    ))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

impl DirBackend {
    /// Opens the Windows root at `root`, which must be an existing directory
    /// (it is canonicalized, so a symbolic link to it is fine).
    pub fn open(root: &Path) -> Result<DirBackend> {
        let canon = fs::canonicalize(root).map_err(|e| io_err(root, "open the image root", e))?;
        let meta = fs::metadata(&canon).map_err(|e| io_err(&canon, "open the image root", e))?;
        if !meta.is_dir() {
            return Err(io_err(
                &canon,
                "open the image root",
                io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            ));
        }
        let lock = ImageLock::acquire(&canon, LockLevel::Read)?;
        let recovery = match journal::find(&canon) {
            None => None,
            Some(path) => {
                lock.raise(LockLevel::Write)?;
                let r = journal::recover(&canon, &path);
                lock.lower(LockLevel::Read);
                Some(r.map_err(|message| ResealError::CommitFailed {
                    path: canon.display().to_string(),
                    action: "finish or undo an interrupted earlier run",
                    message: format!("{message}; the journal {} is kept", path.display()),
                })?)
            }
        };
        Ok(DirBackend {
            root: canon,
            fail_after: None,
            fail_kills: false,
            last_steps: 0,
            listings: Mutex::new(HashMap::new()),
            recovery,
            lock,
            reads: Mutex::new(HashMap::new()),
            unnamed: Mutex::new(BTreeSet::new()),
        })
    }

    /// The canonical host path of the root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Testing aid: makes primitive step number `n` (counting from 0) of the
    /// next commit fail with an injected I/O error, so that tests can check
    /// the rollback after every step. `None` turns it off. The setting is
    /// used up by the next call to `commit`, whether or not it fails.
    pub fn set_fail_after(&mut self, n: Option<usize>) {
        self.fail_after = n;
        self.fail_kills = false;
    }

    /// Testing aid: like [`set_fail_after`](Self::set_fail_after), but the
    /// failure acts as if the process was killed at that step: nothing is
    /// undone and the journal is left, for the next
    /// [`open`](Self::open) to recover.
    #[doc(hidden)]
    pub fn set_kill_after(&mut self, n: Option<usize>) {
        self.fail_after = n;
        self.fail_kills = n.is_some();
    }

    /// What opening the root did about a commit an earlier run left
    /// unfinished (killed, or its rollback failed): finished or undone.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Testing aid: the number of primitive steps (creating a directory or a
    /// temporary file, writing or syncing it, renaming, copying aside,
    /// truncating, syncing a directory) the last commit performed or tried.
    /// With [`set_fail_after`](Self::set_fail_after)`(Some(n))`, the commit
    /// fails exactly when `n` is below this count.
    pub fn last_commit_steps(&self) -> usize {
        self.last_steps
    }

    /// Remembers how a file looked when it was read.
    fn note_read(&self, host: &Path) {
        if let Ok(stamp) = FileStamp::of(host) {
            let mut reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
            reads.entry(host.to_path_buf()).or_insert(stamp);
        }
    }

    /// Raises the lock on the root to a write lock and refuses when a file
    /// read since the last commit was changed by someone else meanwhile.
    fn lock_for_commit(&self) -> Result<()> {
        self.lock.raise(LockLevel::Write)?;
        let reads = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        for (path, stamp) in reads.iter() {
            stamp.check_unchanged(path)?;
        }
        Ok(())
    }

    fn clear_cache(&self) {
        match self.listings.lock() {
            Ok(mut m) => m.clear(),
            Err(p) => p.into_inner().clear(),
        }
    }

    /// The names in a host directory, folded and sorted.
    fn listing(&self, dir: &Path, cached: bool) -> io::Result<Listing> {
        if cached {
            let guard = match self.listings.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            if let Some(l) = guard.get(dir) {
                return Ok(Arc::clone(l));
            }
        }
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let os = entry.file_name();
            if let Some(s) = os.to_str() {
                names.push((fold(s), os.clone()));
            }
        }
        names.sort_by(|a, b| a.1.cmp(&b.1));
        let names = Arc::new(names);
        if cached {
            let mut guard = match self.listings.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            guard.insert(dir.to_path_buf(), Arc::clone(&names));
        }
        Ok(names)
    }

    /// Finds `name` in the host directory `dir`: exact match first, then the
    /// first case-insensitive match in byte order. Returns the host name and
    /// the entry's own metadata (links not followed).
    fn lookup(
        &self,
        dir: &Path,
        name: &str,
        cached: bool,
    ) -> io::Result<Option<(OsString, Metadata)>> {
        match fs::symlink_metadata(dir.join(name)) {
            Ok(m) => return Ok(Some((OsString::from(name), m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let want = fold(name);
        for (folded, host) in self.listing(dir, cached)?.iter() {
            if *folded != want {
                continue;
            }
            match fs::symlink_metadata(dir.join(host)) {
                Ok(m) => return Ok(Some((host.clone(), m))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Resolves a symbolic link, refusing targets outside the root.
    fn follow(&self, link: &Path, image_path: &str) -> Result<(PathBuf, Metadata)> {
        let canon = fs::canonicalize(link).map_err(|e| {
            unsafe_path(
                image_path,
                format!("symbolic link {} cannot be resolved: {e}", link.display()),
            )
        })?;
        if !canon.starts_with(&self.root) {
            return Err(unsafe_path(
                image_path,
                format!(
                    "symbolic link {} leads out of the image root (to {})",
                    link.display(),
                    canon.display()
                ),
            ));
        }
        let meta = fs::metadata(&canon).map_err(|e| io_err(&canon, "read metadata", e))?;
        Ok((canon, meta))
    }

    /// Walks the directories `comps` from the root as far as they exist.
    fn walk(&self, image_path: &str, comps: &[&str], cached: bool) -> Result<Walk> {
        let mut dir = self.root.clone();
        for (i, comp) in comps.iter().enumerate() {
            let found = self
                .lookup(&dir, comp, cached)
                .map_err(|e| io_err(&dir, "look up a name", e))?;
            let Some((host, meta)) = found else {
                return Ok(Walk {
                    dir,
                    used: i,
                    blocked: false,
                });
            };
            let mut next = dir.join(&host);
            let mut meta = meta;
            if meta.file_type().is_symlink() {
                (next, meta) = self.follow(&next, image_path)?;
            }
            if !meta.is_dir() {
                return Ok(Walk {
                    dir,
                    used: i,
                    blocked: true,
                });
            }
            dir = next;
        }
        Ok(Walk {
            dir,
            used: comps.len(),
            blocked: false,
        })
    }

    /// Resolves an existing path for reading: host path and metadata, with
    /// links inside the root followed.
    fn resolve_existing(&self, path: &str) -> Result<(PathBuf, Metadata)> {
        let comps = components(path)?;
        let not_found = || ResealError::NotFound {
            path: path.to_string(),
        };
        let Some((last, parents)) = comps.split_last() else {
            let meta =
                fs::metadata(&self.root).map_err(|e| io_err(&self.root, "read metadata", e))?;
            return Ok((self.root.clone(), meta));
        };
        let walk = self.walk(path, parents, true)?;
        if walk.used != parents.len() {
            return Err(not_found());
        }
        let found = self
            .lookup(&walk.dir, last, true)
            .map_err(|e| io_err(&walk.dir, "look up a name", e))?;
        let Some((host, meta)) = found else {
            return Err(not_found());
        };
        let full = walk.dir.join(host);
        if meta.file_type().is_symlink() {
            self.follow(&full, path)
        } else {
            Ok((full, meta))
        }
    }

    /// Resolves a path that a change acts on, without the cache.
    fn resolve_target(&self, path: &str) -> Result<Target> {
        let comps = components(path)?;
        let Some((last, parents)) = comps.split_last() else {
            return Err(unsafe_path(
                path,
                "a change cannot act on the image root itself",
            ));
        };
        let walk = self.walk(path, parents, false)?;
        let rest = parents.get(walk.used..).unwrap_or_default();
        if walk.blocked {
            return Ok(Target {
                dir: walk.dir,
                missing: Vec::new(),
                blocked: rest.first().map(|s| s.to_string()),
                name: OsString::from(*last),
                existing: None,
            });
        }
        if !rest.is_empty() {
            return Ok(Target {
                dir: walk.dir,
                missing: rest.iter().map(|s| s.to_string()).collect(),
                blocked: None,
                name: OsString::from(*last),
                existing: None,
            });
        }
        let found = self
            .lookup(&walk.dir, last, false)
            .map_err(|e| io_err(&walk.dir, "look up a name", e))?;
        let (name, existing) = match found {
            Some((host, meta)) => {
                if meta.file_type().is_symlink() {
                    return Err(unsafe_path(
                        path,
                        format!(
                            "{} is a symbolic link; changes never act on or through a link",
                            walk.dir.join(&host).display()
                        ),
                    ));
                }
                (host, Some(meta))
            }
            None => (OsString::from(*last), None),
        };
        Ok(Target {
            dir: walk.dir,
            missing: Vec::new(),
            blocked: None,
            name,
            existing,
        })
    }
}

/// Whether a host name can be one component of an image path: image paths
/// split at `\` and `/` and refuse `:`, so a host name holding `\` or `:`
/// (legal on Linux) could only be reached as some other path.
fn addressable(name: &str) -> bool {
    !name.contains(['\\', ':'])
}

impl DirBackend {
    /// Remembers a host entry that listings leave out.
    fn note_unnamed(&self, full: PathBuf) {
        match self.unnamed.lock() {
            Ok(mut g) => g.insert(full),
            Err(p) => p.into_inner().insert(full),
        };
    }
}

/// What kind of non-regular file `meta` describes, for messages.
fn kind_of(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        return "a directory";
    }
    if ft.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
        if ft.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// The refusal for a path whose host file is not a regular file.
fn not_regular(path: &str, host: &Path, meta: &Metadata) -> ResealError {
    unsafe_path(
        path,
        format!(
            "{} is {}; only regular files are read from an image",
            host.display(),
            kind_of(meta)
        ),
    )
}

/// Opens `host` for reading without blocking on special files (a FIFO
/// opened for reading would wait for a writer).
fn open_nonblocking(host: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    opts.open(host)
}

/// Reads a regular host file of at most `limit` bytes, such as an answer
/// file given on the command line: a directory, FIFO, device or socket is
/// refused without being read (a FIFO is never waited on), and so is a
/// file longer than `limit`. `what` names the file's role in messages.
pub fn read_regular_file(host: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let refuse = |message: String| ResealError::InvalidInput {
        what: host.display().to_string(),
        message,
    };
    let file = open_nonblocking(host).map_err(|e| io_err(host, "open file", e))?;
    let meta = file
        .metadata()
        .map_err(|e| io_err(host, "read metadata", e))?;
    if !meta.is_file() {
        return Err(refuse(format!(
            "{what} is {}; only a regular file is read",
            kind_of(&meta)
        )));
    }
    if meta.len() > limit {
        return Err(refuse(format!(
            "{what} is {} bytes, over the limit of {limit} bytes",
            meta.len()
        )));
    }
    let mut buf = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| io_err(host, "read file", e))?;
    if u64::try_from(buf.len()).unwrap_or(u64::MAX) > limit {
        return Err(refuse(format!(
            "{what} grew past the limit of {limit} bytes while being read"
        )));
    }
    Ok(buf)
}

impl DirBackend {
    /// Reads a regular file of the image: the whole file, or at most `limit`
    /// bytes from its start. Anything else (directory, FIFO, device, socket)
    /// is refused with [`ResealError::UnsafePath`] naming the host path,
    /// before it is opened and again on the opened handle (so a name
    /// swapped for a special file in between is caught too). A file never
    /// yields more bytes than its size when it was opened: one that grows
    /// while being read is refused rather than read without end.
    fn read_regular(&self, path: &str, limit: Option<u64>) -> Result<Vec<u8>> {
        let (host, meta) = self.resolve_existing(path)?;
        if !meta.is_file() {
            return Err(not_regular(path, &host, &meta));
        }
        self.note_read(&host);
        let file = open_nonblocking(&host).map_err(|e| io_err(&host, "open file", e))?;
        let opened = file
            .metadata()
            .map_err(|e| io_err(&host, "read metadata", e))?;
        if !opened.is_file() {
            return Err(not_regular(path, &host, &opened));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
                return Err(unsafe_path(
                    path,
                    format!(
                        "{} was replaced by another file while being opened",
                        host.display()
                    ),
                ));
            }
        }
        let size = opened.len();
        let want = limit.map_or(size, |l| l.min(size));
        let mut buf = Vec::with_capacity(usize::try_from(want.min(64 << 20)).unwrap_or(0));
        // One byte past the expected length tells a growing file apart.
        file.take(want.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| io_err(&host, "read file", e))?;
        if u64::try_from(buf.len()).unwrap_or(u64::MAX) > want {
            if limit.is_some_and(|l| l <= size) {
                buf.truncate(usize::try_from(want).unwrap_or(0));
            } else {
                return Err(unsafe_path(
                    path,
                    format!(
                        "{} grew past its size of {size} bytes while being read",
                        host.display()
                    ),
                ));
            }
        }
        Ok(buf)
    }
}

/// Why a commit stopped.
struct Fail {
    path: String,
    action: &'static str,
    message: String,
}

/// The state of one commit.
struct Run<'a> {
    backend: &'a DirBackend,
    fail_at: Option<usize>,
    /// Whether the injected failure acts as a kill (nothing undone).
    kill: bool,
    /// Set when the injected kill happened.
    killed: bool,
    steps: usize,
    /// The journal file, and its records so far.
    journal: Journal,
    entries: Vec<Entry>,
    touched: BTreeSet<PathBuf>,
    /// Directories renamed aside so far (temporary files staged in them
    /// went along and cannot be used).
    moved_dirs: Vec<PathBuf>,
}

impl Run<'_> {
    /// Counts one primitive step, failing it when asked to.
    fn step(&mut self) -> io::Result<()> {
        let n = self.steps;
        self.steps += 1;
        if self.fail_at == Some(n) {
            self.killed = self.kill;
            Err(io::Error::other(format!(
                "injected failure at step {n} (testing aid)"
            )))
        } else {
            Ok(())
        }
    }

    /// Records a step in the journal (synced) before it is taken.
    fn record(&mut self, e: Entry) -> io::Result<()> {
        self.journal.append(&e)?;
        self.entries.push(e);
        Ok(())
    }

    /// Writes `data` to a new synced temporary file beside `name` in `dir`.
    fn stage(&mut self, dir: &Path, name: &OsStr, data: &[u8]) -> io::Result<PathBuf> {
        self.step()?;
        let temp = fresh_path(dir, name, "new")?;
        self.record(Entry::Temp {
            path: self.journal.rel(&temp),
        })?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        self.step()?;
        file.write_all(data)?;
        self.step()?;
        file.sync_all()?;
        Ok(temp)
    }

    /// Whether `dir` was renamed aside (with a directory above it).
    fn moved(&self, dir: &Path) -> bool {
        self.moved_dirs.iter().any(|m| dir.starts_with(m))
    }

    /// Renames `original` aside in its directory.
    fn move_aside(&mut self, dir: &Path, name: &OsStr, is_dir: bool) -> io::Result<()> {
        self.step()?;
        let original = dir.join(name);
        let backup = fresh_path(dir, name, "old")?;
        self.record(Entry::MovedAside {
            original: self.journal.rel(&original),
            backup: self.journal.rel(&backup),
            is_dir,
        })?;
        fs::rename(&original, &backup)?;
        self.touched.insert(dir.to_path_buf());
        Ok(())
    }

    fn apply(
        &mut self,
        change: &FileChange,
        prestaged: Option<(PathBuf, PathBuf)>,
    ) -> Result<(), Fail> {
        let path = change.path();
        let fail = |action: &'static str, e: &dyn std::fmt::Display| Fail {
            path: path.to_string(),
            action,
            message: e.to_string(),
        };
        let t = self
            .backend
            .resolve_target(path)
            .map_err(|e| fail("resolve", &e))?;
        let missing_or_blocked =
            t.blocked.is_some() || !t.missing.is_empty() || t.existing.is_none();
        match change {
            FileChange::Write { data, .. } => {
                if let Some(b) = &t.blocked {
                    return Err(fail(
                        "resolve",
                        &format!(
                            "{b} exists under {} and is not a directory",
                            t.dir.display()
                        ),
                    ));
                }
                let mut dir = t.dir.clone();
                for m in &t.missing {
                    self.step().map_err(|e| fail("create directory", &e))?;
                    let p = dir.join(m);
                    self.record(Entry::CreatedDir {
                        path: self.journal.rel(&p),
                    })
                    .map_err(|e| fail("write the journal", &e))?;
                    fs::create_dir(&p).map_err(|e| fail("create directory", &e))?;
                    self.touched.insert(dir);
                    dir = p;
                }
                if t.existing.as_ref().is_some_and(|m| m.is_dir()) {
                    return Err(fail("write", &"the path is a directory"));
                }
                let temp = match prestaged {
                    Some((pdir, temp)) if pdir == dir && !self.moved(&pdir) => temp,
                    other => {
                        // A prestaged file left unused is removed with the
                        // other leftovers (the journal knows it).
                        let _ = other;
                        self.stage(&dir, &t.name, data)
                            .map_err(|e| fail("write temporary file", &e))?
                    }
                };
                let target = dir.join(&t.name);
                if let Some(meta) = &t.existing {
                    self.move_aside(&dir, &t.name, false)
                        .map_err(|e| fail("move the original aside", &e))?;
                    self.step().map_err(|e| fail("keep permissions", &e))?;
                    fs::set_permissions(&temp, meta.permissions())
                        .map_err(|e| fail("keep permissions", &e))?;
                }
                self.step().map_err(|e| fail("rename into place", &e))?;
                self.record(Entry::Installed {
                    target: self.journal.rel(&target),
                    temp: self.journal.rel(&temp),
                })
                .map_err(|e| fail("write the journal", &e))?;
                fs::rename(&temp, &target).map_err(|e| fail("rename into place", &e))?;
                self.touched.insert(dir);
            }
            FileChange::Truncate { .. } => {
                if missing_or_blocked {
                    return Ok(());
                }
                if t.existing.as_ref().is_some_and(|m| m.is_dir()) {
                    return Err(fail("truncate", &"the path is a directory"));
                }
                let target = t.dir.join(&t.name);
                self.step()
                    .map_err(|e| fail("copy the original aside", &e))?;
                let backup = self
                    .copy_aside(&t.dir, &t.name, &target)
                    .map_err(|e| fail("copy the original aside", &e))?;
                self.step().map_err(|e| fail("truncate", &e))?;
                self.record(Entry::Truncated {
                    target: self.journal.rel(&target),
                    backup: self.journal.rel(&backup),
                })
                .map_err(|e| fail("write the journal", &e))?;
                let f = OpenOptions::new()
                    .write(true)
                    .open(&target)
                    .map_err(|e| fail("truncate", &e))?;
                f.set_len(0).map_err(|e| fail("truncate", &e))?;
                f.sync_all().map_err(|e| fail("truncate", &e))?;
                self.touched.insert(t.dir.clone());
            }
            FileChange::Delete { .. } => {
                if missing_or_blocked {
                    return Ok(());
                }
                if t.existing.as_ref().is_some_and(|m| m.is_dir()) {
                    return Err(fail(
                        "delete",
                        &"the path is a directory (DeleteTree deletes directories)",
                    ));
                }
                self.move_aside(&t.dir, &t.name, false)
                    .map_err(|e| fail("delete", &e))?;
            }
            FileChange::Rename { to, .. } => {
                if missing_or_blocked {
                    return Ok(());
                }
                self.rename(&t, to)
                    .map_err(|(action, e)| fail(action, &e))?;
            }
            FileChange::DeleteTree { .. } => {
                if missing_or_blocked {
                    return Ok(());
                }
                let is_dir = t.existing.as_ref().is_some_and(|m| m.is_dir());
                self.move_aside(&t.dir, &t.name, is_dir)
                    .map_err(|e| fail("delete tree", &e))?;
                if is_dir {
                    self.moved_dirs.push(t.dir.join(&t.name));
                }
            }
        }
        Ok(())
    }

    /// Renames the existing entry `src` to the image path `to`.
    fn rename(&mut self, src: &Target, to: &str) -> Result<(), (&'static str, String)> {
        let from = src.dir.join(&src.name);
        let d = self
            .backend
            .resolve_target(to)
            .map_err(|e| ("resolve the destination", e.to_string()))?;
        if let Some(b) = &d.blocked {
            return Err((
                "rename",
                format!(
                    "{b} exists under {} and is not a directory",
                    d.dir.display()
                ),
            ));
        }
        let same = d.missing.is_empty() && d.dir == src.dir && d.name == src.name;
        if d.existing.is_some() && !same {
            return Err(("rename", format!("the destination {to} exists")));
        }
        if d.dir.starts_with(&from) {
            return Err(("rename", "the destination is inside the source".into()));
        }
        let wanted = components(to)
            .map_err(|e| ("resolve the destination", e.to_string()))?
            .last()
            .map(|c| OsString::from(*c))
            .unwrap_or_default();
        if same && wanted == src.name {
            return Ok(());
        }
        let mut dir = d.dir.clone();
        for m in &d.missing {
            self.step()
                .map_err(|e| ("create directory", e.to_string()))?;
            let p = dir.join(m);
            self.record(Entry::CreatedDir {
                path: self.journal.rel(&p),
            })
            .map_err(|e| ("write the journal", e.to_string()))?;
            fs::create_dir(&p).map_err(|e| ("create directory", e.to_string()))?;
            self.touched.insert(dir);
            dir = p;
        }
        let target = dir.join(&wanted);
        self.step().map_err(|e| ("rename", e.to_string()))?;
        self.record(Entry::Renamed {
            from: self.journal.rel(&from),
            to: self.journal.rel(&target),
        })
        .map_err(|e| ("write the journal", e.to_string()))?;
        fs::rename(&from, &target).map_err(|e| ("rename", e.to_string()))?;
        self.touched.insert(src.dir.clone());
        self.touched.insert(dir);
        Ok(())
    }

    /// Copies `target` to a new backup file beside it, with its permissions.
    fn copy_aside(&mut self, dir: &Path, name: &OsStr, target: &Path) -> io::Result<PathBuf> {
        let backup = fresh_path(dir, name, "old")?;
        self.record(Entry::CopiedAside {
            path: self.journal.rel(&backup),
        })?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&backup)?;
        let mut src = File::open(target)?;
        io::copy(&mut src, &mut dst)?;
        dst.set_permissions(src.metadata()?.permissions())?;
        dst.sync_all()?;
        Ok(backup)
    }

    /// Undoes the journal in reverse; returns the errors met.
    fn rollback(&mut self) -> Vec<String> {
        journal::roll_back(&self.backend.root, &self.entries)
    }

    /// Removes backups and unused temporary files after success.
    fn cleanup(&mut self) {
        journal::roll_forward(&self.backend.root, &self.entries);
    }

    fn run(&mut self, changes: &[FileChange], targets: Vec<Option<Target>>) -> Result<(), Fail> {
        // Write the new contents of writes whose directory exists before
        // touching anything that exists.
        // Not into directories that a rename moves.
        let renamed: Vec<PathBuf> = changes
            .iter()
            .zip(&targets)
            .filter_map(|(c, t)| match (c, t) {
                (FileChange::Rename { .. }, Some(t)) if t.existing.is_some() => {
                    Some(t.dir.join(&t.name))
                }
                _ => None,
            })
            .collect();
        let mut prestaged: Vec<Option<(PathBuf, PathBuf)>> = Vec::with_capacity(changes.len());
        for (change, t) in changes.iter().zip(targets) {
            let staged = match (change, t) {
                (FileChange::Write { data, path }, Some(t))
                    if t.blocked.is_none()
                        && t.missing.is_empty()
                        && !t.existing.as_ref().is_some_and(|m| m.is_dir())
                        && !renamed.iter().any(|r| t.dir.starts_with(r)) =>
                {
                    let temp = self.stage(&t.dir, &t.name, data).map_err(|e| Fail {
                        path: path.clone(),
                        action: "write temporary file",
                        message: e.to_string(),
                    })?;
                    Some((t.dir, temp))
                }
                _ => None,
            };
            prestaged.push(staged);
        }
        for (change, staged) in changes.iter().zip(prestaged) {
            self.apply(change, staged)?;
        }
        let dirs: Vec<PathBuf> = self.touched.iter().cloned().collect();
        for d in dirs {
            // A directory renamed aside after it was touched is synced
            // with the backup it went to, which does not matter.
            let r = self.step().and_then(|()| match sync_dir(&d) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                r => r,
            });
            r.map_err(|e| Fail {
                path: d.display().to_string(),
                action: "sync directory",
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}

impl Backend for DirBackend {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn list(&self, dir: &str) -> Result<Vec<DirEntry>> {
        let (host, meta) = self.resolve_existing(dir)?;
        if !meta.is_dir() {
            return Err(ResealError::NotFound {
                path: dir.to_string(),
            });
        }
        let mut out = Vec::new();
        for entry in fs::read_dir(&host).map_err(|e| io_err(&host, "list directory", e))? {
            let entry = entry.map_err(|e| io_err(&host, "list directory", e))?;
            let os = entry.file_name();
            let full = host.join(&os);
            let Some(name) = os.to_str().filter(|n| addressable(n)) else {
                self.note_unnamed(full);
                continue;
            };
            let meta =
                fs::symlink_metadata(&full).map_err(|e| io_err(&full, "read metadata", e))?;
            let (is_dir, size) = if meta.file_type().is_symlink() {
                match self.follow(&full, name) {
                    Ok((_, m)) => (m.is_dir(), if m.is_dir() { 0 } else { m.len() }),
                    Err(_) => (false, 0),
                }
            } else {
                (meta.is_dir(), if meta.is_dir() { 0 } else { meta.len() })
            };
            out.push(DirEntry {
                name: name.to_string(),
                is_dir,
                size,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn commit_caveats(&self, _sid_changed: bool) -> Vec<String> {
        let unnamed = match self.unnamed.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if unnamed.is_empty() {
            return Vec::new();
        }
        let shown: Vec<String> = unnamed
            .iter()
            .take(10)
            .map(|p| {
                let shown: String = p
                    .display()
                    .to_string()
                    .chars()
                    .flat_map(|c| {
                        let esc: Vec<char> = if c.is_control() {
                            c.escape_default().collect()
                        } else {
                            vec![c]
                        };
                        esc
                    })
                    .collect();
                format!("\"{shown}\"")
            })
            .collect();
        let more = unnamed.len().saturating_sub(shown.len());
        vec![format!(
            "{} host name(s) under the root cannot be named by an image path (not UTF-8, or holding `\\` or `:`) and were left as they are: {}{}",
            unnamed.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )]
    }

    fn link_count(&self, path: &str) -> Result<u64> {
        let (_, meta) = self.resolve_existing(path)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Ok(meta.nlink())
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            Ok(1)
        }
    }

    fn exists(&self, path: &str) -> bool {
        self.resolve_existing(path).is_ok()
    }

    fn is_dir(&self, path: &str) -> bool {
        self.resolve_existing(path).is_ok_and(|(_, m)| m.is_dir())
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.read_regular(path, None)
    }

    fn read_head(&self, path: &str, len: usize) -> Result<Vec<u8>> {
        self.read_regular(path, Some(u64::try_from(len).unwrap_or(u64::MAX)))
    }

    fn commit(&mut self, changes: &[FileChange]) -> Result<()> {
        self.clear_cache();
        let fail_at = self.fail_after.take();
        if let Err(e) = self.lock_for_commit() {
            self.lock.lower(LockLevel::Read);
            return Err(e);
        }
        self.reads.lock().unwrap_or_else(|p| p.into_inner()).clear();
        // Check every path before anything is touched. Problems other than
        // unsafe paths may be cured by earlier changes in the list; they are
        // met again, in order, while applying.
        let mut targets = Vec::with_capacity(changes.len());
        for change in changes {
            match self.resolve_target(change.path()) {
                Ok(t) => targets.push(Some(t)),
                Err(e @ ResealError::UnsafePath { .. }) => {
                    self.last_steps = 0;
                    return Err(e);
                }
                Err(_) => targets.push(None),
            }
        }
        let kill = std::mem::take(&mut self.fail_kills);
        // Room for the new contents staged beside their targets and the
        // copies of truncated files, checked before anything is written.
        let needed: u64 = changes
            .iter()
            .zip(&targets)
            .map(|(c, t)| match (c, t) {
                (FileChange::Write { data, .. }, _) => data.len() as u64,
                (FileChange::Truncate { .. }, Some(t)) => {
                    t.existing.as_ref().map_or(0, |m| m.len())
                }
                _ => 0,
            })
            .sum();
        if let Err(e) = crate::space::ensure(
            &self.root,
            needed,
            "the new files staged beside their targets and the backups of truncated files",
        ) {
            self.lock.lower(LockLevel::Read);
            return Err(e);
        }
        let journal = match Journal::create(&self.root) {
            Ok(j) => j,
            Err(e) => {
                self.lock.lower(LockLevel::Read);
                return Err(ResealError::CommitFailed {
                    path: self.root.display().to_string(),
                    action: "create the journal",
                    message: format!("{e}; nothing was changed"),
                });
            }
        };
        let journal_path = journal.path().to_path_buf();
        let mut run = Run {
            backend: self,
            fail_at,
            kill,
            killed: false,
            steps: 0,
            journal,
            entries: Vec::new(),
            touched: BTreeSet::new(),
            moved_dirs: Vec::new(),
        };
        let result = run.run(changes, targets).and_then(|()| {
            let jfail = |e: io::Error| Fail {
                path: journal_path.display().to_string(),
                action: "write the journal",
                message: e.to_string(),
            };
            run.step().map_err(jfail)?;
            run.record(Entry::Applied).map_err(jfail)?;
            // A kill from here on is rolled forward by the next open.
            run.step().map_err(jfail)
        });
        let steps = run.steps;
        let outcome = match result {
            Ok(()) => {
                run.cleanup();
                // The changes are in place; a journal that cannot be
                // removed is finished by the next open.
                let _ = run.journal.remove();
                Ok(())
            }
            Err(f) if run.killed => Err(ResealError::CommitFailed {
                path: f.path,
                action: f.action,
                message: format!(
                    "{}; simulated kill: nothing undone, the journal {} is left for the next open",
                    f.message,
                    journal_path.display()
                ),
            }),
            Err(f) => {
                let undo_errors = run.rollback();
                let mut message = f.message;
                if undo_errors.is_empty() {
                    let _ = run.journal.remove();
                } else {
                    message.push_str(&format!(
                        "; ROLLBACK INCOMPLETE, the tree was NOT fully restored: {}; the journal {} is kept and the next run on this root retries the rollback",
                        undo_errors.join("; "),
                        journal_path.display()
                    ));
                }
                Err(ResealError::CommitFailed {
                    path: f.path,
                    action: f.action,
                    message,
                })
            }
        };
        self.last_steps = steps;
        self.clear_cache();
        self.lock.lower(LockLevel::Read);
        outcome
    }
}
