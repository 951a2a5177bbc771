//! Fixtures the project generates for its demo and tests (test support,
//! not part of the product: used by `cargo xtask` and by integration tests).
//!
//! * [`write_sample_software`]: a small SOFTWARE-like hive of a made-up
//!   Windows 10 machine whose machine SID appears in the places Windows puts
//!   it: a ProfileList key named by a user's SID with the binary SID as data,
//!   a security descriptor granting that user access, string SIDs in value
//!   data, and a big-data value.
//! * [`build_windows_root`]: a whole synthetic Windows root (the C:\ volume
//!   of that machine) built from the text recipes in
//!   `testdata/windows-root/` (see its README.md), optionally with the
//!   overlay of one preflight finding (`testdata/windows-root/variants/`).
//! * [`build_corpus_root`]: the same root with real Windows 10 SYSTEM, SAM
//!   and SECURITY hives from the shared corpus, copied dirty with their logs.

mod disk_images;
pub use disk_images::{
    DISK_PARTITION_OFFSET, DISK_PARTITION_SIZE, DISK_SIZE, build_disk_images,
    build_two_install_disk, have,
};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use reseal_hive::regfile::{RegDocument, RegOp, parse_reg, strip_prefix_ci};
use reseal_hive::{Hive, Sid, default_descriptor};

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .and_then(Path::parent)
        .unwrap_or(here)
        .to_path_buf()
}

/// The shared corpus: `RESEAL_CORPUS`, or `../shared/corpus` beside the
/// workspace; `None` when absent.
pub fn corpus_dir() -> Option<PathBuf> {
    let p = std::env::var_os("RESEAL_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/corpus"));
    p.is_dir().then_some(p)
}

fn have_program(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(name).is_file()))
}

/// The machine SID of the sample hive.
pub const SAMPLE_MACHINE_SID: &str = "S-1-5-21-1004336348-1177238915-682003330";

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn multi_sz(items: &[&str]) -> Vec<u8> {
    let mut v: Vec<u8> = items.iter().flat_map(|s| utf16z(s)).collect();
    v.extend_from_slice(&[0, 0]);
    v
}

/// A descriptor like the default one plus an ACE granting `user` full control.
fn descriptor_with_user(user: &Sid) -> Vec<u8> {
    let base = default_descriptor();
    // Parse the pieces of the default descriptor back out: header (20),
    // DACL at 20, then owner and group.
    let acl_len = u16::from_le_bytes([base[22], base[23]]) as usize;
    let acl = &base[20..20 + acl_len];
    let tail = &base[20 + acl_len..];
    let sid = user.to_bytes();
    let mut ace = vec![0u8, 0x02];
    ace.extend_from_slice(&((8 + sid.len()) as u16).to_le_bytes());
    ace.extend_from_slice(&0x000F_003Fu32.to_le_bytes());
    ace.extend_from_slice(&sid);
    let mut new_acl = acl.to_vec();
    new_acl.extend_from_slice(&ace);
    let new_len = new_acl.len() as u16;
    new_acl[2..4].copy_from_slice(&new_len.to_le_bytes());
    new_acl[4] += 1;
    let mut sd = base[..20].to_vec();
    let owner = 20 + new_acl.len();
    let group = owner + 16;
    sd[4..8].copy_from_slice(&(owner as u32).to_le_bytes());
    sd[8..12].copy_from_slice(&(group as u32).to_le_bytes());
    sd.extend_from_slice(&new_acl);
    sd.extend_from_slice(tail);
    sd
}

/// Writes the sample SOFTWARE-like hive (version 1.5) to `path`.
pub fn write_sample_software(path: &Path) -> Result<()> {
    let machine: Sid = SAMPLE_MACHINE_SID.parse()?;
    let user = machine.with_rid(1001);
    let mut h = Hive::create("SOFTWARE", 5, "ROOT")?;
    let cv = "Microsoft\\Windows NT\\CurrentVersion";
    h.create_key(cv)?;
    for (name, value) in [
        ("ProductName", "Windows 10 Pro"),
        ("EditionID", "Professional"),
        ("CurrentBuild", "19045"),
        ("InstallationType", "Client"),
        ("RegisteredOwner", "demo"),
    ] {
        h.set_value(cv, name, 1, &utf16z(value))?;
    }
    h.set_value(cv, "CurrentMajorVersionNumber", 4, &10u32.to_le_bytes())?;
    let profiles = format!("{cv}\\ProfileList");
    for (sid, dir) in [
        (
            "S-1-5-18".to_string(),
            "%systemroot%\\system32\\config\\systemprofile",
        ),
        (user.to_string(), "C:\\Users\\demo"),
    ] {
        let k = format!("{profiles}\\{sid}");
        h.create_key(&k)?;
        h.set_value(&k, "ProfileImagePath", 2, &utf16z(dir))?;
        h.set_value(&k, "Sid", 3, &sid.parse::<Sid>()?.to_bytes())?;
        h.set_value(&k, "Flags", 4, &0u32.to_le_bytes())?;
    }
    h.create_key("Microsoft\\Cryptography")?;
    h.set_value(
        "Microsoft\\Cryptography",
        "MachineGuid",
        1,
        &utf16z("6f1c3a52-8d2e-4b7a-9c11-0e5f2d7b9a44"),
    )?;
    let gp = format!("Microsoft\\Windows\\CurrentVersion\\Group Policy\\State\\{user}");
    h.create_key(&gp)?;
    h.set_value(&gp, "Distinguished-Name", 1, &utf16z("CN=demo"))?;
    let tasks = "Microsoft\\Windows NT\\CurrentVersion\\Schedule\\TaskCache\\Tasks\\{4C0A6E6B-2F1D-4E9B-8E53-6A2B4C1D7E90}";
    h.create_key(tasks)?;
    h.set_value(tasks, "Path", 1, &utf16z("\\DemoTask"))?;
    h.set_value(
        tasks,
        "Principals",
        7,
        &multi_sz(&[&user.to_string(), "S-1-5-32-544"]),
    )?;
    let app = "Classes\\Local Settings\\Software\\Microsoft\\Windows\\CurrentVersion\\AppModel";
    h.create_key(app)?;
    let blob: Vec<u8> = (0..24_000u32).map(|i| (i % 251) as u8).collect();
    h.set_value(app, "PackageCacheBlob", 3, &blob)?;
    h.set_security(&profiles, &descriptor_with_user(&user))?;
    h.create_key("Demo\\Ünïcödé\\日本語")?;
    h.save_to(path)?;
    Ok(())
}

/// The recipes of the synthetic Windows root, relative to the workspace root.
pub const WINDOWS_ROOT_RECIPES: &str = "testdata/windows-root";

