//! Setting the specialize computer name in an answer file, in place.
//!
//! [`set_computer_name`] edits the text of an answer file the way a person
//! would: it finds, from a parse, where the `ComputerName` of the
//! `Microsoft-Windows-Shell-Setup` component of `<settings
//! pass="specialize">` is (or where it belongs), and changes only those
//! bytes. Everything else (other settings, passwords, comments, layout,
//! line ends, the encoding and its byte-order mark) stays as it was.
//!
//! What is changed, in the first case that applies:
//!
//! 1. every such `ComputerName` element gets the new name as its text;
//! 2. else a `<ComputerName>` element is inserted into the first such
//!    component;
//! 3. else a `Microsoft-Windows-Shell-Setup` component holding it is
//!    inserted into the first `<settings pass="specialize">`;
//! 4. else a `<settings pass="specialize">` block holding that component is
//!    added to `<unattend>` (before the first audit or oobeSystem pass, in
//!    the order Windows System Image Manager writes the passes).
//!
//! [`minimal_answer_file`] writes an answer file that sets the computer name
//! and nothing else. Both results are checked with [`Unattend::parse`].
//!
//! Answer files may hold passwords: nothing here prints the file, and the
//! errors only give positions.

use roxmltree::{Document, Node, ParsingOptions};

use crate::error::{ResealError, Result};
use crate::unattend::Unattend;

/// The component that carries `ComputerName`.
pub const SHELL_SETUP: &str = "Microsoft-Windows-Shell-Setup";

/// The namespace of answer files.
pub const UNATTEND_NS: &str = "urn:schemas-microsoft-com:unattend";

/// The `wcm` namespace that answer-file components declare.
const WCM_NS: &str = "http://schemas.microsoft.com/WMIConfig/2002/State";

/// Passes that come after specialize in the order Windows System Image
/// Manager writes them.
const LATER_PASSES: [&str; 3] = ["auditSystem", "auditUser", "oobeSystem"];

/// How an answer file's text was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// UTF-8, with a byte-order mark or not.
    Utf8 {
        /// Whether the file starts with `EF BB BF`.
        bom: bool,
    },
    /// UTF-16 little-endian with the `FF FE` byte-order mark.
    Utf16Le,
    /// UTF-16 big-endian with the `FE FF` byte-order mark.
    Utf16Be,
}

fn invalid(what: &str, message: impl Into<String>) -> ResealError {
    ResealError::InvalidInput {
        what: what.to_string(),
        message: message.into(),
    }
}

/// Decodes an answer file and says how it was encoded. UTF-16 needs a
/// byte-order mark, as [`Unattend::parse`] requires.
pub fn decode(what: &str, bytes: &[u8]) -> Result<(String, Encoding)> {
    let utf16 = |body: &[u8], le: bool| -> Result<String> {
        if body.len() % 2 != 0 {
            return Err(invalid(what, "UTF-16 text with an odd number of bytes"));
        }
        let units = body.chunks_exact(2).map(|c| {
            if le {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .collect::<std::result::Result<String, _>>()
            .map_err(|_| invalid(what, "invalid UTF-16 (unpaired surrogate)"))
    };
    if let Some(body) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return Ok((utf16(body, true)?, Encoding::Utf16Le));
    }
    if let Some(body) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return Ok((utf16(body, false)?, Encoding::Utf16Be));
    }
    let (body, bom) = match bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        Some(b) => (b, true),
        None => (bytes, false),
    };
    let text = std::str::from_utf8(body).map_err(|e| {
        invalid(
            what,
            format!(
                "byte {}: invalid UTF-8; expected UTF-8, or UTF-16 with a byte-order mark",
                e.valid_up_to() + usize::from(bom) * 3
            ),
        )
    })?;
    Ok((text.to_string(), Encoding::Utf8 { bom }))
}

