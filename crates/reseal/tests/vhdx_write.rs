//! Writing VHDX and VHD images: the result checked by qemu-img (check,
//! convert, compare) against an in-memory model of every byte written,
//! crash injection around the VHDX log, differencing children whose parent
//! must stay untouched, and the VHD footer copies.

use reseal::disk::vhd::VhdDisk;
use reseal::disk::vhdx::{CrashPoint, VhdxDisk};
use reseal::disk::{self, Access, BlockDevice, Guid};
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Granularity of the model.
const CHUNK: u64 = 64 * KIB;

fn need_qemu() -> bool {
    let ok = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!(
            "notice: qemu-img not installed (cargo xtask setup installs qemu-utils); skipping"
        );
    }
    ok
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

fn qemu_create(path: &Path, fmt: &str, opts: &str, size: &str) {
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", fmt]);
    if !opts.is_empty() {
        c.args(["-o", opts]);
    }
    run(c.arg(path).arg(size));
}

fn qfmt(img: &Path) -> &'static str {
    match disk::detect_format(img).unwrap() {
        disk::ImageFormat::Raw => "raw",
        disk::ImageFormat::Vhd => "vpc",
        disk::ImageFormat::Vhdx => "vhdx",
        disk::ImageFormat::Qcow2 => "qcow2",
        disk::ImageFormat::Vmdk => "vmdk",
    }
}

/// `qemu-img check` must exit 0 (the vpc driver has no check: accepted).
fn qemu_check(img: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", "-f", qfmt(img)])
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

/// Lets qemu replay a VHDX log (`qemu-img check -r all`), then checks.
fn qemu_replay_and_check(img: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", "-r", "all", "-f", "vhdx"])
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img check -r all {}: {}{}",
        img.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    qemu_check(img);
}

/// qemu's view of the whole disk.
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

/// qemu's view compared with the model through `qemu-img compare` (for
/// disks too large to hold in memory).
fn qemu_compare(img: &Path, model: &Model) {
    let expected = img.with_extension("expected.raw");
    model.write_raw(&expected);
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", qfmt(img)])
        .arg(&expected)
        .arg(img));
    std::fs::remove_file(&expected).unwrap();
}

fn file_hash(p: &Path) -> (u64, u32) {
    let b = std::fs::read(p).unwrap();
    (b.len() as u64, disk::crc32(&b))
}

use reseal_testkit::XorShift as Rng;

fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..n).map(|_| (r.next() >> 24) as u8).collect()
}

/// The expected contents of a disk, stored by 64 KiB chunk (absent chunks
/// read as the base, zeros unless given).
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

    fn from_device(dev: &dyn BlockDevice) -> Model {
        let mut m = Model::zeros(dev.len());
        let mut buf = vec![0u8; MIB as usize];
        let mut at = 0;
        while at < m.len {
            let n = (m.len - at).min(MIB) as usize;
            dev.read_at(at, &mut buf[..n]).unwrap();
            for (k, piece) in buf[..n].chunks(CHUNK as usize).enumerate() {
                if piece.iter().any(|&b| b != 0) {
                    m.write(at + k as u64 * CHUNK, piece);
                }
            }
            at += n as u64;
        }
        m
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

    fn to_vec(&self) -> Vec<u8> {
        self.read(0, self.len as usize)
    }

    fn write_raw(&self, path: &Path) {
        let f = std::fs::File::create(path).unwrap();
        f.set_len(self.len).unwrap();
        for (&c, data) in &self.chunks {
            let at = c * CHUNK;
            let n = (self.len - at).min(CHUNK) as usize;
            f.write_all_at(&data[..n], at).unwrap();
        }
    }
}

/// Writes through the device and the model.
fn put(dev: &mut dyn BlockDevice, model: &mut Model, offset: u64, data: &[u8]) {
    dev.write_at(offset, data).unwrap();
    model.write(offset, data);
}

/// Compares the device with the model: everywhere for small disks, else
/// every chunk the model holds and some probes elsewhere.
fn assert_device_matches(dev: &dyn BlockDevice, model: &Model, what: &str) {
    assert_eq!(dev.len(), model.len, "{what}: size");
    let check = |at: u64, n: usize| {
        let mut got = vec![0u8; n];
        dev.read_at(at, &mut got).unwrap();
        let want = model.read(at, n);
        if got != want {
            let i = got.iter().zip(&want).position(|(a, b)| a != b).unwrap();
            panic!("{what}: differs at {}", at + i as u64);
        }
    };
    if model.len <= 256 * MIB {
        let mut at = 0;
        while at < model.len {
            let n = (model.len - at).min(4 * MIB) as usize;
            check(at, n);
            at += n as u64;
        }
    } else {
        for &c in model.chunks.keys() {
            check(c * CHUNK, (model.len - c * CHUNK).min(CHUNK) as usize);
        }
        let mut r = Rng(77);
        for _ in 0..64 {
            let at = r.below(model.len - 65536);
            check(at, 65536);
        }
    }
}

