//! The inputs that `cargo xtask bench wim` and `cargo xtask bench disk`
//! build alike, and the settings and helpers they share.
//!
//! * The Windows root ([`build_root`]): the corpus root of `reseal-testkit`
//!   when the shared corpus is present, with the demo user's NTUSER.DAT and
//!   UsrClass.dat and the DEFAULT hive of the corpus machine RathbunVM;
//!   otherwise the synthetic root. Dirty hives are recovered from their
//!   logs, and SOFTWARE is grown with filler keys ([`grow_software`]).
//! * The untouched data ([`write_data`]): incompressible files of random
//!   bytes under `Data`.
//! * The settings `RESEAL_BENCH_SOFTWARE_MB` and `RESEAL_BENCH_KEEP`, and
//!   each bench's size S ([`base_mb`]).
//!
//! Each bench's module documentation describes these inputs as it uses
//! them.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use crate::util::output;

/// Number of untouched files in each image (WIM or VHDX).
pub const FILES: u64 = 320;
/// Number of folders the untouched files are spread over.
const FOLDERS: u64 = 16;
/// The corpus machine whose user and DEFAULT hives go into the root.
const RATHBUN: &str = "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM";
/// The key of SOFTWARE that holds the filler.
const FILLER: &str = "BenchFiller";
/// A user's UsrClass.dat, relative to the user's profile folder.
const USRCLASS: &str = "AppData/Local/Microsoft/Windows/UsrClass.dat";

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The bench's size S in MB: the environment variable `var` when it holds a
/// number above 0, `default` otherwise.
pub fn base_mb(var: &str, default: u64) -> u64 {
    env_u64(var).filter(|&n| n > 0).unwrap_or(default)
}

/// The size SOFTWARE is grown to, in MB (`RESEAL_BENCH_SOFTWARE_MB`,
/// default 64; 0 leaves it as built).
pub fn software_mb() -> u64 {
    env_u64("RESEAL_BENCH_SOFTWARE_MB").unwrap_or(64)
}

