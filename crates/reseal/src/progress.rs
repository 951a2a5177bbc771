//! Progress of long-running work (today: writing a WIM), as a stream of
//! [`ProgressEvent`]s delivered to a [`Progress`] sink.
//!
//! A sink is any `Fn(ProgressEvent) + Send + Sync` wrapped in a
//! [`Progress`]; it is cheap to clone and is given to a backend (for
//! example [`WimBackend::set_progress`](crate::backend::wim::WimBackend::set_progress)).
//! No sink is set by default, and then nothing is reported.
//!
//! The events of one operation form phases: a [`ProgressEvent::Begin`], any
//! number of [`ProgressEvent::Bytes`] or [`ProgressEvent::Steps`] counters
//! that belong to that phase, then a [`ProgressEvent::End`] for the same
//! phase (also when the operation fails). Phases do not nest; a phase may
//! occur more than once (for example metadata is written once per image).
//! Within a phase, `done` never decreases and never exceeds `total`;
//! `total` is an estimate that may shrink while the phase runs (wimlib
//! lowers it when it finds duplicate data).
//!
//! The sink is called on the thread doing the work, while the backend is
//! busy: it should return quickly (draw, record, forward to a channel). A
//! panic in the sink is caught; the sink is then not called again for the
//! rest of that operation.

use std::fmt;
use std::sync::Arc;

/// A stage of a long-running operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Phase {
    /// Applying the changes to the image in memory (counted in update
    /// commands, through [`ProgressEvent::Steps`]).
    UpdateImage,
    /// Writing file data (counted in uncompressed bytes).
    WriteData,
    /// Writing an image's metadata (no counter).
    WriteMetadata,
    /// Computing the integrity table of the file written (counted in bytes
    /// of the file).
    CalcIntegrity,
    /// Checking a file against its integrity table (counted in bytes of
    /// the file).
    VerifyIntegrity,
    /// Making the clones of `reseal stamp` (counted in clones finished).
    Stamp,
}

impl Phase {
    /// A short lower-case description, e.g. `"writing data"`.
    pub fn name(self) -> &'static str {
        match self {
            Phase::UpdateImage => "updating image",
            Phase::WriteData => "writing data",
            Phase::WriteMetadata => "writing metadata",
            Phase::CalcIntegrity => "integrity table",
            Phase::VerifyIntegrity => "verifying integrity",
            Phase::Stamp => "stamping clones",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One progress report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// The work that follows concerns image `index` of `count` (when a
    /// multi-image file is processed image after image).
    Image {
        /// 1-based image index.
        index: u32,
        /// Number of images in the file.
        count: u32,
    },
    /// A phase begins.
    Begin {
        /// The phase.
        phase: Phase,
    },
    /// Bytes processed so far in the current phase.
    Bytes {
        /// Bytes done (`done <= total`).
        done: u64,
        /// Bytes the phase is expected to process.
        total: u64,
    },
    /// Steps (for example update commands) done so far in the current
    /// phase.
    Steps {
        /// Steps done (`done <= total`).
        done: u64,
        /// Steps in the phase.
        total: u64,
    },
    /// The phase ended (successfully or not).
    End {
        /// The phase.
        phase: Phase,
    },
}

/// A progress sink: a shared callback that receives [`ProgressEvent`]s.
///
/// ```
/// use reseal::progress::{Progress, ProgressEvent};
/// let p = Progress::new(|e: ProgressEvent| {
///     if let ProgressEvent::Bytes { done, total } = e {
///         eprintln!("{done}/{total}");
///     }
/// });
/// p.emit(ProgressEvent::Bytes { done: 1, total: 2 });
/// ```
#[derive(Clone)]
pub struct Progress(Arc<dyn Fn(ProgressEvent) + Send + Sync>);

impl Progress {
    /// Wraps a callback.
    pub fn new(f: impl Fn(ProgressEvent) + Send + Sync + 'static) -> Progress {
        Progress(Arc::new(f))
    }

    /// Delivers one event to the callback.
    pub fn emit(&self, event: ProgressEvent) {
        (self.0)(event)
    }
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Progress(..)")
    }
}
