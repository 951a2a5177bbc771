//! Finding installs, describing them and the preflight checks: one small
//! synthetic image per finding, a clean image with no blocking finding, and
//! real hives from the corpus.

use std::path::{Path, PathBuf};
use std::process::Command;

use reseal::backend::memory::MemoryBackend;
use reseal::describe::{InstallDescription, describe};
use reseal::discover::{find_windows_dirs, load_install};
use reseal::hive::Hive;
use reseal::hive::base_block::{OFF_FLAGS, OFF_SEQ1, store_checksum};
use reseal::hives::HiveId;
use reseal::install::WindowsInstall;
use reseal::preflight::{Finding, Severity, blocked, preflight};

const SZ: u32 = 1;
const EXPAND_SZ: u32 = 2;
const BINARY: u32 = 3;
const DWORD: u32 = 4;
const MULTI_SZ: u32 = 7;

const CV: &str = r"Microsoft\Windows NT\CurrentVersion";
const APPX: &str = r"Microsoft\Windows\CurrentVersion\Appx\AppxAllUserStore";
const CCS: &str = "ControlSet001";

fn sz(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn multi(items: &[&str]) -> Vec<u8> {
    let mut v: Vec<u8> = Vec::new();
    for i in items {
        v.extend(sz(i));
    }
    v.extend([0, 0]);
    v
}

fn dword(n: u32) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

fn sid_bytes(subs: &[u32]) -> Vec<u8> {
    let mut b = vec![1, subs.len() as u8, 0, 0, 0, 0, 0, 5];
    for s in subs {
        b.extend(s.to_le_bytes());
    }
    b
}

fn lsa_string(s: &str) -> Vec<u8> {
    let text = sz(s);
    let len = (text.len() - 2) as u16;
    let mut b = Vec::new();
    b.extend(len.to_le_bytes());
    b.extend((len + 2).to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend(text);
    b
}

fn set(h: &mut Hive, key: &str, name: &str, ty: u32, data: &[u8]) {
    h.create_key(key).unwrap();
    h.set_value(key, name, ty, data).unwrap();
}

fn key(h: &mut Hive, key: &str) {
    h.create_key(key).unwrap();
}

/// A small Windows image: machine hives, one user profile, a few files.
struct Img {
    system: Hive,
    software: Hive,
    sam: Hive,
    security: Hive,
    files: Vec<(String, Vec<u8>)>,
}

const GENERALIZE_XML: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<sysprepInformation>
  <imaging>
    <assemblyIdentity name="Microsoft-Windows-PnpSysprep" version="10.0.19041.1"/>
    <sysprepOrder order="0x1000"/>
    <sysprepModule moduleName="$(runtime.system32)\sppnp.dll" methodName="Sysprep_Generalize_Pnp"/>
  </imaging>
  <imaging>
    <assemblyIdentity name="Microsoft-Windows-Security-SPP"/>
    <sysprepOrder order="0x2000"/>
    <sysprepModule moduleName="$(runtime.system32)\slc.dll" methodName="SLReArmWindows"/>
  </imaging>
</sysprepInformation>
"#;

impl Img {
    fn clean() -> Img {
        let mut system = Hive::create("SYSTEM", 5, "ROOT").unwrap();
        set(&mut system, "Select", "Current", DWORD, &dword(1));
        set(
            &mut system,
            &format!(r"{CCS}\Control\ComputerName\ComputerName"),
            "ComputerName",
            SZ,
            &sz("GOLDEN"),
        );
        set(
            &mut system,
            &format!(r"{CCS}\Control\ProductOptions"),
            "ProductType",
            SZ,
            &sz("WinNT"),
        );
        set(
            &mut system,
            &format!(r"{CCS}\Control\Session Manager\Environment"),
            "PROCESSOR_ARCHITECTURE",
            SZ,
            &sz("AMD64"),
        );
        key(
            &mut system,
            &format!(r"{CCS}\Enum\PCI\VEN_8086&DEV_100E\3&267a616a&0&18"),
        );
        key(&mut system, &format!(r"{CCS}\Enum\ROOT\BasicDisplay\0000"));
        key(&mut system, &format!(r"{CCS}\Enum\ROOT\BasicDisplay\0001"));
        // A client carries a bare NTDS key; that is not a domain controller.
        key(&mut system, &format!(r"{CCS}\Services\NTDS\RID Values"));
        set(
            &mut system,
            &format!(r"{CCS}\Services\Tcpip"),
            "ImagePath",
            EXPAND_SZ,
            &sz(r"System32\drivers\tcpip.sys"),
        );
        set(
            &mut system,
            "Setup",
            "SystemSetupInProgress",
            DWORD,
            &dword(0),
        );
        set(&mut system, "Setup", "SetupType", DWORD, &dword(0));
        set(&mut system, "Setup", "CmdLine", SZ, &sz(""));

        let mut software = Hive::create("SOFTWARE", 5, "ROOT").unwrap();
        set(&mut software, CV, "ProductName", SZ, &sz("Windows 10 Pro"));
        set(&mut software, CV, "CurrentBuild", SZ, &sz("19045"));
        set(&mut software, CV, "UBR", DWORD, &dword(3803));
        set(&mut software, CV, "DisplayVersion", SZ, &sz("22H2"));
        set(&mut software, CV, "EditionID", SZ, &sz("Professional"));
        set(&mut software, CV, "InstallationType", SZ, &sz("Client"));
        let pl = format!(r"{CV}\ProfileList");
        set(
            &mut software,
            &format!(r"{pl}\S-1-5-18"),
            "ProfileImagePath",
            EXPAND_SZ,
            &sz(r"%systemroot%\system32\config\systemprofile"),
        );
        set(
            &mut software,
            &format!(r"{pl}\S-1-5-21-1000-2000-3000-1001"),
            "ProfileImagePath",
            EXPAND_SZ,
            &sz(r"C:\Users\demo"),
        );
        set(
            &mut software,
            &format!(r"{pl}\S-1-5-21-1000-2000-3000-1002"),
            "ProfileImagePath",
            EXPAND_SZ,
            &sz(r"%SystemDrive%\Users\gone"),
        );
        key(
            &mut software,
            &format!(r"{APPX}\Applications\Contoso.App_1.0.0.0_x64__abcdefghijklm"),
        );
        key(
            &mut software,
            &format!(r"{APPX}\S-1-5-21-1000-2000-3000-1001\Contoso.App_1.0.0.0_x64__abcdefghijklm"),
        );
        key(
            &mut software,
            &format!(
                r"{APPX}\S-1-5-21-1000-2000-3000-1001\Microsoft.VCLibs.140.00_14.0.30704.0_x64__8wekyb3d8bbwe"
            ),
        );
        set(
            &mut software,
            r"Microsoft\Windows\CurrentVersion\Setup\State",
            "ImageState",
            SZ,
            &sz("IMAGE_STATE_COMPLETE"),
        );
        set(
            &mut software,
            r"Microsoft\Windows\CurrentVersion\Setup\SysPrepExternal\Generalize",
            "{4b4e8a5c-0000-0000-0000-000000000001}",
            SZ,
            &sz(r"C:\Program Files\Vendor\vendor.dll,Vendor_Generalize"),
        );

        let mut sam = Hive::create("SAM", 5, "ROOT").unwrap();
        let mut v = vec![0u8; 64];
        v.extend(sid_bytes(&[21, 1000, 2000, 3000]));
        set(&mut sam, r"SAM\Domains\Account", "V", BINARY, &v);
        let names = r"SAM\Domains\Account\Users\Names";
        set(&mut sam, &format!(r"{names}\Administrator"), "", 0x1f4, &[]);
        set(&mut sam, &format!(r"{names}\demo"), "", 0x3e9, &[]);
        let mut f = vec![0u8; 80];
        f[0x38] = 0x11; // disabled | normal account
        set(
            &mut sam,
            r"SAM\Domains\Account\Users\000001F4",
            "F",
            BINARY,
            &f,
        );
        let mut f = vec![0u8; 80];
        f[0x38] = 0x10;
        set(
            &mut sam,
            r"SAM\Domains\Account\Users\000003E9",
            "F",
            BINARY,
            &f,
        );

        let mut security = Hive::create("SECURITY", 5, "ROOT").unwrap();
        set(
            &mut security,
            r"Policy\PolAcDmS",
            "",
            0,
            &sid_bytes(&[21, 1000, 2000, 3000]),
        );
        set(
            &mut security,
            r"Policy\PolAcDmN",
            "",
            0,
            &lsa_string("GOLDEN"),
        );
        set(&mut security, r"Policy\PolPrDmS", "", 0, &[]);
        set(
            &mut security,
            r"Policy\PolPrDmN",
            "",
            0,
            &lsa_string("WORKGROUP"),
        );
        set(&mut security, r"Policy\PolDnDDN", "", 0, &[]);

        let user = Hive::create("NTUSER", 5, "ROOT").unwrap().to_bytes();
        let classes = Hive::create("UsrClass", 5, "ROOT").unwrap().to_bytes();
        let files = vec![
            (r"Users\demo\NTUSER.DAT".to_string(), user.clone()),
            (
                r"Users\demo\AppData\Local\Microsoft\Windows\UsrClass.dat".to_string(),
                classes,
            ),
            (
                r"Windows\System32\config\systemprofile\NTUSER.DAT".to_string(),
                user,
            ),
            (
                r"Windows\System32\Sysprep\ActionFiles\Generalize.xml".to_string(),
                GENERALIZE_XML.as_bytes().to_vec(),
            ),
            (
                r"Windows\Setup\State\State.ini".to_string(),
                b"[State]\r\nImageState=IMAGE_STATE_COMPLETE\r\n".to_vec(),
            ),
            // Windows 8+ zeroes the header after boot: not a live image.
            ("hiberfil.sys".to_string(), vec![0u8; 4096]),
            (
                r"Windows\System32\Sysprep\sysprep.exe".to_string(),
                b"MZ".to_vec(),
            ),
        ];
        Img {
            system,
            software,
            sam,
            security,
            files,
        }
    }

    fn file(&mut self, path: &str, data: &[u8]) {
        self.files.retain(|(p, _)| !p.eq_ignore_ascii_case(path));
        self.files.push((path.to_string(), data.to_vec()));
    }

    fn backend(&self) -> MemoryBackend {
        let mut b = MemoryBackend::new();
        let cfg = r"Windows\System32\config";
        b.insert(&format!(r"{cfg}\SYSTEM"), self.system.to_bytes());
        b.insert(&format!(r"{cfg}\SOFTWARE"), self.software.to_bytes());
        b.insert(&format!(r"{cfg}\SAM"), self.sam.to_bytes());
        b.insert(&format!(r"{cfg}\SECURITY"), self.security.to_bytes());
        for (p, d) in &self.files {
            b.insert(p, d.clone());
        }
        b
    }
}

fn inspect(b: &MemoryBackend) -> (WindowsInstall, InstallDescription, Vec<Finding>) {
    let dirs = find_windows_dirs(b).unwrap();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let install = load_install(b, &dirs[0]);
    let desc = describe(&install, b);
    let findings = preflight(&install, b, &desc);
    // The text rendering and JSON never fail.
    assert!(desc.to_text().contains("Machine SID"));
    serde_json::to_string(&desc).unwrap();
    serde_json::to_string(&findings).unwrap();
    (install, desc, findings)
}

fn only(findings: &[Finding], id: &str) -> Finding {
    let hits: Vec<&Finding> = findings.iter().filter(|f| f.id == id).collect();
    assert_eq!(hits.len(), 1, "expected one {id} finding in {findings:#?}");
    hits[0].clone()
}

fn blocking(findings: &[Finding]) -> Vec<&'static str> {
    findings
        .iter()
        .filter(|f| matches!(f.severity, Severity::Refuse | Severity::RefuseUnlessForced))
        .map(|f| f.id)
        .collect()
}

/// Makes a hive file dirty (primary != secondary sequence) with a valid
/// checksum.
fn make_dirty(bytes: &mut [u8]) {
    let s = u32::from_le_bytes(bytes[OFF_SEQ1..OFF_SEQ1 + 4].try_into().unwrap());
    bytes[OFF_SEQ1..OFF_SEQ1 + 4].copy_from_slice(&(s + 1).to_le_bytes());
    store_checksum(bytes);
}

#[test]
fn clean_image_is_described_and_not_refused() {
    let img = Img::clean();
    let b = img.backend();
    let (install, d, findings) = inspect(&b);
    assert!(install.load_errors.is_empty(), "{:?}", install.load_errors);
    assert_eq!(blocking(&findings), Vec::<&str>::new(), "{findings:#?}");
    assert!(!blocked(&findings, false));

    assert_eq!(d.windows_dir, "Windows");
    assert_eq!(d.product_name.as_deref(), Some("Windows 10 Pro"));
    assert_eq!(d.build.as_deref(), Some("19045.3803"));
    assert_eq!(d.display_version.as_deref(), Some("22H2"));
    assert_eq!(d.edition.as_deref(), Some("Professional"));
    assert_eq!(d.installation_type.as_deref(), Some("Client"));
    assert_eq!(d.architecture.as_deref(), Some("AMD64"));
    assert_eq!(d.computer_name.as_deref(), Some("GOLDEN"));
    assert_eq!(d.product_type.as_deref(), Some("WinNT"));
    assert_eq!(d.current_control_set.as_deref(), Some("ControlSet001"));
    assert_eq!(d.machine_sid.as_deref(), Some("S-1-5-21-1000-2000-3000"));
    assert_eq!(
        d.machine_sid_source.as_deref(),
        Some(r"SECURITY Policy\PolAcDmS")
    );
    let accounts: Vec<(&str, u32, Option<bool>)> = d
        .accounts
        .iter()
        .map(|a| (a.name.as_str(), a.rid, a.disabled))
        .collect();
    assert_eq!(
        accounts,
        vec![
            ("Administrator", 500, Some(true)),
            ("demo", 1001, Some(false))
        ]
    );
    assert_eq!(
        d.accounts[1].sid.as_deref(),
        Some("S-1-5-21-1000-2000-3000-1001")
    );
    assert!(!d.domain.joined);
    assert_eq!(d.domain.name.as_deref(), Some("WORKGROUP"));
    assert_eq!(d.device_instances, Some(3));
    assert!(d.per_user_appx.is_empty(), "{:?}", d.per_user_appx);
    assert!(d.pending.is_empty());
    assert_eq!(
        d.generalization.image_state.as_deref(),
        Some("IMAGE_STATE_COMPLETE")
    );
    assert_eq!(
        d.generalization.image_state_file.as_deref(),
        Some("IMAGE_STATE_COMPLETE")
    );
    assert_eq!(d.generalization.system_setup_in_progress, Some(0));
    assert!(!d.generalization.sysprep_succeeded_tag);

    // User hives: the demo profile (both hives) and the system profile.
    let mut ids: Vec<HiveId> = install.hives.iter().map(|h| h.id.clone()).collect();
    ids.sort();
    assert!(
        ids.contains(&HiveId::NtUser(r"Users\demo".into())),
        "{ids:?}"
    );
    assert!(
        ids.contains(&HiveId::UsrClass(r"Users\demo".into())),
        "{ids:?}"
    );
    assert!(
        ids.contains(&HiveId::NtUser(
            r"Windows\system32\config\systemprofile".into()
        )),
        "{ids:?}"
    );
    assert_eq!(ids.len(), 7, "{ids:?}"); // 4 machine + 3 user (no DEFAULT)

    // Providers: two from the action file, one third-party.
    let p: Vec<(&str, bool)> = d
        .providers
        .iter()
        .map(|p| (p.method.as_str(), p.third_party))
        .collect();
    assert_eq!(
        p,
        vec![
            ("Sysprep_Generalize_Pnp", false),
            ("SLReArmWindows", false),
            ("Vendor_Generalize", true)
        ]
    );
    assert_eq!(
        d.providers[0].component.as_deref(),
        Some("Microsoft-Windows-PnpSysprep")
    );
    assert_eq!(d.providers[2].module, r"C:\Program Files\Vendor\vendor.dll");
}

#[test]
fn finds_every_windows_dir_case_insensitively() {
    let mut b = Img::clean().backend();
    let sys = b.read_all(r"Windows\System32\config\SYSTEM");
    b.insert(r"WINNT\system32\CONFIG\system", sys);
    b.insert(r"Data\System32\readme.txt", b"x".to_vec());
    b.insert("bootmgr", b"x".to_vec());
    let mut dirs = find_windows_dirs(&b).unwrap();
    dirs.sort();
    assert_eq!(dirs, vec!["WINNT".to_string(), "Windows".to_string()]);
    // An install whose only hive is SYSTEM loads it; the other hives a run
    // needs are load errors ("not found"), so preflight refuses it.
    let install = load_install(&b, "WINNT");
    assert_eq!(install.hives.len(), 1);
    let missing: Vec<(&str, &str)> = install
        .load_errors
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        missing,
        vec![
            (r"WINNT\System32\config\SOFTWARE", "not found in the image"),
            (r"WINNT\System32\config\SAM", "not found in the image"),
            (r"WINNT\System32\config\SECURITY", "not found in the image"),
        ]
    );
    let d = describe(&install, &b);
    assert_eq!(d.computer_name.as_deref(), Some("GOLDEN"));
    assert_eq!(d.machine_sid, None);
    // An install without SYSTEM records it as a load error.
    let empty = MemoryBackend::new();
    let install = load_install(&empty, "Windows");
    assert_eq!(install.load_errors.len(), 4);
    let d = describe(&install, &empty);
    let findings = preflight(&install, &empty, &d);
    let unreadable: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.id == "hive-unreadable")
        .collect();
    assert_eq!(unreadable.len(), 4, "{findings:#?}");
    assert!(unreadable.iter().all(|f| f.severity == Severity::Refuse));
}