/// Random writes, some long, some crossing block boundaries.
fn random_writes(
    dev: &mut dyn BlockDevice,
    model: &mut Model,
    block: u64,
    seed: u64,
    count: usize,
) {
    let mut r = Rng(seed);
    let len = model.len;
    for i in 0..count {
        let n = match i % 4 {
            0 => 1 + r.below(3 * block.min(4 * MIB)),
            1 => 1 + r.below(600),
            _ => 1 + r.below(20_000),
        }
        .min(len);
        let off = if i % 3 == 0 {
            // Straddle a block boundary.
            let b = 1 + r.below((len / block).max(1));
            (b * block).saturating_sub(n / 2).min(len - n)
        } else {
            r.below(len - n + 1)
        };
        let data = pattern(seed * 1000 + i as u64, n as usize);
        put(dev, model, off, &data);
    }
}

/// Fixed writes: across block boundaries, over several unallocated blocks,
/// at both ends of the disk.
fn edge_writes(dev: &mut dyn BlockDevice, model: &mut Model, block: u64, seed: u64) {
    let len = model.len;
    let cases = [
        (block - 100, 200),
        (3 * block + 4096, 2 * block + 777),
        (0, 512),
        (len - 1000, 1000),
        (block * (len / block / 2) - 1, 2),
        (block + 512, 3),
    ];
    for (i, (off, n)) in cases.into_iter().enumerate() {
        if off + n <= len {
            put(dev, model, off, &pattern(seed + i as u64, n as usize));
        }
    }
}

/// The current VHDX header and where the log and the regions are.
#[derive(Debug, Clone)]
struct VhdxLayout {
    seq: u64,
    file_write: Guid,
    data_write: Guid,
    log_guid: Guid,
    other_log_guid: Option<Guid>,
    log_offset: u64,
    log_length: u64,
    bat_offset: u64,
    meta_offset: u64,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn header_valid(h: &[u8]) -> bool {
    let mut c = h.to_vec();
    c[4..8].fill(0);
    &h[0..4] == b"head" && disk::crc32c(&c) == le32(h, 4)
}

fn vhdx_layout(path: &Path) -> VhdxLayout {
    let b = std::fs::read(path).unwrap();
    let h1 = &b[64 * 1024..64 * 1024 + 4096];
    let h2 = &b[128 * 1024..128 * 1024 + 4096];
    let (cur, other) = match (header_valid(h1), header_valid(h2)) {
        (true, true) if le64(h1, 8) > le64(h2, 8) => (h1, Some(h2)),
        (true, true) => (h2, Some(h1)),
        (true, false) => (h1, None),
        (false, true) => (h2, None),
        _ => panic!("{}: no valid header", path.display()),
    };
    let rt = &b[192 * 1024..192 * 1024 + 65536];
    let (mut bat, mut meta) = (0, 0);
    for i in 0..le32(rt, 8) as usize {
        let e = &rt[16 + 32 * i..48 + 32 * i];
        let g = Guid::read(e, 0).to_string();
        if g == "2DC27766-F623-4200-9D64-115E9BFD4A08" {
            bat = le64(e, 16);
        } else if g == "8B7CA206-4790-4B9A-B8FE-575F050F886E" {
            meta = le64(e, 16);
        }
    }
    VhdxLayout {
        seq: le64(cur, 8),
        file_write: Guid::read(cur, 16),
        data_write: Guid::read(cur, 32),
        log_guid: Guid::read(cur, 48),
        other_log_guid: other.map(|o| Guid::read(o, 48)),
        log_offset: le64(cur, 72),
        log_length: u64::from(le32(cur, 68)),
        bat_offset: bat,
        meta_offset: meta,
    }
}

/// Both headers valid, the log marked empty in both.
fn assert_log_empty(path: &Path) {
    let l = vhdx_layout(path);
    assert!(
        l.log_guid.is_nil(),
        "{}: LogGuid {}",
        path.display(),
        l.log_guid
    );
    assert_eq!(
        l.other_log_guid,
        Some(Guid::default()),
        "{}: other header",
        path.display()
    );
}

fn read_at(path: &Path, at: u64, n: usize) -> Vec<u8> {
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; n];
    f.read_exact_at(&mut b, at).unwrap();
    b
}