/// Encodes text back the way [`decode`] found it.
pub fn encode(text: &str, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Utf8 { bom } => {
            let mut out = Vec::with_capacity(text.len() + 3);
            if bom {
                out.extend_from_slice(&[0xEF, 0xBB, 0xBF]);
            }
            out.extend_from_slice(text.as_bytes());
            out
        }
        Encoding::Utf16Le => [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect(),
        Encoding::Utf16Be => [0xFE, 0xFF]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
            .collect(),
    }
}

/// Escapes text for element content.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// The `processorArchitecture` of an install's components from SYSTEM's
/// `PROCESSOR_ARCHITECTURE` (`AMD64`, `x86`, `ARM64`, ...).
pub fn component_architecture(processor_architecture: &str) -> Option<&'static str> {
    match processor_architecture.trim().to_ascii_lowercase().as_str() {
        "amd64" | "x64" => Some("amd64"),
        "x86" | "i386" => Some("x86"),
        "arm64" => Some("arm64"),
        "arm" => Some("arm"),
        "ia64" => Some("ia64"),
        _ => None,
    }
}

/// An answer file that only sets the specialize computer name (UTF-8, CRLF
/// line ends).
pub fn minimal_answer_file(name: &str, arch: &str) -> Vec<u8> {
    let unit = "    ";
    let mut lines = vec![
        r#"<?xml version="1.0" encoding="utf-8"?>"#.to_string(),
        format!(r#"<unattend xmlns="{UNATTEND_NS}">"#),
    ];
    lines.extend(
        settings_block("", name, arch, unit)
            .into_iter()
            .map(|l| format!("{unit}{l}")),
    );
    lines.push("</unattend>".to_string());
    let mut text = lines.join("\r\n");
    text.push_str("\r\n");
    text.into_bytes()
}

/// The lines of a Shell-Setup component holding `ComputerName`.
fn component_block(prefix: &str, name: &str, arch: &str, unit: &str) -> Vec<String> {
    vec![
        format!(
            r#"<{prefix}component name="{SHELL_SETUP}" processorArchitecture="{arch}" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS" xmlns:wcm="{WCM_NS}">"#
        ),
        format!("{unit}{}", computer_name_element(prefix, name)),
        format!("</{prefix}component>"),
    ]
}

/// The lines of a specialize settings block holding that component.
fn settings_block(prefix: &str, name: &str, arch: &str, unit: &str) -> Vec<String> {
    let mut lines = vec![format!(r#"<{prefix}settings pass="specialize">"#)];
    lines.extend(
        component_block(prefix, name, arch, unit)
            .into_iter()
            .map(|l| format!("{unit}{l}")),
    );
    lines.push(format!("</{prefix}settings>"));
    lines
}

fn computer_name_element(prefix: &str, name: &str) -> String {
    format!(
        "<{prefix}ComputerName>{}</{prefix}ComputerName>",
        escape_text(name)
    )
}

/// One replacement of `range` of the text.
struct Splice {
    at: std::ops::Range<usize>,
    with: String,
}

/// Position facts about the decoded text.
struct Text<'t> {
    s: &'t str,
    nl: &'static str,
}

impl<'t> Text<'t> {
    /// The end (after `>`) of the start tag that begins at `start`.
    fn start_tag_end(&self, start: usize) -> Option<usize> {
        let mut quote = None;
        for (i, c) in self.s.get(start..)?.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '>') => return Some(start + i + 1),
                _ => {}
            }
        }
        None
    }

    /// The element's qualified name as written (`prefix:local`).
    fn qname(&self, node: Node<'_, '_>) -> &'t str {
        let from = node.range().start + 1;
        let rest = &self.s[from..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
            .unwrap_or(rest.len());
        &rest[..end]
    }

    /// The element's prefix with its colon (`""` when it has none).
    fn prefix(&self, node: Node<'_, '_>) -> &'t str {
        let q = self.qname(node);
        q.find(':').map_or("", |i| &q[..=i])
    }

    /// The whitespace before `pos` on its line, when only whitespace
    /// precedes it there.
    fn indent(&self, pos: usize) -> Option<&'t str> {
        let before = &self.s[..pos];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let ind = &before[line_start..];
        ind.chars().all(|c| c == ' ' || c == '\t').then_some(ind)
    }

    fn render(&self, lines: &[String], indent: &str) -> String {
        lines.join(&format!("{}{indent}", self.nl))
    }

    /// Where an element's content lies: `(start tag end, end tag start)`,
    /// or `None` for an empty-element tag (`<x/>`).
    fn content(&self, node: Node<'_, '_>) -> Result<Option<(usize, usize)>> {
        let r = node.range();
        let st_end = self
            .start_tag_end(r.start)
            .filter(|&e| e <= r.end)
            .ok_or_else(|| invalid("answer file", "cannot locate a start tag"))?;
        if self.s[..st_end].ends_with("/>") {
            return Ok(None);
        }
        let et = self.s[st_end..r.end]
            .rfind("</")
            .map(|i| st_end + i)
            .ok_or_else(|| invalid("answer file", "cannot locate an end tag"))?;
        Ok(Some((st_end, et)))
    }

    /// Inserts `lines` as a child element of `parent`: before `before` when
    /// given, else as the last child.
    fn insert_child(
        &self,
        parent: Node<'_, '_>,
        before: Option<Node<'_, '_>>,
        lines: &[String],
        unit: &str,
    ) -> Result<Splice> {
        if let Some(b) = before {
            let at = b.range().start;
            let with = match self.indent(at) {
                Some(ind) => format!("{}{}{ind}", self.render(lines, ind), self.nl),
                None => self.render(lines, ""),
            };
            return Ok(Splice { at: at..at, with });
        }
        if let Some(last) = parent.children().rfind(|c| c.is_element()) {
            let at = last.range().end;
            let with = match self.indent(last.range().start) {
                Some(ind) => format!("{}{ind}{}", self.nl, self.render(lines, ind)),
                None => self.render(lines, ""),
            };
            return Ok(Splice { at: at..at, with });
        }
        let pind = self.indent(parent.range().start).unwrap_or("");
        let cind = format!("{pind}{unit}");
        let body = format!(
            "{nl}{cind}{}{nl}{pind}",
            self.render(lines, &cind),
            nl = self.nl
        );
        match self.content(parent)? {
            None => {
                let st_end = self
                    .start_tag_end(parent.range().start)
                    .ok_or_else(|| invalid("answer file", "cannot locate a start tag"))?;
                Ok(Splice {
                    at: st_end - 2..st_end,
                    with: format!(">{body}</{}>", self.qname(parent)),
                })
            }
            Some((st_end, et)) if self.s[st_end..et].trim().is_empty() => Ok(Splice {
                at: st_end..et,
                with: body,
            }),
            Some((_, et)) => Ok(Splice {
                at: et..et,
                with: self.render(lines, ""),
            }),
        }
    }
}

