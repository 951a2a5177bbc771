//! Generalizing disk images (raw, VHD, VHDX fixtures built by the testkit)
//! in place, checked by tools that are not ours: `qemu-img check` (VHDX)
//! and `qemu-img convert`, `ntfsfix -n`, `ntfssecaudit -a` (the `$Secure`
//! audit), `ntfscat` to extract the hives, and hivexregedit and regfexport
//! to read them. File ACLs that named the old machine SID name the new
//! one; a second run plans nothing; a failure before the write leaves the
//! image byte-identical.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use reseal::backend::Backend;
use reseal::backend::disk::{DiskBackend, generalize_disk, windows_partitions};
use reseal::disk::overlay::OverlayDisk;
use reseal::disk::{Access, PartitionDevice, open_image};
use reseal::generalize::{generalize, inspect};
use reseal::ntfs3g::NtfsWriter;
use reseal::options::{GeneralizeOptions, SidChoice};
use reseal_testkit::{
    DISK_PARTITION_OFFSET, DISK_PARTITION_SIZE, SAMPLE_MACHINE_SID, build_disk_images,
    build_two_install_disk, build_windows_root, have,
};

const NEW_SID: &str = "S-1-5-21-1111111111-2222222222-3333333333";

struct Fixtures {
    _tmp: tempfile::TempDir,
    images: Vec<PathBuf>,
}

fn fixtures() -> Option<&'static Fixtures> {
    static F: OnceLock<Option<Fixtures>> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        build_windows_root(&root, None).unwrap();
        let images = build_disk_images(&root, &tmp.path().join("disk")).unwrap();
        if !reseal_testkit::require(
            !images.is_empty() && have("ntfssecaudit") && have("hivexregedit"),
            "disk image tools, ntfssecaudit and hivexregedit (cargo xtask setup)",
        ) {
            return None;
        }
        Some(Fixtures { _tmp: tmp, images })
    })
    .as_ref()
}

fn run(cmd: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} {args:?}: {text}");
    text
}

/// Gives a file of the image a descriptor naming the old machine SID.
fn seed_acl(img: &Path, path: &str) {
    let disk = open_image(img, Access::ReadWrite).unwrap();
    let part = PartitionDevice::new(disk, DISK_PARTITION_OFFSET, DISK_PARTITION_SIZE).unwrap();
    let mut w = NtfsWriter::mount(OverlayDisk::new(part), "seed")
        .map_err(|(e, _)| e)
        .unwrap();
    w.set_security(
        path,
        &reseal_testkit::descriptor_owned_by(SAMPLE_MACHINE_SID, 1001),
    )
    .unwrap();
    let (res, mut dev) = w.unmount();
    res.unwrap();
    dev.persist().unwrap();
}

/// The NTFS partition of `img` as a file of its own (through qemu-img, not
/// our block layer).
fn partition_file(img: &Path, dir: &Path) -> PathBuf {
    let raw = dir.join("converted.raw");
    run(
        "qemu-img",
        &[
            "convert".as_ref(),
            "-O".as_ref(),
            "raw".as_ref(),
            img.as_os_str(),
            raw.as_os_str(),
        ],
    );
    let all = std::fs::read(&raw).unwrap();
    let part = dir.join("partition.ntfs");
    let (a, n) = (DISK_PARTITION_OFFSET as usize, DISK_PARTITION_SIZE as usize);
    std::fs::write(&part, &all[a..a + n]).unwrap();
    std::fs::remove_file(&raw).unwrap();
    part
}

fn options() -> GeneralizeOptions {
    GeneralizeOptions {
        sid: SidChoice::Given(NEW_SID.into()),
        seed: Some(7),
        ..GeneralizeOptions::default()
    }
}

#[test]
fn generalize_raw_vhd_vhdx_in_place() {
    let Some(f) = fixtures() else { return };
    for src in &f.images {
        let tmp = tempfile::tempdir().unwrap();
        let img = reseal_testkit::copy_into(src, tmp.path());
        let ext = img.extension().unwrap().to_string_lossy().to_string();
        let acl_file = "Windows\\System32\\config\\SAM";
        seed_acl(&img, acl_file);

        let mut b = DiskBackend::open(&img, None).unwrap();
        let report = generalize(&mut b, &options()).unwrap();
        assert_eq!(format!("{:?}", report.outcome), "Done", "{ext}");
        let caveats: Vec<&str> = report.installs[0]
            .not_done
            .iter()
            .map(|n| n.message.as_str())
            .collect();
        assert!(
            caveats
                .iter()
                .any(|c| c.starts_with("file security: ") && !c.starts_with("file security: 0 ")),
            "{ext}: {caveats:?}"
        );
        // Our reader (the ntfs crate) sees the new SID, and a second run
        // plans nothing.
        let b = DiskBackend::open(&img, None).unwrap();
        let installs = inspect(&b).unwrap();
        assert_eq!(
            installs[0].description.machine_sid.as_deref(),
            Some(NEW_SID),
            "{ext}"
        );
        let mut b = b;
        let again = generalize(
            &mut b,
            &GeneralizeOptions {
                dry_run: true,
                ..options()
            },
        )
        .unwrap();
        let edits: usize = again.installs.iter().map(|i| i.edits.len()).sum();
        assert_eq!(
            edits, 0,
            "{ext}: second run plans {:?}",
            again.installs[0].edits
        );

        // The container, checked by qemu-img.
        if ext == "vhdx" {
            run("qemu-img", &["check".as_ref(), img.as_os_str()]);
        }
        let info = run("qemu-img", &["info".as_ref(), img.as_os_str()]);
        assert!(info.contains("virtual size"), "{info}");

        // The volume, checked by ntfs-3g's tools.
        let part = partition_file(&img, tmp.path());
        let fix = run("ntfsfix", &["-n".as_ref(), part.as_os_str()]);
        assert!(!fix.contains("corrupt"), "{ext}: ntfsfix -n: {fix}");
        let audit = run("ntfssecaudit", &["-a".as_ref(), part.as_os_str()]);
        assert!(audit.contains("No errors were found"), "{ext}: {audit}");
        let sam_acl = run(
            "ntfssecaudit",
            &[part.as_os_str(), "/Windows/System32/config/SAM".as_ref()],
        );
        assert!(
            sam_acl.contains(&format!("Windows owner {NEW_SID}-1001")),
            "{ext}: {sam_acl}"
        );
        assert!(!sam_acl.contains(SAMPLE_MACHINE_SID), "{ext}: {sam_acl}");

        // The hives, extracted by ntfscat and read by hivex and libregf.
        for hive in ["SYSTEM", "SOFTWARE", "SAM", "SECURITY"] {
            let out = Command::new("ntfscat")
                .arg(&part)
                .arg(format!("/Windows/System32/config/{hive}"))
                .output()
                .unwrap();
            assert!(out.status.success(), "{ext}: ntfscat {hive}");
            let h = tmp.path().join(hive);
            std::fs::write(&h, &out.stdout).unwrap();
            assert_eq!(&out.stdout[..4], b"regf", "{ext} {hive}");
            let export = run(
                "hivexregedit",
                &["--export".as_ref(), h.as_os_str(), "\\".as_ref()],
            );
            assert!(
                !export.contains(SAMPLE_MACHINE_SID),
                "{ext} {hive}: old SID in hivex export"
            );
            if have("regfexport") {
                run("regfexport", &[h.as_os_str()]);
            }
        }
    }
}

