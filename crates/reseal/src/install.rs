//! Windows installations inside an image: finding them and loading their
//! hives.

use reseal_hive::Hive;

use crate::hives::{HiveId, HiveLoadError, LoadedHive};

/// One Windows installation found in an image, with its hives loaded.
#[derive(Debug, Clone)]
pub struct WindowsInstall {
    /// The Windows directory inside the image, e.g. `Windows`.
    pub windows_dir: String,
    /// Hives that loaded (dirty ones recovered from their logs).
    pub hives: Vec<LoadedHive>,
    /// Hives that exist but could not be loaded.
    pub load_errors: Vec<HiveLoadError>,
}

impl WindowsInstall {
    /// The loaded hive `id`, if any.
    pub fn loaded(&self, id: &HiveId) -> Option<&LoadedHive> {
        self.hives.iter().find(|h| &h.id == id)
    }

    /// The hive `id`, if loaded.
    pub fn hive(&self, id: &HiveId) -> Option<&Hive> {
        self.loaded(id).map(|h| &h.hive)
    }

    /// Path of a file inside this install's Windows directory.
    pub fn windows_path(&self, rel: &str) -> String {
        crate::backend::join(&self.windows_dir, rel)
    }
}
