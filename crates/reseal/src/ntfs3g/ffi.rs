//! Thin bindings to libntfs-3g: the device-operations bridge to our block
//! layer and the handful of calls [`super`] needs. Every `unsafe` block of
//! the NTFS writer lives here; everything exported is safe.
//!
//! Structures are declared only as far as this module reads or writes
//! their fields (`struct ntfs_device`, `struct ntfs_device_operations`,
//! `struct SECURITY_CONTEXT`, the first field of `ntfs_inode`); the rest
//! are opaque pointers.
#![allow(unsafe_code)]

use std::ffi::{CString, c_char, c_int, c_ulong, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

use crate::disk::BlockDevice;

/// `ntfs_volume *` (opaque).
#[repr(C)]
struct RawVolume {
    _private: [u8; 0],
}

/// `ntfs_inode`: only `mft_no`, its first field, is read.
#[repr(C)]
struct RawInode {
    mft_no: u64,
}

/// `struct _ntfs_attr` (`ntfs_attr`): only `data_size` is read, to size
/// reads from the attribute; the whole structure is declared so that its
/// layout can be checked.
#[repr(C)]
struct RawAttr {
    rl: *mut c_void,
    ni: *mut RawInode,
    ty: u32,
    data_flags: u16,
    name: *mut u16,
    name_len: u32,
    state: c_ulong,
    allocated_size: i64,
    data_size: i64,
    initialized_size: i64,
    compressed_size: i64,
    compression_block_size: u32,
    compression_block_size_bits: u8,
    compression_block_clusters: u8,
    unused_runs: i8,
}

/// `struct ntfs_device`.
#[repr(C)]
struct RawDevice {
    d_ops: *mut DeviceOps,
    d_state: c_ulong,
    d_name: *mut c_char,
    d_private: *mut c_void,
    d_heads: c_int,
    d_sectors_per_track: c_int,
}

/// `struct ntfs_device_operations`.
#[repr(C)]
struct DeviceOps {
    open: Option<unsafe extern "C" fn(*mut RawDevice, c_int) -> c_int>,
    close: Option<unsafe extern "C" fn(*mut RawDevice) -> c_int>,
    seek: Option<unsafe extern "C" fn(*mut RawDevice, i64, c_int) -> i64>,
    read: Option<unsafe extern "C" fn(*mut RawDevice, *mut c_void, i64) -> i64>,
    write: Option<unsafe extern "C" fn(*mut RawDevice, *const c_void, i64) -> i64>,
    pread: Option<unsafe extern "C" fn(*mut RawDevice, *mut c_void, i64, i64) -> i64>,
    pwrite: Option<unsafe extern "C" fn(*mut RawDevice, *const c_void, i64, i64) -> i64>,
    sync: Option<unsafe extern "C" fn(*mut RawDevice) -> c_int>,
    stat: Option<unsafe extern "C" fn(*mut RawDevice, *mut libc::stat) -> c_int>,
    ioctl: Option<unsafe extern "C" fn(*mut RawDevice, c_ulong, *mut c_void) -> c_int>,
}

/// `struct SECURITY_CONTEXT` (MAPCOUNT = 2).
#[repr(C)]
struct SecurityContext {
    vol: *mut RawVolume,
    mapping: [*mut c_void; 2],
    pseccache: *mut *mut c_void,
    uid: libc::uid_t,
    gid: libc::gid_t,
    tid: libc::pid_t,
    umask: libc::mode_t,
}

/// Compile-time checks of every hand-declared libntfs-3g structure against
/// the sizes and offsets of Debian's ntfs-3g-dev headers on LP64
/// (`attrib.h`, `device.h`, `inode.h`, `security.h`, read with
/// `sizeof`/`offsetof` from a C probe compiled against them).
#[cfg(target_pointer_width = "64")]
mod layout_checks {
    use super::*;
    use std::mem::{offset_of, size_of};

    const _: () = assert!(offset_of!(RawInode, mft_no) == 0);

    const _: () = assert!(size_of::<RawAttr>() == 88);
    const _: () = assert!(offset_of!(RawAttr, rl) == 0);
    const _: () = assert!(offset_of!(RawAttr, ni) == 8);
    const _: () = assert!(offset_of!(RawAttr, ty) == 16);
    const _: () = assert!(offset_of!(RawAttr, data_flags) == 20);
    const _: () = assert!(offset_of!(RawAttr, name) == 24);
    const _: () = assert!(offset_of!(RawAttr, name_len) == 32);
    const _: () = assert!(offset_of!(RawAttr, state) == 40);
    const _: () = assert!(offset_of!(RawAttr, allocated_size) == 48);
    const _: () = assert!(offset_of!(RawAttr, data_size) == 56);
    const _: () = assert!(offset_of!(RawAttr, initialized_size) == 64);
    const _: () = assert!(offset_of!(RawAttr, compressed_size) == 72);
    const _: () = assert!(offset_of!(RawAttr, compression_block_size) == 80);
    const _: () = assert!(offset_of!(RawAttr, compression_block_size_bits) == 84);
    const _: () = assert!(offset_of!(RawAttr, compression_block_clusters) == 85);
    const _: () = assert!(offset_of!(RawAttr, unused_runs) == 86);

    const _: () = assert!(size_of::<RawDevice>() == 40);
    const _: () = assert!(offset_of!(RawDevice, d_ops) == 0);
    const _: () = assert!(offset_of!(RawDevice, d_state) == 8);
    const _: () = assert!(offset_of!(RawDevice, d_name) == 16);
    const _: () = assert!(offset_of!(RawDevice, d_private) == 24);
    const _: () = assert!(offset_of!(RawDevice, d_heads) == 32);
    const _: () = assert!(offset_of!(RawDevice, d_sectors_per_track) == 36);

    const _: () = assert!(size_of::<DeviceOps>() == 80);
    const _: () = assert!(offset_of!(DeviceOps, open) == 0);
    const _: () = assert!(offset_of!(DeviceOps, close) == 8);
    const _: () = assert!(offset_of!(DeviceOps, seek) == 16);
    const _: () = assert!(offset_of!(DeviceOps, read) == 24);
    const _: () = assert!(offset_of!(DeviceOps, write) == 32);
    const _: () = assert!(offset_of!(DeviceOps, pread) == 40);
    const _: () = assert!(offset_of!(DeviceOps, pwrite) == 48);
    const _: () = assert!(offset_of!(DeviceOps, sync) == 56);
    const _: () = assert!(offset_of!(DeviceOps, stat) == 64);
    const _: () = assert!(offset_of!(DeviceOps, ioctl) == 72);

    const _: () = assert!(size_of::<SecurityContext>() == 48);
    const _: () = assert!(offset_of!(SecurityContext, vol) == 0);
    const _: () = assert!(offset_of!(SecurityContext, mapping) == 8);
    const _: () = assert!(offset_of!(SecurityContext, pseccache) == 24);
    const _: () = assert!(offset_of!(SecurityContext, uid) == 32);
    const _: () = assert!(offset_of!(SecurityContext, gid) == 36);
    const _: () = assert!(offset_of!(SecurityContext, tid) == 40);
    const _: () = assert!(offset_of!(SecurityContext, umask) == 44);
}

type FillDir = unsafe extern "C" fn(*mut c_void, *const u16, c_int, c_int, i64, u64, u32) -> c_int;

/// `AT_DATA`.
const AT_DATA: u32 = 0x80;
/// `S_IFREG` / `S_IFDIR` as `ntfs_create` takes them.
const S_IFREG: libc::mode_t = 0o100000;
const S_IFDIR: libc::mode_t = 0o040000;
/// `NTFS_UPDATE_MCTIME`.
const UPDATE_MCTIME: c_int = (1 << 1) | (1 << 2);
/// Bits of `d_state`: `ND_Open`, `ND_ReadOnly`.
const ND_OPEN: c_ulong = 1 << 0;
const ND_READONLY: c_ulong = 1 << 1;
/// `NTFS_MNT_RDONLY`.
const MNT_RDONLY: c_ulong = 1;
/// `FILE_NAME_DOS` (a short-name-only directory entry).
const FILE_NAME_DOS: c_int = 2;

#[link(name = "ntfs-3g")]
unsafe extern "C" {
    static mut AT_UNNAMED: [u16; 0];
    fn ntfs_device_alloc(
        name: *const c_char,
        state: libc::c_long,
        dops: *mut DeviceOps,
        private: *mut c_void,
    ) -> *mut RawDevice;
    fn ntfs_device_free(dev: *mut RawDevice) -> c_int;
    fn ntfs_device_mount(dev: *mut RawDevice, flags: c_ulong) -> *mut RawVolume;
    fn ntfs_umount(vol: *mut RawVolume, force: c_int) -> c_int;
    fn ntfs_open_secure(vol: *mut RawVolume) -> c_int;
    fn ntfs_close_secure(vol: *mut RawVolume) -> c_int;
    fn ntfs_set_ignore_case(vol: *mut RawVolume) -> c_int;
    fn ntfs_inode_open(vol: *mut RawVolume, mref: u64) -> *mut RawInode;
    fn ntfs_inode_close(ni: *mut RawInode) -> c_int;
    fn ntfs_inode_update_times(ni: *mut RawInode, mask: c_int);
    fn ntfs_inode_lookup_by_name(dir_ni: *mut RawInode, name: *const u16, len: c_int) -> u64;
    fn ntfs_create(
        dir_ni: *mut RawInode,
        securid: u32,
        name: *const u16,
        len: u8,
        mode: libc::mode_t,
    ) -> *mut RawInode;
    fn ntfs_delete(
        vol: *mut RawVolume,
        path: *const c_char,
        ni: *mut RawInode,
        dir_ni: *mut RawInode,
        name: *const u16,
        len: u8,
    ) -> c_int;
    fn ntfs_link(ni: *mut RawInode, dir_ni: *mut RawInode, name: *const u16, len: u8) -> c_int;
    fn ntfs_readdir(dir_ni: *mut RawInode, pos: *mut i64, ctx: *mut c_void, f: FillDir) -> c_int;
    fn ntfs_attr_open(ni: *mut RawInode, ty: u32, name: *mut u16, len: u32) -> *mut RawAttr;
    fn ntfs_attr_close(na: *mut RawAttr);
    fn ntfs_attr_pwrite(na: *mut RawAttr, pos: i64, count: i64, b: *const c_void) -> i64;
    fn ntfs_attr_pread(na: *mut RawAttr, pos: i64, count: i64, b: *mut c_void) -> i64;
    fn ntfs_attr_truncate(na: *mut RawAttr, size: i64) -> c_int;
    fn ntfs_attr_add(
        ni: *mut RawInode,
        ty: u32,
        name: *mut u16,
        len: u8,
        val: *const u8,
        size: i64,
    ) -> c_int;
    fn ntfs_attr_exist(ni: *mut RawInode, ty: u32, name: *const u16, len: u32) -> c_int;
    fn ntfs_inherited_id(scx: *mut SecurityContext, dir_ni: *mut RawInode, fordir: c_int) -> u32;
    fn ntfs_get_ntfs_acl(
        scx: *mut SecurityContext,
        ni: *mut RawInode,
        value: *mut c_char,
        size: usize,
    ) -> c_int;
    fn ntfs_set_ntfs_acl(
        scx: *mut SecurityContext,
        ni: *mut RawInode,
        value: *const c_char,
        size: usize,
        flags: c_int,
    ) -> c_int;
    fn ntfs_set_ntfs_attrib(
        ni: *mut RawInode,
        value: *const c_char,
        size: usize,
        flags: c_int,
    ) -> c_int;
    fn ntfs_inode_set_times(
        ni: *mut RawInode,
        value: *const c_char,
        size: usize,
        flags: c_int,
    ) -> c_int;
    fn ntfs_set_ntfs_dos_name(
        ni: *mut RawInode,
        dir_ni: *mut RawInode,
        value: *const c_char,
        size: usize,
        flags: c_int,
    ) -> c_int;
}

/// The errno left by the last failed call, as text.
fn last_error() -> String {
    std::io::Error::last_os_error().to_string()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn set_errno(e: c_int) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// What the device callbacks work on: the block device and a position for
/// the sequential calls.
struct Bridge<D> {
    dev: D,
    pos: i64,
    /// The first I/O error the block layer reported, with its message.
    error: Option<String>,
}

/// Gets the bridge behind a device.
///
/// # Safety
/// `dev` must be a device made by [`Volume::mount`] with bridge type `D`.
unsafe fn bridge<'a, D>(dev: *mut RawDevice) -> &'a mut Bridge<D> {
    // SAFETY: per the function contract, d_private is a live Box<Bridge<D>>.
    unsafe { &mut *((*dev).d_private as *mut Bridge<D>) }
}

unsafe extern "C" fn op_open(dev: *mut RawDevice, flags: c_int) -> c_int {
    // SAFETY: dev comes from libntfs-3g, which passes the device we made.
    unsafe {
        (*dev).d_state |= ND_OPEN;
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            (*dev).d_state |= ND_READONLY;
        }
    }
    0
}

unsafe extern "C" fn op_close(dev: *mut RawDevice) -> c_int {
    // SAFETY: as in op_open.
    unsafe { (*dev).d_state &= !ND_OPEN };
    0
}

unsafe extern "C" fn op_seek<D: BlockDevice>(dev: *mut RawDevice, off: i64, whence: c_int) -> i64 {
    // SAFETY: the device was made by Volume::mount::<D>.
    let b = unsafe { bridge::<D>(dev) };
    let base = match whence {
        libc::SEEK_SET => 0,
        libc::SEEK_CUR => b.pos,
        libc::SEEK_END => b.dev.len() as i64,
        _ => {
            set_errno(libc::EINVAL);
            return -1;
        }
    };
    match base.checked_add(off) {
        Some(p) if p >= 0 => {
            b.pos = p;
            p
        }
        _ => {
            set_errno(libc::EINVAL);
            -1
        }
    }
}

/// Reads at `off`, clipped to the device's end; -1 with EIO on error.
fn bridge_pread<D: BlockDevice>(b: &mut Bridge<D>, buf: &mut [u8], off: i64) -> i64 {
    let len = b.dev.len();
    if off < 0 {
        set_errno(libc::EINVAL);
        return -1;
    }
    let off = off as u64;
    if off >= len {
        return 0;
    }
    let n = (buf.len() as u64).min(len - off) as usize;
    let res = catch_unwind(AssertUnwindSafe(|| b.dev.read_at(off, &mut buf[..n])));
    io_result(b, res, n)
}

/// Writes at `off`; a write past the end is refused with ENOSPC.
fn bridge_pwrite<D: BlockDevice>(b: &mut Bridge<D>, buf: &[u8], off: i64) -> i64 {
    if off < 0 || (off as u64).saturating_add(buf.len() as u64) > b.dev.len() {
        set_errno(libc::ENOSPC);
        return -1;
    }
    let res = catch_unwind(AssertUnwindSafe(|| b.dev.write_at(off as u64, buf)));
    let n = buf.len();
    io_result(b, res, n)
}

/// The return value of a device call that moved `n` bytes: `n`, or -1 with
/// EIO after keeping the block layer's first error (or panic) for the
/// message.
fn io_result<D>(b: &mut Bridge<D>, res: std::thread::Result<crate::Result<()>>, n: usize) -> i64 {
    let failure = match res {
        Ok(Ok(())) => return n as i64,
        Ok(Err(e)) => e.to_string(),
        Err(_) => "the block layer panicked".to_string(),
    };
    b.error.get_or_insert(failure);
    set_errno(libc::EIO);
    -1
}

/// Makes a byte slice from a C buffer (empty for a zero or negative count).
///
/// # Safety
/// `buf` must be valid for `count` bytes when `count > 0`.
unsafe fn buf_mut<'a>(buf: *mut c_void, count: i64) -> &'a mut [u8] {
    if count <= 0 || buf.is_null() {
        return &mut [];
    }
    // SAFETY: per the function contract.
    unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, count as usize) }
}

