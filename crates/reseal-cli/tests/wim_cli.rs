//! `reseal generalize` on WIM files: `--index all` (every image of the
//! two-image fixture WIM generalized on its own) and `--rebuild` (the WIM
//! rewritten whole). Checked with wimlib-imagex (verify, extract) and the
//! hive reader. Without wimlib-imagex they skip locally and fail under CI=true.

use std::path::{Path, PathBuf};
use std::process::Command;

use reseal_hive::Hive;
use reseal_testkit::{build_wims, build_windows_root};
use serde_json::Value as Json;

/// Whether wimlib-imagex is there: a missing one skips locally and fails
/// under CI=true (cargo xtask setup installs wimtools).
fn have_wimlib_imagex() -> bool {
    reseal_testkit::require_tool("wimlib-imagex")
}

fn imagex(args: &[&str]) {
    let o = Command::new("wimlib-imagex").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "wimlib-imagex {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn reseal(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_reseal"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn wims(tmp: &Path) -> Vec<PathBuf> {
    let root = tmp.join("root");
    build_windows_root(&root, None).unwrap();
    build_wims(&root, &tmp.join("wim")).unwrap()
}

/// ImageState of `image` read from its SOFTWARE hive extracted by
/// wimlib-imagex; the extracted SYSTEM and SOFTWARE pass the check.
fn image_state(wim: &Path, image: &str, dest: &Path) -> String {
    let d = format!("--dest-dir={}", dest.display());
    imagex(&[
        "extract",
        wim.to_str().unwrap(),
        image,
        "/Windows/System32/config/SOFTWARE",
        "/Windows/System32/config/SYSTEM",
        &d,
        "--no-acls",
    ]);
    for h in ["SYSTEM", "SOFTWARE"] {
        let hive = Hive::open(dest.join(h)).unwrap();
        assert!(hive.check().is_clean(), "{h}");
    }
    let h = Hive::open(dest.join("SOFTWARE")).unwrap();
    let k = h
        .open_key(r"Microsoft\Windows\CurrentVersion\Setup\State")
        .unwrap()
        .unwrap();
    let v = h.value(k, "ImageState").unwrap().unwrap();
    let units: Vec<u16> = v
        .data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

fn outcomes(json: &str) -> Vec<String> {
    let v: Json = serde_json::from_str(json).unwrap();
    assert_eq!(v["command"], "generalize");
    v["results"]
        .as_array()
        .expect("one report per image")
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn index_all_generalizes_every_image() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let two = wims(tmp.path()).remove(3);
    let w = two.to_str().unwrap();
    let (code, out, err) = reseal(&["generalize", w, "--index", "all", "--json", "--seed", "7"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(outcomes(&out), ["done", "done"]);
    let v: Json = serde_json::from_str(&out).unwrap();
    for r in v["results"].as_array().unwrap() {
        let backend: Vec<&str> = r["installs"][0]["not_done"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["operation"] == "backend")
            .map(|n| n["message"].as_str().unwrap())
            .collect();
        // Replaced files keep their metadata: nothing reported as lost.
        assert!(
            !backend
                .iter()
                .any(|m| m.contains("lost their security descriptor")),
            "{backend:?}"
        );
    }
    imagex(&["verify", w]);
    for image in ["1", "2"] {
        let s = image_state(&two, image, &tmp.path().join(format!("x{image}")));
        assert!(
            s.starts_with("IMAGE_STATE_GENERALIZE"),
            "image {image}: {s}"
        );
    }
    let (code, out, err) = reseal(&["generalize", w, "--index", "ALL", "--json", "--seed", "7"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(outcomes(&out), ["nothing_to_do", "nothing_to_do"]);

    // To --output: the input is unchanged, the output has both images done.
    let fresh = wims(&tmp.path().join("again")).remove(3);
    let before = std::fs::read(&fresh).unwrap();
    let out_wim = tmp.path().join("out.wim");
    let (code, _, err) = reseal(&[
        "generalize",
        fresh.to_str().unwrap(),
        "--index",
        "all",
        "--output",
        out_wim.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(&fresh).unwrap() == before);
    imagex(&["verify", out_wim.to_str().unwrap()]);
    for image in ["1", "2"] {
        let s = image_state(&out_wim, image, &tmp.path().join(format!("o{image}")));
        assert!(
            s.starts_with("IMAGE_STATE_GENERALIZE"),
            "image {image}: {s}"
        );
    }
}

#[test]
fn rebuild_rewrites_the_wim_compactly() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lzx = wims(tmp.path()).remove(0);
    let appended = tmp.path().join("appended.wim");
    std::fs::copy(&lzx, &appended).unwrap();
    let (code, _, err) = reseal(&["generalize", appended.to_str().unwrap(), "--seed", "7"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = reseal(&[
        "generalize",
        lzx.to_str().unwrap(),
        "--rebuild",
        "--seed",
        "7",
    ]);
    assert_eq!(code, 0, "{err}");
    imagex(&["verify", lzx.to_str().unwrap()]);
    let s = image_state(&lzx, "1", &tmp.path().join("x"));
    assert!(s.starts_with("IMAGE_STATE_GENERALIZE"), "{s}");
    let (rebuilt, app) = (
        std::fs::metadata(&lzx).unwrap().len(),
        std::fs::metadata(&appended).unwrap().len(),
    );
    assert!(rebuilt < app, "rebuilt {rebuilt} >= appended {app}");
    // --rebuild needs a WIM, and does not go with --output.
    let (code, _, _) = reseal(&["generalize", tmp.path().to_str().unwrap(), "--rebuild"]);
    assert_eq!(code, 2);
    let (code, _, _) = reseal(&[
        "generalize",
        lzx.to_str().unwrap(),
        "--rebuild",
        "--output",
        "x.wim",
    ]);
    assert_eq!(code, 2);
}
