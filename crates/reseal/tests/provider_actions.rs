//! `provider-actions` and `machine-secrets` on the synthetic Windows root,
//! through a full `generalize` run: the image's own declarative sysprep
//! actions (action files in the compiled format of real
//! `ActionFiles\Generalize.xml` files) are carried out, every provider
//! reseal does not emulate is reported with module, method and order,
//! `exclude="vm"` is honoured, a second run plans nothing, and the Remote
//! Desktop certificate goes with its private key. Hives are checked with
//! hivexregedit (an independent reader), files on the tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use reseal::backend::dir::DirBackend;
use reseal::context::{PlanContext, reg_sz};
use reseal::discover::{find_windows_dirs, load_install};
use reseal::generalize::generalize;
use reseal::hive::Hive;
use reseal::ops::Operation;
use reseal::ops::machine_secrets::{MachineSecrets, machine_key_prefix};
use reseal::ops::provider_actions::ProviderActions;
use reseal::options::GeneralizeOptions;
use reseal::report::{Outcome, RunReport};
use reseal_testkit::{build_windows_root, require_tool};

const SZ: u32 = 1;
const BINARY: u32 = 3;

/// The synthetic root's MachineGuid (testdata/windows-root/SOFTWARE.reg).
const MACHINE_GUID: &str = "6f1c3a52-8d2e-4b7a-9c11-0e5f2d7b9a44";

/// A Generalize.xml in the compiled action-file format (`imaging` entries
/// with `assemblyIdentity`, `sysprepOrder`, `sysprepValidate`,
/// `sysprepModule`, `registryActions`, `fileActions`), with the Defender
/// for Endpoint and WinRT management entries as published, and made-up
/// components for the remaining action kinds.
const GENERALIZE_XML: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<sysprepInformation>
  <imaging exclude="">
    <assemblyIdentity name="Microsoft-Windows-PnpSysprep" version="10.0.19041.3636" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" versionScope="nonSxS"/>
    <sysprepOrder order="0x0C00"/>
    <sysprepModule methodName="Sysprep_Generalize_Pnp" moduleName="$(runtime.system32)\sppnp.dll"/>
  </imaging>
  <imaging exclude="">
    <assemblyIdentity name="Microsoft-Windows-Sysprep-SpBcd" version="10.0.19041.3636" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" versionScope="nonSxS"/>
    <sysprepOrder order="0x0D00"/>
    <sysprepModule methodName="Sysprep_Generalize_Bcd" moduleName="$(runtime.system32)\spbcd.dll"/>
  </imaging>
  <imaging exclude="">
    <assemblyIdentity name="Microsoft-Windows-AppX-Sysprep" version="10.0.19041.1566" publicKeyToken="31bf3856ad364e35" processorArchitecture="amd64" versionScope="NonSxS"/>
    <sysprepOrder order="0x1A00"/>
    <sysprepValidate methodName="SysprepGeneralizeValidate" moduleName="$(runtime.system32)\AppxSysprep.dll"/>
    <sysprepModule methodName="SysprepGeneralize" moduleName="$(runtime.system32)\AppxSysprep.dll"/>
  </imaging>
  <imaging exclude="">
    <assemblyIdentity name="Microsoft-Windows-SenseClient-Service" version="10.0.19041.3636" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" versionScope="nonSxS"/>
    <sysprepOrder order="0x3500"/>
    <registryActions>
      <deleteValue name="senseGuid" path="HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows Advanced Threat Protection"/>
    </registryActions>
  </imaging>
  <imaging exclude="">
    <assemblyIdentity name="Microsoft-Windows-Management-Service-WinRT" version="10.0.19041.3636" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" versionScope="nonSxS"/>
    <sysprepOrder order="0x3D00"/>
    <fileActions>
      <deleteDirectory path="$(runtime.windows)\ServiceState\wmansvc"/>
    </fileActions>
    <registryActions>
      <deleteKey path="HKEY_LOCAL_MACHINE\Software\Microsoft\Provisioning\AutopilotPolicy"/>
      <deleteKey path="HKEY_LOCAL_MACHINE\Software\Microsoft\Provisioning\Diagnostics\Autopilot"/>
      <deleteValue name="41871D20A3BC1475" path="HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion\Notifications\Data"/>
    </registryActions>
  </imaging>
  <imaging exclude="vm">
    <assemblyIdentity name="Contoso-Hardware-Agent" version="1.0.0.0" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" versionScope="nonSxS"/>
    <sysprepOrder order="0x4000"/>
    <fileActions>
      <deleteDirectory path="$(runtime.programData)\Contoso\HardwareState"/>
    </fileActions>
  </imaging>
  <imaging exclude="">
    <assemblyIdentity name="Contoso-Tracing" version="1.0.0.0" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" versionScope="nonSxS"/>
    <sysprepOrder order="0x4100"/>
    <fileActions>
      <deleteFile path="$(runtime.windows)\Logs\Contoso\*.etl"/>
    </fileActions>
    <registryActions>
      <deleteKey path="HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Services\ContosoTrace\State"/>
      <deleteKey path="HKEY_CURRENT_USER\Software\Contoso\Tracing"/>
    </registryActions>
  </imaging>
  <imaging exclude="IoTUAP">
    <assemblyIdentity name="Contoso-Device-Only" version="1.0.0.0" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" versionScope="nonSxS"/>
    <sysprepOrder order="0x4200"/>
    <sysprepModule methodName="Contoso_Generalize" moduleName="$(runtime.system32)\contoso.dll"/>
    <fileActions>
      <deleteDirectory path="$(runtime.programData)\Contoso\DeviceOnly"/>
    </fileActions>
  </imaging>