/// # Safety
/// As [`buf_mut`].
unsafe fn buf_ref<'a>(buf: *const c_void, count: i64) -> &'a [u8] {
    if count <= 0 || buf.is_null() {
        return &[];
    }
    // SAFETY: per the function contract.
    unsafe { std::slice::from_raw_parts(buf as *const u8, count as usize) }
}

unsafe extern "C" fn op_read<D: BlockDevice>(
    dev: *mut RawDevice,
    buf: *mut c_void,
    count: i64,
) -> i64 {
    // SAFETY: device made by mount::<D>; libntfs-3g passes a buffer of count bytes.
    let (b, buf) = unsafe { (bridge::<D>(dev), buf_mut(buf, count)) };
    let pos = b.pos;
    let n = bridge_pread(b, buf, pos);
    if n > 0 {
        b.pos += n;
    }
    n
}

unsafe extern "C" fn op_write<D: BlockDevice>(
    dev: *mut RawDevice,
    buf: *const c_void,
    count: i64,
) -> i64 {
    // SAFETY: as in op_read.
    let (b, buf) = unsafe { (bridge::<D>(dev), buf_ref(buf, count)) };
    let pos = b.pos;
    let n = bridge_pwrite(b, buf, pos);
    if n > 0 {
        b.pos += n;
    }
    n
}

