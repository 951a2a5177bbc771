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
    name.iter().fold(0u32, |h, &u| {
        h.wrapping_mul(37).wrapping_add(u32::from(upcase(u)))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Vec<u16> {
        to_units(s)
    }

    #[test]
    fn lh_hash_vectors() {
        assert_eq!(lh_hash(&u("Software")), 0xE9FE_1463);
        assert_eq!(lh_hash(&u("SOFTWARE")), 0xE9FE_1463);
        assert_eq!(lh_hash(&u("Microsoft")), 0x7F00_CD26);
        assert_eq!(lh_hash(&u("a")), 0x41);
        assert_eq!(lh_hash(&u("ab")), 0x9A7);
        assert_eq!(lh_hash(&u("äöü")), 0x0004_37EE);
        assert_eq!(lh_hash(&u("ÿ")), 0x178);
        assert_eq!(lh_hash(&u("ß2")), 0x206D);
        assert_eq!(lh_hash(&[]), 0);
    }

    #[test]
    fn hash_of_compressed_equals_hash_of_units() {
        let (raw, comp) = encode_name(&u("äöü"));
        assert!(comp);
        assert_eq!(raw, vec![0xE4, 0xF6, 0xFC]);
        assert_eq!(lh_hash(&decode_name(&raw, comp)), 0x0004_37EE);
    }

    #[test]
    fn worked_sort_order() {
        let order = [
            "a", "ab", "AZ", "A_", "SS3", "Zx", "[x", "_x", "`x", "µx", "Àx", "ß2",
        ];
        for w in order.windows(2) {
            assert_eq!(cmp_names(&u(w[0]), &u(w[1])), Ordering::Less, "{w:?}");
            assert_eq!(cmp_names(&u(w[1]), &u(w[0])), Ordering::Greater, "{w:?}");
        }
        let mut shuffled: Vec<Vec<u16>> = order.iter().rev().map(|s| u(s)).collect();
        shuffled.sort_by(|a, b| cmp_names(a, b));
        let sorted: Vec<String> = shuffled.iter().map(|n| to_display(n)).collect();
        assert_eq!(sorted, order);
    }

    #[test]
    fn equality_is_case_insensitive() {
        assert!(names_equal(&u("Software"), &u("SOFTWARE")));
        assert!(names_equal(&u("äÖü"), &u("ÄöÜ")));
        assert!(names_equal(&u("ÿ"), &u("Ÿ")));
        assert!(!names_equal(&u("ß"), &u("SS")));
        assert!(!names_equal(&u("µ"), &u("Μ")));
        assert!(!names_equal(&u("ab"), &u("abc")));
        assert_eq!(cmp_names(&u("ab"), &u("abc")), Ordering::Less);
        assert_eq!(cmp_names(&u("ABC"), &u("abc")), Ordering::Equal);
    }

    #[test]
    fn lf_hints() {
        assert_eq!(lf_hint(&u("Software")), *b"Soft");
        assert_eq!(lf_hint(&u("ab")), *b"ab\0\0");
        assert_eq!(lf_hint(&u("äöü")), [0xE4, 0xF6, 0xFC, 0]);
        assert_eq!(lf_hint(&u("aΩb")), [0; 4]);
        // Only the first four units matter.
        assert_eq!(lf_hint(&u("abcdΩ")), *b"abcd");
    }

    #[test]
    fn encoding_round_trip() {
        for s in ["Software", "äöü", "ÿ", "Ωmega", "\u{1F600}x", ""] {
            let units = u(s);
            let (raw, comp) = encode_name(&units);
            assert_eq!(comp, units.iter().all(|&c| c <= 0xFF));
            assert_eq!(raw.len(), if comp { units.len() } else { 2 * units.len() });
            assert_eq!(decode_name(&raw, comp), units);
        }
        // Unpaired surrogates survive.
        let lone = [0xD800u16, 0x41];
        let (raw, comp) = encode_name(&lone);
        assert!(!comp);
        assert_eq!(decode_name(&raw, comp), lone);
        // An odd trailing byte of a UTF-16 name is ignored, not a panic.
        assert_eq!(decode_name(&[0x41, 0, 0x42], false), vec![0x41]);
    }
}
