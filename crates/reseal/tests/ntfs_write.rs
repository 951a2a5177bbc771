//! The NTFS writer (libntfs-3g over our block layer) on volumes made by
//! mkntfs: every change is read back by independent tools (ntfs-3g's
//! ntfscat/ntfsls/ntfsfix, and the `ntfs` crate through the read-only disk
//! code), never only by the writer itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use reseal::disk::overlay::OverlayDisk;
use reseal::disk::raw::RawDisk;
use reseal::disk::{Access, BlockDevice};
use reseal::ntfs3g::{FileMetadata, NtfsWriter};
use reseal_testkit::have;

/// A fresh NTFS volume image of `mb` MiB, or `None` (with a notice) when
/// mkntfs is missing.
fn volume(dir: &Path, mb: u64) -> Option<PathBuf> {
    if !reseal_testkit::require(
        have("mkntfs") && have("ntfscat"),
        "mkntfs and ntfscat (cargo xtask setup installs ntfs-3g)",
    ) {
        return None;
    }
    let p = dir.join("vol.img");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(mb << 20).unwrap();
    let out = Command::new("mkntfs")
        .args(["-F", "-f", "-q", "-L", "test"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mkntfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(p)
}

fn ntfscat(img: &Path, path: &str) -> Option<Vec<u8>> {
    let out = Command::new("ntfscat").arg(img).arg(path).output().unwrap();
    out.status.success().then_some(out.stdout)
}

fn ntfsfix_clean(img: &Path) {
    let out = Command::new("ntfsfix").arg("-n").arg(img).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ntfsfix -n failed: {text}");
    assert!(
        !text.contains("corrupt") && !text.contains("FAILED"),
        "ntfsfix -n: {text}"
    );
}

/// `ntfssecaudit -a`: a full audit of the volume's security data.
fn secaudit_clean(img: &Path) {
    let out = Command::new("ntfssecaudit")
        .arg("-a")
        .arg(img)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ntfssecaudit -a: {text}");
    assert!(
        text.contains("No errors were found"),
        "ntfssecaudit -a: {text}"
    );
}

fn sha(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn mount(img: &Path) -> NtfsWriter<OverlayDisk<RawDisk>> {
    let dev = OverlayDisk::new(RawDisk::open(img, Access::ReadWrite).unwrap());
    NtfsWriter::mount(dev, &img.display().to_string())
        .map_err(|(e, _)| e)
        .unwrap()
}

fn finish(w: NtfsWriter<OverlayDisk<RawDisk>>) {
    let (res, mut dev) = w.unmount();
    res.unwrap();
    dev.persist().unwrap();
}

#[test]
fn create_replace_delete_rename_read_back_by_ntfs_3g_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = volume(tmp.path(), 64) else {
        return;
    };
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut w = mount(&img);
    w.write_file("Windows\\System32\\config\\SYSTEM", &big)
        .unwrap();
    w.write_file("Windows\\System32\\config\\SOFTWARE", b"small")
        .unwrap();
    w.write_file("Windows\\Panther\\unattend.xml", b"<unattend/>")
        .unwrap();
    w.write_file("Users\\S-1-5-21-1-2-3-1001\\a.txt", b"profile")
        .unwrap();
    w.write_file("gone\\x\\y.bin", b"to delete").unwrap();
    w.write_file("gone\\z.bin", b"to delete").unwrap();
    finish(w);
    ntfsfix_clean(&img);
    assert_eq!(
        ntfscat(&img, "/Windows/System32/config/SYSTEM").unwrap(),
        big
    );
    assert_eq!(
        ntfscat(&img, "/Windows/Panther/unattend.xml").unwrap(),
        b"<unattend/>"
    );

    // Second session: same-size replacement, resize, case-insensitive
    // lookups, rename of a directory, tree delete, truncate.
    let mut big2 = big.clone();
    big2[1234] ^= 0xFF;
    let mut w = mount(&img);
    w.write_file("windows\\system32\\CONFIG\\system", &big2)
        .unwrap();
    w.write_file("Windows\\System32\\config\\SOFTWARE", &big[..100_000])
        .unwrap();
    w.rename("Users\\S-1-5-21-1-2-3-1001", "Users\\S-1-5-21-9-9-9-1001")
        .unwrap();
    w.delete_tree("GONE").unwrap();
    w.truncate("Windows\\Panther\\unattend.xml").unwrap();
    w.delete("does\\not\\exist").unwrap();
    assert!(w.rename("nothing-here", "elsewhere").is_ok());
    finish(w);
    ntfsfix_clean(&img);
    secaudit_clean(&img);
    assert_eq!(
        ntfscat(&img, "/Windows/System32/config/SYSTEM").unwrap(),
        big2
    );
    assert_eq!(
        ntfscat(&img, "/Windows/System32/config/SOFTWARE").unwrap(),
        &big[..100_000]
    );
    assert_eq!(
        ntfscat(&img, "/Users/S-1-5-21-9-9-9-1001/a.txt").unwrap(),
        b"profile"
    );
    assert!(ntfscat(&img, "/Users/S-1-5-21-1-2-3-1001/a.txt").is_none());
    assert!(ntfscat(&img, "/gone/z.bin").is_none());
    assert_eq!(ntfscat(&img, "/Windows/Panther/unattend.xml").unwrap(), b"");
    let ls = Command::new("ntfsls").arg(&img).output().unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert!(!ls.lines().any(|l| l == "gone"), "{ls}");
}

#[test]
fn nothing_reaches_the_image_until_persist() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = volume(tmp.path(), 32) else {
        return;
    };
    let before = sha(&img);
    let mut w = mount(&img);
    w.write_file("a\\b.txt", b"data").unwrap();
    let (res, dev) = w.unmount();
    res.unwrap();
    assert!(dev.dirty_bytes() > 0);
    drop(dev);
    assert!(sha(&img) == before, "the image changed without persist()");
}

/// A descriptor: owner = a machine-local SID, DACL granting it and SYSTEM.
fn sd_with(sid_sub: [u32; 3], rid: u32) -> Vec<u8> {
    fn sid(sub: &[u32]) -> Vec<u8> {
        let mut v = vec![1u8, sub.len() as u8, 0, 0, 0, 0, 0, 5];
        for s in sub {
            v.extend_from_slice(&s.to_le_bytes());
        }
        v
    }
    let owner = sid(&[21, sid_sub[0], sid_sub[1], sid_sub[2], rid]);
    let system = sid(&[18]);
    let ace = |s: &[u8]| {
        let mut a = vec![0u8, 0x03];
        a.extend_from_slice(&((8 + s.len()) as u16).to_le_bytes());
        a.extend_from_slice(&0x001F01FFu32.to_le_bytes());
        a.extend_from_slice(s);
        a
    };
    let (a1, a2) = (ace(&owner), ace(&system));
    let acl_len = 8 + a1.len() + a2.len();
    let mut acl = vec![2u8, 0];
    acl.extend_from_slice(&(acl_len as u16).to_le_bytes());
    acl.extend_from_slice(&2u16.to_le_bytes());
    acl.extend_from_slice(&0u16.to_le_bytes());
    acl.extend(a1);
    acl.extend(a2);
    let mut sd = vec![1u8, 0];
    sd.extend_from_slice(&0x8004u16.to_le_bytes()); // self-relative, DACL present
    let group = sid(&[32, 544]);
    let owner_at = 20u32;
    let group_at = owner_at + owner.len() as u32;
    let dacl_at = group_at + group.len() as u32;
    sd.extend_from_slice(&owner_at.to_le_bytes());
    sd.extend_from_slice(&group_at.to_le_bytes());
    sd.extend_from_slice(&0u32.to_le_bytes());
    sd.extend_from_slice(&dacl_at.to_le_bytes());
    sd.extend(owner);
    sd.extend(group);
    sd.extend(acl);
    sd
}

#[test]
fn security_descriptors_are_rewritten_in_secure() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = volume(tmp.path(), 32) else {
        return;
    };
    let old = sd_with([111, 222, 333], 1001);
    let new = sd_with([444, 555, 666], 1001);
    let other = sd_with([7, 8, 9], 500);
    let mut w = mount(&img);
    for i in 0..5 {
        w.write_file(&format!("d\\f{i}"), b"x").unwrap();
        w.set_security(&format!("d\\f{i}"), if i < 3 { &old } else { &other })
            .unwrap();
    }
    finish(w);
    let mut w = mount(&img);
    let (o, n) = (old.clone(), new.clone());
    let r = w
        .rewrite_security(move |sd| (sd == o.as_slice()).then(|| n.clone()))
        .unwrap();
    assert_eq!(r.files, 3, "{r:?}");
    assert_eq!(r.descriptors, 1, "{r:?}");
    for i in 0..5 {
        let got = w.security(&format!("d\\f{i}")).unwrap();
        assert_eq!(got, if i < 3 { new.clone() } else { other.clone() }, "f{i}");
    }
    finish(w);
    ntfsfix_clean(&img);
    // ntfs-3g's own reader sees the new descriptors through $Secure, and
    // its full audit finds $SDS, $SDH and $SII consistent.
    let out = Command::new("ntfssecaudit")
        .arg(&img)
        .arg("/d/f0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Windows owner S-1-5-21-444-555-666-1001"),
        "{text}"
    );
    assert!(!text.contains("S-1-5-21-111-222-333"), "{text}");
    secaudit_clean(&img);
}

