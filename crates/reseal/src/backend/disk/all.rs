//! Every Windows install on a disk image: sysprep runs once per installed
//! operating system, so a disk with several installs gets each of them
//! generalized, in partition order.

use std::path::Path;

use super::{DiskBackend, SYSTEM_HIVE, list_candidates};
use crate::backend::Backend;
use crate::error::{ResealError, Result};
use crate::generalize::generalize;
use crate::options::{GeneralizeOptions, SidChoice};
use crate::report::{Outcome, RunReport};

/// The partitions of the disk image at `path` that hold a Windows install
/// (NTFS with `Windows\System32\config\SYSTEM`), in table order; `[0]` for
/// a bare NTFS volume. Partitions that are not NTFS are skipped; a
/// BitLocker, dirty or unreadable NTFS partition is an error, as it may
/// hold an install that would otherwise be silently left out.
pub fn windows_partitions(path: &Path) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for n in list_candidates(path)? {
        match DiskBackend::open(path, Some(n)) {
            Ok(b) => {
                if b.exists(SYSTEM_HIVE) {
                    out.push(n);
                }
            }
            Err(ResealError::InvalidInput { message, .. }) if message.contains("is not NTFS") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Generalizes every Windows install on the disk image at `path`, one
/// partition after the other, and returns each partition's number and
/// report. Every install is planned first (a dry run); when any is
/// refused, nothing is written and the dry-run reports come back. A given
/// `--sid` is refused for a disk with several installs (they would share
/// it); a seed is varied per partition so each install gets its own SID.
pub fn generalize_disk(path: &Path, options: &GeneralizeOptions) -> Result<Vec<(u32, RunReport)>> {
    let parts = windows_partitions(path)?;
    if parts.is_empty() {
        // Let the single-volume open produce its specific error.
        DiskBackend::open(path, None)?;
        return Ok(Vec::new());
    }
    if parts.len() > 1 && matches!(options.sid, SidChoice::Given(_)) {
        return Err(ResealError::InvalidInput {
            what: path.display().to_string(),
            message: format!(
                "--sid names one machine SID but the disk holds {} Windows installs (partitions {}), which must not share one; give --partition N with --sid, or leave --sid out for a fresh SID each",
                parts.len(),
                parts
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let per_part = |i: usize| GeneralizeOptions {
        seed: options.seed.map(|s| s.wrapping_add(i as u64)),
        ..options.clone()
    };
    let mut planned = Vec::with_capacity(parts.len());
    for (i, &n) in parts.iter().enumerate() {
        let mut b = DiskBackend::open(path, Some(n))?;
        let report = generalize(
            &mut b,
            &GeneralizeOptions {
                dry_run: true,
                ..per_part(i)
            },
        )?;
        planned.push((n, report));
    }
    if options.dry_run || planned.iter().any(|(_, r)| r.outcome == Outcome::Refused) {
        return Ok(planned);
    }
    let mut out = Vec::with_capacity(parts.len());
    for (i, &n) in parts.iter().enumerate() {
        let mut b = DiskBackend::open(path, Some(n))?;
        out.push((n, generalize(&mut b, &per_part(i))?));
    }
    Ok(out)
}
