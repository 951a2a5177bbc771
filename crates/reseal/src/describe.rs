//! Describing a Windows installation (`reseal inspect`): version, identity,
//! accounts, domain membership, generalization state, pending servicing,
//! hive health and the sysprep providers the image declares. Read-only;
//! every missing key or odd value is reported as unknown, never a panic.

use std::fmt::Write as _;

use serde::Serialize;

use reseal_hive::{Hive, Sid, Value};

use crate::backend::Backend;
use crate::context::{reg_dword, reg_string};
use crate::hives::{HiveId, HiveLoadError};
use crate::install::WindowsInstall;

/// SOFTWARE key holding the version information.
pub const CURRENT_VERSION: &str = r"Microsoft\Windows NT\CurrentVersion";
/// SOFTWARE key of the Appx all-user store.
pub const APPX_STORE: &str = r"Microsoft\Windows\CurrentVersion\Appx\AppxAllUserStore";
/// SOFTWARE key holding the sysprep failure latch (`SysprepCorrupt`).
pub const SYSPREP_KEY: &str = r"Microsoft\Windows\CurrentVersion\Setup\Sysprep";

/// Everything `reseal inspect` reports about one installation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InstallDescription {
    /// The Windows directory inside the image.
    pub windows_dir: String,
    /// `ProductName` (e.g. "Windows 10 Pro").
    pub product_name: Option<String>,
    /// `CurrentBuild` (or `CurrentBuildNumber`) and `.UBR` when present.
    pub build: Option<String>,
    /// `DisplayVersion` or `ReleaseId` (e.g. "22H2").
    pub display_version: Option<String>,
    /// `EditionID` (e.g. "Professional", "ServerDatacenter").
    pub edition: Option<String>,
    /// `InstallationType`: "Client", "Server" or "Server Core".
    pub installation_type: Option<String>,
    /// `PROCESSOR_ARCHITECTURE` of the system environment (AMD64, x86, ARM64).
    pub architecture: Option<String>,
    /// The current control set's key name (`ControlSet001`).
    pub current_control_set: Option<String>,
    /// `Control\ComputerName\ComputerName` → `ComputerName`.
    pub computer_name: Option<String>,
    /// `Control\ProductOptions` → `ProductType`: WinNT, ServerNT, LanmanNT.
    pub product_type: Option<String>,
    /// The machine (account domain) SID, `S-1-5-21-x-y-z`.
    pub machine_sid: Option<String>,
    /// Where the machine SID was read: "SECURITY Policy\PolAcDmS" or
    /// "SAM SAM\Domains\Account V".
    pub machine_sid_source: Option<String>,
    /// Local accounts of the SAM account domain.
    pub accounts: Vec<LocalAccount>,
    /// Domain membership, from SECURITY.
    pub domain: DomainMembership,
    /// Generalization markers.
    pub generalization: GeneralizationState,
    /// Device instances under `<current control set>\Enum` (depth 3).
    pub device_instances: Option<usize>,
    /// Profile directories whose hives were loaded.
    pub profiles: Vec<String>,
    /// Appx packages registered for a user but not provisioned.
    pub per_user_appx: Vec<PerUserAppx>,
    /// Markers of a pending reboot or servicing operation.
    pub pending: Vec<PendingMarker>,
    /// Hives that were dirty and were brought up to date from their logs.
    pub replayed_hives: Vec<ReplayedHive>,
    /// Hives that exist but could not be loaded.
    pub failed_hives: Vec<HiveLoadError>,
    /// Hives whose base block says KTM transactions were pending.
    pub transactions_pending: Vec<String>,
    /// Sysprep providers the image declares for the generalize phase.
    pub providers: Vec<SysprepProvider>,
    /// Whether the image is generalized (`ImageState` is
    /// `IMAGE_STATE_GENERALIZE_RESEAL_TO_*`).
    pub generalized: bool,
    /// reseal's record of its generalize and personalize runs
    /// ([`crate::marker`]), when it wrote one.
    pub reseal: Option<crate::marker::ResealMarker>,
}

/// A local account of the SAM account domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalAccount {
    /// The account name (the `Users\Names` subkey).
    pub name: String,
    /// Its relative id (the type code of the `Names\<name>` default value).
    pub rid: u32,
    /// Its full SID, when the machine SID is known.
    pub sid: Option<String>,
    /// Whether the account is disabled (`Users\<RID>\F` control flags),
    /// when the record is readable.
    pub disabled: Option<bool>,
}

/// Domain membership as recorded in SECURITY.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DomainMembership {
    /// `PolPrDmS` holds a SID: the machine is joined to a domain.
    pub joined: bool,
    /// The primary domain (or workgroup) name, `PolPrDmN`.
    pub name: Option<String>,
    /// The DNS domain name, `PolDnDDN`.
    pub dns_name: Option<String>,
    /// The domain SID, `PolPrDmS`.
    pub sid: Option<String>,
}

