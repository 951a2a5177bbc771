//! Reading `.reg` files: decoding, header, sections and values.

use super::{REG_BINARY, REG_DWORD, REG_SZ, RegDocument, RegEncoding, RegOp, RegVersion};
use crate::{HiveError, Result};

/// Parses the bytes of a `.reg` file into its header, encoding and ops.
///
/// `file` only labels error messages. The encoding is detected from a byte
/// order mark (UTF-16LE `FF FE`, UTF-8 `EF BB BF`); without one, UTF-16LE
/// is recognized by its zero high bytes, then UTF-8 is tried and, failing
/// that, Windows-1252. See the [module documentation](super) for the
/// accepted syntax.
///
/// # Errors
///
/// [`HiveError::RegSyntax`] with the 1-based line number and what was
/// expected and found, for a missing header, an unsupported encoding or any
/// line that does not follow the format. Nothing in the input can make this
/// function panic.
pub fn parse_reg(file: &str, bytes: &[u8]) -> Result<RegDocument> {
    let (text, encoding) = decode(file, bytes)?;
    let lines = split_lines(&text);
    let mut parser = Parser {
        file,
        lines: &lines,
        next: 0,
        ops: Vec::new(),
    };
    let version = parser.header()?;
    parser.body()?;
    Ok(RegDocument {
        version,
        encoding,
        ops: parser.ops,
    })
}

fn syntax(file: &str, line: usize, message: impl Into<String>) -> HiveError {
    HiveError::RegSyntax {
        file: file.to_string(),
        line,
        message: message.into(),
    }
}

/// Decodes the whole file to text, reporting which encoding it used.
fn decode(file: &str, bytes: &[u8]) -> Result<(String, RegEncoding)> {
    if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return Ok((decode_utf16le(file, rest)?, RegEncoding::Utf16Le));
    }
    if bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(syntax(
            file,
            1,
            "expected UTF-16LE, UTF-8 or ANSI text, found a UTF-16BE byte order mark (FE FF), which regedit does not read",
        ));
    }
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return match std::str::from_utf8(rest) {
            Ok(s) => Ok((s.to_string(), RegEncoding::Utf8)),
            Err(e) => {
                let good = rest.get(..e.valid_up_to()).unwrap_or_default();
                let line = 1 + good.iter().filter(|&&b| b == b'\n').count();
                Err(syntax(
                    file,
                    line,
                    format!(
                        "expected UTF-8 text after the UTF-8 byte order mark, found an invalid byte sequence at byte {}",
                        3 + e.valid_up_to()
                    ),
                ))
            }
        };
    }
    // UTF-16LE without byte order mark: the header starts with an ASCII
    // letter whose high byte is zero.
    if let [first, 0, ..] = bytes {
        if *first != 0 {
            return Ok((decode_utf16le(file, bytes)?, RegEncoding::Utf16Le));
        }
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok((s.to_string(), RegEncoding::Utf8)),
        Err(_) => Ok((
            bytes.iter().map(|&b| cp1252(b)).collect(),
            RegEncoding::Utf8,
        )),
    }
}

fn decode_utf16le(file: &str, bytes: &[u8]) -> Result<String> {
    let units = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    let mut out = String::with_capacity(bytes.len() / 2);
    let mut line = 1;
    for c in char::decode_utf16(units) {
        match c {
            Ok(c) => {
                if c == '\n' {
                    line += 1;
                }
                out.push(c);
            }
            Err(e) => {
                return Err(syntax(
                    file,
                    line,
                    format!(
                        "expected valid UTF-16LE text, found an unpaired surrogate {:#06x}",
                        e.unpaired_surrogate()
                    ),
                ));
            }
        }
    }
    if bytes.len() % 2 != 0 {
        return Err(syntax(
            file,
            line,
            "expected UTF-16LE text (an even number of bytes), found an odd trailing byte",
        ));
    }
    Ok(out)
}

/// Windows-1252 to Unicode; the five unassigned bytes map to the C1
/// control of the same number, as Windows does.
fn cp1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2C6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8D}', '\u{17D}',
        '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2DC}', '\u{2122}', '\u{161}', '\u{203A}', '\u{153}', '\u{9D}', '\u{17E}',
        '\u{178}',
    ];
    match b {
        0x80..=0x9F => HIGH
            .get(usize::from(b - 0x80))
            .copied()
            .unwrap_or('\u{FFFD}'),
        _ => char::from(b),
    }
}

/// Splits on CRLF, LF or a lone CR, as regedit does.
fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '\r' || c == '\n' {
            lines.push(text.get(start..i).unwrap_or_default());
            if c == '\r' && matches!(chars.peek(), Some((_, '\n'))) {
                chars.next();
                start = i + 2;
            } else {
                start = i + 1;
            }
        }
    }
    if start < text.len() {
        lines.push(text.get(start..).unwrap_or_default());
    }
    lines
}

fn trim_ws(s: &str) -> &str {
    s.trim_start_matches([' ', '\t'])
}

