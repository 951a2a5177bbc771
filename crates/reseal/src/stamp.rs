//! `reseal stamp`: many unique machines from one generalized image.
//!
//! [`stamp`] makes `count` clones of a generalized image and personalizes
//! each one ([`crate::personalize`]: its own machine SID everywhere it
//! lives, computer name in the registry and in the answer file's
//! specialize pass, MachineGuid, reseal's record), all clones in
//! parallel (rayon), each from its own random state. The kind of clone
//! follows the image:
//!
//! | image | clone (default) | with `full` |
//! |---|---|---|
//! | directory | `out/<name>/`, a copy of the tree | same |
//! | VHDX, VHD | `out/<name>.vhdx` / `.vhd`: a differencing disk whose parent is the image (relative parent locator, so the folder moves together); only the blocks personalize changes are stored | a standalone copy |
//! | qcow2 | `out/<name>.qcow2`: an overlay with the image as its backing file | a standalone copy |
//! | raw, VMDK (single file) | a standalone copy | same |
//! | WIM | one new WIM at `out` (a file) holding one personalized copy of image 1 per clone, named after it; the copies share the file data | same |
//!
//! Standalone copies are reflinked where the filesystem can (btrfs, XFS)
//! and otherwise copied sparsely (runs of zeros become holes). The image
//! itself is opened read-only and never written: clones must not change it
//! (a linked clone's parent that changed would corrupt every clone).
//!
//! Names come from a pattern (`WEB-{n:03}`: `{n}` is the clone's number
//! from 1, `{n:0W}` the same zero-padded to W digits) or a list, and must be
//! valid NetBIOS computer names ([`validate_computer_name`]).
//!
//! Randomness is the operating system's CSPRNG, or, with a seed, a
//! per-clone seed derived from it and the clone's index: the same seed
//! gives the same identities, whatever the number of threads.
//!
//! All or nothing: each clone is built under a temporary name in `out` and
//! renamed into place when it is complete; when one clone fails, every
//! clone this call created is removed again and the error is returned.
//!
//! ```no_run
//! use reseal::stamp::{CloneNames, StampOptions, stamp};
//! let opts = StampOptions::new("clones", 3, CloneNames::Pattern("WEB-{n:02}".into()));
//! let report = stamp(std::path::Path::new("template.vhdx"), &opts)?;
//! for c in &report.clones {
//!     println!("{} {} {}", c.name, c.file.display(), c.sid[0].new);
//! }
//! # Ok::<(), reseal::ResealError>(())
//! ```

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::progress::{Phase, Progress, ProgressEvent};
use serde::Serialize;

use crate::backend::dir::DirBackend;
use crate::backend::disk::{DiskBackend, windows_partitions};
use crate::disk::ImageFormat;
use crate::error::{ResealError, Result};
use crate::image::ImageKind;
use crate::personalize::{CloneReport, PersonalizeOptions, derive_seed, personalize_backend};

pub use crate::personalize::{random_guid, validate_computer_name};

/// How the clones are named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum CloneNames {
    /// A pattern such as `WEB-{n:03}` (clone numbers from 1).
    Pattern(String),
    /// One name per clone.
    List(Vec<String>),
}

/// The default pattern when none is given.
pub const DEFAULT_PATTERN: &str = "CLONE-{n:03}";

/// What to stamp.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StampOptions {
    /// Number of clones.
    pub count: usize,
    /// The folder that receives the clones (created if needed); for a WIM,
    /// the new WIM file.
    pub out: PathBuf,
    /// Computer names (also the clones' file or folder names).
    pub names: CloneNames,
    /// Derive every identity from this seed (reproducible runs).
    pub seed: Option<u64>,
    /// Standalone copies instead of linked clones (VHD, VHDX, qcow2).
    pub full: bool,
    /// The image's kind, when forced (`--format`); found by content
    /// otherwise.
    pub kind: Option<ImageKind>,
    /// Stamp an image that is not generalized.
    pub force: bool,
    /// Where to report progress: one [`Phase::Stamp`] phase whose steps
    /// are the clones finished.
    pub progress: Option<Progress>,
}

impl StampOptions {
    /// Options for `count` clones named by `names` into `out`; the rest
    /// default (linked clones, random identities).
    pub fn new(out: impl Into<PathBuf>, count: usize, names: CloneNames) -> StampOptions {
        StampOptions {
            count,
            out: out.into(),
            names,
            seed: None,
            full: false,
            kind: None,
            force: false,
            progress: None,
        }
    }
}

