//! Hostile WIM headers and outputs through the CLI: a header whose XML data
//! or blob table points past the file or claims an absurd size, a blob
//! table entry pointing past the file, a WIM with a damaged file resource
//! (which `wimlib-imagex verify` rejects), and `--output` naming the input
//! (same path, a symbolic link, a hard link). Each is exit 2 with the file
//! named, and the input is left byte-identical.

use std::path::{Path, PathBuf};
use std::process::Command;

use reseal_testkit::{build_windows_root, require_tool};

/// A one-image uncompressed WIM of the synthetic root, with a file of
/// distinctive bytes (returned) that a test can find and damage.
fn capture(tmp: &Path) -> (PathBuf, Vec<u8>) {
    let root = tmp.join("root");
    build_windows_root(&root, None).unwrap();
    let marker: Vec<u8> = (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("marker.bin"), &marker).unwrap();
    let wim = tmp.join("in.wim");
    let st = Command::new("wimlib-imagex")
        .args(["capture"])
        .arg(&root)
        .arg(&wim)
        .args(["Windows 10 Pro", "--compress=none"])
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    (wim, marker)
}

fn run(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_reseal"))
        .arg("generalize")
        .args(args)
        .args(["--seed", "7"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs generalize on `wim` (plus `extra`), expects exit 2 with every
/// fragment of `expected` in the message, and the file unchanged.
fn refused(wim: &Path, extra: &[&str], expected: &[&str]) {
    let before = std::fs::read(wim).unwrap();
    let mut args: Vec<&std::ffi::OsStr> = vec![wim.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let (code, stderr) = run(&args);
    assert_eq!(code, Some(2), "{stderr}");
    for e in expected {
        assert!(stderr.contains(e), "expected {e:?} in: {stderr}");
    }
    assert!(
        std::fs::read(wim).unwrap() == before,
        "the WIM was modified ({stderr})"
    );
}

/// (what, header offset of the field, change, message fragment).
type Case = (&'static str, usize, fn(u64) -> u64, &'static str);

fn patch_u64(bytes: &mut [u8], at: usize, f: impl Fn(u64) -> u64) {
    let v = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    bytes[at..at + 8].copy_from_slice(&f(v).to_le_bytes());
}

#[test]
fn resource_headers_past_the_file_are_bad_input() {
    if !require_tool("wimlib-imagex") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (wim, _) = capture(tmp.path());
    let good = std::fs::read(&wim).unwrap();
    let cases: [Case; 5] = [
        (
            "XML offset bit 41",
            72 + 8,
            |v| v | 1 << 41,
            "XML data resource",
        ),
        ("XML size bit 40", 72, |v| v ^ 1 << 40, "XML data resource"),
        (
            "XML original size",
            72 + 16,
            |v| v | 1 << 40,
            "XML data resource",
        ),
        (
            "blob table offset",
            48 + 8,
            |v| v + (1 << 33),
            "blob table resource",
        ),
        (
            "integrity offset",
            124 + 8,
            |v| v | 1 << 45,
            "integrity table",
        ),
    ];
    for (what, at, f, frag) in cases {
        let mut bytes = good.clone();
        if what == "integrity offset" {
            // The capture has no integrity table: give it one that points
            // past the file.
            bytes[124..128].copy_from_slice(&32u32.to_le_bytes());
        }
        patch_u64(&mut bytes, at, f);
        let p = tmp.path().join(format!("{}.wim", what.replace(' ', "-")));
        std::fs::write(&p, &bytes).unwrap();
        refused(&p, &[], &[&p.display().to_string(), frag]);
    }
    // A blob table entry (the first) whose resource lies past the file.
    let table = u64::from_le_bytes(good[56..64].try_into().unwrap()) as usize;
    let mut bytes = good.clone();
    patch_u64(&mut bytes, table + 8, |v| v + (1 << 40));
    let p = tmp.path().join("blob-entry.wim");
    std::fs::write(&p, &bytes).unwrap();
    refused(&p, &[], &["blob table entry", "offset"]);
}

/// A WIM with one damaged byte in a file's data: `wimlib-imagex verify`
/// rejects it, and generalize refuses it (exit 2) before writing.
#[test]
fn a_wim_failing_verification_is_refused_unmodified() {
    if !require_tool("wimlib-imagex") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (wim, marker) = capture(tmp.path());
    let mut bytes = std::fs::read(&wim).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w == &marker[..64])
        .expect("the uncompressed marker is in the WIM");
    bytes[at + 1000] ^= 0x55;
    std::fs::write(&wim, &bytes).unwrap();
    let verify = Command::new("wimlib-imagex")
        .arg("verify")
        .arg(&wim)
        .output()
        .unwrap();
    assert!(!verify.status.success(), "wimlib-imagex verify passes it");
    refused(&wim, &[], &["verification", "not modified"]);
    refused(&wim, &["--index", "all"], &["verification", "not modified"]);
}

/// `--output` naming the input (same path, through a symbolic link, or a
/// hard link to it) is refused before anything is written.
#[test]
fn output_onto_the_input_is_refused() {
    if !require_tool("wimlib-imagex") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (wim, _) = capture(tmp.path());
    let link = tmp.path().join("link.wim");
    std::os::unix::fs::symlink(&wim, &link).unwrap();
    let hard = tmp.path().join("hard.wim");
    std::fs::hard_link(&wim, &hard).unwrap();
    let dotted = tmp.path().join(".").join("in.wim");
    for out in [&wim, &link, &hard, &dotted] {
        refused(
            &wim,
            &["--output", out.to_str().unwrap()],
            &["the output is the input WIM"],
        );
        refused(
            &wim,
            &["--index", "all", "--output", out.to_str().unwrap()],
            &["the output is the input WIM"],
        );
    }
    // A distinct output is written and verifies.
    let other = tmp.path().join("out.wim");
    let (code, stderr) = run(&[wim.as_os_str(), "--output".as_ref(), other.as_os_str()]);
    assert_eq!(code, Some(0), "{stderr}");
    let verify = Command::new("wimlib-imagex")
        .arg("verify")
        .arg(&other)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
}
