//! Opening a hive whose path names something other than a regular file (a
//! FIFO, a character device, a directory) fails at once with a clear
//! error, instead of blocking or reading without end.

use std::process::Command;
use std::time::{Duration, Instant};

use reseal_hive::Hive;

#[test]
fn special_files_are_refused_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("SYSTEM");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    if !reseal_testkit::require(made, "mkfifo") {
        return;
    }
    for p in [
        fifo.as_path(),
        std::path::Path::new("/dev/zero"),
        tmp.path(),
    ] {
        let t = Instant::now();
        let e = Hive::open(p).expect_err("refused");
        assert!(
            e.to_string().contains("not a regular file"),
            "{}: {e}",
            p.display()
        );
        assert!(t.elapsed() < Duration::from_secs(5), "{}", p.display());
    }
}

/// A FIFO where a log would be is never read: the hive opens at once.
#[test]
fn a_fifo_named_as_a_log_is_not_read() {
    let tmp = tempfile::tempdir().unwrap();
    // A real-looking clean hive beside a FIFO named as its log.
    let hive = tmp.path().join("SOFTWARE");
    let mut h = Hive::create("SOFTWARE", 5, "ROOT").unwrap();
    h.create_key("A").unwrap();
    h.save_to(&hive).unwrap();
    let made = Command::new("mkfifo")
        .arg(tmp.path().join("SOFTWARE.LOG1"))
        .status()
        .is_ok_and(|s| s.success());
    if !reseal_testkit::require(made, "mkfifo") {
        return;
    }
    let t = Instant::now();
    let h = Hive::open(&hive).expect("opens without reading the FIFO");
    assert!(h.open_key("A").expect("read").is_some());
    assert!(t.elapsed() < Duration::from_secs(5));
}
