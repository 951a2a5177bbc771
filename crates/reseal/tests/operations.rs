//! Behaviour of the generalize operations (planners) and of the answer-file
//! parser, on small synthetic installs held in memory.

use std::collections::BTreeMap;

use reseal::backend::memory::MemoryBackend;
use reseal::backend::{Backend, FileChange};
use reseal::context::{PlanContext, reg_sz};
use reseal::edit::{Edit, FileEdit, PlannedEdit, RegEdit};
use reseal::hive::Hive;
use reseal::hives::{self, HiveId};
use reseal::install::WindowsInstall;
use reseal::ops::{self, Operation, Plan};
use reseal::options::{GeneralizeOptions, Mode};
use reseal::unattend::{REDACTED, Unattend};
use reseal::{ResealError, hive};

const SZ: u32 = 1;
const BINARY: u32 = 3;
const DWORD: u32 = 4;

fn sz(s: &str) -> Vec<u8> {
    reg_sz(s)
}

fn dw(n: u32) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

/// A hive builder: `(key, value name, type, data)` rows; `None` name only
/// creates the key.
fn build_hive(name: &str, rows: &[(&str, Option<&str>, u32, Vec<u8>)]) -> Vec<u8> {
    let mut h = Hive::create(name, 5, "ROOT").unwrap();
    for (key, value, ty, data) in rows {
        h.create_key(key).unwrap();
        if let Some(v) = value {
            h.set_value(key, v, *ty, data).unwrap();
        }
    }
    h.to_bytes()
}

fn hive_path(id: &HiveId) -> String {
    let file = HiveId::MACHINE
        .iter()
        .find(|(h, _)| h == id)
        .map(|(_, f)| *f)
        .unwrap();
    format!(r"Windows\System32\config\{file}")
}

struct Image {
    backend: MemoryBackend,
}

impl Image {
    fn new() -> Image {
        Image {
            backend: MemoryBackend::new(),
        }
    }

    fn hive(mut self, id: HiveId, rows: &[(&str, Option<&str>, u32, Vec<u8>)]) -> Image {
        let path = hive_path(&id);
        self.backend.insert(&path, build_hive(&path, rows));
        self
    }

    fn file(mut self, path: &str, data: &[u8]) -> Image {
        self.backend.insert(path, data.to_vec());
        self
    }

    fn install(&self) -> WindowsInstall {
        let mut loaded = Vec::new();
        for (id, _) in HiveId::MACHINE {
            let path = hive_path(&id);
            if self.backend.exists(&path) {
                loaded.push(hives::load(&self.backend, id, &path).unwrap());
            }
        }
        WindowsInstall {
            windows_dir: "Windows".into(),
            hives: loaded,
            load_errors: Vec::new(),
        }
    }

    fn plan(
        &self,
        op: &dyn Operation,
        opts: &GeneralizeOptions,
        unattend: Option<&Unattend>,
    ) -> Plan {
        let install = self.install();
        let ctx = PlanContext {
            install: &install,
            backend: &self.backend,
            options: opts,
            unattend,
        };
        op.plan(&ctx).unwrap()
    }

    /// Applies edits with the hive API and commits file edits.
    fn apply(&mut self, edits: &[PlannedEdit]) {
        let mut hives: BTreeMap<String, Hive> = BTreeMap::new();
        let mut files = Vec::new();
        for e in edits {
            match &e.edit {
                Edit::Registry { hive, change } => {
                    let path = hive_path(hive);
                    let h = hives.entry(path.clone()).or_insert_with(|| {
                        Hive::from_bytes(&path, self.backend.read(&path).unwrap()).unwrap()
                    });
                    match change {
                        RegEdit::SetValue {
                            key,
                            name,
                            value_type,
                            data,
                            ..
                        } => {
                            h.create_key(key).unwrap();
                            h.set_value(key, name, *value_type, data).unwrap();
                        }
                        RegEdit::DeleteValue { key, name } => h.delete_value(key, name).unwrap(),
                        RegEdit::DeleteKey { key } => h.delete_key(key).unwrap(),
                        RegEdit::CreateKey { key } => {
                            h.create_key(key).unwrap();
                        }
                        RegEdit::RenameKey { key, new_name } => {
                            h.rename_key(key, new_name).unwrap();
                        }
                        RegEdit::RewriteSid { .. } => reseal::apply::apply_reg(h, change).unwrap(),
                    }
                }
                Edit::File { change } => files.push(match change {
                    FileEdit::Write { path, data, .. } => FileChange::Write {
                        path: path.clone(),
                        data: data.clone(),
                    },
                    FileEdit::Delete { path } => FileChange::Delete { path: path.clone() },
                    FileEdit::DeleteTree { path } => FileChange::DeleteTree { path: path.clone() },
                    FileEdit::Rename { from, to } => FileChange::Rename {
                        from: from.clone(),
                        to: to.clone(),
                    },
                }),
            }
        }
        for (path, h) in hives {
            assert_eq!(h.check().errors().count(), 0, "{path} fails the checker");
            self.backend.insert(&path, h.to_bytes());
        }
        self.backend.commit(&files).unwrap();
    }

    /// Plans, applies, plans again: the second plan must be empty.
    fn run_twice(
        &mut self,
        op: &dyn Operation,
        opts: &GeneralizeOptions,
        unattend: Option<&Unattend>,
    ) -> Plan {
        let first = self.plan(op, opts, unattend);
        self.apply(&first.edits);
        let second = self.plan(op, opts, unattend);
        assert!(
            second.edits.is_empty(),
            "{}: second run planned {:#?}",
            op.name(),
            second.edits
        );
        first
    }
}

