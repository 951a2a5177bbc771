//! Arbitrary bytes as a primary hive image: check it, open it (as given and
//! as if clean), read every key and value, dump, export, check, and edit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reseal_hive_fuzz::harness::open_read;

fuzz_target!(|data: &[u8]| {
    // The last byte selects which edits run on the opened hive.
    let sel = data.last().copied().unwrap_or(0);
    open_read(data, sel);
});
