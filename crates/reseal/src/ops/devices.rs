//! `devices`: uninstalls the reference machine's hardware devices, as
//! sysprep's generalize does (sysprep-internals §4, DESIGN decision 5), so
//! that the image enumerates the hardware it boots on afresh. Driver
//! packages (DriverStore, `INF`, the DRIVERS hive) are never touched: only
//! device *instances* and what names them go.
//!
//! Evidence: "device state for hardware is removed" and drivers are kept
//! ([D3], [D5], high for the behaviour); driver instance keys go with their
//! devices (uninstall semantics, medium); interfaces and containers are
//! presumed to go with them (low). Sysprep's own logs show it even tries to
//! uninstall root-enumerated devnodes and tolerates the failure; this
//! operation keeps them (see [`KEEP_ENUMERATORS`]).
//!
//! Skipped entirely with `--persist-devices`, `--mode vm`, or an answer file
//! whose `Microsoft-Windows-PnpSysprep/PersistAllDeviceInstalls` is true
//! (sysprep keeps device instances in all three cases).
//!
//! In every control set (`ControlSet001`, ... — `Select` Current, Default
//! and LastKnownGood may name different ones, all are handled), planned in
//! parallel, one task per control set:
//!
//! * `Enum\<enumerator>` of every enumerator not in the keep-list, with all
//!   its device and instance keys (so no empty enumerator or device key is
//!   left behind);
//! * each removed instance's driver key `Control\Class\{class}\NNNN` (named
//!   by its `Driver` value) unless a kept instance names the same key;
//! * device-interface keys `Control\DeviceClasses\{interface}\##?#...` whose
//!   `DeviceInstance` (or, without one, the name itself) is in a removed
//!   enumerator;
//! * references in `Control\DeviceContainers\{c}\BaseContainers\{c}`: values
//!   named by a removed instance path (instance paths hold backslashes, so
//!   they can only be value names, never key names); a container left with
//!   no kept device at all goes as a whole;
//! * for network adapters (the removed driver key's `NetCfgInstanceId`, or
//!   a connection whose `PnPInstanceId` names a removed device):
//!   `Control\Network\{4D36E972-...}\{id}`, `Control\NetworkSetup2\Interfaces\{id}`,
//!   `Services\Tcpip\Parameters\Interfaces\{id}`, `...\Adapters\{id}`,
//!   `...\DNSRegisteredAdapters\{id}`, `Services\Tcpip6\Parameters\Interfaces\{id}`
//!   and `Services\NetBT\Parameters\Interfaces\Tcpip_{id}` (medium: these
//!   are all keyed by the adapter's id and rebuilt when an adapter is
//!   installed).
//!
//! Once per SYSTEM hive: `MountedDevices` values whose data is the UTF-16
//! device-interface form (`\??\<ENUM>#<device>#<instance>#{guid}` or
//! `_??_...`) of a device in a removed enumerator: drive letters and volume
//! names of removable media, CD/DVD drives and floppies of the reference
//! machine (low: XP-era reset of drive letters, [D21]). Entries of fixed-disk
//! volumes (data = disk signature + offset, or `DMIO:ID:` + GPT partition
//! GUID) name no device instance, so this operation leaves them; the
//! `identities` operation resets every drive letter, C: included (see
//! there for why), so with the default operations no letter of the
//! reference machine survives. Only when `devices` runs without
//! `identities` do fixed-disk letters stay.
//!
//! The setupapi device logs are deleted by `leftovers`. Not handled (kept):
//! `Control\Video` and `Control\GraphicsDrivers` display configurations,
//! `Control\usbflags`, and the Windows 7 `CriticalDeviceDatabase` (driver
//! matching data, not instances).
//!
//! After the edits no reference dangles: every kept instance's `Driver`
//! names an existing class key (class keys named by kept instances are never
//! deleted), and no interface, container or mounted-device entry names a
//! device of a removed enumerator. A second plan after applying plans
//! nothing, because nothing in a removed enumerator is left.

use std::collections::{BTreeSet, HashSet};

use rayon::prelude::*;
use reseal_hive::{Hive, KeyId};

use crate::context::{PlanContext, reg_string};
use crate::edit::{PlannedEdit, RegEdit};
use crate::error::{ResealError, Result};
use crate::hives::HiveId;

use super::{Operation, Plan};

const NAME: &str = "devices";

