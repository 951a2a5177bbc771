//! The README's pipeline recipes (`docs/recipes/*.sh`) run as written,
//! with the `reseal` just built first on `PATH`, against fixtures built by
//! the testkit (a Windows root, its VHDX): so that they cannot rot. Their
//! effects are read back with the JSON reports and, for computer names,
//! with `hivexregedit`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reseal_testkit::{build_disk_images, build_windows_root, require_tool, workspace_root};
use serde_json::Value as Json;

fn recipe(name: &str) -> PathBuf {
    workspace_root().join("docs/recipes").join(name)
}

/// Runs a recipe with `sh`, the fresh binary first on `PATH`.
fn run(name: &str, args: &[&Path], env: &[(&str, &Path)], cwd: &Path) -> Output {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_reseal")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.arg(recipe(name))
        .args(args)
        .env("PATH", path)
        .env_remove("GITHUB_STEP_SUMMARY")
        .current_dir(cwd);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(name: &str, o: &Output) {
    assert!(
        o.status.success(),
        "{name}: {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn json(p: &Path) -> Json {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn root(tmp: &Path, name: &str, variant: Option<&str>) -> PathBuf {
    let r = tmp.join(name);
    build_windows_root(&r, variant).unwrap();
    r
}

#[test]
fn packer_post_processor_generalizes_the_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut images = vec![root(t, "root", None)];
    if require_tool("qemu-img") && require_tool("mkntfs") {
        let disks = build_disk_images(&root(t, "for-disk", None), &t.join("disk")).unwrap();
        images.extend(
            disks
                .into_iter()
                .filter(|p| p.extension().unwrap() == "vhdx"),
        );
    }
    for image in &images {
        let o = run("packer-post-process.sh", &[], &[("IMAGE", image)], t);
        ok("packer", &o);
        let report = PathBuf::from(format!("{}.reseal.json", image.display()));
        let doc = json(&report);
        assert_eq!(doc["command"], "generalize");
        assert_eq!(doc["outcome"], "done", "{}", image.display());
        // A second build step on the same artifact has nothing to do.
        let o = run("packer-post-process.sh", &[], &[("IMAGE", image)], t);
        ok("packer again", &o);
        assert_eq!(json(&report)["outcome"], "nothing_to_do");
    }
    // A file that is no image fails the build (exit 2).
    let junk = t.join("junk.vhdx");
    std::fs::write(&junk, b"not an image").unwrap();
    let o = run("packer-post-process.sh", &[], &[("IMAGE", &junk)], t);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn github_actions_step_reports_the_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let image = root(t, "root", None);
    let summary = t.join("summary.md");
    let o = run(
        "github-actions.sh",
        &[],
        &[("IMAGE", &image), ("GITHUB_STEP_SUMMARY", &summary)],
        t,
    );
    ok("github-actions", &o);
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(text.contains(": done"), "{text}");
    let report = PathBuf::from(format!("{}.reseal.json", image.display()));
    assert_eq!(json(&report)["outcome"], "done");
    // A refused image fails the step with reseal's exit code 1.
    let joined = root(t, "joined", Some("domain-joined"));
    let o = run(
        "github-actions.sh",
        &[],
        &[("IMAGE", &joined), ("GITHUB_STEP_SUMMARY", &summary)],
        t,
    );
    assert_eq!(o.status.code(), Some(1));
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(text.contains("refused by preflight"), "{text}");
}

/// The computer name in a root's SYSTEM hive, read by hivexregedit.
fn computer_name(root: &Path) -> String {
    let o = Command::new("hivexregedit")
        .args(["--export", "--prefix", "HKLM\\SYSTEM"])
        .arg(root.join("Windows/System32/config/SYSTEM"))
        .arg("\\ControlSet001\\Control\\ComputerName\\ComputerName")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout).replace("\\\n", "");
    let line = text
        .lines()
        .find(|l| l.starts_with("\"ComputerName\""))
        .unwrap_or_else(|| panic!("{text}"));
    // REG_SZ as hivexregedit writes it: `hex(1):` UTF-16LE bytes, or a
    // quoted string.
    match line.split_once("=hex(1):") {
        Some((_, hex)) => {
            let bytes: Vec<u8> = hex
                .split(',')
                .filter_map(|b| u8::from_str_radix(b.trim(), 16).ok())
                .collect();
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            String::from_utf16_lossy(&units)
        }
        None => line.to_string(),
    }
}

#[test]
fn image_factory_generalizes_once_and_stamps_each_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut templates = vec![root(t, "template", None)];
    if require_tool("qemu-img") && require_tool("mkntfs") {
        let disks = build_disk_images(&root(t, "for-disk", None), &t.join("disk")).unwrap();
        templates.extend(
            disks
                .into_iter()
                .filter(|p| p.extension().unwrap() == "vhdx"),
        );
    }
    for (i, template) in templates.iter().enumerate() {
        let out = t.join(format!("factory-{i}"));
        let o = run(
            "image-factory.sh",
            &[template, &out, Path::new("WEB1"), Path::new("WEB2")],
            &[],
            t,
        );
        ok("image-factory", &o);
        assert_eq!(json(&out.join("generalize.json"))["outcome"], "done");
        let machines = json(&out.join("machines.json"));
        let clones = machines["clones"].as_array().unwrap();
        let names: Vec<&str> = clones.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["WEB1", "WEB2"]);
        let personalized = json(&out.join("personalize.json"));
        assert_eq!(personalized["results"][0]["name"], "WEB1-B");
        // Every machine has its own SID, none the template's.
        let mut sids: Vec<String> = clones
            .iter()
            .map(|c| c["sid"][0]["new"].as_str().unwrap().to_string())
            .collect();
        sids.push(
            personalized["results"][0]["sid"][0]["new"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        let template_sid = clones[0]["sid"][0]["old"].as_str().unwrap();
        sids.sort();
        sids.dedup();
        assert_eq!(sids.len(), 3, "{sids:?}");
        assert!(!sids.iter().any(|s| s == template_sid));
        // On directory clones the names are in the hives, as hivex reads
        // them.
        if template.is_dir() && require_tool("hivexregedit") {
            let web1 = out.join("machines/WEB1");
            assert_eq!(computer_name(&web1), "WEB1");
            assert_eq!(computer_name(&out.join("copy-of-WEB1")), "WEB1-B");
        }
    }
}
