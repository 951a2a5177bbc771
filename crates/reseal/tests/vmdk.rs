//! VMDK images made by qemu-img (every subformat it writes): our reads
//! equal qemu's (`qemu-img convert -O raw`); random writes equal an
//! in-memory model, pass `qemu-img check` and `qemu-img compare`, and keep
//! the redundant grain tables equal to the primary ones; children read
//! through to their parent; streamOptimized writes, unclean images,
//! escaping extent names and corrupt tables are refused without panics.

use reseal::ResealError;
use reseal::disk::vmdk::VmdkDisk;
use reseal::disk::{self, Access, BlockDevice};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
/// Granularity of the model.
const CHUNK: u64 = 64 * KIB;
/// A size that makes qemu split twoGbMaxExtent disks into two extents.
const TWO_EXTENTS: u64 = 2 * GIB + 16 * MIB;

fn need_qemu() -> bool {
    reseal_testkit::require_tool("qemu-img") && reseal_testkit::require_tool("qemu-io")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn create(path: &Path, subformat: &str, size: u64) {
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "vmdk", "-o"])
        .arg(format!("subformat={subformat}"))
        .arg(path)
        .arg(size.to_string()));
}

fn qemu_write(img: &Path, offset: u64, len: u64, byte: u8) {
    run(Command::new("qemu-io")
        .args(["-f", "vmdk", "-c"])
        .arg(format!("write -P 0x{byte:02x} {offset} {len}"))
        .arg(img));
}

fn qemu_check(img: &Path) {
    let out = run(Command::new("qemu-img")
        .args(["check", "-f", "vmdk"])
        .arg(img));
    assert!(
        out.contains("No errors"),
        "qemu-img check {}: {out}",
        img.display()
    );
}

/// qemu's view of the whole disk, as a (sparse) raw file.
fn qemu_raw(img: &Path) -> PathBuf {
    let out = img.with_extension("qemu.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "vmdk", "-O", "raw"])
        .arg(img)
        .arg(&out));
    out
}

use reseal_testkit::XorShift as Rng;

fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..n).map(|_| (r.next() >> 24) as u8).collect()
}

/// The expected contents of a disk, by 64 KiB chunk (absent: zeros).
struct Model {
    len: u64,
    chunks: BTreeMap<u64, Vec<u8>>,
}

impl Model {
    fn zeros(len: u64) -> Model {
        Model {
            len,
            chunks: BTreeMap::new(),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        assert!(offset + data.len() as u64 <= self.len);
        let mut pos = 0usize;
        while pos < data.len() {
            let at = offset + pos as u64;
            let (c, i) = (at / CHUNK, (at % CHUNK) as usize);
            let n = (CHUNK as usize - i).min(data.len() - pos);
            let chunk = self
                .chunks
                .entry(c)
                .or_insert_with(|| vec![0u8; CHUNK as usize]);
            chunk[i..i + n].copy_from_slice(&data[pos..pos + n]);
            pos += n;
        }
    }

    fn read(&self, offset: u64, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        let mut pos = 0usize;
        while pos < n {
            let at = offset + pos as u64;
            let (c, i) = (at / CHUNK, (at % CHUNK) as usize);
            let k = (CHUNK as usize - i).min(n - pos);
            if let Some(chunk) = self.chunks.get(&c) {
                out[pos..pos + k].copy_from_slice(&chunk[i..i + k]);
            }
            pos += k;
        }
        out
    }

    fn write_raw(&self, path: &Path) {
        let f = std::fs::File::create(path).unwrap();
        f.set_len(self.len).unwrap();
        for (&c, data) in &self.chunks {
            f.write_all_at(data, c * CHUNK).unwrap();
        }
    }
}

/// `qemu-img compare` of the image with the model written as raw.
fn qemu_compare(img: &Path, model: &Model) {
    let expected = img.with_extension("expected.raw");
    model.write_raw(&expected);
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "vmdk"])
        .arg(&expected)
        .arg(img));
    std::fs::remove_file(&expected).unwrap();
}

/// Ranges worth comparing: the written ones widened by 4 KiB, every
/// extent boundary, and random probes.
fn probes(len: u64, written: &[(u64, u64)], seed: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(at, n) in written {
        let s = at.saturating_sub(4 * KIB);
        let e = (at + n + 4 * KIB).min(len);
        out.push((s, e - s));
    }
    for b in [0, 2 * GIB - 64 * KIB, len - 64 * KIB] {
        if b + 128 * KIB <= len {
            out.push((b, 128 * KIB));
        }
    }
    let mut r = Rng(seed | 1);
    for _ in 0..64 {
        let n = 1 + r.below(200 * KIB);
        out.push((r.below(len - n), n));
    }
    out
}

