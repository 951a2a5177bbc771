//! The structural checker on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reseal_hive_fuzz::harness::check_bytes;

fuzz_target!(|data: &[u8]| {
    check_bytes(data);
});
