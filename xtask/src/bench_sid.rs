//! `cargo xtask bench sid`: the machine SID rewrite and `reseal stamp`,
//! timed through the release binary, with peak memory (GNU time `%M`).
//!
//! * SID rewrite over all hives (`reseal generalize --operations
//!   machine-sid`: load with log replay, scan, rewrite, verify, check,
//!   commit) on the synthetic root and on the root with real Windows 10
//!   SYSTEM, SAM and SECURITY hives (the corpus root).
//! * Stamping 16 clones of the generalized synthetic root with one thread
//!   (`RAYON_NUM_THREADS=1`) and with all threads, and the speedup.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::util::{self, step};

struct Timing {
    median_ms: f64,
    peak_kib: Option<u64>,
}

fn runs() -> usize {
    std::env::var("RESEAL_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(5)
}

/// Runs `args` on the binary `runs()` times, `prepare` before each (not
/// timed); median wall time and largest peak RSS.
fn time(
    bin: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    mut prepare: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    let gnu_time = Path::new("/usr/bin/time").is_file();
    let mut times = Vec::new();
    let mut peak: Option<u64> = None;
    for _ in 0..runs() {
        prepare()?;
        let mut cmd = if gnu_time {
            let mut c = Command::new("/usr/bin/time");
            c.args(["-f", "%M", "-o", "/dev/stderr"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.args(args).envs(env.iter().copied());
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let t = Instant::now();
        let out = cmd.output().context("running the benchmark command")?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() {
            bail!(
                "reseal {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if gnu_time {
            let err = String::from_utf8_lossy(&out.stderr);
            if let Some(k) = err.lines().rev().find_map(|l| l.trim().parse::<u64>().ok()) {
                peak = Some(peak.map_or(k, |p| p.max(k)));
            }
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(Timing {
        median_ms: times[times.len() / 2],
        peak_kib: peak,
    })
}

fn row(task: &str, t: &Timing, extra: &str) {
    let mem = t
        .peak_kib
        .map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!("{task:<52} {:>10.1} ms {:>11}  {extra}", t.median_ms, mem);
}

/// `cp -a src dst` after removing `dst`.
fn fresh_copy(src: &Path, dst: &Path) -> Result<()> {
    if dst.exists() {
        std::fs::remove_dir_all(dst)?;
    }
    let st = Command::new("cp").arg("-a").arg(src).arg(dst).status()?;
    ensure!(
        st.success(),
        "cp -a {} {} failed",
        src.display(),
        dst.display()
    );
    Ok(())
}

/// Total size of the hive files of a root (machine hives and profiles').
fn hive_bytes(root: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("RegBack") {
                    stack.push(p);
                }
            } else if std::fs::read(&p).is_ok_and(|b| b.starts_with(b"regf")) {
                total += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    total
}

/// Builds the release binary (in `CARGO_TARGET_DIR` when set).
fn build_release() -> Result<PathBuf> {
    step("building reseal (release)");
    util::exec(util::cargo().args(["build", "--release", "--quiet", "-p", "reseal-cli"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                util::root().join(p)
            }
        })
        .unwrap_or_else(|| util::root().join("target"));
    let bin = target.join("release/reseal");
    ensure!(bin.is_file(), "{} was not built", bin.display());
    Ok(bin)
}

pub fn bench_sid() -> Result<()> {
    let reseal = build_release()?;
    let dir = util::root().join("target/bench/sid");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    step("building the roots");
    let synthetic = dir.join("synthetic");
    reseal_testkit::build_windows_root(&synthetic, None)?;
    let mut inputs: Vec<(&str, PathBuf)> = vec![("synthetic root", synthetic.clone())];
    let corpus_root = dir.join("corpus");
    match reseal_testkit::corpus_dir() {
        Some(c) if reseal_testkit::build_corpus_root(&corpus_root, &c)? => {
            inputs.push(("corpus root (real SYSTEM/SAM/SECURITY)", corpus_root));
        }
        _ => println!("corpus absent: the corpus root is skipped"),
    }
    println!(
        "runs per measurement: {} (RESEAL_BENCH_RUNS to change); machine: {} cores\n",
        runs(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("{:<52} {:>13} {:>11}", "task", "median", "peak RSS");
    let work = dir.join("work");
    for (label, root) in &inputs {
        let w = work.to_string_lossy().into_owned();
        let t = time(
            &reseal,
            &[
                "generalize",
                &w,
                "--operations",
                "machine-sid",
                "--seed",
                "1",
                "--force",
            ],
            &[],
            || fresh_copy(root, &work),
        )?;
        row(
            &format!("SID rewrite, all hives, {label}"),
            &t,
            &format!("{:.1} MB of hives", hive_bytes(root) as f64 / 1e6),
        );
    }

    // A generalized source for stamping.
    let golden = dir.join("golden");
    fresh_copy(&synthetic, &golden)?;
    util::exec(
        Command::new(&reseal)
            .arg("generalize")
            .arg(&golden)
            .args(["--seed", "1"])
            .stdout(Stdio::null()),
    )?;
    let out = dir.join("clones");
    let clear = || {
        if out.exists() {
            std::fs::remove_dir_all(&out)?;
        }
        Ok(())
    };
    let (g, o) = (
        golden.to_string_lossy().into_owned(),
        out.to_string_lossy().into_owned(),
    );
    let args = [
        "stamp",
        &g,
        "--count",
        "16",
        "--out",
        &o,
        "--name",
        "WEB-{n:03}",
    ];
    let one = time(&reseal, &args, &[("RAYON_NUM_THREADS", "1")], clear)?;
    row("stamp 16 clones, 1 thread", &one, "");
    let all = time(&reseal, &args, &[], clear)?;
    row(
        "stamp 16 clones, all threads",
        &all,
        &format!("speedup {:.2}x", one.median_ms / all.median_ms),
    );
    let size: u64 = {
        let o = Command::new("du").args(["-sk"]).arg(&golden).output()?;
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    ensure!(out.join("WEB-016").is_dir(), "the clones were not made");
    println!(
        "\nsource root: {:.1} MB on disk; each clone copies it",
        size as f64 / 1024.0
    );
    Ok(())
}
