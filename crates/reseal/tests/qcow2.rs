//! qcow2 images made by qemu-img and qemu-io, read and written by the
//! block layer and checked by qemu: reads equal `qemu-img convert -O raw`,
//! random writes equal an in-memory model (`qemu-img compare`) and leave
//! `qemu-img check` clean, backing chains stay untouched, simulated
//! crashes leave at most leaked clusters, overlays made by
//! `create_overlay` are accepted, and damaged files are refused without a
//! panic.

use reseal::disk::qcow2::{Qcow2Disk, create_overlay};
use reseal::disk::{self, Access, BlockDevice, ImageFormat};
use std::path::Path;
use std::process::Command;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

fn qemu() -> bool {
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

fn qfmt(img: &Path) -> &'static str {
    match disk::detect_format(img).unwrap() {
        ImageFormat::Raw => "raw",
        ImageFormat::Vhd => "vpc",
        ImageFormat::Vhdx => "vhdx",
        ImageFormat::Qcow2 => "qcow2",
        ImageFormat::Vmdk => "vmdk",
    }
}

fn create(path: &Path, opts: &str, size: u64) {
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", "qcow2"]);
    if !opts.is_empty() {
        c.args(["-o", opts]);
    }
    run(c.arg(path).arg(size.to_string()));
}

/// Runs qemu-io commands on an image (format given, so that backing
/// files are found the way qemu finds them).
fn qemu_io(img: &Path, cmds: &[String]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", qfmt(img)]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    run(c.arg(img));
}

fn qemu_raw(img: &Path) -> Vec<u8> {
    let out = img.with_extension("qemu.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", qfmt(img), "-O", "raw"])
        .arg(img)
        .arg(&out));
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// `qemu-img check` exit code and output.
fn check(img: &Path) -> (i32, String) {
    let out = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(img)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn check_clean(img: &Path) {
    let (code, text) = check(img);
    assert!(
        code == 0 && !text.contains("leaked"),
        "qemu-img check {}: exit {code}: {text}",
        img.display()
    );
}

fn compare_with(img: &Path, model: &[u8]) {
    let expected = img.with_extension("expected.raw");
    std::fs::write(&expected, model).unwrap();
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&expected)
        .arg(img));
    std::fs::remove_file(&expected).unwrap();
}

fn read_all(d: &dyn BlockDevice) -> Vec<u8> {
    let mut v = vec![0u8; d.len() as usize];
    // Odd-sized reads, to cross cluster boundaries at many offsets.
    let mut at = 0usize;
    let mut step = 4096 * 3 + 511;
    while at < v.len() {
        let n = step.min(v.len() - at);
        d.read_at(at as u64, &mut v[at..at + n]).unwrap();
        at += n;
        step = step * 7 % 300_007 + 1;
    }
    v
}

fn hash(p: &Path) -> (u64, u32) {
    let b = std::fs::read(p).unwrap();
    (b.len() as u64, disk::crc32(&b))
}

use reseal_testkit::XorShift as Rng;

/// Fills an image through qemu-io: patterned writes across cluster
/// boundaries, and (version 3) zeroed ranges.
fn fill_with_qemu(img: &Path, size: u64, zeros: bool) {
    let mut cmds = Vec::new();
    let mut rng = Rng(size ^ 0x9E37_79B9);
    for i in 0..24u64 {
        let len = (rng.below(200) + 1) * 512;
        let off = rng.below((size - len) / 512) * 512;
        cmds.push(format!("write -P {} {off} {len}", 0x11 + i));
    }
    if zeros {
        cmds.push(format!("write -z {} {}", size / 4, size / 8));
        cmds.push(format!("write -z -u {} {}", size / 2, size / 8));
    }
    qemu_io(img, &cmds);
}

