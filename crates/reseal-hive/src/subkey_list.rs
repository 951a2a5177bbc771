//! Subkey lists (`li`, `lf`, `lh`, `ri`): reading them flat, and building
//! new ones sorted, hashed and split the way Windows does.

use crate::bytes::{put_u16, put_u32, u16_at, u32_at};
use crate::cells::NIL;
use crate::error::{HiveError, Result};
use crate::hive::Hive;
use crate::names::{lf_hint, lh_hash};

/// Most entries written into one `lf`/`lh` leaf (fits one 4 KiB bin).
pub const MAX_LEAF_ENTRIES: usize = 507;

impl Hive {
    /// Reads the subkey list at `list` into a flat vector of `nk` indexes, in
    /// stored order. `expected` bounds the work on corrupt input.
    pub(crate) fn read_subkey_list(&self, list: u32, expected: u32) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(expected.min(1 << 16) as usize);
        if list == NIL {
            return Ok(out);
        }
        self.read_list_into(list, &mut out, 0)?;
        Ok(out)
    }

    fn read_list_into(&self, list: u32, out: &mut Vec<u32>, depth: u8) -> Result<()> {
        let p = self.cell(list)?;
        let sig = p.get(0..2).unwrap_or(&[]);
        let count = u16_at(p, 2).unwrap_or(0) as usize;
        let (stride, is_ri) = match sig {
            b"li" => (4, false),
            b"lf" | b"lh" => (8, false),
            b"ri" if depth == 0 => (4, true),
            _ => {
                return Err(HiveError::corrupt(
                    &self.name,
                    crate::cells::file_offset(list) + 4,
                    "subkey list signature",
                    if depth == 0 {
                        "li, lf, lh or ri"
                    } else {
                        "li, lf or lh under ri"
                    },
                    format!("{sig:02x?}"),
                ));
            }
        };
        if 4 + count * stride > p.len() {
            return Err(HiveError::corrupt(
                &self.name,
                crate::cells::file_offset(list),
                "subkey list size",
                format!("room for {count} entries"),
                format!("{} bytes of payload", p.len()),
            ));
        }
        for i in 0..count {
            let idx = u32_at(p, 4 + i * stride).unwrap_or(NIL);
            if is_ri {
                self.read_list_into(idx, out, depth + 1)?;
            } else {
                out.push(idx);
            }
        }
        Ok(())
    }

    /// Frees the cells of the subkey list at `list` (leaves and ri).
    pub(crate) fn free_subkey_list(&mut self, list: u32) -> Result<()> {
        if list == NIL {
            return Ok(());
        }
        let p = self.cell(list)?;
        if p.get(0..2) == Some(b"ri") {
            let count = u16_at(p, 2).unwrap_or(0) as usize;
            let leaves: Vec<u32> = (0..count).filter_map(|i| u32_at(p, 4 + i * 4)).collect();
            for l in leaves {
                self.free_cell(l)?;
            }
        }
        self.free_cell(list)
    }

    /// Writes a new subkey list for the already sorted `children` and returns
    /// its index (NIL when empty): one leaf up to [`MAX_LEAF_ENTRIES`], else an
    /// `ri` over leaves of at most that many entries.
    pub(crate) fn write_subkey_list(&mut self, children: &[u32]) -> Result<u32> {
        if children.is_empty() {
            return Ok(NIL);
        }
        if children.len() <= MAX_LEAF_ENTRIES {
            return self.write_leaf(children);
        }
        let n_leaves = children.len().div_ceil(MAX_LEAF_ENTRIES);
        // Spread entries evenly so every leaf has room to grow.
        let per = children.len().div_ceil(n_leaves);
        let mut leaves = Vec::with_capacity(n_leaves);
        for chunk in children.chunks(per) {
            leaves.push(self.write_leaf(chunk)?);
        }
        let mut ri = vec![0u8; 4 + 4 * leaves.len()];
        ri[0..2].copy_from_slice(b"ri");
        put_u16(&mut ri, 2, leaves.len() as u16);
        for (i, l) in leaves.iter().enumerate() {
            put_u32(&mut ri, 4 + 4 * i, *l);
        }
        self.alloc_with(&ri)
    }

    fn write_leaf(&mut self, children: &[u32]) -> Result<u32> {
        let hashed = self.minor >= 5;
        let mut leaf = vec![0u8; 4 + 8 * children.len()];
        leaf[0..2].copy_from_slice(if hashed { b"lh" } else { b"lf" });
        put_u16(&mut leaf, 2, children.len() as u16);
        for (i, &c) in children.iter().enumerate() {
            let name = self.key_node(crate::KeyId(c))?.name;
            put_u32(&mut leaf, 4 + 8 * i, c);
            if hashed {
                put_u32(&mut leaf, 8 + 8 * i, lh_hash(&name));
            } else {
                leaf[8 + 8 * i..12 + 8 * i].copy_from_slice(&lf_hint(&name));
            }
        }
        self.alloc_with(&leaf)
    }
}
