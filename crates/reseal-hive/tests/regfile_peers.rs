//! `.reg` interoperability with hivex's `hivexregedit` (Debian package
//! libwin-hivex-perl): our parser reads what it exports, and it merges what
//! our writer produces into a hive with the same types and bytes.
//!
//! hivexregedit quirks found while writing these tests:
//!
//! * `--export` writes every string as `hex(1):`/`hex(2):` (never quoted),
//!   binary as `hex(3):` rather than `hex:`, `dword:` only for 4-byte
//!   REG_DWORD data, LF line ends, no line wrapping, and the header
//!   `Windows Registry Editor Version 5.00` followed by a blank line.
//! * With `--prefix P`, the root key is exported as `[P\]` (trailing
//!   backslash) and other keys as `[P\Name\...]`; without a prefix they are
//!   `[\]` and `[\Name\...]`.
//! * Exported key and value names whose characters are all below U+0100
//!   are written as single Latin-1 bytes, others as UTF-8, so an export may
//!   mix encodings; our parser reads files that are not valid UTF-8 as
//!   Windows-1252, which gives the right names for Latin-1 letters.
//! * `--merge` reads the file as bytes and encodes quoted strings to
//!   UTF-16LE byte by byte: a non-ASCII character written in UTF-8 becomes
//!   one UTF-16 unit per UTF-8 byte (mojibake). Names are taken as UTF-8.
//!   The tests expect exactly that transformation for quoted non-ASCII
//!   strings; `hex(...)` data is stored unchanged.
//! * `--merge` wants exactly 8 hex digits after `dword:`, value lines that
//!   start in column 1, a blank line to end each section, and the parent of
//!   every created key to exist already; it accepts CRLF line ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use reseal_hive::regfile::{
    RegDocument, RegEncoding, RegOp, RegVersion, RegWriter, parse_reg, strip_prefix_ci,
};

const PREFIX: &str = r"HKEY_LOCAL_MACHINE\RESEAL";

fn corpus(test: &str) -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("notice: ../shared/corpus absent, skipping {test}");
        None
    }
}

fn have_tools(test: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in ["hivexregedit", "hivexml"] {
        if !std::env::split_paths(&path).any(|d| d.join(tool).is_file()) {
            println!(
                "notice: {tool} not installed (Debian: libwin-hivex-perl, libhivex-bin), skipping {test}"
            );
            return false;
        }
    }
    true
}