/// The network adapter setup class (`Control\Network` is keyed by it).
pub const NET_CLASS: &str = "{4D36E972-E325-11CE-BFC1-08002BE10318}";

/// Enumerators whose device instances are kept, each with the reason.
/// Every other enumerator under `Enum` is hardware (PCI, ACPI, USB, HID,
/// SCSI, IDE, STORAGE, USBSTOR, DISPLAY, HDAUDIO, BTH*, VMBUS, VPCBUS,
/// GUID-named buses of vendor drivers, ...) and is removed.
///
/// Decided against keeping:
/// * `STORAGE` (`Volume`, `VolumeSnapshot`, `RemovableMedia`): one instance
///   per partition or shadow copy of the reference machine's disks, named by
///   its disk and offset; the root-enumerated volume manager (kept) creates
///   the volumes it finds on every boot with the in-box `volume.inf`.
/// * `ACPI`, `PCI`, `SCSI`, `IDE`, ...: the firmware and controllers of the
///   reference machine. The boot path is re-detected on first boot from the
///   in-box driver database; `boot-drivers` makes sure the storage drivers
///   of likely targets are boot-start.
pub const KEEP_ENUMERATORS: &[(&str, &str)] = &[
    (
        "HTREE",
        "HTREE\\ROOT\\0 is the root of the device tree; the PnP manager cannot start without it",
    ),
    (
        "ROOT",
        "root-enumerated devices installed by setup and software (volume manager, UMBus, SWENUM, composite bus, basic display, WAN/ISATAP/Teredo adapters, LEGACY_* services on Windows 7): not hardware, and volmgr is needed to boot",
    ),
    (
        "SWD",
        "software devices created through SwDeviceCreate (Windows 8+: print queues, WAN miniports, audio endpoints); their owners re-create or clean them",
    ),
    (
        "SW",
        "kernel-streaming software devices enumerated by SWENUM (a root device): streaming proxies, trusted audio",
    ),
    (
        "UMB",
        "user-mode bus devices created by the root-enumerated UMBus for software enumerators (printer bus, terminal services bus, WPD bus root)",
    ),
    (
        "ACPI_HAL",
        "the HAL's ACPI system device (ACPI_HAL\\PNP0C08\\0), the same on every ACPI x86/x64 machine and VM; the firmware devices hang below it",
    ),
];

/// Whether `enumerator` is in [`KEEP_ENUMERATORS`] (case-insensitive).
pub fn is_kept_enumerator(enumerator: &str) -> bool {
    KEEP_ENUMERATORS
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case(enumerator))
}

/// Whether a device instance path (`PCI\VEN_...\3&...`) belongs to an
/// enumerator this operation removes.
pub fn is_removed_instance(instance: &str) -> bool {
    let e = instance
        .trim_start_matches('\\')
        .split('\\')
        .next()
        .unwrap_or("");
    !e.is_empty() && !is_kept_enumerator(e)
}

/// The enumerator of a device-interface name (`##?#PCI#VEN_...#{guid}`).
fn interface_enumerator(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("##?#")?;
    rest.split('#').next().filter(|e| !e.is_empty())
}

/// The enumerator named by a `MountedDevices` value's data when it is the
/// UTF-16 device-interface form (`\??\ENUM#...` or `_??_ENUM#...`).
pub fn mounted_device_enumerator(data: &[u8]) -> Option<String> {
    if data.len() < 10 || data.len() % 2 != 0 {
        return None;
    }
    let text = reg_string(data);
    let rest = text
        .strip_prefix("\\??\\")
        .or_else(|| text.strip_prefix("_??_"))?;
    let e = rest.split('#').next()?;
    (!e.is_empty() && e.len() < rest.len() && !e.contains('\\')).then(|| e.to_string())
}