/// The BAT entry of payload block `block` as stored in the file.
fn bat_entry(path: &Path, l: &VhdxLayout, block: u64, chunk_ratio: u64) -> u64 {
    let idx = block + block / chunk_ratio;
    le64(&read_at(path, l.bat_offset + 8 * idx, 8), 0)
}

// ---------------------------------------------------------------------------
// Plain writes checked by qemu.

fn vhdx_roundtrip(opts: &str, size: &str, block: u64, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.vhdx");
    qemu_create(&p, "vhdx", opts, size);
    let before = vhdx_layout(&p);
    let len = VhdxDisk::open(&p, Access::ReadOnly).unwrap().len();
    let mut model = Model::zeros(len);
    {
        let mut d = VhdxDisk::open(&p, Access::ReadWrite).unwrap();
        assert_eq!(d.block_size(), block, "{opts}");
        edge_writes(&mut d, &mut model, block, seed);
        // Reads see the staged allocations before any flush.
        assert_device_matches(&d, &model, "before flush");
        d.flush().unwrap();
        random_writes(&mut d, &mut model, block, seed, 40);
        d.flush().unwrap();
        random_writes(&mut d, &mut model, block, seed + 1, 40);
        // Dropped without a flush: drop commits what is staged.
    }
    let after = vhdx_layout(&p);
    assert!(after.seq > before.seq, "{opts}: header sequence not raised");
    assert_ne!(after.file_write, before.file_write, "{opts}: FileWriteGuid");
    assert_ne!(after.data_write, before.data_write, "{opts}: DataWriteGuid");
    assert_log_empty(&p);
    qemu_check(&p);
    assert!(
        qemu_raw(&p) == model.to_vec(),
        "{opts}: qemu's view differs"
    );
    // A second open writing again.
    {
        let mut d = disk::open_image(&p, Access::ReadWrite).unwrap();
        random_writes(&mut d, &mut model, block, seed + 2, 30);
        d.flush().unwrap();
    }
    assert_log_empty(&p);
    qemu_check(&p);
    assert!(
        qemu_raw(&p) == model.to_vec(),
        "{opts}: qemu's view differs (2nd open)"
    );
    let d = VhdxDisk::open(&p, Access::ReadOnly).unwrap();
    assert!(!d.log_replayed());
    assert_device_matches(&d, &model, opts);
}

#[test]
fn vhdx_dynamic_default_block_writes_match_qemu() {
    if !need_qemu() {
        return;
    }
    // qemu picks 8 MiB blocks for a disk this size.
    vhdx_roundtrip("subformat=dynamic", "40M", 8 * MIB, 11);
}

#[test]
fn vhdx_dynamic_1m_block_writes_match_qemu() {
    if !need_qemu() {
        return;
    }
    vhdx_roundtrip("subformat=dynamic,block_size=1M", "40M", MIB, 12);
}

/// Unallocated blocks in state NOT_PRESENT rather than ZERO.
#[test]
fn vhdx_dynamic_not_present_blocks_writes_match_qemu() {
    if !need_qemu() {
        return;
    }
    vhdx_roundtrip(
        "subformat=dynamic,block_size=2M,block_state_zero=off",
        "24M",
        2 * MIB,
        13,
    );
}

#[test]
fn vhdx_fixed_writes_match_qemu() {
    if !need_qemu() {
        return;
    }
    vhdx_roundtrip("subformat=fixed,block_size=1M", "20M", MIB, 14);
}

/// Footer at the end valid, the copy at the start identical for sparse
/// disks, every BAT entry inside the file before the footer.
fn assert_vhd_footers(p: &Path) {
    let b = std::fs::read(p).unwrap();
    let len = b.len();
    assert_eq!(len % 512, 0, "{}: length", p.display());
    let foot = &b[len - 512..];
    assert_eq!(&foot[0..8], b"conectix");
    let sum: u32 = foot
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(u32::from(x)));
    assert_eq!(!sum, u32::from_be_bytes(foot[64..68].try_into().unwrap()));
    let kind = u32::from_be_bytes(foot[60..64].try_into().unwrap());
    if kind == 2 {
        return;
    }
    assert_eq!(
        &b[0..512],
        foot,
        "{}: footer copy at the start",
        p.display()
    );
    let dyn_at = u64::from_be_bytes(foot[16..24].try_into().unwrap()) as usize;
    let hdr = &b[dyn_at..dyn_at + 1024];
    let bat = u64::from_be_bytes(hdr[16..24].try_into().unwrap()) as usize;
    let entries = u32::from_be_bytes(hdr[28..32].try_into().unwrap()) as usize;
    let bs = u64::from(u32::from_be_bytes(hdr[32..36].try_into().unwrap()));
    let bms = (bs / 512).div_ceil(8).div_ceil(512) * 512;
    for i in 0..entries {
        let e = u32::from_be_bytes(b[bat + 4 * i..bat + 4 * i + 4].try_into().unwrap());
        if e != u32::MAX {
            assert!(
                u64::from(e) * 512 + bms + bs <= (len - 512) as u64,
                "{}: BAT entry {i} past the footer",
                p.display()
            );
        }
    }
}

