//! The persistent journal of a directory commit: what lets the next run
//! finish or undo a commit that was killed half-way.
//!
//! Before each step of a commit that changes the tree (creating a
//! temporary file or a directory, renaming, copying aside, truncating),
//! the step is appended to a journal file beside the root
//! (`.<root name>.reseal-journal` in the root's parent directory, or
//! `.reseal-journal` inside the root when the parent cannot be written)
//! and synced. Once every step is done and every touched directory is
//! synced, an `applied` record follows. The journal is removed when the
//! commit is finished or undone.
//!
//! A journal found when a root is opened is replayed: with its `applied`
//! record, the commit is rolled forward (the backups and unused temporary
//! files are removed); without it, it is rolled back. Every undo step
//! tolerates a step that never happened (its record is written before the
//! step), so a kill at any instant is recovered. Rolling back first
//! removes the temporary files that were never renamed into place, so
//! that restoring needs as little free space as possible; a truncated file
//! whose contents cannot be copied back is restored by renaming its backup
//! over it; a backup is deleted only after its restore succeeded. A
//! journal line cut short by a kill is the last one and is ignored: the
//! step it announced was not started.
//!
//! Paths are stored relative to the root, so the journal stays valid when
//! the volume is mounted elsewhere. The format is JSON lines (one record a
//! line), with `serde_json`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One recorded step (paths relative to the root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Entry {
    /// A directory is created.
    CreatedDir {
        /// The new directory.
        path: PathBuf,
    },
    /// A temporary file is created (the new contents of a file).
    Temp {
        /// The temporary file.
        path: PathBuf,
    },
    /// An entry is renamed aside.
    MovedAside {
        /// Where it was.
        original: PathBuf,
        /// Where it goes.
        backup: PathBuf,
        /// Whether it is a directory.
        is_dir: bool,
    },
    /// A temporary file is renamed into place.
    Installed {
        /// Where it goes.
        target: PathBuf,
        /// The temporary file.
        temp: PathBuf,
    },
    /// A file is copied aside (a backup before truncating).
    CopiedAside {
        /// The backup.
        path: PathBuf,
    },
    /// A file is truncated in place; its old contents are in `backup`,
    /// complete and synced.
    Truncated {
        /// The truncated file.
        target: PathBuf,
        /// Its backup.
        backup: PathBuf,
    },
    /// An entry is renamed.
    Renamed {
        /// The old name.
        from: PathBuf,
        /// The new name.
        to: PathBuf,
    },
    /// Every step is done and synced: roll forward.
    Applied,
}

/// The journal file of one commit being written.
#[derive(Debug)]
pub(super) struct Journal {
    file: File,
    path: PathBuf,
    root: PathBuf,
}

/// Where the journal of `root` goes: beside it, else inside it.
fn candidates(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let (Some(parent), Some(name)) = (root.parent(), root.file_name()) {
        let mut n = std::ffi::OsString::from(".");
        n.push(name);
        n.push(".reseal-journal");
        out.push(parent.join(n));
    }
    out.push(root.join(".reseal-journal"));
    out
}

