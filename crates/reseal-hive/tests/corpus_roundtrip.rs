//! No-op round trip over the real corpus: every hive that opens (clean, or
//! dirty with its logs replayed) is saved unchanged, and the saved file is
//! checked structurally, compared with the recovered original by
//! independent readers (hivexregedit, regfexport) and byte for byte in its
//! bins, and its sequence numbers and emptied logs are verified. Every other
//! hive of the corpus is listed with the behaviour expected of it: refused
//! by `Hive::open` with a given error, or opened and flagged by `check()`.
//!
//! Skips with a notice when the corpus or a reader is absent.

mod common;
mod corpus_support;

use common::{Dump, corpus_dir, missing, notice};
use corpus_support::{
    Reader, assert_dumps_equal, base_checksum, base_seqs, copy_into, load, log_sequences,
    plain_name, readers, seq_after, stage,
};
use reseal_hive::log::{LogFile, recover};
use reseal_hive::{Hive, HiveError};
use std::path::{Path, PathBuf};

/// What a corpus hive that does not round-trip is expected to do.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// `Hive::open` refuses it: dirty, and no usable log beside it.
    DirtyWithoutLogs,
    /// `Hive::open` refuses it as corrupt.
    Corrupt,
    /// `Hive::open` accepts it; `check()` reports exactly these error rules
    /// (and `save_to` refuses to write it).
    CheckFails(&'static [u32]),
}

