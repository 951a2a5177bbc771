//! `cargo xtask demo`: sets up the machine, then shows the hive engine at
//! work on a hive that the demo generates itself (no outside data): check,
//! dump, .reg import, machine-SID rewrite and export with the `reseal`
//! binary, and a read-back of the result with an independent reader.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::setup;
use crate::util::{self, exec, step};
use reseal_testkit::{self as fixtures, SAMPLE_MACHINE_SID};

/// The SID the demo gives the sample machine.
const NEW_SID: &str = "S-1-5-21-3141592653-589793238-462643383";

pub fn run() -> Result<()> {
    setup::run()?;
    let workdir = util::root().join("target/demo");
    if workdir.exists() {
        std::fs::remove_dir_all(&workdir)
            .with_context(|| format!("cleaning {}", workdir.display()))?;
    }
    std::fs::create_dir_all(&workdir).with_context(|| format!("creating {}", workdir.display()))?;
    step(&format!("demo in {}", workdir.display()));
    run_demo(&workdir)
}

/// Builds the release `reseal` binary and returns its path.
pub fn build_reseal() -> Result<PathBuf> {
    step("building reseal (release)");
    exec(util::cargo().args(["build", "--release", "--quiet", "-p", "reseal-cli"]))?;
    let bin = util::root().join("target/release/reseal");
    ensure!(bin.is_file(), "{} was not built", bin.display());
    Ok(bin)
}

fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd
        .output()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !o.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The demonstration itself. Files go to `workdir`.
pub fn run_demo(workdir: &Path) -> Result<()> {
    let reseal = build_reseal()?;
    let hive = workdir.join("SOFTWARE");
    step("generating a sample SOFTWARE hive of a made-up Windows 10 machine");
    fixtures::write_sample_software(&hive)?;
    println!(
        "wrote {} (machine SID {SAMPLE_MACHINE_SID})",
        hive.display()
    );

    step("structural check");
    exec(Command::new(&reseal).args(["hive", "check"]).arg(&hive))?;

    step("the ProfileList, as reseal dumps it");
    let dump = output(Command::new(&reseal).args(["hive", "dump"]).arg(&hive))?;
    let mut inside = false;
    for line in dump.lines() {
        if line.starts_with('[') {
            inside = line.contains("ProfileList");
        }
        if inside {
            println!("{line}");
        }
    }

    step("importing a .reg file (new key, values of several types, a deletion)");
    let reg = workdir.join("changes.reg");
    std::fs::write(
        &reg,
        "Windows Registry Editor Version 5.00\r\n\r\n\
         [HKEY_LOCAL_MACHINE\\SOFTWARE\\Contoso\\Agent]\r\n\
         \"Version\"=\"4.2.1\"\r\n\
         \"Interval\"=dword:0000003c\r\n\
         \"Servers\"=hex(7):61,00,00,00,62,00,00,00,00,00\r\n\r\n\
         [HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion]\r\n\
         \"RegisteredOwner\"=-\r\n",
    )?;
    exec(
        Command::new(&reseal)
            .args(["hive", "import"])
            .arg(&hive)
            .arg(&reg)
            .args(["--prefix", "HKEY_LOCAL_MACHINE\\SOFTWARE"]),
    )?;

    step(&format!(
        "rewriting the machine SID {SAMPLE_MACHINE_SID} -> {NEW_SID}"
    ));
    exec(
        Command::new(&reseal)
            .args(["hive", "rewrite-sid"])
            .arg(&hive)
            .args(["--old", SAMPLE_MACHINE_SID, "--new", NEW_SID]),
    )?;
    exec(Command::new(&reseal).args(["hive", "check"]).arg(&hive))?;

    step("exporting the ProfileList as .reg");
    exec(
        Command::new(&reseal)
            .args(["hive", "export"])
            .arg(&hive)
            .arg("Microsoft\\Windows NT\\CurrentVersion\\ProfileList")
            .args(["--prefix", "HKEY_LOCAL_MACHINE\\SOFTWARE"]),
    )?;

    step("reading the result back with an independent reader (hivexregedit)");
    let exported = output(
        Command::new("hivexregedit")
            .env("PERL_UNICODE", "SO")
            .arg("--export")
            .arg(&hive)
            .arg("\\"),
    )?;
    let old_tail = SAMPLE_MACHINE_SID.trim_start_matches("S-1-5-21-");
    ensure!(
        !exported.contains(old_tail),
        "hivexregedit still sees the old SID"
    );
    ensure!(
        exported.contains(&format!("{NEW_SID}-1001")),
        "hivexregedit does not see the renamed profile key"
    );
    ensure!(
        exported.contains("[\\Contoso\\Agent]"),
        "imported key missing"
    );
    let bytes = std::fs::read(&hive)?;
    let machine: reseal_hive::Sid = SAMPLE_MACHINE_SID.parse()?;
    let old_bin = &machine.to_bytes()[12..];
    ensure!(
        !bytes.windows(old_bin.len()).any(|w| w == old_bin),
        "the old SID's binary form is still somewhere in the file"
    );
    println!(
        "hivexregedit reads {} lines; the old SID appears nowhere in the file (names, data, descriptors, free space); \
         the profile key is now {NEW_SID}-1001.",
        exported.lines().count()
    );
    println!("\nDemo files are in {}", workdir.display());
    Ok(())
}
