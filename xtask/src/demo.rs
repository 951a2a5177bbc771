//! `cargo xtask demo`: sets up the machine, then shows reseal's main job on
//! a sample Windows root the project builds itself from the recipes in
//! `testdata/windows-root` (no outside data): inspect it, generalize a copy,
//! print the report, run again to show nothing is left to do, and read the
//! result back with an independent reader. Then the same sample as a VHDX
//! disk and as a WIM, generalized in place and checked with qemu-img and
//! wimlib-imagex. Then the hive engine on its own: check, dump, .reg
//! import, SID rewrite and export.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::setup;
use crate::util::{self, exec, output, step};
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
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| util::root().join("target"), |d| util::root().join(d));
    let bin = target.join("release/reseal");
    ensure!(bin.is_file(), "{} was not built", bin.display());
    Ok(bin)
}

/// The demonstration itself. Files go to `workdir`.
pub fn run_demo(workdir: &Path) -> Result<()> {
    let reseal = build_reseal()?;
    generalize_demo(workdir, &reseal)?;
    image_demo(workdir, &reseal)?;
    hive_demo(workdir, &reseal)
}

fn generalize_demo(workdir: &Path, reseal: &Path) -> Result<()> {
    step("building a sample Windows 10 root from testdata/windows-root");
    let original = workdir.join("windows-root-original");
    fixtures::build_windows_root(&original, None)?;
    let root = workdir.join("windows-root");
    fixtures::copy_tree(&original, &root)?;
    println!(
        "sample root: {} (pristine copy in {})",
        root.display(),
        original.display()
    );

    step("reseal inspect");
    exec(Command::new(reseal).arg("inspect").arg(&root))?;

    step("reseal generalize (as sysprep /generalize /oobe)");
    let report = workdir.join("report.json");
    exec(
        Command::new(reseal)
            .arg("generalize")
            .arg(&root)
            .arg("--report")
            .arg(&report),
    )?;
    println!("JSON report: {}", report.display());

    step("a second run finds nothing to do");
    exec(Command::new(reseal).arg("generalize").arg(&root))?;

    step("reading the generalized hives back with an independent reader (hivexregedit)");
    let config = root.join("Windows/System32/config");
    let software = output(
        Command::new("hivexregedit")
            .env("PERL_UNICODE", "SO")
            .arg("--export")
            .arg(config.join("SOFTWARE"))
            .arg("\\"),
    )?;
    let system = output(
        Command::new("hivexregedit")
            .env("PERL_UNICODE", "SO")
            .arg("--export")
            .arg(config.join("SYSTEM"))
            .arg("\\"),
    )?;
    let utf16_hex = |s: &str| {
        s.encode_utf16()
            .flat_map(u16::to_le_bytes)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    ensure!(
        software.contains(&utf16_hex("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE")),
        "hivexregedit does not see the generalized ImageState"
    );
    ensure!(
        !software.contains("\"MachineGuid\""),
        "MachineGuid is still there"
    );
    ensure!(
        system.contains(&utf16_hex("oobe\\windeploy.exe")),
        "SYSTEM\\Setup CmdLine is not armed"
    );
    println!(
        "hivexregedit sees ImageState = IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE, SYSTEM\\Setup armed for \
         windeploy, and no MachineGuid."
    );
    Ok(())
}

/// The same root as a VHDX disk and as a WIM, generalized in place, and
/// checked with qemu-img and wimlib-imagex.
fn image_demo(workdir: &Path, reseal: &Path) -> Result<()> {
    step("the same sample as a VHDX disk (GPT, NTFS) and as a WIM");
    let original = workdir.join("windows-root-original");
    let disks = fixtures::build_disk_images(&original, &workdir.join("disk"))?;
    let wims = fixtures::build_wims(&original, &workdir.join("wim"))?;
    let (Some(vhdx), Some(wim)) = (disks.get(2), wims.first()) else {
        println!("skipped: disk or WIM tools missing");
        return Ok(());
    };
    println!("{}\n{}", vhdx.display(), wim.display());

    step("reseal generalize disk.vhdx (NTFS written through libntfs-3g, no mount)");
    exec(Command::new(reseal).arg("generalize").arg(vhdx))?;
    step("qemu-img check of the result");
    exec(Command::new("qemu-img").arg("check").arg(vhdx))?;
    step("reseal inspect reads the new machine SID back");
    let text = output(Command::new(reseal).arg("inspect").arg(vhdx))?;
    print!("{text}");
    ensure!(
        !text.contains(SAMPLE_MACHINE_SID),
        "the VHDX still has the old machine SID"
    );

    step("reseal stamp disk.vhdx: three machines, each its own SID and name (linked clones)");
    let machines = vhdx.parent().map(Path::to_path_buf).unwrap_or_default();
    exec(
        Command::new(reseal)
            .arg("stamp")
            .arg(vhdx)
            .arg("--out")
            .arg(&machines)
            .args(["--count", "3", "--name", "WEB-{n:02}"]),
    )?;
    let mut sids = Vec::new();
    for n in 1..=3 {
        let clone = machines.join(format!("WEB-{n:02}.vhdx"));
        let text = output(Command::new(reseal).arg("inspect").arg(&clone))?;
        let sid = text
            .lines()
            .find(|l| l.starts_with("Machine SID:"))
            .unwrap_or_default()
            .to_string();
        println!("{}: {}", clone.display(), sid.trim());
        ensure!(
            text.contains(&format!("Computer name:       WEB-{n:02}")),
            "clone {n} lacks its name"
        );
        sids.push(sid);
    }
    sids.sort();
    sids.dedup();
    ensure!(sids.len() == 3, "two clones share a machine SID");
    if util::have("vhdiinfo") {
        step("vhdiinfo (libvhdi): a clone is a differencing disk of the template");
        exec(Command::new("vhdiinfo").arg(machines.join("WEB-01.vhdx")))?;
    }

    step("reseal generalize install.wim (in place, by appending)");
    exec(Command::new(reseal).arg("generalize").arg(wim))?;
    step("wimlib-imagex verify, and the replaced SYSTEM hive's entry");
    exec(Command::new("wimlib-imagex").arg("verify").arg(wim))?;
    exec(
        Command::new("wimlib-imagex")
            .arg("dir")
            .arg(wim)
            .arg("1")
            .arg("--detailed")
            .arg("--path=/Windows/System32/config/SYSTEM"),
    )?;
    Ok(())
}

/// The hive engine on its own, on a generated SOFTWARE hive.
fn hive_demo(workdir: &Path, reseal: &Path) -> Result<()> {
    let hive = workdir.join("SOFTWARE");
    step(
        "the hive engine on its own: generating a sample SOFTWARE hive of a made-up Windows 10 machine",
    );
    fixtures::write_sample_software(&hive)?;
    println!(
        "wrote {} (machine SID {SAMPLE_MACHINE_SID})",
        hive.display()
    );

    step("structural check");
    exec(Command::new(reseal).args(["hive", "check"]).arg(&hive))?;

    step("the ProfileList, as reseal dumps it");
    let dump = output(Command::new(reseal).args(["hive", "dump"]).arg(&hive))?;
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
        Command::new(reseal)
            .args(["hive", "import"])
            .arg(&hive)
            .arg(&reg)
            .args(["--prefix", "HKEY_LOCAL_MACHINE\\SOFTWARE"]),
    )?;

    step(&format!(
        "rewriting the machine SID {SAMPLE_MACHINE_SID} -> {NEW_SID}"
    ));
    exec(
        Command::new(reseal)
            .args(["hive", "rewrite-sid"])
            .arg(&hive)
            .args(["--old", SAMPLE_MACHINE_SID, "--new", NEW_SID]),
    )?;
    exec(Command::new(reseal).args(["hive", "check"]).arg(&hive))?;

    step("exporting the ProfileList as .reg");
    exec(
        Command::new(reseal)
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
