//! Shared fuzzing harness for the hive engine.
//!
//! This file is the library of the `reseal-hive-fuzz` crate and is also
//! compiled into the stable-Rust integration tests `tests/fuzz_smoke.rs` and
//! `tests/prop_edits.rs` (through `#[path]`), so that the same exercise code
//! and the same reference model run under libFuzzer, under the fixed-seed
//! smoke test and under proptest. It depends on `reseal_hive` and `std` only.
//!
//! * [`read_everything`] / [`open_read`] / [`replay`] / [`check_bytes`] /
//!   [`parse_reg_bytes`] feed untrusted bytes to the engine; they must never
//!   panic, whatever the input.
//! * [`Session`] applies [`Op`]s to a [`Hive`] and to an in-memory [`Model`]
//!   at the same time, asserts that every edit succeeds or fails as the model
//!   predicts and that the structural checker stays clean, and
//!   [`Session::verify`] reopens the saved bytes and compares them with the
//!   model.

use std::collections::BTreeMap;

use reseal_hive::check::check_image;
use reseal_hive::log::LogFile;
use reseal_hive::names::upcase;
use reseal_hive::regfile::{RegVersion, parse_reg};
use reseal_hive::{Hive, HiveError, KeyId, Sid, default_descriptor};

/// Most keys visited by [`read_everything`] before it stops.
const READ_BUDGET: usize = 20_000;

/// Reads everything reachable in `h` through the public API, ignoring
/// errors: every key's information, path, values (and each value again by
/// name), security descriptor, subkey lookups by name, the dump and its
/// text, the `.reg` export (parsed back), the structural check and SID search.
pub fn read_everything(h: &Hive) {
    let root = h.root();
    let _ = h.key_info(root);
    let mut budget = READ_BUDGET;
    let _ = h.walk(|path, k| {
        budget = budget.saturating_sub(1);
        if budget == 0 {
            return Err(HiveError::corrupt(
                "fuzz",
                0,
                "budget",
                "fewer keys",
                "more",
            ));
        }
        let _ = h.key_info(k);
        let _ = h.key_path(k);
        let _ = h.parent(k);
        if let Ok(values) = h.values(k) {
            for v in values.iter().take(8) {
                let _ = h.value(k, &v.name);
            }
        }
        let _ = h.security_descriptor(k);
        let _ = h.open_key(path);
        if let Ok(kids) = h.subkeys(k) {
            for c in kids.iter().take(4) {
                if let Ok(info) = h.key_info(*c) {
                    let _ = h.subkey(k, &info.name);
                }
            }
        }
        Ok(())
    });
    if budget == 0 {
        return;
    }
    if let Ok(d) = h.dump() {
        let _ = d.to_text();
    }
    if let Ok(w) = h.export_reg("", "", RegVersion::V5) {
        let text = w.finish_string();
        let _ = parse_reg("export.reg", text.as_bytes());
    }
    let _ = h.check();
    if let Ok(sid) = Sid::parse("S-1-5-21-1004336348-1177238915-682003330") {
        let _ = h.find_sids(&sid);
    }
}

