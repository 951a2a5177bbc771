//! Finding Windows installations in an image and loading their hives.
//!
//! An installation is any top-level directory of the image (whatever its
//! name: `Windows`, `WINNT`, `Win11`…) that holds `System32\config\SYSTEM`.
//! Its machine hives are loaded from `System32\config`; its user hives are
//! found through SOFTWARE's `ProfileList`, whose `ProfileImagePath` values
//! are mapped to paths inside the image (the image root is taken to be the
//! system drive).

use rayon::prelude::*;

use crate::backend::{Backend, join};
use crate::context::reg_string;
use crate::error::Result;
use crate::hives::{self, HiveId, HiveLoadError, LoadedHive};
use crate::install::WindowsInstall;

/// Key of SOFTWARE that lists the user profiles.
pub const PROFILE_LIST: &str = r"Microsoft\Windows NT\CurrentVersion\ProfileList";

/// Every top-level directory of the image that holds
/// `System32\config\SYSTEM` (names compared case-insensitively), in the
/// order the backend lists them.
pub fn find_windows_dirs(backend: &dyn Backend) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in backend.list("")? {
        if !entry.is_dir {
            continue;
        }
        let system = join(&entry.name, r"System32\config\SYSTEM");
        if backend.exists(&system) && !backend.is_dir(&system) {
            out.push(entry.name);
        }
    }
    Ok(out)
}

/// One user profile found in `ProfileList`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// The SID the profile belongs to (the ProfileList subkey's name).
    pub sid: String,
    /// `ProfileImagePath` as stored.
    pub image_path: String,
    /// The profile directory inside the image, when it could be mapped.
    pub dir: Option<String>,
}

/// Maps a `ProfileImagePath` (`C:\Users\demo`, `%SystemDrive%\Users\demo`,
/// `%SystemRoot%\system32\config\systemprofile`) to a path inside the image.
/// The image root stands for the system drive, whatever its letter.
/// Returns `None` for paths that cannot be placed (other variables, UNC
/// paths, `..` components, empty results).
pub fn map_profile_path(image_path: &str, windows_dir: &str) -> Option<String> {
    let mut p = image_path.trim().trim_matches('"').replace('/', "\\");
    for prefix in [r"\\?\", r"\??\"] {
        if let Some(rest) = p.strip_prefix(prefix) {
            p = rest.to_string();
        }
    }
    let base: String;
    let rest: &str;
    if let Some(stripped) = p.strip_prefix('%') {
        let end = stripped.find('%')?;
        let var = &stripped[..end];
        rest = &stripped[end + 1..];
        base = if var.eq_ignore_ascii_case("SystemDrive") {
            String::new()
        } else if var.eq_ignore_ascii_case("SystemRoot") || var.eq_ignore_ascii_case("windir") {
            windows_dir.to_string()
        } else {
            return None;
        };
    } else {
        let b = p.as_bytes();
        if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
            rest = &p[2..];
        } else if p.starts_with(r"\\") {
            return None;
        } else {
            rest = &p;
        }
        base = String::new();
    }
    let mut parts: Vec<&str> = base.split('\\').filter(|s| !s.is_empty()).collect();
    for comp in rest.split('\\') {
        match comp {
            "" | "." => {}
            ".." => return None,
            c if c.contains('%') || c.contains(':') => return None,
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("\\"))
}

/// Reads the profiles listed in a SOFTWARE hive's `ProfileList`.
pub fn profiles(software: &reseal_hive::Hive, windows_dir: &str) -> Vec<Profile> {
    let Some(list) = software.open_key(PROFILE_LIST).ok().flatten() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for child in software.subkeys(list).unwrap_or_default() {
        let Ok(info) = software.key_info(child) else {
            continue;
        };
        let Some(v) = software.value(child, "ProfileImagePath").ok().flatten() else {
            continue;
        };
        // REG_SZ or REG_EXPAND_SZ; anything else is not a path.
        if v.value_type != 1 && v.value_type != 2 {
            continue;
        }
        let image_path = reg_string(&v.data);
        let dir = map_profile_path(&image_path, windows_dir);
        out.push(Profile {
            sid: info.name,
            image_path,
            dir,
        });
    }
    out
}

fn is_file(backend: &dyn Backend, path: &str) -> bool {
    backend.exists(path) && !backend.is_dir(path)
}

/// The machine hives a run cannot do without: a missing one is a load
/// error (so preflight refuses), not an absent hive.
pub const REQUIRED_MACHINE_HIVES: [HiveId; 4] = [
    HiveId::System,
    HiveId::Software,
    HiveId::Sam,
    HiveId::Security,
];

/// Why `path` cannot be opened as a file: "not found in the image", "is a
/// directory", or the backend's refusal (a link leaving the root…).
fn why_not_a_file(backend: &dyn Backend, path: &str) -> String {
    if backend.is_dir(path) {
        return "is a directory, not a hive file".into();
    }
    match backend.read_head(path, 0) {
        Err(crate::error::ResealError::NotFound { .. }) => "not found in the image".into(),
        Err(e) => e.to_string(),
        Ok(_) => "cannot be opened as a file".into(),
    }
}

