//! Minimal hand-written bindings to the parts of the wimlib C API (1.13,
//! `/usr/include/wimlib.h`) that the WIM backend uses, with a safe wrapper.
//!
//! All unsafe code of the crate lives here. On non-Windows systems
//! `wimlib_tchar` is `char` (UTF-8) and the path separator inside an image
//! is `/`.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Mutex;

use crate::progress::{Phase, Progress, ProgressEvent};

/// Opaque `WIMStruct`.
#[repr(C)]
pub struct WimStruct {
    _private: [u8; 0],
}

/// `struct timespec` (the non-Windows `wimlib_timespec`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Timespec {
    pub tv_sec: i64,
    pub tv_nsec: i64,
}

/// `struct wimlib_resource_entry`.
#[repr(C)]
pub struct ResourceEntry {
    pub uncompressed_size: u64,
    pub compressed_size: u64,
    pub offset: u64,
    pub sha1_hash: [u8; 20],
    pub part_number: u32,
    pub reference_count: u32,
    /// Bit fields: is_compressed, is_metadata, is_free, is_spanned,
    /// is_missing, packed.
    pub flags: u32,
    pub raw_resource_offset_in_wim: u64,
    pub raw_resource_compressed_size: u64,
    pub raw_resource_uncompressed_size: u64,
    pub reserved: [u64; 1],
}

/// `struct wimlib_stream_entry`.
#[repr(C)]
pub struct StreamEntry {
    pub stream_name: *const c_char,
    pub resource: ResourceEntry,
    pub reserved: [u64; 4],
}

/// `struct wimlib_dir_entry` (followed in memory by `num_named_streams + 1`
/// stream entries).
#[repr(C)]
pub struct DirEntryRaw {
    pub filename: *const c_char,
    pub dos_name: *const c_char,
    pub full_path: *const c_char,
    pub depth: usize,
    pub security_descriptor: *const c_char,
    pub security_descriptor_size: usize,
    pub attributes: u32,
    pub reparse_tag: u32,
    pub num_links: u32,
    pub num_named_streams: u32,
    pub hard_link_group_id: u64,
    pub creation_time: Timespec,
    pub last_write_time: Timespec,
    pub last_access_time: Timespec,
    pub unix_uid: u32,
    pub unix_gid: u32,
    pub unix_mode: u32,
    pub unix_rdev: u32,
    pub object_id: [u8; 64],
    pub creation_time_high: i32,
    pub last_write_time_high: i32,
    pub last_access_time_high: i32,
    pub reserved2: i32,
    pub reserved: [u64; 4],
    pub streams: [StreamEntry; 0],
}

/// `struct wimlib_wim_info`.
#[repr(C)]
pub struct WimInfoRaw {
    pub guid: [u8; 16],
    pub image_count: u32,
    pub boot_index: u32,
    pub wim_version: u32,
    pub chunk_size: u32,
    pub part_number: u16,
    pub total_parts: u16,
    pub compression_type: i32,
    pub total_bytes: u64,
    /// Bit fields; bit 0 is `has_integrity_table`.
    pub flags: u32,
    pub reserved: [u32; 9],
}

/// `struct wimlib_add_command`.
#[repr(C)]
#[derive(Clone, Copy)]
struct AddCommand {
    fs_source_path: *mut c_char,
    wim_target_path: *mut c_char,
    config_file: *mut c_char,
    add_flags: c_int,
}

/// `struct wimlib_delete_command`.
#[repr(C)]
#[derive(Clone, Copy)]
struct DeleteCommand {
    wim_path: *mut c_char,
    delete_flags: c_int,
}

/// `struct wimlib_rename_command`.
#[repr(C)]
#[derive(Clone, Copy)]
struct RenameCommand {
    wim_source_path: *mut c_char,
    wim_target_path: *mut c_char,
    rename_flags: c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
union UpdateUnion {
    add: AddCommand,
    delete: DeleteCommand,
    rename: RenameCommand,
}

/// `struct wimlib_update_command`.
#[repr(C)]
struct UpdateCommandRaw {
    op: c_int,
    u: UpdateUnion,
}

/// `struct wimlib_progress_info_write_streams` (member `write_streams` of
/// `union wimlib_progress_info`), every field in header order.
#[repr(C)]
#[derive(Clone, Copy)]
struct ProgressWriteStreams {
    total_bytes: u64,
    total_streams: u64,
    completed_bytes: u64,
    completed_streams: u64,
    num_threads: u32,
    compression_type: i32,
    total_parts: u32,
    completed_parts: u32,
    completed_compressed_bytes: u64,
}

/// `struct wimlib_progress_info_update` (member `update`).
#[repr(C)]
#[derive(Clone, Copy)]
struct ProgressUpdate {
    command: *const UpdateCommandRaw,
    completed_commands: usize,
    total_commands: usize,
}

/// `struct wimlib_progress_info_integrity` (member `integrity`).
#[repr(C)]
#[derive(Clone, Copy)]
struct ProgressIntegrity {
    total_bytes: u64,
    completed_bytes: u64,
    total_chunks: u32,
    completed_chunks: u32,
    chunk_size: u32,
    filename: *const c_char,
}

/// The members of `union wimlib_progress_info` that are read. Every member
/// of a C union starts at offset 0, so each member here overlays the
/// header's member of the same name. The C union has more and larger
/// members (`extract` is the largest): a value of this type is never
/// created, copied or sized on the Rust side, only read field by field
/// through the pointer wimlib passes to the progress function, and only
/// for the message that makes that member valid.
#[repr(C)]
union ProgressInfo {
    write_streams: ProgressWriteStreams,
    update: ProgressUpdate,
    integrity: ProgressIntegrity,
}

/// Compile-time checks of every hand-declared wimlib structure against the
/// sizes and offsets of Debian's libwim-dev 1.13 `wimlib.h` on LP64 (read
/// with `sizeof`/`offsetof` from a C probe compiled against the header).
/// A mismatch fails the build instead of misreading memory.
#[cfg(target_pointer_width = "64")]
mod layout_checks {
    use super::*;
    use std::mem::{offset_of, size_of};

    const _: () = assert!(size_of::<Timespec>() == 16);
    const _: () = assert!(offset_of!(Timespec, tv_nsec) == 8);