fn op(name: &str) -> Box<dyn Operation> {
    ops::all().into_iter().find(|o| o.name() == name).unwrap()
}

fn oobe() -> GeneralizeOptions {
    GeneralizeOptions::default()
}

fn audit() -> GeneralizeOptions {
    GeneralizeOptions {
        mode: Mode::Audit,
        ..GeneralizeOptions::default()
    }
}

/// A compact form of registry edits: (hive, action, key, value, data).
fn reg_edits(plan: &Plan) -> Vec<(HiveId, &'static str, String, String, Vec<u8>)> {
    plan.edits
        .iter()
        .filter_map(|e| match &e.edit {
            Edit::Registry { hive, change } => Some(match change {
                RegEdit::SetValue {
                    key, name, data, ..
                } => (hive.clone(), "set", key.clone(), name.clone(), data.clone()),
                RegEdit::DeleteValue { key, name } => (
                    hive.clone(),
                    "delete_value",
                    key.clone(),
                    name.clone(),
                    Vec::new(),
                ),
                RegEdit::DeleteKey { key } => (
                    hive.clone(),
                    "delete_key",
                    key.clone(),
                    String::new(),
                    Vec::new(),
                ),
                other => panic!("unexpected {other:?}"),
            }),
            Edit::File { .. } => None,
        })
        .collect()
}