/// Edits an opened (possibly corrupt) hive through the public API, ignoring
/// errors, then serializes and checks it. `sel` varies which edits run.
pub fn edit_everything(h: &mut Hive, sel: u8) {
    let root = h.root();
    let first_child = h
        .subkeys(root)
        .ok()
        .and_then(|k| k.first().copied())
        .and_then(|k| h.key_info(k).ok())
        .map(|i| i.name);
    if sel & 1 != 0 {
        let _ = h.create_key("fuzz\\new key");
        let _ = h.set_value("", "fuzz", 1, b"x\0");
    }
    if sel & 2 != 0 {
        let _ = h.set_value("", "big", 3, &[0x5A; 20_000]);
    }
    if let Some(name) = first_child {
        if sel & 4 != 0 {
            let _ = h.set_class(&name, Some(b"class"));
            let _ = h.set_security(&name, &default_descriptor());
        }
        if let Ok(Some(k)) = h.open_key(&name) {
            if let Ok(values) = h.values(k) {
                if let Some(v) = values.first() {
                    let _ = h.set_value(&name, &v.name, 4, &[1, 2, 3, 4]);
                    if sel & 8 != 0 {
                        let _ = h.delete_value(&name, &v.name);
                    }
                }
            }
        }
        if sel & 16 != 0 {
            let _ = h.rename_key(&name, "renamed by the fuzzer, longer than before");
        } else if sel & 32 != 0 {
            let _ = h.delete_key(&name);
        }
    }
    if sel & 64 != 0 {
        if let (Ok(old), Ok(new)) = (
            Sid::parse("S-1-5-21-1004336348-1177238915-682003330"),
            Sid::parse("S-1-5-21-1-2-3"),
        ) {
            let _ = h.rewrite_sids(&old, &new);
        }
    }
    let bytes = h.to_bytes();
    let _ = check_image("edited", &bytes);
}

