//! Fixtures the project generates for its demo and tests.
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

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use reseal_hive::regfile::{RegDocument, RegOp, parse_reg, strip_prefix_ci};
use reseal_hive::{Hive, Sid, default_descriptor};

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
    if digits.len() % 2 != 0 {
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
    crate::util::root().join(WINDOWS_ROOT_RECIPES)
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
        crate::util::have("xz"),
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
        let mut perm = fs::metadata(&to)?.permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
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

/// `cargo xtask fixtures`: writes the sample hive to `testdata/generated/`
/// and the Windows roots to `target/fixtures/` (not committed; regenerate at
/// will): `windows-root`, `variants/<finding>` (one root per preflight
/// finding) and, when the shared corpus is present, `windows-root-corpus`.
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
