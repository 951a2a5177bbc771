//! `--index all`: every image of a WIM generalized on its own.
//!
//! Planning runs in parallel, one rayon task per image, each on its own
//! wimlib handle (wimlib allows different `WIMStruct`s in different
//! threads): hives are read, planned, edited and checked, and the changes
//! are kept in memory. The writes are then serialized: image after image,
//! the WIM is opened again and that image's changes are committed (in place
//! by appending, or to `--output` for the first and in place in the output
//! afterwards). Nothing is written when any image fails to plan.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{ImageSelector, WimBackend, wim_err};
use crate::backend::{Backend, DirEntry, FileChange};
use crate::error::{ResealError, Result};
use crate::generalize::{generalize, request_file_security_rewrite};
use crate::ops::NotDone;
use crate::options::GeneralizeOptions;
use crate::progress::{Progress, ProgressEvent};
use crate::report::RunReport;

/// The number of images in the WIM at `path`.
pub fn image_count(path: &Path) -> Result<u32> {
    super::layout::check(path)?;
    let wim = super::ffi::Wim::open(path).map_err(|e| wim_err(path, "open the WIM", e))?;
    Ok(wim
        .info()
        .map_err(|e| wim_err(path, "read the WIM header", e))?
        .image_count)
}

/// Reads through a [`WimBackend`]; a commit only records the changes.
struct Recorder<'a> {
    inner: &'a WimBackend,
    changes: Vec<FileChange>,
}

impl Backend for Recorder<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn list(&self, dir: &str) -> Result<Vec<DirEntry>> {
        self.inner.list(dir)
    }
    fn exists(&self, path: &str) -> bool {
        self.inner.exists(path)
    }
    fn is_dir(&self, path: &str) -> bool {
        self.inner.is_dir(path)
    }
    fn read(&self, path: &str) -> Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn read_head(&self, path: &str, len: usize) -> Result<Vec<u8>> {
        self.inner.read_head(path, len)
    }
    fn commit(&mut self, changes: &[FileChange]) -> Result<()> {
        self.changes = changes.to_vec();
        Ok(())
    }
}

/// Generalizes every image of the WIM at `path`, each on its own; returns
/// one report per image, in image order. `output`: write the result to
/// this new file (the input is left unchanged); `rebuild`: compact the WIM
/// on each in-place write.
///
/// If writing image *k* fails, images before it stay generalized (each
/// write is complete on its own) and image *k* and later are left as they
/// were; the error says which.
pub fn generalize_all_images(
    path: &Path,
    output: Option<PathBuf>,
    rebuild: bool,
    options: &GeneralizeOptions,
) -> Result<Vec<RunReport>> {
    generalize_all_images_with_progress(path, output, rebuild, options, None)
}

/// [`generalize_all_images`], reporting the progress of each image's write
/// to `progress`: a [`ProgressEvent::Image`] before the phases of each
/// image that is written.
pub fn generalize_all_images_with_progress(
    path: &Path,
    output: Option<PathBuf>,
    rebuild: bool,
    options: &GeneralizeOptions,
    progress: Option<Progress>,
) -> Result<Vec<RunReport>> {
    if let Some(out) = &output {
        super::refuse_output_onto_input(path, out)?;
    }
    let count = image_count(path)?;
    if count == 0 {
        return Err(ResealError::InvalidInput {
            what: path.display().to_string(),
            message: "the WIM holds no image; expected at least one Windows image".into(),
        });
    }
    let planned: Vec<Result<(RunReport, Vec<FileChange>)>> = (1..=count)
        .into_par_iter()
        .map(|i| {
            let b = WimBackend::open(path, ImageSelector::Index(i))?;
            let mut rec = Recorder {
                inner: &b,
                changes: Vec::new(),
            };
            let report = generalize(&mut rec, options)?;
            Ok((report, rec.changes))
        })
        .collect();
    let planned: Vec<(RunReport, Vec<FileChange>)> = planned.into_iter().collect::<Result<_>>()?;
    let mut current = path.to_path_buf();
    let mut output = output;
    let mut reports = Vec::with_capacity(planned.len());
    let mut written: Vec<u32> = Vec::new();
    for (i, (mut report, changes)) in (1u32..).zip(planned) {
        if !changes.is_empty() {
            let mut b = WimBackend::open(&current, ImageSelector::Index(i))?
                .with_output(output.clone())
                .with_rebuild(rebuild)
                .with_progress(progress.clone());
            // The WIM is verified once, before the first write; later images
            // go into the file that write produced.
            b.verified = !written.is_empty();
            if let Some(p) = &progress {
                p.emit(ProgressEvent::Image { index: i, count });
            }
            request_file_security_rewrite(&mut b, &report);
            if let Err(e) = b.commit(&changes) {
                return Err(match e {
                    ResealError::CommitFailed {
                        path,
                        action,
                        message,
                    } => ResealError::CommitFailed {
                        path: format!("image {i}: {path}"),
                        action,
                        message: if written.is_empty() {
                            message
                        } else {
                            format!("{message} (image(s) {written:?} were already written)")
                        },
                    },
                    other => other,
                });
            }
            written.push(i);
            output = None;
            current = b.path.clone();
            for inst in &mut report.installs {
                if inst.files_changed == 0 {
                    continue;
                }
                let caveats = b.commit_caveats(inst.sid.is_some());
                inst.not_done
                    .extend(caveats.into_iter().map(|message| NotDone {
                        operation: "backend",
                        message,
                    }));
            }
        }
        reports.push(report);
    }
    Ok(reports)
}
