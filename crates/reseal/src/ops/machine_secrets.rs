//! `machine-secrets`: removes per-machine secrets that Windows regenerates
//! when they are missing, and reports those it cannot safely remove.
//!
//! Removed:
//! * The Remote Desktop self-signed certificate: every subkey of SOFTWARE
//!   `Microsoft\SystemCertificates\Remote Desktop\Certificates` (one per
//!   certificate, named by its SHA-1 thumbprint) and its private key file
//!   in `ProgramData\Microsoft\Crypto\RSA\MachineKeys`. The Remote Desktop
//!   service makes a new self-signed certificate when its store is empty
//!   (sysprep-fidelity, TerminalServices row: low/medium). Left in place,
//!   every clone presents the same certificate and private key.
//!
//!   The key file is found from the certificate itself: the registry
//!   `Blob` is a serialized certificate element (a list of
//!   `{property id u32, reserved u32, length u32, data}`), whose property 2
//!   (`CERT_KEY_PROV_INFO_PROP_ID`) holds the key's container name (medium:
//!   the serialized layout is documented by forensic tooling, not by
//!   Microsoft). A CryptoAPI machine key's file is named
//!   `<md5>_<MachineGuid>`, `<md5>` being the MD5 of the lower-cased ASCII
//!   container name with its terminating NUL, written as four little-endian
//!   32-bit words in hex (medium; e.g. the Remote Desktop container
//!   `TSSecKeySet1` gives `f686aace6942fb7f7ceb231212eef4a4`). Every file
//!   of that prefix goes, whatever its GUID suffix. When the container
//!   cannot be read from the blob, or the key belongs to a CNG provider
//!   (type 0; its file lives elsewhere), the certificate is still removed
//!   and the key is reported.
//!
//! Reported (not done), because removing them breaks what uses them:
//! * machine keys named for the reference machine's `MachineGuid`, which
//!   `identities` deletes (a new one is made at specialize): every clone
//!   shares these private keys, and whether CryptoAPI still finds them
//!   under the new GUID is not documented (sysprep-internals §5.1, low);
//! * WinRM HTTPS listeners (SOFTWARE `Microsoft\Windows\CurrentVersion\WSMAN\Listener\*HTTPS*`):
//!   they survive sysprep and name a certificate by thumbprint
//!   (sysprep-fidelity, medium);
//! * MSDTC (SOFTWARE `Microsoft\MSDTC`, its CID under SOFTWARE `Classes\CID`):
//!   clones that share the CID cannot run distributed transactions with
//!   each other (low–medium); the fix is `msdtc -uninstall` then
//!   `msdtc -install` on each clone;
//! * SQL Server instances (SOFTWARE `Microsoft\Microsoft SQL Server\Instance Names\*`):
//!   SQL Server needs its own image preparation (its setup's
//!   PrepareImage / CompleteImage actions; sysprep-fidelity, medium).

use crate::backend::join;
use crate::context::{PlanContext, reg_string};
use crate::edit::{FileEdit, PlannedEdit};
use crate::error::Result;
use crate::hives::HiveId;

use super::{Operation, Plan, delete_key, find_entry, list_dir, values_of, volume_root};

const NAME: &str = "machine-secrets";

/// SOFTWARE key of the Remote Desktop certificate store's certificates.
pub const RDP_CERTIFICATES: &str = r"Microsoft\SystemCertificates\Remote Desktop\Certificates";

/// Folder of CryptoAPI machine keys, from the volume root.
pub const MACHINE_KEYS: &str = r"ProgramData\Microsoft\Crypto\RSA\MachineKeys";

/// Serialized certificate property: `CERT_KEY_PROV_INFO_PROP_ID`.
const KEY_PROV_INFO: u32 = 2;

/// A certificate's private key as named by its `CERT_KEY_PROV_INFO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProvInfo {
    /// The key container's name.
    pub container: String,
    /// The provider's name.
    pub provider: String,
    /// The provider type (0: a CNG key storage provider).
    pub provider_type: u32,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// A NUL-terminated UTF-16LE string at `at` (none at offset 0 or past the
/// end).
fn utf16z_at(b: &[u8], at: usize) -> Option<String> {
    if at == 0 {
        return None;
    }
    let units: Vec<u16> = b
        .get(at..)?
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    Some(String::from_utf16_lossy(&units))
}

