//! Scrubbing unused space: free cells and the slack after each record in
//! its cell. Old data (an old machine SID, deleted values) survives in both
//! in Windows-written hives; an identity-changing tool must not leave it.

use crate::bytes::{u16_at, u32_at};
use crate::cells::NIL;
use crate::error::Result;
use crate::hive::Hive;
use crate::key_node::off as nk;
use crate::read::KeyId;
use crate::value_node::{BIG_DATA_SEGMENT, uses_big_data};

impl Hive {
    /// Zeroes every free cell's payload and, in every allocated cell the
    /// tree references, the bytes after its record (names, lists, data,
    /// descriptors). Returns the number of bytes that were not already zero.
    pub fn scrub_unused(&mut self) -> Result<u64> {
        self.ensure_writable()?;
        let mut changed = 0u64;
        for (off, size) in self.alloc.free_cells() {
            changed += self.zero_range(off, 4, size as usize);
        }
        let mut keys = Vec::new();
        self.walk(|_, k| {
            keys.push(k);
            Ok(())
        })?;
        for k in keys {
            changed += self.scrub_key(k)?;
        }
        for sk in self.sk_ring()? {
            let len = u32_at(self.cell(sk)?, 16).unwrap_or(0) as usize;
            changed += self.zero_slack(sk, 20 + len)?;
        }
        if changed > 0 {
            self.modified = true;
        }
        Ok(changed)
    }

    fn scrub_key(&mut self, k: KeyId) -> Result<u64> {
        let node = self.key_node(k)?;
        let name_len = u16_at(self.cell(k.0)?, nk::NAME_LEN).unwrap_or(0) as usize;
        let mut n = self.zero_slack(k.0, nk::NAME + name_len)?;
        if node.class != NIL && node.class_len > 0 {
            n += self.zero_slack(node.class, node.class_len as usize)?;
        }
        if node.subkey_list != NIL {
            n += self.scrub_list(node.subkey_list, true)?;
        }
        let values = self.value_indexes(k)?;
        if node.value_list != NIL && !values.is_empty() {
            n += self.zero_slack(node.value_list, 4 * values.len())?;
        }
        for vi in values {
            let v = self.value_node(vi)?;
            let vname = u16_at(self.cell(vi)?, 2).unwrap_or(0) as usize;
            n += self.zero_slack(vi, 20 + vname)?;
            let len = v.data_len() as usize;
            if v.is_inline() || len == 0 || v.data == NIL {
                continue;
            }
            let p = self.cell(v.data)?;
            if uses_big_data(self.minor, len) && p.get(0..2) == Some(b"db") {
                let count = u16_at(p, 2).unwrap_or(0) as usize;
                let list = u32_at(p, 4).unwrap_or(NIL);
                n += self.zero_slack(v.data, 8)?;
                n += self.zero_slack(list, 4 * count)?;
                let segs: Vec<u32> = {
                    let l = self.cell(list)?;
                    (0..count).filter_map(|i| u32_at(l, 4 * i)).collect()
                };
                let mut left = len;
                for s in segs {
                    let take = left.min(BIG_DATA_SEGMENT);
                    n += self.zero_slack(s, take)?;
                    left -= take;
                }
            } else {
                n += self.zero_slack(v.data, len)?;
            }
        }
        Ok(n)
    }

    fn scrub_list(&mut self, list: u32, top: bool) -> Result<u64> {
        let p = self.cell(list)?;
        let count = u16_at(p, 2).unwrap_or(0) as usize;
        let (stride, ri) = match p.get(0..2) {
            Some(b"lf") | Some(b"lh") => (8, false),
            Some(b"li") => (4, false),
            Some(b"ri") if top => (4, true),
            _ => return Ok(0),
        };
        let leaves: Vec<u32> = if ri {
            (0..count).filter_map(|i| u32_at(p, 4 + 4 * i)).collect()
        } else {
            Vec::new()
        };
        let mut n = self.zero_slack(list, 4 + stride * count)?;
        for l in leaves {
            n += self.scrub_list(l, false)?;
        }
        Ok(n)
    }

    /// Zeroes the payload of the cell at `index` from `used` on.
    fn zero_slack(&mut self, index: u32, used: usize) -> Result<u64> {
        let r = self.cell_range(index)?;
        let len = r.end - r.start;
        Ok(self.zero_range(index, 4 + used.min(len), len + 4))
    }

    /// Zeroes bytes [from, to) of the cell at `index` (offsets from the cell
    /// start, size field included); returns how many were non-zero.
    fn zero_range(&mut self, index: u32, from: usize, to: usize) -> u64 {
        let base = crate::base_block::BASE_BLOCK_SIZE + index as usize;
        let (s, e) = (base + from, (base + to).min(self.data.len()));
        if s >= e {
            return 0;
        }
        let slice = &mut self.data[s..e];
        let nz = slice.iter().filter(|&&b| b != 0).count() as u64;
        if nz > 0 {
            slice.fill(0);
        }
        nz
    }
}
