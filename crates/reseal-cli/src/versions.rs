//! `reseal --version`: reseal's version and those of the C libraries it
//! links, wimlib and libntfs-3g: the version it was built against
//! (pkg-config, recorded by build.rs) and the shared object actually
//! loaded in this process (from `/proc/self/maps`; libntfs-3g has no
//! call that returns its version).

/// The file name of the loaded shared object whose name starts with
/// `prefix` (e.g. `libwim.so.15.21.0`), if any.
pub fn loaded(prefix: &str) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter_map(|p| p.rsplit('/').next())
        .find(|name| name.starts_with(prefix))
        .map(str::to_string)
}

/// One library's line: `NAME BUILT (loaded FILE)`.
fn line(name: &str, built: &str, prefix: &str) -> String {
    match loaded(prefix) {
        Some(f) => format!("{name} {built} (loaded {f})"),
        None => format!("{name} {built}"),
    }
}

/// The long version text.
pub fn long_version() -> String {
    format!(
        "{}\n{}\n{}",
        env!("CARGO_PKG_VERSION"),
        line("wimlib", env!("RESEAL_BUILT_WIMLIB"), "libwim.so"),
        line("libntfs-3g", env!("RESEAL_BUILT_NTFS3G"), "libntfs-3g.so"),
    )
}
