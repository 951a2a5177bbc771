//! Refcount entries inside a refcount block: 2^refcount_order bits each,
//! packed from the least significant bit for widths below a byte and
//! big-endian from 8 bits up.

/// Reads entry `i` of a refcount block; `None` when `i` is outside it.
pub(super) fn get(block: &[u8], i: u64, order: u32) -> Option<u64> {
    let i = usize::try_from(i).ok()?;
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 / bits;
            let byte = *block.get(i / per_byte)?;
            let shift = (i % per_byte) * bits;
            Some(u64::from(byte >> shift) & ((1u64 << bits) - 1))
        }
        3 => block.get(i).map(|&b| u64::from(b)),
        4 => {
            let b = block.get(2 * i..2 * i + 2)?;
            Some(u64::from(u16::from_be_bytes([b[0], b[1]])))
        }
        5 => {
            let b = block.get(4 * i..4 * i + 4)?;
            Some(u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
        }
        6 => {
            let b = block.get(8 * i..8 * i + 8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Some(u64::from_be_bytes(a))
        }
        _ => None,
    }
}

/// Largest refcount an entry of this width holds.
pub(super) fn max_value(order: u32) -> u64 {
    if order >= 6 {
        u64::MAX
    } else {
        (1u64 << (1u32 << order)) - 1
    }
}

/// Sets entry `i` of a refcount block; `None` when `i` is outside it or
/// `v` does not fit.
pub(super) fn set(block: &mut [u8], i: u64, order: u32, v: u64) -> Option<()> {
    if v > max_value(order) {
        return None;
    }
    let i = usize::try_from(i).ok()?;
    match order {
        0..=2 => {
            let bits = 1usize << order;
            let per_byte = 8 / bits;
            let byte = block.get_mut(i / per_byte)?;
            let shift = (i % per_byte) * bits;
            let mask = (((1u16 << bits) - 1) as u8) << shift;
            *byte = (*byte & !mask) | (((v as u8) << shift) & mask);
        }
        3 => *block.get_mut(i)? = v as u8,
        4 => block
            .get_mut(2 * i..2 * i + 2)?
            .copy_from_slice(&(v as u16).to_be_bytes()),
        5 => block
            .get_mut(4 * i..4 * i + 4)?
            .copy_from_slice(&(v as u32).to_be_bytes()),
        6 => block
            .get_mut(8 * i..8 * i + 8)?
            .copy_from_slice(&v.to_be_bytes()),
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_round_trips() {
        for order in 0..=6u32 {
            let mut b = vec![0u8; 64];
            let n = 64 * 8 / (1u64 << order);
            let max = max_value(order);
            for i in 0..n {
                set(&mut b, i, order, (i * 7 + 1) & max).unwrap();
            }
            for i in 0..n {
                assert_eq!(
                    get(&b, i, order),
                    Some((i * 7 + 1) & max),
                    "order {order} i {i}"
                );
            }
            assert_eq!(get(&b, n, order), None);
            assert!(set(&mut b, 0, order, max).is_some());
            if order < 6 {
                assert!(set(&mut b, 0, order, max + 1).is_none());
            }
        }
        // qemu packs 1-bit refcounts from the least significant bit.
        let mut b = vec![0u8; 1];
        set(&mut b, 1, 0, 1).unwrap();
        assert_eq!(b[0], 2);
    }
}