    const _: () = assert!(size_of::<ResourceEntry>() == 88);
    const _: () = assert!(offset_of!(ResourceEntry, uncompressed_size) == 0);
    const _: () = assert!(offset_of!(ResourceEntry, compressed_size) == 8);
    const _: () = assert!(offset_of!(ResourceEntry, offset) == 16);
    const _: () = assert!(offset_of!(ResourceEntry, sha1_hash) == 24);
    const _: () = assert!(offset_of!(ResourceEntry, part_number) == 44);
    const _: () = assert!(offset_of!(ResourceEntry, reference_count) == 48);
    const _: () = assert!(offset_of!(ResourceEntry, flags) == 52);
    const _: () = assert!(offset_of!(ResourceEntry, raw_resource_offset_in_wim) == 56);
    const _: () = assert!(offset_of!(ResourceEntry, raw_resource_compressed_size) == 64);
    const _: () = assert!(offset_of!(ResourceEntry, raw_resource_uncompressed_size) == 72);
    const _: () = assert!(offset_of!(ResourceEntry, reserved) == 80);

    const _: () = assert!(size_of::<StreamEntry>() == 128);
    const _: () = assert!(offset_of!(StreamEntry, stream_name) == 0);
    const _: () = assert!(offset_of!(StreamEntry, resource) == 8);
    const _: () = assert!(offset_of!(StreamEntry, reserved) == 96);

    const _: () = assert!(size_of::<DirEntryRaw>() == 248);
    const _: () = assert!(offset_of!(DirEntryRaw, filename) == 0);
    const _: () = assert!(offset_of!(DirEntryRaw, dos_name) == 8);
    const _: () = assert!(offset_of!(DirEntryRaw, full_path) == 16);
    const _: () = assert!(offset_of!(DirEntryRaw, depth) == 24);
    const _: () = assert!(offset_of!(DirEntryRaw, security_descriptor) == 32);
    const _: () = assert!(offset_of!(DirEntryRaw, security_descriptor_size) == 40);
    const _: () = assert!(offset_of!(DirEntryRaw, attributes) == 48);
    const _: () = assert!(offset_of!(DirEntryRaw, reparse_tag) == 52);
    const _: () = assert!(offset_of!(DirEntryRaw, num_links) == 56);
    const _: () = assert!(offset_of!(DirEntryRaw, num_named_streams) == 60);
    const _: () = assert!(offset_of!(DirEntryRaw, hard_link_group_id) == 64);
    const _: () = assert!(offset_of!(DirEntryRaw, creation_time) == 72);
    const _: () = assert!(offset_of!(DirEntryRaw, last_write_time) == 88);
    const _: () = assert!(offset_of!(DirEntryRaw, last_access_time) == 104);
    const _: () = assert!(offset_of!(DirEntryRaw, unix_uid) == 120);
    const _: () = assert!(offset_of!(DirEntryRaw, unix_gid) == 124);
    const _: () = assert!(offset_of!(DirEntryRaw, unix_mode) == 128);
    const _: () = assert!(offset_of!(DirEntryRaw, unix_rdev) == 132);
    const _: () = assert!(offset_of!(DirEntryRaw, object_id) == 136);
    const _: () = assert!(offset_of!(DirEntryRaw, creation_time_high) == 200);
    const _: () = assert!(offset_of!(DirEntryRaw, last_write_time_high) == 204);
    const _: () = assert!(offset_of!(DirEntryRaw, last_access_time_high) == 208);
    const _: () = assert!(offset_of!(DirEntryRaw, reserved2) == 212);
    const _: () = assert!(offset_of!(DirEntryRaw, reserved) == 216);
    const _: () = assert!(offset_of!(DirEntryRaw, streams) == 248);

    const _: () = assert!(size_of::<WimInfoRaw>() == 88);
    const _: () = assert!(offset_of!(WimInfoRaw, guid) == 0);
    const _: () = assert!(offset_of!(WimInfoRaw, image_count) == 16);
    const _: () = assert!(offset_of!(WimInfoRaw, boot_index) == 20);
    const _: () = assert!(offset_of!(WimInfoRaw, wim_version) == 24);
    const _: () = assert!(offset_of!(WimInfoRaw, chunk_size) == 28);
    const _: () = assert!(offset_of!(WimInfoRaw, part_number) == 32);
    const _: () = assert!(offset_of!(WimInfoRaw, total_parts) == 34);
    const _: () = assert!(offset_of!(WimInfoRaw, compression_type) == 36);
    const _: () = assert!(offset_of!(WimInfoRaw, total_bytes) == 40);
    const _: () = assert!(offset_of!(WimInfoRaw, flags) == 48);
    const _: () = assert!(offset_of!(WimInfoRaw, reserved) == 52);

    const _: () = assert!(size_of::<AddCommand>() == 32);
    const _: () = assert!(offset_of!(AddCommand, fs_source_path) == 0);
    const _: () = assert!(offset_of!(AddCommand, wim_target_path) == 8);
    const _: () = assert!(offset_of!(AddCommand, config_file) == 16);
    const _: () = assert!(offset_of!(AddCommand, add_flags) == 24);
    const _: () = assert!(size_of::<DeleteCommand>() == 16);
    const _: () = assert!(offset_of!(DeleteCommand, wim_path) == 0);
    const _: () = assert!(offset_of!(DeleteCommand, delete_flags) == 8);
    const _: () = assert!(size_of::<RenameCommand>() == 24);
    const _: () = assert!(offset_of!(RenameCommand, wim_source_path) == 0);
    const _: () = assert!(offset_of!(RenameCommand, wim_target_path) == 8);
    const _: () = assert!(offset_of!(RenameCommand, rename_flags) == 16);
    const _: () = assert!(size_of::<UpdateCommandRaw>() == 40);
    const _: () = assert!(offset_of!(UpdateCommandRaw, op) == 0);
    const _: () = assert!(offset_of!(UpdateCommandRaw, u) == 8);