/// `{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}`.
fn looks_like_guid(s: &str) -> bool {
    s.len() == 38
        && s.starts_with('{')
        && s.ends_with('}')
        && s[1..37].chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// A `Driver` value as a class-key path relative to `Control\Class`
/// (`{class}\NNNN`), or `None` when it has another shape (never a class key
/// itself or anything outside).
fn driver_rel(driver: &str) -> Option<String> {
    let mut parts = driver.trim().split('\\').filter(|p| !p.is_empty());
    let class = parts.next()?;
    let inst = parts.next()?;
    (parts.next().is_none() && looks_like_guid(class) && inst != "." && inst != "..")
        .then(|| format!("{class}\\{inst}"))
}

type HResult<T> = reseal_hive::Result<T>;

fn children(h: &Hive, k: KeyId) -> HResult<Vec<(String, KeyId)>> {
    h.subkeys(k)?
        .into_iter()
        .map(|c| Ok((h.key_info(c)?.name, c)))
        .collect()
}

/// A REG_SZ / REG_EXPAND_SZ value as text.
fn text_value(h: &Hive, k: KeyId, name: &str) -> HResult<Option<String>> {
    Ok(h.value(k, name)?
        .filter(|v| v.value_type == 1 || v.value_type == 2)
        .map(|v| reg_string(&v.data)))
}

fn del_key(key: String, reason: String) -> PlannedEdit {
    PlannedEdit::reg(NAME, HiveId::System, RegEdit::DeleteKey { key }, reason)
}

fn del_value(key: String, name: String, reason: String) -> PlannedEdit {
    PlannedEdit::reg(
        NAME,
        HiveId::System,
        RegEdit::DeleteValue { key, name },
        reason,
    )
}

/// Plans one control set (`cs` is its key name, e.g. `ControlSet001`).
fn plan_control_set(h: &Hive, cs: &str) -> HResult<Vec<PlannedEdit>> {
    let mut edits = Vec::new();
    let enum_path = format!("{cs}\\Enum");
    let Some(enum_key) = h.open_key(&enum_path)? else {
        return Ok(edits);
    };

    // Enum: whole enumerators, remembering what is removed and which driver
    // keys the kept instances name.
    let mut kept_drivers: HashSet<String> = HashSet::new();
    let mut removed: Vec<(String, Option<String>)> = Vec::new();
    for (ename, ek) in children(h, enum_key)? {
        let kept = is_kept_enumerator(&ename);
        let mut count = 0usize;
        for (dname, dk) in children(h, ek)? {
            for (iname, ik) in children(h, dk)? {
                let driver = text_value(h, ik, "Driver")?;
                if kept {
                    if let Some(rel) = driver.as_deref().and_then(driver_rel) {
                        kept_drivers.insert(rel.to_ascii_lowercase());
                    }
                } else {
                    removed.push((format!("{ename}\\{dname}\\{iname}"), driver));
                    count += 1;
                }
            }
        }
        if !kept {
            edits.push(del_key(
                format!("{enum_path}\\{ename}"),
                format!(
                    "uninstall the {count} hardware device instance(s) enumerated by {ename} (sysprep generalize removes device state; Windows re-detects the hardware on first boot)"
                ),
            ));
        }
    }

    // Driver keys of removed instances; NIC ids from them.
    let class_root = format!("{cs}\\Control\\Class");
    let mut nic_ids: BTreeSet<String> = BTreeSet::new();
    let mut kept_nic_ids: HashSet<String> = HashSet::new();
    for rel in &kept_drivers {
        if let Some(k) = h.open_key(&format!("{class_root}\\{rel}"))? {
            if let Some(id) = text_value(h, k, "NetCfgInstanceId")? {
                kept_nic_ids.insert(id.trim().to_ascii_uppercase());
            }
        }
    }
    let mut seen: HashSet<String> = HashSet::new();
    for (inst, driver) in &removed {
        let Some(rel) = driver.as_deref().and_then(driver_rel) else {
            continue;
        };
        let lower = rel.to_ascii_lowercase();
        if kept_drivers.contains(&lower) || !seen.insert(lower) {
            continue;
        }
        let path = format!("{class_root}\\{rel}");
        if let Some(k) = h.open_key(&path)? {
            if let Some(id) = text_value(h, k, "NetCfgInstanceId")? {
                nic_ids.insert(id.trim().to_ascii_uppercase());
            }
            edits.push(del_key(
                path,
                format!("driver key of the removed device {inst} (the driver package is kept)"),
            ));
        }
    }

    // Network connections that name a removed device.
    let net_path = format!("{cs}\\Control\\Network\\{NET_CLASS}");
    if let Some(nk) = h.open_key(&net_path)? {
        for (name, k) in children(h, nk)? {
            if !looks_like_guid(&name) {
                continue;
            }
            if let Some(conn) = h.subkey(k, "Connection")? {
                if let Some(pnp) = text_value(h, conn, "PnPInstanceId")? {
                    if is_removed_instance(&pnp) {
                        nic_ids.insert(name.to_ascii_uppercase());
                    }
                }
            }
        }
    }
    for id in nic_ids
        .iter()
        .filter(|id| looks_like_guid(id) && !kept_nic_ids.contains(*id))
    {
        let places = [
            (format!("{net_path}\\{id}"), "network connection"),
            (
                format!("{cs}\\Control\\NetworkSetup2\\Interfaces\\{id}"),
                "network setup interface",
            ),
            (
                format!("{cs}\\Services\\Tcpip\\Parameters\\Interfaces\\{id}"),
                "IPv4 interface settings",
            ),
            (
                format!("{cs}\\Services\\Tcpip\\Parameters\\Adapters\\{id}"),
                "IPv4 adapter settings",
            ),
            (
                format!("{cs}\\Services\\Tcpip\\Parameters\\DNSRegisteredAdapters\\{id}"),
                "DNS registration",
            ),
            (
                format!("{cs}\\Services\\Tcpip6\\Parameters\\Interfaces\\{id}"),
                "IPv6 interface settings",
            ),
            (
                format!("{cs}\\Services\\NetBT\\Parameters\\Interfaces\\Tcpip_{id}"),
                "NetBIOS interface settings",
            ),
        ];
        for (path, what) in places {
            if h.open_key(&path)?.is_some() {
                edits.push(del_key(
                    path,
                    format!("{what} of the removed network adapter {id}"),
                ));
            }
        }
    }

    // Device interfaces.
    let dc_path = format!("{cs}\\Control\\DeviceClasses");
    if let Some(dck) = h.open_key(&dc_path)? {
        for (g, gk) in children(h, dck)? {
            for (iname, ik) in children(h, gk)? {
                let removed_dev = match text_value(h, ik, "DeviceInstance")? {
                    Some(inst) if !inst.is_empty() => is_removed_instance(&inst).then_some(inst),
                    _ => interface_enumerator(&iname)
                        .filter(|e| !is_kept_enumerator(e))
                        .map(|_| iname.clone()),
                };
                if let Some(inst) = removed_dev {
                    edits.push(del_key(
                        format!("{dc_path}\\{g}\\{iname}"),
                        format!("device interface of the removed device {inst}"),
                    ));
                }
            }
        }
    }

    // Device containers.
    let cont_path = format!("{cs}\\Control\\DeviceContainers");
    if let Some(ck) = h.open_key(&cont_path)? {
        for (c, k) in children(h, ck)? {
            let Some(base) = h.subkey(k, "BaseContainers")? else {
                continue;
            };
            let mut kept = 0usize;
            let mut gone: Vec<(String, String)> = Vec::new();
            for (b, bk) in children(h, base)? {
                for v in h.values(bk)? {
                    if is_removed_instance(&v.name) {
                        gone.push((format!("{cont_path}\\{c}\\BaseContainers\\{b}"), v.name));
                    } else {
                        kept += 1;
                    }
                }
            }
            if gone.is_empty() {
                continue;
            }
            if kept == 0 {
                edits.push(del_key(
                    format!("{cont_path}\\{c}"),
                    format!(
                        "device container holding only removed devices ({})",
                        gone.len()
                    ),
                ));
            } else {
                for (key, name) in gone {
                    let reason = format!("container reference to the removed device {name}");
                    edits.push(del_value(key, name, reason));
                }
            }
        }
    }
    Ok(edits)
}

/// `MountedDevices` entries that name devices of removed enumerators.
fn plan_mounted_devices(h: &Hive) -> HResult<Vec<PlannedEdit>> {
    let mut edits = Vec::new();
    let Some(k) = h.open_key("MountedDevices")? else {
        return Ok(edits);
    };
    for v in h.values(k)? {
        if let Some(e) = mounted_device_enumerator(&v.data) {
            if !is_kept_enumerator(&e) {
                let reason = format!(
                    "drive letter or volume name of a removed {e} device (removable media, optical or floppy drive)"
                );
                edits.push(del_value("MountedDevices".into(), v.name, reason));
            }
        }
    }
    Ok(edits)
}

/// Why device instances are kept, if they are.
fn kept_because(ctx: &PlanContext) -> Option<&'static str> {
    if ctx.options.persist_devices {
        Some("--persist-devices")
    } else if ctx.options.vm {
        Some("--mode vm (the image stays on the same virtual hardware)")
    } else if ctx
        .unattend
        .and_then(|u| u.persist_all_device_installs)
        .unwrap_or(false)
    {
        Some("the answer file sets Microsoft-Windows-PnpSysprep PersistAllDeviceInstalls=true")
    } else {
        None
    }
}