/// `sd_with` whose DACL is 20 bytes larger than its ACEs, the slack
/// holding a stale copy of the domain (`15000000` and its three
/// sub-authorities) as Windows leaves after removing an ACE.
fn sd_with_stale_slack(sid_sub: [u32; 3], rid: u32, stale: [u32; 3]) -> Vec<u8> {
    let mut sd = sd_with(sid_sub, rid);
    let dacl_at = u32::from_le_bytes(sd[16..20].try_into().unwrap()) as usize;
    let size = u16::from_le_bytes([sd[dacl_at + 2], sd[dacl_at + 3]]);
    sd[dacl_at + 2..dacl_at + 4].copy_from_slice(&(size + 20).to_le_bytes());
    let mut slack = 21u32.to_le_bytes().to_vec();
    for v in stale {
        slack.extend_from_slice(&v.to_le_bytes());
    }
    slack.extend_from_slice(&[0xAA; 4]);
    sd.extend(slack);
    sd
}

fn sub_authorities(sub: [u32; 3]) -> Vec<u8> {
    sub.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn rewritten_descriptors_have_their_slack_zeroed() {
    use reseal_hive::Sid;
    use reseal_hive::security::{parse_descriptor, rewrite_descriptor_domain, validate_descriptor};
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = volume(tmp.path(), 32) else {
        return;
    };
    let (old_sub, new_sub) = ([111, 222, 333], [444, 555, 666]);
    // Owner in the old domain, and a well-known owner whose only trace of
    // the old domain is in the slack.
    let owned = sd_with_stale_slack(old_sub, 1001, old_sub);
    let foreign = sd_with_stale_slack([7, 8, 9], 500, old_sub);
    validate_descriptor(&owned).unwrap();
    validate_descriptor(&foreign).unwrap();
    let untouched = sd_with_stale_slack([7, 8, 9], 500, [1, 2, 3]);
    let mut w = mount(&img);
    let sds = [&owned, &foreign, &untouched];
    for (i, sd) in sds.iter().enumerate() {
        w.write_file(&format!("d\\f{i}"), b"x").unwrap();
        w.set_security(&format!("d\\f{i}"), sd).unwrap();
    }
    finish(w);
    let old = Sid::new(5, &[21, old_sub[0], old_sub[1], old_sub[2]]).unwrap();
    let new = Sid::new(5, &[21, new_sub[0], new_sub[1], new_sub[2]]).unwrap();
    let mut w = mount(&img);
    let r = w
        .rewrite_security(|sd| {
            rewrite_descriptor_domain(sd, &old, &new)
                .ok()
                .flatten()
                .map(|r| r.descriptor)
        })
        .unwrap();
    assert_eq!((r.files, r.descriptors), (2, 2), "{r:?}");
    let mut got = Vec::new();
    for (i, before) in sds.iter().enumerate() {
        let sd = w.security(&format!("d\\f{i}")).unwrap();
        assert_eq!(sd.len(), before.len(), "f{i}: length kept");
        // AclSize kept.
        assert_eq!(sd[16..20], before[16..20]);
        got.push(sd);
    }
    finish(w);
    let stale = sub_authorities(old_sub);
    let has = |d: &[u8], n: &[u8]| d.windows(n.len()).any(|x| x == n);
    for (i, sd) in got.iter().take(2).enumerate() {
        assert!(!has(sd, &stale), "f{i}: old sub-authorities left");
        assert!(sd.ends_with(&[0; 20]), "f{i}: slack not zeroed");
    }
    assert_eq!(
        got[2], untouched,
        "a descriptor without the old domain is kept"
    );
    assert_eq!(
        parse_descriptor(&got[1]).unwrap(),
        parse_descriptor(&foreign).unwrap(),
        "same meaning"
    );
    assert!(has(&got[0], &sub_authorities(new_sub)));
    ntfsfix_clean(&img);
    // ntfs-3g's own reader sees the new owner through $Secure; its audit
    // finds $SDS, $SDH and $SII consistent.
    let out = Command::new("ntfssecaudit")
        .arg(&img)
        .arg("/d/f0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Windows owner S-1-5-21-444-555-666-1001"),
        "{text}"
    );
    secaudit_clean(&img);
}