fn assert_reads(
    dev: &dyn BlockDevice,
    expected: impl Fn(u64, usize) -> Vec<u8>,
    ranges: &[(u64, u64)],
) {
    for &(at, n) in ranges {
        let mut buf = vec![0u8; n as usize];
        dev.read_at(at, &mut buf).unwrap();
        let want = expected(at, n as usize);
        if buf != want {
            let i = buf.iter().zip(&want).position(|(a, b)| a != b).unwrap();
            panic!("mismatch at disk offset {}", at + i as u64);
        }
    }
}

fn raw_reader(path: &Path) -> impl Fn(u64, usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    move |at, n| {
        let mut b = vec![0u8; n];
        f.read_exact_at(&mut b, at).unwrap();
        b
    }
}

/// A raw file with deterministic data at scattered places (some across
/// 64 KiB grain boundaries and across 2 GiB), and those places.
fn make_source(path: &Path, len: u64, seed: u64) -> Vec<(u64, u64)> {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len).unwrap();
    let mut r = Rng(seed | 1);
    let mut written = Vec::new();
    let mut spots: Vec<u64> = (0..40).map(|_| r.below(len)).collect();
    spots.extend([0, 64 * KIB - 100, 2 * GIB - 3000, len - 5000]);
    for (i, at) in spots.into_iter().enumerate() {
        if at >= len {
            continue;
        }
        let n = (1 + r.below(300 * KIB)).min(len - at);
        f.write_all_at(&pattern(seed + i as u64, n as usize), at)
            .unwrap();
        written.push((at, n));
    }
    written
}

const SUBFORMATS: [&str; 5] = [
    "monolithicSparse",
    "twoGbMaxExtentSparse",
    "monolithicFlat",
    "twoGbMaxExtentFlat",
    "streamOptimized",
];

#[test]
fn qemu_made_images_read_like_qemu() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (k, sub) in SUBFORMATS.iter().enumerate() {
        for len in [64 * MIB + 12 * KIB, TWO_EXTENTS] {
            let src = dir.path().join(format!("{sub}-{len}.src.raw"));
            let written = make_source(&src, len, 100 + k as u64);
            let img = dir.path().join(format!("{sub}-{len}.vmdk"));
            run(Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "vmdk", "-o"])
                .arg(format!("subformat={sub}"))
                .arg(&src)
                .arg(&img));
            assert_eq!(disk::detect_format(&img).unwrap(), disk::ImageFormat::Vmdk);
            let dev = disk::open_image(&img, Access::ReadOnly).unwrap();
            assert_eq!(dev.len(), len, "{sub}");
            let qraw = qemu_raw(&img);
            let ranges = probes(len, &written, 7 + k as u64);
            assert_reads(dev.as_ref(), raw_reader(&qraw), &ranges);
            assert_reads(dev.as_ref(), raw_reader(&src), &ranges);
            if len < GIB {
                // The whole disk, in 1 MiB reads.
                assert_reads(
                    dev.as_ref(),
                    raw_reader(&qraw),
                    &(0..len.div_ceil(MIB))
                        .map(|i| (i * MIB, MIB.min(len - i * MIB)))
                        .collect::<Vec<_>>(),
                );
            }
            let v = VmdkDisk::open(&img, Access::ReadOnly).unwrap();
            assert_eq!(v.create_type(), Some(*sub));
            drop(dev);
            drop(v);
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                std::fs::remove_file(entry.unwrap().path()).unwrap();
            }
        }
    }
}

/// Parses a sparse extent's header: (grain directory, redundant grain
/// directory, entries per table) offsets in bytes.
fn tables(file: &Path) -> Vec<(u32, u32)> {
    let b = std::fs::read(file).unwrap();
    let le32 = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let le64 = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert_eq!(&b[0..4], b"KDMV");
    assert_eq!(
        b[72],
        0,
        "unclean-shutdown byte left set in {}",
        file.display()
    );
    let (cap, grain, gtes) = (le64(12), le64(20), u64::from(le32(44)));
    let (rgd, gd) = (le64(48) as usize * 512, le64(56) as usize * 512);
    let entries = cap.div_ceil(grain * gtes) as usize;
    let mut out = Vec::new();
    for i in 0..entries {
        let (p, r) = (le32(gd + 4 * i), le32(rgd + 4 * i));
        assert_eq!(p == 0, r == 0, "GD/RGD entry {i} of {}", file.display());
        if p != 0 {
            let (p, r) = (p as usize * 512, r as usize * 512);
            let n = gtes as usize * 4;
            let diff = (0..n)
                .step_by(4)
                .find(|&k| b[p + k..p + k + 4] != b[r + k..r + k + 4]);
            assert!(
                diff.is_none(),
                "grain table {i} of {} differs from its redundant copy at entry {:?}",
                file.display(),
                diff.map(|k| k / 4)
            );
            out.extend(
                b[p..p + n]
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .zip(
                        b[r..r + n]
                            .chunks_exact(4)
                            .map(|c| u32::from_le_bytes(c.try_into().unwrap())),
                    ),
            );
        }
    }
    out
}

