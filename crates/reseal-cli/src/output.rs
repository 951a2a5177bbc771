//! What the command line prints: the one JSON shape of every command
//! (`docs/report.schema.json`), errors as JSON under `--json`, the exit
//! code of an error, and the `--report` file.
//!
//! Every `--json` output is one object that starts with `schema`, `tool`,
//! `version` and `command`, followed by the command's results, or by
//! `error` when it failed.

use std::io::Write;
use std::path::{Path, PathBuf};

use reseal::ResealError;
use reseal_hive::HiveError;
use serde_json::{Map, Value, json};

/// Version of the JSON shape (`schema` in every object printed).
pub const SCHEMA: u32 = 2;

/// Exit code: refused (preflight, or an image in a state the command
/// does not accept); nothing was written.
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: bad usage or bad input.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code: internal error (a failed commit or check, a write to the
/// host that failed, a bug).
pub const EXIT_INTERNAL: u8 = 3;

/// The fields every JSON object starts with.
pub fn envelope(command: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("schema".into(), json!(SCHEMA));
    m.insert("tool".into(), json!("reseal"));
    m.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    m.insert("command".into(), json!(command));
    m
}

/// The object of a command: the envelope followed by `fields` (an
/// object).
pub fn document(command: &str, fields: Value) -> Value {
    let mut m = envelope(command);
    if let Value::Object(f) = fields {
        m.extend(f);
    }
    Value::Object(m)
}

/// Prints a JSON value on standard output (pretty, one trailing newline).
pub fn print_json(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Pretty JSON text with a trailing newline (for `--report`).
pub fn to_text(v: &Value) -> anyhow::Result<String> {
    Ok(format!("{}\n", serde_json::to_string_pretty(v)?))
}

/// `--report FILE` could not be written after the command ran.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}: cannot write the report ({source}); {}",
    path.display(),
    if *changed { "the image WAS changed: the command succeeded, only its report is missing" }
    else { "the image was not changed" }
)]
pub struct ReportWriteFailed {
    /// The report file.
    pub path: PathBuf,
    /// Whether the command changed the image before.
    pub changed: bool,
    /// The operating system's error.
    #[source]
    pub source: std::io::Error,
}

/// Writes the `--report` file, if one was asked for. `changed`: whether
/// the command has changed the image (said in the error).
pub fn write_report(path: Option<&Path>, text: &str, changed: bool) -> anyhow::Result<()> {
    let Some(p) = path else {
        return Ok(());
    };
    std::fs::write(p, text).map_err(|source| ReportWriteFailed {
        path: p.to_path_buf(),
        changed,
        source,
    })?;
    Ok(())
}

/// Whether the error is a closed standard output (`reseal ... | head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    })
}

/// The exit code of an error: 1 refused, 2 bad usage or input, 3
/// internal.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ReportWriteFailed>().is_some() {
        return EXIT_INTERNAL;
    }
    if let Some(r) = e.downcast_ref::<ResealError>() {
        return match r {
            ResealError::Refused { .. } => EXIT_REFUSED,
            ResealError::InvalidInput { .. }
            | ResealError::NotFound { .. }
            | ResealError::UnsafePath { .. }
            | ResealError::NoInstall { .. }
            | ResealError::Hive { .. }
            | ResealError::DiskFormat { .. }
            | ResealError::Busy { .. }
            | ResealError::NoSpace { .. } => EXIT_BAD_INPUT,
            ResealError::CommitFailed { .. }
            | ResealError::CheckFailed { .. }
            | ResealError::SidLeftover { .. }
            | ResealError::Io { .. } => EXIT_INTERNAL,
            _ => EXIT_INTERNAL,
        };
    }
    if e.downcast_ref::<HiveError>().is_some() || e.downcast_ref::<clap::Error>().is_some() {
        return EXIT_BAD_INPUT;
    }
    if e.downcast_ref::<std::io::Error>().is_some() {
        return EXIT_INTERNAL;
    }
    // Anything else comes from checking what the user gave (a SID, a
    // .reg file, an option) before work started.
    EXIT_BAD_INPUT
}

