//! `cargo xtask bench wim`: `reseal generalize X.wim` against the script a
//! user would write today for the same registry effect (extract the hives
//! with wimlib-imagex, merge a .reg with hivexregedit, put them back with
//! wimlib-imagex update), on two WIMs that carry the same hives and S and
//! 10 x S of untouched incompressible files.
//!
//! # Inputs
//!
//! * The Windows root. When the shared corpus is present (`RESEAL_CORPUS`
//!   or `../shared/corpus`), the corpus root of `reseal-testkit`: real
//!   Windows 10 SYSTEM (12 MB), SAM and SECURITY; here the demo user's
//!   NTUSER.DAT and UsrClass.dat and the DEFAULT hive are also the real ones
//!   of the same corpus machine (RathbunVM). Without the corpus the
//!   synthetic root (hives of a few KB) is used, and the bench says so.
//!   Dirty hives are recovered from their logs (`reseal hive replay`) and
//!   their logs emptied before capture: hivexregedit does not replay logs,
//!   and both sides must start from the same registry.
//! * SOFTWARE: the corpus holds no real SOFTWARE hive, so the root's
//!   SOFTWARE (synthetic) is grown to a real hive's size (that of a Windows
//!   10 install is tens of MB) with filler keys under `BenchFiller`
//!   (COM-class-like keys and values, imported with `reseal hive import`).
//!   The bench prints the size and origin of every hive.
//! * Untouched data: S MB of random bytes (incompressible) spread over
//!   320 files in 16 folders under `Data`, S MB in the small WIM and 10 x S
//!   in the large one; file count and hives are the same in both. Both are
//!   captured with `wimlib-imagex capture` (LZX, the default), which is
//!   setup, not measured.
//!
//! # Measurement
//!
//! Both sides run the operations `markers,identities` only: their changes
//! are registry values and keys in SYSTEM and SOFTWARE plus two small marker
//! files, which the script adds too. reseal runs with `--force`: the real
//! SYSTEM has a pending PendingFileRenameOperations, which it refuses
//! otherwise (the script checks nothing). The script's .reg is built from
//! reseal's own `--dry-run --json` report of the same WIM, so both make the
//! same changes. Each run works on a fresh copy of the WIM (copied and
//! synced to disk before the clock starts). The runs are interleaved (small
//! reseal, small script, large reseal, large script, then the other way
//! round), so that a change of the machine's load weighs on all alike; the
//! load average before and after is printed. Reported per tool and WIM:
//! median wall time (and min-max), median CPU time (user + sys), the ratio
//! script/reseal, peak RSS and how much the WIM grew. CPU time and peak RSS
//! come from GNU time (`/usr/bin/time -f "%M %U %S"`); for the script they
//! cover all its steps (the kernel accounts the waited-for descendants:
//! peak RSS is that of the largest step). After the first run of each,
//! `wimlib-imagex verify` must pass, and the SYSTEM and SOFTWARE hives of
//! both results are exported and must be equal (values of a key sorted:
//! hivexregedit reorders them); when they differ, both exports are left in
//! `target/bench/wim` for a diff. The ratio reseal(large) / reseal(small)
//! shows whether reseal's time grows with the untouched data.
//!
//! # Settings
//!
//! * `RESEAL_BENCH_WIM_MB`: S, in MB (default 300, so 300 MB and 3 GB).
//! * `RESEAL_BENCH_RUNS`: runs per measurement (default 5).
//! * `RESEAL_BENCH_SOFTWARE_MB`: size SOFTWARE is grown to, in MB (default
//!   64; 0 leaves it as built).
//! * `RESEAL_BENCH_KEEP=1`: keep the WIMs in `target/bench/wim` (a later
//!   run with the same settings reuses them). By default every large file
//!   is removed at the end, also after a failure.
//!
//! Disk: about 21 x S MB at the peak (both WIMs, and the large WIM's data
//! tree while capturing or a working copy), all under `target/bench/wim`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::bench_data::{
    FILES, base_mb, build_root, fresh_copy, inputs_stamp, keep, megabytes, write_data,
};
use super::runs;
use crate::demo::build_reseal;
use crate::util::{self, output, step};

