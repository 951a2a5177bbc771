//! Drive letters after generalize: the default operations reset every
//! `MountedDevices` drive letter and volume name, C: included (`identities`),
//! while `devices` on its own only removes removable-media entries. Checked
//! with hivexregedit on the written SYSTEM hive.

use std::fs;
use std::path::Path;
use std::process::Command;

use reseal::backend::dir::DirBackend;
use reseal::context::reg_sz;
use reseal::edit::{Edit, RegEdit};
use reseal::generalize::generalize;
use reseal::hive::Hive;
use reseal::options::{GeneralizeOptions, Selection};
use reseal::report::Outcome;
use reseal_testkit::{build_windows_root, require_tool};

/// The value names of SYSTEM `MountedDevices` as hivexregedit exports them
/// (lower case), or `None` when hivexregedit is absent (locally).
fn mounted_devices_hivex(root: &Path) -> Option<Vec<String>> {
    if !require_tool("hivexregedit") {
        return None;
    }
    let out = Command::new("hivexregedit")
        .env("PERL_UNICODE", "SO")
        .arg("--export")
        .arg(root.join("Windows/System32/config/SYSTEM"))
        .arg("\\MountedDevices")
        .output()
        .unwrap();
    assert!(out.status.success(), "hivexregedit failed");
    let text = String::from_utf8(out.stdout).unwrap().to_ascii_lowercase();
    Some(
        text.lines()
            .filter(|l| l.starts_with('"'))
            .filter_map(|l| l.split('=').next().map(str::to_string))
            .collect(),
    )
}

#[test]
fn every_drive_letter_is_reset_by_default() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let before = mounted_devices_hivex(&root);
    if let Some(b) = &before {
        assert!(
            b.iter()
                .any(|n| n.contains("dosdevices") && n.contains("c:")),
            "the fixture has a C: entry: {b:?}"
        );
    }
    let mut b = DirBackend::open(&root).unwrap();
    let report = generalize(&mut b, &GeneralizeOptions::default()).unwrap();
    assert_eq!(report.outcome, Outcome::Done);
    if let Some(after) = mounted_devices_hivex(&root) {
        assert!(
            !after
                .iter()
                .any(|n| n.contains("dosdevices") || n.contains("??\\\\volume")),
            "drive letters or volume names left: {after:?}"
        );
    }
    // The reference machine ran Windows from C:: nothing to report.
    assert!(
        !report.installs[0]
            .not_done
            .iter()
            .any(|n| n.message.contains("ran Windows from")),
        "{:#?}",
        report.installs[0].not_done
    );
}

#[test]
fn devices_alone_keeps_fixed_disk_letters() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let options = GeneralizeOptions {
        dry_run: true,
        selection: Selection {
            only: Some(vec!["devices".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut b = DirBackend::open(&root).unwrap();
    let report = generalize(&mut b, &options).unwrap();
    let touched: Vec<String> = report.installs[0]
        .edits
        .iter()
        .filter_map(|e| match &e.edit {
            Edit::Registry {
                change: RegEdit::DeleteValue { key, name },
                ..
            } if key == "MountedDevices" => Some(name.clone()),
            _ => None,
        })
        .collect();
    assert!(
        !touched
            .iter()
            .any(|n| n.eq_ignore_ascii_case(r"\DosDevices\C:")),
        "{touched:?}"
    );
}

#[test]
fn windows_on_another_letter_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let sw = root.join("Windows/System32/config/SOFTWARE");
    let mut h = Hive::from_bytes("SOFTWARE", fs::read(&sw).unwrap()).unwrap();
    h.set_value(
        r"Microsoft\Windows NT\CurrentVersion",
        "SystemRoot",
        1,
        &reg_sz(r"D:\Windows"),
    )
    .unwrap();
    fs::write(&sw, h.to_bytes()).unwrap();
    let mut b = DirBackend::open(&root).unwrap();
    let report = generalize(
        &mut b,
        &GeneralizeOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .unwrap();
    let notes: Vec<&str> = report.installs[0]
        .not_done
        .iter()
        .filter(|n| n.operation == "identities")
        .map(|n| n.message.as_str())
        .collect();
    assert!(
        notes
            .iter()
            .any(|m| m.contains(r"D:\Windows") && m.contains("C:")),
        "{notes:?}"
    );
}
