//! The `machine-sid` operation end to end: on the synthetic root and on the
//! root with real Windows 10 SAM and SECURITY hives, a generalize run leaves
//! no trace of the old machine SID in any hive (raw bytes, and names and
//! values as read by regipy), keeps every SAM alias member with its RID,
//! renames ProfileList keys and SID-named folders, rewrites task
//! definitions, and every hive passes the checker.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use reseal::ResealError;
use reseal::backend::dir::DirBackend;
use reseal::generalize::generalize;
use reseal::ops::machine_sid::{SidSummary, verify_hive};
use reseal::options::{GeneralizeOptions, Selection, SidChoice};
use reseal::report::{Outcome, RunReport};
use reseal_hive::{Hive, Sid};
use reseal_testkit::{SAMPLE_MACHINE_SID, build_corpus_root, build_windows_root, corpus_dir};

const PROFILE_LIST: &str = r"Microsoft\Windows NT\CurrentVersion\ProfileList";

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// Every file under `dir`, relative paths with `/`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The byte forms of a domain SID searched for: its three random numbers
/// in binary (little-endian), and `-x-y-z` in ASCII and UTF-16LE.
fn forms(sid: &Sid) -> Vec<(&'static str, Vec<u8>)> {
    let s = sid.sub_authorities();
    let bin: Vec<u8> = s[1..].iter().flat_map(|x| x.to_le_bytes()).collect();
    let text = format!("-{}-{}-{}", s[1], s[2], s[3]);
    vec![
        ("binary", bin),
        ("ascii", text.as_bytes().to_vec()),
        ("utf16", utf16(&text)),
    ]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file of the tree whose bytes or path hold the SID in any form.
fn leftovers(root: &Path, sid: &Sid) -> Vec<String> {
    let forms = forms(sid);
    let mut out = Vec::new();
    for p in files(root) {
        let rel = p.strip_prefix(root).expect("prefix").display().to_string();
        let text = String::from_utf8_lossy(&forms[1].1).into_owned();
        if rel.contains(&text) {
            out.push(format!("{rel}: name"));
        }
        if p.is_file() {
            let data = fs::read(&p).expect("read");
            for (kind, f) in &forms {
                if contains(&data, f) {
                    out.push(format!("{rel}: {kind}"));
                }
            }
        }
    }
    out
}

/// The hive files of the root (machine hives and every profile's).
fn hive_files(root: &Path) -> Vec<PathBuf> {
    files(root)
        .into_iter()
        .filter(|p| {
            p.is_file()
                && !p.to_string_lossy().contains("RegBack")
                && fs::read(p).is_ok_and(|d| d.starts_with(b"regf") && d.len() >= 8192)
        })
        .collect()
}

fn python() -> Option<PathBuf> {
    let p = reseal_testkit::workspace_root().join("target/venv/bin/python");
    let ok = p.is_file()
        && Command::new(&p)
            .args(["-c", "import regipy"])
            .output()
            .is_ok_and(|o| o.status.success());
    ok.then_some(p)
}

/// regipy's view: (keys read, values read, hits).
fn regipy_hits(py: &Path, hive: &Path, sid: &Sid) -> (u64, u64, Vec<String>) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/sid_leftovers.py");
    let tail: String = forms(sid)[0].1.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new(py)
        .arg(script)
        .arg(hive)
        .arg(sid.to_string())
        .arg(tail)
        .output()
        .expect("run regipy");
    assert!(
        out.status.success(),
        "regipy failed on {}: {}",
        hive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let hits = v["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h.to_string())
        .collect();
    (
        v["keys"].as_u64().expect("keys"),
        v["values"].as_u64().expect("values"),
        hits,
    )
}

/// hivexregedit's view: lines of `hivexregedit --export` that mention the
/// SID (key and value names as text, data as comma-separated hex bytes).
/// `None` when hivex is not installed.
fn hivex_hits(hive: &Path, sid: &Sid) -> Option<(usize, Vec<String>)> {
    let out = Command::new("hivexregedit")
        .arg("--export")
        .arg(hive)
        .arg("\\")
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "hivexregedit failed on {}: {}",
        hive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let hex = |b: &[u8]| {
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let f = forms(sid);
    let needles = [
        String::from_utf8_lossy(&f[1].1).into_owned(),
        hex(&f[0].1),
        hex(&f[1].1),
        hex(&f[2].1),
    ];
    let keys = text.lines().filter(|l| l.starts_with('[')).count();
    let hits = text
        .lines()
        .filter(|l| needles.iter().any(|n| l.contains(n.as_str())))
        .map(|l| l.chars().take(160).collect())
        .collect();
    Some((keys, hits))
}

/// Account SIDs (`S-1-5-21-x-y-z-RID`) in binary form inside `data`.
fn binary_account_sids(data: &[u8]) -> Vec<Sid> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 28 <= data.len() {
        if data[i..i + 12] == [1, 5, 0, 0, 0, 0, 0, 5, 21, 0, 0, 0] {
            if let Some((s, 28)) = Sid::from_bytes(&data[i..i + 28]) {
                out.push(s);
                i += 28;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Members of every SAM alias (`Aliases\<RID>\C`), by alias key path.
fn alias_members(root: &Path) -> BTreeMap<String, Vec<Sid>> {
    let sam = Hive::open(root.join("Windows/System32/config/SAM")).expect("SAM");
    let mut out = BTreeMap::new();
    for domain in ["Account", "Builtin"] {
        let base = format!(r"SAM\Domains\{domain}\Aliases");
        let Some(k) = sam.open_key(&base).expect("open") else {
            continue;
        };
        for c in sam.subkeys(k).expect("subkeys") {
            let name = sam.key_info(c).expect("info").name;
            if let Some(v) = sam.value(c, "C").expect("value") {
                out.insert(format!(r"{base}\{name}"), binary_account_sids(&v.data));
            }
        }
    }
    out
}

/// ProfileList: key name -> (ProfileImagePath, Sid value).
fn profile_list(root: &Path) -> BTreeMap<String, (Vec<u8>, Option<Vec<u8>>)> {
    let sw = Hive::open(root.join("Windows/System32/config/SOFTWARE")).expect("SOFTWARE");
    let k = sw.key(PROFILE_LIST).expect("ProfileList");
    let mut out = BTreeMap::new();
    for c in sw.subkeys(k).expect("subkeys") {
        let name = sw.key_info(c).expect("info").name;
        let path = sw
            .value(c, "ProfileImagePath")
            .expect("value")
            .expect("ProfileImagePath")
            .data;
        let sid = sw.value(c, "Sid").expect("value").map(|v| v.data);
        out.insert(name, (path, sid));
    }
    out
}

/// Adds what the recipes lack: task definitions (UTF-16LE with BOM, and
/// UTF-8) and a user's RSA key folder.
fn add_extra_files(root: &Path, sid: &str) {
    let tasks = root.join("Windows/System32/Tasks");
    let xml = |user: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\r\n<Task version=\"1.2\" xmlns=\"http://schemas.microsoft.com/windows/2004/02/mit/task\">\r\n  <Principals>\r\n    <Principal id=\"Author\">\r\n      <UserId>{user}</UserId>\r\n      <LogonType>InteractiveToken</LogonType>\r\n    </Principal>\r\n  </Principals>\r\n  <Actions Context=\"Author\"><Exec><Command>backup.cmd</Command></Exec></Actions>\r\n</Task>\r\n"
        )
    };
    fs::create_dir_all(tasks.join("Demo")).expect("mkdir");
    let mut data = vec![0xFF, 0xFE];
    data.extend(utf16(&xml(&format!("{sid}-1001"))));
    fs::write(tasks.join("Demo/Backup"), data).expect("task");
    fs::write(
        tasks.join("Demo/Utf8Task"),
        xml(&format!("{sid}-1002")).replace("UTF-16", "UTF-8"),
    )
    .expect("task");
    let mut sys = vec![0xFF, 0xFE];
    sys.extend(utf16(&xml("S-1-5-18")));
    fs::write(tasks.join("SystemTask"), &sys).expect("task");
    let rsa = root.join(format!(
        "Users/demo/AppData/Roaming/Microsoft/Crypto/RSA/{sid}-1001"
    ));
    fs::create_dir_all(&rsa).expect("mkdir");
    fs::write(rsa.join("key_container"), b"RSA2 private key blob").expect("key");
    fs::write(
        root.join(format!(
            "Users/demo/AppData/Roaming/Microsoft/Protect/{sid}-1001/4c9e1f2a-master-key"
        )),
        b"master key blob",
    )
    .expect("key");
    // The per-user resource cache of packaged apps: files named by the
    // user's SID among other text, and one of another machine's user.
    let meta = root.join(format!("Program Files/WindowsApps/{WEATHER}/{METADATA}"));
    fs::create_dir_all(&meta).expect("mkdir");
    for f in [
        format!("{sid}-1001-MergedResources-0.pri"),
        format!("{sid}-1001-MergedResources-1.pri"),
        "S-1-5-21-1-2-3-1001-MergedResources-0.pri".to_string(),
        "resources.pri".to_string(),
    ] {
        fs::write(meta.join(f), b"mrm_pri2").expect("pri");
    }
}

/// What Windows 10/11 leave in a user's UsrClass.dat: a resource-cache key
/// named by a URL-encoded path that holds the SID among other text, and a
/// key whose descriptor has 20 bytes of DACL slack holding `15000000` and
/// the domain's sub-authorities (a removed ACE).
fn add_usrclass_traces(root: &Path, sid: &str) {
    let path = root.join("Users/demo/AppData/Local/Microsoft/Windows/UsrClass.dat");
    let mut h = Hive::open(&path).expect("UsrClass.dat");
    let mrt = format!(
        "Local Settings\\MrtCache\\C:%5CProgram Files%5CWindowsApps%5C{WEATHER}%5C{METADATA}%5C{sid}-1001-MergedResources-1.pri"
    );
    h.create_key(&format!("{mrt}\\1d7a3b2c4e5f6a7"))
        .expect("key");
    let domain: Sid = sid.parse().expect("sid");
    let mut sd = reseal_hive::default_descriptor();
    let dacl = u32::from_le_bytes(sd[16..20].try_into().expect("4")) as usize;
    assert_eq!(dacl, 20, "default descriptor: DACL first");
    let size = u16::from_le_bytes([sd[22], sd[23]]) as usize;
    let mut slack = domain.to_bytes()[8..].to_vec();
    slack.extend([0x3C; 4]);
    sd.splice(dacl + size..dacl + size, slack);
    sd[22..24].copy_from_slice(&((size + 20) as u16).to_le_bytes());
    for field in [4, 8] {
        let off = u32::from_le_bytes(sd[field..field + 4].try_into().expect("4"));
        sd[field..field + 4].copy_from_slice(&(off + 20).to_le_bytes());
    }
    h.set_security("Local Settings", &sd).expect("descriptor");
    h.save_to(&path).expect("save");
}

/// A packaged app's folder and its metadata folder.
const WEATHER: &str = "Microsoft.BingWeather_4.46.32012.0_x64__8wekyb3d8bbwe";
const METADATA: &str = "microsoft.system.package.metadata";

fn seeded(seed: u64) -> GeneralizeOptions {
    GeneralizeOptions {
        seed: Some(seed),
        ..GeneralizeOptions::default()
    }
}

fn run(root: &Path, opts: &GeneralizeOptions) -> reseal::Result<RunReport> {
    let mut b = DirBackend::open(root).expect("open");
    generalize(&mut b, opts)
}

/// Everything the issue asks of a finished rewrite.
fn check_rewritten(
    root: &Path,
    summary: &SidSummary,
    aliases_before: &BTreeMap<String, Vec<Sid>>,
    profiles_before: &BTreeMap<String, (Vec<u8>, Option<Vec<u8>>)>,
) {
    let old: Sid = summary.old.parse().expect("old");
    let new: Sid = summary.new.parse().expect("new");
    assert_ne!(old, new);
    assert!(new.is_machine_domain());

    // Raw bytes of every file and every name.
    let left = leftovers(root, &old);
    assert!(left.is_empty(), "old SID left in: {left:#?}");

    // Every hive passes our checker and the independent reader.
    let hives = hive_files(root);
    assert!(hives.len() >= 9, "{hives:?}");
    let py = python();
    for h in &hives {
        let hive = Hive::open(h).expect("open hive");
        let report = hive.check();
        assert_eq!(report.errors().count(), 0, "{}: {report:?}", h.display());
        assert!(hive.find_sids(&old).expect("scan").occurrences.is_empty());
        match hivex_hits(h, &old) {
            Some((keys, hits)) => {
                assert!(keys > 0, "{}: hivex read nothing", h.display());
                assert!(hits.is_empty(), "{}: hivex finds {hits:#?}", h.display());
            }
            None => {
                reseal_testkit::require(false, "hivexregedit");
            }
        }
        // regipy is slow on big hives (minutes for 12 MB): small ones only.
        let small = fs::metadata(h).expect("metadata").len() <= 4 << 20;
        if let (Some(py), true) = (&py, small) {
            let (keys, _values, hits) = regipy_hits(py, h, &old);
            assert!(keys > 0, "{}: regipy read nothing", h.display());
            assert!(hits.is_empty(), "{}: regipy finds {hits:#?}", h.display());
        }
    }
    reseal_testkit::require(py.is_some(), "regipy (cargo xtask setup)");

    // SAM alias members: same RIDs, new domain; well-known members kept.
    let after = alias_members(root);
    assert_eq!(after.len(), aliases_before.len());
    let mut local_members = 0;
    for (alias, members) in aliases_before {
        let want: Vec<Sid> = members
            .iter()
            .map(|m| m.replace_prefix(&old, &new).unwrap_or_else(|| m.clone()))
            .collect();
        local_members += members.iter().filter(|m| m.starts_with(&old)).count();
        assert_eq!(after[alias], want, "{alias}");
    }
    assert!(local_members > 0, "no local alias member was checked");

    // ProfileList: renamed keys, same ProfileImagePath, Sid value rewritten.
    let profiles = profile_list(root);
    assert_eq!(profiles.len(), profiles_before.len());
    for (name, (path, sid)) in profiles_before {
        let parsed: Sid = name.parse().expect("sid key");
        let want_name = parsed
            .replace_prefix(&old, &new)
            .map_or(name.clone(), |s| s.to_string());
        let (p2, s2) = profiles
            .get(&want_name)
            .unwrap_or_else(|| panic!("{want_name} missing"));
        assert_eq!(p2, path, "{name}: ProfileImagePath changed");
        if let Some(sid) = sid {
            let (s, _) = Sid::from_bytes(sid).expect("sid value");
            let want = s.replace_prefix(&old, &new).unwrap_or(s);
            assert_eq!(s2.as_deref(), Some(&want.to_bytes()[..]), "{name}");
        }
    }
    assert!(profiles.contains_key("S-1-5-18"), "well-known profile kept");
}

#[test]
fn synthetic_root_gets_a_new_sid_everywhere() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("root");
    build_windows_root(&root, None).expect("build root");
    add_extra_files(&root, SAMPLE_MACHINE_SID);
    add_usrclass_traces(&root, SAMPLE_MACHINE_SID);
    let aliases = alias_members(&root);
    let profiles = profile_list(&root);
    let before_system_task = fs::read(root.join("Windows/System32/Tasks/SystemTask")).expect("t");
    // The independent readers do see the old SID before the run.
    let old: Sid = SAMPLE_MACHINE_SID.parse().expect("sid");
    let sam = root.join("Windows/System32/config/SAM");
    if let Some((_, hits)) = hivex_hits(&sam, &old) {
        assert!(hits.len() >= 5, "{hits:?}");
    }
    if let Some(py) = python() {
        assert!(regipy_hits(&py, &sam, &old).2.len() >= 5);
    }

    // A dry run plans the rewrite and writes nothing.
    let dry = run(
        &root,
        &GeneralizeOptions {
            dry_run: true,
            ..seeded(42)
        },
    )
    .expect("dry run");
    let planned = dry.installs[0].sid.clone().expect("sid summary");
    assert_eq!(planned.old, SAMPLE_MACHINE_SID);
    assert!(planned.seeded);

    let report = run(&root, &seeded(42)).expect("generalize");
    assert_eq!(report.outcome, Outcome::Done);
    let summary = report.installs[0].sid.clone().expect("sid summary");
    assert_eq!(summary, planned, "the seed makes the plan repeatable");
    assert_eq!(summary.old, SAMPLE_MACHINE_SID);
    eprintln!("{}", summary.to_text());
    let by_hive = |label: &str| {
        summary
            .hives
            .iter()
            .find(|h| h.hive == label)
            .unwrap_or_else(|| panic!("{label} not in {:?}", summary.hives))
    };
    assert!(by_hive("SAM").key_names >= 1);
    assert!(by_hive("SAM").value_data >= 1);
    assert!(by_hive("SOFTWARE").key_names >= 2);
    assert!(by_hive("SECURITY").value_data >= 1);
    assert!(by_hive("NTUSER.DAT of Users\\demo").descriptors >= 1);
    assert!(by_hive("UsrClass.dat of Users\\alice").descriptors >= 1);
    let demo_classes = by_hive("UsrClass.dat of Users\\demo");
    assert!(demo_classes.substring_key_names >= 1, "{demo_classes:?}");
    assert!(demo_classes.descriptor_slack >= 1, "{demo_classes:?}");
    assert_eq!(summary.task_files.len(), 2, "{:?}", summary.task_files);
    assert_eq!(summary.folders.len(), 6, "{:?}", summary.folders);
    let text = report.to_text();
    assert!(text.contains("machine SID: S-1-5-21-1004336348"), "{text}");
    let not_done: Vec<&str> = report.installs[0]
        .not_done
        .iter()
        .filter(|n| n.operation == "machine-sid")
        .map(|n| n.message.as_str())
        .collect();
    assert!(not_done.iter().any(|m| m.starts_with("DPAPI")));
    assert!(not_done.iter().any(|m| m.contains("$Secure")));
    assert!(not_done.iter().any(|m| m.contains("setupcl")));

    check_rewritten(&root, &summary, &aliases, &profiles);

    // Folders renamed with their contents.
    let new = &summary.new;
    let demo = root.join("Users/demo/AppData/Roaming/Microsoft");
    assert!(
        demo.join(format!("Protect/{new}-1001/4c9e1f2a-master-key"))
            .is_file()
    );
    assert!(
        demo.join(format!("Crypto/RSA/{new}-1001/key_container"))
            .is_file()
    );
    assert!(
        root.join(format!(
            "Users/alice/AppData/Roaming/Microsoft/Protect/{new}-1002"
        ))
        .is_dir()
    );
    assert!(root.join(format!("$Recycle.Bin/{new}-1001")).is_dir());
    // Files named by a SID among other text, under WindowsApps.
    let meta = root.join(format!("Program Files/WindowsApps/{WEATHER}/{METADATA}"));
    let mut names: Vec<String> = fs::read_dir(&meta)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want = vec![
        format!("{new}-1001-MergedResources-0.pri"),
        format!("{new}-1001-MergedResources-1.pri"),
        "S-1-5-21-1-2-3-1001-MergedResources-0.pri".to_string(),
        "resources.pri".to_string(),
    ];
    want.sort();
    assert_eq!(names, want);

    // Task definitions: BOM and encoding kept, local SID rewritten,
    // well-known SIDs untouched.
    let task = fs::read(root.join("Windows/System32/Tasks/Demo/Backup")).expect("task");
    assert_eq!(&task[..2], &[0xFF, 0xFE]);
    assert!(contains(
        &task,
        &utf16(&format!("<UserId>{new}-1001</UserId>"))
    ));
    let task8 = fs::read_to_string(root.join("Windows/System32/Tasks/Demo/Utf8Task")).expect("t");
    assert!(task8.contains(&format!("<UserId>{new}-1002</UserId>")));
    assert_eq!(
        fs::read(root.join("Windows/System32/Tasks/SystemTask")).expect("t"),
        before_system_task
    );

    // The well-known and the builtin members keys stay.
    let sam = Hive::open(root.join("Windows/System32/config/SAM")).expect("SAM");
    assert!(
        sam.open_key(r"SAM\Domains\Builtin\Aliases\Members\S-1-5")
            .expect("open")
            .is_some()
    );
    assert!(
        sam.open_key(&format!(
            r"SAM\Domains\Builtin\Aliases\Members\{new}\000003E9"
        ))
        .expect("open")
        .is_some()
    );

    // A second run plans nothing.
    let again = run(&root, &seeded(43)).expect("second run");
    assert!(again.installs[0].already_generalized);
    assert!(again.installs[0].edits.is_empty());
    assert!(again.installs[0].sid.is_none());
}

#[test]
fn corpus_root_gets_a_new_sid_everywhere() {
    let corpus = corpus_dir();
    if !reseal_testkit::require(corpus.is_some(), "the shared corpus") {
        return;
    }
    let corpus = corpus.unwrap();
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("root");
    if !reseal_testkit::require(
        build_corpus_root(&root, &corpus).expect("build corpus root"),
        "the corpus files of the corpus-backed root",
    ) {
        return;
    }
    // The real machine SID, from the real SECURITY hive.
    // The real SYSTEM has pending file renames: a warning, forced here.
    let opts = GeneralizeOptions {
        force: true,
        ..seeded(7)
    };
    let report = run(&root, &opts).expect("generalize");
    let summary = report.installs[0]
        .sid
        .clone()
        .unwrap_or_else(|| panic!("no sid summary: {}", report.to_text()));
    assert_ne!(summary.old, SAMPLE_MACHINE_SID);
    eprintln!("{}", summary.to_text());
    // The aliases and profiles as they were: read from a fresh copy.
    let t2 = tempfile::tempdir().expect("tempdir");
    let fresh = t2.path().join("root");
    build_corpus_root(&fresh, &corpus).expect("build corpus root");
    check_rewritten(
        &root,
        &summary,
        &alias_members_replayed(&fresh),
        &profile_list(&fresh),
    );
    let sam = summary.hives.iter().find(|h| h.hive == "SAM").expect("SAM");
    assert!(sam.key_names >= 1 && sam.value_data >= 1, "{sam:?}");
}

/// The corpus root's hives are dirty: read them after log replay.
fn alias_members_replayed(root: &Path) -> BTreeMap<String, Vec<Sid>> {
    let t = tempfile::tempdir().expect("tempdir");
    let config = t.path().join("Windows/System32/config");
    fs::create_dir_all(&config).expect("mkdir");
    let src = root.join("Windows/System32/config");
    let logs: Vec<reseal_hive::log::LogFile> = ["SAM.LOG1", "SAM.LOG2"]
        .iter()
        .filter_map(|n| {
            fs::read(src.join(n))
                .ok()
                .map(|bytes| reseal_hive::log::LogFile {
                    name: n.to_string(),
                    bytes,
                })
        })
        .collect();
    let hive = Hive::from_bytes_with_logs("SAM", fs::read(src.join("SAM")).expect("SAM"), &logs)
        .expect("replay SAM");
    fs::write(config.join("SAM"), hive.to_bytes()).expect("write");
    alias_members(t.path())
}

#[test]
fn chosen_kept_and_invalid_sids() {
    let t = tempfile::tempdir().expect("tempdir");
    let root = t.path().join("root");
    build_windows_root(&root, None).expect("build root");
    let only = |sid: SidChoice| GeneralizeOptions {
        sid,
        selection: Selection {
            only: Some(vec!["machine-sid".into()]),
            ..Selection::default()
        },
        ..GeneralizeOptions::default()
    };
    let before = fs::read(root.join("Windows/System32/config/SAM")).expect("SAM");
    for bad in [
        "S-1-5-21-1-2",
        "S-1-5-32-544",
        "S-1-5-21-1-2-99999999999",
        SAMPLE_MACHINE_SID,
    ] {
        let r = run(&root, &only(SidChoice::Given(bad.into())));
        assert!(
            matches!(r, Err(ResealError::InvalidInput { .. })),
            "{bad}: {r:?}"
        );
    }
    assert_eq!(
        fs::read(root.join("Windows/System32/config/SAM")).expect("SAM"),
        before
    );

    let kept = run(&root, &only(SidChoice::Keep)).expect("keep");
    assert!(kept.installs[0].edits.is_empty());
    assert!(kept.installs[0].sid.is_none());

    let want = "S-1-5-21-111111111-222222222-333333333";
    let r = run(&root, &only(SidChoice::Given(want.into()))).expect("given");
    assert_eq!(r.installs[0].sid.as_ref().expect("sid").new, want);
    let old: Sid = SAMPLE_MACHINE_SID.parse().expect("sid");
    assert!(leftovers(&root, &old).iter().all(|l| l.contains("RegBack")));
    // Alone, the operation stamps again on request (no markers were set).
    let r2 = run(&root, &only(SidChoice::Random)).expect("again");
    let s2 = r2.installs[0].sid.as_ref().expect("sid");
    assert_eq!(s2.old, want);
    assert_ne!(s2.new, want);
}

#[test]
fn unseeded_runs_pick_different_sids() {
    let mut sids = Vec::new();
    for _ in 0..2 {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        build_windows_root(&root, None).expect("build root");
        let r = run(
            &root,
            &GeneralizeOptions {
                dry_run: true,
                ..GeneralizeOptions::default()
            },
        )
        .expect("dry run");
        let s = r.installs[0].sid.clone().expect("sid");
        assert!(!s.seeded);
        sids.push(s.new);
    }
    assert_ne!(sids[0], sids[1]);
}

#[test]
fn verification_refuses_a_leftover() {
    let old: Sid = SAMPLE_MACHINE_SID.parse().expect("sid");
    let edit = reseal::edit::RegEdit::RewriteSid {
        old: SAMPLE_MACHINE_SID.into(),
        new: "S-1-5-21-111111111-222222222-333333333".into(),
    };
    let mut image = vec![0u8; 64];
    image.extend(old.with_rid(1001).to_bytes());
    let r = verify_hive("Windows\\System32\\config\\SAM", &[&edit], &image);
    assert!(matches!(r, Err(ResealError::SidLeftover { .. })), "{r:?}");
    assert!(verify_hive("x", &[&edit], &[0u8; 64]).is_ok());
    // A SID whose header was overwritten (ACL slack): `15000000` and the
    // three sub-authorities, then the three alone at an odd offset.
    let subs: Vec<u8> = old.to_bytes()[12..].to_vec();
    assert_eq!(subs.len(), 12);
    for (lead, what) in [
        (&21u32.to_le_bytes()[..], "15000000"),
        (&[0x55u8][..], "the three"),
    ] {
        let mut image = vec![0xAAu8; 33];
        image.extend_from_slice(lead);
        image.extend_from_slice(&subs);
        image.extend_from_slice(&[0; 7]);
        assert!(reseal_hive::sid_scan::find_domain_sid(&image, &old).is_empty());
        match verify_hive("UsrClass.dat", &[&edit], &image) {
            Err(ResealError::SidLeftover { detail, .. }) => {
                assert!(detail.contains(what), "{detail}")
            }
            r => panic!("{r:?}"),
        }
    }
}