/// Random writes of varied sizes (some across cluster boundaries, some
/// whole clusters), applied to the disk and the model, with flushes.
fn random_writes(d: &mut dyn BlockDevice, model: &mut [u8], seed: u64, count: usize) {
    let mut rng = Rng(seed);
    let size = model.len() as u64;
    for i in 0..count {
        let len = match rng.below(4) {
            0 => rng.below(512) + 1,
            1 => rng.below(8 * KIB) + 1,
            2 => rng.below(200 * KIB) + 1,
            _ => 64 * KIB,
        }
        .min(size);
        let off = rng.below(size - len + 1);
        let fill = (rng.next() & 0xFF) as u8;
        let buf: Vec<u8> = (0..len)
            .map(|k| fill ^ (k as u8).wrapping_mul(31))
            .collect();
        d.write_at(off, &buf).unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&buf);
        if i % 97 == 50 {
            d.flush().unwrap();
        }
        if i % 41 == 3 {
            let n = rng.below(70 * KIB).min(size) as usize;
            let o = rng.below(size - n as u64 + 1) as usize;
            let mut got = vec![0u8; n];
            d.read_at(o as u64, &mut got).unwrap();
            assert!(
                got == model[o..o + n],
                "read back at {o}+{n} after write {i}"
            );
        }
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

const CONFIGS: &[(&str, bool)] = &[
    ("compat=0.10,cluster_size=4k", false),
    ("compat=0.10,cluster_size=64k", false),
    ("compat=1.1,cluster_size=4k", true),
    ("compat=1.1,cluster_size=64k,lazy_refcounts=on", true),
    ("compat=1.1,cluster_size=2M", true),
    ("compat=1.1,cluster_size=512,refcount_bits=64", true),
    ("compat=1.1,cluster_size=8k,refcount_bits=1", true),
    ("compat=1.1,cluster_size=16k,refcount_bits=4", true),
    ("compat=1.1,cluster_size=32k,refcount_bits=8", true),
];

#[test]
fn reads_equal_qemu_convert() {
    if !qemu() {
        return;
    }
    let dir = tmp();
    for (i, (opts, v3)) in CONFIGS.iter().enumerate() {
        let img = dir.path().join(format!("r{i}.qcow2"));
        let size = 24 * MIB + 3 * 512;
        create(&img, opts, size);
        fill_with_qemu(&img, size, *v3);
        assert_eq!(disk::detect_format(&img).unwrap(), ImageFormat::Qcow2);
        let d = disk::open_image(&img, Access::ReadOnly).unwrap();
        assert_eq!(d.len(), size, "{opts}");
        assert!(read_all(&*d) == qemu_raw(&img), "reads differ for {opts}");
    }
}

#[test]
fn random_writes_match_model_and_check_clean() {
    if !qemu() {
        return;
    }
    let dir = tmp();
    for (i, (opts, v3)) in CONFIGS.iter().enumerate() {
        let img = dir.path().join(format!("w{i}.qcow2"));
        let size = 20 * MIB;
        create(&img, opts, size);
        fill_with_qemu(&img, size, *v3);
        let mut model = qemu_raw(&img);
        {
            let mut d = Qcow2Disk::open(&img, Access::ReadWrite).unwrap();
            random_writes(&mut d, &mut model, 0x5EED + i as u64, 300);
            d.flush().unwrap();
            assert!(read_all(&d) == model, "own reads differ for {opts}");
        }
        check_clean(&img);
        compare_with(&img, &model);
        // Reopened: same bytes, and more writes on top.
        let mut d = Qcow2Disk::open(&img, Access::ReadWrite).unwrap();
        assert!(read_all(&d) == model, "reopened reads differ for {opts}");
        random_writes(&mut d, &mut model, 0xF00D + i as u64, 60);
        drop(d);
        check_clean(&img);
        compare_with(&img, &model);
    }
}

#[test]
fn refcount_table_grows() {
    if !qemu() {
        return;
    }
    // 512-byte clusters with 64-bit refcounts: one refcount block covers
    // 64 clusters and the first table only 4096 of them, so filling the
    // disk needs new refcount blocks and a larger, moved refcount table.
    let dir = tmp();
    let img = dir.path().join("grow.qcow2");
    let size = 8 * MIB;
    create(&img, "compat=1.1,cluster_size=512,refcount_bits=64", size);
    let table_before = (
        be64_at(&img, 48),
        std::fs::read(&img).unwrap()[56..60].to_vec(),
    );
    let mut model = vec![0u8; size as usize];
    {
        let mut d = Qcow2Disk::open(&img, Access::ReadWrite).unwrap();
        let chunk = 256 * KIB;
        for k in 0..size / chunk {
            let buf = vec![(k as u8) | 1; chunk as usize];
            d.write_at(k * chunk, &buf).unwrap();
            model[(k * chunk) as usize..((k + 1) * chunk) as usize].copy_from_slice(&buf);
        }
        d.flush().unwrap();
    }
    let table_after = (
        be64_at(&img, 48),
        std::fs::read(&img).unwrap()[56..60].to_vec(),
    );
    assert_ne!(
        table_before.0, table_after.0,
        "the refcount table did not move"
    );
    assert!(
        table_after.1 > table_before.1,
        "the refcount table did not grow"
    );
    check_clean(&img);
    compare_with(&img, &model);
}

#[test]
fn compressed_clusters_read_and_rewritten() {
    if !qemu() {
        return;
    }
    let dir = tmp();
    for (i, cs) in ["4k", "64k", "2M"].iter().enumerate() {
        let src = dir.path().join(format!("c{i}.src.qcow2"));
        let img = dir.path().join(format!("c{i}.qcow2"));
        let size = 16 * MIB;
        create(&src, "compat=1.1", size);
        fill_with_qemu(&src, size, false);
        run(Command::new("qemu-img")
            .args(["convert", "-c", "-f", "qcow2", "-O", "qcow2", "-o"])
            .arg(format!("cluster_size={cs}"))
            .arg(&src)
            .arg(&img));
        let mut model = qemu_raw(&src);
        let mut d = Qcow2Disk::open(&img, Access::ReadWrite).unwrap();
        assert!(read_all(&d) == model, "compressed reads differ ({cs})");
        random_writes(&mut d, &mut model, 0xC0 + i as u64, 200);
        d.flush().unwrap();
        drop(d);
        check_clean(&img);
        compare_with(&img, &model);
    }
}

#[test]
fn backing_chain_of_two_stays_untouched() {
    if !qemu() {
        return;
    }
    let dir = tmp();
    let size = 12 * MIB;
    let base = dir.path().join("base.raw");
    let mut rng = Rng(77);
    let base_bytes: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
    std::fs::write(&base, &base_bytes).unwrap();
    let mid = dir.path().join("mid.qcow2");
    create(
        &mid,
        "compat=0.10,cluster_size=16k,backing_file=base.raw,backing_fmt=raw",
        size,
    );
    fill_with_qemu(&mid, size, false);
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let top = sub.join("top.qcow2");
    create(
        &top,
        "compat=1.1,cluster_size=64k,backing_file=../mid.qcow2,backing_fmt=qcow2",
        size,
    );
    fill_with_qemu(&top, size, true);
    let before = (hash(&base), hash(&mid));
    let mut model = qemu_raw(&top);
    {
        let mut d = Qcow2Disk::open(&top, Access::ReadWrite).unwrap();
        assert_eq!(d.backing_format(), Some(ImageFormat::Qcow2));
        assert!(read_all(&d) == model, "chain reads differ");
        random_writes(&mut d, &mut model, 0xBACC, 300);
        d.flush().unwrap();
    }
    assert_eq!((hash(&base), hash(&mid)), before, "a backing file changed");
    check_clean(&top);
    compare_with(&top, &model);
    let d = disk::open_image(&top, Access::ReadOnly).unwrap();
    assert!(read_all(&*d) == model);
}

#[test]
fn create_overlay_is_accepted_by_qemu() {
    if !qemu() {
        return;
    }
    let dir = tmp();
    let size = 10 * MIB;
    let raw = dir.path().join("b.raw");
    let mut rng = Rng(5);
    let bytes: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
    std::fs::write(&raw, &bytes).unwrap();
    let mut bases = vec![(raw.clone(), "raw")];
    for (fmt, name) in [("vhdx", "b.vhdx"), ("qcow2", "b.qcow2"), ("vpc", "b.vhd")] {
        let p = dir.path().join(name);
        run(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", fmt])
            .arg(&raw)
            .arg(&p));
        bases.push((p, fmt));
    }
    let out_dir = dir.path().join("clones");
    std::fs::create_dir(&out_dir).unwrap();
    for (i, (base, fmt)) in bases.iter().enumerate() {
        let ov = out_dir.join(format!("o{i}.qcow2"));
        create_overlay(base, &ov).unwrap();
        assert!(
            create_overlay(base, &ov).is_err(),
            "an existing file is kept"
        );
        let info = run(Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&ov));
        let v: serde_json::Value = serde_json::from_str(&info).unwrap();
        let name = base.file_name().unwrap().to_str().unwrap();
        assert_eq!(v["backing-filename"], format!("../{name}"), "{info}");
        assert_eq!(v["backing-filename-format"], *fmt, "{info}");
        assert_eq!(v["format"], "qcow2");
        check_clean(&ov);
        let base_len = disk::open_image(base, Access::ReadOnly).unwrap().len();
        assert_eq!(v["virtual-size"], base_len.div_ceil(512) * 512, "{info}");
        run(Command::new("qemu-img")
            .args(["compare", "-f", fmt, "-F", "qcow2"])
            .arg(base)
            .arg(&ov));
        // Written through the block layer: the base stays as it was.
        let before = hash(base);
        let mut model = qemu_raw(&ov);
        let mut d = disk::open_image(&ov, Access::ReadWrite).unwrap();
        random_writes(&mut *d, &mut model, 0x0E + i as u64, 120);
        d.flush().unwrap();
        drop(d);
        assert_eq!(hash(base), before);
        check_clean(&ov);
        compare_with(&ov, &model);
    }
}

