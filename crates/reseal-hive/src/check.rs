//! The structural checker (every rule of the regf validation checklist).
//!
//! [`check_image`] verifies a raw hive image (base block followed by the
//! bins) against the checklist of the format reference (`regf-writing.md`
//! §17). It is deliberately independent of the editing code: it has its own
//! parsers for every record, so that a bug in the editor cannot hide itself.
//!
//! The check runs in two passes: one walk over the bins builds a map of all
//! cells, then a walk of the key tree from the root follows every reference,
//! marking each cell it reaches. The security ring is walked last. Every read
//! is bounds-checked, counts are bounded by the data they claim to describe,
//! and cycles are detected, so no input can make the checker panic or loop.
//!
//! Rules whose violation makes Windows reject or heal the hive are reported
//! as [`Severity::Error`], as are wrong name flags (13), leaf types that do
//! not match the hive version (16), wrong lh hashes and lf hints (18), Max\*
//! fields below the actual maximum (19) and duplicate value names (26).
//! Deviations Windows tolerates and writes itself (orphan cells, adjacent free
//! cells, stale volatile fields, root flags) are warnings.

use std::collections::HashMap;
use std::fmt;

use crate::bytes::{i32_at, u16_at, u32_at};
use crate::names::{cmp_names, decode_name, lf_hint, lh_hash, upcase};

/// How serious a violation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Windows rejects or heals the hive, or the hive misbehaves at run time.
    Error,
    /// A deviation from what Windows writes that Windows tolerates.
    Warning,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Absolute file offset of the offending cell, record field or list entry.
    pub offset: u64,
    /// Item number of the validation checklist (regf-writing.md §17).
    pub rule: u32,
    /// How serious it is.
    pub severity: Severity,
    /// What is expected and what is found.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{sev}: rule {} at {:#x}: {}",
            self.rule, self.offset, self.message
        )
    }
}

/// The result of checking one hive image.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Every violation found, in discovery order.
    pub violations: Vec<Violation>,
    /// Keys reached from the root.
    pub keys: usize,
    /// Values reached from those keys.
    pub values: usize,
    /// Security cells in the ring.
    pub security_cells: usize,
}

impl CheckReport {
    /// The violations of severity [`Severity::Error`].
    pub fn errors(&self) -> impl Iterator<Item = &Violation> {
        self.violations
            .iter()
            .filter(|v| v.severity == Severity::Error)
    }

    /// True when no violation is an error.
    pub fn is_clean(&self) -> bool {
        self.errors().next().is_none()
    }

    /// The distinct rule numbers of the errors, sorted.
    pub fn error_rules(&self) -> Vec<u32> {
        let mut r: Vec<u32> = self.errors().map(|v| v.rule).collect();
        r.sort_unstable();
        r.dedup();
        r
    }
}

/// Start of the bins area in the file.
const BINS: usize = 4096;
/// The "no cell" index.
const NIL: u32 = 0xFFFF_FFFF;
/// Largest data stored in one cell (or one big-data segment).
const SEGMENT: u32 = 16_344;
/// Deepest key tree Windows loads.
const MAX_DEPTH: usize = 512;
/// Individual orphan warnings before they are summarised.
const MAX_ORPHAN_REPORTS: usize = 64;

const KEY_VOLATILE: u16 = 0x0001;
const KEY_HIVE_EXIT: u16 = 0x0002;
const KEY_HIVE_ENTRY: u16 = 0x0004;
const KEY_SYM_LINK: u16 = 0x0010;
const KEY_COMP_NAME: u16 = 0x0020;
const KEY_PREDEF_HANDLE: u16 = 0x0040;
const VALUE_COMP_NAME: u16 = 0x0001;
const REG_LINK: u32 = 6;

/// Checks a raw hive image (base block followed by the bins). `file` names
/// the image in the messages about the base block.
pub fn check_image(file: &str, data: &[u8]) -> CheckReport {
    let mut c = Checker {
        data,
        report: CheckReport::default(),
        minor: 0,
        cells: Vec::new(),
        marks: Vec::new(),
        sk_uses: HashMap::new(),
    };
    let Some(header) = c.base_block(file) else {
        return c.report;
    };
    c.walk_bins(file, &header);
    if let Some(root_sk) = c.walk_keys(header.root) {
        c.walk_security(root_sk, BINS as u64 + u64::from(header.root) + 44);
    }
    c.orphans();
    c.report
}

/// The base-block fields the later passes need.
struct Header {
    root: u32,
    length: u32,
}

/// One cell of the map built by the bin walk.
#[derive(Clone, Copy)]
struct Cell {
    /// Cell index (offset from the start of the bins area).
    idx: u32,
    /// Size including the 4-byte size field.
    size: u32,
    /// Allocated (negative size on disk).
    alloc: bool,
}

/// How a reference may share its target.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Share {
    /// The target must be referenced exactly once.
    Once,
    /// Many references allowed (security cells).
    Many,
}

/// A key node's fields, parsed leniently.
struct Nk<'a> {
    flags: u16,
    parent: u32,
    subkeys: u32,
    vol_subkeys: u32,
    subkey_list: u32,
    vol_subkey_list: u32,
    values: u32,
    value_list: u32,
    security: u32,
    class: u32,
    max_name: u32,
    max_class: u32,
    max_value_name: u32,
    max_value_data: u32,
    class_len: u16,
    name_raw: &'a [u8],
}

impl<'a> Nk<'a> {
    /// Parses a key node; `Err` says what is wrong.
    fn parse(p: &'a [u8]) -> Result<Self, String> {
        if p.get(0..2) != Some(b"nk") {
            return Err(format!("expected signature nk, found {}", sig_text(p)));
        }
        if p.len() < 76 {
            return Err(format!(
                "expected a cell payload of at least 76 bytes, found {}",
                p.len()
            ));
        }
        let r32 = |o| u32_at(p, o).unwrap_or(0);
        let name_len = usize::from(u16_at(p, 72).unwrap_or(0));
        if name_len == 0 {
            return Err("expected NameLength >= 1, found 0".into());
        }
        let name_raw = p.get(76..76 + name_len).ok_or_else(|| {
            format!(
                "expected 76 + NameLength ({name_len}) to fit the cell payload of {} bytes",
                p.len()
            )
        })?;
        Ok(Nk {
            flags: u16_at(p, 2).unwrap_or(0),
            parent: r32(16),
            subkeys: r32(20),
            vol_subkeys: r32(24),
            subkey_list: r32(28),
            vol_subkey_list: r32(32),
            values: r32(36),
            value_list: r32(40),
            security: r32(44),
            class: r32(48),
            max_name: r32(52),
            max_class: r32(56),
            max_value_name: r32(60),
            max_value_data: r32(64),
            class_len: u16_at(p, 74).unwrap_or(0),
            name_raw,
        })
    }

    fn compressed(&self) -> bool {
        self.flags & KEY_COMP_NAME != 0
    }

    fn name(&self) -> Vec<u16> {
        decode_name(self.name_raw, self.compressed())
    }

    /// The name's length in UTF-16 bytes (what the Max* fields count).
    fn name_bytes(&self) -> u32 {
        utf16_bytes(self.name_raw.len(), self.compressed())
    }
}

