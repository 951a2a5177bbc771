//! Writing `.reg` files in the layout regedit exports.

use std::fmt::Write as _;

use super::{REG_BINARY, REG_DWORD, REG_SZ, RegEncoding, RegVersion};

const NL: &str = "\r\n";

/// regedit breaks a hex line after the comma that brings the line to this
/// many characters (counted in UTF-16 units, name included), appends `\`
/// and indents the continuation with two spaces: continuation lines hold
/// 25 bytes and no line exceeds 80 characters unless the name is longer.
const HEX_WRAP: usize = 77;

/// Builds `.reg` text in the layout of regedit's export: header, blank
/// line, then each section as `[path]` followed by its values and a blank
/// line; CRLF line ends.
///
/// Representations are chosen as regedit chooses them: REG_SZ as `"..."`
/// when the data is an even-length valid UTF-16LE string with exactly one
/// terminating NUL (and, for [`RegVersion::V4`], only Latin-1 characters;
/// strings containing CR or LF are also written as hex), REG_DWORD of
/// exactly 4 bytes as `dword:`, REG_BINARY as `hex:` and everything else as
/// `hex(N):`, wrapped like regedit. Parsing the output with
/// [`parse_reg`](super::parse_reg) gives back exactly the same ops.
///
/// ```
/// use reseal_hive::regfile::{RegEncoding, RegVersion, RegWriter};
/// let mut w = RegWriter::new(RegVersion::V5);
/// w.key(r"HKEY_LOCAL_MACHINE\SOFTWARE\Example");
/// w.value(Some("Count"), 4, &7u32.to_le_bytes());
/// w.delete_value(None);
/// assert_eq!(
///     w.finish_string(),
///     "Windows Registry Editor Version 5.00\r\n\r\n\
///      [HKEY_LOCAL_MACHINE\\SOFTWARE\\Example]\r\n\
///      \"Count\"=dword:00000007\r\n\
///      @=-\r\n\r\n"
/// );
/// ```
#[derive(Debug, Clone)]
pub struct RegWriter {
    version: RegVersion,
    out: String,
    in_section: bool,
}

impl RegWriter {
    /// Starts a file with the header of `version` and a blank line.
    pub fn new(version: RegVersion) -> Self {
        let mut out = String::with_capacity(4096);
        out.push_str(version.header());
        out.push_str(NL);
        out.push_str(NL);
        RegWriter {
            version,
            out,
            in_section: false,
        }
    }

    fn section(&mut self, line: &str) {
        if self.in_section {
            self.out.push_str(NL);
        }
        self.out.push_str(line);
        self.out.push_str(NL);
        self.in_section = true;
    }

    /// Starts a `[path]` section (a blank line separates sections). Values
    /// written next belong to this key.
    pub fn key(&mut self, path: &str) {
        self.section(&format!("[{path}]"));
    }

    /// Writes a `[-path]` section, deleting the key and its subkeys. Call
    /// [`key`](Self::key) before writing further values.
    pub fn delete_key(&mut self, path: &str) {
        self.section(&format!("[-{path}]"));
    }

    /// Writes `"name"=data` (`@=` for `None`) in the current section.
    pub fn value(&mut self, name: Option<&str>, value_type: u32, data: &[u8]) {
        let head = name_part(name);
        self.out.push_str(&head);
        if value_type == REG_SZ {
            if let Some(s) = printable_string(data, self.version) {
                self.out.push('"');
                self.out.push_str(&escape(&s));
                self.out.push('"');
                self.out.push_str(NL);
                return;
            }
        }
        if value_type == REG_DWORD {
            if let Ok(b) = <[u8; 4]>::try_from(data) {
                let _ = write!(self.out, "dword:{:08x}{NL}", u32::from_le_bytes(b));
                return;
            }
        }
        let prefix = if value_type == REG_BINARY {
            "hex:".to_string()
        } else {
            format!("hex({value_type:x}):")
        };
        self.out.push_str(&prefix);
        let col = head.encode_utf16().count() + prefix.len();
        push_hex(&mut self.out, col, data);
        self.out.push_str(NL);
    }

    /// Writes `"name"=-` (`@=-` for `None`), deleting a value of the current
    /// section.
    pub fn delete_value(&mut self, name: Option<&str>) {
        self.out.push_str(&name_part(name));
        self.out.push('-');
        self.out.push_str(NL);
    }

    /// Ends the file (a blank line after the last section) and returns its
    /// text, CRLF line ends, exactly what [`finish`](Self::finish) encodes.
    pub fn finish_string(mut self) -> String {
        if self.in_section {
            self.out.push_str(NL);
        }
        self.out
    }

    /// Ends the file and encodes it: UTF-16LE with the `FF FE` byte order
    /// mark (what regedit writes for version 5), or UTF-8 without byte
    /// order mark.
    pub fn finish(self, encoding: RegEncoding) -> Vec<u8> {
        let text = self.finish_string();
        match encoding {
            RegEncoding::Utf8 => text.into_bytes(),
            RegEncoding::Utf16Le => {
                let mut out = Vec::with_capacity(2 + text.len() * 2);
                out.extend_from_slice(&[0xFF, 0xFE]);
                out.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
                out
            }
        }
    }
}

fn name_part(name: Option<&str>) -> String {
    match name {
        None => "@=".to_string(),
        Some(n) => format!("\"{}\"=", escape(n)),
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The text of REG_SZ data when it can be written in quotes and read back
/// to the same bytes.
fn printable_string(data: &[u8], version: RegVersion) -> Option<String> {
    if data.len() < 2 || data.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let (&last, body) = units.split_last()?;
    if last != 0 || body.contains(&0) {
        return None;
    }
    let s = String::from_utf16(body).ok()?;
    if s.contains(['\r', '\n']) {
        return None;
    }
    if version == RegVersion::V4 && s.chars().any(|c| u32::from(c) > 0xFF) {
        return None;
    }
    Some(s)
}

/// Appends `xx,xx,...` wrapping like regedit; `col` is the length of the
/// line so far.
fn push_hex(out: &mut String, mut col: usize, data: &[u8]) {
    let count = data.len();
    for (i, b) in data.iter().enumerate() {
        let _ = write!(out, "{b:02x}");
        if i + 1 == count {
            break;
        }
        out.push(',');
        col += 3;
        if col >= HEX_WRAP {
            out.push('\\');
            out.push_str(NL);
            out.push_str("  ");
            col = 2;
        }
    }
}
