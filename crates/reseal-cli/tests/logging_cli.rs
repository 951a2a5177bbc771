//! `-q`, `-v`, `--log-file` and `RESEAL_LOG`: diagnostics go to standard
//! error (and the log file), never to standard output; `-v` shows each
//! phase of a run with its duration.

use std::path::Path;
use std::process::Command;

use reseal_testkit::build_windows_root;
use serde_json::Value as Json;

fn reseal(args: &[&str], env: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reseal"));
    cmd.args(args).env_remove("RESEAL_LOG");
    if let Some(f) = env {
        cmd.env("RESEAL_LOG", f);
    }
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn verbosity_log_file_and_filter() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();

    // Default: nothing on stderr for a successful run.
    let (code, out, err) = reseal(
        &["generalize", s(&root), "--dry-run", "--json", "--seed", "1"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "");
    let quiet_doc: Json = serde_json::from_str(&out).unwrap();

    // -v: the phases, each with its time, on stderr; stdout is the same
    // single JSON object.
    let (code, out, err) = reseal(
        &[
            "-v",
            "generalize",
            s(&root),
            "--dry-run",
            "--json",
            "--seed",
            "1",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let doc: Json = serde_json::from_str(&out).unwrap();
    assert!(doc["results"] == quiet_doc["results"], "-v changes stdout");
    for phase in [
        "detect",
        "discover",
        "load hives",
        "preflight",
        "plan",
        "generalize",
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(phase) && l.contains("time.busy")),
            "{phase}: {err}"
        );
    }
    assert!(err.contains("generalize finished in"), "{err}");
    assert!(!err.contains("DEBUG"), "{err}");
    // -vv adds debug (one span per operation), flag after the command.
    let (_, _, err) = reseal(&["generalize", s(&root), "--dry-run", "-vv"], None);
    assert!(err.contains("DEBUG") && err.contains("operation"), "{err}");

    // -q: nothing but errors.
    let (code, _, err) = reseal(&["-q", "generalize", s(&root), "--dry-run"], None);
    assert_eq!(code, 0);
    assert_eq!(err, "");
    let (code, _, err) = reseal(&["-q", "inspect", s(&tmp.path().join("nope"))], None);
    assert_eq!(code, 2);
    assert!(err.contains("reseal: error:"), "{err}");

    // RESEAL_LOG overrides the flags.
    let (code, _, err) = reseal(&["generalize", s(&root), "--dry-run"], Some("info"));
    assert_eq!(code, 0);
    assert!(err.contains("time.busy"), "{err}");
    let (code, _, err) = reseal(
        &["-vvv", "generalize", s(&root), "--dry-run"],
        Some("error"),
    );
    assert_eq!(code, 0);
    assert_eq!(err, "");
    let (code, _, err) = reseal(&["list-operations"], Some("reseal=[bad"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("RESEAL_LOG"), "{err}");

    // --log-file: debug lines in the file, stderr stays quiet.
    let log = tmp.path().join("run.log");
    let (code, _, err) = reseal(
        &["generalize", s(&root), "--dry-run", "--log-file", s(&log)],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("preflight") && text.contains("DEBUG"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no colours in the file");
    let (code, _, err) = reseal(
        &[
            "list-operations",
            "--log-file",
            s(&tmp.path().join("no/dir/x.log")),
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--log-file"), "{err}");
}