trait ReadAll {
    fn read_all(&self, p: &str) -> Vec<u8>;
}
impl ReadAll for MemoryBackend {
    fn read_all(&self, p: &str) -> Vec<u8> {
        use reseal::backend::Backend;
        self.read(p).unwrap()
    }
}

#[test]
fn dirty_hive_without_logs_is_refused() {
    let img = Img::clean();
    let mut b = img.backend();
    let mut sw = b.read_all(r"Windows\System32\config\SOFTWARE");
    make_dirty(&mut sw);
    b.insert(r"Windows\System32\config\SOFTWARE", sw);
    let (install, _, findings) = inspect(&b);
    assert!(install.hive(&HiveId::Software).is_none());
    let f = only(&findings, "dirty-hive-without-logs");
    assert_eq!(f.severity, Severity::Refuse);
    assert!(f.message.contains("SOFTWARE"), "{}", f.message);
    assert!(blocked(&findings, true));
}

#[test]
fn hibernation_signatures() {
    for (head, live) in [
        (&b"hibr"[..], true),
        (b"HIBR", true),
        (b"wake", true),
        (b"WAKE", true),
        (b"RSTR", false),
        (b"\0\0\0\0", false),
        (b"hi", false),
        (b"", false),
    ] {
        let mut img = Img::clean();
        let mut data = head.to_vec();
        if !data.is_empty() {
            data.extend([0u8; 64]);
        }
        img.file("hiberfil.sys", &data);
        let (_, _, findings) = inspect(&img.backend());
        let hits = findings.iter().filter(|f| f.id == "hibernated").count();
        assert_eq!(hits, live as usize, "{head:?}: {findings:#?}");
        if live {
            assert_eq!(only(&findings, "hibernated").severity, Severity::Refuse);
        }
    }
}

