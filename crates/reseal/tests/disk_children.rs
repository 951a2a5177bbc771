//! Differencing children made by `vhd::create_child` and
//! `vhdx::create_child`: they read as their parent, writes land in the
//! child only, and independent readers agree:
//!
//! - `vhdiinfo` (libvhdi) shows a differencing disk of the parent's size
//!   whose parent identifier is the parent's identifier, and the libvhdi
//!   Python bindings accept the parent (`set_parent` compares the IDs);
//! - for VHD, libvhdi reads the child (with its parent) equal to our model,
//!   and qemu-img (which opens a differencing VHD without its parent) shows
//!   the same virtual size and, in the blocks the child holds, our data;
//! - for VHDX, dissect.hypervisor (in the project's Python environment)
//!   reads the child, finding its parent through the locator, equal to our
//!   model. libvhdi 20210425 reads the data of a differencing VHDX only
//!   where the chunk's sector bitmap says so (without a sector bitmap block
//!   it reads the bitmap from file offset 0), so the writer keeps the
//!   bitmap of every block it makes fully present set, as Hyper-V does
//!   (checked by `tests/personalize.rs` through `vhdimount`); qemu has no
//!   differencing VHDX.
//!
//! Also the checks made on the parent a differencing disk names.

use reseal::disk::{self, Access, BlockDevice, open_image};
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

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

/// Writes with qemu-io (an independent writer) into a parent.
fn qemu_write(path: &Path, fmt: &str, writes: &[(u8, u64, u64)]) {
    let mut c = Command::new("qemu-io");
    c.args(["-f", fmt]);
    for (pat, off, len) in writes {
        c.args(["-c", &format!("write -P {pat} {off} {len}")]);
    }
    run(c.arg(path));
}

/// qemu's view of a non-differencing image.
fn qemu_raw(img: &Path, fmt: &str) -> Vec<u8> {
    let out = img.with_extension("qemu.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-f", fmt, "-O", "raw"])
        .arg(img)
        .arg(&out));
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

fn read_all(dev: &dyn BlockDevice) -> Vec<u8> {
    let mut v = vec![0u8; dev.len() as usize];
    dev.read_at(0, &mut v).unwrap();
    v
}

fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// libvhdi's reading of `child` (with `parent` set as its parent) through
/// the Python bindings, written to a raw file and returned.
fn libvhdi_raw(child: &Path, parent: &Path) -> Vec<u8> {
    let out = child.with_extension("libvhdi.raw");
    let script = r#"
import sys, pyvhdi
child, parent, out = sys.argv[1:4]
p = pyvhdi.file(); p.open(parent)
c = pyvhdi.file(); c.open(child)
c.set_parent(p)
with open(out, "wb") as f:
    left = c.get_media_size(); at = 0
    while left:
        n = min(left, 1 << 20)
        f.write(c.read_buffer_at_offset(n, at)); at += n; left -= n
"#;
    run(Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(child)
        .arg(parent)
        .arg(&out));
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

/// The libvhdi Python bindings open `child` and accept `parent` as its
/// parent (libvhdi compares the child's parent identifier with it).
fn libvhdi_accepts_parent(child: &Path, parent: &Path) {
    let script = r#"
import sys, pyvhdi
p = pyvhdi.file(); p.open(sys.argv[2])
c = pyvhdi.file(); c.open(sys.argv[1])
c.set_parent(p)
assert c.get_media_size() == p.get_media_size()
"#;
    run(Command::new("/usr/bin/python3")
        .args(["-c", script])
        .arg(child)
        .arg(parent));
}

/// Writes made through the children: offset and length.
const WRITES: [(u64, usize); 4] = [
    (0, 512),
    (MIB + 777, 5000),
    (10 * MIB, 300_000),
    (24 * MIB - 4096, 4096),
];

/// The project's Python environment, if it has dissect.hypervisor.
fn dissect_python() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/venv/bin/python");
    let ok = p.is_file()
        && Command::new(&p)
            .args(["-c", "import dissect.hypervisor"])
            .output()
            .is_ok_and(|o| o.status.success());
    ok.then_some(p)
}

