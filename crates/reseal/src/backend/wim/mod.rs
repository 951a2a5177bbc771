//! A backend over one image of a WIM file, through wimlib.
//!
//! * The image's tree (names, directory flags, sizes) is read once from its
//!   metadata with `wimlib_iterate_dir_tree`; lookups are case-insensitive
//!   over that listing, and every path handed to wimlib uses the stored case.
//! * A read extracts only the file asked for into a private temporary
//!   directory, removed when the read ends (also on error).
//! * A commit stages new contents in a private temporary directory, turns
//!   the changes into wimlib update commands (add or replace, delete,
//!   rename), applies them with `wimlib_update_image` (which rolls every
//!   command back on failure) and then writes: in place by appending
//!   (`wimlib_overwrite`; the untouched data stays where it is and the old
//!   header stays valid until the new one is written), or to a new file.
//!   The integrity table is kept when the input has one.
//!
//! Metadata of replaced files: wimlib's add command replaces the whole
//! file entry, and its public API has no call that sets a security
//! descriptor, attributes, timestamps or named streams on an entry. A file
//! written or truncated through this backend therefore gets a new entry
//! with no security descriptor, the attributes and timestamps of the staged
//! host file, and no alternate data streams or short name.

mod export;
#[allow(unsafe_code)]
mod ffi;
mod keep;

mod all;
pub mod layout;
pub use all::{generalize_all_images, generalize_all_images_with_progress, image_count};
pub use export::export_copies;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::backend::{Backend, DirEntry, FileChange};
use crate::error::{ResealError, Result};
use crate::progress::Progress;
use reseal_hive::Sid;
use reseal_hive::sid_scan::find_domain_sid;

pub use ffi::WimError;
use ffi::{UpdateCmd, Wim};

/// Which image of the WIM to work on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSelector {
    /// 1-based image index.
    Index(u32),
    /// Image name (as in the WIM's XML data).
    Name(String),
}

impl std::str::FromStr for ImageSelector {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.is_empty() {
            return Err("an image index (1, 2, ...) or name is needed".into());
        }
        match s.parse::<u32>() {
            Ok(0) => Err("image indexes start at 1".into()),
            Ok(n) => Ok(ImageSelector::Index(n)),
            Err(_) => Ok(ImageSelector::Name(s.to_string())),
        }
    }
}

