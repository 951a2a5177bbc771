//! Reading keys, values, classes and security descriptors.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::base_block::OFF_ROOT;
use crate::bytes::{u16_at, u32_at};
use crate::cells::{NIL, file_offset};
use crate::error::{HiveError, Result};
use crate::hive::Hive;
use crate::key_node::{KEY_SYM_LINK, KeyNode};
use crate::names::{cmp_names, names_equal, to_display, to_units};
use crate::value_node::{BIG_DATA_SEGMENT, ValueNode};

/// A key, identified by the index of its `nk` cell. Valid until the next
/// edit that moves the key (renames may move it); look keys up again by path
/// after editing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub(crate) u32);

impl KeyId {
    /// The cell index of the key's `nk` record.
    pub fn cell_index(self) -> u32 {
        self.0
    }
}

/// A key's own information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Name (unpaired surrogates replaced; see `name_units` for the exact form).
    pub name: String,
    /// Name as stored, in UTF-16 code units.
    pub name_units: Vec<u16>,
    /// Class data, if any.
    pub class: Option<Vec<u8>>,
    /// LastWriteTime (FILETIME).
    pub last_written: u64,
    /// Key flags (`nk` +2).
    pub flags: u16,
    /// Number of subkeys.
    pub subkey_count: u32,
    /// Number of values.
    pub value_count: u32,
}

impl KeyInfo {
    /// Whether this is a symbolic-link key.
    pub fn is_symlink(&self) -> bool {
        self.flags & KEY_SYM_LINK != 0
    }
}

/// A value with its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// Name ("" for the default value).
    pub name: String,
    /// Name as stored, in UTF-16 code units.
    pub name_units: Vec<u16>,
    /// Type number (REG_SZ = 1, ...; any u32 is possible).
    pub value_type: u32,
    /// Raw data bytes.
    pub data: Vec<u8>,
}

/// Splits a key path on backslashes, ignoring empty components.
pub fn split_path(path: &str) -> impl Iterator<Item = &str> {
    path.split('\\').filter(|c| !c.is_empty())
}

impl Hive {
    /// The root key.
    pub fn root(&self) -> KeyId {
        KeyId(u32_at(&self.data, OFF_ROOT).unwrap_or(NIL))
    }

    pub(crate) fn key_node(&self, key: KeyId) -> Result<KeyNode> {
        let p = self.cell(key.0)?;
        KeyNode::parse(p).ok_or_else(|| {
            HiveError::corrupt(
                &self.name,
                file_offset(key.0) + 4,
                "key node",
                "an nk record whose name fits its cell",
                format!("{:02x?}", &p[..p.len().min(4)]),
            )
        })
    }

    /// Information about a key.
    pub fn key_info(&self, key: KeyId) -> Result<KeyInfo> {
        let nk = self.key_node(key)?;
        let class = if nk.class_len > 0 && nk.class != NIL {
            let c = self.cell(nk.class)?;
            let n = (nk.class_len as usize).min(c.len());
            Some(c[..n].to_vec())
        } else {
            None
        };
        Ok(KeyInfo {
            name: to_display(&nk.name),
            name_units: nk.name,
            class,
            last_written: nk.timestamp,
            flags: nk.flags,
            subkey_count: nk.subkey_count,
            value_count: nk.value_count,
        })
    }

    /// The subkeys of a key, in stored (sorted) order.
    pub fn subkeys(&self, key: KeyId) -> Result<Vec<KeyId>> {
        let nk = self.key_node(key)?;
        Ok(self
            .read_subkey_list(nk.subkey_list, nk.subkey_count)?
            .into_iter()
            .map(KeyId)
            .collect())
    }

    /// The subkey of `key` named `name` (case-insensitive as Windows compares).
    pub fn subkey(&self, key: KeyId, name: &str) -> Result<Option<KeyId>> {
        self.subkey_units(key, &to_units(name))
    }

