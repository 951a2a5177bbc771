//! End-to-end evidence for `reseal generalize` on a directory root: the
//! binary is run on fixture roots built into temporary directories, and its
//! output hives are read back with readers that share no code with reseal
//! (`hivexregedit` from libwin-hivex-perl, python regipy). A check whose
//! reader is not installed skips locally and fails under CI=true.

use reseal_testkit::Snapshot;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use reseal_testkit::{VARIANTS, build_corpus_root, build_windows_root, corpus_dir};
use serde_json::Value as Json;

// ---------------------------------------------------------------------------
// Fixtures and the tree snapshot.

/// Builds the synthetic root (optionally with one preflight overlay) in a
/// fresh temporary directory.
fn built(variant: Option<&str>) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, variant).unwrap();
    (tmp, root)
}

/// Copies a tree (see `reseal_testkit::copy_tree`).
fn copy_tree(from: &Path, to: &Path) {
    reseal_testkit::copy_tree(from, to).unwrap();
}

/// A fresh copy of `src` in its own temporary directory.
fn copy_of(src: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    copy_tree(src, &root);
    (tmp, root)
}

fn snapshot(root: &Path) -> Snapshot {
    reseal_testkit::snapshot(root).unwrap()
}

/// Asserts that two snapshots are equal, naming what differs.
fn assert_same(before: &Snapshot, after: &Snapshot, what: &str) {
    let diffs = reseal_testkit::snapshot_diff(before, after);
    assert!(diffs.is_empty(), "{what}: the tree changed: {diffs:#?}");
}

// ---------------------------------------------------------------------------
// Running the binary.

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The whole JSON object on stdout.
    fn doc(&self) -> Json {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// The report of the run (a directory root has exactly one, in
    /// `results`), after checking the object around it.
    fn json(&self) -> Json {
        let doc = self.doc();
        assert_eq!(doc["schema"], 2, "schema version");
        assert_eq!(doc["tool"], "reseal");
        assert_eq!(doc["command"], "generalize");
        let results = doc["results"].as_array().expect("results[]");
        assert_eq!(results.len(), 1, "one run for a directory root: {doc:#}");
        assert_eq!(doc["outcome"], results[0]["outcome"]);
        results[0].clone()
    }
}

