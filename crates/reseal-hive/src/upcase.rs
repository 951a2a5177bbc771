//! Windows' upper-case table for registry name comparison.
//!
//! The registry compares, sorts and hashes names after upper-casing every
//! UTF-16 code unit with `RtlUpcaseUnicodeChar`. That function uses a fixed
//! table which is close to, but not the same as, Unicode's simple upper-case
//! mapping. This module derives the table from the Unicode data built into
//! the standard library and the following rules:
//!
//! 1. Start from the simple upper-case mapping of the code unit. For most
//!    characters that is what `char::to_uppercase` yields when it yields a
//!    single BMP character. The Greek letters with ypogegrammeni (iota
//!    subscript) are the exception: their full mapping expands to two
//!    characters, while their simple mapping is the matching letter with
//!    prosgegrammeni (see [`GREEK_IOTA_SUBSCRIPT`]).
//! 2. Keep a mapping only when it round-trips: the lower case of the result
//!    must be the original character. This drops the Unicode mappings that
//!    Windows does not have, such as `µ` (U+00B5), dotless `ı` (U+0131), long
//!    `ſ` (U+017F), final sigma `ς` (U+03C2), the Greek symbol variants
//!    (`ϐ`, `ϑ`, `ϕ`, ...) and the titlecase digraphs (U+01C5, U+01C8,
//!    U+01CB, U+01F2).
//! 3. Drop the case pairs that Unicode added after version 5.1, which is the
//!    repertoire of Windows' table (see [`NEWER_THAN_WINDOWS`]), e.g. Georgian
//!    Mtavruli and the Cherokee small letters.
//! 4. Surrogate code units map to themselves.
//!
//! At development time the result was compared with the table dumped from
//! Windows 10 (as published by the yarp project): the two agree on all
//! 65 536 code units. The unit tests pin the result with a fingerprint so a
//! change of the standard library's Unicode version cannot go unnoticed.

use std::sync::OnceLock;

/// Lower-case code units whose upper-case partner was added to Unicode after
/// version 5.1 (inclusive ranges). Windows' table leaves them unchanged.
pub const NEWER_THAN_WINDOWS: &[(u16, u16)] = &[
    (0x019B, 0x019B), // ƛ → U+A7DC (Unicode 16)
    (0x023F, 0x0240), // ȿ ɀ → U+2C7E, U+2C7F (5.2)
    (0x0252, 0x0252), // ɒ → U+2C70 (5.2)
    (0x025C, 0x025C), // ɜ → U+A7AB (7.0)
    (0x0261, 0x0261), // ɡ → U+A7AC (7.0)
    (0x0264, 0x0266), // ɤ ɥ ɦ → U+A7CB, U+A78D, U+A7AA (6.0 and later)
    (0x026A, 0x026A), // ɪ → U+A7AE (9.0)
    (0x026C, 0x026C), // ɬ → U+A7AD (7.0)
    (0x0282, 0x0282), // ʂ → U+A7C5 (12.0)
    (0x0287, 0x0287), // ʇ → U+A7B1 (8.0)
    (0x029D, 0x029E), // ʝ ʞ → U+A7B2, U+A7B0 (7.0, 8.0)
    (0x03F3, 0x03F3), // ϳ → U+037F (7.0)
    (0x0524, 0x052F), // Cyrillic supplement pairs (5.2 and later)
    (0x10D0, 0x10FF), // Georgian Mkhedruli → Mtavruli (11.0)
    (0x13F8, 0x13FD), // Cherokee small letters (8.0)
    (0x1C8A, 0x1C8A), // Cyrillic tje (16.0)
    (0x1D8E, 0x1D8E), // ᶎ → U+A7C6 (12.0)
    (0x2C5F, 0x2C5F), // Glagolitic (14.0)
    (0x2CEC, 0x2CEE), // Coptic (5.2)
    (0x2CF3, 0x2CF3), // Coptic (6.1)
    (0x2D27, 0x2D27), // Georgian Nuskhuri (6.1)
    (0x2D2D, 0x2D2D), // Georgian Nuskhuri (6.1)
    (0xA660, 0xA661), // Cyrillic reversed tse (6.0)
    (0xA698, 0xA69B), // Cyrillic (7.0)
    (0xA790, 0xA7FF), // Latin Extended-D additions (6.0 and later)
    (0xAB53, 0xAB53), // ꭓ → U+A7B3 (8.0)
    (0xAB70, 0xABBF), // Cherokee small letters (8.0)
];

