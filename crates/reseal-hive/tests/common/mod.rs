//! Test support: independent readers ("oracles") for hive files.
//!
//! Integration tests include this with `mod common;`. Every function here
//! turns a hive file into a [`Dump`] using code that is not ours: the hivex
//! library (through `hivexregedit`), libregf (through `regfexport`), and the
//! Python readers regipy and dissect.regf (through `xtask/py/hive_dump.py`).
//! The parsers for those tools' text output are written here on purpose and
//! share nothing with the crate under test.
//!
//! # Canonical form
//!
//! * A key is named by its path below the root: name components joined by
//!   `\`, in the case the reader gives; the root itself is `""`. The root
//!   key's own name is not part of any path.
//! * A value is named as stored; the default (unnamed) value is `""`.
//! * Each value carries its 32-bit type and its raw data bytes. Every oracle
//!   returns the exact stored bytes, except where a reader's own output is
//!   lossy; see each module for the few documented exceptions.
//! * All oracles read the primary file only: transaction logs are ignored,
//!   so compare dirty hives only after replaying them.
//!
//! # Known disagreements between readers (as seen on the corpus)
//!
//! * regfexport decodes compressed (8-bit) names with Windows-1252, the
//!   others (and Windows) with Latin-1: names holding U+0080..U+009F read
//!   differently there (see `regfexport.rs`).
//! * regfexport shows the wrong bytes for inline data of 1..=3 bytes, cuts
//!   string data at the first NUL, cuts names at an embedded NUL and cannot
//!   tell the default value from a value named `(default)`: compare with it
//!   through [`Dump::regfexport_view`] (see `regfexport.rs`).
//! * dissect.regf reads big data (`db`) only in hives of minor version > 4
//!   (see `xtask/py/hive_dump.py`).
//! * Names with lone UTF-16 surrogates: the Python oracles map them to
//!   U+FFFD; hivex and libregf may refuse the hive.

// Each integration test uses a different part of this module.
#![allow(dead_code, unused_imports)]

mod hivex;
mod python;
mod regfexport;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use hivex::{dump_hivex, parse_reg_export};
pub use python::{PyLib, dump_python, require_python};
pub use regfexport::{dump_regfexport, parse_regfexport};

/// The logical content of a hive: every key and its values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// Key path below the root (components joined by `\`; root = `""`).
    pub keys: BTreeMap<String, KeyDump>,
}

/// The values of one key: name (`""` = default) to (type, raw data).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyDump {
    pub values: BTreeMap<String, (u32, Vec<u8>)>,
}

impl Dump {
    /// Adds a key; a second key with the same path is an error (a hive that
    /// has two cannot be represented, and a valid hive never has two).
    pub fn add_key(&mut self, path: &str) -> Result<&mut KeyDump, String> {
        if self.keys.contains_key(path) {
            return Err(format!("duplicate key path {path:?}"));
        }
        Ok(self.keys.entry(path.to_string()).or_default())
    }

    /// Looks up one value.
    pub fn value(&self, key: &str, name: &str) -> Option<&(u32, Vec<u8>)> {
        self.keys.get(key)?.values.get(name)
    }

    /// Total number of values in the hive.
    pub fn value_count(&self) -> usize {
        self.keys.values().map(|k| k.values.len()).sum()
    }

    /// The view to compare with `regfexport` through (apply it to both
    /// sides): REG_SZ and REG_EXPAND_SZ data is cut before the first UTF-16
    /// NUL, and data shorter than 4 bytes is blanked (zeroed, or emptied for
    /// strings). See `regfexport.rs` for why.
    pub fn regfexport_view(&self) -> Dump {
        let mut out = self.clone();
        for key in out.keys.values_mut() {
            for (ty, data) in key.values.values_mut() {
                if *ty == 1 || *ty == 2 {
                    if let Some(i) = data.chunks_exact(2).position(|c| c == [0, 0]) {
                        data.truncate(2 * i);
                    }
                    if data.len() < 4 {
                        data.clear();
                    }
                } else if data.len() < 4 {
                    data.fill(0);
                }
            }
        }
        out
    }