fn vhd_roundtrip(opts: &str, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.vhd");
    qemu_create(&p, "vpc", opts, "30M");
    let len = VhdDisk::open(&p, Access::ReadOnly).unwrap().len();
    let block = 2 * MIB;
    let mut model = Model::zeros(len);
    {
        let mut d = VhdDisk::open(&p, Access::ReadWrite).unwrap();
        edge_writes(&mut d, &mut model, block, seed);
        assert_device_matches(&d, &model, "before flush");
        d.flush().unwrap();
        assert_vhd_footers(&p);
        random_writes(&mut d, &mut model, block, seed, 50);
    }
    assert_vhd_footers(&p);
    qemu_check(&p);
    assert!(
        qemu_raw(&p) == model.to_vec(),
        "{opts}: qemu's view differs"
    );
    {
        let mut d = disk::open_image(&p, Access::ReadWrite).unwrap();
        random_writes(&mut d, &mut model, block, seed + 1, 30);
        d.flush().unwrap();
    }
    assert_vhd_footers(&p);
    assert!(
        qemu_raw(&p) == model.to_vec(),
        "{opts}: qemu's view differs (2nd open)"
    );
    let d = VhdDisk::open(&p, Access::ReadOnly).unwrap();
    assert_device_matches(&d, &model, opts);
}

#[test]
fn vhd_dynamic_writes_keep_footers_and_match_qemu() {
    if !need_qemu() {
        return;
    }
    vhd_roundtrip("subformat=dynamic", 21);
}

#[test]
fn vhd_fixed_writes_match_qemu() {
    if !need_qemu() {
        return;
    }
    vhd_roundtrip("subformat=fixed", 22);
}

// ---------------------------------------------------------------------------
// Crash injection.

/// A dynamic VHDX with 1 MiB blocks over three BAT sectors (512 entries
/// each), some blocks written and flushed; a second open writes into new
/// blocks in all three sectors and stops its flush at `point`.
/// Returns the file, the model before and after the second open's writes,
/// and the blocks it allocated.
fn crashed_vhdx(dir: &Path, point: CrashPoint) -> (PathBuf, Model, Model, Vec<u64>) {
    let p = dir.join("crash.vhdx");
    qemu_create(&p, "vhdx", "subformat=dynamic,block_size=1M", "1100M");
    let len = VhdxDisk::open(&p, Access::ReadOnly).unwrap().len();
    let mut model = Model::zeros(len);
    {
        let mut d = VhdxDisk::open(&p, Access::ReadWrite).unwrap();
        put(&mut d, &mut model, 2 * MIB + 10, &pattern(1, 5000));
        put(&mut d, &mut model, 700 * MIB - 7, &pattern(2, 14));
        d.flush().unwrap();
    }
    let old = Model {
        len,
        chunks: model.chunks.clone(),
    };
    let new_blocks = vec![5, 6, 600, 1050];
    let mut d = VhdxDisk::open(&p, Access::ReadWrite).unwrap();
    // New blocks in BAT sectors 0, 1 and 2, one write across blocks 5/6.
    put(&mut d, &mut model, 6 * MIB - 300, &pattern(3, 600));
    put(&mut d, &mut model, 600 * MIB + 4096, &pattern(4, 70_000));
    put(&mut d, &mut model, 1050 * MIB + MIB - 1, &pattern(5, 1));
    // And a write into an allocated block (a plain data write).
    put(&mut d, &mut model, 2 * MIB + 100, &pattern(6, 100));
    d.flush_then_crash(point).unwrap();
    (p, old, model, new_blocks)
}