/// The `error` object of an error: its `kind`, the whole `message`, and
/// where known the `file`, `offset`, `what`, `expected` and `found` of a
/// format error.
pub fn error_object(e: &anyhow::Error) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    let kind = if let Some(r) = e.downcast_ref::<ReportWriteFailed>() {
        put("file", json!(r.path.display().to_string()));
        put("image_changed", json!(r.changed));
        "report_write"
    } else if let Some(r) = e.downcast_ref::<ResealError>() {
        reseal_fields(r, &mut put)
    } else if let Some(h) = e.downcast_ref::<HiveError>() {
        hive_fields(h, &mut put);
        "hive"
    } else if e.downcast_ref::<clap::Error>().is_some() {
        "usage"
    } else if e.downcast_ref::<std::io::Error>().is_some() {
        "io"
    } else if exit_code(e) == EXIT_BAD_INPUT {
        "invalid_input"
    } else {
        "internal"
    };
    m.insert("kind".into(), json!(kind));
    m.insert("message".into(), json!(format!("{e:#}")));
    m.insert("exit_code".into(), json!(exit_code(e)));
    Value::Object(m)
}

fn reseal_fields(r: &ResealError, put: &mut impl FnMut(&str, Value)) -> &'static str {
    match r {
        ResealError::Io { path, action, .. } => {
            put("file", json!(path.display().to_string()));
            put("action", json!(action));
            "io"
        }
        ResealError::Hive { path, source } => {
            hive_fields(source, put);
            put("path", json!(path));
            "hive"
        }
        ResealError::NotFound { path } => {
            put("path", json!(path));
            "not_found"
        }
        ResealError::UnsafePath { path, .. } => {
            put("path", json!(path));
            "unsafe_path"
        }
        ResealError::NoInstall { root } => {
            put("file", json!(root));
            "no_install"
        }
        ResealError::InvalidInput { what, .. } => {
            put("what", json!(what));
            "invalid_input"
        }
        ResealError::CommitFailed { path, action, .. } => {
            put("path", json!(path));
            put("action", json!(action));
            "commit_failed"
        }
        ResealError::CheckFailed { path, .. } => {
            put("path", json!(path));
            "check_failed"
        }
        ResealError::SidLeftover { place, sid, .. } => {
            put("path", json!(place));
            put("found", json!(sid));
            "sid_leftover"
        }
        ResealError::Refused { what, .. } => {
            put("what", json!(what));
            "refused"
        }
        ResealError::DiskFormat {
            file,
            offset,
            what,
            expected,
            found,
        } => {
            put("file", json!(file.display().to_string()));
            put("offset", json!(offset));
            put("what", json!(what));
            put("expected", json!(expected));
            put("found", json!(found));
            "disk_format"
        }
        _ => "internal",
    }
}

fn hive_fields(h: &HiveError, put: &mut impl FnMut(&str, Value)) {
    match h {
        HiveError::Io { file, action, .. } => {
            put("file", json!(file.display().to_string()));
            put("action", json!(action));
        }
        HiveError::Corrupt {
            file,
            offset,
            what,
            expected,
            found,
        } => {
            put("file", json!(file));
            put("offset", json!(offset));
            put("what", json!(what));
            put("expected", json!(expected));
            put("found", json!(found));
        }
        HiveError::DirtyWithoutLogs { file, .. }
        | HiveError::ReadOnly { file }
        | HiveError::KeyNotFound { file, .. } => put("file", json!(file)),
        _ => {}
    }
}

/// The whole JSON document of a failed command.
pub fn error_document(command: &str, e: &anyhow::Error) -> Value {
    let mut m = envelope(command);
    m.insert("error".into(), error_object(e));
    Value::Object(m)
}
