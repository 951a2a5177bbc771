//! `activation`: licensing is not rearmed offline. This operation plans no
//! edits; it reports what sysprep's licensing provider (`slc.dll`
//! `SLReArmWindows`, generalize pass) would have done.
//!
//! Evidence (sysprep-internals §5.2): generalize rearms licensing unless
//! `Microsoft-Windows-Security-SPP\SkipRearm` is 1 (SkipRearm doc [D8],
//! high). The licensing store is encrypted, so it cannot be reset offline.
//! The KMS client machine id (CMID) lives in that store and is regenerated
//! only by a rearm, so every clone presents the same CMID to a KMS host,
//! which counts them as one machine (medium, [P6]).

use crate::context::PlanContext;
use crate::error::Result;

use super::{Operation, Plan};

const NAME: &str = "activation";

/// Reports the licensing rearm that is not done.
#[derive(Debug, Clone, Copy, Default)]
pub struct Activation;

/// The report line for an answer file's `SkipRearm` setting.
pub fn message(skip_rearm: Option<bool>) -> String {
    let base = "licensing is not rearmed offline (the licensing store is encrypted): \
                activation state and grace period stay as they were, and the KMS client \
                machine id (CMID) stays shared by every clone made from this image, so a \
                KMS host counts them as one machine";
    match skip_rearm {
        Some(true) => {
            format!("{base}; the answer file sets SkipRearm=1, so this matches what sysprep does")
        }
        Some(false) => format!(
            "{base}; the answer file sets SkipRearm=0, so sysprep would have rearmed \
             (run `slmgr /rearm` on each deployed machine if unique CMIDs are needed)"
        ),
        None => format!(
            "{base}; without SkipRearm=1 sysprep would have rearmed \
             (run `slmgr /rearm` on each deployed machine if unique CMIDs are needed)"
        ),
    }
}

impl Operation for Activation {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "report that licensing is not rearmed offline (as sysprep with SkipRearm=1)"
    }

    fn default_enabled(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &PlanContext) -> Result<Plan> {
        let mut plan = Plan::default();
        plan.not_done(NAME, message(ctx.unattend.and_then(|u| u.skip_rearm)));
        Ok(plan)
    }
}
