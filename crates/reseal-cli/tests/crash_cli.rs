//! kill -9 campaign on the real binary: `strace` kills `reseal generalize`
//! at a rename (directory roots) or at an in-place write (disk images);
//! the next `reseal inspect` finishes or undoes the interrupted run, the
//! tree is byte-identical to before (directories, checked with the
//! testkit's snapshot), `qemu-img check` passes (VHDX), and a re-run
//! exits 0.

use std::path::Path;
use std::process::Command;

use reseal_testkit::{
    build_disk_images, build_windows_root, copy_tree, require, require_tool, snapshot,
    snapshot_diff,
};

fn reseal(args: &[&str], path: &Path) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_reseal"))
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// `reseal generalize` under strace, killed at the `n`th call of `syscall`.
fn killed_run(syscall: &str, n: usize, path: &Path) -> i32 {
    Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("inject={syscall}:signal=KILL:when={n}"))
        .arg(env!("CARGO_BIN_EXE_reseal"))
        .args(["generalize", "--seed", "3"])
        .arg(path)
        .status()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

#[test]
fn a_directory_run_killed_at_a_rename_is_undone_by_the_next_inspect() {
    if !require_tool("strace") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    build_windows_root(&pristine, None).unwrap();
    let before = snapshot(&pristine).unwrap();
    for n in [1usize, 7, 15, 30, 44] {
        let root = tmp.path().join(format!("r{n}"));
        copy_tree(&pristine, &root).unwrap();
        let code = killed_run("rename", n, &root);
        assert_ne!(code, 0, "rename {n}: the run was not killed");
        let (code, out) = reseal(&["inspect"], &root);
        assert_eq!(code, 0, "rename {n}: {out}");
        let d = snapshot_diff(&before, &snapshot(&root).unwrap());
        assert!(d.is_empty(), "rename {n}: not as before: {d:?}");
        assert!(
            reseal_testkit::reseal_leftovers(&root).is_empty(),
            "rename {n}: {:?}",
            reseal_testkit::reseal_leftovers(&root)
        );
        let (code, out) = reseal(&["generalize"], &root);
        assert_eq!(code, 0, "rename {n}: re-run: {out}");
    }
}

#[test]
fn a_disk_run_killed_at_a_write_is_finished_by_the_next_inspect() {
    if !require_tool("strace") || !require_tool("qemu-img") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let images = build_disk_images(&root, &tmp.path().join("disk")).unwrap();
    if !require(!images.is_empty(), "disk image tools") {
        return;
    }
    for img in &images {
        let vhdx = img.extension().is_some_and(|e| e == "vhdx");
        for n in [2usize, 9, 18] {
            let copy = tmp.path().join(format!(
                "k{n}-{}",
                img.file_name().unwrap().to_string_lossy()
            ));
            std::fs::copy(img, &copy).unwrap();
            let code = killed_run("pwrite64", n, &copy);
            assert_ne!(code, 0, "{}: pwrite {n}: not killed", copy.display());
            let mut journal = copy.file_name().unwrap().to_os_string();
            journal.push(".reseal-journal");
            let journal = copy.with_file_name(journal);
            assert!(journal.is_file(), "{}: no journal left", copy.display());
            let (code, out) = reseal(&["inspect"], &copy);
            assert_eq!(code, 0, "{}: {out}", copy.display());
            assert!(
                !journal.exists(),
                "{}: journal not replayed",
                copy.display()
            );
            if vhdx {
                let st = Command::new("qemu-img")
                    .args(["check", "-q", "-f", "vhdx"])
                    .arg(&copy)
                    .status()
                    .unwrap();
                assert!(st.success(), "{}: qemu-img check", copy.display());
            }
            // The replayed run is complete: a re-run has nothing to do.
            let (code, out) = reseal(&["generalize"], &copy);
            assert_eq!(code, 0, "{}: re-run: {out}", copy.display());
            assert!(out.contains("nothing to do"), "{}: {out}", copy.display());
            std::fs::remove_file(&copy).unwrap();
        }
    }
}

/// Runs `reseal generalize` on a copy of `src` placed on a small tmpfs
/// (in a private mount namespace) with about `free_kib` KiB left free;
/// returns the exit code, the output, whether the copy is still identical
/// to `src` (`diff -r` / `cmp`) and the `.reseal-` leftovers.
fn on_full_fs(src: &Path, free_kib: u64) -> Option<(i32, String, bool, String)> {
    let mnt = tempfile::tempdir().unwrap();
    let script = r#"
        set -e
        mount -t tmpfs -o size=400m tmpfs "$MNT"
        cp -a "$SRC" "$MNT/$NAME"
        free=$(df -k "$MNT" | tail -1 | awk '{print $4}')
        fallocate -l $(( (free - FREE) * 1024 )) "$MNT/filler"
        set +e
        "$BIN" generalize "$MNT/$NAME" > "$MNT/out" 2>&1
        echo "rc=$?"
        cat "$MNT/out"
        if [ -d "$SRC" ]; then diff -r "$SRC" "$MNT/$NAME" > /dev/null && echo SAME; else cmp -s "$SRC" "$MNT/$NAME" && echo SAME; fi
        find "$MNT" -name '*.reseal-*' -printf 'LEFT %p\n'
    "#;
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c", script])
        .env("MNT", mnt.path())
        .env("SRC", src)
        .env("FREE", free_kib.to_string())
        .env("NAME", src.file_name().unwrap())
        .env("BIN", env!("CARGO_BIN_EXE_reseal"))
        .output()
        .ok()?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let rc = out
        .lines()
        .find_map(|l| l.strip_prefix("rc="))?
        .trim()
        .parse()
        .ok()?;
    let same = out.lines().any(|l| l == "SAME");
    let left: String = out
        .lines()
        .filter(|l| l.starts_with("LEFT"))
        .collect::<Vec<_>>()
        .join("\n");
    Some((rc, out, same, left))
}

#[test]
fn a_full_disk_is_refused_up_front_and_leaves_the_image_as_it_was() {
    if !require_tool("unshare") || !require_tool("fallocate") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let mut images = vec![root.clone()];
    images.extend(build_disk_images(&root, &tmp.path().join("disk")).unwrap());
    let (mut refused, mut done) = (0, 0);
    for src in &images {
        for free in [64u64, 512, 1024, 4096, 32768] {
            let got = on_full_fs(src, free);
            if !require(got.is_some(), "a tmpfs mount in a private namespace (root)") {
                return;
            }
            let (rc, out, same, left) = got.unwrap();
            let what = format!("{} with {free} KiB free", src.display());
            assert!(left.is_empty(), "{what}: leftovers {left}");
            match rc {
                2 => {
                    assert!(out.contains("not enough free space"), "{what}: {out}");
                    assert!(same, "{what}: refused but changed");
                    refused += 1;
                }
                0 => {
                    assert!(!same, "{what}: exit 0 but unchanged: {out}");
                    done += 1;
                }
                _ => panic!("{what}: exit {rc}: {out}"),
            }
        }
    }
    assert!(refused > 0 && done > 0, "refused {refused}, done {done}");
}