fn sparse_files(img: &Path) -> Vec<PathBuf> {
    let dir = img.parent().unwrap();
    let stem = img.file_stem().unwrap().to_string_lossy().into_owned();
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&stem) && n.ends_with(".vmdk")
        })
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.starts_with(b"KDMV")))
        .collect();
    v.sort();
    v
}

/// Random writes of 1 byte to 300 KiB (many across grain boundaries and,
/// for big disks, across the 2 GiB extent boundary), checked against the
/// model by us and by qemu.
fn random_writes(img: &Path, len: u64, seed: u64, count: usize, model: &mut Model) {
    let mut dev = VmdkDisk::open(img, Access::ReadWrite).unwrap();
    assert_eq!(dev.len(), len);
    let mut r = Rng(seed | 1);
    let (lo, hi) = if len > 2 * GIB {
        (2 * GIB - 8 * MIB, 2 * GIB + 8 * MIB)
    } else {
        (0, len)
    };
    let mut written = Vec::new();
    for i in 0..count {
        let n = match r.below(4) {
            0 => 1 + r.below(512),
            1 => 512 * (1 + r.below(256)),
            2 => 64 * KIB,
            _ => 1 + r.below(300 * KIB),
        };
        let at = if r.below(10) == 0 {
            r.below(len - n)
        } else {
            lo + r.below(hi - lo - n)
        };
        let data = pattern(seed * 1000 + i as u64, n as usize);
        dev.write_at(at, &data).unwrap();
        model.write(at, &data);
        written.push((at, n));
        if i % 97 == 50 {
            dev.flush().unwrap();
        }
    }
    let ranges = probes(len, &written, seed);
    assert_reads(&dev, |at, n| model.read(at, n), &ranges);
    dev.flush().unwrap();
    drop(dev);
    let dev = VmdkDisk::open(img, Access::ReadOnly).unwrap();
    assert_reads(&dev, |at, n| model.read(at, n), &ranges);
}

#[test]
fn random_writes_match_model_and_qemu() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (k, sub) in SUBFORMATS[..4].iter().enumerate() {
        for len in [64 * MIB, TWO_EXTENTS] {
            let img = dir.path().join(format!("w-{sub}-{len}.vmdk"));
            create(&img, sub, len);
            let mut model = Model::zeros(len);
            // Some data qemu wrote first, overwritten in part.
            let base = if len > 2 * GIB {
                2 * GIB - 2 * MIB
            } else {
                MIB
            };
            qemu_write(&img, base, 3 * MIB, 0x5a);
            model.write(base, &vec![0x5a; 3 * MIB as usize]);
            random_writes(&img, len, 11 + k as u64, 300, &mut model);
            qemu_check(&img);
            qemu_compare(&img, &model);
            for f in sparse_files(&img) {
                let gtes = tables(&f);
                assert!(
                    gtes.iter().any(|&(p, _)| p > 1),
                    "{}: no grains",
                    f.display()
                );
            }
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                std::fs::remove_file(entry.unwrap().path()).unwrap();
            }
        }
    }
}

/// Byte offset of the grain directory and the redundant one.
fn directories(b: &[u8]) -> (usize, usize) {
    let le64 = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    (le64(56) as usize * 512, le64(48) as usize * 512)
}

#[test]
fn missing_grain_tables_are_allocated() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("gt.vmdk");
    let len = 256 * MIB;
    create(&img, "monolithicSparse", len);
    // Every grain table (32 MiB each) dropped from both directories: the
    // image is valid, with no table at all.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let b = std::fs::read(&img).unwrap();
    let old_len = b.len();
    let (gd, rgd) = directories(&b);
    f.write_all_at(&[0u8; 32], gd as u64).unwrap();
    f.write_all_at(&[0u8; 32], rgd as u64).unwrap();
    drop(f);
    qemu_check(&img);
    let mut model = Model::zeros(len);
    random_writes(&img, len, 5, 200, &mut model);
    qemu_check(&img);
    qemu_compare(&img, &model);
    let b = std::fs::read(&img).unwrap();
    let gd_entries: Vec<u32> = (0..8)
        .map(|i| u32::from_le_bytes(b[gd + 4 * i..gd + 4 * i + 4].try_into().unwrap()))
        .collect();
    assert!(gd_entries.iter().any(|&e| e != 0));
    assert!(
        gd_entries
            .iter()
            .all(|&e| e == 0 || e as usize * 512 >= old_len),
        "new tables are appended: {gd_entries:?}"
    );
    tables(&img);
}