const IMAGE: &str = "Windows 10 Pro";
const OPERATIONS: &str = "markers,identities";
/// `--force`: the real SYSTEM has a pending PendingFileRenameOperations,
/// which reseal refuses unless forced (as sysprep would).
const GENERALIZE: [&str; 4] = ["generalize", "--force", "--operations", OPERATIONS];
const CONFIG: &str = "/Windows/System32/config";

/// The hives the two operations edit: report name, file, .reg prefix.
const HIVES: [(&str, &str, &str); 2] = [
    ("system", "SYSTEM", "HKEY_LOCAL_MACHINE\\SYSTEM"),
    ("software", "SOFTWARE", "HKEY_LOCAL_MACHINE\\SOFTWARE"),
];

/// Puts `mb` MB of random data under `root/Data` ([`write_data`]), captures
/// `root` into `wim` (LZX) and removes the data again.
fn capture(root: &Path, wim: &Path, mb: u64, salt: u64) -> Result<()> {
    write_data(root, mb, salt)?;
    let _ = std::fs::remove_file(wim);
    let t = Instant::now();
    println!(
        "$ wimlib-imagex capture {} {} '{IMAGE}' --compress=LZX",
        root.display(),
        wim.display()
    );
    output(
        Command::new("wimlib-imagex")
            .arg("capture")
            .arg(root)
            .arg(wim)
            .arg(IMAGE)
            .arg("--compress=LZX"),
    )?;
    println!(
        "captured {} ({}) in {:.1} s",
        wim.display(),
        megabytes(std::fs::metadata(wim)?.len()),
        t.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(root.join("Data"))?;
    Ok(())
}

/// A REGEDIT5 string for a key path or value name.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn hex_bytes(hex: &str) -> Result<String> {
    ensure!(hex.len().is_multiple_of(2), "odd hex data {hex:?}");
    Ok((0..hex.len())
        .step_by(2)
        .map(|i| hex[i..i + 2].to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(","))
}

/// The .reg files (one per hive) holding the registry edits of the report,
/// and the file writes it plans (paths inside the image).
fn reg_from_report(report: &str) -> Result<(BTreeMap<&'static str, String>, Vec<String>)> {
    let v: Value = serde_json::from_str(report).context("parsing the dry-run report")?;
    // One run (the WIM's first image) in the report's results.
    let installs = v["results"][0]["installs"]
        .as_array()
        .context("report without installs")?;
    ensure!(installs.len() == 1, "expected one install in the image");
    let edits = installs[0]["edits"]
        .as_array()
        .context("report without edits")?;
    let mut files = Vec::new();
    let mut regs = BTreeMap::new();
    for (name, _, prefix) in HIVES {
        // Key deletions first, then value changes grouped by key in order.
        let mut deleted = Vec::new();
        let mut keys: Vec<(String, Vec<String>)> = Vec::new();
        for e in edits {
            let e = &e["edit"];
            match e["target"].as_str() {
                Some("file") => {
                    if name == HIVES[0].0 {
                        ensure!(e["action"] == "write", "unexpected file edit {e}");
                        files.push(e["path"].as_str().context("file path")?.replace('\\', "/"));
                    }
                    continue;
                }
                Some("registry") => {}
                _ => bail!("unexpected edit {e}"),
            }
            let hive = e["hive"]["hive"].as_str().context("edit without hive")?;
            ensure!(
                HIVES.iter().any(|h| h.0 == hive),
                "edit of a hive the script does not handle: {e}"
            );
            if hive != name {
                continue;
            }
            let key = format!("{prefix}\\{}", e["key"].as_str().context("edit key")?);
            let line = match e["action"].as_str() {
                Some("delete_key") => {
                    deleted.push(format!("[-{key}]\n"));
                    continue;
                }
                Some("delete_value") => {
                    let n = e["name"].as_str().context("value name")?;
                    let n = if n.is_empty() { "@".into() } else { quoted(n) };
                    format!("{n}=-\n")
                }
                Some("set_value") => {
                    let n = e["name"].as_str().context("value name")?;
                    let n = if n.is_empty() { "@".into() } else { quoted(n) };
                    let ty = e["value_type"].as_u64().context("value type")?;
                    let data = hex_bytes(e["data"].as_str().context("value data")?)?;
                    format!("{n}=hex({ty:x}):{data}\n")
                }
                _ => bail!("unexpected registry edit {e}"),
            };
            match keys.iter_mut().find(|(k, _)| *k == key) {
                Some((_, lines)) => lines.push(line),
                None => keys.push((key, vec![line])),
            }
        }
        let mut s = String::from("Windows Registry Editor Version 5.00\n\n");
        for d in deleted {
            s.push_str(&d);
            s.push('\n');
        }
        for (key, lines) in keys {
            s.push_str(&format!("[{key}]\n"));
            for l in lines {
                s.push_str(&l);
            }
            s.push('\n');
        }
        regs.insert(name, s);
    }
    Ok((regs, files))
}

/// The user's script: extract the two hives, merge the .reg files, add the
/// hives and marker files back. `$1` is the WIM.
fn script(dir: &Path, files: &[(PathBuf, String)]) -> String {
    let tmp = dir.join("script-tmp");
    let mut s = format!("set -e\nT='{}'\n", tmp.display());
    s.push_str(&format!(
        "wimlib-imagex extract \"$1\" 1 {CONFIG}/SYSTEM {CONFIG}/SOFTWARE --dest-dir=\"$T\" --no-acls\n"
    ));
    for (name, file, prefix) in HIVES {
        s.push_str(&format!(
            "hivexregedit --merge \"$T/{file}\" --prefix '{prefix}' '{}'\n",
            dir.join(format!("{name}.reg")).display()
        ));
    }
    s.push_str("wimlib-imagex update \"$1\" 1 <<EOF\n");
    for (_, file, _) in HIVES {
        s.push_str(&format!("add '$T/{file}' '{CONFIG}/{file}'\n"));
    }
    for (src, dest) in files {
        s.push_str(&format!("add '{}' '/{dest}'\n", src.display()));
    }
    s.push_str("EOF\n");
    s
}

/// `reseal hive export` of the two hives of image 1 of `wim`.
fn export_hives(reseal: &Path, wim: &Path, dir: &Path) -> Result<String> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    output(
        Command::new("wimlib-imagex")
            .arg("extract")
            .arg(wim)
            .arg("1")
            .args([format!("{CONFIG}/SYSTEM"), format!("{CONFIG}/SOFTWARE")])
            .arg(format!("--dest-dir={}", dir.display()))
            .arg("--no-acls"),
    )?;
    let mut s = String::new();
    for (_, file, _) in HIVES {
        s.push_str(&output(
            Command::new(reseal)
                .args(["hive", "export"])
                .arg(dir.join(file)),
        )?);
    }
    std::fs::remove_dir_all(dir)?;
    Ok(normalized(&s))
}

