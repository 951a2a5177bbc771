//! Disk image fixtures: a GPT disk with one NTFS partition holding the
//! synthetic Windows root, as raw, VHD (dynamic) and VHDX.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};

/// Byte offset of the NTFS partition on the fixture disks (1 MiB).
pub const DISK_PARTITION_OFFSET: u64 = 1 << 20;
/// Size of the NTFS partition (200 MiB).
pub const DISK_PARTITION_SIZE: u64 = 200 << 20;
/// Size of the fixture disks: the partition plus room for both GPTs.
pub const DISK_SIZE: u64 = DISK_PARTITION_OFFSET + DISK_PARTITION_SIZE + (1 << 20);

/// Whether the command `cmd` is on the PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(cmd: &str, args: &[&std::ffi::OsStr], stdin: Option<&str>) -> Result<()> {
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().with_context(|| format!("running {cmd}"))?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(text.as_bytes())
            .with_context(|| format!("writing to {cmd}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {cmd}"))?;
    ensure!(
        out.status.success(),
        "{cmd} {:?} failed: {}{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Copies `part` into `disk` at `offset`, leaving all-zero chunks as holes.
fn splice(part: &Path, disk: &Path, offset: u64) -> Result<()> {
    let mut src = fs::File::open(part).with_context(|| format!("opening {}", part.display()))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .with_context(|| format!("opening {}", disk.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = offset;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let k = src.read(&mut buf[n..]).context("reading the partition")?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(at)).context("seeking the disk")?;
            dst.write_all(&buf[..n]).context("writing the disk")?;
        }
        at += n as u64;
        if n < buf.len() {
            break;
        }
    }
    dst.sync_all().context("flushing the disk")?;
    Ok(())
}

/// `qemu-img convert` of a raw image to `format` (with `-o options`).
fn convert(raw: &Path, out: &Path, format: &str, options: Option<&str>) -> Result<()> {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "convert".as_ref(),
        "-f".as_ref(),
        "raw".as_ref(),
        "-O".as_ref(),
        format.as_ref(),
    ];
    if let Some(o) = options {
        args.push("-o".as_ref());
        args.push(o.as_ref());
    }
    args.push(raw.as_os_str());
    args.push(out.as_os_str());
    run("qemu-img", &args, None)
}

/// Whether every tool the disk fixtures need is installed; prints a notice
/// naming the missing ones otherwise.
fn tools_present() -> bool {
    let missing: Vec<&str> = ["sfdisk", "mkntfs", "wimlib-imagex", "qemu-img"]
        .into_iter()
        .filter(|c| !have(c))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "notice: skipping disk image fixtures: {} not found (cargo xtask setup)",
            missing.join(", ")
        );
    }
    missing.is_empty()
}

/// Captures `root` into `wim` (nothing excluded).
fn capture(root: &Path, wim: &Path, scratch: &Path) -> Result<()> {
    // An empty capture configuration: wimlib's default one leaves out
    // pagefile.sys, swapfile.sys, $Recycle.Bin and others, which the
    // synthetic root has on purpose.
    let config = scratch.join("capture-config.txt");
    fs::write(&config, "[ExclusionList]\n")
        .with_context(|| format!("writing {}", config.display()))?;
    let mut config_arg = std::ffi::OsString::from("--config=");
    config_arg.push(&config);
    let _ = fs::remove_file(wim);
    run(
        "wimlib-imagex",
        &[
            "capture".as_ref(),
            root.as_os_str(),
            wim.as_os_str(),
            "Windows".as_ref(),
            config_arg.as_os_str(),
        ],
        None,
    )?;
    let _ = fs::remove_file(&config);
    Ok(())
}