/// The journal left by an interrupted commit on `root`, if any.
pub(super) fn find(root: &Path) -> Option<PathBuf> {
    candidates(root)
        .into_iter()
        .find(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
}

fn sync_parent(p: &Path) -> io::Result<()> {
    match p.parent() {
        Some(d) => File::open(d)?.sync_all(),
        None => Ok(()),
    }
}

impl Journal {
    /// Creates the journal of a new commit on `root` and syncs it.
    pub(super) fn create(root: &Path) -> io::Result<Journal> {
        let mut last = None;
        for path in candidates(root) {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    let j = Journal {
                        file,
                        path,
                        root: root.to_path_buf(),
                    };
                    j.file.sync_all()?;
                    sync_parent(&j.path)?;
                    return Ok(j);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no place for the journal")))
    }

    /// The journal file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// `p` relative to the root (host paths of a commit all lie inside it).
    pub(super) fn rel(&self, p: &Path) -> PathBuf {
        p.strip_prefix(&self.root).unwrap_or(p).to_path_buf()
    }

    /// Appends one record and syncs it before the step it announces.
    pub(super) fn append(&mut self, e: &Entry) -> io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()
    }

    /// Removes the journal: the commit is finished or undone.
    pub(super) fn remove(self) -> io::Result<()> {
        drop(self.file);
        fs::remove_file(&self.path)?;
        sync_parent(&self.path)
    }
}

/// Reads a journal: its complete records, in order.
pub(super) fn read(path: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for line in BufReader::new(File::open(path)?).split(b'\n') {
        let line = line?;
        match serde_json::from_slice::<Entry>(&line) {
            Ok(e) => out.push(e),
            // A line cut short by a kill ends the journal.
            Err(_) => break,
        }
    }
    Ok(out)
}

/// `p` as it is named after the renames `(from, to)`, in order.
pub(super) fn after_renames(p: &Path, renames: &[(PathBuf, PathBuf)]) -> PathBuf {
    let mut p = p.to_path_buf();
    for (from, to) in renames {
        if let Ok(rest) = p.strip_prefix(from) {
            p = if rest.as_os_str().is_empty() {
                to.clone()
            } else {
                to.join(rest)
            };
        }
    }
    p
}

fn exists(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok()
}

fn ignore_missing(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Copies `from`'s contents into `to` (which is truncated first) and syncs.
fn copy_contents_back(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = File::open(from)?;
    let mut dst = OpenOptions::new().write(true).truncate(true).open(to)?;
    io::copy(&mut src, &mut dst)?;
    dst.sync_all()
}

/// The renames recorded after record `i`, as absolute paths.
fn renames_after(root: &Path, entries: &[Entry], i: usize) -> Vec<(PathBuf, PathBuf)> {
    entries
        .iter()
        .skip(i + 1)
        .filter_map(|e| match e {
            Entry::Renamed { from, to } => Some((root.join(from), root.join(to))),
            _ => None,
        })
        .collect()
}

/// Temporary files that were never renamed into place.
fn unused_temps(entries: &[Entry]) -> Vec<(usize, &PathBuf)> {
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Entry::Temp { path } => {
                let used = entries
                    .iter()
                    .any(|x| matches!(x, Entry::Installed { temp, .. } if temp == path));
                (!used).then_some((i, path))
            }
            _ => None,
        })
        .collect()
}

/// Undoes the recorded steps (newest first) under `root`; returns the
/// errors met. Steps that never happened are skipped.
pub(super) fn roll_back(root: &Path, entries: &[Entry]) -> Vec<String> {
    let mut errors = Vec::new();
    let mut note = |what: &str, p: &Path, r: io::Result<()>| {
        if let Err(e) = r {
            errors.push(format!("{what} {}: {e}", p.display()));
        }
    };
    // Space first: staged contents that never went into place.
    for (i, temp) in unused_temps(entries) {
        let p = after_renames(&root.join(temp), &renames_after(root, entries, i));
        note("remove", &p, ignore_missing(fs::remove_file(&p)));
    }
    // Backups whose restore failed are kept.
    let mut keep: Vec<PathBuf> = Vec::new();
    for e in entries.iter().rev() {
        match e {
            Entry::Applied => {}
            Entry::CreatedDir { path } => {
                let p = root.join(path);
                note("remove directory", &p, ignore_missing(fs::remove_dir(&p)));
            }
            Entry::Temp { path } => {
                let p = root.join(path);
                note("remove", &p, ignore_missing(fs::remove_file(&p)));
            }
            Entry::CopiedAside { path } => {
                let p = root.join(path);
                if !keep.contains(&p) {
                    note("remove", &p, ignore_missing(fs::remove_file(&p)));
                }
            }
            Entry::Installed { target, temp } => {
                let (t, tmp) = (root.join(target), root.join(temp));
                // The temporary file still there: the rename never happened.
                if !exists(&tmp) {
                    note("remove", &t, ignore_missing(fs::remove_file(&t)));
                }
            }
            Entry::MovedAside {
                original, backup, ..
            } => {
                let (o, b) = (root.join(original), root.join(backup));
                if exists(&b) {
                    note("restore", &o, fs::rename(&b, &o));
                }
            }
            Entry::Truncated { target, backup } => {
                let (t, b) = (root.join(target), root.join(backup));
                if !exists(&b) {
                    continue;
                }
                if copy_contents_back(&b, &t).is_err() {
                    // No room to copy: the backup itself goes back.
                    if let Err(e) = fs::rename(&b, &t) {
                        note("restore", &t, Err(e));
                        keep.push(b);
                    }
                }
            }
            Entry::Renamed { from, to } => {
                let (f, t) = (root.join(from), root.join(to));
                if exists(&t) && !exists(&f) {
                    note("rename back", &f, fs::rename(&t, &f));
                }
            }
        }
    }
    sync_dirs(root, entries);
    errors
}

