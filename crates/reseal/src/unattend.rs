//! Answer files (unattend.xml).
//!
//! An answer file is parsed once, up front, so that a malformed one is
//! refused before anything is planned, and so that the few settings that
//! change what an offline generalize does can be read from it:
//!
//! | Field | Pass | Component | Setting |
//! |---|---|---|---|
//! | [`Unattend::persist_all_device_installs`] | generalize | `Microsoft-Windows-PnpSysprep` | `PersistAllDeviceInstalls` |
//! | [`Unattend::skip_rearm`] | generalize | `Microsoft-Windows-Security-SPP` | `SkipRearm` |
//! | [`Unattend::computer_name`] | specialize | `Microsoft-Windows-Shell-Setup` | `ComputerName` |
//!
//! Answer files often carry passwords (`AdministratorPassword`,
//! `LocalAccount\Password`, `AutoLogon\Password`, domain-join credentials).
//! They are never printed: the `Debug` form shows no content, and
//! [`Unattend::redacted`] renders the file with every password replaced.

use std::fmt;
use std::ops::Range;

use roxmltree::{Document, Node, ParsingOptions};

use crate::error::{ResealError, Result};

/// What a redacted password looks like.
pub const REDACTED: &str = "*****";

/// The most nodes an answer file may have (real ones have a few hundred).
const NODES_LIMIT: u32 = 1_000_000;

/// A parsed answer file.
#[derive(Clone)]
pub struct Unattend {
    /// The file's name as given.
    pub name: String,
    /// Its bytes, written to `Windows\Panther\unattend.xml`.
    pub bytes: Vec<u8>,
    /// generalize pass, `Microsoft-Windows-PnpSysprep` →
    /// `PersistAllDeviceInstalls` (`true` keeps device instances).
    pub persist_all_device_installs: Option<bool>,
    /// generalize pass, `Microsoft-Windows-Security-SPP` → `SkipRearm`
    /// (`1`: sysprep does not rearm licensing).
    pub skip_rearm: Option<bool>,
    /// specialize pass, `Microsoft-Windows-Shell-Setup` → `ComputerName`
    /// as written (trimmed; `*` asks Windows for a random name).
    pub computer_name: Option<String>,
    /// Whether the file has any password element (`Password`,
    /// `AdministratorPassword`, `AutoLogon\Password`, ...).
    pub has_passwords: bool,
    /// The decoded text (never shown; see [`Unattend::redacted`]).
    text: String,
    /// Byte ranges of `text` that hold password values.
    secret_ranges: Vec<Range<usize>>,
}

impl fmt::Debug for Unattend {
    // Hand-written so that the bytes (and the passwords in them) never
    // reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Unattend")
            .field("name", &self.name)
            .field("len", &self.bytes.len())
            .field(
                "persist_all_device_installs",
                &self.persist_all_device_installs,
            )
            .field("skip_rearm", &self.skip_rearm)
            .field("computer_name", &self.computer_name)
            .field("has_passwords", &self.has_passwords)
            .finish_non_exhaustive()
    }
}

/// Decodes an answer file: UTF-8 (with or without BOM), or UTF-16 LE/BE
/// with a BOM.
fn decode(name: &str, bytes: &[u8]) -> Result<String> {
    let invalid = |message: String| ResealError::InvalidInput {
        what: name.to_string(),
        message,
    };
    let utf16 = |body: &[u8], le: bool| -> Result<String> {
        if body.len() % 2 != 0 {
            return Err(invalid(format!(
                "byte {}: UTF-16 text (it starts with a UTF-16 byte-order mark) must have an even length",
                bytes.len()
            )));
        }
        let units = body.chunks_exact(2).map(|c| {
            if le {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        let mut out = String::with_capacity(body.len() / 2);
        for (i, r) in char::decode_utf16(units).enumerate() {
            match r {
                Ok(c) => out.push(c),
                Err(_) => {
                    return Err(invalid(format!(
                        "byte {}: invalid UTF-16 (unpaired surrogate); expected UTF-8 or UTF-16 text",
                        2 + 2 * i
                    )));
                }
            }
        }
        Ok(out)
    };
    if let Some(body) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return utf16(body, true);
    }
    if let Some(body) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return utf16(body, false);
    }
    let body = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    match std::str::from_utf8(body) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => {
            let at = e.valid_up_to() + (bytes.len() - body.len());
            let hint = if body.len() >= 2 && (body[0] == 0 || body[1] == 0) {
                " (UTF-16 without a byte-order mark? save it with a BOM)"
            } else {
                ""
            };
            Err(invalid(format!(
                "byte {at}: invalid UTF-8{hint}; expected UTF-8, or UTF-16 with a byte-order mark"
            )))
        }
    }
}

/// Whether an element's local name names a password setting.
fn is_password_element(local: &str) -> bool {
    local.eq_ignore_ascii_case("Password") || local.to_ascii_lowercase().ends_with("password")
}

/// The trimmed text of an element's direct text children.
fn element_text(node: Node<'_, '_>) -> String {
    node.children()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect::<String>()
        .trim()
        .to_string()
}

/// The byte range of an element's content (between its tags), if it has any.
fn content_range(node: Node<'_, '_>) -> Option<Range<usize>> {
    let first = node.first_child()?;
    let last = node.last_child()?;
    let (start, end) = (first.range().start, last.range().end);
    (start < end).then_some(start..end)
}