#[test]
fn unclean_flag_is_set_while_writing_and_refused_on_open() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("u.vmdk");
    create(&img, "monolithicSparse", 16 * MIB);
    let byte = |p: &Path| std::fs::read(p).unwrap()[72];
    let mut dev = VmdkDisk::open(&img, Access::ReadWrite).unwrap();
    assert_eq!(byte(&img), 0);
    dev.write_at(100_000, b"hello").unwrap();
    assert_eq!(byte(&img), 1, "the flag is set before the first change");
    // A copy taken now, as after a crash.
    let crashed = dir.path().join("crashed.vmdk");
    std::fs::copy(&img, &crashed).unwrap();
    dev.flush().unwrap();
    assert_eq!(byte(&img), 0, "flush clears the flag last");
    drop(dev);
    qemu_check(&img);
    for access in [Access::ReadOnly, Access::ReadWrite] {
        let err = VmdkDisk::open(&crashed, access).unwrap_err().to_string();
        assert!(
            err.contains("unclean") && err.contains("qemu-img convert"),
            "{err}"
        );
    }
    // Drop without flush also commits.
    let mut dev = VmdkDisk::open(&img, Access::ReadWrite).unwrap();
    dev.write_at(5 * MIB, b"world").unwrap();
    drop(dev);
    assert_eq!(byte(&img), 0);
    let mut model = Model::zeros(16 * MIB);
    model.write(100_000, b"hello");
    model.write(5 * MIB, b"world");
    qemu_compare(&img, &model);
}

#[test]
fn stream_optimized_is_read_only() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s.raw");
    make_source(&src, 32 * MIB, 3);
    let img = dir.path().join("s.vmdk");
    run(Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
        ])
        .arg(&src)
        .arg(&img));
    let before = std::fs::read(&img).unwrap();
    let err = VmdkDisk::open(&img, Access::ReadWrite)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("streamOptimized") && err.contains("subformat=monolithicSparse"),
        "{err}"
    );
    assert!(disk::open_image(&img, Access::ReadWrite).is_err());
    let mut dev = VmdkDisk::open(&img, Access::ReadOnly).unwrap();
    assert!(dev.write_at(0, b"x").is_err());
    assert_eq!(std::fs::read(&img).unwrap(), before);
}

#[test]
fn child_reads_through_parent_and_writes_alone() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let len = 64 * MIB;
    let parent = dir.path().join("parent.vmdk");
    create(&parent, "monolithicSparse", len);
    qemu_write(&parent, 0, 8 * MIB, 0x11);
    qemu_write(&parent, 40 * MIB + 1024, 100 * KIB, 0x22);
    let mut model = Model::zeros(len);
    model.write(0, &vec![0x11; 8 * MIB as usize]);
    model.write(40 * MIB + 1024, &vec![0x22; 100 * KIB as usize]);
    for sub in ["monolithicSparse", "twoGbMaxExtentSparse"] {
        let child = dir.path().join(format!("child-{sub}.vmdk"));
        run(Command::new("qemu-img")
            .args([
                "create",
                "-q",
                "-f",
                "vmdk",
                "-F",
                "vmdk",
                "-b",
                "parent.vmdk",
                "-o",
            ])
            .arg(format!("subformat={sub}"))
            .arg(&child));
        let parent_bytes = std::fs::read(&parent).unwrap();
        let mut m = Model::zeros(len);
        m.chunks = model.chunks.clone();
        {
            let dev = VmdkDisk::open(&child, Access::ReadOnly).unwrap();
            assert_eq!(dev.parent_path(), Some(parent.as_path()));
            assert_reads(
                &dev,
                |at, n| m.read(at, n),
                &probes(len, &[(0, 9 * MIB)], 1),
            );
        }
        random_writes(&child, len, 21, 150, &mut m);
        assert_eq!(
            std::fs::read(&parent).unwrap(),
            parent_bytes,
            "parent untouched"
        );
        qemu_check(&child);
        qemu_compare(&child, &m);
    }
    // qemu gives the parent a new CID when it writes to it: the child no
    // longer matches and is refused.
    qemu_write(&parent, 0, 512, 0x33);
    let err = VmdkDisk::open(
        &dir.path().join("child-monolithicSparse.vmdk"),
        Access::ReadOnly,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("parentCID"), "{err}");
}

fn descriptor_case(dir: &Path, name: &str, extent_line: &str) -> ResealError {
    let d = dir.join(name);
    std::fs::write(
        &d,
        format!(
            "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
             createType=\"monolithicFlat\"\n\n# Extent description\n{extent_line}\n"
        ),
    )
    .unwrap();
    assert_eq!(disk::detect_format(&d).unwrap(), disk::ImageFormat::Vmdk);
    VmdkDisk::open(&d, Access::ReadOnly).unwrap_err()
}

