//! Reading what sysprep would run: the image's action files
//! (`<windir>\System32\Sysprep\ActionFiles\*.xml`, Windows 8 and later) and
//! the registry provider lists (Windows Vista/7 built-ins and third-party
//! `SysPrepExternal` providers). Read-only; [`super::provider_actions`]
//! decides what to do with the result.
//!
//! Format (sysprep-internals §1.3–1.5, sysprep-fidelity "Component-manifest
//! form"; high for the element names, which public copies of real
//! `Generalize.xml` files show). A compiled action file is a
//! `<sysprepInformation>` root holding one `<imaging exclude="…">` per
//! contributing component:
//!
//! ```xml
//! <imaging exclude="">
//!   <assemblyIdentity name="Microsoft-Windows-AppX-Sysprep" version="…" …/>
//!   <sysprepOrder order="0x1A00"/>
//!   <sysprepValidate methodName="SysprepGeneralizeValidate" moduleName="$(runtime.system32)\AppxSysprep.dll"/>
//!   <sysprepModule methodName="SysprepGeneralize" moduleName="$(runtime.system32)\AppxSysprep.dll"/>
//! </imaging>
//! ```
//!
//! Declarative components carry `<registryActions>` (`deleteKey path`,
//! `deleteValue path name`, `setValue path name type value`) and
//! `<fileActions>` (`deleteDirectory path`, `deleteFile path`, the latter
//! possibly a pattern) instead of, or besides, a module. The component
//! manifests they are compiled from wrap the same children in
//! `<imaging><sysprepInformation><sysprepProvider stage="generalize">`; both
//! shapes are read (a `sysprepProvider` of another stage is skipped).
//!
//! Element and attribute names are matched case-insensitively, whatever
//! their namespace. Children this reader does not know are kept by name in
//! [`ActionEntry::unknown`] so that they are reported rather than ignored.
//! Malformed XML is an error the caller reports (never a panic).

use roxmltree::{Document, Node, ParsingOptions};

use crate::context::reg_string;
use crate::hives::HiveId;
use crate::install::WindowsInstall;

/// The sysprep phase a provider runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Run on every sysprep run, before generalize.
    Cleanup,
    /// Run with `/generalize`.
    Generalize,
}

impl Phase {
    /// The action file's name / registry subkey name of the phase.
    pub fn file_stem(self) -> &'static str {
        match self {
            Phase::Cleanup => "Cleanup",
            Phase::Generalize => "Generalize",
        }
    }

    /// The `stage` attribute of a manifest's `sysprepProvider`.
    fn stage(self) -> &'static str {
        match self {
            Phase::Cleanup => "cleanup",
            Phase::Generalize => "generalize",
        }
    }
}

/// A DLL entry point (`sysprepModule` / `sysprepValidate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPoint {
    /// `moduleName`, as written (variables not expanded).
    pub module: String,
    /// `methodName`.
    pub method: String,
}

/// A declarative action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `registryActions/deleteKey`: a key and its subtree.
    DeleteKey {
        /// Full registry path (`HKEY_LOCAL_MACHINE\…`).
        path: String,
    },
    /// `registryActions/deleteValue`.
    DeleteValue {
        /// Full registry path of the key.
        path: String,
        /// Value name.
        name: String,
    },
    /// `registryActions/setValue` (not carried out: the encoding of its
    /// `type`/`value` attributes is not documented).
    SetValue {
        /// Full registry path of the key.
        path: String,
        /// Value name.
        name: String,
        /// `type` attribute as written.
        value_type: String,
        /// `value` attribute as written.
        value: String,
    },
    /// `fileActions/deleteDirectory`: a directory tree.
    DeleteDirectory {
        /// Path with `$(runtime.*)` variables.
        path: String,
    },
    /// `fileActions/deleteFile`: a file, or the files matching a pattern
    /// (`*`, `?`) in the last component.
    DeleteFile {
        /// Path with `$(runtime.*)` variables.
        path: String,
    },
}