/// One stamped clone.
#[derive(Debug, Clone, Serialize)]
pub struct StampedClone {
    /// What personalize gave it (name, SID, MachineGuid, answer file, ...).
    #[serde(flatten)]
    pub identity: CloneReport,
    /// The clone on the host: a folder or an image file.
    pub file: PathBuf,
    /// `linked` (differencing child / overlay of the image), `copy` (a
    /// standalone image file), `tree` (a folder) or `wim-image` (an image
    /// of the new WIM).
    pub clone_kind: &'static str,
    /// Bytes the clone occupies on the host filesystem (allocated blocks;
    /// for WIM images, the whole new WIM, which they share).
    pub allocated_bytes: u64,
}

impl std::ops::Deref for StampedClone {
    type Target = CloneReport;
    fn deref(&self) -> &CloneReport {
        &self.identity
    }
}

/// The outcome of [`stamp`].
#[derive(Debug, Clone, Serialize)]
pub struct StampReport {
    /// The source image.
    pub source: PathBuf,
    /// Its kind (`dir`, `vhdx`, ...).
    pub format: String,
    /// The clones, in order.
    pub clones: Vec<StampedClone>,
}

fn invalid(what: impl Into<String>, message: impl Into<String>) -> ResealError {
    ResealError::InvalidInput {
        what: what.into(),
        message: message.into(),
    }
}

fn io_err(path: &Path, action: &'static str) -> impl FnOnce(io::Error) -> ResealError {
    let path = path.to_path_buf();
    move |source| ResealError::Io {
        path,
        action,
        source,
    }
}