#[test]
fn domain_controller_is_refused() {
    let mut img = Img::clean();
    set(
        &mut img.system,
        &format!(r"{CCS}\Control\ProductOptions"),
        "ProductType",
        SZ,
        &sz("LanmanNT"),
    );
    let (_, _, findings) = inspect(&img.backend());
    assert_eq!(
        only(&findings, "domain-controller").severity,
        Severity::Refuse
    );

    let mut img = Img::clean();
    set(
        &mut img.system,
        &format!(r"{CCS}\Services\NTDS\Parameters"),
        "DSA Database file",
        SZ,
        &sz(r"C:\Windows\NTDS\ntds.dit"),
    );
    let (_, _, findings) = inspect(&img.backend());
    let f = only(&findings, "domain-controller");
    assert!(f.message.contains("NTDS"), "{}", f.message);
    assert!(!findings.iter().any(|f| f.id == "domain-joined"));
}

#[test]
fn domain_member_is_refused_unless_forced() {
    let mut img = Img::clean();
    set(
        &mut img.security,
        r"Policy\PolPrDmS",
        "",
        0,
        &sid_bytes(&[21, 7, 8, 9]),
    );
    set(
        &mut img.security,
        r"Policy\PolPrDmN",
        "",
        0,
        &lsa_string("CORP"),
    );
    set(
        &mut img.security,
        r"Policy\PolDnDDN",
        "",
        0,
        &lsa_string("corp.example"),
    );
    let (_, d, findings) = inspect(&img.backend());
    assert!(d.domain.joined);
    assert_eq!(d.domain.sid.as_deref(), Some("S-1-5-21-7-8-9"));
    assert_eq!(d.domain.dns_name.as_deref(), Some("corp.example"));
    let f = only(&findings, "domain-joined");
    assert_eq!(f.severity, Severity::RefuseUnlessForced);
    assert!(f.message.contains("CORP"), "{}", f.message);
    assert!(blocked(&findings, false));
    assert!(!blocked(&findings, true));
}

