//! Bad WIM input through the CLI: corrupted and hostile WIMs from the
//! shared corpus (wimlib's crafted test WIMs, ManagedWimLib's VerifyFail and
//! split WIM), a truncated WIM, a WIM without a Windows installation. Each
//! gives exit code 2 with a message that names the file and says what was
//! expected, and leaves the file byte-identical (checked on a copy, with a
//! hash and the bytes), and no temporary file of the run is left behind.
//! A missing corpus skips locally and fails under CI=true; the generated cases need `wimlib-imagex`.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use reseal_testkit::{build_wims, build_windows_root, corpus_dir};

/// Whether wimlib-imagex is there: a missing one skips locally and fails
/// under CI=true (cargo xtask setup installs wimtools).
fn have_wimlib_imagex() -> bool {
    reseal_testkit::require_tool("wimlib-imagex")
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Runs `reseal generalize FILE` (plus `extra`) on a copy of `src` and
/// checks: exit 2, the message names the file and contains every
/// `expected` fragment (any one of each group), the copy is unchanged.
fn refused(src: &Path, extra: &[&str], expected: &[&[&str]]) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join(src.file_name().unwrap());
    std::fs::copy(src, &file).unwrap();
    let before = std::fs::read(&file).unwrap();
    // The run's temporary directories go to a private TMPDIR, checked empty
    // afterwards.
    let private_tmp = tmp.path().join("tmpdir");
    std::fs::create_dir(&private_tmp).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_reseal"))
        .arg("generalize")
        .arg(&file)
        .args(extra)
        .args(["--seed", "7"])
        .env("TMPDIR", &private_tmp)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}: stdout {}\nstderr {stderr}",
        src.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(&file.display().to_string()),
        "{}: the message does not name the file: {stderr}",
        src.display()
    );
    for group in expected {
        assert!(
            group.iter().any(|e| stderr.contains(e)),
            "{}: none of {group:?} in: {stderr}",
            src.display()
        );
    }
    let after = std::fs::read(&file).unwrap();
    assert_eq!(hash(&after), hash(&before), "{}: changed", src.display());
    assert!(after == before, "{}: changed", src.display());
    // No temporary directory of the run is left behind.
    let left: Vec<_> = std::fs::read_dir(&private_tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{}: left behind {left:?}", src.display());
    eprintln!("{}: {}", src.display(), stderr.trim());
}

/// A corpus file; a missing corpus or file skips locally and fails under
/// CI=true.
fn corpus_file(rel: &str) -> Option<PathBuf> {
    let dir = corpus_dir();
    if !reseal_testkit::require(
        dir.is_some(),
        "the shared corpus (../shared/corpus or RESEAL_CORPUS)",
    ) {
        return None;
    }
    let p = dir?.join(rel);
    if !reseal_testkit::require(p.is_file(), &format!("corpus file {}", p.display())) {
        return None;
    }
    Some(p)
}

/// wimlib's crafted WIMs: broken data, cyclic tree, `..` names, duplicate
/// names. Whichever way wimlib or reseal rejects them, it is bad input.
#[test]
fn corrupted_and_hostile_wims_from_the_corpus() {
    for name in [
        "corrupted_file_1.wim",
        "corrupted_file_2.wim",
        "cyclic.wim",
        "dotdot.wim",
        "duplicate_names.wim",
    ] {
        let Some(p) = corpus_file(&format!("wimlib/tests/wims/{name}")) else {
            continue;
        };
        refused(&p, &[], &[&["expected", "no Windows installation found"]]);
    }
}

#[test]
fn verify_fail_wim_from_the_corpus() {
    if let Some(p) = corpus_file("ManagedWimLib/ManagedWimLib.Tests/Samples/VerifyFail.wim") {
        refused(&p, &[], &[&["expected", "no Windows installation found"]]);
    }
}

#[test]
fn split_wim_is_refused() {
    if let Some(p) = corpus_file("ManagedWimLib/ManagedWimLib.Tests/Samples/Split.swm") {
        refused(&p, &[], &[&["split WIM"], &["join"]]);
    }
}

fn fixture_wim(tmp: &Path) -> PathBuf {
    let root = tmp.join("root");
    build_windows_root(&root, None).unwrap();
    build_wims(&root, &tmp.join("wim")).unwrap().remove(0)
}

#[test]
fn truncated_wim_is_refused() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wim = fixture_wim(tmp.path());
    let len = std::fs::metadata(&wim).unwrap().len();
    for keep in [len / 2, len - 100, 100] {
        let cut = tmp.path().join(format!("cut-{keep}.wim"));
        std::fs::copy(&wim, &cut).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&cut)
            .unwrap()
            .set_len(keep)
            .unwrap();
        refused(&cut, &[], &[&["expected a WIM file"]]);
    }
}

#[test]
fn wim_without_windows_and_missing_image_are_refused() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("Data")).unwrap();
    std::fs::write(src.join("Data/readme.txt"), b"no Windows here").unwrap();
    let wim = tmp.path().join("data.wim");
    let ok = Command::new("wimlib-imagex")
        .arg("capture")
        .arg(&src)
        .arg(&wim)
        .arg("data")
        .status()
        .unwrap()
        .success();
    assert!(ok);
    refused(
        &wim,
        &[],
        &[&["no Windows installation found"], &["System32"]],
    );
    let good = fixture_wim(tmp.path());
    refused(&good, &["--index", "3"], &[&["no image"]]);
    refused(&good, &["--index", "Nope"], &[&["no image"]]);
}
