//! Preflight checks: read-only findings that refuse or warn before anything
//! is planned (DESIGN.md decision 8, reference/sysprep-internals.md §6).
//!
//! | id | severity | rule |
//! |---|---|---|
//! | `dirty-hive-without-logs` | refuse | a hive is dirty and its logs cannot recover it |
//! | `hive-unreadable` | refuse | a hive exists (or SYSTEM is missing) but cannot be loaded |
//! | `hibernated` | refuse | `hiberfil.sys` at the volume root starts with `hibr`/`wake` (any case) |
//! | `domain-controller` | refuse | ProductType `LanmanNT`, an installed NTDS service, or PolPrDmS = PolAcDmS |
//! | `domain-joined` | unless forced | SECURITY `Policy\PolPrDmS` holds a SID |
//! | `appx-per-user` | unless forced | per-user Appx packages not provisioned for all users |
//! | `pending-servicing` | unless forced | pending.xml, PendingFileRenameOperations, CBS/WU reboot keys |
//! | `sysprep-corrupt` | unless forced | SOFTWARE `…\Setup\Sysprep` → `SysprepCorrupt` set |
//! | `stale-answer-file` | unless forced | unattend.xml / autounattend.xml left in Panther or Sysprep |
//! | `unsupported-server-role` | unless forced | services of roles sysprep does not support |
//! | `efs` | unless forced | SECURITY `Policy\PolEfDat` present |
//! | `already-generalized` | info | ImageState is already `IMAGE_STATE_GENERALIZE_RESEAL_TO_*` |
//! | `hive-replayed` | info | dirty hives were recovered from their logs |
//! | `ktm-transactions-pending` | warning | a hive's base block flags KTM transactions |
//!
//! Hibernation: the file starts with the `PO_MEMORY_IMAGE` header whose
//! signature is `hibr` (a full hibernation or a Fast Startup image) or
//! `wake` (a resume was started from it and did not finish); both hold a
//! memory image that Windows will restore over anything written offline.
//! Windows 8 and later zero the header once they have booted, and a
//! consumed image may carry `RSTR`; neither holds restorable state (the
//! file is then only pre-allocated space), so they are not refused.

use serde::Serialize;

use crate::backend::Backend;
use crate::describe::{InstallDescription, current_control_set, hive_value, key_exists};
use crate::hives::HiveId;
use crate::install::WindowsInstall;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The image cannot be generalized correctly; `--force` does not help.
    Refuse,
    /// Sysprep itself would refuse; proceed only with `--force`.
    RefuseUnlessForced,
    /// Worth knowing; does not stop the run.
    Warning,
    /// Informational.
    Info,
}

impl Severity {
    /// Whether a finding of this severity stops the run.
    pub fn blocks(self, force: bool) -> bool {
        match self {
            Severity::Refuse => true,
            Severity::RefuseUnlessForced => !force,
            Severity::Warning | Severity::Info => false,
        }
    }
}

/// One preflight finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier (`hibernated`, `domain-joined`, …).
    pub id: &'static str,
    /// How serious it is.
    pub severity: Severity,
    /// What was found, naming the file or key.
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

/// Whether any finding stops the run.
pub fn blocked(findings: &[Finding], force: bool) -> bool {
    findings.iter().any(|f| f.severity.blocks(force))
}

/// Services whose presence means a server role sysprep does not support is
/// installed. Source: Microsoft, "Sysprep support for server roles"
/// (learn.microsoft.com/windows-hardware/manufacture/desktop/sysprep-support-for-server-roles):
/// AD CS, AD DS, AD FS, AD LDS, AD RMS, DHCP Server (2008 R2 and later) and
/// Fax Server are listed as not supported. AD DS is the separate
/// `domain-controller` refusal; AD RMS has no service of its own (it runs
/// in IIS) and is not detected. `ADAM_` is a prefix: AD LDS names one
/// service per instance `ADAM_<instance>`. A service counts when its key
/// has an `ImagePath` value (bare leftover keys do not).
pub const UNSUPPORTED_ROLE_SERVICES: [(&str, &str, bool); 5] = [
    ("CertSvc", "Active Directory Certificate Services", false),
    ("adfssrv", "Active Directory Federation Services", false),
    (
        "ADAM_",
        "Active Directory Lightweight Directory Services",
        true,
    ),
    ("DHCPServer", "DHCP Server", false),
    ("Fax", "Fax Server (servers only)", false),
];

