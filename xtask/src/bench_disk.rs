//! `cargo xtask bench disk`: `reseal generalize X.vhdx` (in place, through
//! libntfs-3g over reseal's own block layer) against the script a Linux user
//! writes today for the same registry effect: `qemu-img convert` to raw,
//! copy the NTFS partition out with `dd`, `ntfscat` the hives out, merge a
//! `.reg` with `hivexregedit`, write the hives back with `ntfscp`, put the
//! partition back with `dd` and `qemu-img convert` to VHDX again. Both run
//! on two VHDX images that hold the same Windows root and S and 10 x S of
//! untouched incompressible files.
//!
//! # Inputs
//!
//! * The Windows root. When the shared corpus is present (`RESEAL_CORPUS`
//!   or `../shared/corpus`), the corpus root of `reseal-testkit`: real
//!   Windows 10 SYSTEM (12 MB), SAM and SECURITY; the demo user's
//!   NTUSER.DAT and UsrClass.dat and the DEFAULT hive are also the real
//!   ones of the same corpus machine (RathbunVM). Without the corpus the
//!   synthetic root (hives of a few KB) is used, and the bench says so.
//!   Dirty hives are recovered from their logs (`reseal hive replay`) and
//!   their logs emptied before the images are built: hivexregedit does not
//!   replay logs, and both sides must start from the same registry.
//! * SOFTWARE: the corpus holds no real SOFTWARE hive, so the root's
//!   SOFTWARE (synthetic) is grown to the size of a fresh Windows 10
//!   install's with filler keys under `BenchFiller` (COM-class-like keys
//!   and values, imported with `reseal hive import`). The bench prints the
//!   size and origin of every hive.
//! * Untouched data: S MB of random bytes (incompressible) in 320 files in
//!   16 folders under `Data`, S MB in the small image and 10 x S in the
//!   large one; file count and hives are the same in both.
//! * Each image: a GPT disk with one NTFS basic-data partition at 1 MiB,
//!   sized to fit the root and the data, made with `sfdisk` and `mkntfs`,
//!   filled with `wimlib-imagex apply` of a WIM captured (uncompressed)
//!   from the root, then converted with `qemu-img convert -O vhdx`. This is
//!   setup, not measured.
//!
//! # Measurement
//!
//! reseal runs `generalize --force --seed 1` with the default operations
//! (`--force`: the real SYSTEM has a pending PendingFileRenameOperations,
//! which reseal refuses otherwise; the script checks nothing; `--seed 1`
//! makes the new machine SID the same in every run). The script's `.reg`
//! files are the difference, per hive, between the `hivexregedit --export`
//! of the original hives and of the hives reseal left in the small image
//! after its timed runs: whatever reseal changed in the registry (values,
//! deleted and added keys, SID-named keys renamed), the script changes too.
//! The script changes no files: reseal also deletes leftover files, writes
//! two marker files and rewrites the file security descriptors that name
//! the old machine SID, which the ntfs-3g command-line tools cannot all do
//! without mounting; leaving them out only makes the script faster. Each run works
//! on a fresh copy of the VHDX (copied and synced to disk before the clock
//! starts). Reported: median wall time, the ratio script/reseal, median CPU
//! time (user + system) and peak RSS, the last two measured by GNU time
//! (`/usr/bin/time -f '%U %S %M'`); for the script, CPU time is the sum
//! over its steps and peak RSS the largest of them (the kernel accounts
//! the waited-for descendants). CPU time is shown because wall time on a
//! shared machine also counts waiting for other processes. After the runs
//! on each image, `qemu-img check` must pass on both results, and every
//! hive of both (taken out with `qemu-img convert`, `dd` and `ntfscat`)
//! must export with `hivexregedit --export` to the same content (values of
//! a key sorted: hivexregedit reorders them). The ratio reseal(large) /
//! reseal(small) shows whether reseal's time grows with the untouched
//! data.
//!
//! # Settings
//!
//! * `RESEAL_BENCH_DISK_MB`: S, in MB (default 500, so 500 MB and 5 GB).
//! * `RESEAL_BENCH_RUNS`: runs per measurement (default 5).
//! * `RESEAL_BENCH_DISK_FORMAT`: `vhdx` (default) or `qcow2`: the images,
//!   and what the script converts from and back to, are of that format.
//! * `RESEAL_BENCH_SOFTWARE_MB`: size SOFTWARE is grown to, in MB (default
//!   64; 0 leaves it as built).
//! * `RESEAL_BENCH_KEEP=1`: keep the images in `target/bench/disk` (a later
//!   run with the same settings reuses them). By default every large file
//!   is removed at the end, also after a failure.
//!
//! Disk: about 51 x S MB at the peak (both images, a working copy of the
//! large one and the script's raw disk, partition and new VHDX), all under
//! `target/bench/disk`; 26 GB with the default S.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use super::bench_data::{
    HiveFile, base_mb, build_root, fresh_copy, inputs_stamp, keep, megabytes, write_data,
};
use super::runs;
use crate::demo::build_reseal;
use crate::util::{self, output, step};