/// The generalization markers (reference/sysprep-internals.md §2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GeneralizationState {
    /// SOFTWARE `Microsoft\Windows\CurrentVersion\Setup\State` → `ImageState`.
    pub image_state: Option<String>,
    /// `<windir>\Setup\State\State.ini` → `ImageState`.
    pub image_state_file: Option<String>,
    /// SYSTEM `Setup\Status\SysprepStatus` → `GeneralizationState`.
    pub generalization_state: Option<u32>,
    /// SYSTEM `Setup` → `SystemSetupInProgress`.
    pub system_setup_in_progress: Option<u32>,
    /// SYSTEM `Setup` → `SetupType`.
    pub setup_type: Option<u32>,
    /// SYSTEM `Setup` → `CmdLine`.
    pub cmd_line: Option<String>,
    /// `<windir>\System32\Sysprep\Sysprep_succeeded.tag` exists.
    pub sysprep_succeeded_tag: bool,
    /// SOFTWARE `…\Setup\Sysprep` → `SysprepCorrupt` (the failure latch).
    pub sysprep_corrupt: Option<u32>,
}

impl GeneralizationState {
    /// Whether the image state (registry or State.ini) is already
    /// `IMAGE_STATE_GENERALIZE_RESEAL_TO_*`.
    pub fn already_generalized(&self) -> bool {
        [&self.image_state, &self.image_state_file]
            .into_iter()
            .flatten()
            .any(|s| {
                s.to_ascii_uppercase()
                    .starts_with("IMAGE_STATE_GENERALIZE_RESEAL_TO_")
            })
    }
}

/// An Appx package registered for one user and not provisioned for all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PerUserAppx {
    /// The user's SID.
    pub sid: String,
    /// The package full name.
    pub package: String,
}

/// One marker of a pending reboot or servicing operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingMarker {
    /// Short name: `pending.xml`, `PendingFileRenameOperations`,
    /// `CBS RebootPending`, `CBS PackagesPending`, `WU RebootRequired`.
    pub kind: String,
    /// Where it was found (file path or hive + key).
    pub location: String,
}

/// A dirty hive recovered from its logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayedHive {
    /// Hive label ("SYSTEM", "NTUSER.DAT of Users\demo").
    pub hive: String,
    /// Path inside the image.
    pub path: String,
    /// The logs that were applied.
    pub logs: Vec<String>,
}

/// A sysprep provider declared by the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysprepProvider {
    /// Where it is declared: the action file's path, or hive + key.
    pub source: String,
    /// The component that contributes it (action files), when named.
    pub component: Option<String>,
    /// The module (DLL), as written.
    pub module: String,
    /// The entry point.
    pub method: String,
    /// The `sysprepOrder` (action files).
    pub order: Option<String>,
    /// Registered under `SysPrepExternal` (a third-party provider).
    pub third_party: bool,
}

// ----- small read helpers ------------------------------------------------

pub(crate) fn hive_value(
    install: &WindowsInstall,
    id: &HiveId,
    key: &str,
    name: &str,
) -> Option<Value> {
    let h = install.hive(id)?;
    let k = h.open_key(key).ok()??;
    h.value(k, name).ok()?
}

pub(crate) fn key_exists(install: &WindowsInstall, id: &HiveId, key: &str) -> bool {
    install
        .hive(id)
        .and_then(|h| h.open_key(key).ok().flatten())
        .is_some()
}

pub(crate) fn subkey_names(hive: &Hive, key: &str) -> Vec<String> {
    let Some(k) = hive.open_key(key).ok().flatten() else {
        return Vec::new();
    };
    hive.subkeys(k)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| hive.key_info(c).ok().map(|i| i.name))
        .collect()
}

/// A string value (REG_SZ, REG_EXPAND_SZ; first string of REG_MULTI_SZ).
pub(crate) fn string_value(
    install: &WindowsInstall,
    id: &HiveId,
    key: &str,
    name: &str,
) -> Option<String> {
    let v = hive_value(install, id, key, name)?;
    matches!(v.value_type, 1 | 2 | 7).then(|| reg_string(&v.data))
}

/// A DWORD value: REG_DWORD, or REG_NONE/REG_BINARY data of exactly 4
/// bytes (little-endian). Other types are not numbers.
pub(crate) fn dword_value(
    install: &WindowsInstall,
    id: &HiveId,
    key: &str,
    name: &str,
) -> Option<u32> {
    let v = hive_value(install, id, key, name)?;
    match v.value_type {
        4 => reg_dword(&v.data),
        0 | 3 if v.data.len() == 4 => reg_dword(&v.data),
        _ => None,
    }
}