/// Syncs the directories the recorded steps touched (best effort).
fn sync_dirs(root: &Path, entries: &[Entry]) {
    let mut dirs = std::collections::BTreeSet::new();
    for e in entries {
        let paths: Vec<&PathBuf> = match e {
            Entry::Applied => Vec::new(),
            Entry::CreatedDir { path } | Entry::Temp { path } | Entry::CopiedAside { path } => {
                vec![path]
            }
            Entry::Installed { target, temp } => vec![target, temp],
            Entry::MovedAside {
                original, backup, ..
            } => vec![original, backup],
            Entry::Truncated { target, backup } => vec![target, backup],
            Entry::Renamed { from, to } => vec![from, to],
        };
        for p in paths {
            if let Some(d) = root.join(p).parent() {
                dirs.insert(d.to_path_buf());
            }
        }
    }
    for d in dirs {
        if let Ok(f) = File::open(&d) {
            let _ = f.sync_all();
        }
    }
}

/// Removes what a finished commit leaves behind: backups and unused
/// temporary files, where later renames moved them. Never fails: what
/// cannot be removed is only garbage.
pub(super) fn roll_forward(root: &Path, entries: &[Entry]) {
    for (i, e) in entries.iter().enumerate() {
        let later = || renames_after(root, entries, i);
        match e {
            Entry::MovedAside {
                backup,
                is_dir: true,
                ..
            } => {
                let _ = fs::remove_dir_all(after_renames(&root.join(backup), &later()));
            }
            Entry::MovedAside { backup, .. } | Entry::CopiedAside { path: backup } => {
                let _ = fs::remove_file(after_renames(&root.join(backup), &later()));
            }
            _ => {}
        }
    }
    for (i, temp) in unused_temps(entries) {
        let _ = fs::remove_file(after_renames(
            &root.join(temp),
            &renames_after(root, entries, i),
        ));
    }
}

/// What replaying a leftover journal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The interrupted commit had applied every change: it was finished.
    Finished {
        /// The journal file that was replayed.
        journal: PathBuf,
    },
    /// The interrupted commit was undone: the tree is as before it.
    Undone {
        /// The journal file that was replayed.
        journal: PathBuf,
        /// Steps undone.
        steps: usize,
    },
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovery::Finished { journal } => write!(
                f,
                "an interrupted earlier run had written all its changes; it was finished (journal {})",
                journal.display()
            ),
            Recovery::Undone { journal, steps } => write!(
                f,
                "an interrupted earlier run was undone ({steps} step(s); journal {}); the tree is as it was before that run",
                journal.display()
            ),
        }
    }
}

/// Replays the journal at `path` on `root`: rolls the commit forward or
/// back, then removes the journal. On errors the journal is kept (the next
/// open tries again) and the errors come back.
pub(super) fn recover(root: &Path, path: &Path) -> Result<Recovery, String> {
    let entries = read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let outcome = if entries.last() == Some(&Entry::Applied) {
        roll_forward(root, &entries);
        Recovery::Finished {
            journal: path.to_path_buf(),
        }
    } else {
        let errors = roll_back(root, &entries);
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        Recovery::Undone {
            journal: path.to_path_buf(),
            steps: entries.len(),
        }
    };
    fs::remove_file(path)
        .and_then(|()| sync_parent(path))
        .map_err(|e| format!("remove {}: {e}", path.display()))?;
    Ok(outcome)
}