/// `--force`: the real SYSTEM has a pending PendingFileRenameOperations,
/// which reseal refuses unless forced (as sysprep would).
const GENERALIZE: [&str; 4] = ["generalize", "--force", "--seed", "1"];
/// Byte offset of the NTFS partition on the images (1 MiB).
const OFFSET: u64 = 1 << 20;
const MIB: u64 = 1 << 20;

/// The container of the images: `RESEAL_BENCH_DISK_FORMAT`, `vhdx`
/// (default) or `qcow2`, as qemu-img names it.
fn format() -> &'static str {
    match std::env::var("RESEAL_BENCH_DISK_FORMAT").as_deref() {
        Ok("qcow2") => "qcow2",
        _ => "vhdx",
    }
}

/// The container's name in the report.
fn label() -> &'static str {
    if format() == "qcow2" { "qcow2" } else { "VHDX" }
}

/// Total size of the files under `dir`.
pub(super) fn tree_bytes(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = fs::symlink_metadata(e.path())?;
        if m.is_dir() {
            n += tree_bytes(&e.path())?;
        } else {
            n += m.len();
        }
    }
    Ok(n)
}

/// Runs a command with its output captured; fails with it on a non-zero
/// exit.
fn quiet(cmd: &mut Command) -> Result<()> {
    output(cmd.stdin(Stdio::null()))?;
    Ok(())
}

/// Copies `part` into `disk` at `offset`, leaving all-zero chunks as holes.
fn splice(part: &Path, disk: &Path, offset: u64) -> Result<()> {
    let mut src = fs::File::open(part).with_context(|| format!("opening {}", part.display()))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .with_context(|| format!("opening {}", disk.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = offset;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let k = src.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            dst.seek(SeekFrom::Start(at))?;
            dst.write_all(&buf[..n])?;
        }
        at += n as u64;
        if n < buf.len() {
            break;
        }
    }
    dst.sync_all()?;
    Ok(())
}

/// One image of the bench.
struct Disk {
    label: &'static str,
    other_mb: u64,
    path: PathBuf,
    /// Size of its NTFS partition (at `OFFSET`).
    part_bytes: u64,
}

/// Puts `mb` MB of random data under `root/Data` ([`write_data`]), builds
/// `disk.path` from the root (GPT, one NTFS partition sized to fit,
/// `wimlib-imagex apply`, VHDX) and removes the data again. Returns the
/// partition size.
pub(super) fn build_disk(
    root: &Path,
    disk: &Path,
    mb: u64,
    salt: u64,
    scratch: &Path,
) -> Result<u64> {
    write_data(root, mb, salt)?;
    let root_bytes = tree_bytes(root)?;
    // The root as a WIM, nothing excluded (wimlib's default configuration
    // leaves out pagefile.sys and others, which the root has on purpose).
    let t = Instant::now();
    let wim = scratch.join("root.wim");
    let config = scratch.join("capture-config.txt");
    fs::write(&config, "[ExclusionList]\n")?;
    let _ = fs::remove_file(&wim);
    quiet(
        Command::new("wimlib-imagex")
            .arg("capture")
            .arg(root)
            .arg(&wim)
            .arg("Windows")
            .arg("--compress=none")
            .arg(format!("--config={}", config.display())),
    )?;
    fs::remove_dir_all(root.join("Data"))?;
    // The partition: room for the files, NTFS metadata and some slack.
    let part_bytes = (root_bytes + root_bytes / 20 + 96 * MIB).div_ceil(MIB) * MIB;
    let part = scratch.join("partition.ntfs");
    let _ = fs::remove_file(&part);
    fs::File::create(&part)?.set_len(part_bytes)?;
    quiet(
        Command::new("mkntfs")
            .args(["-F", "-Q", "-q", "-L", "Windows", "-p"])
            .arg((OFFSET / 512).to_string())
            .arg(&part),
    )?;
    quiet(
        Command::new("wimlib-imagex")
            .arg("apply")
            .arg(&wim)
            .arg("1")
            .arg(&part),
    )?;
    fs::remove_file(&wim)?;
    let raw = scratch.join("disk.raw");
    let _ = fs::remove_file(&raw);
    fs::File::create(&raw)?.set_len(OFFSET + part_bytes + MIB)?;
    let table = format!(
        "label: gpt\nstart={}, size={}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, \
         name=\"Windows\"\n",
        OFFSET / 512,
        part_bytes / 512
    );
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&raw)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running sfdisk")?;
    sfdisk
        .stdin
        .take()
        .context("sfdisk stdin")?
        .write_all(table.as_bytes())?;
    let out = sfdisk.wait_with_output()?;
    ensure!(
        out.status.success(),
        "sfdisk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    splice(&part, &raw, OFFSET)?;
    fs::remove_file(&part)?;
    let _ = fs::remove_file(disk);
    quiet(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", format()])
            .arg(&raw)
            .arg(disk),
    )?;
    fs::remove_file(&raw)?;
    let _ = fs::remove_file(&config);
    println!(
        "built {} ({}; NTFS partition of {}) in {:.1} s",
        disk.display(),
        megabytes(fs::metadata(disk)?.len()),
        megabytes(part_bytes),
        t.elapsed().as_secs_f64()
    );
    Ok(part_bytes)
}

