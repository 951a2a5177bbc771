//! `cargo xtask dist [--debug]`: the packages a user installs, in
//! `target/dist/`:
//!
//! * `reseal_VERSION_ARCH.deb`: `/usr/bin/reseal`, its man pages under
//!   `/usr/share/man/man1/`, bash, zsh and fish completions, the copyright
//!   file; its `Depends:` are the Debian packages of the shared libraries
//!   the binary links (libwim, libntfs-3g, libc: found by
//!   `dpkg-shlibdeps`, or from `dpkg -S` of each library when it is
//!   missing), so they are right for the release it was built on.
//! * `reseal-VERSION-ARCH-linux.tar.gz`: the same files under
//!   `reseal-VERSION/` (`bin/`, `share/man/man1/`, `share/completions/`),
//!   with README.md and LICENSE.
//!
//! The package is assembled by hand and packed with `dpkg-deb --build`
//! (no cargo-deb: one more tool to install, for a control file of ten
//! lines). `--debug` packages the dev build (what the tests built) instead
//! of a release build: CI uses it to install and run the package without
//! a second full build.
//!
//! `cargo xtask dist --install-check` then installs the package with
//! `dpkg -i` (root only), runs `reseal --version` and a generalize of a
//! fixture root through `/usr/bin/reseal`, checks the man page and
//! completions are where man and the shells look, and removes it.

use crate::util::{self, exec, output, step};
use anyhow::{Context, Result, bail, ensure};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The package name.
const NAME: &str = "reseal";

/// Options of the task.
#[derive(Default)]
pub struct Options {
    /// Package the dev build instead of a release build.
    pub debug: bool,
    /// Install the .deb, run it, remove it.
    pub install_check: bool,
}

/// Parses the task's arguments.
pub fn parse(args: &[&str]) -> Result<Options> {
    let mut o = Options::default();
    for a in args {
        match *a {
            "--debug" => o.debug = true,
            "--install-check" => o.install_check = true,
            other => bail!("dist: unknown argument {other:?} (known: --debug, --install-check)"),
        }
    }
    Ok(o)
}

/// The cargo target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"))
}

/// The workspace version (from the binary's own `--version`).
fn version(bin: &Path) -> Result<String> {
    let v = output(Command::new(bin).arg("-V"))?;
    v.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .context("reseal -V printed no version")
}

pub fn run(args: &[&str]) -> Result<()> {
    let opts = parse(args)?;
    let (deb, tarball) = build(opts.debug)?;
    println!("dist: {}\ndist: {}", deb.display(), tarball.display());
    if opts.install_check {
        install_check(&deb)?;
    }
    Ok(())
}