#[test]
fn per_user_appx_is_named() {
    let mut img = Img::clean();
    key(
        &mut img.software,
        &format!(r"{APPX}\S-1-5-21-1000-2000-3000-1001\Fabrikam.Tool_2.1.0.0_x64__zyxwvutsrqpon"),
    );
    let (_, d, findings) = inspect(&img.backend());
    assert_eq!(d.per_user_appx.len(), 1);
    let f = only(&findings, "appx-per-user");
    assert_eq!(f.severity, Severity::RefuseUnlessForced);
    assert!(
        f.message
            .contains("Fabrikam.Tool_2.1.0.0_x64__zyxwvutsrqpon"),
        "{}",
        f.message
    );
    assert!(
        f.message.contains("S-1-5-21-1000-2000-3000-1001"),
        "{}",
        f.message
    );
}

#[test]
fn pending_servicing_names_the_marker() {
    let mut img = Img::clean();
    img.file(r"Windows\WinSxS\pending.xml", b"<xml/>");
    let (_, _, findings) = inspect(&img.backend());
    let f = only(&findings, "pending-servicing");
    assert_eq!(f.severity, Severity::RefuseUnlessForced);
    assert!(f.message.contains("pending.xml"), "{}", f.message);

    let mut img = Img::clean();
    set(
        &mut img.system,
        &format!(r"{CCS}\Control\Session Manager"),
        "PendingFileRenameOperations",
        MULTI_SZ,
        &multi(&[r"\??\C:\Windows\Temp\x.tmp", ""]),
    );
    let f = only(&inspect(&img.backend()).2, "pending-servicing");
    assert!(
        f.message.contains("PendingFileRenameOperations"),
        "{}",
        f.message
    );

    // An empty PendingFileRenameOperations is not pending.
    let mut img = Img::clean();
    set(
        &mut img.system,
        &format!(r"{CCS}\Control\Session Manager"),
        "PendingFileRenameOperations",
        MULTI_SZ,
        &multi(&[]),
    );
    assert!(
        !inspect(&img.backend())
            .2
            .iter()
            .any(|f| f.id == "pending-servicing")
    );

    let mut img = Img::clean();
    key(
        &mut img.software,
        r"Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending",
    );
    let f = only(&inspect(&img.backend()).2, "pending-servicing");
    assert!(f.message.contains("RebootPending"), "{}", f.message);

    let mut img = Img::clean();
    key(
        &mut img.software,
        r"Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired",
    );
    let f = only(&inspect(&img.backend()).2, "pending-servicing");
    assert!(f.message.contains("RebootRequired"), "{}", f.message);
}

