//! Progress bars on standard error, drawn with `indicatif` from the
//! library's progress events (WIM writes, stamping clones).
//!
//! One bar per phase (updating the image, writing data, writing metadata,
//! the integrity table, stamping clones) with its rate and estimated time
//! left; a finished phase stays as one line. With `--index all`, each line
//! starts with the image (`[2/3]`). Bars are drawn only when standard
//! error is a terminal and neither `--json` nor `-q` is given (the hidden
//! `--progress always` draws them on a non-terminal too, for tests);
//! otherwise nothing is printed. Standard output is never touched.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use reseal::progress::{Phase, Progress, ProgressEvent};

/// When to draw the bar (hidden `--progress` flag; tests use `always`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// When standard error is a terminal and neither `--json` nor `-q` is
    /// given.
    Auto,
    /// Unless `--json` or `-q` is given, even when standard error is not
    /// a terminal.
    Always,
    /// Never.
    Never,
}

/// Standard error as a terminal of a fixed width, for `--progress always`
/// on a non-terminal (indicatif draws nothing on those by itself).
struct ForcedStderr;

impl fmt::Debug for ForcedStderr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ForcedStderr")
    }
}

impl ForcedStderr {
    fn put(&self, s: &str) -> std::io::Result<()> {
        std::io::stderr().lock().write_all(s.as_bytes())
    }
}

impl TermLike for ForcedStderr {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}A"))?;
        }
        Ok(())
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}B"))?;
        }
        Ok(())
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}C"))?;
        }
        Ok(())
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}D"))?;
        }
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

struct State {
    /// Draw on standard error even when it is not a terminal.
    forced: bool,
    /// `[i/n] ` when writing one image of several.
    label: String,
    /// The current image's bar, showing its current phase.
    bar: Option<ProgressBar>,
    phase: Option<Phase>,
    /// The phase's counter: `Some(true)` bytes, `Some(false)` steps.
    counted: Option<bool>,
    /// The current bar was drawn: its line is ended when it finishes
    /// (indicatif leaves the cursor after it).
    shown: bool,
}

/// The bars of one command. Dropping it finishes an unfinished bar.
pub struct Bar {
    state: Arc<Mutex<State>>,
}

impl Bar {
    /// The bars for standard error, or `None` when none are to be drawn
    /// (`off`: `--json` or `-q` was given).
    pub fn for_stderr(mode: ProgressMode, off: bool) -> Option<Bar> {
        let draw = !off
            && match mode {
                ProgressMode::Auto => std::io::stderr().is_terminal(),
                ProgressMode::Always => true,
                ProgressMode::Never => false,
            };
        let forced = mode == ProgressMode::Always;
        draw.then(|| Bar {
            state: Arc::new(Mutex::new(State::new(forced))),
        })
    }