/// A copy of `bytes` whose base block claims to be clean (secondary sequence
/// set to the primary one, checksum recomputed), so that a dirty image can be
/// read as it is, the way `Hive::open_as_is` reads it.
pub fn as_clean(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 4096 {
        return None;
    }
    let mut b = bytes.to_vec();
    let seq1 = [b[4], b[5], b[6], b[7]];
    b[8..12].copy_from_slice(&seq1);
    let mut x = 0u32;
    for c in b[..508].chunks_exact(4) {
        x ^= u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    let x = match x {
        0 => 1,
        0xFFFF_FFFF => 0xFFFF_FFFE,
        v => v,
    };
    b[508..512].copy_from_slice(&x.to_le_bytes());
    Some(b)
}

/// The `open_read` exercise: check the raw image, open it (as given and as
/// if clean), read everything, and edit a copy.
pub fn open_read(bytes: &[u8], sel: u8) {
    let _ = check_image("fuzz", bytes);
    let opened = match Hive::from_bytes("fuzz", bytes.to_vec()) {
        Ok(h) => Some(h),
        Err(_) => as_clean(bytes).and_then(|b| Hive::from_bytes("fuzz", b).ok()),
    };
    if let Some(h) = opened {
        read_everything(&h);
        let mut h = h;
        edit_everything(&mut h, sel);
    }
}

/// The `replay` exercise: recover `primary` with two logs, then open it and
/// read everything.
pub fn replay(primary: &[u8], log1: &[u8], log2: &[u8]) {
    let logs = [
        LogFile {
            name: "fuzz.LOG1".into(),
            bytes: log1.to_vec(),
        },
        LogFile {
            name: "fuzz.LOG2".into(),
            bytes: log2.to_vec(),
        },
    ];
    let _ = reseal_hive::log::recover("fuzz", primary, &logs);
    if let Ok(h) = Hive::from_bytes_with_logs("fuzz", primary.to_vec(), &logs) {
        read_everything(&h);
    }
}

/// Splits a `replay` input: two little-endian u32 lengths (primary, first
/// log), the primary, the first log, and the rest as the second log.
pub fn split_replay_input(data: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let len = |i: usize| {
        data.get(i..i + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let (l0, l1) = (len(0), len(4));
    let rest = data.get(8..).unwrap_or(&[]);
    let (primary, rest) = rest.split_at(l0.min(rest.len()));
    let (log1, log2) = rest.split_at(l1.min(rest.len()));
    (primary, log1, log2)
}

/// Builds a `replay` input from its three parts (see [`split_replay_input`]).
pub fn join_replay_input(primary: &[u8], log1: &[u8], log2: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + primary.len() + log1.len() + log2.len());
    v.extend_from_slice(&(primary.len() as u32).to_le_bytes());
    v.extend_from_slice(&(log1.len() as u32).to_le_bytes());
    v.extend_from_slice(primary);
    v.extend_from_slice(log1);
    v.extend_from_slice(log2);
    v
}

/// The `check` exercise.
pub fn check_bytes(bytes: &[u8]) {
    let r = check_image("fuzz", bytes);
    let _ = r.is_clean();
    let _ = r.error_rules();
    for v in &r.violations {
        let _ = v.to_string();
    }
}

/// The `parse_reg` exercise: parse, then import what parsed into a new hive,
/// which must stay structurally clean whatever the document says.
pub fn parse_reg_bytes(bytes: &[u8]) {
    let Ok(doc) = parse_reg("fuzz.reg", bytes) else {
        return;
    };
    let Ok(mut h) = Hive::create("fuzz", 5, "ROOT") else {
        panic!("Hive::create failed");
    };
    if h.import_reg(&doc, None).is_ok() {
        let report = h.check();
        let errors: Vec<String> = report.errors().map(|v| v.to_string()).collect();
        assert!(errors.is_empty(), "import left errors: {errors:#?}");
        let bytes = h.to_bytes();
        let h2 = Hive::from_bytes("fuzz", bytes).expect("imported hive reopens");
        read_everything(&h2);
    }
}

// ---------------------------------------------------------------------------
// Byte reader for structured input

/// Reads small integers from fuzzer bytes; returns zeros once exhausted.
#[derive(Debug, Clone)]
pub struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        ByteReader { data, pos: 0 }
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next byte (0 when exhausted).
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// The next little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

// ---------------------------------------------------------------------------
// Names

/// Name fragments: Windows' upcase corner cases (`_`, `[`, `` ` `` sort
/// between the letters; `ß` and `µ` have no upper case in the table; `ÿ`
/// upper-cases outside Latin-1), non-Latin-1 text, a surrogate pair, and
/// fragments that make names prefixes of one another.
pub const NAME_PARTS: &[&str] = &[
    "a",
    "A",
    "ab",
    "AB",
    "_",
    "[",
    "`",
    "ß",
    "SS",
    "µ",
    "Μ",
    "ÿ",
    "Ÿ",
    "À",
    "à",
    "日本",
    "\u{1F600}",
    "z",
    " ",
    "Key",
    "KEY",
    "{",
    "@",
    "~",
    "Ω",
    "ω",
];

/// A fragment long enough to push a name past the 255-unit limit when
/// combined with others.
pub const LONG_PART: &str = "LongLongLongLongLongLongLongLongLongLongLongLongLongLongLong\
LongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLongLong";

/// Builds a name from fragment selectors (index 255 = [`LONG_PART`]).
pub fn name_from(parts: &[u8]) -> String {
    let mut s = String::new();
    for &p in parts {
        if p == 255 {
            s.push_str(LONG_PART);
        } else {
            s.push_str(NAME_PARTS[usize::from(p) % NAME_PARTS.len()]);
        }
    }
    s
}

/// Upper-cases code units with the registry's table.
pub fn upper(units: &[u16]) -> Vec<u16> {
    units.iter().map(|&u| upcase(u)).collect()
}

fn units(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

/// Deterministic data of `len` bytes varied by `seed`.
pub fn data_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(u32::from(seed) * 7) as u8
                ^ (i >> 8) as u8
        })
        .collect()
}

