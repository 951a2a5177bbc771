//! `identities`: removes per-machine identifiers so that each clone gets
//! its own (Windows regenerates them at specialize or on first use), and
//! resets the computer name.
//!
//! Only what exists is deleted; values that already have the wanted data are
//! left alone, so a second run plans nothing.
//!
//! Evidence per item (sysprep-internals §5; confidence in brackets):
//! * SOFTWARE `Microsoft\Cryptography` `MachineGuid`: regenerated at
//!   specialize by capisp (§5.1, medium–high). Deleting it leaves the same
//!   end state as the specialize pass will produce.
//! * SOFTWARE `Microsoft\SQMClient` `MachineId`: deleted by the SQM
//!   generalize provider (§5.4, medium–high).
//! * SOFTWARE `…\WindowsUpdate` `SusClientId`, `SusClientIdValidation`,
//!   `AccountDomainSid`, `PingID`: the WSUS client identity (§5.3, high for
//!   the values, medium that generalize deletes them).
//! * SYSTEM `<cs>\Services\Tcpip6\Parameters` `Dhcpv6DUID`: clones sharing it
//!   collide on DHCPv6 servers; Windows makes a new one when absent (§5.5,
//!   low — community practice).
//! * DHCP lease values under `Tcpip\Parameters\Interfaces\*` (and the
//!   per-network subkeys below each interface), and DHCPv6 lease values
//!   (`Dhcpv6*` except the interface's `Dhcpv6Iaid`) under
//!   `Tcpip6\Parameters\Interfaces\*`: cached leases of the reference
//!   machine (§5.5, low — image-prep frameworks clear them; the client
//!   asks for a new lease when they are absent).
//! * SOFTWARE `…\NetworkList\Profiles\*`, `Signatures\Managed\*`,
//!   `Signatures\Unmanaged\*`, `Nla\Cache\*`: network location history
//!   (§5.5, low; spnet generalize is the candidate). Windows recreates them
//!   when it meets a network.
//! * Computer name: see [`PLACEHOLDER_NAME`].
//! * SYSTEM `MountedDevices` `\DosDevices\*` (every drive letter, C:
//!   included) and `\??\Volume{…}`: drive letters and volume names tied to
//!   the reference machine's disk signatures / partition GUIDs. Decision:
//!   all of them go. Evidence: Microsoft's deployment support guidance
//!   deletes `MountedDevices` in applied images so that Windows lands on C:
//!   (sysprep-fidelity "Other points", medium); the `install.wim` Microsoft
//!   ships has an empty `MountedDevices`, which is the state Setup itself
//!   deploys from; the XP-era KB [D21] says sysprep reset drive letters
//!   (§5.6, low; Vista+ unknown). Keeping C: would bind it to the reference
//!   disk's signature or partition GUID, which a clone deployed to another
//!   disk (or re-partitioned by the deployment tool) does not have; a stale
//!   entry can then hand C: to the wrong volume. Consequence: the mount
//!   manager assigns letters again at the next boot; the Windows volume gets
//!   C: (the first free letter) and data volumes the next ones, which may
//!   differ from the reference machine's. When the reference machine ran
//!   Windows from another letter (SOFTWARE `SystemRoot` not on C:), that is
//!   reported, since paths recorded with that letter will not match.
//!   (`devices` on its own only removes removable-media entries, whose
//!   devices it uninstalls; it leaves fixed-disk entries to this one.)
//! * SYSTEM `RNG` `Seed`: the saved RNG seed (§5.1, low — only a name seen
//!   near setupcl handling). Deleted so clones do not start from one saved
//!   seed; Windows writes a new seed while running, and mixes in other
//!   entropy at boot, so deleting it costs nothing. `ExternalEntropy` is
//!   left alone (setupcl may use it).

use crate::context::PlanContext;
use crate::edit::{PlannedEdit, RegEdit};
use crate::error::Result;
use crate::hives::HiveId;

use super::{Operation, Plan, delete_key, delete_value, set_sz, values_of};

const NAME: &str = "identities";

