//! Writes seed corpora for the disk targets into `corpus/<target>/`: small
//! images made by qemu-img (VHDX, VHD dynamic and fixed, qcow2 v2/v3,
//! VMDK sparse and streamOptimized, raw with a GPT made by sfdisk).
use std::path::Path;
use std::process::Command;

fn run(cmd: &mut Command) -> bool {
    cmd.status().is_ok_and(|s| s.success())
}

fn main() {
    let tmp = std::env::temp_dir().join(format!("reseal-fuzz-seeds-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&tmp);
    let raw = tmp.join("disk.raw");
    let _ = std::fs::remove_file(&raw);
    let made = run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&raw)
        .arg("4M"));
    if made {
        let table =
            "label: gpt\nstart=2048, size=4096, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n";
        let mut c = Command::new("sfdisk");
        c.args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&raw);
        c.stdin(std::process::Stdio::piped());
        if let Ok(mut child) = c.spawn() {
            use std::io::Write;
            if let Some(mut s) = child.stdin.take() {
                let _ = s.write_all(table.as_bytes());
            }
            let _ = child.wait();
        }
    }
    let formats: &[(&str, &str, &str)] = &[
        ("vhdx", "vhdx", ""),
        ("vpc", "vhd", "subformat=dynamic"),
        ("vpc", "fixed.vhd", "subformat=fixed"),
        ("qcow2", "qcow2", "compat=1.1"),
        ("qcow2", "v2.qcow2", "compat=0.10"),
        ("vmdk", "vmdk", "subformat=monolithicSparse"),
        ("vmdk", "so.vmdk", "subformat=streamOptimized"),
    ];
    let mut seeds = vec![raw.clone()];
    for (fmt, ext, opts) in formats {
        let out = tmp.join(format!("disk.{ext}"));
        let _ = std::fs::remove_file(&out);
        let mut c = Command::new("qemu-img");
        c.args(["convert", "-q", "-f", "raw", "-O", fmt]);
        if !opts.is_empty() {
            c.args(["-o", opts]);
        }
        if run(c.arg(&raw).arg(&out)) {
            seeds.push(out);
        }
    }
    for target in ["disk_image", "vhdx_checksummed", "vhd_gpt_checksummed"] {
        let dir = Path::new("corpus").join(target);
        let _ = std::fs::create_dir_all(&dir);
        for s in &seeds {
            let name = s
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let keep = match target {
                "vhdx_checksummed" => name.ends_with("vhdx"),
                "vhd_gpt_checksummed" => name.ends_with("vhd") || name.ends_with("raw"),
                _ => true,
            };
            if keep {
                let _ = std::fs::copy(s, dir.join(&name));
            }
        }
        println!("{}: seeds in {}", target, dir.display());
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