/// The current control set of SYSTEM (`Select\Current`), or
/// `ControlSet001` when `Select` is missing or points nowhere.
pub fn current_control_set(install: &WindowsInstall) -> Option<String> {
    if let Some(n) = dword_value(install, &HiveId::System, "Select", "Current") {
        let name = format!("ControlSet{n:03}");
        if key_exists(install, &HiveId::System, &name) {
            return Some(name);
        }
    }
    key_exists(install, &HiveId::System, "ControlSet001").then(|| "ControlSet001".to_string())
}

/// Splits REG_MULTI_SZ data into its strings (empty strings dropped).
pub(crate) fn multi_strings(data: &[u8]) -> Vec<String> {
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    units
        .split(|&u| u == 0)
        .filter(|s| !s.is_empty())
        .map(String::from_utf16_lossy)
        .collect()
}

/// Decodes a LSA `UNICODE_STRING` blob as SECURITY stores it (`PolPrDmN`,
/// `PolAcDmN`, `PolDnDDN`): u16 length, u16 maximum length, u32 offset of
/// the UTF-16 text (8 in every hive seen), then the text.
pub fn lsa_unicode_string(data: &[u8]) -> Option<String> {
    let len = u16::from_le_bytes(data.get(0..2)?.try_into().ok()?) as usize;
    if len == 0 {
        return None;
    }
    let off = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?) as usize;
    let off = if off >= 8 && off < data.len() { off } else { 8 };
    let text = data.get(off..off.checked_add(len)?)?;
    let s = reg_string(text);
    (!s.is_empty()).then_some(s)
}

// ----- the description ---------------------------------------------------

/// Describes an installation. Never fails: what cannot be read is `None`
/// or empty.
pub fn describe(install: &WindowsInstall, backend: &dyn Backend) -> InstallDescription {
    let sw = HiveId::Software;
    let sys = HiveId::System;
    let mut d = InstallDescription {
        windows_dir: install.windows_dir.clone(),
        ..Default::default()
    };

    // Version.
    d.product_name = string_value(install, &sw, CURRENT_VERSION, "ProductName");
    let build = string_value(install, &sw, CURRENT_VERSION, "CurrentBuild")
        .or_else(|| string_value(install, &sw, CURRENT_VERSION, "CurrentBuildNumber"));
    let ubr = dword_value(install, &sw, CURRENT_VERSION, "UBR");
    d.build = match (build, ubr) {
        (Some(b), Some(u)) => Some(format!("{b}.{u}")),
        (b, _) => b,
    };
    d.display_version = string_value(install, &sw, CURRENT_VERSION, "DisplayVersion")
        .or_else(|| string_value(install, &sw, CURRENT_VERSION, "ReleaseId"));
    d.edition = string_value(install, &sw, CURRENT_VERSION, "EditionID");
    d.installation_type = string_value(install, &sw, CURRENT_VERSION, "InstallationType");

    // SYSTEM.
    d.current_control_set = current_control_set(install);
    if let Some(ccs) = &d.current_control_set {
        d.architecture = string_value(
            install,
            &sys,
            &format!(r"{ccs}\Control\Session Manager\Environment"),
            "PROCESSOR_ARCHITECTURE",
        );
        d.computer_name = string_value(
            install,
            &sys,
            &format!(r"{ccs}\Control\ComputerName\ComputerName"),
            "ComputerName",
        );
        d.product_type = string_value(
            install,
            &sys,
            &format!(r"{ccs}\Control\ProductOptions"),
            "ProductType",
        );
        d.device_instances = install
            .hive(&sys)
            .and_then(|h| count_device_instances(h, &format!(r"{ccs}\Enum")));
    }

    // Identity.
    if let Some((sid, source)) = machine_sid(install) {
        d.machine_sid = Some(sid.to_string());
        d.machine_sid_source = Some(source.to_string());
    }
    d.accounts = local_accounts(install);
    d.domain = domain_membership(install);

    // Generalization state.
    d.generalization = generalization_state(install, backend);

    // Profiles, Appx, pending servicing.
    for h in &install.hives {
        if let HiveId::NtUser(p) | HiveId::UsrClass(p) = &h.id {
            if !d.profiles.iter().any(|x| x == p) {
                d.profiles.push(p.clone());
            }
        }
    }
    d.per_user_appx = per_user_appx(install);
    d.pending = pending_markers(install, backend, d.current_control_set.as_deref());

    // Hive health.
    for h in &install.hives {
        let info = h.hive.open_info();
        if !info.replayed_logs.is_empty() {
            d.replayed_hives.push(ReplayedHive {
                hive: h.id.label(),
                path: h.path.clone(),
                logs: info.replayed_logs.clone(),
            });
        }
        if info.transactions_pending {
            d.transactions_pending.push(h.id.label());
        }
    }
    d.failed_hives = install.load_errors.clone();

    d.providers = providers(install, backend);
    d.generalized = d.generalization.already_generalized();
    d.reseal = crate::marker::read_marker(install);
    d
}

