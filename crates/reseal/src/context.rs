//! What a planner sees: the install (hives loaded), the backend (files),
//! the options and the parsed answer file. Read-only.

use reseal_hive::{Hive, Value};

use crate::backend::Backend;
use crate::hives::HiveId;
use crate::install::WindowsInstall;
use crate::options::GeneralizeOptions;
use crate::unattend::Unattend;

/// The read-only view a planner works from.
pub struct PlanContext<'a> {
    /// The installation.
    pub install: &'a WindowsInstall,
    /// Its files.
    pub backend: &'a dyn Backend,
    /// The run's options.
    pub options: &'a GeneralizeOptions,
    /// The answer file, when one was given.
    pub unattend: Option<&'a Unattend>,
}

impl PlanContext<'_> {
    /// A loaded hive.
    pub fn hive(&self, id: &HiveId) -> Option<&Hive> {
        self.install.hive(id)
    }

    /// A value, if the hive, key and value exist.
    pub fn value(&self, id: &HiveId, key: &str, name: &str) -> Option<Value> {
        let h = self.hive(id)?;
        let k = h.open_key(key).ok()??;
        h.value(k, name).ok()?
    }

    /// Whether a key exists.
    pub fn key_exists(&self, id: &HiveId, key: &str) -> bool {
        self.hive(id)
            .and_then(|h| h.open_key(key).ok().flatten())
            .is_some()
    }

    /// Names of a key's subkeys (empty when absent).
    pub fn subkeys(&self, id: &HiveId, key: &str) -> Vec<String> {
        let Some(h) = self.hive(id) else {
            return Vec::new();
        };
        let Some(k) = h.open_key(key).ok().flatten() else {
            return Vec::new();
        };
        h.subkeys(k)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| h.key_info(c).ok().map(|i| i.name))
            .collect()
    }

    /// Every control set the SYSTEM hive has (`ControlSet001`, ...), the
    /// current one (per `Select\Current`) first.
    pub fn control_sets(&self) -> Vec<String> {
        let mut sets: Vec<String> = self
            .subkeys(&HiveId::System, "")
            .into_iter()
            .filter(|n| n.len() == 13 && n[..10].eq_ignore_ascii_case("ControlSet"))
            .collect();
        if let Some(cur) = self.current_control_set() {
            sets.retain(|s| !s.eq_ignore_ascii_case(&cur));
            sets.insert(0, cur);
        }
        sets
    }

    /// The current control set's key name, from `Select\Current`.
    pub fn current_control_set(&self) -> Option<String> {
        let v = self.value(&HiveId::System, "Select", "Current")?;
        let n = u32::from_le_bytes(v.data.get(..4)?.try_into().ok()?);
        let name = format!("ControlSet{n:03}");
        self.key_exists(&HiveId::System, &name).then_some(name)
    }
}

/// Decodes REG_SZ / REG_EXPAND_SZ data (UTF-16LE, up to the first NUL).
pub fn reg_string(data: &[u8]) -> String {
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Encodes a string as REG_SZ data (UTF-16LE with a terminating NUL).
pub fn reg_sz(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Decodes a REG_DWORD.
pub fn reg_dword(data: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(..4)?.try_into().ok()?))
}