    const _: () = assert!(size_of::<ProgressWriteStreams>() == 56);
    const _: () = assert!(offset_of!(ProgressWriteStreams, completed_bytes) == 16);
    const _: () = assert!(offset_of!(ProgressWriteStreams, completed_compressed_bytes) == 48);
    const _: () = assert!(size_of::<ProgressUpdate>() == 24);
    const _: () = assert!(offset_of!(ProgressUpdate, completed_commands) == 8);
    const _: () = assert!(offset_of!(ProgressUpdate, total_commands) == 16);
    const _: () = assert!(size_of::<ProgressIntegrity>() == 40);
    const _: () = assert!(offset_of!(ProgressIntegrity, filename) == 32);
    // The C union is 112 bytes; the members declared here fit inside it.
    const _: () = assert!(size_of::<ProgressInfo>() <= 112);
}

/// The size of the first stream entry of the dentry at `d`, read through
/// raw pointers: the stream array trails the fixed part of the structure,
/// so it is reached from the pointer wimlib passed (whose provenance covers
/// the whole allocation), never through a reference to the fixed part.
///
/// # Safety
/// `d` must be a dentry wimlib passed to an iteration callback, valid for
/// the call.
unsafe fn first_stream_size(d: *const DirEntryRaw) -> u64 {
    // SAFETY: per the contract, `d` is valid; `addr_of!` takes the field's
    // address without creating a reference. wimlib.h: "The first entry will
    // always exist", directly after the fixed part (offset 248, checked
    // above).
    unsafe {
        let streams = std::ptr::addr_of!((*d).streams) as *const StreamEntry;
        std::ptr::addr_of!((*streams).resource.uncompressed_size).read()
    }
}

/// `wimlib_progress_func_t`: `enum wimlib_progress_status (*)(enum
/// wimlib_progress_msg, union wimlib_progress_info *, void *)`; both enums
/// are `int`-sized (all their values fit in an `int`).
type ProgressFunc = extern "C" fn(c_int, *mut ProgressInfo, *mut c_void) -> c_int;

type IterateCallback = extern "C" fn(*const DirEntryRaw, *mut c_void) -> c_int;

pub const NO_IMAGE: c_int = 0;
pub const ALL_IMAGES: c_int = -1;
pub const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;
pub const ITERATE_DIR_TREE_FLAG_RECURSIVE: c_int = 0x1;
pub const EXTRACT_FLAG_NO_ACLS: c_int = 0x40;
pub const EXTRACT_FLAG_NORPFIX: c_int = 0x200;
pub const EXTRACT_FLAG_NO_ATTRIBUTES: c_int = 0x0010_0000;
pub const EXTRACT_FLAG_NO_PRESERVE_DIR_STRUCTURE: c_int = 0x0020_0000;
pub const ADD_FLAG_NORPFIX: c_int = 0x200;
pub const DELETE_FLAG_FORCE: c_int = 0x1;
pub const DELETE_FLAG_RECURSIVE: c_int = 0x2;
pub const WRITE_FLAG_CHECK_INTEGRITY: c_int = 0x1;
pub const WRITE_FLAG_REBUILD: c_int = 0x40;
const UPDATE_OP_ADD: c_int = 0;
const UPDATE_OP_DELETE: c_int = 1;
const UPDATE_OP_RENAME: c_int = 2;
const UPDATE_FLAG_SEND_PROGRESS: c_int = 0x1;
// enum wimlib_progress_msg (the values read).
const PROGRESS_MSG_WRITE_STREAMS: c_int = 12;
const PROGRESS_MSG_WRITE_METADATA_BEGIN: c_int = 13;
const PROGRESS_MSG_WRITE_METADATA_END: c_int = 14;
const PROGRESS_MSG_VERIFY_INTEGRITY: c_int = 16;
const PROGRESS_MSG_CALC_INTEGRITY: c_int = 17;
const PROGRESS_MSG_UPDATE_BEGIN_COMMAND: c_int = 21;
const PROGRESS_MSG_UPDATE_END_COMMAND: c_int = 22;
// enum wimlib_progress_status.
const PROGRESS_STATUS_CONTINUE: c_int = 0;

// Linked by build.rs (libwim).
unsafe extern "C" {
    fn wimlib_open_wim(path: *const c_char, flags: c_int, wim_ret: *mut *mut WimStruct) -> c_int;
    fn wimlib_free(wim: *mut WimStruct);
    fn wimlib_get_wim_info(wim: *mut WimStruct, info: *mut WimInfoRaw) -> c_int;
    fn wimlib_resolve_image(wim: *mut WimStruct, name_or_num: *const c_char) -> c_int;
    fn wimlib_get_image_name(wim: *const WimStruct, image: c_int) -> *const c_char;
    fn wimlib_get_error_string(code: c_int) -> *const c_char;
    fn wimlib_iterate_dir_tree(
        wim: *mut WimStruct,
        image: c_int,
        path: *const c_char,
        flags: c_int,
        cb: IterateCallback,
        ctx: *mut c_void,
    ) -> c_int;
    fn wimlib_extract_paths(
        wim: *mut WimStruct,
        image: c_int,
        target: *const c_char,
        paths: *const *const c_char,
        num_paths: usize,
        flags: c_int,
    ) -> c_int;
    fn wimlib_update_image(
        wim: *mut WimStruct,
        image: c_int,
        cmds: *const UpdateCommandRaw,
        num_cmds: usize,
        flags: c_int,
    ) -> c_int;
    fn wimlib_overwrite(wim: *mut WimStruct, flags: c_int, threads: c_uint) -> c_int;
    fn wimlib_create_new_wim(ctype: c_int, wim_ret: *mut *mut WimStruct) -> c_int;
    fn wimlib_global_init(init_flags: c_int) -> c_int;
    fn wimlib_export_image(
        src_wim: *mut WimStruct,
        src_image: c_int,
        dest_wim: *mut WimStruct,
        dest_name: *const c_char,
        dest_description: *const c_char,
        export_flags: c_int,
    ) -> c_int;
    fn wimlib_verify_wim(wim: *mut WimStruct, verify_flags: c_int) -> c_int;
    fn wimlib_write(
        wim: *mut WimStruct,
        path: *const c_char,
        image: c_int,
        flags: c_int,
        threads: c_uint,
    ) -> c_int;
    fn wimlib_register_progress_function(
        wim: *mut WimStruct,
        progfunc: Option<ProgressFunc>,
        progctx: *mut c_void,
    );
}

/// A wimlib failure: the call, its code and wimlib's message.
#[derive(Debug, Clone)]
pub struct WimError {
    /// The wimlib function that failed.
    pub call: &'static str,
    /// The `wimlib_error_code`.
    pub code: i32,
    /// wimlib's description of the code.
    pub message: String,
}

impl std::fmt::Display for WimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} (wimlib error {})",
            self.call, self.message, self.code
        )
    }
}

fn check(call: &'static str, code: c_int) -> Result<(), WimError> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: wimlib_get_error_string accepts any code and returns either
    // NULL or a pointer to a static NUL-terminated string.
    let p = unsafe { wimlib_get_error_string(code) };
    let message = if p.is_null() {
        "unknown error".to_string()
    } else {
        // SAFETY: non-NULL, static and NUL-terminated (see above).
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    };
    Err(WimError {
        call,
        code,
        message,
    })
}

fn cstring(call: &'static str, bytes: &[u8]) -> Result<CString, WimError> {
    CString::new(bytes).map_err(|_| WimError {
        call,
        code: 24,
        message: "path contains a NUL byte".into(),
    })
}

fn cpath(call: &'static str, p: &Path) -> Result<CString, WimError> {
    cstring(call, p.as_os_str().as_bytes())
}

