//! Marvin32, the keyed 64-bit hash that protects new-format log entries.
//!
//! Every `HvLE` entry stores two Marvin32 digests computed with the fixed
//! seed [`LOG_SEED`]: one over the entry body and one over the first 32
//! header bytes.

/// The seed Windows uses for transaction-log entry hashes.
pub const LOG_SEED: u64 = 0x82EF_4D88_7A4E_55C5;

/// One mixing round over the two 32-bit state halves.
fn mix(lo: &mut u32, hi: &mut u32) {
    *hi ^= *lo;
    *lo = lo.rotate_left(20).wrapping_add(*hi);
    *hi = hi.rotate_left(9) ^ *lo;
    *lo = lo.rotate_left(27).wrapping_add(*hi);
    *hi = hi.rotate_left(19);
}

/// Computes the Marvin32 hash of `data` with `seed` (low 32 bits seed the
/// low state word, high 32 bits the high one).
///
/// The result is `high << 32 | low`. Log entries use [`LOG_SEED`].
pub fn marvin32(data: &[u8], seed: u64) -> u64 {
    let mut lo = seed as u32;
    let mut hi = (seed >> 32) as u32;
    let mut words = data.chunks_exact(4);
    for w in words.by_ref() {
        lo = lo.wrapping_add(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        mix(&mut lo, &mut hi);
    }
    // Tail: the remaining 0..=3 bytes, little-endian, with a 0x80 marker
    // byte right above them.
    let rest = words.remainder();
    let mut last = 0x80u32 << (8 * rest.len());
    for (i, b) in rest.iter().enumerate() {
        last |= u32::from(*b) << (8 * i);
    }
    lo = lo.wrapping_add(last);
    mix(&mut lo, &mut hi);
    mix(&mut lo, &mut hi);
    (u64::from(hi) << 32) | u64::from(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marvin_empty_vector() {
        assert_eq!(marvin32(&[], LOG_SEED), 0xB39E_FCA4_0396_6E08);
    }

    #[test]
    fn marvin_32_bytes_vector() {
        let data: Vec<u8> = (0u8..0x20).collect();
        assert_eq!(
            marvin32(&data, 0x82EF_4D88_7A4E_55C5),
            0xC64F_EEE4_25C2_E24C
        );
    }

    #[test]
    fn marvin_tail_bytes_change_the_hash() {
        // Inputs that are not a multiple of four bytes must still be hashed
        // in full: each trailing byte influences the result.
        let a = marvin32(b"abcde", LOG_SEED);
        let b = marvin32(b"abcdf", LOG_SEED);
        let c = marvin32(b"abcd", LOG_SEED);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(marvin32(b"abc", LOG_SEED), marvin32(b"abc\0", LOG_SEED));
    }
}