/// Reads the key provider information of a serialized certificate (the
/// registry store's `Blob`). `None` when the blob has none or is malformed.
pub fn key_prov_info(blob: &[u8]) -> Option<KeyProvInfo> {
    let mut at = 0usize;
    while at < blob.len() {
        let id = u32_at(blob, at)?;
        let len = usize::try_from(u32_at(blob, at.checked_add(8)?)?).ok()?;
        let start = at.checked_add(12)?;
        let end = start.checked_add(len)?;
        let data = blob.get(start..end)?;
        if id == KEY_PROV_INFO {
            let container = utf16z_at(data, usize::try_from(u32_at(data, 0)?).ok()?)?;
            let provider =
                utf16z_at(data, usize::try_from(u32_at(data, 4)?).ok()?).unwrap_or_default();
            let provider_type = u32_at(data, 8)?;
            return (!container.is_empty()).then_some(KeyProvInfo {
                container,
                provider,
                provider_type,
            });
        }
        at = end;
    }
    None
}

/// The `<md5>` prefix of a CryptoAPI machine key's file name.
pub fn machine_key_prefix(container: &str) -> String {
    let mut bytes: Vec<u8> = container.to_lowercase().into_bytes();
    bytes.push(0);
    let d = super::md5::digest(&bytes);
    d.chunks_exact(4)
        .map(|w| format!("{:08x}", u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
        .collect()
}

/// Removes and reports per-machine secrets.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineSecrets;

impl MachineSecrets {
    /// The Remote Desktop certificates and their keys; returns the key files
    /// planned for deletion.
    fn remote_desktop(ctx: &PlanContext, plan: &mut Plan, keys_dir: Option<&str>) -> Vec<String> {
        let sw = HiveId::Software;
        let mut deleted = Vec::new();
        let key_files = keys_dir.map(|d| list_dir(ctx, d)).unwrap_or_default();
        for thumb in ctx.subkeys(&sw, RDP_CERTIFICATES) {
            let key = format!(r"{RDP_CERTIFICATES}\{thumb}");
            plan.push(delete_key(
                ctx,
                NAME,
                sw.clone(),
                &key,
                "Remote Desktop self-signed certificate of the reference machine: the service makes a new one",
            ));
            let info = ctx
                .value(&sw, &key, "Blob")
                .and_then(|v| key_prov_info(&v.data));
            let Some(info) = info else {
                plan.not_done(
                    NAME,
                    format!(
                        "the private key of the Remote Desktop certificate {thumb} could not be located (its Blob names no key container); look for it in {MACHINE_KEYS}"
                    ),
                );
                continue;
            };
            if info.provider_type == 0 {
                plan.not_done(
                    NAME,
                    format!(
                        "the private key of the Remote Desktop certificate {thumb} (container {:?}) is held by the CNG provider {:?}; its file is not removed",
                        info.container, info.provider
                    ),
                );
                continue;
            }
            let prefix = format!("{}_", machine_key_prefix(&info.container));
            let mut found = false;
            if let Some(dir) = keys_dir {
                for e in &key_files {
                    let lower = e.name.to_ascii_lowercase();
                    if !e.is_dir && lower.starts_with(&prefix) {
                        let path = join(dir, &e.name);
                        if !deleted.contains(&path) {
                            plan.edits.push(PlannedEdit::file(
                                NAME,
                                FileEdit::Delete { path: path.clone() },
                                format!(
                                    "private key {:?} of the Remote Desktop certificate",
                                    info.container
                                ),
                            ));
                            deleted.push(path);
                        }
                        found = true;
                    }
                }
            }
            if !found {
                plan.not_done(
                    NAME,
                    format!(
                        "no key file {prefix}* for the Remote Desktop certificate {thumb} (container {:?}) in {MACHINE_KEYS}",
                        info.container
                    ),
                );
            }
        }
        deleted
    }
}

impl Operation for MachineSecrets {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "remove the Remote Desktop self-signed certificate and its private key; report shared machine keys, WinRM HTTPS listeners, MSDTC and SQL Server"
    }

    fn default_enabled(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &PlanContext) -> Result<Plan> {
        let mut plan = Plan::default();
        let sw = HiveId::Software;
        let root = volume_root(ctx);
        let keys_dir = {
            let mut dir = root.clone();
            let mut ok = true;
            for c in MACHINE_KEYS.split('\\') {
                match find_entry(ctx, &dir, c) {
                    Some((p, e)) if e.is_dir => dir = p,
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            ok.then_some(dir)
        };
        let deleted = Self::remote_desktop(ctx, &mut plan, keys_dir.as_deref());

        // Machine keys named for the MachineGuid that `identities` deletes.
        let guid = ctx
            .value(&sw, r"Microsoft\Cryptography", "MachineGuid")
            .map(|v| reg_string(&v.data).trim().to_ascii_lowercase())
            .filter(|g| !g.is_empty());
        if let (Some(guid), Some(dir)) = (guid, keys_dir.as_deref()) {
            let suffix = format!("_{guid}");
            let shared: Vec<String> = list_dir(ctx, dir)
                .into_iter()
                .filter(|e| !e.is_dir && e.name.to_ascii_lowercase().ends_with(&suffix))
                .map(|e| join(dir, &e.name))
                .filter(|p| !deleted.contains(p))
                .collect();
            if !shared.is_empty() {
                let names: Vec<&str> = shared
                    .iter()
                    .map(|p| p.rsplit('\\').next().unwrap_or(p))
                    .collect();
                plan.not_done(
                    NAME,
                    format!(
                        "{} machine key(s) in {MACHINE_KEYS} are named for the reference machine's MachineGuid {guid} and are kept: every clone shares these private keys, and after the MachineGuid changes at specialize whether Windows still finds them is not documented; re-create the certificates that use them on each clone ({})",
                        shared.len(),
                        names.join(", ")
                    ),
                );
            }
        }

        // WinRM HTTPS listeners.
        let listeners = r"Microsoft\Windows\CurrentVersion\WSMAN\Listener";
        for l in ctx.subkeys(&sw, listeners) {
            if !l.to_ascii_uppercase().contains("HTTPS") {
                continue;
            }
            let key = format!(r"{listeners}\{l}");
            let thumb = values_of(ctx, &sw, &key)
                .into_iter()
                .find(|v| v.name.eq_ignore_ascii_case("CertThumbprint"))
                .map(|v| reg_string(&v.data))
                .filter(|t| !t.trim().is_empty());
            plan.not_done(
                NAME,
                format!(
                    "WinRM HTTPS listener {l:?} is kept{}: it survives sysprep too, and every clone would serve the reference machine's certificate; delete it (winrm delete winrm/config/Listener?Address=*+Transport=HTTPS) and create one per clone with its own certificate",
                    thumb
                        .map(|t| format!(", bound to the certificate {t}"))
                        .unwrap_or_default()
                ),
            );
        }

        // MSDTC.
        if ctx.key_exists(&sw, r"Microsoft\MSDTC") {
            let cids = ctx.subkeys(&sw, r"Classes\CID");
            plan.not_done(
                NAME,
                format!(
                    "MSDTC is installed (SOFTWARE Microsoft\\MSDTC{}): clones share its CID and cannot run distributed transactions with each other; run `msdtc -uninstall` then `msdtc -install` on each clone (or before capture)",
                    if cids.is_empty() {
                        String::new()
                    } else {
                        format!("; CIDs under SOFTWARE Classes\\CID: {}", cids.join(", "))
                    }
                ),
            );
        }

        // SQL Server.
        let names = r"Microsoft\Microsoft SQL Server\Instance Names";
        let mut instances: Vec<String> = Vec::new();
        for kind in ctx.subkeys(&sw, names) {
            for v in values_of(ctx, &sw, &format!(r"{names}\{kind}")) {
                instances.push(format!("{} ({kind}: {})", v.name, reg_string(&v.data)));
            }
        }
        if !instances.is_empty() {
            plan.not_done(
                NAME,
                format!(
                    "SQL Server instance(s) {}: SQL Server needs its own image preparation (SQL Server setup's PrepareImage before capture, CompleteImage on each clone); reseal does not change them",
                    instances.join(", ")
                ),
            );
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_desktop_container_file_name() {
        assert_eq!(
            machine_key_prefix("TSSecKeySet1"),
            "f686aace6942fb7f7ceb231212eef4a4"
        );
    }

    #[test]
    fn key_prov_info_shapes() {
        // Property 3 (a hash), then property 2 (key provider info).
        let mut info = Vec::new();
        let container: Vec<u8> = "TSSecKeySet1\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let provider: Vec<u8> = "Microsoft Enhanced Cryptographic Provider v1.0\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let c_off = 28u32;
        let p_off = c_off + container.len() as u32;
        for n in [c_off, p_off, 1, 0x20, 0, 0, 1] {
            info.extend(n.to_le_bytes());
        }
        info.extend(&container);
        info.extend(&provider);
        let mut blob = Vec::new();
        for (id, data) in [(3u32, vec![0xab; 20]), (KEY_PROV_INFO, info)] {
            blob.extend(id.to_le_bytes());
            blob.extend(1u32.to_le_bytes());
            blob.extend((data.len() as u32).to_le_bytes());
            blob.extend(data);
        }
        let k = key_prov_info(&blob).unwrap();
        assert_eq!(k.container, "TSSecKeySet1");
        assert_eq!(k.provider_type, 1);
        // Truncations never panic and find nothing past the cut.
        for cut in 0..blob.len() {
            let _ = key_prov_info(&blob[..cut]);
        }
        assert_eq!(key_prov_info(&[0xff; 7]), None);
    }
}
