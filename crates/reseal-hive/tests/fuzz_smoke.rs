//! A stable-Rust fuzz smoke test: mutates small hives, logs and `.reg`
//! files (bit flips, truncations, splices, random u32 writes at cell headers
//! and inside cells) with a fixed seed for a bounded number of iterations,
//! and feeds each mutant to the same exercises as the libFuzzer targets in
//! `fuzz/` (open and read everything, edit, check, log replay, `.reg` parse
//! and import). No input may panic.
//!
//! `FUZZ_SMOKE_ITERS` sets the iterations per input family (default 300);
//! `FUZZ_SMOKE_SEED` the seed. Hives made with `Hive::create` are always
//! used; the shared corpus adds real ones when present.

#[path = "../fuzz/src/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use harness::{Op, Session, join_replay_input};
use reseal_hive::Hive;
use reseal_hive::regfile::{RegEncoding, RegVersion};

/// Small uncompressed hives of the shared corpus.
const HIVES: &[&str] = &[
    "hivex/images/minimal",
    "hivex/images/special",
    "hivex/images/rlenvalue_test_hive",
    "python-registry/tests/reg_samples/UNICODE_TESTS",
    "python-registry/tests/reg_samples/REORGANIZED_VALUES_TESTS",
    "yarp/hives_for_tests/TruncatedHive",
    "yarp/hives_for_tests/OffHive",
    "plaso/test_data/regf/100_sub_keys.hiv",
    "plaso/test_data/regf/corrupt_sub_key_list.hiv",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/BCD-Template",
];

/// A dirty hive and its two logs.
const DIRTY: (&str, &str, &str) = (
    "yarp/hives_for_tests/NewDirtyHive1/NewDirtyHive",
    "yarp/hives_for_tests/NewDirtyHive1/NewDirtyHive.LOG1",
    "yarp/hives_for_tests/NewDirtyHive1/NewDirtyHive.LOG2",
);

fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    p.is_dir().then_some(p)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// splitmix64: small, fixed-seed, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Offsets of the cell headers in the bins of a hive image (best effort).
fn cell_headers(b: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut bin = 4096usize;
    while bin + 32 <= b.len() && &b[bin..bin + 4] == b"hbin" {
        let size = u32::from_le_bytes([b[bin + 8], b[bin + 9], b[bin + 10], b[bin + 11]]) as usize;
        if size < 4096 || bin + size > b.len() {
            break;
        }
        let mut c = bin + 32;
        while c + 4 <= bin + size {
            out.push(c);
            let raw = i32::from_le_bytes([b[c], b[c + 1], b[c + 2], b[c + 3]]);
            let len = raw.unsigned_abs() as usize;
            if len < 8 {
                break;
            }
            c += len;
        }
        bin += size;
    }
    out
}

/// Values that hit boundaries when written over a field.
const INTERESTING: &[u32] = &[
    0,
    1,
    4,
    8,
    0x20,
    0x7F,
    0xFF,
    0x1000,
    0x3FD8,
    0x3FD9,
    0x7FFF_FFFF,
    0x8000_0000,
    0x8000_0004,
    0xFFFF_FFF8,
    0xFFFF_FFFF,
];

