//! A machine-SID rewrite leaves nothing of the old domain behind, in two
//! places a whole-SID search misses:
//!
//! * SIDs inside longer names and strings (`…%5CS-1-5-21-A-B-C-1001-
//!   MergedResources-1.pri`, the URL-encoded paths Windows keeps under
//!   `Local Settings\MrtCache` in UsrClass.dat): key names, value names,
//!   UTF-16 and ASCII strings in value data;
//! * the slack of security descriptors (an ACL whose `AclSize` is larger
//!   than its ACEs, holding `15000000` + the domain's three sub-authorities
//!   from a removed ACE).
//!
//! A generated hive holds all of them, and so does the real UsrClass.dat of
//! the corpus (DFIRArtifactMuseum, RathbunVM, replayed from its logs). The
//! results are read back with dissect.regf (names, descriptors, through a
//! small script below) and regipy or hivex (values), and searched byte for
//! byte for the old domain's 12 sub-authority bytes.

mod common;
mod corpus_support;

use common::{Dump, python, run_capture, utf16le};
use corpus_support::{Reader, readers, stage};
use reseal_hive::security::parse_descriptor;
use reseal_hive::sid_scan::{find_domain_sub_authorities, sub_authority_bytes};
use reseal_hive::{Hive, Sid};
use reseal_testkit::{corpus_dir, require};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Prints, as JSON, the root key's name, every key path below it, and the
/// security descriptor (hex) of every key, by key path, read with
/// dissect.regf.
const SCRIPT: &str = r#"
import json, sys
from dissect.regf import regf
with open(sys.argv[1], "rb") as f:
    hive = regf.RegistryHive(f)
    root = hive.root()
    out = {"root": root.name, "keys": {}}
    stack = [(root, "")]
    while stack:
        k, path = stack.pop()
        sk = hive.cell(k.cell.Security)
        out["keys"][path] = bytes(sk.cell.Descriptor).hex()
        for s in k.subkeys():
            stack.append((s, s.name if path == "" else path + "\\" + s.name))
print(json.dumps(out))
"#;