/// The computer name left in the image when the answer file names none.
///
/// Decision: the specialize pass sets the computer name from the answer
/// file's `Microsoft-Windows-Shell-Setup\ComputerName`, or generates a
/// random one when it is absent, empty or `*` (Shell-Setup ComputerName
/// doc [D12], high). What generalize itself does to the name is unknown
/// (low). Deleting the values would leave the first boot, up to specialize,
/// without a name — a state no Windows image is known to boot in — so the
/// existing values are set to a neutral placeholder instead: the reference
/// machine's name no longer leaks into clones, and the boot before
/// specialize looks like a renamed machine (a normal, pending-rename state).
/// When the answer file gives a concrete name, that name is used, since
/// specialize will set it anyway. Only values that exist are changed.
pub const PLACEHOLDER_NAME: &str = "WIN-GENERALIZED";

/// DHCPv4 lease values cached per interface.
pub const DHCP_LEASE_VALUES: [&str; 15] = [
    "DhcpIPAddress",
    "DhcpSubnetMask",
    "DhcpServer",
    "Lease",
    "LeaseObtainedTime",
    "LeaseTerminatesTime",
    "T1",
    "T2",
    "DhcpDefaultGateway",
    "DhcpNameServer",
    "DhcpDomain",
    "DhcpSubnetMaskOpt",
    "DhcpInterfaceOptions",
    "DhcpGatewayHardware",
    "DhcpGatewayHardwareCount",
];

/// SOFTWARE key of the network location history.
const NETWORK_LIST: &str = r"Microsoft\Windows NT\CurrentVersion\NetworkList";

/// Resets machine identities.
#[derive(Debug, Clone, Copy, Default)]
pub struct Identities;

/// Whether a name is usable as a NetBIOS computer name (1–15 characters of
/// letters, digits and hyphens, not all digits).
fn valid_computer_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.chars().all(|c| c.is_ascii_digit())
}

/// The name this run leaves in the image.
pub fn target_computer_name(ctx: &PlanContext) -> String {
    ctx.unattend
        .and_then(|u| u.computer_name.as_deref())
        .filter(|n| valid_computer_name(n))
        .map(str::to_string)
        .unwrap_or_else(|| PLACEHOLDER_NAME.to_string())
}

/// Whether a value is a DHCPv6 lease value (not the interface's IAID).
fn is_dhcpv6_lease(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("dhcpv6") && n != "dhcpv6iaid"
}

impl Identities {
    /// Deletes the lease values of one interface key and of its per-network
    /// subkeys.
    fn interface_leases(ctx: &PlanContext, plan: &mut Plan, key: &str, v6: bool, depth: u32) {
        for v in values_of(ctx, &HiveId::System, key) {
            let lease = DHCP_LEASE_VALUES
                .iter()
                .any(|n| n.eq_ignore_ascii_case(&v.name))
                || (v6 && is_dhcpv6_lease(&v.name));
            if lease {
                plan.edits.push(PlannedEdit::reg(
                    NAME,
                    HiveId::System,
                    RegEdit::DeleteValue {
                        key: key.to_string(),
                        name: v.name,
                    },
                    if v6 {
                        "DHCPv6 lease of the reference machine"
                    } else {
                        "DHCP lease of the reference machine"
                    },
                ));
            }
        }
        if depth < 1 {
            for sub in ctx.subkeys(&HiveId::System, key) {
                Self::interface_leases(ctx, plan, &format!(r"{key}\{sub}"), v6, depth + 1);
            }
        }
    }
}