/// Builds the root and the two images, or reuses them when a kept pair was
/// made with the same settings. Also leaves a copy of every hive in
/// `dir/hives-original`.
fn make_disks(reseal: &Path, dir: &Path) -> Result<(Vec<Disk>, Vec<HiveFile>)> {
    let s = base_mb("RESEAL_BENCH_DISK_MB", 500);
    let mut disks = vec![
        Disk {
            label: "small",
            other_mb: s,
            path: dir.join(format!("small.{}", format())),
            part_bytes: 0,
        },
        Disk {
            label: "large",
            other_mb: 10 * s,
            path: dir.join(format!("large.{}", format())),
            part_bytes: 0,
        },
    ];
    let stamp = dir.join("disks.stamp");
    let want = inputs_stamp(s, if format() == "qcow2" { "; qcow2" } else { "" });
    let saved = dir.join("hives-original");
    let listing = dir.join("hives.json");
    if disks.iter().all(|d| d.path.is_file())
        && fs::read_to_string(&stamp).ok().as_deref() == Some(want.as_str())
        && let Ok(text) = fs::read_to_string(&listing)
    {
        let v: serde_json::Value = serde_json::from_str(&text)?;
        for (d, n) in disks
            .iter_mut()
            .zip(v["partitions"].as_array().into_iter().flatten())
        {
            d.part_bytes = n.as_u64().context("partition size")?;
        }
        let mut hives = Vec::new();
        for h in v["hives"].as_array().context("hives")? {
            let f = |k: &str| h[k].as_str().map(String::from).context("hive field");
            hives.push(HiveFile {
                rel: f("rel")?,
                prefix: f("prefix")?,
                origin: f("origin")?,
                bytes: h["bytes"].as_u64().context("hive size")?,
            });
        }
        println!(
            "reusing the kept images in {} ({})",
            dir.display(),
            want.trim()
        );
        return Ok((disks, hives));
    }
    let _ = fs::remove_file(&stamp);
    let root = dir.join("windows-root");
    let (from_corpus, hives) = build_root(reseal, &root, dir, None)?;
    if !from_corpus {
        println!("(synthetic root: the corpus was not found; hives are a few KB)");
    }
    if saved.exists() {
        fs::remove_dir_all(&saved)?;
    }
    fs::create_dir_all(&saved)?;
    for h in &hives {
        fs::copy(root.join(&h.rel), saved.join(h.flat()))?;
    }
    for (i, d) in disks.iter_mut().enumerate() {
        d.part_bytes = build_disk(&root, &d.path, d.other_mb, i as u64, dir)?;
    }
    fs::remove_dir_all(&root)?;
    let v = serde_json::json!({
        "partitions": disks.iter().map(|d| d.part_bytes).collect::<Vec<_>>(),
        "hives": hives.iter().map(|h| serde_json::json!({
            "rel": h.rel, "prefix": h.prefix, "origin": h.origin, "bytes": h.bytes,
        })).collect::<Vec<_>>(),
    });
    fs::write(&listing, serde_json::to_string_pretty(&v)?)?;
    fs::write(&stamp, want)?;
    Ok((disks, hives))
}