/// One provider as declared: a component's `imaging` entry of an action
/// file, or one value of a registry provider list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionEntry {
    /// Where it is declared (the file's path in the image, or
    /// `SOFTWARE <key>`).
    pub source: String,
    /// The phase.
    pub phase: Phase,
    /// The contributing component (`assemblyIdentity name`), or the
    /// registry value's name.
    pub component: Option<String>,
    /// `sysprepOrder order` as written (`0x1A00`), or for registry lists
    /// the value's position (`#3`).
    pub order: Option<String>,
    /// The `exclude` attribute of the `imaging` element, when not empty.
    pub exclude: Option<String>,
    /// Validators (`sysprepValidate`).
    pub validate: Vec<EntryPoint>,
    /// Modules (`sysprepModule`).
    pub modules: Vec<EntryPoint>,
    /// Declarative actions, in document order.
    pub actions: Vec<Action>,
    /// Element names inside the entry this reader does not know.
    pub unknown: Vec<String>,
    /// Registered under `SysPrepExternal` (a third-party provider).
    pub third_party: bool,
}

impl ActionEntry {
    fn new(source: &str, phase: Phase) -> ActionEntry {
        ActionEntry {
            source: source.to_string(),
            phase,
            component: None,
            order: None,
            exclude: None,
            validate: Vec::new(),
            modules: Vec::new(),
            actions: Vec::new(),
            unknown: Vec::new(),
            third_party: false,
        }
    }

    /// `component` or a placeholder, for messages.
    pub fn component_label(&self) -> &str {
        self.component.as_deref().unwrap_or("(unnamed component)")
    }

    /// `order` or a placeholder, for messages.
    pub fn order_label(&self) -> &str {
        self.order.as_deref().unwrap_or("(no order)")
    }
}

/// Decodes an XML file: UTF-16 LE/BE by byte-order mark, else UTF-8 (BOM
/// optional; invalid bytes replaced).
fn decode(bytes: &[u8]) -> String {
    let utf16 = |body: &[u8], be: bool| {
        let units: Vec<u16> = body
            .chunks_exact(2)
            .map(|c| {
                let pair = [c[0], c[1]];
                if be {
                    u16::from_be_bytes(pair)
                } else {
                    u16::from_le_bytes(pair)
                }
            })
            .collect();
        String::from_utf16_lossy(&units)
    };
    match bytes {
        [0xff, 0xfe, body @ ..] => utf16(body, false),
        [0xfe, 0xff, body @ ..] => utf16(body, true),
        _ => String::from_utf8_lossy(bytes)
            .trim_start_matches('\u{feff}')
            .to_string(),
    }
}

fn is(n: &Node, name: &str) -> bool {
    n.is_element() && n.tag_name().name().eq_ignore_ascii_case(name)
}

fn attr<'a>(n: Node<'a, '_>, name: &str) -> Option<&'a str> {
    n.attributes()
        .find(|a| a.name().eq_ignore_ascii_case(name))
        .map(|a| a.value())
}

fn attr_string(n: Node, name: &str) -> String {
    attr(n, name).unwrap_or_default().to_string()
}

/// Element names an entry may hold (lower case).
const KNOWN: [&str; 13] = [
    "assemblyidentity",
    "sysprepinformation",
    "sysprepprovider",
    "sysprepOrder",
    "sysprepmodule",
    "sysprepvalidate",
    "registryactions",
    "fileactions",
    "deletekey",
    "deletevalue",
    "setvalue",
    "deletefile",
    "deletedirectory",
];

fn known(name: &str) -> bool {
    KNOWN.iter().any(|k| k.eq_ignore_ascii_case(name))
}

