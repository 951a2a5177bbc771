//! `provider-actions`: carries out the declarative actions of the image's
//! own sysprep providers, and reports every provider reseal does not
//! emulate.
//!
//! Sysprep is a driver for providers (sysprep-internals §1, high): DLL entry
//! points and declarative delete actions, listed by the image itself in
//! `<windir>\System32\Sysprep\ActionFiles\{Cleanup,Generalize}.xml`
//! (Windows 8 and later) and in SOFTWARE
//! `Microsoft\Windows\CurrentVersion\Setup\{Sysprep,SysPrepExternal}\{Cleanup,Generalize}`
//! (Windows Vista/7 built-ins, and third-party providers on every version).
//! `sysprep /generalize` runs the cleanup phase, then the generalize phase;
//! the specialize phase runs at the next boot (Windows does it on the
//! deployed machine, so it is not this operation's business). See
//! [`super::action_files`] for the format.
//!
//! What this operation does with each declared provider:
//!
//! * Declarative actions are carried out as edits: `deleteKey` (key and
//!   subtree), `deleteValue`, `deleteDirectory` (tree), `deleteFile` (a file
//!   or the files matching `*`/`?` in the last component). Only what exists
//!   is deleted, so a second run plans nothing. Registry paths are mapped to
//!   the offline hives (`HKLM\SOFTWARE|SYSTEM|SAM|SECURITY`,
//!   `HKLM\SYSTEM\CurrentControlSet` → every control set, `HKCR` →
//!   SOFTWARE `Classes`, `HKU\.DEFAULT` / `HKU\S-1-5-18` → DEFAULT); file
//!   paths have their `$(runtime.*)` variables ([`RUNTIME_VARIABLES`]) and
//!   `%…%` variables expanded and are matched case-insensitively. An action
//!   that cannot be mapped (`HKEY_CURRENT_USER`: offline there is no
//!   current user; an unknown variable; a `setValue`, whose encoding is not
//!   documented) is reported, never guessed.
//! * `exclude` on an `imaging` entry: sysprep skips the entry under the
//!   listed conditions. `vm` is honoured (the entry is skipped with
//!   `--mode vm`, carried out otherwise); other tokens are not documented,
//!   so such an entry is reported and not carried out (low: the attribute's
//!   vocabulary is not public).
//! * Module and validator entry points: those in [`EMULATED`] are what
//!   other reseal operations do (and are reported by them when they do not);
//!   every other one — and every one whose emulating operation is disabled
//!   in this run — is reported as not done with its module, method, order
//!   and component. Every third-party (`SysPrepExternal`) provider is
//!   reported: it is vendor code that only runs inside Windows.

use std::collections::BTreeSet;

use crate::backend::join;
use crate::context::{PlanContext, reg_string};
use crate::edit::{FileEdit, PlannedEdit};
use crate::error::Result;
use crate::hives::HiveId;

use super::action_files::{self, Action, ActionEntry, EntryPoint, Phase};
use super::{Operation, Plan, delete_key, delete_value, find_entry, list_dir, volume_root};

const NAME: &str = "provider-actions";

/// A sysprep entry point that reseal emulates through its own operations.
#[derive(Debug, Clone, Copy)]
pub struct Emulation {
    /// The module's file name, lower case (`""`: any module).
    pub module: &'static str,
    /// The entry point (compared case-insensitively).
    pub method: &'static str,
    /// The reseal operations that do its work (`preflight`: a preflight
    /// finding, always on).
    pub by: &'static [&'static str],
    /// When the emulation is partial: what is not done (the provider is
    /// then still reported, with this text).
    pub partial: Option<&'static str>,
}

