//! Replacing a file in a WIM without losing its metadata.
//!
//! wimlib's update API replaces a whole entry, and an entry added from a
//! Linux directory has no security descriptor, DOS attributes, short name,
//! named streams or Windows timestamps. An entry added from an NTFS volume
//! (wimlib's NTFS-3G capture mode) has all of them. So, for each file to
//! replace:
//!
//! 1. a scratch NTFS volume is made (`mkntfs`, in a private temp dir);
//! 2. the file is made in it with the old entry's security descriptor,
//!    attributes, short name and timestamps (read with
//!    `wimlib_iterate_dir_tree`); an entry with named streams or a reparse
//!    point is instead extracted by wimlib in NTFS-3G mode, which lays all
//!    of it down;
//! 3. the file's data is replaced in place through libntfs-3g
//!    ([`crate::ntfs3g`]), leaving every other attribute, times included;
//! 4. the commit adds the volume, whose root holds just that file, at the
//!    file's parent directory in NTFS-3G mode: the directory is merged (it
//!    keeps its own metadata) and the file replaces the old entry. (Not at
//!    the image root: wimlib re-reads the image's SOFTWARE and SYSTEM hives
//!    after every add at the root.)
//!
//! When the run changes the machine SID, the replaced file's descriptor is
//! rewritten too (step 3), so it names the new SID.
//!
//! When a step is unavailable (no `mkntfs`, or a wimlib built without
//! NTFS-3G support) the caller falls back to a plain add and reports what
//! was lost.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ffi::{self, Wim};
use crate::disk::Access;
use crate::disk::raw::RawDisk;
use crate::ntfs3g::{FileMetadata, NtfsWriter};
use crate::{ResealError, Result};
use reseal_hive::Sid;
use reseal_hive::security::{rewrite_descriptor_domain, validate_descriptor};

/// `WIMLIB_EXTRACT_FLAG_NTFS`: the target is an NTFS volume image.
const EXTRACT_FLAG_NTFS: i32 = 0x1;
/// `WIMLIB_ADD_FLAG_NTFS`: the source is an NTFS volume image.
pub(super) const ADD_FLAG_NTFS: i32 = 0x1;
/// `WIMLIB_ADD_FLAG_NO_ACLS`: capture no security descriptors.
pub(super) const ADD_FLAG_NO_ACLS: i32 = 0x20;