/// dissect.hypervisor's reading of the VHDX `child` (its parent found
/// through the child's parent locator).
fn dissect_vhdx_raw(py: &Path, child: &Path) -> Vec<u8> {
    let out = child.with_extension("dissect.raw");
    let script = r#"
import sys
from dissect.hypervisor.disk.vhdx import VHDX
d = VHDX(sys.argv[1])
assert d.parent is not None, "no parent"
with open(sys.argv[2], "wb") as f:
    at = 0
    while at < d.size:
        n = min(d.size - at, 1 << 20)
        d.seek(at)
        f.write(d.read(n))
        at += n
"#;
    run(Command::new(py).args(["-c", script]).arg(child).arg(&out));
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).unwrap();
    bytes
}

fn have_pyvhdi() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import pyvhdi"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn vhdiinfo(img: &Path) -> String {
    run(Command::new("vhdiinfo").arg(img))
}

fn tools() -> bool {
    reseal_testkit::require_tool("qemu-img")
        && reseal_testkit::require_tool("qemu-io")
        && reseal_testkit::require_tool("vhdiinfo")
        && reseal_testkit::require(
            have_pyvhdi(),
            "the libvhdi Python bindings (python3-libvhdi)",
        )
}

fn sha(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Makes a parent of `fmt` (qemu's name) with data written by qemu-io, a
/// child of it in `child_dir`, and checks everything the module doc says.
fn child_roundtrip(fmt: &str, opts: &str, ext: &str, nested: bool) {
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join(format!("base image.{ext}"));
    qemu_create(&parent, fmt, opts, "24M");
    qemu_write(
        &parent,
        fmt,
        &[
            (0x5a, MIB, 3 * MIB),
            (0x33, 10 * MIB + 4096, 100_000),
            (0x77, 23 * MIB, MIB),
        ],
    );
    let parent_bytes = qemu_raw(&parent, fmt);
    let child_dir = if nested {
        dir.path().join("children")
    } else {
        dir.path().to_path_buf()
    };
    std::fs::create_dir_all(&child_dir).unwrap();
    let child = child_dir.join(format!("child.{ext}"));
    create(ext, &parent, &child).unwrap();
    // A second creation over the same name is refused.
    assert!(create(ext, &parent, &child).is_err());
    let before = sha(&parent);

    // Reads equal the parent, through our reader and libvhdi.
    {
        let d = open_image(&child, Access::ReadOnly).unwrap();
        assert_eq!(d.len(), parent_bytes.len() as u64);
        assert!(
            read_all(&*d) == parent_bytes,
            "fresh child differs from the parent"
        );
    }
    let vhd = ext == "vhd";
    if vhd {
        assert!(
            libvhdi_raw(&child, &parent) == parent_bytes,
            "libvhdi: fresh child differs"
        );
    } else {
        libvhdi_accepts_parent(&child, &parent);
        let py = dissect_python();
        if reseal_testkit::require(py.is_some(), "dissect.hypervisor in target/venv") {
            let py = py.unwrap();
            assert!(
                dissect_vhdx_raw(&py, &child) == parent_bytes,
                "dissect: fresh child differs"
            );
        }
    }
    let (pinfo, cinfo) = (vhdiinfo(&parent), vhdiinfo(&child));
    let field = |info: &str, name: &str| -> String {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| panic!("no {name} in {info}"))
    };
    assert_eq!(field(&cinfo, "Disk type"), "Differential", "{cinfo}");
    assert_eq!(field(&cinfo, "Media size"), field(&pinfo, "Media size"));
    assert_eq!(
        field(&cinfo, "Parent identifier"),
        field(&pinfo, "Identifier"),
        "{cinfo}\n{pinfo}"
    );
    if vhd {
        assert_eq!(
            field(&cinfo, "Parent filename"),
            parent.file_name().unwrap().to_str().unwrap()
        );
        let q = qemu_raw(&child, "vpc");
        assert_eq!(
            q.len(),
            parent_bytes.len(),
            "qemu's virtual size of the child"
        );
        assert!(
            q.iter().all(|&b| b == 0),
            "qemu sees data in an empty child"
        );
    }

    // Writes through the child.
    let mut model = parent_bytes.clone();
    {
        let mut d = open_image(&child, Access::ReadWrite).unwrap();
        for (i, (off, n)) in WRITES.into_iter().enumerate() {
            let data = pattern(i as u64 + 1, n);
            d.write_at(off, &data).unwrap();
            model[off as usize..off as usize + n].copy_from_slice(&data);
        }
        d.flush().unwrap();
    }
    assert_eq!(before, sha(&parent), "the parent changed");
    let d = open_image(&child, Access::ReadOnly).unwrap();
    assert!(
        read_all(&*d) == model,
        "our reading of the child differs from the model"
    );
    drop(d);
    if vhd {
        assert!(
            libvhdi_raw(&child, &parent) == model,
            "libvhdi's reading of the child differs"
        );
        // qemu reads the blocks the child holds (each written block is
        // made whole from the parent) and zeros elsewhere.
        let q = qemu_raw(&child, "vpc");
        let block = 2 * MIB as usize;
        for (i, chunk) in q.chunks(block).enumerate() {
            let want = &model[i * block..(i * block + block).min(model.len())];
            assert!(
                chunk.iter().all(|&b| b == 0) || chunk == want,
                "qemu's view of block {i} is neither empty nor the model"
            );
        }
        for (off, _) in WRITES {
            let b = off as usize / block;
            assert!(
                q[b * block..(b * block + block).min(q.len())]
                    == model[b * block..(b * block + block).min(model.len())],
                "qemu: block {b}"
            );
        }
    } else {
        libvhdi_accepts_parent(&child, &parent);
        if let Some(py) = dissect_python() {
            assert!(
                dissect_vhdx_raw(&py, &child) == model,
                "dissect's reading of the child differs"
            );
        }
    }
    // Only the changed blocks are stored.
    let (block, overhead) = if vhd {
        (2 * MIB, 512 + 64 * 1024)
    } else {
        let b = disk::vhdx::VhdxDisk::open(&child, Access::ReadOnly)
            .unwrap()
            .block_size();
        // Headers, log, metadata, BAT, and the sector bitmap block of the
        // one chunk the writes touch.
        (b, 5 * MIB)
    };
    let mut touched: Vec<u64> = WRITES
        .iter()
        .flat_map(|&(off, n)| off / block..=(off + n as u64 - 1) / block)
        .collect();
    touched.dedup();
    let len = std::fs::metadata(&child).unwrap().len();
    let bound = overhead + touched.len() as u64 * (block + 512);
    assert!(len <= bound, "child of {len} bytes, more than {bound}");
}

fn create(ext: &str, parent: &Path, child: &Path) -> reseal::Result<()> {
    if ext == "vhdx" {
        disk::vhdx::create_child(parent, child)
    } else {
        disk::vhd::create_child(parent, child)
    }
}

#[test]
fn vhdx_child_beside_parent() {
    if tools() {
        child_roundtrip("vhdx", "subformat=dynamic,block_size=1M", "vhdx", false);
    }
}

#[test]
fn vhdx_child_in_other_directory() {
    if tools() {
        child_roundtrip("vhdx", "subformat=dynamic", "vhdx", true);
    }
}

#[test]
fn vhd_child_beside_parent() {
    if tools() {
        child_roundtrip("vpc", "subformat=dynamic", "vhd", false);
    }
}

#[test]
fn vhd_child_in_other_directory() {
    if tools() {
        child_roundtrip("vpc", "subformat=dynamic", "vhd", true);
    }
}

fn vhd_checksum(b: &[u8], field: usize) -> u32 {
    !b.iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(u32::from(x)))
}

