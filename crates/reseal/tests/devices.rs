//! `devices` and `boot-drivers` on the synthetic root and on real SYSTEM
//! hives from the shared corpus (Windows 10: regipy SYSTEM_B replayed from
//! its logs; Windows 7: regipy SYSTEM and dfwinreg's SYSTEM): instance counts
//! per enumerator before and after, no dangling references, a clean
//! structural check, agreement of independent readers (hivexregedit,
//! regfexport) on the instances left, persistence options leaving `Enum`
//! untouched, and idempotency. Corpus cases skip locally when the corpus
//! (or `xz`) is absent, and fail under CI=true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use reseal::apply::apply;
use reseal::backend::dir::DirBackend;
use reseal::backend::memory::MemoryBackend;
use reseal::backend::{Backend, FileChange};
use reseal::context::{PlanContext, reg_dword, reg_string};
use reseal::edit::{Edit, PlannedEdit, RegEdit};
use reseal::generalize::generalize;
use reseal::hive::Hive;
use reseal::hives::{self, HiveId};
use reseal::install::WindowsInstall;
use reseal::ops::boot_drivers::BootDrivers;
use reseal::ops::devices::{Devices, is_kept_enumerator};
use reseal::ops::{Operation, Plan};
use reseal::options::{GeneralizeOptions, Selection};
use reseal::unattend::Unattend;

const SYSTEM_PATH: &str = r"Windows\System32\config\SYSTEM";

// ---------------------------------------------------------------------------
// Loading.

/// A SYSTEM hive (with its logs) held in a memory backend.
struct Image {
    backend: MemoryBackend,
    install: WindowsInstall,
}

impl Image {
    fn new(system: Vec<u8>, logs: Vec<(&str, Vec<u8>)>) -> Image {
        let mut backend = MemoryBackend::new();
        backend.insert(SYSTEM_PATH, system);
        for (suffix, bytes) in logs {
            backend.insert(&format!("{SYSTEM_PATH}{suffix}"), bytes);
        }
        // The image ships the driver file of each listed boot driver (what a
        // real image has; boot-drivers leaves drivers without one alone).
        let h = Hive::from_bytes("SYSTEM", backend.read(SYSTEM_PATH).unwrap()).ok();
        for (drv, _) in reseal::ops::boot_drivers::BOOT_DRIVERS {
            backend.insert(
                &format!("Windows\\System32\\drivers\\{drv}.sys"),
                vec![0x4d, 0x5a],
            );
            // And the file the service's ImagePath names, when it differs.
            let Some(h) = &h else { continue };
            for cs in control_sets(h) {
                let Ok(Some(k)) = h.open_key(&format!("{cs}\\Services\\{drv}")) else {
                    continue;
                };
                if let Ok(Some(v)) = h.value(k, "ImagePath") {
                    let path = reg_string(&v.data);
                    if let Some(i) = path.to_ascii_lowercase().find("system32\\") {
                        backend.insert(&format!("Windows\\{}", &path[i..]), vec![0x4d, 0x5a]);
                    }
                }
            }
        }
        let loaded = hives::load(&backend, HiveId::System, SYSTEM_PATH).unwrap();
        Image {
            install: WindowsInstall {
                windows_dir: "Windows".into(),
                hives: vec![loaded],
                load_errors: vec![],
            },
            backend,
        }
    }

    fn hive(&self) -> &Hive {
        self.install.hive(&HiveId::System).unwrap()
    }

    fn plan(
        &self,
        op: &dyn Operation,
        options: &GeneralizeOptions,
        unattend: Option<&Unattend>,
    ) -> Plan {
        let ctx = PlanContext {
            install: &self.install,
            backend: &self.backend,
            options,
            unattend,
        };
        op.plan(&ctx).unwrap()
    }

    /// Applies the edits as a run does (edits, structural check) and
    /// returns the new SYSTEM bytes.
    fn apply(&self, edits: &[PlannedEdit]) -> Vec<u8> {
        let applied = apply(&self.install, edits).unwrap();
        applied
            .changes
            .into_iter()
            .find_map(|c| match c {
                FileChange::Write { path, data } if path == SYSTEM_PATH => Some(data),
                _ => None,
            })
            .expect("the SYSTEM hive was rewritten")
    }
}