unsafe extern "C" fn op_pread<D: BlockDevice>(
    dev: *mut RawDevice,
    buf: *mut c_void,
    count: i64,
    off: i64,
) -> i64 {
    // SAFETY: as in op_read.
    let (b, buf) = unsafe { (bridge::<D>(dev), buf_mut(buf, count)) };
    bridge_pread(b, buf, off)
}

unsafe extern "C" fn op_pwrite<D: BlockDevice>(
    dev: *mut RawDevice,
    buf: *const c_void,
    count: i64,
    off: i64,
) -> i64 {
    // SAFETY: as in op_read.
    let (b, buf) = unsafe { (bridge::<D>(dev), buf_ref(buf, count)) };
    bridge_pwrite(b, buf, off)
}

unsafe extern "C" fn op_sync(_dev: *mut RawDevice) -> c_int {
    // Writes are made durable by the owner after the unmount.
    0
}

unsafe extern "C" fn op_stat<D: BlockDevice>(dev: *mut RawDevice, st: *mut libc::stat) -> c_int {
    // SAFETY: device made by mount::<D>; st points to a struct stat.
    unsafe {
        let b = bridge::<D>(dev);
        ptr::write_bytes(st, 0, 1);
        (*st).st_mode = libc::S_IFREG | 0o600;
        (*st).st_size = b.dev.len() as libc::off_t;
        (*st).st_blksize = 4096;
    }
    0
}