/// A .reg export with each key's values sorted: hivexregedit rewrites a
/// key's value list in its own order, which carries no meaning.
fn normalized(reg: &str) -> String {
    let mut out = String::new();
    let mut values: Vec<&str> = Vec::new();
    let flush = |values: &mut Vec<&str>, out: &mut String| {
        values.sort_unstable();
        for v in values.drain(..) {
            out.push_str(v);
            out.push('\n');
        }
    };
    for line in reg.lines() {
        if line.starts_with('[') {
            flush(&mut values, &mut out);
            out.push_str(line);
            out.push('\n');
        } else if !line.trim().is_empty() {
            values.push(line);
        }
    }
    flush(&mut values, &mut out);
    out
}

/// `wimlib-imagex verify` of `wim`; fails when it does.
fn verify(wim: &Path) -> Result<()> {
    output(Command::new("wimlib-imagex").arg("verify").arg(wim))
        .with_context(|| format!("wimlib-imagex verify {}", wim.display()))?;
    Ok(())
}

/// One WIM of the bench.
struct Wim {
    label: &'static str,
    other_mb: u64,
    path: PathBuf,
}

/// Builds the root and captures the two WIMs, or reuses them when a kept
/// pair was made with the same settings.
fn make_wims(reseal: &Path, dir: &Path) -> Result<Vec<Wim>> {
    let s = base_mb("RESEAL_BENCH_WIM_MB", 300);
    let wims = vec![
        Wim {
            label: "small",
            other_mb: s,
            path: dir.join("small.wim"),
        },
        Wim {
            label: "large",
            other_mb: 10 * s,
            path: dir.join("large.wim"),
        },
    ];
    let stamp = dir.join("wims.stamp");
    let want = inputs_stamp(s, "; LZX");
    let root = dir.join("windows-root");
    let hive_sizes = dir.join("hives.txt");
    if wims.iter().all(|w| w.path.is_file())
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str())
    {
        println!(
            "reusing the kept WIMs in {} ({})",
            dir.display(),
            want.trim()
        );
        print!(
            "{}",
            std::fs::read_to_string(&hive_sizes).unwrap_or_default()
        );
        return Ok(wims);
    }
    let _ = std::fs::remove_file(&stamp);
    let (from_corpus, hives) = build_root(reseal, &root, dir, Some("demo"))?;
    let mut listing = String::from("hives in both WIMs:\n");
    for h in &hives {
        listing.push_str(&format!(
            "  {:<24} {:>9}  {}\n",
            h.label(),
            megabytes(h.bytes),
            h.origin
        ));
    }
    if !from_corpus {
        listing.push_str("  (synthetic root: the corpus was not found)\n");
    }
    print!("{listing}");
    std::fs::write(&hive_sizes, &listing)?;
    for (i, w) in wims.iter().enumerate() {
        capture(&root, &w.path, w.other_mb, i as u64)?;
    }
    std::fs::remove_dir_all(&root)?;
    std::fs::write(&stamp, want)?;
    Ok(wims)
}

