//! `administrator`: the built-in Administrator account (RID 500) as sysprep
//! leaves it. Decision: **no edit**.
//!
//! Evidence: the "Enable and disable the built-in Administrator account"
//! docs ([D9], high) say that after `sysprep /generalize /oobe` the account
//! is disabled *on the next boot* (Windows does it while finishing setup),
//! that on Windows Server OOBE asks for its password instead (the account
//! stays in use), and that audit mode enables it for the auditSystem pass
//! and logs on with it. None of this is a value generalize writes: the image
//! sysprep leaves still has the flags the reference machine had, and the
//! first boot applies the documented behaviour. Setting `ACB_DISABLED`
//! offline would add nothing on client editions and would be wrong on
//! Server and in audit mode, so the record is left as it is.
//!
//! The record is still read, to report a SAM whose layout is not the one
//! expected (SAM `Domains\Account\Users\000001F4` value `F`: 0x50 bytes,
//! RID at 0x30, account control flags at 0x38 with `ACB_DISABLED` = 0x0001;
//! layout as used by offline SAM tools, sysprep-internals [C5], medium).

use crate::context::PlanContext;
use crate::error::Result;
use crate::hives::HiveId;

use super::{Operation, Plan};

const NAME: &str = "administrator";

/// SAM key of the built-in Administrator.
pub const ADMIN_KEY: &str = r"SAM\Domains\Account\Users\000001F4";
/// Offset of the RID in the `F` record.
pub const F_RID: usize = 0x30;
/// Offset of the account control flags in the `F` record.
pub const F_ACB: usize = 0x38;
/// Account disabled.
pub const ACB_DISABLED: u16 = 0x0001;

/// The account control flags of an `F` record whose RID is `rid`, or `None`
/// when the record does not have the expected layout.
pub fn account_flags(f: &[u8], rid: u32) -> Option<u16> {
    let r = u32::from_le_bytes(f.get(F_RID..F_RID + 4)?.try_into().ok()?);
    if r != rid {
        return None;
    }
    Some(u16::from_le_bytes(
        f.get(F_ACB..F_ACB + 2)?.try_into().ok()?,
    ))
}

/// Checks the built-in Administrator; plans nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Administrator;

impl Operation for Administrator {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "leave the built-in Administrator as sysprep does (Windows disables it at first boot after /oobe)"
    }

    fn default_enabled(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &PlanContext) -> Result<Plan> {
        let mut plan = Plan::default();
        if ctx.hive(&HiveId::Sam).is_none() {
            return Ok(plan);
        }
        if let Some(f) = ctx.value(&HiveId::Sam, ADMIN_KEY, "F") {
            if account_flags(&f.data, 500).is_none() {
                plan.not_done(
                    NAME,
                    format!(
                        "SAM {ADMIN_KEY}\\F has an unexpected layout ({} bytes, RID at 0x30 is not 500); \
                         the built-in Administrator was not checked",
                        f.data.len()
                    ),
                );
            }
        }
        Ok(plan)
    }
}
