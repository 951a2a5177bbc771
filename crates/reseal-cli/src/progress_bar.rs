//! The progress bar of `reseal generalize` on standard error.
//!
//! One line per phase of a write (updating the image, writing data,
//! writing metadata, the integrity table), redrawn in place with `\r` while
//! the phase runs and ended with a newline when it ends; with `--index
//! all`, each line starts with the image (`[2/3]`). The bar is drawn only
//! when standard error is a terminal and `--json` is not given; otherwise
//! nothing is printed (no plain per-phase lines either, so that logs and
//! pipelines see standard error exactly as without progress). Standard
//! output is never touched.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reseal::progress::{Phase, Progress, ProgressEvent};

/// When to draw the bar (hidden `--progress` flag; tests use `always`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// When standard error is a terminal and `--json` is not given.
    Auto,
    /// Unless `--json` is given, even when standard error is not a
    /// terminal.
    Always,
    /// Never.
    Never,
}

/// Width of the bar itself, in characters.
const BAR_WIDTH: usize = 20;
/// Counters arriving faster than this are not all drawn.
const REDRAW_EVERY: Duration = Duration::from_millis(80);

struct State {
    out: Box<dyn Write + Send>,
    /// `[i/n] ` when writing one image of several.
    label: String,
    phase: Option<Phase>,
    /// The last counter of the phase: done, total, counted in steps.
    count: Option<(u64, u64, bool)>,
    last_draw: Option<Instant>,
    /// Characters on the current line (to blank out a longer old line).
    line_len: usize,
    line_open: bool,
    /// The last counter has not been drawn yet (rate limit).
    dirty: bool,
}

/// A progress bar drawn on a writer (standard error). Dropping it ends an
/// unfinished line.
pub struct Bar {
    state: Arc<Mutex<State>>,
}

impl Bar {
    /// The bar for standard error, or `None` when none is to be drawn.
    pub fn for_stderr(mode: ProgressMode, json: bool) -> Option<Bar> {
        let draw = !json
            && match mode {
                ProgressMode::Auto => std::io::stderr().is_terminal(),
                ProgressMode::Always => true,
                ProgressMode::Never => false,
            };
        draw.then(|| Bar::new(Box::new(std::io::stderr())))
    }

    fn new(out: Box<dyn Write + Send>) -> Bar {
        Bar {
            state: Arc::new(Mutex::new(State {
                out,
                label: String::new(),
                phase: None,
                count: None,
                last_draw: None,
                line_len: 0,
                line_open: false,
                dirty: false,
            })),
        }
    }

    /// A sink for the library that draws on this bar.
    pub fn progress(&self) -> Progress {
        let state = self.state.clone();
        Progress::new(move |e| lock(&state).event(e))
    }