fn corpus() -> Option<PathBuf> {
    let c = reseal_testkit::corpus_dir();
    reseal_testkit::require(c.is_some(), "the shared corpus");
    c
}

fn xz(path: &Path) -> Option<Vec<u8>> {
    if !reseal_testkit::require(path.is_file(), &format!("corpus file {}", path.display())) {
        return None;
    }
    match Command::new("xz").arg("-dc").arg(path).output() {
        Ok(o) if o.status.success() => Some(o.stdout),
        _ => {
            reseal_testkit::require(false, &format!("a working `xz -dc {}`", path.display()));
            None
        }
    }
}

fn windows10() -> Option<Image> {
    let dir = corpus()?.join("regipy/regipy_tests/data");
    let system = xz(&dir.join("SYSTEM_B.xz"))?;
    let log1 = xz(&dir.join("SYSTEM_B.LOG1.xz"))?;
    let log2 = xz(&dir.join("SYSTEM_B.LOG2.xz"))?;
    Some(Image::new(system, vec![(".LOG1", log1), (".LOG2", log2)]))
}

fn windows7() -> Option<Image> {
    let dir = corpus()?.join("regipy/regipy_tests/data");
    Some(Image::new(xz(&dir.join("SYSTEM.xz"))?, vec![]))
}

fn windows7_dfwinreg() -> Option<Image> {
    let p = corpus()?.join("dfwinreg/history-2016/test_data/SYSTEM");
    if !reseal_testkit::require(p.is_file(), &format!("corpus file {}", p.display())) {
        return None;
    }
    Some(Image::new(std::fs::read(p).unwrap(), vec![]))
}

fn synthetic_system() -> (tempfile::TempDir, Vec<u8>) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    reseal_testkit::build_windows_root(&root, None).unwrap();
    let bytes = std::fs::read(root.join("Windows/System32/config/SYSTEM")).unwrap();
    (t, bytes)
}

// ---------------------------------------------------------------------------
// Our own walk of the result (independent of the planner's code).

fn children(h: &Hive, path: &str) -> Vec<String> {
    let Some(k) = h.open_key(path).unwrap() else {
        return Vec::new();
    };
    h.subkeys(k)
        .unwrap()
        .into_iter()
        .map(|c| h.key_info(c).unwrap().name)
        .collect()
}

fn text(h: &Hive, key: &str, name: &str) -> Option<String> {
    let k = h.open_key(key).unwrap()?;
    h.value(k, name)
        .unwrap()
        .filter(|v| v.value_type == 1 || v.value_type == 2)
        .map(|v| reg_string(&v.data))
}

fn control_sets(h: &Hive) -> Vec<String> {
    children(h, "")
        .into_iter()
        .filter(|n| n.len() == 13 && n.to_ascii_lowercase().starts_with("controlset"))
        .collect()
}

/// Instance paths (`ControlSet001\PCI\VEN..\3&..`, upper-cased) per set.
fn instances(h: &Hive) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for cs in control_sets(h) {
        let e = format!("{cs}\\Enum");
        for en in children(h, &e) {
            for d in children(h, &format!("{e}\\{en}")) {
                for i in children(h, &format!("{e}\\{en}\\{d}")) {
                    out.insert(format!("{cs}\\{en}\\{d}\\{i}").to_ascii_uppercase());
                }
            }
        }
    }
    out
}

/// Instance counts per control set and enumerator.
fn counts(h: &Hive) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for cs in control_sets(h) {
        let e = format!("{cs}\\Enum");
        let per = out.entry(cs.clone()).or_default();
        for en in children(h, &e) {
            let n: usize = children(h, &format!("{e}\\{en}"))
                .iter()
                .map(|d| children(h, &format!("{e}\\{en}\\{d}")).len())
                .sum();
            per.insert(en, n);
        }
    }
    out
}

fn print_counts(label: &str, before: &Hive, after: &Hive) {
    let (b, a) = (counts(before), counts(after));
    for (cs, per) in &b {
        let total_b: usize = per.values().sum();
        let total_a: usize = a.get(cs).map_or(0, |m| m.values().sum());
        let cells: Vec<String> = per
            .iter()
            .map(|(en, n)| {
                let after = a.get(cs).and_then(|m| m.get(en)).copied().unwrap_or(0);
                format!("{en} {n}->{after}")
            })
            .collect();
        println!(
            "COUNTS {label} {cs}: {total_b} -> {total_a} instances; {}",
            cells.join(", ")
        );
    }
}

