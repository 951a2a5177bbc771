//! Operations: small planners, each with a stable name, a one-line
//! description and a default. An operation never writes; it looks at the
//! install and returns the edits that would bring it to the generalized
//! state, and nothing when it is already there (so a second run plans
//! nothing).

use serde::Serialize;

use crate::context::PlanContext;
use crate::edit::PlannedEdit;
use crate::error::Result;

/// What an operation could not do that sysprep would have done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotDone {
    /// The operation.
    pub operation: &'static str,
    /// What was not done and why.
    pub message: String,
}

/// A planner's output.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Edits to apply.
    pub edits: Vec<PlannedEdit>,
    /// Things sysprep would have done that this run does not.
    pub not_done: Vec<NotDone>,
}

/// One generalize operation.
pub trait Operation: Send + Sync {
    /// Stable name (`--enable`/`--disable` use it).
    fn name(&self) -> &'static str;
    /// One-line description.
    fn description(&self) -> &'static str;
    /// Whether it runs unless disabled.
    fn default_enabled(&self) -> bool;
    /// Plans the edits for one install.
    fn plan(&self, ctx: &PlanContext) -> Result<Plan>;
}

/// Every operation, in the order they are planned.
pub fn all() -> Vec<Box<dyn Operation>> {
    Vec::new()
}