/// The preflight findings that have an overlay in `variants/`.
pub const VARIANTS: [&str; 11] = [
    "dirty-hive-without-logs",
    "hibernated",
    "domain-controller",
    "domain-joined",
    "appx-per-user",
    "pending-servicing",
    "sysprep-corrupt",
    "stale-answer-file",
    "unsupported-server-role",
    "efs",
    "already-generalized",
];

/// The local users with a profile: folder name under `Users` and RID.
pub const ROOT_USERS: [(&str, u32); 2] = [("demo", 1001), ("alice", 1002)];

/// One hive of the root: where its recipe is, where it goes, how it is made.
#[derive(Debug, Clone)]
struct HiveSpec {
    /// Recipe path relative to the recipe directory.
    recipe: String,
    /// File path inside the root (backslashes).
    file: String,
    /// The `.reg` prefix that maps to the hive's root key.
    prefix: String,
    /// Other prefixes that also map to this hive in overlays.
    aliases: Vec<String>,
    /// Minor format version.
    minor: u32,
    /// Root key name.
    root_name: String,
    /// Name stored in the base block (as Windows stores the hive's path).
    base_name: String,
    /// The user SID whose access the root key grants, for user hives.
    user: Option<Sid>,
}

fn hive_specs() -> Result<Vec<HiveSpec>> {
    let machine: Sid = SAMPLE_MACHINE_SID.parse()?;
    let m = |recipe: &str, prefix: &str, guid: &str| HiveSpec {
        recipe: format!("{recipe}.reg"),
        file: format!("Windows\\System32\\config\\{recipe}"),
        prefix: prefix.to_string(),
        aliases: Vec::new(),
        minor: 5,
        root_name: format!("CMI-CreateHive{{{guid}}}"),
        base_name: format!("\\SystemRoot\\System32\\Config\\{recipe}"),
        user: None,
    };
    let mut v = vec![
        m(
            "SYSTEM",
            "HKEY_LOCAL_MACHINE\\SYSTEM",
            "2A7FB991-7BBE-4F9D-B91E-7CB51D4737F5",
        ),
        m(
            "SOFTWARE",
            "HKEY_LOCAL_MACHINE\\SOFTWARE",
            "199DAFC2-6F16-4946-BF90-5A3FC3A60902",
        ),
        m(
            "SAM",
            "HKEY_LOCAL_MACHINE\\SAM",
            "C4E7BA2B-68E8-499C-B1A1-371AC8D717C7",
        ),
        m(
            "SECURITY",
            "HKEY_LOCAL_MACHINE\\SECURITY",
            "3D971F19-49AB-4000-8D39-A6D9C673D809",
        ),
        m(
            "DEFAULT",
            "HKEY_USERS\\.DEFAULT",
            "A0F0A1C2-5E33-4B6D-8C3A-0D9E4F7B2C18",
        ),
    ];
    for (name, rid) in ROOT_USERS {
        let sid = machine.with_rid(rid);
        v.push(HiveSpec {
            recipe: format!("users/{name}/NTUSER.DAT.reg"),
            file: format!("Users\\{name}\\NTUSER.DAT"),
            prefix: "HKEY_CURRENT_USER".into(),
            aliases: vec![format!("HKEY_USERS\\{sid}")],
            minor: 5,
            root_name: "CMI-CreateHive{D43B12B8-09B5-40DB-B4F6-F6DFEB78DAEC}".into(),
            base_name: format!("\\??\\C:\\Users\\{name}\\ntuser.dat"),
            user: Some(sid.clone()),
        });
        v.push(HiveSpec {
            recipe: format!("users/{name}/UsrClass.dat.reg"),
            file: format!("Users\\{name}\\AppData\\Local\\Microsoft\\Windows\\UsrClass.dat"),
            prefix: "HKEY_CURRENT_USER\\Software\\Classes".into(),
            aliases: vec![format!("HKEY_USERS\\{sid}_Classes")],
            minor: 3,
            root_name: format!("{sid}_Classes"),
            base_name: format!(
                "\\??\\C:\\Users\\{name}\\AppData\\Local\\Microsoft\\Windows\\UsrClass.dat"
            ),
            user: Some(sid),
        });
    }
    Ok(v)
}

/// A path inside the root (backslashes, relative) as a host path under `dest`.
fn host_path(dest: &Path, rel: &str) -> PathBuf {
    let mut p = dest.to_path_buf();
    for part in rel.split(['\\', '/']).filter(|s| !s.is_empty()) {
        p.push(part);
    }
    p
}

fn read_reg(path: &Path) -> Result<RegDocument> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_reg(&path.display().to_string(), &bytes)
        .with_context(|| format!("parsing {}", path.display()))
}

/// Builds one hive from its recipe and saves it into the root.
fn build_hive(recipes: &Path, dest: &Path, spec: &HiveSpec) -> Result<()> {
    let doc = read_reg(&recipes.join(&spec.recipe))?;
    let mut h = Hive::create(&spec.base_name, spec.minor, &spec.root_name)?;
    h.import_reg(&doc, Some(&spec.prefix))
        .with_context(|| format!("importing {}", spec.recipe))?;
    if let Some(user) = &spec.user {
        h.set_security("", &descriptor_with_user(user))?;
    }
    if spec.file.ends_with("SOFTWARE") {
        let machine: Sid = SAMPLE_MACHINE_SID.parse()?;
        for (_, rid) in ROOT_USERS {
            let user = machine.with_rid(rid);
            let key = format!("Microsoft\\Windows NT\\CurrentVersion\\ProfileList\\{user}");
            h.set_security(&key, &descriptor_with_user(&user))?;
        }
    }
    let out = host_path(dest, &spec.file);
    fs::create_dir_all(out.parent().unwrap_or(dest))?;
    h.save_to(&out)
        .with_context(|| format!("saving {}", out.display()))?;
    Ok(())
}