/// Runs the same writes with a simulated crash after `n` file writes, for
/// growing `n` until a run completes; qemu-img check must never find
/// corruption (exit 2), leaks (exit 3) are accepted.
fn crash_everywhere(opts: &str, backing: Option<&Path>, dir: &Path, size: u64) {
    let pristine = dir.join("pristine.qcow2");
    let mut o = opts.to_string();
    if let Some(b) = backing {
        o.push_str(&format!(",backing_file={},backing_fmt=raw", b.display()));
    }
    create(&pristine, &o, size);
    fill_with_qemu(&pristine, size, opts.contains("1.1"));
    let img = dir.join("crash.qcow2");
    let mut n = 0u64;
    let mut runs = 0;
    let mut leaks = 0;
    loop {
        std::fs::copy(&pristine, &img).unwrap();
        let mut d = Qcow2Disk::open(&img, Access::ReadWrite).unwrap();
        d.crash_after_writes(n);
        let mut rng = Rng(0xC4A5);
        let mut failed = false;
        for i in 0..40 {
            let len = rng.below(150 * KIB) + 1;
            let off = rng.below(size - len);
            let buf = vec![(i as u8) | 0x80; len as usize];
            if d.write_at(off, &buf).is_err() {
                failed = true;
                break;
            }
            if i % 13 == 7 && d.flush().is_err() {
                failed = true;
                break;
            }
        }
        if !failed && d.flush().is_err() {
            failed = true;
        }
        drop(d);
        let (code, text) = check(&img);
        leaks += u32::from(code == 3);
        assert!(
            code == 0 || code == 3,
            "{opts}: crash after {n} writes: qemu-img check exit {code}: {text}"
        );
        if !failed {
            assert_eq!(code, 0, "{opts}: completed run: {text}");
            assert!(!text.contains("leaked"), "{opts}: {text}");
            break;
        }
        // Every early crash point, then a sample of the later ones.
        runs += 1;
        n += 1 + n / 24;
        assert!(runs < 1000, "{opts}: the write sequence never completed");
    }
    assert!(runs > 20, "{opts}: only {runs} crash points exercised");
    // Some crashes fell between a refcount update and the reference.
    assert!(leaks > 0, "{opts}: no crash point left leaked clusters");
    println!("{opts}: {runs} crash points, {leaks} with leaked clusters");
}

