//! `answer-file`: places the given answer file where the specialize and
//! oobeSystem passes find it, as `sysprep /unattend:<file>` does.
//!
//! Evidence: Windows Setup's implicit answer-file search order (Windows
//! Setup automation overview [D11], high) is: the SYSTEM `Setup`
//! `UnattendFile` pointer, then `%WINDIR%\Panther\Unattend`, then
//! `%WINDIR%\Panther` ("Windows Setup caches answer files to this
//! location"), then removable media, `System32\Sysprep`, and the system
//! drive root. sysprep caches the `/unattend:` file as
//! `%WINDIR%\Panther\unattend.xml` (sysprep-internals §2.1, medium).
//!
//! Decisions:
//! * The file is written to `<windir>\Panther\unattend.xml`, byte for byte
//!   (only when the existing file differs).
//! * `UnattendFile` is **not** set: it takes a full path, and every use seen
//!   writes a drive-letter path (`C:\Windows\Panther\…`); whether Setup
//!   expands `%WINDIR%` in it is not established, and the deployed drive
//!   letter is not known offline. Panther is searched anyway. But a stale
//!   `UnattendFile` pointing anywhere else would be found *first* and
//!   shadow the new file, so such a value is deleted. One that already
//!   names `…\Panther\unattend.xml` is kept.

use crate::context::{PlanContext, reg_string};
use crate::edit::{FileEdit, PlannedEdit};
use crate::error::Result;
use crate::hives::HiveId;

use super::{Operation, Plan, delete_value};

const NAME: &str = "answer-file";

/// Where the answer file goes, relative to the Windows directory.
pub const PANTHER_UNATTEND: &str = r"Panther\unattend.xml";

/// Places the answer file.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerFile;

/// Whether an `UnattendFile` pointer already designates the Panther copy.
fn points_to_panther(path: &str) -> bool {
    path.trim()
        .trim_matches('"')
        .to_ascii_lowercase()
        .ends_with(r"\panther\unattend.xml")
}

impl Operation for AnswerFile {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "place the given answer file as <windir>\\Panther\\unattend.xml for specialize and OOBE"
    }

    fn default_enabled(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &PlanContext) -> Result<Plan> {
        let mut plan = Plan::default();
        let Some(unattend) = ctx.unattend else {
            return Ok(plan);
        };
        let path = ctx.install.windows_path(PANTHER_UNATTEND);
        let same = ctx.backend.exists(&path)
            && !ctx.backend.is_dir(&path)
            && ctx.backend.read(&path).is_ok_and(|b| b == unattend.bytes);
        if !same {
            plan.edits.push(PlannedEdit::file(
                NAME,
                FileEdit::write(path, unattend.bytes.clone()),
                format!(
                    "answer file {} for specialize/oobeSystem (Setup searches %WINDIR%\\Panther)",
                    unattend.name
                ),
            ));
        }
        if let Some(v) = ctx.value(&HiveId::System, "Setup", "UnattendFile") {
            if !points_to_panther(&reg_string(&v.data)) {
                plan.push(delete_value(
                    ctx,
                    NAME,
                    HiveId::System,
                    "Setup",
                    "UnattendFile",
                    "a stale answer-file pointer would be used before the Panther copy",
                ));
            }
        }
        Ok(plan)
    }
}