unsafe extern "C" fn op_ioctl(_dev: *mut RawDevice, _req: c_ulong, _arg: *mut c_void) -> c_int {
    set_errno(libc::ENOTTY);
    -1
}

/// An NTFS volume mounted with libntfs-3g over a block device.
pub(crate) struct Volume<D: BlockDevice + 'static> {
    vol: *mut RawVolume,
    bridge: *mut Bridge<D>,
    /// Kept alive for the device's `d_ops` pointer.
    _ops: Box<DeviceOps>,
    /// Permissions cache slot of the security context.
    seccache: Box<*mut c_void>,
}

// SAFETY: the volume is used from one thread at a time (the owner holds it
// behind &mut); libntfs-3g keeps no thread-local state for a volume.
unsafe impl<D: BlockDevice + 'static> Send for Volume<D> {}

/// A failed call: what was done and the errno text.
#[derive(Debug)]
pub(crate) struct Ntfs3gError {
    /// The errno value (0 when none).
    pub errno: i32,
    /// The message.
    pub message: String,
}

impl std::fmt::Display for Ntfs3gError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

type R<T> = std::result::Result<T, Ntfs3gError>;

fn fail(what: &str) -> Ntfs3gError {
    Ntfs3gError {
        errno: errno(),
        message: format!("{what}: {}", last_error()),
    }
}

/// An open inode; closed on drop.
pub(crate) struct Inode {
    ni: *mut RawInode,
}

impl Inode {
    /// The MFT record number.
    pub fn mft_no(&self) -> u64 {
        // SAFETY: ni is a live inode opened by libntfs-3g.
        unsafe { (*self.ni).mft_no }
    }

    /// Closes it, reporting an error that a drop would hide.
    pub fn close(mut self) -> R<()> {
        let ni = std::mem::replace(&mut self.ni, ptr::null_mut());
        // SAFETY: ni is live and closed once.
        if unsafe { ntfs_inode_close(ni) } != 0 {
            return Err(fail("close an inode"));
        }
        Ok(())
    }

    /// Gives up ownership (for calls that close the inode themselves).
    fn into_raw(mut self) -> *mut RawInode {
        std::mem::replace(&mut self.ni, ptr::null_mut())
    }
}