#[test]
fn hostile_descriptors_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("vm");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(root.path().join("outside.raw"), vec![7u8; 4096]).unwrap();
    std::fs::write(dir.join("ok-flat.vmdk"), vec![1u8; 4096]).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("../outside.raw", dir.join("link.raw")).unwrap();
    let unsafe_cases = [
        "RW 8 FLAT \"../outside.raw\" 0",
        "RW 8 FLAT \"sub/../../outside.raw\" 0",
        "RW 8 FLAT \"/etc/passwd\" 0",
        "RW 8 FLAT \"..\\outside.raw\" 0",
        "RW 8 FLAT \"link.raw\" 0",
    ];
    for (i, line) in unsafe_cases.iter().enumerate() {
        let err = descriptor_case(&dir, &format!("u{i}.vmdk"), line);
        assert!(
            matches!(err, ResealError::UnsafePath { .. }),
            "{line}: {err}"
        );
    }
    let format_cases = [
        "RW 9 FLAT \"ok-flat.vmdk\" 0",
        "RW 8 FLAT \"ok-flat.vmdk\" 1",
        "RW 18446744073709551615 FLAT \"ok-flat.vmdk\" 0",
        "RW 8 FLAT \"ok-flat.vmdk\" 18446744073709551615",
        "RW 1099511627777 ZERO",
        "RW 8 FLAT \"sub\" 0",
        "RW 8 VMFSSPARSE \"ok-flat.vmdk\"",
        "RW 8 SPARSE \"ok-flat.vmdk\"",
        "RW 8 FLAT ok-flat.vmdk 0",
        "RW 1 FLAT \"self.vmdk\" 0",
    ];
    for (i, line) in format_cases.iter().enumerate() {
        let name = if line.contains("self") {
            "self.vmdk".to_string()
        } else {
            format!("f{i}.vmdk")
        };
        let err = descriptor_case(&dir, &name, line);
        assert!(
            matches!(err, ResealError::DiskFormat { .. }),
            "{line}: {err}"
        );
    }
    let missing = descriptor_case(&dir, "m.vmdk", "RW 8 FLAT \"absent.vmdk\" 0");
    assert!(matches!(missing, ResealError::Io { .. }), "{missing}");
    // A good one still opens, and reads the flat file.
    let d = dir.join("good.vmdk");
    std::fs::write(
        &d,
        "# Disk DescriptorFile\nCID=fffffffe\nparentCID=ffffffff\nRW 8 FLAT \"./ok-flat.vmdk\" 0\nRW 8 ZERO\n",
    )
    .unwrap();
    let dev = VmdkDisk::open(&d, Access::ReadOnly).unwrap();
    let mut buf = vec![9u8; 8192];
    dev.read_at(0, &mut buf).unwrap();
    assert!(buf[..4096].iter().all(|&b| b == 1) && buf[4096..].iter().all(|&b| b == 0));
}

/// Opens `img` both ways and reads and writes all of it: any result but a
/// panic is fine.
fn exercise(img: &Path) {
    if let Ok(dev) = VmdkDisk::open(img, Access::ReadOnly) {
        let len = dev.len();
        let mut buf = vec![0u8; 256 * KIB as usize];
        let mut at = 0;
        while at < len.min(8 * MIB) {
            let n = (len - at).min(buf.len() as u64) as usize;
            let _ = dev.read_at(at, &mut buf[..n]);
            at += n as u64;
        }
    }
    if let Ok(mut dev) = VmdkDisk::open(img, Access::ReadWrite) {
        let len = dev.len();
        for at in [0, len / 3, len.saturating_sub(70 * KIB)] {
            let n = (len - at).min(70 * KIB) as usize;
            let _ = dev.write_at(at, &vec![0xA5; n]);
        }
        let _ = dev.flush();
    }
}

