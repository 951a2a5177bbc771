//! `cargo xtask bench wim`: `reseal generalize X.wim` against the script a
//! user would write today for the same registry effect (extract the hives
//! with wimlib-imagex, merge a .reg with hivexregedit, put them back with
//! wimlib-imagex update), on two WIMs that hold the same synthetic Windows
//! root plus S1 and 10 x S1 of untouched incompressible files.
//!
//! Both sides run the operations `markers,identities` only: their changes
//! are registry values and keys in SYSTEM and SOFTWARE plus two small marker
//! files, which the script adds too. The script's .reg is built from
//! reseal's own `--dry-run --json` report of the same WIM, so both make the
//! same changes; after the runs the hives of both results are exported and
//! compared. Each run works on a fresh copy of the WIM (the copy is not
//! timed). `RESEAL_BENCH_WIM_MB` sets S1 in MB (default 100).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use super::{Measure, copy, measure, row, runs};
use crate::demo::build_reseal;
use crate::util::{self, output, step};

const IMAGE: &str = "Windows 10 Pro";
const OPERATIONS: &str = "markers,identities";
const CONFIG: &str = "/Windows/System32/config";
/// Size of each random file of the untouched data.
const CHUNK: u64 = 50_000_000;

/// The hives the two operations edit: report name, file, .reg prefix.
const HIVES: [(&str, &str, &str); 2] = [
    ("system", "SYSTEM", "HKEY_LOCAL_MACHINE\\SYSTEM"),
    ("software", "SOFTWARE", "HKEY_LOCAL_MACHINE\\SOFTWARE"),
];

