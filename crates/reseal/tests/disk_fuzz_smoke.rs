//! Mutated disk images never panic the read side: small raw, VHD (dynamic),
//! VHDX and qcow2 images of a GPT disk with an NTFS partition get bytes flipped
//! in their headers, footers, tables and the NTFS metadata (deterministic
//! pseudo-random mutations), and opening them, listing partitions, opening
//! the volume, listing directories and reading files must return `Ok` or
//! an error, never panic.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use reseal::backend::Backend;
use reseal::backend::disk::{DiskBackend, windows_partitions};
use reseal::disk::{Access, list_partitions, open_image};
use reseal_testkit::have;

fn sh(cmd: &str, args: &[&std::ffi::OsStr], stdin: Option<&str>) {
    use std::io::Write;
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(t) = stdin {
        child.stdin.take().unwrap().write_all(t.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 12 MiB GPT disk with an 8 MiB NTFS partition at 1 MiB holding
/// `Windows\System32\config\SYSTEM`, as raw, VHD, VHDX and qcow2.
fn images(dir: &Path) -> Vec<PathBuf> {
    let raw = dir.join("small.raw");
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(12 << 20)
        .unwrap();
    sh(
        "sfdisk",
        &[
            "--quiet".as_ref(),
            "--no-reread".as_ref(),
            "--no-tell-kernel".as_ref(),
            raw.as_os_str(),
        ],
        Some("label: gpt\nstart=2048, size=16384, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n"),
    );
    let part = dir.join("part.ntfs");
    std::fs::File::create(&part)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    sh(
        "mkntfs",
        &[
            "-F".as_ref(),
            "-f".as_ref(),
            "-q".as_ref(),
            part.as_os_str(),
        ],
        None,
    );
    let src = dir.join("src/Windows/System32/config");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("SYSTEM"), vec![0x5Au8; 70_000]).unwrap();
    std::fs::write(dir.join("src/Windows/notes.txt"), b"hello").unwrap();
    let wim = dir.join("src.wim");
    sh(
        "wimlib-imagex",
        &[
            "capture".as_ref(),
            dir.join("src").as_os_str(),
            wim.as_os_str(),
            "--no-acls".as_ref(),
        ],
        None,
    );
    sh(
        "wimlib-imagex",
        &[
            "apply".as_ref(),
            wim.as_os_str(),
            "1".as_ref(),
            part.as_os_str(),
        ],
        None,
    );
    let p = std::fs::read(&part).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.write_all_at(&p, 1 << 20).unwrap();
    drop(f);
    let vhd = dir.join("small.vhd");
    let vhdx = dir.join("small.vhdx");
    let qcow2 = dir.join("small.qcow2");
    for (out, fmt) in [(&vhd, "vpc"), (&vhdx, "vhdx"), (&qcow2, "qcow2")] {
        sh(
            "qemu-img",
            &[
                "convert".as_ref(),
                "-O".as_ref(),
                fmt.as_ref(),
                raw.as_os_str(),
                out.as_os_str(),
            ],
            None,
        );
    }
    vec![raw, vhd, vhdx, qcow2]
}

/// xorshift64*: deterministic mutations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Everything the read side does with an image; errors are fine.
fn exercise(path: &Path) {
    if let Ok(dev) = open_image(path, Access::ReadOnly) {
        let _ = list_partitions(&*dev, path);
    }
    let _ = windows_partitions(path);
    if let Ok(b) = DiskBackend::open(path, None) {
        let _ = b.list("");
        let _ = b.list("Windows");
        let _ = b.read("Windows\\System32\\config\\SYSTEM");
        let _ = b.read_head("Windows\\notes.txt", 3);
        let _ = b.exists("Windows\\System32");
    }
}

#[test]
fn mutated_images_never_panic() {
    if !["sfdisk", "mkntfs", "wimlib-imagex", "qemu-img"]
        .iter()
        .all(|c| have(c))
    {
        println!("SKIPPED: disk tools missing (cargo xtask setup)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let iterations: usize = std::env::var("RESEAL_DISK_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    for img in images(tmp.path()) {
        let len = std::fs::metadata(&img).unwrap().len();
        // Where the interesting structures are: the first 1 MiB + 64 KiB
        // (container headers, tables, GPT), the NTFS boot sector and MFT
        // area of the partition, and the last 64 KiB (footer, backup GPT).
        let regions = [
            (0u64, (1u64 << 20) + (64 << 10)),
            ((1 << 20), (1 << 20) + (256 << 10)),
            (len.saturating_sub(64 << 10), len),
        ];
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        exercise(&img);
        for i in 0..iterations {
            let (a, b) = regions[i % regions.len()];
            let b = b.min(len);
            if b <= a {
                continue;
            }
            let n = 1 + (rng.next() % 8) as usize;
            let mut saved = Vec::new();
            for _ in 0..n {
                let at = a + rng.next() % (b - a);
                let mut old = [0u8; 1];
                f.read_exact_at(&mut old, at).unwrap();
                let new = match rng.next() % 4 {
                    0 => 0,
                    1 => 0xFF,
                    2 => old[0] ^ (1 << (rng.next() % 8)),
                    _ => rng.next() as u8,
                };
                f.write_all_at(&[new], at).unwrap();
                saved.push((at, old[0]));
            }
            exercise(&img);
            for (at, old) in saved.into_iter().rev() {
                f.write_all_at(&[old], at).unwrap();
            }
        }
        // Restored: the image still opens and reads.
        let b = DiskBackend::open(&img, None).unwrap();
        assert_eq!(
            b.read("Windows\\System32\\config\\SYSTEM").unwrap(),
            vec![0x5Au8; 70_000],
            "{}",
            img.display()
        );
    }
}
