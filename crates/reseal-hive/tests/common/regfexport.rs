//! Oracle 2: libregf, through `regfexport` (libregf-utils).
//!
//! Output shape, per key: `Key path: ROOTNAME\a\b`, `Key: b`, an optional
//! `Class name: …`, then per value `Value: N name` (or `Value: N (default)`),
//! `Type: … (REG_X)` (or `Type: unknown: 0x%08x`), `Data size: N` and the
//! data, then a blank line. The data is printed:
//!
//! * REG_SZ / REG_EXPAND_SZ: as text (`Data: text`), decoded from UTF-16LE up
//!   to the first NUL. When the stored size is not exactly that text, with or
//!   without one UTF-16 NUL after it, regfexport adds a "Mismatch" line and a
//!   hex dump of the raw bytes.
//! * REG_DWORD / REG_DWORD_BIG_ENDIAN of 4 bytes and REG_QWORD of 8 bytes: as
//!   a decimal number (big-endian types are read big-endian). Any other size
//!   gets a "Mismatch" line and a hex dump.
//! * everything else: a hex dump (`00000000: 41 42 …  AB`), complete, never
//!   elided.
//!
//! Reconstruction of the bytes: a hex dump is used as is; a number is
//! re-encoded in the type's byte order (exact); a text is re-encoded as
//! UTF-16LE and given a terminating NUL when `Data size` says so.
//!
//! Known limitations (all seen on the corpus), and how comparisons cope:
//! * libregf (20201007) does not report the stored bytes of REG_SZ and
//!   REG_EXPAND_SZ values: both `Data size` and the data stop after the first
//!   UTF-16 NUL (`"Mouse\0\0"` comes out as `"Mouse\0"`, binary junk after
//!   a terminator is dropped), and a string stored without a terminator is
//!   reported with one. Only the text before the first NUL can be compared.
//! * libregf returns the wrong bytes for inline data shorter than 4 bytes: it
//!   takes the last N bytes of the 4-byte field where Windows, hivex, regipy
//!   and dissect.regf take the first N (corpus SAM,
//!   `SAM\ServerDomainUpdates`).
//!
//!   Both are handled by comparing through [`Dump::regfexport_view`] on both
//!   sides: strings cut before the first NUL, values shorter than 4 bytes
//!   blanked (type still compared; length too, for non-strings). The other
//!   three oracles compare the raw bytes in full.
//! * compressed (8-bit) key and value names are decoded with the code page
//!   given by `-c` (default Windows-1252), while Windows reads them as
//!   Latin-1: bytes 0x80..0x9F come out as other characters (0x80 as `€`,
//!   0x9F as `Ÿ`). There is no Latin-1 choice, so names with U+0080..U+009F
//!   cannot be compared with this oracle.
//! * names are C strings: a name holding U+0000 is cut there.
//! * a value literally named `(default)` is printed like the default value.
//! * a name holding a line break cannot be parsed (an error); a string
//!   holding line breaks is joined back.
//! * a value libregf finds corrupted is printed with an `Is corrupted` line,
//!   which is reported as an error.

use super::{Dump, hex_byte, run_capture, utf16le};
use std::path::Path;
use std::process::Command;

const MISMATCH: &str = "Mismatch in data size and that required for data type.";

/// Dumps a hive with `regfexport HIVE`.
pub fn dump_regfexport(path: &Path) -> Result<Dump, String> {
    let out = run_capture(Command::new("regfexport").arg(path))?;
    let text =
        String::from_utf8(out).map_err(|e| format!("regfexport output is not UTF-8: {e}"))?;
    parse_regfexport(&text)
}

struct Lines<'a> {
    lines: Vec<&'a str>,
    pos: usize,
}

impl<'a> Lines<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.lines.get(self.pos).copied()
    }
    fn next(&mut self) -> Result<&'a str, String> {
        let l = self.peek().ok_or("regfexport output ends early")?;
        self.pos += 1;
        Ok(l)
    }
    fn err(&self, msg: &str) -> String {
        let at = self.pos.saturating_sub(1);
        format!(
            "regfexport output line {}: {msg}: {:?}",
            at + 1,
            self.lines.get(at).copied().unwrap_or("")
        )
    }
    fn expect_prefix(&mut self, prefix: &str) -> Result<&'a str, String> {
        let l = self.next()?;
        l.strip_prefix(prefix)
            .ok_or_else(|| self.err(&format!("expected {prefix:?}")))
    }
}

/// Parses regfexport's output.
pub fn parse_regfexport(text: &str) -> Result<Dump, String> {
    let mut ls = Lines {
        lines: text.split('\n').collect(),
        pos: 0,
    };
    let first = ls.next()?;
    if !first.starts_with("regfexport ") {
        return Err(ls.err("unexpected header"));
    }
    let mut dump = Dump::default();
    let mut root: Option<String> = None;
    while let Some(line) = ls.peek() {
        if line.is_empty() {
            ls.pos += 1;
            continue;
        }
        let full = ls.expect_prefix("Key path: ")?;
        let path = match &root {
            None => {
                root = Some(full.to_string());
                String::new()
            }
            Some(r) if r.is_empty() => full.to_string(),
            Some(r) => full
                .strip_prefix(r.as_str())
                .and_then(|p| p.strip_prefix('\\'))
                .ok_or_else(|| ls.err("key path outside the root"))?
                .to_string(),
        };
        ls.expect_prefix("Key: ")?;
        if ls.peek().is_some_and(|l| l.starts_with("Class name: ")) {
            ls.pos += 1;
        }
        dump.add_key(&path)?;
        while ls.peek().is_some_and(|l| l.starts_with("Value: ")) {
            let (name, ty, data) = parse_value(&mut ls)?;
            let kd = dump.keys.get_mut(&path).expect("key added above");
            if kd.values.insert(name.clone(), (ty, data)).is_some() {
                return Err(ls.err(&format!("duplicate value name {name:?}")));
            }
        }
    }
    if dump.keys.is_empty() {
        return Err("regfexport printed no key".into());
    }
    Ok(dump)
}

