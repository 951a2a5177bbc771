//! `cargo xtask bench stamp`: many machines from one template.
//!
//! The template is a VHDX (GPT, one NTFS partition) holding the corpus'
//! real-size hives (as `bench disk` builds them) and
//! `RESEAL_BENCH_STAMP_MB` MB (default 1024) of incompressible other data,
//! generalized once. In one run, interleaved, each timed
//! `RESEAL_BENCH_RUNS` times (median; CPU and peak RSS from GNU time):
//!
//! * `reseal stamp template.vhdx --count N` (N = `RESEAL_BENCH_CLONES`,
//!   default 20): linked clones, each personalized;
//! * what a user does today: copy the template N times (`cp
//!   --sparse=always`), then `reseal personalize` each copy;
//! * one full copy of the template alone (the target: N linked clones in
//!   less time than one copy);
//! * `reseal personalize` of one copy.
//!
//! It prints the bytes each approach writes (allocated size of the clones)
//! and checks one linked clone with `vhdiinfo` (libvhdi) when present.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, ensure};

use super::bench_data::{base_mb, build_root, keep, megabytes};
use super::bench_disk::{Timing, build_disk, time_runs, tree_bytes};
use crate::demo::build_reseal;
use crate::util::{self, step};

fn clones() -> usize {
    std::env::var("RESEAL_BENCH_CLONES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(20)
}

/// Bytes allocated on the host under `p` (files' blocks).
fn allocated(p: &Path) -> u64 {
    let out = Command::new("du")
        .args(["-s", "-B1"])
        .arg(p)
        .output()
        .ok()
        .filter(|o| o.status.success());
    out.and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
    })
    .unwrap_or(0)
}

fn row(label: &str, t: &Timing, base: f64, written: Option<u64>) {
    println!(
        "| {label} | {:.0} ms | {:.2}x | {} | {} | {} |",
        t.wall_ms,
        t.wall_ms / base,
        t.cpu_ms
            .map(|c| format!("{c:.0} ms"))
            .unwrap_or_else(|| "-".into()),
        t.peak_kib
            .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or_else(|| "-".into()),
        written.map(megabytes).unwrap_or_else(|| "-".into())
    );
}

pub fn bench_stamp() -> Result<()> {
    for tool in ["qemu-img", "wimlib-imagex", "mkntfs", "sfdisk", "cp", "du"] {
        ensure!(
            util::have(tool) || Path::new("/usr/sbin").join(tool).is_file(),
            "{tool} is needed (cargo xtask setup)"
        );
    }
    let reseal = build_reseal()?;
    let dir = util::root().join("target/bench/stamp");
    fs::create_dir_all(&dir)?;
    let result = run(&reseal, &dir);
    if !keep() {
        let freed = tree_bytes(&dir).unwrap_or(0);
        let _ = fs::remove_dir_all(&dir);
        println!(
            "removed {} of working files (RESEAL_BENCH_KEEP=1 keeps them)",
            megabytes(freed)
        );
    }
    result
}

fn run(reseal: &Path, dir: &Path) -> Result<()> {
    let n = clones();
    let mb = base_mb("RESEAL_BENCH_STAMP_MB", 1024);
    step(&format!(
        "template: real-size hives + {mb} MB of other data, {n} clones"
    ));
    let template = dir.join("template.vhdx");
    if !template.is_file() {
        let root = dir.join("windows-root");
        let (from_corpus, _) = build_root(reseal, &root, dir, None)?;
        if !from_corpus {
            println!("(synthetic root: the corpus was not found; hives are a few KB)");
        }
        build_disk(&root, &template, mb, 7, dir)?;
        fs::remove_dir_all(&root)?;
        let out = Command::new(reseal)
            .args(["generalize", "--force", "--seed", "1"])
            .arg(&template)
            .output()?;
        ensure!(
            out.status.success(),
            "generalizing the template failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let template_alloc = allocated(&template);
    println!(
        "template {} ({} allocated)",
        template.display(),
        megabytes(template_alloc)
    );
    let linked = dir.join("linked");
    let copies = dir.join("copies");
    let single = dir.join("single");
    let one = dir.join("one.vhdx");
    let reset = |p: &Path| -> Result<()> {
        if p.exists() {
            fs::remove_dir_all(p)?;
        }
        Ok(())
    };

    let stamp = time_runs(
        || reset(&linked),
        || {
            let mut c = Command::new(reseal);
            c.arg("stamp")
                .arg(&template)
                .arg("--out")
                .arg(&linked)
                .args(["--count", &n.to_string(), "--name", "VM-{n:03}"]);
            c
        },
        dir,
    )?;
    let stamp_written = allocated(&linked);

    let script = format!(
        "set -e; mkdir -p '{c}'; for i in $(seq 1 {n}); do cp --sparse=always '{t}' '{c}'/VM-$i.vhdx; done; \
         for i in $(seq 1 {n}); do '{r}' personalize '{c}'/VM-$i.vhdx --name VM-$i >/dev/null; done",
        c = copies.display(),
        t = template.display(),
        r = reseal.display()
    );
    let peer = time_runs(
        || reset(&copies),
        || {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        },
        dir,
    )?;
    let peer_written = allocated(&copies);
    reset(&copies)?;

    let copy_one = time_runs(
        || reset(&single).and_then(|_| Ok(fs::create_dir_all(&single)?)),
        || {
            let mut c = Command::new("cp");
            c.arg("--sparse=always")
                .arg(&template)
                .arg(single.join("copy.vhdx"));
            c
        },
        dir,
    )?;
    reset(&single)?;

    let personalize_one = time_runs(
        || {
            let _ = fs::remove_file(&one);
            let st = Command::new("cp")
                .arg("--sparse=always")
                .arg(&template)
                .arg(&one)
                .status()?;
            ensure!(st.success(), "cp failed");
            Ok(())
        },
        || {
            let mut c = Command::new(reseal);
            c.arg("personalize").arg(&one).args(["--name", "VM-ONE"]);
            c
        },
        dir,
    )?;
    let _ = fs::remove_file(&one);

    step("results");
    println!(
        "| what | wall (median) | vs stamp | CPU | peak RSS | bytes written |\n|---|---|---|---|---|---|"
    );
    let base = stamp.wall_ms;
    row(
        &format!("reseal stamp, {n} linked clones"),
        &stamp,
        base,
        Some(stamp_written),
    );
    row(
        &format!("cp x{n} + reseal personalize x{n}"),
        &peer,
        base,
        Some(peer_written),
    );
    row(
        "cp of the template once",
        &copy_one,
        base,
        Some(template_alloc),
    );
    row(
        "reseal personalize of one copy",
        &personalize_one,
        base,
        None,
    );
    let per_child = stamp_written / n as u64;
    println!(
        "\nlinked clone: {} each on average ({:.1}% of the template's {}); {n} linked clones took {:.2}x the time of one full copy",
        megabytes(per_child),
        100.0 * per_child as f64 / template_alloc.max(1) as f64,
        megabytes(template_alloc),
        stamp.wall_ms / copy_one.wall_ms
    );
    if util::have("vhdiinfo") {
        let child = linked.join("VM-001.vhdx");
        let out = Command::new("vhdiinfo").arg(&child).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success() && text.contains("Parent"),
            "vhdiinfo does not see a differencing disk: {text}"
        );
        println!("vhdiinfo VM-001.vhdx: differencing, parent recorded");
    }
    Ok(())
}