/// The indentation step of the file: how much deeper the root's first
/// child element is indented than the root, else four spaces.
fn indent_unit(t: &Text<'_>, root: Node<'_, '_>) -> String {
    let root_ind = t.indent(root.range().start).unwrap_or("");
    root.children()
        .find(|c| c.is_element())
        .and_then(|c| t.indent(c.range().start))
        .and_then(|ind| ind.strip_prefix(root_ind))
        .filter(|u| !u.is_empty())
        .unwrap_or("    ")
        .to_string()
}

fn is_settings(node: Node<'_, '_>, pass: &str) -> bool {
    node.is_element()
        && node.tag_name().name() == "settings"
        && node
            .attribute("pass")
            .is_some_and(|p| p.eq_ignore_ascii_case(pass))
}

fn is_shell_setup(node: Node<'_, '_>) -> bool {
    node.is_element()
        && node.tag_name().name() == "component"
        && node
            .attribute("name")
            .is_some_and(|n| n.eq_ignore_ascii_case(SHELL_SETUP))
}

/// Plans the splices that set the computer name (see the module
/// documentation for the cases).
fn plan(t: &Text<'_>, doc: &Document<'_>, name: &str, arch: &str) -> Result<Vec<Splice>> {
    let root = doc.root_element();
    if root.tag_name().name() != "unattend" {
        return Err(invalid("answer file", "the root element is not <unattend>"));
    }
    let unit = indent_unit(t, root);
    let specialize: Vec<Node<'_, '_>> = root
        .children()
        .filter(|s| is_settings(*s, "specialize"))
        .collect();
    let components: Vec<Node<'_, '_>> = specialize
        .iter()
        .flat_map(|s| s.children())
        .filter(|c| is_shell_setup(*c))
        .collect();

    // 1. Replace the text of every ComputerName there is.
    let mut splices = Vec::new();
    for el in components.iter().flat_map(|c| {
        c.children()
            .filter(|e| e.is_element() && e.tag_name().name().eq_ignore_ascii_case("ComputerName"))
    }) {
        let text = escape_text(name);
        splices.push(match t.content(el)? {
            Some((s, e)) => Splice {
                at: s..e,
                with: text,
            },
            None => {
                let st_end = t
                    .start_tag_end(el.range().start)
                    .ok_or_else(|| invalid("answer file", "cannot locate a start tag"))?;
                Splice {
                    at: st_end - 2..st_end,
                    with: format!(">{text}</{}>", t.qname(el)),
                }
            }
        });
    }
    if !splices.is_empty() {
        return Ok(splices);
    }

    // 2. Insert ComputerName into the component.
    if let Some(&c) = components.first() {
        let first = c.children().find(|e| e.is_element());
        let line = vec![computer_name_element(t.prefix(c), name)];
        return Ok(vec![t.insert_child(c, first, &line, &unit)?]);
    }

    // 3. Insert the component into the settings.
    if let Some(&s) = specialize.first() {
        let first = s.children().find(|e| e.is_element());
        let lines = component_block(t.prefix(s), name, arch, &unit);
        return Ok(vec![t.insert_child(s, first, &lines, &unit)?]);
    }

    // 4. Add the settings block.
    let before = root.children().find(|s| {
        s.is_element()
            && s.tag_name().name() == "settings"
            && s.attribute("pass").is_some_and(|p| {
                LATER_PASSES
                    .iter()
                    .any(|later| later.eq_ignore_ascii_case(p))
            })
    });
    let lines = settings_block(t.prefix(root), name, arch, &unit);
    Ok(vec![t.insert_child(root, before, &lines, &unit)?])
}

