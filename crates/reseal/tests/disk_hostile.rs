//! Hostile VHD, VHDX and GPT structures with VALID checksums, so that the
//! code behind the checksum runs: regression cases (a VHDX metadata region
//! of length 0, BAT entries pointing at the BAT or another structure, BAT
//! entries shared by two blocks) and thousands of deterministic mutations
//! of VHDX headers, region tables, metadata and BAT, VHD footers, dynamic
//! headers and BAT, and GPT headers and entries, each followed by a
//! recomputed CRC-32C / CRC-32 / VHD checksum. Opening must give `Ok` or an
//! error, never a panic; what opens must read consistently, and a write
//! into what opens reads back and never shrinks the file.

use reseal::ResealError;
use reseal::disk::{Access, BlockDevice, crc32, crc32c, list_partitions, open_image};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const KIB: usize = 1024;
const MIB: u64 = 1 << 20;

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tools() -> bool {
    reseal_testkit::require_tool("qemu-img")
        && reseal_testkit::require_tool("qemu-io")
        && reseal_testkit::require_tool("sfdisk")
}

/// A small image of `fmt` with data in a few blocks (written by qemu-io).
fn image(dir: &Path, name: &str, fmt: &str, opts: &str) -> PathBuf {
    let p = dir.join(name);
    let mut c = Command::new("qemu-img");
    c.args(["create", "-q", "-f", fmt]);
    if !opts.is_empty() {
        c.args(["-o", opts]);
    }
    run(c.arg(&p).arg("8M"));
    run(Command::new("qemu-io")
        .args([
            "-f",
            fmt,
            "-c",
            "write -P 0x41 0 1M",
            "-c",
            "write -P 0x42 3M 512k",
            "-c",
            "write -P 0x43 7M 4k",
        ])
        .arg(&p));
    p
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Where the structures of a VHDX are (from its first region table).
struct VhdxMap {
    bat: (usize, usize),
    meta: (usize, usize),
}

fn vhdx_map(b: &[u8]) -> VhdxMap {
    let rt = &b[192 * KIB..256 * KIB];
    let (mut bat, mut meta) = ((0, 0), (0, 0));
    for i in 0..le32(rt, 8) as usize {
        let e = &rt[16 + 32 * i..48 + 32 * i];
        let r = (le64(e, 16) as usize, le32(e, 24) as usize);
        match e[0] {
            0x66 => bat = r,  // 2DC27766-...
            0x06 => meta = r, // 8B7CA206-...
            _ => {}
        }
    }
    VhdxMap { bat, meta }
}

/// Recomputes the CRC-32C at 4 of `b[at..at + len]`.
fn fix_crc32c(b: &mut [u8], at: usize, len: usize) {
    let s = &mut b[at..at + len];
    s[4..8].fill(0);
    let c = crc32c(s);
    s[4..8].copy_from_slice(&c.to_le_bytes());
}

fn vhd_checksum(b: &mut [u8], at: usize, len: usize, field: usize) {
    let s = &mut b[at..at + len];
    s[field..field + 4].fill(0);
    let sum = !s.iter().fold(0u32, |a, &x| a.wrapping_add(u32::from(x)));
    s[field..field + 4].copy_from_slice(&sum.to_be_bytes());
}

/// Both VHDX region tables from the (edited) first one.
fn write_region_tables(b: &mut [u8]) {
    fix_crc32c(b, 192 * KIB, 64 * KIB);
    let (a, c) = b.split_at_mut(256 * KIB);
    c[..64 * KIB].copy_from_slice(&a[192 * KIB..256 * KIB]);
}

fn open_fails(path: &Path, bytes: &[u8], what: &str) -> String {
    std::fs::write(path, bytes).unwrap();
    match open_image(path, Access::ReadOnly) {
        Ok(_) => panic!("{what}: opened"),
        Err(e) => {
            assert!(matches!(e, ResealError::DiskFormat { .. }), "{what}: {e:?}");
            e.to_string()
        }
    }
}

#[test]
fn vhdx_metadata_region_of_length_zero_is_an_error() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = image(dir.path(), "m.vhdx", "vhdx", "");
    let mut b = std::fs::read(&p).unwrap();
    let rt = 192 * KIB;
    for i in 0..le32(&b, rt + 8) as usize {
        let e = rt + 16 + 32 * i;
        if b[e] == 0x06 {
            b[e + 24..e + 28].fill(0);
        }
    }
    write_region_tables(&mut b);
    let e = open_fails(&p, &b, "metadata length 0");
    assert!(e.contains("metadata"), "{e}");
}

