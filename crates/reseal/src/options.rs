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
    /// What the `machine-sid` operation puts in place of the machine SID.
    pub sid: SidChoice,
    /// For tests and reproducible fixtures only: derive every random choice
    /// (the new machine SID, stamped identities) from this number instead
    /// of the operating system's CSPRNG. Never use it for real images: two
    /// runs with one seed produce the same "unique" identities.
    pub seed: Option<u64>,
}

/// The new machine SID of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "choice", content = "sid", rename_all = "snake_case")]
pub enum SidChoice {
    /// A fresh random SID (96 bits from the CSPRNG, or from `seed`).
    #[default]
    Random,
    /// This SID (`S-1-5-21-x-y-z`, checked before use).
    Given(String),
    /// Keep the machine SID (`--keep-sid`).
    Keep,
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
            .field("sid", &self.sid)
            .field("seed", &self.seed)
            .finish()
    }
}