/// Removes the large files of the bench from `dir`.
fn clean_up(dir: &Path) {
    let mut freed = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_file() && (name.ends_with(".wim") || name == "wims.stamp") {
            freed += meta.len();
            let _ = std::fs::remove_file(&p);
        } else if meta.is_dir() && (name == "windows-root" || name == "script-tmp") {
            let _ = std::fs::remove_dir_all(&p);
        }
    }
    println!(
        "removed the WIMs ({}) from {} (RESEAL_BENCH_KEEP=1 keeps them)",
        megabytes(freed),
        dir.display()
    );
}

pub fn bench_wim() -> Result<()> {
    for tool in ["wimlib-imagex", "hivexregedit"] {
        ensure!(util::have(tool), "{tool} is needed (cargo xtask setup)");
    }
    let reseal = build_reseal()?;
    let dir = util::root().join("target/bench/wim");
    std::fs::create_dir_all(&dir)?;
    let result = run_bench(&reseal, &dir);
    if !keep() {
        clean_up(&dir);
    }
    result
}

fn run_bench(reseal: &Path, dir: &Path) -> Result<()> {
    step(&format!("preparing inputs in {}", dir.display()));
    let wims = make_wims(reseal, dir)?;

    // The edits, from reseal's own plan for the same image.
    let report = output(
        Command::new(reseal)
            .args(GENERALIZE)
            .args(["--dry-run", "--json"])
            .arg(&wims[0].path),
    )?;
    let (regs, file_paths) = reg_from_report(&report)?;
    for (name, reg) in &regs {
        std::fs::write(dir.join(format!("{name}.reg")), reg)?;
    }
    // The marker files' contents, from a real reseal run on a copy.
    let work = dir.join("work.wim");
    fresh_copy(&wims[0].path, &work)?;
    output(Command::new(reseal).args(GENERALIZE).arg(&work))?;
    let markers = dir.join("markers");
    if markers.exists() {
        std::fs::remove_dir_all(&markers)?;
    }
    let mut files = Vec::new();
    for p in &file_paths {
        output(
            Command::new("wimlib-imagex")
                .arg("extract")
                .arg(&work)
                .arg("1")
                .arg(format!("/{p}"))
                .arg(format!("--dest-dir={}", markers.display()))
                .arg("--no-acls"),
        )?;
        let name = p.rsplit('/').next().unwrap_or(p);
        files.push((markers.join(name), p.clone()));
    }
    let sh = script(dir, &files);
    std::fs::write(dir.join("script.sh"), &sh)?;
    let edits = regs
        .values()
        .map(|r| {
            r.lines()
                .filter(|l| l.contains('=') || l.starts_with("[-"))
                .count()
        })
        .sum::<usize>();
    println!(
        "registry edits: {edits} (SYSTEM, SOFTWARE; {}), marker files: {}; script: {}",
        dir.join("{system,software}.reg").display(),
        files.len(),
        dir.join("script.sh").display()
    );

    // Runs, interleaved (small reseal, small script, large reseal, large
    // script; the reverse order in odd rounds) so that a change of the
    // machine's load during the bench weighs on every case alike.
    let tmp = dir.join("script-tmp");
    let timings = dir.join("time.txt");
    let mut cases: Vec<Case> = Vec::new();
    for w in &wims {
        for tool in [Tool::Reseal, Tool::Script] {
            cases.push(Case {
                wim: w,
                wim_bytes: std::fs::metadata(&w.path)?.len(),
                tool,
                runs: Vec::new(),
                grew: 0,
                export: None,
            });
        }
    }
    let n = runs();
    let load_start = load_average();
    step(&format!(
        "measuring: {n} runs of each tool on each WIM, interleaved; load average {load_start}"
    ));
    for round in 0..n {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..cases.len()).collect()
        } else {
            (0..cases.len()).rev().collect()
        };
        for i in order {
            let c = &mut cases[i];
            if c.tool == Tool::Script {
                if tmp.exists() {
                    std::fs::remove_dir_all(&tmp)?;
                }
                std::fs::create_dir_all(&tmp)?;
            }
            fresh_copy(&c.wim.path, &work)?;
            let mut cmd = match c.tool {
                Tool::Reseal => {
                    let mut cmd = Command::new(reseal);
                    cmd.args(GENERALIZE).arg(&work);
                    cmd
                }
                Tool::Script => {
                    let mut cmd = Command::new("bash");
                    cmd.arg("-c").arg(&sh).arg("script").arg(&work);
                    cmd
                }
            };
            let run = timed(&mut cmd, &timings)?;
            println!(
                "round {}/{n}: {} WIM, {:<27} {:>7.2} s wall, {:>6.2} s CPU",
                round + 1,
                c.wim.label,
                c.tool.name(),
                run.wall_s,
                run.cpu_s.unwrap_or(f64::NAN)
            );
            c.runs.push(run);
            if c.export.is_none() {
                // After the first run: the WIM must verify, and its hives
                // are kept for the comparison.
                c.grew = std::fs::metadata(&work)?.len().saturating_sub(c.wim_bytes);
                verify(&work)?;
                c.export = Some(export_hives(reseal, &work, &dir.join("check"))?);
            }
        }
    }
    let _ = std::fs::remove_file(&work);
    let _ = std::fs::remove_file(&timings);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    let load_end = load_average();
    for pair in cases.chunks(2) {
        let (ours, theirs) = (
            pair[0].export.as_deref().unwrap_or_default(),
            pair[1].export.as_deref().unwrap_or_default(),
        );
        if ours != theirs {
            let label = pair[0].wim.label;
            let (a, b) = (
                dir.join(format!("{label}-reseal.reg")),
                dir.join(format!("{label}-script.reg")),
            );
            std::fs::write(&a, ours)?;
            std::fs::write(&b, theirs)?;
            let first = ours
                .lines()
                .zip(theirs.lines())
                .position(|(x, y)| x != y)
                .map_or("one is a prefix of the other".into(), |i| {
                    format!("first difference at line {}", i + 1)
                });
            bail!(
                "the script and reseal did not leave the same SYSTEM and SOFTWARE content \
                 in the {label} WIM ({first}; diff {} {})",
                a.display(),
                b.display()
            );
        }
    }

    println!(
        "\nall results pass wimlib-imagex verify; SYSTEM and SOFTWARE after reseal and \
         after the script: same registry content (both WIMs)"
    );
    for w in &wims {
        println!(
            "{} WIM: {} ({} MB of other data in {FILES} files)",
            w.label,
            megabytes(std::fs::metadata(&w.path)?.len()),
            w.other_mb
        );
    }
    println!(
        "runs: {n} per cell (RESEAL_BENCH_RUNS), each on a fresh copy of the WIM; \
         operations {OPERATIONS}; wall time median (min-max)"
    );
    println!(
        "\n{:<6} {:<28} {:>8} {:>15} {:>9} {:>10} {:>10} {:>10}",
        "WIM", "tool", "median", "min-max", "CPU", "vs reseal", "peak RSS", "WIM grew"
    );
    for pair in cases.chunks(2) {
        let base = median(pair[0].runs.iter().map(|r| r.wall_s));
        for c in pair {
            let wall = median(c.runs.iter().map(|r| r.wall_s));
            let lo = c
                .runs
                .iter()
                .map(|r| r.wall_s)
                .fold(f64::INFINITY, f64::min);
            let hi = c.runs.iter().map(|r| r.wall_s).fold(0.0, f64::max);
            let cpu = c
                .runs
                .iter()
                .map(|r| r.cpu_s)
                .collect::<Option<Vec<_>>>()
                .map_or("-".into(), |v| format!("{:.2} s", median(v.into_iter())));
            let peak = c
                .runs
                .iter()
                .filter_map(|r| r.peak_kib)
                .max()
                .map_or("-".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0));
            println!(
                "{:<6} {:<28} {:>6.2} s {:>15} {:>9} {:>10} {:>10} {:>10}",
                c.wim.label,
                c.tool.name(),
                wall,
                format!("({lo:.2}-{hi:.2})"),
                cpu,
                format!("{:.2}x", wall / base),
                peak,
                megabytes(c.grew)
            );
        }
    }
    let med = |i: usize| median(cases[i].runs.iter().map(|r| r.wall_s));
    let cpu = |i: usize| {
        cases[i]
            .runs
            .iter()
            .map(|r| r.cpu_s)
            .collect::<Option<Vec<_>>>()
            .map(|v| median(v.into_iter()))
    };
    println!(
        "\nreseal large/small: {:.2} (wall), {} (CPU) with 10x the untouched data; \
         script large/small: {:.2} (wall)",
        med(2) / med(0),
        match (cpu(2), cpu(0)) {
            (Some(a), Some(b)) => format!("{:.2}", a / b),
            _ => "-".into(),
        },
        med(3) / med(1)
    );
    println!(
        "script/reseal: small {:.2}x, large {:.2}x",
        med(1) / med(0),
        med(3) / med(2)
    );
    println!(
        "machine: {} cores; load average before {}, after {load_end}; peak RSS and CPU \
         (user+sys) by GNU time, for the script over all its steps",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_start
    );
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tool {
    Reseal,
    Script,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Reseal => "reseal generalize",
            Tool::Script => "extract+hivexregedit+update",
        }
    }
}

