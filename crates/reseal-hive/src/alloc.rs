//! The cell allocator: best-fit reuse of free cells, splitting, coalescing
//! with free neighbours inside a bin, and appending bins when nothing fits.

use std::collections::{BTreeMap, BTreeSet};

use crate::base_block::BASE_BLOCK_SIZE;
use crate::bytes::{put_u32, round_up};
use crate::cells::{BIN_HEADER, BIN_UNIT, Bin, CellEntry};

/// Largest bins area Windows can address (2 GiB of stable storage).
pub const MAX_BINS_SIZE: u64 = 0x8000_0000;

/// Free-space bookkeeping for one hive image.
#[derive(Debug, Default, Clone)]
pub struct Allocator {
    bins: Vec<Bin>,
    free_by_offset: BTreeMap<u32, u32>,
    free_by_size: BTreeSet<(u32, u32)>,
}

impl Allocator {
    /// Builds the allocator from a bin walk.
    pub fn new(bins: Vec<Bin>, cells: &[CellEntry]) -> Self {
        let mut a = Allocator {
            bins,
            ..Default::default()
        };
        for c in cells.iter().filter(|c| !c.allocated) {
            a.insert_free(c.index, c.size);
        }
        a
    }

    /// Total size of the bins area.
    pub fn bins_size(&self) -> u32 {
        self.bins.last().map_or(0, |b| b.end())
    }

    /// Every free cell as (index, size).
    pub fn free_cells(&self) -> Vec<(u32, u32)> {
        self.free_by_offset.iter().map(|(&o, &s)| (o, s)).collect()
    }

    fn insert_free(&mut self, off: u32, size: u32) {
        self.free_by_offset.insert(off, size);
        self.free_by_size.insert((size, off));
    }

    fn remove_free(&mut self, off: u32) -> Option<u32> {
        let size = self.free_by_offset.remove(&off)?;
        self.free_by_size.remove(&(size, off));
        Some(size)
    }

    fn bin_of(&self, index: u32) -> Option<Bin> {
        let i = self.bins.partition_point(|b| b.end() <= index);
        self.bins.get(i).copied().filter(|b| b.start <= index)
    }

    /// Allocates a cell with room for `payload` bytes and returns its index.
    /// The payload is zeroed. `data` grows (a new bin) when no free cell fits;
    /// returns `None` when the hive would exceed 2 GiB.
    pub fn alloc(&mut self, data: &mut Vec<u8>, payload: usize) -> Option<u32> {
        let need = u32::try_from(round_up(payload.checked_add(4)?, 8)).ok()?;
        let found = self.free_by_size.range((need, 0)..).next().copied();
        let (size, off) = match found {
            Some(f) => f,
            None => self.append_bin(data, need)?,
        };
        self.remove_free(off);
        let rest = size - need;
        let taken = if rest >= 8 {
            let r = off + need;
            write_size(data, r, rest as i32);
            self.insert_free(r, rest);
            need
        } else {
            size
        };
        write_size(data, off, -(taken as i32));
        zero_payload(data, off, taken);
        Some(off)
    }

    fn append_bin(&mut self, data: &mut Vec<u8>, need: u32) -> Option<(u32, u32)> {
        let start = self.bins_size();
        let bin_size = round_up(need as usize + BIN_HEADER, BIN_UNIT);
        if u64::from(start) + bin_size as u64 > MAX_BINS_SIZE {
            return None;
        }
        let bin_size = bin_size as u32;
        let file_start = BASE_BLOCK_SIZE + start as usize;
        let file_end = file_start + bin_size as usize;
        if data.len() < file_end {
            data.resize(file_end, 0);
        }
        data[file_start..file_end].fill(0);
        data[file_start..file_start + 4].copy_from_slice(b"hbin");
        put_u32(data, file_start + 4, start);
        put_u32(data, file_start + 8, bin_size);
        self.bins.push(Bin {
            start,
            size: bin_size,
        });
        let cell = start + BIN_HEADER as u32;
        let free = bin_size - BIN_HEADER as u32;
        write_size(data, cell, free as i32);
        self.insert_free(cell, free);
        Some((free, cell))
    }

    /// Frees the allocated cell at `index` of absolute size `size`: zeroes
    /// its payload and merges it with free neighbours in the same bin.
    pub fn free(&mut self, data: &mut [u8], index: u32, size: u32) {
        let Some(bin) = self.bin_of(index) else {
            return;
        };
        // Scrub what we free: the payload, and the size fields that stop
        // being cell headers when neighbours merge.
        zero_payload(data, index, size);
        let mut off = index;
        let mut size = size;
        let next = off + size;
        if next < bin.end() {
            if let Some(ns) = self.remove_free(next) {
                size += ns;
                zero_header(data, next);
            }
        }
        if let Some((&po, &ps)) = self.free_by_offset.range(..off).next_back() {
            if po + ps == off && po >= bin.start {
                self.remove_free(po);
                zero_header(data, off);
                off = po;
                size += ps;
            }
        }
        write_size(data, off, size as i32);
        self.insert_free(off, size);
    }
}

fn write_size(data: &mut [u8], index: u32, size: i32) {
    put_u32(data, BASE_BLOCK_SIZE + index as usize, size as u32);
}

fn zero_header(data: &mut [u8], index: u32) {
    write_size(data, index, 0);
}

/// Zeroes bytes 4.. of the cell at `index` with absolute size `size`.
fn zero_payload(data: &mut [u8], index: u32, size: u32) {
    let s = BASE_BLOCK_SIZE + index as usize + 4;
    let e = BASE_BLOCK_SIZE + index as usize + size as usize;
    if s <= e && e <= data.len() {
        data[s..e].fill(0);
    }
}