/// The entry points reseal emulates (see docs/fidelity.md for the evidence
/// of each).
pub const EMULATED: &[Emulation] = &[
    Emulation {
        module: "sppnp.dll",
        method: "Sysprep_Generalize_Pnp",
        by: &["devices", "boot-drivers"],
        partial: None,
    },
    Emulation {
        module: "slc.dll",
        method: "SLReArmWindows",
        by: &["activation"],
        partial: None,
    },
    Emulation {
        module: "appxsysprep.dll",
        method: "SysprepGeneralizeValidate",
        by: &["preflight"],
        partial: None,
    },
    Emulation {
        module: "",
        method: "SqmSysprepGeneralize",
        by: &["identities"],
        partial: None,
    },
    Emulation {
        module: "capisp.dll",
        method: "CAPISysPrep_Generalize",
        by: &["identities", "machine-secrets"],
        partial: Some(
            "reseal deletes the MachineGuid (identities) and the Remote Desktop certificate (machine-secrets); what the provider does to other machine keys and certificates is not documented",
        ),
    },
    Emulation {
        module: "spnet.dll",
        method: "Sysprep_Generalize_Net",
        by: &["identities", "devices"],
        partial: Some(
            "reseal deletes DHCP leases, the DHCPv6 DUID and the network location history (identities) and the removed adapters' bindings (devices); the provider's exact effect is not documented",
        ),
    },
];

/// `$(runtime.NAME)` variables and the image path (from the volume root)
/// each stands for. Names compare case-insensitively.
pub const RUNTIME_VARIABLES: &[(&str, &str)] = &[
    ("windows", "<windir>"),
    ("windir", "<windir>"),
    ("systemRoot", "<windir>"),
    ("system32", r"<windir>\System32"),
    ("system", r"<windir>\System32"),
    ("sysWow64", r"<windir>\SysWOW64"),
    ("drivers", r"<windir>\System32\drivers"),
    ("wbem", r"<windir>\System32\wbem"),
    ("inf", r"<windir>\INF"),
    ("fonts", r"<windir>\Fonts"),
    ("help", r"<windir>\Help"),
    ("systemDrive", ""),
    ("bootDrive", ""),
    ("programFiles", "Program Files"),
    ("programFilesX86", "Program Files (x86)"),
    ("commonFiles", r"Program Files\Common Files"),
    ("commonFilesX86", r"Program Files (x86)\Common Files"),
    ("programData", "ProgramData"),
    ("commonAppData", "ProgramData"),
    ("allUsersProfile", "ProgramData"),
    ("public", r"Users\Public"),
    ("profilesDirectory", "Users"),
];

/// `%NAME%` environment variables understood in file paths.
const ENV_VARIABLES: &[(&str, &str)] = &[
    ("windir", "<windir>"),
    ("SystemRoot", "<windir>"),
    ("SystemDrive", ""),
    ("ProgramData", "ProgramData"),
    ("ALLUSERSPROFILE", "ProgramData"),
    ("ProgramFiles", "Program Files"),
    ("ProgramFiles(x86)", "Program Files (x86)"),
    ("PUBLIC", r"Users\Public"),
];

/// Carries out declarative provider actions; reports the rest.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProviderActions;

/// Whether operation `name` runs in this run (same rules as the run's
/// selection; `preflight` always runs).
fn runs(ctx: &PlanContext, name: &str) -> bool {
    if name == "preflight" {
        return true;
    }
    let sel = &ctx.options.selection;
    let has = |list: &[String]| list.iter().any(|n| n.eq_ignore_ascii_case(name));
    match &sel.only {
        Some(only) => has(only),
        None => {
            let default = super::all()
                .iter()
                .any(|o| o.name() == name && o.default_enabled());
            (default || has(&sel.enable)) && !has(&sel.disable)
        }
    }
}

/// The file name of a module path, lower case.
fn module_file(module: &str) -> String {
    module
        .rsplit(['\\', '/'])
        .next()
        .unwrap_or(module)
        .trim()
        .to_ascii_lowercase()
}

/// The emulation of an entry point, if reseal has one.
pub fn emulation(ep: &EntryPoint) -> Option<&'static Emulation> {
    let file = module_file(&ep.module);
    EMULATED.iter().find(|e| {
        (e.module.is_empty() || e.module == file) && e.method.eq_ignore_ascii_case(ep.method.trim())
    })
}