/// Applies a `.reg` overlay whose sections may address several hives; each
/// section goes to the hive whose prefix (or alias) it starts with.
fn apply_reg_overlay(dest: &Path, overlay: &Path, specs: &[HiveSpec]) -> Result<()> {
    let doc = read_reg(overlay)?;
    let mut per_hive: BTreeMap<usize, (String, Vec<RegOp>)> = BTreeMap::new();
    for op in &doc.ops {
        let path = match op {
            RegOp::CreateKey { path }
            | RegOp::DeleteKey { path }
            | RegOp::SetValue { path, .. }
            | RegOp::DeleteValue { path, .. } => path,
        };
        let mut best: Option<(usize, &str)> = None;
        for (i, spec) in specs.iter().enumerate() {
            for prefix in std::iter::once(&spec.prefix).chain(&spec.aliases) {
                if strip_prefix_ci(path, prefix).is_some()
                    && best.is_none_or(|(_, b)| b.len() < prefix.len())
                {
                    best = Some((i, prefix));
                }
            }
        }
        let Some((i, prefix)) = best else {
            bail!(
                "{}: no hive of the root has the key {path:?}",
                overlay.display()
            );
        };
        let entry = per_hive
            .entry(i)
            .or_insert_with(|| (prefix.to_string(), Vec::new()));
        ensure!(
            entry.0.eq_ignore_ascii_case(prefix),
            "{}: the hive {} is addressed with two prefixes ({} and {prefix})",
            overlay.display(),
            specs[i].file,
            entry.0
        );
        entry.1.push(op.clone());
    }
    for (i, (prefix, ops)) in per_hive {
        let file = host_path(dest, &specs[i].file);
        let mut h = Hive::open(&file).with_context(|| format!("opening {}", file.display()))?;
        let part = RegDocument {
            version: doc.version,
            encoding: doc.encoding,
            ops,
        };
        h.import_reg(&part, Some(&prefix))
            .with_context(|| format!("applying {} to {}", overlay.display(), specs[i].file))?;
        h.save_to(&file)?;
    }
    Ok(())
}

/// One line (or here-document) of a `files.txt` recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileOp {
    Dir(String),
    File(String, Vec<u8>),
    Copy(String, String),
    Delete(String),
    Dirty(String),
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ',')
        .collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).ok())
        .collect()
}

/// Parses a `files.txt`-style recipe (format in testdata/windows-root/README.md).
fn parse_files(name: &str, text: &str) -> Result<Vec<FileOp>> {
    let mut ops = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, raw)) = lines.next() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{name}:{}", n + 1);
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        // `path = content` or `path <<TAG` (lines up to TAG, joined with CRLF).
        let mut content = |rest: &str| -> Result<(String, Option<String>)> {
            if let Some((path, c)) = rest.split_once(" = ") {
                return Ok((path.trim().to_string(), Some(c.to_string())));
            }
            if let Some((path, tag)) = rest.split_once(" <<") {
                let tag = tag.trim();
                let mut body = String::new();
                loop {
                    let Some((_, l)) = lines.next() else {
                        bail!("{}: here-document not closed by {tag}", at());
                    };
                    if l.trim_end() == tag {
                        break;
                    }
                    body.push_str(l);
                    body.push_str("\r\n");
                }
                return Ok((path.trim().to_string(), Some(body)));
            }
            Ok((rest.to_string(), None))
        };
        let op = match kind {
            "dir" => FileOp::Dir(rest.to_string()),
            "delete" => FileOp::Delete(rest.to_string()),
            "dirty" => FileOp::Dirty(rest.to_string()),
            "copy" => {
                let (from, to) = rest
                    .split_once(" -> ")
                    .with_context(|| format!("{}: expected `copy FROM -> TO`", at()))?;
                FileOp::Copy(from.trim().to_string(), to.trim().to_string())
            }
            "text" => match content(rest)? {
                (path, Some(c)) => FileOp::File(path, c.into_bytes()),
                _ => bail!("{}: expected `text PATH = TEXT` or `text PATH <<TAG`", at()),
            },
            "hex" => match content(rest)? {
                (path, Some(c)) => {
                    let bytes =
                        parse_hex(&c).with_context(|| format!("{}: bad hex bytes {c:?}", at()))?;
                    FileOp::File(path, bytes)
                }
                _ => bail!("{}: expected `hex PATH = BYTES`", at()),
            },
            "size" => {
                let (num, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                let size: usize = num
                    .parse()
                    .with_context(|| format!("{}: bad size {num:?}", at()))?;
                let (path, head) = content(rest.trim())?;
                let mut bytes = head.map(String::into_bytes).unwrap_or_default();
                ensure!(
                    bytes.len() <= size,
                    "{}: the head is longer than the size",
                    at()
                );
                bytes.resize(size, 0);
                FileOp::File(path, bytes)
            }
            _ => bail!("{}: unknown line kind {kind:?}", at()),
        };
        let path = match &op {
            FileOp::Dir(p) | FileOp::File(p, _) | FileOp::Delete(p) | FileOp::Dirty(p) => p,
            FileOp::Copy(_, p) => p,
        };
        ensure!(
            !path.is_empty() && !path.split(['\\', '/']).any(|c| c == ".."),
            "{}: bad path {path:?}",
            at()
        );
        ops.push(op);
    }
    Ok(ops)
}

fn apply_files(dest: &Path, recipe: &Path) -> Result<usize> {
    let text =
        fs::read_to_string(recipe).with_context(|| format!("reading {}", recipe.display()))?;
    let ops = parse_files(&recipe.display().to_string(), &text)?;
    let count = ops.len();
    for op in ops {
        match op {
            FileOp::Dir(p) => fs::create_dir_all(host_path(dest, &p))?,
            FileOp::File(p, bytes) => {
                let out = host_path(dest, &p);
                fs::create_dir_all(out.parent().unwrap_or(dest))?;
                fs::write(&out, bytes).with_context(|| format!("writing {}", out.display()))?;
            }
            FileOp::Copy(from, to) => {
                let out = host_path(dest, &to);
                fs::create_dir_all(out.parent().unwrap_or(dest))?;
                fs::copy(host_path(dest, &from), &out)
                    .with_context(|| format!("copying {from} to {to}"))?;
            }
            FileOp::Delete(p) => {
                let path = host_path(dest, &p);
                if path.is_dir() {
                    fs::remove_dir_all(&path)?;
                } else if path.exists() {
                    fs::remove_file(&path)?;
                }
            }
            FileOp::Dirty(p) => make_dirty_without_logs(&host_path(dest, &p))?,
        }
    }
    Ok(count)
}

/// Leaves a hive as if Windows had been writing it when the image was taken
/// and its logs were lost: primary sequence number one above the secondary
/// one (checksum recomputed), and no `.LOG`/`.LOG1`/`.LOG2` beside it.
fn make_dirty_without_logs(hive: &Path) -> Result<()> {
    use reseal_hive::base_block::{BASE_BLOCK_SIZE, OFF_SEQ1, OFF_SEQ2, store_checksum};
    let mut bytes = fs::read(hive).with_context(|| format!("reading {}", hive.display()))?;
    ensure!(
        bytes.len() >= BASE_BLOCK_SIZE,
        "{} is too short",
        hive.display()
    );
    let seq2 = u32::from_le_bytes(bytes[OFF_SEQ2..OFF_SEQ2 + 4].try_into()?);
    bytes[OFF_SEQ1..OFF_SEQ1 + 4].copy_from_slice(&seq2.wrapping_add(1).to_le_bytes());
    store_checksum(&mut bytes[..BASE_BLOCK_SIZE]);
    fs::write(hive, bytes)?;
    for log in reseal_hive::log::find_log_paths(hive) {
        fs::remove_file(&log)?;
    }
    Ok(())
}

