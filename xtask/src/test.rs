//! `cargo xtask test`: setup, then the same checks CI runs: formatting,
//! clippy with warnings denied, the whole test suite with the independent
//! readers and the corpus made available to it, and the Debian package
//! (`dist --debug --install-check`).

use crate::setup;
use crate::util::{self, exec, step};
use anyhow::{Result, bail};
use std::path::PathBuf;

pub fn run() -> Result<()> {
    setup::run()?;
    let mut failed = Vec::new();

    step("cargo fmt --all --check");
    if let Err(e) = exec(util::cargo().args(["fmt", "--all", "--check"])) {
        eprintln!("{e:#}");
        failed.push("fmt");
    }

    step("cargo clippy --workspace --all-targets -- -D warnings");
    if let Err(e) = exec(util::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])) {
        eprintln!("{e:#}");
        failed.push("clippy");
    }

    step("cargo test --workspace --no-fail-fast");
    let mut test = util::cargo();
    test.args(["test", "--workspace", "--no-fail-fast"]);
    let python = setup::venv_python();
    if python.exists() {
        println!("RESEAL_PYTHON={}", python.display());
        test.env("RESEAL_PYTHON", &python);
    }
    match corpus() {
        Some(dir) => {
            println!("RESEAL_CORPUS={}", dir.display());
            test.env("RESEAL_CORPUS", dir);
        }
        None => println!(
            "notice: no corpus at ../shared/corpus (and RESEAL_CORPUS unset): tests on real hives will be skipped"
        ),
    }
    if let Err(e) = exec(&mut test) {
        eprintln!("{e:#}");
        failed.push("test");
    }

    // The package a user installs: built from the dev build the tests
    // just made, installed with dpkg, run from /usr/bin, removed.
    step("cargo xtask dist --debug --install-check");
    if let Err(e) = crate::dist::run(&["--debug", "--install-check"]) {
        eprintln!("{e:#}");
        failed.push("dist");
    }

    if failed.is_empty() {
        println!("\nxtask test: fmt, clippy, tests and the package passed");
        Ok(())
    } else {
        bail!("failed steps: {}", failed.join(", "))
    }
}

/// `RESEAL_CORPUS` when set, else `../shared/corpus` beside the workspace.
fn corpus() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("RESEAL_CORPUS").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return dir.is_dir().then_some(dir);
    }
    let dir = util::root().join("../shared/corpus");
    if dir.is_dir() {
        dir.canonicalize().ok()
    } else {
        None
    }
}
