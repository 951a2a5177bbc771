//! `personalize` and `stamp` on disk images (raw, VHD, VHDX fixtures built
//! by the testkit, generalized first), checked by tools that are not ours:
//! `qemu-img check`/`convert`, `ntfssecaudit` (file descriptors),
//! `ntfscat` (the hives and the answer file), `hivexregedit` (registry
//! content) and a raw byte search of every extracted hive for every form
//! of the template's SID.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use reseal::ResealError;
use reseal::backend::disk::generalize_disk;
use reseal::disk::overlay::OverlayDisk;
use reseal::disk::{Access, PartitionDevice, open_image};
use reseal::ntfs3g::NtfsWriter;
use reseal::options::GeneralizeOptions;
use reseal::personalize::{PersonalizeOptions, personalize};
use reseal::stamp::{CloneNames, StampOptions, stamp};
use reseal_hive::Sid;
use reseal_testkit::{
    DISK_PARTITION_OFFSET, DISK_PARTITION_SIZE, build_disk_images, build_windows_root, require,
    require_tool,
};

struct Fixtures {
    _tmp: tempfile::TempDir,
    /// Generalized images, and the machine SID each was left with.
    images: Vec<(PathBuf, String)>,
}

fn tools() -> bool {
    [
        "qemu-img",
        "ntfssecaudit",
        "ntfscat",
        "hivexregedit",
        "mkntfs",
    ]
    .iter()
    .all(|t| require_tool(t))
}