/// Counts device instance keys: `Enum\<enumerator>\<device>\<instance>`.
fn count_device_instances(h: &Hive, enum_key: &str) -> Option<usize> {
    let root = h.open_key(enum_key).ok()??;
    let mut n = 0usize;
    for enumerator in h.subkeys(root).unwrap_or_default() {
        for device in h.subkeys(enumerator).unwrap_or_default() {
            n += h
                .key_info(device)
                .map(|i| i.subkey_count as usize)
                .unwrap_or(0);
        }
    }
    Some(n)
}

/// The machine SID: SECURITY `Policy\PolAcDmS` (default value, binary SID),
/// else the last 24 bytes of SAM `SAM\Domains\Account` → `V` (a binary
/// domain SID in every hive checked; when they are not one, the last 12
/// bytes are read as the three random sub-authorities).
pub fn machine_sid(install: &WindowsInstall) -> Option<(Sid, &'static str)> {
    let from_security = hive_value(install, &HiveId::Security, r"Policy\PolAcDmS", "")
        .and_then(|v| Sid::from_bytes(&v.data).map(|(s, _)| s))
        .filter(Sid::is_machine_domain);
    if let Some(sid) = from_security {
        return Some((sid, r"SECURITY Policy\PolAcDmS"));
    }
    let v = hive_value(install, &HiveId::Sam, r"SAM\Domains\Account", "V")?;
    let n = v.data.len();
    let tail = v.data.get(n.checked_sub(24)?..)?;
    if let Some((sid, 24)) = Sid::from_bytes(tail) {
        if sid.is_machine_domain() {
            return Some((sid, r"SAM SAM\Domains\Account V"));
        }
    }
    let subs: Vec<u32> = tail[12..]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let sid = Sid::new(5, &[21, subs[0], subs[1], subs[2]]).ok()?;
    Some((sid, r"SAM SAM\Domains\Account V"))
}

/// Local accounts: SAM `SAM\Domains\Account\Users\Names\<name>`, whose
/// default value's type code is the RID.
pub fn local_accounts(install: &WindowsInstall) -> Vec<LocalAccount> {
    let Some(sam) = install.hive(&HiveId::Sam) else {
        return Vec::new();
    };
    let domain = machine_sid(install).map(|(s, _)| s);
    let names_key = r"SAM\Domains\Account\Users\Names";
    let Some(names) = sam.open_key(names_key).ok().flatten() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for child in sam.subkeys(names).unwrap_or_default() {
        let Ok(info) = sam.key_info(child) else {
            continue;
        };
        let Some(v) = sam.value(child, "").ok().flatten() else {
            continue;
        };
        let rid = v.value_type;
        let f = sam
            .open_key(&format!(r"SAM\Domains\Account\Users\{rid:08X}"))
            .ok()
            .flatten()
            .and_then(|k| sam.value(k, "F").ok().flatten());
        // F record: account control flags (u16) at 0x38; bit 0 = disabled.
        let disabled = f
            .and_then(|f| {
                f.data
                    .get(0x38..0x3a)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
            })
            .map(|acb| acb & 1 != 0);
        out.push(LocalAccount {
            name: info.name,
            rid,
            sid: domain.as_ref().map(|d| d.with_rid(rid).to_string()),
            disabled,
        });
    }
    out.sort_by_key(|a| a.rid);
    out
}

/// Domain membership from SECURITY `Policy\PolPrDmS` / `PolPrDmN` /
/// `PolDnDDN`. Joined means `PolPrDmS` holds a SID (a workgroup machine has
/// an empty value and the workgroup's name in `PolPrDmN`).
pub fn domain_membership(install: &WindowsInstall) -> DomainMembership {
    let sec = HiveId::Security;
    let sid = hive_value(install, &sec, r"Policy\PolPrDmS", "")
        .and_then(|v| Sid::from_bytes(&v.data).map(|(s, _)| s));
    DomainMembership {
        joined: sid.is_some(),
        name: hive_value(install, &sec, r"Policy\PolPrDmN", "")
            .and_then(|v| lsa_unicode_string(&v.data)),
        dns_name: hive_value(install, &sec, r"Policy\PolDnDDN", "")
            .and_then(|v| lsa_unicode_string(&v.data)),
        sid: sid.map(|s| s.to_string()),
    }
}