/// Every corpus hive that is not expected to round-trip, with why.
const NOT_ROUND_TRIPPING: &[(&str, Expect)] = &[
    // Dirty primaries whose logs are not in the corpus.
    (
        "DFIRArtifactMuseum/Windows/Registry/Win10/BelkasoftCTF_InsiderThreat/DEFAULT",
        Expect::DirtyWithoutLogs,
    ),
    (
        "DFIRArtifactMuseum/Windows/Registry/Win10/BelkasoftCTF_InsiderThreat/SECURITY",
        Expect::DirtyWithoutLogs,
    ),
    (
        "EricZimmerman-Registry/Registry.Test/Hives/SECURITY",
        Expect::DirtyWithoutLogs,
    ),
    (
        "dissect.target/tests/_data/plugins/os/windows/amcache/amcache-new.hve",
        Expect::DirtyWithoutLogs,
    ),
    (
        "regipy/regipy_tests/data/NTUSER_BAGMRU.DAT.xz",
        Expect::DirtyWithoutLogs,
    ),
    (
        "regipy/regipy_tests/data/NTUSER_with_winscp.DAT.xz",
        Expect::DirtyWithoutLogs,
    ),
    (
        "regipy/regipy_tests/data/SECURITY.xz",
        Expect::DirtyWithoutLogs,
    ),
    (
        "regipy/regipy_tests/data/SYSTEM_2.xz",
        Expect::DirtyWithoutLogs,
    ),
    (
        "regipy/regipy_tests/data/SYSTEM_WIN_10_1709.xz",
        Expect::DirtyWithoutLogs,
    ),
    (
        "regipy/regipy_tests/data/amcache.hve.xz",
        Expect::DirtyWithoutLogs,
    ),
    (
        "yarp/hives_for_tests/TruncatedDirtyHive",
        Expect::DirtyWithoutLogs,
    ),
    // A wrong base-block checksum makes a hive dirty (regf-writing.md
    // §14.1); without a log it cannot be recovered.
    (
        "EricZimmerman-Registry/Registry.Test/Hives/SAN(OTHER)",
        Expect::DirtyWithoutLogs,
    ),
    ("yarp/hives_for_tests/GarbageHive", Expect::DirtyWithoutLogs),
    (
        "yarp/hives_for_tests/EffectiveSizeHive",
        Expect::DirtyWithoutLogs,
    ),
    // Logs that must not be replayed (bad checksum / wrong type / bad hashes).
    (
        "yarp/hives_for_tests/BadLogHive1/BadLogHive",
        Expect::DirtyWithoutLogs,
    ),
    (
        "yarp/hives_for_tests/BadLogHive2/BadLogHive",
        Expect::DirtyWithoutLogs,
    ),
    (
        "yarp/hives_for_tests/BadLogHive3/BadLogHive",
        Expect::DirtyWithoutLogs,
    ),
    // Not hives, or hives whose bins cannot be walked.
    (
        "EricZimmerman-Registry/Registry.Test/Hives/NotAHive",
        Expect::Corrupt,
    ),
    ("yarp/hives_for_tests/TruncatedHiveBin", Expect::Corrupt),
    (
        "yarp/hives_for_tests/InvalidParentFragment",
        Expect::Corrupt,
    ),
    // An old-format log file, not a primary.
    (
        "yarp/hives_for_tests/OldLogWithRemnantData",
        Expect::Corrupt,
    ),
    // A damaged hbin header.
    (
        "EricZimmerman-Registry/Registry.Test/Hives/SAMBadHBinHeader",
        Expect::Corrupt,
    ),
    // A zeroed bin in the middle.
    (
        "regipy/regipy_tests/data/corrupted_system_hive.xz",
        Expect::Corrupt,
    ),
    // The file ends long before the declared bins size.
    ("yarp/hives_for_tests/TruncatedHive", Expect::Corrupt),
    // Open, but the structural checker flags them.
    (
        "plaso/test_data/regf/corrupt_sub_key_list.hiv",
        Expect::CheckFails(&[10, 28]),
    ),
    (
        "yarp/hives_for_tests/BadListHive",
        Expect::CheckFails(&[10, 15, 28]),
    ),
    (
        "yarp/hives_for_tests/BadSubkeyHive",
        Expect::CheckFails(&[10, 28]),
    ),
    ("yarp/hives_for_tests/CompHive", Expect::CheckFails(&[18])),
    (
        "yarp/hives_for_tests/DeletedDataHiveTruncated",
        Expect::CheckFails(&[10, 23]),
    ),
    (
        "yarp/hives_for_tests/DuplicateSubkeysHive",
        Expect::CheckFails(&[17]),
    ),
    ("yarp/hives_for_tests/HealedHive", Expect::CheckFails(&[28])),
    (
        "yarp/hives_for_tests/InvalidParentHive",
        Expect::CheckFails(&[12]),
    ),
    (
        "yarp/hives_for_tests/TruncatedNameHive",
        Expect::CheckFails(&[12]),
    ),
    (
        "yarp/hives_for_tests/WrongOrderHive",
        Expect::CheckFails(&[17]),
    ),
];

/// Hives whose saved copy is also dumped by the external readers. The rest
/// are compared byte for byte only (their bins are identical to the
/// recovered original's), to keep the debug-mode suite short. This set
/// covers dirty hives replayed from new- and old-format logs, every format
/// minor version (1.3, 1.5, 1.6), big data, ri lists and a Windows-written
/// hive of each kind. The largest replayed hive, regipy's SYSTEM_B, is read
/// by all readers in `corpus_edits` instead.
const DUMPED: &[&str] = &[
    "DFIRArtifactMuseum/Windows/Amcache/Win10/APTSimulatorVM/Amcache.hve",
    "DFIRArtifactMuseum/Windows/Registry/Win10/BelkasoftCTF_InsiderThreat/SAM",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/BBI",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/DEFAULT",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/NTUSER.DAT",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/SAM",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/SECURITY",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/LocalService/NTUSER.DAT",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/NetworkService/NTUSER.DAT",
    "EricZimmerman-Registry/Registry.Test/Hives/SAM",
    "aiowinreg/tests/testdata/win2022_64/security.reg",
    "dfwinreg/test_data/NTUSER.DAT",
    "dissect.target/tests/_data/plugins/os/windows/syscache/Syscache.hve",
    "hivex/images/special",
    "notatin/test_data/NTUSER.DAT",
    "nt-hive/testdata/testhive",
    "python-registry/tests/reg_samples/UNICODE_TESTS",
    "regipy/regipy_tests/data/transactions_NTUSER.DAT.xz",
    "yarp/hives_for_tests/BigDataHive",
    "yarp/hives_for_tests/ManySubkeysHive",
    "yarp/hives_for_tests/NewDirtyHive1/NewDirtyHive",
    "yarp/hives_for_tests/OldDirtyHive/OldDirtyHive",
    "yarp/hives_for_tests/System_Delta",
    "yarp/hives_for_tests/UnicodeHive",
];