/// Whether `RESEAL_BENCH_KEEP` asks to keep the large files (set, not empty
/// and not `0`).
pub fn keep() -> bool {
    std::env::var_os("RESEAL_BENCH_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `bytes` as KB (below 1 MB, no decimals) or MB (one decimal).
pub fn megabytes(bytes: u64) -> String {
    if bytes < 1_000_000 {
        format!("{:.0} KB", bytes as f64 / 1e3)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

/// The settings the inputs are built with, for a stamp file that tells
/// whether kept images can be reused: the corpus, the SOFTWARE size, the
/// data sizes `s` and 10 x `s` MB, then `extra` (the bench's own).
pub fn inputs_stamp(s: u64, extra: &str) -> String {
    format!(
        "corpus {:?}; SOFTWARE {} MB; other data {s} and {} MB in {FILES} files{extra}\n",
        reseal_testkit::corpus_dir(),
        software_mb(),
        10 * s
    )
}

/// Copies `src` to `dst` and syncs it, so that no write-back of the copy
/// overlaps the timed run.
pub fn fresh_copy(src: &Path, dst: &Path) -> Result<()> {
    fs::copy(src, dst).with_context(|| format!("copy {} -> {}", src.display(), dst.display()))?;
    fs::File::open(dst)?.sync_all()?;
    Ok(())
}

/// Copies a corpus file (read-only) to `to`, writable like any hive.
fn copy_writable(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = to.parent() {
        fs::create_dir_all(d)?;
    }
    fs::copy(from, to).with_context(|| format!("copy {}", from.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// A hive of the root.
#[derive(Clone)]
pub struct HiveFile {
    /// Its path in the root, with `/`.
    pub rel: String,
    /// The key prefix its `.reg` files use.
    pub prefix: String,
    /// Where it comes from (printed).
    pub origin: String,
    /// Its size once the root is built.
    pub bytes: u64,
}

impl HiveFile {
    /// A file name for it in a flat directory.
    pub fn flat(&self) -> String {
        self.rel.replace('/', "_")
    }

    /// Its name in a listing: the file name, and for a user's hive the
    /// user's folder (`NTUSER.DAT (Users\demo)`).
    pub fn label(&self) -> String {
        let name = self.rel.rsplit('/').next().unwrap_or(&self.rel);
        match self
            .rel
            .strip_prefix("Users/")
            .and_then(|r| r.split_once('/'))
        {
            Some((user, _)) => format!("{name} (Users\\{user})"),
            None => name.to_string(),
        }
    }
}

/// Builds the Windows root into `root` (replacing it) and returns whether it
/// is the corpus root, and its hives: SYSTEM, SOFTWARE, SAM, SECURITY and
/// DEFAULT, then NTUSER.DAT and UsrClass.dat of `user` (of every user under
/// `Users`, in name order, when `None`) where the root has them. Dirty hives
/// are recovered with `reseal hive replay` and their logs emptied; SOFTWARE
/// is grown to [`software_mb`] MB. Temporary files go to `scratch`.
pub fn build_root(
    reseal: &Path,
    root: &Path,
    scratch: &Path,
    user: Option<&str>,
) -> Result<(bool, Vec<HiveFile>)> {
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    let corpus = reseal_testkit::corpus_dir();
    let used = match &corpus {
        Some(c) if reseal_testkit::build_corpus_root(root, c)? => Some(c.clone()),
        _ => None,
    };
    let config = "Windows/System32/config";
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    if let Some(corpus) = &used {
        let rathbun = corpus.join(RATHBUN);
        println!("Windows root: corpus root from {}", corpus.display());
        let swaps = [
            ("NTUSER.DAT", "Users/demo/NTUSER.DAT".to_string()),
            ("ntuser.dat.LOG1", "Users/demo/ntuser.dat.LOG1".into()),
            ("ntuser.dat.LOG2", "Users/demo/ntuser.dat.LOG2".into()),
            ("UsrClass.dat", format!("Users/demo/{USRCLASS}")),
            ("UsrClass.dat.LOG1", format!("Users/demo/{USRCLASS}.LOG1")),
            ("UsrClass.dat.LOG2", format!("Users/demo/{USRCLASS}.LOG2")),
            ("DEFAULT", format!("{config}/DEFAULT")),
            ("DEFAULT.LOG1", format!("{config}/DEFAULT.LOG1")),
            ("DEFAULT.LOG2", format!("{config}/DEFAULT.LOG2")),
        ];
        if swaps.iter().all(|(f, _)| rathbun.join(f).is_file()) {
            for (f, to) in &swaps {
                copy_writable(&rathbun.join(f), &root.join(to))?;
            }
            for (_, to) in &swaps[..] {
                if !to.contains(".LOG") {
                    origin.insert(to.clone(), "real Windows 10 (corpus RathbunVM)".into());
                }
            }
        }
        for (h, from) in [
            ("SYSTEM", "regipy SYSTEM_B"),
            ("SAM", "RathbunVM"),
            ("SECURITY", "RathbunVM"),
        ] {
            origin.insert(
                format!("{config}/{h}"),
                format!("real Windows 10 (corpus {from})"),
            );
        }
    } else {
        match &corpus {
            Some(c) => println!(
                "the corpus at {} lacks the hives the corpus root needs: \
                 FALLING BACK to the synthetic root (hives of a few KB)",
                c.display()
            ),
            None => println!(
                "no corpus (RESEAL_CORPUS or ../shared/corpus): FALLING BACK to the \
                 synthetic root (hives of a few KB)"
            ),
        }
        reseal_testkit::build_windows_root(root, None)?;
    }
    let mut hives = Vec::new();
    for (name, prefix) in [
        ("SYSTEM", "HKEY_LOCAL_MACHINE\\SYSTEM"),
        ("SOFTWARE", "HKEY_LOCAL_MACHINE\\SOFTWARE"),
        ("SAM", "HKEY_LOCAL_MACHINE\\SAM"),
        ("SECURITY", "HKEY_LOCAL_MACHINE\\SECURITY"),
        ("DEFAULT", "HKEY_USERS\\.DEFAULT"),
    ] {
        hives.push((format!("{config}/{name}"), prefix.to_string()));
    }
    let users: Vec<String> = match user {
        Some(u) => vec![u.to_string()],
        None => {
            let mut all: Vec<String> = fs::read_dir(root.join("Users"))?
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            all.sort();
            all
        }
    };
    for u in users {
        for (file, prefix) in [
            ("NTUSER.DAT", format!("HKEY_USERS\\{u}")),
            (USRCLASS, format!("HKEY_USERS\\{u}_Classes")),
        ] {
            let rel = format!("Users/{u}/{file}");
            if root.join(&rel).is_file() {
                hives.push((rel, prefix));
            }
        }
    }
    let mut out = Vec::new();
    for (rel, prefix) in hives {
        let path = root.join(&rel);
        ensure!(path.is_file(), "the root has no {rel}");
        let mut origin = origin.get(&rel).cloned().unwrap_or("synthetic".into());
        // Recover dirty hives, so that both sides start from the same
        // registry.
        let logs = reseal_hive::log::find_log_paths(&path);
        let dirty = logs
            .iter()
            .any(|l| fs::metadata(l).map(|m| m.len() > 0).unwrap_or(false));
        if dirty {
            let clean = scratch.join("replayed");
            output(
                Command::new(reseal)
                    .args(["hive", "replay"])
                    .arg(&path)
                    .arg("-o")
                    .arg(&clean),
            )?;
            fs::rename(&clean, &path)?;
            for l in logs {
                fs::File::create(l)?;
            }
            origin.push_str(", logs replayed");
        }
        out.push(HiveFile {
            rel,
            prefix,
            origin,
            bytes: 0,
        });
    }
    let want = software_mb() * 1_000_000;
    let software = root.join(&out[1].rel);
    let before = fs::metadata(&software)?.len();
    if want > before {
        let t = Instant::now();
        let keys = grow_software(reseal, &software, scratch, want)?;
        out[1].origin.push_str(&format!(
            " grown from {} with {keys} filler classes under {FILLER} ({:.0} s)",
            megabytes(before),
            t.elapsed().as_secs_f64()
        ));
    }
    for h in &mut out {
        h.bytes = fs::metadata(root.join(&h.rel))?.len();
    }
    Ok((used.is_some(), out))
}

/// A GUID made from a counter (stable from run to run).
fn guid(n: u64) -> String {
    let mut x = n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut next = || {
        x ^= x >> 31;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 29;
        x
    };
    let (a, b) = (next(), next());
    format!(
        "{{{:08X}-{:04X}-{:04X}-{:04X}-{:012X}}}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// Adds COM-class-like keys under `BenchFiller\GroupNNN` of the SOFTWARE
/// hive at `hive` until the file is at least `want` bytes; returns how many.
fn grow_software(reseal: &Path, hive: &Path, scratch: &Path, want: u64) -> Result<u64> {
    const PREFIX: &str = "HKEY_LOCAL_MACHINE\\SOFTWARE";
    let reg = scratch.join("filler.reg");
    let mut n = 0u64;
    let mut batch = 20_000u64;
    loop {
        let size = fs::metadata(hive)?.len();
        if size >= want {
            break;
        }
        if n > 0 {
            // Bytes per class so far tell how many more are needed.
            let per = (size as f64 / n as f64).max(1.0);
            batch = (((want - size) as f64 / per) as u64 + 1).max(1000);
        }
        let mut s = String::from("Windows Registry Editor Version 5.00\n\n");
        for i in n..n + batch {
            let key = format!("{PREFIX}\\{FILLER}\\Group{:04}\\{}", i / 500, guid(i));
            s.push_str(&format!(
                "[{key}]\n@=\"Filler class {i}\"\n\"AppID\"=\"{}\"\n\n",
                guid(i + (1 << 40))
            ));
            s.push_str(&format!(
                "[{key}\\InprocServer32]\n@=\"C:\\\\Windows\\\\System32\\\\filler{i:06}.dll\"\n\
                 \"ThreadingModel\"=\"Both\"\n\n"
            ));
        }
        fs::write(&reg, s)?;
        output(
            Command::new(reseal)
                .args(["hive", "import"])
                .arg(hive)
                .arg(&reg)
                .args(["--prefix", PREFIX]),
        )?;
        n += batch;
    }
    let _ = fs::remove_file(&reg);
    Ok(n)
}

/// Writes `bytes` of xorshift64* output to `path` (incompressible).
fn random_file(path: &Path, bytes: u64, seed: u64) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            w.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Puts `mb` MB of random data in [`FILES`] files in `FOLDERS` folders under
/// `root/Data` (replacing what is there); `salt` makes the data of one
/// image unlike another's. Prints how long it took.
pub fn write_data(root: &Path, mb: u64, salt: u64) -> Result<()> {
    let data = root.join("Data");
    if data.exists() {
        fs::remove_dir_all(&data)?;
    }
    let t = Instant::now();
    let total = mb * 1_000_000;
    for i in 0..FILES {
        // Sizes differ by at most one byte; seeds differ, so no two files
        // are alike (wimlib would store one).
        let n = total / FILES + u64::from(i < total % FILES);
        let folder = data.join(format!("Folder{:02}", i % FOLDERS));
        fs::create_dir_all(&folder)?;
        let seed = 0x9e37_79b9_7f4a_7c15 ^ (salt << 32) ^ ((i + 1) << 1);
        random_file(&folder.join(format!("blob{i:03}.bin")), n, seed)?;
    }
    println!(
        "wrote {mb} MB of random data in {FILES} files ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hive(rel: &str) -> HiveFile {
        HiveFile {
            rel: rel.into(),
            prefix: String::new(),
            origin: String::new(),
            bytes: 0,
        }
    }

    #[test]
    fn labels_and_flat_names() {
        let system = hive("Windows/System32/config/SYSTEM");
        assert_eq!(system.label(), "SYSTEM");
        assert_eq!(system.flat(), "Windows_System32_config_SYSTEM");
        assert_eq!(
            hive("Users/demo/NTUSER.DAT").label(),
            "NTUSER.DAT (Users\\demo)"
        );
        assert_eq!(
            hive(&format!("Users/demo/{USRCLASS}")).label(),
            "UsrClass.dat (Users\\demo)"
        );
    }

    #[test]
    fn guids_are_stable_and_distinct() {
        assert_eq!(guid(7), guid(7));
        assert_ne!(guid(7), guid(8));
        assert_eq!(guid(0).len(), 38);
    }
}