/// The crash-left log: one entry naming the header's LogGuid that holds the
/// three changed BAT sectors.
fn assert_one_log_entry(p: &Path, l: &VhdxLayout) {
    assert!(!l.log_guid.is_nil(), "the log is not named in the header");
    let head = read_at(p, l.log_offset, 4096);
    assert_eq!(&head[0..4], b"loge");
    let len = u64::from(le32(&head, 8));
    assert_eq!(le32(&head, 12), 0, "tail");
    assert!(le64(&head, 16) >= 1, "sequence number");
    assert_eq!(le32(&head, 24), 3, "one descriptor per BAT sector");
    assert_eq!(Guid::read(&head, 32), l.log_guid);
    let flen = std::fs::metadata(p).unwrap().len();
    let (flushed, last) = (le64(&head, 48), le64(&head, 56));
    assert!(
        flushed <= flen && flushed % MIB == 0,
        "FlushedFileOffset {flushed}"
    );
    assert!(last >= flushed && last % MIB == 0, "LastFileOffset {last}");
    assert_eq!(len, 4 * 4096);
    assert!(len < l.log_length);
    let mut entry = read_at(p, l.log_offset, len as usize);
    let crc = le32(&entry, 4);
    entry[4..8].fill(0);
    assert_eq!(disk::crc32c(&entry), crc, "entry CRC-32C");
    for i in 0..3 {
        let d = &entry[64 + 32 * i..96 + 32 * i];
        assert_eq!(&d[0..4], b"desc");
        let off = le64(d, 16);
        assert!(
            off >= l.bat_offset && off < l.bat_offset + MIB,
            "descriptor at {off}"
        );
        assert_eq!(off % 4096, 0);
    }
}

#[test]
fn vhdx_crash_after_log_write_is_replayed() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (p, _old, model, blocks) = crashed_vhdx(dir.path(), CrashPoint::AfterLogWrite);
    let l = vhdx_layout(&p);
    assert_one_log_entry(&p, &l);
    for &b in &blocks {
        assert_ne!(
            bat_entry(&p, &l, b, 4096) & 7,
            6,
            "BAT entry of block {b} written before the log was applied"
        );
    }
    // qemu's replay on a copy; first, qemu sees a log it must replay.
    let q = dir.path().join("qemu.vhdx");
    std::fs::copy(&p, &q).unwrap();
    let out = Command::new("qemu-img")
        .args(["check", "-f", "vhdx"])
        .arg(&q)
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("replay"),
        "qemu did not find a log to replay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    qemu_replay_and_check(&q);
    qemu_compare(&q, &model);
    // Read-only open replays in memory and leaves the file alone.
    let h = file_hash(&p);
    {
        let d = VhdxDisk::open(&p, Access::ReadOnly).unwrap();
        assert!(d.log_replayed());
        assert_device_matches(&d, &model, "read-only replay");
    }
    assert_eq!(h, file_hash(&p), "read-only replay modified the file");
    // Read-write open replays into the file.
    {
        let d = VhdxDisk::open(&p, Access::ReadWrite).unwrap();
        assert!(d.log_replayed());
        assert_device_matches(&d, &model, "read-write replay");
    }
    assert_log_empty(&p);
    let l = vhdx_layout(&p);
    for &b in &blocks {
        assert_eq!(bat_entry(&p, &l, b, 4096) & 7, 6, "block {b} after replay");
    }
    qemu_check(&p);
    qemu_compare(&p, &model);
    let d = VhdxDisk::open(&p, Access::ReadOnly).unwrap();
    assert!(!d.log_replayed());
    assert_device_matches(&d, &model, "after replay");
}

#[test]
fn vhdx_crash_after_apply_is_replayed_again() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (p, _old, model, blocks) = crashed_vhdx(dir.path(), CrashPoint::AfterApply);
    let l = vhdx_layout(&p);
    assert_one_log_entry(&p, &l);
    for &b in &blocks {
        assert_eq!(bat_entry(&p, &l, b, 4096) & 7, 6, "block {b} applied");
    }
    let q = dir.path().join("qemu.vhdx");
    std::fs::copy(&p, &q).unwrap();
    qemu_replay_and_check(&q);
    qemu_compare(&q, &model);
    {
        let d = VhdxDisk::open(&p, Access::ReadWrite).unwrap();
        assert!(d.log_replayed());
        assert_device_matches(&d, &model, "second replay");
    }
    assert_log_empty(&p);
    qemu_check(&p);
    qemu_compare(&p, &model);
}

#[test]
fn vhdx_torn_log_entry_is_ignored() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (p, old, mut model, _) = crashed_vhdx(dir.path(), CrashPoint::AfterLogWrite);
    let l = vhdx_layout(&p);
    // Damage the last data sector of the entry, as a torn write would.
    let at = l.log_offset + 3 * 4096 + 2000;
    let mut b = read_at(&p, at, 1);
    b[0] ^= 0x5A;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .write_all_at(&b, at)
        .unwrap();
    // Without the BAT update the new blocks are not there; the write into
    // the already allocated block is.
    let mut expected = old;
    expected.write(2 * MIB + 100, &model.read(2 * MIB + 100, 100));
    model = expected;
    let q = dir.path().join("qemu.vhdx");
    std::fs::copy(&p, &q).unwrap();
    qemu_replay_and_check(&q);
    qemu_compare(&q, &model);
    {
        let d = VhdxDisk::open(&p, Access::ReadWrite).unwrap();
        assert!(!d.log_replayed());
        assert_device_matches(&d, &model, "torn entry");
    }
    assert_log_empty(&p);
    qemu_check(&p);
    qemu_compare(&p, &model);
}

