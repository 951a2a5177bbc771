//! Copies of one WIM image inside a new WIM: the base of `reseal stamp`
//! on a WIM, where each copy is then personalized on its own.
//!
//! wimlib's export adds an image to another WIM by reference: the new
//! images share every file's data with the source (and with each other),
//! so N copies cost N metadata resources, not N times the data.

use std::path::Path;

use super::ffi::Wim;
use super::wim_err;
use crate::error::{ResealError, Result};

/// Writes a new WIM at `out` (which must not exist) holding one copy of
/// image `image` (1-based) of the WIM at `src` per entry of `names`, named
/// after it, with the source's compression type.
pub fn export_copies(src: &Path, image: u32, names: &[String], out: &Path) -> Result<()> {
    if out.exists() {
        return Err(ResealError::InvalidInput {
            what: out.display().to_string(),
            message: "exists already; give a new file".into(),
        });
    }
    let source = Wim::open(src).map_err(|e| wim_err(src, "open the WIM", e))?;
    let info = source
        .info()
        .map_err(|e| wim_err(src, "read the WIM header", e))?;
    if info.total_parts != 1 {
        return Err(ResealError::InvalidInput {
            what: src.display().to_string(),
            message: "is part of a split WIM; join it first (wimlib-imagex join)".into(),
        });
    }
    if image == 0 || image > info.image_count {
        return Err(ResealError::InvalidInput {
            what: src.display().to_string(),
            message: format!(
                "no image {image} in the WIM (it has {} image(s))",
                info.image_count
            ),
        });
    }
    let mut dest = Wim::create_new(info.compression_type)
        .map_err(|e| wim_err(out, "create the new WIM", e))?;
    let from = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // wimlib refuses to export one image twice into the same WIM (it
    // compares the image's in-memory metadata), so each copy comes from a
    // handle of its own; all stay open until the new WIM is written.
    let mut sources = vec![source];
    for _ in 1..names.len() {
        sources.push(Wim::open(src).map_err(|e| wim_err(src, "open the WIM", e))?);
    }
    for (name, source) in names.iter().zip(&sources) {
        source
            .export_image(
                image as i32,
                &mut dest,
                name,
                &format!("{name}: personalized copy of image {image} of {from}"),
            )
            .map_err(|e| wim_err(src, "copy the image", e))?;
    }
    dest.write(out, 0)
        .map_err(|e| wim_err(out, "write the new WIM", e))?;
    Ok(())
}