    /// Human-readable differences from `other`, in path order; empty when equal.
    pub fn diff(&self, other: &Dump) -> Vec<String> {
        let mut out = Vec::new();
        let paths: BTreeSet<&String> = self.keys.keys().chain(other.keys.keys()).collect();
        for path in paths {
            let (a, b) = match (self.keys.get(path), other.keys.get(path)) {
                (Some(a), Some(b)) => (a, b),
                (Some(_), None) => {
                    out.push(format!("key {path:?}: only in left"));
                    continue;
                }
                _ => {
                    out.push(format!("key {path:?}: only in right"));
                    continue;
                }
            };
            let names: BTreeSet<&String> = a.values.keys().chain(b.values.keys()).collect();
            for name in names {
                match (a.values.get(name), b.values.get(name)) {
                    (Some(x), Some(y)) if x != y => out.push(format!(
                        "value {path:?} {name:?}: left {} vs right {}",
                        show(x),
                        show(y)
                    )),
                    (Some(_), None) => out.push(format!("value {path:?} {name:?}: only in left")),
                    (None, Some(_)) => out.push(format!("value {path:?} {name:?}: only in right")),
                    _ => {}
                }
            }
        }
        out
    }
}

fn show((ty, data): &(u32, Vec<u8>)) -> String {
    let head: Vec<String> = data.iter().take(24).map(|b| format!("{b:02x}")).collect();
    let more = if data.len() > 24 { " …" } else { "" };
    format!(
        "type {ty:#x}, {} bytes [{}{more}]",
        data.len(),
        head.join(" ")
    )
}

/// Panics, listing the first differences, when two dumps differ.
#[track_caller]
pub fn assert_same(left: &Dump, left_name: &str, right: &Dump, right_name: &str) {
    let diff = left.diff(right);
    if !diff.is_empty() {
        let shown: Vec<&String> = diff.iter().take(20).collect();
        panic!(
            "{left_name} (left) and {right_name} (right) disagree in {} places:\n  {}",
            diff.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
}

/// Prints a line that stays visible even when the test harness captures
/// output (it writes to the process's stderr directly).
pub fn notice(msg: &str) {
    let _ = writeln!(std::io::stderr(), "notice: {msg}");
}

/// A missing corpus, file or tool (`what`): skips locally (with a notice),
/// fails the test under CI=true ([`reseal_testkit::require`]).
pub fn missing(what: &str) {
    reseal_testkit::require(false, what);
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared corpus of real hives: `RESEAL_CORPUS`, else
/// `../shared/corpus` beside the workspace; `None` when absent.
pub fn corpus_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("RESEAL_CORPUS") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace_root().join("../shared/corpus"),
    };
    dir.is_dir().then_some(dir)
}

/// A file of the corpus, or `None` (with a notice) when the corpus or the
/// file is missing.
pub fn corpus_file(rel: &str) -> Option<PathBuf> {
    let Some(dir) = corpus_dir() else {
        missing("the corpus (set RESEAL_CORPUS)");
        return None;
    };
    let path = dir.join(rel);
    if path.is_file() {
        Some(path)
    } else {
        missing(&format!("corpus file {rel}"));
        None
    }
}

/// The Python interpreter that has the validators: `RESEAL_PYTHON`, else
/// `target/venv/bin/python` in the workspace when it exists.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RESEAL_PYTHON").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let venv = workspace_root().join("target/venv/bin/python");
    venv.exists().then_some(venv)
}

/// Whether `name` is an executable on `PATH`.
pub fn tool_exists(name: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        let candidate = dir.join(name);
        candidate
            .metadata()
            .map(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
            .unwrap_or(false)
    })
}

/// `true` when `name` is on `PATH`; otherwise skips locally (a notice) and
/// fails under CI=true.
pub fn require_tool(name: &str) -> bool {
    reseal_testkit::require(tool_exists(name), &format!("the command `{name}`"))
}

/// Runs a command and returns its stdout; a failure to start, a non-zero
/// exit or any signal is an error that quotes stderr.
pub(crate) fn run_capture(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(format!("{shown} failed ({}):\n{tail}", out.status));
    }
    Ok(out.stdout)
}

/// Turns a two-digit hex token into a byte.
pub(crate) fn hex_byte(tok: &str) -> Result<u8, String> {
    if tok.len() != 2 {
        return Err(format!("bad hex byte {tok:?}"));
    }
    u8::from_str_radix(tok, 16).map_err(|_| format!("bad hex byte {tok:?}"))
}

/// The UTF-16LE bytes of a string.
pub fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}