#[test]
fn corrupt_sparse_files_do_not_panic() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(2 * MIB).unwrap();
    for (i, at) in [0, 100 * KIB, 900 * KIB, 2 * MIB - 70 * KIB]
        .into_iter()
        .enumerate()
    {
        f.write_all_at(&pattern(i as u64, 60 * KIB as usize), at)
            .unwrap();
    }
    let mut seeds = Vec::new();
    for sub in ["monolithicSparse", "streamOptimized"] {
        let img = dir.path().join(format!("{sub}.vmdk"));
        run(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "vmdk", "-o"])
            .arg(format!("subformat={sub}"))
            .arg(&src)
            .arg(&img));
        seeds.push(std::fs::read(&img).unwrap());
    }
    let mono = &seeds[0];
    let (gd, _) = directories(mono);
    let gt = u32::from_le_bytes(mono[gd..gd + 4].try_into().unwrap()) as usize * 512;
    let work = dir.path().join("m.vmdk");
    // Targeted damage: each must be refused on open, naming an offset.
    let le = |v: u32| v.to_le_bytes();
    let targeted: Vec<(usize, Vec<u8>, &str)> = vec![
        (gd, le(0x00FF_FFFF).to_vec(), "GD entry past the file"),
        (gd, le(1).to_vec(), "GD entry onto the descriptor"),
        (gt, le(0x00FF_FFFF).to_vec(), "GT entry past the file"),
        (
            gt,
            le((gd / 512) as u32).to_vec(),
            "GT entry into the grain directory",
        ),
        (
            gt,
            le(0).to_vec(),
            "first grain dropped (valid: reads zeros)",
        ),
        (
            12,
            0xFFFF_FFFF_FFFFu64.to_le_bytes().to_vec(),
            "huge capacity",
        ),
        (
            20,
            100u64.to_le_bytes().to_vec(),
            "grain size not a power of two",
        ),
        (44, le(0).to_vec(), "no GT entries"),
        (
            56,
            u64::MAX.to_le_bytes().to_vec(),
            "GD at end without a footer",
        ),
        (73, b"\r\n".to_vec(), "newline bytes altered"),
        (0, b"KDMW".to_vec(), "magic"),
    ];
    for (at, bytes, what) in targeted {
        let mut b = mono.clone();
        b[at..at + bytes.len()].copy_from_slice(&bytes);
        std::fs::write(&work, &b).unwrap();
        let res = VmdkDisk::open(&work, Access::ReadOnly);
        if what.contains("valid") {
            assert!(res.is_ok(), "{what}");
        } else {
            let err = res.unwrap_err();
            assert!(
                matches!(err, ResealError::DiskFormat { .. }),
                "{what}: {err}"
            );
        }
        exercise(&work);
    }
    // Random damage: bit flips and random words in the header, descriptor,
    // directories, tables and data, a few thousand times.
    let mut r = Rng(0xDEC0DE);
    let (mut opened, mut refused) = (0, 0);
    for round in 0..3000 {
        let seed = &seeds[round % seeds.len()];
        let mut b = seed.clone();
        for _ in 0..1 + r.below(4) {
            let at = match r.below(4) {
                0 => r.below(512) as usize,
                1 => r.below(64 * KIB) as usize,
                _ => r.below(b.len() as u64) as usize,
            };
            if r.below(2) == 0 {
                b[at] ^= 1 << r.below(8);
            } else {
                let v = r.next().to_le_bytes();
                let n = (b.len() - at).min(4);
                b[at..at + n].copy_from_slice(&v[..n]);
            }
        }
        if r.below(20) == 0 {
            b.truncate(r.below(b.len() as u64) as usize);
        }
        std::fs::write(&work, &b).unwrap();
        match VmdkDisk::open(&work, Access::ReadOnly) {
            Ok(_) => opened += 1,
            Err(_) => refused += 1,
        }
        exercise(&work);
    }
    // Both outcomes are common: the damage reaches the checks and the
    // data paths.
    assert!(
        opened > 300 && refused > 300,
        "{opened} opened, {refused} refused"
    );
}

#[test]
fn corrupt_descriptors_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    for (name, len) in [("d-f001.vmdk", 64 * KIB), ("d-f002.vmdk", 32 * KIB)] {
        std::fs::write(dir.path().join(name), vec![0x3c; len as usize]).unwrap();
    }
    let good = "# Disk DescriptorFile\nversion=1\nCID=0badc0de\nparentCID=ffffffff\n\
                createType=\"twoGbMaxExtentFlat\"\n\n# Extent description\n\
                RW 128 FLAT \"d-f001.vmdk\" 0\nRDONLY 64 FLAT \"d-f002.vmdk\" 0\n\
                RW 16 ZERO\n\n#DDB\nddb.adapterType = \"ide\"\n";
    let work = dir.path().join("d.vmdk");
    std::fs::write(&work, good).unwrap();
    {
        let mut dev = VmdkDisk::open(&work, Access::ReadWrite).unwrap();
        assert_eq!(dev.len(), (128 + 64 + 16) * 512);
        dev.write_at(100, b"flat").unwrap();
        assert!(dev.write_at(128 * 512 + 5, b"read-only extent").is_err());
        assert!(dev.write_at(192 * 512, b"zero extent").is_err());
        let mut buf = [0u8; 8];
        dev.read_at(98, &mut buf).unwrap();
        assert_eq!(&buf, b"<<flat<<");
    }
    let words = [
        "RW",
        "RDONLY",
        "NOACCESS",
        "FLAT",
        "SPARSE",
        "ZERO",
        "\"",
        "\n",
        "../",
        "/",
        "0",
        "18446744073709551615",
        "4294967296",
        "=",
        "parentCID=12345678",
        " ",
        "\0",
    ];
    let mut r = Rng(0xF00D);
    let (mut opened, mut refused) = (0, 0);
    for _ in 0..3000 {
        let mut t = good.as_bytes().to_vec();
        for _ in 0..1 + r.below(3) {
            let at = r.below(t.len() as u64) as usize;
            match r.below(3) {
                0 => t[at] ^= 1 << r.below(8),
                1 => {
                    let w = words[r.below(words.len() as u64) as usize];
                    t.splice(at..at, w.bytes());
                }
                _ => {
                    let n = (r.below(8) as usize).min(t.len() - at);
                    t.drain(at..at + n);
                }
            }
        }
        std::fs::write(&work, &t).unwrap();
        match VmdkDisk::open(&work, Access::ReadOnly) {
            Ok(_) => opened += 1,
            Err(_) => refused += 1,
        }
        exercise(&work);
    }
    assert!(
        opened > 300 && refused > 300,
        "{opened} opened, {refused} refused"
    );
}

