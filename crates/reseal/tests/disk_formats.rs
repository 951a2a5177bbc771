//! The disk block layer against qemu-img and sfdisk, and against real
//! Windows-made images from the corpus.

use reseal::disk::{self, Access, BlockDevice, PartitionKind, PartitionScheme};
use std::path::{Path, PathBuf};
use std::process::Command;

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn need(cmd: &str) -> bool {
    reseal_testkit::require(have(cmd), &format!("the command `{cmd}`"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

use reseal_testkit::XorShift as Rng;

fn qfmt(img: &Path) -> &'static str {
    match disk::detect_format(img).unwrap() {
        disk::ImageFormat::Raw => "raw",
        disk::ImageFormat::Vhd => "vpc",
        disk::ImageFormat::Vhdx => "vhdx",
        disk::ImageFormat::Qcow2 => "qcow2",
        disk::ImageFormat::Vmdk => "vmdk",
    }
}

fn qemu_raw(img: &Path, dir: &Path) -> PathBuf {
    let out = dir.join(format!(
        "{}.raw",
        img.file_name().unwrap().to_string_lossy()
    ));
    run(Command::new("qemu-img")
        .args(["convert", "-f", qfmt(img), "-O", "raw"])
        .arg(img)
        .arg(&out));
    out
}

fn qemu_check(img: &Path) {
    let out = Command::new("qemu-img")
        .arg("check")
        .arg(img)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() || text.contains("does not support checks"),
        "qemu-img check {}: {text}",
        img.display()
    );
}

/// Compares a device with a (possibly large, sparse) raw file chunk by chunk.
fn assert_same(dev: &dyn BlockDevice, raw: &Path) {
    assert_same_upto(dev, raw, u64::MAX)
}

/// As [`assert_same`], comparing only the first `limit` bytes.
fn assert_same_upto(dev: &dyn BlockDevice, raw: &Path, limit: u64) {
    let f = std::fs::File::open(raw).unwrap();
    let rlen = f.metadata().unwrap().len();
    assert_eq!(dev.len(), rlen, "size of {}", raw.display());
    let rlen = rlen.min(limit);
    use std::os::unix::fs::FileExt;
    let chunk = 4 << 20;
    let (mut a, mut b) = (vec![0u8; chunk], vec![0u8; chunk]);
    let mut off = 0;
    while off < rlen {
        let n = (rlen - off).min(chunk as u64) as usize;
        dev.read_at(off, &mut a[..n]).unwrap();
        f.read_exact_at(&mut b[..n], off).unwrap();
        if a[..n] != b[..n] {
            let i = a[..n]
                .iter()
                .zip(&b[..n])
                .position(|(x, y)| x != y)
                .unwrap();
            panic!("{}: differs at {}", raw.display(), off + i as u64);
        }
        off += n as u64;
    }
}

fn random_writes(dev: &mut dyn BlockDevice, model: &mut [u8], seed: u64, count: usize) {
    let mut rng = Rng(seed);
    let len = model.len() as u64;
    for i in 0..count {
        let n = 1 + rng.below(if i % 5 == 0 { 300_000 } else { 5000 });
        let n = n.min(len);
        let off = rng.below(len - n + 1);
        let byte = (rng.next() & 0xFF) as u8;
        let data: Vec<u8> = (0..n).map(|k| byte.wrapping_add(k as u8)).collect();
        dev.write_at(off, &data).unwrap();
        model[off as usize..(off + n) as usize].copy_from_slice(&data);
        // Read back a random range and compare with the model.
        let m = 1 + rng.below(70_000).min(len - 1);
        let o = rng.below(len - m + 1);
        let mut got = vec![0u8; m as usize];
        dev.read_at(o, &mut got).unwrap();
        assert_eq!(got, model[o as usize..(o + m) as usize], "after write {i}");
    }
}

fn file_hash(p: &Path) -> u32 {
    disk::crc32(&std::fs::read(p).unwrap())
}

#[test]
fn raw_random_writes_match_model() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.raw");
    std::fs::File::create(&p).unwrap().set_len(8 << 20).unwrap();
    let mut model = vec![0u8; 8 << 20];
    {
        let mut d = disk::open_image(&p, Access::ReadWrite).unwrap();
        random_writes(&mut d, &mut model, 1, 200);
        d.flush().unwrap();
        assert!(d.write_at(8 << 20, &[1]).is_err());
    }
    assert_eq!(std::fs::read(&p).unwrap(), model);
}