#[test]
fn failure_before_the_write_leaves_the_image_untouched() {
    let Some(f) = fixtures() else { return };
    for src in &f.images {
        let tmp = tempfile::tempdir().unwrap();
        let img = reseal_testkit::copy_into(src, tmp.path());
        let before = std::fs::read(&img).unwrap();
        let mut b = DiskBackend::open(&img, None).unwrap();
        // Renaming onto an existing file fails inside the NTFS session,
        // after earlier changes in the same commit were applied there.
        let err = b
            .commit(&[
                reseal::backend::FileChange::Write {
                    path: "Windows\\System32\\config\\SYSTEM".into(),
                    data: b"regf-not-really".to_vec(),
                },
                reseal::backend::FileChange::Rename {
                    from: "Windows\\System32\\config\\SAM".into(),
                    to: "Windows\\System32\\config\\SECURITY".into(),
                },
            ])
            .unwrap_err();
        assert!(err.to_string().contains("destination exists"), "{err}");
        assert!(
            std::fs::read(&img).unwrap() == before,
            "{} changed",
            img.display()
        );
        // The backend still reads the original.
        assert_eq!(
            b.read_head("Windows\\System32\\config\\SYSTEM", 4).unwrap(),
            b"regf"
        );
    }
}

#[test]
fn every_install_on_a_disk_is_generalized() {
    if fixtures().is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (r1, r2) = (tmp.path().join("r1"), tmp.path().join("r2"));
    build_windows_root(&r1, None).unwrap();
    build_windows_root(&r2, Some("domain-joined")).unwrap();
    let opts = GeneralizeOptions {
        sid: SidChoice::Random,
        seed: Some(11),
        ..GeneralizeOptions::default()
    };
    // The second install is refused (domain-joined): nothing is written to
    // either partition.
    let img = build_two_install_disk(&r1, &r2, &tmp.path().join("refused"))
        .unwrap()
        .unwrap();
    let before = std::fs::read(&img).unwrap();
    let reports = generalize_disk(&img, &opts).unwrap();
    assert_eq!(format!("{:?}", reports[1].1.outcome), "Refused");
    assert!(
        std::fs::read(&img).unwrap() == before,
        "written despite a refusal"
    );

    std::fs::remove_dir_all(&r2).unwrap();
    build_windows_root(&r2, None).unwrap();
    let img = build_two_install_disk(&r1, &r2, &tmp.path().join("disk"))
        .unwrap()
        .unwrap();
    assert_eq!(windows_partitions(&img).unwrap(), vec![1, 2]);
    // One --sid for two installs is refused before anything is written.
    let before = std::fs::read(&img).unwrap();
    let e = generalize_disk(&img, &options()).unwrap_err();
    assert!(e.to_string().contains("must not share one"), "{e}");
    assert!(std::fs::read(&img).unwrap() == before);

    let opts = GeneralizeOptions {
        sid: SidChoice::Random,
        seed: Some(11),
        ..GeneralizeOptions::default()
    };
    let reports = generalize_disk(&img, &opts).unwrap();
    assert_eq!(
        reports.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let mut sids = Vec::new();
    for (n, r) in &reports {
        assert_eq!(format!("{:?}", r.outcome), "Done", "partition {n}");
        let b = DiskBackend::open(&img, Some(*n)).unwrap();
        let sid = inspect(&b).unwrap()[0]
            .description
            .machine_sid
            .clone()
            .unwrap();
        assert_ne!(sid, SAMPLE_MACHINE_SID, "partition {n} kept the old SID");
        sids.push(sid);
    }
    assert_ne!(sids[0], sids[1], "the two installs share a SID");
    run("qemu-img", &["check".as_ref(), img.as_os_str()]);
}
