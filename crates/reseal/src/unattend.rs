//! Answer files (unattend.xml).

/// A parsed answer file.
#[derive(Debug, Clone)]
pub struct Unattend {
    /// The file's name as given.
    pub name: String,
    /// Its bytes, written to `Windows\Panther\unattend.xml`.
    pub bytes: Vec<u8>,
}