/// Directories of the corpus that hold no registry hive.
const NO_HIVES: &[&str] = &[
    "ManagedWimLib",
    "dfir_ntfs",
    "dfvfs",
    "dissect.hypervisor",
    "dissect.ntfs-pypi-sdist",
    "ntfs-rs",
    "qemu-debian-src",
    "wimlib",
    "yarp/records_for_tests",
];

/// Every primary hive file of the corpus (regf signature, file type 0), as
/// paths relative to the corpus root. Logs (types 1, 2, 6) are left out.
fn corpus_hives(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if NO_HIVES.iter().any(|d| rel.starts_with(d)) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = plain_name(&p).to_lowercase();
            let is_log = [".log", ".log1", ".log2"].iter().any(|s| name.ends_with(s));
            let head: Vec<u8> = if p.extension().is_some_and(|x| x == "xz") {
                if is_log {
                    continue;
                }
                load(&p).into_iter().take(32).collect()
            } else {
                use std::io::Read;
                let mut h = Vec::new();
                std::fs::File::open(&p)
                    .unwrap()
                    .take(32)
                    .read_to_end(&mut h)
                    .unwrap();
                h
            };
            if head.len() == 32 && &head[0..4] == b"regf" && head[28..32] == [0, 0, 0, 0] {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

/// The primary and logs of a staged hive, recovered independently of
/// `Hive::open` with `log::recover`.
fn recover_staged(hive: &Path, logs: &[PathBuf]) -> Result<Vec<u8>, HiveError> {
    let primary = std::fs::read(hive).unwrap();
    let logs: Vec<LogFile> = logs
        .iter()
        .map(|l| LogFile {
            name: l.display().to_string(),
            bytes: std::fs::read(l).unwrap(),
        })
        .collect();
    recover(&hive.display().to_string(), &primary, &logs).map(|r| r.data)
}

/// Opens, saves unchanged and verifies one hive. Returns a short line for the
/// summary.
fn round_trip(corpus: &Path, rel: &str, tools: &[Reader]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let staged = stage(&corpus.join(rel), &tmp.path().join("in"));
    let primary = std::fs::read(&staged.hive).unwrap();
    let name = plain_name(&staged.hive);

    // The recovered original, computed by log::recover (a clean primary
    // comes back unchanged).
    let recovered = recover_staged(&staged.hive, &staged.logs)
        .unwrap_or_else(|e| panic!("{rel}: log::recover failed: {e}"));
    let rec_dir = tmp.path().join("recovered");
    std::fs::create_dir_all(&rec_dir).unwrap();
    let rec_path = rec_dir.join(&name);
    std::fs::write(&rec_path, &recovered).unwrap();

    let hive = Hive::open(&staged.hive).unwrap_or_else(|e| panic!("{rel}: open: {e}"));
    let dirty = base_seqs(&primary).0 != base_seqs(&primary).1;
    assert_eq!(
        !hive.open_info().replayed_logs.is_empty(),
        dirty,
        "{rel}: logs replayed iff the primary is dirty"
    );

    // Save beside copies of the logs.
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out_logs = copy_into(&staged.logs, &out_dir);
    let out = out_dir.join(&name);
    hive.save_to(&out)
        .unwrap_or_else(|e| panic!("{rel}: save_to: {e}"));
    let saved = std::fs::read(&out).unwrap();

    // Logs beside the saved copy are emptied.
    for l in &out_logs {
        let len = std::fs::metadata(l).unwrap().len();
        assert_eq!(len, 0, "{rel}: log {} not emptied", l.display());
    }

    // Sequence numbers: equal, and after the primary's and every log's.
    let (s1, s2) = base_seqs(&saved);
    assert_eq!(s1, s2, "{rel}: saved Sequence1 != Sequence2");
    let (p1, p2) = base_seqs(&primary);
    let mut earlier = vec![p1, p2];
    for l in &staged.logs {
        earlier.extend(log_sequences(&std::fs::read(l).unwrap()));
    }
    for e in &earlier {
        assert!(
            seq_after(s1, *e),
            "{rel}: saved sequence {s1} is not after {e} (primary/log)"
        );
    }
    assert_eq!(
        u32::from_le_bytes(saved[0x1FC..0x200].try_into().unwrap()),
        base_checksum(&saved),
        "{rel}: base-block checksum"
    );
    assert_eq!(&saved[28..32], &[0, 0, 0, 0], "{rel}: file type");

    // The saved image passes the checker and reopens without replay.
    let check = reseal_hive::check::check_image(rel, &saved);
    assert!(
        check.is_clean(),
        "{rel}: check of the saved file: {:?}",
        check.errors().take(5).collect::<Vec<_>>()
    );
    let reopened = Hive::open(&out).unwrap_or_else(|e| panic!("{rel}: reopen: {e}"));
    assert!(reopened.open_info().replayed_logs.is_empty());

    // A no-op save keeps the bins byte for byte, the bins size, the root
    // and the file length of the recovered original.
    let len = u32::from_le_bytes(recovered[40..44].try_into().unwrap()) as usize;
    assert_eq!(&saved[40..44], &recovered[40..44], "{rel}: bins size");
    assert_eq!(&saved[36..40], &recovered[36..40], "{rel}: root cell");
    assert!(
        saved[4096..4096 + len] == recovered[4096..4096 + len],
        "{rel}: the bins of the saved file differ from the recovered original"
    );
    assert_eq!(
        saved.len(),
        recovered.len().max(4096 + len),
        "{rel}: file length"
    );

    // Independent readers see the same content in both files.
    for &r in tools {
        let before = r.dump(&rec_path);
        let after = r.dump(&out);
        match (before, after) {
            (Ok(b), Ok(a)) => {
                assert!(!b.keys.is_empty(), "{rel}: {r:?} read no key");
                assert_dumps_equal(r, &b, &a, rel);
                assert_eq!(
                    b.keys.len(),
                    key_count(&reopened),
                    "{rel}: {r:?} and our reader disagree on the number of keys"
                );
            }
            (Err(b), Err(_)) => notice(&format!(
                "{rel}: {r:?} cannot read the original either: {}",
                b.lines().last().unwrap_or("")
            )),
            (Ok(_), Err(e)) => {
                panic!("{rel}: {r:?} reads the original but not the saved copy: {e}")
            }
            (Err(e), Ok(_)) => {
                panic!("{rel}: {r:?} reads the saved copy but not the original: {e}")
            }
        }
    }
    format!("{rel}: ok{}", if dirty { " (replayed)" } else { "" })
}

fn key_count(h: &Hive) -> usize {
    let mut n = 0;
    h.walk(|_, _| {
        n += 1;
        Ok(())
    })
    .unwrap();
    n
}

/// Checks one hive listed in [`NOT_ROUND_TRIPPING`].
fn expect_failure(corpus: &Path, rel: &str, expect: Expect) {
    let tmp = tempfile::tempdir().unwrap();
    let staged = stage(&corpus.join(rel), tmp.path());
    let opened = std::panic::catch_unwind(|| Hive::open(&staged.hive))
        .unwrap_or_else(|_| panic!("{rel}: Hive::open panicked"));
    match (expect, opened) {
        (Expect::DirtyWithoutLogs, Err(HiveError::DirtyWithoutLogs { .. })) => {}
        (Expect::Corrupt, Err(HiveError::Corrupt { .. })) => {}
        (Expect::CheckFails(rules), Ok(h)) => {
            let report = std::panic::catch_unwind(|| h.check())
                .unwrap_or_else(|_| panic!("{rel}: check() panicked"));
            assert_eq!(report.error_rules(), rules, "{rel}: error rules");
            let out = tmp.path().join("saved");
            match h.save_to(&out) {
                Err(HiveError::CheckFailed { .. }) => {}
                other => panic!("{rel}: save_to must refuse a failing hive, got {other:?}"),
            }
            assert!(!out.exists(), "{rel}: nothing is written");
        }
        (e, Ok(h)) => panic!(
            "{rel}: expected {e:?}, but it opened (check: {:?})",
            h.check().error_rules()
        ),
        (e, Err(err)) => panic!("{rel}: expected {e:?}, got error {err:?}"),
    }
}

#[test]
fn every_corpus_hive_round_trips_or_is_refused() {
    let Some(corpus) = corpus_dir() else {
        missing("the corpus (set RESEAL_CORPUS)");
        return;
    };
    let tools = readers(&[Reader::Hivex, Reader::Regfexport]);
    let hives = corpus_hives(&corpus);
    assert!(hives.len() > 80, "found only {} hives", hives.len());
    for (rel, _) in NOT_ROUND_TRIPPING {
        assert!(
            corpus.join(rel).is_file(),
            "{rel}: listed but not in the corpus"
        );
    }
    for d in DUMPED {
        assert!(
            hives.iter().any(|h| h == d),
            "{d}: listed for dumps but not a corpus hive"
        );
    }
    let mut lines = Vec::new();
    for rel in &hives {
        if NOT_ROUND_TRIPPING.iter().any(|(r, _)| r == rel) {
            continue;
        }
        let t: &[Reader] = if DUMPED.contains(&rel.as_str()) {
            &tools
        } else {
            &[]
        };
        let t0 = std::time::Instant::now();
        let line = round_trip(&corpus, rel, t);
        lines.push(format!("{line} [{:.1?}]", t0.elapsed()));
    }
    let mut wrong = Vec::new();
    for (rel, expect) in NOT_ROUND_TRIPPING {
        match std::panic::catch_unwind(|| expect_failure(&corpus, rel, *expect)) {
            Ok(()) => lines.push(format!("{rel}: {expect:?} as expected")),
            Err(e) => wrong.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| format!("{rel}: panicked")),
            ),
        }
    }
    eprintln!("{}", lines.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The dumps compared above are meaningful only if the readers see every
/// key: on a dirty hive replayed from its logs, hivex must see the keys the
/// logs added (it reads the recovered file, not the stale primary).
#[test]
fn replayed_hive_differs_from_stale_primary_for_readers() {
    let Some(corpus) = corpus_dir() else {
        missing("the corpus (set RESEAL_CORPUS)");
        return;
    };
    if readers(&[Reader::Hivex]).is_empty() {
        return;
    }
    let rel = "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/NTUSER.DAT";
    let tmp = tempfile::tempdir().unwrap();
    let staged = stage(&corpus.join(rel), &tmp.path().join("in"));
    let hive = Hive::open(&staged.hive).unwrap();
    let out = tmp.path().join("NTUSER.DAT");
    hive.save_to(&out).unwrap();
    let stale: Dump = Reader::Hivex.dump(&staged.hive).unwrap();
    let saved: Dump = Reader::Hivex.dump(&out).unwrap();
    assert!(
        !stale.diff(&saved).is_empty(),
        "replaying the logs changed nothing a reader can see"
    );
}