#[test]
fn sysprep_corrupt_latch() {
    let mut img = Img::clean();
    set(
        &mut img.software,
        r"Microsoft\Windows\CurrentVersion\Setup\Sysprep",
        "SysprepCorrupt",
        DWORD,
        &dword(1),
    );
    let (_, d, findings) = inspect(&img.backend());
    assert_eq!(d.generalization.sysprep_corrupt, Some(1));
    assert_eq!(
        only(&findings, "sysprep-corrupt").severity,
        Severity::RefuseUnlessForced
    );
}

#[test]
fn stale_answer_files() {
    for path in [
        r"Windows\Panther\unattend.xml",
        r"Windows\Panther\Autounattend.xml",
        r"Windows\System32\Sysprep\unattend.xml",
    ] {
        let mut img = Img::clean();
        img.file(path, b"<unattend/>");
        let (_, _, findings) = inspect(&img.backend());
        let f = only(&findings, "stale-answer-file");
        assert_eq!(f.severity, Severity::RefuseUnlessForced);
        assert!(
            f.message.to_lowercase().contains(&path.to_lowercase()),
            "{}",
            f.message
        );
    }
}

#[test]
fn unsupported_server_roles() {
    let mut img = Img::clean();
    set(
        &mut img.system,
        &format!(r"{CCS}\Control\ProductOptions"),
        "ProductType",
        SZ,
        &sz("ServerNT"),
    );
    for svc in ["CertSvc", "ADAM_Instance1", "Fax"] {
        set(
            &mut img.system,
            &format!(r"{CCS}\Services\{svc}"),
            "ImagePath",
            EXPAND_SZ,
            &sz(r"%SystemRoot%\system32\svc.exe"),
        );
    }
    // A bare key without ImagePath is not an installed service.
    key(&mut img.system, &format!(r"{CCS}\Services\adfssrv"));
    let (_, _, findings) = inspect(&img.backend());
    let f = only(&findings, "unsupported-server-role");
    assert_eq!(f.severity, Severity::RefuseUnlessForced);
    assert!(f.message.contains("CertSvc"), "{}", f.message);
    assert!(f.message.contains("ADAM_Instance1"), "{}", f.message);
    assert!(f.message.contains("Fax"), "{}", f.message);
    assert!(!f.message.contains("adfssrv"), "{}", f.message);

    // The Fax service of a client is not the Fax Server role.
    let mut img = Img::clean();
    set(
        &mut img.system,
        &format!(r"{CCS}\Services\Fax"),
        "ImagePath",
        EXPAND_SZ,
        &sz(r"%systemroot%\system32\fxssvc.exe"),
    );
    assert!(
        !inspect(&img.backend())
            .2
            .iter()
            .any(|f| f.id == "unsupported-server-role")
    );
}

