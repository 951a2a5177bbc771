//! `autopilot`: removes Windows Autopilot state, as the declarative
//! generalize actions of the WinRT management service component do
//! (sysprep-internals §1.5 and §5.9, medium: a public component manifest
//! lists these exact paths as `deleteKey` / `deleteValue` generalize
//! actions). Only what exists is deleted.

use crate::context::PlanContext;
use crate::error::Result;
use crate::hives::HiveId;

use super::{Operation, Plan, delete_key, delete_value};

const NAME: &str = "autopilot";

/// SOFTWARE keys deleted with their subtrees.
pub const AUTOPILOT_KEYS: [&str; 2] = [
    r"Microsoft\Provisioning\AutopilotPolicy",
    r"Microsoft\Provisioning\Diagnostics\Autopilot",
];

/// SOFTWARE key and value of the Autopilot notification state.
pub const NOTIFICATION_VALUE: (&str, &str) = (
    r"Microsoft\Windows NT\CurrentVersion\Notifications\Data",
    "41871D20A3BC1475",
);

/// Removes Autopilot state.
#[derive(Debug, Clone, Copy, Default)]
pub struct Autopilot;

impl Operation for Autopilot {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "remove Windows Autopilot policy, diagnostics and notification state"
    }

    fn default_enabled(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &PlanContext) -> Result<Plan> {
        let mut plan = Plan::default();
        for key in AUTOPILOT_KEYS {
            plan.push(delete_key(
                ctx,
                NAME,
                HiveId::Software,
                key,
                "Autopilot state (generalize deletes it)",
            ));
        }
        let (key, value) = NOTIFICATION_VALUE;
        plan.push(delete_value(
            ctx,
            NAME,
            HiveId::Software,
            key,
            value,
            "Autopilot notification state (generalize deletes it)",
        ));
        Ok(plan)
    }
}