/// What the backend needs from `wimlib_get_wim_info`.
#[derive(Debug, Clone, Copy)]
pub struct WimInfo {
    /// Number of images.
    pub image_count: u32,
    /// Number of parts (split WIMs have more than one).
    pub total_parts: u16,
    /// Whether the WIM has an integrity table.
    pub has_integrity_table: bool,
    /// wimlib's compression type code (0 none, 1 XPRESS, 2 LZX, 3 LZMS).
    pub compression_type: i32,
}

/// One entry of an image's tree.
#[derive(Debug, Clone)]
pub struct TreeEntry {
    /// Full path in the image with `/` separators (`/` is the root).
    pub full_path: String,
    /// FILE_ATTRIBUTE_* bits.
    pub attributes: u32,
    /// Size of the unnamed data stream.
    pub size: u64,
    /// Depth below the iteration's starting path.
    pub depth: usize,
    /// Whether the entry has a security descriptor.
    pub has_security: bool,
}

/// The metadata of one entry ([`Wim::entry_metadata`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryMetadata {
    /// Self-relative security descriptor, if the entry has one.
    pub security: Option<Vec<u8>>,
    /// FILE_ATTRIBUTE_* bits.
    pub attributes: u32,
    /// Creation, last write and last access times (NT time: 100 ns since
    /// 1601).
    pub times: (u64, u64, u64),
    /// The 8.3 short name, if any.
    pub short_name: Option<String>,
    /// Number of named data streams.
    pub named_streams: u32,
    /// Reparse tag (0 when not a reparse point).
    pub reparse_tag: u32,
}

/// A `struct timespec` from wimlib as NT time.
fn nt_time(t: &Timespec) -> u64 {
    const UNIX_EPOCH_AS_NT_SECONDS: i64 = 11_644_473_600;
    let secs = t.tv_sec.saturating_add(UNIX_EPOCH_AS_NT_SECONDS).max(0) as u64;
    secs.saturating_mul(10_000_000)
        .saturating_add((t.tv_nsec.max(0) as u64) / 100)
}

/// One update command, in Rust form.
#[derive(Debug, Clone)]
pub enum UpdateCmd {
    /// Add (or replace with) a host file or directory tree.
    Add {
        /// Host path.
        source: std::path::PathBuf,
        /// Path in the image (`/` separators).
        target: String,
        /// WIMLIB_ADD_FLAG_*.
        flags: i32,
    },
    /// Delete a path in the image.
    Delete {
        /// Path in the image.
        path: String,
        /// WIMLIB_DELETE_FLAG_*.
        flags: i32,
    },
    /// Rename a path in the image.
    Rename {
        /// Source path.
        from: String,
        /// Destination path.
        to: String,
    },
}

/// One progress message, decoded from wimlib's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RawProgress {
    /// A counter of a phase (the phase begins if it is not current).
    Count {
        phase: Phase,
        done: u64,
        total: u64,
        /// Counted in steps rather than bytes.
        steps: bool,
    },
    /// A phase with no counter begins.
    Begin(Phase),
    /// A phase ends.
    End(Phase),
}

/// Decodes a message; `None` for the messages not reported (and for a NULL
/// `info` where one is needed).
///
/// # Safety
///
/// `info` is NULL or points to a `union wimlib_progress_info` whose member
/// for `msg` is valid, as wimlib guarantees during a progress call.
unsafe fn decode_progress(msg: c_int, info: *const ProgressInfo) -> Option<RawProgress> {
    let count = |phase, done: u64, total: u64, steps| {
        Some(RawProgress::Count {
            phase,
            done,
            total,
            steps,
        })
    };
    match msg {
        PROGRESS_MSG_WRITE_METADATA_BEGIN => Some(RawProgress::Begin(Phase::WriteMetadata)),
        PROGRESS_MSG_WRITE_METADATA_END => Some(RawProgress::End(Phase::WriteMetadata)),
        _ if info.is_null() => None,
        PROGRESS_MSG_WRITE_STREAMS => {
            // SAFETY: `write_streams` is the valid member for this message;
            // the fields are read by value, no reference to the union made.
            let (done, total) = unsafe {
                (
                    (*info).write_streams.completed_bytes,
                    (*info).write_streams.total_bytes,
                )
            };
            count(Phase::WriteData, done, total, false)
        }
        PROGRESS_MSG_UPDATE_BEGIN_COMMAND | PROGRESS_MSG_UPDATE_END_COMMAND => {
            // SAFETY: `update` is the valid member for these messages.
            let (done, total) = unsafe {
                (
                    (*info).update.completed_commands,
                    (*info).update.total_commands,
                )
            };
            count(Phase::UpdateImage, done as u64, total as u64, true)
        }
        PROGRESS_MSG_CALC_INTEGRITY | PROGRESS_MSG_VERIFY_INTEGRITY => {
            // SAFETY: `integrity` is the valid member for these messages.
            let (done, total) = unsafe {
                (
                    (*info).integrity.completed_bytes,
                    (*info).integrity.total_bytes,
                )
            };
            let phase = if msg == PROGRESS_MSG_CALC_INTEGRITY {
                Phase::CalcIntegrity
            } else {
                Phase::VerifyIntegrity
            };
            count(phase, done, total, false)
        }
        _ => None,
    }
}

/// What the progress function needs: the sink and the current phase. It
/// lives in a `Box` owned by the [`Wim`], whose address wimlib keeps as the
/// progress context while it is registered.
struct ProgressCtx {
    sink: Progress,
    state: Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    phase: Option<Phase>,
    /// The last counter reported in the current phase (wimlib repeats a
    /// count: the end of update command k and the beginning of k + 1).
    last: Option<(u64, u64)>,
    /// The sink panicked; it is not called again.
    broken: bool,
}

