//! Exclusive access: an image held by QEMU (`qemu-io` keeping it open) is
//! refused as busy; reseal's own write lock is seen by `qemu-img` and
//! `qemu-io`; a second reseal process is refused while another writes; a
//! commit is refused when the image changed after it was read.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reseal::ResealError;
use reseal::backend::dir::DirBackend;
use reseal::backend::disk::DiskBackend;
use reseal::backend::{Backend, FileChange};
use reseal::lock::{ImageLock, LockLevel};
use reseal_testkit::{build_windows_root, require, require_tool};

const SAM: &str = "Windows\\System32\\config\\SAM";

fn format_of(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()) {
        Some("vhdx") => "vhdx",
        Some("vhd") => "vpc",
        _ => "raw",
    }
}

/// Whether any OFD lock is set on the file.
fn ofd_locked(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(path).unwrap().ino();
    let tag = format!(":{ino} ");
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|l| l.contains("OFDLCK") && l.contains(&tag))
}

/// `qemu-io` holding the image open read-write until killed.
fn qemu_holds(path: &Path) -> Child {
    let child = Command::new("qemu-io")
        .args(["-f", format_of(path), "-c", "sleep 60000"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ofd_locked(path) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "qemu-io took no lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn an_image_held_by_qemu_is_refused_as_busy() {
    if !require_tool("qemu-io")
        || !require(
            !reseal_testkit::sample_disk_images().is_empty(),
            "disk image tools",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for src in reseal_testkit::sample_disk_images() {
        let img = reseal_testkit::copy_into(src, dir.path());
        let before = std::fs::read(&img).unwrap();
        let mut q = qemu_holds(&img);
        let e = DiskBackend::open(&img, None).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, ResealError::Busy { .. }),
            "{}: {msg}",
            img.display()
        );
        assert!(msg.contains("another process (qemu or reseal)"), "{msg}");
        q.kill().unwrap();
        q.wait().unwrap();
        // Free again: opens, and the file was never touched.
        DiskBackend::open(&img, None).unwrap();
        assert_eq!(std::fs::read(&img).unwrap(), before);
    }
}

#[test]
fn qemu_sees_the_write_lock() {
    if !require_tool("qemu-img")
        || !require(
            !reseal_testkit::sample_disk_images().is_empty(),
            "disk image tools",
        )
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for src in reseal_testkit::sample_disk_images() {
        let img = reseal_testkit::copy_into(src, dir.path());
        let lock = ImageLock::acquire(&img, LockLevel::Write).unwrap();
        let conv = dir.path().join("converted.raw");
        let convert = || {
            Command::new("qemu-img")
                .args(["convert", "-f", format_of(&img), "-O", "raw"])
                .arg(&img)
                .arg(&conv)
                .output()
                .unwrap()
        };
        let out = convert();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "qemu-img convert read a locked image"
        );
        assert!(err.contains("lock"), "{err}");
        let out = Command::new("qemu-io")
            .args(["-f", format_of(&img), "-c", "write 0 512"])
            .arg(&img)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("Failed to get") && text.contains("lock"),
            "qemu-io wrote to a locked image: {text}"
        );
        // Back to a read lock: qemu-img reads it again.
        lock.lower(LockLevel::Read);
        let out = convert();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Child mode of this test binary: holds a write lock on the path in
/// `RESEAL_TEST_HOLD` until its standard input closes.
#[test]
fn holder_child() {
    let Ok(path) = std::env::var("RESEAL_TEST_HOLD") else {
        return;
    };
    let _lock = ImageLock::acquire(Path::new(&path), LockLevel::Write).unwrap();
    println!("HOLDING-LOCK");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// Another process of this binary holding a write lock on `path`.
fn other_process_writes(path: &Path) -> Child {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "holder_child", "--nocapture", "--test-threads=1"])
        .env("RESEAL_TEST_HOLD", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the holder died");
        if line.contains("HOLDING-LOCK") {
            break;
        }
    }
    child
}

#[test]
fn a_second_reseal_process_is_refused_while_one_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let mut holder = other_process_writes(&root);
    let e = DirBackend::open(&root).unwrap_err();
    assert!(matches!(e, ResealError::Busy { .. }), "{e}");
    drop(holder.stdin.take());
    holder.wait().unwrap();
    let mut b = DirBackend::open(&root).unwrap();
    b.commit(&[FileChange::Write {
        path: "x.txt".into(),
        data: b"1".to_vec(),
    }])
    .unwrap();

    if reseal_testkit::sample_disk_images().is_empty() {
        return;
    }
    let img = reseal_testkit::copy_into(&reseal_testkit::sample_disk_images()[0], tmp.path());
    let mut holder = other_process_writes(&img);
    let e = DiskBackend::open(&img, None).unwrap_err();
    assert!(matches!(e, ResealError::Busy { .. }), "{e}");
    drop(holder.stdin.take());
    holder.wait().unwrap();
    DiskBackend::open(&img, None).unwrap();
}

#[test]
fn a_commit_after_someone_else_changed_what_was_read_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let mut b = DirBackend::open(&root).unwrap();
    let sam = b.read(SAM).unwrap();
    // Another run commits meanwhile.
    let mut other = sam.clone();
    other[0x1000] ^= 1;
    std::fs::write(root.join("Windows/System32/config/SAM"), &other).unwrap();
    let e = b
        .commit(&[FileChange::Write {
            path: SAM.into(),
            data: sam.clone(),
        }])
        .unwrap_err();
    assert!(matches!(e, ResealError::Busy { .. }), "{e}");
    assert!(
        e.to_string().contains("changed after this run read it"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(root.join("Windows/System32/config/SAM")).unwrap(),
        other,
        "the other run's file was kept"
    );

    if reseal_testkit::sample_disk_images().is_empty() {
        return;
    }
    let img = reseal_testkit::copy_into(&reseal_testkit::sample_disk_images()[0], tmp.path());
    let mut d = DiskBackend::open(&img, None).unwrap();
    let sam = d.read(SAM).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    let before = std::fs::read(&img).unwrap();
    let e = d
        .commit(&[FileChange::Write {
            path: SAM.into(),
            data: sam,
        }])
        .unwrap_err();
    assert!(matches!(e, ResealError::Busy { .. }), "{e}");
    assert_eq!(std::fs::read(&img).unwrap(), before);
}
