//! `reseal completions SHELL` and `reseal man`: the scripts name every
//! command (bash's parses with `bash -n`), and the man pages render
//! without warnings through groff (`groff -man -ww -z`) and name every
//! flag of the command they describe.

use std::process::Command;

use reseal_testkit::require_tool;

fn reseal(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_reseal"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const COMMANDS: &[&str] = &[
    "generalize",
    "inspect",
    "list-operations",
    "personalize",
    "stamp",
    "hive",
    "completions",
    "man",
];

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let (code, out, err) = reseal(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for c in COMMANDS {
            assert!(out.contains(c), "{shell}: {c} missing");
        }
        assert!(
            out.contains("operations") && out.contains("json"),
            "{shell}"
        );
    }
    let (code, _, err) = reseal(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");
    if require_tool("bash") {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("reseal.bash");
        std::fs::write(&f, reseal(&["completions", "bash"]).1).unwrap();
        let st = Command::new("bash").arg("-n").arg(&f).status().unwrap();
        assert!(st.success(), "bash -n rejects the completion script");
        // Sourced, it registers a completion function for reseal.
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p reseal", f.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("reseal"));
    }
}

#[test]
fn man_pages_render_cleanly() {
    let (code, page, err) = reseal(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("reseal"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("man1");
    let (code, _, err) = reseal(&["man", "--out-dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for c in [
        "reseal.1",
        "reseal-generalize.1",
        "reseal-stamp.1",
        "reseal-hive-dump.1",
    ] {
        assert!(names.iter().any(|n| n == c), "{c} not in {names:?}");
    }
    let generalize = std::fs::read_to_string(dir.join("reseal-generalize.1")).unwrap();
    for flag in ["operations", "report", "partition", "index", "json"] {
        assert!(generalize.contains(flag), "{flag}");
    }
    if require_tool("groff") {
        for n in &names {
            let o = Command::new("groff")
                .args(["-man", "-ww", "-z"])
                .arg(dir.join(n))
                .output()
                .unwrap();
            assert!(o.status.success(), "{n}");
            let warnings = String::from_utf8_lossy(&o.stderr);
            assert!(warnings.is_empty(), "{n}: {warnings}");
        }
    }
}

#[test]
fn version_names_the_linked_libraries() {
    let (code, out, err) = reseal(&["--version"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("reseal {}", env!("CARGO_PKG_VERSION")));
    let wim = lines
        .iter()
        .find(|l| l.starts_with("wimlib "))
        .expect("wimlib line");
    let ntfs = lines
        .iter()
        .find(|l| l.starts_with("libntfs-3g "))
        .expect("libntfs-3g line");
    assert!(wim.contains("loaded libwim.so."), "{wim}");
    assert!(ntfs.contains("loaded libntfs-3g.so."), "{ntfs}");
    // The built-against versions are pkg-config's, as wimlib-imagex says.
    if require_tool("wimlib-imagex") {
        let o = Command::new("wimlib-imagex")
            .arg("--version")
            .output()
            .unwrap();
        let theirs = String::from_utf8_lossy(&o.stdout);
        let v = wim.split_whitespace().nth(1).unwrap();
        assert!(theirs.contains(v), "wimlib {v} vs {theirs}");
    }
}