fn fixtures() -> Option<&'static Fixtures> {
    static F: OnceLock<Option<Fixtures>> = OnceLock::new();
    F.get_or_init(|| {
        if !tools() {
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        build_windows_root(&root, None).unwrap();
        let built = build_disk_images(&root, &tmp.path().join("disk")).unwrap();
        if !require(!built.is_empty(), "disk image fixtures (sfdisk, mkntfs)") {
            return None;
        }
        let mut images = Vec::new();
        for img in built {
            let reports = generalize_disk(
                &img,
                &GeneralizeOptions {
                    seed: Some(3),
                    ..GeneralizeOptions::default()
                },
            )
            .unwrap();
            let sid = reports[0].1.installs[0].sid.as_ref().unwrap().new.clone();
            // A file whose descriptor names the generalized image's SID, as
            // a local account's files do.
            seed_acl(&img, "Windows\\System32\\config\\SAM", &sid);
            images.push((img, sid));
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

fn seed_acl(img: &Path, path: &str, domain: &str) {
    let disk = open_image(img, Access::ReadWrite).unwrap();
    let part = PartitionDevice::new(disk, DISK_PARTITION_OFFSET, DISK_PARTITION_SIZE).unwrap();
    let mut w = NtfsWriter::mount(OverlayDisk::new(part), "seed")
        .map_err(|(e, _)| e)
        .unwrap();
    w.set_security(path, &reseal_testkit::descriptor_owned_by(domain, 1001))
        .unwrap();
    let (res, mut dev) = w.unmount();
    res.unwrap();
    dev.persist().unwrap();
}

/// The NTFS partition of `img` as a file of its own, read by tools that
/// are not ours: libvhdi's `vhdimount` for differencing VHD/VHDX (which
/// qemu cannot open), `qemu-img convert` for everything else.
fn partition_file(img: &Path, dir: &Path) -> PathBuf {
    let ext = img.extension().and_then(|e| e.to_str()).unwrap_or("");
    let part = dir.join(format!(
        "{}.ntfs",
        img.file_name().unwrap().to_string_lossy()
    ));
    let (a, n) = (DISK_PARTITION_OFFSET, DISK_PARTITION_SIZE);
    let differencing = matches!(ext, "vhd" | "vhdx")
        && Command::new("vhdiinfo")
            .arg(img)
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Differential"));
    if differencing {
        let mnt = dir.join(format!(
            "mnt-{}",
            img.file_name().unwrap().to_string_lossy()
        ));
        std::fs::create_dir_all(&mnt).unwrap();
        run("vhdimount", &[img.as_os_str(), mnt.as_os_str()]);
        let copied = (|| -> std::io::Result<()> {
            use std::io::{Read, Seek, SeekFrom};
            // vhdimount shows the chain from the base: the last file is
            // the image itself.
            let mut layers: Vec<PathBuf> = std::fs::read_dir(&mnt)?
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<_>>()?;
            layers.sort_by_key(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.trim_start_matches("vhdi").parse::<u32>().ok())
                    .unwrap_or(0)
            });
            let last = layers.last().cloned().unwrap_or_default();
            let mut f = std::fs::File::open(last)?;
            f.seek(SeekFrom::Start(a))?;
            let mut buf = vec![0u8; n as usize];
            f.read_exact(&mut buf)?;
            std::fs::write(&part, &buf)
        })();
        let _ = Command::new("fusermount").arg("-u").arg(&mnt).status();
        let _ = Command::new("umount").arg(&mnt).status();
        copied.unwrap();
        return part;
    }
    let raw = dir.join("converted.raw");
    let _ = std::fs::remove_file(&raw);
    let fmt = match ext {
        "vhd" => "vpc",
        "vhdx" => "vhdx",
        "qcow2" => "qcow2",
        _ => "raw",
    };
    run(
        "qemu-img",
        &[
            "convert".as_ref(),
            "-f".as_ref(),
            fmt.as_ref(),
            "-O".as_ref(),
            "raw".as_ref(),
            img.as_os_str(),
            raw.as_os_str(),
        ],
    );
    let all = std::fs::read(&raw).unwrap();
    std::fs::write(&part, &all[a as usize..(a + n) as usize]).unwrap();
    std::fs::remove_file(&raw).unwrap();
    part
}

fn ntfscat(part: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("ntfscat")
        .arg(part)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ntfscat {path}");
    out.stdout
}

/// Every byte form of a machine SID a hive can hold: binary, the three
/// sub-authorities in a row, UTF-16LE and ASCII text.
fn sid_forms(sid: &str) -> Vec<Vec<u8>> {
    let s: Sid = sid.parse().unwrap();
    let bin = s.to_bytes();
    let subs = bin[bin.len() - 12..].to_vec();
    let utf16: Vec<u8> = sid.encode_utf16().flat_map(u16::to_le_bytes).collect();
    vec![bin, subs, utf16, sid.as_bytes().to_vec()]
}

/// How hivexregedit exports a REG_SZ value `name` = `text`.
fn sz_line(name: &str, text: &str) -> String {
    let hex: Vec<String> = text
        .encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{name}\"=hex(1):{}", hex.join(","))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// What an independent toolchain reads from a personalized disk: the
/// machine SID bytes (PolAcDmS, via hivexregedit), the computer name and
/// the answer file; and it checks that the template SID is nowhere.
struct Seen {
    export_security: String,
    export_system: String,
    unattend: String,
}

fn read_back(img: &Path, dir: &Path, template_sid: &str) -> Seen {
    let ext = img.extension().unwrap().to_string_lossy().to_string();
    // qemu-img checks VHDX; for VHD (which it cannot check) the convert
    // below must read every block.
    if ext == "vhdx" || ext == "qcow2" {
        let differencing = Command::new("vhdiinfo")
            .arg(img)
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Differential"));
        if !differencing {
            let check = run("qemu-img", &["check".as_ref(), img.as_os_str()]);
            assert!(check.contains("No errors"), "{ext}: {check}");
        }
    }
    let part = partition_file(img, dir);
    let audit = run("ntfssecaudit", &["-a".as_ref(), part.as_os_str()]);
    assert!(audit.contains("No errors were found"), "{ext}: {audit}");
    let sam_acl = run(
        "ntfssecaudit",
        &[part.as_os_str(), "/Windows/System32/config/SAM".as_ref()],
    );
    assert!(!sam_acl.contains(template_sid), "{ext}: {sam_acl}");
    assert!(sam_acl.contains("-1001"), "{ext}: {sam_acl}");
    let mut exports = Vec::new();
    for hive in ["SYSTEM", "SOFTWARE", "SAM", "SECURITY"] {
        let data = ntfscat(&part, &format!("/Windows/System32/config/{hive}"));
        for form in sid_forms(template_sid) {
            assert!(
                !contains(&data, &form),
                "{ext} {hive}: a form of the template SID remains"
            );
        }
        let h = dir.join(format!("{ext}-{hive}"));
        std::fs::write(&h, &data).unwrap();
        exports.push(run(
            "hivexregedit",
            &["--export".as_ref(), h.as_os_str(), "\\".as_ref()],
        ));
    }
    let unattend =
        String::from_utf8_lossy(&ntfscat(&part, "/Windows/Panther/unattend.xml")).replace('\0', "");
    std::fs::remove_file(&part).unwrap();
    Seen {
        export_system: exports[0].clone(),
        export_security: exports[3].clone(),
        unattend,
    }
}

/// The `PolAcDmS` value line of a SECURITY export.
fn polacdms(export: &str) -> String {
    let at = export.find("[\\Policy\\PolAcDmS]").expect("PolAcDmS key");
    export[at..].lines().nth(1).unwrap_or_default().to_string()
}

#[test]
fn personalize_each_disk_kind_in_place() {
    let Some(f) = fixtures() else { return };
    for (src, template_sid) in &f.images {
        let tmp = tempfile::tempdir().unwrap();
        let ext = src.extension().unwrap().to_string_lossy().to_string();
        let mut seen_sids = Vec::new();
        for (i, name) in ["WEB-1", "WEB-2"].iter().enumerate() {
            let img = tmp.path().join(format!("{name}.{ext}"));
            std::fs::copy(src, &img).unwrap();
            let before = std::fs::read(src).unwrap();
            let out = personalize(
                &img,
                None,
                &PersonalizeOptions {
                    name: Some(name.to_string()),
                    seed: Some(10 + i as u64),
                    ..PersonalizeOptions::default()
                },
            )
            .unwrap();
            assert_eq!(out.len(), 1, "{ext}");
            let r = &out[0];
            assert_eq!(r.sid[0].old, *template_sid, "{ext}");
            assert_ne!(r.sid[0].new, *template_sid, "{ext}");
            assert_eq!(std::fs::read(src).unwrap(), before, "{ext}: source changed");
            let seen = read_back(&img, tmp.path(), template_sid);
            assert!(
                seen.export_system.contains(&sz_line("ComputerName", name)),
                "{ext}: computer name not in SYSTEM"
            );
            assert!(
                seen.unattend
                    .contains(&format!("<ComputerName>{name}</ComputerName>")),
                "{ext}: {}",
                seen.unattend
            );
            let new: Sid = r.sid[0].new.parse().unwrap();
            let hex: Vec<String> = new.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
            let line = polacdms(&seen.export_security);
            assert!(line.contains(&hex.join(",")), "{ext}: {line}");
            seen_sids.push(line);
        }
        assert_ne!(seen_sids[0], seen_sids[1], "{ext}: two copies share a SID");
    }
}

#[test]
fn personalize_refuses_an_image_that_is_not_generalized() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let built = build_disk_images(&root, &tmp.path().join("disk")).unwrap();
    let Some(img) = built
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "vhdx"))
    else {
        panic!("no VHDX fixture");
    };
    let before = std::fs::read(img).unwrap();
    let e = personalize(img, None, &PersonalizeOptions::default()).unwrap_err();
    assert!(matches!(e, ResealError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("not generalized"), "{e}");
    assert_eq!(std::fs::read(img).unwrap(), before);
    // --force personalizes it anyway.
    let out = personalize(
        img,
        None,
        &PersonalizeOptions {
            force: true,
            ..PersonalizeOptions::default()
        },
    )
    .unwrap();
    assert_eq!(out.len(), 1);
}

