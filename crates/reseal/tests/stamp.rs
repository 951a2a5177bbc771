//! `reseal stamp`: clones of one generalized root share no SID, MachineGuid
//! or computer name; a seed makes stamping reproducible (whatever the
//! number of threads), no seed makes it random. Each clone's name is in its
//! answer file (so that it survives specialize) and in SECURITY PolAcDmN.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::process::Command;

use reseal::backend::dir::DirBackend;
use reseal::describe::lsa_unicode_string;
use reseal::generalize::generalize;
use reseal::options::GeneralizeOptions;
use reseal::stamp::{CloneNames, StampOptions, stamp};
use reseal::unattend::Unattend;
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

/// SECURITY `Policy\PolAcDmN` as `reseal::describe` reads it.
fn account_domain_name(root: &Path) -> Option<String> {
    let sec = Hive::open(root.join("Windows/System32/config/SECURITY")).expect("SECURITY");
    let k = sec.key(r"Policy\PolAcDmN").expect("key");
    let v = sec.value(k, "").expect("value").expect("PolAcDmN");
    lsa_unicode_string(&v.data)
}

/// The clone's `Windows\Panther\unattend.xml`, parsed.
fn answer_file(root: &Path) -> Unattend {
    let p = root.join("Windows/Panther/unattend.xml");
    Unattend::parse("unattend.xml", &fs::read(p).expect("unattend.xml")).expect("parse")
}

/// `hivexregedit --export` (when installed) reads the hive and finds the
/// account domain name key in it.
fn hivex_reads(hive: &Path) {
    let out = match Command::new("hivexregedit")
        .env("PERL_UNICODE", "SO")
        .arg("--export")
        .arg(hive)
        .arg("\\")
        .output()
    {
        Ok(o) => o,
        Err(_) => {
            reseal_testkit::require(false, "hivexregedit");
            return;
        }
    };
    assert!(
        out.status.success(),
        "hivexregedit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(
        text.contains("[\\Policy\\PolAcDmN]"),
        "no PolAcDmN in the export"
    );
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
    let mut o = StampOptions::new(out, count, CloneNames::Pattern("WEB-{n:03}".into()));
    o.seed = seed;
    o
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
        // The name survives specialize: the answer file (there was none)
        // names the clone, and the account domain name follows.
        let u = answer_file(&c.path);
        assert_eq!(u.computer_name.as_deref(), Some(want.as_str()));
        assert!(!u.has_passwords);
        assert_eq!(c.answer_files.len(), 1);
        assert_eq!(c.answer_files[0].action, "created");
        assert_eq!(account_domain_name(&c.path).as_deref(), Some(want.as_str()));
        hivex_reads(&c.path.join("Windows/System32/config/SECURITY"));
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
        let o = StampOptions::new(t.path().join("out"), 2, names);
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

/// An answer file with other settings and a password, in specialize and
/// oobeSystem; `{NAME}` marks the computer name.
const ANSWER: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend">
    <settings pass="specialize">
        <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS" xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State">
            <!-- the name of the machine -->
            <ComputerName>{NAME}</ComputerName>
            <TimeZone>W. Europe Standard Time</TimeZone>
        </component>
    </settings>
    <settings pass="oobeSystem">
        <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
            <UserAccounts>
                <AdministratorPassword>
                    <Value>S3cret-Pa55</Value>
                    <PlainText>true</PlainText>
                </AdministratorPassword>
            </UserAccounts>
        </component>
    </settings>
</unattend>
"#;

/// Encodes an answer file's text.
type Encoder = fn(&str) -> Vec<u8>;

/// UTF-8 with a byte-order mark.
fn utf8_bom(s: &str) -> Vec<u8> {
    let mut b = vec![0xEF, 0xBB, 0xBF];
    b.extend_from_slice(s.as_bytes());
    b
}

/// UTF-16 LE with a byte-order mark and CRLF line ends.
fn utf16le_crlf(s: &str) -> Vec<u8> {
    let s = s.replace('\n', "\r\n");
    [0xFF, 0xFE]
        .into_iter()
        .chain(s.encode_utf16().flat_map(u16::to_le_bytes))
        .collect()
}

#[test]
fn existing_answer_files_get_only_the_name() {
    let t = tempfile::tempdir().expect("tempdir");
    let cases: [(&str, Encoder); 2] = [("utf8-bom", utf8_bom), ("utf16le-crlf", utf16le_crlf)];
    for (label, encode) in cases {
        let dir = t.path().join(label);
        let src = generalized(&dir);
        // Stored with another case: the clone's file is edited, not doubled.
        let original = encode(&ANSWER.replace("{NAME}", "GOLDEN"));
        fs::write(src.join("Windows/Panther/UNATTEND.XML"), &original).expect("write");
        let report = stamp(&src, &opts(&dir.join("out"), 2, Some(3))).expect("stamp");
        let shown = format!(
            "{report:?}{}",
            serde_json::to_string(&report).expect("json")
        );
        assert!(
            !shown.contains("S3cret"),
            "{label}: a password in the report"
        );
        for (i, c) in report.clones.iter().enumerate() {
            let want = format!("WEB-{:03}", i + 1);
            let panther: Vec<String> = fs::read_dir(c.path.join("Windows/Panther"))
                .expect("panther")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n.eq_ignore_ascii_case("unattend.xml"))
                .collect();
            assert_eq!(panther, ["UNATTEND.XML"], "{label}");
            assert_eq!(c.answer_files[0].action, "edited");
            let bytes = fs::read(c.path.join("Windows/Panther/UNATTEND.XML")).expect("read");
            assert_eq!(
                bytes,
                encode(&ANSWER.replace("{NAME}", &want)),
                "{label}: {want}: more than the ComputerName text changed"
            );
            assert_eq!(&bytes[..2], &original[..2], "{label}: encoding");
            let u = Unattend::parse("unattend.xml", &bytes).expect("parse");
            assert_eq!(u.computer_name.as_deref(), Some(want.as_str()));
            assert!(u.has_passwords);
            assert!(!u.redacted().contains("S3cret"));
            assert_eq!(account_domain_name(&c.path).as_deref(), Some(want.as_str()));
        }
        // The source is untouched.
        assert_eq!(
            fs::read(src.join("Windows/Panther/UNATTEND.XML")).expect("src"),
            original
        );
    }
}