fn child_element<'a, 'i>(node: Node<'a, 'i>, local: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name().eq_ignore_ascii_case(local))
}

/// Every `component` element named `component` in a `settings` of `pass`.
fn components<'a, 'i>(
    root: Node<'a, 'i>,
    pass: &'a str,
    component: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    root.children()
        .filter(move |s| {
            s.is_element()
                && s.tag_name().name() == "settings"
                && s.attribute("pass")
                    .is_some_and(|p| p.eq_ignore_ascii_case(pass))
        })
        .flat_map(|s| s.children())
        .filter(move |c| {
            c.is_element()
                && c.tag_name().name() == "component"
                && c.attribute("name")
                    .is_some_and(|n| n.eq_ignore_ascii_case(component))
        })
}

impl Unattend {
    /// Parses an answer file. `name` names it in errors.
    ///
    /// Errors ([`ResealError::InvalidInput`]) give the line and column and
    /// what was expected: not UTF-8/UTF-16, not well-formed XML, a root
    /// other than `<unattend>`, or a setting this crate reads with a value
    /// it cannot understand.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Unattend> {
        let text = decode(name, bytes)?;
        let opts = ParsingOptions {
            allow_dtd: false,
            nodes_limit: NODES_LIMIT,
            ..ParsingOptions::default()
        };
        let doc = Document::parse_with_options(&text, opts).map_err(|e| {
            let p = e.pos();
            ResealError::InvalidInput {
                what: name.to_string(),
                message: format!(
                    "line {}, column {}: not well-formed XML ({e}); expected an XML answer file",
                    p.row, p.col
                ),
            }
        })?;
        let at = |node: Node<'_, '_>, message: String| {
            let p = doc.text_pos_at(node.range().start);
            ResealError::InvalidInput {
                what: name.to_string(),
                message: format!("line {}, column {}: {message}", p.row, p.col),
            }
        };
        let root = doc.root_element();
        if root.tag_name().name() != "unattend" {
            return Err(at(
                root,
                format!(
                    "root element <{}>; expected <unattend xmlns=\"urn:schemas-microsoft-com:unattend\">",
                    root.tag_name().name()
                ),
            ));
        }

        let mut persist = None;
        if let Some(el) = components(root, "generalize", "Microsoft-Windows-PnpSysprep")
            .find_map(|c| child_element(c, "PersistAllDeviceInstalls"))
        {
            let t = element_text(el);
            persist = Some(match t.to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(at(
                        el,
                        format!("PersistAllDeviceInstalls is \"{t}\"; expected true or false"),
                    ));
                }
            });
        }

        let mut skip_rearm = None;
        if let Some(el) = components(root, "generalize", "Microsoft-Windows-Security-SPP")
            .find_map(|c| child_element(c, "SkipRearm"))
        {
            let t = element_text(el);
            skip_rearm = Some(match t.to_ascii_lowercase().as_str() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => {
                    return Err(at(el, format!("SkipRearm is \"{t}\"; expected 0 or 1")));
                }
            });
        }

        let computer_name = components(root, "specialize", "Microsoft-Windows-Shell-Setup")
            .find_map(|c| child_element(c, "ComputerName"))
            .map(element_text);

        // Passwords: an element named *Password holds either a <Value>
        // child (AdministratorPassword, LocalAccount\Password,
        // AutoLogon\Password) or the secret as its own text (domain-join
        // Credentials\Password). Both are redacted.
        let mut has_passwords = false;
        let mut secret_ranges = Vec::new();
        for node in root.descendants().filter(|n| n.is_element()) {
            if !is_password_element(node.tag_name().name()) {
                continue;
            }
            has_passwords = true;
            let holder = child_element(node, "Value").unwrap_or(node);
            if holder.children().any(|c| c.is_element()) {
                // Structured content without a <Value>: redact every text
                // node below it.
                for t in holder.descendants().filter(|d| d.is_text()) {
                    let r = t.range();
                    if r.start < r.end {
                        secret_ranges.push(r);
                    }
                }
            } else if let Some(r) = content_range(holder) {
                secret_ranges.push(r);
            }
        }
        secret_ranges.sort_by_key(|r| r.start);
        // Drop ranges nested in an earlier one.
        let mut merged: Vec<Range<usize>> = Vec::new();
        for r in secret_ranges {
            match merged.last_mut() {
                Some(last) if r.start < last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        drop(doc);

        Ok(Unattend {
            name: name.to_string(),
            bytes: bytes.to_vec(),
            persist_all_device_installs: persist,
            skip_rearm,
            computer_name,
            has_passwords,
            text,
            secret_ranges: merged,
        })
    }

    /// The answer file as text with every password value replaced by
    /// [`REDACTED`]: safe to print or log.
    pub fn redacted(&self) -> String {
        let mut out = String::with_capacity(self.text.len());
        let mut pos = 0;
        for r in &self.secret_ranges {
            // Ranges come from the parser over `text`, sorted and disjoint;
            // `get` keeps a bad range from panicking.
            let (Some(before), true) = (self.text.get(pos..r.start), r.end <= self.text.len())
            else {
                return format!("<!-- {}: not shown (could not redact it) -->", self.name);
            };
            out.push_str(before);
            out.push_str(REDACTED);
            pos = r.end;
        }
        match self.text.get(pos..) {
            Some(rest) => out.push_str(rest),
            None => return format!("<!-- {}: not shown (could not redact it) -->", self.name),
        }
        out
    }
}
