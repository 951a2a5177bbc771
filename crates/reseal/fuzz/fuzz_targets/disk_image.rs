//! Any bytes as an image file: detection by content, every container,
//! the partition table, reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    reseal_fuzz::exercise(data);
});