impl Drop for Inode {
    fn drop(&mut self) {
        if !self.ni.is_null() {
            // SAFETY: ni is live and closed once.
            unsafe { ntfs_inode_close(self.ni) };
        }
    }
}

/// One directory entry from [`Volume::read_dir`].
#[derive(Debug, Clone)]
pub(crate) struct RawEntry {
    /// The name (UTF-16).
    pub name: Vec<u16>,
    /// MFT reference (record number in the low 48 bits).
    pub mref: u64,
    /// Whether libntfs-3g reports a directory.
    pub is_dir: bool,
}

unsafe extern "C" fn collect_entry(
    ctx: *mut c_void,
    name: *const u16,
    len: c_int,
    name_type: c_int,
    _pos: i64,
    mref: u64,
    dt_type: u32,
) -> c_int {
    if name_type == FILE_NAME_DOS || len <= 0 || name.is_null() {
        return 0;
    }
    // SAFETY: ctx is the Vec passed by read_dir; name holds len units.
    unsafe {
        let out = &mut *(ctx as *mut Vec<RawEntry>);
        let name = std::slice::from_raw_parts(name, len as usize).to_vec();
        out.push(RawEntry {
            name,
            mref,
            is_dir: dt_type == 4,
        });
    }
    0
}

impl<D: BlockDevice + 'static> Volume<D> {
    /// Mounts the NTFS volume on `dev` read-write (or read-only), opens
    /// `$Secure` and makes name lookups case-insensitive as Windows does.
    /// On failure the device is given back with the error.
    pub fn mount(dev: D, read_only: bool) -> std::result::Result<Self, (Ntfs3gError, D)> {
        let mut ops = Box::new(DeviceOps {
            open: Some(op_open),
            close: Some(op_close),
            seek: Some(op_seek::<D>),
            read: Some(op_read::<D>),
            write: Some(op_write::<D>),
            pread: Some(op_pread::<D>),
            pwrite: Some(op_pwrite::<D>),
            sync: Some(op_sync),
            stat: Some(op_stat::<D>),
            ioctl: Some(op_ioctl),
        });
        let bridge = Box::into_raw(Box::new(Bridge {
            dev,
            pos: 0,
            error: None,
        }));
        let take_back = |bridge: *mut Bridge<D>| {
            // SAFETY: bridge came from Box::into_raw above and is freed once.
            unsafe { Box::from_raw(bridge) }.dev
        };
        let name = CString::new("reseal-volume").unwrap_or_default();
        // SAFETY: name, ops and bridge outlive the device (ops is moved into
        // the returned Volume; the bridge is freed after ntfs_umount).
        let rawdev =
            unsafe { ntfs_device_alloc(name.as_ptr(), 0, &mut *ops, bridge as *mut c_void) };
        if rawdev.is_null() {
            let e = fail("allocate the NTFS device");
            return Err((e, take_back(bridge)));
        }
        let flags = if read_only { MNT_RDONLY } else { 0 };
        // SAFETY: rawdev is a fresh device.
        let vol = unsafe { ntfs_device_mount(rawdev, flags) };
        if vol.is_null() {
            let mut e = fail("mount the NTFS volume");
            // SAFETY: the failed mount left the device to us.
            unsafe {
                (*rawdev).d_state &= !ND_OPEN;
                ntfs_device_free(rawdev);
            }
            // SAFETY: the device is freed; the bridge is ours again.
            if let Some(io) = unsafe { (*bridge).error.take() } {
                e.message = format!("{}: {io}", e.message);
            }
            return Err((e, take_back(bridge)));
        }
        let mut v = Volume {
            vol,
            bridge,
            _ops: ops,
            seccache: Box::new(ptr::null_mut()),
        };
        // SAFETY: vol is mounted.
        unsafe {
            if ntfs_open_secure(vol) != 0 {
                let e = fail("open $Secure");
                let dev = v.unmount_raw().1;
                return Err((e, dev));
            }
            ntfs_set_ignore_case(vol);
        }
        Ok(v)
    }

    /// Closes `$Secure` and unmounts; gives back the device and the result.
    fn unmount_raw(&mut self) -> (R<()>, D) {
        let mut res = Ok(());
        // SAFETY: vol is mounted; it is unmounted once, then the bridge
        // (no longer referenced by libntfs-3g) is freed once.
        unsafe {
            ntfs_close_secure(self.vol);
            if ntfs_umount(self.vol, 0) != 0 {
                res = Err(fail("unmount the NTFS volume"));
            }
            self.vol = ptr::null_mut();
            let b = Box::from_raw(self.bridge);
            self.bridge = ptr::null_mut();
            if let (Ok(()), Some(io)) = (&res, &b.error) {
                res = Err(Ntfs3gError {
                    errno: libc::EIO,
                    message: format!("I/O error under the NTFS volume: {io}"),
                });
            }
            (res, b.dev)
        }
    }

    /// Writes everything out and unmounts, giving the device back.
    pub fn unmount(mut self) -> (R<()>, D) {
        self.unmount_raw()
    }

    /// Reads bytes of the device under the volume (what libntfs-3g has
    /// written is visible).
    fn dev_read(&mut self, off: u64, buf: &mut [u8]) -> R<()> {
        // SAFETY: the bridge is live while mounted; libntfs-3g is not
        // running (we hold &mut self).
        let b = unsafe { &mut *self.bridge };
        b.dev.read_at(off, buf).map_err(|e| Ntfs3gError {
            errno: libc::EIO,
            message: e.to_string(),
        })
    }

    /// Cluster size and MFT record size from the boot sector, and the
    /// byte offset of the MFT.
    fn geometry(&mut self) -> R<(u64, u64, u64)> {
        let mut bs = [0u8; 512];
        self.dev_read(0, &mut bs)?;
        let bad = |what: &str| Ntfs3gError {
            errno: libc::EINVAL,
            message: format!("boot sector: {what}"),
        };
        let bps = u16::from_le_bytes([bs[0x0B], bs[0x0C]]) as u64;
        let spc = bs[0x0D];
        let spc = if spc > 0x80 {
            1u64 << (256 - spc as u32).min(31)
        } else {
            spc as u64
        };
        let cluster = bps * spc;
        if !(256..=(2 << 20)).contains(&cluster) {
            return Err(bad("cluster size out of range"));
        }
        let c = bs[0x40] as i8;
        let rec = if c < 0 {
            1u64 << (-(c as i32)).min(31)
        } else {
            c as u64 * cluster
        };
        if !(256..=65536).contains(&rec) {
            return Err(bad("MFT record size out of range"));
        }
        let lcn = u64::from_le_bytes(bs[0x30..0x38].try_into().unwrap_or_default());
        let at = lcn
            .checked_mul(cluster)
            .ok_or_else(|| bad("MFT location out of range"))?;
        Ok((cluster, rec, at))
    }

    /// The MFT record size in bytes.
    pub fn record_size(&mut self) -> R<u64> {
        Ok(self.geometry()?.1)
    }

    /// Length of the unnamed data of `$MFT`, from its first record (with
    /// the update sequence applied). `ni` must be inode 0.
    pub fn data_size(&mut self, ni: &Inode) -> R<u64> {
        let bad = |what: &str| Ntfs3gError {
            errno: libc::EINVAL,
            message: format!("$MFT record 0: {what}"),
        };
        if ni.mft_no() != 0 {
            return Err(bad("not the $MFT inode"));
        }
        let (_, rec, at) = self.geometry()?;
        let mut r = vec![0u8; rec as usize];
        self.dev_read(at, &mut r)?;
        if &r[..4] != b"FILE" {
            return Err(bad("no FILE signature"));
        }
        let u16at = |b: &[u8], o: usize| -> R<u16> {
            b.get(o..o + 2)
                .map(|x| u16::from_le_bytes([x[0], x[1]]))
                .ok_or_else(|| bad("field out of range"))
        };
        let usa_ofs = u16at(&r, 4)? as usize;
        let usa_cnt = u16at(&r, 6)? as usize;
        for i in 1..usa_cnt {
            let end = i * 512;
            if end > r.len() {
                return Err(bad("update sequence longer than the record"));
            }
            let fix = u16at(&r, usa_ofs + 2 * i)?;
            r[end - 2..end].copy_from_slice(&fix.to_le_bytes());
        }
        let mut off = u16at(&r, 0x14)? as usize;
        while off + 0x38 <= r.len() {
            let ty = u32::from_le_bytes(r[off..off + 4].try_into().unwrap_or_default());
            let len =
                u32::from_le_bytes(r[off + 4..off + 8].try_into().unwrap_or_default()) as usize;
            if ty == 0xFFFF_FFFF || len == 0 {
                break;
            }
            if ty == AT_DATA && r[off + 8] == 1 && r[off + 9] == 0 {
                return Ok(u64::from_le_bytes(
                    r[off + 0x30..off + 0x38].try_into().unwrap_or_default(),
                ));
            }
            off += len;
        }
        Err(bad("no non-resident unnamed $DATA attribute"))
    }

    /// The first I/O error the block layer reported, if any.
    pub fn io_error(&self) -> Option<String> {
        // SAFETY: the bridge is live while mounted.
        unsafe { (*self.bridge).error.clone() }
    }

    fn scx(&mut self) -> SecurityContext {
        SecurityContext {
            vol: self.vol,
            mapping: [ptr::null_mut(); 2],
            pseccache: &mut *self.seccache,
            uid: 0,
            gid: 0,
            tid: 0,
            umask: 0,
        }
    }

    /// Opens an inode by MFT reference.
    pub fn open(&mut self, mref: u64) -> R<Inode> {
        // SAFETY: vol is mounted.
        let ni = unsafe { ntfs_inode_open(self.vol, mref) };
        if ni.is_null() {
            return Err(fail(&format!(
                "open MFT record {}",
                mref & 0xFFFF_FFFF_FFFF
            )));
        }
        Ok(Inode { ni })
    }

    /// Looks `name` up in a directory (case-insensitively); `None` when absent.
    pub fn lookup(&mut self, dir: &Inode, name: &[u16]) -> R<Option<u64>> {
        // SAFETY: dir is live; name holds name.len() units.
        let r = unsafe { ntfs_inode_lookup_by_name(dir.ni, name.as_ptr(), name.len() as c_int) };
        if r == u64::MAX {
            if errno() == libc::ENOENT {
                return Ok(None);
            }
            return Err(fail("look a name up"));
        }
        Ok(Some(r))
    }

    /// Creates a file or directory in `dir` with the security descriptor
    /// inherited from `dir` (as Windows does for a new file).
    pub fn create(&mut self, dir: &Inode, name: &[u16], is_dir: bool) -> R<Inode> {
        let len = u8::try_from(name.len()).map_err(|_| Ntfs3gError {
            errno: libc::ENAMETOOLONG,
            message: "name longer than 255 UTF-16 units".into(),
        })?;
        let mut scx = self.scx();
        // SAFETY: dir is live; scx points to this volume.
        let securid = unsafe { ntfs_inherited_id(&mut scx, dir.ni, is_dir as c_int) };
        let mode = if is_dir { S_IFDIR } else { S_IFREG };
        // SAFETY: dir is live; name holds len units.
        let ni = unsafe { ntfs_create(dir.ni, securid, name.as_ptr(), len, mode) };
        if ni.is_null() {
            return Err(fail("create"));
        }
        Ok(Inode { ni })
    }

    /// Removes the name `name` of `ni` from `dir` (the inode goes when its
    /// last name does). Consumes both inodes, as libntfs-3g closes them.
    pub fn delete(&mut self, ni: Inode, dir: Inode, name: &[u16]) -> R<()> {
        let len = u8::try_from(name.len()).unwrap_or(u8::MAX);
        let path = CString::new("").unwrap_or_default();
        let (ni, dir) = (ni.into_raw(), dir.into_raw());
        // SAFETY: both inodes are live and handed over to libntfs-3g.
        if unsafe { ntfs_delete(self.vol, path.as_ptr(), ni, dir, name.as_ptr(), len) } != 0 {
            return Err(fail("delete"));
        }
        Ok(())
    }

    /// Adds the name `name` in `dir` for `ni`.
    pub fn link(&mut self, ni: &Inode, dir: &Inode, name: &[u16]) -> R<()> {
        let len = u8::try_from(name.len()).unwrap_or(u8::MAX);
        // SAFETY: both inodes are live; name holds len units.
        if unsafe { ntfs_link(ni.ni, dir.ni, name.as_ptr(), len) } != 0 {
            return Err(fail("link"));
        }
        Ok(())
    }

    /// Lists a directory (long names only; no "." or "..").
    pub fn read_dir(&mut self, dir: &Inode) -> R<Vec<RawEntry>> {
        let mut out: Vec<RawEntry> = Vec::new();
        let mut pos: i64 = 0;
        // SAFETY: dir is live; out outlives the call.
        let r = unsafe {
            ntfs_readdir(
                dir.ni,
                &mut pos,
                &mut out as *mut Vec<RawEntry> as *mut c_void,
                collect_entry,
            )
        };
        if r != 0 {
            return Err(fail("read a directory"));
        }
        out.retain(|e| e.name != [b'.' as u16] && e.name != [b'.' as u16, b'.' as u16]);
        Ok(out)
    }

    /// Replaces the unnamed data stream of `ni` with `data` (creating the
    /// stream when missing). Clusters already allocated are rewritten in
    /// place when the length does not change. With `touch`, updates the
    /// modification and change times, as Windows does on a write.
    pub fn write_data(&mut self, ni: &Inode, data: &[u8], touch: bool) -> R<()> {
        put_stream(ni, &mut [], data)?;
        if touch {
            // SAFETY: ni is live.
            unsafe { ntfs_inode_update_times(ni.ni, UPDATE_MCTIME) };
        }
        Ok(())
    }

    /// Reads the unnamed data stream of `ni`, sized from the attribute's
    /// data size; a stream longer than `limit` bytes (or with a negative
    /// size) is an error, and nothing larger than the stream is allocated.
    pub fn read_data(&mut self, ni: &Inode, limit: u64) -> R<Vec<u8>> {
        // SAFETY: ni is live; `out` is allocated below to the attribute's
        // size and each pread writes at most the bytes left in it.
        unsafe {
            let unnamed = ptr::addr_of_mut!(AT_UNNAMED) as *mut u16;
            let na = ntfs_attr_open(ni.ni, AT_DATA, unnamed, 0);
            if na.is_null() {
                return Err(fail("open the data stream"));
            }
            let size = ptr::addr_of!((*na).data_size).read();
            let Some(len) = u64::try_from(size)
                .ok()
                .filter(|&n| n <= limit)
                .and_then(|n| usize::try_from(n).ok())
            else {
                ntfs_attr_close(na);
                return Err(Ntfs3gError {
                    errno: libc::EFBIG,
                    message: format!(
                        "read the data: the data stream claims {size} bytes (limit {limit})"
                    ),
                });
            };
            let limit = len;
            let mut out = vec![0u8; limit];
            let mut done = 0usize;
            while done < limit {
                let n = ntfs_attr_pread(
                    na,
                    done as i64,
                    (limit - done) as i64,
                    out[done..].as_mut_ptr() as *mut c_void,
                );
                if n < 0 {
                    ntfs_attr_close(na);
                    return Err(fail("read the data"));
                }
                if n == 0 {
                    break;
                }
                done += n as usize;
            }
            ntfs_attr_close(na);
            out.truncate(done);
            Ok(out)
        }
    }

    /// The security descriptor of `ni` (self-relative).
    pub fn get_security(&mut self, ni: &Inode) -> R<Vec<u8>> {
        let mut scx = self.scx();
        let mut buf = vec![0u8; 512];
        loop {
            // SAFETY: ni is live; buf holds buf.len() bytes.
            let n = unsafe {
                ntfs_get_ntfs_acl(&mut scx, ni.ni, buf.as_mut_ptr() as *mut c_char, buf.len())
            };
            if n < 0 {
                return Err(fail("read the security descriptor"));
            }
            let n = n as usize;
            if n <= buf.len() {
                buf.truncate(n);
                return Ok(buf);
            }
            buf = vec![0u8; n];
        }
    }

    /// Sets the security descriptor of `ni` (stored once in `$Secure`,
    /// shared with every file that has the same one).
    pub fn set_security(&mut self, ni: &Inode, sd: &[u8]) -> R<()> {
        let mut scx = self.scx();
        // SAFETY: ni is live; sd holds sd.len() bytes.
        if unsafe { ntfs_set_ntfs_acl(&mut scx, ni.ni, sd.as_ptr() as *const c_char, sd.len(), 0) }
            != 0
        {
            return Err(fail("set the security descriptor"));
        }
        Ok(())
    }

    /// Sets the DOS attributes of `ni` (`FILE_ATTRIBUTE_*`).
    pub fn set_attributes(&mut self, ni: &Inode, attributes: u32) -> R<()> {
        let v = attributes.to_le_bytes();
        // SAFETY: ni is live; v holds 4 bytes.
        if unsafe { ntfs_set_ntfs_attrib(ni.ni, v.as_ptr() as *const c_char, 4, 0) } != 0 {
            return Err(fail("set the attributes"));
        }
        Ok(())
    }

    /// Sets creation, modification, access times (NT time, 100 ns since
    /// 1601) of `ni`.
    pub fn set_times(&mut self, ni: &Inode, creation: u64, write: u64, access: u64) -> R<()> {
        let mut v = [0u8; 24];
        v[..8].copy_from_slice(&creation.to_le_bytes());
        v[8..16].copy_from_slice(&write.to_le_bytes());
        v[16..].copy_from_slice(&access.to_le_bytes());
        // SAFETY: ni is live; v holds 24 bytes.
        if unsafe { ntfs_inode_set_times(ni.ni, v.as_ptr() as *const c_char, v.len(), 0) } != 0 {
            return Err(fail("set the times"));
        }
        Ok(())
    }

    /// Gives `ni` (named in `dir`) the short name `short` (UTF-8, as
    /// libntfs-3g takes it). libntfs-3g closes both inodes.
    pub fn set_short_name(&mut self, ni: Inode, dir: Inode, short: &str) -> R<()> {
        let (ni, dir) = (ni.into_raw(), dir.into_raw());
        // SAFETY: both inodes are live and handed over.
        if unsafe {
            ntfs_set_ntfs_dos_name(ni, dir, short.as_ptr() as *const c_char, short.len(), 0)
        } != 0
        {
            return Err(fail("set the short name"));
        }
        Ok(())
    }

    /// Adds (or replaces) the named data stream `name` of `ni`.
    pub fn write_stream(&mut self, ni: &Inode, name: &[u16], data: &[u8]) -> R<()> {
        put_stream(ni, &mut name.to_vec(), data)
    }
}