/// Security descriptor variants: the crate's default descriptor and
/// valid changes of it (access masks, control bits, owner and group
/// swapped).
pub fn descriptor_variant(v: u8) -> Vec<u8> {
    let mut sd = default_descriptor();
    match v % 5 {
        0 => {}
        1 => {
            // Everyone's mask (the last ACE of the DACL): KEY_QUERY_VALUE only.
            let dacl = u32::from_le_bytes([sd[16], sd[17], sd[18], sd[19]]) as usize;
            let acl_len = u16::from_le_bytes([sd[dacl + 2], sd[dacl + 3]]) as usize;
            let everyone_mask = dacl + acl_len - 12 - 4;
            sd[everyone_mask..everyone_mask + 4].copy_from_slice(&1u32.to_le_bytes());
        }
        2 => {
            // SE_DACL_AUTO_INHERITED.
            sd[3] |= 0x04;
        }
        3 => {
            let owner = [sd[4], sd[5], sd[6], sd[7]];
            let group = [sd[8], sd[9], sd[10], sd[11]];
            sd[4..8].copy_from_slice(&group);
            sd[8..12].copy_from_slice(&owner);
        }
        _ => {
            // First ACE's flags: container and object inherit.
            let dacl = u32::from_le_bytes([sd[16], sd[17], sd[18], sd[19]]) as usize;
            sd[dacl + 8 + 1] = 0x03;
        }
    }
    sd
}

// ---------------------------------------------------------------------------
// Model

/// A value in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MValue {
    /// The name as stored (first spelling used).
    pub name: Vec<u16>,
    /// Type number.
    pub value_type: u32,
    /// Data.
    pub data: Vec<u8>,
}

/// A key in the model: children and values keyed by upper-cased name, so
/// that iteration order is Windows' sibling order (`cmp_names`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MKey {
    /// The name as stored.
    pub name: Vec<u16>,
    /// Class data (never empty when present).
    pub class: Option<Vec<u8>>,
    /// Security descriptor.
    pub sd: Vec<u8>,
    /// Values by upper-cased name.
    pub values: BTreeMap<Vec<u16>, MValue>,
    /// Subkeys by upper-cased name.
    pub children: BTreeMap<Vec<u16>, MKey>,
}

impl MKey {
    fn new(name: Vec<u16>, sd: Vec<u8>) -> Self {
        MKey {
            name,
            class: None,
            sd,
            values: BTreeMap::new(),
            children: BTreeMap::new(),
        }
    }
}

/// The expected content of the hive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    /// The root key.
    pub root: MKey,
}

impl Model {
    /// Every key's path as upper-cased components, depth first, root first.
    pub fn key_paths(&self) -> Vec<Vec<Vec<u16>>> {
        fn rec(k: &MKey, path: &mut Vec<Vec<u16>>, out: &mut Vec<Vec<Vec<u16>>>) {
            out.push(path.clone());
            for (up, c) in &k.children {
                path.push(up.clone());
                rec(c, path, out);
                path.pop();
            }
        }
        let mut out = Vec::new();
        rec(&self.root, &mut Vec::new(), &mut out);
        out
    }

    /// The key at an upper-cased path.
    pub fn get(&self, path: &[Vec<u16>]) -> &MKey {
        let mut k = &self.root;
        for c in path {
            k = &k.children[c];
        }
        k
    }

    /// The key at an upper-cased path, mutable.
    pub fn get_mut(&mut self, path: &[Vec<u16>]) -> &mut MKey {
        let mut k = &mut self.root;
        for c in path {
            k = k.children.get_mut(c).expect("model path exists");
        }
        k
    }

    /// Number of keys including the root.
    pub fn key_count(&self) -> usize {
        fn rec(k: &MKey) -> usize {
            1 + k.children.values().map(rec).sum::<usize>()
        }
        rec(&self.root)
    }
}

// ---------------------------------------------------------------------------
// Operations