#[test]
fn efs_policy() {
    let mut img = Img::clean();
    set(&mut img.security, r"Policy\PolEfDat", "", 0, &[1, 2, 3]);
    let (_, _, findings) = inspect(&img.backend());
    let f = only(&findings, "efs");
    assert_eq!(f.severity, Severity::RefuseUnlessForced);
    assert!(f.message.contains("PolEfDat"));
}

#[test]
fn already_generalized_is_info() {
    let mut img = Img::clean();
    set(
        &mut img.software,
        r"Microsoft\Windows\CurrentVersion\Setup\State",
        "ImageState",
        SZ,
        &sz("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE"),
    );
    img.file(r"Windows\System32\Sysprep\Sysprep_succeeded.tag", b"");
    let (_, d, findings) = inspect(&img.backend());
    assert!(d.generalization.sysprep_succeeded_tag);
    assert_eq!(
        only(&findings, "already-generalized").severity,
        Severity::Info
    );
    assert!(blocking(&findings).is_empty());
}

#[test]
fn ktm_flag_is_a_warning() {
    let img = Img::clean();
    let mut b = img.backend();
    let mut sys = b.read_all(r"Windows\System32\config\SYSTEM");
    sys[OFF_FLAGS] |= 1;
    store_checksum(&mut sys);
    b.insert(r"Windows\System32\config\SYSTEM", sys);
    let (_, d, findings) = inspect(&b);
    assert_eq!(d.transactions_pending, vec!["SYSTEM".to_string()]);
    assert_eq!(
        only(&findings, "ktm-transactions-pending").severity,
        Severity::Warning
    );
}