fn roundtrip(fmt: &str, opts: &[&str], seed: u64) {
    if !need("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(format!("t.{fmt}"));
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", fmt]);
    for o in opts {
        c.args(["-o", o]);
    }
    run(c.arg(&p).arg("48M"));
    let len = disk::open_image(&p, Access::ReadOnly).unwrap().len();
    let mut model = vec![0u8; len as usize];
    {
        let mut d = disk::open_image(&p, Access::ReadWrite).unwrap();
        random_writes(&mut d, &mut model, seed, 150);
        d.flush().unwrap();
    }
    qemu_check(&p);
    let raw = qemu_raw(&p, dir.path());
    assert!(
        std::fs::read(&raw).unwrap() == model,
        "{fmt} {opts:?}: qemu's view differs"
    );
    let d = disk::open_image(&p, Access::ReadOnly).unwrap();
    assert_same(&d, &raw);
}

#[test]
fn vhd_dynamic_writes_qemu_agrees() {
    roundtrip("vpc", &["subformat=dynamic"], 2);
}

#[test]
fn vhd_fixed_writes_qemu_agrees() {
    roundtrip("vpc", &["subformat=fixed"], 3);
}

#[test]
fn vhdx_dynamic_writes_qemu_agrees() {
    roundtrip("vhdx", &["subformat=dynamic", "block_size=1M"], 4);
}

#[test]
fn vhdx_fixed_writes_qemu_agrees() {
    roundtrip("vhdx", &["subformat=fixed"], 5);
}

/// Images written by qemu (converted from a raw pattern) read the same.
#[test]
fn qemu_written_images_read_equal() {
    if !need("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let mut data = vec![0u8; 20 << 20];
    let mut rng = Rng(9);
    for _ in 0..40 {
        let off = rng.below(data.len() as u64 - 70_000) as usize;
        let n = rng.below(70_000) as usize;
        let b = rng.next() as u8 | 1;
        data[off..off + n].fill(b);
    }
    std::fs::write(&src, &data).unwrap();
    for (fmt, sub) in [
        ("vpc", "dynamic"),
        ("vpc", "fixed"),
        ("vhdx", "dynamic"),
        ("vhdx", "fixed"),
    ] {
        let out = dir.path().join(format!("o-{fmt}-{sub}"));
        run(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", fmt, "-o"])
            .arg(format!("subformat={sub}"))
            .arg(&src)
            .arg(&out));
        let raw = qemu_raw(&out, dir.path());
        let d = disk::open_image(&out, Access::ReadOnly).unwrap();
        assert_same(&d, &raw);
    }
}

#[test]
fn sfdisk_tables_are_listed() {
    if !need("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (label, script) in [
        ("dos", "label: dos\n,4M,7,*\n,3M,83\n,,5\n,2M,7\n,1M,c\n"),
        (
            "gpt",
            "label: gpt\nsize=4M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=\"Basic data\"\nsize=2M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=EFI\ntype=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=linux\n",
        ),
    ] {
        let p = dir.path().join(format!("{label}.img"));
        std::fs::File::create(&p)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let mut child = Command::new("sfdisk")
            .arg("-q")
            .arg(&p)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        let json: serde_json::Value =
            serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(&p))).unwrap();
        let d = disk::open_image(&p, Access::ReadOnly).unwrap();
        let parts = disk::list_partitions(&d, &p).unwrap();
        let expected: Vec<_> = json["partitiontable"]["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| label == "gpt" || !matches!(e["type"].as_str(), Some("5" | "f" | "85")))
            .collect();
        assert_eq!(parts.len(), expected.len(), "{label}: {parts:?}");
        for (p, e) in parts.iter().zip(expected) {
            assert_eq!(p.offset, e["start"].as_u64().unwrap() * 512);
            assert_eq!(p.length, e["size"].as_u64().unwrap() * 512);
            let node = e["node"].as_str().unwrap();
            assert!(
                node.ends_with(&p.number.to_string()),
                "{node} vs {}",
                p.number
            );
            let ty = e["type"].as_str().unwrap();
            match p.kind {
                PartitionKind::Mbr(t) => {
                    assert_eq!(p.scheme, PartitionScheme::Mbr);
                    assert_eq!(format!("{t:x}"), ty);
                }
                PartitionKind::Gpt(g) => {
                    assert_eq!(g.to_string(), ty.to_ascii_uppercase());
                    assert_eq!(p.name, e["name"].as_str().unwrap());
                }
            }
        }
        // A view of the first partition reads what the disk holds there.
        let first = &parts[0];
        let mut view =
            disk::PartitionDevice::of(disk::open_image(&p, Access::ReadWrite).unwrap(), first)
                .unwrap();
        view.write_at(0, b"hello").unwrap();
        assert!(view.write_at(first.length - 2, b"abc").is_err());
        let mut got = [0u8; 5];
        d.read_at(first.offset, &mut got).unwrap();
        assert_eq!(&got, b"hello");
    }
}

fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("RESEAL_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"));
    if dir.is_dir() {
        Some(dir)
    } else {
        reseal_testkit::require(false, &format!("the shared corpus at {}", dir.display()));
        None
    }
}

