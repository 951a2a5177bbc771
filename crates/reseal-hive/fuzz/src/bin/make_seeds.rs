//! Writes seed corpora for every fuzz target into `fuzz/corpus/<target>/`,
//! built at run time from small hives of the shared corpus
//! (`../../../../shared/corpus` from this crate, or the directory given as
//! the first argument) and from hives made with `Hive::create`.
//!
//! Run from `crates/reseal-hive/fuzz`: `cargo run --release --bin make_seeds`.

use std::fs;
use std::path::{Path, PathBuf};

use reseal_hive::Hive;
use reseal_hive::regfile::{RegEncoding, RegVersion};
use reseal_hive_fuzz::harness::{Op, Session, join_replay_input};

/// Small uncompressed hives of the shared corpus.
const HIVES: &[&str] = &[
    "hivex/images/minimal",
    "hivex/images/special",
    "hivex/images/rlenvalue_test_hive",
    "python-registry/tests/reg_samples/UNICODE_TESTS",
    "python-registry/tests/reg_samples/REORGANIZED_VALUES_TESTS",
    "python-registry/tests/reg_samples/issue22.hive",
    "yarp/hives_for_tests/TruncatedHive",
    "yarp/hives_for_tests/OffHive",
    "plaso/test_data/regf/100_sub_keys.hiv",
    "plaso/test_data/regf/corrupt_sub_key_list.hiv",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/BCD-Template",
    "aiowinreg/tests/testdata/nt/sam.reg",
];

/// Dirty hives with their logs: (primary, LOG1, LOG2).
const DIRTY: &[(&str, &str, &str)] = &[
    (
        "yarp/hives_for_tests/NewDirtyHive1/NewDirtyHive",
        "yarp/hives_for_tests/NewDirtyHive1/NewDirtyHive.LOG1",
        "yarp/hives_for_tests/NewDirtyHive1/NewDirtyHive.LOG2",
    ),
    (
        "yarp/hives_for_tests/OldDirtyHive/OldDirtyHive",
        "yarp/hives_for_tests/OldDirtyHive/OldDirtyHive.LOG1",
        "yarp/hives_for_tests/OldDirtyHive/OldDirtyHive.LOG1",
    ),
    (
        "yarp/hives_for_tests/TruncatedDirtyHive",
        "yarp/hives_for_tests/OldLogWithRemnantData",
        "",
    ),
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create corpus dir");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn generated() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for minor in [3, 5] {
        let mut s = Session::new(minor);
        for (i, op) in [
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
            Op::SetClass {
                key: 2,
                len: Some(12),
                seed: 4,
            },
            Op::SetSecurity { key: 3, variant: 1 },
        ]
        .iter()
        .enumerate()
        {
            s.apply(op);
            if i == 2 {
                out.push(s.hive.to_bytes());
            }
        }
        out.push(s.hive.to_bytes());
    }
    out
}

fn main() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| here.join("../../../../shared/corpus"));
    let out = here.join("corpus");
    let mut hives: Vec<(String, Vec<u8>)> = generated()
        .into_iter()
        .enumerate()
        .map(|(i, b)| (format!("created-{i}"), b))
        .collect();
    if corpus.is_dir() {
        for rel in HIVES {
            if let Ok(b) = fs::read(corpus.join(rel)) {
                hives.push((rel.replace('/', "_"), b));
            }
        }
        for (p, l1, l2) in DIRTY {
            let read = |r: &str| {
                if r.is_empty() {
                    Vec::new()
                } else {
                    fs::read(corpus.join(r)).unwrap_or_default()
                }
            };
            let seed = join_replay_input(&read(p), &read(l1), &read(l2));
            write(&out.join("replay"), &p.replace('/', "_"), &seed);
        }
    } else {
        eprintln!("notice: {} absent; only generated seeds", corpus.display());
    }
    for (name, bytes) in &hives {
        write(&out.join("open_read"), name, bytes);
        write(&out.join("check"), name, bytes);
        write(
            &out.join("replay"),
            name,
            &join_replay_input(bytes, &[], &[]),
        );
        if let Ok(h) = Hive::from_bytes(name, bytes.clone()) {
            if let Ok(w) = h.export_reg("", "", RegVersion::V5) {
                write(
                    &out.join("parse_reg"),
                    &format!("{name}.v5.utf16"),
                    &w.finish(RegEncoding::Utf16Le),
                );
            }
            if let Ok(w) = h.export_reg("", "HKEY_LOCAL_MACHINE\\X", RegVersion::V4) {
                write(
                    &out.join("parse_reg"),
                    &format!("{name}.v4.utf8"),
                    &w.finish(RegEncoding::Utf8),
                );
            }
        }
    }
    // Edit sequences: a few fixed byte patterns (the decoder reads anything).
    for (i, seed) in [
        &b"\x01\x00\x00\x00\x02\x01\x02\x08\x01\x00\x01\x05\x81\x00\x40\x07"[..],
        &b"\x02\x00\x00\x00\x03\x07\x0f\x10\x09\x01\x00\x01\x02\x03\x8a\x0d"[..],
        &b"\x03\x04\x00\x00\x10\x02\x05\x00\x00\x0e\x01\x00\x03\x0b\x02\x00\x00"[..],
    ]
    .iter()
    .enumerate()
    {
        write(&out.join("edit_sequence"), &format!("seq-{i}"), seed);
    }
    println!("seeds written under {}", out.display());
}