/// True when only blanks and possibly a `;` comment remain.
fn at_end(s: &str) -> bool {
    let s = trim_ws(s);
    s.is_empty() || s.starts_with(';')
}

/// Describes the text at `s` for an error message.
fn found(s: &str) -> String {
    let s = s.trim_end();
    if s.is_empty() {
        return "end of line".to_string();
    }
    let mut shown: String = s.chars().take(40).collect();
    if shown.len() < s.len() {
        shown.push_str("...");
    }
    format!("{shown:?}")
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|h| h.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// Reads a quoted name or string whose opening quote is already consumed;
/// returns the unescaped text and what follows the closing quote.
fn unquote(s: &str) -> std::result::Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, s.get(i + 1..).unwrap_or_default())),
            '\\' => match chars.next() {
                Some((_, e @ ('\\' | '"'))) => out.push(e),
                Some((_, e)) => {
                    return Err(format!(
                        "expected `\\\\` or `\\\"` in quoted text, found `\\{e}` (write a backslash as `\\\\`)"
                    ));
                }
                None => {
                    return Err(
                        "expected a character after `\\` in quoted text, found end of line".into(),
                    );
                }
            },
            _ => out.push(c),
        }
    }
    Err("expected a closing `\"`, found end of line".into())
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

struct Parser<'a> {
    file: &'a str,
    lines: &'a [&'a str],
    /// Index of the next line to read.
    next: usize,
    ops: Vec<RegOp>,
}

impl<'a> Parser<'a> {
    fn err(&self, line: usize, message: impl Into<String>) -> HiveError {
        syntax(self.file, line, message)
    }