/// Reads `ImageState` from a State.ini (UTF-16LE with BOM, or 8-bit).
pub fn parse_state_ini(bytes: &[u8]) -> Option<String> {
    let text = if bytes.starts_with(&[0xff, 0xfe]) {
        let units: Vec<u16> = bytes[2..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    };
    for line in text.lines() {
        let line = line.trim().trim_start_matches('\u{feff}');
        if let Some((k, v)) = line.split_once('=') {
            if k.trim().eq_ignore_ascii_case("ImageState") {
                let v = v.trim().trim_matches('"').trim();
                return (!v.is_empty()).then(|| v.to_string());
            }
        }
    }
    None
}

fn generalization_state(install: &WindowsInstall, backend: &dyn Backend) -> GeneralizationState {
    let sw = HiveId::Software;
    let sys = HiveId::System;
    let ini = install.windows_path(r"Setup\State\State.ini");
    GeneralizationState {
        image_state: string_value(
            install,
            &sw,
            r"Microsoft\Windows\CurrentVersion\Setup\State",
            "ImageState",
        ),
        image_state_file: backend.read(&ini).ok().and_then(|b| parse_state_ini(&b)),
        generalization_state: dword_value(
            install,
            &sys,
            r"Setup\Status\SysprepStatus",
            "GeneralizationState",
        ),
        system_setup_in_progress: dword_value(install, &sys, "Setup", "SystemSetupInProgress"),
        setup_type: dword_value(install, &sys, "Setup", "SetupType"),
        cmd_line: string_value(install, &sys, "Setup", "CmdLine"),
        sysprep_succeeded_tag: backend
            .exists(&install.windows_path(r"System32\Sysprep\Sysprep_succeeded.tag")),
        sysprep_corrupt: dword_value(install, &sw, SYSPREP_KEY, "SysprepCorrupt"),
    }
}

/// Package families that are frameworks (dependencies installed with an
/// app, never provisioned on their own). Sysprep's Appx validator is about
/// apps, so these are not reported. Heuristic by family name only.
pub const FRAMEWORK_PREFIXES: [&str; 6] = [
    "Microsoft.VCLibs.",
    "Microsoft.NET.Native.",
    "Microsoft.UI.Xaml.",
    "Microsoft.WindowsAppRuntime.",
    "Microsoft.Services.Store.Engagement_",
    "Microsoft.Advertising.Xaml_",
];

fn is_framework(package: &str) -> bool {
    FRAMEWORK_PREFIXES.iter().any(|p| {
        package
            .get(..p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p))
    })
}

/// Packages under `AppxAllUserStore\<S-1-5-21-…>\<PackageFullName>` that
/// are neither under `…\Applications\<PackageFullName>` nor under
/// `…\InboxApplications\<PackageFullName>` (compared case-insensitively),
/// frameworks ([`FRAMEWORK_PREFIXES`]) excepted.
pub fn per_user_appx(install: &WindowsInstall) -> Vec<PerUserAppx> {
    let Some(sw) = install.hive(&HiveId::Software) else {
        return Vec::new();
    };
    let mut provisioned: Vec<String> = Vec::new();
    for sub in ["Applications", "InboxApplications"] {
        provisioned.extend(
            subkey_names(sw, &format!(r"{APPX_STORE}\{sub}"))
                .into_iter()
                .map(|n| n.to_ascii_lowercase()),
        );
    }
    let mut out = Vec::new();
    for user in subkey_names(sw, APPX_STORE) {
        if !user.to_ascii_uppercase().starts_with("S-1-5-21-") {
            continue;
        }
        for pkg in subkey_names(sw, &format!(r"{APPX_STORE}\{user}")) {
            if is_framework(&pkg) || provisioned.contains(&pkg.to_ascii_lowercase()) {
                continue;
            }
            out.push(PerUserAppx {
                sid: user.clone(),
                package: pkg,
            });
        }
    }
    out
}