fn base_mb() -> u64 {
    std::env::var("RESEAL_BENCH_WIM_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(100)
}

/// Writes `bytes` of xorshift64* output to `path` (incompressible).
fn random_file(path: &Path, bytes: u64, seed: u64) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            w.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Captures `root` plus `mb` MB of random files into `wim` (LZX), unless a
/// stamp shows it was already made with that size.
fn make_wim(root: &Path, dir: &Path, label: &str, mb: u64) -> Result<PathBuf> {
    let wim = dir.join(format!("{label}.wim"));
    let stamp = dir.join(format!("{label}.stamp"));
    let want = format!("{mb} MB LZX, distinct files");
    if wim.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str()) {
        println!("reusing {} ({want} of other data)", wim.display());
        return Ok(wim);
    }
    let tree = dir.join(format!("{label}-root"));
    if tree.exists() {
        std::fs::remove_dir_all(&tree)?;
    }
    reseal_testkit::copy_tree(root, &tree)?;
    let data = tree.join("Data");
    std::fs::create_dir_all(&data)?;
    let total = mb * 1_000_000;
    let mut done = 0;
    let mut i = 0;
    while done < total {
        let n = CHUNK.min(total - done);
        // Distinct odd seeds: no two files alike (wimlib would store one).
        let seed = 0x9e37_79b9_7f4a_7c15 ^ ((i + 1) << 1);
        random_file(&data.join(format!("blob{i:03}.bin")), n, seed)?;
        done += n;
        i += 1;
    }
    let _ = std::fs::remove_file(&wim);
    let t = Instant::now();
    println!(
        "$ wimlib-imagex capture {} {} '{IMAGE}' --compress=LZX",
        tree.display(),
        wim.display()
    );
    output(
        Command::new("wimlib-imagex")
            .arg("capture")
            .arg(&tree)
            .arg(&wim)
            .arg(IMAGE)
            .arg("--compress=LZX"),
    )?;
    println!("captured in {:.1} s", t.elapsed().as_secs_f64());
    std::fs::remove_dir_all(&tree)?;
    std::fs::write(&stamp, want)?;
    Ok(wim)
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
    let installs = v["installs"]
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

struct Sized {
    label: String,
    wim: PathBuf,
    reseal: Measure,
    script: Measure,
    same: bool,
}

pub fn bench_wim() -> Result<()> {
    for tool in ["wimlib-imagex", "hivexregedit"] {
        ensure!(util::have(tool), "{tool} is needed (cargo xtask setup)");
    }
    let reseal = build_reseal()?;
    let dir = util::root().join("target/bench/wim");
    std::fs::create_dir_all(&dir)?;
    step(&format!("preparing inputs in {}", dir.display()));
    let root = dir.join("windows-root");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    reseal_testkit::build_windows_root(&root, None)?;
    let s1 = base_mb();
    let sizes = [("S1", s1), ("S2", 10 * s1)];
    let mut wims = Vec::new();
    for (label, mb) in sizes {
        wims.push((label, mb, make_wim(&root, &dir, label, mb)?));
    }

    // The edits, from reseal's own plan for the same image.
    let report = output(
        Command::new(&reseal)
            .args([
                "generalize",
                "--dry-run",
                "--json",
                "--operations",
                OPERATIONS,
            ])
            .arg(&wims[0].2),
    )?;
    let (regs, file_paths) = reg_from_report(&report)?;
    for (name, reg) in &regs {
        std::fs::write(dir.join(format!("{name}.reg")), reg)?;
    }
    // The marker files' contents, from a real reseal run on a copy.
    let work = dir.join("work.wim");
    copy(&wims[0].2, &work)?;
    output(
        Command::new(&reseal)
            .args(["generalize", "--operations", OPERATIONS])
            .arg(&work),
    )?;
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
    let sh = script(&dir, &files);
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

    let tmp = dir.join("script-tmp");
    let mut results = Vec::new();
    for (label, mb, wim) in &wims {
        let size = std::fs::metadata(wim)?.len() as f64 / 1e6;
        let label = format!("{label}: {mb} MB other, WIM {size:.0} MB");
        step(&format!("measuring {label}"));
        let ours = measure(
            || copy(wim, &work),
            || {
                let mut c = Command::new(&reseal);
                c.args(["generalize", "--operations", OPERATIONS])
                    .arg(&work);
                c
            },
        )?;
        let ours_out = export_hives(&reseal, &work, &dir.join("check-reseal"))?;
        let theirs = measure(
            || {
                if tmp.exists() {
                    std::fs::remove_dir_all(&tmp)?;
                }
                std::fs::create_dir_all(&tmp)?;
                copy(wim, &work)
            },
            || {
                let mut c = Command::new("bash");
                c.arg("-c").arg(&sh).arg("script").arg(&work);
                c
            },
        )?;
        let theirs_out = export_hives(&reseal, &work, &dir.join("check-script"))?;
        results.push(Sized {
            label,
            wim: wim.clone(),
            reseal: ours,
            script: theirs,
            same: ours_out == theirs_out,
        });
    }

    println!(
        "\nruns per measurement: {} (RESEAL_BENCH_RUNS), each on a fresh copy of the WIM",
        runs()
    );
    println!(
        "\n{:<34} {:<22} {:>13} {:>10} {:>12}",
        "task", "tool", "median", "vs reseal", "peak RSS"
    );
    for r in &results {
        row(&r.label, "reseal generalize", &r.reseal, None);
        row(&r.label, "extract+hivex+update", &r.script, Some(&r.reseal));
    }
    println!();
    for r in &results {
        println!(
            "{}: {} — hives after both: {}",
            r.label,
            r.wim.display(),
            if r.same {
                "same registry content"
            } else {
                "DIFFERENT registry content"
            }
        );
    }
    let (a, b) = (&results[0], &results[1]);
    println!(
        "reseal S2/S1 time: {:.2} (10x untouched data); script S2/S1: {:.2}",
        b.reseal.median_ms / a.reseal.median_ms,
        b.script.median_ms / a.script.median_ms
    );
    println!(
        "machine: {} cores; WIMs captured with LZX",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    ensure!(
        results.iter().all(|r| r.same),
        "the script and reseal did not leave the same registry content"
    );
    Ok(())
}