fn reseal(args: &[&str], root: &Path) -> Run {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_reseal"))
        .arg("generalize")
        .args(args)
        .arg(root)
        .output()
        .unwrap();
    Run {
        code: out.status.code().expect("reseal was killed by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn install(report: &Json) -> &Json {
    let installs = report["installs"].as_array().expect("installs[]");
    assert_eq!(installs.len(), 1, "one install in the fixture");
    &installs[0]
}

fn edits(report: &Json) -> &Vec<Json> {
    install(report)["edits"].as_array().expect("edits[]")
}

/// Schema checks shared by every JSON report.
fn check_schema(report: &Json) {
    assert!(report["outcome"].is_string(), "outcome");
    for i in report["installs"].as_array().expect("installs[]") {
        for e in i["edits"].as_array().expect("installs[].edits[]") {
            let op = e["operation"].as_str().unwrap_or("");
            assert!(!op.is_empty(), "edit without operation: {e}");
            assert!(e["edit"]["target"].is_string(), "edit without target: {e}");
        }
    }
}

fn finding<'a>(report: &'a Json, id: &str) -> Option<&'a Json> {
    install(report)["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
}

// ---------------------------------------------------------------------------
// Independent readers.

const CONFIG: &str = "Windows/System32/config";

/// A registry value as an independent reader shows it.
#[derive(Debug, Clone, PartialEq)]
struct Val {
    ty: u32,
    sz: Option<String>,
    dword: Option<u32>,
}

/// A key: values by lower-cased name, and subkey names.
#[derive(Debug, Clone, Default)]
struct KeyView {
    values: BTreeMap<String, Val>,
    subkeys: Vec<String>,
}

/// What a test expects to read in a hive.
#[derive(Debug, Clone)]
enum Expect {
    /// The key does not exist.
    NoKey(&'static str),
    /// The value does not exist (the key may).
    NoValue(&'static str, &'static str),
    /// No value of the key starts with this prefix (case-insensitive).
    NoValuePrefix(&'static str, &'static str),
    /// A REG_SZ with this text.
    Sz(&'static str, &'static str, &'static str),
    /// A REG_DWORD with this number.
    Dword(&'static str, &'static str, u32),
    /// The key exists and has no subkeys.
    NoSubkeys(&'static str),
    /// Every subkey of the key lacks this value.
    NoValueInSubkeys(&'static str, &'static str),
}

impl Expect {
    fn key(&self) -> &'static str {
        match self {
            Expect::NoKey(k)
            | Expect::NoValue(k, _)
            | Expect::NoValuePrefix(k, _)
            | Expect::Sz(k, _, _)
            | Expect::Dword(k, _, _)
            | Expect::NoSubkeys(k)
            | Expect::NoValueInSubkeys(k, _) => k,
        }
    }

    /// Whether the expectation holds, given a way to open keys.
    fn holds(&self, open: &dyn Fn(&str) -> Option<KeyView>) -> bool {
        let key = open(self.key());
        let value = |name: &str| {
            key.as_ref()
                .and_then(|k| k.values.get(&name.to_ascii_lowercase()).cloned())
        };
        match self {
            Expect::NoKey(_) => key.is_none(),
            Expect::NoValue(_, n) => value(n).is_none(),
            Expect::NoValuePrefix(_, p) => key.as_ref().is_none_or(|k| {
                !k.values
                    .keys()
                    .any(|n| n.starts_with(&p.to_ascii_lowercase()))
            }),
            Expect::Sz(_, n, text) => {
                value(n).is_some_and(|v| v.ty == 1 && v.sz.as_deref() == Some(*text))
            }
            Expect::Dword(_, n, d) => value(n).is_some_and(|v| v.ty == 4 && v.dword == Some(*d)),
            Expect::NoSubkeys(_) => key.is_some_and(|k| k.subkeys.is_empty()),
            Expect::NoValueInSubkeys(k, n) => {
                let subs = key.map(|v| v.subkeys).unwrap_or_default();
                subs.iter().all(|s| {
                    open(&format!(r"{k}\{s}"))
                        .is_none_or(|sk| !sk.values.contains_key(&n.to_ascii_lowercase()))
                })
            }
        }
    }
}

fn utf16_text(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
        .trim_end_matches('\0')
        .to_string()
}

/// Splits `"name"=rest` (or `@=rest`) of a hivexregedit value line.
fn split_value_line(line: &str) -> Option<(String, &str)> {
    if let Some(rest) = line.strip_prefix("@=") {
        return Some((String::new(), rest));
    }
    let body = line.strip_prefix('"')?;
    let mut name = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => name.push(chars.next()?.1),
            '"' => return Some((name, body[i + 1..].strip_prefix('=')?)),
            c => name.push(c),
        }
    }
    None
}

fn hex_bytes(s: &str) -> Vec<u8> {
    s.split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// Parses one value's data as hivexregedit writes it.
fn parse_hivex_data(data: &str) -> Val {
    let (ty, bytes) = if let Some(d) = data.strip_prefix("dword:") {
        (
            4,
            u32::from_str_radix(d, 16).unwrap().to_le_bytes().to_vec(),
        )
    } else if let Some(d) = data.strip_prefix("hex:") {
        (3, hex_bytes(d))
    } else if let Some(d) = data.strip_prefix("hex(") {
        let (t, rest) = d.split_once("):").unwrap();
        (u32::from_str_radix(t, 16).unwrap(), hex_bytes(rest))
    } else if let Some(s) = data.strip_prefix('"') {
        let text = s.strip_suffix('"').unwrap().replace("\\\"", "\"");
        return Val {
            ty: 1,
            sz: Some(text.replace("\\\\", "\\")),
            dword: None,
        };
    } else {
        panic!("hivexregedit value data not understood: {data}");
    };
    Val {
        ty,
        sz: matches!(ty, 1 | 2).then(|| utf16_text(&bytes)),
        dword: (ty == 4 && bytes.len() == 4)
            .then(|| u32::from_le_bytes(bytes[..4].try_into().unwrap())),
    }
}

/// A hive as exported by `hivexregedit --export`: keys by lower-cased path
/// (from the root, no leading backslash).
struct HivexDump {
    keys: BTreeMap<String, KeyView>,
}

fn regipy_python() -> Option<PathBuf> {
    let p = reseal_testkit::workspace_root().join("target/venv/bin/python");
    p.is_file().then_some(p)
}

/// Exports a hive with hivexregedit; `None` (with a notice) when absent.
fn hivex_dump(hive: &Path) -> Option<HivexDump> {
    if !reseal_testkit::require_tool("hivexregedit") {
        return None;
    }
    let out = Command::new("hivexregedit")
        .env("PERL_UNICODE", "SO")
        .arg("--export")
        .arg(hive)
        .arg("\\")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hivexregedit cannot read {}: {}",
        hive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // Join continuation lines.
    let mut lines: Vec<String> = Vec::new();
    let mut pending = String::new();
    for l in text.lines() {
        if let Some(head) = l
            .strip_suffix('\\')
            .filter(|_| !pending.is_empty() || l.contains('='))
        {
            pending.push_str(head.trim_start());
            continue;
        }
        pending.push_str(if pending.is_empty() {
            l
        } else {
            l.trim_start()
        });
        lines.push(std::mem::take(&mut pending));
    }
    let mut keys: BTreeMap<String, KeyView> = BTreeMap::new();
    let mut current: Option<String> = None;
    for l in lines {
        if let Some(k) = l.strip_prefix("[\\").and_then(|k| k.strip_suffix(']')) {
            let lk = k.to_ascii_lowercase();
            keys.entry(lk.clone()).or_default();
            if let Some((parent, name)) = k.rsplit_once('\\') {
                keys.entry(parent.to_ascii_lowercase())
                    .or_default()
                    .subkeys
                    .push(name.to_string());
            } else if !k.is_empty() {
                keys.entry(String::new())
                    .or_default()
                    .subkeys
                    .push(k.to_string());
            }
            current = Some(lk);
        } else if l == "[\\]" {
            current = Some(String::new());
            keys.entry(String::new()).or_default();
        } else if let Some((name, data)) = split_value_line(&l) {
            let k = current.clone().expect("value before any key");
            keys.get_mut(&k)
                .unwrap()
                .values
                .insert(name.to_ascii_lowercase(), parse_hivex_data(data));
        }
    }
    Some(HivexDump { keys })
}

impl HivexDump {
    fn open(&self, key: &str) -> Option<KeyView> {
        self.keys.get(&key.to_ascii_lowercase()).cloned()
    }
}

const REGIPY_SCRIPT: &str = r#"
import json, sys
from regipy.registry import RegistryHive
hive = RegistryHive(sys.argv[1])
# A full walk when asked (regipy needs minutes for a 12 MiB hive);
# otherwise the root's subkeys.
if sys.argv[2] == "walk":
    count = sum(1 for _ in hive.recurse_subkeys(as_json=True))
else:
    count = 1 + sum(1 for _ in hive.root.iter_subkeys())
out = {"count": count, "keys": {}}
for k in sys.argv[3:]:
    try:
        key = hive.get_key("\\" + k)
    except Exception:
        out["keys"][k] = None
        continue
    values = {}
    for v in key.iter_values():
        x = v.value
        values[v.name] = {"type": v.value_type,
                          "value": x if isinstance(x, (str, int)) or x is None else repr(x)}
    out["keys"][k] = {"values": values, "subkeys": [s.name for s in key.iter_subkeys()]}
print(json.dumps(out))
"#;

/// Reads `keys` (and every key below them, one level) of a hive with
/// regipy; also walks the whole hive. `None` (with a notice) when absent.
fn regipy_keys(hive: &Path, keys: &[String]) -> Option<BTreeMap<String, Option<KeyView>>> {
    let py = regipy_python();
    if !reseal_testkit::require(
        py.is_some(),
        &format!("the regipy venv (run `cargo xtask setup`) to check {hive:?}"),
    ) {
        return None;
    }
    let py = py?;
    // Hives above 2 MiB get the short read (see the script).
    let walk = fs::metadata(hive).unwrap().len() <= 2 << 20;
    let out = Command::new(py)
        .arg("-c")
        .arg(REGIPY_SCRIPT)
        .arg(hive)
        .arg(if walk { "walk" } else { "root" })
        .args(keys)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "regipy cannot read {}: {}",
        hive.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let j: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["count"].as_u64().unwrap() > 0, "regipy found no keys");
    let mut map = BTreeMap::new();
    for (k, v) in j["keys"].as_object().unwrap() {
        let view = (!v.is_null()).then(|| {
            let mut kv = KeyView::default();
            for (name, val) in v["values"].as_object().unwrap() {
                let ty = match val["type"].as_str().unwrap() {
                    "REG_SZ" => 1,
                    "REG_EXPAND_SZ" => 2,
                    "REG_BINARY" => 3,
                    "REG_DWORD" => 4,
                    "REG_MULTI_SZ" => 7,
                    "REG_QWORD" => 11,
                    _ => 0,
                };
                kv.values.insert(
                    name.to_ascii_lowercase(),
                    Val {
                        ty,
                        sz: matches!(ty, 1 | 2)
                            .then(|| val["value"].as_str().unwrap_or("").to_string()),
                        dword: val["value"].as_u64().map(|n| n as u32),
                    },
                );
            }
            kv.subkeys = v["subkeys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect();
            kv
        });
        map.insert(k.to_ascii_lowercase(), view);
    }
    Some(map)
}

/// Checks every expectation on one hive with both independent readers.
/// Returns how many readers ran.
fn expect_in_hive(hive: &Path, expects: &[Expect]) -> usize {
    let mut readers = 0;
    if let Some(dump) = hivex_dump(hive) {
        readers += 1;
        for e in expects {
            assert!(
                e.holds(&|k| dump.open(k)),
                "hivexregedit: {e:?} does not hold in {}",
                hive.display()
            );
        }
    }
    // regipy needs every key an expectation may open, subkeys included.
    let mut keys: Vec<String> = expects.iter().map(|e| e.key().to_string()).collect();
    if let Some(first) = regipy_keys(hive, &keys) {
        let n = keys.len();
        for e in expects {
            if let Expect::NoValueInSubkeys(k, _) = e {
                if let Some(Some(v)) = first.get(&k.to_ascii_lowercase()) {
                    keys.extend(v.subkeys.iter().map(|s| format!(r"{k}\{s}")));
                }
            }
        }
        let all = if keys.len() > n {
            regipy_keys(hive, &keys).unwrap()
        } else {
            first
        };
        readers += 1;
        for e in expects {
            assert!(
                e.holds(&|k| all.get(&k.to_ascii_lowercase()).cloned().flatten()),
                "regipy: {e:?} does not hold in {}",
                hive.display()
            );
        }
    }
    readers
}

/// Both readers read the hive in full (a walk of every key).
fn readers_read(hive: &Path) {
    if let Some(d) = hivex_dump(hive) {
        assert!(d.keys.len() > 1, "hivexregedit read no keys of {hive:?}");
    }
    regipy_keys(hive, &[]);
}

// ---------------------------------------------------------------------------
// Expectations of a default `/generalize /oobe` run on the synthetic root.

fn software_after(image_state: &'static str) -> Vec<Expect> {
    use Expect::*;
    vec![
        // identities
        NoValue(r"Microsoft\Cryptography", "MachineGuid"),
        NoValue(r"Microsoft\SQMClient", "MachineId"),
        NoValue(
            r"Microsoft\Windows\CurrentVersion\WindowsUpdate",
            "SusClientId",
        ),
        NoValue(
            r"Microsoft\Windows\CurrentVersion\WindowsUpdate",
            "SusClientIdValidation",
        ),
        NoValue(
            r"Microsoft\Windows\CurrentVersion\WindowsUpdate",
            "AccountDomainSid",
        ),
        NoValue(r"Microsoft\Windows\CurrentVersion\WindowsUpdate", "PingID"),
        NoSubkeys(r"Microsoft\Windows NT\CurrentVersion\NetworkList\Profiles"),
        NoSubkeys(r"Microsoft\Windows NT\CurrentVersion\NetworkList\Signatures\Unmanaged"),
        // autopilot
        NoKey(r"Microsoft\Provisioning\AutopilotPolicy"),
        NoKey(r"Microsoft\Provisioning\Diagnostics\Autopilot"),
        NoValue(
            r"Microsoft\Windows NT\CurrentVersion\Notifications\Data",
            "41871D20A3BC1475",
        ),
        // markers
        Sz(
            r"Microsoft\Windows\CurrentVersion\Setup\State",
            "ImageState",
            image_state,
        ),
        NoValue(
            r"Microsoft\Windows\CurrentVersion\Setup\Sysprep",
            "SysprepCorrupt",
        ),
    ]
}

fn system_after(name: &'static str, oobe: bool) -> Vec<Expect> {
    use Expect::*;
    let mut v = vec![
        // identities
        Sz(
            r"ControlSet001\Control\ComputerName\ComputerName",
            "ComputerName",
            name,
        ),
        Sz(
            r"ControlSet002\Control\ComputerName\ComputerName",
            "ComputerName",
            name,
        ),
        Sz(r"ControlSet001\Services\Tcpip\Parameters", "Hostname", name),
        Sz(
            r"ControlSet001\Services\Tcpip\Parameters",
            "NV Hostname",
            name,
        ),
        NoValue(r"ControlSet001\Services\Tcpip6\Parameters", "Dhcpv6DUID"),
        NoValueInSubkeys(
            r"ControlSet001\Services\Tcpip\Parameters\Interfaces",
            "DhcpIPAddress",
        ),
        NoValueInSubkeys(
            r"ControlSet001\Services\Tcpip\Parameters\Interfaces",
            "LeaseObtainedTime",
        ),
        NoValuePrefix("MountedDevices", r"\DosDevices\"),
        NoValuePrefix("MountedDevices", r"\??\Volume{"),
        NoValue("RNG", "Seed"),
        // markers
        Sz("Setup", "CmdLine", r"oobe\windeploy.exe"),
        Dword("Setup", "SetupType", 2),
        Dword("Setup", "SystemSetupInProgress", 1),
        Dword(r"Setup\Status\SysprepStatus", "GeneralizationState", 7),
        Dword(r"Setup\Status\SysprepStatus", "CleanupState", 2),
    ];
    // /audit leaves OOBEInProgress as it was (0 in the fixture).
    v.push(Dword("Setup", "OOBEInProgress", u32::from(oobe)));
    v
}

/// Files that `leftovers` removes from the synthetic root.
const LEFTOVERS: [&str; 8] = [
    "pagefile.sys",
    "swapfile.sys",
    "Windows/System32/winevt/Logs/Application.evtx",
    "Windows/System32/winevt/Logs/System.evtx",
    "Windows/Panther/setupact.log",
    "Windows/Panther/UnattendGC",
    "Windows/INF/setupapi.dev.log",
    "Windows/System32/config/RegBack/SYSTEM",
];

fn state_ini(root: &Path) -> String {
    fs::read_to_string(root.join("Windows/Setup/State/State.ini")).unwrap()
}

// ---------------------------------------------------------------------------
// Tests.

/// A default run: JSON report (stdout and `--report` file), then every
/// operation's effect read back with both independent readers, hive logs
/// emptied, leftovers gone, markers written.
#[test]
fn generalize_effects_read_back_by_independent_readers() {
    let (_tmp, root) = built(None);
    let config = root.join(CONFIG);
    // The fixture starts out specialized (so the checks below show change).
    expect_in_hive(
        &config.join("SOFTWARE"),
        &[
            Expect::Sz(
                r"Microsoft\Windows\CurrentVersion\Setup\State",
                "ImageState",
                "IMAGE_STATE_COMPLETE",
            ),
            Expect::Sz(
                r"Microsoft\Cryptography",
                "MachineGuid",
                "6f1c3a52-8d2e-4b7a-9c11-0e5f2d7b9a44",
            ),
        ],
    );
    // Make the logs non-empty so that emptying them is visible.
    fs::write(config.join("SYSTEM.LOG1"), b"stale log bytes").unwrap();

    let report_file = root.parent().unwrap().join("report.json");
    let run = reseal(
        &["--json", "--report", report_file.to_str().unwrap()],
        &root,
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = run.json();
    check_schema(&report);
    let from_file: Json = serde_json::from_slice(&fs::read(&report_file).unwrap()).unwrap();
    assert_eq!(
        from_file,
        run.doc(),
        "--report writes the same JSON as --json"
    );
    assert_eq!(report["outcome"], "done");
    assert_eq!(report["dry_run"], false);
    let ops: Vec<&str> = edits(&report)
        .iter()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    for op in ["identities", "autopilot", "leftovers", "markers"] {
        assert!(ops.contains(&op), "no edit from {op}: {ops:?}");
    }
    let inst = install(&report);
    assert_eq!(inst["refused"], false);
    assert!(
        inst["not_done"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["operation"] == "activation"),
        "activation reports the rearm it does not do"
    );
    let written: Vec<&str> = inst["hives_written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(written.len() >= 2, "hives_written: {written:?}");

    // Registry effects, per independent reader.
    let n = expect_in_hive(
        &config.join("SOFTWARE"),
        &software_after("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE"),
    );
    expect_in_hive(
        &config.join("SYSTEM"),
        &system_after("WIN-GENERALIZED", true),
    );
    if n == 0 {
        eprintln!("notice: no independent reader available; registry effects not verified");
    }
    // Every hive of the root is still readable, by ours and by theirs.
    for h in all_hives(&root) {
        let hive = reseal_hive::Hive::open(&h).unwrap();
        let errors: Vec<String> = hive.check().errors().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", h.display());
        readers_read(&h);
    }
    // Logs of the rewritten hives are emptied.
    for h in ["SYSTEM", "SOFTWARE"] {
        for log in ["LOG1", "LOG2"] {
            let p = config.join(format!("{h}.{log}"));
            assert_eq!(
                fs::metadata(&p).unwrap().len(),
                0,
                "{} not emptied",
                p.display()
            );
        }
    }
    // Files.
    for f in LEFTOVERS {
        assert!(!root.join(f).exists(), "{f} was not removed");
    }
    assert!(root.join("Windows/System32/config/SYSTEM").is_file());
    assert!(
        root.join("Windows/Panther").is_dir(),
        "Panther itself is kept"
    );
    assert!(
        state_ini(&root).contains(r#"ImageState="IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE""#),
        "State.ini: {}",
        state_ini(&root)
    );
    let tag = root.join("Windows/System32/Sysprep/Sysprep_succeeded.tag");
    assert_eq!(fs::metadata(tag).unwrap().len(), 0);
    // No temporary or backup files from the commit are left behind.
    let stray: Vec<PathBuf> = snapshot(&root)
        .into_keys()
        .filter(|p| p.to_string_lossy().contains(".reseal-"))
        .collect();
    assert!(stray.is_empty(), "commit left files: {stray:?}");
}

/// Every hive file of the root: machine hives and the users' hives.
fn all_hives(root: &Path) -> Vec<PathBuf> {
    let config = root.join(CONFIG);
    let mut v: Vec<PathBuf> = ["SYSTEM", "SOFTWARE", "SAM", "SECURITY", "DEFAULT"]
        .iter()
        .map(|h| config.join(h))
        .collect();
    for u in ["demo", "alice"] {
        let home = root.join("Users").join(u);
        v.push(home.join("NTUSER.DAT"));
        v.push(home.join("AppData/Local/Microsoft/Windows/UsrClass.dat"));
    }
    v.retain(|p| p.is_file());
    v
}

/// `--dry-run` changes nothing (every path, byte and mode), then a real run,
/// then a second run that plans nothing and changes nothing.
#[test]
fn dry_run_is_byte_identical_and_a_second_run_plans_nothing() {
    let (_tmp, root) = built(None);
    let before = snapshot(&root);
    let dry = reseal(&["--dry-run", "--json"], &root);
    assert_eq!(dry.code, 0, "stderr: {}", dry.stderr);
    let dry = dry.json();
    check_schema(&dry);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["outcome"], "done");
    assert!(!edits(&dry).is_empty(), "the dry run plans edits");
    assert_eq!(install(&dry)["hives_written"], Json::Array(vec![]));
    assert_eq!(install(&dry)["files_changed"], 0);
    assert_same(&before, &snapshot(&root), "--dry-run");

    // The text form of a dry run says nothing was written.
    let text = reseal(&["--dry-run"], &root);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("dry run"), "{}", text.stdout);
    assert_same(&before, &snapshot(&root), "--dry-run (text)");

    let real = reseal(&["--json"], &root);
    assert_eq!(real.code, 0, "stderr: {}", real.stderr);
    let real = real.json();
    let (real_edits, dry_edits) = (normalized_edits(&real), normalized_edits(&dry));
    assert_eq!(real_edits.len(), dry_edits.len(), "edit counts differ");
    for (r, d) in real_edits.iter().zip(&dry_edits) {
        assert_eq!(r, d, "the dry run plans exactly what the real run does");
    }
    let generalized = snapshot(&root);

    let again = reseal(&["--json"], &root);
    assert_eq!(again.code, 0, "stderr: {}", again.stderr);
    let again = again.json();
    check_schema(&again);
    assert_eq!(again["outcome"], "nothing_to_do");
    assert!(
        edits(&again).is_empty(),
        "second run planned {:?}",
        edits(&again)
    );
    assert_eq!(install(&again)["already_generalized"], true);
    assert_eq!(install(&again)["files_changed"], 0);
    assert_same(&generalized, &snapshot(&root), "second run");
}

/// The edits of a report as JSON texts, with the new machine SID (drawn at
/// random by `machine-sid` each run) replaced by a placeholder.
fn normalized_edits(report: &Json) -> Vec<String> {
    let new_sid = edits(report)
        .iter()
        .find_map(|e| e["edit"]["new"].as_str().map(str::to_string));
    edits(report)
        .iter()
        .map(|e| {
            // reseal's record of the run holds its time and new SID
            // (UTF-16 in the value data): run-specific.
            let mut e = e.clone();
            if matches!(
                e["edit"]["name"].as_str(),
                Some("GeneralizedAt" | "GeneralizedSid")
            ) {
                e["edit"]["data"] = Json::from("<run-specific>");
            }
            let t = e.to_string();
            match &new_sid {
                Some(sid) => t.replace(sid.as_str(), "<new machine SID>"),
                None => t,
            }
        })
        .collect()
}

/// The expected severity and exit code of each preflight variant.
fn variant_expectation(v: &str) -> (&'static str, i32, i32) {
    // (severity, exit without --force, exit with --force)
    match v {
        "dirty-hive-without-logs" | "hibernated" | "domain-controller" => ("refuse", 1, 1),
        "already-generalized" => ("info", 0, 0),
        _ => ("refuse_unless_forced", 1, 0),
    }
}

/// Each preflight variant yields its finding and exit code; `--force`
/// overrides only the findings that are refused unless forced.
#[test]
fn preflight_variants_findings_exit_codes_and_force() {
    for &v in VARIANTS.iter() {
        let (_tmp, root) = built(Some(v));
        let (severity, code, forced_code) = variant_expectation(v);
        let before = snapshot(&root);

        let run = reseal(&["--json"], &root);
        assert_eq!(run.code, code, "{v}: stderr: {}", run.stderr);
        let report = run.json();
        check_schema(&report);
        let f = finding(&report, v).unwrap_or_else(|| panic!("{v}: finding missing: {report}"));
        assert_eq!(f["severity"], severity, "{v}");
        assert!(!f["message"].as_str().unwrap().is_empty());
        let refused_by = install(&report)["refused_by"].as_array().unwrap().clone();
        if code == 1 {
            assert_eq!(report["outcome"], "refused", "{v}");
            assert!(refused_by.iter().any(|r| r == v), "{v}: {refused_by:?}");
            assert!(edits(&report).is_empty(), "{v}: refused runs plan nothing");
            assert_same(&before, &snapshot(&root), v);
            // The text form names the refusal.
            let text = reseal(&[], &root);
            assert_eq!(text.code, 1);
            assert!(text.stdout.contains("REFUSED by:") && text.stdout.contains(v));
            assert_same(&before, &snapshot(&root), v);
        } else {
            assert_eq!(report["outcome"], "nothing_to_do", "{v}");
            assert!(refused_by.is_empty(), "{v}: {refused_by:?}");
            assert_same(&before, &snapshot(&root), v);
        }

        let forced = reseal(&["--json", "--force"], &root);
        assert_eq!(
            forced.code, forced_code,
            "{v} --force: stderr: {}",
            forced.stderr
        );
        let forced = forced.json();
        assert_eq!(forced["force"], true);
        assert!(finding(&forced, v).is_some(), "{v}: finding still reported");
        match (code, forced_code) {
            (1, 1) => {
                assert_eq!(
                    forced["outcome"], "refused",
                    "{v}: --force never overrides refuse"
                );
                assert_same(&before, &snapshot(&root), v);
            }
            (1, 0) => {
                assert_eq!(forced["outcome"], "done", "{v} --force");
                assert_eq!(install(&forced)["refused"], false);
                assert!(!edits(&forced).is_empty());
                let sw = root.join(CONFIG).join("SOFTWARE");
                expect_in_hive(
                    &sw,
                    &[Expect::Sz(
                        r"Microsoft\Windows\CurrentVersion\Setup\State",
                        "ImageState",
                        "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE",
                    )],
                );
            }
            _ => {
                assert_eq!(forced["outcome"], "nothing_to_do", "{v}");
                assert_same(&before, &snapshot(&root), v);
            }
        }
    }
}

/// `--unattend`: the file is placed byte for byte, its passwords never
/// appear in stdout (text or JSON), stderr or the report file.
#[test]
fn answer_file_is_placed_and_its_passwords_never_printed() {
    let (tmp, pristine) = built(None);
    const ADMIN_PW: &str = "Adm1n-Pa55w0rd-e2e";
    const USER_PW: &str = "L0cal-Us3r-Secret-e2e";
    let xml = format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend">
  <settings pass="specialize">
    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <ComputerName>CLONE-E2E</ComputerName>
    </component>
  </settings>
  <settings pass="oobeSystem">
    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <UserAccounts>
        <AdministratorPassword><Value>{ADMIN_PW}</Value><PlainText>true</PlainText></AdministratorPassword>
        <LocalAccounts>
          <LocalAccount><Name>op</Name><Group>Administrators</Group>
            <Password><Value>{USER_PW}</Value><PlainText>true</PlainText></Password>
          </LocalAccount>
        </LocalAccounts>
      </UserAccounts>
    </component>
  </settings>
</unattend>
"#
    );
    let unattend = tmp.path().join("unattend.xml");
    fs::write(&unattend, &xml).unwrap();
    let ua = unattend.to_str().unwrap();
    let leaks = |what: &str, s: &str| {
        for pw in [ADMIN_PW, USER_PW] {
            assert!(!s.contains(pw), "{what} shows a password: {s}");
            let hex16: String = pw
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .map(|b| format!("{b:02x}"))
                .collect();
            let hex8: String = pw.bytes().map(|b| format!("{b:02x}")).collect();
            assert!(
                !s.contains(&hex16) && !s.contains(&hex8),
                "{what} shows a password in hex"
            );
        }
    };

    // Text output of a dry run.
    let (_t1, root) = copy_of(&pristine);
    let text = reseal(&["--dry-run", "--unattend", ua], &root);
    assert_eq!(text.code, 0, "stderr: {}", text.stderr);
    leaks("text stdout", &text.stdout);
    leaks("stderr", &text.stderr);
    assert!(text.stdout.contains("answer-file"), "{}", text.stdout);

    // JSON and the report file of a real run.
    let report_file = tmp.path().join("report.json");
    let run = reseal(
        &[
            "--json",
            "--unattend",
            ua,
            "--report",
            report_file.to_str().unwrap(),
        ],
        &root,
    );
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    leaks("JSON stdout", &run.stdout);
    leaks("stderr", &run.stderr);
    let file_text = fs::read_to_string(&report_file).unwrap();
    leaks("report file", &file_text);
    let report = run.json();
    check_schema(&report);
    assert_eq!(serde_json::from_str::<Json>(&file_text).unwrap(), run.doc());
    assert!(
        edits(&report)
            .iter()
            .any(|e| e["operation"] == "answer-file"),
        "answer-file edit missing"
    );
    // Placed byte for byte where Setup looks for it.
    assert_eq!(
        fs::read(root.join("Windows/Panther/unattend.xml")).unwrap(),
        xml.as_bytes()
    );
    // The answer file's computer name is used.
    expect_in_hive(
        &root.join(CONFIG).join("SYSTEM"),
        &[Expect::Sz(
            r"ControlSet001\Control\ComputerName\ComputerName",
            "ComputerName",
            "CLONE-E2E",
        )],
    );
    // Nothing in the report or the run's other files carries the password,
    // except the placed answer file itself.
    for (p, (_, data)) in snapshot(&root) {
        if p.ends_with("Panther/unattend.xml") {
            continue;
        }
        if let Some(d) = data {
            for pw in [ADMIN_PW, USER_PW] {
                assert!(
                    !d.windows(pw.len()).any(|w| w == pw.as_bytes()),
                    "{} holds a password",
                    p.display()
                );
            }
        }
    }
}

/// `--audit` arms audit mode: ImageState `…_TO_AUDIT` in the registry (read
/// independently) and in State.ini; OOBEInProgress is left alone.
#[test]
fn audit_mode_writes_audit_image_state() {
    let (_tmp, root) = built(None);
    let run = reseal(&["--audit", "--json"], &root);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = run.json();
    assert_eq!(report["mode"], "audit");
    let config = root.join(CONFIG);
    expect_in_hive(
        &config.join("SOFTWARE"),
        &software_after("IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT"),
    );
    expect_in_hive(
        &config.join("SYSTEM"),
        &system_after("WIN-GENERALIZED", false),
    );
    assert!(
        state_ini(&root).contains(r#"ImageState="IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT""#),
        "{}",
        state_ini(&root)
    );
}

/// `--operations markers` runs that operation only.
#[test]
fn operations_selects_exactly_the_named_ones() {
    let (_tmp, root) = built(None);
    let run = reseal(&["--operations", "markers", "--json"], &root);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = run.json();
    check_schema(&report);
    assert_eq!(
        install(&report)["operations"],
        serde_json::json!(["markers"])
    );
    assert!(!edits(&report).is_empty());
    for e in edits(&report) {
        assert_eq!(e["operation"], "markers", "{e}");
    }
    let config = root.join(CONFIG);
    // markers ran, identities and leftovers did not.
    expect_in_hive(
        &config.join("SOFTWARE"),
        &[
            Expect::Sz(
                r"Microsoft\Windows\CurrentVersion\Setup\State",
                "ImageState",
                "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE",
            ),
            Expect::Sz(
                r"Microsoft\Cryptography",
                "MachineGuid",
                "6f1c3a52-8d2e-4b7a-9c11-0e5f2d7b9a44",
            ),
        ],
    );
    expect_in_hive(
        &config.join("SYSTEM"),
        &[Expect::Sz(
            r"ControlSet001\Control\ComputerName\ComputerName",
            "ComputerName",
            "DESKTOP-R3S34L1",
        )],
    );
    assert!(root.join("pagefile.sys").is_file());
    assert!(
        root.join("Windows/System32/winevt/Logs/System.evtx")
            .is_file()
    );
}

/// Bad input gives exit 2 with a clear message and changes nothing: an
/// unknown operation (the message lists the known ones), and paths that are
/// not a Windows root.
#[test]
fn bad_input_is_exit_2_with_a_clear_message() {
    let (tmp, root) = built(None);
    let before = snapshot(&root);
    for args in [
        &["--operations", "markers,no-such-op"][..],
        &["--enable", "no-such-op"][..],
        &["--disable", "no-such-op"][..],
    ] {
        let run = reseal(args, &root);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("no-such-op"), "{}", run.stderr);
        for op in reseal::ops::all() {
            assert!(
                run.stderr.contains(op.name()),
                "the message does not list {}: {}",
                op.name(),
                run.stderr
            );
        }
    }
    assert_same(&before, &snapshot(&root), "unknown operation");

    // Not a Windows root: an empty directory, a directory with a Windows
    // folder but no SYSTEM hive, a regular file, a missing path.
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let partial = tmp.path().join("partial");
    fs::create_dir_all(partial.join("Windows/System32/config")).unwrap();
    let file = tmp.path().join("file.img");
    fs::write(&file, b"not a directory").unwrap();
    let missing = tmp.path().join("missing");
    for p in [&empty, &partial] {
        let run = reseal(&[], p);
        assert_eq!(run.code, 2, "{}: {}", p.display(), run.stderr);
        assert!(
            run.stderr.contains("no Windows installation found"),
            "{}",
            run.stderr
        );
    }
    for p in [&file, &missing] {
        let run = reseal(&[], p);
        assert_eq!(run.code, 2, "{}: {}", p.display(), run.stderr);
        assert!(
            run.stderr.contains(p.to_str().unwrap())
                && (run.stderr.contains("Windows root")
                    // A file named like a disk image is read as one.
                    || run.stderr.contains("expected a disk with an NTFS partition")),
            "the message names the path and what was expected: {}",
            run.stderr
        );
    }
    // A bad answer file is bad input too, and nothing is written.
    let bad = tmp.path().join("bad.xml");
    fs::write(&bad, b"<unattend><settings>").unwrap();
    let run = reseal(&["--unattend", bad.to_str().unwrap()], &root);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_same(&before, &snapshot(&root), "bad answer file");
}

/// The corpus-backed root (real Windows 10 SYSTEM, SAM, SECURITY, dirty with
/// their logs) generalizes cleanly; every hive passes our checker and is read
/// by both independent readers; the logs of the real hives are emptied.
#[test]
fn corpus_root_generalizes_cleanly() {
    let corpus = corpus_dir();
    if !reseal_testkit::require(corpus.is_some(), "the shared corpus") {
        return;
    }
    let corpus = corpus.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    if !reseal_testkit::require(
        build_corpus_root(&root, &corpus).unwrap(),
        "the corpus files of the corpus-backed root",
    ) {
        return;
    }
    let config = root.join(CONFIG);
    let dirty_logs: Vec<PathBuf> = ["SYSTEM", "SAM", "SECURITY"]
        .iter()
        .flat_map(|h| ["LOG1", "LOG2"].map(|l| config.join(format!("{h}.{l}"))))
        .filter(|p| p.is_file())
        .collect();
    assert!(
        dirty_logs
            .iter()
            .any(|p| fs::metadata(p).unwrap().len() > 0),
        "the corpus root carries logs"
    );

    // The real SYSTEM holds genuine PendingFileRenameOperations: sysprep
    // would refuse, so reseal does unless forced, and nothing else blocks.
    let before = snapshot(&root);
    let refused = reseal(&["--json"], &root);
    assert_eq!(refused.code, 1, "stderr: {}", refused.stderr);
    let refused = refused.json();
    assert_eq!(
        install(&refused)["refused_by"],
        serde_json::json!(["pending-servicing"])
    );
    assert_same(&before, &snapshot(&root), "refused corpus run");

    let run = reseal(&["--json", "--force"], &root);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let report = run.json();
    check_schema(&report);
    assert_eq!(report["outcome"], "done");
    assert!(
        finding(&report, "hive-replayed").is_some(),
        "dirty hives are replayed"
    );
    let written: Vec<String> = install(&report)["hives_written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_ascii_uppercase())
        .collect();
    assert!(
        written.iter().any(|h| h.ends_with(r"\SYSTEM")),
        "SYSTEM rewritten: {written:?}"
    );

    for h in all_hives(&root) {
        let hive = reseal_hive::Hive::open(&h).unwrap();
        let errors: Vec<String> = hive.check().errors().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{}: {errors:?}", h.display());
        readers_read(&h);
    }
    // Every log of a rewritten hive is emptied (the real hives' included).
    for h in ["SYSTEM", "SOFTWARE", "SAM", "SECURITY"] {
        if !written.iter().any(|w| w.ends_with(&format!(r"\{h}"))) {
            continue;
        }
        for l in ["LOG1", "LOG2", "LOG"] {
            let p = config.join(format!("{h}.{l}"));
            if p.is_file() {
                assert_eq!(
                    fs::metadata(&p).unwrap().len(),
                    0,
                    "{} not emptied",
                    p.display()
                );
            }
        }
    }
    expect_in_hive(
        &config.join("SYSTEM"),
        &[
            Expect::Sz("Setup", "CmdLine", r"oobe\windeploy.exe"),
            Expect::Dword(r"Setup\Status\SysprepStatus", "GeneralizationState", 7),
            Expect::NoValue("RNG", "Seed"),
        ],
    );
    // A second run plans nothing.
    let after = snapshot(&root);
    let again = reseal(&["--json", "--force"], &root);
    assert_eq!(again.code, 0, "stderr: {}", again.stderr);
    let again = again.json();
    assert_eq!(again["outcome"], "nothing_to_do");
    assert!(edits(&again).is_empty());
    assert_same(&after, &snapshot(&root), "second run on the corpus root");
}