/// Fills `entry` from the elements below `unit` (not descending into a
/// nested `sysprepProvider`, which is its own unit).
fn read_unit(unit: Node, entry: &mut ActionEntry) {
    let mut stack: Vec<Node> = unit.children().filter(Node::is_element).collect();
    stack.reverse();
    while let Some(n) = stack.pop() {
        let name = n.tag_name().name();
        if is(&n, "sysprepProvider") {
            continue;
        }
        if is(&n, "assemblyIdentity") {
            if entry.component.is_none() {
                entry.component = attr(n, "name").map(str::to_string);
            }
        } else if is(&n, "sysprepOrder") {
            entry.order = attr(n, "order").map(str::to_string);
        } else if is(&n, "sysprepModule") || is(&n, "sysprepValidate") {
            let ep = EntryPoint {
                module: attr_string(n, "moduleName"),
                method: attr_string(n, "methodName"),
            };
            if is(&n, "sysprepModule") {
                entry.modules.push(ep);
            } else {
                entry.validate.push(ep);
            }
        } else if is(&n, "deleteKey") {
            entry.actions.push(Action::DeleteKey {
                path: attr_string(n, "path"),
            });
        } else if is(&n, "deleteValue") {
            entry.actions.push(Action::DeleteValue {
                path: attr_string(n, "path"),
                name: attr_string(n, "name"),
            });
        } else if is(&n, "setValue") {
            entry.actions.push(Action::SetValue {
                path: attr_string(n, "path"),
                name: attr_string(n, "name"),
                value_type: attr_string(n, "type"),
                value: attr_string(n, "value"),
            });
        } else if is(&n, "deleteDirectory") {
            entry.actions.push(Action::DeleteDirectory {
                path: attr_string(n, "path"),
            });
        } else if is(&n, "deleteFile") {
            entry.actions.push(Action::DeleteFile {
                path: attr_string(n, "path"),
            });
        } else if !known(name) && !entry.unknown.iter().any(|u| u == name) {
            entry.unknown.push(name.to_string());
        }
        // Containers (and unknown elements, whose children may still be
        // actions) are walked into.
        let mut kids: Vec<Node> = n.children().filter(Node::is_element).collect();
        kids.reverse();
        stack.extend(kids);
    }
}

/// Parses an action file of `phase` (`source` names it in messages).
pub fn parse(source: &str, phase: Phase, bytes: &[u8]) -> Result<Vec<ActionEntry>, String> {
    let text = decode(bytes);
    let opts = ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = Document::parse_with_options(&text, opts).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for imaging in doc.descendants().filter(|n| is(n, "imaging")) {
        let exclude = attr(imaging, "exclude")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let providers: Vec<Node> = imaging
            .descendants()
            .filter(|n| is(n, "sysprepProvider"))
            .collect();
        if providers.is_empty() {
            let mut e = ActionEntry::new(source, phase);
            e.exclude = exclude;
            read_unit(imaging, &mut e);
            out.push(e);
            continue;
        }
        // Manifest shape: the identity sits beside `imaging`.
        let component = imaging
            .parent()
            .into_iter()
            .flat_map(|p| p.children())
            .chain(imaging.descendants())
            .find(|n| is(n, "assemblyIdentity"))
            .and_then(|n| attr(n, "name"))
            .map(str::to_string);
        for p in providers {
            let stage = attr(p, "stage").unwrap_or_default();
            if !stage.eq_ignore_ascii_case(phase.stage()) {
                continue;
            }
            let mut e = ActionEntry::new(source, phase);
            e.exclude = exclude.clone();
            e.component = component.clone();
            read_unit(p, &mut e);
            out.push(e);
        }
    }
    Ok(out)
}

/// SOFTWARE keys of the registry provider lists, each with whether it
/// holds third-party providers. The phase's name is appended.
pub const REGISTRY_LISTS: [(&str, bool); 3] = [
    (r"Microsoft\Windows\CurrentVersion\Setup\Sysprep", false),
    (r"Microsoft\Windows NT\CurrentVersion\Setup\Sysprep", false),
    (
        r"Microsoft\Windows\CurrentVersion\Setup\SysPrepExternal",
        true,
    ),
];

/// Splits the strings of REG_MULTI_SZ data.
fn multi_strings(data: &[u8]) -> Vec<String> {
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    units
        .split(|&u| u == 0)
        .filter(|s| !s.is_empty())
        .map(String::from_utf16_lossy)
        .collect()
}