/// Greek small letters with ypogegrammeni whose simple upper case is the
/// capital with prosgegrammeni, `offset` code points further (inclusive
/// ranges).
pub const GREEK_IOTA_SUBSCRIPT: &[(u16, u16, u16)] = &[
    (0x1F80, 0x1F87, 8),
    (0x1F90, 0x1F97, 8),
    (0x1FA0, 0x1FA7, 8),
    (0x1FB3, 0x1FB3, 9),
    (0x1FC3, 0x1FC3, 9),
    (0x1FF3, 0x1FF3, 9),
];

fn in_ranges(u: u16, ranges: &[(u16, u16)]) -> bool {
    ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&u))
}

/// The single character `it` yields, if it yields exactly one.
fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
    match (it.next(), it.next()) {
        (Some(c), None) => Some(c),
        _ => None,
    }
}

/// Computes the Windows upper case of one code unit from the rules in the
/// module documentation (slow; [`upcase`] caches the results).
fn derive(u: u16) -> u16 {
    // Surrogates (and any other non-scalar) stay as they are.
    let Some(c) = char::from_u32(u32::from(u)) else {
        return u;
    };
    if let Some(&(lo, _, off)) = GREEK_IOTA_SUBSCRIPT
        .iter()
        .find(|&&(lo, hi, _)| (lo..=hi).contains(&u))
    {
        return lo + (u - lo) + off;
    }
    if in_ranges(u, NEWER_THAN_WINDOWS) {
        return u;
    }
    let Some(up) = single(c.to_uppercase()) else {
        return u;
    };
    let Ok(up16) = u16::try_from(u32::from(up)) else {
        return u;
    };
    if up == c || single(up.to_lowercase()) != Some(c) {
        return u;
    }
    up16
}

fn table() -> &'static [u16] {
    static TABLE: OnceLock<Vec<u16>> = OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(derive).collect())
}

/// Upper-cases one UTF-16 code unit exactly like Windows'
/// `RtlUpcaseUnicodeChar` (Windows 10 table).
#[inline]
pub fn upcase(u: u16) -> u16 {
    if u < 0x80 {
        if (u16::from(b'a')..=u16::from(b'z')).contains(&u) {
            u - 32
        } else {
            u
        }
    } else {
        table()[usize::from(u)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_latin1() {
        assert_eq!(upcase(u16::from(b'a')), u16::from(b'A'));
        assert_eq!(upcase(u16::from(b'z')), u16::from(b'Z'));
        assert_eq!(upcase(u16::from(b'_')), u16::from(b'_'));
        assert_eq!(upcase(0xE4), 0xC4); // ä
        assert_eq!(upcase(0xFF), 0x178); // ÿ
        assert_eq!(upcase(0xDF), 0xDF); // ß
        assert_eq!(upcase(0xB5), 0xB5); // µ
        assert_eq!(upcase(0xF7), 0xF7); // ÷
    }

    #[test]
    fn windows_specific_exceptions() {
        assert_eq!(upcase(0x0131), 0x0131); // ı
        assert_eq!(upcase(0x017F), 0x017F); // ſ
        assert_eq!(upcase(0x03C2), 0x03C2); // ς
        assert_eq!(upcase(0x03C3), 0x03A3); // σ
        assert_eq!(upcase(0x01C5), 0x01C5); // titlecase Dž
        assert_eq!(upcase(0x01C6), 0x01C4); // dž
        assert_eq!(upcase(0x10D0), 0x10D0); // Georgian
        assert_eq!(upcase(0x2D00), 0x10A0); // Nuskhuri → Asomtavruli
        assert_eq!(upcase(0x1F80), 0x1F88);
        assert_eq!(upcase(0x1FB3), 0x1FBC);
        assert_eq!(upcase(0x0250), 0x2C6F); // Unicode 5.1 pair kept
        assert_eq!(upcase(0x0252), 0x0252); // Unicode 5.2 pair dropped
        assert_eq!(upcase(0xFF41), 0xFF21); // fullwidth a
        assert_eq!(upcase(0xD800), 0xD800);
        assert_eq!(upcase(0xDFFF), 0xDFFF);
    }

    /// Pins the whole table: 973 code units change, and an FNV-1a
    /// fingerprint over all 65 536 results (taken when the table agreed with
    /// the Windows 10 dump unit for unit).
    #[test]
    fn table_fingerprint() {
        let changed = (0..=u16::MAX).filter(|&u| upcase(u) != u).count();
        assert_eq!(changed, 973);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for u in 0..=u16::MAX {
            for b in upcase(u).to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        assert_eq!(h, FINGERPRINT, "fingerprint {h:#x}");
    }

    const FINGERPRINT: u64 = 0x48ed_4531_e939_9927;

    #[test]
    fn ascii_fast_path_matches_table() {
        for u in 0..0x80u16 {
            assert_eq!(upcase(u), table()[usize::from(u)]);
        }
    }
}