#[test]
fn metadata_is_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = volume(tmp.path(), 32) else {
        return;
    };
    let sd = sd_with([1, 2, 3], 1000);
    let mut w = mount(&img);
    w.write_file("Windows\\System32\\config\\SAM", b"regf...")
        .unwrap();
    let meta = FileMetadata {
        security: Some(sd.clone()),
        attributes: Some(0x20 | 0x2),
        times: Some((
            130_000_000_000_000_000,
            131_000_000_000_000_000,
            132_000_000_000_000_000,
        )),
        short_name: None,
        streams: vec![("Zone.Identifier".into(), b"[ZoneTransfer]".to_vec())],
    };
    w.set_metadata("Windows\\System32\\config\\SAM", &meta)
        .unwrap();
    assert_eq!(w.security("Windows\\System32\\config\\SAM").unwrap(), sd);
    finish(w);
    ntfsfix_clean(&img);
    let out = Command::new("ntfscat")
        .args(["-a", "0x80", "-n", "Zone.Identifier"])
        .arg(&img)
        .arg("/Windows/System32/config/SAM")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"[ZoneTransfer]");
    assert_eq!(
        ntfscat(&img, "/Windows/System32/config/SAM").unwrap(),
        b"regf..."
    );
}

#[test]
fn mount_of_a_non_ntfs_device_fails_cleanly() {
    let dev = reseal::disk::MemDisk {
        data: vec![0u8; 4 << 20],
    };
    let before = dev.data.clone();
    let err = NtfsWriter::mount(OverlayDisk::new(dev), "zeros.img").unwrap_err();
    assert!(err.0.to_string().contains("zeros.img"), "{}", err.0);
    assert_eq!(err.1.into_inner().data, before);
    let _ = BlockDevice::len(&reseal::disk::MemDisk::default());
}

/// `NtfsWriter::read` sizes its buffer from the data attribute: a 3 MB
/// file, a resident 5-byte file and an empty file read back exactly (as
/// ntfscat reads them), with no buffer of the old `usize::MAX >> 1` size.
#[test]
fn read_is_sized_from_the_attribute() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(img) = volume(tmp.path(), 32) else {
        return;
    };
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let mut w = mount(&img);
    w.write_file("a\\big.bin", &big).unwrap();
    w.write_file("a\\small.txt", b"small").unwrap();
    w.write_file("a\\empty", b"").unwrap();
    finish(w);
    let mut w = mount(&img);
    assert_eq!(w.read("a\\big.bin").unwrap(), big);
    assert_eq!(w.read("A\\SMALL.TXT").unwrap(), b"small");
    assert_eq!(w.read("a\\empty").unwrap(), b"");
    assert!(w.read("a\\missing").is_err());
    finish(w);
    assert_eq!(ntfscat(&img, "/a/big.bin").unwrap(), big);
    assert_eq!(ntfscat(&img, "/a/small.txt").unwrap(), b"small");
}