fn cid_of(dev: &VmdkDisk) -> u32 {
    dev.cid().expect("a CID")
}

#[test]
fn writes_give_a_new_cid_and_a_crash_keeps_the_old_contents() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for sub in ["monolithicSparse", "twoGbMaxExtentSparse", "monolithicFlat"] {
        let img = dir.path().join(format!("c-{sub}.vmdk"));
        create(&img, sub, 32 * MIB);
        qemu_write(&img, 0, MIB, 0x44);
        let mut old = Model::zeros(32 * MIB);
        old.write(0, &vec![0x44; MIB as usize]);
        let child = dir.path().join(format!("c-{sub}-child.vmdk"));
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "vmdk", "-F", "vmdk", "-b"])
            .arg(img.file_name().unwrap())
            .arg(&child));
        VmdkDisk::open(&child, Access::ReadOnly).unwrap();
        let before = std::fs::read(&img).unwrap();
        let mut dev = VmdkDisk::open(&img, Access::ReadWrite).unwrap();
        let cid = cid_of(&dev);
        dev.write_at(20 * MIB + 100, &pattern(1, 200 * KIB as usize))
            .unwrap();
        let new_cid = cid_of(&dev);
        assert_ne!(cid, new_cid);
        let now = std::fs::read(&img).unwrap();
        let changed: Vec<usize> = (0..before.len().min(now.len()))
            .filter(|&i| before[i] != now[i])
            .collect();
        if sub == "monolithicSparse" {
            // Only the CID's digits and the unclean-shutdown byte so far;
            // the new grains are past the old end.
            assert!(changed.iter().all(|&i| i == 72 || i >= 512), "{changed:?}");
            assert!(
                changed.len() <= 9 && now.len() > before.len(),
                "{changed:?}"
            );
            // A crash now: qemu sees a valid image with the old contents.
            let crashed = dir.path().join("crashed.vmdk");
            std::fs::write(&crashed, &now).unwrap();
            qemu_check(&crashed);
            qemu_compare(&crashed, &old);
            std::fs::remove_file(&crashed).unwrap();
        } else {
            assert!(changed.len() <= 8, "{changed:?}");
        }
        let text = String::from_utf8_lossy(&now).into_owned();
        assert!(text.contains(&format!("CID={new_cid:08x}\n")), "{sub}");
        dev.flush().unwrap();
        drop(dev);
        old.write(20 * MIB + 100, &pattern(1, 200 * KIB as usize));
        qemu_check(&img);
        qemu_compare(&img, &old);
        let err = VmdkDisk::open(&child, Access::ReadOnly)
            .unwrap_err()
            .to_string();
        assert!(err.contains("parentCID"), "{err}");
    }
}

#[test]
fn stream_with_footer_reads_like_qemu() {
    if !need_qemu() {
        return;
    }
    // VMware's streamOptimized layout: the header at the start says "GD at
    // end" and the real one follows the data, between a footer marker and
    // an end-of-stream marker. Made from qemu's stream by moving the
    // header into such a footer.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let written = make_source(&src, 48 * MIB, 77);
    let img = dir.path().join("stream.vmdk");
    run(Command::new("qemu-img")
        .args([
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
        ])
        .arg(&src)
        .arg(&img));
    let mut b = std::fs::read(&img).unwrap();
    // Drop qemu's trailing end-of-stream sector, then append the footer.
    while b.len() >= 512 && b[b.len() - 512..].iter().all(|&x| x == 0) {
        b.truncate(b.len() - 512);
    }
    let header: Vec<u8> = b[..512].to_vec();
    let mut marker = vec![0u8; 512];
    marker[0..8].copy_from_slice(&1u64.to_le_bytes());
    marker[12..16].copy_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&marker);
    b.extend_from_slice(&header);
    b.extend_from_slice(&[0u8; 512]);
    b[56..64].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    let qraw = qemu_raw(&img);
    let dev = VmdkDisk::open(&img, Access::ReadOnly).unwrap();
    assert_eq!(dev.len(), 48 * MIB);
    let ranges = probes(48 * MIB, &written, 3);
    assert_reads(&dev, raw_reader(&qraw), &ranges);
    assert_reads(&dev, raw_reader(&src), &ranges);
    let err = VmdkDisk::open(&img, Access::ReadWrite)
        .unwrap_err()
        .to_string();
    assert!(err.contains("read-only"), "{err}");
}

