//! The front door: [`Image::open`] recognises what a path holds (a
//! directory root, a WIM/ESD, a raw/VHD/VHDX/qcow2/VMDK disk image) and
//! gives one handle whose methods run every job on any kind, choosing the
//! backend and the per-kind flow (every partition of a disk, every image of
//! a WIM) as the command line does.
//!
//! ```no_run
//! use reseal::{Image, OpenOptions};
//! use reseal::options::GeneralizeOptions;
//! use reseal::personalize::PersonalizeOptions;
//! use reseal::stamp::{CloneNames, StampOptions};
//!
//! let template = Image::open("template.vhdx", &OpenOptions::default())?;
//! for install in template.inspect()? {
//!     println!("{}: generalized {}", install.windows_dir, install.description.generalized);
//! }
//! let reports = template.generalize(&GeneralizeOptions::default())?;
//! println!("{:?}", reports[0].outcome);
//! let clones = template.stamp(&StampOptions::new(
//!     "machines",
//!     3,
//!     CloneNames::Pattern("WEB-{n:02}".into()),
//! ))?;
//! let copy = Image::open(&clones.clones[0].file, &OpenOptions::default())?;
//! copy.personalize(&PersonalizeOptions::default())?;
//! # Ok::<(), reseal::ResealError>(())
//! ```

use std::path::{Path, PathBuf};

use crate::backend::dir::DirBackend;
use crate::backend::disk::{DiskBackend, generalize_disk};
use crate::backend::wim::{ImageSelector, WimBackend, generalize_all_images, image_count};
use crate::error::{ResealError, Result};
use crate::generalize::{generalize, inspect};
use crate::image::ImageKind;
use crate::options::GeneralizeOptions;
use crate::personalize::{CloneReport, PersonalizeOptions, personalize};
use crate::report::{InstallReport, RunReport};
use crate::stamp::{StampOptions, StampReport, stamp};

/// Which images of a WIM a job works on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WimImages {
    /// Every image (inspect's default) or image 1 (generalize's default).
    #[default]
    Default,
    /// Every image, each on its own.
    All,
    /// One image.
    One(ImageSelector),
}

/// How [`Image::open`] treats the path.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// The kind, when the content should not decide (`--format`).
    pub format: Option<ImageKind>,
    /// Disk images: only this partition (from 1).
    pub partition: Option<u32>,
    /// WIM files: which images.
    pub wim_images: WimImages,
    /// WIM files: write results to this new file instead of the input.
    pub output: Option<PathBuf>,
    /// WIM files: rewrite the whole file instead of appending.
    pub rebuild: bool,
}

impl OpenOptions {
    /// Forces the kind.
    pub fn format(mut self, kind: ImageKind) -> Self {
        self.format = Some(kind);
        self
    }
    /// Works on one partition of a disk image.
    pub fn partition(mut self, n: u32) -> Self {
        self.partition = Some(n);
        self
    }
    /// Chooses the images of a WIM.
    pub fn wim_images(mut self, images: WimImages) -> Self {
        self.wim_images = images;
        self
    }
    /// Writes WIM results to a new file.
    pub fn output(mut self, path: impl Into<PathBuf>) -> Self {
        self.output = Some(path.into());
        self
    }
}

/// An image of any supported kind.
#[derive(Debug, Clone)]
pub struct Image {
    path: PathBuf,
    kind: ImageKind,
    options: OpenOptions,
}

fn invalid(path: &Path, message: String) -> ResealError {
    ResealError::InvalidInput {
        what: path.display().to_string(),
        message,
    }
}

impl Image {
    /// Recognises the image at `path` (by content unless `options.format`
    /// says) and checks that the options fit its kind. Nothing is read
    /// beyond the signatures yet.
    pub fn open(path: impl AsRef<Path>, options: &OpenOptions) -> Result<Image> {
        let path = path.as_ref().to_path_buf();
        let kind = crate::image::resolve(&path, options.format)?;
        if options.partition.is_some() && !matches!(kind, ImageKind::Disk(_)) {
            return Err(invalid(
                &path,
                format!("a partition applies to disk images only (this is {kind})"),
            ));
        }
        let wim_only =
            options.output.is_some() || options.rebuild || options.wim_images != WimImages::Default;
        if wim_only && kind != ImageKind::Wim {
            return Err(invalid(
                &path,
                format!("image index, output and rebuild apply to WIM files only (this is {kind})"),
            ));
        }
        Ok(Image {
            path,
            kind,
            options: options.clone(),
        })
    }