fn utf16_bytes(stored: usize, compressed: bool) -> u32 {
    let n = if compressed { stored * 2 } else { stored };
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A short printable form of a cell's first two bytes.
fn sig_text(p: &[u8]) -> String {
    match p.get(0..2) {
        Some(s) if s.iter().all(|b| b.is_ascii_graphic()) => {
            format!("{:?}", String::from_utf8_lossy(s))
        }
        Some(s) => format!("{:02x}{:02x}", s[0], s[1]),
        None => "nothing".into(),
    }
}

fn display(units: &[u16]) -> String {
    let mut s = String::from_utf16_lossy(units);
    if s.chars().count() > 60 {
        s = s.chars().take(60).collect::<String>() + "...";
    }
    format!("{s:?}")
}

/// A subkey-list entry collected from the leaves.
struct Entry {
    /// Child key index.
    child: u32,
    /// The stored lh hash or lf hint, if the leaf carries one.
    check: LeafCheck,
    /// File offset of the entry, for messages.
    at: u64,
}

#[derive(Clone, Copy)]
enum LeafCheck {
    None,
    Hash(u32),
    Hint([u8; 4]),
}

/// Work item of the tree walk.
struct Visit {
    key: u32,
    parent: u32,
    depth: usize,
}

struct Checker<'a> {
    data: &'a [u8],
    report: CheckReport,
    minor: u32,
    /// Every cell, sorted by index.
    cells: Vec<Cell>,
    /// References seen per cell (saturating), parallel to `cells`.
    marks: Vec<u8>,
    /// Keys using each security cell index (and the first user's offset).
    sk_uses: HashMap<u32, (u32, u64)>,
}

impl<'a> Checker<'a> {
    fn push(&mut self, offset: u64, rule: u32, severity: Severity, message: String) {
        self.report.violations.push(Violation {
            offset,
            rule,
            severity,
            message,
        });
    }

    fn error(&mut self, offset: u64, rule: u32, message: String) {
        self.push(offset, rule, Severity::Error, message);
    }

    fn warn(&mut self, offset: u64, rule: u32, message: String) {
        self.push(offset, rule, Severity::Warning, message);
    }

    // ----- base block ---------------------------------------------------

    fn base_block(&mut self, file: &str) -> Option<Header> {
        let d = self.data;
        if d.len() < BINS {
            self.error(
                0,
                1,
                format!(
                    "{file}: expected a base block of 4096 bytes, found a file of {} bytes",
                    d.len()
                ),
            );
            return None;
        }
        if &d[0..4] != b"regf" {
            self.error(
                0,
                1,
                format!(
                    "{file}: expected signature \"regf\", found {:02x?}",
                    &d[0..4]
                ),
            );
            return None;
        }
        let r = |o| u32_at(d, o).unwrap_or(0);
        let (major, minor, ftype, format, cluster) = (r(20), r(24), r(28), r(32), r(44));
        self.minor = minor;
        for (off, name, found, ok) in [
            (20, "major version", major, major == 1),
            (24, "minor version", minor, (3..=6).contains(&minor)),
            (28, "file type", ftype, ftype == 0),
            (32, "file format", format, format == 1),
            (44, "clustering factor", cluster, cluster == 1),
        ] {
            if !ok {
                let want = match off {
                    24 => "3..=6",
                    28 => "0",
                    _ => "1",
                };
                self.error(
                    off,
                    1,
                    format!("{file}: expected {name} {want}, found {found}"),
                );
            }
        }
        let (seq1, seq2) = (r(4), r(8));
        if seq1 != seq2 {
            self.error(
                4,
                2,
                format!(
                    "{file}: expected Sequence1 = Sequence2, found {seq1} and {seq2} (dirty hive)"
                ),
            );
        }
        let sum = checksum(d);
        let stored = r(508);
        if sum != stored {
            self.error(
                508,
                3,
                format!("{file}: expected checksum {sum:#010x}, found {stored:#010x}"),
            );
        }
        let length = r(40);
        if length == 0 || length % 4096 != 0 {
            self.error(
                40,
                4,
                format!(
                    "{file}: expected a hive-bins size that is a non-zero multiple of 4096, found {length:#x}"
                ),
            );
        }
        if (d.len() as u64) < BINS as u64 + u64::from(length) {
            self.error(
                40,
                4,
                format!(
                    "{file}: expected a file of at least {:#x} bytes (4096 + Length), found {:#x}",
                    BINS as u64 + u64::from(length),
                    d.len()
                ),
            );
        }
        for (off, name) in [(4088, "BootType"), (4092, "BootRecover")] {
            let v = r(off);
            if v != 0 {
                self.warn(
                    off as u64,
                    5,
                    format!("{file}: expected {name} 0, found {v}"),
                );
            }
        }
        Some(Header {
            root: r(36),
            length,
        })
    }

    // ----- bins and cells -------------------------------------------------

    fn walk_bins(&mut self, file: &str, h: &Header) {
        let d = self.data;
        let end = (BINS as u64 + u64::from(h.length)).min(d.len() as u64) as usize;
        let mut pos = BINS;
        let mut sum: u64 = 0;
        let mut bad_run = false;
        while pos + 32 <= end {
            let rel = (pos - BINS) as u32;
            let sig_ok = &d[pos..pos + 4] == b"hbin";
            let off = u32_at(d, pos + 4).unwrap_or(0);
            let size = u32_at(d, pos + 8).unwrap_or(0) as usize;
            let size_ok = size >= 4096 && size % 4096 == 0 && pos + size <= end;
            if !(sig_ok && off == rel && size_ok) {
                if !bad_run {
                    let found = if !sig_ok {
                        format!("signature {:02x?}", &d[pos..pos + 4])
                    } else if off != rel {
                        format!("offset field {off:#x}")
                    } else {
                        format!("size {size:#x}")
                    };
                    self.error(
                        pos as u64,
                        7,
                        format!(
                            "expected a bin \"hbin\" at bins offset {rel:#x} with that offset and a size that is a multiple of 4096 within Length, found {found}"
                        ),
                    );
                }
                // Resynchronise at the next 4 KiB block.
                bad_run = true;
                pos += 4096;
                continue;
            }
            bad_run = false;
            sum += size as u64;
            self.walk_cells(pos, size);
            pos += size;
        }
        if pos != end && !bad_run {
            self.error(
                pos as u64,
                7,
                format!(
                    "expected the bins to end at {end:#x}, found {:#x} bytes too short for a bin",
                    end - pos.min(end)
                ),
            );
        }
        if !bad_run && sum != u64::from(h.length) && end == BINS + h.length as usize {
            self.error(
                40,
                4,
                format!(
                    "{file}: expected Length = sum of bin sizes {sum:#x}, found {:#x}",
                    h.length
                ),
            );
        }
        self.marks = vec![0; self.cells.len()];
    }

    fn walk_cells(&mut self, bin: usize, size: usize) {
        let d = self.data;
        let end = bin + size;
        let mut pos = bin + 32;
        let mut prev_free = false;
        while pos < end {
            let raw = i32_at(d, pos).unwrap_or(0);
            let len = raw.unsigned_abs() as usize;
            if raw == 0 || len % 8 != 0 || len > end - pos {
                self.error(
                    pos as u64,
                    8,
                    format!(
                        "expected a cell size that is a non-zero multiple of 8 ending within the bin at {end:#x}, found {raw}"
                    ),
                );
                return;
            }
            let free = raw > 0;
            if free && prev_free {
                self.warn(
                    pos as u64,
                    9,
                    "expected free cells to be merged, found two adjacent free cells".into(),
                );
            }
            prev_free = free;
            self.cells.push(Cell {
                idx: (pos - BINS) as u32,
                size: len as u32,
                alloc: !free,
            });
            pos += len;
        }
    }

    fn find(&self, idx: u32) -> Option<usize> {
        self.cells.binary_search_by_key(&idx, |c| c.idx).ok()
    }