/// Answer files that Windows Setup would pick up on the next boot, relative
/// to the Windows directory.
pub const STALE_ANSWER_FILES: [&str; 4] = [
    r"Panther\unattend.xml",
    r"Panther\autounattend.xml",
    r"Panther\Unattend\unattend.xml",
    r"System32\Sysprep\unattend.xml",
];

fn finding(id: &'static str, severity: Severity, message: String, fix: &str) -> Finding {
    Finding {
        id,
        severity,
        message,
        fix: fix.to_string(),
    }
}

/// Whether a service is installed in the control set: its key exists and
/// has an `ImagePath` value.
fn service_installed(install: &WindowsInstall, ccs: &str, name: &str) -> bool {
    hive_value(
        install,
        &HiveId::System,
        &format!(r"{ccs}\Services\{name}"),
        "ImagePath",
    )
    .is_some()
}

/// Whether the NTDS (AD DS) service is installed: on a domain controller
/// `Services\NTDS` has `ImagePath` and `Parameters` → `DSA Database file`;
/// client systems carry a bare `Services\NTDS` key (only `RID Values`),
/// which does not count.
fn ntds_installed(install: &WindowsInstall, ccs: &str) -> bool {
    service_installed(install, ccs, "NTDS")
        || hive_value(
            install,
            &HiveId::System,
            &format!(r"{ccs}\Services\NTDS\Parameters"),
            "DSA Database file",
        )
        .is_some()
}

