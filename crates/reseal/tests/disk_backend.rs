//! The read-only disk backend: raw, VHD and VHDX fixtures (a GPT disk with
//! one NTFS partition holding the synthetic Windows root, built with
//! sfdisk, mkntfs, wimlib-imagex and qemu-img) inspect and plan like the
//! directory root; BitLocker and dirty volumes are refused; a commit
//! that changes nothing writes nothing; Windows-made images from the corpus list their files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use reseal::ResealError;
use reseal::backend::dir::DirBackend;
use reseal::backend::disk::DiskBackend;
use reseal::backend::{Backend, FileChange};
use reseal::generalize::{generalize, inspect};
use reseal::options::{GeneralizeOptions, SidChoice};
use reseal_testkit::{
    DISK_PARTITION_OFFSET, SAMPLE_MACHINE_SID, build_disk_images, build_windows_root,
};

struct Fixtures {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    images: Vec<PathBuf>,
}

/// Builds the root and the disk images once per test binary; `None` when
/// a tool is missing (the testkit prints a notice).
fn fixtures() -> Option<&'static Fixtures> {
    static F: OnceLock<Option<Fixtures>> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        build_windows_root(&root, None).unwrap();
        let images = build_disk_images(&root, &tmp.path().join("disk")).unwrap();
        if !reseal_testkit::require(!images.is_empty(), "disk image tools (qemu-img)") {
            return None;
        }
        Some(Fixtures {
            _tmp: tmp,
            root,
            images,
        })
    })
    .as_ref()
}

fn hash(p: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(p).unwrap().hash(&mut h);
    h.finish()
}

fn dry_run() -> GeneralizeOptions {
    GeneralizeOptions {
        dry_run: true,
        sid: SidChoice::Given("S-1-5-21-1111111111-2222222222-3333333333".into()),
        seed: Some(7),
        ..GeneralizeOptions::default()
    }
}

/// The edits a dry run plans, as "operation: edit" lines, sorted (the
/// directory and NTFS list entries in different orders).
fn planned(b: &mut dyn Backend) -> Vec<String> {
    let r = generalize(b, &dry_run()).unwrap();
    let mut lines: Vec<String> = r
        .installs
        .iter()
        .flat_map(|i| {
            i.edits
                .iter()
                .map(|e| format!("{}: {:?}", e.operation, e.edit))
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn raw_vhd_vhdx_inspect_and_plan_like_the_directory() {
    let Some(f) = fixtures() else { return };
    let mut dir = DirBackend::open(&f.root).unwrap();
    let want = planned(&mut dir);
    assert!(!want.is_empty());
    for img in &f.images {
        let before = hash(img);
        let mut b = DiskBackend::open(img, None).unwrap();
        assert_eq!(b.partition(), 1, "{}", img.display());
        assert!(b.is_dir("windows\\SYSTEM32\\Config"));
        assert!(b.exists("Windows/System32/config/SYSTEM"));
        assert!(!b.exists("Windows\\nope"));
        assert_eq!(
            b.read("Windows\\System32\\config\\SYSTEM").unwrap(),
            std::fs::read(f.root.join("Windows/System32/config/SYSTEM")).unwrap()
        );
        assert_eq!(
            b.read_head("Windows\\System32\\config\\SYSTEM", 4).unwrap(),
            b"regf"
        );
        let names: Vec<String> = b.list("").unwrap().into_iter().map(|e| e.name).collect();
        assert!(names.iter().any(|n| n == "Windows"), "{names:?}");
        assert!(names.iter().any(|n| n == "$Recycle.Bin"), "{names:?}");
        assert!(!names.iter().any(|n| n == "$MFT"), "{names:?}");
        let installs = inspect(&b).unwrap();
        assert_eq!(installs.len(), 1);
        assert_eq!(
            installs[0].description.machine_sid.as_deref(),
            Some(SAMPLE_MACHINE_SID),
            "{}",
            img.display()
        );
        assert_eq!(planned(&mut b), want, "{}", img.display());
        // Deleting a file that is not there changes nothing, not a byte.
        b.commit(&[FileChange::Delete {
            path: "Windows\\x".into(),
        }])
        .unwrap();
        assert_eq!(hash(img), before, "{} was modified", img.display());
    }
}

#[test]
fn partition_option_and_missing_partition() {
    let Some(f) = fixtures() else { return };
    let b = DiskBackend::open(&f.images[0], Some(1)).unwrap();
    assert!(b.exists("Windows"));
    let e = DiskBackend::open(&f.images[0], Some(4)).unwrap_err();
    assert!(e.to_string().contains("no partition 4"), "{e}");
}

fn patched_copy(src: &Path, name: &str, patch: impl FnOnce(&mut [u8])) -> PathBuf {
    let dir = src.parent().unwrap().join("patched");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let mut data = std::fs::read(src).unwrap();
    patch(&mut data);
    std::fs::write(&p, data).unwrap();
    p
}

#[test]
fn bitlocker_is_refused() {
    let Some(f) = fixtures() else { return };
    let p = patched_copy(&f.images[0], "bitlocker.raw", |d| {
        let at = DISK_PARTITION_OFFSET as usize + 3;
        d[at..at + 8].copy_from_slice(b"-FVE-FS-");
    });
    let before = hash(&p);
    for part in [None, Some(1)] {
        let e = DiskBackend::open(&p, part).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("BitLocker") && m.contains("manage-bde"), "{m}");
        assert!(m.contains("bitlocker.raw"), "{m}");
    }
    assert_eq!(hash(&p), before);
}

/// Sets the dirty bit in the $VOLUME_INFORMATION of $Volume (MFT record 3).
fn set_dirty(d: &mut [u8]) {
    let base = DISK_PARTITION_OFFSET as usize;
    let rd16 = |d: &[u8], at: usize| u16::from_le_bytes([d[at], d[at + 1]]) as usize;
    let rd32 = |d: &[u8], at: usize| u32::from_le_bytes(d[at..at + 4].try_into().unwrap()) as usize;
    let bps = rd16(d, base + 0x0B);
    let spc = d[base + 0x0D] as usize;
    let cluster = bps * spc;
    let mft_lcn = u64::from_le_bytes(d[base + 0x30..base + 0x38].try_into().unwrap()) as usize;
    let cpr = d[base + 0x40] as i8;
    let rec_size = if cpr < 0 {
        1usize << (-cpr)
    } else {
        cpr as usize * cluster
    };
    let rec = base + mft_lcn * cluster + 3 * rec_size;
    assert_eq!(&d[rec..rec + 4], b"FILE");
    let mut a = rec + rd16(d, rec + 0x14);
    loop {
        let ty = rd32(d, a);
        assert_ne!(ty, 0xFFFF_FFFF, "no $VOLUME_INFORMATION");
        if ty == 0x70 {
            let v = a + rd16(d, a + 0x14);
            d[v + 10] |= 1;
            return;
        }
        a += rd32(d, a + 4);
    }
}

#[test]
fn dirty_volume_is_refused() {
    let Some(f) = fixtures() else { return };
    let p = patched_copy(&f.images[0], "dirty.raw", set_dirty);
    let before = hash(&p);
    for part in [None, Some(1)] {
        let e = DiskBackend::open(&p, part).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("dirty") && m.contains("chkdsk"), "{m}");
        assert!(m.contains("dirty.raw"), "{m}");
    }
    assert_eq!(hash(&p), before);
}

#[test]
fn disk_without_ntfs_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("empty.img");
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    let e = DiskBackend::open(&p, None).unwrap_err();
    assert!(e.to_string().contains("no NTFS partition"), "{e}");
}

fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("RESEAL_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"));
    dir.is_dir().then_some(dir)
}

/// Windows-made VHD/VHDX files and a bare NTFS volume from the corpus:
/// no Windows install (a clear error), but the NTFS files list.
#[test]
fn corpus_images_list_their_ntfs_files() {
    let c = corpus();
    if !reseal_testkit::require(c.is_some(), "the shared corpus") {
        return;
    }
    let c = c.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for rel in [
        "dissect.hypervisor/tests/_data/disk/vhd/fixed.vhd.gz",
        "dissect.hypervisor/tests/_data/disk/vhd/dynamic.vhd.gz",
        "dissect.hypervisor/tests/_data/disk/vhdx/fixed.vhdx.gz",
        "dissect.hypervisor/tests/_data/disk/vhdx/dynamic.vhdx.gz",
        "dissect.ntfs-pypi-sdist/tests/_data/ntfs.bin.gz",
    ] {
        let src = c.join(rel);
        if !reseal_testkit::require(src.is_file(), &format!("corpus file {}", src.display())) {
            continue;
        }
        let name = src.file_stem().unwrap().to_string_lossy().into_owned();
        let name = if name.ends_with(".bin") {
            name.replace(".bin", ".img")
        } else {
            name
        };
        let out = tmp.path().join(&name);
        let o = Command::new("gzip").arg("-dc").arg(&src).output().unwrap();
        assert!(o.status.success());
        std::fs::write(&out, o.stdout).unwrap();
        let before = hash(&out);
        let e = DiskBackend::open(&out, None).unwrap_err();
        assert!(
            matches!(e, ResealError::NoInstall { .. }),
            "{name}: expected no Windows installation, got {e}"
        );
        assert!(e.to_string().contains("no Windows installation"), "{e}");
        let mut listed = false;
        for n in 0..8 {
            let Ok(b) = DiskBackend::open(&out, Some(n)) else {
                continue;
            };
            let entries = b.list("").unwrap();
            println!("{name} partition {n}: {entries:?}");
            // NTFS metadata files are hidden from listings but readable.
            assert!(b.exists("$mft") && !b.is_dir("$MFT"), "{name}");
            assert_eq!(b.read_head("$AttrDef", 4).unwrap(), b"$\0S\0", "{name}");
            assert_eq!(b.read("$UpCase").unwrap().len(), 131072, "{name}");
            assert!(matches!(
                b.read("no\\such\\file"),
                Err(ResealError::NotFound { .. })
            ));
            for e in entries.iter().filter(|e| !e.is_dir).take(3) {
                assert_eq!(b.read(&e.name).unwrap().len() as u64, e.size);
            }
            if name == "ntfs.img" {
                let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
                assert!(names.contains(&"File.txt") && names.contains(&"Large Directory"));
                assert!(!b.list("large directory").unwrap().is_empty());
            }
            listed = true;
        }
        assert!(listed, "{name}: no NTFS partition opened");
        assert_eq!(hash(&out), before, "{name} was modified");
        seen += 1;
    }
    println!("{seen} corpus images checked");
    assert!(seen > 0, "no corpus image was checked");
}
