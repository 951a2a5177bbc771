//! An in-memory backend, for tests and for building images in memory.

use std::collections::BTreeMap;

use crate::backend::{Backend, DirEntry, FileChange};
use crate::error::{ResealError, Result};

/// Files held in memory, keyed by their upper-cased path.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    files: BTreeMap<String, (String, Vec<u8>)>,
}

fn norm(path: &str) -> String {
    path.trim_matches('\\').to_uppercase()
}

impl MemoryBackend {
    /// An empty image.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a file.
    pub fn insert(&mut self, path: &str, data: Vec<u8>) {
        let p = path.trim_matches('\\').to_string();
        self.files.insert(norm(&p), (p, data));
    }

    /// Every file path (original case), sorted.
    pub fn paths(&self) -> Vec<String> {
        self.files.values().map(|(p, _)| p.clone()).collect()
    }

    fn children(&self, dir: &str) -> BTreeMap<String, DirEntry> {
        let d = norm(dir);
        let prefix = if d.is_empty() {
            String::new()
        } else {
            format!("{d}\\")
        };
        let mut out = BTreeMap::new();
        for (k, (orig, data)) in &self.files {
            let Some(rest) = k.strip_prefix(&prefix) else {
                continue;
            };
            let orig_rest = &orig[orig.len() - rest.len()..];
            match orig_rest.find('\\') {
                Some(i) => {
                    out.entry(rest[..i].to_string()).or_insert(DirEntry {
                        name: orig_rest[..i].to_string(),
                        is_dir: true,
                        size: 0,
                    });
                }
                None => {
                    out.insert(
                        rest.to_string(),
                        DirEntry {
                            name: orig_rest.to_string(),
                            is_dir: false,
                            size: data.len() as u64,
                        },
                    );
                }
            }
        }
        out
    }
}

impl Backend for MemoryBackend {
    fn describe(&self) -> String {
        "<memory>".into()
    }

    fn list(&self, dir: &str) -> Result<Vec<DirEntry>> {
        if !norm(dir).is_empty() && !self.is_dir(dir) {
            return Err(ResealError::NotFound { path: dir.into() });
        }
        Ok(self.children(dir).into_values().collect())
    }

    fn exists(&self, path: &str) -> bool {
        self.files.contains_key(&norm(path)) || self.is_dir(path)
    }

    fn is_dir(&self, path: &str) -> bool {
        let d = norm(path);
        d.is_empty() || self.files.keys().any(|k| k.starts_with(&format!("{d}\\")))
    }

    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.files
            .get(&norm(path))
            .map(|(_, d)| d.clone())
            .ok_or_else(|| ResealError::NotFound { path: path.into() })
    }

    fn read_head(&self, path: &str, len: usize) -> Result<Vec<u8>> {
        let mut d = self.read(path)?;
        d.truncate(len);
        Ok(d)
    }

    fn commit(&mut self, changes: &[FileChange]) -> Result<()> {
        // Changes go to a copy, kept only when all of them succeed.
        let mut next = self.clone();
        next.apply_all(changes)?;
        *self = next;
        Ok(())
    }
}

impl MemoryBackend {
    /// Moves `from` (a file, or every file under it) to `to`.
    fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (norm(from), norm(to));
        let fp = format!("{f}\\");
        let moving: Vec<String> = self
            .files
            .keys()
            .filter(|k| **k == f || k.starts_with(&fp))
            .cloned()
            .collect();
        if moving.is_empty() {
            return Ok(());
        }
        if t != f && self.exists(to) {
            return Err(ResealError::CommitFailed {
                path: from.to_string(),
                action: "rename",
                message: format!("the destination {to} exists"),
            });
        }
        let to_orig = to.trim_matches('\\');
        for k in moving {
            let Some((orig, data)) = self.files.remove(&k) else {
                continue;
            };
            let rest = orig
                .get(orig.len().saturating_sub(k.len() - f.len())..)
                .unwrap_or_default();
            self.insert(&format!("{to_orig}{rest}"), data);
        }
        Ok(())
    }

    fn apply_all(&mut self, changes: &[FileChange]) -> Result<()> {
        for c in changes {
            match c {
                FileChange::Rename { from, to } => self.rename(from, to)?,
                FileChange::Write { path, data } => self.insert(path, data.clone()),
                FileChange::Truncate { path } => {
                    if let Some((_, d)) = self.files.get_mut(&norm(path)) {
                        d.clear();
                    }
                }
                FileChange::Delete { path } => {
                    self.files.remove(&norm(path));
                }
                FileChange::DeleteTree { path } => {
                    let d = norm(path);
                    let p = format!("{d}\\");
                    self.files.retain(|k, _| k != &d && !k.starts_with(&p));
                }
            }
        }
        Ok(())
    }
}