/// Markers of a pending reboot or servicing operation:
/// `<windir>\WinSxS\pending.xml`; SYSTEM `Control\Session Manager` →
/// `PendingFileRenameOperations`(`2`) non-empty; SOFTWARE
/// `…\Component Based Servicing\RebootPending` and `…\PackagesPending`
/// keys; SOFTWARE `…\WindowsUpdate\Auto Update\RebootRequired` key.
pub fn pending_markers(
    install: &WindowsInstall,
    backend: &dyn Backend,
    ccs: Option<&str>,
) -> Vec<PendingMarker> {
    let mut out = Vec::new();
    let pending_xml = install.windows_path(r"WinSxS\pending.xml");
    if backend.exists(&pending_xml) && !backend.is_dir(&pending_xml) {
        out.push(PendingMarker {
            kind: "pending.xml".into(),
            location: pending_xml,
        });
    }
    if let Some(ccs) = ccs {
        let key = format!(r"{ccs}\Control\Session Manager");
        for name in [
            "PendingFileRenameOperations",
            "PendingFileRenameOperations2",
        ] {
            let set = hive_value(install, &HiveId::System, &key, name)
                .is_some_and(|v| !multi_strings(&v.data).is_empty());
            if set {
                out.push(PendingMarker {
                    kind: name.into(),
                    location: format!(r"SYSTEM {key} → {name}"),
                });
            }
        }
    }
    let keys = [
        (
            "CBS RebootPending",
            r"Microsoft\Windows\CurrentVersion\Component Based Servicing\RebootPending",
        ),
        (
            "CBS PackagesPending",
            r"Microsoft\Windows\CurrentVersion\Component Based Servicing\PackagesPending",
        ),
        (
            "WU RebootRequired",
            r"Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update\RebootRequired",
        ),
    ];
    for (kind, key) in keys {
        if key_exists(install, &HiveId::Software, key) {
            out.push(PendingMarker {
                kind: kind.into(),
                location: format!("SOFTWARE {key}"),
            });
        }
    }
    out
}

/// Decodes an XML file's bytes: UTF-16LE/BE by BOM, else UTF-8.
fn decode_text(bytes: &[u8]) -> String {
    let utf16 = |be: bool| {
        let units: Vec<u16> = bytes[2..]
            .chunks_exact(2)
            .map(|c| {
                if be {
                    u16::from_be_bytes([c[0], c[1]])
                } else {
                    u16::from_le_bytes([c[0], c[1]])
                }
            })
            .collect();
        String::from_utf16_lossy(&units)
    };
    if bytes.starts_with(&[0xff, 0xfe]) {
        utf16(false)
    } else if bytes.starts_with(&[0xfe, 0xff]) {
        utf16(true)
    } else {
        let s = String::from_utf8_lossy(bytes);
        s.trim_start_matches('\u{feff}').to_string()
    }
}

fn attr_ci<'a>(node: roxmltree::Node<'a, '_>, name: &str) -> Option<&'a str> {
    node.attributes()
        .find(|a| a.name().eq_ignore_ascii_case(name))
        .map(|a| a.value())
}

/// Parses a sysprep action file (`ActionFiles\Generalize.xml`, Windows 8
/// and later): each `<imaging>` element names its component with an
/// `<assemblyIdentity name=…/>`, its place with `<sysprepOrder order=…/>`
/// and its entry points with `<sysprepModule moduleName=… methodName=…/>`.
/// Element names are matched case-insensitively, whatever their namespace.
/// Malformed XML yields no providers.
pub fn parse_action_file(source: &str, bytes: &[u8]) -> Vec<SysprepProvider> {
    let text = decode_text(bytes);
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let Ok(doc) = roxmltree::Document::parse_with_options(&text, opts) else {
        return Vec::new();
    };
    let is = |n: &roxmltree::Node, name: &str| {
        n.is_element() && n.tag_name().name().eq_ignore_ascii_case(name)
    };
    let mut out = Vec::new();
    for module in doc.descendants().filter(|n| is(n, "sysprepModule")) {
        let imaging = module.ancestors().find(|a| is(a, "imaging"));
        let component = imaging.and_then(|i| {
            i.descendants()
                .find(|n| is(n, "assemblyIdentity"))
                .and_then(|n| attr_ci(n, "name"))
                .map(str::to_string)
        });
        let order = imaging.and_then(|i| {
            i.descendants()
                .find(|n| is(n, "sysprepOrder"))
                .and_then(|n| attr_ci(n, "order"))
                .map(str::to_string)
        });
        out.push(SysprepProvider {
            source: source.to_string(),
            component,
            module: attr_ci(module, "moduleName")
                .unwrap_or_default()
                .to_string(),
            method: attr_ci(module, "methodName")
                .unwrap_or_default()
                .to_string(),
            order,
            third_party: false,
        });
    }
    out
}

/// Splits a registry provider entry `module.dll,EntryPoint`.
fn split_entry(s: &str) -> (String, String) {
    match s.rsplit_once(',') {
        Some((m, f)) => (m.trim().to_string(), f.trim().to_string()),
        None => (s.trim().to_string(), String::new()),
    }
}