/// One edit, with keys chosen by index among the model's current keys
/// (depth-first order, root = 0; taken modulo the key count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `create_key(parent\name)`.
    Create {
        /// Parent key selector.
        parent: u16,
        /// Name fragments (see [`name_from`]).
        name: Vec<u8>,
    },
    /// Creates `count` siblings named fragment + number (forces `ri` lists).
    CreateMany {
        /// Parent key selector.
        parent: u16,
        /// How many keys.
        count: u16,
        /// Added to every name so that batches differ.
        stem: u8,
    },
    /// `delete_key`.
    Delete {
        /// Key selector.
        key: u16,
    },
    /// `rename_key`.
    Rename {
        /// Key selector.
        key: u16,
        /// Name fragments.
        name: Vec<u8>,
    },
    /// `set_value` (also `set_value_id` when `by_id`).
    SetValue {
        /// Key selector.
        key: u16,
        /// Name fragments (empty = the default value).
        name: Vec<u8>,
        /// Type number.
        value_type: u32,
        /// Data length.
        len: u32,
        /// Data pattern.
        seed: u8,
        /// Go through `set_value_id` instead of the path.
        by_id: bool,
    },
    /// `delete_value` of an existing value (by index, in another case) or,
    /// when the index is past the values, of a missing one.
    DeleteValue {
        /// Key selector.
        key: u16,
        /// Value selector.
        value: u16,
    },
    /// `set_class` (`None` or empty removes it).
    SetClass {
        /// Key selector.
        key: u16,
        /// Class length.
        len: Option<u16>,
        /// Data pattern.
        seed: u8,
    },
    /// `set_security` with [`descriptor_variant`].
    SetSecurity {
        /// Key selector.
        key: u16,
        /// Descriptor variant.
        variant: u8,
    },
}

/// Interesting data lengths: inline limits, the big-data segment boundary.
pub const DATA_LENGTHS: &[u32] = &[
    0, 1, 2, 3, 4, 5, 8, 12, 100, 4096, 16_343, 16_344, 16_345, 32_688, 32_689, 40_000,
];

impl Op {
    /// Decodes one operation from fuzzer bytes.
    pub fn decode(r: &mut ByteReader<'_>) -> Op {
        let name = |r: &mut ByteReader<'_>| {
            let n = r.u8() % 5;
            (0..n).map(|_| r.u8()).collect::<Vec<u8>>()
        };
        match r.u8() % 16 {
            0..=3 => Op::Create {
                parent: r.u16(),
                name: {
                    let mut n = name(r);
                    if n.is_empty() {
                        n.push(0);
                    }
                    n
                },
            },
            4 => Op::CreateMany {
                parent: r.u16(),
                // Big batches (up to past both leaf limits) only with the
                // top bit set: they are slow to check.
                count: {
                    let c = r.u16();
                    if c & 0x8000 != 0 { c % 1100 } else { c % 40 }
                },
                stem: r.u8(),
            },
            5 | 6 => Op::Delete { key: r.u16() },
            7 => Op::Rename {
                key: r.u16(),
                name: name(r),
            },
            8..=10 => {
                let key = r.u16();
                let name = name(r);
                let t = r.u8();
                let value_type = match t % 8 {
                    0 => 0,
                    1 => 1,
                    2 => 2,
                    3 => 3,
                    4 => 4,
                    5 => 7,
                    6 => 11,
                    _ => r.u32(),
                };
                let l = r.u8();
                let len = if l & 0x80 != 0 {
                    u32::from(r.u16()) % 40_001
                } else {
                    DATA_LENGTHS[usize::from(l) % DATA_LENGTHS.len()]
                };
                Op::SetValue {
                    key,
                    name,
                    value_type,
                    len,
                    seed: r.u8(),
                    by_id: t & 0x80 != 0,
                }
            }
            11 | 12 => Op::DeleteValue {
                key: r.u16(),
                value: r.u16(),
            },
            13 => Op::SetClass {
                key: r.u16(),
                len: {
                    let l = r.u16();
                    (l & 1 == 1).then_some(l >> 1)
                },
                seed: r.u8(),
            },
            _ => Op::SetSecurity {
                key: r.u16(),
                variant: r.u8(),
            },
        }
    }
}

/// A hive and its model, edited together.
pub struct Session {
    /// The hive under test.
    pub hive: Hive,
    /// What it must contain.
    pub model: Model,
    /// Operations applied so far (for failure messages).
    pub log: Vec<Op>,
    /// Run the structural check after every operation.
    pub check_each: bool,
}

