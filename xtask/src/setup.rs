//! `cargo xtask setup`: installs what the tests and the demo need on a
//! Debian or Ubuntu machine, skipping whatever is already there.
//!
//! * Debian packages for the independent readers: hivex (`hivexregedit`,
//!   `hivexsh`), libregf (`regfexport`, `regfinfo`), and `xz`.
//! * wimlib: `libwim-dev` (linked by the `reseal` crate), `wimtools`
//!   (`wimlib-imagex`, used by the tests) and `pkg-config`.
//! * NTFS and disk images: `ntfs-3g-dev` (libntfs-3g, linked by the
//!   `reseal` crate to write NTFS volumes), `ntfs-3g` (mkntfs, ntfscat,
//!   ntfsfix, ntfssecaudit: fixtures and independent checks), `fdisk`
//!   (sfdisk) and `qemu-utils` (qemu-img: VHD/VHDX conversion and checks).
//! * Packaging (`cargo xtask dist`) and the man page test: `groff-base`,
//!   `man-db`, `binutils` (strip, readelf), `dpkg-dev` (dpkg-shlibdeps).
//! * A Python virtual environment in `target/venv` with the Python readers
//!   regipy and dissect.regf, at pinned versions.
//! * The rustfmt and clippy components.

use crate::util::{self, exec, have, is_root, step, succeeds};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

/// Pinned Python packages (with their dependencies, so that a new release
/// cannot change what the tests see).
pub const PY_PACKAGES: &[&str] = &[
    "regipy==6.5.0",
    "construct==2.10.70",
    "inflection==0.5.1",
    "pytz==2026.6",
    "dissect.regf==3.14",
    "dissect.cstruct==4.7",
    "dissect.util==3.24",
    "dissect.hypervisor==3.21",
];

/// Which command comes from which Debian packages.
const DEBIAN: &[(&str, &[&str])] = &[
    ("hivexregedit", &["libhivex-bin", "libwin-hivex-perl"]),
    ("hivexsh", &["libhivex-bin"]),
    ("regfexport", &["libregf-utils"]),
    ("regfinfo", &["libregf-utils"]),
    ("xz", &["xz-utils"]),
    ("wimlib-imagex", &["wimtools"]),
    ("pkg-config", &["pkg-config"]),
    ("sfdisk", &["fdisk"]),
    ("mkntfs", &["ntfs-3g"]),
    ("qemu-img", &["qemu-utils"]),
    ("vhdiinfo", &["libvhdi-utils", "python3-libvhdi"]),
    ("strace", &["strace"]),
    // `cargo xtask dist` and the CLI's man page test.
    ("groff", &["groff-base"]),
    ("man", &["man-db"]),
    ("strip", &["binutils"]),
    ("dpkg-shlibdeps", &["dpkg-dev"]),
];

/// Which file (not a command) comes from which Debian packages: wimlib's
/// header and development library, which the `reseal` crate links against.
const DEBIAN_FILES: &[(&str, &[&str])] = &[
    ("/usr/include/wimlib.h", &["libwim-dev"]),
    ("/usr/include/ntfs-3g/volume.h", &["ntfs-3g-dev"]),
];

/// The virtual environment's directory.
pub fn venv_dir() -> PathBuf {
    util::root().join("target/venv")
}

/// The virtual environment's interpreter.
pub fn venv_python() -> PathBuf {
    venv_dir().join("bin/python")
}

pub fn run() -> Result<()> {
    step("setup: system packages");
    debian_packages()?;
    step("setup: Python validators in target/venv");
    python_venv()?;
    step("setup: rustfmt and clippy");
    rust_components()?;
    println!("setup: done");
    Ok(())
}

fn debian_packages() -> Result<()> {
    let mut missing: Vec<&str> = Vec::new();
    let mut add = |pkgs: &[&'static str]| {
        for p in pkgs {
            if !missing.contains(p) {
                missing.push(p);
            }
        }
    };
    for (cmd, pkgs) in DEBIAN {
        if have(cmd) {
            println!("ok: {cmd} found");
        } else {
            println!("missing: {cmd} (from {})", pkgs.join(", "));
            add(pkgs);
        }
    }
    for (file, pkgs) in DEBIAN_FILES {
        if std::path::Path::new(file).exists() {
            println!("ok: {file} found");
        } else {
            println!("missing: {file} (from {})", pkgs.join(", "));
            add(pkgs);
        }
    }
    if have("hivexregedit")
        && !succeeds(Command::new("perl").args(["-MWin::Hivex::Regedit", "-e1"]))
    {
        println!("missing: Perl module Win::Hivex::Regedit (from libwin-hivex-perl)");
        add(&["libwin-hivex-perl"]);
    }
    if !have("python3") {
        println!("missing: python3");
        add(&["python3", "python3-venv"]);
    } else if !venv_python().exists()
        && !succeeds(Command::new("python3").args(["-c", "import venv, ensurepip"]))
    {
        println!("missing: Python's venv module (from python3-venv)");
        add(&["python3-venv"]);
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !have("apt-get") {
        bail!(
            "these packages are needed but apt-get is not available: {}",
            missing.join(" ")
        );
    }
    println!("installing with apt-get: {}", missing.join(" "));
    exec(apt_get().arg("update"))?;
    exec(
        apt_get()
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(())
}

/// `apt-get`, non-interactive, through sudo when not root.
fn apt_get() -> Command {
    if is_root() {
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    } else {
        let mut c = Command::new("sudo");
        c.args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        c
    }
}

fn python_venv() -> Result<()> {
    let venv = venv_dir();
    let python = venv_python();
    let marker = venv.join(".reseal-packages");
    let wanted = PY_PACKAGES.join("\n");
    let imports_ok = || succeeds(Command::new(&python).args(["-c", "import regipy, dissect.regf"]));
    if python.exists()
        && std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str())
        && imports_ok()
    {
        println!("ok: {} has {}", venv.display(), PY_PACKAGES.join(" "));
        return Ok(());
    }
    if !python.exists() {
        std::fs::create_dir_all(util::root().join("target")).context("creating target/")?;
        exec(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    exec(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
            ])
            .args(PY_PACKAGES),
    )?;
    if !imports_ok() {
        bail!(
            "the Python validators were installed but cannot be imported by {}",
            python.display()
        );
    }
    std::fs::write(&marker, wanted).with_context(|| format!("writing {}", marker.display()))?;
    println!("ok: Python validators installed in {}", venv.display());
    Ok(())
}

fn rust_components() -> Result<()> {
    let mut missing = Vec::new();
    for (sub, component) in [("fmt", "rustfmt"), ("clippy", "clippy")] {
        if succeeds(util::cargo().args([sub, "--version"])) {
            println!("ok: cargo {sub} found");
        } else {
            println!("missing: cargo {sub} (component {component})");
            missing.push(component);
        }
    }
    if !missing.is_empty() {
        exec(
            Command::new("rustup")
                .args(["component", "add"])
                .args(&missing),
        )?;
    }
    Ok(())
}
