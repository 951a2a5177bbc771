//! Crash safety of disk image commits: a run killed while it writes the
//! changed sectors in place is finished by the next open from the write
//! journal beside the image; a journal torn by a kill before the first
//! in-place write is discarded and the image is byte-identical. Checked
//! with `qemu-img check` (VHD, VHDX) and `ntfscat` reading the files back
//! from the partition.

use std::path::{Path, PathBuf};
use std::process::Command;

use reseal::backend::disk::{DiskBackend, Replay};
use reseal::backend::{Backend, FileChange};
use reseal_testkit::{DISK_PARTITION_OFFSET, DISK_PARTITION_SIZE, require, require_tool};

const SAM: &str = "Windows\\System32\\config\\SAM";
const NEW: &str = "Windows\\crash-test.bin";

fn journal_of(img: &Path) -> PathBuf {
    let mut n = img.file_name().unwrap().to_os_string();
    n.push(".reseal-journal");
    img.with_file_name(n)
}

fn changes(sam: &[u8]) -> Vec<FileChange> {
    let mut new_sam = sam.to_vec();
    for b in new_sam.iter_mut().skip(0x1000).step_by(97) {
        *b ^= 0x5a;
    }
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    vec![
        FileChange::Write {
            path: SAM.into(),
            data: new_sam,
        },
        FileChange::Write {
            path: NEW.into(),
            data,
        },
    ]
}

fn data_of<'a>(c: &'a [FileChange], path: &str) -> &'a [u8] {
    c.iter()
        .find_map(|c| match c {
            FileChange::Write { path: p, data } if p == path => Some(data.as_slice()),
            _ => None,
        })
        .unwrap()
}

/// `qemu-img check` for the formats that have metadata to check.
fn qemu_check(img: &Path) {
    let ext = img.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext != "vhdx" && ext != "vhd" {
        return;
    }
    let fmt = if ext == "vhd" { "vpc" } else { "vhdx" };
    let out = Command::new("qemu-img")
        .args(["check", "-f", fmt])
        .arg(img)
        .output()
        .unwrap();
    // vpc has no check: qemu-img says so and exits 63.
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || text.contains("does not support checks"),
        "{}: {text}",
        img.display()
    );
}

/// A file of the image's NTFS partition read with ntfscat.
fn ntfscat(img: &Path, dir: &Path, inner: &str) -> Vec<u8> {
    let raw = dir.join("converted.raw");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(img)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(st.success());
    let all = std::fs::read(&raw).unwrap();
    let part = dir.join("partition.ntfs");
    let (a, n) = (DISK_PARTITION_OFFSET as usize, DISK_PARTITION_SIZE as usize);
    std::fs::write(&part, &all[a..a + n]).unwrap();
    let out = Command::new("ntfscat")
        .arg(&part)
        .arg(inner.replace('\\', "/"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn a_kill_during_the_in_place_write_is_finished_by_the_next_open() {
    if !require(
        !reseal_testkit::sample_disk_images().is_empty(),
        "disk image tools",
    ) || !require_tool("ntfscat")
        || !require_tool("qemu-img")
    {
        return;
    }
    for src in reseal_testkit::sample_disk_images() {
        for kill_at in [1usize, 3] {
            let dir = tempfile::tempdir().unwrap();
            let img = reseal_testkit::copy_into(src, dir.path());
            let mut b = DiskBackend::open(&img, None).unwrap();
            assert_eq!(b.replay(), None);
            let c = changes(&b.read(SAM).unwrap());
            b.set_kill_after_writes(Some(kill_at));
            let e = b.commit(&c).unwrap_err();
            assert!(e.to_string().contains("simulated kill"), "{e}");
            drop(b);
            assert!(journal_of(&img).is_file(), "the journal is left");
            let b = DiskBackend::open(&img, None).unwrap();
            assert!(
                matches!(b.replay(), Some(Replay::RolledForward { bytes }) if bytes > 0),
                "{:?}",
                b.replay()
            );
            assert!(!journal_of(&img).exists());
            assert_eq!(b.read(SAM).unwrap(), data_of(&c, SAM));
            assert_eq!(b.read(NEW).unwrap(), data_of(&c, NEW));
            drop(b);
            qemu_check(&img);
            assert_eq!(ntfscat(&img, dir.path(), SAM), data_of(&c, SAM));
            assert_eq!(ntfscat(&img, dir.path(), NEW), data_of(&c, NEW));
        }
    }
}

#[test]
fn a_torn_journal_is_discarded_and_the_image_is_untouched() {
    if !require(
        !reseal_testkit::sample_disk_images().is_empty(),
        "disk image tools",
    ) {
        return;
    }
    for src in reseal_testkit::sample_disk_images() {
        let dir = tempfile::tempdir().unwrap();
        let img = reseal_testkit::copy_into(src, dir.path());
        let before = std::fs::read(&img).unwrap();
        let mut b = DiskBackend::open(&img, None).unwrap();
        let c = changes(&b.read(SAM).unwrap());
        // Killed right after the journal was written: nothing in place.
        b.set_kill_after_writes(Some(0));
        b.commit(&c).unwrap_err();
        drop(b);
        assert_eq!(std::fs::read(&img).unwrap(), before);
        // Cut the journal, as a kill while writing it would.
        let j = journal_of(&img);
        let len = std::fs::metadata(&j).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&j).unwrap();
        f.set_len(len / 2).unwrap();
        drop(f);
        let b = DiskBackend::open(&img, None).unwrap();
        assert_eq!(b.replay(), Some(Replay::Discarded));
        assert!(!j.exists());
        drop(b);
        assert_eq!(std::fs::read(&img).unwrap(), before, "{}", img.display());
    }
}

#[test]
fn a_finished_commit_leaves_no_journal() {
    if !require(
        !reseal_testkit::sample_disk_images().is_empty(),
        "disk image tools",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = reseal_testkit::copy_into(&reseal_testkit::sample_disk_images()[0], dir.path());
    let mut b = DiskBackend::open(&img, None).unwrap();
    let c = changes(&b.read(SAM).unwrap());
    b.commit(&c).unwrap();
    assert!(!journal_of(&img).exists());
    assert_eq!(b.read(NEW).unwrap(), data_of(&c, NEW));
}