#[test]
fn odd_values_do_not_panic() {
    let mut img = Img::clean();
    // Wrong types and short data everywhere describe() looks.
    set(&mut img.system, "Select", "Current", BINARY, &[9]);
    set(&mut img.software, CV, "UBR", SZ, &sz("x"));
    set(&mut img.software, CV, "ProductName", DWORD, &dword(5));
    set(&mut img.security, r"Policy\PolAcDmS", "", 0, &[1, 9, 0]);
    set(
        &mut img.security,
        r"Policy\PolPrDmN",
        "",
        0,
        &[0xff, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff],
    );
    set(
        &mut img.sam,
        r"SAM\Domains\Account",
        "V",
        BINARY,
        &[1, 2, 3],
    );
    set(
        &mut img.sam,
        r"SAM\Domains\Account\Users\000001F4",
        "F",
        BINARY,
        &[1],
    );
    set(
        &mut img.software,
        &format!(r"{CV}\ProfileList\S-1-5-21-9"),
        "ProfileImagePath",
        DWORD,
        &dword(1),
    );
    set(
        &mut img.software,
        &format!(r"{CV}\ProfileList\S-1-5-21-10"),
        "ProfileImagePath",
        SZ,
        &sz(r"C:\..\..\etc"),
    );
    img.file(
        r"Windows\System32\Sysprep\ActionFiles\Generalize.xml",
        &[0xff, 0xfe, 0x3c],
    );
    img.file(r"Windows\Setup\State\State.ini", &[0xff, 0xfe, 0x41]);
    let (_, d, _) = inspect(&img.backend());
    // Select\Current unreadable: ControlSet001 is used.
    assert_eq!(d.current_control_set.as_deref(), Some("ControlSet001"));
    assert_eq!(d.machine_sid, None);
    assert_eq!(d.product_name, None);
    assert_eq!(d.build.as_deref(), Some("19045"));
    assert_eq!(d.accounts[0].disabled, None);
}

// ----- the real corpus --------------------------------------------------

fn corpus() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    if dir.is_dir() {
        Some(dir)
    } else {
        reseal_testkit::require(false, &format!("the shared corpus at {}", dir.display()));
        None
    }
}

fn xz(path: &Path) -> Option<Vec<u8>> {
    match Command::new("xz").arg("-dc").arg(path).output() {
        Ok(out) if out.status.success() => Some(out.stdout),
        Ok(out) => {
            reseal_testkit::require(
                false,
                &format!(
                    "a working `xz -dc {}` ({})",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                ),
            );
            None
        }
        Err(e) => {
            reseal_testkit::require(false, &format!("the command `xz` ({e})"));
            None
        }
    }
}

/// RathbunVM's SAM and SECURITY (+ logs) and regipy's SYSTEM_B (+ logs)
/// placed as one install.
fn corpus_image(with_security: bool) -> Option<MemoryBackend> {
    let c = corpus()?;
    let rathbun = c.join("DFIRArtifactMuseum/Windows/Registry/Win10/RathbunVM");
    let regipy = c.join("regipy/regipy_tests/data");
    let mut b = MemoryBackend::new();
    let cfg = r"Windows\System32\config";
    let mut names = vec!["SAM", "SAM.LOG1", "SAM.LOG2"];
    if with_security {
        names.extend(["SECURITY", "SECURITY.LOG1"]);
    }
    for name in names {
        let data = std::fs::read(rathbun.join(name)).ok()?;
        b.insert(&format!(r"{cfg}\{name}"), data);
    }
    for (src, dst) in [
        ("SYSTEM_B.xz", "SYSTEM"),
        ("SYSTEM_B.LOG1.xz", "SYSTEM.LOG1"),
        ("SYSTEM_B.LOG2.xz", "SYSTEM.LOG2"),
    ] {
        b.insert(&format!(r"{cfg}\{dst}"), xz(&regipy.join(src))?);
    }
    Some(b)
}