/// Sets the `$DATA` attribute named `name` (empty: the unnamed one) of `ni`
/// to `data`, adding the attribute when missing.
fn put_stream(ni: &Inode, name: &mut [u16], data: &[u8]) -> R<()> {
    let len = u8::try_from(name.len()).map_err(|_| Ntfs3gError {
        errno: libc::ENAMETOOLONG,
        message: "stream name longer than 255 UTF-16 units".into(),
    })?;
    // SAFETY: ni is live; `name` holds `len` units (for the unnamed stream,
    // libntfs-3g's own AT_UNNAMED); `data` holds data.len() bytes.
    unsafe {
        let name_ptr = if name.is_empty() {
            ptr::addr_of_mut!(AT_UNNAMED) as *mut u16
        } else {
            name.as_mut_ptr()
        };
        if ntfs_attr_exist(ni.ni, AT_DATA, name_ptr, len as u32) == 0
            && ntfs_attr_add(ni.ni, AT_DATA, name_ptr, len, ptr::null(), 0) != 0
        {
            return Err(fail("add a data stream"));
        }
        let na = ntfs_attr_open(ni.ni, AT_DATA, name_ptr, len as u32);
        if na.is_null() {
            return Err(fail("open a data stream"));
        }
        let res = (|| {
            if ntfs_attr_truncate(na, data.len() as i64) != 0 {
                return Err(fail("set a data stream's length"));
            }
            let mut done = 0usize;
            while done < data.len() {
                let n = ntfs_attr_pwrite(
                    na,
                    done as i64,
                    (data.len() - done) as i64,
                    data[done..].as_ptr() as *const c_void,
                );
                if n <= 0 {
                    return Err(fail("write a data stream"));
                }
                done += n as usize;
            }
            Ok(())
        })();
        ntfs_attr_close(na);
        res
    }
}

impl<D: BlockDevice + 'static> Drop for Volume<D> {
    fn drop(&mut self) {
        if !self.vol.is_null() {
            let _ = self.unmount_raw();
        }
    }
}