/// The SystemRoot drive letter recorded in SOFTWARE (`C` for `C:\Windows`).
fn system_drive_letter(ctx: &PlanContext) -> Option<char> {
    let v = ctx.value(
        &HiveId::Software,
        r"Microsoft\Windows NT\CurrentVersion",
        "SystemRoot",
    )?;
    let s = reg_string(&v.data);
    let mut chars = s.chars();
    let letter = chars.next()?;
    (letter.is_ascii_alphabetic() && chars.next() == Some(':')).then_some(letter)
}

/// Replaces `$(runtime.X)` and `%X%` variables with image paths (from the
/// volume root, `<windir>` standing for the Windows directory). Errors
/// name what is not understood.
fn expand(path: &str) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut rest = path;
    loop {
        let dollar = rest.find("$(");
        let pct = rest.find('%');
        let (at, runtime) = match (dollar, pct) {
            (None, None) => break,
            (Some(d), Some(p)) if p < d => (p, false),
            (Some(d), _) => (d, true),
            (None, Some(p)) => (p, false),
        };
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if runtime {
            let close = after
                .find(')')
                .ok_or_else(|| format!("unclosed variable in {path:?}"))?;
            let name = &after[2..close];
            let short = name
                .get(..8)
                .filter(|p| p.eq_ignore_ascii_case("runtime."))
                .map(|_| &name[8..])
                .ok_or_else(|| format!("variable $({name}) is not a runtime variable"))?;
            let value = RUNTIME_VARIABLES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(short))
                .map(|(_, v)| *v)
                .ok_or_else(|| format!("unknown variable $({name})"))?;
            out.push_str(value);
            rest = &after[close + 1..];
        } else {
            let close = after[1..]
                .find('%')
                .map(|i| i + 1)
                .ok_or_else(|| format!("unclosed %variable% in {path:?}"))?;
            let name = &after[1..close];
            let value = ENV_VARIABLES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
                .ok_or_else(|| format!("unknown variable %{name}%"))?;
            out.push_str(value);
            rest = &after[close + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// An action file path as components from the volume root (case as
/// written), or why it cannot be mapped.
fn file_components(ctx: &PlanContext, path: &str) -> std::result::Result<Vec<String>, String> {
    let mut expanded = expand(path)?;
    // A drive letter: only the system drive is inside the image.
    let bytes = expanded.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' {
        let letter = char::from(bytes[0]);
        match system_drive_letter(ctx) {
            Some(sys) if sys.eq_ignore_ascii_case(&letter) => {
                expanded = expanded[2..].to_string();
            }
            _ => {
                return Err(format!(
                    "{path:?} is on drive {letter}:, which is not the system drive of this image"
                ));
            }
        }
    }
    // Paths are from the volume that holds the Windows directory.
    let root = volume_root(ctx);
    let windir = ctx
        .install
        .windows_dir
        .trim_matches('\\')
        .rsplit('\\')
        .next()
        .unwrap_or_default()
        .to_string();
    let mut comps: Vec<String> = root
        .split('\\')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    let base = comps.len();
    for c in expanded.split(['\\', '/']).filter(|c| !c.is_empty()) {
        if c == "<windir>" {
            comps.push(windir.clone());
            continue;
        }
        if c == "." || c == ".." || c.contains(':') || c.contains('\0') {
            return Err(format!(
                "{path:?} has a component {c:?} that is not a plain name"
            ));
        }
        comps.push(c.to_string());
    }
    if comps.len() == base {
        return Err(format!("{path:?} names the volume root"));
    }
    // `<windir>` inside a component (e.g. `<windir>x`) would be a bad variable.
    if comps.iter().any(|c| c.contains("<windir>")) {
        return Err(format!("{path:?} does not expand to a path"));
    }
    Ok(comps)
}

/// Finds an existing entry by components (case-insensitive), returning its
/// path as stored and whether it is a directory.
fn resolve(ctx: &PlanContext, comps: &[String]) -> Option<(String, bool)> {
    let mut dir = String::new();
    let mut is_dir = true;
    for c in comps {
        if !is_dir {
            return None;
        }
        let (path, e) = find_entry(ctx, &dir, c)?;
        dir = path;
        is_dir = e.is_dir;
    }
    Some((dir, is_dir))
}

/// Whether `name` matches a `*`/`?` pattern (ASCII case-insensitive).
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().flat_map(char::to_lowercase).collect();
    let n: Vec<char> = name.chars().flat_map(char::to_lowercase).collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// A registry path mapped to the offline hives: one or more (hive, key)
/// pairs (several for `CurrentControlSet`).
fn registry_targets(
    ctx: &PlanContext,
    path: &str,
) -> std::result::Result<Vec<(HiveId, String)>, String> {
    let expanded = expand(path)?;
    let comps: Vec<&str> = expanded.split('\\').filter(|c| !c.is_empty()).collect();
    let Some((root, rest)) = comps.split_first() else {
        return Err("empty registry path".into());
    };
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let join_rest = |r: &[&str]| r.join("\\");
    if eq(root, "HKEY_LOCAL_MACHINE") || eq(root, "HKLM") {
        let Some((hive, key)) = rest.split_first() else {
            return Err(format!("{path:?} names HKEY_LOCAL_MACHINE itself"));
        };
        let id = match hive.to_ascii_uppercase().as_str() {
            "SOFTWARE" => HiveId::Software,
            "SYSTEM" => HiveId::System,
            "SAM" => HiveId::Sam,
            "SECURITY" => HiveId::Security,
            other => {
                return Err(format!(
                    "HKEY_LOCAL_MACHINE\\{other} is not an offline hive"
                ));
            }
        };
        if id == HiveId::System && key.first().is_some_and(|c| eq(c, "CurrentControlSet")) {
            let tail = join_rest(&key[1..]);
            return Ok(ctx
                .control_sets()
                .into_iter()
                .map(|cs| (HiveId::System, join(&cs, &tail)))
                .collect());
        }
        return Ok(vec![(id, join_rest(key))]);
    }
    if eq(root, "HKEY_CLASSES_ROOT") || eq(root, "HKCR") {
        return Ok(vec![(HiveId::Software, join("Classes", &join_rest(rest)))]);
    }
    if eq(root, "HKEY_USERS") || eq(root, "HKU") {
        if let Some((user, key)) = rest.split_first() {
            if eq(user, ".DEFAULT") || eq(user, "S-1-5-18") {
                return Ok(vec![(HiveId::Default, join_rest(key))]);
            }
        }
        return Err(format!(
            "{path:?}: only HKEY_USERS\\.DEFAULT is mapped offline"
        ));
    }
    if eq(root, "HKEY_CURRENT_USER") || eq(root, "HKCU") {
        return Err(format!(
            "{path:?}: offline there is no current user (sysprep would act on the profile of the administrator running it)"
        ));
    }
    Err(format!("{path:?}: unknown registry root {root:?}"))
}

/// How `exclude` applies to this run: `Ok(true)` skip, `Ok(false)` run,
/// `Err` not understood.
fn excluded(exclude: &str, vm: bool) -> std::result::Result<bool, ()> {
    let mut skip = false;
    for t in exclude
        .split([' ', ',', ';', '|', '\t'])
        .filter(|t| !t.is_empty())
    {
        if t.eq_ignore_ascii_case("vm") {
            skip |= vm;
        } else {
            return Err(());
        }
    }
    Ok(skip)
}

/// The phase's name in messages.
fn phase_word(p: Phase) -> &'static str {
    match p {
        Phase::Cleanup => "cleanup",
        Phase::Generalize => "generalize",
    }
}