    /// Resolves a reference to an allocated cell and marks it. Reports rule
    /// 10 when the index is not an allocated cell or (for `Share::Once`) when
    /// the cell was already referenced. Returns the cell's payload.
    fn resolve(&mut self, idx: u32, from: u64, what: &str, share: Share) -> Option<&'a [u8]> {
        let at = BINS as u64 + u64::from(idx);
        let found = if idx == NIL {
            Some("NIL".to_string())
        } else if idx & 0x8000_0000 != 0 {
            Some(format!("volatile index {idx:#x}"))
        } else {
            match self.find(idx) {
                None => Some(format!("{idx:#x}, which is not the start of a cell")),
                Some(i) if !self.cells[i].alloc => Some(format!("{idx:#x}, a free cell")),
                Some(i) => {
                    if self.marks[i] > 0 && share == Share::Once {
                        self.error(
                            at,
                            10,
                            format!(
                                "expected the {what} at {at:#x} to be referenced once, found another reference from {from:#x}"
                            ),
                        );
                        self.marks[i] = self.marks[i].saturating_add(1);
                        return None;
                    }
                    self.marks[i] = self.marks[i].saturating_add(1);
                    let c = self.cells[i];
                    let start = BINS + c.idx as usize + 4;
                    return self
                        .data
                        .get(start..BINS + c.idx as usize + c.size as usize);
                }
            }
        };
        if let Some(found) = found {
            self.error(
                from,
                10,
                format!("expected a reference to an allocated {what} cell, found {found}"),
            );
        }
        None
    }

    // ----- keys -----------------------------------------------------------

    /// Walks the key tree; returns the root key's security cell index.
    fn walk_keys(&mut self, root: u32) -> Option<u32> {
        let root_at = BINS as u64 + u64::from(root) + 4;
        let ok = root != NIL
            && root & 0x8000_0000 == 0
            && self.find(root).is_some_and(|i| self.cells[i].alloc);
        if !ok {
            self.error(
                36,
                11,
                format!(
                    "expected the root index to point to an allocated nk cell, found {root:#x}"
                ),
            );
            return None;
        }
        let payload = self.resolve(root, 36, "root key", Share::Once)?;
        let root_sk = match Nk::parse(payload) {
            Ok(nk) => {
                if nk.flags != 0x2C {
                    self.warn(
                        root_at,
                        11,
                        format!(
                            "expected root flags 0x2c (as Windows saves them), found {:#x}",
                            nk.flags
                        ),
                    );
                }
                nk.security
            }
            Err(e) => {
                self.error(root_at, 11, format!("root key: {e}"));
                return None;
            }
        };
        let mut stack = vec![Visit {
            key: root,
            parent: NIL,
            depth: 1,
        }];
        while let Some(v) = stack.pop() {
            self.check_key(&v, &mut stack);
        }
        Some(root_sk)
    }

    fn check_key(&mut self, v: &Visit, stack: &mut Vec<Visit>) {
        let at = BINS as u64 + u64::from(v.key) + 4;
        let Some(i) = self.find(v.key) else { return };
        let c = self.cells[i];
        let Some(p) = self
            .data
            .get(BINS + c.idx as usize + 4..BINS + (c.idx + c.size) as usize)
        else {
            return;
        };
        let nk = match Nk::parse(p) {
            Ok(nk) => nk,
            Err(e) => {
                let is_nk = p.get(0..2) == Some(b"nk");
                self.error(at, if is_nk { 12 } else { 10 }, format!("key: {e}"));
                // Still count its security reference so that one broken key
                // does not also show up as a wrong reference count.
                if let (true, Some(sk)) = (is_nk, u32_at(p, 44)) {
                    let e = self.sk_uses.entry(sk).or_insert((0, at));
                    e.0 = e.0.saturating_add(1);
                }
                return;
            }
        };
        self.report.keys += 1;
        let is_root = v.parent == NIL;
        let name = nk.name();

        // Rule 11: flags.
        if !is_root && nk.flags & KEY_HIVE_ENTRY != 0 {
            self.error(
                at,
                11,
                format!(
                    "key {}: expected KEY_HIVE_ENTRY only on the root, found flags {:#x}",
                    display(&name),
                    nk.flags
                ),
            );
        }
        if nk.flags & (KEY_VOLATILE | KEY_HIVE_EXIT) != 0 {
            self.error(
                at,
                11,
                format!(
                    "key {}: expected no KEY_VOLATILE/KEY_HIVE_EXIT on disk, found flags {:#x}",
                    display(&name),
                    nk.flags
                ),
            );
        }
        // Rule 12: parent back-pointer (the root's is not meaningful).
        if !is_root && nk.parent != v.parent {
            self.error(
                at,
                12,
                format!(
                    "key {}: expected Parent {:#x}, found {:#x}",
                    display(&name),
                    v.parent,
                    nk.parent
                ),
            );
        }
        if !nk.compressed() && nk.name_raw.len() % 2 != 0 {
            self.error(
                at,
                12,
                format!(
                    "key {}: expected an even NameLength for a UTF-16 name, found {}",
                    display(&name),
                    nk.name_raw.len()
                ),
            );
        }
        // Rule 13: compression flag iff every unit fits a byte.
        if !nk.compressed() && !name.is_empty() && name.iter().all(|&u| u <= 0xFF) {
            self.error(
                at,
                13,
                format!(
                    "key {}: expected KEY_COMP_NAME for a name whose units all fit a byte, found a UTF-16 name",
                    display(&name)
                ),
            );
        }
        // Rule 14: stale volatile fields.
        if nk.vol_subkeys != 0 || (nk.vol_subkey_list != NIL && nk.vol_subkey_list != 0) {
            self.warn(
                at + 24,
                14,
                format!(
                    "key {}: expected volatile count 0 and list NIL, found {} and {:#x}",
                    display(&name),
                    nk.vol_subkeys,
                    nk.vol_subkey_list
                ),
            );
        }
        // Security: counted now, checked against the ring later.
        let e = self.sk_uses.entry(nk.security).or_insert((0, at));
        e.0 = e.0.saturating_add(1);

        // Rule 20: class.
        if nk.class_len > 0 {
            if let Some(cp) = self.resolve(nk.class, at + 48, "class", Share::Once) {
                if cp.len() < usize::from(nk.class_len) {
                    self.error(
                        at + 48,
                        20,
                        format!(
                            "key {}: expected a class cell of at least {} bytes, found {}",
                            display(&name),
                            nk.class_len,
                            cp.len()
                        ),
                    );
                }
            } else {
                self.error(
                    at + 48,
                    20,
                    format!(
                        "key {}: expected an allocated class cell for ClassLength {}, found {:#x}",
                        display(&name),
                        nk.class_len,
                        nk.class
                    ),
                );
            }
        }

        self.check_values(&nk, at, &name);
        self.check_subkeys(&nk, v, at, &name, stack);
    }

    fn check_values(&mut self, nk: &Nk<'a>, at: u64, key: &[u16]) {
        let symlink = nk.flags & KEY_SYM_LINK != 0;
        if nk.flags & KEY_PREDEF_HANDLE != 0 || nk.values == 0 {
            if symlink {
                self.error(
                    at,
                    21,
                    format!(
                        "symbolic link {}: expected one SymbolicLinkValue value, found none",
                        display(key)
                    ),
                );
            }
            return;
        }
        let Some(list) = self.resolve(nk.value_list, at + 40, "value list", Share::Once) else {
            self.error(
                at + 40,
                23,
                format!(
                    "key {}: expected a value list for {} values, found {:#x}",
                    display(key),
                    nk.values,
                    nk.value_list
                ),
            );
            return;
        };
        let list_at = BINS as u64 + u64::from(nk.value_list);
        let mut count = nk.values as usize;
        if count > list.len() / 4 {
            self.error(
                list_at,
                23,
                format!(
                    "key {}: expected a value-list payload of at least {} bytes, found {}",
                    display(key),
                    count.saturating_mul(4),
                    list.len()
                ),
            );
            count = list.len() / 4;
        }
        let mut names: Vec<(Vec<u16>, u64)> = Vec::with_capacity(count);
        let (mut max_name, mut max_data) = (0u32, 0u32);
        for k in 0..count {
            let vidx = u32_at(list, k * 4).unwrap_or(NIL);
            let Some(vp) = self.resolve(vidx, list_at + 4 + 4 * k as u64, "value", Share::Once)
            else {
                continue;
            };
            let vat = BINS as u64 + u64::from(vidx) + 4;
            if vp.get(0..2) != Some(b"vk") || vp.len() < 20 {
                self.error(
                    vat,
                    23,
                    format!(
                        "key {}: expected a vk record, found signature {} in {} bytes",
                        display(key),
                        sig_text(vp),
                        vp.len()
                    ),
                );
                continue;
            }
            self.report.values += 1;
            let name_len = usize::from(u16_at(vp, 2).unwrap_or(0));
            let flags = u16_at(vp, 16).unwrap_or(0);
            let comp = flags & VALUE_COMP_NAME != 0;
            let Some(raw) = vp.get(20..20 + name_len) else {
                self.error(
                    vat,
                    23,
                    format!(
                        "key {}: expected the value name ({name_len} bytes) to fit the vk cell of {} bytes",
                        display(key),
                        vp.len()
                    ),
                );
                continue;
            };
            let vname = decode_name(raw, comp);
            if !comp && name_len % 2 != 0 {
                self.error(
                    vat,
                    23,
                    format!(
                        "value {} of {}: expected an even NameLength for a UTF-16 name, found {name_len}",
                        display(&vname),
                        display(key)
                    ),
                );
            }
            if !comp && !vname.is_empty() && vname.iter().all(|&u| u <= 0xFF) {
                self.error(
                    vat,
                    13,
                    format!(
                        "value {} of {}: expected VALUE_COMP_NAME for a name whose units all fit a byte, found a UTF-16 name",
                        display(&vname),
                        display(key)
                    ),
                );
            }
            max_name = max_name.max(utf16_bytes(name_len, comp));
            let dl = u32_at(vp, 4).unwrap_or(0);
            let len = dl & 0x7FFF_FFFF;
            max_data = max_data.max(len);
            let vtype = u32_at(vp, 12).unwrap_or(0);
            if symlink {
                let target: Vec<u16> = "SymbolicLinkValue".encode_utf16().collect();
                if nk.values != 1 || cmp_names(&vname, &target).is_ne() || vtype != REG_LINK {
                    self.error(
                        vat,
                        21,
                        format!(
                            "symbolic link {}: expected exactly one REG_LINK value SymbolicLinkValue, found {} values, this one {} of type {vtype}",
                            display(key),
                            nk.values,
                            display(&vname)
                        ),
                    );
                }
            }
            self.check_data(vat, vp, &vname, key);
            names.push((vname, vat));
        }
        // Rule 26: unique names.
        let mut folded: Vec<(Vec<u16>, u64)> = names
            .into_iter()
            .map(|(n, a)| (n.into_iter().map(upcase).collect(), a))
            .collect();
        folded.sort_unstable();
        for w in folded.windows(2) {
            if w[0].0 == w[1].0 {
                let msg = format!(
                    "key {}: expected unique value names, found {} twice",
                    display(key),
                    display(&w[1].0)
                );
                self.error(w[1].1, 26, msg);
            }
        }
        // Rule 19 (value part).
        if nk.max_value_name < max_name {
            self.error(
                at + 60,
                19,
                format!(
                    "key {}: expected MaxValueNameLen >= {max_name}, found {}",
                    display(key),
                    nk.max_value_name
                ),
            );
        }
        if nk.max_value_data < max_data {
            self.error(
                at + 64,
                19,
                format!(
                    "key {}: expected MaxValueDataLen >= {max_data}, found {}",
                    display(key),
                    nk.max_value_data
                ),
            );
        }
    }

    fn check_data(&mut self, vat: u64, vp: &[u8], vname: &[u16], key: &[u16]) {
        let dl = u32_at(vp, 4).unwrap_or(0);
        let dcell = u32_at(vp, 8).unwrap_or(0);
        let len = dl & 0x7FFF_FFFF;
        let who = || format!("value {} of {}", display(vname), display(key));
        if dl & 0x8000_0000 != 0 {
            if len > 4 {
                self.error(
                    vat + 4,
                    24,
                    format!(
                        "{}: expected inline data of at most 4 bytes, found DataLength {dl:#x}",
                        who()
                    ),
                );
            }
            return;
        }
        if len == 0 {
            if dcell != NIL {
                self.error(
                    vat + 8,
                    24,
                    format!(
                        "{}: expected Data NIL for an empty non-inline value, found {dcell:#x}",
                        who()
                    ),
                );
            }
            return;
        }
        let Some(dp) = self.resolve(dcell, vat + 8, "value data", Share::Once) else {
            return;
        };
        let dat = BINS as u64 + u64::from(dcell);
        if len > SEGMENT && self.minor >= 4 {
            self.check_big_data(dat, dp, len, &who());
        } else if dp.len() < len as usize {
            self.error(
                dat,
                24,
                format!(
                    "{}: expected a data cell of at least {len} bytes, found {}",
                    who(),
                    dp.len()
                ),
            );
        }
    }

    fn check_big_data(&mut self, dat: u64, dp: &[u8], len: u32, who: &str) {
        if dp.get(0..2) != Some(b"db") || dp.len() < 8 {
            self.error(
                dat,
                25,
                format!(
                    "{who}: expected a db record for {len} bytes in a 1.{} hive, found signature {}",
                    self.minor,
                    sig_text(dp)
                ),
            );
            return;
        }
        let count = u32::from(u16_at(dp, 2).unwrap_or(0));
        let want = len.div_ceil(SEGMENT);
        if count != want {
            self.error(
                dat,
                25,
                format!("{who}: expected {want} big-data segments for {len} bytes, found {count}"),
            );
            return;
        }
        let list_idx = u32_at(dp, 4).unwrap_or(NIL);
        let Some(list) = self.resolve(list_idx, dat + 8, "big-data segment list", Share::Once)
        else {
            return;
        };
        let list_at = BINS as u64 + u64::from(list_idx);
        if list.len() < 4 * count as usize {
            self.error(
                list_at,
                25,
                format!(
                    "{who}: expected a segment list of at least {} bytes, found {}",
                    4 * count,
                    list.len()
                ),
            );
            return;
        }
        let mut left = len;
        for k in 0..count as usize {
            let s = u32_at(list, 4 * k).unwrap_or(NIL);
            let need = left.min(SEGMENT);
            left -= need;
            if let Some(sp) =
                self.resolve(s, list_at + 4 * k as u64, "big-data segment", Share::Once)
            {
                if sp.len() < need as usize {
                    self.error(
                        BINS as u64 + u64::from(s),
                        25,
                        format!(
                            "{who}: expected segment {k} of at least {need} bytes, found {}",
                            sp.len()
                        ),
                    );
                }
            }
        }
    }

    fn check_subkeys(
        &mut self,
        nk: &Nk<'a>,
        v: &Visit,
        at: u64,
        key: &[u16],
        stack: &mut Vec<Visit>,
    ) {
        let max_name = nk.max_name & 0xFFFF;
        if nk.subkey_list == NIL || nk.subkeys == 0 {
            if nk.subkeys != 0 || nk.subkey_list != NIL {
                self.error(
                    at + 20,
                    15,
                    format!(
                        "key {}: expected subkey count 0 with list NIL (or both set), found {} and {:#x}",
                        display(key),
                        nk.subkeys,
                        nk.subkey_list
                    ),
                );
            }
            return;
        }
        let mut entries = Vec::new();
        self.collect_list(nk.subkey_list, at + 28, key, &mut entries, true);
        if entries.len() as u64 != u64::from(nk.subkeys) {
            self.error(
                at + 20,
                15,
                format!(
                    "key {}: expected subkey count = sum of leaf counts {}, found {}",
                    display(key),
                    entries.len(),
                    nk.subkeys
                ),
            );
        }
        let mut prev: Option<Vec<u16>> = None;
        let (mut longest, mut longest_class) = (0u32, 0u32);
        for e in entries {
            let Some(cp) = self.resolve(e.child, e.at, "subkey", Share::Once) else {
                continue;
            };
            let child_at = BINS as u64 + u64::from(e.child);
            // An invalid child is reported when it is visited.
            if let Ok(child) = Nk::parse(cp) {
                let cname = child.name();
                longest = longest.max(child.name_bytes());
                longest_class = longest_class.max(u32::from(child.class_len));
                if let Some(p) = &prev {
                    match cmp_names(p, &cname) {
                        std::cmp::Ordering::Less => {}
                        std::cmp::Ordering::Equal => self.error(
                            e.at,
                            17,
                            format!(
                                "key {}: expected unique subkey names, found {} after {}",
                                display(key),
                                display(&cname),
                                display(p)
                            ),
                        ),
                        std::cmp::Ordering::Greater => self.error(
                            e.at,
                            17,
                            format!(
                                "key {}: expected subkeys in increasing order, found {} after {}",
                                display(key),
                                display(&cname),
                                display(p)
                            ),
                        ),
                    }
                }
                match e.check {
                    LeafCheck::None => {}
                    LeafCheck::Hash(h) => {
                        let want = lh_hash(&cname);
                        if h != want {
                            self.error(
                                e.at + 4,
                                18,
                                format!(
                                    "lh entry for {}: expected hash {want:#010x}, found {h:#010x}",
                                    display(&cname)
                                ),
                            );
                        }
                    }
                    LeafCheck::Hint(h) => {
                        let want = lf_hint(&cname);
                        let wide = cname.iter().take(4).any(|&u| u > 0xFF);
                        if h != want && !(wide && h[0] == 0) {
                            self.error(
                                e.at + 4,
                                18,
                                format!(
                                    "lf entry for {}: expected hint {want:02x?}, found {h:02x?}",
                                    display(&cname)
                                ),
                            );
                        }
                    }
                }
                prev = Some(cname);
            }
            if v.depth + 1 > MAX_DEPTH {
                self.error(
                    child_at,
                    22,
                    format!(
                        "key {}: expected a tree depth of at most {MAX_DEPTH}, found a deeper key (not checked further)",
                        display(key)
                    ),
                );
                continue;
            }
            stack.push(Visit {
                key: e.child,
                parent: v.key,
                depth: v.depth + 1,
            });
        }
        if max_name < longest {
            let msg = format!(
                "key {}: expected MaxNameLen >= {longest}, found {max_name}",
                display(key)
            );
            // Windows itself leaves MaxNameLen at 0 on some keys with
            // subkeys (seen in a real Windows 7 SYSTEM hive); a stored 0 is
            // a warning, any other value below the longest name an error.
            if max_name == 0 {
                self.warn(at + 52, 19, msg);
            } else {
                self.error(at + 52, 19, msg);
            }
        }
        if nk.max_class < longest_class {
            self.error(
                at + 56,
                19,
                format!(
                    "key {}: expected MaxClassLen >= {longest_class}, found {}",
                    display(key),
                    nk.max_class
                ),
            );
        }
    }

    /// Collects the entries of a subkey list (`top`: an ri is allowed here).
    fn collect_list(&mut self, idx: u32, from: u64, key: &[u16], out: &mut Vec<Entry>, top: bool) {
        let Some(p) = self.resolve(idx, from, "subkey list", Share::Once) else {
            return;
        };
        let at = BINS as u64 + u64::from(idx);
        let sig = p.get(0..2).unwrap_or(b"");
        let count = usize::from(u16_at(p, 2).unwrap_or(0));
        let width = match sig {
            b"lf" | b"lh" => 8,
            b"li" | b"ri" => 4,
            _ => {
                self.error(
                    at,
                    16,
                    format!(
                        "key {}: expected a subkey list li/lf/lh{}, found signature {}",
                        display(key),
                        if top { "/ri" } else { "" },
                        sig_text(p)
                    ),
                );
                return;
            }
        };
        let mut n = count;
        if 4 + width * count > p.len() {
            self.error(
                at,
                16,
                format!(
                    "key {}: expected a {} cell of at least {} bytes for {count} entries, found {}",
                    display(key),
                    String::from_utf8_lossy(sig),
                    4 + width * count,
                    p.len()
                ),
            );
            n = p.len().saturating_sub(4) / width;
        }
        if sig == b"ri" {
            if !top {
                self.error(
                    at,
                    16,
                    format!(
                        "key {}: expected a leaf under an ri, found an ri",
                        display(key)
                    ),
                );
                return;
            }
            for k in 0..n {
                let leaf = u32_at(p, 4 + 4 * k).unwrap_or(NIL);
                let before = out.len();
                self.collect_list(leaf, at + 4 + 4 * k as u64, key, out, false);
                if out.len() == before {
                    if let Some(lp) = self.find(leaf).and_then(|i| {
                        let c = self.cells[i];
                        self.data
                            .get(BINS + c.idx as usize + 4..BINS + (c.idx + c.size) as usize)
                    }) {
                        if u16_at(lp, 2) == Some(0) {
                            self.error(
                                BINS as u64 + u64::from(leaf),
                                16,
                                format!(
                                    "key {}: expected no empty leaf under an ri, found one",
                                    display(key)
                                ),
                            );
                        }
                    }
                }
            }
            return;
        }
        // Leaf type against the hive version.
        let ok = if self.minor >= 5 {
            sig == b"lh"
        } else {
            sig == b"lf" || sig == b"li"
        };
        if !ok {
            self.error(
                at,
                16,
                format!(
                    "key {}: expected {} leaves in a 1.{} hive, found {}",
                    display(key),
                    if self.minor >= 5 { "lh" } else { "lf/li" },
                    self.minor,
                    String::from_utf8_lossy(sig)
                ),
            );
        }
        let limit = if sig == b"li" { 1012 } else { 507 };
        if count > limit {
            self.warn(
                at,
                16,
                format!(
                    "key {}: expected at most {limit} entries in an {} leaf, found {count}",
                    display(key),
                    String::from_utf8_lossy(sig)
                ),
            );
        }
        for k in 0..n {
            let o = 4 + width * k;
            let child = u32_at(p, o).unwrap_or(NIL);
            let check = match sig {
                b"lh" => LeafCheck::Hash(u32_at(p, o + 4).unwrap_or(0)),
                b"lf" => {
                    let mut h = [0u8; 4];
                    if let Some(s) = p.get(o + 4..o + 8) {
                        h.copy_from_slice(s);
                    }
                    LeafCheck::Hint(h)
                }
                _ => LeafCheck::None,
            };
            out.push(Entry {
                child,
                check,
                at: at + 4 + o as u64,
            });
        }
    }

    // ----- security -------------------------------------------------------

    fn walk_security(&mut self, root_sk: u32, mut from: u64) {
        let mut ring: HashMap<u32, (u32, u64)> = HashMap::new(); // idx -> (stored refcount, at)
        let mut order: Vec<u32> = Vec::new();
        let mut cur = root_sk;
        let mut prev = NIL;
        loop {
            let at = BINS as u64 + u64::from(cur) + 4;
            let Some(p) = self.resolve(cur, from, "security", Share::Many) else {
                self.error(
                    from,
                    27,
                    format!(
                        "expected the sk ring to continue at an allocated sk cell, found {cur:#x}"
                    ),
                );
                break;
            };
            if p.get(0..2) != Some(b"sk") || p.len() < 20 {
                self.error(
                    at,
                    27,
                    format!(
                        "expected an sk record in the security ring, found signature {} in {} bytes",
                        sig_text(p),
                        p.len()
                    ),
                );
                break;
            }
            let flink = u32_at(p, 4).unwrap_or(NIL);
            let blink = u32_at(p, 8).unwrap_or(NIL);
            let refs = u32_at(p, 12).unwrap_or(0);
            if prev != NIL && blink != prev {
                self.error(
                    at + 8,
                    27,
                    format!(
                        "expected Blink {prev:#x} (the previous sk in the ring), found {blink:#x}"
                    ),
                );
            }
            ring.insert(cur, (refs, at));
            order.push(cur);
            self.check_descriptor(at, p);
            if flink == root_sk {
                // Closing the ring: the first element's Blink must be us.
                if let Some(fp) = self.cell_payload(root_sk) {
                    let fb = u32_at(fp, 8).unwrap_or(NIL);
                    if fb != cur {
                        self.error(
                            BINS as u64 + u64::from(root_sk) + 12,
                            27,
                            format!(
                                "expected Blink {cur:#x} (the last sk of the ring), found {fb:#x}"
                            ),
                        );
                    }
                }
                break;
            }
            if ring.contains_key(&flink) {
                self.error(
                    at + 4,
                    27,
                    format!(
                        "expected the sk ring to return to {root_sk:#x}, found Flink {flink:#x} looping back into the ring"
                    ),
                );
                break;
            }
            prev = cur;
            cur = flink;
            from = at + 4;
        }
        self.report.security_cells = ring.len();

        let mut uses: Vec<(u32, (u32, u64))> = self.sk_uses.iter().map(|(&k, &v)| (k, v)).collect();
        uses.sort_unstable_by_key(|u| u.0);
        for (sk, (n, first_user)) in uses {
            match ring.get(&sk) {
                Some(&(stored, at)) => {
                    if stored != n {
                        self.error(
                            at + 12,
                            28,
                            format!(
                                "expected reference count {n} (keys using this sk), found {stored}"
                            ),
                        );
                    }
                }
                None => {
                    let is_sk = self
                        .cell_payload(sk)
                        .is_some_and(|p| p.get(0..2) == Some(b"sk"));
                    self.error(
                        first_user + 44,
                        27,
                        format!(
                            "expected the key's security index to be an sk in the ring, found {sk:#x}{} ({n} keys use it)",
                            if is_sk { ", an sk cell outside the ring" } else { "" }
                        ),
                    );
                    // Mark it so that it is not also reported as an orphan.
                    if let Some(i) = self.find(sk) {
                        self.marks[i] = self.marks[i].saturating_add(1);
                    }
                }
            }
        }
        for sk in order {
            if !self.sk_uses.contains_key(&sk) {
                let (stored, at) = ring[&sk];
                self.error(
                    at + 12,
                    28,
                    format!(
                        "expected every sk in the ring to be used by a key, found none (stored count {stored})"
                    ),
                );
            }
        }
    }

    fn cell_payload(&self, idx: u32) -> Option<&'a [u8]> {
        let c = self.cells[self.find(idx)?];
        if !c.alloc {
            return None;
        }
        self.data
            .get(BINS + c.idx as usize + 4..BINS + (c.idx + c.size) as usize)
    }

    fn check_descriptor(&mut self, at: u64, p: &[u8]) {
        let len = u32_at(p, 16).unwrap_or(0) as usize;
        let Some(sd) = p.get(20..20 + len) else {
            self.error(
                at + 16,
                29,
                format!(
                    "expected DescriptorLength {len} to fit the sk cell payload of {} bytes",
                    p.len()
                ),
            );
            return;
        };
        if let Err(e) = validate_descriptor(sd) {
            self.error(at + 20, 29, format!("security descriptor: {e}"));
        }
    }

    // ----- orphans --------------------------------------------------------

    fn orphans(&mut self) {
        let mut n = 0usize;
        let mut first = Vec::new();
        for (c, &m) in self.cells.iter().zip(&self.marks) {
            if c.alloc && m == 0 {
                n += 1;
                if first.len() < MAX_ORPHAN_REPORTS {
                    first.push(*c);
                }
            }
        }
        for c in first {
            let at = BINS + c.idx as usize;
            let sig = sig_text(self.data.get(at + 4..at + 6).unwrap_or(b""));
            self.warn(
                at as u64,
                10,
                format!(
                    "expected every allocated cell to be referenced, found an orphan cell of {} bytes (starts with {sig})",
                    c.size
                ),
            );
        }
        if n > MAX_ORPHAN_REPORTS {
            self.warn(
                BINS as u64,
                10,
                format!(
                    "{} more orphan cells not listed ({n} in total)",
                    n - MAX_ORPHAN_REPORTS
                ),
            );
        }
    }
}

