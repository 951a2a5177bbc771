//! The `reseal` command line: flags and glue only.
#![forbid(unsafe_code)]

fn main() {}