fn where_declared(e: &ActionEntry) -> String {
    format!(
        "component {}, order {}, {}",
        e.component_label(),
        e.order_label(),
        e.source
    )
}

impl ProviderActions {
    /// Plans one declarative action.
    fn action(ctx: &PlanContext, plan: &mut Plan, entry: &ActionEntry, action: &Action) {
        let before = plan.edits.len();
        Self::action_inner(ctx, plan, entry, action);
        // Never delete the Windows directory, a hive reseal loaded, or a
        // directory holding one: that would destroy what this run edits.
        let protected: Vec<String> = std::iter::once(ctx.install.windows_dir.clone())
            .chain(ctx.install.hives.iter().map(|h| h.path.clone()))
            .map(|p| p.to_ascii_lowercase())
            .collect();
        let mut refused = Vec::new();
        let tail = plan.edits.split_off(before);
        for e in tail {
            let hit = match &e.edit {
                crate::edit::Edit::File {
                    change: FileEdit::Delete { path } | FileEdit::DeleteTree { path },
                } => {
                    let p = path.to_ascii_lowercase();
                    protected
                        .iter()
                        .any(|x| *x == p || x.starts_with(&format!("{p}\\")))
                }
                _ => false,
            };
            if hit {
                refused.push(e);
            } else {
                plan.edits.push(e);
            }
        }
        for e in refused {
            if let crate::edit::Edit::File { change } = &e.edit {
                plan.not_done(
                    NAME,
                    format!(
                        "declarative {} action not carried out: {change:?} would delete the Windows directory or a registry hive ({})",
                        phase_word(entry.phase),
                        where_declared(entry)
                    ),
                );
            }
        }
    }