/// Runs every check. `desc` must describe `install` (see
/// [`crate::describe::describe`]).
pub fn preflight(
    install: &WindowsInstall,
    backend: &dyn Backend,
    desc: &InstallDescription,
) -> Vec<Finding> {
    use Severity::*;
    let mut out = Vec::new();

    // Hives that cannot be used.
    for e in &install.load_errors {
        if e.dirty_without_logs {
            out.push(finding(
                "dirty-hive-without-logs",
                Refuse,
                format!(
                    "hive {} ({}) is dirty (Windows did not finish writing it) and its transaction logs (.LOG1/.LOG2) cannot bring it up to date: {}",
                    e.id.label(),
                    e.path,
                    e.message
                ),
                "capture the hive together with its .LOG1/.LOG2 files, or boot Windows, shut it down fully (shutdown /s /t 0, Fast Startup off) and capture again",
            ));
        } else {
            out.push(finding(
                "hive-unreadable",
                Refuse,
                format!(
                    "hive {} ({}) cannot be loaded: {}",
                    e.id.label(),
                    e.path,
                    e.message
                ),
                "check that the image is complete and not damaged; repair or recapture it",
            ));
        }
    }

    // Hibernation / Fast Startup.
    if let Ok(head) = backend.read_head("hiberfil.sys", 4) {
        let sig = head.to_ascii_lowercase();
        if sig == b"hibr" || sig == b"wake" {
            out.push(finding(
                "hibernated",
                Refuse,
                format!(
                    "hiberfil.sys at the volume root holds a live hibernation image (signature \"{}\"): Windows was hibernated or shut down with Fast Startup, and would restore that memory over any offline change",
                    String::from_utf8_lossy(&head)
                ),
                "boot Windows, shut it down fully (shutdown /s /t 0, Fast Startup off, or powercfg /h off) and capture again",
            ));
        }
    }

    // Domain controller / domain member.
    let ccs = desc
        .current_control_set
        .clone()
        .or_else(|| current_control_set(install));
    let lanman = desc
        .product_type
        .as_deref()
        .is_some_and(|p| p.eq_ignore_ascii_case("LanmanNT"));
    let ntds = ccs.as_deref().is_some_and(|c| ntds_installed(install, c));
    let dc_sid = desc.domain.sid.is_some() && desc.domain.sid == desc.machine_sid;
    if lanman || ntds || dc_sid {
        let mut why = Vec::new();
        if lanman {
            why.push("SYSTEM Control\\ProductOptions ProductType is LanmanNT".to_string());
        }
        if ntds {
            why.push(format!(
                "the NTDS service is installed (SYSTEM {}\\Services\\NTDS)",
                ccs.as_deref().unwrap_or("")
            ));
        }
        if dc_sid {
            why.push("SECURITY Policy\\PolPrDmS equals PolAcDmS".to_string());
        }
        out.push(finding(
            "domain-controller",
            Refuse,
            format!("this installation is a domain controller: {}", why.join("; ")),
            "sysprep does not support Active Directory Domain Services: demote the server (Uninstall-ADDSDomainController) and capture again, or build the image without the role",
        ));
    } else if desc.domain.joined {
        out.push(finding(
            "domain-joined",
            RefuseUnlessForced,
            format!(
                "the machine is joined to domain {}{} (SECURITY Policy\\PolPrDmS holds {})",
                desc.domain.name.as_deref().unwrap_or("(unnamed)"),
                desc.domain
                    .dns_name
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default(),
                desc.domain.sid.as_deref().unwrap_or("a SID")
            ),
            "leave the domain (Remove-Computer, join a workgroup), reboot and capture again; or pass --force to generalize with the membership (clones will share the machine account)",
        ));
    }

    // Per-user Appx packages: every one named, with the commands that fix
    // the reference machine.
    if !desc.per_user_appx.is_empty() {
        let store = crate::describe::APPX_STORE;
        let provisioned: Vec<String> = install
            .hive(&HiveId::Software)
            .map(|h| crate::describe::subkey_names(h, &format!(r"{store}\Applications")))
            .unwrap_or_default();
        let list: Vec<String> = desc
            .per_user_appx
            .iter()
            .map(|a| format!("{} (user {})", a.package, a.sid))
            .collect();
        let mut commands: Vec<String> = desc
            .per_user_appx
            .iter()
            .map(|a| {
                format!(
                    "Remove-AppxPackage -Package '{}' -User '{}'",
                    a.package, a.sid
                )
            })
            .collect();
        // A provisioned copy of the same family at another version (an app
        // updated for one user): remove it too if the app is not wanted.
        for a in &desc.per_user_appx {
            let family = appx_family(&a.package);
            for p in &provisioned {
                if appx_family(p) == family && !p.eq_ignore_ascii_case(&a.package) {
                    let c = format!("Remove-AppxProvisionedPackage -Online -PackageName '{p}'");
                    if !commands.contains(&c) {
                        commands.push(c);
                    }
                }
            }
        }
        out.push(Finding {
            id: "appx-per-user",
            severity: RefuseUnlessForced,
            message: format!(
                "{} Appx package(s) are installed for a user but not provisioned for all users (SOFTWARE {store}\\<SID>): {}",
                desc.per_user_appx.len(),
                list.join(", ")
            ),
            fix: format!(
                "on the reference machine, in an elevated PowerShell, run: {}; (on Windows 10 1809 and later `Remove-AppxPackage -Package <name> -AllUsers` removes a package for every user at once); or, to keep an app for every new user, provision it (Add-AppxProvisionedPackage -Online); then capture again. sysprep would fail with 0x80073CF2",
                commands.join("; ")
            ),
        });
    }

    // Pending reboot or servicing.
    if !desc.pending.is_empty() {
        let list: Vec<String> = desc
            .pending
            .iter()
            .map(|p| format!("{} ({})", p.kind, p.location))
            .collect();
        out.push(finding(
            "pending-servicing",
            RefuseUnlessForced,
            format!("a reboot or servicing operation is pending: {}", list.join("; ")),
            "boot Windows, let updates and pending operations finish (restart until none remain), shut it down fully and capture again",
        ));
    }

    // Sysprep failure latch.
    let corrupt = hive_value(
        install,
        &HiveId::Software,
        crate::describe::SYSPREP_KEY,
        "SysprepCorrupt",
    );
    if let Some(v) = corrupt {
        let zero = v.data.len() >= 4 && v.data.iter().all(|&b| b == 0);
        if !zero {
            out.push(finding(
                "sysprep-corrupt",
                RefuseUnlessForced,
                format!(
                    "SOFTWARE {}\\SysprepCorrupt is set: an earlier sysprep run failed and Windows marked the installation as not generalizable",
                    crate::describe::SYSPREP_KEY
                ),
                "find why the earlier sysprep run failed (Windows\\System32\\Sysprep\\Panther\\setupact.log); rebuild the image, or pass --force to generalize anyway",
            ));
        }
    }

    // Stale answer files.
    let stale: Vec<String> = STALE_ANSWER_FILES
        .iter()
        .map(|p| install.windows_path(p))
        .filter(|p| backend.exists(p) && !backend.is_dir(p))
        .collect();
    if !stale.is_empty() {
        out.push(finding(
            "stale-answer-file",
            RefuseUnlessForced,
            format!(
                "answer file(s) left in the image would be used by Windows Setup on the next boot: {}",
                stale.join(", ")
            ),
            "delete them, or give the answer file you want with --unattend; pass --force to keep them",
        ));
    }

    // Server roles sysprep does not support.
    if let Some(ccs) = ccs.as_deref() {
        let server = desc
            .product_type
            .as_deref()
            .is_some_and(|p| !p.eq_ignore_ascii_case("WinNT"));
        let services = install
            .hive(&HiveId::System)
            .map(|h| crate::describe::subkey_names(h, &format!(r"{ccs}\Services")))
            .unwrap_or_default();
        let mut roles = Vec::new();
        for (svc, role, prefix) in UNSUPPORTED_ROLE_SERVICES {
            if svc == "Fax" && !server {
                continue;
            }
            for name in &services {
                let matches = if prefix {
                    name.len() > svc.len()
                        && name
                            .get(..svc.len())
                            .is_some_and(|h| h.eq_ignore_ascii_case(svc))
                } else {
                    name.eq_ignore_ascii_case(svc)
                };
                if matches && service_installed(install, ccs, name) {
                    roles.push(format!("{role} (SYSTEM {ccs}\\Services\\{name})"));
                }
            }
        }
        if !roles.is_empty() {
            out.push(finding(
                "unsupported-server-role",
                RefuseUnlessForced,
                format!(
                    "server role(s) that sysprep does not support are installed: {}",
                    roles.join("; ")
                ),
                "remove the role before capturing and install it after deployment (see Microsoft's \"Sysprep support for server roles\"), or pass --force",
            ));
        }
    }

    // EFS.
    if key_exists(install, &HiveId::Security, r"Policy\PolEfDat") {
        out.push(finding(
            "efs",
            RefuseUnlessForced,
            "SECURITY Policy\\PolEfDat is present: an EFS policy (recovery agent) is configured, so encrypted files may exist; their keys are protected under the current machine and user SIDs and may become unreadable after generalization. Only the registry was checked: encrypted files themselves ($EFS streams) are not visible through this backend".to_string(),
            "decrypt the files (cipher /d /s:<dir>) or export the EFS certificates before capturing; pass --force if no encrypted files matter",
        ));
    }

    // Informational.
    if desc.generalization.already_generalized() {
        out.push(finding(
            "already-generalized",
            Info,
            format!(
                "the image is already generalized (ImageState {})",
                desc.generalization
                    .image_state
                    .as_deref()
                    .or(desc.generalization.image_state_file.as_deref())
                    .unwrap_or("")
            ),
            "nothing needed; running again re-applies the generalized state",
        ));
    }
    for h in &desc.replayed_hives {
        out.push(finding(
            "hive-replayed",
            Info,
            format!(
                "hive {} ({}) was dirty and was brought up to date from {}",
                h.hive,
                h.path,
                h.logs.join(", ")
            ),
            "nothing needed; the hive is written back consistent and its logs emptied",
        ));
    }
    for h in &desc.transactions_pending {
        out.push(finding(
            "ktm-transactions-pending",
            Warning,
            format!(
                "hive {h} flags pending KTM transactions (base block flag bit 0); those live in separate .blf/.regtrans-ms logs that are not replayed"
            ),
            "if in doubt, boot Windows once, shut it down fully and capture again",
        ));
    }
    out
}

/// An Appx package's family key (`Name` and publisher id of
/// `Name_Version_Arch_ResourceId_PublisherId`), lower case.
fn appx_family(full_name: &str) -> String {
    let lower = full_name.to_ascii_lowercase();
    let name = lower.split('_').next().unwrap_or_default();
    let publisher = lower.rsplit('_').next().unwrap_or_default();
    format!("{name}_{publisher}")
}
