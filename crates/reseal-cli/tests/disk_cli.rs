//! `reseal inspect` and `reseal generalize --dry-run` on disk images
//! (raw, VHD, VHDX built by the testkit) leave the image untouched; a real
//! generalize of a copy writes it and inspect reads the new SID back.

use std::path::Path;
use std::process::Command;

use reseal_testkit::{SAMPLE_MACHINE_SID, build_disk_images, build_windows_root};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn reseal(args: &[&str], path: &Path) -> Run {
    let o = Command::new(env!("CARGO_BIN_EXE_reseal"))
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn inspect_and_dry_run_on_disk_images() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let images = build_disk_images(&root, &tmp.path().join("disk")).unwrap();
    if !reseal_testkit::require(!images.is_empty(), "disk image tools (qemu-img)") {
        return;
    }
    for img in &images {
        let before = std::fs::read(img).unwrap();
        let run = reseal(&["inspect"], img);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stdout.contains(SAMPLE_MACHINE_SID), "{}", run.stdout);
        let run = reseal(&["inspect", "--partition", "1", "--json"], img);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let run = reseal(&["generalize", "--dry-run"], img);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stdout.contains("dry run"), "{}", run.stdout);
        // A real run on a copy: exit 0, the copy changed, and its new
        // machine SID is what inspect reads back.
        let copy = tmp.path().join(format!(
            "copy-{}",
            img.file_name().unwrap().to_string_lossy()
        ));
        std::fs::copy(img, &copy).unwrap();
        let new_sid = "S-1-5-21-1111111111-2222222222-3333333333";
        let run = reseal(&["generalize", "--sid", new_sid], &copy);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        assert!(
            std::fs::read(&copy).unwrap() != before,
            "{} unchanged",
            copy.display()
        );
        let run = reseal(&["inspect"], &copy);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stdout.contains(new_sid), "{}", run.stdout);
        assert!(!run.stdout.contains(SAMPLE_MACHINE_SID), "{}", run.stdout);
        std::fs::remove_file(&copy).unwrap();
        let run = reseal(&["inspect", "--partition", "2"], img);
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains("no partition 2"), "{}", run.stderr);
        assert!(
            std::fs::read(img).unwrap() == before,
            "{} changed",
            img.display()
        );
    }
    let run = reseal(&["inspect", "--partition", "1"], &root);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--partition applies to disk images"));
}
