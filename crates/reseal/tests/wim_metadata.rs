//! Files reseal replaces in a WIM keep their metadata: a WIM captured from
//! an NTFS volume (so its entries carry security descriptors, attributes,
//! short names, named streams and Windows times) is generalized, and
//! `wimlib-imagex dir --detailed` shows every replaced hive and emptied log
//! with the same metadata as before and new contents; directories keep
//! theirs; `wimlib-imagex verify` passes; the hives extracted by wimlib
//! read with hivex; the image's XML last-modification time changes.

use std::path::{Path, PathBuf};
use std::process::Command;

use reseal::backend::Backend;
use reseal::backend::wim::{ImageSelector, WimBackend};
use reseal::disk::Access;
use reseal::disk::raw::RawDisk;
use reseal::generalize::generalize;
use reseal::ntfs3g::{FileMetadata, NtfsWriter};
use reseal::options::{GeneralizeOptions, SidChoice};
use reseal_testkit::{
    DISK_PARTITION_OFFSET, DISK_PARTITION_SIZE, SAMPLE_MACHINE_SID, build_disk_images,
    build_windows_root,
};

fn run(cmd: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} {args:?}: {text}");
    text
}

/// A descriptor owned by SYSTEM, group Administrators, one ACE granting
/// Administrators full control (no machine SID in it).
fn sd() -> Vec<u8> {
    let system = [1u8, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0];
    let admins = [1u8, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0];
    let mut ace = vec![0u8, 0x03, 24, 0];
    ace.extend_from_slice(&0x001F01FFu32.to_le_bytes());
    ace.extend_from_slice(&admins);
    let mut acl = vec![2u8, 0, 32, 0, 1, 0, 0, 0];
    acl.extend(ace);
    let mut out = vec![1u8, 0, 0x04, 0x80];
    for x in [20u32, 32, 0, 48] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(&system);
    out.extend_from_slice(&admins);
    out.extend(acl);
    out
}

/// A descriptor owned by the sample machine's account RID 1001, with a
/// DACL granting it full control: what a local user's files carry.
fn user_sd() -> Vec<u8> {
    let mut user = vec![1u8, 5, 0, 0, 0, 0, 0, 5];
    for s in SAMPLE_MACHINE_SID
        .trim_start_matches("S-1-5-")
        .split('-')
        .map(|x| x.parse::<u32>().unwrap())
        .chain([1001])
    {
        user.extend_from_slice(&s.to_le_bytes());
    }
    let system = [1u8, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0];
    let mut ace = vec![0u8, 0x03, 36, 0];
    ace.extend_from_slice(&0x001F01FFu32.to_le_bytes());
    ace.extend_from_slice(&user);
    let mut acl = vec![2u8, 0, 44, 0, 1, 0, 0, 0];
    acl.extend(ace);
    let mut out = vec![1u8, 0, 0x04, 0x80];
    for x in [20u32, 48, 0, 60] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend(user);
    out.extend_from_slice(&system);
    out.extend(acl);
    out
}

/// A WIM captured (NTFS-3G mode) from the fixture volume after giving
/// SAM, SYSTEM and SOFTWARE.LOG1 distinctive metadata.
fn ntfs_wim(dir: &Path) -> Option<PathBuf> {
    let root = dir.join("root");
    build_windows_root(&root, None).unwrap();
    let images = build_disk_images(&root, &dir.join("disk")).unwrap();
    let raw = images.first()?;
    let all = std::fs::read(raw).unwrap();
    let part = dir.join("volume.ntfs");
    let (a, n) = (DISK_PARTITION_OFFSET as usize, DISK_PARTITION_SIZE as usize);
    std::fs::write(&part, &all[a..a + n]).unwrap();
    let dev = RawDisk::open(&part, Access::ReadWrite).unwrap();
    let mut w = NtfsWriter::mount(dev, "volume")
        .map_err(|(e, _)| e)
        .unwrap();
    let meta = FileMetadata {
        security: Some(sd()),
        attributes: Some(0x20 | 0x04 | 0x02),
        times: Some((
            130_000_000_000_000_000,
            131_000_000_000_000_000,
            132_000_000_000_000_000,
        )),
        short_name: None,
        streams: vec![("reseal.test".into(), b"named stream".to_vec())],
    };
    for f in ["SAM", "SYSTEM"] {
        w.set_metadata(&format!("Windows\\System32\\config\\{f}"), &meta)
            .unwrap();
    }
    let log = FileMetadata {
        short_name: Some("SOFTWA~1.LOG".into()),
        streams: Vec::new(),
        ..meta
    };
    w.set_metadata("Windows\\System32\\config\\SOFTWARE.LOG1", &log)
        .unwrap();
    // A local user's hive (replaced by the run) and profile folder and a
    // file in it (not replaced) name the machine SID.
    for p in [
        "Users\\alice\\NTUSER.DAT",
        "Users\\alice",
        "Windows\\System32\\config\\DEFAULT",
    ] {
        w.set_security(p, &user_sd()).unwrap();
    }
    let (res, _) = w.unmount();
    res.unwrap();
    let wim = dir.join("ntfs.wim");
    run(
        "wimlib-imagex",
        &[
            "capture".as_ref(),
            part.as_os_str(),
            wim.as_os_str(),
            "Windows".as_ref(),
        ],
    );
    Some(wim)
}