/// BAT entry 0 (a present block) moved onto each structure of the file in
/// turn, then two entries naming the same block: each is refused.
#[test]
fn vhdx_bat_entries_pointing_at_structures_or_shared_are_errors() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = image(dir.path(), "b.vhdx", "vhdx", "block_size=1M");
    let orig = std::fs::read(&p).unwrap();
    let m = vhdx_map(&orig);
    let e0 = le64(&orig, m.bat.0);
    assert_eq!(e0 & 7, 6, "block 0 is fully present");
    let log = le64(&orig, 64 * KIB + 72);
    for (name, target) in [
        ("the BAT", m.bat.0 as u64),
        ("the metadata region", m.meta.0 as u64),
        ("the log", log),
    ] {
        let mut b = orig.clone();
        b[m.bat.0..m.bat.0 + 8].copy_from_slice(&(target | 6).to_le_bytes());
        let e = open_fails(&p, &b, name);
        assert!(e.contains(name) && e.contains("BAT entry 0"), "{e}");
    }
    // Block 3 (written) given block 0's data.
    let mut b = orig.clone();
    assert_eq!(le64(&b, m.bat.0 + 24) & 7, 6);
    b[m.bat.0 + 24..m.bat.0 + 32].copy_from_slice(&e0.to_le_bytes());
    let e = open_fails(&p, &b, "shared block");
    assert!(e.contains("overlapping the block of entry"), "{e}");
    // The untouched image still opens and writes.
    std::fs::write(&p, &orig).unwrap();
    let mut d = open_image(&p, Access::ReadWrite).unwrap();
    d.write_at(5 * MIB, &[7u8; 4096]).unwrap();
    d.flush().unwrap();
}