/// Expands a name pattern for clone number `n`: `{n}` or `{n:0W}` (width
/// W, zero-padded); `{{` and `}}` stand for braces.
pub fn expand_pattern(pattern: &str, n: usize) -> Result<String> {
    let bad = |why: &str| invalid(format!("name pattern {pattern:?}"), why.to_string());
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("{{") {
            out.push('{');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("}}") {
            out.push('}');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("{n") {
            let end = t
                .find('}')
                .ok_or_else(|| bad("unclosed {n...}; use {n} or {n:03}"))?;
            let spec = &t[..end];
            if spec.is_empty() {
                out.push_str(&n.to_string());
            } else {
                let w = spec
                    .strip_prefix(':')
                    .filter(|w| {
                        !w.is_empty() && w.len() <= 3 && w.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|w| w.parse::<usize>().ok())
                    .ok_or_else(|| bad("unknown placeholder; use {n} or {n:03}"))?;
                out.push_str(&format!("{n:0w$}"));
            }
            rest = &t[end + 1..];
        } else {
            return Err(bad("a lone brace; use {n}, {n:03}, {{ or }}"));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The clones' names, checked (valid and unique, case-insensitively).
pub fn clone_names(opts: &StampOptions) -> Result<Vec<String>> {
    let names = match &opts.names {
        CloneNames::Pattern(p) => (1..=opts.count)
            .map(|n| expand_pattern(p, n))
            .collect::<Result<Vec<_>>>()?,
        CloneNames::List(l) => {
            if l.len() != opts.count {
                return Err(invalid(
                    "--names",
                    format!("{} name(s) for {} clone(s)", l.len(), opts.count),
                ));
            }
            l.iter().map(|s| s.trim().to_string()).collect()
        }
    };
    if names.is_empty() {
        return Err(invalid("--count", "at least one clone is needed"));
    }
    for (i, n) in names.iter().enumerate() {
        validate_computer_name(n)?;
        if names[..i].iter().any(|m| m.eq_ignore_ascii_case(n)) {
            return Err(invalid(
                format!("computer name {n:?}"),
                "given to two clones; each clone needs its own name",
            ));
        }
    }
    Ok(names)
}

/// Makes a standalone copy of the image file `src` at `dst` (which must
/// not exist): a reflink where the filesystem offers one, else a sparse
/// copy (runs of zeros left as holes).
pub fn copy_image_file(src: &Path, dst: &Path) -> Result<()> {
    if reflink_copy::reflink(src, dst).is_ok() {
        return Ok(());
    }
    let _ = fs::remove_file(dst);
    let mut from = fs::File::open(src).map_err(io_err(src, "open the image"))?;
    let len = from
        .metadata()
        .map_err(io_err(src, "read the image's size"))?
        .len();
    let mut to = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(io_err(dst, "create the clone"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        from.read_exact(&mut buf[..n])
            .map_err(io_err(src, "read the image"))?;
        if buf[..n].iter().all(|&b| b == 0) {
            to.seek(SeekFrom::Current(n as i64))
                .map_err(io_err(dst, "write the clone"))?;
        } else {
            to.write_all(&buf[..n])
                .map_err(io_err(dst, "write the clone"))?;
        }
        at += n as u64;
    }
    to.set_len(len).map_err(io_err(dst, "write the clone"))?;
    to.sync_all().map_err(io_err(dst, "flush the clone"))?;
    Ok(())
}

/// Bytes a file or tree occupies on the host (allocated blocks).
pub fn allocated_bytes(path: &Path) -> u64 {
    #[cfg(unix)]
    fn one(m: &fs::Metadata) -> u64 {
        use std::os::unix::fs::MetadataExt;
        m.blocks() * 512
    }
    #[cfg(not(unix))]
    fn one(m: &fs::Metadata) -> u64 {
        m.len()
    }
    let Ok(m) = fs::symlink_metadata(path) else {
        return 0;
    };
    if m.is_dir() {
        fs::read_dir(path)
            .map(|rd| {
                rd.flatten()
                    .map(|e| allocated_bytes(&e.path()))
                    .sum::<u64>()
            })
            .unwrap_or(0)
            + one(&m)
    } else {
        one(&m)
    }
}

/// Whether a VMDK is a single self-contained file (a sparse extent with
/// its descriptor embedded), the only VMDK a plain file copy clones.
fn is_single_file_vmdk(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"KDMV"
}

/// Makes the clone file of a disk image: a linked clone where the format
/// has one and `full` is off, else a standalone copy. Returns the clone
/// kind.
fn make_disk_clone(
    src: &Path,
    format: ImageFormat,
    dst: &Path,
    full: bool,
) -> Result<&'static str> {
    if !full {
        if let Some(kind) = crate::disk::create_linked_clone(src, format, dst)? {
            return Ok(kind);
        }
    }
    if format == ImageFormat::Vmdk && !is_single_file_vmdk(src) {
        return Err(invalid(
            src.display().to_string(),
            "a VMDK made of several files (a descriptor with separate extents) is not cloned by copying one file; convert it to a single-file VMDK (qemu-img convert -O vmdk -o subformat=monolithicSparse) or to qcow2 first",
        ));
    }
    copy_image_file(src, dst)?;
    Ok("copy")
}

/// Merges the reports of several partitions of one clone into one.
fn merge(mut parts: Vec<CloneReport>) -> Option<CloneReport> {
    let mut first = if parts.is_empty() {
        return None;
    } else {
        parts.remove(0)
    };
    for p in parts {
        first.answer_files.extend(p.answer_files);
        first.sid.extend(p.sid);
        first.edits.extend(p.edits);
        first.not_done.extend(p.not_done);
        first.files_changed += p.files_changed;
    }
    Some(first)
}

/// Personalizes every Windows partition of the disk image at `path` (each
/// its own SID) and merges the reports.
fn personalize_disk(path: &Path, opts: &PersonalizeOptions) -> Result<CloneReport> {
    let parts = windows_partitions(path)?;
    let mut out = Vec::with_capacity(parts.len());
    for (i, &n) in parts.iter().enumerate() {
        let mut b = DiskBackend::open(path, Some(n))?;
        out.push(personalize_backend(
            &mut b,
            &PersonalizeOptions {
                seed: opts.seed.map(|s| derive_seed(s, i)),
                ..opts.clone()
            },
        )?);
    }
    merge(out).ok_or_else(|| ResealError::NoInstall {
        root: path.display().to_string(),
    })
}

/// The temporary name a clone is built under, beside its final place.
fn partial_name(dst: &Path) -> PathBuf {
    let name = dst
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dst.with_file_name(format!(".{name}.reseal-partial"))
}

fn remove_any(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = fs::remove_file(p);
        }
        Err(_) => {}
    }
}

/// Makes `opts.count` personalized clones of the generalized image `src`
/// in `opts.out`, in parallel. See the module documentation.
pub fn stamp(src: &Path, opts: &StampOptions) -> Result<StampReport> {
    let names = clone_names(opts)?;
    let kind = crate::image::resolve(src, opts.kind)?;
    let src = fs::canonicalize(src).map_err(io_err(src, "open the image"))?;
    let check = PersonalizeOptions {
        force: opts.force,
        dry_run: true,
        seed: opts.seed,
        ..PersonalizeOptions::default()
    };
    // The image must be one personalize accepts: found out once, on the
    // image itself (opened read-only), before any clone is made.
    match kind {
        ImageKind::Directory => {
            let mut b = DirBackend::open(&src)?;
            personalize_backend(&mut b, &check)?;
        }
        ImageKind::Disk(_) => {
            let parts = windows_partitions(&src)?;
            if parts.is_empty() {
                DiskBackend::open(&src, None)?;
                return Err(ResealError::NoInstall {
                    root: src.display().to_string(),
                });
            }
            for n in parts {
                let mut b = DiskBackend::open(&src, Some(n))?;
                personalize_backend(&mut b, &check)?;
            }
        }
        ImageKind::Wim => return stamp_wim(&src, opts, &names),
    }
    fs::create_dir_all(&opts.out).map_err(io_err(&opts.out, "create the output folder"))?;
    let out = fs::canonicalize(&opts.out).map_err(io_err(&opts.out, "open the output folder"))?;
    if kind == ImageKind::Directory && out.starts_with(&src) {
        return Err(invalid(
            opts.out.display().to_string(),
            "the output folder is inside the source image",
        ));
    }
    let ext = src
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .filter(|e| !e.is_empty());
    let dsts: Vec<PathBuf> = names
        .iter()
        .map(|n| match (kind, &ext) {
            (ImageKind::Directory, _) => out.join(n),
            (ImageKind::Disk(_), Some(e)) => out.join(format!("{n}.{e}")),
            (ImageKind::Disk(f), None) => out.join(format!("{n}.{}", f.extension())),
            (ImageKind::Wim, _) => out.join(n),
        })
        .collect();
    for p in &dsts {
        if fs::symlink_metadata(p).is_ok() || p == &src {
            return Err(invalid(
                p.display().to_string(),
                "exists already; stamp into an empty folder or choose other names",
            ));
        }
    }
    let total = names.len() as u64;
    let finished = std::sync::atomic::AtomicU64::new(0);
    let report = |e: ProgressEvent| {
        if let Some(p) = &opts.progress {
            p.emit(e);
        }
    };
    report(ProgressEvent::Begin {
        phase: Phase::Stamp,
    });
    report(ProgressEvent::Steps { done: 0, total });
    let results: Vec<Result<StampedClone>> = names
        .par_iter()
        .zip(dsts.par_iter())
        .enumerate()
        .map(|(i, (name, dst))| {
            let tmp = partial_name(dst);
            remove_any(&tmp);
            let popts = PersonalizeOptions {
                name: Some(name.clone()),
                seed: opts.seed.map(|s| derive_seed(s, i)),
                force: opts.force,
                ..PersonalizeOptions::default()
            };
            let made = (|| {
                let (identity, clone_kind) = match kind {
                    ImageKind::Directory => {
                        copy_tree(&src, &tmp)?;
                        let mut b = DirBackend::open(&tmp)?;
                        (personalize_backend(&mut b, &popts)?, "tree")
                    }
                    ImageKind::Disk(format) => {
                        let k = make_disk_clone(&src, format, &tmp, opts.full)?;
                        (personalize_disk(&tmp, &popts)?, k)
                    }
                    ImageKind::Wim => {
                        return Err(invalid(
                            src.display().to_string(),
                            "WIM files are not stamped",
                        ));
                    }
                };
                fs::rename(&tmp, dst).map_err(io_err(dst, "move the finished clone into place"))?;
                let mut identity = identity;
                identity.path = dst.clone();
                Ok(StampedClone {
                    identity,
                    file: dst.clone(),
                    clone_kind,
                    allocated_bytes: allocated_bytes(dst),
                })
            })();
            if made.is_err() {
                remove_any(&tmp);
            }
            let done = finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            report(ProgressEvent::Steps { done, total });
            made
        })
        .collect();
    report(ProgressEvent::End {
        phase: Phase::Stamp,
    });
    let mut clones = Vec::with_capacity(results.len());
    let mut first_err = None;
    for r in results {
        match r {
            Ok(c) => clones.push(c),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        for d in &dsts {
            remove_any(d);
            remove_any(&partial_name(d));
        }
        return Err(e);
    }
    Ok(StampReport {
        source: src,
        format: kind.name().to_string(),
        clones,
    })
}

/// Stamps a WIM: one new WIM at `opts.out` holding, per clone, a copy of
/// image 1 of `src` (sharing its file data) named after the clone and
/// personalized. The images are personalized one after the other, each
/// commit appending to the new file; the new WIM is built under a
/// temporary name and renamed into place when every image is done.
fn stamp_wim(src: &Path, opts: &StampOptions, names: &[String]) -> Result<StampReport> {
    use crate::backend::wim::{ImageSelector, WimBackend, export_copies};
    let out = &opts.out;
    if out.is_dir() || fs::symlink_metadata(out).is_ok() {
        return Err(invalid(
            out.display().to_string(),
            "for a WIM, --out names the new WIM file to write, which must not exist",
        ));
    }
    let mut check = WimBackend::open(src, ImageSelector::Index(1))?;
    personalize_backend(
        &mut check,
        &PersonalizeOptions {
            force: opts.force,
            dry_run: true,
            seed: opts.seed,
            ..PersonalizeOptions::default()
        },
    )?;
    drop(check);
    let tmp = partial_name(out);
    remove_any(&tmp);
    let made = (|| {
        export_copies(src, 1, names, &tmp)?;
        let mut clones = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let mut b = WimBackend::open(&tmp, ImageSelector::Index(i as u32 + 1))?;
            let mut identity = personalize_backend(
                &mut b,
                &PersonalizeOptions {
                    name: Some(name.clone()),
                    seed: opts.seed.map(|s| derive_seed(s, i)),
                    force: opts.force,
                    ..PersonalizeOptions::default()
                },
            )?;
            identity.path = out.clone();
            clones.push(StampedClone {
                identity,
                file: out.clone(),
                clone_kind: "wim-image",
                allocated_bytes: 0,
            });
        }
        fs::rename(&tmp, out).map_err(io_err(out, "move the finished WIM into place"))?;
        let total = allocated_bytes(out);
        for c in &mut clones {
            c.allocated_bytes = total;
        }
        Ok(clones)
    })();
    match made {
        Ok(clones) => Ok(StampReport {
            source: src.to_path_buf(),
            format: ImageKind::Wim.name().to_string(),
            clones,
        }),
        Err(e) => {
            remove_any(&tmp);
            Err(e)
        }
    }
}

/// Copies the tree at `src` to `dst` (which must not exist): files with
/// their permissions, directories, symbolic links as links.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let io = |p: &Path, action: &'static str| {
        let p = p.to_path_buf();
        move |source: io::Error| ResealError::Io {
            path: p,
            action,
            source,
        }
    };
    let meta = fs::metadata(src).map_err(io(src, "read metadata"))?;
    fs::create_dir(dst).map_err(io(dst, "create directory"))?;
    for entry in fs::read_dir(src).map_err(io(src, "list directory"))? {
        let entry = entry.map_err(io(src, "list directory"))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type().map_err(io(&from, "read metadata"))?;
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(io(&from, "read link"))?;
            copy_link(&target, &to).map_err(io(&to, "create link"))?;
        } else if ft.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            reflink_copy::reflink_or_copy(&from, &to).map_err(io(&from, "copy file"))?;
        }
    }
    // Last, so that a read-only directory could still be filled.
    fs::set_permissions(dst, meta.permissions()).map_err(io(dst, "set permissions"))?;
    Ok(())
}