#[test]
fn stamp_full_copies_of_a_disk() {
    let Some(f) = fixtures() else { return };
    let (src, template_sid) = f
        .images
        .iter()
        .find(|(p, _)| p.extension().is_some_and(|e| e == "raw"))
        .expect("raw fixture");
    let tmp = tempfile::tempdir().unwrap();
    let before = std::fs::read(src).unwrap();
    let mut o = StampOptions::new(
        tmp.path().join("out"),
        2,
        CloneNames::Pattern("APP-{n}".into()),
    );
    o.seed = Some(5);
    let report = stamp(src, &o).unwrap();
    assert_eq!(std::fs::read(src).unwrap(), before, "source changed");
    assert_eq!(report.clones.len(), 2);
    let mut lines = Vec::new();
    for c in &report.clones {
        assert_eq!(
            c.file,
            tmp.path()
                .join("out")
                .canonicalize()
                .unwrap()
                .join(format!("{}.raw", c.name))
        );
        assert_eq!(c.clone_kind, "copy");
        assert!(c.allocated_bytes < std::fs::metadata(src).unwrap().len());
        let seen = read_back(&c.file, tmp.path(), template_sid);
        lines.push(polacdms(&seen.export_security));
        assert!(
            seen.export_system
                .contains(&sz_line("ComputerName", &c.name))
        );
    }
    assert_ne!(lines[0], lines[1]);
    // No partial clone is left behind.
    let names: Vec<String> = std::fs::read_dir(tmp.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn stamp_a_wim_into_one_new_wim_of_personalized_images() {
    if !(require_tool("wimlib-imagex") && require_tool("hivexregedit")) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let wims = reseal_testkit::build_wims(&root, &tmp.path().join("wim")).unwrap();
    let src = wims
        .iter()
        .find(|p| p.to_string_lossy().contains("lzx"))
        .expect("LZX fixture")
        .clone();
    let reports = reseal::backend::wim::generalize_all_images(
        &src,
        None,
        false,
        &GeneralizeOptions {
            seed: Some(4),
            ..GeneralizeOptions::default()
        },
    )
    .unwrap();
    let template_sid = reports[0].installs[0].sid.as_ref().unwrap().new.clone();
    let before = std::fs::read(&src).unwrap();
    let out = tmp.path().join("clones.wim");
    let mut o = StampOptions::new(
        &out,
        2,
        CloneNames::List(vec!["PC-A".into(), "PC-B".into()]),
    );
    o.seed = Some(9);
    let report = stamp(&src, &o).unwrap();
    assert_eq!(std::fs::read(&src).unwrap(), before, "source changed");
    assert_eq!(report.clones.len(), 2);
    let verify = run("wimlib-imagex", &["verify".as_ref(), out.as_os_str()]);
    assert!(verify.contains("successfully verified"), "{verify}");
    let info = run("wimlib-imagex", &["info".as_ref(), out.as_os_str()]);
    assert!(info.contains("Image Count:    2"), "{info}");
    let mut lines = Vec::new();
    for (i, name) in ["PC-A", "PC-B"].iter().enumerate() {
        assert!(
            info.contains(&format!("Name:                   {name}")),
            "{info}"
        );
        let dest = tmp.path().join(format!("x{i}"));
        run(
            "wimlib-imagex",
            &[
                "extract".as_ref(),
                out.as_os_str(),
                format!("{}", i + 1).as_ref(),
                "/Windows/System32/config/SECURITY".as_ref(),
                "/Windows/System32/config/SYSTEM".as_ref(),
                "/Windows/System32/config/SAM".as_ref(),
                "/Windows/System32/config/SOFTWARE".as_ref(),
                format!("--dest-dir={}", dest.display()).as_ref(),
                "--no-acls".as_ref(),
            ],
        );
        for hive in ["SECURITY", "SYSTEM", "SAM", "SOFTWARE"] {
            let data = std::fs::read(dest.join(hive)).unwrap();
            for form in sid_forms(&template_sid) {
                assert!(
                    !contains(&data, &form),
                    "image {}: {hive} keeps the template SID",
                    i + 1
                );
            }
        }
        let sec = run(
            "hivexregedit",
            &[
                "--export".as_ref(),
                dest.join("SECURITY").as_os_str(),
                "\\".as_ref(),
            ],
        );
        let sys = run(
            "hivexregedit",
            &[
                "--export".as_ref(),
                dest.join("SYSTEM").as_os_str(),
                "\\".as_ref(),
            ],
        );
        assert!(
            sys.contains(&sz_line("ComputerName", name)),
            "image {}",
            i + 1
        );
        lines.push(polacdms(&sec));
    }
    assert_ne!(lines[0], lines[1], "two images share a SID");
    assert!(!tmp.path().join(".clones.wim.reseal-partial").exists());
}

#[test]
fn stamp_linked_clones_of_vhdx_vhd_and_qcow2() {
    let Some(f) = fixtures() else { return };
    if !(require_tool("vhdimount") && require_tool("vhdiinfo")) {
        return;
    }
    let raw = f
        .images
        .iter()
        .find(|(p, _)| p.extension().is_some_and(|e| e == "raw"))
        .expect("raw fixture");
    for (ext, from) in [("vhdx", None), ("vhd", None), ("qcow2", Some(raw))] {
        let tmp = tempfile::tempdir().unwrap();
        // The template, beside its clones (libvhdi finds a parent by its
        // file name in the child's folder).
        let (template, template_sid) = match from {
            None => {
                let (p, sid) = f
                    .images
                    .iter()
                    .find(|(p, _)| p.extension().is_some_and(|e| e == ext))
                    .expect("fixture");
                let t = tmp.path().join(format!("template.{ext}"));
                std::fs::copy(p, &t).unwrap();
                (t, sid.clone())
            }
            Some((p, sid)) => {
                let t = tmp.path().join("template.qcow2");
                run(
                    "qemu-img",
                    &[
                        "convert".as_ref(),
                        "-f".as_ref(),
                        "raw".as_ref(),
                        "-O".as_ref(),
                        "qcow2".as_ref(),
                        p.as_os_str(),
                        t.as_os_str(),
                    ],
                );
                (t, sid.clone())
            }
        };
        let before = std::fs::read(&template).unwrap();
        let mut o = StampOptions::new(tmp.path(), 2, CloneNames::Pattern("VM-{n}".into()));
        o.seed = Some(21);
        let report = stamp(&template, &o).unwrap();
        assert_eq!(
            std::fs::read(&template).unwrap(),
            before,
            "{ext}: template changed"
        );
        let template_alloc = reseal::stamp::allocated_bytes(&template);
        let mut lines = Vec::new();
        for c in &report.clones {
            assert_eq!(c.clone_kind, "linked", "{ext}");
            assert_eq!(c.file.extension().unwrap(), ext);
            assert!(
                c.allocated_bytes < template_alloc,
                "{ext}: clone {} bytes, template {template_alloc}",
                c.allocated_bytes
            );
            if ext == "qcow2" {
                let info = run("qemu-img", &["info".as_ref(), c.file.as_os_str()]);
                assert!(info.contains("backing file: template.qcow2"), "{info}");
            } else {
                let info = run("vhdiinfo", &[c.file.as_os_str()]);
                assert!(info.contains("Differential"), "{info}");
                assert!(info.contains("template"), "{info}");
            }
            let seen = read_back(&c.file, tmp.path(), &template_sid);
            assert!(
                seen.export_system
                    .contains(&sz_line("ComputerName", &c.name)),
                "{ext}"
            );
            assert!(
                seen.unattend
                    .contains(&format!("<ComputerName>{}</ComputerName>", c.name)),
                "{ext}"
            );
            lines.push(polacdms(&seen.export_security));
        }
        assert_ne!(lines[0], lines[1], "{ext}: two clones share a SID");
    }
}