#[test]
fn vhd_bat_entries_pointing_at_structures_or_shared_are_errors() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = image(dir.path(), "b.vhd", "vpc", "subformat=dynamic");
    let orig = std::fs::read(&p).unwrap();
    let n = orig.len();
    let dyn_at = be64(&orig[n - 512..], 16) as usize;
    let bat_at = be64(&orig, dyn_at + 16) as usize;
    let e0 = be32(&orig, bat_at);
    assert_ne!(e0, u32::MAX);
    for (name, sector) in [
        ("the dynamic header", dyn_at as u32 / 512),
        ("the BAT", bat_at as u32 / 512),
    ] {
        let mut b = orig.clone();
        b[bat_at..bat_at + 4].copy_from_slice(&sector.to_be_bytes());
        let e = open_fails(&p, &b, name);
        assert!(e.contains(name) && e.contains("BAT entry 0"), "{e}");
    }
    let mut b = orig.clone();
    b[bat_at + 4..bat_at + 8].copy_from_slice(&e0.to_be_bytes());
    let e = open_fails(&p, &b, "shared block");
    assert!(e.contains("overlapping the block of entry"), "{e}");
    // A block starting inside another.
    let mut b = orig.clone();
    b[bat_at + 4..bat_at + 8].copy_from_slice(&(e0 + 8).to_be_bytes());
    open_fails(&p, &b, "overlapping block");
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Changes a few bytes of `b[at..at + len]`: random bytes, bit flips, or
/// a 2/4/8-byte field set to an interesting value.
fn mutate(rng: &mut Rng, b: &mut [u8], at: usize, len: usize) {
    let len = len.min(b.len().saturating_sub(at));
    if len == 0 {
        return;
    }
    for _ in 0..1 + rng.below(3) {
        let o = at + rng.below(len);
        match rng.below(4) {
            0 => b[o] = rng.next() as u8,
            1 => b[o] ^= 1 << rng.below(8),
            _ => {
                let vals: [u64; 12] = [
                    0,
                    1,
                    u64::MAX,
                    u64::from(u32::MAX),
                    0x8000_0000,
                    512,
                    4096,
                    MIB,
                    MIB + 6,
                    (3 * MIB) | 6,
                    b.len() as u64,
                    rng.next(),
                ];
                let v = vals[rng.below(vals.len())];
                let w = [2usize, 4, 8][rng.below(3)];
                let o = o.min(b.len() - w);
                let bytes = if rng.below(2) == 0 {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                b[o..o + w].copy_from_slice(&bytes[..w]);
            }
        }
    }
}

/// Opens the mutated image and uses it; panics are caught by the caller.
fn exercise(path: &Path, write: bool) {
    let Ok(d) = open_image(path, Access::ReadOnly) else {
        return;
    };
    let len = d.len();
    let mut a = vec![0u8; 64 * KIB];
    let mut b = vec![0u8; 64 * KIB];
    for off in [0, 3 * MIB, len.saturating_sub(64 * KIB as u64)] {
        if off + a.len() as u64 > len {
            continue;
        }
        let ra = d.read_at(off, &mut a);
        let rb = d.read_at(off, &mut b);
        assert_eq!(ra.is_ok(), rb.is_ok(), "reads at {off} disagree");
        if ra.is_ok() {
            assert!(a == b, "two reads at {off} differ");
        }
    }
    let _ = list_partitions(&*d, path);
    drop(d);
    if write {
        let file_len = std::fs::metadata(path).unwrap().len();
        if let Ok(mut d) = open_image(path, Access::ReadWrite) {
            let len = d.len();
            if len >= 2 * MIB {
                let data = vec![0xE7u8; 4096];
                for off in [0, len / 2 / 4096 * 4096] {
                    if d.write_at(off, &data).is_ok() {
                        let mut back = vec![0u8; 4096];
                        if d.read_at(off, &mut back).is_ok() {
                            assert!(back == data, "a write at {off} does not read back");
                        }
                    }
                }
                let _ = d.flush();
            }
        }
        // A write only ever adds blocks: it never shrinks the file.
        assert!(std::fs::metadata(path).unwrap().len() >= file_len);
    }
}

/// Runs `n` mutations of `base` on the file `work`: `pick` mutates the
/// bytes and recomputes their checksums. Only the changed 64 KiB chunks
/// are written (and restored afterwards; the whole file after a write).
/// Returns how many mutated images opened.
fn campaign(
    base: &[u8],
    work: &Path,
    n: usize,
    seed: u64,
    pick: impl Fn(&mut Rng, &mut Vec<u8>),
) -> usize {
    const CHUNK: usize = 64 * KIB;
    let mut rng = Rng(seed);
    let mut opened = 0;
    std::fs::write(work, base).unwrap();
    for i in 0..n {
        let mut b = base.to_vec();
        pick(&mut rng, &mut b);
        let changed: Vec<usize> = (0..b.len().div_ceil(CHUNK))
            .filter(|&c| {
                let r = c * CHUNK..((c + 1) * CHUNK).min(b.len());
                b[r.clone()] != base[r]
            })
            .collect();
        let f = std::fs::OpenOptions::new().write(true).open(work).unwrap();
        for &c in &changed {
            let r = c * CHUNK..((c + 1) * CHUNK).min(b.len());
            f.write_all_at(&b[r.clone()], r.start as u64).unwrap();
        }
        // One in eight opens for writing too.
        let write = i % 8 == 0;
        if let Ok(d) = open_image(work, Access::ReadOnly) {
            // A raw image opens always: what counts is its partition table.
            let raw = b.len() == base.len() && d.len() == b.len() as u64;
            if !raw || list_partitions(&*d, work).is_ok() {
                opened += 1;
            }
        }
        let r = std::panic::catch_unwind(|| exercise(work, write));
        if r.is_err() {
            let keep = work.with_extension(format!("panic{i}"));
            std::fs::write(&keep, &b).unwrap();
            panic!(
                "mutation {i} (seed {seed}) panicked; kept as {}",
                keep.display()
            );
        }
        if write {
            std::fs::write(work, base).unwrap();
        } else {
            for &c in &changed {
                let r = c * CHUNK..((c + 1) * CHUNK).min(b.len());
                f.write_all_at(&base[r.clone()], r.start as u64).unwrap();
            }
        }
    }
    eprintln!("seed {seed}: {opened} of {n} mutated images opened");
    // The mutations must reach past the first checks: a good share of
    // them still opens (the rest is refused with an error).
    assert!(opened * 20 >= n, "seed {seed}: only {opened} of {n} opened");
    opened
}

#[test]
fn vhdx_mutations_behind_valid_checksums() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = image(dir.path(), "f.vhdx", "vhdx", "block_size=1M");
    let base = std::fs::read(&p).unwrap();
    let m = vhdx_map(&base);
    let work = dir.path().join("work.vhdx");
    // Headers: both copies, each CRC-32C recomputed.
    campaign(&base, &work, 400, 1, |r, b| {
        let slot = if r.below(2) == 0 { 64 * KIB } else { 128 * KIB };
        mutate(r, b, slot, 80);
        fix_crc32c(b, slot, 4 * KIB);
    });
    // Region table: header and entries.
    campaign(&base, &work, 400, 2, |r, b| {
        mutate(r, b, 192 * KIB, 16 + 32 * 3);
        write_region_tables(b);
    });
    // Metadata table and items (no checksum of their own).
    campaign(&base, &work, 500, 3, |r, b| {
        if r.below(2) == 0 {
            mutate(r, b, m.meta.0, 32 + 32 * 6);
        } else {
            mutate(r, b, m.meta.0 + 64 * KIB, 128);
        }
    });
    // BAT entries: random fields, or a state and a MiB offset inside the
    // file (onto the structures, another block, the end).
    let mibs = (base.len() as u64).div_ceil(MIB) + 1;
    campaign(&base, &work, 500, 4, |r, b| {
        if r.below(2) == 0 {
            mutate(r, b, m.bat.0, 8 * 16);
        } else {
            let i = m.bat.0 + 8 * r.below(12);
            let v = (r.next() % mibs) << 20 | r.below(8) as u64;
            b[i..i + 8].copy_from_slice(&v.to_le_bytes());
        }
    });
}