    fn header(&mut self) -> Result<RegVersion> {
        while let Some(line) = self.lines.get(self.next) {
            self.next += 1;
            let t = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}');
            if t.is_empty() {
                continue;
            }
            return match t {
                "Windows Registry Editor Version 5.00" => Ok(RegVersion::V5),
                "REGEDIT4" => Ok(RegVersion::V4),
                _ => Err(self.err(
                    self.next,
                    format!(
                        "expected the header \"Windows Registry Editor Version 5.00\" or \"REGEDIT4\", found {}",
                        found(t)
                    ),
                )),
            };
        }
        Err(self.err(
            self.next.max(1),
            "expected the header \"Windows Registry Editor Version 5.00\" or \"REGEDIT4\", found end of file",
        ))
    }

    fn body(&mut self) -> Result<()> {
        let mut current: Option<String> = None;
        while let Some(&line) = self.lines.get(self.next) {
            self.next += 1;
            let no = self.next;
            let t = line.trim_start();
            if t.is_empty() || t.starts_with(';') {
                continue;
            }
            if let Some(r) = t.strip_prefix('[') {
                let close = r.rfind(']').ok_or_else(|| {
                    self.err(
                        no,
                        format!("expected `]` closing the key name, found {}", found(r)),
                    )
                })?;
                let inner = r.get(..close).unwrap_or_default();
                let after = r.get(close + 1..).unwrap_or_default();
                if !at_end(after) {
                    return Err(self.err(
                        no,
                        format!("expected end of line after `]`, found {}", found(after)),
                    ));
                }
                if let Some(path) = inner.strip_prefix('-') {
                    if path.is_empty() {
                        return Err(self.err(no, "expected a key name after `[-`, found `]`"));
                    }
                    self.ops.push(RegOp::DeleteKey {
                        path: path.to_string(),
                    });
                    current = None;
                } else {
                    if inner.is_empty() {
                        return Err(
                            self.err(no, "expected a key name between `[` and `]`, found `[]`")
                        );
                    }
                    self.ops.push(RegOp::CreateKey {
                        path: inner.to_string(),
                    });
                    current = Some(inner.to_string());
                }
                continue;
            }
            let (name, rest) = if let Some(r) = t.strip_prefix('@') {
                (None, r)
            } else if let Some(r) = t.strip_prefix('"') {
                let (n, r) = unquote(r).map_err(|m| self.err(no, format!("value name: {m}")))?;
                (Some(n), r)
            } else {
                return Err(self.err(
                    no,
                    format!(
                        "expected `[key]`, `[-key]`, `\"name\"=`, `@=`, a `;` comment or a blank line, found {}",
                        found(t)
                    ),
                ));
            };
            let Some(path) = current.clone() else {
                return Err(self.err(
                    no,
                    "expected a `[key]` section before this value line, found a value outside any section",
                ));
            };
            let rest = trim_ws(rest);
            let Some(data) = rest.strip_prefix('=') else {
                return Err(self.err(
                    no,
                    format!("expected `=` after the value name, found {}", found(rest)),
                ));
            };
            let data = trim_ws(data);
            if let Some(r) = data.strip_prefix('-') {
                if !at_end(r) {
                    return Err(self.err(
                        no,
                        format!("expected end of line after `=-`, found {}", found(r)),
                    ));
                }
                self.ops.push(RegOp::DeleteValue { path, name });
                continue;
            }
            let (value_type, bytes) = self.value_data(no, data)?;
            self.ops.push(RegOp::SetValue {
                path,
                name,
                value_type,
                data: bytes,
            });
        }
        Ok(())
    }

    /// Parses the data after `=`; may consume continuation lines.
    fn value_data(&mut self, no: usize, data: &'a str) -> Result<(u32, Vec<u8>)> {
        if let Some(r) = data.strip_prefix('"') {
            let (s, after) = unquote(r).map_err(|m| self.err(no, format!("string data: {m}")))?;
            if !at_end(after) {
                return Err(self.err(
                    no,
                    format!(
                        "expected end of line after the closing `\"`, found {}",
                        found(after)
                    ),
                ));
            }
            return Ok((REG_SZ, utf16z(&s)));
        }
        if starts_with_ci(data, "dword:") {
            let r = trim_ws(data.get(6..).unwrap_or_default());
            let n = r.bytes().take_while(u8::is_ascii_hexdigit).count();
            let digits = r.get(..n).unwrap_or_default();
            let after = r.get(n..).unwrap_or_default();
            if n == 0 || n > 8 || !at_end(after) {
                return Err(self.err(
                    no,
                    format!(
                        "expected 1 to 8 hex digits after `dword:`, found {}",
                        found(r)
                    ),
                ));
            }
            let v = u32::from_str_radix(digits, 16)
                .map_err(|e| self.err(no, format!("dword:{digits}: {e}")))?;
            return Ok((REG_DWORD, v.to_le_bytes().to_vec()));
        }
        if starts_with_ci(data, "hex:") {
            let bytes = self.hex_list(no, data.get(4..).unwrap_or_default())?;
            return Ok((REG_BINARY, bytes));
        }
        if starts_with_ci(data, "hex(") {
            let r = data.get(4..).unwrap_or_default();
            let n = r.bytes().take_while(u8::is_ascii_hexdigit).count();
            let digits = r.get(..n).unwrap_or_default();
            let after = r.get(n..).unwrap_or_default();
            let Some(list) = after.strip_prefix("):").filter(|_| n > 0) else {
                return Err(self.err(
                    no,
                    format!(
                        "expected a hex type number and `):` after `hex(`, found {}",
                        found(r)
                    ),
                ));
            };
            let value_type = u32::from_str_radix(digits, 16).map_err(|_| {
                self.err(
                    no,
                    format!(
                        "expected a value type of at most ffffffff in `hex(...)`, found {digits:?}"
                    ),
                )
            })?;
            let bytes = self.hex_list(no, list)?;
            return Ok((value_type, bytes));
        }
        Err(self.err(
            no,
            format!(
                "expected value data (`\"string\"`, `dword:`, `hex:`, `hex(N):` or `-`), found {}",
                found(data)
            ),
        ))
    }

    /// Parses comma-separated hex bytes, following `\` continuations onto
    /// later lines (blank and comment lines in between are skipped, as
    /// regedit does).
    fn hex_list(&mut self, first_no: usize, first: &'a str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut seg = first;
        let mut no = first_no;
        loop {
            let mut s = trim_ws(seg);
            let mut cont = false;
            loop {
                if s.is_empty() || s.starts_with(';') {
                    break;
                }
                if let Some(r) = s.strip_prefix('\\') {
                    if !at_end(r) {
                        return Err(self.err(
                            no,
                            format!("expected end of line after `\\`, found {}", found(r)),
                        ));
                    }
                    cont = true;
                    break;
                }
                let n = s.bytes().take_while(u8::is_ascii_hexdigit).count();
                let digits = s.get(..n).unwrap_or_default();
                if n == 0 || n > 2 {
                    return Err(self.err(
                        no,
                        format!("expected a hex byte (two hex digits), found {}", found(s)),
                    ));
                }
                let b = u8::from_str_radix(digits, 16)
                    .map_err(|e| self.err(no, format!("hex byte {digits:?}: {e}")))?;
                out.push(b);
                s = trim_ws(s.get(n..).unwrap_or_default());
                if let Some(r) = s.strip_prefix(',') {
                    s = trim_ws(r);
                } else if !(s.is_empty() || s.starts_with(';') || s.starts_with('\\')) {
                    return Err(self.err(
                        no,
                        format!("expected `,` between hex bytes, found {}", found(s)),
                    ));
                }
            }
            if !cont {
                return Ok(out);
            }
            // Find the continuation line; a line that cannot continue hex
            // data ends the value and is read again as a normal line.
            loop {
                let Some(&line) = self.lines.get(self.next) else {
                    return Ok(out);
                };
                let t = line.trim_start();
                if t.is_empty() || t.starts_with(';') {
                    self.next += 1;
                    continue;
                }
                if !t.starts_with(|c: char| c.is_ascii_hexdigit()) {
                    return Ok(out);
                }
                self.next += 1;
                no = self.next;
                seg = t;
                break;
            }
        }
    }
}
