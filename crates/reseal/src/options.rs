//! What the user asked for.

use serde::Serialize;

use crate::ResealError;

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
    /// The `--operations` list, when given, in virt-sysprep's grammar
    /// (see [`operation_list`]): plain names select exactly those.
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

/// Applies an `--operations` list to the known operations (`(name,
/// enabled by default)`, in their order) and returns the names selected,
/// in that order.
///
/// The grammar is virt-sysprep's: items are taken left to right starting
/// from an empty set; `name` or `+name` adds an operation, `-name`
/// removes it, `defaults` adds every operation enabled by default, `all`
/// adds every operation (`-defaults` and `-all` remove them). So
/// `defaults,-leftovers` is the default set less one, and a list of plain
/// names is exactly those. Names are matched without regard to case; an
/// unknown name or an empty item is an error that lists the known names.
pub fn operation_list(
    list: &[String],
    known: &[(&'static str, bool)],
) -> Result<Vec<&'static str>, ResealError> {
    let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
    let mut on = vec![false; known.len()];
    for raw in list {
        let item = raw.trim();
        let (add, name) = match item.as_bytes().first() {
            Some(b'-') => (false, &item[1..]),
            Some(b'+') => (true, &item[1..]),
            _ => (true, item),
        };
        let pick: Vec<usize> = if name.eq_ignore_ascii_case("all") {
            (0..known.len()).collect()
        } else if name.eq_ignore_ascii_case("defaults") {
            (0..known.len()).filter(|&i| known[i].1).collect()
        } else if let Some(i) = names.iter().position(|k| k.eq_ignore_ascii_case(name)) {
            vec![i]
        } else {
            return Err(ResealError::InvalidInput {
                what: format!("operation {raw:?}"),
                message: format!(
                    "unknown operation; known: {} (also defaults, all; -NAME removes, +NAME adds)",
                    names.join(", ")
                ),
            });
        };
        for i in pick {
            on[i] = add;
        }
    }
    Ok(names
        .into_iter()
        .zip(on)
        .filter_map(|(n, o)| o.then_some(n))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[(&str, bool)] = &[("a", true), ("b", false), ("c", true)];

    fn sel(items: &[&str]) -> Result<Vec<&'static str>, ResealError> {
        let list: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        operation_list(&list, KNOWN)
    }

    #[test]
    fn plain_names_are_exactly_those() {
        assert_eq!(sel(&["c", "A"]).unwrap(), ["a", "c"]);
        assert_eq!(sel(&["b"]).unwrap(), ["b"]);
    }

    #[test]
    fn virt_sysprep_grammar() {
        assert_eq!(sel(&["defaults"]).unwrap(), ["a", "c"]);
        assert_eq!(sel(&["defaults", "-a"]).unwrap(), ["c"]);
        assert_eq!(sel(&["defaults", "+b"]).unwrap(), ["a", "b", "c"]);
        assert_eq!(sel(&["all", "-c"]).unwrap(), ["a", "b"]);
        assert_eq!(sel(&["ALL", "-defaults"]).unwrap(), ["b"]);
        // Left to right: a later item wins.
        assert_eq!(sel(&["-a", "a"]).unwrap(), ["a"]);
        assert_eq!(sel(&["a", "-a"]).unwrap(), Vec::<&str>::new());
        assert_eq!(sel(&[" defaults ", " -c"]).unwrap(), ["a"]);
    }

    #[test]
    fn unknown_or_empty_items_are_refused() {
        for bad in [&["nope"][..], &["-nope"], &["defaults", ""], &["+"]] {
            let e = sel(bad).unwrap_err().to_string();
            assert!(
                e.contains("unknown operation") && e.contains("a, b, c"),
                "{e}"
            );
        }
    }
}
