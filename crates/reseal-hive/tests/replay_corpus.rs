//! Transaction-log replay against real dirty hives and their logs, plus
//! hand-made damaged logs.

use std::path::{Path, PathBuf};

use reseal_hive::HiveError;
use reseal_hive::base_block::{BaseBlock, store_checksum};
use reseal_hive::bytes::{put_u32, u32_at};
use reseal_hive::log::{LogFile, LogFormat, Recovery, find_log_paths, marvin32, recover};

const SEED: u64 = 0x82EF_4D88_7A4E_55C5;

fn corpus(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    if dir.is_dir() {
        Some(dir)
    } else {
        reseal_testkit::require(false, &format!("the shared corpus ({test})"));
        None
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn read_xz(p: &Path) -> Vec<u8> {
    let raw = read(p);
    let mut out = Vec::new();
    lzma_rs::xz_decompress(&mut std::io::Cursor::new(raw), &mut out)
        .unwrap_or_else(|e| panic!("{}: {e:?}", p.display()));
    out
}

fn log_file(p: &Path) -> LogFile {
    LogFile {
        name: p.file_name().unwrap().to_string_lossy().into_owned(),
        bytes: read(p),
    }
}

fn xz_log(p: &Path) -> LogFile {
    LogFile {
        name: p.file_name().unwrap().to_string_lossy().into_owned(),
        bytes: read_xz(p),
    }
}

/// Asserts what a recovered image must satisfy: clean base block and
/// contiguous bins covering Length.
fn assert_clean(what: &str, data: &[u8]) -> BaseBlock {
    let bb = BaseBlock::parse(what, data).unwrap();
    assert_eq!(bb.seq1, bb.seq2, "{what}: sequence numbers");
    assert!(bb.checksum_ok, "{what}: checksum");
    assert_eq!(bb.file_type, 0, "{what}: file type");
    bb.validate_primary(what).unwrap();
    let end = 4096 + bb.length as usize;
    assert!(data.len() >= end, "{what}: file shorter than 4096 + Length");
    let mut pos = 4096;
    while pos < end {
        assert_eq!(
            &data[pos..pos + 4],
            b"hbin",
            "{what}: bin signature at {pos:#x}"
        );
        assert_eq!(
            u32_at(data, pos + 4).unwrap() as usize,
            pos - 4096,
            "{what}: bin offset at {pos:#x}"
        );
        let size = u32_at(data, pos + 8).unwrap() as usize;
        assert!(
            size >= 4096 && size % 4096 == 0 && pos + size <= end,
            "{what}: bin size at {pos:#x}"
        );
        pos += size;
    }
    bb
}

fn dirty_without_logs(r: reseal_hive::Result<Recovery>) -> String {
    match r {
        Err(HiveError::DirtyWithoutLogs { reason, .. }) => reason,
        Err(e) => panic!("expected DirtyWithoutLogs, got error {e}"),
        Ok(r) => panic!(
            "expected DirtyWithoutLogs, got a recovery applying {:?}",
            r.applied
        ),
    }
}

// ---------------------------------------------------------------- yarp

fn yarp(dir: &Path) -> PathBuf {
    dir.join("yarp/hives_for_tests")
}

#[test]
fn yarp_new_dirty_hive1_is_byte_identical_to_windows10() {
    let Some(c) = corpus("yarp_new_dirty_hive1_is_byte_identical_to_windows10") else {
        return;
    };
    let d = yarp(&c).join("NewDirtyHive1");
    let primary = read(&d.join("NewDirtyHive"));
    let expected = read(&d.join("RecoveredHive_Windows10"));
    let l1 = log_file(&d.join("NewDirtyHive.LOG1"));
    let l2 = log_file(&d.join("NewDirtyHive.LOG2"));
    // The order the logs are given in must not matter.
    for logs in [vec![l1.clone(), l2.clone()], vec![l2.clone(), l1.clone()]] {
        let r = recover("NewDirtyHive", &primary, &logs).unwrap();
        assert!(
            r.data == expected,
            "recovered image differs from RecoveredHive_Windows10"
        );
        let got: Vec<_> = r
            .applied
            .iter()
            .map(|a| {
                (
                    a.name.as_str(),
                    a.format,
                    a.entries,
                    a.first_sequence,
                    a.last_sequence,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("NewDirtyHive.LOG1", LogFormat::New, 1, 2, 2),
                ("NewDirtyHive.LOG2", LogFormat::New, 3, 3, 5)
            ]
        );
        assert_eq!(r.dirty_pages, 4);
        assert_eq!(r.max_log_sequence, Some(5));
        let bb = assert_clean("NewDirtyHive1", &r.data);
        assert_eq!(bb.seq1, 6, "last applied entry + 1, as Windows 10 wrote");
    }
}

#[test]
fn yarp_new_dirty_hive2_uses_only_log2() {
    let Some(c) = corpus("yarp_new_dirty_hive2_uses_only_log2") else {
        return;
    };
    let d = yarp(&c).join("NewDirtyHive2");
    let primary = read(&d.join("NewDirtyHive"));
    let logs = [
        log_file(&d.join("NewDirtyHive.LOG1")),
        log_file(&d.join("NewDirtyHive.LOG2")),
    ];
    let r = recover("NewDirtyHive", &primary, &logs).unwrap();
    // Primary is 4/3: LOG1 (header 2) is stale, LOG2 (3..5) applies.
    assert_eq!(r.applied.len(), 1);
    assert_eq!(r.applied[0].name, "NewDirtyHive.LOG2");
    assert_eq!(
        (r.applied[0].first_sequence, r.applied[0].last_sequence),
        (3, 5)
    );
    let bb = assert_clean("NewDirtyHive2", &r.data);
    assert_eq!(bb.seq1, 6);
    assert_eq!(r.max_log_sequence, Some(5));
}

fn recover_old_dirty_hive(c: &Path) -> Recovery {
    let d = yarp(c).join("OldDirtyHive");
    let primary = read(&d.join("OldDirtyHive"));
    let logs = [
        log_file(&d.join("OldDirtyHive.LOG1")),
        log_file(&d.join("OldDirtyHive.LOG2")),
    ];
    recover("OldDirtyHive", &primary, &logs).unwrap()
}

#[test]
fn yarp_old_dirty_hive_matches_windows7() {
    let Some(c) = corpus("yarp_old_dirty_hive_matches_windows7") else {
        return;
    };
    let r = recover_old_dirty_hive(&c);
    let expected = read(&yarp(&c).join("OldDirtyHive/RecoveredHive_Windows7"));
    assert_eq!(r.applied.len(), 1);
    assert_eq!(r.applied[0].name, "OldDirtyHive.LOG1");
    assert_eq!(r.applied[0].format, LogFormat::Old);
    let bb = assert_clean("OldDirtyHive", &r.data);
    assert_eq!(bb.seq1, 5);
    assert_eq!(r.data.len(), expected.len());
    let eb = BaseBlock::parse("RecoveredHive_Windows7", &expected).unwrap();
    assert_eq!(
        (bb.length, bb.root, bb.minor),
        (eb.length, eb.root, eb.minor)
    );
    // The bins must be Windows' except the first bin's timestamp and one
    // byte Windows changed after recovery. (The base block differs: Windows
    // 7 flushed again afterwards, bumping sequence numbers and timestamp.)
    // The timestamp field is 8 bytes (0x1014..0x101C); Windows' later flush
    // changed its bytes 0x1014..=0x1018.
    let diffs: Vec<usize> = (4096..expected.len())
        .filter(|&i| r.data[i] != expected[i])
        .filter(|&i| !(0x1014..0x101C).contains(&i) && i != 0x6BDC8)
        .collect();
    assert!(
        diffs.is_empty(),
        "differences at {:#x?}",
        &diffs[..diffs.len().min(16)]
    );
    // Our first-bin timestamp is the one the log recorded.
    assert_eq!(
        u64::from_le_bytes(r.data[0x1014..0x101C].try_into().unwrap()),
        bb.timestamp
    );
    // One per set bit of the dirty vector (= the 512-byte pages in the log).
    assert_eq!(r.dirty_pages, 64);
    assert_eq!(r.max_log_sequence, Some(5));
}

#[test]
fn yarp_bad_base_block_hive_recovers_from_old_log() {
    let Some(c) = corpus("yarp_bad_base_block_hive_recovers_from_old_log") else {
        return;
    };
    let d = yarp(&c).join("BadBaseBlockHive");
    let primary = read(&d.join("BadBaseBlockHive"));
    assert!(!BaseBlock::parse("p", &primary).unwrap().checksum_ok);
    let logs = [
        log_file(&d.join("BadBaseBlockHive.LOG1")),
        log_file(&d.join("BadBaseBlockHive.LOG2")),
    ];
    let r = recover("BadBaseBlockHive", &primary, &logs).unwrap();
    assert_eq!(r.applied.len(), 1);
    assert_eq!(r.applied[0].name, "BadBaseBlockHive.LOG1");
    assert_eq!(r.applied[0].format, LogFormat::Old);
    let bb = assert_clean("BadBaseBlockHive", &r.data);
    assert_eq!(
        bb.minor, 3,
        "base block taken from the log (the primary's says 1)"
    );
    // Same hive as OldDirtyHive with a damaged base block: same bins.
    let old = recover_old_dirty_hive(&c);
    assert!(r.data[4096..] == old.data[4096..]);
}

#[test]
fn yarp_bad_logs_are_refused() {
    let Some(c) = corpus("yarp_bad_logs_are_refused") else {
        return;
    };
    let cases = [
        ("BadLogHive1", "BadLogHive.LOG1", "checksum"),
        ("BadLogHive2", "BadLogHive.LOG1", "DIRT"),
        ("BadLogHive3", "BadLogHive.LOG1", "checksum"),
    ];
    for (dir, bad, why) in cases {
        let d = yarp(&c).join(dir);
        let primary = read(&d.join("BadLogHive"));
        let logs = [
            log_file(&d.join("BadLogHive.LOG1")),
            log_file(&d.join("BadLogHive.LOG2")),
        ];
        let reason = dirty_without_logs(recover(dir, &primary, &logs));
        assert!(
            reason.contains(bad) && reason.contains(why),
            "{dir}: {reason}"
        );
        assert!(reason.contains("BadLogHive.LOG2"), "{dir}: {reason}");
    }
}

#[test]
fn yarp_truncated_dirty_hive_without_logs() {
    let Some(c) = corpus("yarp_truncated_dirty_hive_without_logs") else {
        return;
    };
    let p = yarp(&c).join("TruncatedDirtyHive");
    assert!(find_log_paths(&p).is_empty());
    match recover("TruncatedDirtyHive", &read(&p), &[]) {
        Err(HiveError::DirtyWithoutLogs {
            primary,
            secondary,
            reason,
            ..
        }) => {
            assert_eq!((primary, secondary), (5, 4));
            assert!(reason.contains("no transaction log"), "{reason}");
        }
        other => panic!("expected DirtyWithoutLogs, got {other:?}"),
    }
}

// ---------------------------------------------------------------- regipy

#[test]
fn regipy_dirty_page_counts() {
    let Some(c) = corpus("regipy_dirty_page_counts") else {
        return;
    };
    let d = c.join("regipy/regipy_tests/data");
    let cases = [
        (
            "SYSTEM_B.xz",
            vec!["SYSTEM_B.LOG1.xz", "SYSTEM_B.LOG2.xz"],
            315usize,
            2130u32,
        ),
        (
            "transactions_NTUSER.DAT.xz",
            vec![
                "transactions_ntuser.dat.log1.xz",
                "transactions_ntuser.dat.log2.xz",
            ],
            132,
            588,
        ),
        (
            "UsrClass.dat.xz",
            vec!["UsrClass.dat.LOG1.xz", "UsrClass.dat.LOG2.xz"],
            158,
            300,
        ),
    ];
    for (hive, logs, pages, last) in cases {
        let primary = read_xz(&d.join(hive));
        let logs: Vec<LogFile> = logs.iter().map(|l| xz_log(&d.join(l))).collect();
        let r = recover(hive, &primary, &logs).unwrap();
        assert_eq!(r.dirty_pages, pages, "{hive}");
        assert_eq!(r.applied.last().unwrap().last_sequence, last, "{hive}");
        let bb = assert_clean(hive, &r.data);
        assert_eq!(bb.seq1, last + 1, "{hive}");
        assert_eq!(r.max_log_sequence, Some(last), "{hive}");
    }
}

// ---------------------------------------------------------------- DFIRArtifactMuseum

#[test]
fn museum_dirty_hives_with_logs_recover_clean() {
    let Some(c) = corpus("museum_dirty_hives_with_logs_recover_clean") else {
        return;
    };
    let m = c.join("DFIRArtifactMuseum/Windows");
    // (hive, expected last applied sequence number)
    let cases = [
        ("Amcache/Win10/APTSimulatorVM/Amcache.hve", 39),
        ("Amcache/Win10/RathbunVM/Amcache.hve", 81),
        ("Amcache/Win11/RathbunVM/Amcache.hve", 76),
        ("Registry/Win10/RathbunVM/BBI", 61),
        ("Registry/Win10/RathbunVM/DEFAULT", 110),
        ("Registry/Win10/RathbunVM/NTUSER.DAT", 232),
        ("Registry/Win10/RathbunVM/SECURITY", 110),
        ("Registry/Win10/RathbunVM/UsrClass.dat", 151),
        ("Registry/Win10/RathbunVM/LocalService/NTUSER.DAT", 38),
        ("Registry/Win10/RathbunVM/NetworkService/NTUSER.DAT", 436),
    ];
    for (rel, last) in cases {
        let p = m.join(rel);
        let primary = read(&p);
        let before = BaseBlock::parse(rel, &primary).unwrap();
        assert!(before.is_dirty(), "{rel} should be dirty");
        let paths = find_log_paths(&p);
        assert!(!paths.is_empty(), "{rel}: no logs found beside it");
        let logs: Vec<LogFile> = paths.iter().map(|p| log_file(p)).collect();
        let r = recover(rel, &primary, &logs).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let bb = assert_clean(rel, &r.data);
        assert!(!r.applied.is_empty() && r.dirty_pages > 0, "{rel}");
        assert_eq!(r.applied.last().unwrap().last_sequence, last, "{rel}");
        assert_eq!(bb.seq1, last + 1, "{rel}");
        // Chained logs continue each other without gaps.
        for w in r.applied.windows(2) {
            assert_eq!(w[1].first_sequence, w[0].last_sequence + 1, "{rel}");
        }
        assert!(
            r.applied.iter().all(|a| a.format == LogFormat::New),
            "{rel}"
        );
        // Unchanged parts of the base block stay the primary's.
        assert_eq!((bb.minor, bb.root), (before.minor, before.root), "{rel}");
    }
}

#[test]
fn museum_clean_hive_ignores_logs() {
    let Some(c) = corpus("museum_clean_hive_ignores_logs") else {
        return;
    };
    // SAM 34/34 next to logs at 32 and 33.
    let p = c.join("DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/SAM");
    let primary = read(&p);
    let logs: Vec<LogFile> = find_log_paths(&p).iter().map(|p| log_file(p)).collect();
    assert_eq!(logs.len(), 2);
    let r = recover("SAM", &primary, &logs).unwrap();
    assert!(r.applied.is_empty());
    assert_eq!(r.dirty_pages, 0);
    assert!(r.data == primary);
    assert_eq!(r.max_log_sequence, Some(33));

    // dfwinreg: clean NTUSER.DAT (132) with a stale single .LOG (131).
    let p = c.join("dfwinreg/test_data/NTUSER.DAT");
    let logs: Vec<LogFile> = find_log_paths(&p).iter().map(|p| log_file(p)).collect();
    assert_eq!(logs.len(), 1);
    let r = recover("NTUSER.DAT", &read(&p), &logs).unwrap();
    assert!(r.applied.is_empty());
    assert_eq!(r.max_log_sequence, Some(131));
}

#[test]
fn dirty_hives_without_logs_are_refused() {
    let Some(c) = corpus("dirty_hives_without_logs_are_refused") else {
        return;
    };
    let primary = read_xz(&c.join("regipy/regipy_tests/data/SYSTEM_WIN_10_1709.xz"));
    let reason = dirty_without_logs(recover("SYSTEM_WIN_10_1709", &primary, &[]));
    assert!(reason.contains("no transaction log"), "{reason}");

    for rel in [
        "dissect.target/tests/_data/plugins/os/windows/amcache/amcache-new.hve",
        "DFIRArtifactMuseum/Windows/Registry/Win10/BelkasoftCTF_InsiderThreat/DEFAULT",
        "DFIRArtifactMuseum/Windows/Registry/Win10/BelkasoftCTF_InsiderThreat/SECURITY",
    ] {
        let p = c.join(rel);
        let logs: Vec<LogFile> = find_log_paths(&p).iter().map(|p| log_file(p)).collect();
        assert!(logs.is_empty(), "{rel}");
        dirty_without_logs(recover(rel, &read(&p), &logs));
    }
}

// ---------------------------------------------------------------- find_log_paths

#[test]
fn find_log_paths_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for n in [
        "NTUSER.DAT",
        "ntuser.dat.LOG1",
        "NTUSER.dat.log2",
        "NTUSER.DAT.LOG3",
        "other.LOG",
    ] {
        std::fs::write(d.join(n), b"x").unwrap();
    }
    std::fs::create_dir(d.join("NTUSER.DAT.LOG")).unwrap(); // a directory is not a log
    let found = find_log_paths(&d.join("NTUSER.DAT"));
    assert_eq!(
        found,
        [d.join("ntuser.dat.LOG1"), d.join("NTUSER.dat.log2")]
    );
    // The exact spelling wins when several exist.
    std::fs::write(d.join("NTUSER.DAT.LOG1"), b"x").unwrap();
    let found = find_log_paths(&d.join("NTUSER.DAT"));
    assert_eq!(found[0], d.join("NTUSER.DAT.LOG1"));
    assert!(find_log_paths(&d.join("missing")).is_empty());
}

// ---------------------------------------------------------------- damaged inputs

/// Builds one HvLE entry with correct hashes.
fn entry(seq: u32, bins_size: u32, count: u32, refs: &[(u32, u32)], data: &[u8]) -> Vec<u8> {
    let mut e = vec![0u8; 40];
    e[0..4].copy_from_slice(b"HvLE");
    put_u32(&mut e, 12, seq);
    put_u32(&mut e, 16, bins_size);
    put_u32(&mut e, 20, count);
    for &(o, s) in refs {
        e.extend_from_slice(&o.to_le_bytes());
        e.extend_from_slice(&s.to_le_bytes());
    }
    e.extend_from_slice(data);
    e.resize(e.len().next_multiple_of(512), 0);
    let size = e.len() as u32;
    put_u32(&mut e, 4, size);
    let h1 = marvin32(&e[40..], SEED);
    e[24..32].copy_from_slice(&h1.to_le_bytes());
    let h2 = marvin32(&e[..32], SEED);
    e[32..40].copy_from_slice(&h2.to_le_bytes());
    e
}

/// A new-format log header taken from `primary` with sequence `seq`.
fn header(primary: &[u8], seq: u32) -> Vec<u8> {
    let mut h = primary[..512].to_vec();
    put_u32(&mut h, 4, seq);
    put_u32(&mut h, 8, seq);
    put_u32(&mut h, 28, 6);
    store_checksum(&mut h);
    h
}

fn new_dirty1(c: &Path) -> (Vec<u8>, LogFile, LogFile) {
    let d = yarp(c).join("NewDirtyHive1");
    (
        read(&d.join("NewDirtyHive")),
        log_file(&d.join("NewDirtyHive.LOG1")),
        log_file(&d.join("NewDirtyHive.LOG2")),
    )
}

#[test]
fn truncated_logs_never_panic_and_stop_cleanly() {
    let Some(c) = corpus("truncated_logs_never_panic_and_stop_cleanly") else {
        return;
    };
    let (primary, l1, l2) = new_dirty1(&c);
    // Entries of LOG2: 3 at 0x200, 4 at 0x2000, 5 at 0x8000..0xA000.
    let mut l2_cut = l2.clone();
    l2_cut.bytes.truncate(0x9000);
    let r = recover("p", &primary, &[l1.clone(), l2_cut]).unwrap();
    assert_eq!(
        r.applied[1].last_sequence, 4,
        "entry 5 is cut off, replay stops before it"
    );
    assert_eq!(assert_clean("cut", &r.data).seq1, 5);
    for n in [
        0, 1, 100, 511, 512, 513, 552, 4096, 0x1FFF, 0x2000, 0x2001, 0x7FFF, 0x8000, 0x9FFF,
    ] {
        let mut a = l1.clone();
        a.bytes.truncate(n.min(a.bytes.len()));
        let mut b = l2.clone();
        b.bytes.truncate(n);
        for logs in [
            vec![a.clone(), l2.clone()],
            vec![l1.clone(), b.clone()],
            vec![a.clone(), b.clone()],
        ] {
            match recover("p", &primary, &logs) {
                Ok(r) => {
                    assert_clean("truncated", &r.data);
                }
                Err(HiveError::DirtyWithoutLogs { .. }) | Err(HiveError::Corrupt { .. }) => {}
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
    // A truncated primary is still recovered where the log holds the pages,
    // and refused cleanly otherwise.
    for n in [512, 4096, 4200, 0x3000] {
        let _ = recover("p", &primary[..n], &[l1.clone(), l2.clone()]);
    }
}

#[test]
fn entry_with_bad_hash_stops_replay() {
    let Some(c) = corpus("entry_with_bad_hash_stops_replay") else {
        return;
    };
    let (primary, l1, mut l2) = new_dirty1(&c);
    l2.bytes[0x2000 + 0x100] ^= 0xFF; // page data of entry 4
    let r = recover("p", &primary, &[l1.clone(), l2.clone()]).unwrap();
    assert_eq!(r.applied.len(), 2);
    assert_eq!(
        (r.applied[1].first_sequence, r.applied[1].last_sequence),
        (3, 3)
    );
    assert_eq!(assert_clean("hash", &r.data).seq1, 4);

    // Damaged header hash of LOG1's only entry: LOG1 is unusable, LOG2 does
    // not continue anything, so nothing applies.
    let mut bad1 = l1.clone();
    bad1.bytes[0x200 + 12] ^= 1;
    let reason = dirty_without_logs(recover("p", &primary, &[bad1.clone()]));
    assert!(reason.contains("NewDirtyHive.LOG1"), "{reason}");
    // With LOG2 present it is eligible on its own (header 3 >= 2).
    let r = recover("p", &primary, &[bad1, l2]).unwrap();
    assert_eq!(r.applied.len(), 1);
}

#[test]
fn absurd_sizes_give_errors() {
    let Some(c) = corpus("absurd_sizes_give_errors") else {
        return;
    };
    let (primary, l1, _) = new_dirty1(&c);
    let page = primary[4096..8192].to_vec();
    let with_entry = |e: Vec<u8>| {
        let mut b = l1.bytes[..0x200 + 0x5E00].to_vec(); // header + entry 2
        b.extend_from_slice(&e);
        LogFile {
            name: "x.LOG1".into(),
            bytes: b,
        }
    };
    // Bins size beyond 2 GiB in an authentic entry.
    let e = entry(3, 0xFFFF_F000, 1, &[(0, 4096)], &page);
    let err = recover("p", &primary, &[with_entry(e)]).unwrap_err();
    assert!(
        matches!(err, HiveError::Corrupt { .. }) && err.to_string().contains("2 GiB"),
        "{err}"
    );
    // A page count whose references cannot fit in the entry.
    let e = entry(3, 0x5000, 0xFFFF_FFFF, &[(0, 4096)], &page);
    let err = recover("p", &primary, &[with_entry(e)]).unwrap_err();
    assert!(err.to_string().contains("dirty page count"), "{err}");
    // A page placed past the bins size, and one whose offset overflows.
    for (off, len) in [(0x5000, 4096), (0xFFFF_F000, 0x2000), (0, 0xFFFF_FFFF)] {
        let e = entry(3, 0x5000, 1, &[(off, len)], &page);
        let err = recover("p", &primary, &[with_entry(e)]).unwrap_err();
        assert!(matches!(err, HiveError::Corrupt { .. }), "{err}");
    }
    // An entry size far beyond the file is garbage: replay stops before it.
    let mut e = entry(3, 0x5000, 1, &[(0, 4096)], &page);
    put_u32(&mut e, 4, 0xFFFF_FE00);
    let r = recover("p", &primary, &[with_entry(e)]).unwrap();
    assert_eq!(r.applied[0].last_sequence, 2);
    // A log header claiming an absurd sequence but holding nothing valid.
    let mut h = header(&primary, 0x7FFF_FFFF);
    h.extend_from_slice(&[0xFF; 1024]);
    dirty_without_logs(recover(
        "p",
        &primary,
        &[LogFile {
            name: "h".into(),
            bytes: h,
        }],
    ));
}

#[test]
fn authentic_entry_breaking_a_bin_is_reported() {
    let Some(c) = corpus("authentic_entry_breaking_a_bin_is_reported") else {
        return;
    };
    let (primary, _, _) = new_dirty1(&c);
    let mut page = primary[4096..8192].to_vec();
    put_u32(&mut page, 4, 0x1000); // wrong offset in the first bin header
    let mut log = header(&primary, 2);
    log.extend_from_slice(&entry(2, 0x5000, 1, &[(0, 4096)], &page));
    let err = recover(
        "p",
        &primary,
        &[LogFile {
            name: "x".into(),
            bytes: log,
        }],
    )
    .unwrap_err();
    match err {
        HiveError::Corrupt { offset, what, .. } => {
            assert_eq!(offset, 0x1004);
            assert!(what.contains("offset"), "{what}");
        }
        e => panic!("expected Corrupt, got {e}"),
    }

    // Old format: no hashes, so a damaged page reaches the bin check.
    let d = yarp(&c).join("OldDirtyHive");
    let old_primary = read(&d.join("OldDirtyHive"));
    let mut log = log_file(&d.join("OldDirtyHive.LOG1"));
    log.bytes[0x400..0x404].copy_from_slice(b"XXXX"); // first page -> file 0x1000
    let err = recover("OldDirtyHive", &old_primary, &[log.clone()]).unwrap_err();
    assert!(
        matches!(err, HiveError::Corrupt { offset: 0x1000, .. }),
        "{err}"
    );
    // Truncated page area: the old log is not usable at all.
    log.bytes.truncate(0x1000);
    let reason = dirty_without_logs(recover("OldDirtyHive", &old_primary, &[log]));
    assert!(reason.contains("truncated"), "{reason}");
}

#[test]
fn random_damage_never_panics() {
    let Some(c) = corpus("random_damage_never_panics") else {
        return;
    };
    let (primary, l1, l2) = new_dirty1(&c);
    let d = yarp(&c).join("OldDirtyHive");
    let old_primary = read(&d.join("OldDirtyHive"));
    let old_log = log_file(&d.join("OldDirtyHive.LOG1"));
    let mut state = 0x1234_5678_9ABC_DEF0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..300 {
        let (p, mut logs) = if round % 2 == 0 {
            (primary.clone(), vec![l1.clone(), l2.clone()])
        } else {
            (old_primary.clone(), vec![old_log.clone()])
        };
        let mut p = p;
        for _ in 0..(1 + next() % 4) {
            let which = (next() % (logs.len() as u64 + 1)) as usize;
            let buf = if which == logs.len() {
                &mut p
            } else {
                &mut logs[which].bytes
            };
            // Aim at headers and early structures most of the time.
            let span = if next() % 3 == 0 {
                buf.len()
            } else {
                buf.len().min(1200)
            };
            let at = (next() % span as u64) as usize;
            let v = next() as u8;
            buf[at] = v;
            if next() % 4 == 0 {
                // Re-seal the header checksum so the damage gets past it.
                if which < logs.len() {
                    store_checksum(&mut logs[which].bytes[..512]);
                } else {
                    store_checksum(&mut p[..4096]);
                }
            }
        }
        match recover("fuzz", &p, &logs) {
            Ok(r) if !r.applied.is_empty() => {
                assert_clean("fuzz", &r.data);
            }
            _ => {}
        }
    }
}

#[test]
fn invalid_primary_base_block_uses_the_later_new_log() {
    let Some(c) = corpus("invalid_primary_base_block_uses_the_later_new_log") else {
        return;
    };
    let (mut primary, l1, l2) = new_dirty1(&c);
    primary[48] ^= 0x55; // inside the checksummed range: base block invalid
    let r = recover("p", &primary, &[l1.clone(), l2.clone()]).unwrap();
    assert_eq!(r.applied.len(), 1, "only the log with the later header");
    assert_eq!(r.applied[0].name, "NewDirtyHive.LOG2");
    let bb = assert_clean("invalid primary", &r.data);
    assert_eq!(bb.seq1, 6);
    // The base block is the log's header (file name bytes included).
    assert_eq!(r.data[48], l2.bytes[48]);
    assert_eq!(r.data[12..20], l2.bytes[12..20]);
}

#[test]
fn old_format_prefers_the_later_timestamp() {
    let Some(c) = corpus("old_format_prefers_the_later_timestamp") else {
        return;
    };
    let d = yarp(&c).join("BadBaseBlockHive");
    let primary = read(&d.join("BadBaseBlockHive"));
    let l1 = log_file(&d.join("BadBaseBlockHive.LOG1"));
    let mut later = l1.clone();
    later.name = "BadBaseBlockHive.LOG2".into();
    let ts = u64::from_le_bytes(later.bytes[12..20].try_into().unwrap()) + 10_000_000;
    later.bytes[12..20].copy_from_slice(&ts.to_le_bytes());
    store_checksum(&mut later.bytes[..512]);
    for logs in [
        vec![l1.clone(), later.clone()],
        vec![later.clone(), l1.clone()],
    ] {
        let r = recover("p", &primary, &logs).unwrap();
        assert_eq!(r.applied[0].name, "BadBaseBlockHive.LOG2");
        assert_eq!(assert_clean("later", &r.data).timestamp, ts);
    }
    // A log older than the first bin's backup timestamp does not apply.
    let mut older = l1.clone();
    older.bytes[12..20].copy_from_slice(&1u64.to_le_bytes());
    store_checksum(&mut older.bytes[..512]);
    let reason = dirty_without_logs(recover("p", &primary, &[older]));
    assert!(reason.contains("older than the first bin"), "{reason}");
    // With a valid primary the timestamps must be equal.
    let od = yarp(&c).join("OldDirtyHive");
    let old_primary = read(&od.join("OldDirtyHive"));
    let reason = dirty_without_logs(recover("p", &old_primary, &[later]));
    assert!(reason.contains("does not match"), "{reason}");
}
