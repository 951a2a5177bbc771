//! The size check after a WIM write: a write that makes the file grow by
//! more than allowed is undone — an in-place (appending) write is cut back
//! to the old header and length, leaving the WIM byte-identical and
//! verifiable, and a new `--output` file is removed. The allowance is forced
//! below any real WIM through a test hook; the real bound is data plus metadata.

use std::path::{Path, PathBuf};
use std::process::Command;

use reseal::ResealError;
use reseal::backend::wim::{ImageSelector, WimBackend, layout};
use reseal::generalize::generalize;
use reseal::options::GeneralizeOptions;
use reseal_testkit::{build_windows_root, require_tool};

fn capture(tmp: &Path) -> PathBuf {
    let root = tmp.join("root");
    build_windows_root(&root, None).unwrap();
    let wim = tmp.join("in.wim");
    let st = Command::new("wimlib-imagex")
        .arg("capture")
        .arg(&root)
        .arg(&wim)
        .arg("Windows 10 Pro")
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    wim
}

fn verifies(wim: &Path) -> bool {
    Command::new("wimlib-imagex")
        .arg("verify")
        .arg(wim)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn a_write_growing_past_the_bound_is_undone() {
    if !require_tool("wimlib-imagex") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let wim = capture(tmp.path());
    let before = std::fs::read(&wim).unwrap();
    let l = layout::check(&wim).unwrap();
    assert_eq!(l.file_len, before.len() as u64);
    assert!(l.metadata_bytes > 0);

    // In place (append): restored byte for byte.
    let mut b = WimBackend::open(&wim, ImageSelector::Index(1)).unwrap();
    b.set_max_written_len(Some(1000));
    let e = generalize(&mut b, &GeneralizeOptions::default()).unwrap_err();
    assert!(
        matches!(&e, ResealError::CommitFailed { message, .. } if message.contains("restored")),
        "{e}"
    );
    assert!(std::fs::read(&wim).unwrap() == before, "the WIM changed");
    assert!(verifies(&wim));

    // To a new file: the output is removed, the input untouched.
    let out = tmp.path().join("out.wim");
    let mut b = WimBackend::open(&wim, ImageSelector::Index(1))
        .unwrap()
        .with_output(Some(out.clone()));
    b.set_max_written_len(Some(1000));
    let e = generalize(&mut b, &GeneralizeOptions::default()).unwrap_err();
    assert!(matches!(e, ResealError::CommitFailed { .. }), "{e}");
    assert!(!out.exists(), "the oversized output stays");
    assert!(std::fs::read(&wim).unwrap() == before);

    // With the computed bound the same run writes, and the result grows by
    // less than the bound.
    let mut b = WimBackend::open(&wim, ImageSelector::Index(1)).unwrap();
    generalize(&mut b, &GeneralizeOptions::default()).unwrap();
    let after = std::fs::metadata(&wim).unwrap().len();
    assert!(after <= l.file_len + layout::growth_bound(&l, 64 << 20));
    assert!(verifies(&wim));
}