fn parse_type(ls: &Lines, t: &str) -> Result<u32, String> {
    if let Some(hex) = t.strip_prefix("unknown: 0x") {
        return u32::from_str_radix(hex, 16).map_err(|_| ls.err("bad unknown type"));
    }
    let tag = t
        .rsplit_once('(')
        .and_then(|(_, r)| r.strip_suffix(')'))
        .ok_or_else(|| ls.err("bad type line"))?;
    Ok(match tag {
        "REG_NONE" => 0,
        "REG_SZ" => 1,
        "REG_EXPAND_SZ" => 2,
        "REG_BINARY" => 3,
        "REG_DWORD_LITTLE_ENDIAN" => 4,
        "REG_DWORD_BIG_ENDIAN" => 5,
        "REG_LINK" => 6,
        "REG_MULTI_SZ" => 7,
        "REG_RESOURCE_LIST" => 8,
        "REG_FULL_RESOURCE_DESCRIPTOR" => 9,
        "REG_RESOURCE_REQUIREMENTS_LIST" => 10,
        "REG_QWORD_LITTLE_ENDIAN" => 11,
        _ => return Err(ls.err("unknown type tag")),
    })
}

fn parse_value(ls: &mut Lines) -> Result<(String, u32, Vec<u8>), String> {
    let rest = ls.expect_prefix("Value: ")?;
    let (_, name) = rest
        .split_once(' ')
        .ok_or_else(|| ls.err("bad value line"))?;
    let name = if name == "(default)" { "" } else { name }.to_string();
    let t = ls.expect_prefix("Type: ")?;
    let ty = parse_type(ls, t)?;
    let size: usize = ls
        .expect_prefix("Data size: ")?
        .parse()
        .map_err(|_| ls.err("bad data size"))?;

    // What regfexport printed before any hex dump: a text or a number.
    let mut rendered: Option<Vec<u8>> = None;
    match ty {
        1 | 2 => {
            let first = ls.next()?;
            if first == "Data:" {
                // No text (empty string); a hex dump may still follow.
            } else if let Some(t) = first.strip_prefix("Data: ") {
                let mut text = t.to_string();
                loop {
                    let n = text.encode_utf16().count() * 2;
                    let next = ls
                        .peek()
                        .ok_or_else(|| ls.err("string runs past the end"))?;
                    if next == MISMATCH || (next.is_empty() && (n == size || n + 2 == size)) {
                        break;
                    }
                    if next.starts_with("Key path: ") || next.starts_with("Value: ") {
                        return Err(ls.err("string text does not match its size"));
                    }
                    text.push('\n');
                    text.push_str(next);
                    ls.pos += 1;
                }
                rendered = Some(utf16le(&text));
            } else {
                return Err(ls.err("expected Data: line"));
            }
        }
        4 | 5 if size == 4 => {
            let v: u32 = ls
                .expect_prefix("Data: ")?
                .parse()
                .map_err(|_| ls.err("bad 32-bit number"))?;
            rendered = Some(
                if ty == 4 {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                }
                .to_vec(),
            );
        }
        11 if size == 8 => {
            let v: u64 = ls
                .expect_prefix("Data: ")?
                .parse()
                .map_err(|_| ls.err("bad 64-bit number"))?;
            rendered = Some(v.to_le_bytes().to_vec());
        }
        _ => {}
    }

    if ls.peek() == Some(MISMATCH) {
        ls.pos += 1;
    }
    if ls.peek() == Some("Data:") {
        ls.pos += 1;
        let data = parse_hexdump(ls, size)?;
        return Ok((name, ty, data));
    }
    // No hex dump: the data is the rendering (or nothing at all).
    if !ls.next()?.is_empty() {
        return Err(ls.err("expected a blank line after the data"));
    }
    let data = match rendered {
        None => Vec::new(),
        Some(mut bytes) => {
            if (1..=2).contains(&ty) && bytes.len() + 2 == size {
                bytes.extend_from_slice(&[0, 0]);
            }
            bytes
        }
    };
    if data.len() != size {
        return Err(ls.err(&format!(
            "rebuilt {} bytes for a value of {size} bytes",
            data.len()
        )));
    }
    Ok((name, ty, data))
}

/// Reads a hex dump of `size` bytes and the blank line after it.
fn parse_hexdump(ls: &mut Lines, size: usize) -> Result<Vec<u8>, String> {
    let mut data = Vec::with_capacity(size);
    while data.len() < size {
        let line = ls.next()?;
        let (off, rest) = line
            .split_once(": ")
            .ok_or_else(|| ls.err("bad hex dump line"))?;
        let off = usize::from_str_radix(off, 16).map_err(|_| ls.err("bad hex dump offset"))?;
        if off != data.len() {
            return Err(ls.err("hex dump offset out of step"));
        }
        let want = (size - data.len()).min(16);
        for tok in rest.split_whitespace().take(want) {
            data.push(hex_byte(tok).map_err(|e| ls.err(&e))?);
        }
        if data.len() != off + want {
            return Err(ls.err("short hex dump line"));
        }
    }
    if !ls.next()?.is_empty() {
        return Err(ls.err("expected a blank line after the hex dump"));
    }
    Ok(data)
}
