//! `markers`: the generalized-state markers that make the next boot run the
//! specialize pass and then OOBE (`/oobe`) or audit mode (`/audit`).
//!
//! Evidence (sysprep-internals §2.1, §2.3; confidence in brackets):
//!
//! | Edit | After `/oobe` | After `/audit` | Evidence |
//! |---|---|---|---|
//! | SOFTWARE `…\Setup\State` `ImageState` | `IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE` | `…_TO_AUDIT` | Windows Setup states doc [D4] (high) |
//! | `<windir>\Setup\State\State.ini` `[State] ImageState` | same | same | [D4] (high); the doc shows `ImageState="…"` quoted |
//! | SYSTEM `Setup` `CmdLine` | `oobe\windeploy.exe` | same | [F1], [F4], [P14] (medium–high) |
//! | SYSTEM `Setup` `SetupType` | 2 | 2 | generalized Server 2019 template [F1] (medium); `/audit` not observed, 2 expected |
//! | SYSTEM `Setup` `SystemSetupInProgress` | 1 | 1 | armed images [F4], [C2] (medium) |
//! | SYSTEM `Setup` `OOBEInProgress` | 1 | left as is | one armed `/oobe` Server 2019 template (low–medium); unknown for `/audit` |
//! | SYSTEM `Setup\Status\SysprepStatus` `GeneralizationState` | 7 | 7 | [F1], [C14] (medium) |
//! | same key `CleanupState` | 2 | 2 | reset scripts [C14] and a post-sysprep dump (low–medium) |
//! | SOFTWARE `…\Setup\Sysprep` `SysprepCorrupt` | deleted | deleted | failure latch [C14], [P10] (medium) |
//! | `<windir>\System32\Sysprep\Sysprep_succeeded.tag` | empty file | same | [P16], [F1] (medium–high) |
//!
//! So `/audit` differs from `/oobe` in `ImageState` (registry and State.ini)
//! and in leaving `OOBEInProgress` alone; nothing else is known to differ.
//!
//! Not written, for lack of evidence: `Setup\Status\ChildCompletion\setup.exe`
//! (§2.3 "value TBD by diff"), `Setup\Status\AuditBoot`, `SetupPhase`, the
//! `/mode:vm` marker (location unknown, §8.4), and the setupcl request
//! (`machine-sid` owns SID handling).
//!
//! State.ini encoding: the Windows INI functions keep a file's encoding and
//! create new files in the ANSI code page (UTF-16 only when the file already
//! starts with a UTF-16 BOM), and read both. An existing State.ini is
//! rewritten in its own encoding with its other lines kept; a missing one is
//! created as ASCII with CRLF line ends. What Windows Setup itself creates
//! was not verified on a real image.

use crate::context::PlanContext;
use crate::edit::{FileEdit, PlannedEdit};
use crate::error::Result;
use crate::hives::HiveId;
use crate::options::Mode;

use super::{Operation, Plan, delete_value, set_dword, set_sz};

const NAME: &str = "markers";

/// SOFTWARE key holding `ImageState`.
pub const STATE_KEY: &str = r"Microsoft\Windows\CurrentVersion\Setup\State";
/// SOFTWARE key holding the `SysprepCorrupt` failure latch.
pub const SYSPREP_KEY: &str = r"Microsoft\Windows\CurrentVersion\Setup\Sysprep";
/// SYSTEM key of the setup markers.
pub const SETUP_KEY: &str = "Setup";
/// SYSTEM key of sysprep's state machine.
pub const SYSPREP_STATUS_KEY: &str = r"Setup\Status\SysprepStatus";
/// State.ini, relative to the Windows directory.
pub const STATE_INI: &str = r"Setup\State\State.ini";
/// The success tag, relative to the Windows directory.
pub const SUCCEEDED_TAG: &str = r"System32\Sysprep\Sysprep_succeeded.tag";

/// The generalized-state markers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Markers;

/// The `ImageState` a generalize run leaves for `mode`.
pub fn image_state(mode: Mode) -> &'static str {
    match mode {
        Mode::Oobe => "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE",
        Mode::Audit => "IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT",
    }
}

/// The text encoding of an INI file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IniEncoding {
    /// 8-bit (ANSI code page / ASCII / UTF-8 without BOM).
    Ansi,
    /// UTF-8 with BOM.
    Utf8Bom,
    /// UTF-16LE with BOM.
    Utf16Le,
}

fn decode_ini(bytes: &[u8]) -> Option<(IniEncoding, String)> {
    if let Some(body) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        if body.len() % 2 != 0 {
            return None;
        }
        let units = body
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]));
        let s: Option<String> = char::decode_utf16(units).map(|r| r.ok()).collect();
        return s.map(|s| (IniEncoding::Utf16Le, s));
    }
    if let Some(body) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return std::str::from_utf8(body)
            .ok()
            .map(|s| (IniEncoding::Utf8Bom, s.to_string()));
    }
    // 8-bit text: the lines this operation reads and writes are ASCII;
    // other bytes are kept as they are (Latin-1 round-trips byte for byte).
    Some((
        IniEncoding::Ansi,
        bytes.iter().map(|&b| char::from(b)).collect(),
    ))
}

fn encode_ini(enc: IniEncoding, text: &str) -> Vec<u8> {
    match enc {
        IniEncoding::Ansi => text
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect(),
        IniEncoding::Utf8Bom => [0xEF, 0xBB, 0xBF].into_iter().chain(text.bytes()).collect(),
        IniEncoding::Utf16Le => [0xFF, 0xFE]
            .into_iter()
            .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
            .collect(),
    }
}