/// Every reference in `h` that names an instance of `removed` (control-set
/// qualified, upper-cased), or a kept instance's driver key that does not
/// exist.
fn dangling(h: &Hive, removed: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let gone = |cs: &str, inst: &str| {
        removed.contains(&format!("{cs}\\{}", inst.trim_start_matches('\\')).to_ascii_uppercase())
    };
    for cs in control_sets(h) {
        let e = format!("{cs}\\Enum");
        for en in children(h, &e) {
            for d in children(h, &format!("{e}\\{en}")) {
                for i in children(h, &format!("{e}\\{en}\\{d}")) {
                    let key = format!("{e}\\{en}\\{d}\\{i}");
                    if let Some(drv) = text(h, &key, "Driver") {
                        if h.open_key(&format!("{cs}\\Control\\Class\\{drv}"))
                            .unwrap()
                            .is_none()
                        {
                            out.push(format!("{key}: Driver {drv} has no class key"));
                        }
                    }
                }
            }
        }
        let dc = format!("{cs}\\Control\\DeviceClasses");
        for g in children(h, &dc) {
            for i in children(h, &format!("{dc}\\{g}")) {
                let key = format!("{dc}\\{g}\\{i}");
                if let Some(inst) = text(h, &key, "DeviceInstance") {
                    if gone(&cs, &inst) {
                        out.push(format!("{key} names removed {inst}"));
                    }
                }
            }
        }
        let dcs = format!("{cs}\\Control\\DeviceContainers");
        for c in children(h, &dcs) {
            let base = format!("{dcs}\\{c}\\BaseContainers");
            for b in children(h, &base) {
                let key = format!("{base}\\{b}");
                let k = h.open_key(&key).unwrap().unwrap();
                for v in h.values(k).unwrap() {
                    if gone(&cs, &v.name) {
                        out.push(format!("{key} value names removed {}", v.name));
                    }
                }
            }
        }
        let net = format!("{cs}\\Control\\Network\\{{4D36E972-E325-11CE-BFC1-08002BE10318}}");
        for n in children(h, &net) {
            let key = format!("{net}\\{n}\\Connection");
            if let Some(inst) = text(h, &key, "PnPInstanceId") {
                if gone(&cs, &inst) {
                    out.push(format!("{key} names removed {inst}"));
                }
            }
        }
    }
    if let Some(k) = h.open_key("MountedDevices").unwrap() {
        for v in h.values(k).unwrap() {
            let t = reg_string(&v.data);
            if let Some(rest) = t.strip_prefix("\\??\\").or_else(|| t.strip_prefix("_??_")) {
                let en = rest.split('#').next().unwrap_or("");
                if !en.is_empty() && !is_kept_enumerator(en) {
                    out.push(format!("MountedDevices {} names a {en} device", v.name));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Independent readers.

fn have(program: &str) -> bool {
    Command::new(program).arg("--help").output().is_ok()
}

/// Enum instance paths as hivexregedit sees them (None when absent).
fn instances_hivex(file: &Path) -> Option<BTreeSet<String>> {
    if !reseal_testkit::require_tool("hivexregedit") {
        return None;
    }
    let out = Command::new("hivexregedit")
        .env("PERL_UNICODE", "SO")
        .arg("--export")
        .arg(file)
        .arg("\\")
        .output()
        .unwrap();
    assert!(out.status.success(), "hivexregedit failed");
    let text = String::from_utf8(out.stdout).unwrap();
    Some(enum_instances_of(text.lines().filter_map(|l| {
        l.strip_prefix("[\\")
            .and_then(|l| l.strip_suffix(']'))
            .map(str::to_string)
    })))
}

/// Enum instance paths as regfexport (libregf) sees them.
fn instances_regfexport(file: &Path) -> Option<BTreeSet<String>> {
    if !reseal_testkit::require(
        Command::new("regfexport").arg("-V").output().is_ok(),
        "the command `regfexport`",
    ) {
        return None;
    }
    let out = Command::new("regfexport").arg(file).output().unwrap();
    assert!(out.status.success(), "regfexport failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Some(enum_instances_of(text.lines().filter_map(|l| {
        // The root key's own name comes first.
        l.strip_prefix("Key path: ")
            .and_then(|p| p.split_once('\\'))
            .map(|(_, rest)| rest.to_string())
    })))
}

fn enum_instances_of(paths: impl Iterator<Item = String>) -> BTreeSet<String> {
    paths
        .filter_map(|p| {
            let parts: Vec<&str> = p.split('\\').collect();
            (parts.len() == 5
                && parts[0].to_ascii_lowercase().starts_with("controlset")
                && parts[1].eq_ignore_ascii_case("Enum"))
            .then(|| {
                format!("{}\\{}\\{}\\{}", parts[0], parts[2], parts[3], parts[4])
                    .to_ascii_uppercase()
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The scenario every hive goes through.

fn default_options() -> GeneralizeOptions {
    GeneralizeOptions::default()
}

fn is_system_edit(e: &PlannedEdit) -> bool {
    matches!(&e.edit, Edit::Registry { hive: HiveId::System, change } if matches!(change, RegEdit::DeleteKey { .. } | RegEdit::DeleteValue { .. }))
}

fn scenario(label: &str, image: &Image) {
    let before = image.hive().clone();
    let plan = image.plan(&Devices, &default_options(), None);
    assert!(plan.not_done.is_empty(), "{:?}", plan.not_done);
    assert!(!plan.edits.is_empty(), "{label}: nothing planned");
    assert!(plan.edits.iter().all(is_system_edit));
    assert!(
        plan.edits
            .iter()
            .all(|e| e.operation == "devices" && !e.reason.is_empty())
    );
    // Deterministic: the same plan twice.
    let again = image.plan(&Devices, &default_options(), None);
    assert_eq!(plan.edits, again.edits);

    let t = std::time::Instant::now();
    let bytes = image.apply(&plan.edits);
    let apply_ms = t.elapsed().as_secs_f64() * 1000.0;
    let after = Hive::from_bytes("SYSTEM", bytes.clone()).unwrap();
    let report = after.check();
    assert_eq!(report.errors().count(), 0, "{label}: check() found errors");

    print_counts(label, &before, &after);
    let (ib, ia) = (instances(&before), instances(&after));
    let removed: BTreeSet<String> = ib.difference(&ia).cloned().collect();
    assert!(ia.is_subset(&ib));
    println!(
        "SUMMARY {label}: {} edits, {} -> {} instances ({} removed), apply {apply_ms:.0} ms (debug build)",
        plan.edits.len(),
        ib.len(),
        ia.len(),
        removed.len()
    );
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &plan.edits {
        let Edit::Registry { change, .. } = &e.edit else {
            continue;
        };
        let (key, value) = match change {
            RegEdit::DeleteKey { key } => (key.to_ascii_lowercase(), false),
            RegEdit::DeleteValue { key, .. } => (key.to_ascii_lowercase(), true),
            _ => continue,
        };
        let kind = if key == "mounteddevices" {
            "MountedDevices values"
        } else if key.contains("\\enum\\") {
            "Enum enumerators"
        } else if key.contains("\\control\\class\\") {
            "driver keys"
        } else if key.contains("\\deviceclasses\\") {
            "interfaces"
        } else if key.contains("\\devicecontainers\\") && value {
            "container references"
        } else if key.contains("\\devicecontainers\\") {
            "containers"
        } else {
            "network keys"
        };
        *kinds.entry(kind).or_default() += 1;
    }
    println!("EDITS {label}: {kinds:?}");
    // Only hardware went, and every hardware instance went.
    for i in &ib {
        let en = i.split('\\').nth(1).unwrap();
        assert_eq!(ia.contains(i), is_kept_enumerator(en), "{label}: {i}");
    }
    // No dangling reference that this run made: compare with the dangling
    // references of the input (real hives may hold stale ones already).
    let pre: BTreeSet<String> = dangling(&before, &removed)
        .into_iter()
        .filter(|d| d.contains("has no class key"))
        .collect();
    let post: Vec<String> = dangling(&after, &removed)
        .into_iter()
        .filter(|d| !pre.contains(d))
        .collect();
    assert!(post.is_empty(), "{label}: dangling after: {post:#?}");
    println!(
        "DANGLING {label}: 0 after (kept instances whose Driver already had no class key in the input: {})",
        pre.len()
    );
    // Driver packages and services are untouched: only Enum, Control\Class
    // (instance keys), DeviceClasses, DeviceContainers, Network, NetworkSetup2,
    // Tcpip/Tcpip6/NetBT interface keys and MountedDevices are edited.
    for e in &plan.edits {
        let Edit::Registry { change, .. } = &e.edit else {
            unreachable!()
        };
        let key = match change {
            RegEdit::DeleteKey { key } | RegEdit::DeleteValue { key, .. } => key,
            _ => unreachable!(),
        };
        let rest = key
            .split_once('\\')
            .map_or("", |(_, r)| r)
            .to_ascii_lowercase();
        let ok = key.eq_ignore_ascii_case("MountedDevices")
            || [
                "enum\\",
                "control\\class\\{",
                "control\\deviceclasses\\{",
                "control\\devicecontainers\\{",
                "control\\network\\{4d36e972-e325-11ce-bfc1-08002be10318}\\{",
                "control\\networksetup2\\interfaces\\{",
                "services\\tcpip\\parameters\\interfaces\\{",
                "services\\tcpip\\parameters\\adapters\\{",
                "services\\tcpip\\parameters\\dnsregisteredadapters\\{",
                "services\\tcpip6\\parameters\\interfaces\\{",
                "services\\netbt\\parameters\\interfaces\\tcpip_{",
            ]
            .iter()
            .any(|p| rest.starts_with(p));
        assert!(ok, "{label}: unexpected edit of {key}");
        if let Some(cls) = rest.strip_prefix("control\\class\\") {
            assert_eq!(
                cls.split('\\').count(),
                2,
                "{label}: {key} is not an instance key"
            );
        }
    }

    // Independent readers agree on the instances left.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("SYSTEM");
    std::fs::write(&file, &bytes).unwrap();
    if let Some(hx) = instances_hivex(&file) {
        assert_eq!(hx, ia, "{label}: hivexregedit disagrees");
        println!(
            "READERS {label}: hivexregedit agrees ({} instances)",
            hx.len()
        );
    }
    if let Some(rf) = instances_regfexport(&file) {
        assert_eq!(rf, ia, "{label}: regfexport disagrees");
        println!(
            "READERS {label}: regfexport agrees ({} instances)",
            rf.len()
        );
    }

    // Idempotent: a second plan on the result plans nothing.
    let second = Image::new(bytes, vec![]);
    let p2 = second.plan(&Devices, &default_options(), None);
    assert!(p2.edits.is_empty(), "{label}: second plan: {:#?}", p2.edits);
}

#[test]
fn synthetic_root() {
    let (_t, bytes) = synthetic_system();
    let image = Image::new(bytes, vec![]);
    scenario("synthetic", &image);
    // The NIC's network keys went; the WAN miniport's stayed.
    let plan = image.plan(&Devices, &default_options(), None);
    let after = Hive::from_bytes("SYSTEM", image.apply(&plan.edits)).unwrap();
    for gone in [
        r"ControlSet001\Control\Network\{4D36E972-E325-11CE-BFC1-08002BE10318}\{6b3c1a2d-4e5f-4a7b-9c8d-0e1f2a3b4c5d}",
        r"ControlSet002\Control\Network\{4D36E972-E325-11CE-BFC1-08002BE10318}\{6b3c1a2d-4e5f-4a7b-9c8d-0e1f2a3b4c5d}",
        r"ControlSet001\Services\Tcpip\Parameters\Interfaces\{6b3c1a2d-4e5f-4a7b-9c8d-0e1f2a3b4c5d}",
        r"ControlSet001\Services\Tcpip6\Parameters\Interfaces\{6b3c1a2d-4e5f-4a7b-9c8d-0e1f2a3b4c5d}",
        r"ControlSet001\Control\Class\{4d36e972-e325-11ce-bfc1-08002be10318}\0000",
        r"ControlSet002\Control\Class\{4d36e972-e325-11ce-bfc1-08002be10318}\0000",
        r"ControlSet001\Enum\PCI",
        r"ControlSet001\Enum\STORAGE",
        r"ControlSet002\Enum\PCI",
    ] {
        assert!(
            after.open_key(gone).unwrap().is_none(),
            "{gone} is still there"
        );
    }
    for kept in [
        r"ControlSet001\Control\Class\{4d36e972-e325-11ce-bfc1-08002be10318}\0001",
        r"ControlSet001\Control\Class\{4d36e97d-e325-11ce-bfc1-08002be10318}\0000",
        r"ControlSet001\Enum\ROOT\VOLMGR\0000",
        r"ControlSet001\Enum\SWD\MSRRAS\MS_NDISWANIP",
        r"ControlSet001\Services\Tcpip\Parameters\Interfaces",
        r"ControlSet001\Services\storahci",
    ] {
        assert!(after.open_key(kept).unwrap().is_some(), "{kept} is gone");
    }
    // `devices` alone leaves the fixed disk's letter (`identities` resets it).
    let md = after.open_key("MountedDevices").unwrap().unwrap();
    assert!(after.value(md, "\\DosDevices\\C:").unwrap().is_some());
}

#[test]
fn windows10_system_b() {
    if let Some(image) = windows10() {
        scenario("win10-SYSTEM_B", &image);
    }
}

#[test]
fn windows7_system() {
    if let Some(image) = windows7() {
        scenario("win7-regipy-SYSTEM", &image);
    }
}

#[test]
fn windows7_dfwinreg_system() {
    if let Some(image) = windows7_dfwinreg() {
        scenario("win7-dfwinreg-SYSTEM", &image);
    }
}

// ---------------------------------------------------------------------------
// Options that keep devices.

fn persist_answer() -> Unattend {
    let xml = r#"<unattend xmlns="urn:schemas-microsoft-com:unattend"><settings pass="generalize"><component name="Microsoft-Windows-PnpSysprep"><PersistAllDeviceInstalls>true</PersistAllDeviceInstalls></component></settings></unattend>"#;
    Unattend::parse("persist.xml", xml.as_bytes()).unwrap()
}

#[test]
fn keeping_options_plan_nothing() {
    let (_t, bytes) = synthetic_system();
    let image = Image::new(bytes, vec![]);
    let persist = GeneralizeOptions {
        persist_devices: true,
        ..Default::default()
    };
    let vm = GeneralizeOptions {
        vm: true,
        ..Default::default()
    };
    let answer = persist_answer();
    for (what, opts, u) in [
        ("persist", &persist, None),
        ("vm", &vm, None),
        ("answer file", &default_options(), Some(&answer)),
    ] {
        let plan = image.plan(&Devices, opts, u);
        assert!(plan.edits.is_empty(), "{what}");
        assert_eq!(plan.not_done.len(), 1, "{what}");
        assert!(plan.not_done[0].message.contains("kept"), "{what}");
    }
    // An answer file that says false does not keep them.
    let no = Unattend::parse(
        "no.xml",
        br#"<unattend xmlns="urn:schemas-microsoft-com:unattend"><settings pass="generalize"><component name="Microsoft-Windows-PnpSysprep"><PersistAllDeviceInstalls>false</PersistAllDeviceInstalls></component></settings></unattend>"#,
    )
    .unwrap();
    assert!(
        !image
            .plan(&Devices, &default_options(), Some(&no))
            .edits
            .is_empty()
    );
}

/// hivexregedit's export of every control set's `Enum` (or our dump when
/// hivexregedit is absent).
fn enum_export(file: &Path) -> String {
    let h = Hive::open(file).unwrap();
    let mut out = String::new();
    for cs in control_sets(&h) {
        let key = format!("\\{cs}\\Enum");
        if have("hivexregedit") {
            let o = Command::new("hivexregedit")
                .env("PERL_UNICODE", "SO")
                .arg("--export")
                .arg(file)
                .arg(&key)
                .output()
                .unwrap();
            assert!(o.status.success());
            out.push_str(&String::from_utf8(o.stdout).unwrap());
        } else {
            let d = h.dump().unwrap();
            for k in d.keys.iter().filter(|k| {
                k.path
                    .to_ascii_lowercase()
                    .starts_with(&key[1..].to_ascii_lowercase())
            }) {
                out.push_str(&format!("{}\n{:?}\n", k.path, k.values.len()));
                for v in &k.values {
                    out.push_str(&format!("{} {} {}\n", v.name, v.value_type, v.data_hex));
                }
            }
        }
    }
    out
}

/// A whole generalize run (devices and boot-drivers) on the synthetic root
/// with each keeping option: the hive is rewritten (boot-drivers edits it)
/// and `Enum` comes out the same.
#[test]
fn keeping_options_leave_enum_identical_in_a_run() {
    let answer = br#"<unattend xmlns="urn:schemas-microsoft-com:unattend"><settings pass="generalize"><component name="Microsoft-Windows-PnpSysprep"><PersistAllDeviceInstalls>true</PersistAllDeviceInstalls></component></settings></unattend>"#;
    let cases: [(&str, GeneralizeOptions); 3] = [
        (
            "persist",
            GeneralizeOptions {
                persist_devices: true,
                ..Default::default()
            },
        ),
        (
            "vm",
            GeneralizeOptions {
                vm: true,
                ..Default::default()
            },
        ),
        (
            "answer",
            GeneralizeOptions {
                unattend: Some(("persist.xml".into(), answer.to_vec())),
                ..Default::default()
            },
        ),
    ];
    for (what, mut opts) in cases {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        reseal_testkit::build_windows_root(&root, None).unwrap();
        let system = root.join("Windows/System32/config/SYSTEM");
        let before_bytes = std::fs::read(&system).unwrap();
        let before = enum_export(&system);
        opts.selection = Selection {
            only: Some(vec!["devices".into(), "boot-drivers".into()]),
            ..Default::default()
        };
        let mut backend = DirBackend::open(&root).unwrap();
        let report = generalize(&mut backend, &opts).unwrap();
        let install = &report.installs[0];
        assert!(!install.refused, "{what}: {:?}", install.refused_by);
        assert!(
            install.edits.iter().all(|e| e.operation == "boot-drivers"),
            "{what}"
        );
        assert!(
            !install.edits.is_empty(),
            "{what}: boot-drivers planned nothing"
        );
        let after_bytes = std::fs::read(&system).unwrap();
        assert_ne!(
            before_bytes, after_bytes,
            "{what}: the hive was not rewritten"
        );
        assert_eq!(before, enum_export(&system), "{what}: Enum changed");
        println!(
            "KEEP {what}: Enum identical ({} bytes of export) after a run that rewrote SYSTEM",
            before.len()
        );
    }
}

// ---------------------------------------------------------------------------
// boot-drivers.

#[test]
fn boot_drivers_synthetic() {
    let (_t, bytes) = synthetic_system();
    let image = Image::new(bytes, vec![]);
    let plan = image.plan(&BootDrivers, &default_options(), None);
    for e in &plan.edits {
        println!("BOOT {}", e.reason);
    }
    let after = Hive::from_bytes("SYSTEM", image.apply(&plan.edits)).unwrap();
    assert_eq!(after.check().errors().count(), 0);
    for drv in ["storahci", "stornvme", "iaStorV", "LSI_SAS", "pvscsi"] {
        let k = after
            .open_key(&format!("ControlSet001\\Services\\{drv}"))
            .unwrap()
            .unwrap();
        let start = after.value(k, "Start").unwrap().unwrap();
        assert_eq!(start.value_type, 4);
        assert_eq!(reg_dword(&start.data), Some(0), "{drv}");
    }
    assert!(
        after
            .open_key(r"ControlSet001\Services\storahci\StartOverride")
            .unwrap()
            .is_none()
    );
    // Unknown services are left alone.
    let before = image.hive();
    for svc in ["E1G60", "HidUsb", "disk", "volmgr"] {
        let key = format!("ControlSet001\\Services\\{svc}");
        let b = before.open_key(&key).unwrap().unwrap();
        let a = after.open_key(&key).unwrap().unwrap();
        assert_eq!(before.values(b).unwrap(), after.values(a).unwrap(), "{svc}");
    }
    // Also in vm mode; and idempotent.
    let vm = GeneralizeOptions {
        vm: true,
        ..Default::default()
    };
    assert_eq!(image.plan(&BootDrivers, &vm, None).edits, plan.edits);
    let second = Image::new(after.to_bytes(), vec![]);
    assert!(
        second
            .plan(&BootDrivers, &default_options(), None)
            .edits
            .is_empty()
    );
}

#[test]
fn boot_drivers_real_hives() {
    for (label, image) in [
        ("win10-SYSTEM_B", windows10()),
        ("win7-regipy-SYSTEM", windows7()),
    ] {
        let Some(image) = image else { continue };
        let plan = image.plan(&BootDrivers, &default_options(), None);
        println!("BOOT {label}: {} edits", plan.edits.len());
        for e in &plan.edits {
            println!("BOOT {label}: {}", e.reason);
        }
        let bytes = image.apply(&plan.edits);
        let after = Hive::from_bytes("SYSTEM", bytes.clone()).unwrap();
        assert_eq!(after.check().errors().count(), 0);
        let second = Image::new(bytes, vec![]);
        assert!(
            second
                .plan(&BootDrivers, &default_options(), None)
                .edits
                .is_empty()
        );
        for cs in control_sets(&after) {
            for (drv, _) in reseal::ops::boot_drivers::BOOT_DRIVERS {
                let key = format!("{cs}\\Services\\{drv}");
                let Some(k) = after.open_key(&key).unwrap() else {
                    continue;
                };
                let v = after.value(k, "Start").unwrap().unwrap();
                assert_eq!(reg_dword(&v.data), Some(0), "{label} {key}");
                assert!(
                    after
                        .open_key(&format!("{key}\\StartOverride"))
                        .unwrap()
                        .is_none_or(|o| after
                            .values(o)
                            .unwrap()
                            .iter()
                            .all(|v| reg_dword(&v.data) == Some(0))),
                    "{label} {key}"
                );
            }
        }
    }
}

/// Both operations together in a full run on the synthetic root through
/// the directory backend: the result passes the run's check and commits.
#[test]
fn full_run_on_synthetic_root() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    reseal_testkit::build_windows_root(&root, None).unwrap();
    let opts = GeneralizeOptions {
        selection: Selection {
            only: Some(vec!["devices".into(), "boot-drivers".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut backend = DirBackend::open(&root).unwrap();
    let report = generalize(&mut backend, &opts).unwrap();
    assert!(!report.installs[0].edits.is_empty());
    let h = Hive::open(root.join("Windows/System32/config/SYSTEM")).unwrap();
    let left = instances(&h);
    assert!(
        left.iter()
            .all(|i| is_kept_enumerator(i.split('\\').nth(1).unwrap()))
    );
    let again = generalize(&mut DirBackend::open(&root).unwrap(), &opts).unwrap();
    assert!(
        again.installs[0].edits.is_empty(),
        "{:#?}",
        again.installs[0].edits
    );
    let _ = backend.describe();
}

/// A service key without its driver file is left alone and reported: making
/// a missing driver boot-start would break the boot.
#[test]
fn boot_drivers_skip_services_without_a_driver_file() {
    let mut h = Hive::create("SYSTEM", 5, "ROOT").unwrap();
    h.create_key("Select").unwrap();
    h.set_value("Select", "Current", 4, &1u32.to_le_bytes())
        .unwrap();
    h.create_key("ControlSet001\\Services\\storahci").unwrap();
    h.set_value(
        "ControlSet001\\Services\\storahci",
        "Start",
        4,
        &3u32.to_le_bytes(),
    )
    .unwrap();
    let mut image = Image::new(h.to_bytes(), vec![]);
    let mut backend = MemoryBackend::new();
    for p in image.backend.paths() {
        if !p.to_ascii_lowercase().ends_with(".sys") {
            backend.insert(&p, image.backend.read(&p).unwrap());
        }
    }
    image.backend = backend;
    let plan = image.plan(&BootDrivers, &default_options(), None);
    assert!(plan.edits.is_empty(), "{:?}", plan.edits);
    assert!(
        plan.not_done
            .iter()
            .any(|n| n.message.contains("storahci") && n.message.contains("not in the image")),
        "{:?}",
        plan.not_done
    );
}
