//! `boot-drivers`: makes the in-box storage and bus drivers of common
//! hardware and hypervisors boot-start, so that the image boots on a
//! different disk controller (the offline fix for INACCESSIBLE_BOOT_DEVICE
//! after a controller change; sysprep-internals §4: generalize resets
//! boot-critical drivers "to their default values" so storage drivers needed
//! on other hardware load at boot — high for the statement, low–medium for
//! the exact values).
//!
//! For each driver of [`BOOT_DRIVERS`] whose service key exists in a control
//! set (the service key is written by the same INF that copies the driver
//! file, so its presence means the driver is in the image): `Start` is set
//! to 0 (boot) when it is anything else, and a `StartOverride` subkey with
//! any non-zero value (3 = demand, 4 = disabled: Windows 8+ writes these to
//! skip drivers of absent controllers at boot) is deleted. Services not in
//! the list are left alone. Runs in every control set and also with
//! `--mode vm` (a VM image may still be moved to another controller type).
//!
//! A boot-start driver whose hardware is absent costs a little memory at
//! boot and nothing else: miniports load, find no device and stay idle.

use crate::context::{PlanContext, reg_dword};
use crate::error::Result;
use crate::hives::HiveId;

use super::{NotDone, Operation, Plan, delete_key, set_dword, values_of};
use crate::context::reg_string;

const NAME: &str = "boot-drivers";

/// The drivers made boot-start, each with the hardware it boots.
pub const BOOT_DRIVERS: &[(&str, &str)] = &[
    (
        "storahci",
        "Microsoft AHCI: SATA controllers in AHCI mode (most PCs, QEMU q35, VirtualBox SATA; Windows 8+)",
    ),
    (
        "msahci",
        "Microsoft AHCI of Windows 7 / Server 2008 R2 (the predecessor of storahci)",
    ),
    (
        "stornvme",
        "Microsoft NVMe: NVMe disks (PCs, AWS Nitro and Azure NVMe, QEMU nvme)",
    ),
    (
        "iaStorV",
        "Intel Matrix Storage / RST (in-box, Windows 7+): Intel SATA in RAID mode",
    ),
    (
        "iaStorAVC",
        "Intel RST (in-box, Windows 10 1709+): Intel chipset SATA RAID",
    ),
    (
        "amdsata",
        "AMD SATA AHCI (in-box; present in Windows 7 SP1 images too): AMD chipsets",
    ),
    (
        "atapi",
        "ATAPI/IDE channels: legacy IDE controllers (QEMU i440fx, Hyper-V generation 1, VirtualBox PIIX)",
    ),
    ("intelide", "Intel PCI IDE controllers"),
    ("pciide", "generic PCI IDE controllers"),
    (
        "vmbus",
        "Hyper-V VMBus: the bus Hyper-V/Azure synthetic storage hangs off",
    ),
    (
        "storvsc",
        "Hyper-V synthetic SCSI (Hyper-V generation 2, Azure)",
    ),
    (
        "LSI_SAS",
        "LSI Logic SAS (VMware's default controller for Windows 7+ guests, older Dell/HP HBAs)",
    ),
    ("LSI_SAS2i", "LSI SAS2 HBAs (Windows 8.1+ name)"),
    ("LSI_SAS3i", "LSI SAS3 HBAs (Windows 8.1+ name)"),
    (
        "LSI_SCSI",
        "LSI Logic parallel SCSI (VMware and VirtualBox LsiLogic controllers of older guests)",
    ),
    ("megasas", "LSI/Broadcom MegaRAID SAS (Dell PERC, servers)"),
    ("megasas2i", "MegaRAID SAS2 (Windows 8.1+ name)"),
    ("megasas35i", "MegaRAID SAS 3.5 (Windows 10+)"),
    ("megasr", "MegaRAID software RAID"),
    (
        "pvscsi",
        "VMware paravirtual SCSI (in-box since Windows 10 1709 / Server 2016)",
    ),
    (
        "viostor",
        "VirtIO block (QEMU/KVM, OpenStack, Proxmox; present only when virtio-win was installed)",
    ),
    (
        "vioscsi",
        "VirtIO SCSI (QEMU/KVM; present only when virtio-win was installed)",
    ),
];

/// Makes storage and bus drivers boot-start.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootDrivers;

impl Operation for BootDrivers {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "make the in-box storage and bus drivers of common hardware and hypervisors boot-start (Start=0, no disabling StartOverride)"
    }

    fn default_enabled(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &PlanContext) -> Result<Plan> {
        let mut plan = Plan::default();
        let sys = HiveId::System;
        for cs in ctx.control_sets() {
            for (drv, why) in BOOT_DRIVERS {
                let key = format!("{cs}\\Services\\{drv}");
                if !ctx.key_exists(&sys, &key) {
                    continue;
                }
                // A boot-start driver whose file is missing would make the
                // boot fail (or fall back), so the file must be there too.
                let file = driver_file(ctx, &key, drv);
                if !ctx.backend.exists(&file) {
                    plan.not_done.push(NotDone {
                        operation: NAME,
                        message: format!(
                            "{cs}: {drv} has a service key but its driver file {file} is not in the image: left as it is"
                        ),
                    });
                    continue;
                }
                let old = ctx
                    .value(&sys, &key, "Start")
                    .and_then(|v| reg_dword(&v.data))
                    .map_or_else(|| "absent".to_string(), |n| n.to_string());
                plan.push(set_dword(
                    ctx,
                    NAME,
                    sys.clone(),
                    &key,
                    "Start",
                    0,
                    &format!("{cs}: {drv} Start {old} -> 0 (boot) for {why}"),
                ));
                let ov = format!("{key}\\StartOverride");
                let disabling: Vec<String> = values_of(ctx, &sys, &ov)
                    .into_iter()
                    .filter(|v| reg_dword(&v.data) != Some(0))
                    .map(|v| {
                        let n = reg_dword(&v.data).map_or("?".into(), |n| n.to_string());
                        format!("{}={n}", v.name)
                    })
                    .collect();
                if !disabling.is_empty() {
                    plan.push(delete_key(
                        ctx,
                        NAME,
                        sys.clone(),
                        &ov,
                        &format!(
                            "{cs}: {drv} StartOverride ({}) keeps it from loading at boot",
                            disabling.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(plan)
    }
}

/// The driver's file inside the image: the service's `ImagePath` (forms
/// `System32\drivers\x.sys`, `\SystemRoot\System32\...`,
/// `%SystemRoot%\System32\...`, `\??\C:\Windows\...`), or the default
/// `System32\drivers\<name>.sys` under the Windows directory.
fn driver_file(ctx: &PlanContext, key: &str, drv: &str) -> String {
    let windir = &ctx.install.windows_dir;
    let image = ctx
        .value(&HiveId::System, key, "ImagePath")
        .map(|v| reg_string(&v.data))
        .unwrap_or_default();
    let lower = image.to_ascii_lowercase();
    let rel = if image.is_empty() {
        format!("System32\\drivers\\{drv}.sys")
    } else if let Some(i) = lower.find("system32\\") {
        image[i..].to_string()
    } else {
        format!("System32\\drivers\\{drv}.sys")
    };
    crate::backend::join(windir, &rel)
}