#[test]
fn vhdx_unflushed_allocations_stay_invisible() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("u.vhdx");
    qemu_create(&p, "vhdx", "subformat=dynamic,block_size=1M", "16M");
    let len = VhdxDisk::open(&p, Access::ReadOnly).unwrap().len();
    let mut model = Model::zeros(len);
    {
        let mut d = VhdxDisk::open(&p, Access::ReadWrite).unwrap();
        put(&mut d, &mut model, MIB, &pattern(1, 3000));
        d.flush().unwrap();
    }
    let mut d = VhdxDisk::open(&p, Access::ReadWrite).unwrap();
    d.write_at(5 * MIB, &pattern(2, 3 * MIB as usize)).unwrap();
    put(&mut d, &mut model, MIB + 10, &pattern(3, 10));
    // The process dies: nothing after the writes runs.
    std::mem::forget(d);
    assert_log_empty(&p);
    qemu_check(&p);
    assert!(qemu_raw(&p) == model.to_vec(), "qemu's view differs");
    let d = VhdxDisk::open(&p, Access::ReadOnly).unwrap();
    assert!(!d.log_replayed());
    assert_device_matches(&d, &model, "after the lost flush");
}

/// qemu's reading of `(offset, length, byte)` ranges, each filled with one
/// byte value, checked with `qemu-io read -P` (for disks too large to
/// convert).
fn qemu_io_verify(img: &Path, ranges: &[(u64, u64, u8)]) {
    let mut c = Command::new("qemu-io");
    c.args(["-r", "-f", qfmt(img)]);
    for (off, len, byte) in ranges {
        c.arg("-c").arg(format!("read -q -P {byte} {off} {len}"));
    }
    let out = c.arg(img).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("fail"),
        "qemu-io {}: {text}",
        img.display()
    );
}

/// More changed BAT sectors than one log entry holds: they are committed
/// in several entries, each applied before the next.
#[test]
fn vhdx_many_bat_sectors_are_committed() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.vhdx");
    qemu_create(&p, "vhdx", "subformat=dynamic,block_size=1M", "160G");
    let len = VhdxDisk::open(&p, Access::ReadOnly).unwrap().len();
    let mut model = Model::zeros(len);
    let mut ranges = Vec::new();
    {
        let mut d = VhdxDisk::open(&p, Access::ReadWrite).unwrap();
        // One block in each of 300 BAT sectors (512 entries each).
        for i in 0..300u64 {
            let (off, byte) = (i * 512 * MIB + (i % 7) * 4096, (i % 250) as u8 + 1);
            put(&mut d, &mut model, off, &[byte; 4096]);
            ranges.push((off, 4096, byte));
            // The rest of the new block, and the next block, read zeros.
            ranges.push((off + 4096, 8192, 0));
            ranges.push((off - off % MIB + MIB, 4096, 0));
        }
        d.flush().unwrap();
    }
    assert_log_empty(&p);
    qemu_check(&p);
    let have_io = Command::new("qemu-io")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if have_io {
        qemu_io_verify(&p, &ranges);
    } else {
        println!("notice: qemu-io not installed; qemu's reading of the large disk not checked");
    }
    let d = VhdxDisk::open(&p, Access::ReadOnly).unwrap();
    assert_device_matches(&d, &model, "many sectors");
}

