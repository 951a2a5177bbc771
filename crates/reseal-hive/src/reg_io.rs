//! `.reg` export of a subtree and import of a parsed `.reg` document.

use serde::Serialize;

use crate::error::{HiveError, Result};
use crate::hive::Hive;
use crate::regfile::{RegDocument, RegOp, RegVersion, RegWriter, strip_prefix_ci};

/// What an import changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportStats {
    /// Keys created or visited (`[path]` sections).
    pub keys: usize,
    /// Keys deleted (`[-path]`), including ones already absent.
    pub keys_deleted: usize,
    /// Values set.
    pub values_set: usize,
    /// Values deleted (including ones already absent).
    pub values_deleted: usize,
}

impl Hive {
    /// Exports the key at `key_path` and its subtree as `.reg` text. Each
    /// section's path is `prefix` followed by the key's path from the root;
    /// an empty prefix writes paths as `\a\b` (the form hivexregedit uses).
    pub fn export_reg(
        &self,
        key_path: &str,
        prefix: &str,
        version: RegVersion,
    ) -> Result<RegWriter> {
        let start = self.key(key_path)?;
        let base = self.key_path(start)?;
        let mut w = RegWriter::new(version);
        let prefix = prefix.trim_end_matches('\\');
        // The walk visits each key once, so a subkey list that loops back
        // (a mutated hive) is an error instead of an endless export.
        self.walk_from(start, base, |path, k| {
            w.key(&if prefix.is_empty() && path.is_empty() {
                "\\".to_string()
            } else if prefix.is_empty() {
                format!("\\{path}")
            } else if path.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}\\{path}")
            });
            for v in self.values(k)? {
                let name = (!v.name_units.is_empty()).then_some(v.name.as_str());
                w.value(name, v.value_type, &v.data);
            }
            Ok(())
        })?;
        Ok(w)
    }

    /// Applies a parsed `.reg` document. Section paths must start with
    /// `prefix` (compared case-insensitively; e.g. `HKEY_LOCAL_MACHINE\SOFTWARE`
    /// for a SOFTWARE hive), or, when `prefix` is `None`, be relative to the
    /// root (`\a\b` or `a\b`). Deleting a key or value that is absent is not
    /// an error, as in regedit.
    pub fn import_reg(&mut self, doc: &RegDocument, prefix: Option<&str>) -> Result<ImportStats> {
        self.ensure_writable()?;
        let mut stats = ImportStats::default();
        for op in &doc.ops {
            match op {
                RegOp::CreateKey { path } => {
                    let p = self.map_path(path, prefix)?;
                    self.create_key(p)?;
                    stats.keys += 1;
                }
                RegOp::DeleteKey { path } => {
                    let p = self.map_path(path, prefix)?;
                    if self.open_key(p)?.is_some() {
                        self.delete_key(p)?;
                    }
                    stats.keys_deleted += 1;
                }
                RegOp::SetValue {
                    path,
                    name,
                    value_type,
                    data,
                } => {
                    let p = self.map_path(path, prefix)?;
                    let k = self.create_key(p)?;
                    self.set_value_id(k, name.as_deref().unwrap_or(""), *value_type, data)?;
                    stats.values_set += 1;
                }
                RegOp::DeleteValue { path, name } => {
                    let p = self.map_path(path, prefix)?;
                    let n = name.as_deref().unwrap_or("");
                    if let Some(k) = self.open_key(p)? {
                        if self.value(k, n)?.is_some() {
                            self.delete_value(p, n)?;
                        }
                    }
                    stats.values_deleted += 1;
                }
            }
        }
        Ok(stats)
    }

    fn map_path<'a>(&self, path: &'a str, prefix: Option<&str>) -> Result<&'a str> {
        match prefix {
            Some(pre) => strip_prefix_ci(path, pre).ok_or_else(|| HiveError::Refused {
                file: self.name.clone(),
                path: path.to_string(),
                reason: format!("the .reg key path does not start with the prefix {pre:?}"),
            }),
            None if path.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("HKEY_")) => Err(HiveError::Refused {
                file: self.name.clone(),
                path: path.to_string(),
                reason: "the .reg key path names a registry root; give the prefix that maps to this hive's root \
                         (for example HKEY_LOCAL_MACHINE\\SOFTWARE)"
                    .into(),
            }),
            None => Ok(path.trim_start_matches('\\')),
        }
    }
}
