//! A copy-on-write layer over a [`BlockDevice`]: writes land in memory, in
//! 4 KiB pages, and reach the device only on [`OverlayDisk::persist`].
//! Dropping the overlay without persisting leaves the device untouched,
//! which is what makes a commit all-or-nothing up to that point.

use std::collections::BTreeMap;

use super::BlockDevice;
use crate::Result;

/// Page size of the overlay.
const PAGE: u64 = 4096;

/// Writes kept in memory over a device that is only read.
#[derive(Debug)]
pub struct OverlayDisk<D> {
    base: D,
    pages: BTreeMap<u64, Vec<u8>>,
}

impl<D: BlockDevice> OverlayDisk<D> {
    /// An overlay with no writes yet.
    pub fn new(base: D) -> Self {
        OverlayDisk {
            base,
            pages: BTreeMap::new(),
        }
    }

    /// Bytes held in memory (written pages).
    pub fn dirty_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE
    }

    /// The device below, without the writes.
    pub fn base(&self) -> &D {
        &self.base
    }

    /// The changed pages as runs of adjacent pages: (offset in the
    /// device, bytes). Pages whose contents equal the device's are left
    /// out. What [`persist`](Self::persist) writes, for a caller that
    /// journals it first.
    pub fn changed_runs(&self) -> Result<Vec<(u64, Vec<u8>)>> {
        let len = self.base.len();
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        for (&idx, page) in &self.pages {
            let at = idx * PAGE;
            let n = PAGE.min(len - at) as usize;
            let mut old = vec![0u8; n];
            self.base.read_at(at, &mut old)?;
            if old == page[..n] {
                continue;
            }
            match runs.last_mut() {
                Some((start, buf)) if *start + buf.len() as u64 == at => {
                    buf.extend_from_slice(&page[..n])
                }
                _ => runs.push((at, page[..n].to_vec())),
            }
        }
        Ok(runs)
    }

    /// Writes `runs` (from [`changed_runs`](Self::changed_runs)) to the
    /// device, drops the pages from memory and flushes the device.
    /// `stop_after` (testing aid) stops with an error after that many runs,
    /// as a kill would.
    pub fn write_runs(&mut self, runs: &[(u64, Vec<u8>)], stop_after: Option<usize>) -> Result<()> {
        for (i, (at, data)) in runs.iter().enumerate() {
            if stop_after == Some(i) {
                return Err(crate::ResealError::CommitFailed {
                    path: String::new(),
                    action: "write the changed pages",
                    message: format!("simulated kill after {i} run(s) (testing aid)"),
                });
            }
            self.base.write_at(*at, data)?;
        }
        self.pages.clear();
        self.base.flush()
    }

    /// Writes every changed page to the device (runs of adjacent pages in
    /// one call) and flushes it. Pages whose contents equal the device's
    /// are skipped.
    pub fn persist(&mut self) -> Result<()> {
        let runs = self.changed_runs()?;
        self.write_runs(&runs, None)
    }

    /// Gives the device back, dropping writes not persisted.
    pub fn into_inner(self) -> D {
        self.base
    }
}

impl<D: BlockDevice> BlockDevice for OverlayDisk<D> {
    fn len(&self) -> u64 {
        self.base.len()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset + buf.len() as u64;
        let mut at = offset;
        while at < end {
            let idx = at / PAGE;
            let page_end = ((idx + 1) * PAGE).min(end);
            let n = (page_end - at) as usize;
            let dst = (at - offset) as usize;
            if let Some(p) = self.pages.get(&idx) {
                let src = (at - idx * PAGE) as usize;
                buf[dst..dst + n].copy_from_slice(&p[src..src + n]);
                at = page_end;
            } else {
                // A run of pages not in memory: one read.
                let mut stop = page_end;
                while stop < end && !self.pages.contains_key(&(stop / PAGE)) {
                    stop = ((stop / PAGE + 1) * PAGE).min(end);
                }
                let n = (stop - at) as usize;
                self.base.read_at(at, &mut buf[dst..dst + n])?;
                at = stop;
            }
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<()> {
        let len = self.base.len();
        if offset.checked_add(buf.len() as u64).is_none_or(|e| e > len) {
            // Let the device produce its own out-of-range error.
            let mut probe = vec![0u8; buf.len()];
            self.base.read_at(offset, &mut probe)?;
        }
        let end = offset + buf.len() as u64;
        let mut at = offset;
        while at < end {
            let idx = at / PAGE;
            let page_start = idx * PAGE;
            let page_end = ((idx + 1) * PAGE).min(end);
            if !self.pages.contains_key(&idx) {
                let mut page = vec![0u8; PAGE as usize];
                let n = PAGE.min(len - page_start) as usize;
                self.base.read_at(page_start, &mut page[..n])?;
                self.pages.insert(idx, page);
            }
            let p = self.pages.get_mut(&idx).expect("page inserted above");
            let src = (at - offset) as usize;
            let dst = (at - page_start) as usize;
            let n = (page_end - at) as usize;
            p[dst..dst + n].copy_from_slice(&buf[src..src + n]);
            at = page_end;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        // Nothing reaches the device before persist().
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::MemDisk;

    #[test]
    fn writes_stay_in_memory_until_persisted() {
        let base = MemDisk {
            data: (0..20000u32).map(|i| (i % 251) as u8).collect(),
        };
        let orig = base.data.clone();
        let mut o = OverlayDisk::new(base);
        o.write_at(4090, &[0xAA; 20]).unwrap();
        o.write_at(12000, &[0xBB; 9000 - 1000]).unwrap();
        let mut model = orig.clone();
        model[4090..4110].fill(0xAA);
        model[12000..20000].fill(0xBB);
        let mut all = vec![0u8; 20000];
        o.read_at(0, &mut all).unwrap();
        assert_eq!(all, model);
        assert_eq!(o.base().data, orig, "base untouched before persist");
        let mut part = vec![0u8; 100];
        o.read_at(4050, &mut part).unwrap();
        assert_eq!(part, model[4050..4150]);
        o.persist().unwrap();
        assert_eq!(o.into_inner().data, model);
    }

    #[test]
    fn out_of_range_write_fails_and_changes_nothing() {
        let mut o = OverlayDisk::new(MemDisk {
            data: vec![0u8; 4096],
        });
        assert!(o.write_at(4000, &[1u8; 200]).is_err());
        assert_eq!(o.dirty_bytes(), 0);
    }
}