/// The generalize-phase providers the image declares: the action file
/// `System32\Sysprep\ActionFiles\Generalize.xml` (Windows 8+), the
/// registry lists SOFTWARE `Microsoft\Windows\CurrentVersion\Setup\Sysprep\Generalize`
/// and `Microsoft\Windows NT\CurrentVersion\Setup\Sysprep\Generalize`
/// (Windows Vista/7; values are `dll,function`), and third-party providers
/// under `Microsoft\Windows\CurrentVersion\Setup\SysPrepExternal\Generalize`.
pub fn providers(install: &WindowsInstall, backend: &dyn Backend) -> Vec<SysprepProvider> {
    let mut out = Vec::new();
    let xml = install.windows_path(r"System32\Sysprep\ActionFiles\Generalize.xml");
    if let Ok(bytes) = backend.read(&xml) {
        out.extend(parse_action_file(&xml, &bytes));
    }
    let Some(sw) = install.hive(&HiveId::Software) else {
        return out;
    };
    let keys = [
        (
            r"Microsoft\Windows\CurrentVersion\Setup\Sysprep\Generalize",
            false,
        ),
        (
            r"Microsoft\Windows NT\CurrentVersion\Setup\Sysprep\Generalize",
            false,
        ),
        (
            r"Microsoft\Windows\CurrentVersion\Setup\SysPrepExternal\Generalize",
            true,
        ),
    ];
    for (key, third_party) in keys {
        let Some(k) = sw.open_key(key).ok().flatten() else {
            continue;
        };
        for v in sw.values(k).unwrap_or_default() {
            let entries = match v.value_type {
                1 | 2 => vec![reg_string(&v.data)],
                7 => multi_strings(&v.data),
                _ => continue,
            };
            for e in entries.into_iter().filter(|e| !e.trim().is_empty()) {
                let (module, method) = split_entry(&e);
                out.push(SysprepProvider {
                    source: format!("SOFTWARE {key}"),
                    component: (!v.name.is_empty()).then(|| v.name.clone()),
                    module,
                    method,
                    order: None,
                    third_party,
                });
            }
        }
    }
    out
}