fn path_string(p: &[Vec<u16>]) -> String {
    p.iter()
        .map(|c| String::from_utf16_lossy(c))
        .collect::<Vec<_>>()
        .join("\\")
}

impl Session {
    /// A new hive of version 1.`minor` (root named `ROOT`) and its model.
    pub fn new(minor: u32) -> Session {
        let hive = Hive::create("prop", minor, "ROOT").expect("Hive::create");
        let root = hive.root();
        let sd = hive.security_descriptor(root).expect("root descriptor");
        Session {
            hive,
            model: Model {
                root: MKey::new(units("ROOT"), sd),
            },
            log: Vec::new(),
            check_each: true,
        }
    }

    /// Selects a key: its model path (upper-cased) and the path string given
    /// to the API, in the stored spelling or upper-cased.
    fn select(&self, sel: u16) -> (Vec<Vec<u16>>, String) {
        let paths = self.model.key_paths();
        let p = paths[usize::from(sel) % paths.len()].clone();
        let spelled = if sel & 0x8000 != 0 {
            String::from_utf16(&p.join(&[u16::from(b'\\')][..]))
                .unwrap_or_else(|_| self.stored_path(&p))
        } else {
            self.stored_path(&p)
        };
        (p, spelled)
    }

    fn stored_path(&self, p: &[Vec<u16>]) -> String {
        let mut k = &self.model.root;
        let mut parts = Vec::new();
        for c in p {
            k = &k.children[c];
            parts.push(String::from_utf16(&k.name).expect("valid name"));
        }
        parts.join("\\")
    }

    fn context(&self) -> String {
        let n = self.log.len();
        let tail = &self.log[n.saturating_sub(6)..];
        format!(
            "after {n} ops on a 1.{} hive; last: {tail:?}",
            self.hive.minor_version()
        )
    }