/// Returns the answer file `bytes` with the specialize `ComputerName` set to
/// `name`, every other byte of the decoded text unchanged and the same
/// encoding. `arch` is the `processorArchitecture` of a component added
/// when the file has none for Shell-Setup in specialize. `what` names the
/// file in errors.
pub fn set_computer_name(what: &str, bytes: &[u8], name: &str, arch: &str) -> Result<Vec<u8>> {
    // Refuse what the rest of reseal would refuse, with its messages.
    Unattend::parse(what, bytes)?;
    let (text, encoding) = decode(what, bytes)?;
    let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let opts = ParsingOptions {
        allow_dtd: false,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(&text, opts)
        .map_err(|e| invalid(what, format!("not well-formed XML ({e})")))?;
    let t = Text { s: &text, nl };
    let mut splices = plan(&t, &doc, name, arch).map_err(|e| match e {
        ResealError::InvalidInput { message, .. } => invalid(what, message),
        e => e,
    })?;
    drop(doc);
    splices.sort_by_key(|s| s.at.start);
    let mut out = String::with_capacity(text.len() + 512);
    let mut pos = 0;
    for s in &splices {
        out.push_str(&text[pos..s.at.start]);
        out.push_str(&s.with);
        pos = s.at.end;
    }
    out.push_str(&text[pos..]);
    let bytes = encode(&out, encoding);
    check(what, &bytes, name)?;
    Ok(bytes)
}

/// Checks that an edited answer file parses and names `name`.
pub fn check(what: &str, bytes: &[u8], name: &str) -> Result<()> {
    let u = Unattend::parse(what, bytes)?;
    if u.computer_name.as_deref() != Some(name) {
        return Err(invalid(
            what,
            format!("setting the specialize ComputerName to {name:?} did not take"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend">
"#;

    fn set(text: &str) -> String {
        let out = set_computer_name("t", text.as_bytes(), "WEB-001", "amd64").expect("set");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn replaces_existing_text() {
        let src = format!(
            "{HEAD}  <settings pass=\"specialize\">\n    <component name=\"Microsoft-Windows-Shell-Setup\">\n      <ComputerName>OLD</ComputerName>\n      <TimeZone>UTC</TimeZone>\n    </component>\n  </settings>\n</unattend>\n"
        );
        assert_eq!(set(&src), src.replace(">OLD<", ">WEB-001<"));
        let empty = src.replace("<ComputerName>OLD</ComputerName>", "<ComputerName/>");
        assert_eq!(set(&empty), src.replace(">OLD<", ">WEB-001<"));
        let blank = src.replace(">OLD<", "><");
        assert_eq!(set(&blank), src.replace(">OLD<", ">WEB-001<"));
    }

    #[test]
    fn inserts_element_component_and_settings() {
        let comp = format!(
            "{HEAD}  <settings pass=\"specialize\">\n    <component name=\"Microsoft-Windows-Shell-Setup\">\n      <TimeZone>UTC</TimeZone>\n    </component>\n  </settings>\n</unattend>\n"
        );
        assert_eq!(
            set(&comp),
            comp.replace(
                "<TimeZone>",
                "<ComputerName>WEB-001</ComputerName>\n      <TimeZone>"
            )
        );
        let settings = format!(
            "{HEAD}  <settings pass=\"specialize\">\n    <component name=\"Other\"/>\n  </settings>\n</unattend>\n"
        );
        let out = set(&settings);
        assert!(out.contains(
            "    <component name=\"Microsoft-Windows-Shell-Setup\" processorArchitecture=\"amd64\""
        ));
        assert!(out.contains("\n      <ComputerName>WEB-001</ComputerName>\n    </component>\n    <component name=\"Other\"/>"));
        let none = format!(
            "{HEAD}  <settings pass=\"oobeSystem\">\n    <component name=\"X\"/>\n  </settings>\n</unattend>\n"
        );
        let out = set(&none);
        assert!(out.starts_with(&format!(
            "{HEAD}  <settings pass=\"specialize\">\n    <component"
        )));
        assert!(out.ends_with("  </settings>\n  <settings pass=\"oobeSystem\">\n    <component name=\"X\"/>\n  </settings>\n</unattend>\n"));
        for bare in [
            format!("{HEAD}</unattend>"),
            "<unattend xmlns=\"urn:schemas-microsoft-com:unattend\"/>".to_string(),
            "<u:unattend xmlns:u=\"urn:schemas-microsoft-com:unattend\"><u:settings pass=\"specialize\"/></u:unattend>".to_string(),
        ] {
            set(&bare);
        }
    }

    #[test]
    fn keeps_utf16_and_escapes() {
        let src = format!("{HEAD}</unattend>\r\n").replace('\n', "\r\n");
        let bytes = encode(&src, Encoding::Utf16Le);
        let out = set_computer_name("t", &bytes, "A&B", "x86").expect("set");
        assert_eq!(&out[..2], &[0xFF, 0xFE]);
        let (text, enc) = decode("t", &out).expect("decode");
        assert_eq!(enc, Encoding::Utf16Le);
        assert!(text.contains("<ComputerName>A&amp;B</ComputerName>"));
        assert!(!text.replace("\r\n", "").contains('\n'));
        check("m", &minimal_answer_file("WEB-9", "arm64"), "WEB-9").expect("minimal");
    }
}