impl InstallDescription {
    /// A human-readable rendering, one fact a line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "(unknown)".into());
        let _ = writeln!(s, "Windows directory:   {}", self.windows_dir);
        let _ = writeln!(s, "Product:             {}", opt(&self.product_name));
        let _ = writeln!(
            s,
            "Build:               {}{}",
            opt(&self.build),
            self.display_version
                .as_ref()
                .map(|v| format!(" ({v})"))
                .unwrap_or_default()
        );
        let _ = writeln!(s, "Edition:             {}", opt(&self.edition));
        let _ = writeln!(s, "Installation type:   {}", opt(&self.installation_type));
        let _ = writeln!(s, "Product type:        {}", opt(&self.product_type));
        let _ = writeln!(s, "Architecture:        {}", opt(&self.architecture));
        let _ = writeln!(s, "Control set:         {}", opt(&self.current_control_set));
        let _ = writeln!(s, "Computer name:       {}", opt(&self.computer_name));
        let _ = writeln!(
            s,
            "Machine SID:         {}{}",
            opt(&self.machine_sid),
            self.machine_sid_source
                .as_ref()
                .map(|v| format!(" (from {v})"))
                .unwrap_or_default()
        );
        let identity = match (&self.reseal, self.generalized) {
            (Some(m), _) if m.personalized() => format!("personalized: {}", m.to_text()),
            (Some(m), true) => format!(
                "generalized, not personalized: every machine deployed from it shares its SID until each copy is personalized ({})",
                m.to_text()
            ),
            (_, true) => "generalized, not personalized: every machine deployed from it shares its SID until each copy is personalized".to_string(),
            (Some(m), false) => format!("not generalized ({})", m.to_text()),
            (None, false) => "not generalized".to_string(),
        };
        let _ = writeln!(s, "Identity:            {identity}");
        if self.domain.joined {
            let _ = writeln!(
                s,
                "Domain:              joined to {} ({}), SID {}",
                opt(&self.domain.name),
                opt(&self.domain.dns_name),
                opt(&self.domain.sid)
            );
        } else {
            let _ = writeln!(
                s,
                "Domain:              not joined (workgroup {})",
                opt(&self.domain.name)
            );
        }
        let _ = writeln!(s, "Local accounts:      {}", self.accounts.len());
        for a in &self.accounts {
            let _ = writeln!(
                s,
                "  {:<24} RID {:<6} {}{}",
                a.name,
                a.rid,
                a.sid.as_deref().unwrap_or(""),
                if a.disabled == Some(true) {
                    " (disabled)"
                } else {
                    ""
                }
            );
        }
        let g = &self.generalization;
        let _ = writeln!(s, "Image state:         {}", opt(&g.image_state));
        let _ = writeln!(s, "State.ini:           {}", opt(&g.image_state_file));
        let num = |v: Option<u32>| v.map(|n| n.to_string()).unwrap_or_else(|| "(unset)".into());
        let _ = writeln!(
            s,
            "Setup:               GeneralizationState={} SystemSetupInProgress={} SetupType={} CmdLine={}",
            num(g.generalization_state),
            num(g.system_setup_in_progress),
            num(g.setup_type),
            g.cmd_line.as_deref().unwrap_or("(unset)")
        );
        let _ = writeln!(
            s,
            "Sysprep:             succeeded tag {}, SysprepCorrupt {}",
            if g.sysprep_succeeded_tag {
                "present"
            } else {
                "absent"
            },
            num(g.sysprep_corrupt)
        );
        let _ = writeln!(
            s,
            "Device instances:    {}",
            self.device_instances
                .map(|n| n.to_string())
                .unwrap_or_else(|| "(unknown)".into())
        );
        let _ = writeln!(s, "Profiles with hives: {}", self.profiles.len());
        for p in &self.profiles {
            let _ = writeln!(s, "  {p}");
        }
        let _ = writeln!(s, "Per-user Appx:       {}", self.per_user_appx.len());
        for a in &self.per_user_appx {
            let _ = writeln!(s, "  {} ({})", a.package, a.sid);
        }
        let _ = writeln!(s, "Pending servicing:   {}", self.pending.len());
        for p in &self.pending {
            let _ = writeln!(s, "  {}: {}", p.kind, p.location);
        }
        for h in &self.replayed_hives {
            let _ = writeln!(
                s,
                "Replayed hive:       {} from {}",
                h.hive,
                h.logs.join(", ")
            );
        }
        for h in &self.failed_hives {
            let _ = writeln!(
                s,
                "Failed hive:         {} ({}): {}",
                h.id.label(),
                h.path,
                h.message
            );
        }
        for h in &self.transactions_pending {
            let _ = writeln!(s, "KTM pending:         {h}");
        }
        let _ = writeln!(s, "Generalize providers: {}", self.providers.len());
        for p in &self.providers {
            let _ = writeln!(
                s,
                "  {}{}!{}{}",
                if p.third_party { "[third-party] " } else { "" },
                p.module,
                p.method,
                p.component
                    .as_ref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsa_strings() {
        let mut b = vec![0x12, 0, 0x14, 0, 8, 0, 0, 0];
        b.extend("WORKGROUP\0".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(lsa_unicode_string(&b).as_deref(), Some("WORKGROUP"));
        assert_eq!(lsa_unicode_string(&[]), None);
        assert_eq!(
            lsa_unicode_string(&[0x40, 0, 0, 0, 8, 0, 0, 0, 65, 0]),
            None
        );
    }

    #[test]
    fn state_ini() {
        let t = b"[State]\r\nImageState=\"IMAGE_STATE_COMPLETE\"\r\n";
        assert_eq!(parse_state_ini(t).as_deref(), Some("IMAGE_STATE_COMPLETE"));
        let mut u = vec![0xff, 0xfe];
        u.extend(
            "[State]\r\nImageState=IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE\r\n"
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        );
        assert_eq!(
            parse_state_ini(&u).as_deref(),
            Some("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE")
        );
        assert_eq!(parse_state_ini(b"garbage"), None);
    }

    #[test]
    fn action_file() {
        let xml = br#"<?xml version='1.0' encoding='utf-8'?>
<sysprepInformation>
  <imaging>
    <assemblyIdentity name="Microsoft-Windows-PnpSysprep" version="10.0.0.0"/>
    <sysprepOrder order="0x1000"/>
    <sysprepModule moduleName="$(runtime.system32)\sppnp.dll" methodName="Sysprep_Generalize_Pnp"/>
  </imaging>
  <imaging>
    <assemblyIdentity name="Microsoft-Windows-Shell-Setup"/>
    <sysprepOrder order="0x3700"/>
    <sysprepModule moduleName="shsetup.dll" methodName="Sysprep_Generalize_Shell"/>
  </imaging>
</sysprepInformation>"#;
        let p = parse_action_file("Generalize.xml", xml);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].method, "Sysprep_Generalize_Pnp");
        assert_eq!(
            p[0].component.as_deref(),
            Some("Microsoft-Windows-PnpSysprep")
        );
        assert_eq!(p[1].order.as_deref(), Some("0x3700"));
        assert!(parse_action_file("x", b"<not xml").is_empty());
        assert!(parse_action_file("x", &[0xff, 0xfe, 0x3c]).is_empty());
    }

    #[test]
    fn entries() {
        assert_eq!(
            split_entry("capisp.dll,CryptoSysPrep_Specialize"),
            ("capisp.dll".into(), "CryptoSysPrep_Specialize".into())
        );
        assert_eq!(split_entry("x.dll"), ("x.dll".into(), String::new()));
    }
}