fn recipes_dir() -> PathBuf {
    workspace_root().join(WINDOWS_ROOT_RECIPES)
}

/// Builds the synthetic Windows root into `dest` (which must not exist or be
/// empty) from the recipes in `testdata/windows-root`: every hive from its
/// `.reg` recipe, then the files of `files.txt`, then, when `variant` names
/// a preflight finding, that finding's overlay (`variants/<name>.reg` and/or
/// `variants/<name>.txt`).
pub fn build_windows_root(dest: &Path, variant: Option<&str>) -> Result<()> {
    build_windows_root_from(&recipes_dir(), dest, variant)
}

fn build_windows_root_from(recipes: &Path, dest: &Path, variant: Option<&str>) -> Result<()> {
    if dest.exists() {
        ensure!(
            fs::read_dir(dest)?.next().is_none(),
            "{} exists and is not empty",
            dest.display()
        );
    }
    fs::create_dir_all(dest)?;
    let specs = hive_specs()?;
    for spec in &specs {
        build_hive(recipes, dest, spec)?;
    }
    apply_files(dest, &recipes.join("files.txt"))?;
    if let Some(name) = variant {
        ensure!(
            VARIANTS.contains(&name),
            "unknown variant {name:?} (known: {})",
            VARIANTS.join(", ")
        );
        let reg = recipes.join("variants").join(format!("{name}.reg"));
        let txt = recipes.join("variants").join(format!("{name}.txt"));
        ensure!(
            reg.is_file() || txt.is_file(),
            "the variant {name} has no overlay in {}",
            recipes.join("variants").display()
        );
        if reg.is_file() {
            apply_reg_overlay(dest, &reg, &specs)?;
        }
        if txt.is_file() {
            apply_files(dest, &txt)?;
        }
    }
    Ok(())
}

/// The corpus files that [`build_corpus_root`] uses, relative to the corpus.
const CORPUS_SYSTEM: &str = "regipy/regipy_tests/data/SYSTEM_B";
const CORPUS_RATHBUN: &str = "DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM";

/// Builds the synthetic root into `dest`, then puts real Windows 10 hives
/// from the shared corpus in place of the synthetic SYSTEM (regipy's
/// SYSTEM_B with its .LOG1/.LOG2, decompressed with `xz -dc`), SAM and
/// SECURITY (RathbunVM, with their logs). They are copied as they are,
/// dirty, so that whoever opens them replays the logs. The synthetic
/// SOFTWARE, DEFAULT and user hives are moved to the real machine SID (read
/// from the real SECURITY's PolAcDmS) so that the root stays consistent.
/// Returns `false` (and builds nothing) when the corpus files are absent.
pub fn build_corpus_root(dest: &Path, corpus: &Path) -> Result<bool> {
    build_corpus_root_from(&recipes_dir(), dest, corpus)
}