    /// Applies one operation to hive and model; panics when the hive's
    /// answer differs from the model's or the hive stops checking clean.
    pub fn apply(&mut self, op: &Op) {
        self.log.push(op.clone());
        match op {
            Op::Create { parent, name } => {
                let (pp, ps) = self.select(*parent);
                let name = name_from(name);
                self.create(&pp, &ps, &name);
            }
            Op::CreateMany {
                parent,
                count,
                stem,
            } => {
                let (pp, ps) = self.select(*parent);
                for i in 0..*count {
                    let frag = NAME_PARTS[(usize::from(*stem) + usize::from(i)) % NAME_PARTS.len()];
                    let name = format!("{frag}{stem}.{i}");
                    self.create(&pp, &ps, &name);
                }
            }
            Op::Delete { key } => {
                let (p, s) = self.select(*key);
                let r = self.hive.delete_key(&s);
                if p.is_empty() {
                    assert!(
                        r.is_err(),
                        "deleting the root must fail; {}",
                        self.context()
                    );
                } else {
                    r.unwrap_or_else(|e| panic!("delete_key({s:?}): {e}; {}", self.context()));
                    let (last, parent) = p.split_last().expect("non-root");
                    self.model.get_mut(parent).children.remove(last);
                }
            }
            Op::Rename { key, name } => {
                let (p, s) = self.select(*key);
                let name = name_from(name);
                let u = units(&name);
                let r = self.hive.rename_key(&s, &name);
                let valid = !u.is_empty() && u.len() <= 255;
                if !valid {
                    assert!(
                        r.is_err(),
                        "rename to {name:?} must fail; {}",
                        self.context()
                    );
                } else if let Some((last, parent)) = p.split_last() {
                    let up = upper(&u);
                    let siblings = &self.model.get(parent).children;
                    if up != *last && siblings.contains_key(&up) {
                        assert!(
                            r.is_err(),
                            "rename onto a sibling must fail; {}",
                            self.context()
                        );
                    } else {
                        r.unwrap_or_else(|e| panic!("rename_key({s:?}): {e}; {}", self.context()));
                        let pk = self.model.get_mut(parent);
                        let mut k = pk.children.remove(last).expect("model key");
                        k.name = u;
                        pk.children.insert(up, k);
                    }
                } else {
                    r.unwrap_or_else(|e| panic!("rename root: {e}; {}", self.context()));
                    self.model.root.name = u;
                }
            }
            Op::SetValue {
                key,
                name,
                value_type,
                len,
                seed,
                by_id,
            } => {
                let (p, s) = self.select(*key);
                let name = name_from(name);
                let data = data_bytes(*len as usize, *seed);
                let r = if *by_id {
                    let id = self.hive.key(&s).expect("key exists");
                    self.hive.set_value_id(id, &name, *value_type, &data)
                } else {
                    self.hive.set_value(&s, &name, *value_type, &data)
                };
                r.unwrap_or_else(|e| panic!("set_value({s:?}, {name:?}): {e}; {}", self.context()));
                let u = units(&name);
                let k = self.model.get_mut(&p);
                let v = k.values.entry(upper(&u)).or_insert(MValue {
                    name: u,
                    value_type: 0,
                    data: Vec::new(),
                });
                v.value_type = *value_type;
                v.data = data;
            }
            Op::DeleteValue { key, value } => {
                let (p, s) = self.select(*key);
                let k = self.model.get(&p);
                let existing: Vec<(Vec<u16>, Vec<u16>)> = k
                    .values
                    .iter()
                    .map(|(up, v)| (up.clone(), v.name.clone()))
                    .collect();
                let i = usize::from(*value);
                if i < existing.len() * 2 && !existing.is_empty() {
                    let (up, stored) = &existing[i % existing.len()];
                    let spelled = if i >= existing.len() {
                        String::from_utf16(up).unwrap_or_else(|_| String::from_utf16_lossy(stored))
                    } else {
                        String::from_utf16_lossy(stored)
                    };
                    self.hive.delete_value(&s, &spelled).unwrap_or_else(|e| {
                        panic!("delete_value({s:?}, {spelled:?}): {e}; {}", self.context())
                    });
                    self.model.get_mut(&p).values.remove(up);
                } else {
                    let missing = format!("missing value {i}");
                    let r = self.hive.delete_value(&s, &missing);
                    assert!(
                        r.is_err(),
                        "deleting a missing value must fail; {}",
                        self.context()
                    );
                }
            }
            Op::SetClass { key, len, seed } => {
                let (p, s) = self.select(*key);
                let class = len.map(|l| data_bytes(usize::from(l), *seed));
                self.hive
                    .set_class(&s, class.as_deref())
                    .unwrap_or_else(|e| panic!("set_class({s:?}): {e}; {}", self.context()));
                self.model.get_mut(&p).class = class.filter(|c| !c.is_empty());
            }
            Op::SetSecurity { key, variant } => {
                let (p, s) = self.select(*key);
                let sd = descriptor_variant(*variant);
                self.hive
                    .set_security(&s, &sd)
                    .unwrap_or_else(|e| panic!("set_security({s:?}): {e}; {}", self.context()));
                self.model.get_mut(&p).sd = sd;
            }
        }
        if self.check_each {
            self.assert_clean();
        }
    }

    fn create(&mut self, pp: &[Vec<u16>], ps: &str, name: &str) {
        let u = units(name);
        let path = if ps.is_empty() {
            name.to_string()
        } else {
            format!("{ps}\\{name}")
        };
        let r = self.hive.create_key(&path);
        if u.is_empty() || u.len() > 255 {
            assert!(
                r.is_err(),
                "create_key({path:?}) must fail; {}",
                self.context()
            );
            return;
        }
        r.unwrap_or_else(|e| panic!("create_key({path:?}): {e}; {}", self.context()));
        let parent = self.model.get_mut(pp);
        let sd = parent.sd.clone();
        parent
            .children
            .entry(upper(&u))
            .or_insert_with(|| MKey::new(u, sd));
    }