/// A sort key that orders edits deterministically: by key path
/// (case-insensitive), deletions of values after their key's position.
fn order_key(e: &PlannedEdit) -> (String, String) {
    match &e.edit {
        crate::edit::Edit::Registry { change, .. } => match change {
            RegEdit::DeleteKey { key } => (key.to_ascii_lowercase(), String::new()),
            RegEdit::DeleteValue { key, name } => {
                (key.to_ascii_lowercase(), name.to_ascii_lowercase())
            }
            other => (format!("{other:?}"), String::new()),
        },
        crate::edit::Edit::File { .. } => (String::new(), String::new()),
    }
}

/// Uninstalls hardware devices.
#[derive(Debug, Clone, Copy, Default)]
pub struct Devices;

impl Operation for Devices {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "uninstall the reference machine's hardware devices (Enum instances, their driver keys, interfaces, containers, network bindings and removable-drive letters); drivers are kept"
    }

    fn default_enabled(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &PlanContext) -> Result<Plan> {
        let mut plan = Plan::default();
        if let Some(why) = kept_because(ctx) {
            plan.not_done(
                NAME,
                format!("device instances kept as asked ({why}); sysprep keeps them too"),
            );
            return Ok(plan);
        }
        let Some(loaded) = ctx.install.loaded(&HiveId::System) else {
            return Ok(plan);
        };
        let h = &loaded.hive;
        let sets = ctx.control_sets();
        let per_set: Vec<Vec<PlannedEdit>> = sets
            .par_iter()
            .map(|cs| plan_control_set(h, cs))
            .collect::<HResult<_>>()
            .map_err(|e| ResealError::hive(&loaded.path, e))?;
        let mut edits: Vec<PlannedEdit> = per_set.into_iter().flatten().collect();
        edits.extend(plan_mounted_devices(h).map_err(|e| ResealError::hive(&loaded.path, e))?);
        edits.sort_by_cached_key(order_key);
        edits.dedup_by(|a, b| a.edit == b.edit);
        plan.edits = edits;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_list_and_shapes() {
        assert!(is_kept_enumerator("Root"));
        assert!(is_kept_enumerator("swd"));
        assert!(!is_kept_enumerator("PCI"));
        assert!(!is_kept_enumerator("STORAGE"));
        assert!(is_removed_instance("USBSTOR\\Disk&Ven_X\\1&0"));
        assert!(!is_removed_instance("ROOT\\VOLMGR\\0000"));
        assert!(!is_removed_instance(""));
        assert_eq!(
            interface_enumerator("##?#USB#VID_1&PID_2#5&1#{a5dcbf10-6530-11d2-901f-00c04fb951ed}"),
            Some("USB")
        );
        assert_eq!(interface_enumerator("other"), None);
        let data = crate::context::reg_sz(
            "_??_USBSTOR#Disk&Ven_HP#AA&0#{53f56307-b6bf-11d0-94f2-00a0c91efb8b}",
        );
        assert_eq!(mounted_device_enumerator(&data).as_deref(), Some("USBSTOR"));
        let data =
            crate::context::reg_sz("\\??\\IDE#CdRom#5&1#{53f56308-b6bf-11d0-94f2-00a0c91efb8b}");
        assert_eq!(mounted_device_enumerator(&data).as_deref(), Some("IDE"));
        assert_eq!(
            mounted_device_enumerator(&[0x3a, 0x9f, 0x2c, 0x71, 0, 0, 0x10, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(mounted_device_enumerator(b"DMIO:ID:0123456789abcdef"), None);
        assert_eq!(
            driver_rel("{4d36e97d-e325-11ce-bfc1-08002be10318}\\0005").as_deref(),
            Some("{4d36e97d-e325-11ce-bfc1-08002be10318}\\0005")
        );
        assert_eq!(driver_rel("{4d36e97d-e325-11ce-bfc1-08002be10318}"), None);
        assert_eq!(
            driver_rel("{4d36e97d-e325-11ce-bfc1-08002be10318}\\1\\2"),
            None
        );
        assert_eq!(driver_rel("Class\\0001"), None);
    }
}