// ---------------------------------------------------------------------------
// Differencing children.

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// Turns a fresh dynamic VHDX into a differencing child of `parent` (same
/// size and block size): HasParent set in the file parameters and a parent
/// locator item (parent_linkage, relative_path) added to the metadata.
fn make_vhdx_child(child: &Path, parent: &Path) {
    let linkage = VhdxDisk::open(parent, Access::ReadOnly)
        .unwrap()
        .data_write_guid()
        .to_string();
    let l = vhdx_layout(child);
    let mut m = read_at(child, l.meta_offset, MIB as usize);
    assert_eq!(&m[0..8], b"metadata");
    let count = u16::from_le_bytes([m[10], m[11]]) as usize;
    let mut end = 0u32;
    for i in 0..count {
        let e = &m[32 + 32 * i..64 + 32 * i];
        let (off, len) = (le32(e, 16), le32(e, 20));
        end = end.max(off + len);
        if Guid::read(e, 0).to_string() == "CAA16737-FA36-4D43-B3B6-33F0AA44E76B" {
            m[off as usize + 4] |= 2; // HasParent
        }
    }
    let loc_at = end.div_ceil(4096) * 4096;
    let name = parent.file_name().unwrap().to_string_lossy().into_owned();
    let pairs = [
        ("parent_linkage", format!("{{{linkage}}}")),
        ("relative_path", format!(".\\{name}")),
    ];
    let mut loc = Guid::from_str_const("B04AEFB7-D19E-4A81-B789-25B8E9445913")
        .0
        .to_vec();
    loc.extend_from_slice(&0u16.to_le_bytes());
    loc.extend_from_slice(&(pairs.len() as u16).to_le_bytes());
    let mut strings = Vec::new();
    let base = 20 + 12 * pairs.len();
    for (k, v) in &pairs {
        let (k, v) = (utf16le(k), utf16le(v));
        let ko = base + strings.len();
        strings.extend_from_slice(&k);
        let vo = base + strings.len();
        strings.extend_from_slice(&v);
        loc.extend_from_slice(&(ko as u32).to_le_bytes());
        loc.extend_from_slice(&(vo as u32).to_le_bytes());
        loc.extend_from_slice(&(k.len() as u16).to_le_bytes());
        loc.extend_from_slice(&(v.len() as u16).to_le_bytes());
    }
    loc.extend_from_slice(&strings);
    m[loc_at as usize..loc_at as usize + loc.len()].copy_from_slice(&loc);
    let e = 32 + 32 * count;
    m[e..e + 32].fill(0);
    m[e..e + 16].copy_from_slice(&Guid::from_str_const("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C").0);
    m[e + 16..e + 20].copy_from_slice(&loc_at.to_le_bytes());
    m[e + 20..e + 24].copy_from_slice(&(loc.len() as u32).to_le_bytes());
    m[e + 24..e + 28].copy_from_slice(&4u32.to_le_bytes()); // IsRequired
    m[10..12].copy_from_slice(&((count + 1) as u16).to_le_bytes());
    std::fs::OpenOptions::new()
        .write(true)
        .open(child)
        .unwrap()
        .write_all_at(&m, l.meta_offset)
        .unwrap();
}

#[test]
fn vhdx_differencing_child_writes_leave_parent_untouched() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("parent.vhdx");
    let child = dir.path().join("child.vhdx");
    qemu_create(&parent, "vhdx", "subformat=dynamic,block_size=1M", "16M");
    // Blocks NOT_PRESENT (read from the parent), not ZERO.
    qemu_create(
        &child,
        "vhdx",
        "subformat=dynamic,block_size=1M,block_state_zero=off",
        "16M",
    );
    let len = VhdxDisk::open(&parent, Access::ReadOnly).unwrap().len();
    let mut model = Model::zeros(len);
    {
        let mut d = VhdxDisk::open(&parent, Access::ReadWrite).unwrap();
        for i in 0..12u64 {
            put(
                &mut d,
                &mut model,
                i * MIB + 1000 * i,
                &pattern(100 + i, 300_000),
            );
        }
        d.flush().unwrap();
    }
    make_vhdx_child(&child, &parent);
    let parent_hash = file_hash(&parent);
    // A crash in the child's first flush, after its log write: the new
    // blocks hold the parent's data around the written bytes.
    {
        let mut d = VhdxDisk::open(&child, Access::ReadWrite).unwrap();
        assert_eq!(d.parent_path(), Some(parent.as_path()));
        assert_device_matches(&d, &model, "child before writes");
        put(&mut d, &mut model, 3 * MIB + 3, &pattern(34, 9000));
        put(&mut d, &mut model, 9 * MIB - 5, &pattern(35, 10));
        d.flush_then_crash(CrashPoint::AfterLogWrite).unwrap();
    }
    {
        let d = VhdxDisk::open(&child, Access::ReadWrite).unwrap();
        assert!(d.log_replayed());
        assert_device_matches(&d, &model, "child after replay");
    }
    assert_log_empty(&child);
    assert_eq!(parent_hash, file_hash(&parent), "parent modified");
    {
        let mut d = VhdxDisk::open(&child, Access::ReadWrite).unwrap();
        edge_writes(&mut d, &mut model, MIB, 31);
        random_writes(&mut d, &mut model, MIB, 32, 40);
        d.flush().unwrap();
        random_writes(&mut d, &mut model, MIB, 33, 20);
    }
    assert_eq!(parent_hash, file_hash(&parent), "parent modified");
    assert_log_empty(&child);
    {
        let d = VhdxDisk::open(&child, Access::ReadOnly).unwrap();
        assert_device_matches(&d, &model, "child after writes");
    }
    // The parent itself still reads as it was.
    let p = VhdxDisk::open(&parent, Access::ReadOnly).unwrap();
    let mut buf = vec![0u8; 300_000];
    p.read_at(MIB + 1000, &mut buf).unwrap();
    assert_eq!(buf, pattern(101, 300_000));
    qemu_check(&parent);
}

