//! One JSON shape for every command (`docs/report.schema.json`), errors as
//! JSON under `--json`, and exact exit codes: real outputs of the binary on
//! fixtures (directory root, WIM, disk images, hives) are validated against
//! the schema with the `jsonschema` crate, and the failure paths (bad
//! input, refused, a report that cannot be written, a closed stdout, a
//! panic) are run for their exit codes and messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use reseal_testkit::{build_disk_images, build_wims, build_windows_root, require_tool};
use serde_json::Value as Json;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn reseal(args: &[&str]) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_reseal"))
        .args(args)
        .env_remove("RESEAL_LOG")
        .output()
        .unwrap();
    Run {
        code: o.status.code().expect("killed by a signal"),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn schema() -> jsonschema::Validator {
    let path = reseal_testkit::workspace_root().join("docs/report.schema.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let v: Json = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&v).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The one JSON object on stdout, valid against the schema, of `command`.
fn valid(v: &jsonschema::Validator, run: &Run, command: &str) -> Json {
    let doc: Json = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "{command}: stdout is not one JSON value ({e}):\n{}\nstderr: {}",
            run.stdout, run.stderr
        )
    });
    let errors: Vec<String> = v
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{command}: output does not match docs/report.schema.json: {errors:#?}\n{doc:#}"
    );
    assert_eq!(doc["schema"], 2);
    assert_eq!(doc["tool"], "reseal");
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["command"], command, "{doc:#}");
    doc
}

fn root_in(tmp: &Path) -> PathBuf {
    let root = tmp.join("root");
    build_windows_root(&root, None).unwrap();
    root
}