/// The base-block checksum: XOR of the first 127 words with Windows'
/// fix-ups for 0 and 0xFFFFFFFF.
fn checksum(d: &[u8]) -> u32 {
    let x = (0..127).fold(0u32, |x, i| x ^ u32_at(d, i * 4).unwrap_or(0));
    match x {
        0 => 1,
        0xFFFF_FFFF => 0xFFFF_FFFE,
        v => v,
    }
}

// ----- security descriptors ------------------------------------------------

const SE_DACL_PRESENT: u16 = 0x0004;
const SE_SACL_PRESENT: u16 = 0x0010;
const SE_SELF_RELATIVE: u16 = 0x8000;

/// Validates a self-relative security descriptor the way
/// `RtlValidRelativeSecurityDescriptor` does.
fn validate_descriptor(sd: &[u8]) -> Result<(), String> {
    if sd.len() < 20 {
        return Err(format!("expected at least 20 bytes, found {}", sd.len()));
    }
    if sd[0] != 1 {
        return Err(format!("expected revision 1, found {}", sd[0]));
    }
    let control = u16_at(sd, 2).unwrap_or(0);
    if control & SE_SELF_RELATIVE == 0 {
        return Err(format!(
            "expected the self-relative control bit, found control {control:#06x}"
        ));
    }
    let off = |o| u32_at(sd, o).unwrap_or(0) as usize;
    for (name, o) in [("owner", off(4)), ("group", off(8))] {
        if o != 0 {
            component(sd, name, o)?;
            let sid = &sd[o..];
            sid_len(sid).map_err(|e| format!("{name} SID at {o:#x}: {e}"))?;
        }
    }
    for (name, bit, o) in [
        ("SACL", SE_SACL_PRESENT, off(12)),
        ("DACL", SE_DACL_PRESENT, off(16)),
    ] {
        if control & bit != 0 && o != 0 {
            component(sd, name, o)?;
            validate_acl(&sd[o..]).map_err(|e| format!("{name} at {o:#x}: {e}"))?;
        }
    }
    Ok(())
}

