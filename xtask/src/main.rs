//! Project tasks: demo, test, fixtures, bench.
fn main() {}