#[test]
fn vhd_mutations_behind_valid_checksums() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = image(dir.path(), "f.vhd", "vpc", "subformat=dynamic");
    let base = std::fs::read(&p).unwrap();
    let n = base.len();
    let dyn_at = be64(&base[n - 512..], 16) as usize;
    let bat_at = be64(&base, dyn_at + 16) as usize;
    let work = dir.path().join("work.vhd");
    // Footer (both copies equal), checksum recomputed.
    campaign(&base, &work, 500, 5, |r, b| {
        let n = b.len();
        mutate(r, b, n - 512, 100);
        vhd_checksum(b, n - 512, 512, 64);
        let (head, tail) = b.split_at_mut(n - 512);
        head[..512].copy_from_slice(tail);
    });
    // Dynamic header, checksum recomputed.
    campaign(&base, &work, 500, 6, |r, b| {
        if r.below(3) == 0 {
            mutate(r, b, dyn_at + 576, 24 * 8);
        } else {
            mutate(r, b, dyn_at, 64);
        }
        vhd_checksum(b, dyn_at, 1024, 36);
    });
    // BAT entries: set to sectors inside the file (anywhere: onto the
    // structures, into other blocks, unaligned), unallocated, or another
    // entry's value.
    let sectors = (n / 512) as u64;
    campaign(&base, &work, 500, 7, |r, b| {
        for _ in 0..1 + r.below(2) {
            let i = bat_at + 4 * r.below(4);
            let v = match r.below(4) {
                0 => u32::MAX,
                1 => be32(b, bat_at + 4 * r.below(4)),
                2 => be32(b, i).wrapping_add(r.below(9) as u32).wrapping_sub(4),
                _ => (r.next() % sectors) as u32,
            };
            b[i..i + 4].copy_from_slice(&v.to_be_bytes());
        }
    });
}

#[test]
fn gpt_mutations_behind_valid_crcs() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.raw");
    std::fs::File::create(&p).unwrap().set_len(4 * MIB).unwrap();
    let mut c = Command::new("sfdisk");
    c.args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&p)
        .stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: gpt\nstart=2048, size=2048, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\nstart=4096, size=2048\n")
            .unwrap();
    }
    assert!(child.wait().unwrap().success());
    let base = std::fs::read(&p).unwrap();
    let d = open_image(&p, Access::ReadOnly).unwrap();
    assert_eq!(list_partitions(&*d, &p).unwrap().len(), 2);
    let work = dir.path().join("work.raw");
    // Header fields (primary), header CRC recomputed; and partition
    // entries, entries CRC and then header CRC recomputed.
    let fix = |b: &mut Vec<u8>| {
        let h = 512;
        let size = (le32(b, h + 12) as usize).clamp(92, 512);
        let count = le32(b, h + 80) as usize;
        let esize = le32(b, h + 84) as usize;
        let lba = le64(b, h + 72) as usize;
        let total = count.saturating_mul(esize);
        if let Some(arr) = lba
            .checked_mul(512)
            .and_then(|s| b.get(s..s.checked_add(total)?))
        {
            let c = crc32(arr);
            b[h + 88..h + 92].copy_from_slice(&c.to_le_bytes());
        }
        b[h + 16..h + 20].fill(0);
        let c = crc32(&b[h..h + size]);
        b[h + 16..h + 20].copy_from_slice(&c.to_le_bytes());
    };
    campaign(&base, &work, 700, 8, |r, b| {
        if r.below(2) == 0 {
            mutate(r, b, 512, 92);
        } else {
            mutate(r, b, 1024, 256);
        }
        fix(b);
        // The backup is made unusable half of the time, so the primary's
        // mutations are what is read.
        if r.below(2) == 0 {
            let n = b.len();
            b[n - 512..n - 504].fill(0);
        }
    });
}
