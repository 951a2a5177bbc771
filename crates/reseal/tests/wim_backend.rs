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
    reseal_testkit::require_tool("wimlib-imagex")
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

/// The run report lists, under operation "backend", the metadata the
/// replaced files lost (naming them; only when they were added as plain
/// files).
fn assert_backend_caveats(report: &reseal::report::RunReport, replaced: &[String]) {
    assert!(!replaced.is_empty());
    assert!(
        replaced
            .iter()
            .any(|p| p.eq_ignore_ascii_case(r"Windows\System32\config\SYSTEM")),
        "{replaced:?}"
    );
    let notes: Vec<&str> = report
        .installs
        .iter()
        .flat_map(|i| &i.not_done)
        .filter(|n| n.operation == "backend")
        .map(|n| n.message.as_str())
        .collect();
    let meta = notes
        .iter()
        .find(|m| m.contains("security descriptor"))
        .unwrap_or_else(|| panic!("no metadata caveat in {notes:?}"));
    for what in [
        "DOS attributes",
        "short (8.3) name",
        "alternate data streams",
        "timestamps",
        "NTFS-3G",
    ] {
        assert!(meta.contains(what), "{what}: {meta}");
    }
    for p in replaced {
        assert!(meta.contains(p.as_str()), "{p}: {meta}");
    }
    // The fixture has no descriptors, so no entry names the old SID after
    // the write (tests/wim_metadata.rs covers entries that do).
    assert!(
        !notes.iter().any(|m| m.contains("not rewritten")),
        "{notes:?}"
    );
    let text = report.to_text();
    assert!(text.contains("security descriptor"), "{text}");
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
    // The plain-add route (what happens without NTFS-3G): same contents
    // as the directory run, and the report names what was lost. The
    // metadata-keeping route is checked by every_fixture_wim_generalizes
    // and tests/wim_metadata.rs.
    b.set_keep_metadata(false);
    let report = generalize(&mut b, &options()).unwrap();
    assert_eq!(report.outcome, Outcome::Done, "{}", report.to_text());
    assert_backend_caveats(&report, b.replaced_paths());
    assert!(
        dir_report
            .installs
            .iter()
            .all(|i| i.not_done.iter().all(|n| n.operation != "backend")),
        "a directory keeps every file's metadata"
    );
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

// ---------------------------------------------------------------------------
// The fixture WIMs of `reseal_testkit::build_wims` (LZX, XPRESS, LZMS, two
// images, solid ESD).

const HIVES: [&str; 2] = [
    "/Windows/System32/config/SYSTEM",
    "/Windows/System32/config/SOFTWARE",
];

/// Extracts the hives of `image` with wimlib-imagex into `dest`.
fn extract_hives(wim: &Path, image: &str, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let d = format!("--dest-dir={}", dest.display());
    let mut args = vec!["extract", wim.to_str().unwrap(), image];
    args.extend(HIVES);
    args.extend([d.as_str(), "--no-acls"]);
    imagex(&args);
}

/// Reads ImageState from an extracted SOFTWARE hive with hivexregedit (an
/// independent reader); `None` when hivexregedit is not installed.
fn hivex_image_state(software: &Path) -> Option<String> {
    let out = Command::new("hivexregedit")
        .env("PERL_UNICODE", "SO")
        .arg("--export")
        .arg(software)
        .arg(r"\Microsoft\Windows\CurrentVersion\Setup\State")
        .output();
    let out = match out {
        Ok(o) if o.status.success() => o,
        _ => {
            reseal_testkit::require(false, "a working hivexregedit");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("\"ImageState\""))
        .unwrap_or_else(|| panic!("no ImageState in {text}"));
    // "ImageState"=hex(1):49,00,...
    let hex = line.split(':').nth(1).unwrap();
    let bytes: Vec<u8> = hex
        .split(',')
        .filter_map(|b| u8::from_str_radix(b.trim().trim_end_matches('\\'), 16).ok())
        .collect();
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    Some(String::from_utf16_lossy(&units))
}

/// Checks the generalized hives of `image` as extracted by wimlib-imagex:
/// the structural checker passes and ImageState says generalized (read by
/// reseal's reader and by hivexregedit).
fn check_extracted(wim: &Path, image: &str, dest: &Path) {
    extract_hives(wim, image, dest);
    for h in ["SYSTEM", "SOFTWARE"] {
        let hive = Hive::open(dest.join(h)).unwrap();
        let report = hive.check();
        let errors: Vec<_> = report.errors().collect();
        assert!(errors.is_empty(), "{h}: {errors:?}");
    }
    let root = dest.join("root");
    std::fs::create_dir_all(root.join("Windows/System32/config")).unwrap();
    std::fs::copy(
        dest.join("SOFTWARE"),
        root.join("Windows/System32/config/SOFTWARE"),
    )
    .unwrap();
    assert!(image_state(&root).starts_with("IMAGE_STATE_GENERALIZE"));
    if let Some(s) = hivex_image_state(&dest.join("SOFTWARE")) {
        assert!(s.starts_with("IMAGE_STATE_GENERALIZE"), "hivexregedit: {s}");
    }
}

/// `wimlib-imagex dir --detailed` of one path: the lines of its entry.
fn detailed(wim: &Path, image: &str, path: &str) -> String {
    let p = format!("--path={path}");
    imagex(&["dir", wim.to_str().unwrap(), image, "--detailed", &p])
}

fn detail_field(detail: &str, field: &str) -> Option<String> {
    detail
        .lines()
        .find(|l| l.trim_start().starts_with(field))
        .map(|l| l.split_once('=').map_or(l, |(_, v)| v).trim().to_string())
}

fn fixture_wims(tmp: &Path) -> Vec<PathBuf> {
    let root = tmp.join("root");
    build_windows_root(&root, None).unwrap();
    // An old time on every hive, to tell a replaced entry's timestamps.
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(978_307_200); // 2001-01-01
    for h in ["SYSTEM", "SOFTWARE", "DEFAULT", "SAM", "SECURITY"] {
        let p = root.join("Windows/System32/config").join(h);
        if let Ok(f) = std::fs::File::options().write(true).open(&p) {
            f.set_modified(old).unwrap();
        }
    }
    reseal_testkit::build_wims(&root, &tmp.join("wim")).unwrap()
}

/// Each compression: generalize in place, verify, read the hives back with
/// independent tools, `dir --detailed` shows the replaced hives with their
/// old metadata (times, no descriptor as before, short name), and a second
/// run plans nothing.
#[test]
fn every_fixture_wim_generalizes() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wims = fixture_wims(tmp.path());
    for wim in &wims[..3] {
        let name = wim.file_name().unwrap().to_str().unwrap().to_string();
        let untouched = r"/Windows/System32/config/DEFAULT";
        let before_hive = detailed(wim, "1", HIVES[0]);
        let before_other = detailed(wim, "1", untouched);
        let mut b = WimBackend::open(wim, ImageSelector::Index(1)).unwrap();
        let report = generalize(&mut b, &options()).unwrap();
        assert_eq!(
            report.outcome,
            Outcome::Done,
            "{name}: {}",
            report.to_text()
        );
        // Metadata kept: nothing listed as lost.
        assert!(b.replaced_paths().is_empty(), "{:?}", b.replaced_paths());
        let notes: Vec<&str> = report.installs[0]
            .not_done
            .iter()
            .filter(|n| n.operation == "backend")
            .map(|n| n.message.as_str())
            .collect();
        assert!(
            !notes
                .iter()
                .any(|m| m.contains("lost their security descriptor")),
            "{name}: {notes:?}"
        );
        // The image was captured without descriptors: after the write no
        // entry names the old SID, so nothing is reported as not rewritten
        // (tests/wim_metadata.rs covers entries that do).
        assert!(
            !notes.iter().any(|m| m.contains("not rewritten")),
            "{name}: {notes:?}"
        );
        drop(b);
        imagex(&["verify", wim.to_str().unwrap()]);
        check_extracted(wim, "1", &tmp.path().join(format!("x-{name}")));

        // The replaced hive is a new entry with the old one's metadata (its
        // times; no descriptor, as before); an untouched file keeps its
        // entry as it was.
        let after_hive = detailed(wim, "1", HIVES[0]);
        let after_other = detailed(wim, "1", untouched);
        // (The blob's reference count may drop: a replaced hive can have
        // shared its contents.) Same offset: appending left the data in place.
        let entry = |d: &str| -> String {
            d.lines()
                .filter(|l| !l.trim_start().starts_with("Reference Count"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            entry(&before_other),
            entry(&after_other),
            "{name}: untouched entry changed"
        );
        let written = detail_field(&before_hive, "Last Write Time").unwrap();
        assert!(written.contains("2001"), "{name}: {before_hive}");
        let written = detail_field(&after_hive, "Last Write Time").unwrap();
        assert!(
            written.contains("2001"),
            "{name}: times not kept: {after_hive}"
        );
        assert_ne!(
            detail_field(&after_hive, "Hash"),
            detail_field(&before_hive, "Hash"),
            "{name}: contents not replaced"
        );
        assert!(
            detail_field(&after_other, "Last Write Time")
                .unwrap()
                .contains("2001"),
            "{name}: {after_other}"
        );
        assert!(
            !after_hive.contains("Security Descriptor"),
            "{name}: {after_hive}"
        );
        assert!(
            detail_field(&after_hive, "Short Name").is_none_or(|n| n == "\"\""),
            "{name}: {after_hive}"
        );

        let mut b = WimBackend::open(wim, ImageSelector::Index(1)).unwrap();
        let again = generalize(&mut b, &options()).unwrap();
        assert_eq!(again.outcome, Outcome::NothingToDo, "{name}");
    }
}

/// A file that has a security descriptor (wimlib's empty_dacl.wim from
/// the corpus) keeps it when replaced; with metadata keeping off (the
/// fallback when NTFS-3G is not available) it loses it, and the caveat
/// says so, naming the file.
#[test]
fn replaced_file_keeps_its_security_descriptor_or_reports_the_loss() {
    if !have_wimlib_imagex() {
        return;
    }
    let corpus = reseal_testkit::corpus_dir();
    if !reseal_testkit::require(corpus.is_some(), "the shared corpus") {
        return;
    }
    let src = corpus.unwrap().join("wimlib/tests/wims/empty_dacl.wim");
    if !reseal_testkit::require(src.is_file(), &format!("corpus file {}", src.display())) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wim = tmp.path().join("empty_dacl.wim");
    std::fs::copy(&src, &wim).unwrap();
    let b = WimBackend::open(&wim, ImageSelector::Index(1)).unwrap();
    let mut stack = vec![String::new()];
    let mut files = vec![];
    while let Some(d) = stack.pop() {
        for e in b.list(&d).unwrap() {
            let p = reseal::backend::join(&d, &e.name);
            if e.is_dir {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    let with_sd = files
        .iter()
        .find(|f| {
            detailed(&wim, "1", &format!("/{}", f.replace('\\', "/")))
                .contains("Security Descriptor")
        })
        .expect("a file with a security descriptor")
        .clone();
    let wpath = format!("/{}", with_sd.replace('\\', "/"));
    let sd_of = |d: &str| detail_field(d, "Security Descriptor");
    let original_sd = sd_of(&detailed(&wim, "1", &wpath));
    assert!(original_sd.is_some());
    let mut b = b;
    b.commit(&[FileChange::Write {
        path: with_sd.clone(),
        data: b"replaced".to_vec(),
    }])
    .unwrap();
    assert!(b.replaced_paths().is_empty());
    assert!(b.commit_caveats(false).is_empty());
    imagex(&["verify", wim.to_str().unwrap()]);
    let after = detailed(&wim, "1", &wpath);
    assert_eq!(sd_of(&after), original_sd, "{after}");
    assert!(after.contains("Uncompressed size = 8 bytes"), "{after}");

    // The fallback: a plain add, the descriptor lost and reported.
    b.set_keep_metadata(false);
    b.commit(&[FileChange::Write {
        path: with_sd.clone(),
        data: b"replaced again".to_vec(),
    }])
    .unwrap();
    assert_eq!(b.replaced_paths(), std::slice::from_ref(&with_sd));
    let caveats = b.commit_caveats(false);
    assert_eq!(caveats.len(), 1);
    assert!(caveats[0].contains("security descriptor") && caveats[0].contains(&with_sd));
    drop(b);
    imagex(&["verify", wim.to_str().unwrap()]);
    assert!(!detailed(&wim, "1", &wpath).contains("Security Descriptor"));
}

/// A failure injected during commit (after wimlib's update, before the
/// write) leaves a WIM that wimlib still opens, byte-identical, with its
/// original content; the backend reads the original again, and a retry
/// succeeds.
#[test]
fn failure_during_commit_leaves_the_wim_as_it_was() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_root, wim) = fixture(tmp.path());
    let before = std::fs::read(&wim).unwrap();
    let mut b = WimBackend::open(&wim, ImageSelector::Index(1)).unwrap();
    b.set_fail_before_write(true);
    let err = generalize(&mut b, &options()).unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert!(err.to_string().contains("left as it was"), "{err}");
    assert!(std::fs::read(&wim).unwrap() == before, "the WIM changed");
    imagex(&["verify", wim.to_str().unwrap()]);
    let applied = tmp.path().join("applied");
    apply(&wim, &applied);
    assert!(!image_state(&applied).starts_with("IMAGE_STATE_GENERALIZE"));
    let plan = generalize(
        &mut b,
        &GeneralizeOptions {
            dry_run: true,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(plan.outcome, Outcome::Done, "the backend forgot the update");
    b.set_fail_before_write(false);
    assert_eq!(
        generalize(&mut b, &options()).unwrap().outcome,
        Outcome::Done
    );
    drop(b);
    imagex(&["verify", wim.to_str().unwrap()]);
}

/// Solid ESD: opened and read; generalized in place (wimlib appends
/// non-solid resources to it); verify passes; the hives read back.
#[test]
fn solid_esd_is_read_and_generalized() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wims = fixture_wims(tmp.path());
    let esd = &wims[4];
    let b = WimBackend::open(esd, ImageSelector::Index(1)).unwrap();
    assert!(
        b.read(r"windows\system32\config\SYSTEM")
            .unwrap()
            .starts_with(b"regf")
    );
    let mut b = b;
    let report = generalize(&mut b, &options()).unwrap();
    assert_eq!(report.outcome, Outcome::Done, "{}", report.to_text());
    drop(b);
    imagex(&["verify", esd.to_str().unwrap()]);
    check_extracted(esd, "1", &tmp.path().join("x-esd"));
    let mut b = WimBackend::open(esd, ImageSelector::Index(1)).unwrap();
    assert_eq!(
        generalize(&mut b, &options()).unwrap().outcome,
        Outcome::NothingToDo
    );
}