/// Takes every hive of `hives` out of `vhdx` into `dest` (flat names), the
/// way the script does: `qemu-img convert` to raw, `dd` of the partition,
/// `ntfscat`.
fn extract_hives(disk: &Disk, vhdx: &Path, hives: &[HiveFile], dest: &Path) -> Result<()> {
    if dest.exists() {
        fs::remove_dir_all(dest)?;
    }
    fs::create_dir_all(dest)?;
    let raw = dest.join("disk.raw");
    let part = dest.join("part.ntfs");
    quiet(
        Command::new("qemu-img")
            .args(["convert", "-f", format(), "-O", "raw"])
            .arg(vhdx)
            .arg(&raw),
    )?;
    quiet(
        Command::new("dd")
            .arg(format!("if={}", raw.display()))
            .arg(format!("of={}", part.display()))
            .args(["bs=1M", "status=none"])
            .arg(format!("skip={}", OFFSET / MIB))
            .arg(format!("count={}", disk.part_bytes / MIB)),
    )?;
    fs::remove_file(&raw)?;
    for h in hives {
        let out = Command::new("ntfscat")
            .arg(&part)
            .arg(format!("/{}", h.rel))
            .stdin(Stdio::null())
            .output()
            .context("running ntfscat")?;
        ensure!(
            out.status.success(),
            "ntfscat {} failed: {}",
            h.rel,
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(dest.join(h.flat()), out.stdout)?;
    }
    fs::remove_file(&part)?;
    Ok(())
}

/// `hivexregedit --export` of a hive under `prefix`.
fn export(hive: &Path, prefix: &str) -> Result<String> {
    output(
        Command::new("hivexregedit")
            .arg("--export")
            .args(["--prefix", prefix])
            .arg(hive)
            .arg("\\"),
    )
    .with_context(|| format!("hivexregedit --export {}", hive.display()))
}

/// A parsed export: keys in order, each with its values as (name, line).
type Export = Vec<(String, Vec<(String, String)>)>;

/// The name part of a value line (`@` or the quoted name, unescaped
/// quotes kept as they are).
fn value_name(line: &str) -> &str {
    if line.starts_with("@=") {
        return "@";
    }
    let b = line.as_bytes();
    let mut i = 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return &line[..=i],
            _ => i += 1,
        }
    }
    line
}

fn parse_export(reg: &str) -> Export {
    let mut keys: Export = Vec::new();
    for line in reg.lines() {
        if let Some(k) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            keys.push((k.to_string(), Vec::new()));
        } else if !line.trim().is_empty()
            && !line.starts_with("Windows Registry Editor")
            && let Some((_, values)) = keys.last_mut()
        {
            values.push((value_name(line).to_string(), line.to_string()));
        }
    }
    keys
}

/// A .reg export as keys with their values sorted: hivexregedit writes a
/// key's value list in its own order, which carries no meaning.
fn normalized(reg: &str) -> BTreeMap<String, Vec<String>> {
    parse_export(reg)
        .into_iter()
        .map(|(k, v)| {
            let mut lines: Vec<String> = v.into_iter().map(|(_, l)| l).collect();
            lines.sort_unstable();
            (k, lines)
        })
        .collect()
}

/// The .reg that turns the registry of export `old` into that of `new`
/// (deleted subtrees, then added keys and changed values in key order),
/// and how many changes it holds.
fn reg_diff(old: &str, new: &str) -> (String, usize) {
    let old = parse_export(old);
    let new = parse_export(new);
    let old_map: HashMap<&str, &Vec<(String, String)>> =
        old.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let new_keys: HashSet<&str> = new.iter().map(|(k, _)| k.as_str()).collect();
    let mut s = String::from("Windows Registry Editor Version 5.00\n\n");
    let mut n = 0;
    for (k, _) in &old {
        let parent = k.rsplit_once('\\').map_or("", |(p, _)| p);
        // Only the top of a deleted subtree (the root key is `PREFIX\`).
        let parent_kept =
            new_keys.contains(parent) || new_keys.contains(format!("{parent}\\").as_str());
        if !new_keys.contains(k.as_str()) && parent_kept {
            s.push_str(&format!("[-{k}]\n\n"));
            n += 1;
        }
    }
    for (k, values) in &new {
        let mut lines = Vec::new();
        match old_map.get(k.as_str()) {
            None => {
                lines.extend(values.iter().map(|(_, l)| l.clone()));
                n += 1;
            }
            Some(before) => {
                let was: HashMap<&str, &str> = before
                    .iter()
                    .map(|(n, l)| (n.as_str(), l.as_str()))
                    .collect();
                let now: HashSet<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
                for (name, _) in before.iter() {
                    if !now.contains(name.as_str()) {
                        lines.push(format!("{name}=-"));
                    }
                }
                for (name, line) in values {
                    if was.get(name.as_str()) != Some(&line.as_str()) {
                        lines.push(line.clone());
                    }
                }
                if lines.is_empty() {
                    continue;
                }
            }
        }
        n += lines.len();
        s.push_str(&format!("[{k}]\n"));
        for l in lines {
            s.push_str(&l);
            s.push('\n');
        }
        s.push('\n');
    }
    (s, n)
}