/// What dissect.regf sees: the root name and each key's descriptor.
struct Seen {
    root: String,
    keys: BTreeMap<String, Vec<u8>>,
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

fn dissect(path: &Path, tmp: &Path) -> Seen {
    let py = python().expect("python");
    let script = tmp.join("keys_and_sds.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = run_capture(Command::new(py).arg(&script).arg(path))
        .unwrap_or_else(|e| panic!("dissect.regf on {}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    Seen {
        root: v["root"].as_str().unwrap().to_string(),
        keys: v["keys"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, h)| (k.clone(), unhex(h.as_str().unwrap())))
            .collect(),
    }
}

/// The independent tools this test needs, or `false` (a skip, or a
/// failure under CI).
fn tools() -> bool {
    require(python().is_some(), "the python venv (cargo xtask setup)")
        && require(
            !readers(&[Reader::Dissect]).is_empty(),
            "dissect.regf in the python venv",
        )
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

/// Occurrences of the old domain in any byte form: its 12 sub-authority
/// bytes (binary SIDs, broken ones, bare remnants) and its string form
/// without the leading `S` in ASCII and UTF-16LE.
fn traces(data: &[u8], old: &Sid) -> usize {
    let text = old.to_string()[1..].to_string();
    count(data, &sub_authority_bytes(old))
        + count(data, text.as_bytes())
        + count(data, &utf16le(&text))
}

/// A DACL: SYSTEM and `user` get full control; its `AclSize` is 20 bytes
/// larger than the two ACEs, and those bytes hold `15000000` and the three
/// sub-authorities of `stale` plus 4 more bytes, as a removed ACE leaves
/// them.
fn descriptor_with_slack(owner: &Sid, user: &Sid, stale: &Sid) -> Vec<u8> {
    let ace = |sid: &Sid| {
        let s = sid.to_bytes();
        let mut a = vec![0u8, 0x02];
        a.extend(((8 + s.len()) as u16).to_le_bytes());
        a.extend(0x000F_003Fu32.to_le_bytes());
        a.extend(s);
        a
    };
    let system: Sid = "S-1-5-18".parse().unwrap();
    let aces = [ace(&system), ace(user)].concat();
    let mut slack = stale.to_bytes()[8..].to_vec();
    slack.extend([0x3C; 4]);
    assert_eq!(slack.len(), 20);
    let mut acl = vec![2u8, 0];
    acl.extend(((8 + aces.len() + slack.len()) as u16).to_le_bytes());
    acl.extend(2u16.to_le_bytes());
    acl.extend([0, 0]);
    acl.extend(aces);
    acl.extend(slack);
    let owner = owner.to_bytes();
    let group = system.to_bytes();
    let mut sd = vec![1u8, 0];
    sd.extend(0x8004u16.to_le_bytes());
    let o = 20 + acl.len();
    sd.extend((o as u32).to_le_bytes());
    sd.extend(((o + owner.len()) as u32).to_le_bytes());
    sd.extend(0u32.to_le_bytes());
    sd.extend(20u32.to_le_bytes());
    sd.extend(acl);
    sd.extend(owner);
    sd.extend(group);
    sd
}

/// The DACL of a descriptor: (AclSize, end of its last ACE, its bytes).
fn dacl(sd: &[u8]) -> (usize, usize, Vec<u8>) {
    let off = u32::from_le_bytes(sd[16..20].try_into().unwrap()) as usize;
    let size = u16::from_le_bytes([sd[off + 2], sd[off + 3]]) as usize;
    let count = u16::from_le_bytes([sd[off + 4], sd[off + 5]]) as usize;
    let mut p = off + 8;
    for _ in 0..count {
        p += u16::from_le_bytes([sd[p + 2], sd[p + 3]]) as usize;
    }
    (size, p - off, sd[off..off + size].to_vec())
}

const OLD: &str = "S-1-5-21-3623811015-3361044348-30300820";
const NEW: &str = "S-1-5-21-1111111111-2222222222-3333333333";
const MRT: &str = "Local Settings\\MrtCache";

fn pri_key(sid: &str) -> String {
    format!(
        "C:%5CProgram Files%5CWindowsApps%5CMicrosoft.BingWeather_4.46.32012.0_x64__8wekyb3d8bbwe%5Cmicrosoft.system.package.metadata%5C{sid}-1001-MergedResources-1.pri"
    )
}

fn multi_sz(items: &[&str]) -> Vec<u8> {
    let mut v: Vec<u8> = items
        .iter()
        .flat_map(|s| [utf16le(s), vec![0, 0]].concat())
        .collect();
    v.extend([0, 0]);
    v
}

/// The generated hive: a UsrClass.dat-like tree with the old SID inside
/// longer names and strings, next to names that must not match, and
/// descriptors whose DACL slack holds the old domain.
fn fixture() -> Hive {
    let old: Sid = OLD.parse().unwrap();
    let other: Sid = "S-1-5-21-7-8-9".parse().unwrap();
    let mut h = Hive::create("UsrClass.dat", 3, &format!("{OLD}-1001_Classes")).unwrap();
    let pri = format!("{MRT}\\{}", pri_key(OLD));
    for k in [
        pri.clone(),
        format!("{pri}\\1d7a3b2c4e5f6a7"),
        format!("{MRT}\\x{OLD}-1001"),
        format!("{MRT}\\{OLD}5-1001"),
        format!("{MRT}\\%5C{}", OLD.replace("21-", "21-9")),
        "Settings".to_string(),
    ] {
        h.create_key(&k).unwrap();
    }
    h.set_value(&pri, &format!("{OLD}-1001-Setting"), 4, &1u32.to_le_bytes())
        .unwrap();
    h.set_value(
        &pri,
        "Path",
        1,
        &utf16le(&format!("C:\\Users\\u\\{OLD}-1001\\x.pri\0")),
    )
    .unwrap();
    h.set_value(
        &pri,
        "List",
        7,
        &multi_sz(&[&format!("{OLD}-1001"), &format!("pre%5C{OLD}-500.pri")]),
    )
    .unwrap();
    h.set_value(
        &pri,
        "Blob",
        3,
        format!("\x01\x02path=file:///C:/x/{OLD}-1001-y\0").as_bytes(),
    )
    .unwrap();
    // The domain in an ACE and in the slack; in the slack only; another
    // domain's remnant (kept).
    h.set_security(
        "Local Settings",
        &descriptor_with_slack(&"S-1-5-32-544".parse().unwrap(), &old.with_rid(1001), &old),
    )
    .unwrap();
    let well_known = "S-1-5-32-544".parse().unwrap();
    h.set_security(MRT, &descriptor_with_slack(&well_known, &well_known, &old))
        .unwrap();
    h.set_security(
        "Settings",
        &descriptor_with_slack(&well_known, &well_known, &other),
    )
    .unwrap();
    h
}

#[test]
fn generated_hive_substrings_and_descriptor_slack() {
    if !tools() {
        return;
    }
    let (old, new): (Sid, Sid) = (OLD.parse().unwrap(), NEW.parse().unwrap());
    let other: Sid = "S-1-5-21-7-8-9".parse().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let before_path = tmp.path().join("before.dat");
    let mut h = fixture();
    h.save_to(&before_path).unwrap();
    let before = dissect(&before_path, tmp.path());
    // The remnants are there, seen by the independent reader: the two
    // descriptors' slack holds `15000000`+A+B+C.
    let slack_holds = |seen: &Seen, key: &str, sid: &Sid| {
        let (size, used, bytes) = dacl(&seen.keys[key]);
        assert_eq!(
            size,
            used + 20,
            "{key}: AclSize is 20 bytes larger than the ACEs"
        );
        count(&bytes[used..], &sub_authority_bytes(sid)) > 0
    };
    assert!(slack_holds(&before, "Local Settings", &old));
    assert!(slack_holds(&before, MRT, &old));
    assert!(slack_holds(&before, "Settings", &other));

    let report = h.rewrite_sids(&old, &new).unwrap();
    // Keys: the root, the .pri key; not x<SID>, <SID>5, nor another domain.
    assert_eq!(report.key_names, 2, "{report:#?}");
    assert_eq!(report.substring_key_names, 2);
    assert_eq!((report.value_names, report.substring_value_names), (1, 1));
    // Path (in a longer string), List (one whole, one inside), Blob (ASCII
    // inside a longer string).
    assert_eq!(report.value_data, 3);
    assert_eq!(report.substring_value_data, 3);
    assert_eq!(report.descriptors, 1);
    assert_eq!(report.descriptor_slack, 2);
    let out = tmp.path().join("after.dat");
    h.save_to(&out).unwrap();
    let check = Hive::open(&out).unwrap().check();
    assert!(check.is_clean(), "{:?}", check.errors().collect::<Vec<_>>());

    // Raw bytes: nothing of the old domain anywhere in the file; the other
    // domain's remnant is still there.
    let raw = std::fs::read(&out).unwrap();
    // Only the two names that are not this SID keep its text.
    let decoys = count(&raw, format!("x{OLD}-1001").as_bytes())
        + count(&raw, format!("{OLD}5-1001").as_bytes());
    assert_eq!(decoys, 2);
    assert_eq!(traces(&raw, &old), decoys, "old domain left in the file");
    assert!(find_domain_sub_authorities(&raw, &old).is_empty());
    assert!(count(&raw, &sub_authority_bytes(&other)) > 0);

    // dissect.regf: names and descriptors.
    let after = dissect(&out, tmp.path());
    assert_eq!(after.root, format!("{NEW}-1001_Classes"));
    // Only the .pri key (and so its subkey's path) is renamed.
    let mut want: Vec<String> = before
        .keys
        .keys()
        .map(|k| k.replace(&pri_key(OLD), &pri_key(NEW)))
        .collect();
    want.sort();
    let got: Vec<String> = after.keys.keys().cloned().collect();
    assert_eq!(got, want);
    assert!(got.iter().any(|k| k.ends_with(&pri_key(NEW))));
    assert!(got.iter().any(|k| k.ends_with(&format!("x{OLD}-1001"))));
    assert!(got.iter().any(|k| k.ends_with(&format!("{OLD}5-1001"))));
    for (key, sd) in &after.keys {
        assert!(
            find_domain_sub_authorities(sd, &old).is_empty(),
            "{key}: old domain in its descriptor"
        );
        let (size, used, bytes) = dacl(sd);
        let (size0, used0, _) = dacl(&before.keys[&key.replace(&pri_key(NEW), &pri_key(OLD))]);
        assert_eq!((size, used), (size0, used0), "{key}: AclSize kept");
        if key == "Settings" {
            assert!(count(&bytes[used..], &sub_authority_bytes(&other)) > 0);
        } else {
            assert!(
                bytes[used..].iter().all(|&b| b == 0),
                "{key}: slack not zeroed"
            );
        }
    }
    let v = parse_descriptor(&after.keys["Local Settings"]).unwrap();
    assert_eq!(v.dacl.unwrap()[1].sid, Some(new.with_rid(1001)));

    // Values, with regipy (else hivex): names and data rewritten in place.
    let reader = readers(&[Reader::Regipy, Reader::Hivex]);
    if !require(!reader.is_empty(), "regipy or hivexregedit") {
        return;
    }
    let r = reader[0];
    let (b, a): (Dump, Dump) = (r.dump(&before_path).unwrap(), r.dump(&out).unwrap());
    let key_b = format!("{MRT}\\{}", pri_key(OLD));
    let key_a = format!("{MRT}\\{}", pri_key(NEW));
    let vals = |d: &Dump, k: &str| d.keys[k].values.clone();
    let mut expect = BTreeMap::new();
    for (name, (ty, data)) in vals(&b, &key_b) {
        let data = match name.as_str() {
            "Path" | "List" => {
                let units: Vec<u16> = data
                    .chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let s = String::from_utf16(&units).unwrap().replace(OLD, NEW);
                utf16le(&s)
            }
            "Blob" => String::from_utf8(data)
                .unwrap()
                .replace(OLD, NEW)
                .into_bytes(),
            _ => data,
        };
        expect.insert(name.replace(OLD, NEW), (ty, data));
    }
    assert_eq!(vals(&a, &key_a), expect, "{r:?}");
}

#[test]
fn real_usrclass_mrtcache_names_and_slack() {
    let Some(corpus) = corpus_dir() else {
        require(false, "the shared corpus (RESEAL_CORPUS)");
        return;
    };
    let src = corpus.join("DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM/UsrClass.dat");
    if !require(src.is_file(), "RathbunVM UsrClass.dat in the corpus") || !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let staged = stage(&src, &tmp.path().join("in"));
    let mut h = Hive::open(&staged.hive).unwrap();
    let orig = tmp.path().join("orig.dat");
    std::fs::write(&orig, h.to_bytes()).unwrap();
    let before = dissect(&orig, tmp.path());
    // The user's SID as the independent reader sees it: the root key of a
    // UsrClass.dat is named `<user SID>_Classes`.
    let user: Sid = before
        .root
        .strip_suffix("_Classes")
        .expect("root name <SID>_Classes")
        .parse()
        .unwrap();
    let subs = user.sub_authorities();
    let old = Sid::new(5, &subs[..4]).unwrap();
    assert!(old.is_machine_domain(), "{old}");
    let old_text = old.to_string();
    let named: Vec<&String> = before
        .keys
        .keys()
        .filter(|k| k.rsplit('\\').next().unwrap().contains(&old_text))
        .collect();
    assert!(
        named.iter().all(|k| k.starts_with("Local Settings\\MrtCache\\C:%5CProgram Files%5CWindowsApps%5C")),
        "{named:#?}"
    );
    assert!(named.len() >= 19, "{}", named.len());
    // Descriptors whose bytes hold the domain's sub-authorities without a
    // SID header before them (ACL slack).
    let broken = |sd: &[u8]| {
        find_domain_sub_authorities(sd, &old)
            .iter()
            .filter(|r| {
                let h = r.offset.checked_sub(8).map(|s| &sd[s..s + 8]);
                !h.is_some_and(|h| h[0] == 1 && h[2..8] == [0, 0, 0, 0, 0, 5])
            })
            .count()
    };
    let with_remnants = before.keys.values().filter(|sd| broken(sd) > 0).count();
    eprintln!(
        "{} keys named with {old} inside a longer name, {with_remnants} keys whose descriptor holds a remnant",
        named.len()
    );

    let new: Sid = NEW.parse().unwrap();
    let report = h.rewrite_sids(&old, &new).unwrap();
    // The root and every MrtCache name.
    assert_eq!(report.key_names, named.len() + 1);
    assert_eq!(report.substring_key_names, named.len() + 1);
    assert!(report.descriptor_slack >= usize::from(with_remnants > 0));
    let out = tmp.path().join("out.dat");
    h.save_to(&out).unwrap();
    let raw = std::fs::read(&out).unwrap();
    assert_eq!(traces(&raw, &old), 0, "old domain left in the file");

    let after = dissect(&out, tmp.path());
    assert_eq!(after.root, before.root.replace(&old_text, NEW));
    assert_eq!(after.keys.len(), before.keys.len());
    let renamed: Vec<String> = named.iter().map(|k| k.replace(&old_text, NEW)).collect();
    for k in &renamed {
        assert!(after.keys.contains_key(k), "{k} missing");
    }
    assert!(!after.keys.keys().any(|k| k.contains(&old_text)));
    for (k, sd) in &after.keys {
        assert!(find_domain_sub_authorities(sd, &old).is_empty(), "{k}");
    }
    // Every other reader still reads the whole hive.
    for r in readers(&[Reader::Hivex, Reader::Regipy]) {
        let d = r.dump(&out).unwrap_or_else(|e| panic!("{r:?}: {e}"));
        assert_eq!(d.keys.len(), before.keys.len(), "{r:?}");
    }
    eprintln!(
        "{}: {} descriptors, {} key names ({} inside longer names), {} values, {} descriptors with slack zeroed",
        src.display(),
        report.descriptors,
        report.key_names,
        report.substring_key_names,
        report.value_data,
        report.descriptor_slack
    );
}

#[test]
fn sibling_collisions_are_refused_before_any_change() {
    let (old, new): (Sid, Sid) = (OLD.parse().unwrap(), NEW.parse().unwrap());
    // A key whose rewritten name is a sibling's name (case ignored, as
    // Windows compares), and a value whose rewritten name is another
    // value's name.
    let key_clash = |h: &mut Hive| {
        h.create_key(&format!("P\\a%5C{OLD}-1001.pri")).unwrap();
        h.create_key(&format!("P\\A%5c{}-1001.PRI", NEW.to_lowercase()))
            .unwrap();
    };
    let value_clash = |h: &mut Hive| {
        h.create_key("V").unwrap();
        h.set_value("V", &format!("{OLD}-500-x"), 4, &[1, 0, 0, 0])
            .unwrap();
        h.set_value("V", &format!("{NEW}-500-x"), 4, &[2, 0, 0, 0])
            .unwrap();
    };
    for (what, make) in [
        ("key", &key_clash as &dyn Fn(&mut Hive)),
        ("value", &value_clash),
    ] {
        let mut h = Hive::create("x.dat", 5, "ROOT").unwrap();
        h.set_security("", &descriptor_with_slack(&old.with_rid(500), &old, &old))
            .unwrap();
        make(&mut h);
        let before = h.to_bytes();
        let err = h.rewrite_sids(&old, &new).unwrap_err().to_string();
        assert!(
            err.contains("the SID rewrite would rename"),
            "{what}: {err}"
        );
        let after = h.to_bytes();
        // Saving stamps the time into the base block (and so its
        // checksum) and into the first bin's header; nothing else may differ.
        let stamped = |i: usize| {
            (0x0C..0x14).contains(&i)
                || (0x1FC..0x200).contains(&i)
                || (0x1014..0x101C).contains(&i)
        };
        let diff: Vec<usize> = (0..before.len().max(after.len()))
            .filter(|&i| !stamped(i) && before.get(i) != after.get(i))
            .collect();
        assert!(diff.is_empty(), "{what}: the hive changed at {diff:x?}");
    }
}
