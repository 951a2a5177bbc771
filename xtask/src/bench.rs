//! `cargo xtask bench hive`: the hive engine against other tools, in one
//! run, on the same inputs. Prints medians, ratios and peak memory.
//!
//! Inputs are real SYSTEM hives from `../shared/corpus` (decompressed, and
//! recovered from their logs with `reseal hive replay` where dirty), and a
//! generated `.reg` of many edits. Peak memory is the maximum resident set
//! size reported by GNU time (`/usr/bin/time -f %M`), when present.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::demo::build_reseal;
use crate::setup;
use crate::util::{self, step};

#[path = "bench_data.rs"]
mod bench_data;
#[path = "bench_devices.rs"]
mod bench_devices;
#[path = "bench_disk.rs"]
mod bench_disk;
#[path = "bench_sid.rs"]
mod bench_sid;
#[path = "bench_stamp.rs"]
mod bench_stamp;
#[path = "bench_wim.rs"]
mod bench_wim;

/// One measured command: median wall time and peak RSS.
struct Measure {
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

/// Runs `make()` `runs()` times (after `prepare()` each time, untimed) and
/// returns the median time and the largest peak RSS.
fn measure(mut prepare: impl FnMut() -> Result<()>, make: impl Fn() -> Command) -> Result<Measure> {
    let gnu_time = Path::new("/usr/bin/time").is_file();
    let mut times = Vec::new();
    let mut peak = None;
    for _ in 0..runs() {
        prepare()?;
        let base = make();
        let mut cmd = if gnu_time {
            let mut c = Command::new("/usr/bin/time");
            c.args(["-f", "%M", "-o", "/dev/stderr"]);
            c.arg(base.get_program()).args(base.get_args());
            for (k, v) in base.get_envs() {
                if let Some(v) = v {
                    c.env(k, v);
                }
            }
            c
        } else {
            base
        };
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let t = Instant::now();
        let out = cmd.output().context("running benchmark command")?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if !out.status.success() {
            bail!(
                "{:?} failed: {}",
                make().get_program(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if gnu_time {
            let err = String::from_utf8_lossy(&out.stderr);
            if let Some(kib) = err.lines().rev().find_map(|l| l.trim().parse::<u64>().ok()) {
                peak = Some(peak.map_or(kib, |p: u64| p.max(kib)));
            }
        }
        times.push(ms);
    }
    times.sort_by(f64::total_cmp);
    Ok(Measure {
        median_ms: times[times.len() / 2],
        peak_kib: peak,
    })
}

fn row(task: &str, tool: &str, m: &Measure, base: Option<&Measure>) {
    let ratio = base.map_or(String::from("1.00x"), |b| {
        format!("{:.2}x", m.median_ms / b.median_ms)
    });
    let mem = m
        .peak_kib
        .map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!(
        "{task:<34} {tool:<22} {:>10.1} ms {:>10} {:>12}",
        m.median_ms, ratio, mem
    );
}

fn decompress_xz(src: &Path, dst: &Path) -> Result<()> {
    let out = Command::new("xz")
        .args(["-dc"])
        .arg(src)
        .output()
        .with_context(|| format!("xz -dc {}", src.display()))?;
    ensure!(out.status.success(), "xz failed on {}", src.display());
    std::fs::write(dst, out.stdout)?;
    Ok(())
}

fn copy(src: &Path, dst: &Path) -> Result<()> {
    std::fs::copy(src, dst)
        .with_context(|| format!("copy {} -> {}", src.display(), dst.display()))?;
    Ok(())
}

/// A .reg with `keys` keys of three values each, under `prefix\Bench`.
fn edits_reg(prefix: &str, keys: usize) -> String {
    let mut s = String::from("Windows Registry Editor Version 5.00\n\n");
    s.push_str(&format!("[{prefix}\\Bench]\n\n"));
    for i in 0..keys {
        s.push_str(&format!("[{prefix}\\Bench\\Key{i:05}]\n"));
        s.push_str(&format!(
            "\"Name\"=hex(1):{}\n",
            hex_utf16z(&format!("value {i}"))
        ));
        s.push_str(&format!("\"Count\"=dword:{i:08x}\n"));
        s.push_str("\"Blob\"=hex:00,11,22,33,44,55,66,77,88,99,aa,bb,cc,dd,ee,ff\n\n");
    }
    s
}

fn hex_utf16z(s: &str) -> String {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Finds a machine-style domain SID (S-1-5-21-a-b-c) mentioned in a dump.
fn find_domain_sid(dump: &str) -> Option<String> {
    let i = dump.find("S-1-5-21-")?;
    let rest = &dump[i..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '-' || c == 'S'))
        .unwrap_or(rest.len());
    let parts: Vec<&str> = rest[..end].split('-').collect();
    (parts.len() >= 7).then(|| parts[..7].join("-"))
}

pub fn run(args: &[&str]) -> Result<()> {
    match args {
        ["hive"] => bench_hive(),
        ["devices"] => bench_devices::bench_devices(),
        ["sid"] => bench_sid::bench_sid(),
        ["wim"] => bench_wim::bench_wim(),
        ["disk"] => bench_disk::bench_disk(),
        ["stamp"] => bench_stamp::bench_stamp(),
        _ => bail!("usage: cargo xtask bench hive|devices|sid|wim|disk|stamp"),
    }
}

fn bench_hive() -> Result<()> {
    setup::run()?;
    let corpus = util::root().join("../shared/corpus");
    ensure!(
        corpus.is_dir(),
        "the benchmark needs ../shared/corpus (real SYSTEM hives)"
    );
    let reseal = build_reseal()?;
    let dir = util::root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    step("preparing inputs");
    let regipy = corpus.join("regipy/regipy_tests/data");
    let win7 = dir.join("SYSTEM-win7");
    decompress_xz(&regipy.join("SYSTEM.xz"), &win7)?;
    let dirty = dir.join("SYSTEM_B");
    decompress_xz(&regipy.join("SYSTEM_B.xz"), &dirty)?;
    decompress_xz(&regipy.join("SYSTEM_B.LOG1.xz"), &dir.join("SYSTEM_B.LOG1"))?;
    decompress_xz(&regipy.join("SYSTEM_B.LOG2.xz"), &dir.join("SYSTEM_B.LOG2"))?;
    let win10 = dir.join("SYSTEM-win10");
    util::exec(
        Command::new(&reseal)
            .args(["hive", "replay"])
            .arg(&dirty)
            .arg("-o")
            .arg(&win10),
    )?;
    let inputs: Vec<(&str, PathBuf)> = vec![("Win10 SYSTEM", win10), ("Win7 SYSTEM", win7)];
    for (label, p) in &inputs {
        println!(
            "{label}: {} ({:.1} MB)",
            p.display(),
            std::fs::metadata(p)?.len() as f64 / 1e6
        );
    }
    println!(
        "runs per measurement: {} (RESEAL_BENCH_RUNS to change)",
        runs()
    );
    println!(
        "\n{:<34} {:<22} {:>13} {:>10} {:>12}",
        "task", "tool", "median", "vs reseal", "peak RSS"
    );
    let none = || Ok(());
    for (label, hive) in &inputs {
        let task = format!("export {label}");
        let ours = measure(none, || {
            let mut c = Command::new(&reseal);
            c.args(["hive", "export"]).arg(hive);
            c
        })?;
        row(&task, "reseal hive export", &ours, None);
        let hx = measure(none, || {
            let mut c = Command::new("hivexregedit");
            c.arg("--export").arg(hive).arg("\\");
            c
        })?;
        row(&task, "hivexregedit --export", &hx, Some(&ours));
        let rf = measure(none, || {
            let mut c = Command::new("regfexport");
            c.arg(hive);
            c
        })?;
        row(&task, "regfexport", &rf, Some(&ours));
    }
    let (label, hive) = &inputs[0];
    let prefix = "HKEY_LOCAL_MACHINE\\SYSTEM";
    let keys = 2000;
    let reg = dir.join("edits.reg");
    std::fs::write(&reg, edits_reg(prefix, keys))?;
    let task = format!("apply .reg ({keys} keys, {} values) {label}", keys * 3);
    let work = dir.join("merge-target");
    let ours = measure(
        || copy(hive, &work),
        || {
            let mut c = Command::new(&reseal);
            c.args(["hive", "import"])
                .arg(&work)
                .arg(&reg)
                .args(["--prefix", prefix]);
            c
        },
    )?;
    row(&task, "reseal hive import", &ours, None);
    let hx = measure(
        || copy(hive, &work),
        || {
            let mut c = Command::new("hivexregedit");
            c.arg("--merge")
                .arg(&work)
                .arg(&reg)
                .args(["--prefix", prefix]);
            c
        },
    )?;
    row(&task, "hivexregedit --merge", &hx, Some(&ours));

    let dump = Command::new(&reseal)
        .args(["hive", "dump"])
        .arg(hive)
        .output()?;
    let dump = String::from_utf8_lossy(&dump.stdout);
    let old = find_domain_sid(&dump).unwrap_or_else(|| "S-1-5-21-1-2-3".into());
    let task = format!("SID rewrite {label}");
    let out = dir.join("rewritten");
    let ours = measure(none, || {
        let mut c = Command::new(&reseal);
        c.args(["hive", "rewrite-sid"])
            .arg(hive)
            .arg("-o")
            .arg(&out);
        c.args([
            "--old",
            &old,
            "--new",
            "S-1-5-21-1111111111-2222222222-3333333333",
        ]);
        c
    })?;
    row(&task, "reseal hive rewrite-sid", &ours, None);
    let t = Command::new(&reseal)
        .args(["hive", "rewrite-sid", "--timings"])
        .arg(hive)
        .arg("-o")
        .arg(&out)
        .args([
            "--old",
            &old,
            "--new",
            "S-1-5-21-1111111111-2222222222-3333333333",
        ])
        .output()?;
    println!(
        "\nSID rewrite of {} ({old}): {} {}",
        hive.display(),
        String::from_utf8_lossy(&t.stdout).trim(),
        String::from_utf8_lossy(&t.stderr).trim()
    );
    println!(
        "machine: {} cores; hive sizes above; all tools run as separate processes from disk",
        num_cpus()
    );
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
