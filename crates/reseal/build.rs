//! Links libwim (wimlib). The search path and library name come from
//! `pkg-config --libs wimlib` when that works; Debian's wimlib.pc names
//! private requirements (libntfs-3g, fuse) whose .pc files are often not
//! installed, which makes pkg-config fail, so the fallback is plain `-lwim`.
//! Also links libntfs-3g (`-lntfs-3g`), which the NTFS writer calls.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
    let pkg_config = std::env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    let out = Command::new(pkg_config)
        .args(["--libs", "wimlib"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    let mut linked = false;
    if let Some(o) = out {
        for flag in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            if let Some(dir) = flag.strip_prefix("-L") {
                println!("cargo:rustc-link-search=native={dir}");
            } else if let Some(lib) = flag.strip_prefix("-l") {
                println!("cargo:rustc-link-lib={lib}");
                linked |= lib == "wim";
            }
        }
    }
    if !linked {
        println!("cargo:rustc-link-lib=wim");
    }
    // libntfs-3g (Debian ntfs-3g-dev), for writing NTFS volumes.
    println!("cargo:rustc-link-lib=ntfs-3g");
}