/// Decompresses (or copies) a corpus file into `dir`.
fn unpack(src: &Path, dir: &Path) -> PathBuf {
    let name = src.file_name().unwrap().to_string_lossy().into_owned();
    let (tool, stem) = if let Some(s) = name.strip_suffix(".bz2") {
        (Some("bzip2"), s.to_string())
    } else if let Some(s) = name.strip_suffix(".gz") {
        (Some("gzip"), s.to_string())
    } else {
        (None, name.clone())
    };
    let out = dir.join(stem);
    match tool {
        Some(t) => {
            let o = Command::new(t).arg("-dc").arg(src).output().unwrap();
            assert!(o.status.success());
            std::fs::write(&out, o.stdout).unwrap();
        }
        None => {
            std::fs::copy(src, &out).unwrap();
        }
    }
    let mut perm = std::fs::metadata(&out).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&out, perm).unwrap();
    out
}

#[test]
fn corpus_images_read_like_qemu() {
    let Some(c) = corpus() else { return };
    if !need("qemu-img") {
        return;
    }
    let files = [
        "dissect.hypervisor/tests/_data/disk/vhdx/fixed.vhdx.gz",
        "dissect.hypervisor/tests/_data/disk/vhdx/dynamic.vhdx.gz",
        "dissect.hypervisor/tests/_data/disk/vhd/fixed.vhd.gz",
        "dissect.hypervisor/tests/_data/disk/vhd/dynamic.vhd.gz",
        "qemu-debian-src/tests/qemu-iotests/sample_images/hyperv2012r2-dynamic.vhd.bz2",
        "qemu-debian-src/tests/qemu-iotests/sample_images/test-disk2vhd.vhdx.bz2",
        "qemu-debian-src/tests/qemu-iotests/sample_images/iotest-dynamic-1G.vhdx.bz2",
        "qemu-debian-src/tests/qemu-iotests/sample_images/d2v-zerofilled.vhd.bz2",
        "qemu-debian-src/tests/qemu-iotests/sample_images/virtualpc-dynamic.vhd.bz2",
        "dissect.ntfs-pypi-sdist/tests/_data/ntfs.bin.gz",
    ];
    let dir = tempfile::tempdir().unwrap();
    for f in files {
        let src = c.join(f);
        if !reseal_testkit::require(src.exists(), &format!("corpus file {}", src.display())) {
            continue;
        }
        let img = unpack(&src, dir.path());
        let before = file_hash(&img);
        let raw = qemu_raw(&img, dir.path());
        let d = disk::open_image(&img, Access::ReadOnly).unwrap_or_else(|e| panic!("{f}: {e}"));
        // ntfs.bin is a fixed VHD whose data area is shorter than its
        // size: qemu shows the footer bytes after the data, this layer
        // zeros; compare the data area.
        let limit = if f.ends_with("ntfs.bin.gz") {
            std::fs::metadata(&img).unwrap().len() - 512
        } else {
            u64::MAX
        };
        assert_same_upto(&d, &raw, limit);
        drop(d);
        assert_eq!(before, file_hash(&img), "{f} modified");
        std::fs::remove_file(raw).unwrap();
        println!("ok: {f}");
    }
}

#[test]
fn corpus_differencing_and_odd_images_do_not_panic() {
    let Some(c) = corpus() else { return };
    for f in [
        "dfvfs/test_data/image.vhd",
        "dfvfs/test_data/image-differential.vhd",
        "dfvfs/test_data/fat-differential.vhd",
        "dissect.hypervisor/tests/_data/disk/vhdx/differencing.avhdx.gz",
    ] {
        let src = c.join(f);
        if !src.exists() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = unpack(&src, dir.path());
        match disk::open_image(&img, Access::ReadOnly) {
            Ok(d) => {
                let mut buf = vec![0u8; d.len().min(1 << 20) as usize];
                d.read_at(0, &mut buf).unwrap();
                println!("ok: {f}: {} bytes", d.len());
            }
            Err(e) => println!("refused: {f}: {e}"),
        }
    }
}

