//! Synthetic hives the project generates for its demo and fixtures.
//!
//! The sample is a small SOFTWARE-like hive of a made-up Windows 10 machine
//! whose machine SID appears in the places Windows puts it: a ProfileList
//! key named by a user's SID with the binary SID as data, a security
//! descriptor granting that user access, string SIDs in value data, and a
//! big-data value.

use std::path::Path;

use anyhow::Result;
use reseal_hive::{Hive, Sid, default_descriptor};

/// The machine SID of the sample hive.
pub const SAMPLE_MACHINE_SID: &str = "S-1-5-21-1004336348-1177238915-682003330";

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn multi_sz(items: &[&str]) -> Vec<u8> {
    let mut v: Vec<u8> = items.iter().flat_map(|s| utf16z(s)).collect();
    v.extend_from_slice(&[0, 0]);
    v
}

/// A descriptor like the default one plus an ACE granting `user` full control.
fn descriptor_with_user(user: &Sid) -> Vec<u8> {
    let base = default_descriptor();
    // Parse the pieces of the default descriptor back out: header (20),
    // DACL at 20, then owner and group.
    let acl_len = u16::from_le_bytes([base[22], base[23]]) as usize;
    let acl = &base[20..20 + acl_len];
    let tail = &base[20 + acl_len..];
    let sid = user.to_bytes();
    let mut ace = vec![0u8, 0x02];
    ace.extend_from_slice(&((8 + sid.len()) as u16).to_le_bytes());
    ace.extend_from_slice(&0x000F_003Fu32.to_le_bytes());
    ace.extend_from_slice(&sid);
    let mut new_acl = acl.to_vec();
    new_acl.extend_from_slice(&ace);
    let new_len = new_acl.len() as u16;
    new_acl[2..4].copy_from_slice(&new_len.to_le_bytes());
    new_acl[4] += 1;
    let mut sd = base[..20].to_vec();
    let owner = 20 + new_acl.len();
    let group = owner + 16;
    sd[4..8].copy_from_slice(&(owner as u32).to_le_bytes());
    sd[8..12].copy_from_slice(&(group as u32).to_le_bytes());
    sd.extend_from_slice(&new_acl);
    sd.extend_from_slice(tail);
    sd
}

/// Writes the sample SOFTWARE-like hive (version 1.5) to `path`.
pub fn write_sample_software(path: &Path) -> Result<()> {
    let machine: Sid = SAMPLE_MACHINE_SID.parse()?;
    let user = machine.with_rid(1001);
    let mut h = Hive::create("SOFTWARE", 5, "ROOT")?;
    let cv = "Microsoft\\Windows NT\\CurrentVersion";
    h.create_key(cv)?;
    for (name, value) in [
        ("ProductName", "Windows 10 Pro"),
        ("EditionID", "Professional"),
        ("CurrentBuild", "19045"),
        ("InstallationType", "Client"),
        ("RegisteredOwner", "demo"),
    ] {
        h.set_value(cv, name, 1, &utf16z(value))?;
    }
    h.set_value(cv, "CurrentMajorVersionNumber", 4, &10u32.to_le_bytes())?;
    let profiles = format!("{cv}\\ProfileList");
    for (sid, dir) in [
        (
            "S-1-5-18".to_string(),
            "%systemroot%\\system32\\config\\systemprofile",
        ),
        (user.to_string(), "C:\\Users\\demo"),
    ] {
        let k = format!("{profiles}\\{sid}");
        h.create_key(&k)?;
        h.set_value(&k, "ProfileImagePath", 2, &utf16z(dir))?;
        h.set_value(&k, "Sid", 3, &sid.parse::<Sid>()?.to_bytes())?;
        h.set_value(&k, "Flags", 4, &0u32.to_le_bytes())?;
    }
    h.create_key("Microsoft\\Cryptography")?;
    h.set_value(
        "Microsoft\\Cryptography",
        "MachineGuid",
        1,
        &utf16z("6f1c3a52-8d2e-4b7a-9c11-0e5f2d7b9a44"),
    )?;
    let gp = format!("Microsoft\\Windows\\CurrentVersion\\Group Policy\\State\\{user}");
    h.create_key(&gp)?;
    h.set_value(&gp, "Distinguished-Name", 1, &utf16z("CN=demo"))?;
    let tasks = "Microsoft\\Windows NT\\CurrentVersion\\Schedule\\TaskCache\\Tasks\\{4C0A6E6B-2F1D-4E9B-8E53-6A2B4C1D7E90}";
    h.create_key(tasks)?;
    h.set_value(tasks, "Path", 1, &utf16z("\\DemoTask"))?;
    h.set_value(
        tasks,
        "Principals",
        7,
        &multi_sz(&[&user.to_string(), "S-1-5-32-544"]),
    )?;
    let app = "Classes\\Local Settings\\Software\\Microsoft\\Windows\\CurrentVersion\\AppModel";
    h.create_key(app)?;
    let blob: Vec<u8> = (0..24_000u32).map(|i| (i % 251) as u8).collect();
    h.set_value(app, "PackageCacheBlob", 3, &blob)?;
    h.set_security(&profiles, &descriptor_with_user(&user))?;
    h.create_key("Demo\\Ünïcödé\\日本語")?;
    h.save_to(path)?;
    Ok(())
}

/// `cargo xtask fixtures`: writes the generated fixtures to
/// `testdata/generated/` (not committed; regenerate at will).
pub fn run() -> Result<()> {
    let dir = crate::util::root().join("testdata/generated");
    std::fs::create_dir_all(&dir)?;
    let p = dir.join("sample-software.hiv");
    write_sample_software(&p)?;
    println!("wrote {}", p.display());
    Ok(())
}