#[test]
fn generalize_a_windows_vmdk_in_place() {
    use reseal::backend::disk::DiskBackend;
    use reseal::generalize::{generalize, inspect};
    use reseal::options::{GeneralizeOptions, SidChoice};
    use reseal_testkit::{DISK_PARTITION_OFFSET, DISK_PARTITION_SIZE, SAMPLE_MACHINE_SID};
    let tools = [
        "qemu-img",
        "qemu-io",
        "sfdisk",
        "mkntfs",
        "wimlib-imagex",
        "ntfsfix",
    ];
    if !tools.iter().all(|t| reseal_testkit::require_tool(t)) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    reseal_testkit::build_windows_root(&root, None).unwrap();
    let images = reseal_testkit::build_disk_images(&root, &tmp.path().join("disk")).unwrap();
    let raw = images.first().expect("the raw fixture");
    let new_sid = "S-1-5-21-1111111111-2222222222-3333333333";
    for sub in ["monolithicSparse", "twoGbMaxExtentSparse", "monolithicFlat"] {
        let img = tmp.path().join(format!("windows-{sub}.vmdk"));
        run(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "vmdk", "-o"])
            .arg(format!("subformat={sub}"))
            .arg(raw)
            .arg(&img));
        let mut b = DiskBackend::open(&img, None).unwrap();
        let options = GeneralizeOptions {
            sid: SidChoice::Given(new_sid.into()),
            seed: Some(7),
            ..GeneralizeOptions::default()
        };
        let before = inspect(&b).unwrap();
        assert_eq!(
            before[0].description.machine_sid.as_deref(),
            Some(SAMPLE_MACHINE_SID)
        );
        let report = generalize(&mut b, &options).unwrap();
        assert_eq!(format!("{:?}", report.outcome), "Done", "{sub}");
        drop(b);
        let b = DiskBackend::open(&img, None).unwrap();
        let after = inspect(&b).unwrap();
        assert_eq!(after[0].description.machine_sid.as_deref(), Some(new_sid));
        drop(b);
        qemu_check(&img);
        // The volume as qemu sees it, checked by ntfs-3g.
        let qraw = qemu_raw(&img);
        let all = std::fs::read(&qraw).unwrap();
        let part = tmp.path().join("partition.ntfs");
        let (a, n) = (DISK_PARTITION_OFFSET as usize, DISK_PARTITION_SIZE as usize);
        std::fs::write(&part, &all[a..a + n]).unwrap();
        let fix = run(Command::new("ntfsfix").arg("-n").arg(&part));
        assert!(!fix.contains("corrupt"), "{sub}: ntfsfix -n: {fix}");
        // Every byte we see is what qemu sees.
        let dev = disk::open_image(&img, Access::ReadOnly).unwrap();
        let mut ours = vec![0u8; all.len()];
        dev.read_at(0, &mut ours).unwrap();
        assert!(ours == all, "{sub}: our reading differs from qemu's");
        std::fs::remove_file(&qraw).unwrap();
    }
}

#[test]
fn zeroed_grains_read_as_zeros_and_are_rewritten() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("z.vmdk");
    run(Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            "subformat=monolithicSparse,zeroed_grain=on",
        ])
        .arg(&img)
        .arg("8M"));
    qemu_write(&img, 0, MIB, 0x66);
    run(Command::new("qemu-io")
        .args(["-f", "vmdk", "-c", "write -z 64k 128k"])
        .arg(&img));
    let b = std::fs::read(&img).unwrap();
    let (gd, _) = directories(&b);
    let gt = u32::from_le_bytes(b[gd..gd + 4].try_into().unwrap()) as usize * 512;
    assert_eq!(
        &b[gt + 4..gt + 12],
        &[1, 0, 0, 0, 1, 0, 0, 0],
        "qemu wrote zeroed GTEs"
    );
    let mut model = Model::zeros(8 * MIB);
    model.write(0, &vec![0x66; MIB as usize]);
    model.write(64 * KIB, &vec![0; 128 * KIB as usize]);
    let dev = VmdkDisk::open(&img, Access::ReadOnly).unwrap();
    assert_reads(&dev, raw_reader(&qemu_raw(&img)), &[(0, 8 * MIB)]);
    assert_reads(&dev, |at, n| model.read(at, n), &[(0, 8 * MIB)]);
    drop(dev);
    let mut dev = VmdkDisk::open(&img, Access::ReadWrite).unwrap();
    dev.write_at(64 * KIB + 1000, b"inside a zeroed grain")
        .unwrap();
    model.write(64 * KIB + 1000, b"inside a zeroed grain");
    dev.flush().unwrap();
    drop(dev);
    qemu_check(&img);
    qemu_compare(&img, &model);
    tables(&img);
}