#[test]
fn every_command_prints_one_object_of_the_schema() {
    let v = schema();
    let tmp = tempfile::tempdir().unwrap();
    let root = root_in(tmp.path());

    let run = reseal(&["list-operations", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = valid(&v, &run, "list-operations");
    let ops = doc["operations"].as_array().unwrap();
    assert!(ops.iter().any(|o| o["name"] == "machine-sid"), "{doc:#}");

    let run = reseal(&["inspect", s(&root), "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = valid(&v, &run, "inspect");
    assert_eq!(doc["format"], "dir");
    assert_eq!(doc["results"].as_array().unwrap().len(), 1);

    let run = reseal(&["generalize", s(&root), "--json", "--dry-run", "--seed", "1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = valid(&v, &run, "generalize");
    assert_eq!(doc["outcome"], "done");
    assert_eq!(doc["dry_run"], true);

    let report = tmp.path().join("report.json");
    let run = reseal(&[
        "generalize",
        s(&root),
        "--json",
        "--seed",
        "1",
        "--report",
        s(&report),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = valid(&v, &run, "generalize");
    let file: Json = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(file, doc, "--report holds the object --json prints");

    let run = reseal(&[
        "personalize",
        s(&root),
        "--json",
        "--seed",
        "2",
        "--name",
        "PC-1",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = valid(&v, &run, "personalize");
    assert_eq!(doc["results"][0]["name"], "PC-1");

    let out = tmp.path().join("clones");
    let report = tmp.path().join("stamp.json");
    let run = reseal(&[
        "stamp",
        s(&root),
        "--out",
        s(&out),
        "--count",
        "2",
        "--seed",
        "3",
        "--json",
        "--report",
        s(&report),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = valid(&v, &run, "stamp");
    assert_eq!(doc["clones"].as_array().unwrap().len(), 2);
    let file: Json = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(file, doc);

    let system = root.join("Windows/System32/config/SYSTEM");
    let run = reseal(&["hive", "check", s(&system), "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    valid(&v, &run, "hive check");
    let run = reseal(&["hive", "dump", s(&system), "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = valid(&v, &run, "hive dump");
    assert!(!doc["result"]["keys"].as_array().unwrap().is_empty());
    let sam = root.join("Windows/System32/config/SAM");
    let copy = tmp.path().join("SAM.out");
    let old = doc_sid(&v, &root);
    let run = reseal(&[
        "hive",
        "rewrite-sid",
        s(&sam),
        "--old",
        &old,
        "--new",
        "S-1-5-21-1-2-3",
        "-o",
        s(&copy),
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    valid(&v, &run, "hive rewrite-sid");
}

/// The machine SID inspect reads from the root.
fn doc_sid(v: &jsonschema::Validator, root: &Path) -> String {
    let run = reseal(&["inspect", s(root), "--json"]);
    let doc = valid(v, &run, "inspect");
    let text = doc.to_string();
    let at = text
        .find("S-1-5-21-")
        .expect("a machine SID in inspect's output");
    text[at..]
        .split(|c: char| c != '-' && !c.is_ascii_alphanumeric())
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn wim_and_disk_outputs_list_their_images_and_partitions() {
    let v = schema();
    let tmp = tempfile::tempdir().unwrap();
    let root = root_in(tmp.path());
    if require_tool("wimlib-imagex") {
        let wims = build_wims(&root, &tmp.path().join("wim")).unwrap();
        let two = wims
            .iter()
            .find(|p| p.to_string_lossy().contains("two-images"))
            .unwrap();
        let run = reseal(&["inspect", s(two), "--json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let doc = valid(&v, &run, "inspect");
        let images: Vec<&Json> = doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| &r["image"])
            .collect();
        assert_eq!(images, [&Json::from(1), &Json::from(2)], "{doc:#}");
        let run = reseal(&[
            "generalize",
            s(two),
            "--index",
            "all",
            "--json",
            "--seed",
            "4",
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let doc = valid(&v, &run, "generalize");
        assert_eq!(doc["format"], "wim");
        assert_eq!(doc["results"].as_array().unwrap().len(), 2, "{doc:#}");
        assert_eq!(doc["results"][1]["image"], 2);
    }
    if require_tool("qemu-img") && require_tool("mkntfs") {
        let images = build_disk_images(&root, &tmp.path().join("disk")).unwrap();
        let vhdx = images.iter().find(|p| s(p).ends_with(".vhdx")).unwrap();
        let run = reseal(&["inspect", s(vhdx), "--json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let doc = valid(&v, &run, "inspect");
        assert_eq!(doc["results"][0]["partition"], 1, "{doc:#}");
        let run = reseal(&["generalize", s(vhdx), "--json", "--dry-run"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let doc = valid(&v, &run, "generalize");
        assert_eq!(doc["format"], "vhdx");
        assert_eq!(doc["results"][0]["partition"], 1);

        // A truncated VHDX: a format error with file, offset, expected and
        // found, as JSON on stdout, exit 2.
        let bad = tmp.path().join("bad.vhdx");
        let bytes = std::fs::read(vhdx).unwrap();
        std::fs::write(&bad, &bytes[..(300 << 10).min(bytes.len())]).unwrap();
        let run = reseal(&["inspect", s(&bad), "--json"]);
        assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
        let doc = valid(&v, &run, "inspect");
        let e = &doc["error"];
        assert_eq!(e["exit_code"], 2);
        assert_eq!(e["kind"], "disk_format", "{doc:#}");
        assert_eq!(e["file"], s(&bad), "{doc:#}");
        assert!(e["offset"].is_u64() && e["expected"].is_string() && e["found"].is_string());
        assert!(run.stderr.contains("reseal: error:"), "{}", run.stderr);
    }
}

#[test]
fn errors_are_json_with_the_exit_code_of_their_kind() {
    let v = schema();
    let tmp = tempfile::tempdir().unwrap();
    let root = root_in(tmp.path());

    // Bad input: a path that does not exist.
    let missing = tmp.path().join("missing.vhdx");
    let run = reseal(&["generalize", s(&missing), "--json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let doc = valid(&v, &run, "generalize");
    assert_eq!(doc["error"]["kind"], "invalid_input", "{doc:#}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing.vhdx")
    );

    // Usage: an unknown flag, under --json.
    let run = reseal(&["inspect", s(&root), "--json", "--no-such-flag"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let doc = valid(&v, &run, "inspect");
    assert_eq!(doc["error"]["kind"], "usage");

    // Unknown operation: bad input, the image untouched.
    let before = reseal_testkit::snapshot(&root).unwrap();
    let run = reseal(&["generalize", s(&root), "--json", "--operations", "nope"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    valid(&v, &run, "generalize");
    assert!(
        reseal_testkit::snapshot_diff(&before, &reseal_testkit::snapshot(&root).unwrap())
            .is_empty()
    );

    // Refused by preflight: a report (not an error) with outcome refused,
    // exit 1, nothing written.
    let joined = tmp.path().join("joined");
    build_windows_root(&joined, Some("domain-joined")).unwrap();
    let run = reseal(&["generalize", s(&joined), "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let doc = valid(&v, &run, "generalize");
    assert_eq!(doc["outcome"], "refused");
    assert_eq!(
        doc["results"][0]["installs"][0]["refused_by"][0],
        "domain-joined"
    );

    // Refused: personalize of an image never generalized.
    let run = reseal(&["personalize", s(&root), "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let doc = valid(&v, &run, "personalize");
    assert_eq!(doc["error"]["kind"], "refused");
    assert_eq!(doc["error"]["exit_code"], 1);

    // Stamp of a WIM is bad input, not an internal error.
    let fake = tmp.path().join("x.wim");
    std::fs::write(&fake, b"MSWIM\0\0\0 not really").unwrap();
    let run = reseal(&[
        "stamp",
        s(&fake),
        "--out",
        s(&tmp.path().join("o")),
        "--count",
        "1",
        "--json",
    ]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    valid(&v, &run, "stamp");

    // A hive that is not one: kind hive with file, offset, expected, found.
    let junk = tmp.path().join("JUNK");
    std::fs::write(&junk, vec![0x41u8; 8192]).unwrap();
    let run = reseal(&["hive", "dump", s(&junk), "--json"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let doc = valid(&v, &run, "hive dump");
    assert_eq!(doc["error"]["kind"], "hive");
    assert_eq!(doc["error"]["offset"], 0, "{doc:#}");
    assert!(doc["error"]["expected"].is_string() && doc["error"]["found"].is_string());
}

#[test]
fn report_checked_before_and_failure_after_a_run_is_internal() {
    let tmp = tempfile::tempdir().unwrap();
    let root = root_in(tmp.path());
    let before = reseal_testkit::snapshot(&root).unwrap();

    // An unwritable --report is bad input before the image is touched.
    let nowhere = tmp.path().join("no/such/dir/report.json");
    for cmd in ["generalize", "personalize", "stamp"] {
        let mut args = vec![cmd, s(&root), "--report", s(&nowhere)];
        if cmd == "stamp" {
            args.extend(["--out", "unused-out", "--count", "1"]);
        }
        let run = reseal(&args);
        assert_eq!(run.code, 2, "{cmd}: {}", run.stderr);
        assert!(run.stderr.contains("--report"), "{cmd}: {}", run.stderr);
    }
    assert!(
        reseal_testkit::snapshot_diff(&before, &reseal_testkit::snapshot(&root).unwrap())
            .is_empty()
    );

    // /dev/full opens, so the check passes, but writing fails: after the
    // image was changed, exit 3 and a message that says it was changed.
    let run = reseal(&[
        "generalize",
        s(&root),
        "--seed",
        "5",
        "--report",
        "/dev/full",
    ]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("WAS changed"), "{}", run.stderr);
    assert!(
        !reseal_testkit::snapshot_diff(&before, &reseal_testkit::snapshot(&root).unwrap())
            .is_empty()
    );
    // In a dry run it says the image was not changed.
    let run = reseal(&[
        "generalize",
        s(&root),
        "--dry-run",
        "--report",
        "/dev/full",
        "--json",
    ]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("was not changed"), "{}", run.stderr);
    let doc: Json = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "report_write");
    assert_eq!(doc["error"]["image_changed"], false);
}

/// Runs the binary with its stdout a pipe whose reader goes away after
/// the first bytes, as `| head -c 10` does.
fn with_closed_stdout(args: &[&str]) -> (i32, String) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_reseal"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 10];
    let mut stdout = child.stdout.take().unwrap();
    let _ = stdout.read(&mut head);
    drop(stdout);
    let o = child.wait_with_output().unwrap();
    (
        o.status.code().expect("killed by a signal"),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let root = root_in(tmp.path());
    let system = root.join("Windows/System32/config/SYSTEM");
    for args in [
        vec!["inspect", s(&root), "--json"],
        vec!["inspect", s(&root)],
        vec!["list-operations"],
        vec!["hive", "dump", s(&system), "--json"],
        vec!["completions", "bash"],
        vec!["man"],
    ] {
        let (code, stderr) = with_closed_stdout(&args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn a_panic_is_an_internal_error_even_without_stderr() {
    let run = Command::new(env!("CARGO_BIN_EXE_reseal"))
        .args(["list-operations"])
        .env("RESEAL_DEBUG_PANIC", "1")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("internal error"), "{stderr}");
    for sink in ["/dev/full", "closed"] {
        // (A closed stderr: the reader is gone before the panic message.)
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_reseal"));
        cmd.args(["list-operations"]).env("RESEAL_DEBUG_PANIC", "1");
        let st = if sink == "closed" {
            let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap();
            drop(child.stderr.take());
            child.wait().unwrap()
        } else {
            cmd.stderr(std::fs::OpenOptions::new().write(true).open(sink).unwrap());
            cmd.status().unwrap()
        };
        assert_eq!(st.code(), Some(3), "stderr {sink}");
    }
}

/// The schema is not vacuous: objects that break it are rejected.
#[test]
fn the_schema_rejects_what_it_does_not_describe() {
    let v = schema();
    let base = serde_json::json!({
        "schema": 2, "tool": "reseal", "version": "0", "command": "generalize",
        "input": "x", "format": "dir", "dry_run": false, "outcome": "done", "results": []
    });
    assert!(!v.is_valid(&base), "generalize without a result");
    let mut no_env = base.clone();
    no_env.as_object_mut().unwrap().remove("command");
    assert!(!v.is_valid(&no_env));
    let err = serde_json::json!({
        "schema": 2, "tool": "reseal", "version": "0", "command": "inspect",
        "error": { "kind": "made_up", "message": "m", "exit_code": 2 }
    });
    assert!(!v.is_valid(&err), "unknown error kind");
    let ops = serde_json::json!({
        "schema": 2, "tool": "reseal", "version": "0", "command": "list-operations",
        "operations": [{ "name": "x" }]
    });
    assert!(!v.is_valid(&ops), "operation without default/description");
}

/// `--operations` in virt-sysprep's grammar: the operations the report
/// lists are the default set less one, or all of them.
#[test]
fn operations_accept_virt_sysprep_grammar() {
    let tmp = tempfile::tempdir().unwrap();
    let root = root_in(tmp.path());
    let listed = reseal(&["list-operations", "--json"]);
    let listed: Json = serde_json::from_str(&listed.stdout).unwrap();
    let names = |pred: &dyn Fn(&Json) -> bool| -> Vec<String> {
        listed["operations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| pred(o))
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect()
    };
    let defaults = names(&|o| o["default"] == true);
    let all = names(&|_| true);
    let ran = |list: &str| -> Vec<String> {
        let run = reseal(&[
            "generalize",
            s(&root),
            "--dry-run",
            "--json",
            "--operations",
            list,
        ]);
        assert_eq!(run.code, 0, "{list}: {}", run.stderr);
        let doc: Json = serde_json::from_str(&run.stdout).unwrap();
        let ops = &doc["results"][0]["installs"][0]["operations"];
        let mut v: Vec<String> = serde_json::from_value(ops.clone()).unwrap();
        v.sort();
        v
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(ran("defaults"), sorted(defaults.clone()));
    let less: Vec<String> = defaults
        .iter()
        .filter(|n| *n != "leftovers")
        .cloned()
        .collect();
    assert!(
        less.len() < defaults.len(),
        "leftovers is a default operation"
    );
    assert_eq!(ran("defaults,-leftovers"), sorted(less));
    assert_eq!(ran("all"), sorted(all.clone()));
    assert_eq!(ran("-leftovers,markers"), ["markers"]);
    let run = reseal(&[
        "generalize",
        s(&root),
        "--dry-run",
        "--operations",
        "defaults,-nope",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("-nope") && run.stderr.contains("defaults, all"),
        "{}",
        run.stderr
    );
}
