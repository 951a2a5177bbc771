//! The structural checker on the real-hive corpus: Windows-written clean
//! hives check clean, deliberately broken ones produce the expected errors,
//! hand-made corruptions of a real hive are caught with the right rule, and
//! no input makes the checker panic.

use reseal_hive::check::{CheckReport, Severity, check_image};
use std::path::{Path, PathBuf};

fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    p.is_dir().then_some(p)
}

macro_rules! corpus_or_skip {
    ($test:literal) => {
        match corpus() {
            Some(c) => c,
            None => {
                reseal_testkit::require(false, &format!("the shared corpus ({})", $test));
                return;
            }
        }
    };
}

fn load(p: &Path) -> Vec<u8> {
    let raw = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    if p.extension().is_some_and(|e| e == "xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut &raw[..], &mut out)
            .unwrap_or_else(|e| panic!("{}: {e:?}", p.display()));
        out
    } else {
        raw
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn summary(r: &CheckReport) -> String {
    let mut s = format!(
        "keys {} values {} sk {}; error rules {:?}",
        r.keys,
        r.values,
        r.security_cells,
        r.error_rules()
    );
    for v in r.violations.iter().take(10) {
        s += &format!("\n    {v}");
    }
    s
}

/// Clean hives written by Windows (or by offreg, or by hivex for its own
/// tests): no errors.
const CLEAN: &[&str] = &[
    "DFIRArtifactMuseum/Windows/Amcache/Win2012R2/StolenSzechuan/Amcache.hve",
    "DFIRArtifactMuseum/Windows/Registry/Win10/BelkasoftCTF_InsiderThreat/SAM",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/BCD-Template",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/DEFAULT (NTUSER)/NTUSER.DAT",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/ELAM",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/SAM",
    "EricZimmerman-Registry/Registry.Test/Hives/Acronis_0x52_Usrclass.dat",
    "EricZimmerman-Registry/Registry.Test/Hives/BCD",
    "EricZimmerman-Registry/Registry.Test/Hives/NTUSER1.DAT",
    "EricZimmerman-Registry/Registry.Test/Hives/SAM",
    "EricZimmerman-Registry/Registry.Test/Hives/SAM_DUPENAME",
    "EricZimmerman-Registry/Registry.Test/Hives/SAM_RootValue",
    "EricZimmerman-Registry/Registry.Test/Hives/SAM_hasBigEndianDWord",
    // The root lacks KEY_HIVE_ENTRY: a warning only (see specific_findings).
    "EricZimmerman-Registry/Registry.Test/Hives/SECURITYNoRoot",
    "EricZimmerman-Registry/Registry.Test/Hives/UsrClassDeletedBags.dat",
    "aiowinreg/tests/testdata/nt/sam.reg",
    "aiowinreg/tests/testdata/nt/security.reg",
    "aiowinreg/tests/testdata/nt/software.reg",
    "aiowinreg/tests/testdata/nt/system.reg",
    "aiowinreg/tests/testdata/win2008_32/sam.reg",
    "aiowinreg/tests/testdata/win2008_32/security.reg",
    "aiowinreg/tests/testdata/win2008r2_64/sam.reg",
    "aiowinreg/tests/testdata/win2008r2_64/security.reg",
    "aiowinreg/tests/testdata/win2012_64/sam.reg",
    "aiowinreg/tests/testdata/win2012_64/security.reg",
    "aiowinreg/tests/testdata/win2016_64/sam.reg",
    "aiowinreg/tests/testdata/win2016_64/security.reg",
    "aiowinreg/tests/testdata/win2019_64/sam.reg",
    "aiowinreg/tests/testdata/win2019_64/security.reg",
    "aiowinreg/tests/testdata/win2022_64/sam.reg",
    "aiowinreg/tests/testdata/win2022_64/security.reg",
    "dfwinreg/history-2016/test_data/NTUSER.DAT",
    "dfwinreg/history-2016/test_data/SYSTEM",
    "dfwinreg/test_data/NTUSER.DAT",
    "dfwinreg/test_data/SAM",
    "dfwinreg/test_data/SECURITY",
    "dfwinreg/test_data/UsrClass.dat",
    "dissect.target/tests/_data/plugins/os/windows/syscache/Syscache.hve",
    "hivex/images/minimal",
    "hivex/images/rlenvalue_test_hive",
    "hivex/images/special",
    "notatin/test_data/NTUSER.DAT",
    "notatin/test_data/win7_ntuser.dat",
    "nt-hive/testdata/testhive",
    "plaso/test_data/NTUSER-CCLEANER.DAT",
    "plaso/test_data/NTUSER-RunTests.DAT",
    "plaso/test_data/NTUSER-WIN7.DAT",
    "plaso/test_data/NTUSER.DAT",
    "plaso/test_data/regf/100_sub_keys.hiv",
    "plaso/test_data/winreg/win10-Amcache.hve",
    "python-registry/tests/reg_samples/REORGANIZED_VALUES_TESTS",
    "python-registry/tests/reg_samples/UNICODE_TESTS",
    "python-registry/tests/reg_samples/issue22.hive",
    "regipy/regipy_tests/data/BCD.xz",
    "regipy/regipy_tests/data/NTUSER-WSL.DAT.xz",
    "regipy/regipy_tests/data/NTUSER.DAT.xz",
    "regipy/regipy_tests/data/NTUSER_modified.DAT.xz",
    "regipy/regipy_tests/data/SAM.xz",
    "regipy/regipy_tests/data/SYSTEM.xz",
    "regipy/regipy_tests/data/ntuser_software_partial.xz",
    "yarp/hives_for_tests/BigDataHive",
    "yarp/hives_for_tests/BogusKeyNamesHive",
    "yarp/hives_for_tests/DeletedDataHive",
    "yarp/hives_for_tests/DeletedTreeHive",
    "yarp/hives_for_tests/DeletedTreeNoRootFlagHive",
    "yarp/hives_for_tests/DeletedTreePartialPathHive",
    "yarp/hives_for_tests/DupNameHive",
    "yarp/hives_for_tests/EmptyHive",
    "yarp/hives_for_tests/ExtendedASCIIHive",
    "yarp/hives_for_tests/ManySubkeysHive",
    "yarp/hives_for_tests/MultiSzHive",
    "yarp/hives_for_tests/NewDirtyHive1/RecoveredHive_Windows10",
    "yarp/hives_for_tests/NewFlagsHive",
    "yarp/hives_for_tests/OffHive",
    "yarp/hives_for_tests/OldDirtyHive/RecoveredHive_Windows7",
    "yarp/hives_for_tests/PairHive",
    "yarp/hives_for_tests/ReallocValueDataHive",
    "yarp/hives_for_tests/ReallocValueHive",
    "yarp/hives_for_tests/RemnantData",
    "yarp/hives_for_tests/RemnantsHive",
    "yarp/hives_for_tests/SlackHive",
    "yarp/hives_for_tests/StringValuesHive",
    "yarp/hives_for_tests/System_Delta",
    "yarp/hives_for_tests/TruncatedPairHive",
    "yarp/hives_for_tests/TruncatedPairHive2",
    "yarp/hives_for_tests/TwoOwnersHive",
    "yarp/hives_for_tests/UnicodeHive",
    "yarp/hives_for_tests/UpcaseHive",
    "yarp/hives_for_tests/ValuesOrderHive",
];

/// Dirty primaries (Sequence1 != Sequence2) whose bins are nevertheless
/// consistent: exactly rule 2.
const DIRTY: &[&str] = &[
    "DFIRArtifactMuseum/Windows/Amcache/Win10/APTSimulatorVM/Amcache.hve",
    "DFIRArtifactMuseum/Windows/Amcache/Win10/RathbunVM/Amcache.hve",
    "DFIRArtifactMuseum/Windows/Amcache/Win11/RathbunVM/Amcache.hve",
    "DFIRArtifactMuseum/Windows/Registry/Win10/BelkasoftCTF_InsiderThreat/DEFAULT",
    "DFIRArtifactMuseum/Windows/Registry/Win10/BelkasoftCTF_InsiderThreat/SECURITY",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/BBI",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/DEFAULT",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/LocalService/NTUSER.DAT",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/NTUSER.DAT",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/NetworkService/NTUSER.DAT",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/SECURITY",
    "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/UsrClass.dat",
    "EricZimmerman-Registry/Registry.Test/Hives/SECURITY",
    "dissect.target/tests/_data/plugins/os/windows/amcache/amcache-new.hve",
    "regipy/regipy_tests/data/NTUSER_BAGMRU.DAT.xz",
    "regipy/regipy_tests/data/NTUSER_with_winscp.DAT.xz",
    "regipy/regipy_tests/data/SECURITY.xz",
    "regipy/regipy_tests/data/SYSTEM_2.xz",
    "regipy/regipy_tests/data/SYSTEM_B.xz",
    "regipy/regipy_tests/data/SYSTEM_WIN_10_1709.xz",
    "regipy/regipy_tests/data/UsrClass.dat.xz",
    "regipy/regipy_tests/data/amcache.hve.xz",
    "regipy/regipy_tests/data/transactions_NTUSER.DAT.xz",
    "yarp/hives_for_tests/BadLogHive1/BadLogHive",
    "yarp/hives_for_tests/BadLogHive2/BadLogHive",
    "yarp/hives_for_tests/BadLogHive3/BadLogHive",
    "yarp/hives_for_tests/NewDirtyHive1/NewDirtyHive",
    "yarp/hives_for_tests/NewDirtyHive2/NewDirtyHive",
    "yarp/hives_for_tests/OldDirtyHive/OldDirtyHive",
];

/// Broken hives and the exact set of error rules they produce.
const BROKEN: &[(&str, &[u32])] = &[
    // Not a hive at all.
    ("EricZimmerman-Registry/Registry.Test/Hives/NotAHive", &[1]),
    // A damaged hbin header; the cells behind it are lost, which then also
    // breaks Length, the keys and values that pointed there, and refcounts.
    (
        "EricZimmerman-Registry/Registry.Test/Hives/SAMBadHBinHeader",
        &[4, 7, 10, 15, 23, 28],
    ),
    // One bit of the base block changed after the checksum was computed.
    (
        "EricZimmerman-Registry/Registry.Test/Hives/SAN(OTHER)",
        &[3],
    ),
    // A subkey list index that is not a cell.
    ("plaso/test_data/regf/corrupt_sub_key_list.hiv", &[10, 28]),
    (
        "regipy/regipy_tests/data/corrupted_system_hive.xz",
        &[7, 8, 10, 15, 23, 27, 28],
    ),
    // Version 1.1, dirty, bad checksum.
    (
        "yarp/hives_for_tests/BadBaseBlockHive/BadBaseBlockHive",
        &[1, 2, 3],
    ),
    ("yarp/hives_for_tests/BadListHive", &[10, 15, 28]),
    ("yarp/hives_for_tests/BadSubkeyHive", &[10, 28]),
    // A compressed name 0x9f whose lf hint says 0x81.
    ("yarp/hives_for_tests/CompHive", &[18]),
    ("yarp/hives_for_tests/DeletedDataHiveTruncated", &[10, 23]),
    ("yarp/hives_for_tests/DuplicateSubkeysHive", &[17]),
    ("yarp/hives_for_tests/EffectiveSizeHive", &[3, 10, 15, 28]),
    ("yarp/hives_for_tests/GarbageHive", &[3]),
    // Healed by Windows in memory: the on-disk reference counts are stale
    // and one descriptor is unused.
    ("yarp/hives_for_tests/HealedHive", &[28]),
    ("yarp/hives_for_tests/InvalidParentHive", &[12]),
    // An old-format log file (type 1), not a primary.
    ("yarp/hives_for_tests/OldLogWithRemnantData", &[1, 4, 7, 11]),
    (
        "yarp/hives_for_tests/TruncatedDirtyHive",
        &[2, 4, 10, 15, 28],
    ),
    ("yarp/hives_for_tests/TruncatedHive", &[4, 10, 15, 28]),
    ("yarp/hives_for_tests/TruncatedNameHive", &[12]),
    ("yarp/hives_for_tests/WrongOrderHive", &[17]),
];

fn check_file(c: &Path, rel: &str) -> CheckReport {
    let d = load(&c.join(rel));
    check_image(rel, &d)
}

/// Written by Windows, but two keys with subkeys carry MaxNameLen 0
/// ("...\Log Queries" and "...\Class\{36FC9E60-...}"): Windows leaves a
/// stored 0 behind, so it is a warning, not an error.
#[test]
fn windows_zero_max_name_len_is_a_warning() {
    let c = corpus_or_skip!("windows_zero_max_name_len_is_a_warning");
    let r = check_file(&c, "dfwinreg/history-2016/test_data/SYSTEM");
    assert!(r.is_clean(), "{}", summary(&r));
    let warned = r
        .violations
        .iter()
        .filter(|v| v.rule == 19 && v.severity == Severity::Warning)
        .count();
    assert_eq!(warned, 2, "{}", summary(&r));
}

#[test]
fn windows_written_hives_check_clean() {
    let c = corpus_or_skip!("windows_written_hives_check_clean");
    let mut bad = Vec::new();
    for rel in CLEAN {
        let r = check_file(&c, rel);
        if !r.is_clean() || r.keys == 0 {
            bad.push(format!("{rel}: {}", summary(&r)));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn dirty_hives_report_rule_2_only() {
    let c = corpus_or_skip!("dirty_hives_report_rule_2_only");
    let mut bad = Vec::new();
    for rel in DIRTY {
        let r = check_file(&c, rel);
        if r.error_rules() != [2] {
            bad.push(format!("{rel}: {}", summary(&r)));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn broken_hives_report_expected_rules() {
    let c = corpus_or_skip!("broken_hives_report_expected_rules");
    let mut bad = Vec::new();
    for (rel, rules) in BROKEN {
        let r = check_file(&c, rel);
        if r.error_rules() != *rules {
            bad.push(format!("{rel}: expected {rules:?}: {}", summary(&r)));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn specific_findings() {
    let c = corpus_or_skip!("specific_findings");
    // SECURITYNoRoot: the root lacks KEY_HIVE_ENTRY (flags 0x20); Windows
    // sets it again at load, so this is only a warning.
    let r = check_file(
        &c,
        "EricZimmerman-Registry/Registry.Test/Hives/SECURITYNoRoot",
    );
    assert!(r.is_clean(), "{}", summary(&r));
    assert!(
        r.violations
            .iter()
            .any(|v| v.rule == 11 && v.severity == Severity::Warning)
    );
    // Windows leaves stale volatile-subkey fields on disk: warnings.
    let r = check_file(&c, "aiowinreg/tests/testdata/nt/security.reg");
    assert!(r.violations.iter().any(|v| v.rule == 14));
    // Windows healed this hive and left orphan cells (yarp counts 5).
    let r = check_file(&c, "yarp/hives_for_tests/HealedHive");
    assert!(
        r.violations
            .iter()
            .filter(|v| v.rule == 10 && v.severity == Severity::Warning)
            .count()
            >= 4
    );
    let r = check_file(&c, "yarp/hives_for_tests/WrongOrderHive");
    assert!(r.errors().all(|v| v.message.contains("increasing order")));
    let r = check_file(&c, "yarp/hives_for_tests/DuplicateSubkeysHive");
    assert!(
        r.errors()
            .all(|v| v.message.contains("unique subkey names"))
    );
}

/// Every file of the corpus (hives, logs, images, garbage), whole and
/// truncated, checks without a panic; every regf primary is accounted for in
/// one of the lists above.
#[test]
fn no_input_panics_and_every_hive_is_listed() {
    let c = corpus_or_skip!("no_input_panics_and_every_hive_is_listed");
    let mut files = Vec::new();
    walk(&c, &mut files);
    files.sort();
    let known: Vec<&str> = CLEAN
        .iter()
        .chain(DIRTY)
        .copied()
        .chain(BROKEN.iter().map(|b| b.0))
        .collect();
    let mut unlisted = Vec::new();
    for p in files {
        let raw = std::fs::read(&p).unwrap();
        if raw.len() > 64 << 20 {
            continue;
        }
        let d = if p.extension().is_some_and(|e| e == "xz") {
            let mut out = Vec::new();
            if lzma_rs::xz_decompress(&mut &raw[..], &mut out).is_err() {
                continue;
            }
            out
        } else {
            raw
        };
        let rel = p.strip_prefix(&c).unwrap().to_string_lossy().into_owned();
        let r = check_image(&rel, &d);
        let is_primary = d.get(0..4) == Some(b"regf") && d.get(28..32) == Some(&[0, 0, 0, 0]);
        if is_primary && !known.contains(&rel.as_str()) {
            unlisted.push(format!("{rel}: {}", summary(&r)));
        }
        if d.get(0..4) == Some(b"regf") && d.len() <= 4 << 20 {
            for cut in [4096, 4096 + 32, d.len() / 2, d.len().saturating_sub(1)] {
                let _ = check_image(&rel, &d[..cut.min(d.len())]);
            }
        }
    }
    assert!(
        unlisted.is_empty(),
        "unlisted primaries:\n{}",
        unlisted.join("\n")
    );
}

/// A 15 MB SYSTEM hive must be checked well under a second (release).
#[test]
fn large_hive_is_fast() {
    let c = corpus_or_skip!("large_hive_is_fast");
    let d = load(&c.join("regipy/regipy_tests/data/SYSTEM_B.xz"));
    let t = std::time::Instant::now();
    let r = check_image("SYSTEM_B", &d);
    let el = t.elapsed();
    println!(
        "{} bytes, {} keys, {} values in {el:?}",
        d.len(),
        r.keys,
        r.values
    );
    assert!(r.keys > 10_000);
    if !cfg!(debug_assertions) {
        assert!(el.as_millis() < 1000, "{el:?}");
    }
}

// ----- hand-made corruptions of a real hive ----------------------------------

struct RawCell {
    /// File offset of the size field.
    at: usize,
    alloc: bool,
}

fn raw_cells(d: &[u8]) -> Vec<RawCell> {
    let u32_at = |o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
    let len = u32_at(40) as usize;
    let mut out = Vec::new();
    let mut pos = 4096;
    while pos < 4096 + len {
        let size = u32_at(pos + 8) as usize;
        let mut c = pos + 32;
        while c < pos + size {
            let s = u32_at(c) as i32;
            out.push(RawCell {
                at: c,
                alloc: s < 0,
            });
            c += s.unsigned_abs() as usize;
        }
        pos += size;
    }
    out
}

fn sig_cells<'a>(d: &'a [u8], sig: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    raw_cells(d)
        .into_iter()
        .filter(move |c| c.alloc && &d[c.at + 4..c.at + 6] == sig)
        .map(|c| c.at)
}

fn get32(d: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(d[o..o + 4].try_into().unwrap())
}

fn put32(d: &mut [u8], o: usize, v: u32) {
    d[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

fn get16(d: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(d[o..o + 2].try_into().unwrap())
}

fn assert_rule(d: &[u8], what: &str, rule: u32) {
    let r = check_image(what, d);
    assert!(
        r.errors().any(|v| v.rule == rule),
        "{what}: expected an error of rule {rule}: {}",
        summary(&r)
    );
}

/// A Windows Server 2019 SAM (version 1.5, lh leaves, several descriptors).
const BASE: &str = "aiowinreg/tests/testdata/win2019_64/sam.reg";

#[test]
fn corruptions_are_caught() {
    let c = corpus_or_skip!("corruptions_are_caught");
    let orig = load(&c.join(BASE));
    assert!(check_image(BASE, &orig).is_clean());

    // An lh leaf with two or more entries.
    let lh = sig_cells(&orig, b"lh")
        .find(|&at| get16(&orig, at + 6) >= 2)
        .expect("an lh leaf with 2 entries");

    // 1. Swap two entries: sort order (17).
    let mut d = orig.clone();
    let (a, b) = (lh + 8, lh + 16);
    let ea: Vec<u8> = d[a..a + 8].to_vec();
    d.copy_within(b..b + 8, a);
    d[b..b + 8].copy_from_slice(&ea);
    assert_rule(&d, "swapped siblings", 17);

    // 2. Break an lh hash (18).
    let mut d = orig.clone();
    let h = get32(&d, lh + 12);
    put32(&mut d, lh + 12, h ^ 1);
    assert_rule(&d, "wrong lh hash", 18);

    // 3. Break a cell size (8): not a multiple of 8.
    let mut d = orig.clone();
    let s = get32(&d, lh);
    put32(&mut d, lh, s.wrapping_sub(4));
    assert_rule(&d, "bad cell size", 8);

    // 4. Break the sk ring (27): the first sk's Flink points to itself.
    let sks: Vec<usize> = sig_cells(&orig, b"sk").collect();
    assert!(sks.len() >= 2);
    let mut d = orig.clone();
    put32(&mut d, sks[0] + 8, (sks[0] - 4096) as u32);
    assert_rule(&d, "broken sk ring", 27);

    // 5. Wrong reference count (28).
    let mut d = orig.clone();
    let n = get32(&d, sks[0] + 16);
    put32(&mut d, sks[0] + 16, n + 1);
    assert_rule(&d, "wrong refcount", 28);

    // 6. MaxNameLen too small on the root (19).
    let root = 4096 + get32(&orig, 36) as usize + 4;
    let mut d = orig.clone();
    let m = get32(&d, root + 52);
    put32(&mut d, root + 52, m & 0xFFFF_0000 | 1);
    assert_rule(&d, "MaxNameLen too small", 19);

    // 7. MaxValueDataLen too small somewhere (19).
    let key = sig_cells(&orig, b"nk")
        .find(|&at| get32(&orig, at + 4 + 64) > 0)
        .unwrap();
    let mut d = orig.clone();
    put32(&mut d, key + 4 + 64, 0);
    assert_rule(&d, "MaxValueDataLen too small", 19);

    // 8. Subkey count off by one (15).
    let mut d = orig.clone();
    let n = get32(&d, root + 20);
    put32(&mut d, root + 20, n + 1);
    assert_rule(&d, "subkey count", 15);

    // 9. Wrong parent (12).
    let child = 4096 + get32(&orig, lh + 8) as usize + 4;
    let mut d = orig.clone();
    put32(&mut d, child + 16, get32(&orig, child + 16) ^ 8);
    assert_rule(&d, "wrong parent", 12);

    // 10. Base block: checksum (3), sequence (2), version (1), Length (4).
    let mut d = orig.clone();
    d[12] ^= 1;
    assert_rule(&d, "checksum", 3);
    let mut d = orig.clone();
    put32(&mut d, 4, get32(&orig, 4) + 1);
    assert_rule(&d, "sequence", 2);
    let mut d = orig.clone();
    put32(&mut d, 24, 7);
    assert_rule(&d, "minor version", 1);
    let mut d = orig.clone();
    put32(&mut d, 40, get32(&orig, 40) + 4096);
    assert_rule(&d, "Length", 4);

    // 11. Bin offset field (7).
    let mut d = orig.clone();
    put32(&mut d, 4096 + 4, 0x1000);
    assert_rule(&d, "hbin offset", 7);

    // 12. Security descriptor revision (29).
    let mut d = orig.clone();
    d[sks[0] + 4 + 20] = 2;
    assert_rule(&d, "descriptor revision", 29);

    // 13. Leaf type against version (16): lh renamed lf in a 1.5 hive.
    let mut d = orig.clone();
    d[lh + 5] = b'f';
    assert_rule(&d, "lf in a 1.5 hive", 16);

    // 14. A freed key still listed (10).
    let mut d = orig.clone();
    let s = get32(&d, child - 4) as i32;
    put32(&mut d, child - 4, s.unsigned_abs());
    assert_rule(&d, "free subkey", 10);

    // 15. Duplicate value names (26): give a key's second value the first
    // one's name.
    let mut done = false;
    for at in sig_cells(&orig, b"nk") {
        let p = at + 4;
        if get32(&orig, p + 36) < 2 {
            continue;
        }
        let list = 4096 + get32(&orig, p + 40) as usize + 4;
        let v1 = 4096 + get32(&orig, list) as usize + 4;
        let v2 = 4096 + get32(&orig, list + 4) as usize + 4;
        let (n1, n2) = (get16(&orig, v1 + 2), get16(&orig, v2 + 2));
        if n1 == 0 || n1 != n2 || get16(&orig, v1 + 16) != get16(&orig, v2 + 16) {
            continue;
        }
        let mut d = orig.clone();
        let name = d[v1 + 20..v1 + 20 + n1 as usize].to_vec();
        d[v2 + 20..v2 + 20 + n1 as usize].copy_from_slice(&name);
        assert_rule(&d, "duplicate value names", 26);
        done = true;
        break;
    }
    assert!(done, "no key with two equally long value names");
}
