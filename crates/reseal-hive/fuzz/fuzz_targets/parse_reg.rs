//! The `.reg` parser on arbitrary bytes; what parses is imported into a new
//! hive, which must check clean and reopen.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reseal_hive_fuzz::harness::parse_reg_bytes;

fuzz_target!(|data: &[u8]| {
    parse_reg_bytes(data);
});