/// Whether `mkntfs` can be run.
pub(super) fn available() -> bool {
    Command::new("mkntfs")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn fail(path: &str, action: &'static str, message: impl std::fmt::Display) -> ResealError {
    ResealError::CommitFailed {
        path: path.to_string(),
        action,
        message: message.to_string(),
    }
}

/// Size of a scratch volume for a file of `old` bytes replaced by `new`
/// bytes: both, plus room for NTFS metadata, rounded to 1 MiB.
fn volume_size(old: u64, new: u64) -> u64 {
    let need = old + new + (old + new) / 8 + (16 << 20);
    need.div_ceil(1 << 20) << 20
}

/// Makes the scratch volume `vol` for the image file `path` (`\`-separated,
/// stored case) whose new contents are `data`: the old entry extracted by
/// wimlib in NTFS-3G mode, then its data replaced with times kept.
/// Returns the volume to add at the file's parent directory with
/// [`ADD_FLAG_NTFS`].
pub(super) fn stage(
    wim: &Wim,
    image: i32,
    path: &str,
    old_size: u64,
    data: &[u8],
    vol: &Path,
    sid: Option<&(Sid, Sid)>,
) -> Result<PathBuf> {
    let f = std::fs::File::create(vol).map_err(|e| fail(path, "create a scratch volume", e))?;
    f.set_len(volume_size(old_size, data.len() as u64))
        .map_err(|e| fail(path, "size a scratch volume", e))?;
    drop(f);
    let out = Command::new("mkntfs")
        .args(["-F", "-f", "-q", "-L", "reseal"])
        .arg(vol)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(path, "run mkntfs", e))?;
    if !out.status.success() {
        return Err(fail(
            path,
            "make a scratch NTFS volume",
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    let wim_path = format!("/{}", path.replace('\\', "/"));
    let meta = wim
        .entry_metadata(image, &wim_path)
        .map_err(|e| fail(path, "read the old entry's metadata", e))?;
    // Without named streams or a reparse point, everything to keep is in
    // the metadata: the file is made from it, and the old data is never
    // decompressed. Otherwise wimlib lays the old entry down whole.
    let from_metadata = meta.named_streams == 0 && meta.reparse_tag == 0;
    if !from_metadata {
        wim.extract_paths(
            image,
            vol,
            &[wim_path],
            EXTRACT_FLAG_NTFS | ffi::EXTRACT_FLAG_NORPFIX,
        )
        .map_err(|e| fail(path, "extract the old entry with its metadata", e))?;
    }
    // The file sits at the volume's root; the volume is added at the
    // file's parent directory.
    let name = path.rsplit('\\').next().unwrap_or(path);
    let dev = RawDisk::open(vol, Access::ReadWrite)?;
    let mut w = NtfsWriter::mount(dev, &vol.display().to_string()).map_err(|(e, _)| e)?;
    w.set_keep_times(true);
    // An extracted entry sits at its full path: moved to the root (the
    // same inode, so its descriptor and streams stay; the short name and
    // times are set again below, as the move changes them).
    let moved = if from_metadata {
        Ok(())
    } else {
        w.rename(path, name).and_then(|()| {
            // The now empty directories it was extracted into go too, or
            // the add would bring them along.
            match path.split('\\').next() {
                Some(top) if top != name => w.delete_tree(top),
                _ => Ok(()),
            }
        })
    };
    let res = moved
        .and_then(|()| w.write_file(name, data))
        .and_then(|()| {
            if !from_metadata {
                return w.set_metadata(
                    name,
                    &FileMetadata {
                        times: Some(meta.times),
                        short_name: meta.short_name.clone(),
                        ..FileMetadata::default()
                    },
                );
            }
            w.set_metadata(
                name,
                &FileMetadata {
                    security: meta.security.clone(),
                    attributes: Some(meta.attributes),
                    times: Some(meta.times),
                    short_name: meta.short_name.clone(),
                    streams: Vec::new(),
                },
            )
        })
        .and_then(|()| match sid {
            Some((old, new)) => rewrite_sid(&mut w, name, old, new),
            None => Ok(()),
        });
    let (unmounted, _) = w.unmount();
    res?;
    unmounted?;
    Ok(vol.to_path_buf())
}

/// One file to stage: its image path (stored case), old size and new
/// contents.
pub(super) struct Job<'a> {
    /// Image path, `\`-separated, stored case.
    pub path: String,
    /// Size of the entry being replaced.
    pub old_size: u64,
    /// The new contents.
    pub data: &'a [u8],
}

/// Threads staging at once: the work is mostly waiting for mkntfs and
/// for libntfs-3g's syncs, so more than the cores.
const STAGING_THREADS: usize = 8;

/// Stages every job ([`stage`]) on a few threads, each with its own
/// handle on the WIM at `wim_path` (wimlib handles are not shared between
/// threads). Gives each job's volume, or `None` where staging failed.
pub(super) fn stage_all(
    wim_path: &Path,
    image: i32,
    jobs: &[Job<'_>],
    dir: &Path,
    sid: Option<&(Sid, Sid)>,
) -> Vec<Option<PathBuf>> {
    let mut out: Vec<Option<PathBuf>> = vec![None; jobs.len()];
    let threads = STAGING_THREADS.min(jobs.len()).max(1);
    let chunk = jobs.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (t, (jobs, slots)) in jobs.chunks(chunk).zip(out.chunks_mut(chunk)).enumerate() {
            scope.spawn(move || {
                let Ok(wim) = Wim::open(wim_path) else {
                    return;
                };
                for (i, (job, slot)) in jobs.iter().zip(slots.iter_mut()).enumerate() {
                    let vol = dir.join(format!("v{t}-{i}.ntfs"));
                    *slot = stage(&wim, image, &job.path, job.old_size, job.data, &vol, sid).ok();
                }
            });
        }
    });
    out
}

/// Rewrites the machine SID `old` to `new` in the descriptor of `path`,
/// when it names it, and zeroes the descriptor's unused bytes (where old
/// sub-authorities may linger).
fn rewrite_sid(w: &mut NtfsWriter<RawDisk>, path: &str, old: &Sid, new: &Sid) -> Result<()> {
    let sd = w.security(path)?;
    if validate_descriptor(&sd).is_err() {
        return Ok(());
    }
    if let Ok(Some(r)) = rewrite_descriptor_domain(&sd, old, new) {
        w.set_security(path, &r.descriptor)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_size_has_room_and_is_aligned() {
        let s = volume_size(10 << 20, 12 << 20);
        assert!(s >= (22 << 20) + (16 << 20));
        assert_eq!(s % (1 << 20), 0);
        assert!(volume_size(0, 0) >= 16 << 20);
    }
}