    /// A sink for the library that draws on these bars.
    pub fn progress(&self) -> Progress {
        let state = self.state.clone();
        Progress::new(move |e| lock(&state).event(e))
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        lock(&self.state).finish();
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The style of a phase: a spinner until a counter arrives, then a bar
/// with percentage, counts, rate (bytes) and estimated time left.
fn style(counted: Option<bool>) -> ProgressStyle {
    let template = match counted {
        None => "{prefix}{msg:<16} {spinner} {elapsed}",
        Some(true) => {
            "{prefix}{msg:<16} [{bar:20}] {percent:>3}%  {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}"
        }
        Some(false) => "{prefix}{msg:<16} [{bar:20}] {percent:>3}%  {pos}/{len} eta {eta}",
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#>-")
}

impl State {
    fn new(forced: bool) -> State {
        State {
            forced,
            label: String::new(),
            bar: None,
            phase: None,
            counted: None,
            shown: false,
        }
    }

    fn event(&mut self, e: ProgressEvent) {
        match e {
            ProgressEvent::Image { index, count } => {
                self.finish();
                self.label = format!("[{index}/{count}] ");
            }
            ProgressEvent::Begin { phase } => {
                let bar = match &self.bar {
                    Some(b) => b.clone(),
                    None => {
                        let target = if self.forced {
                            ProgressDrawTarget::term_like(Box::new(ForcedStderr))
                        } else {
                            ProgressDrawTarget::stderr()
                        };
                        let b = ProgressBar::with_draw_target(None, target);
                        b.set_prefix(self.label.clone());
                        self.bar = Some(b.clone());
                        self.shown = true;
                        b
                    }
                };
                bar.set_style(style(None));
                bar.set_message(phase.name());
                bar.set_length(0);
                bar.set_position(0);
                bar.reset_eta();
                bar.enable_steady_tick(Duration::from_millis(120));
                self.phase = Some(phase);
                self.counted = None;
            }
            ProgressEvent::Bytes { done, total } => self.count(done, total, true),
            ProgressEvent::Steps { done, total } => self.count(done, total, false),
            ProgressEvent::End { phase } if self.phase == Some(phase) => {
                if let (Some(bar), None) = (&self.bar, self.counted) {
                    bar.disable_steady_tick();
                    bar.set_style(style_done());
                    bar.set_message(format!("{} done", phase.name()));
                }
            }
            _ => {}
        }
    }

    fn count(&mut self, done: u64, total: u64, bytes: bool) {
        let Some(bar) = &self.bar else {
            return;
        };
        if self.counted != Some(bytes) {
            bar.disable_steady_tick();
            bar.set_style(style(Some(bytes)));
            self.counted = Some(bytes);
        }
        bar.set_length(total);
        bar.set_position(done.min(total));
    }

    /// Finishes the current image's bar, leaving its last line.
    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.disable_steady_tick();
            if self.counted.is_none() {
                let name = self.phase.map(Phase::name).unwrap_or_default();
                bar.set_style(style_done());
                bar.finish_with_message(format!("{name} done"));
            } else {
                bar.finish();
            }
            if std::mem::take(&mut self.shown) {
                let _ = writeln!(std::io::stderr());
            }
        }
        self.phase = None;
        self.counted = None;
    }
}

/// The line of a phase without counter once it ended.
fn style_done() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}{msg}").unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// The spinner of the run in progress, if one is drawn: the tracing
/// layer [`PhaseLayer`] names the current phase on it.
static PHASES: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A spinner on standard error that names the phase a run is in (loading
/// hives, preflight, planning, applying, committing: the library's
/// `tracing` spans), with the time spent, for the steps that report no
/// counter (directories, disk images, personalize). Cleared when dropped.
pub struct PhaseSpinner {
    bar: ProgressBar,
}

impl PhaseSpinner {
    /// The spinner, or `None` when none is to be drawn (same rules as
    /// [`Bar::for_stderr`]).
    pub fn for_stderr(mode: ProgressMode, off: bool, what: &str) -> Option<PhaseSpinner> {
        Bar::for_stderr(mode, off)?;
        let target = if mode == ProgressMode::Always {
            ProgressDrawTarget::term_like(Box::new(ForcedStderr))
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{prefix}: {msg} {spinner} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(what.to_string());
        bar.set_message("starting");
        bar.enable_steady_tick(Duration::from_millis(120));
        *lock_phases() = Some(bar.clone());
        Some(PhaseSpinner { bar })
    }
}

impl Drop for PhaseSpinner {
    fn drop(&mut self) {
        lock_phases().take();
        self.bar.finish_and_clear();
    }
}

fn lock_phases() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    PHASES.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `tracing` layer that shows each phase (an info span being entered)
/// on the [`PhaseSpinner`], when one is drawn.
pub struct PhaseLayer;

impl<S> tracing_subscriber::Layer<S> for PhaseLayer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_enter(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        if *span.metadata().level() > tracing::Level::INFO {
            return;
        }
        if let Some(bar) = lock_phases().as_ref() {
            bar.set_message(span.metadata().name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_quiet_or_never_draws_nothing() {
        assert!(Bar::for_stderr(ProgressMode::Always, true).is_none());
        assert!(Bar::for_stderr(ProgressMode::Auto, true).is_none());
        assert!(Bar::for_stderr(ProgressMode::Never, false).is_none());
        assert!(Bar::for_stderr(ProgressMode::Always, false).is_some());
    }

    #[test]
    fn one_bar_per_image_follows_its_phases() {
        let mut st = State::new(false);
        st.event(ProgressEvent::Begin {
            phase: Phase::WriteData,
        });
        let bar = st.bar.clone().unwrap();
        st.event(ProgressEvent::Bytes {
            done: 512,
            total: 2048,
        });
        assert_eq!((bar.position(), bar.length()), (512, Some(2048)));
        // done never passes total on screen.
        st.event(ProgressEvent::Bytes {
            done: 4096,
            total: 2048,
        });
        assert_eq!(bar.position(), 2048);
        st.event(ProgressEvent::End {
            phase: Phase::WriteData,
        });
        // The next phase reuses the image's line.
        st.event(ProgressEvent::Begin {
            phase: Phase::WriteMetadata,
        });
        assert_eq!(bar.message(), "writing metadata");
        st.event(ProgressEvent::End {
            phase: Phase::WriteMetadata,
        });
        assert_eq!(bar.message(), "writing metadata done");
        st.event(ProgressEvent::Image { index: 2, count: 2 });
        assert!(bar.is_finished());
        st.event(ProgressEvent::Begin {
            phase: Phase::WriteData,
        });
        assert_eq!(st.bar.as_ref().unwrap().prefix(), "[2/2] ");
    }
}
