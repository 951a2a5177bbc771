//! Records the wimlib and libntfs-3g versions the binary is built against
//! (`pkg-config --modversion`), for `reseal --version`.

use std::process::Command;

fn modversion(lib: &str) -> String {
    let pkg_config = std::env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".into());
    Command::new(pkg_config)
        .args(["--modversion", lib])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
    println!("cargo:rerun-if-changed=build.rs");
    println!(
        "cargo:rustc-env=RESEAL_BUILT_WIMLIB={}",
        modversion("wimlib")
    );
    println!(
        "cargo:rustc-env=RESEAL_BUILT_NTFS3G={}",
        modversion("libntfs-3g")
    );
}
