//! Oracles 3 and 4: the Python readers regipy and dissect.regf, through
//! `xtask/py/hive_dump.py`, which prints JSON with every name as the hex of
//! its UTF-16LE code units and every value's data as hex of the raw bytes.
//! See that script for how each library is driven and for its quirks.
//!
//! Names that are not valid UTF-16 (lone surrogates) are turned into U+FFFD
//! here, since a Rust `String` cannot hold them.

use super::{Dump, missing, python, run_capture, workspace_root};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which Python reader to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PyLib {
    Regipy,
    DissectRegf,
}

impl PyLib {
    fn arg(self) -> &'static str {
        match self {
            PyLib::Regipy => "regipy",
            PyLib::DissectRegf => "dissect",
        }
    }
    fn module(self) -> &'static str {
        match self {
            PyLib::Regipy => "regipy",
            PyLib::DissectRegf => "dissect.regf",
        }
    }
}

fn script() -> PathBuf {
    workspace_root().join("xtask/py/hive_dump.py")
}

/// `true` when the Python interpreter exists and can import `lib`;
/// otherwise prints a notice (run `cargo xtask setup`) and returns `false`.
pub fn require_python(lib: PyLib) -> bool {
    let Some(py) = python() else {
        missing("the python validators (run `cargo xtask setup`)");
        return false;
    };
    let ok = Command::new(&py)
        .arg("-c")
        .arg(format!("import {}", lib.module()))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        missing(&format!(
            "{} importable by {} (run `cargo xtask setup`)",
            lib.module(),
            py.display()
        ));
    }
    ok
}

/// Dumps a hive with one of the Python readers.
pub fn dump_python(path: &Path, lib: PyLib) -> Result<Dump, String> {
    let py =
        python().ok_or("no Python interpreter: run `cargo xtask setup` or set RESEAL_PYTHON")?;
    let out = run_capture(Command::new(py).arg(script()).arg(lib.arg()).arg(path))?;
    let json: Value =
        serde_json::from_slice(&out).map_err(|e| format!("bad JSON from {}: {e}", lib.arg()))?;
    parse_json(&json)
}

fn name_from_hex(hex: &str) -> Result<String, String> {
    if hex.len() % 4 != 0 {
        return Err(format!("bad UTF-16 hex name {hex:?}"));
    }
    let bytes = bytes_from_hex(hex)?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    Ok(String::from_utf16_lossy(&units))
}

fn bytes_from_hex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return Err(format!("bad hex string of {} chars", hex.len()));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| format!("bad hex at {i}")))
        .collect()
}

fn parse_json(json: &Value) -> Result<Dump, String> {
    let keys = json["keys"].as_array().ok_or("JSON has no keys array")?;
    let mut dump = Dump::default();
    for key in keys {
        let comps = key["path"].as_array().ok_or("key without path")?;
        let comps = comps
            .iter()
            .map(|c| name_from_hex(c.as_str().ok_or("path component is not a string")?))
            .collect::<Result<Vec<_>, _>>()?;
        let path = comps.join("\\");
        let kd = dump.add_key(&path)?;
        for v in key["values"].as_array().ok_or("key without values")? {
            let name = name_from_hex(v["name"].as_str().ok_or("value without name")?)?;
            let ty = v["type"].as_u64().ok_or("value without type")?;
            let ty = u32::try_from(ty).map_err(|_| format!("type {ty} out of range"))?;
            let data = bytes_from_hex(v["data"].as_str().ok_or("value without data")?)?;
            if kd.values.insert(name.clone(), (ty, data)).is_some() {
                return Err(format!("duplicate value {name:?} in key {path:?}"));
            }
        }
    }
    Ok(dump)
}