    /// The path given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What kind of image it is.
    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    fn wim_selectors(&self, all_by_default: bool) -> Result<Vec<ImageSelector>> {
        Ok(match &self.options.wim_images {
            WimImages::One(s) => vec![s.clone()],
            WimImages::Default if !all_by_default => vec![ImageSelector::Index(1)],
            _ => (1..=image_count(&self.path)?)
                .map(ImageSelector::Index)
                .collect(),
        })
    }

    /// Describes every Windows installation with its preflight findings
    /// (every partition of a disk unless one was chosen, every image of a
    /// WIM unless one was chosen). Only reads.
    pub fn inspect(&self) -> Result<Vec<InstallReport>> {
        match self.kind {
            ImageKind::Directory => inspect(&DirBackend::open(&self.path)?),
            ImageKind::Disk(_) => match self.options.partition {
                Some(n) => inspect(&DiskBackend::open(&self.path, Some(n))?),
                None => {
                    let parts = crate::backend::disk::windows_partitions(&self.path)?;
                    if parts.is_empty() {
                        return inspect(&DiskBackend::open(&self.path, None)?);
                    }
                    let mut out = Vec::new();
                    for n in parts {
                        out.extend(inspect(&DiskBackend::open(&self.path, Some(n))?)?);
                    }
                    Ok(out)
                }
            },
            ImageKind::Wim => {
                let mut out = Vec::new();
                for s in self.wim_selectors(true)? {
                    out.extend(inspect(&WimBackend::open(&self.path, s)?)?);
                }
                Ok(out)
            }
        }
    }

    /// Generalizes the image as `sysprep /generalize` would: one report per
    /// partition of a disk or per image of a WIM (one for a directory).
    pub fn generalize(&self, options: &GeneralizeOptions) -> Result<Vec<RunReport>> {
        match self.kind {
            ImageKind::Directory => {
                let mut b = DirBackend::open(&self.path)?;
                Ok(vec![generalize(&mut b, options)?])
            }
            ImageKind::Disk(_) => match self.options.partition {
                Some(n) => {
                    let mut b = DiskBackend::open(&self.path, Some(n))?;
                    Ok(vec![generalize(&mut b, options)?])
                }
                None => Ok(generalize_disk(&self.path, options)?
                    .into_iter()
                    .map(|(_, r)| r)
                    .collect()),
            },
            ImageKind::Wim => match &self.options.wim_images {
                WimImages::All => generalize_all_images(
                    &self.path,
                    self.options.output.clone(),
                    self.options.rebuild,
                    options,
                ),
                _ => {
                    let selector = self.wim_selectors(false)?.remove(0);
                    let mut b = WimBackend::open(&self.path, selector)?
                        .with_output(self.options.output.clone())
                        .with_rebuild(self.options.rebuild);
                    Ok(vec![generalize(&mut b, options)?])
                }
            },
        }
    }

    /// Gives this copy its own machine identity in place (see
    /// [`crate::personalize`]); one report per partition of a disk.
    pub fn personalize(&self, options: &PersonalizeOptions) -> Result<Vec<CloneReport>> {
        let options = PersonalizeOptions {
            partition: options.partition.or(self.options.partition),
            ..options.clone()
        };
        personalize(&self.path, Some(self.kind), &options)
    }

    /// Makes personalized clones of this generalized image (see
    /// [`crate::stamp`]); the image is only read.
    pub fn stamp(&self, options: &StampOptions) -> Result<StampReport> {
        let mut options = options.clone();
        options.kind = Some(self.kind);
        stamp(&self.path, &options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_must_fit_the_kind() {
        let dir = tempfile::tempdir().expect("tmp");
        let img = Image::open(dir.path(), &OpenOptions::default()).expect("dir");
        assert_eq!(img.kind(), ImageKind::Directory);
        assert!(Image::open(dir.path(), &OpenOptions::default().partition(1)).is_err());
        assert!(
            Image::open(
                dir.path(),
                &OpenOptions::default().wim_images(WimImages::All)
            )
            .is_err()
        );
        assert!(Image::open(dir.path(), &OpenOptions::default().output("x.wim")).is_err());
        // A directory without Windows: inspect says so.
        let e = img.inspect().expect_err("no install");
        assert!(e.to_string().contains("no Windows installation"), "{e}");
    }
}
