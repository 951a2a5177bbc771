//! Machine-SID rewrite on the real Win10 RathbunVM SAM, SECURITY and
//! NTUSER.DAT (the dirty ones replayed from their logs), verified with
//! independent readers: regipy (or hivex) for key names, value names and
//! value data; dissect.regf, driven by a small script below, for the
//! security descriptors; hivexregedit and regfexport must still read the
//! whole file.
//!
//! The machine SID is taken from the original SECURITY hive as an
//! independent reader sees it (`Policy\PolAcDmS`, default value) and
//! cross-checked with the SAM (`SAM\Domains\Account`, value `V`, last 24
//! bytes). Skips with a notice when the corpus or a reader is absent.

mod common;
mod corpus_support;

use common::{Dump, corpus_dir, missing, notice, python, run_capture, utf16le};
use corpus_support::{Reader, count, readers, replace_bytes, stage};
use reseal_hive::sid_rewrite::{SidPlace, SidReport};
use reseal_hive::{Hive, Sid};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const DIR: &str = "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM";

/// Prints every key's security cell offset and descriptor (hex) as JSON,
/// read with dissect.regf.
const SD_SCRIPT: &str = r#"
import json, sys
from dissect.regf import regf
out = {}
keys = 0
with open(sys.argv[1], "rb") as f:
    hive = regf.RegistryHive(f)
    stack = [hive.root()]
    while stack:
        k = stack.pop()
        keys += 1
        off = k.cell.Security
        if off not in out:
            sk = hive.cell(off)
            out[off] = bytes(sk.cell.Descriptor).hex()
        stack.extend(k.subkeys())
print(json.dumps({"keys": keys, "sks": {str(k): v for k, v in out.items()}}))
"#;