/// The `ImageState` of a State.ini text (section `[State]`, quotes
/// stripped as the INI functions do).
pub fn ini_image_state(text: &str) -> Option<String> {
    let mut in_state = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_state = l.eq_ignore_ascii_case("[State]");
            continue;
        }
        if !in_state {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            if k.trim().eq_ignore_ascii_case("ImageState") {
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                return Some(v.to_string());
            }
        }
    }
    None
}

/// `text` with `ImageState` in `[State]` set to `state` (other lines kept).
fn with_image_state(text: &str, state: &str) -> String {
    let new_line = format!("ImageState=\"{state}\"");
    let mut out: Vec<String> = Vec::new();
    let mut in_state = false;
    let mut saw_section = false;
    let mut written = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            if in_state && !written {
                out.push(new_line.clone());
                written = true;
            }
            in_state = l.eq_ignore_ascii_case("[State]");
            saw_section |= in_state;
            out.push(line.to_string());
            continue;
        }
        if in_state {
            if let Some((k, _)) = l.split_once('=') {
                if k.trim().eq_ignore_ascii_case("ImageState") {
                    if !written {
                        out.push(new_line.clone());
                        written = true;
                    }
                    continue;
                }
            }
        }
        out.push(line.to_string());
    }
    if !written {
        if !saw_section {
            out.push("[State]".to_string());
        }
        out.push(new_line);
    }
    let mut s = out.join("\r\n");
    s.push_str("\r\n");
    s
}

/// The bytes of a new State.ini for `state`.
pub fn new_state_ini(state: &str) -> Vec<u8> {
    format!("[State]\r\nImageState=\"{state}\"\r\n").into_bytes()
}

impl Operation for Markers {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "write the generalized-state markers so the next boot runs specialize, then OOBE or audit mode"
    }

    fn default_enabled(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &PlanContext) -> Result<Plan> {
        let mut plan = Plan::default();
        let mode = ctx.options.mode;
        let state = image_state(mode);

        // SOFTWARE: ImageState and the failure latch.
        if ctx.hive(&HiveId::Software).is_some() {
            plan.push(set_sz(
                ctx,
                NAME,
                HiveId::Software,
                STATE_KEY,
                "ImageState",
                state,
                "image state after generalize (Windows Setup states, documented)",
            ));
            plan.push(delete_value(
                ctx,
                NAME,
                HiveId::Software,
                SYSPREP_KEY,
                "SysprepCorrupt",
                "sysprep failure latch must be absent after a successful run",
            ));
        } else {
            plan.not_done(
                NAME,
                "SOFTWARE hive not loaded: ImageState not written and SysprepCorrupt not checked",
            );
        }

        // SYSTEM: what makes winlogon run windeploy, then specialize.
        if ctx.hive(&HiveId::System).is_some() {
            plan.push(set_sz(
                ctx,
                NAME,
                HiveId::System,
                SETUP_KEY,
                "CmdLine",
                r"oobe\windeploy.exe",
                "winlogon runs windeploy (then specialize) at the next boot",
            ));
            plan.push(set_dword(
                ctx,
                NAME,
                HiveId::System,
                SETUP_KEY,
                "SetupType",
                2,
                "setup type of a generalized image (observed on sysprepped templates)",
            ));
            plan.push(set_dword(
                ctx,
                NAME,
                HiveId::System,
                SETUP_KEY,
                "SystemSetupInProgress",
                1,
                "the system is in setup until specialize and OOBE finish",
            ));
            if mode == Mode::Oobe {
                // Observed as 1 on an image armed by `/generalize /oobe`
                // (one third-party inspection; low–medium). For /audit the
                // value is unknown and left as it is.
                plan.push(set_dword(
                    ctx,
                    NAME,
                    HiveId::System,
                    SETUP_KEY,
                    "OOBEInProgress",
                    1,
                    "OOBE is pending (observed on /generalize /oobe images)",
                ));
            }
            plan.push(set_dword(
                ctx,
                NAME,
                HiveId::System,
                SYSPREP_STATUS_KEY,
                "GeneralizationState",
                7,
                "sysprep state machine: generalize completed",
            ));
            plan.push(set_dword(
                ctx,
                NAME,
                HiveId::System,
                SYSPREP_STATUS_KEY,
                "CleanupState",
                2,
                "sysprep state machine: cleanup completed",
            ));
        } else {
            plan.not_done(NAME, "SYSTEM hive not loaded: setup markers not written");
        }

        // State.ini: same state as the registry.
        let ini = ctx.install.windows_path(STATE_INI);
        let ini_reason = "image state file after generalize (Windows Setup states, documented)";
        if ctx.backend.exists(&ini) && !ctx.backend.is_dir(&ini) {
            match ctx.backend.read(&ini).ok().as_deref().and_then(decode_ini) {
                Some((enc, text)) => {
                    if ini_image_state(&text).as_deref() != Some(state) {
                        let data = encode_ini(enc, &with_image_state(&text, state));
                        plan.edits.push(PlannedEdit::file(
                            NAME,
                            FileEdit::write(ini, data),
                            ini_reason,
                        ));
                    }
                }
                None => plan.edits.push(PlannedEdit::file(
                    NAME,
                    FileEdit::write(ini, new_state_ini(state)),
                    "image state file after generalize (the old one was unreadable)",
                )),
            }
        } else {
            plan.edits.push(PlannedEdit::file(
                NAME,
                FileEdit::write(ini, new_state_ini(state)),
                ini_reason,
            ));
        }

        // The success tag, last.
        let tag = ctx.install.windows_path(SUCCEEDED_TAG);
        if !ctx.backend.exists(&tag) {
            plan.edits.push(PlannedEdit::file(
                NAME,
                FileEdit::write(tag, Vec::new()),
                "sysprep writes this tag only after a complete run",
            ));
        }
        Ok(plan)
    }
}