/// One tool on one WIM: its runs, how much the WIM grew, and the exported
/// hives after its first run.
struct Case<'a> {
    wim: &'a Wim,
    wim_bytes: u64,
    tool: Tool,
    runs: Vec<Run>,
    grew: u64,
    export: Option<String>,
}

/// One timed run: wall time, and CPU time and peak RSS when GNU time is
/// there.
struct Run {
    wall_s: f64,
    cpu_s: Option<f64>,
    peak_kib: Option<u64>,
}

fn median(v: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "-".into())
}

/// Runs `cmd` (output discarded, standard error kept for a failure) under
/// GNU time when present, writing its figures to `figures`.
fn timed(cmd: &mut Command, figures: &Path) -> Result<Run> {
    let gnu_time = Path::new("/usr/bin/time").is_file();
    let program = cmd.get_program().to_owned();
    let mut run = if gnu_time {
        let _ = std::fs::remove_file(figures);
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%M %U %S", "-o"]).arg(figures);
        c.arg(cmd.get_program()).args(cmd.get_args());
        c
    } else {
        std::mem::replace(cmd, Command::new("true"))
    };
    run.stdout(std::process::Stdio::null());
    let t = Instant::now();
    let out = run.output().context("running a measured command")?;
    let wall_s = t.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "{program:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r = Run {
        wall_s,
        cpu_s: None,
        peak_kib: None,
    };
    if gnu_time {
        let s = std::fs::read_to_string(figures)?;
        let f: Vec<&str> = s.lines().last().unwrap_or("").split_whitespace().collect();
        if let [m, u, s] = f[..] {
            r.peak_kib = m.parse().ok();
            r.cpu_s = match (u.parse::<f64>(), s.parse::<f64>()) {
                (Ok(u), Ok(s)) => Some(u + s),
                _ => None,
            };
        }
    }
    Ok(r)
}