/// Whether a host path names a WIM file by its extension (`.wim`, `.esd`,
/// and `.swm`, a part of a split WIM, which is opened to be refused
/// clearly).
pub fn is_wim_path(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["wim", "esd", "swm"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

/// One known entry of the image tree.
#[derive(Debug, Clone)]
struct Node {
    /// Path with the stored case, `\`-separated, no leading separator.
    path: String,
    is_dir: bool,
    size: u64,
    /// Whether the entry has a security descriptor.
    has_sd: bool,
}

/// The image tree keyed by upper-cased `\`-separated path.
type Tree = BTreeMap<String, Node>;

fn norm(path: &str) -> String {
    path.replace('/', "\\").trim_matches('\\').to_uppercase()
}

fn name_of(path: &str) -> &str {
    path.rsplit('\\').next().unwrap_or(path)
}

fn parent_of(path: &str) -> &str {
    path.rfind('\\').map_or("", |i| &path[..i])
}

/// The wimlib form of an image path (`/`-separated, absolute).
fn wim_path(path: &str) -> String {
    format!("/{}", path.replace('\\', "/"))
}

/// A private temporary directory, removed with everything in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        remove_stale_temp_dirs(&base);
        let mut last = None;
        for _ in 0..16 {
            let mut r = [0u8; 8];
            getrandom::fill(&mut r).map_err(|e| ResealError::Io {
                path: base.clone(),
                action: "create a temporary directory",
                source: std::io::Error::other(e.to_string()),
            })?;
            let p = base.join(format!(
                "reseal-wim-{}-{:016x}",
                std::process::id(),
                u64::from_le_bytes(r)
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&p) {
                Ok(()) => return Ok(TempDir(p)),
                Err(e) => last = Some(e),
            }
        }
        Err(ResealError::Io {
            path: base,
            action: "create a temporary directory",
            source: last.unwrap_or_else(|| std::io::Error::other("no attempt")),
        })
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

/// Removes the private temporary directories (`reseal-wim-<pid>-<random>`)
/// that runs killed before they could clean up left in `base`: those whose
/// process is gone (no `/proc/<pid>`; where `/proc` is not there, nothing
/// is removed). A directory of a live process, or one that merely shares
/// the prefix, is left alone.
fn remove_stale_temp_dirs(base: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("reseal-wim-")) else {
            continue;
        };
        let Some((pid, random)) = rest.split_once('-') else {
            continue;
        };
        let pid_ok = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
        let random_ok = random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit());
        if !pid_ok || !random_ok || Path::new("/proc").join(pid).exists() {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct State {
    wim: Wim,
    image: i32,
    tree: Tree,
    /// The file's layout when it was opened.
    layout: layout::Layout,
}

/// One image of a WIM file.
pub struct WimBackend {
    path: PathBuf,
    output: Option<PathBuf>,
    image_name: Option<String>,
    rebuild: bool,
    state: Mutex<State>,
    /// Image paths (stored case) the last successful commit replaced with
    /// new entries (written or truncated files).
    replaced: Vec<String>,
    /// Machine SID change asked for the next commit (old, new).
    sid: Option<(Sid, Sid)>,
    /// After a commit with a SID change: entries whose descriptor still
    /// names the old SID, and whether that scan ran.
    acl_leftovers: Vec<String>,
    sid_scanned: bool,
    /// Test hook: fail the commit after the update, before writing.
    fail_before_write: bool,
    /// Lock on the WIM file (read; write while a commit writes into it).
    claim: crate::lock::Claim,
    /// Whether replaced files keep their metadata through an NTFS-3G
    /// capture (when it is available).
    keep_metadata: bool,
    /// Where commits report their progress (none by default).
    progress: Option<Progress>,
    /// Whether the WIM passed `wimlib_verify_wim` (done once, before the
    /// first write).
    verified: bool,
    /// Test hook: the largest file a write may leave, instead of the
    /// computed bound.
    max_written_len: Option<u64>,
}

fn wim_err(path: &Path, action: &'static str, e: WimError) -> ResealError {
    ResealError::Io {
        path: path.to_path_buf(),
        action,
        source: std::io::Error::other(e.to_string()),
    }
}

fn load(path: &Path, selector: &ImageSelector) -> Result<(State, Option<String>)> {
    let layout = layout::check(path)?;
    let wim = Wim::open(path).map_err(|e| wim_err(path, "open the WIM", e))?;
    let info = wim
        .info()
        .map_err(|e| wim_err(path, "read the WIM header", e))?;
    if info.total_parts > 1 {
        return Err(ResealError::InvalidInput {
            what: path.display().to_string(),
            message: format!(
                "a split WIM (part of {}) cannot be generalized; join it first (wimlib-imagex join)",
                info.total_parts
            ),
        });
    }
    let key = match selector {
        ImageSelector::Index(n) => n.to_string(),
        ImageSelector::Name(s) => s.clone(),
    };
    let image = match selector {
        ImageSelector::Index(n) if *n as u64 > info.image_count as u64 => None,
        _ => wim.resolve_image(&key),
    }
    .ok_or_else(|| ResealError::InvalidInput {
        what: path.display().to_string(),
        message: format!(
            "no image {key:?} in the WIM (it has {} image(s))",
            info.image_count
        ),
    })?;
    let name = wim.image_name(image);
    let entries = wim
        .walk(image, "/")
        .map_err(|e| wim_err(path, "read the image's directory tree", e))?;
    let mut tree = Tree::new();
    for e in entries {
        if e.depth == 0 {
            continue;
        }
        let p = e.full_path.trim_matches('/').replace('/', "\\");
        if p.is_empty() {
            continue;
        }
        let is_dir = e.attributes & ffi::FILE_ATTRIBUTE_DIRECTORY != 0;
        tree.insert(
            p.to_uppercase(),
            Node {
                path: p,
                is_dir,
                size: if is_dir { 0 } else { e.size },
                has_sd: e.has_security,
            },
        );
    }
    Ok((
        State {
            wim,
            image,
            tree,
            layout,
        },
        name,
    ))
}

/// Whether `output` names the same file as `input`: the same (device,
/// inode) when both exist (a symbolic or hard link to the input counts),
/// else the same canonical path (a missing output whose folder is the
/// input's, under the same name).
pub fn same_file(input: &Path, output: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(a), Ok(b)) = (std::fs::metadata(input), std::fs::metadata(output)) {
        return (a.dev(), a.ino()) == (b.dev(), b.ino());
    }
    let canon_out = match (output.parent(), output.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            std::fs::canonicalize(dir).map(|d| d.join(name)).ok()
        }
        _ => None,
    };
    match (std::fs::canonicalize(input), canon_out) {
        (Ok(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The refusal of an `--output` that is the input itself.
pub fn refuse_output_onto_input(input: &Path, output: &Path) -> Result<()> {
    if same_file(input, output) {
        return Err(ResealError::InvalidInput {
            what: output.display().to_string(),
            message: format!(
                "the output is the input WIM {} itself (same path, link or inode); writing a new WIM there would destroy the input: leave out --output to write in place, or name another file",
                input.display()
            ),
        });
    }
    Ok(())
}

/// Puts back the first bytes of a WIM written in place and cuts it to its
/// old length: an append-mode write leaves the old contents before
/// `old_len` as they were, so this restores the file exactly.
fn restore_appended(path: &Path, header: &[u8], old_len: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(header)?;
    f.set_len(old_len)?;
    f.sync_all()
}

impl WimBackend {
    /// Opens one image of the WIM at `path`; commits write back into it by
    /// appending.
    pub fn open(path: &Path, image: ImageSelector) -> Result<WimBackend> {
        let (state, image_name) = load(path, &image)?;
        let claim = crate::lock::Claim::read(path)?;
        Ok(WimBackend {
            claim,
            path: path.to_path_buf(),
            output: None,
            image_name,
            rebuild: false,
            state: Mutex::new(state),
            replaced: Vec::new(),
            sid: None,
            acl_leftovers: Vec::new(),
            sid_scanned: false,
            fail_before_write: false,
            keep_metadata: true,
            progress: None,
            verified: false,
            max_written_len: None,
        })
    }

    /// Writes commits to a new WIM file at `output` (all images) instead of
    /// into the input; later commits then go to `output`.
    pub fn with_output(mut self, output: Option<PathBuf>) -> Self {
        self.output = output;
        self
    }

    /// Rebuilds the whole WIM on commit (compacts it) instead of appending.
    pub fn with_rebuild(mut self, rebuild: bool) -> Self {
        self.rebuild = rebuild;
        self
    }

    /// Reports the progress of later commits (wimlib's update and write)
    /// to `progress`; `None` (the default) reports nothing. Reads do not
    /// report progress.
    pub fn set_progress(&mut self, progress: Option<Progress>) {
        self.progress = progress;
    }

    /// [`set_progress`](Self::set_progress) as a builder.
    pub fn with_progress(mut self, progress: Option<Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Whether files replaced by later commits keep their security
    /// descriptor, attributes, short name, named streams and times (the
    /// default, when mkntfs and wimlib's NTFS-3G support are there); off,
    /// they are added as plain files and the run report says what was lost.
    pub fn set_keep_metadata(&mut self, keep: bool) {
        self.keep_metadata = keep;
    }

    /// For tests: make the next commits fail after wimlib's update has been
    /// applied in memory and before anything is written, as a write error
    /// would.
    #[doc(hidden)]
    pub fn set_fail_before_write(&mut self, fail: bool) {
        self.fail_before_write = fail;
    }

    /// For tests: the largest file the next writes may leave, in place of
    /// the bound computed from the WIM's layout (`None`: computed).
    #[doc(hidden)]
    pub fn set_max_written_len(&mut self, limit: Option<u64>) {
        self.max_written_len = limit;
    }

    /// Image paths (stored case) that the last successful commit replaced
    /// with new entries.
    pub fn replaced_paths(&self) -> &[String] {
        &self.replaced
    }

    /// The 1-based index of the image worked on.
    pub fn image_index(&self) -> i32 {
        self.lock().image
    }

    /// The image's name, if it has one.
    pub fn image_name(&self) -> Option<&str> {
        self.image_name.as_deref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn node(&self, path: &str) -> Option<Node> {
        self.lock().tree.get(&norm(path)).cloned()
    }

    fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        let node = match self.node(path) {
            Some(n) if !n.is_dir => n,
            _ => return Err(ResealError::NotFound { path: path.into() }),
        };
        let tmp = TempDir::new()?;
        let flags = ffi::EXTRACT_FLAG_NO_ACLS
            | ffi::EXTRACT_FLAG_NO_ATTRIBUTES
            | ffi::EXTRACT_FLAG_NORPFIX
            | ffi::EXTRACT_FLAG_NO_PRESERVE_DIR_STRUCTURE;
        {
            let st = self.lock();
            st.wim
                .extract_paths(st.image, tmp.path(), &[wim_path(&node.path)], flags)
                .map_err(|e| wim_err(&self.path, "extract a file", e))?;
        }
        let host = tmp.path().join(name_of(&node.path));
        std::fs::read(&host).map_err(|source| ResealError::Io {
            path: host,
            action: "read an extracted file",
            source,
        })
    }
}

/// Resolves `path` against the tree: existing leading components take the
/// stored case, the rest keep the case given.
fn resolve(tree: &Tree, path: &str) -> String {
    let given: Vec<&str> = path.split(['\\', '/']).filter(|c| !c.is_empty()).collect();
    let mut out = String::new();
    let mut known = true;
    for c in given {
        let next = if out.is_empty() {
            c.to_string()
        } else {
            format!("{out}\\{c}")
        };
        if known {
            if let Some(n) = tree.get(&next.to_uppercase()) {
                out = n.path.clone();
                continue;
            }
            known = false;
        }
        out = next;
    }
    out
}

fn subtree_keys(tree: &Tree, key: &str) -> Vec<String> {
    let prefix = format!("{key}\\");
    let mut keys = vec![];
    if tree.contains_key(key) {
        keys.push(key.to_string());
    }
    keys.extend(
        tree.range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone()),
    );
    keys
}

fn add_parents(tree: &mut Tree, path: &str) {
    let mut p = parent_of(path);
    while !p.is_empty() {
        tree.entry(p.to_uppercase()).or_insert_with(|| Node {
            path: p.to_string(),
            is_dir: true,
            size: 0,
            has_sd: false,
        });
        p = parent_of(p);
    }
}

fn commit_err(path: &str, action: &'static str, message: String) -> ResealError {
    ResealError::CommitFailed {
        path: path.to_string(),
        action,
        message,
    }
}

/// A write (`Some(data)`) or a truncation (`None`, nothing when absent):
/// an add command that replaces the file with staged contents.
fn add_file(
    tree: &mut Tree,
    cmds: &mut Vec<UpdateCmd>,
    stage_file: &mut dyn FnMut(&[u8], &str) -> Result<PathBuf>,
    keeper: &mut Keeper<'_>,
    path: &str,
    data: Option<&[u8]>,
) -> Result<()> {
    let key = norm(path);
    let old = match tree.get(&key) {
        Some(n) if n.is_dir => return Err(commit_err(path, "write", "is a directory".into())),
        None if data.is_none() => return Ok(()),
        Some(n) => Some((n.size, n.has_sd)),
        None => None,
    };
    let target = resolve(tree, path);
    if target.is_empty() {
        return Err(commit_err(path, "write", "empty path".into()));
    }
    let data = data.unwrap_or_default();
    // A file already in the image: replaced from an NTFS volume holding it
    // with its metadata, when that can be done.
    let kept = match old {
        Some((size, _)) => keeper(&target, size, data),
        None => None,
    };
    let has_sd = kept.is_some() && old.is_some_and(|(_, sd)| sd);
    match kept {
        Some(volume) => cmds.push(UpdateCmd::Add {
            source: volume,
            target: wim_path(parent_of(&target)),
            // An entry without a descriptor stays without one (the scratch
            // volume gives every file a default descriptor).
            flags: keep::ADD_FLAG_NTFS | if has_sd { 0 } else { keep::ADD_FLAG_NO_ACLS },
        }),
        None => {
            let source = stage_file(data, path)?;
            cmds.push(UpdateCmd::Add {
                source,
                target: wim_path(&target),
                flags: ffi::ADD_FLAG_NORPFIX,
            });
        }
    }
    add_parents(tree, &target);
    tree.insert(
        key,
        Node {
            path: target,
            is_dir: false,
            size: data.len() as u64,
            has_sd,
        },
    );
    Ok(())
}

/// Stages an existing image file's replacement with its metadata: given
/// the file's image path, its old size and its new contents, gives the NTFS
/// volume to add at the image root, or `None` to fall back to a plain add.
type Keeper<'a> = dyn FnMut(&str, u64, &[u8]) -> Option<PathBuf> + 'a;

/// Turns changes into wimlib commands, tracking their effect on a copy of
/// the tree and staging file contents under `stage` (replacements of
/// existing files through `keeper`). Also returns the image paths added as
/// plain files (no security descriptor, attributes, short name, named
/// streams or Windows times).
fn plan(
    tree: &Tree,
    changes: &[FileChange],
    stage: &Path,
    keeper: &mut Keeper<'_>,
) -> Result<(Vec<UpdateCmd>, Vec<String>)> {
    let original = tree;
    let mut tree = tree.clone();
    let mut cmds = Vec::new();
    let mut staged = 0usize;
    let mut stage_file = |data: &[u8], path: &str| -> Result<PathBuf> {
        staged += 1;
        let p = stage.join(format!("f{staged}"));
        std::fs::write(&p, data).map_err(|e| commit_err(path, "stage", e.to_string()))?;
        Ok(p)
    };
    for c in changes {
        match c {
            FileChange::Write { path, data } => {
                add_file(
                    &mut tree,
                    &mut cmds,
                    &mut stage_file,
                    keeper,
                    path,
                    Some(data),
                )?;
            }
            FileChange::Truncate { path } => {
                add_file(&mut tree, &mut cmds, &mut stage_file, keeper, path, None)?;
            }
            FileChange::Delete { path } => {
                let key = norm(path);
                match tree.get(&key) {
                    None => {}
                    Some(n) if n.is_dir => {
                        return Err(commit_err(path, "delete", "is a directory".into()));
                    }
                    Some(n) => {
                        cmds.push(UpdateCmd::Delete {
                            path: wim_path(&n.path),
                            flags: ffi::DELETE_FLAG_FORCE,
                        });
                        tree.remove(&key);
                    }
                }
            }
            FileChange::DeleteTree { path } => {
                let key = norm(path);
                if let Some(n) = tree.get(&key) {
                    cmds.push(UpdateCmd::Delete {
                        path: wim_path(&n.path),
                        flags: ffi::DELETE_FLAG_FORCE | ffi::DELETE_FLAG_RECURSIVE,
                    });
                    for k in subtree_keys(&tree, &key) {
                        tree.remove(&k);
                    }
                }
            }
            FileChange::Rename { from, to } => {
                let (fk, tk) = (norm(from), norm(to));
                let Some(src) = tree.get(&fk).cloned() else {
                    continue;
                };
                if tk.is_empty() {
                    return Err(commit_err(from, "rename", "empty destination".into()));
                }
                if tk != fk && tree.contains_key(&tk) {
                    return Err(commit_err(
                        from,
                        "rename",
                        format!("the destination {to} exists"),
                    ));
                }
                if tk.starts_with(&format!("{fk}\\")) {
                    return Err(commit_err(from, "rename", format!("{to} is inside {from}")));
                }
                let target = if tk == fk {
                    // A change of case: keep the parent, take the new name.
                    let p = parent_of(&src.path);
                    let n = name_of(to.trim_matches(['\\', '/']));
                    if p.is_empty() {
                        n.to_string()
                    } else {
                        format!("{p}\\{n}")
                    }
                } else {
                    resolve(&tree, to)
                };
                let parent = parent_of(&target);
                if !parent.is_empty() && !tree.contains_key(&parent.to_uppercase()) {
                    // wimlib's rename needs the destination's parent; an
                    // added empty directory creates it (and its parents).
                    let d = stage.join(format!("d{}", cmds.len()));
                    std::fs::create_dir(&d).map_err(|e| commit_err(to, "stage", e.to_string()))?;
                    cmds.push(UpdateCmd::Add {
                        source: d,
                        target: wim_path(parent),
                        flags: ffi::ADD_FLAG_NORPFIX,
                    });
                    add_parents(&mut tree, &target);
                }
                cmds.push(UpdateCmd::Rename {
                    from: wim_path(&src.path),
                    to: wim_path(&target),
                });
                let moved: Vec<(String, Node)> = subtree_keys(&tree, &fk)
                    .into_iter()
                    .filter_map(|k| tree.remove(&k).map(|n| (k, n)))
                    .collect();
                for (_, n) in moved {
                    let rest = &n.path[src.path.len()..];
                    let p = format!("{target}{rest}");
                    tree.insert(p.to_uppercase(), Node { path: p, ..n });
                }
            }
        }
    }
    // Files that were in the image and went in as plain files: their
    // metadata is lost.
    let replaced = cmds
        .iter()
        .filter_map(|c| match c {
            UpdateCmd::Add {
                source,
                target,
                flags,
            } if source.is_file() && flags & keep::ADD_FLAG_NTFS == 0 => {
                Some(target.trim_start_matches('/').replace('/', "\\"))
            }
            _ => None,
        })
        .filter(|p: &String| original.contains_key(&norm(p)))
        .collect();
    Ok((cmds, replaced))
}

/// Identifies a write by its path and its data (the slice inside the
/// change itself; empty data by its length alone).
fn change_key(path: &str, data: &[u8]) -> (String, usize, usize) {
    let at = if data.is_empty() {
        0
    } else {
        data.as_ptr() as usize
    };
    (norm(path), at, data.len())
}

/// The writes and truncations in `changes` of files already in the image
/// (by the tree before the changes), with the data each will get: what
/// the planner will most likely replace.
fn foreseen_replacements<'a>(tree: &Tree, changes: &'a [FileChange]) -> Vec<keep::Job<'a>> {
    const EMPTY: &[u8] = &[];
    changes
        .iter()
        .filter_map(|c| {
            let (path, data) = match c {
                FileChange::Write { path, data } => (path, data.as_slice()),
                FileChange::Truncate { path } => (path, EMPTY),
                _ => return None,
            };
            let n = tree.get(&norm(path)).filter(|n| !n.is_dir)?;
            Some(keep::Job {
                path: n.path.clone(),
                old_size: n.size,
                data,
            })
        })
        .collect()
}

/// Splits update commands into calls: each add from an NTFS volume alone,
/// the commands between them together, in order.
fn update_batches(cmds: &[UpdateCmd]) -> Vec<&[UpdateCmd]> {
    let is_volume = |c: &UpdateCmd| matches!(c, UpdateCmd::Add { flags, .. } if flags & keep::ADD_FLAG_NTFS != 0);
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in cmds.iter().enumerate() {
        if is_volume(c) {
            if start < i {
                out.push(&cmds[start..i]);
            }
            out.push(&cmds[i..i + 1]);
            start = i + 1;
        }
    }
    if start < cmds.len() {
        out.push(&cmds[start..]);
    }
    out
}

impl Backend for WimBackend {
    fn describe(&self) -> String {
        let image = self.lock().image;
        match &self.image_name {
            Some(n) => format!("{} (image {image}, {n:?})", self.path.display()),
            None => format!("{} (image {image})", self.path.display()),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<DirEntry>> {
        let key = norm(dir);
        let st = self.lock();
        if !key.is_empty() && !st.tree.get(&key).is_some_and(|n| n.is_dir) {
            return Err(ResealError::NotFound { path: dir.into() });
        }
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}\\")
        };
        Ok(st
            .tree
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('\\'))
            .map(|(_, n)| DirEntry {
                name: name_of(&n.path).to_string(),
                is_dir: n.is_dir,
                size: n.size,
            })
            .collect())
    }

    fn exists(&self, path: &str) -> bool {
        let key = norm(path);
        key.is_empty() || self.lock().tree.contains_key(&key)
    }

    fn is_dir(&self, path: &str) -> bool {
        let key = norm(path);
        key.is_empty() || self.lock().tree.get(&key).is_some_and(|n| n.is_dir)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.read_file(path)
    }

    fn read_head(&self, path: &str, len: usize) -> Result<Vec<u8>> {
        let mut d = self.read_file(path)?;
        d.truncate(len);
        Ok(d)
    }

    fn commit_caveats(&self, sid_changed: bool) -> Vec<String> {
        let mut out = Vec::new();
        if !self.replaced.is_empty() {
            out.push(format!(
                "{} file(s) replaced in the WIM ({}) lost their security descriptor, DOS \
                 attributes, short (8.3) name, alternate data streams and timestamps (when the \
                 image is applied they inherit the parent directory's ACL and get the time of \
                 this run): keeping them goes through an NTFS-3G capture, which needs mkntfs \
                 (Debian ntfs-3g) and a wimlib built with NTFS-3G support, and it was not \
                 available or failed",
                self.replaced.len(),
                self.replaced.join(", ")
            ));
        }
        if sid_changed {
            let n = self.acl_leftovers.len();
            if n > 0 || !self.sid_scanned {
                const SHOWN: usize = 20;
                let mut list = self.acl_leftovers[..n.min(SHOWN)].join(", ");
                if n > SHOWN {
                    list.push_str(&format!(", and {} more", n - SHOWN));
                }
                out.push(if self.sid_scanned {
                    format!(
                        "file ACLs naming the old machine SID inside the WIM are not rewritten on \
                         {n} entr{} the run did not replace ({list}): wimlib has no call that \
                         sets an existing entry's security descriptor (replaced files get theirs \
                         rewritten)",
                        if n == 1 { "y" } else { "ies" }
                    )
                } else {
                    "file ACLs naming the old machine SID inside the WIM's security data are not \
                     rewritten: wimlib has no call that sets an existing entry's security \
                     descriptor"
                        .to_string()
                });
            }
        }
        out
    }

    fn rewrite_file_security(&mut self, old: &Sid, new: &Sid) -> bool {
        // Only the files the commit replaces get rewritten descriptors; the
        // others are listed by commit_caveats.
        self.sid = Some((old.clone(), new.clone()));
        false
    }

    fn commit(&mut self, changes: &[FileChange]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        if let Some(out) = &self.output {
            refuse_output_onto_input(&self.path, out)?;
        }
        if self.output.is_none() {
            self.claim.for_write()?;
        }
        let result = self.commit_locked(changes);
        self.claim.done();
        result
    }
}

impl WimBackend {
    fn commit_locked(&mut self, changes: &[FileChange]) -> Result<()> {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if !self.verified {
            // A WIM with a damaged resource is refused before anything is
            // written (an append would carry the damage on unnoticed).
            state.wim.verify().map_err(|e| ResealError::InvalidInput {
                what: self.path.display().to_string(),
                message: format!(
                    "the WIM fails verification ({e}); it was not modified: repair or recapture it"
                ),
            })?;
            self.verified = true;
        }
        let before = state.layout;
        let data_bytes: u64 = changes
            .iter()
            .map(|c| match c {
                FileChange::Write { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum();
        let limit = self.max_written_len.unwrap_or_else(|| {
            before
                .file_len
                .saturating_add(layout::growth_bound(&before, data_bytes))
        });
        let mut old_header = [0u8; layout::HEADER_LEN];
        {
            use std::io::Read;
            std::fs::File::open(&self.path)
                .and_then(|mut f| f.read_exact(&mut old_header))
                .map_err(|source| ResealError::Io {
                    path: self.path.clone(),
                    action: "read the WIM header",
                    source,
                })?;
        }
        let stage = TempDir::new()?;
        let (cmds, replaced) = {
            let (wim, image) = (&state.wim, state.image);
            let sid = self.sid.clone();
            let can_keep = self.keep_metadata && keep::available();
            // The files this commit will replace, staged in parallel up
            // front; the planner takes each one's volume when it gets to
            // that change (identified by its data), and stages on the spot
            // whatever it did not foresee.
            let jobs: Vec<keep::Job<'_>> = if can_keep {
                foreseen_replacements(&state.tree, changes)
            } else {
                Vec::new()
            };
            let staged = keep::stage_all(&self.path, image, &jobs, stage.path(), sid.as_ref());
            let mut prepared: BTreeMap<(String, usize, usize), PathBuf> = BTreeMap::new();
            for (j, v) in jobs.iter().zip(staged) {
                if let Some(v) = v {
                    prepared.insert(change_key(&j.path, j.data), v);
                }
            }
            let mut volumes = 0usize;
            let mut keeper = |path: &str, old: u64, data: &[u8]| -> Option<PathBuf> {
                if !can_keep {
                    return None;
                }
                if let Some(v) = prepared.remove(&change_key(path, data)) {
                    return Some(v);
                }
                volumes += 1;
                let vol = stage.path().join(format!("v{volumes}.ntfs"));
                // Any failure falls back to a plain add, which the run
                // report lists.
                keep::stage(wim, image, path, old, data, &vol, sid.as_ref()).ok()
            };
            plan(&state.tree, changes, stage.path(), &mut keeper)?
        };
        let fail_before_write = self.fail_before_write;
        let first = changes[0].path().to_string();
        let dest = self.output.clone().unwrap_or_else(|| self.path.clone());
        state.wim.set_progress(self.progress.clone());
        let result = (|| {
            let integrity = state
                .wim
                .info()
                .map_err(|e| commit_err(&first, "read the WIM header", e.to_string()))?
                .has_integrity_table;
            // wimlib keys the inodes it captures by (inode number, device)
            // across all the commands of one update call, and every scratch
            // NTFS volume numbers its files from the same start: each volume
            // goes in a call of its own, or its files would be taken for
            // hard links of another volume's.
            for batch in update_batches(&cmds) {
                state
                    .wim
                    .update(state.image, batch)
                    .map_err(|e| commit_err(&first, "update the image", e.to_string()))?;
            }
            if fail_before_write {
                return Err(commit_err(
                    &first,
                    "write the WIM",
                    "injected failure (test hook)".into(),
                ));
            }
            let mut flags = if integrity {
                ffi::WRITE_FLAG_CHECK_INTEGRITY
            } else {
                0
            };
            match &self.output {
                Some(out) => state
                    .wim
                    .write(out, flags)
                    .map_err(|e| commit_err(&first, "write the new WIM", e.to_string())),
                None => {
                    if self.rebuild {
                        flags |= ffi::WRITE_FLAG_REBUILD;
                    }
                    state
                        .wim
                        .overwrite(flags)
                        .map_err(|e| commit_err(&first, "write the WIM", e.to_string()))
                }
            }
        })();
        // The written file may not grow by more than the data plus bounded
        // metadata; a larger one is undone (an appended WIM cut back to its
        // old header and length, a new output removed).
        let result = result.and_then(|()| {
            let written = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
            if written <= limit {
                return Ok(());
            }
            let undo = if self.output.is_some() {
                std::fs::remove_file(&dest).map(|()| "the new file was removed")
            } else if self.rebuild {
                Ok("the rebuilt file stays (a rebuild cannot be undone)")
            } else {
                restore_appended(&dest, &old_header, before.file_len)
                    .map(|()| "the WIM was restored to its old header and length")
            };
            Err(commit_err(
                &first,
                "check the written WIM's size",
                format!(
                    "the write made {} {written} bytes long, more than the {limit} bytes expected from {} input bytes, {data_bytes} bytes of new data and bounded metadata; {}",
                    dest.display(),
                    before.file_len,
                    match undo {
                        Ok(s) => s.to_string(),
                        Err(e) => format!("UNDOING IT FAILED: {e}"),
                    }
                ),
            ))
        });
        // Reopen from disk either way: on failure this drops the in-memory
        // changes, on success it reads back what was written.
        let reopen_from = if result.is_ok() { &dest } else { &self.path };
        let (fresh, _) = load(reopen_from, &ImageSelector::Index(state.image as u32))?;
        *state = fresh;
        drop(stage);
        if result.is_ok() {
            self.path = dest;
            self.output = None;
            self.replaced = replaced;
            self.sid_scanned = false;
            self.acl_leftovers.clear();
            if let Some((old, _)) = self.sid.take() {
                let pred = |sd: &[u8]| !find_domain_sid(sd, &old).is_empty();
                if let Ok(paths) = state.wim.paths_with_security(state.image, &pred) {
                    self.acl_leftovers = paths;
                    self.sid_scanned = true;
                }
            }
        }
        result
    }
}

#[cfg(test)]
mod stale_tests {
    use super::*;

    #[test]
    fn stale_temp_dirs_of_dead_runs_are_removed() {
        let base = tempfile::tempdir().expect("tmp");
        let dead = base.path().join("reseal-wim-999999999-0123456789abcdef");
        let live = base.path().join(format!(
            "reseal-wim-{}-0123456789abcdef",
            std::process::id()
        ));
        let other = base.path().join("reseal-wim-notours");
        for d in [&dead, &live, &other] {
            std::fs::create_dir(d).expect("mkdir");
            std::fs::write(d.join("SOFTWARE"), b"regf").expect("write");
        }
        remove_stale_temp_dirs(base.path());
        assert!(!dead.exists(), "a dead run's folder is removed");
        assert!(live.exists() && other.exists(), "others are kept");
    }
}