/// Loads an installation: the machine hives under `<windir>\System32\config`
/// and every user hive (`NTUSER.DAT`, `UsrClass.dat`) of the profiles in
/// `ProfileList` whose directory exists in the image. Hives are loaded in
/// parallel. A missing, unreadable or directory hive among
/// [`REQUIRED_MACHINE_HIVES`] (or a machine hive name taken by a directory)
/// is recorded as a load error; a missing DEFAULT or user hive is simply
/// absent, but a profile folder the backend refuses to enter (a link
/// leading out of the root) is a load error too. Failures never abort the
/// load: they are collected in [`WindowsInstall::load_errors`].
pub fn load_install(backend: &dyn Backend, windows_dir: &str) -> WindowsInstall {
    let config = join(windows_dir, r"System32\config");
    let mut jobs: Vec<(HiveId, String)> = Vec::new();
    let mut load_errors = Vec::new();
    for (id, file) in HiveId::MACHINE {
        let path = join(&config, file);
        if is_file(backend, &path) {
            jobs.push((id, path));
        } else if REQUIRED_MACHINE_HIVES.contains(&id) || backend.is_dir(&path) {
            let message = why_not_a_file(backend, &path);
            load_errors.push(HiveLoadError {
                id,
                path,
                dirty_without_logs: false,
                message,
            });
        }
    }
    let (mut hives, errs) = load_all(backend, jobs);
    load_errors.extend(errs);

    // User hives, found through SOFTWARE's ProfileList.
    let mut user_jobs: Vec<(HiveId, String)> = Vec::new();
    if let Some(sw) = hives.iter().find(|h| h.id == HiveId::Software) {
        let mut seen: Vec<String> = Vec::new();
        for p in profiles(&sw.hive, windows_dir) {
            let Some(dir) = p.dir else { continue };
            if seen.iter().any(|d| d.eq_ignore_ascii_case(&dir)) {
                continue;
            }
            if !backend.is_dir(&dir) {
                // A profile whose folder is gone has no hives to load; one
                // the backend refuses to enter (a link out of the root) is
                // reported, never silently dropped.
                match backend.list(&dir) {
                    Err(crate::error::ResealError::NotFound { .. }) | Ok(_) => {}
                    Err(e) => load_errors.push(HiveLoadError {
                        id: HiveId::NtUser(dir.clone()),
                        path: join(&dir, "NTUSER.DAT"),
                        dirty_without_logs: false,
                        message: format!("the profile folder cannot be entered: {e}"),
                    }),
                }
                continue;
            }
            seen.push(dir.clone());
            let ntuser = join(&dir, "NTUSER.DAT");
            if is_file(backend, &ntuser) {
                user_jobs.push((HiveId::NtUser(dir.clone()), ntuser));
            }
            let usrclass = join(&dir, r"AppData\Local\Microsoft\Windows\UsrClass.dat");
            if is_file(backend, &usrclass) {
                user_jobs.push((HiveId::UsrClass(dir.clone()), usrclass));
            }
        }
    }
    let (user_hives, user_errs) = load_all(backend, user_jobs);
    hives.extend(user_hives);
    load_errors.extend(user_errs);

    WindowsInstall {
        windows_dir: windows_dir.to_string(),
        hives,
        load_errors,
    }
}

/// Loads hives in parallel, keeping the order of `jobs`.
fn load_all(
    backend: &dyn Backend,
    jobs: Vec<(HiveId, String)>,
) -> (Vec<LoadedHive>, Vec<HiveLoadError>) {
    let results: Vec<std::result::Result<LoadedHive, HiveLoadError>> = jobs
        .into_par_iter()
        .map(|(id, path)| hives::load(backend, id, &path))
        .collect();
    let mut ok = Vec::new();
    let mut err = Vec::new();
    for r in results {
        match r {
            Ok(h) => ok.push(h),
            Err(e) => err.push(e),
        }
    }
    (ok, err)
}

#[cfg(test)]
mod tests {
    use super::map_profile_path;

    #[test]
    fn maps_profile_paths() {
        let m = |p| map_profile_path(p, "Windows");
        assert_eq!(m(r"C:\Users\demo").as_deref(), Some(r"Users\demo"));
        assert_eq!(m(r"D:\Users\demo\").as_deref(), Some(r"Users\demo"));
        assert_eq!(
            m(r"%SystemDrive%\Users\demo").as_deref(),
            Some(r"Users\demo")
        );
        assert_eq!(
            m(r"%systemroot%\system32\config\systemprofile").as_deref(),
            Some(r"Windows\system32\config\systemprofile")
        );
        assert_eq!(
            m(r"%windir%\ServiceProfiles\LocalService").as_deref(),
            Some(r"Windows\ServiceProfiles\LocalService")
        );
        assert_eq!(m(r"%ProgramData%\x"), None);
        assert_eq!(m(r"C:\Users\..\..\etc"), None);
        assert_eq!(m(r"\\server\share\p"), None);
        assert_eq!(m(""), None);
        assert_eq!(m("%"), None);
        assert_eq!(m(r"C:"), None);
    }
}