/// Makes `raw` a GPT disk with one 200 MiB NTFS partition per root (the
/// first at 1 MiB, the next right after), each holding its root laid down
/// by `wimlib-imagex apply`.
fn gpt_disk_with_installs(roots: &[&Path], raw: &Path, scratch: &Path) -> Result<()> {
    let n = roots.len() as u64;
    let f = fs::File::create(raw).with_context(|| format!("creating {}", raw.display()))?;
    f.set_len(DISK_PARTITION_OFFSET + n * DISK_PARTITION_SIZE + (1 << 20))
        .context("sizing the disk image")?;
    drop(f);
    let mut script = String::from("label: gpt\n");
    for i in 0..n {
        script.push_str(&format!(
            "start={}, size={}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=\"Windows{}\"\n",
            (DISK_PARTITION_OFFSET + i * DISK_PARTITION_SIZE) / 512,
            DISK_PARTITION_SIZE / 512,
            i + 1
        ));
    }
    run(
        "sfdisk",
        &[
            "--quiet".as_ref(),
            "--no-reread".as_ref(),
            "--no-tell-kernel".as_ref(),
            raw.as_os_str(),
        ],
        Some(&script),
    )?;
    let wim = scratch.join("windows-root.wim");
    let part = scratch.join("partition.ntfs");
    for (i, root) in roots.iter().enumerate() {
        let offset = DISK_PARTITION_OFFSET + i as u64 * DISK_PARTITION_SIZE;
        capture(root, &wim, scratch)?;
        let _ = fs::remove_file(&part);
        let f = fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
        f.set_len(DISK_PARTITION_SIZE)
            .context("sizing the partition image")?;
        drop(f);
        let hidden = (offset / 512).to_string();
        run(
            "mkntfs",
            &[
                "-F".as_ref(),
                "-Q".as_ref(),
                "-q".as_ref(),
                "-L".as_ref(),
                "Windows".as_ref(),
                "-p".as_ref(),
                hidden.as_ref(),
                part.as_os_str(),
            ],
            None,
        )?;
        run(
            "wimlib-imagex",
            &[
                "apply".as_ref(),
                wim.as_os_str(),
                "1".as_ref(),
                part.as_os_str(),
            ],
            None,
        )?;
        splice(&part, raw, offset)?;
    }
    let _ = fs::remove_file(&part);
    let _ = fs::remove_file(&wim);
    Ok(())
}

/// Builds `two-installs.vhdx` in `dest`: a GPT disk with two NTFS
/// partitions (1 and 2), one Windows install from each root, converted
/// with `qemu-img convert -O vhdx`. `None` (with a notice) when a tool is
/// missing.
pub fn build_two_install_disk(root1: &Path, root2: &Path, dest: &Path) -> Result<Option<PathBuf>> {
    if !tools_present() {
        return Ok(None);
    }
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let raw = dest.join("two-installs.raw");
    let vhdx = dest.join("two-installs.vhdx");
    let _ = fs::remove_file(&vhdx);
    gpt_disk_with_installs(&[root1, root2], &raw, dest)?;
    convert(&raw, &vhdx, "vhdx", None)?;
    let _ = fs::remove_file(&raw);
    Ok(Some(vhdx))
}

/// Builds `windows.raw` (GPT, one 200 MiB NTFS basic-data partition at
/// 1 MiB holding `root` laid down by `wimlib-imagex apply`, security
/// descriptors kept), `windows.vhd` (dynamic) and `windows.vhdx` in `dest`,
/// and returns their paths in that order. Needs `sfdisk`, `mkntfs`,
/// `wimlib-imagex` (built with NTFS-3G support) and `qemu-img`; when one is
/// missing, prints a notice and returns an empty list.
pub fn build_disk_images(root: &Path, dest: &Path) -> Result<Vec<PathBuf>> {
    ensure!(
        root.join("Windows/System32/config/SYSTEM").is_file(),
        "{}: not a Windows root",
        root.display()
    );
    if !tools_present() {
        return Ok(Vec::new());
    }
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let raw = dest.join("windows.raw");
    let vhd = dest.join("windows.vhd");
    let vhdx = dest.join("windows.vhdx");
    for p in [&raw, &vhd, &vhdx] {
        let _ = fs::remove_file(p);
    }
    gpt_disk_with_installs(&[root], &raw, dest)?;
    convert(&raw, &vhd, "vpc", Some("subformat=dynamic,force_size=on"))?;
    convert(&raw, &vhdx, "vhdx", None)?;
    Ok(vec![raw, vhd, vhdx])
}