impl ProgressCtx {
    fn new(sink: Progress) -> ProgressCtx {
        ProgressCtx {
            sink,
            state: Mutex::new(ProgressState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, st: &mut ProgressState, event: ProgressEvent) {
        if st.broken {
            return;
        }
        if catch_unwind(AssertUnwindSafe(|| self.sink.emit(event))).is_err() {
            st.broken = true;
        }
    }

    fn enter(&self, st: &mut ProgressState, phase: Phase) {
        if st.phase == Some(phase) {
            return;
        }
        self.leave(st);
        st.phase = Some(phase);
        st.last = None;
        self.emit(st, ProgressEvent::Begin { phase });
    }

    fn leave(&self, st: &mut ProgressState) {
        if let Some(phase) = st.phase.take() {
            self.emit(st, ProgressEvent::End { phase });
        }
    }

    fn handle(&self, raw: RawProgress) {
        let mut st = self.lock();
        match raw {
            RawProgress::Count {
                phase,
                done,
                total,
                steps,
            } => {
                self.enter(&mut st, phase);
                if st.last == Some((done, total)) {
                    return;
                }
                st.last = Some((done, total));
                let event = if steps {
                    ProgressEvent::Steps { done, total }
                } else {
                    ProgressEvent::Bytes { done, total }
                };
                self.emit(&mut st, event);
            }
            RawProgress::Begin(phase) => self.enter(&mut st, phase),
            RawProgress::End(phase) => {
                if st.phase == Some(phase) {
                    self.leave(&mut st);
                }
            }
        }
    }

    /// Ends the current phase, if any (after each wimlib call that reports
    /// progress, so that every phase ends even when the call fails).
    fn finish(&self) {
        let mut st = self.lock();
        self.leave(&mut st);
    }
}

/// The progress function registered with wimlib. It never unwinds into C
/// and always asks wimlib to continue.
extern "C" fn progress_callback(msg: c_int, info: *mut ProgressInfo, ctx: *mut c_void) -> c_int {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if ctx.is_null() {
            return;
        }
        // SAFETY: `ctx` is the address of the boxed ProgressCtx that
        // `Wim::set_progress` registered; the box outlives the registration
        // (it is replaced only after a new registration, and dropped after
        // the WIMStruct is freed). ProgressCtx is Sync.
        let ctx = unsafe { &*(ctx as *const ProgressCtx) };
        // SAFETY: wimlib passes NULL or a union whose member for `msg` is
        // valid for the duration of the call.
        if let Some(raw) = unsafe { decode_progress(msg, info) } {
            ctx.handle(raw);
        }
    }));
    PROGRESS_STATUS_CONTINUE
}

/// An open WIM file. Not shared between threads at the same time (the
/// backend keeps it behind a mutex); wimlib allows a `WIMStruct` to be used
/// from any one thread at a time.
pub struct Wim {
    ptr: *mut WimStruct,
    /// The registered progress context (declared after `ptr`: dropped after
    /// `Drop::drop` has freed the WIMStruct).
    progress: Option<Box<ProgressCtx>>,
}

// SAFETY: a WIMStruct is not tied to the thread that opened it; wimlib only
// requires that one WIMStruct is not used by two threads at once, which the
// `&mut self`/`&self` methods together with the backend's mutex guarantee.
unsafe impl Send for Wim {}

impl Drop for Wim {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from a successful wimlib_open_wim and is freed
        // exactly once, here.
        unsafe { wimlib_free(self.ptr) };
    }
}

/// Initializes wimlib once per process, before its first use from any
/// thread (wimlib does it lazily too, but not in a thread-safe way).
fn global_init() -> Result<(), WimError> {
    static INIT: std::sync::OnceLock<c_int> = std::sync::OnceLock::new();
    // SAFETY: called exactly once (OnceLock), with no flags.
    let code = *INIT.get_or_init(|| unsafe { wimlib_global_init(0) });
    check("wimlib_global_init", code)
}

impl Wim {
    /// Opens a WIM file (read access; writing checks access at commit).
    pub fn open(path: &Path) -> Result<Wim, WimError> {
        global_init()?;
        let c = cpath("wimlib_open_wim", path)?;
        let mut ptr: *mut WimStruct = std::ptr::null_mut();
        // SAFETY: `c` is a valid NUL-terminated string and `ptr` a valid
        // out-pointer; on success wimlib stores an owned WIMStruct in it.
        let code = unsafe { wimlib_open_wim(c.as_ptr(), 0, &mut ptr) };
        check("wimlib_open_wim", code)?;
        Ok(Wim {
            ptr,
            progress: None,
        })
    }

    /// Reports the progress of later updates and writes to `sink` (`None`:
    /// stop reporting). Phases are reported as wimlib announces them, and
    /// each call that reports progress ends its last phase before it
    /// returns.
    pub fn set_progress(&mut self, sink: Option<Progress>) {
        let ctx = sink.map(|s| Box::new(ProgressCtx::new(s)));
        let (func, arg): (Option<ProgressFunc>, *mut c_void) = match &ctx {
            Some(c) => (
                Some(progress_callback),
                &**c as *const ProgressCtx as *mut c_void,
            ),
            None => (None, std::ptr::null_mut()),
        };
        // SAFETY: live WIMStruct; `arg` is NULL or the address of a boxed
        // ProgressCtx that is stored in `self` below and stays there until
        // it is replaced after another registration or `self` is dropped
        // (after wimlib_free). The callback matches wimlib_progress_func_t.
        unsafe { wimlib_register_progress_function(self.ptr, func, arg) };
        self.progress = ctx;
    }

    fn finish_progress(&self) {
        if let Some(c) = &self.progress {
            c.finish();
        }
    }

    /// Header facts.
    pub fn info(&self) -> Result<WimInfo, WimError> {
        // SAFETY: WimInfoRaw is plain old data; all-zero is a valid value.
        let mut raw: WimInfoRaw = unsafe { std::mem::zeroed() };
        // SAFETY: `ptr` is a live WIMStruct and `raw` a writable struct with
        // the layout of `struct wimlib_wim_info`.
        let code = unsafe { wimlib_get_wim_info(self.ptr, &mut raw) };
        check("wimlib_get_wim_info", code)?;
        Ok(WimInfo {
            image_count: raw.image_count,
            total_parts: raw.total_parts,
            has_integrity_table: raw.flags & 1 != 0,
            compression_type: raw.compression_type,
        })
    }

    /// Resolves an image number or name; `None` when there is no such image.
    pub fn resolve_image(&self, name_or_num: &str) -> Option<i32> {
        let c = CString::new(name_or_num).ok()?;
        // SAFETY: live WIMStruct, valid NUL-terminated string.
        let image = unsafe { wimlib_resolve_image(self.ptr, c.as_ptr()) };
        (image != NO_IMAGE && image != ALL_IMAGES).then_some(image)
    }

    /// The name of an image, if it has one.
    pub fn image_name(&self, image: i32) -> Option<String> {
        // SAFETY: live WIMStruct; the returned string (if any) is owned by
        // the WIMStruct and copied before any other call.
        let p = unsafe { wimlib_get_image_name(self.ptr, image) };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-NULL NUL-terminated string owned by the WIMStruct.
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        (!s.is_empty()).then_some(s)
    }

