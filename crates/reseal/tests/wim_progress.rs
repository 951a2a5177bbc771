//! Progress of WIM commits: a fixture WIM is generalized with a recording
//! progress sink (in place by appending, to a new file, rebuilt, with an
//! integrity table, every image of a two-image WIM), and the events are
//! checked for sanity. Values read through a wrong layout of wimlib's
//! progress structures would show up here as counters that jump around,
//! exceed their totals or never finish. Skipped with a notice when
//! wimlib-imagex is absent.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use reseal::backend::wim::{ImageSelector, WimBackend, generalize_all_images_with_progress};
use reseal::generalize::generalize;
use reseal::options::GeneralizeOptions;
use reseal::progress::{Phase, Progress, ProgressEvent};
use reseal::report::Outcome;
use reseal_testkit::{build_wims, build_windows_root};

fn have_wimlib_imagex() -> bool {
    reseal_testkit::require_tool("wimlib-imagex")
}

fn imagex(args: &[&str]) {
    let o = Command::new("wimlib-imagex").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "wimlib-imagex {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn options() -> GeneralizeOptions {
    GeneralizeOptions {
        seed: Some(7),
        ..GeneralizeOptions::default()
    }
}

/// A synthetic Windows root under `tmp`.
fn root(tmp: &Path) -> PathBuf {
    let root = tmp.join("root");
    build_windows_root(&root, None).unwrap();
    root
}

/// The root captured into a one-image WIM (`extra`: more capture flags).
fn capture(tmp: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let wim = tmp.join(name);
    let r = root(tmp);
    let mut args = vec![
        "capture",
        r.to_str().unwrap(),
        wim.to_str().unwrap(),
        "Windows 10 Pro",
    ];
    args.extend_from_slice(extra);
    imagex(&args);
    wim
}

/// A sink that records every event.
fn recorder() -> (Progress, Arc<Mutex<Vec<ProgressEvent>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (Progress::new(move |e| s.lock().unwrap().push(e)), seen)
}

/// One occurrence of a phase and the counters it reported.
#[derive(Debug)]
struct Run {
    phase: Phase,
    counts: Vec<(u64, u64)>,
}

/// Checks the shape of an event stream and returns its phases in order:
/// every phase begins and ends in pairs, without nesting; counters occur
/// only inside a phase, of the kind the phase uses; within a phase `done`
/// never decreases and never exceeds `total`, and a counted phase ends
/// with `done == total`.
fn phases(events: &[ProgressEvent]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let mut open: Option<Phase> = None;
    for (n, e) in events.iter().enumerate() {
        let at = || format!("event {n} of {events:#?}");
        match *e {
            ProgressEvent::Image { .. } => assert_eq!(open, None, "{}", at()),
            ProgressEvent::Begin { phase } => {
                assert_eq!(open, None, "nested phase: {}", at());
                open = Some(phase);
                runs.push(Run {
                    phase,
                    counts: vec![],
                });
            }
            ProgressEvent::End { phase } => {
                assert_eq!(open, Some(phase), "unpaired end: {}", at());
                open = None;
            }
            ProgressEvent::Bytes { done, total } | ProgressEvent::Steps { done, total } => {
                let phase = open.unwrap_or_else(|| panic!("counter outside a phase: {}", at()));
                let steps = matches!(e, ProgressEvent::Steps { .. });
                assert_eq!(steps, phase == Phase::UpdateImage, "{}", at());
                assert!(done <= total, "done > total: {}", at());
                let run = runs.last_mut().unwrap();
                if let Some(&(prev, _)) = run.counts.last() {
                    assert!(done >= prev, "done decreased: {}", at());
                }
                run.counts.push((done, total));
            }
            _ => panic!("unexpected event {e:?}"),
        }
    }
    assert_eq!(open, None, "a phase never ended: {events:#?}");
    for r in &runs {
        match r.phase {
            Phase::WriteMetadata => assert!(r.counts.is_empty(), "{r:?}"),
            _ => {
                let &(done, total) = r
                    .counts
                    .last()
                    .unwrap_or_else(|| panic!("no counter in {r:?}"));
                assert_eq!(done, total, "{r:?} did not finish");
            }
        }
    }
    runs
}

fn names(runs: &[Run]) -> Vec<Phase> {
    runs.iter().map(|r| r.phase).collect()
}

/// Generalizes image 1 of `wim` through a backend set up by `setup`, with
/// a recording sink; checks the WIM written to `written` and returns the
/// events.
fn run(
    wim: &Path,
    written: &Path,
    setup: impl FnOnce(WimBackend) -> WimBackend,
) -> Vec<ProgressEvent> {
    let (sink, seen) = recorder();
    let mut b = setup(WimBackend::open(wim, ImageSelector::Index(1)).unwrap());
    b.set_progress(Some(sink));
    let report = generalize(&mut b, &options()).unwrap();
    assert_eq!(report.outcome, Outcome::Done);
    imagex(&["verify", written.to_str().unwrap()]);
    seen.lock().unwrap().clone()
}

/// The update phase counts the update commands; the data phase writes at
/// least the new hive contents, one file at a time.
fn assert_common(runs: &[Run]) {
    let update = runs
        .iter()
        .find(|r| r.phase == Phase::UpdateImage)
        .expect("an update phase");
    let &(done, total) = update.counts.last().unwrap();
    assert!(total > 0 && done == total, "{update:?}");
    assert!(
        update.counts.first().unwrap().0 < total,
        "the first step is reported before the last: {update:?}"
    );
    let data: Vec<&Run> = runs
        .iter()
        .filter(|r| r.phase == Phase::WriteData)
        .collect();
    assert!(!data.is_empty(), "no write-data phase: {runs:?}");
    let counts: usize = data.iter().map(|r| r.counts.len()).sum();
    assert!(counts >= 1, "{data:?}");
    let written: u64 = data.iter().map(|r| r.counts.last().unwrap().1).sum();
    // SYSTEM, SOFTWARE and the other rewritten hives: at least 8 KiB each.
    assert!(written >= 8192, "{data:?}");
    assert!(runs.iter().any(|r| r.phase == Phase::WriteMetadata));
}