/// The providers of one phase registered in SOFTWARE (values
/// `"module.dll,EntryPoint"`; REG_SZ, REG_EXPAND_SZ or REG_MULTI_SZ).
pub fn registry_entries(install: &WindowsInstall, phase: Phase) -> Vec<ActionEntry> {
    let mut out = Vec::new();
    let Some(sw) = install.hive(&HiveId::Software) else {
        return out;
    };
    for (base, third_party) in REGISTRY_LISTS {
        let key = format!(r"{base}\{}", phase.file_stem());
        let Some(k) = sw.open_key(&key).ok().flatten() else {
            continue;
        };
        let mut position = 0usize;
        for v in sw.values(k).unwrap_or_default() {
            let texts = match v.value_type {
                1 | 2 => vec![reg_string(&v.data)],
                7 => multi_strings(&v.data),
                _ => continue,
            };
            for t in texts.into_iter().filter(|t| !t.trim().is_empty()) {
                position += 1;
                let (module, method) = match t.rsplit_once(',') {
                    Some((m, f)) => (m.trim().to_string(), f.trim().to_string()),
                    None => (t.trim().to_string(), String::new()),
                };
                let mut e = ActionEntry::new(&format!("SOFTWARE {key}"), phase);
                e.component = (!v.name.is_empty()).then(|| v.name.clone());
                e.order = Some(format!("#{position}"));
                e.modules.push(EntryPoint { module, method });
                e.third_party = third_party;
                out.push(e);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_and_manifest_shapes() {
        let compiled = br#"<?xml version="1.0"?>
<sysprepInformation>
 <imaging exclude="">
  <assemblyIdentity name="Microsoft-Windows-AppX-Sysprep" version="10.0.19041.1566"/>
  <sysprepOrder order="0x1A00"/>
  <sysprepValidate methodName="SysprepGeneralizeValidate" moduleName="$(runtime.system32)\AppxSysprep.dll"/>
  <sysprepModule methodName="SysprepGeneralize" moduleName="$(runtime.system32)\AppxSysprep.dll"/>
 </imaging>
 <imaging exclude="vm">
  <assemblyIdentity name="X"/>
  <sysprepOrder order="0x10"/>
  <registryActions><deleteValue path="HKLM\SOFTWARE\A" name="B"/></registryActions>
  <fileActions><deleteFile path="$(runtime.windows)\Logs\*.log"/></fileActions>
  <somethingNew/>
 </imaging>
</sysprepInformation>"#;
        let e = parse("G.xml", Phase::Generalize, compiled).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0].component.as_deref(),
            Some("Microsoft-Windows-AppX-Sysprep")
        );
        assert_eq!(e[0].order.as_deref(), Some("0x1A00"));
        assert_eq!(e[0].exclude, None);
        assert_eq!(e[0].validate[0].method, "SysprepGeneralizeValidate");
        assert_eq!(e[0].modules[0].method, "SysprepGeneralize");
        assert_eq!(e[1].exclude.as_deref(), Some("vm"));
        assert_eq!(e[1].actions.len(), 2);
        assert_eq!(e[1].unknown, vec!["somethingNew".to_string()]);

        let manifest = br#"<assembly xmlns="urn:schemas-microsoft-com:asm.v3">
 <assemblyIdentity name="Microsoft-Windows-Management-Service-WinRT"/>
 <imaging><sysprepInformation>
  <sysprepProvider stage="cleanup"><sysprepOrder order="0x1"/><sysprepModule methodName="C" moduleName="c.dll"/></sysprepProvider>
  <sysprepProvider stage="generalize"><sysprepOrder order="0x3d00"/>
   <fileActions><deleteDirectory path="$(runtime.windows)\ServiceState\wmansvc"/></fileActions>
  </sysprepProvider>
 </sysprepInformation></imaging></assembly>"#;
        let e = parse("m.man", Phase::Generalize, manifest).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(
            e[0].component.as_deref(),
            Some("Microsoft-Windows-Management-Service-WinRT")
        );
        assert_eq!(e[0].order.as_deref(), Some("0x3d00"));
        assert!(e[0].modules.is_empty());
        assert_eq!(e[0].actions.len(), 1);
        assert!(e[0].unknown.is_empty(), "{:?}", e[0].unknown);
    }

    #[test]
    fn utf16_and_garbage() {
        let text = "<sysprepInformation><imaging><sysprepOrder order=\"0x1\"/></imaging></sysprepInformation>";
        let mut b = vec![0xff, 0xfe];
        b.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        b.push(0x41); // odd trailing byte
        assert_eq!(parse("f", Phase::Cleanup, &b).unwrap().len(), 1);
        assert!(parse("f", Phase::Cleanup, b"<imaging><unclosed>").is_err());
        assert!(parse("f", Phase::Cleanup, &[0xfe, 0xff, 0x00]).is_err());
        assert_eq!(parse("f", Phase::Cleanup, b"<x/>").unwrap().len(), 0);
    }
}
