//! Library-level end-to-end evidence for `generalize` on a directory root:
//! an injected failure at every step of a real commit leaves the root
//! byte-identical; a dry run changes nothing; a second run plans nothing,
//! and no operation plans anything on a generalized root.

use std::path::{Path, PathBuf};

use reseal::ResealError;
use reseal::backend::dir::DirBackend;
use reseal::context::PlanContext;
use reseal::discover::{find_windows_dirs, load_install};
use reseal::generalize::generalize;
use reseal::options::GeneralizeOptions;
use reseal::report::Outcome;
use reseal_testkit::{Snapshot, build_windows_root, snapshot_diff};

/// Copies a tree (see `reseal_testkit::copy_tree`).
fn copy_tree(from: &Path, to: &Path) {
    reseal_testkit::copy_tree(from, to).unwrap();
}

fn snapshot(root: &Path) -> Snapshot {
    reseal_testkit::snapshot(root).unwrap()
}

fn diff(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    snapshot_diff(before, after)
}

fn synthetic_root(tmp: &Path) -> PathBuf {
    let root = tmp.join("pristine");
    build_windows_root(&root, None).unwrap();
    root
}

fn oobe() -> GeneralizeOptions {
    GeneralizeOptions::default()
}

/// A failure injected at each primitive step of the commit of a real
/// generalize run makes the run fail with `CommitFailed` and leaves the root
/// byte-identical (paths, bytes, modes, directory set). The step count is
/// exact: failing at the step just past the last one does not fail.
#[test]
fn injected_failure_at_every_commit_step_leaves_the_root_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let pristine = synthetic_root(tmp.path());
    let before = snapshot(&pristine);

    // A successful run on a copy gives the number of steps.
    let ok = tmp.path().join("ok");
    copy_tree(&pristine, &ok);
    let mut b = DirBackend::open(&ok).unwrap();
    let report = generalize(&mut b, &oobe()).unwrap();
    assert_eq!(report.outcome, Outcome::Done);
    let steps = b.last_commit_steps();
    let changes: usize = report.installs.iter().map(|i| i.files_changed).sum();
    assert!(
        steps > changes,
        "{steps} steps for {changes} changes: the commit counts too few steps"
    );

    // One work copy: a failed commit must restore it exactly, so it starts
    // each iteration identical to the pristine root (checked every time).
    let work = tmp.path().join("work");
    copy_tree(&pristine, &work);
    for n in 0..steps {
        let mut b = DirBackend::open(&work).unwrap();
        b.set_fail_after(Some(n));
        let err = generalize(&mut b, &oobe()).expect_err(&format!("step {n}: the run succeeded"));
        match &err {
            ResealError::CommitFailed { message, .. } => {
                assert!(
                    message.contains("injected failure"),
                    "step {n}: not the injected failure: {err}"
                );
                assert!(
                    !message.contains("ROLLBACK INCOMPLETE"),
                    "step {n}: rollback incomplete: {err}"
                );
            }
            other => panic!("step {n}: expected CommitFailed, got {other}"),
        }
        assert_eq!(
            b.last_commit_steps(),
            n + 1,
            "step {n}: stopped at the failure"
        );
        let d = diff(&before, &snapshot(&work));
        assert!(d.is_empty(), "failure at step {n} of {steps} left: {d:#?}");
    }

    // Failing "after" the last step is no failure. (The result is not
    // compared with the first run's: `machine-sid` draws a new SID each run.)
    let mut b = DirBackend::open(&work).unwrap();
    b.set_fail_after(Some(steps));
    generalize(&mut b, &oobe()).unwrap();
    assert_eq!(b.last_commit_steps(), steps);
    assert!(!diff(&before, &snapshot(&work)).is_empty());
}

/// The edits of a report as JSON texts, with the new machine SID (drawn at
/// random by `machine-sid` each run) replaced by a placeholder.
fn normalized_edits(report: &reseal::report::RunReport) -> Vec<String> {
    let edits = serde_json::to_value(&report.installs[0].edits).unwrap();
    let new_sid = edits
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["edit"]["new"].as_str().map(str::to_string));
    edits
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let t = e.to_string();
            match &new_sid {
                Some(sid) => t.replace(sid.as_str(), "<new machine SID>"),
                None => t,
            }
        })
        .collect()
}

/// A dry run plans what the real run does and changes nothing; after the
/// real run, a second run plans nothing and changes nothing, and no
/// operation, asked directly, plans an edit on the generalized root (so the
/// nothing-to-do outcome is not only the already-generalized short cut).
#[test]
fn dry_run_changes_nothing_and_a_second_run_plans_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = synthetic_root(tmp.path());
    let before = snapshot(&root);

    let mut b = DirBackend::open(&root).unwrap();
    let dry = generalize(
        &mut b,
        &GeneralizeOptions {
            dry_run: true,
            ..oobe()
        },
    )
    .unwrap();
    assert_eq!(dry.outcome, Outcome::Done);
    assert!(dry.dry_run);
    let planned: usize = dry.installs.iter().map(|i| i.edits.len()).sum();
    assert!(planned > 0, "the dry run plans edits");
    for i in &dry.installs {
        assert!(i.hives_written.is_empty() && i.files_changed == 0);
    }
    let d = diff(&before, &snapshot(&root));
    assert!(d.is_empty(), "--dry-run changed the tree: {d:#?}");

    let real = generalize(&mut b, &oobe()).unwrap();
    assert_eq!(real.outcome, Outcome::Done);
    let (real_edits, dry_edits) = (normalized_edits(&real), normalized_edits(&dry));
    assert_eq!(real_edits.len(), dry_edits.len(), "edit counts differ");
    for (r, d) in real_edits.iter().zip(&dry_edits) {
        assert_eq!(r, d, "the dry run plans exactly the real run's edits");
    }
    let generalized = snapshot(&root);
    assert!(!diff(&before, &generalized).is_empty());

    // Second run, through a fresh backend as a new process would.
    let mut b = DirBackend::open(&root).unwrap();
    let again = generalize(&mut b, &oobe()).unwrap();
    assert_eq!(again.outcome, Outcome::NothingToDo);
    assert!(again.installs.iter().all(|i| i.edits.is_empty()));
    assert!(again.installs.iter().all(|i| i.already_generalized));
    let d = diff(&generalized, &snapshot(&root));
    assert!(d.is_empty(), "the second run changed the tree: {d:#?}");

    // Each default operation on its own plans nothing on the result.
    let options = oobe();
    for dir in find_windows_dirs(&b).unwrap() {
        let install = load_install(&b, &dir);
        assert!(install.load_errors.is_empty(), "{:?}", install.load_errors);
        let ctx = PlanContext {
            install: &install,
            backend: &b,
            options: &options,
            unattend: None,
        };
        // `machine-sid` draws a fresh SID on every plan by design (as
        // sysprep does on every generalize); the run-level check above
        // covers it through the already-generalized state.
        for op in reseal::ops::all()
            .into_iter()
            .filter(|o| o.default_enabled() && o.name() != "machine-sid")
        {
            let plan = op.plan(&ctx).unwrap();
            let left: Vec<String> = plan.edits.iter().map(|e| format!("{e:?}")).collect();
            assert!(
                left.is_empty(),
                "{} plans edits on a generalized root: {left:#?}",
                op.name()
            );
        }
    }
}