/// Rewrites the data of the VHD locator `code` (W2ru or W2ku) of `child`
/// to `text` (UTF-16LE), fixing the dynamic header's checksum.
fn set_vhd_locator(child: &Path, code: &[u8; 4], text: &str) {
    let mut b = std::fs::read(child).unwrap();
    let hdr_at = 512;
    let data: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    for i in 0..8 {
        let e = hdr_at + 576 + 24 * i;
        if &b[e..e + 4] == code {
            let at = u64::from_be_bytes(b[e + 16..e + 24].try_into().unwrap()) as usize;
            let space = u32::from_be_bytes(b[e + 4..e + 8].try_into().unwrap()) as usize * 512;
            assert!(data.len() <= space);
            b[at..at + space].fill(0);
            b[at..at + data.len()].copy_from_slice(&data);
            b[e + 8..e + 12].copy_from_slice(&(data.len() as u32).to_be_bytes());
        }
    }
    let c = vhd_checksum(&b[hdr_at..hdr_at + 1024], 36);
    b[hdr_at + 36..hdr_at + 40].copy_from_slice(&c.to_be_bytes());
    std::fs::write(child, b).unwrap();
}

fn open_err(child: &Path) -> String {
    match open_image(child, Access::ReadOnly) {
        Ok(_) => panic!("{} opened", child.display()),
        Err(e) => {
            assert!(matches!(e, reseal::ResealError::DiskFormat { .. }), "{e:?}");
            e.to_string()
        }
    }
}