/// One mutation of `b`, chosen by `rng`; `headers` are cell header offsets
/// of the original image and `donors` other inputs for splices.
fn mutate(rng: &mut Rng, b: &mut Vec<u8>, headers: &[usize], donors: &[Vec<u8>]) {
    if b.is_empty() {
        b.push(rng.next() as u8);
        return;
    }
    let pick_u32 = |rng: &mut Rng| {
        if rng.below(2) == 0 {
            INTERESTING[rng.below(INTERESTING.len())]
        } else {
            rng.next() as u32
        }
    };
    match rng.below(8) {
        0 => {
            // Bit flips.
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            // Truncation (often at a page boundary).
            let n = if rng.below(2) == 0 {
                (rng.below(b.len() / 512 + 1)) * 512
            } else {
                rng.below(b.len())
            };
            b.truncate(n);
        }
        2 => {
            // Splice a piece of another input in.
            let d = &donors[rng.below(donors.len())];
            if !d.is_empty() {
                let from = rng.below(d.len());
                let n = 1 + rng.below((d.len() - from).min(4096));
                let to = rng.below(b.len());
                let end = (to + n).min(b.len());
                b[to..end].copy_from_slice(&d[from..from + (end - to)]);
            }
        }
        3 | 4 if !headers.is_empty() => {
            // A u32 at a cell header: its size, or a field of its record.
            let h = headers[rng.below(headers.len())];
            let off = h + if rng.below(3) == 0 {
                0
            } else {
                4 * rng.below(20)
            };
            if off + 4 <= b.len() {
                let v = pick_u32(rng);
                b[off..off + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        5 => {
            // A u32 in the base block (fields before the checksum).
            if b.len() >= 512 {
                let off = 4 * rng.below(127);
                let v = pick_u32(rng);
                b[off..off + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        6 => {
            // A random u32 anywhere.
            if b.len() >= 4 {
                let off = rng.below(b.len() - 3);
                let v = pick_u32(rng);
                b[off..off + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        _ => {
            // A run of bytes set to one value.
            let i = rng.below(b.len());
            let n = (1 + rng.below(64)).min(b.len() - i);
            let v = rng.next() as u8;
            b[i..i + n].fill(v);
        }
    }
}

/// Runs `f` and reports a panic with what reproduces it.
fn no_panic(what: &str, input: &[u8], f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        let dir = std::env::temp_dir().join("reseal-fuzz-smoke");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{what}-crash.bin"));
        let _ = std::fs::write(&path, input);
        panic!("{what} panicked; input saved to {}", path.display());
    }
}

/// Small valid hives made with the engine itself (no corpus needed).
fn created_hives() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for minor in [3, 5] {
        let mut s = Session::new(minor);
        for op in [
            Op::Create {
                parent: 0,
                name: vec![0, 7, 15],
            },
            Op::Create {
                parent: 0,
                name: vec![4, 5, 6],
            },
            Op::Create {
                parent: 1,
                name: vec![16],
            },
            Op::CreateMany {
                parent: 2,
                count: 40,
                stem: 3,
            },
            Op::SetValue {
                key: 1,
                name: vec![],
                value_type: 1,
                len: 10,
                seed: 1,
                by_id: false,
            },
            Op::SetValue {
                key: 2,
                name: vec![9],
                value_type: 3,
                len: 20_000,
                seed: 2,
                by_id: false,
            },
            Op::SetValue {
                key: 0,
                name: vec![11],
                value_type: 4,
                len: 4,
                seed: 3,
                by_id: false,
            },
            Op::SetValue {
                key: 0,
                name: vec![12],
                value_type: 3,
                len: 3,
                seed: 3,
                by_id: false,
            },
            Op::SetClass {
                key: 2,
                len: Some(12),
                seed: 4,
            },
            Op::SetSecurity { key: 3, variant: 1 },
        ] {
            s.apply(&op);
        }
        out.push(s.hive.to_bytes());
    }
    out
}

fn load_corpus(rels: &[&str]) -> Vec<Vec<u8>> {
    let Some(c) = corpus() else {
        reseal_testkit::require(false, "the shared corpus (fuzz smoke seeds)");
        return Vec::new();
    };
    rels.iter()
        .filter_map(|r| std::fs::read(c.join(r)).ok())
        .collect()
}

fn seed() -> u64 {
    env_u64("FUZZ_SMOKE_SEED", 0x5EA1_F022)
}

fn iters() -> usize {
    env_u64("FUZZ_SMOKE_ITERS", 300) as usize
}

#[test]
fn mutated_hives_do_not_panic() {
    let mut inputs = created_hives();
    inputs.extend(load_corpus(HIVES));
    let headers: Vec<Vec<usize>> = inputs.iter().map(|b| cell_headers(b)).collect();
    let mut rng = Rng(seed());
    for it in 0..iters() * inputs.len() {
        let i = it % inputs.len();
        let mut b = inputs[i].clone();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut b, &headers[i], &inputs);
        }
        let sel = rng.next() as u8;
        no_panic("open_read", &b, || harness::open_read(&b, sel));
    }
}

#[test]
fn mutated_logs_do_not_panic() {
    let parts = load_corpus(&[DIRTY.0, DIRTY.1, DIRTY.2]);
    if !reseal_testkit::require(parts.len() == 3, "the dirty corpus hive with its logs") {
        return;
    }
    let mut rng = Rng(seed() ^ 1);
    let log_headers = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..iters() {
        let mut p = parts.clone();
        for _ in 0..1 + rng.below(3) {
            let which = rng.below(3);
            // Mutate mostly the logs, past their base block too.
            let which = if which == 0 && rng.below(2) == 0 {
                1 + rng.below(2)
            } else {
                which
            };
            mutate(&mut rng, &mut p[which], &log_headers[which], &parts);
        }
        let input = join_replay_input(&p[0], &p[1], &p[2]);
        no_panic("replay", &input, || harness::replay(&p[0], &p[1], &p[2]));
    }
}

#[test]
fn mutated_images_do_not_panic_the_checker() {
    let mut inputs = created_hives();
    inputs.extend(load_corpus(HIVES));
    let headers: Vec<Vec<usize>> = inputs.iter().map(|b| cell_headers(b)).collect();
    let mut rng = Rng(seed() ^ 2);
    for it in 0..iters() * inputs.len() {
        let i = it % inputs.len();
        let mut b = inputs[i].clone();
        for _ in 0..1 + rng.below(4) {
            mutate(&mut rng, &mut b, &headers[i], &inputs);
        }
        no_panic("check", &b, || harness::check_bytes(&b));
    }
}

#[test]
fn mutated_reg_files_do_not_panic() {
    let mut hives = created_hives();
    hives.extend(load_corpus(HIVES));
    let mut docs = Vec::new();
    for (i, b) in hives.into_iter().enumerate() {
        let Ok(h) = Hive::from_bytes("reg", b) else {
            continue;
        };
        if let Ok(w) = h.export_reg("", "", RegVersion::V5) {
            let enc = if i % 2 == 0 {
                RegEncoding::Utf16Le
            } else {
                RegEncoding::Utf8
            };
            docs.push(w.finish(enc));
        }
        if let Ok(w) = h.export_reg("", "", RegVersion::V4) {
            docs.push(w.finish(RegEncoding::Utf8));
        }
    }
    let mut rng = Rng(seed() ^ 3);
    for it in 0..iters() * docs.len().max(1) {
        let Some(d) = docs.get(it % docs.len().max(1)) else {
            break;
        };
        let mut b = d.clone();
        for _ in 0..1 + rng.below(3) {
            mutate(&mut rng, &mut b, &[], &docs);
        }
        no_panic("parse_reg", &b, || harness::parse_reg_bytes(&b));
    }
}

#[test]
fn random_edit_sequences_keep_the_hive_clean() {
    let mut rng = Rng(seed() ^ 4);
    for _ in 0..iters() / 10 {
        let len = 16 + rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        no_panic("edit_sequence", &bytes, || {
            let mut r = harness::ByteReader::new(&bytes);
            let minor = [3, 4, 5, 6][usize::from(r.u8() % 4)];
            let mut s = Session::new(minor);
            let mut n = 0;
            while !r.is_empty() && n < 48 {
                s.apply(&Op::decode(&mut r));
                n += 1;
            }
            s.verify();
        });
    }
}