fn vhd_checksum(b: &[u8], field: usize) -> u32 {
    !b.iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(u32::from(x)))
}

/// Turns a fresh dynamic VHD into a differencing child of `parent` (same
/// size): disk type 4 in both footer copies, the parent's unique ID and
/// name in the dynamic header.
fn make_vhd_child(child: &Path, parent: &Path) {
    let pb = std::fs::read(parent).unwrap();
    let pfoot = &pb[pb.len() - 512..];
    let mut b = std::fs::read(child).unwrap();
    let n = b.len();
    let mut foot = b[n - 512..].to_vec();
    foot[60..64].copy_from_slice(&4u32.to_be_bytes());
    let c = vhd_checksum(&foot, 64);
    foot[64..68].copy_from_slice(&c.to_be_bytes());
    b[n - 512..].copy_from_slice(&foot);
    b[0..512].copy_from_slice(&foot);
    let dyn_at = u64::from_be_bytes(foot[16..24].try_into().unwrap()) as usize;
    let hdr = &mut b[dyn_at..dyn_at + 1024];
    hdr[40..56].copy_from_slice(&pfoot[68..84]);
    let name: Vec<u8> = parent
        .file_name()
        .unwrap()
        .to_string_lossy()
        .encode_utf16()
        .flat_map(|u| u.to_be_bytes())
        .collect();
    hdr[64..576].fill(0);
    hdr[64..64 + name.len()].copy_from_slice(&name);
    let c = vhd_checksum(hdr, 36);
    hdr[36..40].copy_from_slice(&c.to_be_bytes());
    std::fs::write(child, b).unwrap();
}

fn vhd_child_writes(parent: &Path, child: &Path, seed: u64) {
    let parent_hash = file_hash(parent);
    let mut model = {
        let d = VhdDisk::open(child, Access::ReadOnly).unwrap();
        assert_eq!(d.parent_path(), Some(parent));
        Model::from_device(&d)
    };
    let block = 2 * MIB;
    {
        let mut d = VhdDisk::open(child, Access::ReadWrite).unwrap();
        edge_writes(&mut d, &mut model, block, seed);
        random_writes(&mut d, &mut model, block, seed, 30);
        d.flush().unwrap();
        random_writes(&mut d, &mut model, block, seed + 1, 10);
    }
    assert_eq!(parent_hash, file_hash(parent), "parent modified");
    assert_vhd_footers(child);
    let d = VhdDisk::open(child, Access::ReadOnly).unwrap();
    assert_device_matches(&d, &model, "VHD child");
}

#[test]
fn vhd_differencing_child_writes_leave_parent_untouched() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("parent.vhd");
    let child = dir.path().join("child.vhd");
    qemu_create(&parent, "vpc", "subformat=dynamic", "12M");
    qemu_create(&child, "vpc", "subformat=dynamic", "12M");
    {
        let mut d = VhdDisk::open(&parent, Access::ReadWrite).unwrap();
        let mut m = Model::zeros(d.len());
        for i in 0..5u64 {
            put(
                &mut d,
                &mut m,
                i * 2 * MIB + 777 * i,
                &pattern(200 + i, 400_000),
            );
        }
        d.flush().unwrap();
    }
    make_vhd_child(&child, &parent);
    vhd_child_writes(&parent, &child, 41);
    qemu_check(&parent);
}

#[test]
fn vhd_unflushed_allocations_keep_footer_valid() {
    if !need_qemu() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("u.vhd");
    qemu_create(&p, "vpc", "subformat=dynamic", "16M");
    let len = VhdDisk::open(&p, Access::ReadOnly).unwrap().len();
    let mut model = Model::zeros(len);
    {
        let mut d = VhdDisk::open(&p, Access::ReadWrite).unwrap();
        put(&mut d, &mut model, 3 * MIB, &pattern(1, 5000));
        d.flush().unwrap();
    }
    let mut d = VhdDisk::open(&p, Access::ReadWrite).unwrap();
    d.write_at(8 * MIB - 100, &pattern(2, 2 * MIB as usize))
        .unwrap();
    put(&mut d, &mut model, 3 * MIB + 10, &pattern(3, 10));
    // The process dies: the new blocks are durable, the BAT never names them.
    std::mem::forget(d);
    assert_vhd_footers(&p);
    qemu_check(&p);
    assert!(qemu_raw(&p) == model.to_vec(), "qemu's view differs");
    let d = VhdDisk::open(&p, Access::ReadOnly).unwrap();
    assert_device_matches(&d, &model, "after the lost flush");
}