</sysprepInformation>
"#;

/// A Cleanup.xml with one provider (cleanup runs before generalize).
const CLEANUP_XML: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<sysprepInformation>
  <imaging exclude="">
    <assemblyIdentity name="Microsoft-Windows-shell32" version="10.0.19041.3636" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" versionScope="nonSxS"/>
    <sysprepOrder order="0x0900"/>
    <sysprepModule methodName="Sysprep_Cleanup_Shell" moduleName="$(runtime.system32)\shsetup.dll"/>
  </imaging>
</sysprepInformation>
"#;

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel.replace('\\', "/"));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn hive_file(root: &Path, name: &str) -> PathBuf {
    root.join("Windows/System32/config").join(name)
}

/// Edits a hive of the root in place: `(key, value, type, data)` rows.
fn edit_hive(root: &Path, name: &str, rows: &[(&str, &str, u32, Vec<u8>)]) {
    let path = hive_file(root, name);
    let mut h = Hive::from_bytes(name, fs::read(&path).unwrap()).unwrap();
    for (key, value, ty, data) in rows {
        h.create_key(key).unwrap();
        h.set_value(key, value, *ty, data).unwrap();
    }
    fs::write(&path, h.to_bytes()).unwrap();
}

/// The synthetic root with the action files and provider registrations.
fn providers_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    build_windows_root(&root, None).unwrap();
    write(
        &root,
        r"Windows\System32\Sysprep\ActionFiles\Generalize.xml",
        GENERALIZE_XML.as_bytes(),
    );
    write(
        &root,
        r"Windows\System32\Sysprep\ActionFiles\Cleanup.xml",
        CLEANUP_XML.as_bytes(),
    );
    write(
        &root,
        r"ProgramData\Contoso\HardwareState\slot.bin",
        b"slot 7",
    );
    write(&root, r"ProgramData\Contoso\DeviceOnly\state.bin", b"kept");
    write(&root, r"Windows\Logs\Contoso\trace1.etl", b"etl");
    write(&root, r"Windows\Logs\Contoso\TRACE2.ETL", b"etl");
    write(&root, r"Windows\Logs\Contoso\keep.txt", b"kept");
    edit_hive(
        &root,
        "SOFTWARE",
        &[
            (
                r"Microsoft\Windows Advanced Threat Protection",
                "senseGuid",
                SZ,
                reg_sz("{0d6c3e1f-7a2b-4c5d-8e9f-a0b1c2d3e4f5}"),
            ),
            (
                r"Microsoft\Windows Advanced Threat Protection",
                "OnboardingState",
                4,
                1u32.to_le_bytes().to_vec(),
            ),
            (
                r"Microsoft\Windows\CurrentVersion\Setup\SysPrepExternal\Generalize",
                "{7c1e9f40-2a6b-4d3e-9f81-55aa0c3e7b12}",
                SZ,
                reg_sz(r"C:\WindowsAzure\VMAgentDisabler.dll,DisableVMAgent"),
            ),
            (
                r"Microsoft\Windows\CurrentVersion\Setup\Sysprep\Generalize",
                "{e1d5a2c4-5b3f-4e6a-8c7d-9f0a1b2c3d4e}",
                SZ,
                reg_sz("spbcd.dll,Sysprep_Generalize_Bcd"),
            ),
        ],
    );
    edit_hive(
        &root,
        "SYSTEM",
        &[
            (
                r"ControlSet001\Services\ContosoTrace\State",
                "Session",
                SZ,
                reg_sz("42"),
            ),
            (
                r"ControlSet002\Services\ContosoTrace\State",
                "Session",
                SZ,
                reg_sz("41"),
            ),
            (
                r"ControlSet001\Services\ContosoTrace",
                "Start",
                4,
                3u32.to_le_bytes().to_vec(),
            ),
        ],
    );
    root
}