#[test]
fn appending_in_place_reports_update_and_write_phases() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wim = capture(tmp.path(), "image.wim", &[]);
    let events = run(&wim, &wim, |b| b);
    let runs = phases(&events);
    assert_common(&runs);
    assert!(
        !names(&runs).contains(&Phase::CalcIntegrity),
        "no integrity table was asked for: {runs:?}"
    );
    // Appending writes the new data only: far less than the image holds.
    let data = runs.iter().find(|r| r.phase == Phase::WriteData).unwrap();
    assert!(data.counts.len() >= 2, "{data:?}");
}

/// Total of the final write-data counters.
fn data_total(runs: &[Run]) -> u64 {
    runs.iter()
        .filter(|r| r.phase == Phase::WriteData)
        .map(|r| r.counts.last().unwrap().1)
        .sum()
}

/// Writing to a new file copies every blob of the image, so its counters
/// cover more than an append of the same changes, which writes the new
/// blobs only.
#[test]
fn writing_a_new_file_counts_all_the_data() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wim = capture(tmp.path(), "image.wim", &[]);
    let copy = tmp.path().join("copy.wim");
    std::fs::copy(&wim, &copy).unwrap();
    let out = tmp.path().join("out.wim");
    let before = std::fs::read(&wim).unwrap();
    let events = run(&wim, &out, |b| b.with_output(Some(out.clone())));
    assert_eq!(std::fs::read(&wim).unwrap(), before, "input changed");
    let runs = phases(&events);
    assert_common(&runs);
    let appended = phases(&run(&copy, &copy, |b| b));
    assert!(
        data_total(&runs) > data_total(&appended),
        "new file: {runs:?}\nappend: {appended:?}"
    );
}

/// A WIM with an integrity table gets a new one, reported as its own
/// counted phase after the data.
#[test]
fn an_integrity_table_is_reported() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wim = capture(tmp.path(), "image.wim", &["--check"]);
    let events = run(&wim, &wim, |b| b);
    let runs = phases(&events);
    assert_common(&runs);
    let n = names(&runs);
    let integrity = n
        .iter()
        .position(|p| *p == Phase::CalcIntegrity)
        .unwrap_or_else(|| panic!("no integrity phase: {runs:?}"));
    let data = n.iter().position(|p| *p == Phase::WriteData).unwrap();
    assert!(data < integrity, "{n:?}");
    let r = &runs[integrity];
    let &(done, total) = r.counts.last().unwrap();
    // The integrity table covers the file from the end of the header.
    let len = std::fs::metadata(&wim).unwrap().len();
    assert!(done == total && total > 0 && total < len, "{r:?} ({len})");
}

/// `--rebuild`: the whole WIM is rewritten to a temporary file.
#[test]
fn rebuilding_reports_the_whole_write() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wim = capture(tmp.path(), "image.wim", &[]);
    let events = run(&wim, &wim, |b| b.with_rebuild(true));
    assert_common(&phases(&events));
}

/// No sink: nothing is reported, and the commit works as before.
#[test]
fn without_a_sink_nothing_is_reported() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wim = capture(tmp.path(), "image.wim", &[]);
    let (sink, seen) = recorder();
    let mut b = WimBackend::open(&wim, ImageSelector::Index(1))
        .unwrap()
        .with_progress(Some(sink));
    b.set_progress(None);
    let report = generalize(&mut b, &options()).unwrap();
    assert_eq!(report.outcome, Outcome::Done);
    assert!(seen.lock().unwrap().is_empty());
}

/// A sink that panics does not break the commit.
#[test]
fn a_panicking_sink_does_not_break_the_commit() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wim = capture(tmp.path(), "image.wim", &[]);
    let mut b = WimBackend::open(&wim, ImageSelector::Index(1)).unwrap();
    b.set_progress(Some(Progress::new(|_| panic!("sink failure"))));
    let report = generalize(&mut b, &options()).unwrap();
    assert_eq!(report.outcome, Outcome::Done);
    imagex(&["verify", wim.to_str().unwrap()]);
}

/// `--index all`: each written image is announced, then its phases.
#[test]
fn every_image_is_announced_before_its_phases() {
    if !have_wimlib_imagex() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wims = build_wims(&root(tmp.path()), &tmp.path().join("wim")).unwrap();
    let two = wims
        .iter()
        .find(|p| p.ends_with("windows-two-images.wim"))
        .unwrap();
    let (sink, seen) = recorder();
    let reports =
        generalize_all_images_with_progress(two, None, false, &options(), Some(sink)).unwrap();
    assert_eq!(reports.len(), 2);
    imagex(&["verify", two.to_str().unwrap()]);
    let events = seen.lock().unwrap().clone();
    phases(&events);
    let images: Vec<(usize, u32, u32)> = events
        .iter()
        .enumerate()
        .filter_map(|(n, e)| match *e {
            ProgressEvent::Image { index, count } => Some((n, index, count)),
            _ => None,
        })
        .collect();
    assert_eq!(
        images.iter().map(|i| (i.1, i.2)).collect::<Vec<_>>(),
        [(1, 2), (2, 2)],
        "{events:#?}"
    );
    for (k, &(n, _, _)) in images.iter().enumerate() {
        let end = images.get(k + 1).map_or(events.len(), |i| i.0);
        let runs = phases(&events[n + 1..end]);
        assert_common(&runs);
    }
}
