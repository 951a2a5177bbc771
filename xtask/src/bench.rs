//! `cargo xtask bench hive`: benchmarks of the hive engine against other
//! tools in the same run (not written yet).

use anyhow::{Result, bail};

pub fn run(args: &[&str]) -> Result<()> {
    match args {
        ["hive"] => bail!("`cargo xtask bench hive` is not implemented yet"),
        _ => bail!("usage: cargo xtask bench hive"),
    }
}