/// Runs `hivexregedit --export --prefix PREFIX hive '\'`.
fn export(hive: &Path) -> Result<Vec<u8>, String> {
    let out = Command::new("hivexregedit")
        .arg("--export")
        .arg("--prefix")
        .arg(PREFIX)
        .arg(hive)
        .arg("\\")
        .output()
        .map_err(|e| format!("cannot run hivexregedit: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "hivexregedit --export {} failed: {}",
            hive.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

/// Key and value counts according to `hivexml`, a separate hivex program
/// that dumps the hive as XML.
fn hivexml_counts(hive: &Path) -> Result<(usize, usize), String> {
    let out = Command::new("hivexml")
        .arg(hive)
        .output()
        .map_err(|e| format!("cannot run hivexml: {e}"))?;
    if !out.status.success() {
        return Err(format!("hivexml {} failed", hive.display()));
    }
    let xml = String::from_utf8_lossy(&out.stdout);
    Ok((
        xml.matches("<node ").count(),
        xml.matches("<value ").count(),
    ))
}

/// Path relative to the hive root ("" for the root itself).
fn relative(path: &str) -> String {
    let rest = strip_prefix_ci(path, PREFIX)
        .unwrap_or_else(|| panic!("exported path {path:?} lacks the prefix {PREFIX:?}"));
    rest.trim_start_matches('\\').to_string()
}

fn count_ops(doc: &RegDocument) -> (usize, usize) {
    let keys = doc
        .ops
        .iter()
        .filter(|op| matches!(op, RegOp::CreateKey { .. }))
        .count();
    let values = doc
        .ops
        .iter()
        .filter(|op| matches!(op, RegOp::SetValue { .. }))
        .count();
    (keys, values)
}

#[test]
fn parses_hivexregedit_exports_of_corpus_hives() {
    let test = "parses_hivexregedit_exports_of_corpus_hives";
    let Some(corpus) = corpus(test) else { return };
    if !have_tools(test) {
        return;
    }
    // (hive, must export): the first ones are required to work.
    let hives: &[(&str, bool)] = &[
        ("EricZimmerman-Registry/Registry.Test/Hives/SAM", true),
        (
            "EricZimmerman-Registry/Registry.Test/Hives/NTUSER1.DAT",
            true,
        ),
        ("aiowinreg/tests/testdata/win2019_64/sam.reg", true),
        ("aiowinreg/tests/testdata/win2019_64/security.reg", true),
        ("plaso/test_data/NTUSER.DAT", true),
        ("EricZimmerman-Registry/Registry.Test/Hives/SECURITY", false),
        ("EricZimmerman-Registry/Registry.Test/Hives/BCD", false),
        (
            "EricZimmerman-Registry/Registry.Test/Hives/UsrClassDeletedBags.dat",
            false,
        ),
        ("aiowinreg/tests/testdata/win2008_32/sam.reg", false),
        ("aiowinreg/tests/testdata/win2012_64/security.reg", false),
        ("aiowinreg/tests/testdata/nt/software.reg", false),
        ("aiowinreg/tests/testdata/nt/system.reg", false),
        ("plaso/test_data/NTUSER-WIN7.DAT", false),
        ("hivex/images/minimal", false),
    ];
    let mut checked = 0;
    for &(rel, required) in hives {
        let hive = corpus.join(rel);
        if !hive.is_file() {
            assert!(!required, "{} missing from the corpus", hive.display());
            println!("notice: {rel} absent, skipped");
            continue;
        }
        let (bytes, counts) = match (export(&hive), hivexml_counts(&hive)) {
            (Ok(b), Ok(c)) => (b, c),
            (Err(e), _) | (_, Err(e)) => {
                assert!(!required, "{e}");
                println!("notice: {rel}: hivex cannot read it ({e}), skipped");
                continue;
            }
        };
        let doc = parse_reg(rel, &bytes).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(doc.version, RegVersion::V5, "{rel}");
        assert_eq!(
            count_ops(&doc),
            counts,
            "{rel}: (keys, values) parsed vs hivexml"
        );

        // Every value belongs to the section just opened; the first section
        // is the root.
        let mut current = None;
        for op in &doc.ops {
            match op {
                RegOp::CreateKey { path } => current = Some(path.clone()),
                RegOp::SetValue { path, .. } => assert_eq!(Some(path), current.as_ref()),
                other => panic!("{rel}: unexpected op {other:?} in an export"),
            }
        }
        match doc.ops.first() {
            Some(RegOp::CreateKey { path }) => assert_eq!(relative(path), "", "{rel}"),
            other => panic!("{rel}: export starts with {other:?}"),
        }
        checked += 1;
    }
    assert!(checked >= 5);
}

/// A value written into the merge test.
struct Case {
    name: Option<String>,
    value_type: u32,
    data: Vec<u8>,
    /// The text, when written as REG_SZ that regedit would quote.
    text: Option<String>,
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn sz(name: Option<&str>, text: &str) -> Case {
    Case {
        name: name.map(str::to_string),
        value_type: 1,
        data: utf16z(text),
        text: Some(text.to_string()),
    }
}

fn raw(name: &str, value_type: u32, data: Vec<u8>) -> Case {
    Case {
        name: Some(name.to_string()),
        value_type,
        data,
        text: None,
    }
}

/// What `hivexregedit --merge` stores for a quoted string read from a UTF-8
/// file: each byte of the file becomes one UTF-16 unit (see the quirks at
/// the top of this file). Identical to the real data for ASCII text.
fn hivex_quoted_string(text: &str) -> Vec<u8> {
    text.bytes()
        .map(u16::from)
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

#[test]
fn hivexregedit_merges_what_we_write() {
    let test = "hivexregedit_merges_what_we_write";
    let Some(corpus) = corpus(test) else { return };
    if !have_tools(test) {
        return;
    }
    let src = corpus.join("hivex/images/minimal");
    if !src.is_file() {
        println!("notice: {} absent, skipping {test}", src.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hive = dir.path().join("minimal");
    std::fs::write(&hive, std::fs::read(&src).unwrap()).unwrap();

    let big: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
    let sections: Vec<(&str, Vec<Case>)> = vec![
        (
            "Test",
            vec![
                sz(None, "default value"),
                sz(Some("plain"), "hello world"),
                sz(
                    Some(r#"quotes "and" back\slash"#),
                    r#"C:\Program Files\"x"\"#,
                ),
                sz(Some("empty"), ""),
                sz(
                    Some("non-ascii"),
                    "caf\u{e9} \u{20ac} \u{65e5}\u{672c} \u{1f600}",
                ),
                sz(Some("n\u{e9}e"), "latin name"),
                raw("expand", 2, utf16z(r"%SystemRoot%\system32")),
                raw(
                    "multi",
                    7,
                    [utf16z("a"), utf16z("bb \u{e9}"), vec![0, 0]].concat(),
                ),
                raw("qword", 11, 0x0123_4567_89ab_cdefu64.to_le_bytes().to_vec()),
                raw("dword", 4, 0xdead_beefu32.to_le_bytes().to_vec()),
                raw("short dword", 4, vec![1, 2, 3]),
                raw("sz odd length", 1, vec![0x41, 0, 0]),
                raw("sz two NULs", 1, [utf16z("a"), utf16z("")].concat()),
                raw("sz with CRLF", 1, utf16z("line1\r\nline2")),
                raw("none", 0, vec![]),
                raw("huge type", 0x100000, vec![1, 2, 3]),
                raw("max type", u32::MAX, vec![0xff]),
                raw("empty binary", 3, vec![]),
                raw("big binary", 3, big),
            ],
        ),
        ("Test\\Key with spaces", vec![sz(None, "in spaces")]),
        (
            "Test\\Brackets [x] ]y[",
            vec![raw("v", 3, vec![9]), sz(Some("=weird;name"), "b")],
        ),
        ("Test\\D\u{e9} \u{fc}", vec![raw("v", 4, vec![1, 0, 0, 0])]),
        ("Test\\Key with spaces\\Empty", vec![]),
    ];

    let mut w = RegWriter::new(RegVersion::V5);
    for (key, cases) in &sections {
        w.key(&format!("{PREFIX}\\{key}"));
        for c in cases {
            w.value(c.name.as_deref(), c.value_type, &c.data);
        }
    }
    let text = w.clone().finish_string();
    // The writer wrapped the big binary value the way regedit does.
    assert!(text.contains("\"big binary\"=hex:"));
    assert!(text.contains(",\\\r\n  "));
    assert!(
        text.lines().all(|l| l.encode_utf16().count() <= 80),
        "{text}"
    );
    let reg = dir.path().join("in.reg");
    std::fs::write(&reg, w.finish(RegEncoding::Utf8)).unwrap();

    let out = Command::new("hivexregedit")
        .arg("--merge")
        .arg("--prefix")
        .arg(PREFIX)
        .arg(&hive)
        .arg(&reg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hivexregedit --merge failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let exported = export(&hive).unwrap();
    let doc = parse_reg("export", &exported).unwrap();
    let mut keys = Vec::new();
    let mut values = BTreeMap::new();
    for op in &doc.ops {
        match op {
            RegOp::CreateKey { path } => keys.push(relative(path)),
            RegOp::SetValue {
                path,
                name,
                value_type,
                data,
            } => {
                let name = name.clone().unwrap_or_default();
                let old = values.insert((relative(path), name), (*value_type, data.clone()));
                assert!(old.is_none(), "duplicate value in export");
            }
            other => panic!("unexpected op {other:?} in an export"),
        }
    }
    let mut want_keys: Vec<String> = sections.iter().map(|(k, _)| k.to_string()).collect();
    want_keys.push(String::new());
    want_keys.sort();
    keys.sort();
    assert_eq!(keys, want_keys);

    let mut count = 0;
    for (key, cases) in &sections {
        for c in cases {
            let name = c.name.clone().unwrap_or_default();
            let got = values
                .get(&(key.to_string(), name.clone()))
                .unwrap_or_else(|| panic!("{key}\\{name}: missing after merge"));
            let want = match &c.text {
                Some(t) if !t.is_ascii() => hivex_quoted_string(t),
                _ => c.data.clone(),
            };
            assert_eq!(got, &(c.value_type, want), "{key}\\{name}");
            count += 1;
        }
    }
    assert_eq!(values.len(), count, "extra values after merge");
}