/// Security descriptors by security-cell offset, and the number of keys.
fn descriptors(path: &Path, tmp: &Path) -> Option<(usize, BTreeMap<u32, Vec<u8>>)> {
    let py = python()?;
    let script = tmp.join("sd_dump.py");
    std::fs::write(&script, SD_SCRIPT).unwrap();
    let out = run_capture(Command::new(py).arg(&script).arg(path))
        .unwrap_or_else(|e| panic!("dissect.regf SD dump of {}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let sks = v["sks"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, h)| {
            let h = h.as_str().unwrap();
            let bytes = (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect();
            (k.parse().unwrap(), bytes)
        })
        .collect();
    Some((v["keys"].as_u64().unwrap() as usize, sks))
}

/// The encodings of a domain SID searched for: the binary form without its
/// revision and count bytes (so that account SIDs under it match too), and
/// the string form in UTF-16LE and ASCII.
struct Forms {
    text: String,
    binary: Vec<u8>,
    utf16: Vec<u8>,
    ascii: Vec<u8>,
}

fn forms(sid: &Sid) -> Forms {
    let text = sid.to_string();
    Forms {
        binary: sid.to_bytes()[2..].to_vec(),
        utf16: utf16le(&text),
        ascii: text.clone().into_bytes(),
        text,
    }
}

/// Occurrences of a string SID in `s` not followed by another digit.
fn count_str(s: &str, sid: &str) -> usize {
    s.match_indices(sid)
        .filter(|(i, _)| {
            !s[i + sid.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        .count()
}

fn count_data(d: &[u8], f: &Forms) -> usize {
    count(d, &f.binary) + count_units(d, &f.utf16, 2) + count_units(d, &f.ascii, 1)
}

/// Occurrences of an encoded string not followed by an encoded digit.
fn count_units(d: &[u8], needle: &[u8], unit: usize) -> usize {
    (0..d.len().saturating_sub(needle.len() - 1))
        .filter(|&i| d[i..].starts_with(needle))
        .filter(|&i| {
            let next = &d[i + needle.len()..];
            !(next.len() >= unit
                && next[0].is_ascii_digit()
                && next[1..unit].iter().all(|&b| b == 0))
        })
        .count()
}

fn replace_str(s: &str, old: &Forms, new: &Forms) -> String {
    // The SIDs compared here are never followed by a digit (checked by the
    // counts), so a plain replacement is exact.
    s.replace(&old.text, &new.text)
}

fn replace_data(d: &[u8], old: &Forms, new: &Forms) -> Vec<u8> {
    let d = replace_bytes(d, &old.binary, &new.binary);
    let d = replace_bytes(&d, &old.utf16, &new.utf16);
    replace_bytes(&d, &old.ascii, &new.ascii)
}

/// The expected dump: `before` with every occurrence of `old` replaced.
fn expected(before: &Dump, old: &Forms, new: &Forms) -> Dump {
    let mut out = Dump::default();
    for (path, k) in &before.keys {
        let kd = out.add_key(&replace_str(path, old, new)).unwrap();
        for (name, (ty, data)) in &k.values {
            kd.values.insert(
                replace_str(name, old, new),
                (*ty, replace_data(data, old, new)),
            );
        }
    }
    out
}

/// What an independent reader sees of one SID in a dump.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    key_names: usize,
    value_names: usize,
    values_with_data: usize,
    data_hits: usize,
}

fn seen(d: &Dump, f: &Forms) -> Seen {
    let mut s = Seen::default();
    for (path, k) in &d.keys {
        let last = path.rsplit('\\').next().unwrap();
        s.key_names += usize::from(count_str(last, &f.text) > 0);
        for (name, (_, data)) in &k.values {
            s.value_names += usize::from(count_str(name, &f.text) > 0);
            let n = count_data(data, f);
            s.values_with_data += usize::from(n > 0);
            s.data_hits += n;
        }
    }
    s
}

fn parse_binary_sid(b: &[u8]) -> Sid {
    assert!(b.len() >= 8 && b[0] == 1, "not a SID: {b:02x?}");
    let n = b[1] as usize;
    assert_eq!(b.len(), 8 + 4 * n, "SID length");
    let auth = b[2..8].iter().fold(0u64, |a, &x| a << 8 | u64::from(x));
    let subs: Vec<u32> = (0..n)
        .map(|i| u32::from_le_bytes(b[8 + 4 * i..12 + 4 * i].try_into().unwrap()))
        .collect();
    Sid::new(auth, &subs).unwrap()
}

/// A corpus hive opened with its logs, and its recovered original written
/// to a file for the readers.
struct Opened {
    hive: Hive,
    original: PathBuf,
}

fn open(corpus: &Path, rel: &str, tmp: &Path) -> Opened {
    let staged = stage(&corpus.join(rel), &tmp.join("in"));
    let hive = Hive::open(&staged.hive).unwrap_or_else(|e| panic!("{rel}: {e}"));
    std::fs::create_dir_all(tmp.join("orig")).unwrap();
    let original = tmp.join("orig").join(staged.hive.file_name().unwrap());
    std::fs::write(&original, hive.to_bytes()).unwrap();
    Opened { hive, original }
}

/// The reader used for names and data: regipy, else hivex.
fn main_reader() -> Option<Reader> {
    if !readers(&[Reader::Regipy]).is_empty() {
        return Some(Reader::Regipy);
    }
    readers(&[Reader::Hivex]).first().copied()
}

/// The machine SID as the readers see it in SECURITY and SAM.
fn machine_sid(corpus: &Path, reader: Reader) -> Sid {
    let tmp = tempfile::tempdir().unwrap();
    let sec = open(corpus, &format!("{DIR}/SECURITY"), &tmp.path().join("sec"));
    let d = reader.dump(&sec.original).unwrap();
    let (_, raw) = d
        .value("Policy\\PolAcDmS", "")
        .expect("SECURITY Policy\\PolAcDmS default value");
    let sid = parse_binary_sid(raw);
    assert!(sid.is_machine_domain(), "{sid} is not S-1-5-21-x-y-z");
    let sam = open(corpus, &format!("{DIR}/SAM"), &tmp.path().join("sam"));
    let d = reader.dump(&sam.original).unwrap();
    let (_, v) = d
        .value("SAM\\Domains\\Account", "V")
        .expect("SAM Account V");
    assert_eq!(
        &v[v.len() - 24..],
        &sid.to_bytes()[..],
        "SAM Account V ends with the SECURITY PolAcDmS SID"
    );
    sid
}

/// Well-known SIDs that a rewrite must leave alone: binary and UTF-16 forms.
fn well_known() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for s in ["S-1-5-18", "S-1-5-32-544"] {
        let sid: Sid = s.parse().unwrap();
        out.push(sid.to_bytes());
        out.push(utf16le(s));
    }
    out
}

fn well_known_counts(d: &Dump, sds: &BTreeMap<u32, Vec<u8>>) -> Vec<usize> {
    well_known()
        .iter()
        .map(|p| {
            let data: usize = d
                .keys
                .values()
                .flat_map(|k| k.values.values())
                .map(|(_, v)| count(v, p))
                .sum();
            data + sds.values().map(|sd| count(sd, p)).sum::<usize>()
        })
        .collect()
}

fn report_counts(r: &SidReport) -> (usize, usize) {
    let data_hits = r
        .occurrences
        .iter()
        .filter(|o| matches!(o.place, SidPlace::ValueData { .. }))
        .count();
    let sd_hits = r
        .occurrences
        .iter()
        .filter(|o| matches!(o.place, SidPlace::SecurityDescriptor { .. }))
        .count();
    (data_hits, sd_hits)
}

/// Rewrites `old` to `new` in one hive and verifies the result.
fn rewrite_one(corpus: &Path, rel: &str, reader: Reader, old: &Sid, new: &Sid) {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = open(corpus, rel, tmp.path());
    let (of, nf) = (forms(old), forms(new));
    let before = reader.dump(&o.original).unwrap();
    let sds_before = descriptors(&o.original, tmp.path());

    let report = o
        .hive
        .rewrite_sids(old, new)
        .unwrap_or_else(|e| panic!("{rel}: rewrite_sids: {e}"));
    let out = tmp.path().join("out").join(o.original.file_name().unwrap());
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    o.hive
        .save_to(&out)
        .unwrap_or_else(|e| panic!("{rel}: save_to: {e}"));
    let reopened = Hive::open(&out).unwrap();
    let check = reopened.check();
    assert!(
        check.is_clean(),
        "{rel}: {:?}",
        check.errors().collect::<Vec<_>>()
    );
    let after = reader.dump(&out).unwrap();

    // What the reader saw before agrees with what the engine reports.
    let old_before = seen(&before, &of);
    let (data_hits, sd_hits) = report_counts(&report);
    assert_eq!(old_before.key_names, report.key_names, "{rel}: key names");
    assert_eq!(
        old_before.value_names, report.value_names,
        "{rel}: value names"
    );
    assert_eq!(
        old_before.values_with_data, report.value_data,
        "{rel}: values"
    );
    assert_eq!(old_before.data_hits, data_hits, "{rel}: data occurrences");
    assert!(
        report.descriptors + report.key_names + report.value_data > 0,
        "{rel}: the machine SID was found nowhere"
    );

    // After: no trace of the old SID; the new one where the old one was.
    assert_eq!(seen(&after, &of), Seen::default(), "{rel}: old SID left");
    let new_before = seen(&before, &nf);
    let new_after = seen(&after, &nf);
    assert_eq!(
        new_after,
        Seen {
            key_names: new_before.key_names + old_before.key_names,
            value_names: new_before.value_names + old_before.value_names,
            values_with_data: new_before.values_with_data + old_before.values_with_data,
            data_hits: new_before.data_hits + old_before.data_hits,
        },
        "{rel}: new SID occurrences"
    );
    // Exactly those changes and nothing else.
    common::assert_same(
        &expected(&before, &of, &nf),
        &format!("expected {rel}"),
        &after,
        &format!("{reader:?} {rel}"),
    );

    // Security descriptors, read by dissect.regf.
    let sds_after = descriptors(&out, tmp.path());
    match (sds_before, sds_after) {
        (Some((kb, b)), Some((ka, a))) => {
            assert_eq!(kb, ka, "{rel}: key count (dissect)");
            let with = |m: &BTreeMap<u32, Vec<u8>>, f: &Forms| {
                m.values().filter(|sd| count(sd, &f.binary) > 0).count()
            };
            let hits = |m: &BTreeMap<u32, Vec<u8>>, f: &Forms| -> usize {
                m.values().map(|sd| count(sd, &f.binary)).sum()
            };
            assert_eq!(with(&b, &of), report.descriptors, "{rel}: descriptors");
            assert_eq!(hits(&b, &of), sd_hits, "{rel}: SIDs in descriptors");
            assert_eq!(with(&a, &of), 0, "{rel}: old SID left in a descriptor");
            assert_eq!(
                hits(&a, &nf),
                hits(&b, &nf) + hits(&b, &of),
                "{rel}: new SID in descriptors"
            );
            assert_eq!(
                well_known_counts(&before, &b),
                well_known_counts(&after, &a),
                "{rel}: well-known SIDs changed"
            );
        }
        _ => notice("dissect.regf not available: security descriptors not read independently"),
    }

    // hivexregedit and regfexport still read the whole file.
    for r in readers(&[Reader::Hivex, Reader::Regfexport]) {
        match (r.dump(&o.original), r.dump(&out)) {
            (Ok(b), Ok(a)) => assert_eq!(b.keys.len(), a.keys.len(), "{rel}: {r:?} keys"),
            (Err(_), Err(_)) => notice(&format!("{rel}: {r:?} cannot read the original either")),
            (Ok(_), Err(e)) => panic!("{rel}: {r:?} cannot read the rewritten hive: {e}"),
            (Err(_), Ok(_)) => {}
        }
    }
    // The rewrite also zeroes unused space (free cells, slack after
    // records), where Windows leaves stale copies: no byte form of the old
    // SID may remain anywhere in the saved file.
    let raw = std::fs::read(&out).unwrap();
    let left = count(&raw, &of.binary) + count(&raw, &of.utf16) + count(&raw, &of.ascii);
    assert_eq!(left, 0, "{rel}: copies of {old} remain in the saved file");
    if rel.ends_with("SAM") {
        sam_specifics(&before, &after, old, new, rel);
    }
    eprintln!(
        "{rel}: {old} -> {new}: {} descriptors, {} key names, {} value names, {} values",
        report.descriptors, report.key_names, report.value_names, report.value_data
    );
}

/// Alias member lists keep their RIDs under the new domain; the reverse
/// membership keys named by the domain SID are renamed with their content.
fn sam_specifics(before: &Dump, after: &Dump, old: &Sid, new: &Sid, rel: &str) {
    let (of, nf) = (forms(old), forms(new));
    let mut members = 0;
    for (path, k) in &before.keys {
        if !path.starts_with("SAM\\Domains\\Builtin\\Aliases\\") {
            continue;
        }
        let Some((_, c)) = k.values.get("C") else {
            continue;
        };
        let (_, c_after) = after.keys[path].values.get("C").expect("alias C kept");
        let rids = |d: &[u8], f: &Forms| -> Vec<u32> {
            (0..d.len().saturating_sub(f.binary.len() + 3))
                .filter(|&i| d[i..].starts_with(&f.binary) && d[i - 1] == 5)
                .map(|i| {
                    let at = i + f.binary.len();
                    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
                })
                .collect()
        };
        let r = rids(c, &of);
        members += r.len();
        assert_eq!(r, rids(c_after, &nf), "{rel}: {path} member RIDs");
        assert!(rids(c_after, &of).is_empty());
    }
    assert!(members > 0, "{rel}: no alias member of the machine domain");
    let old_members = format!("SAM\\Domains\\Builtin\\Aliases\\Members\\{old}");
    let new_members = format!("SAM\\Domains\\Builtin\\Aliases\\Members\\{new}");
    let moved: Vec<(&String, _)> = before
        .keys
        .iter()
        .filter(|(p, _)| p.starts_with(&old_members))
        .collect();
    assert!(!moved.is_empty(), "{rel}: no {old_members}");
    for (p, k) in moved {
        let np = format!("{new_members}{}", &p[old_members.len()..]);
        assert_eq!(
            after.keys.get(&np),
            Some(k),
            "{rel}: {np} missing or changed"
        );
        assert!(!after.keys.contains_key(p));
    }
}

fn run(new: &str) {
    let Some(corpus) = corpus_dir() else {
        missing("the corpus (set RESEAL_CORPUS)");
        return;
    };
    let Some(reader) = main_reader() else { return };
    let old = machine_sid(&corpus, reader);
    let new: Sid = new.parse().unwrap();
    for hive in ["SAM", "SECURITY", "NTUSER.DAT"] {
        rewrite_one(&corpus, &format!("{DIR}/{hive}"), reader, &old, &new);
    }
}

#[test]
fn rewrite_to_same_length_sid() {
    run("S-1-5-21-1111111111-2222222222-3333333333");
}

#[test]
fn rewrite_to_shorter_sid() {
    run("S-1-5-21-1-2-3");
}

#[test]
fn digit_boundary_counting() {
    let f = forms(&"S-1-5-21-1-2-3".parse().unwrap());
    assert_eq!(count_str("S-1-5-21-1-2-3-500", &f.text), 1);
    assert_eq!(count_str("S-1-5-21-1-2-34", &f.text), 0);
    assert_eq!(count_units(&utf16le("xS-1-5-21-1-2-3"), &f.utf16, 2), 1);
    assert_eq!(count_units(&utf16le("S-1-5-21-1-2-37"), &f.utf16, 2), 0);
    assert_eq!(count_units(b"S-1-5-21-1-2-3\0", &f.ascii, 1), 1);
}