    fn action_inner(ctx: &PlanContext, plan: &mut Plan, entry: &ActionEntry, action: &Action) {
        let reason = format!(
            "sysprep {} action of {} (order {})",
            phase_word(entry.phase),
            entry.component_label(),
            entry.order_label()
        );
        let fail = |plan: &mut Plan, what: String| {
            plan.not_done(
                NAME,
                format!(
                    "declarative {} action not carried out: {what} ({})",
                    phase_word(entry.phase),
                    where_declared(entry)
                ),
            );
        };
        match action {
            Action::DeleteKey { path } => match registry_targets(ctx, path) {
                Ok(targets) => {
                    for (hive, key) in targets {
                        if key.is_empty() {
                            fail(plan, format!("deleteKey {path:?} names a whole hive"));
                            continue;
                        }
                        plan.push(delete_key(ctx, NAME, hive, &key, &reason));
                    }
                }
                Err(why) => fail(plan, format!("deleteKey: {why}")),
            },
            Action::DeleteValue { path, name } => match registry_targets(ctx, path) {
                Ok(targets) => {
                    for (hive, key) in targets {
                        plan.push(delete_value(ctx, NAME, hive, &key, name, &reason));
                    }
                }
                Err(why) => fail(plan, format!("deleteValue {name:?}: {why}")),
            },
            Action::SetValue {
                path,
                name,
                value_type,
                value,
            } => fail(
                plan,
                format!(
                    "setValue {name:?} = {value:?} (type {value_type:?}) under {path:?}: the encoding of setValue is not documented"
                ),
            ),
            Action::DeleteDirectory { path } => match file_components(ctx, path) {
                Ok(comps) => match resolve(ctx, &comps) {
                    Some((p, true)) => plan.edits.push(PlannedEdit::file(
                        NAME,
                        FileEdit::DeleteTree { path: p },
                        reason,
                    )),
                    Some((p, false)) => {
                        fail(plan, format!("deleteDirectory {path:?}: {p} is a file"))
                    }
                    None => {}
                },
                Err(why) => fail(plan, format!("deleteDirectory: {why}")),
            },
            Action::DeleteFile { path } => match file_components(ctx, path) {
                Ok(mut comps) => {
                    let last = comps.pop().unwrap_or_default();
                    if comps.iter().any(|c| c.contains(['*', '?'])) {
                        fail(
                            plan,
                            format!(
                                "deleteFile {path:?}: wildcards are only understood in the last component"
                            ),
                        );
                        return;
                    }
                    let dir = if comps.is_empty() {
                        Some((String::new(), true))
                    } else {
                        resolve(ctx, &comps)
                    };
                    let Some((dir, true)) = dir else {
                        return;
                    };
                    for e in list_dir(ctx, &dir) {
                        if !e.is_dir && wildcard_match(&last, &e.name) {
                            plan.edits.push(PlannedEdit::file(
                                NAME,
                                FileEdit::Delete {
                                    path: join(&dir, &e.name),
                                },
                                reason.clone(),
                            ));
                        }
                    }
                }
                Err(why) => fail(plan, format!("deleteFile: {why}")),
            },
        }
    }