fn component(sd: &[u8], name: &str, o: usize) -> Result<(), String> {
    if o < 20 || o % 4 != 0 || o >= sd.len() {
        return Err(format!(
            "expected the {name} offset to be 4-aligned within [20, {}), found {o:#x}",
            sd.len()
        ));
    }
    Ok(())
}

/// Validates a SID at the start of `b`; returns its length.
fn sid_len(b: &[u8]) -> Result<usize, String> {
    if b.len() < 8 {
        return Err(format!("expected at least 8 bytes, found {}", b.len()));
    }
    if b[0] != 1 {
        return Err(format!("expected SID revision 1, found {}", b[0]));
    }
    let n = usize::from(b[1]);
    if n > 15 {
        return Err(format!("expected at most 15 sub-authorities, found {n}"));
    }
    let len = 8 + 4 * n;
    if len > b.len() {
        return Err(format!("expected {len} bytes of SID, found {}", b.len()));
    }
    Ok(len)
}

fn validate_acl(b: &[u8]) -> Result<(), String> {
    if b.len() < 8 {
        return Err(format!(
            "expected an 8-byte ACL header, found {} bytes",
            b.len()
        ));
    }
    if !(2..=4).contains(&b[0]) {
        return Err(format!("expected ACL revision 2..=4, found {}", b[0]));
    }
    let size = usize::from(u16_at(b, 2).unwrap_or(0));
    let count = usize::from(u16_at(b, 4).unwrap_or(0));
    if size < 8 || size > b.len() {
        return Err(format!(
            "expected an AclSize in [8, {}], found {size}",
            b.len()
        ));
    }
    let mut pos = 8;
    for k in 0..count {
        if pos + 4 > size {
            return Err(format!(
                "expected {count} ACEs within AclSize {size}, found room for {k}"
            ));
        }
        let ace_type = b[pos];
        let ace_size = usize::from(u16_at(b, pos + 2).unwrap_or(0));
        if ace_size < 4 || ace_size % 4 != 0 || pos + ace_size > size {
            return Err(format!(
                "ACE {k}: expected a size that is a multiple of 4 within the ACL, found {ace_size} at {pos:#x}"
            ));
        }
        let ace = &b[pos..pos + ace_size];
        let sid_at = match ace_type {
            // Allowed, denied, audit, alarm, mandatory label, resource
            // attribute, scoped policy, process trust label, and their
            // callback forms: mask then SID.
            0..=3 | 9 | 0x0A | 0x0D | 0x0E | 0x11..=0x14 => Some(8),
            // Object ACEs: mask, object flags, optional GUIDs, SID.
            5..=8 | 0x0B | 0x0C | 0x0F | 0x10 => {
                let flags = u32_at(ace, 8).unwrap_or(0);
                Some(12 + if flags & 1 != 0 { 16 } else { 0 } + if flags & 2 != 0 { 16 } else { 0 })
            }
            _ => None,
        };
        if let Some(s) = sid_at {
            let sid = ace.get(s..).unwrap_or(&[]);
            sid_len(sid).map_err(|e| format!("ACE {k} (type {ace_type:#x}) SID: {e}"))?;
        }
        pos += ace_size;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_validation() {
        // Owner S-1-5-32-544, group S-1-5-18, DACL with one ACE for S-1-5-18.
        let mut sd = vec![1u8, 0, 0x04, 0x80];
        let dacl_off = 20u32;
        let acl_len = 8 + 20; // header + ACE (4 + 4 + 12-byte SID)
        let owner_off = dacl_off + acl_len;
        let group_off = owner_off + 16;
        sd.extend_from_slice(&owner_off.to_le_bytes());
        sd.extend_from_slice(&group_off.to_le_bytes());
        sd.extend_from_slice(&0u32.to_le_bytes());
        sd.extend_from_slice(&dacl_off.to_le_bytes());
        sd.extend_from_slice(&[2, 0]);
        sd.extend_from_slice(&(acl_len as u16).to_le_bytes());
        sd.extend_from_slice(&[1, 0, 0, 0]);
        sd.extend_from_slice(&[0, 0, 20, 0, 0x3F, 0, 0x0F, 0]);
        sd.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]);
        sd.extend_from_slice(&[1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0]);
        sd.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]);
        assert_eq!(validate_descriptor(&sd), Ok(()));

        let mut bad = sd.clone();
        bad[0] = 2;
        assert!(validate_descriptor(&bad).is_err());
        let mut bad = sd.clone();
        bad[3] = 0; // not self-relative
        assert!(validate_descriptor(&bad).is_err());
        let mut bad = sd.clone();
        bad[4] = 0x31; // misaligned owner
        assert!(validate_descriptor(&bad).is_err());
        let mut bad = sd.clone();
        bad[20] = 1; // ACL revision 1
        assert!(validate_descriptor(&bad).is_err());
        let mut bad = sd.clone();
        bad[24] = 2; // AceCount 2
        assert!(validate_descriptor(&bad).is_err());
        let mut bad = sd.clone();
        bad[30] = 22; // ACE size not a multiple of 4
        assert!(validate_descriptor(&bad).is_err());
        let mut bad = sd.clone();
        bad[owner_off as usize + 1] = 16; // too many sub-authorities
        assert!(validate_descriptor(&bad).is_err());
        assert!(validate_descriptor(&sd[..group_off as usize + 4]).is_err());
    }

    /// A self-made version 1.5 hive: root "ROOT" with subkeys "a" and "B"
    /// (lh), one inline DWORD value "v" on the root, one shared sk.
    fn tiny_hive() -> Vec<u8> {
        fn put(d: &mut [u8], o: usize, v: u32) {
            d[o..o + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn nk(d: &mut [u8], cell: usize, size: u32, flags: u16, parent: u32, name: &[u8]) {
            let p = BINS + cell + 4;
            put(d, p - 4, size.wrapping_neg());
            d[p..p + 2].copy_from_slice(b"nk");
            d[p + 2..p + 4].copy_from_slice(&flags.to_le_bytes());
            put(d, p + 16, parent);
            for o in [28, 32, 40, 48] {
                put(d, p + o, NIL);
            }
            put(d, p + 44, 0x168);
            d[p + 72..p + 74].copy_from_slice(&(name.len() as u16).to_le_bytes());
            d[p + 76..p + 76 + name.len()].copy_from_slice(name);
        }
        let mut d = vec![0u8; 2 * 4096];
        d[0..4].copy_from_slice(b"regf");
        for (o, v) in [
            (4, 1),
            (8, 1),
            (20, 1),
            (24, 5),
            (32, 1),
            (36, 0x20),
            (40, 4096),
            (44, 1),
        ] {
            put(&mut d, o, v);
        }
        let sum = checksum(&d);
        put(&mut d, 508, sum);
        d[BINS..BINS + 4].copy_from_slice(b"hbin");
        put(&mut d, BINS + 8, 4096);
        nk(&mut d, 0x20, 88, 0x2C, NIL, b"ROOT");
        nk(&mut d, 0x78, 88, 0x20, 0x20, b"a");
        nk(&mut d, 0xD0, 88, 0x20, 0x20, b"B");
        let root = BINS + 0x24;
        put(&mut d, root + 20, 2);
        put(&mut d, root + 28, 0x128);
        put(&mut d, root + 36, 1);
        put(&mut d, root + 40, 0x140);
        put(&mut d, root + 52, 2);
        put(&mut d, root + 60, 2);
        put(&mut d, root + 64, 4);
        // lh
        put(&mut d, BINS + 0x128, 24u32.wrapping_neg());
        d[BINS + 0x12C..BINS + 0x130].copy_from_slice(b"lh\x02\x00");
        put(&mut d, BINS + 0x130, 0x78);
        put(&mut d, BINS + 0x134, lh_hash(&[u16::from(b'a')]));
        put(&mut d, BINS + 0x138, 0xD0);
        put(&mut d, BINS + 0x13C, lh_hash(&[u16::from(b'B')]));
        // value list and vk
        put(&mut d, BINS + 0x140, 8u32.wrapping_neg());
        put(&mut d, BINS + 0x144, 0x148);
        let vk = BINS + 0x14C;
        put(&mut d, vk - 4, 32u32.wrapping_neg());
        d[vk..vk + 4].copy_from_slice(b"vk\x01\x00");
        put(&mut d, vk + 4, 0x8000_0004);
        put(&mut d, vk + 8, 7);
        put(&mut d, vk + 12, 4);
        d[vk + 16] = 1;
        d[vk + 20] = b'v';
        // sk with a descriptor: DACL {S-1-5-18}, owner S-1-5-32-544, group S-1-5-18
        let sk = BINS + 0x16C;
        put(&mut d, sk - 4, 104u32.wrapping_neg());
        d[sk..sk + 2].copy_from_slice(b"sk");
        put(&mut d, sk + 4, 0x168);
        put(&mut d, sk + 8, 0x168);
        put(&mut d, sk + 12, 3);
        let sd = tiny_descriptor();
        put(&mut d, sk + 16, sd.len() as u32);
        d[sk + 20..sk + 20 + sd.len()].copy_from_slice(&sd);
        put(&mut d, BINS + 0x1D0, (4096 - 0x1D0) as u32);
        d
    }

    fn tiny_descriptor() -> Vec<u8> {
        let mut sd = vec![1u8, 0, 0x04, 0x80];
        for v in [48u32, 64, 0, 20] {
            sd.extend_from_slice(&v.to_le_bytes());
        }
        sd.extend_from_slice(&[2, 0, 28, 0, 1, 0, 0, 0]);
        sd.extend_from_slice(&[0, 0, 20, 0, 0x3F, 0, 0x0F, 0]);
        sd.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]);
        sd.extend_from_slice(&[1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0]);
        sd.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0]);
        sd
    }

    fn rules(d: &[u8]) -> Vec<u32> {
        check_image("tiny", d).error_rules()
    }

    #[test]
    fn tiny_hive_is_clean() {
        let r = check_image("tiny", &tiny_hive());
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!((r.keys, r.values, r.security_cells), (3, 1, 1));
    }

    #[test]
    fn tiny_hive_corruptions() {
        let put = |d: &mut Vec<u8>, o: usize, v: u32| d[o..o + 4].copy_from_slice(&v.to_le_bytes());
        let orig = tiny_hive();
        // Siblings swapped.
        let mut d = orig.clone();
        let (a, b) = (d[0x1130..0x1138].to_vec(), d[0x1138..0x1140].to_vec());
        d[0x1130..0x1138].copy_from_slice(&b);
        d[0x1138..0x1140].copy_from_slice(&a);
        assert_eq!(rules(&d), [17]);
        // Wrong hash.
        let mut d = orig.clone();
        d[0x1134] ^= 1;
        assert_eq!(rules(&d), [18]);
        // Same name twice ("B" renamed "A").
        let mut d = orig.clone();
        d[BINS + 0xD4 + 76] = b'A';
        put(&mut d, 0x113C, lh_hash(&[u16::from(b'A')]));
        assert_eq!(rules(&d), [17]);
        // Cell size not a multiple of 8.
        let mut d = orig.clone();
        put(&mut d, BINS + 0x140, 12u32.wrapping_neg());
        assert!(rules(&d).contains(&8));
        // Reference count.
        let mut d = orig.clone();
        put(&mut d, BINS + 0x16C + 12, 2);
        assert_eq!(rules(&d), [28]);
        // Ring: Flink to a non-sk cell.
        let mut d = orig.clone();
        put(&mut d, BINS + 0x16C + 4, 0x140);
        assert!(rules(&d).contains(&27));
        // MaxNameLen / MaxValueNameLen / MaxValueDataLen below actual.
        for (o, v) in [(52, 1), (60, 1), (64, 3)] {
            let mut d = orig.clone();
            put(&mut d, BINS + 0x24 + o, v);
            assert_eq!(rules(&d), [19], "offset {o}");
        }
        // Inline data longer than 4 bytes.
        let mut d = orig.clone();
        put(&mut d, BINS + 0x14C + 4, 0x8000_0005);
        assert!(rules(&d).contains(&24));
        // Name stored as UTF-16 although it fits Latin-1: "a" → "a\0" w/o flag.
        let mut d = orig.clone();
        let p = BINS + 0x7C;
        d[p + 2] = 0;
        d[p + 72] = 2;
        assert!(rules(&d).contains(&13));
        // Parent pointer.
        let mut d = orig.clone();
        put(&mut d, BINS + 0x7C + 16, 0xD0);
        assert_eq!(rules(&d), [12]);
        // Volatile flag on disk.
        let mut d = orig.clone();
        d[BINS + 0x7C + 2] |= 1;
        assert_eq!(rules(&d), [11]);
        // A subkey list shared by two keys ("a" lists its own siblings,
        // itself included): caught as a double reference, no endless walk.
        let mut d = orig.clone();
        put(&mut d, BINS + 0x7C + 20, 2);
        put(&mut d, BINS + 0x7C + 28, 0x128);
        put(&mut d, BINS + 0x7C + 52, 2);
        assert!(rules(&d).contains(&10));
        // Descriptor: DACL AceCount too large.
        let mut d = orig.clone();
        d[BINS + 0x16C + 20 + 20 + 4] = 2;
        assert_eq!(rules(&d), [29]);
        // Base block: dirty and checksum.
        let mut d = orig.clone();
        put(&mut d, 4, 2);
        assert_eq!(rules(&d), [2, 3]);
        // Adjacent free cells are only a warning.
        let mut d = orig.clone();
        put(&mut d, BINS + 0x1D0, 0x20);
        put(&mut d, BINS + 0x1F0, (4096 - 0x1F0) as u32);
        let r = check_image("tiny", &d);
        assert!(r.is_clean());
        assert!(r.violations.iter().any(|v| v.rule == 9));
    }

    #[test]
    fn garbage_never_panics() {
        assert!(!check_image("x", b"").is_clean());
        assert!(!check_image("x", &[0u8; 5000]).is_clean());
        let mut d = vec![0u8; 4096 + 4096];
        d[0..4].copy_from_slice(b"regf");
        for seed in 0u32..200 {
            let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
            for b in d[4..].iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            d[4096..4100].copy_from_slice(b"hbin");
            d[4100..4104].copy_from_slice(&0u32.to_le_bytes());
            d[4104..4108].copy_from_slice(&4096u32.to_le_bytes());
            d[40..44].copy_from_slice(&4096u32.to_le_bytes());
            let _ = check_image("fuzz", &d);
        }
    }
}
