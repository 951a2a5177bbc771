//! Oracle 1: the hivex library, through `hivexregedit --export`.
//!
//! hivexregedit prints every key as `[\path]` and every value on one line:
//! `"name"=` (with `\` and `"` escaped) or `@=` for the default value, then
//! `dword:xxxxxxxx` for a 4-byte REG_DWORD and `hex(T):aa,bb,…` for anything
//! else, strings included, so the raw bytes come through unchanged. Lines are
//! never wrapped.
//!
//! Quirks handled here:
//! * Perl prints a name that holds only characters up to U+00FF as Latin-1
//!   bytes and any other name as UTF-8. `PERL_UNICODE=SO` makes it write
//!   UTF-8 throughout, which this parser then requires.
//! * `dword:` is turned back into its 4 little-endian bytes.
//! * The type is printed with `%x` and may be wider than 32 bits for huge
//!   types; only the low 32 bits are kept.
//!
//! hivexregedit names each key by following its Parent fields up to the
//! root, while the other oracles name keys by walking down the subkey lists:
//! a wrong Parent offset shows up here as a key at a different path (yarp's
//! InvalidParentHive reads `4900` here and `key_with_many_subkeys\4900` in
//! the others). That makes this oracle a check of the Parent fields too.
//!
//! Limitations: a key or value name holding a line break cannot be parsed
//! (reported as an error). hivex truncates a value whose declared length
//! exceeds its data cell instead of failing.

use super::{Dump, KeyDump, hex_byte, run_capture};
use std::path::Path;
use std::process::Command;

/// Dumps a hive with `hivexregedit --export HIVE '\'`.
pub fn dump_hivex(path: &Path) -> Result<Dump, String> {
    let out = run_capture(
        Command::new("hivexregedit")
            .env("PERL_UNICODE", "SO")
            .arg("--export")
            .arg(path)
            .arg("\\"),
    )?;
    let text =
        String::from_utf8(out).map_err(|e| format!("hivexregedit output is not UTF-8: {e}"))?;
    parse_reg_export(&text)
}

/// Parses the `.reg` text that hivexregedit writes.
pub fn parse_reg_export(text: &str) -> Result<Dump, String> {
    let mut dump = Dump::default();
    let mut current: Option<String> = None;
    for (no, line) in text.split('\n').enumerate() {
        let no = no + 1;
        let err = |msg: &str| format!("hivexregedit output line {no}: {msg}: {line:?}");
        if no == 1 {
            if line != "Windows Registry Editor Version 5.00" {
                return Err(err("unexpected header"));
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if let Some(inner) = line.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| err("unterminated key line"))?;
            let path = inner
                .strip_prefix('\\')
                .ok_or_else(|| err("key path without leading backslash"))?;
            dump.add_key(path)?;
            current = Some(path.to_string());
            continue;
        }
        let key = current
            .as_ref()
            .ok_or_else(|| err("value before any key"))?;
        let (name, rest) = split_value_name(line).map_err(|m| err(&m))?;
        let (ty, data) = parse_data(rest).map_err(|m| err(&m))?;
        let kd: &mut KeyDump = dump.keys.get_mut(key).expect("key added above");
        if kd.values.insert(name.clone(), (ty, data)).is_some() {
            return Err(err(&format!("duplicate value name {name:?}")));
        }
    }
    if dump.keys.is_empty() {
        return Err("hivexregedit printed no key".into());
    }
    Ok(dump)
}

/// Splits `"name"=rest` or `@=rest`, undoing the `\\` and `\"` escapes.
fn split_value_name(line: &str) -> Result<(String, &str), String> {
    if let Some(rest) = line.strip_prefix("@=") {
        return Ok((String::new(), rest));
    }
    let body = line
        .strip_prefix('"')
        .ok_or_else(|| "expected a value line".to_string())?;
    let mut name = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('\\' | '"'))) => name.push(e),
                _ => return Err("bad escape in value name".into()),
            },
            '"' => {
                let rest = body[i + 1..]
                    .strip_prefix('=')
                    .ok_or_else(|| "expected = after value name".to_string())?;
                return Ok((name, rest));
            }
            c => name.push(c),
        }
    }
    Err("unterminated value name".into())
}

fn parse_data(rest: &str) -> Result<(u32, Vec<u8>), String> {
    if let Some(hex) = rest.strip_prefix("dword:") {
        if hex.len() != 8 {
            return Err("bad dword".into());
        }
        let v = u32::from_str_radix(hex, 16).map_err(|_| "bad dword".to_string())?;
        return Ok((4, v.to_le_bytes().to_vec()));
    }
    let body = rest
        .strip_prefix("hex(")
        .ok_or_else(|| "expected dword: or hex(".to_string())?;
    let (ty, bytes) = body
        .split_once("):")
        .ok_or_else(|| "expected ): after type".to_string())?;
    let ty = u64::from_str_radix(ty, 16).map_err(|_| format!("bad type {ty:?}"))? as u32;
    let data = if bytes.is_empty() {
        Vec::new()
    } else {
        bytes.split(',').map(hex_byte).collect::<Result<_, _>>()?
    };
    Ok((ty, data))
}
