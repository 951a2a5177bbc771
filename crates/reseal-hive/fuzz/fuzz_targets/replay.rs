//! A primary image and two transaction logs: `log::recover`, then open and
//! read everything.
//!
//! Input framing (so that seeds can be built from real files): two
//! little-endian u32 lengths (primary, first log), then the primary, the
//! first log, and the rest of the input as the second log. Lengths past the
//! end are cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reseal_hive_fuzz::harness::{replay, split_replay_input};

fuzz_target!(|data: &[u8]| {
    let (primary, log1, log2) = split_replay_input(data);
    replay(primary, log1, log2);
});
