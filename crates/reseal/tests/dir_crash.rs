//! A generalize run on a directory root killed at steps spread over its
//! commit: the next open rolls it back (the tree is byte-identical to the
//! snapshot taken before) or, after its last step, forward; a re-run then
//! generalizes, and hivexregedit finds the same new machine SID in SAM,
//! SECURITY and SOFTWARE and the old one in none.

use std::path::Path;
use std::process::Command;

use reseal::backend::dir::{DirBackend, Recovery};
use reseal::generalize::generalize;
use reseal::options::GeneralizeOptions;
use reseal_testkit::{
    SAMPLE_MACHINE_SID, build_windows_root, copy_tree, require_tool, snapshot, snapshot_diff,
};

fn seeded(seed: u64) -> GeneralizeOptions {
    GeneralizeOptions {
        seed: Some(seed),
        ..GeneralizeOptions::default()
    }
}

/// The sub-authorities after S-1-5-21 as the little-endian hex bytes
/// hivexregedit prints (`xx,xx,...`), and the SID as text.
fn needles(sid: &str) -> (String, String) {
    let subs: Vec<u32> = sid
        .trim_start_matches("S-1-5-21-")
        .split('-')
        .map(|x| x.parse().unwrap())
        .collect();
    let hex = subs
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(",");
    (hex, sid.to_lowercase())
}

/// Whether hivexregedit's export of `hive` mentions `sid` (binary or text).
fn hive_names(hive: &Path, sid: &str) -> bool {
    let out = Command::new("hivexregedit")
        .arg("--export")
        .arg(hive)
        .arg("\\")
        .output()
        .unwrap();
    assert!(out.status.success(), "hivexregedit {}", hive.display());
    let text = String::from_utf8_lossy(&out.stdout)
        .to_lowercase()
        .replace("\\\n", "")
        .replace(' ', "");
    let (hex, txt) = needles(sid);
    text.contains(&hex) || text.contains(&txt)
}

#[test]
fn a_killed_generalize_is_undone_or_finished_and_a_rerun_is_consistent() {
    if !require_tool("hivexregedit") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pristine = tmp.path().join("pristine");
    build_windows_root(&pristine, None).unwrap();
    let before = snapshot(&pristine).unwrap();

    let reference = tmp.path().join("reference");
    copy_tree(&pristine, &reference).unwrap();
    let mut b = DirBackend::open(&reference).unwrap();
    let r = generalize(&mut b, &seeded(7)).unwrap();
    let seeded_sid = r.installs[0].sid.as_ref().expect("sid").new.clone();
    let steps = b.last_commit_steps();
    drop(b);
    assert!(steps > 20, "{steps} steps");

    // Ten kill points spread over the commit, and its last step.
    let mut points: Vec<usize> = (0..10).map(|i| i * steps / 10).collect();
    points.push(steps - 1);
    let mut outcomes = Vec::new();
    for (i, n) in points.into_iter().enumerate() {
        let root = tmp.path().join(format!("run{i}"));
        copy_tree(&pristine, &root).unwrap();
        let mut b = DirBackend::open(&root).unwrap();
        b.set_kill_after(Some(n));
        let e = generalize(&mut b, &seeded(7)).unwrap_err();
        assert!(e.to_string().contains("simulated kill"), "step {n}: {e}");
        drop(b);
        let b = DirBackend::open(&root).unwrap();
        let rec = b.recovery().cloned().expect("recovered");
        drop(b);
        assert!(
            reseal_testkit::reseal_leftovers(&root).is_empty(),
            "step {n}: {:?}",
            reseal_testkit::reseal_leftovers(&root)
        );
        let cfg = root.join("Windows/System32/config");
        match rec {
            Recovery::Undone { .. } => {
                let d = snapshot_diff(&before, &snapshot(&root).unwrap());
                assert!(d.is_empty(), "step {n}: not as before: {d:?}");
            }
            Recovery::Finished { .. } => {
                for h in ["SAM", "SECURITY", "SOFTWARE"] {
                    assert!(
                        !hive_names(&cfg.join(h), SAMPLE_MACHINE_SID),
                        "step {n}: {h} still names the old SID"
                    );
                }
            }
        }
        outcomes.push(matches!(rec, Recovery::Finished { .. }));
        // A re-run generalizes (or finds it done) with one SID everywhere.
        let mut b = DirBackend::open(&root).unwrap();
        let report = generalize(&mut b, &seeded(7)).unwrap();
        drop(b);
        let new = report.installs[0]
            .sid
            .as_ref()
            .map(|s| s.new.clone())
            // Nothing left to do: the SID is the one the killed run wrote.
            .unwrap_or_else(|| seeded_sid.clone());
        assert!(
            new.starts_with("S-1-5-21-"),
            "step {n}: no new SID reported"
        );
        for h in ["SAM", "SECURITY", "SOFTWARE"] {
            let p = cfg.join(h);
            assert!(!hive_names(&p, SAMPLE_MACHINE_SID), "step {n}: {h} old SID");
            assert!(hive_names(&p, &new), "step {n}: {h} lacks {new}");
        }
    }
    assert_eq!(outcomes.iter().filter(|f| **f).count(), 1, "{outcomes:?}");
}