#[test]
fn corpus_describe_reports_real_identity() {
    let Some(b) = corpus_image(true) else { return };
    let (install, d, findings) = inspect(&b);
    // The image has no SOFTWARE: that is its only load error.
    let errors: Vec<&str> = install
        .load_errors
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(errors, vec![r"Windows\System32\config\SOFTWARE"]);

    // Verified with hivexregedit --export (PolAcDmS bytes 01 04 .. 05 15 00 00 00
    // 7e 47 83 88 4e 7a 40 27 8b 3d 22 1e) and the last 24 bytes of SAM Account V.
    assert_eq!(
        d.machine_sid.as_deref(),
        Some("S-1-5-21-2290304894-658537038-505560459")
    );
    assert_eq!(
        d.machine_sid_source.as_deref(),
        Some(r"SECURITY Policy\PolAcDmS")
    );
    // SAM Users\Names value types (hivexregedit: hex(1f4), hex(3e9), ...).
    let accounts: Vec<(&str, u32)> = d
        .accounts
        .iter()
        .map(|a| (a.name.as_str(), a.rid))
        .collect();
    assert_eq!(
        accounts,
        vec![
            ("Administrator", 500),
            ("Guest", 501),
            ("DefaultAccount", 503),
            ("WDAGUtilityAccount", 504),
            ("AndrewRathbun", 1001),
        ]
    );
    let guest = d.accounts.iter().find(|a| a.rid == 501).unwrap();
    assert_eq!(guest.disabled, Some(true)); // F control flags 0x0215
    assert_eq!(
        d.accounts.last().unwrap().sid.as_deref(),
        Some("S-1-5-21-2290304894-658537038-505560459-1001")
    );
    // Workgroup machine: PolPrDmS empty, PolPrDmN "WORKGROUP".
    assert!(!d.domain.joined);
    assert_eq!(d.domain.name.as_deref(), Some("WORKGROUP"));
    assert!(!findings.iter().any(|f| f.id == "domain-joined"));

    // SYSTEM_B (regipy, via python regipy and hivexregedit): Select\Current 1,
    // ComputerName DESKTOP-PM6C56D, ProductType WinNT, AMD64,
    // GeneralizationState 7.
    assert_eq!(d.current_control_set.as_deref(), Some("ControlSet001"));
    assert_eq!(d.computer_name.as_deref(), Some("DESKTOP-PM6C56D"));
    assert_eq!(d.product_type.as_deref(), Some("WinNT"));
    assert_eq!(d.architecture.as_deref(), Some("AMD64"));
    assert_eq!(d.generalization.generalization_state, Some(7));
    assert_eq!(d.generalization.system_setup_in_progress, Some(0));
    // Device instances at depth 3 under ControlSet001\Enum: 155 after the
    // logs are applied (regipy's apply_transaction_logs gives 155; the
    // primary file alone has 146).
    assert_eq!(d.device_instances, Some(155));
    // Its Services\NTDS is the bare client key: no domain controller.
    assert!(
        !findings.iter().any(|f| f.id == "domain-controller"),
        "{findings:#?}"
    );
    // PendingFileRenameOperations lists Config.Msi rollback files.
    assert!(
        d.pending
            .iter()
            .any(|p| p.kind == "PendingFileRenameOperations")
    );
    only(&findings, "pending-servicing");
    // SYSTEM and SECURITY were dirty and replayed.
    let replayed: Vec<&str> = d.replayed_hives.iter().map(|h| h.hive.as_str()).collect();
    assert!(replayed.contains(&"SYSTEM"), "{replayed:?}");
    assert!(replayed.contains(&"SECURITY"), "{replayed:?}");
    assert!(
        findings
            .iter()
            .any(|f| f.id == "hive-replayed" && f.severity == Severity::Info)
    );
    // The one refusal is the missing SOFTWARE.
    let refusals: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.severity == Severity::Refuse)
        .collect();
    assert_eq!(refusals.len(), 1, "{findings:#?}");
    assert!(refusals[0].message.contains(r"config\SOFTWARE"));
}

#[test]
fn corpus_machine_sid_falls_back_to_sam() {
    let Some(b) = corpus_image(false) else { return };
    let (_, d, _) = inspect(&b);
    assert_eq!(
        d.machine_sid.as_deref(),
        Some("S-1-5-21-2290304894-658537038-505560459")
    );
    assert_eq!(
        d.machine_sid_source.as_deref(),
        Some(r"SAM SAM\Domains\Account V")
    );
}

#[test]
fn corpus_dirty_security_without_logs_is_refused() {
    // Eric Zimmerman's test SECURITY hive is dirty (sequence 347/346) and
    // ships without logs.
    let Some(c) = corpus() else { return };
    let Ok(sec) = std::fs::read(c.join("EricZimmerman-Registry/Registry.Test/Hives/SECURITY"))
    else {
        reseal_testkit::require(false, "the corpus file EricZimmerman SECURITY");
        return;
    };
    let mut b = Img::clean().backend();
    b.insert(r"Windows\System32\config\SECURITY", sec);
    let (_, d, findings) = inspect(&b);
    assert_eq!(d.failed_hives.len(), 1);
    assert!(d.failed_hives[0].dirty_without_logs);
    let f = only(&findings, "dirty-hive-without-logs");
    assert!(f.message.contains("SECURITY"), "{}", f.message);
}