/// A parent and its fresh child (`ext` is "vhd" or "vhdx").
fn family(dir: &Path, ext: &str) -> (PathBuf, PathBuf) {
    let fmt = if ext == "vhd" { "vpc" } else { "vhdx" };
    let parent = dir.join(format!("parent.{ext}"));
    let child = dir.join(format!("child.{ext}"));
    qemu_create(&parent, fmt, "", "8M");
    qemu_write(&parent, fmt, &[(0x11, 0, 4096)]);
    create(ext, &parent, &child).unwrap();
    assert!(open_image(&child, Access::ReadOnly).is_ok());
    (parent, child)
}

/// Replacing the parent by something else under the same name: another
/// image of the format (new ID), a raw file, a symlink to /etc/passwd, to
/// a device, a FIFO, a directory. Every open of the child is refused with
/// a format error naming the child and the parent.
fn hostile_parents(ext: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (parent, child) = family(dir.path(), ext);
    let fmt = if ext == "vhd" { "vpc" } else { "vhdx" };
    let child_s = child.display().to_string();
    let parent_s = parent.display().to_string();

    // Another image of the same format: a different identity.
    std::fs::remove_file(&parent).unwrap();
    qemu_create(&parent, fmt, "", "8M");
    let e = open_err(&child);
    assert!(e.contains(&child_s) && e.contains(&parent_s), "{e}");
    let id = if ext == "vhd" {
        "unique ID"
    } else {
        "DataWriteGuid"
    };
    assert_eq!(e.matches(id).count(), 2, "expected and found IDs: {e}");

    // A raw file with the parent's bytes.
    std::fs::remove_file(&parent).unwrap();
    std::fs::write(&parent, vec![0x11u8; 8 << 20]).unwrap();
    let e = open_err(&child);
    assert!(e.contains(&parent_s) && e.contains("Raw"), "{e}");

    for target in ["/etc/passwd", "/dev/zero", "/dev/null"] {
        std::fs::remove_file(&parent).unwrap();
        std::os::unix::fs::symlink(target, &parent).unwrap();
        let e = open_err(&child);
        assert!(e.contains(&parent_s), "{target}: {e}");
    }
    std::fs::remove_file(&parent).unwrap();
    run(Command::new("mkfifo").arg(&parent));
    let e = open_err(&child);
    assert!(e.contains("a regular file"), "{e}");
    std::fs::remove_file(&parent).unwrap();
    std::fs::create_dir(&parent).unwrap();
    let e = open_err(&child);
    assert!(e.contains("a regular file"), "{e}");
}

#[test]
fn vhd_hostile_parents_refused() {
    if reseal_testkit::require_tool("qemu-img") && reseal_testkit::require_tool("qemu-io") {
        hostile_parents("vhd");
    }
}

#[test]
fn vhdx_hostile_parents_refused() {
    if reseal_testkit::require_tool("qemu-img") && reseal_testkit::require_tool("qemu-io") {
        hostile_parents("vhdx");
    }
}

/// A VHD whose locators name /etc/passwd (the relative one gone) is
/// refused: the file is not a VHD.
#[test]
fn vhd_locator_naming_etc_passwd_refused() {
    if !(reseal_testkit::require_tool("qemu-img") && reseal_testkit::require_tool("qemu-io")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_parent, child) = family(dir.path(), "vhd");
    set_vhd_locator(&child, b"W2ru", ".\\missing.vhd");
    set_vhd_locator(&child, b"W2ku", "\\etc\\passwd");
    let e = open_err(&child);
    assert!(e.contains("/etc/passwd") && e.contains("a VHD file"), "{e}");
}

