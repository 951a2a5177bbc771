//! The WIM backend end to end: capture the synthetic Windows root into a
//! WIM with wimlib-imagex, generalize the WIM in place (and to `--output`),
//! then check the result with wimlib-imagex (verify, apply) and with the
//! hive reader, against the same run on a directory copy of the root.

use std::path::{Path, PathBuf};
use std::process::Command;

use reseal::backend::Backend;
use reseal::backend::FileChange;
use reseal::backend::dir::DirBackend;
use reseal::backend::wim::{ImageSelector, WimBackend};
use reseal::generalize::generalize;
use reseal::hive::Hive;
use reseal::options::GeneralizeOptions;
use reseal::report::Outcome;
use reseal_testkit::{Snapshot, build_windows_root};

fn have_wimlib_imagex() -> bool {
    let ok = Command::new("wimlib-imagex")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: wimlib-imagex is not installed (cargo xtask setup installs wimtools)");
    }
    ok
}

fn imagex(args: &[&str]) -> String {
    let o = Command::new("wimlib-imagex").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "wimlib-imagex {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn options() -> GeneralizeOptions {
    GeneralizeOptions {
        seed: Some(7),
        ..GeneralizeOptions::default()
    }
}

/// A synthetic root and a WIM captured from it.
fn fixture(tmp: &Path) -> (PathBuf, PathBuf) {
    let root = tmp.join("root");
    build_windows_root(&root, None).unwrap();
    let wim = tmp.join("image.wim");
    imagex(&[
        "capture",
        root.to_str().unwrap(),
        wim.to_str().unwrap(),
        "Windows 10 Pro",
    ]);
    (root, wim)
}

fn apply(wim: &Path, dest: &Path) -> Snapshot {
    imagex(&["apply", wim.to_str().unwrap(), "1", dest.to_str().unwrap()]);
    reseal_testkit::snapshot(dest).unwrap()
}

fn image_state(root: &Path) -> String {
    let h = Hive::open(root.join("Windows/System32/config/SOFTWARE")).unwrap();
    let k = h
        .open_key(r"Microsoft\Windows\CurrentVersion\Setup\State")
        .unwrap()
        .expect("State key");
    let v = h.value(k, "ImageState").unwrap().expect("ImageState");
    let units: Vec<u16> = v
        .data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

fn files(s: &Snapshot) -> std::collections::BTreeMap<PathBuf, Option<Vec<u8>>> {
    s.iter().map(|(p, (_, d))| (p.clone(), d.clone())).collect()
}

/// The main evidence: generalizing the WIM in place gives the same tree as
/// generalizing a directory copy (same paths; files the run does not touch
/// are byte-identical to the original), the hives are generalized, the WIM
/// verifies, and a second run plans nothing.
#[test]
fn generalize_wim_in_place_matches_the_directory_run() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (root, wim) = fixture(tmp.path());
    let original = files(&reseal_testkit::snapshot(&root).unwrap());

    // Reference: the same run on a directory copy.
    let dir = tmp.path().join("dir-run");
    reseal_testkit::copy_tree(&root, &dir).unwrap();
    let dir_report = generalize(&mut DirBackend::open(&dir).unwrap(), &options()).unwrap();
    assert_eq!(dir_report.outcome, Outcome::Done);
    // wimlib-imagex capture leaves out what its default capture
    // configuration excludes, so the WIM never held these.
    let excluded = ["$Recycle.Bin", "System Volume Information"];
    let mut expected = files(&reseal_testkit::snapshot(&dir).unwrap());
    expected.retain(|p, _| !excluded.iter().any(|e| p.starts_with(e)));

    let mut b = WimBackend::open(&wim, ImageSelector::Index(1)).unwrap();
    assert_eq!(b.image_name(), Some("Windows 10 Pro"));
    let report = generalize(&mut b, &options()).unwrap();
    assert_eq!(report.outcome, Outcome::Done, "{}", report.to_text());
    drop(b);

    imagex(&["verify", wim.to_str().unwrap()]);
    let info = imagex(&["info", wim.to_str().unwrap()]);
    assert!(info.contains("Windows 10 Pro"), "{info}");

    let applied_dir = tmp.path().join("applied");
    let applied = files(&apply(&wim, &applied_dir));
    let exp_paths: Vec<_> = expected.keys().collect();
    let got_paths: Vec<_> = applied.keys().collect();
    assert_eq!(got_paths, exp_paths, "the trees differ");
    let mut untouched = 0;
    for (p, data) in &applied {
        if original.get(p) == expected.get(p) {
            assert_eq!(Some(data), original.get(p), "{}: changed", p.display());
            untouched += 1;
        }
    }
    assert!(untouched > 0);
    assert!(
        image_state(&applied_dir).starts_with("IMAGE_STATE_GENERALIZE"),
        "{}",
        image_state(&applied_dir)
    );
    assert_eq!(image_state(&applied_dir), image_state(&dir));

    // A second run on the WIM plans nothing.
    let mut b = WimBackend::open(&wim, ImageSelector::Name("Windows 10 Pro".into())).unwrap();
    let again = generalize(&mut b, &options()).unwrap();
    assert_eq!(again.outcome, Outcome::NothingToDo, "{}", again.to_text());
}

