//! `cargo xtask bench devices`: the `devices` operation (plan and apply) on
//! the largest real SYSTEM hives of the corpus, through the release CLI.
//!
//! Inputs: the corpus root of `reseal-testkit` (the synthetic root with the
//! real Windows 10 SYSTEM_B, 12.8 MB, dirty with its logs, one control set),
//! and the same root with the Windows 7 SYSTEM (11.8 MB, two control sets)
//! in its place. Each measurement is a whole `reseal generalize` run on a
//! fresh copy of the root (the copy is not timed); the cost of the
//! operation is read from differences between runs that stop at different
//! points:
//!
//! * `load`: `--operations devices --persist-devices --dry-run` (discovery,
//!   hive loading with log replay, preflight; devices plans nothing);
//! * `load+plan`: `--operations devices --dry-run`;
//! * `load+plan+apply+commit`: `--operations devices` (apply, structural
//!   check, write);
//! * the same with `RAYON_NUM_THREADS=1` (control sets planned one by one).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::demo::build_reseal;
use crate::util::{self, step};

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        std::fs::remove_dir_all(dst)?;
    }
    let ok = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .context("running cp -a")?
        .success();
    ensure!(ok, "cp -a {} {} failed", src.display(), dst.display());
    Ok(())
}

/// Median wall time (ms) of generalize runs, each on a fresh copy.
fn measure(
    reseal: &Path,
    pristine: &Path,
    work: &Path,
    args: &[&str],
    threads: Option<&str>,
) -> Result<f64> {
    let m = super::measure(
        || copy_tree(pristine, work),
        || {
            let mut cmd = Command::new(reseal);
            // --force: the real Windows 10 SYSTEM has a pending file rename,
            // which preflight refuses unless forced.
            cmd.arg("generalize").arg("--force").args(args).arg(work);
            if let Some(n) = threads {
                cmd.env("RAYON_NUM_THREADS", n);
            }
            cmd
        },
    )?;
    Ok(m.median_ms)
}

/// Runs the benchmark.
pub fn bench_devices() -> Result<()> {
    let corpus = util::root().join("../shared/corpus");
    ensure!(
        corpus.is_dir(),
        "the benchmark needs ../shared/corpus (real SYSTEM hives)"
    );
    let reseal = build_reseal()?;
    let dir = util::root().join("target/bench/devices");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    step("preparing inputs");
    let win10 = dir.join("root-win10");
    ensure!(
        reseal_testkit::build_corpus_root(&win10, &corpus)?,
        "the corpus lacks SYSTEM_B or the RathbunVM hives"
    );
    let win7 = dir.join("root-win7");
    copy_tree(&win10, &win7)?;
    let config = win7.join("Windows/System32/config");
    for log in ["SYSTEM.LOG1", "SYSTEM.LOG2"] {
        let p = config.join(log);
        if p.exists() {
            std::fs::remove_file(p)?;
        }
    }
    super::decompress_xz(
        &corpus.join("regipy/regipy_tests/data/SYSTEM.xz"),
        &config.join("SYSTEM"),
    )?;
    let work = dir.join("work");
    println!(
        "runs per measurement: {} (RESEAL_BENCH_RUNS to change); {} CPUs",
        super::runs(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "\n{:<44} {:>12} {:>12} {:>12} {:>14} {:>16}",
        "input", "load", "load+plan", "+apply", "plan (diff)", "apply+commit"
    );
    for (label, root) in [
        ("Win10 SYSTEM_B 12.8 MB, replayed, 1 set", &win10),
        ("Win7 SYSTEM 11.8 MB, 2 control sets", &win7),
    ] {
        for threads in [None, Some("1")] {
            let load = measure(
                &reseal,
                root,
                &work,
                &["--operations", "devices", "--persist-devices", "--dry-run"],
                threads,
            )?;
            let plan = measure(
                &reseal,
                root,
                &work,
                &["--operations", "devices", "--dry-run"],
                threads,
            )?;
            let full = measure(&reseal, root, &work, &["--operations", "devices"], threads)?;
            let name = match threads {
                None => label.to_string(),
                Some(n) => format!("{label} (RAYON_NUM_THREADS={n})"),
            };
            println!(
                "{name:<44} {load:>9.1} ms {plan:>9.1} ms {full:>9.1} ms {:>11.1} ms {:>13.1} ms",
                plan - load,
                full - plan
            );
        }
    }
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    Ok(())
}