    pub(crate) fn subkey_units(&self, key: KeyId, name: &[u16]) -> Result<Option<KeyId>> {
        let children = self.subkeys(key)?;
        // Binary search first (lists are sorted); fall back to a scan so that a
        // list sorted by another rule still finds its keys.
        let mut lo = 0usize;
        let mut hi = children.len();
        while lo < hi {
            let mid = (lo + hi) / 2;
            let n = self.key_node(children[mid])?.name;
            match cmp_names(&n, name) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(Some(children[mid])),
            }
        }
        for c in children {
            if names_equal(&self.key_node(c)?.name, name) {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Opens a key by path relative to the root (`a\b\c`; empty = root).
    pub fn open_key(&self, path: &str) -> Result<Option<KeyId>> {
        let mut k = self.root();
        for comp in split_path(path) {
            match self.subkey(k, comp)? {
                Some(c) => k = c,
                None => return Ok(None),
            }
        }
        Ok(Some(k))
    }

    /// Like [`Hive::open_key`] but a missing key is an error.
    pub fn key(&self, path: &str) -> Result<KeyId> {
        self.open_key(path)?.ok_or_else(|| HiveError::KeyNotFound {
            file: self.name.clone(),
            path: path.to_string(),
        })
    }

    /// The parent of a key (None for the root).
    pub fn parent(&self, key: KeyId) -> Result<Option<KeyId>> {
        if key == self.root() {
            return Ok(None);
        }
        Ok(Some(KeyId(self.key_node(key)?.parent)))
    }

    /// The path of a key from the root (root = "").
    pub fn key_path(&self, key: KeyId) -> Result<String> {
        let mut parts = Vec::new();
        let mut k = key;
        let root = self.root();
        while k != root {
            let nk = self.key_node(k)?;
            parts.push(to_display(&nk.name));
            if parts.len() > 512 {
                return Err(HiveError::corrupt(
                    &self.name,
                    file_offset(key.0),
                    "key depth",
                    "at most 512 levels to the root",
                    "a longer parent chain (cycle?)",
                ));
            }
            k = KeyId(nk.parent);
        }
        parts.reverse();
        Ok(parts.join("\\"))
    }

    pub(crate) fn value_indexes(&self, key: KeyId) -> Result<Vec<u32>> {
        let nk = self.key_node(key)?;
        if nk.value_count == 0 || nk.value_list == NIL {
            return Ok(Vec::new());
        }
        let p = self.cell(nk.value_list)?;
        let n = nk.value_count as usize;
        if n * 4 > p.len() {
            return Err(HiveError::corrupt(
                &self.name,
                file_offset(nk.value_list),
                "value list size",
                format!("room for {n} entries"),
                format!("{} bytes of payload", p.len()),
            ));
        }
        Ok((0..n).map(|i| u32_at(p, i * 4).unwrap_or(NIL)).collect())
    }

    pub(crate) fn value_node(&self, vk: u32) -> Result<ValueNode> {
        let p = self.cell(vk)?;
        ValueNode::parse(p).ok_or_else(|| {
            HiveError::corrupt(
                &self.name,
                file_offset(vk) + 4,
                "value record",
                "a vk record whose name fits its cell",
                format!("{:02x?}", &p[..p.len().min(4)]),
            )
        })
    }

    /// Reads the data of a value record.
    pub(crate) fn value_data(&self, vk: &ValueNode) -> Result<Vec<u8>> {
        Ok(self.value_bytes(vk)?.into_owned())
    }

    /// Reads the data of a value record, borrowing it when it lies in one cell.
    pub(crate) fn value_bytes(&self, vk: &ValueNode) -> Result<Cow<'_, [u8]>> {
        let len = vk.data_len() as usize;
        if vk.is_inline() {
            let bytes = vk.data.to_le_bytes();
            return Ok(Cow::Owned(bytes[..len.min(4)].to_vec()));
        }
        if len == 0 {
            return Ok(Cow::Borrowed(&[]));
        }
        let p = self.cell(vk.data)?;
        if self.minor >= 4 && len > BIG_DATA_SEGMENT && p.get(0..2) == Some(b"db") {
            return self.big_data(vk.data, p, len).map(Cow::Owned);
        }
        if p.len() < len {
            return Err(HiveError::corrupt(
                &self.name,
                file_offset(vk.data),
                "value data cell",
                format!("at least {len} bytes of payload"),
                format!("{} bytes", p.len()),
            ));
        }
        Ok(Cow::Borrowed(&p[..len]))
    }

    fn big_data(&self, db: u32, p: &[u8], len: usize) -> Result<Vec<u8>> {
        let count = u16_at(p, 2).unwrap_or(0) as usize;
        let list = u32_at(p, 4).unwrap_or(NIL);
        if count != len.div_ceil(BIG_DATA_SEGMENT) {
            return Err(HiveError::corrupt(
                &self.name,
                file_offset(db) + 6,
                "big data segment count",
                format!("{} for {len} bytes", len.div_ceil(BIG_DATA_SEGMENT)),
                count.to_string(),
            ));
        }
        let segs = self.cell(list)?;
        if segs.len() < count * 4 {
            return Err(HiveError::corrupt(
                &self.name,
                file_offset(list),
                "big data segment list size",
                format!("room for {count} entries"),
                format!("{} bytes", segs.len()),
            ));
        }
        let mut out = Vec::with_capacity(len);
        for i in 0..count {
            let s = u32_at(segs, i * 4).unwrap_or(NIL);
            let sp = self.cell(s)?;
            let want = (len - out.len()).min(BIG_DATA_SEGMENT);
            if sp.len() < want {
                return Err(HiveError::corrupt(
                    &self.name,
                    file_offset(s),
                    "big data segment",
                    format!("at least {want} bytes"),
                    format!("{} bytes", sp.len()),
                ));
            }
            out.extend_from_slice(&sp[..want]);
        }
        Ok(out)
    }

    /// All values of a key, with their data, in stored order.
    pub fn values(&self, key: KeyId) -> Result<Vec<Value>> {
        self.value_indexes(key)?
            .into_iter()
            .map(|vi| {
                let vk = self.value_node(vi)?;
                let data = self.value_data(&vk)?;
                Ok(Value {
                    name: to_display(&vk.name),
                    name_units: vk.name,
                    value_type: vk.value_type,
                    data,
                })
            })
            .collect()
    }

    /// One value of a key by name ("" = default value), case-insensitive.
    pub fn value(&self, key: KeyId, name: &str) -> Result<Option<Value>> {
        let units = to_units(name);
        Ok(self.find_value(key, &units)?.map(|(_, _, v)| v))
    }

    /// Finds a value: (position in the list, vk index, value).
    pub(crate) fn find_value(
        &self,
        key: KeyId,
        name: &[u16],
    ) -> Result<Option<(usize, u32, Value)>> {
        for (i, vi) in self.value_indexes(key)?.into_iter().enumerate() {
            let vk = self.value_node(vi)?;
            if names_equal(&vk.name, name) {
                let data = self.value_data(&vk)?;
                return Ok(Some((
                    i,
                    vi,
                    Value {
                        name: to_display(&vk.name),
                        name_units: vk.name,
                        value_type: vk.value_type,
                        data,
                    },
                )));
            }
        }
        Ok(None)
    }

    /// The self-relative security descriptor of a key.
    pub fn security_descriptor(&self, key: KeyId) -> Result<Vec<u8>> {
        let sk = self.key_node(key)?.security;
        Ok(self.sk_descriptor(sk)?.to_vec())
    }

    pub(crate) fn sk_descriptor(&self, sk: u32) -> Result<&[u8]> {
        let p = self.cell(sk)?;
        let len = u32_at(p, 16).unwrap_or(u32::MAX) as usize;
        if p.get(0..2) != Some(b"sk") || 20 + len > p.len() {
            return Err(HiveError::corrupt(
                &self.name,
                file_offset(sk) + 4,
                "security cell",
                "an sk record whose descriptor fits its cell",
                format!("{:02x?}, length {len}", &p[..p.len().min(2)]),
            ));
        }
        Ok(&p[20..20 + len])
    }

    /// Visits every key depth-first (parents before children) with its path.
    /// Stops at the first error. Cycles and depth beyond 512 are errors.
    pub fn walk(&self, f: impl FnMut(&str, KeyId) -> Result<()>) -> Result<()> {
        self.walk_from(self.root(), String::new(), f)
    }

    /// Visits `start` and every key below it depth-first (parents before
    /// children); `start` is given the path `base`, its subkeys
    /// `base\name`. A key reached twice (a subkey list that loops back to
    /// an ancestor or lists a key twice, as in a mutated hive) or a tree
    /// deeper than 512 levels is an error, found before the work grows:
    /// every key is visited at most once.
    pub fn walk_from(
        &self,
        start: KeyId,
        base: String,
        mut f: impl FnMut(&str, KeyId) -> Result<()>,
    ) -> Result<()> {
        let mut stack = vec![(base, start, 0usize)];
        let mut seen = std::collections::HashSet::new();
        while let Some((path, k, depth)) = stack.pop() {
            if !seen.insert(k) || depth > 512 {
                return Err(HiveError::corrupt(
                    &self.name,
                    file_offset(k.0),
                    "key tree",
                    "a tree (no key reachable twice, depth at most 512)",
                    "a key reached twice or too deep",
                ));
            }
            f(&path, k)?;
            let kids = self.subkeys(k)?;
            for c in kids.into_iter().rev() {
                let name = to_display(&self.key_node(c)?.name);
                let p = if path.is_empty() {
                    name
                } else {
                    format!("{path}\\{name}")
                };
                stack.push((p, c, depth + 1));
            }
        }
        Ok(())
    }
}
