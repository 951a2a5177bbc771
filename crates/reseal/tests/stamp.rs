//! `reseal stamp`: clones of one generalized root share no SID, MachineGuid
//! or computer name; a seed makes stamping reproducible (whatever the
//! number of threads), no seed makes it random.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::Path;

use reseal::backend::dir::DirBackend;
use reseal::generalize::generalize;
use reseal::options::GeneralizeOptions;
use reseal::stamp::{CloneNames, StampOptions, stamp};
use reseal_hive::regfile::RegVersion;
use reseal_hive::{Hive, Sid};
use reseal_testkit::build_windows_root;

/// A generalized synthetic root in `dir/src`.
fn generalized(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    build_windows_root(&src, None).expect("build");
    let mut b = DirBackend::open(&src).expect("open");
    let opts = GeneralizeOptions {
        seed: Some(1),
        ..GeneralizeOptions::default()
    };
    generalize(&mut b, &opts).expect("generalize");
    src
}

fn machine_sid(root: &Path) -> String {
    let sec = Hive::open(root.join("Windows/System32/config/SECURITY")).expect("SECURITY");
    let k = sec.key(r"Policy\PolAcDmS").expect("key");
    let v = sec.value(k, "").expect("value").expect("PolAcDmS");
    Sid::from_bytes(&v.data).expect("sid").0.to_string()
}

fn sz(root: &Path, hive: &str, key: &str, name: &str) -> String {
    let h = Hive::open(root.join("Windows/System32/config").join(hive)).expect("hive");
    let k = h.key(key).expect("key");
    let v = h.value(k, name).expect("value").expect("present");
    let units: Vec<u16> = v
        .data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// A digest of a root: plain files byte for byte, hives by their exported
/// contents (key timestamps and header times record when they were saved).
fn digest(root: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let rel = p.strip_prefix(root).expect("prefix").display().to_string();
            let mut h = DefaultHasher::new();
            if p.is_dir() {
                stack.push(p);
                "dir".hash(&mut h);
            } else {
                let data = fs::read(&p).expect("read");
                if data.starts_with(b"regf") && data.len() >= 8192 {
                    let hive = Hive::open(&p).expect("hive");
                    hive.export_reg("", "", RegVersion::V5)
                        .expect("export")
                        .finish_string()
                        .hash(&mut h);
                } else {
                    data.hash(&mut h);
                }
            }
            out.insert(rel, h.finish());
        }
    }
    out
}

fn opts(out: &Path, count: usize, seed: Option<u64>) -> StampOptions {
    StampOptions {
        count,
        out: out.to_path_buf(),
        names: CloneNames::Pattern("WEB-{n:03}".into()),
        seed,
    }
}

#[test]
fn clones_are_unique_and_seeds_reproduce_them() {
    let t = tempfile::tempdir().expect("tempdir");
    let src = generalized(t.path());
    let src_sid = machine_sid(&src);

    let a = stamp(&src, &opts(&t.path().join("a"), 3, Some(7))).expect("stamp a");
    assert_eq!(a.clones.len(), 3);
    let mut sids = Vec::new();
    let mut guids = Vec::new();
    let mut names = Vec::new();
    for (i, c) in a.clones.iter().enumerate() {
        let want = format!("WEB-{:03}", i + 1);
        assert_eq!(c.name, want);
        assert_eq!(
            c.path,
            t.path().join("a").canonicalize().expect("c").join(&want)
        );
        let sid = machine_sid(&c.path);
        assert_eq!(c.sid[0].new, sid);
        assert_eq!(c.sid[0].old, src_sid);
        let guid = sz(
            &c.path,
            "SOFTWARE",
            r"Microsoft\Cryptography",
            "MachineGuid",
        );
        assert_eq!(guid, c.machine_guid);
        let name = sz(
            &c.path,
            "SYSTEM",
            r"ControlSet001\Control\ComputerName\ComputerName",
            "ComputerName",
        );
        assert_eq!(name, want);
        // The source SID is gone from every hive of the clone.
        let old: Sid = src_sid.parse().expect("sid");
        for hive in ["SAM", "SECURITY", "SOFTWARE"] {
            let h = Hive::open(c.path.join("Windows/System32/config").join(hive)).expect("h");
            assert!(h.find_sids(&old).expect("scan").occurrences.is_empty());
            assert_eq!(h.check().errors().count(), 0);
        }
        sids.push(sid);
        guids.push(guid);
        names.push(name);
    }
    for list in [&sids, &guids, &names] {
        let mut u = list.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), list.len(), "{list:?}");
    }
    assert!(!sids.contains(&src_sid));

    // Same seed, one thread: the same clones.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let b = pool
        .install(|| stamp(&src, &opts(&t.path().join("b"), 3, Some(7))))
        .expect("stamp b");
    for (ca, cb) in a.clones.iter().zip(&b.clones) {
        assert_eq!(ca.sid[0].new, cb.sid[0].new);
        assert_eq!(ca.machine_guid, cb.machine_guid);
        assert_eq!(digest(&ca.path), digest(&cb.path), "{}", ca.name);
    }

    // No seed: different identities.
    let c = stamp(&src, &opts(&t.path().join("c"), 2, None)).expect("stamp c");
    for cc in &c.clones {
        assert!(!sids.contains(&cc.sid[0].new));
        assert!(!guids.contains(&cc.machine_guid));
        assert!(!cc.sid[0].seeded);
    }
    assert_ne!(c.clones[0].sid[0].new, c.clones[1].sid[0].new);

    // Existing clone folders are refused before anything is copied.
    let e = stamp(&src, &opts(&t.path().join("a"), 1, Some(9)));
    assert!(
        matches!(e, Err(reseal::ResealError::InvalidInput { .. })),
        "{e:?}"
    );
}

#[test]
fn bad_names_are_refused() {
    let t = tempfile::tempdir().expect("tempdir");
    let src = t.path().join("src");
    build_windows_root(&src, None).expect("build");
    for names in [
        CloneNames::Pattern("{n}".into()),
        CloneNames::Pattern("WAY-TOO-LONG-NAME-{n}".into()),
        CloneNames::Pattern("WEB".into()),
        CloneNames::List(vec!["A".into(), "a".into()]),
        CloneNames::List(vec!["A/B".into(), "C".into()]),
    ] {
        let o = StampOptions {
            count: 2,
            out: t.path().join("out"),
            names,
            seed: None,
        };
        assert!(
            matches!(
                stamp(&src, &o),
                Err(reseal::ResealError::InvalidInput { .. })
            ),
            "{o:?}"
        );
    }
    assert!(!t.path().join("out").exists());
}