#[test]
fn answer_files_without_the_setting_get_it_added() {
    let t = tempfile::tempdir().expect("tempdir");
    let src = generalized(t.path());
    // No specialize pass at all: a settings block is added, nothing else
    // changes.
    let start = ANSWER
        .find("    <settings pass=\"specialize\">")
        .expect("start");
    let end = ANSWER
        .find("    <settings pass=\"oobeSystem\">")
        .expect("end");
    let original = format!("{}{}", &ANSWER[..start], &ANSWER[end..]);
    fs::write(src.join("Windows/Panther/unattend.xml"), &original).expect("write");
    let report = stamp(&src, &opts(&t.path().join("out"), 1, Some(5))).expect("stamp");
    let c = &report.clones[0];
    let text = fs::read_to_string(c.path.join("Windows/Panther/unattend.xml")).expect("read");
    let u = Unattend::parse("unattend.xml", text.as_bytes()).expect("parse");
    assert_eq!(u.computer_name.as_deref(), Some("WEB-001"));
    let added_at = text
        .find("    <settings pass=\"specialize\">")
        .expect("added");
    let added_end = text
        .find("    <settings pass=\"oobeSystem\">")
        .expect("oobe");
    assert_eq!(
        format!("{}{}", &text[..added_at], &text[added_end..]),
        original
    );
    assert!(text[added_at..added_end].contains(
        "processorArchitecture=\"amd64\" publicKeyToken=\"31bf3856ad364e35\" language=\"neutral\" versionScope=\"nonSxS\""
    ));
}
