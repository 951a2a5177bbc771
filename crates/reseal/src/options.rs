//! What the user asked for.

use serde::Serialize;

/// The state the image is left in, as sysprep's `/oobe` or `/audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Boot into the out-of-box experience after specialize (`/oobe`).
    #[default]
    Oobe,
    /// Boot into audit mode after specialize (`/audit`).
    Audit,
}

/// Options of a generalize run. Its `Debug` form leaves out the answer
/// file's contents.
#[derive(Clone, Default, Serialize)]
pub struct GeneralizeOptions {
    /// `/oobe` or `/audit`.
    pub mode: Mode,
    /// `/mode:vm`: the image will run on the same virtual hardware; device
    /// instances are kept.
    pub vm: bool,
    /// Keep device instances (as PnpSysprep PersistAllDeviceInstalls=true).
    pub persist_devices: bool,
    /// The answer file's bytes and its name, if one was given.
    #[serde(skip)]
    pub unattend: Option<(String, Vec<u8>)>,
    /// Proceed despite findings that are refused unless forced.
    pub force: bool,
    /// Plan and report only; change nothing.
    pub dry_run: bool,
    /// Operation selection.
    pub selection: Selection,
}

/// Which operations run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Selection {
    /// Exactly these operations (`--operations`), when given.
    pub only: Option<Vec<String>>,
    /// Also these (`--enable`).
    pub enable: Vec<String>,
    /// Not these (`--disable`).
    pub disable: Vec<String>,
}

impl std::fmt::Debug for GeneralizeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneralizeOptions")
            .field("mode", &self.mode)
            .field("vm", &self.vm)
            .field("persist_devices", &self.persist_devices)
            .field(
                "unattend",
                &self
                    .unattend
                    .as_ref()
                    .map(|(n, b)| format!("{n} ({} bytes)", b.len())),
            )
            .field("force", &self.force)
            .field("dry_run", &self.dry_run)
            .field("selection", &self.selection)
            .finish()
    }
}
