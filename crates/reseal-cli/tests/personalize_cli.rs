//! `reseal personalize`, `reseal stamp` and the identity facts of
//! `reseal inspect` / `reseal generalize`, run through the binary on a
//! synthetic Windows root; the registry is read back with hivexregedit.

use std::path::Path;
use std::process::Command;

use reseal_testkit::{SAMPLE_MACHINE_SID, build_windows_root, require_tool};
use serde_json::Value as Json;

fn reseal(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reseal"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn hivex_export(hive: &Path) -> String {
    let out = Command::new("hivexregedit")
        .arg("--export")
        .arg(hive)
        .arg("\\")
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn personalize_refuses_then_personalizes_a_generalized_root() {
    if !require_tool("hivexregedit") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();

    // Not generalized: refused (exit 1), nothing written.
    let before = reseal_testkit::snapshot(&root).unwrap();
    let (code, _, err) = reseal(&["personalize", p(&root), "--name", "WEB-01"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not generalized"), "{err}");
    assert!(
        reseal_testkit::snapshot_diff(&before, &reseal_testkit::snapshot(&root).unwrap())
            .is_empty()
    );

    // inspect says so.
    let (code, out, _) = reseal(&["inspect", p(&root)]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Identity:            not generalized"),
        "{out}"
    );

    // generalize: the report warns that copies share the SID.
    let (code, out, err) = reseal(&["generalize", p(&root), "--json"]);
    assert_eq!(code, 0, "{err}");
    let doc: Json = serde_json::from_str(&out).unwrap();
    let report = &doc["results"][0];
    let notices = report["notices"].as_array().unwrap();
    assert!(
        notices
            .iter()
            .any(|n| n.as_str().unwrap().contains("Windows 11 24H2")),
        "{notices:?}"
    );
    let generalized_sid = report["installs"][0]["sid"]["new"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, out, _) = reseal(&["inspect", p(&root), "--json"]);
    let doc: Json = serde_json::from_str(&out).unwrap();
    let inspect = &doc["results"][0]["installs"];
    assert_eq!(inspect[0]["description"]["generalized"], true);
    assert_eq!(inspect[0]["description"]["reseal"]["generalized"], true);
    assert_eq!(
        inspect[0]["description"]["machine_sid"].as_str(),
        Some(generalized_sid.as_str())
    );
    assert_eq!(inspect[0]["description"]["reseal"]["personalizations"], 0);

    // personalize: exit 0, a JSON report, the name and a new SID in the
    // hives, read by hivex.
    let report_file = tmp.path().join("r.json");
    let (code, out, err) = reseal(&[
        "personalize",
        p(&root),
        "--name",
        "WEB-01",
        "--json",
        "--report",
        p(&report_file),
    ]);
    assert_eq!(code, 0, "{err}");
    let doc: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["command"], "personalize");
    assert_eq!(doc["schema"], 2);
    let r = &doc["results"][0];
    assert_eq!(r["name"], "WEB-01");
    assert_eq!(r["sid"][0]["old"].as_str(), Some(generalized_sid.as_str()));
    let new_sid = r["sid"][0]["new"].as_str().unwrap();
    assert_ne!(new_sid, generalized_sid);
    assert_eq!(
        serde_json::from_str::<Json>(&std::fs::read_to_string(&report_file).unwrap()).unwrap(),
        doc
    );
    let config = root.join("Windows/System32/config");
    let software = hivex_export(&config.join("SOFTWARE"));
    assert!(!software.contains(&generalized_sid));
    assert!(!software.contains(SAMPLE_MACHINE_SID));
    assert!(software.contains("[\\reseal]"), "no reseal record");
    let (_, out, _) = reseal(&["inspect", p(&root)]);
    assert!(out.contains("Computer name:       WEB-01"), "{out}");
    assert!(
        out.contains(&format!("Machine SID:         {new_sid}")),
        "{out}"
    );
    assert!(out.contains("personalized 1 time(s)"), "{out}");

    // A given SID, and a bad one.
    let (code, _, err) = reseal(&[
        "personalize",
        p(&root),
        "--sid",
        "S-1-5-21-1-2-3",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = reseal(&["personalize", p(&root), "--sid", "S-1-5-32-544"]);
    assert_eq!(code, 2);
    let (code, _, _) = reseal(&["personalize", p(&root), "--name", "1234"]);
    assert_eq!(code, 2);
}

#[test]
fn stamp_json_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let (code, _, err) = reseal(&["generalize", p(&root)]);
    assert_eq!(code, 0, "{err}");
    let out_dir = tmp.path().join("out");
    let (code, out, err) = reseal(&[
        "stamp",
        p(&root),
        "--out",
        p(&out_dir),
        "--count",
        "2",
        "--seed",
        "3",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let doc: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["command"], "stamp");
    assert_eq!(doc["format"], "dir");
    let clones = doc["clones"].as_array().unwrap();
    assert_eq!(clones.len(), 2);
    assert_ne!(clones[0]["sid"][0]["new"], clones[1]["sid"][0]["new"]);
    assert_eq!(clones[0]["clone_kind"], "tree");

    // A file that is no image: bad input, with what was found.
    let junk = tmp.path().join("junk.vhdx");
    std::fs::write(&junk, b"not a disk").unwrap();
    for cmd in ["inspect", "generalize", "personalize"] {
        let (code, _, err) = reseal(&[cmd, p(&junk)]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("no supported image format"), "{cmd}: {err}");
    }
    let (code, _, err) = reseal(&["stamp", p(&junk), "--out", p(&out_dir), "--count", "1"]);
    assert_eq!(code, 2, "{err}");
    // --format that contradicts the content.
    let (code, _, err) = reseal(&["inspect", p(&root), "--format", "vhdx"]);
    assert_eq!(code, 2, "{err}");
}