/// Builds the binary and both packages; returns their paths.
pub fn build(debug: bool) -> Result<(PathBuf, PathBuf)> {
    step(if debug {
        "dist: cargo build -p reseal-cli (dev)"
    } else {
        "dist: cargo build --release -p reseal-cli"
    });
    let mut b = util::cargo();
    b.args(["build", "-p", "reseal-cli", "--bin", "reseal"]);
    if !debug {
        b.arg("--release");
    }
    exec(&mut b)?;
    let built = target_dir()
        .join(if debug { "debug" } else { "release" })
        .join("reseal");
    ensure!(built.is_file(), "{}: not built", built.display());
    let version = version(&built)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();
    let dist = target_dir().join("dist");
    let stage = dist.join(format!("{NAME}_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }

    step("dist: staging the files");
    let bin = stage.join("usr/bin/reseal");
    mkdirs(bin.parent().unwrap_or(&stage))?;
    fs::copy(&built, &bin).with_context(|| format!("copying {}", built.display()))?;
    exec(Command::new("strip").arg("--strip-debug").arg(&bin))?;
    let man = stage.join("usr/share/man/man1");
    mkdirs(&man)?;
    exec(Command::new(&bin).args(["man", "--out-dir"]).arg(&man))?;
    for page in fs::read_dir(&man)? {
        let page = page?.path();
        exec(Command::new("gzip").args(["-9", "-n", "-f"]).arg(&page))?;
    }
    let completions = [
        ("bash", "usr/share/bash-completion/completions/reseal"),
        ("zsh", "usr/share/zsh/vendor-completions/_reseal"),
        ("fish", "usr/share/fish/vendor_completions.d/reseal.fish"),
    ];
    for (shell, path) in completions {
        let script = output(Command::new(&bin).args(["completions", shell]))?;
        let p = stage.join(path);
        mkdirs(p.parent().unwrap_or(&stage))?;
        fs::write(&p, script)?;
    }
    let doc = stage.join("usr/share/doc/reseal");
    mkdirs(&doc)?;
    fs::write(doc.join("copyright"), copyright())?;

    step("dist: control file");
    let depends = depends(&bin)?;
    println!("Depends: {depends}");
    let installed_kib = dir_size(&stage)?.div_ceil(1024);
    let control = format!(
        "Package: {NAME}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: reseal developers <reseal@example.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Recommends: ntfs-3g\n\
         Section: admin\n\
         Priority: optional\n\
         Homepage: https://example.invalid/reseal\n\
         Description: generalize Windows images offline, as sysprep /generalize would\n \
         reseal leaves a captured Windows installation (a directory, a WIM/ESD\n \
         file or a raw, VHD, VHDX, qcow2 or VMDK disk image) in the state\n \
         sysprep /generalize /oobe leaves it in, without booting it, and gives\n \
         each deployed copy its own machine SID, name and MachineGuid\n \
         (personalize, stamp). One command, a clear exit code, a JSON report.\n"
    );
    let debian = stage.join("DEBIAN");
    mkdirs(&debian)?;
    fs::write(debian.join("control"), control)?;

    step("dist: dpkg-deb --build");
    let deb = dist.join(format!("{NAME}_{version}_{arch}.deb"));
    exec(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    check_deb(&deb)?;

    step("dist: tarball");
    let top = format!("{NAME}-{version}");
    let tar_stage = dist.join("tar").join(&top);
    if tar_stage.exists() {
        fs::remove_dir_all(&tar_stage)?;
    }
    mkdirs(&tar_stage.join("bin"))?;
    fs::copy(&bin, tar_stage.join("bin/reseal"))?;
    copy_dir(&man, &tar_stage.join("share/man/man1"))?;
    for (_, path) in completions {
        let from = stage.join(path);
        let name = from.file_name().map(|n| n.to_owned()).unwrap_or_default();
        mkdirs(&tar_stage.join("share/completions"))?;
        fs::copy(&from, tar_stage.join("share/completions").join(name))?;
    }
    for f in ["README.md", "LICENSE"] {
        fs::copy(util::root().join(f), tar_stage.join(f))?;
    }
    let machine = output(Command::new("uname").arg("-m"))?.trim().to_string();
    let tarball = dist.join(format!("{top}-{machine}-linux.tar.gz"));
    exec(
        Command::new("tar")
            .args([
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--sort=name",
                "-czf",
            ])
            .arg(&tarball)
            .arg("-C")
            .arg(dist.join("tar"))
            .arg(&top),
    )?;
    Ok((deb, tarball))
}

fn mkdirs(p: &Path) -> Result<()> {
    fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    mkdirs(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        fs::copy(e.path(), to.join(e.file_name()))?;
    }
    Ok(())
}

fn dir_size(p: &Path) -> Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(p)? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(n)
}

/// The `Depends:` of the binary: `dpkg-shlibdeps` when it is installed
/// (it needs a `debian/control` in its working directory), else each
/// `NEEDED` library's package from `dpkg -S`.
fn depends(bin: &Path) -> Result<String> {
    if util::have("dpkg-shlibdeps") {
        let tmp = bin
            .parent()
            .and_then(Path::parent)
            .and_then(Path::parent)
            .map(|stage| stage.with_extension("shlibdeps"))
            .context("staging path")?;
        mkdirs(&tmp.join("debian"))?;
        fs::write(
            tmp.join("debian/control"),
            format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: any\n"),
        )?;
        let o = Command::new("dpkg-shlibdeps")
            .args(["-O", "-e"])
            .arg(bin)
            .current_dir(&tmp)
            .output()?;
        let _ = fs::remove_dir_all(&tmp);
        let text = String::from_utf8_lossy(&o.stdout);
        if let Some(d) = o
            .status
            .success()
            .then(|| {
                text.lines()
                    .find_map(|l| l.strip_prefix("shlibs:Depends="))
                    .map(str::to_string)
            })
            .flatten()
        {
            return Ok(d);
        }
        eprintln!(
            "dist: dpkg-shlibdeps failed ({}); using dpkg -S",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    let elf = output(Command::new("readelf").arg("-d").arg(bin))?;
    let mut pkgs: Vec<String> = Vec::new();
    for lib in elf.lines().filter_map(|l| {
        l.contains("(NEEDED)")
            .then(|| l.split('[').nth(1)?.split(']').next())
            .flatten()
    }) {
        let path = output(Command::new("ldconfig").arg("-p"))?
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{lib} ")))
            .and_then(|l| l.split("=> ").nth(1))
            .map(str::to_string)
            .with_context(|| format!("{lib}: not found by ldconfig"))?;
        let owner = output(Command::new("dpkg").arg("-S").arg(path.trim())).or_else(|_| {
            // usrmerge: the package may list it under /lib.
            output(
                Command::new("dpkg")
                    .arg("-S")
                    .arg(path.trim().replacen("/usr", "", 1)),
            )
        })?;
        let pkg = owner
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        if !pkg.is_empty() && !pkgs.contains(&pkg) {
            pkgs.push(pkg);
        }
    }
    ensure!(
        !pkgs.is_empty(),
        "no library package found for {}",
        bin.display()
    );
    pkgs.sort();
    Ok(pkgs.join(", "))
}

/// Checks the package with `dpkg-deb`: its fields and that the binary,
/// man page and completions are in it.
fn check_deb(deb: &Path) -> Result<()> {
    let info = output(Command::new("dpkg-deb").arg("-I").arg(deb))?;
    let files = output(Command::new("dpkg-deb").arg("-c").arg(deb))?;
    for want in ["Package: reseal", "Depends:", "libwim", "libntfs-3g"] {
        ensure!(
            info.contains(want),
            "{}: control lacks {want:?}:\n{info}",
            deb.display()
        );
    }
    for want in [
        "./usr/bin/reseal",
        "./usr/share/man/man1/reseal.1.gz",
        "./usr/share/man/man1/reseal-generalize.1.gz",
        "./usr/share/bash-completion/completions/reseal",
        "./usr/share/zsh/vendor-completions/_reseal",
        "./usr/share/fish/vendor_completions.d/reseal.fish",
        "./usr/share/doc/reseal/copyright",
    ] {
        ensure!(
            files.lines().any(|l| l.ends_with(want)),
            "{}: {want} missing:\n{files}",
            deb.display()
        );
    }
    ensure!(
        files.lines().all(|l| l.contains("root/root")),
        "{}: files not owned by root:\n{files}",
        deb.display()
    );
    Ok(())
}

/// Installs the package, runs it from `/usr/bin`, removes it.
fn install_check(deb: &Path) -> Result<()> {
    if !util::is_root() {
        println!("dist: --install-check needs root (dpkg -i); skipped");
        return Ok(());
    }
    step("dist: dpkg -i and a generalize through /usr/bin/reseal");
    exec(Command::new("dpkg").arg("-i").arg(deb))?;
    let result = (|| -> Result<()> {
        let v = output(Command::new("/usr/bin/reseal").arg("--version"))?;
        print!("{v}");
        ensure!(
            v.contains("wimlib") && v.contains("libntfs-3g"),
            "--version: {v}"
        );
        if man_excluded() {
            println!("dist: dpkg excludes /usr/share/man on this machine; man page check skipped");
        } else {
            let page = output(Command::new("man").args(["-w", "reseal-generalize"]))?;
            ensure!(page.contains("/usr/share/man/man1/"), "man -w: {page}");
        }
        let tmp = std::env::temp_dir().join(format!("reseal-dist-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let root = tmp.join("root");
        reseal_testkit::build_windows_root(&root, None)?;
        let o = Command::new("/usr/bin/reseal")
            .args(["generalize", "--json", "--seed", "1"])
            .arg(&root)
            .output()?;
        let _ = fs::remove_dir_all(&tmp);
        ensure!(
            o.status.success(),
            "generalize through /usr/bin/reseal: {}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        ensure!(doc["outcome"] == "done", "outcome: {}", doc["outcome"]);
        println!("dist: the installed reseal generalized a fixture root (outcome done)");
        Ok(())
    })();
    exec(Command::new("dpkg").args(["-r", NAME]))?;
    result
}

/// Whether dpkg is told not to install man pages (minimal container
/// images set `path-exclude=/usr/share/man/*`).
fn man_excluded() -> bool {
    fs::read_dir("/etc/dpkg/dpkg.cfg.d")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .any(|t| {
            t.lines()
                .any(|l| l.trim_start().starts_with("path-exclude") && l.contains("/usr/share/man"))
        })
}

fn copyright() -> String {
    "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
     Upstream-Name: reseal\n\n\
     Files: *\n\
     Copyright: the reseal developers\n\
     License: GPL-3+\n \
     This program is free software: you can redistribute it and/or modify it\n \
     under the terms of the GNU General Public License as published by the\n \
     Free Software Foundation, either version 3 of the License, or (at your\n \
     option) any later version.\n \
     .\n \
     On Debian systems, the full text of the GNU General Public License\n \
     version 3 can be found in /usr/share/common-licenses/GPL-3.\n"
        .to_string()
}
