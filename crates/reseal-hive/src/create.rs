//! Creating a new, empty hive (for fixtures and tests).

use crate::base_block::{self, BASE_BLOCK_SIZE};
use crate::bytes::{put_u16, put_u32, put_u64};
use crate::cells::{BIN_HEADER, NIL};
use crate::error::{HiveError, Result};
use crate::hive::Hive;
use crate::key_node::{KEY_COMP_NAME, KEY_HIVE_ENTRY, KEY_NO_DELETE, off as nk};
use crate::names::{encode_name, to_units};
use crate::security_cells::off as sk;

/// A default descriptor: owner BUILTIN\Administrators, group SYSTEM, DACL
/// granting full control (KEY_ALL_ACCESS) to SYSTEM and Administrators and
/// read (KEY_READ) to Everyone, inherited by subkeys.
pub fn default_descriptor() -> Vec<u8> {
    let system = [1u8, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0];
    let admins = [1u8, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0];
    let everyone = [1u8, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    let ace = |mask: u32, sid: &[u8]| {
        let size = 8 + sid.len();
        let mut a = vec![0u8, 0x02, 0, 0];
        put_u16(&mut a, 2, size as u16);
        a.extend_from_slice(&mask.to_le_bytes());
        a.extend_from_slice(sid);
        a
    };
    let aces = [
        ace(0x000F_003F, &system),
        ace(0x000F_003F, &admins),
        ace(0x0002_0019, &everyone),
    ];
    let acl_len = 8 + aces.iter().map(Vec::len).sum::<usize>();
    let mut acl = vec![2u8, 0, 0, 0, 3, 0, 0, 0];
    put_u16(&mut acl, 2, acl_len as u16);
    for a in &aces {
        acl.extend_from_slice(a);
    }
    let mut sd = vec![0u8; 20];
    sd[0] = 1;
    put_u16(&mut sd, 2, 0x8004);
    let dacl_off = 20;
    let owner_off = dacl_off + acl.len();
    let group_off = owner_off + admins.len();
    put_u32(&mut sd, 4, owner_off as u32);
    put_u32(&mut sd, 8, group_off as u32);
    put_u32(&mut sd, 16, dacl_off as u32);
    sd.extend_from_slice(&acl);
    sd.extend_from_slice(&admins);
    sd.extend_from_slice(&system);
    sd
}

/// Builds an empty hive of version 1.`minor` with a root key `root_name`.
pub fn new_hive(name: &str, minor: u32, root_name: &str) -> Result<Hive> {
    if !(3..=6).contains(&minor) {
        return Err(HiveError::InvalidData {
            name: name.to_string(),
            reason: format!("hive minor version must be 3..=6, not {minor}"),
        });
    }
    let units = to_units(root_name);
    if units.is_empty() || units.len() > 255 || units.contains(&u16::from(b'\\')) {
        return Err(HiveError::InvalidName {
            name: root_name.to_string(),
            reason: "a root key name must have 1..=255 characters and no backslash",
        });
    }
    let now = crate::time::now_filetime();
    let mut data = vec![0u8; BASE_BLOCK_SIZE + 4096];
    data[0..4].copy_from_slice(b"regf");
    put_u32(&mut data, base_block::OFF_SEQ1, 1);
    put_u32(&mut data, base_block::OFF_SEQ2, 1);
    put_u64(&mut data, base_block::OFF_TIMESTAMP, now);
    put_u32(&mut data, base_block::OFF_MAJOR, 1);
    put_u32(&mut data, base_block::OFF_MINOR, minor);
    put_u32(&mut data, base_block::OFF_FORMAT, 1);
    put_u32(&mut data, base_block::OFF_LENGTH, 4096);
    put_u32(&mut data, base_block::OFF_CLUSTER, 1);
    // File name field: the last 31 characters of the name, UTF-16LE.
    let fname: Vec<u16> = to_units(name);
    let tail = &fname[fname.len().saturating_sub(31)..];
    for (i, u) in tail.iter().enumerate() {
        put_u16(&mut data, 48 + 2 * i, *u);
    }
    let b = BASE_BLOCK_SIZE;
    data[b..b + 4].copy_from_slice(b"hbin");
    put_u32(&mut data, b + 8, 4096);
    put_u64(&mut data, b + 20, now);

    // Layout: root nk, then the sk, then one free cell for the rest.
    let (raw, compressed) = encode_name(&units);
    let nk_index = BIN_HEADER as u32;
    let nk_size = crate::bytes::round_up(4 + nk::NAME + raw.len(), 8);
    let sd = default_descriptor();
    let sk_index = nk_index + nk_size as u32;
    let sk_size = crate::bytes::round_up(4 + sk::DESCRIPTOR + sd.len(), 8);
    let free_index = sk_index + sk_size as u32;
    let free_size = 4096 - free_index;

    let c = b + nk_index as usize;
    put_u32(&mut data, c, (-(nk_size as i32)) as u32);
    let p = c + 4;
    data[p..p + 2].copy_from_slice(b"nk");
    let flags = KEY_HIVE_ENTRY | KEY_NO_DELETE | if compressed { KEY_COMP_NAME } else { 0 };
    put_u16(&mut data, p + nk::FLAGS, flags);
    put_u64(&mut data, p + nk::TIMESTAMP, now);
    put_u32(&mut data, p + nk::PARENT, NIL);
    for f in [
        nk::SUBKEY_LIST,
        nk::VOLATILE_LIST,
        nk::VALUE_LIST,
        nk::CLASS,
    ] {
        put_u32(&mut data, p + f, NIL);
    }
    put_u32(&mut data, p + nk::SECURITY, sk_index);
    put_u16(&mut data, p + nk::NAME_LEN, raw.len() as u16);
    data[p + nk::NAME..p + nk::NAME + raw.len()].copy_from_slice(&raw);

    let c = b + sk_index as usize;
    put_u32(&mut data, c, (-(sk_size as i32)) as u32);
    let p = c + 4;
    data[p..p + 2].copy_from_slice(b"sk");
    put_u32(&mut data, p + sk::FLINK, sk_index);
    put_u32(&mut data, p + sk::BLINK, sk_index);
    put_u32(&mut data, p + sk::REFCOUNT, 1);
    put_u32(&mut data, p + sk::LENGTH, sd.len() as u32);
    data[p + sk::DESCRIPTOR..p + sk::DESCRIPTOR + sd.len()].copy_from_slice(&sd);

    put_u32(&mut data, b + free_index as usize, free_size);
    put_u32(&mut data, base_block::OFF_ROOT, nk_index);
    base_block::store_checksum(&mut data);
    let mut h = Hive::from_bytes(name, data)?;
    h.modified = true;
    Ok(h)
}