#[test]
fn corpus_dirty_log_vhdx_is_replayed() {
    let Some(c) = corpus() else { return };
    if !need("qemu-img") {
        return;
    }
    let src =
        c.join("qemu-debian-src/tests/qemu-iotests/sample_images/iotest-dirtylog-10G-4M.vhdx.bz2");
    if !reseal_testkit::require(src.exists(), "the dirty-log VHDX sample of the corpus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = unpack(&src, dir.path());
    let before = file_hash(&img);
    // qemu's replay, on a copy.
    let qcopy = dir.path().join("qemu-replayed.vhdx");
    std::fs::copy(&img, &qcopy).unwrap();
    let _ = Command::new("qemu-img")
        .args(["check", "-r", "all"])
        .arg(&qcopy)
        .output()
        .unwrap();
    let raw = qemu_raw(&qcopy, dir.path());
    {
        let d = disk::vhdx::VhdxDisk::open(&img, Access::ReadOnly).unwrap();
        assert!(d.log_replayed());
        assert_same(&d, &raw);
    }
    assert_eq!(
        before,
        file_hash(&img),
        "read-only replay modified the file"
    );
    // Replay into the file.
    {
        let mut d = disk::vhdx::VhdxDisk::open(&img, Access::ReadWrite).unwrap();
        assert!(d.log_replayed());
        d.flush().unwrap();
    }
    let d = disk::vhdx::VhdxDisk::open(&img, Access::ReadOnly).unwrap();
    assert!(!d.log_replayed(), "log still marked non-empty after replay");
    qemu_check(&img);
    assert_same(&d, &raw);
}

#[test]
fn damaged_containers_are_refused_untouched() {
    if !need("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    type Case = (String, PathBuf, Vec<(u64, bool)>);
    let mut cases: Vec<Case> = Vec::new();
    for (fmt, sub) in [("vpc", "dynamic"), ("vhdx", "dynamic"), ("vpc", "fixed")] {
        let p = dir.path().join(format!("base-{fmt}-{sub}"));
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", fmt, "-o"])
            .arg(format!("subformat={sub}"))
            .arg(&p)
            .arg("16M"));
        let mut d = disk::open_image(&p, Access::ReadWrite).unwrap();
        d.write_at(3 << 20, &[7u8; 9000]).unwrap();
        d.flush().unwrap();
        drop(d);
        let len = std::fs::metadata(&p).unwrap().len();
        // (offset to flip, expect refusal)
        let flips: Vec<(u64, bool)> = match (fmt, sub) {
            ("vpc", "fixed") => vec![(len - 512 + 48, true)],
            // Footer (end), dynamic header cookie, BAT first entry high byte.
            ("vpc", _) => vec![
                (len - 512 + 1, true),
                (512, true),
                (512 + 40, true),
                (1536, true),
            ],
            // File identifier, both headers, region table, metadata, BAT.
            _ => vec![
                (0, true),
                (64 * 1024 + 8, false),
                (192 * 1024 + 20, false),
                (3 << 20, true),
            ],
        };
        cases.push((format!("{fmt}-{sub}"), p, flips));
    }
    for (name, base, flips) in cases {
        for (i, (at, refuse)) in flips.iter().enumerate() {
            let p = dir.path().join(format!("{name}-flip{i}"));
            std::fs::copy(&base, &p).unwrap();
            let mut bytes = std::fs::read(&p).unwrap();
            if *at as usize >= bytes.len() {
                continue;
            }
            bytes[*at as usize] ^= 0xA5;
            std::fs::write(&p, &bytes).unwrap();
            let h = file_hash(&p);
            let r = disk::open_image(&p, Access::ReadWrite);
            match (&r, refuse) {
                (Err(e), true) => println!("refused {name} flip at {at}: {e}"),
                (Ok(_), false) => {}
                (Ok(_), true) => panic!("{name}: flip at {at} accepted"),
                (Err(e), false) => panic!("{name}: flip at {at} (redundant copy) refused: {e}"),
            }
            drop(r);
            assert_eq!(h, file_hash(&p), "{name}: refused file modified");
        }
        // Truncations.
        let full = std::fs::read(&base).unwrap();
        for cut in [100usize, 4096, full.len() / 2, full.len() - 1] {
            let p = dir.path().join(format!("{name}-cut{cut}"));
            std::fs::write(&p, &full[..cut]).unwrap();
            let r = disk::open_image(&p, Access::ReadWrite);
            if let Ok(d) = &r {
                // Some cuts leave a valid-looking raw file; it must not be a VHD(X) then.
                assert_eq!(
                    disk::detect_format(&p).unwrap(),
                    disk::ImageFormat::Raw,
                    "{name} cut {cut}: {d:?}",
                    d = d.len()
                );
            } else if let Err(e) = &r {
                println!("refused {name} cut {cut}: {e}");
            }
            drop(r);
            assert_eq!(&std::fs::read(&p).unwrap()[..], &full[..cut]);
        }
    }
}