/// Writing to the parent gives it a new DataWriteGuid: its VHDX children
/// no longer open (their data would no longer be consistent).
#[test]
fn vhdx_child_refused_after_parent_changed() {
    if !(reseal_testkit::require_tool("qemu-img") && reseal_testkit::require_tool("qemu-io")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (parent, child) = family(dir.path(), "vhdx");
    {
        let mut p = open_image(&parent, Access::ReadWrite).unwrap();
        p.write_at(0, &[1u8; 512]).unwrap();
        p.flush().unwrap();
    }
    let e = open_err(&child);
    assert!(
        e.contains("parent_linkage") && e.contains("DataWriteGuid"),
        "{e}"
    );
}

/// The relative locator comes first: a copy of the family moved elsewhere
/// still opens its own parent, not the original one named by the absolute
/// path.
#[test]
fn relative_locator_wins_after_move() {
    if !(reseal_testkit::require_tool("qemu-img") && reseal_testkit::require_tool("qemu-io")) {
        return;
    }
    for ext in ["vhd", "vhdx"] {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir(&a).unwrap();
        let (parent, child) = family(&a, ext);
        let b = dir.path().join("b");
        std::fs::create_dir(&b).unwrap();
        std::fs::copy(&parent, b.join(parent.file_name().unwrap())).unwrap();
        std::fs::copy(&child, b.join(child.file_name().unwrap())).unwrap();
        let moved = b.join(child.file_name().unwrap());
        let expect = b.join(parent.file_name().unwrap());
        if ext == "vhd" {
            let d = disk::vhd::VhdDisk::open(&moved, Access::ReadOnly).unwrap();
            assert_eq!(d.parent_path(), Some(expect.as_path()));
        } else {
            let d = disk::vhdx::VhdxDisk::open(&moved, Access::ReadOnly).unwrap();
            assert_eq!(d.parent_path(), Some(expect.as_path()));
        }
        // With the relative parent gone, the absolute path is used.
        std::fs::remove_file(&expect).unwrap();
        let d = open_image(&moved, Access::ReadOnly).unwrap();
        let mut buf = [0u8; 4096];
        d.read_at(0, &mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == 0x11));
    }
}

/// A child of a child: each level written through, every level reads as
/// its own model and the levels below stay unchanged.
#[test]
fn grandchildren() {
    if !(reseal_testkit::require_tool("qemu-img") && reseal_testkit::require_tool("qemu-io")) {
        return;
    }
    for ext in ["vhd", "vhdx"] {
        let dir = tempfile::tempdir().unwrap();
        let (parent, child) = family(dir.path(), ext);
        let grandchild = dir.path().join(format!("grandchild.{ext}"));
        let mut model = read_all(&*open_image(&parent, Access::ReadOnly).unwrap());
        {
            let mut d = open_image(&child, Access::ReadWrite).unwrap();
            let data = pattern(7, 70_000);
            d.write_at(MIB + 3, &data).unwrap();
            d.flush().unwrap();
            model[MIB as usize + 3..MIB as usize + 3 + data.len()].copy_from_slice(&data);
        }
        let child_model = model.clone();
        create(ext, &child, &grandchild).unwrap();
        let (ph, ch) = (sha(&parent), sha(&child));
        {
            let mut d = open_image(&grandchild, Access::ReadWrite).unwrap();
            assert!(read_all(&*d) == model, "{ext}: fresh grandchild");
            let data = pattern(8, 5000);
            d.write_at(MIB + 60_000, &data).unwrap();
            d.flush().unwrap();
            let at = MIB as usize + 60_000;
            model[at..at + data.len()].copy_from_slice(&data);
        }
        assert!(
            ph == sha(&parent) && ch == sha(&child),
            "{ext}: a lower level changed"
        );
        let g = open_image(&grandchild, Access::ReadOnly).unwrap();
        assert!(read_all(&*g) == model, "{ext}: grandchild");
        let c = open_image(&child, Access::ReadOnly).unwrap();
        assert!(read_all(&*c) == child_model, "{ext}: child");
        if ext == "vhd" && have_pyvhdi() {
            // libvhdi with the chain given explicitly.
            let script = r#"
import sys, pyvhdi
p = pyvhdi.file(); p.open(sys.argv[1])
c = pyvhdi.file(); c.open(sys.argv[2]); c.set_parent(p)
g = pyvhdi.file(); g.open(sys.argv[3]); g.set_parent(c)
sys.stdout.buffer.write(g.read_buffer_at_offset(g.get_media_size(), 0))
"#;
            let out = Command::new("/usr/bin/python3")
                .args(["-c", script])
                .arg(&parent)
                .arg(&child)
                .arg(&grandchild)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.stdout == model, "libvhdi: grandchild");
        }
        if ext == "vhdx" {
            if let Some(py) = dissect_python() {
                assert!(
                    dissect_vhdx_raw(&py, &grandchild) == model,
                    "dissect: grandchild"
                );
            }
        }
    }
}
