//! reseal: generalize captured Windows installations offline, as
//! `sysprep /generalize` would, and give each deployed copy its own
//! machine identity.
//!
//! Start at [`Image`]: it recognises what a path holds (a directory root,
//! a WIM/ESD, a raw, VHD, VHDX, qcow2 or VMDK disk image) and runs
//! [`inspect`](Image::inspect), [`generalize`](Image::generalize),
//! [`personalize`](Image::personalize) and [`stamp`](Image::stamp) on it.
//!
//! ```no_run
//! use reseal::{Image, OpenOptions};
//! use reseal::options::GeneralizeOptions;
//! let image = Image::open("install.wim", &OpenOptions::default())?;
//! let reports = image.generalize(&GeneralizeOptions::default())?;
//! for r in &reports {
//!     print!("{}", r.to_text());
//! }
//! # Ok::<(), reseal::ResealError>(())
//! ```
//!
//! The flow of one run: open an image through a [`backend`], find the
//! Windows installs in it ([`install`]), load their hives ([`hives`]),
//! run the [`preflight`] checks, let each enabled operation ([`ops`]) plan
//! its [`edit`]s, apply them to the in-memory hives and staged files, check
//! every touched hive, commit through the backend, and [`report`].
//!
//! The registry engine is [`reseal_hive`], re-exported as [`hive`].
// Only the wimlib and libntfs-3g bindings (backend::wim::ffi, ntfs3g::ffi)
// may use unsafe code.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod answer_edit;
pub mod apply;
pub mod backend;
pub mod context;
pub mod describe;
pub mod discover;
pub mod disk;
pub mod edit;
pub mod error;
pub mod generalize;
pub mod hives;
pub mod image;
pub mod install;
pub mod lock;
pub mod marker;
pub mod ntfs3g;
pub mod open;
pub mod ops;
pub mod options;
pub mod personalize;
pub mod preflight;
pub mod progress;
pub mod report;
pub mod space;
pub mod stamp;
pub mod unattend;

pub use error::{ResealError, Result};
pub use open::{Image, OpenOptions, WimImages};
pub use reseal_hive as hive;
