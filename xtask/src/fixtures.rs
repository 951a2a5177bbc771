//! `cargo xtask fixtures`: writes the generated fixtures (built by the
//! `reseal-testkit` crate from the recipes in `testdata/`).

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use reseal_testkit::{
    SAMPLE_MACHINE_SID, VARIANTS, build_corpus_root, build_disk_images, build_two_install_disk,
    build_wims, build_windows_root, write_sample_software,
};

/// Writes the sample hive to `testdata/generated/` and the Windows roots to
/// `target/fixtures/` (not committed; regenerate at will): `windows-root`,
/// `variants/<finding>` (one root per preflight finding), `wim/` (the root
/// captured into WIMs: LZX, XPRESS, LZMS, two images, solid ESD), `disk/`
/// (raw, VHD and VHDX of a GPT disk holding it, and a VHDX with two
/// installs) and, when the shared corpus is present, `windows-root-corpus`.
pub fn run() -> Result<()> {
    let root = crate::util::root();
    let dir = root.join("testdata/generated");
    fs::create_dir_all(&dir)?;
    let p = dir.join("sample-software.hiv");
    write_sample_software(&p)?;
    println!("wrote {}", p.display());

    let out = root.join("target/fixtures");
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("cleaning {}", out.display()))?;
    }
    let base = out.join("windows-root");
    build_windows_root(&base, None)?;
    println!(
        "wrote {} (synthetic Windows 10 Pro root, machine SID {SAMPLE_MACHINE_SID})",
        base.display()
    );
    let wims = build_wims(&base, &out.join("wim"))?;
    for w in &wims {
        println!(
            "wrote {} (wimlib-imagex capture of windows-root)",
            w.display()
        );
    }
    for d in build_disk_images(&base, &out.join("disk"))? {
        println!("wrote {} (GPT disk, NTFS with windows-root)", d.display());
    }
    if let Some(d) = build_two_install_disk(&base, &base, &out.join("disk"))? {
        println!(
            "wrote {} (GPT disk, two NTFS partitions, windows-root on each)",
            d.display()
        );
    }
    for v in VARIANTS {
        let d = out.join("variants").join(v);
        build_windows_root(&d, Some(v))?;
        println!("wrote {} (finding: {v})", d.display());
    }
    let corpus = std::env::var_os("RESEAL_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/corpus"));
    let d = out.join("windows-root-corpus");
    if build_corpus_root(&d, &corpus)? {
        println!(
            "wrote {} (real Windows 10 SYSTEM, SAM and SECURITY from {}, dirty with their logs)",
            d.display(),
            corpus.display()
        );
    } else {
        println!(
            "skipped {} (corpus not found at {})",
            d.display(),
            corpus.display()
        );
    }
    Ok(())
}