/// File edits: (action, path, data).
fn file_edits(plan: &Plan) -> Vec<(&'static str, String, Vec<u8>)> {
    plan.edits
        .iter()
        .filter_map(|e| match &e.edit {
            Edit::File { change } => Some(match change {
                FileEdit::Write { path, data, .. } => ("write", path.clone(), data.clone()),
                FileEdit::Delete { path } => ("delete", path.clone(), Vec::new()),
                FileEdit::DeleteTree { path } => ("delete_tree", path.clone(), Vec::new()),
                FileEdit::Rename { from, to } => ("rename", from.clone(), to.clone().into_bytes()),
            }),
            Edit::Registry { .. } => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Registry of operations

#[test]
fn all_operations_are_registered_with_stable_names() {
    let names: Vec<&str> = ops::all().iter().map(|o| o.name()).collect();
    for n in [
        "markers",
        "answer-file",
        "identities",
        "leftovers",
        "autopilot",
        "administrator",
        "activation",
    ] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(
        names.last(),
        Some(&"markers"),
        "markers must be planned last"
    );
    for o in ops::all() {
        assert!(o.default_enabled(), "{}", o.name());
        assert!(!o.description().is_empty());
    }
}

// ---------------------------------------------------------------------------
// markers

fn specialized_image() -> Image {
    Image::new()
        .hive(
            HiveId::Software,
            &[
                (
                    r"Microsoft\Windows\CurrentVersion\Setup\State",
                    Some("ImageState"),
                    SZ,
                    sz("IMAGE_STATE_COMPLETE"),
                ),
                (
                    r"Microsoft\Windows\CurrentVersion\Setup\Sysprep",
                    Some("SysprepCorrupt"),
                    DWORD,
                    dw(1),
                ),
            ],
        )
        .hive(
            HiveId::System,
            &[
                ("Select", Some("Current"), DWORD, dw(1)),
                ("ControlSet001", None, 0, Vec::new()),
                ("Setup", Some("CmdLine"), SZ, sz("")),
                ("Setup", Some("SetupType"), DWORD, dw(0)),
                ("Setup", Some("SystemSetupInProgress"), DWORD, dw(0)),
                ("Setup", Some("OOBEInProgress"), DWORD, dw(0)),
                (
                    r"Setup\Status\SysprepStatus",
                    Some("GeneralizationState"),
                    DWORD,
                    dw(7),
                ),
            ],
        )
        .file(
            r"Windows\Setup\State\State.ini",
            b"[State]\r\nImageState=IMAGE_STATE_COMPLETE\r\n",
        )
}

#[test]
fn markers_oobe_plans_exactly_the_changes() {
    let mut img = specialized_image();
    let markers = op("markers");
    let plan = img.run_twice(markers.as_ref(), &oobe(), None);
    let state = r"Microsoft\Windows\CurrentVersion\Setup\State".to_string();
    assert_eq!(
        reg_edits(&plan),
        vec![
            (
                HiveId::Software,
                "set",
                state,
                "ImageState".into(),
                sz("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE")
            ),
            (
                HiveId::Software,
                "delete_value",
                r"Microsoft\Windows\CurrentVersion\Setup\Sysprep".into(),
                "SysprepCorrupt".into(),
                vec![]
            ),
            (
                HiveId::System,
                "set",
                "Setup".into(),
                "CmdLine".into(),
                sz(r"oobe\windeploy.exe")
            ),
            (
                HiveId::System,
                "set",
                "Setup".into(),
                "SetupType".into(),
                dw(2)
            ),
            (
                HiveId::System,
                "set",
                "Setup".into(),
                "SystemSetupInProgress".into(),
                dw(1)
            ),
            (
                HiveId::System,
                "set",
                "Setup".into(),
                "OOBEInProgress".into(),
                dw(1)
            ),
            // GeneralizationState was already 7: not planned.
            (
                HiveId::System,
                "set",
                r"Setup\Status\SysprepStatus".into(),
                "CleanupState".into(),
                dw(2)
            ),
        ]
    );
    assert_eq!(
        file_edits(&plan),
        vec![
            (
                "write",
                r"Windows\Setup\State\State.ini".into(),
                b"[State]\r\nImageState=\"IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE\"\r\n".to_vec()
            ),
            (
                "write",
                r"Windows\System32\Sysprep\Sysprep_succeeded.tag".into(),
                vec![]
            ),
        ]
    );
    assert!(plan.not_done.is_empty());
}

#[test]
fn markers_audit_differs_in_image_state_and_oobe_flag() {
    let mut img = specialized_image();
    let markers = op("markers");
    let plan = img.run_twice(markers.as_ref(), &audit(), None);
    let regs = reg_edits(&plan);
    assert!(regs.contains(&(
        HiveId::Software,
        "set",
        r"Microsoft\Windows\CurrentVersion\Setup\State".into(),
        "ImageState".into(),
        sz("IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT"),
    )));
    assert!(
        !regs.iter().any(|r| r.3 == "OOBEInProgress"),
        "audit leaves OOBEInProgress alone"
    );
    assert!(regs.iter().any(|r| r.3 == "SetupType" && r.4 == dw(2)));
    let ini = img.backend.read(r"Windows\Setup\State\State.ini").unwrap();
    assert_eq!(
        ini,
        b"[State]\r\nImageState=\"IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT\"\r\n"
    );
    // Switching the same image to /oobe afterwards changes only the mode
    // markers.
    let again = img.plan(markers.as_ref(), &oobe(), None);
    let names: Vec<String> = reg_edits(&again).into_iter().map(|r| r.3).collect();
    assert_eq!(names, vec!["ImageState", "OOBEInProgress"]);
    assert_eq!(file_edits(&again).len(), 1);
}

#[test]
fn markers_keep_state_ini_encoding_and_other_lines() {
    let text = "[State]\r\nImageState=\"IMAGE_STATE_COMPLETE\"\r\n[Other]\r\nX=1\r\n";
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let mut img = specialized_image().file(r"Windows\Setup\State\State.ini", &utf16);
    let markers = op("markers");
    img.run_twice(markers.as_ref(), &oobe(), None);
    let written = img.backend.read(r"Windows\Setup\State\State.ini").unwrap();
    assert_eq!(&written[..2], &[0xFF, 0xFE]);
    let units: Vec<u16> = written[2..]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(
        String::from_utf16(&units).unwrap(),
        "[State]\r\nImageState=\"IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE\"\r\n[Other]\r\nX=1\r\n"
    );
}

#[test]
fn markers_without_hives_report_not_done() {
    let img = Image::new();
    let plan = img.plan(op("markers").as_ref(), &oobe(), None);
    assert_eq!(plan.not_done.len(), 2);
    // The files are still planned.
    assert_eq!(file_edits(&plan).len(), 2);
}

// ---------------------------------------------------------------------------
// answer-file

const ANSWER: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<unattend xmlns="urn:schemas-microsoft-com:unattend" xmlns:wcm="http://schemas.microsoft.com/WMIConfig/2002/State">
  <settings pass="generalize">
    <component name="Microsoft-Windows-PnpSysprep" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <PersistAllDeviceInstalls>true</PersistAllDeviceInstalls>
    </component>
    <component name="Microsoft-Windows-Security-SPP" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <SkipRearm>1</SkipRearm>
    </component>
  </settings>
  <settings pass="specialize">
    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <ComputerName>CLONE-07</ComputerName>
    </component>
    <component name="Microsoft-Windows-UnattendedJoin" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <Identification>
        <Credentials>
          <Domain>corp</Domain>
          <Password>J0inS3cret!</Password>
          <Username>joiner</Username>
        </Credentials>
      </Identification>
    </component>
  </settings>
  <settings pass="oobeSystem">
    <component name="Microsoft-Windows-Shell-Setup" processorArchitecture="amd64" publicKeyToken="31bf3856ad364e35" language="neutral" versionScope="nonSxS">
      <UserAccounts>
        <AdministratorPassword>
          <Value>Adm1nS3cret!</Value>
          <PlainText>true</PlainText>
        </AdministratorPassword>
        <LocalAccounts>
          <LocalAccount wcm:action="add">
            <Password>
              <Value><![CDATA[L0cal&S3cret]]></Value>
              <PlainText>true</PlainText>
            </Password>
            <Name>user</Name>
          </LocalAccount>
        </LocalAccounts>
      </UserAccounts>
      <AutoLogon>
        <Password>
          <Value>Aut0&amp;S3cret</Value>
          <PlainText>true</PlainText>
        </Password>
        <Username>Administrator</Username>
        <Enabled>true</Enabled>
      </AutoLogon>
    </component>
  </settings>
</unattend>
"#;

const SECRETS: [&str; 5] = [
    "J0inS3cret",
    "Adm1nS3cret",
    "L0cal&S3cret",
    "Aut0&amp;S3cret",
    "Aut0&S3cret",
];

#[test]
fn unattend_settings_are_read() {
    let u = Unattend::parse("unattend.xml", ANSWER.as_bytes()).unwrap();
    assert_eq!(u.name, "unattend.xml");
    assert_eq!(u.bytes, ANSWER.as_bytes());
    assert_eq!(u.persist_all_device_installs, Some(true));
    assert_eq!(u.skip_rearm, Some(true));
    assert_eq!(u.computer_name.as_deref(), Some("CLONE-07"));
    assert!(u.has_passwords);

    let minimal = r#"<unattend xmlns="urn:schemas-microsoft-com:unattend"><settings pass="generalize"><component name="Microsoft-Windows-PnpSysprep"><PersistAllDeviceInstalls>false</PersistAllDeviceInstalls></component></settings></unattend>"#;
    let u = Unattend::parse("m.xml", minimal.as_bytes()).unwrap();
    assert_eq!(u.persist_all_device_installs, Some(false));
    assert_eq!(u.skip_rearm, None);
    assert_eq!(u.computer_name, None);
    assert!(!u.has_passwords);
    assert_eq!(u.redacted(), minimal);
}

#[test]
fn unattend_settings_only_count_in_their_pass() {
    let wrong_pass = r#"<unattend xmlns="urn:schemas-microsoft-com:unattend"><settings pass="specialize"><component name="Microsoft-Windows-Security-SPP"><SkipRearm>1</SkipRearm></component></settings></unattend>"#;
    let u = Unattend::parse("w.xml", wrong_pass.as_bytes()).unwrap();
    assert_eq!(u.skip_rearm, None);
}

#[test]
fn unattend_utf16_with_bom() {
    for le in [true, false] {
        let mut bytes = if le {
            vec![0xFF, 0xFE]
        } else {
            vec![0xFE, 0xFF]
        };
        for u in ANSWER.replace("utf-8", "utf-16").encode_utf16() {
            bytes.extend(if le { u.to_le_bytes() } else { u.to_be_bytes() });
        }
        let u = Unattend::parse("u16.xml", &bytes).unwrap();
        assert_eq!(u.skip_rearm, Some(true));
        assert_eq!(u.computer_name.as_deref(), Some("CLONE-07"));
        let r = u.redacted();
        for s in SECRETS {
            assert!(!r.contains(s), "{s} in redacted UTF-16 file");
        }
    }
    // UTF-8 with BOM.
    let mut bytes = vec![0xEF, 0xBB, 0xBF];
    bytes.extend_from_slice(ANSWER.as_bytes());
    assert!(Unattend::parse("bom.xml", &bytes).is_ok());
}

fn invalid_message(r: Result<Unattend, ResealError>) -> (String, String) {
    match r {
        Err(ResealError::InvalidInput { what, message }) => (what, message),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[test]
fn unattend_errors_name_the_file_and_position() {
    let (what, msg) = invalid_message(Unattend::parse(
        "broken.xml",
        b"<unattend>\n  <settings pass=\"generalize\">\n  </setting>\n</unattend>\n",
    ));
    assert_eq!(what, "broken.xml");
    assert!(msg.starts_with("line 3, column"), "{msg}");
    assert!(msg.contains("expected"), "{msg}");

    let (_, msg) = invalid_message(Unattend::parse(
        "root.xml",
        b"<?xml version=\"1.0\"?>\n<answers/>",
    ));
    assert!(msg.starts_with("line 2, column 1"), "{msg}");
    assert!(msg.contains("expected <unattend"), "{msg}");

    let bad_value = "<unattend>\n<settings pass=\"generalize\">\n<component name=\"Microsoft-Windows-Security-SPP\">\n    <SkipRearm>yes</SkipRearm>\n</component></settings></unattend>";
    let (_, msg) = invalid_message(Unattend::parse("v.xml", bad_value.as_bytes()));
    assert!(msg.starts_with("line 4, column 5"), "{msg}");
    assert!(msg.contains("expected 0 or 1"), "{msg}");

    let (_, msg) = invalid_message(Unattend::parse("bin.xml", &[0x3C, 0x00, 0x75, 0x00, 0xFF]));
    assert!(msg.contains("UTF-8"), "{msg}");
    let (_, msg) = invalid_message(Unattend::parse("odd.xml", &[0xFF, 0xFE, 0x3C]));
    assert!(msg.contains("even length"), "{msg}");
    let (_, msg) = invalid_message(Unattend::parse("empty.xml", b""));
    assert!(msg.contains("line 1"), "{msg}");
    let (_, msg) = invalid_message(Unattend::parse(
        "dtd.xml",
        b"<!DOCTYPE unattend [<!ENTITY p \"x\">]><unattend>&p;</unattend>",
    ));
    assert!(msg.contains("line 1"), "{msg}");
}

#[test]
fn unattend_passwords_never_shown() {
    let u = Unattend::parse("unattend.xml", ANSWER.as_bytes()).unwrap();
    let r = u.redacted();
    for s in SECRETS {
        assert!(!r.contains(s), "{s} in redacted()");
    }
    assert_eq!(r.matches(REDACTED).count(), 4, "{r}");
    assert!(r.contains("<Value>*****</Value>"));
    assert!(r.contains("<Password>*****</Password>"));
    assert!(
        r.contains("<Username>joiner</Username>"),
        "non-secrets are kept"
    );
    let dbg = format!("{u:?}");
    for s in SECRETS {
        assert!(!dbg.contains(s), "{s} in Debug");
    }

    // Edits planned from it carry no password text in Debug or JSON.
    let img = Image::new();
    let plan = img.plan(op("answer-file").as_ref(), &oobe(), Some(&u));
    assert_eq!(plan.edits.len(), 1);
    let json = serde_json::to_string(&plan.edits).unwrap();
    let dbg = format!("{:?}", plan.edits);
    for s in SECRETS {
        assert!(!json.contains(s), "{s} in JSON");
        assert!(!dbg.contains(s), "{s} in Debug");
    }
}

#[test]
fn answer_file_is_written_and_idempotent() {
    let u = Unattend::parse("my answers.xml", ANSWER.as_bytes()).unwrap();
    let mut img = Image::new().hive(
        HiveId::System,
        &[(
            "Setup",
            Some("UnattendFile"),
            SZ,
            sz(r"D:\old\unattend.xml"),
        )],
    );
    let plan = img.run_twice(op("answer-file").as_ref(), &oobe(), Some(&u));
    assert_eq!(
        file_edits(&plan),
        vec![(
            "write",
            r"Windows\Panther\unattend.xml".into(),
            ANSWER.as_bytes().to_vec()
        )]
    );
    assert_eq!(
        reg_edits(&plan),
        vec![(
            HiveId::System,
            "delete_value",
            "Setup".into(),
            "UnattendFile".into(),
            vec![]
        )]
    );
    assert!(plan.not_done.is_empty());

    // A pointer to the Panther copy is kept; no answer file, no edits.
    let img = Image::new().hive(
        HiveId::System,
        &[(
            "Setup",
            Some("UnattendFile"),
            SZ,
            sz(r"C:\Windows\Panther\Unattend.xml"),
        )],
    );
    let plan = img.plan(op("answer-file").as_ref(), &oobe(), Some(&u));
    assert!(reg_edits(&plan).is_empty());
    let plan = img.plan(op("answer-file").as_ref(), &oobe(), None);
    assert!(plan.edits.is_empty() && plan.not_done.is_empty());
}

// ---------------------------------------------------------------------------
// identities

fn identity_image() -> Image {
    let cs = "ControlSet001";
    let ifv4 = format!(
        r"{cs}\Services\Tcpip\Parameters\Interfaces\{{11111111-2222-3333-4444-555555555555}}"
    );
    let ifv4_net = format!(r"{ifv4}\{{aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee}}");
    let ifv6 = format!(
        r"{cs}\Services\Tcpip6\Parameters\Interfaces\{{11111111-2222-3333-4444-555555555555}}"
    );
    let nl = r"Microsoft\Windows NT\CurrentVersion\NetworkList";
    Image::new()
        .hive(
            HiveId::Software,
            &[
                (
                    r"Microsoft\Cryptography",
                    Some("MachineGuid"),
                    SZ,
                    sz("0f0e0d0c-0000-1111-2222-333344445555"),
                ),
                (r"Microsoft\SQMClient", Some("MachineId"), SZ, sz("{AAAA}")),
                (r"Microsoft\SQMClient", Some("Other"), DWORD, dw(1)),
                (
                    r"Microsoft\Windows\CurrentVersion\WindowsUpdate",
                    Some("SusClientId"),
                    SZ,
                    sz("id"),
                ),
                (
                    r"Microsoft\Windows\CurrentVersion\WindowsUpdate",
                    Some("SusClientIDValidation"),
                    BINARY,
                    vec![1, 2],
                ),
                (
                    r"Microsoft\Windows\CurrentVersion\WindowsUpdate",
                    Some("PingID"),
                    SZ,
                    sz("p"),
                ),
                (
                    &format!(r"{nl}\Profiles\{{P1}}"),
                    Some("ProfileName"),
                    SZ,
                    sz("Network"),
                ),
                (
                    &format!(r"{nl}\Signatures\Unmanaged\0102"),
                    Some("ProfileGuid"),
                    SZ,
                    sz("{P1}"),
                ),
                (&format!(r"{nl}\Signatures\Managed"), None, 0, vec![]),
                (
                    &format!(r"{nl}\Nla\Cache\Intranet"),
                    Some("x"),
                    DWORD,
                    dw(1),
                ),
            ],
        )
        .hive(
            HiveId::System,
            &[
                ("Select", Some("Current"), DWORD, dw(1)),
                (
                    r"ControlSet001\Services\Tcpip6\Parameters",
                    Some("Dhcpv6DUID"),
                    BINARY,
                    vec![0, 1, 0, 1, 9, 9],
                ),
                (
                    r"ControlSet002\Services\Tcpip6\Parameters",
                    Some("Dhcpv6DUID"),
                    BINARY,
                    vec![0, 1],
                ),
                (&ifv4, Some("DhcpIPAddress"), SZ, sz("10.0.0.5")),
                (&ifv4, Some("LeaseObtainedTime"), DWORD, dw(5)),
                (&ifv4, Some("EnableDHCP"), DWORD, dw(1)),
                (&ifv4_net, Some("DhcpServer"), SZ, sz("10.0.0.1")),
                (&ifv6, Some("Dhcpv6Iaid"), DWORD, dw(7)),
                (&ifv6, Some("Dhcpv6DNSServers"), SZ, sz("fe80::1")),
                (
                    r"ControlSet001\Control\ComputerName\ComputerName",
                    Some("ComputerName"),
                    SZ,
                    sz("GOLDEN"),
                ),
                (
                    r"ControlSet001\Services\Tcpip\Parameters",
                    Some("Hostname"),
                    SZ,
                    sz("golden"),
                ),
                (
                    r"ControlSet001\Services\Tcpip\Parameters",
                    Some("NV Hostname"),
                    SZ,
                    sz("golden"),
                ),
                (
                    "MountedDevices",
                    Some(r"\DosDevices\C:"),
                    BINARY,
                    vec![1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0],
                ),
                (
                    "MountedDevices",
                    Some(r"\??\Volume{01234567-89ab-cdef-0123-456789abcdef}"),
                    BINARY,
                    vec![5],
                ),
                ("MountedDevices", Some("Other"), BINARY, vec![6]),
                ("RNG", Some("Seed"), BINARY, vec![7; 16]),
                ("RNG", Some("ExternalEntropy"), BINARY, vec![8; 16]),
            ],
        )
}

#[test]
fn identities_plans_exactly_the_changes() {
    let mut img = identity_image();
    let plan = img.run_twice(op("identities").as_ref(), &oobe(), None);
    let nl = r"Microsoft\Windows NT\CurrentVersion\NetworkList";
    let ifv4 = r"ControlSet001\Services\Tcpip\Parameters\Interfaces\{11111111-2222-3333-4444-555555555555}";
    let ifv6 = r"ControlSet001\Services\Tcpip6\Parameters\Interfaces\{11111111-2222-3333-4444-555555555555}";
    let name = sz("WIN-GENERALIZED");
    let sw = HiveId::Software;
    let sys = HiveId::System;
    let wu = r"Microsoft\Windows\CurrentVersion\WindowsUpdate";
    let expected: Vec<(HiveId, &str, String, String, Vec<u8>)> = vec![
        (
            sw.clone(),
            "delete_value",
            r"Microsoft\Cryptography".into(),
            "MachineGuid".into(),
            vec![],
        ),
        (
            sw.clone(),
            "delete_value",
            r"Microsoft\SQMClient".into(),
            "MachineId".into(),
            vec![],
        ),
        (
            sw.clone(),
            "delete_value",
            wu.into(),
            "SusClientId".into(),
            vec![],
        ),
        (
            sw.clone(),
            "delete_value",
            wu.into(),
            "SusClientIDValidation".into(),
            vec![],
        ),
        (
            sw.clone(),
            "delete_value",
            wu.into(),
            "PingID".into(),
            vec![],
        ),
        (
            sw.clone(),
            "delete_key",
            format!(r"{nl}\Profiles\{{P1}}"),
            String::new(),
            vec![],
        ),
        (
            sw.clone(),
            "delete_key",
            format!(r"{nl}\Signatures\Unmanaged\0102"),
            String::new(),
            vec![],
        ),
        (
            sw.clone(),
            "delete_key",
            format!(r"{nl}\Nla\Cache\Intranet"),
            String::new(),
            vec![],
        ),
        (
            sys.clone(),
            "delete_value",
            r"ControlSet001\Services\Tcpip6\Parameters".into(),
            "Dhcpv6DUID".into(),
            vec![],
        ),
        (
            sys.clone(),
            "delete_value",
            ifv4.into(),
            "DhcpIPAddress".into(),
            vec![],
        ),
        (
            sys.clone(),
            "delete_value",
            ifv4.into(),
            "LeaseObtainedTime".into(),
            vec![],
        ),
        (
            sys.clone(),
            "delete_value",
            format!(r"{ifv4}\{{aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee}}"),
            "DhcpServer".into(),
            vec![],
        ),
        (
            sys.clone(),
            "delete_value",
            ifv6.into(),
            "Dhcpv6DNSServers".into(),
            vec![],
        ),
        (
            sys.clone(),
            "set",
            r"ControlSet001\Control\ComputerName\ComputerName".into(),
            "ComputerName".into(),
            name.clone(),
        ),
        (
            sys.clone(),
            "set",
            r"ControlSet001\Services\Tcpip\Parameters".into(),
            "Hostname".into(),
            name.clone(),
        ),
        (
            sys.clone(),
            "set",
            r"ControlSet001\Services\Tcpip\Parameters".into(),
            "NV Hostname".into(),
            name,
        ),
        (
            sys.clone(),
            "delete_value",
            r"ControlSet002\Services\Tcpip6\Parameters".into(),
            "Dhcpv6DUID".into(),
            vec![],
        ),
        (
            sys.clone(),
            "delete_value",
            "MountedDevices".into(),
            r"\DosDevices\C:".into(),
            vec![],
        ),
        (
            sys.clone(),
            "delete_value",
            "MountedDevices".into(),
            r"\??\Volume{01234567-89ab-cdef-0123-456789abcdef}".into(),
            vec![],
        ),
        (
            sys.clone(),
            "delete_value",
            "RNG".into(),
            "Seed".into(),
            vec![],
        ),
    ];
    assert_eq!(reg_edits(&plan), expected);
    assert!(file_edits(&plan).is_empty());

    // What is kept stays.
    let install = img.install();
    let sys_hive = install.hive(&HiveId::System).unwrap();
    let k = sys_hive.open_key(ifv6).unwrap().unwrap();
    assert!(sys_hive.value(k, "Dhcpv6Iaid").unwrap().is_some());
    let k = sys_hive.open_key("MountedDevices").unwrap().unwrap();
    assert!(sys_hive.value(k, "Other").unwrap().is_some());
    let k = sys_hive.open_key("RNG").unwrap().unwrap();
    assert!(sys_hive.value(k, "ExternalEntropy").unwrap().is_some());
    let k = sys_hive.open_key(ifv4).unwrap().unwrap();
    assert!(sys_hive.value(k, "EnableDHCP").unwrap().is_some());
}

#[test]
fn identities_use_the_answer_file_computer_name() {
    let u = Unattend::parse("u.xml", ANSWER.as_bytes()).unwrap();
    let mut img = identity_image();
    let plan = img.run_twice(op("identities").as_ref(), &oobe(), Some(&u));
    let names: Vec<Vec<u8>> = reg_edits(&plan)
        .into_iter()
        .filter(|r| r.1 == "set")
        .map(|r| r.4)
        .collect();
    assert_eq!(names, vec![sz("CLONE-07"); 3]);

    // `*` asks specialize for a random name: the placeholder is used.
    let star = ANSWER.replace("CLONE-07", "*");
    let u = Unattend::parse("u.xml", star.as_bytes()).unwrap();
    let plan = identity_image().plan(op("identities").as_ref(), &oobe(), Some(&u));
    assert!(
        reg_edits(&plan)
            .iter()
            .filter(|r| r.1 == "set")
            .all(|r| r.4 == sz("WIN-GENERALIZED"))
    );
}

// ---------------------------------------------------------------------------
// leftovers

#[test]
fn leftovers_delete_only_what_exists() {
    let u = Unattend::parse("u.xml", ANSWER.as_bytes()).unwrap();
    let mut img = Image::new()
        .file(r"Windows\System32\winevt\Logs\System.evtx", b"e")
        .file(r"Windows\System32\winevt\Logs\Security.EVTX", b"e")
        .file(r"Windows\System32\winevt\Logs\readme.txt", b"k")
        .file(r"Windows\Panther\setupact.log", b"l")
        .file(r"Windows\Panther\setuperr.log", b"l")
        .file(r"Windows\Panther\setup.etl", b"l")
        .file(r"Windows\Panther\unattend.xml", b"<unattend/>")
        .file(r"Windows\Panther\MigLog.xml", b"k")
        .file(r"Windows\Panther\UnattendGC\setupact.log", b"l")
        .file(r"Windows\System32\Sysprep\Panther\setupact.log", b"l")
        .file(r"Windows\System32\Sysprep\Panther\IE\setupact.log", b"l")
        .file(r"Windows\System32\Sysprep\sysprep.exe", b"k")
        .file(r"Windows\INF\setupapi.dev.log", b"l")
        .file(r"Windows\INF\setupapi.dev.20240101_120000.log", b"l")
        .file(r"Windows\INF\machine.inf", b"k")
        .file(r"ProgramData\Microsoft\Windows\WER\ReportQueue\AppCrash_x\Report.wer", b"r")
        .file(r"ProgramData\Microsoft\Windows\WER\Temp\keep", b"k")
        .file(r"Windows\Temp\a.tmp", b"t")
        .file(r"Windows\Prefetch\X.pf", b"p")
        .file(r"Windows\MEMORY.DMP", b"d")
        .file(r"Windows\Minidump\0101-01.dmp", b"d")
        .file("pagefile.sys", b"p")
        .file("hiberfil.sys", b"h")
        .file("swapfile.sys", b"s")
        .file(
            r"System Volume Information\{01234567-89ab-cdef-0123-456789abcdef}{3808876b-c176-4e48-b7ae-04046e6cc752}",
            b"v",
        )
        .file(r"System Volume Information\{3808876b-c176-4e48-b7ae-04046e6cc752}", b"c")
        .file(r"System Volume Information\SPP\OnlineMetadataCache\x", b"s")
        .file(r"System Volume Information\IndexerVolumeGuid", b"k")
        .file(r"Windows\System32\config\RegBack\SYSTEM", b"r");
    let plan = img.run_twice(op("leftovers").as_ref(), &oobe(), Some(&u));
    let mut got: Vec<(&str, String)> = file_edits(&plan)
        .into_iter()
        .map(|(a, p, _)| (a, p))
        .collect();
    got.sort();
    let mut want: Vec<(&str, String)> = vec![
        ("delete", r"Windows\System32\winevt\Logs\System.evtx".into()),
        ("delete", r"Windows\System32\winevt\Logs\Security.EVTX".into()),
        ("delete", r"Windows\Panther\setupact.log".into()),
        ("delete", r"Windows\Panther\setuperr.log".into()),
        ("delete", r"Windows\Panther\setup.etl".into()),
        ("delete_tree", r"Windows\Panther\UnattendGC".into()),
        ("delete", r"Windows\System32\Sysprep\Panther\setupact.log".into()),
        ("delete_tree", r"Windows\System32\Sysprep\Panther\IE".into()),
        ("delete", r"Windows\INF\setupapi.dev.log".into()),
        ("delete", r"Windows\INF\setupapi.dev.20240101_120000.log".into()),
        ("delete_tree", r"ProgramData\Microsoft\Windows\WER\ReportQueue\AppCrash_x".into()),
        ("delete", r"Windows\Temp\a.tmp".into()),
        ("delete", r"Windows\Prefetch\X.pf".into()),
        ("delete", r"Windows\MEMORY.DMP".into()),
        ("delete", r"Windows\Minidump\0101-01.dmp".into()),
        ("delete", "pagefile.sys".into()),
        ("delete", "hiberfil.sys".into()),
        ("delete", "swapfile.sys".into()),
        (
            "delete",
            r"System Volume Information\{01234567-89ab-cdef-0123-456789abcdef}{3808876b-c176-4e48-b7ae-04046e6cc752}"
                .into(),
        ),
        ("delete", r"System Volume Information\{3808876b-c176-4e48-b7ae-04046e6cc752}".into()),
        ("delete_tree", r"System Volume Information\SPP".into()),
        ("delete", r"Windows\System32\config\RegBack\SYSTEM".into()),
    ];
    want.sort();
    assert_eq!(got, want);
    for kept in [
        r"Windows\Panther\unattend.xml",
        r"Windows\Panther\MigLog.xml",
        r"Windows\INF\machine.inf",
        r"Windows\System32\winevt\Logs\readme.txt",
        r"Windows\System32\Sysprep\sysprep.exe",
        r"ProgramData\Microsoft\Windows\WER\Temp\keep",
        r"System Volume Information\IndexerVolumeGuid",
    ] {
        assert!(img.backend.exists(kept), "{kept} was deleted");
    }
}

#[test]
fn leftovers_on_a_clean_image_plan_nothing() {
    let img = Image::new().file(r"Windows\explorer.exe", b"x");
    let plan = img.plan(op("leftovers").as_ref(), &oobe(), None);
    assert!(plan.edits.is_empty());
}

// ---------------------------------------------------------------------------
// autopilot

#[test]
fn autopilot_removes_its_state() {
    let mut img = Image::new().hive(
        HiveId::Software,
        &[
            (
                r"Microsoft\Provisioning\AutopilotPolicy\Cache",
                Some("x"),
                DWORD,
                dw(1),
            ),
            (
                r"Microsoft\Provisioning\Diagnostics\Autopilot",
                Some("y"),
                DWORD,
                dw(1),
            ),
            (
                r"Microsoft\Provisioning\Diagnostics\Other",
                Some("z"),
                DWORD,
                dw(1),
            ),
            (
                r"Microsoft\Windows NT\CurrentVersion\Notifications\Data",
                Some("41871D20A3BC1475"),
                BINARY,
                vec![1],
            ),
            (
                r"Microsoft\Windows NT\CurrentVersion\Notifications\Data",
                Some("418A073AA3BC3475"),
                BINARY,
                vec![2],
            ),
        ],
    );
    let plan = img.run_twice(op("autopilot").as_ref(), &oobe(), None);
    assert_eq!(
        reg_edits(&plan),
        vec![
            (
                HiveId::Software,
                "delete_key",
                r"Microsoft\Provisioning\AutopilotPolicy".into(),
                String::new(),
                vec![]
            ),
            (
                HiveId::Software,
                "delete_key",
                r"Microsoft\Provisioning\Diagnostics\Autopilot".into(),
                String::new(),
                vec![]
            ),
            (
                HiveId::Software,
                "delete_value",
                r"Microsoft\Windows NT\CurrentVersion\Notifications\Data".into(),
                "41871D20A3BC1475".into(),
                vec![]
            ),
        ]
    );
    let install = img.install();
    let sw = install.hive(&HiveId::Software).unwrap();
    assert!(
        sw.open_key(r"Microsoft\Provisioning\Diagnostics\Other")
            .unwrap()
            .is_some()
    );
}

// ---------------------------------------------------------------------------
// administrator

fn f_record(rid: u32, acb: u16) -> Vec<u8> {
    let mut f = vec![0u8; 0x50];
    f[0] = 3;
    f[0x30..0x34].copy_from_slice(&rid.to_le_bytes());
    f[0x38..0x3A].copy_from_slice(&acb.to_le_bytes());
    f
}

#[test]
fn administrator_is_left_as_sysprep_leaves_it() {
    for acb in [0x0210, 0x0211] {
        let img = Image::new().hive(
            HiveId::Sam,
            &[(
                r"SAM\Domains\Account\Users\000001F4",
                Some("F"),
                BINARY,
                f_record(500, acb),
            )],
        );
        for opts in [oobe(), audit()] {
            let plan = img.plan(op("administrator").as_ref(), &opts, None);
            assert!(plan.edits.is_empty());
            assert!(plan.not_done.is_empty());
        }
    }
    assert_eq!(
        reseal::ops::administrator::account_flags(&f_record(500, 0x11), 500),
        Some(0x11)
    );
    assert_eq!(
        reseal::ops::administrator::account_flags(&[0; 8], 500),
        None
    );
    // A record with another layout is reported, not touched.
    let img = Image::new().hive(
        HiveId::Sam,
        &[(
            r"SAM\Domains\Account\Users\000001F4",
            Some("F"),
            BINARY,
            vec![1, 2, 3],
        )],
    );
    let plan = img.plan(op("administrator").as_ref(), &oobe(), None);
    assert!(plan.edits.is_empty());
    assert_eq!(plan.not_done.len(), 1);
}

// ---------------------------------------------------------------------------
// activation

#[test]
fn activation_reports_no_rearm() {
    let img = Image::new();
    let plan = img.plan(op("activation").as_ref(), &oobe(), None);
    assert!(plan.edits.is_empty());
    assert_eq!(plan.not_done.len(), 1);
    assert_eq!(plan.not_done[0].operation, "activation");
    assert!(plan.not_done[0].message.contains("CMID"));
    assert!(
        plan.not_done[0]
            .message
            .contains("sysprep would have rearmed")
    );

    let u = Unattend::parse("u.xml", ANSWER.as_bytes()).unwrap();
    let plan = img.plan(op("activation").as_ref(), &oobe(), Some(&u));
    assert!(plan.not_done[0].message.contains("SkipRearm=1"));
    assert!(
        plan.not_done[0]
            .message
            .contains("matches what sysprep does")
    );
}

// ---------------------------------------------------------------------------
// Everything together

#[test]
fn a_generalized_install_plans_nothing() {
    let u = Unattend::parse("u.xml", ANSWER.as_bytes()).unwrap();
    let mut img = identity_image()
        .file(r"Windows\System32\winevt\Logs\System.evtx", b"e")
        .file(
            r"Windows\Setup\State\State.ini",
            b"[State]\r\nImageState=IMAGE_STATE_COMPLETE\r\n",
        );
    for o in ops::all() {
        img.run_twice(o.as_ref(), &oobe(), Some(&u));
    }
    for o in ops::all() {
        let plan = img.plan(o.as_ref(), &oobe(), Some(&u));
        assert!(
            plan.edits.is_empty(),
            "{} planned {:?}",
            o.name(),
            plan.edits
        );
    }
    // The hives still pass the structural checker and open independently.
    for (id, _) in HiveId::MACHINE {
        let path = hive_path(&id);
        if let Ok(bytes) = img.backend.read(&path) {
            let h = hive::Hive::from_bytes(&path, bytes).unwrap();
            assert_eq!(h.check().errors().count(), 0);
        }
    }
}

#[test]
fn unattend_parse_never_panics_on_damaged_input() {
    let bytes = ANSWER.as_bytes();
    for cut in 0..bytes.len() {
        let _ = Unattend::parse("cut.xml", &bytes[..cut]);
    }
    for i in (0..bytes.len()).step_by(7) {
        let mut b = bytes.to_vec();
        b[i] ^= 0x5A;
        if let Ok(u) = Unattend::parse("flip.xml", &b) {
            let _ = u.redacted();
        }
    }
}