impl Operation for Identities {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "remove per-machine identities (MachineGuid, SQM and WSUS ids, DUID, DHCP leases, network history, drive letters) and reset the computer name"
    }

    fn default_enabled(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &PlanContext) -> Result<Plan> {
        let mut plan = Plan::default();
        let sw = HiveId::Software;
        let sys = HiveId::System;

        // SOFTWARE identities.
        plan.push(delete_value(
            ctx,
            NAME,
            sw.clone(),
            r"Microsoft\Cryptography",
            "MachineGuid",
            "machine GUID: specialize creates a new one",
        ));
        plan.push(delete_value(
            ctx,
            NAME,
            sw.clone(),
            r"Microsoft\SQMClient",
            "MachineId",
            "telemetry machine id: a new one is created on the deployed machine",
        ));
        for name in [
            "SusClientId",
            "SusClientIdValidation",
            "AccountDomainSid",
            "PingID",
        ] {
            plan.push(delete_value(
                ctx,
                NAME,
                sw.clone(),
                r"Microsoft\Windows\CurrentVersion\WindowsUpdate",
                name,
                "WSUS client identity: the client registers again with a new id",
            ));
        }

        // Network location history.
        for parent in [
            r"Profiles",
            r"Signatures\Managed",
            r"Signatures\Unmanaged",
            r"Nla\Cache",
        ] {
            let key = format!(r"{NETWORK_LIST}\{parent}");
            for sub in ctx.subkeys(&sw, &key) {
                plan.push(delete_key(
                    ctx,
                    NAME,
                    sw.clone(),
                    &format!(r"{key}\{sub}"),
                    "network location history of the reference machine",
                ));
            }
        }

        // Per control set: DUID, DHCP leases, computer name.
        let name = target_computer_name(ctx);
        for cs in ctx.control_sets() {
            plan.push(delete_value(
                ctx,
                NAME,
                sys.clone(),
                &format!(r"{cs}\Services\Tcpip6\Parameters"),
                "Dhcpv6DUID",
                "DHCPv6 DUID (carries the reference machine's MAC): Windows makes a new one",
            ));
            for (stack, v6) in [("Tcpip", false), ("Tcpip6", true)] {
                let ifs = format!(r"{cs}\Services\{stack}\Parameters\Interfaces");
                for i in ctx.subkeys(&sys, &ifs) {
                    Self::interface_leases(ctx, &mut plan, &format!(r"{ifs}\{i}"), v6, 0);
                }
            }
            let names = [
                (
                    format!(r"{cs}\Control\ComputerName\ComputerName"),
                    "ComputerName",
                ),
                (
                    format!(r"{cs}\Control\ComputerName\ActiveComputerName"),
                    "ComputerName",
                ),
                (format!(r"{cs}\Services\Tcpip\Parameters"), "Hostname"),
                (format!(r"{cs}\Services\Tcpip\Parameters"), "NV Hostname"),
            ];
            for (key, value) in names {
                // Only names that exist are reset (as the stored type, REG_SZ).
                if ctx.value(&sys, &key, value).is_some() {
                    plan.push(set_sz(
                        ctx,
                        NAME,
                        sys.clone(),
                        &key,
                        value,
                        &name,
                        "computer name: specialize sets the final name (answer file or random)",
                    ));
                }
            }
        }

        // Drive letters and volume names.
        for v in values_of(ctx, &sys, "MountedDevices") {
            let n = v.name.to_ascii_lowercase();
            if n.starts_with(r"\dosdevices\") || n.starts_with(r"\??\volume{") {
                plan.edits.push(PlannedEdit::reg(
                    NAME,
                    sys.clone(),
                    RegEdit::DeleteValue {
                        key: "MountedDevices".into(),
                        name: v.name,
                    },
                    "drive letter / volume name tied to the reference machine's disks",
                ));
            }
        }

        let resets_letters = plan.edits.iter().any(|e| {
            matches!(&e.edit, crate::edit::Edit::Registry {
                change: RegEdit::DeleteValue { key, name },
                ..
            } if key == "MountedDevices" && name.to_ascii_lowercase().starts_with(r"\dosdevices\"))
        });
        if resets_letters {
            if let Some(v) = ctx.value(&sw, r"Microsoft\Windows NT\CurrentVersion", "SystemRoot") {
                let root = crate::context::reg_string(&v.data);
                let letter = root.chars().next().filter(|c| c.is_ascii_alphabetic());
                if root.get(1..2) == Some(":")
                    && letter.is_some_and(|c| !c.eq_ignore_ascii_case(&'C'))
                {
                    plan.not_done(
                        NAME,
                        format!(
                            "the reference machine ran Windows from {root}; drive letters are reset, so a clone's Windows volume gets C: (the first free letter) and paths recorded with {}: will not match",
                            letter.unwrap_or('?')
                        ),
                    );
                }
            }
        }

        plan.push(delete_value(
            ctx,
            NAME,
            sys.clone(),
            "RNG",
            "Seed",
            "saved RNG seed: clones should not share it",
        ));

        Ok(plan)
    }
}
