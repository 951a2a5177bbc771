//! `reseal completions SHELL` and `reseal man`: shell completion scripts
//! (clap_complete) and man pages (clap_mangen), generated from the same
//! command-line definition the program parses with.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use clap_complete::Shell;

/// Flags of `reseal completions`.
#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, powershell (or elvish).
    #[arg(value_enum)]
    shell: Shell,
}

/// Flags of `reseal man`.
#[derive(Args)]
pub struct ManArgs {
    /// Write reseal.1 and one page per command (reseal-generalize.1, ...)
    /// into this folder instead of printing reseal.1.
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

/// Runs `reseal completions`.
pub fn run_completions(a: CompletionsArgs) -> Result<ExitCode> {
    let mut cmd = crate::cli_command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "reseal", &mut buf);
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `reseal man`.
pub fn run_man(a: ManArgs) -> Result<ExitCode> {
    let cmd = crate::cli_command();
    match a.out_dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: create the folder", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("{}: write the man pages", dir.display()))?;
        }
        None => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut buf)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&buf)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