    /// Every entry of the tree at `path` (recursive, the start included).
    pub fn walk(&self, image: i32, path: &str) -> Result<Vec<TreeEntry>, WimError> {
        extern "C" fn collect(d: *const DirEntryRaw, ctx: *mut c_void) -> c_int {
            // SAFETY: wimlib passes a valid dentry for the duration of the
            // call, and `ctx` is the `&mut Vec<TreeEntry>` given below.
            let (dp, out) = (d, unsafe { &mut *(ctx as *mut Vec<TreeEntry>) });
            // SAFETY: as above; the reference covers only the fixed part.
            let d = unsafe { &*dp };
            let full_path = if d.full_path.is_null() {
                String::new()
            } else {
                // SAFETY: non-NULL NUL-terminated string valid during the call.
                unsafe { CStr::from_ptr(d.full_path) }
                    .to_string_lossy()
                    .into_owned()
            };
            // SAFETY: `dp` is the dentry wimlib passed to this callback.
            let size = unsafe { first_stream_size(dp) };
            out.push(TreeEntry {
                full_path,
                attributes: d.attributes,
                size,
                depth: d.depth,
                has_security: !d.security_descriptor.is_null() && d.security_descriptor_size > 0,
            });
            0
        }
        let c = cstring("wimlib_iterate_dir_tree", path.as_bytes())?;
        let mut out: Vec<TreeEntry> = Vec::new();
        // SAFETY: live WIMStruct, valid string, a callback matching
        // wimlib_iterate_dir_tree_callback_t, and a context pointer that
        // outlives the call.
        let code = unsafe {
            wimlib_iterate_dir_tree(
                self.ptr,
                image,
                c.as_ptr(),
                ITERATE_DIR_TREE_FLAG_RECURSIVE,
                collect,
                &mut out as *mut Vec<TreeEntry> as *mut c_void,
            )
        };
        check("wimlib_iterate_dir_tree", code)?;
        Ok(out)
    }

    /// The metadata of the entry at `path`.
    pub fn entry_metadata(&self, image: i32, path: &str) -> Result<EntryMetadata, WimError> {
        extern "C" fn take(d: *const DirEntryRaw, ctx: *mut c_void) -> c_int {
            // SAFETY: wimlib passes a valid dentry for the duration of the
            // call, and `ctx` is the `&mut Option<EntryMetadata>` below.
            let (d, out) = unsafe { (&*d, &mut *(ctx as *mut Option<EntryMetadata>)) };
            let security = (!d.security_descriptor.is_null() && d.security_descriptor_size > 0)
                .then(|| {
                    // SAFETY: pointer and size from wimlib, valid during the call.
                    unsafe {
                        std::slice::from_raw_parts(
                            d.security_descriptor as *const u8,
                            d.security_descriptor_size,
                        )
                    }
                    .to_vec()
                });
            let short_name = (!d.dos_name.is_null())
                // SAFETY: non-NULL NUL-terminated string valid during the call.
                .then(|| {
                    unsafe { CStr::from_ptr(d.dos_name) }
                        .to_string_lossy()
                        .into_owned()
                })
                .filter(|s| !s.is_empty());
            *out = Some(EntryMetadata {
                security,
                attributes: d.attributes,
                times: (
                    nt_time(&d.creation_time),
                    nt_time(&d.last_write_time),
                    nt_time(&d.last_access_time),
                ),
                short_name,
                named_streams: d.num_named_streams,
                reparse_tag: d.reparse_tag,
            });
            0
        }
        let c = cstring("wimlib_iterate_dir_tree", path.as_bytes())?;
        let mut out: Option<EntryMetadata> = None;
        // SAFETY: live WIMStruct, valid string, a matching callback, and a
        // context pointer that outlives the call.
        let code = unsafe {
            wimlib_iterate_dir_tree(
                self.ptr,
                image,
                c.as_ptr(),
                0,
                take,
                &mut out as *mut Option<EntryMetadata> as *mut c_void,
            )
        };
        check("wimlib_iterate_dir_tree", code)?;
        out.ok_or(WimError {
            call: "wimlib_iterate_dir_tree",
            code: 0,
            message: format!("{path}: no entry"),
        })
    }

    /// The full paths of the image's entries whose security descriptor
    /// `pred` accepts (the whole image, recursively).
    pub fn paths_with_security(
        &self,
        image: i32,
        pred: &dyn Fn(&[u8]) -> bool,
    ) -> Result<Vec<String>, WimError> {
        struct Ctx<'a> {
            pred: &'a dyn Fn(&[u8]) -> bool,
            out: Vec<String>,
        }
        extern "C" fn visit(d: *const DirEntryRaw, ctx: *mut c_void) -> c_int {
            // SAFETY: wimlib passes a valid dentry for the duration of the
            // call, and `ctx` is the `&mut Ctx` given below.
            let (d, ctx) = unsafe { (&*d, &mut *(ctx as *mut Ctx<'_>)) };
            if d.security_descriptor.is_null() || d.security_descriptor_size == 0 {
                return 0;
            }
            // SAFETY: wimlib gives the descriptor's pointer and size, valid
            // during the call.
            let sd = unsafe {
                std::slice::from_raw_parts(
                    d.security_descriptor as *const u8,
                    d.security_descriptor_size,
                )
            };
            let hit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (ctx.pred)(sd)))
                .unwrap_or(false);
            if hit && !d.full_path.is_null() {
                // SAFETY: non-NULL NUL-terminated string valid during the call.
                let p = unsafe { CStr::from_ptr(d.full_path) }.to_string_lossy();
                ctx.out.push(p.into_owned());
            }
            0
        }
        let c = cstring("wimlib_iterate_dir_tree", b"/")?;
        let mut ctx = Ctx {
            pred,
            out: Vec::new(),
        };
        // SAFETY: live WIMStruct, valid string, a callback matching
        // wimlib_iterate_dir_tree_callback_t, and a context pointer that
        // outlives the call.
        let code = unsafe {
            wimlib_iterate_dir_tree(
                self.ptr,
                image,
                c.as_ptr(),
                ITERATE_DIR_TREE_FLAG_RECURSIVE,
                visit,
                &mut ctx as *mut Ctx<'_> as *mut c_void,
            )
        };
        check("wimlib_iterate_dir_tree", code)?;
        Ok(ctx.out)
    }