/// The user's script for `disk`: the hives of `hives` with a `.reg` in
/// `regs` (per hive, by flat name) are taken out, merged and put back.
/// `$1` is the VHDX.
fn script(disk: &Disk, tmp: &Path, hives: &[HiveFile], regs: &Path) -> String {
    let f = format();
    let mut s = format!(
        "set -e\nT='{}'\nqemu-img convert -f {f} -O raw \"$1\" \"$T/disk.raw\"\n",
        tmp.display()
    );
    // The partition's place, as `sfdisk -l` shows it.
    let (skip, count) = (OFFSET / MIB, disk.part_bytes / MIB);
    s.push_str(&format!(
        "dd if=\"$T/disk.raw\" of=\"$T/part.ntfs\" bs=1M skip={skip} count={count} status=none\n"
    ));
    for h in hives {
        s.push_str(&format!(
            "ntfscat \"$T/part.ntfs\" '/{}' > \"$T/{}\"\n",
            h.rel,
            h.flat()
        ));
    }
    for h in hives {
        s.push_str(&format!(
            "hivexregedit --merge \"$T/{}\" --prefix '{}' '{}'\n",
            h.flat(),
            h.prefix,
            regs.join(format!("{}.reg", h.flat())).display()
        ));
    }
    for h in hives {
        s.push_str(&format!(
            "ntfscp -q \"$T/part.ntfs\" \"$T/{}\" '/{}'\n",
            h.flat(),
            h.rel
        ));
    }
    s.push_str(&format!(
        "dd if=\"$T/part.ntfs\" of=\"$T/disk.raw\" bs=1M seek={skip} conv=notrunc status=none\n"
    ));
    s.push_str(&format!(
        "qemu-img convert -f raw -O {f} \"$T/disk.raw\" \"$T/new.{f}\"\n"
    ));
    s.push_str(&format!("mv \"$T/new.{f}\" \"$1\"\nrm -f \"$T\"/*\n"));
    s
}

