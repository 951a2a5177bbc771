//! Key and value names: storage encoding, Windows' case-insensitive order,
//! lh hashes and lf hints.

use std::cmp::Ordering;

/// Upper-cases one UTF-16 code unit the way the registry does.
pub fn upcase(u: u16) -> u16 {
    crate::upcase::upcase(u)
}

/// Compares two names as Windows orders sibling keys: code unit by code unit
/// after upper-casing, shorter prefix first.
pub fn cmp_names(a: &[u16], b: &[u16]) -> Ordering {
    let n = a.len().min(b.len());
    for i in 0..n {
        let (x, y) = (upcase(a[i]), upcase(b[i]));
        if x != y {
            return x.cmp(&y);
        }
    }
    a.len().cmp(&b.len())
}

/// True when two names are equal under the registry's case folding.
pub fn names_equal(a: &[u16], b: &[u16]) -> bool {
    a.len() == b.len() && cmp_names(a, b) == Ordering::Equal
}

/// The hash stored in `lh` leaves.
pub fn lh_hash(name: &[u16]) -> u32 {
    name.iter()
        .fold(0u32, |h, &u| h.wrapping_mul(37).wrapping_add(u32::from(upcase(u))))
}

/// The 4-byte hint stored in `lf` leaves: the first four code units in their
/// original case, zero-padded; all zero when one of them does not fit a byte.
pub fn lf_hint(name: &[u16]) -> [u8; 4] {
    let mut h = [0u8; 4];
    for (i, &u) in name.iter().take(4).enumerate() {
        if u > 0xFF {
            return [0; 4];
        }
        h[i] = u as u8;
    }
    h
}

/// Encodes a name for storage: Latin-1 (one byte per unit, "compressed")
/// when every unit fits a byte, else UTF-16LE. Returns the bytes and whether
/// they are compressed.
pub fn encode_name(name: &[u16]) -> (Vec<u8>, bool) {
    if name.iter().all(|&u| u <= 0xFF) {
        (name.iter().map(|&u| u as u8).collect(), true)
    } else {
        (name.iter().flat_map(|u| u.to_le_bytes()).collect(), false)
    }
}

/// Decodes stored name bytes into UTF-16 code units.
pub fn decode_name(raw: &[u8], compressed: bool) -> Vec<u16> {
    if compressed {
        raw.iter().map(|&b| u16::from(b)).collect()
    } else {
        raw.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }
}

/// Converts code units to a `String`, replacing unpaired surrogates.
pub fn to_display(units: &[u16]) -> String {
    String::from_utf16_lossy(units)
}

/// Converts a `&str` to UTF-16 code units.
pub fn to_units(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}
