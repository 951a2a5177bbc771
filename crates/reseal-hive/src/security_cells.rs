//! Security cells (`sk`): the ring, reference counts, assigning descriptors.

use std::collections::HashSet;

use crate::bytes::{put_u32, u32_at};
use crate::cells::file_offset;
use crate::error::{HiveError, Result};
use crate::hive::Hive;
use crate::key_node::off as nk;
use crate::read::KeyId;

/// Offsets inside the `sk` record.
pub mod off {
    /// Forward link (next sk in the ring).
    pub const FLINK: usize = 4;
    /// Backward link (previous sk in the ring).
    pub const BLINK: usize = 8;
    /// Number of keys using this cell.
    pub const REFCOUNT: usize = 12;
    /// Descriptor length.
    pub const LENGTH: usize = 16;
    /// Start of the descriptor.
    pub const DESCRIPTOR: usize = 20;
}

impl Hive {
    fn sk_field(&self, sk: u32, field: usize) -> Result<u32> {
        let p = self.cell(sk)?;
        if p.get(0..2) != Some(b"sk") {
            return Err(HiveError::corrupt(
                &self.name,
                file_offset(sk) + 4,
                "security cell signature",
                "\"sk\"",
                format!("{:02x?}", &p[..p.len().min(2)]),
            ));
        }
        u32_at(p, field).ok_or_else(|| {
            HiveError::corrupt(
                &self.name,
                file_offset(sk),
                "security cell",
                "a complete sk header",
                "a short cell",
            )
        })
    }

    /// Every sk cell of the ring, starting at the root key's.
    pub(crate) fn sk_ring(&self) -> Result<Vec<u32>> {
        let start = self.key_node(self.root())?.security;
        let mut out = vec![start];
        let mut seen = HashSet::from([start]);
        let mut cur = self.sk_field(start, off::FLINK)?;
        while cur != start {
            if !seen.insert(cur) {
                return Err(HiveError::corrupt(
                    &self.name,
                    file_offset(cur),
                    "security cell ring",
                    "a single ring through the root key's security cell",
                    "a loop that does not return to it",
                ));
            }
            out.push(cur);
            cur = self.sk_field(cur, off::FLINK)?;
        }
        Ok(out)
    }

    pub(crate) fn sk_add_ref(&mut self, sk: u32, n: u32) -> Result<()> {
        let c = self.sk_field(sk, off::REFCOUNT)?;
        put_u32(self.cell_mut(sk)?, off::REFCOUNT, c.saturating_add(n));
        Ok(())
    }

    /// Drops one reference; a cell nobody uses any more is unlinked and freed.
    pub(crate) fn sk_release(&mut self, sk: u32) -> Result<()> {
        let c = self.sk_field(sk, off::REFCOUNT)?;
        if c > 1 {
            put_u32(self.cell_mut(sk)?, off::REFCOUNT, c - 1);
            return Ok(());
        }
        let next = self.sk_field(sk, off::FLINK)?;
        let prev = self.sk_field(sk, off::BLINK)?;
        if next == sk {
            // The last descriptor of the hive stays (the root always has one).
            put_u32(self.cell_mut(sk)?, off::REFCOUNT, 0);
            return Ok(());
        }
        put_u32(self.cell_mut(prev)?, off::FLINK, next);
        put_u32(self.cell_mut(next)?, off::BLINK, prev);
        self.free_cell(sk)
    }

    /// Creates a new sk cell holding `sd` (refcount 0), linked into the ring
    /// right after `after`.
    pub(crate) fn sk_insert_after(&mut self, after: u32, sd: &[u8]) -> Result<u32> {
        let next = self.sk_field(after, off::FLINK)?;
        let mut rec = vec![0u8; off::DESCRIPTOR + sd.len()];
        rec[0..2].copy_from_slice(b"sk");
        put_u32(&mut rec, off::FLINK, next);
        put_u32(&mut rec, off::BLINK, after);
        put_u32(&mut rec, off::LENGTH, sd.len() as u32);
        rec[off::DESCRIPTOR..].copy_from_slice(sd);
        let idx = self.alloc_with(&rec)?;
        put_u32(self.cell_mut(after)?, off::FLINK, idx);
        put_u32(self.cell_mut(next)?, off::BLINK, idx);
        Ok(idx)
    }

    /// Sets the security descriptor of the key at `path`. The descriptor
    /// must be valid and self-relative. An identical descriptor already in
    /// the hive is shared, as Windows does.
    pub fn set_security(&mut self, path: &str, sd: &[u8]) -> Result<()> {
        self.ensure_writable()?;
        let key = self.key(path)?;
        self.set_security_id(key, sd)
    }

    pub(crate) fn set_security_id(&mut self, key: KeyId, sd: &[u8]) -> Result<()> {
        crate::security::validate_descriptor(sd)?;
        let cur = self.key_node(key)?.security;
        if self.sk_descriptor(cur)? == sd {
            return Ok(());
        }
        let mut target = None;
        for sk in self.sk_ring()? {
            if self.sk_descriptor(sk)? == sd {
                target = Some(sk);
                break;
            }
        }
        let target = match target {
            Some(t) => t,
            None => self.sk_insert_after(cur, sd)?,
        };
        self.sk_add_ref(target, 1)?;
        put_u32(self.cell_mut(key.0)?, nk::SECURITY, target);
        self.sk_release(cur)?;
        self.modified = true;
        Ok(())
    }

    /// Replaces the descriptor stored in sk cell `sk` by `sd`: in place when
    /// the cell is large enough, otherwise in a new cell that takes over the
    /// ring position and every key that referenced the old one (`users`).
    pub(crate) fn sk_replace(&mut self, sk: u32, sd: &[u8], users: &[KeyId]) -> Result<u32> {
        let room = self.cell(sk)?.len();
        if off::DESCRIPTOR + sd.len() <= room {
            let p = self.cell_mut(sk)?;
            put_u32(p, off::LENGTH, sd.len() as u32);
            p[off::DESCRIPTOR..off::DESCRIPTOR + sd.len()].copy_from_slice(sd);
            p[off::DESCRIPTOR + sd.len()..].fill(0);
            self.modified = true;
            return Ok(sk);
        }
        let next = self.sk_field(sk, off::FLINK)?;
        let prev = self.sk_field(sk, off::BLINK)?;
        let refs = self.sk_field(sk, off::REFCOUNT)?;
        let single = next == sk;
        let mut rec = vec![0u8; off::DESCRIPTOR + sd.len()];
        rec[0..2].copy_from_slice(b"sk");
        put_u32(&mut rec, off::REFCOUNT, refs);
        put_u32(&mut rec, off::LENGTH, sd.len() as u32);
        rec[off::DESCRIPTOR..].copy_from_slice(sd);
        let idx = self.alloc_with(&rec)?;
        let (next, prev) = if single { (idx, idx) } else { (next, prev) };
        {
            let p = self.cell_mut(idx)?;
            put_u32(p, off::FLINK, next);
            put_u32(p, off::BLINK, prev);
        }
        if !single {
            put_u32(self.cell_mut(prev)?, off::FLINK, idx);
            put_u32(self.cell_mut(next)?, off::BLINK, idx);
        }
        for k in users {
            put_u32(self.cell_mut(k.0)?, nk::SECURITY, idx);
        }
        self.free_cell(sk)?;
        self.modified = true;
        Ok(idx)
    }
}