/// The key paths and value lines of a hive as hivexregedit exports it, or
/// `None` when hivexregedit is absent (locally; fails under CI).
fn hivex_export(file: &Path) -> Option<String> {
    if !require_tool("hivexregedit") {
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
    Some(String::from_utf8(out.stdout).unwrap().to_ascii_lowercase())
}

fn has_key(export: &str, key: &str) -> bool {
    export.contains(&format!("[\\{}]", key.to_ascii_lowercase()))
}

/// The values of `key` in an export (lines up to the next key).
fn key_values(export: &str, key: &str) -> Vec<String> {
    let head = format!("[\\{}]", key.to_ascii_lowercase());
    export
        .lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn not_done(report: &RunReport) -> Vec<String> {
    report.installs[0]
        .not_done
        .iter()
        .filter(|n| n.operation == "provider-actions")
        .map(|n| n.message.clone())
        .collect()
}

fn plan_directly(root: &Path, op: &dyn Operation, options: &GeneralizeOptions) -> usize {
    let b = DirBackend::open(root).unwrap();
    let mut edits = 0;
    for dir in find_windows_dirs(&b).unwrap() {
        let install = load_install(&b, &dir);
        let ctx = PlanContext {
            install: &install,
            backend: &b,
            options,
            unattend: None,
        };
        edits += op.plan(&ctx).unwrap().edits.len();
    }
    edits
}

#[test]
fn declarative_actions_are_carried_out_and_the_rest_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = providers_root(tmp.path());
    let options = GeneralizeOptions::default();

    let mut b = DirBackend::open(&root).unwrap();
    let report = generalize(&mut b, &options).unwrap();
    assert_eq!(
        report.outcome,
        Outcome::Done,
        "{:#?}",
        report.installs[0].findings
    );
    let edits: Vec<String> = report.installs[0]
        .edits
        .iter()
        .filter(|e| e.operation == "provider-actions")
        .map(|e| format!("{:?}", e.edit))
        .collect();
    assert!(!edits.is_empty());
    // The Autopilot keys are deleted once, by `autopilot` (which covers
    // images without action files); provider-actions does not repeat it.
    let autopilot: Vec<&str> = report.installs[0]
        .edits
        .iter()
        .filter(|e| format!("{:?}", e.edit).contains("AutopilotPolicy"))
        .map(|e| e.operation)
        .collect();
    assert_eq!(autopilot, ["autopilot"]);

    // Files: the directory trees and the pattern's files are gone.
    assert!(!root.join("Windows/ServiceState/wmansvc").exists());
    assert!(!root.join("ProgramData/Contoso/HardwareState").exists());
    assert!(!root.join("Windows/Logs/Contoso/trace1.etl").exists());
    assert!(!root.join("Windows/Logs/Contoso/TRACE2.ETL").exists());
    assert!(root.join("Windows/Logs/Contoso/keep.txt").is_file());
    assert!(root.join("Windows/ServiceState").is_dir());
    // An entry excluded under an unknown condition is not carried out.
    assert!(
        root.join("ProgramData/Contoso/DeviceOnly/state.bin")
            .is_file()
    );

    // Hives, read by hivexregedit.
    if let Some(sw) = hivex_export(&hive_file(&root, "SOFTWARE")) {
        let atp = r"Microsoft\Windows Advanced Threat Protection";
        let values = key_values(&sw, atp);
        assert!(
            !values.iter().any(|l| l.starts_with("\"senseguid\"")),
            "{values:?}"
        );
        assert!(
            values.iter().any(|l| l.starts_with("\"onboardingstate\"")),
            "the neighbour value is kept: {values:?}"
        );
        assert!(!has_key(&sw, r"Microsoft\Provisioning\AutopilotPolicy"));
        // Provider registrations are left as they are (Windows needs them
        // on the next sysprep run).
        assert!(has_key(
            &sw,
            r"Microsoft\Windows\CurrentVersion\Setup\SysPrepExternal\Generalize"
        ));
    }
    if let Some(sys) = hivex_export(&hive_file(&root, "SYSTEM")) {
        for cs in ["ControlSet001", "ControlSet002"] {
            assert!(
                !has_key(&sys, &format!(r"{cs}\Services\ContosoTrace\State")),
                "{cs}: CurrentControlSet maps to every control set"
            );
        }
        assert!(has_key(&sys, r"ControlSet001\Services\ContosoTrace"));
    }

    // The report lists what was not run, with module, method and order.
    let nd = not_done(&report);
    let listed = |needle: &str| nd.iter().any(|m| m.contains(needle));
    for needle in [
        r"module $(runtime.system32)\spbcd.dll, method Sysprep_Generalize_Bcd, order 0x0D00",
        r"module $(runtime.system32)\AppxSysprep.dll, method SysprepGeneralize, order 0x1A00",
        r"module $(runtime.system32)\shsetup.dll, method Sysprep_Cleanup_Shell, order 0x0900",
        r"module C:\WindowsAzure\VMAgentDisabler.dll, method DisableVMAgent, order #1",
        "module spbcd.dll, method Sysprep_Generalize_Bcd, order #1",
        r"HKEY_CURRENT_USER\\Software\\Contoso\\Tracing",
        r#"exclude="IoTUAP""#,
        r"module $(runtime.system32)\contoso.dll, method Contoso_Generalize",
    ] {
        assert!(listed(needle), "{needle:?} is not reported in {nd:#?}");
    }
    assert!(
        nd.iter()
            .any(|m| m.starts_with("third-party") && m.contains("VMAgentDisabler")),
        "{nd:#?}"
    );
    // Emulated ones are not listed.
    for quiet in ["Sysprep_Generalize_Pnp", "SysprepGeneralizeValidate"] {
        assert!(!listed(quiet), "{quiet} is emulated: {nd:#?}");
    }
    // Nothing declarative is reported except the HKCU action.
    let declarative: Vec<&String> = nd.iter().filter(|m| m.starts_with("declarative")).collect();
    assert_eq!(declarative.len(), 1, "{declarative:#?}");

    // A second run plans nothing, and the operation asked directly plans
    // no edit on the result.
    let mut b = DirBackend::open(&root).unwrap();
    let again = generalize(&mut b, &options).unwrap();
    assert_eq!(again.outcome, Outcome::NothingToDo);
    assert_eq!(plan_directly(&root, &ProviderActions, &options), 0);
}

#[test]
fn mode_vm_honours_the_exclusion() {
    let tmp = tempfile::tempdir().unwrap();
    let root = providers_root(tmp.path());
    let options = GeneralizeOptions {
        vm: true,
        ..Default::default()
    };
    let mut b = DirBackend::open(&root).unwrap();
    let report = generalize(&mut b, &options).unwrap();
    assert_eq!(report.outcome, Outcome::Done);
    // The vm-excluded entry is left alone; the others are carried out.
    assert!(
        root.join("ProgramData/Contoso/HardwareState/slot.bin")
            .is_file()
    );
    assert!(!root.join("Windows/ServiceState/wmansvc").exists());
    assert!(!root.join("Windows/Logs/Contoso/trace1.etl").exists());
    let nd = not_done(&report);
    assert!(
        !nd.iter().any(|m| m.contains("Contoso-Hardware-Agent")),
        "{nd:#?}"
    );
    assert_eq!(plan_directly(&root, &ProviderActions, &options), 0);
    // Without --mode vm the same entry is planned.
    assert!(plan_directly(&root, &ProviderActions, &GeneralizeOptions::default()) > 0);
}

#[test]
fn disabling_an_emulating_operation_lists_its_provider() {
    let tmp = tempfile::tempdir().unwrap();
    let root = providers_root(tmp.path());
    let mut options = GeneralizeOptions {
        dry_run: true,
        ..Default::default()
    };
    options.selection.disable = vec!["devices".into()];
    let mut b = DirBackend::open(&root).unwrap();
    let report = generalize(&mut b, &options).unwrap();
    let nd = not_done(&report);
    assert!(
        nd.iter()
            .any(|m| m.contains("Sysprep_Generalize_Pnp") && m.contains("disabled")),
        "{nd:#?}"
    );

    // With `autopilot` disabled, the action file's own entry deletes its keys.
    options.selection.disable = vec!["autopilot".into()];
    let report = generalize(&mut b, &options).unwrap();
    let by_provider_actions = report.installs[0].edits.iter().any(|e| {
        e.operation == "provider-actions" && format!("{:?}", e.edit).contains("AutopilotPolicy")
    });
    assert!(by_provider_actions, "{:#?}", report.installs[0].edits);
}

/// A serialized certificate element as the registry store keeps it in
/// `Blob`: a hash property, the key provider information (property 2) and
/// a placeholder certificate (property 32).
fn certificate_blob(container: &str) -> Vec<u8> {
    let utf16z = |s: &str| -> Vec<u8> {
        s.encode_utf16()
            .chain([0])
            .flat_map(u16::to_le_bytes)
            .collect()
    };
    let c = utf16z(container);
    let p = utf16z("Microsoft Enhanced RSA and AES Cryptographic Provider");
    let mut info = Vec::new();
    let c_off = 28u32;
    let p_off = c_off + c.len() as u32;
    for n in [c_off, p_off, 24, 0x20, 0, 0, 1] {
        info.extend(n.to_le_bytes());
    }
    info.extend(c);
    info.extend(p);
    let mut blob = Vec::new();
    for (id, data) in [
        (3u32, vec![0x5a; 20]),
        (2, info),
        (32, vec![0x30, 0x82, 0, 0]),
    ] {
        blob.extend(id.to_le_bytes());
        blob.extend(1u32.to_le_bytes());
        blob.extend((data.len() as u32).to_le_bytes());
        blob.extend(data);
    }
    blob
}

#[test]
fn remote_desktop_certificate_goes_with_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    build_windows_root(&root, None).unwrap();
    let thumb = "3F2A9C1B7E6D5A4B3C2D1E0F9A8B7C6D5E4F3A2B";
    let store = r"Microsoft\SystemCertificates\Remote Desktop\Certificates";
    edit_hive(
        &root,
        "SOFTWARE",
        &[
            (
                &format!(r"{store}\{thumb}"),
                "Blob",
                BINARY,
                certificate_blob("TSSecKeySet1"),
            ),
            (
                r"Microsoft\Windows\CurrentVersion\WSMAN\Listener\*+HTTPS",
                "CertThumbprint",
                SZ,
                reg_sz("AB12CD34"),
            ),
            (
                r"Microsoft\Windows\CurrentVersion\WSMAN\Listener\*+HTTP",
                "Port",
                SZ,
                reg_sz("5985"),
            ),
            (
                r"Microsoft\MSDTC",
                "AllowOnlySecureRpcCalls",
                4,
                vec![1, 0, 0, 0],
            ),
            (
                r"Microsoft\Microsoft SQL Server\Instance Names\SQL",
                "MSSQLSERVER",
                SZ,
                reg_sz("MSSQL16.MSSQLSERVER"),
            ),
        ],
    );
    let keys = "ProgramData/Microsoft/Crypto/RSA/MachineKeys";
    let rdp_key = format!("{}_{MACHINE_GUID}", machine_key_prefix("TSSecKeySet1"));
    assert!(rdp_key.starts_with("f686aace6942fb7f7ceb231212eef4a4_"));
    let other = format!("0123456789abcdef0123456789abcdef_{MACHINE_GUID}");
    let foreign = "fedcba98765432100123456789abcdef_00000000-1111-2222-3333-444444444444";
    for f in [&rdp_key, &other, &foreign.to_string()] {
        write(&root, &format!("{keys}/{f}"), b"RSA1 key material");
    }

    let mut b = DirBackend::open(&root).unwrap();
    let report = generalize(&mut b, &GeneralizeOptions::default()).unwrap();
    assert_eq!(report.outcome, Outcome::Done);
    assert!(
        !root.join(keys).join(&rdp_key).exists(),
        "the RDP key is deleted"
    );
    assert!(root.join(keys).join(&other).is_file());
    assert!(root.join(keys).join(foreign).is_file());
    if let Some(sw) = hivex_export(&hive_file(&root, "SOFTWARE")) {
        assert!(!has_key(&sw, &format!(r"{store}\{thumb}")));
        assert!(has_key(&sw, store), "the store itself stays");
    }
    let nd: Vec<String> = report.installs[0]
        .not_done
        .iter()
        .filter(|n| n.operation == "machine-secrets")
        .map(|n| n.message.clone())
        .collect();
    for needle in [
        "0123456789abcdef0123456789abcdef_",
        "WinRM HTTPS listener \"*+HTTPS\"",
        "AB12CD34",
        "MSDTC",
        "MSSQLSERVER",
    ] {
        assert!(
            nd.iter().any(|m| m.contains(needle)),
            "{needle:?} not reported: {nd:#?}"
        );
    }
    assert!(!nd.iter().any(|m| m.contains("\"*+HTTP\"")), "{nd:#?}");
    assert!(!nd.iter().any(|m| m.contains(foreign)), "{nd:#?}");
    assert_eq!(
        plan_directly(&root, &MachineSecrets, &GeneralizeOptions::default()),
        0
    );
}