/// `--output`: the input WIM is left byte-identical, the new one holds the
/// generalized image.
#[test]
fn generalize_to_output_leaves_the_input_untouched() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_root, wim) = fixture(tmp.path());
    let before = std::fs::read(&wim).unwrap();
    let out = tmp.path().join("out.wim");
    let mut b = WimBackend::open(&wim, ImageSelector::Index(1))
        .unwrap()
        .with_output(Some(out.clone()));
    let report = generalize(&mut b, &options()).unwrap();
    assert_eq!(report.outcome, Outcome::Done);
    drop(b);
    assert_eq!(std::fs::read(&wim).unwrap(), before, "the input changed");
    imagex(&["verify", out.to_str().unwrap()]);
    let applied = tmp.path().join("applied");
    apply(&out, &applied);
    assert!(image_state(&applied).starts_with("IMAGE_STATE_GENERALIZE"));
}

/// Lookups are case-insensitive; every change kind works; a failing
/// commit (rename onto an existing file) changes nothing on disk.
#[test]
fn changes_and_failed_commit() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("Dir/Sub")).unwrap();
    std::fs::write(src.join("Dir/a.txt"), b"aaa").unwrap();
    std::fs::write(src.join("Dir/b.txt"), b"bbb").unwrap();
    std::fs::write(src.join("Dir/Sub/c.txt"), b"ccc").unwrap();
    std::fs::write(src.join("keep.bin"), b"keep").unwrap();
    let wim = tmp.path().join("t.wim");
    imagex(&["capture", src.to_str().unwrap(), wim.to_str().unwrap(), "t"]);

    let mut b = WimBackend::open(&wim, ImageSelector::Index(1)).unwrap();
    assert!(b.is_dir(r"dir\SUB"));
    assert!(b.exists(r"DIR\A.TXT"));
    assert_eq!(b.read(r"dir\a.txt").unwrap(), b"aaa");
    assert_eq!(b.read_head(r"dir\sub\C.TXT", 2).unwrap(), b"cc");
    let names: Vec<String> = b.list("DIR").unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["a.txt", "b.txt", "Sub"]);
    assert!(b.list("nope").is_err());

    let before = std::fs::read(&wim).unwrap();
    let err = b
        .commit(&[
            FileChange::Write {
                path: r"DIR\a.txt".into(),
                data: b"new".to_vec(),
            },
            FileChange::Rename {
                from: r"dir\b.txt".into(),
                to: r"Dir\A.TXT".into(),
            },
        ])
        .unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");
    assert_eq!(std::fs::read(&wim).unwrap(), before);
    assert_eq!(b.read(r"dir\a.txt").unwrap(), b"aaa");

    b.commit(&[
        FileChange::Write {
            path: r"dir\A.txt".into(),
            data: b"new".to_vec(),
        },
        FileChange::Write {
            path: r"Dir\New\d.txt".into(),
            data: b"ddd".to_vec(),
        },
        FileChange::Truncate {
            path: r"dir\b.txt".into(),
        },
        FileChange::Rename {
            from: r"dir\sub".into(),
            to: r"Moved\Deeper\Sub2".into(),
        },
        FileChange::Delete {
            path: r"absent.txt".into(),
        },
        FileChange::DeleteTree {
            path: r"moved\deeper\sub2".into(),
        },
        FileChange::Delete {
            path: r"KEEP.BIN".into(),
        },
    ])
    .unwrap();
    // The backend sees the result at once.
    assert_eq!(b.read(r"dir\a.txt").unwrap(), b"new");
    assert!(!b.exists("keep.bin"));
    drop(b);

    imagex(&["verify", wim.to_str().unwrap()]);
    let out = tmp.path().join("out");
    let snap = files(&apply(&wim, &out));
    let got: Vec<(String, Option<Vec<u8>>)> = snap
        .into_iter()
        .map(|(p, d)| (p.display().to_string(), d))
        .collect();
    let want: Vec<(String, Option<Vec<u8>>)> = vec![
        ("Dir".into(), None),
        ("Dir/New".into(), None),
        ("Dir/New/d.txt".into(), Some(b"ddd".to_vec())),
        ("Dir/a.txt".into(), Some(b"new".to_vec())),
        ("Dir/b.txt".into(), Some(Vec::new())),
        ("Moved".into(), None),
        ("Moved/Deeper".into(), None),
    ];
    assert_eq!(got, want);
}

/// A missing image is a clear error.
#[test]
fn missing_image_is_an_error() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("x"), b"x").unwrap();
    let wim = tmp.path().join("t.wim");
    imagex(&["capture", src.to_str().unwrap(), wim.to_str().unwrap(), "t"]);
    for sel in [ImageSelector::Index(2), ImageSelector::Name("nope".into())] {
        let err = WimBackend::open(&wim, sel).err().expect("an error");
        assert!(err.to_string().contains("no image"), "{err}");
    }
    assert!(WimBackend::open(&tmp.path().join("absent.wim"), ImageSelector::Index(1)).is_err());
}
