//! Windows' upper-case table for registry name comparison.

/// Upper-cases one UTF-16 code unit (placeholder: ASCII only until the
/// Windows table lands).
pub fn upcase(u: u16) -> u16 {
    if (u16::from(b'a')..=u16::from(b'z')).contains(&u) {
        u - 32
    } else {
        u
    }
}