    /// Reports an entry point that is not emulated (or only partly).
    fn entry_point(
        ctx: &PlanContext,
        plan: &mut Plan,
        entry: &ActionEntry,
        ep: &EntryPoint,
        validator: bool,
    ) {
        let kind = if validator { "validator" } else { "provider" };
        let head = format!(
            "sysprep {} {kind} not run: module {}, method {}, order {} (component {}, {})",
            phase_word(entry.phase),
            ep.module,
            ep.method,
            entry.order_label(),
            entry.component_label(),
            entry.source
        );
        if entry.third_party {
            plan.not_done(
                NAME,
                format!(
                    "third-party {head}: vendor code that only runs inside Windows; use the vendor's own image preparation, or run sysprep"
                ),
            );
            return;
        }
        match emulation(ep) {
            Some(em) => {
                let off: Vec<&str> = em.by.iter().copied().filter(|o| !runs(ctx, o)).collect();
                if !off.is_empty() {
                    plan.not_done(
                        NAME,
                        format!(
                            "{head}: reseal emulates it with {}, disabled in this run ({})",
                            em.by.join(" + "),
                            off.join(", ")
                        ),
                    );
                } else if let Some(p) = em.partial {
                    plan.not_done(NAME, format!("{head}: partly emulated: {p}"));
                }
            }
            None => plan.not_done(NAME, format!("{head}: reseal does not emulate it")),
        }
    }

    /// Plans one declared entry.
    fn entry(ctx: &PlanContext, plan: &mut Plan, entry: &ActionEntry) {
        if let Some(ex) = &entry.exclude {
            match excluded(ex, ctx.options.vm) {
                Ok(true) => return,
                Ok(false) => {}
                Err(()) => {
                    let what: Vec<String> = entry
                        .validate
                        .iter()
                        .chain(&entry.modules)
                        .map(|ep| format!("module {}, method {}", ep.module, ep.method))
                        .chain(
                            (!entry.actions.is_empty())
                                .then(|| format!("{} declarative action(s)", entry.actions.len())),
                        )
                        .collect();
                    plan.not_done(
                        NAME,
                        format!(
                            "sysprep {} entry not run: it is excluded under conditions reseal does not know (exclude={ex:?}; {}): {}",
                            phase_word(entry.phase),
                            where_declared(entry),
                            if what.is_empty() { "nothing declared".to_string() } else { what.join("; ") }
                        ),
                    );
                    return;
                }
            }
        }
        for ep in &entry.validate {
            Self::entry_point(ctx, plan, entry, ep, true);
        }
        for ep in &entry.modules {
            Self::entry_point(ctx, plan, entry, ep, false);
        }
        for a in &entry.actions {
            Self::action(ctx, plan, entry, a);
        }
        if !entry.unknown.is_empty() {
            plan.not_done(
                NAME,
                format!(
                    "sysprep {} entry has elements reseal does not understand ({}): {}",
                    phase_word(entry.phase),
                    entry.unknown.join(", "),
                    where_declared(entry)
                ),
            );
        }
    }
}