#[test]
fn crashes_leave_images_qemu_accepts() {
    if !qemu() {
        return;
    }
    let dir = tmp();
    crash_everywhere("compat=1.1,cluster_size=64k", None, dir.path(), 16 * MIB);
    crash_everywhere(
        "compat=1.1,cluster_size=512,refcount_bits=64",
        None,
        dir.path(),
        4 * MIB,
    );
    let base = dir.path().join("base.raw");
    std::fs::write(&base, vec![0x5Au8; (8 * MIB) as usize]).unwrap();
    crash_everywhere(
        "compat=0.10,cluster_size=4k",
        Some(&base),
        dir.path(),
        8 * MIB,
    );
}

/// Opens an image that must be refused, returning the error text.
fn refused(img: &Path) -> String {
    match Qcow2Disk::open(img, Access::ReadOnly) {
        Ok(_) => panic!("{} was accepted", img.display()),
        Err(e) => e.to_string(),
    }
}

fn patch(img: &Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

fn be64_at(img: &Path, at: usize) -> u64 {
    let b = std::fs::read(img).unwrap();
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn damaged_and_unsupported_images_are_refused() {
    if !qemu() {
        return;
    }
    let dir = tmp();
    let good = dir.path().join("good.qcow2");
    create(&good, "compat=1.1,cluster_size=4k", 4 * MIB);
    fill_with_qemu(&good, 4 * MIB, false);
    let flen = std::fs::metadata(&good).unwrap().len();
    let l1 = be64_at(&good, 40);
    let rt = be64_at(&good, 48);
    let l2 = be64_at(&good, l1 as usize) & 0x00FF_FFFF_FFFF_FE00;
    let case = |name: &str, at: u64, bytes: &[u8], expect: &str| {
        let p = dir.path().join(format!("{name}.qcow2"));
        std::fs::copy(&good, &p).unwrap();
        patch(&p, at, bytes);
        let e = refused(&p);
        assert!(e.contains(expect), "{name}: {e}");
    };
    case("dirty", 79, &[1], "qemu-img check -r all");
    case("corrupt", 79, &[2], "corrupt");
    case("unknown", 78, &[1], "incompatible");
    case("datafile", 79, &[4], "external data file");
    case("crypt", 32, &1u32.to_be_bytes(), "crypt");
    case("l1big", 36, &u32::MAX.to_be_bytes(), "l1_size");
    case(
        "l1past",
        40,
        &(flen + 4096).to_be_bytes(),
        "l1_table_offset",
    );
    case(
        "rtpast",
        48,
        &(flen * 2).to_be_bytes(),
        "refcount_table_offset",
    );
    case("cbits", 20, &30u32.to_be_bytes(), "cluster_bits");
    case(
        "l1entry_past",
        l1,
        &((flen + 8192) | (1 << 63)).to_be_bytes(),
        "L1 entry",
    );
    case(
        "l1entry_header",
        l1,
        &(1u64 << 63).to_be_bytes(),
        "L1 entry",
    );
    case(
        "l1entry_rt",
        l1,
        &(rt | (1 << 63)).to_be_bytes(),
        "L1 entry",
    );
    case("rtentry_l1", rt, &l1.to_be_bytes(), "refcount table entry");
    case("rtentry_l2", rt, &l2.to_be_bytes(), "refcount table entry");

    // L2 entries are checked when used.
    let bad_l2 = |name: &str, v: u64| {
        let p = dir.path().join(format!("{name}.qcow2"));
        std::fs::copy(&good, &p).unwrap();
        let b = std::fs::read(&p).unwrap();
        let slot = (0..512u64)
            .find(|i| {
                let at = (l2 + 8 * i) as usize;
                b[at..at + 8] != [0; 8]
            })
            .unwrap();
        patch(&p, l2 + 8 * slot, &v.to_be_bytes());
        let d = Qcow2Disk::open(&p, Access::ReadOnly).unwrap();
        let mut buf = vec![0u8; 4096];
        let e = d.read_at(slot * 4096, &mut buf).unwrap_err().to_string();
        assert!(e.contains("L2 entry"), "{name}: {e}");
    };
    bad_l2("l2_past", (flen + 4096) | (1 << 63));
    bad_l2("l2_into_l1", l1 | (1 << 63));
    bad_l2("l2_into_rt", rt | (1 << 63));
    bad_l2("l2_into_header", 1 << 63 | 1 << 9);
    bad_l2("l2_reserved", l2 | 2 | (1 << 63));

    // Formats that are refused with a message naming them.
    let refuse_opts = |name: &str, extra: &[&str], opts: &str, expect: &str| {
        let p = dir.path().join(format!("{name}.qcow2"));
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .args(extra)
            .args(["-o", opts])
            .arg(&p)
            .arg("1M"));
        let e = refused(&p);
        assert!(e.contains(expect), "{name}: {e}");
    };
    refuse_opts("extl2", &[], "extended_l2=on", "subclusters");
    refuse_opts("zstd", &[], "compression_type=zstd", "zstd");
    refuse_opts(
        "luks",
        &["--object", "secret,id=sec0,data=pass"],
        "encrypt.format=luks,encrypt.key-secret=sec0",
        "encrypt",
    );

    // Backing files: a directory, a FIFO, a format mismatch, a loop.
    let sub = dir.path().join("adir");
    std::fs::create_dir(&sub).unwrap();
    let fifo = dir.path().join("fifo");
    run(Command::new("mkfifo").arg(&fifo));
    let raw = dir.path().join("plain.raw");
    std::fs::write(&raw, vec![0u8; MIB as usize]).unwrap();
    for (name, backing, fmt, expect) in [
        ("bdir", "adir", "raw", "regular file"),
        ("bfifo", "fifo", "raw", "regular file"),
        ("bfmt", "plain.raw", "vhdx", "backing format"),
    ] {
        let p = dir.path().join(format!("{name}.qcow2"));
        run(Command::new("qemu-img")
            .args([
                "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", fmt,
            ])
            .arg(&p)
            .arg("1M"));
        let e = refused(&p);
        assert!(e.contains(expect), "{name}: {e}");
    }
    let a = dir.path().join("loop_a.qcow2");
    let b = dir.path().join("loop_b.qcow2");
    create(&a, "", MIB);
    create(&b, "backing_file=loop_a.qcow2,backing_fmt=qcow2", MIB);
    run(Command::new("qemu-img")
        .args([
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            "loop_b.qcow2",
        ])
        .arg(&a));
    let e = refused(&a);
    assert!(e.contains("chain"), "loop: {e}");
    // The backing file opened for writing is never the backing's file.
    let ro = dir.path().join("ro.qcow2");
    create(&ro, "", MIB);
    let mut d = Qcow2Disk::open(&ro, Access::ReadOnly).unwrap();
    assert!(d.write_at(0, &[1]).is_err());
}

#[test]
fn mutated_files_never_panic() {
    if !qemu() {
        return;
    }
    let dir = tmp();
    let good = dir.path().join("m.qcow2");
    create(
        &good,
        "compat=1.1,cluster_size=512,refcount_bits=16",
        256 * KIB,
    );
    fill_with_qemu(&good, 256 * KIB, true);
    let c = dir.path().join("c.qcow2");
    let c_src = dir.path().join("csrc.qcow2");
    create(&c_src, "compat=0.10,cluster_size=512", 256 * KIB);
    fill_with_qemu(&c_src, 256 * KIB, false);
    run(Command::new("qemu-img")
        .args(["convert", "-c", "-O", "qcow2", "-o", "cluster_size=512"])
        .arg(&c_src)
        .arg(&c));
    let bases = [std::fs::read(&good).unwrap(), std::fs::read(&c).unwrap()];
    let target = dir.path().join("t.qcow2");
    let mut rng = Rng(0xDEAD_BEEF);
    let (mut opened, mut refused_n) = (0, 0);
    for round in 0..3000u64 {
        let mut b = bases[(round % 2) as usize].clone();
        let flips = 1 + rng.below(4);
        for _ in 0..flips {
            // Mostly the header and the first metadata clusters.
            let span = if rng.below(3) == 0 {
                b.len() as u64
            } else {
                4096
            };
            let at = rng.below(span.min(b.len() as u64)) as usize;
            match rng.below(3) {
                0 => b[at] ^= 1 << rng.below(8),
                1 => b[at] = rng.next() as u8,
                _ => {
                    let end = (at + 8).min(b.len());
                    for x in &mut b[at..end] {
                        *x = 0xFF;
                    }
                }
            }
        }
        std::fs::write(&target, &b).unwrap();
        match Qcow2Disk::open(&target, Access::ReadWrite) {
            Err(_) => refused_n += 1,
            Ok(mut d) => {
                opened += 1;
                let len = d.len().min(4 * MIB);
                let mut buf = vec![0u8; len as usize];
                let _ = d.read_at(0, &mut buf);
                if len > 0 {
                    for k in 0..4 {
                        let at = rng.below(len);
                        let n = (rng.below(3000) + 1).min(len - at);
                        let _ = d.write_at(at, &vec![k as u8; n as usize]);
                    }
                }
                let _ = d.flush();
            }
        }
    }
    assert!(
        opened > 100 && refused_n > 100,
        "opened {opened}, refused {refused_n}"
    );
}

#[test]
fn overlay_of_missing_or_special_backing_is_refused() {
    let dir = tmp();
    let out = dir.path().join("x.qcow2");
    assert!(create_overlay(&dir.path().join("nope.raw"), &out).is_err());
    assert!(create_overlay(dir.path(), &out).is_err());
    assert!(!out.exists());
}

/// A linked clone: `create_overlay` over the testkit's Windows disk, then
/// generalized in place through the block layer. The base stays
/// byte-identical; qemu-img checks the overlay; the hives, extracted
/// through qemu-img and ntfscat, no longer name the old machine SID.
#[test]
fn linked_clone_is_generalized_and_base_untouched() {
    use reseal::backend::disk::DiskBackend;
    use reseal::generalize::{generalize, inspect};
    use reseal::options::{GeneralizeOptions, SidChoice};
    use reseal_testkit::{
        DISK_PARTITION_OFFSET, DISK_PARTITION_SIZE, SAMPLE_MACHINE_SID, build_disk_images,
        build_windows_root, have,
    };
    const NEW_SID: &str = "S-1-5-21-1111111111-2222222222-3333333333";
    if !qemu()
        || !reseal_testkit::require_tool("hivexregedit")
        || !reseal_testkit::require_tool("ntfscat")
    {
        return;
    }
    let tmp = tmp();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let images = build_disk_images(&root, &tmp.path().join("disk")).unwrap();
    if !reseal_testkit::require(
        !images.is_empty(),
        "the disk image tools (sfdisk, mkntfs, wimlib-imagex)",
    ) {
        return;
    }
    let clones = tmp.path().join("clones");
    std::fs::create_dir(&clones).unwrap();
    // The raw base and the VHDX base.
    for base in [&images[0], &images[2]] {
        let ov = clones.join(format!("{}.qcow2", qfmt(base)));
        create_overlay(base, &ov).unwrap();
        let before = hash(base);
        let mut b = DiskBackend::open(&ov, None).unwrap();
        let opts = GeneralizeOptions {
            sid: SidChoice::Given(NEW_SID.into()),
            seed: Some(7),
            ..GeneralizeOptions::default()
        };
        let report = generalize(&mut b, &opts).unwrap();
        assert_eq!(format!("{:?}", report.outcome), "Done");
        drop(b);
        assert_eq!(hash(base), before, "the base {} changed", base.display());
        check_clean(&ov);
        let b = DiskBackend::open(&ov, None).unwrap();
        let installs = inspect(&b).unwrap();
        assert_eq!(
            installs[0].description.machine_sid.as_deref(),
            Some(NEW_SID)
        );
        // The base itself still has the old SID.
        let b = DiskBackend::open(base, None).unwrap();
        let installs = inspect(&b).unwrap();
        assert_eq!(
            installs[0].description.machine_sid.as_deref(),
            Some(SAMPLE_MACHINE_SID)
        );

        let all = qemu_raw(&ov);
        let part = clones.join("part.ntfs");
        let (a, n) = (DISK_PARTITION_OFFSET as usize, DISK_PARTITION_SIZE as usize);
        std::fs::write(&part, &all[a..a + n]).unwrap();
        for hive in ["SYSTEM", "SAM", "SECURITY"] {
            let out = Command::new("ntfscat")
                .arg(&part)
                .arg(format!("/Windows/System32/config/{hive}"))
                .output()
                .unwrap();
            assert!(out.status.success(), "ntfscat {hive}");
            let h = clones.join(hive);
            std::fs::write(&h, &out.stdout).unwrap();
            let export = run(Command::new("hivexregedit")
                .arg("--export")
                .arg(&h)
                .arg("\\"));
            assert!(!export.contains(SAMPLE_MACHINE_SID), "{hive}: old SID left");
        }
        if have("ntfsfix") {
            let fix = run(Command::new("ntfsfix").arg("-n").arg(&part));
            assert!(!fix.contains("corrupt"), "ntfsfix -n: {fix}");
        }
    }
}