    /// Ends the current line, if one is open.
    pub fn finish(&self) {
        lock(&self.state).close_line();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl State {
    fn event(&mut self, e: ProgressEvent) {
        match e {
            ProgressEvent::Image { index, count } => {
                self.close_line();
                self.label = format!("[{index}/{count}] ");
            }
            ProgressEvent::Begin { phase } => {
                self.close_line();
                self.phase = Some(phase);
                self.count = None;
                self.draw(false);
            }
            ProgressEvent::Bytes { done, total } => self.count(done, total, false),
            ProgressEvent::Steps { done, total } => self.count(done, total, true),
            ProgressEvent::End { phase } if self.phase == Some(phase) => {
                // A counted phase already shows its last counter.
                if self.count.is_none() {
                    self.draw(true);
                }
                self.close_line();
            }
            _ => {}
        }
    }

    fn count(&mut self, done: u64, total: u64, steps: bool) {
        let first = self.count.is_none();
        self.count = Some((done, total, steps));
        self.dirty = true;
        let due =
            first || done >= total || self.last_draw.is_none_or(|t| t.elapsed() >= REDRAW_EVERY);
        if due {
            self.draw(false);
        }
    }

    /// Redraws the current line; `end`: the phase is over.
    fn draw(&mut self, end: bool) {
        let Some(phase) = self.phase else {
            return;
        };
        let line = render(&self.label, phase, self.count, end);
        let len = line.chars().count();
        let pad = self.line_len.saturating_sub(len);
        let _ = write!(self.out, "\r{line}{:pad$}", "");
        let _ = self.out.flush();
        self.line_len = len;
        self.line_open = true;
        self.dirty = false;
        self.last_draw = Some(Instant::now());
    }

    fn close_line(&mut self) {
        if self.dirty {
            self.draw(false);
        }
        if self.line_open {
            let _ = writeln!(self.out);
            let _ = self.out.flush();
        }
        self.line_open = false;
        self.line_len = 0;
        self.phase = None;
        self.count = None;
        self.last_draw = None;
        self.dirty = false;
    }
}

/// One line: label, phase, and the bar with its numbers when the phase
/// has a counter (`...`/`done` otherwise).
fn render(label: &str, phase: Phase, count: Option<(u64, u64, bool)>, end: bool) -> String {
    let name = phase.name();
    let Some((done, total, steps)) = count else {
        return format!("{label}{name:<16} {}", if end { "done" } else { "..." });
    };
    let frac = if total == 0 {
        1.0
    } else {
        (done.min(total) as f64) / (total as f64)
    };
    let filled = ((frac * BAR_WIDTH as f64).floor() as usize).min(BAR_WIDTH);
    let bar = format!("{}{}", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled));
    let pct = (frac * 100.0).floor() as u32;
    let numbers = if steps {
        format!("{done}/{total}")
    } else {
        bytes_pair(done, total)
    };
    format!("{label}{name:<16} [{bar}] {pct:>3}%  {numbers}")
}

/// `done/total unit` with the unit of `total` (B, KiB, MiB, GiB).
fn bytes_pair(done: u64, total: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if total < 1024 {
        return format!("{done}/{total} B");
    }
    let mut div = 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if (total as f64) < div * 1024.0 {
            break;
        }
        div *= 1024.0;
        unit = u;
    }
    format!("{:.1}/{:.1} {unit}", done as f64 / div, total as f64 / div)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes the test can read back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn drawn(events: &[ProgressEvent]) -> String {
        let buf = Buf::default();
        {
            let bar = Bar::new(Box::new(buf.clone()));
            let p = bar.progress();
            for e in events {
                p.emit(*e);
            }
        }
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    /// What the terminal shows: each line as left by its last `\r`.
    fn screen(s: &str) -> Vec<String> {
        s.lines()
            .map(|l| l.rsplit('\r').next().unwrap().trim_end().to_string())
            .collect()
    }

    #[test]
    fn one_line_per_phase_ending_full() {
        use Phase::*;
        use ProgressEvent::*;
        let out = drawn(&[
            Image { index: 2, count: 3 },
            Begin { phase: UpdateImage },
            Steps { done: 0, total: 4 },
            Steps { done: 4, total: 4 },
            End { phase: UpdateImage },
            Begin { phase: WriteData },
            Bytes {
                done: 0,
                total: 3 << 20,
            },
            Bytes {
                done: 3 << 20,
                total: 3 << 20,
            },
            End { phase: WriteData },
            Begin {
                phase: WriteMetadata,
            },
            End {
                phase: WriteMetadata,
            },
        ]);
        assert!(out.contains('\r'), "{out:?}");
        assert!(out.ends_with('\n'), "{out:?}");
        assert_eq!(
            screen(&out),
            [
                format!("[2/3] updating image   [{}] 100%  4/4", "#".repeat(20)),
                format!(
                    "[2/3] writing data     [{}] 100%  3.0/3.0 MiB",
                    "#".repeat(20)
                ),
                "[2/3] writing metadata done".to_string(),
            ]
        );
    }

    #[test]
    fn an_unfinished_line_is_ended_on_drop() {
        let out = drawn(&[
            ProgressEvent::Begin {
                phase: Phase::WriteData,
            },
            ProgressEvent::Bytes {
                done: 256,
                total: 2048,
            },
            ProgressEvent::Bytes {
                done: 512,
                total: 2048,
            },
        ]);
        assert!(out.ends_with('\n'), "{out:?}");
        let s = screen(&out);
        assert_eq!(s.len(), 1);
        assert!(s[0].contains(" 25%  0.5/2.0 KiB"), "{s:?}");
    }

    #[test]
    fn byte_units_follow_the_total() {
        assert_eq!(bytes_pair(10, 100), "10/100 B");
        assert_eq!(bytes_pair(512, 2048), "0.5/2.0 KiB");
        assert_eq!(bytes_pair(1 << 30, 3 << 30), "1.0/3.0 GiB");
    }

    #[test]
    fn json_or_never_draws_nothing() {
        assert!(Bar::for_stderr(ProgressMode::Always, true).is_none());
        assert!(Bar::for_stderr(ProgressMode::Auto, true).is_none());
        assert!(Bar::for_stderr(ProgressMode::Never, false).is_none());
        assert!(Bar::for_stderr(ProgressMode::Always, false).is_some());
    }
}
