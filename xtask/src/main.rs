//! Project tasks: `cargo xtask setup | test | demo | fixtures | dist | bench ...`.
#![forbid(unsafe_code)]

mod bench;
mod demo;
mod dist;
mod fixtures;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  setup        install what the tests need (Debian packages, Python validators, rustfmt, clippy)
  test         setup, then cargo fmt --check, cargo clippy -D warnings and cargo test
  fixtures     write the generated fixtures (testdata/generated, target/fixtures)
  demo         setup, then show the hive engine at work on a hive it generates
  dist         build target/dist/: a .deb (binary, man pages, completions) and a tarball
               (--debug: package the dev build; --install-check: dpkg -i it, run it, remove it)
  bench hive   benchmark the hive engine against other readers and writers (not yet)
  bench wim    benchmark generalizing a WIM against extract + hivexregedit + update
  bench disk   benchmark generalizing a VHDX against qemu-img + ntfs-3g tools + hivexregedit
  bench stamp  benchmark stamping 20 linked VHDX clones against copying the parent and personalizing each copy
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["setup"] => setup::run(),
        ["test"] => test::run(),
        ["demo"] => demo::run(),
        ["fixtures"] => fixtures::run(),
        ["dist", rest @ ..] => dist::run(rest),
        ["bench", rest @ ..] => bench::run(rest),
        [] | ["help" | "-h" | "--help"] => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("unknown task: {}\n\n{USAGE}", args.join(" "));
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
