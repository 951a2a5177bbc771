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

/// The lines a terminal would show at the end: escape sequences applied
/// the simple way (a cleared line is replaced by what follows it).
fn screen(s: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("\x1b[") {
            let end = after.find(|ch: char| ch.is_ascii_alphabetic()).unwrap_or(0);
            let (arg, cmd) = (&after[..end], &after[end..end + 1]);
            match cmd {
                "K" => cur.clear(),
                "A" => {
                    let n: usize = arg.parse().unwrap_or(1);
                    for _ in 0..n {
                        cur = lines.pop().unwrap_or_default();
                    }
                }
                _ => {}
            }
            rest = &after[end + 1..];
            continue;
        }
        match c {
            '\r' => {}
            '\n' => lines.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
        rest = &rest[c.len_utf8()..];
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
        .into_iter()
        .map(|l| l.trim_end().to_string())
        .collect()
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
    // The same report, but for the folder and the run's time (reseal's
    // record GeneralizedAt).
    let same = |s: &str, dir: &Path| -> String {
        s.replace(dir.to_str().unwrap(), "DIR")
            .lines()
            .filter(|l| !l.contains("GeneralizedAt"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(same(&bar.stdout, &bar_dir), same(&plain.stdout, &plain_dir));
    // Every redraw of the line: the phases, each reaching 100%, with
    // counts, a rate and an estimate.
    assert!(bar.stderr.ends_with('\n'), "{:?}", bar.stderr);
    let redraws: Vec<&str> = bar.stderr.split(['\r', '\n']).collect();
    assert!(
        redraws
            .iter()
            .any(|l| l.contains("updating image") && l.contains("100%")),
        "{redraws:?}"
    );
    let data = redraws
        .iter()
        .find(|l| l.contains("writing data") && l.contains("100%"))
        .unwrap_or_else(|| panic!("{redraws:?}"));
    assert!(data.contains("/s") && data.contains("eta"), "{data}");
    // What the terminal shows at the end: one line for the image, its
    // last phase finished.
    let shown = screen(&bar.stderr);
    assert_eq!(shown, ["writing metadata done"], "{:?}", bar.stderr);

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
    assert_eq!(
        screen(&run.stderr),
        ["[1/2] writing metadata done", "[2/2] writing metadata done"],
        "{:?}",
        run.stderr
    );
    assert!(!run.stdout.contains('\r'));
}

/// `stamp` draws one overall bar (clones finished), forced here; none with
/// --json or -q.
#[test]
fn stamp_draws_one_overall_bar() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    // A generalized image is what stamp accepts.
    let g = reseal(&["generalize", root.to_str().unwrap(), "--seed", "1"]);
    assert_eq!(g.code, 0, "{}", g.stderr);
    let out = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    let r = root.to_str().unwrap();
    let (o1, o2, o3) = (out("a"), out("b"), out("c"));
    let run = reseal(&[
        "stamp",
        r,
        "--out",
        &o1,
        "--count",
        "3",
        "--progress",
        "always",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let shown = screen(&run.stderr);
    assert_eq!(shown.len(), 1, "{:?}", run.stderr);
    assert!(
        shown[0].starts_with("stamping clones") && shown[0].contains("100%  3/3"),
        "{shown:?}"
    );
    for (dir, extra) in [(&o2, "--json"), (&o3, "-q")] {
        let run = reseal(&[
            "stamp",
            r,
            "--out",
            dir,
            "--count",
            "2",
            "--progress",
            "always",
            extra,
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.stderr, "", "{extra}");
    }
}

/// Directories and disk images: a spinner names each phase of the run
/// (forced here), and is cleared at the end; none with -q, -v or --json.
#[test]
fn phases_are_shown_for_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let r = root.to_str().unwrap();
    let run = reseal(&["generalize", r, "--dry-run", "--progress", "always"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for phase in ["load hives", "preflight", "plan"] {
        assert!(
            run.stderr.contains(&format!("generalize: {phase}")),
            "{phase}: {:?}",
            run.stderr
        );
    }
    assert_eq!(
        screen(&run.stderr),
        Vec::<String>::new(),
        "{:?}",
        run.stderr
    );
    for extra in ["-q", "--json"] {
        let run = reseal(&["generalize", r, "--dry-run", "--progress", "always", extra]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(run.stderr, "", "{extra}");
    }
    let run = reseal(&["generalize", r, "--dry-run", "--progress", "always", "-v"]);
    assert!(!run.stderr.contains("generalize: plan"), "{}", run.stderr);
}