fn build_corpus_root_from(recipes: &Path, dest: &Path, corpus: &Path) -> Result<bool> {
    let system_parts =
        ["", ".LOG1", ".LOG2"].map(|s| corpus.join(format!("{CORPUS_SYSTEM}{s}.xz")));
    let rathbun = corpus.join(CORPUS_RATHBUN);
    let real = ["SAM", "SAM.LOG1", "SAM.LOG2", "SECURITY", "SECURITY.LOG1"];
    if !system_parts.iter().all(|p| p.is_file()) || !real.iter().all(|f| rathbun.join(f).is_file())
    {
        return Ok(false);
    }
    ensure!(
        have_program("xz"),
        "xz is needed to decompress {} (apt-get install xz-utils)",
        system_parts[0].display()
    );
    build_windows_root_from(recipes, dest, None)?;
    let config = host_path(dest, "Windows\\System32\\config");
    for name in ["SYSTEM", "SAM", "SECURITY"] {
        for log in reseal_hive::log::find_log_paths(&config.join(name)) {
            fs::remove_file(log)?;
        }
    }
    for (src, name) in system_parts
        .iter()
        .zip(["SYSTEM", "SYSTEM.LOG1", "SYSTEM.LOG2"])
    {
        let out = std::process::Command::new("xz")
            .arg("-dc")
            .arg(src)
            .output()
            .with_context(|| format!("running xz -dc {}", src.display()))?;
        ensure!(
            out.status.success(),
            "xz -dc {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(config.join(name), out.stdout)?;
    }
    for f in real {
        let to = config.join(f);
        fs::copy(rathbun.join(f), &to)?;
        // The corpus is read-only; the copy must be writable like any hive.
        let perm: fs::Permissions = std::os::unix::fs::PermissionsExt::from_mode(0o644);
        fs::set_permissions(&to, perm)?;
    }
    // Move the synthetic hives to the real machine SID.
    let security = Hive::open(config.join("SECURITY")).context("opening the corpus SECURITY")?;
    let key = security.key("Policy\\PolAcDmS")?;
    let data = security
        .value(key, "")?
        .context("the corpus SECURITY has no PolAcDmS value")?
        .data;
    let (real_sid, _) = Sid::from_bytes(&data).context("PolAcDmS does not hold a SID")?;
    let sample: Sid = SAMPLE_MACHINE_SID.parse()?;
    for spec in hive_specs()? {
        if matches!(
            spec.recipe.as_str(),
            "SYSTEM.reg" | "SAM.reg" | "SECURITY.reg"
        ) {
            continue;
        }
        let file = host_path(dest, &spec.file);
        let mut h = Hive::open(&file)?;
        h.rewrite_sids(&sample, &real_sid)?;
        h.save_to(&file)?;
    }
    Ok(true)
}

/// Every entry of a tree: relative path -> (mode, contents; a link's target;
/// `None` for a directory).
pub type Snapshot = std::collections::BTreeMap<PathBuf, (u32, Option<Vec<u8>>)>;

/// Copies a tree (files with their mode, directories, symbolic links).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let ty = e.file_type()?;
        let dest = to.join(e.file_name());
        if ty.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path())?, &dest)?;
        } else if ty.is_dir() {
            copy_tree(&e.path(), &dest)?;
            fs::set_permissions(&dest, e.metadata()?.permissions())?;
        } else {
            fs::copy(e.path(), &dest).with_context(|| format!("copy {}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Reads a whole tree: every file's bytes and mode, every directory and
/// link, by path relative to `root` (to prove a tree did not change).
pub fn snapshot(root: &Path) -> Result<Snapshot> {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for e in fs::read_dir(dir)? {
            let p = e?.path();
            let rel = p.strip_prefix(root)?.to_path_buf();
            let meta = fs::symlink_metadata(&p)?;
            let mode = meta.permissions().mode();
            if meta.file_type().is_symlink() {
                let t = fs::read_link(&p)?.into_os_string();
                out.insert(rel, (mode, Some(t.into_encoded_bytes())));
            } else if meta.is_dir() {
                out.insert(rel, (mode, None));
                walk(root, &p, out)?;
            } else {
                out.insert(rel, (mode, Some(fs::read(&p)?)));
            }
        }
        Ok(())
    }
    let mut out = Snapshot::new();
    walk(root, root, &mut out)?;
    Ok(out)
}

/// The differences between two snapshots ("removed P", "changed P",
/// "added P"); empty when identical.
pub fn snapshot_diff(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut d = Vec::new();
    for (p, v) in before {
        match after.get(p) {
            None => d.push(format!("removed {}", p.display())),
            Some(w) if w != v => d.push(format!("changed {}", p.display())),
            _ => {}
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            d.push(format!("added {}", p.display()));
        }
    }
    d
}

fn wimlib_imagex(args: &[&std::ffi::OsStr]) -> Result<()> {
    let out = std::process::Command::new("wimlib-imagex")
        .args(args)
        .output()
        .context("running wimlib-imagex (Debian package wimtools)")?;
    ensure!(
        out.status.success(),
        "wimlib-imagex {:?} failed: {}{}",
        args,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The image name [`build_wims`] gives the captured root (the second image
/// of the two-image WIM is named [`WIM_IMAGE_NAME_2`]).
pub const WIM_IMAGE_NAME: &str = "Windows 10 Pro";
/// The name of the second image of `windows-two-images.wim`.
pub const WIM_IMAGE_NAME_2: &str = "Windows 10 Pro (copy)";

/// Captures the Windows root at `root` into WIM files under `dest` with
/// `wimlib-imagex` and returns their paths, in this order:
/// `windows-lzx.wim`, `windows-xpress.wim`, `windows-lzms.wim` (one image
/// each, named [`WIM_IMAGE_NAME`]), `windows-two-images.wim` (LZX, the root
/// captured twice: [`WIM_IMAGE_NAME`], then [`WIM_IMAGE_NAME_2`]) and
/// `windows-solid.esd` (the LZX WIM exported with `--solid`, LZMS solid
/// resources). Existing files of those names are replaced.
pub fn build_wims(root: &Path, dest: &Path) -> Result<Vec<PathBuf>> {
    ensure!(
        root.join("Windows/System32/config/SYSTEM").is_file(),
        "{}: not a Windows root",
        root.display()
    );
    fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    let r = root.as_os_str();
    let name = std::ffi::OsStr::new(WIM_IMAGE_NAME);
    let mut out = Vec::new();
    for (file, compress) in [
        ("windows-lzx.wim", "LZX"),
        ("windows-xpress.wim", "XPRESS"),
        ("windows-lzms.wim", "LZMS"),
    ] {
        let p = dest.join(file);
        let _ = fs::remove_file(&p);
        let c = format!("--compress={compress}");
        wimlib_imagex(&["capture".as_ref(), r, p.as_os_str(), name, c.as_ref()])?;
        out.push(p);
    }
    let two = dest.join("windows-two-images.wim");
    let _ = fs::remove_file(&two);
    wimlib_imagex(&["capture".as_ref(), r, two.as_os_str(), name])?;
    wimlib_imagex(&[
        "append".as_ref(),
        r,
        two.as_os_str(),
        WIM_IMAGE_NAME_2.as_ref(),
    ])?;
    out.push(two);
    let esd = dest.join("windows-solid.esd");
    let _ = fs::remove_file(&esd);
    wimlib_imagex(&[
        "export".as_ref(),
        out[0].as_os_str(),
        "all".as_ref(),
        esd.as_os_str(),
        "--solid".as_ref(),
    ])?;
    out.push(esd);
    Ok(out)
}

/// A fixed-seed xorshift64 generator for tests that need reproducible
/// pseudo-random offsets, sizes and data (seed it with a non-zero value).
///
/// ```
/// let mut r = reseal_testkit::XorShift(7);
/// assert!(r.below(10) < 10);
/// ```
pub struct XorShift(pub u64);

impl XorShift {
    /// The next value.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The sample Windows root as raw, VHD and VHDX disk images
/// ([`build_disk_images`]), built once per test process in a private
/// temporary folder; tests copy them ([`copy_into`]) before changing them.
pub fn sample_disk_images() -> &'static [PathBuf] {
    static IMAGES: std::sync::OnceLock<(tempfile::TempDir, Vec<PathBuf>)> =
        std::sync::OnceLock::new();
    let (_, images) = IMAGES.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary folder: {e}"));
        let root = tmp.path().join("root");
        build_windows_root(&root, None).unwrap_or_else(|e| panic!("sample root: {e:#}"));
        let images = build_disk_images(&root, &tmp.path().join("disk"))
            .unwrap_or_else(|e| panic!("disk images: {e:#}"));
        (tmp, images)
    });
    images
}

/// Copies the file `src` into the folder `dir` under its own name and
/// returns the copy's path.
pub fn copy_into(src: &Path, dir: &Path) -> PathBuf {
    let name = src
        .file_name()
        .unwrap_or_else(|| panic!("{}: no file name", src.display()));
    let dst = dir.join(name);
    fs::copy(src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    dst
}

/// Files a commit leaves beside its targets while it runs
/// (`.reseal-new-*`, `.reseal-old-*`, journals): after a finished or
/// recovered run there must be none.
pub fn reseal_leftovers(root: &Path) -> Vec<String> {
    snapshot(root)
        .unwrap_or_else(|e| panic!("snapshot {}: {e:#}", root.display()))
        .into_keys()
        .map(|p| p.display().to_string())
        .filter(|p| p.contains(".reseal-"))
        .collect()
}

/// A self-relative security descriptor owned by account `rid` of the
/// domain `domain` (`S-1-5-21-A-B-C`), group SYSTEM, whose DACL grants that
/// account full access: what Windows gives a local user's files.
///
/// ```
/// let sd = reseal_testkit::descriptor_owned_by("S-1-5-21-1-2-3", 1001);
/// assert_eq!(&sd[..2], &[1, 0]);
/// ```
pub fn descriptor_owned_by(domain: &str, rid: u32) -> Vec<u8> {
    let sid: Sid = format!("{domain}-{rid}")
        .parse()
        .unwrap_or_else(|e| panic!("{domain}-{rid}: {e}"));
    let owner = sid.to_bytes();
    let group = vec![1u8, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0];
    let mut ace = vec![0u8, 0x03];
    ace.extend_from_slice(&((8 + owner.len()) as u16).to_le_bytes());
    ace.extend_from_slice(&0x001F_01FFu32.to_le_bytes());
    ace.extend_from_slice(&owner);
    let mut acl = vec![2u8, 0];
    acl.extend_from_slice(&((8 + ace.len()) as u16).to_le_bytes());
    acl.extend_from_slice(&1u16.to_le_bytes());
    acl.extend_from_slice(&0u16.to_le_bytes());
    acl.extend(ace);
    let mut sd = vec![1u8, 0, 0x04, 0x80];
    let o = 20u32;
    let g = o + owner.len() as u32;
    let d = g + group.len() as u32;
    for x in [o, g, 0, d] {
        sd.extend_from_slice(&x.to_le_bytes());
    }
    sd.extend(owner);
    sd.extend(group);
    sd.extend(acl);
    sd
}

/// Whether the running test may use something it needs (a tool, the
/// corpus): returns `available` when it is; otherwise prints why the test
/// is skipped and returns `false` — except under `CI=true`, where a test
/// that skips did not run, so it panics naming what is missing.
///
/// ```
/// if !reseal_testkit::require(true, "qemu-img") {
///     return;
/// }
/// ```
pub fn require(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{what} is missing, and under CI=true a test must not skip");
    }
    eprintln!("skipped: {what} is missing");
    false
}

/// [`require`] for a command on the PATH.
pub fn require_tool(cmd: &str) -> bool {
    require(have(cmd), &format!("the command `{cmd}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reseal_hive::Value;

    fn machine() -> Sid {
        SAMPLE_MACHINE_SID.parse().unwrap()
    }

    fn build(variant: Option<&str>) -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("root");
        build_windows_root(&dest, variant).unwrap();
        (tmp, dest)
    }

    fn open(dest: &Path, rel: &str) -> Hive {
        let h = Hive::open(host_path(dest, rel)).unwrap();
        let report = h.check();
        assert!(report.is_clean(), "{rel}: {:?}", report.error_rules());
        h
    }

    fn config(name: &str) -> String {
        format!("Windows\\System32\\config\\{name}")
    }

    fn value(h: &Hive, key: &str, name: &str) -> Option<Value> {
        let k = h.open_key(key).unwrap()?;
        h.value(k, name).unwrap()
    }

    fn string(h: &Hive, key: &str, name: &str) -> Option<String> {
        let v = value(h, key, name)?;
        let units: Vec<u16> = v
            .data
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        Some(String::from_utf16_lossy(&units))
    }

    fn dword(h: &Hive, key: &str, name: &str) -> Option<u32> {
        let v = value(h, key, name)?;
        Some(u32::from_le_bytes(v.data.get(..4)?.try_into().ok()?))
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn files_recipe_syntax() {
        let ops = parse_files(
            "t",
            "# c\n\ndir A\\B\nsize 4 x.bin = ab\nhex h.bin = 00 ff\ntext t.txt <<END\none\ntwo\nEND\n\
             text i.txt = a = b\ncopy A -> B\ndelete C\ndirty D\n",
        )
        .unwrap();
        assert_eq!(
            ops,
            vec![
                FileOp::Dir("A\\B".into()),
                FileOp::File("x.bin".into(), b"ab\0\0".to_vec()),
                FileOp::File("h.bin".into(), vec![0, 0xff]),
                FileOp::File("t.txt".into(), b"one\r\ntwo\r\n".to_vec()),
                FileOp::File("i.txt".into(), b"a = b".to_vec()),
                FileOp::Copy("A".into(), "B".into()),
                FileOp::Delete("C".into()),
                FileOp::Dirty("D".into()),
            ]
        );
        assert!(parse_files("t", "bogus x\n").is_err());
        assert!(parse_files("t", "text ..\\x = y\n").is_err());
        assert!(parse_files("t", "text x <<END\nno end\n").is_err());
    }

    #[test]
    fn base_root_hives_and_facts() {
        let (_tmp, dest) = build(None);
        let m = machine();
        let demo = m.with_rid(1001);
        let alice = m.with_rid(1002);

        // SYSTEM: control sets, identity, devices, network state.
        let sys = open(&dest, &config("SYSTEM"));
        assert_eq!(sys.minor_version(), 5);
        let root = sys.key_info(sys.root()).unwrap().name;
        assert!(root.starts_with("CMI-CreateHive{"), "{root}");
        assert_eq!(dword(&sys, "Select", "Current"), Some(1));
        assert_eq!(dword(&sys, "Select", "LastKnownGood"), Some(2));
        for cs in ["ControlSet001", "ControlSet002"] {
            assert_eq!(
                string(
                    &sys,
                    &format!("{cs}\\Control\\ProductOptions"),
                    "ProductType"
                )
                .as_deref(),
                Some("WinNT")
            );
            assert_eq!(
                string(
                    &sys,
                    &format!("{cs}\\Control\\ComputerName\\ComputerName"),
                    "ComputerName"
                )
                .as_deref(),
                Some("DESKTOP-R3S34L1")
            );
        }
        let cs = "ControlSet001";
        assert_eq!(
            string(
                &sys,
                &format!("{cs}\\Control\\Session Manager\\Environment"),
                "PROCESSOR_ARCHITECTURE"
            )
            .as_deref(),
            Some("AMD64")
        );
        let nic =
            format!("{cs}\\Enum\\PCI\\VEN_8086&DEV_100E&SUBSYS_001E8086&REV_02\\3&267a616a&0&18");
        let driver = string(&sys, &nic, "Driver").unwrap();
        assert!(
            sys.open_key(&format!("{cs}\\Control\\Class\\{driver}"))
                .unwrap()
                .is_some()
        );
        let if_guid = string(
            &sys,
            &format!("{cs}\\Control\\Class\\{driver}"),
            "NetCfgInstanceId",
        )
        .unwrap();
        assert!(
            sys.open_key(&format!(
                "{cs}\\Control\\Network\\{{4D36E972-E325-11CE-BFC1-08002BE10318}}\\{if_guid}\\Connection"
            ))
            .unwrap()
            .is_some()
        );
        let iface = format!("{cs}\\Services\\Tcpip\\Parameters\\Interfaces\\{if_guid}");
        assert_eq!(
            string(&sys, &iface, "DhcpIPAddress").as_deref(),
            Some("10.0.2.15")
        );
        assert!(
            value(
                &sys,
                &format!("{cs}\\Services\\Tcpip6\\Parameters"),
                "Dhcpv6DUID"
            )
            .is_some()
        );
        for enumerator in ["PCI", "ROOT", "SWD", "USB", "STORAGE", "SCSI"] {
            let k = sys.key(&format!("{cs}\\Enum\\{enumerator}")).unwrap();
            assert!(!sys.subkeys(k).unwrap().is_empty(), "{enumerator}");
        }
        assert!(sys.open_key(&format!("{cs}\\Enum\\PCI")).unwrap().is_some());
        assert_eq!(
            dword(&sys, &format!("{cs}\\Services\\storahci"), "Start"),
            Some(3)
        );
        assert!(value(&sys, "MountedDevices", "\\DosDevices\\C:").is_some());
        assert_eq!(dword(&sys, "Setup", "SystemSetupInProgress"), Some(0));
        assert_eq!(
            dword(&sys, "Setup\\Status\\SysprepStatus", "GeneralizationState"),
            None
        );

        // SOFTWARE: version, profiles, identities, markers.
        let sw = open(&dest, &config("SOFTWARE"));
        let cv = "Microsoft\\Windows NT\\CurrentVersion";
        assert_eq!(
            string(&sw, cv, "ProductName").as_deref(),
            Some("Windows 10 Pro")
        );
        assert_eq!(string(&sw, cv, "CurrentBuild").as_deref(), Some("19045"));
        for (sid, path) in [(&demo, "C:\\Users\\demo"), (&alice, "C:\\Users\\alice")] {
            let k = format!("{cv}\\ProfileList\\{sid}");
            assert_eq!(string(&sw, &k, "ProfileImagePath").as_deref(), Some(path));
            assert_eq!(value(&sw, &k, "Sid").unwrap().data, sid.to_bytes());
            let sd = sw.security_descriptor(sw.key(&k).unwrap()).unwrap();
            assert!(contains(&sd, &sid.to_bytes()), "profile key grants {sid}");
        }
        for s in ["S-1-5-18", "S-1-5-19", "S-1-5-20"] {
            assert!(
                sw.open_key(&format!("{cv}\\ProfileList\\{s}"))
                    .unwrap()
                    .is_some()
            );
        }
        assert!(string(&sw, "Microsoft\\Cryptography", "MachineGuid").is_some());
        assert!(string(&sw, "Microsoft\\SQMClient", "MachineId").is_some());
        assert!(
            string(
                &sw,
                "Microsoft\\Windows\\CurrentVersion\\WindowsUpdate",
                "SusClientId"
            )
            .is_some()
        );
        assert_eq!(
            string(
                &sw,
                "Microsoft\\Windows\\CurrentVersion\\Setup\\State",
                "ImageState"
            )
            .as_deref(),
            Some("IMAGE_STATE_COMPLETE")
        );
        let appx = "Microsoft\\Windows\\CurrentVersion\\Appx\\AppxAllUserStore";
        let provisioned = sw
            .subkeys(sw.key(&format!("{appx}\\Applications")).unwrap())
            .unwrap();
        let per_user = sw
            .subkeys(sw.key(&format!("{appx}\\{demo}")).unwrap())
            .unwrap();
        let names = |ks: Vec<_>| -> Vec<String> {
            ks.into_iter()
                .map(|k| sw.key_info(k).unwrap().name)
                .collect()
        };
        let provisioned = names(provisioned);
        for p in names(per_user) {
            assert!(provisioned.contains(&p), "{p} is provisioned");
        }
        assert!(
            sw.open_key("Microsoft\\Provisioning\\AutopilotPolicy")
                .unwrap()
                .is_some()
        );
        assert!(
            sw.open_key(&format!(
                "Microsoft\\Windows\\CurrentVersion\\Group Policy\\State\\{demo}"
            ))
            .unwrap()
            .is_some()
        );

        // SAM: domain SID, users, names, alias membership.
        let sam = open(&dest, &config("SAM"));
        let v = value(&sam, "SAM\\Domains\\Account", "V").unwrap().data;
        assert!(v.ends_with(&m.to_bytes()));
        for (name, rid) in [
            ("Administrator", 500u32),
            ("Guest", 501),
            ("demo", 1001),
            ("alice", 1002),
        ] {
            let k = format!("SAM\\Domains\\Account\\Users\\{rid:08X}");
            assert_eq!(value(&sam, &k, "F").unwrap().data.len(), 0x50);
            assert!(value(&sam, &k, "V").is_some());
            let n = value(
                &sam,
                &format!("SAM\\Domains\\Account\\Users\\Names\\{name}"),
                "",
            )
            .unwrap();
            assert_eq!(n.value_type, rid);
        }
        let admins = value(&sam, "SAM\\Domains\\Builtin\\Aliases\\00000220", "C")
            .unwrap()
            .data;
        assert!(contains(&admins, &m.with_rid(500).to_bytes()));
        assert!(contains(&admins, &demo.to_bytes()));
        let users = value(&sam, "SAM\\Domains\\Builtin\\Aliases\\00000221", "C")
            .unwrap()
            .data;
        assert!(contains(&users, &alice.to_bytes()));
        let member = value(
            &sam,
            &format!("SAM\\Domains\\Builtin\\Aliases\\Members\\{m}\\000003E9"),
            "",
        )
        .unwrap();
        assert_eq!(
            (member.value_type, member.data),
            (1, 0x220u32.to_le_bytes().to_vec())
        );

        // SECURITY: account domain, workgroup, account rights.
        let sec = open(&dest, &config("SECURITY"));
        assert_eq!(
            value(&sec, "Policy\\PolAcDmS", "").unwrap().data,
            m.to_bytes()
        );
        assert!(value(&sec, "Policy\\PolPrDmS", "").unwrap().data.is_empty());
        assert_eq!(
            value(&sec, &format!("Policy\\Accounts\\{demo}\\Sid"), "")
                .unwrap()
                .data,
            demo.to_bytes()
        );
        assert!(value(&sec, "Policy\\PolEfDat", "").is_none());

        // DEFAULT and the user hives.
        open(&dest, &config("DEFAULT"));
        for (name, rid) in ROOT_USERS {
            let sid = m.with_rid(rid);
            let nt = open(&dest, &format!("Users\\{name}\\NTUSER.DAT"));
            assert!(
                nt.open_key(&format!(
                    "Software\\Microsoft\\Protected Storage System Provider\\{sid}"
                ))
                .unwrap()
                .is_some()
            );
            assert!(contains(
                &nt.security_descriptor(nt.root()).unwrap(),
                &sid.to_bytes()
            ));
            let uc = open(
                &dest,
                &format!("Users\\{name}\\AppData\\Local\\Microsoft\\Windows\\UsrClass.dat"),
            );
            assert_eq!(uc.minor_version(), 3);
            assert_eq!(
                uc.key_info(uc.root()).unwrap().name,
                format!("{sid}_Classes")
            );
        }

        // Files.
        let state =
            fs::read_to_string(host_path(&dest, "Windows\\Setup\\State\\State.ini")).unwrap();
        assert!(state.contains("IMAGE_STATE_COMPLETE"));
        let actions = fs::read_to_string(host_path(
            &dest,
            "Windows\\System32\\Sysprep\\ActionFiles\\Generalize.xml",
        ))
        .unwrap();
        assert!(actions.contains("Sysprep_Generalize_Pnp"));
        let evtx = fs::read(host_path(
            &dest,
            "Windows\\System32\\winevt\\Logs\\System.evtx",
        ))
        .unwrap();
        assert!(evtx.starts_with(b"ElfFile"));
        assert!(host_path(&dest, "pagefile.sys").is_file());
        assert!(!host_path(&dest, "hiberfil.sys").exists());
        assert!(!host_path(&dest, "Windows\\Panther\\unattend.xml").exists());
        let regback =
            fs::read(host_path(&dest, "Windows\\System32\\config\\RegBack\\SAM")).unwrap();
        assert_eq!(regback, fs::read(host_path(&dest, &config("SAM"))).unwrap());
        assert!(
            build_windows_root(&dest, None).is_err(),
            "refuses a non-empty destination"
        );
        assert!(build_windows_root(&dest.join("x"), Some("no-such-finding")).is_err());
    }

    #[test]
    fn each_variant_shows_its_marker() {
        let m = machine();
        for v in VARIANTS {
            let (_tmp, dest) = build(Some(v));
            let cs = "ControlSet001";
            match v {
                "dirty-hive-without-logs" => {
                    let err = Hive::open(host_path(&dest, &config("SOFTWARE"))).unwrap_err();
                    assert!(
                        matches!(err, reseal_hive::HiveError::DirtyWithoutLogs { .. }),
                        "{err}"
                    );
                    assert!(!host_path(&dest, &config("SOFTWARE.LOG1")).exists());
                    open(&dest, &config("SYSTEM"));
                }
                "hibernated" => {
                    let b = fs::read(host_path(&dest, "hiberfil.sys")).unwrap();
                    assert!(b.starts_with(b"hibr"));
                }
                "domain-controller" => {
                    let sys = open(&dest, &config("SYSTEM"));
                    let po = format!("{cs}\\Control\\ProductOptions");
                    assert_eq!(
                        string(&sys, &po, "ProductType").as_deref(),
                        Some("LanmanNT")
                    );
                    assert!(
                        sys.open_key(&format!("{cs}\\Services\\NTDS"))
                            .unwrap()
                            .is_some()
                    );
                }
                "domain-joined" => {
                    let sec = open(&dest, &config("SECURITY"));
                    let d = value(&sec, "Policy\\PolPrDmS", "").unwrap().data;
                    let (sid, _) = Sid::from_bytes(&d).unwrap();
                    assert!(sid.is_machine_domain() && sid != m);
                    let n = value(&sec, "Policy\\PolPrDmN", "").unwrap().data;
                    assert!(contains(
                        &n,
                        &"CONTOSO"
                            .encode_utf16()
                            .flat_map(u16::to_le_bytes)
                            .collect::<Vec<_>>()
                    ));
                }
                "appx-per-user" => {
                    let sw = open(&dest, &config("SOFTWARE"));
                    let store = "Microsoft\\Windows\\CurrentVersion\\Appx\\AppxAllUserStore";
                    let k = sw.key(&format!("{store}\\{}", m.with_rid(1002))).unwrap();
                    let mut lonely = 0;
                    for p in sw.subkeys(k).unwrap() {
                        let name = sw.key_info(p).unwrap().name;
                        if sw
                            .open_key(&format!("{store}\\Applications\\{name}"))
                            .unwrap()
                            .is_none()
                        {
                            lonely += 1;
                        }
                    }
                    assert_eq!(lonely, 1);
                }
                "pending-servicing" => {
                    let sys = open(&dest, &config("SYSTEM"));
                    let sm = format!("{cs}\\Control\\Session Manager");
                    assert!(value(&sys, &sm, "PendingFileRenameOperations").is_some());
                    assert!(host_path(&dest, "Windows\\WinSxS\\pending.xml").is_file());
                }
                "sysprep-corrupt" => {
                    let sw = open(&dest, &config("SOFTWARE"));
                    let k = "Microsoft\\Windows\\CurrentVersion\\Setup\\Sysprep";
                    assert_eq!(dword(&sw, k, "SysprepCorrupt"), Some(1));
                }
                "stale-answer-file" => {
                    assert!(host_path(&dest, "Windows\\Panther\\unattend.xml").is_file());
                }
                "unsupported-server-role" => {
                    let sys = open(&dest, &config("SYSTEM"));
                    let po = format!("{cs}\\Control\\ProductOptions");
                    assert_eq!(
                        string(&sys, &po, "ProductType").as_deref(),
                        Some("ServerNT")
                    );
                    assert!(
                        sys.open_key(&format!("{cs}\\Services\\CertSvc"))
                            .unwrap()
                            .is_some()
                    );
                }
                "efs" => {
                    let sec = open(&dest, &config("SECURITY"));
                    assert!(!value(&sec, "Policy\\PolEfDat", "").unwrap().data.is_empty());
                }
                "already-generalized" => {
                    let sw = open(&dest, &config("SOFTWARE"));
                    let k = "Microsoft\\Windows\\CurrentVersion\\Setup\\State";
                    assert_eq!(
                        string(&sw, k, "ImageState").as_deref(),
                        Some("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE")
                    );
                    let sys = open(&dest, &config("SYSTEM"));
                    let k = "Setup\\Status\\SysprepStatus";
                    assert_eq!(dword(&sys, k, "GeneralizationState"), Some(7));
                    let ini = host_path(&dest, "Windows\\Setup\\State\\State.ini");
                    assert!(fs::read_to_string(ini).unwrap().contains("RESEAL_TO_OOBE"));
                }
                other => panic!("no check for the variant {other}"),
            }
        }
    }

    #[test]
    fn corpus_root_when_present() {
        let corpus = workspace_root().join("../shared/corpus");
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("root");
        if !build_corpus_root(&dest, &corpus).unwrap() {
            eprintln!("corpus absent: skipped");
            return;
        }
        let sys = Hive::open(host_path(&dest, &config("SYSTEM"))).unwrap();
        assert!(
            !sys.open_info().replayed_logs.is_empty(),
            "SYSTEM was dirty"
        );
        assert!(sys.open_key("Select").unwrap().is_some());
        let sec = Hive::open(host_path(&dest, &config("SECURITY"))).unwrap();
        let (real, _) =
            Sid::from_bytes(&value(&sec, "Policy\\PolAcDmS", "").unwrap().data).unwrap();
        assert_ne!(real, machine());
        open(&dest, &config("SAM"));
        let sw = open(&dest, &config("SOFTWARE"));
        let pl = "Microsoft\\Windows NT\\CurrentVersion\\ProfileList";
        assert!(
            sw.open_key(&format!("{pl}\\{}", real.with_rid(1001)))
                .unwrap()
                .is_some()
        );
        assert!(
            sw.open_key(&format!("{pl}\\{}", machine().with_rid(1001)))
                .unwrap()
                .is_none()
        );
    }
}