/// Every entry the image declares for the cleanup and generalize phases,
/// in sysprep's order (cleanup first; action files, then registry lists).
/// Files that cannot be parsed are reported in `plan`.
pub fn declared_entries(ctx: &PlanContext, plan: &mut Plan) -> Vec<ActionEntry> {
    let mut out = Vec::new();
    let dir = ctx.install.windows_path(r"System32\Sysprep\ActionFiles");
    for phase in [Phase::Cleanup, Phase::Generalize] {
        let file = format!("{}.xml", phase.file_stem());
        if let Some((path, e)) = find_entry(ctx, &dir, &file) {
            if !e.is_dir {
                match ctx
                    .backend
                    .read(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|b| action_files::parse(&path, phase, &b))
                {
                    Ok(entries) => out.extend(entries),
                    Err(why) => plan.not_done(
                        NAME,
                        format!(
                            "the sysprep action file {path} cannot be read ({why}): none of its {} providers were run or checked",
                            phase_word(phase)
                        ),
                    ),
                }
            }
        }
        out.extend(action_files::registry_entries(ctx.install, phase));
    }
    out
}

impl Operation for ProviderActions {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "carry out the declarative delete actions of the image's sysprep providers (action files, registry lists) and report every provider reseal does not emulate"
    }

    fn default_enabled(&self) -> bool {
        true
    }

    fn plan(&self, ctx: &PlanContext) -> Result<Plan> {
        let mut plan = Plan::default();
        for entry in declared_entries(ctx, &mut plan) {
            Self::entry(ctx, &mut plan, &entry);
        }
        // Two entries may name one path: keep the first edit. Edits the
        // `autopilot` operation makes in this run (the same declarative
        // actions, kept there for images without action files) are left to
        // it, so that the report names each edit once.
        let mut seen = BTreeSet::new();
        if runs(ctx, "autopilot") {
            let plans = super::autopilot::Autopilot.plan(ctx)?;
            for e in plans.edits {
                seen.insert(format!("{:?}", e.edit).to_ascii_lowercase());
            }
        }
        plan.edits
            .retain(|e| seen.insert(format!("{:?}", e.edit).to_ascii_lowercase()));
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*.log", "setupact.LOG"));
        assert!(wildcard_match("a?c*", "abc"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("*.log", "x.log1"));
        assert!(wildcard_match("*a*b", "xxaybzb"));
        assert!(!wildcard_match("a", "ab"));
    }

    #[test]
    fn variables() {
        assert_eq!(
            expand(r"$(runtime.windows)\ServiceState\x").unwrap(),
            r"<windir>\ServiceState\x"
        );
        assert_eq!(
            expand(r"$(RUNTIME.ProgramData)\Microsoft").unwrap(),
            r"ProgramData\Microsoft"
        );
        assert_eq!(expand(r"%SystemRoot%\Temp").unwrap(), r"<windir>\Temp");
        assert!(expand(r"$(runtime.nope)\x").is_err());
        assert!(expand(r"$(build.nttree)\x").is_err());
        assert!(expand(r"$(runtime.windows\x").is_err());
        assert!(expand(r"%nope%").is_err());
        assert!(expand("%").is_err());
    }

    #[test]
    fn exclusions() {
        assert_eq!(excluded("vm", true), Ok(true));
        assert_eq!(excluded("VM", false), Ok(false));
        assert_eq!(excluded("iot", false), Err(()));
    }

    #[test]
    fn emulated_lookup() {
        let ep = |m: &str, f: &str| EntryPoint {
            module: m.into(),
            method: f.into(),
        };
        assert!(
            emulation(&ep(
                r"$(runtime.system32)\SPPNP.dll",
                "sysprep_generalize_pnp"
            ))
            .is_some()
        );
        assert!(emulation(&ep("sqmapi.dll", "SqmSysprepGeneralize")).is_some());
        assert!(emulation(&ep("spbcd.dll", "Sysprep_Generalize_Bcd")).is_none());
    }
}