    /// Asserts that the structural checker finds no error in the hive.
    pub fn assert_clean(&self) {
        let report = self.hive.check();
        let errors: Vec<String> = report.errors().map(|v| v.to_string()).collect();
        assert!(
            errors.is_empty(),
            "check found errors: {errors:#?}; {}",
            self.context()
        );
    }

    /// Saves, reopens with `Hive::from_bytes` and asserts that the reopened
    /// hive checks clean and reads back exactly as the model.
    pub fn verify(&self) {
        self.assert_clean();
        let bytes = self.hive.to_bytes();
        let report = check_image("saved", &bytes);
        let errors: Vec<String> = report.errors().map(|v| v.to_string()).collect();
        assert!(
            errors.is_empty(),
            "saved image: {errors:#?}; {}",
            self.context()
        );
        let h = Hive::from_bytes("saved", bytes)
            .unwrap_or_else(|e| panic!("reopen: {e}; {}", self.context()));
        let mut path = Vec::new();
        self.compare(&h, h.root(), &self.model.root, &mut path);
        assert_eq!(report.keys, self.model.key_count(), "{}", self.context());
    }

    fn compare(&self, h: &Hive, k: KeyId, m: &MKey, path: &mut Vec<Vec<u16>>) {
        let at = || format!("key {:?}; {}", path_string(path), self.context());
        let info = h
            .key_info(k)
            .unwrap_or_else(|e| panic!("key_info: {e}; {}", at()));
        assert_eq!(info.name_units, m.name, "name of {}", at());
        assert_eq!(info.class, m.class, "class of {}", at());
        let sd = h
            .security_descriptor(k)
            .unwrap_or_else(|e| panic!("security_descriptor: {e}; {}", at()));
        assert_eq!(sd, m.sd, "descriptor of {}", at());
        let values = h
            .values(k)
            .unwrap_or_else(|e| panic!("values: {e}; {}", at()));
        assert_eq!(values.len(), m.values.len(), "value count of {}", at());
        assert_eq!(info.value_count as usize, m.values.len(), "{}", at());
        let mut got = BTreeMap::new();
        for v in values {
            let prev = got.insert(
                upper(&v.name_units),
                MValue {
                    name: v.name_units,
                    value_type: v.value_type,
                    data: v.data,
                },
            );
            assert!(prev.is_none(), "duplicate value name in {}", at());
        }
        if got != m.values {
            for (up, want) in &m.values {
                match got.get(up) {
                    None => panic!(
                        "value {:?} missing in {}",
                        String::from_utf16_lossy(up),
                        at()
                    ),
                    Some(g) => assert!(
                        g == want,
                        "value {:?} in {}: got type {} len {} name {:?}, want type {} len {} name {:?}",
                        String::from_utf16_lossy(up),
                        at(),
                        g.value_type,
                        g.data.len(),
                        g.name,
                        want.value_type,
                        want.data.len(),
                        want.name
                    ),
                }
            }
            panic!("unexpected extra values in {}", at());
        }
        let kids = h
            .subkeys(k)
            .unwrap_or_else(|e| panic!("subkeys: {e}; {}", at()));
        assert_eq!(info.subkey_count as usize, m.children.len(), "{}", at());
        let names: Vec<Vec<u16>> = kids
            .iter()
            .map(|&c| h.key_info(c).expect("child key_info").name_units)
            .collect();
        let want: Vec<Vec<u16>> = m.children.values().map(|c| c.name.clone()).collect();
        assert!(
            names == want,
            "subkeys of {}: got {:?}, want {:?}",
            at(),
            names
                .iter()
                .map(|n| String::from_utf16_lossy(n))
                .collect::<Vec<_>>(),
            want.iter()
                .map(|n| String::from_utf16_lossy(n))
                .collect::<Vec<_>>()
        );
        for (c, (up, mc)) in kids.iter().zip(&m.children) {
            path.push(up.clone());
            self.compare(h, *c, mc, path);
            path.pop();
        }
    }
}