    /// Extracts image paths into the host directory `target`.
    pub fn extract_paths(
        &self,
        image: i32,
        target: &Path,
        paths: &[String],
        flags: i32,
    ) -> Result<(), WimError> {
        let t = cpath("wimlib_extract_paths", target)?;
        let cs = paths
            .iter()
            .map(|p| cstring("wimlib_extract_paths", p.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        let ptrs: Vec<*const c_char> = cs.iter().map(|c| c.as_ptr()).collect();
        // SAFETY: live WIMStruct; `t`, `cs` and `ptrs` outlive the call and
        // `ptrs` holds `ptrs.len()` valid NUL-terminated strings.
        let code = unsafe {
            wimlib_extract_paths(
                self.ptr,
                image,
                t.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len(),
                flags,
            )
        };
        check("wimlib_extract_paths", code)
    }

    /// Applies update commands to an image in memory (all or none: wimlib
    /// rolls every command back on failure).
    pub fn update(&mut self, image: i32, cmds: &[UpdateCmd]) -> Result<(), WimError> {
        const CALL: &str = "wimlib_update_image";
        // Owned strings first, so that the raw pointers below stay valid.
        let mut strings: Vec<CString> = Vec::new();
        let mut keep = |b: &[u8]| -> Result<*mut c_char, WimError> {
            let c = cstring(CALL, b)?;
            let p = c.as_ptr() as *mut c_char;
            strings.push(c);
            Ok(p)
        };
        let mut raw: Vec<UpdateCommandRaw> = Vec::with_capacity(cmds.len());
        for c in cmds {
            raw.push(match c {
                UpdateCmd::Add {
                    source,
                    target,
                    flags,
                } => UpdateCommandRaw {
                    op: UPDATE_OP_ADD,
                    u: UpdateUnion {
                        add: AddCommand {
                            fs_source_path: keep(source.as_os_str().as_bytes())?,
                            wim_target_path: keep(target.as_bytes())?,
                            config_file: std::ptr::null_mut(),
                            add_flags: *flags,
                        },
                    },
                },
                UpdateCmd::Delete { path, flags } => UpdateCommandRaw {
                    op: UPDATE_OP_DELETE,
                    u: UpdateUnion {
                        delete: DeleteCommand {
                            wim_path: keep(path.as_bytes())?,
                            delete_flags: *flags,
                        },
                    },
                },
                UpdateCmd::Rename { from, to } => UpdateCommandRaw {
                    op: UPDATE_OP_RENAME,
                    u: UpdateUnion {
                        rename: RenameCommand {
                            wim_source_path: keep(from.as_bytes())?,
                            wim_target_path: keep(to.as_bytes())?,
                            rename_flags: 0,
                        },
                    },
                },
            });
        }
        // With a progress function, one message before and after each
        // command.
        let flags = if self.progress.is_some() {
            UPDATE_FLAG_SEND_PROGRESS
        } else {
            0
        };
        // SAFETY: live WIMStruct; `raw` holds `raw.len()` commands laid out
        // as `struct wimlib_update_command`, whose string pointers point into
        // `strings`, alive until the end of this function. wimlib does not
        // keep the command pointers after returning (it copies the paths).
        let code = unsafe { wimlib_update_image(self.ptr, image, raw.as_ptr(), raw.len(), flags) };
        self.finish_progress();
        check(CALL, code)
    }

    /// Commits the WIM to its own file (by appending unless `flags` asks
    /// for a rebuild).
    pub fn overwrite(&mut self, flags: i32) -> Result<(), WimError> {
        // SAFETY: live WIMStruct; 0 threads lets wimlib choose.
        let code = unsafe { wimlib_overwrite(self.ptr, flags, 0) };
        self.finish_progress();
        check("wimlib_overwrite", code)
    }

    /// A new WIM with no image, compressing with wimlib's compression
    /// type `ctype` (as [`WimInfo::compression_type`] reports it).
    pub fn create_new(ctype: i32) -> Result<Wim, WimError> {
        global_init()?;
        let mut ptr: *mut WimStruct = std::ptr::null_mut();
        // SAFETY: `ptr` is a valid out-pointer; on success wimlib stores an
        // owned WIMStruct in it.
        let code = unsafe { wimlib_create_new_wim(ctype, &mut ptr) };
        check("wimlib_create_new_wim", code)?;
        Ok(Wim {
            ptr,
            progress: None,
        })
    }

    /// Adds image `image` of `self` to `dest` under `name`. The new image
    /// shares the file data of `self`, which must therefore stay open
    /// until `dest` has been written.
    pub fn export_image(
        &self,
        image: i32,
        dest: &mut Wim,
        name: &str,
        description: &str,
    ) -> Result<(), WimError> {
        let n = cstring("wimlib_export_image", name.as_bytes())?;
        let d = cstring("wimlib_export_image", description.as_bytes())?;
        // SAFETY: both WIMStructs are live and distinct; the strings are
        // valid and NUL-terminated; wimlib copies them.
        let code =
            unsafe { wimlib_export_image(self.ptr, image, dest.ptr, n.as_ptr(), d.as_ptr(), 0) };
        check("wimlib_export_image", code)
    }

    /// Verifies the whole WIM as `wimlib-imagex verify` does: every image's
    /// metadata, and every blob read back and checked against its SHA-1.
    pub fn verify(&mut self) -> Result<(), WimError> {
        // SAFETY: live WIMStruct; no flags are defined.
        let code = unsafe { wimlib_verify_wim(self.ptr, 0) };
        self.finish_progress();
        check("wimlib_verify_wim", code)
    }

    /// Writes the WIM (every image) to a new file.
    pub fn write(&mut self, path: &Path, flags: i32) -> Result<(), WimError> {
        let c = cpath("wimlib_write", path)?;
        // SAFETY: live WIMStruct and a valid NUL-terminated path.
        let code = unsafe { wimlib_write(self.ptr, c.as_ptr(), ALL_IMAGES, flags, 0) };
        self.finish_progress();
        check("wimlib_write", code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use std::sync::Arc;

    /// The layout of the progress structures, worked out by hand from
    /// wimlib.h (1.13) for the platforms the crate builds on (LP64: 8-byte
    /// pointers, `size_t` and `uint64_t`, 4-byte `int` and `uint32_t`).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn progress_info_layout_matches_the_header() {
        // struct wimlib_progress_info_write_streams: four uint64_t, four
        // 32-bit fields, one uint64_t; no padding.
        assert_eq!(offset_of!(ProgressWriteStreams, total_bytes), 0);
        assert_eq!(offset_of!(ProgressWriteStreams, total_streams), 8);
        assert_eq!(offset_of!(ProgressWriteStreams, completed_bytes), 16);
        assert_eq!(offset_of!(ProgressWriteStreams, completed_streams), 24);
        assert_eq!(offset_of!(ProgressWriteStreams, num_threads), 32);
        assert_eq!(offset_of!(ProgressWriteStreams, compression_type), 36);
        assert_eq!(offset_of!(ProgressWriteStreams, total_parts), 40);
        assert_eq!(offset_of!(ProgressWriteStreams, completed_parts), 44);
        assert_eq!(
            offset_of!(ProgressWriteStreams, completed_compressed_bytes),
            48
        );
        assert_eq!(size_of::<ProgressWriteStreams>(), 56);
        // struct wimlib_progress_info_update: a pointer and two size_t.
        assert_eq!(offset_of!(ProgressUpdate, command), 0);
        assert_eq!(offset_of!(ProgressUpdate, completed_commands), 8);
        assert_eq!(offset_of!(ProgressUpdate, total_commands), 16);
        assert_eq!(size_of::<ProgressUpdate>(), 24);
        // struct wimlib_progress_info_integrity: two uint64_t, three
        // uint32_t, 4 bytes of padding, a pointer.
        assert_eq!(offset_of!(ProgressIntegrity, total_bytes), 0);
        assert_eq!(offset_of!(ProgressIntegrity, completed_bytes), 8);
        assert_eq!(offset_of!(ProgressIntegrity, total_chunks), 16);
        assert_eq!(offset_of!(ProgressIntegrity, completed_chunks), 20);
        assert_eq!(offset_of!(ProgressIntegrity, chunk_size), 24);
        assert_eq!(offset_of!(ProgressIntegrity, filename), 32);
        assert_eq!(size_of::<ProgressIntegrity>(), 40);
        // Every union member starts at offset 0.
        assert_eq!(offset_of!(ProgressInfo, write_streams), 0);
        assert_eq!(offset_of!(ProgressInfo, update), 0);
        assert_eq!(offset_of!(ProgressInfo, integrity), 0);
        // The C union is at least as large as its `extract` member (112
        // bytes on LP64); the members bound here all fit inside it.
        assert!(size_of::<ProgressInfo>() <= 112);
        assert_eq!(std::mem::align_of::<ProgressInfo>(), 8);
    }

    fn recorder() -> (Box<ProgressCtx>, Arc<Mutex<Vec<ProgressEvent>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let ctx = Box::new(ProgressCtx::new(Progress::new(move |e| {
            s.lock().unwrap().push(e)
        })));
        (ctx, seen)
    }

    fn call(ctx: &ProgressCtx, msg: c_int, info: Option<&mut ProgressInfo>) -> c_int {
        let info = info.map_or(std::ptr::null_mut(), |i| i as *mut ProgressInfo);
        progress_callback(msg, info, ctx as *const ProgressCtx as *mut c_void)
    }

    fn write_streams(done: u64, total: u64) -> ProgressInfo {
        ProgressInfo {
            write_streams: ProgressWriteStreams {
                total_bytes: total,
                total_streams: 3,
                completed_bytes: done,
                completed_streams: 1,
                num_threads: 4,
                compression_type: 1,
                total_parts: 1,
                completed_parts: 0,
                completed_compressed_bytes: done / 2,
            },
        }
    }

    #[test]
    fn callback_decodes_messages_into_phases() {
        let (ctx, seen) = recorder();
        let mut update = ProgressInfo {
            update: ProgressUpdate {
                command: std::ptr::null(),
                completed_commands: 0,
                total_commands: 2,
            },
        };
        assert_eq!(
            call(&ctx, PROGRESS_MSG_UPDATE_BEGIN_COMMAND, Some(&mut update)),
            PROGRESS_STATUS_CONTINUE
        );
        update.update.completed_commands = 1;
        call(&ctx, PROGRESS_MSG_UPDATE_END_COMMAND, Some(&mut update));
        // The next command begins at the count the last one ended with.
        call(&ctx, PROGRESS_MSG_UPDATE_BEGIN_COMMAND, Some(&mut update));
        update.update.completed_commands = 2;
        call(&ctx, PROGRESS_MSG_UPDATE_END_COMMAND, Some(&mut update));
        ctx.finish();
        call(
            &ctx,
            PROGRESS_MSG_WRITE_STREAMS,
            Some(&mut write_streams(0, 100)),
        );
        call(
            &ctx,
            PROGRESS_MSG_WRITE_STREAMS,
            Some(&mut write_streams(100, 100)),
        );
        call(&ctx, PROGRESS_MSG_WRITE_METADATA_BEGIN, None);
        call(&ctx, PROGRESS_MSG_WRITE_METADATA_END, None);
        let mut integrity = ProgressInfo {
            integrity: ProgressIntegrity {
                total_bytes: 4096,
                completed_bytes: 4096,
                total_chunks: 1,
                completed_chunks: 1,
                chunk_size: 10 << 20,
                filename: std::ptr::null(),
            },
        };
        call(&ctx, PROGRESS_MSG_CALC_INTEGRITY, Some(&mut integrity));
        // Not reported: a scan message, and a counted message without info.
        call(&ctx, 9, None);
        call(&ctx, PROGRESS_MSG_WRITE_STREAMS, None);
        ctx.finish();
        ctx.finish();
        use Phase::*;
        use ProgressEvent::*;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                Begin { phase: UpdateImage },
                Steps { done: 0, total: 2 },
                Steps { done: 1, total: 2 },
                Steps { done: 2, total: 2 },
                End { phase: UpdateImage },
                Begin { phase: WriteData },
                Bytes {
                    done: 0,
                    total: 100
                },
                Bytes {
                    done: 100,
                    total: 100
                },
                End { phase: WriteData },
                Begin {
                    phase: WriteMetadata
                },
                End {
                    phase: WriteMetadata
                },
                Begin {
                    phase: CalcIntegrity
                },
                Bytes {
                    done: 4096,
                    total: 4096
                },
                End {
                    phase: CalcIntegrity
                },
            ]
        );
    }

    #[test]
    fn a_panicking_sink_is_contained_and_silenced() {
        let calls = Arc::new(Mutex::new(0u32));
        let c = calls.clone();
        let ctx = Box::new(ProgressCtx::new(Progress::new(move |_| {
            *c.lock().unwrap() += 1;
            panic!("sink failure");
        })));
        for _ in 0..3 {
            assert_eq!(
                call(
                    &ctx,
                    PROGRESS_MSG_WRITE_STREAMS,
                    Some(&mut write_streams(1, 2))
                ),
                PROGRESS_STATUS_CONTINUE
            );
        }
        ctx.finish();
        assert_eq!(*calls.lock().unwrap(), 1);
    }

    #[test]
    fn a_null_context_is_ignored() {
        let code = progress_callback(
            PROGRESS_MSG_WRITE_STREAMS,
            &mut write_streams(1, 2),
            std::ptr::null_mut(),
        );
        assert_eq!(code, PROGRESS_STATUS_CONTINUE);
    }
}