#[cfg(unix)]
fn copy_link(target: &Path, to: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, to)
}

#[cfg(not(unix))]
fn copy_link(_target: &Path, _to: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symbolic links are only copied on Unix",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(expand_pattern("WEB-{n:03}", 7).expect("p"), "WEB-007");
        assert_eq!(expand_pattern("WEB-{n}", 12).expect("p"), "WEB-12");
        assert_eq!(expand_pattern("A{{n}}{n:2}", 3).expect("p"), "A{n}03");
        assert!(expand_pattern("WEB-{x}", 1).is_err());
        assert!(expand_pattern("WEB-{n", 1).is_err());
        assert!(expand_pattern("WEB-}", 1).is_err());
    }

    #[test]
    fn names_are_unique_and_counted() {
        let o = |names| StampOptions::new(PathBuf::new(), 2, names);
        assert!(clone_names(&o(CloneNames::List(vec!["a".into(), "A".into()]))).is_err());
        assert!(clone_names(&o(CloneNames::List(vec!["a".into()]))).is_err());
        assert!(clone_names(&o(CloneNames::Pattern("WEB".into()))).is_err());
        assert_eq!(
            clone_names(&o(CloneNames::Pattern("WEB-{n:02}".into()))).expect("ok"),
            ["WEB-01", "WEB-02"]
        );
    }
}
