//! The progress bar of `reseal generalize` on WIM files: drawn on standard
//! error only, never with `--json`, and not when standard error is not a
//! terminal (as in these tests) unless forced with the hidden `--progress
//! always`. Without wimlib-imagex they skip locally and fail under CI=true.

use std::path::{Path, PathBuf};
use std::process::Command;

use reseal_testkit::{build_wims, build_windows_root};
use serde_json::Value as Json;

/// Whether wimlib-imagex is there: a missing one skips locally and fails
/// under CI=true (cargo xtask setup installs wimtools).
fn have_wimlib_imagex() -> bool {
    reseal_testkit::require_tool("wimlib-imagex")
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn reseal(args: &[&str]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_reseal"))
        .args(args)
        .output()
        .unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// The fixture WIMs (see `build_wims`): the one-image LZX WIM and the
/// two-image WIM.
fn wims(tmp: &Path) -> (PathBuf, PathBuf) {
    let root = tmp.join("root");
    build_windows_root(&root, None).unwrap();
    let all = build_wims(&root, &tmp.join("wim")).unwrap();
    let find = |name: &str| all.iter().find(|p| p.ends_with(name)).unwrap().clone();
    (find("windows-lzx.wim"), find("windows-two-images.wim"))
}

fn copy(wim: &Path, tmp: &Path, name: &str) -> String {
    let p = tmp.join(name);
    std::fs::copy(wim, &p).unwrap();
    p.to_str().unwrap().to_string()
}

/// Standard output holds exactly one JSON document and nothing else.
fn assert_only_json(run: &Run) {
    let v: Json = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", run.stdout));
    assert!(v.is_object() || v.is_array());
    assert!(run.stdout.starts_with(['{', '[']), "{:?}", run.stdout);
    assert!(!run.stdout.contains('\r'));
}

fn assert_no_bar(run: &Run) {
    assert!(!run.stderr.contains('\r'), "{:?}", run.stderr);
    for what in ["writing data", "updating image", "%"] {
        assert!(!run.stderr.contains(what), "{what}: {:?}", run.stderr);
    }
}

#[test]
fn json_output_has_no_progress_bar() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = wims(tmp.path());
    for (name, extra) in [
        ("a.wim", &[][..]),
        // Even when forced, --json keeps the bar off.
        ("b.wim", &["--progress", "always"][..]),
    ] {
        let w = copy(&one, tmp.path(), name);
        let mut args = vec!["generalize", &w, "--json", "--seed", "7"];
        args.extend_from_slice(extra);
        let run = reseal(&args);
        assert_eq!(run.code, 0, "{extra:?}: {}", run.stderr);
        assert_only_json(&run);
        assert_no_bar(&run);
        assert_eq!(run.stderr, "", "{extra:?}");
    }
    let w = copy(&two, tmp.path(), "c.wim");
    let run = reseal(&[
        "generalize",
        &w,
        "--index",
        "all",
        "--json",
        "--seed",
        "7",
        "--progress",
        "always",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_only_json(&run);
    assert_no_bar(&run);
}

/// Standard error here is a pipe, not a terminal: no bar by default.
#[test]
fn no_bar_when_stderr_is_not_a_terminal() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (one, _) = wims(tmp.path());
    let w = copy(&one, tmp.path(), "a.wim");
    let run = reseal(&["generalize", &w, "--seed", "7"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_no_bar(&run);
    assert_eq!(run.stderr, "");
}

/// Forced, the bar goes to standard error, one line per phase, each
/// finished; standard output is the same report as without it.
#[test]
fn forced_bar_goes_to_stderr_only() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = wims(tmp.path());
    let plain_dir = tmp.path().join("plain");
    let bar_dir = tmp.path().join("bar");
    std::fs::create_dir_all(&plain_dir).unwrap();
    std::fs::create_dir_all(&bar_dir).unwrap();
    let plain = reseal(&[
        "generalize",
        &copy(&one, &plain_dir, "x.wim"),
        "--seed",
        "7",
        "--progress",
        "never",
    ]);
    let bar = reseal(&[
        "generalize",
        &copy(&one, &bar_dir, "x.wim"),
        "--seed",
        "7",
        "--progress",
        "always",
    ]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert_eq!(bar.code, 0, "{}", bar.stderr);
    assert_eq!(plain.stderr, "");
    let dirs = |s: &str| s.replace(bar_dir.to_str().unwrap(), "DIR");
    assert_eq!(
        dirs(&bar.stdout),
        plain.stdout.replace(plain_dir.to_str().unwrap(), "DIR")
    );
    assert!(bar.stderr.contains('\r'), "{:?}", bar.stderr);
    assert!(bar.stderr.ends_with('\n'), "{:?}", bar.stderr);
    // What a terminal would show: each line as left by its last redraw.
    let lines: Vec<&str> = bar
        .stderr
        .lines()
        .map(|l| l.rsplit('\r').next().unwrap().trim_end())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("updating image") && l.contains("100%")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("writing data") && l.contains("100%")),
        "{lines:?}"
    );
    assert!(lines.contains(&"writing metadata done"), "{lines:?}");

    let w = copy(&two, &bar_dir, "two.wim");
    let run = reseal(&[
        "generalize",
        &w,
        "--index",
        "all",
        "--seed",
        "7",
        "--progress",
        "always",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for image in ["[1/2] writing data", "[2/2] writing data"] {
        assert!(run.stderr.contains(image), "{image}: {:?}", run.stderr);
    }
    assert!(!run.stdout.contains('\r'));
}