/// `dir --detailed` of one path: the metadata lines (everything before the
/// unnamed stream's description) and the whole text.
fn detailed(wim: &Path, path: &str) -> (Vec<String>, String) {
    let text = run(
        "wimlib-imagex",
        &[
            "dir".as_ref(),
            wim.as_os_str(),
            "1".as_ref(),
            "--detailed".as_ref(),
            format!("--path={path}").as_ref(),
        ],
    );
    let first: Vec<String> = text
        .split("------------")
        .find(|b| b.contains("Full Path"))
        .unwrap_or("")
        .lines()
        .take_while(|l| !l.contains("data stream"))
        .filter(|l| !l.starts_with("Link Group ID") && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    (first, text)
}

/// The image's LASTMODIFICATIONTIME element from the WIM's XML data.
fn last_modification(wim: &Path, dir: &Path) -> String {
    let xml = dir.join("info.xml");
    run(
        "wimlib-imagex",
        &[
            "info".as_ref(),
            wim.as_os_str(),
            format!("--extract-xml={}", xml.display()).as_ref(),
        ],
    );
    let raw = std::fs::read(&xml).unwrap();
    let units: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let text = String::from_utf16_lossy(&units);
    let a = text.find("<LASTMODIFICATIONTIME>").unwrap();
    let b = text[a..].find("</LASTMODIFICATIONTIME>").unwrap();
    text[a..a + b].to_string()
}

fn hash_line(text: &str) -> String {
    let unnamed = &text[text.find("Unnamed data stream").unwrap_or(0)..];
    unnamed
        .lines()
        .find(|l| l.starts_with("Hash"))
        .unwrap_or("")
        .to_string()
}

#[test]
fn replaced_files_keep_their_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    let wim = ntfs_wim(tmp.path());
    if !reseal_testkit::require(wim.is_some(), "disk image tools (cargo xtask setup)") {
        return;
    }
    let wim = wim.unwrap();
    let paths = [
        "/Windows/System32/config/SAM",
        "/Windows/System32/config/SYSTEM",
        "/Windows/System32/config/SOFTWARE.LOG1",
        "/Windows/System32/config",
        "/Windows",
    ];
    let before: Vec<(Vec<String>, String)> = paths.iter().map(|p| detailed(&wim, p)).collect();
    assert!(
        before[0]
            .0
            .iter()
            .any(|l| l.contains("FILE_ATTRIBUTE_SYSTEM")),
        "fixture: {:?}",
        before[0].0
    );
    assert!(
        before[2].0.iter().any(|l| l.contains("SOFTWA~1.LOG")),
        "fixture: {:?}",
        before[2].0
    );
    assert!(
        before[0].1.contains("reseal.test"),
        "fixture: {}",
        before[0].1
    );

    let modified_before = last_modification(&wim, tmp.path());
    let mut b = WimBackend::open(&wim, ImageSelector::Index(1)).unwrap();
    let report = generalize(
        &mut b,
        &GeneralizeOptions {
            sid: SidChoice::Given("S-1-5-21-1111111111-2222222222-3333333333".into()),
            seed: Some(3),
            ..GeneralizeOptions::default()
        },
    )
    .unwrap();
    let notes: Vec<&str> = report.installs[0]
        .not_done
        .iter()
        .map(|n| n.message.as_str())
        .collect();
    assert!(
        !notes
            .iter()
            .any(|n| n.contains("lost their security descriptor")),
        "{notes:?}"
    );
    // Entries the run did not replace keep descriptors naming the old SID,
    // and the report lists them.
    let acl_note = notes
        .iter()
        .find(|n| n.contains("not rewritten"))
        .unwrap_or_else(|| panic!("{notes:?}"));
    assert!(acl_note.contains("on 2 entries"), "{acl_note}");
    assert!(
        acl_note.contains("/Users/alice,") || acl_note.contains("/Users/alice ("),
        "{acl_note}"
    );
    assert!(
        acl_note.contains("/Windows/System32/config/DEFAULT"),
        "{acl_note}"
    );
    assert!(!acl_note.contains("NTUSER.DAT"), "{acl_note}");
    drop(b);
    run("wimlib-imagex", &["verify".as_ref(), wim.as_os_str()]);
    // Nothing stray came along with the replaced files.
    for p in [
        "/Windows/System32/config/Windows",
        "/Users/alice/Users",
        "/Windows/Windows",
    ] {
        let out = Command::new("wimlib-imagex")
            .args(["dir".as_ref(), wim.as_os_str(), "1".as_ref()])
            .arg(format!("--path={p}"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{p} exists in the image");
    }
    // The image's XML info records the modification.
    assert_ne!(last_modification(&wim, tmp.path()), modified_before);
    // The replaced hive's descriptor names the new SID, not the old one.
    let (hive_meta, _) = detailed(&wim, "/Users/alice/NTUSER.DAT");
    let sd_hex = hive_meta
        .iter()
        .find(|l| l.starts_with("Security Descriptor"))
        .unwrap()
        .clone();
    let le_hex = |sid: &str| -> String {
        sid.trim_start_matches("S-1-5-21-")
            .split('-')
            .map(|x| {
                x.parse::<u32>()
                    .unwrap()
                    .to_le_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            })
            .collect()
    };
    assert!(
        sd_hex.contains(&le_hex("S-1-5-21-1111111111-2222222222-3333333333")),
        "{sd_hex}"
    );
    assert!(!sd_hex.contains(&le_hex(SAMPLE_MACHINE_SID)), "{sd_hex}");

    for (p, (meta, text)) in paths.iter().zip(&before) {
        let (after, after_text) = detailed(&wim, p);
        assert_eq!(&after, meta, "{p}: metadata changed");
        if p.ends_with("SAM") || p.ends_with("SYSTEM") {
            assert_ne!(
                hash_line(&after_text),
                hash_line(text),
                "{p}: contents not replaced"
            );
            assert!(after_text.contains("reseal.test"), "{p}: named stream lost");
            assert!(
                after_text.contains("Link Count          = 1"),
                "{p}: {after_text}"
            );
        }
    }

    // The hives wimlib extracts read with hivex.
    let out = tmp.path().join("out");
    run(
        "wimlib-imagex",
        &[
            "extract".as_ref(),
            wim.as_os_str(),
            "1".as_ref(),
            "/Windows/System32/config/SYSTEM".as_ref(),
            "/Windows/System32/config/SAM".as_ref(),
            format!("--dest-dir={}", out.display()).as_ref(),
            "--no-acls".as_ref(),
        ],
    );
    for h in ["SYSTEM", "SAM"] {
        let export = run(
            "hivexregedit",
            &["--export".as_ref(), out.join(h).as_os_str(), "\\".as_ref()],
        );
        assert!(export.contains("Windows Registry Editor"), "{h}");
    }
    // A second run plans nothing.
    let mut b = WimBackend::open(&wim, ImageSelector::Index(1)).unwrap();
    let again = generalize(
        &mut b,
        &GeneralizeOptions {
            dry_run: true,
            sid: SidChoice::Keep,
            ..GeneralizeOptions::default()
        },
    )
    .unwrap();
    let n: usize = again.installs.iter().map(|i| i.edits.len()).sum();
    assert_eq!(n, 0, "{:?}", again.installs[0].edits);
    let _ = b.exists("Windows");
}
