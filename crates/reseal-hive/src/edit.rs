//! Editing keys and values in place: create, delete, rename keys; set and
//! delete values. Every edit keeps subkey lists sorted and hashed, counts,
//! Max* fields, security reference counts and timestamps exact.

use std::collections::HashSet;

use crate::bytes::{put_u16, put_u32, put_u64, u16_at, u32_at};
use crate::cells::NIL;
use crate::error::{HiveError, Result};
use crate::hive::Hive;
use crate::key_node::{KEY_COMP_NAME, KEY_NO_DELETE, off as nk};
use crate::names::{cmp_names, encode_name, to_units};
use crate::read::{KeyId, split_path};
use crate::value_node::{
    BIG_DATA_SEGMENT, DATA_INLINE, VALUE_COMP_NAME, ValueNode, off as vk, uses_big_data,
};

/// Longest key name accepted for new keys, in UTF-16 code units.
pub const MAX_KEY_NAME: usize = 255;
/// Longest value name, in UTF-16 code units.
pub const MAX_VALUE_NAME: usize = 16383;

fn check_key_name(name: &str, units: &[u16]) -> Result<()> {
    let bad = |reason| {
        Err(HiveError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if units.is_empty() {
        return bad("a key name must not be empty");
    }
    if units.len() > MAX_KEY_NAME {
        return bad("a key name is at most 255 characters");
    }
    if units.contains(&u16::from(b'\\')) {
        return bad("a key name must not contain a backslash");
    }
    Ok(())
}

impl Hive {
    fn touch(&mut self, key: KeyId) -> Result<()> {
        let now = crate::time::now_filetime();
        let p = self.cell_mut(key.0)?;
        put_u64(p, nk::TIMESTAMP, now);
        put_u32(p, nk::VOLATILE_COUNT, 0);
        put_u32(p, nk::VOLATILE_LIST, NIL);
        self.modified = true;
        Ok(())
    }

    /// Raises a Max* field of a key to at least `v` (only the low 16 bits
    /// for MaxNameLen, whose high bits carry flags).
    fn raise_max(&mut self, key: KeyId, field: usize, v: u32) -> Result<()> {
        let p = self.cell_mut(key.0)?;
        if field == nk::MAX_NAME {
            let cur = u16_at(p, field).unwrap_or(0);
            let v = v.min(0xFFFF) as u16;
            if v > cur {
                put_u16(p, field, v);
            }
        } else if v > u32_at(p, field).unwrap_or(0) {
            put_u32(p, field, v);
        }
        Ok(())
    }

    /// Replaces the subkey list of `parent` with `children` (sorted).
    fn set_children(&mut self, parent: KeyId, children: &[u32]) -> Result<()> {
        let old = self.key_node(parent)?.subkey_list;
        self.free_subkey_list(old)?;
        let list = self.write_subkey_list(children)?;
        let p = self.cell_mut(parent.0)?;
        put_u32(p, nk::SUBKEY_LIST, list);
        put_u32(p, nk::SUBKEY_COUNT, children.len() as u32);
        if children.is_empty() {
            put_u16(p, nk::MAX_NAME, 0);
            put_u32(p, nk::MAX_CLASS, 0);
        }
        Ok(())
    }

    fn insert_child(&mut self, parent: KeyId, child: u32) -> Result<()> {
        let name = self.key_node(KeyId(child))?.name;
        let class_len = u32::from(self.key_node(KeyId(child))?.class_len);
        let mut kids: Vec<u32> = self.subkeys(parent)?.into_iter().map(|k| k.0).collect();
        let mut names = Vec::with_capacity(kids.len());
        for &k in &kids {
            names.push(self.key_node(KeyId(k))?.name);
        }
        let pos = names.partition_point(|n| cmp_names(n, &name).is_lt());
        kids.insert(pos, child);
        self.set_children(parent, &kids)?;
        self.raise_max(parent, nk::MAX_NAME, 2 * name.len() as u32)?;
        self.raise_max(parent, nk::MAX_CLASS, class_len)
    }

    fn remove_child(&mut self, parent: KeyId, child: u32) -> Result<()> {
        let mut kids: Vec<u32> = self.subkeys(parent)?.into_iter().map(|k| k.0).collect();
        kids.retain(|&k| k != child);
        self.set_children(parent, &kids)
    }

    /// Creates the key at `path` and any missing parents; returns it. An
    /// existing key is returned as it is. New keys share their parent's
    /// security descriptor.
    pub fn create_key(&mut self, path: &str) -> Result<KeyId> {
        self.ensure_writable()?;
        let mut k = self.root();
        for comp in split_path(path) {
            let units = to_units(comp);
            check_key_name(comp, &units)?;
            k = match self.subkey_units(k, &units)? {
                Some(c) => c,
                None => self.new_child(k, &units)?,
            };
        }
        Ok(k)
    }

    fn new_child(&mut self, parent: KeyId, name: &[u16]) -> Result<KeyId> {
        let pnode = self.key_node(parent)?;
        let (raw, compressed) = encode_name(name);
        let mut rec = vec![0u8; nk::NAME + raw.len()];
        rec[0..2].copy_from_slice(b"nk");
        put_u16(
            &mut rec,
            nk::FLAGS,
            if compressed { KEY_COMP_NAME } else { 0 },
        );
        put_u64(&mut rec, nk::TIMESTAMP, crate::time::now_filetime());
        put_u32(&mut rec, nk::PARENT, parent.0);
        for f in [
            nk::SUBKEY_LIST,
            nk::VOLATILE_LIST,
            nk::VALUE_LIST,
            nk::CLASS,
        ] {
            put_u32(&mut rec, f, NIL);
        }
        put_u32(&mut rec, nk::SECURITY, pnode.security);
        put_u16(&mut rec, nk::NAME_LEN, raw.len() as u16);
        rec[nk::NAME..].copy_from_slice(&raw);
        let idx = self.alloc_with(&rec)?;
        self.sk_add_ref(pnode.security, 1)?;
        self.insert_child(parent, idx)?;
        self.touch(parent)?;
        Ok(KeyId(idx))
    }

    /// Deletes the key at `path` with its whole subtree. The root and keys
    /// flagged KEY_NO_DELETE are refused.
    pub fn delete_key(&mut self, path: &str) -> Result<()> {
        self.ensure_writable()?;
        let key = self.key(path)?;
        if key == self.root() {
            return Err(HiveError::Refused {
                file: self.name.clone(),
                path: path.to_string(),
                reason: "the root key cannot be deleted".into(),
            });
        }
        let node = self.key_node(key)?;
        if node.flags & KEY_NO_DELETE != 0 {
            return Err(HiveError::Refused {
                file: self.name.clone(),
                path: path.to_string(),
                reason: "the key is flagged KEY_NO_DELETE".into(),
            });
        }
        let parent = KeyId(node.parent);
        let mut order = Vec::new();
        let mut stack = vec![key];
        let mut seen = HashSet::new();
        while let Some(k) = stack.pop() {
            if !seen.insert(k) {
                continue;
            }
            order.push(k);
            stack.extend(self.subkeys(k)?);
        }
        for k in order.into_iter().rev() {
            self.free_key(k)?;
        }
        self.remove_child(parent, key.0)?;
        self.touch(parent)
    }

    /// Frees one key's own cells (values, class, lists, nk) and releases its
    /// security cell. Its subkeys must already be gone.
    fn free_key(&mut self, key: KeyId) -> Result<()> {
        let node = self.key_node(key)?;
        for vi in self.value_indexes(key)? {
            let v = self.value_node(vi)?;
            self.free_value_data(&v)?;
            self.free_cell(vi)?;
        }
        self.free_cell(node.value_list)?;
        if node.class_len > 0 || node.class != NIL {
            self.free_cell(node.class)?;
        }
        self.free_subkey_list(node.subkey_list)?;
        self.sk_release(node.security)?;
        self.free_cell(key.0)
    }

    /// Renames the key at `path` to `new_name`, keeping its subtree, values
    /// and security. The parent's list is re-sorted and re-hashed.
    pub fn rename_key(&mut self, path: &str, new_name: &str) -> Result<KeyId> {
        self.ensure_writable()?;
        let key = self.key(path)?;
        self.rename_key_id(key, new_name)
    }

    pub(crate) fn rename_key_id(&mut self, key: KeyId, new_name: &str) -> Result<KeyId> {
        let units = to_units(new_name);
        check_key_name(new_name, &units)?;
        let root = self.root();
        let node = self.key_node(key)?;
        let parent = KeyId(node.parent);
        if key != root {
            if let Some(other) = self.subkey_units(parent, &units)? {
                if other != key {
                    return Err(HiveError::KeyExists {
                        file: self.name.clone(),
                        path: format!("{}\\{new_name}", self.key_path(parent)?),
                    });
                }
            }
        }
        let (raw, compressed) = encode_name(&units);
        let cell_len = self.cell(key.0)?.len();
        let new_key = if nk::NAME + raw.len() <= cell_len {
            key
        } else {
            let mut rec = self.cell(key.0)?[..nk::NAME].to_vec();
            rec.resize(nk::NAME + raw.len(), 0);
            let idx = self.alloc_with(&rec)?;
            self.free_cell(key.0)?;
            KeyId(idx)
        };
        {
            let p = self.cell_mut(new_key.0)?;
            write_name(
                p,
                nk::FLAGS,
                KEY_COMP_NAME,
                compressed,
                nk::NAME_LEN,
                nk::NAME,
                &raw,
            );
        }
        if new_key != key {
            for c in self.subkeys(new_key)? {
                put_u32(self.cell_mut(c.0)?, nk::PARENT, new_key.0);
            }
            if key == root {
                put_u32(&mut self.data, crate::base_block::OFF_ROOT, new_key.0);
            }
        }
        self.touch(new_key)?;
        if key != root {
            self.remove_child(parent, key.0)?;
            self.insert_child(parent, new_key.0)?;
            self.touch(parent)?;
        }
        Ok(new_key)
    }

    /// Sets (creates or replaces) a value of the key at `path` ("" = the
    /// default value). Any type number and any size the hive version allows.
    pub fn set_value(
        &mut self,
        path: &str,
        name: &str,
        value_type: u32,
        data: &[u8],
    ) -> Result<()> {
        self.ensure_writable()?;
        let key = self.key(path)?;
        self.set_value_id(key, name, value_type, data)
    }

    /// Sets a value of a key given by id (see [`Hive::set_value`]).
    pub fn set_value_id(
        &mut self,
        key: KeyId,
        name: &str,
        value_type: u32,
        data: &[u8],
    ) -> Result<()> {
        self.ensure_writable()?;
        let units = to_units(name);
        self.set_value_units(key, &units, value_type, data)
    }

    pub(crate) fn set_value_units(
        &mut self,
        key: KeyId,
        units: &[u16],
        value_type: u32,
        data: &[u8],
    ) -> Result<()> {
        if units.len() > MAX_VALUE_NAME {
            return Err(HiveError::InvalidName {
                name: String::from_utf16_lossy(units),
                reason: "a value name is at most 16383 characters",
            });
        }
        if data.len() > 0x7FFF_FFFF || (self.minor >= 4 && data.len() > BIG_DATA_SEGMENT * 0xFFFF) {
            return Err(HiveError::InvalidData {
                name: String::from_utf16_lossy(units),
                reason: format!(
                    "{} bytes is more than a registry value can hold",
                    data.len()
                ),
            });
        }
        match self.find_value(key, units)? {
            Some((_, vi, _)) => {
                let old = self.value_node(vi)?;
                let (len_raw, field) = self.store_data_reusing(&old, data)?;
                let p = self.cell_mut(vi)?;
                put_u32(p, vk::DATA_LEN, len_raw);
                put_u32(p, vk::DATA, field);
                put_u32(p, vk::TYPE, value_type);
            }
            None => {
                let (len_raw, field) = self.store_data(data)?;
                let (raw, compressed) = encode_name(units);
                let mut rec = vec![0u8; vk::NAME + raw.len()];
                rec[0..2].copy_from_slice(b"vk");
                put_u16(&mut rec, vk::NAME_LEN, raw.len() as u16);
                put_u32(&mut rec, vk::DATA_LEN, len_raw);
                put_u32(&mut rec, vk::DATA, field);
                put_u32(&mut rec, vk::TYPE, value_type);
                let flags = if compressed && !raw.is_empty() {
                    VALUE_COMP_NAME
                } else {
                    0
                };
                put_u16(&mut rec, vk::FLAGS, flags);
                rec[vk::NAME..].copy_from_slice(&raw);
                let vi = self.alloc_with(&rec)?;
                self.append_value(key, vi)?;
            }
        }
        self.raise_max(key, nk::MAX_VALUE_NAME, 2 * units.len() as u32)?;
        self.raise_max(key, nk::MAX_VALUE_DATA, data.len() as u32)?;
        self.touch(key)
    }

    /// Replaces the data of the value record `vi` of `key`.
    pub(crate) fn replace_value_data(
        &mut self,
        key: KeyId,
        vi: u32,
        value_type: u32,
        data: &[u8],
    ) -> Result<()> {
        let old = self.value_node(vi)?;
        let (len_raw, field) = self.store_data_reusing(&old, data)?;
        let p = self.cell_mut(vi)?;
        put_u32(p, vk::DATA_LEN, len_raw);
        put_u32(p, vk::DATA, field);
        put_u32(p, vk::TYPE, value_type);
        self.raise_max(key, nk::MAX_VALUE_DATA, data.len() as u32)?;
        self.touch(key)
    }

    fn append_value(&mut self, key: KeyId, vi: u32) -> Result<()> {
        let node = self.key_node(key)?;
        let count = node.value_count as usize;
        let list = node.value_list;
        let room = if list == NIL {
            0
        } else {
            self.cell(list)?.len() / 4
        };
        let list = if count < room {
            list
        } else {
            let mut entries = vec![0u8; 4 * (count + 1)];
            if list != NIL {
                entries[..4 * count].copy_from_slice(&self.cell(list)?[..4 * count]);
            }
            let new = self.alloc_with(&entries)?;
            self.free_cell(list)?;
            new
        };
        put_u32(self.cell_mut(list)?, 4 * count, vi);
        let p = self.cell_mut(key.0)?;
        put_u32(p, nk::VALUE_LIST, list);
        put_u32(p, nk::VALUE_COUNT, (count + 1) as u32);
        Ok(())
    }

    /// Stores value data and returns (DataLength field, Data field).
    fn store_data(&mut self, data: &[u8]) -> Result<(u32, u32)> {
        let len = data.len();
        if len <= 4 {
            let mut b = [0u8; 4];
            b[..len].copy_from_slice(data);
            return Ok((len as u32 | DATA_INLINE, u32::from_le_bytes(b)));
        }
        if uses_big_data(self.minor, len) {
            let segs: Vec<&[u8]> = data.chunks(BIG_DATA_SEGMENT).collect();
            let mut list = vec![0u8; 4 * segs.len()];
            for (i, s) in segs.iter().enumerate() {
                let idx = self.alloc_with(s)?;
                put_u32(&mut list, 4 * i, idx);
            }
            let list_idx = self.alloc_with(&list)?;
            let mut db = [0u8; 8];
            db[0..2].copy_from_slice(b"db");
            put_u16(&mut db, 2, segs.len() as u16);
            put_u32(&mut db, 4, list_idx);
            return Ok((len as u32, self.alloc_with(&db)?));
        }
        Ok((len as u32, self.alloc_with(data)?))
    }

    /// Like `store_data`, but reuses the old data cell when the new data fits.
    fn store_data_reusing(&mut self, old: &ValueNode, data: &[u8]) -> Result<(u32, u32)> {
        let len = data.len();
        let old_plain = !old.is_inline() && old.data_len() > 0 && !self.is_big_data_cell(old)?;
        if old_plain && len > 4 && !uses_big_data(self.minor, len) {
            let p = self.cell_mut(old.data)?;
            if p.len() >= len {
                p[..len].copy_from_slice(data);
                p[len..].fill(0);
                return Ok((len as u32, old.data));
            }
        }
        self.free_value_data(old)?;
        self.store_data(data)
    }

    fn is_big_data_cell(&self, v: &ValueNode) -> Result<bool> {
        Ok(!v.is_inline()
            && uses_big_data(self.minor, v.data_len() as usize)
            && self.cell(v.data)?.get(0..2) == Some(b"db"))
    }

    /// Frees the cells holding a value's data.
    fn free_value_data(&mut self, v: &ValueNode) -> Result<()> {
        if v.is_inline() || v.data_len() == 0 || v.data == NIL {
            return Ok(());
        }
        if self.is_big_data_cell(v)? {
            let p = self.cell(v.data)?;
            let count = u16_at(p, 2).unwrap_or(0) as usize;
            let list = u32_at(p, 4).unwrap_or(NIL);
            let segs: Vec<u32> = {
                let l = self.cell(list)?;
                (0..count).filter_map(|i| u32_at(l, 4 * i)).collect()
            };
            for s in segs {
                self.free_cell(s)?;
            }
            self.free_cell(list)?;
        }
        self.free_cell(v.data)
    }

    /// Deletes a value of the key at `path` ("" = the default value).
    pub fn delete_value(&mut self, path: &str, name: &str) -> Result<()> {
        self.ensure_writable()?;
        let key = self.key(path)?;
        let units = to_units(name);
        let Some((pos, vi, _)) = self.find_value(key, &units)? else {
            return Err(HiveError::ValueNotFound {
                file: self.name.clone(),
                path: path.to_string(),
                name: name.to_string(),
            });
        };
        self.delete_value_at(key, pos, vi)
    }

    pub(crate) fn delete_value_at(&mut self, key: KeyId, pos: usize, vi: u32) -> Result<()> {
        let v = self.value_node(vi)?;
        self.free_value_data(&v)?;
        self.free_cell(vi)?;
        let node = self.key_node(key)?;
        let count = node.value_count as usize;
        if count <= 1 {
            self.free_cell(node.value_list)?;
            let p = self.cell_mut(key.0)?;
            put_u32(p, nk::VALUE_LIST, NIL);
            put_u32(p, nk::VALUE_COUNT, 0);
        } else {
            let l = self.cell_mut(node.value_list)?;
            l.copy_within(4 * (pos + 1)..4 * count, 4 * pos);
            put_u32(l, 4 * (count - 1), 0);
            put_u32(self.cell_mut(key.0)?, nk::VALUE_COUNT, (count - 1) as u32);
        }
        self.touch(key)
    }

    /// Renames a value in place or by moving its record (data kept).
    pub(crate) fn rename_value(
        &mut self,
        key: KeyId,
        pos: usize,
        vi: u32,
        new: &[u16],
    ) -> Result<u32> {
        if let Some((_, other, _)) = self.find_value(key, new)? {
            if other != vi {
                return Err(HiveError::InvalidName {
                    name: String::from_utf16_lossy(new),
                    reason: "another value of the key already has this name",
                });
            }
        }
        let (raw, compressed) = encode_name(new);
        let cell_len = self.cell(vi)?.len();
        let target = if vk::NAME + raw.len() <= cell_len {
            vi
        } else {
            let mut rec = self.cell(vi)?[..vk::NAME].to_vec();
            rec.resize(vk::NAME + raw.len(), 0);
            let idx = self.alloc_with(&rec)?;
            self.free_cell(vi)?;
            let list = self.key_node(key)?.value_list;
            put_u32(self.cell_mut(list)?, 4 * pos, idx);
            idx
        };
        let p = self.cell_mut(target)?;
        let comp = compressed && !raw.is_empty();
        write_name(
            p,
            vk::FLAGS,
            VALUE_COMP_NAME,
            comp,
            vk::NAME_LEN,
            vk::NAME,
            &raw,
        );
        self.raise_max(key, nk::MAX_VALUE_NAME, 2 * new.len() as u32)?;
        self.touch(key)?;
        Ok(target)
    }

    /// Sets the class data of a key (None removes it).
    pub fn set_class(&mut self, path: &str, class: Option<&[u8]>) -> Result<()> {
        self.ensure_writable()?;
        let key = self.key(path)?;
        let node = self.key_node(key)?;
        if node.class != NIL {
            self.free_cell(node.class)?;
        }
        let (idx, len) = match class {
            Some(c) if !c.is_empty() => {
                if c.len() > 0xFFFF {
                    return Err(HiveError::InvalidData {
                        name: "(class)".into(),
                        reason: "a class name is at most 65535 bytes".into(),
                    });
                }
                (self.alloc_with(c)?, c.len())
            }
            _ => (NIL, 0),
        };
        let p = self.cell_mut(key.0)?;
        put_u32(p, nk::CLASS, idx);
        put_u16(p, nk::CLASS_LEN, len as u16);
        if key != self.root() {
            self.raise_max(KeyId(node.parent), nk::MAX_CLASS, len as u32)?;
        }
        self.touch(key)
    }
}

/// Stores a name into an `nk` or `vk` record in place: the compressed-name
/// flag, the length field, the bytes, and zeroes after them (slack scrubbed).
fn write_name(
    p: &mut [u8],
    flags_at: usize,
    comp_flag: u16,
    compressed: bool,
    len_at: usize,
    name_at: usize,
    raw: &[u8],
) {
    let flags = u16_at(p, flags_at).unwrap_or(0);
    let flags = if compressed {
        flags | comp_flag
    } else {
        flags & !comp_flag
    };
    put_u16(p, flags_at, flags);
    put_u16(p, len_at, raw.len() as u16);
    p[name_at..name_at + raw.len()].copy_from_slice(raw);
    p[name_at + raw.len()..].fill(0);
}