/// One measured command: median wall time, median CPU time (user and
/// system, of the command and the descendants it waited for) and the
/// largest peak RSS (of the command or of one of those descendants).
pub(super) struct Timing {
    pub(super) wall_ms: f64,
    pub(super) cpu_ms: Option<f64>,
    pub(super) peak_kib: Option<u64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `make()` `runs()` times, `prepare()` before each (not timed), under
/// GNU time when present (`%U %S %M`, written to `scratch/time.txt`).
pub(super) fn time_runs(
    mut prepare: impl FnMut() -> Result<()>,
    make: impl Fn() -> Command,
    scratch: &Path,
) -> Result<Timing> {
    let gnu_time = Path::new("/usr/bin/time").is_file();
    let report = scratch.join("time.txt");
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    let mut peak: Option<u64> = None;
    for _ in 0..runs() {
        prepare()?;
        let base = make();
        let mut cmd = if gnu_time {
            let mut c = Command::new("/usr/bin/time");
            c.args(["-f", "%U %S %M", "-o"]).arg(&report);
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
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let t = Instant::now();
        let out = cmd.output().context("running the benchmark command")?;
        walls.push(t.elapsed().as_secs_f64() * 1000.0);
        ensure!(
            out.status.success(),
            "{:?} failed: {}",
            make().get_program(),
            String::from_utf8_lossy(&out.stderr)
        );
        if gnu_time {
            let text = fs::read_to_string(&report)?;
            let f: Vec<&str> = text
                .lines()
                .last()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            if let [u, s, m] = f[..]
                && let (Ok(u), Ok(s), Ok(m)) = (u.parse::<f64>(), s.parse::<f64>(), m.parse())
            {
                cpus.push((u + s) * 1000.0);
                peak = Some(peak.map_or(m, |p| p.max(m)));
            }
        }
    }
    let _ = fs::remove_file(&report);
    Ok(Timing {
        wall_ms: median(&mut walls),
        cpu_ms: (!cpus.is_empty()).then(|| median(&mut cpus)),
        peak_kib: peak,
    })
}

/// `qemu-img check` of `vhdx`; fails when it does.
fn check(vhdx: &Path) -> Result<()> {
    quiet(
        Command::new("qemu-img")
            .args(["check", "-f", format()])
            .arg(vhdx),
    )
    .with_context(|| format!("qemu-img check {}", vhdx.display()))
}

/// The exports of every hive of `vhdx` (by flat name).
fn exports(
    disk: &Disk,
    vhdx: &Path,
    hives: &[HiveFile],
    dest: &Path,
) -> Result<BTreeMap<String, String>> {
    extract_hives(disk, vhdx, hives, dest)?;
    let mut out = BTreeMap::new();
    for h in hives {
        out.insert(h.flat(), export(&dest.join(h.flat()), &h.prefix)?);
    }
    fs::remove_dir_all(dest)?;
    Ok(out)
}

/// Fails unless the two sets of exports hold the same registry content,
/// naming the first differences.
fn same_registry(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Result<()> {
    for (name, ea) in a {
        let eb = b.get(name).context("hive missing")?;
        let (na, nb) = (normalized(ea), normalized(eb));
        if na == nb {
            continue;
        }
        let mut diffs = Vec::new();
        for (k, v) in &na {
            if nb.get(k) != Some(v) {
                diffs.push(format!("  reseal: [{k}] {v:?}\n  script: {:?}", nb.get(k)));
            }
        }
        for k in nb.keys().filter(|k| !na.contains_key(*k)) {
            diffs.push(format!("  only after the script: [{k}]"));
        }
        diffs.truncate(5);
        anyhow::bail!(
            "{name}: the script and reseal left different registry content:\n{}",
            diffs.join("\n")
        );
    }
    Ok(())
}

/// Removes the large files of the bench from `dir`.
fn clean_up(dir: &Path) {
    let mut freed = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_file()
            && (name.ends_with(".vhdx")
                || name.ends_with(".qcow2")
                || name.ends_with(".raw")
                || name.ends_with(".ntfs")
                || name.ends_with(".wim")
                || name == "disks.stamp")
        {
            freed += meta.len();
            let _ = fs::remove_file(&p);
        } else if meta.is_dir()
            && (name == "windows-root"
                || name == "script-tmp"
                || name.starts_with("check-")
                || name == "hives-original"
                || name == "hives-reseal")
        {
            freed += tree_bytes(&p).unwrap_or(0);
            let _ = fs::remove_dir_all(&p);
        }
    }
    println!(
        "removed the images and working files ({}) from {} (RESEAL_BENCH_KEEP=1 keeps the images)",
        megabytes(freed),
        dir.display()
    );
}

pub fn bench_disk() -> Result<()> {
    for tool in [
        "qemu-img",
        "ntfscat",
        "ntfscp",
        "hivexregedit",
        "wimlib-imagex",
        "mkntfs",
        "sfdisk",
        "dd",
    ] {
        ensure!(
            util::have(tool) || Path::new("/usr/sbin").join(tool).is_file(),
            "{tool} is needed (cargo xtask setup)"
        );
    }
    let reseal = build_reseal()?;
    let dir = util::root().join("target/bench/disk");
    fs::create_dir_all(&dir)?;
    let result = run_bench(&reseal, &dir);
    if !keep() {
        clean_up(&dir);
    } else {
        for d in ["script-tmp", "check-reseal", "check-script"] {
            let _ = fs::remove_dir_all(dir.join(d));
        }
        let _ = fs::remove_file(dir.join(format!("work.{}", format())));
    }
    result
}

struct Outcome {
    vhdx_bytes: u64,
    reseal: Timing,
    script: Timing,
    reseal_after: u64,
    script_after: u64,
}

fn run_bench(reseal: &Path, dir: &Path) -> Result<()> {
    // ntfscp lives in /usr/sbin on Debian, which a user's PATH may lack.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    for d in ["/usr/sbin", "/sbin"] {
        if !dirs.iter().any(|p| p == Path::new(d)) {
            dirs.push(d.into());
        }
    }
    let path = std::env::join_paths(dirs)?;

    step(&format!("preparing inputs in {}", dir.display()));
    let (disks, hives) = make_disks(reseal, dir)?;
    println!("hives in both images:");
    for h in &hives {
        println!("  {:<56} {:>9}  {}", h.rel, megabytes(h.bytes), h.origin);
    }
    println!(
        "  total {} in {} hives",
        megabytes(hives.iter().map(|h| h.bytes).sum()),
        hives.len()
    );
    let saved = dir.join("hives-original");
    let mut original = BTreeMap::new();
    for h in &hives {
        original.insert(h.flat(), export(&saved.join(h.flat()), &h.prefix)?);
    }

    let work = dir.join(format!("work.{}", format()));
    let tmp = dir.join("script-tmp");
    let regs = dir.join("regs");
    let mut changed: Option<Vec<HiveFile>> = None;
    let mut first: Option<BTreeMap<String, String>> = None;
    let mut results = Vec::new();
    for d in &disks {
        let vhdx_bytes = fs::metadata(&d.path)?.len();
        step(&format!(
            "measuring the {} image ({} MB other data, {} {}): {} runs each",
            d.label,
            d.other_mb,
            label(),
            megabytes(vhdx_bytes),
            runs()
        ));
        let reseal_m = time_runs(
            || fresh_copy(&d.path, &work),
            || {
                let mut c = Command::new(reseal);
                c.args(GENERALIZE).arg(&work);
                c
            },
            dir,
        )?;
        let reseal_after = fs::metadata(&work)?.len();
        check(&work)?;
        let ours = exports(d, &work, &hives, &dir.join("check-reseal"))?;
        println!(
            "reseal: median {:.0} ms; qemu-img check passed",
            reseal_m.wall_ms
        );
        if let Some(f) = &first {
            same_registry(f, &ours).context("reseal on the small and the large image")?;
        }
        // The script, from what reseal changed in the first image.
        if changed.is_none() {
            if regs.exists() {
                fs::remove_dir_all(&regs)?;
            }
            fs::create_dir_all(&regs)?;
            let mut list = Vec::new();
            let mut total = 0;
            for h in &hives {
                let (reg, n) = reg_diff(&original[&h.flat()], &ours[&h.flat()]);
                if n > 0 {
                    fs::write(regs.join(format!("{}.reg", h.flat())), reg)?;
                    println!("  {:<56} {n:>6} registry changes", h.rel);
                    list.push(h.clone());
                    total += n;
                }
            }
            ensure!(total > 0, "reseal changed nothing in the registry");
            println!(
                "registry changes: {total} in {} hives (.reg files in {})",
                list.len(),
                regs.display()
            );
            changed = Some(list);
        }
        let sh = script(d, &tmp, changed.as_deref().unwrap_or_default(), &regs);
        let sh_path = dir.join(format!("script-{}.sh", d.label));
        fs::write(&sh_path, &sh)?;
        println!("script: {}", sh_path.display());
        let script_m = time_runs(
            || {
                if tmp.exists() {
                    fs::remove_dir_all(&tmp)?;
                }
                fs::create_dir_all(&tmp)?;
                fresh_copy(&d.path, &work)
            },
            || {
                let mut c = Command::new("bash");
                c.arg("-c").arg(&sh).arg("script").arg(&work);
                c.env("PATH", &path);
                c
            },
            dir,
        )?;
        let script_after = fs::metadata(&work)?.len();
        check(&work)?;
        let theirs = exports(d, &work, &hives, &dir.join("check-script"))?;
        println!(
            "script: median {:.0} ms; qemu-img check passed",
            script_m.wall_ms
        );
        same_registry(&ours, &theirs).with_context(|| format!("the {} image", d.label))?;
        println!(
            "all {} hives after both: same registry content (hivexregedit --export)",
            hives.len()
        );
        if first.is_none() {
            first = Some(ours);
        }
        results.push(Outcome {
            vhdx_bytes,
            reseal: reseal_m,
            script: script_m,
            reseal_after,
            script_after,
        });
    }
    let _ = fs::remove_file(&work);
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }

    let peak = |t: &Timing| {
        t.peak_kib
            .map_or("-".to_string(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
    };
    let cpu = |t: &Timing| t.cpu_ms.map_or("-".to_string(), |c| format!("{c:.0} ms"));
    let ratio = |f: fn(&Timing) -> Option<f64>, x: &Timing, y: &Timing| match (f(x), f(y)) {
        (Some(x), Some(y)) => format!("{:.2}", x / y),
        _ => "-".into(),
    };
    let wall: fn(&Timing) -> Option<f64> = |t| Some(t.wall_ms);
    let cpu_of: fn(&Timing) -> Option<f64> = |t| t.cpu_ms;
    println!(
        "\nruns per measurement: {} (RESEAL_BENCH_RUNS), each on a fresh copy of the {}; \
         reseal {}",
        runs(),
        label(),
        GENERALIZE.join(" ")
    );
    println!(
        "\n{:<36} {:<30} {:>11} {:>9} {:>11} {:>11} {:>11}",
        "image",
        "tool",
        "wall",
        "vs reseal",
        "CPU",
        "peak RSS",
        format!("{} after", label())
    );
    for (d, r) in disks.iter().zip(&results) {
        let label = format!(
            "{} ({} MB other, {} {:.0} MB)",
            d.label,
            d.other_mb,
            label(),
            r.vhdx_bytes as f64 / 1e6
        );
        println!(
            "{label:<36} {:<30} {:>8.0} ms {:>9} {:>11} {:>11} {:>11}",
            "reseal generalize",
            r.reseal.wall_ms,
            "1.00x",
            cpu(&r.reseal),
            peak(&r.reseal),
            megabytes(r.reseal_after)
        );
        println!(
            "{label:<36} {:<30} {:>8.0} ms {:>9} {:>11} {:>11} {:>11}",
            "qemu-img+ntfs-3g+hivexregedit",
            r.script.wall_ms,
            format!("{:.2}x", r.script.wall_ms / r.reseal.wall_ms),
            cpu(&r.script),
            peak(&r.script),
            megabytes(r.script_after)
        );
    }
    let (a, b) = (&results[0], &results[1]);
    println!(
        "\nlarge/small (10x untouched data): reseal {} (CPU {}), script {} (CPU {})",
        ratio(wall, &b.reseal, &a.reseal),
        ratio(cpu_of, &b.reseal, &a.reseal),
        ratio(wall, &b.script, &a.script),
        ratio(cpu_of, &b.script, &a.script)
    );
    println!(
        "script/reseal: small {}x (CPU {}x), large {}x (CPU {}x)",
        ratio(wall, &a.script, &a.reseal),
        ratio(cpu_of, &a.script, &a.reseal),
        ratio(wall, &b.script, &b.reseal),
        ratio(cpu_of, &b.script, &b.reseal)
    );
    println!(
        "machine: {} cores; wall and CPU are medians; CPU (user + system) and peak RSS by \
         GNU time, of the command and its descendants (script: CPU summed over its steps, \
         RSS of the largest step)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "Windows Registry Editor Version 5.00\n\n\
        [P\\]\n\n\
        [P\\A]\n\"x\"=dword:00000001\n\"y\"=hex(1):61,00,00,00\n\n\
        [P\\A\\Gone]\n\"z\"=dword:00000002\n\n\
        [P\\A\\Gone\\Child]\n\n\
        [P\\Old]\n\n";
    const NEW: &str = "Windows Registry Editor Version 5.00\n\n\
        [P\\]\n\n\
        [P\\A]\n\"y\"=hex(1):62,00,00,00\n\"w\\\"q\"=dword:00000003\n\n\
        [P\\New]\n@=hex(1):00,00\n\n\
        [P\\New\\Sub]\n\n";

    #[test]
    fn value_names() {
        assert_eq!(value_name("@=hex(1):00,00"), "@");
        assert_eq!(value_name("\"a\\\"b\"=dword:1"), "\"a\\\"b\"");
        assert_eq!(value_name("\"a\\\\\"=dword:1"), "\"a\\\\\"");
    }

    #[test]
    fn diff_deletes_subtree_tops_and_sets_changes() {
        let (reg, n) = reg_diff(OLD, NEW);
        assert_eq!(
            reg,
            "Windows Registry Editor Version 5.00\n\n\
             [-P\\A\\Gone]\n\n\
             [-P\\Old]\n\n\
             [P\\A]\n\"x\"=-\n\"y\"=hex(1):62,00,00,00\n\"w\\\"q\"=dword:00000003\n\n\
             [P\\New]\n@=hex(1):00,00\n\n\
             [P\\New\\Sub]\n\n"
        );
        assert_eq!(n, 2 + 3 + 2 + 1);
        let (_, none) = reg_diff(NEW, NEW);
        assert_eq!(none, 0);
    }

    #[test]
    fn normalized_ignores_value_order() {
        let a = "[K]\n\"b\"=dword:1\n\"a\"=dword:2\n";
        let b = "[K]\n\"a\"=dword:2\n\"b\"=dword:1\n";
        assert_eq!(normalized(a), normalized(b));
        assert_ne!(normalized(a), normalized("[K]\n\"a\"=dword:2\n"));
    }
}
